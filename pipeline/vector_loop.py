"""The closed loop over N environments at once (``run-backend --envs N``): Gymnasium's vector
API steps them, and the observations of every running episode go to the backend as one batch.

Each environment slot plays one episode at a time. An episode keeps everything that makes it
what it is in the sequential loop (pipeline.bridge.ClosedLoop): its reset seed ``seed + i``, its
own exploration RNG, the spike-train seed of each of its steps, and the same per-step account
(:class:`~pipeline.bridge.EpisodeTally`). A batch row is computed like a batch of one except
for the last bits of float matrix products (BLAS picks kernels by row count; see
docs/SCALING.md): returns, lengths, actions, spikes and agreement are those of the sequential
run, Q-value errors agree to float precision.

The vector environment runs with autoreset disabled: a slot whose episode ended is reset with
the next episode's seed. Once no episode is left to start, a finished slot is reset without a
seed and stepped with action 0 until the last episode ends (Gymnasium steps every slot); its
steps are never recorded and never reach the backend.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from pipeline.backend_api import Backend, Readout
from pipeline.bridge import ClosedLoop, EpisodeTally, GraphIO, LoopSettings, check_fit, make_loop_env, step_seed
from pipeline.checks import check_q
from pipeline.encoding import encode_seeded
from pipeline.envs import make_env, preprocess
from pipeline.errors import UserError
from pipeline.spec import Preprocessing

MAX_ENVS = 1024


def make_vector_env(settings: LoopSettings, io: GraphIO, n_envs: int) -> gym.vector.VectorEnv:
    """``n_envs`` copies of the run's environment as one synchronous vector env (autoreset off),
    checked against the graph; an environment Gymnasium cannot vectorise is one UserError."""
    if not 1 <= n_envs <= MAX_ENVS:
        raise UserError(f"--envs must be in [1, {MAX_ENVS}], got {n_envs}")
    atari = io.preprocessing.atari or None
    first = make_env(settings.env_id, atari, max_episode_steps=settings.max_steps)
    try:
        check_fit(first, io, settings.env_id)
    finally:
        first.close()

    def factory() -> gym.Env:
        return make_env(settings.env_id, atari, max_episode_steps=settings.max_steps)

    try:
        envs = gym.vector.SyncVectorEnv([factory] * n_envs, autoreset_mode=gym.vector.AutoresetMode.DISABLED)
    except (gym.error.Error, TypeError, ValueError, AssertionError, RuntimeError) as exc:
        # a custom observation space batch_space cannot stack (CustomSpaceError), or copies whose
        # spaces differ (RuntimeError)
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"{settings.env_id} cannot be vectorised by Gymnasium ({type(exc).__name__}: "
                        f"{first_line}); run it without --envs") from None
    return envs


class VectorLoop:
    """Episodes on the ``num_envs`` slots of ``envs`` (from :func:`make_vector_env`), the active
    slots' observations run as one batch on ``backend`` (and on ``compare``, as in
    :class:`~pipeline.bridge.ClosedLoop`). The loop closes ``envs``."""

    def __init__(self, backend: Backend, io: GraphIO, settings: LoopSettings, envs: gym.vector.VectorEnv,
                 compare: Backend | None = None, *, compare_preprocessing: Preprocessing | None = None):
        self.backend, self.io, self.settings, self.envs = backend, io, settings.validate(), envs
        self.compare, self.compare_preprocessing = compare, compare_preprocessing

    def act(self, raw: np.ndarray, tallies: list[EpisodeTally]) -> tuple[Readout, Readout | None]:
        """Run the raw observations ``[n, *obs_shape]`` of the episodes ``tallies`` as one batch."""
        s = self.settings
        x = preprocess(raw, self.io.preprocessing)
        spikes = None
        if s.encoding != "current":  # each row its own seeded train, as in the sequential loop
            xt = torch.as_tensor(x)
            spikes = torch.cat([encode_seeded(xt[j:j + 1], s.time_steps, s.encoding,
                                              step_seed(s.seed, t.episode, t.steps))
                                for j, t in enumerate(tallies)], dim=1).numpy()
        main = self.backend.run(x, spikes)
        check_q(main.q, f"--target {s.target}")
        other = None
        if self.compare is not None and self.compare_preprocessing is None:
            other = self.compare.run(x, spikes)
        elif self.compare is not None:
            other = self.compare.run(preprocess(raw, self.compare_preprocessing))
        return main, other

    def episodes(self, todo: list[int]) -> Iterator[dict[str, Any]]:
        """Run episodes ``todo`` (see pipeline.bridge.run_episodes); records come in finishing order."""
        if not todo:
            return
        queue = deque(todo)
        n = self.envs.num_envs
        slots: list[EpisodeTally | None] = [None] * n
        obs = self._start(slots, queue, np.ones(n, bool))
        while any(t is not None for t in slots):
            active = [i for i, t in enumerate(slots) if t is not None]
            tallies = [slots[i] for i in active]
            t0 = time.perf_counter()
            main, other = self.act(np.asarray(obs)[active], tallies)
            wall = time.perf_counter() - t0
            actions = np.zeros(n, dtype=np.int64)
            for j, (i, tally) in enumerate(zip(active, tallies)):
                actions[i] = tally.choose(main, j, other, wall, self.settings.epsilon, self.io.n_actions)
            obs, rewards, terminated, truncated, _ = self.envs.step(actions)
            ended = terminated | truncated
            for i, tally in zip(active, tallies):
                tally.add_reward(rewards[i])
                if ended[i]:
                    slots[i] = None
                    yield tally.record()
            if np.any(ended):
                obs = self._start(slots, queue, ended)

    def _start(self, slots: list[EpisodeTally | None], queue: deque[int], mask: np.ndarray) -> np.ndarray:
        """Reset the slots in ``mask``: each takes the next episode (its own seed) while any is left;
        the others are reset unseeded and idle (stepped, never recorded)."""
        seeds: list[int | None] = [None] * len(slots)
        for i in np.flatnonzero(mask):
            if queue:
                slots[i] = EpisodeTally.start(self.settings, queue.popleft())
                seeds[i] = slots[i].env_seed
        obs, _ = self.envs.reset(seed=seeds, options={"reset_mask": np.asarray(mask, dtype=bool)})
        return obs

    def close(self) -> None:
        self.envs.close()


def make_env_for(settings: LoopSettings, io: GraphIO, n_envs: int) -> gym.Env | gym.vector.VectorEnv:
    """One environment (the sequential loop), or ``n_envs`` as one vector env (no more than there
    are episodes); made and checked before anything is built or written."""
    if n_envs == 1:
        return make_loop_env(settings, io)
    return make_vector_env(settings, io, min(n_envs, settings.episodes))


def make_runner(backend: Backend, io: GraphIO, settings: LoopSettings, compare: Backend | None,
                compare_preprocessing: Preprocessing | None,
                env: gym.Env | gym.vector.VectorEnv) -> ClosedLoop | VectorLoop:
    """The loop that plays in ``env`` (from :func:`make_env_for`): sequential or vectorised."""
    if isinstance(env, gym.vector.VectorEnv):
        return VectorLoop(backend, io, settings, env, compare, compare_preprocessing=compare_preprocessing)
    return ClosedLoop(backend, io, settings, compare, compare_preprocessing=compare_preprocessing, env=env)

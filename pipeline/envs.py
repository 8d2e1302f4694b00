"""Environments and observation preprocessing (docs/DESIGN.md "Evaluation protocol").

Atari uses Gymnasium's own wrappers on an ALE v5 game made with ``frameskip=1``:
``AtariPreprocessing`` (up to 30 no-op starts, frame skip 4, 84x84 grey) and
``FrameStackObservation(4)``, giving ``(4, 84, 84)`` uint8 observations; the network sees
them scaled by 1/255. Classic control keeps Gymnasium's defaults (CartPole-v1 capped at 500);
observations are optionally mapped to [-1, 1] from the observation space's bounds where
those are finite (MountainCar), recorded in the checkpoint as :class:`Preprocessing`.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from pipeline.errors import UserError, choice_error
from pipeline.spec import Preprocessing, is_atari  # noqa: F401  (is_atari re-exported)

CLASSIC_ENVS = ("CartPole-v1", "MountainCar-v0", "Acrobot-v1")
ATARI_DEFAULTS: dict[str, Any] = {
    "noop_max": 30,
    "frame_skip": 4,
    "screen_size": 84,
    "frame_stack": 4,
    "terminal_on_life_loss": False,
    "max_episode_steps": 18000,  # agent steps (Tan, Liu)
}
# DESIGN.md section 9: Atari scores are reported with 5 % random actions (Tan, Liu), as well as
# greedy; an agent that wins only greedily has not learned the game.
ATARI_EVAL_EPSILON = 0.05
_ale_registered = False


def _register_ale() -> None:
    global _ale_registered
    if not _ale_registered:
        import ale_py

        gym.register_envs(ale_py)
        _ale_registered = True


def check_env_id(env_id: str) -> None:
    if is_atari(env_id):
        _register_ale()
    if env_id not in gym.registry:
        atari = "ALE/<Game>-v5 (e.g. ALE/Pong-v5, ALE/Breakout-v5)"
        raise choice_error("environment", env_id, [*CLASSIC_ENVS, atari])
    if is_atari(env_id) and not env_id.endswith("-v5"):
        raise UserError(f"Atari environments must be ALE v5 ids (ALE/<Game>-v5), got {env_id!r}")


def make_env(env_id: str, atari: dict[str, Any] | None = None, render_mode: str | None = None,
             max_episode_steps: int | None = None) -> gym.Env:
    """The raw-observation environment the agent acts in (before scaling)."""
    check_env_id(env_id)
    if max_episode_steps is not None and max_episode_steps < 1:
        raise UserError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
    if not is_atari(env_id):
        try:
            env = gym.make(env_id, render_mode=render_mode)
        except gym.error.DependencyNotInstalled as exc:
            first = str(exc).splitlines()[0] if str(exc) else env_id
            raise UserError(f"environment {env_id} needs a package that is not installed ({first[:160]})") from None
        if max_episode_steps is not None:
            env = gym.wrappers.TimeLimit(env, max_episode_steps)
        return env
    cfg = {**ATARI_DEFAULTS, **(atari or {})}
    env = gym.make(env_id, frameskip=1, render_mode=render_mode)
    env = gym.wrappers.AtariPreprocessing(
        env,
        noop_max=cfg["noop_max"],
        frame_skip=cfg["frame_skip"],
        screen_size=cfg["screen_size"],
        terminal_on_life_loss=cfg["terminal_on_life_loss"],
        grayscale_obs=True,
        scale_obs=False,
    )
    env = gym.wrappers.FrameStackObservation(env, cfg["frame_stack"])
    env = gym.wrappers.TimeLimit(env, max_episode_steps or cfg["max_episode_steps"])
    return env


def default_preprocessing(env_id: str, scale_obs: bool) -> Preprocessing:
    """1/255 for Atari frames; for classic control, identity or a map of finite bounds to [-1, 1]."""
    if is_atari(env_id):
        return Preprocessing(offset=(0.0,), scale=(1.0 / 255.0,), atari=dict(ATARI_DEFAULTS))
    if not scale_obs:
        return Preprocessing()
    env = make_env(env_id)
    space = env.observation_space
    env.close()
    low, high = np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise UserError(f"--scale-obs needs finite observation bounds; {env_id} has infinite ones")
    center, half = (low + high) / 2, (high - low) / 2
    return Preprocessing(offset=tuple(center.tolist()), scale=tuple((1.0 / half).tolist()))


def random_policy_observations(env_id: str, n: int, seed: int = 0) -> np.ndarray:
    """``n`` raw observations of ``env_id`` under a seeded uniform-random policy (benchmark inputs
    that need no trained agent, e.g. real Pong frames for a Nature-CNN network)."""
    env = make_env(env_id)
    rng = np.random.default_rng(seed)
    frames = []
    raw, _ = env.reset(seed=seed)
    while len(frames) < n:
        frames.append(np.asarray(raw))
        raw, _, term, trunc, _ = env.step(int(rng.integers(env.action_space.n)))
        if term or trunc:
            raw, _ = env.reset()
    env.close()
    return np.stack(frames)


def n_actions(env: gym.Env) -> int:
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise UserError(f"only discrete action spaces are supported, got {env.action_space}")
    return int(env.action_space.n)


class Preprocessor(torch.nn.Module):
    """``x' = (x - offset) * scale`` in float32, as a module so SB3 and the bridge share it."""

    def __init__(self, pre: Preprocessing):
        super().__init__()
        self.register_buffer("offset", torch.tensor(pre.offset, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(pre.scale, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        # offset/scale are per feature (classic control) or one-element (Atari): both broadcast
        return (obs.to(torch.float32) - self.offset) * self.scale


def preprocess(obs: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """Numpy twin of :class:`Preprocessor` for a batch ``[N, *obs_shape]``; float32 result.

    The same two float32 IEEE operations on the same operands (``(x - offset) * scale``), so the
    same bits, without building a torch module on every closed-loop step."""
    x = np.asarray(obs).astype(np.float32)
    return (x - np.asarray(pre.offset, np.float32)) * np.asarray(pre.scale, np.float32)


# --- potential-based reward shaping (training only) ------------------------------------------


def _mountaincar_energy(obs: np.ndarray) -> float:
    """Mechanical energy of MountainCar-v0 in units of the hill's potential amplitude.

    The dynamics are ``v += 0.001 (a - 1) - 0.0025 cos(3x)``, i.e. the force derives from the
    potential ``U(x) = 0.0025/3 sin(3x)``; ``E = v^2/2 + U`` only grows by pushing with the
    motion, which is what the agent must learn, and the goal sits at E ~ 1.
    """
    x, v = float(obs[0]), float(obs[1])
    amplitude = 0.0025 / 3
    return (0.5 * v * v + amplitude * np.sin(3 * x)) / amplitude


# name -> (environments it applies to, potential function, scale)
REWARD_SHAPINGS: dict[str, tuple[tuple[str, ...], Any, float]] = {
    "mountaincar-energy": (("MountainCar-v0",), _mountaincar_energy, 10.0),
}


class PotentialShaping(gym.Wrapper):
    """``r + gamma * Phi(s') - Phi(s)`` with ``Phi = 0`` at termination (Ng, Harada & Russell 1999).

    Potential-based shaping changes every policy's discounted return by ``-Phi(s0)`` only,
    so the optimal policy of the shaped task is that of the original one; evaluation always
    uses the environment's own reward. ``info["true_reward"]`` keeps the unshaped reward.
    """

    def __init__(self, env: gym.Env, potential: Any, scale: float, gamma: float):
        super().__init__(env)
        self.potential, self.scale, self.gamma = potential, scale, gamma
        self._phi = 0.0

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self._phi = self.scale * self.potential(obs)
        return obs, info

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        phi = 0.0 if terminated else self.scale * self.potential(obs)
        info = {**info, "true_reward": reward}
        shaped = float(reward) + self.gamma * phi - self._phi
        self._phi = phi
        return obs, shaped, terminated, truncated, info


def shape_reward(env: gym.Env, env_id: str, shaping: str, gamma: float) -> gym.Env:
    """Wrap ``env`` with the named shaping; an unknown name or a wrong environment is a UserError."""
    if shaping not in REWARD_SHAPINGS:
        raise choice_error("reward shaping", shaping, ["none", *REWARD_SHAPINGS])
    envs, potential, scale = REWARD_SHAPINGS[shaping]
    if env_id not in envs:
        raise UserError(f"reward shaping {shaping!r} is defined for {', '.join(envs)}, not {env_id}")
    return PotentialShaping(env, potential, scale, gamma)

"""The closed loop: environment → preprocessing → backend → action → environment.

One runner for every backend (anything with ``pipeline.backend_api.Backend``'s ``run``). Per step:

1. the raw observation is preprocessed exactly as at training time (offset/scale and Atari
   wrapper settings from the graph's metadata);
2. for ``poisson``/``regular`` graphs the input spike train is made here, once, from a seed
   derived from (run seed, episode, step), and the same train goes to every backend;
3. the backend returns Q-values; the action is their argmax (ties to the lowest index),
   or a random action with probability epsilon (a per-episode seeded RNG);
4. with a comparison backend (``--compare reference``) the same observation and spikes run
   there too, and the step records action agreement and |ΔQ| (docs/DESIGN.md "Metrics"). A
   comparison with its own preprocessing (a torch checkpoint, ``--compare dqn.pt``) gets the raw
   observation through that preprocessing instead.

Episode ``i`` is reset with seed ``seed + i`` and owns its RNGs, so episodes are independent:
results are appended as one JSON line per finished episode, and an interrupted run resumes by
skipping the episodes already in the file — nothing finished is redone or lost.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch

from pipeline.backend_api import Backend, Readout
from pipeline.checks import check_q
from pipeline.encoding import encode_seeded
from pipeline.envs import make_env, n_actions, preprocess
from pipeline.errors import UserError
from pipeline.graph_meta import GraphMeta
from pipeline.results_lock import results_lock
from pipeline.spec import Preprocessing

RESULTS_FORMAT = "dsqn-deploy/closed-loop"


@dataclass(frozen=True)
class LoopSettings:
    """What defines a closed-loop run; stored in the results header and checked on resume."""

    env_id: str
    target: str
    graph: str
    graph_sha256: str
    compare: str | None = None
    episodes: int = 10
    seed: int = 0
    epsilon: float = 0.0
    max_steps: int | None = None  # agent steps per episode (Atari: the wrapper's 18,000)
    encoding: str = "current"
    time_steps: int = 1
    # the backend options that can change results (e.g. lava-fixed's weight_bits), of the target
    # and of the comparison; run-backend fills them (backends.cli.recorded_options)
    backend_options: dict[str, Any] = field(default_factory=dict)
    compare_options: dict[str, Any] = field(default_factory=dict)

    # settings that may change between an interrupted run and its resumption
    # (the graph is compared by content, graph_sha256; its path may be spelled another way)
    RESUMABLE_CHANGES = ("episodes", "graph")

    def describe_options(self) -> str:
        """The backend options for a title, e.g. ``weight_bits=16`` ('' when there are none)."""
        return ", ".join(f"{k}={v}" for k, v in sorted(self.backend_options.items()))

    def validate(self) -> LoopSettings:
        if self.episodes < 1:
            raise UserError(f"--episodes must be >= 1, got {self.episodes}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise UserError(f"--epsilon must lie in [0, 1], got {self.epsilon}")
        if self.max_steps is not None and self.max_steps < 1:
            raise UserError(f"--max-steps must be >= 1, got {self.max_steps}")
        return self


@dataclass
class GraphIO:
    """How the graph meets the environment: input shape, action count, preprocessing."""

    obs_shape: tuple[int, ...]
    n_actions: int
    preprocessing: Preprocessing = field(default_factory=Preprocessing)

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], obs_shape: tuple[int, ...], n_out: int) -> GraphIO:
        """From the graph's metadata (:class:`GraphMeta`); ``n_out`` when it names no action count."""
        gm = GraphMeta.read(meta)
        n_actions = gm.n_actions if gm.n_actions is not None else int(n_out)
        return cls(obs_shape=tuple(obs_shape), n_actions=n_actions, preprocessing=gm.preprocessing)


def check_fit(env, io: GraphIO, env_id: str) -> None:
    """Refuse, before anything is built or run, a graph that does not fit the environment."""
    env_shape = tuple(int(s) for s in env.observation_space.shape)
    if env_shape != io.obs_shape:
        raise UserError(f"the graph's input has shape {io.obs_shape} but {env_id} observations have shape "
                        f"{env_shape}")
    env_actions = n_actions(env)
    if env_actions != io.n_actions:
        raise UserError(f"the graph has {io.n_actions} actions but {env_id} has {env_actions}")


def step_seed(seed: int, episode: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, episode, step]).generate_state(1, np.uint64)[0]) >> 1


@dataclass
class EpisodeTally:
    """One episode's running account: what every step adds and the record it ends with.

    The sequential loop and the vectorised one (pipeline.vector_loop) both keep one per episode,
    so the same steps give the same record whichever loop ran them. ``row`` picks the episode's
    observation out of a batched Readout; a batch's timings are shared equally among its rows.
    """

    episode: int
    env_seed: int
    rng: np.random.Generator
    total: float = 0.0
    steps: int = 0
    explored: int = 0
    wall: float = 0.0
    agree: list[bool] = field(default_factory=list)
    dq: list[float] = field(default_factory=list)
    qmax: list[float] = field(default_factory=list)
    spikes: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=lambda: {"set_input": 0.0, "simulate": 0.0, "read_out": 0.0})
    t_start: float = field(default_factory=time.perf_counter)

    @classmethod
    def start(cls, settings: LoopSettings, episode: int) -> EpisodeTally:
        """Episode ``episode``: reset seed ``seed + episode`` and its own exploration RNG."""
        return cls(episode, settings.seed + episode, np.random.default_rng([settings.seed, episode]))

    def choose(self, main: Readout, row: int, other: Readout | None, wall: float, epsilon: float,
               n_actions: int) -> int:
        """Account the step's readout(s) at ``row`` and return the action to take (greedy, or
        random with probability ``epsilon`` from the episode's RNG)."""
        rows = int(main.q.shape[0])
        self.wall += wall / rows
        for k, v in main.timings.items():
            self.timings[k] = self.timings.get(k, 0.0) + v / rows
        for k, v in main.spikes_per_layer().items():
            self.spikes[k] = self.spikes.get(k, 0.0) + float(v[row])
        action = int(main.action[row])
        if other is not None:
            self.agree.append(int(other.action[row]) == action)
            self.dq.append(float(np.max(np.abs(other.q[row] - main.q[row]))))
            self.qmax.append(float(np.max(np.abs(other.q[row]))))
        if epsilon > 0 and self.rng.random() < epsilon:
            action = int(self.rng.integers(n_actions))
            self.explored += 1
        return action

    def add_reward(self, reward: float) -> None:
        self.total += float(reward)
        self.steps += 1

    def record(self) -> dict[str, Any]:
        """The episode's results line (docs/DESIGN.md "Results files")."""
        steps = self.steps
        rec: dict[str, Any] = {
            "type": "episode",
            "episode": self.episode,
            "env_seed": self.env_seed,
            "return": self.total,
            "length": steps,
            "random_actions": self.explored,
            "spikes_per_step": {k: v / steps for k, v in self.spikes.items()},
            "wall_per_step": self.wall / steps,
            "sim_per_step": self.timings["simulate"] / steps,
            "timing_per_step": {k: v / steps for k, v in self.timings.items()},
            "episode_wall_s": time.perf_counter() - self.t_start,
        }
        if self.agree:
            rec["agreement"] = float(np.mean(self.agree))
            rec["q_abs_err"] = float(np.max(self.dq))
            rec["q_abs_err_mean"] = float(np.mean(self.dq))
            rec["q_rel_err"] = float(np.max(self.dq) / max(np.max(self.qmax), 1e-300))
            rec["disagreements"] = int(len(self.agree) - int(np.sum(self.agree)))
        return rec


# ---------------------------------------------------------------- results file


def read_results(path: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Header and finished episodes of a results file; a torn last line (killed mid-write) is dropped."""
    if not path.exists() or path.stat().st_size == 0:  # empty: a run that stopped before its header
        return None, []
    if not path.is_file():
        raise UserError(f"{path} is not a regular file; not a closed-loop results file")
    header, episodes = None, []
    try:
        lines = path.read_text().splitlines()
    except (UnicodeDecodeError, OSError) as exc:
        raise UserError(f"{path}: not a closed-loop results file ({type(exc).__name__})") from None
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # interrupted while writing: drop_torn_tail removes it, the episode is redone
            raise UserError(f"{path}: line {i + 1} is not JSON; not a closed-loop results file") from None
        if not isinstance(rec, dict):
            raise UserError(f"{path}: line {i + 1} is not a JSON object; not a closed-loop results file")
        if rec.get("type") == "header":
            header = rec
        elif rec.get("type") == "episode":
            episodes.append(rec)
    if header is None or header.get("format") != RESULTS_FORMAT or not isinstance(header.get("settings"), dict):
        raise UserError(f"{path}: not a dsqn-deploy closed-loop results file")
    return header, unique_episodes(path, episodes)


def unique_episodes(path: Path, episodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first record of each episode: a file written by two runs at once (before the results
    lock) holds some twice, and a summary must not count them twice."""
    first: dict[Any, dict[str, Any]] = {}
    for rec in episodes:
        if not isinstance(rec.get("episode"), int):
            raise UserError(f"{path}: an episode record without an episode number; not a closed-loop results file")
        first.setdefault(rec["episode"], rec)
    if len(first) < len(episodes):
        print(f"note: {path} holds {len(episodes) - len(first)} duplicate episode record(s); each episode "
              "counts once (its first record)")
    return list(first.values())


def drop_torn_tail(path: Path) -> None:
    """Cut a last line that a killed run left half-written, so appends start on a clean line."""
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    if not lines:
        return
    try:
        json.loads(lines[-1])
        if not lines[-1].endswith("\n"):
            path.write_text(text + "\n")
    except json.JSONDecodeError:
        path.write_text("".join(lines[:-1]))


def append_record(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def open_results(path: Path, settings: LoopSettings, resume: bool) -> list[dict[str, Any]]:
    """Start a results file, or check the settings of one to resume; returns finished episodes."""
    header, done = read_results(path)
    if header is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        append_record(path, {"type": "header", "format": RESULTS_FORMAT, "settings": asdict(settings)})
        return []
    if not resume:
        raise UserError(f"{path} already holds {len(done)} episode(s); pass --resume to continue that run "
                        "or choose another --results file")
    old = header["settings"]
    new = asdict(settings)
    # a header written before backend options were recorded has None: resuming it is refused
    diff = [k for k in new if k not in LoopSettings.RESUMABLE_CHANGES and old.get(k) != new[k]]
    if diff:
        listed = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in diff)
        raise UserError(f"cannot resume {path}: settings differ ({listed})")
    drop_torn_tail(path)
    return done


# ---------------------------------------------------------------- the loop


def make_loop_env(settings: LoopSettings, io: GraphIO) -> gym.Env:
    """The environment a run plays in, checked against the graph (:func:`check_fit`) before
    anything is built; hand it to :class:`ClosedLoop` so it is made and checked once."""
    env = make_env(settings.env_id, io.preprocessing.atari or None, max_episode_steps=settings.max_steps)
    try:
        check_fit(env, io, settings.env_id)
    except BaseException:
        env.close()
        raise
    return env


class ClosedLoop:
    """Runs episodes of ``settings.env_id`` with ``backend`` choosing the actions.

    ``compare`` runs beside it on the same preprocessed observation and input spikes, unless
    ``compare_preprocessing`` is given: then it gets the raw observation through that
    preprocessing (a torch checkpoint's own), and no spike trains. ``env`` is an environment from
    :func:`make_loop_env`; without one the loop makes (and checks) its own. The loop closes it.
    """

    def __init__(self, backend: Backend, io: GraphIO, settings: LoopSettings, compare: Backend | None = None,
                 *, compare_preprocessing: Preprocessing | None = None, env: gym.Env | None = None):
        self.backend, self.io, self.settings, self.compare = backend, io, settings.validate(), compare
        self.compare_preprocessing = compare_preprocessing
        self.env = env if env is not None else make_loop_env(self.settings, io)

    def act(self, obs: np.ndarray, episode: int, step: int) -> tuple[np.ndarray, Readout, Readout | None]:
        raw = np.asarray(obs)[None]
        x = preprocess(raw, self.io.preprocessing)
        spikes = None
        if self.settings.encoding != "current":
            seed = step_seed(self.settings.seed, episode, step)
            spikes = encode_seeded(torch.as_tensor(x), self.settings.time_steps, self.settings.encoding,
                                   seed).numpy()
        main = self.backend.run(x, spikes)
        check_q(main.q, f"--target {self.settings.target}")
        other = None
        if self.compare is not None and self.compare_preprocessing is None:  # same input, same spikes
            other = self.compare.run(x, spikes)
        elif self.compare is not None:  # its own preprocessing of the raw observation
            other = self.compare.run(preprocess(raw, self.compare_preprocessing))
        return x, main, other

    def run_episode(self, episode: int) -> dict[str, Any]:
        s = self.settings
        tally = EpisodeTally.start(s, episode)
        obs, _ = self.env.reset(seed=tally.env_seed)
        done = False
        while not done:
            t0 = time.perf_counter()
            _, main, other = self.act(obs, episode, tally.steps)
            action = tally.choose(main, 0, other, time.perf_counter() - t0, s.epsilon, self.io.n_actions)
            obs, reward, terminated, truncated, _ = self.env.step(action)
            tally.add_reward(reward)
            done = terminated or truncated
        return tally.record()

    def episodes(self, todo: list[int]) -> Iterator[dict[str, Any]]:
        """The records of episodes ``todo``, one after the other (see :func:`run_episodes`)."""
        for i in todo:
            yield self.run_episode(i)

    def close(self) -> None:
        self.env.close()


class EpisodeRunner(Protocol):
    """What :func:`run_episodes` drives: the sequential :class:`ClosedLoop`, the vectorised
    loop (pipeline.vector_loop) or episodes on Ray workers (backends.ray_runner)."""

    settings: LoopSettings

    def episodes(self, todo: list[int]) -> Iterator[dict[str, Any]]:
        """Run episodes ``todo``; yield each record as soon as its episode has finished (any order)."""
        ...


def run_episodes(loop: EpisodeRunner, results: Path, resume: bool = False, progress: bool = True) -> list[dict[str, Any]]:
    """Run the episodes not yet in ``results``; every finished episode is on disk at once.

    This process is the file's one writer (the results lock), whoever runs the episodes: a
    record is appended when it comes back, once per episode number, so an interruption loses
    only the episodes still running and a resume repeats none that finished.
    """
    from pipeline.progress import Progress

    with results_lock(results):  # a second run on the same file stops here
        done = open_results(results, loop.settings, resume)
        finished = {rec["episode"] for rec in done}
        todo = [i for i in range(loop.settings.episodes) if i not in finished]
        records = list(done)
        bar = Progress(loop.settings.episodes, f"{loop.settings.target} {loop.settings.env_id}", "ep", progress,
                       initial=len(finished))
        wanted = set(todo)
        for rec in loop.episodes(todo):
            if rec["episode"] in finished or rec["episode"] not in wanted:
                continue  # a runner that re-ran an episode (a retried Ray task): the first record counts
            finished.add(rec["episode"])
            append_record(results, rec)
            records.append(rec)
            bar.update(1, ret=f"{rec['return']:.0f}",
                       **({"agree": f"{rec['agreement']:.3f}"} if "agreement" in rec else {}))
        bar.close()
    return sorted(records, key=lambda r: r["episode"])[: loop.settings.episodes]


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std of returns, step-weighted agreement, worst |ΔQ|, spikes and time per step."""
    if not records:
        return {"episodes": 0}
    returns = np.array([r["return"] for r in records])
    lengths = np.array([r["length"] for r in records])
    out: dict[str, Any] = {
        "episodes": len(records),
        "steps": int(lengths.sum()),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "returns": returns.tolist(),
        "wall_per_step": float(np.average([r["wall_per_step"] for r in records], weights=lengths)),
        "sim_per_step": float(np.average([r["sim_per_step"] for r in records], weights=lengths)),
    }
    layers = records[0]["spikes_per_step"].keys()
    out["spikes_per_step"] = {k: float(np.average([r["spikes_per_step"][k] for r in records], weights=lengths))
                              for k in layers}
    if "agreement" in records[0]:
        out["agreement"] = float(np.average([r["agreement"] for r in records], weights=lengths))
        out["disagreements"] = int(sum(r["disagreements"] for r in records))
        out["q_abs_err"] = float(max(r["q_abs_err"] for r in records))
        out["q_rel_err"] = float(max(r["q_rel_err"] for r in records))
    return out


def plot_results(records: list[dict[str, Any]], path: Path, title: str, compare: str | None = None) -> None:
    """Returns, agreement and spikes per layer per agent step, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    eps = [r["episode"] for r in records]
    has_cmp = "agreement" in records[0]
    fig, axes = plt.subplots(1, 3 if has_cmp else 2, figsize=(12 if has_cmp else 8, 3.4))
    returns = [r["return"] for r in records]
    axes[0].bar(eps, returns)
    axes[0].set(xlabel="episode", ylabel="return (sum of rewards)",
                title=f"return per episode (mean {np.mean(returns):.1f} ± {np.std(returns):.1f})")
    spk_ax = axes[-1]
    if has_cmp:
        agree = [100 * r["agreement"] for r in records]
        axes[1].plot(eps, agree, marker="o")
        axes[1].set_ylim(max(0.0, min(agree) - 5), 100.5)  # a percentage: never above 100
        axes[1].set(xlabel="episode", ylabel="% of steps with the same action",
                    title=f"agreement with {compare or 'the comparison'}")
    for ax in axes[:-1]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    layers = list(records[0]["spikes_per_step"])
    spk_ax.bar(range(len(layers)), [np.mean([r["spikes_per_step"][k] for r in records]) for k in layers])
    spk_ax.set_xticks(range(len(layers)), layers, rotation=30, ha="right", fontsize=8)
    spk_ax.set(xlabel="layer", ylabel="spikes per observation (all T steps)",
               title="spikes per layer (mean over agent steps)")
    for ax in axes:
        ax.title.set_fontsize(10)
    fig.suptitle(f"{title}; {len(records)} episodes", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)

"""``train-agent``: DQN and DSQN training on Stable-Baselines3's DQN machinery.

SB3 supplies the replay buffer, target network, epsilon schedule, callbacks and progress bar;
our network (``pipeline.models``) is plugged in as the Q-network (``pipeline.sb3_glue``).
Periodic greedy evaluation keeps the best and the last checkpoint, a CSV log, a JSON summary
and a learning-curve PNG. Hyperparameters live in ``pipeline.hyperparams``, the resumable
state in ``pipeline.train_state``; their names stay importable from here.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import DQN as SB3DQN
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from pipeline.checkpoint import Checkpoint, provenance, save_checkpoint
from pipeline.envs import (
    default_preprocessing,
    is_atari,
    make_env,
    n_actions,
    shape_reward,
)
from pipeline.checks import check_int, check_output, check_real, check_seed
from pipeline.errors import UserError, check_choice
from pipeline.hyperparams import (  # noqa: F401  (re-exported: pipeline.train.* keeps working)
    HP_PRESETS,
    Hyperparams,
    check_replay_memory,
    default_hp_preset,
    lr_schedule,
    parse_hp,
)
from pipeline.models import SpikingQNetwork, data_dependent_init
from pipeline.progress import interval as progress_interval
from pipeline.runtime import default_torch_threads, resolve_device, set_torch_threads
from pipeline.sb3_glue import (  # noqa: F401  (re-exported; old SB3 state files name pipeline.train.ModelDQNPolicy)
    DoubleDQN,
    ModelDQNPolicy,
    ModelQNetwork,
    PreprocessExtractor,
    model_state_dict,
    new_agent,
    vector_schedule,
)
from pipeline.spec import (
    DEFAULT_T_ATARI,
    DEFAULT_T_CLASSIC,
    ModelSpec,
    NeuronParams,
    preset_fields,
)
from pipeline.train_state import (  # noqa: F401  (re-exported)
    LEGACY_FILES,
    RESUME_FREE_HP,
    STATE_FILES,
    load_training_state,
    save_training_state,
    state_paths,
)


# --- evaluation, checkpoints, logs -------------------------------------------------------------


class EvalCheckpointCallback(BaseCallback):
    """Every ``eval_freq`` steps: greedy evaluation, CSV row, best/last checkpoints."""

    def __init__(self, eval_env, hp: Hyperparams, make_ckpt, paths: dict[str, Path],
                 save_state: dict[str, Any] | None = None, rows: list[dict[str, float]] | None = None,
                 progress_lines: bool = False):
        super().__init__()
        self.eval_env, self.hp, self.make_ckpt, self.paths = eval_env, hp, make_ckpt, paths
        self.save_state = save_state  # settings to store with the resumable state (None: no state)
        self.rows: list[dict[str, float]] = list(rows or [])  # a resumed run continues its log
        best = max(self.rows, key=lambda r: (r["mean_return"], r["timesteps"]), default=None)
        self.best = best["mean_return"] if best else -math.inf
        self.best_step = int(best["timesteps"]) if best else 0
        self.t0 = time.perf_counter() - (self.rows[-1]["elapsed_s"] if self.rows else 0.0)
        self.stop_signal: int | None = None  # set by the signal handler: stop at the next step
        self.last_eval = int(self.rows[-1]["timesteps"]) if self.rows else 0
        self.progress_lines = progress_lines  # periodic one-line progress (when no bar is shown)
        self.every = progress_interval()  # seconds between those lines (DSQN_PROGRESS_SECONDS)
        self.last_line = time.monotonic()
        self.line_steps = 0  # num_timesteps at the last progress line
        self.eval_seconds = 0.0  # spent in evaluations and saves (this invocation)

    def _on_training_start(self) -> None:
        # a resumed run starts at its saved step: the first rate counts only this run's steps
        self.line_steps, self.last_line = self.num_timesteps, time.monotonic()

    def _on_step(self) -> bool:
        # with N environments a call adds N steps, so "a multiple of eval_freq was crossed"
        steps = self.num_timesteps
        if steps // self.hp.eval_freq > self.last_eval // self.hp.eval_freq or (
                self.last_eval < self.hp.total_steps <= steps):
            self.evaluate()
        elif self.progress_lines and time.monotonic() - self.last_line >= self.every:
            self.progress_line()
        if self.stop_signal is not None:
            self.stop()
            return False
        return True

    def stop(self) -> None:
        """Keep everything a later ``--resume`` needs, now (no evaluation, no checkpoint rewrite)."""
        if self.save_state is not None:
            save_training_state(self.model, self.paths, self.save_state)

    def progress_line(self) -> None:
        now, steps = time.monotonic(), self.num_timesteps
        rate = (steps - self.line_steps) / max(now - self.last_line, 1e-9)
        last = f", last eval {self.rows[-1]['mean_return']:.1f} @ {self.rows[-1]['timesteps']}" if self.rows else ""
        train_eps = [float(ep["r"]) for ep in self.model.ep_info_buffer or []]
        train = f", training return {np.mean(train_eps):.1f} (last {len(train_eps)} ep)" if train_eps else ""
        print(f"[train] step {steps}/{self.hp.total_steps} ({100 * steps / self.hp.total_steps:.1f} %), "
              f"{rate:.0f} steps/s, epsilon {self.model.exploration_rate:.3f}{train}{last}", file=sys.stderr, flush=True)
        self.last_line, self.line_steps = now, steps

    def evaluate(self) -> None:
        # the progress bar (or the periodic lines) stand still while greedy episodes run: say so
        n = self.hp.eval_episodes
        print(f"[eval] step {self.num_timesteps}: {n} greedy episode{'s' if n != 1 else ''}...", file=sys.stderr, flush=True)
        self.last_eval = int(self.num_timesteps)
        started = time.perf_counter()
        returns, _ = evaluate_policy(self.model, self.eval_env, n_eval_episodes=self.hp.eval_episodes,
                                     deterministic=True, return_episode_rewards=True)
        # the epsilon-greedy training episodes so far (SB3 keeps the last 100): a smoother curve than a
        # few greedy episodes when the greedy return is still flat (Atari early on); true reward
        train_eps = [float(ep["r"]) for ep in self.model.ep_info_buffer or []]
        row = {
            "timesteps": int(self.num_timesteps),
            "mean_return": float(np.mean(returns)),
            "std_return": float(np.std(returns)),
            "train_return_last100": float(np.mean(train_eps)) if train_eps else float("nan"),
            "train_episodes_last100": len(train_eps),
            "epsilon": float(self.model.exploration_rate),
            "elapsed_s": round(time.perf_counter() - self.t0, 2),
        }
        self.rows.append(row)
        with open(self.paths["csv"], "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(row))
            writer.writeheader()
            writer.writerows(self.rows)
        score = {"mean_return": row["mean_return"], "std_return": row["std_return"],
                 "episodes": self.hp.eval_episodes, "timesteps": row["timesteps"]}
        save_checkpoint(self.make_ckpt(score), self.paths["last"])
        if row["mean_return"] >= self.best:  # later ties win: same score, more training
            self.best, self.best_step = row["mean_return"], row["timesteps"]
            save_checkpoint(self.make_ckpt(score), self.paths["best"])
        if self.save_state is not None:
            save_training_state(self.model, self.paths, self.save_state)
        print(f"[eval] step {row['timesteps']}: return {row['mean_return']:.1f} ± {row['std_return']:.1f}",
              file=sys.stderr, flush=True)
        self.last_line, self.line_steps = time.monotonic(), self.num_timesteps
        self.eval_seconds += time.perf_counter() - started



def plot_curve(rows: list[dict[str, float]], title: str, path: Path, episodes: int = 0,
               frame_skip: int = 1) -> None:
    """The learning curve: greedy evaluations (mean and ± 1 std band over their ``episodes``) and
    the ε-greedy training episodes, against agent steps (``frame_skip`` frames each on Atari)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["timesteps"] for r in rows]
    mean = np.array([r["mean_return"] for r in rows])
    std = np.array([r["std_return"] for r in rows])
    train = np.array([r.get("train_return_last100", np.nan) for r in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    per = f" ({episodes} episodes)" if episodes else ""
    ax.plot(steps, mean, marker="o", ms=3, label=f"greedy evaluation, mean{per}")
    ax.fill_between(steps, mean - std, mean + std, alpha=0.25, label="greedy evaluation, ± 1 std")
    if np.isfinite(train).any():
        ax.plot(steps, train, ls="--", label="training episodes (mean of last 100, ε-greedy)")
    ax.legend(fontsize=8)
    frames = f" ({frame_skip} frames each)" if frame_skip > 1 else ""
    ax.set_xlabel(f"agent steps{frames}")
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)



# --- the command --------------------------------------------------------------------------------


def build_spec(args: argparse.Namespace, env_id: str, shape: tuple[int, ...], actions: int) -> ModelSpec:
    fields_: dict[str, Any] = preset_fields(args.model)
    atari = is_atari(env_id)
    arch = args.arch or ("nature_cnn" if atari else "mlp")
    if atari and arch == "mlp" or (not atari and arch == "nature_cnn"):
        raise UserError(f"architecture {arch!r} does not fit {env_id} (observation shape {shape})")
    fields_.update(arch=arch, obs_shape=shape, n_actions=actions, hidden=tuple(args.hidden))
    if fields_["kind"] != "dqn":
        neuron: NeuronParams = fields_["neuron"]
        changes = {k: v for k, v in (("model", args.neuron), ("reset", args.reset), ("tau", args.tau),
                                     ("v_th", args.v_th), ("surrogate_alpha", args.alpha)) if v is not None}
        fields_["neuron"] = replace(neuron, **changes)
        fields_.setdefault("time_steps", DEFAULT_T_ATARI if atari else DEFAULT_T_CLASSIC)
        for key in ("time_steps", "readout", "encoding", "tau_out"):
            if getattr(args, key) is not None:
                fields_[key] = getattr(args, key)
        if args.no_bias:
            fields_["bias"] = False
    else:
        spiking_opts = [o for o in ("neuron", "reset", "tau", "v_th", "time_steps", "readout", "encoding")
                        if getattr(args, o) is not None]
        if spiking_opts:
            raise UserError(f"--model dqn takes no spiking options (got: {', '.join(spiking_opts)})")
    return ModelSpec(**fields_).validate()


def check_train_args(args: argparse.Namespace) -> None:
    """Option values the libraries would otherwise reject with a traceback (or accept wrongly)."""
    check_seed("--seed", args.seed)
    check_int("--steps", args.steps, 1)
    for h in args.hidden:
        check_int("--hidden", h, 1, MAX_HIDDEN)
    for option, value in (("--tau", args.tau), ("--v-th", args.v_th), ("--alpha", args.alpha),
                          ("--tau-out", args.tau_out)):
        check_real(option, value, positive=True)
    check_int("--time-steps", args.time_steps, 1, MAX_TIME_STEPS_TRAIN)
    check_int("--envs", args.envs, 1, MAX_ENVS)
    out = Path(args.output)
    stem = out.with_suffix("")
    for path in (out, Path(f"{stem}.last.pt"), Path(f"{stem}.eval.csv")):
        check_output("-o", path)






MAX_HIDDEN = 1 << 20  # units of one hidden layer
MAX_ENVS = 256  # environment processes of one run
MAX_TIME_STEPS_TRAIN = 10_000  # T while training (each step is a forward and a backward pass)
INIT_OBSERVATIONS = 64  # random-play observations for the data-dependent init
INIT_EVERY = 4  # keep one observation in this many steps, so they differ


def random_play_observations(env_id: str, n: int, seed: int) -> np.ndarray:
    """``n`` raw observations of uniformly random play (own env and RNG: training is untouched)."""
    env = make_env(env_id)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    out, step = [], 0
    while len(out) < n:
        if step % INIT_EVERY == 0:
            out.append(np.asarray(obs))
        obs, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        if terminated or truncated:
            obs, _ = env.reset()
        step += 1
    env.close()
    return np.stack(out)


def init_to_rate(agent: SB3DQN, env_id: str, rate: float, seed: int) -> list[float]:
    """Data-dependent init of the online Q-network (see ``data_dependent_init``), copied to
    the target network; returns the mean firing rate each hidden layer reaches."""
    raw = random_play_observations(env_id, INIT_OBSERVATIONS, seed + 3_000_017)
    with torch.no_grad():
        obs = agent.q_net.features_extractor(torch.as_tensor(raw).to(agent.device))
    rates = data_dependent_init(agent.q_net.q_net, obs, rate)
    agent.q_net_target.load_state_dict(agent.q_net.state_dict())
    return [round(r, 4) for r in rates]


def output_paths(out: Path) -> dict[str, Path]:
    """Every file a run writes beside ``out`` (the best checkpoint), its folder made."""
    stem = out.with_suffix("")
    out.parent.mkdir(parents=True, exist_ok=True)
    return {"best": out, "last": Path(f"{stem}.last.pt"), "csv": Path(f"{stem}.eval.csv"),
            "json": Path(f"{stem}.train.json"), "png": Path(f"{stem}.curve.png"), **state_paths(stem)}


def training_env_factory(env_id: str, reward_shaping: str, gamma: float, env: Any = None) -> Callable[[], Any]:
    """A function that makes one training env (``env`` itself if given), reward-shaped if asked;
    module-level so that a subprocess worker can receive it."""

    def make() -> Any:
        # Monitor sits inside the shaping so logged training returns stay in the true reward
        monitored = Monitor(env if env is not None else make_env(env_id))
        return shape_reward(monitored, env_id, reward_shaping, gamma) if reward_shaping != "none" else monitored

    return make


def training_envs(env: Any, env_id: str, reward_shaping: str, gamma: float, seed: int,
                  n_envs: int = 1) -> tuple[VecEnv, DummyVecEnv]:
    """SB3's training env and a separate, seeded evaluation env.

    One environment runs in this process (``env``); ``n_envs > 1`` run in worker processes
    (SB3's ``SubprocVecEnv``), so stepping them overlaps with the learner. SB3 seeds env ``i``
    with ``seed + i`` either way, so ``--envs 1`` is the run it always was.
    """
    if n_envs == 1:
        train_env: VecEnv = DummyVecEnv([training_env_factory(env_id, reward_shaping, gamma, env)])
    else:
        env.close()
        train_env = SubprocVecEnv([training_env_factory(env_id, reward_shaping, gamma) for _ in range(n_envs)])
    eval_env = DummyVecEnv([lambda: Monitor(make_env(env_id))])
    eval_env.seed(seed + 1_000_003)
    return train_env, eval_env


def final_evaluation(best_path: Path, episodes: int, seed: int, best_step: int, progress: bool,
                     device: str = "cpu") -> dict[str, Any]:
    """Greedy episodes of the best checkpoint on unseen seeds; the score goes into its provenance.

    On Atari the same episodes are also played under DESIGN.md's protocol (epsilon 0.05), kept
    as ``evaluation_atari_protocol`` in the provenance and ``protocol`` in the result: that is
    the score papers report, and the greedy one alone flatters a brittle agent."""
    from pipeline.checkpoint import load_checkpoint
    from pipeline.envs import ATARI_EVAL_EPSILON, is_atari
    from pipeline.evaluate import evaluate_checkpoint

    keys = ("mean_return", "std_return", "episodes", "seed", "epsilon")
    print(f"[final eval] {episodes} greedy episodes of {best_path.name}...", file=sys.stderr, flush=True)
    result = evaluate_checkpoint(best_path, episodes=episodes, seed=seed, progress=progress, device=device)
    best = load_checkpoint(best_path)
    best.provenance["evaluation"] = {**{k: result[k] for k in keys}, "timesteps": best_step}
    if is_atari(best.env_id):
        print(f"[final eval] the same {episodes} episodes with epsilon {ATARI_EVAL_EPSILON} (Atari protocol)...",
              file=sys.stderr, flush=True)
        protocol = evaluate_checkpoint(best_path, episodes=episodes, seed=seed, epsilon=ATARI_EVAL_EPSILON,
                                       progress=progress, device=device)
        best.provenance["evaluation_atari_protocol"] = {**{k: protocol[k] for k in keys}, "timesteps": best_step}
        result = {**result, "protocol": protocol}
    save_checkpoint(best, best_path)
    return result


@contextmanager
def stop_on_signal(callback: EvalCheckpointCallback):
    """SIGINT/SIGTERM end training after the current step with the state saved (a second
    signal stops at once): an interrupted background run loses nothing."""

    def handler(signum, frame):
        if callback.stop_signal is not None:
            raise KeyboardInterrupt
        callback.stop_signal = signum
        print(f"train-agent: {signal.Signals(signum).name} received, stopping after this step", file=sys.stderr)

    if threading.current_thread() is not threading.main_thread():  # the API called from a thread:
        yield  # Python lets only the main thread set handlers; signals keep their usual effect
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def stopped_summary(callback: EvalCheckpointCallback, steps: int, paths: dict[str, Path],
                    state_saved: bool) -> dict[str, Any]:
    """What a run stopped by a signal reports: where it stopped and how to go on."""
    resume = (f"training state saved at step {steps} ({paths['state'].name}, {paths['replay'].name}); "
              "continue with the same command plus --resume" if state_saved
              else f"stopped at step {steps} without --save-state: nothing to resume from")
    return {"stopped": int(callback.stop_signal), "timesteps": steps, "message": resume}


def train(args: argparse.Namespace) -> dict[str, Any]:
    if args.trust_legacy_state and not args.resume:
        raise UserError("--trust-legacy-state only goes with --resume")
    check_train_args(args)
    env_id = args.env
    env = make_env(env_id)  # validates the id, lists choices if unknown
    actions = n_actions(env)
    shape = tuple(int(x) for x in env.observation_space.shape)
    spec = build_spec(args, env_id, shape, actions)
    preset = args.preset or default_hp_preset(env_id)
    check_choice("hyperparameter preset", preset, HP_PRESETS)
    overrides = list(args.hp) + ([f"total_steps={args.steps}"] if args.steps is not None else [])
    overrides += ["double_dqn=true"] if args.double else []
    hp = parse_hp(HP_PRESETS[preset], overrides)
    pre = default_preprocessing(env_id, args.scale_obs)
    device = resolve_device(args.device)
    vector_schedule(hp.train_freq, hp.gradient_steps, args.envs)  # refuse an --envs that breaks the schedule now
    threads = args.threads if args.threads is not None else default_torch_threads(os.cpu_count(), args.envs - 1)
    set_torch_threads(threads)
    check_replay_memory(hp, int(np.prod(shape)) * env.observation_space.dtype.itemsize)

    paths = output_paths(Path(args.output))
    train_env, eval_env = training_envs(env, env_id, args.reward_shaping, hp.gamma, args.seed, args.envs)
    algo = DoubleDQN if hp.double_dqn else SB3DQN
    meta = {"env_id": env_id, "model": args.model, "reward_shaping": args.reward_shaping, "hp_preset": preset, "hyperparams": asdict(hp),
            "spec": spec.to_dict()}
    # results-changing settings a resume must repeat; left out at their defaults so that runs
    # saved before these options existed still resume
    meta.update({k: v for k, v in (("envs", args.envs), ("device", device)) if (k, v) not in (("envs", 1), ("device", "cpu"))})
    settings = {**meta, "seed": args.seed, "preprocessing": pre.to_dict()}
    rows: list[dict[str, float]] = []
    if args.resume:
        agent, rows = load_training_state(algo, paths, settings, train_env, hp,
                                          make_agent=lambda: new_agent(algo, train_env, hp, spec, pre, args.seed, device),
                                          trust_legacy=args.trust_legacy_state)
    else:
        agent = new_agent(algo, train_env, hp, spec, pre, args.seed, device)
        if hp.init_rate > 0 and isinstance(agent.q_net.q_net, SpikingQNetwork):
            meta["init_rates"] = init_to_rate(agent, env_id, hp.init_rate, args.seed)

    def make_ckpt(score: dict[str, Any]) -> Checkpoint:
        return Checkpoint(spec=spec, state_dict=model_state_dict(agent), env_id=env_id, preprocessing=pre,
                          provenance=provenance(args.seed, evaluation=score, hp_preset=preset,
                                                reward_shaping=args.reward_shaping, threads=threads,
                                                envs=args.envs, device=device,
                                                hyperparams=asdict(hp), training_steps=agent.num_timesteps))

    save_state = settings if (args.save_state or args.resume) else None
    callback = EvalCheckpointCallback(eval_env, hp, make_ckpt, paths, save_state=save_state, rows=rows,
                                      progress_lines=args.no_progress)
    t0, start_steps = time.perf_counter(), agent.num_timesteps
    with stop_on_signal(callback):
        agent.learn(total_timesteps=hp.total_steps - agent.num_timesteps, callback=callback,
                    progress_bar=not args.no_progress, reset_num_timesteps=not args.resume)
    train_seconds = time.perf_counter() - t0
    learn_seconds = max(train_seconds - callback.eval_seconds, 1e-9)  # without evaluations and saves
    if callback.stop_signal is not None:
        return stopped_summary(callback, agent.num_timesteps, paths, save_state is not None)
    if not callback.rows or callback.rows[-1]["timesteps"] != agent.num_timesteps:
        callback.evaluate()
    plot_curve(callback.rows, f"{args.model} on {env_id} (seed {args.seed})", paths["png"], hp.eval_episodes,
               pre.atari.get("frame_skip", 1) if pre.atari else 1)

    summary = {**meta, "seed": args.seed, "train_seconds": round(train_seconds, 1),
               "steps_per_second": round((agent.num_timesteps - start_steps) / learn_seconds, 1),
               "best_eval": callback.best, "best_step": callback.best_step, "evals": callback.rows,
               "files": {k: str(v) for k, v in paths.items()
                         if k not in LEGACY_FILES and (save_state or k not in STATE_FILES)}}
    if hp.final_eval_episodes > 0:
        summary["final_eval"] = final_evaluation(paths["best"], hp.final_eval_episodes, args.seed + 2_000_003,
                                                 callback.best_step, progress=not args.no_progress, device=device)
    with open(paths["json"], "w") as fh:
        json.dump(summary, fh, indent=2)
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"train-agent: {summary['model']} on {summary['env_id']}")
    for col in ("seed", "steps", "train time", "best eval", "final eval"):
        table.add_column(col, justify="right")
    final = summary.get("final_eval")
    table.add_row(
        str(summary["seed"]),
        str(summary["evals"][-1]["timesteps"]),
        f"{summary['train_seconds']:.0f} s",
        f"{summary['best_eval']:.1f} @ {summary['best_step']}",
        f"{final['mean_return']:.1f} ± {final['std_return']:.1f} ({final['episodes']} ep)" if final else "-",
    )
    if final and "protocol" in final:
        table.caption = (f"final eval with epsilon {final['protocol']['epsilon']} (Atari protocol): "
                         f"{final['protocol']['mean_return']:.1f} ± {final['protocol']['std_return']:.1f}")
    Console().print(table)
    print(f"best checkpoint: {summary['files']['best']}")


def run(args: argparse.Namespace) -> int:
    """``train-agent`` after its options are parsed (:mod:`pipeline.train_cli`)."""
    summary = train(args)
    if "stopped" in summary:  # a signal ended the run early
        print(f"train-agent: {summary['message']}", file=sys.stderr)
        return 128 + summary["stopped"]
    print_summary(summary)
    return 0

from pipeline.train_cli import main, make_parser  # noqa: E402,F401  (re-exported: pipeline.train.main keeps working)

if __name__ == "__main__":
    raise SystemExit(main())

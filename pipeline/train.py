"""``train-agent``: DQN and DSQN training on Stable-Baselines3's DQN machinery.

SB3 supplies the replay buffer, target network, epsilon schedule, callbacks and progress bar;
our network (``pipeline.models``) is plugged in as the Q-network through a small policy
subclass. Double DQN is a two-line change of SB3's TD target (:class:`DoubleDQN`).
Periodic greedy evaluation keeps the best and the last checkpoint, a CSV log, a JSON summary
and a learning-curve PNG.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3 import DQN as SB3DQN
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import DummyVecEnv
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork

from pipeline.checkpoint import Checkpoint, provenance, save_checkpoint
from pipeline.envs import (
    Preprocessor,
    default_preprocessing,
    is_atari,
    make_env,
    n_actions,
    REWARD_SHAPINGS,
    shape_reward,
)
from pipeline.cli import cli_entry
from pipeline.errors import UserError, check_choice, choice_error
from pipeline.models import SpikingQNetwork, build_model, data_dependent_init
from pipeline.runtime import set_torch_threads
from pipeline.spec import (
    DEFAULT_T_ATARI,
    DEFAULT_T_CLASSIC,
    MODEL_PRESETS,
    NEURONS,
    READOUTS,
    RESETS,
    ENCODINGS,
    ModelSpec,
    NeuronParams,
    Preprocessing,
    preset_fields,
)


@dataclass(frozen=True)
class Hyperparams:
    """DQN hyperparameters (SB3 names where SB3 has them)."""

    total_steps: int = 50_000
    learning_rate: float = 1e-4
    learning_rate_end: float | None = None  # linear decay to this value (None: constant)
    batch_size: int = 32
    buffer_size: int = 100_000
    learning_starts: int = 1_000
    gamma: float = 0.99
    target_update_interval: int = 10_000
    train_freq: int = 4
    gradient_steps: int = 1
    n_steps: int = 1  # n-step returns (SB3's NStepReplayBuffer) when > 1
    exploration_fraction: float = 0.1
    exploration_initial_eps: float = 1.0
    exploration_final_eps: float = 0.05
    max_grad_norm: float = 10.0
    double_dqn: bool = False
    optimize_memory_usage: bool = False
    eval_freq: int = 5_000
    eval_episodes: int = 10
    final_eval_episodes: int = 100
    # spiking models: data-dependent init to this mean firing rate per hidden layer on
    # random-play observations (0: PyTorch's default init, under which deep SNNs start silent)
    init_rate: float = 0.0


# Hyperparameter presets. CartPole and MountainCar follow RL-Zoo's tuned DQN settings;
# "atari" is RL-Zoo's Atari DQN scaled to a CPU-sized replay buffer; "liu-atari" is the
# setting of Liu et al. 2022's public code (Adam 1e-4, Huber, replay 1e6, batch 32,
# target update 1e4, epsilon 1 -> 0.1 over 1e6 steps).
HP_PRESETS: dict[str, Hyperparams] = {
    "CartPole-v1": Hyperparams(
        total_steps=50_000, learning_rate=2.3e-3, batch_size=64, buffer_size=100_000,
        learning_starts=1_000, gamma=0.99, target_update_interval=10, train_freq=256,
        gradient_steps=128, exploration_fraction=0.16, exploration_final_eps=0.04,
        eval_freq=2_500, eval_episodes=10,
    ),
    "MountainCar-v0": Hyperparams(
        total_steps=120_000, learning_rate=4e-3, batch_size=128, buffer_size=10_000,
        learning_starts=1_000, gamma=0.98, target_update_interval=600, train_freq=16,
        gradient_steps=8, exploration_fraction=0.2, exploration_final_eps=0.07,
        eval_freq=5_000, eval_episodes=10,
    ),
    "atari": Hyperparams(
        total_steps=1_000_000, learning_rate=1e-4, batch_size=32, buffer_size=100_000,
        learning_starts=20_000, gamma=0.99, target_update_interval=1_000, train_freq=4,
        gradient_steps=1, exploration_fraction=0.1, exploration_final_eps=0.01,
        optimize_memory_usage=False, eval_freq=50_000, eval_episodes=5, final_eval_episodes=10,
    ),
    "liu-atari": Hyperparams(
        total_steps=10_000_000, learning_rate=1e-4, batch_size=32, buffer_size=1_000_000,
        learning_starts=50_000, gamma=0.99, target_update_interval=10_000, train_freq=4,
        gradient_steps=1, exploration_fraction=0.1, exploration_final_eps=0.1,
        eval_freq=250_000, eval_episodes=10, final_eval_episodes=30,
    ),
}


def default_hp_preset(env_id: str) -> str:
    return "atari" if is_atari(env_id) else env_id if env_id in HP_PRESETS else "CartPole-v1"


def parse_hp(preset: Hyperparams, overrides: list[str]) -> Hyperparams:
    """Apply ``key=value`` overrides; an unknown key lists the valid ones."""
    types = {f.name: f.type for f in fields(Hyperparams)}
    changes: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise UserError(f"hyperparameter override must be key=value, got {item!r}")
        key, value = item.split("=", 1)
        if key not in types:
            raise choice_error("hyperparameter", key, sorted(types))
        kind = types[key]
        try:
            if kind in ("bool", bool):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                changes[key] = value.lower() in ("true", "1")
            elif kind in ("int", int):
                changes[key] = int(float(value))
            else:
                changes[key] = float(value)
        except ValueError:
            raise UserError(f"hyperparameter {key} needs a {kind} value, got {value!r}") from None
    hp = replace(preset, **changes)
    if hp.total_steps < 1 or hp.batch_size < 1 or hp.buffer_size < 1:
        raise UserError("total_steps, batch_size and buffer_size must be >= 1")
    if hp.n_steps < 1:
        raise UserError(f"n_steps must be >= 1, got {hp.n_steps}")
    if hp.n_steps > 1 and hp.optimize_memory_usage:
        raise UserError("n_steps > 1 needs optimize_memory_usage=false (SB3's n-step buffer does not support it)")
    if not 0 <= hp.exploration_final_eps <= 1 or not 0 <= hp.exploration_initial_eps <= 1:
        raise UserError("exploration epsilons must lie in [0, 1]")
    if not 0 <= hp.init_rate < 1:
        raise UserError(f"init_rate must lie in [0, 1) (0: default init), got {hp.init_rate}")
    return hp


# --- SB3 glue: our network as the Q-network --------------------------------------------------


class PreprocessExtractor(BaseFeaturesExtractor):
    """SB3 'features extractor' that only applies the checkpoint's observation preprocessing."""

    def __init__(self, observation_space, preprocessing: dict[str, Any]):
        super().__init__(observation_space, features_dim=1)
        self.pre = Preprocessor(Preprocessing.from_dict(preprocessing))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.pre(obs)


class ModelQNetwork(QNetwork):
    """SB3 QNetwork whose ``q_net`` is one of our models instead of an MLP."""

    def __init__(self, model: torch.nn.Module, **net_args: Any):
        super().__init__(**{**net_args, "net_arch": []})
        self.q_net = model


class ModelDQNPolicy(DQNPolicy):
    def __init__(self, observation_space, action_space, lr_schedule, model_spec: dict[str, Any],
                 preprocessing: dict[str, Any], **kwargs: Any):
        self.model_spec = ModelSpec.from_dict(model_spec)
        kwargs.update(
            features_extractor_class=PreprocessExtractor,
            features_extractor_kwargs={"preprocessing": preprocessing},
            normalize_images=False,  # our preprocessing does the 1/255 itself
        )
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def make_q_net(self) -> QNetwork:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return ModelQNetwork(build_model(self.model_spec), **net_args).to(self.device)


class DoubleDQN(SB3DQN):
    """SB3 DQN with the Double-DQN target (van Hasselt 2016): the online net picks a',
    the target net values it. Everything else is SB3's ``train`` unchanged."""

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        losses = []
        for _ in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
            discounts = data.discounts if data.discounts is not None else self.gamma
            with torch.no_grad():
                next_actions = self.q_net(data.next_observations).argmax(dim=1, keepdim=True)
                next_q = torch.gather(self.q_net_target(data.next_observations), 1, next_actions)
                target = data.rewards + (1 - data.dones) * discounts * next_q
            current = torch.gather(self.q_net(data.observations), 1, data.actions.long())
            loss = F.smooth_l1_loss(current, target)
            losses.append(loss.item())
            self.policy.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", float(np.mean(losses)))


def model_state_dict(agent: SB3DQN) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in agent.q_net.q_net.state_dict().items()}


# --- evaluation, checkpoints, logs -------------------------------------------------------------


class EvalCheckpointCallback(BaseCallback):
    """Every ``eval_freq`` steps: greedy evaluation, CSV row, best/last checkpoints."""

    def __init__(self, eval_env, hp: Hyperparams, make_ckpt, paths: dict[str, Path],
                 save_state: dict[str, Any] | None = None, rows: list[dict[str, float]] | None = None):
        super().__init__()
        self.eval_env, self.hp, self.make_ckpt, self.paths = eval_env, hp, make_ckpt, paths
        self.save_state = save_state  # settings to store with the resumable state (None: no state)
        self.rows: list[dict[str, float]] = list(rows or [])  # a resumed run continues its log
        best = max(self.rows, key=lambda r: (r["mean_return"], r["timesteps"]), default=None)
        self.best = best["mean_return"] if best else -math.inf
        self.best_step = int(best["timesteps"]) if best else 0
        self.t0 = time.perf_counter() - (self.rows[-1]["elapsed_s"] if self.rows else 0.0)

    def _on_step(self) -> bool:
        if self.num_timesteps % self.hp.eval_freq == 0 or self.num_timesteps == self.hp.total_steps:
            self.evaluate()
        return True

    def evaluate(self) -> None:
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
        if self.verbose:
            print(f"[eval] step {row['timesteps']}: return {row['mean_return']:.1f} ± {row['std_return']:.1f}")


# --- resumable training state (--save-state / --resume) ------------------------------------------

# settings that must match for --resume (total_steps and the evaluation schedule may change)
RESUME_FREE_HP = ("total_steps", "eval_freq", "eval_episodes", "final_eval_episodes")
STATE_FILES = ("state_json", "state", "replay")  # keys of ``paths``


def save_training_state(agent: SB3DQN, paths: dict[str, Path], settings: dict[str, Any]) -> None:
    """SB3's own agent file (network, target, optimizer, counters) and replay buffer, plus our
    settings, each written to a temporary name first so an interruption leaves the last state."""
    tmp_zip, tmp_pkl = paths["state"].with_suffix(".tmp.zip"), paths["replay"].with_suffix(".tmp.pkl")
    agent.save(tmp_zip)
    agent.save_replay_buffer(tmp_pkl)
    os.replace(tmp_zip, paths["state"])
    os.replace(tmp_pkl, paths["replay"])
    paths["state_json"].write_text(json.dumps({**settings, "timesteps": int(agent.num_timesteps)}, indent=2))


def load_training_state(algo: type[SB3DQN], paths: dict[str, Path], settings: dict[str, Any], train_env,
                        hp: Hyperparams) -> tuple[SB3DQN, list[dict[str, float]]]:
    """The agent and the evaluation rows of a run saved with --save-state; refuses other settings."""
    missing = [str(paths[k]) for k in STATE_FILES if not paths[k].is_file()]
    if missing:
        raise UserError(f"--resume: no saved training state ({', '.join(missing)} missing); "
                        "train with --save-state to keep one")
    saved = json.loads(paths["state_json"].read_text())

    def comparable(d: dict[str, Any]) -> dict[str, Any]:
        """Settings flattened (hyperparameters as ``hp.<name>``), without what may change."""
        flat = {k: v for k, v in d.items() if k not in ("hyperparams", "timesteps")}
        flat.update({f"hp.{k}": v for k, v in d["hyperparams"].items() if k not in RESUME_FREE_HP})
        return flat

    a, b = comparable(saved), comparable(json.loads(json.dumps(settings)))  # JSON: tuples become lists
    diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    if diff:
        raise UserError(f"--resume: the saved run used other settings ({', '.join(diff)}); repeat its command")
    if saved["timesteps"] >= hp.total_steps:
        raise UserError(f"--resume: the saved run already has {saved['timesteps']} of {hp.total_steps} steps; "
                        "raise --steps to train on")
    with warnings.catch_warnings():
        # SB3 2.x warns that n_steps "is ignored" when a saved n-step agent is loaded, because the
        # saved replay_buffer_class is passed back in; the saved replay_buffer_kwargs carry n_steps
        # and gamma, and the replay buffer loaded next is the saved n-step one, so it is not.
        warnings.filterwarnings("ignore", message=r"`n_steps=\d+` is ignored", category=UserWarning)
        agent = algo.load(paths["state"], env=train_env, device="cpu",
                          custom_objects={"learning_rate": lr_schedule(hp), "lr_schedule": lr_schedule(hp)})
    agent.load_replay_buffer(paths["replay"])
    rows = []
    if paths["csv"].is_file():
        with open(paths["csv"], newline="") as fh:
            rows = [{k: int(v) if v.lstrip("-").isdigit() else float(v) for k, v in r.items()}
                    for r in csv.DictReader(fh)]
        rows = [r for r in rows if r["timesteps"] <= agent.num_timesteps]
    return agent, rows


def plot_curve(rows: list[dict[str, float]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["timesteps"] for r in rows]
    mean = np.array([r["mean_return"] for r in rows])
    std = np.array([r["std_return"] for r in rows])
    train = np.array([r.get("train_return_last100", np.nan) for r in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, mean, marker="o", ms=3, label="greedy evaluation")
    ax.fill_between(steps, mean - std, mean + std, alpha=0.25)
    if np.isfinite(train).any():
        ax.plot(steps, train, ls="--", label="training episodes (last 100, epsilon-greedy)")
        ax.legend(fontsize=8)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def lr_schedule(hp: Hyperparams):
    """Constant, or linear from learning_rate to learning_rate_end over the run (SB3 schedule)."""
    if hp.learning_rate_end is None:
        return hp.learning_rate
    start, end = hp.learning_rate, hp.learning_rate_end
    return lambda progress_remaining: end + progress_remaining * (start - end)


def check_replay_memory(hp: Hyperparams, obs_nbytes: int) -> None:
    """Refuse a replay buffer that cannot fit in this machine's memory, before allocating it."""
    copies = 1 if hp.optimize_memory_usage else 2
    need = hp.buffer_size * obs_nbytes * copies
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > 0.8 * total:
        raise UserError(
            f"replay buffer of {hp.buffer_size} observations needs ~{need / 2**30:.1f} GiB, more than "
            f"this machine's {total / 2**30:.1f} GiB allows; lower buffer_size "
            "(--hp buffer_size=...) or set --hp optimize_memory_usage=true"
        )


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


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train-agent", description=__doc__.split("\n\n")[0])
    p.add_argument("--env", required=True, help="CartPole-v1, MountainCar-v0, ALE/<Game>-v5")
    p.add_argument("--model", default="dsqn", help=f"one of {', '.join(MODEL_PRESETS)}")
    p.add_argument("--arch", help="mlp or nature_cnn (default: nature_cnn for Atari, else mlp)")
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 64], help="MLP hidden sizes")
    p.add_argument("--time-steps", "-T", type=int, help="simulation steps per observation")
    p.add_argument("--neuron", help=f"{'/'.join(NEURONS)}")
    p.add_argument("--reset", help=f"{'/'.join(RESETS)}")
    p.add_argument("--tau", type=float, help="membrane time constant in steps (LIF)")
    p.add_argument("--v-th", type=float, help="firing threshold")
    p.add_argument("--alpha", type=float, help="arctan surrogate alpha")
    p.add_argument("--readout", help=f"{'/'.join(READOUTS)}")
    p.add_argument("--encoding", help=f"{'/'.join(ENCODINGS)}")
    p.add_argument("--tau-out", type=float, help="LI output time constant (membrane readouts)")
    p.add_argument("--no-bias", action="store_true", help="no biases in any layer")
    p.add_argument("--scale-obs", action="store_true",
                   help="map finite observation bounds to [-1, 1] (e.g. MountainCar)")
    p.add_argument("--reward-shaping", default="none",
                   help=f"potential-based shaping of the training reward: none, {', '.join(REWARD_SHAPINGS)}; "
                        "evaluation always uses the true reward")
    p.add_argument("--preset", help=f"hyperparameter preset: {', '.join(HP_PRESETS)} (default: per env)")
    p.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE",
                   help="override one hyperparameter (repeatable)")
    p.add_argument("--steps", type=int, help="total environment steps (same as --hp total_steps=N)")
    p.add_argument("--double", action="store_true", help="Double DQN target")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int,
                   help="torch threads (default 1 for classic control, all cores for Atari); part of "
                        "what makes a seed reproduce a run bit for bit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--save-state", action="store_true",
                   help="at every evaluation also keep what --resume needs: model.state.zip (SB3 agent with "
                        "optimizer) and model.replay.pkl (the replay buffer: GBs for Atari)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run saved with --save-state next to -o (same command; --steps may grow); "
                        "the continued run is not bit-identical to an uninterrupted one")
    p.add_argument("-o", "--output", required=True, help="best checkpoint path (model.pt)")
    return p


def new_agent(algo: type[SB3DQN], train_env, hp: Hyperparams, spec: ModelSpec, pre: Any, seed: int) -> SB3DQN:
    """SB3's DQN (or our DoubleDQN) with ``spec``'s network as the Q-network and ``hp``'s settings."""
    return algo(
        ModelDQNPolicy,
        train_env,
        learning_rate=lr_schedule(hp),
        buffer_size=hp.buffer_size,
        learning_starts=hp.learning_starts,
        batch_size=hp.batch_size,
        gamma=hp.gamma,
        train_freq=hp.train_freq,
        gradient_steps=hp.gradient_steps,
        n_steps=hp.n_steps,
        target_update_interval=hp.target_update_interval,
        exploration_fraction=hp.exploration_fraction,
        exploration_initial_eps=hp.exploration_initial_eps,
        exploration_final_eps=hp.exploration_final_eps,
        max_grad_norm=hp.max_grad_norm,
        optimize_memory_usage=hp.optimize_memory_usage,
        replay_buffer_kwargs={"handle_timeout_termination": not hp.optimize_memory_usage},
        policy_kwargs={"model_spec": spec.to_dict(), "preprocessing": pre.to_dict()},
        seed=seed,
        device="cpu",
        verbose=0,
    )


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
        obs = agent.q_net.features_extractor(torch.as_tensor(raw))
    rates = data_dependent_init(agent.q_net.q_net, obs, rate)
    agent.q_net_target.load_state_dict(agent.q_net.state_dict())
    return [round(r, 4) for r in rates]


def train(args: argparse.Namespace) -> dict[str, Any]:
    env_id = args.env
    env = make_env(env_id)  # validates the id, lists choices if unknown
    actions = n_actions(env)
    shape = tuple(int(x) for x in env.observation_space.shape)
    spec = build_spec(args, env_id, shape, actions)
    preset = args.preset or default_hp_preset(env_id)
    check_choice("hyperparameter preset", preset, HP_PRESETS)
    overrides = list(args.hp) + ([f"total_steps={args.steps}"] if args.steps else [])
    overrides += ["double_dqn=true"] if args.double else []
    hp = parse_hp(HP_PRESETS[preset], overrides)
    pre = default_preprocessing(env_id, args.scale_obs)
    default_threads = (os.cpu_count() or 1) if is_atari(env_id) else 1
    threads = args.threads if args.threads is not None else default_threads
    set_torch_threads(threads)
    check_replay_memory(hp, int(np.prod(shape)) * env.observation_space.dtype.itemsize)

    out = Path(args.output)
    stem = out.with_suffix("")
    paths = {"best": out, "last": Path(f"{stem}.last.pt"), "csv": Path(f"{stem}.eval.csv"),
             "json": Path(f"{stem}.train.json"), "png": Path(f"{stem}.curve.png"),
             "state": Path(f"{stem}.state.zip"), "replay": Path(f"{stem}.replay.pkl"),
             "state_json": Path(f"{stem}.state.json")}
    out.parent.mkdir(parents=True, exist_ok=True)

    if args.reward_shaping != "none":
        # Monitor sits inside the shaping so logged training returns stay in the true reward
        train_env = DummyVecEnv([lambda: shape_reward(Monitor(env), env_id, args.reward_shaping, hp.gamma)])
    else:
        train_env = DummyVecEnv([lambda: Monitor(env)])
    eval_env = DummyVecEnv([lambda: Monitor(make_env(env_id))])
    eval_env.seed(args.seed + 1_000_003)
    algo = DoubleDQN if hp.double_dqn else SB3DQN
    meta = {"env_id": env_id, "model": args.model, "reward_shaping": args.reward_shaping, "hp_preset": preset, "hyperparams": asdict(hp),
            "spec": spec.to_dict()}
    settings = {**meta, "seed": args.seed, "preprocessing": pre.to_dict()}
    rows: list[dict[str, float]] = []
    if args.resume:
        agent, rows = load_training_state(algo, paths, settings, train_env, hp)
    else:
        agent = new_agent(algo, train_env, hp, spec, pre, args.seed)
        if hp.init_rate > 0 and isinstance(agent.q_net.q_net, SpikingQNetwork):
            meta["init_rates"] = init_to_rate(agent, env_id, hp.init_rate, args.seed)

    def make_ckpt(score: dict[str, Any]) -> Checkpoint:
        return Checkpoint(spec=spec, state_dict=model_state_dict(agent), env_id=env_id, preprocessing=pre,
                          provenance=provenance(args.seed, evaluation=score, hp_preset=preset,
                                                reward_shaping=args.reward_shaping, threads=threads,
                                                hyperparams=asdict(hp), training_steps=agent.num_timesteps))

    save_state = settings if (args.save_state or args.resume) else None
    callback = EvalCheckpointCallback(eval_env, hp, make_ckpt, paths, save_state=save_state, rows=rows)
    t0 = time.perf_counter()
    agent.learn(total_timesteps=hp.total_steps - agent.num_timesteps, callback=callback,
                progress_bar=not args.no_progress, reset_num_timesteps=not args.resume)
    train_seconds = time.perf_counter() - t0
    if not callback.rows or callback.rows[-1]["timesteps"] != agent.num_timesteps:
        callback.evaluate()
    plot_curve(callback.rows, f"{args.model} on {env_id} (seed {args.seed})", paths["png"])

    summary = {**meta, "seed": args.seed, "train_seconds": round(train_seconds, 1),
               "best_eval": callback.best, "best_step": callback.best_step, "evals": callback.rows,
               "files": {k: str(v) for k, v in paths.items() if save_state or k not in STATE_FILES}}
    if hp.final_eval_episodes > 0:
        from pipeline.evaluate import evaluate_checkpoint

        result = evaluate_checkpoint(paths["best"], episodes=hp.final_eval_episodes, seed=args.seed + 2_000_003,
                                     progress=not args.no_progress)
        summary["final_eval"] = result
        from pipeline.checkpoint import load_checkpoint

        best = load_checkpoint(paths["best"])
        best.provenance["evaluation"] = {k: result[k] for k in ("mean_return", "std_return", "episodes", "seed")}
        best.provenance["evaluation"]["timesteps"] = callback.best_step
        save_checkpoint(best, paths["best"])
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
    Console().print(table)
    print(f"best checkpoint: {summary['files']['best']}")


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    summary = train(args)
    print_summary(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

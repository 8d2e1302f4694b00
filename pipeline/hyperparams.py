"""DQN hyperparameters of ``train-agent``: the dataclass, the per-environment presets,
``--hp key=value`` parsing, the learning-rate schedule and the replay-memory check."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace
from typing import Any

from pipeline.errors import UserError, choice_error
from pipeline.limits import cgroup_available, rlimit_available
from pipeline.spec import is_atari


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
                if not math.isfinite(changes[key]):
                    raise ValueError(value)
        except (ValueError, OverflowError):
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
    if not hp.learning_rate > 0 or (hp.learning_rate_end is not None and not hp.learning_rate_end >= 0):
        raise UserError("learning_rate must be > 0 (and learning_rate_end >= 0)")
    if not 0 < hp.gamma <= 1:
        raise UserError(f"gamma must lie in (0, 1], got {hp.gamma}")
    if not 0 <= hp.exploration_fraction <= 1:
        raise UserError(f"exploration_fraction must lie in [0, 1], got {hp.exploration_fraction}")
    if min(hp.learning_starts, hp.final_eval_episodes) < 0 or min(
            hp.target_update_interval, hp.train_freq, hp.gradient_steps, hp.eval_freq, hp.eval_episodes) < 1:
        raise UserError("learning_starts and final_eval_episodes must be >= 0; target_update_interval, train_freq, "
                        "gradient_steps, eval_freq and eval_episodes >= 1")
    if not hp.max_grad_norm > 0:
        raise UserError(f"max_grad_norm must be > 0, got {hp.max_grad_norm}")
    if not 0 <= hp.init_rate < 1:
        raise UserError(f"init_rate must lie in [0, 1) (0: default init), got {hp.init_rate}")
    return hp



def lr_schedule(hp: Hyperparams):
    """Constant, or linear from learning_rate to learning_rate_end over the run (SB3 schedule)."""
    if hp.learning_rate_end is None:
        return hp.learning_rate
    start, end = hp.learning_rate, hp.learning_rate_end
    return lambda progress_remaining: end + progress_remaining * (start - end)


def check_replay_memory(hp: Hyperparams, obs_nbytes: int) -> None:
    """Refuse a replay buffer that cannot fit in this machine's memory, before allocating it,
    naming settings that do fit (the largest buffer_size; optimize_memory_usage only where it
    is allowed and enough)."""
    copies = 1 if hp.optimize_memory_usage else 2
    need = hp.buffer_size * obs_nbytes * copies
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limits = [v for v in (cgroup_available(), rlimit_available()) if v is not None]
    total = min([physical, *limits])  # host memory, or the container / ulimit cap below it
    budget = 0.8 * total
    if need <= budget:
        return
    fits = int(budget // (obs_nbytes * copies)) // 1000 * 1000
    options = [f"--hp buffer_size={fits}" if fits > 0 else "a machine with more memory"]
    if not hp.optimize_memory_usage and hp.n_steps == 1 and need / 2 <= budget:
        options.append("--hp optimize_memory_usage=true (stores each frame once)")
    raise UserError(
        f"replay buffer of {hp.buffer_size} observations needs ~{need / 2**30:.1f} GiB, more than the "
        f"{budget / 2**30:.1f} GiB (80 % of {total / 2**30:.1f} GiB) this process may use; set "
        + " or ".join(options)
    )


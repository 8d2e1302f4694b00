"""Resumable training state of ``train-agent`` (``--save-state`` / ``--resume``)."""

from __future__ import annotations

import csv
import json
import os
import warnings
from pathlib import Path
from typing import Any

from stable_baselines3 import DQN as SB3DQN

from pipeline.errors import UserError
from pipeline.hyperparams import Hyperparams, lr_schedule

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


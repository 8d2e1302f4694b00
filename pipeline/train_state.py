"""Resumable training state of ``train-agent`` (``--save-state`` / ``--resume``).

Three files beside ``-o model.pt``, none of which can run code when read:

* ``model.state.json``: the run's settings and step count (JSON);
* ``model.state.pt``: network, target network, optimizer and SB3's counters as a plain dict of
  tensors and numbers, read with ``torch.load(weights_only=True)`` (the same restricted reader as
  ``model.pt``: only tensors, numbers, strings, lists and dicts);
* ``model.replay.npz``: the replay buffer's arrays, read with ``numpy.load(allow_pickle=False)``
  (object arrays, i.e. pickles, are refused).

The SB3 agent itself is never read from a file: ``--resume`` builds a new one from the command's
own settings (which must equal the saved ones) and copies the saved numbers into it, checking
every name, shape and dtype. Earlier versions kept SB3's own files (``model.state.zip``, whose
``data`` entry holds cloudpickled objects, and ``model.replay.pkl``, a pickle); loading those can
run code, so a plain ``--resume`` never opens them. ``--resume --trust-legacy-state`` loads such a
pair once, for a run the user wrote and trusts, and writes the safe files from it.
"""

from __future__ import annotations

import csv
import json
import math
import os
import pickle
import warnings
import zipfile
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import DQN as SB3DQN

from pipeline.errors import UserError
from pipeline.hyperparams import Hyperparams, lr_schedule

# settings that must match for --resume (total_steps and the evaluation schedule may change)
RESUME_FREE_HP = ("total_steps", "eval_freq", "eval_episodes", "final_eval_episodes")
STATE_FILES = ("state_json", "state", "replay")  # keys of ``paths``
LEGACY_FILES = ("legacy_state", "legacy_replay")  # SB3's pickle-based files of earlier versions
STATE_FORMAT = "dsqn-deploy/train-state"
STATE_VERSION = 1
# SB3 counters a resumed run continues from (everything else is rebuilt from the settings)
COUNTERS = ("num_timesteps", "_n_updates", "_n_calls", "_episode_num")
REPLAY_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def state_paths(stem: Path) -> dict[str, Path]:
    """The state files of the run whose checkpoint is ``<stem>.pt``."""
    return {"state": Path(f"{stem}.state.pt"), "replay": Path(f"{stem}.replay.npz"),
            "state_json": Path(f"{stem}.state.json"),
            "legacy_state": Path(f"{stem}.state.zip"), "legacy_replay": Path(f"{stem}.replay.pkl")}


def _replace_atomically(path: Path, write: Callable[[Any], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        write(fh)
    os.replace(tmp, path)


def save_training_state(agent: SB3DQN, paths: dict[str, Path], settings: dict[str, Any]) -> None:
    """Network, target, optimizer, counters and replay buffer, plus our settings; each file is
    written to a temporary name first, so an interruption leaves the last complete file."""
    steps = int(agent.num_timesteps)
    state = {
        "format": STATE_FORMAT, "format_version": STATE_VERSION, "timesteps": steps,
        "policy": agent.policy.state_dict(),
        "optimizer": agent.policy.optimizer.state_dict(),
        "counters": {k: int(getattr(agent, k)) for k in COUNTERS},
        "exploration_rate": float(agent.exploration_rate),
        "ep_info": [[float(ep["r"]), float(ep["l"]), float(ep["t"])] for ep in agent.ep_info_buffer or []],
    }
    _replace_atomically(paths["state"], lambda fh: torch.save(state, fh))
    buf = agent.replay_buffer
    arrays = {k: getattr(buf, k) for k in REPLAY_ARRAYS if hasattr(buf, k)}
    arrays.update(pos=np.int64(buf.pos), full=np.bool_(buf.full), timesteps=np.int64(steps))
    _replace_atomically(paths["replay"], lambda fh: np.savez(fh, **arrays))
    paths["state_json"].write_text(json.dumps({**settings, "timesteps": steps}, indent=2))


def _comparable(d: dict[str, Any]) -> dict[str, Any]:
    """Settings flattened (hyperparameters as ``hp.<name>``), without what may change."""
    flat = {k: v for k, v in d.items() if k not in ("hyperparams", "timesteps")}
    flat.update({f"hp.{k}": v for k, v in d["hyperparams"].items() if k not in RESUME_FREE_HP})
    return flat


def _read_settings(path: Path) -> dict[str, Any]:
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"--resume: {path} is not a readable state file ({exc})") from None
    steps = saved.get("timesteps") if isinstance(saved, dict) else None
    if not isinstance(saved.get("hyperparams") if isinstance(saved, dict) else None, dict) \
            or not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise UserError(f"--resume: {path} is not a dsqn-deploy training state (no settings or step count)")
    return saved


def _load_state_pt(path: Path, steps: int) -> dict[str, Any]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "unsafe or corrupt pickle"
        raise UserError(f"--resume: {path} is not a safe training state (refused: {reason[:120]})") from None
    except Exception as exc:  # torch.load raises many types on garbage
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"--resume: {path} is corrupt or not a training state ({reason[:160]})") from None
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise UserError(f"--resume: {path} is not a dsqn-deploy training state (no '{STATE_FORMAT}' marker)")
    if data.get("format_version") != STATE_VERSION:
        raise UserError(f"--resume: {path} has training-state format version {data.get('format_version')!r}; "
                        f"this dsqn-deploy reads {STATE_VERSION}")
    if data.get("timesteps") != steps:
        raise UserError(f"--resume: {path} holds step {data.get('timesteps')!r} but the state file says {steps} "
                        "(files from different saves); resume from a complete save")
    counters = data.get("counters")
    if not isinstance(counters, dict) or set(counters) != set(COUNTERS) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counters.values()):
        raise UserError(f"--resume: {path} has malformed counters")
    ep_info = data.get("ep_info")
    if not isinstance(ep_info, list) or not all(
            isinstance(e, list) and len(e) == 3 and all(isinstance(x, (int, float)) and math.isfinite(x) for x in e)
            for e in ep_info):
        raise UserError(f"--resume: {path} has a malformed episode log")
    rate = data.get("exploration_rate")
    if not isinstance(rate, float) or not 0.0 <= rate <= 1.0:
        raise UserError(f"--resume: {path} has a malformed exploration rate")
    if not isinstance(data.get("policy"), dict) or not isinstance(data.get("optimizer"), dict):
        raise UserError(f"--resume: {path} has no network or optimizer state")
    return data


def _load_replay(path: Path, buf: Any, steps: int) -> None:
    """Copy the saved arrays into ``buf`` (SB3's replay buffer), checking names, shapes and dtypes."""
    expected = {k: getattr(buf, k) for k in REPLAY_ARRAYS if hasattr(buf, k)}
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
            if names != set(expected) | {"pos", "full", "timesteps"}:
                raise UserError(f"--resume: {path} holds other arrays than this run's replay buffer "
                                f"({', '.join(sorted(names ^ (set(expected) | {'pos', 'full', 'timesteps'})))})")
            meta = {k: npz[k] for k in ("pos", "full", "timesteps")}
            if any(m.shape != () for m in meta.values()) or int(meta["timesteps"]) != steps:
                raise UserError(f"--resume: {path} is from another save than the state file (step count differs)")
            pos, full = int(meta["pos"]), bool(meta["full"])
            if not 0 <= pos < buf.buffer_size:
                raise UserError(f"--resume: {path} has a write position {pos} outside the buffer")
            loaded = {}
            for name, current in expected.items():
                arr = npz[name]
                if arr.shape != current.shape or arr.dtype != current.dtype:
                    raise UserError(f"--resume: {path}: '{name}' is {arr.dtype}{list(arr.shape)}, this run's buffer "
                                    f"needs {current.dtype}{list(current.shape)}")
                loaded[name] = arr
    except UserError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        # ValueError also covers object arrays, which allow_pickle=False refuses to unpickle
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"--resume: {path} is not a safe replay buffer ({reason[:160]})") from None
    for name, arr in loaded.items():
        setattr(buf, name, arr)
    buf.pos, buf.full = pos, full


def _restore(agent: SB3DQN, data: dict[str, Any], path: Path) -> None:
    try:
        agent.policy.load_state_dict(data["policy"], strict=True)
        agent.policy.optimizer.load_state_dict(data["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        reason = str(exc).replace("\n", " ").replace("\t", " ")
        raise UserError(f"--resume: {path} does not match this run's network ({reason[:240]})") from None
    for key, value in data["counters"].items():
        setattr(agent, key, value)
    agent.exploration_rate = data["exploration_rate"]
    # SB3 keeps the last ``_stats_window_size`` episodes (``_setup_learn`` leaves a filled deque as it is)
    agent.ep_info_buffer = deque(({"r": r, "l": int(n), "t": t} for r, n, t in data["ep_info"]),
                                 maxlen=agent._stats_window_size)
    agent.ep_success_buffer = deque(maxlen=agent._stats_window_size)  # no env of ours reports is_success


def _load_legacy(algo: type[SB3DQN], paths: dict[str, Path], train_env, hp: Hyperparams) -> SB3DQN:
    """SB3's own pickle-based files (earlier versions): only on --trust-legacy-state."""
    with warnings.catch_warnings():
        # SB3 2.x warns that n_steps "is ignored" when a saved n-step agent is loaded, because the
        # saved replay_buffer_class is passed back in; the saved replay_buffer_kwargs carry n_steps
        # and gamma, and the replay buffer loaded next is the saved n-step one, so it is not.
        warnings.filterwarnings("ignore", message=r"`n_steps=\d+` is ignored", category=UserWarning)
        agent = algo.load(paths["legacy_state"], env=train_env, device="cpu",
                          custom_objects={"learning_rate": lr_schedule(hp), "lr_schedule": lr_schedule(hp)})
    agent.load_replay_buffer(paths["legacy_replay"])
    return agent


def load_training_state(algo: type[SB3DQN], paths: dict[str, Path], settings: dict[str, Any], train_env,
                        hp: Hyperparams, make_agent: Callable[[], SB3DQN] | None = None,
                        trust_legacy: bool = False) -> tuple[SB3DQN, list[dict[str, float]]]:
    """The agent and the evaluation rows of a run saved with --save-state; refuses other settings.

    ``make_agent`` builds a fresh agent from the command's settings (the saved numbers are copied
    into it). With ``trust_legacy`` a run saved by an earlier version in SB3's pickle format is
    loaded with SB3 (which can run code: only for files the user wrote) and saved in the safe format.
    """
    safe = all(paths[k].is_file() for k in STATE_FILES)
    legacy = paths["state_json"].is_file() and all(paths[k].is_file() for k in LEGACY_FILES)
    if not safe and legacy and not trust_legacy:
        raise UserError(f"--resume: {paths['legacy_state'].name} and {paths['legacy_replay'].name} are the pickle-based "
                        "state of an earlier version, which can run code when loaded; if you wrote them yourself, "
                        "resume once with --trust-legacy-state to convert them")
    if not safe and not legacy:
        missing = [str(paths[k]) for k in STATE_FILES if not paths[k].is_file()]
        raise UserError(f"--resume: no saved training state ({', '.join(missing)} missing); "
                        "train with --save-state to keep one")
    saved = _read_settings(paths["state_json"])
    a, b = _comparable(saved), _comparable(json.loads(json.dumps(settings)))  # JSON: tuples become lists
    diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    if diff:
        raise UserError(f"--resume: the saved run used other settings ({', '.join(diff)}); repeat its command")
    if saved["timesteps"] >= hp.total_steps:
        raise UserError(f"--resume: the saved run already has {saved['timesteps']} of {hp.total_steps} steps; "
                        "raise --steps to train on")
    if safe:
        if make_agent is None:
            raise ValueError("make_agent is needed to resume from the safe state files")
        data = _load_state_pt(paths["state"], saved["timesteps"])
        agent = make_agent()
        _restore(agent, data, paths["state"])
        _load_replay(paths["replay"], agent.replay_buffer, saved["timesteps"])
    else:
        agent = _load_legacy(algo, paths, train_env, hp)
        save_training_state(agent, paths, settings)
    return agent, read_eval_rows(paths["csv"], agent.num_timesteps)


def read_eval_rows(path: Path, up_to: int) -> list[dict[str, float]]:
    """The evaluation log of the saved run, up to its saved step (a later row is from after the save)."""
    if not path.is_file():
        return []
    try:
        with open(path, newline="") as fh:
            rows = [{k: int(v) if v.lstrip("-").isdigit() else float(v) for k, v in r.items()}
                    for r in csv.DictReader(fh)]
        return [r for r in rows if r["timesteps"] <= up_to]
    except (OSError, UnicodeDecodeError, ValueError, TypeError, AttributeError, KeyError, csv.Error) as exc:
        raise UserError(f"--resume: {path} is not this run's evaluation log ({exc}); move it away to resume") from None

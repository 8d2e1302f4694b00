"""The resumable training state: saved and read back exactly, in files that cannot run code.

Every payload test first shows that its payload is live (loading it the unsafe way runs it), then
that ``--resume``'s reader refuses it with a ``UserError`` and the payload's marker file is absent.
"""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3 import DQN as SB3DQN
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from pipeline.envs import default_preprocessing, make_env
from pipeline.errors import UserError
from pipeline.hyperparams import HP_PRESETS, parse_hp
from pipeline.sb3_glue import new_agent
from pipeline.spec import ModelSpec
from pipeline.train_state import COUNTERS, REPLAY_ARRAYS, load_training_state, save_training_state, state_paths

HP = parse_hp(HP_PRESETS["CartPole-v1"], ["total_steps=1000", "learning_starts=50", "train_freq=50",
                                          "gradient_steps=3", "n_steps=3", "buffer_size=2000"])
SPEC = ModelSpec(kind="dqn", arch="mlp", obs_shape=(4,), n_actions=2, hidden=(8,)).validate()
PRE = default_preprocessing("CartPole-v1", False)
SETTINGS = {"env_id": "CartPole-v1", "hyperparams": asdict(HP), "spec": SPEC.to_dict(), "seed": 0}


class Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def env():
    return DummyVecEnv([lambda: Monitor(make_env("CartPole-v1"))])


def fresh(train_env=None):
    return new_agent(SB3DQN, train_env or env(), HP, SPEC, PRE, 0)


def load(paths, trust_legacy=False):
    train_env = env()
    return load_training_state(SB3DQN, paths, SETTINGS, train_env, HP, make_agent=lambda: fresh(train_env),
                               trust_legacy=trust_legacy)[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An agent after 300 steps (updates, n-step replay, episodes) and its saved state."""
    agent = fresh()
    agent.learn(total_timesteps=300)
    folder = tmp_path_factory.mktemp("state")
    paths = {**state_paths(folder / "m"), "csv": folder / "m.eval.csv"}
    save_training_state(agent, paths, SETTINGS)
    agent.save(paths["legacy_state"])  # what earlier versions wrote
    agent.save_replay_buffer(paths["legacy_replay"])
    return agent, paths


def copy_state(paths, folder: Path, keys) -> dict[str, Path]:
    new = {**state_paths(folder / "m"), "csv": folder / "m.eval.csv"}
    for k in keys:
        new[k].write_bytes(paths[k].read_bytes())
    return new


def assert_same_agent(a, b):
    sa, sb = a.policy.state_dict(), b.policy.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    oa, ob = a.policy.optimizer.state_dict(), b.policy.optimizer.state_dict()
    assert oa["param_groups"] == ob["param_groups"]
    assert all(torch.equal(oa["state"][i][k], ob["state"][i][k]) for i in oa["state"] for k in oa["state"][i])
    assert [getattr(a, k) for k in COUNTERS] == [getattr(b, k) for k in COUNTERS]
    assert a.exploration_rate == b.exploration_rate
    assert [(e["r"], e["l"]) for e in a.ep_info_buffer] == [(e["r"], e["l"]) for e in b.ep_info_buffer]
    for k in REPLAY_ARRAYS:
        if hasattr(a.replay_buffer, k):
            assert np.array_equal(getattr(a.replay_buffer, k), getattr(b.replay_buffer, k))
    assert (a.replay_buffer.pos, a.replay_buffer.full) == (b.replay_buffer.pos, b.replay_buffer.full)


def test_safe_state_reads_back_exactly(trained, tmp_path):
    agent, paths = trained
    assert agent.num_timesteps == 300 and agent._n_updates > 0 and len(agent.ep_info_buffer) > 0
    loaded = load(copy_state(paths, tmp_path, ("state", "replay", "state_json")))
    assert_same_agent(agent, loaded)
    loaded.learn(total_timesteps=100, reset_num_timesteps=False)  # and trains on
    assert loaded.num_timesteps == 400


def test_legacy_state_needs_trust_and_is_converted(trained, tmp_path):
    agent, paths = trained
    new = copy_state(paths, tmp_path, ("legacy_state", "legacy_replay", "state_json"))
    with pytest.raises(UserError, match="pickle-based state of an earlier version.*--trust-legacy-state"):
        load(new)
    assert not new["state"].exists()
    assert_same_agent(agent, load(new, trust_legacy=True))
    assert new["state"].is_file() and new["replay"].is_file()  # converted: a plain --resume works now
    assert_same_agent(agent, load(new))


def test_legacy_replay_pickle_payload_never_runs(trained, tmp_path):
    _, paths = trained
    marker = tmp_path / "PWNED_replay_pkl"
    new = copy_state(paths, tmp_path, ("legacy_state", "state_json"))
    new["legacy_replay"].write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(UserError):
        load(new)
    assert not marker.exists()
    pickle.loads(new["legacy_replay"].read_bytes())  # control: the payload is live
    assert marker.exists()


def test_legacy_state_zip_payload_never_runs(trained, tmp_path):
    _, paths = trained
    marker = tmp_path / "PWNED_state_zip"
    new = copy_state(paths, tmp_path, ("legacy_replay", "state_json"))
    with zipfile.ZipFile(paths["legacy_state"]) as src, zipfile.ZipFile(new["legacy_state"], "w") as dst:
        for item in src.infolist():
            content = src.read(item)
            if item.filename == "data":  # SB3's JSON with cloudpickled entries
                data = json.loads(content)
                data["policy_class"][":serialized:"] = base64.b64encode(pickle.dumps(Payload(marker))).decode()
                content = json.dumps(data).encode()
            dst.writestr(item, content)
    with pytest.raises(UserError):
        load(new)
    assert not marker.exists()
    with zipfile.ZipFile(new["legacy_state"]) as z:  # control: the payload is live
        pickle.loads(base64.b64decode(json.loads(z.read("data"))["policy_class"][":serialized:"]))
    assert marker.exists()


def test_state_pt_payload_never_runs(trained, tmp_path):
    _, paths = trained
    marker = tmp_path / "PWNED_state_pt"
    new = copy_state(paths, tmp_path, ("replay", "state_json"))
    state = torch.load(paths["state"], weights_only=True)
    state["counters"] = Payload(marker)
    torch.save(state, new["state"])
    with pytest.raises(UserError, match="not a safe training state"):
        load(new)
    assert not marker.exists()
    torch.load(new["state"], weights_only=False)  # control: the payload is live
    assert marker.exists()


def test_replay_npz_object_array_payload_never_runs(trained, tmp_path):
    _, paths = trained
    marker = tmp_path / "PWNED_replay_npz"
    new = copy_state(paths, tmp_path, ("state", "state_json"))
    with np.load(paths["replay"]) as npz:
        arrays = {k: npz[k] for k in npz.files}
    evil = np.empty(1, dtype=object)
    evil[0] = Payload(marker)
    arrays["rewards"] = evil
    with open(new["replay"], "wb") as fh:
        np.savez(fh, **arrays)
    with pytest.raises(UserError, match="not a safe replay buffer"):
        load(new)
    assert not marker.exists()
    with np.load(new["replay"], allow_pickle=True) as npz:  # control: the payload is live
        npz["rewards"]
    assert marker.exists()


@pytest.mark.parametrize("damage", ["json", "steps", "shape", "counters", "truncated"])
def test_damaged_state_is_one_clean_error(trained, tmp_path, damage):
    _, paths = trained
    new = copy_state(paths, tmp_path, ("state", "replay", "state_json"))
    if damage == "json":
        new["state_json"].write_text("[1, 2")
    elif damage == "steps":  # files from different saves
        saved = json.loads(new["state_json"].read_text())
        new["state_json"].write_text(json.dumps({**saved, "timesteps": 200}))
    elif damage == "shape":
        with np.load(paths["replay"]) as npz:
            arrays = {k: npz[k] for k in npz.files}
        arrays["rewards"] = arrays["rewards"][:5]
        with open(new["replay"], "wb") as fh:
            np.savez(fh, **arrays)
    elif damage == "counters":
        state = torch.load(paths["state"], weights_only=True)
        state["counters"]["num_timesteps"] = "300"
        torch.save(state, new["state"])
    else:
        new["state"].write_bytes(paths["state"].read_bytes()[:1000])
    with pytest.raises(UserError, match="^--resume: "):
        load(new)


def test_sigterm_stops_with_state_saved_and_resume_continues(tmp_path):
    """A background run ended by SIGTERM (as CI or a user's ``kill`` ends it) saves its state
    at the step it reached, exits 143 with one line saying how to go on, and ``--resume`` continues."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "m.pt"
    cmd = [sys.executable, "-m", "pipeline.train", "--env", "CartPole-v1", "--model", "dqn", "--hidden", "8",
           "--steps", "1000000", "--hp", "eval_freq=500", "--hp", "eval_episodes=1", "--hp", "learning_starts=100",
           "--hp", "buffer_size=5000", "--hp", "final_eval_episodes=1", "--hp", "train_freq=4", "--hp", "gradient_steps=1", "--save-state", "--no-progress", "-o", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    csv_path = tmp_path / "m.eval.csv"
    deadline = time.monotonic() + 120
    while not csv_path.is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert csv_path.is_file(), proc.communicate()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr and "--resume" in stderr
    saved = json.loads((tmp_path / "m.state.json").read_text())["timesteps"]
    assert saved >= 500  # at least the first evaluation's step; the state is the step it stopped at
    assert torch.load(tmp_path / "m.state.pt", weights_only=True)["timesteps"] == saved

    more = saved + 300
    cmd_resume = [a if a != "1000000" else str(more) for a in cmd] + ["--resume"]
    from pipeline.train import main as train_main

    assert train_main(cmd_resume[3:]) == 0  # the resume in this process: the stopped run was the real one
    summary = json.loads((tmp_path / "m.train.json").read_text())
    assert summary["evals"][-1]["timesteps"] == more

"""``run-backend --envs N``: N CartPole environments through Gymnasium's vector API, their
observations as one batch, and every episode the same as in the sequential run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from backends.cli import main as run_backend
from exporters.nirio import write_graph
from exporters.to_nir import model_to_nir
from pipeline.bridge import read_results
from pipeline.checkpoint import Checkpoint
from pipeline.models import build_model
from pipeline.spec import ModelSpec, NeuronParams

# what differs from run to run (timings); everything else of a record is compared
TIMING = ("wall_per_step", "sim_per_step", "timing_per_step", "episode_wall_s")
# Q errors come from float matrix products whose last bits depend on the batch's row count
# (MKL picks its kernel by rows); the rest must be equal
Q_FIELDS = ("q_abs_err", "q_abs_err_mean", "q_rel_err")


def make_graph(tmp_path: Path, encoding: str = "current") -> tuple[None, Path]:
    """A random-weight CartPole DSQN as NIR (short, varied episodes), as in test_bridge.py."""
    spec = ModelSpec(kind="dsqn", arch="mlp", obs_shape=(4,), n_actions=2, hidden=(16, 16),
                     neuron=NeuronParams(), time_steps=6, encoding=encoding).validate()
    torch.manual_seed(0)
    model = build_model(spec)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    path = tmp_path / "m.nir"
    write_graph(model_to_nir(Checkpoint(spec=spec, state_dict=model.state_dict(), env_id="CartPole-v1")), path)
    return None, path


def loop(nir_path: Path, results: Path, *extra: str) -> int:
    return run_backend([str(nir_path), "--env", "CartPole-v1", "--results", str(results), "--no-progress", *extra])


def by_episode(results: Path) -> dict[int, dict]:
    return {r["episode"]: r for r in read_results(results)[1]}


def assert_same_episodes(a: dict[int, dict], b: dict[int, dict]) -> None:
    assert sorted(a) == sorted(b)
    for i in a:
        ra = {k: v for k, v in a[i].items() if k not in TIMING}
        rb = {k: v for k, v in b[i].items() if k not in TIMING}
        assert ra.keys() == rb.keys()
        for k in ra:
            if k in Q_FIELDS:
                assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-6), (i, k)
            else:
                assert ra[k] == rb[k], (i, k)


@pytest.mark.parametrize("encoding", ["current", "poisson"])
def test_vectorised_episodes_equal_the_sequential_ones(tmp_path: Path, encoding: str):
    """Five episodes on three slots (slots take new episodes, then idle), exploration on, a
    comparison beside the target; poisson: each row gets its own episode's step-seeded spikes."""
    _, nir_path = make_graph(tmp_path, encoding=encoding)
    common = ("--episodes", "5", "--max-steps", "40", "--epsilon", "0.2", "--seed", "7", "--compare", "reference")
    seq, vec = tmp_path / "seq.jsonl", tmp_path / "vec.jsonl"
    assert loop(nir_path, seq, *common) == 0
    assert loop(nir_path, vec, *common, "--envs", "3") == 0
    a, b = by_episode(seq), by_episode(vec)
    assert_same_episodes(a, b)
    assert len({r["length"] for r in a.values()}) > 1 or len({r["return"] for r in a.values()}) > 1 or \
        sum(r["random_actions"] for r in a.values()) > 0  # the episodes are not all alike
    assert any(r["spikes_per_step"] and max(r["spikes_per_step"].values()) > 0 for r in a.values())


def test_vectorised_resume_continues_a_sequential_run(tmp_path: Path):
    """A run interrupted after 2 episodes, resumed with --envs 4 (more slots than episodes left):
    the file holds episodes 0..5 once each, equal to an uninterrupted sequential run."""
    _, nir_path = make_graph(tmp_path)
    common = ("--max-steps", "30", "--epsilon", "0.1")
    full, part = tmp_path / "full.jsonl", tmp_path / "part.jsonl"
    assert loop(nir_path, full, "--episodes", "6", *common) == 0
    assert loop(nir_path, part, "--episodes", "2", *common) == 0
    assert loop(nir_path, part, "--episodes", "6", *common, "--envs", "4", "--resume") == 0
    lines = [ln for ln in part.read_text().splitlines() if '"episode"' in ln and '"type": "episode"' in ln]
    assert len(lines) == 6
    assert_same_episodes(by_episode(full), by_episode(part))


class _OddSpace(gym.spaces.Space):
    """A third-party space without ``__eq__``: Gymnasium cannot tell the copies' spaces are the same."""

    def __init__(self):
        super().__init__(shape=(4,), dtype=np.float32)

    def sample(self, mask=None, probability=None):
        return np.zeros(4, np.float32)

    def contains(self, x) -> bool:
        return True


class _OddEnv(gym.Env):
    def __init__(self, render_mode=None):
        self.observation_space = _OddSpace()
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(4, np.float32), {}

    def step(self, action):
        return np.zeros(4, np.float32), 1.0, True, False, {}


def test_an_env_that_cannot_be_vectorised_is_one_error_before_any_episode(tmp_path: Path, capsys):
    gym.register(id="OddSpace-v0", entry_point=_OddEnv)
    try:
        _, nir_path = make_graph(tmp_path)
        res = tmp_path / "r.jsonl"
        code = run_backend([str(nir_path), "--env", "OddSpace-v0", "--results", str(res), "--no-progress",
                            "--episodes", "2", "--envs", "2"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        assert err[0].startswith("error: OddSpace-v0 cannot be vectorised") and "without --envs" in err[0]
        assert not res.exists()
        # the same env runs sequentially
        assert run_backend([str(nir_path), "--env", "OddSpace-v0", "--results", str(res), "--no-progress",
                            "--episodes", "2"]) == 0
    finally:
        gym.registry.pop("OddSpace-v0", None)


@pytest.mark.parametrize("value", ["0", "2000"])
def test_bad_envs_count(tmp_path: Path, capsys, value: str):
    _, nir_path = make_graph(tmp_path)
    assert loop(nir_path, tmp_path / "r.jsonl", "--envs", value) == 2
    assert "--envs must be in [1, 1024]" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("nest") is None, reason="NEST is not installed")
def test_nest_vectorised_equals_sequential(tmp_path: Path):
    """NEST runs the batch's observations one simulation cycle each: the same episodes."""
    _, nir_path = make_graph(tmp_path)
    common = ("--target", "nest", "--episodes", "3", "--max-steps", "15", "--epsilon", "0.2")
    seq, vec = tmp_path / "seq.jsonl", tmp_path / "vec.jsonl"
    assert loop(nir_path, seq, *common) == 0
    assert loop(nir_path, vec, *common, "--envs", "2") == 0
    assert_same_episodes(by_episode(seq), by_episode(vec))

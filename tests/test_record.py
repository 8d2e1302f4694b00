"""run-backend --record (the closed loop's preprocessed observations) and --compare in the open loop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from backends.base import Readout
from backends.cli import main as run_backend
from conftest import zoo_graph
from exporters.nirio import write_graph


@pytest.fixture
def graph(tmp_path: Path) -> Path:
    path = tmp_path / "g.nir"
    write_graph(zoo_graph("liu", hidden=(16, 16), time_steps=8), path)
    return path


def test_record_keeps_every_step_for_the_open_loop(graph: Path, tmp_path: Path, capsys) -> None:
    """Every agent step's preprocessed observation is kept (as many rows as steps played), and the
    file is an open-loop --inputs as it is."""
    obs, res = tmp_path / "obs.npy", tmp_path / "r.jsonl"
    assert run_backend([str(graph), "--env", "CartPole-v1", "--episodes", "2", "--max-steps", "15",
                        "--record", str(obs), "--results", str(res), "--no-progress",
                        "--json", str(tmp_path / "s.json")]) == 0
    assert "recorded" in capsys.readouterr().out
    recorded = np.load(obs)
    episodes = [json.loads(line) for line in res.read_text().splitlines()][1:]
    assert recorded.dtype == np.float32 and recorded.shape == (sum(e["length"] for e in episodes), 4)
    assert json.loads((tmp_path / "s.json").read_text())["record"]["observations"] == len(recorded)
    out = tmp_path / "again.npz"
    assert run_backend([str(graph), "--inputs", str(obs), "--out", str(out)]) == 0
    again = Readout.load(out)
    assert again.q.shape == (len(recorded), 2)


@pytest.mark.parametrize("argv, needle", [
    (["--inputs", "obs.npy", "--record", "x.npy"], "--record keeps the observations"),
    (["--env", "CartPole-v1", "--resume", "--record", "x.npy"], "cannot go with --resume"),
    (["--env", "CartPole-v1", "--record", "x.txt"], "must end in .npy"),
    (["--inputs", "obs.npy", "--out", "r.npz", "--compare", "model.pt"], "use it in the closed loop"),
    (["--inputs", "obs.npy", "--out", "r.npz", "--compare", "nope"], "unknown comparison target 'nope'"),
])
def test_bad_record_and_compare_options(graph: Path, tmp_path: Path, monkeypatch, capsys, argv, needle) -> None:
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "obs.npy", np.zeros((2, 4), np.float32))
    assert run_backend([str(graph), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err


def test_open_loop_compare(graph: Path, tmp_path: Path, capsys) -> None:
    obs = tmp_path / "obs.npy"
    np.save(obs, np.random.default_rng(0).uniform(-1, 1, (6, 4)).astype(np.float32))
    assert run_backend([str(graph), "--inputs", str(obs), "--out", str(tmp_path / "r.npz"), "--compare", "reference",
                        "--json", str(tmp_path / "s.json")]) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    # float32 against the float64 comparison: the same actions, Q within float32 rounding
    assert summary["compare"] == "reference" and summary["agreement"] == 1.0 and summary["q_rel_err"] < 1e-5
    assert "agreement vs reference: 100.00 %" in capsys.readouterr().out

"""run-backend open loop: the readouts.npz every backend writes, and one-line user errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backends import TARGETS, make_backend
from backends.base import Readout
from backends.cli import main
from exporters.nirio import write_graph
from exporters.to_nir import model_to_nir
from exporters.zoo import cartpole_obs, make_checkpoint
from pipeline.errors import UserError


@pytest.fixture()
def graph_file(tmp_path: Path) -> Path:
    path = tmp_path / "m.nir"
    write_graph(model_to_nir(make_checkpoint("spike_count", hidden=(16, 16), seed=3)), path)
    return path


def test_open_loop_writes_the_common_readout_file(graph_file: Path, tmp_path: Path) -> None:
    obs = cartpole_obs(50, seed=5).numpy()
    np.save(tmp_path / "obs.npy", obs)
    out = tmp_path / "r.npz"
    assert main([str(graph_file), "--target", "reference", "--inputs", str(tmp_path / "obs.npy"),
                 "--out", str(out), "--json", str(tmp_path / "s.json")]) == 0
    r = Readout.load(out)
    assert r.q.dtype == np.float64 and r.q.shape == (50, 2)
    assert r.action.dtype == np.int64 and r.action.shape == (50,)
    assert set(r.spikes) == {"l0_lif", "l1_lif", "out_lif"}
    assert all(v.dtype == np.int64 for v in r.spikes.values())
    direct = make_backend("reference", __import__("exporters.nirio", fromlist=["read_graph"]).read_graph(graph_file))
    again = direct.run(obs)
    assert np.array_equal(again.q, r.q) and np.array_equal(again.action, r.action)
    assert (tmp_path / "s.json").is_file()


def test_readout_override_and_time_steps(graph_file: Path, tmp_path: Path) -> None:
    obs = cartpole_obs(20, seed=6).numpy()
    np.save(tmp_path / "obs.npy", obs)
    assert main([str(graph_file), "--inputs", str(tmp_path / "obs.npy"), "--out", str(tmp_path / "a.npz"),
                 "--readout", "robust_rate", "--time-steps", "8"]) == 0
    assert main([str(graph_file), "--inputs", str(tmp_path / "obs.npy"), "--out", str(tmp_path / "b.npz")]) == 0
    r, full = Readout.load(tmp_path / "a.npz"), Readout.load(tmp_path / "b.npz")
    assert np.all(r.spikes["l0_lif"] <= full.spikes["l0_lif"]) and r.spikes["l0_lif"].sum() < full.spikes[
        "l0_lif"].sum()  # 8 of the graph's 16 steps
    # robust rate = count/T + V(T)/(T V_th), and a hard-reset LIF ends below threshold
    assert np.all(r.q * 8 - r.spikes["out_lif"] < 1.0) and not np.array_equal(r.q, full.q)


@pytest.mark.parametrize("args, message", [
    (["--env", "CartPole-v1", "--inputs", "obs.npy"], "choose one mode"),
    (["--inputs", "missing.npy", "--out", "r.npz"], "not found"),
    (["--inputs", "obs.npy", "--out", "r.npz", "--target", "loihi9"], "unknown target"),
    (["--inputs", "obs.npy"], "--out"),
    (["--inputs", "bad.npy", "--out", "r.npz"], "expects"),
])
def test_user_errors(graph_file: Path, tmp_path: Path, capfd, monkeypatch, args: list[str],
                     message: str) -> None:
    """In this process (run-backend's main, through cli_entry); the real command line once below."""
    np.save(tmp_path / "obs.npy", cartpole_obs(3).numpy())
    np.save(tmp_path / "bad.npy", np.zeros((3, 5), np.float32))
    args = [a if not a.endswith(".npy") else str(tmp_path / a) for a in args]
    monkeypatch.chdir(tmp_path)  # relative outputs land there, as in the real run below
    assert main([str(graph_file), *args]) == 2
    err = capfd.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert message in err
    assert not (tmp_path / "r.npz").exists()


def test_user_error_on_the_command_line(graph_file: Path, tmp_path: Path) -> None:
    """The console contract as a user meets it: a real process, exit 2, nothing on stderr but the line."""
    np.save(tmp_path / "bad.npy", np.zeros((3, 5), np.float32))
    r = subprocess.run([sys.executable, "-c", "from backends.cli import main; raise SystemExit(main())",
                        str(graph_file), "--inputs", str(tmp_path / "bad.npy"), "--out", "r.npz"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    assert "expects" in r.stderr and not (tmp_path / "r.npz").exists()


def test_registry_is_lazy_and_named() -> None:
    assert "reference" in TARGETS
    with pytest.raises(UserError, match="unknown target"):
        make_backend("nope", None)

"""Without a configured SpiNNaker machine, the hardware tests skip and say which variables to set,
and ``--target pynn-spinnaker`` refuses with the same advice (one UserError, no traceback)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from backends import make_backend
from exporters.to_nir import model_to_nir
from exporters.zoo import make_checkpoint
from pipeline.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
MACHINE_VARS = ("SPINNAKER_MACHINE", "SPINNAKER_BOARD_VERSION", "SPALLOC_SERVER", "SPALLOC_USER", "SPALLOC_PORT",
                "SPALLOC_MACHINE", "SPALLOC_GROUP", "SPINNAKER_VIRTUAL", "SPINNAKER_WIDTH", "SPINNAKER_HEIGHT")


def bare_env(home: Path) -> dict[str, str]:
    """This environment without any machine setting, and a home folder without ~/.spynnaker.cfg."""
    env = {k: v for k, v in os.environ.items() if k not in MACHINE_VARS}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    return env


def test_hw_tests_skip_with_the_reason(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-rs", "-q", "-p", "no:cacheprovider", "hw_tests"],
                          cwd=ROOT, env=bare_env(tmp_path), capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    summary = re.search(r"(\d+) skipped", out)
    assert summary and int(summary.group(1)) >= 2, out
    assert "passed" not in out and "failed" not in out and "error" not in out.lower(), out
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert skips and all("SPINNAKER_MACHINE" in s and "SPALLOC_SERVER" in s for s in skips), out


def test_spinnaker_target_without_a_machine_names_the_variables(tmp_path: Path, monkeypatch) -> None:
    for k in MACHINE_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    graph = model_to_nir(make_checkpoint("liu", seed=1))
    with pytest.raises(UserError) as err:
        make_backend("pynn-spinnaker", graph)
    msg = str(err.value)
    assert "SPINNAKER_MACHINE" in msg and "SPALLOC_SERVER" in msg and "SPINNAKER_VIRTUAL" in msg


def test_run_backend_cli_reports_it_in_one_line(tmp_path: Path, monkeypatch, capfd) -> None:
    """run-backend's main in this process, in bare_env's environment (its real process is tested
    elsewhere, e.g. tests/test_reference_cli.py)."""
    from backends.cli import main
    from exporters.nirio import write_graph
    import numpy as np

    for k in MACHINE_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    graph_path, obs_path = tmp_path / "g.nir", tmp_path / "obs.npy"
    write_graph(model_to_nir(make_checkpoint("liu", seed=1)), graph_path)
    np.save(obs_path, np.zeros((2, 4), np.float32))
    code = main([str(graph_path), "--target", "pynn-spinnaker", "--inputs", str(obs_path), "--out",
                 str(tmp_path / "r.npz")])
    err = capfd.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no SpiNNaker machine is configured"), err
    assert not (tmp_path / "r.npz").exists()

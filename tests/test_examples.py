"""The scripts in examples/ run end to end (at small sizes) and print what they promise."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require

ROOT = Path(__file__).resolve().parents[1]


def run(script: str, *args: str, cwd: Path) -> str:
    env = {**os.environ, "PYNEST_QUIET": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.mark.slow
def test_cartpole_to_nest(tmp_path: Path) -> None:
    require("nest")
    text = run("cartpole_to_nest.py", "--out", str(tmp_path), "--steps", "400", "--tiny", "--episodes", "2",
               cwd=tmp_path)
    assert "1. trained" in text and "2. exported" in text
    assert "3. on NEST" in text and "on 100.00 % of" in text  # NEST acts as the reference does
    assert (tmp_path / "cartpole_dsqn.nir").is_file() and (tmp_path / "nest.jsonl").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["spikingjelly", "snntorch"])
def test_thirdparty_on_every_backend(tmp_path: Path, framework: str) -> None:
    text = run("thirdparty_on_every_backend.py", "--framework", framework, "-n", "8", cwd=tmp_path)
    rows = {line.split()[0]: line for line in text.splitlines()[2:]}
    assert set(rows) >= {"reference", "nest", "lava", "lava-fixed", "pynn-nest", "pynn-spinnaker"}
    # the float targets: the reference's actions, Q and spikes, and the framework's own output spikes
    assert rows["reference"].split()[1:] == ["100.0%", "0", "yes", "100", "%"]
    if importlib.util.find_spec("nest") is not None:
        assert rows["nest"].split()[1:] == ["100.0%", "0", "yes", "100", "%"]


@pytest.mark.slow
def test_open_loop_replay(tmp_path: Path) -> None:
    text = run("open_loop_replay.py", "--out", str(tmp_path), "--max-steps", "10", "--targets", "reference",
               cwd=tmp_path)
    assert "recorded 20 preprocessed observations of 2 episodes" in text
    assert "reference    actions equal on 20/20" in text

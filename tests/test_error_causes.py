"""Errors that name the real cause: the file a command got is named for what it is, with the
command that turns it into what was expected, in one line without terminal escape codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SB3_ZIP = ROOT / "tests" / "fixtures" / "sb3" / "qrdqn_cartpole.zip"
MODEL = ROOT / "examples" / "cartpole_dsqn.pt"


def one_error(*argv: str) -> str:
    out = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.stderr
    assert "\x1b" not in out.stderr and "corrupt" not in out.stderr, out.stderr
    return out.stderr


@pytest.mark.parametrize("command", [["pipeline.evaluate"], ["exporters.cli", "-o", "x.nir"],
                                     ["pipeline.convert_cli", "-o", "x.pt"]])
def test_sb3_zip_where_a_checkpoint_belongs(command: list[str]) -> None:
    err = one_error(command[0], str(SB3_ZIP), *command[1:])
    assert "Stable-Baselines3 zip" in err and f"import-agent {SB3_ZIP}" in err


def test_pickled_module_is_named(tmp_path: Path) -> None:
    path = tmp_path / "whole_model.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 2)), path)
    err = one_error("pipeline.evaluate", str(path))
    assert "torch.nn.modules.container.Sequential" in err and "torch.save(model)" in err
    assert "model.state_dict()" in err and "import-agent" in err


@pytest.mark.parametrize("given, needle", [(SB3_ZIP, "import-agent"), (MODEL, f"export-nir {MODEL}")])
def test_checkpoints_where_a_graph_belongs(given: Path, needle: str) -> None:
    err = one_error("backends.cli", str(given), "--env", "CartPole-v1")
    assert "not a NIR graph" in err and needle in err
    err = one_error("backends.inspect_cli", str(given))
    assert "not a NIR graph" in err and needle in err

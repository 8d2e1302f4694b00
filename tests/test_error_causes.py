"""Errors that name the real cause: the file a command got is named for what it is, with the
command that turns it into what was expected, in one line without terminal escape codes."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SB3_ZIP = ROOT / "tests" / "fixtures" / "sb3" / "qrdqn_cartpole.zip"
MODEL = ROOT / "examples" / "cartpole_dsqn.pt"


def assert_one_error(code: int, stdout: str, stderr: str) -> str:
    assert code == 2, stdout + stderr
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert "\x1b" not in stderr and "corrupt" not in stderr, stderr
    return stderr


def one_error(*argv: str) -> str:
    """``python -m argv...`` as a real process: its stderr, held to the one-line contract."""
    out = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    return assert_one_error(out.returncode, out.stdout, out.stderr)


def one_error_here(capfd, module: str, *args: str) -> str:
    """The same through the module's ``main`` (cli_entry) in this process, stderr read at the file
    descriptor: each command's real process is started by one_error above or by tests/test_tables.py."""
    capfd.readouterr()
    code = importlib.import_module(module).main(list(args))
    out = capfd.readouterr()
    return assert_one_error(code, out.out, out.err)


@pytest.mark.parametrize("command", [["pipeline.evaluate"], ["exporters.cli", "-o", "x.nir"],
                                     ["pipeline.convert_cli", "-o", "x.pt"]])
def test_sb3_zip_where_a_checkpoint_belongs(command: list[str]) -> None:
    err = one_error(command[0], str(SB3_ZIP), *command[1:])
    assert "Stable-Baselines3 zip" in err and f"import-agent {SB3_ZIP}" in err


def test_pickled_module_is_named(tmp_path: Path, capfd) -> None:
    path = tmp_path / "whole_model.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 2)), path)
    err = one_error_here(capfd, "pipeline.evaluate", str(path))
    assert "torch.nn.modules.container.Sequential" in err and "torch.save(model)" in err
    assert "model.state_dict()" in err and "import-agent" in err


@pytest.mark.parametrize("given, needle", [(SB3_ZIP, "import-agent"), (MODEL, f"export-nir {MODEL}")])
def test_checkpoints_where_a_graph_belongs(given: Path, needle: str, capfd) -> None:
    err = one_error_here(capfd, "backends.cli", str(given), "--env", "CartPole-v1")
    assert "not a NIR graph" in err and needle in err
    err = one_error_here(capfd, "backends.inspect_cli", str(given))
    assert "not a NIR graph" in err and needle in err

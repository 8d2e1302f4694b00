"""What every console script (pyproject's [project.scripts]) offers alike: ``--version``, and a
``--help`` that parses without importing the heavy libraries (torch, the simulators, SB3,
Gymnasium, matplotlib), so that it answers at once. The times themselves are printed by
``benchmarks/bench_help.py``; here only what is deterministic is checked: which modules load."""

from __future__ import annotations

import importlib
import io
import subprocess
import sys
import tomllib
from contextlib import redirect_stdout
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def entry(script: str):
    module, func = SCRIPTS[script].split(":")
    return getattr(importlib.import_module(module), func)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_version(script: str) -> None:
    buf = io.StringIO()
    with redirect_stdout(buf), pytest.raises(SystemExit) as exc:
        entry(script)(["--version"])
    assert exc.value.code == 0
    assert buf.getvalue() == f"{script} {version('dsqn-deploy')}\n"

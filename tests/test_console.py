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


HEAVY = ("torch", "nest", "lava", "pyNN", "spynnaker", "stable_baselines3", "gymnasium", "matplotlib", "ray")
PROBE = ("import sys; from {module} import {func} as main\n"
         "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
         "print(' '.join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)")


def loaded_by_help(script: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after ``script --help``."""
    module, func = SCRIPTS[script].split(":")
    out = subprocess.run([sys.executable, "-c", PROBE.format(module=module, func=func, heavy=HEAVY)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: {script}")
    return out.stderr.split()


SLOW_HELP: dict[str, str] = {}  # script -> why its --help still loads a heavy module


@pytest.mark.parametrize("script", [pytest.param(s, marks=pytest.mark.xfail(reason=SLOW_HELP[s], strict=True))
                                    if s in SLOW_HELP else s for s in sorted(SCRIPTS)])
def test_help_imports_nothing_heavy(script: str) -> None:
    """``--help`` parses before torch, the simulators, SB3, Gymnasium or matplotlib load: each of
    those takes seconds to import on a busy machine (benchmarks/bench_help.py prints the times)."""
    assert loaded_by_help(script) == []


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_module_runs_as_a_script(script: str) -> None:
    """``python -m <module>`` (how a source checkout runs the commands) is the console script."""
    module = SCRIPTS[script].split(":")[0]
    out = subprocess.run([sys.executable, "-m", module, "--version"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout == f"{script} {version('dsqn-deploy')}\n", out.stderr

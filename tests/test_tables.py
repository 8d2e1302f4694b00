"""Tables at 80 columns and in a pipe (rich's width when stdout is not a terminal): nothing cut to
``…``, no line wider than the console, names whole, every metadata key once."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LONG = "cartpole_dsqn_finetuned_for_loihi.pt"  # 36 characters: longer than any column gets at 80


def run(module: str, *args: str, columns: str | None = "80") -> str:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns is not None:
        env["COLUMNS"] = columns
    out = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)  # stdout is a pipe
    assert out.returncode == 0, out.stderr
    return out.stdout


def assert_fits(text: str, width: int = 80) -> None:
    assert "…" not in text, text
    wide = [line for line in text.splitlines() if len(line) > width]
    assert not wide, wide


@pytest.mark.parametrize("columns", ["80", None])  # COLUMNS=80, and a pipe without COLUMNS (rich: 80)
def test_evaluate_agent_table(tmp_path: Path, columns: str | None) -> None:
    long = tmp_path / LONG
    shutil.copy(ROOT / "examples" / "cartpole_dsqn.pt", long)
    text = run("pipeline.evaluate", str(ROOT / "examples" / "cartpole_dqn.pt"), str(long), "--episodes", "1",
               "--max-steps", "5", "--no-progress", columns=columns)
    assert_fits(text)
    assert "cartpole_dqn.pt" in text and "CartPole-v1" in text
    # the long name folds onto the next lines instead of being cut: its pieces, read in order, give it back
    first = next(i for i, line in enumerate(text.splitlines()) if line.lstrip().startswith(LONG[:14]))
    pieces = [line.split()[0] for line in text.splitlines()[first:first + 3] if line.strip()]
    assert "".join(pieces).startswith(LONG)


def test_inspect_nir_tables(tmp_path: Path) -> None:
    from exporters.cli import main as export_nir

    graph = tmp_path / "g.nir"  # export-nir in this process (its real process: tests/test_error_causes.py)
    assert export_nir([str(ROOT / "examples" / "cartpole_dsqn.pt"), "-o", str(graph)]) == 0
    args = [str(graph)] + (["--target", "lava"] if importlib.util.find_spec("lava") else [])
    text = run("backends.inspect_cli", *args)
    assert_fits(text)
    keys = [line.split()[0] for line in text.splitlines()
            if line.startswith(" ") and len(line.split()) >= 2 and not line.startswith("  ")]
    # rows of the key/value tables: each key once (the semantics' keys are not repeated as metadata)
    for key in ("dt", "time_steps", "readout", "n_actions", "env_id", "provenance_versions"):
        assert keys.count(key) == 1, (key, keys.count(key))
    assert "provenance_versions_torch" not in text  # grouped into one row
    if "--target" in args:
        assert "Lava / Loihi 2 mapping" in text and "weight splitting" in text

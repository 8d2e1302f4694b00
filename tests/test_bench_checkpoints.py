"""Benchmarks read trained agents from examples/ (what a clone has) or from a path the user
passes; a missing file is one ``error:`` line naming it and the flag, before any work."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from benchmarks.checkpoints import ROOT, require_checkpoint
from pipeline.cli import cli_entry


@pytest.mark.parametrize("script, flag", [("bench_nest", "--cartpole-ckpt"), ("bench_lava", "--cartpole-ckpt"),
                                          ("bench_pynn", "--cartpole-ckpt"), ("check_reference", "--checkpoint")])
def test_a_missing_checkpoint_is_one_error_line(script: str, flag: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    main = importlib.import_module(f"benchmarks.{script}").main
    missing = tmp_path / "nope.pt"
    assert cli_entry(main)([flag, str(missing)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == [
        f"error: {missing} not found: the bundled agents are in examples/ (examples/README.md); "
        f"name another checkpoint with {flag}"]


def test_the_defaults_are_the_bundled_agents() -> None:
    from benchmarks import bench_lava, bench_nest, bench_pynn

    defaults = [*bench_nest.CHECKPOINTS, *map(str, bench_lava.DEFAULT_CARTPOLE), bench_pynn.CARTPOLE]
    assert all(d.startswith("examples/") for d in defaults)
    assert [require_checkpoint(d, "--x").resolve() for d in defaults] == [ROOT / d for d in defaults]

"""With bars off (--no-progress, or a log), long loops still say how far they are: one plain line
at most every DSQN_PROGRESS_SECONDS (default 60 s)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from pipeline.progress import DEFAULT_SECONDS, Progress, interval

ROOT = Path(__file__).resolve().parents[1]


def test_plain_lines_and_their_interval(monkeypatch) -> None:
    out = io.StringIO()
    p = Progress(3, "reference CartPole-v1", "ep", bar=False, stream=out, every=0.0)
    p.update(1, ret="500")
    p.update(2)
    p.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("reference CartPole-v1: 1/3 ep (0:00 elapsed, ~0:00 left; ret=500)")
    assert lines[1] == "reference CartPole-v1: 3/3 ep (0:00 elapsed)"
    quiet = io.StringIO()
    q = Progress(3, "x", "ep", bar=False, stream=quiet, every=3600.0)
    q.update(3)
    assert quiet.getvalue() == ""  # nothing before the interval has passed
    monkeypatch.setenv("DSQN_PROGRESS_SECONDS", "5")
    assert interval() == 5.0
    for bad in ("-1", "soon"):
        monkeypatch.setenv("DSQN_PROGRESS_SECONDS", bad)
        assert interval() == DEFAULT_SECONDS


def test_run_backend_and_evaluate_agent_print_progress_lines(tmp_path: Path) -> None:
    env = {**os.environ, "DSQN_PROGRESS_SECONDS": "0"}
    from exporters.cli import main as export_nir

    graph = tmp_path / "g.nir"  # export-nir in this process (its own process: tests/test_tables.py)
    assert export_nir([str(ROOT / "examples" / "cartpole_dsqn.pt"), "-o", str(graph)]) == 0
    runs = {
        "reference CartPole-v1": [sys.executable, "-m", "backends.cli", str(graph), "--env", "CartPole-v1",
                                  "--episodes", "2", "--max-steps", "5", "--no-progress", "--results",
                                  str(tmp_path / "r.jsonl")],
        "eval cartpole_dqn.pt": [sys.executable, "-m", "pipeline.evaluate", "examples/cartpole_dqn.pt", "--episodes",
                                 "2", "--max-steps", "5", "--no-progress"],
    }
    for desc, cmd in runs.items():
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        lines = [line for line in out.stderr.splitlines() if line.startswith(desc)]
        assert [line.split(" (")[0] for line in lines] == [f"{desc}: 1/2 ep", f"{desc}: 2/2 ep"], out.stderr


def test_training_rate_of_a_resumed_run_counts_only_its_own_steps(monkeypatch, capsys) -> None:
    """A run resumed at step 139,333 printed '2355 steps/s' in its first line: the rate divided
    every step since 0 by the seconds since the restart."""
    import types

    import pipeline.train as train
    from pipeline.hyperparams import HP_PRESETS

    clock = iter([100.0, 100.0, 110.0])  # __init__, training start, the line 10 s later
    monkeypatch.setattr(train.time, "monotonic", lambda: next(clock))
    cb = train.EvalCheckpointCallback(None, HP_PRESETS["atari"], None, {}, progress_lines=True)
    cb.model = types.SimpleNamespace(exploration_rate=0.01, ep_info_buffer=[])
    cb.num_timesteps = 139_333
    cb._on_training_start()
    cb.num_timesteps += 600
    cb.progress_line()
    line = capsys.readouterr().err
    assert "step 139933/" in line and ", 60 steps/s," in line, line

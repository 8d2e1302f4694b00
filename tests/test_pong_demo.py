"""``make demo-atari`` (benchmarks/pong_demo.py) at tiny size: real Pong, real NEST and Lava.

The bundled Pong agents are stand-ins here, kept tiny so that the script's whole path runs in
seconds: a spiking MLP 28,224-16-6 on the Pong frame stack (random weights, T 2) as the DSQN and
a DQN of random weights converted by ``convert-dqn`` on real Pong frames (T 4, run at T 2
through ``--converted-T``), each exported once, then closed loop on each target with the
reference beside it, two runs at a time, the step cap and the table. The Nature-CNN lowering
on NEST and Lava is tested in their own test files; whether the real agents play is measured by
``make bench``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.pong_agents import PONG_AGENTS, PONG_CONVERTED, PONG_DSQN
from conftest import require
from exporters.zoo import make_checkpoint
from pipeline.checkpoint import save_checkpoint
from pipeline.envs import ATARI_DEFAULTS
from pipeline.spec import Preprocessing

ROOT = Path(__file__).resolve().parents[1]


def demo(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYNEST_QUIET": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pong_demo.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def pong_checkpoint(kind: str, path: Path, arch: str = "nature_cnn") -> Path:
    """A Pong agent of random weights: the Nature CNN, or an MLP with 16 hidden neurons (spiking: at
    gain 10, about a third of them fire on a Pong frame at T 2)."""
    extra = {"hidden": (16,), "gain": 10.0} if arch == "mlp" else {}
    ckpt = make_checkpoint(kind, arch=arch, obs_shape=(4, 84, 84), n_actions=6, time_steps=2, seed=3, **extra)
    ckpt.env_id = "ALE/Pong-v5"
    ckpt.preprocessing = Preprocessing(offset=(0.0,), scale=(1 / 255,), atari=dict(ATARI_DEFAULTS))
    save_checkpoint(ckpt, path)
    return path


@pytest.mark.slow
def test_demo_plays_capped_episodes_on_nest_and_lava(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require("nest")
    require("lava")
    from benchmarks.pong_demo import main
    from pipeline.cli import cli_entry
    from pipeline.convert import convert
    from pipeline.convert_cli import make_parser

    dsqn = pong_checkpoint("liu", tmp_path / "dsqn.pt", arch="mlp")
    dqn = pong_checkpoint("dqn", tmp_path / "dqn.pt", arch="mlp")
    converted = tmp_path / "converted.pt"
    convert(make_parser().parse_args([str(dqn), "-o", str(converted), "-T", "4", "--calib-steps", "16",
                                      "--eval-obs", "0", "--no-progress"]))
    capsys.readouterr()
    args = ["--dsqn", str(dsqn), "--converted", str(converted), "--out", str(tmp_path / "out"), "--episodes", "1",
            "--max-steps", "3", "--converted-T", "2", "--jobs", "2"]
    assert cli_entry(main)(args) == 0
    text = capsys.readouterr().out
    assert "note: episodes are capped at 3 agent steps" in text
    assert "note: the converted SNN runs at T 2 here, not the T 4 it was converted at" in text
    commands = [line for line in text.splitlines() if line.startswith("$ run-backend")]
    assert len(commands) == 4 and all("--compare reference" in c and "--max-steps 3" in c for c in commands)
    for name in ("dsqn", "converted"):
        for target in ("nest", "lava"):
            # each run is the run-backend command it prints, with the cap, the comparison and the demo's T
            cmd = next(c for c in commands if f"pong_{name}.nir --target {target} " in c)
            assert ("--time-steps 2" in cmd) == (name == "converted")
            # NEST and float Lava act exactly as the float reference does on these graphs
            assert f"{name} on {target}: return" in text and "agreement 100.00 % of 3 steps" in text
            header = (tmp_path / "out" / f"{name}.{target}.jsonl").read_text().splitlines()[0]
            assert '"max_steps": 3' in header and '"time_steps": 2' in header
            summary = json.loads((tmp_path / "out" / f"{name}.{target}.json").read_text())
            assert min(summary["spikes_per_step"].values()) > 0  # every layer fires: the agreement says something
    assert "episodes capped at 3 agent steps" in text
    table = text[text.index("agent   "):].splitlines()
    assert table[0].split() == ["agent", "target", "T", "steps", "return", "agreement", "max|dQ|", "set_input",
                                "simulate", "read_out", "wall/step"]
    assert [row.split()[:6] for row in table[1:5]] == [[name, target, "2", "3", "(1", "capped)"]
                                                        for name in ("dsqn", "converted") for target in ("nest", "lava")]
    assert "2 at a time" in table[-1]



def test_each_agent_is_exported_once(tmp_path: Path) -> None:
    """A rerun reuses the graph exported from the very same checkpoint file; another file is exported."""
    from benchmarks.pong_demo import export_once

    ckpt, graph = pong_checkpoint("liu", tmp_path / "a.pt", arch="mlp"), tmp_path / "out" / "a.nir"
    graph.parent.mkdir()
    assert export_once(ckpt, graph) and not export_once(ckpt, graph)
    save_checkpoint(make_checkpoint("liu", obs_shape=(4, 84, 84), hidden=(16,), n_actions=6, seed=4), ckpt)
    assert export_once(ckpt, graph)  # changed weights: exported again
    other = tmp_path / "b.pt"
    other.write_bytes(ckpt.read_bytes())
    assert export_once(other, graph)  # the same bytes under another name: the graph records its source path


def test_a_missing_agent_is_one_error_naming_its_file_and_command(tmp_path: Path) -> None:
    proc = demo("--dsqn", str(tmp_path / "nope.pt"), "--out", str(tmp_path))
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'nope.pt'} not found")
    assert "train-agent --model dsqn" in lines[0] and "-o examples/pong_dsqn.pt" in lines[0]


def test_the_converted_agent_names_the_dqn_command_when_that_is_missing_too(tmp_path: Path) -> None:
    from benchmarks.pong_agents import missing_message

    where = tmp_path / "pong_converted.pt"
    msg = missing_message(PONG_CONVERTED, where)
    assert msg.startswith(f"{where} not found")
    assert "train-agent --model dqn" in msg and msg.endswith("--eval-obs 1000`")
    (tmp_path / "pong_dqn.pt").write_bytes(b"")  # the DQN is there: only convert-dqn is named
    msg = missing_message(PONG_CONVERTED, where)
    assert "train-agent" not in msg and msg.endswith("--eval-obs 1000`") and "convert-dqn" in msg
    assert PONG_DSQN.make.endswith("-o examples/pong_dsqn.pt")


def test_bench_refuses_without_the_pong_agents_unless_allowed(tmp_path: Path) -> None:
    """make bench: a missing Pong agent is one error naming the file and its command, never an n/a
    row; --allow-missing (and the quick profile) list it under "missing" with that command instead."""
    from benchmarks import run_all
    from pipeline.errors import UserError

    empty = tmp_path / "agents"
    empty.mkdir()
    full = run_all.replace(run_all.FULL, pong_dir=str(empty))
    with pytest.raises(UserError, match=r"pong_dqn\.pt not found: the bundled Pong dqn is made by `train-agent"):
        run_all.check_pong_agents(["scores"], full)
    assert run_all.check_pong_agents(["forward", "spinnaker", "hahn"], full) == []  # no Pong agent needed there
    with pytest.raises(UserError, match="--allow-missing"):
        run_all.main(["--only", "scores", "--pong-dir", str(empty), "--out", str(tmp_path / "bench")])
    assert not (tmp_path / "bench" / "results.json").exists()  # refused before anything ran

    allowed = run_all.replace(full, allow_missing=True)
    assert run_all.check_pong_agents(["scores"], allowed) == [a.path for a in PONG_AGENTS.values()]
    missing: dict[str, str] = {}
    assert run_all.pong_agent("dsqn", allowed, missing, "matrix") is None
    assert missing["Pong dsqn (matrix)"].startswith(f"{empty / 'pong_dsqn.pt'} not found")
    assert run_all.QUICK.allow_missing and not run_all.FULL.allow_missing

    pong_checkpoint("liu", empty / "pong_dsqn.pt")
    assert run_all.pong_agent("dsqn", allowed, missing, "energy") == empty / "pong_dsqn.pt"
    assert "Pong dsqn (energy)" not in missing


def test_matrix_frames_come_from_the_agents_own_greedy_episodes(tmp_path: Path) -> None:
    """Every ``stride``-th step of the checkpoint's greedy play on real Pong, not random-policy frames."""
    from benchmarks.run_all import greedy_raw_observations

    path = pong_checkpoint("dqn", tmp_path / "dqn.pt", arch="mlp")
    every = greedy_raw_observations(path, 9, seed=5)
    strided = greedy_raw_observations(path, 3, seed=5, stride=4)
    assert every.shape == (9, 4, 84, 84) and every.dtype == np.uint8
    np.testing.assert_array_equal(strided, every[[0, 4, 8]])


def test_report_marks_checkpoints_a_clone_does_not_have() -> None:
    """docs/RESULTS.md is generated: a note naming a checkpoint under runs/ that the repository does
    not hold says so, and a bundled file is left as it is."""
    from benchmarks.report import mark_unbundled

    assert mark_unbundled("convert-dqn runs/atari/pong_dqn.pt T 100") == \
        "convert-dqn runs/atari/pong_dqn.pt (the author's run, not in the repository) T 100"
    assert mark_unbundled("trained, examples/cartpole_dsqn.pt") == "trained, examples/cartpole_dsqn.pt"
    assert mark_unbundled("out/runs/x.pt") == "out/runs/x.pt"


def test_a_failed_run_stops_the_others_and_is_one_error(tmp_path: Path) -> None:
    """Runs go two at a time; the first failure ends the run still going (interrupted, as Ctrl-C
    would) and becomes one error naming the run, its cause and its whole output."""
    import argparse
    import time

    from benchmarks.pong_demo import Run, run_all
    from pipeline.errors import UserError

    def run(name: str, code: str) -> Run:
        paths = [tmp_path / f"{name}.nest.{ext}" for ext in ("jsonl", "json", "log")]
        return Run(name, "nest", [sys.executable, "-c", code], *paths)

    slow = run("slow", "import time; open(r'%s', 'w').close(); time.sleep(60)" % (tmp_path / "started"))
    bad = run("bad", "import os, sys, time\nwhile not os.path.exists(r'%s'): time.sleep(0.05)\n"
                     "print('error: no such agent', file=sys.stderr); print('last words'); sys.exit(2)"
              % (tmp_path / "started"))
    never = run("never", "pass")
    t0 = time.perf_counter()
    with pytest.raises(UserError, match=r"^bad on nest failed \(exit 2\): no such agent \(whole output: .*bad\.nest"):
        run_all([slow, bad, never], argparse.Namespace(jobs=2, max_steps=3))
    assert time.perf_counter() - t0 < 30 and (tmp_path / "started").exists()
    assert slow.proc is not None and slow.proc.returncode not in (None, 0)  # stopped, not left running
    assert never.proc is None  # a third run never started: two at a time

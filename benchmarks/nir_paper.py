"""The NIR paper's graphs on every installed target against the float64 reference: the table of
docs/NIR.md section 7 (issue 20).

    .venv/bin/python benchmarks/nir_paper.py --paper ../shared/nir-paper           # prints the table
    .venv/bin/python benchmarks/nir_paper.py --paper ../shared/nir-paper --out t.md

Each graph is read as its authors' framework runs it (the convention and dt of docs/NIR.md
section 6); the inputs are seeded (``--seed``). A cell is action agreement / max |dQ| / share of
observations whose spike counts equal the reference's in every layer, or the one-line refusal.
The ``framework`` column runs the same file on the same inputs in the framework that wrote it
(Sinabs 3.1, Norse 1.1, snnTorch 1.0: ``benchmarks/frameworks.py``, in its own process with
``--frameworks`` first on the path, float64) and compares its output spike counts with the
float64 reference's: agreement / max |dQ| / share of identical rows.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends import REGISTRY  # noqa: E402
from backends.base import Readout  # noqa: E402
from exporters.nirio import read_graph  # noqa: E402
from pipeline.errors import UserError  # noqa: E402

TARGETS = ("reference", "nest", "pynn-nest", "lava", "lava-fixed")
ROOT = Path(__file__).resolve().parents[1]
# where scripts/install.sh puts them: beside the running environment's packages
FRAMEWORKS_DIR = Path(os.environ.get("DSQN_FRAMEWORKS", Path(sys.prefix) / "frameworks"))


def cases(rng: np.random.Generator, n: int) -> list[dict]:
    """(file, convention, options, observations, input spikes) per row."""
    frames = (rng.random((n, 2, 34, 34)) < 0.05).astype(np.float32)
    taxels = (rng.random((64, n, 12)) < 0.1).astype(np.float32)
    return [
        dict(file="cnn_sinabs.nir", convention="sinabs", opts=dict(time_steps=10), obs=frames, spikes=None,
             framework=["sinabs"]),
        dict(file="cnn_sinabs.nir", convention="sinabs+single-spike", opts=dict(time_steps=10), obs=frames,
             spikes=None, framework=["sinabs-single-spike"]),
        dict(file="cnn_sinabs.nir", convention="sinabs+single-spike+no-floor", opts=dict(time_steps=10), obs=frames,
             spikes=None, framework=["sinabs-single-spike-no-floor"]),
        dict(file="lif_norse.nir", convention="norse", opts=dict(time_steps=200, dt=1e-4),
             obs=np.linspace(0, 0.4, 32, dtype=np.float32).reshape(32, 1), spikes=None,
             framework=["norse", "--dt", "1e-4"]),
        dict(file="two_lif_neurons.nir", convention="nir", opts=dict(time_steps=200),
             obs=np.zeros((2, 1), np.float32), spikes=None),  # hand-written: no framework
        dict(file="braille_noDelay_noBias_subtract.nir", convention="snntorch+no-delay", opts=dict(time_steps=64),
             obs=np.zeros((n, 12), np.float32), spikes=taxels, framework=["snntorch", "--reset", "subtract"]),
        dict(file="braille_noDelay_bias_zero.nir", convention="snntorch-zero+no-delay", opts=dict(time_steps=64),
             obs=np.zeros((n, 12), np.float32), spikes=taxels, framework=["snntorch", "--reset", "zero"]),
    ]


def framework_q(case: dict, paper: Path, frameworks: Path) -> np.ndarray | str:
    """Output spike counts [N, outputs] of the framework's own run, or why there are none."""
    if "framework" not in case:
        return "no framework (hand-written)"
    if not frameworks.is_dir():
        return f"not installed ({frameworks})"
    with tempfile.TemporaryDirectory() as tmp:
        obs, out = Path(tmp) / "obs.npy", Path(tmp) / "q.npz"
        np.save(obs, case["obs"])
        cmd = [sys.executable, str(ROOT / "benchmarks" / "frameworks.py"), "--framework", *case["framework"],
               "--graph", str(paper / case["file"]), "--obs", str(obs), "--out", str(out),
               "--time-steps", str(case["opts"]["time_steps"])]
        if case["spikes"] is not None:
            np.save(Path(tmp) / "spikes.npy", case["spikes"])
            cmd += ["--input-spikes", str(Path(tmp) / "spikes.npy")]
        env = {**os.environ, "PYTHONPATH": str(frameworks)}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            return "failed: " + (done.stderr.strip().splitlines() or ["?"])[-1][:70]
        return np.load(out)["q"]


def compare_q(q: np.ndarray, ref: Readout) -> str:
    """Agreement (argmax, ties to the lowest index on both sides) / max |dQ| / identical rows."""
    q = q.reshape(ref.q.shape)
    agree = float(np.mean(np.argmax(q, axis=1) == np.argmax(ref.q, axis=1)))
    same = np.all(q == ref.q, axis=1)
    return f"{agree:.3f} / {float(np.abs(q - ref.q).max()):.3g} / {100 * same.mean():.0f} %"


def compare(r: Readout, ref: Readout) -> str:
    agree = float(np.mean(r.action == ref.action))
    dq = float(np.abs(r.q - ref.q).max()) if r.q.size else 0.0
    same = np.ones(len(ref.action), bool)
    for k, v in ref.spikes.items():
        same &= np.all(r.spikes[k].reshape(len(v), -1) == v.reshape(len(v), -1), axis=1)
    return f"{agree:.3f} / {dq:.3g} / {100 * same.mean():.0f} %"


def plan_of(graph, case: dict):
    """The graph as its convention reads it; with input spikes, rebuilt for a time-varying input
    (what ``run-backend --input-spikes`` does: exporters.plan.semantics.with_input_series)."""
    from exporters.canonical import build_plan
    from exporters.plan.semantics import with_input_series

    plan = build_plan(graph, convention=case["convention"], **case["opts"])
    return plan if case["spikes"] is None else with_input_series(plan)


def run(target: str, graph, case: dict, dtype: str = "float64") -> Readout:
    options = {"dtype": dtype} if target == "reference" else {}
    backend = REGISTRY[target].build(plan_of(graph, case), **options)
    try:
        return backend.run(case["obs"], case["spikes"])
    finally:
        backend.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--paper", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "nir-paper")
    ap.add_argument("-n", type=int, default=8, help="observations per graph (lif_norse: its 32 levels)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="also write the table (markdown) here")
    ap.add_argument("--frameworks", type=Path, default=FRAMEWORKS_DIR,
                    help="folder holding snntorch, norse and sinabs (scripts/install.sh: .venv/frameworks)")
    args = ap.parse_args(argv)
    installed = [t for t in TARGETS if all(importlib.util.find_spec(m) is not None for m in REGISTRY[t].requires)]
    head = "| graph | --convention | ref64 spikes | framework vs ref64 | " + " | ".join(
        ("reference f32" if t == "reference" else t) for t in installed) + " |"
    lines = [head, "|" + " --- |" * (4 + len(installed))]
    for case in cases(np.random.default_rng(args.seed), args.n):
        graph = read_graph(args.paper / case["file"])
        ref = run("reference", graph, case)
        total = sum(int(v.sum()) for v in ref.spikes.values())
        fq = framework_q(case, args.paper, args.frameworks)
        fw = compare_q(fq, ref) if isinstance(fq, np.ndarray) else fq
        if isinstance(fq, np.ndarray) and case["file"] == "lif_norse.nir":
            fw += f" ({int(fq.sum())} spikes)"
        out_total = int(ref.q.sum()) if case["file"] == "lif_norse.nir" else total
        cells = []
        for target in installed:
            try:
                r = run(target, graph, case, dtype="float32")
                cells.append(compare(r, ref))
            except UserError as exc:  # the node and the first clause of the one-line reason
                reason = str(exc).split(";")[0].replace(" (CubaLIF)", "").replace(" (IF)", "")
                cells.append("refused: " + (reason if len(reason) <= 72 else reason[:70] + "…"))
        lines.append(f"| {case['file']} | `{case['convention']}` | {out_total} | {fw} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    print()
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

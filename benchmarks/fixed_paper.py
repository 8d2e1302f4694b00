"""lava-fixed against the float64 reference on the NIR paper's graphs, in the terms of its stated
tolerances (backends/__init__.py ``LAVA_8BIT``, ``FINE_FIXED``: spikes moved as a share of the
reference's, action agreement, max |dQ| / max |Q|), with the 8-bit error split into its two parts.

    PYTHONPATH=. .venv/bin/python benchmarks/fixed_paper.py --paper ../shared/nir-paper
    PYTHONPATH=. .venv/bin/python benchmarks/fixed_paper.py --paper ../shared/nir-paper --bits 8,10,12

Per graph (the inputs of ``benchmarks/nir_paper.py``, same seed and count, so the figures belong to
the lava-fixed cells of docs/NIR.md section 7's table): lava-fixed at 8 and 16 weight bits against
the float64 reference, and the 8-bit error split (docs/LAVA.md section 4, "Imported graphs") into
``w8``, the float64 reference run with lava-fixed's own 8-bit weights
(backends.lava.weight_rounding), i.e. what the weights' rounding alone does, and ``rest``,
lava-fixed against that model: the 24-bit state, threshold, bias, decays and shifts, which is what
LAVA_8BIT promises for a graph that was not fine-tuned (``ok``/``OUT`` say whether it holds).
The same for the opt-in per-neuron state units (``state_scale="neuron"``, backends.lava.quantize).
``--bits`` adds the float64 model with the weights on b-bit mantissas, with one unit per layer and
with per-neuron units (how many bits the graph needs).

lava-fixed is its integer model here (``backends.lava.torch_fixed.LoihiFixedTorch``, equal to
lava-fixed bit for bit: tests/test_nir_paper.py, tests/test_lava_nir_paper.py): the Lava process
simulator would take minutes per CNN observation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends import FINE_FIXED, LAVA_8BIT, Tolerance  # noqa: E402
from backends.base import Readout  # noqa: E402
from backends.lava.torch_fixed import LoihiFixedTorch  # noqa: E402
from backends.lava.weight_rounding import plan_with_fixed_weights  # noqa: E402
from backends.reference import ReferenceBackend  # noqa: E402
from benchmarks.nir_paper import cases, plan_of  # noqa: E402
from exporters.nirio import read_graph  # noqa: E402


def deviation(got: Readout, ref: Readout) -> tuple[int, int, float, float]:
    """(spikes moved, reference spikes, action agreement, max |dQ| / max |Q|)."""
    moved = sum(int(np.abs(got.spikes[k].astype(np.int64) - v).sum()) for k, v in ref.spikes.items())
    total = sum(int(v.sum()) for v in ref.spikes.values())
    q_rel = float(np.abs(got.q - ref.q).max() / max(float(np.abs(ref.q).max()), 1e-300))
    return moved, total, float(np.mean(got.action == ref.action)), q_rel


def within(dev: tuple[int, int, float, float], tol: Tolerance) -> bool:
    moved, total, agree, q_rel = dev
    return moved <= tol.spikes * total and agree >= tol.agreement and q_rel <= tol.q_rel


def cell(dev: tuple[int, int, float, float], tol: Tolerance | None = None) -> str:
    moved, total, agree, q_rel = dev
    text = f"{moved}/{total} = {moved / max(total, 1):.2%}, {agree:.3f}, {q_rel:.3g}"
    return text if tol is None else text + (" ok" if within(dev, tol) else " OUT")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paper", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "nir-paper")
    ap.add_argument("-n", type=int, default=8, help="observations per graph (as benchmarks/nir_paper.py)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bits", default="", help="comma-separated mantissa widths for the float64 model with "
                                               "rounded weights (e.g. 8,10,12)")
    ap.add_argument("--graph", default="", help="only the graphs whose file name contains this")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    bits = [int(b) for b in args.bits.split(",") if b.strip()]
    print("cells: spikes moved / reference spikes, action agreement, max |dQ| / max |Q|; "
          f"ok/OUT: within LAVA_8BIT {LAVA_8BIT} (8-bit rest) or FINE_FIXED {FINE_FIXED} (16-bit)")
    for case in cases(np.random.default_rng(args.seed), args.n):
        if args.graph not in case["file"]:
            continue
        plan = plan_of(read_graph(args.paper / case["file"]), case)
        obs, spikes = case["obs"], case["spikes"]
        ref = ReferenceBackend(plan, dtype="float64").run(obs, spikes)
        got16 = LoihiFixedTorch(plan, weight_bits=16).run(obs, spikes)
        print(f"{case['file']} `{case['convention']}`\n  16-bit vs ref64 {cell(deviation(got16, ref), FINE_FIXED)}")
        for units in (False, True):
            fixed8 = LoihiFixedTorch(plan, weight_bits=8, state_scale="neuron" if units else "layer")
            got8 = fixed8.run(obs, spikes)
            on_grid = plan_with_fixed_weights(plan, fixed8.layout, fixed8.quant)
            w8 = ReferenceBackend(on_grid, dtype="float64").run(obs, spikes)
            how = "per-neuron units" if units else "one unit per layer"
            print(f"  8-bit, {how}: vs ref64 {cell(deviation(got8, ref))}\n"
                  f"    w8 (float64, the same 8-bit weights) vs ref64 {cell(deviation(w8, ref))}\n"
                  f"    rest (8-bit vs w8) {cell(deviation(got8, w8), LAVA_8BIT)}", flush=True)
            for b in bits:
                wb = plan_with_fixed_weights(plan, fixed8.layout, fixed8.quant, mantissa_bits=b)
                dev = deviation(ReferenceBackend(wb, dtype="float64").run(obs, spikes), ref)
                print(f"    float64, {b}-bit weights vs ref64 {cell(dev)}", flush=True)


if __name__ == "__main__":
    main()

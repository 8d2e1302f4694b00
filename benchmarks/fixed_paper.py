"""lava-fixed against the float64 reference on the NIR paper's recurrent Braille nets, in the terms of
its stated tolerance (backends/__init__.py ``LAVA_8BIT``, ``FINE_FIXED``: spikes moved as a share of
the reference's, action agreement, max |dQ|), at 8 and 16 weight bits.

    PYTHONPATH=. .venv/bin/python benchmarks/fixed_paper.py --paper ../shared/nir-paper

Runs lava-fixed's integer model (``backends.lava.torch_fixed.LoihiFixedTorch``, equal to lava-fixed
bit for bit: tests/test_nir_paper.py) on the inputs of ``benchmarks/nir_paper.py`` (same seed and
count), so the figures belong to the lava-fixed cells of docs/NIR.md section 7's table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends import REGISTRY  # noqa: E402
from backends.lava.torch_fixed import LoihiFixedTorch  # noqa: E402
from backends.reference import ReferenceBackend  # noqa: E402
from benchmarks.nir_paper import cases  # noqa: E402
from exporters.canonical import build_plan  # noqa: E402
from exporters.nirio import read_graph  # noqa: E402
from exporters.plan.semantics import with_input_series  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paper", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "nir-paper")
    ap.add_argument("-n", type=int, default=8, help="observations per graph (as benchmarks/nir_paper.py)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    tol = {8: REGISTRY["lava-fixed"].tolerance, 16: REGISTRY["lava-fixed-w16"].tolerance}
    for case in cases(np.random.default_rng(args.seed), args.n):
        if not case["file"].startswith("braille"):
            continue
        plan = with_input_series(build_plan(read_graph(args.paper / case["file"]), convention=case["convention"],
                                            **case["opts"]))
        ref = ReferenceBackend(plan, dtype="float64").run(case["obs"], case["spikes"])
        total = sum(int(v.sum()) for v in ref.spikes.values())
        for bits in (8, 16):
            got = LoihiFixedTorch(plan, weight_bits=bits).run(case["obs"], case["spikes"])
            moved = sum(int(np.abs(got.spikes[k] - ref.spikes[k]).sum()) for k in ref.spikes)
            agree = float(np.mean(got.action == ref.action))
            t = tol[bits]
            print(f"{case['file']}  {bits:2d}-bit: spikes moved {moved}/{total} = {moved / total:.2%} "
                  f"(stated {t.spikes:.0%}), agreement {agree:.3f} (stated {t.agreement:.2f}), "
                  f"max |dQ| {float(np.abs(got.q - ref.q).max()):g}")


if __name__ == "__main__":
    main()

"""How far lava-fixed's integers drift from the float64 reference on recurrent nets, next to
feed-forward ones: spike counts that differ, as a share of the reference's spikes, per zoo graph
kind (exporters.zoo.GRAPH_KINDS), weight mode and state scale (``--state-scale``: one state unit
per layer, or per neuron where that rounds the neuron's weights more finely), over several
random-weight seeds.

The integers are the bit-exact torch model of lava-fixed (backends.lava.torch_fixed, held to real
Lava by tests/test_recurrent.py and tests/test_torch_fixed.py), so the run needs no Lava processes.
Inputs: 24 CartPole-shaped observations (exporters.zoo.cartpole_obs, seed 3), the conformance
test's sizes (2 x 24 neurons, T = 8, gain 6).

    nice -n 5 python benchmarks/fixed_loops.py --seeds 8 --state-scale layer --state-scale neuron
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends.lava.modes import DEFAULT_STATE_SCALE, STATE_SCALES  # noqa: E402
from backends.lava.torch_fixed import LoihiFixedTorch  # noqa: E402
from backends.reference import ReferenceBackend  # noqa: E402
from exporters.zoo import GRAPH_KINDS, cartpole_obs  # noqa: E402
from pipeline.cli import cli_entry  # noqa: E402


def spike_error(kind: str, seed: int, bits: int, state_scale: str) -> float:
    """Share of the reference's spikes that lava-fixed moves (sum of |count differences|)."""
    graph = GRAPH_KINDS[kind](seed=seed, hidden=(24, 24), time_steps=8, gain=6.0)
    obs = cartpole_obs(24, seed=3).numpy()
    ref = ReferenceBackend(graph, dtype="float64").run(obs)
    got = LoihiFixedTorch(graph, weight_bits=bits, state_scale=state_scale).run(obs)
    total = sum(int(v.sum()) for v in ref.spikes.values())
    moved = sum(int(np.abs(got.spikes[k] - v).sum()) for k, v in ref.spikes.items())
    return moved / max(total, 1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=8, help="random-weight seeds 1..N per kind (default 8)")
    ap.add_argument("--state-scale", action="append", choices=STATE_SCALES,
                    help=f"lava-fixed state scale, a row each (repeatable; default {DEFAULT_STATE_SCALE})")
    ap.add_argument("--bits", type=int, action="append", choices=(8, 16),
                    help="weight bits (repeatable; default both)")
    args = ap.parse_args(argv)
    print("| graph kind | weights | state scale | spikes moved, mean | min - max |")
    print("| --- | --- | --- | --- | --- |")
    for kind in GRAPH_KINDS:
        for bits in args.bits or (8, 16):
            for scale in args.state_scale or (DEFAULT_STATE_SCALE,):
                errs = [spike_error(kind, s, bits, scale) for s in range(1, args.seeds + 1)]
                print(f"| {kind} | {bits}-bit | {scale} | {100 * statistics.mean(errs):.2f} % | "
                      f"{100 * min(errs):.2f} - {100 * max(errs):.2f} % |", flush=True)


if __name__ == "__main__":
    raise SystemExit(cli_entry(main)())

"""Would N copies of the network in one simulation beat N observations one after another?

``run-backend --envs N`` on NEST runs a batch's observations one simulation cycle after another
in one network, on Lava back to back in one ``run`` of its processes (docs/SCALING.md §1). The
alternative issue 18 names is N copies of the network in one simulation, all N observations in
one cycle. This script measures that alternative with the real backend (``--target nest`` or
``lava``): an N-copy network is the graph whose layers are the N copies'
layers side by side (block-diagonal weights: NEST connects only the non-zero ones, so the copies
share no synapse), and one observation of it is the N observations side by side. It checks that
every copy gives its observation's Q-values and spike counts bit for bit, then times, in one
process, a batch of N observations both ways (medians of interleaved rounds; NEST holds one
network per process, so each round builds the network it times and the build is reported apart).

    nice -n 5 python benchmarks/nest_copies.py [--target nest|lava] [--copies 1 2 4 8] [--batches 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from backends import make_backend
from exporters.to_nir import model_to_nir
from pipeline.checkpoint import Checkpoint, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def copies(ckpt: Checkpoint, n: int) -> Checkpoint:
    """``n`` independent copies of an MLP checkpoint as one MLP: its observation is the ``n``
    observations side by side, its Q-values the ``n`` Q-vectors side by side."""
    spec = ckpt.spec
    if spec.arch != "mlp":
        raise SystemExit("error: copies are built for MLP checkpoints only")
    state = {}
    for key, value in ckpt.state_dict.items():
        state[key] = torch.block_diag(*[value] * n) if value.ndim == 2 else torch.cat([value] * n)
    wide = dataclasses.replace(spec, obs_shape=(spec.obs_shape[0] * n,), n_actions=spec.n_actions * n,
                               hidden=tuple(h * n for h in spec.hidden))
    return dataclasses.replace(ckpt, spec=wide, state_dict=state)


def observations(n_batches: int, n: int, seed: int) -> np.ndarray:
    """CartPole-like observations ``[batches, n, 4]`` (uniform in the usual ranges)."""
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, (n_batches, n, 4)) * np.array([2.4, 2.0, 0.21, 2.0])).astype(np.float32)


def time_backend(target: str, ckpt: Checkpoint, batches: np.ndarray, side_by_side: bool
                 ) -> tuple[float, float, list[Any]]:
    """(build seconds, median seconds per batch, readouts): one backend, every batch run once."""
    t0 = time.perf_counter()
    options: dict[str, Any] = {"threads": 1} if target == "nest" else {}
    backend = make_backend(target, model_to_nir(ckpt), **options)
    build = time.perf_counter() - t0
    try:
        backend.run(batches[0].reshape(1, -1) if side_by_side else batches[0])  # warm-up
        secs, outs = [], []
        for batch in batches:
            t0 = time.perf_counter()
            outs.append(backend.run(batch.reshape(1, -1) if side_by_side else batch))
            secs.append(time.perf_counter() - t0)
    finally:
        backend.close()
    return build, statistics.median(secs), outs


def same_results(seq: list[Any], wide: list[Any], n: int) -> bool:
    """Copy i of the wide network gives observation i's Q-values and spike counts, bit for bit."""
    for a, b in zip(seq, wide):
        if not np.array_equal(a.q, b.q.reshape(n, -1)):
            return False
        for k, counts in a.spikes.items():
            if not np.array_equal(counts, b.spikes[k].reshape(n, -1)):
                return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", choices=["nest", "lava"], default="nest")
    ap.add_argument("--checkpoint", default=str(ROOT / "examples" / "cartpole_dsqn.pt"))
    ap.add_argument("--copies", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ckpt = load_checkpoint(args.checkpoint)
    print(f"{Path(args.checkpoint).name}: {ckpt.spec.arch} {ckpt.spec.obs_shape} -> {ckpt.spec.hidden} -> "
          f"{ckpt.spec.n_actions}, T {ckpt.spec.time_steps}; {args.target}; {args.batches} batches per round")
    print(f"{'N':>3} {'batch as today':>20} {'N copies, one cycle':>20} {'speed-up':>9} "
          f"{'build 1 / N copies':>20} {'equal':>6}")
    for n in args.copies:
        batches = observations(args.batches, n, seed=n)
        seq_t, wide_t, builds = [], [], []
        equal = True
        for _ in range(args.rounds):  # alternating, so that both see the same load
            b1, t1, seq = time_backend(args.target, ckpt, batches, side_by_side=False)
            bn, tn, wide = time_backend(args.target, copies(ckpt, n), batches, side_by_side=True)
            seq_t.append(t1)
            wide_t.append(tn)
            builds.append((b1, bn))
            equal = equal and same_results(seq, wide, n)
        s, w = statistics.median(seq_t), statistics.median(wide_t)
        b1 = statistics.median(b[0] for b in builds)
        bn = statistics.median(b[1] for b in builds)
        print(f"{n:>3} {1e3 * s:>17.1f} ms {1e3 * w:>17.1f} ms {s / w:>8.2f}x {b1:>9.2f} / {bn:>6.2f} s "
              f"{'yes' if equal else 'NO':>6}", flush=True)


if __name__ == "__main__":
    main()

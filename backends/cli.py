"""``run-backend``: run a NIR graph on a target.

Open loop (this issue): ``run-backend --target reference model.nir --inputs obs.npy --out
readouts.npz`` runs recorded, preprocessed observations ``[N, *obs_shape]`` and writes the
common readout file (backends.base.Readout): ``q`` [N, A] float64, ``action`` [N] int64 and
``spikes/<node>`` counts. The closed loop (``--env``) comes with the Gym bridge.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from backends import TARGETS, make_backend
from exporters.conventions import CONVENTIONS
from exporters.metadata import READOUT_REDUCE
from exporters.nirio import read_graph
from pipeline.errors import UserError, cli_entry


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="run-backend", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("graph", type=Path, help="NIR file (export-nir output or a third-party graph)")
    ap.add_argument("--target", default="reference", help=f"backend: {', '.join(TARGETS)} (default reference)")
    src = ap.add_argument_group("open loop")
    src.add_argument("--inputs", type=Path, help="preprocessed observations [N, *obs_shape] (.npy)")
    src.add_argument("--input-spikes", type=Path,
                     help="encoded input spikes [T, N, *obs_shape] (.npy) for poisson/regular graphs")
    src.add_argument("--out", type=Path, help="readouts .npz to write (q, action, spikes/<node>)")
    loop = ap.add_argument_group("closed loop (not yet available)")
    loop.add_argument("--env", help="Gymnasium environment id for the closed loop")
    loop.add_argument("--episodes", type=int, default=10)
    sem = ap.add_argument_group("semantics for graphs without our metadata")
    sem.add_argument("--readout", choices=sorted(READOUT_REDUCE), help="override the graph's readout")
    sem.add_argument("--time-steps", type=int, help="T steps per observation")
    sem.add_argument("--dt", type=float, help="seconds per step")
    sem.add_argument("--convention", choices=sorted(CONVENTIONS),
                     help="normalise a third-party graph (snntorch, norse, sinabs, spikingjelly)")
    ref = ap.add_argument_group("reference options")
    ref.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ref.add_argument("--batch-size", type=int, help="observations per batch (default: by memory)")
    ap.add_argument("--json", type=Path, help="write a JSON summary here")
    return ap.parse_args(argv)


def load_array(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise UserError(f"{path}: not a readable .npy array ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        raise UserError(f"{path}: expected a numeric .npy array")
    return arr.astype(np.float32)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.env is not None and args.inputs is None:
        raise UserError("the closed loop (--env) is not yet available in this version; "
                        "use --inputs obs.npy --out readouts.npz for open-loop runs")
    if args.inputs is None:
        raise UserError("nothing to run: pass --inputs obs.npy (open loop)")
    if args.out is None:
        raise UserError("pass --out readouts.npz for the open-loop results")
    if args.time_steps is not None and args.time_steps < 1:
        raise UserError(f"--time-steps must be >= 1, got {args.time_steps}")
    if args.dt is not None and not args.dt > 0:
        raise UserError(f"--dt must be positive, got {args.dt}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    graph = read_graph(args.graph)
    obs = load_array(args.inputs, "inputs")
    spikes_in = load_array(args.input_spikes, "input spikes") if args.input_spikes else None
    options = dict(convention=args.convention, time_steps=args.time_steps, dt=args.dt, readout=args.readout)
    if args.target == "reference":
        options.update(dtype=args.dtype, batch_size=args.batch_size)
    t0 = time.perf_counter()
    backend = make_backend(args.target, graph, **options)
    t_build = time.perf_counter() - t0
    try:
        readout = backend.run(obs, spikes_in)
    finally:
        backend.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    readout.save(args.out)
    n = int(readout.q.shape[0])
    per_layer = {k: float(v.mean()) for k, v in readout.spikes_per_layer().items()}
    summary = {"target": args.target, "graph": str(args.graph), "inputs": str(args.inputs), "out": str(args.out),
               "n": n, "build_s": t_build, "timings": readout.timings,
               "wall_per_obs": sum(readout.timings.values()) / max(n, 1),
               "action_counts": np.bincount(readout.action, minlength=readout.q.shape[1]).tolist() if n else [],
               "spikes_per_obs": per_layer}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{args.target}: {n} observations -> {args.out}")
    print(f"  {'node':<24}{'spikes/obs':>14}")
    for k, v in per_layer.items():
        print(f"  {k:<24}{v:>14.1f}")
    print(f"  actions: {summary['action_counts']}   wall/obs: {summary['wall_per_obs'] * 1e3:.3f} ms")
    return 0

"""The open loop on recorded observations: play a few CartPole episodes with the bundled DSQN on the
reference, keep every preprocessed observation (``run-backend --record``), then run exactly those
observations on the other installed targets and see where they differ.

    python examples/open_loop_replay.py [--episodes 2] [--out runs/replay]

The same with the commands:

    export-nir examples/cartpole_dsqn.pt -o runs/replay/cartpole.nir
    run-backend runs/replay/cartpole.nir --env CartPole-v1 --episodes 2 --record runs/replay/obs.npy
    run-backend runs/replay/cartpole.nir --target nest --inputs runs/replay/obs.npy --out r.npz --compare reference
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import dsqn_deploy as dd

AGENT = Path(__file__).resolve().parent / "cartpole_dsqn.pt"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agent", type=Path, default=AGENT)
    ap.add_argument("--out", type=Path, default=Path("runs/replay"))
    ap.add_argument("--episodes", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=100, help="agent steps per episode at most")
    ap.add_argument("--targets", nargs="*", help="targets to replay on (default: every runnable one)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    graph = args.out / "cartpole.nir"
    dd.export_nir(args.agent, graph)
    obs = dd.record_observations(graph, "CartPole-v1", args.out / "obs.npy", episodes=args.episodes,
                                 max_steps=args.max_steps, results=args.out / "record.jsonl")
    print(f"recorded {len(obs)} preprocessed observations of {args.episodes} episodes -> {args.out / 'obs.npy'}")

    ref = dd.run_open_loop(graph, obs, target="reference", dtype="float64")
    for target in args.targets or dd.targets(runnable=True):
        r = dd.run_open_loop(graph, obs, target=target)
        differ = np.flatnonzero(r.action != ref.action)
        print(f"{target:<12} actions equal on {len(obs) - len(differ)}/{len(obs)}, max |dQ| "
              f"{np.abs(r.q - ref.q).max():.3g}" + (f", first difference at observation {differ[0]}" if len(differ)
                                                     else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

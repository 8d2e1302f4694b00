"""CartPole from training to NEST: train a DSQN in PyTorch, check it there, write it as NIR, and
let it play on NEST with the reference executor beside it on the same observations.

    python examples/cartpole_to_nest.py --out runs/journey              # about 20 min on 2 cores
    python examples/cartpole_to_nest.py --out /tmp/j --steps 400 --tiny  # seconds: the plumbing only

Every step is one call of the public API (docs/API.md), the same code as the commands
``train-agent``, ``evaluate-agent``, ``export-nir`` and ``run-backend --target nest``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import dsqn_deploy as dd

# only for --tiny: a few hundred steps show that every stage runs, not a useful agent
TINY_HP = {"learning_starts": 100, "train_freq": 50, "gradient_steps": 5, "eval_freq": 300, "eval_episodes": 1,
           "final_eval_episodes": 1, "init_rate": 0.15}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/cartpole_to_nest"), help="folder for every file")
    ap.add_argument("--steps", type=int, default=50_000, help="training steps (50000 balances CartPole)")
    ap.add_argument("--episodes", type=int, default=5, help="episodes on NEST")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tiny", action="store_true", help="a small network and schedule (a smoke run)")
    args = ap.parse_args(argv)
    if "nest" not in dd.targets(runnable=True):
        raise SystemExit("NEST is not installed here (pip install 'dsqn-deploy[nest]')")
    args.out.mkdir(parents=True, exist_ok=True)
    model = args.out / "cartpole_dsqn.pt"

    extra = {"hidden": [16, 16], "time_steps": 4, "hp": TINY_HP} if args.tiny else {}
    dd.train_agent("CartPole-v1", model, model="dsqn", steps=args.steps, seed=args.seed, no_progress=True, **extra)
    torch_eval = dd.evaluate_agent(model, episodes=args.episodes, seed=args.seed)
    print(f"1. trained {model}: {torch_eval['mean_return']:.1f} ± {torch_eval['std_return']:.1f} in PyTorch "
          f"({args.episodes} episodes, seeds {args.seed}..{args.seed + args.episodes - 1})")

    graph = args.out / "cartpole_dsqn.nir"
    dd.export_nir(model, graph)
    totals = dd.inspect_nir(graph)["totals"]
    print(f"2. exported {graph}: {totals['neurons']} neurons, {totals['synapses']} synapses")

    summary = dd.run_closed_loop(graph, "CartPole-v1", target="nest", episodes=args.episodes, seed=args.seed,
                                 compare="reference", results=args.out / "nest.jsonl")
    print(f"3. on NEST: {summary['return_mean']:.1f} ± {summary['return_std']:.1f}, actions equal to the "
          f"reference's on {100 * summary['agreement']:.2f} % of {summary['steps']} steps, "
          f"max |dQ| {summary['q_abs_err']:.3g}")
    print("   firing rates: " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in summary["firing_rates"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Training speed of ``train-agent`` on Atari: steps per second for thread and environment counts.

Each configuration is a short real run (``python -m pipeline.train``, its own process so that
torch's thread count is its own) past ``learning_starts``, so the figure is the learning phase:
environment steps, action selection and one update per ``train_freq`` transitions. The rate is
the one ``train-agent`` records in ``model.train.json`` (``steps_per_second``: evaluations and
saves left out). The configurations run one after another, each twice in alternating order
(A B C ... C B A), and the two rates are averaged, so that a load change on a shared machine
biases no configuration more than another; compare the ratios, not the absolute figures.

    python benchmarks/train_speed.py [--steps 6000] [--models dqn dsqn] [--configs 1x1 2x1 1x2]

A configuration ``EnvsxThreads`` (e.g. ``2x1``: two environment processes, one torch thread);
``1xall`` is the old Atari default (one env, every core).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = ("1xall", "1x1", "2x1", "4x1")


def parse_config(text: str) -> tuple[int, int]:
    envs, threads = text.split("x")
    return int(envs), (os.cpu_count() or 1) if threads == "all" else int(threads)


def run_config(model: str, envs: int, threads: int, steps: int, learning_starts: int, folder: Path) -> float:
    """Steps per second of one short Pong run (the learning phase)."""
    out = folder / f"{model}_{envs}x{threads}.pt"
    spiking = ["-T", "4", "--hp", "init_rate=0.15"] if model == "dsqn" else []
    cmd = [sys.executable, "-m", "pipeline.train", "--env", "ALE/Pong-v5", "--model", model, *spiking,
           "--envs", str(envs), "--threads", str(threads), "--device", "cpu", "--seed", "0",
           "--steps", str(steps), "--hp", f"learning_starts={learning_starts}", "--hp", "n_steps=3",
           "--hp", f"eval_freq={10 * steps}", "--hp", "eval_episodes=1", "--hp", "final_eval_episodes=0",
           "--hp", "buffer_size=20000", "--no-progress", "-o", str(out)]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    return float(json.loads(out.with_name(out.stem + ".train.json").read_text())["steps_per_second"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=6000, help="steps per run (learning starts at a sixth)")
    p.add_argument("--models", nargs="+", default=["dqn", "dsqn"])
    p.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    learning_starts = args.steps // 6
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            order = args.configs + args.configs[::-1]
            rates: dict[str, list[float]] = {c: [] for c in args.configs}
            for config in order:
                envs, threads = parse_config(config)
                rates[config].append(run_config(model, envs, threads, args.steps, learning_starts, Path(tmp)))
                print(f"{model} {config}: {rates[config][-1]:.1f} steps/s", file=sys.stderr, flush=True)
            results[model] = {c: sum(v) / len(v) for c, v in rates.items()}
    base = args.configs[0]
    print(f"Pong, {args.steps} steps per run (learning from step {learning_starts}), {os.cpu_count()} cores")
    print(f"{'model':6} {'envs x threads':>15} {'steps/s':>9} {'vs ' + base:>10}")
    for model, per in results.items():
        for config, rate in per.items():
            print(f"{model:6} {config:>15} {rate:9.1f} {rate / per[base]:9.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"steps": args.steps, "learning_starts": learning_starts,
                                               "cores": os.cpu_count(), "steps_per_second": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

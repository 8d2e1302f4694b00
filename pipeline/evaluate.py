"""Greedy (or epsilon-greedy) evaluation of a checkpoint's torch model in its environment.

Episode ``i`` is reset with seed ``seed + i``, so any episode can be replayed alone and two
policies can be compared on exactly the same episodes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cli import cli_entry
from pipeline.errors import UserError
from pipeline.runtime import resolve_device, set_torch_threads


def evaluate_checkpoint(path: str | Path, episodes: int = 100, seed: int = 0, epsilon: float = 0.0,
                        max_steps: int | None = None, progress: bool = True, device: str = "cpu") -> dict[str, Any]:
    import torch  # here, not at the top: evaluate-agent --help answers without loading torch

    from pipeline.checkpoint import load_checkpoint
    from pipeline.envs import Preprocessor, make_env, n_actions
    from pipeline.models import act_greedy
    from pipeline.progress import Progress

    if episodes < 1:
        raise UserError(f"episodes must be >= 1, got {episodes}")
    if not 0.0 <= epsilon <= 1.0:
        raise UserError(f"epsilon must lie in [0, 1], got {epsilon}")
    ckpt = load_checkpoint(path)
    model = ckpt.build().to(device)
    pre = Preprocessor(ckpt.preprocessing).to(device)
    env = make_env(ckpt.env_id, ckpt.preprocessing.atari or None, max_episode_steps=max_steps)
    if n_actions(env) != ckpt.spec.n_actions or tuple(env.observation_space.shape) != ckpt.spec.obs_shape:
        raise UserError(f"{path}: model expects obs {ckpt.spec.obs_shape} and {ckpt.spec.n_actions} actions; "
                        f"{ckpt.env_id} gives {env.observation_space.shape} and {n_actions(env)}")
    rng = np.random.default_rng(seed)
    returns, lengths = [], []
    t0 = time.perf_counter()
    bar = Progress(episodes, f"eval {Path(path).name}", "ep", progress)
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        total, steps, done = 0.0, 0, False
        while not done:
            if epsilon > 0 and rng.random() < epsilon:
                action = int(rng.integers(ckpt.spec.n_actions))
            else:
                action = int(act_greedy(model, pre(torch.as_tensor(np.asarray(obs), device=device).unsqueeze(0)))[0])
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            steps += 1
            done = terminated or truncated
        returns.append(total)
        lengths.append(steps)
        bar.update(1, mean=f"{np.mean(returns):.1f}")
    bar.close()
    env.close()
    return {
        "checkpoint": str(path),
        "env_id": ckpt.env_id,
        "model_kind": ckpt.spec.kind,
        "variant": ckpt.spec.variant,
        "episodes": episodes,
        "seed": seed,
        "epsilon": epsilon,
        "device": device,
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "min_return": float(np.min(returns)),
        "max_return": float(np.max(returns)),
        "mean_length": float(np.mean(lengths)),
        "wall_s": round(time.perf_counter() - t0, 2),
        "returns": returns,
    }


def print_table(results: list[dict[str, Any]]) -> None:
    from pipeline.tables import console, make_table

    table = make_table("torch evaluation (ep: episodes; return: mean ± std over them)",
                       ("checkpoint", "env", "kind", "ep", "return", "min", "max", "wall"),
                       right=("ep", "return", "min", "max", "wall"))
    for r in results:
        table.add_row(Path(r["checkpoint"]).name, r["env_id"], f"{r['model_kind']}/{r['variant']}",
                      str(r["episodes"]), f"{r['mean_return']:.1f} ± {r['std_return']:.1f}",
                      f"{r['min_return']:.0f}", f"{r['max_return']:.0f}", f"{r['wall_s']:.0f} s")
    console().print(table)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    from pipeline.checks import ArgumentParser, check_int, check_output, check_real, check_seed

    p = ArgumentParser(prog="evaluate-agent", description="Evaluate checkpoints in torch.")
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epsilon", type=float, default=0.0)
    p.add_argument("--max-steps", type=int, help="cap on agent steps per episode")
    p.add_argument("--json", help="write results here")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar: one plain line on stderr every 60 s instead (DSQN_PROGRESS_SECONDS)")
    p.add_argument("--device", default="auto", help="auto (CUDA if torch sees a GPU, else CPU), cpu or cuda")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1; see pipeline.runtime.set_torch_threads)")
    args = p.parse_args(argv)
    check_int("--episodes", args.episodes, 1)
    check_seed("--seed", args.seed)
    check_real("--epsilon", args.epsilon, lo=0.0, hi=1.0)
    check_int("--max-steps", args.max_steps, 1)
    check_output("--json", args.json)  # before the evaluation: its results are never lost at the end
    missing = [c for c in args.checkpoints if not Path(c).is_file()]
    if missing:
        raise UserError(f"checkpoint not found: {missing[0]}")
    set_torch_threads(args.threads)
    device = resolve_device(args.device)
    results = [evaluate_checkpoint(c, args.episodes, args.seed, args.epsilon, args.max_steps,
                                   progress=not args.no_progress, device=device) for c in args.checkpoints]
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

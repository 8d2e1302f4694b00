"""One Stable-Baselines3 policy-gradient training with a ReLU MLP, logged as it learns.

Why: ``benchmarks/hahn.py`` needs a ReLU PPO or A2C actor (Tanh does not convert) that plays
MountainCar or Acrobot. SB3's defaults and RL-Zoo's settings are tuned for Tanh; this script
is how candidate settings were measured (docs/IMPORT.md, "A ReLU actor that plays Acrobot").
Every 20,000 steps it appends the mean return of the last 100 training episodes (SB3's
``ep_info_buffer``: the stochastic policy and the environment's own reward, also under
shaping) to ``<out>/log.txt``, and saves the zip (and ``VecNormalize`` statistics) of the best
such mean so far as ``best.zip``; the last model is ``final.zip``.

    nice -n 5 python benchmarks/pg_search.py --out out/pg/acro --env Acrobot-v1 --steps 200000 --seed 0 \\
        --n-envs 4 --hp '{"n_steps": 128, "batch_size": 128, "learning_rate": 2.5e-4, "ent_coef": 0.01}'
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.cli import cli_entry  # noqa: E402
from pipeline.errors import UserError  # noqa: E402

LOG_EVERY = 20_000


def train(args: argparse.Namespace) -> None:
    import torch
    from stable_baselines3 import A2C, PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from pipeline.envs import shape_reward

    torch.set_num_threads(1)
    try:
        hp: dict[str, Any] = json.loads(args.hp)
    except json.JSONDecodeError as exc:
        raise UserError(f"--hp is not JSON: {exc}") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gamma = hp.get("gamma", 0.99)
    wrap = (lambda env: shape_reward(env, args.env, args.shaping, gamma)) if args.shaping else None  # noqa: E731
    venv = make_vec_env(args.env, n_envs=args.n_envs, seed=args.seed, wrapper_class=wrap)
    if args.vecnormalize:
        venv = VecNormalize(venv, norm_obs=True, norm_reward=False)
    algo = {"ppo": PPO, "a2c": A2C}[args.algo]
    model = algo("MlpPolicy", venv, seed=args.seed, verbose=0,
                 policy_kwargs=dict(activation_fn=torch.nn.ReLU, net_arch=[64, 64]), **hp)
    t0 = time.perf_counter()
    log = (out / "log.txt").open("a")
    print(json.dumps({"argv": sys.argv[1:]}), file=log, flush=True)

    def save(stem: str) -> None:
        model.save(out / f"{stem}.zip")
        if isinstance(venv, VecNormalize):
            venv.save(str(out / f"{stem}.vecnormalize.pkl"))

    class Every(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next, self.best = 0, -np.inf

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next:
                self.next += LOG_EVERY
                returns = [e["r"] for e in self.model.ep_info_buffer]
                mean = float(np.mean(returns)) if returns else float("nan")
                wall = time.perf_counter() - t0
                print(f"{self.num_timesteps} {wall:.0f}s mean100 {mean:.1f}", file=log, flush=True)
                if len(returns) >= 50 and mean > self.best:
                    self.best = mean
                    save("best")
                    (out / "best.json").write_text(json.dumps({"steps": self.num_timesteps, "mean100": mean,
                                                               "wall_s": wall}))
            return True

    model.learn(args.steps, callback=Every())
    save("final")
    print(f"done {args.steps} {time.perf_counter() - t0:.0f}s", file=log, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--algo", choices=("ppo", "a2c"), default="ppo")
    p.add_argument("--env", default="Acrobot-v1", choices=("CartPole-v1", "MountainCar-v0", "Acrobot-v1"))
    p.add_argument("--steps", type=int, default=200_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-envs", type=int, default=16)
    p.add_argument("--vecnormalize", action="store_true", help="VecNormalize on observations (RL-Zoo's normalize)")
    p.add_argument("--shaping", help="a reward shaping of pipeline/envs.py (mountaincar-energy)")
    p.add_argument("--hp", default="{}", help="the algorithm's keyword arguments, as JSON")
    args = p.parse_args(argv)
    train(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_entry(main)())

"""What ``finetune-fixed`` costs on a Pong-sized network: seconds per fine-tuning epoch per 1,000
observations, measured on a Nature-CNN spiking Q-network with **random weights** (exporters.zoo;
the cost of the arithmetic does not depend on training, the figures say nothing about playing).

One epoch of ``backends.finetune_fixed.finetune`` is one re-quantisation of the current weights
(``make_grid``: export, lower, ``quantize_layout``) and, per batch, lava-fixed's integer forward
with straight-through gradients, the distillation loss, the backward pass and an Adam step.
Measured here on ``--obs`` real Pong frames (a seeded random policy, preprocessed as the agent
sees them), after one warm-up batch; also the held-out report's cost (the bit-exact torch model
of lava-fixed and the float64 reference per 1,000 observations).

    nice -n 5 python benchmarks/finetune_cost.py --kind liu -T 4 --obs 256 --batch 64
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends.finetune_fixed import distill_loss, fixed_forward, make_grid, teacher_q  # noqa: E402
from backends.lava.torch_fixed import LoihiFixedTorch  # noqa: E402
from backends.reference import ReferenceBackend  # noqa: E402
from exporters.to_nir import model_to_nir  # noqa: E402
from exporters.zoo import KINDS, make_checkpoint  # noqa: E402
from pipeline.envs import random_policy_observations  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", default="liu", choices=sorted(k for k in KINDS if k != "dqn"),
                    help="exporters.zoo model kind (liu: LIF DSQN, rate readout; tan_converted: IF, converted)")
    ap.add_argument("-T", "--time-steps", type=int, default=4)
    ap.add_argument("--obs", type=int, default=256, help="observations timed (after one warm-up batch)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--eval-obs", type=int, default=128, help="observations for the held-out report's cost")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ckpt = make_checkpoint(args.kind, arch="nature_cnn", obs_shape=(4, 84, 84), n_actions=6,
                           time_steps=args.time_steps, seed=args.seed)
    frames = random_policy_observations("ALE/Pong-v5", args.obs + args.batch, seed=args.seed)
    obs = (frames.astype(np.float32) / np.float32(255.0)).astype(np.float32)
    teacher, student = ckpt.build(), ckpt.build().train()
    t0 = time.perf_counter()
    q_t = torch.as_tensor(teacher_q(teacher, obs))
    t_teacher = time.perf_counter() - t0
    a_t = q_t.argmax(dim=1)
    t0 = time.perf_counter()
    grid = make_grid(ckpt, student)
    t_grid = time.perf_counter() - t0
    x = torch.as_tensor(obs, dtype=torch.float64)
    opt = torch.optim.Adam(student.parameters(), lr=1e-4)

    def step(lo: int, hi: int) -> None:
        q, _ = fixed_forward(grid, x[lo:hi], 2.0)
        loss = distill_loss(q, q_t[lo:hi], a_t[lo:hi], 1.0, 0.01, 0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step(0, args.batch)  # warm-up
    t0 = time.perf_counter()
    for lo in range(args.batch, args.batch + args.obs, args.batch):
        step(lo, min(lo + args.batch, args.batch + args.obs))
    t_steps = time.perf_counter() - t0
    graph = model_to_nir(ckpt)
    held = obs[:args.eval_obs]
    t0 = time.perf_counter()
    fixed = LoihiFixedTorch(graph)
    t_fixed_init = time.perf_counter() - t0
    t0 = time.perf_counter()
    fixed.run(held)
    t_fixed = time.perf_counter() - t0
    t0 = time.perf_counter()
    ReferenceBackend(graph, dtype="float64").run(held)
    t_ref = time.perf_counter() - t0
    per_k = 1000.0 / args.obs
    res = {
        "model": f"zoo {args.kind}, Nature CNN 4x84x84 -> 6 actions, T {args.time_steps}, RANDOM weights "
                 f"(seed {args.seed})",
        "observations_timed": args.obs, "batch": args.batch, "threads": args.threads,
        "make_grid_s_per_epoch": round(t_grid, 2),
        "train_steps_s_per_1000_obs": round(t_steps * per_k, 1),
        "epoch_s_per_1000_obs": round(t_steps * per_k + t_grid, 1),
        "teacher_forward_s_per_1000_obs": round(t_teacher * 1000.0 / len(obs), 2),
        "held_out_lava_fixed_torch_setup_s": round(t_fixed_init, 1),
        "held_out_lava_fixed_torch_s_per_1000_obs": round(t_fixed * 1000.0 / len(held), 1),
        "held_out_reference_float64_s_per_1000_obs": round(t_ref * 1000.0 / len(held), 1),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),  # Linux: KiB
    }
    for k, v in res.items():
        print(f"{k}: {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

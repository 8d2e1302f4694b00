"""Torch forward speed: Nature-CNN DSQN (multi-step, T steps) against the plain DQN.

The DSQN's forward on one observation does the work of a DQN forward on a batch of T frames
(every layer after the first sees T spike maps), so the fair comparison is
DSQN(T, batch B) against DQN(batch T*B). Timings are medians of interleaved repeats taken in
one run, and reported as ratios: the machine is shared and noisy.

    python benchmarks/bench_forward.py [--time-steps 64] [--repeats 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from pipeline.models import build_model
from pipeline.runtime import keep_freed_memory
from pipeline.spec import MODEL_PRESETS, ModelSpec


def timed(fn, x) -> float:
    t0 = time.perf_counter()
    fn(x)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--time-steps", type=int, default=64)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--json")
    p.add_argument("--default-malloc", action="store_true",
                   help="leave glibc's allocator as it is (the CLIs call pipeline.runtime.keep_freed_memory)")
    args = p.parse_args()
    malloc_tuned = False if args.default_malloc else keep_freed_memory()
    T = args.time_steps
    torch.manual_seed(0)
    base = dict(arch="nature_cnn", obs_shape=(4, 84, 84), n_actions=6)
    dqn = build_model(ModelSpec(kind="dqn", **base)).eval()
    dsqn = build_model(ModelSpec(time_steps=T, **base, **MODEL_PRESETS["dsqn"])).eval()
    cases = {  # name -> (model, batch)
        "dsqn_T_b1": (dsqn, 1),
        "dqn_b64": (dqn, 64),
        "dqn_bT": (dqn, T),
        "dsqn_T_b32": (dsqn, 32),
        "dqn_b32": (dqn, 32),
        "dqn_b32T": (dqn, 32 * T),
    }
    inputs = {name: torch.rand(b, 4, 84, 84) for name, (_, b) in cases.items()}
    times: dict[str, list[float]] = {name: [] for name in cases}
    with torch.inference_mode():
        for name, (model, _) in cases.items():  # warm-up
            model(inputs[name])
        for _ in range(args.repeats):
            for name, (model, b) in cases.items():
                if b >= 1024 and len(times[name]) >= max(5, args.repeats // 4):
                    continue  # the big batches are slow and steady: fewer repeats suffice
                times[name].append(timed(model, inputs[name]))
    med = {name: statistics.median(v) for name, v in times.items()}
    result = {
        "time_steps": T,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
        "malloc_keep_freed": malloc_tuned,
        "median_ms": {k: round(v * 1e3, 3) for k, v in med.items()},
        "ratio_dsqn_b1_vs_dqn_b64": round(med["dsqn_T_b1"] / med["dqn_b64"], 3),
        "ratio_dsqn_b1_vs_dqn_bT": round(med["dsqn_T_b1"] / med["dqn_bT"], 3),
        "ratio_dsqn_b32_vs_dqn_b32T": round(med["dsqn_T_b32"] / med["dqn_b32T"], 3),
        "ratio_dsqn_b32_vs_dqn_b32": round(med["dsqn_T_b32"] / med["dqn_b32"], 3),
    }
    print(f"Nature-CNN forward, torch {torch.__version__}, {result['threads']} threads, T={T}, "
          f"malloc keeps freed memory: {malloc_tuned}")
    print(f"{'case':<14}{'median ms':>12}")
    for k, v in result["median_ms"].items():
        print(f"{k:<14}{v:>12.2f}")
    for k in [k for k in result if k.startswith("ratio")]:
        print(f"{k:<34}{result[k]:>8.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()

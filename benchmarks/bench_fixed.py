"""Hardware-aware fine-tuning, measured: lava-fixed (plain 8-bit) before and after ``finetune-fixed``.

For every ``--pair SOURCE=FINETUNED`` (checkpoints), each of the two models is measured the same way:

* **agreement**: observations of whole greedy episodes played by the model's own float64
  reference (env seeds 1000, 1001, ... until >= ``--obs``), run open loop through
  ``lava-fixed`` (8-bit; each ``--state-scale`` mode, one row each; real Lava unless
  ``--engine torch``, which is the bit-exact torch model) against
  ``ReferenceBackend(dtype="float64")`` of the same graph:
  action agreement, max |dQ| / max |Q|;
* **closed loop**: ``--episodes`` episodes (env seeds ``--seed``, ``--seed`` + 1, ...) acted by
  lava-fixed and, separately, by the float64 reference: mean and std of the return, and the
  share of lava-fixed's steps on which the reference (run beside it) chose the same action;
* **resources**: synapses and Loihi 2 cores (``inspect-nir --target lava``: quantize.loihi2_resources)
  in 8-bit mode, and the 16-bit split mode's synapses for comparison (what ``--weight-bits 16`` costs);
* **energy**: synaptic operations per observation from lava-fixed's spike counts and the
  estimate of benchmarks/energy.py (45 nm accumulate energy, and Loihi's published pJ per
  synaptic event).

    nice -n 5 python benchmarks/bench_fixed.py \\
        --pair examples/cartpole_dsqn.pt=out/ft/cartpole_dsqn.loihi.pt --json out/bench_fixed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends.lava.backend import default_input_bound  # noqa: E402
from backends.lava.lowering import lower  # noqa: E402
from backends.lava.modes import DEFAULT_STATE_SCALE, STATE_SCALES  # noqa: E402
from backends.lava.quantize import loihi2_resources, quantize_layout  # noqa: E402
from backends.lava.torch_fixed import LoihiFixedTorch  # noqa: E402
from backends.reference import ReferenceBackend  # noqa: E402
from benchmarks.energy import hardware_energy_pj, snn_energy_pj, sops_per_observation  # noqa: E402
from exporters.canonical import Plan, build_plan  # noqa: E402
from exporters.to_nir import model_to_nir  # noqa: E402
from pipeline.checkpoint import Checkpoint, load_checkpoint  # noqa: E402
from pipeline.envs import make_env, preprocess  # noqa: E402


def fixed_backend(plan: Plan, engine: str, state_scale: str):
    if engine == "torch":
        return LoihiFixedTorch(plan, state_scale=state_scale)
    from backends.lava.backend import LavaBackend

    return LavaBackend(plan, precision="fixed_pt", batch_size=50, state_scale=state_scale)


def record(plan: Plan, ckpt: Checkpoint, n: int, seed: int = 1000) -> tuple[np.ndarray, list[float]]:
    """Preprocessed observations of whole greedy episodes of the float64 reference (>= n)."""
    ref = ReferenceBackend(plan, dtype="float64")
    env = make_env(ckpt.env_id)
    obs, returns, ep = [], [], 0
    while len(obs) < n:
        raw, _ = env.reset(seed=seed + ep)
        done, total = False, 0.0
        while not done:
            x = preprocess(np.asarray(raw)[None], ckpt.preprocessing)
            obs.append(x[0])
            raw, r, term, trunc, _ = env.step(int(ref.run(x).action[0]))
            total += float(r)
            done = term or trunc
        returns.append(total)
        ep += 1
    env.close()
    return np.stack(obs), returns


def closed_loop(plan: Plan, ckpt: Checkpoint, backend, episodes: int, seed: int,
                compare: ReferenceBackend | None) -> dict[str, Any]:
    env = make_env(ckpt.env_id)
    returns, same, steps = [], 0, 0
    t0 = time.perf_counter()
    for i in range(episodes):
        raw, _ = env.reset(seed=seed + i)
        done, total = False, 0.0
        while not done:
            x = preprocess(np.asarray(raw)[None], ckpt.preprocessing)
            action = int(backend.run(x).action[0])
            if compare is not None:
                same += int(compare.run(x).action[0] == action)
            steps += 1
            raw, r, term, trunc, _ = env.step(action)
            total += float(r)
            done = term or trunc
        returns.append(total)
    env.close()
    out = {"returns": returns, "mean": statistics.mean(returns),
           "std": statistics.pstdev(returns), "steps": steps, "wall_s": round(time.perf_counter() - t0, 1)}
    if compare is not None:
        out["step_agreement"] = same / steps
    return out


def measure(path: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per ``--state-scale`` mode; the recorded observations and the float64 closed loop
    (which no mode changes) are shared."""
    ckpt = load_checkpoint(path)
    plan = build_plan(model_to_nir(ckpt))
    t_rec = time.perf_counter()
    obs, rec_returns = record(plan, ckpt, args.obs)
    ref = ReferenceBackend(plan, dtype="float64")
    r_ref = ref.run(obs)
    float_loop = closed_loop(plan, ckpt, ref, args.episodes, args.seed, None) if args.episodes else None
    t_rec = time.perf_counter() - t_rec
    return [measure_mode(path, plan, ckpt, obs, rec_returns, r_ref, float_loop, scale, args, t_rec)
            for scale in args.state_scale or (DEFAULT_STATE_SCALE,)]


def measure_mode(path: Path, plan: Plan, ckpt: Checkpoint, obs: np.ndarray, rec_returns: list[float], r_ref,
                 float_loop: dict[str, Any] | None, state_scale: str, args: argparse.Namespace,
                 t_shared: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    ref = ReferenceBackend(plan, dtype="float64")
    backend = fixed_backend(plan, args.engine, state_scale)
    try:
        r_fx = backend.run(obs)
        loop = closed_loop(plan, ckpt, backend, args.episodes, args.seed, ref) if args.episodes else None
    finally:
        backend.close()
    exact = LoihiFixedTorch(plan, state_scale=state_scale).run(obs)
    layout = lower(plan, fixed_point=True)
    bound = default_input_bound(plan)
    res8 = loihi2_resources(layout, quantize_layout(layout, bound, "8bit", 8, state_scale))
    res16 = loihi2_resources(layout, quantize_layout(layout, bound, "8bit", 16, state_scale))
    work = sops_per_observation(plan, r_fx)
    gap = np.sort(r_ref.q, axis=1)
    rel_gap = (gap[:, -1] - gap[:, -2]) / np.abs(r_ref.q).max(axis=1).clip(1e-12) if gap.shape[1] > 1 else gap[:, 0]
    row = {
        "checkpoint": str(path), "engine": args.engine, "state_scale": state_scale, "observations": len(obs),
        "record_returns": rec_returns,
        "agreement": float(np.mean(r_fx.action == r_ref.action)),
        "max_dq_rel": float(np.abs(r_fx.q - r_ref.q).max() / np.abs(r_ref.q).max()),
        "median_q_gap_rel": float(np.median(rel_gap)),
        "torch_model_equals_target": bool(np.array_equal(exact.q, r_fx.q) and np.array_equal(exact.action, r_fx.action)),
        "closed_loop_fixed": loop, "closed_loop_float": float_loop,
        "synapses_8bit": sum(r["synapses"] for r in res8["layers"]), "cores_8bit": res8["total_cores"],
        "synapses_16bit": sum(r["synapses"] for r in res16["layers"]), "cores_16bit": res16["total_cores"],
        "sops_per_obs": work.total_sops, "energy_45nm_pj": snn_energy_pj(work),
        "energy_loihi_pj": hardware_energy_pj(work).get("loihi"),
        "wall_s": round(time.perf_counter() - t0 + t_shared, 1),
    }
    return row


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| checkpoint | state scale | obs | lava-fixed 8-bit agreement | max \\|ΔQ\\|/max\\|Q\\| "
            "| return lava-fixed "
            "(steps agreeing) | return float64 | synapses (cores) | 16-bit split synapses | SOPs/obs | "
            "energy 45 nm / Loihi (nJ/obs) |")
    lines = [head, "| " + " | ".join(["---"] * 11) + " |"]
    for r in rows:
        fx, fl = r["closed_loop_fixed"], r["closed_loop_float"]
        ret_fx = f"{fx['mean']:.1f} ± {fx['std']:.1f} ({100 * fx['step_agreement']:.1f} %)" if fx else "-"
        ret_fl = f"{fl['mean']:.1f} ± {fl['std']:.1f}" if fl else "-"
        loihi = r["energy_loihi_pj"]
        energy = f"{r['energy_45nm_pj'] / 1e3:.1f} / " + (f"{loihi / 1e3:.1f}" if loihi is not None else "-")
        lines.append(f"| `{r['checkpoint']}` | {r['state_scale']} | {r['observations']} | "
                     f"{100 * r['agreement']:.2f} % | "
                     f"{r['max_dq_rel']:.3g} | {ret_fx} | {ret_fl} | {r['synapses_8bit']} ({r['cores_8bit']}) | "
                     f"{r['synapses_16bit']} | {r['sops_per_obs']:.0f} | {energy} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pair", action="append", required=True, metavar="SOURCE=FINETUNED",
                    help="a checkpoint and its finetune-fixed result (repeatable)")
    ap.add_argument("--obs", type=int, default=2000, help="open-loop observations per model (default 2000)")
    ap.add_argument("--episodes", type=int, default=5, help="closed-loop episodes per model and mode")
    ap.add_argument("--seed", type=int, default=7, help="env seed of the first closed-loop episode")
    ap.add_argument("--engine", choices=("lava", "torch"), default="lava",
                    help="lava: Lava's fixed_pt models (the target); torch: the bit-exact torch model (faster)")
    ap.add_argument("--state-scale", action="append", choices=STATE_SCALES,
                    help=f"lava-fixed state scale (repeatable: one row per mode on the same observations "
                         f"and episodes; default {DEFAULT_STATE_SCALE})")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    rows = []
    for pair in args.pair:
        src, _, ft = pair.partition("=")
        for label, path in (("before", src), ("after", ft)):
            if not path:
                continue
            for row in measure(Path(path), args):
                row["stage"] = label
                rows.append(row)
                shown = {k: v for k, v in row.items() if k != "record_returns"}
                print(json.dumps(shown, default=float), flush=True)
    print()
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"argv": sys.argv, "rows": rows}, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

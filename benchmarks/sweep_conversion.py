"""Conversion sweep: agreement and return vs T for every normalisation x readout.

One DQN, one calibration set and one held-out set; for each normalisation (model, data,
robust), readout (robust_rate, spike_count, voltage) and T, the converted torch SNN gives

- ``agreement`` — Tan's conversion rate: greedy actions equal to the DQN's on the held-out
  observations (batched torch SNN, fast);
- ``return`` — closed-loop episodes with the converted model acting
  (pipeline.evaluate.evaluate_checkpoint, episode i reset with seed 2000003 + seed + i).

Writes ``<out>.json`` (after every setting, so an interrupted sweep keeps what it finished) and
``<out>.png`` and prints a table and the wall time.

    nice -n 5 .venv/bin/python benchmarks/sweep_conversion.py [dqn.pt] [--episodes 10] [--no-returns]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from pipeline.calibration import EVAL_SEED_OFFSET, activation_stats, collect_observations
from pipeline.checkpoint import load_checkpoint, provenance, save_checkpoint
from pipeline.convert import (
    CONVERSION_READOUTS,
    NORMALIZATIONS,
    ConversionSettings,
    build_converted,
    check_convertible,
    conversion_rate,
    scale_factors,
)
from pipeline.cli import cli_entry
from pipeline.errors import UserError
from pipeline.evaluate import evaluate_checkpoint
from pipeline.models import SpikingQNetwork

DEFAULT_TS = (10, 20, 50, 100, 200, 500)
RETURN_SEED_OFFSET = 2_000_003


def default_dqn() -> str:
    for path in ("examples/cartpole_dqn.pt", "runs/bundle/cartpole_dqn.pt"):
        if Path(path).is_file():
            return path
    raise UserError("no DQN given, and neither examples/cartpole_dqn.pt nor runs/bundle/cartpole_dqn.pt "
                    "exists")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sweep_conversion", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", nargs="?", help="DQN checkpoint (default: the bundled CartPole DQN)")
    p.add_argument("--norms", nargs="+", default=list(NORMALIZATIONS))
    p.add_argument("--readouts", nargs="+", default=list(CONVERSION_READOUTS))
    p.add_argument("-T", "--time-steps", type=int, nargs="+", default=list(DEFAULT_TS))
    p.add_argument("--percentile", type=float, default=99.9)
    p.add_argument("--reset", default="soft")
    p.add_argument("--encoding", default="current")
    p.add_argument("--v-init", type=float, default=0.0)
    p.add_argument("--calib-steps", type=int, default=15_000)
    p.add_argument("--eval-obs", type=int, default=2_000)
    p.add_argument("--calib-envs", type=int, default=1, help="episodes played side by side while collecting")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--no-returns", action="store_true", help="agreement only (no closed-loop episodes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/sweep_conversion", help="writes <out>.json and <out>.png")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the tiny MLP ops gain nothing)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    has_returns = any(r.get("return") is not None for r in rows)
    fig, axes = plt.subplots(1, 2 if has_returns else 1, figsize=(11 if has_returns else 6, 4), squeeze=False)
    colors = {"robust": "tab:blue", "data": "tab:orange", "model": "tab:green"}
    styles = {"robust_rate": "-", "spike_count": "--", "voltage": ":"}
    markers = {"robust_rate": "o", "spike_count": "s", "voltage": "^"}
    settings = sorted({(r["normalization"], r["readout"]) for r in rows})
    for norm, readout in settings:
        sel = sorted((r for r in rows if r["normalization"] == norm and r["readout"] == readout),
                     key=lambda r: r["time_steps"])
        ts = [r["time_steps"] for r in sel]
        kw = dict(color=colors.get(norm), ls=styles.get(readout, "-"), marker=markers.get(readout, "o"), ms=4,
                  label=f"{norm} / {readout}")
        axes[0][0].plot(ts, [100 * r["agreement"] for r in sel], **kw)
        if has_returns:
            axes[0][1].plot(ts, [r["return"] for r in sel], **kw)
    axes[0][0].axhline(99, color="grey", lw=0.8, ls="--", label="99 % agreement")
    axes[0][0].set(xscale="log", xlabel="T (steps per observation)", ylabel="agreement with DQN (%)",
                   title=f"conversion rate on {results['eval_obs']} held-out observations")
    axes[0][0].grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    if has_returns:
        dqn = results.get("dqn_return")
        if dqn is not None:
            line = axes[0][1].axhline(dqn["mean"], color="black", lw=1, ls="--", label="source DQN")
            axes[0][1].legend(handles=[line], fontsize=7, loc="lower right")
        axes[0][1].set(xscale="log", xlabel="T (steps per observation)", ylabel="mean return",
                       title=f"closed loop, {results['episodes']} episodes")
        axes[0][1].grid(alpha=0.3)
    fig.suptitle(f"{results['env_id']}: {Path(results['checkpoint']).name} -> IF ({results['reset']} reset, "
                 f"{results['encoding']} input)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    ts = sorted({r["time_steps"] for r in results["rows"]})
    table = Table(title=f"agreement % (return) vs T — {results['env_id']}")
    table.add_column("norm / readout")
    for T in ts:
        table.add_column(f"T {T}", justify="right")
    for norm, readout in sorted({(r["normalization"], r["readout"]) for r in results["rows"]}):
        cells = []
        for T in ts:
            r = next((r for r in results["rows"] if (r["normalization"], r["readout"], r["time_steps"])
                      == (norm, readout, T)), None)
            if r is None:
                cells.append("-")
                continue
            ret = f" ({r['return']:.0f})" if r.get("return") is not None else ""
            cells.append(f"{100 * r['agreement']:.1f}{ret}")
        table.add_row(f"{norm} / {readout}", *cells)
    Console(width=max(100, 26 + 16 * len(ts))).print(table)
    if results.get("dqn_return"):
        d = results["dqn_return"]
        print(f"DQN return on the same episodes: {d['mean']:.1f} ± {d['std']:.1f}")


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    t_start = time.perf_counter()
    progress = not args.no_progress
    src = Path(args.checkpoint or default_dqn())
    for T in args.time_steps:
        if T < 1:
            raise UserError(f"T must be >= 1, got {T}")
    base = ConversionSettings(percentile=args.percentile, reset=args.reset, encoding=args.encoding,
                              v_init=args.v_init, encoding_seed=args.seed)
    for norm in args.norms:  # every choice checked before the long run starts
        ConversionSettings(**{**asdict(base), "normalization": norm}).validate()
    for readout in args.readouts:
        ConversionSettings(**{**asdict(base), "readout": readout}).validate()
    ckpt = load_checkpoint(src)
    dqn = check_convertible(ckpt, src)
    cal = collect_observations(ckpt, args.calib_steps, args.seed, progress=progress, envs=args.calib_envs)
    held = collect_observations(ckpt, args.eval_obs, args.seed + EVAL_SEED_OFFSET, progress=progress,
                                desc="held-out", envs=args.calib_envs)
    stats = activation_stats(dqn, cal, ckpt.preprocessing, args.percentile, progress)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "checkpoint": str(src), "env_id": ckpt.env_id, "percentile": args.percentile, "reset": args.reset,
        "encoding": args.encoding, "v_init": args.v_init, "calibration": cal.source, "held_out": held.source,
        "eval_obs": len(held), "episodes": None if args.no_returns else args.episodes,
        "return_seed": args.seed + RETURN_SEED_OFFSET, "rows": [],
        "versions": provenance(args.seed)["versions"],
    }
    if not args.no_returns:
        r = evaluate_checkpoint(src, args.episodes, args.seed + RETURN_SEED_OFFSET, progress=progress)
        results["dqn_return"] = {"mean": r["mean_return"], "std": r["std_return"], "returns": r["returns"]}

    def save() -> None:
        results["wall_s"] = round(time.perf_counter() - t_start, 1)
        out.with_suffix(".json").write_text(json.dumps(results, indent=2, default=float))

    with tempfile.TemporaryDirectory() as tmp:
        for norm in args.norms:
            for readout in args.readouts:
                for T in args.time_steps:
                    s = ConversionSettings(**{**asdict(base), "normalization": norm, "readout": readout,
                                              "time_steps": T}).validate()
                    scales = scale_factors(dqn, stats, s)
                    conv = build_converted(ckpt, dqn, scales, s, {"conversion": {**asdict(s),
                                                                               "scales": scales.to_dict()}})
                    snn = conv.build()
                    assert isinstance(snn, SpikingQNetwork)
                    res = conversion_rate(dqn, snn, held, ckpt.preprocessing, scales.input, scales.output)
                    row: dict[str, Any] = {"normalization": norm, "readout": readout, "time_steps": T,
                                           **asdict(res), "scales": scales.to_dict()}
                    if not args.no_returns:
                        path = Path(tmp) / f"{norm}_{readout}_{T}.pt"
                        save_checkpoint(conv, path)
                        ev = evaluate_checkpoint(path, args.episodes, args.seed + RETURN_SEED_OFFSET,
                                                 progress=progress)
                        row.update({"return": ev["mean_return"], "return_std": ev["std_return"],
                                    "returns": ev["returns"], "return_wall_s": ev["wall_s"]})
                    results["rows"].append(row)
                    save()
                    ret = f", return {row['return']:.1f}" if "return" in row else ""
                    print(f"{norm:6s} {readout:11s} T {T:4d}: agreement {100 * res.agreement:6.2f}%{ret} "
                          f"[{time.perf_counter() - t_start:.0f} s]", flush=True)
    save()
    plot(results, out.with_suffix(".png"))
    print_table(results)
    print(f"wall time {results['wall_s']:.0f} s; wrote {out.with_suffix('.json')} and "
          f"{out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

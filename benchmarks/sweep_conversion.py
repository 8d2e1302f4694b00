"""Conversion sweep: agreement and return vs T for every normalisation x readout.

One DQN, one calibration set and one held-out set; for each normalisation (model, data,
robust), readout (robust_rate, spike_count, voltage) and T, the converted torch SNN gives

- ``agreement`` — Tan's conversion rate: greedy actions equal to the DQN's on the held-out
  observations (batched torch SNN, fast);
- ``return`` — closed-loop episodes with the converted model acting
  (pipeline.evaluate.evaluate_checkpoint, episode i reset with seed 2000003 + seed + i).

Writes ``<out>.json`` (after every setting, so an interrupted sweep keeps what it finished and
``--resume`` runs only the rest) and ``<out>.png`` and prints a table and the wall time. With
``--ray-workers``/``--ray-address`` every setting is one Ray task (docs/SCALING.md §3).

    nice -n 5 .venv/bin/python benchmarks/sweep_conversion.py [dqn.pt] [--episodes 10] [--no-returns]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: benchmarks.* importable

from pipeline.calibration import (
    EVAL_SEED_OFFSET,
    CalibrationStats,
    ObservationSet,
    activation_stats,
    collect_observations,
)
from pipeline.checkpoint import Checkpoint, load_checkpoint, provenance, save_checkpoint
from pipeline.convert import (
    CONVERSION_READOUTS,
    NORMALIZATIONS,
    ConversionSettings,
    build_converted,
    check_convertible,
    conversion_rate,
    file_sha256,
    scale_factors,
)
from pipeline.cli import cli_entry
from pipeline.errors import UserError
from pipeline.evaluate import evaluate_checkpoint
from pipeline.models import DQN, SpikingQNetwork

DEFAULT_TS = (10, 20, 50, 100, 200, 500)
RETURN_SEED_OFFSET = 2_000_003


def default_dqn() -> str:
    path = "examples/cartpole_dqn.pt"
    if Path(path).is_file():
        return path
    raise UserError(f"no DQN given, and {path} (the bundled CartPole DQN) does not exist here: run from the "
                    "repository root or name a DQN checkpoint")


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
    p.add_argument("--max-steps", type=int, help="cap on agent steps per return episode")
    p.add_argument("--resume", action="store_true",
                   help="keep the settings already in <out>.json (same sweep settings required) and run the rest")
    p.add_argument("--ray-workers", type=int, help="run the settings as Ray tasks on a local Ray with this many CPUs "
                                                   "(docs/SCALING.md)")
    p.add_argument("--ray-address", help="run the settings as Ray tasks on this Ray cluster (host:port)")
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


@dataclass(frozen=True)
class Cell:
    """One setting of the sweep: a pure function of the shared inputs (seeded throughout)."""

    normalization: str
    readout: str
    time_steps: int


@dataclass(frozen=True)
class SweepInputs:
    """What every cell needs, computed once by the driver and shipped by value (a Ray worker on
    another machine shares no file system with it)."""

    checkpoint_name: str
    checkpoint: bytes
    base: ConversionSettings
    stats: CalibrationStats
    held: ObservationSet
    episodes: int | None  # None: agreement only
    return_seed: int
    max_steps: int | None
    threads: int


@dataclass
class LoadedInputs:
    """The inputs with the DQN loaded: built once per process (per Ray worker), not per cell."""

    inputs: SweepInputs
    ckpt: Checkpoint
    dqn: DQN
    tmp: Path


def load_inputs(inputs: SweepInputs, tmp: Path) -> LoadedInputs:
    path = tmp / inputs.checkpoint_name
    path.write_bytes(inputs.checkpoint)
    ckpt = load_checkpoint(path)
    return LoadedInputs(inputs, ckpt, check_convertible(ckpt, path), tmp)


def run_cell(loaded: LoadedInputs, cell: Cell, progress: bool = False) -> dict[str, Any]:
    """The row of one setting: agreement on the held-out set, and the closed-loop return."""
    inp = loaded.inputs
    s = ConversionSettings(**{**asdict(inp.base), "normalization": cell.normalization, "readout": cell.readout,
                              "time_steps": cell.time_steps}).validate()
    scales = scale_factors(loaded.dqn, inp.stats, s)
    conv = build_converted(loaded.ckpt, loaded.dqn, scales, s, {"conversion": {**asdict(s),
                                                                              "scales": scales.to_dict()}})
    snn = conv.build()
    assert isinstance(snn, SpikingQNetwork)
    res = conversion_rate(loaded.dqn, snn, inp.held, loaded.ckpt.preprocessing, scales.input, scales.output)
    row: dict[str, Any] = {"normalization": cell.normalization, "readout": cell.readout,
                           "time_steps": cell.time_steps, **asdict(res), "scales": scales.to_dict()}
    if inp.episodes is not None:
        path = loaded.tmp / f"{cell.normalization}_{cell.readout}_{cell.time_steps}.pt"
        save_checkpoint(conv, path)
        ev = evaluate_checkpoint(path, inp.episodes, inp.return_seed, max_steps=inp.max_steps, progress=progress)
        path.unlink()
        row.update({"return": ev["mean_return"], "return_std": ev["std_return"], "returns": ev["returns"],
                    "return_wall_s": ev["wall_s"]})
    return row


def dqn_return(loaded: LoadedInputs, progress: bool = False) -> dict[str, Any]:
    """The source DQN's return on the episodes every cell plays."""
    inp = loaded.inputs
    assert inp.episodes is not None
    r = evaluate_checkpoint(loaded.tmp / inp.checkpoint_name, inp.episodes, inp.return_seed,
                            max_steps=inp.max_steps, progress=progress)
    return {"mean": r["mean_return"], "std": r["std_return"], "returns": r["returns"]}


#: per Ray worker process: the loaded inputs of the sweep it last worked for (by digest)
_WORKER_CACHE: dict[str, LoadedInputs] = {}


def worker_inputs(digest: str, inputs_ref: list[Any]) -> LoadedInputs:
    """The loaded inputs in this worker, fetched and built on its first task only. The reference
    comes inside a list, which Ray leaves unresolved, so later tasks do not fetch it again."""
    if digest not in _WORKER_CACHE:
        import ray

        _WORKER_CACHE.clear()
        inputs = ray.get(inputs_ref[0])
        torch.set_num_threads(max(1, inputs.threads))
        _WORKER_CACHE[digest] = load_inputs(inputs, Path(tempfile.mkdtemp(prefix="dsqn-sweep-")))
    return _WORKER_CACHE[digest]


def sweep_cell(digest: str, inputs_ref: list[Any], cell: Cell | None) -> dict[str, Any]:
    """One Ray task: the row of ``cell``, or the DQN's return for ``None``. Pure in its inputs,
    so a task whose worker died is simply run again (Ray's ``max_retries``)."""
    loaded = worker_inputs(digest, inputs_ref)
    return dqn_return(loaded) if cell is None else run_cell(loaded, cell)


def ray_results(inputs: SweepInputs, todo: list[Cell | None], workers: int | None,
                address: str | None) -> Iterator[tuple[Cell | None, dict[str, Any]]]:
    """(cell, result) as the Ray tasks finish, in any order."""
    from backends.ray_runner import connect
    from benchmarks.ray_tasks import RETRIES

    ray = connect(address, workers or 1)
    digest = hashlib.sha256(pickle.dumps(inputs)).hexdigest()
    ref = ray.put(inputs)
    task = ray.remote(num_cpus=1, max_retries=RETRIES)(sweep_cell)
    running = {task.remote(digest, [ref], cell): cell for cell in todo}
    while running:
        done, _ = ray.wait(list(running), num_returns=1)
        cell = running.pop(done[0])
        try:
            yield cell, ray.get(done[0])
        except ray.exceptions.RayError as exc:
            for r in running:
                ray.cancel(r, force=True)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
            raise UserError(f"sweep cell {cell} failed on a Ray worker: {first} (the cells finished before it are "
                            "kept: --resume runs the rest)") from None


def recorded_settings(args: argparse.Namespace, src: Path) -> dict[str, Any]:
    """Every setting that changes a row: recorded in the results, and a resume refuses a change."""
    return {"checkpoint_sha256": file_sha256(src), "norms": list(args.norms), "readouts": list(args.readouts),
            "time_steps": list(args.time_steps), "percentile": args.percentile, "reset": args.reset,
            "encoding": args.encoding, "v_init": args.v_init, "calib_steps": args.calib_steps,
            "eval_obs": args.eval_obs, "calib_envs": args.calib_envs,
            "episodes": None if args.no_returns else args.episodes, "max_steps": args.max_steps, "seed": args.seed}


def resumed(path: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The results of an interrupted sweep with the same settings (None if there are none)."""
    if not path.is_file():
        return None
    try:
        earlier = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"--resume: {path} is not a sweep results file ({exc})") from None
    if "settings" not in earlier:
        raise UserError(f"--resume: {path} records no settings (written by an older sweep); run without --resume")
    changed = [k for k in settings if earlier["settings"].get(k) != settings[k]]
    if changed:
        k = changed[0]
        raise UserError(f"--resume: {k} is {earlier['settings'].get(k)!r} in {path}, {settings[k]!r} now; a resumed "
                        "sweep must keep its settings (or write to another --out)")
    return earlier


def cell_key(row: dict[str, Any]) -> Cell:
    return Cell(row["normalization"], row["readout"], row["time_steps"])


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    t_start = time.perf_counter()
    progress = not args.no_progress
    src = Path(args.checkpoint or default_dqn())
    if not src.is_file():
        raise UserError(f"checkpoint not found: {src}")
    for T in args.time_steps:
        if T < 1:
            raise UserError(f"T must be >= 1, got {T}")
    if args.max_steps is not None and args.max_steps < 1:
        raise UserError(f"--max-steps must be >= 1, got {args.max_steps}")
    if args.ray_workers is not None and args.ray_workers < 1:
        raise UserError(f"--ray-workers must be >= 1, got {args.ray_workers}")
    base = ConversionSettings(percentile=args.percentile, reset=args.reset, encoding=args.encoding,
                              v_init=args.v_init, encoding_seed=args.seed)
    for norm in args.norms:  # every choice checked before the long run starts
        ConversionSettings(**{**asdict(base), "normalization": norm}).validate()
    for readout in args.readouts:
        ConversionSettings(**{**asdict(base), "readout": readout}).validate()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    jpath = out.with_suffix(".json")
    settings = recorded_settings(args, src)
    earlier = resumed(jpath, settings) if args.resume else None
    on_ray = args.ray_workers is not None or args.ray_address is not None
    if on_ray:  # a Ray that cannot start or answer is one error before the long calibration
        from backends.ray_runner import connect

        connect(args.ray_address, args.ray_workers or 1)
    ckpt = load_checkpoint(src)
    dqn = check_convertible(ckpt, src)
    cal = collect_observations(ckpt, args.calib_steps, args.seed, progress=progress, envs=args.calib_envs)
    held = collect_observations(ckpt, args.eval_obs, args.seed + EVAL_SEED_OFFSET, progress=progress,
                                desc="held-out", envs=args.calib_envs)
    stats = activation_stats(dqn, cal, ckpt.preprocessing, args.percentile, progress)
    results: dict[str, Any] = {
        "checkpoint": str(src), "env_id": ckpt.env_id, "percentile": args.percentile, "reset": args.reset,
        "encoding": args.encoding, "v_init": args.v_init, "calibration": cal.source, "held_out": held.source,
        "eval_obs": len(held), "episodes": None if args.no_returns else args.episodes,
        "return_seed": args.seed + RETURN_SEED_OFFSET, "rows": [], "settings": settings,
        "versions": provenance(args.seed)["versions"],
    }
    order = [Cell(n, r, T) for n in args.norms for r in args.readouts for T in args.time_steps]
    rows: dict[Cell, dict[str, Any]] = {}
    wall_before = 0.0
    if earlier is not None:
        rows = {cell_key(r): r for r in earlier.get("rows", []) if cell_key(r) in order}
        if "dqn_return" in earlier:
            results["dqn_return"] = earlier["dqn_return"]
        wall_before = float(earlier.get("wall_s", 0.0))
        print(f"resuming {jpath}: {len(rows)} of {len(order)} settings done", flush=True)

    def save() -> None:
        """The results so far, rows in the sequential order, replacing the file atomically (an
        interruption leaves the previous complete file, never half of one)."""
        results["rows"] = [rows[c] for c in order if c in rows]
        results["wall_s"] = round(wall_before + time.perf_counter() - t_start, 1)
        tmp = jpath.with_name(jpath.name + ".tmp")
        tmp.write_text(json.dumps(results, indent=2, default=float))
        os.replace(tmp, jpath)

    def record(cell: Cell | None, result: dict[str, Any]) -> None:
        if cell is None:
            results["dqn_return"] = result
        else:
            rows[cell] = result
            ret = f", return {result['return']:.1f}" if "return" in result else ""
            print(f"{cell.normalization:6s} {cell.readout:11s} T {cell.time_steps:4d}: agreement "
                  f"{100 * result['agreement']:6.2f}%{ret} [{time.perf_counter() - t_start:.0f} s]", flush=True)
        save()

    todo: list[Cell | None] = [c for c in order if c not in rows]
    if not args.no_returns and "dqn_return" not in results:
        todo.insert(0, None)
    save()
    inputs = SweepInputs(src.name, src.read_bytes(), base, stats, held, None if args.no_returns else args.episodes,
                         args.seed + RETURN_SEED_OFFSET, args.max_steps, max(1, args.threads))
    if on_ray:
        for cell, result in ray_results(inputs, todo, args.ray_workers, args.ray_address):
            record(cell, result)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            loaded = LoadedInputs(inputs, ckpt, dqn, Path(tmp))
            shutil.copyfile(src, Path(tmp) / src.name)
            for cell in todo:
                record(cell, dqn_return(loaded, progress) if cell is None else run_cell(loaded, cell, progress))
    save()
    plot(results, out.with_suffix(".png"))
    print_table(results)
    print(f"wall time {results['wall_s']:.0f} s; wrote {jpath} and {out.with_suffix('.png')}")
    return 0


def run_as_script() -> int:
    """``main`` of the importable module, not of ``__main__``: Ray workers import the task and its
    dataclasses by name (benchmarks.sweep_conversion), which a ``__main__`` copy would not match."""
    from benchmarks.sweep_conversion import main as module_main

    return module_main()


if __name__ == "__main__":
    raise SystemExit(run_as_script())

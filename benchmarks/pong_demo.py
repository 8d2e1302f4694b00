"""``make demo-atari``: the bundled Pong DSQN and converted SNN play Pong on NEST and on Lava.

Each agent is exported to NIR once (``export-nir``; an earlier export of the same checkpoint
file is reused) and plays a few episodes closed-loop with each target acting and the reference
executor beside it on the same observations (``run-backend --target T graph.nir --env
ALE/Pong-v5 --compare reference``), one process per run, ``--jobs`` runs at a time (2: one per
core; each run is one torch and one NEST thread). The table at the end gives, per agent and
target, the return, the agreement of the actions with the reference's and the wall time per
agent step split into set_input / simulate / read_out.

A Pong episode is 800 to 4,000 agent steps and a Nature-CNN step takes tenths of a second on a
simulator, so episodes are capped at ``--max-steps`` agent steps (run-backend's own flag, recorded
in each results file's header): a capped episode's return is the score when the cap was reached,
not a game's score, and the table says so. The converted SNN's cost grows with its T, so the
demo runs it at ``--converted-T`` (default :data:`benchmarks.pong_agents.DEMO_CONVERTED_T`, the
smallest T of the conversion sweep within one point of the DQN's score; when it differs from the
T the agent was converted at, it is passed as run-backend's ``--time-steps``, printed in its
command and recorded in its results).

    python benchmarks/pong_demo.py [--out out/demo-atari] [--episodes 2] [--max-steps 100] [--jobs 2]
    python benchmarks/pong_demo.py --dsqn my_dsqn.pt --converted my_snn.pt --targets nest --converted-T 0

A missing agent is one ``error:`` line naming the file and the command that makes it
(benchmarks/pong_agents.py); nothing else stands in for it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.pong_agents import (  # noqa: E402
    DEMO_CONVERTED_T,
    PONG_CONVERTED,
    PONG_DSQN,
    describe_agent,
    require_agent,
)
from pipeline.cli import cli_entry  # noqa: E402
from pipeline.errors import UserError  # noqa: E402

ENV = "ALE/Pong-v5"
TARGETS = ("nest", "lava")
DEFAULT_MAX_STEPS = 100  # agent steps per episode: four runs of two episodes stay under 10 minutes on 2 cores
SPLIT = ("set_input", "simulate", "read_out")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="pong_demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--dsqn", type=Path, default=None, help=f"the DSQN checkpoint (default {PONG_DSQN.path})")
    p.add_argument("--converted", type=Path, default=None,
                   help=f"the converted SNN checkpoint (default {PONG_CONVERTED.path})")
    p.add_argument("--targets", nargs="+", default=list(TARGETS), help="targets that act (default: nest lava)")
    p.add_argument("--episodes", type=int, default=2, help="episodes per agent and target (default 2)")
    p.add_argument("--max-steps", type=int, default=DEFAULT_MAX_STEPS,
                   help=f"agent steps per episode (default {DEFAULT_MAX_STEPS}; 0: no cap, full games)")
    p.add_argument("--seed", type=int, default=0, help="episode i is reset with seed + i (default 0)")
    p.add_argument("--converted-T", type=int, default=DEMO_CONVERTED_T,
                   help=f"T of the converted SNN in the demo (default {DEMO_CONVERTED_T}, the smallest T of the "
                        "conversion sweep within one point of the DQN; 0: the T it was converted at)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time, one process each (default 2)")
    p.add_argument("--out", type=Path, default=ROOT / "out" / "demo-atari", help="folder for graphs and results")
    return p.parse_args(argv)


def backend_command(graph: Path, target: str, args: argparse.Namespace, results: Path, summary: Path,
                    time_steps: int | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "backends.cli", str(graph), "--target", target, "--env", ENV, "--episodes",
           str(args.episodes), "--seed", str(args.seed), "--compare", "reference", "--results", str(results),
           "--json", str(summary), "--no-progress", "--threads", "1"]
    cmd += ["--time-steps", str(time_steps)] if time_steps else []
    return cmd + (["--max-steps", str(args.max_steps)] if args.max_steps else [])


def shown(cmd: list[str]) -> str:
    """The command as a user would type it (the console script instead of ``python -m``)."""
    rest = cmd[3:] if cmd[1:3] == ["-m", "backends.cli"] else cmd[1:]
    return " ".join(["run-backend", *(str(Path(c).relative_to(ROOT)) if c.startswith(str(ROOT)) else c
                                      for c in rest)])


@dataclass
class Run:
    """One closed-loop run: its own process, writing its results, summary and log under ``--out``."""

    name: str
    target: str
    cmd: list[str]
    results: Path
    summary: Path
    log: Path
    proc: subprocess.Popen | None = None
    log_file: IO[str] | None = None
    t0: float = 0.0
    wall: float = 0.0


def plan_run(name: str, graph: Path, target: str, args: argparse.Namespace, time_steps: int | None) -> Run:
    results, summary, log = (args.out / f"{name}.{target}.{ext}" for ext in ("jsonl", "json", "log"))
    cmd = backend_command(graph, target, args, results, summary, time_steps)
    return Run(name, target, cmd, results, summary, log)


def start(run: Run) -> None:
    for old in (run.results, run.summary):  # this demo's own earlier output (run-backend refuses to append)
        old.unlink(missing_ok=True)
    print(f"$ {shown(run.cmd)}", flush=True)
    run.log_file = run.log.open("w")
    run.t0 = time.perf_counter()
    run.proc = subprocess.Popen(run.cmd, cwd=ROOT, stdout=run.log_file, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT), "PYNEST_QUIET": "1"},
                                preexec_fn=_default_interrupt)


def _default_interrupt() -> None:
    """In the child before it starts: Ctrl-C's default action again. A shell starts background
    jobs with SIGINT ignored and children inherit that, so :func:`stop`'s interrupt would
    otherwise be lost and every run left going would cost the whole grace period."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop(runs: list[Run]) -> None:
    """End the runs this demo started that are still going (after a failure or an interrupt): an
    interrupt first, as Ctrl-C would, so that each closes its simulator (Lava's runtime processes)."""
    for run in runs:
        if run.proc is not None and run.proc.poll() is None:
            run.proc.send_signal(signal.SIGINT)
    for run in runs:
        if run.proc is not None:
            try:
                run.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                run.proc.kill()
                run.proc.wait()
        if run.log_file is not None:
            run.log_file.close()


def collect(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    """A finished run's summary plus its per-episode records (or a UserError with its last line)."""
    assert run.proc is not None and run.log_file is not None
    run.log_file.close()
    if run.proc.returncode != 0:
        lines = run.log.read_text().strip().splitlines() or [""]
        cause = next((line for line in reversed(lines) if line.startswith("error: ")), lines[-1])
        raise UserError(f"{run.name} on {run.target} failed (exit {run.proc.returncode}): "
                        f"{cause.removeprefix('error: ')} (whole output: {run.log})")
    out = json.loads(run.summary.read_text())
    lines = [json.loads(line) for line in run.results.read_text().splitlines() if line.strip()]
    out["settings"] = lines[0]["settings"]  # the header: every setting of the run, the cap included
    records = [r for r in lines if r.get("type") == "episode"]
    lengths = np.array([r["length"] for r in records], dtype=float)
    out["split_ms"] = {k: 1e3 * float(np.average([r["timing_per_step"][k] for r in records], weights=lengths))
                       for k in SPLIT}
    out["lengths"] = [int(x) for x in lengths]
    out["capped"] = [bool(args.max_steps) and int(x) >= args.max_steps for x in lengths]
    out["run_wall_s"] = run.wall
    print(f"  {run.name} on {run.target}: return {out['return_mean']:.1f} ± {out['return_std']:.1f} "
          f"({', '.join(f'{r:g}' for r in out['returns'])}), agreement {100 * out['agreement']:.2f} % of "
          f"{out['steps']} steps, {run.wall:.0f} s", flush=True)
    return out


def run_all(runs: list[Run], args: argparse.Namespace) -> dict[tuple[str, str], dict[str, Any]]:
    """Run ``runs`` in their order, ``args.jobs`` at a time; the first failure stops the others."""
    waiting, going, done = list(runs), [], {}
    try:
        while waiting or going:
            while waiting and len(going) < args.jobs:
                start(waiting[0])
                going.append(waiting.pop(0))
            time.sleep(0.2)
            for run in [r for r in going if r.proc is not None and r.proc.poll() is not None]:
                run.wall = time.perf_counter() - run.t0
                going.remove(run)
                done[(run.name, run.target)] = collect(run, args)
    except BaseException:
        stop(going)
        raise
    return done


def export_once(ckpt: Path, graph: Path) -> bool:
    """Export ``ckpt`` to ``graph`` unless ``graph`` is already the export of this very file (its
    recorded source sha256); True when it exported."""
    import dsqn_deploy as dd
    from exporters.to_nir import file_sha256

    if graph.is_file():
        try:
            meta = dd.read_nir(graph).metadata
        except UserError:
            meta = {}
        same_file = str(meta.get("source_checkpoint")) == str(ckpt)
        if same_file and str(meta.get("source_sha256", "")) == file_sha256(ckpt):
            return False
    dd.export_nir(ckpt, graph)  # from the file: the graph records its source
    return True


def print_table(rows: list[tuple[str, str, dict[str, Any]]], args: argparse.Namespace) -> None:
    """Plain fixed-width lines (readable in a log and in an 80-column terminal alike)."""
    cap = f"episodes capped at {args.max_steps} agent steps" if args.max_steps else "full episodes"
    print(f"\nPong, {args.episodes} episode(s) per run (env seeds {args.seed}..), {cap}, "
          f"ε {rows[0][2]['settings']['epsilon']:g} (run-backend's Atari default), the reference executor beside "
          f"each target; times in ms per agent step")
    head = ("agent", "target", "T", "steps", "return", "agreement", "max|dQ|", *SPLIT, "wall/step")
    widths = (10, 7, 4, 14, 13, 10, 8, 9, 9, 9, 9)
    print("  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths))))
    for name, target, s in rows:
        n_capped = sum(s["capped"])
        steps = f"{s['steps']}" + (f" ({n_capped} capped)" if n_capped else "")
        cells = (name, target, f"{s['settings']['time_steps']}", steps,
                 f"{s['return_mean']:.1f} ± {s['return_std']:.1f}", f"{100 * s['agreement']:.2f} %",
                 f"{s['q_abs_err']:.3g}", *(f"{s['split_ms'][k]:.1f}" for k in SPLIT),
                 f"{1e3 * s['wall_per_step']:.1f}")
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.episodes < 1:
        raise UserError(f"--episodes must be >= 1, got {args.episodes}")
    if args.max_steps < 0:
        raise UserError(f"--max-steps must be >= 0 (0: no cap), got {args.max_steps}")
    if args.converted_T < 0:
        raise UserError(f"--converted-T must be >= 0 (0: the T it was converted at), got {args.converted_T}")
    if args.jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {args.jobs}")
    from backends import REGISTRY

    for t in args.targets:
        if t not in REGISTRY:
            raise UserError(f"unknown target {t!r}; valid choices: {', '.join(REGISTRY)}")
    agents = {"dsqn": require_agent(PONG_DSQN, args.dsqn), "converted": require_agent(PONG_CONVERTED, args.converted)}
    args.out.mkdir(parents=True, exist_ok=True)
    import dsqn_deploy as dd

    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    graphs: dict[str, Path] = {}
    time_steps: dict[str, int | None] = {}
    for name, ckpt in agents.items():
        agent = dd.load_agent(ckpt)
        if agent.env_id != ENV:
            raise UserError(f"{ckpt} is an agent for {agent.env_id}, not {ENV}")
        graphs[name] = args.out / f"pong_{name}.nir"
        fresh = export_once(ckpt, graphs[name])
        print(f"{'exported' if fresh else 'reused the export of'} {ckpt} ({agent.spec.kind}, "
              f"T {agent.spec.time_steps}; {describe_agent(agent.provenance)}) -> {graphs[name]}")
        own_T = agent.spec.time_steps
        time_steps[name] = args.converted_T if name == "converted" and args.converted_T not in (0, own_T) else None
        if time_steps[name]:
            print(f"note: the converted SNN runs at T {time_steps[name]} here, not the T {own_T} it was converted at "
                  f"(--converted-T; run-backend --time-steps): the conversion sweep's figures per T "
                  f"(docs/ATARI_TRAINING.md) say what that costs in agreement with the DQN and in score")
    if args.max_steps:
        print(f"note: episodes are capped at {args.max_steps} agent steps (--max-steps; 0 plays full games): "
              f"a capped return is the score at the cap, not a game's score")
    # the converted SNN's runs first: they are the longest, so two at a time end closest together
    order = sorted(graphs, key=lambda n: n != "converted")
    runs = [plan_run(name, graphs[name], target, args, time_steps[name]) for name in order for target in args.targets]
    t0 = time.perf_counter()
    done = run_all(runs, args)
    rows = [(name, target, done[(name, target)]) for name in graphs for target in args.targets]
    print_table(rows, args)
    print(f"total {time.perf_counter() - t_start:.0f} s ({time.perf_counter() - t0:.0f} s in the runs, "
          f"{args.jobs} at a time; load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end); per-episode "
          f"results, summaries and logs in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_entry(main)())

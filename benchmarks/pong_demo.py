"""``make demo-atari``: the bundled Pong DSQN and converted SNN play Pong on NEST and on Lava.

Each agent is exported to NIR (``export-nir``) and plays a few episodes closed-loop with each
target acting and the reference executor beside it on the same observations
(``run-backend --target T graph.nir --env ALE/Pong-v5 --compare reference``), one process per run.
The table at the end gives, per agent and target, the return, the agreement of the actions with
the reference's and the wall time per agent step split into set_input / simulate / read_out.

A Pong episode is 800 to 4,000 agent steps and a Nature-CNN step takes tenths of a second on a
simulator, so episodes are capped at ``--max-steps`` agent steps (run-backend's own flag, recorded
in each results file's header): a capped episode's return is the score when the cap was reached,
not a game's score, and the table says so.

    python benchmarks/pong_demo.py [--out out/demo-atari] [--episodes 2] [--max-steps 100]
    python benchmarks/pong_demo.py --dsqn my_dsqn.pt --converted my_snn.pt --targets nest

A missing agent is one ``error:`` line naming the file and the command that makes it
(benchmarks/pong_agents.py); nothing else stands in for it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.pong_agents import PONG_CONVERTED, PONG_DSQN, describe_agent, require_agent  # noqa: E402
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
    p.add_argument("--out", type=Path, default=ROOT / "out" / "demo-atari", help="folder for graphs and results")
    return p.parse_args(argv)


def backend_command(graph: Path, target: str, args: argparse.Namespace, results: Path, summary: Path) -> list[str]:
    cmd = [sys.executable, "-m", "backends.cli", str(graph), "--target", target, "--env", ENV, "--episodes",
           str(args.episodes), "--seed", str(args.seed), "--compare", "reference", "--results", str(results),
           "--json", str(summary), "--no-progress", "--threads", "1"]
    return cmd + (["--max-steps", str(args.max_steps)] if args.max_steps else [])


def shown(cmd: list[str]) -> str:
    """The command as a user would type it (the console script instead of ``python -m``)."""
    rest = cmd[3:] if cmd[1:3] == ["-m", "backends.cli"] else cmd[1:]
    return " ".join(["run-backend", *(str(Path(c).relative_to(ROOT)) if c.startswith(str(ROOT)) else c
                                      for c in rest)])


def run_one(name: str, graph: Path, target: str, args: argparse.Namespace) -> dict[str, Any]:
    """One closed-loop run in its own process; its summary plus the per-episode records."""
    results, summary = args.out / f"{name}.{target}.jsonl", args.out / f"{name}.{target}.json"
    for old in (results, summary):  # this demo's own earlier output (run-backend refuses to append)
        old.unlink(missing_ok=True)
    cmd = backend_command(graph, target, args, results, summary)
    print(f"$ {shown(cmd)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "PYNEST_QUIET": "1"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or [""])[-1]
        raise UserError(f"{name} on {target} failed (exit {proc.returncode}): {last.removeprefix('error: ')}")
    out = json.loads(summary.read_text())
    lines = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    out["settings"] = lines[0]["settings"]  # the header: every setting of the run, the cap included
    records = [r for r in lines if r.get("type") == "episode"]
    lengths = np.array([r["length"] for r in records], dtype=float)
    out["split_ms"] = {k: 1e3 * float(np.average([r["timing_per_step"][k] for r in records], weights=lengths))
                       for k in SPLIT}
    out["lengths"] = [int(x) for x in lengths]
    out["capped"] = [bool(args.max_steps) and int(x) >= args.max_steps for x in lengths]
    out["run_wall_s"] = wall
    print(f"  {name} on {target}: return {out['return_mean']:.1f} ± {out['return_std']:.1f} "
          f"({', '.join(f'{r:g}' for r in out['returns'])}), agreement {100 * out['agreement']:.2f} % of "
          f"{out['steps']} steps, {wall:.0f} s", flush=True)
    return out


def print_table(rows: list[tuple[str, str, dict[str, Any]]], args: argparse.Namespace) -> None:
    """Plain fixed-width lines (readable in a log and in an 80-column terminal alike)."""
    cap = f"episodes capped at {args.max_steps} agent steps" if args.max_steps else "full episodes"
    print(f"\nPong, {args.episodes} episode(s) per run (env seeds {args.seed}..), {cap}, "
          f"ε {rows[0][2]['settings']['epsilon']:g} (run-backend's Atari default), the reference executor beside "
          f"each target; times in ms per agent step")
    head = ("agent", "target", "steps", "return", "agreement", "max|dQ|", *SPLIT, "wall/step")
    widths = (10, 7, 14, 13, 10, 8, 9, 9, 9, 9)
    print("  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths))))
    for name, target, s in rows:
        n_capped = sum(s["capped"])
        cells = (name, target, f"{s['steps']}" + (f" ({n_capped} capped)" if n_capped else ""),
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
    from backends import REGISTRY

    for t in args.targets:
        if t not in REGISTRY:
            raise UserError(f"unknown target {t!r}; valid choices: {', '.join(REGISTRY)}")
    agents = {"dsqn": require_agent(PONG_DSQN, args.dsqn), "converted": require_agent(PONG_CONVERTED, args.converted)}
    args.out.mkdir(parents=True, exist_ok=True)
    import dsqn_deploy as dd

    graphs: dict[str, Path] = {}
    for name, ckpt in agents.items():
        agent = dd.load_agent(ckpt)
        if agent.env_id != ENV:
            raise UserError(f"{ckpt} is an agent for {agent.env_id}, not {ENV}")
        graphs[name] = args.out / f"pong_{name}.nir"
        dd.export_nir(ckpt, graphs[name])  # from the file: the graph records its source
        print(f"exported {ckpt} ({agent.spec.kind}, T {agent.spec.time_steps}; {describe_agent(agent.provenance)}) "
              f"-> {graphs[name]}")
    if args.max_steps:
        print(f"note: episodes are capped at {args.max_steps} agent steps (--max-steps; 0 plays full games): "
              f"a capped return is the score at the cap, not a game's score")
    t0 = time.perf_counter()
    rows = [(name, target, run_one(name, graphs[name], target, args)) for name in graphs for target in args.targets]
    print_table(rows, args)
    print(f"total {time.perf_counter() - t0:.0f} s; per-episode results and summaries in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_entry(main)())

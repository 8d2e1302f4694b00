"""How long each console script takes to answer ``--help`` (the goal: under 1 s), beside a bare
``python -c pass``, in fresh interpreters; the median of ``--repeat`` runs, and which heavy
libraries the help loaded. Figures only, no verdict: the machine is shared and noisy, so read the
ratio to the bare interpreter of the same run.

    python benchmarks/bench_help.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "nest", "lava", "pyNN", "spynnaker", "stable_baselines3", "gymnasium", "matplotlib", "ray")
PROBE = ("import sys; from {module} import {func} as main\n"
         "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
         "print(' '.join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)")


def timed(code: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, out.stderr.strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs per script (the median is printed)")
    args = ap.parse_args(argv)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    bare = statistics.median(timed("pass")[0] for _ in range(args.repeat))
    print(f"{'script':<18}{'--help s':>10}{'x bare':>8}  heavy modules loaded")
    print(f"{'(python -c pass)':<18}{bare:>10.2f}{1.0:>8.1f}")
    for name, target in sorted(scripts.items()):
        module, func = target.split(":")
        runs = [timed(PROBE.format(module=module, func=func, heavy=HEAVY)) for _ in range(args.repeat)]
        t = statistics.median(r[0] for r in runs)
        print(f"{name:<18}{t:>10.2f}{t / bare:>8.1f}  {runs[-1][1] or '-'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

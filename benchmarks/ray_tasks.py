"""Benchmark work as Ray tasks: ``make bench``'s agreement-matrix cells and multi-seed scores
(``run_all.py --ray-workers N`` or ``--ray-address``) run side by side on Ray workers instead of
one after the other.

A cell is a script run in its own process (its build time and peak memory are its own), so a
task is exactly that: the worker writes the cell's input files (shipped as bytes, not paths:
a worker on another machine shares no file system with the driver) into a temporary folder,
runs the script there with this interpreter, and returns its exit code, output and the bytes of
the files it wrote. The driver handles the result as if it had run the script itself. A worker
that dies is retried by Ray (``max_retries``): a cell is a pure function of its inputs.

Cells that run side by side share the machine: their build and step times are those of a
loaded machine (docs/SCALING.md); agreement, spikes and Q errors do not depend on it.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RETRIES = 2


@dataclass(frozen=True)
class ScriptJob:
    """``python <script> <args>``, where ``{name}`` in an argument is the path of an input file
    (``inputs``, shipped by content) or of an output file the script writes (``outputs``)."""

    script: str  # relative to the repository root
    args: tuple[str, ...]
    inputs: dict[str, bytes] = field(default_factory=dict)  # placeholder -> file content
    input_names: dict[str, str] = field(default_factory=dict)  # placeholder -> file name (suffix matters)
    outputs: dict[str, str] = field(default_factory=dict)  # placeholder -> file name


@dataclass(frozen=True)
class ScriptResult:
    returncode: int
    stdout: str
    stderr: str
    outputs: dict[str, bytes]  # placeholder -> content of each output the script wrote


def job_from_files(script: str, args: list[str], inputs: dict[str, Path], outputs: dict[str, str]) -> ScriptJob:
    """A job whose inputs are local files, read now."""
    return ScriptJob(script, tuple(args), {k: p.read_bytes() for k, p in inputs.items()},
                     {k: p.name for k, p in inputs.items()}, dict(outputs))


def run_job(job: ScriptJob, timeout: float | None = None) -> ScriptResult:
    """Run ``job`` here, in a fresh temporary folder (what a Ray worker does)."""
    import os

    with tempfile.TemporaryDirectory(prefix="dsqn-cell-") as tmp:
        paths = {k: Path(tmp) / name for k, name in {**job.input_names, **job.outputs}.items()}
        for k, data in job.inputs.items():
            paths[k].write_bytes(data)
        args = list(job.args)
        for k, path in paths.items():  # plain replacement: other braces (JSON options) stay as they are
            args = [a.replace("{" + k + "}", str(path)) for a in args]
        proc = subprocess.run([sys.executable, str(ROOT / job.script), *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})
        outputs = {k: paths[k].read_bytes() for k in job.outputs if paths[k].is_file()}
        return ScriptResult(proc.returncode, proc.stdout, proc.stderr, outputs)


def run_jobs(jobs: list[ScriptJob], workers: int | None = None, address: str | None = None) -> list[ScriptResult]:
    """Every job's result, in order: here one after the other without ``workers``/``address``,
    else as Ray tasks (one CPU each) on a local Ray with ``workers`` CPUs or the cluster at
    ``address`` (backends.ray_runner.connect: an address that does not answer is one UserError)."""
    if workers is None and address is None:
        return [run_job(j) for j in jobs]
    from backends.ray_runner import connect

    ray = connect(address, workers or 1)
    task = ray.remote(num_cpus=1, max_retries=RETRIES)(run_job)
    return ray.get([task.remote(j) for j in jobs])


def score_seed(checkpoint: bytes, name: str, episodes: int, seed: int, max_steps: int | None = None) -> dict:
    """``evaluate_checkpoint`` of a checkpoint shipped by content (one seed of a score; episodes
    cut after ``max_steps`` agent steps if given)."""
    from pipeline.evaluate import evaluate_checkpoint

    with tempfile.TemporaryDirectory(prefix="dsqn-score-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(checkpoint)
        return evaluate_checkpoint(path, episodes=episodes, seed=seed, max_steps=max_steps, progress=False)


def run_scores(calls: list[tuple[Path, int, int] | tuple[Path, int, int, int | None]], workers: int | None = None,
               address: str | None = None) -> list[dict]:
    """``evaluate_checkpoint(path, episodes, seed[, max_steps])`` for each call, in order: here, or
    as Ray tasks (the checkpoint's bytes shipped, retried if a worker dies; an evaluation is seeded)."""
    calls4 = [(c[0], c[1], c[2], c[3] if len(c) > 3 else None) for c in calls]
    if workers is None and address is None:
        return [score_seed(p.read_bytes(), p.name, e, s, m) for p, e, s, m in calls4]
    from backends.ray_runner import connect

    ray = connect(address, workers or 1)
    task = ray.remote(num_cpus=1, max_retries=RETRIES)(score_seed)
    blobs = {p: ray.put(p.read_bytes()) for p in {c[0] for c in calls4}}
    return ray.get([task.remote(blobs[p], p.name, e, s, m) for p, e, s, m in calls4])

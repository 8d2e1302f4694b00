"""Episodes of one run-backend run as Ray tasks: one local Ray (2 CPUs) for the module, tiny
CartPole episodes; a worker killed mid-run, a driver killed mid-run and resumed, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the ray package is not installed (pip install 'dsqn-deploy[ray]')")

from backends.cli import main as run_backend  # noqa: E402
from exporters.nirio import write_graph  # noqa: E402
from exporters.to_nir import model_to_nir  # noqa: E402
from pipeline.bridge import read_results  # noqa: E402
from pipeline.checkpoint import load_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# every field but the timings must equal the sequential run's, bit for bit (a worker plays the
# sequential loop)
TIMING = ("wall_per_step", "sim_per_step", "timing_per_step", "episode_wall_s")
COMMON = ("--env", "CartPole-v1", "--episodes", "6", "--max-steps", "60", "--epsilon", "0.1", "--no-progress")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray with 2 CPUs for the whole module (its start-up is the slow part)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def graph_and_sequential(tmp_path_factory, local_ray):
    """The bundled CartPole DSQN as NIR (it balances: every episode lasts --max-steps) and the
    sequential run every Ray run must equal."""
    tmp = tmp_path_factory.mktemp("ray")
    graph = tmp / "dsqn.nir"
    write_graph(model_to_nir(load_checkpoint(ROOT / "examples" / "cartpole_dsqn.pt")), graph)
    seq = tmp / "seq.jsonl"
    assert run_backend([str(graph), *COMMON, "--results", str(seq)]) == 0
    return graph, episodes(seq)


def episodes(results: Path) -> dict[int, dict]:
    return {r["episode"]: {k: v for k, v in r.items() if k not in TIMING} for r in read_results(results)[1]}


def episode_lines(results: Path) -> list[int]:
    if not results.exists():
        return []
    out = []
    for line in results.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("type") == "episode":
            out.append(rec["episode"])
    return out


def our_descendants(name: str) -> list[int]:
    """Processes titled ``name`` (Ray sets ``ray::<Actor>``) that descend from this test process."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            if not cmd.startswith(name):
                continue
            pid = int(entry)
            while pid > 1:
                pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                if pid == me:
                    found.append(int(entry))
                    break
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_ray_episodes_equal_the_sequential_run_and_survive_a_killed_worker(tmp_path: Path, graph_and_sequential):
    graph, sequential = graph_and_sequential
    res = tmp_path / "ray.jsonl"
    killed: list[int] = []

    def kill_one_worker() -> None:  # once the first episode is on disk, one worker dies mid-episode
        deadline = time.time() + 120
        while time.time() < deadline and not episode_lines(res):
            time.sleep(0.05)
        pids = our_descendants("ray::EpisodeWorker")
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    code = run_backend([str(graph), *COMMON, "--ray-workers", "2", "--results", str(res)])
    killer.join()
    assert code == 0
    assert killed, "no Ray worker process was found to kill"
    assert sorted(episode_lines(res)) == list(range(6))  # each episode once: none lost, none twice
    assert episodes(res) == sequential


def test_driver_killed_then_resumed_loses_and_repeats_nothing(tmp_path: Path, graph_and_sequential, local_ray):
    graph, sequential = graph_and_sequential
    res = tmp_path / "ray.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "backends.cli", str(graph), *COMMON, "--ray-address", local_ray,
                             "--ray-workers", "2", "--results", str(res)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and len(episode_lines(res)) < 2 and proc.poll() is None:
            time.sleep(0.05)
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=60)
    before = episode_lines(res)
    assert 2 <= len(before) < 6, (before, err)
    assert run_backend([str(graph), *COMMON, "--ray-workers", "2", "--results", str(res), "--resume"]) == 0
    after = episode_lines(res)
    assert after[:len(before)] == before and sorted(after) == list(range(6))
    assert episodes(res) == sequential


def run_cli(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "backends.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)


def test_unreachable_ray_address_is_one_error_before_any_episode(tmp_path: Path, graph_and_sequential):
    graph, _ = graph_and_sequential
    res = tmp_path / "r.jsonl"
    proc = run_cli([str(graph), *COMMON, "--ray-address", "127.0.0.1:9", "--results", str(res)])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: the Ray cluster at 127.0.0.1:9 does not answer")
    assert not res.exists()


def test_a_worker_that_cannot_import_the_backend_is_one_error(tmp_path: Path, graph_and_sequential):
    """Lava missing on the workers (a ``lava`` package that fails to import shadows the real one
    on the local Ray this command starts): one line naming the module, nothing written."""
    graph, _ = graph_and_sequential
    shadow = tmp_path / "shadow" / "lava"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('lava is not installed on this worker (test)')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow.parent), str(ROOT),
                                                        os.environ.get("PYTHONPATH", "")])}
    res = tmp_path / "r.jsonl"
    proc = run_cli([str(graph), *COMMON, "--target", "lava", "--ray-workers", "1", "--results", str(res)], env=env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "cannot import 'lava'" in lines[0] and "for target lava" in lines[0]
    assert not res.exists()


def test_bench_matrix_cells_as_ray_tasks_equal_the_local_run(tmp_path: Path, local_ray):
    """Agreement-matrix cells (benchmarks/backend_cell.py) shipped by content to Ray workers: the
    same figures as when run here (the fixed-point SpiNNaker emulation: its Q-values differ from
    the reference's, so equal figures mean the same computation, not two perfect scores)."""
    import numpy as np

    from backends.reference import ReferenceBackend
    from benchmarks.ray_tasks import job_from_files, run_jobs
    from exporters.zoo import cartpole_obs, make_checkpoint

    graph = model_to_nir(make_checkpoint("liu", seed=3))
    gpath, opath, rpath = tmp_path / "g.nir", tmp_path / "obs.npy", tmp_path / "ref.npz"
    write_graph(graph, gpath)
    obs = cartpole_obs(12, seed=5).numpy()
    np.save(opath, obs)
    ReferenceBackend(graph, dtype="float64").run(obs).save(rpath)
    jobs = [job_from_files("benchmarks/backend_cell.py",
                           ["--target", t, "--graph", "{graph}", "--obs", "{obs}", "--reference", "{ref}",
                            "--options", "{}", "--out", "{out}"],
                           {"graph": gpath, "obs": opath, "ref": rpath}, {"out": f"{t}.json"})
            for t in ("spinnaker-fixedpoint",)]
    local, remote = run_jobs(jobs), run_jobs(jobs, workers=2)
    for a, b in zip(local, remote):
        assert a.returncode == b.returncode == 0, (a.stderr[-500:], b.stderr[-500:])
        ca, cb = json.loads(a.outputs["out"]), json.loads(b.outputs["out"])
        for key in ("target", "n", "agreement", "q_abs_err_max", "q_rel_err_max", "spike_counts_equal"):
            assert ca[key] == cb[key], key


def test_bench_scores_as_ray_tasks_equal_the_local_run(local_ray):
    """The multi-seed scores of make bench: each (checkpoint, seed) evaluation as a Ray task with
    the checkpoint shipped by content gives the returns of the same evaluation here."""
    from benchmarks.ray_tasks import run_scores

    calls = [(ROOT / "examples" / "cartpole_dqn.pt", 2, seed) for seed in (3_000_000, 3_001_000)]
    local, remote = run_scores(calls), run_scores(calls, workers=2)
    assert [r["returns"] for r in local] == [r["returns"] for r in remote]
    assert all(len(r["returns"]) == 2 for r in local)


# --- conversion sweeps (benchmarks/sweep_conversion.py) as Ray tasks ---------------------------

SWEEP = ("--norms", "model", "data", "--readouts", "robust_rate", "-T", "4", "8", "--calib-steps", "300",
         "--eval-obs", "100", "--episodes", "2", "--max-steps", "150", "--no-progress")
SWEEP_TIMING = ("wall_s", "return_wall_s")


def sweep_rows(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in SWEEP_TIMING} for r in json.loads(path.read_text())["rows"]]


@pytest.fixture(scope="module")
def sequential_sweep(tmp_path_factory) -> Path:
    from benchmarks.sweep_conversion import main as sweep

    out = tmp_path_factory.mktemp("sweep") / "seq"
    assert sweep([*SWEEP, "--out", str(out)]) == 0
    return out.with_suffix(".json")


def test_sweep_cells_as_ray_tasks_equal_the_sequential_run_and_survive_a_killed_worker(
        tmp_path: Path, sequential_sweep: Path, local_ray):
    """Each (normalisation, readout, T) setting is one Ray task; a worker killed mid-task is run
    again by Ray, and its setting appears once, with the sequential run's figures."""
    from benchmarks.sweep_conversion import main as sweep

    out = tmp_path / "ray"
    killed: list[int] = []
    stop = threading.Event()

    def kill_one_worker() -> None:  # the first worker seen running a cell dies mid-task
        while not stop.is_set():
            pids = our_descendants("ray::sweep_cell")
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    try:
        code = sweep([*SWEEP, "--out", str(out), "--ray-workers", "2"])
    finally:
        stop.set()
        killer.join()
    assert code == 0
    assert killed, "no Ray worker running a sweep cell was found to kill"
    ray_json, seq = json.loads(out.with_suffix(".json").read_text()), json.loads(sequential_sweep.read_text())
    assert [(r["normalization"], r["time_steps"]) for r in ray_json["rows"]] == [
        ("model", 4), ("model", 8), ("data", 4), ("data", 8)]  # once each, in the sequential order
    assert sweep_rows(out.with_suffix(".json")) == sweep_rows(sequential_sweep)
    assert ray_json["dqn_return"] == seq["dqn_return"]


def test_sweep_driver_killed_then_resumed_loses_and_repeats_nothing(tmp_path: Path, sequential_sweep: Path,
                                                                    local_ray, capsys):
    """The sweep's driver killed after its first setting: --resume refuses changed settings, then
    runs only the settings missing from the file; the result is the sequential run's."""
    out = tmp_path / "ray"
    jpath = out.with_suffix(".json")
    cmd = [sys.executable, "benchmarks/sweep_conversion.py", *SWEEP, "--out", str(out), "--ray-address", local_ray]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)

    def rows_now() -> list[dict]:
        try:
            return json.loads(jpath.read_text())["rows"]
        except (OSError, json.JSONDecodeError, KeyError):
            return []

    try:
        deadline = time.time() + 180
        while time.time() < deadline and not rows_now() and proc.poll() is None:
            time.sleep(0.02)
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=60)
    before = rows_now()
    assert 1 <= len(before) < 4, (before, err)
    from benchmarks.sweep_conversion import main as sweep

    assert sweep([*SWEEP, "--out", str(out), "--resume", "--percentile", "99.0"]) == 2  # a changed setting
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --resume: percentile is 99.9"), lines
    assert sweep([*SWEEP, "--out", str(out), "--resume", "--ray-workers", "2"]) == 0
    after = json.loads(jpath.read_text())["rows"]
    done_before = {(r["normalization"], r["time_steps"]): r for r in before}
    for r in after:  # a setting finished before the kill is kept as it was (its timing too): not run again
        if (r["normalization"], r["time_steps"]) in done_before:
            assert r == done_before[(r["normalization"], r["time_steps"])]
    assert sweep_rows(jpath) == sweep_rows(sequential_sweep)

"""Every figure in one run: ``make bench`` (full) or ``make bench-quick`` (small sizes).

Sections, each written to ``<out>/results.json`` as soon as it finishes (a failed section is
recorded with its error and makes the exit code 1; nothing is skipped silently):

1. ``forward``     torch forward speed, Nature-CNN DSQN vs DQN (benchmarks/bench_forward.py).
2. ``matrix``      agreement matrix backend x model kind x task against the float64 reference,
                   with the per-step split, build time, peak memory and the SOPs each backend's
                   own spikes imply — one process per cell (benchmarks/backend_cell.py).
3. ``energy``      synaptic operations and the 45 nm energy estimate per model and backend
                   against the DQN's MACs (benchmarks/energy.py), plus Loihi / SpiNNaker figures.
4. ``conversion``  conversion sweeps, agreement and return vs T (benchmarks/sweep_conversion.py),
                   CartPole and the bundled Pong DQN; a sweep file an interrupted run left in
                   ``<out>`` is resumed (``--resume``: only the settings it lacks are run).
5. ``scores``      task scores, mean ± std over episodes and seeds (pipeline.evaluate).
6. ``robustness``  FGSM and random-sign noise vs epsilon (benchmarks/robustness.py).
7. ``spinnaker``   sPyNNaker virtual-board mapping of the CartPole network (and the Nature
                   CNN in the full run): chips, cores, routing entries.
8. ``hahn``        Hahn 2020's comparison: DQN, DSQN, direct, classifier and PG conversion
                   (benchmarks/hahn.py; it trains its PPOs and classifiers; the quick size runs
                   MountainCar with 1 episode at one T, a few thousand PPO steps).

Then ``<out>/results.md``, PNGs in ``<out>/``, and ``docs/RESULTS.md`` (with ``--docs``) are
regenerated from the JSON. Inputs: the bundled agents in examples/, the Pong ones included
(benchmarks/pong_agents.py). Every Atari figure is measured on those Pong agents, on frames of
their own greedy episodes. The full profile refuses to start without them (one ``error:`` line
naming the file and the command that makes it); ``--allow-missing`` and the quick profile leave
the Pong figures out instead and list each under "not available" with that command, and the
results record that they did.

    python benchmarks/run_all.py [--quick] [--out out/bench] [--docs] [--only matrix energy] [--allow-missing]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends import REGISTRY  # noqa: E402
from backends.base import Readout  # noqa: E402
from benchmarks.pong_agents import PONG_AGENTS, PongAgent, describe_agent, missing_message  # noqa: E402
from benchmarks.report import BACKEND_ORDER as BACKENDS  # noqa: E402  (matrix columns, in table order)
from pipeline.checkpoint import Checkpoint, load_checkpoint, save_checkpoint, versions  # noqa: E402
from pipeline.cli import cli_entry  # noqa: E402
from pipeline.errors import UserError  # noqa: E402

PY = sys.executable
SECTIONS = ("forward", "matrix", "energy", "conversion", "scores", "robustness", "spinnaker", "hahn")


@dataclass(frozen=True)
class Profile:
    """How much of each measurement a run does."""

    name: str
    cartpole_obs: int
    atari_obs: int  # Pong frames per agent in the matrix and the energy estimate
    atari_T: int  # T of the random-weights Nature CNN mapped on the sPyNNaker virtual board
    allow_missing: bool = False  # a missing bundled Pong agent leaves its figures out (listed) instead of refusing
    pong_dir: str | None = None  # read the Pong agents (same file names) from here instead of examples/
    atari_stride: int = 4  # keep every n-th agent step of the greedy episodes (frames less alike)
    atari_cap: dict[str, int] = field(default_factory=dict)  # per-backend frame caps (slow emulations)
    forward_repeats: int = 30
    conv_Ts: tuple[int, ...] = (10, 20, 50, 100, 200, 500)
    conv_norms: tuple[str, ...] = ("model", "data", "robust")
    conv_readouts: tuple[str, ...] = ("robust_rate", "spike_count", "voltage")
    conv_eval_obs: int = 1000
    conv_calib: int = 15_000
    conv_episodes: int = 5
    conv_T: int = 100  # T of the converted CartPole SNN in the matrix
    atari_conv_obs: int = 1000  # held-out frames for the Pong conversion rate (issue 14: >= 1,000)
    atari_conv_Ts: tuple[int, ...] = (50, 100, 200, 500)
    atari_conv_norms: tuple[str, ...] = ("robust",)
    atari_conv_episodes: int = 10  # returns of the converted Pong SNN per T (0: agreement only)
    score_seeds: tuple[int, ...] = (0, 1, 2)
    score_episodes: int = 10
    atari_score_episodes: int = 4
    atari_score_max_steps: int | None = None  # cut Pong score episodes here (quick: a game takes minutes)
    robust_eps: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.5)
    atari_eps: tuple[float, ...] = (0.0, 1 / 255, 2 / 255, 4 / 255)
    robust_obs: int = 500
    robust_episodes: int = 5
    atari_robust_obs: int = 100
    atari_robust_episodes: int = 1  # closed loop capped at robustness.ATARI_MAX_STEPS agent steps
    spinnaker_cnn: bool = True
    hahn_args: tuple[str, ...] = ("--envs", "CartPole-v1", "MountainCar-v0", "Acrobot-v1", "--episodes", "5",
                                  "--seeds", "0", "1", "-T", "20", "100")


FULL = Profile("full", cartpole_obs=500, atari_obs=200, atari_T=64, atari_cap={"spinnaker-fixedpoint": 10})
QUICK = Profile("quick", cartpole_obs=100, atari_obs=3, atari_T=8, atari_cap={"spinnaker-fixedpoint": 2},
                allow_missing=True, atari_stride=1, atari_conv_Ts=(50,), atari_conv_episodes=0,
                forward_repeats=5, conv_Ts=(10, 50, 100), conv_norms=("data", "robust"),
                conv_readouts=("robust_rate",), conv_eval_obs=300, conv_calib=2000, conv_episodes=2,
                conv_T=50, atari_conv_obs=50, score_seeds=(0,), score_episodes=3, atari_score_episodes=1,
                atari_score_max_steps=200,
                robust_eps=(0.0, 0.2), atari_eps=(0.0, 2 / 255), robust_obs=50, robust_episodes=1,
                atari_robust_obs=10, atari_robust_episodes=0, spinnaker_cnn=False,
                hahn_args=("--envs", "MountainCar-v0", "--episodes", "1", "--seeds", "0", "-T", "20",
                           "--mountaincar-ppo-steps", "2048", "--clf-obs", "2000"))

# Bundled (examples/) agents, with the command that makes a missing one; the Pong agents are in
# benchmarks/pong_agents.py.
CARTPOLE = {
    "dqn": "examples/cartpole_dqn.pt",
    "liu-dsqn": "examples/cartpole_dsqn.pt",
    "chen-dsqn": "examples/cartpole_chen_dsqn.pt",
    "if-dsqn": "examples/cartpole_if_dsqn.pt",
}
MAKE_CHEN = ("train-agent --env CartPole-v1 --model chen-dsqn --hidden 128 128 --steps 100000 --seed 1 "
             "--hp eval_episodes=25 --hp learning_rate_end=2.3e-4 -o examples/cartpole_chen_dsqn.pt")
OPTIONAL = {
    "mountaincar-dsqn": ("examples/mountaincar_dsqn.pt", "see examples/README.md"),
}
POLICY_SECTIONS = ("matrix", "energy", "conversion", "scores", "robustness")  # the sections that read Pong agents

# Published anchors printed beside our numbers (from the seeds in ../shared/seeds and the issues).
ANCHORS = {
    "CartPole-v1": "Hahn 2020: DSQN 454.8 ± 81.3, DQN 226.3; RL-Zoo DQN 500",
    "MountainCar-v0": "Hahn 2020 (reshaped reward): DSQN -130.9, DQN -175.4; RL-Zoo DQN -100.8",
    "ALE/Pong-v5": "Tan 2020 Table 1 (T 500, 50 games): DQN 19.9 ± 1.2, converted SNN 19.8 ± 1.3",
    "conversion": ("Hahn 2020: 81.6 % at T 500, 99.0 % at T 10,000 (CartPole); Tan 2020: 42.7–97.9 % at T 500 "
                   "(Atari), Pong 63.9 % (robust rate, p99.9) and 85.8 % (p99.99)"),
    "energy": "Liu 2022: DSQN ≈ 85 % of the conversion SNN's energy (two games)",
    "forward": "goal: DSQN T64 b1 ≤ 1.5 × DQN b64",
    "robustness": "Chen 2022: DSQN more robust to FGSM than DQN (Atari)",
}


# ---------------------------------------------------------------- helpers


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem, 1) if mem else None,
            "os": platform.platform(), "load_at_start": os.getloadavg()}


def all_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = versions()
    for pkg in ("nest-simulator", "PyNN", "sPyNNaker", "lava-nc", "nir", "nirtorch"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class Unsupported(Exception):
    """A backend refused the graph with a user error (exit 2): a documented limit, not a crash."""


def run_script(args: list[str], timeout: float | None = None) -> None:
    """Run a benchmark script in its own process; a failure raises with its last output lines."""
    proc = subprocess.run([PY, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    check_script(args[0], proc.returncode, proc.stdout, proc.stderr)


def check_script(script: str, returncode: int, stdout: str, stderr: str) -> None:
    """A refusal (exit 2 with an ``error:`` line) raises :class:`Unsupported`, any other failure
    RuntimeError with the last output lines."""
    last = stderr.strip().splitlines()[-1:] or [""]
    if returncode == 2 and last[0].startswith("error:"):
        raise Unsupported(last[0].removeprefix("error: "))
    if returncode != 0:
        tail = (stdout + stderr).strip().splitlines()[-8:]
        raise RuntimeError(f"{script} exited {returncode}: " + " | ".join(tail))


def greedy_raw_observations(path: Path, n: int, seed: int, stride: int = 1) -> np.ndarray:
    """Raw env observations from the checkpoint's own greedy episodes (env seeds seed, seed+1, ...),
    every ``stride``-th agent step of them."""
    import torch

    from pipeline.envs import Preprocessor, make_env
    from pipeline.models import act_greedy

    ckpt = load_checkpoint(path)
    model, pre = ckpt.build(), Preprocessor(ckpt.preprocessing)
    env = make_env(ckpt.env_id, ckpt.preprocessing.atari or None)
    rows: list[np.ndarray] = []
    episode = 0
    while len(rows) < n:
        obs, _ = env.reset(seed=seed + episode)
        done, step = False, 0
        while not done and len(rows) < n:
            if step % stride == 0:
                rows.append(np.asarray(obs))
            step += 1
            a = int(act_greedy(model, pre(torch.as_tensor(np.asarray(obs)).unsqueeze(0)))[0])
            obs, _, term, trunc, _ = env.step(a)
            done = term or trunc
        episode += 1
    env.close()
    return np.stack(rows)


def every_step(stride: int) -> str:
    return "every agent step" if stride == 1 else f"every {stride}th agent step"


def pong_agent(role: str, prof: Profile, missing: dict[str, str], use: str) -> Path | None:
    """The bundled Pong agent ``role`` for section ``use``; when it is missing (only reached with
    --allow-missing or the quick profile: main refuses otherwise) None, listed under ``missing``."""
    agent: PongAgent = PONG_AGENTS[role]
    folder = Path(prof.pong_dir) if prof.pong_dir else None
    path = agent.file_in(folder)
    if path.is_file():
        return path
    if not prof.allow_missing:  # main checks first; this guards a section called on its own
        raise UserError(missing_message(agent, path if folder else None))
    missing[f"Pong {role} ({use})"] = missing_message(agent, path if folder else None)
    return None


def check_pong_agents(sections: list[str], prof: Profile) -> list[str]:
    """The missing Pong agents the sections need; a UserError (one line) when that is not allowed."""
    if not set(sections) & set(POLICY_SECTIONS):
        return []
    folder = Path(prof.pong_dir) if prof.pong_dir else None
    absent = [a for a in PONG_AGENTS.values() if not a.file_in(folder).is_file()]
    if absent and not prof.allow_missing:
        raise UserError("; ".join(missing_message(a, a.file_in(folder) if folder else None) for a in absent)
                        + " (or run with --allow-missing: the Pong figures are then left out, and listed as missing)")
    return [a.path for a in absent]


def trained_note(path: Path) -> str:
    """Where a checkpoint came from and how good it is, from its own provenance."""
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return f"{describe_agent(load_checkpoint(path).provenance)}, {rel}"


def convert_cartpole(dqn: Path, out: Path, T: int, progress: bool = False) -> dict[str, Any]:
    """The converted SNN of the matrix: robust normalisation p99.99, robust_rate, soft reset (the
    best CartPole setting at T 100 in docs/CONVERSION.md)."""
    from pipeline.convert import convert, make_parser

    args = make_parser().parse_args([str(dqn), "-o", str(out), "-T", str(T), "--percentile", "99.99",
                                     "--eval-obs", "500", "--calib-steps", "5000", "--no-progress"])
    return convert(args)


# ---------------------------------------------------------------- sections


def section_forward(prof: Profile, work: Path) -> dict[str, Any]:
    path = work / "forward.json"
    run_script(["benchmarks/bench_forward.py", "--time-steps", "64", "--repeats", str(prof.forward_repeats),
                "--json", str(path)])
    return json.loads(path.read_text())


@dataclass
class Model:
    """One model of the matrix: its checkpoint and the observation set it runs on."""

    name: str
    task: str
    ckpt: Checkpoint
    raw_obs: np.ndarray
    note: str = ""


def matrix_models(prof: Profile, work: Path, missing: dict[str, str]) -> list[Model]:
    models: list[Model] = []
    raw_cp = greedy_raw_observations(ROOT / CARTPOLE["liu-dsqn"], prof.cartpole_obs, seed=10_000)
    for name in ("liu-dsqn", "chen-dsqn", "if-dsqn"):
        path = ROOT / CARTPOLE[name]
        if path.is_file():
            models.append(Model(name, "CartPole-v1", load_checkpoint(path), raw_cp, trained_note(path)))
        else:
            missing[name] = f"{CARTPOLE[name]} not found: {MAKE_CHEN}"
    conv_path = work / f"cartpole_converted_T{prof.conv_T}.pt"
    rep = convert_cartpole(ROOT / CARTPOLE["dqn"], conv_path, prof.conv_T)
    models.append(Model("converted", "CartPole-v1", load_checkpoint(conv_path), raw_cp,
                        f"convert-dqn {CARTPOLE['dqn']} T {prof.conv_T}, robust p99.99; conversion rate "
                        f"{100 * rep['evaluation']['agreement']:.1f} % on 500 held-out obs"))
    for role, name in (("dsqn", "liu-dsqn"), ("converted", "converted")):
        path = pong_agent(role, prof, missing, "matrix")
        if path is not None:
            log(f"matrix: {prof.atari_obs} frames of {path.name}'s greedy Pong episodes")
            frames = greedy_raw_observations(path, prof.atari_obs, seed=10_000, stride=prof.atari_stride)
            models.append(Model(name, "Pong", load_checkpoint(path), frames, trained_note(path)))
    return models


def merge_matrix(earlier: dict[str, Any], new: dict[str, Any], targets: list[str], started: str,
                 earlier_run: dict[str, Any] | None = None) -> dict[str, Any]:
    """A matrix rerun for some columns (``--only matrix --backends ...``): the earlier run's
    cells of the other columns are kept, the rerun cells say when they ran, and the cells are
    ordered as a full run orders them (model by model, columns in BACKENDS order)."""
    fresh = [{**c, "rerun_started": started} for c in new["cells"]]
    kept = [c for c in earlier.get("cells", []) if c["target"] not in targets]
    models = list(dict.fromkeys((c["task"], c["model"]) for c in [*earlier.get("cells", []), *fresh]))
    order = {t: i for i, t in enumerate(BACKENDS)}
    cells = sorted([*kept, *fresh], key=lambda c: (models.index((c["task"], c["model"])),
                                                  order.get(c["target"], len(order))))
    first = earlier.get("earlier_run") or earlier_run  # the run that made the columns not rerun
    return {**earlier, **{k: v for k, v in new.items() if k != "cells"}, "cells": cells, "earlier_run": first}


def section_matrix(prof: Profile, work: Path, missing: dict[str, str],
                   backends: tuple[str, ...], ray: tuple[int | None, str | None] = (None, None)) -> dict[str, Any]:
    """The agreement matrix, one process per cell; ``ray`` (workers, address) runs the cells as
    Ray tasks side by side (benchmarks/ray_tasks.py) instead of one after the other."""
    import nir

    from backends.reference import ReferenceBackend
    from benchmarks.ray_tasks import job_from_files, run_jobs
    from exporters.to_nir import model_to_nir
    from pipeline.envs import preprocess

    cells: list[dict[str, Any]] = []
    jobs: list[tuple[dict[str, Any], Any]] = []
    models = matrix_models(prof, work, missing)
    for m in models:
        tag = f"{m.task.split()[0].split('-')[0].lower()}_{m.name}"
        graph = model_to_nir(m.ckpt)
        gpath = work / f"{tag}.nir"
        nir.write(str(gpath), graph)
        obs = preprocess(m.raw_obs, m.ckpt.preprocessing)
        opath = work / f"{tag}.obs.npy"
        np.save(opath, obs)
        log(f"matrix: {m.task} {m.name}: float64 reference on {len(obs)} observations")
        ref = ReferenceBackend(graph, dtype="float64").run(obs)
        rpath = work / f"{tag}.ref.npz"
        ref.save(rpath)
        for target in backends:
            n = min(len(obs), prof.atari_cap.get(target, len(obs))) if m.task != "CartPole-v1" else len(obs)
            if n < len(obs):
                np.save(work / f"{tag}.obs{n}.npy", obs[:n])
                Readout(q=ref.q[:n], action=ref.action[:n],
                        spikes={k: v[:n] for k, v in ref.spikes.items()}).save(work / f"{tag}.ref{n}.npz")
                o, r = work / f"{tag}.obs{n}.npy", work / f"{tag}.ref{n}.npz"
            else:
                o, r = opath, rpath
            options = dict(REGISTRY[target].bench_options)
            cell: dict[str, Any] = {"task": m.task, "model": m.name, "target": target, "note": m.note}
            jobs.append((cell, job_from_files(
                "benchmarks/backend_cell.py", ["--target", target, "--graph", "{graph}", "--obs", "{obs}",
                                               "--reference", "{ref}", "--options", json.dumps(options),
                                               "--out", "{out}"],
                {"graph": gpath, "obs": o, "ref": r}, {"out": f"cell_{tag}_{target}.json"})))
    t0 = time.perf_counter()
    if ray == (None, None):  # one after the other, each cell's wall time its own
        results = []
        for _, job in jobs:
            t_cell = time.perf_counter()
            results.append((run_jobs([job])[0], round(time.perf_counter() - t_cell, 1)))
    else:
        log(f"matrix: {len(jobs)} cells as Ray tasks")
        results = [(res, None) for res in run_jobs([job for _, job in jobs], *ray)]
    for (cell, job), (res, wall) in zip(jobs, results):
        target = cell["target"]
        try:
            check_script(job.script, res.returncode, res.stdout, res.stderr)
            (work / job.outputs["out"]).write_bytes(res.outputs["out"])  # kept beside the inputs, as before
            cell.update(json.loads(res.outputs["out"]))
            log(f"  {cell['model']:10s} {target:22s} agreement {100 * cell['agreement']:6.2f} % of {cell['n']}, "
                f"q_abs_err max {cell['q_abs_err_max']:.3g}, wall/step "
                f"{cell['timing_ms']['wall_per_step_median']:.1f} ms, build {cell['build_s']:.1f} s")
        except Unsupported as exc:  # the backend's own clear refusal: shown as n/a with the reason
            cell["unsupported"] = str(exc)[:500]
            log(f"  {cell['model']:10s} {target:22s} n/a: {cell['unsupported'][:200]}")
        except Exception as exc:  # recorded, shown in the report, exit code 1
            cell["error"] = str(exc)[:500]
            log(f"  {cell['model']:10s} {target:22s} FAILED: {cell['error'][:200]}")
        cell["cell_wall_s"] = wall if wall is not None else "ray"
        cells.append(cell)
    if ray != (None, None):
        log(f"matrix: {len(jobs)} cells on Ray in {time.perf_counter() - t0:.0f} s")
    return {"cells": cells, "reference": "backends.reference, float64",
            "cartpole_obs": f"greedy episodes of {CARTPOLE['liu-dsqn']}, env seeds 10000+",
            "atari_obs": f"{prof.atari_obs} frames of each Pong agent's own greedy episodes (env seeds 10000+, "
                         f"{every_step(prof.atari_stride)})"}


def section_energy(prof: Profile, work: Path, results: dict[str, Any], missing: dict[str, str]) -> dict[str, Any]:
    """Energy per model from the reference spike counts (the matrix cells add per-backend SOPs)."""
    from benchmarks.energy import EnergyCase, energy_rows, figures_dict

    raw = greedy_raw_observations(ROOT / CARTPOLE["liu-dsqn"], min(prof.cartpole_obs, 500), seed=20_000)
    from pipeline.envs import preprocess

    cases = []
    for name in ("dqn", "liu-dsqn", "chen-dsqn", "if-dsqn"):
        path = ROOT / CARTPOLE[name]
        if path.is_file():
            ck = load_checkpoint(path)
            cases.append(EnergyCase(f"CartPole {name}", path, preprocess(raw, ck.preprocessing)))
    conv = work / f"cartpole_converted_T{prof.conv_T}.pt"
    if not conv.is_file():
        convert_cartpole(ROOT / CARTPOLE["dqn"], conv, prof.conv_T)
    ck = load_checkpoint(conv)
    cases.append(EnergyCase(f"CartPole converted T{prof.conv_T}", conv, preprocess(raw, ck.preprocessing)))
    pong = {role: pong_agent(role, prof, missing, "energy") for role in ("dqn", "dsqn", "converted")}
    pong_obs = "no Pong agent bundled"
    if pong["dqn"] is not None:  # one frame set for the three: the DQN's greedy episodes (the converted SNN's source)
        frames = greedy_raw_observations(pong["dqn"], prof.atari_obs, seed=20_000, stride=prof.atari_stride)
        pong_obs = (f"Pong: {len(frames)} frames of the bundled DQN's greedy episodes (env seeds 20000+, "
                    f"{every_step(prof.atari_stride)}), the same frames for the DQN, the DSQN and the converted SNN")
        for role, path in pong.items():
            if path is not None:
                ck = load_checkpoint(path)
                T = f" T{ck.spec.time_steps}" if ck.spec.spiking else ""
                cases.append(EnergyCase(f"Pong {role}{T}", path, preprocess(frames, ck.preprocessing)))
    rows = [r.to_dict() for r in energy_rows(cases)]
    per_backend = []
    for c in results.get("matrix", {}).get("cells", []):
        if "energy_pj" in c:
            per_backend.append({"task": c["task"], "model": c["model"], "target": c["target"],
                                "sops": c["work"]["total_sops"], "spikes": c["work"]["total_spikes"],
                                **c["energy_pj"]})
    return {"rows": rows, "per_backend": per_backend, **figures_dict(),
            "observations": f"CartPole greedy episodes of the bundled Liu DSQN (env seeds 20000+); {pong_obs}"}


def resume_sweep(stem: Path) -> list[str]:
    """``--resume`` when an earlier run left ``<stem>.json``: the hours-long Pong sweep goes on from
    the settings it finished; the sweep refuses (the section fails, naming the setting) if a
    recorded setting differs, and the file is kept for the user to move."""
    return ["--resume"] if stem.with_suffix(".json").is_file() else []


def section_conversion(prof: Profile, work: Path, missing: dict[str, str],
                       ray: tuple[int | None, str | None] = (None, None)) -> dict[str, Any]:
    """The conversion sweeps; ``ray`` (workers, address) runs each sweep's settings as Ray tasks
    side by side (benchmarks/sweep_conversion.py --ray-workers/--ray-address)."""
    on_ray = [*(["--ray-workers", str(ray[0])] if ray[0] else []), *(["--ray-address", ray[1]] if ray[1] else [])]
    out: dict[str, Any] = {}
    stem = work / "sweep_cartpole"
    run_script(["benchmarks/sweep_conversion.py", CARTPOLE["dqn"], *resume_sweep(stem), "--norms", *prof.conv_norms,
                "--readouts", *prof.conv_readouts, "-T", *map(str, prof.conv_Ts), "--eval-obs",
                str(prof.conv_eval_obs), "--calib-steps", str(prof.conv_calib), "--episodes",
                str(prof.conv_episodes), "--out", str(stem), "--no-progress", *on_ray])
    out["cartpole"] = json.loads(stem.with_suffix(".json").read_text())
    pong = pong_agent("dqn", prof, missing, "conversion")
    if pong is not None:
        stem = work / "sweep_pong"
        returns = (["--episodes", str(prof.atari_conv_episodes)] if prof.atari_conv_episodes else ["--no-returns"])
        run_script(["benchmarks/sweep_conversion.py", str(pong), *resume_sweep(stem), "--norms", *prof.atari_conv_norms, "--readouts",
                    "robust_rate", "-T", *map(str, prof.atari_conv_Ts), "--eval-obs", str(prof.atari_conv_obs),
                    "--percentile", "99.99",  # as the bundled converted SNN (Tan's best Pong setting, 85.8 % at T 500)
                    "--calib-steps", str(min(prof.conv_calib, 5000)), *returns, "--out", str(stem), "--no-progress",
                    "--threads", "1", *on_ray])  # one torch thread: two collapse on a shared 2-core machine
        out["pong"] = json.loads(stem.with_suffix(".json").read_text())
        out["pong_checkpoint"] = str(pong.relative_to(ROOT) if pong.is_relative_to(ROOT) else pong)
    return out


def section_scores(prof: Profile, work: Path, missing: dict[str, str],
                   ray: tuple[int | None, str | None] = (None, None)) -> dict[str, Any]:
    """Mean ± std over episodes and seeds; ``ray`` (workers, address) evaluates the (checkpoint,
    seed) pairs as Ray tasks side by side (benchmarks/ray_tasks.py): the same seeded episodes."""
    from benchmarks.ray_tasks import run_scores

    paths = {f"CartPole {k}": ROOT / v for k, v in CARTPOLE.items()}
    conv = work / f"cartpole_converted_T{prof.conv_T}.pt"
    if conv.is_file():
        paths[f"CartPole converted T{prof.conv_T}"] = conv
    for key, (rel, how) in OPTIONAL.items():
        if (ROOT / rel).is_file():
            paths[key] = ROOT / rel
        else:
            missing[f"{key} (scores)"] = f"{rel} not found: {how}"
    for role in ("dqn", "dsqn", "converted"):
        path = pong_agent(role, prof, missing, "scores")
        if path is not None:
            paths[f"Pong {role}"] = path
    rows = []
    todo: list[tuple[str, Path, int, int | None]] = []
    for label, path in paths.items():
        if not path.is_file():
            missing[f"{label} (scores)"] = f"{path} not found"
            continue
        ck = load_checkpoint(path)
        atari = ck.env_id.startswith("ALE/")
        cap = prof.atari_score_max_steps if atari else None
        todo.append((f"{label} (first {cap} steps)" if cap else label, path,
                     prof.atari_score_episodes if atari else prof.score_episodes, cap))
    seeds = [3_000_000 + 1000 * seed for seed in prof.score_seeds]
    on_ray = ray != (None, None)
    if on_ray:  # every (checkpoint, seed) at once; a row has no wall time of its own then
        done = iter(run_scores([(path, episodes, s, cap) for _, path, episodes, cap in todo for s in seeds], *ray))
        log(f"scores: {len(todo) * len(seeds)} evaluations as Ray tasks")
    for label, path, episodes, cap in todo:
        ck = load_checkpoint(path)
        t0 = time.perf_counter()
        per = [next(done) for _ in seeds] if on_ray else run_scores([(path, episodes, s, cap) for s in seeds])
        returns = [x for r in per for x in r["returns"]]
        per_seed = [r["mean_return"] for r in per]
        rows.append({"label": label, "env_id": ck.env_id, "model_kind": ck.spec.kind, "variant": ck.spec.variant,
                     "checkpoint": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
                     "seeds": list(prof.score_seeds), "episodes_per_seed": episodes, "max_steps": cap,
                     "mean_return": float(np.mean(returns)), "std_return": float(np.std(returns)),
                     "std_of_seed_means": float(np.std(per_seed)), "returns": returns,
                     "wall_s": None if on_ray else round(time.perf_counter() - t0, 1)})
        log(f"scores: {label}: {rows[-1]['mean_return']:.1f} ± {rows[-1]['std_return']:.1f} "
            f"({len(returns)} episodes)")
    return {"rows": rows, "epsilon": 0.0, "env_seeds": "3000000 + 1000*seed + episode"}


def section_robustness(prof: Profile, work: Path, missing: dict[str, str]) -> dict[str, Any]:
    from benchmarks.robustness import evaluate_robustness

    rows: list[dict[str, Any]] = []
    paths = [ROOT / v for v in CARTPOLE.values() if (ROOT / v).is_file()]
    conv = work / f"cartpole_converted_T{prof.conv_T}.pt"
    if conv.is_file():
        paths.append(conv)
    for path in paths:
        log(f"robustness: {path.name}")
        rows += evaluate_robustness(path, list(prof.robust_eps), episodes=prof.robust_episodes,
                                    n_obs=prof.robust_obs, seed=0)
    # Chen 2022's comparison on Atari: the DQN and the DSQN closed loop (episodes capped at
    # robustness.ATARI_MAX_STEPS agent steps), the converted SNN open loop only (a backward pass
    # through T 100 steps of a Nature CNN per attacked step is slow)
    for role, episodes, n_obs in (("dqn", prof.atari_robust_episodes, prof.atari_robust_obs),
                                  ("dsqn", prof.atari_robust_episodes, prof.atari_robust_obs),
                                  ("converted", 0, max(1, prof.atari_robust_obs // 2))):
        path = pong_agent(role, prof, missing, "robustness")
        if path is not None:
            log(f"robustness: {path.name}" + ("" if episodes else " (open loop)"))
            rows += evaluate_robustness(path, list(prof.atari_eps), episodes=episodes, n_obs=n_obs, seed=0)
    return {"rows": rows}


def section_spinnaker(prof: Profile, work: Path) -> dict[str, Any]:
    path = work / "spinnaker.json"
    run_script(["benchmarks/bench_pynn.py", "--skip", "cartpole", "atari", "--time-steps", str(prof.atari_T),
                "--json", str(path)] + ([] if prof.spinnaker_cnn else ["--no-cnn-mapping"]))
    return json.loads(path.read_text())["spinnaker"]


def section_hahn(prof: Profile, work: Path) -> dict[str, Any]:
    out = work / "hahn"
    run_script(["benchmarks/hahn.py", "--out", str(out), *prof.hahn_args])
    return json.loads((out / "hahn.json").read_text())


# ---------------------------------------------------------------- driver


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="run_all", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (tens of minutes with the Pong agents)")
    p.add_argument("--out", default=None, help="output folder (default out/bench or out/bench-quick)")
    p.add_argument("--only", nargs="+", default=list(SECTIONS), help=f"sections: {', '.join(SECTIONS)}")
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), help=f"matrix columns: {', '.join(BACKENDS)}")
    p.add_argument("--docs", action="store_true", help="also regenerate docs/RESULTS.md and docs/results/*.png")
    p.add_argument("--report-only", action="store_true", help="rebuild the reports from <out>/results.json")
    p.add_argument("--allow-missing", action="store_true",
                   help="without the bundled Pong agents (benchmarks/pong_agents.py), leave their figures out and "
                        "list them as missing instead of refusing to start (the quick profile does this always)")
    p.add_argument("--pong-dir", help="read the Pong agents (pong_dqn.pt, pong_dsqn.pt, pong_converted.pt) from "
                                      "this folder instead of examples/ (recorded in the results' profile)")
    p.add_argument("--ray-workers", type=int, help="run the matrix cells, the conversion sweeps' settings and the "
                                                   "scores' seeds as Ray tasks on a local Ray with this many CPUs "
                                                   "(docs/SCALING.md); their timings are then those of a shared "
                                                   "machine")
    p.add_argument("--ray-address", help="run the matrix cells, the conversion sweeps' settings and the scores' seeds "
                                         "on this Ray cluster (host:port)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.report import write_reports

    args = parse_args(argv)
    prof = QUICK if args.quick else FULL
    for s in args.only:
        if s not in SECTIONS:
            raise UserError(f"unknown section {s!r}; valid choices: {', '.join(SECTIONS)}")
    for b in args.backends:
        if b not in BACKENDS:
            raise UserError(f"unknown backend {b!r}; valid choices: {', '.join(BACKENDS)}")
    if args.allow_missing or args.pong_dir:
        prof = replace(prof, allow_missing=prof.allow_missing or args.allow_missing,
                       pong_dir=str(Path(args.pong_dir).resolve()) if args.pong_dir else None)
    if not args.report_only:
        check_pong_agents(args.only, prof)
    out = ROOT / (args.out or ("out/bench-quick" if args.quick else "out/bench"))
    out.mkdir(parents=True, exist_ok=True)
    jpath = out / "results.json"
    if args.report_only:
        if not jpath.is_file():
            raise UserError(f"{jpath} not found: run without --report-only first")
        write_reports(json.loads(jpath.read_text()), out, docs=ROOT / "docs" if args.docs else None)
        return 0
    command = " ".join(["python benchmarks/run_all.py", *(argv if argv is not None else sys.argv[1:])])
    results: dict[str, Any] = {
        "command": command, "profile": asdict(prof), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "commit": git_commit(), "machine": machine(), "versions": all_versions(), "anchors": ANCHORS,
        "missing": {}, "errors": {}, "section_wall_s": {},
    }
    earlier_matrix: dict[str, Any] | None = None
    earlier_matrix_run: dict[str, Any] | None = None
    if set(args.only) != set(SECTIONS) and jpath.is_file():
        # a partial run updates an earlier run of the same profile: its other sections are kept, and
        # each section says which command and start time produced it
        earlier = json.loads(jpath.read_text())
        if earlier.get("profile", {}).get("name") == prof.name:
            kept = {k: v for k, v in earlier.items() if k in SECTIONS and k not in args.only}
            whole_run = {"command": earlier["command"], "started": earlier["started"], "commit": earlier["commit"]}
            provenance = earlier.get("section_runs", {k: whole_run for k in kept})
            walls = {k: v for k, v in earlier.get("section_wall_s", {}).items() if k in kept}
            results.update(kept, section_wall_s=walls, wall_s=earlier.get("wall_s", 0.0),
                           missing=earlier.get("missing", {}), section_runs=provenance)
            earlier_matrix = earlier.get("matrix")
            earlier_matrix_run = earlier.get("section_runs", {}).get("matrix", whole_run)
    results.setdefault("section_runs", {})
    for name in args.only:
        results["section_runs"][name] = {"command": command, "started": results["started"], "commit": results["commit"]}
    missing: dict[str, str] = results["missing"]
    t_start = time.perf_counter()
    work = out / "work"
    work.mkdir(exist_ok=True)
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "forward": lambda: section_forward(prof, work),
        "matrix": lambda: section_matrix(prof, work, missing, tuple(args.backends), **(
            {"ray": (args.ray_workers, args.ray_address)} if args.ray_workers or args.ray_address else {})),
        "energy": lambda: section_energy(prof, work, results, missing),
        "conversion": lambda: section_conversion(prof, work, missing, **(
            {"ray": (args.ray_workers, args.ray_address)} if args.ray_workers or args.ray_address else {})),
        "scores": lambda: section_scores(prof, work, missing, **(
            {"ray": (args.ray_workers, args.ray_address)} if args.ray_workers or args.ray_address else {})),
        "robustness": lambda: section_robustness(prof, work, missing),
        "spinnaker": lambda: section_spinnaker(prof, work),
        "hahn": lambda: section_hahn(prof, work),
    }
    for name in SECTIONS:
        if name not in args.only:
            continue
        log(f"section {name}")
        t0 = time.perf_counter()
        try:
            results[name] = runners[name]()
            if name == "matrix" and earlier_matrix and set(args.backends) != set(BACKENDS):
                results[name] = merge_matrix(earlier_matrix, results[name], args.backends, results["started"],
                                             earlier_matrix_run)
        except Exception as exc:  # recorded in the report, exit code 1
            results["errors"][name] = f"{type(exc).__name__}: {exc}"[:1000]
            log(f"section {name} FAILED: {exc}")
            traceback.print_exc()
        results["section_wall_s"][name] = round(time.perf_counter() - t0, 1)
        results["wall_s"] = round(sum(results["section_wall_s"].values()), 1)
        jpath.write_text(json.dumps(results, indent=2, default=float))
    write_reports(results, out, docs=ROOT / "docs" if args.docs else None)
    cell_errors = [c for c in results.get("matrix", {}).get("cells", []) if "error" in c]
    log(f"done in {results['wall_s']:.0f} s; wrote {jpath}, {out / 'results.md'}"
        + (" and docs/RESULTS.md" if args.docs else ""))
    return 1 if results["errors"] or cell_errors else 0


if __name__ == "__main__":
    raise SystemExit(cli_entry(main)())

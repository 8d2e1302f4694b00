"""One cell of the agreement matrix: one backend, one graph, one observation set, own process.

``benchmarks/run_all.py`` starts this once per (backend, model, task) so that the build time
and the peak memory it reports belong to that backend alone. The observations are presented
one per call, as the closed loop does, and every figure comes from what the backend returned:

- agreement with the float64 reference readout (actions, ``q_abs_err``, spike counts),
- the per-step split ``set_input`` / ``simulate`` / ``read_out`` (the backend's own
  ``Readout.timings``) and ``wall_per_step`` (the whole ``run`` call),
- build seconds, RSS before the build, peak RSS of this process and of its children
  (Lava runs its process models in child processes),
- synaptic operations per observation from the backend's spike counts (benchmarks.energy).

    python benchmarks/backend_cell.py --target nest --graph g.nir --obs obs.npy \
        --reference ref.npz --out cell.json [--options '{"threads": 1}']

Targets come from backends.REGISTRY, including its hidden benchmark columns: ``lava-fixed-w16``
is ``lava-fixed`` with weight splitting (``weight_bits=16``), and ``spinnaker-fixedpoint`` is
the numpy emulation of sPyNNaker's fixed-point arithmetic (backends.pynn.fixedpoint): without a
board, that is how the SpiNNaker column is filled; the board itself is exercised by hw_tests/.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends.base import Readout  # noqa: E402

TIMING_KEYS = ("set_input", "simulate", "read_out")


def status_mb(key: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in MB. VmHWM belongs to this process
    image alone; ``getrusage``'s ru_maxrss would carry the parent's peak across fork+exec."""
    with open(f"/proc/{os.getpid()}/status") as fh:
        for line in fh:
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb() -> float:
    return status_mb("VmRSS")


def build_backend(target: str, graph: Any, options: dict[str, Any]) -> Any:
    """Any registry entry, the benchmark-only (hidden) columns included."""
    from backends import REGISTRY
    from pipeline.errors import check_choice

    return REGISTRY[check_choice("target", target, REGISTRY)].build(graph, **options)


def compare(readout: Readout, ref: Readout) -> dict[str, Any]:
    """Agreement figures of ``readout`` against the float64 reference on the same observations."""
    dq = np.abs(readout.q - ref.q)
    scale = max(float(np.abs(ref.q).max()), 1e-300)
    n = len(ref.action)
    same = np.ones(n, bool)
    for name, counts in ref.spikes.items():
        if name in readout.spikes:
            same &= (readout.spikes[name].reshape(n, -1) == counts.reshape(n, -1)).all(axis=1)
        else:
            same[:] = False
    return {
        "n": n,
        "agreement": float(np.mean(readout.action == ref.action)),
        "q_abs_err_max": float(dq.max()),
        "q_abs_err_mean": float(dq.mean()),
        "q_rel_err_max": float(dq.max() / scale),
        "spike_counts_equal": float(same.mean()),
    }


def run_cell(target: str, graph_path: Path, obs: np.ndarray, ref: Readout,
             options: dict[str, Any]) -> dict[str, Any]:
    import nir

    from benchmarks.energy import (ann_energy_pj, ann_macs, hardware_energy_pj, load_plan, snn_energy_pj,
                                   sops_per_observation)

    graph = nir.read(str(graph_path))
    rss0 = rss_mb()
    t0 = time.perf_counter()
    backend = build_backend(target, graph, options)
    build_s = time.perf_counter() - t0
    rss_built = rss_mb()
    q, action, walls, rows = [], [], [], []
    spikes: dict[str, list[np.ndarray]] = {}
    for x in obs:
        t1 = time.perf_counter()
        r = backend.run(x[None])
        walls.append(time.perf_counter() - t1)
        rows.append({k: float(r.timings.get(k, float("nan"))) for k in TIMING_KEYS})
        q.append(r.q[0])
        action.append(int(r.action[0]))
        for k, v in r.spikes.items():
            spikes.setdefault(k, []).append(v[0])
    backend.close()
    readout = Readout(q=np.stack(q), action=np.asarray(action),
                      spikes={k: np.stack(v) for k, v in spikes.items()})
    out: dict[str, Any] = {"target": target, "options": options, **compare(readout, ref)}
    med = {k: statistics.median(r[k] for r in rows) for k in TIMING_KEYS}
    out["timing_ms"] = {
        **{f"{k}_median": 1e3 * v for k, v in med.items()},
        "sim_per_step_median": 1e3 * med["simulate"],
        "wall_per_step_median": 1e3 * statistics.median(walls),
        "wall_per_step_mean": 1e3 * statistics.fmean(walls),
    }
    sim = sum(r["simulate"] for r in rows)
    out["timing_ms"]["wall_over_simulate"] = sum(walls) / sim if sim > 0 else None
    out["build_s"] = build_s
    out["rss_before_build_mb"] = rss0
    out["rss_after_build_mb"] = rss_built
    out["peak_rss_mb"] = status_mb("VmHWM")
    # the largest finished child (Lava's process models); a forked child's figure starts at
    # this process's RSS at fork time, so it over- rather than under-states
    out["peak_rss_children_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    plan = load_plan(graph)
    work = sops_per_observation(plan, readout, obs=obs)
    ann = ann_macs(plan)
    out["work"] = work.to_dict()
    # docs/DESIGN.md "Metrics" names, beside the detailed figures above
    out["sops"] = work.total_sops
    out["wall_per_step"] = statistics.fmean(walls)  # seconds, as the bridge records it
    out["sim_per_step"] = sim / len(rows)
    out["energy_pj"] = {"snn_45nm": snn_energy_pj(work), "same_arch_dqn_45nm": ann_energy_pj(ann),
                        "dqn_macs": ann.macs, **hardware_energy_pj(work)}
    out["energy_est"] = {"pj": out["energy_pj"]["snn_45nm"], "model": "45nm-fp32 (benchmarks/energy.py)"}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", required=True)
    p.add_argument("--graph", required=True)
    p.add_argument("--obs", required=True, help="preprocessed observations [N, *obs_shape] (.npy)")
    p.add_argument("--reference", required=True, help="float64 reference Readout (.npz)")
    p.add_argument("--options", default="{}", help="backend options as JSON")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    obs = np.load(args.obs)
    ref = Readout.load(args.reference)
    result = run_cell(args.target, Path(args.graph), obs, ref, json.loads(args.options))
    Path(args.out).write_text(json.dumps(result, indent=2, default=float))
    return 0


if __name__ == "__main__":
    from pipeline.cli import cli_entry

    raise SystemExit(cli_entry(main)())

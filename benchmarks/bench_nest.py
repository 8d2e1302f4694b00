"""NEST backend figures: agreement with the reference, speed split, build and memory.

(a) CartPole, trained checkpoints (default: the bundled Liu DSQN and IF-DSQN with soft reset,
    examples/cartpole_dsqn.pt and examples/cartpole_if_dsqn.pt; ``--cartpole-ckpt`` others): episodes of
    CartPole-v1 with the NEST backend acting, one observation per call as in the closed loop;
    the reference (float64) runs on the same recorded observations: action agreement,
    max |dQ| / max |Q|, observations whose per-layer spike counts are all equal; then the
    same seeds with the reference acting, to compare the returns. RSS across the run (a
    growing e-prop history would show here).
(b) Nature-CNN DSQN, T 64, random weights (exporters.zoo), on real ALE Pong frames
    (AtariPreprocessing + 4-frame stack, random policy, scaled by 1/255): the same agreement
    figures and the per-step timing split.
(c) Timing split set_input / simulate / read_out per observation, the whole step relative to
    the bare ``nest.Simulate`` of that step, build time, RSS before and after the build and
    the process peak, 1 vs 2 threads, for the MLP and the Nature CNN.

    python benchmarks/bench_nest.py [--cartpole-obs 2000] [--atari-obs 200] [--cartpole-ckpt my.pt] [--json out.json]

Heavy part: (b) simulates ~1.5 s per frame on one core. The machine is shared: timings are
what it measured, not a property of NEST.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends.nest import NestBackend  # noqa: E402
from benchmarks.checkpoints import require_checkpoint  # noqa: E402
from backends.reference import ReferenceBackend  # noqa: E402
from exporters.to_nir import model_to_nir  # noqa: E402
from exporters.zoo import make_checkpoint  # noqa: E402
from pipeline.checkpoint import load_checkpoint  # noqa: E402
from pipeline.cli import cli_entry  # noqa: E402
from pipeline.envs import make_env, preprocess, random_policy_observations  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# the bundled CartPole agents (examples/README.md); --cartpole-ckpt names others
CHECKPOINTS = ("examples/cartpole_dsqn.pt", "examples/cartpole_if_dsqn.pt")
MB = 2.0 ** 20


def rss() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / MB
    return float("nan")


def peak_rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def agreement(q: np.ndarray, act: np.ndarray, spikes: dict[str, np.ndarray], ref: Any) -> dict[str, Any]:
    dq = np.abs(q - ref.q)
    per_obs = dq.max(axis=1) / np.maximum(np.abs(ref.q).max(axis=1), 1e-300)
    same = np.ones(len(act), bool)
    for k, v in ref.spikes.items():
        same &= (spikes[k].reshape(len(act), -1) == v.reshape(len(act), -1)).all(axis=1)
    top2 = np.sort(ref.q, axis=1)[:, -2:]
    return {
        "n": int(len(act)),
        "actions_agree": float(np.mean(act == ref.action)),
        "max_dq_over_max_q": float(dq.max() / max(np.abs(ref.q).max(), 1e-300)),
        "max_dq_over_max_q_per_obs": float(per_obs.max()),
        "spike_counts_equal": float(same.mean()),
        "action_histogram": np.bincount(ref.action, minlength=ref.q.shape[1]).tolist(),
        "min_top2_gap": float((top2[:, 1] - top2[:, 0]).min()),
        "spikes_per_obs": {k: float(v.reshape(len(act), -1).sum(axis=1).mean()) for k, v in ref.spikes.items()},
    }


def timing_summary(rows: list[dict[str, float]], steps: int, T: int) -> dict[str, Any]:
    keys = ("set_input", "simulate", "read_out")
    mean = {k: statistics.fmean(r[k] for r in rows) for k in keys}
    med = {k: statistics.median(r[k] for r in rows) for k in keys}
    whole = [sum(r[k] for k in keys) for r in rows]
    ratio = [w / r["simulate"] for w, r in zip(whole, rows)]
    return {"n": len(rows), "mean_ms": {k: 1e3 * v for k, v in mean.items()},
            "median_ms": {k: 1e3 * v for k, v in med.items()},
            "whole_step_mean_ms": 1e3 * statistics.fmean(whole),
            "whole_over_simulate_mean": sum(whole) / sum(r["simulate"] for r in rows),
            "whole_over_simulate_median": statistics.median(ratio),
            "simulated_steps_per_obs": steps, "time_steps": T}


def run_one(backend: NestBackend, x: np.ndarray) -> tuple[Any, dict[str, float], float]:
    t0 = time.perf_counter()
    r = backend.run(x[None])
    return r, r.timings, time.perf_counter() - t0


# ---------------------------------------------------------------- (a) CartPole


def cartpole(name: str, path: Path, n_obs: int, timing_obs: int) -> dict[str, Any]:
    ckpt = load_checkpoint(path)
    graph = model_to_nir(ckpt)
    rss0 = rss()
    backend = NestBackend(graph, threads=1)
    build = {"build_s": backend.build_seconds, "rss_before_mb": rss0, "rss_after_mb": rss(),
             "synapses": backend.n_synapses, "cycle_steps": backend.cycle}
    env = make_env("CartPole-v1")
    obs_rec, q, act, rows, returns, walls = [], [], [], [], [], []
    spikes: dict[str, list[np.ndarray]] = {}
    seed = 0
    rss_loop = [rss()]
    while len(obs_rec) < n_obs:
        raw, _ = env.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            x = preprocess(raw[None], ckpt.preprocessing)[0]
            r, t, wall = run_one(backend, x)
            obs_rec.append(x)
            q.append(r.q[0])
            act.append(int(r.action[0]))
            rows.append(t)
            walls.append(wall)
            for k, v in r.spikes.items():
                spikes.setdefault(k, []).append(v[0])
            raw, rew, term, trunc, _ = env.step(int(r.action[0]))
            total += float(rew)
            done = term or trunc
            if len(obs_rec) % 500 == 0:
                rss_loop.append(rss())
        returns.append(total)
        seed += 1
        print(f"  {name}: episode {seed} return {total:.0f} ({len(obs_rec)} steps so far)", flush=True)
    rss_loop.append(rss())
    backend.close()
    obs_arr = np.stack(obs_rec)
    ref = ReferenceBackend(graph, dtype="float64").run(obs_arr)
    agree = agreement(np.stack(q), np.array(act), {k: np.stack(v) for k, v in spikes.items()}, ref)
    # the same seeds with the reference acting
    ref_backend = ReferenceBackend(graph, dtype="float64")
    ref_returns = []
    for s in range(seed):
        raw, _ = env.reset(seed=s)
        total, done = 0.0, False
        while not done:
            a = int(ref_backend.run(preprocess(raw[None], ckpt.preprocessing)).action[0])
            raw, rew, term, trunc, _ = env.step(a)
            total += float(rew)
            done = term or trunc
        ref_returns.append(total)
    env.close()
    out = {"checkpoint": path, "variant": ckpt.spec.variant, "time_steps": ckpt.spec.time_steps,
           "neuron": f"{ckpt.spec.neuron.model} {ckpt.spec.neuron.reset}" if ckpt.spec.neuron else None,
           "readout": ckpt.spec.readout, **build, "agreement": agree,
           "returns_nest": returns, "returns_reference": ref_returns,
           "returns_equal": returns == ref_returns,
           "timing_1_thread": timing_summary(rows, build["cycle_steps"], ckpt.spec.time_steps),
           "closed_loop_call_ms_mean": 1e3 * statistics.fmean(walls),
           "rss_during_run_mb": rss_loop}
    # 2 threads: timing on the first recorded observations
    backend = NestBackend(graph, threads=2)
    rows2 = [run_one(backend, x)[1] for x in obs_arr[:timing_obs]]
    r2 = backend.run(obs_arr[:timing_obs])
    backend.close()
    out["timing_2_threads"] = timing_summary(rows2, build["cycle_steps"], ckpt.spec.time_steps)
    out["agreement_2_threads_actions"] = float(np.mean(r2.action == ref.action[:timing_obs]))
    return out


# ---------------------------------------------------------------- (b) Nature CNN on Pong frames


def pong_frames(n: int, seed: int = 0) -> np.ndarray:
    """Preprocessed (4, 84, 84) Pong observations from a random policy, scaled by 1/255."""
    return random_policy_observations("ALE/Pong-v5", n, seed).astype(np.float32) / 255.0


def atari(n_obs: int, timing_obs: int, T: int) -> dict[str, Any]:
    frames = pong_frames(n_obs)
    ckpt = make_checkpoint("liu", arch="nature_cnn", obs_shape=(4, 84, 84), n_actions=6, time_steps=T, seed=0)
    graph = model_to_nir(ckpt)
    out: dict[str, Any] = {"model": "Liu DSQN (LIF tau 2, hard reset, rate readout), Nature CNN, random weights "
                                    "(exporters.zoo gain 8)", "frames": "ALE/Pong-v5, random policy",
                           "time_steps": T}
    for threads, count in ((1, n_obs), (2, timing_obs)):
        rss0, peak0 = rss(), peak_rss()
        backend = NestBackend(graph, threads=threads)
        info = {"build_s": backend.build_seconds, "rss_before_build_mb": rss0, "rss_after_build_mb": rss(),
                "peak_rss_mb": peak_rss(), "peak_rss_before_mb": peak0, "synapses": backend.n_synapses,
                "memory_estimate_mb": backend.memory.bytes / MB, "cycle_steps": backend.cycle}
        rows, q, act, spikes = [], [], [], {}
        for i in range(count):
            r, t, _ = run_one(backend, frames[i])
            rows.append(t)
            q.append(r.q[0])
            act.append(int(r.action[0]))
            for k, v in r.spikes.items():
                spikes.setdefault(k, []).append(v[0])
            if (i + 1) % 25 == 0:
                print(f"  nature cnn, {threads} thread(s): {i + 1}/{count} frames, "
                      f"{1e3 * statistics.fmean(x['simulate'] for x in rows):.0f} ms simulate/frame", flush=True)
        backend.close()
        info["timing"] = timing_summary(rows, info["cycle_steps"], T)
        info["_q"], info["_act"], info["_spikes"] = np.stack(q), np.array(act), {k: np.stack(v) for k, v in
                                                                             spikes.items()}
        out[f"threads_{threads}"] = info
    ref = ReferenceBackend(graph, dtype="float64").run(frames)
    for threads in (1, 2):
        info = out[f"threads_{threads}"]
        n = len(info["_act"])
        sub = type(ref)(q=ref.q[:n], action=ref.action[:n], spikes={k: v[:n] for k, v in ref.spikes.items()})
        info["agreement"] = agreement(info.pop("_q"), info.pop("_act"), info.pop("_spikes"), sub)
    return out


# ---------------------------------------------------------------- report


def table(results: dict[str, Any]) -> None:
    print("\nagreement NEST vs reference (float64)")
    print(f"  {'case':<28}{'obs':>6}{'actions':>10}{'max|dQ|/max|Q|':>17}{'spikes equal':>14}"
          f"{'returns equal':>15}")
    rows = []
    for name, r in results.get("cartpole", {}).items():
        rows.append((name, r["agreement"], str(r["returns_equal"])))
    for th in ("threads_1", "threads_2"):
        if "atari" in results:
            rows.append((f"nature cnn T64 {th}", results["atari"][th]["agreement"], "-"))
    for name, a, ret in rows:
        print(f"  {name:<28}{a['n']:>6}{100 * a['actions_agree']:>9.2f}%{a['max_dq_over_max_q']:>17.2e}"
              f"{100 * a['spike_counts_equal']:>13.2f}%{ret:>15}")
    print("\nper observation (ms, mean): set_input / simulate / read_out; ratio = whole step / simulate;"
          " steps simulated per observation; build s; RSS growth of the build; process peak RSS")
    trows = []
    for name, r in results.get("cartpole", {}).items():
        trows.append((f"{name} 1 thread", r["timing_1_thread"], r["build_s"], r["rss_after_mb"] - r["rss_before_mb"],
                      None))
        trows.append((f"{name} 2 threads", r["timing_2_threads"], None, None, None))
    if "atari" in results:
        for th in ("threads_1", "threads_2"):
            i = results["atari"][th]
            trows.append((f"nature cnn T64 {th.replace('_', ' ')}", i["timing"], i["build_s"],
                          i["rss_after_build_mb"] - i["rss_before_build_mb"], i["peak_rss_mb"]))
    print(f"  {'case':<32}{'set_input':>10}{'simulate':>10}{'read_out':>10}{'ratio':>8}{'steps':>7}"
          f"{'build s':>9}{'dRSS MB':>9}{'peak MB':>9}")
    for name, t, b, m, pk in trows:
        ms = t["mean_ms"]
        print(f"  {name:<32}{ms['set_input']:>10.2f}{ms['simulate']:>10.2f}{ms['read_out']:>10.2f}"
              f"{t['whole_over_simulate_mean']:>8.3f}{t['simulated_steps_per_obs']:>7}"
              f"{'' if b is None else f'{b:.2f}':>9}{'' if m is None else f'{m:.0f}':>9}"
              f"{'' if pk is None else f'{pk:.0f}':>9}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cartpole-obs", type=int, default=2000)
    p.add_argument("--mlp-threads-obs", type=int, default=300, help="observations timed with 2 threads (MLP)")
    p.add_argument("--atari-obs", type=int, default=200)
    p.add_argument("--atari-threads-obs", type=int, default=20, help="frames timed with 2 threads (CNN)")
    p.add_argument("--time-steps", type=int, default=64)
    p.add_argument("--cartpole-ckpt", action="append", metavar="PATH",
                   help="CartPole checkpoint (repeatable; default examples/cartpole_dsqn.pt and "
                        "examples/cartpole_if_dsqn.pt)")
    p.add_argument("--skip-cartpole", action="store_true")
    p.add_argument("--skip-atari", action="store_true")
    p.add_argument("--json")
    args = p.parse_args(argv)
    ckpts = [] if args.skip_cartpole else [require_checkpoint(c, "--cartpole-ckpt")
                                           for c in args.cartpole_ckpt or CHECKPOINTS]
    from backends.nest.kernel import import_nest

    nest = import_nest()
    results: dict[str, Any] = {"machine": {"python": platform.python_version(), "nest": nest.__version__,
                                           "cpus": os.cpu_count(), "load_avg_start": os.getloadavg()}}
    t0 = time.perf_counter()
    if not args.skip_atari:  # first, so the build's peak memory is not someone else's
        print("Nature CNN on Pong frames", flush=True)
        results["atari"] = atari(args.atari_obs, args.atari_threads_obs, args.time_steps)
    if not args.skip_cartpole:
        results["cartpole"] = {}
        for path in ckpts:
            print(f"CartPole: {path.stem}", flush=True)
            results["cartpole"][path.stem] = cartpole(path.stem, path, args.cartpole_obs, args.mlp_threads_obs)
    results["machine"]["load_avg_end"] = os.getloadavg()
    results["wall_s"] = time.perf_counter() - t0
    table(results)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_entry(main)())

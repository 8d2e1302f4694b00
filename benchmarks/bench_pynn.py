"""PyNN backends: pyNN.nest against the float64 reference, its speed against the direct NEST
backend, and sPyNNaker's virtual-board mapping.

  nice -n 5 .venv/bin/python benchmarks/bench_pynn.py --json out/bench_pynn.json

(a) CartPole, closed loop with pyNN.nest acting, >= 2,000 steps of the trained DSQN
    (default: the bundled examples/cartpole_dsqn.pt; ``--cartpole-ckpt`` another): actions, Q and spike
    counts against ReferenceBackend(float64) on the same observations; per-step time of
    pyNN.nest and of the direct NEST backend on the same observations; the sPyNNaker
    fixed-point emulation's agreement (what SpiNNaker is expected to deviate).
(b) Nature-CNN DSQN (exporters.zoo, random weights, LIF hard reset, T 64) on Pong frames
    (ALE/Pong-v5, random policy, scaled 1/255; random frames if ale-py is missing): build time
    of pyNN.nest (goal <= 15 s) and of direct NEST, agreement over >= 200 frames, per-step time
    of both in the same run.
(c) sPyNNaker on a virtual board: mapping time, chips, cores and routing entries for both
    networks; the ConvolutionConnector check for the Nature CNN's strided layers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends.nest import NestBackend  # noqa: E402
from backends.pynn.fixedpoint import FixedPointSpiNNaker  # noqa: E402
from backends.pynn.nest_sim import PyNNNestBackend  # noqa: E402
from backends.reference import ReferenceBackend  # noqa: E402
from benchmarks.checkpoints import require_checkpoint  # noqa: E402
from exporters.to_nir import model_to_nir  # noqa: E402
from exporters.zoo import atari_obs, make_checkpoint  # noqa: E402
from pipeline.checkpoint import load_checkpoint  # noqa: E402
from pipeline.cli import cli_entry  # noqa: E402
from pipeline.envs import make_env, preprocess, random_policy_observations  # noqa: E402

CARTPOLE = "examples/cartpole_dsqn.pt"  # the bundled CartPole DSQN (examples/README.md)


def compare(q: np.ndarray, act: np.ndarray, spikes: dict[str, np.ndarray], ref: Any) -> dict[str, Any]:
    """Actions equal, |dQ| / max|Q|, observations whose spike counts equal in every layer."""
    same = np.ones(len(act), bool)
    for k, v in ref.spikes.items():
        same &= (spikes[k].reshape(len(act), -1) == v.reshape(len(act), -1)).all(axis=1)
    dev = {k: float(np.abs(spikes[k] - v).sum() / max(int(v.sum()), 1)) for k, v in ref.spikes.items()}
    return {"n": int(len(act)), "actions_equal": float(np.mean(act == ref.action)),
            "q_rel_err": float(np.abs(q - ref.q).max() / max(np.abs(ref.q).max(), 1e-12)),
            "spikes_equal": float(same.mean()), "spike_count_rel_dev": dev}


def per_step(timings: list[dict[str, float]]) -> dict[str, float]:
    keys = ("set_input", "simulate", "read_out")
    out = {k: 1e3 * statistics.fmean(t[k] for t in timings) for k in keys}
    out["total"] = sum(out[k] for k in keys)
    return out


def step_times(backend: Any, obs: np.ndarray) -> list[dict[str, float]]:
    """One observation per call, as the closed loop calls a backend."""
    return [backend.run(x[None]).timings for x in obs]


def alternate(graph: Any, obs: np.ndarray, rounds: int, label: str) -> dict[str, Any]:
    """NEST and pyNN.nest alternate (build, then the same observations one per call) so that both
    see the same load from other jobs on this shared machine; medians over the rounds."""
    blocks: dict[str, list[dict[str, Any]]] = {"nest": [], "pynn": []}
    for r in range(rounds):
        for name, cls in (("nest", NestBackend), ("pynn", PyNNNestBackend)):
            backend = cls(graph)
            times = step_times(backend, obs)
            blocks[name].append({"build_s": backend.build_seconds, "ms_per_step": per_step(times)})
            backend.close()
            print(f"  {label} timing round {r + 1}/{rounds} {name}: build {blocks[name][-1]['build_s']:.1f} s, "
                  f"{blocks[name][-1]['ms_per_step']['total']:.2f} ms/step", flush=True)
    out: dict[str, Any] = {}
    for name in ("nest", "pynn"):
        out[f"{name}_build_s_median"] = statistics.median(b["build_s"] for b in blocks[name])
        out[f"{name}_ms_per_step"] = {k: statistics.median(b["ms_per_step"][k] for b in blocks[name])
                                      for k in blocks[name][0]["ms_per_step"]}
        out[f"{name}_rounds"] = blocks[name]
    out["pynn_over_nest"] = out["pynn_ms_per_step"]["total"] / out["nest_ms_per_step"]["total"]
    return out


def cartpole(path: Path, n_obs: int, nest_obs: int, rounds: int) -> dict[str, Any]:
    ckpt = load_checkpoint(path)
    graph = model_to_nir(ckpt)
    backend = PyNNNestBackend(graph)
    out: dict[str, Any] = {"checkpoint": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
                           "time_steps": ckpt.spec.time_steps,
                           "readout": ckpt.spec.readout, "pynn_build_s": backend.build_seconds,
                           "synapses": backend.n_synapses}
    env = make_env("CartPole-v1")
    obs, q, act, times, returns = [], [], [], [], []
    spikes: dict[str, list[np.ndarray]] = {}
    seed = 0
    while len(obs) < n_obs:
        raw, _ = env.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            x = preprocess(raw[None], ckpt.preprocessing)[0]
            r = backend.run(x[None])
            obs.append(x)
            q.append(r.q[0])
            act.append(int(r.action[0]))
            times.append(r.timings)
            for k, v in r.spikes.items():
                spikes.setdefault(k, []).append(v[0])
            raw, rew, term, trunc, _ = env.step(int(r.action[0]))
            total += float(rew)
            done = term or trunc
        returns.append(total)
        seed += 1
        print(f"  cartpole pyNN.nest: episode {seed} return {total:.0f} ({len(obs)} steps)", flush=True)
    env.close()
    backend.close()
    x = np.stack(obs)
    ref = ReferenceBackend(graph, dtype="float64").run(x)
    out.update(steps=len(obs), returns=returns,
               agreement=compare(np.stack(q), np.array(act), {k: np.stack(v) for k, v in spikes.items()}, ref),
               pynn_ms_per_step_closed_loop=per_step(times))
    out.update(alternate(graph, x[:nest_obs], rounds, "cartpole"))
    out["pynn_build_s"] = out.pop("pynn_build_s_median")
    out["nest_build_s"] = out.pop("nest_build_s_median")
    fx = FixedPointSpiNNaker(graph).run(x)
    out["spinnaker_fixedpoint"] = compare(fx.q, fx.action, fx.spikes, ref)
    return out


def pong_frames(n: int, seed: int = 0) -> tuple[np.ndarray, str]:
    try:
        env = make_env("ALE/Pong-v5")
    except Exception as exc:  # ale-py missing or no ROM: random frames instead
        print(f"  no Pong ({str(exc).splitlines()[0][:80]}): random frames", flush=True)
        return atari_obs(n, seed=seed).numpy(), "random frames (exporters.zoo.atari_obs)"
    env.close()
    frames = random_policy_observations("ALE/Pong-v5", n, seed).astype(np.float32) / 255.0
    return frames, "ALE/Pong-v5, random policy, 1/255"


def atari(n_obs: int, nest_obs: int, fx_obs: int, T: int, rounds: int) -> dict[str, Any]:
    frames, source = pong_frames(n_obs)
    graph = model_to_nir(make_checkpoint("liu", arch="nature_cnn", obs_shape=(4, 84, 84), n_actions=6,
                                         time_steps=T, seed=0))
    out: dict[str, Any] = {"model": "Liu DSQN, Nature CNN, LIF tau 2 hard reset, rate readout, random weights "
                                    "(exporters.zoo)", "frames": source, "time_steps": T}
    out.update(alternate(graph, frames[:nest_obs], rounds, "nature cnn"))
    out["pynn_build_s"] = out.pop("pynn_build_s_median")
    out["nest_build_s"] = out.pop("nest_build_s_median")
    # agreement: every frame through pyNN.nest against the float64 reference
    backend = PyNNNestBackend(graph)
    out["synapses"] = backend.n_synapses
    q, act, spikes = [], [], {}
    for i, x in enumerate(frames):
        r = backend.run(x[None])
        q.append(r.q[0])
        act.append(int(r.action[0]))
        for k, v in r.spikes.items():
            spikes.setdefault(k, []).append(v[0])
        if (i + 1) % 50 == 0:
            print(f"  nature cnn pyNN.nest: {i + 1}/{len(frames)} frames", flush=True)
    backend.close()
    ref = ReferenceBackend(graph, dtype="float64").run(frames)
    out["agreement"] = compare(np.stack(q), np.array(act), {k: np.stack(v) for k, v in spikes.items()}, ref)
    if fx_obs:
        t0 = time.perf_counter()
        fx = FixedPointSpiNNaker(graph).run(frames[:fx_obs])
        sub = type(ref)(q=ref.q[:fx_obs], action=ref.action[:fx_obs],
                        spikes={k: v[:fx_obs] for k, v in ref.spikes.items()})
        out["spinnaker_fixedpoint"] = compare(fx.q, fx.action, fx.spikes, sub)
        out["spinnaker_fixedpoint"]["seconds"] = time.perf_counter() - t0
    return out


def spinnaker_virtual(path: Path, T: int, cnn: bool = True) -> dict[str, Any]:
    from backends.pynn.convolution import check_on_virtual_board
    from backends.pynn.spinnaker import PyNNSpiNNakerBackend

    os.environ["SPINNAKER_VIRTUAL"] = "1"
    nets = {"cartpole_mlp": model_to_nir(load_checkpoint(path)),
            "nature_cnn": model_to_nir(make_checkpoint("liu", arch="nature_cnn", obs_shape=(4, 84, 84), n_actions=6,
                                                       time_steps=T, seed=0))}
    if not cnn:
        del nets["nature_cnn"]
    out: dict[str, Any] = {}
    for name, graph in nets.items():
        with tempfile.TemporaryDirectory(prefix=f"spin-{name}-") as tmp:
            t0 = time.perf_counter()
            b = PyNNSpiNNakerBackend(graph, workdir=Path(tmp) / "run")
            total = time.perf_counter() - t0
            res = dict(b.resources, wall_s=total, neurons_per_core={p.name: p.max_atoms for p in b.spin.pops},
                       projections=len(b.spin.projections),
                       synapses=int(sum(p["pre"].size for p in b.spin.projections)))
            b.close()
        out[name] = res
        print(f"  sPyNNaker virtual board, {name}: {res['chips']} chips, {res['cores']} cores, "
              f"{res['routing_entries']} routing entries, mapping {res['map_seconds']:.1f} s", flush=True)
    rng = np.random.default_rng(0)
    cases = [{"in": n, "weight": rng.normal(size=(k, k)).round(4).tolist(), "stride": [s, s], "padding": [0, 0]}
             for n, k, s in ((20, 4, 2), (9, 3, 1))]
    with tempfile.TemporaryDirectory(prefix="spin-conv-") as tmp:
        out["convolution_connector"] = check_on_virtual_board(cases, tmp)
    return out


def table(res: dict[str, Any]) -> None:
    print("\npyNN.nest vs reference (float64)")
    print(f"  {'case':<14}{'obs':>6}{'actions':>10}{'max|dQ|/max|Q|':>17}{'spikes equal':>14}")
    for name in ("cartpole", "atari"):
        if name in res:
            a = res[name]["agreement"]
            print(f"  {name:<14}{a['n']:>6}{100 * a['actions_equal']:>9.2f}%{a['q_rel_err']:>17.2e}"
                  f"{100 * a['spikes_equal']:>13.2f}%")
    print("\nper step (ms, set_input + simulate + read_out) and build (s): medians of alternating NEST / pyNN.nest "
          "rounds on the same observations")
    print(f"  {'case':<14}{'pyNN.nest':>11}{'NEST':>10}{'ratio':>8}{'build pyNN':>12}{'build NEST':>12}")
    for name in ("cartpole", "atari"):
        if name in res:
            r = res[name]
            p = r["pynn_ms_per_step"]["total"]
            print(f"  {name:<14}{p:>11.2f}{r['nest_ms_per_step']['total']:>10.2f}{r['pynn_over_nest']:>8.2f}"
                  f"{r['pynn_build_s']:>12.2f}{r['nest_build_s']:>12.2f}")
    print("\nsPyNNaker fixed-point emulation vs reference (expected SpiNNaker deviation)")
    for name in ("cartpole", "atari"):
        if name in res and "spinnaker_fixedpoint" in res[name]:
            f = res[name]["spinnaker_fixedpoint"]
            dev = ", ".join(f"{k} {100 * v:.2f}%" for k, v in f["spike_count_rel_dev"].items())
            print(f"  {name:<14}{f['n']:>6} obs  actions {100 * f['actions_equal']:.2f}%  spike-count deviation {dev}")
    if "spinnaker" in res:
        print("\nsPyNNaker virtual board (mapping only)")
        for name, r in res["spinnaker"].items():
            if name == "convolution_connector":
                continue
            print(f"  {name:<14}{r['chips']:>4} chips {r['cores']:>5} cores {r['routing_entries']:>6} routing entries"
                  f"  mapping {r['map_seconds']:.1f} s (wall {r['wall_s']:.1f} s), {r['synapses']:,} synapses")
        for c in res["spinnaker"].get("convolution_connector", []):
            print(f"  ConvolutionConnector {c['in'][0]}x{c['in'][0]} k{c['kernel'][0]} s{c['stride'][0]}: torch "
                  f"{c['torch_out']}, sPyNNaker as given {c['naive_connector_out']}, with connector_args "
                  f"{c['connector_out']}; same synapses {c['same_synapses']}, |dw| <= {c['max_weight_err']:.2e} "
                  f"(quantum {c['weight_quantum']:.2e})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cartpole-ckpt", type=Path, default=Path(CARTPOLE),
                    help=f"the CartPole DSQN of (a) and (c) (default {CARTPOLE})")
    ap.add_argument("--cartpole-obs", type=int, default=2000)
    ap.add_argument("--atari-obs", type=int, default=200)
    ap.add_argument("--nest-obs", type=int, default=10, help="Atari frames per timing block (NEST and pyNN.nest)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating NEST / pyNN.nest timing blocks")
    ap.add_argument("--fixedpoint-obs", type=int, default=10, help="Atari frames through the fixed-point emulation")
    ap.add_argument("--time-steps", type=int, default=64)
    ap.add_argument("--skip", nargs="*", default=[], choices=["cartpole", "atari", "spinnaker"])
    ap.add_argument("--no-cnn-mapping", action="store_true", help="(c) maps the CartPole MLP only")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    needs_cartpole = "cartpole" not in args.skip or "spinnaker" not in args.skip
    ckpt = require_checkpoint(args.cartpole_ckpt, "--cartpole-ckpt") if needs_cartpole else args.cartpole_ckpt
    res: dict[str, Any] = {}
    t0 = time.perf_counter()
    if "cartpole" not in args.skip:
        print("(a) CartPole", flush=True)
        res["cartpole"] = cartpole(ckpt, args.cartpole_obs, nest_obs=500, rounds=args.rounds)
    if "atari" not in args.skip:
        print("(b) Nature CNN", flush=True)
        res["atari"] = atari(args.atari_obs, args.nest_obs, args.fixedpoint_obs, args.time_steps, args.rounds)
    if "spinnaker" not in args.skip:
        print("(c) sPyNNaker virtual board", flush=True)
        res["spinnaker"] = spinnaker_virtual(ckpt, args.time_steps, cnn=not args.no_cnn_mapping)
    res["seconds"] = time.perf_counter() - t0
    table(res)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_entry(main)())

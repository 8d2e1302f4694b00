"""Lava backend figures: agreement with the float64 reference, closed-loop return in
fixed point, per-step time against Lava's bare run time, build time and memory.

1. CartPole: each trained DSQN (default: the bundled examples/cartpole_dsqn.pt and
   examples/cartpole_if_dsqn.pt; ``--cartpole-ckpt`` others, a converted SNN works too) plays episodes with the
   reference until >= ``--cartpole-obs`` observations are recorded; ``lava`` (floating_pt),
   ``lava-fixed`` (fixed_pt, 8-bit weights) and ``lava-fixed`` with weight splitting
   (``weight_bits=16``) run all of them open loop: action agreement and max |dQ|/max|Q|, plus
   diagnostics that lift one remaining limit of the split mode at a time (the bias's 13-bit
   mantissa; the floored shift of the lo synapse set). Then ``--episodes`` closed-loop
   CartPole episodes on lava-fixed in both weight modes (return, agreement).
2. Atari: a Nature-CNN DSQN at T = 64 (random weights from exporters.zoo, scaled so that every
   layer spikes) on ``--atari-obs`` real Pong frames (random actions, 1/255), one observation per
   ``run`` call as in the closed loop; each precision stops after ``--atari-budget`` seconds and
   says how many it measured. Per-step time split set_input / simulate / read_out, against the
   bare ``RunSteps(T)`` of the same network free-running (no windows, resets, I/O).

    nice -n 5 python benchmarks/bench_lava.py [--json out/bench_lava.json]
    nice -n 5 python benchmarks/bench_lava.py --skip-atari --cartpole-ckpt examples/cartpole_dsqn.pt
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: benchmarks.* importable

import backends.lava.quantize as quantize
from backends.lava.backend import LavaBackend, default_input_bound
from backends.lava.lowering import lower
from backends.reference import ReferenceBackend
from benchmarks.checkpoints import require_checkpoint
from exporters.canonical import Plan, build_plan
from exporters.to_nir import model_to_nir
from exporters.zoo import atari_obs, make_checkpoint
from pipeline.bridge import ClosedLoop, GraphIO, LoopSettings
from pipeline.checkpoint import load_checkpoint
from pipeline.cli import cli_entry
from pipeline.encoding import encode_seeded
from pipeline.envs import make_env, preprocess


DEFAULT_CARTPOLE = [Path("examples/cartpole_dsqn.pt"), Path("examples/cartpole_if_dsqn.pt")]


class FreeRunningLava(LavaBackend):
    """The same network without observation windows (no resets, no records, input read once):
    the baseline for Lava's bare run time (:meth:`bare_run`); ``run`` is refused."""

    def _window_period(self) -> int:
        return 0

    def _check(self, obs: np.ndarray, input_spikes: np.ndarray | None) -> np.ndarray:
        super()._check(obs, input_spikes)
        raise RuntimeError("a free-running LavaBackend only measures bare_run()")

    def bare_run(self, obs: np.ndarray, steps: int) -> float:
        """Seconds of ``RunSteps(steps)`` (the input is sent once, before the first timing)."""
        obs = np.asarray(obs)[None] if np.asarray(obs).ndim == len(self.obs_shape) else np.asarray(obs)
        if not getattr(self, "_fed", False):
            spikes = None
            if self.series:
                spikes = encode_seeded(torch.as_tensor(obs[:1]), self.T, self.sem.encoding,
                                       self.sem.encoding_seed).numpy()
            payloads = self._host_values(obs[:1], spikes)
            for pop in self.host_pops:
                self.procs[pop.name].host_in.external_pipe_csp_send_port.send(payloads[pop.name][0])
            self._fed = True
        t0 = time.perf_counter()
        self._run_steps(steps)
        return time.perf_counter() - t0


def memory_mib() -> dict[str, float]:
    """Memory now (MiB): PSS of this process plus its live children (Lava's forked processes; PSS
    splits copy-on-write pages shared after the fork, so the sum is the real total), and this
    process's peak RSS (VmHWM)."""
    def field(path: Path, key: str) -> float:
        try:
            for line in path.read_text().splitlines():
                if line.startswith(key):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    me = os.getpid()
    kids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().split(") ")[1].split()[1]) == me:
                    kids.append(int(p.name))
            except (OSError, IndexError, ValueError):
                pass
    pss = [field(Path(f"/proc/{pid}/smaps_rollup"), "Pss:") for pid in [me, *kids]]
    return {"total_pss_mib": sum(pss), "host_pss_mib": pss[0], "lava_processes": len(kids),
            "host_peak_rss_mib": field(Path(f"/proc/{me}/status"), "VmHWM:")}


def compare(ref, got) -> dict[str, Any]:
    qmax = float(np.abs(ref.q).max())
    out = {"n": int(len(ref.action)), "agreement": float((ref.action == got.action).mean()),
           "q_rel_err": float(np.abs(got.q - ref.q).max() / max(qmax, 1e-300)),
           "spikes_equal": all(np.array_equal(ref.spikes[k], got.spikes[k]) for k in ref.spikes)}
    out["spike_count_rel_diff"] = {k: float(np.abs(got.spikes[k].sum() - v.sum()) / max(v.sum(), 1))
                                   for k, v in ref.spikes.items()}
    if ref.q.shape[1] > 1:  # the reference's Q gap where the actions differ: are they near-ties?
        qs = np.sort(ref.q, axis=1)
        gap = (qs[:, -1] - qs[:, -2]) / max(qmax, 1e-300)
        bad = ref.action != got.action
        out["disagreement_max_gap"] = float(gap[bad].max()) if bad.any() else 0.0
    return out


#: Split-mode diagnostics: quantiser constants patched while the backend is built (the
#: quantisation runs in the host process before Lava starts), each lifting one limit.
SPLIT_DIAGNOSTICS = {
    "fixed_split_bias_on_grid": (
        {"BIAS_MANT_MAX": quantize.STATE_MAX},
        "bias mantissa limit lifted to 24 bits (bias_exp 0: the bias only rounded to the state grid)"),
    "fixed_split_lo_exp_ge0": (
        {"WEIGHT_EXP": (0, quantize.WEIGHT_EXP[1])},
        "lo exponent >= 0 (lo step >= 1 state LSB: no floored right shift of the lo set)"),
}


def param_errors(backend: LavaBackend) -> dict[str, Any]:
    """The quantiser's per-layer errors of a fixed-point backend (bias/decay/threshold/weights)."""
    assert backend.quant is not None
    return {name: {"state_unit": fp.q,
                   "threshold_lsb": None if fp.threshold is None else int(fp.threshold.max()),
                   "bias_err_lsb": fp.errors.get("bias_abs_in_lsb", 0.0),
                   "bias_exp_max": int(fp.bias_exp.max(initial=0)) if fp.bias_exp is not None else 0,
                   "decay_abs": fp.errors.get("decay_abs"),
                   "weight_rel_max": fp.errors.get("weight_rel_max", 0.0),
                   "weight_rel_rms": fp.errors.get("weight_rel_rms", 0.0),
                   "weight_exp": {k: m.exp for k, m in fp.maps.items() if m.mant is not None},
                   "weight_exp_lo": {k: m.exp_lo for k, m in fp.maps.items() if m.lo is not None}}
            for name, fp in backend.quant.items()}


def fixed_params_plan(plan: Plan, layout: Any, quant: dict[str, Any], bias: bool) -> Plan | None:
    """``plan`` with lava-fixed's quantised weights (and, with ``bias``, biases) put back in
    float64, for the reference: separates parameter rounding from the integer arithmetic (state
    grid, floored shifts, decay truncation). Only for chains where every population reads one
    affine op (the CartPole MLPs); None otherwise."""
    p2 = copy.deepcopy(plan)
    by_name = {op.name: op for op in p2.ops}
    for name, pop in layout.pops.items():
        fp = quant[name]
        op = by_name[name]
        affine = op if pop.kind == "identity" else (by_name[op.inputs[0]] if len(op.inputs) == 1 else None)
        if affine is None or affine.kind != "affine" or len(fp.maps) != 1:
            return None
        fmap = next(iter(fp.maps.values()))
        if fmap.mant is None or np.any(fp.c == 0):
            return None
        w = np.asarray(affine.params["weight"], dtype=np.float64)
        new_w = fmap.lsb().toarray() * fp.q / fp.c[:, None]
        if new_w.shape != w.shape or np.abs(new_w - w).max() > 0.01 * np.abs(w).max():
            return None  # not the map this op defines
        affine.params["weight"] = new_w
        if bias:
            _, leak = quantize.input_scale(pop, pop.n)
            affine.params["bias"] = (fp.bias_total * fp.q - leak) / fp.c  # register + residual
    return p2


def run_fixed(plan: Plan, obs: np.ndarray, patch: dict[str, Any] | None = None,
              **kw: Any) -> tuple[Any, Any]:
    """lava-fixed on ``obs`` (``kw``: LavaBackend options); returns (readout, closed backend)."""
    if patch:
        with mock.patch.multiple(quantize, **patch):
            backend = LavaBackend(plan, precision="fixed_pt", batch_size=64, **kw)
    else:
        backend = LavaBackend(plan, precision="fixed_pt", batch_size=64, **kw)
    try:
        t0 = time.perf_counter()
        got = backend.run(obs)
        backend.wall_s = time.perf_counter() - t0
    finally:
        backend.close()
    return got, backend


def cartpole_observations(plan: Plan, n: int, seed: int) -> tuple[np.ndarray, list[float]]:
    """Observations of whole episodes played by the reference policy."""
    io = GraphIO.from_metadata(plan.metadata, plan.op(plan.input).out_shape, 2)
    ref = ReferenceBackend(plan, dtype="float64")
    env = make_env("CartPole-v1")
    obs, returns, ep = [], [], 0
    while len(obs) < n:
        o, _ = env.reset(seed=seed + ep)
        done, total = False, 0.0
        while not done:
            x = preprocess(o[None], io.preprocessing)
            obs.append(x[0])
            o, r, term, trunc, _ = env.step(int(ref.run(x).action[0]))
            total += r
            done = term or trunc
        returns.append(total)
        ep += 1
    env.close()
    return np.stack(obs).astype(np.float32), returns


def pong_frames(n: int, seed: int) -> tuple[np.ndarray, str]:
    try:
        env = make_env("ALE/Pong-v5")
    except Exception as exc:  # noqa: BLE001 - ALE missing: fall back to random frames
        return atari_obs(n, seed=seed).numpy(), f"random frames (ALE unavailable: {exc})"
    rng = np.random.default_rng(seed)
    frames = []
    o, _ = env.reset(seed=seed)
    while len(frames) < n:
        o, _, term, trunc, _ = env.step(int(rng.integers(env.action_space.n)))
        frames.append(np.asarray(o, dtype=np.float32) / 255.0)
        if term or trunc:
            o, _ = env.reset()
    env.close()
    return np.stack(frames), "ALE/Pong-v5 frames, random actions, scaled 1/255"


def merge(rows: list) -> Any:
    from backends.base import Readout

    return Readout(q=np.concatenate([r.q for r in rows]), action=np.concatenate([r.action for r in rows]),
                   spikes={k: np.concatenate([r.spikes[k] for r in rows]) for k in rows[0].spikes})


def rounded_weights(plan: Plan, bits: int, only: tuple[str, ...] | None = None) -> Plan:
    """``plan`` with every weight matrix rounded to a ``bits``-bit signed mantissa and one power-of-two
    scale per layer (lava-fixed's weight rounding, without its integer state): a diagnostic."""
    p2 = copy.deepcopy(plan)
    for op in p2.ops:
        if op.kind in ("affine", "linear", "conv2d") and (only is None or op.name in only):
            w = np.asarray(op.params["weight"], dtype=np.float64)
            top = 2 ** (bits - 1) - 1
            scale = 2.0 ** math.ceil(math.log2(np.abs(w).max() / top))
            op.params["weight"] = np.clip(np.round(w / scale), -top - 1, top) * scale
    return p2


def precision_diagnostic(plan: Plan, obs: np.ndarray, ref: Any) -> dict[str, Any]:
    """How close the two best Q-values are, and the agreement float64 reaches when only the weights
    are rounded: separates 8-bit weights from the rest of the fixed-point scheme."""
    q = np.sort(ref.q, axis=1)
    margin = (q[:, -1] - q[:, -2]) / np.abs(ref.q).max()
    quantiles = np.quantile(margin, [0.1, 0.25, 0.5]).tolist()
    res: dict[str, Any] = {"margin_over_max_q_quantiles": dict(zip(("p10", "p25", "p50"), quantiles))}
    for bits in (8, 10, 12, 16):
        got = ReferenceBackend(rounded_weights(plan, bits), dtype="float64").run(obs)
        res[f"agreement_weights_{bits}bit"] = float((got.action == ref.action).mean())
    head = plan.readout_source.name if plan.readout_source.kind in ("affine", "linear") else None
    if head:
        got = ReferenceBackend(rounded_weights(plan, 8, (head,)), dtype="float64").run(obs)
        res["agreement_only_head_8bit"] = float((got.action == ref.action).mean())
    return res


def cartpole_part(args: argparse.Namespace, ckpt_path: Path) -> dict[str, Any]:
    plan = build_plan(model_to_nir(load_checkpoint(ckpt_path)))
    t0 = time.perf_counter()
    obs, returns = cartpole_observations(plan, args.cartpole_obs, seed=1000)
    print(f"cartpole {ckpt_path.name}: {len(obs)} observations from {len(returns)} reference episodes "
          f"(returns {returns}) in {time.perf_counter() - t0:.0f} s", flush=True)
    ref = ReferenceBackend(plan, dtype="float64").run(obs)
    res: dict[str, Any] = {"checkpoint": str(ckpt_path), "n_obs": len(obs), "reference_returns": returns,
                           "time_steps": plan.semantics.time_steps}
    if not args.skip_float:
        backend = LavaBackend(plan, precision="floating_pt", batch_size=64)
        try:
            t0 = time.perf_counter()
            got = backend.run(obs)
            wall = time.perf_counter() - t0
        finally:
            backend.close()
        res["float"] = {**compare(ref, got), "lava_compile_s": backend.build_s,
                        "wall_per_obs": wall / len(obs), "period": backend.period,
                        "saturated": backend.saturated}
        print(f"cartpole float: {res['float']}", flush=True)
    # fixed point: 8-bit weights (default) and weight splitting (two 8-bit synapse sets per map)
    quants = {}
    for key, bits in (("fixed", 8), ("fixed_split", 16)):
        got, backend = run_fixed(plan, obs, weight_bits=bits)
        res[key] = {**compare(ref, got), "lava_compile_s": backend.build_s,
                    "wall_per_obs": backend.wall_s / len(obs), "period": backend.period,
                    "saturated": backend.saturated, "synapse_processes": len(backend.synapses),
                    "param_errors": param_errors(backend)}
        print(f"cartpole {key}: { {k: v for k, v in res[key].items() if k != 'param_errors'} }", flush=True)
        quants[key] = backend.quant
    # the same observations with the host-computed first map kept in float64 (see docs/LAVA.md)
    got, _ = run_fixed(plan, obs, host_weights="float")
    res["fixed_host_float"] = compare(ref, got)
    print(f"cartpole fixed, float host map: {res['fixed_host_float']}", flush=True)
    # what limits the split mode: lift one quantisation limit at a time
    if not args.skip_diagnostics:
        for key, (patch, what) in SPLIT_DIAGNOSTICS.items():
            got, backend = run_fixed(plan, obs, patch=patch, weight_bits=16)
            base = quants["fixed_split"]
            assert backend.quant is not None and base is not None
            same_q = all(backend.quant[n].q == base[n].q for n in base)
            res[key] = {**compare(ref, got), "what": what, "same_state_units": same_q,
                        "param_errors": param_errors(backend)}
            print(f"cartpole {key} ({what}): agreement {res[key]['agreement']:.4f}, q_rel_err "
                  f"{res[key]['q_rel_err']:.3g}, same state units {same_q}", flush=True)
        res["precision_diagnostic"] = precision_diagnostic(plan, obs, ref)
        # float64 with exactly lava-fixed's split parameters: what the integer arithmetic adds
        layout = lower(plan, fixed_point=True)
        quant16 = quantize.quantize_layout(layout, default_input_bound(plan), weight_bits=16)
        for key, with_bias in (("reference_split_weights", False), ("reference_split_weights_bias", True)):
            p2 = fixed_params_plan(plan, layout, quant16, with_bias)
            if p2 is not None:
                got = ReferenceBackend(p2, dtype="float64").run(obs)
                res["precision_diagnostic"][key] = compare(ref, got)
        print(f"cartpole precision diagnostic: {res['precision_diagnostic']}", flush=True)
    # closed loop in fixed point (both weight modes), compared step by step with the reference
    for key, bits in (("fixed_closed_loop", 8), ("fixed_split_closed_loop", 16)):
        if args.episodes > 0:
            res[key] = closed_loop(plan, ckpt_path, args.episodes, bits)
    return res


def closed_loop(plan: Plan, ckpt_path: Path, episodes_n: int, weight_bits: int) -> dict[str, Any]:
    io = GraphIO.from_metadata(plan.metadata, plan.op(plan.input).out_shape, 2)
    settings = LoopSettings(env_id="CartPole-v1", target="lava-fixed", graph=str(ckpt_path), graph_sha256="-",
                            compare="reference", episodes=episodes_n, seed=7,
                            encoding=plan.semantics.encoding, time_steps=plan.semantics.time_steps)
    backend = LavaBackend(plan, precision="fixed_pt", weight_bits=weight_bits)
    loop = ClosedLoop(backend, io, settings, ReferenceBackend(plan, dtype="float64"))
    episodes = []
    try:
        for i in range(episodes_n):
            rec = loop.run_episode(i)
            keep = ("return", "length", "agreement", "q_rel_err", "wall_per_step", "timing_per_step")
            episodes.append({k: rec[k] for k in keep})
            print(f"cartpole fixed ({weight_bits}-bit weights) closed loop, episode {i}: return "
                  f"{rec['return']:.0f}, agreement {rec['agreement']:.3f}, wall/step "
                  f"{rec['wall_per_step'] * 1e3:.1f} ms", flush=True)
    finally:
        loop.close()
        backend.close()
    rets = [e["return"] for e in episodes]
    return {"weight_bits": weight_bits, "episodes": episodes, "return_mean": float(np.mean(rets)),
            "return_std": float(np.std(rets)),
            "agreement": float(np.average([e["agreement"] for e in episodes],
                                          weights=[e["length"] for e in episodes]))}


def atari_part(args: argparse.Namespace, out: dict[str, Any]) -> None:
    T = args.time_steps
    ckpt = make_checkpoint("liu", arch="nature_cnn", obs_shape=(4, 84, 84), n_actions=6, time_steps=T, seed=0)
    plan = build_plan(model_to_nir(ckpt))
    obs, source = pong_frames(args.atari_obs, seed=3)
    res: dict[str, Any] = {"model": "zoo liu nature_cnn (random weights, gain 8), T %d" % T, "frames": source,
                           "requested_obs": len(obs), "budget_s": args.atari_budget}
    readouts = {}
    for precision, key in (("floating_pt", "float"), ("fixed_pt", "fixed")):
        t0 = time.perf_counter()
        backend = LavaBackend(plan, precision=precision, batch_size=1)
        ctor_s = time.perf_counter() - t0
        mem = memory_mib()
        # Lava's bare run of the T steps: the same network free-running (no windows, resets or
        # I/O), measured interleaved with the windowed runs so both see the same machine load
        bare_backend = FreeRunningLava(plan, precision=precision)
        rows, bare = [], []
        try:
            backend.run(obs[:1])  # warm-up (first-call costs of torch and the pipes)
            bare_backend.bare_run(obs[0], T)
            t0 = time.perf_counter()
            for i in range(len(obs)):
                rows.append(backend.run(obs[i:i + 1]))
                if i % args.bare_every == 0:
                    bare.append(bare_backend.bare_run(obs[0], T))
                if time.perf_counter() - t0 > args.atari_budget:
                    break
            mem_end = memory_mib()
        finally:
            bare_backend.close()
            backend.close()
        readouts[key] = merge(rows)
        per = {k: [r.timings[k] for r in rows] for k in ("set_input", "simulate", "read_out")}
        whole = [sum(r.timings.values()) for r in rows]
        res[key] = {"n_obs": len(rows), "build_s": ctor_s, "lava_compile_s": backend.build_s,
                    "period": backend.period,
                    "per_step_median_s": {k: statistics.median(v) for k, v in per.items()},
                    "per_step_mean_s": {k: float(np.mean(v)) for k, v in per.items()},
                    "whole_step_median_s": statistics.median(whole),
                    "whole_step_mean_s": float(np.mean(whole)),
                    "bare_run_T_median_s": statistics.median(bare), "bare_run_T_mean_s": float(np.mean(bare)),
                    "bare_runs": len(bare), "memory_after_build": mem, "memory_end_both_alive": mem_end,
                    "saturated": backend.saturated}
        res[key]["whole_step_over_bare"] = res[key]["whole_step_median_s"] / res[key]["bare_run_T_median_s"]
        r = res[key]
        split = {k: round(v * 1e3, 1) for k, v in r["per_step_median_s"].items()}
        print(f"atari {key}: {len(rows)} observations, whole step median "
              f"{r['whole_step_median_s'] * 1e3:.0f} ms "
              f"{split}, bare RunSteps({T}) median {r['bare_run_T_median_s'] * 1e3:.0f} ms -> ratio "
              f"{r['whole_step_over_bare']:.2f}", flush=True)
    n = min(readouts["float"].q.shape[0], readouts["fixed"].q.shape[0])
    t0 = time.perf_counter()
    ref = ReferenceBackend(plan, dtype="float64", batch_size=8).run(obs[:max(readouts["float"].q.shape[0],
                                                                               readouts["fixed"].q.shape[0])])
    res["reference_s_per_obs"] = (time.perf_counter() - t0) / max(len(ref.action), 1)
    for key in ("float", "fixed"):
        k = readouts[key].q.shape[0]
        sub = type(ref)(q=ref.q[:k], action=ref.action[:k], spikes={s: v[:k] for s, v in ref.spikes.items()})
        res[key].update(compare(sub, readouts[key]))
    res["n_common"] = n
    if args.atari_split:  # agreement only (batched, no timing): lava-fixed with --weight-bits 16
        got, backend = run_fixed(plan, obs[:len(ref.action)], weight_bits=16)
        res["fixed_split"] = {"n_obs": len(got.action), "wall_s": backend.wall_s,
                              "saturated": backend.saturated, **compare(ref, got)}
        print(f"atari fixed_split: agreement {res['fixed_split']['agreement']:.4f} of {len(got.action)}, "
              f"q_rel_err {res['fixed_split']['q_rel_err']:.3g}", flush=True)
    out["atari"] = res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cartpole-ckpt", action="append", type=Path,
                    help="CartPole checkpoint (repeatable; default: examples/cartpole_dsqn.pt and "
                         "examples/cartpole_if_dsqn.pt)")
    ap.add_argument("--cartpole-obs", type=int, default=2000)
    ap.add_argument("--episodes", type=int, default=3,
                    help="closed-loop CartPole episodes in fixed point, per weight mode (0: none)")
    ap.add_argument("--skip-float", action="store_true", help="CartPole: skip the floating_pt run")
    ap.add_argument("--skip-diagnostics", action="store_true",
                    help="CartPole: skip the split-mode and weight-rounding diagnostics")
    ap.add_argument("--atari-obs", type=int, default=200)
    ap.add_argument("--atari-budget", type=float, default=300.0, help="seconds per precision on Atari")
    ap.add_argument("--atari-split", action="store_true",
                    help="Atari: also lava-fixed with --weight-bits 16 on the same frames (agreement only)")
    ap.add_argument("--time-steps", type=int, default=64)
    ap.add_argument("--bare-every", type=int, default=4,
                    help="one bare RunSteps(T) per this many observations")
    ap.add_argument("--skip-cartpole", action="store_true")
    ap.add_argument("--skip-atari", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    ckpts = [] if args.skip_cartpole else [require_checkpoint(p, "--cartpole-ckpt")
                                           for p in args.cartpole_ckpt or DEFAULT_CARTPOLE]
    torch.set_num_threads(1)
    out: dict[str, Any] = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                       "loadavg_start": os.getloadavg()}}
    t0 = time.perf_counter()
    if not args.skip_cartpole:
        out["cartpole"] = [cartpole_part(args, p) for p in ckpts]
    if not args.skip_atari:
        atari_part(args, out)
    out["machine"]["loadavg_end"] = os.getloadavg()
    out["total_s"] = time.perf_counter() - t0
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=float) + "\n")
    print_summary(out)
    return 0


def print_summary(out: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="Lava backend vs float64 reference")
    for c in ("set", "precision", "obs", "agreement", "max|dQ|/max|Q|", "spikes equal"):
        t.add_column(c)
    sets = [(Path(c["checkpoint"]).stem, c) for c in out.get("cartpole", [])]
    if "atari" in out:
        sets.append(("atari (Nature CNN)", out["atari"]))
    for name, part in sets:
        for key in ("float", "fixed", "fixed_split", "fixed_host_float", *SPLIT_DIAGNOSTICS):
            r = part.get(key)
            if r and "agreement" in r:
                t.add_row(name, key, str(r["n"]), f"{100 * r['agreement']:.2f} %", f"{r['q_rel_err']:.3g}",
                          str(r["spikes_equal"]))
    Console(width=max(Console().width, 120)).print(t)
    for c in out.get("cartpole", []):
        name = Path(c["checkpoint"]).stem
        for key in ("fixed_closed_loop", "fixed_split_closed_loop"):
            cl = c.get(key)
            if cl:
                print(f"{name} closed loop, lava-fixed {cl['weight_bits']}-bit weights: return "
                      f"{cl['return_mean']:.1f} ± {cl['return_std']:.1f} over {len(cl['episodes'])} "
                      "episodes, "
                      f"agreement {100 * cl['agreement']:.2f} %")
        d = c.get("precision_diagnostic")
        if d:
            head = 100 * d.get("agreement_only_head_8bit", float("nan"))
            print(f"{name}, float64 with only the weights rounded: " + ", ".join(
                f"{k.split('_')[-1]} {100 * v:.1f} %" for k, v in d.items()
                if k.startswith("agreement_weights")) + f"; only the head at 8 bit {head:.1f} %; "
                f"median Q margin {d['margin_over_max_q_quantiles']['p50']:.2g} of max |Q|")
            if "reference_split_weights" in d:
                print(f"{name}, float64 with lava-fixed's split (16-bit) weights: "
                      f"{100 * d['reference_split_weights']['agreement']:.2f} %, and its biases too: "
                      f"{100 * d['reference_split_weights_bias']['agreement']:.2f} %")
    if "atari" in out:
        for key in ("float", "fixed"):
            r = out["atari"][key]
            s = r["per_step_median_s"]
            print(f"Atari {key} (n={r['n_obs']}): per step {r['whole_step_median_s'] * 1e3:.0f} ms = "
                  "set_input "
                  f"{s['set_input'] * 1e3:.1f} + simulate {s['simulate'] * 1e3:.0f} + read_out "
                  f"{s['read_out'] * 1e3:.1f} ms; bare RunSteps(T) {r['bare_run_T_median_s'] * 1e3:.0f} ms; "
                  f"ratio {r['whole_step_over_bare']:.2f}; build {r['build_s']:.1f} s; memory (PSS, host + "
                  f"{r['memory_after_build']['lava_processes']} Lava processes) "
                  f"{r['memory_after_build']['total_pss_mib']:.0f} MiB, host peak RSS "
                  f"{r['memory_end_both_alive']['host_peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    raise SystemExit(cli_entry(main)())

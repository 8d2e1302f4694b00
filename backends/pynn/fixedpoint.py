"""sPyNNaker's neuron and synapse arithmetic in numpy, to measure what SpiNNaker would deviate.

No board is available here, and a virtual board only maps. This module runs the network that
``--target pynn-spinnaker`` builds (same models, parameters and weights: :func:`describe`)
through the update sPyNNaker 7.4's binaries perform, written from their C sources
(``neuron_model_lif_impl.h``, ``neuron_model_if_trunc.h``, ``input_type_delta.h``,
``synapse_row.h``, ``threshold_type_static.h``):

* **s16.15 state.** Parameters and the membrane are ``accum`` values (15 fractional bits);
  ``R = tau_m / cm`` and ``exp_TC = exp(-dt/tau_m)`` are computed on the chip at start.
* **Synapses.** Weights are stored as 16-bit integers ``round(w * 2**(15 - s))`` per receptor,
  where the ring-buffer shift ``s`` is the smallest with ``2**s`` above the largest summed input
  the receptor can receive in one step (set through ``max_expected_summed_weight``, so no sum
  saturates); the 16-bit sums of one step are shifted left by ``s`` into s16.15.
* **LIF (IF_curr_delta).** ``alpha = I R + V_rest``, ``V = alpha - exp_TC (alpha - V)`` with
  ``MULT_ROUND_NEAREST_ACCUM`` products; **IF (IF_trunc_delta).** ``V = I R + V``, floored at
  ``V_reset``; spike on ``V >= V_th``, then ``V = V_reset``.

Not modelled: the error of the chip's ``expk`` beyond correct rounding, and any spike lost to
a real machine's timing (dropped packets, overruns). The window alignment is exact on SpiNNaker
as on NEST (delays = depth differences), so layers are run one after another here; a population's
own loop (its projection onto itself, one step late) is added step by step into the same ring
buffer as its other inputs, before the 16-bit saturation.
"""

from __future__ import annotations

import math
import time

import nir
import numpy as np
import torch

from backends.base import Readout, check_batch
from backends.common.layout import NetLayout, layout
from backends.common.readout import Recorded, readout_arrays, spike_counts
from backends.pynn.spinnaker import SpinNet, SpinPop, check_unit_spikes, describe
from exporters.canonical import Plan, build_plan
from pipeline.encoding import encode_seeded

FRAC = 15
ONE = 1 << FRAC


def s1615(x: np.ndarray | float) -> np.ndarray:
    """Host encoding of an accum parameter (round to nearest, saturating)."""
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) * ONE), -(2 ** 31), 2 ** 31 - 1).astype(np.int64)


def mult_round(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MULT_ROUND_NEAREST_ACCUM of two accums (bits in, bits out)."""
    return (a * b + (1 << (FRAC - 1))) >> FRAC


def kdivk(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """accum / accum as the chip's library divides (truncated toward zero)."""
    num = a << FRAC
    q = np.abs(num) // np.abs(b)
    return np.sign(num) * np.sign(b) * q


def ring_shift(max_weight: float) -> int:
    """sPyNNaker's ring-buffer left shift for a receptor's largest summed input per step."""
    if max_weight <= 0:
        return 0
    s = int(math.ceil(max(0.0, math.log2(max_weight))))
    return s + 1 if 2 ** s <= max_weight else s


class FixedPointSpiNNaker:
    """The pynn-spinnaker network run in sPyNNaker's fixed-point arithmetic (backends.base.Backend)."""

    name = "spinnaker-fixedpoint"

    def __init__(self, graph: nir.NIRGraph | Plan, *, time_steps: int | None = None, dt: float | None = None,
                 readout: str | None = None, convention: str | None = None):
        self.plan = graph if isinstance(graph, Plan) else build_plan(
            graph, convention=convention, time_steps=time_steps, dt=dt, readout=readout)
        self.sem = self.plan.semantics
        self.T = self.sem.time_steps
        self.obs_shape = self.plan.op(self.plan.input).out_shape
        self.n_out = int(np.prod(self.plan.op(self.plan.output).out_shape))
        self.net: NetLayout = layout(self.plan, "SpiNNaker", loops=True)
        self.drives = self.net.drives()
        self.spin: SpinNet = describe(self.net, drives=self.drives)
        self._prepare()

    def _prepare(self) -> None:
        """Per population: chip-side constants and the quantised weight matrices per receptor."""
        ts = self.spin.timestep_ms
        self.state: dict[str, dict] = {}
        for p in self.spin.pops:
            n = p.size
            prm = {k: (np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)) if not isinstance(v, np.ndarray) else v)
                   for k, v in p.params.items()}
            st: dict = {"model": p.model}
            tau_m, cm = s1615(prm["tau_m"]), s1615(prm["cm"])
            st["R"] = kdivk(tau_m, cm)
            if p.model == "IF_curr_delta":
                ratio = kdivk(np.full(n, s1615(ts)), tau_m) / ONE
                st["exp_tc"] = s1615(np.exp(-ratio))
                st["v_rest"] = s1615(prm["v_rest"])
            st["v_reset"], st["v_th"] = s1615(prm["v_reset"]), s1615(prm["v_thresh"])
            st["v_init"] = s1615(prm.get("v", prm.get("v_rest", np.zeros(n))))
            st["i_offset"] = s1615(prm["i_offset"])
            # incoming projections of each receptor, with one ring-buffer shift per receptor
            mats: dict[str, list] = {"excitatory": [], "inhibitory": []}
            worst = {"excitatory": np.zeros(n), "inhibitory": np.zeros(n)}
            for prj in self.spin.projections:
                if prj["dst"] != p.name:
                    continue
                worst[prj["receptor"]] += np.bincount(prj["post"], weights=prj["w"], minlength=n)
                mats[prj["receptor"]].append(prj)
            st["recv"] = {}
            for rec, prjs in mats.items():
                s = ring_shift(float(worst[rec].max()) if prjs else 0.0)
                scale = 2.0 ** (FRAC - s)
                enc = []
                for prj in prjs:
                    w = np.minimum(np.rint(prj["w"] * scale), 65535).astype(np.int64)
                    enc.append((prj["src"], prj["pre"], prj["post"], w, prj.get("late", False)))
                st["recv"][rec] = (s, enc)
            self.state[p.name] = st

    def _inputs(self, p: SpinPop, trains: dict[str, np.ndarray], obs: np.ndarray) -> dict[str, np.ndarray]:
        """Each receptor's ring-buffer sums (16-bit units, not yet saturated) per step ``[T, n]``
        from the source trains in the window; a loop's projection is added step by step."""
        T, n = self.T, p.size
        st = self.state[p.name]
        sums = {}
        for rec, (s, enc) in st["recv"].items():
            acc = np.zeros((T, n), np.int64)
            for src, pre, post, w, late in enc:
                if late:
                    continue
                if src.startswith("bias_w"):
                    acc += np.bincount(post, weights=w, minlength=n).astype(np.int64)[None, :]
                    continue
                spikes = trains[src]  # [T, n_pre] 0/1
                for t in np.nonzero(spikes.any(axis=1))[0]:
                    on = spikes[t, pre] > 0
                    acc[t] += np.bincount(post[on], weights=w[on], minlength=n).astype(np.int64)
            sums[rec] = acc
        return sums

    def _synaptic(self, p: SpinPop, sums: dict[str, np.ndarray], t: int, own: np.ndarray | None) -> np.ndarray:
        """Step ``t``'s synaptic input (accum bits): the ring-buffer sums plus, over the population's
        loop, its own spikes ``own`` of step t-1; saturated at 16 bits, shifted by the receptor's ``s``."""
        st = self.state[p.name]
        total = np.zeros(p.size, np.int64)
        for rec, (s, enc) in st["recv"].items():
            acc = sums[rec][t]
            if own is not None:
                for src, pre, post, w, late in enc:
                    if late:
                        assert src == p.name  # loop_delay lays out a population's loop onto itself only
                        on = own[pre] > 0
                        acc = acc + np.bincount(post[on], weights=w[on], minlength=p.size).astype(np.int64)
            acc = np.minimum(acc, 0xFFFF)  # 16-bit ring buffer saturation
            total += (acc << s) if rec == "excitatory" else -(acc << s)
        return total

    def _run_one(self, obs: np.ndarray, s_in: np.ndarray | None) -> Recorded:
        T = self.T
        rec = Recorded(counts={})
        trains: dict[str, np.ndarray] = {}
        if s_in is not None:
            flat = s_in.reshape(T, -1)
            trains["in_pos"], trains["in_neg"] = (flat > 0).astype(float), (flat < 0).astype(float)
        x = obs.reshape(-1).astype(np.float64)
        for p in self.spin.pops:
            st = self.state[p.name]
            sums = self._inputs(p, trains, x)
            i_off = st["i_offset"]
            if p.name in self.spin.input_pops and s_in is None:  # current encoding: i_offset per observation
                d = self.drives[p.name]
                cur = d.terms[self.plan.input] @ x + (d.const if d.const is not None else 0.0)
                i_off = s1615(cur * p.scale / self.spin.timestep_ms)
            v = st["v_init"].copy()
            spikes = np.zeros((T, p.size))
            trace = np.zeros((T, p.size))
            for t in range(T):
                total = self._synaptic(p, sums, t, spikes[t - 1] if t else None) + i_off  # delta input x 1/dt = 1
                if st["model"] == "IF_curr_delta":
                    alpha = mult_round(total, st["R"]) + st["v_rest"]
                    v = alpha - mult_round(st["exp_tc"], alpha - v)
                else:
                    v = np.maximum(mult_round(total, st["R"]) + v, st["v_reset"])
                fired = v >= st["v_th"]
                v = np.where(fired, st["v_reset"], v)
                spikes[t] = fired
                trace[t] = v / ONE
            trains[p.name] = spikes
            lay = self.net.pops[p.name]
            if lay.spiking:
                rec.counts[p.name] = spikes.sum(axis=0).astype(np.int64)
                rec.trains[p.name] = spikes
            if p.record_v:
                rec.traces[p.name] = trace
                rec.final_v[p.name] = trace[-1]
        return rec

    def run(self, obs: np.ndarray, input_spikes: np.ndarray | None = None) -> Readout:
        """backends.base.Backend.run: the fixed-point network on ``[N, *obs_shape]``."""
        obs = check_batch(obs, self.obs_shape, self.plan.input, self.T, input_spikes)
        n = obs.shape[0]
        x = torch.as_tensor(obs).to(torch.float64)
        s_in = None
        if self.sem.encoding != "current":
            s_in = (torch.as_tensor(np.asarray(input_spikes)).to(torch.float64) if input_spikes is not None
                    else encode_seeded(x, self.T, self.sem.encoding, self.sem.encoding_seed))
            check_unit_spikes(s_in)
        t0 = time.perf_counter()
        recs = [self._run_one(obs[i], None if s_in is None else s_in[:, i].numpy()) for i in range(n)]
        t1 = time.perf_counter()
        spikes = spike_counts(self.net, recs)
        q, action = readout_arrays(self.net, recs, x, s_in, self.n_out)
        return Readout(q=q, action=action, spikes=spikes,
                       timings={"set_input": 0.0, "simulate": t1 - t0, "read_out": time.perf_counter() - t1})

    def close(self) -> None:
        """Nothing to release."""

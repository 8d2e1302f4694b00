"""``lava-fixed`` in torch: Loihi 2's integer arithmetic as lava-fixed runs it, bit for bit.

Why a second implementation: Lava's CPU simulator runs one observation at a time in a dozen
OS processes, and it has no gradients. Hardware-aware fine-tuning (backends.finetune_fixed)
needs the same integers on a batch, with straight-through gradients. This module computes
them from the very objects the Lava backend builds: the layout of
:func:`backends.lava.lowering.lower` and the quantisation of
:func:`backends.lava.quantize.quantize_layout` (8-bit mode and the 16-bit split mode with
bias residuals). Nothing of the scheme is re-derived here.

Per population and step (docs/LAVA.md, section 4), in units of the population's LSB ``q``:
``U = decay(V) + sum_maps [shift(sum mant s, e) (+ shift(sum mant_lo s, e_lo))] + bias (+ host)``,
saturated at ±(2**23 - 1); ``S = U >= th``; hard ``V = S ? v_reset : U``, soft ``V = U - v_sub S``;
a CubaLIF first filters that input, ``syn = decay_u(syn) + in``, and charges ``syn + bias_v``.
Lava delays population k by k steps and gives each observation a window; inside the window
population k at reference step t sees the spikes of step t of its sources, so here the
populations run one after another over all T steps (layer-synchronous, no delays).

Values are held as float64 tensors that are always whole numbers (|values| < 2**53, so
every sum and shift is exact). With ``mantissas`` supplied by the caller (fine-tuning), the
roundings, floors and spikes pass gradients straight through (spikes with the ATan surrogate
of pipeline.neurons). The exactness tests are ``tests/test_torch_fixed.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import nir
import numpy as np
import torch

from backends.base import Readout, check_batch
from backends.lava.backend import default_input_bound
from backends.lava.lowering import Layout, lower
from backends.lava.quantize import DECAY_UNITY, STATE_MAX, FixedPop, check_weight_bits, quantize_layout
from exporters.canonical import Plan, build_plan
from pipeline.encoding import encode_seeded
from pipeline.models import greedy_action
from pipeline.neurons import ATanSpike

HOST = "<host>"
DENSE_LIMIT = 4_000_000  # maps with more entries run as torch sparse matrices (exact: integer sums)

#: one synapse set of a map: (mantissas [n_dst, n_src] as float64, exponent)
SynapseSet = tuple[torch.Tensor, int]


def ste(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``fn(x)`` forward, identity backward (a straight-through estimator)."""
    if not x.requires_grad:
        return fn(x)
    return x + (fn(x) - x).detach()


def shift_t(acc: torch.Tensor, e: int) -> torch.Tensor:
    """quantize.shift on float64 integers: ``acc * 2**e``, flooring for negative ``e``."""
    scaled = acc * 2.0 ** e
    return scaled if e >= 0 else ste(scaled, torch.floor)


def decay_t(v: torch.Tensor, dv: torch.Tensor) -> torch.Tensor:
    """quantize.decay: ``v (4096 - dv) >> 12`` rounded toward zero."""
    return ste(v * (DECAY_UNITY - dv) / DECAY_UNITY, torch.trunc)


@dataclass
class IntegerRun:
    """What one batch produced: readout statistic and membrane (LSBs), spikes per population."""

    stat: torch.Tensor  # [B, n] of the readout population (spike counts, or a sum/max/last in LSBs)
    membrane: torch.Tensor | None  # [B, n] final V of the readout population (LSBs), if it is a neuron
    spikes: dict[str, torch.Tensor]  # population -> [T, B, n] 0/1
    saturated: dict[str, int]


def _dense(m) -> torch.Tensor:
    if m.shape[0] * m.shape[1] > DENSE_LIMIT:
        coo = m.tocoo()
        idx = torch.as_tensor(np.vstack([coo.row, coo.col]), dtype=torch.int64)
        return torch.sparse_coo_tensor(idx, torch.as_tensor(coo.data, dtype=torch.float64), m.shape).coalesce()
    return torch.as_tensor(m.toarray(), dtype=torch.float64)


def quant_sets(quant: dict[str, FixedPop]) -> dict[tuple[str, str], list[SynapseSet]]:
    """The synapse sets of every on-chip map of ``quant`` (hi and, split, lo) as tensors."""
    out: dict[tuple[str, str], list[SynapseSet]] = {}
    for dst, fp in quant.items():
        for src, fmap in fp.maps.items():
            if fmap.mant is None:
                continue
            sets = [(_dense(fmap.mant), fmap.exp)]
            if fmap.lo is not None:
                sets.append((_dense(fmap.lo), fmap.exp_lo))
            out[(dst, src)] = sets
    return out


def _apply(s: torch.Tensor, mant: torch.Tensor) -> torch.Tensor:
    """``s @ mant.T`` for ``s`` ``[K, n_src]``."""
    if mant.is_sparse:
        return torch.sparse.mm(mant, s.T).T
    return s @ mant.T


def simulate(layout: Layout, quant: dict[str, FixedPop], host: dict[str, torch.Tensor],
             sets: dict[tuple[str, str], list[SynapseSet]], bias: dict[str, torch.Tensor] | None = None,
             alpha: float | None = None) -> IntegerRun:
    """Run every population over the T steps, layer-synchronously.

    ``host``: population -> its host current ``[T or 1, B, n]`` in LSBs (already rounded, bias
    residual included, as the Lava host sends it). ``sets``: the synapse sets per (dst, src)
    map. ``bias``: population -> per-step constant input in LSBs (default: quant's register
    plus the residual of populations behind a map). ``alpha``: the ATan surrogate's alpha for
    spikes when gradients are wanted (None: plain comparisons).
    """
    T = layout.time_steps
    incoming: dict[str, list[str]] = {}
    for c in layout.conns:
        incoming.setdefault(c.dst, []).append(c.src)
    B = next(iter(host.values())).shape[1]
    outs: dict[str, torch.Tensor] = {}
    spikes: dict[str, torch.Tensor] = {}
    saturated: dict[str, int] = {}
    stat = membrane = None
    for name, pop in layout.pops.items():
        fp = quant[name]
        if bias is not None and name in bias:
            b = bias[name]
        else:
            total = fp.bias if (pop.host or fp.bias_res is None) else fp.bias_total
            b = torch.as_tensor(total, dtype=torch.float64)
        x = torch.zeros(T, B, pop.n, dtype=torch.float64) + b
        for src in incoming.get(name, []):
            s = outs[src].reshape(T * B, -1)
            for mant, e in sets[(name, src)]:
                x = x + shift_t(_apply(s, mant), e).reshape(T, B, pop.n)
        if name in host:
            x = x + host[name]
        sat = 0
        if pop.kind == "identity":
            y = x
        elif pop.kind == "threshold":
            sat += int((x.detach().abs() > STATE_MAX).sum())
            x = x.clamp(-STATE_MAX, STATE_MAX)
            y = _spike(x, torch.as_tensor(fp.threshold, dtype=torch.float64), pop.compare, fp.q, alpha)
        else:
            y, v_last, sat = _neuron(pop, fp, x, alpha)
            if name == layout.readout_pop:
                membrane = v_last
        saturated[name] = sat
        outs[name] = y
        if pop.spiking:
            spikes[name] = y
        if name == layout.readout_pop:
            stat = _reduce(y, pop.readout)
    assert stat is not None
    return IntegerRun(stat=stat, membrane=membrane, spikes=spikes, saturated=saturated)


def _spike(u: torch.Tensor, th: torch.Tensor, compare: str, q: float, alpha: float | None) -> torch.Tensor:
    # integers: u > th is u - th - 1/2 >= 0
    d = u - th if compare == ">=" else u - th - 0.5
    if alpha is not None and d.requires_grad:
        return ATanSpike.apply(d * q, alpha)  # the surrogate in volts, as in training
    return (d >= 0).to(torch.float64)


def _neuron(pop, fp: FixedPop, x: torch.Tensor, alpha: float | None):
    st = pop.step
    T = x.shape[0]
    v = torch.as_tensor(fp.v_init, dtype=torch.float64).expand_as(x[0]).clone()
    dv = None if fp.dv is None else torch.as_tensor(fp.dv, dtype=torch.float64)
    th = None if fp.threshold is None else torch.as_tensor(fp.threshold, dtype=torch.float64)
    v_reset = None if fp.v_reset is None else torch.as_tensor(fp.v_reset, dtype=torch.float64)
    v_sub = None if fp.v_sub is None else torch.as_tensor(fp.v_sub, dtype=torch.float64)
    du = None if fp.du is None else torch.as_tensor(fp.du, dtype=torch.float64)
    syn = None if du is None else torch.zeros_like(x[0])
    bias_v = None if fp.bias_v is None else torch.as_tensor(fp.bias_v, dtype=torch.float64)
    v_floor = None if fp.v_floor is None else torch.as_tensor(fp.v_floor, dtype=torch.float64)
    out = []
    sat = 0
    s_prev = None
    for t in range(T):
        drive = x[t]
        if syn is not None:  # CubaLIF: the current first (processes.PyPopulationFixed)
            syn = decay_t(syn, du) + drive
            sat += int((syn.detach().abs() > STATE_MAX).sum())
            syn = syn.clamp(-STATE_MAX, STATE_MAX)
            drive = syn + bias_v
        u = v if dv is None else decay_t(v, dv)
        u = u + drive
        if st.reset == "soft_next" and s_prev is not None:
            u = u - v_sub * s_prev
        sat += int((u.detach().abs() > STATE_MAX).sum())
        u = u.clamp(-STATE_MAX, STATE_MAX)
        if not st.spiking:
            v = u
            out.append(u)
            continue
        s = _spike(u, th, st.compare, fp.q, alpha)
        if st.reset == "hard":
            v = u * (1 - s) + v_reset * s
        elif st.reset == "soft":
            w = u - v_sub * s
            sat += int((w.detach().abs() > STATE_MAX).sum())
            v = w.clamp(-STATE_MAX, STATE_MAX)
        else:
            v, s_prev = u, s
        if v_floor is not None:  # Sinabs' min_v_mem (processes.PyPopulationFixed)
            v = torch.maximum(v, v_floor.expand_as(v))
        out.append(s)
    return torch.stack(out), v, sat


def _reduce(y: torch.Tensor, how: str | None) -> torch.Tensor:
    if how in ("sum", "mean"):
        return y.sum(dim=0)
    if how == "max":
        return y.max(dim=0).values
    return y[-1]


class LoihiFixedTorch:
    """backends.base.Backend computing exactly what ``LavaBackend(precision="fixed_pt")`` does.

    Same arguments as the Lava backend's fixed-point mode (``weight_bits`` 8 or 16,
    ``input_bound``, ``host_weights``); no Lava import, no processes, batched.
    """

    name = "lava-fixed-torch"

    def __init__(self, graph: nir.NIRGraph | Plan, *, convention: str | None = None,
                 time_steps: int | None = None, dt: float | None = None, readout: str | None = None,
                 input_bound: float | None = None, host_weights: str = "8bit", weight_bits: int = 8,
                 batch_size: int = 512):
        self.plan = graph if isinstance(graph, Plan) else build_plan(
            graph, convention=convention, time_steps=time_steps, dt=dt, readout=readout)
        self.sem = self.plan.semantics
        self.T = self.sem.time_steps
        self.obs_shape = self.plan.op(self.plan.input).out_shape
        self.weight_bits = check_weight_bits(weight_bits)
        self.layout = lower(self.plan, fixed_point=True)
        self.input_bound = input_bound or default_input_bound(self.plan)
        self.quant = quantize_layout(self.layout, self.input_bound, host_weights, self.weight_bits)
        self.sets = quant_sets(self.quant)
        self.batch = batch_size
        self.by_name = {op.name: op for op in self.plan.ops}
        self.spiking_ops = [op.name for op in self.plan.ops if op.spiking]
        self.saturated = {name: 0 for name in self.layout.pops}

    def host_currents(self, obs: np.ndarray, spikes: np.ndarray | None) -> dict[str, torch.Tensor]:
        """What the Lava backend's host sends: the rounded first-map current (+ bias residual),
        computed with the quantiser's own ``FixedMap.host_current``."""
        B = obs.shape[0]
        value = obs.reshape(1, B, -1) if spikes is None else spikes.reshape(spikes.shape[0], B, -1)
        value = np.asarray(value, dtype=np.float64)
        out = {}
        for name, pop in self.layout.pops.items():
            if not pop.host:
                continue
            fp = self.quant[name]
            flat = value.reshape(value.shape[0] * B, -1)
            cur = np.round(fp.maps[HOST].host_current(flat.T).T).reshape(value.shape[0], B, pop.n)
            if fp.bias_res is not None:
                cur = cur + fp.bias_res
            out[name] = torch.as_tensor(cur, dtype=torch.float64)
        return out

    def run(self, obs: np.ndarray, input_spikes: np.ndarray | None = None) -> Readout:
        """backends.base.Backend.run: ``obs`` ``[N, *obs_shape]`` -> Readout (as lava-fixed)."""
        obs = check_batch(obs, self.obs_shape, self.plan.input, self.T, input_spikes)
        N = obs.shape[0]
        if self.sem.encoding != "current" and input_spikes is None:  # one seeded stream per call
            input_spikes = encode_seeded(torch.as_tensor(obs), self.T, self.sem.encoding,
                                         self.sem.encoding_seed).numpy()
        t0 = time.perf_counter()
        qs, acts, counts = [], [], {k: [] for k in self.spiking_ops}
        for lo in range(0, max(N, 1), self.batch):
            hi = min(N, lo + self.batch)
            if hi <= lo:
                break
            spk = None if input_spikes is None else input_spikes[:, lo:hi]
            with torch.no_grad():
                res = simulate(self.layout, self.quant, self.host_currents(obs[lo:hi], spk), self.sets)
            for k, v in res.saturated.items():
                self.saturated[k] += v
            q, a = self.q_values(res)
            qs.append(q.numpy())
            acts.append(a.numpy())
            for k in self.spiking_ops:
                c = res.spikes[k].sum(dim=0) if k in res.spikes else torch.zeros(hi - lo, 1)
                counts[k].append(c.numpy().astype(np.int64).reshape(hi - lo, *self.by_name[k].out_shape))
        t1 = time.perf_counter()
        n_act = int(np.prod(self.plan.op(self.plan.output).out_shape))
        q = np.concatenate(qs) if qs else np.zeros((0, n_act))
        action = np.concatenate(acts) if acts else np.zeros(0, np.int64)
        spikes = {k: (np.concatenate(v) if v else np.zeros((0, *self.by_name[k].out_shape), np.int64))
                  for k, v in counts.items()}
        return Readout(q=q, action=action.astype(np.int64), spikes=spikes,
                       timings={"set_input": 0.0, "simulate": t1 - t0, "read_out": 0.0})

    def q_values(self, res: IntegerRun) -> tuple[torch.Tensor, torch.Tensor]:
        """Q ``[B, A]`` and greedy actions from an :class:`IntegerRun`, in the order of
        operations of ``LavaBackend._readout`` (so that the float64 results are identical)."""
        return readout_q(self.layout, self.quant, self.sem, res)

    def close(self) -> None:
        """Nothing to release."""


def readout_q(layout: Layout, quant: dict[str, FixedPop], sem, res: IntegerRun) -> tuple[torch.Tensor, torch.Tensor]:
    """Q-values (float64, differentiable) and greedy actions, as the Lava backend assembles them."""
    rp = layout.pops[layout.readout_pop]
    stat, membrane = res.stat, res.membrane
    q_unit = quant[rp.name].q
    if not rp.spiking:
        stat = stat * q_unit
    if membrane is not None:
        membrane = membrane * q_unit
    y = stat / layout.time_steps if sem.reduce == "mean" else stat
    q = y / sem.divisor if sem.divisor != 1.0 else y
    q = q.reshape(q.shape[0], -1)
    if sem.membrane_divisor:
        if membrane is None:
            raise ValueError(f"the readout adds a membrane term, but {rp.name!r} has no membrane")
        q = q + membrane.reshape(q.shape) / sem.membrane_divisor
    if sem.offset != 0.0:
        q = q + sem.offset
    tiebreak = membrane.reshape(q.shape).detach() if sem.tiebreak == "membrane" and membrane is not None else None
    action = greedy_action(q.detach(), tiebreak)
    return q, action

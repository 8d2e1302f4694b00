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
saturated at ±(2**23 - 1); ``S = U >= th`` (multi-spike: ``floor(U / th)`` for ``U > 0``, a graded
spike carrying the count); hard ``V = S ? v_reset : U``, soft ``V = U - v_sub S``;
a CubaLIF first filters that input, ``syn = decay_u(syn) + in``, and charges ``syn + bias_v``.
Lava delays population k by k steps and gives each observation a window; inside the window
population k at reference step t sees the spikes of step t of its sources, so here the
populations run one after another over all T steps (layer-synchronous, no delays); a loop's
map brings the step before (a layout with loops runs step by step).

Values are held as float64 tensors that are always whole numbers (|values| < 2**53, so
every sum and shift is exact). A map between populations that is one convolution runs as a
convolution of its mantissa kernel (:func:`conv_sets`, checked to rebuild the quantised sparse
map entry for entry): the same integers, at the cost of a convolution instead of a sparse
product (docs/LAVA.md section 8); the host-fed map keeps the quantiser's own float64 sum.
With ``mantissas`` supplied by the caller (fine-tuning), the roundings, floors and spikes pass
gradients straight through (spikes with the ATan surrogate of pipeline.neurons). The exactness
tests are ``tests/test_torch_fixed.py``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import nir
import numpy as np
import torch
import torch.nn.functional as F

from backends.base import Readout, check_batch
from backends.common.sparse import conv_coo, conv_matrix
from backends.lava.backend import default_input_bound
from backends.lava.lowering import Layout, lower
from backends.lava.modes import DEFAULT_STATE_SCALE
from backends.lava.quantize import DECAY_UNITY, STATE_MAX, FixedPop, check_weight_bits, quantize_layout
from exporters.canonical import Plan, build_plan
from pipeline.encoding import encode_seeded
from pipeline.models import greedy_action
from pipeline.neurons import ATanSpike

HOST = "<host>"
DENSE_LIMIT = 4_000_000  # maps with more entries run as torch sparse matrices (exact: integer sums)



@dataclass
class ConvMantissas:
    """A conv map's mantissas held as its kernel ``[c_out, c_in / groups, kh, kw]`` (weight
    sharing: every entry of the sparse map is one kernel element, at one exponent per map), for
    fine-tuning through the kernel. Applied with ``F.conv2d`` on the C-order flattened spikes,
    the same index arithmetic as :func:`backends.common.sparse.conv_matrix`; the sums of integer
    mantissas times 0/1 spikes are whole numbers, exact in float64 in any order."""

    kernel: torch.Tensor  # float64, whole numbers in the mantissa range
    in_shape: tuple[int, ...]  # (c_in, h, w)
    stride: tuple[int, int]
    padding: tuple[int, int] | str
    dilation: tuple[int, int]
    groups: int

    def __call__(self, s: torch.Tensor) -> torch.Tensor:
        """``[K, n_src]`` -> ``[K, n_dst]``."""
        y = F.conv2d(s.reshape(s.shape[0], *self.in_shape), self.kernel, None, stride=self.stride,
                     padding=self.padding, dilation=self.dilation, groups=self.groups)
        return y.reshape(s.shape[0], -1)


#: one synapse set of a map: (mantissas [n_dst, n_src] as float64, or a conv's kernel, exponent)
SynapseSet = tuple[torch.Tensor | ConvMantissas, int]


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
    spikes: dict[str, torch.Tensor]  # population -> [T, B, n] 0/1 (multi-spike: counts)
    saturated: dict[str, int]


def _dense(m) -> torch.Tensor:
    if m.shape[0] * m.shape[1] > DENSE_LIMIT:
        coo = m.tocoo()
        idx = torch.as_tensor(np.vstack([coo.row, coo.col]), dtype=torch.int64)
        # scipy's COO indices are valid by construction: opting out explicitly keeps torch's
        # "invariant checks are implicitly disabled" warning off the user's terminal
        return torch.sparse_coo_tensor(idx, torch.as_tensor(coo.data, dtype=torch.float64), m.shape,
                                       check_invariants=False).coalesce()
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


def conv_sets(layout: Layout, quant: dict[str, FixedPop], sets: dict[tuple[str, str], list[SynapseSet]]) -> None:
    """Replace, in ``sets``, every map between populations that is one conv op by its kernel of
    mantissas (:class:`ConvMantissas`), where that kernel rebuilds the quantised sparse map
    exactly (checked entry for entry): the same integers as the sparse product, at the speed of
    a convolution. Host-fed maps stay with the quantiser's own float64 sum (real-valued inputs)."""
    by_name = {op.name: op for op in layout.plan.ops}
    for (dst, src), sset in sets.items():
        op = by_name.get(dst)
        syn = by_name.get(op.inputs[0]) if op is not None and len(op.inputs) == 1 else None
        if syn is None or syn.kind != "conv2d" or syn.inputs != [src] or op.recurrent or syn.recurrent:
            continue
        fmap = quant[dst].maps[src]
        mats = [fmap.mant] + ([fmap.lo] if fmap.lo is not None else [])
        kernels = [_kernel_of(syn, m) for m in mats]
        if all(k is not None for k in kernels):
            sets[(dst, src)] = [(_conv_of(syn, k), e) for k, (_, e) in zip(kernels, sset)]


def _kernel_of(op, mant) -> torch.Tensor | None:
    """The kernel whose conv map is ``mant`` (int64 CSR), or None if ``mant`` shares no kernel."""
    w = np.asarray(op.params["weight"])
    index = dataclasses.replace(op, params={**op.params, "weight": np.arange(1, w.size + 1, dtype=np.float64)
                                            .reshape(w.shape)})
    post, pre, k = conv_coo(index)
    first_k, first = np.unique(k.astype(np.int64) - 1, return_index=True)
    kernel = np.zeros(w.size, dtype=np.float64)
    kernel[first_k] = np.asarray(mant[post[first], pre[first]]).reshape(-1)
    kernel = kernel.reshape(w.shape)
    rebuilt = conv_matrix(dataclasses.replace(op, params={**op.params, "weight": kernel}))
    if rebuilt.shape != mant.shape or (rebuilt != mant).nnz:
        return None
    return torch.as_tensor(kernel, dtype=torch.float64)


def _conv_of(op, kernel: torch.Tensor) -> ConvMantissas:
    p = op.params
    padding = p["padding"] if isinstance(p["padding"], str) else tuple(int(v) for v in p["padding"])
    return ConvMantissas(kernel, tuple(int(v) for v in op.in_shape), tuple(int(v) for v in p["stride"]), padding,
                         tuple(int(v) for v in p["dilation"]), int(p["groups"]))


def _apply(s: torch.Tensor, mant: torch.Tensor | ConvMantissas) -> torch.Tensor:
    """``s @ mant.T`` for ``s`` ``[K, n_src]``."""
    if isinstance(mant, ConvMantissas):
        return mant(s)
    if mant.is_sparse:
        return torch.sparse.mm(mant, s.T).T
    return s @ mant.T


def simulate(layout: Layout, quant: dict[str, FixedPop], host: dict[str, torch.Tensor],
             sets: dict[tuple[str, str], list[SynapseSet]], bias: dict[str, torch.Tensor] | None = None,
             alpha: float | None = None) -> IntegerRun:
    """Run every population over the T steps, layer-synchronously (a layout with a loop, one
    step at a time: the loop's map brings its source's output of the step before, zero at the first).

    ``host``: population -> its host current ``[T or 1, B, n]`` in LSBs (already rounded, bias
    residual included, as the Lava host sends it). ``sets``: the synapse sets per (dst, src)
    map. ``bias``: population -> per-step constant input in LSBs (default: quant's register
    plus the residual of populations behind a map). ``alpha``: the ATan surrogate's alpha for
    spikes when gradients are wanted (None: plain comparisons).
    """
    T = layout.time_steps
    incoming: dict[str, list[tuple[str, bool]]] = {}
    for c in layout.conns:
        incoming.setdefault(c.dst, []).append((c.src, c.recurrent))
    B = next(iter(host.values())).shape[1]
    base: dict[str, torch.Tensor] = {}  # constant and host input, [T or 1, B, n]
    for name, pop in layout.pops.items():
        fp = quant[name]
        if bias is not None and name in bias:
            b = bias[name]
        else:
            total = fp.bias if (pop.host or fp.bias_res is None) else fp.bias_total
            b = torch.as_tensor(total, dtype=torch.float64)
        x = torch.zeros(1, B, pop.n, dtype=torch.float64) + b
        base[name] = x + host[name] if name in host else x
    steps = {name: _PopSteps(pop, quant[name], B, alpha) for name, pop in layout.pops.items()}

    def mapped(name: str, src: str, s: torch.Tensor) -> torch.Tensor:
        """The input map (dst ``name``, source ``src``) applied to ``s`` ``[K, n_src]``."""
        acc = None
        for mant, e in sets[(name, src)]:
            y = shift_t(_apply(s, mant), e)
            acc = y if acc is None else acc + y
        assert acc is not None
        return acc

    outs: dict[str, torch.Tensor] = {}
    if not any(c.recurrent for c in layout.conns):
        for name, pop in layout.pops.items():
            x = base[name].expand(T, B, pop.n)
            for src, _ in incoming.get(name, []):
                x = x + mapped(name, src, outs[src].reshape(T * B, -1)).reshape(T, B, pop.n)
            st = steps[name]
            # unbind, not x[t]: the backward of T selects would write T full-size zero gradients
            outs[name] = torch.stack([st.step(xt) for xt in x.unbind(0)])
    else:  # integer sums are exact in any order: the same bits as the layer-wise path
        series: dict[str, list[torch.Tensor]] = {name: [] for name in layout.pops}
        for t in range(T):
            for name, pop in layout.pops.items():
                x = base[name][t if base[name].shape[0] > 1 else 0]
                for src, late in incoming.get(name, []):
                    if late and t == 0:
                        continue  # every output is zero before the first step
                    x = x + mapped(name, src, series[src][t - 1 if late else t])
                series[name].append(steps[name].step(x))
        outs = {name: torch.stack(ys) for name, ys in series.items()}
    spikes = {name: outs[name] for name, pop in layout.pops.items() if pop.spiking}
    rp = layout.pops[layout.readout_pop]
    membrane = steps[rp.name].v if rp.kind == "neuron" else None
    return IntegerRun(stat=_reduce(outs[rp.name], rp.readout), membrane=membrane, spikes=spikes,
                      saturated={name: st.sat for name, st in steps.items()})


def _spike(u: torch.Tensor, th: torch.Tensor, compare: str, q: float, alpha: float | None) -> torch.Tensor:
    # integers: u > th is u - th - 1/2 >= 0
    d = u - th if compare == ">=" else u - th - 0.5
    if alpha is not None and d.requires_grad:
        return ATanSpike.apply(d * q, alpha)  # the surrogate in volts, as in training
    return (d >= 0).to(torch.float64)


class _PopSteps:
    """One population's integer state between steps (processes.PyPopulationFixed's ``step``):
    :meth:`step` takes the step's input ``[B, n]`` in LSBs and returns its output; ``sat``
    counts saturations, ``v`` is the membrane after the last step."""

    def __init__(self, pop, fp: FixedPop, B: int, alpha: float | None) -> None:
        def t(v):
            return None if v is None else torch.as_tensor(v, dtype=torch.float64)

        self.pop, self.fp, self.alpha = pop, fp, alpha
        self.sat = 0
        self.th = t(fp.threshold)
        if pop.kind != "neuron":
            self.v = None
            return
        self.v = t(fp.v_init).expand(B, pop.n).clone()
        self.dv, self.v_reset, self.v_sub, self.du = t(fp.dv), t(fp.v_reset), t(fp.v_sub), t(fp.du)
        self.bias_v, self.v_floor = t(fp.bias_v), t(fp.v_floor)
        self.syn = None if self.du is None else torch.zeros(B, pop.n, dtype=torch.float64)
        self.s_prev: torch.Tensor | None = None

    def _clamp(self, u: torch.Tensor) -> torch.Tensor:
        self.sat += int((u.detach().abs() > STATE_MAX).sum())
        return u.clamp(-STATE_MAX, STATE_MAX)

    def step(self, drive: torch.Tensor) -> torch.Tensor:
        pop, fp = self.pop, self.fp
        if pop.kind == "identity":
            return drive
        if pop.kind == "threshold":
            return _spike(self._clamp(drive), self.th, pop.compare, fp.q, self.alpha)
        st = pop.step
        if self.syn is not None:  # CubaLIF: the current first (processes.PyPopulationFixed)
            self.syn = self._clamp(decay_t(self.syn, self.du) + drive)
            drive = self.syn + self.bias_v
        u = self.v if self.dv is None else decay_t(self.v, self.dv)
        u = u + drive
        if st.reset == "soft_next" and self.s_prev is not None:
            u = u - self.v_sub * self.s_prev
        elif st.reset == "zero_next" and self.s_prev is not None:  # the charge after a spike is dropped
            u = torch.where(self.s_prev > 0, self.v_reset.expand_as(u), u) if st.multi_spike else (
                u * (1 - self.s_prev) + self.v_reset * self.s_prev)
        u = self._clamp(u)
        if not st.spiking:
            self.v = u
            return u
        if st.reset == "soft_recheck":  # snnTorch reset_delay=False (processes.PyPopulationFixed)
            r = _spike(self.v, self.th, st.compare, fp.q, None).detach()
            u = self._clamp(u - self.v_sub * r)
        # floor(U / th) spikes (processes.PyPopulationFixed), straight through; exact in float64: U and
        # th are integers below 2**23, so U / th is at least 2**-23 from the next integer up
        if st.multi_spike:
            s = ste(torch.relu(u) / self.th, torch.floor)
        else:
            s = _spike(u, self.th, st.compare, fp.q, self.alpha)
        if st.reset == "soft_recheck":
            v = self._clamp(u - self.v_sub * (s - r))
        elif st.reset == "hard" and st.multi_spike:  # several spikes still reset once
            v = torch.where(s > 0, self.v_reset.expand_as(u), u)
        elif st.reset == "hard":
            v = u * (1 - s) + self.v_reset * s
        elif st.reset == "soft":
            v = self._clamp(u - self.v_sub * s)
        else:
            v, self.s_prev = u, s
        if self.v_floor is not None:  # Sinabs' min_v_mem (processes.PyPopulationFixed)
            v = torch.maximum(v, self.v_floor.expand_as(v))
        self.v = v
        return s


def _reduce(y: torch.Tensor, how: str | None) -> torch.Tensor:
    if how in ("sum", "mean"):
        return y.sum(dim=0)
    if how == "max":
        return y.max(dim=0).values
    return y[-1]


class LoihiFixedTorch:
    """backends.base.Backend computing exactly what ``LavaBackend(precision="fixed_pt")`` does.

    Same arguments as the Lava backend's fixed-point mode (``weight_bits`` 8 or 16,
    ``input_bound``, ``host_weights``, ``state_scale``); no Lava import, no processes, batched.
    """

    name = "lava-fixed-torch"

    def __init__(self, graph: nir.NIRGraph | Plan, *, convention: str | None = None,
                 time_steps: int | None = None, dt: float | None = None, readout: str | None = None,
                 input_bound: float | None = None, host_weights: str = "8bit", weight_bits: int = 8,
                 batch_size: int = 512, state_scale: str = DEFAULT_STATE_SCALE):
        self.plan = graph if isinstance(graph, Plan) else build_plan(
            graph, convention=convention, time_steps=time_steps, dt=dt, readout=readout)
        self.sem = self.plan.semantics
        self.T = self.sem.time_steps
        self.obs_shape = self.plan.op(self.plan.input).out_shape
        self.weight_bits = check_weight_bits(weight_bits)
        self.layout = lower(self.plan, fixed_point=True)
        self.input_bound = input_bound or default_input_bound(self.plan)
        self.quant = quantize_layout(self.layout, self.input_bound, host_weights, self.weight_bits,
                                     state_scale)
        self.sets = quant_sets(self.quant)
        conv_sets(self.layout, self.quant, self.sets)
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
    fq = quant[rp.name]
    q_unit = fq.q if fq.unit is None else torch.as_tensor(fq.unit, dtype=torch.float64)
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

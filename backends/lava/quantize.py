"""Fixed-point (``--target lava-fixed``) quantisation for Loihi 2, and the Loihi 2 core estimate.

The scheme (docs/LAVA.md explains it with examples)
---------------------------------------------------
Every population p gets one real **state unit** ``q_p`` (volts per LSB); its membrane V,
charge U, threshold, reset value, bias and input current are integers in units of ``q_p``,
held in 24-bit signed registers (saturating at ``±(2**23 - 1)``).

1. *Fold the neuron's input scale into the weights.* docs/DESIGN.md's LIF step
   ``U = V + (g I - (V - v_leak)) / tau`` is ``U = V (1 - 1/tau) + (g/tau) I + v_leak/tau``,
   Loihi's ``v <- v (1 - dv) + input``. So each incoming map M (and the bias b) is scaled per
   row by ``c = g/tau`` (``g`` for IF, 1 for Threshold ops and readout integrators) and
   ``v_leak/tau`` joins the bias: ``W' = diag(c) M``, ``b' = c b + v_leak/tau``.
2. *Decay:* ``dv = round(4096 / tau)`` (12 bits; exact for tau = 1, 2, 4, ...; 0 for IF), applied
   as Loihi does, ``V (4096 - dv) >> 12`` rounded toward zero.
3. *Choose q_p* as fine as the registers allow: ``q_min = max(B / (2**23 - 1),
   max|W'| / (127 * 2**7), max|b'| / (4095 * 2**7))`` where B is a worst-case bound of |state|
   (input currents at their largest: ``R = sum_j |W'_ij| x_max + |b'_i|``, times tau for leaky
   neurons and T for IF neurons and integrators, plus the threshold and reset values; x_max = 1
   for spikes, ``input_bound`` for a real-valued input current). For a spiking population with
   one threshold, ``q = V_th / floor(V_th / q_min)`` so that **the threshold is an exact
   integer** (``th = floor(V_th / q_min)``); fewer than 16 threshold levels is refused.
4. *Weights:* per map, an **8-bit signed mantissa** ``[-128, 127]`` and a shared exponent
   ``e in [-8, 7]`` (Lava's / Loihi's ``weight_exp`` range): ``e = ceil(log2(max|W'| / (127 q)))``
   so the largest weight uses the full mantissa; a spike adds ``mant * 2**e`` LSBs (the
   accumulated sum is shifted; a negative e shifts right, rounding down, as Loihi does).
5. *Bias:* per neuron, a 13-bit signed mantissa ``[-4095, 4095]`` and exponent ``[0, 7]``
   (Lava's ``bias_mant``/``bias_exp`` of the bit-accurate LIF): ``bias = mant << exp``.
6. *Reset and initial values* are rounded to the state grid; the soft-reset subtrahend is the
   threshold itself in our graphs (exact).

Multi-spike (Sinabs) layers send ``floor(U / th)`` as one graded spike (a signed 24-bit payload)
that the synapse multiplies; their count bound (``FixedPop.count_max``, from the integers) is the
largest input value of the layers they feed, whose state range is sized for at most
``SIZING_COUNT`` of them; with Sinabs' floor their own state range is one step of drive around
``[-th, th)`` (docs/LAVA.md section 4, "Multi-spike neurons").

The host-fed first layer uses the same scheme: its map (from the input) is quantised like any
other, the host computes ``mant @ x * 2**e`` and rounds it to the state grid (exact for input
spikes; for a real-valued ``current`` input it is a graded input with 24-bit payload).

Weight splitting (``weight_bits=16``, opt-in; default 8)
---------------------------------------------------------
8-bit mantissas flip many greedy actions of agents whose Q-values are nearly equal. With
``weight_bits=16`` every map W' (the host-fed one included, unless ``host_weights="float"``)
becomes the sum of two maps that each obey the rules above, i.e. two synapse sets from the
same source into the same destination (Loihi 2 sums all synaptic input of a compartment):
``W' ~ mant_hi * q 2**e + mant_lo * q 2**e_lo`` with ``e`` the exponent of step 4 and
``e_lo = e - 8``: ``v = round(W' / (q 2**e_lo))`` (a 16-bit integer, |v| <= 127 * 256) is split
as ``v = mant_hi * 256 + mant_lo`` with ``mant_lo`` in [-128, 127] (so ``mant_hi`` is step 4's
8-bit mantissa except where the residual is exactly at a tie), and the error is at most half
a lo step. Below Lava's minimum ``e_lo`` is clipped to -8 (d = e - e_lo < 8 lo bits, the
error grows to half of the coarser lo step; ``FixedMap.exp_lo_clipped``, reported by
``inspect-nir --target lava``). Each set accumulates and shifts on its own (a
negative ``e_lo`` floors its sum, as Loihi does), so the step adds
``shift(sum mant_hi s, e) + shift(sum mant_lo s, e_lo)``. A lo map whose mantissas are all
zero (an exactly representable map) is not built. The state unit, threshold, bias register
and decay are those of the 8-bit mode; the synapse count doubles for every split map.

The same mode also brings every bias to the nearest state LSB. A bias over 4095 LSBs needs
bias exponent e_b > 0 and so lands on a 2**e_b grid; its residual
``res = round(b'/q) - mant << e_b`` (|res| <= 2**(e_b - 1) <= 64 LSBs) is added every step by
one more synapse per neuron, weight ``res`` at exponent 0, from a single always-on neuron
(``BIAS_SOURCE``: spikes on every Lava step, never reset). Its spikes arrive one step late,
which every population behind a synapse map (delay >= 1) tolerates: its window starts later.
For a host-fed population the host adds ``res`` to the integer current it sends.

A layer whose weights are so large relative to its threshold that 8-bit mantissas with
exponent <= 7 cannot reach it with 16 levels ("weights would saturate"), whose worst-case state
does not fit 24 bits at that resolution, or whose weights underflow exponent -8, gets a
UserError naming the layer and the binding constraint.

Per-neuron state units (``state_scale="neuron"``; ``"layer"``: one unit per population)
----------------------------------------------------------------------------------------
One unit q per population gives each neuron's weights the map's one step ``q 2**e``, set by the
map's largest weight: a neuron whose own weights are all small uses a few mantissa bits only. Loihi
2 holds threshold, bias, reset and state per neuron, so each spiking neuron may count in its own
unit ``q_i = V_th_i / th_i`` (an exact integer threshold ``th_i``, never coarser than q): the finest
that its own worst-case state (24 bits), its bias register and its largest incoming weight of each
map at that map's exponent allow. The mantissas of row i are ``round(W'_i / (q_i 2**e))``; the
exponents stay per map, no synapse is added. The neurons of one channel of a ``(C, H, W)``
population share one unit (a conv kernel's weight keeps one mantissa), and a neuron keeps q where
its own unit would not round its weights more finely (summed squared error): weights already on
q's grid, as finetune-fixed writes them, keep every integer. A multi-spike layer's count bound is
then taken neuron by neuron. The readout scales a neuron's membrane by its own unit.

Loihi 2 resources: see :data:`LOIHI2` (sources and which numbers are assumptions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from backends.lava.lowering import Layout, Population
from backends.lava.modes import DEFAULT_STATE_SCALE, STATE_SCALES, check_state_scale  # noqa: F401 (re-export)
from pipeline.errors import UserError

WEIGHT_MANT = (-128, 127)  # 8-bit signed mantissa
WEIGHT_EXP = (-8, 7)  # shared per-map exponent (Lava weight_exp range)
STATE_MAX = 2**23 - 1  # 24-bit signed state registers (u, v) of Loihi's LIF
BIAS_MANT_MAX = 4095  # 13-bit signed bias mantissa
BIAS_EXP_MAX = 7  # 3-bit bias exponent
DECAY_UNITY = 4096  # 12-bit du/dv
MIN_THRESHOLD_LEVELS = 16
BIAS_SOURCE = "<bias>"  # weight_bits=16: the always-on neuron that carries the bias residuals
# multi-spike (Sinabs) layers send their spike count per step as a Loihi 2 graded spike: a signed
# 24-bit payload, so a count may reach 2**23 - 1 (the synapse multiplies it by the 8-bit mantissa)
GRADED_PAYLOAD_BITS = 24
COUNT_MAX = 2 ** (GRADED_PAYLOAD_BITS - 1) - 1
# the state range of a layer fed by a multi-spike layer is sized for at most this many spikes per
# synapse per step (or the source's own bound, if smaller): the worst case compounds layer by layer
# and would leave no threshold levels (docs/LAVA.md section 4); a step beyond it saturates the 24-bit
# register, counted in ``saturated`` like any other
SIZING_COUNT = 15

#: Loihi 2 per-chip / per-core limits used by :func:`loihi2_resources`.
LOIHI2: dict[str, Any] = {
    "cores_per_chip": 128,
    "neurons_per_chip": 1_048_576,
    "synapses_per_chip": 120_000_000,
    "neurons_per_core": 8192,
    "synapses_per_core": 131_072,
    "sources": {
        "cores_per_chip, neurons_per_chip, synapses_per_chip": (
            "Intel Labs, 'Taking Neuromorphic Computing to the Next Level with Loihi 2', technology brief "
            "(2021): 128 neuromorphic cores, up to 1M neurons and 120M synapses per chip"),
        "neurons_per_core": ("1M neurons / 128 cores = 8192 (the brief's 'up to 8x more neurons' than "
                             "Loihi's 1024)"),
        "synapses_per_core": (
            "ASSUMPTION: 128 KB of flexibly partitioned synaptic memory per core (reported for the Loihi 2 "
            "launch) at one byte per 8-bit weight, without index/compression overhead; the real capacity "
            "depends on Loihi 2's synapse encoding (dense, sparse, convolutional weight sharing)"),
    },
}


@dataclass
class FixedMap:
    """One incoming synapse map of a population, quantised (one or, split, two synapse sets)."""

    src: str  # source population, or "<host>" for the host-fed map from the input
    mant: sp.csr_matrix | None  # int64 mantissas [n_dst, n_src]; None: kept in float64 (host map)
    exp: int
    rel_err_max: float  # max |W'q - W'| / max |W'|  (of the whole map, both sets when split)
    rel_err_rms: float  # ||W'q - W'|| / ||W'||
    real: sp.csr_matrix | None = None  # the float64 map W' / q when ``mant`` is None
    lo: sp.csr_matrix | None = None  # weight_bits=16: the second set's int64 mantissas (None: no set)
    exp_lo: int = 0
    exp_lo_clipped: bool = False  # e - 8 was below WEIGHT_EXP[0]: the lo step is coarser

    @property
    def sets(self) -> int:
        """Synapse sets this map occupies on chip (0 for a float host map)."""
        if self.mant is None:
            return 0
        return 2 if self.lo is not None else 1

    def lsb(self) -> sp.csr_matrix:
        """The map's value in state LSBs, ``mant 2**e (+ lo 2**e_lo)`` (float64, before flooring)."""
        assert self.mant is not None
        out = self.mant.astype(np.float64) * 2.0 ** self.exp
        if self.lo is not None:
            out = out + self.lo.astype(np.float64) * 2.0 ** self.exp_lo
        return sp.csr_matrix(out)

    def host_current(self, x: np.ndarray) -> np.ndarray:
        """``W x`` in LSBs (before rounding) for the host-fed map: ``x`` is ``[n_src, k]``."""
        if self.mant is None:
            assert self.real is not None
            return self.real @ x
        acc = (self.mant @ x) * 2.0 ** self.exp
        if self.lo is not None:
            acc = acc + (self.lo @ x) * 2.0 ** self.exp_lo
        return acc


@dataclass
class FixedPop:
    """A population's integer parameters (all values in units of ``q``)."""

    name: str
    q: float
    c: np.ndarray  # input scale folded into the weights, per neuron
    maps: dict[str, FixedMap] = field(default_factory=dict)
    threshold: np.ndarray | None = None
    dv: np.ndarray | None = None
    bias_mant: np.ndarray | None = None
    bias_exp: np.ndarray | None = None
    # weight_bits=16: what the 13-bit bias register misses, in whole LSBs (|res| <= 64), added
    # every step by a synapse (exponent 0) from the always-on neuron BIAS_SOURCE, or by the host
    # for a host-fed population; None: the register holds the bias to the LSB
    bias_res: np.ndarray | None = None
    v_reset: np.ndarray | None = None
    v_sub: np.ndarray | None = None
    v_init: np.ndarray | None = None
    # CubaLIF: the synaptic current's 12-bit decay and the membrane's own constant input (v_leak/tau);
    # ``bias`` then feeds the current, as the map biases do in the graph
    du: np.ndarray | None = None
    bias_v: np.ndarray | None = None
    v_floor: np.ndarray | None = None  # Sinabs' min_v_mem on the state grid: V = max(V, v_floor) after the reset
    # multi-spike: the largest spike count one step can send (a graded payload, <= COUNT_MAX), which
    # its targets take as their largest input value; None for single-spike and non-spiking layers
    count_max: int | None = None
    bound_lsb: float = 0.0  # worst-case |state| in LSBs
    errors: dict[str, float] = field(default_factory=dict)
    # state_scale="neuron": each neuron's own state unit (volts per LSB, <= q; its integers are in units
    # of it); None: q for every neuron
    unit: np.ndarray | None = None

    @property
    def units(self) -> np.ndarray:
        """The state unit of every neuron (``q`` everywhere unless ``unit`` is set)."""
        return np.full(len(self.c), self.q) if self.unit is None else self.unit

    @property
    def bias(self) -> np.ndarray:
        """The bias register, ``mant << exp`` (without the residual)."""
        assert self.bias_mant is not None and self.bias_exp is not None
        return self.bias_mant.astype(np.int64) << self.bias_exp.astype(np.int64)

    @property
    def bias_total(self) -> np.ndarray:
        """The constant input per step in LSBs: the register plus the residual, if any."""
        return self.bias if self.bias_res is None else self.bias + self.bias_res


def _full(v: Any, n: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(v, dtype=np.float64).reshape(-1) if np.ndim(v) else
                           np.asarray(v, dtype=np.float64), (n,)).astype(np.float64)


def _scale_rows(m: sp.csr_matrix, c: np.ndarray) -> sp.csr_matrix:
    return sp.csr_matrix(sp.diags(c) @ m)


def input_scale(pop: Population, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(c, leak bias) folding the neuron's ``g/tau`` and ``v_leak/tau`` into its inputs.

    CubaLIF (Loihi's CUBA compartment, ``u = u (1 - du) + in``, ``v = v (1 - dv) + u + bias_v``):
    the current is kept in membrane units, ``u' = (g/tau) syn``, so ``c`` also carries the
    current's input gain: ``w_in/tau_syn`` (NIR order: ``syn += (w_in x - syn)/tau_syn``) or
    ``w_in`` (Norse order: the current jumps by the input, drives v, then decays: u before the decay).
    """
    if pop.kind != "neuron":
        return np.ones(n), np.zeros(n)
    st = pop.step
    assert st is not None
    g = _full(st.gain, n)
    if st.tau is None:
        return g, np.zeros(n)
    tau = _full(st.tau, n)
    c = g / tau
    if st.tau_syn is not None:
        c = c * _full(st.w_in, n)
        if st.syn_order == "nir":
            c = c / _full(st.tau_syn, n)
    return c, _full(st.v_leak, n) / tau


def check_fixed_support(pop: Population) -> None:
    st = pop.step
    if st is None:
        return
    what = None
    if st.tau_syn is not None and st.tau is None:
        what = "a synaptic current without a membrane leak"
    if what:
        raise UserError(f"node {pop.name!r}: the fixed-point Lava backend does not implement {what}; "
                        "use --target lava (floating point)")


HOST_WEIGHTS = ("8bit", "float")
WEIGHT_BITS = (8, 16)  # 16: weight splitting (two 8-bit synapse sets per map)


def check_weight_bits(weight_bits: Any) -> int:
    try:
        bits = int(weight_bits)
    except (TypeError, ValueError):
        bits = -1
    if bits not in WEIGHT_BITS or (isinstance(weight_bits, float) and weight_bits != bits):
        raise UserError(f"unknown weight precision {weight_bits!r}; valid choices: "
                        f"{', '.join(map(str, WEIGHT_BITS))} (16: each map as two 8-bit synapse sets)")
    return bits


def quantize_layout(layout: Layout, input_bound: float = 1.0,
                    host_weights: str = "8bit", weight_bits: int = 8,
                    state_scale: str = DEFAULT_STATE_SCALE) -> dict[str, FixedPop]:
    """Quantise every population of ``layout`` (see the module docstring); name the layer on failure.

    ``host_weights="float"`` keeps the host-computed first map in float64 (only the current it
    produces is rounded to the state grid): the first layer then models an input encoder running
    on a CPU (host or Loihi 2's embedded cores) rather than on-chip 8-bit synapses. Otherwise the
    host map follows ``weight_bits``: 8 (one 8-bit mantissa per weight) or 16 (weight splitting,
    two synapse sets per map; module docstring).

    ``state_scale="neuron"`` gives each spiking neuron its own state unit where that rounds its
    incoming weights more finely (module docstring, "Per-neuron state units"); ``"layer"`` keeps one
    unit per population.
    """
    neuron_units = check_state_scale(state_scale) == "neuron"
    if host_weights not in HOST_WEIGHTS:
        raise UserError(f"unknown host weight mode {host_weights!r}; valid choices: "
                        f"{', '.join(HOST_WEIGHTS)}")
    split = check_weight_bits(weight_bits) == 16
    T = layout.time_steps
    incoming: dict[str, list] = {}
    for c in layout.conns:
        incoming.setdefault(c.dst, []).append(c)
    out: dict[str, FixedPop] = {}
    for name, pop in layout.pops.items():
        check_fixed_support(pop)
        n = pop.n
        c, leak_bias = input_scale(pop, n)
        maps: dict[str, tuple[sp.csr_matrix, float]] = {}
        counts: dict[str, float] = {}  # the largest input value per source, for the count bound
        for conn in incoming.get(name, []):
            m = sp.identity(n, format="csr") if conn.matrix is None else conn.matrix
            counts[conn.src] = _largest_input(name, conn, layout, out)
            maps[conn.src] = (_scale_rows(m, c), min(counts[conn.src], SIZING_COUNT), True)
        bias = np.zeros(n) if pop.bias is None else pop.bias.copy()
        if pop.host:
            assert pop.host_matrix is not None, "lower(..., fixed_point=True) builds the host map"
            maps["<host>"] = (_scale_rows(pop.host_matrix, c), input_bound, host_weights == "8bit")
            if pop.host_bias is not None:
                bias = bias + pop.host_bias
        cuba = pop.kind == "neuron" and pop.step is not None and pop.step.tau_syn is not None
        b = c * bias + (0.0 if cuba else leak_bias)  # CubaLIF: the map bias feeds the current
        out[name] = _quantize_pop(pop, maps, b, c, T, split, bias_v=leak_bias if cuba else None,
                                  neuron_units=neuron_units)
        if pop.spiking and pop.step is not None and pop.step.multi_spike:
            out[name].count_max = _count_bound(pop, out[name], counts, input_bound)
    return out


def _largest_input(name: str, conn: Any, layout: Layout, done: dict[str, FixedPop]) -> float:
    """The largest value one step of ``conn``'s source sends: 1 for 0/1 spikes, the count bound of a
    multi-spike source (a graded payload); real values (a non-spiking source) are refused."""
    if not conn.graded:
        return 1.0
    src = layout.pops[conn.src]
    if not (src.spiking and src.step is not None and src.step.multi_spike):
        raise UserError(f"node {name!r}: its input {conn.src!r} sends real values (a non-spiking "
                        "layer); the fixed-point Lava backend supports only spikes between layers")
    if conn.recurrent or conn.src not in done:
        raise UserError(f"node {name!r}: it receives the multi-spike layer {conn.src!r} over a loop edge; the "
                        "fixed-point Lava backend bounds a spike count from the layers before it only")
    count = done[conn.src].count_max
    assert count is not None
    return float(count)


def _count_bound(pop: Population, fp: FixedPop, counts: dict[str, float], input_bound: float) -> int:
    """The largest spike count one step of a multi-spike layer can send, ``floor(U / th)`` at the
    largest charge U, from its quantised integers: U never exceeds the 24-bit register; after a step
    V is below the threshold (soft reset by the threshold, hard or zero reset) or at
    ``v_reset``/``v_init``, so one step adds at most the drive ``sum |mant| 2**e x_max + |bias|`` LSBs
    (``x_max``: 1 for spikes, the source's count bound, ``input_bound`` from the host). A CubaLIF's
    current, or a soft reset by something other than the threshold, can build up over steps: then
    only the register bounds U. The signed 24-bit graded payload always holds the count (U fits the
    same 24 bits and th >= 1); the refusals are upstream: the threshold levels of step 3."""
    st = pop.step
    assert st is not None and fp.threshold is not None and fp.v_reset is not None and fp.v_init is not None
    th_min = int(fp.threshold.min())
    state_cap = STATE_MAX
    by_threshold = st.reset in ("hard", "zero_next") or (fp.v_sub is not None and np.array_equal(fp.v_sub, fp.threshold))
    if fp.unit is not None:
        return _count_bound_rows(pop, fp, counts, input_bound)
    if st.tau_syn is None and by_threshold:
        drive = float(np.abs(fp.bias_total).max(initial=0))
        for key, fmap in fp.maps.items():
            x_max = input_bound if key == "<host>" else counts[key]
            if fmap.mant is None:  # a float host map: W'/q, rounded once per step
                drive += float(np.asarray(abs(fmap.real).sum(axis=1)).max(initial=0)) * x_max + 0.5
                continue
            drive += float(np.asarray(abs(fmap.lsb()).sum(axis=1)).max(initial=0)) * x_max + (0.5 if key == "<host>" else 0)
        start = max(int(fp.threshold.max()), int(fp.v_reset.max()), int(fp.v_init.max()))
        top = min(state_cap, start + math.ceil(drive))
    else:
        top = state_cap
    count = max(top, 0) // th_min
    # the 24-bit register holds U <= 2**23 - 1 and th >= 1, so a 24-bit payload holds every count
    assert count <= COUNT_MAX, (pop.name, count)
    return int(count)


def _count_bound_rows(pop: Population, fp: FixedPop, counts: dict[str, float], input_bound: float) -> int:
    """:func:`_count_bound` neuron by neuron, for per-neuron units (each neuron's charge and
    threshold are in its own unit): ``max_i floor((start_i + drive_i) / th_i)``."""
    st = pop.step
    assert st is not None and fp.threshold is not None and fp.v_reset is not None and fp.v_init is not None
    by_threshold = st.reset in ("hard", "zero_next") or (fp.v_sub is not None and np.array_equal(fp.v_sub, fp.threshold))
    if st.tau_syn is None and by_threshold:
        drive = np.abs(fp.bias_total).astype(np.float64)  # per neuron, in its own LSBs
        for key, fmap in fp.maps.items():
            x_max = input_bound if key == "<host>" else counts[key]
            if fmap.mant is None:
                drive = drive + np.asarray(abs(fmap.real).sum(axis=1)).reshape(-1) * x_max + 0.5
                continue
            host_round = 0.5 if key == "<host>" else 0.0
            drive = drive + np.asarray(abs(fmap.lsb()).sum(axis=1)).reshape(-1) * x_max + host_round
        start = np.maximum(np.maximum(fp.threshold, fp.v_reset), fp.v_init)
        top = np.minimum(STATE_MAX, start + np.ceil(drive))
    else:
        top = np.full(len(fp.threshold), float(STATE_MAX))
    count = int(np.max(np.maximum(top, 0) // fp.threshold, initial=0))
    assert count <= COUNT_MAX, (pop.name, count)
    return count


def _quantize_pop(pop: Population, maps: dict[str, tuple[sp.csr_matrix, float, bool]], b: np.ndarray,
                  c: np.ndarray, T: int, split: bool = False, bias_v: np.ndarray | None = None,
                  neuron_units: bool = False) -> FixedPop:
    """One population through steps 2-6 of the module docstring (step 1 made ``maps``, ``b``, ``c``).

    ``maps``: source -> (W', largest input value, quantised on chip?); ``b``: the folded bias b';
    ``bias_v``: a CubaLIF's constant membrane input (then ``b`` feeds its current).
    """
    consts = _Constants.of(pop)
    bound, m_max = _worst_case(pop, maps, b, T, consts, bias_v)
    q, binding = _finest_unit(bound, m_max, b)
    fp = FixedPop(name=pop.name, q=q, c=c)
    if consts.v_th is not None:
        fp.q = q = _threshold_unit(pop.name, consts.v_th, q, binding, m_max)
        fp.threshold = np.round(consts.v_th / q).astype(np.int64)
        if neuron_units and pop.kind == "neuron" and bool(np.all(consts.v_th > 0)):
            fp.unit = _neuron_units(pop, maps, b, T, consts, bias_v, q, m_max, fp.threshold)
            if fp.unit is not None:
                fp.threshold = np.round(consts.v_th / fp.unit).astype(np.int64)
        rel = np.abs(fp.threshold * fp.units - consts.v_th) / np.maximum(np.abs(consts.v_th), 1e-300)
        fp.errors["threshold_rel"] = float(np.max(rel))
    for key, (w, _, on_chip) in maps.items():
        if on_chip:
            fp.maps[key] = _quantize_map(pop.name, key, w, q, m_max[key], split, fp.unit)
        elif fp.unit is None:
            fp.maps[key] = FixedMap(key, None, 0, 0.0, 0.0, real=(w / q).tocsr())
        else:
            fp.maps[key] = FixedMap(key, None, 0, 0.0, 0.0, real=sp.csr_matrix(sp.diags(1.0 / fp.unit) @ w))
    if pop.kind == "neuron":
        _reset_init_decay(fp, pop, consts)
    if bias_v is not None:
        assert pop.step is not None and pop.step.tau_syn is not None
        fp.bias_v = np.round(bias_v / fp.units).astype(np.int64)
        tau_syn = _full(pop.step.tau_syn, pop.n)
        fp.du = np.round(DECAY_UNITY / tau_syn).astype(np.int64)
        fp.errors["decay_syn_abs"] = float(np.max(np.abs(fp.du / DECAY_UNITY - 1.0 / tau_syn)))
    _quantize_bias(fp, pop, b, split)
    _error_summary(fp, b, bound, split)
    return fp


@dataclass(frozen=True)
class _Constants:
    """A population's real-valued fixed values per neuron (None where it has none)."""

    v_th: np.ndarray | None = None
    v_reset: np.ndarray | None = None
    v_init: np.ndarray | None = None
    v_sub: np.ndarray | None = None

    @classmethod
    def of(cls, pop: Population) -> _Constants:
        n, st = pop.n, pop.step
        if pop.kind == "neuron":
            assert st is not None
            v_init, v_reset = _full(st.v_init, n), _full(st.v_reset, n)
            if st.spiking:
                return cls(v_th=_full(st.v_th, n), v_reset=v_reset, v_init=v_init, v_sub=_full(st.v_sub, n))
            return cls(v_reset=v_reset, v_init=v_init)
        if pop.kind == "threshold":
            return cls(v_th=_full(pop.threshold, n))
        return cls()


def _worst_case(pop: Population, maps: dict[str, tuple[sp.csr_matrix, float, bool]], b: np.ndarray, T: int,
                consts: _Constants, bias_v: np.ndarray | None = None) -> tuple[float, dict[str, float]]:
    """Step 3's bound B of |state| (the charge accumulated over the neuron's memory plus its fixed
    values), and the largest |W'| of every map quantised on chip. A CubaLIF's current holds up to
    tau_syn steps of input, its membrane tau steps of that current plus ``bias_v``."""
    n, st = pop.n, pop.step
    R = np.abs(b).copy()
    m_max: dict[str, float] = {}
    for key, (w, xmax, on_chip) in maps.items():
        R += np.asarray(abs(w).sum(axis=1)).reshape(-1) * xmax
        if on_chip:
            m_max[key] = float(abs(w).max()) if w.nnz else 0.0
    r = float(R.max()) if n else 0.0
    if pop.kind == "neuron":
        assert st is not None and consts.v_init is not None and consts.v_reset is not None
        if _held_in_one_step(st, consts):
            # multi-spike with the floor: V stays in [v_floor, v_th) (or at v_reset/v_init), so |U| is one
            # step of drive beyond that; the rounding of the weights (< max|W'|/128 per synapse, the
            # largest mantissa having at least 7 bits) and of the bias are added so that it is a bound
            for key, (w, xmax, on_chip) in maps.items():
                if on_chip and w.nnz:
                    R += np.diff(w.indptr) * (m_max[key] / 128) * xmax
            fixed_vals = [np.abs(consts.v_init).max(), np.abs(consts.v_reset).max(), np.abs(consts.v_th).max(),
                          np.abs(_full(st.v_floor, n)).max()]
            return (float(R.max()) + max(fixed_vals)) * (1 + 2.0 ** -10), m_max
        horizon = T if st.tau is None else float(np.max(st.tau))
        if st.tau_syn is not None:
            r = r * float(np.max(st.tau_syn)) + float(np.abs(bias_v).max(initial=0.0) if bias_v is not None else 0)
        fixed_vals = [np.abs(consts.v_init).max(), np.abs(consts.v_reset).max()]
        if consts.v_th is not None and consts.v_sub is not None:
            fixed_vals += [np.abs(consts.v_th).max(), np.abs(consts.v_sub).max()]
        return r * horizon + max(fixed_vals), m_max
    if pop.kind == "threshold":
        assert consts.v_th is not None
        return r + float(np.abs(consts.v_th).max()), m_max
    # readout integrator: the sum over T of its current
    return r * (T if pop.readout in ("sum", "mean") else 1), m_max


def _held_in_one_step(st: Any, consts: _Constants) -> bool:
    """Whether a neuron's membrane is back below its threshold (and above its floor) after every step:
    multi-spike (all of U's multiples of the threshold leave), reset by the threshold itself or to
    v_reset, with Sinabs' floor and no synaptic current (which could build up over steps)."""
    if not (st.spiking and st.multi_spike and st.v_floor is not None and st.tau_syn is None):
        return False
    return st.reset in ("hard", "zero_next") or bool(np.array_equal(consts.v_sub, consts.v_th))


def _worst_case_rows(pop: Population, maps: dict[str, tuple[sp.csr_matrix, float, bool]], b: np.ndarray,
                     T: int, consts: _Constants, bias_v: np.ndarray | None,
                     m_max: dict[str, float]) -> np.ndarray:
    """:func:`_worst_case`'s bound of |state| for each neuron of a spiking population on its own."""
    n, st = pop.n, pop.step
    assert st is not None and consts.v_th is not None
    assert consts.v_init is not None and consts.v_reset is not None
    R = np.abs(b).astype(np.float64)
    for _, (w, xmax, _) in maps.items():
        R = R + np.asarray(abs(w).sum(axis=1)).reshape(-1) * xmax
    fixed = np.maximum(np.maximum(np.abs(consts.v_init), np.abs(consts.v_reset)), np.abs(consts.v_th))
    if _held_in_one_step(st, consts):
        for key, (w, xmax, on_chip) in maps.items():
            if on_chip and w.nnz:
                R = R + np.diff(w.indptr) * (m_max[key] / 128) * xmax
        return (R + np.maximum(fixed, np.abs(_full(st.v_floor, n)))) * (1 + 2.0 ** -10)
    horizon = T if st.tau is None else _full(st.tau, n)
    if st.tau_syn is not None:
        R = R * _full(st.tau_syn, n) + (np.abs(bias_v) if bias_v is not None else 0.0)
    if consts.v_sub is not None:
        fixed = np.maximum(fixed, np.abs(consts.v_sub))
    return R * horizon + fixed


def _neuron_units(pop: Population, maps: dict[str, tuple[sp.csr_matrix, float, bool]], b: np.ndarray, T: int,
                  consts: _Constants, bias_v: np.ndarray | None, q: float, m_max: dict[str, float],
                  threshold: np.ndarray) -> np.ndarray | None:
    """Per-neuron state units (``state_scale="neuron"``): neuron i's finest unit ``q_i'`` that its own
    24-bit state bound, its bias register and its largest incoming weight of each map (at that map's
    exponent, which the population's q sets) allow, then ``q_i = V_th_i / floor(V_th_i / q_i')`` so
    its threshold stays an exact integer. The neurons of one channel of a ``(C, H, W)`` population
    share one unit (the coarsest of theirs), so that a conv kernel's weight keeps one mantissa at
    every position. A neuron (channel) keeps q where its own unit rounds its incoming weights no
    better (summed squared error, volts): weights already on q's grid (a checkpoint written back
    by finetune-fixed) keep their mantissas. None if no neuron changes."""
    assert consts.v_th is not None
    need = _worst_case_rows(pop, maps, b, T, consts, bias_v, m_max) / STATE_MAX
    need = np.maximum(need, np.abs(b) / (BIAS_MANT_MAX * 2.0 ** BIAS_EXP_MAX))
    exps: dict[str, int] = {}
    for key, (w, _, on_chip) in maps.items():
        if not on_chip or m_max[key] == 0.0:
            continue
        exps[key] = max(math.ceil(math.log2(m_max[key] / (WEIGHT_MANT[1] * q))), WEIGHT_EXP[0])
        row_max = np.asarray(abs(w).max(axis=1).todense()).reshape(-1)
        need = np.maximum(need, row_max / (WEIGHT_MANT[1] * 2.0 ** exps[key]))
    group = np.arange(pop.n) // (pop.n // pop.shape[0]) if len(pop.shape) == 3 and pop.n else np.arange(pop.n)
    n_groups = int(group.max(initial=-1)) + 1
    group_need = np.zeros(n_groups)
    np.maximum.at(group_need, group, need)
    with np.errstate(divide="ignore"):
        levels = np.floor(consts.v_th / group_need[group])
    levels = np.where(np.isfinite(levels), levels, threshold)
    finer = levels > threshold
    if not np.any(finer):
        return None
    unit = np.where(finer, consts.v_th / np.where(finer, levels, 1), q)
    err_q, err_u = np.zeros(n_groups), np.zeros(n_groups)
    for key, e in exps.items():
        w = maps[key][0]
        rows = np.repeat(np.arange(pop.n), np.diff(w.indptr))
        for units, err in ((np.full(pop.n, q), err_q), (unit, err_u)):
            step = units[rows] * 2.0 ** e
            sq = (np.clip(np.round(w.data / step), *WEIGHT_MANT) * step - w.data) ** 2
            err += np.bincount(group[rows], sq, minlength=n_groups)
    keep = finer & (err_u < err_q)[group]
    if not np.any(keep):
        return None
    return np.where(keep, unit, q)


def _finest_unit(bound: float, m_max: dict[str, float], b: np.ndarray) -> tuple[float, str]:
    """Step 3's q_min and the constraint that binds it."""
    limits = {
        "state could overflow 24 bits": bound / STATE_MAX,
        "weights would saturate the 8-bit mantissa at exponent 7": max(m_max.values(), default=0.0) / (
            WEIGHT_MANT[1] * 2.0 ** WEIGHT_EXP[1]),
        "the bias would saturate its 13-bit mantissa at exponent 7": float(np.abs(b).max(initial=0.0)) / (
            BIAS_MANT_MAX * 2.0 ** BIAS_EXP_MAX),
    }
    binding = max(limits, key=limits.get)  # type: ignore[arg-type]
    q_min = limits[binding]
    if not q_min > 0:
        q_min = 1.0  # nothing flows into this layer: any unit will do
    return q_min, binding


def _threshold_unit(name: str, v_th: np.ndarray, q_min: float, binding: str,
                    m_max: dict[str, float]) -> float:
    """Step 3 for a spiking population: one positive threshold becomes an exact integer; too few
    threshold levels at q_min is a UserError naming the binding constraint."""
    if bool(np.all(v_th == v_th[0])) and v_th[0] > 0:
        levels = math.floor(v_th[0] / q_min)
        if levels < MIN_THRESHOLD_LEVELS:
            raise UserError(
                f"node {name!r}: out of the fixed-point range: {binding} (threshold {v_th[0]:g} would "
                f"get {levels} levels, at least {MIN_THRESHOLD_LEVELS} needed; max |w|/threshold = "
                f"{max(m_max.values(), default=0.0) / v_th[0]:.3g})")
        return float(v_th[0] / levels)
    levels_f = float(np.min(np.abs(v_th[v_th != 0]))) / q_min if np.any(v_th != 0) else math.inf
    if levels_f < MIN_THRESHOLD_LEVELS:
        raise UserError(f"node {name!r}: out of the fixed-point range: {binding} (the smallest "
                        f"threshold gets {levels_f:.1f} levels, at least {MIN_THRESHOLD_LEVELS} "
                        "needed)")
    return q_min


def _reset_init_decay(fp: FixedPop, pop: Population, consts: _Constants) -> None:
    """Steps 2 and 6: reset, subtrahend and initial values on the state grid; the 12-bit decay."""
    st, q = pop.step, fp.units
    assert st is not None and consts.v_init is not None and consts.v_reset is not None
    fp.v_init = np.round(consts.v_init / q).astype(np.int64)
    fp.v_reset = np.round(consts.v_reset / q).astype(np.int64)
    if consts.v_sub is not None:
        fp.v_sub = np.round(consts.v_sub / q).astype(np.int64)
    if st.v_floor is not None:  # -v_th: minus the threshold, an exact integer
        fp.v_floor = np.round(_full(st.v_floor, pop.n) / q).astype(np.int64)
    if st.tau is not None:
        tau = _full(st.tau, pop.n)
        fp.dv = np.round(DECAY_UNITY / tau).astype(np.int64)
        fp.errors["decay_abs"] = float(np.max(np.abs(fp.dv / DECAY_UNITY - 1.0 / tau)))


def _quantize_bias(fp: FixedPop, pop: Population, b: np.ndarray, split: bool) -> None:
    """Step 5: per-neuron 13-bit mantissa and exponent in [0, 7]; with ``split``, the residual."""
    q = fp.units
    mag = np.abs(b) / q
    with np.errstate(divide="ignore"):
        bexp = np.where(mag > BIAS_MANT_MAX, np.ceil(np.log2(np.maximum(mag, 1e-300) / BIAS_MANT_MAX)), 0)
    bexp = np.clip(bexp, 0, BIAS_EXP_MAX).astype(np.int64)
    fp.bias_exp = bexp
    fp.bias_mant = np.clip(np.round(b / q / 2.0 ** bexp), -BIAS_MANT_MAX, BIAS_MANT_MAX).astype(np.int64)
    # split: biases with exponent > 0 are off by up to 2**(exp-1) LSBs, so send the rest. The residual
    # synapse's spikes arrive one Lava step late: only populations that start integrating after step 0
    # of their window (delay >= 1), or whose host adds it, can use it
    if split and (pop.host or pop.delay >= 1):
        res = np.round(b / q).astype(np.int64) - fp.bias
        assert np.abs(res).max(initial=0) <= 2 ** (BIAS_EXP_MAX - 1), (pop.name, np.abs(res).max())
        fp.bias_res = res if np.any(res != 0) else None


def _error_summary(fp: FixedPop, b: np.ndarray, bound: float, split: bool) -> None:
    """What the rounding cost, for ``inspect-nir --target lava-fixed`` and the benchmarks."""
    q = fp.units
    fp.errors["bias_abs_in_lsb"] = float(np.max(np.abs(fp.bias_total * q - b) / q, initial=0.0))
    fp.bound_lsb = bound / fp.q
    rel = [m.rel_err_max for m in fp.maps.values()]
    fp.errors["weight_rel_max"] = max(rel, default=0.0)
    fp.errors["weight_rel_rms"] = max((m.rel_err_rms for m in fp.maps.values()), default=0.0)
    if split:
        fp.errors["weight_exp_lo_clipped"] = float(any(m.exp_lo_clipped for m in fp.maps.values()))


def _quantize_map(name: str, src: str, w: sp.csr_matrix, q: float, m: float,
                  split: bool = False, unit: np.ndarray | None = None) -> FixedMap:
    """Steps 4 (and the split): the exponent from the population's unit ``q``; the mantissas on
    ``q 2**e``, or on each row's ``unit_i 2**e`` with per-neuron units."""
    if m == 0.0:
        return FixedMap(src, sp.csr_matrix(w.shape, dtype=np.int64), 0, 0.0, 0.0)
    e = math.ceil(math.log2(m / (WEIGHT_MANT[1] * q)))
    if e > WEIGHT_EXP[1]:  # q >= m / (127 * 2**7) makes this impossible
        raise AssertionError((name, src, e))
    if e < WEIGHT_EXP[0]:
        top = m / (q * 2.0 ** WEIGHT_EXP[0])
        if top < 1.0:
            src_txt = "the input" if src == "<host>" else repr(src)
            raise UserError(f"node {name!r}: out of the fixed-point range: its weights from {src_txt} (max "
                            f"{m:.3g}) underflow the 8-bit mantissa at exponent {WEIGHT_EXP[0]} next to its "
                            f"24-bit state range")
        e = WEIGHT_EXP[0]
    step = q * 2.0 ** e if unit is None else np.repeat(unit, np.diff(w.indptr)) * 2.0 ** e
    mant_f = np.clip(np.round(w.data / step), *WEIGHT_MANT)
    err = mant_f * step - w.data
    fmap = FixedMap(src, _int_map(w, mant_f), int(e), 0.0, 0.0)
    if split:
        e_lo = e - 8
        if e_lo < WEIGHT_EXP[0]:
            e_lo, fmap.exp_lo_clipped = WEIGHT_EXP[0], True
        d = e - e_lo  # bits the lo set adds below the hi set (8 unless clipped)
        if d > 0:
            # round once to the lo step, then split v = hi 2**d + lo with lo in [-2**(d-1), 2**(d-1)):
            # hi is the 8-bit rounding except at ties of the residual, and |error| <= lo step / 2
            step_lo = step * 2.0 ** (e_lo - e) if unit is not None else q * 2.0 ** e_lo
            v = np.round(w.data / step_lo)
            hi = np.clip(np.floor((v + 2.0 ** (d - 1)) / 2.0 ** d), *WEIGHT_MANT)
            lo = np.clip(v - hi * 2.0 ** d, *WEIGHT_MANT)
            if np.any(lo != 0):
                mant_f = hi
                err = (hi * 2.0 ** d + lo) * step_lo - w.data
                fmap.mant, fmap.lo, fmap.exp_lo = _int_map(w, hi), _int_map(w, lo), int(e_lo)
    fmap.rel_err_max = float(np.abs(err).max() / m)
    fmap.rel_err_rms = float(np.linalg.norm(err) / max(np.linalg.norm(w.data), 1e-300))
    return fmap


def _int_map(w: sp.csr_matrix, data: np.ndarray) -> sp.csr_matrix:
    """``w``'s sparsity pattern with ``data`` (integer-valued floats) as int64, zeros dropped."""
    out = sp.csr_matrix((data.astype(np.int64), w.indices.copy(), w.indptr.copy()), shape=w.shape)
    out.eliminate_zeros()
    return out


def shift(acc: np.ndarray, e: int) -> np.ndarray:
    """``acc * 2**e`` on integers, flooring for negative e (an arithmetic right shift)."""
    acc = np.asarray(acc, dtype=np.int64)
    return np.left_shift(acc, e) if e >= 0 else np.right_shift(acc, -e)


def decay(v: np.ndarray, dv: np.ndarray) -> np.ndarray:
    """Loihi's leak, ``v (4096 - dv) >> 12`` rounded toward zero (Lava's bit-accurate LIF)."""
    prod = v.astype(np.int64) * (DECAY_UNITY - dv)
    return np.sign(prod) * np.right_shift(np.abs(prod), 12)


# ---------------------------------------------------------------- Loihi 2 resources


def loihi2_resources(layout: Layout, quant: dict[str, FixedPop] | None = None) -> dict[str, Any]:
    """Cores each population needs under :data:`LOIHI2`'s per-core limits (synapses counted
    at the destination core, explicitly, i.e. without convolutional weight sharing).

    With ``quant`` (quantize_layout's result), a split map (weight_bits=16) counts twice: its
    second synapse set has the connectivity of the first."""
    incoming: dict[str, list] = {}
    for c in layout.conns:
        incoming.setdefault(c.dst, []).append(c)
    rows = []
    total_cores = 0
    fits = True
    for name, pop in layout.pops.items():
        n = pop.n
        fan = _fan_in(layout, pop, incoming.get(name, []), quant)
        synapses = int(fan.sum())
        max_fan = int(fan.max()) if n else 0
        row: dict[str, Any] = {"name": name, "neurons": n, "synapses": synapses, "max_fan_in": max_fan}
        if max_fan > LOIHI2["synapses_per_core"]:
            row["cores"] = None
            row["note"] = (f"fan-in {max_fan} exceeds one core's synapse capacity "
                           f"{LOIHI2['synapses_per_core']}")
            fits = False
        else:
            per_core = min(LOIHI2["neurons_per_core"],
                           LOIHI2["synapses_per_core"] // max(max_fan, 1))
            cores = _pack(fan)
            row["cores"] = cores
            row["neurons_per_core_at_max_fan_in"] = per_core
            total_cores += cores
        rows.append(row)
    if quant is not None and any(fp.bias_res is not None and not layout.pops[k].host for k, fp in quant.items()):
        rows.append({"name": BIAS_SOURCE, "neurons": 1, "synapses": 0, "max_fan_in": 0, "cores": 1,
                     "neurons_per_core_at_max_fan_in": LOIHI2["neurons_per_core"]})
        total_cores += 1  # counted as its own core; on a chip it can share one
    chips = math.ceil(total_cores / LOIHI2["cores_per_chip"]) if fits else None
    return {"layers": rows, "total_cores": total_cores if fits else None, "chips": chips,
            "limits": {k: v for k, v in LOIHI2.items() if k != "sources"}, "sources": LOIHI2["sources"]}


def _fan_in(layout: Layout, pop: Population, incoming: list, quant: dict[str, FixedPop] | None) -> np.ndarray:
    """Synapses per neuron of ``pop``: its incoming maps (a split map twice), the host-fed map and,
    with weight splitting, the bias residual synapse."""
    def sets(src: str) -> int:  # a float host map is counted as one set too
        maps = quant[pop.name].maps if quant is not None else {}
        return max(1, maps[src].sets) if src in maps else 1

    fan = np.zeros(pop.n, dtype=np.int64)
    if quant is not None and quant[pop.name].bias_res is not None:
        fan += quant[pop.name].bias_res != 0  # one synapse from the bias source (or host) per neuron
    for conn in incoming:
        if conn.matrix is not None:
            fan += np.diff(conn.matrix.indptr) * sets(conn.src)
    if pop.host:
        if pop.host_matrix is None:
            from backends.lava.lowering import host_map

            by_name = {op.name: op for op in layout.plan.ops}
            pop.host_matrix, pop.host_bias = host_map(layout.plan, pop.host, by_name)
        fan += np.diff(pop.host_matrix.indptr) * sets("<host>")
    return fan


def _pack(fan: np.ndarray) -> int:
    """Cores for neurons with fan-in ``fan``, packed in order until either per-core limit is hit
    (fan-in varies at conv borders)."""
    cores, used_n, used_s = 1 if len(fan) else 0, 0, 0
    for f in fan:
        if used_n + 1 > LOIHI2["neurons_per_core"] or used_s + int(f) > LOIHI2["synapses_per_core"]:
            cores += 1
            used_n, used_s = 0, 0
        used_n += 1
        used_s += int(f)
    return cores

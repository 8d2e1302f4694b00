"""A population's :class:`~exporters.canonical.NeuronStep` as a NEST 3.10 model and parameters.

Pure numpy (no NEST import): what each population needs to follow docs/DESIGN.md's step
exactly. The measurements behind the two models are in docs/NEST.md section 1; in short:

* ``iaf_psc_delta`` (hard reset, non-spiking LI/I readouts, bare Threshold nodes):
  ``y = P30 (y0 + I_e) + P33 y + sum(w of spikes arriving)``, clamp at ``V_min``, spike on
  ``y >= V_th``, then ``y = V_reset`` (t_ref = 0). With I_e = 0 and no current events this
  is ``y = d y + in``; ``d = P33 = exp(-h/tau_m)`` is calibrated to ``1 - 1/tau`` and the
  synaptic weights carry ``gain/tau``, which is DESIGN's ``U = V + (gain I - (V - V_leak))/tau``
  relative to E_L = V_leak.
* ``eprop_iaf`` (soft reset): ``v = P_i i_in + z_in + P_v v``, clamp at ``V_min``, spike on
  ``v >= V_th`` and then ``v -= V_th`` in the same step (NEST 3.10.0's code; its
  documentation says "next step"). That is DESIGN's
  ``V = U - V_th S`` with ``U = d V + in``. A reset amount other than the threshold, and
  snnTorch's delayed subtraction, add a one-step autapse of weight :func:`autapse`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Union

import numpy as np

from exporters.canonical import NeuronStep, Op
from pipeline.errors import UserError

Arr = np.ndarray
Param = Union[float, np.ndarray]

# Between observations every membrane is clamped to V_MIN by a pulse of CLAMP_WEIGHT, then
# brought back to exactly 0 (relative to E_L) by a pulse of d * 2**VMIN_EXP: in double
# arithmetic  (small + d 2**k) + d (-2**k) == 0  whenever |small| is below half an ulp of
# d 2**k, i.e. for any membrane value a network can reach (see devices.py).
VMIN_EXP = 1000
V_MIN = -(2.0 ** VMIN_EXP)
CLAMP_WEIGHT = -(2.0 ** 1020)
NEVER = 2.0 ** VMIN_EXP  # threshold of a population that must never spike
TAU_M_NO_LEAK = 1e300  # exp(-h / 1e300) == 1.0 exactly for any resolution h
MIN_COPIES = 4  # a multi-spike population's first number of copies (devices.py doubles it where too few)


def nest_tau_m(d: float, h: float) -> tuple[float, float]:
    """tau_m (ms) whose ``exp(-h / tau_m)`` (NEST's double arithmetic, libm exp) is ``d``.

    Returns (tau_m, the decay NEST will use). The continuous value ``-h / ln d`` can be an
    ulp off after rounding, so the neighbouring doubles are searched; where no double maps
    exactly (possible for d < 0.6, where one ulp of tau_m moves the decay by more than one
    ulp), the closest is taken. Python's ``math.exp`` is the same libm ``exp`` NEST calls.
    """
    if d >= 1.0:
        assert math.exp(-h / TAU_M_NO_LEAK) == 1.0
        return TAU_M_NO_LEAK, 1.0
    if d <= 0.0:
        tau = h / 2000.0  # exp(-2000) underflows to exactly 0
        return tau, math.exp(-h / tau)
    tau = -h / math.log(d)
    best, best_err = tau, abs(math.exp(-h / tau) - d)
    for _ in range(256):
        p = math.exp(-h / tau)
        err = abs(p - d)
        if err < best_err:
            best, best_err = tau, err
        if p == d:
            return tau, p
        tau = math.nextafter(tau, math.inf if p < d else 0.0)
    return best, math.exp(-h / best)


def _per_neuron(p: Param, shape: tuple[int, ...]) -> Arr:
    n = int(np.prod(shape))
    a = np.asarray(p, dtype=np.float64)
    if a.ndim == 0:
        return np.full(n, float(a))
    return np.broadcast_to(a, shape).reshape(-1).astype(np.float64)


def _compact(a: Arr) -> Param:
    """One value for the whole population when uniform (cheap to set in NEST), else the array."""
    return float(a[0]) if a.size and np.all(a == a[0]) else a


@dataclass
class PopSpec:
    """Everything the builder needs for one population (arrays are per neuron, C order)."""

    name: str
    model: str  # iaf_psc_delta | eprop_iaf | iaf_psc_exp_multisynapse (CubaLIF)
    size: int
    params: dict[str, Param]  # NEST status values (absolute potentials)
    decay: Arr  # d, exactly as NEST computes P33 / P_v
    scale: Arr  # factor on every input current: gain / tau (leaky) or gain
    spiking: bool
    restore: Arr  # weight of the restore pulse: d * 2**VMIN_EXP
    init: Arr | None  # window-start pulse d * (v_init - E_L) where the start is not E_L
    autapse: Arr | None  # one-step self-connection weight (eprop_iaf variants)
    v_correction: Arr | None  # reference V(T) = recorded V_m + v_correction * S(T)
    clamp: Arr | None = None  # weight of the clamp pulse (None: CLAMP_WEIGHT)
    leak_bias: Arr | None = None  # per-step input carrying the leak toward v_leak when E_L is elsewhere
    receptor: int = 0  # receptor_type of every connection into the population (0: NEST's default)
    tau_syn: Arr | None = None  # CubaLIF: tau_syn (ms) per neuron, set after creation (a list parameter)
    early_clamp: bool = False  # a refractory step (zero_next) can swallow the clamp: clamp one step earlier too
    lists: dict[str, Arr] | None = None  # gif_psc_exp: list parameters (q_stc, tau_stc), one value per neuron
    v_offset: Arr | None = None  # gif_psc_exp: recorded V_m is relative to v_leak; add this
    fresh: bool = False  # needs a fresh network per observation (gif_psc_exp's currents cannot be reset)
    recheck: Recheck | None = None  # soft_recheck: the helper population and the connections between them
    windowed: bool = False  # a membrane floor holds the reset: nothing but the restore pulse may arrive on that step
    copies: int = 1  # multi-spike: copies per neuron (multi_spike_spec), copy-major
    grid: tuple[Arr, ...] = ()  # multi-spike: the potentials its copies add (thresholds, floor), for adds_exactly
    reach: float = 0.0  # multi-spike: the largest of them in magnitude
    # multi-spike: one-step jumps from a copy's own spike [copies*n], from another copy's [n]
    cross: tuple[Arr, Arr] | None = None


@dataclass
class Recheck:
    """snnTorch's ``reset_delay=False`` subtraction (``soft_recheck``) as two eprop_iaf populations.

    The graph tests ``U[t] - v_sub R[t] >= th`` with ``R[t] = (V[t-1] >= th)``, a second comparison
    on the membrane, and stores ``V = U - v_sub S``. NEST compares once per step, but both
    comparisons follow from ``U[t]`` and ``R[t]``: ``S[t] = (U - v_sub R >= th)`` and
    ``R[t+1] = (U - v_sub (1 - R) >= th)``. Population A (the node's, recorded) holds
    ``a = U - v_sub R`` and spikes S; the helper B holds ``b = U - v_sub + v_sub R`` and spikes R
    of the next step. With eprop_iaf's own ``v -= theta`` after a spike (theta = V_th - E_L) and
    ``U[t] = d (U[t-1] - v_sub S[t-1]) + in[t]``, every term is a spike of the last two steps:

    * A: its autapse ``d (theta - v_sub)``; from B ``-v_sub`` (delay 1) and ``d v_sub`` (delay 2);
    * B: its autapse ``d theta + v_sub`` (delay 1) and ``-d v_sub`` (delay 2); from A ``-d v_sub``
      (delay 1); a bias ``-(1 - d) v_sub`` per step and ``-d v_sub`` more on the window's first
      step (``b[0] = U[0] - v_sub``, R[0] = 0 as the start is below the threshold).

    B receives everything A receives (inputs, loop, biases) and is reset between observations the
    same way. On a CubaLIF (gif_psc_exp, :func:`gif_spec`) the same jumps apply without the theta
    terms (gif does not reset itself): each own-spike jump of the next step is its spike-triggered
    current, every other jump goes through the current as a pulse pair, ``J / P21`` and ``-P11 J /
    P21`` a step later, whose contributions to V cancel from the second step on, and B's bias and
    start are such pairs from the window's clock and init generators.
    Checked against the reference in tests/test_recurrent.py.
    """

    spec: PopSpec  # B's own population
    # (from "a" | "b" | "clock" | "init", to "a" | "b", the membrane jump, delay in steps; 0 for the
    # generators: the population's window alignment)
    jumps: list[tuple[str, str, Arr, int]]
    via_current: tuple[Arr, Arr] | None = None  # gif: (P21, P11) per neuron of A and B


def _threshold(v_th: Param, compare: str, shape: tuple[int, ...]) -> Arr:
    th = _per_neuron(v_th, shape)
    # U > th  <=>  U >= nextafter(th, +inf) for doubles: NEST only has >=
    return np.nextafter(th, np.inf) if compare == ">" else th


def _decays(tau: Param | None, shape: tuple[int, ...], h: float) -> tuple[Arr, Arr]:
    """(tau_m per neuron, decay per neuron); one calibration per distinct tau."""
    n = int(np.prod(shape))
    if tau is None:
        return np.full(n, TAU_M_NO_LEAK), np.ones(n)
    taus = _per_neuron(tau, shape)
    uniq, inv = np.unique(taus, return_inverse=True)
    cal = [nest_tau_m(1.0 - 1.0 / float(t), h) for t in uniq]
    tau_m = np.array([c[0] for c in cal])[inv]
    decay = np.array([c[1] for c in cal])[inv]
    return tau_m, decay


def same_step_current(op: Op, loops_into_itself: bool) -> bool:
    """Whether a CubaLIF runs on ``gif_psc_exp`` (its current charges V in the step it arrives, so
    the population sits at its inputs' depth) rather than ``iaf_psc_exp_multisynapse`` (a step
    later): where the latter has no form, i.e. the subtractive resets (snnTorch's ``soft_next``,
    Synaptic's and RSynaptic's default, and ``soft_recheck``; ``soft``) and a loop into the current
    with snnTorch's delayed zero reset (RSynaptic). :func:`gif_spec` says why not a hard reset."""
    step = op.neuron
    if step is None or step.tau_syn is None or not step.spiking or step.multi_spike or step.v_floor is not None:
        return False
    return step.reset in ("soft", "soft_next", "soft_recheck") or (step.reset == "zero_next" and loops_into_itself)


def population_spec(op: Op, h: float, same_step: bool = False, copies: int = MIN_COPIES) -> PopSpec:
    """Map a neuron or Threshold op to NEST; UserError naming the node where NEST cannot.
    ``same_step``: a CubaLIF on gif_psc_exp (:func:`same_step_current`); ``copies``: of a
    multi-spike neuron (:func:`multi_spike_spec`)."""
    shape = op.out_shape
    n = int(np.prod(shape))
    if op.kind == "threshold":  # stateless S = (x >= theta): a neuron that forgets (d = 0)
        th = _threshold(op.params["threshold"], op.params["compare"], shape)
        tau_m, decay = _decays(1.0, shape, h)
        params: dict[str, Param] = {"E_L": 0.0, "V_m": 0.0, "V_th": _compact(th), "V_reset": _compact(th - 1.0),
                                    "tau_m": _compact(tau_m), "V_min": V_MIN, "t_ref": 0.0, "C_m": 1.0, "I_e": 0.0}
        return PopSpec(op.name, "iaf_psc_delta", n, params, decay, np.ones(n), True, decay * 2.0 ** VMIN_EXP,
                       None, None, None)
    step = op.neuron
    assert step is not None
    what = f"node {op.name!r} ({op.nir_type})"
    if step.multi_spike and step.spiking and step.tau is not None:
        raise UserError(f"{what}: multi-spike neurons with a leak have no exact NEST form (each copy would round its "
                        "own decay; docs/NEST.md section 6); the reference and Lava (lava) run them")
    if step.multi_spike and (step.reset != "soft" or step.tau_syn is not None or not step.spiking
                             or np.any(_per_neuron(step.v_th, shape) <= 0)
                             or np.any(_per_neuron(step.v_sub, shape) != _per_neuron(step.v_th, shape))):
        raise UserError(f"{what}: multi-spike neurons (several spikes per step, Sinabs) run on NEST only with a "
                        "positive threshold and Sinabs' subtraction of it (docs/NEST.md section 6); the reference "
                        "and Lava (lava) run them (a single-spike Sinabs model: --convention sinabs+single-spike)")
    if step.tau_syn is not None:
        if step.v_floor is not None:
            raise UserError(f"{what}: a membrane floor (Sinabs min_v_mem) on a CubaLIF has no NEST form; the "
                            "reference and Lava (lava) run it")
        return gif_spec(op, h) if same_step else cuba_spec(op, h)
    tau_m, decay = _decays(step.tau, shape, h)
    gain = _per_neuron(step.gain, shape)
    scale = gain if step.tau is None else gain / _per_neuron(step.tau, shape)
    v_init = _per_neuron(step.v_init, shape)
    # no leak: E_L only sets NEST's reference point, put it at the initial state
    e_l = v_init if step.tau is None else _per_neuron(step.v_leak, shape)
    leak_bias = None
    if step.tau is not None and step.spiking:
        # A neuron whose v_leak is at or above its threshold fires without input (two_lif_neurons.nir).
        # NEST's reset between observations leaves V at E_L, so E_L moves to the start v_init and the
        # pull toward v_leak becomes a constant input: U - E = d (V - E) + (v_leak - E)/tau + (g/tau) I.
        above = _threshold(step.v_th, step.compare, shape) <= e_l
        if np.any(above):
            v_leak = e_l
            e_l = np.where(above, v_init, v_leak)
            leak_bias = (v_leak - e_l) / _per_neuron(step.tau, shape)
    start = v_init - e_l
    init = decay * start if np.any(start != 0) else None
    params = {"E_L": _compact(e_l), "V_m": _compact(e_l), "tau_m": _compact(tau_m), "V_min": V_MIN, "t_ref": 0.0,
              "C_m": 1.0, "I_e": 0.0}
    restore = decay * 2.0 ** VMIN_EXP
    if not step.spiking:
        params.update(V_th=NEVER, V_reset=_compact(e_l))
        return PopSpec(op.name, "iaf_psc_delta", n, params, decay, scale, False, restore, init, None, None)
    th = _threshold(step.v_th, step.compare, shape)
    if np.any(th <= e_l):
        raise UserError(f"{what}: NEST needs the initial membrane below the threshold (the state reset between "
                        "observations rests there; a neuron that starts above it fires at once)")
    params["V_th"] = _compact(th)
    if step.reset in ("hard", "zero_next"):
        v_reset = _per_neuron(step.v_reset, shape)
        if np.any(v_reset >= th):
            raise UserError(f"{what}: NEST needs the reset potential below the threshold")
        params["V_reset"] = _compact(v_reset)
        zero_next = step.reset == "zero_next"
        if zero_next:  # the step after a spike: V held at V_reset, its arrivals discarded (refractory_step)
            params["t_ref"] = refractory_step(h)
        spec = PopSpec(op.name, "iaf_psc_delta", n, params, decay, scale, True, restore, init, None, None,
                       leak_bias=leak_bias, early_clamp=zero_next)
        return with_floor(spec, op, e_l, th, v_reset=v_reset)
    v_sub = _per_neuron(step.v_sub, shape)
    # eprop_iaf holds V_th relative to E_L and subtracts that (NEST 3.10's code): th - E_L
    a = np.zeros(n) if step.multi_spike else autapse(step.reset, decay, th - e_l, v_sub)
    corr = th - e_l - v_sub if step.reset in ("soft", "soft_recheck") else th - e_l
    params.update(c_reg=0.0)
    spec = PopSpec(op.name, "eprop_iaf", n, params, decay, scale, True, restore, init,
                   a if np.any(a != 0) else None, corr if np.any(corr != 0) else None, leak_bias=leak_bias)
    if step.reset == "soft_recheck":
        spec.v_correction = None  # V(T) needs R(T) too: a membrane readout of it is refused (devices.py)
        spec.recheck = recheck(spec, th - e_l, v_sub)
    spec = with_floor(spec, op, e_l, th, v_sub=v_sub)
    return multi_spike_spec(spec, _per_neuron(step.v_th, shape), e_l, copies) if step.multi_spike else spec


def grid_exponent(values: Param) -> int | None:
    """The largest g such that every value is a multiple of 2**g (None where all are zero)."""
    a = np.abs(np.asarray(values, dtype=np.float64)).reshape(-1)
    a = a[a != 0]
    if not a.size:
        return None
    m, e = np.frexp(a)
    mant = np.ldexp(m, 53).astype(np.int64)  # exact: a 53-bit integer
    low = mant & -mant
    return int(np.min(e - 53 + np.round(np.log2(low)).astype(np.int64)))


def adds_exactly(bound: float, *arrays: Param) -> bool:
    """Whether any sums of the values of ``arrays`` (and integer multiples of them) that stay within
    ``bound`` in magnitude are exact in double arithmetic: all lie on the grid of the finest."""
    gs = [g for g in (grid_exponent(a) for a in arrays) if g is not None]
    return not gs or bound < 2.0 ** (53 + min(gs))


def spike_thresholds(v_th: Arr, copies: int) -> Arr:
    """``[copies, n]``: for c = 1 .. copies the least double U with ``U / v_th >= c`` in double
    arithmetic, so that Sinabs' count ``trunc(U / v_th)`` (for U > 0, v_th > 0) is at least c
    exactly where ``U >= T_c`` (the rounded quotient can reach c a few ulps below ``c v_th``)."""
    out = np.empty((copies, v_th.size))
    uniq, inv = np.unique(v_th, return_inverse=True)
    for k, th in enumerate(uniq.tolist()):
        for c in range(1, copies + 1):
            t = c * th
            while t / th < c:
                t = math.nextafter(t, math.inf)
            while math.nextafter(t, -math.inf) / th >= c:
                t = math.nextafter(t, -math.inf)
            out[c - 1, inv == k] = t
    return out


def multi_spike_spec(spec: PopSpec, v_th: Arr, e_l: Arr, copies: int) -> PopSpec:
    """Sinabs' multi-spike IAF/LIF (``trunc(U / v_th)`` spikes, ``V = U - v_th S``) as ``copies``
    eprop_iaf neurons per neuron, copy-major (neuron i's copy c is ``c n + i``).

    Copy c fires where the count reaches c (threshold ``T_c``, :func:`spike_thresholds`), so the
    copies' spikes of one step sum to the count, and every connection out of the population leaves
    each copy with the neuron's weight. All copies must hold the same U: copy c subtracts its own
    ``T_c`` when it fires (eprop_iaf), and the next step's input brings every copy to
    ``d (U - v_th S) + in``: ``d (T_c - v_th)`` from its own spike and ``-d v_sub`` from each other
    copy's (delay 1, ``cross``). Where the last copy fires the count may exceed what the copies can
    show: devices.py then builds the network again with twice the copies and runs the observation
    again, so a count is never cut off. A membrane floor (:func:`with_floor`) is each copy's V_min.
    The copies sum otherwise than the graph, so they equal it only where no sum rounds: ``grid`` and
    ``reach`` let devices.py check that (:func:`adds_exactly`) and refuse otherwise.
    """
    n = spec.size
    theta = spike_thresholds(v_th, copies)  # [copies, n], relative to E_L (as eprop_iaf holds V_th)
    d = spec.decay

    def tile(a: Arr | None) -> Arr | None:
        return None if a is None else np.tile(a, copies)

    params: dict[str, Param] = {k: (np.tile(v, copies) if isinstance(v, np.ndarray) else v)
                                for k, v in spec.params.items()}
    params["V_th"] = (e_l[None, :] + theta).reshape(-1)
    own = (d[None, :] * (theta - v_th[None, :])).reshape(-1)
    floor = spec.params["V_min"] if spec.windowed else 0.0
    grid = (theta, v_th, np.asarray(floor, dtype=np.float64) - e_l, e_l)
    reach = float(np.max(np.abs(theta))) + float(np.max(np.abs(grid[2])))
    return replace(spec, grid=grid, reach=reach, size=n * copies, params=params, decay=tile(spec.decay),
                   scale=tile(spec.scale),
                   restore=tile(spec.restore), init=tile(spec.init), autapse=None, v_correction=None,
                   clamp=tile(spec.clamp), leak_bias=tile(spec.leak_bias), copies=copies, cross=(own, -d * v_th))


def with_floor(spec: PopSpec, op: Op, e_l: Arr, th: Arr, v_reset: Arr | None = None,
               v_sub: Arr | None = None) -> PopSpec:
    """``spec`` with the plan's membrane floor (Sinabs' ``min_v_mem``) as NEST's ``V_min``.

    The plan floors V after the reset, NEST clamps at ``V_min`` before the spike test (both
    iaf_psc_delta and eprop_iaf, NEST 3.10): the two agree wherever no spiking neuron can end
    below the floor, i.e. ``v_reset >= floor`` (hard reset) or ``threshold - v_sub >= floor``
    (subtraction), which holds for every Sinabs IAF (floor -v_th, v_sub = v_th). The floor then also
    holds the reset between observations: the clamp pulse leaves V at the floor and the restore
    pulse ``-d (floor - E_L)`` returns it to exactly E_L, provided nothing else arrives on that step
    (``windowed``: the clocks then drive each population on its window only, devices.py).
    """
    step = op.neuron
    if step is None or step.v_floor is None:
        return spec
    what = f"node {op.name!r} ({op.nir_type})"
    floor = _per_neuron(step.v_floor, op.out_shape)
    raw_th = _per_neuron(step.v_th, op.out_shape)
    if step.reset not in ("hard", "soft") or spec.autapse is not None:
        raise UserError(f"{what}: a membrane floor (Sinabs min_v_mem) with reset {step.reset!r}"
                        f"{' and v_sub != v_th' if spec.autapse is not None else ''} has no NEST form; the "
                        "reference and Lava (lava) run it")
    low = v_reset < floor if v_reset is not None else raw_th - v_sub < floor  # type: ignore[operator]
    if np.any(low) or np.any(floor > e_l) or np.any(floor >= th):
        raise UserError(f"{what}: NEST applies a membrane floor (Sinabs min_v_mem) as V_min before the spike test, "
                        "which equals the graph's floor after the reset only where no neuron can reset below it and "
                        "the floor lies at or below the resting potential; the reference and Lava (lava) run it")
    spec.params["V_min"] = _compact(floor)
    spec.restore = -(spec.decay * (floor - e_l))
    spec.windowed = True
    # Sinabs' relu(V - f) + f rounds where V - f does; NEST's clamp does not: devices.py checks no sum rounds
    spec.grid = (th - e_l, floor - e_l, e_l) + (() if v_sub is None else (v_sub,))
    spec.reach = float(np.max(np.abs(th - e_l))) + float(np.max(np.abs(floor - e_l)))
    return spec


def recheck(a: PopSpec, theta: Arr, v_sub: Arr) -> Recheck:
    """The helper population and connections of :class:`Recheck` for population ``a``."""
    d = a.decay
    zero = np.zeros(a.size)
    bias = (zero if a.leak_bias is None else a.leak_bias) - (1.0 - d) * v_sub
    init = (zero if a.init is None else a.init) - d * v_sub
    b = PopSpec(f"{a.name}#recheck", a.model, a.size, dict(a.params), d, a.scale, True, a.restore, init,
                d * theta + v_sub, None, leak_bias=bias)
    return Recheck(b, [("b", "a", -v_sub, 1), ("b", "a", d * v_sub, 2), ("b", "b", -d * v_sub, 2),
                       ("a", "b", -d * v_sub, 1)])


def refractory_step(h: float) -> float:
    """t_ref (ms) of exactly one step, for snnTorch's delayed zero reset (``zero_next``).

    The plan's step after a spike is ``U = v_reset`` whatever arrives (its charge dropped; a
    CubaLIF's synaptic current still filters it). NEST 3.10's ``iaf_psc_delta`` and
    ``iaf_psc_exp_multisynapse`` reset V to ``V_reset`` at the spike and, for ``t_ref``'s steps,
    neither integrate nor test it; ``iaf_psc_delta`` discards the spikes arriving then (without
    ``refractory_input``), ``iaf_psc_exp_multisynapse`` adds them to its currents as usual. One
    refractory step is that plan step; the spike's own step differs only in the V it leaves (the
    plan keeps U there), which no spike depends on (:func:`population_spec` refuses a read of it).
    """
    return h


def autapse(reset: str, decay: Arr, th: Arr, v_sub: Arr) -> Arr:
    """Self-connection weight (one step) turning eprop_iaf's ``v -= V_th`` into the plan's reset.

    eprop_iaf: ``U[t+1] = d (U[t] - th S[t]) + in``. Plan ``soft``: ``d (U[t] - v_sub S[t])``,
    so ``a = d (th - v_sub)``; ``soft_next`` (snnTorch): ``d U[t] - v_sub S[t]``, so
    ``a = d th - v_sub``. Zero (no autapse) for the usual ``v_sub == V_th``, ``>=``.
    """
    if reset in ("soft", "soft_recheck"):  # soft_recheck: population A of Recheck
        return decay * (th - v_sub)
    if reset == "soft_next":
        return decay * th - v_sub
    raise AssertionError(reset)


# ---------------------------------------------------------------- CubaLIF / CubaLI


def propagator_32(tau_syn: float, tau: float, c_m: float, h: float) -> float:
    """NEST 3.10's ``propagator_32`` (libnestutil/propagator_stability.cpp): the factor by which
    ``iaf_psc_exp(_multisynapse)`` adds the current of the previous step to the membrane."""
    p32_linear = 1.0 / (2.0 * c_m * tau * tau) * h * h * (tau_syn - tau) * math.exp(-h / tau)
    p32_singular = h / c_m * math.exp(-h / tau)
    p32 = -tau / (c_m * (1 - tau / tau_syn)) * math.exp(-h / tau_syn) * math.expm1(h * (1 / tau_syn - 1 / tau)) \
        if tau != tau_syn else p32_singular
    if tau == tau_syn or (abs(tau - tau_syn) < 0.1 and abs(p32 - p32_singular) > 2.0 * abs(p32_linear)):
        return p32_singular
    return p32


def _apart(tau_s: Arr, tau_m: Arr, h: float) -> Arr:
    """tau_syn moved off an equal tau_m to the neighbouring double whose decay ``exp(-h/tau_syn)``
    is closest to the calibrated one (equal where one exists, else an ulp off, as
    :func:`nest_tau_m` settles): iaf_psc_exp_multisynapse refuses equal time constants (NEST 3.10:
    "Membrane and synapse time constant(s) must differ"), although its propagator has the limit
    (``propagator_32``'s near-singular branches, computed as NEST computes them)."""
    tau_s = tau_s.copy()
    for i in np.nonzero(tau_s == tau_m)[0]:
        p = math.exp(-h / tau_s[i])
        best, best_err = float(tau_s[i]), math.inf
        for direction in (math.inf, 0.0):
            t = float(tau_s[i])
            for _ in range(8):
                t = math.nextafter(t, direction)
                err = abs(math.exp(-h / t) - p)
                if err < best_err:
                    best, best_err = t, err
        tau_s[i] = best
    return tau_s


@dataclass(frozen=True)
class _CubaCommon:
    """What both NEST forms of a CubaLIF (:func:`cuba_spec`, :func:`gif_spec`) start from: the op's
    step, its size, its name for errors, its resting potential and its calibrated decays."""

    step: NeuronStep
    shape: tuple[int, ...]
    n: int
    what: str
    v_leak: Arr
    tau_m: Arr
    p_m: Arr  # membrane decay per neuron
    tau_s: Arr
    p_s: Arr  # current decay per neuron


def _cuba_common(op: Op, h: float, must_start: str) -> _CubaCommon:
    """The CubaLIF op's :class:`_CubaCommon`; UserError ``on NEST <must_start>`` where it does not start
    each observation at v_leak (neither form can set its current's state between observations)."""
    step = op.neuron
    assert step is not None and step.tau_syn is not None and step.tau is not None
    shape = op.out_shape
    what = f"node {op.name!r} ({op.nir_type})"
    v_leak = _per_neuron(step.v_leak, shape)
    if np.any(_per_neuron(step.v_init, shape) != v_leak):
        raise UserError(f"{what}: on NEST {must_start}")
    tau_m, p_m = _decays(step.tau, shape, h)
    tau_s, p_s = _decays(step.tau_syn, shape, h)
    return _CubaCommon(step, shape, int(np.prod(shape)), what, v_leak, tau_m, p_m, tau_s, p_s)


def _current_scale(step: NeuronStep, shape: tuple[int, ...], tau_s: Arr, tau_m: Arr, c_m: Arr,
                   h: float) -> tuple[Arr, Arr]:
    """(P21 per neuron, the weight scale ``b (g/tau) / P21``) for a current of time constant tau_s
    into a membrane of tau_m and capacity c_m: ``b = w_in / tau_syn`` in NIR's order, ``w_in`` in
    Norse's (jump then decay). One propagator per distinct (tau_s, tau_m, c_m)."""
    triples, inv = np.unique(np.stack([tau_s, tau_m, c_m]), axis=1, return_inverse=True)
    p21 = np.array([propagator_32(float(ts), float(tm), float(cm), h)
                    for ts, tm, cm in triples.T])[np.reshape(inv, -1)]
    b = _per_neuron(step.w_in, shape)
    if step.syn_order == "nir":
        b = b / _per_neuron(step.tau_syn, shape)
    return p21, b * (_per_neuron(step.gain, shape) / _per_neuron(step.tau, shape)) / p21


def cuba_spec(op: Op, h: float) -> PopSpec:
    """A CubaLIF (CubaLI) op as ``iaf_psc_exp_multisynapse`` with one receptor (any sign).

    NEST's step is ``V = P22 V + P21 i`` with the current of the previous step, then
    ``i = P11 i + in``: with ``P11`` calibrated to ``1 - 1/tau_syn``, ``P22`` to ``1 - 1/tau`` and
    the weights scaled by ``b (g/tau) / P21`` (``b = w_in/tau_syn``, NIR order; ``w_in``, Norse's
    jump-then-decay order), V is the plan's membrane one step after the current: the population
    is one step deeper than its inputs (``backends.common.layout``, ``lag``). Between
    observations the clamp pulse ``+C`` (a power of two) sets ``i = C`` exactly, the next step's
    ``V = P21 C`` crosses any threshold, so V resets to ``V_reset = E_L`` exactly, and the restore
    pulse ``-P11 C`` returns ``i`` to exactly 0 (devices.py). Hence a hard reset to the resting
    potential and a start there are required; snnTorch's delayed zero reset (``zero_next``) adds
    one refractory step (:func:`refractory_step`), during which the current keeps integrating.
    """
    c = _cuba_common(op, h, "a CubaLIF must start each observation at its resting potential v_leak (its reset "
                            "between observations passes through V_reset = v_leak)")
    step, shape, n, what, e_l, tau_m, p22 = c.step, c.shape, c.n, c.what, c.v_leak, c.tau_m, c.p_m
    tau_s = _apart(c.tau_s, tau_m, h)
    p11 = np.array([math.exp(-h / t) for t in tau_s])  # libm's exp, as NEST (numpy's may differ by an ulp)
    p21, scale = _current_scale(step, shape, tau_s, tau_m, np.ones(n), h)
    params: dict[str, Param] = {"E_L": _compact(e_l), "V_m": _compact(e_l), "tau_m": _compact(tau_m), "C_m": 1.0,
                                "t_ref": 0.0, "I_e": 0.0, "V_reset": _compact(e_l)}
    if step.spiking:
        if step.reset not in ("hard", "zero_next"):  # the subtractions go to gif_spec (same_step_current)
            raise UserError(f"{what}: reset {step.reset!r} has no iaf_psc_exp_multisynapse form; the reference "
                            "and Lava (lava, lava-fixed) run it")
        if step.reset == "zero_next":  # the membrane held one step, the current still integrating
            params["t_ref"] = refractory_step(h)
        if np.any(_per_neuron(step.v_reset, shape) != e_l):
            raise UserError(f"{what}: on NEST a CubaLIF must reset to its resting potential v_leak")
        th = _threshold(step.v_th, step.compare, shape)
        if np.any(th <= e_l):
            raise UserError(f"{what}: NEST needs the threshold above the resting potential v_leak")
        params["V_th"] = _compact(th)
        reach = float(np.max(np.abs(th - e_l)))
    else:
        params["V_th"] = NEVER
        reach = NEVER
    # the clamp's V = P21 C must cross the threshold with room to spare, and stay finite
    k = math.ceil(math.log2(4.0 * reach / float(np.min(p21))))
    if k > 1021:
        raise UserError(f"{what}: its synaptic time constant is too short for NEST's per-observation reset "
                        "at this dt")
    clamp = np.full(n, 2.0 ** max(k, 1000))
    return PopSpec(op.name, "iaf_psc_exp_multisynapse", n, params, p22, scale, step.spiking, -p11 * clamp,
                   None, None, None, clamp=clamp, receptor=1, tau_syn=tau_s)


# gif_psc_exp's escape noise made a sharp threshold: lambda = LAMBDA_0 exp((V - V_T) / DELTA_V)
# is +inf above V_T (any V - V_T >= one ulp of a potential away from 0 overflows the exponent), and
# LAMBDA_0 at V == V_T, so the spike probability -expm1(-lambda h) is exactly 1 there, and exactly
# 0 below (exp underflows to 0, lambda == 0 and no random number is drawn): V >= V_T, deterministic.
GIF_DELTA_V = 1e-300
GIF_LAMBDA_0 = 1e300  # 1/s


def gif_spec(op: Op, h: float) -> PopSpec:
    """A CubaLIF as ``gif_psc_exp`` (NEST 3.10, models/gif_psc_exp.cpp), whose step is, in order:
    ``I = P11 I + (spikes arriving)`` (one current per weight sign, both with tau_syn here), then
    ``V = P33 V + P21 I + P31 E_L - P30 stc``, then the spike test on that V. The current charges V
    in the step it arrives, so the population sits at its inputs' depth (lag 0) and a loop into its
    current takes one step, as the graph's. With ``g_L = 1``, ``C_m = tau_m`` (so ``C_m/g_L`` is
    tau_m exactly), ``E_L = 0`` (potentials relative to v_leak: the leak toward it is exact) and the
    weights scaled by ``b (g/tau) / P21`` this is the graph's ``U = d V + (g/tau) syn``.

    It has no reset of its own in the spike's step: after a spike, ``t_ref`` steps hold V at
    ``V_reset`` (no test, the currents still integrating), and a spike-triggered current ``stc``
    adds ``-P30 q_stc`` to the next step's V. One refractory step is snnTorch's delayed zero reset
    (``zero_next``); ``t_ref = 0`` with ``q_stc = v_sub / P30`` and a tau_stc whose decay
    underflows to 0 is its delayed subtraction (``soft_next``), with ``d v_sub / P30`` the same-step
    one (``soft``: only V(T) differs, corrected) and population A of :class:`Recheck`
    (``soft_recheck``). A hard reset has no form here. Its currents are not status entries NEST lets one write, and the inhibitory one only
    receives negative weights, so no pulse returns it to exactly 0 between observations: a
    population on it needs a fresh network per observation (``fresh``), and starts at v_leak.
    """
    c = _cuba_common(op, h, "this CubaLIF (gif_psc_exp) must start each observation at its resting potential "
                            "v_leak")
    step, shape, n, what, v_leak = c.step, c.shape, c.n, c.what, c.v_leak
    tau_m, p33, tau_s, p11 = c.tau_m, c.p_m, c.tau_s, c.p_s
    assert step.v_th is not None
    p21, scale = _current_scale(step, shape, tau_s, tau_m, tau_m, h)  # C_m = tau_m
    th = _threshold(step.v_th, step.compare, shape) - v_leak
    if np.any(th <= 0):
        raise UserError(f"{what}: NEST needs the threshold above the resting potential v_leak")
    params: dict[str, Param] = {"E_L": 0.0, "V_m": 0.0, "g_L": 1.0, "C_m": _compact(tau_m),
                                "tau_syn_ex": _compact(tau_s), "tau_syn_in": _compact(tau_s), "V_T_star": _compact(th),
                                "Delta_V": GIF_DELTA_V, "lambda_0": GIF_LAMBDA_0, "I_e": 0.0}
    lists = None
    if step.reset == "zero_next":
        v_reset = _per_neuron(step.v_reset, shape) - v_leak
        if np.any(v_reset >= th):
            raise UserError(f"{what}: NEST needs the reset potential below the threshold")
        params.update(t_ref=refractory_step(h), V_reset=_compact(v_reset))
    elif step.reset in ("soft", "soft_next", "soft_recheck"):
        # gif_psc_exp's P30 in its order (C_m = tau_m), with libm's expm1 as NEST calls it
        p30 = np.array([(-1.0 / t) * math.expm1(-h / t) * t for t in tau_m])
        params.update(t_ref=0.0, V_reset=0.0)
        v_sub = _per_neuron(step.v_sub, shape)
        # soft_next: -v_sub on the next step; soft and soft_recheck's A: -d v_sub (V = U - v_sub S decays first)
        jump = v_sub if step.reset == "soft_next" else p33 * v_sub
        lists = {"q_stc": jump / p30, "tau_stc": np.full(n, h / 2000.0)}
    else:
        raise AssertionError(step.reset)
    # soft: the graph's V(T) is already reduced by v_sub S(T), gif's not until the next step
    corr = -v_sub if step.reset == "soft" else None
    spec = PopSpec(op.name, "gif_psc_exp", n, params, p33, scale, True, np.zeros(n), None, None, corr,
                   lists=lists, v_offset=v_leak if np.any(v_leak != 0) else None, fresh=True)
    if step.reset == "soft_recheck":
        d = p33
        b = PopSpec(f"{op.name}#recheck", spec.model, n, dict(params), d, scale, True, spec.restore, None, None,
                    None, lists={"q_stc": -v_sub / p30, "tau_stc": lists["tau_stc"]}, fresh=True)
        spec.recheck = Recheck(b, [("b", "a", -v_sub, 1), ("b", "a", d * v_sub, 2), ("b", "b", -d * v_sub, 2),
                                   ("a", "b", -d * v_sub, 1), ("clock", "b", -(1.0 - d) * v_sub, 0),
                                   ("init", "b", -d * v_sub, 0)], via_current=(p21, p11))
    return spec

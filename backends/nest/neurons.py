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
from dataclasses import dataclass
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


def population_spec(op: Op, h: float) -> PopSpec:
    """Map a neuron or Threshold op to NEST; UserError naming the node where NEST cannot."""
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
    if step.multi_spike:
        raise UserError(f"{what}: multi-spike neurons (several spikes per step, Sinabs) cannot run on NEST "
                        "(a single-spike Sinabs model: --convention sinabs+single-spike)")
    if step.v_floor is not None:
        raise UserError(f"{what}: a membrane floor (Sinabs min_v_mem) has no NEST form (V_min holds the reset "
                        "between observations); --convention sinabs+no-floor if the model had none")
    if step.tau_syn is not None:
        return cuba_spec(op, h)
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
        return PopSpec(op.name, "iaf_psc_delta", n, params, decay, scale, True, restore, init, None, None,
                       leak_bias=leak_bias, early_clamp=zero_next)
    v_sub = _per_neuron(step.v_sub, shape)
    # eprop_iaf holds V_th relative to E_L and subtracts that (NEST 3.10's code): th - E_L
    a = autapse(step.reset, decay, th - e_l, v_sub)
    corr = th - e_l - v_sub if step.reset == "soft" else th - e_l
    params.update(c_reg=0.0)
    return PopSpec(op.name, "eprop_iaf", n, params, decay, scale, True, restore, init,
                   a if np.any(a != 0) else None, corr if np.any(corr != 0) else None, leak_bias=leak_bias)


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
    if reset == "soft":
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
    step = op.neuron
    assert step is not None and step.tau_syn is not None and step.tau is not None
    shape = op.out_shape
    n = int(np.prod(shape))
    what = f"node {op.name!r} ({op.nir_type})"
    e_l = _per_neuron(step.v_leak, shape)
    if np.any(_per_neuron(step.v_init, shape) != e_l):
        raise UserError(f"{what}: on NEST a CubaLIF must start each observation at its resting potential "
                        "v_leak (its reset between observations passes through V_reset = v_leak)")
    tau_m, p22 = _decays(step.tau, shape, h)
    tau_s, p11 = _decays(step.tau_syn, shape, h)
    pairs, inv = np.unique(np.stack([tau_s, tau_m]), axis=1, return_inverse=True)
    p21 = np.array([propagator_32(float(ts), float(tm), 1.0, h) for ts, tm in pairs.T])[np.reshape(inv, -1)]
    b = _per_neuron(step.w_in, shape)
    if step.syn_order == "nir":
        b = b / _per_neuron(step.tau_syn, shape)
    scale = b * (_per_neuron(step.gain, shape) / _per_neuron(step.tau, shape)) / p21
    params: dict[str, Param] = {"E_L": _compact(e_l), "V_m": _compact(e_l), "tau_m": _compact(tau_m), "C_m": 1.0,
                                "t_ref": 0.0, "I_e": 0.0, "V_reset": _compact(e_l)}
    if step.spiking:
        if step.reset not in ("hard", "zero_next"):
            raise UserError(f"{what}: a CubaLIF with a subtractive reset (snnTorch Synaptic's default) has no "
                            "NEST form: iaf_psc_exp_multisynapse only resets to V_reset; the reference and Lava "
                            "(lava, lava-fixed) run it")
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

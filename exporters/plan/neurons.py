"""NIR neuron nodes -> :class:`~exporters.plan.ir.NeuronStep` (forward Euler at ``dt``).

Also the parameter readers every node builder shares: :func:`read_param` (present, finite,
float64), :func:`check_param_shape` (broadcasts to the node's input), :func:`collapse` (a
uniform parameter becomes a Python float, so the arithmetic matches torch's scalars) and
:func:`snap` (undoes the float noise of ``tau/dt``).

Each neuron class has one entry in :data:`NEURON_STEPS`; the graph's
:class:`~exporters.conventions.Convention` decides how tau, gains, resets and initial states
are read (docs/NIR.md, section 6).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import nir
import numpy as np
import torch

from exporters.conventions import Convention, snntorch_reset
from exporters.plan.ir import NeuronStep, Param
from pipeline.errors import UserError

# ---------------------------------------------------------------- parameters


def read_param(node: nir.NIRNode, name: str, attr: str) -> np.ndarray:
    """``node.attr`` as a finite float64 array, or a UserError naming the node."""
    value = getattr(node, attr, None)
    if value is None:
        raise UserError(f"node {name!r} ({type(node).__name__}): missing parameter {attr!r}")
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise UserError(f"node {name!r} ({type(node).__name__}): parameter {attr!r} is not finite")
    return arr


def check_param_shape(name: str, node: nir.NIRNode, arr: np.ndarray, shape: tuple[int, ...],
                      attr: str) -> None:
    """A per-neuron parameter must broadcast to the node's input shape (a scalar always does)."""
    if arr.size == 1:
        return
    try:
        ok = np.broadcast_shapes(arr.shape, shape) == shape
    except ValueError:
        ok = False
    if not ok:
        raise UserError(f"node {name!r} ({type(node).__name__}): parameter {attr!r} has shape "
                        f"{tuple(arr.shape)} but the node's input has shape {shape}")


def collapse(a: np.ndarray | float) -> Param:
    """A uniform parameter becomes a Python float (so the arithmetic matches torch's scalars)."""
    arr = np.asarray(a, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("empty parameter")
    flat = arr.reshape(-1)
    if np.all(flat == flat[0]):
        return float(flat[0])
    return arr


def snap(x: float) -> float:
    """Undo float noise of tau/dt and dt*r (2e-4/1e-4 must be exactly 2.0): round to 12 digits."""
    if x == 0 or not math.isfinite(x):
        return x
    nice = float(f"{x:.12g}")
    return nice if abs(nice - x) <= 1e-12 * abs(x) else x


def snap_param(p: Param) -> Param:
    if isinstance(p, float):
        return snap(p)
    return np.vectorize(snap, otypes=[np.float64])(p)


# ---------------------------------------------------------------- one neuron node


@dataclass(frozen=True)
class _Reader:
    """Reads one neuron node's parameters the way the graph's convention writes them."""

    name: str
    node: nir.NIRNode
    shape: tuple[int, ...]
    dt: float
    cv: Convention
    compare: str
    recurrent: bool = False  # a loop edge closes into this node (snnTorch's RLeaky / RSynaptic)

    def get(self, attr: str) -> np.ndarray:
        arr = read_param(self.node, self.name, attr)
        check_param_shape(self.name, self.node, arr, self.shape, attr)
        return arr

    def tau_steps(self, attr: str) -> Param:
        """A time constant in steps: ``tau/dt`` (Euler) or ``1/(1 - exp(-dt/tau))`` (exact)."""
        tau = self.get(attr)
        if self.cv.tau_written == "dt_times_tau":
            tau = tau / self.dt
        if np.any(tau <= 0):
            raise UserError(f"node {self.name!r} ({type(self.node).__name__}): {attr} must be positive")
        steps = tau / self.dt if self.cv.leak == "euler" else 1.0 / (1.0 - np.exp(-self.dt / tau))
        p = snap_param(collapse(steps))
        if np.any(np.asarray(p) < 1.0):
            raise UserError(f"node {self.name!r} ({type(self.node).__name__}): {attr}={float(np.min(tau)):g} "
                            f"is shorter than one step dt={self.dt:g}; forward Euler is unstable "
                            "(pass the right --dt)")
        return p

    def leaky_gain(self, tau_steps: Param | None = None) -> Param:
        """``r``; Sinabs' ``norm_input=False`` adds the input unscaled, ``a V + r x``: ``r tau``."""
        r = self.get("r")
        if self.cv.leaky_input == "raw" and tau_steps is not None:
            return collapse(r * np.asarray(tau_steps, dtype=np.float64))
        return snap_param(collapse(r))

    def integrator_gain(self) -> Param:
        r = self.get("r")
        return snap_param(collapse(r * self.dt if self.cv.if_gain == "euler" else r))

    def init(self, v_reset: Param, v_leak: Param) -> Param:
        return {"zero": 0.0, "v_leak": v_leak, "v_reset": v_reset}[self.cv.v_init]

    def spiking_reset(self, v_th: Param, v_reset: Param, synaptic: bool = False) -> dict[str, Any]:
        if self.cv.spiking_reset == "graph":
            return {"reset": "hard", "v_reset": v_reset}
        if self.cv.spiking_reset == "snntorch":  # per layer class (conventions.snntorch_reset)
            if np.any(np.asarray(v_th, dtype=np.float64) <= 0):
                # snnTorch's reset = (mem_prev > thr) then fires from a resting membrane and the
                # per-class resets derived for a positive threshold no longer hold
                raise UserError(f"node {self.name!r} ({type(self.node).__name__}): v_threshold <= 0 under the "
                                f"{self.cv.name} convention; its snnTorch reset is modelled for a positive "
                                "threshold only")
            reset = snntorch_reset(self.cv.snntorch_reset, self.cv.reset_delay, synaptic, self.recurrent)
            if self.cv.snntorch_reset == "zero":  # snnTorch zeroes the membrane, whatever v_reset says
                return {"reset": reset, "v_reset": 0.0}
            return {"reset": reset, "v_reset": v_reset, "v_sub": v_th}
        return {"reset": self.cv.spiking_reset, "v_reset": v_reset, "v_sub": v_th}

    @property
    def common(self) -> dict[str, Any]:
        return {"compare": self.compare, "multi_spike": self.cv.multi_spike}


def _lif(p: _Reader) -> NeuronStep:
    v_th, v_reset, v_leak = (collapse(p.get(a)) for a in ("v_threshold", "v_reset", "v_leak"))
    tau = p.tau_steps("tau")
    return NeuronStep(gain=p.leaky_gain(tau), tau=tau, v_leak=v_leak, v_th=v_th,
                      v_init=p.init(v_reset, v_leak), **p.spiking_reset(v_th, v_reset), **p.common)


def _if(p: _Reader) -> NeuronStep:
    v_th, v_reset = collapse(p.get("v_threshold")), collapse(p.get("v_reset"))
    floor = collapse(-np.asarray(v_th, dtype=np.float64)) if p.cv.if_floor else None
    return NeuronStep(gain=p.integrator_gain(), v_th=v_th, v_init=p.init(v_reset, 0.0), v_floor=floor,
                      **p.spiking_reset(v_th, v_reset), **p.common)


def _cuba_lif(p: _Reader) -> NeuronStep:
    v_th, v_reset, v_leak = (collapse(p.get(a)) for a in ("v_threshold", "v_reset", "v_leak"))
    return NeuronStep(gain=p.leaky_gain(), tau=p.tau_steps("tau_mem"), v_leak=v_leak, v_th=v_th,
                      tau_syn=p.tau_steps("tau_syn"), w_in=collapse(p.get("w_in")), syn_order=p.cv.cuba_order,
                      v_init=p.init(v_reset, v_leak), **p.spiking_reset(v_th, v_reset, synaptic=True),
                      **p.common)


def _cuba_li(p: _Reader) -> NeuronStep:
    v_leak = collapse(p.get("v_leak"))
    return NeuronStep(gain=p.leaky_gain(), tau=p.tau_steps("tau_mem"), v_leak=v_leak,
                      tau_syn=p.tau_steps("tau_syn"), w_in=collapse(p.get("w_in")), syn_order=p.cv.cuba_order,
                      v_init=0.0 if p.cv.v_init == "zero" else v_leak, compare=p.compare)


def _li(p: _Reader) -> NeuronStep:
    v_leak = collapse(p.get("v_leak"))
    tau = p.tau_steps("tau")
    return NeuronStep(gain=p.leaky_gain(tau), tau=tau, v_leak=v_leak,
                      v_init=0.0 if p.cv.v_init == "zero" else v_leak, compare=p.compare)


def _i(p: _Reader) -> NeuronStep:
    return NeuronStep(gain=p.integrator_gain(), v_init=0.0, compare=p.compare)


NEURON_STEPS: dict[type[nir.NIRNode], Callable[[_Reader], NeuronStep]] = {
    nir.LIF: _lif, nir.IF: _if, nir.CubaLIF: _cuba_lif, nir.CubaLI: _cuba_li, nir.LI: _li, nir.I: _i,
}


def neuron_step(name: str, node: nir.NIRNode, shape: tuple[int, ...], dt: float, cv: Convention,
                compare: str, recurrent: bool = False) -> NeuronStep:
    """NIR neuron node -> discrete step, normalised by the graph's convention (``recurrent``: a loop
    edge closes into the node, which some conventions step differently)."""
    step = next((NEURON_STEPS[c] for c in type(node).__mro__ if c in NEURON_STEPS), None)
    if step is None:
        raise AssertionError(type(node))
    return step(_Reader(name, node, shape, dt, cv, compare, recurrent))


def soft_loop_step(names: tuple[str, str, str], nodes: Mapping[str, nir.NIRNode], shape: tuple[int, ...],
                   dt: float, cv: Convention, compare: str) -> NeuronStep:
    """soma -> Threshold(theta) -> Scale(c) -> soma as one subtractive neuron.

    With the feedback one step late (the only way a loop can be run), the soma's state is the
    pre-reset membrane U: I soma ``v += g (x + c S)`` is ``U = V + g x`` with ``V = U - (-g c) S``;
    LI soma needs ``v_sub = -g c / (tau - 1)`` (docs/NIR.md derives both).
    """
    soma_name, th_name, sc_name = names
    soma, th, sc = nodes[soma_name], nodes[th_name], nodes[sc_name]
    base = neuron_step(soma_name, soma, shape, dt, cv, compare)
    theta = read_param(th, th_name, "threshold")
    check_param_shape(th_name, th, theta, shape, "threshold")
    c = read_param(sc, sc_name, "scale")
    check_param_shape(sc_name, sc, c, shape, "scale")
    g = np.asarray(base.gain, dtype=np.float64)
    if base.tau is None:
        v_sub = -g * c
    else:
        tau = np.asarray(base.tau, dtype=np.float64)
        if np.any(tau == 1.0) and np.any(c != 0):
            raise UserError(f"node {soma_name!r}: soft-reset loop around an LI with tau of one step cannot be "
                            "mapped to a subtractive neuron")
        v_sub = np.where(tau == 1.0, 0.0, -g * c / np.where(tau == 1.0, 2.0, tau - 1.0))
    return NeuronStep(gain=base.gain, tau=base.tau, v_leak=base.v_leak, v_th=collapse(theta), reset="soft",
                      v_sub=snap_param(collapse(v_sub)), compare=compare, v_init=base.v_init,
                      multi_spike=cv.multi_spike)

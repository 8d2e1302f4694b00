"""The Plan's arithmetic: what each synaptic op and neuron step computes, in torch.

The reference executor runs it, the simulators' host-side heads reuse it, and building a Plan
uses it to learn each map's output shape, so an op's meaning is written once, next to the op.
Written to perform, operation for operation, what ``pipeline.models`` and
``pipeline.neurons`` perform (same torch calls on the same shapes, uniform parameters as
Python floats, a gain of exactly 1 not multiplied), so that on our own graphs the results
are bit-identical to the torch model and the acceptance tolerance is never needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from exporters.plan.ir import NeuronStep, Op

Tensor = torch.Tensor
ParamT = float | Tensor


def apply_synapse(op: Op, x: Tensor, p: dict[str, Any]) -> Tensor:
    """Apply a synaptic op to a batch ``[M, *op.in_shape]``."""
    kind = op.kind
    if kind == "affine":
        return F.linear(x, p["weight"], p["bias"])
    if kind == "linear":
        return F.linear(x, p["weight"])
    if kind == "scale":
        s = p["scale"]
        return x * s
    if kind == "conv2d":
        return F.conv2d(x, p["weight"], p["bias"], stride=p["stride"], padding=p["padding"],
                        dilation=p["dilation"], groups=p["groups"])
    if kind == "flatten":
        start, end = p["start_dim"], p["end_dim"]
        # NIR's dims exclude the batch; negative dims count from the end either way
        return torch.flatten(x, start + 1 if start >= 0 else start, end + 1 if end >= 0 else end)
    if kind == "sumpool2d":
        return F.avg_pool2d(x, p["kernel_size"], p["stride"], p["padding"], divisor_override=1)
    if kind == "avgpool2d":
        return F.avg_pool2d(x, p["kernel_size"], p["stride"], p["padding"])
    raise AssertionError(kind)


def per_step(op: Op, value: Tensor, p: dict[str, Any]) -> Tensor:
    """Apply a synaptic op to ``[T', N, ...]`` as one batch of T'*N (like the torch model)."""
    lead = value.shape[:2]
    y = apply_synapse(op, value.reshape(lead[0] * lead[1], *value.shape[2:]), p)
    return y.reshape(*lead, *y.shape[1:])


def spike(u: Tensor, v_th: ParamT, compare: str, multi: bool) -> Tensor:
    if multi:  # Sinabs MultiSpike: trunc(U / V_th) spikes where U > 0
        return torch.where(u > 0, torch.div(u, v_th, rounding_mode="trunc"), torch.zeros_like(u))
    return (u >= v_th).to(u.dtype) if compare == ">=" else (u > v_th).to(u.dtype)


def run_neuron_counted(step: NeuronStep, current: Tensor, T: int, p: dict[str, ParamT]
                       ) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`run_neuron`, and the output summed over the T steps (a spiking population's spike
    counts). The numpy loop adds each step's spikes while they are still in the cache: summing
    the whole ``[T, N, ...]`` train afterwards reads it back from memory once T*N outgrows the
    cache. Counts of 0/1 spikes are exact integers, so the order of the sum changes no bit."""
    cur = current.expand(T, *current.shape[1:]) if current.shape[0] == 1 else current
    if _numpy_path(step, cur):
        return _run_neuron_numpy(step, cur, T, p, count=True)
    out, v = run_neuron(step, current, T, p)
    return out, v, out.sum(dim=0)


def run_neuron(step: NeuronStep, current: Tensor, T: int, p: dict[str, ParamT],
               membrane: list[Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Run a population over T steps from its initial state; return (output ``[T, N, ...]``, V(T)).

    The output is the spike train for spiking steps and the membrane trace otherwise.
    ``current`` may have a time dimension of 1 (constant input, docs/DESIGN.md's ``current``).
    ``membrane``, when given, receives U of every step (before the spike's reset): what
    ``run-backend --plot-raster`` draws; the arithmetic is the same either way.
    """
    cur = current.expand(T, *current.shape[1:]) if current.shape[0] == 1 else current
    if membrane is None and _numpy_path(step, cur):  # the same bits; the torch loop below keeps U per step
        out, v, _ = _run_neuron_numpy(step, cur, T, p)
        return out, v
    state = neuron_state(step, cur[0], p)
    out = [neuron_advance(step, cur[t], state, p, membrane) for t in range(T)]
    return torch.stack(out), state.v


@dataclass
class NeuronState:
    """A population's state between steps: membrane, synaptic current, the last spikes (soft_next)."""

    v: Tensor
    syn: Tensor | None = None
    s_prev: Tensor | None = None


def neuron_state(step: NeuronStep, like: Tensor, p: dict[str, ParamT]) -> NeuronState:
    """The state at the start of an observation, shaped like one step's input ``like``."""
    v_init = p["v_init"]
    v = torch.full_like(like, v_init) if isinstance(v_init, float) else v_init.expand_as(like).clone()
    return NeuronState(v, torch.zeros_like(like) if step.tau_syn is not None else None)


def neuron_advance(step: NeuronStep, x: Tensor, st: NeuronState, p: dict[str, ParamT],
                   membrane: list[Tensor] | None = None) -> Tensor:
    """One step of docs/DESIGN.md's neuron on input ``x``; updates ``st``, returns S (or U when
    non-spiking). :func:`run_neuron` is T of these; a recurrent plan calls it step by step."""
    gain, tau, v_leak = p["gain"], p["tau"], p["v_leak"]
    unit_gain = isinstance(gain, float) and gain == 1.0
    w_in = p["w_in"]
    unit_w = isinstance(w_in, float) and w_in == 1.0
    v, syn = st.v, st.syn
    if syn is not None:
        xin = x if unit_w else w_in * x
        if step.syn_order == "nir":
            syn = syn + (xin - syn) / p["tau_syn"]
            drive = syn
        else:  # norse: the current jumps by the input, drives v, then decays
            syn = syn + xin
            drive = syn
    else:
        drive = x
    if not unit_gain:
        drive = gain * drive
    u = v + drive if tau is None else v + (drive - (v - v_leak)) / tau
    if syn is not None and step.syn_order == "norse":
        syn = syn - syn / p["tau_syn"]
    st.syn = syn
    if step.reset == "soft_next" and st.s_prev is not None:
        u = u - p["v_sub"] * st.s_prev
    elif step.reset == "zero_next" and st.s_prev is not None:  # the charge after a spike is dropped
        u = torch.where(st.s_prev > 0, torch.as_tensor(p["v_reset"], dtype=u.dtype), u)
    if membrane is not None:
        membrane.append(u)
    if not step.spiking:
        st.v = u
        return u
    if step.reset == "soft_recheck":  # snnTorch reset_delay=False: the delayed reset, then its correction
        r = spike(v, p["v_th"], step.compare, False)
        u = u - p["v_sub"] * r
        s = spike(u, p["v_th"], step.compare, step.multi_spike)
        v = u - p["v_sub"] * (s - r)
        if step.v_floor is not None:
            v = torch.relu(v - p["v_floor"]) + p["v_floor"]
        st.v = v
        return s
    s = spike(u, p["v_th"], step.compare, step.multi_spike)
    if step.reset == "hard" and step.multi_spike:  # several spikes still reset once
        v = torch.where(s > 0, torch.as_tensor(p["v_reset"], dtype=u.dtype), u)
    elif step.reset == "hard":
        v = u * (1 - s) + p["v_reset"] * s
    elif step.reset == "soft":
        v = u - p["v_sub"] * s
    else:  # soft_next, zero_next: the reset lands on the next step
        v, st.s_prev = u, s
    if step.v_floor is not None:  # Sinabs' min_v_mem, as Sinabs writes it
        v = torch.relu(v - p["v_floor"]) + p["v_floor"]
    st.v = v
    return s


def _numpy_path(step: NeuronStep, cur: Tensor) -> bool:
    """Whether :func:`_run_neuron_numpy` can run this step: spiking, no synaptic current, hard or
    soft reset, one spike at most, no membrane floor, on CPU float32/float64 without autograd."""
    return (step.spiking and step.tau_syn is None and step.reset in ("hard", "soft") and not step.multi_spike
            and step.v_floor is None
            and cur.device.type == "cpu" and cur.dtype in (torch.float32, torch.float64)
            and not (torch.is_grad_enabled() and cur.requires_grad))


def _as_np(value: ParamT, dtype: Any) -> Any:
    return value.detach().numpy().astype(dtype, copy=False) if isinstance(value, Tensor) else dtype.type(value)


def _run_neuron_numpy(step: NeuronStep, cur: Tensor, T: int, p: dict[str, ParamT],
                      count: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
    """:func:`run_neuron`'s loop as in-place numpy ufuncs on preallocated buffers: the loop runs T
    times per layer, and at batch 1 the cost of a torch call, not the arithmetic, dominates it
    (as in pipeline.neurons' inference path). Each ufunc is the IEEE operation the torch
    expression performs, in the same order and on the same operands (scalars in the working
    dtype, as torch casts them), so the bits are those of the torch loop, signed zeros included.
    ``count``: also return the spikes summed over the steps (see :func:`run_neuron_counted`).
    """
    x = cur.detach().numpy()  # a view; a constant (stride-0) current stays one
    dt = x.dtype
    gain, tau, v_leak = p["gain"], p["tau"], p["v_leak"]
    unit_gain = isinstance(gain, float) and gain == 1.0
    g = None if unit_gain else _as_np(gain, dt)
    tau_ = None if tau is None else _as_np(tau, dt)
    leak = _as_np(v_leak, dt)
    th = _as_np(p["v_th"], dt)
    hard = step.reset == "hard"
    v_reset = _as_np(p["v_reset"], dt)
    v_sub = _as_np(p["v_sub"], dt)
    ge = step.compare == ">="
    shape = x.shape[1:]
    out = np.empty((T, *shape), dtype=dt)
    v = np.empty(shape, dtype=dt)
    v[...] = _as_np(p["v_init"], dt)
    a, b = np.empty(shape, dtype=dt), np.empty(shape, dtype=dt)
    mask = np.empty(shape, dtype=bool)
    one = dt.type(1)
    total = np.zeros(shape, dtype=dt) if count else None
    for t in range(T):
        drive = x[t]
        if g is not None:  # drive = gain * drive
            np.multiply(g, drive, out=b)
            drive = b
        if tau_ is None:  # u = v + drive
            np.add(v, drive, out=a)
        else:  # u = v + (drive - (v - v_leak)) / tau
            np.subtract(v, leak, out=a)
            np.subtract(drive, a, out=a)
            np.divide(a, tau_, out=a)
            np.add(v, a, out=a)
        s = out[t]
        (np.greater_equal if ge else np.greater)(a, th, out=mask)
        s[...] = mask  # 0/1 in the working dtype, as .to(u.dtype)
        if total is not None:
            np.add(total, s, out=total)
        if hard:  # v = u * (1 - s) + v_reset * s
            np.subtract(one, s, out=v)
            np.multiply(a, v, out=v)
            np.multiply(v_reset, s, out=b)
            np.add(v, b, out=v)
        else:  # v = u - v_sub * s
            np.multiply(v_sub, s, out=b)
            np.subtract(a, b, out=v)
    return torch.from_numpy(out), torch.from_numpy(v), None if total is None else torch.from_numpy(total)


def reduce_time(y: Tensor, how: str, T: int) -> Tensor:
    """Reduce an output series ``[T', N, ...]`` over time as the torch model does."""
    if y.shape[0] == 1 and T > 1:
        y = y.expand(T, *y.shape[1:])
    if how == "mean":
        return y.mean(dim=0)
    if how == "max":
        return y.max(dim=0).values
    if how == "last":
        return y[-1]
    acc = y[0]
    for t in range(1, y.shape[0]):  # sequential, like pipeline.neurons.integrate_layer
        acc = acc + y[t]
    return acc

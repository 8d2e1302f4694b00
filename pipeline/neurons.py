"""Discrete-time neuron dynamics of docs/DESIGN.md, multi-step, in torch.

Every function takes the whole input current of a layer over all T steps at once
(``[T, ...]``) and loops over time only for the element-wise state update; the synaptic
maps around it run once on a batch of T. The arithmetic is written exactly as in
docs/DESIGN.md ("Time-step semantics") because the reference executor and the backends are
checked against it to the last bit:

    LIF: U = V + (I - (V - V_r)) / tau        IF: U = V + I
    S = (U >= V_th)
    hard: V = U (1 - S) + V_r S               soft: V = U - V_th S
"""

from __future__ import annotations

import math

import numpy as np
import torch

from pipeline.spec import NeuronParams


class ATanSpike(torch.autograd.Function):
    """Heaviside step forward (x >= 0 spikes); arctan surrogate derivative backward.

    d/dx ~ (alpha / 2) / (1 + (pi/2 * alpha * x)^2), the ATan surrogate of Fang et al.
    as used by Liu et al. 2022 (alpha = 2).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        alpha = ctx.alpha
        grad = alpha / 2 / (1 + (math.pi / 2 * alpha * x) ** 2)
        return grad_out * grad, None


def spike_fn(u: torch.Tensor, v_th: float, alpha: float) -> torch.Tensor:
    if torch.is_grad_enabled() and u.requires_grad:
        return ATanSpike.apply(u - v_th, alpha)
    return (u >= v_th).to(u.dtype)


def charge(v: torch.Tensor, i: torch.Tensor, p: NeuronParams) -> torch.Tensor:
    """Membrane update before the spike test (forward Euler, one step)."""
    if p.model == "lif":
        return v + (i - (v - p.v_reset)) / p.tau
    return v + i


def reset(u: torch.Tensor, s: torch.Tensor, p: NeuronParams) -> torch.Tensor:
    if p.reset == "hard":
        return u * (1 - s) + p.v_reset * s
    return u - p.v_th * s


def spiking_layer(current: torch.Tensor, p: NeuronParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Run spiking neurons over ``current`` ``[T, ...]``; return spikes ``[T, ...]`` and V(T).

    State starts at V = V_r (reset before each observation). ``current`` may be an expanded
    (stride-0) view when the input is constant over time.
    """
    if not (torch.is_grad_enabled() and current.requires_grad):
        return _spiking_layer_inference(current, p)
    v = torch.full_like(current[0], p.v_reset)
    spikes = []
    for t in range(current.shape[0]):
        u = charge(v, current[t], p)
        s = spike_fn(u, p.v_th, p.surrogate_alpha)
        v = reset(u, s, p)
        spikes.append(s)
    return torch.stack(spikes), v


def _spiking_layer_inference(current: torch.Tensor, p: NeuronParams) -> tuple[torch.Tensor, torch.Tensor]:
    """The same arithmetic without autograd, as in-place numpy ufuncs on preallocated buffers.

    The loop runs T times per layer, so per-operation overhead, not arithmetic, dominates a
    batch-1 forward: a numpy ufunc with ``out=`` costs about a quarter of a torch call
    (about 3x faster per layer on the Nature CNN, ``benchmarks/bench_forward.py``).
    Element-wise IEEE add, subtract, divide and compare give the same bits in either
    library, and the order of operations is literally that of :func:`charge` and
    :func:`reset`, so results equal the training path bit for bit (tested). Spikes are
    written as 0/1 of the current's dtype straight into the output buffer. Tensors numpy
    cannot hold (other devices, half precision) take the torch loop.
    """
    if current.device.type != "cpu" or current.dtype not in (torch.float32, torch.float64):
        return _spiking_layer_inference_torch(current, p)
    cur = current.detach().numpy()  # a view; stride-0 (expanded) input stays a view
    dtype = cur.dtype.type
    th, v_r, tau, one = dtype(p.v_th), dtype(p.v_reset), dtype(p.tau), dtype(1)
    lif, hard = p.model == "lif", p.reset == "hard"
    spikes = np.empty(cur.shape, dtype=cur.dtype)
    v = np.full(cur.shape[1:], v_r, dtype=cur.dtype)  # holds V, and U once charged
    tmp = np.empty_like(v)
    for t in range(cur.shape[0]):
        s = spikes[t]
        if lif:  # U = V + (I - (V - V_r)) / tau; V - V_r is V itself when V_r == 0
            if v_r == 0:
                np.subtract(cur[t], v, out=tmp)
            else:
                np.subtract(v, v_r, out=tmp)
                np.subtract(cur[t], tmp, out=tmp)
            np.divide(tmp, tau, out=tmp)
            np.add(v, tmp, out=v)
        else:  # U = V + I
            np.add(v, cur[t], out=v)
        np.greater_equal(v, th, out=s)  # S = (U >= V_th), written as 0/1 of the dtype
        if hard:  # V = U (1 - S) + V_r S; the V_r S term is +0 when V_r == 0
            np.subtract(one, s, out=tmp)
            np.multiply(v, tmp, out=v)
            if v_r != 0:
                np.multiply(s, v_r, out=tmp)
                np.add(v, tmp, out=v)
        else:  # V = U - V_th S
            np.multiply(s, th, out=tmp)
            np.subtract(v, tmp, out=v)
    return torch.from_numpy(spikes), torch.from_numpy(v)


def _spiking_layer_inference_torch(current: torch.Tensor, p: NeuronParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch fallback of :func:`_spiking_layer_inference` for tensors numpy cannot hold.

    The reset is a ``where``, exactly equal to ``U (1 - S) + V_r S`` and ``U - V_th S`` for S
    in {0, 1}.
    """
    spikes = torch.empty(current.shape, dtype=torch.bool, device=current.device)
    v = torch.full_like(current[0], p.v_reset)
    v_reset = torch.tensor(p.v_reset, dtype=current.dtype, device=current.device)
    lif, hard, vr0 = p.model == "lif", p.reset == "hard", p.v_reset == 0.0
    for t in range(current.shape[0]):
        if lif:
            u = v + (current[t] - (v if vr0 else v - p.v_reset)) / p.tau
        else:
            u = v + current[t]
        s = torch.ge(u, p.v_th, out=spikes[t])
        v = torch.where(s, v_reset, u) if hard else torch.where(s, u - p.v_th, u)
    return spikes.to(current.dtype), v


def integrate_layer(current: torch.Tensor, p: NeuronParams) -> torch.Tensor:
    """Non-spiking output layer of the hidden neuron type (Hahn's ``voltage`` readout): V(T).

    For IF this is V_r + the summed input; for LIF the leaky trace towards V_r.
    """
    v = torch.full_like(current[0], p.v_reset)
    for t in range(current.shape[0]):
        v = charge(v, current[t], p)
    return v


def leaky_integrator(current: torch.Tensor, tau_out: float) -> torch.Tensor:
    """Chen's non-spiking LI output: V = V + (I - V) / tau_out from V = 0; returns V over t."""
    v = torch.zeros_like(current[0])
    trace = []
    for t in range(current.shape[0]):
        v = v + (current[t] - v) / tau_out
        trace.append(v)
    return torch.stack(trace)

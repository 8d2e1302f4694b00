"""Discrete-time neuron dynamics of DESIGN.md, multi-step, in torch.

Every function takes the whole input current of a layer over all T steps at once
(``[T, ...]``) and loops over time only for the element-wise state update; the synaptic
maps around it run once on a batch of T. The arithmetic is written exactly as in
DESIGN.md ("Time-step semantics") because the reference executor and the backends are
checked against it to the last bit:

    LIF: U = V + (I - (V - V_r)) / tau        IF: U = V + I
    S = (U >= V_th)
    hard: V = U (1 - S) + V_r S               soft: V = U - V_th S
"""

from __future__ import annotations

import math

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
    """The same arithmetic without autograd, in about half the tensor operations per step.

    The loop runs T times per layer, so its per-op overhead dominates a batch-1 forward.
    Spikes go into one preallocated boolean buffer, and the reset is a ``where`` — exactly
    equal to ``U (1 - S) + V_r S`` and ``U - V_th S`` for S in {0, 1}. The charge is kept
    literally as in :func:`charge` (``V - V_r`` is skipped only when V_r == 0, where it is
    the identity), so results are bit-identical to the training path.
    """
    spikes = torch.empty(current.shape, dtype=torch.bool)
    v = torch.full_like(current[0], p.v_reset)
    v_reset = torch.tensor(p.v_reset, dtype=current.dtype)
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

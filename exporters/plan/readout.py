"""The readout tail every backend shares: output series -> head ops -> Q -> tie-break -> action.

docs/DESIGN.md's readout, written once. A backend supplies what it measured — the output series
``[T', N, ...]`` of the populations the head reads (``T' = 1`` for a value constant over the
T steps), or, where the simulator already reduced over time (Lava), the reduced value — and
these functions finish it exactly as :class:`backends.reference.ReferenceBackend` does:

* several inputs into one node are summed, a constant input broadcast over T (:func:`summed`);
* the ops after the last population (the *head*) run with the Plan's ops (the reference's torch calls);
* ``rate``-style readouts (time mean into a linear head, no membrane term) push the mean
  through the head, ``Q = W mean_t(s) + b`` (:func:`pushes_mean_through_head`), which is what
  the torch model computes; otherwise the series is reduced over time and divided;
* the membrane term ``+ V(T) / membrane_divisor``, the ``offset``, and the membrane
  tie-break, then ``argmax`` with ties to the lowest index.

So Q equals the reference's whenever the series do, on every backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from exporters.plan.ir import Op, Plan, Semantics
from exporters.plan.ops import per_step, reduce_time
from pipeline.backend_api import greedy_action
from pipeline.errors import UserError

Tensor = torch.Tensor


def tensor_params(op: Op, dtype: torch.dtype = torch.float64) -> dict[str, Any]:
    """``op.params`` with its arrays as tensors of ``dtype`` (scalars stay Python values)."""
    return {k: (torch.as_tensor(v, dtype=dtype) if isinstance(v, np.ndarray) else v) for k, v in op.params.items()}


def summed(inputs: Sequence[str], values: Mapping[str, Tensor], T: int) -> Tensor:
    """What a node receives from ``inputs``: their series summed, a constant (``T' = 1``) one
    broadcast over T."""
    x = values[inputs[0]]
    for other in inputs[1:]:
        y = values[other]
        x = x + y if x.shape[0] == y.shape[0] else x.expand(T, *x.shape[1:]) + y.expand(T, *y.shape[1:])
    return x


def pushes_mean_through_head(plan: Plan) -> bool:
    """Whether Q is ``W mean_t(x) + b`` (average first, then the linear head), as the torch
    model computes the ``rate`` readout; equal to ``mean_t(W x + b)`` in real numbers only."""
    sem = plan.semantics
    src = plan.readout_source.name
    only_output = all(src not in op.recurrent and (op.name == plan.output or src not in op.inputs) for op in plan.ops)
    return (sem.reduce == "mean" and plan.readout_source.kind in ("affine", "linear") and sem.membrane_divisor == 0.0
            and only_output)  # a head that also feeds a loop (or another node) must be computed per step


def head_q(plan: Plan, values: dict[str, Tensor], *, head: Iterable[Op] = (),
           params: Mapping[str, dict[str, Any]] | None = None, mean: Tensor | None = None) -> Tensor:
    """Q ``[N, A]`` before the membrane terms, from the series in ``values``.

    ``head``: ops still to evaluate (plan order; their results are added to ``values``);
    ``params``: tensor parameters per op name (default :func:`tensor_params` in float64);
    ``mean``: the time mean of the readout source's input when the caller has it exactly
    (a spike count / T equals the mean of the 0/1 train bit for bit).
    """
    T, src = plan.semantics.time_steps, plan.readout_source
    pushdown = pushes_mean_through_head(plan)

    def par(op: Op) -> dict[str, Any]:
        return params[op.name] if params is not None else tensor_params(op)

    for op in head:
        if not (pushdown and op.name == src.name):
            values[op.name] = per_step(op, summed(op.inputs, values, T), par(op))
    if pushdown:
        if mean is None:
            x = summed(src.inputs, values, T)
            mean = x[0] if x.shape[0] == 1 else x.mean(dim=0)
        q = per_step(src, mean.unsqueeze(0), par(src))[0]
    else:
        q = reduce_time(values[src.name], plan.semantics.reduce, T)
    if plan.semantics.divisor != 1.0:  # after the pushdown too: mean_t(W s + b) / divisor (docs/NIR.md)
        q = q / plan.semantics.divisor
    return q.reshape(q.shape[0], -1)


def finish_q(sem: Semantics, q: Tensor, membrane: Tensor | None, source: str) -> tuple[Tensor, Tensor | None]:
    """(Q, tie-break): adds ``V(T) / membrane_divisor`` and the offset to the reduced ``q``
    ``[N, A]``; the tie-break is the final membrane for readouts that break ties by it."""
    if sem.membrane_divisor:
        if membrane is None:
            raise UserError(f"the readout adds a membrane term, but {source!r} has no membrane")
        q = q + membrane.reshape(q.shape) / sem.membrane_divisor
    if sem.offset != 0.0:
        q = q + sem.offset
    tiebreak = None
    if sem.tiebreak == "membrane":
        if membrane is None:
            raise UserError(f"readout {sem.readout} breaks ties by membrane, but {source!r} has none")
        tiebreak = membrane.reshape(q.shape)
    return q, tiebreak


def q_and_action(q: Tensor, tiebreak: Tensor | None) -> tuple[np.ndarray, np.ndarray]:
    """(q float64 ``[N, A]``, greedy action int64 ``[N]``) as a Readout holds them."""
    action = greedy_action(q, tiebreak).numpy().astype(np.int64)
    return q.to(torch.float64).numpy(), action

"""Q-values from what a simulator recorded, with the reference executor's own functions.

Every PyNN target records, per observation, the spike trains of the populations the readout
head reads (``[T, n]`` inside their windows) and the membrane of traced populations. The head
(the ops after the last population) then runs on the host exactly as
:class:`backends.reference.ReferenceBackend` runs it, so Q equals the reference's whenever the
spikes do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from backends.pynn.layout import NetLayout
from backends.reference.ops import per_step, reduce_time
from pipeline.models import greedy_action


@dataclass
class Recorded:
    """One observation's window: spike counts of every spiking population, trains of leaf
    populations, membrane traces (``[T, n]``) and the final membrane of traced populations."""

    counts: dict[str, np.ndarray]
    trains: dict[str, np.ndarray] = field(default_factory=dict)
    traces: dict[str, np.ndarray] = field(default_factory=dict)
    final_v: dict[str, np.ndarray] = field(default_factory=dict)


def _params(op: Any) -> dict[str, Any]:
    return {k: (torch.as_tensor(v, dtype=torch.float64) if isinstance(v, np.ndarray) else v)
            for k, v in op.params.items()}


def _summed(op: Any, values: dict[str, torch.Tensor], T: int) -> torch.Tensor:
    """Several inputs to a node are summed, broadcasting a constant input over T (as the reference)."""
    x = values[op.inputs[0]]
    for other in op.inputs[1:]:
        y = values[other]
        x = x + y if x.shape[0] == y.shape[0] else x.expand(T, *x.shape[1:]) + y.expand(T, *y.shape[1:])
    return x


def q_values(net: NetLayout, recs: list[Recorded], obs: torch.Tensor,
             s_in: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray]:
    """(q ``[N, A]`` float64, action ``[N]`` int64) for the recorded observations."""
    plan, sem = net.plan, net.plan.semantics
    T, src = sem.time_steps, net.src
    values: dict[str, torch.Tensor] = {}
    if net.tail_reads_input:
        values[plan.input] = s_in if s_in is not None else obs.unsqueeze(0)
    for name in net.leaf_pops:
        p = net.pops[name]
        data = [r.trains[name] if p.spiking else r.traces[name] for r in recs]
        values[name] = torch.as_tensor(np.stack(data, axis=1).reshape(T, len(recs), *p.op.out_shape))
    with torch.no_grad():
        for op in net.tail:
            if net.pushdown and op.name == src.name:
                continue
            values[op.name] = per_step(op, _summed(op, values, T), _params(op))
        if net.pushdown:
            x = _summed(src, values, T)
            mean = x[0] if x.shape[0] == 1 else x.mean(dim=0)
            q = per_step(src, mean.unsqueeze(0), _params(src))[0]
        else:
            q = reduce_time(values[src.name], sem.reduce, T)
            if sem.divisor != 1.0:
                q = q / sem.divisor
        q = q.reshape(q.shape[0], -1)
        membrane = None
        if src.name in net.traced:
            membrane = torch.as_tensor(np.stack([r.final_v[src.name] for r in recs])).reshape(q.shape)
        if sem.membrane_divisor:
            assert membrane is not None
            q = q + membrane / sem.membrane_divisor
        if sem.offset != 0.0:
            q = q + sem.offset
        tiebreak = membrane if sem.tiebreak == "membrane" else None
        action = greedy_action(q, tiebreak).numpy().astype(np.int64)
    return q.to(torch.float64).numpy(), action

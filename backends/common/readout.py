"""Q-values and spike counts from what a delayed-spike simulator recorded.

Per observation a simulator records, inside each population's window, the spike counts of
every spiking population, the spike trains (``[T, n]``) of the populations the readout head
reads, and the membrane of traced populations. The head then runs on the host through the
Plan's one readout tail (:mod:`exporters.plan.readout`), exactly as
:class:`backends.reference.ReferenceBackend` runs it, so Q equals the reference's whenever the
spikes do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from backends.common.layout import NetLayout
from exporters.plan.readout import finish_q, head_q, q_and_action


@dataclass
class Recorded:
    """One observation's window: spike counts of every spiking population, trains of leaf
    populations, membrane traces (``[T, n]``) and the final membrane of traced populations."""

    counts: dict[str, np.ndarray]
    trains: dict[str, np.ndarray] = field(default_factory=dict)
    traces: dict[str, np.ndarray] = field(default_factory=dict)
    final_v: dict[str, np.ndarray] = field(default_factory=dict)


def add_spikes(rec: Recorded, name: str, ids: np.ndarray, steps: np.ndarray, size: int, T: int,
               train: bool) -> None:
    """Window count (and, with ``train``, the ``[T, size]`` 0/1 train) of one population from
    its spike events inside the window: neuron index ``ids``, window step ``steps``."""
    rec.counts[name] = np.bincount(ids, minlength=size).astype(np.int64)
    if train:
        spikes = np.zeros((T, size))
        spikes[steps, ids] = 1.0
        rec.trains[name] = spikes


def q_values(net: NetLayout, recs: list[Recorded], obs: torch.Tensor,
             s_in: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray]:
    """(q ``[N, A]`` float64, action ``[N]`` int64) for the recorded observations (N >= 1).

    ``obs`` ``[N, *obs_shape]`` float64 and the input trains ``s_in`` ``[T, N, ...]`` (None for
    the ``current`` encoding) are the values the head reads where it reads the input.
    """
    plan, T, src = net.plan, net.plan.semantics.time_steps, net.src
    values: dict[str, torch.Tensor] = {}
    if net.tail_reads_input:
        values[plan.input] = s_in if s_in is not None else obs.unsqueeze(0)
    mean = None
    if net.mean_from_counts:
        p = net.pops[src.inputs[0]]
        counts = np.stack([r.counts[p.op.name] for r in recs]).astype(np.float64)
        mean = torch.as_tensor((counts / T).reshape(len(recs), *p.op.out_shape))
    else:
        for name in net.leaf_pops:
            p = net.pops[name]
            data = [r.trains[name] if p.spiking else r.traces[name] for r in recs]
            values[name] = torch.as_tensor(np.stack(data, axis=1).reshape(T, len(recs), *p.op.out_shape))
    with torch.no_grad():
        q = head_q(plan, values, head=net.tail, mean=mean)
        membrane = None
        if src.name in net.traced:
            membrane = torch.as_tensor(np.stack([r.final_v[src.name] for r in recs]))
        q, tiebreak = finish_q(plan.semantics, q, membrane, src.name)
        return q_and_action(q, tiebreak)


def spike_counts(net: NetLayout, recs: list[Recorded]) -> dict[str, np.ndarray]:
    """Readout.spikes: ``[N, *shape]`` int64 window counts of every spiking population."""
    n = len(recs)
    return {p.op.name: (np.stack([r.counts[p.op.name] for r in recs]) if recs
                        else np.zeros((0, p.size), np.int64)).reshape(n, *p.op.out_shape).astype(np.int64)
            for p in net.spiking}


def readout_arrays(net: NetLayout, recs: list[Recorded], obs: torch.Tensor, s_in: torch.Tensor | None,
                   n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`q_values`, or empty arrays for an empty batch."""
    if not recs:
        return np.zeros((0, n_out)), np.zeros((0,), np.int64)
    return q_values(net, recs, obs, s_in)

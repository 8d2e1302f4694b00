"""Layers that never fire or almost always fire, on any target.

A hidden layer that is silent passes nothing on: every action then gets the same Q (a Pong DSQN
with default init ran on NEST with 2 of its 4 layers silent, and nothing said so). A layer that
fires on nearly every step has lost its input's gradation the other way. Both are properties of
the graph and the observations, not of one simulator, so the check reads only spike counts (what
every backend's :class:`~pipeline.backend_api.Readout` holds) and the Plan's node sizes, and
``run-backend`` applies it to whichever target ran.

The rate of a node is its spikes divided by its neuron-steps (neurons x T x observations).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

#: a node firing in fewer than this fraction of its neuron-steps is called silent
SILENT_RATE = 1e-3
#: a node firing in more than this fraction of its neuron-steps is called saturated
SATURATED_RATE = 0.9

__all__ = ["SATURATED_RATE", "SILENT_RATE", "LayerActivity", "layer_activity", "layer_activity_warnings",
           "neuron_counts", "readout_rates"]


@dataclass(frozen=True)
class LayerActivity:
    """One spiking node's mean firing rate (spikes per neuron per time step, in [0, 1])."""

    node: str
    neurons: int
    rate: float

    @property
    def state(self) -> str:
        """``silent``, ``saturated`` or ``ok`` against :data:`SILENT_RATE` / :data:`SATURATED_RATE`."""
        if self.rate < SILENT_RATE:
            return "silent"
        if self.rate > SATURATED_RATE:
            return "saturated"
        return "ok"


def neuron_counts(plan: Any) -> dict[str, int]:
    """Neurons per spiking node of a canonical Plan (its neuron and threshold ops)."""
    return {op.name: int(np.prod(op.out_shape)) for op in plan.ops if op.kind in ("neuron", "threshold")}


def readout_rates(spikes: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Mean spikes per observation of each node, from a Readout's ``spikes`` (``[N, *shape]`` counts)."""
    return {k: float(np.asarray(v).reshape(np.shape(v)[0], -1).sum(axis=1).mean()) if np.size(v) else 0.0
            for k, v in spikes.items()}


def layer_activity(spikes_per_obs: Mapping[str, float], neurons: Mapping[str, int],
                   time_steps: int) -> list[LayerActivity]:
    """Each node's firing rate from its mean spike count per observation (over ``time_steps``
    steps). Nodes missing from ``neurons`` (not spiking populations) are left out."""
    out = []
    for node, count in spikes_per_obs.items():
        n = neurons.get(node)
        if not n or time_steps < 1:
            continue
        out.append(LayerActivity(node, int(n), float(count) / (n * time_steps)))
    return out


def layer_activity_warnings(spikes_per_obs: Mapping[str, float], neurons: Mapping[str, int],
                            time_steps: int) -> list[str]:
    """One line per silent or saturated node, ready to print after ``warning:``; empty when every
    node fires in between. ``spikes_per_obs``: node -> mean spikes per observation (per agent step
    in the closed loop); ``neurons``: node -> neurons (:func:`neuron_counts`); ``time_steps``: T."""
    lines = []
    for a in layer_activity(spikes_per_obs, neurons, time_steps):
        if a.state == "silent":
            lines.append(f"layer {a.node!r} is silent: it fired in {100 * a.rate:.3g} % of its neuron-steps "
                         f"({a.neurons} neurons x {time_steps} steps; below {100 * SILENT_RATE:g} %), so "
                         "nothing after it gets input; check the weights' scale, the thresholds and the "
                         "observations' preprocessing")
        elif a.state == "saturated":
            lines.append(f"layer {a.node!r} is saturated: it fired in {100 * a.rate:.3g} % of its neuron-steps "
                         f"({a.neurons} neurons x {time_steps} steps; above {100 * SATURATED_RATE:g} %), so its "
                         "output no longer follows its input; check the weights' scale and thresholds")
    return lines

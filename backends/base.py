"""The one interface every backend implements (reference, NEST, PyNN, Lava).

A backend is built once from a NIR graph (``build``), then runs observations: each
observation is presented for T steps with all neuron state reset before it (DESIGN.md,
"Time-step semantics"). ``run`` takes a batch of *preprocessed* observations
``[N, *obs_shape]`` (float32) and returns a :class:`Readout` — the common currency that
``run-backend --inputs obs.npy --out readouts.npz`` writes for every backend.

For the ``poisson`` and ``regular`` encodings the caller may pass the input spike trains
``[T, N, *obs_shape]`` made by :func:`pipeline.encoding.encode`, so that all backends see
the same spikes; without them a backend encodes with the graph's seed itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np


@dataclass
class Readout:
    """Result of running N observations.

    q:       ``[N, A]`` float64 — Q-values per the graph's readout.
    action:  ``[N]`` int64 — argmax of q, ties to the lowest index (or broken by membrane
             for the ``spike_count`` readout).
    spikes:  node name -> ``[N, *node_shape]`` int64 spike counts over the T steps, for every
             spiking node.
    timings: seconds spent, summed over the N observations, under the keys ``set_input``
             (input change and state reset), ``simulate``, ``read_out``.
    """

    q: np.ndarray
    action: np.ndarray
    spikes: dict[str, np.ndarray] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        arrays = {"q": self.q.astype(np.float64), "action": self.action.astype(np.int64)}
        arrays.update({f"spikes/{k}": v.astype(np.int64) for k, v in self.spikes.items()})
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> Readout:
        with np.load(path) as data:
            spikes = {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith("spikes/")}
            return cls(q=data["q"], action=data["action"], spikes=spikes)

    def spikes_per_layer(self) -> dict[str, np.ndarray]:
        """Total spikes of each node per observation, ``[N]``."""
        return {k: v.reshape(v.shape[0], -1).sum(axis=1) for k, v in self.spikes.items()}


def check_batch(obs: np.ndarray, obs_shape: tuple[int, ...], input_name: str, time_steps: int,
                input_spikes: np.ndarray | None = None) -> np.ndarray:
    """Validate what every backend's ``run`` receives; returns ``obs`` as ``[N, *obs_shape]``.

    A single observation (no batch axis) is accepted; input spike trains must be
    ``[T, N, *obs_shape]``. Mismatches are user errors naming the graph's Input node.
    """
    from pipeline.errors import UserError

    obs = np.asarray(obs)
    obs_shape = tuple(obs_shape)
    if obs.ndim == len(obs_shape):
        obs = obs[None]
    if tuple(obs.shape[1:]) != obs_shape:
        raise UserError(f"observations have shape {tuple(obs.shape[1:])}, the graph's Input node "
                        f"{input_name!r} expects {obs_shape}")
    if input_spikes is not None:
        want = (time_steps, obs.shape[0], *obs_shape)
        if tuple(np.shape(input_spikes)) != want:
            raise UserError(f"input spikes have shape {tuple(np.shape(input_spikes))}, expected {want}")
    return obs


def plan_for_env(graph, *, time_steps: int | None = None, dt: float | None = None, readout: str | None = None,
                 convention: str | None = None, obs_shape: tuple[int, ...] | None = None,
                 n_actions: int | None = None):
    """The canonical Plan of ``graph`` (a nir.NIRGraph or a Plan) with its input shape and output
    size, checked against the environment's ``obs_shape`` / ``n_actions`` when given.

    Returns ``(plan, obs_shape, n_out)``; a mismatch is a UserError naming the graph's node.
    """
    from exporters.canonical import Plan, build_plan
    from pipeline.errors import UserError

    plan = graph if isinstance(graph, Plan) else build_plan(
        graph, convention=convention, time_steps=time_steps, dt=dt, readout=readout)
    graph_shape = tuple(plan.op(plan.input).out_shape)
    n_out = int(np.prod(plan.op(plan.output).out_shape))
    if obs_shape is not None and tuple(obs_shape) != graph_shape:
        raise UserError(f"the graph's Input node {plan.input!r} expects observations of shape "
                        f"{graph_shape}, the environment gives {tuple(obs_shape)}")
    if n_actions is not None and int(n_actions) != n_out:
        raise UserError(f"the graph's Output node {plan.output!r} has {n_out} values, the "
                        f"environment has {n_actions} actions")
    return plan, graph_shape, n_out


def spiking_populations(plan, target: str) -> list:
    """The plan's neuron and threshold ops, for a spike-passing simulator named ``target``;
    a ReLU (a DQN) or a graph without neurons is a UserError naming the node or the target."""
    from pipeline.errors import UserError

    for op in plan.ops:
        if op.kind == "relu":
            raise UserError(f"node {op.name!r}: ReLU (a DQN) has no spiking form on {target}; convert the DQN "
                            "(convert-dqn) or run it on the reference")
    pop_ops = [op for op in plan.ops if op.kind in ("neuron", "threshold")]
    if not pop_ops:
        raise UserError(f"the graph has no neuron node: nothing for {target} to simulate")
    return pop_ops


class Backend(Protocol):
    """What the closed-loop bridge and ``run-backend`` need from a target."""

    name: str

    def run(self, obs: np.ndarray, input_spikes: np.ndarray | None = None) -> Readout:
        """Run a batch ``[N, *obs_shape]`` of preprocessed observations, each for T steps."""
        ...

    def close(self) -> None:
        """Release simulator resources."""
        ...

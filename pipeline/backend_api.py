"""What the closed loop needs from a target: the :class:`Backend` protocol, its :class:`Readout`,
the batch check every ``run`` applies, and the greedy action rule.

A backend is built once from a graph, then runs observations: each observation is presented
for T steps with all neuron state reset before it (docs/DESIGN.md, "Time-step semantics"). ``run``
takes a batch of *preprocessed* observations ``[N, *obs_shape]`` (float32) and returns a
:class:`Readout`, the common currency that ``run-backend --inputs obs.npy --out readouts.npz``
writes for every backend.

For the ``poisson`` and ``regular`` encodings the caller may pass the input spike trains
``[T, N, *obs_shape]`` made by :func:`pipeline.encoding.encode`, so that all backends see
the same spikes; without them a backend encodes with the graph's seed itself
(:func:`pipeline.encoding.encode_seeded`).

This module sits on the lowest floor (plain numpy/torch types, no Plan), so the loop in
``pipeline.bridge`` and every adapter in ``backends/`` share it without an upward import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from pipeline.errors import UserError

if TYPE_CHECKING:  # torch is imported by the one function that computes with it (fast --help)
    import torch


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


class Backend(Protocol):
    """What the closed-loop bridge and ``run-backend`` need from a target."""

    name: str

    def run(self, obs: np.ndarray, input_spikes: np.ndarray | None = None) -> Readout:
        """Run a batch ``[N, *obs_shape]`` of preprocessed observations, each for T steps."""
        ...

    def close(self) -> None:
        """Release simulator resources."""
        ...


def check_batch(obs: np.ndarray, obs_shape: tuple[int, ...], input_name: str, time_steps: int,
                input_spikes: np.ndarray | None = None) -> np.ndarray:
    """Validate what every backend's ``run`` receives; returns ``obs`` as ``[N, *obs_shape]``.

    A single observation (no batch axis) is accepted; input spike trains must be
    ``[T, N, *obs_shape]``. Mismatches are user errors naming the graph's Input node.
    """
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


def greedy_action(q: torch.Tensor, tiebreak: torch.Tensor | None = None) -> torch.Tensor:
    """argmax over actions, ties to the lowest index; ``tiebreak`` (membrane) orders equal Q."""
    if tiebreak is None:
        return q.argmax(dim=-1)  # torch returns the first maximal index
    import torch

    best = q == q.max(dim=-1, keepdim=True).values
    masked = torch.where(best, tiebreak, torch.full_like(tiebreak, -torch.inf))
    return masked.argmax(dim=-1)

"""The Plan: a checked, topologically ordered list of discrete-time ops every backend runs.

A :class:`Plan` is what :func:`exporters.plan.build.build_plan` makes of any NIR graph: one
:class:`Op` per remaining node (the soft-reset loop is one op), each neuron op carrying its
per-step arithmetic as a :class:`NeuronStep`, and the graph's :class:`Semantics` (how
observations go in and Q-values come out). Plain data only: building lives in ``build``, the
arithmetic in ``ops``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

Param = Union[float, np.ndarray]
SYNAPSES = ("affine", "linear", "conv2d", "flatten", "sumpool2d", "avgpool2d", "scale")


@dataclass(frozen=True)
class NeuronStep:
    """One population's step (docs/DESIGN.md form, tau in steps). ``v_th`` None: non-spiking.

    charge: leaky ``U = V + (gain*I - (V - v_leak)) / tau``; no leak ``U = V + gain*I``
    (CubaLIF first filters I through ``syn = syn + (w_in*x - syn) / tau_syn``).
    spike:  ``U >= v_th`` (or ``>``); multi-spike: ``trunc(U / v_th)`` spikes for U > 0.
    reset:  hard ``V = U (1-S) + v_reset S``; soft ``V = U - v_sub S``; soft_next: the
            subtraction lands on the next step's charge (snnTorch's delayed reset); zero_next:
            the next step's U is v_reset, its charge dropped, the synaptic current kept (snnTorch's
            Synaptic/RLeaky/RSynaptic zero reset); soft_recheck (snnTorch reset_delay=False):
            ``R = V[t-1] > v_th``, the spike test sees ``U' = U - v_sub R``, ``V = U' - v_sub (S - R)``.
    floor:  with ``v_floor``, ``V = relu(V - v_floor) + v_floor`` after the reset, written as Sinabs
            computes it (not ``max``: the two differ by rounding above the floor).
    """

    gain: Param = 1.0
    tau: Param | None = None
    v_leak: Param = 0.0
    v_th: Param | None = None
    v_reset: Param = 0.0
    reset: str = "hard"
    v_sub: Param = 0.0
    compare: str = ">="
    v_init: Param = 0.0
    multi_spike: bool = False
    tau_syn: Param | None = None
    w_in: Param = 1.0
    syn_order: str = "nir"
    v_floor: Param | None = None  # after the reset: V = relu(V - v_floor) + v_floor (Sinabs min_v_mem)

    @property
    def spiking(self) -> bool:
        return self.v_th is not None


@dataclass
class Op:
    """One step of the plan: a NIR node (or the merged soft-reset loop) with checked shapes."""

    name: str
    kind: str  # input | output | relu | threshold | neuron | one of SYNAPSES
    nir_type: str
    inputs: list[str]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    params: dict[str, Any] = field(default_factory=dict)
    neuron: NeuronStep | None = None
    members: tuple[str, ...] = ()  # NIR nodes merged into this op (the soft-reset loop)
    # sources whose value arrives one step late (the edge closing a loop, docs/NIR.md "Recurrence");
    # kept out of ``inputs`` so that a backend that does not read this field cannot mistake them
    recurrent: list[str] = field(default_factory=list)

    @property
    def spiking(self) -> bool:
        return self.kind == "threshold" or (self.neuron is not None and self.neuron.spiking)


@dataclass(frozen=True)
class Semantics:
    """How observations go in and Q-values come out (graph metadata, overrides, defaults)."""

    dt: float
    time_steps: int
    encoding: str = "current"
    encoding_seed: int = 0
    readout: str = "sum"
    reduce: str = "sum"
    divisor: float = 1.0
    membrane_divisor: float = 0.0
    offset: float = 0.0
    tiebreak: str = "none"
    n_actions: int | None = None
    ours: bool = False
    convention: str = "nir"


@dataclass
class Plan:
    """The ops in topological order, the Input and Output op names, semantics and metadata."""

    ops: list[Op]
    input: str
    output: str
    semantics: Semantics
    metadata: dict[str, Any]

    def op(self, name: str) -> Op:
        for op in self.ops:
            if op.name == name:
                return op
        raise KeyError(name)

    @property
    def recurrent_ops(self) -> list[Op]:
        """Ops that receive a loop's previous-step value (empty for a feed-forward graph)."""
        return [op for op in self.ops if op.recurrent]

    @property
    def readout_source(self) -> Op:
        """The op feeding the Output node (its membrane serves tie-breaks and robust rates)."""
        return self.op(self.op(self.output).inputs[0])

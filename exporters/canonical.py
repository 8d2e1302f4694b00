"""The names of :mod:`exporters.plan` under their first module name (tests, benchmarks and docs use it).

The Plan now lives in ``exporters/plan/``: ``ir`` (the types), ``build`` (NIR graph -> Plan),
``neurons``, ``synapses`` and ``semantics`` (the pieces ``build`` reads nodes and metadata with).
"""

from __future__ import annotations

from exporters.plan.build import (
    KNOWN_EXTENSIONS,
    build_plan,
    drop_batch_dim,
    find_soft_loops,
    inline_subgraphs,
    topo_order,
)
from exporters.plan.ir import SYNAPSES, NeuronStep, Op, Param, Plan, Semantics
from exporters.plan.neurons import collapse, neuron_step, snap, snap_param, soft_loop_step
from exporters.plan.semantics import readout_from_name, resolve_semantics
from exporters.plan.synapses import synapse_output_shape, synapse_params

__all__ = [
    "KNOWN_EXTENSIONS", "SYNAPSES", "NeuronStep", "Op", "Param", "Plan", "Semantics", "build_plan", "collapse",
    "drop_batch_dim", "find_soft_loops", "inline_subgraphs", "neuron_step", "readout_from_name",
    "resolve_semantics", "snap", "snap_param", "soft_loop_step", "synapse_output_shape", "synapse_params",
    "topo_order",
]

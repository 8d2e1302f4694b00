"""Moved to :mod:`exporters.plan.ops` (the Plan owns its arithmetic); kept so old imports work."""

from exporters.plan.ops import ParamT, Tensor, apply_synapse, per_step, reduce_time, run_neuron, spike

__all__ = ["ParamT", "Tensor", "apply_synapse", "per_step", "reduce_time", "run_neuron", "spike"]

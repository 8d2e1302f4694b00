"""Graph metadata and command-line overrides -> :class:`~exporters.plan.ir.Semantics`.

How many steps each observation runs, how it is encoded, and how the Output series becomes
Q-values (reduction, divisors, offset, tie-break). ``--readout NAME`` and metadata naming only
a readout both go through :func:`readout_from_name`; our own graphs carry every field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from exporters.conventions import Convention
from exporters.metadata import READOUT_REDUCE, REDUCTIONS
from exporters.plan.ir import Op, Plan, Semantics
from pipeline.encoding import SERIES
from pipeline.errors import UserError, check_choice
from pipeline.spec import ENCODINGS


def _meta_float(meta: Mapping[str, Any], key: str, default: float) -> float:
    value = meta.get(key, default)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserError(f"graph metadata {key!r} is not a number: {value!r}") from None


def readout_from_name(name: str, plan_source: Op | None, T: int) -> dict[str, Any]:
    """Reduction fields for ``--readout NAME`` (or metadata naming only the readout)."""
    check_choice("readout", name, READOUT_REDUCE)
    fields: dict[str, Any] = {"readout": name, "reduce": READOUT_REDUCE[name], "divisor": 1.0,
                              "membrane_divisor": 0.0, "offset": 0.0, "tiebreak": "none"}
    if name == "spike_count":
        fields["tiebreak"] = "membrane"
    if name == "robust_rate":
        src = plan_source
        if src is None or src.neuron is None or not src.neuron.spiking:
            raise UserError("readout robust_rate needs a spiking neuron node (LIF/IF/CubaLIF) feeding Output")
        v_th = src.neuron.v_th
        if not isinstance(v_th, float):
            raise UserError(f"readout robust_rate needs one threshold for node {src.name!r}, it has several")
        fields.update(divisor=float(T), membrane_divisor=float(T * v_th))
    return fields


def resolve_semantics(meta: Mapping[str, Any], cv: Convention, source: Op | None, *, time_steps: int | None,
                      dt: float | None, readout: str | None) -> Semantics:
    """The plan's semantics; ``source`` is the op feeding Output (membrane readouts need a neuron)."""
    ours = meta.get("format") == "dsqn-deploy/nir"
    T = time_steps if time_steps is not None else meta.get("time_steps")
    if T is None:
        raise UserError("the graph carries no time_steps metadata; pass --time-steps")
    try:
        T = int(T)
    except (TypeError, ValueError):
        raise UserError(f"time_steps must be an integer, got {T!r}") from None
    if T < 1:
        raise UserError(f"time steps must be >= 1, got {T}")
    encoding = str(meta.get("input_encoding", "current"))
    check_choice("input encoding", encoding, ENCODINGS)
    if readout is not None:
        fields = readout_from_name(readout, source, T)
    elif "readout_reduce" in meta:
        fields = {
            "readout": str(meta.get("readout", "sum")),
            "reduce": str(meta["readout_reduce"]),
            "divisor": _meta_float(meta, "readout_divisor", 1.0),
            "membrane_divisor": _meta_float(meta, "readout_membrane_divisor", 0.0),
            "offset": _meta_float(meta, "readout_offset", 0.0),
            "tiebreak": str(meta.get("readout_tiebreak", "none")),
        }
        check_choice("readout reduction", fields["reduce"], REDUCTIONS)
    else:
        fields = readout_from_name(str(meta.get("readout", "sum")), source, T)
    if fields["membrane_divisor"] and (source is None or source.neuron is None):
        raise UserError("the readout adds a membrane term, but no neuron node feeds Output")
    n_actions = meta.get("n_actions")
    return Semantics(dt=dt, time_steps=T, encoding=encoding, encoding_seed=int(meta.get("encoding_seed", 0)),
                     n_actions=int(n_actions) if n_actions is not None else None, ours=ours,
                     convention=cv.name, **fields)  # type: ignore[arg-type]


def with_input_series(plan: Plan) -> Plan:
    """``plan`` taking a caller-given input series ``[T, N, *obs_shape]`` instead of its constant
    ``current`` input (run-backend --input-spikes on a graph without a spike encoding): every
    target then builds the time-varying input path its spike encodings use."""
    if plan.semantics.encoding != "current":
        return plan
    return Plan(ops=plan.ops, input=plan.input, output=plan.output, metadata=plan.metadata,
                semantics=replace(plan.semantics, encoding=SERIES))

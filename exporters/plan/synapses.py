"""NIR synaptic nodes -> op kind and parameters, and the output shape they produce.

Each synaptic class has one entry in :data:`SYNAPSE_PARAMS`. The output shape is learnt by
running the op once on zeros with the same maps every backend is checked against, so a
shape mismatch is reported where the graph is read, naming the node.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nir
import numpy as np
import torch

from exporters.plan.ir import Op
from exporters.plan.neurons import read_param
from exporters.plan.ops import apply_synapse
from exporters.plan.readout import tensor_params
from pipeline.errors import UserError


def _pair(v: Any) -> tuple[int, int]:
    """A NIR size/stride/padding (scalar or per-axis) as two ints."""
    return tuple(int(x) for x in np.broadcast_to(np.asarray(v).reshape(-1), (2,)))  # type: ignore[return-value]


def _affine(name: str, node: nir.NIRNode) -> tuple[str, dict[str, Any]]:
    return "affine", {"weight": read_param(node, name, "weight"), "bias": read_param(node, name, "bias")}


def _linear(name: str, node: nir.NIRNode) -> tuple[str, dict[str, Any]]:
    return "linear", {"weight": read_param(node, name, "weight")}


def _scale(name: str, node: nir.NIRNode) -> tuple[str, dict[str, Any]]:
    return "scale", {"scale": read_param(node, name, "scale")}


def _conv2d(name: str, node: nir.NIRNode) -> tuple[str, dict[str, Any]]:
    w = read_param(node, name, "weight")
    if w.ndim != 4:
        raise UserError(f"node {name!r} (Conv2d): weight must be 4-D (C_out, C_in/groups, kH, kW), got {w.shape}")
    bias = getattr(node, "bias", None)
    b = read_param(node, name, "bias") if bias is not None and np.size(bias) > 1 else np.zeros(w.shape[0])
    if np.size(bias) == 1 and bias is not None:
        b = np.full(w.shape[0], float(np.asarray(bias).reshape(-1)[0]))
    pad = node.padding
    if not isinstance(pad, str):
        pad = _pair(pad)
    return "conv2d", {"weight": w, "bias": b, "padding": pad, "groups": int(node.groups),
                      "stride": _pair(node.stride), "dilation": _pair(node.dilation)}


def _flatten(name: str, node: nir.NIRNode) -> tuple[str, dict[str, Any]]:
    return "flatten", {"start_dim": int(node.start_dim), "end_dim": int(node.end_dim)}


def _pool(name: str, node: nir.NIRNode) -> tuple[str, dict[str, Any]]:
    def pair(attr: str) -> tuple[int, int]:
        v = getattr(node, attr, None)
        if v is None:
            raise UserError(f"node {name!r} ({type(node).__name__}): missing parameter {attr!r}")
        return _pair(v)

    kind = "sumpool2d" if isinstance(node, nir.SumPool2d) else "avgpool2d"
    return kind, {"kernel_size": pair("kernel_size"), "stride": pair("stride"), "padding": pair("padding")}


SYNAPSE_PARAMS: dict[type[nir.NIRNode], Callable[[str, nir.NIRNode], tuple[str, dict[str, Any]]]] = {
    nir.Affine: _affine, nir.Linear: _linear, nir.Scale: _scale, nir.Conv2d: _conv2d, nir.Flatten: _flatten,
    nir.SumPool2d: _pool, nir.AvgPool2d: _pool,
}


def synapse_params(name: str, node: nir.NIRNode) -> tuple[str, dict[str, Any]]:
    """The op kind (one of :data:`~exporters.plan.ir.SYNAPSES`) and its parameters."""
    params = next((SYNAPSE_PARAMS[c] for c in type(node).__mro__ if c in SYNAPSE_PARAMS), None)
    if params is None:
        raise AssertionError(type(node))
    return params(name, node)


def synapse_output_shape(op: Op) -> tuple[int, ...]:
    """Run the op once on zeros (float64) to learn its output shape, or name the mismatch
    (exporters.plan.ops: one implementation of the maps)."""
    x = torch.zeros((1, *op.in_shape), dtype=torch.float64)
    try:
        y = apply_synapse(op, x, tensor_params(op))
    except (RuntimeError, ValueError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"node {op.name!r} ({op.nir_type}): input of shape {op.in_shape} does not fit "
                        f"({first[:160]})") from None
    return tuple(int(s) for s in y.shape[1:])

"""Graph metadata of the NIR files we write, and how any graph's metadata is read back.

NIR 1.0.8 metadata values may only be strings, numbers or arrays (``nir.write`` stores them
as HDF5 datasets), so nested checkpoint fields (preprocessing, provenance, Atari settings)
are flattened to ``prefix_key`` entries here. docs/DESIGN.md ("NIR encoding") lists the keys;
:class:`GraphMeta` reads back the ones that describe the environment and the source model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

# the one reader of the environment-facing keys (env_id, n_actions, preprocessing_*,
# provenance_conversion_*) sits on the floor of its users, the closed loop; re-exported here
from pipeline.graph_meta import ConversionUnits, GraphMeta  # noqa: F401

FORMAT = "dsqn-deploy/nir"
FORMAT_VERSION = 1
DEFAULT_DT = 1e-4

# The readout names the executors understand (graph metadata ``readout``); ``sum`` is what a
# graph without our metadata gets: q = sum over the T steps of the Output node's value.
READOUT_REDUCE = {
    "sum": "sum",
    "rate": "mean",
    "membrane_max": "max",
    "membrane_mean": "mean",
    "membrane_last": "last",
    "voltage": "last",
    "spike_count": "sum",
    "robust_rate": "sum",
    "q": "last",
}
REDUCTIONS = ("sum", "mean", "max", "last")


def flat_value(value: Any) -> Any | None:
    """One metadata value as str, int, float or ndarray; None when it cannot be stored."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf8", "replace")
    if isinstance(value, np.ndarray):
        return value if value.dtype.kind in "biuf" else np.asarray(value.astype(str).tolist(), dtype=object)
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, (int, float, np.integer, np.floating, bool)) for v in value) and value:
            return np.asarray(value, dtype=np.float64 if any(
                isinstance(v, (float, np.floating)) for v in value) else np.int64)
        return ", ".join(str(v) for v in value)
    return str(value)


def flatten(prefix: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"prefix_a_b": 1}``, dropping values NIR cannot store."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}_{key}" if prefix else str(key)
        name = name.replace("/", "_").replace(".", "_")
        if isinstance(value, Mapping):
            out.update(flatten(name, value))
            continue
        flat = flat_value(value)
        if flat is not None:
            out[name] = flat
    return out


def plain(value: Any) -> Any:
    """A metadata value read back from HDF5 as a plain Python value (str, int, float, array)."""
    if isinstance(value, bytes):
        return value.decode("utf8", "replace")
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return plain(value[()])
        if value.dtype.kind in "OSU":
            return [plain(v) for v in value.tolist()]
        return value
    if isinstance(value, (np.bool_, bool)):
        return int(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def read_metadata(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    return {str(k): plain(v) for k, v in (meta or {}).items()}


def is_ours(meta: Mapping[str, Any]) -> bool:
    return read_metadata(meta).get("format") == FORMAT


"""What a graph's metadata says about the world it came from: the environment, its action count,
the observation preprocessing, and (for a converted DQN) how to map the DQN's Q into the graph's
readout units.

These keys are the checkpoint's own fields, flattened into NIR metadata by
``exporters.to_nir.graph_metadata`` (``env_id``, ``n_actions``, ``preprocessing_*``,
``provenance_conversion_*``; docs/DESIGN.md "NIR encoding"). :class:`GraphMeta` is the one reader of
them: the closed loop's :class:`pipeline.bridge.GraphIO`, the torch comparison
(:mod:`pipeline.policy`) and Lava's input bound all go through it. It lives on the lowest
floor because its users do; ``exporters.metadata`` re-exports it next to the writer's helpers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.spec import Preprocessing

ATARI_PREFIX = "preprocessing_atari_"
CONVERSION_PREFIX = "provenance_conversion_"


def _first(value: Any) -> Any:
    """The first element of a metadata value that may be a scalar or an array."""
    return np.asarray(value).reshape(-1)[0]


@dataclass(frozen=True)
class ConversionUnits:
    """How a converted graph's readout relates to its source DQN's Q (pipeline.convert writes it):
    the inverse of ``pipeline.convert.q_in_dqn_units``."""

    output_scale: float
    time_steps: float
    readout: str = "robust_rate"
    v_init: float = 0.0
    v_th: float = 1.0
    soft: bool = True

    def dqn_to_graph(self) -> Callable[[np.ndarray], np.ndarray]:
        """The map DQN Q -> graph readout units."""
        scale, T, v_r, v_th = self.output_scale, self.time_steps, self.v_init, self.v_th
        if self.readout == "robust_rate":
            offset = v_r / (T * v_th) if self.soft else 0.0
            return lambda q: q / scale + offset
        if self.readout == "spike_count":
            return lambda q: q / scale * T
        return lambda q: q / scale * T + v_r  # voltage


@dataclass(frozen=True)
class GraphMeta:
    """The environment-facing part of a graph's metadata (empty for a graph without ours)."""

    env_id: str | None = None
    n_actions: int | None = None
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    conversion: ConversionUnits | None = None

    @classmethod
    def read(cls, meta: Mapping[str, Any] | None) -> GraphMeta:
        meta = meta or {}
        atari = {k[len(ATARI_PREFIX):]: v for k, v in meta.items() if k.startswith(ATARI_PREFIX)}
        offset = np.atleast_1d(np.asarray(meta.get("preprocessing_offset", [0.0]), dtype=np.float64))
        scale = np.atleast_1d(np.asarray(meta.get("preprocessing_scale", [1.0]), dtype=np.float64))
        pre = Preprocessing(offset=tuple(offset.tolist()), scale=tuple(scale.tolist()), atari=atari)
        env_id = meta.get("env_id")
        n_actions = meta.get("n_actions")
        return cls(env_id=None if env_id is None else str(env_id),
                   n_actions=None if n_actions is None else int(n_actions),
                   preprocessing=pre, conversion=cls._conversion(meta))

    @staticmethod
    def _conversion(meta: Mapping[str, Any]) -> ConversionUnits | None:
        c = CONVERSION_PREFIX
        scale = meta.get(c + "output_scale")
        if scale is None:
            return None
        return ConversionUnits(
            output_scale=float(_first(scale)),
            time_steps=float(_first(meta.get(c + "time_steps", meta.get("time_steps")))),
            readout=str(meta.get(c + "readout", "robust_rate")),
            v_init=float(_first(meta.get(c + "v_init", 0.0))),
            v_th=float(_first(meta.get(c + "v_th", 1.0))),
            soft=str(meta.get(c + "reset", "soft")) == "soft",
        )

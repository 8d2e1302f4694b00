"""A torch checkpoint behind the backend interface, so the bridge can compare a graph's actions
with the model it came from (``run-backend ... --compare dqn.pt``: Tan et al.'s conversion rate).

The checkpoint sees each raw observation through *its own* preprocessing (a converted graph
may scale its input differently), and when the graph is a conversion of this DQN its Q-values
are mapped into the graph's readout units (``provenance_conversion_*`` metadata), so that the
bridge's ``q_abs_err`` compares like with like.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from backends.base import Readout
from typing import Any, Callable

from pipeline.checkpoint import load_checkpoint
from pipeline.envs import preprocess
from pipeline.errors import UserError
from pipeline.models import SpikingQNetwork, greedy_action


def dqn_to_graph_units(meta: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray] | None:
    """The inverse of pipeline.convert.q_in_dqn_units for a converted graph, from its metadata;
    None when the graph is not a conversion."""
    scale = meta.get("provenance_conversion_output_scale")
    if scale is None:
        return None
    scale = float(np.asarray(scale).reshape(-1)[0])
    T = float(np.asarray(meta.get("provenance_conversion_time_steps", meta.get("time_steps"))).reshape(-1)[0])
    readout = str(meta.get("provenance_conversion_readout", "robust_rate"))
    v_r = float(np.asarray(meta.get("provenance_conversion_v_init", 0.0)).reshape(-1)[0])
    v_th = float(np.asarray(meta.get("provenance_conversion_v_th", 1.0)).reshape(-1)[0])
    soft = str(meta.get("provenance_conversion_reset", "soft")) == "soft"
    if readout == "robust_rate":
        return lambda q: q / scale + (v_r / (T * v_th) if soft else 0.0)
    if readout == "spike_count":
        return lambda q: q / scale * T
    return lambda q: q / scale * T + v_r  # voltage


class CheckpointBackend:
    """Runs a checkpoint's torch model on preprocessed observations (float32, like training)."""

    def __init__(self, path: str | Path, graph_metadata: dict[str, Any] | None = None):
        self.ckpt = load_checkpoint(path)
        self.model = self.ckpt.build()
        self.name = f"torch:{Path(path).name}"
        converted = self.ckpt.spec.kind == "dqn" and graph_metadata is not None
        self.units = dqn_to_graph_units(graph_metadata) if converted else None

    def run_raw(self, raw_obs: np.ndarray) -> Readout:
        """Run raw env observations ``[N, *obs_shape]`` through the checkpoint's own preprocessing."""
        readout = self.run(preprocess(np.asarray(raw_obs), self.ckpt.preprocessing))
        if self.units is not None:
            readout.q = self.units(readout.q)
        return readout

    def run(self, obs: np.ndarray, input_spikes: np.ndarray | None = None) -> Readout:
        t0 = time.perf_counter()
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        if tuple(x.shape[1:]) != self.ckpt.spec.obs_shape:
            raise UserError(f"{self.name} expects observations of shape {self.ckpt.spec.obs_shape}, "
                            f"got {tuple(x.shape[1:])}")
        with torch.no_grad():
            if isinstance(self.model, SpikingQNetwork):
                if input_spikes is not None:
                    raise UserError(f"{self.name}: comparing spike-encoded inputs with a torch SNN is not supported")
                q, _, tie = self.model.run(x)
            else:
                q, tie = self.model(x), None
        t1 = time.perf_counter()
        return Readout(q=q.double().numpy(), action=greedy_action(q, tie).numpy().astype(np.int64),
                       timings={"set_input": 0.0, "simulate": t1 - t0, "read_out": 0.0})

    def close(self) -> None:
        """Nothing to release."""

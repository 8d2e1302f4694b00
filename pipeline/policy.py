"""A torch checkpoint behind the backend interface, so the bridge can compare a graph's actions
with the model it came from (``run-backend ... --compare dqn.pt``: Tan et al.'s conversion rate).

The checkpoint sees each raw observation through *its own* preprocessing (a converted graph
may scale its input differently), and when the graph is a conversion of this DQN its Q-values
are mapped into the graph's readout units (``provenance_conversion_*`` metadata), so that the
bridge's ``q_abs_err`` compares like with like.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.backend_api import Readout, greedy_action
from pipeline.checkpoint import load_checkpoint
from pipeline.envs import preprocess
from pipeline.errors import UserError
from pipeline.graph_meta import GraphMeta
from pipeline.models import SpikingQNetwork
from pipeline.spec import Preprocessing


def dqn_to_graph_units(meta: Mapping[str, Any] | None) -> Callable[[np.ndarray], np.ndarray] | None:
    """The inverse of pipeline.convert.q_in_dqn_units for a converted graph, from its metadata;
    None when the graph is not a conversion."""
    conversion = GraphMeta.read(meta).conversion
    return None if conversion is None else conversion.dqn_to_graph()


class CheckpointBackend:
    """Runs a checkpoint's torch model on observations preprocessed as *it* expects (float32, like
    training): an ordinary Backend whose input is its own :attr:`preprocessing` of the raw
    observation. Built with the metadata of a graph converted from this DQN, it reports Q in the
    graph's readout units (the action is the DQN's own greedy choice)."""

    def __init__(self, path: str | Path, graph_metadata: Mapping[str, Any] | None = None):
        self.ckpt = load_checkpoint(path)
        self.model = self.ckpt.build()
        self.name = f"torch:{Path(path).name}"
        converted = self.ckpt.spec.kind == "dqn" and graph_metadata is not None
        self.units = dqn_to_graph_units(graph_metadata) if converted else None

    @property
    def preprocessing(self) -> Preprocessing:
        """The preprocessing the checkpoint was trained with (it may differ from the graph's)."""
        return self.ckpt.preprocessing

    def run_raw(self, raw_obs: np.ndarray) -> Readout:
        """Run raw env observations ``[N, *obs_shape]`` through the checkpoint's own preprocessing."""
        return self.run(preprocess(np.asarray(raw_obs), self.preprocessing))

    def run(self, obs: np.ndarray, input_spikes: np.ndarray | None = None) -> Readout:
        """Run observations ``[N, *obs_shape]`` already in :attr:`preprocessing`."""
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
        readout = Readout(q=q.double().numpy(), action=greedy_action(q, tie).numpy().astype(np.int64),
                          timings={"set_input": 0.0, "simulate": t1 - t0, "read_out": 0.0})
        if self.units is not None:
            readout.q = self.units(readout.q)
        return readout

    def close(self) -> None:
        """Nothing to release."""

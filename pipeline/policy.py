"""A torch checkpoint behind the backend interface, so the bridge can compare a graph's actions
with the model it came from (``run-backend ... --compare dqn.pt``: Tan et al.'s conversion rate)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from backends.base import Readout
from pipeline.checkpoint import load_checkpoint
from pipeline.errors import UserError
from pipeline.models import SpikingQNetwork, greedy_action


class CheckpointBackend:
    """Runs a checkpoint's torch model on preprocessed observations (float32, like training)."""

    def __init__(self, path: str | Path):
        self.ckpt = load_checkpoint(path)
        self.model = self.ckpt.build()
        self.name = f"torch:{Path(path).name}"

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

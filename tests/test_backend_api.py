"""The contract below the loop: one Readout/Backend/check_batch/greedy_action under its old names
too, one seeded encoding, cli_entry under its old name, and run-backend making the environment
once (the one it checked is the one the loop plays in)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import backends.base
import pipeline.backend_api as api
import pipeline.bridge
import pipeline.cli
import pipeline.envs
import pipeline.errors
import pipeline.models
from backends.cli import main as run_backend
from exporters.nirio import write_graph
from exporters.to_nir import model_to_nir
from exporters.zoo import make_checkpoint
from pipeline.encoding import encode, encode_seeded


def test_old_names_are_the_same_objects() -> None:
    for name in ("Readout", "Backend", "check_batch", "greedy_action"):
        assert getattr(backends.base, name) is getattr(api, name)
    assert pipeline.models.greedy_action is api.greedy_action
    assert pipeline.errors.cli_entry is pipeline.cli.cli_entry


def test_encode_seeded_is_encode_with_a_fresh_seeded_generator() -> None:
    x = torch.linspace(-1, 1, 12).reshape(3, 4).double()
    for enc in ("poisson", "regular", "current"):
        a = encode_seeded(x, 9, enc, 123)
        b = encode(x, 9, enc, torch.Generator().manual_seed(123))
        assert torch.equal(a, b)
    assert torch.equal(encode_seeded(x, 9, "poisson", 5), encode_seeded(x, 9, "poisson", 5))


def test_run_backend_makes_the_environment_once(tmp_path: Path, monkeypatch) -> None:
    made = []
    real = pipeline.bridge.make_env

    def counting(*args, **kw):
        made.append(args[0])
        return real(*args, **kw)

    monkeypatch.setattr(pipeline.bridge, "make_env", counting)
    monkeypatch.setattr(pipeline.envs, "make_env", counting)  # whoever else would make one
    graph = tmp_path / "g.nir"
    write_graph(model_to_nir(make_checkpoint("liu", seed=1, hidden=(8, 8), time_steps=4)), graph)
    assert run_backend([str(graph), "--env", "CartPole-v1", "--episodes", "2", "--max-steps", "5",
                        "--results", str(tmp_path / "r.jsonl"), "--no-progress"]) == 0
    assert made == ["CartPole-v1"]


def test_check_batch_accepts_one_observation() -> None:
    assert api.check_batch(np.zeros(4), (4,), "input", 3).shape == (1, 4)

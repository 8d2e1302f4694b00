"""Policy-gradient conversion (Hahn 2020): a PPO actor trained by SB3, imported, converted by
convert-dqn, exported and run closed loop; agreement is measured against the actor's greedy action."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from backends.cli import main as run_backend
from exporters.nirio import write_graph
from exporters.to_nir import model_to_nir
from pipeline.bridge import read_results
from pipeline.checkpoint import load_checkpoint
from pipeline.convert import main as convert_main
from pipeline.sb3_import import main as import_main

# (target, module that must import); the float backends give the reference's actions exactly
TARGETS = [("reference", None), ("nest", "nest"), ("pynn-nest", "pyNN"), ("lava", "lava")]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A ReLU PPO on CartPole (a short run), imported and converted at T 128."""
    from stable_baselines3 import PPO

    d = tmp_path_factory.mktemp("pg")
    ppo = PPO("MlpPolicy", "CartPole-v1", n_steps=256, batch_size=64, n_epochs=4, seed=0,
              policy_kwargs=dict(activation_fn=torch.nn.ReLU, net_arch=[16, 16]))
    ppo.learn(1024)
    ppo.save(d / "ppo.zip")
    assert import_main([str(d / "ppo.zip"), "-o", str(d / "actor.pt")]) == 0
    assert convert_main([str(d / "actor.pt"), "-o", str(d / "snn.pt"), "-T", "128", "--norm", "data",
                         "--calib-steps", "400", "--eval-obs", "400", "--no-progress",
                         "--json", str(d / "conv.json")]) == 0
    snn = load_checkpoint(d / "snn.pt")
    write_graph(model_to_nir(snn), d / "snn.nir")
    return {"dir": d, "ppo": ppo}


def test_converted_actor_agrees_with_the_actor(converted):
    d = converted["dir"]
    report = json.loads((d / "conv.json").read_text())
    snn = load_checkpoint(d / "snn.pt")
    assert snn.spec.kind == "converted" and snn.spec.time_steps == 128
    assert report["evaluation"]["observations"] == 400
    assert report["evaluation"]["agreement"] >= 0.9, report["evaluation"]
    # the imported actor is exactly SB3's deterministic policy on the same observations
    actor = load_checkpoint(d / "actor.pt").build()
    obs = np.random.default_rng(0).uniform(-1, 1, size=(200, 4)).astype(np.float32)
    sb3_actions, _ = converted["ppo"].predict(obs, deterministic=True)
    with torch.no_grad():
        assert np.array_equal(actor(torch.as_tensor(obs)).argmax(1).numpy(), sb3_actions)


@pytest.mark.parametrize("target, module", TARGETS)
def test_closed_loop_on_every_backend(converted, tmp_path, target, module):
    if module is not None:
        pytest.importorskip(module)
    d = converted["dir"]
    res = tmp_path / f"{target}.jsonl"
    assert run_backend([str(d / "snn.nir"), "--target", target, "--env", "CartPole-v1", "--episodes", "1",
                        "--max-steps", "20", "--compare", str(d / "actor.pt"), "--results", str(res),
                        "--no-progress"]) == 0
    rec = read_results(res)[1][0]
    assert rec["length"] == 20 or rec["return"] < 20
    assert rec["agreement"] >= 0.8, rec  # against the PPO actor's greedy action
    ref = tmp_path / "ref.jsonl"
    if target != "reference":  # the float backends act exactly as the reference executor
        assert run_backend([str(d / "snn.nir"), "--target", "reference", "--dtype", "float64",
                            "--env", "CartPole-v1", "--episodes", "1", "--max-steps", "20",
                            "--results", str(ref), "--no-progress"]) == 0
        assert read_results(ref)[1][0]["return"] == rec["return"]

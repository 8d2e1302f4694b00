"""Indirect (classifier) conversion: a classifier of the bundled CartPole DQN's greedy actions,
converted and run closed loop, agreeing with the DQN."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from backends.cli import main as run_backend
from exporters.nirio import write_graph
from exporters.to_nir import model_to_nir
from pipeline.bridge import read_results
from pipeline.checkpoint import load_checkpoint
from pipeline.classifier import ClassifierSettings, main as classifier_main, train_classifier
from pipeline.convert import main as convert_main
from pipeline.errors import UserError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DQN = EXAMPLES / "cartpole_dqn.pt"


def test_classifier_learns_the_dqn_and_converts(tmp_path):
    clf_pt, snn_pt = tmp_path / "clf.pt", tmp_path / "snn.pt"
    assert classifier_main([str(DQN), "-o", str(clf_pt), "--observations", "3000", "--epochs", "20", "--batch-size", "64",
                            "--eval-obs", "500", "--hidden", "32,32", "--no-progress"]) == 0
    clf = load_checkpoint(clf_pt)
    info = clf.provenance["classifier"]
    assert clf.spec.kind == "dqn" and clf.spec.variant == "classifier" and clf.spec.hidden == (32, 32)
    assert info["heldout_accuracy"] >= 0.8, info  # near-ties of Q are hard to learn from 3000 labels
    assert sum(info["label_counts"]) == 3000 and min(info["label_counts"]) > 0
    assert convert_main([str(clf_pt), "-o", str(snn_pt), "-T", "64", "--norm", "data", "--calib-steps", "500",
                         "--eval-obs", "300", "--no-progress", "--json", str(tmp_path / "c.json")]) == 0
    assert json.loads((tmp_path / "c.json").read_text())["evaluation"]["agreement"] >= 0.85
    nir_path = tmp_path / "snn.nir"
    write_graph(model_to_nir(load_checkpoint(snn_pt)), nir_path)
    res = tmp_path / "r.jsonl"
    # agreement against the source DQN, not the classifier
    assert run_backend([str(nir_path), "--target", "reference", "--env", "CartPole-v1", "--episodes", "1",
                        "--max-steps", "60", "--compare", str(DQN), "--results", str(res),
                        "--no-progress"]) == 0
    rec = read_results(res)[1][0]
    # CartPole's DQN sits on its decision boundary most of the time (bang-bang balancing), so
    # step agreement on its own trajectory is low for any imitation; the pole must stay up
    assert rec["return"] == 60.0 and 0.0 <= rec["agreement"] <= 1.0, rec


def test_classifier_training_is_seeded():
    src = load_checkpoint(DQN)
    s = ClassifierSettings(observations=300, epochs=2, eval_obs=0, hidden=(8,), seed=5)
    a, _ = train_classifier(src, s)
    b, _ = train_classifier(src, s)
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


def test_classifier_errors(tmp_path, capsys):
    assert classifier_main([str(EXAMPLES / "cartpole_dsqn.pt"), "-o", str(tmp_path / "x.pt")]) == 2
    assert "needs a DQN checkpoint" in capsys.readouterr().err
    assert classifier_main([str(DQN), "-o", str(tmp_path / "x.pt"), "--hidden", "0"]) == 2
    assert "--hidden" in capsys.readouterr().err
    with pytest.raises(UserError, match="--epsilon"):
        ClassifierSettings(epsilon=2.0).validate()

"""On a real SpiNNaker machine: the CartPole DSQN runs open loop and in the closed loop, and its
agreement with the float64 reference is reported (printed, and written to
out/hw_spinnaker.json, or $HW_REPORT_DIR/hw_spinnaker.json). sPyNNaker computes in s16.15 fixed point with 16-bit weights, so spike
counts are not expected to equal the reference's bit for bit; the bounds below are those the
fixed-point emulation (backends/pynn/fixedpoint.py) predicts with margin (docs/SPINNAKER.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from backends.cli import main as run_backend
from backends.pynn.spinnaker import PyNNSpiNNakerBackend
from backends.reference import ReferenceBackend
from exporters.nirio import write_graph
from exporters.to_nir import model_to_nir
from exporters.zoo import cartpole_obs, make_checkpoint, recurrent_graph
from pipeline.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("HW_REPORT_DIR", ROOT / "out"))  # the Docker image's /opt tree is read-only


def cartpole_graph():
    """The bundled CartPole DSQN (examples/) when the image has it, else a random-weight one."""
    path = ROOT / "examples" / "cartpole_dsqn.pt"
    if path.is_file():
        return model_to_nir(load_checkpoint(path)), path.name
    return model_to_nir(make_checkpoint("liu", seed=1, gain=6.0)), "zoo liu (random weights)"


def test_open_loop_agreement(spinnaker_machine, tmp_path):
    graph, name = cartpole_graph()
    obs = cartpole_obs(50, seed=3).numpy()
    ref = ReferenceBackend(graph, dtype="float64").run(obs)
    backend = PyNNSpiNNakerBackend(graph, workdir=tmp_path / "run")
    try:
        r = backend.run(obs)
        resources = backend.resources
    finally:
        backend.close()
    agreement = float(np.mean(r.action == ref.action))
    rel = {k: float(np.abs(r.spikes[k] - v).sum() / max(v.sum(), 1)) for k, v in ref.spikes.items()}
    report = {"graph": name, "machine": spinnaker_machine.kind, "observations": len(obs), "agreement": agreement,
              "spike_count_rel_dev": rel, "resources": resources}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "hw_spinnaker.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    assert r.q.shape == ref.q.shape and r.action.dtype == np.int64
    assert agreement >= 0.9, report
    assert all(v <= 0.2 for v in rel.values()), report


def test_closed_loop_cartpole(spinnaker_machine, tmp_path):
    graph, _ = cartpole_graph()
    path = tmp_path / "cartpole.nir"
    write_graph(graph, path)
    summary = tmp_path / "summary.json"
    code = run_backend([str(path), "--target", "pynn-spinnaker", "--env", "CartPole-v1", "--episodes", "1",
                        "--max-steps", "100", "--compare", "reference", "--results", str(tmp_path / "r.jsonl"),
                        "--json", str(summary), "--no-progress"])
    assert code == 0
    result = json.loads(summary.read_text())
    print(json.dumps(result, indent=2))
    assert result["steps"] >= 1
    assert result["agreement"] >= 0.9, result


def test_recurrent_layers_on_the_board(spinnaker_machine, tmp_path):
    """The conformance zoo's recurrent net (two LIF layers, each with its own loop: a delay-1
    projection onto itself, docs/SPINNAKER.md section 4), open loop, with the same bounds; the
    fixed-point emulation stays within 1 % of the reference's spikes on it."""
    graph = recurrent_graph(seed=1, hidden=(24, 24), time_steps=8, gain=6.0)
    obs = cartpole_obs(24, seed=3).numpy()
    ref = ReferenceBackend(graph, dtype="float64").run(obs)
    backend = PyNNSpiNNakerBackend(graph, workdir=tmp_path / "run")
    try:
        r = backend.run(obs)
    finally:
        backend.close()
    agreement = float(np.mean(r.action == ref.action))
    rel = {k: float(np.abs(r.spikes[k] - v).sum() / max(v.sum(), 1)) for k, v in ref.spikes.items()}
    print(json.dumps({"graph": "zoo recurrent", "agreement": agreement, "spike_count_rel_dev": rel}, indent=2))
    assert agreement >= 0.9 and all(v <= 0.2 for v in rel.values()), (agreement, rel)

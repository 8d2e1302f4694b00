"""inspect-nir: node table, counts and SOPs, as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from backends.inspect_cli import main
from exporters.nirio import write_graph
from exporters.to_nir import model_to_nir
from exporters.zoo import cartpole_obs, make_checkpoint


def test_json_counts_and_recorded_sops(tmp_path: Path, capsys) -> None:
    ckpt = make_checkpoint("liu", hidden=(16, 8), seed=2)
    path = tmp_path / "m.nir"
    write_graph(model_to_nir(ckpt), path)
    np.save(tmp_path / "obs.npy", cartpole_obs(40).numpy())
    assert main([str(path), "--json", "--inputs", str(tmp_path / "obs.npy")]) == 0
    info = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in info["nodes"]}
    assert rows["l0_lif"]["neurons"] == 16 and rows["l1_lif"]["neurons"] == 8
    assert rows["l0_fc"]["synapses"] == 4 * 16 and rows["l1_fc"]["synapses"] == 16 * 8
    assert rows["l0_lif"]["fan_out"] == 8 and rows["l1_lif"]["fan_out"] == 2
    sops = rows["l0_lif"]["spikes_per_obs"] * 8 + rows["l1_lif"]["spikes_per_obs"] * 2
    assert abs(info["totals"]["sops_per_obs"] - sops) < 1e-9 and sops > 0
    assert info["totals"]["macs_per_obs"] == 64  # constant current input: once per observation
    assert info["metadata"]["model_variant"] == "liu"


def test_estimate_and_table(tmp_path: Path, capsys) -> None:
    path = tmp_path / "c.nir"
    write_graph(model_to_nir(make_checkpoint("hahn", arch="nature_cnn", obs_shape=(4, 36, 36), n_actions=3,
                                             time_steps=4)), path)
    assert main([str(path), "--json", "--rate", "0.5"]) == 0
    info = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in info["nodes"]}
    spike = rows["l0_spike"]
    assert spike["spikes_per_obs_est"] == spike["neurons"] * 4 * 0.5
    assert rows["l0_conv"]["synapses"] == 32 * 8 * 8 * 4 * 8 * 8
    assert main([str(path)]) == 0
    assert "l3_fc" in capsys.readouterr().out

"""The silent/saturated-layer warning (backends.common.activity), on every local target."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backends import TARGETS
from backends.common.activity import (SATURATED_RATE, SILENT_RATE, layer_activity, layer_activity_warnings,
                                      neuron_counts, readout_rates)
from conftest import require, run_target, zoo_graph
from exporters.canonical import build_plan
from exporters.nirio import write_graph
from exporters.to_nir import model_to_nir
from exporters.zoo import cartpole_obs, make_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def test_thresholds_are_the_documented_ones() -> None:
    assert SILENT_RATE == 1e-3 and SATURATED_RATE == 0.9
    # 10 neurons x 8 steps = 80 neuron-steps per observation
    counts = {"quiet": 0.079, "low_ok": 0.081, "busy": 72.0, "high": 72.1, "not_a_layer": 5.0}
    rates = {a.node: a.rate for a in layer_activity(counts, {k: 10 for k in counts if k != "not_a_layer"}, 8)}
    assert set(rates) == {"quiet", "low_ok", "busy", "high"}
    lines = layer_activity_warnings(counts, {k: 10 for k in counts}, 8)
    assert len(lines) == 2
    assert lines[0].startswith("layer 'quiet' is silent") and lines[1].startswith("layer 'high' is saturated")


def saturating_graph():
    """Every weight and bias positive and large: each neuron fires on nearly every step."""
    ckpt = make_checkpoint("liu", seed=1, hidden=(16, 16), time_steps=8)
    ckpt.state_dict = {k: v.abs() * 50 for k, v in ckpt.state_dict.items()}
    return model_to_nir(ckpt)


@pytest.mark.parametrize("gain, state", [(0.05, "silent"), (6.0, None), (None, "saturated")])
def test_reference_readout(gain: float | None, state: str | None) -> None:
    graph = saturating_graph() if gain is None else zoo_graph("liu", hidden=(16, 16), time_steps=8, gain=gain)
    plan = build_plan(graph)
    r = run_target("reference", graph, cartpole_obs(12, seed=2).numpy())
    lines = layer_activity_warnings(readout_rates(r.spikes), neuron_counts(plan), plan.semantics.time_steps)
    if state is None:
        assert lines == []
    else:
        assert lines and all(f"is {state}" in line for line in lines)


@pytest.mark.parametrize("target", ["reference", "nest", "pynn-nest", "lava"])
def test_run_backend_warns_on_any_target(target: str, tmp_path: Path, capfd) -> None:
    """A graph whose hidden layers never fire: run-backend says so on stderr, names the layer,
    records the rates in --json, and still exits 0 (the readout is valid, just uninformative).
    The reference as a real process; the simulators through run-backend's main in this process
    (stderr read at the descriptor), which spares an interpreter start and a simulator import each."""
    require(target)
    graph, obs = tmp_path / "quiet.nir", tmp_path / "obs.npy"
    write_graph(zoo_graph("liu", hidden=(16, 16), time_steps=8, gain=0.05), graph)
    np.save(obs, cartpole_obs(4, seed=3).numpy())
    argv = [str(graph), "--target", target, "--inputs", str(obs), "--out", str(tmp_path / "r.npz"), "--json",
            str(tmp_path / "s.json")]
    if target == "reference":
        out = subprocess.run([sys.executable, "-m", "backends.cli", *argv], cwd=ROOT, capture_output=True, text=True,
                             timeout=300)
        code, err = out.returncode, out.stderr
    else:
        from backends.cli import main

        capfd.readouterr()
        code = main(argv)
        err = capfd.readouterr().err
    assert code == 0, err
    warned = [line for line in err.splitlines() if line.startswith("warning: layer ")]
    assert warned and all("is silent" in line for line in warned), err
    rates = json.loads((tmp_path / "s.json").read_text())["firing_rates"]
    assert rates and min(rates.values()) < SILENT_RATE
    assert target in TARGETS

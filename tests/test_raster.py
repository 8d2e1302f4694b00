"""run-backend --plot-raster: the step-by-step traces it draws are the reference's own run, and
the figure is written for the open and the closed loop, with the target's counts compared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backends.cli import main as run_backend
from backends.raster import chosen_neurons
from backends.reference import ReferenceBackend
from conftest import require, zoo_graph
from exporters.canonical import build_plan
from exporters.nirio import write_graph
from exporters.zoo import cartpole_obs


@pytest.mark.parametrize("kind", ["liu", "chen", "hahn", "tan_converted", "poisson"])
def test_traces_are_the_run(kind: str) -> None:
    """Spikes summed over the trace are the counts run() reports; a hard-reset LIF's U, where it
    spiked, is at or above the threshold and below it elsewhere."""
    plan = build_plan(zoo_graph(kind, hidden=(16, 16), time_steps=8))
    ref = ReferenceBackend(plan, dtype="float64")
    obs = cartpole_obs(3, seed=4).numpy()
    counts = ref.run(obs[1:2]).spikes
    traces = ref.traces(obs[1])
    assert set(counts) <= set(traces)
    for name, c in counts.items():
        assert np.array_equal(traces[name]["spikes"].sum(axis=0), c[0].reshape(-1)), name
        assert traces[name]["u"].shape == (8, c[0].size)
    if kind == "liu":
        tr = traces["l0_lif"]
        assert np.all((tr["u"] >= 1.0) == (tr["spikes"] > 0))


def test_chosen_neurons_span_the_layer() -> None:
    spikes = np.zeros((8, 6))
    spikes[:, 0] = 1
    spikes[:4, 2] = 1
    spikes[:1, 4] = 1
    picked = chosen_neurons(spikes, np.zeros((8, 6)))
    assert picked[0] == 0 and picked[-1] in (1, 3, 5)  # the busiest first, a silent one last
    assert set(picked[:-1]) == {0, 2, 4}


@pytest.mark.parametrize("target", ["reference", "nest"])
def test_plot_raster_open_and_closed_loop(target: str, tmp_path: Path, capsys) -> None:
    require(target)  # skips, naming the missing module, where NEST is not installed
    graph, obs = tmp_path / "g.nir", tmp_path / "obs.npy"
    write_graph(zoo_graph("liu", hidden=(16, 16), time_steps=8), graph)
    np.save(obs, cartpole_obs(4, seed=3).numpy())
    png = tmp_path / "open.png"
    assert run_backend([str(graph), "--target", target, "--inputs", str(obs), "--out", str(tmp_path / "r.npz"),
                        "--plot-raster", str(png), "--raster-obs", "2"]) == 0
    out = capsys.readouterr().out
    assert png.stat().st_size > 20_000 and png.read_bytes()[:4] == b"\x89PNG"
    if target != "reference":
        assert f"{target}'s spike count per neuron on this observation: the same" in out
    png2 = tmp_path / "closed.png"
    assert run_backend([str(graph), "--target", target, "--env", "CartPole-v1", "--episodes", "1", "--max-steps",
                        "3", "--results", str(tmp_path / "r.jsonl"), "--no-progress", "--plot-raster",
                        str(png2)]) == 0
    assert png2.stat().st_size > 20_000
    assert run_backend([str(graph), "--inputs", str(obs), "--out", str(tmp_path / "r.npz"), "--plot-raster",
                        str(png), "--raster-obs", "9"]) == 2
    assert "--raster-obs 9: --inputs holds 4 observations" in capsys.readouterr().err

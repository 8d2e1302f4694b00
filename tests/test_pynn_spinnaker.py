"""``--target pynn-spinnaker`` without a board: the description sPyNNaker builds from (models,
weights split by sign, rows within 256 synapses, exact ring-buffer sums), the fixed-point
emulation of sPyNNaker's arithmetic that predicts the deviation from the reference, the
virtual-board mapping of a small MLP with its resources, and the errors naming what sPyNNaker
cannot run."""

from __future__ import annotations

import importlib.util
import os

import nir
import numpy as np
import pytest

from backends.pynn.fixedpoint import FixedPointSpiNNaker
from backends.pynn.layout import layout
from backends.pynn.spinnaker import MAX_ROW, describe, max_row
from backends.reference import ReferenceBackend
from exporters.canonical import build_plan
from exporters.to_nir import model_to_nir
from exporters.zoo import cartpole_obs, make_checkpoint
from pipeline.errors import UserError

HAVE_SPYNNAKER = importlib.util.find_spec("spynnaker") is not None


def spin_of(graph):
    return describe(layout(build_plan(graph), "SpiNNaker"))


def test_description_splits_signs_and_delays_by_depth() -> None:
    graph = model_to_nir(make_checkpoint("liu", seed=1, gain=6.0, hidden=(16, 8)))
    spin = spin_of(graph)
    assert [p.model for p in spin.pops] == ["IF_curr_delta", "IF_curr_delta"]
    assert spin.run_steps == 16 + 2 - 1  # T + depth - 1 (the observation's i_offset acts from step 0)
    hidden = [prj for prj in spin.projections if prj["src"] == spin.pops[0].name]
    assert {prj["receptor"] for prj in hidden} == {"excitatory", "inhibitory"}
    assert all(np.all(prj["w"] > 0) and prj["delay"] == 1 for prj in hidden)
    # the two receptors together are the signed drive matrix (gain 1: sPyNNaker's LIF divides by tau)
    plan = build_plan(graph)
    drive = layout(plan, "x").drives()[spin.pops[1].name].terms[spin.pops[0].name].toarray()
    rebuilt = np.zeros_like(drive)
    for prj in hidden:
        rebuilt[prj["post"], prj["pre"]] += prj["w"] * (1 if prj["receptor"] == "excitatory" else -1)
    assert np.array_equal(rebuilt, drive)
    # tau 2 -> exp(-dt/tau_m) = 1/2 and R = tau_m/cm = dt
    p = spin.pops[0].params
    assert np.isclose(np.exp(-1.0 / p["tau_m"]), 0.5) and np.isclose(p["tau_m"] / p["cm"], 1.0)
    assert spin.pops[1].max_summed[0] > 0 and spin.pops[1].max_summed[1] > 0


def test_rows_are_split_to_256_synapses() -> None:
    """A pre neuron fanning out to 600 posts: neurons per core drop until each row fits."""
    nodes = {"in": nir.Input(np.array([4])), "fc0": nir.Linear(np.ones((4, 4))),
             "a": nir.LIF(tau=np.full(4, 2e-4), r=np.ones(4), v_leak=np.zeros(4), v_threshold=np.ones(4),
                          v_reset=np.zeros(4)),
             "fc1": nir.Linear(np.ones((600, 4))),
             "b": nir.LIF(tau=np.full(600, 2e-4), r=np.ones(600), v_leak=np.zeros(600), v_threshold=np.ones(600),
                          v_reset=np.zeros(600)),
             "out": nir.Output(np.array([600]))}
    edges = [("in", "fc0"), ("fc0", "a"), ("a", "fc1"), ("fc1", "b"), ("b", "out")]
    spin = spin_of(nir.NIRGraph(nodes=nodes, edges=edges, metadata={"time_steps": 4}))
    b = next(p for p in spin.pops if p.name == "b")
    prj = next(p for p in spin.projections if p["dst"] == "b")
    assert max_row(prj["pre"], prj["post"], 256) == 256 and b.max_atoms == 256
    dense = nir.Linear(np.ones((600, 4)) * np.arange(1, 601)[:, None])
    nodes["fc1"] = dense
    spin = spin_of(nir.NIRGraph(nodes=nodes, edges=edges, metadata={"time_steps": 4}))
    b = next(p for p in spin.pops if p.name == "b")
    prj = next(p for p in spin.projections if p["dst"] == "b")
    assert max_row(prj["pre"], prj["post"], b.max_atoms) <= MAX_ROW


def test_fixed_point_is_exact_where_s1615_is() -> None:
    """Dyadic weights and inputs with tau 2 need no rounding in s16.15: the emulated sPyNNaker
    update then equals the reference bit for bit, which checks the emulation itself."""
    rng = np.random.default_rng(0)
    w0 = rng.integers(-16, 17, (12, 4)) / 8.0
    w1 = rng.integers(-16, 17, (3, 12)) / 8.0

    def lif(n):
        return nir.LIF(tau=np.full(n, 2e-4), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n),
                       v_reset=np.zeros(n))

    nodes = {"in": nir.Input(np.array([4])), "fc0": nir.Linear(w0), "l0": lif(12), "fc1": nir.Linear(w1),
             "l1": lif(3), "out": nir.Output(np.array([3]))}
    edges = [("in", "fc0"), ("fc0", "l0"), ("l0", "fc1"), ("fc1", "l1"), ("l1", "out")]
    g = nir.NIRGraph(nodes=nodes, edges=edges, metadata={"time_steps": 8, "dt": 1e-4})
    obs = (rng.integers(0, 9, (30, 4)) / 4.0).astype(np.float32)
    ref = ReferenceBackend(g, dtype="float64").run(obs)
    fx = FixedPointSpiNNaker(g).run(obs)
    assert sum(int(v.sum()) for v in ref.spikes.values()) > 0
    for k, v in ref.spikes.items():
        assert np.array_equal(fx.spikes[k], v), k
    assert np.array_equal(fx.q, ref.q)


def test_fixed_point_deviation_is_small_on_random_weights() -> None:
    graph = model_to_nir(make_checkpoint("liu", seed=1, gain=6.0))
    obs = cartpole_obs(60, seed=2).numpy()
    ref = ReferenceBackend(graph, dtype="float64").run(obs)
    fx = FixedPointSpiNNaker(graph).run(obs)
    total = sum(int(v.sum()) for v in ref.spikes.values())
    diff = sum(int(np.abs(fx.spikes[k] - v).sum()) for k, v in ref.spikes.items())
    assert 0 < diff <= 0.01 * total  # s16.15 rounding moves a few spikes, not many
    assert np.mean(fx.action == ref.action) >= 0.9


def test_models_sPyNNaker_lacks_are_refused_by_name() -> None:
    soft = model_to_nir(make_checkpoint("tan_converted", seed=1))
    with pytest.raises(UserError, match=r"node 'l0_spike'.*soft \(subtractive\) reset"):
        spin_of(soft)
    nodes = {"in": nir.Input(np.array([2])), "fc": nir.Linear(np.eye(2)),
             "cuba": nir.CubaLIF(tau_syn=np.array([2e-3] * 2), tau_mem=np.array([4e-3] * 2), r=np.ones(2),
                                 v_leak=np.zeros(2), v_threshold=np.ones(2), v_reset=np.zeros(2), w_in=np.ones(2)),
             "out": nir.Output(np.array([2]))}
    cuba = nir.NIRGraph(nodes=nodes, edges=[("in", "fc"), ("fc", "cuba"), ("cuba", "out")],
                        metadata={"time_steps": 4, "dt": 1e-3})
    with pytest.raises(UserError, match="node 'cuba'"):
        spin_of(cuba)


@pytest.mark.skipif(not HAVE_SPYNNAKER, reason="sPyNNaker is not installed (pip install -c constraints.txt "
                                               "'dsqn-deploy[spinnaker]')")
def test_virtual_board_maps_the_mlp_and_reports_resources(tmp_path, monkeypatch) -> None:
    from backends import make_backend

    monkeypatch.setenv("SPINNAKER_VIRTUAL", "1")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))  # the worker gets its own HOME; this one stays empty
    graph = model_to_nir(make_checkpoint("spike_count", seed=1, gain=6.0, hidden=(32, 16)))
    backend = make_backend("pynn-spinnaker", graph, workdir=tmp_path / "run")
    try:
        res = backend.resources
        # one core per population; biases of layers 2 and 3 come from one spike source per window
        assert res["cores_per_population"] == {"l0_lif": 1, "l1_lif": 1, "out_lif": 1, "bias_w1": 1, "bias_w2": 1}
        assert 1 <= res["chips"] <= res["chips_with_system"] and res["cores"] >= 3
        assert isinstance(res["routing_entries"], int) and res["routing_entries"] >= 2
        assert res["map_seconds"] > 0
        cfg = (tmp_path / "run" / "home" / ".spynnaker.cfg").read_text()
        assert "virtual_board = True" in cfg
        assert not (tmp_path / "user" / ".spynnaker.cfg").exists()
        with pytest.raises(UserError, match="virtual SpiNNaker board only maps"):
            backend.run(cartpole_obs(1).numpy())
    finally:
        backend.close()
    assert os.path.isdir(tmp_path / "run")  # a given run folder is kept (reports)


@pytest.mark.parametrize("n,k,s,p", [(84, 8, 4, 0), (20, 4, 2, 0), (9, 3, 1, 0), (11, 5, 3, 2)])
def test_convolution_connector_arguments_reproduce_torch(n: int, k: int, s: int, p: int) -> None:
    """The Nature CNN's three layers (and a padded stride 3): sPyNNaker's connector mapping with
    connector_args connects exactly torch's synapses; given torch's kernel as is, it does not."""
    from backends.pynn.convolution import check, spynnaker_out, torch_out

    w = np.random.default_rng(k).normal(size=(k, k))
    res = check(w, (s, s), (p, p), (n, n))
    assert res["same_synapses"] and res["max_weight_err"] == 0.0 and res["synapses"] > 0
    assert res["connector_out"] == res["torch_out"] == [torch_out(n, k, s, p)] * 2
    naive = check(w, (s, s), (p, p), (n, n), kernel=w, args_padding=(p, p),
                  post_shape=(spynnaker_out(n, k, s, p),) * 2)
    assert not naive["same_synapses"] or naive["max_weight_err"] > 0
    if s > 1 and (n + 2 * p - k) % s == 0:
        assert naive["connector_out"][0] == torch_out(n, k, s, p) - 1  # the off-by-one, e.g. 8x8 for 9x9


@pytest.mark.skipif(not HAVE_SPYNNAKER, reason="sPyNNaker is not installed")
def test_convolution_connector_on_the_virtual_board(tmp_path) -> None:
    """Mapped by sPyNNaker: it accepts the torch-sized post population, and the kernel, padding
    and strides it holds connect torch's synapses, weights within half a 16-bit quantum."""
    from backends.pynn.convolution import check_on_virtual_board

    w = np.random.default_rng(3).normal(size=(4, 4)).round(3)
    (res,) = check_on_virtual_board([{"in": 20, "weight": w.tolist(), "stride": [2, 2], "padding": [0, 0]}],
                                    str(tmp_path))
    assert res["connector_out"] == res["torch_out"] == [9, 9] and res["naive_connector_out"] == [8, 8]
    assert res["same_synapses"] and res["synapses"] == 1296
    assert res["max_weight_err"] <= res["weight_quantum"] / 2 + 1e-12

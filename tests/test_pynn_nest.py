"""``--target pynn-nest`` against the reference executor in float64 beyond the zoo conformance test
(tests/test_backend_conformance.py): Nature-CNN layers; nothing carried over between
observations; the objects built are real PyNN populations and projections; user mistakes are one
clear error."""

from __future__ import annotations

import time

import nir
import numpy as np
import pytest

pytest.importorskip("nest")
pytest.importorskip("pyNN")

from backends import make_backend  # noqa: E402
from backends.pynn.nest_sim import PyNNNestBackend  # noqa: E402
from backends.reference import ReferenceBackend  # noqa: E402
from exporters.to_nir import model_to_nir  # noqa: E402
from exporters.zoo import atari_obs, cartpole_obs, make_checkpoint  # noqa: E402
from pipeline.errors import UserError  # noqa: E402

from conftest import assert_same, mixed_cuba_graph, run_target, zoo_graph  # noqa: E402


def run_pynn(graph, obs, input_spikes=None, **options):
    return run_target("pynn-nest", graph, obs, input_spikes, **options)


@pytest.mark.parametrize("kind", ["liu", "tan_converted"])
def test_small_nature_cnn_matches(kind: str) -> None:
    graph = model_to_nir(make_checkpoint(kind, arch="nature_cnn", obs_shape=(4, 36, 36), n_actions=4,
                                         time_steps=5, seed=2))
    obs = atari_obs(2, seed=4)[:, :, :36, :36].contiguous().numpy()
    r = run_pynn(graph, obs)
    assert_same(r, ReferenceBackend(graph, dtype="float64").run(obs), active=False)
    assert sum(int(v.sum()) for v in r.spikes.values()) > 0


@pytest.mark.parametrize("kind", ["liu", "tan_converted", "chen"])
def test_nothing_carries_over_between_observations(kind: str) -> None:
    """A, B, A, B, B, A in one network equal fresh networks on A and on B, bit for bit."""
    graph = zoo_graph(kind)
    pair = cartpole_obs(2, seed=5).numpy()
    a, b = pair[0] * 0.2, pair[1] * 3.0  # a quiet and a busy observation
    seq = run_pynn(graph, np.stack([a, b, a, b, b, a]))
    fresh = {"a": run_pynn(graph, a[None]), "b": run_pynn(graph, b[None])}
    for i, which in enumerate("ababba"):
        f = fresh[which]
        assert np.array_equal(seq.q[i], f.q[0]), (i, which)
        for k in f.spikes:
            assert np.array_equal(seq.spikes[k][i], f.spikes[k][0]), (i, which, k)
    busy = sum(int(v[1].sum()) for v in seq.spikes.values())
    quiet = sum(int(v[0].sum()) for v in seq.spikes.values())
    assert busy > quiet


def test_threshold_tie_spikes_on_greater_or_equal() -> None:
    """IF, input exactly 0.5, V_th 1: U reaches 1.0 exactly every second step (4 spikes in 8)."""
    nodes = {"in": nir.Input(np.array([1])), "fc": nir.Linear(np.eye(1)),
             "n": nir.IF(r=np.array([1000.0]), v_threshold=np.array([1.0]), v_reset=np.array([0.0])),
             "out": nir.Output(np.array([1]))}
    g = nir.NIRGraph(nodes=nodes, edges=[("in", "fc"), ("fc", "n"), ("n", "out")],
                     metadata={"time_steps": 8, "dt": 1e-3})
    r = run_pynn(g, np.array([[0.5]], np.float32))
    assert r.q.tolist() == [[4.0]] and r.spikes["n"].tolist() == [[4]]


def test_network_is_pynn_populations_and_projections() -> None:
    """The ArrayConnector's synapses belong to their PyNN projection: Projection.get returns the
    drive matrix (scaled by gain/tau for a LIF; PyNN reads NEST's weights in its own units,
    1/1000 of NEST's for native cell types) and the delay of one depth step."""
    graph = zoo_graph("liu", hidden=(8, 6))
    backend = make_backend("pynn-nest", graph)
    try:
        assert backend.name == "pynn-nest"
        assert {p.label for p in backend.pops.values()} == set(backend.net.pops)
        (src, dst), prj = next((k, v) for k, v in backend.projections.items())
        w = np.nan_to_num(prj.get("weight", format="array"))  # [pre, post], NaN where unconnected
        drive = backend.net.drives()[dst].terms[src].toarray()  # [post, pre]
        want = (drive * backend.specs[dst].scale[:, None]).T
        assert np.count_nonzero(w) == np.count_nonzero(want) > 0
        assert np.allclose(w * 1000.0, want, rtol=1e-12, atol=0)
        delays = prj.get("delay", format="list", with_address=False)
        assert set(np.round(np.asarray(delays) / backend.h).astype(int).tolist()) == {1}
        assert backend.n_synapses > 0 and backend.build_seconds > 0
    finally:
        backend.close()


def test_errors_name_the_cause() -> None:
    dqn = model_to_nir(make_checkpoint("dqn"))
    with pytest.raises(UserError, match="ReLU"):
        PyNNNestBackend(dqn)
    nodes = {"in": nir.Input(np.array([2])), "fc": nir.Linear(np.eye(2)),
             "cuba": nir.CubaLIF(tau_syn=np.array([2e-3] * 2), tau_mem=np.array([4e-3] * 2), r=np.ones(2),
                                 v_leak=np.zeros(2), v_threshold=np.ones(2), v_reset=np.zeros(2), w_in=np.ones(2)),
             "out": nir.Output(np.array([2]))}
    cuba = nir.NIRGraph(nodes=nodes, edges=[("in", "fc"), ("fc", "cuba"), ("cuba", "out")],
                        metadata={"time_steps": 4, "dt": 1e-3})
    nodes["rec"] = nir.Linear(np.eye(2))
    looped = nir.NIRGraph(nodes=nodes, edges=[*cuba.edges, ("cuba", "rec"), ("rec", "cuba")], metadata=cuba.metadata)
    with pytest.raises(UserError, match="node 'cuba' \\(CubaLIF\\): its loop enters its synaptic current"):
        PyNNNestBackend(looped)  # a hard reset: no same-step current model for it
    graph = zoo_graph("liu")
    first = PyNNNestBackend(graph)
    second = PyNNNestBackend(graph)  # NEST holds one network per process
    try:
        with pytest.raises(UserError, match="replaced"):
            first.run(cartpole_obs(1).numpy())
        with pytest.raises(UserError, match="expects"):
            second.run(np.zeros((1, 3), np.float32))
    finally:
        second.close()


def test_too_large_network_is_refused_before_building(monkeypatch) -> None:
    """With 1 GiB available, two 4096-wide layers (16.8 M synapses, ~1.2 GB in NEST) are refused
    before anything is built; the small CartPole net still builds."""
    from backends.pynn import nest_sim

    monkeypatch.setattr(nest_sim, "available_memory", lambda: 2**30)
    wide = model_to_nir(make_checkpoint("liu", seed=0, hidden=(4096, 4096)))
    t0 = time.perf_counter()
    with pytest.raises(UserError, match="does not fit in memory on pyNN.nest"):
        PyNNNestBackend(wide)
    assert time.perf_counter() - t0 < 10  # refused from shapes, not after expanding synapses
    run_pynn(zoo_graph("liu"), cartpole_obs(1).numpy())


def test_run_backend_closed_loop_agrees_with_the_reference(tmp_path) -> None:
    """run-backend --target pynn-nest --env CartPole-v1 --compare reference (float64): every action
    and Q equal over the episode's steps; the open loop writes the common readout file."""
    import json

    from backends.base import Readout
    from backends.cli import main as run_backend
    from exporters.nirio import write_graph

    path = tmp_path / "liu.nir"
    write_graph(zoo_graph("liu"), path)
    summary = tmp_path / "s.json"
    code = run_backend([str(path), "--target", "pynn-nest", "--env", "CartPole-v1", "--episodes", "1",
                        "--max-steps", "25", "--compare", "reference", "--results", str(tmp_path / "r.jsonl"),
                        "--json", str(summary), "--no-progress"])
    assert code == 0
    res = json.loads(summary.read_text())
    assert res["steps"] >= 5 and res["agreement"] == 1.0 and res["q_rel_err"] <= 1e-6
    obs = cartpole_obs(5, seed=9).numpy()
    np.save(tmp_path / "obs.npy", obs)
    assert run_backend([str(path), "--target", "pynn-nest", "--inputs", str(tmp_path / "obs.npy"),
                        "--out", str(tmp_path / "r.npz")]) == 0
    got = Readout.load(tmp_path / "r.npz")
    ref = ReferenceBackend(zoo_graph("liu"), dtype="float64").run(obs)
    assert np.array_equal(got.action, ref.action) and np.abs(got.q - ref.q).max() <= 1e-6 * np.abs(ref.q).max()


@pytest.mark.parametrize("readout_li, norse", [(True, False), (False, True)])
def test_cubalif_between_lif_layers_equals_the_reference(readout_li: bool, norse: bool) -> None:
    """issue 20: CubaLIF through PyNN's native iaf_psc_exp_multisynapse (receptor 1, tau_syn set in NEST)."""
    graph = mixed_cuba_graph(readout_li=readout_li, norse=norse)
    conv = "norse+dt-tau" if norse else None
    obs = cartpole_obs(16, seed=5).numpy()
    ref = ReferenceBackend(graph, dtype="float64", convention=conv).run(obs)
    assert_same(run_target("pynn-nest", graph, obs, convention=conv), ref)

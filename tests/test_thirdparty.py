"""Graphs written by snnTorch, Norse, Sinabs and SpikingJelly (fixtures made by
tests/fixtures/make_thirdparty.py with the frameworks themselves) reproduce the frameworks'
own simulations once their conventions are normalised on read (docs/NIR.md)."""

from __future__ import annotations

import copy
from pathlib import Path

import nir
import numpy as np
import pytest

from backends.reference import ReferenceBackend
from exporters.canonical import build_plan
from exporters.nirio import FILE_VERSION_ATTR, read_graph
from pipeline.errors import UserError

from conftest import fixture_options

FIXTURES = Path(__file__).parent / "fixtures" / "thirdparty"
FRAMEWORKS = ("snntorch", "norse", "sinabs", "spikingjelly")



def load(name: str) -> tuple[Path, dict]:
    nir_path = FIXTURES / f"{name}.nir"
    if not nir_path.is_file():
        pytest.skip(f"no {name} fixture: run tests/fixtures/make_thirdparty.py with {name} installed")
    with np.load(FIXTURES / f"{name}.npz") as data:
        return nir_path, {k: data[k] for k in data.files}


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_reference_reproduces_the_framework(name: str) -> None:
    path, data = load(name)
    T = int(data["time_steps"])
    backend = ReferenceBackend(read_graph(path), time_steps=T, dtype="float64", **fixture_options(data))
    r = backend.run(data["inputs"])
    assert np.array_equal(r.q, data["counts"]), f"{name}: output spike counts differ"
    hidden = [op.name for op in backend.plan.ops if op.spiking][0]
    assert np.array_equal(r.spikes[hidden], data["hidden"].astype(np.int64))
    assert data["counts"].sum() > 0 and data["hidden"].sum() > 0


@pytest.mark.parametrize("name", ["snntorch", "norse", "sinabs"])
def test_plain_nir_reading_differs_where_conventions_differ(name: str) -> None:
    """Without the convention the same file means something else: the normalisation matters."""
    path, data = load(name)
    T = int(data["time_steps"])
    try:
        r = ReferenceBackend(read_graph(path), time_steps=T, dtype="float64").run(data["inputs"])
    except UserError as exc:  # Norse's tau read as NIR seconds is shorter than a step
        assert "shorter than one step" in str(exc)
        return
    assert not np.array_equal(r.q, data["counts"])


def test_conventions_are_reported_in_the_plan() -> None:
    path, _ = load("snntorch")
    plan = build_plan(read_graph(path), convention="snntorch", time_steps=3)
    steps = [op.neuron for op in plan.ops if op.neuron is not None]
    assert steps and all(s.compare == ">" and s.reset == "soft_next" for s in steps)
    assert plan.semantics.dt == 1e-4 and plan.semantics.convention == "snntorch"


# ---------------------------------------------------------------- what the file cannot say (issue 20)


def _sinabs_like_graph(seed: int = 0, n_in: int = 6, n_hid: int = 16, n_out: int = 4) -> nir.NIRGraph:
    """Affine -> IF -> Affine -> IF -> Affine -> LIF, the nodes sinabs.nir.to_nir writes (r = 1, no v_reset)."""
    rng = np.random.default_rng(seed)

    def affine(o: int, i: int, g: float) -> nir.Affine:
        return nir.Affine(weight=rng.normal(size=(o, i)) * g / np.sqrt(i), bias=rng.normal(size=o) * 0.1)

    nodes = {"input": nir.Input(input_type={"input": np.array([n_in])}), "fc1": affine(n_hid, n_in, 1.5),
             "if1": nir.IF(r=np.ones(n_hid), v_threshold=np.full(n_hid, 1.0)), "fc2": affine(n_hid, n_hid, 2.0),
             "if2": nir.IF(r=np.ones(n_hid), v_threshold=np.full(n_hid, 0.8)), "fc3": affine(n_out, n_hid, 2.0),
             "lif": nir.LIF(tau=np.full(n_out, 3.0), r=np.ones(n_out), v_leak=np.zeros(n_out),
                            v_threshold=np.full(n_out, 0.5)),
             "output": nir.Output(output_type={"output": np.array([n_out])})}
    chain_ = ["input", "fc1", "if1", "fc2", "if2", "fc3", "lif", "output"]
    return nir.NIRGraph(nodes=nodes, edges=list(zip(chain_, chain_[1:])))


def _sinabs_run(graph: nir.NIRGraph, x: np.ndarray, T: int, single: bool, floor: bool, membrane_reset: bool,
                norm_input: bool) -> dict[str, np.ndarray]:
    """Sinabs 3.1's layer step (sinabs/layers/functional/lif.py, activation/spike_generation.py) in
    numpy: v = a v + (1-a) x (norm_input) or a v + x (IAF: a = 1, x); spikes (v - thr >= 0) or
    (v > 0) trunc(v / thr); MembraneSubtract v -= s thr or MembraneReset v = 0 where s > 0; then
    the floor relu(v - m) + m with m = -thr (from_nir's IAF only)."""
    nd = graph.nodes
    counts, h = {}, x.astype(np.float64)
    for layer, fc in (("if1", "fc1"), ("if2", "fc2"), ("lif", "fc3")):
        node = nd[layer]
        cur = h @ nd[fc].weight.T + nd[fc].bias  # [T, N, n]
        thr = np.asarray(node.v_threshold, dtype=np.float64)
        leaky = isinstance(node, nir.LIF)
        a = np.exp(-1.0 / np.asarray(node.tau, dtype=np.float64)) if leaky else 1.0
        v = np.zeros(cur.shape[1:])
        out = []
        for t in range(T):
            inp = cur[t]
            if leaky and norm_input:
                inp = (1 - a) * inp
            v = a * v + inp
            s = (v - thr >= 0).astype(np.float64) if single else (v > 0) * np.trunc(v / thr)
            v = np.where(s > 0, 0.0, v) if membrane_reset else v - s * thr
            if floor and not leaky:
                v = np.maximum(v - (-thr), 0.0) + (-thr)
            out.append(s)
        h = np.stack(out)
        counts[layer] = h.sum(axis=0).astype(np.int64)
    return counts


@pytest.mark.parametrize("mods", ["", "+no-floor", "+single-spike", "+single-spike+no-floor", "+membrane-reset",
                                  "+single-spike+membrane-reset", "+no-norm-input"])
def test_sinabs_modifiers_reproduce_sinabs_step(mods: str) -> None:
    """--convention sinabs[+MOD...] against an independent numpy transcription of Sinabs' layer step:
    equal spike counts in every layer, and the floor or spike function visibly matters."""
    graph, T = _sinabs_like_graph(), 12
    x = np.random.default_rng(1).normal(0.4, 1.0, size=(48, 6))
    flags = dict(single="single-spike" in mods, floor="no-floor" not in mods,
                 membrane_reset="membrane-reset" in mods, norm_input="no-norm-input" not in mods)
    want = _sinabs_run(graph, np.broadcast_to(x, (T, *x.shape)), T, **flags)
    got = ReferenceBackend(graph, convention="sinabs" + mods, time_steps=T, dtype="float64").run(x)
    for layer, c in want.items():
        assert c.sum() > 0, layer
        assert np.array_equal(got.spikes[layer], c), layer
    other = _sinabs_run(graph, np.broadcast_to(x, (T, *x.shape)), T, **{**flags, "floor": not flags["floor"]})
    assert any(not np.array_equal(other[k], want[k]) for k in want), "the floor should matter on this net"


def test_snntorch_no_delay_is_a_same_step_subtraction_with_a_recheck() -> None:
    """snnTorch Leaky(reset_delay=False), transcribed from snntorch/_neurons/leaky.py forward():
    ``reset = mem > thr`` from the stored (already reset) membrane, ``mem = beta mem + x - reset thr``,
    ``spk = mem > thr``, then ``mem -= (spk - reset) thr``. The stored membrane is the same-step
    subtraction, but while it stays above threshold the spike test sees one threshold less; on
    inputs strong enough for that, plain same-step subtraction and the default (delayed) convention
    both give other counts (checked against snnTorch itself in tests/test_frameworks.py)."""
    rng = np.random.default_rng(3)
    beta, dt, n = np.full(8, 0.8), 1e-4, 8
    lif = nir.LIF(tau=dt / (1 - beta), r=(dt / (1 - beta)) / dt, v_leak=np.zeros(n), v_threshold=np.ones(n),
                  v_reset=np.zeros(n))
    w = rng.normal(size=(n, 5)) * 1.2
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([5])}), "fc": nir.Linear(weight=w),
                            "lif": lif, "output": nir.Output(output_type={"output": np.array([n])})},
                     edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")])
    T = 16
    x = (rng.random((T, 32, 5)) < 0.4) * 2.0  # input spikes: bursts push the membrane past 2 thresholds
    mem, want = np.zeros((32, n)), np.zeros((32, n))
    plain_mem, plain = np.zeros((32, n)), np.zeros((32, n))
    for t in range(T):
        reset = (mem - 1.0 > 0).astype(np.float64)
        mem = beta * mem + x[t] @ w.T - reset * 1.0
        spk = (mem - 1.0 > 0).astype(np.float64)
        mem = mem - (spk - reset) * 1.0
        want += spk
        plain_mem = beta * plain_mem + x[t] @ w.T
        plain_spk = (plain_mem > 1.0).astype(np.float64)
        plain_mem, plain = plain_mem - plain_spk, plain + plain_spk
    zeros = np.zeros((32, 5))
    got = ReferenceBackend(g, convention="snntorch+no-delay", time_steps=T, dtype="float64").run(zeros, x)
    assert np.array_equal(got.spikes["lif"], want.astype(np.int64)) and want.sum() > 0
    assert not np.array_equal(plain, want)  # the recheck matters on this input
    delayed = ReferenceBackend(g, convention="snntorch", time_steps=T, dtype="float64").run(zeros, x)
    assert not np.array_equal(delayed.spikes["lif"], got.spikes["lif"])


def test_convention_modifiers_are_checked() -> None:
    with pytest.raises(UserError, match="unknown modifier 'bogus' for NIR convention 'sinabs'; valid modifiers: "
                                        "single-spike, no-floor"):
        build_plan(_sinabs_like_graph(), convention="sinabs+bogus", time_steps=2)
    with pytest.raises(UserError, match="valid modifiers: none"):
        build_plan(_sinabs_like_graph(), convention="nir+single-spike", time_steps=2)
    plan = build_plan(_sinabs_like_graph(), convention="sinabs+single-spike+no-floor", time_steps=2)
    assert plan.semantics.convention == "sinabs+no-floor+single-spike"
    steps = {op.name: op.neuron for op in plan.ops if op.neuron is not None}
    assert not steps["if1"].multi_spike and steps["if1"].v_floor is None
    floored = build_plan(_sinabs_like_graph(), convention="sinabs", time_steps=2)
    assert floored.op("if1").neuron.v_floor == -1.0 and floored.op("lif").neuron.v_floor is None


def test_norse_needs_dt_and_reads_the_tau_encoding_from_the_file(tmp_path: Path) -> None:
    path, data = load("norse")
    graph = read_graph(path)
    with pytest.raises(UserError, match="^--convention norse: the graph does not record the dt .*pass --dt$"):
        build_plan(graph, convention="norse", time_steps=3)
    plan = build_plan(graph, convention="norse", time_steps=3, dt=1e-3)  # a NIR 1.0.8 file: dt * tau
    assert {op.neuron.tau for op in plan.ops if op.neuron is not None} == {5.0, 10.0 / 3.0}
    in_memory = copy.copy(graph)  # the same nodes, not read from a file
    delattr(in_memory, FILE_VERSION_ATTR)
    with pytest.raises(UserError, match=r"cannot be told; use --convention norse\+dt-tau"):
        build_plan(in_memory, convention="norse", time_steps=3, dt=1e-3)
    assert build_plan(in_memory, convention="norse+tau-inverse", time_steps=3, dt=1e-6).op("1").neuron.tau == 5.0


def test_snntorch_conventions_refuse_a_threshold_at_or_below_zero() -> None:
    """snnTorch's resets are derived for a positive threshold (reset = mem_prev > thr would fire
    from rest): such a node is one error naming it, not a silently different reset."""
    import nir

    from exporters.canonical import build_plan
    from pipeline.errors import UserError

    n = 3
    graph = nir.NIRGraph(
        nodes={"input": nir.Input(input_type=np.array([2])),
               "fc": nir.Affine(weight=np.ones((n, 2)), bias=np.zeros(n)),
               "lif": nir.LIF(tau=np.full(n, 1e-3), r=np.full(n, 10.0), v_leak=np.zeros(n),
                              v_threshold=np.array([1.0, 0.0, 1.0]), v_reset=np.zeros(n)),
               "output": nir.Output(output_type=np.array([n]))},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")])
    for convention in ("snntorch", "snntorch+no-delay", "snntorch-zero"):
        with pytest.raises(UserError, match=r"node 'lif' .*v_threshold <= 0"):
            build_plan(graph, convention=convention, time_steps=4)
    graph.nodes["lif"].v_threshold = np.ones(n)
    build_plan(graph, convention="snntorch", time_steps=4)  # a positive threshold builds

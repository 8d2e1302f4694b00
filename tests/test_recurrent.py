"""Recurrent NIR graphs (issue 20): a loop's closing edge carries the previous step's value
(docs/NIR.md "Recurrence"). The reference runs them step by step, held here to independent
numpy transcriptions of snnTorch's RLeaky and RSynaptic (reset_delay=False); the simulators that
lay loops out are held to the reference, the others refuse with one line naming the node."""

from __future__ import annotations

import dataclasses
import importlib.util

import nir
import numpy as np
import pytest

from backends import REGISTRY, Target
from backends.base import Backend
from conftest import assert_same, require
from backends.reference import ReferenceBackend
from exporters.canonical import build_plan
from exporters.plan.semantics import with_input_series
from pipeline.errors import UserError

DT = 1e-4


def rsynaptic_graph(alpha: float | None, beta: float, seed: int = 0, n_in: int = 5, n: int = 12, n_out: int = 3,
                    bias: bool = False):
    """input -> fc -> neuron (loop neuron -> w_rec -> neuron) -> fc2 -> out neuron, as snnTorch 1.0 writes
    RLeaky (LIF) and RSynaptic (CubaLIF, alpha given): tau = dt/(1-beta), r = tau/dt, w_in = tau_syn/dt.
    ``bias``: w_rec an Affine (snnTorch's default ``nn.Linear``), its bias returned with the weights."""
    rng = np.random.default_rng(seed)

    def neuron(k: int):
        tau = np.full(k, DT / (1 - beta))
        if alpha is None:
            return nir.LIF(tau=tau, r=tau / DT, v_leak=np.zeros(k), v_threshold=np.ones(k), v_reset=np.zeros(k))
        tau_syn = np.full(k, DT / (1 - alpha))
        return nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau, r=tau / DT, v_leak=np.zeros(k), v_threshold=np.ones(k),
                           v_reset=np.zeros(k), w_in=tau_syn / DT)

    w_in, w_rec, w_out = rng.normal(size=(n, n_in)) * 0.8, rng.normal(size=(n, n)) * 0.5, rng.normal(size=(n_out, n))
    b_rec = rng.normal(size=n) * 0.3 if bias else np.zeros(n)
    rec = nir.Affine(weight=w_rec, bias=b_rec) if bias else nir.Linear(weight=w_rec)
    nodes = {"input": nir.Input(input_type={"input": np.array([n_in])}), "fc1": nir.Linear(weight=w_in),
             "lif1": neuron(n), "w_rec": rec, "fc2": nir.Linear(weight=w_out),
             "lif2": neuron(n_out), "output": nir.Output(output_type={"output": np.array([n_out])})}
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "w_rec"), ("w_rec", "lif1"), ("lif1", "fc2"),
             ("fc2", "lif2"), ("lif2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges), (w_in, w_rec, w_out, b_rec)


def snntorch_run(weights, x: np.ndarray, alpha: float | None, beta: float, zero: bool = False, delay: bool = False):
    """snnTorch 1.0's RLeaky then Leaky (``alpha`` None) or RSynaptic then Synaptic, transcribed from
    the forward() of snntorch/_neurons/{rleaky,leaky,rsynaptic,synaptic}.py (checked against the
    package itself: tests/test_frameworks.py): ``reset = mem > thr`` from the stored membrane; the
    recurrent input ``V spk[t-1] + b`` (spk zero before the first step, so the bias is there at t = 0);
    the state function with its reset term (subtract: ``- reset*thr``; zero: Leaky zeroes the stored
    membrane first, the others subtract ``reset * (new mem)``); ``spk = mem - thr > 0``; then, with
    reset_delay=False, ``mem -= (spk - reset) * (thr | mem)``, which RSynaptic writes to its local
    arguments only (no effect). ``x`` is [T, N, n_in]; thr = 1."""
    w_in, w_rec, w_out, b_rec = weights
    T, N = x.shape[:2]
    state = [dict(syn=np.zeros((N, w.shape[0])), mem=np.zeros((N, w.shape[0]))) for w in (w_in, w_out)]
    spk1 = np.zeros((N, w_in.shape[0]))
    counts = [np.zeros((N, w_in.shape[0])), np.zeros((N, w_out.shape[0]))]
    for t in range(T):
        cur = x[t] @ w_in.T + (spk1 @ w_rec.T + b_rec)
        for layer in range(2):
            st = state[layer]
            reset = (st["mem"] - 1.0 > 0).astype(np.float64)
            if alpha is None and layer == 1 and zero:  # Leaky._base_zero
                mem = beta * ((1 - reset) * st["mem"]) + cur
            else:
                if alpha is not None:
                    st["syn"] = alpha * st["syn"] + cur
                mem = beta * st["mem"] + (cur if alpha is None else st["syn"])
                mem = mem - mem * reset if zero else mem - reset * 1.0
            spk = (mem - 1.0 > 0).astype(np.float64)
            if not delay and not (alpha is not None and layer == 0):
                mem = mem - (spk - reset) * (mem if zero else 1.0)
            st["mem"] = mem
            counts[layer] += spk
            if layer == 0:
                spk1 = spk
                cur = spk @ w_out.T
    return counts


@pytest.mark.parametrize("alpha, zero, bias, delay", [
    (None, False, False, False), (0.75, False, False, False), (0.6, True, False, False), (None, True, True, False),
    (0.75, False, True, False), (None, False, True, True), (None, True, False, True), (0.6, True, True, True),
    (0.75, False, False, True)])
def test_reference_runs_snntorch_recurrent_nets(alpha: float | None, zero: bool, bias: bool, delay: bool) -> None:
    beta, T = 0.85, 24
    graph, weights = rsynaptic_graph(alpha, beta, bias=bias)
    rng = np.random.default_rng(2)
    spikes = (rng.random((T, 16, 5)) < 0.3).astype(np.float64) * 1.5  # time-varying input (event data)
    conv = ("snntorch-zero" if zero else "snntorch") + ("" if delay else "+no-delay")
    got = ReferenceBackend(graph, convention=conv, time_steps=T, dtype="float64").run(np.zeros((16, 5)), spikes)
    want = snntorch_run(weights, spikes, alpha, beta, zero, delay)
    assert want[0].sum() > 0 and want[1].sum() > 0
    assert np.array_equal(got.spikes["lif1"], want[0].astype(np.int64))
    assert np.array_equal(got.spikes["lif2"], want[1].astype(np.int64))
    no_loop = ReferenceBackend(graph, convention=conv, time_steps=T, dtype="float64")
    no_loop.params["w_rec"]["weight"] = no_loop.params["w_rec"]["weight"] * 0  # the loop matters
    assert not np.array_equal(no_loop.run(np.zeros((16, 5)), spikes).spikes["lif1"], got.spikes["lif1"])


def test_recurrent_state_is_reset_per_observation() -> None:
    graph, _ = rsynaptic_graph(0.75, 0.85)
    backend = ReferenceBackend(graph, convention="snntorch+no-delay", time_steps=12, dtype="float64")
    obs = np.random.default_rng(3).normal(0.6, 1.0, size=(2, 5))
    seq = backend.run(np.concatenate([obs, obs[:1]]))
    assert np.array_equal(seq.spikes["lif1"][0], seq.spikes["lif1"][2])
    assert np.array_equal(seq.q[0], backend.run(obs[:1]).q[0])


def series_plan(graph, convention: str, T: int):
    """The plan for a time-varying input (what run-backend --input-spikes builds)."""
    return with_input_series(build_plan(graph, convention=convention, time_steps=T))


def assert_runs_like_the_reference(t: Target, graph: nir.NIRGraph, convention: str, spikes: np.ndarray,
                                   obs: np.ndarray) -> Backend:
    """``t`` held to the float64 reference on ``graph`` read with ``convention``: on the spike trains
    ``spikes`` [T, N, n_in] (a series plan, zero observations) and on the constant currents ``obs``
    [M, n_in] (built from the graph, as run-backend does), equal spike counts in every layer (each
    spiking) and Q, each observation afresh. Returns the closed backend of the spike trains, whose
    layout a test may check."""
    T = len(spikes)
    runs = [(series_plan(graph, convention, T), {}, np.zeros(spikes.shape[1:]), spikes),
            (graph, {"convention": convention, "time_steps": T}, obs, None)]
    built = []
    for source, options, x, series in runs:
        ref = ReferenceBackend(source, dtype="float64", **options).run(x, series)
        backend = t.build(source, **options)
        try:
            assert_same(backend.run(x, series), ref)
        finally:
            backend.close()
        built.append(backend)
    return built[0]


# the targets that lay loops out, against the reference; the others refuse by name
LOOP_TARGETS = ("nest", "pynn-nest", "lava")
FIXED_LOOP_TARGETS = ("lava-fixed", "lava-fixed-w16")  # held to their own integer model


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", LOOP_TARGETS)
@pytest.mark.parametrize("convention", ["snntorch", "snntorch+no-delay", "snntorch-zero", "snntorch-zero+no-delay"])
def test_simulators_run_a_recurrent_lif_like_the_reference(target: str, convention: str) -> None:
    """snnTorch RLeaky with a biased recurrent Affine (delayed subtractive reset: NEST's eprop_iaf;
    zero reset: iaf_psc_delta, with one refractory step for RLeaky's delayed one; reset_delay=False
    subtraction: eprop_iaf with a helper population), on spike trains and on a constant current:
    equal spike counts in both layers and Q, observation after observation (each starts afresh,
    the loop's spikes included)."""
    graph, _ = rsynaptic_graph(None, 0.85, bias=True)
    spikes = (np.random.default_rng(2).random((20, 6, 5)) < 0.3).astype(np.float64)
    obs = np.random.default_rng(3).normal(0.8, 1.0, size=(6, 5))
    assert_runs_like_the_reference(require(target), graph, convention, spikes, obs)


def without_loop(graph: nir.NIRGraph) -> nir.NIRGraph:
    """The same net with its loop (w_rec) removed: snnTorch Leaky/Synaptic layers."""
    nodes = {k: v for k, v in graph.nodes.items() if k != "w_rec"}
    return nir.NIRGraph(nodes=nodes, edges=[e for e in graph.edges if "w_rec" not in e])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", ["nest", "pynn-nest"])
@pytest.mark.parametrize("alpha", [None, 0.7])
def test_nest_runs_the_delayed_zero_reset_with_one_refractory_step(target: str, alpha: float | None) -> None:
    """snnTorch's delayed zero reset (``zero_next``: RLeaky, and Synaptic's CubaLIF) as one refractory
    step, driven hard so that neurons fire every other step, also right after their window, where a
    refractory step would swallow the per-observation clamp without the early one
    (backends/nest/devices.py): equal spike counts in both layers and Q, 12 observations in a row."""
    t = require(target)
    graph, _ = rsynaptic_graph(alpha, 0.85, bias=True)
    if alpha is not None:
        graph = without_loop(graph)  # the loop into a CubaLIF's current has no NEST form (docs/NEST.md)
    plan = build_plan(graph, convention="snntorch-zero", time_steps=20)
    assert plan.op("lif1").neuron.reset == "zero_next"
    obs = np.random.default_rng(5).normal(1.5, 2.0, size=(12, 5))
    ref = ReferenceBackend(plan, dtype="float64").run(obs)
    assert ref.spikes["lif1"].sum() > 500 and ref.spikes["lif2"].sum() > 0
    backend = t.build(plan)
    try:
        assert_same(backend.run(obs), ref)
    finally:
        backend.close()
    if alpha is None:  # the reset matters: a same-step hard reset is another net
        hard = ReferenceBackend(build_plan(graph, convention="snntorch-zero+no-delay", time_steps=20),
                                dtype="float64").run(obs)
        assert not np.array_equal(hard.spikes["lif1"], ref.spikes["lif1"])


@pytest.mark.timeout(180)
@pytest.mark.parametrize("target", ["nest", "pynn-nest"])
@pytest.mark.parametrize("convention", ["snntorch", "snntorch+no-delay", "snntorch-zero", "snntorch-zero+no-delay"])
def test_nest_runs_a_recurrent_cubalif_with_snntorchs_delayed_resets(target: str, convention: str) -> None:
    """snnTorch RSynaptic (the loop enters the CubaLIF's synaptic current) then Synaptic, with a biased
    recurrent Affine, on gif_psc_exp (backends.nest.neurons.gif_spec: its current charges V in the
    step it arrives, so the loop takes one step; a delayed subtraction through its spike-triggered
    current, the delayed zero reset as one refractory step; Synaptic's reset_delay=False subtraction
    with a helper population), in a fresh network per observation: equal spike counts in both layers
    and Q on spike trains and on a constant current."""
    t = require(target)
    graph, _ = rsynaptic_graph(0.75, 0.85, bias=True)
    reset = build_plan(graph, convention=convention, time_steps=20).op("lif1").neuron.reset
    assert reset in ("soft_next", "zero_next")
    spikes = (np.random.default_rng(4).random((20, 5, 5)) < 0.3).astype(np.float64)
    obs = np.random.default_rng(3).normal(0.8, 1.0, size=(4, 5))
    backend = assert_runs_like_the_reference(t, graph, convention, spikes, obs)
    assert backend.specs["lif1"].model == "gif_psc_exp" and backend.fresh


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", ["nest", "pynn-nest"])
def test_nest_runs_snntorch_synaptic_with_a_membrane_readout(target: str) -> None:
    """Synaptic layers (CubaLIF, delayed subtraction: gif_psc_exp) read with spike_count, which breaks
    ties by the output layer's final membrane; a start away from v_leak (gif_psc_exp's fresh network
    rests there before the window) is one line naming the node."""
    t = require(target)
    graph = without_loop(rsynaptic_graph(0.75, 0.85, bias=True)[0])
    obs = np.random.default_rng(6).normal(0.5, 1.0, size=(6, 5))
    ref = ReferenceBackend(graph, convention="snntorch", time_steps=12, dtype="float64", readout="spike_count")
    assert ref.plan.op("lif2").neuron.reset == "soft_next"
    want = ref.run(obs)
    backend = t.build(graph, convention="snntorch", time_steps=12, readout="spike_count")
    try:
        assert "lif2" in backend.net.traced
        got = backend.run(obs)
    finally:
        backend.close()
    assert_same(got, want)
    node = graph.nodes["lif1"]
    graph.nodes["lif1"] = nir.CubaLIF(tau_syn=node.tau_syn, tau_mem=node.tau_mem, r=node.r, v_threshold=node.v_threshold,
                                      v_leak=np.full_like(node.v_leak, 0.2), v_reset=node.v_reset, w_in=node.w_in)
    with pytest.raises(UserError, match=r"^node 'lif1' \(CubaLIF\): on NEST this CubaLIF .* resting potential") as err:
        t.build(graph, convention="snntorch", time_steps=12).close()
    assert "\n" not in str(err.value)


def with_reset(plan, reset: str):
    """``plan`` with every neuron's reset replaced (what another reset would make of the same net)."""
    ops = [dataclasses.replace(op, neuron=dataclasses.replace(op.neuron, reset=reset)) if op.neuron is not None
           else op for op in plan.ops]
    return dataclasses.replace(plan, ops=ops)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", ["nest", "pynn-nest"])
@pytest.mark.parametrize("alpha, loop", [(None, True), (None, False), (0.75, False)])
def test_nest_runs_snntorchs_reset_delay_false_subtraction(target: str, alpha: float | None, loop: bool) -> None:
    """snnTorch's reset_delay=False subtraction (``soft_recheck``: RLeaky/Leaky and Synaptic with
    ``snntorch+no-delay``) tests for a spike with ``v_sub`` off while the previous membrane is above
    threshold: on NEST a helper population spikes that condition one step ahead
    (backends.nest.neurons.Recheck; eprop_iaf for a LIF, gif_psc_exp with pulse pairs for a CubaLIF).
    Driven past two thresholds, where a plain same-step subtraction is another net (the reference
    with ``soft`` differs): equal spike counts and Q, 8 observations."""
    t = require(target)
    T = 20
    graph, _ = rsynaptic_graph(alpha, 0.85, bias=True)
    if not loop:
        graph = without_loop(graph)
    spikes = (np.random.default_rng(4).random((T, 8, 5)) < 0.5).astype(np.float64) * 3.0
    plan = series_plan(graph, "snntorch+no-delay", T)
    assert plan.op("lif1").neuron.reset == plan.op("lif2").neuron.reset == "soft_recheck"
    ref = ReferenceBackend(plan, dtype="float64").run(np.zeros((8, 5)), spikes)
    soft = ReferenceBackend(with_reset(plan, "soft"), dtype="float64").run(np.zeros((8, 5)), spikes)
    assert not np.array_equal(soft.spikes["lif1"], ref.spikes["lif1"])
    backend = t.build(plan)
    try:
        assert "lif1#recheck" in backend.specs
        assert_same(backend.run(np.zeros((8, 5)), spikes), ref)
    finally:
        backend.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", ["nest", "pynn-nest"])
def test_nest_runs_a_cubalif_with_a_same_step_subtraction(target: str) -> None:
    """A CubaLIF with the plan's same-step subtraction (``soft``, as a soft-reset loop would give; no
    reader writes one for a CubaLIF today): gif_psc_exp subtracts ``d v_sub`` on the next step, and the
    final membrane (spike_count's tie-break) takes ``v_sub`` off where the last step spiked."""
    t = require(target)
    graph = without_loop(rsynaptic_graph(0.75, 0.85, bias=True)[0])
    plan = with_reset(build_plan(graph, convention="snntorch", time_steps=12, readout="spike_count"), "soft")
    obs = np.random.default_rng(6).normal(1.0, 1.5, size=(6, 5))
    ref = ReferenceBackend(plan, dtype="float64").run(obs)
    assert ref.spikes["lif2"].sum() > 0
    backend = t.build(plan)
    try:
        assert backend.specs["lif2"].v_correction is not None
        assert_same(backend.run(obs), ref)
    finally:
        backend.close()


@pytest.mark.parametrize("target", ["nest", "pynn-nest"])
@pytest.mark.parametrize("convention", ["snntorch-zero", "snntorch+no-delay"])
def test_nest_refuses_reading_the_membrane_of_a_delayed_zero_reset(target: str, convention: str) -> None:
    """NEST holds V at V_reset from the spike on where the graph keeps the charge one more step
    (delayed zero reset), or holds it in two populations (reset_delay=False subtraction): a readout
    that reads that membrane (spike_count breaks ties by it) is one line naming the node; a rate
    readout of the same net runs."""
    t = require(target)
    g, _ = rsynaptic_graph(None, 0.85, bias=True)
    nodes = {k: v for k, v in g.nodes.items() if k not in ("fc2", "lif2")}
    nodes["output"] = nir.Output(output_type={"output": np.array([12])})
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "fc1"), ("fc1", "lif1"), ("lif1", "w_rec"),
                                             ("w_rec", "lif1"), ("lif1", "output")])
    with pytest.raises(UserError, match=r"^node 'lif1' \(LIF\): readout 'spike_count' reads its membrane") as err:
        t.build(graph, convention=convention, time_steps=8, readout="spike_count").close()
    assert "\n" not in str(err.value)
    t.build(graph, convention=convention, time_steps=8, readout="rate").close()


def two_population_loop() -> nir.NIRGraph:
    """input -> lif1 -> lif2, and lif2 -> back -> lif1: a loop through two populations."""
    g, (w_in, _, w_out, _) = rsynaptic_graph(None, 0.85)
    nodes = {k: v for k, v in g.nodes.items() if k != "w_rec"}
    nodes["back"] = nir.Linear(weight=np.ones((12, 3)))
    edges = [e for e in g.edges if "w_rec" not in e] + [("lif2", "back"), ("back", "lif1")]
    return nir.NIRGraph(nodes=nodes, edges=edges)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", ["lava", *FIXED_LOOP_TARGETS])
@pytest.mark.parametrize("convention", ["snntorch+no-delay", "snntorch-zero+no-delay"])
def test_lava_runs_a_recurrent_cubalif(target: str, convention: str) -> None:
    """snnTorch RSynaptic (the loop enters the CubaLIF's synaptic current) with a biased recurrent
    Affine: Lava float equals the reference, lava-fixed its independent integer model
    (backends.lava.torch_fixed, stepped through the loop) bit for bit."""
    t = require(target)
    T = 20
    graph, _ = rsynaptic_graph(0.75, 0.85, bias=True)
    spikes = (np.random.default_rng(4).random((T, 4, 5)) < 0.3).astype(np.float64)
    plan = series_plan(graph, convention, T)
    backend = t.build(plan)
    try:
        got = backend.run(np.zeros((4, 5)), spikes)
    finally:
        backend.close()
    if target == "lava":
        assert_same(got, ReferenceBackend(plan, dtype="float64").run(np.zeros((4, 5)), spikes))
        return
    from backends.lava.torch_fixed import LoihiFixedTorch
    bits = t.preset.get("weight_bits", t.defaults.get("weight_bits", 8))
    want = LoihiFixedTorch(plan, weight_bits=bits).run(np.zeros((4, 5)), spikes)
    assert want.spikes["lif1"].sum() > 0 and want.spikes["lif2"].sum() > 0
    for name in want.spikes:
        assert np.array_equal(got.spikes[name], want.spikes[name]), name
    assert np.array_equal(got.q, want.q)


@pytest.mark.parametrize("target", [*LOOP_TARGETS, *FIXED_LOOP_TARGETS, "spinnaker-fixedpoint"])
def test_loops_a_target_cannot_delay_are_refused_naming_the_node(target: str) -> None:
    """A spike takes one step per NEST connection or Lava synapse map: a loop through a deeper
    population would need less than one step (NEST: so would a loop entering a CubaLIF's synaptic
    current, charged into V a step after it arrives); the reference runs both."""
    t = require(target)
    plan = build_plan(two_population_loop(), convention="snntorch-zero+no-delay", time_steps=4)
    assert plan.op("lif1").recurrent == ["back"]
    ReferenceBackend(plan).run(np.zeros((1, 5)))
    with pytest.raises(UserError, match=r"^node 'lif1'( \(LIF\))?: it receives 'lif2' through a loop") as err:
        t.build(plan).close()
    assert "\n" not in str(err.value)
    if not target.endswith("nest"):
        return
    graph, _ = rsynaptic_graph(0.75, 0.85)
    with pytest.raises(UserError, match=r"^node 'lif1' \(CubaLIF\): its loop enters its synaptic current") as err:
        t.build(graph, convention="spikingjelly", time_steps=4).close()  # a hard reset: NEST has a CubaLIF for it
    assert "\n" not in str(err.value)


def odd_loops() -> dict[str, nir.NIRGraph]:
    """Loops other exporters may write: the closing edge into a synaptic node that also takes the
    input (input -> A -> lif -> A), a neuron's direct edge onto itself, two loops into one node."""
    rng = np.random.default_rng(0)
    n = 12

    def lif(k: int) -> nir.LIF:
        tau = np.full(k, DT / 0.2)
        return nir.LIF(tau=tau, r=tau / DT, v_leak=np.zeros(k), v_threshold=np.ones(k), v_reset=np.zeros(k))

    base = {"input": nir.Input(input_type={"input": np.array([n])}), "lif": lif(n), "lif2": lif(3),
            "fc2": nir.Affine(weight=rng.normal(size=(3, n)), bias=np.zeros(3)),
            "output": nir.Output(output_type={"output": np.array([3])})}
    tail = [("lif", "fc2"), ("fc2", "lif2"), ("lif2", "output")]
    into = dict(base, A=nir.Affine(weight=rng.normal(size=(n, n)) * 0.7, bias=rng.normal(size=n) * 0.2))
    direct = dict(base, fc=nir.Linear(weight=rng.normal(size=(n, n)) * 0.8))
    two = dict(direct, r1=nir.Linear(weight=rng.normal(size=(n, n)) * 0.4),
               r2=nir.Affine(weight=rng.normal(size=(n, n)) * 0.4, bias=rng.normal(size=n) * 0.1))
    return {"into-synapse": nir.NIRGraph(nodes=into, edges=[("input", "A"), ("A", "lif"), ("lif", "A"), *tail]),
            "direct-self": nir.NIRGraph(nodes=direct, edges=[("input", "fc"), ("fc", "lif"), ("lif", "lif"), *tail]),
            "two-loops": nir.NIRGraph(nodes=two, edges=[("input", "fc"), ("fc", "lif"), ("lif", "r1"), ("r1", "lif"),
                                                        ("lif", "r2"), ("r2", "lif"), *tail])}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", [*LOOP_TARGETS, "spinnaker-fixedpoint"])
def test_odd_loops_run_like_the_reference(target: str) -> None:
    """Each odd loop equals the reference (spinnaker-fixedpoint within its tolerance), or is one line
    naming the node (Lava: a synaptic map that sums the input and a layer's output)."""
    t = require(target)
    T = 16
    spikes = (np.random.default_rng(1).random((T, 6, 12)) < 0.3).astype(np.float64)
    for name, graph in odd_loops().items():
        plan = series_plan(graph, "snntorch-zero+no-delay", T)
        assert plan.recurrent_ops, name
        ref = ReferenceBackend(plan, dtype="float64").run(np.zeros((6, 12)), spikes)
        if name == "into-synapse" and target == "lava":
            with pytest.raises(UserError, match=r"^node 'A': a synaptic map that adds the input layer"):
                t.build(plan).close()
            continue
        backend = t.build(plan)
        try:
            assert_same(backend.run(np.zeros((6, 12)), spikes), ref, tolerance=t.tolerance)
        finally:
            backend.close()


@pytest.mark.parametrize("v_leak", [0.0, 0.3])
def test_a_loop_through_a_non_spiking_node_on_lava(v_leak: float) -> None:
    """LI -> rec -> LI: float Lava sends the membrane through the loop; before the first step the
    reference carries the LI's initial membrane v_leak, which Lava (silent outside its window) cannot
    send, so a non-zero one is refused by name. NEST passes spikes only and refuses both."""
    t = require("lava")
    rng = np.random.default_rng(0)
    n = 8
    nodes = {"input": nir.Input(input_type={"input": np.array([n])}), "fc": nir.Linear(weight=rng.normal(size=(n, n))),
             "li": nir.LI(tau=np.full(n, 3 * DT), r=np.ones(n), v_leak=np.full(n, v_leak)),
             "rec": nir.Linear(weight=rng.normal(size=(n, n)) * 0.5), "fc2": nir.Linear(weight=rng.normal(size=(3, n)) * 2),
             "lif": nir.LIF(tau=np.full(3, 2 * DT), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3),
                            v_reset=np.zeros(3)),
             "output": nir.Output(output_type={"output": np.array([3])})}
    edges = [("input", "fc"), ("fc", "li"), ("li", "rec"), ("rec", "li"), ("li", "fc2"), ("fc2", "lif"), ("lif", "output")]
    plan = series_plan(nir.NIRGraph(nodes=nodes, edges=edges), "nir", 12)
    spikes = (rng.random((12, 5, n)) < 0.4).astype(np.float64)
    if v_leak:
        with pytest.raises(UserError, match=r"^node 'li': its loop source 'li' starts at a non-zero membrane"):
            t.build(plan).close()
        return
    backend = t.build(plan)
    try:
        got = backend.run(np.zeros((5, n)), spikes)
    finally:
        backend.close()
    ref = ReferenceBackend(plan, dtype="float64").run(np.zeros((5, n)), spikes)
    assert_same(got, ref)


def test_spinnaker_lays_a_loop_out_as_a_one_step_self_projection() -> None:
    """sPyNNaker: the loop is a projection of the population onto itself with delay 1 (split by sign
    like every projection), and spinnaker-fixedpoint adds it into the same 16-bit ring buffer step
    by step: an RLeaky with zero reset (sPyNNaker has no subtractive one) within its tolerance."""
    from backends.common.layout import layout
    from backends.pynn.spinnaker import describe

    t = require("spinnaker-fixedpoint")
    T = 20
    graph, (_, w_rec, _, _) = rsynaptic_graph(None, 0.85, bias=True)
    plan = series_plan(graph, "snntorch-zero+no-delay", T)
    spin = describe(layout(plan, "SpiNNaker", loops=True))
    loop = [prj for prj in spin.projections if prj["src"] == "lif1" and prj["dst"] == "lif1"]
    assert {prj["receptor"] for prj in loop} == {"excitatory", "inhibitory"}
    assert all(prj["delay"] == 1 and prj["late"] for prj in loop)
    rebuilt = np.zeros_like(w_rec)
    for prj in loop:
        rebuilt[prj["post"], prj["pre"]] += prj["w"] * (1 if prj["receptor"] == "excitatory" else -1)
    scale = spin.pops[0].scale[:, None]
    np.testing.assert_allclose(rebuilt, w_rec * scale, rtol=1e-12)
    spikes = (np.random.default_rng(2).random((T, 6, 5)) < 0.3).astype(np.float64)
    ref = ReferenceBackend(plan, dtype="float64").run(np.zeros((6, 5)), spikes)
    backend = t.build(plan)
    try:
        assert_same(backend.run(np.zeros((6, 5)), spikes), ref, tolerance=t.tolerance)
    finally:
        backend.close()


@pytest.mark.timeout(240)
@pytest.mark.skipif(importlib.util.find_spec("spynnaker") is None,
                    reason="sPyNNaker is not installed (pip install -c constraints.txt 'dsqn-deploy[spinnaker]')")
def test_virtual_board_maps_a_recurrent_population(tmp_path, monkeypatch) -> None:
    from backends import make_backend

    monkeypatch.setenv("SPINNAKER_VIRTUAL", "1")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    graph, _ = rsynaptic_graph(None, 0.85, bias=True)
    backend = make_backend("pynn-spinnaker", build_plan(graph, convention="snntorch-zero+no-delay", time_steps=8),
                           workdir=tmp_path / "run")
    try:
        assert backend.resources["cores_per_population"]["lif1"] == 1
    finally:
        backend.close()


def test_snntorch_conventions_pick_the_reset_of_each_layer_class() -> None:
    """docs/NIR.md section 6's table: NIR LIF is Leaky, CubaLIF Synaptic, either with a loop edge
    closing into it RLeaky / RSynaptic; lif2 is the plain layer after the recurrent lif1."""
    want = {  # convention: (RLeaky, Leaky, RSynaptic, Synaptic)
        "snntorch": ("soft_next",) * 4,
        "snntorch+no-delay": ("soft_recheck", "soft_recheck", "soft_next", "soft_recheck"),
        "snntorch-zero": ("zero_next", "hard", "zero_next", "zero_next"),
        "snntorch-zero+no-delay": ("hard", "hard", "zero_next", "hard"),
    }
    for convention, resets in want.items():
        got = []
        for alpha in (None, 0.75):
            plan = build_plan(rsynaptic_graph(alpha, 0.85)[0], convention=convention, time_steps=4)
            got += [plan.op("lif1").neuron.reset, plan.op("lif2").neuron.reset]
            if "zero" in convention:
                assert plan.op("lif1").neuron.v_reset == 0.0
        assert tuple(got) == resets, convention


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", ["nest", "pynn-nest"])
def test_a_hard_reset_loop_into_a_current_is_one_line_on_the_command_line(target: str, tmp_path,
                                                                            capfd) -> None:
    """What NEST still cannot run (benchmarks/nest_models.py, docs/NEST.md section 5): a CubaLIF that
    resets in its spike's step with a loop into its current (the zoo's recurrent_cuba, read with the
    nir convention). run-backend exits 2 with one ``error:`` line naming the node, the reason and
    the targets that run it (its main in this process, stderr read at the file descriptor, so that
    the simulators' own output would show; its real process: tests/test_reference_cli.py)."""
    require(target)
    from backends.cli import main
    from exporters.zoo import cartpole_obs, recurrent_cuba_graph

    nir.write(tmp_path / "g.nir", recurrent_cuba_graph(hidden=(8, 8), time_steps=4))
    np.save(tmp_path / "obs.npy", cartpole_obs(2).numpy())
    capfd.readouterr()
    code = main([str(tmp_path / "g.nir"), "--inputs", str(tmp_path / "obs.npy"), "--out",
                 str(tmp_path / "r.npz"), "--target", target])
    err = capfd.readouterr().err
    assert code == 2, err
    assert err.startswith("error: node 'lif1' (CubaLIF): its loop enters its synaptic current"), err
    assert len(err.strip().splitlines()) == 1
    assert "reset is 'hard'" in err and "the reference and Lava (lava, lava-fixed) run it" in err
    assert not (tmp_path / "r.npz").exists()

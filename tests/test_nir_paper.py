"""The NIR paper's own graphs (neuromorphs/NIR ``paper/``, in ../shared/nir-paper/; README there)
on our targets, each against what its authors' framework does with it (issue 20).

Frameworks are not installed here, so the figures they produced come from the interop audit
(/work/shared/reviews/interop-2026-12.md, which ran them) and Sinabs' step is transcribed in
tests/test_thirdparty.py; the float targets are held to the reference bit for bit.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from backends import REGISTRY
from backends.reference import ReferenceBackend
from exporters.nirio import read_graph
from pipeline.errors import UserError

from conftest import assert_same, require

# ../shared/nir-paper next to the repository (DSQN_NIR_PAPER elsewhere, e.g. from a worktree)
PAPER = Path(os.environ.get("DSQN_NIR_PAPER", Path(__file__).resolve().parents[2] / "shared" / "nir-paper"))
pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(not PAPER.is_dir(), reason=f"the NIR paper graphs are not in {PAPER}")]


def paper_graph(name: str):
    return read_graph(PAPER / name)


def run(target: str, graph, obs: np.ndarray, **options):
    backend = require(target).build(graph, **options)
    try:
        return backend.run(obs)
    finally:
        backend.close()


def test_lif_norse_reproduces_norse_on_constant_levels() -> None:
    """lif_norse.nir (NIR 0.1.1: tau = 1/tau_mem_inv) read with --convention norse --dt 1e-4 fires
    357 spikes over 32 levels in [0, 0.4] for 200 steps, what Norse 1.1's from_nir(g, dt=1e-4)
    fires (audit 1b); before issue 20 the convention divided tau by dt and it fired 0."""
    graph = paper_graph("lif_norse.nir")
    obs = np.linspace(0.0, 0.4, 32, dtype=np.float32).reshape(32, 1)
    with pytest.raises(UserError, match="pass --dt"):
        ReferenceBackend(graph, convention="norse", time_steps=200)
    ref = ReferenceBackend(graph, convention="norse", time_steps=200, dt=1e-4, dtype="float64").run(obs)
    assert int(ref.q.sum()) == 357
    for target in ("nest", "lava"):
        if importlib.util.find_spec(target) is not None:
            assert_same(run(target, graph, obs, convention="norse", time_steps=200, dt=1e-4), ref, active=False)


def test_two_lif_neurons_fire_without_input_on_every_float_target() -> None:
    """lif1: v_leak 1.2 above its threshold 1: one spike in 200 steps of dt 1e-4 with no input (the
    NIR spec's forward Euler, audit 1c); NEST refused it before issue 20."""
    graph = paper_graph("two_lif_neurons.nir")
    obs = np.zeros((2, 1), np.float32)
    ref = ReferenceBackend(graph, time_steps=200, dtype="float64").run(obs)
    assert ref.spikes["lif1"].tolist() == [[1], [1]] and ref.spikes["lif2"].sum() == 0
    for target in ("nest", "pynn-nest", "lava"):
        if all(importlib.util.find_spec(m) is not None for m in REGISTRY[target].requires):
            assert_same(run(target, graph, obs, time_steps=200), ref, active=False)


def cnn_inputs(n: int = 3, seed: int = 0) -> np.ndarray:
    """Binary 2x34x34 frames with 5 % of the pixels on (no N-MNIST data here; audit 1a's b05)."""
    return (np.random.default_rng(seed).random((n, 2, 34, 34)) < 0.05).astype(np.float32)


def test_cnn_sinabs_as_imported_on_lava_and_nest_is_the_reference() -> None:
    """--convention sinabs is what Sinabs' from_nir builds (multi-spike, subtract, IF floor at -v_th);
    the floor changes the counts on this graph (the audit's 81-91 % came from leaving it out)."""
    graph = paper_graph("cnn_sinabs.nir")
    obs = cnn_inputs()
    ref = ReferenceBackend(graph, convention="sinabs", time_steps=10, dtype="float64").run(obs)
    nofloor = ReferenceBackend(graph, convention="sinabs+no-floor", time_steps=10, dtype="float64").run(obs)
    assert any(not np.array_equal(ref.spikes[k], nofloor.spikes[k]) for k in ref.spikes)
    if importlib.util.find_spec("lava") is not None:
        assert_same(run("lava", graph, obs, convention="sinabs", time_steps=10), ref)
    # NEST: copies of each neuron meeting in a relay (backends.nest.neurons.multi_spike_spec); one
    # observation, as its first ones rebuild the network with more copies (about a minute here)
    assert_same(run("nest", graph, obs[:1], convention="sinabs", time_steps=10),
                ReferenceBackend(graph, convention="sinabs", time_steps=10, dtype="float64").run(obs[:1]))


@pytest.mark.parametrize("convention", ["sinabs+single-spike+no-floor", "sinabs+single-spike"])
def test_cnn_sinabs_single_spike_on_nest_is_the_reference(convention: str) -> None:
    """Sinabs SingleSpike (what Speck runs), without the floor (the layers' default) and with the
    floor from_nir builds (NEST's V_min, backends.nest.neurons.with_floor): NEST runs both bit for
    bit, and the floor changes the counts."""
    graph = paper_graph("cnn_sinabs.nir")
    obs = cnn_inputs(2, seed=1)
    ref = ReferenceBackend(graph, convention=convention, time_steps=10, dtype="float64").run(obs)
    assert_same(run("nest", graph, obs, convention=convention, time_steps=10), ref)
    if not convention.endswith("no-floor"):
        other = ReferenceBackend(graph, convention=convention + "+no-floor", time_steps=10, dtype="float64").run(obs)
        assert any(not np.array_equal(ref.spikes[k], other.spikes[k]) for k in ref.spikes)


def test_lif_rockpool_is_one_line() -> None:
    with pytest.raises(UserError, match=r"node 'output' \(Output\): declared shape \(1, 1, 1\)"):
        ReferenceBackend(paper_graph("lif_rockpool.nir"), time_steps=4)


@pytest.mark.parametrize("name, convention", [("braille_noDelay_noBias_subtract.nir", "snntorch+no-delay"),
                                              ("braille_noDelay_bias_zero.nir", "snntorch-zero+no-delay")])
def test_braille_on_every_target(name: str, convention: str) -> None:
    """The recurrent CubaLIF Braille nets (snnTorch RSynaptic, reset_delay=False) on 12 taxel spike
    trains: the loop lif1.lif -> lif1.w_rec -> lif1.lif closes one step late, into the CubaLIF's
    synaptic current. The float32 reference and Lava float equal the float64 reference (spike counts,
    actions, Q), lava-fixed its own integer model bit for bit;
    NEST and PyNN-NEST equal the float64 reference too (RSynaptic and Synaptic on gif_psc_exp, the
    reset_delay=False subtraction with a helper population); SpiNNaker (no CubaLIF) refuses both.
    snnTorch 1.0's own run of them is tests/test_frameworks.py."""
    from exporters.canonical import build_plan
    from exporters.plan.semantics import with_input_series

    spikes = (np.random.default_rng(0).random((64, 4, 12)) < 0.1).astype(np.float32)
    obs = np.zeros((4, 12), np.float32)
    plan = with_input_series(build_plan(paper_graph(name), convention=convention, time_steps=64))
    assert plan.op("lif1.lif").recurrent == ["lif1.w_rec"]
    ref = ReferenceBackend(plan, dtype="float64").run(obs, spikes)
    assert ref.spikes["lif1.lif"].sum() > 0 and ref.spikes["lif2"].sum() > 0
    assert_same(ReferenceBackend(plan, dtype="float32").run(obs, spikes), ref)
    for target in ("lava", "lava-fixed"):
        if importlib.util.find_spec("lava") is None:
            continue
        backend = REGISTRY[target].build(plan)
        try:
            got = backend.run(obs, spikes)
        finally:
            backend.close()
        if target == "lava":
            assert_same(got, ref)
        else:
            from backends.lava.torch_fixed import LoihiFixedTorch

            want = LoihiFixedTorch(plan).run(obs, spikes)
            assert all(np.array_equal(got.spikes[k], want.spikes[k]) for k in want.spikes)
            assert np.array_equal(got.q, want.q)
    for target in ("nest", "pynn-nest", "spinnaker-fixedpoint"):
        if not all(importlib.util.find_spec(m) is not None for m in REGISTRY[target].requires):
            continue
        if target != "spinnaker-fixedpoint":  # RSynaptic and Synaptic on gif_psc_exp (docs/NEST.md)
            backend = REGISTRY[target].build(plan)
            try:
                assert_same(backend.run(obs, spikes), ref)
            finally:
                backend.close()
            continue
        with pytest.raises(UserError, match=r"^node '(lif1\.lif|lif2)' \(CubaLIF\): ") as err:
            REGISTRY[target].build(plan).close()
        assert "\n" not in str(err.value)

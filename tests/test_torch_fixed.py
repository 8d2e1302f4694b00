"""The torch models of the fixed-point targets equal those targets spike for spike and in Q:
``LoihiFixedTorch`` against the Lava fixed_pt models (``--target lava-fixed``, 8-bit and 16-bit
split) and against ``run-backend --target lava-fixed``; ``SpiNNakerFixedTorch`` against the
sPyNNaker s16.15 emulation; on zoo graphs (MLPs and Nature CNNs) and on the bundled examples exported."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pytest
import torch

from backends.lava.torch_fixed import ConvMantissas, LoihiFixedTorch, decay_t, shift_t
from backends.lava.quantize import decay, shift
from backends.pynn.fixedpoint import FixedPointSpiNNaker
from backends.pynn.torch_fixed import SpiNNakerFixedTorch
from exporters.canonical import build_plan
from exporters.nirio import write_graph
from exporters.to_nir import model_to_nir
from exporters.zoo import atari_obs, cartpole_obs, make_checkpoint
from pipeline.checkpoint import load_checkpoint

from conftest import assert_same as within
from conftest import zoo_graph

try:
    version("lava-nc")
    HAVE_LAVA = True
except PackageNotFoundError:
    HAVE_LAVA = False
needs_lava = pytest.mark.skipif(not HAVE_LAVA, reason="lava-nc not installed")
pytestmark = pytest.mark.timeout(240)
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def zoo_plan(kind: str, gain: float = 8.0, T: int = 8, hidden=(24, 24)):
    return build_plan(zoo_graph(kind, seed=1, hidden=hidden, time_steps=T, gain=gain))


def example_obs(name: str, n: int, seed: int = 3) -> np.ndarray:
    if name.startswith("mountaincar"):  # observations scaled to [-1, 1] by the graph's preprocessing
        g = torch.Generator().manual_seed(seed)
        return (torch.rand((n, 2), generator=g) * 2 - 1).numpy()
    return cartpole_obs(n, seed=seed).numpy()


def assert_same(a, b) -> None:
    assert np.array_equal(a.action, b.action)
    assert np.array_equal(a.q, b.q), np.abs(a.q - b.q).max()
    assert set(a.spikes) == set(b.spikes)
    for k in a.spikes:
        assert np.array_equal(a.spikes[k], b.spikes[k]), k


def test_integer_primitives_match_the_quantiser() -> None:
    v = np.arange(-5000, 5000, 7)
    for dv in (0, 1, 1365, 2048, 4095):
        assert np.array_equal(decay_t(torch.as_tensor(v, dtype=torch.float64), torch.tensor(float(dv))).numpy(),
                              decay(v, np.array(dv)))
    for e in range(-8, 8):
        assert np.array_equal(shift_t(torch.as_tensor(v, dtype=torch.float64), e).numpy(), shift(v, e))


@needs_lava
@pytest.mark.parametrize("kind, gain, bits", [
    ("liu", 8.0, 8), ("liu", 8.0, 16), ("hahn", 3.0, 8), ("hahn", 3.0, 16), ("chen", 8.0, 8),
    ("lif_soft_rate", 8.0, 8), ("spike_count", 8.0, 8), ("robust_rate_lif", 8.0, 16), ("poisson", 8.0, 8),
    ("cubalif", 6.0, 8), ("cubalif", 6.0, 16)])
def test_torch_model_equals_lava_fixed_on_zoo_graphs(kind: str, gain: float, bits: int) -> None:
    from backends.lava.backend import LavaBackend

    plan = zoo_plan(kind, gain)
    obs = cartpole_obs(30, seed=6).numpy()
    mine = LoihiFixedTorch(plan, weight_bits=bits).run(obs)
    backend = LavaBackend(plan, precision="fixed_pt", batch_size=15, weight_bits=bits)
    try:
        lava = backend.run(obs)
    finally:
        backend.close()
    assert sum(int(v.sum()) for v in lava.spikes.values()) > 0
    assert_same(mine, lava)


@needs_lava
@pytest.mark.parametrize("name, bits", [("cartpole_dsqn", 8), ("cartpole_if_dsqn", 8), ("cartpole_if_dsqn", 16),
                                        ("mountaincar_dsqn", 8), ("mountaincar_dsqn", 16)])
def test_torch_model_equals_lava_fixed_on_the_examples(name: str, bits: int) -> None:
    from backends.lava.backend import LavaBackend

    graph = model_to_nir(load_checkpoint(EXAMPLES / f"{name}.pt"))
    obs = example_obs(name, 40)
    mine = LoihiFixedTorch(graph, weight_bits=bits).run(obs)
    backend = LavaBackend(graph, precision="fixed_pt", batch_size=20, weight_bits=bits)
    try:
        lava = backend.run(obs)
    finally:
        backend.close()
    assert_same(mine, lava)


@needs_lava
@pytest.mark.parametrize("source, bits", [("cartpole_dsqn", 8), ("conv_liu", 8), ("conv_hahn", 8), ("conv_liu", 16)])
def test_torch_model_equals_run_backend_lava_fixed(tmp_path, source: str, bits: int) -> None:
    """The bundled CartPole DSQN, and Nature-CNN nets on 4 x 36 x 36 frames (LIF DSQN, IF-DSQN,
    T 4, rate readout; random weights): Lava runs conv maps as explicit sparse maps, the torch
    model as convolutions of the mantissa kernels (checked to rebuild the sparse maps), the
    host-fed conv and the flatten -> fc map; spike for spike, 8-bit and split 16-bit."""
    from backends.base import Readout
    from backends.cli import main as run_backend

    if source == "cartpole_dsqn":
        graph = model_to_nir(load_checkpoint(EXAMPLES / "cartpole_dsqn.pt"))
        obs = example_obs("cartpole_dsqn", 25, seed=11).astype(np.float32)
    else:
        graph = model_to_nir(make_checkpoint(source.split("_")[1], arch="nature_cnn", obs_shape=(4, 36, 36),
                                             n_actions=6, time_steps=4, seed=2))
        obs = atari_obs(5, seed=4)[:, :, :36, :36].contiguous().numpy()
    write_graph(graph, tmp_path / "g.nir")
    np.save(tmp_path / "obs.npy", obs)
    code = run_backend(["--target", "lava-fixed", str(tmp_path / "g.nir"), "--inputs", str(tmp_path / "obs.npy"),
                        "--out", str(tmp_path / "r.npz"), "--weight-bits", str(bits)])
    assert code == 0
    cli = Readout.load(tmp_path / "r.npz")
    assert all(int(v.sum()) > 0 for v in cli.spikes.values())
    mine = LoihiFixedTorch(graph, weight_bits=bits)
    convs = [k for k, v in mine.sets.items() if all(isinstance(m, ConvMantissas) for m, _ in v)]
    assert len(convs) == (0 if source == "cartpole_dsqn" else 2)  # conv 2 and conv 3 (conv 1 is host-fed)
    assert all(len(mine.sets[k]) == (2 if bits == 16 else 1) for k in convs)
    assert_same(mine.run(obs), cli)


def test_a_conv_map_that_shares_no_kernel_stays_a_sparse_map() -> None:
    """The torch model runs a conv map as a convolution only where its kernel rebuilds the
    quantised map entry for entry: one synapse off its kernel keeps the sparse product."""
    from backends.lava.torch_fixed import conv_sets, quant_sets

    m = LoihiFixedTorch(build_plan(model_to_nir(make_checkpoint(
        "liu", arch="nature_cnn", obs_shape=(4, 36, 36), n_actions=6, time_steps=4, seed=2))))
    assert isinstance(m.sets[("l1_lif", "l0_lif")][0][0], ConvMantissas)
    fmap = m.quant["l1_lif"].maps["l0_lif"]
    fmap.mant = fmap.mant.copy()
    fmap.mant.data[7] += 1 if fmap.mant.data[7] != -1 else 2
    sets = quant_sets(m.quant)
    conv_sets(m.layout, m.quant, sets)
    assert not isinstance(sets[("l1_lif", "l0_lif")][0][0], ConvMantissas)
    assert isinstance(sets[("l2_lif", "l1_lif")][0][0], ConvMantissas)


@pytest.mark.parametrize("source", ["liu", "chen", "if_hard_rate", "poisson", "cartpole_dsqn", "mountaincar_dsqn",
                                    "recurrent"])
def test_torch_model_equals_the_spinnaker_emulation(source: str) -> None:
    if source == "recurrent":  # each layer's own loop, added into its ring buffer step by step
        from exporters.zoo import recurrent_graph

        graph = recurrent_graph(seed=1, hidden=(24, 24), time_steps=8, gain=6.0)
        obs = cartpole_obs(30, seed=4).numpy()
    elif source in ("cartpole_dsqn", "mountaincar_dsqn"):
        graph = model_to_nir(load_checkpoint(EXAMPLES / f"{source}.pt"))
        obs = example_obs(source, 30)
    else:
        graph = model_to_nir(make_checkpoint(source, seed=1, hidden=(24, 24), gain=6.0))
        obs = cartpole_obs(30, seed=4).numpy()
    ref = FixedPointSpiNNaker(graph).run(obs)
    mine = SpiNNakerFixedTorch(graph).run(obs)
    assert sum(int(v.sum()) for v in ref.spikes.values()) > 0
    assert_same(mine, ref)


def test_norse_order_cubalif_within_the_lava_fixed_tolerance() -> None:
    """Norse's LIFCell order (the current jumps by the input, drives v, then decays) is Loihi's CUBA
    order with the input gain w_in instead of w_in/tau_syn: the integer model stays within
    lava-fixed's stated tolerance of the float64 reference (the NIR order is checked bit for bit
    against Lava above)."""
    from backends import LAVA_8BIT
    from backends.reference import ReferenceBackend

    dt = 1e-3
    graph = zoo_graph("cubalif", seed=1, hidden=(24, 24), time_steps=8, gain=6.0, dt=dt)
    for node in graph.nodes.values():  # Norse 1.1 writes tau as dt * tau
        if hasattr(node, "tau_syn"):
            node.tau_syn, node.tau_mem = node.tau_syn * dt, node.tau_mem * dt
    plan = build_plan(graph, convention="norse+dt-tau")
    assert {op.neuron.syn_order for op in plan.ops if op.neuron is not None} == {"norse"}
    obs = cartpole_obs(24, seed=3).numpy()
    ref = ReferenceBackend(plan, dtype="float64").run(obs)
    within(LoihiFixedTorch(plan).run(obs), ref, tolerance=LAVA_8BIT)


def test_a_large_map_becomes_sparse_without_a_torch_warning() -> None:
    """Maps over DENSE_LIMIT entries (every Nature-CNN conv) are sparse tensors; torch's warning
    about implicitly disabled invariant checks must not reach the user's terminal."""
    import warnings

    import scipy.sparse as sp

    from backends.lava import torch_fixed

    n = int(np.ceil(np.sqrt(torch_fixed.DENSE_LIMIT))) + 1
    m = sp.random(n, n, density=1e-4, format="csr", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = torch_fixed._dense(m)
    assert t.is_sparse and torch.equal(t.to_dense(), torch.as_tensor(m.toarray(), dtype=torch.float64))

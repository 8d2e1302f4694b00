"""The reference executor: equal to the torch model on exported graphs, exact round trip,
general NIR semantics on hand-built graphs, and one-line errors for bad graphs."""

from __future__ import annotations

from pathlib import Path

import h5py
import nir
import numpy as np
import pytest
import torch

from backends.reference import ReferenceBackend
from exporters.canonical import build_plan
from exporters.nirio import read_graph, write_graph
from exporters.to_nir import model_to_nir
from exporters.zoo import KINDS, atari_obs, cartpole_obs, make_checkpoint
from pipeline.encoding import encode
from pipeline.errors import UserError
from pipeline.models import greedy_action


def torch_reference(ckpt, obs: torch.Tensor, seed: int = 3):
    """Q, actions and hidden spike counts of the torch model (and the input spikes it used)."""
    model = ckpt.build()
    spec = ckpt.spec
    with torch.no_grad():
        if not spec.spiking:
            q = model(obs)
            return q, greedy_action(q), [], None
        q, spikes, tb = model.run(obs, torch.Generator().manual_seed(seed))
    s_in = None
    if spec.encoding != "current":
        s_in = encode(obs, spec.time_steps, spec.encoding, torch.Generator().manual_seed(seed)).numpy()
    return q, greedy_action(q, tb), [s.sum(0) for s in spikes], s_in


def spike_nodes(graph: nir.NIRGraph) -> list[str]:
    return [n for n in graph.nodes if n.startswith("l") and (n.endswith("_lif") or n.endswith("_if")
                                                              or n.endswith("_spike"))]


@pytest.mark.parametrize("kind", list(KINDS))
def test_matches_torch_model_on_cartpole(kind: str) -> None:
    ckpt = make_checkpoint(kind, seed=1)
    obs = cartpole_obs(400, seed=2)
    q, action, counts, s_in = torch_reference(ckpt, obs)
    graph = model_to_nir(ckpt)
    r = ReferenceBackend(graph).run(obs.numpy(), s_in)
    assert r.q.dtype == np.float64 and r.action.dtype == np.int64 and r.q.shape == (400, 2)
    assert np.abs(r.q - q.double().numpy()).max() <= 1e-5
    assert np.array_equal(r.action, action.numpy())
    for name, c in zip(spike_nodes(graph), counts):
        assert np.array_equal(r.spikes[name], c.numpy().astype(np.int64)), name


@pytest.mark.parametrize("kind", ["dqn", "liu", "chen", "hahn", "tan_converted", "spike_count"])
def test_matches_torch_model_on_small_frames(kind: str) -> None:
    ckpt = make_checkpoint(kind, arch="nature_cnn", obs_shape=(4, 36, 36), n_actions=4, time_steps=4, seed=2)
    obs = atari_obs(5, seed=4)[:, :, :36, :36].contiguous()
    q, action, counts, s_in = torch_reference(ckpt, obs)
    r = ReferenceBackend(model_to_nir(ckpt)).run(obs.numpy(), s_in)
    assert np.abs(r.q - q.double().numpy()).max() <= 1e-5
    assert np.array_equal(r.action, action.numpy())


def test_float64_matches_the_double_precision_model() -> None:
    ckpt = make_checkpoint("hahn", seed=5)
    obs = cartpole_obs(200, seed=6)
    model = ckpt.build().double()
    with torch.no_grad():
        q, _, _ = model.run(obs.double())
    r = ReferenceBackend(model_to_nir(ckpt), dtype="float64").run(obs.numpy())
    assert np.array_equal(r.q, q.numpy())


def test_round_trip_through_a_file_is_bit_identical(tmp_path: Path) -> None:
    for kind in ("chen", "tan_converted", "poisson"):
        ckpt = make_checkpoint(kind, seed=7)
        graph = model_to_nir(ckpt)
        write_graph(graph, tmp_path / f"{kind}.nir")
        obs = cartpole_obs(300, seed=8).numpy()
        a = ReferenceBackend(graph).run(obs)
        b = ReferenceBackend(read_graph(tmp_path / f"{kind}.nir")).run(obs)
        assert np.array_equal(a.q, b.q) and np.array_equal(a.action, b.action)
        assert a.spikes.keys() == b.spikes.keys()
        assert all(np.array_equal(a.spikes[k], b.spikes[k]) for k in a.spikes)


def test_batch_size_does_not_change_results() -> None:
    """float64 (the oracle the simulators are compared with) is bit-identical for any chunking.
    float32 is not promised bit-identical: on some CPUs (seen on an AVX-512 Xeon) torch picks a
    different GEMM kernel for a 7-row chunk than for a 250-row one, and the last bit of a Q-value
    moves; spikes and actions must still be the same."""
    graph = model_to_nir(make_checkpoint("liu", seed=9))
    obs = cartpole_obs(250, seed=1).numpy()
    a = ReferenceBackend(graph, dtype="float64", batch_size=7).run(obs)
    b = ReferenceBackend(graph, dtype="float64").run(obs)
    assert np.array_equal(a.q, b.q) and np.array_equal(a.action, b.action)
    assert all(np.array_equal(a.spikes[k], b.spikes[k]) for k in a.spikes)
    assert set(a.timings) == {"set_input", "simulate", "read_out"}
    c = ReferenceBackend(graph, batch_size=7).run(obs)
    d = ReferenceBackend(graph).run(obs)
    assert np.array_equal(c.action, d.action)
    assert all(np.array_equal(c.spikes[k], d.spikes[k]) for k in c.spikes)
    np.testing.assert_allclose(c.q, d.q, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- hand-built graphs, NIR semantics


def f32(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def run_graph(nodes, edges, obs, T=5, dtype="float64", **kw):
    g = nir.NIRGraph(nodes=nodes, edges=edges, metadata={"time_steps": T, "dt": 1e-3})
    return ReferenceBackend(g, dtype=dtype, **kw).run(obs)


def test_generic_graph_sums_inputs_and_defaults_to_output_sum() -> None:
    wa, wb, ba = f32(3, 2, seed=1), f32(3, 2, seed=2), f32(3, seed=3)
    nodes = {"in": nir.Input(np.array([2])), "a": nir.Affine(wa, ba), "b": nir.Linear(wb),
             "li": nir.LI(tau=np.full(3, 4e-3), r=np.full(3, 2.0), v_leak=np.full(3, 0.5)),
             "out": nir.Output(np.array([3]))}
    edges = [("in", "a"), ("in", "b"), ("a", "li"), ("b", "li"), ("li", "out")]
    obs = f32(6, 2, seed=4)
    r = run_graph(nodes, edges, obs, T=5)
    x = obs.astype(np.float64) @ wa.T.astype(np.float64) + ba + obs.astype(np.float64) @ wb.T.astype(np.float64)
    v = np.full((6, 3), 0.5)  # LI starts at v_leak
    total = np.zeros((6, 3))
    for _ in range(5):  # forward Euler at dt=1e-3, tau=4 steps
        v = v + (1e-3 / 4e-3) * ((0.5 - v) + 2.0 * x)
        total += v
    assert np.allclose(r.q, total, rtol=1e-12, atol=1e-12)


def test_conv_pool_scale_flatten_if_against_direct_torch() -> None:
    w = f32(4, 1, 3, 3, seed=5)  # groups=2: C_in 2 -> C_out 4
    nodes = {
        "in": nir.Input(np.array([2, 9, 9])),
        "conv": nir.Conv2d(input_shape=(9, 9), weight=w, stride=2, padding=1, dilation=1, groups=2, bias=f32(4, seed=6)),
        "scale": nir.Scale(np.full((4, 5, 5), 1.5)),
        "sum": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([1, 1]), padding=np.array([0, 0])),
        "avg": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "flat": nir.Flatten(input_type={"input": np.array([4, 2, 2])}, start_dim=0),
        "if": nir.IF(r=np.full(16, 1000.0), v_threshold=np.full(16, 0.8), v_reset=np.full(16, -0.1)),
        "out": nir.Output(np.array([16])),
    }
    edges = [("in", "conv"), ("conv", "scale"), ("scale", "sum"), ("sum", "avg"), ("avg", "flat"),
             ("flat", "if"), ("if", "out")]
    obs = f32(3, 2, 9, 9, seed=7)
    g = nir.NIRGraph(nodes=nodes, edges=edges, metadata={"time_steps": 6, "dt": 1e-3}, type_check=False)
    r = ReferenceBackend(g, dtype="float64").run(obs)
    x = torch.tensor(obs, dtype=torch.float64)
    y = torch.nn.functional.conv2d(x, torch.tensor(w, dtype=torch.float64),
                                   torch.tensor(nodes["conv"].bias, dtype=torch.float64), 2, 1, 1, 2) * 1.5
    y = torch.nn.functional.avg_pool2d(y, 2, 1) * 4
    y = torch.nn.functional.avg_pool2d(y, 2, 2).flatten(1)
    v, count = torch.full_like(y, -0.1), torch.zeros_like(y)
    for _ in range(6):
        u = v + y
        s = (u >= 0.8).double()
        v = u * (1 - s) - 0.1 * s
        count += s
    assert np.array_equal(r.q, count.numpy()) and np.array_equal(r.spikes["if"], count.numpy())


def test_cubalif_and_strict_threshold_node() -> None:
    nodes = {"in": nir.Input(np.array([3])),
             "cuba": nir.CubaLIF(tau_syn=np.full(3, 2e-3), tau_mem=np.full(3, 4e-3), r=np.full(3, 1.0),
                                 v_leak=np.zeros(3), v_threshold=np.full(3, 0.3), w_in=np.full(3, 2.0)),
             "out": nir.Output(np.array([3]))}
    obs = np.array([[0.5, 1.0, 2.0], [0.0, -1.0, 0.4]], np.float32)
    r = run_graph(nodes, [("in", "cuba"), ("cuba", "out")], obs, T=8)
    syn, v, n = np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 3))
    for _ in range(8):
        syn = syn + (2.0 * obs - syn) / 2.0
        u = v + (syn - v) / 4.0
        s = u >= 0.3
        v = np.where(s, 0.0, u)
        n += s
    assert np.array_equal(r.q, n)
    th = {"in": nir.Input(np.array([2])), "th": nir.Threshold(np.array([0.5, 0.5])), "out": nir.Output(np.array([2]))}
    x = np.array([[0.5, 0.6]], np.float32)
    g = nir.NIRGraph(nodes=th, edges=[("in", "th"), ("th", "out")], metadata={"time_steps": 2})
    assert ReferenceBackend(g).run(x).q.tolist() == [[2.0, 2.0]]  # our >= on the graph default
    g_strict = nir.NIRGraph(nodes=th, edges=[("in", "th"), ("th", "out")], metadata={"time_steps": 2, "threshold": ">"})
    assert ReferenceBackend(g_strict).run(x).q.tolist() == [[0.0, 2.0]]


# ---------------------------------------------------------------- errors


def small_graph(**meta) -> nir.NIRGraph:
    nodes = {"in": nir.Input(np.array([2])), "fc": nir.Affine(f32(3, 2), f32(3)),
             "lif": nir.LIF(tau=np.full(3, 2e-4), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3)),
             "out": nir.Output(np.array([3]))}
    return nir.NIRGraph(nodes=nodes, edges=[("in", "fc"), ("fc", "lif"), ("lif", "out")], metadata=meta)


def test_bad_files_give_one_line_user_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.nir"
    junk.write_bytes(b"\x89HDF not really" * 10)
    with pytest.raises(UserError, match="not a readable HDF5"):
        read_graph(junk)
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f.create_dataset("x", data=[1, 2])
    with pytest.raises(UserError, match="not a NIR file"):
        read_graph(tmp_path / "plain.h5")
    newer = tmp_path / "newer.nir"
    nir.write(newer, small_graph(time_steps=2))
    with h5py.File(newer, "r+") as f:
        del f["version"]
        f.create_dataset("version", data="9.1.0", dtype=h5py.string_dtype())
    with pytest.raises(UserError, match="newer than the installed nir"):
        read_graph(newer)
    broken = tmp_path / "broken.nir"
    nir.write(broken, small_graph(time_steps=2))
    with h5py.File(broken, "r+") as f:
        del f["node/nodes/lif/tau"]
    with pytest.raises(UserError, match="corrupt or unsupported NIR graph"):
        read_graph(broken)
    with pytest.raises(UserError, match="not found"):
        read_graph(tmp_path / "missing.nir")


def test_graph_problems_name_the_node() -> None:
    g = small_graph(time_steps=2)
    g.nodes["lif"].tau = None
    with pytest.raises(UserError, match="'lif'.*missing parameter 'tau'"):
        build_plan(g)
    g = small_graph(time_steps=2)
    g.nodes["fc"] = nir.Affine(f32(3, 5), f32(3))
    with pytest.raises(UserError, match="'fc'"):
        build_plan(g)
    g = small_graph(time_steps=2)
    g.nodes["d"] = nir.Delay(np.ones(3))
    g.edges = [("in", "fc"), ("fc", "d"), ("d", "lif"), ("lif", "out")]
    with pytest.raises(UserError, match="'d'.*Delay is not supported"):
        build_plan(g)
    g = small_graph(time_steps=2)
    g.nodes["rec"] = nir.Linear(f32(3, 3))
    g.edges += [("lif", "rec"), ("rec", "lif")]
    assert build_plan(g).op("lif").recurrent == ["rec"]  # a loop the Input reaches: one step late
    g = small_graph(time_steps=2)
    g.nodes["x"], g.nodes["y"] = nir.Linear(f32(3, 3)), nir.Linear(f32(3, 3))
    g.edges += [("x", "y"), ("y", "x"), ("y", "lif")]
    with pytest.raises(UserError, match="recurrent NIR graph: nodes x, y form a loop that the Input node does "
                                        "not reach"):
        build_plan(g)
    with pytest.raises(UserError, match="no time_steps"):
        build_plan(small_graph())
    with pytest.raises(UserError, match="expects"):
        ReferenceBackend(small_graph(time_steps=2)).run(np.zeros((2, 3), np.float32))
    with pytest.raises(UserError, match="shorter than one step"):
        build_plan(small_graph(time_steps=2, dt=1e-3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reset, tau, gain, compare, v_init", [
    ("hard", 2.0, 1.0, ">=", 0.0), ("soft", None, 1.0, ">=", 0.0), ("hard", None, 0.7, ">", 0.25),
    ("soft", 3.0, "per-neuron", ">", "per-neuron"), ("hard", "per-neuron", 1.3, ">=", -0.5),
])
def test_numpy_neuron_loop_equals_the_torch_loop_bit_for_bit(dtype, reset, tau, gain, compare, v_init) -> None:
    """The reference's in-place numpy loop (taken without autograd) against the torch loop (taken
    when the current needs a gradient): the same spikes and the same bytes of V(T), signed zeros
    included, for constant and per-step currents, uniform and per-neuron parameters; the spike
    counts it sums step by step equal the sum of the whole train."""
    from backends.reference.ops import run_neuron
    from exporters.plan.ops import run_neuron_counted
    from exporters.plan.ir import NeuronStep

    g = torch.Generator().manual_seed(5)

    def param(v):
        return torch.rand(7, generator=g, dtype=dtype) + 0.5 if v == "per-neuron" else v

    step = NeuronStep(gain=1.0 if gain == 1.0 else 0.5, tau=None if tau is None else 2.0, v_leak=0.1, v_th=1.0,
                      v_reset=-0.2 if reset == "hard" else 0.0, reset=reset, v_sub=1.0, compare=compare)
    p = {"gain": param(gain), "tau": param(tau), "v_leak": 0.1, "v_th": 1.0, "v_reset": step.v_reset,
         "v_sub": 1.0, "v_init": param(v_init), "tau_syn": None, "w_in": 1.0}
    for current in (torch.randn(1, 3, 7, generator=g, dtype=dtype) * 2,  # constant over T
                    torch.randn(9, 3, 7, generator=g, dtype=dtype) * 2):
        with torch.no_grad():
            s_np, v_np = run_neuron(step, current, 9, p)
        with torch.enable_grad():
            s_t, v_t = run_neuron(step, current.clone().requires_grad_(True), 9, p)
        assert s_np.dtype == dtype and s_np.shape == (9, 3, 7)
        assert s_np.numpy().tobytes() == s_t.detach().numpy().tobytes()
        assert v_np.numpy().tobytes() == v_t.detach().numpy().tobytes()
        with torch.no_grad():  # the counts summed inside the loop: those of the whole train
            s_c, v_c, counts = run_neuron_counted(step, current, 9, p)
        assert s_c.numpy().tobytes() == s_np.numpy().tobytes() and v_c.numpy().tobytes() == v_np.numpy().tobytes()
        assert counts.numpy().tobytes() == s_t.detach().sum(dim=0).numpy().tobytes()
        assert 0 < float(s_np.mean()) < 1  # some spike, some do not

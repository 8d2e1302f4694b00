"""The Lava backend in floating point beyond the zoo conformance test
(tests/test_backend_conformance.py): batches in chunks, spike encodings with and without given
trains, observations kept apart, convolutions as sparse maps, third-party conventions, run-backend
open and closed loop, and one clear error for what it cannot run.

Small graphs (2 x 24 neurons, T = 8) keep this under a minute on two busy cores; every test
stops its Lava runtime (``close`` kills it if ``stop`` hangs) and checks no process is left.
"""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from conftest import skip_module_without_lava  # noqa: E402

skip_module_without_lava()

from backends.cli import main as run_backend  # noqa: E402
from backends.lava.backend import LavaBackend  # noqa: E402
from backends.lava.lowering import lower, synapse_matrix  # noqa: E402
from backends.reference import ReferenceBackend  # noqa: E402
from backends.reference.ops import apply_synapse  # noqa: E402
from exporters.canonical import Op, build_plan  # noqa: E402
from exporters.nirio import write_graph  # noqa: E402
from exporters.to_nir import model_to_nir  # noqa: E402
from exporters.zoo import atari_obs, cartpole_obs, make_checkpoint  # noqa: E402
from pipeline.encoding import encode  # noqa: E402
from pipeline.errors import UserError  # noqa: E402

from conftest import FIXTURES, assert_same, fixture_options, zoo_graph  # noqa: E402

pytestmark = pytest.mark.timeout(120)
HIDDEN = (24, 24)


def small_graph(kind: str, seed: int = 1, gain: float = 8.0, T: int = 8) -> nir.NIRGraph:
    return zoo_graph(kind, seed=seed, hidden=HIDDEN, time_steps=T, gain=gain)


def run_lava(graph, obs: np.ndarray, spikes: np.ndarray | None = None, **kw):
    backend = LavaBackend(graph, **kw)
    try:
        return backend.run(obs, spikes), backend
    finally:
        backend.close()


def assert_no_children_left() -> None:
    left = [p for p in multiprocessing.active_children() if p.is_alive()]
    assert not left, f"Lava left OS processes behind: {left}"


def test_batches_in_chunks() -> None:
    """16 observations in chunks of 5 (a partial last chunk) equal the reference; one period is
    T steps plus the network's depth."""
    graph = small_graph("liu")
    obs = cartpole_obs(16, seed=3).numpy()
    ref = ReferenceBackend(graph, dtype="float64").run(obs)
    got, backend = run_lava(graph, obs, batch_size=5)  # 16 = 5 + 5 + 5 + 1
    assert_same(got, ref)
    assert set(got.timings) == {"set_input", "simulate", "read_out"}
    assert backend.period == 8 + backend.layout.depth
    assert_no_children_left()


@pytest.mark.parametrize("encoding", ["poisson", "regular"])
def test_spike_encodings_with_given_trains(encoding: str) -> None:
    graph = small_graph(encoding)
    obs = cartpole_obs(10, seed=4).numpy()
    spikes = encode(torch.as_tensor(obs), 8, encoding, torch.Generator().manual_seed(11)).numpy()
    ref = ReferenceBackend(graph, dtype="float64").run(obs, spikes)
    got, _ = run_lava(graph, obs, spikes)
    assert_same(got, ref, active=False)
    # without trains both encode with the graph's seed, one stream per call
    ref2 = ReferenceBackend(graph, dtype="float64").run(obs)
    got2, _ = run_lava(graph, obs)
    assert_same(got2, ref2, active=False)


def test_no_leakage_between_observations() -> None:
    """IF neurons without leak would carry B's state into the next A if the per-observation
    reset or the window alignment were off."""
    graph = small_graph("hahn", gain=3.0)
    obs = cartpole_obs(2, seed=5).numpy()
    a, b = obs[:1], obs[1:]
    backend = LavaBackend(graph, batch_size=1)
    try:
        seq = backend.run(np.concatenate([a, b, a]))
        again = backend.run(a)
    finally:
        backend.close()
    fresh, _ = run_lava(graph, a)
    assert not np.array_equal(seq.q[0], seq.q[1]), "A and B should differ"
    for r, i in ((seq, 0), (seq, 2), (again, 0)):
        assert np.array_equal(r.q[i], fresh.q[0])
        for name in fresh.spikes:
            assert np.array_equal(r.spikes[name][i], fresh.spikes[name][0])
    assert_no_children_left()


def test_conv_layers_as_sparse_maps() -> None:
    ckpt = make_checkpoint("liu", arch="nature_cnn", obs_shape=(4, 36, 36), n_actions=4, time_steps=4, seed=2)
    graph = model_to_nir(ckpt)
    obs = atari_obs(2, seed=4)[:, :, :36, :36].contiguous().numpy()
    ref = ReferenceBackend(graph, dtype="float64").run(obs)
    got, backend = run_lava(graph, obs)
    assert backend.layout.depth == 4  # conv2, conv3, fc, head: one Lava step each
    assert_same(got, ref, active=False)


@pytest.mark.parametrize("op", [
    Op("c", "conv2d", "Conv2d", [], (4, 11, 13), (), params=dict(
        weight=np.arange(6 * 2 * 3 * 2, dtype=np.float64).reshape(6, 2, 3, 2) - 30, bias=np.arange(6.0),
        stride=(1, 1), padding="same", dilation=(2, 1), groups=2)),
    Op("c", "conv2d", "Conv2d", [], (3, 9, 9), (), params=dict(
        weight=np.linspace(-1, 1, 5 * 3 * 4 * 4).reshape(5, 3, 4, 4), bias=np.zeros(5),
        stride=(2, 2), padding=(1, 0), dilation=(1, 1), groups=1)),
    Op("p", "sumpool2d", "SumPool2d", [], (3, 9, 8), (), params=dict(kernel_size=(2, 3), stride=(2, 2),
                                                                      padding=(1, 1))),
    Op("p", "avgpool2d", "AvgPool2d", [], (3, 9, 8), (), params=dict(kernel_size=(2, 2), stride=(2, 2),
                                                                      padding=(1, 0))),
    Op("a", "affine", "Affine", [], (3, 5), (), params=dict(weight=np.arange(20.0).reshape(4, 5),
                                                             bias=np.ones(4))),
    Op("s", "scale", "Scale", [], (2, 5), (), params=dict(scale=np.arange(5.0) - 2)),
])
def test_synapse_matrices_equal_the_torch_maps(op: Op) -> None:
    x = np.random.default_rng(0).normal(size=(1, *op.in_shape))
    p = {k: (torch.as_tensor(v, dtype=torch.float64) if isinstance(v, np.ndarray) else v)
         for k, v in op.params.items()}
    y = apply_synapse(op, torch.as_tensor(x), p)
    op.out_shape = tuple(y.shape[1:])
    m, b = synapse_matrix(op)
    z = m @ x.reshape(-1) + (0.0 if b is None else b)
    np.testing.assert_allclose(z, y.numpy().reshape(-1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["snntorch", "sinabs"])
def test_third_party_conventions(name: str) -> None:
    """snnTorch: '>' and the delayed subtract reset; Sinabs: multi-spike soft reset (graded spikes)."""
    path = FIXTURES / f"{name}.nir"
    if not path.is_file():
        pytest.skip(f"no {name} fixture")
    from exporters.nirio import read_graph

    with np.load(FIXTURES / f"{name}.npz") as data:
        inputs, counts, T, opts = data["inputs"][:24], data["counts"][:24], int(data["time_steps"]), fixture_options(
            data)
    got, _ = run_lava(read_graph(path), inputs, time_steps=T, **opts)
    assert np.array_equal(got.q, counts)


# ---------------------------------------------------------------- run-backend


def test_run_backend_open_and_closed_loop(tmp_path: Path) -> None:
    graph_path = tmp_path / "liu.nir"
    write_graph(small_graph("liu"), graph_path)
    obs_path = tmp_path / "obs.npy"
    np.save(obs_path, cartpole_obs(12, seed=7).numpy())
    for target in ("lava", "reference"):
        extra = ["--dtype", "float64"] if target == "reference" else ["--batch-size", "4"]
        assert run_backend([str(graph_path), "--target", target, "--inputs", str(obs_path),
                            "--out", str(tmp_path / f"{target}.npz"), *extra]) == 0
    with np.load(tmp_path / "lava.npz") as a, np.load(tmp_path / "reference.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for k in b.files:
            if k == "q":
                assert np.abs(a[k] - b[k]).max() <= 1e-6 * np.abs(b[k]).max()
            else:
                assert np.array_equal(a[k], b[k]), k
    summary = tmp_path / "loop.json"
    assert run_backend([str(graph_path), "--target", "lava", "--env", "CartPole-v1", "--episodes", "1",
                        "--max-steps", "6", "--compare", "reference", "--no-progress", "--results",
                        str(tmp_path / "loop.jsonl"), "--json", str(summary)]) == 0
    info = json.loads(summary.read_text())
    assert info["steps"] == 6 and info["agreement"] == 1.0 and info["q_rel_err"] <= 1e-6
    assert_no_children_left()


# ---------------------------------------------------------------- bad input


def test_dqn_graph_is_refused_naming_the_node(tmp_path: Path, capsys) -> None:
    graph = model_to_nir(make_checkpoint("dqn", hidden=HIDDEN))
    with pytest.raises(UserError, match="ReLU"):
        lower(build_plan(graph))
    path = tmp_path / "dqn.nir"
    write_graph(graph, path)
    np.save(tmp_path / "obs.npy", cartpole_obs(2).numpy())
    code = run_backend([str(path), "--target", "lava", "--inputs", str(tmp_path / "obs.npy"),
                        "--out", str(tmp_path / "r.npz")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: node ") and "ReLU" in err and "Traceback" not in err


def _lif(n: int) -> nir.LIF:
    return nir.LIF(tau=np.full(n, 2e-4), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n),
                   v_reset=np.zeros(n))


def _affine(n_out: int, n_in: int, seed: int) -> nir.Affine:
    rng = np.random.default_rng(seed)
    return nir.Affine(weight=rng.normal(size=(n_out, n_in)).astype(np.float32),
                      bias=np.zeros(n_out, np.float32))


def test_skip_connection_is_held_back_and_equals_the_reference() -> None:
    """issue 15: a map on a shorter branch waits in its synapse process (Connection.extra) until
    the longer branch arrives, so the DAG runs exactly as the reference (Lava refused it before)."""
    nodes = {"input": nir.Input(input_type={"input": np.array([3])}), "fc1": _affine(5, 3, 1),
             "lif1": _lif(5), "fc2": _affine(5, 5, 2), "lif2": _lif(5), "fc3": _affine(5, 5, 3),
             "skip": _affine(5, 5, 4), "lif3": _lif(5),
             "output": nir.Output(output_type={"output": np.array([5])})}
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "fc3"),
             ("fc3", "lif3"), ("lif1", "skip"), ("skip", "lif3"), ("lif3", "output")]
    plan = build_plan(nir.NIRGraph(nodes=nodes, edges=edges, metadata={"time_steps": 6}))
    layout = lower(plan)
    assert layout.pops["lif3"].delay == 2
    assert sorted((c.src, c.extra) for c in layout.conns if c.dst == "lif3") == [("lif1", 1), ("lif2", 0)]
    obs = np.random.default_rng(5).uniform(-2, 2, size=(6, 3)).astype(np.float32)
    ref = ReferenceBackend(plan, dtype="float64").run(obs)
    backend = LavaBackend(plan)
    try:
        got = backend.run(obs)
    finally:
        backend.close()
    assert ref.spikes["lif3"].sum() > 0
    for name in ("lif1", "lif2", "lif3"):
        assert np.array_equal(got.spikes[name], ref.spikes[name]), name
    assert np.array_equal(got.q, ref.q)
    assert_no_children_left()


def test_wrong_observation_shape_is_a_user_error() -> None:
    backend = LavaBackend(small_graph("liu"))
    try:
        with pytest.raises(UserError, match=r"shape \(5,\)"):
            backend.run(np.zeros((2, 5), np.float32))
        assert backend.run(cartpole_obs(1).numpy()).q.shape == (1, 2)  # still usable afterwards
    finally:
        backend.close()
    with pytest.raises(RuntimeError, match="closed"):
        backend.run(cartpole_obs(1).numpy())
    assert_no_children_left()


@pytest.mark.parametrize("target, encoding, spikes_shape", [
    ("lava", "liu", (8, 2, 3)),  # a current-encoded graph given a series of the wrong shape (the audit's crash)
    ("lava-fixed", "poisson", (8, 2, 3)),  # spike trains of the wrong shape
])
def test_bad_input_spikes_are_one_error_line_and_no_hang(tmp_path: Path, target: str, encoding: str,
                                                         spikes_shape: tuple[int, ...]) -> None:
    """issue 20: before the fix lava printed three chained tracebacks and hung until killed;
    run as a real process under a time limit, so a hang (also at exit) fails the test."""
    import subprocess
    import sys

    graph_path = tmp_path / "g.nir"
    write_graph(small_graph(encoding), graph_path)
    np.save(tmp_path / "obs.npy", cartpole_obs(2, seed=1).numpy())
    np.save(tmp_path / "spikes.npy", np.ones(spikes_shape, np.float32))
    proc = subprocess.run(
        [sys.executable, "-m", "backends.cli", str(graph_path), "--target", target, "--inputs",
         str(tmp_path / "obs.npy"), "--input-spikes", str(tmp_path / "spikes.npy"), "--out", str(tmp_path / "r.npz")],
        capture_output=True, text=True, timeout=100, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: input spikes"), proc.stderr[-2000:]
    assert not (tmp_path / "r.npz").exists()


def test_input_series_on_a_current_graph_needs_the_series_plan() -> None:
    """A backend built for the constant current refuses a series in one line (the audit's crash);
    built with with_input_series (run-backend --input-spikes does that) it runs it, and then
    refuses to run without one."""
    from exporters.plan.semantics import with_input_series

    graph = small_graph("liu")
    obs = cartpole_obs(2, seed=1).numpy()
    series = np.random.default_rng(0).normal(size=(8, 2, 4)).astype(np.float32)
    backend = LavaBackend(graph)
    try:
        with pytest.raises(UserError, match="input encoding is 'current'"):
            backend.run(obs, series)
    finally:
        backend.close()
    plan = with_input_series(build_plan(graph))
    got, backend = run_lava(plan, obs, series)
    assert_same(got, ReferenceBackend(plan, dtype="float64").run(obs, series), active=False)
    backend = LavaBackend(plan)
    try:
        with pytest.raises(UserError, match=r"built for a time-varying input: pass the input series"):
            backend.run(obs)
    finally:
        backend.close()
    assert_no_children_left()


def test_closing_a_backend_that_never_ran_is_quick() -> None:
    """Lava 0.10's stop() blocks on a runtime that never ran (then raises in its thread): close()
    kills it instead, leaving no process and printing nothing."""
    import time

    backend = LavaBackend(small_graph("liu"))
    t0 = time.perf_counter()
    backend.close()
    assert time.perf_counter() - t0 < 10.0
    assert_no_children_left()


@pytest.mark.parametrize("precision", ["floating_pt", "fixed_pt"])
def test_too_large_network_is_refused_before_any_lava_process(monkeypatch, precision) -> None:
    """issue 21: the memory this process may use (cgroup, rlimit) is checked from the layout's sizes
    before Lava starts a process; the audit's 64M-neuron graph died in create_runtime with ENOMEM."""
    import backends.common.memory as memory

    def no_build(self):
        raise AssertionError("built a network that does not fit")

    monkeypatch.setattr(memory, "available_memory", lambda: 256 * 2**20)
    monkeypatch.setattr(LavaBackend, "_build", no_build)
    graph = model_to_nir(make_checkpoint("liu", arch="nature_cnn", obs_shape=(4, 84, 84), n_actions=6,
                                         time_steps=2, seed=1))
    with pytest.raises(UserError, match=r"does not fit in memory on lava.*neurons, .* synapses\), 0\.2 GiB are available"):
        LavaBackend(graph, precision=precision)

"""Lava's N-copy network (``LavaBackend(copies=N)``, what ``run-backend --envs N`` builds): a
batch through the copies gives the one-copy network's Q-values, actions and spike counts bit for
bit, for a batch of fewer observations than copies, exactly as many, and more (several windows
in one run), in float (``lava``) and fixed point (``lava-fixed``); and the closed loop with
``--envs 4`` plays the episodes of ``--envs 1``.

Small graphs (2 x 24 neurons, T = 8) keep Lava's start-ups short.
"""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from conftest import skip_module_without_lava  # noqa: E402

skip_module_without_lava()

from backends.lava.backend import LavaBackend  # noqa: E402
from exporters.nirio import write_graph  # noqa: E402
from exporters.to_nir import model_to_nir  # noqa: E402
from exporters.zoo import atari_obs, cartpole_obs, make_checkpoint  # noqa: E402
from pipeline.errors import UserError  # noqa: E402

from conftest import zoo_graph  # noqa: E402
from test_vector_loop import assert_same_episodes, by_episode, loop, make_graph  # noqa: E402

pytestmark = pytest.mark.timeout(240)
HIDDEN = (24, 24)


def run_both(graph, obs: np.ndarray, copies: int, **kw):
    """(one-copy readouts, N-copy readouts, N-copy backend) for ``obs`` and its first 3 rows (a
    spike-encoded graph draws its trains per call, so each call is compared with its own)."""
    one = LavaBackend(graph, **kw)
    try:
        a = [one.run(obs[:k]) for k in (len(obs), 3)]
    finally:
        one.close()
    wide = LavaBackend(graph, copies=copies, **kw)
    try:
        b = [wide.run(obs[:k]) for k in (len(obs), 3)]  # the second: fewer than the copies
    finally:
        wide.close()
    return a, b, wide


def assert_bit_equal(a, b, rows: int) -> None:
    assert np.array_equal(a.q[:rows], b.q), (a.q[:rows], b.q)
    assert np.array_equal(a.action[:rows], b.action)
    assert a.spikes.keys() == b.spikes.keys()
    for k in a.spikes:
        assert np.array_equal(a.spikes[k][:rows], b.spikes[k]), k


@pytest.mark.parametrize("kind", ["liu", "chen", "hahn", "poisson", "skip", "recurrent", "cubalif"])
@pytest.mark.parametrize("precision", ["floating_pt", "fixed_pt"])
def test_copies_equal_one_copy_bit_for_bit(kind: str, precision: str) -> None:
    """11 observations on 4 copies: three windows in one run, the last padded; then 3 (one
    window, one copy idle). Every readout, per-copy tie-break and head included, equals the
    one-copy network's."""
    graph = zoo_graph(kind, hidden=HIDDEN, time_steps=8, gain=8.0 if kind not in ("hahn",) else 3.0)
    obs = cartpole_obs(11, seed=3).numpy()
    (a, a3), (b, b3), wide = run_both(graph, obs, 4, precision=precision)
    assert wide.copies == 4 and "4 copies" in wide.batch_path
    assert_bit_equal(a, b, 11)
    assert_bit_equal(a3, b3, 3)
    assert any(v.sum() > 0 for v in a.spikes.values())
    assert not [p for p in multiprocessing.active_children() if p.is_alive()]


def test_weight_split_copies_equal_one_copy() -> None:
    """lava-fixed --weight-bits 16: the bias residual's always-on synapses are repeated too."""
    graph = zoo_graph("liu", hidden=HIDDEN, time_steps=8, gain=8.0)
    (a, a3), (b, b3), _ = run_both(graph, cartpole_obs(6, seed=5).numpy(), 4, precision="fixed_pt", weight_bits=16)
    assert_bit_equal(a, b, 6)
    assert_bit_equal(a3, b3, 3)


def test_conv_copies_equal_one_copy() -> None:
    """A convolutional graph: its maps are sparse matrices, so the copies are block-diagonal too."""
    ckpt = make_checkpoint("liu", arch="nature_cnn", obs_shape=(4, 36, 36), n_actions=4, time_steps=4, seed=2)
    obs = atari_obs(3, seed=4)[:, :, :36, :36].contiguous().numpy()
    (a, _), (b, _), _ = run_both(model_to_nir(ckpt), obs, 2)
    assert_bit_equal(a, b, 3)


@pytest.mark.parametrize("target", ["lava", "lava-fixed"])
def test_envs_on_lava_plays_the_sequential_episodes(tmp_path: Path, target: str) -> None:
    """run-backend --envs 4 (four copies of the network) = --envs 1, episode for episode; five
    episodes on four slots, so the last batches have fewer observations than copies."""
    _, nir_path = make_graph(tmp_path)
    common = ("--target", target, "--episodes", "5", "--max-steps", "12", "--epsilon", "0.2", "--seed", "3")
    seq, vec = tmp_path / "seq.jsonl", tmp_path / "vec.jsonl"
    assert loop(nir_path, seq, *common, "--json", str(tmp_path / "seq.json")) == 0
    assert loop(nir_path, vec, *common, "--envs", "4", "--json", str(tmp_path / "vec.json")) == 0
    assert_same_episodes(by_episode(seq), by_episode(vec))
    assert "4 copies" in json.loads((tmp_path / "vec.json").read_text())["batch_path"]
    assert "back to back" in json.loads((tmp_path / "seq.json").read_text())["batch_path"]


def test_copies_that_do_not_fit_run_back_to_back(monkeypatch) -> None:
    """N copies beyond the memory the process may use: the one-copy network, batches back to
    back (a speed choice, the same results), said in ``batch_path``; one copy too large is
    still the usual error."""
    import backends.common.memory as memory

    graph = zoo_graph("liu", hidden=HIDDEN, time_steps=8, gain=8.0)
    monkeypatch.setattr(memory, "available_memory", lambda: int(560 * 2**20 / memory.MEMORY_FRACTION))
    obs = cartpole_obs(5, seed=2).numpy()
    backend = LavaBackend(graph, copies=1000)
    try:
        assert backend.copies == 1 and "1000 copies would not fit in memory" in backend.batch_path
        got = backend.run(obs)
    finally:
        backend.close()
    ref = LavaBackend(graph)
    try:
        assert_bit_equal(ref.run(obs), got, 5)
    finally:
        ref.close()
    monkeypatch.setattr(memory, "available_memory", lambda: 2**20)
    with pytest.raises(UserError, match="does not fit in memory"):
        LavaBackend(graph, copies=4)

"""A NIR file cannot make the tools read other files, loop forever or compute a silently wrong Q.

Each file is our CartPole graph with one change made through h5py (HDF5 features) or through the
``nir`` objects (field values); every one must be refused by ``read_graph`` with one UserError.
"""

from __future__ import annotations

import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from exporters.nirio import read_graph, write_graph
from exporters.to_nir import model_to_nir
from exporters.validate import _in_child, scan_hdf5
from exporters.zoo import make_checkpoint
from pipeline.errors import UserError

WEIGHT = "node/nodes/l0_fc/weight"


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("nir") / "good.nir"
    write_graph(model_to_nir(make_checkpoint("liu", hidden=(16, 8), seed=2)), path)
    return path


def variant(good: Path, tmp_path: Path, change) -> Path:
    path = tmp_path / "bad.nir"
    path.write_bytes(good.read_bytes())
    with h5py.File(path, "r+") as f:
        change(f, tmp_path)
    return path


def external_link(f, tmp):
    other = tmp / "other.h5"
    with h5py.File(other, "w") as o:
        o["w"] = f[WEIGHT][()] * 2
    del f[WEIGHT]
    f[WEIGHT] = h5py.ExternalLink(str(other), "w")


def soft_link(f, tmp):
    del f[WEIGHT]
    f[WEIGHT] = h5py.SoftLink("/node/nodes/l1_fc/weight")


def external_storage(f, tmp):
    secret = tmp / "secret.txt"
    secret.write_bytes(b"SECRET-TOKEN-123".ljust(16 * 4 * 8, b"x"))
    shape = f[WEIGHT].shape
    del f[WEIGHT]
    f.create_dataset(WEIGHT, shape=shape, dtype="<f8", external=[(str(secret), 0, h5py.h5f.UNLIMITED)])


def virtual_missing_source(f, tmp):
    shape = f[WEIGHT].shape
    del f[WEIGHT]
    layout = h5py.VirtualLayout(shape=shape, dtype="<f8")
    layout[...] = h5py.VirtualSource(str(tmp / "missing.h5"), "w", shape=shape)
    f.create_virtual_dataset(WEIGHT, layout, fillvalue=0.0)


def declared_bomb(f, tmp):
    f.create_dataset("node/metadata/pad", shape=(2**28,), dtype="<f8", chunks=(2**16,))  # 2 GiB, unwritten


@pytest.mark.parametrize("change,words", [
    (external_link, "external link"),
    (soft_link, "soft link"),
    (external_storage, "external files"),
    (virtual_missing_source, "virtual dataset"),
    (declared_bomb, "GiB of data"),
])
def test_hdf5_features_that_reach_outside_are_refused(good, tmp_path, change, words):
    path = variant(good, tmp_path, change)
    t0 = time.perf_counter()
    with pytest.raises(UserError, match=words) as info:
        read_graph(path)
    assert "\n" not in str(info.value) and "SECRET" not in str(info.value)
    assert time.perf_counter() - t0 < 15


def test_a_reader_that_never_returns_is_stopped():
    t0 = time.perf_counter()
    assert "did not finish within 1 s" in _in_child(lambda: time.sleep(30), 1.0)
    assert time.perf_counter() - t0 < 5
    assert _in_child(lambda: None, 5.0) is None and _in_child(lambda: "bad", 5.0) == "bad"


def test_scan_reports_corrupt_files_in_one_line(tmp_path, good):
    path = tmp_path / "cut.nir"
    path.write_bytes(good.read_bytes()[:3000])
    with pytest.raises(UserError, match="not a readable HDF5/NIR file") as info:
        scan_hdf5(path)
    assert "\n" not in str(info.value)


def graph_with(change):
    graph = model_to_nir(make_checkpoint("liu", hidden=(16, 8), seed=2))
    change(graph)
    return graph


def set_meta(key, value):
    return lambda g: g.metadata.__setitem__(key, value)


def set_param(node, attr, value):
    return lambda g: setattr(g.nodes[node], attr, value(getattr(g.nodes[node], attr)))


@pytest.mark.parametrize("change,words", [
    (set_param("l0_fc", "weight", lambda w: np.where(np.arange(w.size).reshape(w.shape) == 0, 1e300, w)),
     "beyond float32's range"),
    (set_param("l0_fc", "weight", lambda w: w.astype(np.complex128) + 1j), "complex"),
    (set_param("l0_fc", "weight", lambda w: np.where(np.arange(w.size).reshape(w.shape) == 0, np.nan, w)),
     "not finite"),
    (set_meta("time_steps", 2.5), "'time_steps' must be an integer"),
    (set_meta("time_steps", 4_294_967_312), "'time_steps' must lie in"),
    (set_meta("readout_offset", float("nan")), "'readout_offset' must be a finite number"),
    (set_meta("readout_divisor", 0.0), "'readout_divisor' must be non-zero"),
    (set_meta("dt", "x"), "'dt' must be a finite number"),
    (set_meta("n_actions", 2.7), "'n_actions' must be an integer"),
    (set_meta("readout_tiebreak", "foo"), "'readout_tiebreak' must be one of"),
    (set_meta("format_version", 99), "'format_version' must lie in"),
    (set_meta("preprocessing_offset", np.zeros(3)), "'preprocessing_offset' has 3 values"),
    (set_meta("preprocessing_scale", np.array([1.0, np.inf, 1.0, 1.0])), "'preprocessing_scale' must be finite"),
    (lambda g: g.nodes["input"].input_type.__setitem__("input", np.array([-4])), "positive integers"),
    (lambda g: g.nodes["input"].input_type.__setitem__("input", np.array([2**40, 2**40])), "elements, more than"),
])
def test_graph_fields_are_checked_where_the_graph_enters(tmp_path, change, words):
    path = tmp_path / "bad.nir"
    write_graph(graph_with(change), path)
    with pytest.raises(UserError, match=words) as info:
        read_graph(path)
    assert "\n" not in str(info.value)


def test_the_good_graph_passes(good):
    assert read_graph(good).nodes


def test_readout_divisor_applies_to_the_rate_readout_too(tmp_path):
    """docs/NIR.md: q = reduce_t(y) / readout_divisor + ...; the rate readout's pushdown
    (mean_t(W s + b) = W mean_t(s) + b) used to skip the divisor."""
    from backends.reference import ReferenceBackend
    from exporters.zoo import cartpole_obs

    graph = model_to_nir(make_checkpoint("liu", hidden=(16, 8), seed=2))
    assert graph.metadata["readout"] == "rate"
    obs = cartpole_obs(16).numpy()
    q1 = ReferenceBackend(graph, dtype="float64").run(obs).q
    graph.metadata["readout_divisor"] = 2.0
    path = tmp_path / "div2.nir"
    write_graph(graph, path)
    q2 = ReferenceBackend(read_graph(path), dtype="float64").run(obs).q
    assert np.abs(q1).max() > 0 and np.array_equal(q2, q1 / 2)

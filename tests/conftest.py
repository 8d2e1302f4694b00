"""Helpers shared by the backend tests: the test zoo's graphs, the comparison with the float64
reference, and building any registered target (skipped when its simulator is not installed)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import nir
import numpy as np
import pytest

from backends import REGISTRY, Target, Tolerance
from backends.base import Readout
from exporters.to_nir import model_to_nir
from exporters.zoo import GRAPH_KINDS, make_checkpoint

os.environ.setdefault("PYNEST_QUIET", "1")  # no NEST banner in the test output

FIXTURES = Path(__file__).parent / "fixtures" / "thirdparty"
# zoo kinds whose IF neurons (no leak) fire at gain 3 where a tau-2 LIF needs 6
IF_KINDS = frozenset({"hahn", "tan_converted", "converted_spike_count", "if_hard_rate"})


def zoo_graph(kind: str, **kw: Any) -> nir.NIRGraph:
    """A zoo checkpoint (exporters.zoo) as NIR, at a gain where every layer spikes; a GRAPH_KINDS
    kind is built as a NIR graph directly."""
    if kind in GRAPH_KINDS:
        return GRAPH_KINDS[kind](**{"seed": 1, **kw})
    kw.setdefault("gain", 3.0 if kind in IF_KINDS else 6.0)
    return model_to_nir(make_checkpoint(kind, **{"seed": 1, **kw}))


def skip_module_without_lava() -> None:
    """Call at a test module's top: skip the whole module where lava-nc is not installed (an
    environment made without the ``lava`` extra). Checked by its distribution, not by importing it:
    Lava must be imported through its compat shim."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        version("lava-nc")
    except PackageNotFoundError:
        pytest.skip("lava-nc not installed (scripts/install.sh with EXTRAS=all or lava)", allow_module_level=True)


def require(target: str | Target) -> Target:
    """The registry entry of ``target``; skips the test when a module it needs is not installed.

    Looks the modules up without importing them (Lava must be imported through its compat shim).
    """
    t = REGISTRY[target] if isinstance(target, str) else target
    missing = [m for m in t.requires if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{t.name} needs {', '.join(missing)} (not installed)")
    return t


def run_target(target: str | Target, graph: Any, obs: np.ndarray, input_spikes: np.ndarray | None = None,
               **options: Any) -> Readout:
    """Build ``target`` from the registry (skipping when not installed), run ``obs``, close it."""
    backend = require(target).build(graph, **options)
    try:
        return backend.run(obs, input_spikes)
    finally:
        backend.close()


def assert_same(r: Readout, ref: Readout, active: bool = True, tolerance: Tolerance = Tolerance()) -> None:
    """``r`` against the float64 reference ``ref`` within ``tolerance`` (default: equal spike counts
    per layer, equal actions, |dQ| / max|Q| <= 1e-6); with ``active`` every layer must spike, or
    the comparison would prove little."""
    assert r.q.dtype == np.float64 and r.action.dtype == np.int64 and r.q.shape == ref.q.shape
    assert set(r.spikes) == set(ref.spikes)
    total = diff = 0
    for name, counts in ref.spikes.items():
        assert r.spikes[name].dtype == np.int64 and r.spikes[name].shape == counts.shape, name
        if tolerance.spikes == 0:
            assert np.array_equal(r.spikes[name], counts), name
        if active:
            assert counts.sum() > 0, f"{name} never spikes: the comparison would prove little"
        total += int(counts.sum())
        diff += int(np.abs(r.spikes[name] - counts).sum())
    assert diff <= tolerance.spikes * total, f"{diff} of {total} spikes differ"
    assert np.abs(r.q - ref.q).max() <= tolerance.q_rel * max(np.abs(ref.q).max(), 1e-12)
    if tolerance.agreement == 1.0:
        assert np.array_equal(r.action, ref.action)
    else:
        assert np.mean(r.action == ref.action) >= tolerance.agreement


def mixed_cuba_graph(readout_li: bool = False, norse: bool = False, seed: int = 2, n: int = 20, T: int = 10,
                     dt: float = 1e-4, gain: float = 5.0) -> nir.NIRGraph:
    """LIF -> CubaLIF -> CubaLIF -> Affine head (or -> Affine -> CubaLI readout), with r != 1,
    v_leak != 0, w_in != 1 and per-neuron tau_syn: every term of the CubaLIF step, between the
    layers it sits next to. ``norse``: taus as Norse 1.1 writes them (dt * tau), for ``--convention norse``."""
    rng = np.random.default_rng(seed)

    def affine(n_out: int, n_in: int, g: float = gain) -> nir.Affine:
        return nir.Affine(weight=(rng.normal(size=(n_out, n_in)) * g / np.sqrt(n_in)).astype(np.float32),
                          bias=(0.2 * rng.normal(size=n_out)).astype(np.float32))

    def cuba(k: int, spiking: bool = True) -> nir.NIRNode:
        kw = dict(tau_syn=np.where(rng.random(k) < 0.5, 2 * dt, 3 * dt), tau_mem=np.full(k, 5 * dt),
                  r=np.full(k, 1.5), v_leak=np.full(k, 0.1), w_in=np.full(k, 0.8))
        if not spiking:
            return nir.CubaLI(**kw)
        return nir.CubaLIF(v_threshold=np.ones(k), v_reset=np.full(k, 0.1), **kw)

    lif = nir.LIF(tau=np.full(n, 3 * dt), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n),
                  v_reset=np.zeros(n))
    nodes = {"input": nir.Input(input_type={"input": np.array([4])}), "a0": affine(n, 4), "lif": lif,
             "a1": affine(n, n), "cuba": cuba(n), "a2": affine(n, n), "cuba2": cuba(n),
             "output": nir.Output(output_type={"output": np.array([3])})}
    edges = [("input", "a0"), ("a0", "lif"), ("lif", "a1"), ("a1", "cuba"), ("cuba", "a2"), ("a2", "cuba2")]
    if readout_li:
        nodes.update(a3=affine(3, n, 2.0), out=cuba(3, spiking=False))
        edges += [("cuba2", "a3"), ("a3", "out"), ("out", "output")]
    else:
        nodes["out"] = affine(3, n, 1.0)
        edges += [("cuba2", "out"), ("out", "output")]
    if norse:
        for node in nodes.values():
            for attr in ("tau", "tau_syn", "tau_mem"):
                if hasattr(node, attr):
                    setattr(node, attr, getattr(node, attr) * dt)
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"time_steps": T, "dt": dt})


def fixture_options(data: Any) -> dict[str, Any]:
    """How to read a third-party fixture (its .npz): the convention and dt the file cannot say."""
    dt = float(data["dt"]) if "dt" in data else float("nan")
    return {"convention": str(data["convention"]), "dt": None if np.isnan(dt) else dt}

"""Graphs written by snnTorch, Norse, Sinabs and SpikingJelly (fixtures made by
tests/fixtures/make_thirdparty.py with the frameworks themselves) reproduce the frameworks'
own simulations once their conventions are normalised on read (docs/NIR.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backends.reference import ReferenceBackend
from exporters.canonical import build_plan
from exporters.nirio import read_graph
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

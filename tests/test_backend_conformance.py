"""Every registered target (backends.REGISTRY) against the float64 reference on the test zoo: the
float targets bit for bit in spike counts and actions (Q to 1e-6 of max |Q|), the fixed-point ones
within the tolerance their registry entry states; what a target cannot run is one UserError naming
the node. A new target gets this check by its registry entry alone.

One small graph per zoo kind (2 x 24 neurons, T = 8) keeps Lava's per-build process start the
main cost; the per-target files test what is particular to each simulator.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest
import numpy as np
import torch

from backends import BENCH_COLUMNS, REGISTRY, TARGETS, make_backend
from backends.base import Readout
from backends.reference import ReferenceBackend
from exporters.zoo import GRAPH_KINDS, KINDS, cartpole_obs
from pipeline.encoding import encode
from pipeline.errors import UserError

from conftest import IF_KINDS, assert_same, require, zoo_graph

ROOT = Path(__file__).resolve().parents[1]
CASES = [pytest.param(name, kind, id=f"{name}-{kind}") for name, t in REGISTRY.items() if not t.hardware
         for kind in (t.test_kinds or (*KINDS, *GRAPH_KINDS))]
CASES += [pytest.param(name, None, id=name, marks=pytest.mark.skip(reason=f"{name} needs {t.hardware}"))
          for name, t in REGISTRY.items() if t.hardware]  # one line in the report, not one per kind


def conformance_graph(kind: str):
    gain = 3.0 if kind in IF_KINDS else 6.0 if kind in GRAPH_KINDS else 8.0
    return zoo_graph(kind, hidden=(24, 24), time_steps=8, gain=gain)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target, kind", CASES)
def test_target_matches_the_reference(target: str, kind: str) -> None:
    t = require(target)
    graph = conformance_graph(kind)
    obs = cartpole_obs(24, seed=3).numpy()
    ref_backend = ReferenceBackend(graph, dtype="float64")
    s_in = None
    if ref_backend.sem.encoding != "current":  # every target gets the same recorded trains
        s_in = encode(torch.as_tensor(obs).double(), ref_backend.T, ref_backend.sem.encoding,
                      torch.Generator().manual_seed(11)).numpy()
    ref = ref_backend.run(obs, s_in)
    if kind in t.refuses:
        with pytest.raises(UserError, match="node '") as err:
            t.build(graph, **t.bench_options).close()
        assert "\n" not in str(err.value)
        return
    spiking = bool(ref.spikes)
    assert len(set(ref.action.tolist())) == 2 or not spiking, "both actions should occur"
    backend = t.build(graph, **t.bench_options)
    try:
        got = backend.run(obs, s_in)
        again = backend.run(obs[:3], None if s_in is None else s_in[:, :3])
    finally:
        backend.close()
    assert_same(got, ref, active=spiking, tolerance=t.tolerance)
    assert set(got.timings) == {"set_input", "simulate", "read_out"}
    # a second call on the same network starts from the same state (float32 sums may round
    # differently in another batch size, so within the tolerance rather than bit for bit)
    assert_same(again, head(got, 3), active=False, tolerance=t.tolerance)
    left = [p for p in multiprocessing.active_children() if p.is_alive()]
    assert not left, f"{target} left processes behind after close: {left}"


def head(r: Readout, n: int) -> Readout:
    return Readout(q=r.q[:n], action=r.action[:n], spikes={k: v[:n] for k, v in r.spikes.items()})


# ---------------------------------------------------------------- the registry itself


def test_registry_keeps_the_command_line_names() -> None:
    """Hidden entries are benchmark columns, never ``--target`` choices."""
    assert list(TARGETS) == ["reference", "nest", "lava", "lava-fixed", "pynn-nest", "pynn-spinnaker"]
    assert BENCH_COLUMNS == ("reference", "nest", "pynn-nest", "lava", "lava-fixed", "lava-fixed-w16",
                             "spinnaker-fixedpoint")
    assert {n for n, t in REGISTRY.items() if t.hidden} == {"lava-fixed-w16", "spinnaker-fixedpoint"}
    with pytest.raises(UserError, match="valid choices: reference, nest, lava, lava-fixed, pynn-nest, "
                                        "pynn-spinnaker$"):
        make_backend("lava-fixed-w16", None)
    for name, t in REGISTRY.items():
        kinds = {*KINDS, *GRAPH_KINDS}
        assert t.name == name and set(t.refuses) <= kinds and set(t.test_kinds) <= kinds


@pytest.mark.parametrize("argv, target, comparing, want", [
    ([], "reference", False, {}),
    (["--batch-size", "4", "--dtype", "float64"], "reference", False, {"batch_size": 4, "dtype": "float64"}),
    (["--target", "nest", "--compare", "reference"], "reference", True, {"dtype": "float64"}),
    (["--compare", "reference"], "reference", True, {}),  # reference vs itself: its own default
    (["--target", "nest", "--compare", "reference", "--dtype", "float32"], "reference", True, {"dtype": "float32"}),
    (["--target", "nest", "--threads", "2", "--batch-size", "4"], "nest", False, {"threads": 2}),
    (["--target", "pynn-nest"], "pynn-nest", False, {"threads": 1}),
    (["--target", "lava", "--batch-size", "4"], "lava", False, {"batch_size": 4}),
    (["--target", "lava-fixed", "--weight-bits", "16"], "lava-fixed", False, {"weight_bits": 16}),
    (["--target", "lava-fixed", "--state-scale", "neuron"], "lava-fixed", False, {"state_scale": "neuron"}),
    (["--target", "nest", "--compare", "lava-fixed", "--state-scale", "layer"], "lava-fixed", True,
     {"state_scale": "layer"}),
    (["--target", "pynn-spinnaker", "--batch-size", "4", "--threads", "3"], "pynn-spinnaker", False, {}),
])
def test_backend_options_come_from_the_registry(argv: list[str], target: str, comparing: bool,
                                                 want: dict) -> None:
    from backends.cli import backend_options, check_args, parse_args

    args = parse_args(["g.nir", "--inputs", "obs.npy", *argv])
    check_args(args)
    common = dict(convention=None, time_steps=None, dt=None, readout=None)
    assert backend_options(target, args, comparing=comparing) == {**common, **want}


@pytest.mark.parametrize("flag, value, assumed", [("--weight-bits", "16", "8"), ("--state-scale", "neuron", None),
                                                  ("--state-scale", "layer", None)])
@pytest.mark.parametrize("where", [[], ["--target", "lava"], ["--target", "nest", "--compare", "lava"]])
def test_lava_fixed_options_belong_to_lava_fixed(flag: str, value: str, assumed: str | None, where: list[str]) -> None:
    """Every value is refused where no lava-fixed runs (no other target has weight mantissas or a
    state unit to scale); the assumed value is accepted anywhere."""
    from backends.cli import check_args, parse_args

    argv = ["g.nir", "--inputs", "obs.npy", *where, flag, value]
    with pytest.raises(UserError, match=f"^{flag} applies to --target lava-fixed only$"):
        check_args(parse_args(argv))
    check_args(parse_args([*argv, "--compare", "lava-fixed"]))
    if assumed is not None:
        check_args(parse_args(["g.nir", "--inputs", "obs.npy", flag, assumed]))


def test_choosing_the_reference_imports_no_simulator(tmp_path) -> None:
    code = ("import sys; from backends import make_backend; from backends.cli import parse_args; "
            "from exporters.to_nir import model_to_nir; from exporters.zoo import make_checkpoint; "
            "make_backend('reference', model_to_nir(make_checkpoint('liu'))).close(); "
            "print(sorted(m for m in ('nest', 'pyNN', 'lava', 'spynnaker') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", [name for name, t in REGISTRY.items() if not t.hardware])
def test_time_varying_input_on_a_current_graph(target: str) -> None:
    """issue 20: a real-valued input series [T, N, ...] (event data, run-backend --input-spikes) into a
    graph whose input is a constant current: every target equals the reference within its tolerance."""
    from exporters.canonical import build_plan
    from exporters.plan.semantics import with_input_series

    t = require(target)
    plan = with_input_series(build_plan(conformance_graph("liu")))
    obs = cartpole_obs(12, seed=2).numpy()
    series = (torch.randn((8, 12, 4), generator=torch.Generator().manual_seed(5)) * 1.2).numpy()
    ref = ReferenceBackend(plan, dtype="float64").run(obs, series)
    backend = t.build(plan, **t.bench_options)
    try:
        if target == "spinnaker-fixedpoint":  # unit spike sources: real values are one error line
            with pytest.raises(UserError, match="values other than 0 and ±1"):
                backend.run(obs, series)
            series = np.sign(series) * (np.abs(series) > 1.0)
            ref = ReferenceBackend(plan, dtype="float64").run(obs, series)
        got = backend.run(obs, series)
    finally:
        backend.close()
    assert_same(got, ref, tolerance=t.tolerance)

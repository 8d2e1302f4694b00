"""lava-nc 0.10.0 installs, imports on Python 3.11 through backends/lava/compat.py, and *runs*.

A tiny network, RingBuffer source -> Dense -> LIF -> RingBuffer sink, runs 10 steps with
``Loihi2SimCfg`` in ``floating_pt`` and ``fixed_pt``; spikes and the LIF state read back with
``Var.get()`` must equal a hand computation (below). Lava forks one OS process per Lava process:
every test stops its runtime in ``finally`` through :func:`stop_or_kill`, which does not trust
``stop()`` to return (see ``test_process_model_error_is_reported_and_cleaned_up``).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import skip_module_without_lava  # noqa: E402

skip_module_without_lava()

from backends.lava import compat  # noqa: E402

pytestmark = pytest.mark.timeout(60)

T = 10
# Input spikes [channel, step]: channel 0 fires every step, channel 1 on steps 1, 3, 5, ...
DATA = np.zeros((2, T))
DATA[0, :] = 1
DATA[1, 0::2] = 1
W = np.array([[2, 0], [1, 1], [0, 3]])
VTH = 5
# Hand computation. Lava's Dense sends the previous step's product, so the LIF sees at step t
# x_t = W @ s_(t-1) (x_1 = 0): x = [2, 1 + s1_(t-1), 3 * s1_(t-1)], i.e. neuron 1 gets 2 on even
# steps and 1 on odd ones, neuron 2 gets 3 on even steps and 0 on odd ones. With du = 1 (u is the
# current input only) and dv = 0 (no leak), v integrates x and a spike (v > vth, strictly)
# resets v to 0:
#   neuron 0: v = 0 2 4 6*| 2 4 6*| 2 4 6*      -> spikes at t = 4, 7, 10, final v = 0
#   neuron 1: v = 0 2 3 5 6*| 2 3 5 6*| 2       -> t = 5, 9 (v = 5 at t = 4, 8 does not fire)
#   neuron 2: v = 0 3 3 6*| 0 3 3 6*| 0 3       -> t = 4, 8, final v = 3
# At t = 10 the input was s_9 = [1, 1], so u = W @ [1, 1] = [2, 2, 3].
SPIKE_STEPS = {0: [4, 7, 10], 1: [5, 9], 2: [4, 8]}
FINAL_V = np.array([0, 2, 3])
FINAL_U = np.array([2, 2, 3])
# fixed_pt (Loihi bit-accurate LIF): the synaptic input is shifted left by 6 bits (act_shift) and
# so is vth; du = 4095 makes the current decay factor (4096 - (du + 1)) / 4096 = 0 and dv = 0 no
# decay, so the same dynamics run on integers 64 times larger.
FIXED_SCALE = 64


def expected_raster() -> np.ndarray:
    raster = np.zeros((3, T))
    for neuron, steps in SPIKE_STEPS.items():
        raster[neuron, [t - 1 for t in steps]] = 1
    return raster


def stop_or_kill(proc, timeout: float = 15.0) -> bool:
    """Stop ``proc``'s Lava runtime; if ``stop()`` does not return within ``timeout`` s (it
    blocks for ever once a process model has raised), kill the runtime's OS processes.
    Returns whether ``stop()`` returned by itself."""
    runtime = proc.runtime
    if runtime is None:
        return True
    infra = runtime._messaging_infrastructure
    actors = list(infra.actors)
    stopper = threading.Thread(target=proc.stop, name="lava-stop", daemon=True)
    stopper.start()
    stopper.join(timeout)
    if not stopper.is_alive():
        return True
    for actor in actors:
        try:
            actor.kill()
            actor.join(5)
        except (ValueError, AssertionError):  # already joined and closed
            pass
    if infra.smm is not None:
        infra.smm.shutdown()
    return False


def assert_no_children_left() -> None:
    left = [p for p in multiprocessing.active_children() if p.is_alive()]
    assert not left, f"Lava left OS processes behind: {left}"


def build(tag: str):
    from lava.proc.dense.process import Dense
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.lif.process import LIF

    fixed = tag == "fixed_pt"
    source = Source(data=DATA.astype(np.int32) if fixed else DATA)
    dense = Dense(weights=W)
    lif = LIF(shape=(3,), du=4095 if fixed else 1.0, dv=0, vth=VTH, bias_mant=0)
    sink = Sink(shape=(3,), buffer=T)
    source.s_out.connect(dense.s_in)
    dense.a_out.connect(lif.a_in)
    lif.s_out.connect(sink.a_in)
    return lif, sink


def test_shim_fixes_exactly_the_encoder_defaults() -> None:
    assert compat.ensure_lava_importable() == compat.LAVA_VERSION
    assert dataclasses.dataclass.__module__ == "dataclasses"  # the patch did not outlive the import
    if sys.version_info >= (3, 11):
        assert sorted(compat.FIXED_FIELDS) == sorted(
            f"{cls}.{f}" for cls, fs in
            {"CoreEncoder": "xyp", "ChipEncoder": "xyz", "AxonEncoder": ("hi", "lo")}.items() for f in fs)
    from lava.magma.compiler import var_model

    assert var_model.dataclass is dataclasses.dataclass
    a, b = var_model.CoreEncoder(), var_model.CoreEncoder()
    assert a == b and a.x == var_model.ByteEncoder() and a.x is not b.x


@pytest.mark.parametrize("before, expect", [
    ("multiprocessing.get_start_method()", "imported, start method fork"),
    ("multiprocessing.set_start_method('spawn')", "Lava needs fork: already fixed it to 'spawn'"),
])
def test_start_method_already_fixed(before: str, expect: str) -> None:
    """Lava calls set_start_method('fork') at import: tolerated when 'fork' is already in force,
    a clear error otherwise. In a fresh interpreter, since this one has imported Lava."""
    code = f"""
import multiprocessing
{before}
from backends.lava.compat import ensure_lava_importable
try:
    ensure_lava_importable()
    from lava.proc.lif.process import LIF
    print("imported, start method", multiprocessing.get_start_method())
except RuntimeError as exc:
    print("Lava needs fork:" if "already fixed it to" in str(exc) else "other:", str(exc).split("had ")[-1])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[1])
    assert expect in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("tag", ["floating_pt", "fixed_pt"])
def test_dense_lif_network_runs_and_matches_hand_computation(tag: str) -> None:
    compat.ensure_lava_importable()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg

    lif, sink = build(tag)
    try:
        lif.run(condition=RunSteps(num_steps=T), run_cfg=Loihi2SimCfg(select_tag=tag))
        v, u, raster = lif.v.get(), lif.u.get(), sink.data.get()
    finally:
        assert stop_or_kill(lif), "Lava's stop() hung"
    assert_no_children_left()
    scale = FIXED_SCALE if tag == "fixed_pt" else 1
    np.testing.assert_array_equal(raster, expected_raster())
    np.testing.assert_array_equal(v, FINAL_V * scale)
    np.testing.assert_array_equal(u, FINAL_U * scale)


def test_process_model_error_is_reported_and_cleaned_up() -> None:
    """Known Lava 0.10.0 hazard, reproduced on purpose (this is the "fixed-point run with an
    injector hung" of issue 6): the Injector's only process model sends float64, and the
    fixed-point Dense with graded input (num_message_bits > 0) then calls np.right_shift on a
    float array -> TypeError inside the forked Dense process. ``run`` raises
    ``RuntimeError("1 Exception(s) occurred. See output above")`` without showing the cause
    (Lava logs it at INFO; it is in ``actor.exception``), and ``stop()`` then blocks for ever
    waiting for the dead process. ``stop_or_kill`` must surface and clean that up."""
    compat.ensure_lava_importable()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.injector import Injector, PyLoihiInjectorModel
    from lava.proc.lif.process import LIF

    injector = Injector(shape=(2,))
    dense = Dense(weights=W, num_message_bits=8)
    lif = LIF(shape=(3,), du=4095, dv=0, vth=VTH)
    injector.out_port.connect(dense.s_in)
    dense.a_out.connect(lif.a_in)
    cfg = Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map={Injector: PyLoihiInjectorModel})
    try:
        lif.create_runtime(run_cfg=cfg)
        for t in range(3):
            injector.send(np.array([1.0, 2.0]))
        with pytest.raises(RuntimeError, match="Exception"):
            lif.run(condition=RunSteps(num_steps=3), run_cfg=cfg)
        causes = [a.exception[1] for a in lif.runtime._messaging_infrastructure.actors if a.exception]
        assert any("right_shift" in tb for tb in causes), causes
    finally:
        stopped = stop_or_kill(lif, timeout=3.0)
    assert_no_children_left()
    # Documents today's behaviour; if a Lava release fixes stop() after an error, drop this.
    assert not stopped, "Lava's stop() returned after a process-model error: the hang is fixed upstream"

"""lava-fixed on the NIR paper's Sinabs CNN as Sinabs imports it (``--convention sinabs``: multi-spike
IF, subtract reset, floor at -v_th), issue 20 item 4: the Lava fixed_pt models equal the bit-exact
torch model (backends.lava.torch_fixed) spike for spike, and that model is held to the float64
reference within the stated tolerance (backends/__init__.py). The graphs are read from
../shared/nir-paper (DSQN_NIR_PAPER elsewhere); the module skips without them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from conftest import skip_module_without_lava

skip_module_without_lava()

from backends import FINE_FIXED, LAVA_8BIT  # noqa: E402
from backends.lava.backend import LavaBackend  # noqa: E402
from backends.lava.torch_fixed import LoihiFixedTorch  # noqa: E402
from backends.reference import ReferenceBackend  # noqa: E402
from exporters.canonical import build_plan  # noqa: E402
from exporters.nirio import read_graph  # noqa: E402

PAPER = Path(os.environ.get("DSQN_NIR_PAPER", Path(__file__).resolve().parents[2] / "shared" / "nir-paper"))
pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(not (PAPER / "cnn_sinabs.nir").is_file(),
                                 reason=f"the NIR paper graphs are not in {PAPER}")]


def cnn_plan():
    return build_plan(read_graph(PAPER / "cnn_sinabs.nir"), convention="sinabs", time_steps=10)


def frames(n: int, seed: int = 0) -> np.ndarray:
    """Binary 2x34x34 frames with 5 % of the pixels on (benchmarks/nir_paper.py's inputs)."""
    return (np.random.default_rng(seed).random((n, 2, 34, 34)) < 0.05).astype(np.float32)


def moved(got, ref) -> tuple[int, int]:
    return (sum(int(np.abs(got.spikes[k].astype(np.int64) - v).sum()) for k, v in ref.spikes.items()),
            sum(int(v.sum()) for v in ref.spikes.values()))


def test_cnn_sinabs_multi_spike_on_lava_fixed_is_its_integer_model() -> None:
    plan = cnn_plan()
    obs = frames(3)
    backend = LavaBackend(plan, precision="fixed_pt")
    try:
        got = backend.run(obs)
    finally:
        backend.close()
    want = LoihiFixedTorch(plan).run(obs)
    for k, v in want.spikes.items():
        assert np.array_equal(got.spikes[k], v), k
    assert np.array_equal(got.q, want.q)
    assert max(int(v.max()) for v in got.spikes.values()) > plan.semantics.time_steps  # several spikes per step
    assert sum(backend.saturated.values()) == 0


def test_cnn_sinabs_multi_spike_on_lava_fixed_within_its_tolerance() -> None:
    """16-bit weights (``--weight-bits 16``) are within FINE_FIXED; 8-bit weights move about 8 % of
    this CNN's spikes, outside LAVA_8BIT's 2 %, as its single-spike reading does (6.5 %; docs/LAVA.md)."""
    plan = cnn_plan()
    obs = frames(8)
    ref = ReferenceBackend(plan, dtype="float64").run(obs)
    for bits in (8, 16):
        got = LoihiFixedTorch(plan, weight_bits=bits).run(obs)
        n_moved, total = moved(got, ref)
        agreement = float((got.action == ref.action).mean())
        rel = float(np.abs(got.q - ref.q).max() / np.abs(ref.q).max())
        print(f"{bits}-bit: {n_moved} of {total} spikes moved, agreement {agreement:.3f}, q_rel {rel:.3g}")
        if bits == 16:
            assert n_moved <= FINE_FIXED.spikes * total and agreement >= FINE_FIXED.agreement
            assert rel <= FINE_FIXED.q_rel
        else:
            assert n_moved <= 0.1 * total and agreement >= 0.75 and rel <= LAVA_8BIT.q_rel

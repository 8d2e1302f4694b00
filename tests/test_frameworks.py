"""The NIR paper's graphs run by the frameworks that wrote them (Sinabs 3.1, Norse 1.1, snnTorch
1.0, in .venv/frameworks: scripts/install.sh) against the float64 reference on the same inputs
(issue 20, item 4). benchmarks/nir_paper.py makes the table of docs/NIR.md section 7 this way.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest

from benchmarks import nir_paper
from exporters.nirio import read_graph

PAPER = Path(os.environ.get("DSQN_NIR_PAPER", Path(__file__).resolve().parents[2] / "shared" / "nir-paper"))
# the small snnTorch nets at the end are written here; only the paper's graphs need the folder
needs_paper = pytest.mark.skipif(not PAPER.is_dir(), reason=f"the NIR paper graphs are not in {PAPER}")
pytestmark = [pytest.mark.timeout(600),
              pytest.mark.skipif(not nir_paper.FRAMEWORKS_DIR.is_dir(),
                                 reason=f"the frameworks are not installed in {nir_paper.FRAMEWORKS_DIR} "
                                        "(scripts/install.sh)")]


def case(convention: str, n: int = 2) -> dict:
    """The benchmark's own case for this convention, cut to n observations."""
    (c,) = [c for c in nir_paper.cases(np.random.default_rng(0), n) if c["convention"] == convention]
    return c


@functools.lru_cache(maxsize=None)
def own_run(convention: str, n: int = 2) -> np.ndarray | str:
    """The framework's output spike counts (one subprocess per case, kept for the module)."""
    return nir_paper.framework_q(case(convention, n), PAPER, nir_paper.FRAMEWORKS_DIR)


def own_and_ours(c: dict) -> tuple[np.ndarray, np.ndarray]:
    fq = own_run(c["convention"], len(c["obs"]))
    assert isinstance(fq, np.ndarray), fq
    ref = nir_paper.run("reference", read_graph(PAPER / c["file"]), c)
    return fq.reshape(ref.q.shape), ref.q


@needs_paper
@pytest.mark.parametrize("convention", ["sinabs", "sinabs+single-spike", "sinabs+single-spike+no-floor"])
def test_sinabs_own_import_of_the_paper_cnn_equals_the_reference(convention: str) -> None:
    """Sinabs' from_nir (multi-spike, floor at -v_th; and the SingleSpike / no-floor variants a
    Speck user builds) gives the same output spike counts as the reference with the convention."""
    own, ours = own_and_ours(case(convention))
    assert ours.sum() > 0  # the CNN fires on these frames: equality is not of two silences
    np.testing.assert_array_equal(own, ours)


@needs_paper
def test_norse_own_import_of_lif_norse_fires_as_the_reference() -> None:
    own, ours = own_and_ours(case("norse"))
    assert own.sum() == 357  # the interop audit's count with Norse 1.1 on the same 32 levels
    np.testing.assert_array_equal(own, ours)


@needs_paper
def test_the_frameworks_differ_from_a_wrong_reading() -> None:
    """The comparison can fail: Sinabs multi-spike against the single-spike reading differs."""
    own = own_run("sinabs")
    single = nir_paper.run("reference", read_graph(PAPER / "cnn_sinabs.nir"), case("sinabs+single-spike"))
    assert not np.array_equal(np.asarray(own).reshape(single.q.shape), single.q)


@needs_paper
@pytest.mark.parametrize("convention", ["snntorch+no-delay", "snntorch-zero+no-delay"])
def test_snntorch_own_neurons_on_the_braille_nets_equal_the_reference(convention: str) -> None:
    """snnTorch 1.0's Synaptic and RSynaptic (reset_delay=False) on the NIR paper's Braille nets: its
    RSynaptic resets one step late whatever reset_delay says, its zero reset drops the next charge
    (exporters.conventions.snntorch_reset); the reference with the convention fires as they do."""
    own, ours = own_and_ours(case(convention, n=4))
    assert ours.sum() > 0
    np.testing.assert_array_equal(own, ours)


@pytest.mark.parametrize("delay", [False, True], ids=["no-delay", "delay"])
@pytest.mark.parametrize("zero", [False, True], ids=["subtract", "zero"])
@pytest.mark.parametrize("alpha", [None, 0.75], ids=["RLeaky+Leaky", "RSynaptic+Synaptic"])
def test_snntorch_own_neurons_on_small_recurrent_nets_equal_the_reference(tmp_path: Path, alpha: float | None,
                                                                          zero: bool, delay: bool) -> None:
    """Each snnTorch 1.0 layer class (a recurrent layer, then a plain one; biased recurrent Affine)
    with each reset mechanism and reset_delay, run by snnTorch itself on spike trains strong enough
    that membranes stay above threshold after a subtraction: equal spike counts."""
    from test_recurrent import rsynaptic_graph

    import nir

    T = 24
    graph, _ = rsynaptic_graph(alpha, 0.85, bias=True)
    nir.write(tmp_path / "net.nir", graph)
    spikes = (np.random.default_rng(2).random((T, 8, 5)) < 0.5).astype(np.float64) * 2.0
    convention = ("snntorch-zero" if zero else "snntorch") + ("" if delay else "+no-delay")
    c = dict(file="net.nir", convention=convention, opts=dict(time_steps=T), obs=np.zeros((8, 5)), spikes=spikes,
             framework=["snntorch", "--reset", "zero" if zero else "subtract", *(["--reset-delay"] if delay else [])])
    own = nir_paper.framework_q(c, tmp_path, nir_paper.FRAMEWORKS_DIR)
    assert isinstance(own, np.ndarray), own
    ref = nir_paper.run("reference", read_graph(tmp_path / "net.nir"), c)
    assert ref.q.sum() > 0
    np.testing.assert_array_equal(own.reshape(ref.q.shape), ref.q)

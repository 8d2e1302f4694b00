"""``--target lava-fixed``: the quantiser's arithmetic exactly, the Lava fixed_pt models against an
independent integer model of the documented scheme (bit for bit), a loose agreement with the
reference on a CartPole-sized net, the Loihi 2 core count, and the out-of-range errors."""

from __future__ import annotations

import json
import math
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pytest

try:
    version("lava-nc")
except PackageNotFoundError:
    pytest.skip("lava-nc not installed (scripts/install.sh with EXTRAS=all or lava)", allow_module_level=True)

from backends.lava.backend import LavaBackend  # noqa: E402
from backends.lava.lowering import lower  # noqa: E402
from backends.lava.quantize import (LOIHI2, STATE_MAX, WEIGHT_MANT, decay, loihi2_resources,  # noqa: E402
                                    quantize_layout, shift)
from backends.reference import ReferenceBackend  # noqa: E402
from exporters.canonical import build_plan  # noqa: E402
from exporters.inspect_nir import main as inspect_main  # noqa: E402
from exporters.nirio import write_graph  # noqa: E402
from exporters.to_nir import model_to_nir  # noqa: E402
from exporters.zoo import cartpole_obs, make_checkpoint  # noqa: E402
from pipeline.errors import UserError  # noqa: E402

pytestmark = pytest.mark.timeout(120)
FIXTURES = Path(__file__).parent / "fixtures" / "thirdparty"


def small_plan(kind: str, gain: float = 8.0, hidden=(24, 24), T: int = 8, seed: int = 1):
    return build_plan(model_to_nir(make_checkpoint(kind, seed=seed, hidden=hidden, time_steps=T, gain=gain)))


# ---------------------------------------------------------------- the quantiser, exactly


def test_integer_primitives() -> None:
    assert decay(np.array([5, -5, 7, 4096]), np.array(2048)).tolist() == [2, -2, 3, 2048]  # toward zero
    assert decay(np.array([1000]), np.array(0)).tolist() == [1000]
    assert shift(np.array([-3, 3]), -1).tolist() == [-2, 1]  # arithmetic right shift floors
    assert shift(np.array([-3, 3]), 2).tolist() == [-12, 12]


@pytest.mark.parametrize("kind", ["liu", "hahn", "chen", "lif_soft_rate"])
def test_quantised_parameters_obey_the_scheme(kind: str) -> None:
    plan = small_plan(kind, gain=3.0 if kind == "hahn" else 8.0)
    layout = lower(plan, fixed_point=True)
    quant = quantize_layout(layout, input_bound=4.0)
    for name, pop in layout.pops.items():
        fp = quant[name]
        assert fp.bound_lsb <= STATE_MAX + 1e-6  # the worst case fits the 24-bit state
        st = pop.step
        if st is not None and st.spiking:
            assert np.all(fp.threshold * fp.q == pytest.approx(st.v_th, rel=1e-15))  # exact integer threshold
            assert fp.threshold.min() >= 16
        if st is not None and st.tau is not None:
            assert np.all(fp.dv == round(4096 / st.tau))
            if st.tau == 2.0:
                assert np.all(fp.dv == 2048)
        for src, fmap in fp.maps.items():
            w = fmap.mant.toarray()
            assert WEIGHT_MANT[0] <= w.min() and w.max() <= WEIGHT_MANT[1] and -8 <= fmap.exp <= 7
            assert np.abs(w).max() >= 64  # the largest weight uses the 8-bit range (at least 7 bits)
            # W' = c * map: each weight is within half an LSB of its mantissa * 2**e * q
            if src == "<host>":
                real = pop.host_matrix.toarray()
            else:
                real = next(c.matrix for c in layout.conns if c.src == src and c.dst == name).toarray()
            real = fp.c[:, None] * real
            step = fp.q * 2.0 ** fmap.exp
            assert np.abs(w * step - real).max() <= step / 2 * (1 + 1e-9)
        bias = fp.bias_mant.astype(np.int64) << fp.bias_exp
        assert np.all(np.abs(fp.bias_mant) <= 4095) and np.all((fp.bias_exp >= 0) & (fp.bias_exp <= 7))
        assert np.array_equal(bias, fp.bias)


def test_weights_that_would_saturate_name_the_layer() -> None:
    plan = small_plan("liu", gain=1e5)
    with pytest.raises(UserError, match=r"node 'l0_lif': out of the fixed-point range: weights would sat"):
        LavaBackend(plan, precision="fixed_pt")  # refused before Lava starts


def test_state_overflow_risk_names_the_layer() -> None:
    # IF neurons integrate for T steps: at T = 10**6 the worst-case state needs more than 24 bits
    graph = model_to_nir(make_checkpoint("hahn", seed=1, hidden=(24, 24)))
    plan = build_plan(graph, time_steps=10**6)
    with pytest.raises(UserError, match=r"node 'l0_spike': out of the fixed-point range: state could over"):
        quantize_layout(lower(plan, fixed_point=True), input_bound=4.0)


def test_multi_spike_is_refused_in_fixed_point() -> None:
    path = FIXTURES / "sinabs.nir"
    if not path.is_file():
        pytest.skip("no sinabs fixture")
    from exporters.nirio import read_graph

    plan = build_plan(read_graph(path), convention="sinabs", time_steps=4)
    with pytest.raises(UserError, match="multi-spike"):
        quantize_layout(lower(plan, fixed_point=True))


# ---------------------------------------------------------------- the Lava fixed_pt models, bit for bit


def golden(backend: LavaBackend, obs: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The documented integer scheme, layer-synchronous, written independently of the Lava models."""
    lay, quant, T, sem = backend.layout, backend.quant, backend.T, backend.sem
    counts = {n: np.zeros((len(obs), p.n), np.int64) for n, p in lay.pops.items() if p.spiking}
    qs = []
    for i, x in enumerate(obs.reshape(len(obs), -1).astype(np.float64)):
        v = {n: quant[n].v_init.copy() for n, p in lay.pops.items() if p.kind == "neuron"}
        stat = None
        for t in range(T):
            out = {}
            for name, pop in lay.pops.items():
                fp = quant[name]
                cur = fp.bias_mant * 2 ** fp.bias_exp
                for src, m in fp.maps.items():
                    if src == "<host>":
                        cur = cur + np.round(m.mant @ x * 2.0 ** m.exp).astype(np.int64)
                    else:
                        acc = m.mant @ out[src]
                        cur = cur + (acc * 2 ** m.exp if m.exp >= 0 else acc // 2 ** -m.exp)
                if pop.kind == "identity":
                    y = out[name] = cur
                else:
                    st = pop.step
                    u = v[name]
                    if fp.dv is not None:
                        u = np.trunc(u * (4096 - fp.dv) / 4096).astype(np.int64)
                    u = np.clip(u + cur, -STATE_MAX, STATE_MAX)
                    if not st.spiking:
                        v[name] = y = out[name] = u
                    else:
                        s = (u >= fp.threshold).astype(np.int64)
                        v[name] = np.where(s > 0, fp.v_reset, u) if st.reset == "hard" else u - fp.v_sub * s
                        y = out[name] = s
                        counts[name][i] += s
                if name == lay.readout_pop:
                    stat = y if t == 0 or sem.reduce == "last" else (
                        np.maximum(stat, y) if sem.reduce == "max" else stat + y)
        rp = lay.pops[lay.readout_pop]
        val = stat * (1 if rp.spiking else quant[rp.name].q)
        val = val / T if sem.reduce == "mean" else val
        qs.append(val)
    return np.array(qs), counts


@pytest.mark.parametrize("kind, gain", [("liu", 8.0), ("hahn", 3.0), ("chen", 8.0), ("lif_soft_rate", 8.0)])
def test_fixed_models_equal_the_integer_scheme(kind: str, gain: float) -> None:
    plan = small_plan(kind, gain=gain)
    obs = cartpole_obs(12, seed=6).numpy()
    backend = LavaBackend(plan, precision="fixed_pt", batch_size=5)
    try:
        got = backend.run(obs)
    finally:
        backend.close()
    q, counts = golden(backend, obs)
    for name, c in counts.items():
        assert c.sum() > 0, f"{name} never spiked"
        assert np.array_equal(got.spikes[name].reshape(len(obs), -1), c), name
    assert np.allclose(got.q, q, rtol=0, atol=1e-12 * max(1.0, np.abs(q).max()))
    assert sum(backend.saturated.values()) == 0


def test_cartpole_sized_agreement_is_close() -> None:
    plan = small_plan("liu", gain=3.0, hidden=(128, 128), T=16, seed=3)
    obs = cartpole_obs(120, seed=9).numpy()
    ref = ReferenceBackend(plan, dtype="float64").run(obs)
    backend = LavaBackend(plan, precision="fixed_pt", batch_size=40)
    try:
        got = backend.run(obs)
    finally:
        backend.close()
    agreement = float((got.action == ref.action).mean())
    rel = float(np.abs(got.q - ref.q).max() / np.abs(ref.q).max())
    spikes = {k: (int(got.spikes[k].sum()), int(v.sum())) for k, v in ref.spikes.items()}
    print(f"lava-fixed vs reference: agreement {agreement:.3f}, max |dQ|/max|Q| {rel:.3g}, spikes {spikes}")
    assert agreement >= 0.9 and rel <= 0.5
    for fixed, real in spikes.values():
        assert abs(fixed - real) <= 0.02 * real


# ---------------------------------------------------------------- Loihi 2 resources and inspect-nir


def test_core_count_by_hand() -> None:
    ckpt = make_checkpoint("liu", arch="nature_cnn", obs_shape=(4, 36, 36), n_actions=4, time_steps=4, seed=2)
    layout = lower(build_plan(model_to_nir(ckpt)))
    res = loihi2_resources(layout)
    rows = {r["name"]: r for r in res["layers"]}
    # conv 2 (k4 s2, 32 input channels, no padding): every neuron has fan-in 4*4*32 = 512, so a
    # core holds 131072 // 512 = 256 neurons (under the 8192 limit)
    l1 = rows["l1_lif"]
    assert l1["max_fan_in"] == 512 and l1["synapses"] == 512 * l1["neurons"]
    assert l1["cores"] == math.ceil(l1["neurons"] / (LOIHI2["synapses_per_core"] // 512))
    assert res["total_cores"] == sum(r["cores"] for r in res["layers"]) and res["chips"] == 1


def test_inspect_nir_target_lava(tmp_path: Path, capsys) -> None:
    path = tmp_path / "g.nir"
    write_graph(model_to_nir(make_checkpoint("liu", seed=1, hidden=(24, 24))), path)
    assert inspect_main([str(path), "--target", "lava", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)["lava"]
    names = [r["name"] for r in info["layers"]]
    assert names == ["l0_lif", "l1_lif", "head"]
    assert all(r["cores"] == 1 and 0 < r["weight_err_rel_rms"] < 0.05 for r in info["layers"])
    assert info["totals"]["period"] == info["totals"]["time_steps"] + 2
    assert "synapses_per_core" in info["sources"]

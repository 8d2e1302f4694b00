"""benchmarks/energy.py: fan-out, SOPs, MACs and energy on tiny graphs with hand-computed counts."""

from __future__ import annotations

import json

import nir
import numpy as np
import pytest
import torch

from backends.base import Readout
from benchmarks import energy as E
from exporters.canonical import build_plan
from exporters.to_nir import model_to_nir
from exporters.zoo import make_checkpoint
from pipeline.checkpoint import save_checkpoint
from pipeline.encoding import encode


# ---------------------------------------------------------------- tiny hand-made graphs


def _if(shape):
    return nir.IF(r=np.full(shape, 1e4), v_threshold=np.ones(shape), v_reset=np.zeros(shape))


def _conv_out(n, k, s, p):
    return (n + 2 * p - k) // s + 1


def conv_graph(c_in=2, h=4, w=4, c_out=3, k=3, stride=1, pad=1, groups=1, pool=None, avg=False):
    """input -> IF -> [SumPool] -> Conv2d -> IF -> Flatten -> Affine(2) -> Output (T=4)."""
    nodes = {"input": nir.Input(input_type={"input": np.array([c_in, h, w])}), "if0": _if((c_in, h, w))}
    edges = [("input", "if0")]
    last, hh, ww = "if0", h, w
    if pool is not None:
        pk, ps = pool
        nodes["pool"] = (nir.AvgPool2d if avg else nir.SumPool2d)(kernel_size=np.array([pk, pk]), stride=np.array([ps, ps]),
                                      padding=np.array([0, 0]))
        edges.append((last, "pool"))
        last, hh, ww = "pool", _conv_out(h, pk, ps, 0), _conv_out(w, pk, ps, 0)
    nodes["conv"] = nir.Conv2d(input_shape=(hh, ww), weight=np.random.default_rng(0).normal(
        size=(c_out, c_in // groups, k, k)), stride=stride, padding=pad, dilation=1, groups=groups,
        bias=np.zeros(c_out))
    edges.append((last, "conv"))
    out = (c_out, _conv_out(hh, k, stride, pad), _conv_out(ww, k, stride, pad))
    n = int(np.prod(out))
    nodes.update({
        "if1": _if(out),
        "flat": nir.Flatten(input_type={"input": np.array(out)}, start_dim=0, end_dim=-1),
        "fc": nir.Affine(weight=np.ones((2, n)), bias=np.array([0.5, 0.0])),
        "output": nir.Output(output_type={"output": np.array([2])}),
    })
    edges += [("conv", "if1"), ("if1", "flat"), ("flat", "fc"), ("fc", "output")]
    graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata={}, type_check=False)
    return build_plan(graph, time_steps=4)


def conv_fanout_oracle(c_in, h, w, c_out, k, s, p, groups=1):
    """Brute force: count (out channel, out position, kernel tap) paths reaching each input."""
    ho, wo = _conv_out(h, k, s, p), _conv_out(w, k, s, p)
    f = np.zeros((c_in, h, w), dtype=np.int64)
    per_group_in, per_group_out = c_in // groups, c_out // groups
    for o in range(c_out):
        g = o // per_group_out
        for y in range(ho):
            for x in range(wo):
                for ky in range(k):
                    for kx in range(k):
                        i, j = y * s - p + ky, x * s - p + kx
                        if 0 <= i < h and 0 <= j < w:
                            f[g * per_group_in:(g + 1) * per_group_in, i, j] += 1
    return f


def test_conv_fanout_borders_by_hand():
    plan = conv_graph(c_in=2, h=4, w=4, c_out=3, k=3, stride=1, pad=1)
    f = E.fanout_per_neuron(plan)
    # a 3x3 window with padding 1 on 4 rows: rows 0 and 3 are covered by 2 outputs, rows 1-2 by 3
    rows = np.array([2, 3, 3, 2])
    np.testing.assert_array_equal(f["if0"][0], 3 * np.outer(rows, rows))
    np.testing.assert_array_equal(f["if0"][1], 3 * np.outer(rows, rows))
    assert f["if0"][0, 0, 0] == 12 and f["if0"][0, 0, 1] == 18 and f["if0"][0, 1, 1] == 27
    # the second layer drives the 2-output head through Flatten: 2 each
    assert f["if1"].shape == (3, 4, 4) and np.all(f["if1"] == 2)


@pytest.mark.parametrize("cfg", [
    dict(c_in=1, h=5, w=5, c_out=2, k=3, s=2, p=0),
    dict(c_in=2, h=6, w=5, c_out=4, k=3, s=2, p=1),
    dict(c_in=4, h=5, w=5, c_out=2, k=2, s=1, p=0, groups=2),
])
def test_conv_fanout_matches_brute_force(cfg):
    plan = conv_graph(c_in=cfg["c_in"], h=cfg["h"], w=cfg["w"], c_out=cfg["c_out"], k=cfg["k"],
                      stride=cfg["s"], pad=cfg["p"], groups=cfg.get("groups", 1))
    np.testing.assert_array_equal(E.fanout_per_neuron(plan)["if0"], conv_fanout_oracle(**cfg))


def test_stride_two_rows_by_hand():
    # k=3, stride 2, no padding on 5 rows: outputs cover rows {0,1,2} and {2,3,4}
    plan = conv_graph(c_in=1, h=5, w=5, c_out=2, k=3, stride=2, pad=0)
    rows = np.array([1, 1, 2, 1, 1])
    np.testing.assert_array_equal(E.fanout_per_neuron(plan)["if0"][0], 2 * np.outer(rows, rows))


def test_pool_then_conv_chain():
    # 2x2 sum pool, stride 2, then a 1x1 conv to 3 channels: 1 pooling op + 3 synapses per spike
    plan = conv_graph(c_in=1, h=4, w=4, c_out=3, k=1, stride=1, pad=0, pool=(2, 2))
    assert np.all(E.fanout_per_neuron(plan)["if0"] == 4)
    # overlapping 3x3 pool, stride 1, on 4x4: rows covered by [1, 2, 2, 1] windows
    plan = conv_graph(c_in=1, h=4, w=4, c_out=3, k=1, stride=1, pad=0, pool=(3, 1))
    rows = np.array([1, 2, 2, 1])
    np.testing.assert_array_equal(E.fanout_per_neuron(plan)["if0"][0], 4 * np.outer(rows, rows))
    # average pooling has the same connectivity: one operation per window entered
    plan = conv_graph(c_in=1, h=4, w=4, c_out=3, k=1, stride=1, pad=0, pool=(3, 1), avg=True)
    np.testing.assert_array_equal(E.fanout_per_neuron(plan)["if0"][0], 4 * np.outer(rows, rows))
    # 4 windows of 9 adds, plus the head's one non-zero bias; the average is one multiply per window
    assert E.ann_macs(plan).adds == 4 * 9 + 1 and E.ann_macs(plan).per_layer["pool"] == 4


def test_sops_from_hand_spikes_and_missing_layer():
    plan = conv_graph(c_in=1, h=4, w=4, c_out=3, k=3, stride=1, pad=1)
    s0 = np.zeros((2, 1, 4, 4), np.int64)
    s0[0, 0, 0, 0] = 2  # corner: fan-out 3*2*2 = 12 -> 24
    s0[1, 0, 1, 1] = 1  # interior: 3*3*3 = 27
    s1 = np.zeros((2, 3, 4, 4), np.int64)
    s1[0, 2, 3, 3] = 5  # head fan-out 2 -> 10
    ro = Readout(q=np.zeros((2, 2)), action=np.zeros(2, np.int64), spikes={"if0": s0, "if1": s1})
    work = E.sops_per_observation(plan, ro)
    assert work.sops == {"if0": (24 + 27) / 2, "if1": 10 / 2}
    assert work.spikes == {"if0": 1.5, "if1": 2.5}
    assert work.total_sops == pytest.approx(30.5)
    # current encoding, input -> IF directly: no input MACs; the IF gets the observation each
    # step (16 neurons * T=4) and the head's non-zero bias (1 output * T=4)
    assert work.input_macs == 0 and work.bias_acs == 4 * 16 + 4 * 1
    with pytest.raises(KeyError, match="if1"):
        E.sops_per_observation(plan, Readout(q=np.zeros((2, 2)), action=np.zeros(2, np.int64),
                                             spikes={"if0": s0}))


# ---------------------------------------------------------------- exported models


def _plan(kind, **kw):
    return build_plan(model_to_nir(make_checkpoint(kind, **kw)))


def test_mlp_counts_ann_macs_and_bias():
    plan = _plan("liu", hidden=(5, 3))  # 4-5-3-2, LIF, T=16, rate readout
    f = E.fanout_per_neuron(plan)
    assert {k: v.tolist() for k, v in f.items()} == {"l0_lif": [3] * 5, "l1_lif": [2] * 3}
    assert E.input_fanout(plan).tolist() == [5] * 4
    ann = E.ann_macs(plan)
    assert ann.per_layer == {"l0_fc": 20, "l1_fc": 15, "head": 6} and ann.macs == 41 and ann.adds == 10
    ro = Readout(q=np.zeros((1, 2)), action=np.zeros(1, np.int64),
                 spikes={"l0_lif": np.array([[1, 0, 2, 0, 4]]), "l1_lif": np.array([[0, 3, 1]])})
    work = E.sops_per_observation(plan, ro)
    assert work.sops == {"l0_lif": 21.0, "l1_lif": 8.0}
    assert work.input_macs == 20 and work.dense_macs == 0
    assert work.bias_acs == 16 * (5 + 3 + 2)
    assert E.snn_energy_pj(work) == pytest.approx((29 + 160) * 0.9 + 20 * 4.6)
    assert E.ann_energy_pj(ann) == pytest.approx(41 * 4.6 + 10 * 0.9)


def test_dqn_graph_dense_work_equals_ann_macs():
    plan = _plan("dqn", hidden=(5, 3))
    work = E.sops_per_observation(plan, Readout(q=np.zeros((1, 2)), action=np.zeros(1, np.int64)))
    assert work.sops == {} and work.input_macs == 20 and work.dense_macs == 15 + 6
    assert work.input_macs + work.dense_macs == E.ann_macs(plan).macs


def test_regular_input_events_exact():
    plan = _plan("regular", hidden=(5, 3), time_steps=8)
    obs = np.array([[0.5, -0.25, 1.0, 0.0]], np.float32)
    ro = Readout(q=np.zeros((1, 2)), action=np.zeros(1, np.int64),
                 spikes={"l0_lif": np.zeros((1, 5), np.int64), "l1_lif": np.zeros((1, 3), np.int64)})
    work = E.sops_per_observation(plan, ro, obs=obs)
    # rates 0.5, 0.25, 1, 0 over 8 steps: 4 + 2 + 8 + 0 spikes, each to 5 neurons
    assert work.input_spikes == 14 and work.input_sops == 70 and work.total_sops == 70
    assert work.input_macs == 0 and work.bias_acs == 8 * (5 + 3 + 2)
    assert work.input_spikes_source.startswith("regular")
    given = E.sops_per_observation(plan, ro, input_spikes=np.array([[1, -2, 0, 3]]))
    assert given.input_sops == 6 * 5 and given.input_spikes_source == "given"
    unknown = E.sops_per_observation(plan, ro)
    assert unknown.input_sops is None and unknown.total_sops is None and E.snn_energy_pj(unknown) is None


def test_poisson_row_uses_the_backends_trains():
    plan = _plan("poisson", hidden=(5, 3), time_steps=8)
    obs = np.random.default_rng(1).uniform(-1, 1, size=(6, 4)).astype(np.float32)
    row = E.energy_rows([("p", plan, obs)])[0]
    gen = torch.Generator().manual_seed(plan.semantics.encoding_seed)
    trains = encode(torch.as_tensor(obs), 8, "poisson", gen).numpy()
    assert row.input_spikes_source == "given"
    assert row.input_sops == pytest.approx(np.abs(trains).sum() / 6 * 5)
    expected = E.sops_per_observation(plan, Readout(q=np.zeros((6, 2)), action=np.zeros(6, np.int64),
                                                    spikes={"l0_lif": np.zeros((6, 5), np.int64),
                                                            "l1_lif": np.zeros((6, 3), np.int64)}), obs=obs)
    assert expected.input_spikes_source.startswith("poisson")
    assert expected.input_spikes == pytest.approx((8 * np.minimum(np.abs(obs), 1)).sum() / 6)


def test_rows_from_reference_run():
    ckpt_plan = _plan("liu", hidden=(6, 4))
    obs = torch.rand(20, 4).numpy() * 2 - 1
    snn, dqn = E.energy_rows([("snn", ckpt_plan, obs), ("dqn", _plan("dqn", hidden=(6, 4)), obs)])
    # SOPs recomputed by hand from the reference backend's counts: widths of the next layers
    from backends.reference import ReferenceBackend

    ro = ReferenceBackend(ckpt_plan).run(obs)
    hand = (ro.spikes["l0_lif"].sum() * 4 + ro.spikes["l1_lif"].sum() * 2) / 20
    assert snn.sops == pytest.approx(hand) and snn.sops > 0
    assert snn.model_kind == "dsqn" and snn.time_steps == 16 and snn.n_obs == 20
    assert snn.dqn_macs == 4 * 6 + 6 * 4 + 4 * 2 == dqn.dqn_macs
    assert snn.snn_over_dqn == pytest.approx(snn.energy_snn_pj / snn.energy_dqn_pj)
    assert snn.hardware_pj["loihi"] == pytest.approx(hand * 23.6)
    assert snn.hardware_pj["loihi2"] is None
    assert dqn.model_kind == "dqn" and dqn.energy_snn_pj is None and dqn.sops is None
    assert dqn.energy_dqn_pj == pytest.approx(56 * 4.6 + (6 + 4 + 2) * 0.9)
    # a Readout from any backend gives the same row
    again = E.energy_rows([E.EnergyCase("snn", ckpt_plan, ro)])[0]
    assert again.sops == snn.sops and again.spikes_per_layer == snn.spikes_per_layer


def test_nature_cnn_fanout_separable_formula():
    plan = _plan("liu", arch="nature_cnn", obs_shape=(4, 84, 84), n_actions=6)
    f = E.fanout_per_neuron(plan)

    def rows(n, k, s):
        out = _conv_out(n, k, s, 0)
        return np.array([sum(0 <= i - y * s < k for y in range(out)) for i in range(n)])

    # conv1 (8x8/4, 32 ch) -> 20x20 LIF -> conv2 (4x4/2, 64 ch) -> 9x9 -> conv3 (3x3/1, 64 ch)
    r2, r3 = rows(20, 4, 2), rows(9, 3, 1)
    first, second = sorted(f)[:2]
    np.testing.assert_array_equal(f[first][0], 64 * np.outer(r2, r2))
    np.testing.assert_array_equal(f[second][5], 64 * np.outer(r3, r3))
    ann = E.ann_macs(plan)
    assert ann.per_layer["l0_conv"] == 32 * 20 * 20 * 4 * 8 * 8


def test_figures_are_sourced_and_unconfirmed_ones_have_no_value():
    assert E.HOROWITZ_45NM_FP32.e_mac_pj == pytest.approx(4.6) and E.HOROWITZ_45NM_FP32.e_ac_pj == 0.9
    names = {h.name for h in E.HARDWARE}
    assert {"loihi", "loihi2", "spinnaker1"} <= names
    for h in E.HARDWARE:
        assert h.source and h.verified
        if h.verified.startswith("not confirmed"):
            assert h.pj_per_sop is None


def test_cli_json(tmp_path, capsys):
    ck = tmp_path / "tiny.pt"
    save_checkpoint(make_checkpoint("hahn", hidden=(6, 4), time_steps=5), ck)
    obs = tmp_path / "obs.npy"
    np.save(obs, np.random.default_rng(0).uniform(-1, 1, (7, 4)).astype(np.float32))
    out = tmp_path / "e.json"
    assert E.main([str(ck), "--obs-file", str(obs), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["rows"][0]["n_obs"] == 7 and data["rows"][0]["time_steps"] == 5
    assert data["energy_model"]["source"].startswith("M. Horowitz")
    assert "tiny.pt" in capsys.readouterr().out


def test_record_observations_greedy(tmp_path):
    ck = tmp_path / "dqn.pt"
    save_checkpoint(make_checkpoint("dqn", hidden=(8, 8)), ck)
    obs = E.record_observations(ck, 30, seed=3)
    assert obs.shape == (30, 4) and obs.dtype == np.float32
    assert np.all(np.abs(obs[:, 0]) < 2.5)  # CartPole positions


def test_a_loop_edge_drives_synapses_too() -> None:
    """A recurrent layer's spikes drive its loop's synapses (one step later) as well as the next
    layer's: fan-out 24 (loop) + 24 (next layer) for the first layer, 24 + 2 (head) for the last."""
    from exporters.zoo import recurrent_graph

    plan = build_plan(recurrent_graph(seed=1, hidden=(24, 24), time_steps=8))
    fan = E.fanout_per_neuron(plan)
    assert fan["lif0"].tolist() == [48] * 24 and fan["lif1"].tolist() == [26] * 24

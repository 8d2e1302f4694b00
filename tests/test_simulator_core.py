"""The shared core of the delayed-spike simulators (backends/common) and the Plan's readout tail,
checked without any simulator: the sparse maps against the reference's torch calls, the
count shortcut of the rate readout, and the tail on recorded trains against the reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from backends.common.layout import layout
from backends.common.readout import Recorded, add_spikes, q_values, spike_counts
from backends.common.sparse import synapse_matrix
from backends.lava import lowering
from backends.reference import ReferenceBackend
from backends.reference.ops import apply_synapse, per_step, run_neuron
from exporters.plan.build import build_plan
from exporters.plan.ir import Op
from exporters.plan.readout import summed, tensor_params
from exporters.to_nir import model_to_nir
from exporters.zoo import cartpole_obs, make_checkpoint


def _conv_ops() -> list[Op]:
    rng = np.random.default_rng(0)
    ops = []
    for cin, groups, k, stride, pad, dil in itertools.product(
            [2, 4], [1, 2], [(1, 1), (3, 3), (2, 3)], [(1, 1), (2, 2)], [(0, 0), (1, 2), "same", "valid"],
            [(1, 1), (2, 1)]):
        if pad == "same" and stride != (1, 1):
            continue
        w = rng.normal(size=(4, cin // groups, *k))
        w[rng.random(w.shape) < 0.3] = 0.0
        x = torch.zeros(1, cin, 9, 8)
        y = torch.nn.functional.conv2d(x, torch.as_tensor(w, dtype=torch.float32), stride=stride, padding=pad,
                                       dilation=dil, groups=groups)
        ops.append(Op("c", "conv2d", "Conv2d", ["x"], (cin, 9, 8), tuple(y.shape[1:]),
                      {"weight": w, "bias": rng.normal(size=4), "stride": stride, "padding": pad,
                       "dilation": dil, "groups": groups}))
    for kind, k, stride, pad in itertools.product(["sumpool2d", "avgpool2d"], [(2, 2), (3, 2)], [(1, 1), (2, 2)],
                                                  [(0, 0), (1, 1)]):
        y = torch.nn.functional.avg_pool2d(torch.zeros(1, 3, 9, 8), k, stride, pad)
        ops.append(Op("p", kind, "Pool", ["x"], (3, 9, 8), tuple(y.shape[1:]),
                      {"kernel_size": k, "stride": stride, "padding": pad}))
    return ops


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_sparse_maps_compute_the_reference_ops() -> None:
    """NEST's and Lava's matrices are the same map, and it is the reference's conv/pool."""
    x = torch.as_tensor(np.random.default_rng(1).normal(size=(9 * 8 * 4,)))
    for op in _conv_ops():
        a, b = synapse_matrix(op)
        m, bias = lowering.synapse_matrix(op)
        assert (a != m).nnz == 0
        xi = x[: int(np.prod(op.in_shape))]
        want = apply_synapse(op, xi.reshape(1, *op.in_shape), tensor_params(op)).reshape(-1).numpy()
        got = a @ xi.numpy() + (0.0 if b is None else b)
        assert np.allclose(got, want, rtol=1e-12, atol=1e-12), (op.kind, op.params.get("padding"))
        if bias is None:
            assert b is None
        else:  # NEST drops an all-zero conv bias, Lava keeps it
            assert np.array_equal(np.zeros_like(bias) if b is None else b, bias)


def test_count_over_T_is_the_mean_of_the_train() -> None:
    """The rate readout takes count / T instead of the mean of the 0/1 train: the same double
    for every count and T (the sum is an exact integer either way)."""
    for T in range(1, 300):
        counts = np.arange(T + 1)
        trains = (np.arange(T)[:, None] < counts[None, :]).astype(np.float64)
        assert np.array_equal(torch.as_tensor(trains).mean(dim=0).numpy(), counts / T)


@pytest.mark.parametrize("kind", ["liu", "chen", "hahn", "tan_converted"])
def test_readout_tail_on_recorded_trains_equals_the_reference(kind: str) -> None:
    """Windows recorded as a simulator would (spike events -> counts and trains, final
    membranes) give the reference's Q and actions through the shared tail, bit for bit."""
    plan = build_plan(model_to_nir(make_checkpoint(kind, seed=1, gain=6.0)))
    net = layout(plan, "test")
    obs = cartpole_obs(6, seed=3).numpy()
    reference = ReferenceBackend(plan, dtype="float64")
    ref = reference.run(obs)
    x = torch.as_tensor(obs).double()
    T = plan.semantics.time_steps
    values = {plan.input: x.unsqueeze(0)}
    recs = [Recorded(counts={}) for _ in range(len(obs))]
    for op in plan.ops:
        if op.kind in ("input", "output") or (op.name not in net.pops and op.name not in net.upstream):
            continue
        cur = summed(op.inputs, values, T)
        if op.name in net.upstream:
            values[op.name] = per_step(op, cur, tensor_params(op))
            continue
        out, v_final = run_neuron(op.neuron, cur, T, reference.params[op.name])
        values[op.name] = out
        for i, rec in enumerate(recs):
            series = out[:, i].reshape(T, -1).numpy()
            if op.spiking:
                steps, ids = np.nonzero(series)
                add_spikes(rec, op.name, ids, steps, series.shape[1], T, op.name in net.train_pops)
            if op.name in net.traced:
                rec.traces[op.name] = series
                rec.final_v[op.name] = v_final[i].reshape(-1).numpy()
    q, action = q_values(net, recs, x, None)
    assert np.array_equal(q, ref.q) and np.array_equal(action, ref.action)
    spikes = spike_counts(net, recs)
    assert spikes.keys() == ref.spikes.keys()
    assert all(np.array_equal(spikes[k], ref.spikes[k]) for k in spikes)

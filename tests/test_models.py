"""The torch models follow docs/DESIGN.md's time-step semantics exactly.

Each test compares the multi-step model with a slow, explicit per-step loop written straight
from docs/DESIGN.md (``naive_q``), so a change in the fast path that alters the arithmetic fails.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.encoding import encode
from pipeline.models import DQN, SpikingQNetwork, build_model, data_dependent_init, greedy_action
from pipeline.spec import MODEL_PRESETS, ModelSpec, NeuronParams


def mlp_spec(readout="rate", neuron=None, T=8, encoding="current", bias=True, hidden=(16, 12)):
    return ModelSpec(kind="dsqn", arch="mlp", obs_shape=(4,), n_actions=3, hidden=hidden, bias=bias,
                     neuron=neuron or NeuronParams(), time_steps=T, encoding=encoding,
                     readout=readout).validate()


def naive_q(model: SpikingQNetwork, obs: torch.Tensor, input_spikes: torch.Tensor | None = None):
    """docs/DESIGN.md, one step and one sample at a time, in float64."""
    spec, p = model.spec, model.spec.neuron
    lin = [st[-1] for st in model.layers]
    W = [(m.weight.double(), m.bias.double() if m.bias is not None else 0.0) for m in lin]
    Wo, bo = model.head.weight.double(), (model.head.bias.double() if model.head.bias is not None else 0.0)
    out = []
    for n in range(obs.shape[0]):
        x = obs[n].double()
        v = [torch.full((w.shape[0],), p.v_reset, dtype=torch.float64) for w, _ in W]
        v_out_start = 0.0 if spec.readout.startswith("membrane") else p.v_reset  # LI rests at 0
        v_out = torch.full((Wo.shape[0],), v_out_start, dtype=torch.float64)
        counts_last = torch.zeros(W[-1][0].shape[0], dtype=torch.float64)
        out_counts = torch.zeros(Wo.shape[0], dtype=torch.float64)
        trace = []
        for t in range(spec.time_steps):
            s = x if input_spikes is None else input_spikes[t, n].double()
            for li, (w, b) in enumerate(W):
                i = w @ s + b
                u = v[li] + (i - (v[li] - p.v_reset)) / p.tau if p.model == "lif" else v[li] + i
                s = (u >= p.v_th).double()
                v[li] = u * (1 - s) + p.v_reset * s if p.reset == "hard" else u - p.v_th * s
            counts_last += s
            i_out = Wo @ s + bo
            if spec.readout.startswith("membrane"):
                v_out = v_out + (i_out - v_out) / spec.tau_out
                trace.append(v_out.clone())
            elif spec.readout in ("voltage", "spike_count", "robust_rate"):
                u = v_out + (i_out - (v_out - p.v_reset)) / p.tau if p.model == "lif" else v_out + i_out
                if spec.readout == "voltage":
                    v_out = u
                else:
                    so = (u >= p.v_th).double()
                    out_counts += so
                    v_out = u * (1 - so) + p.v_reset * so if p.reset == "hard" else u - p.v_th * so
        T = spec.time_steps
        q = {
            "rate": lambda: Wo @ (counts_last / T) + bo,
            "membrane_max": lambda: torch.stack(trace).max(0).values,
            "membrane_mean": lambda: torch.stack(trace).mean(0),
            "membrane_last": lambda: trace[-1],
            "voltage": lambda: v_out,
            "spike_count": lambda: out_counts,
            "robust_rate": lambda: out_counts / T + v_out / (T * p.v_th),
        }[spec.readout]()
        out.append(q)
    return torch.stack(out)


def scaled_model(spec: ModelSpec, seed: int = 0, gain: float = 2.0) -> SpikingQNetwork:
    torch.manual_seed(seed)
    model = build_model(spec)
    with torch.no_grad():  # larger weights so that the network actually spikes
        for p in model.parameters():
            p.mul_(gain)
    return model.eval()


@pytest.mark.parametrize("readout", ["rate", "membrane_max", "membrane_mean", "membrane_last",
                                     "voltage", "spike_count", "robust_rate"])
@pytest.mark.parametrize("neuron", [NeuronParams(), NeuronParams("if", 1.0, 1.0, 0.0, "soft"),
                                    NeuronParams("lif", 3.0, 0.7, -0.2, "soft"),
                                    NeuronParams("if", 1.0, 0.5, 0.1, "hard")],
                         ids=["lif-hard", "if-soft", "lif-soft-vr", "if-hard-vr"])
def test_spiking_model_matches_step_semantics(readout, neuron):
    model = scaled_model(mlp_spec(readout=readout, neuron=neuron))
    obs = torch.randn(32, 4) * 2
    with torch.no_grad():
        q, spikes, _ = model.run(obs)
    expected = naive_q(model, obs)
    assert sum(float(s.sum()) for s in spikes) > 0, "test network must spike"
    torch.testing.assert_close(q.double(), expected, atol=2e-5, rtol=0)


@pytest.mark.parametrize("encoding", ["poisson", "regular"])
def test_spike_encodings_feed_first_layer(encoding):
    model = scaled_model(mlp_spec(encoding=encoding, T=12))
    obs = torch.rand(16, 4) * 2 - 1
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    with torch.no_grad():
        q = model(obs, generator=g1)
    spikes_in = encode(obs, 12, encoding, g2)
    torch.testing.assert_close(q.double(), naive_q(model, obs, spikes_in), atol=2e-5, rtol=0)


def test_regular_and_poisson_rates():
    x = torch.tensor([[0.0, 0.25, 0.5, 1.0, -0.5, 3.0]])
    reg = encode(x, 8, "regular")
    assert reg.sum(0).tolist() == [[0, 2, 4, 8, -4, 8]]
    assert reg[:, 0, 2].tolist() == [0, 1, 0, 1, 0, 1, 0, 1]  # evenly spaced
    g = torch.Generator().manual_seed(0)
    pois = encode(torch.full((1, 2000), 0.3), 50, "poisson", g)
    assert abs(float(pois.mean()) - 0.3) < 0.01
    again = encode(torch.full((1, 2000), 0.3), 50, "poisson", torch.Generator().manual_seed(0))
    assert torch.equal(pois, again)


def test_first_layer_current_computed_once():
    """Multi-step evaluation: with current input, layer 0 runs once per observation batch."""
    model = scaled_model(mlp_spec(T=16))
    calls = []
    model.layers[0].register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    model.layers[1].register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    with torch.no_grad():
        model(torch.randn(5, 4))
    assert calls == [(5, 4), (16 * 5, 16)]  # layer 1 sees one batch of T x B


def test_nature_cnn_shapes_and_dqn_forward():
    spec = ModelSpec(kind="dqn", arch="nature_cnn", obs_shape=(4, 84, 84), n_actions=6).validate()
    dqn = build_model(spec)
    assert isinstance(dqn, DQN)
    assert dqn(torch.zeros(2, 4, 84, 84)).shape == (2, 6)
    convs = [m for m in dqn.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (32, (8, 8), (4, 4)), (64, (4, 4), (2, 2)), (64, (3, 3), (1, 1))]
    assert dqn.layers[3][1].in_features == 3136 and dqn.layers[3][1].out_features == 512
    snn = build_model(spec.with_(kind="dsqn", neuron=NeuronParams(), time_steps=3))
    assert snn(torch.rand(2, 4, 84, 84)).shape == (2, 6)
    # the DQN's state_dict loads into its spiking twin (conversion relies on this)
    snn.load_state_dict(dqn.state_dict())


def test_chen_preset_has_no_bias_and_li_output():
    f = dict(MODEL_PRESETS["chen-dsqn"])
    spec = ModelSpec(arch="mlp", obs_shape=(4,), n_actions=2, time_steps=6, **f).validate()
    model = build_model(spec)
    assert all(not n.endswith("bias") for n, _ in model.named_parameters())
    assert spec.readout == "membrane_max" and spec.tau_out == 2.0


def test_surrogate_gradient_flows():
    model = build_model(mlp_spec(T=4))
    q = model(torch.randn(8, 4) * 3)
    q.sum().backward()
    grads = [p.grad for p in model.layers[0].parameters()]
    assert all(g is not None and float(g.abs().sum()) > 0 for g in grads)


def test_greedy_action_ties():
    q = torch.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    assert greedy_action(q).tolist() == [1, 0]
    tie = torch.tensor([[9.0, 0.1, 0.5], [0.0, 0.0, 0.0]])
    assert greedy_action(q, tie).tolist() == [2, 0]


def test_spec_roundtrip_and_validation():
    spec = mlp_spec(readout="robust_rate", neuron=NeuronParams("if", 1.0, 1.0, 0.0, "soft"))
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    from pipeline.errors import UserError

    with pytest.raises(UserError, match="valid choices"):
        spec.with_(readout="bogus")
    with pytest.raises(UserError, match="time steps"):
        spec.with_(time_steps=0)
    with pytest.raises(UserError, match="unknown model spec field"):
        ModelSpec.from_dict({**spec.to_dict(), "evil": 1})
    assert np.isfinite(spec.neuron.v_th)


def test_threshold_is_inclusive_and_resets_differ():
    """U == V_th spikes (>=); hard and soft reset differ exactly as docs/DESIGN.md says."""
    from pipeline.neurons import spiking_layer

    current = torch.full((6, 1), 0.5)
    s_if, v = spiking_layer(current, NeuronParams("if", 1.0, 1.0, 0.0, "soft"))
    assert s_if[:, 0].tolist() == [0, 1, 0, 1, 0, 1] and float(v) == 0.0
    current = torch.full((4, 1), 0.75)
    s_soft, v_soft = spiking_layer(current, NeuronParams("if", 1.0, 1.0, 0.0, "soft"))
    s_hard, v_hard = spiking_layer(current, NeuronParams("if", 1.0, 1.0, 0.0, "hard"))
    assert s_soft[:, 0].tolist() == [0, 1, 1, 1] and float(v_soft) == 0.0
    assert s_hard[:, 0].tolist() == [0, 1, 0, 1] and float(v_hard) == 0.0
    # LIF tau 2 from V_r 0 with I = 2: U = 0 + (2 - 0) / 2 = 1.0 -> spikes on the first step
    s_lif, _ = spiking_layer(torch.full((3, 1), 2.0), NeuronParams())
    assert s_lif[:, 0].tolist() == [1, 1, 1]


@pytest.mark.parametrize(
    "neuron, bias, encoding",
    [(NeuronParams(), True, "current"), (NeuronParams(), False, "current"),
     (NeuronParams("if", 1.0, 1.0, 0.0, "soft"), True, "regular")],
)
def test_data_dependent_init_reaches_the_target_rate(neuron, bias, encoding):
    """Deep SNNs start silent under the default init; the data-dependent init makes every hidden
    layer fire at the target rate on its sample and close to it on other data of the same kind."""
    torch.manual_seed(0)
    spec = mlp_spec(neuron=neuron, T=6, encoding=encoding, bias=bias, hidden=(64, 48, 32))
    model = build_model(spec)
    for layer in model.layers:  # a small default-like init: the deeper layers stay silent
        layer[-1].weight.data.mul_(0.1)
    sample, held_out = torch.rand(256, 4) * 0.8, torch.rand(256, 4) * 0.8
    before = [s.mean().item() for s in model.run(sample)[1]]
    assert before[-1] < 0.01
    rates = data_dependent_init(model, sample, 0.2)
    assert rates == pytest.approx([0.2] * 3, abs=0.01)
    with torch.no_grad():
        _, spikes, _ = model.run(sample)
        assert [s.mean().item() for s in spikes] == pytest.approx(rates, abs=2e-3)  # the model's own forward agrees (up to rounding at the threshold)
        _, spikes, _ = model.run(held_out)
    assert [s.mean().item() for s in spikes] == pytest.approx([0.2] * 3, abs=0.05)
    assert (model.head.bias is None) == (not bias) and model.spec == spec
    with pytest.raises(ValueError, match="target firing rate"):
        data_dependent_init(model, sample, 1.0)

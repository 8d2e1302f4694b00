"""DQN -> SNN conversion (issue 5): scale factors by hand, spiking rates against ReLU, agreement
at large T, NIR export equal to the torch model, one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from backends.reference import ReferenceBackend
from exporters.to_nir import model_to_nir
from exporters.zoo import cartpole_obs, make_checkpoint
from pipeline import neurons
from pipeline.calibration import (
    EVAL_SEED_OFFSET,
    ObservationSet,
    TailPercentile,
    activation_stats,
    collect_observations,
)
from pipeline.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from pipeline.convert import (
    ConversionSettings,
    build_converted,
    check_convertible,
    conversion_rate,
    main as convert_main,
    normalised_state_dict,
    q_in_dqn_units,
    scale_factors,
)
from pipeline.encoding import encode
from pipeline.errors import UserError
from pipeline.models import DQN, build_model, greedy_action
from pipeline.spec import ModelSpec, NeuronParams, Preprocessing


# --- helpers ------------------------------------------------------------------------------------


def toy_checkpoint() -> Checkpoint:
    """2 inputs -> 2 -> 2 -> 2 actions with hand-picked weights (numbers worked out below)."""
    spec = ModelSpec(kind="dqn", arch="mlp", obs_shape=(2,), n_actions=2, hidden=(2, 2)).validate()
    model = build_model(spec)
    sd = {
        "layers.0.0.weight": torch.tensor([[1.0, 0.0], [0.0, 2.0]]),
        "layers.0.0.bias": torch.tensor([0.0, 0.5]),
        "layers.1.0.weight": torch.tensor([[1.0, -1.0], [0.5, 0.5]]),
        "layers.1.0.bias": torch.tensor([0.0, 0.0]),
        "head.weight": torch.tensor([[1.0, 0.0], [0.0, -1.0]]),
        "head.bias": torch.tensor([0.1, 0.0]),
    }
    model.load_state_dict(sd)
    return Checkpoint(spec=spec, state_dict=model.state_dict(), env_id="CartPole-v1")


TOY_OBS = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [-1.0, -1.0]], dtype=np.float32)


def settings(**kw) -> ConversionSettings:
    return ConversionSettings(**kw).validate()


def random_dqn(seed: int = 1) -> tuple[Checkpoint, DQN, ObservationSet, ObservationSet]:
    """A random 4-32-32-2 DQN with CartPole-shaped calibration and held-out observations."""
    ckpt = make_checkpoint("dqn", hidden=(32, 32), seed=seed)
    dqn = check_convertible(ckpt)
    cal = ObservationSet(cartpole_obs(2000, seed=10).numpy(), raw=False)
    held = ObservationSet(cartpole_obs(500, seed=11).numpy(), raw=False)
    return ckpt, dqn, cal, held


def convert_random(s: ConversionSettings, seed: int = 1):
    ckpt, dqn, cal, held = random_dqn(seed)
    stats = activation_stats(dqn, cal, ckpt.preprocessing, s.percentile)
    scales = scale_factors(dqn, stats, s)
    return ckpt, dqn, held, scales, build_converted(ckpt, dqn, scales, s, {"note": "test"})


# --- exact percentile ----------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.1, 1.0, 37.5, 50.0, 99.0, 99.9, 100.0])
@pytest.mark.parametrize("n", [1, 2, 3, 1000, 12345])
def test_streamed_percentile_equals_numpy(p: float, n: int) -> None:
    values = torch.randn(n, generator=torch.Generator().manual_seed(n)).relu()  # many ties at 0
    tail = TailPercentile(n, p)
    for chunk in values.split(97):
        tail.update(chunk)
    assert tail.value() == pytest.approx(float(np.percentile(values.double().numpy(), p)), abs=1e-12)


# --- scale factors and weights, by hand on the toy net -------------------------------------------


def test_data_normalisation_by_hand() -> None:
    # a1 = relu(W1 x + b1) on the 4 inputs: [1, .5] [0, 2.5] [2, 2.5] [0, 0]      -> max 2.5
    # a2 = relu(W2 a1):                     [.5, .75] [0, 1.25] [0, 2.25] [0, 0] -> max 2.25
    # Q = W3 a2 + b3:                       [.6, -.75] [.1, -1.25] [.1, -2.25] [.1, 0] -> max |Q| 2.25
    ckpt = toy_checkpoint()
    dqn = check_convertible(ckpt)
    stats = activation_stats(dqn, ObservationSet(TOY_OBS, raw=False), ckpt.preprocessing, 50.0)
    assert [s.max for s in stats.layers] == pytest.approx([2.5, 2.25, 2.25])
    # p50 of a1's 8 values [0,0,0,.5,1,2,2.5,2.5]: position 3.5 -> .5 + .5 * (1 - .5) = .75
    assert stats.layers[0].percentile == pytest.approx(0.75)
    assert stats.layers[0].zero_fraction == pytest.approx(3 / 8)
    scales = scale_factors(dqn, stats, settings(normalization="data"))
    assert list(scales.input) == [1.0] and scales.layers == pytest.approx([2.5, 2.25])
    assert scales.output == pytest.approx(2.25)
    sd = normalised_state_dict(dqn, scales)
    # Tan eq. 16: W_l lambda_{l-1} / lambda_l, b_l / lambda_l
    assert torch.allclose(sd["layers.0.0.weight"], torch.tensor([[0.4, 0.0], [0.0, 0.8]]))
    assert torch.allclose(sd["layers.0.0.bias"], torch.tensor([0.0, 0.2]))
    assert torch.allclose(sd["layers.1.0.weight"], torch.tensor([[1.0, -1.0], [0.5, 0.5]]) * 2.5 / 2.25)
    assert torch.allclose(sd["head.weight"], torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
    assert torch.allclose(sd["head.bias"], torch.tensor([0.1 / 2.25, 0.0]))


def test_model_based_normalisation_by_hand() -> None:
    # inputs may be negative (min -1), |x| <= [2, 1]: layer 1 bound sum_i |W_ji| m_i + b_j = [2, 2.5]
    # layer 2: sum_i W+_ji * 2.5 + b_j = [2.5, 2.5]; head |Q| <= max(2.5 + .1, |-2.5|) = 2.6
    ckpt = toy_checkpoint()
    dqn = check_convertible(ckpt)
    stats = activation_stats(dqn, ObservationSet(TOY_OBS, raw=False), ckpt.preprocessing, 99.9)
    scales = scale_factors(dqn, stats, settings(normalization="model"))
    assert scales.layers == pytest.approx([2.5, 2.5]) and scales.output == pytest.approx(2.6)


def test_spike_encodings_scale_the_input_per_feature() -> None:
    ckpt = toy_checkpoint()
    dqn = check_convertible(ckpt)
    stats = activation_stats(dqn, ObservationSet(TOY_OBS, raw=False), ckpt.preprocessing, 99.9)
    scales = scale_factors(dqn, stats, settings(normalization="data", encoding="regular"))
    assert list(scales.input) == [2.0, 1.0]  # max |x| per feature
    conv = build_converted(ckpt, dqn, scales, settings(normalization="data", encoding="regular"), {})
    assert conv.preprocessing.scale == (0.5, 1.0)  # the SNN sees x / lambda_0, |x / lambda_0| <= 1
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0]]) * torch.tensor([2.0, 1.0]) / 2.5
    assert torch.allclose(conv.state_dict["layers.0.0.weight"], w)


@pytest.mark.parametrize("norm", ["data", "robust", "model"])
def test_normalised_ann_computes_q_over_lambda(norm: str) -> None:
    """ReLU(c z) = c ReLU(z): the rescaled DQN is the same function up to lambda_L (and lambda_0)."""
    for encoding in ("current", "poisson"):
        s = settings(normalization=norm, encoding=encoding)
        ckpt, dqn, held, scales, conv = convert_random(s)
        ann = DQN(ckpt.spec)
        ann.load_state_dict(conv.state_dict)
        x = held.model_input(ckpt.preprocessing)
        lam0 = torch.as_tensor(scales.input, dtype=torch.float32)
        with torch.no_grad():
            assert torch.allclose(ann(x / lam0) * scales.output, dqn(x), atol=1e-4, rtol=1e-4)


# --- spiking dynamics against ReLU ------------------------------------------------------------


def test_if_soft_reset_rate_approaches_relu() -> None:
    a = torch.linspace(-0.5, 1.5, 81)
    p = NeuronParams("if", 1.0, 1.0, 0.0, "soft")
    errs = []
    for T in (10, 100, 1000):
        spikes, v = neurons.spiking_layer(a.expand(T, -1), p)
        rate = spikes.mean(dim=0)
        err = (rate - a.clamp(0, 1)).abs()
        assert err.max() <= 1.0 / T + 1e-6
        # robust rate: count / T + V(T) / T is exactly the mean input current (V_th 1, V_r 0)
        assert torch.allclose(rate + v / T, a, atol=1e-5)
        errs.append(float(err.mean()))
    assert errs[0] > errs[1] > errs[2]


def test_converted_hidden_rates_approach_normalised_activations() -> None:
    s = settings()
    errs = []
    for T in (20, 200, 2000):
        ckpt, dqn, held, scales, conv = convert_random(ConversionSettings(**{**s.__dict__, "time_steps": T}))
        x = held.model_input(ckpt.preprocessing)[:200]
        snn = conv.build()
        with torch.no_grad():
            q, spikes, _ = snn.run(x)
            acts = dqn.activations(x)
        layer_err = [float((sp.mean(0) - (a / lam).clamp(0, 1)).abs().mean())
                     for sp, a, lam in zip(spikes, acts, scales.layers)]
        q_err = float((q_in_dqn_units(q, snn.spec, scales.output) - acts[-1]).abs().mean())
        errs.append((layer_err, q_err))
    for (l_lo, q_lo), (l_hi, q_hi) in zip(errs, errs[1:]):
        assert all(b < a for a, b in zip(l_lo, l_hi)) and q_hi < q_lo
    assert max(errs[-1][0]) < 2e-3


def test_converted_actions_agree_with_dqn_at_large_t() -> None:
    rates = {}
    for T in (10, 1000):
        ckpt, dqn, held, scales, conv = convert_random(settings(time_steps=T))
        rates[T] = conversion_rate(dqn, conv.build(), held, ckpt.preprocessing, scales.input, scales.output)
    assert rates[1000].agreement >= 0.99
    assert rates[10].agreement < rates[1000].agreement
    assert rates[1000].q_abs_err < rates[10].q_abs_err
    assert rates[1000].regret <= rates[10].regret


# --- export: NIR on the reference backend equals the torch converted model ----------------------


@pytest.mark.parametrize("readout,reset,v_init,encoding", [
    ("robust_rate", "soft", 0.0, "current"),
    ("robust_rate", "soft", 0.5, "current"),
    ("spike_count", "soft", 0.0, "current"),
    ("voltage", "soft", 0.0, "current"),
    ("robust_rate", "hard", 0.0, "current"),
    ("spike_count", "hard", 0.0, "regular"),
    ("robust_rate", "soft", 0.0, "poisson"),
])
def test_nir_reference_matches_torch_converted(readout: str, reset: str, v_init: float,
                                               encoding: str) -> None:
    s = settings(readout=readout, reset=reset, v_init=v_init, encoding=encoding, time_steps=50,
                 encoding_seed=4)
    ckpt, dqn, held, scales, conv = convert_random(s)
    obs = held.model_input(ckpt.preprocessing)[:300] / torch.as_tensor(scales.input, dtype=torch.float32)
    snn = conv.build()
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        q, _, tie = snn.run(obs, gen)
    s_in = None
    if encoding != "current":
        s_in = encode(obs, 50, encoding, torch.Generator().manual_seed(4)).numpy()
    r = ReferenceBackend(model_to_nir(conv)).run(obs.numpy(), s_in)
    assert np.abs(r.q - q.double().numpy()).max() <= 1e-4 * max(1.0, float(q.abs().max()))
    assert np.array_equal(r.action, greedy_action(q, tie).numpy())


# --- the command line ----------------------------------------------------------------------------


def test_cli_converts_with_env_calibration(tmp_path: Path) -> None:
    src = tmp_path / "dqn.pt"
    save_checkpoint(make_checkpoint("dqn", hidden=(16, 16), seed=1), src)
    out, report = tmp_path / "snn.pt", tmp_path / "report.json"
    rc = convert_main([str(src), "-o", str(out), "--calib-steps", "300", "--eval-obs", "200", "-T", "200",
                       "--seed", "3", "--json", str(report), "--no-progress"])
    assert rc == 0
    ckpt = load_checkpoint(out)
    spec = ckpt.spec
    assert (spec.kind, spec.variant, spec.time_steps, spec.readout, spec.encoding) == (
        "converted", "tan", 200, "robust_rate", "current")
    assert spec.neuron == NeuronParams("if", 1.0, 1.0, 0.0, "soft", 2.0)
    conv = ckpt.provenance["conversion"]
    assert conv["normalization"] == "robust" and conv["percentile"] == 99.9
    assert conv["calibration"]["source"] == "env" and conv["calibration"]["observations"] == 300
    assert conv["calibration"]["seed"] == 3 and conv["calibration"]["epsilon"] == 0.05
    assert len(conv["scales"]["layers"]) == 2 and conv["output_scale"] > 0
    assert ckpt.provenance["source"]["kind"] == "dqn" and len(ckpt.provenance["source"]["sha256"]) == 64
    data = json.loads(report.read_text())
    ev = data["evaluation"]
    assert ev["observations"] == 200 and 0.0 <= ev["agreement"] <= 1.0
    assert ckpt.provenance["conversion_rate"]["agreement"] == ev["agreement"]
    assert data["timings"]["conversion_s"] > 0 and data["calibration"]["observations"] == 300
    # the written checkpoint reproduces the reported conversion rate on the same held-out episodes
    dqn_ckpt = load_checkpoint(src)
    held = collect_observations(dqn_ckpt, 200, 3 + EVAL_SEED_OFFSET, progress=False)
    again = conversion_rate(dqn_ckpt.build(), ckpt.build(), held, dqn_ckpt.preprocessing,
                            np.asarray(conv["scales"]["input"]), conv["output_scale"])
    assert again.agreement == ev["agreement"] and again.q_abs_err == pytest.approx(ev["q_abs_err"])


def test_cli_reads_calibration_file(tmp_path: Path) -> None:
    src = tmp_path / "dqn.pt"
    save_checkpoint(make_checkpoint("dqn", hidden=(8,), seed=2), src)
    obs = tmp_path / "obs.npy"
    np.save(obs, cartpole_obs(64, seed=5).numpy())
    rc = convert_main([str(src), "-o", str(tmp_path / "snn.pt"), "--calib-obs", str(obs), "--norm", "data",
                       "--readout", "spike_count", "--reset", "hard", "-T", "20", "--eval-obs", "0",
                       "--no-progress"])
    assert rc == 0
    ckpt = load_checkpoint(tmp_path / "snn.pt")
    assert ckpt.spec.readout == "spike_count" and ckpt.spec.neuron.reset == "hard"
    cal = ckpt.provenance["conversion"]["calibration"]
    assert cal["source"] == "file" and cal["observations"] == 64 and cal["preprocessed"] is True


def _bad_dqn(tmp_path: Path, mutate) -> Path:
    ckpt = make_checkpoint("dqn", hidden=(8, 8), seed=0)
    sd = {k: v.clone() for k, v in ckpt.state_dict.items()}
    mutate(sd)
    ckpt.state_dict = sd
    path = tmp_path / "bad.pt"
    save_checkpoint(ckpt, path)
    return path


def _kill_layer1(sd: dict) -> None:
    sd["layers.1.0.weight"].fill_(-1.0)
    sd["layers.1.0.bias"].fill_(-1.0)


def _nan_layer0(sd: dict) -> None:
    sd["layers.0.0.weight"][0, 0] = float("nan")


@pytest.mark.parametrize("case,extra,needle", [
    ("dsqn", [], "not a DQN: layer layers.0 is already spiking"),
    ("ok", ["--percentile", "0"], "--percentile must lie in (0, 100]"),
    ("ok", ["--percentile", "100.5"], "--percentile must lie in (0, 100]"),
    ("ok", ["--percentile", "nan"], "--percentile must lie in (0, 100]"),
    ("ok", ["-T", "0"], "T must be >= 1"),
    ("ok", ["--calib-steps", "0"], "--calib-steps must be >= 1"),
    ("ok", ["--threads", "0"], "--threads must be >= 1"),
    ("empty", [], "empty"),
    ("shape", [], "the model expects (4,)"),
    ("ok", ["--norm", "max"], "unknown normalisation 'max'"),
    ("ok", ["--readout", "rate"], "unknown conversion readout 'rate'"),
    ("ok", ["--v-init", "0.5", "--reset", "hard"], "--v-init needs --reset soft"),
    ("dead", [], "layer layers.1 cannot be normalised"),
    ("nan", [], "'state_dict.layers.0.0.weight' holds NaN or infinite values"),  # refused on load
])
def test_bad_input_one_line_error(tmp_path: Path, capsys, case: str, extra: list[str], needle: str) -> None:
    obs = tmp_path / "obs.npy"
    np.save(obs, cartpole_obs(32, seed=1).numpy())
    if case == "dsqn":
        src = tmp_path / "dsqn.pt"
        save_checkpoint(make_checkpoint("liu", hidden=(8,)), src)
    elif case == "dead":
        src = _bad_dqn(tmp_path, _kill_layer1)
    elif case == "nan":
        src = _bad_dqn(tmp_path, _nan_layer0)
    else:
        src = tmp_path / "dqn.pt"
        save_checkpoint(make_checkpoint("dqn", hidden=(8,)), src)
    if case == "empty":
        np.save(obs, np.zeros((0, 4), np.float32))
    if case == "shape":
        np.save(obs, np.zeros((10, 3), np.float32))
    rc = convert_main([str(src), "-o", str(tmp_path / "snn.pt"), "--calib-obs", str(obs), "--eval-obs", "0",
                       "--no-progress", *extra])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert needle in err
    assert not (tmp_path / "snn.pt").exists()


def test_empty_calibration_set_is_refused_by_the_library() -> None:
    ckpt = toy_checkpoint()
    with pytest.raises(UserError, match="empty"):
        activation_stats(check_convertible(ckpt), ObservationSet(np.zeros((0, 2), np.float32), raw=False),
                         Preprocessing(), 99.9)


# --- Nature-CNN (random weights: correctness only) ------------------------------------------------


def test_nature_cnn_conversion_is_exact_up_to_lambda_and_exports() -> None:
    ckpt = make_checkpoint("dqn", arch="nature_cnn", obs_shape=(4, 36, 36), n_actions=3, seed=0)
    dqn = check_convertible(ckpt)
    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (48, 4, 36, 36), generator=gen).to(torch.uint8)
    ckpt.preprocessing = Preprocessing(offset=(0.0,), scale=(1 / 255,))
    data = ObservationSet(frames.numpy(), raw=True)
    s = settings(encoding="regular", time_steps=8)
    stats = activation_stats(dqn, data, ckpt.preprocessing, 99.9)
    scales = scale_factors(dqn, stats, s)
    assert scales.input.shape == (1,) and 0 < scales.input[0] <= 1.0  # one scale for image inputs
    conv = build_converted(ckpt, dqn, scales, s, {})
    x = data.model_input(ckpt.preprocessing)
    ann = DQN(ckpt.spec)
    ann.load_state_dict(conv.state_dict)
    with torch.no_grad():
        assert torch.allclose(ann(x / float(scales.input[0])) * scales.output, dqn(x), atol=1e-4, rtol=1e-4)
        obs = x[:6] / float(scales.input[0])
        q, _, tie = conv.build().run(obs)
    s_in = encode(obs, 8, "regular").numpy()
    r = ReferenceBackend(model_to_nir(conv)).run(obs.numpy(), s_in)
    assert np.abs(r.q - q.double().numpy()).max() <= 1e-4
    assert np.array_equal(r.action, greedy_action(q, tie).numpy())


def test_sparse_layer_percentile_zero_names_the_layer() -> None:
    ckpt = toy_checkpoint()
    dqn = check_convertible(ckpt)
    obs = np.array([[-1.0, -1.0]] * 9 + [[2.0, 1.0]], dtype=np.float32)  # layers.0: 18 zeros, 2 > 0
    stats = activation_stats(dqn, ObservationSet(obs, raw=False), ckpt.preprocessing, 50.0)
    with pytest.raises(UserError, match=r"layer layers\.0 cannot be normalised: its 50th percentile is 0 .*"
                                        r"higher --percentile"):
        scale_factors(dqn, stats, settings(percentile=50.0))
    assert scale_factors(dqn, stats, settings(normalization="data")).layers[0] == pytest.approx(2.5)


def test_collected_observations_are_seeded_and_batched_play_is_deterministic() -> None:
    import gymnasium as gym

    ckpt = make_checkpoint("dqn", hidden=(8,), seed=0)
    one = collect_observations(ckpt, 40, seed=5, progress=False)
    assert one.obs.shape == (40, 4) and one.raw and one.source["envs"] == 1
    first, _ = gym.make("CartPole-v1").reset(seed=5)
    assert np.array_equal(one.obs[0], first)
    assert np.array_equal(collect_observations(ckpt, 40, seed=5, progress=False).obs, one.obs)
    three = collect_observations(ckpt, 40, seed=5, progress=False, envs=3)
    again = collect_observations(ckpt, 40, seed=5, progress=False, envs=3)
    assert np.array_equal(three.obs, again.obs) and three.source["episodes"] >= 3
    for k in range(3):  # the first step shows the three episodes' starts, seeds 5, 6, 7
        assert np.array_equal(three.obs[k], gym.make("CartPole-v1").reset(seed=5 + k)[0])

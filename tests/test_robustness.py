"""FGSM robustness benchmark (issue 8): the attack's direction, the surrogate path of spiking nets,
eps = 0 equal to clean behaviour, clipping, FGSM worse than noise, determinism, one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import robustness as R
from exporters.zoo import atari_obs, cartpole_obs, make_checkpoint
from pipeline import neurons
from pipeline.checkpoint import save_checkpoint
from pipeline.errors import UserError
from pipeline.evaluate import evaluate_checkpoint
from pipeline.models import greedy_action

ROOT = Path(__file__).resolve().parents[1]
DQN_PT = ROOT / "examples" / "cartpole_dqn.pt"
DSQN_PT = ROOT / "examples" / "cartpole_dsqn.pt"


SPIKING_KINDS = ("liu", "chen", "chen_last", "hahn", "spike_count", "robust_rate_lif", "tan_converted",
                 "poisson", "regular")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def zoo_paths(tmp_path_factory) -> dict[str, Path]:
    """Random-weight CartPole checkpoints (they fall over quickly, with returns that vary by seed)."""
    out = tmp_path_factory.mktemp("zoo")
    paths = {}
    for kind in ("dqn", "liu"):
        paths[kind] = out / f"{kind}.pt"
        save_checkpoint(make_checkpoint(kind, time_steps=4, hidden=(16, 16), seed=3), paths[kind])
    return paths


# --- the attack direction ----------------------------------------------------------------------------


def test_ce_direction_is_the_cross_entropy_gradient_up_to_a_positive_factor():
    g = torch.Generator().manual_seed(0)
    q = torch.randn((16, 5), generator=g, dtype=torch.float64) * 3
    a = torch.randint(0, 5, (16,), generator=g)
    q_leaf = q.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(q_leaf, a, reduction="sum").backward()
    p_a = torch.softmax(q, -1).gather(1, a[:, None])
    assert torch.allclose(R.ce_direction(q, a) * (1 - p_a), q_leaf.grad, atol=1e-12)

    # a confident Q: the float32 CE gradient underflows to 0, the direction keeps its sign
    q32 = torch.tensor([[200.0, 0.0, -5.0]], requires_grad=True)
    torch.nn.functional.cross_entropy(q32, torch.tensor([0])).backward()
    assert torch.all(q32.grad == 0)
    d = R.ce_direction(q32.detach(), torch.tensor([0]))
    assert d[0, 0] == -1 and d[0, 1] > 0 and d[0, 2] > 0 and math.isclose(float(d[0, 1:].sum()), 1.0)
    assert torch.all(R.ce_direction(torch.zeros((3, 1)), torch.zeros(3, dtype=torch.long)) == 0)


def test_fgsm_on_a_dqn_is_the_sign_of_the_cross_entropy_gradient_and_raises_the_loss():
    model = make_checkpoint("dqn", hidden=(32, 32), seed=1).build()
    x = cartpole_obs(64, seed=2)
    a = R.actions_of(model, x)
    leaf = x.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(leaf), a, reduction="sum")
    (ref,) = torch.autograd.grad(loss, leaf)
    sign = R.fgsm_direction(model, x, a)
    big = ref.abs() > 1e-6
    assert big.float().mean() > 0.9
    assert torch.equal(sign[big], torch.sign(ref[big]))

    def ce(inp):
        return torch.nn.functional.cross_entropy(model(inp), a, reduction="none")

    with torch.no_grad():
        adv = R.fgsm(model, x, 1e-3)
        assert torch.all(ce(adv) >= ce(x) - 1e-6) and ce(adv).sum() > ce(x).sum()
        noise = R.random_sign_noise(x, 1e-3, torch.Generator().manual_seed(0))
        assert ce(adv).sum() > ce(noise).sum()  # first order: the gradient sign is the worst l_inf step


@pytest.mark.parametrize("kind", SPIKING_KINDS)
def test_spiking_gradients_go_through_the_surrogate(kind, monkeypatch):
    model = make_checkpoint(kind, time_steps=4, hidden=(32, 32), seed=0).build()
    calls = {"surrogate": 0, "inference": 0}
    spike_fn, inference = neurons.spike_fn, neurons._spiking_layer_inference

    def counting_spike_fn(u, v_th, alpha):
        calls["surrogate"] += int(torch.is_grad_enabled() and u.requires_grad)
        return spike_fn(u, v_th, alpha)

    def counting_inference(current, p):
        calls["inference"] += 1
        return inference(current, p)

    monkeypatch.setattr(neurons, "spike_fn", counting_spike_fn)
    monkeypatch.setattr(neurons, "_spiking_layer_inference", counting_inference)
    x = cartpole_obs(16, seed=5)
    a = R.actions_of(model, x)
    calls.update(surrogate=0, inference=0)
    grad = R.input_gradient(model, x, a)
    assert calls["inference"] == 0 and calls["surrogate"] > 0
    assert grad.shape == x.shape and torch.isfinite(grad).all()
    assert (grad != 0).any(), f"{kind}: the surrogate gave no gradient at all"
    if model.spec.encoding != "current":  # straight-through: no gradient where the rate saturates
        assert torch.all(grad[x.abs() >= 1] == 0)


# --- eps = 0, clipping, scale --------------------------------------------------------------------------


def test_eps_zero_returns_the_observation_itself():
    model = make_checkpoint("liu", time_steps=4, hidden=(16, 16)).build()
    x = cartpole_obs(8)
    gen = torch.Generator().manual_seed(0)
    assert R.fgsm(model, x, 0.0, scale=2.0) is x
    assert R.random_sign_noise(x, 0.0, gen, scale=2.0) is x
    assert R.apply_step(x, torch.ones_like(x), 0.0, 1.0, x - 1, x + 1) is x
    for attack in R.ATTACKS:
        assert R.open_loop_agreement(model, x, [0.0], attack, batch_size=3) == {0.0: 1.0}


@pytest.mark.parametrize("kind", ["dqn", "liu"])
def test_eps_zero_reproduces_the_clean_evaluation(kind, zoo_paths):
    path = zoo_paths[kind]
    rows = R.evaluate_robustness(path, [0.0, 2.0], episodes=3, n_obs=40, seed=11)
    clean = evaluate_checkpoint(path, episodes=3, seed=11, progress=False)
    zero = [r for r in rows if r["eps"] == 0]
    assert {r["attack"] for r in zero} == set(R.ATTACKS)
    for r in zero:
        assert r["agreement"] == 1.0 and r["loop_agreement"] == 1.0
        assert r["returns"] == clean["returns"]
    assert len(set(clean["returns"])) > 1  # the episodes differ, so the match means something
    (attacked,) = [r for r in rows if r["eps"] == 2.0 and r["attack"] == "fgsm"]
    assert attacked["agreement"] < 1.0 and attacked["loop_agreement"] < 1.0


def test_cartpole_clipping_and_std_scale():
    target = R.load_target(DQN_PT)
    assert not target.pixels
    x = torch.tensor([[4.7, 0.0, 0.41, 0.0], [-4.7, 0.0, -0.41, 0.0]])
    adv = R.apply_step(x, torch.tensor([[1.0, 1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, -1.0]]), 0.5, 1.0,
                       target.low, target.high)
    theta_max = 12 * 2 * math.pi / 360 * 2
    assert torch.allclose(adv[0], torch.tensor([4.8, 0.5, theta_max, 0.5]))
    assert torch.allclose(adv[1], -torch.tensor([4.8, 0.5, theta_max, 0.5]))

    xs = torch.tensor([[0.0, 1.0, 0.1, 2.0], [0.0, 3.0, 0.1, -2.0]])
    scale, unit = R.resolve_scale(target, xs, None)
    assert unit == "std" and torch.allclose(scale, torch.tensor([0.0, 1.0, 0.0, 2.0]))
    step = R.apply_step(xs, torch.ones_like(xs), 0.5, scale, target.low, target.high)
    assert torch.equal(step[:, [0, 2]], xs[:, [0, 2]])  # constant features are not perturbed
    assert torch.allclose(step[:, [1, 3]] - xs[:, [1, 3]], torch.tensor([0.5, 1.0]).expand(2, 2))
    fixed, unit = R.resolve_scale(target, xs, [1, 2, 3, 4])
    assert unit == "scale" and fixed.tolist() == [1, 2, 3, 4]
    with pytest.raises(UserError, match="--scale needs 1 or 4 values"):
        R.resolve_scale(target, xs, [1, 2])
    with pytest.raises(UserError, match="at least 2 observations"):
        R.resolve_scale(target, xs[:1], None)


def test_atari_nature_cnn_attack_stays_in_pixel_range(tmp_path):
    pytest.importorskip("ale_py")
    path = tmp_path / "atari.pt"
    save_checkpoint(make_checkpoint("liu", arch="nature_cnn", obs_shape=(4, 84, 84), n_actions=6, time_steps=2),
                    path)
    target = R.load_target(path)
    assert target.pixels and float(target.low.min()) == 0.0 and float(target.high.max()) == 1.0
    scale, unit = R.resolve_scale(target, torch.zeros((1, 4, 84, 84)), None)
    assert unit == "input" and float(scale) == 1.0
    x = atari_obs(2, seed=1)
    x[0, 0, 0, :4] = torch.tensor([0.0, 1.0, 0.0, 1.0])  # pixels at both ends of the range
    a = R.actions_of(target.model, x)
    adv = R.fgsm(target.model, x, 8 / 255, scale, target.low, target.high, actions=a)
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert float((adv - x).abs().max()) <= 8 / 255 + 1e-6
    assert float((adv - x).abs().max()) > 7 / 255
    agreement = R.open_loop_agreement(target.model, x, [0.0, 8 / 255], "fgsm", scale, target.low, target.high,
                                      batch_size=1)
    assert agreement[0.0] == 1.0 and 0.0 <= agreement[8 / 255] <= 1.0


# --- the benchmark's findings and its determinism ----------------------------------------------------


@pytest.fixture(scope="module")
def bundled_obs() -> dict[str, tuple]:
    out = {}
    for path in (DQN_PT, DSQN_PT):
        target = R.load_target(path)
        raw, _ = R.record_clean_observations(target, 200, seed=0)
        x = target.network_input(raw)
        out[path.name] = (target, x, R.resolve_scale(target, x, None)[0])
    return out


@pytest.mark.parametrize("name", [DQN_PT.name, DSQN_PT.name])
def test_fgsm_is_worse_than_noise_on_the_bundled_agents(name, bundled_obs):
    target, x, scale = bundled_obs[name]
    eps = [0.0, 0.1, 0.2]
    fgsm = R.open_loop_agreement(target.model, x, eps, "fgsm", scale, target.low, target.high, seed=0)
    noise = R.open_loop_agreement(target.model, x, eps, "noise", scale, target.low, target.high, seed=0)
    assert fgsm[0.0] == noise[0.0] == 1.0
    for e in eps[1:]:
        assert fgsm[e] < noise[e] < 1.0, (e, fgsm, noise)
    assert fgsm[0.2] <= fgsm[0.1]


def test_results_are_deterministic_and_independent_of_batching(bundled_obs, zoo_paths):
    target, x, scale = bundled_obs[DSQN_PT.name]
    runs = [R.open_loop_agreement(target.model, x[:64], [0.1, 0.3], attack, scale, target.low, target.high,
                                  seed=4, batch_size=bs) for attack in R.ATTACKS for bs in (64, 64, 16)]
    assert runs[0] == runs[1] and runs[3] == runs[4]
    assert runs[0] == runs[2]  # the FGSM sign of one observation does not depend on its batch
    loops = [R.closed_loop(R.load_target(zoo_paths["liu"]), 0.3, "noise", 1.0, 2, seed=5) for _ in range(2)]
    assert loops[0] == loops[1]


# --- bad input and the command line ------------------------------------------------------------------


def test_bad_input_is_one_user_error(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        R.evaluate_robustness(tmp_path / "missing.pt", [0.1])
    with pytest.raises(UserError, match="eps must be a finite number >= 0, got -0.1"):
        R.evaluate_robustness(DQN_PT, [0.0, -0.1])
    with pytest.raises(UserError, match="unknown attack 'pgd'"):
        R.evaluate_robustness(DQN_PT, [0.1], attack=("pgd",))
    with pytest.raises(UserError, match="episodes must be >= 0"):
        R.evaluate_robustness(DQN_PT, [0.1], episodes=-1)
    assert R.parse_eps("2/255") == pytest.approx(2 / 255)
    with pytest.raises(UserError, match="fraction like 2/255"):
        R.parse_eps("two")


def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert R.main([str(tmp_path / "missing.pt"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: checkpoint not found") and "\n" not in err
    assert R.main([str(DQN_PT), "--eps", "0", "-0.5", "--no-progress"]) == 2
    assert "eps must be a finite number >= 0, got -0.5" in capsys.readouterr().err


def test_cli_writes_json_png_and_table(zoo_paths, tmp_path, capsys):
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    code = R.main([str(zoo_paths["dqn"]), str(zoo_paths["liu"]), "--eps", "0", "0.3", "--episodes", "1",
                   "--obs", "20", "--json", str(out_json), "--png", str(out_png), "--no-progress"])
    assert code == 0
    rows = json.loads(out_json.read_text())
    assert len(rows) == 2 * 2 * 2  # checkpoints x eps x attacks
    assert {r["model_kind"] for r in rows} == {"dqn", "dsqn"}
    for r in rows:
        assert 0.0 <= r["agreement"] <= 1.0 and r["eps_unit"] == "std" and len(r["scale"]) == 4
        assert r["return_mean"] == pytest.approx(float(np.mean(r["returns"])))
    assert out_png.stat().st_size > 10_000
    table = capsys.readouterr().out
    assert "agreement" in table and "fgsm" in table and "noise" in table and "0.3 σ" in table


def test_greedy_action_under_attack_is_read_from_the_deployed_forward(zoo_paths):
    """The action after the attack is the no-grad model's, i.e. what a backend would compute."""
    target = R.load_target(zoo_paths["liu"])
    x = cartpole_obs(32, seed=9)
    adv = R.fgsm(target.model, x, 0.3, 1.0, target.low, target.high)
    with torch.no_grad():
        q, _, tie = target.model.run(adv)
    assert torch.equal(R.actions_of(target.model, adv), greedy_action(q, tie))

"""``finetune-fixed``: the differentiable forward is lava-fixed's arithmetic exactly, gradients
reach every layer, the written checkpoint re-quantises to the grid it was trained on and runs
like its own float model, the command writes a normal checkpoint, and networks it cannot
fine-tune are refused with one line naming the layer and the limit. MLPs on CartPole, and
Nature-CNN nets (DSQN, IF-DSQN, converted) on 36x36 Pong frames: the conv path."""

from __future__ import annotations

import copy
import dataclasses
import json
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import pytest
import torch

from backends.common.sparse import conv_matrix
from backends.finetune_fixed import (Settings, _used_taps, agreement_report, distill_loss, finetune, fixed_forward,
                                     grid_mismatch, main, make_grid, neuron_scale_moves, record, snap,
                                     threshold_drift, unit_drift)
from backends.lava.torch_fixed import HOST, LoihiFixedTorch
from backends.reference import ReferenceBackend
from exporters.canonical import Op
from exporters.to_nir import model_to_nir
from exporters.zoo import atari_obs, cartpole_obs, make_checkpoint
from pipeline.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from pipeline.envs import ATARI_DEFAULTS
from pipeline.spec import Preprocessing

try:
    version("lava-nc")
    HAVE_LAVA = True
except PackageNotFoundError:
    HAVE_LAVA = False
pytestmark = pytest.mark.timeout(240)


def zoo(kind: str = "liu", gain: float = 3.0, hidden=(32, 32), T: int = 8) -> Checkpoint:
    return make_checkpoint(kind, seed=2, hidden=hidden, time_steps=T, gain=gain)


def conv_zoo(kind: str = "liu", **kw) -> Checkpoint:
    """The Nature CNN on 4 x 36 x 36 Pong frames (the smallest input it takes: conv 3 is 1 x 1),
    random weights, T 4; its preprocessing asks ALE for 36 x 36 frames."""
    ckpt = make_checkpoint(kind, arch="nature_cnn", obs_shape=(4, 36, 36), n_actions=6, time_steps=4, seed=2, **kw)
    atari = {**ATARI_DEFAULTS, "screen_size": 36}
    return dataclasses.replace(ckpt, preprocessing=Preprocessing(offset=(0.0,), scale=(1 / 255,), atari=atari))


def frames(n: int, seed: int = 3) -> np.ndarray:
    return atari_obs(n, seed=seed)[:, :, :36, :36].contiguous().numpy()


@pytest.mark.parametrize("kind, arch", [("liu", "mlp"), ("hahn", "mlp"), ("chen", "mlp"), ("liu", "conv"),
                                        ("chen", "conv"), ("tan_converted", "conv")])
def test_differentiable_forward_is_lava_fixed_exactly(kind: str, arch: str) -> None:
    ckpt = zoo(kind) if arch == "mlp" else conv_zoo(kind)
    model = ckpt.build()
    obs = cartpole_obs(50, seed=3).numpy() if arch == "mlp" else frames(12)
    grid = make_grid(ckpt, model)
    q, action = fixed_forward(grid, torch.as_tensor(obs, dtype=torch.float64), alpha=2.0)
    exact = LoihiFixedTorch(model_to_nir(ckpt), state_scale="layer").run(obs)  # the mode it models
    assert np.array_equal(action.numpy(), exact.action)
    assert np.allclose(q.detach().numpy(), exact.q, rtol=0, atol=1e-9 * np.abs(exact.q).max())
    q.sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_snapped_checkpoint_keeps_its_grid_and_matches_its_float_model() -> None:
    ckpt = zoo("liu", hidden=(64, 64), T=16)
    model = ckpt.build()
    with torch.no_grad():  # move the weights off the grid first
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    grid = make_grid(ckpt, model)
    snap(grid)
    out = Checkpoint(spec=ckpt.spec, state_dict=copy.deepcopy(model.state_dict()), env_id=ckpt.env_id)
    assert all(v == 0 for v in grid_mismatch(grid, make_grid(out, model)).values())
    obs = cartpole_obs(300, seed=5).numpy()
    graph = model_to_nir(out)
    fixed, ref = LoihiFixedTorch(graph).run(obs), ReferenceBackend(graph, dtype="float64").run(obs)
    # only the 24-bit state's roundings remain between lava-fixed and the float model
    assert np.mean(fixed.action == ref.action) >= 0.97
    assert np.median(np.abs(fixed.q - ref.q)) <= 1e-3 * np.abs(ref.q).max()


@pytest.mark.parametrize("name", ["cartpole_dsqn", "cartpole_if_dsqn", "mountaincar_dsqn", "cartpole_chen_dsqn"])
def test_per_neuron_units_leave_finetuned_agents_on_their_grid(name: str) -> None:
    """lava-fixed's opt-in per-neuron state units (``state_scale="neuron"``) move a neuron off its
    population's unit only where that rounds its weights more finely: the bundled fine-tuned agents
    (weights exactly on the grid) keep every unit, threshold and mantissa, so their figures hold in
    that mode too, while the same agents before fine-tuning do get per-neuron units."""
    from pathlib import Path

    examples = Path(__file__).resolve().parents[1] / "examples"
    tuned = model_to_nir(load_checkpoint(examples / f"{name}.loihi.pt"))
    plain, units = LoihiFixedTorch(tuned, state_scale="layer"), LoihiFixedTorch(tuned, state_scale="neuron")
    for pop, fp in units.quant.items():
        base = plain.quant[pop]
        assert fp.unit is None and fp.q == base.q, pop
        assert np.array_equal(fp.threshold, base.threshold) if base.threshold is not None else fp.threshold is None
        for src, fmap in fp.maps.items():
            assert fmap.exp == base.maps[src].exp and (fmap.mant != base.maps[src].mant).nnz == 0, (pop, src)
    before = LoihiFixedTorch(model_to_nir(load_checkpoint(examples / f"{name}.pt")), state_scale="neuron")
    assert any(fp.unit is not None for fp in before.quant.values())


def test_snapped_conv_kernel_is_the_maps_mantissas_and_keeps_its_grid() -> None:
    """Weight sharing survives the write-back: after snapping, every entry of every conv map is
    its kernel weight's 8-bit mantissa at the layer's exponent (one kernel, not per synapse), and
    re-quantising the checkpoint gives the same mantissas and exponents; the state units of
    state-bound layers (fan-in 512) move by < 1e-3, their thresholds with them."""
    ckpt = conv_zoo("liu")
    model = ckpt.build()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * p.abs().mean() * torch.randn_like(p))
    grid = make_grid(ckpt, model)
    snap(grid)
    out = dataclasses.replace(ckpt, state_dict=copy.deepcopy(model.state_dict()))
    again = make_grid(out, model)
    assert all(v == 0 for v in grid_mismatch(grid, again).values())
    assert max(unit_drift(grid, again).values()) < 1e-3 and max(threshold_drift(grid, again).values()) < 1e-3
    convs = [name for name, f in again.feed.items() if isinstance(f.module, torch.nn.Conv2d)]
    assert convs == ["l0_lif", "l1_lif", "l2_lif"]
    for name in convs:
        fp, feed = again.quant[name], again.feed[name]
        fmap = fp.maps[feed.source]
        c = float(fp.c[0])
        kernel = np.round(c * feed.module.weight.detach().double().numpy() / (fp.q * 2.0 ** fmap.exp))
        assert np.abs(kernel).max() <= 128 and np.all(fp.c == c)
        expected = conv_matrix(dataclasses.replace(feed.op, params={**feed.op.params, "weight": kernel}))
        assert (fmap.mant != expected).nnz == 0, name
    assert again.feed["l0_lif"].source == HOST
    obs = frames(60, seed=5)
    graph = model_to_nir(out)
    fixed, ref = LoihiFixedTorch(graph).run(obs), ReferenceBackend(graph, dtype="float64").run(obs)
    assert np.mean(fixed.action == ref.action) >= 0.95
    assert np.median(np.abs(fixed.q - ref.q)) <= 1e-3 * np.abs(ref.q).max()


def test_kernel_weights_that_only_meet_padding_are_not_in_the_map() -> None:
    # rows: 2 in, kernel 5 tall, padding 4, stride 4: output row 0 reads input row 0 with tap 4,
    # output row 1 reads rows 0 and 1 with taps 0 and 1; taps 2 and 3 only ever meet padding
    op = Op("c", "conv2d", "Conv2d", [], (1, 2, 3), (2, 2, 3), params=dict(
        weight=np.ones((2, 1, 5, 1)), bias=np.zeros(2), stride=(4, 1), padding=(4, 0), dilation=(1, 1), groups=1))
    used = _used_taps(op)
    assert used.shape == (2, 1, 5, 1)
    assert used[:, 0, :, 0].tolist() == [[True, True, False, False, True]] * 2


def test_distillation_loss_asks_for_the_margin() -> None:
    q_t = torch.tensor([[1.0, 0.99]])
    a = torch.tensor([0])
    tied = distill_loss(q_t.clone(), q_t, a, scale=1.0, margin=0.1, adv_scale=0.005)
    wrong = distill_loss(torch.tensor([[0.98, 0.99]]), q_t, a, scale=1.0, margin=0.1, adv_scale=0.005)
    assert distill_loss(q_t.clone(), q_t, a, scale=1.0, margin=0.0, adv_scale=0.005) == 0
    assert tied > 0 and wrong > tied


def test_finetune_runs_end_to_end_and_writes_a_normal_checkpoint(tmp_path) -> None:
    ckpt = zoo("liu", hidden=(16, 16))
    s = Settings(episodes=2, epochs=2, max_steps=60, batch=64)
    out, summary = finetune(ckpt, s, log=lambda *_: None)
    assert 2 <= summary["observations"] <= 120 and len(summary["history"]) == 2  # 2 episodes of <= 60 steps
    assert all(v == 0 for v in summary["grid_mismatch"].values())
    # the written-back grid is the layer mode's, and --state-scale neuron keeps it: no population
    # moves, so lava-fixed runs the checkpoint the same in both modes
    assert summary["neuron_scale_moves"] == [] and neuron_scale_moves(ckpt) != []
    path = tmp_path / "ft.pt"
    save_checkpoint(out, path)
    back = load_checkpoint(path)
    ReferenceBackend(model_to_nir(back)).run(cartpole_obs(4).numpy())  # exports and runs


def test_command_line_writes_checkpoint_and_log(tmp_path, capsys) -> None:
    src = tmp_path / "m.pt"
    save_checkpoint(zoo("hahn", hidden=(16, 16)), src)
    code = main([str(src), "-o", str(tmp_path / "m.loihi.pt"), "--episodes", "1", "--epochs", "1",
                 "--eval-episodes", "1"])
    assert code == 0
    assert (tmp_path / "m.loihi.pt").is_file() and (tmp_path / "m.loihi.finetune.json").is_file()
    assert load_checkpoint(tmp_path / "m.loihi.pt").provenance["finetune"]["state_scale"] == "layer"
    assert "lava-fixed vs own float64 reference" in capsys.readouterr().out


@pytest.mark.skipif(not HAVE_LAVA, reason="lava-nc not installed")
def test_finetuned_conv_dsqn_runs_on_lava_fixed_with_the_agreement_it_reported(tmp_path) -> None:
    """The conv path end to end on real 36x36 Pong frames: fine-tune, write, export, and
    ``run-backend --target lava-fixed`` (Lava's processes) agrees with the checkpoint's float64
    reference exactly as often as the fine-tuner's report says, and spike for spike with its
    torch model."""
    from backends.base import Readout
    from backends.cli import main as run_backend
    from exporters.nirio import write_graph

    ckpt = conv_zoo("liu")
    out, summary = finetune(ckpt, Settings(episodes=1, epochs=2, max_steps=40, batch=20), log=lambda *_: None)
    assert summary["observations"] == 40 and len(summary["history"]) == 2
    assert all(v == 0 for v in summary["grid_mismatch"].values())
    before, after = ckpt.state_dict["layers.1.0.weight"], out.state_dict["layers.1.0.weight"]
    assert not torch.equal(before, after)  # the kernels were trained
    save_checkpoint(out, tmp_path / "ft.pt")
    teacher = ckpt.build()
    held, _ = record(ckpt, teacher, 1, 20_000, 0.0, 16)  # a greedy episode the fine-tuner did not see
    report = agreement_report(load_checkpoint(tmp_path / "ft.pt"), held, teacher)
    graph = model_to_nir(load_checkpoint(tmp_path / "ft.pt"))
    write_graph(graph, tmp_path / "ft.nir")
    np.save(tmp_path / "obs.npy", held)
    assert run_backend(["--target", "lava-fixed", str(tmp_path / "ft.nir"), "--inputs", str(tmp_path / "obs.npy"),
                        "--out", str(tmp_path / "r.npz")]) == 0
    lava = Readout.load(tmp_path / "r.npz")
    ref = ReferenceBackend(graph, dtype="float64").run(held)
    assert float(np.mean(lava.action == ref.action)) == report["agreement_fixed_vs_own_float"]
    mine = LoihiFixedTorch(graph).run(held)
    assert np.array_equal(mine.q, lava.q) and all(np.array_equal(mine.spikes[k], lava.spikes[k]) for k in lava.spikes)


@pytest.mark.parametrize("kind, kwargs, message", [
    ("dqn", {}, r"^error: model kind 'dqn' is not spiking: convert it first"),
    ("liu", {"gain": 1e5}, r"^error: node 'l0_lif': out of the fixed-point range: weights would saturate"),
    ("liu", {"arch": "nature_cnn", "obs_shape": (4, 36, 36), "gain": 1e5},
     r"^error: node 'l0_lif': out of the fixed-point range: weights would saturate"),
    ("poisson", {}, r"^error: node 'input': .*'current' encoding"),
])
def test_networks_that_cannot_be_finetuned_are_refused(tmp_path, capsys, kind, kwargs, message) -> None:
    gain = kwargs.pop("gain", None)
    ckpt = make_checkpoint(kind, seed=1, hidden=(8, 8), gain=gain, **kwargs)
    src = tmp_path / "m.pt"
    save_checkpoint(ckpt, src)
    assert main([str(src), "-o", str(tmp_path / "o.pt"), "--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    import re

    assert re.match(message, err[0]), err[0]
    assert not (tmp_path / "o.pt").exists()


def test_a_finetuning_that_loses_the_agents_actions_is_flagged(tmp_path, capsys) -> None:
    """Agreement with its own float reference can rise while the agent stops acting as the float
    agent did (too large a step): the command then says so on stderr, with what to change."""
    src = tmp_path / "m.pt"
    save_checkpoint(zoo("hahn", hidden=(16, 16)), src)
    assert main([str(src), "-o", str(tmp_path / "o.pt"), "--episodes", "1", "--epochs", "2",
                 "--eval-episodes", "1", "--lr", "3"]) == 0
    err = capsys.readouterr().err
    assert "warning: fine-tuning moved lava-fixed's actions away from the float agent's" in err
    assert "smaller --lr" in err
    held = json.loads((tmp_path / "o.finetune.json").read_text())["held_out"]
    assert held["after"]["agreement_fixed_vs_agent"] < held["before"]["agreement_fixed_vs_agent"] - 0.02
    assert main([str(src), "-o", str(tmp_path / "p.pt"), "--episodes", "1", "--epochs", "1",
                 "--eval-episodes", "1"]) == 0
    assert "warning" not in capsys.readouterr().err

"""``finetune-fixed``: the differentiable forward is lava-fixed's arithmetic exactly, gradients
reach every layer, the written checkpoint re-quantises to the grid it was trained on and runs
like its own float model, the command writes a normal checkpoint, and networks it cannot
fine-tune are refused with one line naming the layer and the limit."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from backends.finetune_fixed import (Settings, distill_loss, finetune, fixed_forward, grid_mismatch, main,
                                     make_grid, snap)
from backends.lava.torch_fixed import LoihiFixedTorch
from backends.reference import ReferenceBackend
from exporters.to_nir import model_to_nir
from exporters.zoo import cartpole_obs, make_checkpoint
from pipeline.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

pytestmark = pytest.mark.timeout(240)


def zoo(kind: str = "liu", gain: float = 3.0, hidden=(32, 32), T: int = 8) -> Checkpoint:
    return make_checkpoint(kind, seed=2, hidden=hidden, time_steps=T, gain=gain)


@pytest.mark.parametrize("kind", ["liu", "hahn", "chen"])
def test_differentiable_forward_is_lava_fixed_exactly(kind: str) -> None:
    ckpt = zoo(kind)
    model = ckpt.build()
    obs = cartpole_obs(50, seed=3).numpy()
    grid = make_grid(ckpt, model)
    q, action = fixed_forward(grid, torch.as_tensor(obs, dtype=torch.float64), alpha=2.0)
    exact = LoihiFixedTorch(model_to_nir(ckpt)).run(obs)
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
    assert "lava-fixed vs own float64 reference" in capsys.readouterr().out


@pytest.mark.parametrize("kind, kwargs, message", [
    ("dqn", {}, r"^error: model kind 'dqn' is not spiking: convert it first"),
    ("liu", {"gain": 1e5}, r"^error: node 'l0_lif': out of the fixed-point range: weights would saturate"),
    ("liu", {"arch": "nature_cnn", "obs_shape": (4, 84, 84)}, r"^error: node 'l0_conv': .*MLPs"),
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

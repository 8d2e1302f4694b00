"""The closed-loop bridge: real CartPole/MountainCar episodes through run-backend --env."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backends.cli import main as run_backend
from exporters.nirio import write_graph
from exporters.to_nir import model_to_nir
from pipeline.bridge import read_results
from pipeline.checkpoint import Checkpoint, save_checkpoint
from pipeline.evaluate import evaluate_checkpoint
from pipeline.models import build_model
from pipeline.spec import ModelSpec, NeuronParams


def make_graph(tmp_path: Path, name: str = "m", encoding: str = "current", seed: int = 0) -> tuple[Path, Path]:
    """A random-weight CartPole DSQN checkpoint and its NIR file (episodes are short)."""
    spec = ModelSpec(kind="dsqn", arch="mlp", obs_shape=(4,), n_actions=2, hidden=(16, 16),
                     neuron=NeuronParams(), time_steps=6, encoding=encoding).validate()
    torch.manual_seed(seed)
    model = build_model(spec)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    ckpt = Checkpoint(spec=spec, state_dict=model.state_dict(), env_id="CartPole-v1")
    pt, nir_path = tmp_path / f"{name}.pt", tmp_path / f"{name}.nir"
    save_checkpoint(ckpt, pt)
    write_graph(model_to_nir(ckpt), nir_path)
    return pt, nir_path


def loop(nir_path: Path, results: Path, *extra: str) -> int:
    return run_backend([str(nir_path), "--target", "reference", "--env", "CartPole-v1", "--results", str(results),
                        "--no-progress", *extra])


def episodes(results: Path) -> list[dict]:
    return read_results(results)[1]


def test_closed_loop_matches_torch_evaluation(tmp_path: Path):
    pt, nir_path = make_graph(tmp_path)
    res = tmp_path / "r.jsonl"
    assert loop(nir_path, res, "--episodes", "4", "--compare", str(pt), "--seed", "11",
                "--json", str(tmp_path / "s.json"), "--plot", str(tmp_path / "p.png")) == 0
    recs = episodes(res)
    assert [r["episode"] for r in recs] == [0, 1, 2, 3]
    assert all(r["agreement"] == 1.0 and r["q_abs_err"] <= 1e-5 for r in recs)
    torch_eval = evaluate_checkpoint(pt, episodes=4, seed=11, progress=False)
    assert [r["return"] for r in recs] == torch_eval["returns"]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["episodes"] == 4 and summary["agreement"] == 1.0 and set(summary["spikes_per_step"])
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_resume_skips_finished_episodes_and_redoes_torn_one(tmp_path: Path):
    _, nir_path = make_graph(tmp_path)
    full, part = tmp_path / "full.jsonl", tmp_path / "part.jsonl"
    assert loop(nir_path, full, "--episodes", "4", "--epsilon", "0.2") == 0
    assert loop(nir_path, part, "--episodes", "2", "--epsilon", "0.2") == 0
    first_two = part.read_text()
    with open(part, "a") as fh:  # an episode killed while being written
        fh.write('{"type": "episode", "episode": 2, "ret')
    assert loop(nir_path, part, "--episodes", "4", "--epsilon", "0.2", "--resume") == 0
    assert part.read_text().startswith(first_two.rstrip("\n"))  # finished episodes untouched
    a, b = episodes(full), episodes(part)
    keys = ("episode", "return", "length", "random_actions")
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    assert sum(1 for r in b if r["episode"] == 2) == 1


def test_resume_refuses_other_settings_and_overwrite(tmp_path: Path, capsys):
    _, nir_path = make_graph(tmp_path)
    res = tmp_path / "r.jsonl"
    assert loop(nir_path, res, "--episodes", "1") == 0
    assert loop(nir_path, res, "--episodes", "2") == 2
    assert "--resume" in capsys.readouterr().err
    assert loop(nir_path, res, "--episodes", "2", "--resume", "--seed", "5") == 2
    assert "settings differ (seed: 0 -> 5)" in capsys.readouterr().err


def test_poisson_graph_gets_the_same_spikes_on_both_sides(tmp_path: Path):
    _, nir_path = make_graph(tmp_path, encoding="poisson")
    res = tmp_path / "r.jsonl"
    assert loop(nir_path, res, "--episodes", "2", "--compare", "reference") == 0
    assert all(r["agreement"] == 1.0 and r["q_abs_err"] <= 1e-5 for r in episodes(res))


@pytest.mark.parametrize("args, needle", [
    (["--env", "MountainCar-v0"], "input has shape (4,) but MountainCar-v0 observations have shape (2,)"),
    (["--env", "Acrobot-v1"], "input has shape (4,) but Acrobot-v1"),
    (["--env", "Nope-v0"], "unknown environment 'Nope-v0'"),
    (["--env", "CartPole-v1", "--episodes", "0"], "--episodes must be >= 1"),
    (["--env", "CartPole-v1", "--compare", "nest2"], "unknown comparison target 'nest2'"),
    (["--env", "CartPole-v1", "--target", "loihi"], "unknown target 'loihi'"),
    (["--env", "CartPole-v1", "--inputs", "x.npy"], "choose one mode"),
])
def test_bad_closed_loop_input(tmp_path: Path, capfd, args: list[str], needle: str):
    """run-backend's main in this process, stderr read at the descriptor; a real process below."""
    _, nir_path = make_graph(tmp_path)
    capfd.readouterr()
    code = run_backend([str(nir_path), *args, "--results", str(tmp_path / "r.jsonl"), "--no-progress"])
    err = capfd.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert not (tmp_path / "r.jsonl").exists()


def test_bad_closed_loop_input_on_the_command_line(tmp_path: Path):
    """The console contract as a user meets it: a real process, exit 2, nothing on stderr but the line."""
    _, nir_path = make_graph(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "backends.cli", str(nir_path), "--env", "MountainCar-v0",
                           "--results", str(tmp_path / "r.jsonl"), "--no-progress"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "MountainCar-v0 observations" in lines[0], \
        proc.stderr
    assert not (tmp_path / "r.jsonl").exists()


def test_compare_converted_graph_with_its_dqn(tmp_path: Path):
    """--compare dqn.pt on a converted graph: the DQN sees its own preprocessing and its Q comes in
    the graph's readout units, so at large T the error is small against the readout's scale."""
    from pipeline.convert import convert, make_parser
    from pipeline.policy import CheckpointBackend

    dqn_spec = ModelSpec(kind="dqn", arch="mlp", obs_shape=(4,), n_actions=2, hidden=(16, 16)).validate()
    torch.manual_seed(3)
    dqn = Checkpoint(spec=dqn_spec, state_dict=build_model(dqn_spec).state_dict(), env_id="CartPole-v1")
    dqn_pt, snn_pt, nir_path = tmp_path / "dqn.pt", tmp_path / "snn.pt", tmp_path / "snn.nir"
    save_checkpoint(dqn, dqn_pt)
    convert(make_parser().parse_args([str(dqn_pt), "-o", str(snn_pt), "-T", "2000", "--norm", "data",
                                      "--calib-steps", "300", "--eval-obs", "0", "--v-init", "0.5", "--no-progress"]))
    from pipeline.checkpoint import load_checkpoint

    graph = model_to_nir(load_checkpoint(snn_pt))
    write_graph(graph, nir_path)
    res = tmp_path / "r.jsonl"
    assert loop(nir_path, res, "--episodes", "1", "--max-steps", "30", "--compare", str(dqn_pt)) == 0
    rec = episodes(res)[0]
    mapped = CheckpointBackend(dqn_pt, graph.metadata)
    plain = CheckpointBackend(dqn_pt)
    obs = torch.randn(8, 4).numpy()
    # mapped Q is an affine image of the DQN's Q: same actions, other units
    assert (mapped.run_raw(obs).action == plain.run_raw(obs).action).all()
    assert not torch.allclose(torch.as_tensor(mapped.run_raw(obs).q), torch.as_tensor(plain.run_raw(obs).q))
    # the graph's robust rates are <= 1 per step; the DQN in those units is within a few 1/T of them
    assert rec["q_abs_err"] < 0.05, rec


def test_numpy_preprocess_equals_the_torch_preprocessor_bit_for_bit():
    """The closed loop's numpy preprocessing and the module SB3 trains with give the same bytes:
    float32 and float64 observations with per-feature offsets/scales, uint8 frames scaled by 1/255."""
    import numpy as np

    from pipeline.envs import Preprocessor, preprocess
    from pipeline.spec import Preprocessing

    rng = np.random.default_rng(0)
    cases = [(rng.standard_normal((64, 4)).astype(np.float32),
              Preprocessing(offset=(0.1, -0.3, 0.7, 2.0), scale=(0.5, 1 / 3, 7.0, 1 / 1.2))),
             (rng.standard_normal((64, 2)) * 3, Preprocessing(offset=(-0.3, 0.0), scale=(1 / 0.9, 1 / 0.07))),
             (rng.integers(0, 256, (3, 4, 84, 84), dtype=np.uint8), Preprocessing(offset=(0.0,), scale=(1 / 255,))),
             (rng.standard_normal((5, 4)).astype(np.float32), Preprocessing())]
    for x, pre in cases:
        with torch.no_grad():
            want = Preprocessor(pre)(torch.as_tensor(x)).numpy()
        got = preprocess(x, pre)
        assert got.dtype == np.float32 and got.tobytes() == want.tobytes()

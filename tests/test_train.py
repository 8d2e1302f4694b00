"""train-agent: real (short) SB3 runs on CartPole and Atari, determinism, outputs, bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.pong_agents import describe_agent
from pipeline.checkpoint import load_checkpoint, save_checkpoint
from pipeline.envs import ATARI_EVAL_EPSILON
from pipeline.train import final_evaluation
from pipeline.train import main as train_main

TINY = ["--steps", "600", "--hp", "learning_starts=100", "--hp", "train_freq=50", "--hp", "gradient_steps=5",
        "--hp", "eval_freq=300", "--hp", "eval_episodes=1", "--hp", "final_eval_episodes=2",
        "--hidden", "8", "--no-progress"]


def run_train(out: Path, *extra: str) -> None:
    assert train_main(["--env", "CartPole-v1", *extra, *TINY, "-o", str(out)]) == 0


def test_same_seed_same_run_and_all_outputs(tmp_path: Path):
    a, b = tmp_path / "a" / "m.pt", tmp_path / "b" / "m.pt"
    run_train(a, "--model", "dsqn", "-T", "4", "--seed", "7")
    run_train(b, "--model", "dsqn", "-T", "4", "--seed", "7")
    for suffix in (".pt", ".last.pt", ".eval.csv", ".train.json", ".curve.png"):
        assert (a.parent / f"m{suffix}").is_file(), suffix
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert ca.spec == cb.spec and ca.spec.time_steps == 4 and ca.spec.variant == "liu"
    for k in ca.state_dict:
        assert torch.equal(ca.state_dict[k], cb.state_dict[k]), k
    rows = lambda p: [(r["timesteps"], r["mean_return"], r["train_return_last100"])  # noqa: E731
                      for r in csv.DictReader(open(p))]
    assert rows(a.with_name("m.eval.csv")) == rows(b.with_name("m.eval.csv"))
    last = list(csv.DictReader(open(a.with_name("m.eval.csv"))))[-1]  # CartPole episodes end within TINY's steps
    assert int(last["train_episodes_last100"]) > 0 and float(last["train_return_last100"]) > 0
    summary = json.loads(a.with_name("m.train.json").read_text())
    assert summary["final_eval"]["episodes"] == 2
    prov = ca.provenance
    assert prov["seed"] == 7 and "torch" in prov["versions"] and prov["evaluation"]["episodes"] == 2
    # a different seed gives a different run
    c = tmp_path / "c" / "m.pt"
    run_train(c, "--model", "dsqn", "-T", "4", "--seed", "8")
    cc = load_checkpoint(c)
    assert any(not torch.equal(ca.state_dict[k], cc.state_dict[k]) for k in ca.state_dict)


@pytest.mark.parametrize("model", ["dqn", "chen-dsqn", "if-dsqn"])
def test_every_model_trains(tmp_path: Path, model: str):
    out = tmp_path / "m.pt"
    extra = ["--double"] if model == "dqn" else ["-T", "3"]
    run_train(out, "--model", model, *extra)
    ckpt = load_checkpoint(out)
    expected = {"dqn": ("dqn", None), "chen-dsqn": ("dsqn", "membrane_max"), "if-dsqn": ("dsqn", "voltage")}[model]
    assert ckpt.spec.kind == expected[0]
    if expected[1]:
        assert ckpt.spec.readout == expected[1]
    if model == "dqn":
        assert ckpt.provenance["hyperparams"]["double_dqn"] is True


def test_mountaincar_scaled_observations(tmp_path: Path):
    out = tmp_path / "mc.pt"
    assert train_main(["--env", "MountainCar-v0", "--model", "dsqn", "-T", "3", "--scale-obs", *TINY,
                       "-o", str(out)]) == 0
    pre = load_checkpoint(out).preprocessing
    assert pre.offset == pytest.approx((-0.3, 0.0)) and pre.scale == pytest.approx((1 / 0.9, 1 / 0.07))


def test_atari_dsqn_short_run(tmp_path: Path):
    """A real ALE Pong run with the Nature-CNN DSQN at a tiny T: env, wrappers, n-step replay, updates."""
    out = tmp_path / "pong.pt"
    code = train_main(["--env", "ALE/Pong-v5", "--model", "dsqn", "-T", "2", "--steps", "160",
                       "--hp", "buffer_size=400", "--hp", "learning_starts=40", "--hp", "batch_size=4",
                       "--hp", "train_freq=4", "--hp", "n_steps=3", "--hp", "eval_freq=100000", "--hp", "eval_episodes=1",
                       "--hp", "final_eval_episodes=0", "--hp", "target_update_interval=50",
                       "--no-progress", "-o", str(out)])
    assert code == 0
    ckpt = load_checkpoint(out)
    assert ckpt.spec.arch == "nature_cnn" and ckpt.spec.obs_shape == (4, 84, 84) and ckpt.spec.n_actions == 6
    assert ckpt.preprocessing.scale == pytest.approx((1 / 255,))
    assert ckpt.preprocessing.atari["frame_skip"] == 4 and ckpt.preprocessing.atari["noop_max"] == 30
    # the final evaluation on Atari also plays DESIGN.md's protocol (epsilon 0.05) and records both
    ckpt.preprocessing.atari["max_episode_steps"] = 40  # short episodes: this checks the wiring, not a score
    save_checkpoint(ckpt, out)
    result = final_evaluation(out, episodes=2, seed=5, best_step=160, progress=False)
    prov = load_checkpoint(out).provenance
    assert prov["evaluation"]["epsilon"] == 0.0 and prov["evaluation"]["episodes"] == 2
    assert prov["evaluation_atari_protocol"]["epsilon"] == ATARI_EVAL_EPSILON == 0.05
    assert prov["evaluation_atari_protocol"]["seed"] == 5 and result["protocol"]["episodes"] == 2
    assert "epsilon 0.05 (Atari protocol)" in describe_agent(prov)


def test_init_rate_wakes_the_network_and_stays_deterministic(tmp_path: Path):
    """--hp init_rate: the data-dependent init runs before training, is recorded, and the same
    seed still gives the same run; without it the first hidden layers are left as PyTorch made them."""
    runs = {}
    for name, extra in (("a", ["--hp", "init_rate=0.25"]), ("b", ["--hp", "init_rate=0.25"]), ("plain", [])):
        out = tmp_path / name / "m.pt"
        run_train(out, "--model", "dsqn", "-T", "4", "--seed", "3", *extra)  # TINY: one hidden layer of 8
        runs[name] = (load_checkpoint(out), json.loads(out.with_name("m.train.json").read_text()))
    (a, sa), (b, sb), (plain, sp) = runs["a"], runs["b"], runs["plain"]
    assert sa["init_rates"] == pytest.approx([0.25], abs=0.02) and sa["init_rates"] == sb["init_rates"]
    assert "init_rates" not in sp and a.provenance["hyperparams"]["init_rate"] == 0.25
    for k in a.state_dict:
        assert torch.equal(a.state_dict[k], b.state_dict[k]), k
    assert not torch.equal(a.state_dict["layers.0.0.weight"], plain.state_dict["layers.0.0.weight"])


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--env", "NoSuchEnv-v0", "--model", "dsqn"], "unknown environment 'NoSuchEnv-v0'; valid choices: CartPole-v1"),
        (["--env", "CartPole-v1", "--model", "snn"], "unknown model 'snn'; valid choices: dqn, dsqn"),
        (["--env", "CartPole-v1", "--readout", "argmax"], "unknown readout 'argmax'; valid choices: rate"),
        (["--env", "CartPole-v1", "--hp", "lr=0.1"], "unknown hyperparameter 'lr'; valid choices: batch_size"),
        (["--env", "CartPole-v1", "--hp", "gamma=high"], "hyperparameter gamma needs a float"),
        (["--env", "CartPole-v1", "--hp", "init_rate=1.5"], "init_rate must lie in [0, 1)"),
        (["--env", "CartPole-v1", "--preset", "fast"], "unknown hyperparameter preset 'fast'"),
        (["--env", "CartPole-v1", "--model", "dqn", "-T", "8"], "--model dqn takes no spiking options"),
        (["--env", "CartPole-v1", "--arch", "nature_cnn"], "does not fit CartPole-v1"),
        (["--env", "CartPole-v1", "--envs", "3", "--hp", "train_freq=4"], "--envs 3 does not keep train_freq=4"),
        (["--env", "CartPole-v1", "--envs", "0"], "--envs"),
        (["--env", "CartPole-v1", "--device", "tpu"], "--device must be one of auto, cpu, cuda"),
    ],
)
def test_bad_input_one_line_error(tmp_path: Path, capfd, args: list[str], needle: str):
    """In this process (train-agent's main, through cli_entry); the real command line once below."""
    assert train_main([*args, "-o", str(tmp_path / "x.pt")]) == 2
    err = capfd.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert not (tmp_path / "x.pt").exists()


def test_bad_input_on_the_command_line_is_one_line_and_exit_2(tmp_path: Path):
    """The console contract as a user meets it: a real process, whose stderr holds nothing but the line."""
    argv = ["--env", "CartPole-v1", "--hp", "gamma=high", "-o", str(tmp_path / "x.pt")]
    proc = subprocess.run([sys.executable, "-m", "pipeline.train", *argv], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "hyperparameter gamma needs a float" in lines[0], proc.stderr
    assert not (tmp_path / "x.pt").exists()


def test_mountaincar_shaping_is_potential_based() -> None:
    """Shaped rewards telescope: with gamma 1 an episode's shaped sum is the true sum plus Phi(end) - Phi(start)."""
    import gymnasium as gym

    from pipeline.envs import REWARD_SHAPINGS, shape_reward

    _, potential, scale = REWARD_SHAPINGS["mountaincar-energy"]
    env = shape_reward(gym.make("MountainCar-v0", max_episode_steps=50), "MountainCar-v0", "mountaincar-energy", 1.0)
    obs, _ = env.reset(seed=0)
    first = scale * potential(obs)
    shaped = true = 0.0
    done = False
    while not done:
        obs, r, term, trunc, info = env.step(2)
        shaped += r
        true += info["true_reward"]
        done = term or trunc
    assert true == -50.0 and not term
    assert shaped == pytest.approx(true + scale * potential(obs) - first)
    assert shaped != true  # pushing right changes the car's energy


def test_save_state_and_resume(tmp_path: Path, capsys, recwarn):
    """A run saved with --save-state continues with --resume: its log, counters and best model go on."""
    out = tmp_path / "r" / "m.pt"
    base = ["--env", "CartPole-v1", "--model", "dsqn", "-T", "4", "--seed", "3", "--hp", "n_steps=3", *TINY,
            "-o", str(out)]
    assert train_main([*base, "--save-state", "--hp", "final_eval_episodes=0"]) == 0
    state = json.loads(out.with_name("m.state.json").read_text())
    assert state["timesteps"] == 600 and out.with_name("m.state.pt").is_file() and out.with_name("m.replay.npz").is_file()
    assert not out.with_name("m.state.zip").exists() and not out.with_name("m.replay.pkl").exists()
    first = list(csv.DictReader(open(out.with_name("m.eval.csv"))))
    assert [int(r["timesteps"]) for r in first] == [300, 600]
    # bad resumes: nothing to resume, other settings, nothing left to do
    capsys.readouterr()
    assert train_main([*base[:-1], str(tmp_path / "other.pt"), "--resume"]) == 2
    assert "--resume: no saved training state" in capsys.readouterr().err
    assert train_main([*base, "--resume", "--hidden", "16"]) == 2
    assert "the saved run used other settings (spec)" in capsys.readouterr().err
    assert train_main([*base, "--resume"]) == 2  # 600 of 600 steps: --steps must grow
    assert "already has 600 of 600 steps" in capsys.readouterr().err
    assert train_main([*base, "--trust-legacy-state"]) == 2
    assert "--trust-legacy-state only goes with --resume" in capsys.readouterr().err
    recwarn.clear()
    assert train_main([*base, "--resume", "--steps", "1200"]) == 0
    assert not [w for w in recwarn if "is ignored" in str(w.message)]  # SB3's false n-step warning is silenced
    rows = list(csv.DictReader(open(out.with_name("m.eval.csv"))))
    assert [int(r["timesteps"]) for r in rows] == [300, 600, 900, 1200]
    assert rows[:2] == first  # the earlier evaluations are kept as they were
    assert float(rows[2]["elapsed_s"]) >= float(first[-1]["elapsed_s"])
    assert load_checkpoint(out.with_name("m.last.pt")).provenance["training_steps"] == 1200
    assert json.loads(out.with_name("m.state.json").read_text())["timesteps"] == 1200


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA: --device cuda is valid here")
def test_device_cuda_without_gpu_is_one_error(tmp_path: Path, capsys):
    assert train_main(["--env", "CartPole-v1", "--device", "cuda", *TINY, "-o", str(tmp_path / "m.pt")]) == 2
    assert "--device cuda: torch sees no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


def test_vector_schedule_keeps_the_replay_ratio():
    from pipeline.errors import UserError
    from pipeline.sb3_glue import vector_schedule

    assert vector_schedule(4, 1, 1) == (4, 1)
    assert vector_schedule(4, 1, 2) == (2, 1)  # 2 calls x 2 envs = 4 transitions per update
    assert vector_schedule(4, 1, 8) == (1, 2)  # 8 transitions per call: 2 updates
    assert vector_schedule(256, 128, 4) == (64, 128)
    with pytest.raises(UserError, match="--envs 3"):
        vector_schedule(4, 1, 3)


def test_vectorised_training_same_updates_per_transition(tmp_path: Path, capsys):
    """--envs 2 steps two worker processes; evaluations fall on the same steps, the learner makes
    as many updates per transition as with one env, and a resume must repeat --envs."""
    one, two = tmp_path / "one" / "m.pt", tmp_path / "two" / "m.pt"
    run_train(one, "--model", "dqn", "--save-state", "--hp", "final_eval_episodes=0")
    run_train(two, "--model", "dqn", "--envs", "2", "--save-state", "--hp", "final_eval_episodes=0")
    for out in (one, two):
        rows = list(csv.DictReader(open(out.with_name("m.eval.csv"))))
        assert [int(r["timesteps"]) for r in rows] == [300, 600]
    updates = [torch.load(o.with_name("m.state.pt"), weights_only=True)["counters"]["_n_updates"] for o in (one, two)]
    assert updates[0] == updates[1] > 0
    assert load_checkpoint(two).provenance["envs"] == 2
    capsys.readouterr()
    assert train_main(["--env", "CartPole-v1", "--model", "dqn", *TINY, "--steps", "900", "--resume",
                       "-o", str(two)]) == 2  # --envs 2 left out
    assert "the saved run used other settings (envs)" in capsys.readouterr().err
    assert train_main(["--env", "CartPole-v1", "--model", "dqn", "--envs", "2", *TINY, "--steps", "900",
                       "--resume", "-o", str(two)]) == 0
    assert json.loads(two.with_name("m.state.json").read_text())["timesteps"] == 900


def test_replay_memory_error_names_settings_that_fit(monkeypatch):
    """liu-atari's 1e6-frame buffer on a small machine: the error gives a buffer_size that fits,
    and proposes optimize_memory_usage only where it is allowed (n_steps 1) and enough."""
    import pipeline.hyperparams as hps
    from pipeline.errors import UserError

    monkeypatch.setattr(hps, "cgroup_available", lambda: 10 * 2**30)
    monkeypatch.setattr(hps, "rlimit_available", lambda: None)
    frame = 4 * 84 * 84  # bytes of one stacked Atari observation
    with pytest.raises(UserError) as err:
        hps.check_replay_memory(hps.HP_PRESETS["liu-atari"], frame)
    fits = int(0.8 * 10 * 2**30 // (2 * frame)) // 1000 * 1000
    assert f"--hp buffer_size={fits}" in str(err.value) and "optimize_memory_usage" not in str(err.value)
    hps.check_replay_memory(hps.parse_hp(hps.HP_PRESETS["liu-atari"], [f"buffer_size={fits}"]), frame)  # fits
    monkeypatch.setattr(hps, "cgroup_available", lambda: 4 * 2**30)
    with pytest.raises(UserError, match="optimize_memory_usage=true"):
        hps.check_replay_memory(hps.HP_PRESETS["atari"], frame)  # 5.3 GiB; 2.6 GiB stored once
    with pytest.raises(UserError) as err:
        hps.check_replay_memory(hps.parse_hp(hps.HP_PRESETS["atari"], ["n_steps=3"]), frame)
    assert "optimize_memory_usage" not in str(err.value)  # SB3's n-step buffer cannot store frames once


def test_no_progress_still_reports_progress_and_evaluations(tmp_path: Path, capsys, monkeypatch):
    """--no-progress is not silence: one line per period (DSQN_PROGRESS_SECONDS, 60 s; 0 here) and
    one before and after every evaluation, so a long run shows that it is alive and where it is."""
    monkeypatch.setenv("DSQN_PROGRESS_SECONDS", "0")
    run_train(tmp_path / "m.pt", "--model", "dqn")
    err = capsys.readouterr().err
    assert "[train] step " in err and " steps/s, epsilon " in err
    assert "[eval] step 300: 1 greedy episode..." in err and "[eval] step 300: return " in err
    assert "[final eval] 2 greedy episodes of m.pt" in err
    assert json.loads((tmp_path / "m.train.json").read_text())["steps_per_second"] > 0


def test_train_cli_names_every_reward_shaping():
    """train-agent's parser lists the shapings without importing Gymnasium; it must not drift."""
    from pipeline.envs import REWARD_SHAPINGS
    from pipeline.train_cli import REWARD_SHAPING_NAMES

    assert tuple(REWARD_SHAPINGS) == REWARD_SHAPING_NAMES

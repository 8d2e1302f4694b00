"""import-agent: SB3 zips (written by SB3 itself here) and plain state_dicts become checkpoints whose
greedy actions are SB3's; nothing is unpickled; bad input is one line and exit 2."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.checkpoint import load_checkpoint
from pipeline.errors import UserError
from pipeline.models import act_greedy
from pipeline.picklescan import read_vecnormalize, scan
from pipeline.sb3_import import import_sb3, import_state_dict, main as import_main

FIXTURES = Path(__file__).parent / "fixtures" / "sb3"
RELU = dict(activation_fn=torch.nn.ReLU)


def obs_batch(n: int, dim: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).uniform(-1, 1, size=(n, dim)) * scale).astype(np.float32)


@pytest.fixture(scope="module")
def agents(tmp_path_factory):
    """Small SB3 agents (a few hundred steps each: the weights only need to be non-trivial)."""
    from stable_baselines3 import A2C, DQN, PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    d = tmp_path_factory.mktemp("sb3")
    out = {}
    dqn = DQN("MlpPolicy", "CartPole-v1", learning_starts=50, buffer_size=500, seed=0)
    dqn.learn(200)
    dqn.save(d / "dqn.zip")
    out["dqn"] = dqn
    ppo = PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, n_epochs=2, seed=0,
              policy_kwargs=dict(RELU, net_arch=[32, 16]))
    ppo.learn(128)
    ppo.save(d / "ppo.zip")
    out["ppo"] = ppo
    venv = VecNormalize(make_vec_env("MountainCar-v0", n_envs=1, seed=0))
    a2c = A2C("MlpPolicy", venv, n_steps=8, seed=0, policy_kwargs=RELU)
    a2c.learn(200)
    a2c.save(d / "a2c.zip")
    venv.save(str(d / "vecnormalize.pkl"))
    out["a2c"], out["a2c_venv"] = a2c, venv
    tanh = A2C("MlpPolicy", "CartPole-v1", n_steps=8, seed=0)
    tanh.save(d / "a2c_tanh.zip")
    cont = PPO("MlpPolicy", "Pendulum-v1", n_steps=8, batch_size=8, seed=0, policy_kwargs=RELU)
    cont.save(d / "ppo_pendulum.zip")
    out["dir"] = d
    return out


def test_dqn_zip_gives_the_same_q(agents, tmp_path):
    d = agents["dir"]
    assert import_main([str(d / "dqn.zip"), "-o", str(tmp_path / "m.pt")]) == 0
    ckpt = load_checkpoint(tmp_path / "m.pt")
    assert ckpt.env_id == "CartPole-v1"  # inferred from the spaces
    assert (ckpt.spec.kind, ckpt.spec.arch, ckpt.spec.hidden) == ("dqn", "mlp", (64, 64))
    assert ckpt.provenance["imported"]["algorithm"] == "DQN"
    obs = obs_batch(256, 4, scale=2.0)
    with torch.no_grad():
        ours = ckpt.build()(torch.as_tensor(obs))
        theirs = agents["dqn"].q_net(torch.as_tensor(obs))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    actions, _ = agents["dqn"].predict(obs, deterministic=True)
    assert np.array_equal(act_greedy(ckpt.build(), torch.as_tensor(obs)).numpy(), actions)


def test_ppo_actor_gives_sb3s_deterministic_action(agents):
    ckpt = import_sb3(agents["dir"] / "ppo.zip", "CartPole-v1")
    assert ckpt.spec.hidden == (32, 16) and ckpt.spec.variant == "sb3-ppo"
    obs = obs_batch(512, 4, seed=1, scale=2.0)
    model = ckpt.build()
    policy = agents["ppo"].policy
    with torch.no_grad():
        logits = model(torch.as_tensor(obs))
        dist = policy.get_distribution(torch.as_tensor(obs)).distribution
    # SB3's Categorical keeps normalised logits: equal up to the log-sum-exp shift
    torch.testing.assert_close(torch.log_softmax(logits, -1), dist.logits, rtol=0, atol=1e-5)
    actions, _ = agents["ppo"].predict(obs, deterministic=True)
    assert np.array_equal(act_greedy(model, torch.as_tensor(obs)).numpy(), actions)


def test_a2c_with_vecnormalize_statistics(agents, tmp_path):
    d = agents["dir"]
    ckpt = import_sb3(d / "a2c.zip", "MountainCar-v0", d / "vecnormalize.pkl")
    venv = agents["a2c_venv"]
    np.testing.assert_allclose(ckpt.preprocessing.offset, venv.obs_rms.mean, rtol=1e-12)
    np.testing.assert_allclose(ckpt.preprocessing.scale, 1 / np.sqrt(venv.obs_rms.var + venv.epsilon),
                               rtol=1e-6)
    raw = np.column_stack([np.random.default_rng(2).uniform(-1.2, 0.6, 400),
                           np.random.default_rng(3).uniform(-0.07, 0.07, 400)]).astype(np.float32)
    from pipeline.envs import preprocess

    ours = act_greedy(ckpt.build(), torch.as_tensor(preprocess(raw, ckpt.preprocessing))).numpy()
    theirs, _ = agents["a2c"].predict(venv.normalize_obs(raw), deterministic=True)
    assert (ours == theirs).mean() >= 0.99  # float32 vs float64 normalisation may flip a near-tie
    assert ckpt.provenance["imported"]["vecnormalize"]["clip_obs"] == 10.0


def test_qrdqn_head_is_the_mean_quantile():
    ckpt = import_sb3(FIXTURES / "qrdqn_cartpole.zip", "CartPole-v1")
    ref = np.load(FIXTURES / "qrdqn_cartpole.npz")
    with torch.no_grad():
        q = ckpt.build()(torch.as_tensor(ref["obs"])).numpy()
    np.testing.assert_allclose(q, ref["q"], rtol=0, atol=1e-5)
    assert np.array_equal(q.argmax(1), ref["actions"])


def test_plain_state_dict_with_named_architecture(agents, tmp_path):
    sd_path = tmp_path / "q.pth"
    torch.save(agents["dqn"].q_net.q_net.state_dict(), sd_path)  # keys 0.*, 2.*, 4.*
    ckpt = import_state_dict(sd_path, "CartPole-v1", "mlp", (64, 64))
    obs = obs_batch(64, 4)
    with torch.no_grad():
        torch.testing.assert_close(ckpt.build()(torch.as_tensor(obs)), agents["dqn"].q_net(torch.as_tensor(obs)))
    with pytest.raises(UserError, match=r"layer|shape .* where --arch mlp --hidden 32,32"):
        import_state_dict(sd_path, "CartPole-v1", "mlp", (32, 32))
    # the whole SB3 policy's state_dict: the target network is skipped, the names are SB3's
    torch.save(agents["dqn"].policy.state_dict(), tmp_path / "policy.pth")
    assert import_main([str(tmp_path / "policy.pth"), "--arch", "mlp", "--env", "CartPole-v1",
                        "-o", str(tmp_path / "p.pt")]) == 0


@pytest.mark.parametrize("name, argv, message", [
    ("a2c_tanh.zip", [], "activation Tanh is unsupported"),
    ("ppo_pendulum.zip", [], "action space Box (continuous actions) is unsupported"),
    ("dqn.zip", ["--env", "MountainCar-v0"], "does not fit --env MountainCar-v0"),
    ("FIX:recurrentppo_cartpole.zip", [], "RecurrentPPO (an LSTM policy) agents cannot be imported"),
    ("dqn.zip", ["--arch", "mlp"], "--arch is for plain state_dicts"),
])
def test_bad_agents_are_one_line_and_exit_2(agents, tmp_path, capsys, name, argv, message):
    src = FIXTURES / name[4:] if name.startswith("FIX:") else agents["dir"] / name
    assert import_main([str(src), "-o", str(tmp_path / "x.pt"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "x.pt").exists()


def test_state_dict_errors(tmp_path, capsys):
    torch.save(torch.nn.Linear(4, 2), tmp_path / "module.pt")  # a pickled module, not a state_dict
    assert import_main([str(tmp_path / "module.pt"), "--arch", "mlp", "--env", "CartPole-v1",
                        "-o", str(tmp_path / "x.pt")]) == 2
    assert "not a plain torch state_dict" in capsys.readouterr().err
    torch.save({"w": torch.zeros(3)}, tmp_path / "sd.pt")
    assert import_main([str(tmp_path / "sd.pt"), "-o", str(tmp_path / "x.pt")]) == 2
    assert "needs --arch" in capsys.readouterr().err
    assert import_main([str(tmp_path / "sd.pt"), "--arch", "mlp", "--env", "CartPole-v1",
                        "-o", str(tmp_path / "x.pt")]) == 2
    assert "1 weight tensors do not match --arch mlp --hidden 64,64" in capsys.readouterr().err


def test_checkpoint_loading_names_sb3_zips_and_state_dicts(agents, tmp_path):
    with pytest.raises(UserError, match="this is a Stable-Baselines3 zip.*use import-agent"):
        load_checkpoint(agents["dir"] / "dqn.zip")
    torch.save(agents["dqn"].q_net.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(UserError, match="a plain torch state_dict.*use import-agent"):
        load_checkpoint(tmp_path / "sd.pt")


class _Boom:
    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_picklescan_never_runs_the_pickle(tmp_path):
    boom = _Boom()
    boom.target = str(tmp_path / "ran")
    payload = pickle.dumps({"obs_rms": boom})
    (tmp_path / "evil.pkl").write_bytes(payload)
    top = scan(payload)
    assert not (tmp_path / "ran").exists()
    assert top["obs_rms"].func.name == "Path.touch"  # only a record of what it would have called
    with pytest.raises(UserError, match="not SB3 VecNormalize statistics"):
        read_vecnormalize(tmp_path / "evil.pkl")
    assert not (tmp_path / "ran").exists()
    (tmp_path / "junk.pkl").write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(UserError, match="not a readable pickle"):
        read_vecnormalize(tmp_path / "junk.pkl")


@pytest.mark.slow
def test_atari_cnn_agents(tmp_path):
    """A DQN and a PPO with SB3's Nature CNN on stacked Pong frames (a few steps each)."""
    import gymnasium as gym
    import ale_py
    from stable_baselines3 import DQN, PPO
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    env = VecFrameStack(make_atari_env("ALE/Pong-v5", n_envs=1, seed=0), n_stack=4)
    dqn = DQN("CnnPolicy", env, buffer_size=64, learning_starts=8, train_freq=4, seed=0)
    dqn.learn(16)
    dqn.save(tmp_path / "dqn.zip")
    ppo = PPO("CnnPolicy", env, n_steps=8, batch_size=8, n_epochs=1, seed=0,
              policy_kwargs=dict(share_features_extractor=False))
    ppo.learn(8)
    ppo.save(tmp_path / "ppo.zip")
    env.close()
    frames = np.random.default_rng(0).integers(0, 256, size=(8, 4, 84, 84), dtype=np.uint8)
    from pipeline.envs import preprocess

    for name, agent in (("dqn", dqn), ("ppo", ppo)):
        ckpt = import_sb3(tmp_path / f"{name}.zip", "ALE/Pong-v5")
        assert ckpt.spec.arch == "nature_cnn" and ckpt.preprocessing.scale == (1 / 255,)
        assert ckpt.preprocessing.atari["frame_stack"] == 4
        x = torch.as_tensor(preprocess(frames, ckpt.preprocessing))
        with torch.no_grad():
            ours = ckpt.build()(x)
            if name == "dqn":
                torch.testing.assert_close(ours, agent.q_net(torch.as_tensor(frames)), rtol=0, atol=1e-5)
            else:
                ref = agent.policy.get_distribution(torch.as_tensor(frames)).distribution.logits
                torch.testing.assert_close(torch.log_softmax(ours, -1), ref, rtol=0, atol=1e-5)
    with pytest.raises(UserError, match="does not fit --env ALE/Breakout-v5"):
        import_sb3(tmp_path / "dqn.zip", "ALE/Breakout-v5")  # 4 actions, not Pong's 6

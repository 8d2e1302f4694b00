"""Stable-Baselines3 glue: one of our networks as SB3's Q-network, Double DQN, a new agent.

SB3 supplies the replay buffer, target network, epsilon schedule and callbacks; our network
(``pipeline.models``) is plugged in as the Q-network through a small policy subclass. Double DQN
is a two-line change of SB3's TD target (:class:`DoubleDQN`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3 import DQN as SB3DQN
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork

from pipeline.envs import Preprocessor
from pipeline.errors import UserError
from pipeline.hyperparams import Hyperparams, lr_schedule
from pipeline.models import build_model
from pipeline.spec import ModelSpec, Preprocessing


class PreprocessExtractor(BaseFeaturesExtractor):
    """SB3 'features extractor' that only applies the checkpoint's observation preprocessing."""

    def __init__(self, observation_space, preprocessing: dict[str, Any]):
        super().__init__(observation_space, features_dim=1)
        self.pre = Preprocessor(Preprocessing.from_dict(preprocessing))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.pre(obs)


class ModelQNetwork(QNetwork):
    """SB3 QNetwork whose ``q_net`` is one of our models instead of an MLP."""

    def __init__(self, model: torch.nn.Module, **net_args: Any):
        super().__init__(**{**net_args, "net_arch": []})
        self.q_net = model


class ModelDQNPolicy(DQNPolicy):
    def __init__(self, observation_space, action_space, lr_schedule, model_spec: dict[str, Any],
                 preprocessing: dict[str, Any], **kwargs: Any):
        self.model_spec = ModelSpec.from_dict(model_spec)
        kwargs.update(
            features_extractor_class=PreprocessExtractor,
            features_extractor_kwargs={"preprocessing": preprocessing},
            normalize_images=False,  # our preprocessing does the 1/255 itself
        )
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def make_q_net(self) -> QNetwork:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return ModelQNetwork(build_model(self.model_spec), **net_args).to(self.device)


class DoubleDQN(SB3DQN):
    """SB3 DQN with the Double-DQN target (van Hasselt 2016): the online net picks a',
    the target net values it. Everything else is SB3's ``train`` unchanged."""

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        losses = []
        for _ in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
            discounts = data.discounts if data.discounts is not None else self.gamma
            with torch.no_grad():
                next_actions = self.q_net(data.next_observations).argmax(dim=1, keepdim=True)
                next_q = torch.gather(self.q_net_target(data.next_observations), 1, next_actions)
                target = data.rewards + (1 - data.dones) * discounts * next_q
            current = torch.gather(self.q_net(data.observations), 1, data.actions.long())
            loss = F.smooth_l1_loss(current, target)
            losses.append(loss.item())
            self.policy.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", float(np.mean(losses)))


def model_state_dict(agent: SB3DQN) -> dict[str, torch.Tensor]:
    """The Q-network's weights on the CPU (a checkpoint does not depend on the training device)."""
    return {k: v.detach().cpu().clone() for k, v in agent.q_net.q_net.state_dict().items()}


def vector_schedule(train_freq: int, gradient_steps: int, n_envs: int) -> tuple[int, int]:
    """SB3's ``(train_freq, gradient_steps)`` for ``n_envs`` environments that keep the
    hyperparameters' replay ratio (``gradient_steps`` updates per ``train_freq`` transitions).

    SB3 counts ``train_freq`` in calls of the vectorised ``step``, each of which adds ``n_envs``
    transitions, so the same numbers would divide the updates per transition by ``n_envs``.
    """
    if train_freq % n_envs == 0:
        return train_freq // n_envs, gradient_steps
    if n_envs % train_freq == 0:
        return 1, gradient_steps * (n_envs // train_freq)
    raise UserError(f"--envs {n_envs} does not keep train_freq={train_freq}'s replay ratio: use a number of "
                    f"environments that divides train_freq or is a multiple of it")


def new_agent(algo: type[SB3DQN], train_env, hp: Hyperparams, spec: ModelSpec, pre: Any, seed: int,
              device: str = "cpu") -> SB3DQN:
    """SB3's DQN (or our DoubleDQN) with ``spec``'s network as the Q-network and ``hp``'s settings
    (the update schedule per transition, whatever the number of environments in ``train_env``)."""
    train_freq, gradient_steps = vector_schedule(hp.train_freq, hp.gradient_steps, train_env.num_envs)
    return algo(
        ModelDQNPolicy,
        train_env,
        learning_rate=lr_schedule(hp),
        buffer_size=hp.buffer_size,
        learning_starts=hp.learning_starts,
        batch_size=hp.batch_size,
        gamma=hp.gamma,
        train_freq=train_freq,
        gradient_steps=gradient_steps,
        n_steps=hp.n_steps,
        target_update_interval=hp.target_update_interval,
        exploration_fraction=hp.exploration_fraction,
        exploration_initial_eps=hp.exploration_initial_eps,
        exploration_final_eps=hp.exploration_final_eps,
        max_grad_norm=hp.max_grad_norm,
        optimize_memory_usage=hp.optimize_memory_usage,
        replay_buffer_kwargs={"handle_timeout_termination": not hp.optimize_memory_usage},
        policy_kwargs={"model_spec": spec.to_dict(), "preprocessing": pre.to_dict()},
        seed=seed,
        device=device,
        verbose=0,
    )


"""DQN, SAC and TD3 with prioritized experience replay (Schaul et al., ICLR 2016, Algorithm 1).

Each class is its SB3 parent with one change in ``train``: the per-sample TD losses are weighted by
the importance weights ``w_i`` of :class:`~memagent.replay.PrioritizedReplayBuffer` before the mean,

    L = (1/B) sum_i w_i * l(delta_i),

and after each gradient step the sampled transitions get the new priorities ``|delta_i| + eps``.
Everything else (targets, n-step discounts, optimisers, target updates, logging) is the parent's
code, so with ``alpha = 0`` (uniform sampling) and ``beta = 0`` (all ``w_i = 1``) the update is the
parent's: the same losses and gradients on the same batch (tested for all three).

``beta`` is annealed to ``beta_final`` (1 by default) with SB3's training progress unless the
buffer was given its own ``total_timesteps``. The buffer is the default ``replay_buffer_class``;
n-step returns asked through the algorithm's ``n_steps`` argument are passed on to it.

Twin critics (SAC, TD3): both critics' losses are weighted by the same ``w_i``, and the priority is
the mean of the two critics' absolute TD errors against the shared (min-of-targets) target,
``|delta_i| = (|Q1_i - y_i| + |Q2_i - y_i|) / 2``: it is the error the weighted critic loss actually
reduces (the loss is the sum of both squared errors), it does not over-rank a transition on which
only one critic is off (``max`` would), nor hide it (``min`` would). ``td_reduction`` selects
``"max"`` or ``"min"`` instead. The actor losses are left unweighted, as in the PER literature
for actor-critic methods: the importance weights correct the bias of the TD (critic) update.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import DQN, SAC, TD3
from stable_baselines3.common.utils import polyak_update
from torch.nn import functional as F

from memagent.replay.prioritized import PrioritizedReplayBuffer

__all__ = ["PrioritizedDQN", "PrioritizedSAC", "PrioritizedTD3", "reduce_twin_td"]

_TD_REDUCTIONS = ("mean", "max", "min")


def _weighted_twin_td(
    current_q_values: tuple[th.Tensor, ...], target_q_values: th.Tensor, weights: th.Tensor
) -> tuple[th.Tensor, list[th.Tensor]]:
    """Sum over the critics of the importance-weighted mean squared TD error ``mean_i w_i δ_i²``, and each
    critic's ``|δ|``, all ``(B, 1)``, for the priority update."""
    loss = sum(
        (weights * F.mse_loss(current_q, target_q_values, reduction="none")).mean()
        for current_q in current_q_values
    )
    assert isinstance(loss, th.Tensor)
    abs_td = [(current_q.detach() - target_q_values).abs() for current_q in current_q_values]
    return loss, abs_td


def reduce_twin_td(abs_td: list[th.Tensor], how: str = "mean") -> th.Tensor:
    """Combine the critics' absolute TD errors, each ``(B, 1)``, into one priority signal ``(B,)``."""
    if how not in _TD_REDUCTIONS:
        raise ValueError(f"td_reduction must be one of {_TD_REDUCTIONS}, got {how!r}")
    stacked = th.cat(abs_td, dim=1)  # (B, n_critics)
    if how == "mean":
        return stacked.mean(dim=1)
    if how == "max":
        return stacked.amax(dim=1)
    return stacked.amin(dim=1)


class _PrioritizedMixin:
    """Makes ``PrioritizedReplayBuffer`` the default buffer and keeps its ``beta`` schedule in step."""

    replay_buffer: Any
    replay_buffer_class: Any
    replay_buffer_kwargs: dict[str, Any]
    n_steps: int
    gamma: float
    _current_progress_remaining: float

    def _setup_model(self) -> None:
        if self.replay_buffer_class is None:
            self.replay_buffer_class = PrioritizedReplayBuffer
        n_steps = self.n_steps
        if n_steps > 1 and issubclass(self.replay_buffer_class, PrioritizedReplayBuffer):
            self.replay_buffer_kwargs.setdefault("n_steps", n_steps)
            self.replay_buffer_kwargs.setdefault("gamma", self.gamma)
            self.n_steps = 1  # handled above: keeps SB3 from warning that n_steps is ignored
        try:
            super()._setup_model()  # type: ignore[misc]
        finally:
            self.n_steps = n_steps

    def _prioritized_buffer(self) -> PrioritizedReplayBuffer:
        """The replay buffer, with its ``beta`` progress set from the training progress."""
        buffer = self.replay_buffer
        if not isinstance(buffer, PrioritizedReplayBuffer):
            raise TypeError(
                f"replay_buffer must be a PrioritizedReplayBuffer for {type(self).__name__}, "
                f"got {type(buffer).__name__}"
            )
        if buffer.total_timesteps is None:
            buffer.set_progress_remaining(self._current_progress_remaining)
        return buffer


class PrioritizedDQN(_PrioritizedMixin, DQN):
    """DQN with prioritized replay: Huber TD loss weighted by ``w_i``, priorities ``|Q(s,a) - y| + eps``.

    Takes DQN's arguments; ``replay_buffer_kwargs`` go to :class:`PrioritizedReplayBuffer`
    (``alpha``, ``beta``, ``beta_final``, ``eps``, ...).
    """

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        buffer = self._prioritized_buffer()

        losses = []
        for _ in range(gradient_steps):
            replay_data = buffer.sample(batch_size, env=self._vec_normalize_env)
            discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma

            with th.no_grad():
                next_q_values = self.q_net_target(replay_data.next_observations)
                next_q_values, _ = next_q_values.max(dim=1)
                next_q_values = next_q_values.reshape(-1, 1)
                target_q_values = replay_data.rewards + (1 - replay_data.dones) * discounts * next_q_values

            current_q_values = self.q_net(replay_data.observations)
            current_q_values = th.gather(current_q_values, dim=1, index=replay_data.actions.long())

            # Per-sample Huber loss weighted by the importance weights (B, 1), then the mean.
            elementwise = F.smooth_l1_loss(current_q_values, target_q_values, reduction="none")
            loss = (replay_data.weights * elementwise).mean()
            losses.append(loss.item())

            self.policy.optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()

            buffer.update_priorities(replay_data.indices, (current_q_values.detach() - target_q_values).abs())

        self._n_updates += gradient_steps

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", np.mean(losses))
        self.logger.record("train/per_beta", buffer.current_beta)


class PrioritizedSAC(_PrioritizedMixin, SAC):
    """SAC with prioritized replay: both critics' squared TD errors weighted by ``w_i``.

    :param td_reduction: how the twin critics' ``|delta|`` become one priority: ``"mean"`` (default,
        see the module docstring), ``"max"`` or ``"min"``. Other arguments are SAC's.
    """

    def __init__(self, *args: Any, td_reduction: str = "mean", **kwargs: Any) -> None:
        if td_reduction not in _TD_REDUCTIONS:
            raise ValueError(f"td_reduction must be one of {_TD_REDUCTIONS}, got {td_reduction!r}")
        self.td_reduction = td_reduction
        super().__init__(*args, **kwargs)

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        self.policy.set_training_mode(True)
        optimizers = [self.actor.optimizer, self.critic.optimizer]
        if self.ent_coef_optimizer is not None:
            optimizers += [self.ent_coef_optimizer]
        self._update_learning_rate(optimizers)
        buffer = self._prioritized_buffer()

        ent_coef_losses, ent_coefs = [], []
        actor_losses, critic_losses = [], []

        for gradient_step in range(gradient_steps):
            replay_data = buffer.sample(batch_size, env=self._vec_normalize_env)
            discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma

            if self.use_sde:
                self.actor.reset_noise()

            actions_pi, log_prob = self.actor.action_log_prob(replay_data.observations)
            log_prob = log_prob.reshape(-1, 1)

            ent_coef_loss = None
            if self.ent_coef_optimizer is not None and self.log_ent_coef is not None:
                ent_coef = th.exp(self.log_ent_coef.detach())
                assert isinstance(self.target_entropy, float)
                ent_coef_loss = -(self.log_ent_coef * (log_prob + self.target_entropy).detach()).mean()
                ent_coef_losses.append(ent_coef_loss.item())
            else:
                ent_coef = self.ent_coef_tensor

            ent_coefs.append(ent_coef.item())

            if ent_coef_loss is not None and self.ent_coef_optimizer is not None:
                self.ent_coef_optimizer.zero_grad()
                ent_coef_loss.backward()
                self.ent_coef_optimizer.step()

            with th.no_grad():
                next_actions, next_log_prob = self.actor.action_log_prob(replay_data.next_observations)
                next_q_values = th.cat(self.critic_target(replay_data.next_observations, next_actions), dim=1)
                next_q_values, _ = th.min(next_q_values, dim=1, keepdim=True)
                next_q_values = next_q_values - ent_coef * next_log_prob.reshape(-1, 1)
                target_q_values = replay_data.rewards + (1 - replay_data.dones) * discounts * next_q_values

            current_q_values = self.critic(replay_data.observations, replay_data.actions)

            critic_loss, abs_td = _weighted_twin_td(current_q_values, target_q_values, replay_data.weights)
            critic_loss = 0.5 * critic_loss  # SB3's SAC halves the summed critic losses
            critic_losses.append(critic_loss.item())

            self.critic.optimizer.zero_grad()
            critic_loss.backward()
            self.critic.optimizer.step()

            buffer.update_priorities(replay_data.indices, reduce_twin_td(abs_td, self.td_reduction))

            q_values_pi = th.cat(self.critic(replay_data.observations, actions_pi), dim=1)
            min_qf_pi, _ = th.min(q_values_pi, dim=1, keepdim=True)
            actor_loss = (ent_coef * log_prob - min_qf_pi).mean()
            actor_losses.append(actor_loss.item())

            self.actor.optimizer.zero_grad()
            actor_loss.backward()
            self.actor.optimizer.step()

            if gradient_step % self.target_update_interval == 0:
                polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
                polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)

        self._n_updates += gradient_steps

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/ent_coef", np.mean(ent_coefs))
        self.logger.record("train/actor_loss", np.mean(actor_losses))
        self.logger.record("train/critic_loss", np.mean(critic_losses))
        if len(ent_coef_losses) > 0:
            self.logger.record("train/ent_coef_loss", np.mean(ent_coef_losses))
        self.logger.record("train/per_beta", buffer.current_beta)


class PrioritizedTD3(_PrioritizedMixin, TD3):
    """TD3 with prioritized replay: both critics' squared TD errors weighted by ``w_i``.

    :param td_reduction: as for :class:`PrioritizedSAC`. Other arguments are TD3's.
    """

    def __init__(self, *args: Any, td_reduction: str = "mean", **kwargs: Any) -> None:
        if td_reduction not in _TD_REDUCTIONS:
            raise ValueError(f"td_reduction must be one of {_TD_REDUCTIONS}, got {td_reduction!r}")
        self.td_reduction = td_reduction
        super().__init__(*args, **kwargs)

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate([self.actor.optimizer, self.critic.optimizer])
        buffer = self._prioritized_buffer()

        actor_losses, critic_losses = [], []
        for _ in range(gradient_steps):
            self._n_updates += 1
            replay_data = buffer.sample(batch_size, env=self._vec_normalize_env)
            discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma

            with th.no_grad():
                noise = replay_data.actions.clone().data.normal_(0, self.target_policy_noise)
                noise = noise.clamp(-self.target_noise_clip, self.target_noise_clip)
                next_actions = (self.actor_target(replay_data.next_observations) + noise).clamp(-1, 1)
                next_q_values = th.cat(self.critic_target(replay_data.next_observations, next_actions), dim=1)
                next_q_values, _ = th.min(next_q_values, dim=1, keepdim=True)
                target_q_values = replay_data.rewards + (1 - replay_data.dones) * discounts * next_q_values

            current_q_values = self.critic(replay_data.observations, replay_data.actions)

            critic_loss, abs_td = _weighted_twin_td(current_q_values, target_q_values, replay_data.weights)
            critic_losses.append(critic_loss.item())

            self.critic.optimizer.zero_grad()
            critic_loss.backward()
            self.critic.optimizer.step()

            buffer.update_priorities(replay_data.indices, reduce_twin_td(abs_td, self.td_reduction))

            if self._n_updates % self.policy_delay == 0:
                actor_loss = -self.critic.q1_forward(
                    replay_data.observations, self.actor(replay_data.observations)
                ).mean()
                actor_losses.append(actor_loss.item())

                self.actor.optimizer.zero_grad()
                actor_loss.backward()
                self.actor.optimizer.step()

                polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
                polyak_update(self.actor.parameters(), self.actor_target.parameters(), self.tau)
                polyak_update(self.critic_batch_norm_stats, self.critic_batch_norm_stats_target, 1.0)
                polyak_update(self.actor_batch_norm_stats, self.actor_batch_norm_stats_target, 1.0)

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        if len(actor_losses) > 0:
            self.logger.record("train/actor_loss", np.mean(actor_losses))
        self.logger.record("train/critic_loss", np.mean(critic_losses))
        self.logger.record("train/per_beta", buffer.current_beta)

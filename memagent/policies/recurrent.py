"""Recurrent actor-critic policies whose memory is a DNC (or any core with the same contract).

The layout is sb3-contrib's recurrent actor-critic with the LSTM replaced by a *core*
(:mod:`memagent.policies.cores`)::

    obs -> features extractor -> core (state carried across steps, reset per env) -> MLP heads

Unlike sb3-contrib's ``RecurrentActorCriticPolicy``, which hard-codes an LSTM ``(h, c)`` pair of shape
``(n_layers, n_envs, H)``, the state here is whatever NamedTuple the core returns (for the DNC: memory,
usage, link matrix, precedence, read/write weights, read words, controller state), bundled for actor and
critic in :class:`~memagent.policies.state.CoreStates`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    FlattenExtractor,
    MlpExtractor,
    NatureCNN,
)
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from memagent.policies.cores import build_dnc_core, check_core, make_core
from memagent.policies.state import CoreStates, state_batch_size, state_to_tensor

__all__ = ["CnnDncPolicy", "DncPolicy", "MultiInputDncPolicy"]

CRITIC_MEMORY_OPTIONS = ("separate", "shared", "none")
SUPPORTED_OBSERVATION_SPACES = (
    spaces.Box,
    spaces.Discrete,
    spaces.MultiDiscrete,
    spaces.MultiBinary,
    spaces.Dict,
)
SUPPORTED_ACTION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)
_LSTM_KWARGS = ("lstm_hidden_size", "n_lstm_layers", "shared_lstm", "enable_critic_lstm", "lstm_kwargs")


class DncPolicy(ActorCriticPolicy):
    """Actor-critic policy with a recurrent memory core (a DNC by default) for :class:`RecurrentDncPPO`.

    Every call takes and returns the cores' states: ``forward(obs, states, episode_starts)`` with ``obs`` of
    ``n_seq * T`` steps laid out sequence by sequence, ``states`` a :class:`CoreStates` whose leaves have
    leading dimension ``n_seq``, and ``episode_starts`` ``(n_seq * T,)`` (1.0 puts that sequence's memory
    back to its initial state before the step). During rollouts ``T = 1`` and ``n_seq = n_envs``; during
    training ``T`` is the BPTT sequence length.

    The default core (:func:`~memagent.policies.cores.build_dnc_core`) is a small DNC -- ``N = 16`` slots,
    ``W = 16``, ``R = 2`` read heads, 64-unit controller, 64-dim output -- because RL needs a few facts held
    over tens of steps, the DNC costs ``O(N^2)`` per step and sample, and at this size PPO trains in minutes
    on a 2-core CPU. The default heads are one 64-unit layer each (the core already gives depth).

    :param observation_space: any space SB3 supports (Box, Discrete, MultiDiscrete, MultiBinary; Dict with
        :class:`MultiInputDncPolicy`; images with :class:`CnnDncPolicy`).
    :param action_space: Box, Discrete, MultiDiscrete or MultiBinary.
    :param lr_schedule: learning-rate schedule.
    :param net_arch: MLP heads after the core, as in SB3 (default ``dict(pi=[64], vf=[64])``).
    :param core_class: class or factory called as ``core_class(input_size=features_dim, **core_kwargs)``
        that returns a core (default: a DNC; :class:`~memagent.policies.cores.LSTMCore` to compare).
    :param core_kwargs: keyword arguments of ``core_class``.
    :param critic_memory: ``"separate"`` (default, as sb3-contrib's LSTM policies): the critic has its own
        core; ``"shared"``: the critic reads the actor core's output, detached (as sb3-contrib's
        ``shared_lstm``: only the policy loss trains the memory; half the cost of two cores -- letting the
        value loss into a shared memory made PPO fail to learn CartPole in our runs); ``"none"``: the
        critic is feed-forward (a linear map of the features to the core's output size).
    :param other: as in :class:`stable_baselines3.common.policies.ActorCriticPolicy`.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
        ortho_init: bool = True,
        use_sde: bool = False,
        log_std_init: float = 0.0,
        full_std: bool = True,
        use_expln: bool = False,
        squash_output: bool = False,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        share_features_extractor: bool = True,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        core_class: Callable[..., nn.Module] = build_dnc_core,
        core_kwargs: dict[str, Any] | None = None,
        critic_memory: str = "separate",
        **unsupported: Any,
    ) -> None:
        if unsupported:
            hint = ""
            if any(key in _LSTM_KWARGS for key in unsupported):
                hint = (
                    "; LSTM options of sb3-contrib's policies map to core_kwargs "
                    "(e.g. core_kwargs=dict(hidden_size=64)) and critic_memory"
                )
            raise TypeError(
                f"{type(self).__name__}: unsupported keyword arguments {sorted(unsupported)}; "
                "the recurrent options are core_class, core_kwargs and "
                f"critic_memory {CRITIC_MEMORY_OPTIONS}{hint}"
            )
        _check_spaces(type(self).__name__, observation_space, action_space, features_extractor_class)
        if critic_memory not in CRITIC_MEMORY_OPTIONS:
            raise ValueError(f"critic_memory must be one of {CRITIC_MEMORY_OPTIONS}, got {critic_memory!r}")
        if critic_memory == "shared" and not share_features_extractor:
            raise ValueError(
                "critic_memory='shared' needs share_features_extractor=True "
                "(one extractor feeds the one memory)"
            )
        if not callable(core_class):
            raise TypeError(f"core_class must be a class or factory returning a core, got {core_class!r}")
        # Read by _build_mlp_extractor, which the parent constructor calls.
        self.core_class = core_class
        self.core_kwargs = dict(core_kwargs or {})
        self.critic_memory = critic_memory
        if net_arch is None and features_extractor_class is not NatureCNN:
            net_arch = dict(pi=[64], vf=[64])
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch,
            activation_fn,
            ortho_init,
            use_sde,
            log_std_init,
            full_std,
            use_expln,
            squash_output,
            features_extractor_class,
            features_extractor_kwargs,
            share_features_extractor,
            normalize_images,
            optimizer_class,
            optimizer_kwargs,
        )

    # ----------------------------------------------------------------------------------------------- build
    def _make_core(self, name: str) -> nn.Module:
        """Instantiate one core on the features of the extractor and check its contract."""
        core = make_core(self.core_class, self.core_kwargs, input_size=int(self.features_dim))
        check_core(core, f"{name} (core_class={getattr(self.core_class, '__name__', self.core_class)})")
        return core

    def _build_mlp_extractor(self) -> None:
        """Build the cores and the MLP heads on top of them (called by ``ActorCriticPolicy._build``).

        The cores are built here, before the optimizer, so they are optimised; SB3's orthogonal
        initialisation (``ortho_init``) touches only the extractor, the heads and the output layers, so
        each core keeps its own initialisation.
        """
        self.core_actor = self._make_core("core_actor")
        self.core_critic = self._make_core("core_critic") if self.critic_memory == "separate" else None
        self.core_output_size = int(self.core_actor.output_size)
        self.critic = (
            nn.Linear(self.features_dim, self.core_output_size) if self.critic_memory == "none" else None
        )
        self.mlp_extractor = MlpExtractor(
            self.core_output_size,
            net_arch=self.net_arch,
            activation_fn=self.activation_fn,
            device=self.device,
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            core_class=self.core_class, core_kwargs=self.core_kwargs, critic_memory=self.critic_memory
        )
        return data

    # ----------------------------------------------------------------------------------------------- state
    def initial_state(self, n_envs: int, critic: bool = True) -> CoreStates:
        """Initial states of the cores for ``n_envs`` environments.

        :param n_envs: batch size ``B`` of every leaf.
        :param critic: also build the critic core's state (only needed for the value; ``predict`` skips it).
        """
        pi = self.core_actor.initial_state(n_envs, device=self.device)
        vf = (
            self.core_critic.initial_state(n_envs, device=self.device)
            if critic and self.core_critic is not None
            else None
        )
        return CoreStates(pi, vf)

    @staticmethod
    def _run_core(
        core: nn.Module, features: th.Tensor, state: Any, episode_starts: th.Tensor
    ) -> tuple[th.Tensor, Any]:
        """Run ``core`` over flat steps.

        :param features: ``(n_seq * T, F)``, sequence-major (the ``T`` steps of sequence 0 first).
        :param state: the core's state with leading dimension ``n_seq``.
        :param episode_starts: ``(n_seq * T,)`` float or bool; nonzero resets that sequence before the step.
        :return: core output ``(n_seq * T, O)`` and the state after the last step.
        """
        n_seq = state_batch_size(state)
        x = features.reshape(n_seq, -1, features.shape[-1])
        starts = episode_starts.reshape(n_seq, -1) > 0.5
        y, state = core(x, state, starts)
        return y.reshape(-1, y.shape[-1]), state

    def _latents(
        self, obs: PyTorchObs, states: CoreStates, episode_starts: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, CoreStates]:
        """Features -> cores -> MLP heads; returns ``latent_pi``, ``latent_vf`` and the new states."""
        features = self.extract_features(obs)
        pi_features, vf_features = (features, features) if self.share_features_extractor else features
        latent_pi, pi_state = self._run_core(self.core_actor, pi_features, states.pi, episode_starts)
        vf_state = None
        if self.core_critic is not None:
            latent_vf, vf_state = self._run_core(self.core_critic, vf_features, states.vf, episode_starts)
        elif self.critic is None:  # shared memory, trained by the policy loss only
            latent_vf = latent_pi.detach()
        else:
            latent_vf = self.critic(vf_features)
        latent_pi = self.mlp_extractor.forward_actor(latent_pi)
        latent_vf = self.mlp_extractor.forward_critic(latent_vf)
        return latent_pi, latent_vf, CoreStates(pi_state, vf_state)

    # --------------------------------------------------------------------------------------------- forward
    def forward(  # type: ignore[override]
        self, obs: PyTorchObs, states: CoreStates, episode_starts: th.Tensor, deterministic: bool = False
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor, CoreStates]:
        """Act, evaluate and advance the memories for one batch of steps (see class docstring for shapes).

        :return: actions ``(n_seq * T, *action_shape)``, values ``(n_seq * T, 1)``, log-probabilities
            ``(n_seq * T,)`` and the states after the last step.
        """
        latent_pi, latent_vf, states = self._latents(obs, states, episode_starts)
        values = self.value_net(latent_vf)
        distribution = self._get_action_dist_from_latent(latent_pi)
        actions = distribution.get_actions(deterministic=deterministic)
        log_prob = distribution.log_prob(actions)
        actions = actions.reshape((-1, *self.action_space.shape))  # type: ignore[misc]
        return actions, values, log_prob, states

    def evaluate_actions(  # type: ignore[override]
        self, obs: PyTorchObs, actions: th.Tensor, states: CoreStates, episode_starts: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        """Values ``(n_seq * T, 1)``, log-likelihoods and entropies ``(n_seq * T,)`` of ``actions``.

        The sequences start from ``states``; gradients flow back through the whole sequence (BPTT).
        """
        latent_pi, latent_vf, _ = self._latents(obs, states, episode_starts)
        distribution = self._get_action_dist_from_latent(latent_pi)
        return self.value_net(latent_vf), distribution.log_prob(actions), distribution.entropy()

    def get_distribution(  # type: ignore[override]
        self, obs: PyTorchObs, states: CoreStates, episode_starts: th.Tensor
    ) -> tuple[Distribution, CoreStates]:
        """Action distribution and the advanced states; only the actor's memory moves (``vf`` is ``None``)."""
        features = super(ActorCriticPolicy, self).extract_features(obs, self.pi_features_extractor)
        latent_pi, pi_state = self._run_core(self.core_actor, features, states.pi, episode_starts)
        latent_pi = self.mlp_extractor.forward_actor(latent_pi)
        return self._get_action_dist_from_latent(latent_pi), CoreStates(pi_state, None)

    def predict_values(  # type: ignore[override]
        self, obs: PyTorchObs, states: CoreStates, episode_starts: th.Tensor
    ) -> th.Tensor:
        """Values ``(n_seq * T, 1)``; reads ``states.vf`` (separate critic) or ``states.pi`` (shared)."""
        features = super(ActorCriticPolicy, self).extract_features(obs, self.vf_features_extractor)
        if self.core_critic is not None:
            latent_vf, _ = self._run_core(self.core_critic, features, states.vf, episode_starts)
        elif self.critic is None:
            latent_vf, _ = self._run_core(self.core_actor, features, states.pi, episode_starts)
            latent_vf = latent_vf.detach()
        else:
            latent_vf = self.critic(features)
        return self.value_net(self.mlp_extractor.forward_critic(latent_vf))

    def _predict(  # type: ignore[override]
        self,
        observation: PyTorchObs,
        states: CoreStates,
        episode_starts: th.Tensor,
        deterministic: bool = False,
    ) -> tuple[th.Tensor, CoreStates]:
        distribution, states = self.get_distribution(observation, states, episode_starts)
        return distribution.get_actions(deterministic=deterministic), states

    def predict(  # type: ignore[override]
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: CoreStates | Any | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, CoreStates]:
        """Action for an observation, given and returning the actor's memory.

        :param observation: one observation or a batch of ``n_envs``.
        :param state: ``None`` (fresh memory) or the state returned by the previous call: a
            :class:`CoreStates` ``(pi=<the actor core's NamedTuple of tensors (n_envs, ...)>, vf=None)``;
            numpy leaves are accepted. A bare actor-core state is accepted too.
        :param episode_start: ``(n_envs,)`` bools; True resets that environment's memory before acting.
        :param deterministic: take the mode of the action distribution.
        :return: actions (numpy, clipped / unscaled to the action space) and the new state.
        """
        self.set_training_mode(False)
        obs_tensor, vectorized_env = self.obs_to_tensor(observation)
        first = next(iter(obs_tensor.values())) if isinstance(obs_tensor, dict) else obs_tensor
        n_envs = first.shape[0]
        if state is None:
            state = self.initial_state(n_envs, critic=False)
        elif not isinstance(state, CoreStates):
            state = CoreStates(state, None)
        state = CoreStates(state_to_tensor(state.pi, self.device), None)
        if state_batch_size(state.pi) != n_envs:
            raise ValueError(
                f"state: batch size {state_batch_size(state.pi)} does not match the "
                f"{n_envs} observation(s) given"
            )
        if episode_start is None:
            episode_start = np.zeros(n_envs, dtype=bool)
        with th.no_grad():
            starts = th.as_tensor(np.asarray(episode_start), dtype=th.float32, device=self.device).reshape(
                n_envs
            )
            actions, state = self._predict(obs_tensor, state, starts, deterministic=deterministic)
        actions_np = actions.cpu().numpy().reshape((-1, *self.action_space.shape))  # type: ignore[misc]
        if isinstance(self.action_space, spaces.Box):
            if self.squash_output:
                actions_np = self.unscale_action(actions_np)
            else:
                actions_np = np.clip(actions_np, self.action_space.low, self.action_space.high)
        if not vectorized_env:
            actions_np = actions_np.squeeze(axis=0)
        return actions_np, state


class MultiInputDncPolicy(DncPolicy):
    """:class:`DncPolicy` for ``Dict`` observations (SB3's ``CombinedExtractor`` before the core)."""

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        *args: Any,
        features_extractor_class: type[BaseFeaturesExtractor] = CombinedExtractor,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            *args,
            features_extractor_class=features_extractor_class,
            **kwargs,
        )


class CnnDncPolicy(DncPolicy):
    """:class:`DncPolicy` for image observations (SB3's ``NatureCNN`` before the core, no MLP heads)."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        *args: Any,
        features_extractor_class: type[BaseFeaturesExtractor] = NatureCNN,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            *args,
            features_extractor_class=features_extractor_class,
            **kwargs,
        )


def _check_spaces(
    owner: str,
    observation_space: spaces.Space,
    action_space: spaces.Space,
    features_extractor_class: type[BaseFeaturesExtractor],
) -> None:
    """Raise a clear error for spaces this policy cannot handle."""
    if not isinstance(observation_space, SUPPORTED_OBSERVATION_SPACES):
        allowed = ", ".join(cls.__name__ for cls in SUPPORTED_OBSERVATION_SPACES)
        raise TypeError(
            f"{owner}: observation_space {observation_space} is not supported; allowed: {allowed}"
        )
    if isinstance(observation_space, spaces.Dict) and not issubclass(
        features_extractor_class, CombinedExtractor
    ):
        if features_extractor_class is FlattenExtractor:
            raise TypeError(
                f"{owner}: Dict observation_space needs MultiInputDncPolicy (or a features_extractor_class "
                "that accepts dicts), got FlattenExtractor"
            )
    if not isinstance(action_space, SUPPORTED_ACTION_SPACES):
        allowed = ", ".join(cls.__name__ for cls in SUPPORTED_ACTION_SPACES)
        raise TypeError(f"{owner}: action_space {action_space} is not supported; allowed: {allowed}")

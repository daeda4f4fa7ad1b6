"""PPO with a recurrent memory core of any state structure (a DNC by default).

:class:`RecurrentDncPPO` is sb3-contrib's ``RecurrentPPO`` with only its LSTM assumptions replaced:

- ``_setup_model`` builds a :class:`~memagent.policies.DncPolicy`, asks it for the initial state of any
  structure and builds a :class:`~memagent.algos.recurrent_buffers.SequenceRolloutBuffer` that keeps the
  state only at the start of each fixed-length sequence;
- ``collect_rollouts`` carries the structured state and slices it per environment to bootstrap the value
  of truncated episodes.

The PPO update (``train``: clipped surrogate, value loss, entropy, KL early stop, masks) is
``RecurrentPPO.train`` unchanged; it receives minibatches of whole sequences and the policy runs BPTT
through them from the stored states, resetting each sequence's memory where an episode starts.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any, ClassVar

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.utils import FloatSchedule, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from memagent.algos.recurrent_buffers import SequenceDictRolloutBuffer, SequenceRolloutBuffer
from memagent.policies.recurrent import CnnDncPolicy, DncPolicy, MultiInputDncPolicy
from memagent.policies.state import index_state

__all__ = ["RecurrentDncPPO"]


class RecurrentDncPPO(RecurrentPPO):
    """Proximal Policy Optimisation (clip) with a DNC memory core and truncated BPTT over fixed sequences.

    Each rollout of ``n_steps`` per environment is cut into sequences of ``sequence_length`` steps; the
    cores' state is stored at each sequence start (``n_steps / sequence_length`` states per environment);
    minibatches of ``batch_size / sequence_length`` sequences are replayed through the memory from those
    states, with per-environment resets where episodes start inside a sequence.

    Defaults (``n_steps=128``, ``sequence_length=32``, ``batch_size=512``, ``n_epochs=10``) give 4 BPTT
    sequences per environment per rollout and minibatches of 16 sequences: long enough to carry a cue
    across tens of steps, short enough that the DNC's Python loop over time stays cheap on a CPU. A pass of
    the DNC costs nearly the same for 8 or 32 sequences (it is bound by the number of small ops per step,
    not by the batch), so few large minibatches are much cheaper than many small ones.

    Memory cost: the default DNC core's state (controller ``h, c`` 2x64, memory 16x16, link 16x16, usage,
    precedence, read/write weights, read words) is 752 float32 = 3,008 bytes per environment (twice that
    with a separate critic memory); the buffer
    keeps ``n_steps / sequence_length = 4`` of them per environment and rollout (12,032 bytes/env) instead
    of one per step (385,024 bytes/env). ``rollout_buffer.state_nbytes`` reports the figure for any config.

    :param policy: ``"DncPolicy"``, ``"MultiInputDncPolicy"``, ``"CnnDncPolicy"`` or a :class:`DncPolicy`
        subclass.
    :param env: environment or its id.
    :param sequence_length: BPTT length ``L``; must divide ``n_steps`` and ``batch_size``.
    :param batch_size: transitions per minibatch (a multiple of ``sequence_length``).
    :param other: as in :class:`sb3_contrib.RecurrentPPO`.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "DncPolicy": DncPolicy,
        "MlpDncPolicy": DncPolicy,
        "MultiInputDncPolicy": MultiInputDncPolicy,
        "CnnDncPolicy": CnnDncPolicy,
    }

    def __init__(
        self,
        policy: str | type[DncPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 128,
        batch_size: int = 512,
        sequence_length: int = 32,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.2,
        clip_range_vf: float | Schedule | None = None,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        target_kl: float | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        self.sequence_length = sequence_length
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            clip_range=clip_range,
            clip_range_vf=clip_range_vf,
            normalize_advantage=normalize_advantage,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            target_kl=target_kl,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
        )
        if _init_setup_model:
            self._setup_model()

    def _check_sizes(self) -> None:
        """Clear errors for sequence and minibatch sizes that do not tile the rollout."""
        length, n_steps, batch = self.sequence_length, self.n_steps, self.batch_size
        if not isinstance(length, (int, np.integer)) or length < 1:
            raise ValueError(f"sequence_length must be a positive int, got {length!r}")
        if n_steps % length:
            raise ValueError(f"sequence_length={length} must divide n_steps={n_steps}")
        if batch is not None and (batch < length or batch % length):
            raise ValueError(f"batch_size={batch} must be a positive multiple of sequence_length={length}")

    def _setup_model(self) -> None:
        self._check_sizes()
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space,
            self.action_space,
            self.lr_schedule,
            use_sde=self.use_sde,
            **self.policy_kwargs,
        )
        if not isinstance(self.policy, DncPolicy):
            raise TypeError(f"policy must be a DncPolicy (or subclass), got {type(self.policy).__name__}")
        self.policy = self.policy.to(self.device)
        self._last_lstm_states = self.policy.initial_state(self.n_envs)
        buffer_cls = (
            SequenceDictRolloutBuffer
            if isinstance(self.observation_space, spaces.Dict)
            else SequenceRolloutBuffer
        )
        self.rollout_buffer = buffer_cls(
            self.n_steps,
            self.observation_space,  # type: ignore[arg-type]
            self.action_space,
            sequence_length=self.sequence_length,
            device=self.device,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            n_envs=self.n_envs,
            seed=self.seed,
        )
        self.clip_range = FloatSchedule(self.clip_range)
        if self.clip_range_vf is not None:
            if isinstance(self.clip_range_vf, (float, int)) and self.clip_range_vf <= 0:
                raise ValueError(
                    f"clip_range_vf must be positive (or None to disable), got {self.clip_range_vf}"
                )
            self.clip_range_vf = FloatSchedule(self.clip_range_vf)

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """Fill ``rollout_buffer`` with ``n_rollout_steps`` steps per environment, carrying the memories.

        The state stored with step ``t`` is the one *before* step ``t`` (the buffer keeps it when ``t``
        starts a sequence); the env's ``episode_start`` flag resets it inside the core.
        """
        if not isinstance(rollout_buffer, (SequenceRolloutBuffer, SequenceDictRolloutBuffer)):
            raise TypeError(
                f"rollout_buffer must be a SequenceRolloutBuffer, got {type(rollout_buffer).__name__}"
            )
        assert self._last_obs is not None, "No previous observation was provided"
        self.policy.set_training_mode(False)
        n_steps = 0
        rollout_buffer.reset()
        if self.use_sde:
            self.policy.reset_noise(env.num_envs)
        callback.on_rollout_start()
        states = deepcopy(self._last_lstm_states)

        while n_steps < n_rollout_steps:
            if self.use_sde and self.sde_sample_freq > 0 and n_steps % self.sde_sample_freq == 0:
                self.policy.reset_noise(env.num_envs)
            with th.no_grad():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                episode_starts = th.tensor(self._last_episode_starts, dtype=th.float32, device=self.device)
                actions, values, log_probs, states = self.policy(obs_tensor, states, episode_starts)
            actions = actions.cpu().numpy()
            clipped_actions = actions
            if isinstance(self.action_space, spaces.Box):
                clipped_actions = np.clip(actions, self.action_space.low, self.action_space.high)
            new_obs, rewards, dones, infos = env.step(clipped_actions)
            self.num_timesteps += env.num_envs

            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)
            n_steps += 1
            if isinstance(self.action_space, spaces.Discrete):
                actions = actions.reshape(-1, 1)
            self._bootstrap_truncated(rewards, dones, infos, states)

            rollout_buffer.add(  # type: ignore[call-arg]
                self._last_obs,
                actions,
                rewards,
                self._last_episode_starts,
                values,
                log_probs,
                states=self._last_lstm_states,
            )
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones
            self._last_lstm_states = states

        with th.no_grad():
            episode_starts = th.tensor(dones, dtype=th.float32, device=self.device)
            values = self.policy.predict_values(obs_as_tensor(new_obs, self.device), states, episode_starts)  # type: ignore[arg-type]
        rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones)
        callback.on_rollout_end()
        return True

    def _bootstrap_truncated(
        self, rewards: np.ndarray, dones: np.ndarray, infos: list[dict], states: Any
    ) -> None:
        """Add ``gamma * V(terminal obs)`` to the reward of episodes cut by a time limit (SB3 issue #633).

        The value reads env ``i``'s memory after the step (``states`` sliced to sample ``i``).
        """
        for idx, done in enumerate(dones):
            if not (done and infos[idx].get("terminal_observation") is not None):
                continue
            if not infos[idx].get("TimeLimit.truncated", False):
                continue
            terminal_obs = self.policy.obs_to_tensor(infos[idx]["terminal_observation"])[0]
            with th.no_grad():
                env_states = index_state(states, slice(idx, idx + 1))
                no_start = th.zeros(1, dtype=th.float32, device=self.device)
                terminal_value = self.policy.predict_values(terminal_obs, env_states, no_start)[0]
            rewards[idx] += self.gamma * terminal_value.item()

"""Rollout buffers for recurrent policies whose state has any structure.

sb3-contrib's ``RecurrentRolloutBuffer`` keeps an LSTM ``(h, c)`` pair for *every* step and cuts the
rollout at episode boundaries into padded sequences of varying length. These buffers instead

- store the cores' state (any NamedTuple, see :mod:`memagent.policies.state`) only at the **start of
  each fixed-length sequence**: ``n_steps / L`` states per env instead of ``n_steps``, so a DNC's memory,
  usage and ``N x N`` link matrix cost ``L`` times less;
- cut each environment's ``n_steps`` into sequences of ``L = sequence_length`` consecutive steps that may
  span episode boundaries; the ``episode_starts`` flags travel with the sequence and the core resets that
  sample's memory where they are set, so no padding is needed (``mask`` is all ones);
- shuffle whole sequences into minibatches of ``batch_size / L`` sequences, over which the policy
  back-propagates through time.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.type_aliases import TensorDict

from memagent.policies.state import CoreStates, map_state, state_leaves, state_nbytes_per_sample

__all__ = ["SequenceDictRolloutBuffer", "SequenceRolloutBuffer", "SequenceRolloutBufferSamples"]


class SequenceRolloutBufferSamples(NamedTuple):
    """A minibatch of ``n_seq`` sequences of ``L`` steps, flattened sequence-major to ``n_seq * L`` rows.

    The states field keeps the name ``lstm_states`` so that ``sb3_contrib.RecurrentPPO.train`` consumes these
    samples unchanged; it holds the cores' :class:`CoreStates` at the sequence starts (leading dim ``n_seq``).
    """

    observations: th.Tensor | TensorDict  # (n_seq * L, *obs_shape)
    actions: th.Tensor  # (n_seq * L, action_dim)
    old_values: th.Tensor  # (n_seq * L,)
    old_log_prob: th.Tensor  # (n_seq * L,)
    advantages: th.Tensor  # (n_seq * L,)
    returns: th.Tensor  # (n_seq * L,)
    lstm_states: CoreStates  # leaves (n_seq, ...)
    episode_starts: th.Tensor  # (n_seq * L,)
    mask: th.Tensor  # (n_seq * L,), all ones

    @property
    def states(self) -> CoreStates:
        """The cores' states at the sequence starts (alias of ``lstm_states``)."""
        return self.lstm_states


class _SequenceStorage:
    """Mixin adding sequence-start state storage and sequence minibatches to an SB3 rollout buffer."""

    buffer_size: int
    n_envs: int
    pos: int
    full: bool
    generator_ready: bool
    device: th.device

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        sequence_length: int,
        device: th.device | str = "auto",
        gae_lambda: float = 1,
        gamma: float = 0.99,
        n_envs: int = 1,
        seed: int | None = None,
    ) -> None:
        self._init_sequences(buffer_size, sequence_length, seed)
        super().__init__(buffer_size, observation_space, action_space, device, gae_lambda, gamma, n_envs)

    def add(self, *args: Any, states: CoreStates, **kwargs: Any) -> None:  # type: ignore[override]
        """Add one step (SB3's arguments) and ``states``, the cores' states *before* this step."""
        self._store_states(states)
        super().add(*args, **kwargs)

    def _init_sequences(self, buffer_size: int, sequence_length: int, seed: int | None) -> None:
        if not isinstance(sequence_length, (int, np.integer)) or sequence_length < 1:
            raise ValueError(f"sequence_length must be a positive int, got {sequence_length!r}")
        if buffer_size % sequence_length:
            raise ValueError(
                f"sequence_length={sequence_length} must divide the rollout length n_steps={buffer_size} "
                "(every sequence has the same length, so no padding is needed)"
            )
        self.sequence_length = int(sequence_length)
        self.rng = np.random.default_rng(seed)
        self.n_chunks = buffer_size // self.sequence_length
        self.stored_states: Any = None  # CoreStates of numpy arrays (n_chunks, n_envs, ...)
        self._n_leaves = 0
        self.state_bytes_per_env = 0  # bytes of one env's state, known after the first add

    # ----------------------------------------------------------------------------------------- storage
    @property
    def n_sequences(self) -> int:
        """Number of sequences in a full rollout: ``n_steps / L * n_envs``."""
        return self.n_chunks * self.n_envs

    @property
    def state_nbytes(self) -> int:
        """Bytes held by the stored states (``n_sequences`` states); 0 before the first ``add``."""
        return sum(array.nbytes for array in state_leaves(self.stored_states))

    def _store_states(self, states: CoreStates) -> None:
        """Keep ``states`` (leaves ``(n_envs, ...)``) if the current step starts a sequence."""
        if self.pos % self.sequence_length:
            return
        leaves = state_leaves(states)
        if self.stored_states is None:
            self.stored_states = map_state(
                lambda leaf: np.zeros((self.n_chunks, *leaf.shape), dtype=_numpy_dtype(leaf)), states
            )
            self._n_leaves = len(leaves)
            self.state_bytes_per_env = state_nbytes_per_sample(states)
        if len(leaves) != self._n_leaves or any(leaf.shape[0] != self.n_envs for leaf in leaves):
            raise ValueError(
                f"states: expected the structure of the first stored state ({self._n_leaves} tensors with "
                f"leading dimension n_envs={self.n_envs}), got {len(leaves)} tensors of shapes "
                f"{[tuple(x.shape) for x in leaves]}"
            )
        chunk = self.pos // self.sequence_length

        def write(store: np.ndarray, leaf: Any) -> None:
            store[chunk] = leaf.detach().cpu().numpy() if isinstance(leaf, th.Tensor) else np.asarray(leaf)

        map_state(write, self.stored_states, states)

    # ----------------------------------------------------------------------------------------- sampling
    def _to_sequences(self, array: np.ndarray) -> np.ndarray:
        """``(n_steps, n_envs, *s)`` -> ``(n_chunks * n_envs, L, *s)``; sequence ``c * n_envs + e`` holds
        steps ``c L .. (c + 1) L - 1`` of env ``e``."""
        shape = array.shape[2:]
        chunked = array.reshape(self.n_chunks, self.sequence_length, self.n_envs, *shape)
        return chunked.swapaxes(1, 2).reshape(self.n_sequences, self.sequence_length, *shape)

    def _prepare_sequences(self) -> None:
        names = ("actions", "values", "log_probs", "advantages", "returns", "episode_starts")
        self._seq = {name: self._to_sequences(getattr(self, name)) for name in names}
        # as SB3: actions are sampled as float32 (MultiBinary/MultiDiscrete are stored in their int dtype)
        self._seq["actions"] = self._seq["actions"].astype(np.float32, copy=False)
        observations = self.observations  # type: ignore[attr-defined]
        if isinstance(observations, dict):
            self._seq_obs: Any = {key: self._to_sequences(obs) for key, obs in observations.items()}
        else:
            self._seq_obs = self._to_sequences(observations)
        self._seq_states = map_state(
            lambda store: store.reshape(self.n_sequences, *store.shape[2:]), self.stored_states
        )
        self.generator_ready = True

    def get(self, batch_size: int | None = None) -> Generator[SequenceRolloutBufferSamples, None, None]:
        """Yield minibatches of whole sequences in random order.

        :param batch_size: transitions per minibatch, a multiple of ``sequence_length`` (``None``: everything
            at once); each minibatch holds ``batch_size / sequence_length`` sequences.
        """
        assert self.full, "the rollout buffer must be full before sampling from it"
        if batch_size is None:
            n_per_batch = self.n_sequences
        else:
            if batch_size < self.sequence_length or batch_size % self.sequence_length:
                raise ValueError(
                    f"batch_size={batch_size} must be a positive multiple of "
                    f"sequence_length={self.sequence_length}"
                )
            n_per_batch = batch_size // self.sequence_length
        if not self.generator_ready:
            self._prepare_sequences()
        order = self.rng.permutation(self.n_sequences)
        for start in range(0, self.n_sequences, n_per_batch):
            yield self._sequence_samples(order[start : start + n_per_batch])

    def _sequence_samples(self, seq_ids: np.ndarray) -> SequenceRolloutBufferSamples:
        rows = len(seq_ids) * self.sequence_length

        def flat(array: np.ndarray) -> th.Tensor:
            return self.to_torch(array[seq_ids].reshape(rows, *array.shape[2:]))  # type: ignore[attr-defined]

        if isinstance(self._seq_obs, dict):
            observations: Any = {key: flat(obs) for key, obs in self._seq_obs.items()}
        else:
            observations = flat(self._seq_obs)
        states = map_state(lambda store: th.as_tensor(store[seq_ids], device=self.device), self._seq_states)
        return SequenceRolloutBufferSamples(
            observations=observations,
            actions=flat(self._seq["actions"]),
            old_values=flat(self._seq["values"]),
            old_log_prob=flat(self._seq["log_probs"]),
            advantages=flat(self._seq["advantages"]),
            returns=flat(self._seq["returns"]),
            lstm_states=states,
            episode_starts=flat(self._seq["episode_starts"]),
            mask=th.ones(rows, device=self.device),
        )


def _numpy_dtype(leaf: Any) -> np.dtype:
    if isinstance(leaf, th.Tensor):
        return th.empty(0, dtype=leaf.dtype).numpy().dtype
    return np.asarray(leaf).dtype


class SequenceRolloutBuffer(_SequenceStorage, RolloutBuffer):
    """Rollout buffer that stores recurrent states of any structure at fixed-length sequence starts.

    :param buffer_size: rollout length ``n_steps`` per environment.
    :param observation_space: observation space.
    :param action_space: action space.
    :param sequence_length: BPTT length ``L``; must divide ``buffer_size``.
    :param device: torch device of the sampled tensors.
    :param gae_lambda: GAE lambda.
    :param gamma: discount factor.
    :param n_envs: number of parallel environments.
    :param seed: seed of the generator that shuffles the sequences into minibatches.
    """


class SequenceDictRolloutBuffer(_SequenceStorage, DictRolloutBuffer):
    """:class:`SequenceRolloutBuffer` for ``Dict`` observations (same parameters)."""

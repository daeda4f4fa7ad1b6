"""Proportional prioritized experience replay for Stable-Baselines3 (Schaul et al., ICLR 2016).

``PrioritizedReplayBuffer`` is a drop-in subclass of SB3's ``ReplayBuffer``::

    from stable_baselines3 import DQN
    from memagent.replay import PrioritizedReplayBuffer
    model = DQN("MlpPolicy", "CartPole-v1",
                replay_buffer_class=PrioritizedReplayBuffer,
                replay_buffer_kwargs=dict(alpha=0.6, beta=0.4))

A plain SB3 algorithm then samples by priority but neither weights its loss nor updates the
priorities; :mod:`memagent.algos.prioritized` has the algorithms that do both.

The paper's quantities, for transition ``i`` of the ``N`` stored ones:

- priority ``p_i = |delta_i| + eps`` (new transitions get the largest priority seen so far);
- sampling probability ``P(i) = p_i^alpha / sum_k p_k^alpha`` (Eq. 1), stratified over the batch;
- importance weight ``w_i = (N * P(i))^(-beta) / max_j w_j`` (Section 3.4), where the max runs
  over the whole buffer (``weight_normalization="buffer"``, the default, as in the OpenAI
  baselines and cpprb): ``max_j w_j = (N * P_min)^(-beta)``, so ``w_i = (p_i^alpha / p_min^alpha)^(-beta)``
  exactly, with ``p_min`` the smallest stored priority: no ``N`` and no tree sum enter the weights.
  ``p_min`` is tracked exactly by the sum-tree (``SumTree.min_positive``: O(1) per write, one O(N)
  rescan only after the slot holding the minimum got a larger value: overwritten by ``add`` or,
  rarely, sampled and re-prioritized) instead of a second, min-tree that would double every update.
  ``weight_normalization="batch"`` divides by the largest weight of the sampled batch instead.
- ``beta`` is annealed linearly from ``beta`` to ``beta_final`` (1 by default) as training progresses.

Storage keeps SB3's attributes (``observations``, ``next_observations``, ``actions``, ``rewards``,
``dones``, ``timeouts``, each ``(buffer_size, n_envs, ...)``, written by SB3's own ``add``) but
they are views into one byte array ``(buffer_size, n_envs, row_bytes)`` holding a whole transition
per row. A sampled batch is then one gather of ``B`` contiguous rows instead of six gathers of
scattered elements: at 10^6 transitions the gather is memory-bound and this halves it.
Transition ``(row, env)`` has the flat index ``row * n_envs + env``: its slot in the sum-tree and
the ``indices`` returned by ``sample``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.vec_env import VecNormalize

from memagent.replay.sum_tree import SumTree

__all__ = ["PrioritizedReplayBuffer", "PrioritizedReplayBufferSamples", "PrioritizedSampleArrays"]

logger = logging.getLogger(__name__)

_WEIGHT_NORMALIZATIONS = ("buffer", "batch")
# SB3's storage attributes, stored as views into one packed byte array (see the module docstring).
_FIELDS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


class _Field(NamedTuple):
    offset: int  # byte offset in a row
    nbytes: int
    shape: tuple[int, ...]  # per-transition shape
    dtype: np.dtype


def _field_view(block: np.ndarray, field: _Field) -> np.ndarray:
    """View ``(*lead, *field.shape)`` of one field inside ``block (*lead, row_bytes)`` uint8 (no copy)."""
    view = block[..., field.offset : field.offset + field.nbytes].view(field.dtype)
    return view.reshape(*block.shape[:-1], *field.shape)


class PrioritizedReplayBufferSamples(NamedTuple):
    """SB3's ``ReplayBufferSamples`` fields, in the same order, plus ``weights`` and ``indices``.

    ``observations (B, *obs_shape)``, ``actions (B, action_dim)``, ``next_observations``,
    ``dones (B, 1)``, ``rewards (B, 1)``, ``discounts (B, 1)`` (n-step only, else None),
    ``weights (B, 1)`` float32 importance weights, ``indices (B,)`` int64 numpy slots to pass back
    to ``update_priorities``.
    """

    observations: th.Tensor
    actions: th.Tensor
    next_observations: th.Tensor
    dones: th.Tensor
    rewards: th.Tensor
    discounts: th.Tensor | None
    weights: th.Tensor
    indices: np.ndarray


class PrioritizedSampleArrays(NamedTuple):
    """The same batch as numpy arrays (``PrioritizedReplayBuffer.sample_arrays``), no torch involved."""

    observations: np.ndarray
    actions: np.ndarray
    next_observations: np.ndarray
    dones: np.ndarray
    rewards: np.ndarray
    discounts: np.ndarray | None
    weights: np.ndarray
    indices: np.ndarray


def _check_unit_interval(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


class PrioritizedReplayBuffer(ReplayBuffer):
    """SB3 ``ReplayBuffer`` with proportional prioritized sampling and importance weights.

    :param buffer_size: max number of transitions (split over ``n_envs`` as in SB3).
    :param observation_space: observation space (not ``Dict``).
    :param action_space: action space.
    :param device: torch device of the sampled tensors.
    :param n_envs: number of parallel environments.
    :param optimize_memory_usage: SB3's memory-saving layout (next observation stored in the next row);
        the one row whose next observation was overwritten gets priority 0, so it is never sampled.
    :param handle_timeout_termination: SB3's timeout handling (truncation does not end bootstrapping).
    :param alpha: prioritization exponent in [0, 1]; 0 is uniform sampling.
    :param beta: initial importance-sampling exponent in [0, 1]; 0 is no correction.
    :param beta_final: exponent reached at the end of training (1: full correction).
    :param total_timesteps: if given, ``beta`` is annealed over this many added transitions;
        otherwise the algorithm sets the progress with ``set_progress_remaining`` (the algorithms
        of :mod:`memagent.algos.prioritized` do), and without either ``beta`` stays constant.
    :param beta_schedule: optional ``f(progress_remaining) -> beta`` replacing the linear schedule
        (``progress_remaining`` goes from 1 to 0, as SB3's schedules).
    :param eps: added to ``|delta|`` so no transition gets priority 0.
    :param weight_normalization: ``"buffer"`` (divide by the largest weight over the buffer) or
        ``"batch"`` (over the sampled batch).
    :param n_steps: n-step returns as SB3's ``NStepReplayBuffer`` (1: one-step).
    :param gamma: discount for the n-step returns.
    :param seed: seed of the sampling generator; ``None`` draws one from numpy's global generator,
        which SB3 seeds from the model's ``seed``.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        alpha: float = 0.6,
        beta: float = 0.4,
        beta_final: float = 1.0,
        total_timesteps: int | None = None,
        beta_schedule: Callable[[float], float] | None = None,
        eps: float = 1e-6,
        weight_normalization: str = "buffer",
        n_steps: int = 1,
        gamma: float = 0.99,
        seed: int | None = None,
    ) -> None:
        if isinstance(observation_space, spaces.Dict):
            raise TypeError(
                "observation_space: Dict spaces are not supported by PrioritizedReplayBuffer, got spaces.Dict"
            )
        self.alpha = _check_unit_interval("alpha", alpha)
        self.beta = _check_unit_interval("beta", beta)
        self.beta_final = _check_unit_interval("beta_final", beta_final)
        if total_timesteps is not None and (
            not isinstance(total_timesteps, int | np.integer) or total_timesteps < 1
        ):
            raise ValueError(f"total_timesteps must be a positive integer or None, got {total_timesteps!r}")
        if beta_schedule is not None and not callable(beta_schedule):
            raise TypeError(f"beta_schedule must be callable or None, got {type(beta_schedule).__name__}")
        if not (isinstance(eps, int | float) and 0.0 <= eps < math.inf):
            raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
        if weight_normalization not in _WEIGHT_NORMALIZATIONS:
            raise ValueError(
                f"weight_normalization must be one of {_WEIGHT_NORMALIZATIONS}, got {weight_normalization!r}"
            )
        if isinstance(n_steps, bool) or not isinstance(n_steps, int | np.integer) or n_steps < 1:
            raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}")
        gamma = _check_unit_interval("gamma", gamma)
        if n_steps > 1 and optimize_memory_usage:
            raise ValueError("n_steps > 1 is not supported with optimize_memory_usage=True (as in SB3)")
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            device=device,
            n_envs=n_envs,
            optimize_memory_usage=optimize_memory_usage,
            handle_timeout_termination=handle_timeout_termination,
        )
        self._pack_storage()
        self.total_timesteps = None if total_timesteps is None else int(total_timesteps)
        self.beta_schedule = beta_schedule
        self.eps = float(eps)
        self.weight_normalization = weight_normalization
        self.n_steps = int(n_steps)
        self.gamma = gamma
        self.tree = SumTree(self.buffer_size * self.n_envs)
        self.max_priority = 1.0  # running max of p_i = |delta_i| + eps (before the exponent alpha)
        self.num_added = 0  # transitions added since construction or reset (for beta annealing)
        self._progress_remaining: float | None = None
        if seed is None:
            # SB3 seeds numpy's legacy global generator from the model's seed: derive ours from it.
            seed = int(np.random.randint(0, 2**31 - 1))  # noqa: NPY002
        self.rng = np.random.default_rng(seed)

    # ------------------------------------------------------------------ packed storage
    def _pack_storage(self) -> None:
        """Replace SB3's separate arrays by views into one ``(buffer_size, n_envs, row_bytes)`` array."""
        layout: dict[str, _Field] = {}
        offset = 0
        for name in _FIELDS:
            array = getattr(self, name, None)
            if array is None or (name == "next_observations" and self.optimize_memory_usage):
                continue
            shape, dtype = tuple(array.shape[2:]), array.dtype
            offset = -(-offset // dtype.itemsize) * dtype.itemsize  # align to the item size
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            layout[name] = _Field(offset, nbytes, shape, dtype)
            offset += nbytes
        self._row_bytes = -(-offset // 8) * 8  # every field stays aligned in every row
        self._layout = layout
        # np.zeros: pages are only committed when written, as for SB3's own arrays (now released).
        self._storage = np.zeros((self.buffer_size, self.n_envs, self._row_bytes), dtype=np.uint8)
        self._bind_views()

    def _bind_views(self) -> None:
        for name, field in self._layout.items():
            view = _field_view(self._storage, field)
            if not np.may_share_memory(view, self._storage):  # reshape copied: writes would be lost
                raise RuntimeError(f"cannot store {name} of shape {field.shape} as a view of the packed rows")
            setattr(self, name, view)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the packed array only (pickled views would become independent copies)."""
        state = self.__dict__.copy()
        for name in self._layout:
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._bind_views()

    # ------------------------------------------------------------------ beta schedule
    def set_progress_remaining(self, progress_remaining: float) -> None:
        """Set the training progress (1 at the start, 0 at the end) that anneals ``beta``."""
        if not 0.0 <= progress_remaining <= 1.0:
            progress_remaining = min(max(float(progress_remaining), 0.0), 1.0)
        self._progress_remaining = float(progress_remaining)

    @property
    def progress_remaining(self) -> float:
        """1 at the start of training, 0 at the end (``total_timesteps`` wins if given)."""
        if self.total_timesteps is not None:
            return max(0.0, 1.0 - self.num_added / self.total_timesteps)
        return 1.0 if self._progress_remaining is None else self._progress_remaining

    @property
    def current_beta(self) -> float:
        """The importance-sampling exponent now: ``beta_final + (beta - beta_final) * progress_remaining``."""
        progress = self.progress_remaining
        if self.beta_schedule is not None:
            return _check_unit_interval("beta_schedule(progress_remaining)", self.beta_schedule(progress))
        return self.beta_final + (self.beta - self.beta_final) * progress

    # ------------------------------------------------------------------ storage
    def reset(self) -> None:
        """Empty the buffer and its priorities."""
        super().reset()
        self.tree = SumTree(self.buffer_size * self.n_envs)
        self.max_priority = 1.0
        self.num_added = 0

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """Store one step of every env (SB3's ``add``) at the maximum priority seen so far."""
        row = self.pos
        super().add(obs, next_obs, action, reward, done, infos)
        n = self.n_envs
        self.tree.fill(row * n, (row + 1) * n, self.max_priority**self.alpha)
        if self.optimize_memory_usage and self.full:
            # Row `pos` now pairs its old observation with a new "next observation": invalid until
            # it is written (SB3 skips index `pos` for the same reason).
            self.tree.fill(self.pos * n, (self.pos + 1) * n, 0.0)
        self.num_added += n

    # ------------------------------------------------------------------ priorities
    def update_priorities(self, indices: np.ndarray | th.Tensor, td_errors: np.ndarray | th.Tensor) -> None:
        """Set ``p_i = |delta_i| + eps`` for the sampled ``indices``; the tree stores ``p_i^alpha``.

        :param indices: slots ``(B,)`` as returned in ``sample(...).indices``.
        :param td_errors: TD errors ``(B,)`` or ``(B, 1)`` (sign ignored), finite.
        """
        if isinstance(td_errors, th.Tensor):
            td_errors = td_errors.detach().cpu().numpy()
        if isinstance(indices, th.Tensor):
            indices = indices.detach().cpu().numpy()
        td = np.asarray(td_errors, dtype=np.float64).reshape(-1)
        idx = np.asarray(indices).reshape(-1)
        if idx.size != td.size:
            raise ValueError(f"indices and td_errors must have the same length, got {idx.size} and {td.size}")
        if idx.size == 0:
            return
        if idx.dtype.kind not in "iu":
            raise TypeError(f"indices must be integers, got an array of dtype {idx.dtype}")
        if not self.full:  # the tree checks [0, capacity); before the buffer is full, check [0, size)
            size = self.pos * self.n_envs
            if idx[idx.argmin()] < 0 or idx[idx.argmax()] >= size:
                bad = int(idx[(idx < 0) | (idx >= size)][0])
                raise ValueError(f"indices must lie in [0, {size}) (the stored transitions), got {bad}")
        priority = np.abs(td)
        priority += self.eps
        largest = float(priority[priority.argmax()])  # NaN if any is NaN (argmax: fast path)
        if not math.isfinite(largest):
            raise ValueError(f"td_errors must be finite, got {td[~np.isfinite(td)][0]!r}")
        scaled = priority if self.alpha == 1.0 else priority**self.alpha
        if self.optimize_memory_usage and self.full:
            # Never revive the invalid row (it would be sampled with a stale next observation).
            scaled[idx // self.n_envs == self.pos] = 0.0
        # Validated here (finite, >= 0, in range): skip the tree's own checks on this hot path.
        self.tree._update_validated(idx.astype(np.int64, copy=False), scaled)
        self.max_priority = max(self.max_priority, largest)  # after the tree accepted the update

    # ------------------------------------------------------------------ sampling
    def sample(self, batch_size: int, env: VecNormalize | None = None) -> PrioritizedReplayBufferSamples:  # type: ignore[override]
        """Sample ``batch_size`` transitions by priority, as tensors on ``self.device``.

        Sampling is with replacement (as SB3's uniform buffer), so ``batch_size`` may exceed the
        number of stored transitions.
        """
        arrays = self.sample_arrays(batch_size, env)
        to_torch = self._fresh_to_torch
        return PrioritizedReplayBufferSamples(
            observations=to_torch(arrays.observations),
            actions=to_torch(arrays.actions),
            next_observations=to_torch(arrays.next_observations),
            dones=to_torch(arrays.dones),
            rewards=to_torch(arrays.rewards),
            discounts=None if arrays.discounts is None else to_torch(arrays.discounts),
            weights=to_torch(arrays.weights),
            indices=arrays.indices,
        )

    def _fresh_to_torch(self, array: np.ndarray) -> th.Tensor:
        """Tensor on ``self.device`` from an array this buffer just created (no copy needed on CPU)."""
        if self.device.type == "cpu":
            return th.from_numpy(np.ascontiguousarray(array))  # ~1 us, th.as_tensor ~5 us
        return th.as_tensor(array, device=self.device)

    def sample_arrays(self, batch_size: int, env: VecNormalize | None = None) -> PrioritizedSampleArrays:
        """The batch of ``sample`` as numpy arrays (fresh copies: the gathers copy)."""
        if self.pos == 0 and not self.full:
            raise ValueError("cannot sample from an empty PrioritizedReplayBuffer: add transitions first")
        indices, scaled = self.tree.sample(batch_size, self.rng, return_priorities=True)
        weights = self._importance_weights(scaled)
        return self._gather(indices, weights, env)

    def _importance_weights(self, scaled_priorities: np.ndarray) -> np.ndarray:
        """``w_i = (N P(i))^(-beta) / max_j w_j = (p_i^alpha / p_min^alpha)^(-beta)``, ``(B, 1)`` float32."""
        beta = self.current_beta
        if self.weight_normalization == "buffer":
            smallest = self.tree.min_positive
        else:
            smallest = scaled_priorities.min()
        weights = (scaled_priorities / smallest) ** (-beta)
        return weights.astype(np.float32).reshape(-1, 1)

    def _gather(
        self, indices: np.ndarray, weights: np.ndarray, env: VecNormalize | None
    ) -> PrioritizedSampleArrays:
        """Read the transitions at flat slots ``indices (B,)``: one gather of whole rows, then split."""
        rows = self._storage.reshape(-1, self._row_bytes)[indices]  # (B, row_bytes)
        layout = self._layout

        def column(name: str) -> np.ndarray:
            return np.ascontiguousarray(_field_view(rows, layout[name]))

        if self.n_steps > 1:
            next_obs, dones, rewards, discounts = self._n_step_targets(indices, env)
        else:
            if self.optimize_memory_usage:
                next_rows, envs = np.divmod(indices, self.n_envs)
                next_obs = self.observations[(next_rows + 1) % self.buffer_size, envs]
            else:
                next_obs = column("next_observations")
            next_obs = self._normalize_obs(next_obs, env)
            done = _field_view(rows, layout["dones"])
            dones = (done * (1.0 - _field_view(rows, layout["timeouts"]))).reshape(-1, 1)
            rewards = self._normalize_reward(column("rewards").reshape(-1, 1), env)
            discounts = None
        return PrioritizedSampleArrays(
            observations=self._normalize_obs(column("observations"), env),  # type: ignore[arg-type]
            actions=column("actions"),
            next_observations=next_obs,  # type: ignore[arg-type]
            dones=dones,
            rewards=rewards,
            discounts=discounts,
            weights=weights,
            indices=indices,
        )

    def _n_step_targets(
        self, indices: np.ndarray, env: VecNormalize | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """n-step return, bootstrap observation, done and discount, as SB3's ``NStepReplayBuffer``.

        ``R = sum_{k<m} gamma^k r_{t+k}`` where ``m <= n`` stops at the first done or timeout
        (inclusive); the newest row counts as truncated unless done (the next row is older data);
        ``discount = gamma^m``; ``done`` is that of step ``t+m-1`` unless it was a timeout.
        Shapes: ``next_obs (B, *obs_shape)``, the others ``(B, 1)``.
        """
        size = self.buffer_size
        rows, envs = np.divmod(indices, self.n_envs)
        steps = np.arange(self.n_steps)
        seq_rows = (rows[:, None] + steps) % size  # (B, n)
        seq_envs = envs[:, None]
        rewards_seq = self._normalize_reward(self.rewards[seq_rows, seq_envs], env)
        dones_seq = self.dones[seq_rows, seq_envs]
        newest = (self.pos - 1) % size
        truncated_seq = np.logical_or(
            self.timeouts[seq_rows, seq_envs], (seq_rows == newest) & np.logical_not(dones_seq)
        )
        stop = np.logical_or(dones_seq, truncated_seq)
        stop_idx = np.where(stop.any(axis=1), stop.argmax(axis=1), self.n_steps - 1)
        mask = steps[None, :] <= stop_idx[:, None]
        discounts = self.gamma ** mask.sum(axis=1, keepdims=True).astype(np.float32)
        step_discounts = self.gamma ** np.arange(self.n_steps, dtype=np.float32).reshape(1, -1)
        returns = (rewards_seq * step_discounts * mask).sum(axis=1, keepdims=True)
        last = (rows + stop_idx) % size
        next_obs = self._normalize_obs(self.next_observations[last, envs], env)
        last_dones = self.dones[last, envs][:, None].astype(np.float32)
        last_timeouts = self.timeouts[last, envs][:, None].astype(np.float32)
        return next_obs, last_dones * (1.0 - last_timeouts), returns, discounts  # type: ignore[return-value]

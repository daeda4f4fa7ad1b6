"""Replay of past training sequences for the continual learner: uniform or prioritized.

Prioritized replay follows Schaul et al., "Prioritized Experience Replay" (ICLR 2016), with a stored
item being one training *sequence* (its inputs, targets and task id):

- sampling probability (eq. 1):  P(i) = p_i^α / Σ_k p_k^α
- importance weight:            w_i = (N · P(i))^−β / max_j w_j   (max over the sampled batch)
- new items enter at the maximum priority seen so far, so each is replayed at least once soon;
- after a replayed batch has been trained on, its priorities are set from the **new** per-sequence
  losses: p_i = loss_i + ε (:meth:`SequenceReplay.update_priorities`).

Sampling is stratified over the priority mass with :class:`memagent.replay.SumTree`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from memagent.replay import SumTree

__all__ = ["REPLAY_MODES", "SequenceReplay"]

REPLAY_MODES = ("none", "uniform", "prioritized")


class SequenceReplay:
    """A fixed-capacity ring buffer of sequences ``(x (T, D), y (T, D), task)`` with uniform or
    prioritized sampling.

    :param capacity: the number of sequences kept (oldest overwritten first).
    :param seq_len: T. :param dim: D, the width of ``x`` and ``y``.
    :param mode: ``"uniform"`` or ``"prioritized"``.
    :param alpha: priority exponent α (0 is uniform).
    :param beta: importance-sampling exponent β (1 corrects fully).
    :param eps: ε added to every priority so no sequence has zero probability.
    """

    def __init__(
        self,
        capacity: int,
        seq_len: int,
        dim: int,
        *,
        mode: str = "prioritized",
        alpha: float = 0.6,
        beta: float = 0.6,
        eps: float = 1e-4,
    ) -> None:
        if mode not in REPLAY_MODES[1:]:
            raise ValueError(f"mode must be 'uniform' or 'prioritized', got {mode!r}")
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        if alpha < 0 or beta < 0 or eps <= 0:
            raise ValueError(
                f"need alpha >= 0, beta >= 0, eps > 0; got alpha={alpha}, beta={beta}, eps={eps}"
            )
        self.capacity, self.mode, self.alpha, self.beta, self.eps = capacity, mode, alpha, beta, eps
        self.x = torch.zeros(capacity, seq_len, dim)
        self.y = torch.zeros(capacity, seq_len, dim)
        self.task = torch.zeros(capacity, dtype=torch.long)
        self.tree = SumTree(capacity)
        self.priorities = np.zeros(capacity)  # p_i (before the exponent α), for inspection and tests
        self.max_priority = 1.0
        self.pos = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, x: Tensor, y: Tensor, task: Tensor) -> np.ndarray:
        """Store a batch of sequences ``x, y (B, T, D)``, ``task (B,)`` at the maximum priority.

        :return: the slots they were written to ``(B,)``.
        """
        b = x.shape[0]
        if b > self.capacity:
            raise ValueError(f"cannot add {b} sequences to a buffer of capacity {self.capacity}")
        idx = (self.pos + np.arange(b)) % self.capacity
        ti = torch.from_numpy(idx)
        self.x[ti] = x.detach().to(self.x)
        self.y[ti] = y.detach().to(self.y)
        self.task[ti] = task.detach().to(torch.long).cpu()
        self._set(idx, np.full(b, self.max_priority))
        self.pos = int((self.pos + b) % self.capacity)
        self.size = min(self.size + b, self.capacity)
        return idx

    def _set(self, idx: np.ndarray, priorities: np.ndarray) -> None:
        self.priorities[idx] = priorities
        mass = priorities**self.alpha if self.mode == "prioritized" else np.ones_like(priorities)
        self.tree.update(idx, mass)

    def sample(
        self, batch_size: int, rng: np.random.Generator
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, np.ndarray]:
        """Sample ``batch_size`` sequences (with replacement, stratified over the priority mass).

        :return: ``(x (B, T, D), y (B, T, D), task (B,), weights (B,), indices (B,))``; weights are
            all 1 for uniform replay.
        """
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = np.asarray(self.tree.sample(batch_size, rng), dtype=np.int64)
        idx = np.minimum(idx, self.size - 1)
        if self.mode == "prioritized":
            mass = self.priorities[idx] ** self.alpha
            prob = mass / self.tree.total
            w = (self.size * prob) ** (-self.beta)
            weights = torch.as_tensor(w / w.max(), dtype=torch.float32)
        else:
            weights = torch.ones(batch_size)
        ti = torch.from_numpy(idx)
        return self.x[ti], self.y[ti], self.task[ti], weights, idx

    def update_priorities(self, indices: np.ndarray, losses: np.ndarray | Tensor) -> None:
        """Set p_i = loss_i + ε for replayed sequences (Schaul et al.: priorities from the new errors)."""
        losses = np.asarray(torch.as_tensor(losses).detach().cpu(), dtype=np.float64)
        indices = np.asarray(indices, dtype=np.int64)
        if losses.shape != indices.shape:
            raise ValueError(f"indices {indices.shape} and losses {losses.shape} must have the same shape")
        p = np.abs(losses) + self.eps
        # With replacement the same slot can appear twice: the last loss wins, as in sequential updates.
        self._set(indices, p)
        self.max_priority = max(self.max_priority, float(p.max()))

"""A vectorised sum-tree for proportional prioritized replay (Schaul et al., 2016, Appendix B.2.1).

The tree stores one non-negative priority per slot (for prioritized replay the stored value is
``p_i^alpha``) and supports, for a whole batch at once and without Python loops over the batch:

- ``update(indices, priorities)``: write leaves, then recompute only the ancestors of the written
  leaves, one level per numpy call;
- ``sample(batch_size, rng)``: stratified sampling, ``P(i) = p_i / sum_k p_k``: the range
  ``[0, total)`` is cut into ``batch_size`` equal strata, one uniform draw per stratum, and all draws
  descend the tree together, one level per numpy call;
- ``min_positive``: the smallest positive leaf, for the importance-weight normalisation
  ``max_i w_i = (N * P_min)^(-beta)``.

Layout. The leaves are padded to ``2^depth >= capacity`` and stored, like a binary heap, in one
float64 array ``nodes`` of size ``2^(depth+1)``: node ``k`` has children ``2k`` and ``2k+1``, level
``d`` holds nodes ``[2^d, 2^(d+1))`` and leaf ``i`` is node ``2^depth + i``. Only the bottom
levels ``top_depth .. depth`` are maintained. The ``2^top_depth`` nodes of level ``top_depth``
(at most 4096) are the roots of a forest of complete binary trees; sampling starts with one
``cumsum`` + ``searchsorted`` over them instead of walking the ``top_depth`` levels above, which
replaces 12 levels of numpy calls per update and per sample by one cumsum over <= 4096 values
(numpy's cumsum costs a few ns a value: a larger prefix level costs more than the levels it saves).

Exactness. Every maintained node is recomputed from its two children as ``left + right`` (never by
adding a delta), so after any sequence of updates the tree is bit-for-bit the tree a fresh
level-by-level rebuild would give; float64 keeps sums of 10^6 priorities exact to ~1e-10 relative.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["SumTree"]

# The level whose nodes are prefix-summed at sampling time holds at most 2^_TOP_DEPTH nodes.
_TOP_DEPTH = 12


def _as_index_array(
    indices: np.ndarray | list[int] | int, capacity: int, name: str = "indices"
) -> np.ndarray:
    """Validate slot indices: integers in ``[0, capacity)``, returned as a flat int64 array ``(n,)``."""
    idx = np.asarray(indices)
    if idx.dtype.kind not in "iu":
        if idx.size == 0:
            return np.empty(0, dtype=np.int64)
        raise TypeError(f"{name} must be integers, got an array of dtype {idx.dtype}")
    idx = idx.reshape(-1).astype(np.int64, copy=False)
    if idx.size and (idx.min() < 0 or idx.max() >= capacity):
        bad = idx[(idx < 0) | (idx >= capacity)][0]
        raise ValueError(f"{name} must lie in [0, {capacity}), got {int(bad)}")
    return idx


def _as_priority_array(priorities: np.ndarray | float, size: int, name: str = "priorities") -> np.ndarray:
    """Validate priorities: finite and >= 0, broadcast to a flat float64 array ``(size,)``."""
    p = np.asarray(priorities, dtype=np.float64)
    if p.ndim == 0:
        p = np.full(size, float(p))
    else:
        p = p.reshape(-1)
        if p.size != size:
            raise ValueError(f"{name} must have one value per index ({size}), got {p.size} values")
    # One pass finds NaN, +-inf and negatives: NaN fails every comparison.
    ok = (p >= 0.0) & (p < math.inf)
    if not ok.all():
        bad = p[~ok][0]
        raise ValueError(f"{name} must be finite and >= 0, got {bad!r}")
    return p


class SumTree:
    """Sum-tree over ``capacity`` non-negative priorities, vectorised over batches.

    :param capacity: number of slots (leaves); any positive integer, padded internally to a power of two.

    Example::

        tree = SumTree(4)
        tree.update(np.array([0, 1, 2, 3]), np.array([1.0, 2.0, 3.0, 4.0]))
        tree.total                     # 10.0
        tree.sample(256, np.random.default_rng(0))   # slot 3 drawn ~40% of the time
    """

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int | np.integer) or capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        self._capacity = int(capacity)
        self._depth = (self._capacity - 1).bit_length()  # 2^depth >= capacity
        self._num_leaves = 1 << self._depth
        self._top_depth = min(self._depth, _TOP_DEPTH)
        self._nodes = np.zeros(2 * self._num_leaves, dtype=np.float64)
        self._shifts = np.arange(self._depth - self._top_depth, dtype=np.int64)
        # Lazy exact minimum over positive leaves: (value, slot), recomputed only when the slot that
        # held the minimum is overwritten by a larger value.
        self._min_value = math.inf
        self._min_slot = -1
        self._min_valid = True
        self._min_rescans = 0  # number of O(N) rescans (for tests and diagnostics)

    # ------------------------------------------------------------------ properties
    @property
    def capacity(self) -> int:
        """Number of slots."""
        return self._capacity

    @property
    def total(self) -> float:
        """``sum_i p_i`` over all slots."""
        lo = 1 << self._top_depth
        return float(np.cumsum(self._nodes[lo : 2 * lo])[-1])

    @property
    def priorities(self) -> np.ndarray:
        """Read-only view of the leaf priorities ``(capacity,)``."""
        view = self._nodes[self._num_leaves : self._num_leaves + self._capacity]
        view = view.view()
        view.flags.writeable = False
        return view

    @property
    def min_positive(self) -> float:
        """Smallest positive priority (``inf`` when no slot has a positive priority)."""
        if not self._min_valid:
            leaves = self._nodes[self._num_leaves : self._num_leaves + self._capacity]
            masked = np.where(leaves > 0.0, leaves, math.inf)
            # Of tied minima keep the last slot: a ring buffer overwrites slots in increasing order,
            # so the minimum is not invalidated again at the very next write.
            slot = self._capacity - 1 - int(np.argmin(masked[::-1]))
            self._min_value, self._min_slot, self._min_valid = float(masked[slot]), slot, True
            self._min_rescans += 1
        return self._min_value

    def __len__(self) -> int:
        return self._capacity

    def __getitem__(self, indices: np.ndarray | int) -> np.ndarray:
        """Priorities of the given slots ``(n,)``."""
        return self._nodes[_as_index_array(indices, self._capacity) + self._num_leaves]

    # ------------------------------------------------------------------ updates
    def update(self, indices: np.ndarray | list[int], priorities: np.ndarray | float) -> None:
        """Set ``p[indices] = priorities`` and recompute the ancestors of those leaves.

        Duplicate indices in one call: the last occurrence wins (as in sequential assignment) and
        the sums stay exact. Everything is validated before anything is written, so a bad call
        (index out of range, negative, NaN or infinite priority) raises and leaves the tree as it was.

        :param indices: slot indices ``(n,)`` in ``[0, capacity)``.
        :param priorities: new priorities ``(n,)`` (or a scalar), finite and >= 0.
        """
        idx = _as_index_array(indices, self._capacity)
        p = _as_priority_array(priorities, idx.size)
        self._update_validated(idx, p)

    def _update_validated(self, idx: np.ndarray, p: np.ndarray) -> None:
        """``update`` without the checks of ``p``: ``p (n,)`` float64 finite >= 0; ``idx (n,)`` int64
        is checked here against ``[0, capacity)`` (cheaply once sorted)."""
        if idx.size == 0:
            return
        if idx.size > 1:
            # argmin, not min: numpy's argmin has a fast path, min/max reductions cost ~5x more.
            step = idx[1:] - idx[:-1]
            smallest_step = step[step.argmin()]
            if smallest_step < 0:
                # Stable sort: equal indices keep their order, so "keep the last" = last write wins
                # (numpy does not define fancy assignment with repeated indices). Sampled batches
                # come sorted already and skip this.
                order = np.argsort(idx, kind="stable")
                idx, p = idx[order], p[order]
                step = idx[1:] - idx[:-1]
                smallest_step = step[step.argmin()]
            if smallest_step == 0:  # duplicates: keep the last of each run
                keep = np.empty(idx.size, dtype=bool)
                keep[-1] = True
                np.not_equal(step, 0, out=keep[:-1])
                idx, p = idx[keep], p[keep]
        if idx[0] < 0 or idx[-1] >= self._capacity:
            bad = idx[0] if idx[0] < 0 else idx[-1]
            raise ValueError(f"indices must lie in [0, {self._capacity}), got {int(bad)}")
        self._track_min(idx, p)
        self._write_and_sweep(idx + self._num_leaves, p)

    def fill(self, start: int, stop: int, priority: float) -> None:
        """Set the contiguous slots ``[start, stop)`` to one priority (the replay buffer's add path).

        Ancestors of a contiguous range are contiguous: each level is one strided ``add``, or one
        scalar addition once the range is a single node.
        """
        if not 0 <= start <= stop <= self._capacity:
            raise ValueError(f"need 0 <= start <= stop <= {self._capacity}, got start={start}, stop={stop}")
        value = float(priority)
        if not 0.0 <= value < math.inf:
            raise ValueError(f"priority must be finite and >= 0, got {priority!r}")
        if start == stop:
            return
        if self._min_valid:
            if 0.0 < value <= self._min_value:
                self._min_value, self._min_slot = value, start
            elif start <= self._min_slot < stop:
                self._min_valid = False
        nodes = self._nodes
        lo, hi = start + self._num_leaves, stop + self._num_leaves
        nodes[lo:hi] = value
        scalars = None
        for _ in range(self._depth - self._top_depth):
            lo, hi = lo >> 1, ((hi - 1) >> 1) + 1
            if hi - lo > 4:
                nodes[lo:hi] = nodes[2 * lo : 2 * hi : 2] + nodes[2 * lo + 1 : 2 * hi : 2]
            else:  # a few ancestors: Python floats through a memoryview beat a numpy call
                scalars = memoryview(nodes) if scalars is None else scalars
                for k in range(lo, hi):
                    scalars[k] = scalars[2 * k] + scalars[2 * k + 1]

    def _write_and_sweep(self, nodes_idx: np.ndarray, values: np.ndarray) -> None:
        """Write leaf nodes ``(n,)`` (unique) and recompute their ancestors level by level.

        At each level the parent's new value is ``node + sibling``, read after the whole level below
        was written; two updated siblings therefore compute the same parent value, so repeated parent
        indices need no de-duplication (an ``np.unique`` per level would cost more than it saves).
        """
        nodes = self._nodes
        nodes[nodes_idx] = values
        levels = self._depth - self._top_depth
        if levels == 0:
            return
        # All ancestors and their siblings at once, (levels, n): two numpy calls instead of 2 per level.
        siblings = (nodes_idx >> self._shifts[:, None]) ^ 1
        parents = siblings >> 1
        acc = values.copy()
        for level in range(levels):
            acc += nodes[siblings[level]]
            nodes[parents[level]] = acc

    def _track_min(self, slots: np.ndarray, values: np.ndarray) -> None:
        """Keep the exact minimum positive leaf when ``slots`` (unique) are set to ``values``."""
        if not self._min_valid:
            return
        j = int(values.argmin())  # methods skip numpy's Python dispatch wrappers
        smallest = float(values[j])
        if smallest <= 0.0:  # zeros do not count: look for the smallest positive value
            positive = np.where(values > 0.0, values, math.inf)
            j = int(positive.argmin())
            smallest = float(positive[j])
        if smallest <= self._min_value:
            # Every other leaf is >= the old minimum >= this value.
            self._min_value, self._min_slot = smallest, int(slots[j])
        elif self._min_slot >= 0:
            k = int(slots.searchsorted(self._min_slot)) if slots.size > 1 else 0
            if k < slots.size and slots[k] == self._min_slot:
                self._min_valid = False  # the minimum was raised: recompute on demand

    # ------------------------------------------------------------------ sampling
    def _prefix(self) -> np.ndarray:
        """Exclusive prefix sums ``(2^top_depth + 1,)`` of the top maintained level; the last is the total."""
        lo = 1 << self._top_depth
        prefix = np.empty(lo + 1)
        prefix[0] = 0.0
        self._nodes[lo : 2 * lo].cumsum(out=prefix[1:])
        return prefix

    def sample(
        self, batch_size: int, rng: np.random.Generator, return_priorities: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Stratified proportional sampling: ``batch_size`` slots with ``P(i) = p_i / total``.

        Stratum ``j`` draws ``u_j ~ U[j, j+1) * total / batch_size`` and returns the slot whose
        prefix-sum interval contains ``u_j`` (see ``find``); the returned slots are therefore sorted.
        Slots with priority 0 are never returned.

        :param batch_size: number of draws ``B`` (>= 1, with replacement: may exceed the slot count).
        :param rng: the random generator (``np.random.default_rng(seed)``).
        :param return_priorities: also return the leaf priorities ``(B,)``.
        :return: slot indices ``(B,)`` int64 (and their priorities ``(B,)`` float64).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        prefix = self._prefix()
        total = prefix[-1]
        if not total > 0.0:
            raise ValueError("cannot sample: every priority is 0 (is the buffer empty?)")
        u = rng.random(batch_size)
        u += self._strata(batch_size)
        u *= total / batch_size
        return self._find(u, prefix, return_priorities)

    def find(self, values: np.ndarray) -> np.ndarray:
        """Inverse of the cumulative sum: for each ``u`` in ``values (n,)``, the slot ``i`` with
        ``sum_{k<i} p_k <= u < sum_{k<=i} p_k`` (``u`` is clipped into ``[0, total]``; ``u = total``
        gives the last slot with a positive priority). Slots with priority 0 are never returned.
        """
        prefix = self._prefix()
        if not prefix[-1] > 0.0:
            raise ValueError("cannot search: every priority is 0 (is the tree empty?)")
        u = np.clip(np.asarray(values, dtype=np.float64).reshape(-1), 0.0, prefix[-1])
        if np.isnan(u).any():
            raise ValueError("values must not be NaN")
        return self._find(u, prefix, False)  # type: ignore[return-value]

    def _find(
        self, u: np.ndarray, prefix: np.ndarray, return_priorities: bool
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Locate every ``u`` (modified in place): prefix search over the top level, then the descent."""
        nodes = self._nodes
        lo = prefix.size - 1
        total = prefix[-1]
        prefix[-1] = math.inf  # sentinel: u == total falls into the last node, not past it
        root = prefix[1:].searchsorted(u, side="right")  # prefix[root] <= u < prefix[root + 1]
        prefix[-1] = total
        u -= prefix[root]
        root += lo
        leaf = self._descend(root, u.copy())
        values = nodes[leaf]
        if values[values.argmin()] <= 0.0:  # rounding sent a draw into a zero subtree: redo those
            bad = values <= 0.0
            leaf[bad] = self._descend_safe(root[bad], u[bad])
            values = nodes[leaf]
        slots = leaf - self._num_leaves
        return (slots, values) if return_priorities else slots

    def _strata(self, batch_size: int) -> np.ndarray:
        """``[0, 1, ..., batch_size - 1]`` as float64, cached per batch size."""
        cached = self.__dict__.get("_strata_cache")
        if cached is None or cached.size != batch_size:
            cached = np.arange(batch_size, dtype=np.float64)
            self._strata_cache = cached
        return cached

    def _descend(self, node: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Walk all draws down together: go right iff ``u >= left``, then ``u -= left``."""
        nodes = self._nodes
        child = node << 1
        for _ in range(self._depth - self._top_depth):
            left = nodes[child]
            right = u >= left
            left *= right
            u -= left
            child += right
            child <<= 1
        return child >> 1

    def _descend_safe(self, node: np.ndarray, u: np.ndarray) -> np.ndarray:
        """The descent that never enters a zero subtree (for the rare draws that rounding misled).

        A zero start node (possible only for ``u = total``) is first moved to the nearest positive
        node of its level on the left (or the first positive one).
        """
        nodes = self._nodes
        lo = 1 << self._top_depth
        positive = np.flatnonzero(nodes[lo : 2 * lo] > 0.0) + lo
        k = np.searchsorted(positive, node, side="right") - 1
        node = positive[np.maximum(k, 0)]
        for _ in range(self._depth - self._top_depth):
            left, right = nodes[2 * node], nodes[2 * node + 1]
            go_right = ((u >= left) & (right > 0.0)) | (left <= 0.0)
            u = np.where(go_right, np.minimum(np.maximum(u - left, 0.0), right), np.minimum(u, left))
            node = 2 * node + go_right
        return node

"""SumTree: exact sums, stratified sampling, lazy minimum and input validation."""

import math

import numpy as np
import pytest
from scipy import stats

from memagent.replay import SumTree
from memagent.replay.sum_tree import _TOP_DEPTH

# Three levels below the prefix-summed one: the incremental sweep and the descent both run.
DEEP = 1 << (_TOP_DEPTH + 3)


def _fresh_levels(tree: SumTree) -> np.ndarray:
    """The maintained tree levels recomputed independently from the leaves, bottom-up."""
    nodes = np.zeros_like(tree._nodes)
    leaves = tree._num_leaves
    nodes[leaves:] = tree._nodes[leaves:]
    for depth in range(tree._depth - 1, tree._top_depth - 1, -1):
        lo = 1 << depth
        nodes[lo : 2 * lo] = nodes[2 * lo : 4 * lo : 2] + nodes[2 * lo + 1 : 4 * lo : 2]
    return nodes


def test_hand_computed_tree_and_deterministic_strata():
    tree = SumTree(5)  # padded to 8 leaves
    tree.update(np.arange(5), np.array([1.0, 2.0, 3.0, 4.0, 0.0]))
    assert tree.total == 10.0
    assert tree.min_positive == 1.0
    np.testing.assert_array_equal(tree[np.array([0, 3, 4])], [1.0, 4.0, 0.0])
    # Ten strata of width 1 over the prefix sums [0,1) [1,3) [3,6) [6,10): the draw inside each
    # stratum cannot change the slot, whatever the generator.
    for seed in range(3):
        slots = tree.sample(10, np.random.default_rng(seed))
        np.testing.assert_array_equal(slots, [0, 1, 1, 2, 2, 2, 3, 3, 3, 3])


@pytest.mark.parametrize("capacity", [1, 7, 1000, 3000, 70_000])
def test_sampling_frequencies_match_priorities(capacity):
    rng = np.random.default_rng(0)
    priorities = rng.random(capacity) ** 3  # skewed
    priorities[rng.random(capacity) < 0.1] = 0.0  # some slots can never be drawn
    priorities[0] = 0.5
    tree = SumTree(capacity)
    tree.update(np.arange(capacity), priorities)
    assert tree.total == pytest.approx(math.fsum(priorities), rel=1e-12)
    draws = np.concatenate([tree.sample(256, rng) for _ in range(400)])
    counts = np.bincount(draws, minlength=capacity)
    assert counts[priorities == 0.0].sum() == 0
    expected = priorities / priorities.sum() * draws.size
    if capacity == 1:
        assert np.all(draws == 0)
    elif capacity <= 1000:
        positive = expected > 0
        _, p_value = stats.chisquare(counts[positive], expected[positive])
        assert p_value > 0.01
    else:  # too few draws per slot for a chi-square: compare grouped frequencies
        groups = np.array_split(np.arange(capacity), 50)
        got = np.array([counts[g].sum() for g in groups])
        want = np.array([expected[g].sum() for g in groups])
        np.testing.assert_allclose(got, want, rtol=0.05)


def test_tree_equals_fresh_rebuild_after_random_updates_and_wraparound_fills():
    rng = np.random.default_rng(1)
    capacity = DEEP - 123
    tree = SumTree(capacity)
    assert tree._depth - tree._top_depth >= 2
    reference = np.zeros(capacity)
    pos = 0
    for _ in range(300):
        idx = rng.integers(0, capacity, size=rng.integers(1, 300))
        values = rng.random(idx.size) * 10
        tree.update(idx, values)
        for i, v in zip(idx, values):  # sequential semantics: the last write wins
            reference[i] = v
        n = 37  # ring-buffer adds that wrap around the end
        for start in (pos, 0) if pos + n > capacity else (pos,):
            stop = min(start + n, capacity) if start == pos else (pos + n) - capacity
            tree.fill(start, stop, 3.5)
            reference[start:stop] = 3.5
        pos = (pos + n) % capacity
    np.testing.assert_array_equal(tree.priorities, reference)
    np.testing.assert_array_equal(tree._nodes, _fresh_levels(tree))
    rebuilt = SumTree(capacity)
    rebuilt.update(np.arange(capacity), reference)
    np.testing.assert_array_equal(tree._nodes, rebuilt._nodes)
    assert tree.total == pytest.approx(math.fsum(reference), rel=1e-12)
    assert tree.min_positive == reference[reference > 0].min()


def test_duplicate_indices_last_write_wins():
    tree = SumTree(8)
    tree.update(np.array([3, 3, 5, 3, 5]), np.array([1.0, 2.0, 3.0, 4.0, 0.5]))
    np.testing.assert_array_equal(tree.priorities, [0, 0, 0, 4.0, 0, 0.5, 0, 0])
    assert tree.total == 4.5
    np.testing.assert_array_equal(tree._nodes, _fresh_levels(tree))


def test_min_positive_is_exact_when_the_minimum_is_raised_or_zeroed():
    rng = np.random.default_rng(2)
    tree = SumTree(300)
    reference = np.zeros(300)
    for step in range(200):
        idx = rng.choice(300, size=20, replace=False)
        values = rng.random(20) + 0.01
        if step % 7 == 0:  # raise or zero the current minimum
            idx[0] = int(np.argmin(np.where(reference > 0, reference, np.inf)))
            values[0] = 0.0 if step % 2 else 5.0
        tree.update(idx, values)
        reference[idx] = values
        assert tree.min_positive == reference[reference > 0].min()


def test_bad_inputs_raise_and_leave_the_tree_unchanged():
    tree = SumTree(10)
    tree.update(np.arange(10), np.arange(1.0, 11.0))
    before = tree._nodes.copy()
    for priorities in ([1.0, -1.0], [1.0, np.nan], [np.inf, 1.0]):
        with pytest.raises(ValueError, match="priorities must be finite and >= 0"):
            tree.update(np.array([0, 1]), np.array(priorities))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 10\), got 10"):
        tree.update(np.array([0, 10]), np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="got -1"):
        tree.update(np.array([-1]), np.array([1.0]))
    with pytest.raises(TypeError, match="indices must be integers"):
        tree.update(np.array([0.0, 1.0]), np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="one value per index"):
        tree.update(np.array([0, 1]), np.array([1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="priority must be finite"):
        tree.fill(0, 3, -2.0)
    with pytest.raises(ValueError, match="start <= stop"):
        tree.fill(5, 11, 1.0)
    np.testing.assert_array_equal(tree._nodes, before)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        tree.sample(0, np.random.default_rng(0))
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        tree.sample(4, 0)
    with pytest.raises(ValueError, match="capacity must be a positive integer"):
        SumTree(0)
    with pytest.raises(ValueError, match="every priority is 0"):
        SumTree(4).sample(2, np.random.default_rng(0))


def test_sampling_never_returns_zero_slots_even_at_rounding_edges():
    # Mostly-zero tree whose only mass sits at the far left: draws near `total` must not fall
    # into the zero subtrees on the right after rounding.
    tree = SumTree(DEEP)
    tree.update(np.array([0, 1, 2]), np.array([1e-300, 1.0, 1e-17]))
    rng = np.random.default_rng(3)
    draws = np.concatenate([tree.sample(1024, rng) for _ in range(20)])
    assert set(np.unique(draws)) <= {0, 1, 2}
    assert np.mean(draws == 1) > 0.99


def test_find_inverts_the_cumulative_sum_and_skips_zero_slots_at_the_edges():
    tree = SumTree(DEEP)
    assert tree._depth - tree._top_depth >= 2  # the descent below the prefix-summed level runs
    priorities = np.zeros(DEEP)
    priorities[[5, 6, 2000, 4000]] = [1.0, 0.5, 2.0, 1e-17]
    tree.update(np.arange(DEEP), priorities)
    total = tree.total
    found = tree.find(np.array([0.0, 0.999, 1.0, 1.49, 1.5, 3.49]))
    np.testing.assert_array_equal(found, [5, 5, 6, 6, 2000, 2000])
    # u = total (and beyond) must give the last positive slot, never a zero one at the end.
    np.testing.assert_array_equal(tree.find(np.array([total, total * 2])), [4000, 4000])
    # Rounding edge: slot 2001 is zero and sits right of the mass of 2000; draws just below the
    # prefix boundary must stay on a positive slot.
    edges = np.nextafter(np.full(5, 3.5), 0.0) - np.arange(5) * 1e-16
    assert set(tree.find(edges)) <= {2000, 4000}
    with pytest.raises(ValueError, match="NaN"):
        tree.find(np.array([np.nan]))


def test_min_rescans_stay_rare_when_a_ring_overwrites_tied_minima():
    # Transitions never sampled keep the priority they were added with: many equal minima that a
    # ring buffer overwrites in slot order. The exact minimum must not cost a rescan per write.
    tree = SumTree(4096)
    tree.fill(0, 4096, 1.0)
    for start in range(0, 4096, 8):
        tree.fill(start, start + 8, 2.0)
        expected = 1.0 if start + 8 < 4096 else 2.0
        assert tree.min_positive == expected
    assert tree._min_rescans <= 2

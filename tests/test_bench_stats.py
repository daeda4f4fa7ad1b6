"""rliable-style statistics against hand-computed cases (and rliable itself when installed)."""

import numpy as np
import pytest

from memagent.bench.stats import (
    aggregate_mean,
    iqm,
    probability_of_improvement,
    probability_of_improvement_ci,
    stratified_bootstrap_ci,
)


def test_iqm_drops_lowest_and_highest_quarter():
    # 8 scores over 2 runs x 4 tasks: the middle 4 of sorted 1..8 are 3,4,5,6 -> 4.5.
    scores = np.array([[1.0, 8.0, 3.0, 6.0], [2.0, 7.0, 4.0, 5.0]])
    assert iqm(scores) == pytest.approx(4.5)
    # Outliers do not move the IQM but move the mean.
    spiky = np.array([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 1000.0]]).T
    assert iqm(spiky) == pytest.approx(4.5)
    assert aggregate_mean(spiky) == pytest.approx((28 + 1000) / 8)


def test_mean_is_mean_over_tasks_of_run_means():
    scores = np.array([[1.0, 10.0], [3.0, 20.0], [5.0, 30.0]])  # task means 3 and 20
    assert aggregate_mean(scores) == pytest.approx(11.5)


def test_iqm_per_point_of_learning_curves():
    curves = np.stack([np.arange(4.0) + k for k in range(4)])[:, None, :]  # (4 runs, 1 task, 4 points)
    # Each column holds {t, t+1, t+2, t+3}; IQM keeps t+1, t+2 -> t + 1.5.
    np.testing.assert_allclose(iqm(curves), np.arange(4.0) + 1.5)


def test_probability_of_improvement_hand_computed():
    x = np.array([[3.0], [5.0]])
    y = np.array([[1.0], [3.0], [6.0]])
    # pairs: 3>1, 3=3 (1/2), 3<6, 5>1, 5>3, 5<6 -> (1 + .5 + 0 + 1 + 1 + 0) / 6
    assert probability_of_improvement(x, y) == pytest.approx(3.5 / 6)
    assert probability_of_improvement(y, x) == pytest.approx(1 - 3.5 / 6)
    # Two tasks: average of per-task probabilities (1 and 0).
    x2 = np.array([[2.0, 0.0], [3.0, 0.0]])
    y2 = np.array([[1.0, 1.0]])
    assert probability_of_improvement(x2, y2) == pytest.approx(0.5)
    assert probability_of_improvement(x, x) == pytest.approx(0.5)


def test_bootstrap_of_two_runs_has_exact_percentile_interval():
    # One task, runs {0, 1}: the bootstrap mean takes 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4, so the
    # 2.5% and 97.5% quantiles are 0 and 1, and the replicate mean is 0.5.
    est = stratified_bootstrap_ci(np.array([[0.0], [1.0]]), aggregate_mean, reps=2000, seed=1)
    assert est.point == pytest.approx(0.5)
    assert (est.lower, est.upper) == (0.0, 1.0)
    # 50% interval: the 25% / 75% quantiles of {0, .5, .5, 1} -> 0.5, 0.5 up to sampling noise at the edges.
    est50 = stratified_bootstrap_ci(
        np.array([[0.0], [1.0]]), aggregate_mean, reps=2000, confidence=0.4, seed=1
    )
    assert est50.lower == est50.upper == 0.5


def test_bootstrap_is_stratified_by_task():
    # Task 0 has runs {0, 0}, task 1 runs {10, 10}: resampling within tasks never mixes them, so every
    # replicate mean is exactly 5 (an unstratified bootstrap over all 4 cells would not be).
    scores = np.array([[0.0, 10.0], [0.0, 10.0]])
    est = stratified_bootstrap_ci(scores, aggregate_mean, reps=500, seed=0)
    assert est.lower == est.upper == pytest.approx(5.0)


def test_bootstrap_interval_covers_and_shrinks_with_more_runs():
    rng = np.random.default_rng(0)
    small = rng.normal(1.0, 1.0, size=(5, 1))
    large = rng.normal(1.0, 1.0, size=(100, 1))
    a = stratified_bootstrap_ci(small, iqm, reps=1000, seed=0)
    b = stratified_bootstrap_ci(large, iqm, reps=1000, seed=0)
    assert a.lower <= a.point <= a.upper and b.lower <= b.point <= b.upper
    assert (b.upper - b.lower) < (a.upper - a.lower)
    assert stratified_bootstrap_ci(small, iqm, reps=200, seed=3) == stratified_bootstrap_ci(
        small, iqm, reps=200, seed=3
    )


def test_poi_interval():
    x = np.array([[5.0], [6.0], [7.0]])
    y = np.array([[1.0], [2.0], [3.0]])
    est = probability_of_improvement_ci(x, y, reps=200)
    assert est.point == est.lower == est.upper == 1.0


def test_bad_input_raises_naming_argument():
    with pytest.raises(ValueError, match="scores"):
        iqm(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="reps"):
        stratified_bootstrap_ci(np.ones((2, 1)), iqm, reps=0)
    with pytest.raises(ValueError, match="confidence"):
        stratified_bootstrap_ci(np.ones((2, 1)), iqm, confidence=1.5)
    with pytest.raises(ValueError, match="same number of tasks"):
        probability_of_improvement(np.ones((2, 2)), np.ones((2, 3)))


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_matches_rliable_when_installed():
    metrics = pytest.importorskip("rliable.metrics")
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(7, 3)), rng.normal(0.3, 1.0, size=(5, 3))
    assert iqm(x) == pytest.approx(metrics.aggregate_iqm(x))
    assert aggregate_mean(x) == pytest.approx(metrics.aggregate_mean(x))
    assert probability_of_improvement(x, y) == pytest.approx(metrics.probability_of_improvement(x, y))
    # Percentile intervals agree with rliable's within bootstrap noise.
    from rliable import library

    _, ci = library.get_interval_estimates(
        {"x": x},
        lambda s: np.array([metrics.aggregate_iqm(s)]),
        reps=2000,
        random_state=np.random.RandomState(0),
    )
    ours = stratified_bootstrap_ci(x, iqm, reps=2000, seed=0)
    assert ours.lower == pytest.approx(ci["x"][0, 0], abs=0.08)
    assert ours.upper == pytest.approx(ci["x"][1, 0], abs=0.08)

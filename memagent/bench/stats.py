"""Aggregate statistics for RL results, following rliable (Agarwal et al., NeurIPS 2021).

Scores are arranged as a matrix ``(num_runs, num_tasks)`` (runs = seeds, tasks = environments), or
``(num_runs, num_tasks, T)`` for learning curves. All estimators are plain numpy/scipy; the test
suite checks them against hand-computed cases and, where the ``rliable`` package is installed,
against its implementation.

- :func:`iqm`: interquartile mean, the mean of the middle 50% of all ``runs x tasks`` scores
  (``scipy.stats.trim_mean(scores, 0.25, axis=None)``).
- :func:`aggregate_mean`: mean over tasks of the per-task mean over runs.
- :func:`stratified_bootstrap_ci`: percentile confidence interval where each bootstrap replicate
  resamples the runs *within each task* independently (stratified by task).
- :func:`probability_of_improvement`: ``P(X > Y)`` per task from the Mann-Whitney U statistic
  (ties count 1/2), averaged over tasks; its interval resamples X and Y independently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import scipy.stats

Statistic = Callable[..., float | np.ndarray]


def _as_scores(scores: np.ndarray, name: str = "scores") -> np.ndarray:
    """Validate a score array of shape ``(num_runs, num_tasks, ...)``; a 1-D array is one task."""
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim < 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(
            f"{name} must have shape (num_runs, num_tasks, ...) with num_runs, num_tasks >= 1, "
            f"got shape {np.shape(scores)}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr!r}")
    return arr


def iqm(scores: np.ndarray) -> float | np.ndarray:
    """Interquartile mean over all runs and tasks.

    ``IQM = mean of the scores between the 25th and 75th percentiles`` (``trim_mean`` with
    proportion 0.25 cut from each end, on the flattened ``(num_runs * num_tasks)`` scores).

    :param scores: ``(num_runs, num_tasks)`` or ``(num_runs, num_tasks, T)``; a trailing axis ``T``
        (e.g. evaluation points of a learning curve) gives one IQM per point, shape ``(T,)``.
    """
    arr = _as_scores(scores)
    if arr.ndim == 2:
        return float(scipy.stats.trim_mean(arr, proportiontocut=0.25, axis=None))
    flat = arr.reshape(arr.shape[0] * arr.shape[1], -1)
    return np.asarray(scipy.stats.trim_mean(flat, proportiontocut=0.25, axis=0)).reshape(arr.shape[2:])


def aggregate_mean(scores: np.ndarray) -> float | np.ndarray:
    """Mean over tasks of the mean over runs: ``mean_m (1/N sum_n x[n, m])``.

    :param scores: ``(num_runs, num_tasks)`` or ``(num_runs, num_tasks, T)`` (gives shape ``(T,)``).
    """
    arr = _as_scores(scores)
    out = arr.mean(axis=0).mean(axis=0)
    return float(out) if np.ndim(out) == 0 else out


def aggregate_median(scores: np.ndarray) -> float:
    """Median over tasks of the mean over runs (rliable's ``aggregate_median``)."""
    arr = _as_scores(scores)
    if arr.ndim != 2:
        raise ValueError(f"scores must have shape (num_runs, num_tasks), got {arr.shape}")
    return float(np.median(arr.mean(axis=0)))


def optimality_gap(scores: np.ndarray, gamma: float = 1.0) -> float:
    """Mean shortfall below ``gamma``: ``gamma - mean(min(x, gamma))`` over all runs and tasks."""
    arr = _as_scores(scores)
    return float(gamma - np.mean(np.minimum(arr, gamma)))


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """Probability that algorithm X beats Y on a randomly chosen task.

    For task ``m``: ``P(X_m > Y_m) = 1/(N K) sum_{i,j} S(x_im, y_jm)`` with ``S(x, y) = 1`` if
    ``x > y``, ``1/2`` if ``x == y`` and 0 otherwise (the Mann-Whitney U statistic divided by
    ``N K``); the result averages over tasks.

    :param scores_x: ``(N, num_tasks)`` scores of X.
    :param scores_y: ``(K, num_tasks)`` scores of Y (same number of tasks).
    """
    x = _as_scores(scores_x, "scores_x")
    y = _as_scores(scores_y, "scores_y")
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"scores_x and scores_y must be (runs, tasks) with the same number of tasks, "
            f"got shapes {x.shape} and {y.shape}"
        )
    # Pairwise comparison per task: (N, K, M) of 1 / 0.5 / 0.
    diff = x[:, None, :] - y[None, :, :]
    s = (diff > 0).astype(np.float64) + 0.5 * (diff == 0)
    return float(s.mean(axis=(0, 1)).mean())


def _resample_runs(arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One stratified resample: for every task, draw ``num_runs`` runs with replacement.

    :param arr: ``(N, M, ...)``; returns an array of the same shape.
    """
    n, m = arr.shape[:2]
    idx = rng.integers(0, n, size=(n, m))
    return arr[idx, np.arange(m)[None, :]]


class IntervalEstimate(NamedTuple):
    """A point estimate with its confidence interval ``[lower, upper]``."""

    point: float | np.ndarray
    lower: float | np.ndarray
    upper: float | np.ndarray


def stratified_bootstrap_ci(
    scores: np.ndarray | tuple[np.ndarray, ...],
    statistic: Statistic,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> IntervalEstimate:
    """Percentile confidence interval from a stratified bootstrap over runs.

    Each replicate resamples, independently for every task, ``N`` of the ``N`` runs with
    replacement, and evaluates ``statistic``; the interval is the ``(1-c)/2`` and ``(1+c)/2``
    quantiles of the replicates. With a tuple of score arrays (e.g. ``(x, y)`` for the
    probability of improvement) each array is resampled independently.

    :param scores: ``(N, M, ...)`` array, or a tuple of such arrays passed to ``statistic``.
    :param statistic: function of the score array(s) returning a float or array.
    :param reps: number of bootstrap replicates (>= 1).
    :param confidence: coverage in (0, 1).
    :param seed: seed of the resampling generator.
    """
    if not isinstance(reps, int) or reps < 1:
        raise ValueError(f"reps must be a positive int, got {reps!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    arrays = tuple(_as_scores(s) for s in scores) if isinstance(scores, tuple) else (_as_scores(scores),)
    rng = np.random.default_rng(seed)
    point = statistic(*arrays)
    reps_values = np.stack(
        [
            np.asarray(statistic(*(_resample_runs(a, rng) for a in arrays)), dtype=np.float64)
            for _ in range(reps)
        ]
    )
    alpha = (1.0 - confidence) / 2.0
    lower, upper = np.quantile(reps_values, [alpha, 1.0 - alpha], axis=0)
    if np.ndim(point) == 0:
        return IntervalEstimate(float(point), float(lower), float(upper))
    return IntervalEstimate(np.asarray(point), lower, upper)


def interval_estimates(
    score_dict: dict[str, np.ndarray],
    statistics: dict[str, Statistic] | None = None,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, IntervalEstimate]]:
    """IQM and mean (or the given statistics) with stratified-bootstrap CIs for every algorithm.

    :param score_dict: algorithm name -> ``(num_runs, num_tasks)`` scores.
    :returns: algorithm -> statistic name -> :class:`IntervalEstimate`.
    """
    statistics = statistics or {"IQM": iqm, "Mean": aggregate_mean}
    return {
        name: {
            stat: stratified_bootstrap_ci(s, fn, reps=reps, confidence=confidence, seed=seed)
            for stat, fn in statistics.items()
        }
        for name, s in score_dict.items()
    }


def probability_of_improvement_ci(
    scores_x: np.ndarray, scores_y: np.ndarray, reps: int = 2000, confidence: float = 0.95, seed: int = 0
) -> IntervalEstimate:
    """:func:`probability_of_improvement` with a stratified-bootstrap CI (X and Y resampled apart)."""
    return stratified_bootstrap_ci(
        (scores_x, scores_y), probability_of_improvement, reps=reps, confidence=confidence, seed=seed
    )

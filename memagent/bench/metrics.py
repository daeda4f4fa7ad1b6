"""Switch-aligned metrics for non-stationary environments.

A *switch* is a step where the task changes mid-episode. Per-step losses ``l_t`` (the prediction
error, or ``-r_t`` when the env reports none) are cut into windows around each switch ``s``:
``w_k = l_{s+k}`` for ``k in [-before, after)``, and averaged over switches and episodes into the
switch-aligned curve ``c_k``. From ``c``:

- steady state ``c_inf``: mean of ``c_k`` over the last quarter of the post-switch window;
- peak ``c_peak = max_{k >= 0} c_k``;
- recovery time: the first ``k >= 0`` from which the (moving-average smoothed) curve stays within
  ``c_inf + max(tol * (c_peak - c_inf), abs_tol)``;
- post-switch regret: ``sum_{k=0}^{after-1} (c_k - c_inf)``, the excess loss paid for the switch;
- error after switch: ``mean_{k < first_k} c_k``, the mean loss over the first steps after it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

LOSS_KEYS = ("loss", "error", "squared_error", "abs_error")
TASK_KEYS = ("task_id", "task", "task_index")


def switch_points(task_ids: np.ndarray) -> np.ndarray:
    """Indices ``t >= 1`` with ``task_ids[t] != task_ids[t-1]``. ``task_ids``: ``(T,)``."""
    t = np.asarray(task_ids)
    if t.ndim != 1:
        raise ValueError(f"task_ids must be 1-D, got shape {t.shape}")
    return np.flatnonzero(t[1:] != t[:-1]) + 1


def aligned_windows(values: np.ndarray, switches: np.ndarray, before: int, after: int) -> np.ndarray:
    """Windows ``values[s-before : s+after]`` for each switch ``s``, NaN-padded at the edges.

    :param values: ``(T,)`` per-step values of one episode.
    :param switches: ``(S,)`` switch indices.
    :returns: ``(S, before + after)``.
    """
    if before < 0 or after < 1:
        raise ValueError(f"need before >= 0 and after >= 1, got before={before}, after={after}")
    v = np.asarray(values, dtype=np.float64)
    out = np.full((len(switches), before + after), np.nan)
    for i, s in enumerate(np.asarray(switches, dtype=int)):
        lo, hi = max(s - before, 0), min(s + after, len(v))
        out[i, lo - (s - before) : hi - (s - before)] = v[lo:hi]
    return out


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average ``y_k = mean(x_{max(0,k-window+1)..k})``, ignoring NaNs. ``(K,)``."""
    if window <= 1:
        return np.asarray(x, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    out = np.full(len(x), np.nan)
    for k in range(len(x)):
        seg = x[max(0, k - window + 1) : k + 1]
        seg = seg[np.isfinite(seg)]
        if len(seg):
            out[k] = seg.mean()
    return out


def recovery_time(
    after_curve: np.ndarray, steady: float, tol: float = 0.1, abs_tol: float = 0.0, smooth: int = 1
) -> int:
    """First ``k`` from which ``after_curve`` stays within ``steady + max(tol*(peak-steady), abs_tol)``.

    :param after_curve: ``(K,)`` aligned loss for ``k = 0..K-1`` after the switch.
    :returns: ``k`` in ``[0, K]``; ``K`` means "not recovered within the window".
    """
    c = moving_average(after_curve, smooth)
    valid = np.isfinite(c)
    if not valid.any():
        return len(c)
    peak = float(np.nanmax(c))
    threshold = steady + max(tol * (peak - steady), abs_tol)
    above = np.flatnonzero(~(c <= threshold))  # NaN counts as not recovered
    if len(above) == 0:
        return 0
    return int(above[-1] + 1)


def post_switch_regret(after_curve: np.ndarray, steady: float) -> float:
    """``sum_k (c_k - steady)`` over the post-switch window (NaNs skipped)."""
    c = np.asarray(after_curve, dtype=np.float64)
    return float(np.nansum(c - steady))


@dataclass
class SwitchMetrics:
    """Summary of switch-aligned losses (see the module docstring for the definitions)."""

    n_switches: int
    before: int
    after: int
    steady_state: float
    peak: float
    recovery_time: float
    regret: float
    error_after_switch: float
    mean_loss: float
    mean_return: float

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in asdict(self).items()
        }


def typical_segment(episodes: list[dict[str, np.ndarray]], cap: int = 50) -> int:
    """Median number of steps from a switch to the next switch or the episode end, in ``[1, cap]``."""
    gaps = []
    for ep in episodes:
        points = switch_points(ep["task"])
        if len(points):
            gaps.extend(np.diff(np.append(points, len(ep["task"]))).tolist())
    return int(np.clip(np.median(gaps), 1, cap)) if gaps else cap


def switch_metrics(
    episodes: list[dict[str, np.ndarray]],
    before: int | None = None,
    after: int | None = None,
    first_k: int = 10,
    tol: float = 0.1,
    smooth: int = 5,
) -> tuple[SwitchMetrics, np.ndarray]:
    """Switch-aligned curve and metrics over episodes.

    :param episodes: each a dict with ``loss`` ``(T,)``, ``reward`` ``(T,)`` and ``task`` ``(T,)``.
    :param before: steps before the switch in the window (default ``min(10, after)``).
    :param after: steps after it (default: the median number of steps a task lasts after a switch,
        at most 50, so that the window rarely runs into the next switch).
    :returns: ``(metrics, curve)`` with ``curve`` of shape ``(before + after,)`` (NaN if no switch).
    """
    if after is None:
        after = typical_segment(episodes, cap=50)
    if before is None:
        before = min(10, after)
    windows = [
        aligned_windows(ep["loss"], switch_points(ep["task"]), before, after)
        for ep in episodes
        if len(ep["loss"]) > 0
    ]
    stacked = np.concatenate(windows) if windows else np.zeros((0, before + after))
    mean_loss = float(np.mean(np.concatenate([ep["loss"] for ep in episodes]))) if episodes else float("nan")
    mean_return = float(np.mean([np.sum(ep["reward"]) for ep in episodes])) if episodes else float("nan")
    if len(stacked) == 0:
        nan = float("nan")
        return SwitchMetrics(0, before, after, nan, nan, nan, nan, nan, mean_loss, mean_return), np.full(
            before + after, np.nan
        )
    with np.errstate(invalid="ignore"), _ignore_nan_warnings():
        curve = np.nanmean(stacked, axis=0)
    post = curve[before:]
    tail = post[-max(1, after // 4) :]
    steady = float(np.nanmean(tail)) if np.isfinite(tail).any() else float("nan")
    metrics = SwitchMetrics(
        n_switches=len(stacked),
        before=before,
        after=after,
        steady_state=steady,
        peak=float(np.nanmax(post)) if np.isfinite(post).any() else float("nan"),
        recovery_time=float(recovery_time(post, steady, tol=tol, smooth=smooth)),
        regret=post_switch_regret(post, steady),
        error_after_switch=float(np.nanmean(post[:first_k]))
        if np.isfinite(post[:first_k]).any()
        else float("nan"),
        mean_loss=mean_loss,
        mean_return=mean_return,
    )
    return metrics, curve


class _ignore_nan_warnings:
    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


def step_record(info: dict[str, Any], reward: float) -> tuple[float, float]:
    """``(loss, task)`` of one step from an env ``info`` (loss falls back to ``-reward``, task to 0)."""
    loss = next((float(info[k]) for k in LOSS_KEYS if k in info), -float(reward))
    task = next((float(info[k]) for k in TASK_KEYS if k in info and np.isscalar(info[k])), 0.0)
    return loss, task

"""Continual-learning metrics on an **error** matrix (lower is better).

``R[i, j]`` is the error (MSE) on task j measured after training on tasks 0..i (tasks are 0-indexed,
T tasks, ``R`` is ``(T, T)``). ``b[j]`` is the error of the model before any training on task j.

The definitions are the published ones (Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual
Learning", NeurIPS 2017, eq. 2; Chaudhry et al., "Riemannian Walk for Incremental Learning", ECCV 2018,
eq. 7-8) written for accuracies there; here they are applied to errors **with the same formulas**, so
the signs read the other way round:

============  =================================================  ==========  =====================
metric        formula                                            divide by   error reading
============  =================================================  ==========  =====================
ACC           (1/T) Σ_j R[T−1, j]                                T           lower is better
BWT           (1/(T−1)) Σ_{j<T−1} (R[T−1, j] − R[j, j])          T − 1       > 0: forgetting
FWT           (1/(T−1)) Σ_{j≥1} (R[j−1, j] − b[j])               T − 1       < 0: positive transfer
forgetting    (1/(T−1)) Σ_{j<T−1} (R[T−1, j] − min_{j≤l<T−1} R[l, j])  T − 1   ≥ 0, lower is better
============  =================================================  ==========  =====================

Chaudhry's forgetting f_j compares the final error with the *best* error task j ever had after it
was learned (l from j to T−2); BWT compares with the error right after learning it. With errors,
BWT ≤ forgetting always. The issue's "forgetting" (mean of final minus just-learned error on the first
T−1 tasks) is exactly BWT here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "ContinualMetrics",
    "average_error",
    "average_forgetting",
    "backward_transfer",
    "compute_metrics",
    "forward_transfer",
    "matrix_markdown",
]


def _check_matrix(errors: np.ndarray) -> np.ndarray:
    r = np.asarray(errors, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] != r.shape[1] or r.shape[0] < 1:
        raise ValueError(f"errors must be a square (T, T) matrix with T >= 1, got shape {r.shape}")
    return r


def average_error(errors: np.ndarray) -> float:
    """ACC for errors: (1/T) Σ_j R[T−1, j], the mean error on all tasks after the last one."""
    r = _check_matrix(errors)
    return float(r[-1].mean())


def backward_transfer(errors: np.ndarray) -> float:
    """BWT (GEM eq. 2) on errors: (1/(T−1)) Σ_{j<T−1} (R[T−1, j] − R[j, j]); > 0 means forgetting.

    Returns 0.0 for T = 1.
    """
    r = _check_matrix(errors)
    t = r.shape[0]
    if t == 1:
        return 0.0
    return float(np.mean(r[-1, :-1] - np.diag(r)[:-1]))


def forward_transfer(errors: np.ndarray, baseline: np.ndarray) -> float:
    """FWT (GEM eq. 2) on errors: (1/(T−1)) Σ_{j≥1} (R[j−1, j] − b[j]); < 0 means positive transfer.

    :param baseline: ``(T,)`` errors b[j] of the initial (untrained) model on each task.
    Returns 0.0 for T = 1.
    """
    r = _check_matrix(errors)
    t = r.shape[0]
    b = np.asarray(baseline, dtype=np.float64)
    if b.shape != (t,):
        raise ValueError(f"baseline must have shape ({t},), got {b.shape}")
    if t == 1:
        return 0.0
    return float(np.mean(np.array([r[j - 1, j] - b[j] for j in range(1, t)])))


def average_forgetting(errors: np.ndarray) -> float:
    """Average forgetting (Chaudhry et al. 2018, eq. 7-8) on errors.

    f_j = R[T−1, j] − min_{j ≤ l ≤ T−2} R[l, j] for j < T−1, averaged over the T−1 tasks.
    Returns 0.0 for T = 1.
    """
    r = _check_matrix(errors)
    t = r.shape[0]
    if t == 1:
        return 0.0
    f = [r[-1, j] - r[j : t - 1, j].min() for j in range(t - 1)]
    return float(np.mean(f))


@dataclass(frozen=True)
class ContinualMetrics:
    """All metrics of one error matrix (see the module docstring for definitions and signs)."""

    acc: float
    bwt: float
    forgetting: float
    fwt: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


def compute_metrics(errors: np.ndarray, baseline: np.ndarray | None = None) -> ContinualMetrics:
    """ACC, BWT, average forgetting and (with ``baseline``) FWT of an error matrix ``(T, T)``."""
    return ContinualMetrics(
        acc=average_error(errors),
        bwt=backward_transfer(errors),
        forgetting=average_forgetting(errors),
        fwt=None if baseline is None else forward_transfer(errors, baseline),
    )


def matrix_markdown(errors: np.ndarray, task_names: list[str] | None = None, fmt: str = "{:.4f}") -> str:
    """The error matrix as a Markdown table: rows "after task i", columns "task j"."""
    r = _check_matrix(errors)
    t = r.shape[0]
    names = task_names if task_names is not None else [str(j) for j in range(t)]
    if len(names) != t:
        raise ValueError(f"task_names must have {t} entries, got {len(names)}")
    lines = ["| after \\ on | " + " | ".join(names) + " |", "|---" * (t + 1) + "|"]
    for i in range(t):
        lines.append(f"| {names[i]} | " + " | ".join(fmt.format(v) for v in r[i]) + " |")
    return "\n".join(lines)

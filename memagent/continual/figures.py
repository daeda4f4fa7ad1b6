"""Figures of the continual-learning demo (matplotlib, Agg backend: files only, no windows)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_accuracy_matrix_and_baselines", "plot_memory_and_performance"]


def plot_memory_and_performance(
    memory: np.ndarray,
    errors: np.ndarray,
    task_names: Sequence[str],
    path: str | Path,
    title: str = "",
) -> Path:
    """The tutorial's figure, fixed: the DNC memory bank and the held-out error across tasks.

    :param memory: ``(N, W)`` memory matrix (e.g. after reading a held-out sequence of the last task).
    :param errors: ``(T, T)`` error matrix R[i, j].
    :param task_names: T names. :param path: output file (PNG).
    :return: the path written.
    """
    errors = np.asarray(errors)
    t = errors.shape[0]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    ax = axes[0]
    im = ax.imshow(np.asarray(memory), aspect="auto", cmap="viridis")
    ax.set_title("DNC memory bank (after the last task)")
    ax.set_xlabel("word dimension")
    ax.set_ylabel("memory slot")
    fig.colorbar(im, ax=ax)
    ax = axes[1]
    stages = np.arange(1, t + 1)
    for j in range(t):
        ax.plot(stages[j:], errors[j:, j], marker="o", label=f"task {j + 1}: {task_names[j]}")
    ax.plot(stages, np.diag(errors), "k--", marker="s", label="just-learned task")
    ax.plot(
        stages, [errors[i, : i + 1].mean() for i in range(t)], "r-", lw=2.5, label="mean over learned tasks"
    )
    ax.set_yscale("log")
    ax.set_xticks(stages)
    ax.set_xlabel("after training task")
    ax.set_ylabel("held-out MSE")
    ax.set_title("Performance across tasks")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_accuracy_matrix_and_baselines(
    errors: np.ndarray,
    task_names: Sequence[str],
    comparison: Mapping[str, Mapping[str, float]],
    path: str | Path,
    title: str = "",
) -> Path:
    """The error (accuracy) matrix heatmap and a bar chart comparing variants.

    :param errors: ``(T, T)`` error matrix R[i, j] of the main variant.
    :param comparison: ``{variant: {"ACC": ..., "BWT": ..., "forgetting": ...}}``.
    :return: the path written.
    """
    errors = np.asarray(errors)
    t = errors.shape[0]
    fig, axes = plt.subplots(1, 2, figsize=(14, 5))
    ax = axes[0]
    im = ax.imshow(np.log10(np.maximum(errors, 1e-6)), cmap="magma_r")
    for i in range(t):
        for j in range(t):
            ax.text(j, i, f"{errors[i, j]:.3f}", ha="center", va="center", fontsize=8, color="tab:cyan")
    ax.set_xticks(range(t), [f"{j + 1}: {n}" for j, n in enumerate(task_names)], rotation=30, ha="right")
    ax.set_yticks(range(t), [f"after {i + 1}" for i in range(t)])
    ax.set_title("R[i, j]: held-out MSE on task j after task i")
    fig.colorbar(im, ax=ax, label="log10 MSE")
    ax = axes[1]
    names = list(comparison)
    metrics = ["ACC", "BWT", "forgetting"]
    width = 0.8 / len(metrics)
    xs = np.arange(len(names))
    for k, metric in enumerate(metrics):
        vals = [comparison[n].get(metric, np.nan) for n in names]
        ax.bar(xs + (k - 1) * width, vals, width, label=metric)
    ax.set_xticks(xs, names, rotation=30, ha="right")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_ylabel("MSE (lower is better)")
    ax.set_title("Baselines: final mean error, backward transfer, forgetting")
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

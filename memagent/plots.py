"""All matplotlib figures of memagent (drawn with ``matplotlib.figure.Figure``, no pyplot state).

- :func:`plot_learning_curves`: return vs environment steps, one line per algorithm, with a
  95% stratified-bootstrap band over seeds.
- :func:`plot_switch_aligned`: loss against steps relative to a task switch (offset 0 = switch).
- :func:`plot_interval_estimates`: rliable-style interval-estimate plot (IQM / mean with 95% CIs).
- :func:`plot_memory`: the DNC's read and write weightings and memory usage over an episode.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from memagent.bench.stats import IntervalEstimate, aggregate_mean, iqm, stratified_bootstrap_ci


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _band(y: np.ndarray, stat: str, reps: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point estimate and 95% CI per column of ``y`` ``(R, T)`` (runs x points)."""
    y = np.asarray(y, dtype=np.float64)
    fn = iqm if stat == "iqm" else aggregate_mean
    if y.shape[0] == 1:
        return y[0], y[0], y[0]
    est = stratified_bootstrap_ci(y[:, None, :], fn, reps=reps, seed=seed)
    return np.asarray(est.point), np.asarray(est.lower), np.asarray(est.upper)


def plot_learning_curves(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    title: str = "",
    ylabel: str = "evaluation return",
    stat: str = "iqm",
    reps: int = 500,
    seed: int = 0,
) -> Path:
    """Learning curves with CI bands.

    :param curves: name -> ``(timesteps (T,), returns (R, T))`` for ``R`` seeds.
    :param stat: ``"iqm"`` or ``"mean"`` across seeds.
    """
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    for name, (x, y) in curves.items():
        point, lo, hi = _band(np.atleast_2d(y), stat, reps, seed)
        ax.plot(x, point, label=name, marker="o" if len(x) <= 30 else None, ms=3)
        ax.fill_between(x, lo, hi, alpha=0.25)
    ax.set_xlabel("environment steps")
    ax.set_ylabel(ylabel if len(next(iter(curves.values()))[1]) == 1 else f"{ylabel} ({stat.upper()})")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_switch_aligned(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    title: str = "",
    ylabel: str = "loss",
    reps: int = 500,
    seed: int = 0,
) -> Path:
    """Loss aligned at task switches (mean over seeds with a 95% bootstrap band).

    :param curves: name -> ``(offsets (K,), curves (R, K))``; NaNs (no data) are dropped per column.
    """
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    for name, (x, y) in curves.items():
        y = np.atleast_2d(np.asarray(y, dtype=np.float64))
        keep = np.all(np.isfinite(y), axis=0)
        if not keep.any():
            continue
        point, lo, hi = _band(y[:, keep], "mean", reps, seed)
        ax.plot(np.asarray(x)[keep], point, label=name)
        ax.fill_between(np.asarray(x)[keep], lo, hi, alpha=0.25)
    ax.axvline(0, color="k", lw=0.8, ls="--")
    ax.set_xlabel("steps since task switch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_interval_estimates(
    estimates: dict[str, dict[str, IntervalEstimate]],
    path: str | Path,
    title: str = "",
    xlabel: str = "score",
) -> Path:
    """One panel per statistic, one horizontal bar (95% CI) and tick (point) per algorithm."""
    algos = list(estimates)
    stats = list(next(iter(estimates.values())))
    fig = Figure(figsize=(3.2 * len(stats), 0.5 * len(algos) + 1.4))
    axes = fig.subplots(1, len(stats), squeeze=False)[0]
    colors = [f"C{i}" for i in range(len(algos))]
    for ax, stat in zip(axes, stats):
        for i, algo in enumerate(algos):
            est = estimates[algo][stat]
            ax.barh(i, est.upper - est.lower, left=est.lower, height=0.6, color=colors[i], alpha=0.6)
            ax.vlines(est.point, i - 0.3, i + 0.3, color="k", lw=1.5)
        ax.set_yticks(range(len(algos)), algos if ax is axes[0] else [""] * len(algos))
        ax.set_title(stat)
        ax.set_xlabel(xlabel)
        ax.set_ylim(len(algos) - 0.5, -0.5)  # first algorithm on top
        ax.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


_READ_NAMES = ("read_weights", "read_weightings", "read_w")
_WRITE_NAMES = ("write_weights", "write_weightings", "write_w")
_USAGE_NAMES = ("usage", "usage_vector", "u")


def _find_field(state: Any, names: Sequence[str]) -> Any:
    for obj in (state, *(getattr(state, f) for f in getattr(state, "_fields", ()))):
        for name in names:
            if hasattr(obj, name):
                return getattr(obj, name)
    return None


def memory_trace(states: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Stack read/write weightings and usage from per-step policy states (env 0).

    Looks for fields named like ``read_weights`` ``(B, R, N)``, ``write_weights`` ``(B, W, N)`` and
    ``usage`` ``(B, N)`` in the state (or one level down: e.g. a ``(pi, vf)`` pair of DNC states).
    :returns: ``(read (T, R, N), write (T, W, N), usage (T, N))`` or ``None`` when not found.
    """
    reads, writes, usages = [], [], []
    for st in states:
        if isinstance(st, tuple) and not hasattr(st, "_fields") and st:
            st = st[0]  # actor's state of an (actor, critic) pair
        r, w, u = (_find_field(st, n) for n in (_READ_NAMES, _WRITE_NAMES, _USAGE_NAMES))
        if r is None or w is None or u is None:
            return None
        reads.append(np.asarray(r.detach().cpu() if hasattr(r, "detach") else r)[0])
        writes.append(np.asarray(w.detach().cpu() if hasattr(w, "detach") else w)[0])
        usages.append(np.asarray(u.detach().cpu() if hasattr(u, "detach") else u)[0])
    if not reads:
        return None
    read, write, usage = np.stack(reads), np.stack(writes), np.stack(usages)
    if read.ndim == 2:
        read = read[:, None, :]
    if write.ndim == 2:
        write = write[:, None, :]
    return read, write, usage.reshape(len(usage), -1)


def plot_memory(
    read: np.ndarray,
    write: np.ndarray,
    usage: np.ndarray,
    path: str | Path,
    task: np.ndarray | None = None,
    title: str = "DNC memory over an episode",
) -> Path:
    """Heat maps (slot x step) of the read weightings (summed over heads), write weightings and usage.

    :param read: ``(T, R, N)``; :param write: ``(T, W, N)``; :param usage: ``(T, N)``;
    :param task: optional ``(T,)`` task ids: switches are drawn as vertical lines.
    """
    panels = [
        ("read weighting (sum over heads)", np.asarray(read).sum(axis=1)),
        ("write weighting", np.asarray(write).sum(axis=1)),
        ("usage", np.asarray(usage)),
    ]
    fig = Figure(figsize=(7.0, 7.0))
    axes = fig.subplots(3, 1, sharex=True)
    switches = np.flatnonzero(np.diff(np.asarray(task)) != 0) + 1 if task is not None else []
    for ax, (name, data) in zip(axes, panels):
        im = ax.imshow(data.T, aspect="auto", origin="lower", interpolation="nearest", cmap="viridis")
        fig.colorbar(im, ax=ax, fraction=0.03)
        for s in switches:
            ax.axvline(s - 0.5, color="w", lw=1.0, ls="--")
        ax.set_ylabel("slot")
        ax.set_title(name, fontsize=9)
    axes[-1].set_xlabel("step")
    fig.suptitle(title)
    return _save(fig, path)


def plot_bars(values: dict[str, float], path: str | Path, title: str = "", ylabel: str = "") -> Path:
    """A plain bar chart (used by the main job's summary)."""
    fig = Figure(figsize=(4.8, 3.6))
    ax = fig.add_subplot()
    ax.bar(list(values), list(values.values()), color=[f"C{i}" for i in range(len(values))])
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)

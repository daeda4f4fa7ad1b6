"""Aggregate sweep results: Markdown table, CSV files and figures.

Per environment and algorithm, over seeds: the score (``final_return`` by default) as IQM and mean
with 95% stratified-bootstrap CIs; the probability of improvement over the suite's baseline with its
CI; switch metrics (error in the first steps after a switch, recovery time, post-switch regret) and
throughput (env steps/s, wall-clock), as means over seeds.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from memagent.bench.stats import (
    IntervalEstimate,
    aggregate_mean,
    iqm,
    probability_of_improvement_ci,
    stratified_bootstrap_ci,
)

RUN_COLUMNS = (
    "run_id",
    "algo",
    "env",
    "seed",
    "num_timesteps",
    "final_return",
    "best_return",
    "wall_time_s",
    "steps_per_second",
)
SWITCH_COLUMNS = ("error_after_switch", "recovery_time", "regret", "steady_state", "n_switches", "mean_loss")


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}g}" if abs(x) < 1e4 else f"{x:.0f}"


def _ci(est: IntervalEstimate) -> str:
    return f"{_fmt(est.point)} [{_fmt(est.lower)}, {_fmt(est.upper)}]"


def group(
    records: list[dict[str, Any]], order: list[str] | None = None
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """env -> algo -> records (sorted by seed); algorithms in ``order`` (then first-seen) order."""
    rank = {name: i for i, name in enumerate(order or [])}
    records = sorted(records, key=lambda r: rank.get(r["algo"], len(rank)))
    out: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        out[r["env"]][r["algo"]].append(r)
    for env in out.values():
        for rs in env.values():
            rs.sort(key=lambda r: r["seed"])
    return out


def _metric(r: dict[str, Any], key: str) -> float:
    value = r.get(key, (r.get("switch") or {}).get(key))
    return float(value) if value is not None else float("nan")


def summarize(
    records: list[dict[str, Any]],
    metric: str = "final_return",
    baseline: str | None = None,
    reps: int = 2000,
    seed: int = 0,
    order: list[str] | None = None,
) -> list[dict[str, Any]]:
    """One row per (env, algo) with interval estimates and mean switch/throughput metrics."""
    rows = []
    for env, algos in group(records, order).items():
        base = algos.get(baseline) if baseline else None
        for algo, rs in algos.items():
            scores = np.array([_metric(r, metric) for r in rs])
            scores = scores[np.isfinite(scores)]
            row: dict[str, Any] = {"env": env, "algo": algo, "n_seeds": len(rs)}
            if len(scores):
                row["iqm"] = stratified_bootstrap_ci(scores[:, None], iqm, reps=reps, seed=seed)
                row["mean"] = stratified_bootstrap_ci(scores[:, None], aggregate_mean, reps=reps, seed=seed)
            if base is not None and algo != baseline and len(scores):
                b = np.array([_metric(r, metric) for r in base])
                b = b[np.isfinite(b)]
                if len(b):
                    row["poi"] = probability_of_improvement_ci(
                        scores[:, None], b[:, None], reps=reps, seed=seed
                    )
            for key in (*SWITCH_COLUMNS, "steps_per_second", "wall_time_s"):
                vals = np.array([_metric(r, key) for r in rs])
                row[key] = float(np.mean(vals[np.isfinite(vals)])) if np.isfinite(vals).any() else None
            rows.append(row)
    return rows


def markdown_table(
    rows: list[dict[str, Any]], metric: str = "final_return", baseline: str | None = None
) -> str:
    """The README table: one line per (env, algo)."""
    poi_head = f"P(improve over {baseline})" if baseline else "P(improve)"
    head = [
        "env",
        "algo",
        "seeds",
        f"{metric} IQM [95% CI]",
        f"{metric} mean [95% CI]",
        poi_head,
        "error after switch",
        "recovery (steps)",
        "post-switch regret",
        "env steps/s",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r["env"],
            r["algo"],
            str(r["n_seeds"]),
            _ci(r["iqm"]) if "iqm" in r else "–",
            _ci(r["mean"]) if "mean" in r else "–",
            _ci(r["poi"]) if "poi" in r else "–",
            _fmt(r.get("error_after_switch")),
            _fmt(r.get("recovery_time")),
            _fmt(r.get("regret")),
            _fmt(r.get("steps_per_second"), 4),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def runs_csv(records: list[dict[str, Any]]) -> str:
    """One line per run with its scalar metrics."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([*RUN_COLUMNS, *SWITCH_COLUMNS])
    for r in records:
        w.writerow([r.get(c) for c in RUN_COLUMNS] + [(r.get("switch") or {}).get(c) for c in SWITCH_COLUMNS])
    return buf.getvalue()


def summary_csv(rows: list[dict[str, Any]]) -> str:
    """One line per (env, algo) with point estimates and CI bounds."""
    buf = io.StringIO()
    w = csv.writer(buf)
    est_cols = [f"{k}_{p}" for k in ("iqm", "mean", "poi") for p in ("point", "lower", "upper")]
    plain = ["n_seeds", *SWITCH_COLUMNS, "steps_per_second", "wall_time_s"]
    w.writerow(["env", "algo", *est_cols, *plain])
    for r in rows:
        ests = []
        for k in ("iqm", "mean", "poi"):
            e = r.get(k)
            ests += [e.point, e.lower, e.upper] if e is not None else [None] * 3
        w.writerow([r["env"], r["algo"], *ests, *[r.get(c) for c in plain]])
    return buf.getvalue()


def _curve_matrix(rs: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray] | None:
    """Learning curves of several seeds on a common grid ``(T,)``, ``(R, T)`` (linear interpolation)."""
    curves = [
        (np.asarray(r["eval_timesteps"], float), np.asarray(r["eval_returns"], float))
        for r in rs
        if r.get("eval_timesteps")
    ]
    if not curves:
        return None
    end = min(x[-1] for x, _ in curves)
    grid = np.unique(np.concatenate([x[x <= end] for x, _ in curves]))
    return grid, np.stack([np.interp(grid, x, y) for x, y in curves])


def write_figures(
    records: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    fig_dir: Path,
    metric: str = "final_return",
    order: list[str] | None = None,
) -> list[Path]:
    """Learning curves and switch-aligned curves per env, and an interval-estimate plot per env."""
    from memagent import plots

    fig_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for env, algos in group(records, order).items():
        slug = env.replace("/", "-")
        lc = {a: m for a, rs in algos.items() if (m := _curve_matrix(rs)) is not None}
        if lc:
            paths.append(
                plots.plot_learning_curves(
                    lc, fig_dir / f"learning_curves_{slug}.png", title=f"{env}: evaluation return"
                )
            )
        sw = {}
        for a, rs in algos.items():
            cs = [np.array(r["switch_curve"], dtype=float) for r in rs if r.get("switch_curve")]
            if cs and all(len(c) == len(cs[0]) for c in cs):
                sw[a] = (np.asarray(rs[0]["switch_offsets"]), np.stack(cs))
        if sw and any(np.isfinite(c).any() for _, c in sw.values()):
            paths.append(
                plots.plot_switch_aligned(
                    sw, fig_dir / f"switch_aligned_{slug}.png", title=f"{env}: loss around task switches"
                )
            )
        ests = {
            r["algo"]: {"IQM": r["iqm"], "Mean": r["mean"]} for r in rows if r["env"] == env and "iqm" in r
        }
        if ests:
            paths.append(
                plots.plot_interval_estimates(
                    ests, fig_dir / f"interval_estimates_{slug}.png", title=env, xlabel=metric
                )
            )
    return paths


def _dnc_figure(record: dict[str, Any], sweep_dir: Path) -> Path | None:
    """A run's DNC memory figure: under its recorded ``run_dir``, or under ``<sweep>/runs/<run_id>`` for a
    sweep folder moved from where it ran (runs done on another machine and copied in)."""
    candidates = [Path(record["run_dir"])] if record.get("run_dir") else []
    if record.get("run_id"):
        candidates.append(sweep_dir / "runs" / record["run_id"])
    for run_dir in candidates:
        figure = run_dir / "figures" / "dnc_memory.png"
        if figure.is_file():
            return figure
    return None


def write_report(
    records: list[dict[str, Any]],
    out_dir: str | Path,
    metric: str = "final_return",
    baseline: str | None = None,
    reps: int = 2000,
    title: str = "",
    order: list[str] | None = None,
    command: str = "",
    env_order: list[str] | None = None,
) -> dict[str, Any]:
    """Write ``report.md``, ``runs.csv``, ``summary.csv`` and ``figures/`` into ``out_dir``.

    Algorithms are listed in ``order`` and environments in ``env_order`` (the suite's), then first-seen.

    :returns: ``{"markdown": str, "rows": [...], "figures": [paths]}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env_rank = {name: i for i, name in enumerate(env_order or [])}
    records = sorted(records, key=lambda r: env_rank.get(r["env"], len(env_rank)))  # group() keeps it
    rows = summarize(records, metric=metric, baseline=baseline, reps=reps, order=order)
    table = markdown_table(rows, metric=metric, baseline=baseline)
    figures = write_figures(records, rows, out / "figures", metric=metric, order=order)
    dnc = [figure for r in records if (figure := _dnc_figure(r, out)) is not None]  # first env first
    parts = [f"# {title}\n" if title else "", f"Command: `{command}`\n\n" if command else "", table]
    parts.append(
        "\nIQM/mean over seeds with 95% stratified-bootstrap CIs; P(improve) is the probability "
        "that a run of the algorithm beats a run of the baseline (Mann-Whitney, rliable's method). "
        "Switch metrics: mean over seeds of the held-out evaluation (see memagent.bench.metrics).\n"
    )
    if figures or dnc:
        parts.append("\nFigures: " + ", ".join(str(p) for p in [*figures, *dnc[:1]]) + "\n")
    markdown = "".join(parts)
    (out / "report.md").write_text(markdown)
    (out / "runs.csv").write_text(runs_csv(records))
    (out / "summary.csv").write_text(summary_csv(rows))
    return {"markdown": markdown, "table": table, "rows": rows, "figures": figures + dnc[:1]}

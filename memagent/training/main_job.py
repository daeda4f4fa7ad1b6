"""``python train.py`` without arguments: the DNC agent against a memoryless baseline, then a summary.

Both agents train on ``memagent/NonStationaryRegression-v0`` with a small input dimension (2) so that
the whole job runs in a few minutes on 2 CPU cores. The observation holds ``x_t`` and the previous target
``y_{t-1}`` but not ``x_{t-1}``: inferring which task is active needs memory of earlier steps, which the
memoryless PPO baseline does not have. The summary compares returns and the error after task switches,
and names the run folders and figures.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from memagent.training.config import TrainConfig
from memagent.training.run import RunResult, atomic_write_text, new_run_dir, train

MAIN_ENV = "memagent/NonStationaryRegression-v0"
MAIN_ENV_KWARGS: dict[str, Any] = {"dim": 2}
MAIN_TIMESTEPS = 20_000
MEMORY_AGENT = "ppo_dnc"
BASELINE = "ppo"




def _row(name: str, r: RunResult) -> dict[str, Any]:
    s = r.summary
    sw = s.get("switch") or {}
    return {
        "agent": name,
        "final_return": s.get("final_return"),
        "error_after_switch": sw.get("error_after_switch"),
        "recovery_time": sw.get("recovery_time"),
        "regret": sw.get("regret"),
        "mean_error": sw.get("mean_loss"),
        "steps_per_second": s.get("steps_per_second"),
        "run_dir": s.get("run_dir"),
    }


def _fmt(x: Any, spec: str = ".3f") -> str:
    return "–" if x is None else format(x, spec)


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the main job's agents."""
    lines = [
        "| agent | final return | error after switch | recovery (steps) | post-switch regret | mean error "
        "| env steps/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['agent']} | {_fmt(r['final_return'])} | {_fmt(r['error_after_switch'], '.4f')} | "
            f"{_fmt(r['recovery_time'], '.0f')} | {_fmt(r['regret'])} | {_fmt(r['mean_error'], '.4f')} | "
            f"{_fmt(r['steps_per_second'], '.0f')} |"
        )
    return "\n".join(lines) + "\n"


def run_main_job(
    log_folder: str = "logs",
    n_timesteps: int = MAIN_TIMESTEPS,
    seed: int = 0,
    algos: tuple[str, str] | None = None,
    eval_episodes: int = 5,
    switch_episodes: int = 10,
    verbose: bool = True,
    hyperparams: dict[str, dict[str, Any]] | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> int:
    """Train the memory agent and the baseline, write ``<log_folder>/main/<env>_<n>/``, print a summary.

    :param hyperparams: per-algorithm overrides (as ``--hyperparams``), e.g. for tests.
    :param env_kwargs: overrides of the env's keyword arguments (default ``dim=2``).
    :returns: the exit status (0, or 130 when interrupted: each run's checkpoint can be resumed).
    """
    memory, baseline = algos or (MEMORY_AGENT, BASELINE)
    say = print if verbose else (lambda *a, **k: None)
    say(
        f"memagent main job: {memory} (memory) vs {baseline} (memoryless) on {MAIN_ENV} "
        f"{MAIN_ENV_KWARGS}, {n_timesteps} steps each, seed {seed}"
    )
    results: dict[str, RunResult] = {}
    for algo in (memory, baseline):
        say(f"training {algo} ...", flush=True)
        cfg = TrainConfig(
            algo=algo,
            env=MAIN_ENV,
            n_timesteps=n_timesteps,
            seed=seed,
            env_kwargs={**MAIN_ENV_KWARGS, **(env_kwargs or {})},
            hyperparams=dict((hyperparams or {}).get(algo, {})),
            eval_freq=max(n_timesteps // 5, 1),
            eval_episodes=eval_episodes,
            switch_episodes=switch_episodes,
            log_folder=log_folder,
            progress_bar=verbose and sys.stdout.isatty(),
            verbose=0,
            command=f"python train.py  # main job: {algo}",
        )
        result = train(cfg)
        if result.interrupted:
            say(f"interrupted; resume with: python train.py --algo {algo} --resume {result.run_dir}")
            return 130
        results[algo] = result
        say(f"  done in {result.summary['wall_time_s']:.0f} s: {result.run_dir}")

    out = _summary_dir(log_folder)
    rows = [_row(a, r) for a, r in results.items()]
    table = summary_table(rows)
    figures = _figures(results, out)
    mem, base = rows[0], rows[1]
    lines = [table]
    if mem["error_after_switch"] is not None and base["error_after_switch"]:
        ratio = mem["error_after_switch"] / base["error_after_switch"]
        lines.append(
            f"Error in the first 10 steps after a task switch: {memory} {mem['error_after_switch']:.4f} vs "
            f"{baseline} {base['error_after_switch']:.4f} ({ratio:.2f}x the baseline's).\n"
        )
    if mem["mean_error"] is not None and base["mean_error"]:
        lines.append(
            f"Mean squared error over held-out episodes: {memory} {mem['mean_error']:.4f} vs "
            f"{baseline} {base['mean_error']:.4f}.\n"
        )
    ref = reference_errors(n_envs=16)
    if ref:
        lines.append(
            "Reference (scripted predictors that know the task functions): "
            + ", ".join(f"{k} {v:.4f}" for k, v in ref.items())
            + " mean squared error (blind: no task inference; memory: Bayes filter over tasks).\n"
        )
    lines.append("Run folders: " + ", ".join(str(r.run_dir) for r in results.values()) + "\n")
    lines.append("Figures: " + ", ".join(str(p) for p in figures) + "\n")
    text = "\n".join(lines)
    atomic_write_text(out / "summary.md", f"# memagent main job\n\n{text}")
    atomic_write_text(out / "summary.json", json.dumps(rows, indent=2))
    say("")
    say(text)
    say(f"Summary written to {out / 'summary.md'}")
    return 0


def reference_errors(n_envs: int = 16) -> dict[str, float]:
    """Mean squared error of the env package's scripted reference agents on the main task ({} if absent)."""
    try:
        from envs.reference import evaluate_agent
    except ImportError:
        return {}
    return {
        a: -evaluate_agent(a, MAIN_ENV, n_envs=n_envs, env_kwargs=dict(MAIN_ENV_KWARGS))
        for a in ("blind", "memory")
    }


def _summary_dir(log_folder: str) -> Path:
    return new_run_dir(log_folder, "main", MAIN_ENV)


def _figures(results: dict[str, RunResult], out: Path) -> list[Path]:
    from memagent import plots

    fig_dir = out / "figures"
    paths: list[Path] = []
    lc = {
        a: (np.asarray(r.summary["eval_timesteps"]), np.asarray(r.summary["eval_returns"])[None, :])
        for a, r in results.items()
        if r.summary.get("eval_timesteps")
    }
    if lc:
        paths.append(
            plots.plot_learning_curves(
                lc, fig_dir / "learning_curves.png", title=f"{MAIN_ENV}: evaluation return"
            )
        )
    sw = {}
    for a, r in results.items():
        f = Path(r.run_dir) / "switch_curves.npz"
        if f.is_file():
            d = np.load(f)
            sw[a] = (d["offsets"], d["curve"][None, :])
    if sw:
        paths.append(
            plots.plot_switch_aligned(
                sw,
                fig_dir / "switch_aligned.png",
                title="squared error around task switches",
                ylabel="squared error",
            )
        )
    paths += [p for r in results.values() if (p := Path(r.run_dir) / "figures" / "dnc_memory.png").is_file()]
    return paths

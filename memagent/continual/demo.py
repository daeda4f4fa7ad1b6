"""The tutorial's continual-learning demonstration, with its defects fixed.

Trains the DNC with prioritized replay on the tutorial's four tasks in order, reports the held-out
error on every task after each task (and, when each task arrives, the error before and after k SGD
adaptation steps on K support samples: MAML's inner loop), then trains the baselines in the same code
path (naive fine-tuning, uniform replay, the MLP, the task-id oracle) and writes two figures:

- ``continual_memory_performance.png``: the DNC memory bank heatmap and the performance across tasks;
- ``continual_matrix_baselines.png``: the accuracy (error) matrix heatmap and the baseline comparison.

Entry points: :func:`run_demo` (library; reports through ``report``) and :func:`main` (CLI, prints).
``python train.py continual`` calls them; ``add_arguments`` adds the CLI options to a parser.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from memagent.continual.figures import plot_accuracy_matrix_and_baselines, plot_memory_and_performance
from memagent.continual.learner import ContinualConfig, ContinualLearner, ContinualResult, tutorial_tasks
from memagent.continual.metrics import matrix_markdown
from memagent.memory import MemoryConfig

logger = logging.getLogger(__name__)

__all__ = ["BUDGETS", "DEFAULT_BASELINES", "DemoResult", "add_arguments", "main", "run_demo"]

#: Budget presets: overrides of :class:`ContinualConfig` (``"default"``: the tutorial's protocol).
BUDGETS: dict[str, dict] = {
    "tiny": dict(
        dim=8,
        hidden_size=16,
        n_train=10,
        epochs=2,
        n_eval_sequences=4,
        memory=MemoryConfig(memory_size=4, word_size=4, num_read_heads=1, temporal_links=False),
    ),
    "small": dict(epochs=5),
    "default": dict(),
}
#: Baselines trained after the main variant, as ``(model, replay)``.
DEFAULT_BASELINES: tuple[tuple[str, str], ...] = (
    ("dnc", "none"),
    ("dnc", "uniform"),
    ("mlp", "prioritized"),
    ("oracle", "prioritized"),
)


@dataclass
class DemoResult:
    """What :func:`run_demo` produced: the main run, the baselines (keyed ``"model/replay"``) and the
    figure files."""

    main: ContinualResult
    baselines: dict[str, ContinualResult]
    figures: list[Path]
    memory: np.ndarray
    seconds: float
    summary: str = ""
    extra: dict = field(default_factory=dict)


def _memory_after_stream(learner: ContinualLearner, task: int, steps: int = 40) -> np.ndarray:
    """The DNC memory ``(N, W)`` after reading ``steps`` held-out samples of ``task`` as one sequence."""
    x, y = learner.eval_data(task)
    d = learner.config.dim
    n = min(steps, x.shape[0] * x.shape[1])
    xs, ys = x.reshape(1, -1, d)[:, :n], y.reshape(1, -1, d)[:, :n]
    with torch.no_grad():
        _, state = learner.model(learner.model_inputs(xs, ys, torch.tensor([task])))
    return state.memory[0].detach().cpu().numpy()


def run_demo(
    budget: str = "default",
    seed: int = 0,
    out_dir: str | Path = "runs/continual",
    progress: bool = True,
    baselines: Sequence[tuple[str, str]] = DEFAULT_BASELINES,
    adapt_support: int = 5,
    adapt_steps: Sequence[int] = (1, 5),
    adapt_lr: float = 0.1,
    report: Callable[[str], None] | None = None,
    **overrides,
) -> DemoResult:
    """Run the demonstration and write its figures to ``out_dir``.

    :param budget: ``"tiny"`` (seconds, for tests), ``"small"`` (5 epochs) or ``"default"`` (the
        tutorial's protocol, 20 epochs; about a minute on 2 cores with the default baselines).
    :param seed: seeds everything (model, data streams, replay).
    :param out_dir: folder for the figures (created).
    :param progress: tqdm progress bars.
    :param baselines: ``(model, replay)`` pairs trained after the main DNC/prioritized run.
    :param adapt_support: K support samples for the adaptation report (0: off).
    :param adapt_steps: the k of the adaptation report. :param adapt_lr: its SGD step size.
    :param report: called with each line of the human-readable report (default: ``logging.info``;
        the CLI passes ``print``).
    :param overrides: further :class:`ContinualConfig` fields (e.g. ``epochs=5``).
    :return: a :class:`DemoResult`.
    """
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {list(BUDGETS)}, got {budget!r}")
    say = report if report is not None else logger.info
    start = time.perf_counter()
    out = Path(out_dir)
    fns, names = tutorial_tasks()
    settings = {**BUDGETS[budget], **overrides, "seed": seed}

    say(f"Neural memory agent, continual learning: {len(fns)} tasks {names}, budget {budget!r}, seed {seed}")

    def on_task(task: int, row: np.ndarray) -> None:
        say(
            f"after task {task + 1} ({names[task]}): held-out MSE "
            + ", ".join(f"{v:.4f}" for v in row[: task + 1])
        )

    learner = ContinualLearner(fns, ContinualConfig(model="dnc", replay="prioritized", **settings), names)
    main_result = learner.run(
        progress=progress,
        callback=on_task,
        adapt_support=adapt_support,
        adapt_steps=adapt_steps,
        adapt_lr=adapt_lr,
    )
    for task, rep in main_result.adaptation.items():
        say(
            f"on arrival of task {task + 1} (before training on it): held-out MSE {rep[0]:.4f}, "
            + ", ".join(f"after {k} step(s) on {adapt_support} samples {v:.4f}" for k, v in rep.items() if k)
        )
    say("R[i, j] (held-out MSE on task j after task i), DNC + prioritized replay:")
    say(matrix_markdown(main_result.errors, names))
    memory = _memory_after_stream(learner, len(fns) - 1)

    results = {"dnc/prioritized": main_result}
    for model, replay in baselines:
        key = f"{model}/{replay}"
        if key in results:
            continue
        cfg = ContinualConfig(model=model, replay=replay, **settings)
        results[key] = ContinualLearner(fns, cfg, names).run(progress=progress)
    lines = ["| variant | ACC | BWT | forgetting | samples/s |", "|---|---|---|---|---|"]
    comparison = {}
    for key, res in results.items():
        m = res.metrics
        comparison[key] = {"ACC": m.acc, "BWT": m.bwt, "forgetting": m.forgetting}
        lines.append(
            f"| {key} | {m.acc:.4f} | {m.bwt:.4f} | {m.forgetting:.4f} | {res.samples_per_second:.0f} |"
        )
    summary = "\n".join(lines)
    say(summary)
    figures = [
        plot_memory_and_performance(
            memory,
            main_result.errors,
            names,
            out / "continual_memory_performance.png",
            title="DNC + prioritized replay",
        ),
        plot_accuracy_matrix_and_baselines(
            main_result.errors,
            names,
            comparison,
            out / "continual_matrix_baselines.png",
            title="DNC + prioritized replay",
        ),
    ]
    seconds = time.perf_counter() - start
    say(f"figures: {', '.join(str(f) for f in figures)} ({seconds:.0f} s)")
    return DemoResult(
        main=main_result,
        baselines={k: v for k, v in results.items() if k != "dnc/prioritized"},
        figures=figures,
        memory=memory,
        seconds=seconds,
        summary=summary,
    )


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the demo's options to ``parser`` (for ``train.py continual``)."""
    parser.add_argument("--budget", choices=list(BUDGETS), default="default", help="training budget preset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default="runs/continual", help="folder for the figures")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--epochs", type=int, default=None, help="override the epochs per task")
    parser.add_argument("--persist-memory", action="store_true", help="keep DNC memory across sequences")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: unchanged)")
    return parser


def main(argv: list[str] | None = None) -> DemoResult:
    """CLI: parse ``argv``, run :func:`run_demo`, print the report."""
    parser = add_arguments(argparse.ArgumentParser(description="The tutorial's continual-learning demo."))
    args = parser.parse_args(argv)
    return run_from_args(args)


def run_from_args(args: argparse.Namespace) -> DemoResult:
    """Run the demo from parsed :func:`add_arguments` options, printing the report."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    overrides = {}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.persist_memory:
        overrides["persist_memory"] = True
    return run_demo(
        budget=args.budget,
        seed=args.seed,
        out_dir=args.out_dir,
        progress=not args.no_progress,
        report=print,
        baselines=DEFAULT_BASELINES if not args.persist_memory else (),
        **overrides,
    )


if __name__ == "__main__":
    main()

"""MAML on the sinusoid regression benchmark of Finn et al. (ICML 2017), section 5.1.

Protocol (the paper's): tasks y = A sin(x − φ) with amplitude A ~ U[0.1, 5], phase φ ~ U[0, π],
inputs x ~ U[−5, 5]; a 40-40 ReLU MLP; K = 5 support points (and K = 5 query points per task during
meta-training); one inner SGD step with α = 0.01 during meta-training; meta-batch 25 tasks; Adam with
β = 1e-3. Evaluation: on held-out tasks (a separate random stream), adapt with K = 5 points and SGD
α = 0.01 for 1 / 5 / 10 steps, then measure the MSE on 100 fresh points of the same task. The paper
reports 0.67 / 0.38 / 0.35 (K = 5) after 70,000 meta-iterations.

    .venv/bin/python benchmarks/maml_sinusoid.py            # full budget (see --iterations)
    .venv/bin/python benchmarks/maml_sinusoid.py --quick    # a smoke run

Prints a Markdown table and writes it to benchmarks/results/maml_sinusoid.md.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from torch import nn

from memagent.meta import MAML, inner_adapt

RESULTS = Path(__file__).resolve().parent / "results" / "maml_sinusoid.md"
PAPER = {1: 0.67, 5: 0.38, 10: 0.35}


def sample_tasks(m: int, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``m`` sinusoid tasks with ``n`` points each: ``x, y`` of shape ``(m, n, 1)``."""
    amp = torch.rand(m, 1, 1, generator=gen) * 4.9 + 0.1
    phase = torch.rand(m, 1, 1, generator=gen) * math.pi
    x = torch.rand(m, n, 1, generator=gen) * 10.0 - 5.0
    return x, amp * torch.sin(x - phase)


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 1))


def evaluate(
    learner: MAML, tasks: int, k: int, steps: tuple[int, ...], seed: int
) -> dict[int, tuple[float, float, int]]:
    """Per number of adaptation steps: (mean, median, diverged) query MSE over ``tasks`` held-out tasks;
    ``diverged`` counts tasks whose adapted MSE is non-finite or above 1e3 (SGD blew up), which the mean
    alone would hide behind a NaN or one huge value."""
    gen = torch.Generator().manual_seed(seed)
    x, y = sample_tasks(tasks, k + 100, gen)
    xs, ys, xq, yq = x[:, :k], y[:, :k], x[:, k:], y[:, k:]
    params = {n: p.detach() for n, p in learner.params.items()}
    out = {}
    for s in (0, *steps):

        def task_mse(a, b, c, d, s=s):
            adapted = inner_adapt(learner.forward, params, a, b, steps=s, inner_lr=0.01, first_order=True)
            return torch.mean((learner.forward(adapted, c) - d) ** 2)

        mse = torch.func.vmap(task_mse)(xs, ys, xq, yq)
        diverged = int((~torch.isfinite(mse) | (mse > 1e3)).sum())
        out[s] = (float(mse.mean()), float(mse.nanmedian()), diverged)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=70000, help="meta-iterations (the paper: 70000)")
    parser.add_argument("--method", choices=MAML.METHODS, default="maml")
    parser.add_argument("--eval-tasks", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="500 iterations, 200 evaluation tasks")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results")
    args = parser.parse_args(argv)
    if args.quick:
        args.iterations, args.eval_tasks = 500, 200
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)  # training tasks; evaluation uses seed + 10_000
    model = make_model()
    learner = MAML(
        model, torch.optim.Adam(model.parameters(), lr=1e-3), inner_lr=0.01, inner_steps=1, method=args.method
    )
    k, meta_batch = 5, 25
    start = time.perf_counter()
    for it in range(args.iterations):
        x, y = sample_tasks(meta_batch, 2 * k, gen)
        loss = learner.meta_step(x[:, :k], y[:, :k], x[:, k:], y[:, k:])
        if (it + 1) % max(1, args.iterations // 10) == 0:
            print(
                f"iteration {it + 1:6d}  meta-loss {loss:.3f}  ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    train_s = time.perf_counter() - start
    res = evaluate(learner, args.eval_tasks, k, (1, 5, 10), seed=args.seed + 10_000)

    def cells(field: int, fmt: str) -> str:
        return " | ".join(format(res[s][field], fmt) for s in (0, 1, 5, 10))

    lines = [
        f"MAML sinusoid (Finn et al. 2017, K = {k}): method `{args.method}`, "
        f"{args.iterations} meta-iterations x {meta_batch} tasks, {train_s:.0f} s on "
        f"{args.threads} CPU thread(s); MSE on "
        f"{args.eval_tasks} held-out tasks (100 query points each).",
        "",
        "| adaptation steps | 0 | 1 | 5 | 10 |",
        "|---|---|---|---|---|",
        f"| memagent `{args.method}`, mean | {cells(0, '.3f')} |",
        f"| memagent `{args.method}`, median | {cells(1, '.3f')} |",
        f"| tasks diverged (MSE > 1e3 or NaN) | {cells(2, 'd')} |",
        f"| paper (70,000 iterations) | — | {PAPER[1]:.2f} | {PAPER[5]:.2f} | {PAPER[10]:.2f} |",
        "",
        f"Command: `.venv/bin/python benchmarks/maml_sinusoid.py --iterations {args.iterations} "
        f"--method {args.method} --seed {args.seed}`",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write and not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text + "\n")


if __name__ == "__main__":
    main()

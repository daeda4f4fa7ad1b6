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
ALPHA = 0.01  # the paper's inner step size, in training and evaluation
K, META_BATCH = 5, 25  # support (and query) points per task, tasks per meta-batch
EVAL_SEED = 10_002  # held-out tasks: one stream for every training seed (the earlier runs used seed + 10_000)


def sample_tasks(m: int, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``m`` sinusoid tasks with ``n`` points each: ``x, y`` of shape ``(m, n, 1)``."""
    amp = torch.rand(m, 1, 1, generator=gen) * 4.9 + 0.1
    phase = torch.rand(m, 1, 1, generator=gen) * math.pi
    x = torch.rand(m, n, 1, generator=gen) * 10.0 - 5.0
    return x, amp * torch.sin(x - phase)


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 1))


def held_out_tasks(tasks: int, k: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Support ``(tasks, k, 1)`` and query ``(tasks, 100, 1)`` sets of held-out tasks: xs, ys, xq, yq."""
    x, y = sample_tasks(tasks, k + 100, torch.Generator().manual_seed(seed))
    return x[:, :k], y[:, :k], x[:, k:], y[:, k:]


def evaluate(
    learner: MAML, data: tuple[torch.Tensor, ...], steps: tuple[int, ...], backtracking: int = 0
) -> dict[int, tuple[float, float, int, float]]:
    """Per number of adaptation steps: (mean, median, diverged, worst) query MSE over the held-out tasks;
    ``diverged`` counts tasks whose adapted MSE is non-finite or above 1e3 (SGD blew up), which the mean
    alone would hide behind a NaN or one huge value. ``backtracking``: see
    :func:`memagent.meta.inner_adapt`."""
    xs, ys, xq, yq = data
    params = {n: p.detach() for n, p in learner.params.items()}
    out = {}
    for s in (0, *steps):

        def task_mse(a, b, c, d, s=s):
            adapted = inner_adapt(
                learner.forward,
                params,
                a,
                b,
                steps=s,
                inner_lr=ALPHA,
                first_order=True,
                backtracking=backtracking,
            )
            return torch.mean((learner.forward(adapted, c) - d) ** 2)

        mse = torch.func.vmap(task_mse)(xs, ys, xq, yq)
        diverged = int((~torch.isfinite(mse) | (mse > 1e3)).sum())
        worst = float(torch.nan_to_num(mse, nan=float("inf")).max())
        out[s] = (float(mse.mean()), float(mse.nanmedian()), diverged, worst)
    return out


def support_curvature(
    learner: MAML, xs: torch.Tensor, ys: torch.Tensor, iterations: int = 100
) -> torch.Tensor:
    """Largest-magnitude eigenvalue λ of each task's support-loss Hessian ∇²L(θ) at the meta-learned θ,
    by power iteration on Hessian-vector products (reverse over reverse), batched over tasks.

    Gradient descent with step α is stable on a quadratic only while α·λ_max < 2; a task with
    α·λ > 2 has a direction along which every SGD step multiplies the error by |1 − αλ| > 1.

    :return: shape ``(tasks,)``, the Rayleigh quotient of the converged vector (signed).
    """
    params = {n: p.detach() for n, p in learner.params.items()}

    def one_task(x: torch.Tensor, y: torch.Tensor, v0: dict[str, torch.Tensor]) -> torch.Tensor:
        def loss(p):
            return torch.nn.functional.mse_loss(learner.forward(p, x), y)

        def hvp(v):
            def directional(p):
                g = torch.func.grad(loss)(p)
                return sum((g[n] * v[n]).sum() for n in g)

            return torch.func.grad(directional)(params)

        v = v0
        for _ in range(iterations):
            hv = hvp(v)
            norm = torch.sqrt(sum((t**2).sum() for t in hv.values()))
            v = {n: t / norm for n, t in hv.items()}
        hv = hvp(v)
        return sum((hv[n] * v[n]).sum() for n in v)

    gen = torch.Generator().manual_seed(0)
    v0 = {n: torch.randn((xs.shape[0], *p.shape), generator=gen) for n, p in params.items()}
    return torch.func.vmap(one_task)(xs, ys, v0)


def _cell(value: float, fmt: str) -> str:
    """``value`` in ``fmt``, or in 3 significant digits when a fixed-point number would be huge."""
    return format(value, ".3g" if fmt.endswith("f") and abs(value) >= 1e6 else fmt)


def train(args: argparse.Namespace, seed: int) -> tuple[MAML, float]:
    """Meta-train one model with the paper's settings (or load it); returns it and the training seconds."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)  # training tasks; evaluation uses its own stream
    model = make_model()
    learner = MAML(
        model,
        torch.optim.Adam(model.parameters(), lr=1e-3),
        inner_lr=ALPHA,
        inner_steps=1,
        method=args.method,
    )
    path = (
        None if args.models is None else args.models / f"maml_{args.method}_seed{seed}_{args.iterations}.pt"
    )
    if path is not None and path.exists():
        model.load_state_dict(torch.load(path))
        print(f"seed {seed}: loaded {path}", flush=True)
        return learner, float("nan")
    start = time.perf_counter()
    for it in range(args.iterations):
        x, y = sample_tasks(META_BATCH, 2 * K, gen)
        loss = learner.meta_step(x[:, :K], y[:, :K], x[:, K:], y[:, K:])
        if (it + 1) % max(1, args.iterations // 10) == 0:
            print(
                f"seed {seed}  iteration {it + 1:6d}  meta-loss {loss:.3f}  "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        tmp.replace(path)  # atomic: an interrupted run never leaves a truncated model
    return learner, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=70000, help="meta-iterations (the paper: 70000)")
    parser.add_argument("--method", choices=MAML.METHODS, default="maml")
    parser.add_argument("--eval-tasks", type=int, default=2000)
    parser.add_argument("--seeds", type=str, default="0", help="comma-separated training seeds, e.g. 0,1,2")
    parser.add_argument(
        "--backtracking",
        type=int,
        default=4,
        help="halvings for the safeguarded-SGD rows (0: leave them out)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--float64", action="store_true", help="evaluate in float64 (training stays float32, as saved)"
    )
    parser.add_argument("--quick", action="store_true", help="500 iterations, 200 evaluation tasks")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results")
    parser.add_argument(
        "--models",
        type=Path,
        help="folder for the meta-trained models: saved after training, loaded if there",
    )
    args = parser.parse_args(argv)
    try:
        seeds = [int(v) for v in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if args.backtracking < 0:
        parser.error(f"--backtracking must be >= 0, got {args.backtracking}")
    if args.quick:
        args.iterations, args.eval_tasks = 500, 200
    torch.set_num_threads(args.threads)
    data = held_out_tasks(args.eval_tasks, K, seed=EVAL_SEED)
    dtype = torch.float64 if args.float64 else torch.float32
    data = tuple(t.to(dtype) for t in data)
    steps = (1, 5, 10)
    variants = [("SGD (the paper's)", 0)] + (
        [(f"SGD + backtracking ({args.backtracking})", args.backtracking)] if args.backtracking else []
    )
    rows: list[tuple[int, str, dict[int, tuple[float, float, int, float]]]] = []
    notes = []
    for seed in seeds:
        learner, train_s = train(args, seed)
        learner.model.to(dtype)  # in place: learner.params are the same Parameter objects
        for name, halvings in variants:
            rows.append((seed, name, evaluate(learner, data, steps, backtracking=halvings)))
            print(f"seed {seed}, {name}: {rows[-1][2]}", flush=True)
        lam = support_curvature(learner, data[0], data[1])
        unstable = ALPHA * lam > 2
        plain = rows[-len(variants)][2]
        notes.append(
            f"seed {seed}: {'loaded' if math.isnan(train_s) else f'{train_s:.0f} s of training'}; "
            f"{int(unstable.sum())} of {len(lam)} tasks have "
            f"α·λ_max(∇²L_support(θ)) > 2 (max {float(ALPHA * lam.max()):.2f}, median "
            f"{float(ALPHA * lam.median()):.2f}); diverged with plain SGD by step 10: {plain[10][2]}"
        )
        print(notes[-1], flush=True)

    def table(field: int, fmt: str) -> list[str]:
        out = ["| seed | inner loop | 0 | 1 | 5 | 10 |", "|---|---|---|---|---|---|"]
        for seed, name, res in rows:
            out.append(
                f"| {seed} | {name} | " + " | ".join(_cell(res[s][field], fmt) for s in (0, *steps)) + " |"
            )
        if field == 0 and len(seeds) > 1:  # the mean over seeds of each variant (NaN if a seed diverged)
            for name, _ in variants:
                means = [
                    _cell(sum(r[s][0] for _, n, r in rows if n == name) / len(seeds), fmt)
                    for s in (0, *steps)
                ]
                out.append(f"| all {len(seeds)} | {name} | " + " | ".join(means) + " |")
        return out

    seeds_arg = ",".join(map(str, seeds))
    lines = [
        f"MAML sinusoid (Finn et al. 2017, K = {K}): method `{args.method}`, {args.iterations} "
        f"meta-iterations x {META_BATCH} tasks (1 inner SGD step, α = {ALPHA}, Adam 1e-3), "
        f"{args.threads} CPU thread(s), evaluated in {'float64' if args.float64 else 'float32'}; query "
        f"MSE on {args.eval_tasks} held-out tasks (100 points each) after 0 / 1 / 5 / 10 adaptation steps.",
        "",
        "Mean query MSE:",
        "",
        *table(0, ".3f"),
        f"| — | paper (70,000 iterations) | — | {PAPER[1]:.2f} | {PAPER[5]:.2f} | {PAPER[10]:.2f} |",
        "",
        "Median query MSE:",
        "",
        *table(1, ".3f"),
        "",
        "Tasks diverged (query MSE > 1e3 or NaN):",
        "",
        *table(2, "d"),
        "",
        "Worst task's query MSE (inf: overflowed):",
        "",
        *table(3, ".3g"),
        "",
        "Curvature of the support loss at the meta-learned θ (power iteration on Hessian-vector products):",
        "",
        *[f"- {n}" for n in notes],
        "",
        f"Command: `.venv/bin/python benchmarks/maml_sinusoid.py --iterations {args.iterations} "
        f"--method {args.method} --seeds {seeds_arg} --backtracking {args.backtracking}"
        f"{' --float64' if args.float64 else ''}`",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write and not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        tmp = RESULTS.with_suffix(".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(RESULTS)


if __name__ == "__main__":
    main()

"""Continual learning on the tutorial's protocol: speed and held-out error, side by side.

Protocol (the tutorial's): 4 tasks in order (``sin_mean``, ``half_cos_mean``, ``tanh_shift_2``,
``tanh_shift_3`` of :mod:`envs.tasks`), x ~ N(0, I_64), 50 training samples per task, 20 epochs.

- **Reference**: the tutorial's agent re-implemented here (and only here) as it runs: an LSTM
  controller (64 -> 128) with a 128 x 64 content-addressed memory bank and 4 read heads, trained one
  sample at a time (batch size 1), each step followed by one forward per replayed sample (8 drawn with
  ``np.random.choice(p=...)``, weight 0.3, replay from the second task on), memory writes detached,
  priorities never updated, Adam 1e-3, gradient clipping 1.0. It sees x only (no task signal).
- **memagent**: :class:`memagent.continual.ContinualLearner` with every model (DNC, MLP, task-id
  oracle) and every replay mode (none, uniform, prioritized), same training samples.

Both are evaluated on the same **held-out** data (separate random streams). Throughput is training
samples of the protocol (4 x 20 x 50 = 4000) per second of training time, measured in this process.
Errors are MSE; memagent's skips the first step of each held-out sequence (it has no feedback yet).

    .venv/bin/python benchmarks/continual.py            # full: reference + 9 variants x --seeds
    .venv/bin/python benchmarks/continual.py --quick    # a smoke run (2 epochs, 1 seed)

Prints Markdown and writes it to benchmarks/results/continual.md (not in --quick mode).
"""

from __future__ import annotations

import argparse
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from memagent.continual import (
    ContinualConfig,
    ContinualLearner,
    compute_metrics,
    matrix_markdown,
    tutorial_tasks,
)
from memagent.memory import MemoryConfig

RESULTS = Path(__file__).resolve().parent / "results" / "continual.md"
#: Benchmark variants beyond the learner's models: name -> ContinualConfig overrides.
VARIANTS = {
    "dnc": dict(model="dnc"),
    "dnc-content": dict(  # content-addressed memory only (the tutorial's kind of bank), 8 x 8
        model="dnc",
        memory=MemoryConfig(
            memory_size=8, word_size=8, num_read_heads=1, allocation=False, temporal_links=False
        ),
    ),
    "mlp": dict(model="mlp"),
    "oracle": dict(model="oracle"),
}


# ---------------------------------------------------------------------------------------------------
# The tutorial's agent (reference). Written for this benchmark from the tutorial's description.
# ---------------------------------------------------------------------------------------------------
class _RefMemory(nn.Module):
    def __init__(self, slots: int = 128, width: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.register_buffer("memory", torch.zeros(slots, width))
        self.register_buffer("usage", torch.zeros(slots))

    def address(self, key: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        sim = F.normalize(key, dim=-1) @ F.normalize(self.memory, dim=-1).t()
        return torch.softmax(beta * sim, dim=-1)

    def read(self, keys: torch.Tensor, strengths: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.address(keys[i], strengths[i]) @ self.memory for i in range(self.heads)], dim=-1
        )

    def write(self, key, vec, erase, strength) -> None:
        w = self.address(key, strength).squeeze()
        # the tutorial detaches the memory after every write
        self.memory = (self.memory * (1 - torch.outer(w, erase.squeeze()))).detach()
        self.memory = (self.memory + torch.outer(w, vec.squeeze())).detach()
        self.usage = (0.99 * self.usage + w).detach()


class _RefController(nn.Module):
    def __init__(self, dim: int = 64, hidden: int = 128, slots: int = 128, width: int = 64, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.lstm = nn.LSTM(dim, hidden, batch_first=True)
        self.read_keys = nn.Linear(hidden, heads * width)
        self.read_strengths = nn.Linear(hidden, heads)
        self.write_key = nn.Linear(hidden, width)
        self.write_vec = nn.Linear(hidden, width)
        self.erase_vec = nn.Linear(hidden, width)
        self.write_strength = nn.Linear(hidden, 1)
        self.out = nn.Linear(hidden + heads * width, dim)

    def forward(self, x: torch.Tensor, mem: _RefMemory) -> torch.Tensor:
        h, _ = self.lstm(x.unsqueeze(0))
        h = h.squeeze(0)
        reads = mem.read(self.read_keys(h).view(self.heads, -1), F.softplus(self.read_strengths(h)))
        mem.write(
            self.write_key(h),
            torch.tanh(self.write_vec(h)),
            torch.sigmoid(self.erase_vec(h)),
            F.softplus(self.write_strength(h)),
        )
        return self.out(torch.cat([h, reads], dim=-1))


class TutorialAgent:
    """The tutorial's continual-learning agent (per-sample training with per-sample replay)."""

    def __init__(self, dim: int = 64, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.np_rng = np.random.default_rng(seed)
        self.mem = _RefMemory()
        self.net = _RefController(dim)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        self.buffer: deque = deque(maxlen=5000)
        self.priorities: deque = deque(maxlen=5000)
        self.alpha, self.beta = 0.6, 0.4

    def train_step(self, x: torch.Tensor, y: torch.Tensor, use_replay: bool) -> float:
        self.opt.zero_grad()
        loss = F.mse_loss(self.net(x, self.mem), y)
        self.buffer.append((x.clone(), y.clone()))
        self.priorities.append((loss.item() + 1e-6) ** self.alpha)
        total = loss
        if use_replay and len(self.buffer) > 16:
            p = np.array(self.priorities)
            p = p / p.sum()
            idx = self.np_rng.choice(len(self.buffer), 8, p=p, replace=False)
            w = (len(self.buffer) * p[idx]) ** (-self.beta)
            w = w / w.max()
            for i, wi in zip(idx, w):
                rx, ry = self.buffer[i]
                total = total + 0.3 * float(wi) * F.mse_loss(self.net(rx, self.mem), ry)
        total.backward()
        nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
        self.opt.step()
        return total.item()

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> float:
        return float(np.mean([F.mse_loss(self.net(xi, self.mem), yi).item() for xi, yi in zip(x, y)]))


def run_reference(learner: ContinualLearner, epochs: int, replay: bool = True) -> dict:
    """Train the tutorial's agent on the learner's training samples; evaluate on its held-out data."""
    n = len(learner.tasks)
    agent = TutorialAgent(learner.config.dim, seed=learner.config.seed)
    evals = [tuple(t.reshape(-1, learner.config.dim) for t in learner.eval_data(j)) for j in range(n)]
    baseline = np.array([agent.evaluate(*evals[j]) for j in range(n)])
    errors = np.zeros((n, n))
    seconds = 0.0
    for task in range(n):
        x, y = learner.training_data(task)
        start = time.perf_counter()
        for _ in range(epochs):
            for i in range(x.shape[0]):
                agent.train_step(x[i], y[i], use_replay=replay and task > 0)
        seconds += time.perf_counter() - start
        errors[task] = [agent.evaluate(*evals[j]) for j in range(n)]
    samples = n * epochs * x.shape[0]
    return {
        "errors": errors,
        "baseline": baseline,
        "seconds": seconds,
        "samples_per_second": samples / seconds,
    }


# ---------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--reference-epochs", type=int, default=None, help="default: --epochs")
    parser.add_argument(
        "--reference-check-epochs",
        type=int,
        default=None,
        help="epochs of a second reference run after the variants (throughput only; default: --epochs, the "
        "same protocol, since the reference slows down as its replay buffer grows): the ratio uses the "
        "faster of the two reference measurements, so a change of machine load cannot inflate it",
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--models", default="dnc,dnc-content,mlp,oracle", help=f"any of {list(VARIANTS)}")
    parser.add_argument("--replays", default="none,uniform,prioritized")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--quick", action="store_true", help="2 epochs, 1 seed, not written to results/")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.seeds = 2, 1
    ref_epochs = args.reference_epochs if args.reference_epochs is not None else args.epochs
    if args.reference_check_epochs is None:
        args.reference_check_epochs = ref_epochs
    torch.set_num_threads(args.threads)
    fns, names = tutorial_tasks()
    out: list[str] = [
        f"Continual learning, the tutorial's protocol (4 tasks, 50 training samples each, "
        f"{args.epochs} epochs, d = 64), held-out MSE; {args.threads} CPU thread(s), {args.seeds} seed(s).",
        "",
    ]
    ref = None
    if not args.no_reference:
        learner0 = ContinualLearner(fns, ContinualConfig(epochs=args.epochs, seed=0), names)
        ref = run_reference(learner0, ref_epochs)
        m = compute_metrics(ref["errors"], ref["baseline"])
        print(
            f"reference: {ref['samples_per_second']:.1f} samples/s, ACC {m.acc:.4f}, BWT {m.bwt:.4f}",
            flush=True,
        )
    rows, matrices, speeds_by_variant = [], [], []
    for model in args.models.split(","):
        for replay in args.replays.split(","):
            accs, bwts, fgts, fwts, speeds = [], [], [], [], []
            for seed in range(args.seeds):
                cfg = ContinualConfig(**VARIANTS[model], replay=replay, epochs=args.epochs, seed=seed)
                res = ContinualLearner(fns, cfg, names).run()
                accs.append(res.metrics.acc)
                bwts.append(res.metrics.bwt)
                fgts.append(res.metrics.forgetting)
                fwts.append(res.metrics.fwt)
                speeds.append(res.samples_per_second)
                if seed == 0:
                    matrices.append((model, replay, res.errors))
            speed = float(np.median(speeds))
            speeds_by_variant.append(speed)
            rows.append(
                f"| {model} | {replay} | {np.mean(accs):.4f} ± {np.std(accs):.4f} | {np.mean(bwts):.4f} | "
                f"{np.mean(fgts):.4f} | {np.mean(fwts):.3f} | {speed:.0f} | {{ratio}} |"
            )
            print(rows[-1].replace("{ratio}", "?"), flush=True)
    ref_speed = None
    if ref is not None:
        check = (
            run_reference(learner0, args.reference_check_epochs) if args.reference_check_epochs > 0 else None
        )
        ref_speed = max(ref["samples_per_second"], check["samples_per_second"] if check else 0.0)
        out.append(
            f"Reference throughput: {ref['samples_per_second']:.1f} samples/s (its full run, before the "
            "variants)"
            + (
                f", {check['samples_per_second']:.1f} samples/s (a {args.reference_check_epochs}-epoch run "
                "after)"
                if check
                else ""
            )
            + f"; ratios use {ref_speed:.1f}."
        )
        out.append("")
    rows = [
        r.replace("{ratio}", f"{s / ref_speed:.0f}x" if ref_speed else "—")
        for r, s in zip(rows, speeds_by_variant)
    ]
    out += [
        "| model | replay | ACC (final mean MSE) | BWT | forgetting | FWT | samples/s | vs reference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if ref is not None:
        m = compute_metrics(ref["errors"], ref["baseline"])
        out.append(
            f"| tutorial (reference, {ref_epochs} epochs) | prioritized, per sample | {m.acc:.4f} | "
            f"{m.bwt:.4f} | {m.forgetting:.4f} | {m.fwt:.3f} | {ref_speed:.1f} | 1x |"
        )
    out += rows
    out += [
        "",
        "ACC: mean held-out MSE over the 4 tasks after the last one (mean ± std over seeds). BWT: mean of "
        "final minus just-learned MSE on the first 3 tasks (> 0 is forgetting; the issue's 'forgetting'). "
        "forgetting: Chaudhry et al.'s average forgetting. FWT: GEM's forward transfer vs the untrained "
        "model (< 0 is positive transfer). All divide by T - 1 = 3 except ACC (T = 4). samples/s: median "
        "over seeds.",
        "",
    ]
    if ref is not None:
        out += ["Accuracy (error) matrix R[i, j] of the reference (held-out MSE on task j after task i):", ""]
        out += [matrix_markdown(ref["errors"], names), ""]
    for model, replay, errors in matrices:
        out += [f"R[i, j] of `{model}` / `{replay}` (seed 0):", "", matrix_markdown(errors, names), ""]
    out.append(
        f"Command: `.venv/bin/python benchmarks/continual.py --epochs {args.epochs} --seeds {args.seeds} "
        f"--reference-epochs {ref_epochs} --reference-check-epochs {args.reference_check_epochs} "
        f"--threads {args.threads}`"
    )
    text = "\n".join(out)
    print(text)
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text + "\n")


if __name__ == "__main__":
    main()

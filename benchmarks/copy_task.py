"""Copy task (Graves et al. 2014/2016): DNC vs LSTM, bits error per sequence.

A sequence of L random 8-bit vectors (L uniform in 1..10) is shown, then a delimiter, then the model
must output the L vectors in order while its input is blank. Input width 9 (8 bits + delimiter),
output 8 logits; the loss (binary cross-entropy) and the error count only the recall steps.
"Bits error per sequence" is the number of wrongly recalled bits (threshold 0.5), averaged over a
fixed test set of 1000 sequences drawn from its own seed.

Both models train with Adam at the same batch size. Reported: test error after the same number of
updates, and after the same seconds of CPU time (the LSTM, faster per update, keeps training until it
has used as many seconds as the DNC did).

    .venv/bin/python benchmarks/copy_task.py [--quick] [--updates 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from memagent.memory import DNC, MemoryConfig  # noqa: E402

BITS = 8
MAX_LEN = 10


def copy_batch(batch_size: int, generator: torch.Generator, max_len: int = MAX_LEN):
    """Inputs (B, T, BITS+1), targets (B, T, BITS) and a recall mask (B, T) with T = 2 max_len + 1.

    Sample b shows its L_b vectors at steps 0..L_b-1, the delimiter at step L_b, and must recall
    them at steps L_b+1 .. 2 L_b.
    """
    steps = 2 * max_len + 1
    lengths = torch.randint(1, max_len + 1, (batch_size,), generator=generator)
    bits = torch.randint(0, 2, (batch_size, max_len, BITS), generator=generator).float()
    x = torch.zeros(batch_size, steps, BITS + 1)
    y = torch.zeros(batch_size, steps, BITS)
    mask = torch.zeros(batch_size, steps, dtype=torch.bool)
    for b, length in enumerate(lengths.tolist()):
        x[b, :length, :BITS] = bits[b, :length]
        x[b, length, BITS] = 1.0
        y[b, length + 1 : 2 * length + 1] = bits[b, :length]
        mask[b, length + 1 : 2 * length + 1] = True
    return x, y, mask


class LSTMModel(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(BITS + 1, hidden, batch_first=True)
        self.head = nn.Linear(hidden, BITS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(x)[0])


class DNCModel(nn.Module):
    def __init__(self, hidden: int, config: MemoryConfig) -> None:
        super().__init__()
        self.dnc = DNC(BITS + 1, hidden, BITS, config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dnc(x)[0]


def loss_fn(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    per_bit = nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none").sum(-1)
    return (per_bit * mask).sum() / mask.shape[0]


@torch.no_grad()
def bits_error(model: nn.Module, test) -> float:
    x, y, mask = test
    wrong = ((model(x) > 0).float() != y).float().sum(-1) * mask
    return float(wrong.sum() / x.shape[0])


class Trainer:
    """Adam on fresh random batches; keeps count of updates and CPU seconds spent training."""

    def __init__(self, model: nn.Module, lr: float, batch_size: int, seed: int) -> None:
        self.model = model
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)
        self.gen = torch.Generator().manual_seed(seed)
        self.batch_size = batch_size
        self.updates = 0
        self.seconds = 0.0

    def train(self, updates: int | None = None, until_seconds: float | None = None) -> None:
        while True:
            if updates is not None and self.updates >= updates:
                return
            if until_seconds is not None and self.seconds >= until_seconds:
                return
            t0 = time.thread_time()
            x, y, mask = copy_batch(self.batch_size, self.gen)
            loss = loss_fn(self.model(x), y, mask)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), 10.0)
            self.opt.step()
            self.seconds += time.thread_time() - t0
            self.updates += 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run (not written to results)")
    parser.add_argument("--updates", type=int, default=None, help="updates for both models (default 2000)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "copy_task.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    updates = args.updates or (200 if args.quick else 2000)
    checkpoints = sorted({updates // 4, updates // 2, updates})

    torch.manual_seed(args.seed)
    config = MemoryConfig(memory_size=16, word_size=16, num_read_heads=1, num_write_heads=1)
    dnc = Trainer(DNCModel(64, config), lr=1e-3, batch_size=args.batch_size, seed=args.seed + 1)
    torch.manual_seed(args.seed)
    lstm = Trainer(LSTMModel(128), lr=1e-3, batch_size=args.batch_size, seed=args.seed + 1)
    test = copy_batch(1000, torch.Generator().manual_seed(10_000 + args.seed))

    rows = []
    for k in checkpoints:
        dnc.train(updates=k)
        lstm.train(updates=k)
        rows.append((k, bits_error(dnc.model, test), bits_error(lstm.model, test), dnc.seconds, lstm.seconds))
        print(
            f"updates {k}: DNC {rows[-1][1]:.2f} bits ({dnc.seconds:.0f} s), LSTM {rows[-1][2]:.2f} bits",
            flush=True,
        )
    lstm_same_updates = rows[-1][2]
    lstm.train(until_seconds=dnc.seconds)
    lstm_same_seconds = bits_error(lstm.model, test)

    n_dnc = sum(p.numel() for p in dnc.model.parameters())
    n_lstm = sum(p.numel() for p in lstm.model.parameters())
    lines = [
        f"Copy task, lengths 1-{MAX_LEN}, {BITS} bits, batch {args.batch_size}, Adam 1e-3, seed {args.seed}, "
        f"1 CPU thread, torch {torch.__version__}. Test: 1000 sequences (mean length 5.5, so 44 bits to "
        "recall on average); chance is half of them wrong.",
        f"DNC: LSTM controller 64, memory 16 x 16, 1 read head ({n_dnc} parameters). "
        f"LSTM: hidden 128 ({n_lstm} parameters).",
        "",
        "| updates | DNC bits error / seq | LSTM bits error / seq | DNC CPU s | LSTM CPU s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for k, e_dnc, e_lstm, s_dnc, s_lstm in rows:
        lines.append(f"| {k} | {e_dnc:.2f} | {e_lstm:.2f} | {s_dnc:.0f} | {s_lstm:.0f} |")
    lines += [
        "",
        f"Same updates ({updates}): DNC {rows[-1][1]:.2f}, LSTM {lstm_same_updates:.2f} "
        "bits error per sequence.",
        f"Same CPU seconds ({dnc.seconds:.0f} s): DNC {rows[-1][1]:.2f}, LSTM {lstm_same_seconds:.2f} "
        f"(after {lstm.updates} updates).",
    ]
    table = "\n".join(lines)
    print(table)
    if not args.quick:
        Path(args.out).write_text(
            "# Copy task\n\n`.venv/bin/python benchmarks/copy_task.py`\n\n" + table + "\n", encoding="utf-8"
        )


if __name__ == "__main__":
    main()

"""Prioritized replay speed: memagent vs cpprb (C++/Cython) vs the tutorial's np.random.choice buffer.

Transitions: obs float32[64], action float32[64], reward, done, next obs float32[64]; 8 envs; the
buffers are filled to capacity and given random priorities before timing. Operations:

- add:     one step of 8 envs (transitions/s);
- sample:  256 transitions with importance weights (batches/s);
- update:  256 new priorities (updates/s);
- step:    one training step = sample 256 + update 256 + add 8 (steps/s).

memagent is timed twice: ``numpy`` is ``PrioritizedReplayBuffer.sample_arrays`` (numpy arrays out,
as cpprb and the tutorial return: the apples-to-apples comparison the target refers to) and ``SB3`` is
``sample`` returning torch tensors (what the SB3 algorithms call). The implementations are timed in
interleaved rounds in one process: each rate is the best round (least disturbed by other load), the
ratio to cpprb the median over rounds of the paired ratio (both timed back to back in a round).

Run:  .venv/bin/python benchmarks/replay.py [--quick]      (needs ``pip install cpprb``)
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

from gymnasium import spaces  # noqa: E402

from memagent.replay import PrioritizedReplayBuffer  # noqa: E402

N_ENVS, DIM, BATCH, ALPHA, BETA = 8, 64, 256, 0.6, 0.4
RESULTS = Path(__file__).parent / "results" / "replay.md"
OPS = ("add", "sample", "update", "step")


class TutorialReplay:
    """The tutorial's prioritized replay, on preallocated arrays instead of deques (which only helps it):
    ``np.random.choice(N, B, p=p/sum(p), replace=False)`` over all N priorities per sample, weights
    ``(N P(i))^-beta`` divided by the batch max, priorities written in place (the tutorial never
    updates them; the write is given to it so that the training step can be compared)."""

    def __init__(self, capacity: int, seed: int = 0) -> None:
        self.capacity = capacity
        self.obs = np.zeros((capacity, DIM), np.float32)
        self.act = np.zeros((capacity, DIM), np.float32)
        self.next_obs = np.zeros((capacity, DIM), np.float32)
        self.rew = np.zeros(capacity, np.float32)
        self.done = np.zeros(capacity, np.float32)
        self.priorities = np.zeros(capacity, np.float64)
        self.pos, self.size, self.max_priority = 0, 0, 1.0
        self.rng = np.random.RandomState(seed)  # noqa: NPY002 -- the tutorial's np.random.choice

    def add(self, obs, act, rew, next_obs, done) -> None:
        idx = (self.pos + np.arange(len(obs))) % self.capacity
        self.obs[idx], self.act[idx], self.next_obs[idx] = obs, act, next_obs
        self.rew[idx], self.done[idx] = rew, done
        self.priorities[idx] = self.max_priority**ALPHA
        self.pos = (self.pos + len(obs)) % self.capacity
        self.size = min(self.size + len(obs), self.capacity)

    def sample(self, batch_size: int, beta: float) -> dict[str, np.ndarray]:
        probs = self.priorities[: self.size] / self.priorities[: self.size].sum()
        idx = self.rng.choice(self.size, batch_size, p=probs, replace=False)
        weights = (self.size * probs[idx]) ** (-beta)
        weights /= weights.max()
        return {
            "obs": self.obs[idx],
            "act": self.act[idx],
            "rew": self.rew[idx],
            "next_obs": self.next_obs[idx],
            "done": self.done[idx],
            "weights": weights,
            "indexes": idx,
        }

    def update_priorities(self, idx: np.ndarray, td: np.ndarray) -> None:
        p = np.abs(td) + 1e-6
        self.max_priority = max(self.max_priority, float(p.max()))
        self.priorities[idx] = p**ALPHA


def _memagent(capacity: int, rng: np.random.Generator, td_fill: np.ndarray):
    box = spaces.Box(-np.inf, np.inf, (DIM,), np.float32)
    act = spaces.Box(-1.0, 1.0, (DIM,), np.float32)
    buffer = PrioritizedReplayBuffer(
        capacity, box, act, device="cpu", n_envs=N_ENVS, alpha=ALPHA, beta=BETA, seed=0
    )
    chunk = 4096  # rows per bulk write (the same data add() would store, written faster)
    for start in range(0, buffer.buffer_size, chunk):
        rows = slice(start, min(start + chunk, buffer.buffer_size))
        n = rows.stop - rows.start
        for array in (buffer.observations, buffer.next_observations, buffer.actions):
            array[rows] = rng.random((n, N_ENVS, DIM), dtype=np.float32)
        buffer.rewards[rows] = rng.random((n, N_ENVS), dtype=np.float32)
    buffer.pos, buffer.full = 0, True
    buffer.tree.fill(0, capacity, 1.0)
    buffer.update_priorities(np.arange(capacity), td_fill)
    return buffer


def _cpprb(capacity: int, rng: np.random.Generator, td_fill: np.ndarray):
    import cpprb

    env_dict = {
        "obs": {"shape": DIM},
        "act": {"shape": DIM},
        "rew": {},
        "next_obs": {"shape": DIM},
        "done": {},
    }
    buffer = cpprb.PrioritizedReplayBuffer(capacity, env_dict, alpha=ALPHA, eps=1e-6)
    chunk = 32768
    for start in range(0, capacity, chunk):
        n = min(chunk, capacity - start)
        buffer.add(
            obs=rng.random((n, DIM), dtype=np.float32),
            act=rng.random((n, DIM), dtype=np.float32),
            rew=rng.random(n, dtype=np.float32),
            next_obs=rng.random((n, DIM), dtype=np.float32),
            done=np.zeros(n, np.float32),
        )
    buffer.update_priorities(np.arange(capacity), td_fill)  # cpprb adds eps itself
    return buffer


def _tutorial(capacity: int, rng: np.random.Generator, td_fill: np.ndarray):
    buffer = TutorialReplay(capacity)
    chunk = 32768
    for start in range(0, capacity, chunk):
        n = min(chunk, capacity - start)
        data = rng.random((n, DIM), dtype=np.float32)
        buffer.add(data, data, rng.random(n, dtype=np.float32), data, np.zeros(n, np.float32))
    buffer.update_priorities(np.arange(capacity), td_fill)
    return buffer


def _operations(kind: str, buffer, rng: np.random.Generator) -> dict[str, Callable[[], object]]:
    """The four timed operations of one implementation; every call uses fresh random data."""
    obs = rng.standard_normal((N_ENVS, DIM), dtype=np.float32)
    rew, done = np.zeros(N_ENVS, np.float32), np.zeros(N_ENVS, np.float32)
    td = rng.random(BATCH) * 2.0
    if kind.startswith("memagent"):
        infos = [{} for _ in range(N_ENVS)]
        sample = buffer.sample_arrays if kind == "memagent (numpy)" else buffer.sample
        first = sample(BATCH)

        def add():
            buffer.add(obs, obs, obs, rew, done, infos)

        def step():
            batch = sample(BATCH)
            buffer.update_priorities(batch.indices, td)
            add()

        return {
            "add": add,
            "sample": lambda: sample(BATCH),
            "update": lambda: buffer.update_priorities(first.indices, td),
            "step": step,
        }
    first = buffer.sample(BATCH, BETA)
    idx = first["indexes"]

    def add_other():
        buffer.add(obs=obs, act=obs, rew=rew, next_obs=obs, done=done)

    def add_tutorial():
        buffer.add(obs, obs, rew, obs, done)

    add_fn = add_tutorial if kind == "tutorial" else add_other
    update = buffer.update_priorities

    def step_other():
        batch = buffer.sample(BATCH, BETA)
        update(batch["indexes"], td)
        add_fn()

    return {
        "add": add_fn,
        "sample": lambda: buffer.sample(BATCH, BETA),
        "update": lambda: update(idx, td),
        "step": step_other,
    }


def _time(fn: Callable[[], object], iterations: int) -> float:
    """Seconds per call over ``iterations`` calls."""
    gc.disable()
    start = time.perf_counter()
    for _ in range(iterations):
        fn()
    elapsed = time.perf_counter() - start
    gc.enable()
    return elapsed / iterations


def run(
    capacity: int, rounds: int, iterations: int, tutorial_iterations: int
) -> dict[str, dict[str, list[float]]]:
    """Seconds per call of every operation of every implementation, one entry per round."""
    rng = np.random.default_rng(0)
    td_fill = rng.exponential(1.0, capacity)
    buffers = {
        "memagent (numpy)": _memagent(capacity, rng, td_fill),
        "cpprb": _cpprb(capacity, rng, td_fill),
        "tutorial": _tutorial(capacity, rng, td_fill),
    }
    buffers["memagent (SB3 tensors)"] = buffers["memagent (numpy)"]
    ops = {kind: _operations(kind, buf, np.random.default_rng(1)) for kind, buf in buffers.items()}
    times: dict[str, dict[str, list[float]]] = {kind: {op: [] for op in OPS} for kind in ops}
    for _ in range(rounds):
        for op in OPS:
            for kind, fns in ops.items():
                n = tutorial_iterations if kind == "tutorial" and op in ("sample", "step") else iterations
                fns[op]()  # warm-up
                times[kind][op].append(_time(fns[op], n))
    del buffers, ops
    gc.collect()
    return times


def _table(results: dict[int, dict[str, dict[str, list[float]]]]) -> str:
    """Rates from the best round; the ratio is the median over rounds of the paired step-time ratio
    (cpprb and the others are timed back to back in each round, so both see the same load)."""
    lines = [
        "| capacity | implementation | add (transitions/s) | sample 256 (batches/s) "
        "| update 256 (updates/s) | training step (steps/s) | step vs cpprb |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for capacity, per_kind in results.items():
        reference = np.asarray(per_kind["cpprb"]["step"])
        for kind, t in per_kind.items():
            best = {op: min(t[op]) for op in OPS}
            ratio = float(np.median(reference / np.asarray(t["step"])))
            lines.append(
                f"| {capacity:,} | {kind} | {N_ENVS / best['add']:,.0f} | {1 / best['sample']:,.0f} "
                f"| {1 / best['update']:,.0f} | {1 / best['step']:,.0f} | {ratio:.2f}x |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds and iterations (a smoke run)")
    parser.add_argument("--capacities", type=int, nargs="+", default=[1_000_000, 100_000])
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS}")
    args = parser.parse_args()
    rounds, iterations, tutorial_iterations = (2, 200, 2) if args.quick else (15, 300, 3)
    load_before = os.getloadavg()[0]
    results = {c: run(c, rounds, iterations, tutorial_iterations) for c in args.capacities}
    import cpprb  # noqa: F401 -- for its version below

    header = (
        f"Prioritized replay, obs/action float32[{DIM}], {N_ENVS} envs, batch {BATCH}, alpha {ALPHA}, "
        f"beta {BETA}; {rounds} interleaved rounds of {iterations} calls "
        f"({tutorial_iterations} for the tutorial's sample and step): rates from the best round, "
        f"'step vs cpprb' = median over rounds of the paired step-time ratio.\n"
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"numpy {np.__version__}, cpprb {_version('cpprb')}; "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; load average {load_before:.1f} before and "
        f"{os.getloadavg()[0]:.1f} after the run (other jobs share the machine: rates are noisy, "
        f"paired ratios less so).\n"
    )
    table = _table(results)
    print(header)
    print(table)
    if not args.no_write and not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        command = ".venv/bin/python benchmarks/replay.py"
        RESULTS.write_text(f"# Prioritized replay benchmark\n\n`{command}`\n\n{header}\n{table}\n")


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    main()

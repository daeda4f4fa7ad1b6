"""DNC speed and activation memory, forward + backward, side by side with an LSTM.

Setting (issue 2): batch 16, 32 steps, input 64, memory 128 x 64, 4 read heads, 1 write head, LSTM
controller 128. Every model is timed in the same process, interleaved round by round (median of the
rounds), on one CPU thread unless ``--threads`` says otherwise. "Memory kept for backward" is what a
forward pass leaves allocated (profiler net CPU allocation minus the output): the activations autograd
keeps, including what gradient checkpointing keeps.

    .venv/bin/python benchmarks/dnc_speed.py [--quick] [--threads 1] [--device cpu] [--compile] [--no-pypi]
    .venv/bin/python benchmarks/dnc_speed.py --breakdown   # where the native DNC's time goes
    .venv/bin/python benchmarks/dnc_speed.py --against REV --rounds 25   # REV's memagent vs this tree
    .venv/bin/python benchmarks/dnc_speed.py --against old_kernel.c      # another kernel, this tree's code
    .venv/bin/python benchmarks/dnc_speed.py --thread-scaling 1,2,4,8,16   # wall time per thread count

Our DNC runs on the native CPU kernel (memagent.memory.native) where it is available; the row
"torch path (MEMAGENT_NATIVE=0)" is the same model on the torch path, side by side. The kernel splits
its batch loops over ``torch.get_num_threads()`` threads (``--threads N`` sets it for torch and the
kernel alike; ``MEMAGENT_NATIVE_THREADS`` overrides the kernel's count).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from memagent.memory import DNC, MemoryConfig, native  # noqa: E402

B, T, I, H, O = 16, 32, 64, 128, 64
N, W, R = 128, 64, 4


class LSTMBaseline(nn.Module):
    """``nn.LSTM(64, 128)`` and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(I, H, batch_first=True)
        self.head = nn.Linear(H, O)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(x)[0])


class OursWrapper(nn.Module):
    """Our DNC; ``native=False`` runs it with ``MEMAGENT_NATIVE=0`` (the torch path, per-step fused
    autograd Functions) during its forward and backward."""

    def __init__(self, config: MemoryConfig, native: bool = True, **kwargs) -> None:
        super().__init__()
        self.native = native
        self.dnc = DNC(I, H, O, config, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dnc(x)[0]


def pypi_dnc() -> nn.Module | None:
    """The PyPI ``dnc`` package (ixaxaar/pytorch-dnc) in the same setting, if installed."""
    try:
        from dnc import DNC as RefDNC  # type: ignore[import-not-found]
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None

    class Ref(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dnc = RefDNC(
                input_size=I,
                hidden_size=H,
                rnn_type="lstm",
                num_layers=1,
                nr_cells=N,
                cell_size=W,
                read_heads=R,
                batch_first=True,
                gpu_id=-1,
            )
            self.head = nn.Linear(I, O)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.dnc(x, (None, None, None), reset_experience=True)
            return self.head(out)

    return Ref()


def activation_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes a forward pass leaves allocated for backward: the profiler's net CPU allocation during
    ``model(x)`` minus the output itself. (Equal, without checkpointing, to the sum of the tensors
    autograd saves; unlike a ``saved_tensors_hooks`` count it also sees what checkpointing keeps.)"""
    from torch.profiler import ProfilerActivity, profile

    from memagent.memory.native import sequence

    gc.collect()
    sequence.release_buffers()  # a forward must not count reused pool buffers as free ...
    with native_switch(model), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        y = model(x)
        sequence.release_buffers()  # ... nor a pooled buffer it no longer needs (freed here) as kept
    net = sum(event.self_cpu_memory_usage for event in prof.events())
    return net - y.untyped_storage().nbytes()


@contextlib.contextmanager
def native_switch(model: nn.Module):
    """``MEMAGENT_NATIVE=0`` while a model built with ``native=False`` runs."""
    old = os.environ.get("MEMAGENT_NATIVE")
    if not getattr(model, "native", True):
        os.environ["MEMAGENT_NATIVE"] = "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MEMAGENT_NATIVE", None)
        else:
            os.environ["MEMAGENT_NATIVE"] = old


def train_step(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> None:
    with native_switch(model):
        model.zero_grad(set_to_none=True)
        y = model(x)
        torch.nn.functional.mse_loss(y, target).backward()


def breakdown(x: torch.Tensor, target: torch.Tensor, rounds: int) -> str:
    """Where the native DNC's time goes (CPU, same process, interleaved rounds): the whole train step,
    the same with the controller's per-step products in torch instead of against packed weights, a
    no-grad forward, the same train step with the memory's C kernels replaced by no-ops (the
    controller's matrix products and LSTM cells, the framework and Python: the floor without memory
    work), and a small memory."""
    real = native.load()
    if real is None:
        return "breakdown: the native kernel is not available"

    def noop(*args):
        return None

    # the memory's kernels do nothing; the controller's (packed products, LSTM cells, row copies) run
    memory_kernels = ("access_forward", "access_backward", "erase_write")
    fake = {k: kernels._replace(**dict.fromkeys(memory_kernels, noop)) for k, kernels in real.items()}
    big, small = (
        OursWrapper(MemoryConfig(memory_size=N, word_size=W, num_read_heads=R)),
        OursWrapper(MemoryConfig(memory_size=8, word_size=8, num_read_heads=R)),
    )
    lstm = LSTMBaseline()

    def no_grad_forward() -> None:
        with torch.no_grad():
            big(x)

    def floor() -> None:
        native._STATE["functions"] = fake
        try:
            train_step(big, x, target)
        finally:
            native._STATE["functions"] = real

    def torch_products() -> None:
        from memagent.memory.native import sequence

        packing = sequence.PACK_MIN_ROWS
        sequence.PACK_MIN_ROWS = sys.maxsize  # every call takes torch's products, as small calls do
        try:
            train_step(big, x, target)
        finally:
            sequence.PACK_MIN_ROWS = packing

    cases = {
        "nn.LSTM(64,128) + linear, train step": lambda: train_step(lstm, x, target),
        "DNC train step": lambda: train_step(big, x, target),
        "DNC train step, the controller's products in torch (weights not packed)": torch_products,
        "DNC forward only (no grad)": no_grad_forward,
        "DNC train step, memory kernels replaced by no-ops (controller + framework floor)": floor,
        "DNC N=8, W=8, R=4, train step": lambda: train_step(small, x, target),
    }
    return _interleaved_table(cases, rounds, "case")


def _interleaved_table(cases: dict[str, Callable[[], None]], rounds: int, header: str) -> str:
    """Median thread CPU time of each case over interleaved rounds (two warm-up calls each), as a Markdown
    table with the ratio to the first case (the LSTM)."""
    for case in cases.values():
        case()
        case()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            c0 = time.thread_time()
            case()
            times[name].append(1e3 * (time.thread_time() - c0))
    baseline_ms = statistics.median(next(iter(times.values())))
    lines = [f"| {header} | ms | x LSTM |", "|---|---:|---:|"]
    for name in cases:
        ms = statistics.median(times[name])
        lines.append(f"| {name} | {ms:.1f} | {ms / baseline_ms:.1f} |")
    return "\n".join(lines)


#: run by each worker of :func:`against_tree` in its tree (argv: threads): builds the LSTM and the two DNCs
#: with that tree's ``memagent``, then runs one train step per case name read from stdin and prints its
#: thread CPU time in ms
_TREE_WORKER = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
sys.path.insert(0, ".")
from memagent.memory import DNC, MemoryConfig
B, T, I, H, O, N, W, R = 16, 32, 64, 128, 64, 128, 64, 4
torch.manual_seed(0)
g = torch.Generator().manual_seed(1)
x, target = torch.randn(B, T, I, generator=g), torch.randn(B, T, O, generator=g)
class Lstm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm, self.head = torch.nn.LSTM(I, H, batch_first=True), torch.nn.Linear(H, O)
    def forward(self, x):
        return self.head(self.lstm(x)[0])
class Dnc(torch.nn.Module):
    def __init__(self, links):
        super().__init__()
        config = MemoryConfig(memory_size=N, word_size=W, num_read_heads=R, temporal_links=links)
        self.dnc = DNC(I, H, O, config)
    def forward(self, x):
        return self.dnc(x)[0]
models = {"lstm": Lstm(), "links": Dnc(True), "no links": Dnc(False)}
def step(model):
    model.zero_grad(set_to_none=True)
    torch.nn.functional.mse_loss(model(x), target).backward()
for model in models.values():
    step(model), step(model)
import memagent
print("ready", memagent.__file__, flush=True)
for line in sys.stdin:
    c0 = time.thread_time()
    step(models[line.strip()])
    print(1e3 * (time.thread_time() - c0), flush=True)
"""


def against_tree(revision: str, rounds: int, threads: int) -> str:
    """Train steps of this repository's ``memagent`` at git ``revision`` (sequence code and kernel alike)
    against this working tree's, each in a worker process of its own, the two alternating step by step
    (thread CPU time, medians over rounds; each DNC also as a multiple of the LSTM in its own process)."""
    import subprocess
    import tarfile
    import tempfile

    archive = subprocess.run(["git", "archive", revision, "memagent"], cwd=ROOT, capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(f"--against: {revision!r} is neither a file nor a git revision of this repository")
    cases = {"lstm": "nn.LSTM(64,128) + linear", "links": "DNC", "no links": "DNC, no temporal links"}
    with tempfile.TemporaryDirectory() as workdir:
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(workdir, filter="data")
        trees = {revision: Path(workdir), "this tree": ROOT}
        workers = {
            name: subprocess.Popen(
                [sys.executable, "-c", _TREE_WORKER, str(threads)],
                cwd=root,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for name, root in trees.items()
        }
        times: dict[tuple[str, str], list[float]] = {(tree, case): [] for tree in trees for case in cases}
        ratios: dict[str, list[float]] = {case: [] for case in cases}
        try:
            for name, worker in workers.items():  # (the first run at a revision builds its kernel)
                ready, _, package = worker.stdout.readline().strip().partition(" ")
                if ready != "ready" or not Path(package).resolve().is_relative_to(trees[name].resolve()):
                    raise SystemExit(f"--against: the worker for {name} did not start on its own tree")
            for k in range(rounds):
                for case in cases:
                    for tree in list(trees)[:: 1 if k % 2 == 0 else -1]:
                        workers[tree].stdin.write(case + "\n")
                        workers[tree].stdin.flush()
                        times[(tree, case)].append(float(workers[tree].stdout.readline()))
                    ratios[case].append(times[("this tree", case)][-1] / times[(revision, case)][-1])
        finally:
            for worker in workers.values():
                worker.stdin.close()
                worker.wait()
    med = {key: statistics.median(v) for key, v in times.items()}
    lines = [
        f"Train step (B={B}, T={T}, input {I}, N={N}, W={W}, R={R}, LSTM controller {H}), `memagent` at "
        f"`{revision}` against this tree, each in its own process, the two alternating step by step; "
        f"thread CPU ms, median of {rounds} rounds, {threads} thread(s).",
        "",
        f"| case | `{revision}` ms | x LSTM | this tree ms | x LSTM | this tree / `{revision}` |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for case, label in cases.items():
        old, new = med[(revision, case)], med[("this tree", case)]
        lines.append(
            f"| {label} | {old:.1f} | {old / med[(revision, 'lstm')]:.2f} | {new:.1f} | "
            f"{new / med[('this tree', 'lstm')]:.2f} | {statistics.median(ratios[case]):.3f} |"
        )
    lines += ["", "(last column: median of the per-round ratios)"]
    return "\n".join(lines)


def against(source: str, x: torch.Tensor, target: torch.Tensor, rounds: int) -> str:
    """The native DNC's train step with another ``access_kernel.c`` file against the current kernel, same
    models, batch and sequence code, interleaved rounds (with and without temporal links). The file must
    have this tree's C interface (a kernel from before it changed cannot be bound: compare whole trees
    with a git revision instead, :func:`against_tree`)."""
    import ctypes
    import tempfile

    from memagent import cbuild

    current = native.load()
    if current is None:
        return "against: the native kernel is not available"
    with tempfile.TemporaryDirectory() as workdir:
        copy = Path(workdir) / "access_kernel.c"  # (the kernel includes itself by that name)
        copy.write_bytes(Path(source).read_bytes())
        library = cbuild.compile_library(copy, native._FLAGS)
        other = native._bind(ctypes.CDLL(str(library)))
    base = MemoryConfig(memory_size=N, word_size=W, num_read_heads=R)
    no_links = MemoryConfig(**{**base.__dict__, "temporal_links": False})
    models = {"links": OursWrapper(base), "no links": OursWrapper(no_links)}
    lstm = LSTMBaseline()

    def with_kernel(model: nn.Module, kernels: dict) -> Callable[[], None]:
        def run() -> None:
            native._STATE["functions"] = kernels
            try:
                train_step(model, x, target)
            finally:
                native._STATE["functions"] = current

        return run

    cases: dict[str, Callable[[], None]] = {"nn.LSTM(64,128) + linear": lambda: train_step(lstm, x, target)}
    for name, model in models.items():
        cases[f"DNC ({name}), kernel from {source}"] = with_kernel(model, other)
        cases[f"DNC ({name}), current kernel"] = with_kernel(model, current)
    return _interleaved_table(cases, rounds, "train step")


def dispatch_table(counts: list[int]) -> str:
    """The kernel pool's cost per call at B=16: an empty job, and a job of 1 us per sample (16 us on one
    thread; ideal: 1 us x ceil(16 / threads)), back to back, after 20 us of other work (workers
    spinning) and after 1 ms (workers asleep)."""
    pool = native._pool()
    lines = [
        f"Kernel pool cost per call at B={B} (mean of 2000 calls, 300 after 1 ms): an empty job, and "
        "16 samples of 1 us busy work each (ideal = ceil(16 / threads) us; the excess is the dispatch "
        "cost), back to back / after 20 us of other work (workers spinning) / after 1 ms (workers asleep).",
        "",
        "| kernel threads | empty job us | 16 x 1 us job: ideal | back to back | after 20 us | after 1 ms |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n in counts:
        n = min(n, B)
        empty = pool.pool_dispatch_ns(n, B, 2000, 0, 0) / 1e3
        busy = [
            pool.pool_dispatch_ns(n, B, it, gap, 1000) / 1e3
            for it, gap in ((2000, 0), (2000, 20_000), (300, 10**6))
        ]
        ideal = -(-B // n)
        lines.append(f"| {n} | {empty:.2f} | {ideal} | {busy[0]:.2f} | {busy[1]:.2f} | {busy[2]:.2f} |")
    return "\n".join(lines)


def thread_scaling(counts: list[int], x: torch.Tensor, target: torch.Tensor, rounds: int) -> str:
    """Wall time of a train step per thread count (``torch.set_num_threads(n)``: torch's ops and the
    native kernel alike), LSTM and DNC side by side, the thread counts interleaved round by round in
    this process; and the kernel pool's dispatch cost (:func:`dispatch_table`)."""
    base = MemoryConfig(memory_size=N, word_size=W, num_read_heads=R)
    no_links = MemoryConfig(**{**base.__dict__, "temporal_links": False})
    models = {"lstm": LSTMBaseline(), "dnc": OursWrapper(base), "nolinks": OursWrapper(no_links)}
    kernel_threads = {}
    for n in counts:  # warm-up (and the kernel's workers started) at every count
        torch.set_num_threads(n)
        kernel_threads[n] = min(native.num_threads(), B) if native.available() else 0
        for m in models.values():
            for _ in range(2):
                train_step(m, x, target)
    times: dict[tuple[int, str], list[float]] = {(n, k): [] for n in counts for k in models}
    for _ in range(rounds):
        for n in counts:
            torch.set_num_threads(n)
            train_step(models["lstm"], x, target)  # untimed: torch's thread team resized
            for name, m in models.items():
                t0 = time.perf_counter()
                train_step(m, x, target)
                times[(n, name)].append(1e3 * (time.perf_counter() - t0))
    med = {key: statistics.median(v) for key, v in times.items()}
    pool = native._pool()
    late = (pool.pool_late_calls(), pool.pool_parallel_calls()) if pool is not None else (0, 0)
    lines = [
        f"Forward + backward, B={B}, T={T}, input {I}, N={N}, W={W}, R={R}, 1 write head, LSTM controller "
        f"{H}; wall ms per train step, median of {rounds} rounds, thread counts interleaved round by round "
        f"in one process; torch {torch.__version__}, {os.cpu_count()} logical CPUs. threads: "
        "torch.set_num_threads (torch's ops and, unless MEMAGENT_NATIVE_THREADS is set, the native "
        "kernel); kernel threads: what the kernel's batch loops may use (at most B).",
        "",
        "| threads | kernel threads | LSTM ms | DNC ms | x LSTM | DNC no links ms | x LSTM | DNC speed-up |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    first = med[(counts[0], "dnc")]
    for n in counts:
        lstm, dnc, nolinks = med[(n, "lstm")], med[(n, "dnc")], med[(n, "nolinks")]
        lines.append(
            f"| {n} | {kernel_threads[n]} | {lstm:.1f} | {dnc:.1f} | {dnc / lstm:.1f} | {nolinks:.1f} | "
            f"{nolinks / lstm:.1f} | {first / dnc:.2f} |"
        )
    if pool is not None:
        lines += [
            "",
            f"Kernel calls split over threads: {late[1]}; of them {late[0]} found a worker late (a worker"
            " not running: the cores busy with other work) and made the next calls use fewer threads.",
            "",
            dispatch_table(counts),
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="few rounds (smoke run)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time DNC(..., compile_access=True) (torch.compile of the access step; ~40 s to compile)",
    )
    parser.add_argument("--no-pypi", action="store_true", help="skip the PyPI dnc package")
    parser.add_argument(
        "--breakdown", action="store_true", help="only print where the native DNC's time goes (CPU)"
    )
    parser.add_argument(
        "--against",
        metavar="REV_OR_FILE",
        help="only time train steps of this git revision's memagent against this tree (two processes, "
        "alternating), or with this access_kernel.c file against the current kernel (one process)",
    )
    parser.add_argument(
        "--thread-scaling",
        metavar="COUNTS",
        help="only time train steps (wall) at these thread counts, e.g. 1,2,4,8,16 (table to --out, "
        "default benchmarks/results/dnc_threads.md)",
    )
    parser.add_argument("--out", default=None, help="results file (default: per mode, see above)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    rounds = args.rounds or (3 if args.quick else 15)
    if args.thread_scaling:
        try:
            counts = [int(c) for c in args.thread_scaling.split(",") if c.strip()]
        except ValueError:
            counts = []
        if not counts or min(counts) < 1:
            parser.error(f"--thread-scaling {args.thread_scaling!r}: expected positive integers like 1,2,4")
        g = torch.Generator().manual_seed(1)
        xb, tb = torch.randn(B, T, I, generator=g), torch.randn(B, T, O, generator=g)
        table = thread_scaling(counts, xb, tb, rounds)
        print(table)
        if not args.quick:
            out = Path(args.out or ROOT / "benchmarks" / "results" / "dnc_threads.md")
            _record(out, "DNC speed per thread count", _command(argv), table)
        return
    if args.breakdown or args.against:
        g = torch.Generator().manual_seed(1)
        xb, tb = torch.randn(B, T, I, generator=g), torch.randn(B, T, O, generator=g)
        if args.against and not Path(args.against).is_file():
            print(against_tree(args.against, rounds, args.threads))
        elif args.against:
            print(against(args.against, xb, tb, rounds))
        else:
            print(breakdown(xb, tb, rounds))
        return

    base = MemoryConfig(memory_size=N, word_size=W, num_read_heads=R, num_write_heads=1)
    no_links = MemoryConfig(**{**base.__dict__, "temporal_links": False})
    models: dict[str, nn.Module] = {
        "nn.LSTM(64,128) + linear": LSTMBaseline(),
        "DNC (allocation + links)": OursWrapper(base),
        "DNC (allocation + links), torch path (MEMAGENT_NATIVE=0)": OursWrapper(base, native=False),
        "DNC (allocation + links), checkpoint every 8 steps": OursWrapper(base, checkpoint_steps=8),
        "DNC, reference functions via autograd (no fused kernels)": OursWrapper(base, fused=False),
        "DNC, no temporal links": OursWrapper(no_links),
        "DNC, no temporal links, torch path": OursWrapper(no_links, native=False),
        "DNC, tutorial bank (content only)": OursWrapper(MemoryConfig.tutorial(N, W, R)),
        "DNC, tutorial bank, torch path": OursWrapper(MemoryConfig.tutorial(N, W, R), native=False),
    }
    if not native.available():
        print("native kernel NOT available (no compiler, or MEMAGENT_NATIVE=0): every DNC row is torch")
    if args.compile:  # opt-in: compiles the access step's forward and backward (~40 s on CPU)
        models["DNC (allocation + links), compile_access=True"] = OursWrapper(base, compile_access=True)
    ref = None if args.no_pypi else pypi_dnc()
    if ref is not None:
        models["PyPI `dnc` (ixaxaar)"] = ref
    models = {k: m.to(device) for k, m in models.items()}
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, T, I, generator=g).to(device)
    target = torch.randn(B, T, O, generator=g).to(device)

    sync: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for m in models.values():  # warm-up
        for _ in range(2):
            train_step(m, x, target)
    times: dict[str, list[float]] = {k: [] for k in models}
    cpu_times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for name, m in models.items():
            sync()
            t0, c0 = time.perf_counter(), time.thread_time()
            train_step(m, x, target)
            sync()
            times[name].append(1e3 * (time.perf_counter() - t0))
            cpu_times[name].append(1e3 * (time.thread_time() - c0))
    act = {}
    for name, m in models.items():
        act[name] = activation_bytes(m, x) / 2**20

    # On a CPU shared with other jobs the thread's CPU time is the robust measure (wall time counts
    # the time other processes held the core); on a GPU, wall time.
    wall = device.type == "cuda" or args.threads > 1
    clock = times if wall else cpu_times
    lstm_ms = statistics.median(clock["nn.LSTM(64,128) + linear"])
    lines = [
        f"Forward + backward, B={B}, T={T}, input {I}, N={N}, W={W}, R={R}, 1 write head, "
        f"LSTM controller {H}; device {device}, {args.threads} thread(s), median of {rounds} "
        f"interleaved rounds, torch {torch.__version__}. "
        + (
            "ms / batch is wall time (several threads)."
            if wall
            else "ms / batch is the thread's CPU time (time.thread_time; one thread) so that other jobs "
            "on a shared machine do not count."
        ),
        "",
        "| model | ms / batch | x LSTM | wall ms / batch | memory kept for backward (MiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in models:
        ms = statistics.median(clock[name])
        wall = statistics.median(times[name])
        lines.append(f"| {name} | {ms:.1f} | {ms / lstm_ms:.1f} | {wall:.1f} | {act[name]:.1f} |")
    if ref is None and not args.no_pypi:
        lines.append("")
        lines.append("PyPI `dnc` not measured: the package is not importable in this environment.")
    table = "\n".join(lines)
    print(table)
    if not args.quick:
        out = Path(args.out or ROOT / "benchmarks" / "results" / "dnc_speed.md")
        _record(out, "DNC speed", _command(argv), table)


def _command(argv: list[str] | None) -> str:
    return " ".join([".venv/bin/python benchmarks/dnc_speed.py", *(sys.argv[1:] if argv is None else argv)])


def _record(path: Path, title: str, command: str, table: str) -> None:
    """Put a new measurement at the top of a results file, under its title, above the earlier ones and
    their hand-written notes (kept as they are); the file is replaced atomically."""
    from memagent.training.run import atomic_write_text

    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    head = f"# {title}\n"
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    earlier = old[len(head) :].lstrip("\n") if old.startswith(head) else old
    entry = f"## {stamp}: `{command}`\n\n{table}\n"
    atomic_write_text(path, f"{head}\n{entry}" + (f"\n{earlier}" if earlier else ""))


if __name__ == "__main__":
    main()

"""Steps per second of the batched RegressionVecEnv against SB3's DummyVecEnv of the single environment.

Both run in this one process, side by side: for every configuration the two are timed in alternating
rounds over whole episodes (autoresets included) with the same pre-drawn actions. Time is this process's
CPU time (``time.process_time``; everything is single-threaded), which other jobs on a shared machine
disturb far less than wall-clock time. Steps/s are medians over rounds; the speed-up is the median of
the per-round ratios. Both sides use the native episode kernel (:mod:`envs.native`) when it builds, as
users get them; a second table runs both sides on each path (``MEMAGENT_NATIVE=0/1``, switched between
rounds in this one process). Prints Markdown tables and writes them to ``benchmarks/results/vec_env.md``.

    .venv/bin/python benchmarks/vec_env.py            # full run (a few minutes on 2 busy cores)
    .venv/bin/python benchmarks/vec_env.py --quick    # smoke run
    .venv/bin/python benchmarks/vec_env.py --accuracy # the native kernel's errors against float64
    .venv/bin/python benchmarks/vec_env.py --against HEAD~3  # A/B: envs at a git revision vs this tree
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import platform
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from pathlib import Path
from types import ModuleType

os.environ.setdefault("OMP_NUM_THREADS", "1")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import envs  # noqa: E402,F401  (registers the ids)
from envs.vector import INFO_KEYS, RegressionVecEnv  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "vec_env.md"
REPO = Path(__file__).resolve().parents[1]

NOTES = """
**The native episode kernel** (`envs/native/`, issue 3, second round). Plain C compiled at first use
(`memagent.cbuild`; numpy fallback, `MEMAGENT_NATIVE=0`), used by the single env and the batched env
alike, so the two stay exactly equal. Per episode, for all copies in one call: every copy's PCG64 words
(advanced inline on the generator's state: the same words and final state as `random_raw`, checked at
first use), then one C pass per copy: Box–Muller (float32 polynomial log/sin/cos, vectorised; max error
5.3e-7 against float64 — numpy's float32 path: 1.8e-6) straight into the copy's block of the episode
arrays, the targets of `sin_mean`/`half_cos_mean`/`tanh_shift(k)` per row (error ≤ 8e-8; rows of user
tasks go to their numpy callables), the feedback noise. Per step, one C call: clip, squared error,
reward, observation. Every episode and every step returns fresh arrays, so nothing a caller holds (an
observation, `info["target"]`, `terminal_observation`, a tensor sharing their memory) ever changes.

**No recycling** (third round). The kernel's first version recycled returned arrays (episode arrays and
step outputs) when `sys.getrefcount` said no one held them: fragile (free-threaded CPython's biased and
deferred counts, raw pointers kept without a Python reference) and hard to reason about. Now the episode
arrays are fresh each episode, packed into one allocation of ≥ 4 MiB starting at a 2 MiB boundary (numpy
`madvise`s every allocation ≥ 4 MiB for transparent huge pages; one steady-size block also lets glibc
reuse the freed previous episode without page faults — one block per array made it trim and re-fault
24 times an episode), and the step's kernel writes two private arrays and returns copies of them
(cheaper than taking two new arrays' addresses through ctypes: ≈ 1 µs against ≈ 2.6 µs at B = 1).
Cost, side by side in one process (`.venv/bin/python benchmarks/vec_env.py --against efa3de2~1`, 64
envs, 15 alternating rounds, load ≈ 1.9): RegressionVecEnv 67.5 → 74.1 µs a step (×1.089), DummyVecEnv
of the single env 1,073 → 1,147 µs (×1.048); three other runs: ×1.07–1.11 and ×1.05–1.10. Fresh plain
`np.empty` episode arrays (3.3 MB each: under numpy's 4 MiB, so 4 KiB pages) cost ×1.14 instead: the
huge-page placement is kept. Recycling saved less than 15 % of a batched step, so it went.

Before/after, side by side in one run (second table above; `MEMAGENT_NATIVE=0` is the code before the
kernel): the batched env got 1.88× faster, but the single env under DummyVecEnv got 1.85× faster too —
it runs the same kernel, and its numpy calls at B = 1 were mostly overhead — so the speed-up the issue
measures did not improve: 16.0× → 16.3× here (this run: fresh arrays, load 1.3–1.6 by `uptime` but
absolute rates ≈ 30 % under earlier runs, so heavy contention); two earlier full runs with recycling gave
18.9× → 17.4× (batched 1.68×, single 1.82×) and 18.3× → 19.3× (1.75×, 1.66×). That spread is run-to-run
noise: other jobs share the 2 CPUs. Against the single env as it was before the kernel, the native
batched env is ≈ 30–32× (30.1× here; 31.6× and 32.1× earlier). **30× is not reached** on the issue's
measure with default infos: ≈ 16–19×; with `info_keys=("task_id", "switched")` ≈ 20–23×, with no env
info entries ≈ 24–26×.

Where a 64-env step's time goes on the native path (≈ 65 µs in microbenchmarks on this machine, one
process): the 64 info dicts ≈ 23 µs (the `target` row views a third of it) — a third of the step and
irreducible in Python with identical infos; the episode build every 200 steps ≈ 23 µs a step (PCG64
words ≈ 1.2 ms, Box–Muller and targets ≈ 2.5 ms, task sequences ≈ 0.5 ms per episode); the fused step
≈ 7 µs; Python glue the rest. The DummyVecEnv side costs ≈ 15 µs per env-step (≈ 1 ms per 64), so
30× needs ≈ 33 µs per batched step: the info dicts alone are two thirds of it.

Kept (each measured side by side): copy-major episode blocks (each copy's episode written contiguously,
viewed time-major) rather than scattering rows (≈ 30 % of the kernel); placing the episode arrays on
transparent huge pages (a step reads 64 rows scattered over them: with 4 KiB pages each is a TLB miss;
the fused step went 15 → 8 µs with the step index moving); drawing the words in C (no Python call and
copy per copy) with PCG64 inline (3.7× `random_raw`); `-mprefer-vector-width=512` (≈ 30 % on Box–Muller
where there is AVX-512). Dropped: recycling by reference count (above); per-episode observation/reward
blocks (the step then writes cold memory). The numpy path's earlier notes (the `info_keys` opt-out,
clipping against full-shape bounds, `np.vecdot`, radix-sorted task ids) still apply with
`MEMAGENT_NATIVE=0`.

**Fourth round: the episode build and the step's call** (issue 3). Every change keeps the values
bitwise: a digest of 21 rollouts (7 configurations × 1, 3 and 64 copies, both the batched and the single
env, native and numpy paths) is identical before and after. Kept:
- PCG64 words advanced **in the generators' own memory** (`BitGenerator.ctypes.state_address`; numpy's
  128-bit layout recognised, and the in-place kernel checked against `random_raw`, once per process),
  through a `WordSource` the VecEnv keeps (bit generators, locks in lock order and state addresses looked
  up once; rebuilt when a generator is replaced, e.g. by `seed`; never copied with the env): no `state`
  dictionaries read and written per episode. Eight generators at a time in AVX-512 lanes (the
  64 × 64 → 128-bit product from four 32 × 32-bit products, `vprorvq`): ≈ 25 % faster than the scalar
  loop in a C microbenchmark (3.1–3.5 against 4.1–4.6 ns a word, same run); the scalar loop elsewhere.
- Task sequences and switch flags in C for the `none`/`period`/`hazard` schedules (the same float64
  uniforms and floors; explicit schedules keep numpy); task pools padded with one `concatenate`
  (`np.stack` of 64 pools cost ≈ 75 µs).
- Box–Muller and the `tanh_shift` targets **stage by stage over blocks of 64** (each stage one short
  loop, so the polynomial chains of four vectors run side by side; the same float32 operations per
  element), targets per run of one task's rows: × 0.83–0.90 (Box–Muller) and × 0.87 (tanh rows) in C
  microbenchmarks.
- The fused step called **without ctypes argument conversion** (prebuilt `c_void_p`): ≈ 0.5 µs a call
  against ≈ 1.2 µs with `argtypes`.

Side by side in one process (load 1.9–2.1 by `uptime`: two other engineers' benchmarks on the 2 CPUs, so
absolute µs are ≈ 1.3–1.7× an idle machine's): `.venv/bin/python benchmarks/vec_env.py --against 5b62504`
(15 alternating rounds): RegressionVecEnv 87.1 → 73.4 µs a step (× 0.883), DummyVecEnv of the single env
1,706 → 1,347 µs (× 0.934: the single env shares the task-sequence and step-call code); again at load 2.2:
× 0.870 and × 0.930, **the issue's speed-up 17.5× → 19.1×** (median of per-round ratios, bare single envs);
two earlier runs at load 2.35: × 0.858 and × 0.864 (single env × 0.961, × 0.968). The episode build alone
(`_start_episodes`, 15 alternating rounds of 30 builds): 5,230 → 3,624 µs at 64 copies (× 0.69), 386 →
238 µs at 1 copy (× 0.60).

Tried and dropped (each measured side by side): interleaving 2–4 scalar PCG64 generators (1, 2, 3, 4 at
a time: 3.3, 3.8, 3.4, 3.3 ns a word: the loop is bound by its three 64-bit multiplies a word, not by the
dependency chain); fresh 8-step blocks of step outputs written in place instead of two copies per step
(stepper 17.5 → 20.1 µs at 64 copies, 5.5 → 8.0 µs at 1 copy: the kernel then writes cold memory);
time-major episode arrays (C microbenchmark: the step 10.4 → 9.4 µs, the build 2.4 → 4.7 ms); the info
dicts as per-episode `tolist`s, `list(ys[t])`, a template `dict.copy()` or `map(dict, …)` (none better
than the literal comprehension beyond noise, ± 4 %; `map(dict, …)` 2× slower); the next step's prefetch
interleaved with the rows' work (within noise). Not taken because values would change in the last bits
against earlier versions (max 4.8e-7 on the Gaussians): `fmaf` in the polynomials (Box–Muller × 0.7–0.8).

Where a 64-env step goes now: the 64 info dicts ≈ 20–23 µs on an idle machine (at load 1.6: the 64 dict
literals ≈ 14 µs, the 64 `target` row views ≈ 7 µs — the cost of making a Python dict and a numpy view;
no variant tried was faster); the fused step ≈ 6–7
µs (the kernel reads 512 cache lines scattered over the copy-major episode — memory-level parallelism,
not arithmetic, bounds it — plus the action copy and the two output copies); the episode build ≈ 2.5–3.5
ms every 200 steps, ≈ 13–17 µs a step (by `perf`: Box–Muller ≈ 30 %, PCG64 ≈ 30 %, targets ≈ 25 %,
Python and the rest ≈ 15 %). **30× is still not reached** with default infos: it needs ≈ 36 µs a
step, and the info dicts alone are ≈ 20. The AVX-512 width was re-checked on the whole step loop (episode
builds included): 256-bit vectors × 1.016 the time of 512-bit ones, so 512 stays.
**Fifth round: the info dicts in C, prototyped and measured, not kept** (session 5, 2026-11-29 01:03 UTC,
idle VM in a slow phase: `uptime` load 0.01; 64 envs; `timeit`, best of 7 × 2,000 calls, one process). A
CPython extension (`METH_FASTCALL`, interned keys, `_PyDict_NewPresized`, rows through numpy's C API
`PyArray_NewFromDescr` + `PyArray_SetBaseObject`) building exactly the default infos took 30–38 µs a step
against 47–55 µs for the comprehension above; without the `target` rows 14.5–15.6 µs, so a row view costs
≈ 0.25 µs in C as in Python (`list(ys[t])`: 15 µs), and a 4-entry dict ≈ 0.23 µs. The rest of a batched
step in the same session: the stepper 14 µs, Python glue ≈ 6 µs, the episode build 4.95 ms every 200
steps (≈ 25 µs a step: PCG64 words 1.45 ms, Box–Muller and targets 3.07 ms). With DummyVecEnv at ≈ 1.93 ms
per 64 env-steps (table above), 30× allows ≈ 64 µs a step; C-built infos would bring the step to ≈ 80 µs,
≈ 24×. Not kept: a per-interpreter CPython build (Python.h and numpy's headers at first use) for ≈ 20 % of
a step that still leaves 30× out of reach. **With SB3's list of per-env info dicts, the full `info` costs
≈ 0.5–0.8 µs per env-step against a total budget of ≈ 1 µs per env-step (the single env under DummyVecEnv
takes ≈ 30 µs): 30× needs either fewer info entries (`info_keys`, measured 32× with none) or a target
measured against something other than the full per-env `info`.**
"""


def time_steps(venv: VecEnv, actions: np.ndarray, n_steps: int, path: str | None = None) -> float:
    """CPU seconds for ``n_steps`` steps of ``venv`` (after a reset), cycling through ``actions``; ``path``
    ``"native"``/``"numpy"`` sets ``MEMAGENT_NATIVE`` first (every episode build reads it)."""
    if path is not None:
        os.environ["MEMAGENT_NATIVE"] = "1" if path == "native" else "0"
    venv.seed(0)
    venv.reset()
    start = time.process_time()
    for i in range(n_steps):
        venv.step(actions[i % len(actions)])
    return time.process_time() - start


def measure(
    env_id: str, n_envs: int, n_steps: int, rounds: int, info_keys: tuple[str, ...] = INFO_KEYS
) -> tuple[float, float, float]:
    """Median env-steps per CPU second of (DummyVecEnv of gym.make, RegressionVecEnv) and median ratio."""
    spec = gym.spec(env_id)
    dummy = DummyVecEnv([lambda: gym.make(env_id) for _ in range(n_envs)])
    batched = RegressionVecEnv(n_envs, dict(spec.kwargs), info_keys=info_keys)
    dim = batched.layout.dim
    actions = np.random.default_rng(0).uniform(-1, 1, size=(16, n_envs, dim)).astype(np.float32)
    rates: dict[str, list[float]] = {"dummy": [], "batched": []}
    for _ in range(rounds):
        rates["dummy"].append(n_envs * n_steps / time_steps(dummy, actions, n_steps))
        rates["batched"].append(n_envs * n_steps / time_steps(batched, actions, n_steps))
    ratios = [b / d for b, d in zip(rates["batched"], rates["dummy"])]
    return statistics.median(rates["dummy"]), statistics.median(rates["batched"]), statistics.median(ratios)


def measure_paths(env_id: str, n_envs: int, n_steps: int, rounds: int) -> dict[tuple[str, str], float]:
    """Median env-steps per CPU second of DummyVecEnv and RegressionVecEnv on the numpy and the native
    path, the four timed in alternating rounds: ``{(side, path): steps/s}``."""
    spec = gym.spec(env_id)
    venvs = {
        "dummy": DummyVecEnv([lambda: gym.make(env_id) for _ in range(n_envs)]),
        "batched": RegressionVecEnv(n_envs, dict(spec.kwargs)),
    }
    dim = venvs["batched"].layout.dim
    actions = np.random.default_rng(0).uniform(-1, 1, size=(16, n_envs, dim)).astype(np.float32)
    rates: dict[tuple[str, str], list[float]] = {}
    saved = os.environ.get("MEMAGENT_NATIVE")
    try:
        for _ in range(rounds):
            for path in ("numpy", "native"):
                for side, venv in venvs.items():
                    seconds = time_steps(venv, actions, n_steps, path)
                    rates.setdefault((side, path), []).append(n_envs * n_steps / seconds)
    finally:
        if saved is None:
            os.environ.pop("MEMAGENT_NATIVE", None)
        else:
            os.environ["MEMAGENT_NATIVE"] = saved
    return {key: statistics.median(values) for key, values in rates.items()}


def paths_table(env_id: str, n_envs: int, n_steps: int, rounds: int) -> list[str]:
    """Markdown rows: each side on each path, and the speed-ups that matter."""
    r = measure_paths(env_id, n_envs, n_steps, rounds)
    rows = [
        f"Both sides on each episode path (`{env_id}`, {n_envs} envs, default infos; median of {rounds} "
        "alternating rounds, env-steps per CPU second):",
        "",
        "| path (`MEMAGENT_NATIVE`) | DummyVecEnv (single env) | RegressionVecEnv | speed-up |",
        "|---|---:|---:|---:|",
    ]
    for path, flag in (("numpy", "0"), ("native", "1")):
        dummy, batched = r[("dummy", path)], r[("batched", path)]
        rows.append(f"| {path} (`{flag}`) | {dummy:,.0f} | {batched:,.0f} | {batched / dummy:.1f}× |")
    rows += [
        "",
        f"Native over numpy: RegressionVecEnv {r[('batched', 'native')] / r[('batched', 'numpy')]:.2f}×, "
        f"the single env under DummyVecEnv {r[('dummy', 'native')] / r[('dummy', 'numpy')]:.2f}×; "
        f"the native RegressionVecEnv against the numpy single env: "
        f"{r[('batched', 'native')] / r[('dummy', 'numpy')]:.1f}×.",
    ]
    return rows


def load_revision(rev: str) -> tuple[ModuleType, ModuleType]:
    """``envs.vector`` and ``envs.regression`` as of git revision ``rev``, importable next to this tree's
    ``envs``: the package is extracted under a temporary directory as ``envs_<rev>`` with its own imports
    renamed. (Its module ``__init__`` registers the Gymnasium ids again; the warnings are silenced.)"""
    name = "envs_" + re.sub(r"\W", "_", rev)
    command = ["git", "-C", str(REPO), "archive", rev, "envs"]
    archive = subprocess.run(command, capture_output=True, check=True)
    root = Path(tempfile.mkdtemp(prefix="vec_env_against_"))
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(root, filter="data")
    (root / "envs").rename(root / name)
    for path in (root / name).rglob("*.py"):
        path.write_text(re.sub(r"\b(from|import) envs\b", rf"\1 {name}", path.read_text()))
    sys.path.insert(0, str(root))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(f"{name}.vector"), importlib.import_module(f"{name}.regression")


def against_table(rev: str, n_envs: int, rounds: int) -> list[str]:
    """Markdown rows: µs per VecEnv step of the batched env and of ``DummyVecEnv`` of the single env, with
    ``envs`` at ``rev`` and in this tree, the four timed in alternating rounds in this one process."""
    from envs.regression import NonStationaryRegression

    old_vector, old_regression = load_revision(rev)
    kwargs = dict(gym.spec("memagent/NonStationaryRegression-v0").kwargs)
    sides: dict[tuple[str, str], tuple[VecEnv, int]] = {
        ("RegressionVecEnv", rev): (old_vector.RegressionVecEnv(n_envs, kwargs), 2000),
        ("RegressionVecEnv", "this tree"): (RegressionVecEnv(n_envs, kwargs), 2000),
        ("DummyVecEnv of the single env", rev): (
            DummyVecEnv([lambda: old_regression.NonStationaryRegression(**kwargs)] * n_envs),
            400,
        ),
        ("DummyVecEnv of the single env", "this tree"): (
            DummyVecEnv([lambda: NonStationaryRegression(**kwargs)] * n_envs),
            400,
        ),
    }
    actions = np.random.default_rng(0).uniform(-1, 1, size=(16, n_envs, 64)).astype(np.float32)
    micros: dict[tuple[str, str], list[float]] = {key: [] for key in sides}
    for _ in range(rounds):
        for key, (venv, n_steps) in sides.items():
            micros[key].append(1e6 * time_steps(venv, actions, n_steps) / n_steps)
    rows = [
        f"`envs` at `{rev}` against this tree (`memagent/NonStationaryRegression-v0`, {n_envs} envs, "
        f"default path; median of {rounds} alternating rounds, CPU µs per VecEnv step; load "
        f"{os.getloadavg()[0]:.1f}):",
        "",
        f"| VecEnv | `{rev}` µs/step | this tree µs/step | time ratio this tree / `{rev}` |",
        "|---|---:|---:|---:|",
    ]
    for side in ("RegressionVecEnv", "DummyVecEnv of the single env"):
        old, new = micros[(side, rev)], micros[(side, "this tree")]
        ratio = statistics.median(n / o for n, o in zip(new, old))
        rows.append(f"| {side} | {statistics.median(old):.1f} | {statistics.median(new):.1f} | {ratio:.3f} |")
    speedups = [  # the measure at each revision, median of the per-round ratios
        statistics.median(
            d / b
            for d, b in zip(micros[("DummyVecEnv of the single env", r)], micros[("RegressionVecEnv", r)])
        )
        for r in (rev, "this tree")
    ]
    rows.append(f"| speed-up (DummyVecEnv / RegressionVecEnv) | {speedups[0]:.1f}× | {speedups[1]:.1f}× | |")
    return rows


def accuracy(n_pairs: int = 500_000, seed: int = 7) -> list[str]:
    """Markdown rows: max errors of the native kernel's Gaussians and targets against float64 evaluations
    of the same formulas on the same float32 uniforms / inputs, and of the numpy path's Gaussians."""
    from envs import native
    from envs.regression import NonStationaryRegression, gaussians
    from envs.tasks import get_task

    if native.load() is None:
        return ["(the native kernel is unavailable: no C compiler, or MEMAGENT_NATIVE=0)"]
    words = np.random.default_rng(seed).integers(0, 2**64, size=(1, n_pairs), dtype=np.uint64)
    halves = words.view(np.uint32)
    u1 = (halves[:, :n_pairs].astype(np.float32) + np.float32(0.5)) * np.float32(2.0**-32)
    u2 = halves[:, n_pairs:].astype(np.float32) * np.float32(2.0**-32)
    radius = np.sqrt(-2.0 * np.log(u1.astype(np.float64)))
    angle = 2.0 * np.pi * u2.astype(np.float64)
    ref = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    z_native, z_numpy = native.gaussians(words, 2 * n_pairs), gaussians(words, 2 * n_pairs)
    rows = [
        f"Max errors against float64 ({2 * n_pairs:,} Gaussians, seed {seed}; targets on 2,001 × 64 inputs):",
        "",
        "| quantity | max abs error | max error / max(1, abs(reference)) |",
        "|---|---:|---:|",
    ]
    for name, z in (("Gaussians, native kernel", z_native), ("Gaussians, numpy path", z_numpy)):
        err = np.abs(z - ref)
        rows.append(f"| {name} | {err.max():.2e} | {(err / np.maximum(np.abs(ref), 1.0)).max():.2e} |")
    rows.append(f"| Gaussians, native − numpy | {np.abs(z_native - z_numpy).max():.2e} | |")
    saved = os.environ.get("MEMAGENT_NATIVE")
    os.environ["MEMAGENT_NATIVE"] = "1"
    try:
        for task in ("sin_mean", "half_cos_mean", "tanh_shift_2", "tanh_shift_3", "tanh_shift_-1.5"):
            env = NonStationaryRegression(dim=64, tasks=[task], schedule="none", episode_length=2000)
            env.reset(seed=1)
            xs, ys = env._plan.xs[:, 0].astype(np.float64), env._plan.ys[:, 0]
            target = get_task(task).fn(xs)
            err = np.abs(ys - target)
            relative = (err / np.maximum(np.abs(target), 1.0)).max()
            rows.append(f"| targets `{task}`, native | {err.max():.2e} | {relative:.2e} |")
    finally:
        if saved is None:
            os.environ.pop("MEMAGENT_NATIVE", None)
        else:
            os.environ["MEMAGENT_NATIVE"] = saved
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one configuration, short rounds")
    parser.add_argument("--accuracy", action="store_true", help="only the native kernel's errors")
    parser.add_argument("--against", metavar="REV", help="only: envs at git revision REV vs this tree")
    args = parser.parse_args()
    if args.accuracy:
        print("\n".join(accuracy()))
        return
    if args.against:
        print("\n".join(against_table(args.against, 64, 3 if args.quick else 15)))
        return
    v0 = "memagent/NonStationaryRegression-v0"
    no_target = ("task_id", "switched")
    if args.quick:
        configs = [(v0, 64, INFO_KEYS), (v0, 64, no_target)]
        episodes, rounds = 1, 1
    else:
        configs = [
            (v0, 16, INFO_KEYS),
            (v0, 64, INFO_KEYS),
            (v0, 256, INFO_KEYS),
            ("memagent/NonStationaryRegressionReward-v0", 64, INFO_KEYS),
            ("memagent/NonStationaryRegressionNoisy-v0", 64, INFO_KEYS),
            ("memagent/NonStationaryRegressionOracle-v0", 64, INFO_KEYS),
            (v0, 64, no_target),
            (v0, 64, ()),
        ]
        episodes, rounds = 2, 5
    load_start = os.getloadavg()[0]
    rows = [
        "| env id | n_envs | info keys | DummyVecEnv steps/s | RegressionVecEnv steps/s | speed-up |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for env_id, n_envs, info_keys in configs:
        n_steps = episodes * gym.spec(env_id).kwargs.get("episode_length", 200)
        dummy, batched, ratio = measure(env_id, n_envs, n_steps, rounds, info_keys)
        keys = "all (default)" if info_keys == INFO_KEYS else f"`{info_keys}`"
        rows.append(f"| `{env_id}` | {n_envs} | {keys} | {dummy:,.0f} | {batched:,.0f} | {ratio:.1f}× |")
        print(rows[-1], flush=True)
    header = (
        f"Env-steps per CPU second (median of {rounds} alternating rounds of {episodes} episode(s), "
        "autoresets included; d = 64, 200 steps/episode; speed-up = median per-round ratio). "
        f"Python {platform.python_version()}, numpy {np.__version__}, "
        f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}; load average "
        f"{load_start:.1f} at the start, {os.getloadavg()[0]:.1f} after the first table (other jobs share "
        "the CPUs: compare ratios, not absolute rates, across runs).\n"
        f"Command: `.venv/bin/python benchmarks/vec_env.py{' --quick' if args.quick else ''}`\n"
    )
    n_steps = episodes * 200
    paths = paths_table(v0, 64, n_steps, rounds)
    print("\n".join(paths), flush=True)
    table = header + "\n" + "\n".join(rows) + "\n\n" + "\n".join(paths) + "\n"
    if not args.quick:
        table += "\n" + "\n".join(accuracy()) + "\n"
    print()
    print(table)
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(table + NOTES)


if __name__ == "__main__":
    main()

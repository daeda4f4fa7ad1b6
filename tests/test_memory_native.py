"""The native CPU kernel (memagent.memory.native): the same values and gradients as the torch path."""

from __future__ import annotations

import itertools
import os

import pytest
import torch

from memagent import cbuild
from memagent.memory import DNC, MemoryConfig, fused, interface_size, native
from memagent.memory.access import MemoryAccess

if cbuild.find_compiler() is None:  # pragma: no cover - only where no C compiler exists
    pytest.skip("no C compiler (cc, gcc, clang): the native kernel cannot be built", allow_module_level=True)

F64 = torch.float64


def test_kernel_builds_and_is_available():
    assert native.enabled() and native.available()


def random_step(cfg: MemoryConfig, batch: int = 3, seed: int = 0, dtype=F64, case: str = "random"):
    """A raw interface vector and a non-trivial previous state (weights on the simplex, usage and link
    in [0, 1], zero link diagonal), or an edge case."""
    g = torch.Generator().manual_seed(seed)
    n, w, r = cfg.memory_size, cfg.word_size, cfg.num_read_heads
    state = MemoryAccess(cfg).initial_state(batch, dtype=dtype)
    vector = torch.randn(batch, interface_size(cfg), generator=g, dtype=dtype) * 2
    if case == "zero":  # the all-zero initial state
        return vector, tuple(state[:6])
    usage = torch.rand(batch, n, generator=g, dtype=dtype)
    if case == "full":  # usage near 1
        usage = 1.0 - 1e-7 * torch.rand(batch, n, generator=g, dtype=dtype)
    elif case == "ties":  # equal usages: the stable sort keeps index order
        usage = torch.full((batch, n), 0.5, dtype=dtype)
        usage[:, ::2] = 0.25
    state = state._replace(
        memory=torch.randn(batch, n, w, generator=g, dtype=dtype),
        usage=usage,
        read_weights=torch.softmax(torch.randn(batch, r, n, generator=g, dtype=dtype) * 2, -1),
        write_weights=torch.softmax(torch.randn(batch, 1, n, generator=g, dtype=dtype), -1) * 0.8,
    )
    if cfg.temporal_links:
        link = torch.rand(batch, 1, n, n, generator=g, dtype=dtype) / n
        link.diagonal(dim1=-2, dim2=-1).zero_()
        precedence = torch.softmax(torch.randn(batch, 1, n, generator=g, dtype=dtype), -1) * 0.9
        state = state._replace(link=link, precedence=precedence)
    return vector, tuple(state[:6])


CONFIGS = [
    dict(allocation=a, temporal_links=links, usage_decay=d)
    for a, links, d in itertools.product([True, False], [True, False], [1.0, 0.9])
]


def step_values_and_grads(cfg, vector, state, use_native: bool, monkeypatch, seed: int = 5):
    monkeypatch.setenv("MEMAGENT_NATIVE", "1" if use_native else "0")
    inputs = [t.clone().requires_grad_(t.numel() > 0) for t in (vector, *state)]
    out = fused._AccessStep.apply(*inputs, cfg)[: 7 if cfg.temporal_links else 5]
    g = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in out)
    grads = torch.autograd.grad(loss, [t for t in inputs if t.requires_grad])
    return [o.detach() for o in out], grads


@pytest.mark.parametrize("options", CONFIGS, ids=str)
@pytest.mark.parametrize("case", ["random", "zero", "full", "ties"])
def test_native_step_equals_torch_step_values_and_gradients(options, case, monkeypatch):
    cfg = MemoryConfig(memory_size=7, word_size=5, num_read_heads=3, **options)
    vector, state = random_step(cfg, case=case)
    values_n, grads_n = step_values_and_grads(cfg, vector, state, True, monkeypatch)
    values_t, grads_t = step_values_and_grads(cfg, vector, state, False, monkeypatch)
    for a, e in zip(values_n, values_t):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-13)
    for a, e in zip(grads_n, grads_t):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize(
    "n, w, r", [(1, 1, 1), (2, 3, 1), (3, 2, 2), (16, 8, 4), (9, 4, 5), (6, 3, 7), (5, 2, 12)]
)
def test_native_step_small_and_odd_sizes(n, w, r, monkeypatch):
    """N = 1, R = 1, R beyond the specialised head counts, odd widths."""
    cfg = MemoryConfig(memory_size=n, word_size=w, num_read_heads=r)
    vector, state = random_step(cfg, batch=2, seed=n + w + r)
    values_n, grads_n = step_values_and_grads(cfg, vector, state, True, monkeypatch)
    values_t, grads_t = step_values_and_grads(cfg, vector, state, False, monkeypatch)
    for a, e in zip([*values_n, *grads_n], [*values_t, *grads_t]):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("r", [1, 3, 8])
@pytest.mark.parametrize("case", ["random", "ties"])
def test_native_step_blocked_link_pass(r, case, monkeypatch):
    """N a multiple of 8 (the blocked link passes, 3 column blocks of 8 doubles) in float64, every specialised
    head count's edge (1, 8) and an odd one."""
    cfg = MemoryConfig(memory_size=24, word_size=6, num_read_heads=r)
    vector, state = random_step(cfg, batch=2, seed=r, case=case)
    values_n, grads_n = step_values_and_grads(cfg, vector, state, True, monkeypatch)
    values_t, grads_t = step_values_and_grads(cfg, vector, state, False, monkeypatch)
    for a, e in zip([*values_n, *grads_n], [*values_t, *grads_t]):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-11)


def test_native_step_float32_matches_torch(monkeypatch):
    cfg = MemoryConfig(memory_size=32, word_size=16, num_read_heads=4)
    vector, state = random_step(cfg, batch=4, dtype=torch.float32)
    values_n, grads_n = step_values_and_grads(cfg, vector, state, True, monkeypatch)
    values_t, grads_t = step_values_and_grads(cfg, vector, state, False, monkeypatch)
    for a, e in zip([*values_n, *grads_n], [*values_t, *grads_t]):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "options", [{}, {"temporal_links": False}, {"allocation": False, "usage_decay": 0.9}], ids=str
)
def test_gradcheck_through_the_native_step(options, monkeypatch):
    monkeypatch.setenv("MEMAGENT_NATIVE", "1")
    cfg = MemoryConfig(memory_size=5, word_size=3, num_read_heads=2, **options)
    vector, state = random_step(cfg, batch=2, seed=3)
    inputs = [t.clone().requires_grad_() for t in (vector, *state)]

    def f(*args):
        return fused._AccessStep.apply(*args, cfg)[: 7 if cfg.temporal_links else 5]

    assert torch.autograd.gradcheck(f, inputs)


def dnc_run(model, x, starts, use_native: bool, monkeypatch):
    monkeypatch.setenv("MEMAGENT_NATIVE", "1" if use_native else "0")
    model.zero_grad()
    y, state = model(x, episode_starts=starts)
    (y.pow(2).sum() + sum((f * (k + 1)).sin().sum() for k, f in enumerate(state))).backward()
    return y.detach(), [f.detach() for f in state], [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("options", CONFIGS[::2] + [dict(memory_size=1)], ids=str)
@pytest.mark.parametrize("keep_aux", [True, False], ids=["keep-aux", "recompute"])
def test_native_dnc_sequence_equals_torch_path(options, keep_aux, monkeypatch):
    """The whole recurrence on the native kernel (one autograd node, memory rebuilt every second
    step, the step's norms / similarities / order kept or recomputed) equals the per-step torch path:
    outputs, final state and every parameter's gradient, with resets inside the sequence."""
    from memagent.memory.native import sequence

    monkeypatch.setattr(sequence, "KEEP_AUX", keep_aux)
    cfg = MemoryConfig(**{"memory_size": 6, "word_size": 4, "num_read_heads": 2, **options})
    torch.manual_seed(0)
    model = DNC(3, 8, 2, cfg).double()
    x = torch.randn(3, 7, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    starts = torch.zeros(3, 7, dtype=torch.bool)
    starts[1, 4] = True
    starts[2, 3] = True
    native_run = dnc_run(model, x, starts, True, monkeypatch)
    torch_run = dnc_run(model, x, starts, False, monkeypatch)
    torch.testing.assert_close(native_run[0], torch_run[0], rtol=1e-12, atol=1e-13)
    for a, e in zip(native_run[1], torch_run[1]):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-13)
    for a, e in zip(native_run[2], torch_run[2]):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-11)


def test_native_sequence_is_used_and_fallback_is_switchable(monkeypatch):
    cfg = MemoryConfig(memory_size=4, word_size=3, num_read_heads=1)
    model = DNC(2, 5, 1, cfg)
    x = torch.randn(2, 3, 2)
    monkeypatch.setenv("MEMAGENT_NATIVE", "1")
    y, state = model(x)
    assert type(state.memory.grad_fn).__name__ == "_DncSequenceBackward"
    monkeypatch.setenv("MEMAGENT_NATIVE", "0")
    assert not native.available() and not native.enabled()
    y0, state0 = model(x)
    assert type(state0.memory.grad_fn).__name__ != "_DncSequenceBackward"
    torch.testing.assert_close(y, y0, rtol=1e-5, atol=1e-6)


def test_double_backward_through_the_native_dnc(monkeypatch):
    """create_graph=True (second-order MAML with autograd) recomputes on the differentiable path."""
    cfg = MemoryConfig(memory_size=5, word_size=3, num_read_heads=2)
    torch.manual_seed(0)
    model = DNC(3, 6, 2, cfg).double()
    x = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    results = []
    for flag in ("1", "0"):
        monkeypatch.setenv("MEMAGENT_NATIVE", flag)
        params = list(model.parameters())
        loss = model(x)[0].pow(2).sum()
        grads = torch.autograd.grad(loss, params, create_graph=True)
        second = torch.autograd.grad(sum(g.pow(2).sum() for g in grads), params)
        results.append([g.detach() for g in grads] + list(second))
    for a, e in zip(*results):
        torch.testing.assert_close(a, e, rtol=1e-8, atol=1e-10)


def test_torch_func_grad_with_native_enabled(monkeypatch):
    from torch.func import functional_call, grad

    monkeypatch.setenv("MEMAGENT_NATIVE", "1")
    cfg = MemoryConfig(memory_size=5, word_size=3, num_read_heads=2)
    torch.manual_seed(0)
    model = DNC(3, 6, 2, cfg).double()
    x = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    params = {k: v.detach() for k, v in model.named_parameters()}
    g = grad(lambda p: functional_call(model, p, (x,))[0].pow(2).sum())(params)
    model(x)[0].pow(2).sum().backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(g[name], p.grad, rtol=1e-10, atol=1e-12)


def test_no_grad_native_forward_equals_training_forward(monkeypatch):
    monkeypatch.setenv("MEMAGENT_NATIVE", "1")
    cfg = MemoryConfig(memory_size=6, word_size=4, num_read_heads=2)
    model = DNC(3, 8, 2, cfg)
    x = torch.randn(2, 5, 3)
    y, state = model(x)
    with torch.no_grad():
        y2, state2 = model(x)
    torch.testing.assert_close(y2, y.detach(), rtol=0, atol=0)
    for a, e in zip(state2, state):
        torch.testing.assert_close(a, e.detach(), rtol=0, atol=0)


def test_build_is_cached_per_source_and_atomic(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMAGENT_CACHE_DIR", str(tmp_path))
    first = cbuild.compile_library(native._SOURCE, native._FLAGS)
    assert first.parent == tmp_path and first.exists()
    assert cbuild.compile_library(native._SOURCE, native._FLAGS) == first  # cached: no rebuild
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary files left


def test_portable_build_without_march_native(tmp_path, monkeypatch):
    """The fallback build (no -march=native; also the lane shuffles older GCC needs, forced by
    MEMAGENT_GCC_SHUFFLE) compiles and computes the same step, values and gradients, at sizes that take
    the blocked paths (N, W multiples of 16) and at sizes that do not."""
    import ctypes

    monkeypatch.setenv("MEMAGENT_CACHE_DIR", str(tmp_path))
    portable = cbuild.portable_flags(native._FLAGS)
    assert "-march=native" in native._FLAGS and "-march=native" not in portable
    library = cbuild.compile_library(native._SOURCE, [*portable, "-DMEMAGENT_GCC_SHUFFLE"])
    kernels = native._bind(ctypes.CDLL(str(library)))
    for n, w, r in [(16, 16, 3), (7, 5, 3)]:
        cfg = MemoryConfig(memory_size=n, word_size=w, num_read_heads=r)
        vector, state = random_step(cfg)
        values_e, grads_e = step_values_and_grads(cfg, vector, state, True, monkeypatch)
        with monkeypatch.context() as m:
            m.setitem(native._STATE, "functions", kernels)
            values, grads = step_values_and_grads(cfg, vector, state, True, m)
        for a, e in zip([*values, *grads], [*values_e, *grads_e]):
            torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-13)


# ---- the batch-loop thread pool


@pytest.fixture
def pool(monkeypatch):
    """The kernel library with every call allowed onto the pool (grain 0: even tiny batches are split;
    no back-off on a busy machine); restored afterwards."""
    library = native._pool()
    grain = library.pool_get_grain()
    library.pool_set_grain(0.0)
    library.pool_set_adaptive(0)
    yield library
    library.pool_set_grain(grain)
    library.pool_set_adaptive(1)


def dnc_case(dtype, batch: int = 7, seed: int = 0):
    """A DNC (links and allocation on; N a multiple of 8: the blocked link pass), an input and resets."""
    cfg = MemoryConfig(memory_size=16, word_size=6, num_read_heads=3)
    torch.manual_seed(seed)
    model = DNC(4, 10, 3, cfg).to(dtype)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, 6, 4, generator=g, dtype=dtype)
    starts = torch.zeros(batch, 6, dtype=torch.bool)
    starts[1, 3] = starts[batch - 1, 2] = True
    return model, x, starts


def dnc_run_threads(case, threads: int | None = None) -> list[torch.Tensor]:
    """Outputs, final state and parameter / input gradients of a native run of ``case`` (the kernel's
    thread count from ``MEMAGENT_NATIVE_THREADS``, set here when ``threads`` is given)."""
    if threads is not None:
        os.environ["MEMAGENT_NATIVE_THREADS"] = str(threads)
    model, x, starts = case
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    y, state = model(x, episode_starts=starts)
    (y.pow(2).sum() + sum((f * (k + 1)).sin().sum() for k, f in enumerate(state))).backward()
    return [y.detach(), *(f.detach() for f in state), x.grad, *(p.grad for p in model.parameters())]


def dnc_results(threads: int, dtype, monkeypatch) -> list[torch.Tensor]:
    monkeypatch.setenv("MEMAGENT_NATIVE", "1")
    monkeypatch.setenv("MEMAGENT_NATIVE_THREADS", str(threads))
    return dnc_run_threads(dnc_case(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["f32", "f64"])
def test_threads_give_bitwise_identical_values_and_gradients(dtype, pool, monkeypatch):
    """Batch 7 split over 2, 3 and 4 threads (uneven chunks): the forward outputs, final state and all
    gradients equal the one-thread run bit for bit, and the calls did run on the pool."""
    reference = dnc_results(1, dtype, monkeypatch)
    for threads in (2, 3, 4):
        calls = pool.pool_parallel_calls()
        result = dnc_results(threads, dtype, monkeypatch)
        assert pool.pool_parallel_calls() > calls  # the pool ran them
        assert pool.pool_workers() >= threads - 1
        for a, e in zip(result, reference, strict=True):
            assert torch.equal(a, e)


def test_threads_per_step_access_calls_are_bitwise_identical(pool, monkeypatch):
    """The per-step kernel entry points (access forward and backward) split over threads too."""
    cfg = MemoryConfig(memory_size=24, word_size=5, num_read_heads=2)
    vector, state = random_step(cfg, batch=5, seed=4, dtype=torch.float32)
    results = []
    for threads in ("1", "3"):
        monkeypatch.setenv("MEMAGENT_NATIVE_THREADS", threads)
        results.append(step_values_and_grads(cfg, vector, state, True, monkeypatch))
    for a, e in zip([*results[0][0], *results[0][1]], [*results[1][0], *results[1][1]], strict=True):
        assert torch.equal(a, e)


def test_num_threads_follows_torch_and_the_environment(monkeypatch):
    monkeypatch.delenv("MEMAGENT_NATIVE_THREADS", raising=False)
    assert native.num_threads() == torch.get_num_threads()
    monkeypatch.setenv("MEMAGENT_NATIVE_THREADS", " 3 ")
    assert native.num_threads() == 3
    for bad in ("0", "-2", "two", "1.5"):
        monkeypatch.setenv("MEMAGENT_NATIVE_THREADS", bad)
        with pytest.raises(ValueError, match=f"MEMAGENT_NATIVE_THREADS='{bad}'.*positive integer"):
            native.num_threads()


def _child_run(queue) -> None:
    """In a forked child: a native DNC run on the pool (the parent's workers do not exist here)."""
    try:
        workers = native._pool().pool_workers()  # the parent's are gone: 0 until the first call
        result = dnc_run_threads(dnc_case(F64), 3)
        queue.put((workers, native._pool().pool_workers(), [t.numpy() for t in result]))
    except BaseException as error:  # noqa: BLE001 - report anything to the parent
        queue.put(repr(error))


def test_pool_works_in_a_forked_child(pool, monkeypatch):
    """fork() after the pool started (SubprocVecEnv, multiprocessing 'fork'): the child builds its own
    workers and gets the same numbers; no hang."""
    import multiprocessing

    reference = dnc_results(3, F64, monkeypatch)  # the parent's pool has workers now
    assert pool.pool_workers() >= 2
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_run, args=(queue,))
    child.start()
    try:
        result = queue.get(timeout=60)
    finally:
        child.join(timeout=60)
        if child.is_alive():  # pragma: no cover - only on a hang
            child.kill()
    assert not isinstance(result, str), result
    assert child.exitcode == 0
    workers_at_fork, workers_after, result = result
    assert workers_at_fork == 0 and workers_after >= 2
    for a, e in zip(result, reference, strict=True):
        assert torch.equal(torch.from_numpy(a), e)


def test_two_python_threads_share_the_kernel(pool, monkeypatch):
    """Two Python threads calling at once (one gets the pool, the other runs inline while it is busy):
    both get the single-threaded numbers."""
    import copy
    import threading

    monkeypatch.setenv("MEMAGENT_NATIVE", "1")
    reference = dnc_results(1, torch.float32, monkeypatch)
    monkeypatch.setenv("MEMAGENT_NATIVE_THREADS", "2")
    cases = [copy.deepcopy(dnc_case(torch.float32)) for _ in range(2)]  # a model per thread (its grads)
    results: list[list[torch.Tensor]] = []
    errors: list[BaseException] = []

    def work(case) -> None:
        try:
            for _ in range(3):
                results.append(dnc_run_threads(case))
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=work, args=(case,)) for case in cases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and len(results) == 6
    for result in results:
        for a, e in zip(result, reference, strict=True):
            assert torch.equal(a, e)


def test_dispatch_reports_a_cost():
    """The pool's dispatch timer runs (its number is a benchmark, not asserted)."""
    library = native._pool()
    assert library.pool_dispatch_ns(2, 16, 10, 0, 0) > 0
    assert library.pool_dispatch_ns(2, 4, 3, 0, 1000) >= 2000  # two samples of 1 us on each thread


def test_bad_spin_setting_is_reported(monkeypatch, caplog):
    monkeypatch.setenv("MEMAGENT_NATIVE_SPIN_US", "fast")
    native._check_spin_setting()  # what load() checks before the library (which reads it) is loaded
    assert "MEMAGENT_NATIVE_SPIN_US='fast'" in caplog.text


def test_torch_runs_one_thread_inside_the_loops_and_gets_its_threads_back(pool, monkeypatch):
    """With several kernel threads the step loops run torch's small ops on one thread; torch's thread
    count is back afterwards (also when the loop fails), and the numbers match the loop on torch's
    threads."""
    from memagent.memory.native import sequence

    if not sequence._torch_threads_adjustable():  # pragma: no cover - torch's native backend
        pytest.skip("torch's parallel backend fixes its thread count")
    seen: list[int] = []
    lstm_forward = native.load()[F64].lstm_forward

    def spy(*args):
        seen.append(torch.get_num_threads())
        return lstm_forward(*args)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setitem(
            native._STATE, "functions", {**native.load(), F64: native.load()[F64]._replace(lstm_forward=spy)}
        )
        serial = dnc_results(2, F64, monkeypatch)
        assert torch.get_num_threads() == 2 and set(seen) == {1}
        monkeypatch.setattr(sequence, "SERIAL_TORCH_IN_LOOP", False)
        seen.clear()
        parallel = dnc_results(2, F64, monkeypatch)
        assert set(seen) == {2}
        for a, e in zip(serial, parallel, strict=True):
            torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-13)
        monkeypatch.setattr(sequence, "SERIAL_TORCH_IN_LOOP", True)

        def fail(*args):
            raise RuntimeError("kernel failed")

        monkeypatch.setitem(
            native._STATE, "functions", {**native.load(), F64: native.load()[F64]._replace(lstm_forward=fail)}
        )
        with pytest.raises(RuntimeError, match="kernel failed"):
            dnc_results(2, F64, monkeypatch)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_small_calls_and_single_samples_run_inline(monkeypatch):
    """Calls under the pool's grain (a few microseconds of work) and batches of one never go to the
    pool, whatever the thread count."""
    library = native._pool()
    monkeypatch.setenv("MEMAGENT_NATIVE", "1")
    monkeypatch.setenv("MEMAGENT_NATIVE_THREADS", "4")
    calls = library.pool_parallel_calls()
    tiny = DNC(2, 5, 1, MemoryConfig(memory_size=4, word_size=3, num_read_heads=1))
    tiny(torch.randn(3, 4, 2))[0].sum().backward()
    single = DNC(2, 5, 1, MemoryConfig(memory_size=64, word_size=16, num_read_heads=2))
    single(torch.randn(1, 4, 2))[0].sum().backward()
    assert library.pool_parallel_calls() == calls

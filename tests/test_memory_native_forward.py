"""The native kernel's forward access step (memagent/memory/native/access_kernel.c): its specialised paths
(the tiled link forward for N a multiple of 8 and R <= 8, the blocked reads and row dots) against the torch
path in float64, for the sizes that take them and for sizes that do not."""

from __future__ import annotations

import pytest
import torch

from memagent import cbuild
from memagent.memory import DNC, MemoryConfig, fused, native

if cbuild.find_compiler() is None:  # pragma: no cover - only where no C compiler exists
    pytest.skip("no C compiler (cc, gcc, clang): the native kernel cannot be built", allow_module_level=True)

from test_memory_native import random_step  # noqa: E402 - after the skip (it builds nothing itself)

F64 = torch.float64


def forward_both(cfg, vector, state, monkeypatch):
    """The step's outputs from the kernel (native.access_forward) and from the torch path."""
    monkeypatch.setenv("MEMAGENT_NATIVE", "1")
    assert native.available()
    got = native.access_forward(cfg, vector, *state)
    monkeypatch.setenv("MEMAGENT_NATIVE", "0")
    expected = fused._AccessStep.apply(vector, *state, cfg)[: len(got)]
    monkeypatch.setenv("MEMAGENT_NATIVE", "1")
    return got, expected


def assert_outputs_close(got, expected, rtol=1e-12, atol=1e-13):
    assert len(got) == len(expected)
    for a, e in zip(got, expected):
        torch.testing.assert_close(a, e.reshape(a.shape), rtol=rtol, atol=atol)


@pytest.mark.parametrize("r", range(1, 9))
def test_tiled_link_forward_every_head_count(r, monkeypatch):
    """N a multiple of 8 (the tiled link pass: 8, 4 or 2 rows per pass by R, 4 column blocks, the
    diagonal in every block), every specialised head count."""
    cfg = MemoryConfig(memory_size=32, word_size=12, num_read_heads=r)
    vector, state = random_step(cfg, batch=2, seed=r)
    assert_outputs_close(*forward_both(cfg, vector, state, monkeypatch))


@pytest.mark.parametrize(
    "n, w, r",
    [(8, 8, 4), (24, 16, 3), (40, 20, 8), (16, 64, 4), (12, 10, 4), (9, 7, 2), (30, 5, 1), (16, 9, 9)]
    + [(13, 8, 12), (264, 136, 8)]  # the last: scratch beyond the kernel's stack buffers
    + [(21, 16, 3), (19, 24, 6), (56, 8, 5)],  # W a multiple of 8, N not (the last rows); R = 5
)
def test_forward_blocked_and_plain_sizes(n, w, r, monkeypatch):
    """Sizes that take the blocked paths (N a multiple of 8, R <= 8, W a multiple of 8) and sizes that do
    not (N or W not a multiple of 8, R > 8), with and without links and allocation."""
    for options in ({}, {"temporal_links": False}, {"allocation": False, "usage_decay": 0.9}):
        cfg = MemoryConfig(memory_size=n, word_size=w, num_read_heads=r, **options)
        vector, state = random_step(cfg, batch=3, seed=n * w + r)
        assert_outputs_close(*forward_both(cfg, vector, state, monkeypatch))


@pytest.mark.parametrize("n", [16, 24, 40, 56, 21])
def test_forward_usage_ties_keep_the_stable_order(n, monkeypatch):
    """Equal usages inside and across the rank count's passes over 32, 16 and 8 slots (56 = 32 + 16 + 8),
    and N not a multiple of 8."""
    cfg = MemoryConfig(memory_size=n, word_size=8, num_read_heads=4)
    vector, state = random_step(cfg, batch=2, seed=7, case="ties")
    assert_outputs_close(*forward_both(cfg, vector, state, monkeypatch))


def test_forward_float32_benchmark_size(monkeypatch):
    """The benchmark's size (N=128, W=64, R=4) in float32 against the torch path in float64."""
    cfg = MemoryConfig(memory_size=128, word_size=64, num_read_heads=4)
    vector, state = random_step(cfg, batch=2, seed=11)
    monkeypatch.setenv("MEMAGENT_NATIVE", "1")
    got = native.access_forward(cfg, vector.float(), *(t.float() for t in state))
    monkeypatch.setenv("MEMAGENT_NATIVE", "0")
    expected = fused._AccessStep.apply(vector, *state, cfg)[: len(got)]
    for a, e in zip(got, expected):
        torch.testing.assert_close(a.double(), e.reshape(a.shape), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("keep_aux", [True, False], ids=["keep-aux", "recompute"])
def test_dnc_sequence_at_blocked_sizes(keep_aux, monkeypatch):
    """The whole recurrence at sizes that take the blocked forward paths: outputs, final state and
    gradients equal the torch path's (the backward loads what the forward kept, or recomputes it)."""
    from memagent.memory.native import sequence

    monkeypatch.setattr(sequence, "KEEP_AUX", keep_aux)
    cfg = MemoryConfig(memory_size=16, word_size=16, num_read_heads=4)
    torch.manual_seed(0)
    model = DNC(3, 8, 2, cfg).double()
    x = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    # a random start (from the zero state, never-written slots keep usages equal up to rounding, and the
    # two paths may order such near ties differently)
    _, (memory, usage, link, precedence, rw, ww) = random_step(cfg, batch=2, seed=3)
    start = model.initial_state(2)._replace(
        memory=memory, usage=usage, link=link, precedence=precedence, read_weights=rw, write_weights=ww
    )
    runs = []
    for flag in ("1", "0"):
        monkeypatch.setenv("MEMAGENT_NATIVE", flag)
        model.zero_grad()
        y, state = model(x, start)
        (y.pow(2).sum() + sum((f * (k + 1)).sin().sum() for k, f in enumerate(state))).backward()
        runs.append((y.detach(), [f.detach() for f in state], [p.grad.clone() for p in model.parameters()]))
    (y_n, s_n, g_n), (y_t, s_t, g_t) = runs
    torch.testing.assert_close(y_n, y_t, rtol=1e-12, atol=1e-13)
    for a, e in zip(s_n, s_t):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-13)
    for a, e in zip(g_n, g_t):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_allocation_product_through_the_subnormal_range(dtype, monkeypatch):
    """The allocation's running product of sorted usages falls below the smallest normal number (the
    kernel flushes it to zero there): the step still equals the torch path (float64) to rounding."""
    n = 192 if dtype == torch.float32 else 1024  # the product: ~1e-53 (float32), ~1e-365 (float64)
    cfg = MemoryConfig(memory_size=n, word_size=8, num_read_heads=1)
    vector, state = random_step(cfg, batch=1, seed=5)
    usage = torch.full_like(state[1], 0.5)
    usage[:, : n // 4] = 0.3
    state = (state[0], usage, *state[2:])
    monkeypatch.setenv("MEMAGENT_NATIVE", "1")
    got = native.access_forward(cfg, vector.to(dtype), *(t.to(dtype) for t in state))
    assert all(torch.isfinite(t).all() for t in got)
    monkeypatch.setenv("MEMAGENT_NATIVE", "0")
    expected = fused._AccessStep.apply(vector, *state, cfg)[: len(got)]
    tol = dict(rtol=1e-4, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-13)
    for a, e in zip(got, expected):
        torch.testing.assert_close(a.double(), e.reshape(a.shape), **tol)


@pytest.mark.parametrize(
    "n, case", [(20, "random"), (128, "random"), (64, "zero"), (64, "ties"), (22, "random")]
)
def test_float32_allocation_in_four_chains(n, case, monkeypatch):
    """float32 with N a multiple of 4: the allocation's product runs in double as four chains over quarters
    of the free list, scaled by the quarters before (N=22: the sequential product). A zero state makes every
    sorted usage eps (the product ~1e-6^j: quarters' products far below float's range, flushed to zero);
    ties: equal usages. Against the torch path in float64."""
    cfg = MemoryConfig(memory_size=n, word_size=8, num_read_heads=2)
    vector, state = random_step(cfg, batch=3, seed=n, case=case)
    monkeypatch.setenv("MEMAGENT_NATIVE", "1")
    got = native.access_forward(cfg, vector.float(), *(t.float() for t in state))
    assert all(torch.isfinite(t).all() for t in got)
    monkeypatch.setenv("MEMAGENT_NATIVE", "0")
    expected = fused._AccessStep.apply(vector, *state, cfg)[: len(got)]
    for a, e in zip(got, expected):
        torch.testing.assert_close(a.double(), e.reshape(a.shape), rtol=2e-5, atol=2e-6)

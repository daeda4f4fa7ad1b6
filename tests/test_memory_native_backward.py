"""The native access backward's blocked paths against the torch path: the 64-byte-vector link and memory
passes (N, W multiples of 16 float / 8 double lanes), the blocked d reads -> d w^r products (N and W
multiples of 8), and sizes that take none of them."""

from __future__ import annotations

import pytest
import torch

from memagent import cbuild
from memagent.memory import DNC, MemoryConfig, fused

if cbuild.find_compiler() is None:  # pragma: no cover - only where no C compiler exists
    pytest.skip("no C compiler (cc, gcc, clang): the native kernel cannot be built", allow_module_level=True)

from test_memory_native import dnc_run, random_step, step_values_and_grads  # noqa: E402

F64 = torch.float64


@pytest.mark.parametrize(
    "n, w, r",
    [
        (24, 16, 3),  # link and memory in 64-byte blocks, blocked read dots
        (32, 8, 8),  # the largest specialised head count
        (16, 8, 1),
        (24, 12, 2),  # W not a multiple of 8: memory rows one by one, read dots per row
        (20, 8, 4),  # N not a multiple of 8: plain link rows, read dots per row
        (16, 16, 9),  # R > 8: the generic link and memory rows, blocked read dots
        (16, 32, 4),  # memory pass: 4 column blocks per pass (one pass)
        (16, 32, 6),  # memory pass: R > 4, 1 column block per pass (four passes, d w partial sums)
        (16, 24, 2),  # memory pass: 1 column block per pass (three passes)
    ],
)
@pytest.mark.parametrize("case", ["random", "ties"])
def test_backward_paths_float64(n, w, r, case, monkeypatch):
    cfg = MemoryConfig(memory_size=n, word_size=w, num_read_heads=r)
    vector, state = random_step(cfg, batch=2, seed=n + w + r, case=case)
    values_n, grads_n = step_values_and_grads(cfg, vector, state, True, monkeypatch)
    values_t, grads_t = step_values_and_grads(cfg, vector, state, False, monkeypatch)
    for a, e in zip([*values_n, *grads_n], [*values_t, *grads_t]):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize(
    "n, w, r",
    [
        (32, 32, 4),  # 16-lane link and memory passes
        (24, 16, 3),  # plain link rows in float32 (N not a multiple of 16), 16-lane memory pass
        (16, 24, 2),  # memory rows one by one (W not a multiple of 16), blocked read dots
        (12, 8, 5),  # plain link rows, read dots per row
        (16, 64, 4),  # memory pass: 4 column blocks per pass
        (16, 48, 2),  # memory pass: 1 column block per pass (three passes)
    ],
)
def test_backward_paths_float32(n, w, r, monkeypatch):
    """float32 through the kernel against the float32 torch path."""
    cfg = MemoryConfig(memory_size=n, word_size=w, num_read_heads=r)
    vector, state = random_step(cfg, batch=3, seed=n * w + r, dtype=torch.float32)
    values_n, grads_n = step_values_and_grads(cfg, vector, state, True, monkeypatch)
    values_t, grads_t = step_values_and_grads(cfg, vector, state, False, monkeypatch)
    for a, e in zip([*values_n, *grads_n], [*values_t, *grads_t]):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype, n, w", [(F64, 16, 8), (torch.float32, 32, 16)], ids=["float64", "float32"])
def test_sequence_with_blocked_backward_equals_torch_path(dtype, n, w, monkeypatch):
    """The whole recurrence, where the backward overwrites dM_t and dL_t in place row by row with
    dM_{t-1} and dL_{t-1}, at sizes that take the blocked passes."""
    cfg = MemoryConfig(memory_size=n, word_size=w, num_read_heads=3)
    torch.manual_seed(0)
    model = DNC(3, 8, 2, cfg).to(dtype)
    x = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(1), dtype=dtype)
    starts = torch.zeros(2, 6, dtype=torch.bool)
    starts[1, 3] = True
    native_run = dnc_run(model, x, starts, True, monkeypatch)
    reference = DNC(3, 8, 2, cfg).double()
    reference.load_state_dict(model.state_dict())
    torch_run = dnc_run(reference, x.double(), starts, False, monkeypatch)
    tol = dict(rtol=1e-9, atol=1e-11) if dtype == F64 else dict(rtol=2e-4, atol=2e-5)
    torch.testing.assert_close(native_run[0].double(), torch_run[0], **tol)
    for a, e in zip(native_run[2], torch_run[2]):
        torch.testing.assert_close(a.double(), e, **tol)


def _tiny_loss_grads(cfg, vector, state, use_native: bool, monkeypatch, scale: float):
    """Gradients of a loss whose weights are ``scale`` times random numbers (float32: with scale 1e-36
    many of the gradients and of the backward's intermediates are subnormal)."""
    monkeypatch.setenv("MEMAGENT_NATIVE", "1" if use_native else "0")
    inputs = [t.clone().requires_grad_(t.numel() > 0) for t in (vector, *state)]
    out = fused._AccessStep.apply(*inputs, cfg)[:7]
    g = torch.Generator().manual_seed(5)
    loss = sum((o * (torch.randn(o.shape, generator=g) * scale).to(o.dtype)).sum() for o in out)
    return torch.autograd.grad(loss, [t for t in inputs if t.requires_grad])


@pytest.mark.parametrize("n, w, r", [(32, 32, 4), (12, 8, 5)])
def test_backward_flushes_subnormals_only_below_the_smallest_normal(n, w, r, monkeypatch):
    """The backward runs with subnormals flushed to zero (x86-64: MXCSR FTZ and DAZ, ~100 cycles saved per
    subnormal operation): with gradients near FLT_MIN the results differ from the torch path only by
    amounts below the smallest normal number; the caller's floating-point mode is restored (torch
    still makes subnormals after the call)."""
    cfg = MemoryConfig(memory_size=n, word_size=w, num_read_heads=r)
    vector, state = random_step(cfg, batch=3, seed=n + r, dtype=torch.float32)
    tiny = torch.finfo(torch.float32).tiny
    for scale in (1.0, 1e-36):
        grads_n = _tiny_loss_grads(cfg, vector, state, True, monkeypatch, scale)
        grads_t = _tiny_loss_grads(cfg, vector, state, False, monkeypatch, scale)
        for a, e in zip(grads_n, grads_t):
            torch.testing.assert_close(a, e, rtol=1e-4, atol=max(1e-5 * scale, 64 * tiny))
        if scale < 1:
            assert any(bool(((e.abs() < tiny) & (e != 0)).any()) for e in grads_t)  # the case has subnormals
    sub = torch.tensor([tiny / 4, 1.0])
    assert (sub * 1.0)[0].item() == pytest.approx(tiny / 4)  # the caller's mode: subnormals kept

"""Hand-computed cases for each DNC mechanism of memagent.memory.addressing / access."""

from __future__ import annotations

import math

import pytest
import torch

from memagent.memory import Interface, MemoryAccess, MemoryConfig, interface_size, parse_interface
from memagent.memory import addressing as A

T = torch.tensor


def test_content_weighting_cosine_softmax():
    memory = T([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    keys = T([[[2.0, 0.0]]])
    strengths = T([[3.0]])
    w = A.content_weighting(memory, keys, strengths, epsilon=1e-6)
    sims = torch.tensor([1.0, 0.0, 1 / math.sqrt(2)])
    expected = torch.softmax(3.0 * sims, dim=0)
    assert w.shape == (1, 1, 3)
    torch.testing.assert_close(w[0, 0], expected, atol=1e-5, rtol=0)


def test_content_weighting_zero_memory_is_uniform_and_finite():
    memory = torch.zeros(2, 4, 3, requires_grad=True)
    keys = torch.zeros(2, 1, 3, requires_grad=True)
    w = A.content_weighting(memory, keys, torch.ones(2, 1))
    torch.testing.assert_close(w, torch.full((2, 1, 4), 0.25))
    w.pow(2).sum().backward()
    assert torch.isfinite(memory.grad).all() and torch.isfinite(keys.grad).all()


def test_retention():
    free = T([[0.5, 1.0]])
    prev_read = T([[[0.2, 0.8], [1.0, 0.0]]])
    psi = A.retention(free, prev_read)
    torch.testing.assert_close(psi, T([[(1 - 0.1) * (1 - 1.0), (1 - 0.4) * (1 - 0.0)]]))
    torch.testing.assert_close(A.retention(free, prev_read, usage_decay=0.5), 0.5 * psi)


def test_usage_single_and_multi_head():
    u = A.usage(T([[0.5, 0.0]]), T([[[0.5, 1.0]]]), T([[1.0, 0.5]]))
    torch.testing.assert_close(u, T([[0.75, 0.5]]))
    # two heads writing 0.5 each to slot 0: combined 1 - 0.5 * 0.5 = 0.75
    u2 = A.usage(T([[0.0, 0.0]]), T([[[0.5, 0.0], [0.5, 0.0]]]), T([[1.0, 1.0]]))
    torch.testing.assert_close(u2, T([[0.75, 0.0]]))


def test_allocation_picks_least_used_slot_first():
    usage = T([[0.4, 0.1, 0.9, 0.2]])
    a = A.allocation_weighting(usage, epsilon=1e-9)
    # free list: slot 1 (0.1), slot 3 (0.2), slot 0 (0.4), slot 2 (0.9)
    expected = T([[0.6 * 0.1 * 0.2, 0.9, 0.1 * 0.1 * 0.2 * 0.4, 0.8 * 0.1]])
    torch.testing.assert_close(a, expected, atol=1e-6, rtol=0)
    assert int(a.argmax()) == 1


def test_allocation_all_free_picks_first_slot_and_full_memory_allocates_nothing():
    a = A.allocation_weighting(torch.zeros(1, 3))
    torch.testing.assert_close(a, T([[1.0, 0.0, 0.0]]), atol=1e-5, rtol=0)
    full = A.allocation_weighting(torch.ones(1, 3))
    assert float(full.sum()) < 1e-5


def test_write_allocation_weightings_two_heads_take_different_slots():
    usage = T([[0.0, 0.5, 1.0]])
    a = A.write_allocation_weightings(usage, T([[1.0, 1.0]]), epsilon=1e-9)
    torch.testing.assert_close(a, T([[[1.0, 0.0, 0.0], [0.0, 0.5, 0.0]]]), atol=1e-6, rtol=0)


def test_write_weighting():
    content = T([[[0.5, 0.5, 0.0]]])
    alloc = T([[[0.0, 0.0, 1.0]]])
    w = A.write_weighting(content, alloc, allocation_gates=T([[0.25]]), write_gates=T([[0.8]]))
    torch.testing.assert_close(w, 0.8 * T([[[0.375, 0.375, 0.25]]]))


def test_erase_then_add_single_and_multi_head():
    memory = torch.ones(1, 2, 2)
    m = A.erase_and_write(memory, T([[[1.0, 0.0]]]), T([[[1.0, 0.0]]]), T([[[2.0, 3.0]]]))
    torch.testing.assert_close(m, T([[[2.0, 4.0], [1.0, 1.0]]]))
    # two heads on slot 0, half erase each on column 0: keep = (1 - .5)(1 - .5) = .25
    m2 = A.erase_and_write(
        memory, T([[[1.0, 0.0], [1.0, 0.0]]]), T([[[0.5, 0.0], [0.5, 0.0]]]), T([[[1.0, 0.0], [0.0, 1.0]]])
    )
    torch.testing.assert_close(m2, T([[[1.25, 2.0], [1.0, 1.0]]]))


def test_precedence():
    p = A.precedence(T([[[0.5, 0.5]]]), T([[[0.5, 0.0]]]))
    torch.testing.assert_close(p, T([[[0.75, 0.25]]]))


def _write_in_order(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    link = torch.zeros(1, 1, n, n)
    prec = torch.zeros(1, 1, n)
    for slot in range(n):
        w = torch.zeros(1, 1, n)
        w[0, 0, slot] = 1.0
        link = A.temporal_link(link, prec, w)
        prec = A.precedence(prec, w)
    return link, prec


def test_link_after_sequential_writes_and_directional_reads():
    link, prec = _write_in_order(3)
    torch.testing.assert_close(link[0, 0], T([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    torch.testing.assert_close(prec[0, 0], T([0.0, 0.0, 1.0]))
    read = T([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])  # head 0 at slot 0, head 1 at slot 2
    fwd, bwd = A.directional_weightings(link, read)
    assert fwd.shape == (1, 2, 1, 3)
    torch.testing.assert_close(fwd[0, :, 0], T([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))  # forward: next write
    torch.testing.assert_close(bwd[0, :, 0], T([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))  # backward: previous


def test_link_partial_write_numbers():
    prev_link = T([[[[0.0, 0.5], [0.25, 0.0]]]])
    prev_prec = T([[[0.4, 0.6]]])
    w = T([[[0.5, 0.25]]])
    link = A.temporal_link(prev_link, prev_prec, w)
    # L[0,1] = (1 - .5 - .25) * .5 + .5 * .6 ; L[1,0] = (1 - .25 - .5) * .25 + .25 * .4
    torch.testing.assert_close(link[0, 0], T([[0.0, 0.125 + 0.3], [0.0625 + 0.1, 0.0]]))


def test_read_weighting_mode_order_backward_forward_content():
    content = T([[[1.0, 0.0, 0.0, 0.0]]])
    fwd = T([[[[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]]])  # (B=1, R=1, Hw=2, N=4)
    bwd = T([[[[0.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.0, 0.0]]]])
    modes = T([[[0.1, 0.2, 0.3, 0.15, 0.25]]])  # [b0, b1, f0, f1, c]
    w = A.read_weighting(content, fwd, bwd, modes)
    expected = 0.25 * content[0, 0] + 0.3 * fwd[0, 0, 0] + 0.15 * fwd[0, 0, 1] + 0.1 * bwd[0, 0, 0]
    expected = expected + 0.2 * bwd[0, 0, 1]
    torch.testing.assert_close(w[0, 0], expected)
    torch.testing.assert_close(A.read_weighting(content, None, None, modes), 0.25 * content)


def test_read_vectors():
    memory = T([[[1.0, 2.0], [3.0, 4.0]]])
    torch.testing.assert_close(A.read_vectors(memory, T([[[0.25, 0.75]]])), T([[[2.5, 3.5]]]))


def test_mechanisms_gradcheck():
    g = torch.Generator().manual_seed(0)
    d = {"dtype": torch.float64}

    def rand(*shape):
        return torch.rand(*shape, generator=g, **d).requires_grad_()

    n = 5
    assert torch.autograd.gradcheck(lambda u: A.allocation_weighting(u), (rand(2, n),))
    assert torch.autograd.gradcheck(
        lambda m, k, s: A.content_weighting(m, k, s), (rand(2, n, 3), rand(2, 2, 3), rand(2, 2))
    )
    w = (torch.softmax(torch.randn(2, 2, n, generator=g, **d), -1) * 0.9).requires_grad_()
    p = (torch.softmax(torch.randn(2, 2, n, generator=g, **d), -1) * 0.9).requires_grad_()
    assert torch.autograd.gradcheck(A.temporal_link, (rand(2, 2, n, n), p, w))
    assert torch.autograd.gradcheck(A.erase_and_write, (rand(2, n, 3), w, rand(2, 2, 3), rand(2, 2, 3)))
    assert torch.autograd.gradcheck(
        lambda lk, r: A.directional_weightings(lk, r), (rand(2, 2, n, n), rand(2, 3, n))
    )


def test_interface_size_matches_deepmind_formula_and_parse_ranges():
    cfg = MemoryConfig(memory_size=6, word_size=4, num_read_heads=2, num_write_heads=1)
    assert interface_size(cfg) == 4 * 2 + 3 * 4 + 5 * 2 + 3  # DeepMind: W R + 3 W + 5 R + 3
    cfg2 = MemoryConfig(memory_size=6, word_size=4, num_read_heads=2, num_write_heads=2)
    vec = torch.randn(3, interface_size(cfg2), generator=torch.Generator().manual_seed(1)) * 5
    iface = parse_interface(vec, cfg2)
    assert iface.read_keys.shape == (3, 2, 4) and iface.write_keys.shape == (3, 2, 4)
    assert iface.read_modes.shape == (3, 2, 5)
    torch.testing.assert_close(iface.read_modes.sum(-1), torch.ones(3, 2))
    assert (iface.read_strengths >= 1).all() and (iface.write_strengths >= 1).all()
    for gate in (iface.free_gates, iface.allocation_gates, iface.write_gates, iface.erase_vectors):
        assert ((gate > 0) & (gate < 1)).all()
    tut = MemoryConfig.tutorial(memory_size=6, word_size=4, num_read_heads=2)
    it = parse_interface(torch.randn(3, interface_size(tut)), tut)
    assert interface_size(tut) == 2 * 4 + 2 + 4 + 1 + 4 + 4 + 1
    torch.testing.assert_close(it.read_modes, torch.tensor([0.0, 0.0, 1.0]).expand(3, 2, 3))
    assert (it.free_gates == 0).all() and (it.allocation_gates == 0).all()
    with pytest.raises(ValueError, match="vector"):
        parse_interface(torch.randn(3, 7), tut)


def _one_hot_interface(cfg: MemoryConfig, word: torch.Tensor, modes: list[float]) -> Interface:
    b, r, hw, w = 1, cfg.num_read_heads, cfg.num_write_heads, cfg.word_size
    return Interface(
        read_keys=torch.zeros(b, r, w),
        read_strengths=torch.ones(b, r),
        write_keys=torch.zeros(b, hw, w),
        write_strengths=torch.ones(b, hw),
        erase_vectors=torch.ones(b, hw, w),
        write_vectors=word.view(1, 1, w),
        free_gates=torch.zeros(b, r),
        allocation_gates=torch.ones(b, hw),
        write_gates=torch.ones(b, hw),
        read_modes=torch.tensor(modes, dtype=torch.float32).view(1, 1, 3),
    )


def test_access_writes_in_order_and_reads_forward_then_backward():
    """Allocation writes 4 words to 4 free slots; after a content read of word 0, forward reads
    return the words in write order and backward reads go back."""
    cfg = MemoryConfig(memory_size=4, word_size=4, num_read_heads=1, num_write_heads=1, epsilon=1e-9)
    access = MemoryAccess(cfg)
    state = access.initial_state(1)
    words = torch.eye(4) * 2.0
    for k in range(4):
        _, state = access(_one_hot_interface(cfg, words[k], [0.0, 0.0, 1.0]), state)
    # each word went to its own slot (allocation: least-used first; ties of tiny usages may reorder slots)
    slots = state.memory[0].argmax(0)
    assert sorted(slots.tolist()) == [0, 1, 2, 3]
    torch.testing.assert_close(state.memory[0][slots], words, atol=1e-5, rtol=0)
    # usage lags one step (u_t uses w_{t-1}): the first three slots are used, the last one is being written
    torch.testing.assert_close(state.usage[0] + state.write_weights[0, 0], torch.ones(4), atol=1e-5, rtol=0)

    def read(modes: list[float], key: torch.Tensor | None = None):
        nonlocal state
        iface = _one_hot_interface(cfg, torch.zeros(4), modes)._replace(
            write_gates=torch.zeros(1, 1), read_strengths=torch.full((1, 1), 50.0)
        )
        if key is not None:
            iface = iface._replace(read_keys=key.view(1, 1, 4))
        reads, state = access(iface, state)
        return reads[0, 0]

    torch.testing.assert_close(read([0, 0, 1], key=words[0]), words[0], atol=1e-3, rtol=0)
    for k in (1, 2, 3):
        torch.testing.assert_close(read([0, 1, 0]), words[k], atol=1e-3, rtol=0)
    for k in (2, 1, 0):
        torch.testing.assert_close(read([1, 0, 0]), words[k], atol=1e-3, rtol=0)


def test_random_access_keeps_link_and_usage_in_range():
    cfg = MemoryConfig(memory_size=7, word_size=3, num_read_heads=2, num_write_heads=2)
    access = MemoryAccess(cfg)
    g = torch.Generator().manual_seed(3)
    state = access.initial_state(4)
    with torch.no_grad():
        for _ in range(200):
            iface = parse_interface(torch.randn(4, interface_size(cfg), generator=g) * 3, cfg)
            _, state = access(iface, state)
            assert state.usage.min() >= 0 and state.usage.max() <= 1 + 1e-6
            assert state.link.min() >= 0 and state.link.max() <= 1 + 1e-6
            assert state.precedence.sum(-1).max() <= 1 + 1e-6
            assert (torch.diagonal(state.link, dim1=-2, dim2=-1) == 0).all()
            assert (state.write_weights.sum(-1) <= 1 + 1e-6).all()


def test_fused_kernels_match_reference_values_and_gradcheck():
    from memagent.memory import fused as F

    g = torch.Generator().manual_seed(4)
    d = {"dtype": torch.float64}

    def simplex(*shape):
        return (torch.softmax(torch.randn(*shape, generator=g, **d), -1) * 0.9).requires_grad_()

    b, hw, n, r, w = 2, 2, 5, 3, 4
    link = torch.rand(b, hw, n, n, generator=g, **d).requires_grad_()
    prec, ww, wr = simplex(b, hw, n), simplex(b, hw, n), simplex(b, r, n)
    fused_out = F.temporal_link_and_directional_weightings(link, prec, ww, wr)
    ref_link = A.temporal_link(link, prec, ww)
    reference = (ref_link, *A.directional_weightings(ref_link, wr), A.precedence(prec, ww))
    for a, e in zip(fused_out, reference, strict=True):
        torch.testing.assert_close(a, e)
    assert torch.autograd.gradcheck(F.temporal_link_and_directional_weightings, (link, prec, ww, wr))

    memory = torch.randn(b, n, w, generator=g, **d).requires_grad_()
    w1 = simplex(b, 1, n)
    erase = torch.rand(b, 1, w, generator=g, **d).requires_grad_()
    values = torch.randn(b, 1, w, generator=g, **d).requires_grad_()
    torch.testing.assert_close(
        F.erase_and_write(memory, w1, erase, values), A.erase_and_write(memory, w1, erase, values)
    )
    assert torch.autograd.gradcheck(F.erase_and_write, (memory, w1, erase, values))

    keys = torch.randn(b, r, w, generator=g, **d).requires_grad_()
    strengths = (1 + torch.rand(b, r, generator=g, **d)).requires_grad_()
    torch.testing.assert_close(
        F.content_weighting(memory, keys, strengths), A.content_weighting(memory, keys, strengths)
    )
    assert torch.autograd.gradcheck(F.content_weighting, (memory, keys, strengths))


def test_fused_lstm_cell_matches_torch_lstm_cell():
    from memagent.memory.fused import lstm_cell

    g = torch.Generator().manual_seed(6)
    cell = torch.nn.LSTMCell(3, 4).double()
    x = torch.randn(2, 3, generator=g, dtype=torch.float64)
    h0 = torch.randn(2, 4, generator=g, dtype=torch.float64)
    c0 = torch.randn(2, 4, generator=g, dtype=torch.float64)
    gates = x @ cell.weight_ih.T + cell.bias_ih + h0 @ cell.weight_hh.T + cell.bias_hh
    h_ref, c_ref = cell(x, (h0, c0))
    h, c = lstm_cell(gates, c0)
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(c, c_ref)
    assert torch.autograd.gradcheck(lstm_cell, (gates.detach().requires_grad_(), c0.requires_grad_()))

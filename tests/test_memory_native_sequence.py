"""The native DNC recurrence (memagent.memory.native.sequence): its pooled buffers (the per-step states kept
for backward, the gates and the gradient buffers are views of pooled flat buffers, reused only once
nothing refers to them; the numbers equal those of fresh buffers bit for bit), and the controller's side
(one product per step each way against weights packed once per call, the LSTM kernels' row strides, the
transpose and row helpers)."""

from __future__ import annotations

import pytest
import torch

from memagent import cbuild
from memagent.memory import DNC, MemoryConfig, native
from memagent.memory.native import sequence

if cbuild.find_compiler() is None:  # pragma: no cover - only where no C compiler exists
    pytest.skip("no C compiler (cc, gcc, clang): the native kernel cannot be built", allow_module_level=True)

F64 = torch.float64


@pytest.fixture(autouse=True)
def _native(monkeypatch):
    """The native path, with the small test sizes pooled too (POOL_MIN_BYTES = 0)."""
    monkeypatch.setenv("MEMAGENT_NATIVE", "1")
    monkeypatch.setattr(sequence, "POOL_MIN_BYTES", 0)
    sequence.release_buffers()
    yield
    sequence.release_buffers()


def make_case(links: bool = True, batch: int = 3, steps: int = 5, seed: int = 0, dtype=F64):
    cfg = MemoryConfig(memory_size=6, word_size=4, num_read_heads=2, temporal_links=links)
    torch.manual_seed(seed)
    model = DNC(3, 8, 2, cfg).to(dtype)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, steps, 3, generator=g, dtype=dtype)
    starts = torch.rand(batch, steps, generator=g) < 0.3
    return model, x, starts


def run(model, x, starts=None, grad: bool = True) -> list[torch.Tensor]:
    """Outputs, final state and (with grad) the gradients of x, of the initial state and the parameters."""
    model.zero_grad(set_to_none=True)
    if not grad:
        with torch.no_grad():
            y, state = model(x, episode_starts=starts)
        return [y, *state]
    x = x.clone().requires_grad_(True)
    init = [f.clone().requires_grad_(True) for f in model.initial_state(x.shape[0], dtype=x.dtype)]
    y, state = model(x, state=type(model.initial_state(1))(*init), episode_starts=starts)
    weights = torch.Generator().manual_seed(7)
    loss = (y * torch.randn(y.shape, generator=weights, dtype=y.dtype)).sum()
    loss = loss + sum((f * torch.randn(f.shape, generator=weights, dtype=f.dtype)).sum() for f in state)
    loss.backward()
    grads = [x.grad, *(f.grad for f in init), *(p.grad for p in model.parameters())]
    return [y.detach(), *(f.detach() for f in state), *grads]


def assert_equal(a: list, b: list) -> None:
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert (u is None and v is None) or torch.equal(u, v)


@pytest.mark.parametrize("links", [True, False], ids=["links", "no-links"])
@pytest.mark.parametrize("steps", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("resets", [False, True], ids=["", "resets"])
def test_pooled_buffers_give_the_numbers_of_fresh_buffers(links, steps, dtype, resets, monkeypatch):
    """Pooled (first call: new, second and third: reused) and unpooled buffers (POOL_MAX_BYTES = 0), with
    and without backward: values and gradients bit for bit (every slot layout: T = 1 has none, even and
    odd T, the scratch slot of the memory)."""
    model, x, starts = make_case(links, steps=steps, dtype=dtype)
    starts = starts if resets else None
    for grad in (True, False):
        pooled = [run(model, x, starts, grad) for _ in range(3)]
        limit = sequence.POOL_MAX_BYTES
        monkeypatch.setattr(sequence, "POOL_MAX_BYTES", 0)
        fresh = run(model, x, starts, grad)
        monkeypatch.setattr(sequence, "POOL_MAX_BYTES", limit)
        for result in pooled:
            assert_equal(result, fresh)


def test_buffers_of_a_live_graph_are_not_reused():
    """Several graphs alive at once (each keeps its buffers until freed), backward in another order than
    the forwards, one of them twice (retain_graph): the gradients of each run alone."""
    model, x, starts = make_case()
    inputs = [x, x.flip(1) * 0.5, x + 1.0]
    alone = [run(model, xi, starts) for xi in inputs]
    sequence.release_buffers()
    graphs = []
    for xi in inputs:
        xi = xi.clone().requires_grad_(True)
        y, state = model(xi, episode_starts=starts)
        graphs.append((xi, y, state))
    assert len(sequence._pool) == len(inputs) + 1  # a buffer per live graph, one scratch buffer
    n = len(graphs[0][2])
    for k in (2, 0, 1):
        xi, y, state = graphs[k]
        weights = torch.Generator().manual_seed(7)
        loss = (y * torch.randn(y.shape, generator=weights, dtype=y.dtype)).sum()
        loss = loss + sum((f * torch.randn(f.shape, generator=weights, dtype=f.dtype)).sum() for f in state)
        for _ in range(2 if k == 0 else 1):
            xi.grad = None
            model.zero_grad(set_to_none=True)
            loss.backward(retain_graph=k == 0)
            assert torch.equal(xi.grad, alone[k][1 + n])
            for p, e in zip(model.parameters(), alone[k][2 + 2 * n :]):
                assert torch.equal(p.grad, e)
            run(model, inputs[1], starts)  # another train step in between reuses only free buffers


def test_free_buffers_are_reused_and_outputs_are_not_pooled():
    """Train steps in a row reuse the same three pooled buffers (the forward's, the backward's, the scratch
    memory of both); no output lies in a pooled buffer (an output kept by the caller would otherwise be
    overwritten)."""
    model, x, starts = make_case(steps=6)
    run(model, x, starts)
    buffers = [buffer.data_ptr() for buffer, _ in sequence._pool]
    assert len(buffers) == 3
    kept = [run(model, x, starts) for _ in range(3)]
    assert [buffer.data_ptr() for buffer, _ in sequence._pool] == buffers
    for result in kept[1:]:
        assert_equal(result, kept[0])
    y, state = model(x, episode_starts=starts)
    spans = [(b.data_ptr(), b.data_ptr() + b.numel() * b.element_size()) for b, _ in sequence._pool]
    for f in (y, *state):
        if f.numel():
            assert not any(lo <= f.data_ptr() < hi for lo, hi in spans)


def test_pool_size_is_bounded_and_release_empties_it(monkeypatch):
    monkeypatch.setattr(sequence, "POOL_SIZE", 3)
    model, x, _ = make_case()
    for steps in range(2, 8):  # a new size every call: new buffers, the free ones dropped beyond 3
        run(model, x[:, :steps])
        assert len(sequence._pool) <= 3
    sequence.release_buffers()
    assert not sequence._pool
    monkeypatch.setattr(sequence, "POOL_MAX_BYTES", 0)
    run(model, x)
    assert not sequence._pool


def test_a_shorter_sequence_reuses_a_larger_free_buffer_and_the_pool_bytes_are_bounded(monkeypatch):
    """A free buffer of up to twice the size needed is reused (its first part), with the numbers of fresh
    buffers; the pool holds at most POOL_MAX_BYTES (older buffers leave it, those in use stay valid)."""
    model, x, starts = make_case(steps=8)
    run(model, x, starts)
    sizes = sorted(b.numel() for b, _ in sequence._pool)
    pooled = run(model, x[:, :6], starts[:, :6])
    assert sorted(b.numel() for b, _ in sequence._pool) == sizes  # reused, none added
    limit = sequence.POOL_MAX_BYTES
    monkeypatch.setattr(sequence, "POOL_MAX_BYTES", 0)
    assert_equal(pooled, run(model, x[:, :6], starts[:, :6]))
    monkeypatch.setattr(sequence, "POOL_MAX_BYTES", limit)
    sequence.release_buffers()
    y, state = model(x, episode_starts=starts)  # a live graph while the pool is cut down below
    largest = max(b.numel() * b.element_size() for b, _ in sequence._pool)
    monkeypatch.setattr(sequence, "POOL_MAX_BYTES", largest)
    for steps in (3, 5, 7, 2):
        run(model, x[:, :steps], starts[:, :steps])
        assert sum(b.numel() * b.element_size() for b, _ in sequence._pool) <= largest
    monkeypatch.setattr(sequence, "POOL_MAX_BYTES", limit)
    model.zero_grad(set_to_none=True)
    (y.sum() + state.memory.sum()).backward()  # the graph's buffers, out of the pool now, still valid
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    y, state = model(x, episode_starts=starts)
    (y.sum() + state.memory.sum()).backward()
    for p, e in zip(model.parameters(), expected):
        assert torch.equal(p.grad, e)


def test_small_buffers_are_not_pooled(monkeypatch):
    monkeypatch.setattr(sequence, "POOL_MIN_BYTES", 64 << 10)
    model, x, starts = make_case()
    pooled = run(model, x, starts)
    assert not sequence._pool
    monkeypatch.setattr(sequence, "POOL_MIN_BYTES", 0)
    assert_equal(pooled, run(model, x, starts))
    assert sequence._pool


# ------------------------------------------------------------------ the controller's side of the sequence


def _lstm_cell(gates: torch.Tensor, c_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.LSTMCell's arithmetic from pre-activation gates [i, f, g, o]: (h, c)."""
    i, f, g, o = gates.chunk(4, 1)
    c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["f64", "f32"])
def test_lstm_kernels_write_h_with_a_row_stride_and_sum_three_strided_dh_parts(dtype):
    """lstm_forward writes h_t into the h columns of wider rows (the controller's [r_t | h_t] input), the
    other columns untouched; lstm_backward sums dh from three parts with their own row strides: the LSTM
    cell's values and autograd gradients."""
    kernels = native.load()[dtype]
    tol = dict(rtol=1e-12, atol=1e-13) if dtype == F64 else dict(rtol=2e-6, atol=2e-6)
    batch, hsize, lead = 5, 7, 3
    g = torch.Generator().manual_seed(0)
    gates, c_prev = (torch.randn(batch, n, generator=g, dtype=dtype) for n in (4 * hsize, hsize))
    rows = torch.full((batch, lead + hsize + 2), 7.0, dtype=dtype)
    h, c = rows[:, lead : lead + hsize], torch.empty(batch, hsize, dtype=dtype)
    kernels.lstm_forward(batch, hsize, gates.data_ptr(), c_prev.data_ptr(), h.data_ptr(), rows.stride(0),
                         c.data_ptr(), 1)  # fmt: skip
    gates_r, c_prev_r = gates.clone().requires_grad_(), c_prev.clone().requires_grad_()
    h_ref, c_ref = _lstm_cell(gates_r, c_prev_r)
    torch.testing.assert_close(h, h_ref.detach(), **tol)
    torch.testing.assert_close(c, c_ref.detach(), **tol)
    assert (rows[:, :lead] == 7).all() and (rows[:, lead + hsize :] == 7).all()

    dh_a = torch.randn(batch, hsize, generator=g, dtype=dtype)
    dh_b = torch.randn(batch, 3 * hsize, generator=g, dtype=dtype)[:, hsize : 2 * hsize]
    dh_c = torch.randn(batch, hsize + 4, generator=g, dtype=dtype)[:, 4:]
    dc = torch.randn(batch, hsize, generator=g, dtype=dtype)
    torch.autograd.backward([h_ref, c_ref], [dh_a + dh_b + dh_c, dc])
    g_gates, gc_prev = torch.empty_like(gates), torch.empty_like(c_prev)
    kernels.lstm_backward(
        batch, hsize, gates.data_ptr(), c_prev.data_ptr(), c.data_ptr(),
        dh_a.data_ptr(), hsize, dh_b.data_ptr(), dh_b.stride(0), dh_c.data_ptr(), dh_c.stride(0),
        dc.data_ptr(), g_gates.data_ptr(), gc_prev.data_ptr(), 1,
    )  # fmt: skip
    torch.testing.assert_close(g_gates, gates_r.grad, **tol)
    torch.testing.assert_close(gc_prev, c_prev_r.grad, **tol)


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (16, 16), (17, 33), (40, 20)], ids=str)
def test_transpose_kernel_of_a_strided_block(shape):
    """dst = src^T for a column slice of a wider matrix into a wider destination (tiles of 16 and their
    remainders); the destination's other columns untouched."""
    kernels = native.load()[F64]
    rows, cols = shape
    src = torch.randn(rows, cols + 5, dtype=F64)[:, 2 : 2 + cols]
    dst = torch.full((cols, rows + 3), -1.0, dtype=F64)
    kernels.transpose(rows, cols, src.data_ptr(), src.stride(0), dst.data_ptr(), dst.stride(0))
    assert torch.equal(dst[:, :rows], src.t())
    assert (dst[:, rows:] == -1).all()


def unpack(kernels, packed: torch.Tensor, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (rows, cols) weight in a packed buffer (panels of ``panel_lanes`` columns), and its pad lanes."""
    full = packed.view(-1, rows, kernels.panel_lanes).permute(1, 0, 2).reshape(rows, -1)  # (k, panel lanes)
    return full[:, :cols], full[:, cols:]


@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("split", [0, 3, 10, 16, 21], ids=lambda s: f"split{s}")
def test_pack_panels_of_two_blocks_of_any_strides(dtype, split):
    """A (12, 37) weight packed from two blocks split at column `split` (inside a panel or on its edge), a
    column slice of a wider matrix and a transposed view, as [W_r | W_hh] and [W_r | W_hh]^T are packed; or
    split by rows: the panels hold the weight, and zeros past its last column."""
    kernels = native.load()[dtype]
    rows, cols = 12, 37
    weight = torch.randn(rows, cols, dtype=dtype)
    wide = torch.randn(rows, cols + 9, dtype=dtype)
    wide[:, 4 : 4 + split] = weight[:, :split]
    transposed = weight[:, split:].t().contiguous().t()  # strides (1, rows)
    blocks = [(wide[:, 4 : 4 + split], 0, 0), (transposed, 0, split)]
    packed = sequence._packed(kernels, weight, rows, cols, [b for b in blocks if b[0].shape[1]])
    values, pad = unpack(kernels, packed, rows, cols)
    assert torch.equal(values, weight) and (pad == 0).all()
    by_rows = [(weight[:5], 0, 0), (weight[5:].t().contiguous().t(), 5, 0)]
    assert torch.equal(sequence._packed(kernels, weight, rows, cols, by_rows), packed)


def check_packed_products(kernels, dtype, accumulate: int) -> None:
    """out (+)= a w as torch computes it, for batches of 1 to 19 and 33 rows (every block of rows and panels,
    their remainders), widths around the panel width, a and out with row strides (out's other columns
    untouched), on one and two threads."""
    g = torch.Generator().manual_seed(0)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == F64 else dict(rtol=2e-5, atol=2e-5)
    lanes = kernels.panel_lanes
    for k, n in [(1, 1), (7, lanes - 1), (40, lanes + 3), (129, 3 * lanes + 5)]:
        w = torch.randn(k, n, generator=g, dtype=dtype)
        packed = sequence._packed(kernels, w, k, n, [(w, 0, 0)])
        for batch in [*range(1, 20), 33]:
            a = torch.randn(batch, k + 3, generator=g, dtype=dtype)[:, 2 : 2 + k]
            out = torch.randn(batch, n + 4, generator=g, dtype=dtype)
            expected = (out[:, 1 : 1 + n] if accumulate else 0) + a @ w
            for threads in (1, 2):
                got = out.clone()
                kernels.packed_product(
                    batch, k, n, a.data_ptr(), a.stride(0), packed.data_ptr(), got[:, 1:].data_ptr(),
                    got.stride(0), accumulate, threads,
                )  # fmt: skip
                torch.testing.assert_close(got[:, 1 : 1 + n], expected, **tol)
                assert torch.equal(got[:, 0], out[:, 0]) and torch.equal(got[:, 1 + n :], out[:, 1 + n :])


@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("accumulate", [0, 1], ids=["out=", "out+="])
def test_packed_product_matches_torch_for_every_block_shape(dtype, accumulate):
    check_packed_products(native.load()[dtype], dtype, accumulate)


@pytest.mark.skipif("avx2" not in cbuild.cpu_flags().split(), reason="the CPU has no AVX2")
def test_packed_product_of_an_avx2_build(tmp_path, monkeypatch):
    """The blocks of a build with AVX2 but not AVX-512 (8-lane panels, 6 rows x 2 panels; -O0: quick to
    build), whatever this CPU's own build uses."""
    import ctypes

    monkeypatch.setenv("MEMAGENT_CACHE_DIR", str(tmp_path))
    flags = [f for f in cbuild.portable_flags(native._FLAGS) if f != "-O3"] + ["-O0", "-mavx2", "-mfma"]
    kernels = native._bind(ctypes.CDLL(str(cbuild.compile_library(native._SOURCE, flags))))
    assert kernels[torch.float32].panel_lanes == 8
    for dtype in (F64, torch.float32):
        check_packed_products(kernels[dtype], dtype, accumulate=1)


@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["f64", "f32"])
def test_packed_product_rows_do_not_depend_on_the_batch(dtype):
    """Each row's result is the same, bit for bit, alone, in batches of every size and on two threads: its
    K terms are summed in one order whatever block of rows and panels computes it."""
    kernels = native.load()[dtype]
    g = torch.Generator().manual_seed(1)
    k, n = 75, 5 * kernels.panel_lanes + 3
    w = torch.randn(k, n, generator=g, dtype=dtype)
    packed = sequence._packed(kernels, w, k, n, [(w, 0, 0)])
    a = torch.randn(19, k, generator=g, dtype=dtype)
    start = torch.randn(19, n, generator=g, dtype=dtype)

    def product(rows: torch.Tensor, init: torch.Tensor, threads: int = 1) -> torch.Tensor:
        out = init.clone()
        rows_a, packed_a, out_a = rows.data_ptr(), packed.data_ptr(), out.data_ptr()
        kernels.packed_product(rows.shape[0], k, n, rows_a, k, packed_a, out_a, n, 1, threads)
        return out

    alone = torch.cat([product(a[i : i + 1], start[i : i + 1]) for i in range(19)])
    for batch in range(2, 20):
        assert torch.equal(product(a[:batch], start[:batch]), alone[:batch])
    assert torch.equal(product(a, start, threads=2), alone)


def test_add_rows_kernel_adds_or_copies_strided_rows():
    kernels = native.load()[torch.float32]
    a = torch.randn(4, 9)[:, 1:7]
    b = torch.randn(4, 11)[:, 3:9]
    out = torch.full((4, 8), 5.0)
    kernels.add_rows(4, 6, a.data_ptr(), a.stride(0), b.data_ptr(), b.stride(0), out[:, 2:].data_ptr(), 8)
    assert torch.equal(out[:, 2:], a + b) and (out[:, :2] == 5).all()
    kernels.add_rows(4, 6, a.data_ptr(), a.stride(0), None, 0, out.data_ptr(), 8)  # b = NULL: a copy
    assert torch.equal(out[:, :6], a)


@pytest.mark.parametrize("steps", [2, 16], ids=["torch-products", "packed-products"])
@pytest.mark.parametrize("batch", [1, 2, 4])
@pytest.mark.parametrize("links", [True, False], ids=["links", "no-links"])
def test_one_controller_product_per_step_matches_the_torch_path(batch, links, steps, monkeypatch):
    """[r_{t-1} | h_{t-1}] [W_r | W_hh]^T as one product forward and dgates_t [W_r | W_hh] backward (against
    packed weights; torch's products for calls under PACK_MIN_ROWS rows), at every batch size (B = 1
    included: a matrix-vector product), with resets: outputs, final state and every gradient (x and the
    initial state included) as on the differentiable torch path (float64)."""
    assert sequence._packs(steps, batch) == (steps == 16)
    model, x, starts = make_case(links, batch=batch, steps=steps, seed=3)
    starts[:, 0] = False
    starts[0, steps // 2] = True
    native_run = run(model, x, starts)
    monkeypatch.setenv("MEMAGENT_NATIVE", "0")
    torch_run = run(model, x, starts)
    assert len(native_run) == len(torch_run)
    for a, e in zip(native_run, torch_run):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


def test_a_library_without_the_strided_lstm_functions_is_refused():
    """A kernel of an older revision (e.g. benchmarks/dnc_speed.py --against it) has the old LSTM argument
    lists: binding it fails loudly instead of calling it with the new ones."""
    with pytest.raises(RuntimeError, match="row strides"):
        native._bind(object())


def test_output_gradients_of_any_row_layout():
    """The hiddens' and reads' gradients are read through their strides (the output layer's concatenation
    hands over column slices): a gradient broadcast over the steps (stride 0), one broadcast over
    everything (contiguous copy) and a plain one give the torch path's parameter gradients."""
    model, x, starts = make_case(batch=3, steps=5)
    cell, face = model.controller, model.interface.linear
    weights = (cell.weight_ih, cell.weight_hh, cell.bias_ih + cell.bias_hh, face.weight, face.bias)
    state = tuple(model.initial_state(3, dtype=F64))
    resets = sequence._reset_steps(starts)
    scale = torch.randn(3, 1, 8, generator=torch.Generator().manual_seed(4), dtype=F64)
    results = []
    for outputs in (
        sequence.dnc_sequence(model.config, x, *weights, state, starts),
        sequence._torch_path(model.config, x, *weights, state, resets),
    ):
        hiddens, reads = outputs[0], outputs[1]
        loss = (hiddens.sum(1, keepdim=True) * scale).sum() + reads.sum() + outputs[2].pow(2).sum()
        params = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh, face.weight, face.bias]
        results.append(torch.autograd.grad(loss, params))
    for a, e in zip(*results):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


def test_portable_build_runs_the_sequence(tmp_path, monkeypatch):
    """The fallback build (no -march=native, the older-GCC lane shuffles forced; -O0 here: it compiles
    several times faster than -O3, which test_memory_native's portable test builds) transposes (8 x 8
    register blocks and edges), packs the weights and multiplies with its own panel width and blocks, and
    runs the whole sequence with the default build's numbers."""
    import ctypes

    from memagent import cbuild

    native.load()  # the default build, from the usual cache (before the cache moves to tmp_path)
    monkeypatch.setenv("MEMAGENT_CACHE_DIR", str(tmp_path))
    flags = [f for f in cbuild.portable_flags(native._FLAGS) if f != "-O3"]
    flags += ["-O0", "-DMEMAGENT_GCC_SHUFFLE"]
    kernels = native._bind(ctypes.CDLL(str(cbuild.compile_library(native._SOURCE, flags))))
    for dtype in (F64, torch.float32):
        src = torch.randn(17, 40, dtype=dtype)[:, 3:36]
        dst = torch.empty(33, 17, dtype=dtype)
        kernels[dtype].transpose(17, 33, src.data_ptr(), src.stride(0), dst.data_ptr(), 17)
        assert torch.equal(dst, src.t())
        # the packed products with this build's panel width and blocks (packed through the transposes)
        w, a = torch.randn(21, 45, dtype=dtype), torch.randn(11, 21, dtype=dtype)
        packed = sequence._packed(kernels[dtype], w, 21, 45, [(w.t().contiguous().t(), 0, 0)])
        out = torch.empty(11, 45, dtype=dtype)
        product = kernels[dtype].packed_product
        product(11, 21, 45, a.data_ptr(), 21, packed.data_ptr(), out.data_ptr(), 45, 0, 1)
        torch.testing.assert_close(out, a @ w, rtol=1e-5, atol=1e-5)
    model, x, starts = make_case(batch=4, steps=16)  # 64 rows: the packed products (see PACK_MIN_ROWS)
    assert sequence._packs(16, 4)
    expected = run(model, x, starts)
    monkeypatch.setitem(native._STATE, "functions", kernels)
    for a, e in zip(run(model, x, starts), expected):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-13)

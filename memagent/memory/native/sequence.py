"""The whole DNC recurrence (LSTM controller + one-write-head memory access) over a sequence as one
autograd node, on the native CPU kernel: the loop runs the controller's matrix products (against weights
packed once per call; in torch for short calls, see :data:`PACK_MIN_ROWS`), the LSTM cell and the
memory-access step in C, with no autograd bookkeeping per step; the hand-written backward runs the loop
in reverse and forms the weight gradients at the end with one matrix product per weight (over all steps
at once).

What it keeps for backward (the activation memory): per step the memory-access inputs (the link
``L_{t-1}``, usage, precedence, read and write weights; the memory ``M_{t-1}`` only every second step,
the others are rebuilt from the previous one by the same erase-and-write arithmetic), the LSTM gates,
cell and hidden state, the reads and the interface vector.

Used by :class:`memagent.memory.DNC` when the kernel is available and the inputs are plain CPU
float32 / float64 tensors (see :func:`memagent.memory.native.supports`). A backward with
``create_graph=True`` (double backward) recomputes the sequence on the differentiable torch path.
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
from collections.abc import Iterator

import torch
from torch import Tensor

from memagent.memory import native

__all__ = ["dnc_sequence"]

#: keep the step's norms, similarities and allocation order (and use M_t) for the backward instead of
#: recomputing them: ~4 KiB per sample and step at N=128, R=4 (a switch for measuring it)
KEEP_AUX = True

#: while the kernel splits its batch loops over threads, run torch's own small per-step ops (the
#: controller's matrix products of small calls, the resets' masks) on one thread inside the step loops
#: (see :func:`_steps`)
SERIAL_TORCH_IN_LOOP = True

#: the controller's per-step products run against weights packed once per call (the kernel's
#: ``packed_product``: about 0.8x the time of MKL's products in a train step) when the call has at least
#: this many rows, steps x batch with batches under 4 counted as 4 (see :func:`_packs`); smaller calls (a
#: policy's one-step calls) use torch's products with the weights as they are: packing costs about as much
#: as the products of ~64 rows (measured at B = 1, 4, 8, 16, T = 1-64, train steps and no-grad forwards)
PACK_MIN_ROWS = 64


#: the forward's and backward's large per-call buffers (the per-step states kept for backward, the gates,
#: the gradient buffers) are views of flat buffers from a small pool, reused once no tensor refers to them
#: any more (see :func:`_take`): a train step then touches no fresh pages (a fresh buffer of the C
#: library's allocator faults in, and the kernel zeroes, page by page). The pool holds at most this many
#: bytes (the least recently used buffers leave it beyond; a buffer in use then stays until its last view
#: goes) and :data:`POOL_SIZE` buffers; :func:`release_buffers` empties it.
POOL_MAX_BYTES = 256 << 20
POOL_SIZE = 8
#: smaller buffers are not pooled (the allocator serves them from memory it keeps; a pooled one costs
#: more Python time than it saves)
POOL_MIN_BYTES = 64 << 10

_pool: list[tuple[Tensor, int]] = []  # (flat buffer, its storage use count when nothing else refers to it)
_pool_lock = threading.Lock()


def _use_count(buffer: Tensor) -> int:
    """How many references (tensors, views, storages) the buffer's storage has."""
    return torch._C._storage_Use_Count(buffer.untyped_storage()._cdata)


def _take(numel: int, like: Tensor) -> Tensor:
    """A flat uninitialised buffer of ``numel`` elements of ``like``'s dtype: the smallest pooled one of
    ``numel`` to ``2 numel`` elements that nothing refers to any more (no live autograd graph, output or
    view holds its storage), else a new one (pooled if it fits). Returns a view, so that the buffer is
    busy from the moment it is handed out."""
    nbytes = numel * like.element_size()
    if not POOL_MIN_BYTES <= nbytes <= POOL_MAX_BYTES or not hasattr(torch._C, "_storage_Use_Count"):
        return like.new_empty(numel)
    with _pool_lock:
        fits = [
            (buffer.numel(), i)
            for i, (buffer, free_count) in enumerate(_pool)
            if buffer.dtype == like.dtype
            and numel <= buffer.numel() <= 2 * numel
            and _use_count(buffer) == free_count
        ]
        if fits:
            entry = _pool.pop(min(fits)[1])
        else:
            buffer = like.new_empty(numel)
            entry = (buffer, _use_count(buffer))
        _pool.append(entry)  # most recently used last
        while len(_pool) > 1 and (
            len(_pool) > POOL_SIZE or sum(b.numel() * b.element_size() for b, _ in _pool) > POOL_MAX_BYTES
        ):
            del _pool[0]
        return entry[0][:numel]


def _carve(like: Tensor, shapes: list[tuple[int, ...]]) -> list[Tensor]:
    """Contiguous uninitialised tensors of these shapes, views of one pooled buffer (see :func:`_take`)."""
    sizes = [math.prod(shape) for shape in shapes]
    flat = _take(sum(sizes), like)
    offsets = itertools.accumulate(sizes, initial=0)
    return [flat[o : o + n].view(shape) for o, n, shape in zip(offsets, sizes, shapes)]


def release_buffers() -> None:
    """Drop the pooled buffers (those still in use are freed when their last view goes)."""
    with _pool_lock:
        _pool.clear()


@functools.cache
def _torch_threads_adjustable() -> bool:
    """Whether ``torch.set_num_threads`` may change the count at any time: the OpenMP backend (the
    native backend fixes it once parallel work has started, and warns)."""
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


def _steps(steps: range, kernel_threads: int, batch: int) -> Iterator[int]:
    """The loop's steps; while they run, torch uses one thread when the kernel uses several.

    The per-step matrix products are small (B x 4H rows); with several torch threads each one wakes
    torch's OpenMP team, whose threads then compete for the cores with the kernel's own workers
    (and on a busy machine wait for each other). The thread count is restored when the loop ends
    (or is left by an exception); the large products outside the loops keep torch's threads. Only
    with torch's OpenMP backend (the usual one on Linux and Windows). ``torch.set_num_threads`` is
    process-wide: another Python thread's torch work during the loop also runs on one thread, and a
    thread whose *first* torch operation falls inside the loop keeps one thread afterwards (speed only;
    set :data:`SERIAL_TORCH_IN_LOOP` to False in multi-threaded programs that mind)."""
    threads = torch.get_num_threads()
    serial = SERIAL_TORCH_IN_LOOP and threads > 1 and min(kernel_threads, batch) > 1
    if not (serial and _torch_threads_adjustable()):
        yield from steps
        return
    torch.set_num_threads(1)
    try:
        yield from steps
    finally:
        torch.set_num_threads(threads)


def _reset_steps(episode_starts: Tensor | None) -> dict[int, Tensor]:
    """``{t: mask (B,) bool}`` for the steps where some sample's state is reset."""
    if episode_starts is None:
        return {}
    steps = torch.nonzero(episode_starts.any(0)).flatten().tolist()
    return {int(t): episode_starts[:, t] for t in steps}


def _masked(tensor: Tensor, mask: Tensor) -> Tensor:
    """``tensor`` with the rows flagged in ``mask`` (B,) set to zero (a new tensor)."""
    return tensor.masked_fill(mask.view(-1, *([1] * (tensor.dim() - 1))), 0.0)


def _addresses(buffer: Tensor) -> list[int]:
    """The data address of each ``buffer[t]`` (a contiguous buffer), computed once for the loop instead of
    a view and a ``data_ptr()`` call per step."""
    base, step = buffer.data_ptr(), buffer.stride(0) * buffer.element_size()
    return [base + t * step for t in range(buffer.shape[0])]


def _packs(steps: int, batch: int) -> bool:
    """Whether a call of ``steps`` x ``batch`` runs its controller products against packed weights."""
    return steps * max(batch, 4) >= PACK_MIN_ROWS


def _packed(kernels, like: Tensor, rows: int, cols: int, blocks: list[tuple[Tensor, int, int]]) -> Tensor:
    """A (rows, cols) weight packed for ``kernels.packed_product`` (column panels: see ``pack_panels`` in
    access_kernel.c) from ``(block, k0, n0)``: each block a (k, n) tensor of any strides, placed at rows
    k0.., columns n0.."""
    lanes = kernels.panel_lanes
    packed = like.new_empty(-(-cols // lanes) * rows * lanes)
    for block, k0, n0 in blocks:
        k, n = block.shape
        sk, sn = block.stride()
        kernels.pack_panels(k, n, block.data_ptr(), sk, sn, packed.data_ptr(), rows, k0, n0, cols)
    return packed


def _other(pair: tuple[Tensor, Tensor], current: Tensor | None) -> Tensor:
    """The buffer of ``pair`` that is not ``current`` (ping-pong gradient buffers of the reverse loop)."""
    return pair[1] if current is pair[0] else pair[0]


def _forward(config, x, w_ih, w_hh, b_gates, w_i, b_i, state, resets: dict[int, Tensor], keep: bool):
    """The recurrence; returns ``(hiddens (B, T, H), reads (B, T, R W), final state, saved or None)``."""
    kernels = native.load()[x.dtype]  # type: ignore[index]
    batch, steps, in_size = x.shape
    hsize = w_hh.shape[1]
    r, w = config.num_read_heads, config.word_size
    links = config.temporal_links
    h, c, memory, usage, link, prec, rw, ww, reads = (f.contiguous() for f in state)
    vsize = w_i.shape[0]
    rsize = r * w
    rhsize = rsize + hsize
    # the controller's per-step products gates_t += [r_{t-1} | h_{t-1}] W_rh^T and vecs_t += h_t W_i^T, with
    # W_rh^T = [W_r | W_hh]^T (R W + H, 4H) and W_i^T (H, V) packed once per call (see _packed); short
    # calls: torch's products with the transposed views
    w_r = w_ih[:, in_size:]
    packed = _packs(steps, batch)
    if packed:
        w_rh_t = _packed(kernels, x, rhsize, 4 * hsize, [(w_r.t(), 0, 0), (w_hh.t(), rsize, 0)])
        w_i_t = _packed(kernels, x, hsize, vsize, [(w_i.t(), 0, 0)])
    # rhbuf[t] = [r_t | h_t], the controller's input rows: the LSTM kernel writes h_t there (row stride
    # R W + H), r_t is copied from the access step's contiguous reads (rbuf, the reads output)
    rhbuf = x.new_empty(steps + 1, batch, rhsize)
    cbuf = x.new_empty(steps + 1, batch, hsize)
    rbuf = x.new_empty(steps + 1, batch, rsize)
    # the per-step states the steps write, except the last step's (outputs): with backward all kept (the
    # memory M_t only at odd steps), without it two ping-pong slots; with the gates, the interface vectors
    # and the kept norms, views of one pooled buffer (see _take). The even steps' M_t (not kept) go to a
    # scratch buffer of its own, free again when the forward returns (the backward rebuilds into it).
    last = steps - 1
    slots = last if keep else min(last, 2)
    memory_slots = last // 2 if keep else slots
    keep_aux = keep and KEEP_AUX
    aux_size = native.aux_size(config)
    shapes = [(steps, batch, 4 * hsize), (steps, batch, vsize), (memory_slots, *memory.shape)]
    shapes += [(slots, *f.shape) for f in (usage, rw, ww)]
    shapes += [(slots, *f.shape) for f in (link, prec)] if links else []
    shapes += [(steps, batch, aux_size)] if keep_aux else []
    gates, vecs, memory_buf, *step_bufs = _carve(x, shapes)
    memory_s = memory_buf.unbind(0)
    scratch = _carve(x, [tuple(memory.shape)])[0] if keep and last > 0 else None
    usage_s, rw_s, ww_s = (f.unbind(0) for f in step_bufs[:3])
    link_s, prec_s = (f.unbind(0) for f in step_bufs[3:5]) if links else ((), ())
    aux_s = step_bufs[-1].unbind(0) if keep_aux else None
    # the input part of the gates (b + W_x x_t) for all steps at once, and the interface bias, written
    # where the steps then add their products in place (an addmm with out= would copy them per step)
    x_tm = x.transpose(0, 1).reshape(steps * batch, in_size)
    torch.addmm(b_gates, x_tm, w_ih[:, :in_size].t(), out=gates.view(steps * batch, 4 * hsize))
    vecs.copy_(b_i)
    rhbuf[0, :, :rsize], rhbuf[0, :, rsize:], cbuf[0] = reads.reshape(batch, rsize), h, c
    threads = native.num_threads()
    cfg = native._config(config, batch, vsize, threads)
    ptr = native._ptr
    # per-step views, made once (indexing in the loop costs a dispatch each)
    rh_s, c_s = rhbuf.unbind(0), cbuf.unbind(0)
    if not packed:
        gates_s, vecs_s, h_s = gates.unbind(0), vecs.unbind(0), rhbuf[:, :, rsize:].unbind(0)
        w_r_view_t, w_hh_view_t, w_i_view_t = w_r.t(), w_hh.t(), w_i.t()
    gates_a, vecs_a, rh_a, c_a, r_a = (_addresses(f) for f in (gates, vecs, rhbuf, cbuf, rbuf))
    h_a = [a + rsize * x.element_size() for a in rh_a]
    step_inputs: list[tuple] = []
    reset_inputs: dict[int, tuple[Tensor, Tensor]] = {}  # ([r | h], c) entering a reset step
    if packed:
        product, w_rh_t_a, w_i_t_a = kernels.packed_product, w_rh_t.data_ptr(), w_i_t.data_ptr()
    for t in _steps(range(steps), threads, batch):
        rh_in, rh_in_a, c_in_a = rh_s[t], rh_a[t], c_a[t]
        if t in resets:
            mask = resets[t]
            rh_in, c_in = _masked(rh_in, mask), _masked(c_s[t], mask)
            reset_inputs[t] = (rh_in, c_in)
            rh_in_a, c_in_a = ptr(rh_in), ptr(c_in)
            memory, usage, rw, ww = (_masked(f, mask) for f in (memory, usage, rw, ww))
            if links:
                link, prec = _masked(link, mask), _masked(prec, mask)
        if packed:
            product(batch, rhsize, 4 * hsize, rh_in_a, rhsize, w_rh_t_a, gates_a[t], 4 * hsize, 1, threads)
        else:
            gates_s[t].addmm_(rh_in[:, :rsize], w_r_view_t).addmm_(rh_in[:, rsize:], w_hh_view_t)
        kernels.lstm_forward(batch, hsize, gates_a[t], c_in_a, h_a[t + 1], rhsize, c_a[t + 1], threads)
        if packed:
            product(batch, hsize, vsize, h_a[t + 1], rhsize, w_i_t_a, vecs_a[t], vsize, 1, threads)
        else:
            vecs_s[t].addmm_(h_s[t + 1], w_i_view_t)
        if t == last:  # the final state: new tensors (outputs)
            new_memory, new_usage = torch.empty_like(memory), torch.empty_like(usage)
            new_link = torch.empty_like(link) if links else link
            new_prec = torch.empty_like(prec) if links else prec
            new_rw, new_ww = torch.empty_like(rw), torch.empty_like(ww)
        else:
            k = t if keep else t % 2
            new_memory = (memory_s[t // 2] if t % 2 else scratch) if keep else memory_s[k]
            new_usage, new_rw, new_ww = usage_s[k], rw_s[k], ww_s[k]
            new_link, new_prec = (link_s[k], prec_s[k]) if links else (link, prec)
        aux = aux_s[t] if keep_aux else None  # norms, similarities, order
        kernels.access_forward(
            cfg,
            vecs_a[t],
            ptr(memory),
            ptr(usage),
            ptr(link),
            ptr(prec),
            ptr(rw),
            ptr(ww),
            r_a[t + 1],
            ptr(new_memory),
            ptr(new_usage),
            ptr(new_link),
            ptr(new_prec),
            ptr(new_rw),
            ptr(new_ww),
            ptr(aux),
        )
        if t < last:  # r_t into the next step's controller input row
            kernels.add_rows(batch, rsize, r_a[t + 1], rsize, None, 0, rh_a[t + 1], rhsize)
        if keep:  # M_{t-1} only every second step (and at resets); rebuilt in backward otherwise
            kept_memory = memory if (t % 2 == 0 or t in resets) else None
            # w^r_t as the step produced it (before any reset); detached: the last one is an output
            step_inputs.append((kept_memory, usage, link, prec, rw, ww, new_rw.detach(), aux))
        memory, usage, link, prec, rw, ww = new_memory, new_usage, new_link, new_prec, new_rw, new_ww
    # (h, c, r as copies: outputs of an autograd node must not be overlapping views of one buffer)
    final = (
        rhbuf[steps, :, rsize:].clone(),
        cbuf[steps].clone(),
        memory,
        usage,
        link,
        prec,
        rw,
        ww,
        rbuf[steps].view(batch, r, w).clone(),
    )
    hiddens, reads_out = rhbuf[1:, :, rsize:].transpose(0, 1), rbuf[1:].transpose(0, 1)
    # the final memory M_T (detached: it is an output) is the last step's M_t in backward
    saved = (rhbuf, cbuf, gates, vecs, step_inputs, reset_inputs, memory.detach()) if keep else None
    return hiddens, reads_out, final, saved


def _torch_path(config, x, w_ih, w_hh, b_gates, w_i, b_i, state, resets: dict[int, Tensor]):
    """The same recurrence in differentiable torch operations (the fused per-step Functions), for
    double backward."""
    from memagent.memory import fused

    in_size = x.shape[-1]
    batch = x.shape[0]
    h, c, *mem = state
    gx = torch.nn.functional.linear(x, w_ih[:, :in_size], b_gates)
    hiddens, reads_all = [], []
    for t in range(x.shape[1]):
        if t in resets:
            h, c, *mem = (_masked(f, resets[t]) for f in (h, c, *mem))
        prev_reads = mem[6].reshape(batch, -1)
        gates = gx[:, t] + prev_reads @ w_ih[:, in_size:].t() + h @ w_hh.t()
        h, c = fused.lstm_cell(gates, c)
        reads, mem = fused.access_step(torch.nn.functional.linear(h, w_i, b_i), tuple(mem), config)
        mem = list(mem)
        hiddens.append(h)
        reads_all.append(reads.reshape(batch, -1))
    return (torch.stack(hiddens, 1), torch.stack(reads_all, 1), h, c, *mem)


class _DncSequence(torch.autograd.Function):
    """See the module docstring. Inputs: ``(config, episode_starts, x, W_ih, W_hh, b_ih + b_hh, W_xi,
    b_xi, h, c, M, u, L, p, w^r, w^w, r)``; outputs ``(hiddens, reads, h, c, M, u, L, p, w^r, w^w, r)``."""

    @staticmethod
    def forward(ctx, config, episode_starts, x, w_ih, w_hh, b_gates, w_i, b_i, *state):
        resets = _reset_steps(episode_starts)
        hiddens, reads, final, saved = _forward(config, x, w_ih, w_hh, b_gates, w_i, b_i, state, resets, True)
        ctx.config = config
        ctx.resets = resets
        ctx.set_materialize_grads(False)  # absent gradients stay None (no N x N zeros to fill)
        ctx.buffers = saved
        ctx.save_for_backward(x, w_ih, w_hh, b_gates, w_i, b_i, *state)
        return (hiddens, reads, *final)

    @staticmethod
    def backward(ctx, *grads):
        x, w_ih, w_hh, b_gates, w_i, b_i, *rest = ctx.saved_tensors
        state = rest
        config, resets = ctx.config, ctx.resets
        if torch.is_grad_enabled():  # double backward: recompute on the differentiable torch path
            with torch.enable_grad():
                inputs = [x, w_ih, w_hh, b_gates, w_i, b_i, *state]
                outputs = _torch_path(config, x, w_ih, w_hh, b_gates, w_i, b_i, state, resets)
                wanted = [i for i, t in enumerate(inputs) if t.requires_grad]
                pairs = [(o, g) for o, g in zip(outputs, grads) if o.requires_grad and g is not None]
                result = torch.autograd.grad(
                    [o for o, _ in pairs],
                    [inputs[i] for i in wanted],
                    [g for _, g in pairs],
                    create_graph=True,
                    allow_unused=True,
                )
            out: list[Tensor | None] = [None] * len(inputs)
            for i, g in zip(wanted, result):
                out[i] = g
            return (None, None, *out)
        need_x = ctx.needs_input_grad[2]
        return (None, None, *_backward(config, resets, ctx.buffers, x, w_ih, w_hh, w_i, state, grads, need_x))


def _backward(config, resets, buffers, x, w_ih, w_hh, w_i, state, grads, need_x: bool = True):
    """The reverse loop: gradients of ``(x, W_ih, W_hh, b_gates, W_xi, b_xi, *state)`` (that of ``x``
    None unless ``need_x``: observations rarely need one, and it is a (T B, 4H) x (4H, I) product)."""
    kernels = native.load()[x.dtype]  # type: ignore[index]
    rhbuf, cbuf, gates, vecs, step_inputs, reset_inputs, next_memory = buffers
    batch, steps, in_size = x.shape
    hsize = w_hh.shape[1]
    r, w = config.num_read_heads, config.word_size
    rsize = r * w
    rhsize = rsize + hsize
    links = config.temporal_links
    vsize = w_i.shape[0]
    # absent (None) gradients: zeros, except for M_T and L_T, which the kernel reads as NULL (zero); those
    # of the hiddens and reads (B, T, .) as they come when their rows are (the kernels take row strides:
    # the output layer's concatenation hands over column slices)
    shapes = [(batch, steps, hsize), (batch, steps, r * w), (batch, hsize), (batch, hsize), None]
    shapes += [tuple(f.shape) for f in state[3:8]] + [(batch, r, w)]
    grads = [
        (g if k < 2 and g.stride(-1) == 1 else g.contiguous())
        if g is not None
        else (None if k in (4, 6) else x.new_zeros(shapes[k]))
        for k, g in enumerate(grads)
    ]
    g_hiddens, g_reads, gh, gc, g_memory, g_usage, g_link, g_prec, g_rw, g_ww, g_r = grads
    if not links:
        g_link = g_prec = None
    g_r = g_r.reshape(batch, rsize)
    # dgates and dvecs: views of one pooled buffer (see _take); the scratch memory into which the odd
    # steps' M_{t-1} is rebuilt (dead after the step before it): the forward's scratch buffer, as a rule
    g_gates, g_vecs = _carve(x, [(steps, batch, 4 * hsize), (steps, batch, vsize)])
    rebuilt = _carve(x, [tuple(next_memory.shape)])[0] if steps > 1 else None
    threads = native.num_threads()
    cfg = native._config(config, batch, vsize, threads)
    ptr = native._ptr
    w_ih_x = w_ih[:, :in_size]
    # [dr_{t-1} | dh_{t-1}] = dgates_t [W_r | W_hh]: one product per step into one buffer (read before the
    # next step's product overwrites it); dh_t's part dvecs_t W_i. The weights packed once (see _packed);
    # short calls: torch's products, [dr_{t-1} | dh_{t-1}] in two
    w_r = w_ih[:, in_size:]
    packed = _packs(steps, batch)
    if packed:
        w_rh = _packed(kernels, x, 4 * hsize, rhsize, [(w_r, 0, 0), (w_hh, 0, rsize)])
        w_i_p = _packed(kernels, x, vsize, hsize, [(w_i, 0, 0)])
        product, w_rh_a, w_i_a = kernels.packed_product, w_rh.data_ptr(), w_i_p.data_ptr()
        g_rh = x.new_empty(batch, rhsize)
        g_rh_a = g_rh.data_ptr()
        g_r_view, gh_view = g_rh[:, :rsize], g_rh[:, rsize:]
    else:
        g_r_view, gh_view = x.new_empty(batch, rsize), x.new_empty(batch, hsize)
        g_gates_s, g_vecs_s = g_gates.unbind(0), g_vecs.unbind(0)
    g_reads_t = x.new_empty(batch, rsize)  # dr_t from the output and from the next step's controller
    gh_vec = x.new_empty(batch, hsize)  # dvecs_t W_i: dh_t's part from the interface layer
    gc_pair = (x.new_empty(batch, hsize), x.new_empty(batch, hsize))  # dc_{t-1} written, dc_t read
    g_reads_t_a, gh_vec_a = g_reads_t.data_ptr(), gh_vec.data_ptr()
    gates_a, vecs_a, c_a, g_gates_a, g_vecs_a = (_addresses(f) for f in (gates, vecs, cbuf, g_gates, g_vecs))
    # d hiddens[:, t] and d reads[:, t]: rows of the (B, T, .) output gradients (their row strides: ld)
    size = x.element_size()
    g_hid_a = [g_hiddens.data_ptr() + t * g_hiddens.stride(1) * size for t in range(steps)]
    g_reads_a = [g_reads.data_ptr() + t * g_reads.stride(1) * size for t in range(steps)]
    g_hid_ld, g_reads_ld = g_hiddens.stride(0), g_reads.stride(0)
    # du, dp, dw^r, dw^w: two buffers each, the step writes the one it does not read
    pairs = [(x.new_empty(f.shape), x.new_empty(f.shape)) for f in (state[3], state[5], state[6], state[7])]
    own_grads = False
    for t in _steps(range(steps - 1, -1, -1), threads, batch):
        kept_memory, usage, link, prec, rw, ww, new_rw, aux = step_inputs[t]
        if kept_memory is None:  # rebuild M_{t-1} from M_{t-2} (kept) and step t-1's write
            kept_memory = rebuilt
            kernels.erase_write(cfg, vecs_a[t - 1], ptr(step_inputs[t - 1][0]), ptr(ww), ptr(kept_memory))
        g_r_a, g_r_ld = ptr(g_r), g_r.stride(0)
        kernels.add_rows(batch, rsize, g_reads_a[t], g_reads_ld, g_r_a, g_r_ld, g_reads_t_a, rsize)
        outs = [
            _other(pairs[0], g_usage),
            _other(pairs[1], g_prec),
            _other(pairs[2], g_rw),
            _other(pairs[3], g_ww),
        ]
        # dM_{t-1} and dL_{t-1} overwrite dM_t and dL_t row by row once those buffers are ours
        # (not the caller's gradients): no new N x N buffer per step, and it stays in cache
        outs.insert(0, g_memory if own_grads else torch.empty_like(kept_memory))
        outs.insert(2, (g_link if own_grads else torch.empty_like(link)) if links else link)
        if not links:
            outs[3] = prec
        kernels.access_backward(
            cfg,
            vecs_a[t],
            ptr(kept_memory),
            ptr(usage),
            ptr(link),
            ptr(prec),
            ptr(rw),
            ptr(ww),
            ptr(new_rw),
            g_reads_t_a,
            ptr(g_memory),
            ptr(g_usage),
            ptr(g_link),
            ptr(g_prec),
            ptr(g_rw),
            ptr(g_ww),
            g_vecs_a[t],
            *(ptr(o) for o in outs),
            ptr(aux),
            ptr(None if t + 1 in resets or aux is None else next_memory),  # M_t: next step's input
        )
        g_memory, g_usage, g_link, g_prec, g_rw, g_ww = outs
        own_grads = True
        next_memory = kept_memory
        if packed:
            product(batch, vsize, hsize, g_vecs_a[t], vsize, w_i_a, gh_vec_a, hsize, 0, threads)
        else:
            torch.mm(g_vecs_s[t], w_i, out=gh_vec)
        gc_prev = _other(gc_pair, gc)
        kernels.lstm_backward(  # dh_t = dvecs_t W_i + d hiddens[:, t] + the next step's dh_t
            batch,
            hsize,
            gates_a[t],
            ptr(reset_inputs[t][1]) if t in resets else c_a[t],
            c_a[t + 1],
            gh_vec_a,
            hsize,
            g_hid_a[t],
            g_hid_ld,
            ptr(gh),
            gh.stride(0),
            ptr(gc),
            g_gates_a[t],
            ptr(gc_prev),
            threads,
        )
        gc = gc_prev
        if packed:
            product(batch, 4 * hsize, rhsize, g_gates_a[t], 4 * hsize, w_rh_a, g_rh_a, rhsize, 0, threads)
        else:
            torch.mm(g_gates_s[t], w_r, out=g_r_view)
            torch.mm(g_gates_s[t], w_hh, out=gh_view)
        g_r, gh = g_r_view, gh_view
        if t in resets:  # the state entering step t was reset for these samples
            mask = resets[t]
            gh, gc, g_r, g_memory, g_usage, g_rw, g_ww = (
                _masked(f, mask) for f in (gh, gc, g_r, g_memory, g_usage, g_rw, g_ww)
            )
            if links:
                g_link, g_prec = _masked(g_link, mask), _masked(g_prec, mask)
    if not links:
        g_link, g_prec = torch.zeros_like(state[4]), torch.zeros_like(state[5])
    flat_g = g_gates.view(steps * batch, 4 * hsize)
    flat_v = g_vecs.view(steps * batch, vsize)
    x_tm = x.transpose(0, 1).reshape(steps * batch, in_size)
    rh_prev = rhbuf[:-1]
    if reset_inputs:  # the controller saw the reset [r | h] at those steps
        rh_prev = rh_prev.clone()
        for t, (rh_in, _) in reset_inputs.items():
            rh_prev[t] = rh_in
    rh_prev = rh_prev.view(steps * batch, rhsize)
    g_w_ih = torch.cat([flat_g.t() @ x_tm, flat_g.t() @ rh_prev[:, :rsize]], dim=1)
    g_w_hh = flat_g.t() @ rh_prev[:, rsize:]
    g_b = flat_g.sum(0)
    g_w_i = flat_v.t() @ rhbuf[1:, :, rsize:].reshape(steps * batch, hsize)
    g_b_i = flat_v.sum(0)
    g_x = (flat_g @ w_ih_x).view(steps, batch, in_size).transpose(0, 1) if need_x else None
    return (
        g_x,
        g_w_ih,
        g_w_hh,
        g_b,
        g_w_i,
        g_b_i,
        gh.clone(),  # (a copy: gh and dr_0 are views of one buffer)
        gc,
        g_memory,
        g_usage,
        g_link,
        g_prec,
        g_rw,
        g_ww,
        g_r.clone().view(batch, r, w),
    )


def dnc_sequence(
    config,
    x: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_gates: Tensor,
    w_i: Tensor,
    b_i: Tensor,
    state: tuple[Tensor, ...],
    episode_starts: Tensor | None = None,
) -> tuple[Tensor, ...]:
    """Run the DNC recurrence over ``x`` (B, T, I) on the native kernel.

    :param config: the ``MemoryConfig`` (one write head).
    :param w_ih: the LSTM's input weights (4H, I + R W) (input first, then the previous reads).
    :param w_hh: the LSTM's hidden weights (4H, H).
    :param b_gates: ``b_ih + b_hh`` (4H,).
    :param w_i: the interface layer's weight (V, H); ``b_i`` its bias (V,).
    :param state: the ``DNCState`` fields ``(h, c, M, u, L, p, w^r, w^w, r)``.
    :param episode_starts: optional (B, T) bool: reset those samples before those steps.
    :return: ``(hiddens (B, T, H), reads (B, T, R W), *final state fields)``.
    """
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (x, w_ih, w_hh, b_gates, w_i, b_i, *state)
    )
    if needs_grad:
        return _DncSequence.apply(config, episode_starts, x, w_ih, w_hh, b_gates, w_i, b_i, *state)
    resets = _reset_steps(episode_starts)
    with torch.no_grad():
        hiddens, reads, final, _ = _forward(config, x, w_ih, w_hh, b_gates, w_i, b_i, state, resets, False)
    return (hiddens, reads, *final)

"""Native CPU kernel for the one-write-head memory-access step (forward and backward).

``access_kernel.c`` holds plain C loops over float32 / float64 buffers that compute exactly what
:class:`memagent.memory.fused._AccessStep` computes (interface activations, retention, usage,
allocation, write weighting, erase-then-write, link and precedence, directional weightings, read
weighting, reads) and its first-order backward, one pass over each N x N quantity per step and no
per-op dispatch. It is compiled at first use with the system C compiler into a per-user cache
(``$MEMAGENT_CACHE_DIR`` or ``~/.cache/memagent``), keyed by a hash of the source, the flags, the
platform and the CPU's feature flags (``-march=native``), and loaded with :mod:`ctypes`.

``MEMAGENT_NATIVE=0`` disables it; without a compiler, or if the build fails, a warning is logged
once and the torch path is used. :func:`available` tells whether the kernel is in use.

Threads: each call splits its batch loop (every sample's work is independent) into contiguous chunks
run by a small persistent pthread pool inside the library, on :func:`num_threads` threads
(``torch.get_num_threads()``, or ``$MEMAGENT_NATIVE_THREADS``), never more than the batch size and
never chunks smaller than a few microseconds of work (small calls run inline). Results are bitwise
identical for every thread count. A call made while another thread's call holds the pool runs inline;
after ``fork()`` the child starts with an empty pool. Idle workers spin ~300 us
(``$MEMAGENT_NATIVE_SPIN_US``, read when the library loads) before they sleep.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from memagent.cbuild import build_library, native_enabled

__all__ = [
    "available",
    "enabled",
    "load",
    "num_threads",
    "access_forward",
    "access_backward",
    "supports",
]

logger = logging.getLogger(__name__)

_SOURCE = Path(__file__).resolve().with_name("access_kernel.c")
_FLAGS = [
    "-O3",
    "-march=native",  # the cache key includes the CPU's feature flags
    "-fPIC",
    "-shared",
    "-std=gnu11",
    "-fopenmp-simd",  # honour the `omp simd` reductions (no OpenMP runtime)
    "-fno-math-errno",
    "-fassociative-math",  # vectorised reductions (sums in a different order than torch's)
    "-fno-signed-zeros",
    "-fno-trapping-math",
    "-pthread",  # the batch-loop thread pool (plain pthreads)
]
_LOCK = threading.Lock()
_STATE: dict[str, object] = {}


class _Config(ctypes.Structure):
    _fields_ = [
        ("B", ctypes.c_int),
        ("N", ctypes.c_int),
        ("W", ctypes.c_int),
        ("R", ctypes.c_int),
        ("V", ctypes.c_int),
        ("alloc", ctypes.c_int),
        ("links", ctypes.c_int),
        ("decay", ctypes.c_double),
        ("eps", ctypes.c_double),
        ("threads", ctypes.c_int),
    ]


class _Kernels(NamedTuple):
    """The ctypes functions of one dtype."""

    access_forward: Callable
    access_backward: Callable
    lstm_forward: Callable
    lstm_backward: Callable
    erase_write: Callable
    add_rows: Callable
    transpose: Callable
    pack_panels: Callable
    packed_product: Callable
    panel_lanes: int


def enabled() -> bool:
    """False when the environment variable ``MEMAGENT_NATIVE`` is ``0`` (read at every call)."""
    return native_enabled()


def _bind(library: ctypes.CDLL) -> dict[str, object]:
    if not hasattr(library, "add_rows_f32"):  # e.g. benchmarks/dnc_speed.py --against an older revision
        raise RuntimeError(
            "native kernel library from before the LSTM functions took row strides (no add_rows): the "
            "sequence cannot call it; compare whole trees instead (benchmarks/dnc_speed.py --against REV)"
        )
    pointer = ctypes.c_void_p
    functions = {}
    for suffix, dtype in (("f32", torch.float32), ("f64", torch.float64)):
        forward = getattr(library, f"access_forward_{suffix}")
        forward.argtypes = [ctypes.POINTER(_Config)] + [pointer] * 15
        forward.restype = None
        backward = getattr(library, f"access_backward_{suffix}")
        backward.argtypes = [ctypes.POINTER(_Config)] + [pointer] * 24
        backward.restype = None
        lstm_forward = getattr(library, f"lstm_forward_{suffix}")
        integer = ctypes.c_int
        # (B, H, gates, c_prev, h, h's row stride, c, threads)
        lstm_forward.argtypes = [integer, integer, pointer, pointer, pointer, integer, pointer, integer]
        lstm_forward.restype = None
        lstm_backward = getattr(library, f"lstm_backward_{suffix}")
        # (B, H, gates, c_prev, c, dh_a, its row stride, dh_b, ..., dh_c, ..., dc, d gates, dc_prev, threads)
        lstm_backward.argtypes = [integer, integer] + [pointer] * 4 + [integer, pointer, integer, pointer]
        lstm_backward.argtypes += [integer] + [pointer] * 3 + [integer]
        lstm_backward.restype = None
        add_rows = getattr(library, f"add_rows_{suffix}")  # (B, n, a, lda, b or NULL, ldb, out, ldo)
        add_rows.argtypes = [integer, integer, pointer, integer, pointer, integer, pointer, integer]
        add_rows.restype = None
        transpose = getattr(library, f"transpose_{suffix}")  # (rows, cols, src, lds, dst, ldd)
        transpose.argtypes = [integer, integer, pointer, integer, pointer, integer]
        transpose.restype = None
        # (K, n, src, sk, sn, dst, rows, k0, n0, cols)
        pack_panels = getattr(library, f"pack_panels_{suffix}")
        long = ctypes.c_long
        pack_panels.argtypes = [integer, integer, pointer, long, long, pointer] + [integer] * 4
        pack_panels.restype = None
        # (B, K, n, a, lda, packed weight, out, ldo, accumulate, threads)
        packed_product = getattr(library, f"packed_product_{suffix}")
        packed_product.argtypes = [integer] * 3 + [pointer, integer, pointer, pointer] + [integer] * 3
        packed_product.restype = None
        panel_lanes = getattr(library, f"panel_lanes_{suffix}")
        panel_lanes.restype = ctypes.c_int
        erase_write = getattr(library, f"erase_write_{suffix}")
        erase_write.argtypes = [ctypes.POINTER(_Config)] + [pointer] * 4
        erase_write.restype = None
        functions[dtype] = _Kernels(
            forward,
            backward,
            lstm_forward,
            lstm_backward,
            erase_write,
            add_rows,
            transpose,
            pack_panels,
            packed_product,
            panel_lanes(),
        )
    return functions


#: the thread pool's functions (tests and benchmarks): name -> (restype, argtypes)
_POOL_FUNCTIONS = {
    "pool_workers": (ctypes.c_int, []),
    "pool_parallel_calls": (ctypes.c_long, []),
    "pool_set_grain": (None, [ctypes.c_double]),
    "pool_get_grain": (ctypes.c_double, []),
    "pool_limit": (ctypes.c_int, []),
    "pool_late_calls": (ctypes.c_long, []),
    "pool_set_adaptive": (None, [ctypes.c_int]),
    "pool_dispatch_ns": (
        ctypes.c_double,
        [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long],
    ),
}


def _bind_pool(library: ctypes.CDLL) -> ctypes.CDLL:
    """Declare the thread pool's functions (:data:`_POOL_FUNCTIONS`) on ``library``."""
    for name, (restype, argtypes) in _POOL_FUNCTIONS.items():
        function = getattr(library, name)
        function.restype, function.argtypes = restype, argtypes
    return library


def _check_spin_setting() -> None:
    spin = os.environ.get("MEMAGENT_NATIVE_SPIN_US", "")
    if spin and not (spin.lstrip().isdigit() and int(spin) <= 10_000_000):  # the library reads it at load
        logger.warning(
            "MEMAGENT_NATIVE_SPIN_US=%r is not a whole number of microseconds in 0..10000000: ignored "
            "(idle kernel threads spin 300 us before they sleep)",
            spin,
        )


def _bind_all(library: ctypes.CDLL) -> dict:
    """The ``{dtype: _Kernels}`` functions of a loaded library (and its pool functions in ``_STATE``)."""
    functions = _bind(library)
    _STATE["library"] = _bind_pool(library)
    return functions


def load() -> dict | None:
    """The kernel's ``{dtype: _Kernels}`` ctypes functions, building them at the first call
    (:func:`memagent.cbuild.build_library`: cached per source, flags and CPU; retried without
    ``-march=native``); None when disabled (``MEMAGENT_NATIVE=0``) or unavailable (no compiler, failed
    build: a warning is logged once)."""
    if not enabled():
        return None
    if "functions" in _STATE:
        return _STATE["functions"]  # type: ignore[return-value]
    with _LOCK:
        if "functions" not in _STATE:
            _check_spin_setting()
            library = build_library(_SOURCE, _FLAGS, what="memagent.memory.native")
            _STATE["functions"] = None if library is None else _bind_all(library)
    return _STATE["functions"]  # type: ignore[return-value]


def available() -> bool:
    """Whether the native kernel is in use (enabled, compiled and loaded)."""
    return load() is not None


def _is_plain(tensor: Tensor) -> bool:
    return not torch._C._functorch.is_functorch_wrapped_tensor(tensor)


def supports(*tensors: Tensor) -> bool:
    """Whether the kernel can run on these tensors: CPU, float32 or float64 (all the same), plain
    (not wrapped by a ``torch.func`` transform), and the kernel available."""
    first = tensors[0]
    if first.dtype not in (torch.float32, torch.float64):
        return False
    for tensor in tensors:
        if tensor.device.type != "cpu" or tensor.dtype != first.dtype or not _is_plain(tensor):
            return False
    return available()


_THREADS_ENV = "MEMAGENT_NATIVE_THREADS"
_parsed_threads: dict[str, int] = {}


def num_threads() -> int:
    """Threads one kernel call may use: ``$MEMAGENT_NATIVE_THREADS`` when set (a positive integer),
    else ``torch.get_num_threads()`` (read at every call: follows ``torch.set_num_threads``). A call
    uses at most its batch size of them, fewer when its work is small."""
    raw = os.environ.get(_THREADS_ENV)
    if raw is None or not raw.strip():
        return torch.get_num_threads()
    value = _parsed_threads.get(raw)
    if value is None:
        try:
            value = int(raw.strip())
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(f"{_THREADS_ENV}={raw!r}: expected a positive integer (threads per kernel call)")
        _parsed_threads[raw] = value
    return value


def _pool() -> ctypes.CDLL | None:
    """The loaded library with its ``pool_*`` functions (tests, benchmarks); None without the kernel."""
    return _STATE.get("library") if load() is not None else None  # type: ignore[return-value]


def _config(config, batch: int, vector_size: int, threads: int | None = None) -> _Config:
    """The C struct for one call; ``threads`` defaults to :func:`num_threads`."""
    return _Config(
        batch,
        config.memory_size,
        config.word_size,
        config.num_read_heads,
        vector_size,
        int(config.allocation),
        int(config.temporal_links),
        float(config.usage_decay),
        float(config.epsilon),
        num_threads() if threads is None else threads,
    )


def aux_size(config) -> int:
    """Values per sample the forward keeps for the backward when asked (``aux``): (4 + R) N."""
    return (4 + config.num_read_heads) * config.memory_size


def _ptr(tensor: Tensor | None) -> int:
    """The tensor's data address (0, a NULL pointer, for None)."""
    return 0 if tensor is None else tensor.data_ptr()


def access_forward(
    config,
    vector: Tensor,
    memory: Tensor,
    usage: Tensor,
    link: Tensor,
    precedence: Tensor,
    read_weights: Tensor,
    write_weights: Tensor,
) -> tuple[Tensor, ...]:
    """One access step forward; the inputs as in :func:`memagent.memory.fused.access_step` (shapes
    vector (B, V), M (B, N, W), u (B, N), L (B, 1, N, N) or (B, 0), p (B, 1, N) or (B, 0), w^r (B, R, N),
    w^w (B, 1, N)). Returns ``(reads (B, R, W), M_t, u_t, [L_t, p_t,] w^r_t, w^w_t)`` (L_t, p_t only
    with temporal links)."""
    forward = load()[vector.dtype].access_forward  # type: ignore[index]
    inputs = [t.contiguous() for t in (vector, memory, usage, link, precedence, read_weights, write_weights)]
    vector, memory, usage, link, precedence, read_weights, write_weights = inputs
    b = vector.shape[0]
    r, w = config.num_read_heads, config.word_size
    reads = vector.new_empty(b, r, w)
    new_memory = torch.empty_like(memory)
    new_usage = torch.empty_like(usage)
    links = config.temporal_links
    new_link = torch.empty_like(link) if links else link
    new_prec = torch.empty_like(precedence) if links else precedence
    new_rw = torch.empty_like(read_weights)
    new_ww = torch.empty_like(write_weights)
    cfg = _config(config, b, vector.shape[1])
    forward(
        ctypes.byref(cfg),
        *(_ptr(t) for t in inputs),
        *(_ptr(t) for t in (reads, new_memory, new_usage, new_link, new_prec, new_rw, new_ww)),
        0,  # no aux: the per-step backward recomputes the step
    )
    if links:
        return reads, new_memory, new_usage, new_link, new_prec, new_rw, new_ww
    return reads, new_memory, new_usage, new_rw, new_ww


def access_backward(
    config, inputs: tuple[Tensor, ...], new_read_weights: Tensor, grads: tuple[Tensor, ...]
) -> tuple[Tensor, ...]:
    """Gradients of ``(vector, M, u, L, p, w^r, w^w)`` from the step's inputs (as for
    :func:`access_forward`), its output ``w^r_t`` (B, R, N) and the gradients of its outputs (same
    order as its return value). Everything else of the step is recomputed from the inputs."""
    backward = load()[inputs[0].dtype].access_backward  # type: ignore[index]
    inputs = tuple(t.contiguous() for t in inputs)
    new_read_weights = new_read_weights.contiguous()
    vector, memory, usage, link, precedence, read_weights, write_weights = inputs
    links = config.temporal_links
    if links:
        g_reads, g_memory, g_usage, g_link, g_prec, g_rw, g_ww = grads
    else:
        g_reads, g_memory, g_usage, g_rw, g_ww = grads
        g_link, g_prec = link, precedence  # unused by the kernel
    grads_in = [t.contiguous() for t in (g_reads, g_memory, g_usage, g_link, g_prec, g_rw, g_ww)]
    outs = [torch.empty_like(t) for t in inputs]
    if not links:
        outs[3], outs[4] = torch.zeros_like(link), torch.zeros_like(precedence)
    cfg = _config(config, vector.shape[0], vector.shape[1])
    backward(
        ctypes.byref(cfg),
        *(_ptr(t) for t in inputs),
        _ptr(new_read_weights),
        *(_ptr(t) for t in grads_in),
        *(_ptr(t) for t in outs),
        0,  # no aux
        0,  # no M_t: recomputed
    )
    return tuple(outs)

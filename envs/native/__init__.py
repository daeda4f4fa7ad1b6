"""Native (C) episode kernel of :class:`envs.regression.NonStationaryRegression` and its batched VecEnv.

``episode_kernel.c`` fuses, in one pass per copy and without temporaries, what the numpy path of
:func:`envs.regression.build_episodes` does in many full-array passes:

1. Box–Muller from the copy's random words (the formula of :func:`envs.regression.gaussians`; the words
   are each copy's own generator's, exactly as before) → inputs ``x`` written straight into the copy's
   contiguous block of the episode arrays (viewed time-major ``(L, B, d)``), and the feedback noise
   likewise;
2. the targets of the built-in task families (``sin_mean``, ``half_cos_mean``, ``tanh_shift(k)``) per
   ``(t, b)`` row; rows of user tasks (any numpy callable) are left to the numpy code of
   :func:`envs.regression.build_episodes`, so custom tasks keep working;

and :class:`StepKernel` fuses a step's scoring (clip, squared error, reward) and observation assembly
into one call.

It is compiled at first use by :func:`memagent.cbuild.build_library` (cache ``$MEMAGENT_CACHE_DIR`` or
``~/.cache/memagent``) with ``-O3 -march=native -ffp-contract=off`` (:data:`FLAGS`): without fused
multiply-adds or re-association every element is one IEEE float32 expression, the same in vector and
scalar code and on every CPU (the portable retry without ``-m…`` flags gives the same values), so a
copy's episode never depends on its batch (the single env and the batched env stay *exactly* equal).
``MEMAGENT_NATIVE=0`` (read at every episode build) selects the numpy path; without a compiler a warning
is logged once and numpy is used.

Accuracy (measured on 10^6 samples; asserted with margin in ``tests/test_envs_native.py``): the Gaussians
are within 5.3e-7 (absolute, |z| ≤ 6.7; 2.5e-7 relative to max(|z|, 1)) of a float64 evaluation of the
same formula on the same float32 uniforms — numpy's own float32 path is within 1.8e-6, as it rounds the
angle 2πu to float32 first — and the targets within 8e-8 (1.4e-7 relative) of the float64 task
formulas. Native and numpy paths draw the same words and task sequences; their inputs differ by at most
1.8e-6 and their rewards by float32 rounding (tests: inputs ≤ 4e-6, rewards ≤ 1e-5 relative).

Other entry points: :func:`draw_words` and :class:`WordSource` (every copy's random words in one call,
identical to ``random_raw``; numpy's PCG64 advanced in the generators' own memory, eight at a time in
AVX-512 lanes where there are), :func:`task_sequences` (the task of every step and the switch flags, as
:func:`envs.schedules.task_sequences`) and :func:`episode_arrays` (fresh episode arrays placed for
transparent huge pages).

Every episode and every step returns **fresh** arrays: nothing this module hands out is ever written
again, so a caller may keep any observation, reward, ``info["target"]`` row or ``terminal_observation``
(or a tensor sharing its memory) for as long as it likes. An earlier version recycled returned arrays
when ``sys.getrefcount`` said no one held them; fresh arrays cost ≈ 7–11 % of a 64-env batched step
and ≈ 5–10 % of a single-env step (``benchmarks/vec_env.py --against``, side by side in one process), a
price worth not reasoning about reference counts (free-threaded CPython, raw pointers kept without a
Python reference).
"""

from __future__ import annotations

import ctypes
import operator
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memagent.cbuild import build_library, native_enabled

__all__ = [
    "FEEDBACK_CODES",
    "FLAGS",
    "StepKernel",
    "WordSource",
    "TASK_CUSTOM",
    "TASK_HALF_COS_MEAN",
    "TASK_SIN_MEAN",
    "TASK_TANH_SHIFT",
    "build_episodes",
    "draw_words",
    "episode_arrays",
    "pcg64_exact",
    "pcg64_layout",
    "task_sequences",
    "gaussians",
    "load",
]

SOURCE = Path(__file__).resolve().with_name("episode_kernel.c")
FLAGS = (
    "-O3",
    "-march=native",  # the cache key includes the CPU's feature flags
    "-mprefer-vector-width=512",  # AVX-512 where there is one (~30% faster Box-Muller there)
    "-ffp-contract=off",  # no FMA: results do not depend on the CPU
    "-fno-math-errno",  # vector sqrt
    "-fno-trapping-math",  # vectorised selects
    "-std=gnu11",
)
TASK_CUSTOM, TASK_SIN_MEAN, TASK_HALF_COS_MEAN, TASK_TANH_SHIFT = -1, 0, 1, 2
#: feedback mode -> the kernel's code
FEEDBACK_CODES = {"none": 0, "target": 1, "reward": 2}

_pointer = ctypes.c_void_p
_i64 = ctypes.c_int64


class _StepConfig(ctypes.Structure):
    """The arguments of ``ek_step`` that stay fixed for an episode (``StepConfig`` in the C source)."""

    _fields_ = [
        ("B", ctypes.c_int),
        ("d", ctypes.c_int),
        ("D", ctypes.c_int),
        ("feedback_mode", ctypes.c_int),
        ("n_oracle", ctypes.c_int),
        ("L", ctypes.c_int),
        ("bound", ctypes.c_float),
        ("factor", ctypes.c_float),
        ("actions", _pointer),
        ("xs", _pointer),
        ("ys", _pointer),
        ("feedback", _pointer),
        ("xs_t", _i64),
        ("xs_b", _i64),
        ("ys_t", _i64),
        ("ys_b", _i64),
        ("fb_t", _i64),
        ("fb_b", _i64),
        ("tasks", _pointer),
        ("revealed", _pointer),
    ]


def _bind(library: ctypes.CDLL) -> ctypes.CDLL:
    library.ek_gaussians.argtypes = [ctypes.c_int, _pointer, _i64, _i64, _pointer, _i64]
    library.ek_gaussians.restype = ctypes.c_int
    library.ek_build_episodes.argtypes = [
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        _pointer,
        _i64,
        _i64,
        _i64,
    ]
    library.ek_build_episodes.argtypes += [ctypes.c_int, ctypes.c_float, _pointer, _pointer, _pointer]
    library.ek_build_episodes.argtypes += [_pointer, _pointer, _pointer]
    library.ek_build_episodes.restype = _i64
    library.ek_draw_words.argtypes = [ctypes.c_int, _pointer, _i64, _pointer, _i64]
    library.ek_draw_words.restype = None
    library.ek_pcg64_words.argtypes = [ctypes.c_int, _pointer, _i64, _pointer, _i64]
    library.ek_pcg64_words.restype = ctypes.c_int
    library.ek_pcg64_inplace.argtypes = [ctypes.c_int, _pointer, ctypes.c_int, _i64, _pointer, _i64]
    library.ek_pcg64_inplace.restype = ctypes.c_int
    library.ek_task_sequences.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    library.ek_task_sequences.argtypes += [ctypes.c_double, _pointer, _i64, _pointer, _i64, _pointer]
    library.ek_task_sequences.argtypes += [_pointer, _pointer, _pointer]
    library.ek_task_sequences.restype = None
    library.ek_step.argtypes = [_pointer, ctypes.c_int, _pointer, _pointer]
    library.ek_step.restype = None
    return library


_BOUND: dict[int, ctypes.CDLL] = {}


_UNPROTOTYPED: dict[tuple[int, str], tuple[ctypes.CDLL, Any]] = {}


def _unprototyped(library: ctypes.CDLL, name: str) -> Any:
    """A second function object for ``name`` without ``argtypes`` (no per-call argument conversion; pass
    ``int`` for C ``int`` and prebuilt ``ctypes.c_void_p`` for pointers) returning nothing; one a library."""
    key = (id(library), name)
    cached = _UNPROTOTYPED.get(key)
    if cached is None or cached[0] is not library:
        function = library[name]  # a new function object, not the prototyped attribute
        function.restype = None
        cached = _UNPROTOTYPED[key] = (library, function)
    return cached[1]


def load() -> ctypes.CDLL | None:
    """The loaded kernel library, or None (``MEMAGENT_NATIVE=0``, no compiler, failed build)."""
    if not native_enabled():
        return None
    library = build_library(SOURCE, FLAGS, what="envs.native episode kernel")
    if library is None:
        return None
    if id(library) not in _BOUND:
        _BOUND[id(library)] = _bind(library)
    return library


def _address(array: np.ndarray | None) -> int | None:
    return None if array is None else array.ctypes.data


def gaussians(words: np.ndarray, count: int) -> np.ndarray:
    """Native :func:`envs.regression.gaussians`: ``(B, W)`` uint64 words -> ``(B, count)`` float32 normals.

    :raises RuntimeError: if the kernel is unavailable.
    """
    library = load()
    if library is None:
        raise RuntimeError("the native episode kernel is unavailable (MEMAGENT_NATIVE=0 or no compiler)")
    words = np.ascontiguousarray(words, dtype=np.uint64)
    b, w = words.shape
    if not 0 <= count <= 2 * w:
        raise ValueError(f"count must lie in [0, 2 * words per row = {2 * w}], got {count}")
    out = np.empty((b, count), np.float32)
    if library.ek_gaussians(b, words.ctypes.data, w, w, out.ctypes.data, count) != 0:
        raise MemoryError("gaussians: out of memory")
    return out


_MASK64 = (1 << 64) - 1
_PCG64_CHECKED: dict[int, bool] = {}


def _bitgen_addresses(bit_generators: Sequence[Any]) -> np.ndarray:
    """Addresses of the generators' ``bitgen_t`` structs (numpy's public C interface), ``(B,)`` uint64."""
    return np.fromiter(
        (bg.ctypes.bit_generator.value for bg in bit_generators), np.uint64, len(bit_generators)
    )


def _pcg64_words(library: ctypes.CDLL, bit_generators: Sequence[Any], words: np.ndarray) -> bool:
    """The inline PCG64 path of :func:`draw_words`: read each generator's public ``state``, advance it in
    C, write it back. False (nothing drawn) where the kernel has no 128-bit integers."""
    states = [bg.state for bg in bit_generators]
    packed = np.array(
        [
            (s >> 64, s & _MASK64, inc >> 64, inc & _MASK64)
            for s, inc in ((st["state"]["state"], st["state"]["inc"]) for st in states)
        ],
        dtype=np.uint64,
    )
    if library.ek_pcg64_words(
        len(states), packed.ctypes.data, words.shape[1], words.ctypes.data, words.shape[1]
    ):
        return False
    for bg, st, (high, low) in zip(bit_generators, states, packed[:, :2].tolist()):
        st["state"]["state"] = high << 64 | low
        bg.state = st  # has_uint32 / uinteger unchanged, as random_raw leaves them
    return True


def _reproduces_random_raw(draw: Any) -> bool:
    """Whether ``draw(generator, out)`` (True on success; ``out`` ``(1, 37)`` uint64) gives the words and
    the final state of ``PCG64.random_raw``, on two throwaway generators."""
    for seed in (20241128, 7):
        reference, candidate = np.random.PCG64(seed), np.random.PCG64(seed)
        reference.advance(12345)
        candidate.advance(12345)
        expected = reference.random_raw(37)
        got = np.empty((1, 37), np.uint64)
        if not (draw(candidate, got) and np.array_equal(got[0], expected)):
            return False
        if candidate.state != reference.state:
            return False
    return True


def pcg64_exact(library: ctypes.CDLL) -> bool:
    """Whether the kernel's inline PCG64 reproduces ``PCG64.random_raw`` (words and final state) in this
    process; checked once per library, on throwaway generators."""
    key = id(library)
    if key not in _PCG64_CHECKED:
        _PCG64_CHECKED[key] = _reproduces_random_raw(lambda g, out: _pcg64_words(library, [g], out))
    return _PCG64_CHECKED[key]


_PCG64_LAYOUT: dict[int, int | None] = {}


# numpy versions whose ``pcg64_state`` starts with a pointer to the 128-bit pair (1.17 through 2.x)
_KNOWN_PCG64_STRUCT = (1, 17) <= tuple(int(v) for v in np.__version__.split(".")[:2]) < (3, 0)


def _pcg64_memory(bit_generator: np.random.PCG64) -> list[int] | None:
    """The four 64-bit words of a PCG64's ``{state, increment}`` pair as numpy keeps them in memory: its
    ``pcg64_state`` struct starts with a pointer to the pair. None where that first member cannot be such
    a pointer (it holds one of the state's own words, or is not an aligned address): a numpy whose struct
    differs is then never dereferenced."""
    if not _KNOWN_PCG64_STRUCT:  # another numpy's struct may differ: never follow its first member
        return None
    pair = ctypes.c_void_p.from_address(bit_generator.ctypes.state_address).value
    state = bit_generator.state["state"]
    own = {v >> 64 for v in state.values()} | {v & _MASK64 for v in state.values()}
    if not pair or pair % 8 or pair in own:
        return None
    return np.frombuffer(ctypes.string_at(pair, 32), np.uint64).tolist()


def pcg64_layout(library: ctypes.CDLL) -> int | None:
    """How numpy keeps a PCG64's 128-bit state and increment in memory, for ``ek_pcg64_inplace``: 0 (a
    native 128-bit integer, low word first), 1 (numpy's emulated ``{high, low}`` struct), or None (neither,
    or the in-place kernel does not reproduce ``random_raw``: :func:`draw_words` then goes through the
    public ``state``). Checked once per library on throwaway generators."""
    key = id(library)
    if key not in _PCG64_LAYOUT:
        probe = np.random.PCG64(20241128)
        probe.advance(12345)
        state = probe.state["state"]
        low_high = [x for v in (state["state"], state["inc"]) for x in (v & _MASK64, v >> 64)]
        high_low = [x for v in (state["state"], state["inc"]) for x in (v >> 64, v & _MASK64)]
        memory = _pcg64_memory(probe)
        layout = 0 if memory == low_high else 1 if memory == high_low else None
        if layout is not None and pcg64_exact(library):

            def in_place(generator: np.random.PCG64, out: np.ndarray) -> bool:
                address = np.array([generator.ctypes.state_address], np.uint64)
                return not library.ek_pcg64_inplace(1, address.ctypes.data, layout, 37, out.ctypes.data, 37)

            if not _reproduces_random_raw(in_place):
                layout = None
        _PCG64_LAYOUT[key] = layout
    return _PCG64_LAYOUT[key]


class WordSource:
    """:func:`draw_words` for a fixed list of generators, with every per-generator lookup (bit generators,
    their locks in lock order, the addresses of their states) done once here rather than every episode.

    For numpy's ``PCG64`` the kernel advances each generator's 128-bit LCG in place in the generator's own
    memory (:func:`pcg64_layout`: no ``state`` dictionaries read and written per episode); otherwise as
    :func:`draw_words` says. Build a new one whenever a generator is replaced (:meth:`matches`); holding
    the generators keeps their addresses valid. Never copy or pickle one (the addresses are the
    originals').

    :param library: :func:`load`'s library.
    :param generators: ``B`` numpy generators, copy ``b``'s words from ``generators[b]``.
    """

    def __init__(self, library: ctypes.CDLL, generators: Sequence[np.random.Generator]) -> None:
        self.library = library
        self.generators = tuple(generators)
        bit_generators = [g.bit_generator for g in self.generators]
        self._bit_generators = bit_generators
        shared = len({id(bg) for bg in bit_generators}) < len(bit_generators)
        self._locks = [lock for _, lock in sorted({id(bg.lock): bg.lock for bg in bit_generators}.items())]
        self._pcg64 = not shared and all(type(bg) is np.random.PCG64 for bg in bit_generators)
        self._layout = pcg64_layout(library) if self._pcg64 else None
        self._states = None
        if self._layout is not None:
            self._states = np.array([bg.ctypes.state_address for bg in bit_generators], np.uint64)
        self._bitgens = _bitgen_addresses(bit_generators)

    def matches(self, generators: Sequence[np.random.Generator]) -> bool:
        """Whether ``generators`` are exactly this source's generators (the same objects, in order)."""
        return len(generators) == len(self.generators) and all(map(operator.is_, generators, self.generators))

    def __call__(self, words: np.ndarray) -> None:
        """``words[b] = generators[b].bit_generator.random_raw(W)`` for every copy; ``words`` ``(B, W)``
        uint64, C-contiguous."""
        library, n = self.library, words.shape[1]
        taken = []
        try:
            for lock in self._locks:
                lock.acquire()
                taken.append(lock)
            if self._states is not None:
                b, states, out = len(self._states), self._states.ctypes.data, words.ctypes.data
                if not library.ek_pcg64_inplace(b, states, self._layout, n, out, n):
                    return
            if self._pcg64 and pcg64_exact(library) and _pcg64_words(library, self._bit_generators, words):
                return
            library.ek_draw_words(len(self._bitgens), self._bitgens.ctypes.data, n, words.ctypes.data, n)
        finally:
            for lock in reversed(taken):
                lock.release()


def draw_words(library: ctypes.CDLL, generators: Sequence[np.random.Generator], words: np.ndarray) -> None:
    """``words[b] = generators[b].bit_generator.random_raw(W)`` for every copy, in one kernel call.

    The same raw words in the same order as ``random_raw``, and the generators end in the same state.
    For numpy's ``PCG64`` (Gymnasium's generator) the kernel advances the 128-bit LCG inline, in the
    generator's own memory (:func:`pcg64_layout`), or else from and back to its public ``state``
    (verified against ``random_raw`` once per process: :func:`pcg64_exact`); for any other bit generator
    it calls its ``next_raw`` through numpy's public ``bitgen_t`` interface. Each generator's lock is held
    meanwhile, as ``random_raw`` does; distinct locks are taken once each, in one global order (by ``id``),
    so two threads drawing for the same generators in different orders cannot deadlock. Copies that share
    one bit generator draw one after the other, as ``random_raw`` called copy by copy would (the inline
    PCG64 paths, which read each state once, are not used then). A caller drawing for the same generators
    every episode keeps a :class:`WordSource` instead.

    :param generators: ``B`` numpy generators.
    :param words: ``(B, W)`` uint64, C-contiguous: the output.
    """
    WordSource(library, generators)(words)


_SCHEDULE_CODES = {"none": 0, "period": 1, "hazard": 2}


def task_sequences(
    library: ctypes.CDLL,
    schedule: Any,
    words: np.ndarray,
    first: int,
    length: int,
    pools: Sequence[np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """:func:`envs.schedules.task_sequences` in C for the ``"none"``, ``"period"`` and ``"hazard"``
    schedules, exactly (the same uniforms and floors), with its transpose and the switch flags.

    :param words: ``(B, W)`` uint64, C-contiguous; copy ``b``'s uniforms are ``words[b, first:]``
        (``uniform = (word >> 11) · 2⁻⁵³``, :func:`~envs.schedules.uniforms_needed` of them).
    :param length: episode rows ``L``; :param pools: each copy's task pool.
    :return: ``tasks`` (B, L) int64, ``tasks.T`` (L, B) int64 C-contiguous and ``switched`` (L, B) bool
        (:func:`envs.regression.switch_flags`); None for an explicit schedule (use the numpy code).
    """
    code = _SCHEDULE_CODES.get(schedule.kind)
    if code is None:
        return None
    b = len(pools)
    sizes = np.fromiter(map(len, pools), dtype=np.int64, count=b)
    if np.all(sizes == sizes[0]):  # one call, not np.stack's per-array work (~100 µs at B = 64)
        padded = np.concatenate(pools).astype(np.int64, copy=False).reshape(b, -1)
    else:
        padded = np.zeros((b, sizes.max()), dtype=np.int64)
        for i, p in enumerate(pools):
            padded[i, : len(p)] = p
    padded = np.ascontiguousarray(padded)
    tasks, tasks_t = np.empty((b, length), np.int64), np.empty((length, b), np.int64)
    switched = np.empty((length, b), bool)
    library.ek_task_sequences(
        b,
        length,
        code,
        schedule.period,
        schedule.hazard,
        words.ctypes.data + 8 * first,
        words.shape[1],
        padded.ctypes.data,
        padded.shape[1],
        sizes.ctypes.data,
        tasks.ctypes.data,
        tasks_t.ctypes.data,
        switched.ctypes.data,
    )
    return tasks, tasks_t, switched


def task_kinds(tasks: Any) -> tuple[np.ndarray, np.ndarray]:
    """Kernel codes of a task universe: ``kinds`` (int32: :data:`TASK_SIN_MEAN`, :data:`TASK_HALF_COS_MEAN`,
    :data:`TASK_TANH_SHIFT` or :data:`TASK_CUSTOM` for a user task) and ``params`` (float32: the shift k
    of ``tanh_shift``), both of shape ``(num_tasks,)``."""
    from envs.tasks import half_cos_mean, sin_mean

    kinds = np.full(len(tasks), TASK_CUSTOM, np.int32)
    params = np.zeros(len(tasks), np.float32)
    for i, task in enumerate(tasks):
        fn = task.fn
        if fn is sin_mean:
            kinds[i] = TASK_SIN_MEAN
        elif fn is half_cos_mean:
            kinds[i] = TASK_HALF_COS_MEAN
        elif isinstance(getattr(fn, "tanh_shift_k", None), float):
            kinds[i], params[i] = TASK_TANH_SHIFT, fn.tanh_shift_k
    return kinds, params


_HUGE = 2 << 20  # a transparent huge page (x86-64 and arm64 with 4 KiB base pages)
#: episode arrays of at least this many bytes are placed for transparent huge pages (:func:`episode_arrays`)
HUGE_FROM = 1 << 20


def episode_arrays(shapes: Sequence[tuple[int, ...]], huge_from: int | None = None) -> list[np.ndarray]:
    """Fresh, uninitialised float32 arrays of ``shapes`` for one episode (the kernel writes every element).

    When they total ``huge_from`` bytes or more (default :data:`HUGE_FROM`) they are packed, 64-byte
    aligned, into one fresh allocation of at least 4 MiB, starting at a 2 MiB boundary and rounded up to
    whole 2 MiB pages. numpy marks every allocation of 4 MiB or more for transparent huge pages on Linux
    (``madvise(MADV_HUGEPAGE)``, unless switched off with ``numpy._core.multiarray._set_madvise_hugepage``),
    so the arrays lie on huge pages where THP is in ``madvise`` or ``always`` mode: a step reads one row
    per copy scattered over them, and with 4 KiB pages each read is a TLB miss. One allocation of a
    steady size also lets glibc's malloc hand the previous episode's memory back once it is freed (no page
    faults), where separate arrays made it trim and re-fault the heap every episode. Elsewhere (no THP,
    another OS) these are plain aligned arrays.

    Each array is a view of the allocation, which lives as long as any of them or any view of them.
    """
    sizes = [4 * int(np.prod(shape)) for shape in shapes]
    if sum(sizes) < (HUGE_FROM if huge_from is None else huge_from):
        return [np.empty(shape, np.float32) for shape in shapes]
    offsets = np.cumsum([0] + [-(-size // 64) * 64 for size in sizes]).tolist()
    total = -(-offsets[-1] // _HUGE) * _HUGE
    owner = np.empty(max(total + _HUGE, 2 * _HUGE), np.uint8)
    start = -owner.ctypes.data % _HUGE
    return [
        owner[start + offset : start + offset + size].view(np.float32).reshape(shape)
        for shape, offset, size in zip(shapes, offsets, sizes)
    ]


def build_episodes(
    library: ctypes.CDLL,
    words: np.ndarray,
    n_x: int,
    n_noise: int,
    length: int,
    dim: int,
    feedback: str,
    sigma: float,
    tasks: np.ndarray,
    kinds: np.ndarray,
    params: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
    """Inputs, built-in targets and feedback noise of ``B`` episodes in one kernel call.

    The kernel writes each copy's episode as one contiguous block (copy-major arrays); the returned
    arrays are their time-major *views*, the layout of :class:`envs.regression.EpisodePlans`.

    :param words: ``(B, W)`` uint64, C-contiguous: copy ``b``'s random words (inputs first, then noise).
    :param n_x: words of the inputs; :param n_noise: words of the feedback noise (0: none).
    :param length: rows per episode ``L``; :param dim: ``d``.
    :param feedback: the feedback mode; :param sigma: the noise's standard deviation.
    :param tasks: ``(B, L)`` int64 task ids, C-contiguous.
    :param kinds: and ``params``: the tasks' codes (:func:`task_kinds`).
    :return: ``xs`` (L, B, d), ``ys`` (L, B, d) (rows of user tasks unset), the noisy feedback
        (target: (L, B, d), ``y + σn`` on built-in rows and ``σn`` on user rows; reward: (L, B) ``σn``;
        else None) and the number of user-task rows.
    """
    b = words.shape[0]
    shapes = [(b, length, dim), (b, length, dim)]
    if n_noise:
        shapes.append((b, length, dim) if feedback == "target" else (b, length))
    # fresh every episode: never memory a caller can still see
    xs, ys, noisy = (*episode_arrays(shapes), None)[:3]
    n_user = library.ek_build_episodes(
        b,
        length,
        dim,
        words.ctypes.data,
        words.shape[1],
        n_x,
        n_noise,
        FEEDBACK_CODES[feedback],
        sigma,
        tasks.ctypes.data,
        kinds.ctypes.data,
        params.ctypes.data,
        xs.ctypes.data,
        ys.ctypes.data,
        _address(noisy),
    )
    if n_user < 0:
        raise MemoryError("build_episodes: out of memory")
    noisy = None if noisy is None else noisy.swapaxes(0, 1)
    return xs.swapaxes(0, 1), ys.swapaxes(0, 1), noisy, int(n_user)


def _strides(array: np.ndarray | None) -> tuple[int, int]:
    """Element strides of the first two axes (time, copy) of a float32 array; (0, 0) for None."""
    if array is None:
        return 0, 0
    return array.strides[0] // 4, array.strides[1] // 4


class StepKernel:
    """One episode's fused step: ``(obs (B, D) of step t+1, rewards (B,))`` from the actions of step ``t``.

    The kernel writes into two arrays private to this object, whose addresses are looked up once; each
    call returns fresh copies of them, so a caller may keep what it gets (measured: copying is cheaper
    than taking the address of two new arrays through ctypes every step, and cheaper than fresh blocks of
    several steps' outputs written in place, which the kernel then writes cold). The kernel is called
    without ctypes argument conversion (prebuilt ``c_void_p`` arguments: ≈ 0.5 µs a call against
    ≈ 1.2 µs with ``argtypes``).

    :param library: :func:`load`'s library.
    :param layout: the env's :class:`~envs.regression.RegressionLayout`.
    :param plans: the episode's :class:`~envs.regression.EpisodePlans` (``(L, B, ·)`` arrays, any strides
        with contiguous rows; ``tasks`` C-contiguous).
    :param revealed: :func:`~envs.regression.revealed_mask` of the layout, ``(L,)`` bool.
    """

    def __init__(self, library: ctypes.CDLL, layout: Any, plans: Any, revealed: np.ndarray) -> None:
        b, d, size = plans.xs.shape[1], layout.dim, layout.obs_size
        self._obs, self._rewards = np.empty((b, size), np.float32), np.empty(b, np.float32)
        tasks = np.ascontiguousarray(plans.tasks, dtype=np.int64)
        self._keep = (plans, tasks, np.ascontiguousarray(revealed, dtype=np.uint8))
        self.actions = np.empty((b, d), np.float32)
        self.config = _StepConfig(
            b,
            d,
            size,
            FEEDBACK_CODES[layout.feedback],
            len(layout.tasks) if layout.oracle else 0,
            plans.xs.shape[0],
            layout.action_bound,
            layout.reward_factor,
            self.actions.ctypes.data,
            plans.xs.ctypes.data,
            plans.ys.ctypes.data,
            _address(plans.feedback),
            *_strides(plans.xs),
            *_strides(plans.ys),
            *_strides(plans.feedback),
            tasks.ctypes.data,
            self._keep[2].ctypes.data,
        )
        self._call = _unprototyped(library, "ek_step")
        self._pointers = tuple(
            ctypes.c_void_p(address)
            for address in (ctypes.addressof(self.config), self._obs.ctypes.data, self._rewards.ctypes.data)
        )

    def __call__(self, t: int, actions: Any) -> tuple[np.ndarray, np.ndarray]:
        """Score ``actions`` (anything that casts to ``(B, d)`` float32) against ``y_t``; observe ``t+1``."""
        np.copyto(self.actions, actions)
        config, obs, rewards = self._pointers
        self._call(config, t, obs, rewards)
        return self._obs.copy(), self._rewards.copy()

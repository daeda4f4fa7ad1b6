"""Build a plain-C source into a shared library at first use and load it with :mod:`ctypes`.

The generic half of memagent's native kernels (the DNC's access kernel, the regression envs' episode
kernel): find a C compiler, compile one source into a per-user cache, load it.

- **Cache**: ``$MEMAGENT_CACHE_DIR`` or ``~/.cache/memagent``; the file is named
  ``<stem>-<key>.so`` where the key hashes the source (any ``depends`` and the shared headers of
  :data:`INCLUDE_DIR`, which is on every build's include path), the flags, the compiler, the
  platform and the CPU's feature flags (``-march=native`` code is only reused on the same kind of CPU).
- **Atomic**: the compiler writes a temporary file in the cache directory that is then renamed
  (``os.replace``) onto the final name, so concurrent processes never load a half-written library.
- **Portable retry**: if the build or the load fails with machine-specific flags (``-march=native``,
  any ``-m…``), it is retried once without them (e.g. a compiler that does not know the host CPU).
- **Fallback**: ``MEMAGENT_NATIVE=0`` (also ``false``/``no``/``off``) disables every native kernel;
  without a compiler, or when both builds fail, a warning is logged and :func:`build_library` returns
  ``None`` so the caller uses its Python path.

Example::

    from memagent.cbuild import build_library
    lib = build_library(Path(__file__).with_name("kernel.c"), ["-O3", "-march=native", "-ffp-contract=off"])
    if lib is not None:
        lib.my_function.argtypes = [ctypes.c_void_p, ctypes.c_int]
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "BASE_FLAGS",
    "build_library",
    "cache_dir",
    "compile_library",
    "cpu_flags",
    "find_compiler",
    "native_enabled",
    "portable_flags",
]

logger = logging.getLogger(__name__)

#: flags every shared library needs (added by :func:`compile_library` when missing)
BASE_FLAGS = ("-fPIC", "-shared")
#: headers shared by the kernels (``#include "memagent_fastmath.h"``): on every build's include path, and
#: their contents are part of every cache key
INCLUDE_DIR = Path(__file__).resolve().with_name("include")
_LOCK = threading.Lock()
_LOADED: dict[tuple, ctypes.CDLL | None] = {}
_MISSING = object()


def native_enabled() -> bool:
    """False when the environment variable ``MEMAGENT_NATIVE`` is ``0``/``false``/``no``/``off``
    (read at every call, so tests can switch it)."""
    return os.environ.get("MEMAGENT_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    """Where compiled libraries live: ``$MEMAGENT_CACHE_DIR`` or ``~/.cache/memagent``."""
    root = os.environ.get("MEMAGENT_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "memagent"


def cpu_flags() -> str:
    """The CPU's feature flags from ``/proc/cpuinfo`` (``-march=native`` depends on them), or the
    processor name where that file does not exist."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def find_compiler() -> str | None:
    """The first of ``$CC``, ``cc``, ``gcc``, ``clang`` found on ``PATH``; None if there is none."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def portable_flags(flags: Sequence[str]) -> list[str]:
    """``flags`` without the machine-specific ones: every ``-m…`` option (``-march=native``,
    ``-mtune=…``, ``-mprefer-vector-width=…``, which a compiler for another architecture rejects)."""
    return [f for f in flags if not f.startswith("-m")]


def _umask() -> int:
    """The process's umask, read without changing it (``/proc/self/status`` on Linux); 0o022 elsewhere
    (``os.umask`` can only be read by setting it, which would race with other threads)."""
    try:
        with open("/proc/self/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _key(compiler: str, sources: Sequence[bytes], flags: Sequence[str]) -> str:
    parts = [
        *sources,
        " ".join(flags).encode(),
        compiler.encode(),
        platform.platform().encode(),
        platform.machine().encode(),
        cpu_flags().encode(),
    ]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:20]


def compile_library(
    source: Path,
    flags: Sequence[str],
    *,
    compiler: str | None = None,
    depends: Sequence[Path] = (),
    libs: Sequence[str] = ("-lm",),
    timeout: float = 600.0,
) -> Path:
    """Compile ``source`` into the cache unless an identical build is already there; returns its path.

    :param source: the C file.
    :param flags: compiler flags (``-fPIC -shared`` are added when missing).
    :param compiler: default :func:`find_compiler`.
    :param depends: other files the build reads (headers, included sources): their contents enter the key.
    :param libs: linker arguments placed after the source.
    :param timeout: seconds the compiler may take (the DNC kernel takes 30-50 s of one core with
        ``-O3 -march=native``, more on a busy machine; a build that times out counts as failed).
    :raises FileNotFoundError: if no compiler is found or ``source`` does not exist.
    :raises RuntimeError: if the compiler fails (its stderr, truncated, is in the message).
    """
    source = Path(source).resolve()
    compiler = compiler or find_compiler()
    if compiler is None:
        raise FileNotFoundError("no C compiler found ($CC, cc, gcc, clang)")
    flags = [*flags, *(f for f in BASE_FLAGS if f not in flags)]
    headers = sorted(INCLUDE_DIR.glob("*.h")) if INCLUDE_DIR.is_dir() else []
    texts = [source.read_bytes(), *(Path(p).read_bytes() for p in [*depends, *headers])]
    target = cache_dir() / f"{source.stem}-{_key(compiler, texts, [*flags, *libs])}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{source.stem}-", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        result = subprocess.run(
            [compiler, *flags, f"-I{INCLUDE_DIR}", "-o", tmp, str(source), *libs],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed ({result.returncode}): {result.stderr.strip()[:2000]}")
        os.chmod(tmp, 0o755 & ~_umask())  # mkstemp made it 0600: others sharing the cache must read it
        os.replace(tmp, target)  # atomic: other processes see no file or the whole library
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def build_library(
    source: Path,
    flags: Sequence[str],
    *,
    depends: Sequence[Path] = (),
    libs: Sequence[str] = ("-lm",),
    what: str | None = None,
) -> ctypes.CDLL | None:
    """The compiled and loaded library of ``source``, or None (native code disabled or unavailable).

    Builds at the first call of a process (see :func:`compile_library`), retries once with
    :func:`portable_flags` when the flags hold ``-m…`` options and the first build or load fails, and
    memoises the result (also a None) per ``(source, flags, depends, libs)`` for the process, so a
    failure is logged once. Returns None without building while ``MEMAGENT_NATIVE=0``.

    :param source: the C file.
    :param flags: compiler flags, e.g. ``["-O3", "-march=native", "-ffp-contract=off"]``.
    :param depends: other files whose contents the build depends on.
    :param libs: linker arguments (default ``-lm``).
    :param what: name used in log messages (default the source's file name).
    """
    if not native_enabled():
        return None
    key = (os.fspath(source), tuple(flags), tuple(map(os.fspath, depends)), tuple(libs))
    library = _LOADED.get(key, _MISSING)  # the fast path: no file-system access
    if library is not _MISSING:
        return library  # type: ignore[return-value]
    source = Path(source).resolve()
    what = what or source.name
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = _build_and_load(source, list(flags), depends, libs, what)
    return _LOADED[key]


def _build_and_load(
    source: Path, flags: list[str], depends: Sequence[Path], libs: Sequence[str], what: str
) -> ctypes.CDLL | None:
    compiler = find_compiler()
    if compiler is None:
        logger.warning("%s: no C compiler ($CC, cc, gcc, clang) found; using the Python path", what)
        return None
    attempts = [flags]
    if portable_flags(flags) != flags:
        attempts.append(portable_flags(flags))
    error: Exception | None = None
    for i, attempt in enumerate(attempts):
        try:
            library = ctypes.CDLL(
                str(compile_library(source, attempt, compiler=compiler, depends=depends, libs=libs))
            )
        except Exception as exc:  # noqa: BLE001 - any failure: try portable flags, then the Python path
            error = exc
            continue
        if i > 0:
            logger.warning("%s: built without CPU-specific flags (%s)", what, error)
        return library
    logger.warning("%s: native build unavailable (%s); using the Python path", what, error)
    return None

"""memagent.cbuild: compile a C source into the cache once, atomically; portable retry; fallbacks."""

from __future__ import annotations

import ctypes
import logging
import subprocess

import pytest

from memagent import cbuild

if cbuild.find_compiler() is None:  # pragma: no cover - only where no C compiler exists
    pytest.skip("no C compiler (cc, gcc, clang)", allow_module_level=True)

SOURCE = "int add_ints(int a, int b) { return a + b; }\ndouble twice(double x) { return 2 * x; }\n"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMAGENT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MEMAGENT_NATIVE", "1")
    return tmp_path / "cache"


def write_source(tmp_path, name="kernel.c", text=SOURCE):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_builds_loads_and_reuses_the_cached_library(tmp_path, cache, monkeypatch):
    source = write_source(tmp_path)
    lib = cbuild.build_library(source, ["-O2"])
    assert lib is not None and lib.add_ints(2, 40) == 42
    lib.twice.restype, lib.twice.argtypes = ctypes.c_double, [ctypes.c_double]
    assert lib.twice(1.25) == 2.5
    built = list(cache.iterdir())
    assert len(built) == 1 and built[0].name.startswith("kernel-") and built[0].suffix == ".so"
    assert built[0].stat().st_mode & 0o555 == 0o555 & ~cbuild._umask()  # others sharing the cache can load it
    # memoised per process: the same object, no new build
    assert cbuild.build_library(source, ["-O2"]) is lib
    # another process (simulated: compile_library again) finds the file and does not run the compiler
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    assert cbuild.compile_library(source, ["-O2"]) == built[0] and calls == []


def test_key_changes_with_source_flags_and_depends(tmp_path, cache):
    source = write_source(tmp_path)
    header = tmp_path / "extra.h"
    header.write_text("/* v1 */")
    a = cbuild.compile_library(source, ["-O2"])
    b = cbuild.compile_library(source, ["-O1"])
    c = cbuild.compile_library(source, ["-O2"], depends=[header])
    header.write_text("/* v2 */")
    d = cbuild.compile_library(source, ["-O2"], depends=[header])
    source.write_text(SOURCE + "int three(void) { return 3; }\n")
    e = cbuild.compile_library(source, ["-O2"])
    assert len({a, b, c, d, e}) == 5
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_falls_back_to_portable_flags_when_march_fails(tmp_path, cache, caplog):
    source = write_source(tmp_path, "portable.c")
    with caplog.at_level(logging.WARNING, logger="memagent.cbuild"):
        lib = cbuild.build_library(source, ["-O2", "-march=no-such-cpu"])
    assert lib is not None and lib.add_ints(1, 2) == 3
    assert "without CPU-specific flags" in caplog.text
    flags = ["-O3", "-march=native", "-mtune=x", "-mprefer-vector-width=512", "-fPIC"]
    assert cbuild.portable_flags(flags) == ["-O3", "-fPIC"]


def test_broken_source_no_compiler_and_disabled_return_none(tmp_path, cache, caplog, monkeypatch):
    broken = write_source(tmp_path, "broken.c", "int f( { syntax error")
    with caplog.at_level(logging.WARNING, logger="memagent.cbuild"):
        assert cbuild.build_library(broken, ["-O2", "-march=native"]) is None
    assert "native build unavailable" in caplog.text and "broken.c" in caplog.text
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]
    with pytest.raises(RuntimeError, match="failed"):
        cbuild.compile_library(broken, ["-O2"])

    source = write_source(tmp_path, "nocc.c")
    monkeypatch.setattr(cbuild, "find_compiler", lambda: None)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="memagent.cbuild"):
        assert cbuild.build_library(source, ["-O2"]) is None
    assert "no C compiler" in caplog.text
    with pytest.raises(FileNotFoundError, match="no C compiler"):
        cbuild.compile_library(source, ["-O2"])

    monkeypatch.setenv("MEMAGENT_NATIVE", "off")
    assert not cbuild.native_enabled()
    assert cbuild.build_library(write_source(tmp_path, "off.c"), ["-O2"]) is None
    assert not (cache / "off").exists() and not any(p.name.startswith("off-") for p in cache.iterdir())


def test_cache_dir_default_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv("MEMAGENT_CACHE_DIR", raising=False)
    assert cbuild.cache_dir().parts[-2:] == (".cache", "memagent")
    monkeypatch.setenv("MEMAGENT_CACHE_DIR", str(tmp_path))
    assert cbuild.cache_dir() == tmp_path


def test_shared_headers_are_on_the_include_path_and_in_the_key(tmp_path, cache, monkeypatch):
    include = tmp_path / "include"
    include.mkdir()
    (include / "shared.h").write_text("static inline int shared_value(void) { return 7; }\n")
    monkeypatch.setattr(cbuild, "INCLUDE_DIR", include)
    source = tmp_path / "uses_header.c"
    source.write_text('#include "shared.h"\nint value(void) { return shared_value(); }\n')
    first = cbuild.compile_library(source, ["-O1"])
    assert ctypes.CDLL(str(first)).value() == 7
    (include / "shared.h").write_text("static inline int shared_value(void) { return 8; }\n")
    second = cbuild.compile_library(source, ["-O1"])
    assert second != first and ctypes.CDLL(str(second)).value() == 8


def test_the_kernels_shared_header_exists():
    assert (cbuild.INCLUDE_DIR / "memagent_fastmath.h").is_file()

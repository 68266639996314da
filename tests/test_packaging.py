"""The binding itself: build script, pinned cffi range, GIL kept, lazy commit.

These guard the assumptions the package is built on rather than the API
(tests/test_api.py and friends do that).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import re
from pathlib import Path

import cffi
import alloc
from alloc._allocator import _gil_held
from alloc._buddy import ffi, lib

ROOT = Path(__file__).resolve().parent.parent


def _load_build_script():
    spec = importlib.util.spec_from_file_location(
        "_alloc_ffi_build", ROOT / "csrc" / "ffi_build.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # builds the cdef only, compiles nothing
    return module


def _version_tuple(text: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def test_c_calls_keep_the_gil():
    # The build script redefines Py_BEGIN/END_ALLOW_THREADS; a stock cffi
    # wrapper would have released the GIL and PyGILState_Check() would be 0.
    assert _gil_held() is True


def test_cffi_is_inside_the_range_verified_for_the_gil_trick():
    text = (ROOT / "pyproject.toml").read_text()
    pins = re.findall(r'"cffi(>=[\d.]+),(<[\d.]+)"', text)
    assert pins, "pyproject.toml must pin cffi"
    installed = _version_tuple(cffi.__version__)
    for low, high in pins:
        assert installed >= _version_tuple(low[2:])
        assert installed < _version_tuple(high[1:])


def test_every_function_of_the_header_reaches_python():
    header = (ROOT / "csrc" / "buddy.h").read_text()
    names = set(re.findall(r"^\S.*?\b(buddy_[a-z_]+)\(", header, re.M))
    assert {"buddy_new", "buddy_alloc", "buddy_free", "buddy_check"} <= names
    missing = [n for n in sorted(names) if not hasattr(lib, n)]
    assert missing == []


def test_header_constants_are_filled_in_by_the_compiler():
    build = _load_build_script()
    cdef = build._cdef_from_header((ROOT / "csrc" / "buddy.h").read_text())
    assert "#define BUDDY_MAX_ORDER 62" in cdef
    assert "#define BUDDY_MAX_CAPACITY ..." in cdef
    assert "#include" not in cdef and "#ifndef" not in cdef
    assert lib.BUDDY_MAX_CAPACITY == 1 << 62
    assert lib.BUDDY_MAX_ORDER == 62


def test_status_messages_are_distinct():
    statuses = [getattr(lib, n) for n in dir(lib) if re.fullmatch(r"BUDDY_E[A-Z]+|BUDDY_OK", n)]
    assert len(statuses) == len(set(statuses)) >= 9
    messages = {ffi.string(lib.buddy_strerror(s)) for s in statuses}
    assert len(messages) == len(statuses)
    assert ffi.string(lib.buddy_strerror(12345)) == b"unknown status"


#: The distribution's name: "alloc" on PyPI is an unrelated project.
DIST_NAME = "alloc-buddy"


def test_installed_version_matches_the_package():
    from importlib.metadata import version

    assert version(DIST_NAME) == alloc.__version__


def test_the_distribution_name_is_the_one_pyproject_declares():
    from importlib.metadata import distribution

    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^name = "([^"]+)"', text, re.M).group(1) == DIST_NAME
    dist = distribution(DIST_NAME)
    assert "alloc" in (dist.read_text("top_level.txt") or "alloc").split()


def test_metadata_of_a_64_mib_arena_of_64_byte_blocks_is_under_512_kib():
    with alloc.BuddyAllocator(64 << 20, min_size=64) as a:
        meta = a.stats()["metadata_bytes"]
    assert meta == lib.buddy_metadata_bytes(64 << 20, 64)
    assert meta < 512 * 1024
    assert meta * 8 / (64 << 20 >> 6) < 4  # bits per minimum block


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_16_gib_arena_is_committed_only_as_it_is_used():
    before = _rss_bytes()
    a = alloc.BuddyAllocator(16 << 30, min_size=64)
    blocks = [a.alloc(1 << 20) for _ in range(4)]
    for b in blocks:
        b[::4096] = b"x" * len(b[::4096])
    grown = _rss_bytes() - before
    assert a.bytes_total == 16 << 30
    assert a.stats()["metadata_bytes"] > 64 << 20  # what eager zeroing would touch
    assert grown < 32 << 20, f"RSS grew by {grown} bytes"
    for b in blocks:
        a.free(b)
    a.check()
    a.close()


def test_the_compiled_core_carries_the_package_version():
    assert ffi.string(lib.alloc_build_version()).decode() == alloc.__version__


def test_a_stale_compiled_core_is_refused_at_import():
    code = (
        "import sys, types\n"
        "fake = types.ModuleType('alloc._version'); fake.__version__ = '0.0.0'\n"
        "sys.modules['alloc._version'] = fake\n"
        "try:\n"
        "    import alloc\n"
        "except ImportError as exc:\n"
        "    print('refused:', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT.parent).stdout
    assert out.startswith("refused:") and "rebuild" in out, out

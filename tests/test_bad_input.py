"""Bad arguments: every one raises the documented exception and changes nothing.

API.md: "Bad arguments raise TypeError (wrong type) or ValueError (bad value);
an arena the machine cannot provide raises MemoryError. Never a crash." and,
for free, "It raises ValueError and changes nothing for: a buffer that is not
inside this arena, one that does not start at a live block or whose length
does not match it, a block already freed (double free). Non-buffer
arguments: TypeError."
"""

from __future__ import annotations

import array
import fractions
import gc
import mmap

import numpy as np
import pytest

from alloc import BuddyAllocator, OutOfMemory
from conftest import pattern, snapshot, without

ARENA_AT = 1024  # the arena is big[1024:5120]


class Scene:
    """An allocator over a slice of a larger bytearray, with live blocks,
    a freed block and a stale view over a block reused at another size."""

    def __init__(self):
        self.big = bytearray(8192)
        self.arena = memoryview(self.big)[ARENA_AT : ARENA_AT + 4096]
        self.a = BuddyAllocator(self.arena, min_size=16)
        a = self.a
        self.v0 = a.alloc(960)  # 1024 @ 0
        self.v1 = a.alloc(100)  # 128 @ 1024
        self.v2 = a.alloc(16)  # 16 @ 1152
        self.vd = a.alloc(16)  # 16 @ 1168, freed: double-free candidate
        a.free(self.vd)
        self.vold = a.alloc(200)  # 256 @ 1280, freed, then reused by vnew
        a.free(self.vold)
        self.vnew = a.alloc(100)  # 128 @ 1280
        assert [a.offset_of(v) for v in (self.v0, self.v1, self.v2, self.vnew)] == [
            0,
            1024,
            1152,
            1280,
        ]
        self.live = [self.v0, self.v1, self.v2, self.vnew]
        for i, v in enumerate(self.live):
            v[:] = pattern(i, len(v))
        self.other = BuddyAllocator(4096, min_size=16)
        self.ov = self.other.alloc(960)  # same offset and length as v0

    def assert_intact(self):
        assert self.a.check() is None
        for i, v in enumerate(self.live):
            assert v.tobytes() == pattern(i, len(v))

    def finish(self):
        if self.a.closed:
            self.other.close()
            return
        for v in self.live:
            self.a.free(v)
        assert len(self.a) == 0 and self.a.bytes_free == 4096
        self.a.close()
        self.other.close()


@pytest.fixture
def scene():
    s = Scene()
    yield s
    s.finish()


def at(s: Scene, start: int, stop: int):
    """The bytes [start, stop) of s.big (arena offsets are start - ARENA_AT)."""
    return memoryview(s.big)[start:stop]


FREE_VALUE_ERRORS = {
    "foreign-bytearray": lambda s: bytearray(960),
    "foreign-bytes": lambda s: bytes(960),
    "foreign-empty": lambda s: bytearray(),
    "other-allocators-block": lambda s: s.ov,
    "copy-of-block": lambda s: np.frombuffer(s.v0, np.uint8).copy(),
    "bytes-of-block": lambda s: s.v0.tobytes(),
    "slice-of-block": lambda s: s.v0[10:20],
    "tail-of-block": lambda s: s.v0[1:],
    "short-by-one": lambda s: s.v0[:-1],
    "empty-prefix-of-block": lambda s: s.v0[:0],
    "long-by-one": lambda s: at(s, ARENA_AT, ARENA_AT + 961),
    "block-size-not-request-size": lambda s: at(s, ARENA_AT, ARENA_AT + 1024),
    "shifted-up-by-min_size": lambda s: at(s, ARENA_AT + 16, ARENA_AT + 16 + 960),
    "shifted-down-by-min_size": lambda s: at(s, ARENA_AT + 1008, ARENA_AT + 1008 + 100),
    "shifted-by-one": lambda s: at(s, ARENA_AT + 1, ARENA_AT + 961),
    "start-of-free-32-block": lambda s: at(s, ARENA_AT + 1184, ARENA_AT + 1200),
    "free-large-block": lambda s: at(s, ARENA_AT + 2048, ARENA_AT + 4096),
    "whole-arena": lambda s: s.arena,
    "before-arena": lambda s: at(s, ARENA_AT - 16, ARENA_AT),
    "straddles-arena-start": lambda s: at(s, ARENA_AT - 16, ARENA_AT + 944),
    "straddles-arena-end": lambda s: at(s, ARENA_AT + 4096 - 16, ARENA_AT + 4096 + 16),
    "after-arena": lambda s: at(s, ARENA_AT + 4096, ARENA_AT + 4096 + 960),
    "double-free": lambda s: s.vd,
    "double-free-numpy": lambda s: np.frombuffer(s.vd, np.uint8),
    "stale-view-reused-at-other-size": lambda s: s.vold,
}

FREE_TYPE_ERRORS = {
    "None": lambda s: None,
    "int-offset-0": lambda s: 0,
    "int-offset-1024": lambda s: 1024,
    "str": lambda s: "abc",
    "float": lambda s: 1.5,
    "object": lambda s: object(),
    "list": lambda s: [1, 2, 3],
    "tuple-offset-size": lambda s: (0, 960),
}

FREE_EITHER = {
    # Not C-contiguous: neither documented; a clean TypeError or ValueError.
    "strided-over-block": lambda s: at(s, ARENA_AT, ARENA_AT + 1920)[::2],
    "2d-fortran": lambda s: np.asfortranarray(
        np.frombuffer(s.v0, np.uint8).reshape(30, 32)
    ),
}


def _expect_unchanged(s: Scene, call, exc):
    before = snapshot(s.a)
    with pytest.raises(exc):
        call()
    assert snapshot(s.a) == before
    s.assert_intact()


@pytest.mark.parametrize("name", sorted(FREE_VALUE_ERRORS))
def test_free_value_error_changes_nothing(scene, name):
    arg = FREE_VALUE_ERRORS[name](scene)
    _expect_unchanged(scene, lambda: scene.a.free(arg), ValueError)


@pytest.mark.parametrize("name", sorted(FREE_VALUE_ERRORS))
def test_offset_of_value_error_same_rules_as_free(scene, name):
    arg = FREE_VALUE_ERRORS[name](scene)
    _expect_unchanged(scene, lambda: scene.a.offset_of(arg), ValueError)


@pytest.mark.parametrize("name", sorted(FREE_TYPE_ERRORS))
def test_free_non_buffer_type_error_changes_nothing(scene, name):
    arg = FREE_TYPE_ERRORS[name](scene)
    _expect_unchanged(scene, lambda: scene.a.free(arg), TypeError)


@pytest.mark.parametrize("name", sorted(FREE_TYPE_ERRORS))
def test_offset_of_non_buffer_type_error(scene, name):
    arg = FREE_TYPE_ERRORS[name](scene)
    _expect_unchanged(scene, lambda: scene.a.offset_of(arg), TypeError)


@pytest.mark.parametrize("name", sorted(FREE_EITHER))
def test_free_non_contiguous_refused_cleanly(scene, name):
    arg = FREE_EITHER[name](scene)
    _expect_unchanged(scene, lambda: scene.a.free(arg), (TypeError, ValueError))


def test_double_free_then_the_real_free_still_works(scene):
    """The refused frees did not disturb the live blocks: they free normally."""
    for name in sorted(FREE_VALUE_ERRORS):
        with pytest.raises(ValueError):
            scene.a.free(FREE_VALUE_ERRORS[name](scene))
    scene.assert_intact()
    assert len(scene.a) == 4


def test_double_free_of_the_view_itself():
    with BuddyAllocator(4096) as a:
        v = a.alloc(100)
        keep = a.alloc(100)
        a.free(v)
        before = snapshot(a)
        with pytest.raises(ValueError):
            a.free(v)
        assert snapshot(a) == before
        with pytest.raises(ValueError):
            a.free(np.frombuffer(v, np.uint8))
        assert snapshot(a) == before
        a.free(keep)


def test_free_after_close_is_value_error(scene):
    before = snapshot(scene.a)
    scene.a.close()
    for v in scene.live:
        with pytest.raises(ValueError):
            scene.a.free(v)
    after = snapshot(scene.a)
    for key in ("bytes_allocated", "bytes_wasted", "live_blocks", "free_calls"):
        assert after[key] == before[key]
    scene.live.clear()  # nothing left to free in finish()


# ---------------------------------------------------------------------------
# sizes for alloc / try_alloc / calloc
# ---------------------------------------------------------------------------


class _Index:
    def __init__(self, n):
        self.n = n

    def __index__(self):
        return self.n


SIZE_TYPE_ERRORS = {
    "True": True,
    "False": False,
    "numpy-bool": np.True_,
    "float": 1.0,
    "float-zero": 0.0,
    "numpy-float": np.float64(16.0),
    "complex": 1j,
    "fraction": fractions.Fraction(16, 1),
    "str": "16",
    "bytes": b"16",
    "None": None,
    "list": [16],
    "object": object(),
}

SIZE_VALUE_ERRORS = {
    "-1": -1,
    "-16": -16,
    "-2**63": -(2**63),
    "-2**100": -(2**100),
    "numpy-int64(-1)": np.int64(-1),
    "index(-5)": _Index(-5),
}

SIZE_TOO_BIG = {
    "4097": 4097,
    "8192": 8192,
    "2**62": 2**62,
    "2**63": 2**63,
    "2**64-1": 2**64 - 1,
    "2**64": 2**64,
    "2**100": 2**100,
    "numpy-uint64-max": np.uint64(2**64 - 1),
    "index(2**70)": _Index(2**70),
}

METHODS = ["alloc", "try_alloc", "calloc"]


@pytest.fixture
def busy():
    with BuddyAllocator(4096, min_size=16) as a:
        keep = [a.alloc(100), a.alloc(7)]
        yield a
        for v in keep:
            a.free(v)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", list(SIZE_TYPE_ERRORS))
def test_size_wrong_type_is_type_error(busy, method, name):
    """Other types: TypeError (bool included)."""
    before = snapshot(busy)
    with pytest.raises(TypeError):
        getattr(busy, method)(SIZE_TYPE_ERRORS[name])
    assert snapshot(busy) == before


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", list(SIZE_VALUE_ERRORS))
def test_size_negative_is_value_error(busy, method, name):
    """negative: ValueError."""
    before = snapshot(busy)
    with pytest.raises(ValueError):
        getattr(busy, method)(SIZE_VALUE_ERRORS[name])
    assert snapshot(busy) == before


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", list(SIZE_TOO_BIG))
def test_size_too_big_out_of_memory_or_none(busy, method, name):
    """When no block fits alloc raises OutOfMemory (try_alloc: None) — nothing
    changes but the failed-allocation counter."""
    size = SIZE_TOO_BIG[name]
    before = snapshot(busy)
    if method == "try_alloc":
        assert busy.try_alloc(size) is None
    else:
        with pytest.raises(OutOfMemory):
            getattr(busy, method)(size)
    after = snapshot(busy)
    assert without(after, "failed_allocs") == without(before, "failed_allocs")
    assert after["failed_allocs"] - before["failed_allocs"] in (0, 1)
    assert busy.check() is None


@pytest.mark.parametrize("method", ["alloc", "calloc"])
def test_out_of_memory_counts_one_failed_alloc(busy, method):
    before = snapshot(busy)
    with pytest.raises(OutOfMemory):
        getattr(busy, method)(4000)
    after = snapshot(busy)
    assert after["failed_allocs"] == before["failed_allocs"] + 1
    assert without(after, "failed_allocs") == without(before, "failed_allocs")


# ---------------------------------------------------------------------------
# the constructor
# ---------------------------------------------------------------------------

ARENA_TYPE_ERRORS = {
    "True": True,
    "False": False,
    "float": 4096.0,
    "str": "4096",
    "None": None,
    "list": [0] * 16,
    "object": object(),
    "complex": 4096j,
}

ARENA_VALUE_ERRORS = {
    "0": 0,
    "-1": -1,
    "-4096": -4096,
    "-2**100": -(2**100),
}

ARENA_MEMORY_ERRORS = {
    "2**62": 2**62,
    "2**62+1": 2**62 + 1,
    "2**63": 2**63,
    "2**64": 2**64,
    "2**100": 2**100,
}


def _readonly_numpy():
    a = np.zeros(4096, np.uint8)
    a.flags.writeable = False
    return a


def _readonly_mmap():
    return mmap.mmap(-1, 4096, access=mmap.ACCESS_READ)


BAD_BUFFERS = {
    "bytes": lambda: bytes(4096),
    "readonly-memoryview": lambda: memoryview(bytearray(4096)).toreadonly(),
    "readonly-numpy": _readonly_numpy,
    "readonly-mmap": _readonly_mmap,
    "strided-memoryview": lambda: memoryview(bytearray(8192))[::2],
    "numpy-column-slice": lambda: np.zeros((64, 64), np.uint8)[:, ::2],
    "numpy-fortran-2d": lambda: np.asfortranarray(np.zeros((64, 64), np.uint8)),
    "numpy-transposed": lambda: np.zeros((64, 8)).T,
}


@pytest.mark.parametrize("name", list(ARENA_TYPE_ERRORS))
def test_arena_wrong_type_is_type_error(name):
    with pytest.raises(TypeError):
        BuddyAllocator(ARENA_TYPE_ERRORS[name])


@pytest.mark.parametrize("name", list(ARENA_VALUE_ERRORS))
def test_arena_int_not_positive_is_value_error(name):
    """an int > 0."""
    with pytest.raises(ValueError):
        BuddyAllocator(ARENA_VALUE_ERRORS[name])


@pytest.mark.parametrize("name", list(ARENA_MEMORY_ERRORS))
def test_arena_the_machine_cannot_provide_is_memory_error(name):
    """an arena the machine cannot provide raises MemoryError."""
    with pytest.raises(MemoryError):
        BuddyAllocator(ARENA_MEMORY_ERRORS[name])


@pytest.mark.parametrize("name", list(BAD_BUFFERS))
def test_arena_read_only_or_non_contiguous_refused(name):
    """A read-only buffer is refused (and a non-C-contiguous one): the
    exception is both a TypeError and a ValueError."""
    buf = BAD_BUFFERS[name]()
    with pytest.raises(TypeError) as info:
        BuddyAllocator(buf)
    assert isinstance(info.value, ValueError)
    del info
    with pytest.raises(ValueError):
        BuddyAllocator(buf)
    gc.collect()
    if isinstance(buf, mmap.mmap):
        buf.close()  # not exported: the refusal kept nothing


def test_refused_buffer_is_not_kept_exported():
    ba = bytearray(8192)
    with pytest.raises(ValueError):
        BuddyAllocator(memoryview(ba)[::2])
    ba.append(0)  # a BufferError here would mean a leaked export
    ba2 = bytearray(10)
    with pytest.raises(ValueError):
        BuddyAllocator(ba2, min_size=16)
    ba2.append(0)


MIN_SIZE_TYPE_ERRORS = {
    "True": True,
    "False": False,
    "float": 16.0,
    "str": "16",
    "None": None,
    "numpy-float": np.float64(16.0),
}

MIN_SIZE_VALUE_ERRORS = {"0": 0, "-1": -1, "-16": -16, "-2**100": -(2**100)}


@pytest.mark.parametrize("arena", [4096, "bytearray"])
@pytest.mark.parametrize("name", list(MIN_SIZE_TYPE_ERRORS))
def test_min_size_wrong_type_is_type_error(arena, name):
    arena = bytearray(4096) if arena == "bytearray" else arena
    with pytest.raises(TypeError):
        BuddyAllocator(arena, min_size=MIN_SIZE_TYPE_ERRORS[name])


@pytest.mark.parametrize("arena", [4096, "bytearray"])
@pytest.mark.parametrize("name", list(MIN_SIZE_VALUE_ERRORS))
def test_min_size_not_positive_is_value_error(arena, name):
    """min_size is an int >= 1."""
    arena = bytearray(4096) if arena == "bytearray" else arena
    with pytest.raises(ValueError):
        BuddyAllocator(arena, min_size=MIN_SIZE_VALUE_ERRORS[name])


def test_buffer_arena_of_other_formats_is_accepted():
    """Any writable C-contiguous buffer: the format does not matter."""
    arr = array.array("d", [0.0]) * 512
    with BuddyAllocator(arr, min_size=16) as a:
        assert a.bytes_total == 4096
        v = a.alloc(8)
        v[:] = np.float64(2.5).tobytes()
        assert arr[a.offset_of(v) // 8] == 2.5
        del v

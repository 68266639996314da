"""Objects across the seam (csrc/seam.h, "objects as they are"): where the
build allows, free hands cffi the block itself and alloc's entry point
answers with the block's view, made in C.  Elsewhere, or with ALLOC_SEAM=ids
in the environment (CI runs the whole suite that way too), the id() entry
points and a slice made in Python do the same.  These tests hold on both."""

from __future__ import annotations

import gc
import os
import sys
import sysconfig

import pytest

from alloc import BuddyAllocator, OutOfMemory, SharedBuddyAllocator
from alloc import _allocator
from alloc._allocator import lib

IDS = os.environ.get("ALLOC_SEAM") == "ids"
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def assert_resizable(buf: bytearray) -> None:
    """A bytearray nobody exports can grow (BufferError while exported)."""
    buf.extend(b"\0")
    del buf[-1]


def test_the_raw_seam_is_built_where_it_can_be():
    """On Linux with GCC or Clang the build passes objects through cffi:
    if a cffi or compiler change silently lost that, this says so (the
    library would still work, ~30 % slower a pair)."""
    if sys.platform.startswith("linux"):
        assert lib.seam_raw_objects() == 1
    if lib.seam_raw_objects():
        probe = object()
        assert lib.seam_echo(probe) is probe
        assert lib.seam_echo(probe) is probe  # a new reference each time
    assert _allocator._raw_objects_work() == bool(lib.seam_raw_objects())
    assert _allocator._RAW == (bool(lib.seam_raw_objects()) and not IDS)
    assert _allocator._VIEWS == (_allocator._RAW and not FREE_THREADED)


def test_a_build_whose_wrappers_convert_after_all_takes_the_id_seam(monkeypatch):
    """If the build says objects pass but cffi converts them anyway (its
    wrappers changed), the probe is refused and the id() seam is used."""

    class Converting:
        def seam_raw_objects(self):
            return 1

        def seam_echo(self, obj):
            raise TypeError("an integer is required")

    monkeypatch.setattr(_allocator, "lib", Converting())
    assert _allocator._raw_objects_work() is False


def test_the_entry_points_are_the_ones_the_seam_says():
    a = BuddyAllocator(1 << 16)
    slot = a._slot
    assert slot >= 0
    if _allocator._VIEWS:
        assert a._view_entry is getattr(lib, f"seam_view_{slot}")
    else:
        assert a._view_entry.func is _allocator._view_by_offset
    if _allocator._RAW:
        assert a._free_entry is getattr(lib, f"seam_free_obj_{slot}")
    else:
        assert a._free_entry.func is _allocator._free_by_id


@pytest.mark.parametrize("n", [1, 15, 16, 64, 1000, 4096])
def test_a_view_made_in_c_is_the_slice_python_would_make(n):
    arena = bytearray(1 << 16)
    a = BuddyAllocator(arena)
    v = a.alloc(n)
    off = a.offset_of(v)
    same = memoryview(arena)[off : off + n]
    assert (v.obj, v.format, v.itemsize, v.ndim, v.shape, v.strides, v.readonly,
            v.c_contiguous) == (arena, "B", 1, 1, (n,), (1,), False, True)
    assert v == same
    v[:] = b"\x5a" * n
    assert arena[off : off + n] == b"\x5a" * n
    assert sys.getrefcount(v) == 2  # v and the argument: no reference leaked
    a.free(v)
    same.release()
    assert len(a) == 0


def view_facts(v: memoryview) -> tuple:
    """Everything a user can ask a view, as one comparable value."""
    return (v.obj, v.format, v.itemsize, v.ndim, v.shape, v.strides,
            v.suboffsets, v.readonly, v.nbytes, len(v), v.c_contiguous,
            v.f_contiguous, v.contiguous, v.tobytes(), v.hex(), v.tolist(),
            v[1:-1].tobytes(), v[::2].shape,
            v.cast("B").shape if v.c_contiguous else None,
            memoryview(v).shape, v.toreadonly().tobytes())


def arena_kinds():
    """(arena argument, the bytes object holding the memory) pairs."""
    import numpy as np  # a test dependency

    raw = bytearray(1 << 16)
    yield raw, raw
    floats = np.zeros(1 << 13)  # float64: flattened to a view of bytes
    yield floats, floats
    yield 1 << 16, None  # the allocator's own memory


@pytest.mark.parametrize("n", [1, 2, 63, 64, 4096, 5000])
def test_every_view_is_the_slice_python_makes_attribute_for_attribute(n):
    """alloc, try_alloc and alloc_many make their views in C (seam_slice:
    memoryview's slicing without a slice object); each must be
    indistinguishable from Python's slice of the arena view -- every
    attribute, sub-slices, casts, copies, writes, its address, and what a
    released one does."""
    from alloc._allocator import ffi

    for arena, holder in arena_kinds():
        a = BuddyAllocator(arena, min_size=16)
        base = a._mv
        views = [a.alloc(n), a.try_alloc(n)] + a.alloc_many(n, 3)
        for i, v in enumerate(views):
            off = a.offset_of(v)
            v[:] = bytes((i + j) % 251 for j in range(n))
            same = base[off : off + n]
            assert view_facts(v) == view_facts(same)
            if holder is not None:
                assert v.obj is holder
            with ffi.from_buffer(v) as p, ffi.from_buffer(base) as q:
                assert int(ffi.cast("uintptr_t", p)) == int(ffi.cast("uintptr_t", q)) + off
            assert v == same
            same.release()
        first = a.offset_of(views[0])
        views[0].release()
        with pytest.raises(ValueError):
            len(views[0])
        with pytest.raises(ValueError, match="released"):
            a.free(views[0])
        for v in views[1:]:
            a.free(v)
        assert len(a) == 1  # the released one is still live ...
        a.free_at(first)  # ... until freed by its offset
        assert len(a) == 0
        a.check()
        a.close()


def test_seam_slice_takes_the_documented_path_for_any_other_view():
    """seam_slice (csrc/seam_py.h) sets a fresh view's start, length and
    shape itself only for a 1-D view of bytes with stride 1 that wholly
    holds the slice; every other view, and a slice running past the end,
    goes through PySequence_GetSlice.  Both paths, through seam_slices
    (what alloc_many uses), must give exactly Python's own slices."""
    import array

    from alloc._allocator import ffi

    def c_slices(view, size, offsets):
        out: list = []
        status = lib.seam_slices(id(view), size, ffi.new("uint64_t[]", offsets),
                                 len(offsets), id(out))
        return status, out

    raw = bytearray(range(64))
    views = {
        "bytes": memoryview(raw),  # the fast path
        "ints": memoryview(array.array("i", range(16))),  # itemsize 4
        "strided": memoryview(raw)[::2],  # stride 2
        "2-D": memoryview(raw).cast("B", (8, 8)),  # sliced by rows
        "read-only": memoryview(bytes(raw)),
    }
    for name, view in views.items():
        n = len(view)
        for size, offsets in ((1, [0, n - 1]), (3, [0, 2, n - 3]), (n, [0]), (5, [n - 2])):
            status, got = c_slices(view, size, offsets)
            assert status == 0, name
            want = [view[o : o + size] for o in offsets]  # the last runs past the end
            assert [view_facts(v) for v in got] == [view_facts(w) for w in want], name
    released = memoryview(bytearray(8))
    released.release()
    assert c_slices(released, 2, [0]) == (-1, [])  # ValueError, cleared


def test_a_shared_view_is_the_slice_python_makes():
    a = SharedBuddyAllocator(create=True, size=1 << 16)
    try:
        for n in (1, 64, 5000):
            v = a.alloc(n)
            off = a.offset_of(v)
            same = a._mv[off : off + n]
            v[:] = b"\x33" * n
            assert view_facts(v) == view_facts(same)
            same.release()
            a.free(v)
        assert len(a) == 0
    finally:
        a.close()
        a.unlink()


def test_views_leak_no_reference_to_the_arena_view():
    a = BuddyAllocator(1 << 20)
    base = a._mv
    before = sys.getrefcount(base)
    for n in (64, 100, 4096) * 2000:
        v = a.alloc(n)
        a.free(v)
    w = a.try_alloc(1 << 21)  # refused: nothing made
    assert w is None
    assert sys.getrefcount(base) == before
    assert a.counters() == {"alloc_calls": 6000, "free_calls": 6000, "failed_allocs": 1}


def test_a_refusal_is_counted_once_and_raised_as_the_user_error():
    a = BuddyAllocator(4096)
    assert a.try_alloc(8192) is None
    with pytest.raises(OutOfMemory) as info:
        a.alloc(8192)
    assert info.value.__context__ is None  # the seam's own exception never shows
    assert a.counters()["failed_allocs"] == 2
    a.close()
    with pytest.raises(ValueError, match="closed"):
        a.try_alloc(64)
    with pytest.raises(ValueError, match="closed"):
        a.alloc(64)


def test_close_unbinds_the_arena_from_the_slot():
    arena = bytearray(1 << 16)
    a = BuddyAllocator(arena)
    slot = a._slot
    v = a.alloc(64)
    a.close()
    if _allocator._VIEWS:  # the slot no longer holds the arena view
        assert getattr(lib, f"seam_view_{slot}")(64) is None
    del v
    assert_resizable(arena)  # only the allocator object is left: nothing pins it


def test_a_dropped_allocator_unpins_its_arena_and_frees_its_slot():
    """Never closed, only dropped: its slot's view goes with its pool (else
    the C slot would pin the arena for good), and the next allocator bound
    to that slot makes views of its own arena."""
    gc.collect()
    first = bytearray(1 << 16)
    a = BuddyAllocator(first)
    slot = a._slot
    del a
    gc.collect()
    assert_resizable(first)
    second = bytearray(1 << 16)
    b = BuddyAllocator(second)
    assert b._slot == slot  # the same slot, reused
    v = b.alloc(64)
    assert v.obj is second
    b.free(v)


def test_a_slot_without_its_arena_view_allocates_nothing():
    """What the view entry point does once close() cleared the slot's arena
    view (another thread may still hold the entry point): answers None and
    allocates nothing, so the slow path decides (here: it still serves,
    the allocator being open)."""
    a = BuddyAllocator(1 << 16)
    if lib.seam_raw_objects() and lib.seam_views():  # this build makes views
        entry = getattr(lib, f"seam_view_{a._slot}")
        lib.seam_set_base(a._slot, None)
        assert entry(64) is None  # no view bound: nothing allocated
        assert len(a) == 0 and a.counters()["alloc_calls"] == 0
    v = a.alloc(64)  # the slow path still serves it
    assert len(v) == 64
    a.free(v)


@pytest.mark.parametrize("kind", ["buddy", "shared"])
def test_every_size_object_the_fast_path_does_not_take_goes_slow(kind):
    import numpy as np  # a test dependency
    if kind == "buddy":
        a = BuddyAllocator(1 << 16)
    else:
        a = SharedBuddyAllocator(create=True, size=1 << 16)
    try:
        for size, want in ((np.int64(10), 10), (np.uint8(3), 3), (0, 0)):
            v = a.alloc(size)
            assert len(v) == want
            a.free(v)
        for bad in (True, 1.5, "16", None, np.float32(3.0)):
            with pytest.raises(TypeError):
                a.alloc(bad)
        for bad in (-1, -(2**70)):
            with pytest.raises(ValueError):
                a.try_alloc(bad)
        assert a.try_alloc(2**64) is None and a.try_alloc(2**100) is None
        assert len(a) == 0 and a.counters()["alloc_calls"] == 3
    finally:
        a.close()
        if kind == "shared":
            a.unlink()


def test_shared_offsets_of_2_gib_and_up_are_not_cut_to_32_bits():
    """The shared one-argument entry points were called without a prototype
    (an implicit int result): an offset of 2**31 came back negative, read as
    a refusal, and the block was lost.  A 4 GiB segment of 1 GiB blocks
    (sparse: no page of the arena is touched)."""
    a = SharedBuddyAllocator(create=True, size=4 << 30, min_size=1 << 30)
    try:
        first, second = a.alloc(2 << 30), a.alloc(2 << 30)
        assert (a.offset_of(first), a.offset_of(second)) == (0, 2 << 30)
        a.free(second)
        third = a.try_alloc(2 << 30)
        assert third is not None and a.offset_of(third) == 2 << 30
        assert a.counters() == {"alloc_calls": 3, "free_calls": 1, "failed_allocs": 0}
    finally:
        a.close()
        a.unlink()


@pytest.mark.skipif(not (lib.seam_raw_objects() and lib.seam_views()),
                    reason="this build makes no view in C")
@pytest.mark.parametrize("kind", ["buddy", "shared"])
def test_no_memory_for_a_view_loses_no_block(kind):
    """The block is taken before its view is made; if the view cannot be
    (MemoryError), the block goes back: counted as allocated and freed,
    nothing live, the arena whole."""
    if kind == "buddy":
        a = BuddyAllocator(1 << 16)
    else:
        a = SharedBuddyAllocator(create=True, size=1 << 16)
    set_base = lib.seam_set_base if kind == "buddy" else lib.shared_py_set_base
    entry = getattr(lib, f"{'seam' if kind == 'buddy' else 'shared'}_view_{a._slot}")
    try:
        set_base(a._slot, a._mv)  # bound already, unless through the id() seam
        lib.seam_debug_fail_views(1)
        with pytest.raises(MemoryError):
            entry(100)
        assert len(a) == 0 and a.largest_free == 1 << 16
        assert a.counters() == {"alloc_calls": 1, "free_calls": 1, "failed_allocs": 0}
        v = entry(100)  # the next one is made
        assert len(v) == 100 and len(a) == 1
        a.free(v)
        a.check()
    finally:
        lib.seam_debug_fail_views(0)
        set_base(a._slot, None)
        a.close()
        if kind == "shared":
            a.unlink()

"""API.md, Extensions, "Shapes and places": ``alloc(size, align=None)``,
``try_alloc`` and ``calloc`` with ``align``.

The block's *absolute address* is a multiple of ``align`` (measured here with
ctypes and numpy, never with the allocator's own figures); an int arena's
base is aligned to its largest block, so every block is naturally aligned
in absolute terms; over a buffer whose base is less aligned, ``align`` is
honoured where the base allows and ``ValueError`` raised where no block
could satisfy it.  ``align`` larger than anything the arena could hold is
``OutOfMemory`` (like a size larger than the arena), counted in
``failed_allocs``.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from alloc import BuddyAllocator, OffsetAllocator, OutOfMemory
from conftest import addr, block_size_for, snapshot


def c_address(view: memoryview) -> int:
    """The address of a non-empty view's first byte, as ctypes sees it."""
    return ctypes.addressof((ctypes.c_char * len(view)).from_buffer(view))


def np_address(view: memoryview) -> int:
    return np.frombuffer(view, np.uint8).__array_interface__["data"][0]


METHODS = ["alloc", "try_alloc", "calloc"]


# ---- int arenas: the base is aligned to the largest block ------------------


@pytest.mark.parametrize("size, min_size", [(4096, 16), (3000, 16), (100_000, 64), (1 << 20, 16)])
def test_int_arena_base_is_aligned_to_its_largest_block(size, min_size):
    with BuddyAllocator(size, min_size=min_size) as a:
        largest = a.largest_free
        assert largest & (largest - 1) == 0
        v = a.alloc(largest)
        assert a.offset_of(v) == 0
        assert c_address(v) % largest == 0
        assert np_address(v) == c_address(v)


@pytest.mark.parametrize("size", [4096, 3000, 100_000])
def test_every_block_of_an_int_arena_is_naturally_aligned_in_absolute_terms(size):
    sizes = [1, 16, 17, 100, 300, 1000, 5, 64, 2000, 33, 0, 700]
    with BuddyAllocator(size, min_size=16) as a:
        views = []
        for n in sizes * 4:
            v = a.try_alloc(n)
            if v is None:
                continue
            views.append(v)
            bs = a.block_size(n)
            off = a.offset_of(v)
            assert off % bs == 0
            if n:
                assert c_address(v) % bs == 0
        assert len(views) > 10
        a.check()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("align", [1, 2, 8, 16, 32, 64, 256, 1024, 4096])
@pytest.mark.parametrize("size", [1, 10, 16, 100, 1000])
def test_aligned_block_address_is_a_multiple_of_align(method, align, size):
    with BuddyAllocator(1 << 16, min_size=16) as a:
        a.alloc(16)  # not an empty arena: offset 0 is taken
        v = getattr(a, method)(size, align=align)
        assert v is not None and len(v) == size and not v.readonly
        assert c_address(v) % align == 0
        assert np_address(v) % align == 0
        # offsets stay naturally aligned relative to the arena
        off = a.offset_of(v)
        block = max(block_size_for(size, 16), align)
        assert off % block == 0
        if method == "calloc":
            assert v.tobytes() == bytes(size)
        # the block is counted whole (API.md: a block of at least align bytes)
        assert a.bytes_allocated == 16 + size
        assert a.bytes_wasted == 0 + block - size
        assert (off, block, size) in list(a.blocks())
        a.check()
        a.free(v)
        assert len(a) == 1 and a.bytes_allocated == 16
        a.check()


@pytest.mark.parametrize("method", METHODS)
def test_align_none_and_one_are_a_plain_allocation(method):
    with BuddyAllocator(4096) as a, BuddyAllocator(4096) as b:
        for n in (100, 16, 300, 0, 5):
            u = getattr(a, method)(n)
            v = getattr(b, method)(n, align=1)
            w = getattr(b, method)(n, align=None)
            assert a.offset_of(u) == b.offset_of(v)
            a.alloc(n)  # keep a's placement in step with b's second block
            assert b.offset_of(w) >= 0
        assert without_peaks(a.stats()) == without_peaks(b.stats())


def without_peaks(s):
    return {k: v for k, v in s.items() if not k.startswith("peak")}


def test_align_no_larger_than_the_block_costs_nothing_extra():
    with BuddyAllocator(4096, min_size=16) as a:
        v = a.alloc(100, align=64)  # a 128-byte block is 64-aligned anyway
        assert a.bytes_wasted == 28
        assert list(a.blocks()) == [(a.offset_of(v), 128, 100)]


def test_aligned_blocks_do_not_overlap_and_fill_the_arena():
    with BuddyAllocator(4096, min_size=16) as a:
        views = []
        while True:
            v = a.try_alloc(16, align=256)
            if v is None:
                break
            views.append(v)
        assert len(views) == 16  # 4096 / 256: every aligned block is 256 bytes
        assert sorted(a.offset_of(v) for v in views) == list(range(0, 4096, 256))
        with pytest.raises(OutOfMemory, match="aligned to 256"):
            a.alloc(1, align=256)
        a.free_many(views)
        assert a.bytes_free == 4096 and a.largest_free == 4096
        a.check()


def test_aligned_block_can_be_freed_by_offset_and_by_numpy_view():
    with BuddyAllocator(8192) as a:
        v = a.alloc(40, align=1024)
        w = a.alloc(40, align=2048)
        a.free_at(a.offset_of(v))
        a.free(np.frombuffer(w, np.uint8))
        assert len(a) == 0 and a.bytes_free == 8192
        a.check()


# ---- bad align values: nothing changes -------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("align, exc", [
    (0, ValueError), (3, ValueError), (6, ValueError), (48, ValueError),
    (-1, ValueError), (-8, ValueError), ((1 << 64) + 1, ValueError),
    (True, TypeError), (False, TypeError), (np.bool_(True), TypeError),
    (1.0, TypeError), (8.0, TypeError), ("8", TypeError), (b"8", TypeError),
    ([8], TypeError),
])
def test_bad_align_is_refused_and_changes_nothing(method, align, exc):
    with BuddyAllocator(4096) as a:
        keep = a.alloc(100)
        before = snapshot(a)
        with pytest.raises(exc, match="align"):
            getattr(a, method)(16, align=align)
        assert snapshot(a) == before
        assert len(a) == 1 and a.offset_of(keep) == 0


@pytest.mark.parametrize("method", METHODS)
def test_numpy_integer_align_is_taken(method):
    with BuddyAllocator(4096) as a:
        v = getattr(a, method)(10, align=np.int64(512))
        assert c_address(v) % 512 == 0


# ---- align larger than the arena: OutOfMemory, counted ---------------------


@pytest.mark.parametrize("align", [8192, 1 << 20, 1 << 62, 1 << 63, 1 << 64, 1 << 100])
def test_align_larger_than_the_arena_is_out_of_memory(align):
    # Found by this test: align >= 2**64 raised cffi's OverflowError.
    with BuddyAllocator(4096) as a:
        before = snapshot(a)
        with pytest.raises(OutOfMemory) as info:
            a.alloc(16, align=align)
        assert "aligned to" in str(info.value)
        assert a.try_alloc(16, align=align) is None
        with pytest.raises(OutOfMemory):
            a.calloc(16, align=align)
        after = snapshot(a)
        assert after.pop("failed_allocs") == before.pop("failed_allocs") + 3
        assert after == before


@pytest.mark.parametrize("align", [8192, 1 << 62, 1 << 63, 1 << 64, 1 << 100])
def test_offset_allocator_align_larger_than_the_capacity_is_out_of_memory(align):
    with OffsetAllocator(4096) as a:
        before = snapshot(a)
        with pytest.raises(OutOfMemory):
            a.alloc(16, align=align)
        assert a.try_alloc(16, align=align) is None
        after = snapshot(a)
        assert after.pop("failed_allocs") == before.pop("failed_allocs") + 2
        assert after == before


def test_align_equal_to_the_arena_takes_the_whole_arena():
    with BuddyAllocator(4096) as a:
        v = a.alloc(1, align=4096)
        assert a.offset_of(v) == 0 and a.bytes_free == 0
        assert c_address(v) % 4096 == 0


# ---- buffers whose base is less aligned -------------------------------------


def odd_arena(n: int = 4096):
    """A writable view whose first byte is at an odd address."""
    raw = bytearray(n + 1)
    view = memoryview(raw)[1:]
    assert addr(view) % 2 == 1
    return raw, view


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("align", [2, 4, 16, 64, 4096])
def test_odd_base_refuses_align_that_no_block_can_meet(method, align):
    raw, view = odd_arena()
    a = BuddyAllocator(view, min_size=16)
    keep = a.alloc(10)
    before = snapshot(a)
    with pytest.raises(ValueError, match=f"multiple of {align}") as info:
        getattr(a, method)(16, align=align)
    assert not isinstance(info.value, MemoryError)
    assert snapshot(a) == before  # not even failed_allocs
    v = getattr(a, method)(16, align=1)  # align 1 is always possible
    assert v is not None and c_address(v) % 2 == 1
    a.free_many([keep, v])
    a.close()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("align", [2, 8, 64, 1024])
def test_odd_base_with_min_size_one_honours_align_for_one_byte_blocks(method, align):
    raw, view = odd_arena()
    with BuddyAllocator(view, min_size=1) as a:
        got = []
        for _ in range(3):
            v = getattr(a, method)(1, align=align)
            assert c_address(v) % align == 0
            off = a.offset_of(v)
            assert (addr(view) + off) % align == 0
            got.append(off)
            if method == "calloc":
                assert v.tobytes() == b"\0"
        assert len(set(got)) == 3
        assert a.bytes_allocated == 3 and a.bytes_wasted == 0
        with pytest.raises(ValueError):
            a.alloc(2, align=align)  # a 2-byte block starts at an odd address
        a.check()


def test_numpy_arena_at_an_offset_honours_align_where_the_base_allows():
    base = np.zeros(4096 + 64, np.uint8)
    start = (-base.__array_interface__["data"][0]) % 64 + 8  # 8 mod 64
    arr = base[start:start + 4096]
    b0 = arr.__array_interface__["data"][0]
    assert b0 % 16 == 8
    with BuddyAllocator(arr, min_size=8) as a:
        v = a.alloc(8, align=16)
        assert np_address(v) % 16 == 0 and c_address(v) % 16 == 0
        assert a.offset_of(v) % 16 == 8
        w = a.alloc(5, align=64)
        assert c_address(w) % 64 == 0
        assert a.bytes_allocated == 13 and a.bytes_wasted == 3
        with pytest.raises(ValueError, match="multiple of 8 only"):
            a.alloc(16, align=16)  # a 16-byte block starts at 8 mod 16
        u = a.alloc(16, align=8)  # the base allows this one
        assert c_address(u) % 8 == 0
        a.check()
        # every 8-byte block at 8 mod 16: 4096 / 16 of them, then full
        blocks = [v, w, u]
        while True:
            x = a.try_alloc(8, align=16)
            if x is None:
                break
            assert c_address(x) % 16 == 0
            blocks.append(x)
        offs = [a.offset_of(b) for b in blocks]
        assert len(set(offs)) == len(offs)
        a.check()
        a.free_many(blocks)
        assert a.bytes_free == a.bytes_total and len(a) == 0
        a.check()


def test_aligned_base_buffer_is_like_an_int_arena():
    arr = np.zeros(8192 + 4096, np.uint8)
    start = (-arr.__array_interface__["data"][0]) % 4096
    buf = arr[start:start + 8192]
    with BuddyAllocator(buf) as a:
        v = a.alloc(10, align=4096)
        assert c_address(v) % 4096 == 0 and a.offset_of(v) % 4096 == 0
        assert a.bytes_wasted == 4086


# ---- OffsetAllocator ---------------------------------------------------------


@pytest.mark.parametrize("align", [1, 2, 16, 64, 1024, 1 << 20])
def test_offset_allocator_align(align):
    with OffsetAllocator(1 << 24, min_size=16) as a:
        a.alloc(16)
        off = a.alloc(100, align=align)
        assert off % align == 0 and off % 128 == 0
        assert a.size_of(off) == 100
        assert a.bytes_wasted == max(128, align) - 100
        t = a.try_alloc(1, align=align)
        assert t is not None and t % align == 0
        a.free(off)
        a.free(t)
        a.check()


@pytest.mark.parametrize("align, exc", [(0, ValueError), (3, ValueError), (-2, ValueError),
                                        (True, TypeError), (2.0, TypeError)])
def test_offset_allocator_bad_align(align, exc):
    with OffsetAllocator(4096) as a:
        before = snapshot(a)
        with pytest.raises(exc):
            a.alloc(16, align=align)
        with pytest.raises(exc):
            a.try_alloc(16, align=align)
        assert snapshot(a) == before


def test_align_beyond_an_odd_sized_int_arena_depends_only_on_its_address():
    # README, Alignment: an int arena of 3008 bytes is aligned to 2048; an
    # align of 4096 is met at offset 2048 if the arena lies at 2048 mod
    # 4096, and refused (OutOfMemory, as the whole 4096-byte block it then
    # takes does not exist) if it lies at 0 mod 4096.
    with BuddyAllocator(3000, min_size=16) as a:
        first = a.alloc(16)
        base = c_address(first) - a.offset_of(first)
        assert base % 2048 == 0
        if base % 4096 == 0:
            with pytest.raises(OutOfMemory):
                a.alloc(16, align=4096)
        else:
            v = a.alloc(16, align=4096)
            assert a.offset_of(v) == 2048 and c_address(v) % 4096 == 0
        a.check()


# Found by this test: an aligned request that no free block could meet
# first grew the binding's size table, and if that growth failed it was
# reported as "the table could not grow" (MemoryError) instead of
# OutOfMemory -- unlike a plain alloc, which asks the core first.
@pytest.mark.parametrize("kind", ["buddy", "offset"])
@pytest.mark.parametrize("size, align", [(16, 1 << 21), (16, 1 << 40), (1 << 21, 64),
                                         (1 << 20, 1 << 20)])
def test_aligned_request_that_cannot_fit_grows_no_table(kind, size, align):
    from alloc._allocator import lib

    a = BuddyAllocator(1 << 20) if kind == "buddy" else OffsetAllocator(1 << 20)
    with a:
        keep = [a.alloc(16) for _ in range(8)]  # the table is due to grow
        table = lib.pool_table_bytes(a._h)
        before = snapshot(a)
        a._debug_fail_next_table_growth()
        with pytest.raises(OutOfMemory):
            a.alloc(size, align=align)
        assert a.try_alloc(size, align=align) is None
        assert lib.pool_table_bytes(a._h) == table
        after = snapshot(a)
        assert after.pop("failed_allocs") == before.pop("failed_allocs") + 2
        assert after == before
        assert len(keep) == 8


@pytest.mark.parametrize("method", METHODS)
def test_zero_size_aligned_block_is_freed_by_its_view_and_found_by_offset(method):
    with BuddyAllocator(4096) as a:
        a.alloc(1)
        z = getattr(a, method)(0, align=256)
        off = a.offset_of(z)
        assert off == 256 and len(z) == 0
        assert a.block_at(off) is z
        assert list(a.blocks()) == [(0, 16, 1), (256, 256, 0)]
        with pytest.raises(ValueError):
            a.free(memoryview(bytearray(0)))
        a.free(z)
        assert len(a) == 1
        a.check()


def test_realloc_of_a_zero_size_aligned_block_follows_the_rule():
    with BuddyAllocator(4096) as a:
        a.alloc(1)
        z = a.alloc(0, align=256)  # a 256-byte block at 256
        w = a.realloc(z, 300)  # 512 bytes: 256 is not a multiple of 512
        assert a.offset_of(w) == 512
        x = a.realloc(w, 0)
        assert a.offset_of(x) == 512 and list(a.blocks())[-1] == (512, 16, 0)
        a.free(x)
        a.check()

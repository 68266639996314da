"""API.md, sentence by sentence, plus the documented extras.

Each test names (in its docstring or a comment) the sentence it covers.
Misuse and bad arguments are in test_bad_input.py, buffer arenas in
test_buffers.py, view safety in test_safety.py, threads in test_threads.py.
"""

from __future__ import annotations

import gc
import mmap
import operator
import threading

import numpy as np
import pytest

import alloc
from alloc import BuddyAllocator, OutOfMemory
from conftest import (
    PROPERTY_KEYS,
    STAT_KEYS,
    BuddyModel,
    addr,
    block_size_for,
    mentions,
    numbers_in,
    pattern,
    snapshot,
    without,
)

# ---------------------------------------------------------------------------
# The seed, in one paragraph
# ---------------------------------------------------------------------------


def test_seed_example_16384_min16_alloc960():
    """`new BuddyAllocator(16384, {minSize: 16})`, `alloc(960)` returns a slice
    of exactly 960 bytes; bytesTotal, bytesAllocated, bytesWasted."""
    with BuddyAllocator(16384, min_size=16) as a:
        block = a.alloc(960)
        assert len(block) == 960
        assert block.nbytes == 960
        assert a.bytes_total == 16384
        assert a.bytes_allocated == 960
        assert a.bytes_wasted == 64


def test_seed_null_when_full_is_try_alloc_none():
    """(or null when full) -> try_alloc returns None."""
    with BuddyAllocator(16384, min_size=16) as a:
        whole = a.try_alloc(16384)
        assert whole is not None and len(whole) == 16384
        assert a.try_alloc(960) is None


def test_seed_free_returns_the_block():
    """`free(block)`."""
    with BuddyAllocator(16384, min_size=16) as a:
        block = a.alloc(960)
        a.free(block)
        assert a.bytes_allocated == 0
        assert a.bytes_wasted == 0
        assert len(a) == 0
        assert a.largest_free == 16384


def test_seed_bytes_allocated_is_sum_of_requested_sizes():
    """bytesAllocated (sum of requested sizes), bytesWasted (sum of block size
    minus requested size, i.e. internal fragmentation)."""
    with BuddyAllocator(16384, min_size=16) as a:
        sizes = [960, 1, 0, 100, 2048, 17]
        for s in sizes:
            a.alloc(s)
        assert a.bytes_allocated == sum(sizes)
        assert a.bytes_wasted == sum(block_size_for(s, 16) - s for s in sizes)


def test_seed_smaller_requests_still_use_a_min_size_block():
    """minSize ... smaller requests still use a minSize block."""
    with BuddyAllocator(4096, min_size=64) as a:
        a.alloc(1)
        assert a.bytes_wasted == 63
        assert a.bytes_free == 4096 - 64


def test_seed_existing_buffer_instead_of_number():
    """an existing Buffer may be passed instead of a number."""
    ba = bytearray(4096)
    with BuddyAllocator(ba, min_size=16) as a:
        assert a.bytes_total == 4096
        v = a.alloc(10)
        v[:] = b"0123456789"
        assert ba[a.offset_of(v) : a.offset_of(v) + 10] == b"0123456789"
        del v


# ---------------------------------------------------------------------------
# BuddyAllocator(arena, *, min_size=16): int arenas
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 10, 64, 100, 1000, 4096, 5000, 1 << 20])
def test_int_arena_aligned_to_64_bytes(size):
    """int arena: aligned to at least 64 bytes."""
    with BuddyAllocator(size, min_size=1) as a:
        v = a.alloc(a.largest_free)  # the largest free block starts the arena
        assert a.offset_of(v) == 0
        assert addr(v) % 64 == 0


@pytest.mark.parametrize("size", [mmap.PAGESIZE, 3 * mmap.PAGESIZE, 1 << 20, 100_000])
def test_int_arena_page_aligned_where_size_allows(size):
    """int arena: page-aligned where the size allows."""
    with BuddyAllocator(size, min_size=16) as a:
        v = a.alloc(a.largest_free)
        assert a.offset_of(v) == 0
        assert addr(v) % mmap.PAGESIZE == 0


@pytest.mark.parametrize(
    "size, min_size, capacity",
    [
        (10, 16, 16),
        (16, 16, 16),
        (17, 16, 32),
        (100, 16, 112),
        (100, 1, 100),
        (4097, 16, 4112),
        (3000, 64, 3008),
        (100_000_000, 16, 100_000_000),
    ],
)
def test_int_arena_capacity_rounded_up_to_multiple_of_min_size(size, min_size, capacity):
    """capacity is the size rounded **up** to a multiple of min_size."""
    with BuddyAllocator(size, min_size=min_size) as a:
        assert a.bytes_total == capacity
        assert a.bytes_free == capacity
        assert a.stats()["bytes_total"] == capacity


def test_int_arena_not_rounded_to_power_of_two_100MB():
    """— not to a power of two: a 100 MB pool costs 100 MB, the tail beyond
    the buddy tree's last whole block is simply never handed out.

    The whole 100 MB is usable: taking the largest free block until nothing
    is left hands out exactly 100,000,000 bytes, ending at the last byte."""
    n = 100_000_000
    with BuddyAllocator(n, min_size=16) as a:
        assert a.bytes_total == n
        assert a.largest_free == 1 << 26  # 64 MiB, not a 128 MiB block
        model = BuddyModel(n, 16)
        views = []
        while a.largest_free:
            size = a.largest_free
            v = a.alloc(size)
            assert a.offset_of(v) == model.alloc(size)
            views.append(v)
        assert a.bytes_free == 0
        assert a.bytes_allocated == n
        assert a.bytes_wasted == 0
        assert sum(len(v) for v in views) == n
        ends = sorted(a.offset_of(v) + len(v) for v in views)
        assert ends[-1] == n
        # the last byte is real memory
        last = max(views, key=a.offset_of)
        last[-1] = 0xA5
        assert last[-1] == 0xA5
        with pytest.raises(OutOfMemory):
            a.alloc(0)


def test_int_arena_non_power_of_two_every_min_block_handed_out():
    """capacity not a power of two: BuddyAllocator(100) (min 16) has 112
    bytes, i.e. seven 16-byte blocks, all of which can be handed out."""
    with BuddyAllocator(100, min_size=16) as a:
        views = [a.alloc(16) for _ in range(7)]
        assert sorted(a.offset_of(v) for v in views) == list(range(0, 112, 16))
        assert a.try_alloc(1) is None
        assert a.bytes_free == 0


# ---------------------------------------------------------------------------
# min_size
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, rounded",
    [(1, 1), (2, 2), (3, 2), (15, 8), (16, 16), (17, 16), (24, 16), (1000, 512), (4096, 4096)],
)
def test_min_size_rounded_down_to_power_of_two(given, rounded):
    """min_size is an int >= 1, rounded down to a power of two."""
    with BuddyAllocator(1 << 16, min_size=given) as a:
        assert a.min_size == rounded
        assert a.stats()["min_size"] == rounded
        a.alloc(0)
        assert a.bytes_wasted == rounded


def test_min_size_default_16_gives_malloc_alignment():
    """the default 16 gives every block malloc's alignment."""
    with BuddyAllocator(1 << 16) as a:
        assert a.min_size == 16
        views = [a.alloc(s) for s in (1, 3, 7, 0, 5, 33, 9)]
        for v in views:
            assert a.offset_of(v) % 16 == 0
            if len(v):
                assert addr(v) % 16 == 0


def test_min_size_is_keyword_only():
    """`BuddyAllocator(arena, *, min_size=16)`: min_size is keyword-only."""
    with pytest.raises(TypeError):
        BuddyAllocator(4096, 16)


@pytest.mark.parametrize("length, min_size", [(0, 16), (10, 16), (15, 16), (63, 64), (0, 1)])
def test_buffer_shorter_than_min_size_is_value_error(length, min_size):
    """Over a buffer shorter than min_size no block could fit: ValueError."""
    with pytest.raises(ValueError):
        BuddyAllocator(bytearray(length), min_size=min_size)


def test_buffer_exactly_min_size_holds_one_block():
    ba = bytearray(16)
    with BuddyAllocator(ba, min_size=16) as a:
        assert a.bytes_total == 16
        v = a.alloc(16)
        assert a.try_alloc(0) is None
        del v


def test_int_arena_10_holds_one_16_byte_block():
    """(An int arena is rounded up, so BuddyAllocator(10) holds one 16-byte
    block, as the seed's did.)"""
    with BuddyAllocator(10) as a:
        assert a.bytes_total == 16
        assert a.largest_free == 16
        assert a.stats()["free_blocks"] == {16: 1}
        with pytest.raises(OutOfMemory):
            a.alloc(17)
        v = a.alloc(16)
        assert len(v) == 16
        with pytest.raises(OutOfMemory):
            a.alloc(1)
        a.free(v)
        v = a.alloc(10)
        assert len(v) == 10 and a.bytes_wasted == 6


# ---------------------------------------------------------------------------
# Blocks: alloc
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 100, 960, 1000, 2048, 4096])
def test_alloc_returns_writable_c_contiguous_B_view_of_exact_size(pool, size):
    """alloc(size) -> memoryview: a writable, C-contiguous, format 'B' view of
    exactly size bytes."""
    v = pool.alloc(size)
    assert isinstance(v, memoryview)
    assert not v.readonly
    assert v.c_contiguous and v.contiguous
    assert v.format == "B"
    assert v.itemsize == 1
    assert v.ndim == 1
    assert len(v) == size and v.nbytes == size and v.shape == (size,)
    v[:] = pattern(3, size)
    assert v.tobytes() == pattern(3, size)


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 100, 960, 1000, 1024, 1025, 2047, 2048])
def test_alloc_block_is_smallest_power_of_two_at_least_max_size_min_size(size):
    """Its block is the smallest power of two >= max(size, min_size)."""
    with BuddyAllocator(4096, min_size=16) as a:
        a.alloc(size)
        bs = block_size_for(size, 16)
        assert a.bytes_free == 4096 - bs
        assert a.bytes_wasted == bs - size
        assert a.block_size(size) == bs


def test_alloc_offset_is_multiple_of_block_size(pool):
    """its offset from the arena start is a multiple of that block size
    (natural alignment — the buddy property)."""
    sizes = [1, 100, 17, 500, 0, 33, 64, 65, 200, 16, 31, 129, 300]
    views = []
    for s in sizes:
        views.append(pool.alloc(s))
    base = addr(views[0]) - pool.offset_of(views[0])
    for s, v in zip(sizes, views):
        off = pool.offset_of(v)
        assert off % block_size_for(s, 16) == 0
        if len(v):
            assert addr(v) - base == off


def test_alloc_contents_not_cleared_int_arena(pool):
    """Contents are not cleared: free a block and take it back, the bytes
    are still there."""
    v = pool.alloc(100)
    off = pool.offset_of(v)
    v[:] = pattern(7, 100)
    pool.free(v)
    w = pool.alloc(100)
    assert pool.offset_of(w) == off
    assert w.tobytes() == pattern(7, 100)


def test_alloc_contents_not_cleared_buffer_arena():
    """Contents are not cleared: a block over a dirty buffer shows its bytes."""
    ba = bytearray(b"\xab" * 4096)
    with BuddyAllocator(ba, min_size=16) as a:
        v = a.alloc(300)
        assert v.tobytes() == b"\xab" * 300
        del v


def test_out_of_memory_is_memory_error_subclass():
    """When no block fits it raises alloc.OutOfMemory, a subclass of MemoryError."""
    assert issubclass(OutOfMemory, MemoryError)
    with BuddyAllocator(64, min_size=16) as a:
        with pytest.raises(MemoryError):
            a.alloc(65)
        with pytest.raises(OutOfMemory):
            a.alloc(65)


def test_out_of_memory_message_request_needed_block_largest_free():
    """whose message gives the request, the block size it needs and the
    largest block free now."""
    with BuddyAllocator(4096, min_size=16) as a:
        a.alloc(2048)  # 0..2048
        a.alloc(1024)  # 2048..3072
        assert a.largest_free == 1024
        with pytest.raises(OutOfMemory) as info:
            a.alloc(1500)
        msg = str(info.value)
        assert mentions(msg, 1500), msg
        assert mentions(msg, 2048), msg
        assert mentions(msg, 1024), msg


def test_out_of_memory_message_largest_free_zero_when_full():
    with BuddyAllocator(4096, min_size=16) as a:
        a.alloc(4096)
        with pytest.raises(OutOfMemory) as info:
            a.alloc(333)
        msg = str(info.value)
        assert mentions(msg, 333) and mentions(msg, 512) and mentions(msg, 0), msg


@pytest.mark.parametrize(
    "size, needed",
    [(2**63, 2**63), (2**63 + 1, 2**64), (2**100, 2**100), (2**100 + 1, 2**101), (8192, 8192)],
)
def test_out_of_memory_message_for_sizes_far_beyond_arena(size, needed):
    """— also for sizes far beyond the arena (2**63, 2**100)."""
    with BuddyAllocator(4096, min_size=16) as a:
        a.alloc(1000)  # largest free is now 2048
        with pytest.raises(OutOfMemory) as info:
            a.alloc(size)
        msg = str(info.value)
        assert mentions(msg, size), msg
        assert mentions(msg, needed), msg
        assert mentions(msg, 2048), msg


class _Index:
    def __init__(self, n):
        self.n = n

    def __index__(self):
        return self.n


@pytest.mark.parametrize(
    "size",
    [
        np.int8(5),
        np.uint8(200),
        np.int16(300),
        np.int32(1000),
        np.int64(960),
        np.uint64(17),
        np.intp(0),
        _Index(100),
    ],
    ids=lambda s: f"{type(s).__name__}({operator.index(s)})",
)
def test_alloc_size_anything_operator_index_takes(pool, size):
    """size is any integer >= 0 (anything operator.index takes, numpy integers
    included)."""
    n = operator.index(size)
    for method in (pool.alloc, pool.calloc, pool.try_alloc):
        v = method(size)
        assert isinstance(v, memoryview) and len(v) == n
        assert pool.bytes_allocated == n
        pool.free(v)


@pytest.mark.parametrize("size", [True, False], ids=["True", "False"])
def test_alloc_size_bool_is_type_error(pool, size):
    """... but not bool."""
    for method in (pool.alloc, pool.calloc, pool.try_alloc):
        with pytest.raises(TypeError):
            method(size)
    assert len(pool) == 0


def test_alloc_zero_returns_empty_view_holding_min_size_block():
    """alloc(0) returns an empty view that still holds a min_size block, like
    malloc(0)."""
    with BuddyAllocator(128, min_size=32) as a:
        views = [a.alloc(0) for _ in range(4)]
        for v in views:
            assert isinstance(v, memoryview) and len(v) == 0 and v.nbytes == 0
        assert len(a) == 4
        assert a.bytes_allocated == 0
        assert a.bytes_wasted == 128
        assert a.bytes_free == 0
        assert sorted(a.offset_of(v) for v in views) == [0, 32, 64, 96]
        with pytest.raises(OutOfMemory):
            a.alloc(0)
        for v in views:
            a.free(v)
        assert len(a) == 0 and a.largest_free == 128


# ---------------------------------------------------------------------------
# Blocks: try_alloc, calloc
# ---------------------------------------------------------------------------


def test_try_alloc_same_as_alloc(pool):
    """try_alloc(size) -> memoryview | None: the same, ..."""
    v = pool.try_alloc(960)
    assert isinstance(v, memoryview)
    assert len(v) == 960 and v.format == "B" and not v.readonly and v.c_contiguous
    assert pool.offset_of(v) == 0
    assert pool.bytes_allocated == 960 and pool.bytes_wasted == 64


@pytest.mark.parametrize("size", [1, 17, 2048, 4097, 2**63, 2**100])
def test_try_alloc_none_when_full_stats_unchanged(size):
    """... but None when full (the seed's null), with no exception cost."""
    with BuddyAllocator(4096, min_size=16) as a:
        a.alloc(1000)
        need = block_size_for(size, 16)
        while a.largest_free and a.largest_free >= need:
            a.alloc(a.largest_free)
        before = snapshot(a)
        assert a.try_alloc(size) is None
        after = snapshot(a)
        assert without(after, "failed_allocs") == without(before, "failed_allocs")
        assert after["failed_allocs"] in (before["failed_allocs"], before["failed_allocs"] + 1)


def test_calloc_zero_filled_buffer_arena():
    """calloc(size) -> memoryview: like alloc, zero-filled (what bytearray(size)
    gives)."""
    ba = bytearray(b"\xff" * 4096)
    with BuddyAllocator(ba, min_size=16) as a:
        v = a.calloc(1000)
        assert isinstance(v, memoryview)
        assert len(v) == 1000 and v.format == "B" and not v.readonly and v.c_contiguous
        assert v.tobytes() == bytes(bytearray(1000))
        off = a.offset_of(v)
        assert ba[off : off + 1000] == bytearray(1000)
        assert a.bytes_allocated == 1000 and a.bytes_wasted == 24
        del v


def test_calloc_zero_filled_after_dirty_reuse(pool):
    """calloc zero-fills even a block whose bytes were dirtied before."""
    for size in (0, 1, 15, 100, 960, 4096):
        v = pool.alloc(4096)
        v[:] = b"\xee" * 4096
        pool.free(v)
        z = pool.calloc(size)
        assert pool.offset_of(z) == 0
        assert z.tobytes() == bytes(size)
        pool.free(z)


def test_calloc_out_of_memory(pool):
    pool.alloc(4096)
    with pytest.raises(OutOfMemory):
        pool.calloc(1)


# ---------------------------------------------------------------------------
# Blocks: free
# ---------------------------------------------------------------------------


def test_free_the_view_alloc_returned(pool):
    """free(block): returns the block. block is the view alloc returned ..."""
    v = pool.alloc(960)
    pool.free(v)
    assert len(pool) == 0 and pool.bytes_free == 4096


def test_free_numpy_frombuffer_of_view(pool):
    """... or any buffer over exactly the same bytes (e.g. numpy.frombuffer(view))."""
    v = pool.alloc(960)
    pool.free(np.frombuffer(v))  # float64 items: the format does not matter
    assert len(pool) == 0 and pool.bytes_allocated == 0
    w = pool.alloc(100)
    pool.free(np.frombuffer(w, dtype=np.uint8))
    assert len(pool) == 0


@pytest.mark.parametrize(
    "make",
    [
        lambda v: memoryview(v),
        lambda v: v[:],
        lambda v: v[0 : len(v)],
        lambda v: memoryview(v).cast("B", (len(v),)),
        lambda v: np.frombuffer(v, np.uint8)[:],
    ],
    ids=["memoryview(view)", "view[:]", "view[0:len]", "cast", "numpy-slice"],
)
def test_free_any_buffer_over_same_bytes(make):
    with BuddyAllocator(4096) as a:
        v = a.alloc(960)
        a.free(make(v))
        assert len(a) == 0 and a.bytes_allocated == 0


def test_free_arena_slice_over_same_bytes():
    """A slice of the arena buffer over exactly a block's bytes is that block."""
    ba = bytearray(4096)
    with BuddyAllocator(ba) as a:
        v = a.alloc(960)
        w = a.alloc(100)
        off = a.offset_of(w)
        a.free(memoryview(ba)[off : off + 100])
        assert len(a) == 1 and a.bytes_allocated == 960
        a.free(v)
        del v, w


def test_free_a_stale_view_over_a_reused_same_size_block_frees_it(pool):
    """any buffer over exactly the same bytes: after free + alloc of the same
    size at the same offset, the stale view is a buffer over exactly that
    block (as with malloc's pointers)."""
    old = pool.alloc(100)
    pool.free(old)
    new = pool.alloc(100)
    assert pool.offset_of(new) == 0
    pool.free(old)
    assert len(pool) == 0
    with pytest.raises(ValueError):
        pool.free(new)


def test_after_free_bytes_may_belong_to_another_block(pool):
    """After free the bytes may belong to another block, as with malloc."""
    v = pool.alloc(64)
    pool.free(v)
    w = pool.alloc(32)
    assert pool.offset_of(w) == 0
    v[0] = 0x5A  # still memory-safe: the stale view aliases w
    assert w[0] == 0x5A


# ---------------------------------------------------------------------------
# Statistics  ("O(1)" is not asserted: the suite makes no timing assertions)
# ---------------------------------------------------------------------------


def test_statistics_fresh(pool):
    """bytes_total, bytes_allocated, bytes_wasted, bytes_free, largest_free,
    min_size, and len(allocator)."""
    assert pool.bytes_total == 4096
    assert pool.bytes_allocated == 0
    assert pool.bytes_wasted == 0
    assert pool.bytes_free == 4096
    assert pool.largest_free == 4096
    assert pool.min_size == 16
    assert len(pool) == 0
    for key in PROPERTY_KEYS:
        assert type(getattr(pool, key)) is int


def test_statistics_follow_operations(pool):
    """bytes_free (capacity not covered by a live block), largest_free (the
    largest size that alloc would satisfy right now), len = number of live
    blocks."""
    v1 = pool.alloc(960)  # 1024 @ 0
    v2 = pool.alloc(100)  # 128 @ 1024
    v3 = pool.alloc(0)  # 16 @ 1152
    assert len(pool) == 3
    assert pool.bytes_allocated == 1060
    assert pool.bytes_wasted == 64 + 28 + 16
    assert pool.bytes_free == 4096 - 1024 - 128 - 16
    assert pool.largest_free == 2048
    big = pool.alloc(pool.largest_free)
    assert pool.largest_free == 512
    with pytest.raises(OutOfMemory):
        pool.alloc(513)
    pool.alloc(512)
    pool.free(v1)
    assert pool.largest_free == 1024
    pool.free(v2)
    pool.free(v3)
    assert len(pool) == 2
    pool.free(big)
    assert pool.largest_free == 2048


@pytest.mark.parametrize("key", PROPERTY_KEYS)
def test_statistics_are_read_only(pool, key):
    """Statistics (read-only properties)."""
    before = getattr(pool, key)
    with pytest.raises(AttributeError):
        setattr(pool, key, 12345)
    assert getattr(pool, key) == before


def test_stats_dict_has_all_keys_and_agrees_with_properties(pool):
    """A method stats() returns a dict of all of them plus the free-block
    count for every block size."""
    pool.alloc(960)
    pool.alloc(3)
    s = pool.stats()
    assert isinstance(s, dict)
    for key in STAT_KEYS:
        assert key in s, key
    for key in PROPERTY_KEYS:
        assert s[key] == getattr(pool, key), key
    assert s["live_blocks"] == len(pool) == 2
    assert set(s) == set(STAT_KEYS)  # history lives in counters(), not here
    c = pool.counters()
    assert c == {"alloc_calls": 2, "free_calls": 0, "failed_allocs": 0}
    assert isinstance(s["metadata_bytes"], int) and s["metadata_bytes"] > 0


def test_stats_free_blocks_like_buddyinfo_fresh(pool):
    """(like Linux's /proc/buddyinfo): every block size of the tree, zeros
    included."""
    fb = pool.stats()["free_blocks"]
    assert fb == {16 << k: (1 if k == 8 else 0) for k in range(9)}


def test_stats_free_blocks_after_split(pool):
    pool.alloc(1)
    fb = pool.stats()["free_blocks"]
    assert fb == {16 << k: (1 if k < 8 else 0) for k in range(9)}
    assert sum(size * n for size, n in fb.items()) == pool.bytes_free


def test_stats_free_blocks_non_power_of_two_capacity():
    with BuddyAllocator(100, min_size=16) as a:  # 112 = 64 + 32 + 16
        assert a.stats()["free_blocks"] == {16: 1, 32: 1, 64: 1, 128: 0}
        assert a.largest_free == 64


def test_stats_counters(pool):
    v = pool.alloc(10)
    w = pool.calloc(10)
    x = pool.try_alloc(10)
    pool.free(v)
    with pytest.raises(OutOfMemory):
        pool.alloc(8192)
    s = pool.counters()
    assert s["alloc_calls"] == 3
    assert s["free_calls"] == 1
    assert s["failed_allocs"] == 1
    pool.free(w)
    pool.free(x)
    assert pool.counters()["free_calls"] == 3


def test_stats_returns_a_fresh_dict(pool):
    s = pool.stats()
    s["bytes_total"] = -1
    s["free_blocks"][16] = 99
    assert pool.stats()["bytes_total"] == 4096
    assert pool.stats()["free_blocks"][16] == 0


# ---------------------------------------------------------------------------
# Life cycle
# ---------------------------------------------------------------------------


def test_close_then_alloc_and_free_raise_value_error():
    """close() ends the allocator: later alloc/free raise ValueError."""
    a = BuddyAllocator(4096)
    v = a.alloc(100)
    assert a.closed is False
    a.close()
    assert a.closed is True
    for call in (
        lambda: a.alloc(1),
        lambda: a.try_alloc(1),
        lambda: a.calloc(1),
        lambda: a.free(v),
        lambda: a.alloc(0),
        lambda: a.try_alloc(2**100),
    ):
        with pytest.raises(ValueError):
            call()


def test_close_is_idempotent():
    a = BuddyAllocator(4096)
    a.close()
    a.close()
    assert a.closed is True


def test_close_freezes_statistics():
    """After close, statistics, len() and stats() stay readable, frozen as they
    were at close."""
    a = BuddyAllocator(4096)
    keep = [a.alloc(960), a.alloc(3), a.alloc(0)]
    a.free(keep.pop())
    before = snapshot(a)
    props = {k: getattr(a, k) for k in PROPERTY_KEYS}
    n = len(a)
    a.close()
    assert {k: getattr(a, k) for k in PROPERTY_KEYS} == props
    assert len(a) == n == 2
    after = snapshot(a)
    for key in STAT_KEYS:
        assert after[key] == before[key], key
    with pytest.raises(ValueError):
        a.alloc(1)
    assert snapshot(a) == after


def test_context_manager_closes_on_exit():
    """Use as a context manager (with BuddyAllocator(...) as a:) closes on exit."""
    with BuddyAllocator(4096) as a:
        assert isinstance(a, BuddyAllocator)
        assert not a.closed
        v = a.alloc(10)
    assert a.closed
    with pytest.raises(ValueError):
        a.alloc(10)
    v[:] = b"x" * 10  # the view outlives the allocator
    assert v.tobytes() == b"x" * 10


def test_context_manager_closes_on_exception_and_propagates():
    with pytest.raises(KeyError):
        with BuddyAllocator(4096) as a:
            a.alloc(10)
            raise KeyError("boom")
    assert a.closed


def test_repr_shows_capacity_use_fragmentation():
    """repr() shows capacity, use and fragmentation at a glance."""

    def shows(text, n):
        if mentions(text, n):
            return True
        for unit, div in (("KiB", 1024), ("MiB", 1 << 20), ("kB", 1000), ("KB", 1024)):
            if n % div == 0 and (n // div) in numbers_in(text) and unit in text:
                return True
        return False

    a = BuddyAllocator(16384, min_size=16)
    fresh = repr(a)
    assert "BuddyAllocator" in fresh
    assert "\n" not in fresh
    assert shows(fresh, 16384), fresh
    a.alloc(960)
    used = repr(a)
    assert used != fresh
    assert shows(used, 16384), used
    assert shows(used, 960) or shows(used, 1024), used
    assert shows(used, 64) or "%" in used, used
    a.close()
    closed = repr(a)
    assert "closed" in closed.lower(), closed


# ---------------------------------------------------------------------------
# Threads (see test_threads.py for the concurrent tests)
# ---------------------------------------------------------------------------


def test_binding_keeps_the_gil():
    """(cffi releases the GIL around C calls ...) — the binding redefines
    cffi's GIL-release macros, so C calls run with the GIL held."""
    from alloc import _allocator

    assert _allocator._gil_held() is True
    seen = []
    t = threading.Thread(target=lambda: seen.append(_allocator._gil_held()))
    t.start()
    t.join()
    assert seen == [True]


# ---------------------------------------------------------------------------
# Invariant check
# ---------------------------------------------------------------------------


def test_check_passes_on_a_sane_allocator(pool):
    """check() walks the C core's metadata ..."""
    assert pool.check() is None
    views = [pool.alloc(s) for s in (1, 100, 960, 0, 17, 300)]
    assert pool.check() is None
    for v in views[::2]:
        pool.free(v)
    assert pool.check() is None


@pytest.mark.parametrize(
    "which, order, index",
    [
        (0, 0, 0),  # live min block marked free
        (0, 0, 1),  # free min block marked allocated
        (0, 1, 1),  # free order-1 block marked allocated
        (1, 1, 1),  # free order-1 block marked split
        (1, 8, 0),  # split root marked unsplit
        (0, 8, 0),  # split root marked free
        (0, 6, 2),  # a child of the free 2048 block at 2048 marked free
        (1, 6, 3),  # a child of the free 2048 block at 2048 marked split
    ],
)
def test_check_notices_a_flipped_bit(which, order, index):
    """... and raises RuntimeError describing the first inconsistency."""
    with BuddyAllocator(4096, min_size=16) as a:
        a.alloc(1)  # order 0 @ 0
        a.alloc(1000)  # order 6 @ 1024
        before = snapshot(a)
        a._debug_flip(which, order, index)
        with pytest.raises(RuntimeError) as info:
            a.check()
        assert isinstance(str(info.value), str) and str(info.value).strip()
        a._debug_flip(which, order, index)
        assert a.check() is None
        assert snapshot(a) == before


def test_check_notices_flip_on_fresh_allocator():
    with BuddyAllocator(4096, min_size=16) as a:
        for which, order, index in [(0, 0, 0), (1, 8, 0), (0, 8, 0), (0, 3, 5)]:
            a._debug_flip(which, order, index)
            with pytest.raises(RuntimeError):
                a.check()
            a._debug_flip(which, order, index)
            assert a.check() is None


# ---------------------------------------------------------------------------
# Extras
# ---------------------------------------------------------------------------


def test_version_is_a_string():
    assert isinstance(alloc.__version__, str) and alloc.__version__


def test_out_of_memory_exported():
    assert alloc.OutOfMemory is OutOfMemory
    assert issubclass(alloc.OutOfMemory, MemoryError)


def test_offset_of_live_block_and_equivalent_buffers():
    ba = bytearray(4096)
    with BuddyAllocator(ba) as a:
        a.alloc(16)
        v = a.alloc(960)
        assert a.offset_of(v) == 1024
        assert a.offset_of(np.frombuffer(v, np.uint8)) == 1024
        assert a.offset_of(memoryview(ba)[1024:1984]) == 1024
        assert a.offset_of(v[:]) == 1024
        del v


def test_offset_of_freed_block_is_value_error(pool):
    v = pool.alloc(960)
    pool.free(v)
    with pytest.raises(ValueError):
        pool.offset_of(v)


def test_offset_of_non_buffer_is_type_error(pool):
    pool.alloc(16)
    for bad in (None, 0, "abc", 1.5, object()):
        with pytest.raises(TypeError):
            pool.offset_of(bad)


def test_block_size_extra():
    with BuddyAllocator(4096, min_size=16) as a:
        before = snapshot(a)
        assert a.block_size(0) == a.min_size == 16
        assert a.block_size(17) == 32
        assert a.block_size(960) == 1024
        assert snapshot(a) == before  # a read-only query
    with BuddyAllocator(4096, min_size=64) as a:
        assert a.block_size(0) == 64
        assert a.block_size(65) == 128


def test_placement_predictable_on_fresh_allocator(pool):
    """Smallest order with a free block, its lowest offset, lower half kept."""
    sizes = [16, 16, 32, 64, 16, 1000, 2048]
    expected = [0, 16, 32, 64, 128, 1024, 2048]
    views = [pool.alloc(s) for s in sizes]
    assert [pool.offset_of(v) for v in views] == expected
    model = BuddyModel(4096, 16)
    assert [model.alloc(s) for s in sizes] == expected
    pool.free(views[0])
    assert pool.offset_of(pool.alloc(1)) == 0
    assert pool.offset_of(pool.alloc(1)) == 144
    assert pool.offset_of(pool.alloc(32)) == 160


def test_placement_merges_buddies_back(pool):
    views = [pool.alloc(16) for _ in range(256)]
    assert [pool.offset_of(v) for v in views] == list(range(0, 4096, 16))
    for v in views:
        pool.free(v)
    assert pool.largest_free == 4096
    assert pool.stats()["free_blocks"][4096] == 1
    assert pool.offset_of(pool.alloc(4096)) == 0


def test_views_survive_allocator_deletion():
    """A view stays usable after `del a` + gc.collect()."""
    a = BuddyAllocator(4096)
    v = a.alloc(100)
    v[:] = pattern(1, 100)
    del a
    gc.collect()
    assert v.tobytes() == pattern(1, 100)
    v[:] = pattern(2, 100)
    assert v.tobytes() == pattern(2, 100)


def test_an_allocator_is_neither_copied_nor_pickled():
    import copy
    import pickle

    with BuddyAllocator(4096) as a:
        for attempt in (copy.copy, copy.deepcopy, pickle.dumps):
            with pytest.raises(TypeError):
                attempt(a)
        v = a.alloc(10)  # still fully usable
        a.free(v)
        assert len(a) == 0

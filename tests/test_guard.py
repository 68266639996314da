"""API.md, Extensions, "Guard mode": ``BuddyAllocator(..., guard=True)``.

A freed block is filled with a pattern (0xDB) and checked when any of its
bytes is handed out again; a write after free raises ``alloc.UseAfterFree``
(a RuntimeError) naming the offset (``.offset``), from the allocation that
would hand the bytes out (alloc, try_alloc, calloc, alloc_many, aligned
alloc, realloc growing in place or moving) and from ``check()``.  Off by
default: nothing filled, nothing detected.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import alloc
from alloc import BuddyAllocator, OutOfMemory, UseAfterFree
from conftest import mentions, pattern, snapshot

DB = 0xDB


@pytest.fixture(params=["int", "bytearray", "numpy"])
def guarded(request):
    if request.param == "int":
        arena = None
        a = BuddyAllocator(4096, min_size=16, guard=True)
    elif request.param == "bytearray":
        arena = bytearray(b"\x11" * 4096)
        a = BuddyAllocator(arena, min_size=16, guard=True)
    else:
        arena = np.full(4096, 0x22, np.uint8)
        a = BuddyAllocator(arena, min_size=16, guard=True)
    yield a
    a.close()


def written_after_free(pool, size=100, at=5):
    """Allocate, free, then write through the dead view: the bug guard mode
    is for.  Returns the arena offset written."""
    v = pool.alloc(size)
    off = pool.offset_of(v)
    pool.free(v)
    v[at] = 0x00
    return off + at


def test_use_after_free_is_a_runtime_error_with_an_offset():
    assert issubclass(UseAfterFree, RuntimeError)
    assert alloc.UseAfterFree is UseAfterFree
    e = UseAfterFree("boom", 123)
    assert e.offset == 123
    e2 = pickle.loads(pickle.dumps(e))
    assert type(e2) is UseAfterFree and e2.offset == 123 and str(e2) == "boom"


def test_guard_is_off_by_default_and_fills_nothing():
    arena = bytearray(b"\x11" * 4096)
    with BuddyAllocator(arena) as a:
        assert arena == b"\x11" * 4096  # nothing filled at creation
        v = a.alloc(100)
        v[:] = pattern(1, 100)
        a.free(v)
        assert arena[:100] == pattern(1, 100)  # nothing filled on free
        v[5] = 0  # a write after free: not detected
        a.check()
        w = a.alloc(100)
        assert a.offset_of(w) == 0 and w[5] == 0
        a.check()


def test_guard_false_explicitly_detects_nothing():
    with BuddyAllocator(4096, guard=False) as a:
        written_after_free(a)
        a.check()
        a.alloc(100)
        a.check()


def test_guard_fills_the_free_arena_at_creation_and_every_freed_block():
    arena = bytearray(b"\x11" * 4096)
    with BuddyAllocator(arena, guard=True) as a:
        assert arena == bytes([DB]) * 4096
        v = a.alloc(100)
        v[:] = pattern(2, 100)
        w = a.alloc(16)
        w[:] = b"w" * 16
        a.free(v)
        assert arena[:128] == bytes([DB]) * 128  # the whole block, tail too
        assert arena[128:144] == b"w" * 16  # a live neighbour is untouched
        a.free_at(a.offset_of(w))
        assert arena == bytes([DB]) * 4096


def test_guard_over_a_partly_used_buffer_fills_only_the_capacity():
    arena = bytearray(b"\x11" * 4100)  # capacity 4096
    with BuddyAllocator(arena, guard=True) as a:
        assert a.bytes_total == 4096
        assert arena[4096:] == b"\x11" * 4
        a.check()


def test_check_reports_a_write_after_free(guarded):
    off = written_after_free(guarded)
    with pytest.raises(UseAfterFree) as info:
        guarded.check()
    assert isinstance(info.value, RuntimeError)
    assert info.value.offset == off
    assert mentions(str(info.value), off)
    with pytest.raises(UseAfterFree):  # check() changes nothing: still there
        guarded.check()


@pytest.mark.parametrize("method", ["alloc", "try_alloc", "calloc", "aligned", "alloc_many"])
def test_the_next_allocation_that_touches_it_raises_and_takes_itself_back(guarded, method):
    off = written_after_free(guarded)
    before = snapshot(guarded)
    with pytest.raises(UseAfterFree) as info:
        if method == "aligned":
            guarded.alloc(100, align=16)  # buffer arenas: 16-aligned bases
        elif method == "alloc_many":
            guarded.alloc_many(100, 3)
        else:
            getattr(guarded, method)(100)
    assert info.value.offset == off
    assert mentions(str(info.value), off)
    after = snapshot(guarded)
    # taken back: no live block, the figures as before (the attempt counts
    # as allocations and frees)
    for key in ("alloc_calls", "free_calls", "failed_allocs",
                "peak_bytes_allocated", "peak_bytes_in_blocks", "peak_live_blocks"):
        after.pop(key), before.pop(key)
    assert after == before
    assert len(guarded) == 0
    # ... and the pattern restored: check() passes, the block is handed out
    guarded.check()
    v = guarded.alloc(100)
    assert guarded.offset_of(v) == off - 5
    assert v.tobytes() == bytes([DB]) * 100  # guard mode does not clear
    guarded.check()


def test_an_allocation_of_part_of_the_block_checks_only_its_part(guarded):
    v = guarded.alloc(1024)
    guarded.free(v)
    v[900] = 1
    got = []
    with pytest.raises(UseAfterFree) as info:
        for _ in range(64):
            got.append(guarded.alloc(16))
    assert info.value.offset == 900
    assert len(got) == 900 // 16  # 0 .. 895 were clean
    assert len(guarded) == len(got)
    guarded.free_many(got)


def test_a_larger_allocation_covering_a_small_freed_block_raises(guarded):
    small = guarded.alloc(16)
    keep = guarded.alloc(16)
    guarded.free(small)
    small[15] = 0x41
    guarded.free(keep)  # everything merges back into one 4096-byte block
    with pytest.raises(UseAfterFree) as info:
        guarded.alloc(4096)
    assert info.value.offset == 15
    assert guarded.alloc(4096) is not None


def test_realloc_growing_in_place_into_a_written_buddy_raises(guarded):
    a = guarded.alloc(16)
    b = guarded.alloc(16)
    guarded.free(b)
    b[3] = 0
    a[:] = b"a" * 16
    before = snapshot(guarded)
    with pytest.raises(UseAfterFree) as info:
        guarded.realloc(a, 32)
    assert info.value.offset == 19
    assert mentions(str(info.value), 19)
    # Found by this test: the message said the allocation "was taken back
    # and the pattern restored", which is what alloc does, not realloc.
    assert "restored" not in str(info.value)
    assert "nothing changed" in str(info.value)
    assert snapshot(guarded) == before  # nothing changed
    assert a.tobytes() == b"a" * 16 and guarded.offset_of(a) == 0
    with pytest.raises(UseAfterFree):
        guarded.check()


def test_realloc_moving_into_a_written_block_raises(guarded):
    a = guarded.alloc(16)  # 0
    guarded.alloc(16)  # 16: a cannot grow in place
    c = guarded.alloc(64)  # 64
    guarded.free(c)
    c[10] = 0
    with pytest.raises(UseAfterFree) as info:
        guarded.realloc(a, 40)  # would move to 64
    assert info.value.offset == 74
    assert guarded.offset_of(a) == 0 and len(guarded) == 2


def test_realloc_shrinking_fills_the_freed_tail():
    arena = bytearray(4096)
    with BuddyAllocator(arena, guard=True) as a:
        v = a.alloc(1000)
        v[:] = b"\x01" * 1000
        w = a.realloc(v, 100)
        assert arena[:100] == b"\x01" * 100
        assert arena[128:1024] == bytes([DB]) * 896
        a.check()
        v[600] = 5  # the old view still reaches the freed tail
        with pytest.raises(UseAfterFree) as info:
            a.check()
        assert info.value.offset == 600
        a.free(w)


def test_write_through_the_arena_into_a_free_block_is_caught():
    arena = bytearray(4096)
    with BuddyAllocator(arena, guard=True) as a:
        arena[3000] = 0  # e.g. another process writing into free memory
        with pytest.raises(UseAfterFree) as info:
            a.check()
        assert info.value.offset == 3000


def test_writes_into_live_blocks_are_fine(guarded):
    v = guarded.alloc(100)
    v[:] = b"\x00" * 100
    guarded.check()
    guarded.free(v)
    guarded.check()


def test_guard_mode_survives_a_random_trace_without_false_alarms():
    rng = np.random.default_rng(0)
    with BuddyAllocator(1 << 14, min_size=16, guard=True) as a:
        live = []
        for step in range(500):
            if live and rng.random() < 0.45:
                a.free(live.pop(int(rng.integers(len(live)))))
            elif live and rng.random() < 0.2:
                i = int(rng.integers(len(live)))
                try:
                    live[i] = a.realloc(live[i], int(rng.integers(0, 2000)))
                except OutOfMemory:
                    continue
                live[i][:] = b"\x00" * len(live[i])
            else:
                v = a.try_alloc(int(rng.integers(0, 2000)),
                                align=int(2 ** rng.integers(0, 10)))  # int arena
                if v is not None:
                    v[:] = b"\x00" * len(v)
                    live.append(v)
        a.check()


def test_guard_out_of_memory_is_still_out_of_memory():
    with BuddyAllocator(4096, guard=True) as a:
        a.alloc(4096)
        with pytest.raises(OutOfMemory):
            a.alloc(16)
        assert a.try_alloc(16) is None


def test_a_write_into_a_live_blocks_tail_is_not_reported_and_is_refilled():
    # As README says (it used to claim such writes were caught).
    arena = bytearray(4096)
    with BuddyAllocator(arena, guard=True) as a:
        v = a.alloc(100)  # a 128-byte block
        assert arena[100:128] == bytes([DB]) * 28  # the tail holds the pattern
        arena[110] = 0
        a.check()
        a.free(v)
        assert arena[:128] == bytes([DB]) * 128
        a.check()
        a.alloc(128)


# Found by the next two tests: realloc checked the bytes after the block up
# to the new size even when the block could not grow in place (an upper
# half, or a live buddy), so it raised UseAfterFree for bytes it would
# never hand out -- and, since nothing changed, raised it on every retry
# instead of moving the block.


def test_realloc_that_must_move_does_not_check_bytes_it_does_not_take():
    with BuddyAllocator(4096, guard=True) as p:
        p.alloc(16)  # 0
        b = p.alloc(16)  # 16: an upper half, it cannot grow in place
        c = p.alloc(32)  # 32
        p.alloc(64)  # 64
        p.free(c)
        c[0] = 1  # a write after free at 32
        b[:] = b"b" * 16
        w = p.realloc(b, 64)  # moves, to a block that holds no bad byte
        assert p.offset_of(w) == 128 and w[:16] == b"b" * 16
        with pytest.raises(UseAfterFree) as info:  # still reported where it is
            p.check()
        assert info.value.offset == 32
        with pytest.raises(UseAfterFree) as info:  # and by the alloc that takes it
            p.alloc(32)
        assert info.value.offset == 32


def test_realloc_blocked_by_a_live_buddy_moves_past_a_bad_free_byte():
    with BuddyAllocator(4096, guard=True) as p:
        a = p.alloc(16)  # 0
        p.alloc(16)  # 16: a's buddy, live
        c = p.alloc(32)  # 32
        p.alloc(64)  # 64
        p.free(c)
        c[5] = 1  # at 37, inside [0, 64) but not a's to take
        w = p.realloc(a, 64)
        assert p.offset_of(w) == 128
        with pytest.raises(UseAfterFree) as info:
            p.check()
        assert info.value.offset == 37

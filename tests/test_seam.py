"""The one-argument entry points (csrc/seam.h): each pool is bound to one of
SEAM_SLOTS slots in C while one is free, and takes the two-argument path
(the pool passed on every call) when none is.  Both paths must behave the
same, and a slot must never reach another allocator's pool."""

from __future__ import annotations

import functools
import gc

import pytest

import alloc
from alloc import BuddyAllocator, OffsetAllocator, OutOfMemory
from alloc._allocator import lib
from conftest import snapshot

SLOTS = lib.SEAM_SLOTS


def bound(a) -> bool:
    """True if a's pool has a slot (its entry points are C functions)."""
    return not isinstance(a._alloc_entry, functools.partial)


def exercise(a: BuddyAllocator) -> None:
    """The fast paths and their hand-offs, on whichever path a has."""
    v = a.alloc(100)
    w = a.try_alloc(64)
    assert len(v) == 100 and len(w) == 64
    z = a.alloc(0)  # the slow path: recorded by identity
    assert len(z) == 0 and len(a) == 3
    with pytest.raises(ValueError, match=">= 0"):
        a.alloc(-1)
    with pytest.raises(OutOfMemory):
        a.alloc(2**64)  # cffi's OverflowError never reaches the user
    with pytest.raises(OutOfMemory):
        a.alloc(2**64 - 1)
    assert a.try_alloc(2**64) is None
    with pytest.raises(ValueError, match=">= 0"):
        a.try_alloc(-5)
    with pytest.raises(TypeError):
        a.alloc(True)
    before = snapshot(a)
    with pytest.raises(ValueError):
        a.free(bytearray(100))  # not in this arena
    with pytest.raises(TypeError):
        a.free(12)
    assert snapshot(a) == before
    for block in (v, w, z):
        a.free(block)
    with pytest.raises(ValueError):
        a.free(v)  # double free
    assert len(a) == 0
    a.check()


def test_more_allocators_than_slots_all_work_and_stay_apart():
    gc.collect()
    pools = [BuddyAllocator(4096) for _ in range(SLOTS + 8)]
    assert not all(bound(a) for a in pools)  # some took the fallback
    assert any(bound(a) for a in pools) or SLOTS == 0
    for a in pools:
        exercise(a)
    # a block of one allocator is refused by every other, on both paths
    first = next(a for a in pools if bound(a))
    last = next(a for a in pools if not bound(a))
    for owner, other in ((first, last), (last, first)):
        v = owner.alloc(64)
        before = snapshot(other), snapshot(owner)
        with pytest.raises(ValueError):
            other.free(v)
        assert (snapshot(other), snapshot(owner)) == before
        owner.free(v)
    for a in pools:
        assert len(a) == 0
        a.check()


def test_a_destroyed_pool_gives_its_slot_back():
    gc.collect()
    pools = [BuddyAllocator(4096) for _ in range(SLOTS + 1)]
    assert not bound(pools[-1])
    slotted = next(a for a in pools if bound(a))
    entry = slotted._alloc_entry
    pools.remove(slotted)
    del slotted
    gc.collect()
    again = BuddyAllocator(4096)
    assert bound(again) and again._alloc_entry is entry  # the same slot, reused
    v = again.alloc(64)
    assert again.offset_of(v) == 0 and len(again) == 1
    for a in pools:
        assert len(a) == 0  # no one else's pool was touched
    again.free(v)
    assert len(again) == 0


def test_closed_and_never_created_pools_refuse_on_both_paths():
    gc.collect()
    pools = [BuddyAllocator(4096) for _ in range(SLOTS + 1)]
    for a in (pools[0], pools[-1]):
        v = a.alloc(16)
        a.close()
        with pytest.raises(ValueError, match="closed"):
            a.alloc(16)
        with pytest.raises(ValueError, match="closed"):
            a.try_alloc(16)
        with pytest.raises(ValueError, match="closed"):
            a.free(v)

    class Forgot(BuddyAllocator):
        def __init__(self):
            pass

    f = Forgot()
    for call in (lambda: f.alloc(16), lambda: f.try_alloc(16),
                 lambda: f.free(bytearray(16)), lambda: f.alloc(0)):
        with pytest.raises(ValueError, match="never created"):
            call()


def test_offset_allocators_share_the_slots():
    gc.collect()
    offs = [OffsetAllocator(1 << 20) for _ in range(SLOTS)]
    a = BuddyAllocator(4096)  # no slot is left for it
    assert not bound(a)
    exercise(a)
    del offs
    gc.collect()
    assert bound(BuddyAllocator(4096))


def exercise_offsets(o: OffsetAllocator) -> None:
    """OffsetAllocator's fast paths and their hand-offs."""
    a, b = o.alloc(100), o.try_alloc(64)
    z = o.alloc(0)  # size 0: the slow path, an ordinary min_size block
    assert len(o) == 3 and o.size_of(z) == 0 and o.size_of(a) == 100
    for bad, exc in ((-1, ValueError), (True, TypeError), (1.0, TypeError)):
        with pytest.raises(exc):
            o.alloc(bad)
        with pytest.raises(exc):
            o.free(bad)
    with pytest.raises(OutOfMemory):
        o.alloc(2**64)
    assert o.try_alloc(2**70) is None
    before = snapshot(o)
    for wrong in (a + 16, 2**64, 2**64 + a, o.bytes_total, 3):
        with pytest.raises(ValueError):
            o.free(wrong)
    assert snapshot(o) == before
    for off in (a, b, z):
        o.free(off)
    with pytest.raises(ValueError, match="free"):
        o.free(a)  # double free
    assert len(o) == 0
    o.check()


def test_offset_allocator_fast_paths_on_both_paths():
    gc.collect()
    offs = [OffsetAllocator(1 << 20) for _ in range(SLOTS + 2)]
    assert bound(offs[0]) and not bound(offs[-1])
    for o in (offs[0], offs[-1]):
        exercise_offsets(o)
        o.close()
        with pytest.raises(ValueError, match="closed"):
            o.alloc(16)
        with pytest.raises(ValueError, match="closed"):
            o.try_alloc(16)
        with pytest.raises(ValueError, match="closed"):
            o.free(0)

    class Forgot(OffsetAllocator):
        def __init__(self):
            pass

    f = Forgot()
    for call in (lambda: f.alloc(16), lambda: f.try_alloc(16), lambda: f.free(0)):
        with pytest.raises(ValueError, match="never created"):
            call()


# ---- exact fits: blocks whose requested size is their block size have no
# record in the pool's size table (csrc/pool.h); everything must still know
# their size exactly.


def test_exact_fits_and_records_side_by_side():
    a = BuddyAllocator(1 << 16, min_size=16)
    exact, inexact = a.alloc(64), a.alloc(60)
    assert a.bytes_allocated == 124 and a.bytes_wasted == 4
    assert sorted(r for _, _, r in a.blocks()) == [60, 64]
    before = snapshot(a)
    for wrong in (exact[:60], exact[:32], a.block_at(a.offset_of(inexact))[:59]):
        with pytest.raises(ValueError):
            a.free(wrong)
    base = a.offset_of(inexact)
    import numpy as np
    whole = np.frombuffer(a._mv, dtype=np.uint8)[base:base + 64]
    with pytest.raises(ValueError):
        a.free(whole)  # the 64 bytes of a block requested with 60
    assert snapshot(a) == before
    a.free(np.frombuffer(exact, dtype=np.uint8))  # any buffer over exactly it
    a.free(inexact)
    assert len(a) == 0 and a.check() is None


@pytest.mark.parametrize("sizes", [(64, 100), (100, 128), (64, 128), (100, 60), (128, 64)])
def test_realloc_between_exact_and_inexact_sizes(sizes):
    old, new = sizes
    a = BuddyAllocator(1 << 16, min_size=16)
    v = a.alloc(old)
    v[:] = bytes(range(old))
    w = a.realloc(v, new)
    keep = min(old, new)
    assert len(w) == new and w[:keep] == bytes(range(keep))
    assert a.bytes_allocated == new and len(a) == 1
    assert list(a.blocks())[0][2] == new
    assert a.block_at(a.offset_of(w)).nbytes == new
    if new != old:
        with pytest.raises(ValueError):
            a.free(a._mv[a.offset_of(w):a.offset_of(w) + old])
    a.free(w)
    assert len(a) == 0 and a.bytes_allocated == 0 and a.check() is None


def test_realloc_of_an_exact_fit_when_the_table_cannot_grow():
    a = BuddyAllocator(1 << 16, min_size=16)
    a._debug_table_only()  # records in the table only, which cannot grow
    v = a.alloc(64)
    a._debug_fail_next_table_growth()
    w = a.realloc(v, 100)  # needs a record: moved (or refused), never wrong
    assert len(w) == 100 and a.bytes_allocated == 100 and len(a) == 1
    a.free(w)
    assert len(a) == 0 and a.check() is None
    o = OffsetAllocator(1 << 16)
    o._debug_table_only()
    off = o.alloc(64)
    o._debug_fail_next_table_growth()
    with pytest.raises(ValueError):
        o.realloc(off + 16, 100)  # a wrong offset: refused, nothing changed
    assert len(o) == 1 and o.size_of(off) == 64
    assert o.size_of(o.realloc(off, 100)) == 100 and len(o) == 1


def test_a_refused_free_is_one_call_even_if_the_block_comes_back():
    """A refused free must not look again: another thread may allocate a
    block at that offset in between, and a second look would free it.
    The wrapper plays that thread, right after the entry point refused."""
    o = OffsetAllocator(1 << 16)
    off = o.alloc(64)
    o.free(off)
    entry, late = o._free_at_entry, []

    def racing(offset):
        status = entry(offset)
        late.append(o.alloc(64))  # lands at the offset just refused
        return status

    o._free_at_entry = racing
    with pytest.raises(ValueError, match="free"):
        o.free(off)  # a double free when it was called
    assert late == [off] and len(o) == 1 and o.size_of(off) == 64

    a = BuddyAllocator(1 << 16)
    v = a.alloc(64)
    a.free(v)
    entry, late = a._free_entry, []

    def racing_view(block):  # (its id() through the id() seam)
        status = entry(block)
        late.append(a.alloc(64))
        return status

    a._free_entry = racing_view
    with pytest.raises(ValueError):
        a.free(v)
    assert len(late) == 1 and a.offset_of(late[0]) == 0 and len(a) == 1


MAKERS = {
    "buddy": lambda: BuddyAllocator(1 << 20),
    "guard": lambda: BuddyAllocator(1 << 20, guard=True),
    "offset": lambda: OffsetAllocator(1 << 20),
    "shared": lambda: alloc.SharedBuddyAllocator(create=True, size=1 << 20),
}


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_no_instance_attribute_shadows_a_class_attribute(kind):
    """CPython 3.12+ does not specialise reading an instance attribute that
    shadows a class attribute (the fast paths' entry points and arena view
    were; ~60 ns a pair): per-instance state has no class-level default
    (_Pool._STATE, set by __new__)."""
    a = MAKERS[kind]()
    try:
        v = a.alloc(10)
        a.free(v)
        assert not set(vars(a)) & set(dir(type(a)))
        before = set(vars(type(a).__new__(type(a))))
        assert {"_alloc_entry", "_free_entry", "_closed", "_h"} <= before
    finally:
        a.close()
        if isinstance(a, alloc.SharedBuddyAllocator):
            a.unlink()


def test_state_before_init_refuses_as_never_created():
    """What __new__ sets is what close(), repr() and the fast paths see when
    __init__ never ran."""
    for cls in (BuddyAllocator, OffsetAllocator, alloc.SharedBuddyAllocator):
        a = cls.__new__(cls)
        assert "not created" in repr(a) and a.closed and len(a) == 0
        with pytest.raises(ValueError, match="never created"):
            a.alloc(16)
        a.close()  # harmless

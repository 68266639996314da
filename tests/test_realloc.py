"""API.md, Extensions, "Shapes and places": ``BuddyAllocator.realloc``.

Shrink in place (same offset, the tail freed, statistics follow); grow in
place when the buddies above are free and the block is the lower half at
each level (same offset); otherwise allocate, copy min(old, new) bytes and
free the old block.  On OutOfMemory nothing changes (statistics, counters
but failed_allocs, contents).  Wrong blocks raise as ``free`` does and
change nothing.
"""

from __future__ import annotations

import numpy as np
import pytest

from alloc import BuddyAllocator, OutOfMemory
from conftest import BuddyModel, addr, pattern, snapshot


@pytest.fixture
def pool():
    with BuddyAllocator(4096, min_size=16) as a:
        yield a


def filled(pool, size, tag):
    v = pool.alloc(size)
    v[:] = pattern(tag, size)
    return v


def calls(pool):
    c = pool.counters()
    return c["alloc_calls"], c["free_calls"]


# ---- shrink ------------------------------------------------------------------


def test_shrink_is_in_place_and_frees_the_tail(pool):
    v = filled(pool, 1000, 1)
    before = calls(pool)
    w = pool.realloc(v, 100)
    assert pool.offset_of(w) == 0 and addr(w) == addr(v)
    assert len(w) == 100 and w.tobytes() == pattern(1, 1000)[:100]
    assert pool.bytes_allocated == 100 and pool.bytes_wasted == 28
    assert pool.bytes_free == 4096 - 128
    s = pool.stats()["free_blocks"]
    assert s[128] == 1 and s[256] == 1 and s[512] == 1 and s[2048] == 1
    assert calls(pool) == before  # a resize is neither an alloc nor a free
    assert list(pool.blocks()) == [(0, 128, 100)]
    pool.check()
    # the tail is free again: the next 512-byte request takes it
    assert pool.offset_of(pool.alloc(512)) == 512


def test_shrink_within_the_same_block(pool):
    v = filled(pool, 100, 2)
    w = pool.realloc(v, 65)
    assert pool.offset_of(w) == 0 and w.tobytes() == pattern(2, 100)[:65]
    assert pool.bytes_allocated == 65 and pool.bytes_wasted == 63
    pool.free(w)
    assert pool.bytes_free == 4096
    pool.check()


def test_shrink_of_an_upper_half_block_is_in_place(pool):
    pool.alloc(1024)
    v = filled(pool, 1024, 3)  # at 1024
    w = pool.realloc(v, 16)
    assert pool.offset_of(w) == 1024 and w.tobytes() == pattern(3, 16)
    pool.check()


def test_old_view_of_a_shrunk_block_is_no_longer_a_block(pool):
    v = filled(pool, 300, 4)
    w = pool.realloc(v, 200)
    before = snapshot(pool)
    with pytest.raises(ValueError):
        pool.free(v)  # its length is not the block's any more
    assert snapshot(pool) == before
    pool.free(w)


# ---- grow in place ---------------------------------------------------------


def test_grow_in_place_into_free_buddies(pool):
    v = filled(pool, 100, 5)
    before = calls(pool)
    w = pool.realloc(v, 1000)  # 128 -> 1024: the buddies 128, 256, 512 are free
    assert pool.offset_of(w) == 0 and addr(w) == addr(v)
    assert w[:100].tobytes() == pattern(5, 100)
    assert pool.bytes_allocated == 1000 and pool.bytes_wasted == 24
    assert calls(pool) == before
    assert pool.peak_bytes_allocated == 1000 and pool.peak_bytes_in_blocks == 1024
    assert list(pool.blocks()) == [(0, 1024, 1000)]
    pool.check()


def test_grow_within_the_same_block_is_in_place(pool):
    v = filled(pool, 70, 6)
    w = pool.realloc(v, 128)
    assert pool.offset_of(w) == 0 and w[:70].tobytes() == pattern(6, 70)
    assert pool.bytes_wasted == 0


def test_grow_to_the_whole_arena_in_place(pool):
    v = filled(pool, 16, 7)
    w = pool.realloc(v, 4096)
    assert pool.offset_of(w) == 0 and pool.bytes_free == 0
    assert w[:16].tobytes() == pattern(7, 16)
    pool.check()


# ---- grow by moving --------------------------------------------------------


def test_grow_moves_when_the_buddy_is_live(pool):
    v = filled(pool, 100, 8)  # 0
    other = filled(pool, 100, 9)  # 128
    before = calls(pool)
    w = pool.realloc(v, 200)
    assert pool.offset_of(w) == 256  # the lowest free 256-byte block
    assert w[:100].tobytes() == pattern(8, 100)
    assert other.tobytes() == pattern(9, 100)
    assert calls(pool) == (before[0] + 1, before[1] + 1)
    assert pool.bytes_allocated == 300 and len(pool) == 2
    with pytest.raises(ValueError):
        pool.free(v)  # the old block was freed
    # the old place is free again
    assert pool.offset_of(pool.alloc(100)) == 0
    pool.check()


def test_grow_moves_an_upper_half_block_even_with_free_buddies(pool):
    a = pool.alloc(100)  # 0
    v = filled(pool, 100, 10)  # 128
    pool.free(a)  # 0..127 free, but 128 is the upper half of 0..255
    w = pool.realloc(v, 200)
    off = pool.offset_of(w)
    assert off != 128 and off % 256 == 0
    assert w[:100].tobytes() == pattern(10, 100)
    # the model's rule: allocate first (normal placement), then free
    assert off == 256
    assert pool.bytes_free == 4096 - 256
    pool.check()


def test_grow_moves_when_a_higher_buddy_is_live(pool):
    v = filled(pool, 16, 11)  # 0
    pool.alloc(512)  # 512: the buddy of 0..511
    w = pool.realloc(v, 1000)
    off = pool.offset_of(w)
    assert off == 1024
    assert w[:16].tobytes() == pattern(11, 16)
    pool.check()


def test_shrink_then_grow_back_in_place(pool):
    v = filled(pool, 2048, 12)
    w = pool.realloc(v, 10)
    x = pool.realloc(w, 2048)
    assert pool.offset_of(x) == 0 and x[:10].tobytes() == pattern(12, 10)


def test_realloc_takes_any_buffer_over_exactly_the_block(pool):
    v = filled(pool, 100, 13)
    w = pool.realloc(np.frombuffer(v, np.uint8), 50)
    assert pool.offset_of(w) == 0 and w.tobytes() == pattern(13, 50)
    x = pool.realloc(memoryview(w), 3000)
    assert x[:50].tobytes() == pattern(13, 50)


def test_realloc_over_a_bytearray_arena_moves_the_bytes_in_the_arena():
    arena = bytearray(4096)
    with BuddyAllocator(arena) as a:
        v = filled(a, 100, 14)
        a.alloc(16)  # 128: blocks growth in place
        w = a.realloc(v, 300)
        off = a.offset_of(w)
        assert off == 512
        assert arena[off:off + 100] == pattern(14, 100)
        w[100:] = b"z" * 200
        assert arena[off + 100:off + 300] == b"z" * 200


# ---- zero sizes --------------------------------------------------------------


def test_realloc_to_zero_keeps_a_min_size_block_freeable_by_its_view(pool):
    v = filled(pool, 300, 15)
    z = pool.realloc(v, 0)
    assert len(z) == 0 and pool.offset_of(z) == 0
    assert len(pool) == 1 and pool.bytes_allocated == 0 and pool.bytes_wasted == 16
    assert pool.block_at(0) is z
    assert list(pool.blocks()) == [(0, 16, 0)]
    with pytest.raises(ValueError):
        pool.free(v)
    with pytest.raises(ValueError):
        pool.free(v[:0])  # an empty slice frees nothing
    pool.free(z)
    assert len(pool) == 0
    pool.check()


def test_realloc_from_a_zero_size_block(pool):
    z = pool.alloc(0)
    w = pool.realloc(z, 10)
    assert len(w) == 10 and pool.offset_of(w) == 0
    with pytest.raises(ValueError):
        pool.free(z)  # z no longer names a block
    w[:] = b"0123456789"
    x = pool.realloc(w, 500)
    assert pool.offset_of(x) == 0 and x[:10] == b"0123456789"
    pool.free(x)
    assert len(pool) == 0
    pool.check()


def test_realloc_of_a_zero_size_block_that_must_move(pool):
    z = pool.alloc(0)  # 0
    pool.alloc(16)  # 16
    w = pool.realloc(z, 100)
    assert pool.offset_of(w) == 128 and len(pool) == 2
    pool.check()


def test_realloc_zero_to_zero(pool):
    z = pool.alloc(0)
    z2 = pool.realloc(z, 0)
    assert len(z2) == 0 and pool.offset_of(z2) == 0 and len(pool) == 1
    pool.free(z2)
    assert len(pool) == 0


def test_realloc_from_an_empty_slice_is_refused(pool):
    v = pool.alloc(100)
    pool.alloc(0)
    before = snapshot(pool)
    for arg in (v[:0], v[100:], memoryview(b"")):
        with pytest.raises(ValueError):
            pool.realloc(arg, 10)
    assert snapshot(pool) == before


# ---- OutOfMemory: nothing changes --------------------------------------------


@pytest.mark.parametrize("new_size", [3000, 4097, 1 << 20, (1 << 64) - 1, 1 << 64, 1 << 100])
def test_out_of_memory_changes_nothing(pool, new_size):
    v = filled(pool, 100, 16)
    pool.alloc(100)  # growth in place is impossible
    before = snapshot(pool)
    with pytest.raises(OutOfMemory):
        pool.realloc(v, new_size)
    after = snapshot(pool)
    assert after.pop("failed_allocs") == before.pop("failed_allocs") + 1
    assert after == before
    assert v.tobytes() == pattern(16, 100)
    assert pool.offset_of(v) == 0
    pool.free(v)  # the old view is still the block
    pool.check()


# ---- wrong blocks: as free, nothing changes ---------------------------------


def wrong_blocks(pool):
    v = filled(pool, 100, 17)
    dead = pool.alloc(64)
    pool.free(dead)
    released = pool.alloc(32)
    released.release()
    return v, {
        "interior": v[16:],
        "odd-interior": v[1:],
        "prefix": v[:50],
        "foreign": bytearray(100),
        "foreign-copy": bytearray(v),
        "freed": dead,
        "released": released,
    }


@pytest.mark.parametrize("kind", ["interior", "odd-interior", "prefix", "foreign",
                                  "foreign-copy", "freed", "released"])
def test_wrong_block_is_refused_like_free(pool, kind):
    v, args = wrong_blocks(pool)
    arg = args[kind]
    before = snapshot(pool)
    with pytest.raises(ValueError) as r:
        pool.realloc(arg, 200)
    with pytest.raises(ValueError) as f:
        pool.free(arg)
    assert snapshot(pool) == before
    assert type(r.value) is type(f.value)
    assert v.tobytes() == pattern(17, 100)
    pool.check()


@pytest.mark.parametrize("arg", [None, 0, 1.5, "abc", [1, 2]])
def test_non_buffer_is_a_type_error(pool, arg):
    pool.alloc(10)
    before = snapshot(pool)
    with pytest.raises(TypeError):
        pool.realloc(arg, 10)
    assert snapshot(pool) == before


@pytest.mark.parametrize("new_size, exc", [(-1, ValueError), (True, TypeError),
                                           (1.0, TypeError), ("10", TypeError), (None, TypeError)])
def test_bad_new_size_changes_nothing(pool, new_size, exc):
    v = filled(pool, 100, 18)
    before = snapshot(pool)
    with pytest.raises(exc):
        pool.realloc(v, new_size)
    assert snapshot(pool) == before and v.tobytes() == pattern(18, 100)


def test_numpy_integer_new_size(pool):
    v = filled(pool, 100, 19)
    w = pool.realloc(v, np.int32(40))
    assert len(w) == 40 and pool.offset_of(w) == 0


def test_block_of_another_allocator_is_refused(pool):
    with BuddyAllocator(4096) as other:
        v = other.alloc(100)
        before = snapshot(pool)
        with pytest.raises(ValueError):
            pool.realloc(v, 10)
        assert snapshot(pool) == before


def test_realloc_on_a_closed_allocator(pool):
    v = filled(pool, 100, 20)
    pool.close()
    with pytest.raises(ValueError, match="closed"):
        pool.realloc(v, 10)
    assert v.tobytes() == pattern(20, 100)


# ---- aligned blocks --------------------------------------------------------


def test_realloc_of_an_aligned_block_shrinks_in_place():
    with BuddyAllocator(8192) as a:
        a.alloc(16)
        v = a.alloc(16, align=1024)
        off = a.offset_of(v)
        assert off == 1024
        v[:] = pattern(21, 16)
        w = a.realloc(v, 100)  # 1024-byte block -> 128
        assert a.offset_of(w) == off and w[:16].tobytes() == pattern(21, 16)
        assert list(a.blocks()) == [(0, 16, 16), (1024, 128, 100)]
        assert a.bytes_wasted == 28
        a.check()
        x = a.realloc(w, 2000)  # 1024 is not a multiple of 2048: moves
        assert a.offset_of(x) == 2048 and x[:16].tobytes() == pattern(21, 16)
        a.free(x)
        a.check()


# ---- against the model ------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_realloc_sequences_agree_with_the_model(seed):
    rng = np.random.default_rng(seed)
    with BuddyAllocator(8192, min_size=16) as a:
        model = BuddyModel(8192, 16)
        live = {}
        for step in range(300):
            op = rng.integers(4)
            if op == 0 or not live:
                n = int(rng.integers(0, 600))
                off = model.alloc(n)
                v = a.try_alloc(n)
                assert (v is None) == (off is None)
                if v is not None:
                    assert a.offset_of(v) == off
                    v[:] = pattern(step, n)
                    live[off] = (v, step)
            elif op == 1:
                off = sorted(live)[int(rng.integers(len(live)))]
                a.free(live.pop(off)[0])
                model.release(off)
            else:
                off = sorted(live)[int(rng.integers(len(live)))]
                v, tag = live[off]
                n = int(rng.integers(0, 1500))
                new = model.resize(off, n)
                if new is None:
                    with pytest.raises(OutOfMemory):
                        a.realloc(v, n)
                    assert v.tobytes() == pattern(tag, len(v))
                    continue
                w = a.realloc(v, n)
                assert a.offset_of(w) == new, (off, len(v), n)
                keep = min(len(v), n)
                assert w[:keep].tobytes() == pattern(tag, len(v))[:keep]
                del live[off]
                w[:] = pattern(step, n)
                live[new] = (w, step)
            s = a.stats()
            assert s["bytes_allocated"] == model.bytes_allocated
            assert s["bytes_wasted"] == model.bytes_wasted
            assert s["free_blocks"] == model.free_blocks
            assert len(a) == len(model.live)
        for off, (v, tag) in live.items():
            assert v.tobytes() == pattern(tag, len(v))
        a.check()


def test_threads_reallocating_their_own_blocks():
    """API.md, Threads: every public operation is atomic; threads that
    realloc their own blocks never see another's bytes or break the core."""
    import threading

    errors = []

    with BuddyAllocator(1 << 18, min_size=16) as a:
        def work(tag):
            rng = np.random.default_rng(tag)
            try:
                for i in range(300):
                    n = int(rng.integers(1, 2000))
                    v = a.try_alloc(n)
                    if v is None:
                        continue
                    v[:] = pattern(tag, n)
                    for _ in range(3):
                        m = int(rng.integers(0, 3000))
                        try:
                            w = a.realloc(v, m)
                        except OutOfMemory:
                            continue
                        k = min(len(v), m)
                        assert w[:k].tobytes() == pattern(tag, len(v))[:k]
                        w[:] = pattern(tag, m)
                        v = w
                    a.free(v)
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(a) == 0 and a.bytes_free == 1 << 18
        a.check()

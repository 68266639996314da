"""API.md, Extensions, "OffsetAllocator": the same core over a capacity with
no memory behind it; blocks are int offsets.

Every method and statistic, capacities up to 2**62 that cost metadata only
as touched (1 TiB of 4 KiB blocks: a small RSS growth), and wrong offsets
refused with ValueError/TypeError, nothing changed.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from alloc import BuddyAllocator, OffsetAllocator, OutOfMemory
from conftest import COUNTER_KEYS, PROPERTY_KEYS, STAT_KEYS, BuddyModel, mentions, snapshot


@pytest.fixture
def heap():
    with OffsetAllocator(4096, min_size=16) as a:
        yield a


# ---- construction ------------------------------------------------------------


@pytest.mark.parametrize("cap, m, total", [(4096, 16, 4096), (100, 16, 96), (100, 64, 64),
                                           (3000, 16, 2992), (16, 16, 16), (1000, 1, 1000),
                                           (4096, 100, 4096)])
def test_capacity_is_rounded_down_to_min_size(cap, m, total):
    with OffsetAllocator(cap, min_size=m) as a:
        assert a.bytes_total == total
        assert a.min_size == 1 << (m.bit_length() - 1)
        assert a.bytes_free == total and len(a) == 0
        a.check()


@pytest.mark.parametrize("args, kw, exc", [
    ((0,), {}, ValueError), ((15,), {}, ValueError), ((-1,), {}, ValueError),
    ((True,), {}, TypeError), ((1.0,), {}, TypeError), (("4096",), {}, TypeError),
    ((None,), {}, TypeError), ((4096,), {"min_size": 0}, ValueError),
    ((4096,), {"min_size": True}, TypeError), ((4096,), {"min_size": 8192}, ValueError),
    (((1 << 62) + 1,), {"min_size": 1 << 30}, ValueError),
    ((1 << 63,), {"min_size": 1 << 30}, ValueError),
    ((1 << 100,), {"min_size": 1 << 30}, ValueError),
])
def test_bad_construction(args, kw, exc):
    with pytest.raises(exc):
        OffsetAllocator(*args, **kw)


def test_min_size_is_keyword_only():
    with pytest.raises(TypeError):
        OffsetAllocator(4096, 16)  # type: ignore[misc]


def test_capacity_beyond_2_62_says_so():
    with pytest.raises(ValueError) as info:
        OffsetAllocator((1 << 62) + 1, min_size=1 << 30)
    assert mentions(str(info.value), 1 << 62)


def test_capacity_2_62_is_accepted():
    with OffsetAllocator(1 << 62, min_size=1 << 30) as a:
        assert a.bytes_total == 1 << 62
        assert a.largest_free == 1 << 62
        x = a.alloc(1)
        y = a.alloc(1 << 61)
        assert (x, y) == (0, 1 << 61)
        assert list(a.blocks()) == [(0, 1 << 30, 1), (1 << 61, 1 << 61, 1 << 61)]
        assert a.size_of(y) == 1 << 61
        a.free(y)
        a.free(x)
        assert a.bytes_free == 1 << 62 and a.largest_free == 1 << 62


def test_capacity_too_fine_for_metadata_is_a_memory_error_naming_min_size():
    # Documented: about 3 bits per minimum block; 2**58 minimum blocks cannot be.
    with pytest.raises(MemoryError, match="min_size"):
        OffsetAllocator(1 << 62, min_size=16)


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_one_tib_of_4_kib_blocks_costs_metadata_only_as_touched():
    before = rss()
    a = OffsetAllocator(1 << 40, min_size=4096)
    offs = [a.alloc(4096) for _ in range(100)] + [a.alloc(1 << 30), a.alloc(5000)]
    offs.append(a.alloc(1 << 39))
    a.free(offs[50])
    moved = a.realloc(offs[0], 1 << 20)  # 0's buddies are live: it moves
    assert moved != offs[0] and moved % (1 << 20) == 0
    a.alloc_many(4096, 100)
    list(a.blocks())
    grown = rss() - before
    assert grown < 64 << 20, f"RSS grew by {grown} bytes"
    # ... while the full metadata would be far larger than that
    assert a.stats()["metadata_bytes"] > 64 << 20
    assert a.bytes_total == 1 << 40
    a.close()


# ---- blocks ---------------------------------------------------------------------


def test_alloc_returns_naturally_aligned_int_offsets(heap):
    offs = [heap.alloc(n) for n in (100, 16, 0, 300, 1, 1000)]
    assert all(type(o) is int for o in offs)
    assert offs == [0, 128, 144, 512, 160, 1024]
    for o, n in zip(offs, (100, 16, 0, 300, 1, 1000)):
        assert o % heap.block_size(n) == 0
        assert heap.size_of(o) == n
    assert heap.bytes_allocated == 1417
    assert len(heap) == 6
    heap.check()


def test_try_alloc_returns_none_when_full(heap):
    heap.alloc(4000)
    before = snapshot(heap)
    assert heap.try_alloc(16) is None
    assert heap.try_alloc(1 << 64) is None
    after = snapshot(heap)
    assert after.pop("failed_allocs") == before.pop("failed_allocs") + 2
    assert after == before
    with pytest.raises(OutOfMemory, match="16 bytes"):
        heap.alloc(16)


@pytest.mark.parametrize("size", [4097, 8192, 1 << 62, 1 << 64, 1 << 100])
def test_too_large_is_out_of_memory(heap, size):
    with pytest.raises(OutOfMemory) as info:
        heap.alloc(size)
    assert isinstance(info.value, MemoryError)
    assert mentions(str(info.value), size)


@pytest.mark.parametrize("size, exc", [(-1, ValueError), (True, TypeError), (1.5, TypeError),
                                       ("8", TypeError), (None, TypeError)])
def test_bad_sizes(heap, size, exc):
    before = snapshot(heap)
    with pytest.raises(exc):
        heap.alloc(size)
    with pytest.raises(exc):
        heap.try_alloc(size)
    assert snapshot(heap) == before


def test_numpy_integers_are_sizes_and_offsets(heap):
    o = heap.alloc(np.int64(100))
    assert heap.size_of(np.uint32(o)) == 100
    assert heap.realloc(np.int16(o), np.int8(50)) == o
    heap.free(np.int64(o))
    assert len(heap) == 0


def test_free_then_reuse(heap):
    a = heap.alloc(100)
    b = heap.alloc(100)
    heap.free(a)
    assert heap.alloc(50) == a
    heap.free(b)
    heap.check()


def test_size_of_is_the_requested_size(heap):
    for n in (0, 1, 15, 16, 17, 4096):
        o = heap.alloc(n)
        assert heap.size_of(o) == n
        heap.free(o)


# ---- realloc -----------------------------------------------------------------


def test_realloc_shrinks_in_place(heap):
    o = heap.alloc(1000)
    c = heap.counters()
    assert heap.realloc(o, 100) == o
    assert heap.size_of(o) == 100 and heap.bytes_allocated == 100
    assert heap.bytes_free == 4096 - 128
    assert heap.counters() == c
    heap.check()


def test_realloc_grows_in_place_into_free_buddies(heap):
    o = heap.alloc(100)
    assert heap.realloc(o, 1000) == o
    assert heap.size_of(o) == 1000 and heap.bytes_wasted == 24
    heap.check()


def test_realloc_moves_when_it_must(heap):
    o = heap.alloc(100)  # 0
    p = heap.alloc(100)  # 128
    c = heap.counters()
    n = heap.realloc(o, 200)
    assert n == 256
    assert heap.size_of(n) == 200 and heap.size_of(p) == 100
    with pytest.raises(ValueError):
        heap.size_of(o)  # freed
    c2 = heap.counters()
    assert c2["alloc_calls"] == c["alloc_calls"] + 1 and c2["free_calls"] == c["free_calls"] + 1
    # upper half with free buddies below still moves
    heap.free(n)
    assert heap.realloc(p, 200) == 256
    heap.check()


def test_realloc_to_and_from_zero(heap):
    o = heap.alloc(300)
    assert heap.realloc(o, 0) == o
    assert heap.size_of(o) == 0 and heap.bytes_wasted == 16
    assert heap.realloc(o, 300) == o
    heap.free(o)
    assert len(heap) == 0


@pytest.mark.parametrize("new_size", [3000, 4097, 1 << 64, 1 << 100])
def test_realloc_out_of_memory_changes_nothing(heap, new_size):
    o = heap.alloc(100)
    heap.alloc(100)
    before = snapshot(heap)
    with pytest.raises(OutOfMemory):
        heap.realloc(o, new_size)
    after = snapshot(heap)
    assert after.pop("failed_allocs") == before.pop("failed_allocs") + 1
    assert after == before
    assert heap.size_of(o) == 100


# ---- wrong offsets: nothing changes ------------------------------------------


WRONG_OFFSETS = {
    "interior": (lambda o: o + 16, ValueError),
    "odd": (lambda o: o + 1, ValueError),
    "double": (lambda o: 1024, ValueError),  # freed below
    "never-allocated": (lambda o: 2048, ValueError),
    "capacity": (lambda o: 4096, ValueError),
    "far": (lambda o: 1 << 40, ValueError),
    "u64": (lambda o: 1 << 64, ValueError),
    "huge": (lambda o: 1 << 100, ValueError),
    "negative": (lambda o: -16, ValueError),
    "float": (lambda o: 0.0, TypeError),
    "str": (lambda o: "0", TypeError),
    "none": (lambda o: None, TypeError),
    "bool": (lambda o: False, TypeError),
}


@pytest.mark.parametrize("kind", sorted(WRONG_OFFSETS))
@pytest.mark.parametrize("method", ["free", "size_of", "realloc", "free_many"])
def test_wrong_offsets_change_nothing(heap, kind, method):
    o = heap.alloc(300)  # 0, a 512-byte block
    d = heap.alloc(100)  # 512
    f = heap.alloc(16)  # 640
    heap.alloc(1000)  # 1024
    heap.free(1024)
    make, exc = WRONG_OFFSETS[kind]
    bad = make(o)
    before = snapshot(heap)
    with pytest.raises(exc):
        if method == "realloc":
            heap.realloc(bad, 10)
        elif method == "free_many":
            heap.free_many([bad])
        else:
            getattr(heap, method)(bad)
    assert snapshot(heap) == before
    assert [heap.size_of(x) for x in (o, d, f)] == [300, 100, 16]
    heap.check()


def test_closed_heap_refuses_everything_and_keeps_statistics(heap):
    o = heap.alloc(100)
    stats = snapshot(heap)
    heap.close()
    heap.close()  # idempotent
    assert heap.closed
    for call in (lambda: heap.alloc(1), lambda: heap.try_alloc(1), lambda: heap.free(o),
                 lambda: heap.realloc(o, 1), lambda: heap.size_of(o),
                 lambda: heap.alloc_many(1, 1), lambda: heap.free_many([o]),
                 lambda: heap.alloc(1, align=64), lambda: list(heap.blocks()),
                 lambda: heap.render()):
        with pytest.raises(ValueError, match="closed"):
            call()
    assert snapshot(heap) == stats
    assert heap.bytes_allocated == 100 and len(heap) == 1
    assert "closed" in repr(heap)


def test_context_manager_closes(heap):
    with OffsetAllocator(4096) as a:
        assert isinstance(a, OffsetAllocator)
        a.alloc(10)
    assert a.closed
    with pytest.raises(ValueError):
        a.alloc(10)


# ---- batch ---------------------------------------------------------------------


def test_alloc_many_and_free_many(heap):
    offs = heap.alloc_many(100, 10)
    assert offs == [128 * i for i in range(10)]
    assert all(type(o) is int for o in offs)
    assert heap.alloc_many(16, 0) == []
    heap.free_many(offs[:5])
    assert len(heap) == 5
    with pytest.raises(ValueError, match=r"offset 1\b"):
        heap.free_many([offs[5], offs[0], offs[6]])
    assert len(heap) == 4  # offs[5] freed, offs[6] not
    heap.free_many(iter(offs[6:]))
    assert len(heap) == 0
    heap.check()


def test_alloc_many_is_all_or_nothing(heap):
    heap.alloc(100)
    before = snapshot(heap)
    with pytest.raises(OutOfMemory):
        heap.alloc_many(1024, 4)
    with pytest.raises(OutOfMemory):
        heap.alloc_many(16, 10 ** 15)
    after = snapshot(heap)
    assert after.pop("failed_allocs") == before.pop("failed_allocs") + 2
    assert after == before
    assert len(heap.alloc_many(1024, 3)) == 3


# ---- statistics and the rest ---------------------------------------------------


def test_statistics_keys_and_properties(heap):
    heap.alloc(100)
    heap.alloc(1000)
    s = heap.stats()
    assert set(STAT_KEYS) <= set(s)
    for k in PROPERTY_KEYS:
        assert getattr(heap, k) == s[k], k
    assert set(heap.counters()) == set(COUNTER_KEYS)
    assert s["live_blocks"] == len(heap) == 2
    assert s["free_blocks"][16] == 0 and s["free_blocks"][128] == 1
    heap.reset_peaks()
    assert heap.peak_live_blocks == 2


def test_same_trace_same_figures_as_buddy_allocator():
    """Driven identically, OffsetAllocator and BuddyAllocator place every
    block at the same offset and keep the same statistics."""
    rng = np.random.default_rng(1)
    with OffsetAllocator(3008, min_size=16) as o, BuddyAllocator(3008, min_size=16) as b:
        live = {}
        for _ in range(400):
            r = rng.random()
            if live and r < 0.4:
                off = sorted(live)[int(rng.integers(len(live)))]
                o.free(off)
                b.free(live.pop(off))
            elif live and r < 0.6:
                off = sorted(live)[int(rng.integers(len(live)))]
                n = int(rng.integers(0, 1200))
                try:
                    new = o.realloc(off, n)
                except OutOfMemory:
                    with pytest.raises(OutOfMemory):
                        b.realloc(live[off], n)
                    continue
                v = b.realloc(live.pop(off), n)
                assert b.offset_of(v) == new
                live[new] = v
            else:
                n = int(rng.integers(0, 700))
                align = int(2 ** rng.integers(0, 8)) if rng.random() < 0.2 else None
                off = o.try_alloc(n, align=align)
                if off is None:
                    assert b.try_alloc(n, align=align) is None
                    continue
                v = b.alloc(n, align=align)
                assert b.offset_of(v) == off
                live[off] = v
            assert without_metadata(o.stats()) == without_metadata(b.stats())
            assert o.counters() == b.counters()
        assert list(o.blocks()) == list(b.blocks())
        o.check()
        b.check()


def without_metadata(s):
    return {k: v for k, v in s.items() if k != "metadata_bytes"}


def test_blocks_walks_live_blocks_in_address_order(heap):
    offs = [heap.alloc(n) for n in (100, 16, 0, 1000, 64, 1)]
    heap.free(offs[1])
    al = heap.alloc(10, align=256)
    expected = sorted([(o, heap.block_size(n), n) for o, n in
                       zip(offs, (100, 16, 0, 1000, 64, 1)) if o != offs[1]]
                      + [(al, 256, 10)])
    assert list(heap.blocks()) == expected


def test_blocks_of_an_empty_heap(heap):
    assert list(heap.blocks()) == []


def test_check_and_render(heap):
    heap.alloc(1000)
    heap.alloc(10)
    heap.check()
    text = heap.render()
    assert ET.fromstring(text).tag.endswith("svg")
    assert "OffsetAllocator" in text
    assert heap._repr_svg_() == text


def test_render_to_a_file(heap, tmp_path):
    heap.alloc(100)
    assert heap.render(tmp_path / "h.svg") is None
    ET.parse(tmp_path / "h.svg")


def test_repr_and_bool(heap):
    heap.alloc(100)
    r = repr(heap)
    assert r.startswith("<OffsetAllocator") and "capacity=4096" in r and "live_blocks=1" in r
    assert bool(OffsetAllocator(4096)) is True


def test_not_picklable(heap):
    import copy
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(heap)
    with pytest.raises(TypeError):
        copy.copy(heap)


def test_random_traces_agree_with_the_model():
    rng = np.random.default_rng(2)
    with OffsetAllocator(1000, min_size=8) as a:
        model = BuddyModel(1000, 8)
        for _ in range(500):
            if model.live and rng.random() < 0.45:
                off = sorted(model.live)[int(rng.integers(len(model.live)))]
                a.free(off)
                model.release(off)
            else:
                n = int(rng.integers(0, 300))
                assert a.try_alloc(n) == model.alloc(n)
            assert a.bytes_allocated == model.bytes_allocated
            assert a.stats()["free_blocks"] == model.free_blocks
        a.check()


@pytest.mark.parametrize("new_size, exc", [(-1, ValueError), (True, TypeError), (1.5, TypeError),
                                           (None, TypeError), ("1", TypeError)])
def test_realloc_bad_new_size_changes_nothing(heap, new_size, exc):
    o = heap.alloc(10)
    before = snapshot(heap)
    with pytest.raises(exc):
        heap.realloc(o, new_size)
    assert snapshot(heap) == before and heap.size_of(o) == 10

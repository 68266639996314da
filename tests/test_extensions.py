"""The Extensions of API.md added this round: batch calls, blocks by offset,
a block per ``with``, the walk of live blocks, peaks, per-order fragmentation
indices, the arena picture, and the binding's table-growth failure."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

import alloc
from alloc import BuddyAllocator, OutOfMemory
from conftest import snapshot


@pytest.fixture
def pool():
    with BuddyAllocator(1 << 16, min_size=16) as a:
        yield a


# ---- batch ---------------------------------------------------------------


def test_alloc_many_gives_count_distinct_blocks(pool):
    views = pool.alloc_many(100, 50)
    assert len(views) == 50 and all(len(v) == 100 for v in views)
    offsets = sorted(pool.offset_of(v) for v in views)
    assert all(b - a >= 128 for a, b in zip(offsets, offsets[1:]))
    assert len(pool) == 50 and pool.bytes_allocated == 5000
    assert pool.counters()["alloc_calls"] == 50
    pool.check()


def test_alloc_many_is_all_or_nothing(pool):
    pool.alloc(1000)
    before = snapshot(pool)
    with pytest.raises(OutOfMemory, match="blocks of 4096 bytes"):
        pool.alloc_many(4096, 16)  # 15 fit, not 16
    after = snapshot(pool)
    assert after.pop("failed_allocs") == before.pop("failed_allocs") + 1
    assert after == before
    assert len(pool.alloc_many(4096, 15)) == 15


def test_alloc_many_of_more_blocks_than_the_arena_has(pool):
    before = snapshot(pool)
    with pytest.raises(OutOfMemory):
        pool.alloc_many(16, 10**15)
    assert snapshot(pool)["live_blocks"] == before["live_blocks"]


def test_alloc_many_zero_count_and_zero_size(pool):
    assert pool.alloc_many(64, 0) == []
    zeros = pool.alloc_many(0, 3)
    assert [len(v) for v in zeros] == [0, 0, 0] and len(pool) == 3
    pool.free_many(zeros)
    assert len(pool) == 0


def test_free_many_frees_in_order_and_names_the_refused_index(pool):
    views = pool.alloc_many(64, 5)
    pool.free(views[3])
    with pytest.raises(ValueError, match=r"block 3\b"):
        pool.free_many(views)
    assert len(pool) == 1  # 0, 1, 2 freed; 4 untouched
    pool.free(views[4])
    assert len(pool) == 0


def test_free_many_takes_any_iterable_and_refuses_non_buffers(pool):
    views = pool.alloc_many(32, 4)
    pool.free_many(v for v in views[:2])
    with pytest.raises(TypeError, match="block 1"):
        pool.free_many([views[2], 123, views[3]])
    assert len(pool) == 1


# ---- blocks by offset, a block per with, the walk ----------------------


def test_block_at_and_free_at(pool):
    v = pool.alloc(300)
    v[:] = b"a" * 300
    off = pool.offset_of(v)
    w = pool.block_at(off)
    assert len(w) == 300 and w.tobytes() == b"a" * 300
    for bad in (off + 16, off + 1, 1 << 20, -1):
        with pytest.raises(ValueError):
            pool.block_at(bad)
    before = snapshot(pool)
    with pytest.raises(ValueError):
        pool.free_at(off + 16)
    assert snapshot(pool) == before
    pool.free_at(off)
    assert len(pool) == 0
    with pytest.raises(ValueError):
        pool.free_at(off)


def test_free_at_frees_a_zero_size_block(pool):
    z = pool.alloc(0)
    off = pool.offset_of(z)
    assert pool.block_at(off) is z
    pool.free_at(off)
    assert len(pool) == 0
    with pytest.raises(ValueError):
        pool.free(z)


def test_block_context_manager_frees_on_exit_and_on_error(pool):
    with pool.block(100) as buf:
        assert len(buf) == 100 and len(pool) == 1
    assert len(pool) == 0
    with pytest.raises(KeyError):
        with pool.block(100):
            raise KeyError("boom")
    assert len(pool) == 0


def test_released_view_error_says_what_happened(pool):
    with pool.alloc(64) as v:  # the trap: memoryview's own context manager
        pass
    with pytest.raises(ValueError, match="released.*pool.block"):
        pool.free(v)


def test_blocks_walks_live_blocks_in_address_order(pool):
    sizes = [100, 16, 0, 3000, 64, 1]
    views = [pool.alloc(n) for n in sizes]
    pool.free(views[1])
    walked = list(pool.blocks())
    expected = sorted(
        (pool.offset_of(v), pool.block_size(len(v)), len(v))
        for i, v in enumerate(views) if i != 1
    )
    assert walked == expected


# ---- peaks and orders ------------------------------------------------------


def test_peaks_follow_the_highest_figures_and_reset(pool):
    a = pool.alloc(1000)
    b = pool.alloc(10)
    pool.free(a)
    assert pool.peak_bytes_allocated == 1010
    assert pool.peak_bytes_in_blocks == 1024 + 16
    assert pool.peak_live_blocks == 2
    s = pool.stats()
    assert (s["peak_bytes_allocated"], s["peak_bytes_in_blocks"], s["peak_live_blocks"]) == (1010, 1040, 2)
    pool.reset_peaks()
    assert (pool.peak_bytes_allocated, pool.peak_bytes_in_blocks, pool.peak_live_blocks) == (10, 16, 1)
    pool.free(b)
    assert pool.peak_live_blocks == 1  # a free never raises a peak


def test_orders_follow_free_blocks_and_the_kernel_definitions():
    with BuddyAllocator(1024, min_size=16) as a:
        views = [a.alloc(16) for _ in range(64)]
        for v in views[::2]:  # every other 16 B block free: 32 free, none merge
            a.free(v)
        orders = a.stats()["orders"]
        assert [o["block_size"] for o in orders] == [16 << k for k in range(7)]
        assert [o["free_blocks"] for o in orders] == [32] + [0] * 6
        # a 16 B request: a block is free -> -1; nothing unusable
        assert orders[0]["fragmentation_index"] == -1
        assert orders[0]["unusable_free_index"] == 0
        # a 32 B request: no block fits; 512 free bytes in 32 blocks:
        # 1 - (1 + 512 / 32) / 32 = 1 - 17/32
        assert orders[1]["fragmentation_index"] == pytest.approx(1 - 17 / 32)
        assert orders[1]["unusable_free_index"] == 1.0
        for v in views[1::2]:
            a.free(v)
        orders = a.stats()["orders"]
        assert [o["fragmentation_index"] for o in orders] == [-1] * 7
        assert [o["unusable_free_index"] for o in orders] == [0] * 7


# ---- the picture -----------------------------------------------------------


def test_render_svg_shows_the_arena_and_its_statistics(pool):
    pool.alloc(1000)
    pool.alloc(5000)
    text = pool.render()
    root = ET.fromstring(text)
    assert root.tag.endswith("svg")
    for word in ("requested", "wasted", "free", "6,000", "live blocks"):
        assert word in text
    assert pool._repr_svg_() == text


def test_render_cells_add_up_to_the_statistics():
    from alloc._allocator import ffi, lib

    with BuddyAllocator(100_000, min_size=64) as a:
        for n in (100, 5000, 64, 30_000, 1):
            a.alloc(n)
        st = a.stats()
        span = 64 << int(a._st.max_order)
        cells = 64
        arr = ffi.new("uint64_t[]", 3 * cells)
        assert lib.pool_map(a._h, cells, arr, arr + cells, arr + 2 * cells) == 0
        req, waste, free = (ffi.unpack(arr + i * cells, cells) for i in range(3))
        assert sum(req) == st["bytes_allocated"]
        assert sum(waste) == st["bytes_wasted"]
        assert sum(free) == st["bytes_free"]
        cell = span // cells
        assert all(r + w + f <= cell for r, w, f in zip(req, waste, free))


def test_render_writes_svg_and_png_files(pool, tmp_path):
    pool.alloc(100)
    pool.render(tmp_path / "map.svg")
    ET.parse(tmp_path / "map.svg")
    pytest.importorskip("matplotlib")
    pool.render(str(tmp_path / "map.png"))
    assert (tmp_path / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_render_png_without_matplotlib_says_what_to_install(pool, tmp_path, monkeypatch):
    import sys

    for name in [m for m in sys.modules if m.split(".")[0] == "matplotlib"] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    with pytest.raises(ImportError, match="pip install matplotlib"):
        pool.render(tmp_path / "map.png")


# ---- misc --------------------------------------------------------------------


def test_an_empty_allocator_is_true(pool):
    assert len(pool) == 0 and bool(pool) is True


def test_table_growth_failure_is_reported_and_counted(pool):
    blocks = []
    pool._debug_table_only()  # every record in the table, which can grow
    pool._debug_fail_next_table_growth()
    with pytest.raises(MemoryError) as info:
        for _ in range(1000):
            blocks.append(pool.alloc(10))  # not an exact fit: it needs a record
    assert not isinstance(info.value, OutOfMemory)
    assert "could not grow" in str(info.value)
    assert "largest free block" not in str(info.value)
    assert pool.counters()["failed_allocs"] == 1
    assert len(pool) == len(blocks)
    blocks.append(pool.alloc(10))  # the next attempt grows the table
    pool.free_many(blocks)
    pool.check()


# ---- block_at / free_at: the cases the first tests left out ------------------


def bad_offsets(pool):
    """A pool with live, freed and interior offsets; the offsets at which no
    live block starts, with the exception each must raise."""
    v = pool.alloc(300)  # 0, a 512-byte block
    pool.alloc(16)  # 512
    dead = pool.alloc(100)  # 640
    pool.free(dead)
    cap = pool.bytes_total
    return v, {
        "interior": (16, ValueError),
        "interior-odd": (1, ValueError),
        "interior-last": (511, ValueError),
        "freed": (640, ValueError),
        "never-allocated": (cap - 1024, ValueError),
        "capacity": (cap, ValueError),
        "far": (cap * 2, ValueError),
        "u64": (1 << 64, ValueError),
        "huge": (1 << 100, ValueError),
        "negative": (-1, ValueError),
        "negative-16": (-16, ValueError),
        "float": (0.0, TypeError),
        "str": ("0", TypeError),
        "none": (None, TypeError),
        "bool": (False, TypeError),
    }


BAD_KINDS = ["interior", "interior-odd", "interior-last", "freed", "never-allocated",
             "capacity", "far", "u64", "huge", "negative", "negative-16", "float",
             "str", "none", "bool"]


@pytest.mark.parametrize("kind", BAD_KINDS)
@pytest.mark.parametrize("method", ["block_at", "free_at"])
def test_no_live_block_at_offset_changes_nothing(pool, method, kind):
    v, cases = bad_offsets(pool)
    off, exc = cases[kind]
    before = snapshot(pool)
    with pytest.raises(exc):
        getattr(pool, method)(off)
    assert snapshot(pool) == before
    assert pool.offset_of(v) == 0
    pool.check()


@pytest.mark.parametrize("method", ["block_at", "free_at"])
def test_block_at_and_free_at_on_a_closed_pool(method):
    a = BuddyAllocator(4096)
    a.alloc(100)
    a.close()
    with pytest.raises(ValueError, match="closed"):
        getattr(a, method)(0)


def test_block_at_is_a_view_over_the_block_itself(pool):
    from conftest import addr

    v = pool.alloc(100)
    w = pool.block_at(pool.offset_of(v))
    assert addr(w) == addr(v) and len(w) == 100
    assert not w.readonly and w.format == "B" and w.c_contiguous
    w[:] = b"q" * 100
    assert v.tobytes() == b"q" * 100
    pool.free(w)  # it is the block: freeing it frees v's block
    assert len(pool) == 0
    with pytest.raises(ValueError):
        pool.free(v)


def test_block_at_follows_realloc_and_align(pool):
    v = pool.alloc(100)
    w = pool.realloc(v, 40)
    assert len(pool.block_at(0)) == 40
    x = pool.alloc(10, align=1024)
    off = pool.offset_of(x)
    assert off % 1024 == 0 and len(pool.block_at(off)) == 10
    with pytest.raises(ValueError):
        pool.block_at(off + 16)  # inside the 1024-byte aligned block
    pool.free_at(off)
    pool.free(w)
    assert len(pool) == 0
    pool.check()


def test_free_at_then_the_old_view_is_a_double_free(pool):
    v = pool.alloc(64)
    pool.free_at(0)
    before = snapshot(pool)
    with pytest.raises(ValueError):
        pool.free(v)
    with pytest.raises(ValueError):
        pool.free_at(0)
    assert snapshot(pool) == before


def test_zero_size_blocks_from_alloc_many_by_offset(pool):
    zs = pool.alloc_many(0, 3)
    for z in zs:
        assert pool.block_at(pool.offset_of(z)) is z
    pool.free_at(pool.offset_of(zs[1]))
    with pytest.raises(ValueError):
        pool.free(zs[1])
    pool.free_many([zs[0], zs[2]])
    assert len(pool) == 0


def test_offset_allocator_blocks_and_size_of_match_buddy_allocator_block_at():
    from alloc import OffsetAllocator

    with OffsetAllocator(1 << 16) as h:
        offs = [h.alloc(n) for n in (10, 0, 5000, 64, 1)]
        h.free(offs[3])
        walked = list(h.blocks())
        assert [w[0] for w in walked] == sorted(o for i, o in enumerate(offs) if i != 3)
        for off, bs, req in walked:
            assert h.size_of(off) == req and bs == h.block_size(req)
        with pytest.raises(ValueError):
            h.size_of(offs[2] + 16)


# ---- a refused alloc_many grows nothing -------------------------------------
#
# Found by these tests: alloc_many grew the binding's size table (which
# never shrinks) for `count` blocks before the core refused a batch that
# could never fit -- 4 GiB of table for OffsetAllocator(1 TiB).alloc_many(
# 2**39, 2**27) -- and when that growth failed the refusal was reported as
# "the table could not grow ... the arena itself had room", not OutOfMemory.


@pytest.mark.parametrize("kind", ["buddy", "offset"])
@pytest.mark.parametrize("size, count", [(1 << 19, 3), (1 << 19, 100), (1 << 20, 2),
                                         (1 << 21, 1), (16, (1 << 16) + 1), (1 << 64, 5)])
def test_refused_alloc_many_grows_no_table(kind, size, count):
    from alloc import OffsetAllocator
    from alloc._allocator import lib

    a = BuddyAllocator(1 << 20) if kind == "buddy" else OffsetAllocator(1 << 20)
    a._debug_table_only()  # every record in the table: would it grow?
    with a:
        table = lib.pool_table_bytes(a._h)
        before = snapshot(a)
        a._debug_fail_next_table_growth()  # a growth would now be reported
        with pytest.raises(OutOfMemory):
            a.alloc_many(size, count)
        assert lib.pool_table_bytes(a._h) == table
        after = snapshot(a)
        assert after.pop("failed_allocs") == before.pop("failed_allocs") + 1
        assert after == before


def test_refused_alloc_many_on_a_partly_full_pool_grows_no_table():
    from alloc._allocator import lib

    with BuddyAllocator(1 << 16, min_size=16) as a:
        a._debug_table_only()
        a.alloc(1 << 15)
        table = lib.pool_table_bytes(a._h)
        with pytest.raises(OutOfMemory):
            a.alloc_many(16, (1 << 11) + 1)  # 2048 would fit, not 2049
        assert lib.pool_table_bytes(a._h) == table
        assert len(a.alloc_many(16, 1 << 11)) == 1 << 11
        a.check()


@pytest.mark.parametrize("kind", ["buddy", "offset"])
def test_a_lookup_of_free_memory_says_it_is_free_not_double_free(kind):
    """block_at / size_of look a block up; at a free offset the error says
    the memory is free (a free()'s "double free?" would mislead)."""
    from alloc import OffsetAllocator

    a = BuddyAllocator(4096) if kind == "buddy" else OffsetAllocator(4096)
    look = a.block_at if kind == "buddy" else a.size_of
    with pytest.raises(ValueError) as e:
        look(256)
    assert "free" in str(e.value) and "double" not in str(e.value)
    assert "256" in str(e.value)


def test_alloc_many_falls_back_to_python_slicing(pool, monkeypatch):
    """alloc_many makes its views in C (seam_slices); if that fails half
    way (no memory), the views are made in Python: the same blocks."""
    import alloc._allocator as mod

    real = mod.lib

    class HalfFails:
        def __getattr__(self, name):
            if name != "seam_slices":
                return getattr(real, name)

            def seam_slices(view, size, offsets, count, out):
                real.seam_slices(view, size, offsets, count // 2, out)
                return -1

            return seam_slices

    monkeypatch.setattr(mod, "lib", HalfFails())
    views = pool.alloc_many(100, 6)
    monkeypatch.undo()
    assert len(views) == 6 and all(len(v) == 100 for v in views)
    offsets = [pool.offset_of(v) for v in views]
    assert len(set(offsets)) == 6 and len(pool) == 6
    pool.free_many(views)
    assert len(pool) == 0
    pool.check()

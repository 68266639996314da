"""Where the pool keeps each block's requested size (csrc/pool.h).

Plain blocks are recorded in the request array (a few bytes per minimum
block, one load or store a lookup); blocks larger than their size needs
(``align=``) in the size table; a pool whose array could not be reserved
keeps everything in the table.  These tests drive an allocator of each
kind through the same calls and require the same answers: a record that
is stale, misread or lost shows as a different answer.
"""

from __future__ import annotations

import random

import pytest

from alloc import BuddyAllocator, OffsetAllocator
from alloc._allocator import lib

from conftest import snapshot


def _outcome(call):
    """What a call did: its value, or the type and message it raised."""
    try:
        return ("ok", call())
    except Exception as exc:  # noqa: BLE001 -- compared, not handled
        return (type(exc).__name__, str(exc))


def test_plain_blocks_never_touch_the_table():
    a = BuddyAllocator(1 << 20, min_size=16)
    table = lib.pool_table_bytes(a._h)
    assert lib.pool_record_bytes(a._h) == (1 << 20) // 16 + 8  # 1 byte a block, padded
    views = [a.alloc(n) for n in range(1, 3000, 7)]  # mostly not exact fits
    assert lib.pool_table_bytes(a._h) == table
    assert a.bytes_allocated == sum(len(v) for v in views)
    a.free_many(views)
    assert len(a) == 0 and a.bytes_allocated == 0 and a.check() is None


@pytest.mark.parametrize("min_size, unit", [(2, 1), (128, 1), (256, 2), (1 << 15, 2),
                                            (1 << 16, 4)])
def test_the_record_unit_holds_the_largest_waste(min_size, unit):
    a = BuddyAllocator(min_size * 64, min_size=min_size)
    assert lib.pool_record_bytes(a._h) == 64 * unit + 8
    v = a.alloc(1)  # wastes min_size - 1 bytes of an order-0 block
    w = a.alloc(min_size + 1)  # wastes min_size - 1 of an order-1 block
    assert a.bytes_wasted == 2 * min_size - 2
    assert list(a.blocks()) == [(0, min_size, 1), (2 * min_size, 2 * min_size, min_size + 1)]
    with pytest.raises(ValueError):
        a.free(a._mv[0:min_size])  # the whole block is not what was requested
    z = a.alloc(0)  # wastes all min_size bytes of its block: the largest waste
    assert a.bytes_wasted == 3 * min_size - 2 and a.bytes_allocated == min_size + 2
    assert (min_size, min_size, 0) in list(a.blocks())
    a.free(z)
    a.free(v)
    a.free(w)
    assert a.bytes_wasted == 0 and a.check() is None


def test_table_only_mode_is_only_for_an_empty_pool():
    a = BuddyAllocator(1 << 16)
    v = a.alloc(10)
    with pytest.raises(ValueError, match="live"):
        a._debug_table_only()
    assert lib.pool_record_bytes(a._h) > 0
    a.free(v)
    a._debug_table_only()
    assert lib.pool_record_bytes(a._h) == 0
    views = [a.alloc(10) for _ in range(20)]
    assert lib.pool_table_bytes(a._h) > 256  # 20 records: the table grew
    a.free_many(views)
    assert a.bytes_allocated == 0 and a.check() is None


def test_an_enormous_offset_allocator_keeps_its_records_in_the_table():
    o = OffsetAllocator(1 << 62, min_size=1 << 22)  # 2^40 minimum blocks: no array
    assert lib.pool_record_bytes(o._h) == 0
    offs = [o.alloc(n) for n in (1, 5 << 20, (1 << 22) + 1, 1 << 23)]
    assert [o.size_of(x) for x in offs] == [1, 5 << 20, (1 << 22) + 1, 1 << 23]
    for x in offs:
        o.free(x)
    assert len(o) == 0 and o.bytes_allocated == 0  # (check() would walk 2^40 blocks)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("min_size", [1, 16, 512])
def test_array_and_table_give_the_same_answers(seed, min_size):
    rng = random.Random(seed)
    cap = min_size * 4096
    pools = [BuddyAllocator(cap, min_size=min_size) for _ in range(2)]
    pools[1]._debug_table_only()
    live = [[], []]  # the views of each pool, in the same order
    for _ in range(600):
        op = rng.randrange(10)
        if op < 5 or not live[0]:
            size = rng.randrange(min_size * rng.choice((1, 4, 32, 256)) + 1)
            align = rng.choice((None, None, None, 1 << rng.randrange(14)))
            got = [_outcome(lambda p=p: p.alloc(size, align=align)) for p in pools]
            assert [g[0] for g in got] == [got[0][0]] * 2
            if got[0][0] == "ok":
                assert [p.offset_of(g[1]) for p, g in zip(pools, got)] == \
                       [pools[0].offset_of(got[0][1])] * 2
                for m in range(2):
                    live[m].append(got[m][1])
            else:
                assert got[0] == got[1]
            continue
        k = rng.randrange(len(live[0]))
        off = pools[0].offset_of(live[0][k])
        n = len(live[0][k])
        for wrong in {n + 1, max(n - 1, 0), 2 * n + 1, n // 2, pools[0].block_size(n)} - {n}:
            got = [_outcome(lambda p=p: p.free(p._mv[off:off + wrong])) for p in pools]
            assert got[0] == got[1] and got[0][0] == "ValueError", (n, wrong, got)
        at = off + rng.randrange(max(n, 1))
        got = [_outcome(lambda p=p: len(p.block_at(at))) for p in pools]
        assert got[0] == got[1]
        if op == 5:
            new = rng.randrange(2 * n + 64)
            got = [_outcome(lambda m=m: pools[m].realloc(live[m][k], new)) for m in range(2)]
            if got[0][0] != "ok":  # no room to move it: the same refusal
                assert got[0] == got[1] and got[0][0] == "OutOfMemory"
                continue
            assert got[1][0] == "ok"
            assert pools[0].offset_of(got[0][1]) == pools[1].offset_of(got[1][1])
            for m in range(2):
                live[m][k] = got[m][1]
        else:
            for m in range(2):
                pools[m].free(live[m].pop(k))
        assert snapshot(pools[0]) == snapshot(pools[1])
        assert list(pools[0].blocks()) == list(pools[1].blocks())
    for m in range(2):
        pools[m].free_many(live[m])
        assert len(pools[m]) == 0 and pools[m].check() is None

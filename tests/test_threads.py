"""API.md, Threads: "One allocator may be used from several threads at once;
every public operation is atomic."

The switch interval is shortened so that threads interleave between (and
within) the Python-level steps of each operation.  No timing assertions.
"""

from __future__ import annotations

import random
import sys
import threading

import numpy as np
import pytest

from alloc import BuddyAllocator, OutOfMemory
from conftest import pattern


@pytest.fixture
def fast_switching():
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def run_threads(n, target):
    errors = []
    barrier = threading.Barrier(n)

    def wrapper(i):
        try:
            barrier.wait()
            target(i)
        except BaseException as e:  # reported by the main thread
            errors.append((i, e))

    threads = [threading.Thread(target=wrapper, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


@pytest.mark.parametrize("arena", ["int", "bytearray"])
def test_threads_alloc_free_with_patterns(fast_switching, arena):
    """4 threads x 3000 operations on one allocator; each block carries a
    per-thread, per-block pattern checked at free; at the end everything is
    back and the core is consistent."""
    size = 1 << 20
    a = BuddyAllocator(bytearray(size) if arena == "bytearray" else size, min_size=16)
    ops = 3000
    done = {}

    def worker(tid):
        rng = random.Random(1000 + tid)
        live = []
        allocs = frees = 0
        for step in range(ops):
            if live and (len(live) >= 32 or rng.random() < 0.45):
                v, tag = live.pop(rng.randrange(len(live)))
                assert v.tobytes() == pattern(tag, len(v)), "block clobbered"
                how = rng.randrange(3)
                if len(v) == 0:
                    how = 0  # API.md: only alloc(0)'s own view frees it
                a.free(v if how == 0 else np.frombuffer(v, np.uint8) if how == 1 else v[:])
                frees += 1
            else:
                n = rng.choice([0, 1, 16, 17, 100, 960, 1000, 2000, rng.randrange(4096)])
                method = rng.choice([a.alloc, a.try_alloc, a.calloc])
                v = method(n)
                assert v is not None and len(v) == n
                if method == a.calloc:
                    assert v.tobytes() == bytes(n)
                tag = tid * 100_000 + step
                v[:] = pattern(tag, n)
                live.append((v, tag))
                allocs += 1
        for v, tag in live:
            assert v.tobytes() == pattern(tag, len(v))
            a.free(v)
            frees += 1
        done[tid] = (allocs, frees)

    try:
        run_threads(4, worker)
        assert a.check() is None
        assert len(a) == 0
        assert a.bytes_allocated == 0
        assert a.bytes_wasted == 0
        assert a.bytes_free == size
        assert a.largest_free == size
        s = a.counters()
        assert s["alloc_calls"] == sum(x for x, _ in done.values())
        assert s["free_calls"] == sum(y for _, y in done.values())
        assert s["failed_allocs"] == 0
    finally:
        a.close()


def test_threads_concurrent_double_free_exactly_one_wins(fast_switching):
    """Two threads free the same 600 blocks at the same time: for every
    block exactly one free succeeds and the other raises ValueError."""
    n = 600
    with BuddyAllocator(1 << 16, min_size=16) as a:
        blocks = [a.alloc(64) for _ in range(n)]
        outcome = [[None, None] for _ in range(n)]

        def worker(tid):
            for i, v in enumerate(blocks):
                try:
                    a.free(v if tid == 0 else np.frombuffer(v, np.uint8))
                    outcome[i][tid] = "ok"
                except ValueError:
                    outcome[i][tid] = "ValueError"

        run_threads(2, worker)
        for i, pair in enumerate(outcome):
            assert sorted(pair) == ["ValueError", "ok"], (i, pair)
        assert len(a) == 0
        assert a.bytes_allocated == 0 and a.bytes_free == 1 << 16
        assert a.check() is None
        assert a.counters()["free_calls"] == n


def test_threads_concurrent_free_of_same_view_object(fast_switching):
    """The same view object freed by four threads at once."""
    with BuddyAllocator(1 << 16, min_size=16) as a:
        for _ in range(100):
            v = a.alloc(100)
            results = []

            def worker(tid):
                try:
                    a.free(v)
                    results.append("ok")
                except ValueError:
                    results.append("ValueError")

            run_threads(4, worker)
            assert sorted(results) == ["ValueError"] * 3 + ["ok"]
            assert len(a) == 0
        assert a.check() is None


def _close_while_others_work(round_):
    a = BuddyAllocator(1 << 20, min_size=16)
    started = threading.Barrier(5)
    live = {}
    refusals = []
    lock = threading.Lock()

    def worker(tid):
        rng = random.Random(round_ * 10 + tid)
        mine = []
        started.wait()
        try:
            while True:
                try:
                    if mine and rng.random() < 0.4:
                        v = mine[-1]
                        a.free(v)
                        mine.pop()
                    else:
                        try:
                            mine.append(a.alloc(rng.randrange(1, 300)))
                        except OutOfMemory:
                            # the arena filled before close(): give one back
                            # (a worker holding none waits for the others)
                            if mine:
                                a.free(mine[0])
                                mine.pop(0)
                except ValueError as e:
                    refusals.append(str(e))
                    break
        finally:  # whatever happened, the blocks this thread holds count
            with lock:
                live[tid] = mine

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    started.wait()
    # let the workers run until they hold 200 blocks between them (no clock)
    while len(a) < 200 and all(t.is_alive() for t in threads):
        pass
    a.close()
    for t in threads:
        t.join()
    assert a.closed
    assert len(live) == 4
    views = [v for mine in live.values() for v in mine]
    held = (len(views), sum(len(v) for v in views))
    counted = (len(a), a.bytes_allocated)
    assert counted == held, f"frozen (len, bytes_allocated) {counted} != held by threads {held}; refusals: {refusals}"
    assert a.stats()["live_blocks"] == len(views)


def test_threads_close_while_others_allocate(fast_switching):
    """close() is atomic with respect to alloc/free in other threads: every
    operation either happens before close (and is counted in the frozen
    statistics) or raises ValueError and has no effect.  Forty rounds."""
    for round_ in range(40):
        _close_while_others_work(round_)


def test_threads_many_allocators_in_parallel(fast_switching):
    """Different allocators never share state."""
    pools = [BuddyAllocator(1 << 14, min_size=16) for _ in range(4)]

    def worker(tid):
        a = pools[tid]
        rng = random.Random(tid)
        for _ in range(1500):
            v = a.alloc(rng.randrange(1, 512))
            v[:] = pattern(tid, len(v))
            assert v.tobytes() == pattern(tid, len(v))
            a.free(v)
        assert len(a) == 0

    try:
        run_threads(4, worker)
        for a in pools:
            assert a.check() is None and a.bytes_free == 1 << 14
    finally:
        for a in pools:
            a.close()


def test_two_counter_figures_are_one_snapshot(fast_switching):
    """bytes_wasted and bytes_free are each made of two core counters; a
    reader racing an alloc/free loop must see a figure the pool really had
    (0 or 28 wasted, never one counter from before an alloc and the other
    from after), which holds only if both are read at one instant."""
    a = BuddyAllocator(1 << 16, min_size=16)
    stop = threading.Event()
    seen_wasted, seen_free = set(), set()

    def churn(_):
        while not stop.is_set():
            a.free(a.alloc(100))  # a 128-byte block, 28 bytes wasted

    def read(_):
        for _ in range(20000):
            seen_wasted.add(a.bytes_wasted)
            seen_free.add(a.bytes_free)
        stop.set()

    run_threads(2, lambda i: (churn, read)[i](i))
    assert seen_wasted <= {0, 28}
    assert seen_free <= {1 << 16, (1 << 16) - 128}


def test_two_counter_figures_read_the_core_under_its_lock(monkeypatch):
    """On a free-threaded build only buddy_snapshot (which takes the core's
    lock) gives two counters of one instant: the properties must use it."""
    import alloc._allocator as mod

    calls = []

    class Spy:
        def __getattr__(self, name):
            if name == "buddy_snapshot":
                calls.append(name)
            return getattr(real, name)

    real = mod.lib
    a = BuddyAllocator(4096)
    a.alloc(100)
    monkeypatch.setattr(mod, "lib", Spy())
    assert (a.bytes_wasted, a.bytes_free) == (28, 4096 - 128)
    assert len(calls) == 2


@pytest.mark.parametrize("kind", ["buddy", "offset", "shared"])
def test_a_realloc_that_moves_is_one_step_for_other_threads(fast_switching, kind):
    """A realloc that cannot grow in place allocates, copies and frees in
    one C call (pool_realloc): a reader never sees the old and the new
    block live at once, nor the contents half moved.  The writer keeps two
    blocks live, v and the buddy that stops v growing in place, so every
    grow moves; a reader sees at most 2 live blocks."""
    from alloc import OffsetAllocator, SharedBuddyAllocator

    if kind == "shared":
        a = SharedBuddyAllocator(create=True, size=1 << 16, min_size=16)
        a.unlink()  # the mapping stays until a is closed
    else:
        a = (BuddyAllocator if kind == "buddy" else OffsetAllocator)(1 << 16, min_size=16)
    stop = threading.Event()
    seen = set()
    moves = [0]

    def write(_):
        v = a.alloc(16)
        blocker = a.alloc(16)  # v's buddy
        for r in range(3000):
            at = v if kind == "offset" else a.offset_of(v)
            if kind != "offset":
                v[:] = bytes([r & 255]) * 16
            w = a.realloc(v, 48)  # moves: its buddy is live
            moves[0] += (w if kind == "offset" else a.offset_of(w)) != at
            if kind != "offset":
                assert bytes(w[:16]) == bytes([r & 255]) * 16
            v = a.realloc(w, 16)  # shrinks in place
            a.free(blocker)
            blocker = a.alloc(16)  # the lowest free 16 bytes: v's buddy again
        stop.set()

    def read(_):
        while not stop.is_set():
            seen.add(len(a))

    run_threads(2, lambda i: (write, read)[i](i))
    assert moves[0] == 3000
    assert max(seen) <= 2, sorted(seen)
    assert len(a) == 2
    a.check()
    a.close()

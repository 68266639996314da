"""API.md: "A view stays memory-safe for its whole life: whatever the user does
with the allocator (free, close, drop it), touching a view never crashes the
interpreter." and "the arena's memory is released once the last view is gone
(never before)". Also "Never a crash." for bad arguments.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from alloc import BuddyAllocator
from conftest import pattern

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def touch(v, tag):
    """Write then read every byte of v."""
    v[:] = pattern(tag, len(v))
    assert v.tobytes() == pattern(tag, len(v))
    if len(v):
        v[-1] = 0x24
        assert v[-1] == 0x24
        v[0] = 0x42
        assert v[0] == 0x42


@pytest.mark.parametrize("arena", ["int", "bytearray"])
def test_views_usable_after_free(arena):
    a = BuddyAllocator(bytearray(4096) if arena == "bytearray" else 4096)
    views = [a.alloc(s) for s in (0, 1, 960, 100)]
    for v in views:
        a.free(v)
    for i, v in enumerate(views):
        touch(v, i)
    assert a.check() is None and len(a) == 0
    a.close()


@pytest.mark.parametrize("arena", ["int", "bytearray"])
def test_views_usable_after_close(arena):
    a = BuddyAllocator(bytearray(4096) if arena == "bytearray" else 4096)
    views = [a.alloc(s) for s in (0, 1, 960, 100, 2048)]
    a.free(views[1])
    a.close()
    for i, v in enumerate(views):
        touch(v, i)
    a.close()
    for i, v in enumerate(views):
        touch(v, i + 10)


@pytest.mark.parametrize("close_first", [False, True])
def test_views_usable_after_allocator_dropped(close_first):
    a = BuddyAllocator(1 << 16)
    views = [a.alloc(s) for s in (1, 5000, 30000)]
    if close_first:
        a.close()
    del a
    gc.collect()
    for i, v in enumerate(views):
        touch(v, i)


@pytest.mark.parametrize("size", [64, 4096, 1 << 16, 1 << 20])
def test_int_arena_not_released_before_last_view(size):
    """If a closed and dropped allocator gave its memory back too early,
    new allocations (ours and malloc's) would land on it and clobber the
    pattern kept in the surviving view (or touching it would crash)."""
    a = BuddyAllocator(size, min_size=16)
    v = a.alloc(size)
    v[:] = pattern(77, size)
    a.close()
    del a
    gc.collect()
    others = []
    for i in range(32):
        b = BuddyAllocator(size, min_size=16)
        w = b.alloc(size)
        w[:] = b"\x00" * size
        others.append((b, w))
        others.append(bytearray(size))
    assert v.tobytes() == pattern(77, size)
    touch(v, 78)
    for item in others:
        if isinstance(item, tuple):
            item[0].close()


def test_derived_numpy_array_keeps_int_arena_alive():
    a = BuddyAllocator(1 << 16)
    arr = np.frombuffer(a.alloc(1 << 16), np.uint8)
    a.close()
    del a
    gc.collect()
    junk = [BuddyAllocator(1 << 16).alloc(1 << 16) for _ in range(8)]
    for j in junk:
        j[:] = b"\xff" * len(j)
    arr[:] = 7
    assert int(arr.sum()) == 7 * (1 << 16)


def test_releasing_a_block_view_does_not_release_the_arena():
    ba = bytearray(4096)
    a = BuddyAllocator(ba)
    v = a.alloc(100)
    w = a.alloc(100)
    v.release()
    touch(w, 1)
    assert a.check() is None
    a.close()
    with pytest.raises(BufferError):
        ba.append(0)
    del w
    gc.collect()
    ba.append(0)


def test_released_view_block_can_be_freed_through_the_arena():
    ba = bytearray(4096)
    with BuddyAllocator(ba) as a:
        v = a.alloc(100)
        off = a.offset_of(v)
        v.release()
        a.free(memoryview(ba)[off : off + 100])
        assert len(a) == 0 and a.check() is None


SCRIPT = textwrap.dedent(
    """
    import gc, random, sys
    import numpy as np
    from alloc import BuddyAllocator, OutOfMemory

    rng = random.Random(int(sys.argv[1]))
    kept = []
    for round_ in range(60):
        arena = rng.choice([4096, 1000, bytearray(4096), bytearray(777)])
        a = BuddyAllocator(arena, min_size=rng.choice([1, 16, 64]))
        views = []
        for _ in range(200):
            op = rng.randrange(10)
            try:
                if op < 4:
                    views.append(a.alloc(rng.choice([0, 1, 17, 300, 5000, 2**63, 2**100])))
                elif op < 6 and views:
                    a.free(rng.choice(views))
                elif op == 6 and views:
                    v = rng.choice(views)
                    a.free(rng.choice([v[1:], v[:-1], bytearray(len(v)), np.frombuffer(v, np.uint8)]))
                elif op == 7:
                    a.close()
                elif op == 8 and views:
                    v = rng.choice(views)
                    v[:] = bytes([rng.randrange(256)]) * len(v)
                    bytes(v)
                else:
                    a.alloc(rng.choice([-1, True, 1.5, None, "x"]))
            except (ValueError, TypeError, MemoryError):
                pass
        if not a.closed:
            a.check()
        kept.extend(rng.sample(views, min(3, len(views))))
        if rng.random() < 0.5:
            a.close()
        del a, views
        gc.collect()
        for v in kept:
            v[:] = b"\\x5a" * len(v)
            assert v.tobytes() == b"\\x5a" * len(v)
    print("OK")
    """
)


@pytest.mark.parametrize("seed", [1, 2])
def test_misuse_never_crashes_the_interpreter(seed, tmp_path):
    """Never a crash: a random mix of misuse, close, drop and touching views,
    run in a child interpreter so a segfault fails the test instead of
    killing the run."""
    # the child searches the path the tests do (conftest puts an unbuilt
    # checkout last), so an installed, non-editable alloc is the one it gets
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(seed)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "OK"

"""Regression tests for the bugs of the "Reliability" attack, and their classes.

Each section names one bug found by the attack and then tests the other
members of its class: the same mistake on other methods, other arena kinds,
other argument kinds.  Every test here fails on the code the attack broke
and none is skipped; each is fast (the whole file runs in well under 5 s).

1. calloc decided whether to zero from the caller's size object.
2. A refused call kept the caller's buffer (or a buffer arena) exported for
   as long as the exception lived -- and, found while writing these tests,
   a collected reference cycle holding such an exception crashes CPython
   < 3.12.7 (SIGSEGV in the GC, CPython gh-77894).
3. An empty slice at the end of a live block freed the zero-size block that
   starts right after it.
4. A failure to grow the binding's size table was reported as "arena full".
   (Needs the test hook ``BuddyAllocator._debug_fail_next_table_growth()``.)
5. An empty multi-dimensional arena raised memoryview's raw TypeError.
6. A subclass that never called ``super().__init__()`` got cffi's messages.
7. ``alloc`` read the arena view before converting the size and the pool
   after, so an ``__index__`` that re-ran ``__init__`` got a wrong view.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import mmap
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import alloc
from alloc import BuddyAllocator, OutOfMemory
from conftest import PROPERTY_KEYS, addr, mentions, pattern, snapshot

# Messages that only cffi (or memoryview) writes: a user must never see them.
CFFI_WORDS = re.compile(r"ctype|cdata|initializer for|NoneType|struct alloc_pool")
NEVER_CREATED = r"never created|not created|not initiali[sz]ed"


def dirty(pool: BuddyAllocator, size: int = 4096) -> None:
    """Fill as much of the arena as one block covers with 0xA5 and free it,
    so that a later block starts out full of old bytes."""
    size = min(size, pool.largest_free)
    v = pool.alloc(size)
    v[:] = b"\xa5" * size
    pool.free(v)


def call(fn, *args):
    """fn(*args); an exception propagates without the refused call's own
    frames.  Those frames may hold cffi's from_buffer object over a
    memoryview (known bug 2); left in a reference cycle (pytest.raises
    makes one) they crash CPython < 3.12.7 when the GC collects them, which
    would end the whole run instead of failing one test.
    test_refused_memoryview_in_a_collected_cycle_does_not_crash checks that
    crash on purpose, in a child process."""
    try:
        return fn(*args)
    except BaseException as e:
        e.__traceback__ = None
        raise


def assert_resizable(buf: bytearray) -> None:
    """A bytearray that nobody exports can grow and shrink."""
    n = len(buf)
    buf.extend(b"\0" * 64)  # BufferError while exported
    del buf[n:]


# --------------------------------------------------------------------------
# 1. The caller's size object is used once, to convert it; calloc zeroes
#    exactly the view it allocated; nothing leaks a block if a later step
#    raises.
# --------------------------------------------------------------------------


class FalsyInt(int):
    """An int whose truth value lies: ``bool(FalsyInt(64))`` is False."""

    def __bool__(self) -> bool:
        return False


class LyingInt(int):
    """An int subclass whose every operator, comparison and text lies.

    Only ``operator.index`` (which ignores these overrides) tells the truth;
    code that uses the object after converting it gets nonsense."""

    def __bool__(self):
        return False

    def __lt__(self, other):
        return not int.__lt__(self, other)

    def __le__(self, other):
        return not int.__le__(self, other)

    def __gt__(self, other):
        return not int.__gt__(self, other)

    def __ge__(self, other):
        return not int.__ge__(self, other)

    def __eq__(self, other):
        return False

    def __ne__(self, other):
        return True

    __hash__ = int.__hash__

    def __add__(self, other):
        return 7

    __radd__ = __add__

    def __sub__(self, other):
        return 7

    __rsub__ = __sub__

    def __mul__(self, other):
        return 7

    __rmul__ = __mul__

    def __floordiv__(self, other):
        return 7

    def __rfloordiv__(self, other):
        return 7

    def __neg__(self):
        return 7

    def __and__(self, other):
        return 7

    __rand__ = __and__

    def __rshift__(self, other):
        return 7

    def __lshift__(self, other):
        return 7

    def bit_length(self):
        return 1

    def __repr__(self):
        return "LIE"

    __str__ = __repr__

    def __format__(self, spec):
        return "LIE"


class BoolRaises:
    """An ``__index__`` object whose truth value raises."""

    def __init__(self, n: int):
        self.n = n

    def __index__(self) -> int:
        return self.n

    def __bool__(self) -> bool:
        raise RuntimeError("bool() of the size object")

    def __len__(self) -> int:
        raise RuntimeError("len() of the size object")


class Drifting:
    """An ``__index__`` that gives a different value on every call: code
    that converts it twice allocates one size and uses another."""

    def __init__(self, *values: int):
        self.values = list(values)
        self.calls = 0

    def __index__(self) -> int:
        v = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        return v


@pytest.mark.parametrize("arena", ["int", "bytearray"])
@pytest.mark.parametrize("n", [1, 16, 64, 100, 1024])
def test_calloc_zeroes_for_an_int_whose_bool_is_false(arena, n):
    pool = BuddyAllocator(bytearray(4096) if arena == "bytearray" else 4096)
    dirty(pool)
    v = pool.calloc(FalsyInt(n))
    assert len(v) == n
    assert v.tobytes() == bytes(n)
    pool.free(v)
    assert pool.check() is None and len(pool) == 0


def test_calloc_zeroes_for_a_lying_int_subclass():
    pool = BuddyAllocator(4096)
    dirty(pool)
    v = pool.calloc(LyingInt(100))
    assert len(v) == 100 and v.tobytes() == bytes(100)
    assert pool.bytes_allocated == 100
    pool.free(v)
    assert len(pool) == 0


@pytest.mark.parametrize("method", ["alloc", "try_alloc", "calloc"])
def test_size_whose_bool_raises_leaks_no_block(method):
    """Either the call succeeds (and the block is held by the caller) or it
    raises and no block stays live."""
    pool = BuddyAllocator(4096)
    dirty(pool)
    before = snapshot(pool)
    try:
        v = getattr(pool, method)(BoolRaises(64))
    except RuntimeError:
        after = snapshot(pool)
        assert after["live_blocks"] == 0 and after["bytes_allocated"] == 0
        assert after["bytes_free"] == before["bytes_free"]
        assert after["alloc_calls"] - after["free_calls"] == 0
    else:
        assert len(v) == 64 and len(pool) == 1
        if method == "calloc":
            assert v.tobytes() == bytes(64)
        pool.free(v)
    assert pool.check() is None and len(pool) == 0


@pytest.mark.parametrize("method", ["alloc", "try_alloc", "calloc"])
@pytest.mark.parametrize("values", [(8, 2048), (2048, 8), (0, 64), (64, 0)])
def test_size_is_converted_once(method, values):
    """A size whose __index__ drifts: the view, the block and (for calloc)
    the zeroed bytes must all come from one conversion."""
    pool = BuddyAllocator(4096)
    dirty(pool)
    guard = pool.alloc(16)  # a neighbour whose bytes must survive
    guard[:] = pattern(1, 16)
    size = Drifting(*values)
    v = getattr(pool, method)(size)
    assert len(v) in values
    assert pool.bytes_allocated == 16 + len(v)
    if method == "calloc":
        assert v.tobytes() == bytes(len(v))
    assert guard.tobytes() == pattern(1, 16)
    pool.free(v)
    pool.free(guard)
    assert pool.check() is None and len(pool) == 0


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 100, 1000])
def test_calloc_writes_only_its_own_view(n):
    """calloc zeroes its view and nothing outside its block."""
    pool = BuddyAllocator(4096)
    dirty(pool)
    left = pool.alloc(16)
    left[:] = pattern(2, 16)
    v = pool.calloc(n)
    right = pool.alloc(16)
    right[:] = pattern(3, 16)
    assert v.tobytes() == bytes(n)
    assert left.tobytes() == pattern(2, 16)
    assert right.tobytes() == pattern(3, 16)
    for b in (left, v, right):
        pool.free(b)
    assert len(pool) == 0


@pytest.mark.parametrize("method", ["alloc", "try_alloc", "calloc"])
def test_lying_int_subclass_sizes_use_the_converted_value(method):
    pool = BuddyAllocator(4096)
    v = getattr(pool, method)(LyingInt(100))
    assert len(v) == 100
    s = pool.stats()
    assert s["bytes_allocated"] == 100 and s["bytes_wasted"] == 28
    assert pool.offset_of(v) == 0
    pool.free(v)
    assert len(pool) == 0
    z = getattr(pool, method)(LyingInt(0))
    assert len(z) == 0 and len(pool) == 1
    pool.free(z)


@pytest.mark.parametrize("method", ["alloc", "try_alloc", "calloc"])
def test_lying_negative_int_subclass_is_refused(method):
    pool = BuddyAllocator(4096)
    before = snapshot(pool)
    with pytest.raises(ValueError):
        getattr(pool, method)(LyingInt(-5))
    assert snapshot(pool) == before


@pytest.mark.parametrize("method", ["alloc", "calloc"])
def test_out_of_memory_message_states_the_converted_size(method):
    pool = BuddyAllocator(4096)
    with pytest.raises(OutOfMemory) as ei:
        getattr(pool, method)(LyingInt(10**6))
    msg = str(ei.value)
    assert "LIE" not in msg
    assert mentions(msg, 10**6)
    assert pool.try_alloc(LyingInt(10**6)) is None


def test_constructor_and_block_size_use_converted_sizes():
    pool = BuddyAllocator(LyingInt(4000), min_size=LyingInt(16))
    assert pool.bytes_total == 4000 and pool.min_size == 16
    assert pool.block_size(LyingInt(100)) == 128
    assert pool.block_size(FalsyInt(100)) == 128
    pool.close()
    pool = BuddyAllocator(bytearray(4096), min_size=LyingInt(64))
    assert pool.min_size == 64 and pool.bytes_total == 4096
    v = pool.alloc(LyingInt(1))
    assert pool.bytes_wasted == 63
    pool.free(v)


# --------------------------------------------------------------------------
# 2. A refused call must not keep any buffer exported once it has returned,
#    even while the caller keeps the exception (its traceback holds frames).
#    On CPython < 3.12.7 the same leftover export is also a crash: a cycle
#    holding the exception is collected by the GC, which clears the
#    memoryview under cffi's from_buffer object (CPython gh-77894).
# --------------------------------------------------------------------------


@contextlib.contextmanager
def refused(fn, *args, exc_type=Exception):
    """Call fn(*args), which must raise exc_type, and hold the exception --
    traceback, frames and all -- for the body of the with-block.  On exit
    the traceback is dropped, so that no reference cycle through a refused
    call's frames is left for the GC (on broken code that would crash the
    test run instead of failing one test; the subprocess test below checks
    that crash on purpose)."""
    caught = None
    try:
        fn(*args)
    except exc_type as e:
        caught = e
    if caught is None:
        pytest.fail(f"{getattr(fn, '__name__', fn)}{args!r:.60} did not raise "
                    f"{exc_type.__name__}")
    try:
        yield caught
    finally:
        caught.__traceback__ = None
        caught = None


@pytest.mark.parametrize("method", ["free", "offset_of"])
def test_refused_foreign_bytearray_is_not_kept_exported(method):
    pool = BuddyAllocator(4096)
    pool.alloc(16)
    foreign = bytearray(64)
    with refused(getattr(pool, method), foreign, exc_type=ValueError):
        assert_resizable(foreign)


@pytest.mark.parametrize("method", ["free", "offset_of"])
def test_refused_foreign_array_is_not_kept_exported(method):
    pool = BuddyAllocator(4096)
    foreign = array.array("B", bytes(64))
    with refused(getattr(pool, method), foreign, exc_type=ValueError):
        foreign.append(1)  # BufferError while exported


@pytest.mark.parametrize("method", ["free", "offset_of"])
def test_refused_foreign_mmap_can_be_closed(method):
    pool = BuddyAllocator(4096)
    m = mmap.mmap(-1, 4096)
    with refused(getattr(pool, method), m, exc_type=ValueError):
        m.close()  # BufferError while exported


@pytest.mark.parametrize("method", ["free", "offset_of"])
def test_refused_caller_view_can_be_released(method):
    """A memoryview the caller made (over the arena, not a block) and that
    was refused can be released at once."""
    arena = bytearray(4096)
    pool = BuddyAllocator(arena)
    base = memoryview(arena)
    stranger = base[8:24]  # inside the arena, not a block
    with refused(getattr(pool, method), stranger, exc_type=ValueError):
        stranger.release()  # BufferError while something exports it
        base.release()
        pool.close()
        del pool
        assert_resizable(arena)


@pytest.mark.parametrize("method", ["free", "offset_of"])
def test_refused_freed_view_does_not_pin_a_bytearray_arena(method):
    """A double free / offset_of of a freed view is refused; once the view,
    the allocator and its other views are gone, the arena can be resized
    even though the exception is still held."""
    arena = bytearray(4096)
    pool = BuddyAllocator(arena)
    v = pool.alloc(100)
    pool.free(v)
    with refused(getattr(pool, method), v, exc_type=ValueError):
        v.release()  # BufferError if the refused call still exports it
        del v
        pool.close()
        del pool
        assert_resizable(arena)


@pytest.mark.parametrize(
    "method, arg, exc_type",
    [
        ("alloc", 10**6, OutOfMemory),
        ("alloc", 2**100, OutOfMemory),
        ("alloc", -1, ValueError),
        ("alloc", "16", TypeError),
        ("alloc", 1.5, TypeError),
        ("calloc", 10**6, OutOfMemory),
        ("calloc", -1, ValueError),
        ("calloc", "16", TypeError),
        ("try_alloc", -1, ValueError),
        ("try_alloc", "16", TypeError),
        ("try_alloc", None, TypeError),
        ("free", 12345, TypeError),
        ("offset_of", 12345, TypeError),
        ("free", bytearray(16), ValueError),
        ("offset_of", bytearray(16), ValueError),
    ],
)
def test_refused_call_does_not_pin_a_bytearray_arena(method, arg, exc_type):
    arena = bytearray(4096)
    pool = BuddyAllocator(arena)
    with refused(getattr(pool, method), arg, exc_type=exc_type):
        with pytest.raises(BufferError):  # sanity: the open allocator holds it
            arena.extend(b"x")
        pool.close()
        del pool
        assert_resizable(arena)


@pytest.mark.parametrize("method", ["alloc", "calloc", "try_alloc", "free"])
def test_call_on_closed_allocator_does_not_pin_its_arena(method):
    arena = bytearray(4096)
    pool = BuddyAllocator(arena)
    pool.close()
    arg = bytearray(16) if method == "free" else 16
    with refused(getattr(pool, method), arg, exc_type=ValueError):
        del pool
        assert_resizable(arena)


@pytest.mark.parametrize("method", ["alloc", "calloc"])
def test_refused_alloc_does_not_pin_an_mmap_arena(method):
    m = mmap.mmap(-1, 4096)
    pool = BuddyAllocator(m)
    v = pool.alloc(1000)
    with refused(getattr(pool, method), 4096, exc_type=OutOfMemory):
        pool.free(v)
        v.release()
        del v
        pool.close()
        del pool
        m.close()  # BufferError while exported


def test_refused_constructor_does_not_pin_a_short_bytearray():
    short = bytearray(8)
    with refused(BuddyAllocator, short, exc_type=ValueError):
        assert_resizable(short)


def test_refused_constructor_min_size_does_not_pin_the_arena():
    arena = bytearray(4096)
    with refused(lambda: BuddyAllocator(arena, min_size=8192), exc_type=ValueError):
        assert_resizable(arena)


def test_refused_read_only_mmap_arena_can_be_closed():
    m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ)
    with refused(BuddyAllocator, m, exc_type=ValueError):
        m.close()  # BufferError while exported


GC_CYCLE_SCRIPT = textwrap.dedent(
    """
    import gc
    from alloc import BuddyAllocator

    def refused(fn, arg):
        try:
            fn(arg)
        except (ValueError, TypeError) as e:
            return e  # e -> traceback -> this frame -> e: a reference cycle

    def case(arena, method, what):
        pool = BuddyAllocator(arena)
        v = pool.alloc(100)
        if what == "freed view":
            pool.free(v)
            arg = v
        elif what == "slice":
            arg = v[1:]
        else:
            arg = memoryview(bytearray(64))
        kept = refused(getattr(pool, method), arg)
        assert kept is not None  # dropped on return: garbage in a cycle

    for arena in ("int", "bytearray"):
        for method in ("free", "offset_of"):
            for what in ("freed view", "slice", "foreign memoryview"):
                case(4096 if arena == "int" else bytearray(4096), method, what)
                gc.collect()
                print("survived", arena, method, what, flush=True)
    """
)


def test_refused_memoryview_in_a_collected_cycle_does_not_crash(tmp_path):
    """A refused free()/offset_of() of a memoryview, its exception kept in
    a reference cycle (as logging, futures and test runners do), then
    gc.collect(): the interpreter must survive.  Run in a child process,
    since on broken code it dies of SIGSEGV."""
    # the child searches the path the tests do (an unbuilt checkout last)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    r = subprocess.run(
        [sys.executable, "-c", GC_CYCLE_SCRIPT],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    survived = r.stdout.count("survived")
    assert r.returncode == 0 and survived == 12, (
        f"exit status {r.returncode} after {survived} of 12 cases:\n"
        f"{r.stdout}{r.stderr[-2000:]}"
    )


# --------------------------------------------------------------------------
# 3. An empty buffer at the start of a zero-size block is not that block:
#    only the view alloc(0) returned frees it.
# --------------------------------------------------------------------------


def _block_then_zero(min_size: int = 16, arena: str = "int"):
    """A pool with a full-block view ``a`` at 0 and a zero-size block ``z``
    right after it (a's end is z's start)."""
    buf = bytearray(4096) if arena == "bytearray" else None
    pool = BuddyAllocator(buf if buf is not None else 4096, min_size=min_size)
    a = pool.alloc(min_size)
    z = pool.alloc(0)
    assert pool.offset_of(a) == 0 and pool.offset_of(z) == min_size
    a[:] = pattern(5, min_size)
    return pool, a, z, buf


def _empty_at_end(kind: str, a: memoryview, buf):
    """An empty buffer whose address is the end of block a."""
    n = len(a)
    if kind == "slice":
        return a[n:]
    if kind == "slice-step":
        return a[n::2]
    if kind == "numpy":
        return np.frombuffer(a, dtype=np.uint8)[n:]
    if kind == "cast":
        return a.cast("B")[n:]
    if kind == "ctypes":
        return memoryview((ctypes.c_uint8 * 0).from_address(addr(a) + n))
    if kind == "arena-view":
        return memoryview(buf)[n:n]
    raise AssertionError(kind)


EMPTY_KINDS = ["slice", "slice-step", "numpy", "cast", "ctypes"]


@pytest.mark.parametrize("min_size", [1, 16, 256])
@pytest.mark.parametrize("kind", EMPTY_KINDS)
@pytest.mark.parametrize("method", ["free", "offset_of"])
def test_empty_slice_at_block_end_is_refused(method, kind, min_size):
    pool, a, z, _ = _block_then_zero(min_size)
    empty = _empty_at_end(kind, a, None)
    before = snapshot(pool)
    with pytest.raises(ValueError):
        call(getattr(pool, method), empty)
    assert snapshot(pool) == before
    assert a.tobytes() == pattern(5, min_size)
    assert pool.offset_of(z) == min_size
    pool.free(z)  # still live, still freeable by its own view
    pool.free(a)
    assert len(pool) == 0 and pool.check() is None


@pytest.mark.parametrize("method", ["free", "offset_of"])
def test_empty_view_of_a_bytearray_arena_is_refused(method):
    pool, a, z, buf = _block_then_zero(16, "bytearray")
    empty = _empty_at_end("arena-view", a, buf)
    before = snapshot(pool)
    with pytest.raises(ValueError):
        call(getattr(pool, method), empty)
    assert snapshot(pool) == before
    empty.release()
    pool.free(z)
    pool.free(a)
    assert len(pool) == 0


def test_empty_slice_of_a_freed_block_is_refused():
    """The view before the zero-size block was freed: its empty tail still
    must not free the zero-size block."""
    pool, a, z, _ = _block_then_zero(16)
    tail = a[16:]
    pool.free(a)
    before = snapshot(pool)
    with pytest.raises(ValueError):
        call(pool.free, tail)
    assert snapshot(pool) == before
    pool.free(z)
    assert len(pool) == 0


def test_empty_slice_at_end_of_a_larger_block_is_refused():
    pool = BuddyAllocator(4096)
    a = pool.alloc(128)
    zs = [pool.alloc(0) for _ in range(3)]
    assert pool.offset_of(zs[0]) == 128
    before = snapshot(pool)
    for empty in (a[128:], a[64:64], a[:0]):
        with pytest.raises(ValueError):
            call(pool.free, empty)
    assert snapshot(pool) == before
    for z in zs:
        pool.free(z)
    pool.free(a)
    assert len(pool) == 0


@pytest.mark.parametrize("arena", ["int", "bytearray"])
@pytest.mark.parametrize("min_size", [1, 16])
def test_zero_size_blocks_freeable_by_their_own_views(arena, min_size):
    pool = BuddyAllocator(
        bytearray(4096) if arena == "bytearray" else 4096, min_size=min_size
    )
    zs = [pool.alloc(0), pool.try_alloc(0), pool.calloc(0)]
    assert all(len(z) == 0 for z in zs) and len(pool) == 3
    offsets = [pool.offset_of(z) for z in zs]
    assert offsets == [0, min_size, 2 * min_size]
    for z in zs:
        pool.free(z)
    assert len(pool) == 0 and pool.bytes_free == pool.bytes_total
    for z in zs:  # double free of a zero-size block
        with pytest.raises(ValueError):
            call(pool.free, z)
    assert pool.check() is None


# --------------------------------------------------------------------------
# 4. When the binding's bookkeeping cannot grow, say so (MemoryError, not a
#    claim that the arena is full), count it once, change nothing else.
#    Needs the hook BuddyAllocator._debug_fail_next_table_growth().
# --------------------------------------------------------------------------

FULL_WORDS = re.compile(
    r"largest free|arena is full|no (free )?block|not enough (space|room)", re.I
)
BOOKKEEPING_WORDS = re.compile(r"bookkeeping|table|metadata", re.I)


def _trip_table_growth(pool, method, size=10, limit=2000):
    """Arm the hook, then allocate until a call fails; return the views that
    succeeded, the snapshot before the failing call, and its outcome (the
    exception, or None for try_alloc).  The size must not fill its block
    exactly: an exact fit has no record in the table (csrc/pool.h).  The
    pool keeps every record in the table (as one whose request array could
    not be reserved): only the table grows."""
    pool._debug_table_only()
    pool._debug_fail_next_table_growth()
    held = []
    for _ in range(limit):
        before = snapshot(pool)
        try:
            v = getattr(pool, method)(size)
        except MemoryError as exc:
            return held, before, exc
        if v is None:
            return held, before, None
        held.append(v)
    pytest.fail(f"{limit} allocations and no table growth failed")


@pytest.mark.parametrize("arena", ["int", "bytearray"])
@pytest.mark.parametrize("method", ["alloc", "calloc"])
def test_table_growth_failure_is_reported_as_such(method, arena):
    pool = BuddyAllocator(
        bytearray(1 << 16) if arena == "bytearray" else 1 << 16, min_size=16
    )
    held, before, exc = _trip_table_growth(pool, method)
    assert isinstance(exc, MemoryError)
    msg = str(exc)
    assert BOOKKEEPING_WORDS.search(msg), msg
    assert not FULL_WORDS.search(msg), msg
    after = snapshot(pool)
    assert after.pop("failed_allocs") == before.pop("failed_allocs") + 1
    assert after == before
    assert pool.check() is None
    v = getattr(pool, method)(10)  # the next attempt succeeds
    assert len(v) == 10 and len(pool) == len(held) + 1
    for b in held + [v]:
        pool.free(b)
    assert len(pool) == 0 and pool.check() is None


def test_table_growth_failure_in_try_alloc_changes_nothing_else():
    pool = BuddyAllocator(1 << 16, min_size=16)
    held, before, outcome = _trip_table_growth(pool, "try_alloc")
    assert outcome is None or (
        isinstance(outcome, MemoryError) and not FULL_WORDS.search(str(outcome))
    )
    after = snapshot(pool)
    assert after.pop("failed_allocs") == before.pop("failed_allocs") + 1
    assert after == before
    v = pool.try_alloc(10)
    assert v is not None and len(v) == 10


@pytest.mark.parametrize("method", ["alloc", "try_alloc", "calloc", "alloc_many"])
def test_exact_fits_need_no_table_growth(method):
    """A block requested with exactly its block size has no record in the
    table, so an armed growth failure does not touch it; the first request
    that needs a record gets the failure."""
    pool = BuddyAllocator(1 << 16, min_size=16)
    pool._debug_table_only()
    pool._debug_fail_next_table_growth()
    held = []
    for size in (16, 32, 64, 1024, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16):
        held += pool.alloc_many(size, 1) if method == "alloc_many" else [
            getattr(pool, method)(size)]
    assert pool.bytes_allocated == sum(len(v) for v in held) and pool.bytes_wasted == 0
    before = snapshot(pool)
    with pytest.raises(MemoryError) as info:
        for _ in range(100):
            held.append(pool.alloc(10))
    assert BOOKKEEPING_WORDS.search(str(info.value))
    after = snapshot(pool)
    assert after.pop("failed_allocs") == before.pop("failed_allocs") + 1
    assert after.pop("live_blocks") - before.pop("live_blocks") == len(held) - 15
    for v in held:
        pool.free(v)
    assert len(pool) == 0 and pool.check() is None


# --------------------------------------------------------------------------
# 5. Arenas of any shape and format: empty ones are a ValueError with the
#    allocator's own message; non-empty C-contiguous ones are used as bytes.
# --------------------------------------------------------------------------

EMPTY_ARENAS = {
    "(0,)": lambda: np.zeros((0,)),
    "(0,4)": lambda: np.zeros((0, 4)),
    "(4,0)": lambda: np.zeros((4, 0)),
    "(0,0)": lambda: np.zeros((0, 0)),
    "(2,0,3)": lambda: np.zeros((2, 0, 3), dtype=np.uint8),
    "(0,4)u8": lambda: np.zeros((0, 4), dtype=np.uint8),
    "(0,4)F": lambda: np.zeros((0, 4), order="F"),
    "(0,4)i": lambda: np.zeros((0, 4), dtype="i"),
    "bytearray()": lambda: bytearray(),
    "memoryview(bytearray())": lambda: memoryview(bytearray()),
}


@pytest.mark.parametrize("min_size", [1, 16])
@pytest.mark.parametrize("name", sorted(EMPTY_ARENAS))
def test_empty_arena_is_a_value_error(name, min_size):
    with pytest.raises(ValueError) as ei:
        BuddyAllocator(EMPTY_ARENAS[name](), min_size=min_size)
    msg = str(ei.value)
    assert "memoryview" not in msg and "cast" not in msg, msg


NON_EMPTY_ARENAS = {
    "(16,16)u8": lambda: np.zeros((16, 16), dtype=np.uint8),
    "64d": lambda: np.zeros(64),
    "(8,8)d": lambda: np.zeros((8, 8)),
    "64i": lambda: np.zeros(64, dtype="i"),
    "(4,16)>i4": lambda: np.zeros((4, 16), dtype=">i4"),
    "(8,8)bool": lambda: np.zeros((8, 8), dtype=bool),
    "(4,4)c16": lambda: np.zeros((4, 4), dtype="c16"),
    "structured": lambda: np.zeros((4, 4), dtype=[("a", "<i4"), ("b", "<f8")]),
    "0-d V64": lambda: np.zeros((), dtype="V64"),
    "(1,64)F": lambda: np.zeros((1, 64), order="F"),
    "ctypes int[64]": lambda: (ctypes.c_int * 64)(),
    "ctypes int[8][8]": lambda: ((ctypes.c_int * 8) * 8)(),
    "array q": lambda: array.array("q", [0] * 8),
    "mv cast (4,16)": lambda: memoryview(bytearray(64)).cast("B", shape=[4, 16]),
    "mv cast d": lambda: memoryview(bytearray(64)).cast("d"),
}


@pytest.mark.parametrize("name", sorted(NON_EMPTY_ARENAS))
def test_non_empty_arena_of_any_shape_is_used_as_bytes(name):
    arena = NON_EMPTY_ARENAS[name]()
    raw = memoryview(arena)
    nbytes = raw.nbytes
    pool = BuddyAllocator(arena, min_size=16)
    assert pool.bytes_total == nbytes // 16 * 16
    v = pool.alloc(16)
    assert v.format == "B" and v.ndim == 1 and len(v) == 16
    v[:] = pattern(9, 16)
    off = pool.offset_of(v)
    assert raw.tobytes()[off : off + 16] == pattern(9, 16)  # the arena's bytes
    pool.free(v)
    pool.check()
    pool.close()


def test_zero_d_array_fits_a_small_min_size():
    pool = BuddyAllocator(np.zeros((), dtype="d"), min_size=8)
    assert pool.bytes_total == 8
    v = pool.alloc(8)
    pool.free(v)
    with pytest.raises(ValueError):
        BuddyAllocator(np.zeros((), dtype="d"), min_size=16)


def test_fortran_ordered_arena_is_refused_as_a_value_error():
    with pytest.raises(ValueError):
        BuddyAllocator(np.zeros((4, 8), order="F"))
    with pytest.raises(TypeError):
        BuddyAllocator(np.zeros((4, 8), order="F"))


# --------------------------------------------------------------------------
# 6. An allocator whose __init__ never ran: a clear "never created" error
#    from every method, 0 (or that error) from every property, no crash.
# --------------------------------------------------------------------------


class Forgetful(BuddyAllocator):
    """A subclass that forgets super().__init__()."""

    def __init__(self, *args, **kwargs):
        self.note = "forgot super().__init__()"


class HalfMade(BuddyAllocator):
    """A subclass whose super().__init__() failed and was swallowed."""

    def __init__(self):
        try:
            super().__init__(bytearray(8))
        except ValueError:
            pass


def _never_created_kinds():
    return {
        "subclass": Forgetful,
        "half-made": HalfMade,
        "__new__": lambda: BuddyAllocator.__new__(BuddyAllocator),
    }


NEVER_CREATED_CALLS = {
    "alloc": lambda p: p.alloc(16),
    "alloc(0)": lambda p: p.alloc(0),
    "try_alloc": lambda p: p.try_alloc(16),
    "calloc": lambda p: p.calloc(16),
    "free": lambda p: p.free(bytearray(16)),
    "free(view)": lambda p: call(p.free, memoryview(bytearray(16))[:0]),
    "offset_of": lambda p: p.offset_of(bytearray(16)),
    "stats": lambda p: p.stats(),
    "counters": lambda p: p.counters(),
    "check": lambda p: p.check(),
}


@pytest.mark.parametrize("kind", sorted(_never_created_kinds()))
@pytest.mark.parametrize("call", sorted(NEVER_CREATED_CALLS))
def test_never_created_methods_say_so(call, kind):
    p = _never_created_kinds()[kind]()
    with pytest.raises(ValueError, match=NEVER_CREATED) as ei:
        NEVER_CREATED_CALLS[call](p)
    assert not CFFI_WORDS.search(str(ei.value)), str(ei.value)


@pytest.mark.parametrize("kind", sorted(_never_created_kinds()))
def test_never_created_properties_len_repr_close(kind):
    p = _never_created_kinds()[kind]()
    for name in PROPERTY_KEYS:
        try:
            assert getattr(p, name) == 0, name
        except ValueError as e:
            assert re.search(NEVER_CREATED, str(e)), (name, str(e))
    assert isinstance(p.closed, bool)
    assert len(p) == 0
    r = repr(p)
    assert re.search(NEVER_CREATED, r), r
    assert p.block_size(16) in (0, 16)
    p.close()  # a no-op, twice
    p.close()
    with p as q:
        assert q is p


@pytest.mark.parametrize("kind", sorted(_never_created_kinds()))
def test_never_created_every_public_name_is_clear(kind):
    """A sweep over every public name the class has now (extensions added
    later included): a property gives a value or the "never created" error,
    a method the "never created" error or a harmless result; never a cffi
    message, never anything but ValueError (TypeError only for arguments
    this sweep cannot guess)."""
    p = _never_created_kinds()[kind]()
    args = {
        "alloc": (16,),
        "try_alloc": (16,),
        "calloc": (16,),
        "alloc_many": (16, 2),
        "free": (bytearray(16),),
        "free_many": ([bytearray(16)],),
        "offset_of": (bytearray(16),),
        "realloc": (bytearray(16), 32),
        "block_at": (0,),
        "free_at": (0,),
        "block_size": (16,),
        "block": (16,),
        "size_of": (0,),
    }
    for name in dir(type(p)):
        if name.startswith("_") or name == "note":
            continue
        attr = getattr(type(p), name)
        try:
            if isinstance(attr, property):
                getattr(p, name)
                continue
            result = call(getattr(p, name), *args.get(name, ()))
            if hasattr(result, "__enter__"):
                with result:
                    pass
            elif hasattr(result, "__next__"):
                list(result)
        except ValueError as e:
            msg = str(e)
            assert re.search(NEVER_CREATED, msg), (name, msg)
        except TypeError as e:
            msg = str(e)
            assert name not in args and "argument" in msg, (name, msg)
            assert not CFFI_WORDS.search(msg), (name, msg)


# --------------------------------------------------------------------------
# 7. State is read once, after the size is converted: an __index__ that
#    re-runs __init__ or closes the allocator gets an error or a view of
#    exactly the requested length that the allocator can free.
# --------------------------------------------------------------------------


class ReInit:
    """A size whose __index__ re-initialises the allocator on a new arena."""

    def __init__(self, pool, arena, n, **kw):
        self.pool, self.arena, self.n, self.kw = pool, arena, n, kw

    def __index__(self):
        self.pool.__init__(self.arena, **self.kw)
        return self.n


class Closes:
    """A size whose __index__ closes the allocator."""

    def __init__(self, pool, n):
        self.pool, self.n = pool, n

    def __index__(self):
        self.pool.close()
        return self.n


def _assert_consistent(pool, method, n, attempt):
    """Run attempt(); it raises ValueError/MemoryError with no live block,
    or returns a view of exactly n bytes that pool can locate and free."""
    try:
        v = attempt()
    except (ValueError, MemoryError):
        if not pool.closed:
            assert len(pool) == 0 and pool.bytes_allocated == 0
            assert pool.check() is None
        return
    if v is None:
        assert method == "try_alloc" and len(pool) == 0
        return
    assert len(v) == n
    if method == "calloc":
        assert v.tobytes() == bytes(n)
    v[:] = pattern(7, n)
    off = call(pool.offset_of, v)
    assert pool.stats()["live_blocks"] == 1 and pool.bytes_allocated == n
    assert off % pool.block_size(n) == 0
    call(pool.free, v)
    assert len(pool) == 0 and pool.check() is None


REINIT_CASES = {
    # old arena, new arena, request: the old view is too short for it
    "bytearray 64 -> bytearray 4096": (lambda: bytearray(64), lambda: bytearray(4096), 1024),
    "int 64 -> int 4096": (lambda: 64, lambda: 4096, 1024),
    "int 4096 -> int 4096": (lambda: 4096, lambda: 4096, 100),
    "int 4096 -> bytearray 4096": (lambda: 4096, lambda: bytearray(4096), 100),
    "bytearray 4096 -> int 64": (lambda: bytearray(4096), lambda: 64, 16),
    "mmap -> int": (lambda: mmap.mmap(-1, 4096), lambda: 8192, 4096),
}


@pytest.mark.parametrize("method", ["alloc", "try_alloc", "calloc"])
@pytest.mark.parametrize("case", sorted(REINIT_CASES))
def test_index_that_reinitialises_the_allocator(case, method):
    old, new, n = REINIT_CASES[case]
    pool = BuddyAllocator(old())
    dirty(pool)
    size = ReInit(pool, new(), n)
    _assert_consistent(pool, method, n, lambda: getattr(pool, method)(size))


@pytest.mark.parametrize("method", ["alloc", "try_alloc", "calloc"])
def test_index_that_reinitialises_with_another_min_size(method):
    pool = BuddyAllocator(4096, min_size=16)
    dirty(pool)
    size = ReInit(pool, 4096, 5, min_size=256)
    _assert_consistent(pool, method, 5, lambda: getattr(pool, method)(size))
    assert pool.min_size == 256


@pytest.mark.parametrize("method", ["alloc", "try_alloc", "calloc"])
@pytest.mark.parametrize("arena", ["int", "bytearray"])
def test_index_that_closes_the_allocator(arena, method):
    pool = BuddyAllocator(bytearray(4096) if arena == "bytearray" else 4096)
    size = Closes(pool, 64)
    _assert_consistent(pool, method, 64, lambda: getattr(pool, method)(size))
    with pytest.raises(ValueError):
        pool.alloc(16)


@pytest.mark.parametrize("method", ["alloc", "try_alloc", "calloc"])
def test_index_that_closes_then_the_refusal_message_is_about_closing(method):
    pool = BuddyAllocator(64)
    with pytest.raises(ValueError, match="closed"):
        getattr(pool, method)(Closes(pool, 10**6))


def test_reinit_views_belong_to_the_new_arena():
    """After a re-init in __index__, the block is inside the new arena."""
    new_arena = bytearray(4096)
    pool = BuddyAllocator(bytearray(4096))
    v = pool.alloc(ReInit(pool, new_arena, 100))
    v[:] = pattern(4, 100)
    assert new_arena[:100] == pattern(4, 100)
    call(pool.free, v)
    assert len(pool) == 0 and pool.check() is None


def test_error_classes_are_still_exported():
    """The regression tests above rely on these names."""
    assert issubclass(alloc.OutOfMemory, MemoryError)
    assert issubclass(alloc.BufferArgumentError, ValueError)

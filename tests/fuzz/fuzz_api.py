"""Coverage-guided fuzzing of ``alloc.BuddyAllocator`` through its Python API.

Each input is a little program: make an arena (an ``int``, a bytearray, a
misaligned memoryview, an mmap, a numpy array), then run operations on it --
``alloc``/``try_alloc``/``calloc`` with odd size objects, ``free`` and
``offset_of`` of real views, slices of views, ``numpy.frombuffer(view)``,
foreign buffers, freed views and non-buffers, ``close``, dropping the
allocator while its views live on, ``stats``/``counters``/``check`` -- and
checks every result against a pure-Python model:

* placement: the buddy rule of API.md (smallest order with a free block,
  lowest offset, lower halves kept), so every offset, every refusal and every
  statistic (``free_blocks`` per size included) is predicted exactly;
* contents: every live block gets its own byte pattern at allocation, and
  every block (and every view of a dead allocator) is verified after every
  step; ``calloc`` must hand out zeros;
* refusals: a refused call raises the documented exception and changes
  nothing (statistics and counters compared after every step).

Run it with atheris (``pip install atheris``)::

    python tests/fuzz/fuzz_api.py -max_total_time=60 -rss_limit_mb=2048

or, without atheris, replay N pseudo-random inputs through the same function
(what CI can afford)::

    python tests/fuzz/fuzz_api.py --replay 2000 [--seed 0] [--start 0]
    python tests/fuzz/fuzz_api.py --file crash-1234abcd   # one saved input

Either way it prints the number of executions at the end.

``KNOWN_BUGS_UNFIXED`` makes the harness step around the exact triggers of
the bugs in ``tests/test_regressions.py`` that the binding does not fix yet,
so that the fuzzer looks for *new* ones; flip it to False once they are fixed.
"""

from __future__ import annotations

import array
import ctypes
import faulthandler
import gc
import mmap
import os
import re
import sys
import time
import types
from typing import Any, Callable, Dict, List, Optional, Tuple

#: Step around the triggers of the known, not yet fixed bugs (see the module
#: docstring and ``tests/test_regressions.py``).  Flip to False after fixing.
KNOWN_BUGS_UNFIXED = False

import numpy as np  # noqa: E402  (imported before atheris instruments imports)

# The reference model and fill pattern are the test-suite's own (tests/conftest.py).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from conftest import BuddyModel, pattern  # noqa: E402

try:  # noqa: E402
    import atheris
except ImportError:  # replay mode needs no atheris
    atheris = None

if atheris is not None and "--replay" not in sys.argv and "--file" not in sys.argv:
    with atheris.instrument_imports(include=["alloc"]):
        import alloc
        from alloc import BuddyAllocator, OutOfMemory
else:
    import alloc
    from alloc import BuddyAllocator, OutOfMemory

MAX_ARENA = 1 << 16  # bytes; small arenas make full arenas and merges common
MAX_OPS = 160  # operations per input
MAX_ZOMBIES = 48  # views of dead allocators kept to touch later
EXECUTIONS = 0  # inputs run so far (printed at the end)


class FuzzFailure(AssertionError):
    """The allocator did something the contract or the model forbids."""


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise FuzzFailure(what)


# --------------------------------------------------------------------------
# Input: turns the fuzzer's bytes into choices (zeros once exhausted).
# --------------------------------------------------------------------------


class Input:
    """A cursor over the input bytes; reading past the end gives zeros."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def more(self) -> bool:
        return self.pos < len(self.data)

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        b = self.data[self.pos]
        self.pos += 1
        return b

    def uint(self, nbytes: int) -> int:
        v = 0
        for _ in range(nbytes):
            v = (v << 8) | self.byte()
        return v

    def below(self, n: int) -> int:
        """An int in [0, n)."""
        if n <= 1:
            return 0
        nbytes = 1 if n <= 256 else 2 if n <= 65536 else 4
        return self.uint(nbytes) % n

    def pick(self, seq):
        return seq[self.below(len(seq))]


# --------------------------------------------------------------------------
# The model: buddy placement and statistics in plain Python.
# --------------------------------------------------------------------------


def block_size_for(size: int, min_size: int) -> int:
    """The smallest power of two >= max(size, min_size)."""
    return 1 << (max(size, min_size) - 1).bit_length()


class Rec:
    """A live block in the model: its view, where it is, what it holds."""

    __slots__ = ("view", "off", "size", "tag")

    def __init__(self, view: memoryview, off: int, size: int, tag: int):
        self.view, self.off, self.size, self.tag = view, off, size, tag

    def intact(self) -> bool:
        return self.view.tobytes() == pattern(self.tag, self.size)


# --------------------------------------------------------------------------
# Odd size objects.
# --------------------------------------------------------------------------


class FalsyInt(int):
    """An int whose truth value is False whatever its value."""

    def __bool__(self):
        return False


class LyingInt(int):
    """An int subclass whose operators and text lie (index tells the truth)."""

    def __bool__(self):
        return False

    def __lt__(self, other):
        return not int.__lt__(self, other)

    def __ge__(self, other):
        return not int.__ge__(self, other)

    def __add__(self, other):
        return 7

    __radd__ = __add__

    def __sub__(self, other):
        return 7

    def __repr__(self):
        return "LIE"

    __str__ = __repr__

    def __format__(self, spec):
        return "LIE"

    __hash__ = int.__hash__


class IndexOnly:
    """Only ``__index__``."""

    def __init__(self, n: int):
        self.n = n

    def __index__(self):
        return self.n


class BoolRaises(IndexOnly):
    """``__index__`` works; ``bool()`` and ``len()`` raise."""

    def __bool__(self):
        raise RuntimeError("bool() of a size object")

    def __len__(self):
        raise RuntimeError("len() of a size object")


class IndexRaises:
    """``__index__`` raises something that is not a TypeError."""

    def __index__(self):
        raise LookupError("__index__ refuses")


class Drifting:
    """``__index__`` returns the first value once, the second ever after."""

    def __init__(self, first: int, then: int):
        self.first, self.then, self.calls = first, then, 0

    def __index__(self):
        self.calls += 1
        return self.first if self.calls == 1 else self.then


class Closes(IndexOnly):
    """``__index__`` closes the allocator it is given."""

    def __init__(self, pool, n: int):
        super().__init__(n)
        self.pool = pool

    def __index__(self):
        self.pool.close()
        return self.n


class ReInits(IndexOnly):
    """``__index__`` re-runs ``__init__`` on a fresh arena (known bug 7)."""

    def __init__(self, pool, arena, n: int):
        super().__init__(n)
        self.pool, self.arena = pool, arena

    def __index__(self):
        self.pool.__init__(self.arena)
        return self.n


class Forgetful(BuddyAllocator):
    """A subclass that never calls ``super().__init__()``."""

    def __init__(self):
        pass


_NUMPY_INTS = (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32,
               np.int64, np.uint64)


def numpy_int(n: int):
    """n as the smallest numpy integer type that holds it, or None."""
    for t in _NUMPY_INTS:
        info = np.iinfo(t)
        if info.min <= n <= info.max:
            return t(n)
    return None


_DIGIT_GROUPS = re.compile(r"(?<=\d)[,_' ](?=\d{3}\b)")


def mentions(msg: str, n: int) -> bool:
    """True if the integer n is written in msg (digit groups allowed)."""
    flat = _DIGIT_GROUPS.sub("", msg)
    return str(n) in re.findall(r"\d+", flat) or f"2**{n.bit_length() - 1}" in msg


# --------------------------------------------------------------------------
# The harness: one per input.
# --------------------------------------------------------------------------

Where = Optional[Tuple[int, int, Any]]  # (offset, length, the object) or None


class Harness:
    """Runs one input's program against an allocator and the model."""

    def __init__(self, inp: Input):
        self.inp = inp
        self.pool: Optional[BuddyAllocator] = None
        self.model: Optional[BuddyModel] = None
        self.live: Dict[int, Rec] = {}  # offset -> live block
        self.stale: List[Rec] = []  # freed blocks' views (may be reused)
        self.zombies: List[Rec] = []  # live views of dead allocators
        self.counts = [0, 0, 0]  # alloc_calls, free_calls, failed_allocs
        self.closed = False
        self.armed = False  # the table-growth failure hook is armed
        self.arena_view: Optional[Callable[[int, int], memoryview]] = None
        self.tag = 0
        self.trace: List[str] = []
        self.kept: List[BaseException] = []  # refused calls' exceptions

    # ---- set-up -------------------------------------------------------

    def new_pool(self) -> None:
        """Drop the current allocator (its live views become zombies) and
        make a new one over an arena the input chooses."""
        for rec in self.live.values():
            self.zombies.append(rec)
        del self.zombies[:-MAX_ZOMBIES]
        self.pool = self.model = self.arena_view = None
        self.live, self.stale = {}, []
        self.counts, self.closed, self.armed = [0, 0, 0], False, False
        inp = self.inp
        min_size = 1 << inp.below(9)  # 1 .. 256
        min_arg: Any = min_size
        odd = inp.below(8)
        if odd == 1:  # not a power of two: rounded down
            min_arg = min_size + inp.below(min_size) if min_size > 1 else 1
        elif odd == 2:
            min_arg = numpy_int(min_size)
        elif odd == 3:
            min_arg = FalsyInt(min_size)
        size = 1 + inp.below(MAX_ARENA)
        kind = inp.below(8)
        self.trace.append(f"new_pool kind={kind} size={size} min_size={min_arg!r}")
        if kind in (0, 1, 2):
            arena: Any = size
            capacity = -(-size // min_size) * min_size
        else:
            if kind == 3:
                arena = bytearray(size)
                self.arena_view = lambda a, b, buf=arena: memoryview(buf)[a:b]
            elif kind == 4:
                skew = 1 + inp.below(15)
                big = bytearray(size + skew)
                arena = memoryview(big)[skew : skew + size]
                self.arena_view = lambda a, b, m=arena: m[a:b]
            elif kind == 5:
                arena = mmap.mmap(-1, size)
            elif kind == 6:
                arena = np.zeros(size, dtype=np.uint8)
            else:
                shape = self.shape(size)
                arena = np.zeros(shape, dtype=inp.pick(["u1", "f8", "i4", "c16"]))
                size = arena.nbytes
            if kind >= 5 and size:
                flat = memoryview(arena).cast("B")
                self.arena_view = lambda a, b, m=flat: m[a:b]
            capacity = size // min_size * min_size
        if capacity < min_size or capacity == 0:
            self.refused_ctor(arena, min_arg)
            return
        self.pool = BuddyAllocator(arena, min_size=min_arg)
        self.model = BuddyModel(capacity, min_size)
        self.verify()

    def shape(self, size: int) -> Tuple[int, ...]:
        """A numpy shape for about ``size`` bytes, sometimes empty."""
        inp = self.inp
        rows = 1 + inp.below(16)
        choice = inp.below(6)
        if choice == 0:
            # empty multi-dimensional arenas: known bug 5 (raw TypeError)
            if KNOWN_BUGS_UNFIXED:
                return (0,)
            return inp.pick([(0, 4), (4, 0), (0, 0), (2, 0, 3)])
        return (rows, max(1, size // (rows * 16)))

    def refused_ctor(self, arena: Any, min_arg: Any) -> None:
        try:
            BuddyAllocator(arena, min_size=min_arg)
        except ValueError as e:
            expect("memoryview" not in str(e), f"raw memoryview message: {e}")
            return
        raise FuzzFailure(f"BuddyAllocator({type(arena).__name__}) fit no block "
                          "and did not raise ValueError")

    # ---- the program --------------------------------------------------

    def run(self) -> None:
        self.new_pool()
        # 32 entries, so one input byte picks an operation with these odds
        ops = (
            [self.op_alloc] * 11 + [self.op_free_live] * 8
            + [self.op_free_other] * 4 + [self.op_offset_of] * 2
            + [self.op_write, self.op_close, self.op_new_pool, self.op_misc,
               self.op_never_created, self.op_touch_zombies, self.op_arm_hook]
        )
        for _ in range(MAX_OPS):
            if not self.inp.more():
                break
            op = self.inp.pick(ops)
            op()
            self.verify()

    # ---- checks ---------------------------------------------------------

    def verify(self) -> None:
        """Statistics, counters, check() and every block's contents against
        the model."""
        for rec in self.zombies:
            expect(rec.intact(), f"a dead allocator's view changed at {rec.off}")
        pool, model = self.pool, self.model
        if pool is None:
            return
        for rec in self.live.values():
            expect(rec.intact(), f"block at {rec.off} ({rec.size} B) changed")
        s = pool.stats()
        allocated = sum(r.size for r in self.live.values())
        in_blocks = sum(block_size_for(r.size, model.m) for r in self.live.values())
        want = {
            "bytes_total": model.capacity,
            "bytes_allocated": allocated,
            "bytes_wasted": in_blocks - allocated,
            "bytes_free": model.capacity - in_blocks,
            "largest_free": model.largest_free,
            "min_size": model.m,
            "live_blocks": len(self.live),
        }
        got = {k: s[k] for k in want}
        expect(got == want, f"stats {got} != model {want}")
        expect(s["free_blocks"] == model.free_blocks,
               f"free_blocks {s['free_blocks']} != model {model.free_blocks}")
        props = {k: getattr(pool, k) for k in want if k != "live_blocks"}
        props["live_blocks"] = len(pool)
        expect(props == want, f"properties {props} != model {want}")
        c = pool.counters()
        cw = dict(zip(("alloc_calls", "free_calls", "failed_allocs"), self.counts))
        expect(c == cw, f"counters {c} != model {cw}")
        if not self.closed:
            pool.check()

    def snapshot(self) -> Any:
        pool = self.pool
        s = pool.stats()
        s["free_blocks"] = dict(s["free_blocks"])
        return s, pool.counters(), len(pool)

    # ---- operations -----------------------------------------------------

    def size_object(self, pool) -> Tuple[Any, Any]:
        """A size argument and what it means: an int n, or an exception
        class the call must raise ("closes" for Closes)."""
        inp, cap = self.inp, self.model.capacity
        k = inp.below(24)
        if k < 6:
            n = inp.below(min(cap, 4096) + 1)
        elif k < 8:
            n = block_size_for(inp.below(cap + 1), 1) + inp.pick([-1, 0, 1])
            n = max(n, 0)
        elif k < 10:
            n = inp.below(4 * cap + 1)
        else:
            n = inp.below(256)
        if k == 10:
            return inp.pick([2**63, 2**64 - 1, 2**64, 2**100, cap + 1]), int
        if k == 11:
            return -(1 + inp.below(2**16)), ValueError
        if k == 12:
            return inp.pick([True, False, np.bool_(True), np.bool_(False)]), TypeError
        if k == 13:
            return inp.pick([1.0, "16", None, [16], b"16", 16j]), TypeError
        if k == 14:
            return numpy_int(n), int
        if k == 15:
            return np.uint64(inp.pick([2**64 - 1, 2**63])), int
        if k == 16:
            return FalsyInt(n), "falsy"
        if k == 17:
            return LyingInt(n), "falsy"
        if k == 18:
            return IndexOnly(n), int
        if k == 19:
            return BoolRaises(n), "bool-raises"
        if k == 20:
            return IndexRaises(), LookupError
        if k == 21:
            return Drifting(n, inp.below(4 * cap + 1)), int
        if k == 22:
            return Closes(pool, n), "closes"
        if k == 23 and not KNOWN_BUGS_UNFIXED:
            return ReInits(pool, inp.below(MAX_ARENA) + 1, n), "reinit"
        return n, int

    def op_alloc(self) -> None:
        """alloc / try_alloc / calloc with an input-chosen size object."""
        pool, inp = self.pool, self.inp
        if pool is None:
            return self.new_pool()
        method = inp.pick(["alloc", "try_alloc", "calloc"])
        size, meaning = self.size_object(pool)
        if meaning == "reinit":
            return self.alloc_reinit(method, size)
        if KNOWN_BUGS_UNFIXED and method == "calloc" and meaning in ("falsy", "bool-raises"):
            method = "alloc"  # known bug 1: calloc asks bool(size)
        n = operator_index(size)
        self.trace.append(f"{method}({type(size).__name__} {n})")
        fn = getattr(pool, method)
        before = self.snapshot()
        if self.closed or meaning == "closes":
            allowed: Tuple[type, ...] = (ValueError, TypeError)
            if isinstance(meaning, type) and meaning is not int:
                allowed += (meaning,)  # the conversion may come first
            exc = self.call_raises(fn, size, allowed)
            expect(meaning != "closes" or isinstance(exc, ValueError),
                   f"a size that closes the allocator gave {exc!r}")
            self.closed = True
            return self.unchanged(before)
        if isinstance(meaning, type) and meaning is not int:
            self.call_raises(fn, size, meaning)
            return self.unchanged(before)
        model = self.model
        want = model.alloc(n)
        try:
            v = fn(size)
        except RuntimeError:
            expect(meaning == "bool-raises", f"{method}({n}) raised RuntimeError")
            if want is not None:
                model.release(want)
            return self.unchanged(before)
        except MemoryError as e:
            msg = str(e)
            if want is None and method != "try_alloc":
                expect(isinstance(e, OutOfMemory), f"{method}({n}): {e!r}")
                expect(mentions(msg, n), f"OutOfMemory message lacks {n}: {msg}")
                self.counts[2] += 1
                return self.unchanged(before, failed=1)
            if want is not None and self.armed and "largest free" not in msg:
                model.release(want)
                return self.bookkeeping_failed(before)
            raise FuzzFailure(f"{method}({n}) raised {e!r}; model: {want}") from e
        if v is None:
            expect(method == "try_alloc", f"{method}({n}) returned None")
            if want is None:
                self.counts[2] += 1
                return self.unchanged(before, failed=1)
            model.release(want)
            expect(self.armed, f"try_alloc({n}) gave None; model places it at {want}")
            return self.bookkeeping_failed(before)
        expect(want is not None, f"{method}({n}) succeeded; the model has no room")
        expect(isinstance(v, memoryview), f"{method} returned {type(v).__name__}")
        expect(len(v) == n and v.format == "B" and v.ndim == 1 and not v.readonly,
               f"{method}({n}) gave a view of {len(v)} bytes, format {v.format}")
        off = pool.offset_of(v)
        expect(off == want, f"{method}({n}) placed at {off}, model says {want}")
        if method == "calloc":
            expect(v.tobytes() == bytes(n), f"calloc({n}) at {off} is not zeroed")
        self.counts[0] += 1
        self.tag += 1
        v[:] = pattern(self.tag, n)
        self.live[off] = Rec(v, off, n, self.tag)

    def bookkeeping_failed(self, before) -> None:
        """The armed table-growth hook fired: one failed_allocs, nothing else."""
        self.armed = False
        self.counts[2] += 1
        self.unchanged(before, failed=1)

    def alloc_reinit(self, method: str, size: "ReInits") -> None:
        """Known bug 7: __index__ re-runs __init__.  The result must be an
        error or a view of exactly n bytes that the new allocator frees."""
        pool = self.pool
        self.zombies.extend(self.live.values())
        self.live = {}
        self.trace.append(f"{method}(ReInits {size.n})")
        try:
            v = getattr(pool, method)(size)
        except (ValueError, MemoryError):
            v = None
        if v is not None:
            expect(len(v) == size.n, f"re-init: view of {len(v)} != {size.n}")
            try:
                pool.free(v)
            except ValueError as e:
                raise FuzzFailure(f"re-init: the new view cannot be freed: {e}")
        pool.check()
        expect(len(pool) == 0, "re-init left a live block")
        self.new_pool()  # the model of the re-made allocator is unknown

    def call_raises(self, fn, arg, exc_types) -> BaseException:
        """fn(arg) must raise one of exc_types, with no cffi-internal
        message; returns the exception."""
        try:
            r = fn(arg)
        except exc_types as e:
            msg = str(e)
            expect(not re.search(r"ctype|cdata|initializer for", msg),
                   f"{fn.__name__}: cffi message {msg!r}")
            if KNOWN_BUGS_UNFIXED:
                # Known bug 2: the refused call's frames still hold cffi's
                # from_buffer object over arg; in the reference cycle this
                # frame makes with e, a memoryview arg crashes CPython
                # < 3.12.7 when the GC collects it (gh-77894).  Drop them.
                e.__traceback__ = None
            return e
        except Exception as e:
            raise FuzzFailure(f"{fn.__name__}({arg!r:.60}) raised {e!r}, "
                              f"expected {exc_types}") from e
        raise FuzzFailure(f"{fn.__name__}({arg!r:.60}) returned {r!r:.60}, "
                          f"expected {exc_types}")

    def unchanged(self, before, failed: int = 0) -> None:
        s, c, n = self.snapshot()
        s0, c0, n0 = before
        c0 = dict(c0)
        c0["failed_allocs"] += failed
        expect((s, c, n) == (s0, c0, n0), f"a refused call changed {s0} -> {s}, "
               f"{c0} -> {c}")

    def pick_live(self) -> Optional[Rec]:
        if not self.live:
            return None
        offs = sorted(self.live)
        return self.live[offs[self.inp.below(len(offs))]]

    def op_free_live(self) -> None:
        """Free a live block by its view, numpy.frombuffer(view) or another
        buffer over exactly its bytes."""
        rec = self.pick_live()
        if rec is None or self.pool is None:
            return self.op_alloc()
        how = self.inp.below(4)
        if how == 1 and rec.size:
            obj: Any = np.frombuffer(rec.view, dtype=np.uint8)
        elif how == 2 and rec.size:
            obj = memoryview(rec.view).cast("B")
        elif how == 3 and rec.size and self.arena_view is not None:
            obj = self.arena_view(rec.off, rec.off + rec.size)
        else:
            obj = rec.view
        self.free_expecting(obj, (rec.off, rec.size, obj), self.inp.byte() & 1)

    def op_free_other(self) -> None:
        """Free (or offset_of) something that is usually not a live block."""
        if self.pool is None:
            return self.new_pool()
        obj, where = self.candidate()
        if obj is None:
            return
        self.free_expecting(obj, where, self.inp.byte() & 1)

    def op_offset_of(self) -> None:
        if self.pool is None:
            return self.new_pool()
        obj, where = self.candidate()
        if obj is None:
            return
        self.free_expecting(obj, where, True)

    def candidate(self) -> Tuple[Any, Where]:
        """A buffer (or not) and where it is in this arena, if anywhere."""
        inp = self.inp
        k = inp.below(10)
        rec = self.pick_live()
        if k <= 2 and rec is not None:  # a slice of a live view
            a = inp.below(rec.size + 1)
            b = a + inp.below(rec.size - a + 1)
            if inp.byte() & 1 and rec.size:
                obj = np.frombuffer(rec.view, dtype=np.uint8)[a:b]
                if b == a:
                    return None, None  # numpy's empty slices point anywhere
            else:
                obj = rec.view[a:b]
            return obj, (rec.off + a, b - a, obj)
        if k == 3 and self.stale:  # a freed view: double free or reused
            old = inp.pick(self.stale)
            return old.view, (old.off, old.size, old.view)
        if k == 4 and self.arena_view is not None:  # an arena slice
            cap = self.model.capacity
            a = inp.below(cap + 1)
            b = a + inp.below(min(cap - a, 4096) + 1)
            obj = self.arena_view(a, b)
            return obj, (a, b - a, obj)
        if k == 5:  # foreign buffers
            n = inp.below(4096)
            obj = inp.pick([
                lambda: bytearray(n), lambda: bytes(n), lambda: np.zeros(n, "u1"),
                lambda: array.array("B", bytes(n)), lambda: mmap.mmap(-1, n + 1),
                lambda: memoryview(bytearray(n + 32))[16 : 16 + n],
            ])()
            return obj, None
        if k == 6 and self.zombies:  # a view of a dead allocator
            return inp.pick(self.zombies).view, None
        if k == 7:  # not a buffer at all
            return inp.pick([None, 123, "abc", [1, 2], 1.5, object()]), TypeError
        if k == 8:  # a released view
            if rec is not None:
                m = memoryview(rec.view)
                m.release()
                return m, ValueError
        if k == 9 and rec is not None and rec.size:  # a proper prefix
            return self.sub_where(rec)
        return None, None

    def sub_where(self, rec: Rec) -> Tuple[Any, Where]:
        """A prefix of a live view (never the whole of it)."""
        n = self.inp.below(rec.size)
        obj = rec.view[:n]
        return obj, (rec.off, n, obj)

    def expected_block(self, where: Where) -> Optional[Rec]:
        """The live block a buffer at ``where`` denotes, or None."""
        off, length, obj = where
        rec = self.live.get(off)
        if rec is None or rec.size != length:
            return None
        if length == 0 and obj is not rec.view:
            return None  # only the view alloc(0) returned frees it
        return rec

    def known_bug_3(self, where: Where) -> bool:
        """An empty buffer, not the view alloc(0) returned, at the start of
        a live zero-size block: known bug 3 frees (locates) that block."""
        off, length, obj = where
        rec = self.live.get(off)
        return length == 0 and rec is not None and rec.size == 0 and obj is not rec.view

    def free_expecting(self, obj: Any, where: Any, locate: bool) -> None:
        """free(obj) (or offset_of) and check the outcome against the model."""
        pool = self.pool
        fn = pool.offset_of if locate else pool.free
        self.trace.append(f"{fn.__name__}({type(obj).__name__} at {where!r:.50})")
        if isinstance(where, tuple) and KNOWN_BUGS_UNFIXED and self.known_bug_3(where):
            return
        before = self.snapshot()
        if where is TypeError:
            self.call_raises(fn, obj, (TypeError, ValueError) if self.closed else TypeError)
            return self.unchanged(before)
        rec = None if where in (None, ValueError) or self.closed else self.expected_block(where)
        if rec is None:
            exc = self.call_raises(fn, obj, ValueError)
            self.unchanged(before)
            if not KNOWN_BUGS_UNFIXED:  # known bug 2: the traceback pins obj
                self.assert_not_exported(obj)
                # Keep it, in a reference cycle, for the GC at the end of the
                # input: with bug 2 that crashes CPython < 3.12.7 (gh-77894).
                self.kept.append(exc)
            return
        expect(rec.intact(), f"block at {rec.off} changed before free")
        result = fn(obj)
        if locate:
            expect(result == rec.off, f"offset_of gave {result}, block at {rec.off}")
            return
        expect(result is None, f"free returned {result!r}")
        del self.live[rec.off]
        self.model.release(rec.off)
        self.counts[1] += 1
        self.stale.append(rec)
        del self.stale[:-32]

    @staticmethod
    def assert_not_exported(obj: Any) -> None:
        """After a refused call, the caller's buffer is not exported."""
        if isinstance(obj, bytearray):
            obj.append(0)
            obj.pop()
        elif isinstance(obj, mmap.mmap):
            obj.close()
        elif isinstance(obj, array.array):
            obj.append(0)
            obj.pop()

    def op_write(self) -> None:
        """Rewrite a live block through the view, a slice or numpy."""
        rec = self.pick_live()
        if rec is None:
            return
        self.tag += 1
        data = pattern(self.tag, rec.size)
        if self.inp.byte() & 1 and rec.size:
            np.frombuffer(rec.view, dtype=np.uint8)[:] = np.frombuffer(data, np.uint8)
        else:
            rec.view[:] = data
        rec.tag = self.tag

    def op_close(self) -> None:
        """close() (or leave a with-block); then every call is refused and
        the statistics stay frozen."""
        pool = self.pool
        if pool is None:
            return self.new_pool()
        self.trace.append("close")
        if self.inp.byte() & 1:
            with pool as p:
                expect(p is pool, "__enter__ did not return the allocator")
        else:
            pool.close()
        pool.close()  # idempotent
        self.closed = True
        expect(pool.closed, "closed is False after close()")
        before = self.snapshot()
        for method in ("alloc", "try_alloc", "calloc"):
            self.call_raises(getattr(pool, method), 16, ValueError)
        if self.live:
            self.call_raises(pool.free, self.pick_live().view, ValueError)
        self.unchanged(before)

    def op_new_pool(self) -> None:
        """Drop the allocator, sometimes without closing, while its views
        live on; touch them; make a new one."""
        self.trace.append("drop")
        if self.pool is not None and self.inp.byte() & 1:
            self.pool.close()
        self.new_pool()
        self.op_touch_zombies()

    def op_touch_zombies(self) -> None:
        """Write and read back views of dead allocators (memory safety)."""
        if not self.zombies:
            return
        rec = self.inp.pick(self.zombies)
        self.tag += 1
        rec.view[:] = pattern(self.tag, rec.size)
        rec.tag = self.tag
        expect(rec.intact(), "a dead allocator's view does not keep a write")

    def op_misc(self) -> None:
        """repr, block_size and the properties."""
        pool = self.pool
        if pool is None:
            return self.new_pool()
        r = repr(pool)
        expect(isinstance(r, str) and ("closed" in r) == self.closed, f"repr {r}")
        n = self.inp.below(2 * self.model.capacity + 2)
        bs = block_size_for(n, self.model.m)
        got = pool.block_size(n)
        expect(got == (bs if bs <= self.model.capacity else 0),
               f"block_size({n}) = {got}")

    def op_never_created(self) -> None:
        """An allocator whose __init__ never ran: clear errors, no crash."""
        f = Forgetful()
        for name in ("stats", "counters", "check"):
            try:
                getattr(f, name)()
            except ValueError as e:
                expect("created" in str(e), f"never-created {name}: {e}")
            else:
                raise FuzzFailure(f"never-created {name}() did not raise")
        expect(len(f) == 0 and f.bytes_free == 0, "never-created statistics")
        repr(f)
        f.close()
        if not KNOWN_BUGS_UNFIXED:  # known bug 6: cffi's messages
            for name, arg in (("alloc", 16), ("try_alloc", 16), ("calloc", 0),
                              ("free", bytearray(16)), ("offset_of", bytearray(1))):
                e = self.call_raises(getattr(f, name), arg, ValueError)
                expect("created" in str(e), f"never-created {name}: {e}")

    def op_arm_hook(self) -> None:
        """Make the next size-table growth fail (known bug 4's hook, if the
        binding has it)."""
        pool = self.pool
        hook = getattr(pool, "_debug_fail_next_table_growth", None)
        if hook is None or self.closed or KNOWN_BUGS_UNFIXED:
            return
        hook()
        self.armed = True


def operator_index(size: Any) -> int:
    """What the size object converts to for the model (first conversion)."""
    if isinstance(size, Drifting):
        return size.first
    if isinstance(size, (bool, np.bool_)) or not hasattr(type(size), "__index__"):
        return 0
    if isinstance(size, IndexRaises):
        return 0
    if isinstance(size, IndexOnly):
        return size.n
    return int(size)


def TestOneInput(data: bytes) -> None:
    """The fuzz target: run one input's program; raise on any violation."""
    global EXECUTIONS
    EXECUTIONS += 1
    h = Harness(Input(data))
    try:
        h.run()
        if h.kept:
            # The refused calls' exceptions (each in a cycle with its
            # traceback) become garbage now; collecting them must not crash.
            h.kept = []
            gc.collect()
    except BaseException:
        sys.stderr.write("trace of the failing input (last 30 steps):\n  "
                         + "\n  ".join(h.trace[-30:]) + "\n")
        raise


# --------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------


def _print_executions(start: float) -> None:
    print(f"fuzz_api: {EXECUTIONS} executions in {time.time() - start:.1f} s",
          flush=True)


def replay(n: int, seed: int, first: int = 0) -> None:
    """Run inputs first .. n-1 of a seed's pseudo-random sequence (the same
    inputs on every run; --start bisects a crash that kills the process)."""
    import random

    faulthandler.enable()
    start = time.time()
    for i in range(first, n):
        rng = random.Random(seed * 1_000_003 + i)
        data = rng.randbytes(rng.randrange(1, 1200))
        try:
            TestOneInput(data)
        except BaseException:
            path = f"fuzz_api-replay-seed{seed}-input{i}.bin"
            with open(path, "wb") as f:
                f.write(data)
            sys.stderr.write(f"input {i} of seed {seed} failed; saved as {path}\n")
            _print_executions(start)
            raise
    _print_executions(start)


def main(argv: List[str]) -> None:
    start = time.time()
    if "--replay" in argv:
        i = argv.index("--replay")
        n = int(argv[i + 1])
        seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 0
        first = int(argv[argv.index("--start") + 1]) if "--start" in argv else 0
        return replay(n, seed, first)
    if "--file" in argv:
        for path in argv[argv.index("--file") + 1 :]:
            with open(path, "rb") as f:
                TestOneInput(f.read())
        return _print_executions(start)
    if atheris is None:
        sys.exit("atheris is not installed: pip install atheris, "
                 "or run with --replay N")
    # libFuzzer ends the process with exit() and never returns to Python, so
    # Python's atexit handlers do not run: register the count with the C
    # library's instead.
    cb = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _: _print_executions(start))
    main.keep_alive = cb  # type: ignore[attr-defined]
    ctypes.CDLL(None).__cxa_atexit(cb, None, None)
    # The harness's own branches (which operation, which outcome) guide the
    # fuzzer too, not only the binding's.
    for name, fn in list(vars(Harness).items()):
        if isinstance(fn, types.FunctionType):
            setattr(Harness, name, atheris.instrument_func(fn))
    atheris.Setup(argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)

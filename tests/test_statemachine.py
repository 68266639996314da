"""Randomised operation traces against a pure-Python model (Hypothesis).

The model (conftest.BuddyModel) predicts every offset, every statistic and
the free-block counts; every block carries its own fill pattern, checked at
free and after every step; the C invariant checker runs after every step;
wrong frees of every kind must raise ValueError and change nothing.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from alloc import BuddyAllocator, OffsetAllocator, OutOfMemory
from conftest import BuddyModel, addr, block_size_for, buffer_at, pattern, snapshot, without

# (arena kind, size, min_size): capacities 4096, 4096, 4096, 2992, 3008,
# 1000 and 112 — powers of two and not, min_size 1, 16 and 64.
CONFIGS = [
    ("int", 4096, 16),
    ("int", 4096, 1),
    ("bytearray", 4096, 16),
    ("bytearray", 3000, 16),
    ("int", 3000, 64),
    ("bytearray", 1000, 1),
    ("int", 100, 16),
]

# Where a bytearray arena starts, modulo BASE_SPAN (more than any align
# drawn): fixed, so that what align= can do does not depend on where
# malloc put the bytearray (Hypothesis replays must behave the same).
# 4096: every align up to the arena's size is met by a whole block;
# 32: a block of 32 bytes or less is searched for at the right offsets,
# larger ones are refused (ValueError); 1: an odd address.
BASE_SPAN = 16384
BASE_RESIDUE = {("bytearray", 4096, 16): 4096, ("bytearray", 3000, 16): 32,
                ("bytearray", 1000, 1): 1, ("bytearray", 480, 16): 64}

EDGES = sorted({0, 1, 2, 3} | {x + d for x in (16, 32, 64, 128, 256, 512, 1024, 2048, 4096) for d in (-1, 0, 1)} | {3000, 8192})
SIZES = st.one_of(
    st.integers(0, 40),
    st.integers(0, 1200),
    st.sampled_from(EDGES),
)

# align= values: below, at and above min_size, up to twice the largest arena.
ALIGNS = st.sampled_from([1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 2048, 4096, 8192])

FREE_FORMS = ["view", "numpy", "memoryview", "slice", "arena", "address"]
WRONG_FREES = [
    "double",
    "interior",
    "short",
    "empty-prefix",
    "long",
    "shift-up",
    "shift-down",
    "foreign",
    "foreign-copy",
]

MAX_DEAD = 16


class AllocatorMachine(RuleBasedStateMachine):
    guard = False

    def __init__(self, cfg):
        super().__init__()
        kind, n, m = cfg
        if kind == "int":
            self.arena = None
            self.a = self.make_int_arena(n, m)
            capacity = -(-n // m) * m
        else:
            # garbage in the arena before use (o1heap's habit)
            self.raw = bytearray(os.urandom(n + BASE_SPAN))
            skip = (BASE_RESIDUE[cfg] - addr(self.raw)) % BASE_SPAN
            self.arena = memoryview(self.raw)[skip : skip + n]
            self.a = BuddyAllocator(self.arena, min_size=m, guard=self.guard)
            capacity = n // m * m
        assert self.a.bytes_total == capacity
        assert self.a.min_size == m
        self.m = m
        self.model = BuddyModel(capacity, m)
        # How far the arena's address is known: an int arena's is aligned to
        # the largest power of two <= its capacity (at least 64), beyond
        # that it is wherever mmap put it, and whether an align larger than
        # that can be met depends on it.
        self.known_align = (max(64, 1 << (capacity.bit_length() - 1))
                            if self.arena is None else BASE_SPAN)
        # the arena's address, from a probe block at offset 0
        probe = self.a.alloc(self.a.largest_free)
        assert self.a.offset_of(probe) == 0
        self.base = addr(probe)
        if self.arena is not None:
            assert self.base == addr(self.arena)
        self.a.free(probe)
        del probe
        self.alloc_calls = 1  # the probe
        self.free_calls = 1
        self.failed_allocs = 0
        self.blocks = {}  # offset -> (view, tag)
        self.dead = []  # (view, offset, size) of freed blocks
        self.next_tag = 1

    def make_int_arena(self, n, m):
        """The allocator of an "int" config (a subclass tests another kind)."""
        return BuddyAllocator(n, min_size=m, guard=self.guard)

    def teardown(self):
        self.a.close()

    # -- helpers ---------------------------------------------------------------

    def region(self, off: int, length: int):
        """A buffer over arena bytes [off, off + length) (never touched)."""
        if self.arena is not None and 0 <= off and off + length <= len(self.arena):
            return memoryview(self.arena)[off : off + length]
        return buffer_at(self.base + off, length)

    def expect_refused(self, arg):
        before = snapshot(self.a)
        with pytest.raises(ValueError):
            self.a.free(arg)
        with pytest.raises(ValueError):
            self.a.offset_of(arg)
        assert snapshot(self.a) == before

    # -- rules -----------------------------------------------------------------

    @rule(size=SIZES, how=st.sampled_from(["alloc", "try_alloc", "calloc"]))
    def allocate(self, size, how):
        self.check_alloc(self.model.alloc(size), size, how)

    @rule(size=SIZES, align=ALIGNS, how=st.sampled_from(["alloc", "try_alloc", "calloc"]))
    def allocate_aligned(self, size, align, how):
        if align > self.known_align:
            return  # met or not depending on the address (test_align.py)
        base = self.base
        if base % align == 0:
            expected = self.model.alloc_aligned(size, align)
        else:
            base_align = base & -base
            if block_size_for(size, self.m) > base_align:
                # no block of this size can start at such an address
                before = snapshot(self.a)
                with pytest.raises(ValueError):
                    getattr(self.a, how)(size, align=align)
                assert snapshot(self.a) == before
                return
            expected = self.model.alloc_congruent(size, align, -base % align)
        v = self.check_alloc(expected, size, how, align)
        if v is not None and size:
            assert addr(v) % align == 0

    def check_alloc(self, expected, size, how, align=None):
        """Call how(size, align=align), expecting the block at `expected`
        (None: refused, nothing changed but failed_allocs); record it."""
        if expected is None:
            before = snapshot(self.a)
            if how == "try_alloc":
                assert self.a.try_alloc(size, align=align) is None
            else:
                with pytest.raises(OutOfMemory):
                    getattr(self.a, how)(size, align=align)
            self.failed_allocs += 1
            assert without(snapshot(self.a), "failed_allocs") == without(before, "failed_allocs")
            return None
        v = getattr(self.a, how)(size, align=align)
        assert isinstance(v, memoryview)
        assert len(v) == size and not v.readonly and v.format == "B"
        assert self.a.offset_of(v) == expected
        if size:
            assert addr(v) == self.base + expected
        if how == "calloc":
            assert v.tobytes() == bytes(size)
        self.remember(expected, v)
        self.alloc_calls += 1
        return v

    def remember(self, off, v):
        """Fill a new block with its own pattern and keep it."""
        tag = self.next_tag
        self.next_tag += 1
        v[:] = pattern(tag, len(v))
        self.blocks[off] = (v, tag)

    def resize_candidates(self, upper):
        """Live offsets to resize; with `upper`, the upper halves among them
        if any (they never grow in place: the rule most worth testing)."""
        live = sorted(self.model.live)
        if upper:
            halves = [o for o in live if o % (2 * self.model.block_of(o))]
            return halves or live
        return live

    @precondition(lambda self: self.blocks)
    @rule(data=st.data(), size=SIZES, form=st.sampled_from(["view", "numpy"]),
          near=st.booleans(), upper=st.booleans())
    def resize(self, data, size, form, near, upper):
        off = data.draw(st.sampled_from(self.resize_candidates(upper)), label="offset")
        if near:  # up to twice the block: growth that may happen in place
            size = data.draw(st.integers(0, 2 * self.model.block_of(off)), label="near")
        v, tag = self.blocks[off]
        old = len(v)
        arg = np.frombuffer(v, np.uint8) if form == "numpy" and old else v
        before = snapshot(self.a)
        expected = self.model.resize(off, size)
        if expected is None:
            with pytest.raises(OutOfMemory):
                self.a.realloc(arg, size)
            self.failed_allocs += 1
            assert without(snapshot(self.a), "failed_allocs") == without(before, "failed_allocs")
            assert self.a.offset_of(v) == off
            return
        w = self.a.realloc(arg, size)
        del arg
        assert isinstance(w, memoryview) and len(w) == size and not w.readonly
        assert self.a.offset_of(w) == expected
        if size:
            assert addr(w) == self.base + expected
        keep = min(old, size)
        assert w[:keep].tobytes() == pattern(tag, old)[:keep], "contents lost"
        if expected != off:  # moved: an alloc and a free
            self.alloc_calls += 1
            self.free_calls += 1
        del self.blocks[off]
        self.remember(expected, w)
        self.dead.append((v, off, old))
        del self.dead[:-MAX_DEAD]

    @rule(data=st.data())
    def look_up(self, data):
        if self.blocks and data.draw(st.booleans(), label="live"):
            off = data.draw(st.sampled_from(sorted(self.blocks)), label="offset")
            v, tag = self.blocks[off]
            w = self.a.block_at(off)
            if len(v) == 0:
                assert w is v
            else:
                assert len(w) == len(v) and addr(w) == addr(v)
                assert w.tobytes() == pattern(tag, len(v))
            return
        off = data.draw(st.integers(0, self.model.capacity + 64), label="offset")
        if off in self.model.live:
            return
        before = snapshot(self.a)
        with pytest.raises(ValueError):
            self.a.block_at(off)
        with pytest.raises(ValueError):
            self.a.free_at(off)
        assert snapshot(self.a) == before

    @precondition(lambda self: self.blocks)
    @rule(data=st.data())
    def free_at(self, data):
        off = data.draw(st.sampled_from(sorted(self.blocks)), label="offset")
        v, tag = self.blocks.pop(off)
        assert v.tobytes() == pattern(tag, len(v)), "block clobbered before free"
        self.a.free_at(off)
        self.model.release(off)
        self.free_calls += 1
        self.dead.append((v, off, len(v)))
        del self.dead[:-MAX_DEAD]

    @precondition(lambda self: self.blocks)
    @rule(data=st.data(), form=st.sampled_from(FREE_FORMS))
    def free(self, data, form):
        off = data.draw(st.sampled_from(sorted(self.blocks)), label="offset")
        v, tag = self.blocks[off]
        size = len(v)
        assert v.tobytes() == pattern(tag, size), "block clobbered before free"
        if size == 0:
            arg = v  # API.md: only alloc(0)'s own view frees a zero-size block
        elif form == "numpy":
            arg = np.frombuffer(v, np.uint8)
        elif form == "memoryview":
            arg = memoryview(v)
        elif form == "slice":
            arg = v[:]
        elif form == "arena" and self.arena is not None:
            arg = memoryview(self.arena)[off : off + size]
        elif form == "address" and size:
            arg = buffer_at(self.base + off, size)
        else:
            arg = v
        self.a.free(arg)
        del self.blocks[off]
        self.model.release(off)
        self.free_calls += 1
        self.dead.append((v, off, size))
        del self.dead[:-MAX_DEAD]

    @rule(data=st.data(), kind=st.sampled_from(WRONG_FREES))
    def wrong_free(self, data, kind):
        if kind == "double":
            if not self.dead:
                return
            i = data.draw(st.integers(0, len(self.dead) - 1), label="dead")
            v, off, length = self.dead[i]
            arg = v
        else:
            if not self.blocks:
                return
            off0 = data.draw(st.sampled_from(sorted(self.blocks)), label="offset")
            v, _ = self.blocks[off0]
            size = len(v)
            if kind == "interior":
                if size < 2:
                    return
                off, length, arg = off0 + 1, size - 1, v[1:]
            elif kind == "short":
                if size < 1:
                    return
                off, length, arg = off0, size - 1, v[:-1]
            elif kind == "empty-prefix":
                if size < 1:
                    return
                off, length, arg = off0, 0, v[:0]
            elif kind == "long":
                off, length = off0, size + 1
                arg = self.region(off, length)
            elif kind in ("shift-up", "shift-down"):
                if size < 1:
                    return
                off = off0 + (self.m if kind == "shift-up" else -self.m)
                length = size
                arg = self.region(off, length)
            elif kind == "foreign":
                off, length, arg = None, size, bytearray(size)
            else:  # foreign-copy: same bytes, other memory
                off, length, arg = None, size, bytearray(v)
        if off is not None and self.model.is_live(off, length):
            return  # that would be a legitimate free
        self.expect_refused(arg)

    # -- invariants ------------------------------------------------------------

    @invariant()
    def core_is_consistent(self):
        assert self.a.check() is None

    @invariant()
    def statistics_match_model(self):
        s = self.a.stats()
        model = self.model
        assert s["bytes_total"] == model.capacity
        assert s["bytes_allocated"] == model.bytes_allocated == self.a.bytes_allocated
        assert s["bytes_wasted"] == model.bytes_wasted == self.a.bytes_wasted
        assert s["bytes_free"] == model.bytes_free == self.a.bytes_free
        assert s["largest_free"] == model.largest_free == self.a.largest_free
        assert s["live_blocks"] == len(model.live) == len(self.a)
        assert s["free_blocks"] == model.free_blocks

    @invariant()
    def walk_matches_model(self):
        assert list(self.a.blocks()) == self.model.walk()

    @invariant()
    def blocks_disjoint_and_intact(self):
        spans = []
        for off, (v, tag) in self.blocks.items():
            assert self.a.offset_of(v) == off
            bs = self.model.block_of(off)
            assert bs >= self.a.block_size(len(v))
            assert off % bs == 0
            spans.append((off, off + bs))
            assert v.tobytes() == pattern(tag, len(v))
            if self.arena is not None:
                assert self.arena[off : off + len(v)] == pattern(tag, len(v))
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert end <= start, "two live blocks overlap"
        if spans:
            assert spans[-1][1] <= self.model.capacity


class CountingMachine(AllocatorMachine):
    """The same traces, also checking the history counters of stats()
    (kept apart so that a missing counter does not hide everything else)."""

    @invariant()
    def counters_match_model(self):
        s = self.a.counters()
        assert s["alloc_calls"] == self.alloc_calls
        assert s["free_calls"] == self.free_calls
        assert s["failed_allocs"] == self.failed_allocs


class GuardMachine(CountingMachine):
    """The same traces in guard mode: no false alarm, the same placement
    and figures, and every free byte holds the pattern after every step."""

    guard = True

    @invariant()
    def free_bytes_hold_the_pattern(self):
        if self.arena is None:
            return  # check() (core_is_consistent) scans them too
        live = [(off, off + self.model.block_of(off)) for off in self.model.live]
        arena = bytes(self.arena[: self.model.capacity])
        pos = 0
        for start, end in sorted(live) + [(self.model.capacity, self.model.capacity)]:
            assert arena[pos:start] == b"\xdb" * (start - pos)
            pos = end


@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[3], CONFIGS[5]],
                         ids=["int-4096-16", "bytearray-3000-16", "bytearray-1000-1"])
def test_random_traces_in_guard_mode(cfg):
    run_state_machine_as_test(
        lambda: GuardMachine(cfg),
        settings=settings(max_examples=15, stateful_step_count=50),
    )


@pytest.mark.parametrize("cfg", CONFIGS, ids=["-".join(map(str, c)) for c in CONFIGS])
def test_random_traces_agree_with_model(cfg):
    run_state_machine_as_test(
        lambda: AllocatorMachine(cfg),
        settings=settings(max_examples=30, stateful_step_count=50),
    )


@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[3]], ids=["int-4096-16", "bytearray-3000-16"])
def test_random_traces_counters(cfg):
    run_state_machine_as_test(
        lambda: CountingMachine(cfg),
        settings=settings(max_examples=15, stateful_step_count=50),
    )


# ---- OffsetAllocator, against the same model --------------------------------

OFFSET_CONFIGS = [(4096, 16), (3000, 16), (1000, 1), (1 << 20, 64)]
WRONG_OFFSETS = ["double", "interior", "misaligned", "past", "far", "negative"]


class OffsetMachine(RuleBasedStateMachine):
    """OffsetAllocator driven by the model: every offset, figure, counter
    and the walk of blocks() predicted; wrong offsets change nothing."""

    def __init__(self, cfg):
        super().__init__()
        n, m = cfg
        self.a = OffsetAllocator(n, min_size=m)
        capacity = n // m * m
        assert self.a.bytes_total == capacity
        self.m = m
        self.model = BuddyModel(capacity, m)
        self.dead = []
        self.counts = {"alloc_calls": 0, "free_calls": 0, "failed_allocs": 0}

    def teardown(self):
        self.a.close()

    def refused(self, call):
        before = snapshot(self.a)
        with pytest.raises(OutOfMemory):
            call()
        self.counts["failed_allocs"] += 1
        assert without(snapshot(self.a), "failed_allocs") == without(before, "failed_allocs")

    @rule(size=SIZES, align=st.one_of(st.none(), ALIGNS), strict=st.booleans())
    def allocate(self, size, align, strict):
        if align is None:
            expected = self.model.alloc(size)
        else:
            expected = self.model.alloc_aligned(size, align)
        if expected is None:
            if strict:
                self.refused(lambda: self.a.alloc(size, align=align))
            else:
                self.counts["failed_allocs"] += 1
                assert self.a.try_alloc(size, align=align) is None
            return
        off = self.a.alloc(size, align=align) if strict else self.a.try_alloc(size, align=align)
        assert type(off) is int and off == expected
        if align:
            assert off % align == 0
        assert self.a.size_of(off) == size
        self.counts["alloc_calls"] += 1

    @rule(size=SIZES, count=st.integers(0, 6))
    def allocate_many(self, size, count):
        saved = (dict(self.model.live), {k: set(v) for k, v in self.model.free.items()})
        expected = []
        for _ in range(count):
            off = self.model.alloc(size)
            if off is None:
                self.model.live, self.model.free = saved
                self.refused(lambda: self.a.alloc_many(size, count))
                return
            expected.append(off)
        assert self.a.alloc_many(size, count) == expected
        self.counts["alloc_calls"] += count

    @precondition(lambda self: self.model.live)
    @rule(data=st.data(), many=st.booleans())
    def free(self, data, many):
        offs = sorted(self.model.live)
        chosen = data.draw(st.lists(st.sampled_from(offs), min_size=1, max_size=3, unique=True)
                           if many else st.sampled_from(offs).map(lambda o: [o]), label="offsets")
        if many:
            self.a.free_many(chosen)
        else:
            self.a.free(chosen[0])
        for off in chosen:
            self.model.release(off)
            self.dead.append(off)
        self.counts["free_calls"] += len(chosen)
        del self.dead[:-MAX_DEAD]

    resize_candidates = AllocatorMachine.resize_candidates

    @precondition(lambda self: self.model.live)
    @rule(data=st.data(), size=SIZES, near=st.booleans(), upper=st.booleans())
    def resize(self, data, size, near, upper):
        off = data.draw(st.sampled_from(self.resize_candidates(upper)), label="offset")
        if near:  # up to twice the block: growth that may happen in place
            size = data.draw(st.integers(0, 2 * self.model.block_of(off)), label="near")
        expected = self.model.resize(off, size)
        if expected is None:
            self.refused(lambda: self.a.realloc(off, size))
            return
        assert self.a.realloc(off, size) == expected
        assert self.a.size_of(expected) == size
        if expected != off:
            self.counts["alloc_calls"] += 1
            self.counts["free_calls"] += 1
            self.dead.append(off)

    @rule(data=st.data(), kind=st.sampled_from(WRONG_OFFSETS),
          method=st.sampled_from(["free", "size_of", "realloc", "free_many"]))
    def wrong_offset(self, data, kind, method):
        live = sorted(self.model.live)
        if kind == "double":
            if not self.dead:
                return
            off = data.draw(st.sampled_from(self.dead), label="dead")
        elif kind in ("interior", "misaligned"):
            if not live:
                return
            start = data.draw(st.sampled_from(live), label="offset")
            step = self.m if kind == "interior" else 1
            off = start + step * data.draw(st.integers(1, 64), label="step")
        elif kind == "past":
            off = self.model.capacity + data.draw(st.integers(0, 64), label="past")
        elif kind == "far":
            off = data.draw(st.sampled_from([1 << 40, (1 << 64) - 1, 1 << 64, 1 << 100]))
        else:
            off = -data.draw(st.integers(1, 64), label="negative")
        if off in self.model.live:
            return  # a legitimate call
        before = snapshot(self.a)
        with pytest.raises(ValueError):
            if method == "realloc":
                self.a.realloc(off, 1)
            elif method == "free_many":
                self.a.free_many([off])
            else:
                getattr(self.a, method)(off)
        assert snapshot(self.a) == before

    @invariant()
    def matches_model(self):
        s = self.a.stats()
        model = self.model
        assert s["bytes_allocated"] == model.bytes_allocated == self.a.bytes_allocated
        assert s["bytes_wasted"] == model.bytes_wasted == self.a.bytes_wasted
        assert s["bytes_free"] == model.bytes_free == self.a.bytes_free
        assert s["largest_free"] == model.largest_free == self.a.largest_free
        assert s["live_blocks"] == len(model.live) == len(self.a)
        assert s["free_blocks"] == model.free_blocks
        assert self.a.counters() == self.counts
        assert list(self.a.blocks()) == model.walk()

    @invariant()
    def core_is_consistent(self):
        assert self.a.check() is None


@pytest.mark.parametrize("cfg", OFFSET_CONFIGS, ids=["-".join(map(str, c)) for c in OFFSET_CONFIGS])
def test_offset_allocator_traces_agree_with_model(cfg):
    run_state_machine_as_test(
        lambda: OffsetMachine(cfg),
        settings=settings(max_examples=25, stateful_step_count=50),
    )


@pytest.mark.parametrize("cfg", [("int", 512, 16), ("bytearray", 480, 16)],
                         ids=["int-512-16", "bytearray-480-16"])
def test_random_traces_small_arenas(cfg):
    """Small arenas: blocks collide and split often, so realloc meets upper
    halves, live and free buddies, and refusals in few steps."""
    run_state_machine_as_test(
        lambda: AllocatorMachine(cfg),
        settings=settings(max_examples=40, stateful_step_count=60),
    )

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

from alloc import BuddyAllocator, OutOfMemory
from conftest import BuddyModel, addr, buffer_at, pattern, snapshot, without

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

EDGES = sorted({0, 1, 2, 3} | {x + d for x in (16, 32, 64, 128, 256, 512, 1024, 2048, 4096) for d in (-1, 0, 1)} | {3000, 8192})
SIZES = st.one_of(
    st.integers(0, 40),
    st.integers(0, 1200),
    st.sampled_from(EDGES),
)

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
    def __init__(self, cfg):
        super().__init__()
        kind, n, m = cfg
        if kind == "int":
            self.arena = None
            self.a = self.make_int_arena(n, m)
            capacity = -(-n // m) * m
        else:
            # garbage in the arena before use (o1heap's habit)
            self.arena = bytearray(os.urandom(n))
            self.a = BuddyAllocator(self.arena, min_size=m)
            capacity = n // m * m
        assert self.a.bytes_total == capacity
        assert self.a.min_size == m
        self.m = m
        self.model = BuddyModel(capacity, m)
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
        return BuddyAllocator(n, min_size=m)

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
        expected = self.model.alloc(size)
        if expected is None:
            before = snapshot(self.a)
            if how == "try_alloc":
                assert self.a.try_alloc(size) is None
            else:
                with pytest.raises(OutOfMemory):
                    getattr(self.a, how)(size)
            self.failed_allocs += 1
            assert without(snapshot(self.a), "failed_allocs") == without(before, "failed_allocs")
            return
        v = getattr(self.a, how)(size)
        assert isinstance(v, memoryview)
        assert len(v) == size and not v.readonly and v.format == "B"
        assert self.a.offset_of(v) == expected
        if size:
            assert addr(v) == self.base + expected
        if how == "calloc":
            assert v.tobytes() == bytes(size)
        tag = self.next_tag
        self.next_tag += 1
        v[:] = pattern(tag, size)
        self.blocks[expected] = (v, tag)
        self.alloc_calls += 1

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
    def blocks_disjoint_and_intact(self):
        spans = []
        for off, (v, tag) in self.blocks.items():
            assert self.a.offset_of(v) == off
            bs = self.a.block_size(len(v))
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

"""Shared helpers for the alloc test-suite.

Everything here is plain Python: a reference model of the buddy placement
rule, address helpers, and a parser that finds numbers in messages.  The
tests import the helpers with ``from conftest import ...``.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import os
import re
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _prefer_built_alloc() -> None:
    """Test the alloc that is installed, whichever way it was.

    ``python -m pytest`` puts the current directory first on sys.path, so
    from the checkout ``import alloc`` would find the checkout's alloc/
    even after a non-editable ``pip install .``, when that directory holds
    only sources (or an in-place build for another Python version) and
    cannot be imported.  Then the checkout goes to the end of sys.path:
    the installed alloc wins, and with none installed the checkout's
    alloc still says that its compiled core is missing."""
    pkg = os.path.join(ROOT, "alloc")
    built = any(os.path.exists(os.path.join(pkg, "_buddy" + suffix))
                for suffix in importlib.machinery.EXTENSION_SUFFIXES)
    if built or not os.path.isdir(pkg):
        return
    here = os.path.realpath(ROOT)
    ours = [e for e in sys.path if os.path.realpath(e or os.curdir) == here]
    sys.path[:] = [e for e in sys.path if e not in ours] + ours


_prefer_built_alloc()

# No example database (it would write .hypothesis/ into the repository) and
# no deadlines: the suite makes no timing assertions.
settings.register_profile(
    "alloc",
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("alloc")

# The keys API.md and the extras promise in stats().
STAT_KEYS = (
    "bytes_total",
    "bytes_allocated",
    "bytes_wasted",
    "bytes_free",
    "largest_free",
    "min_size",
    "live_blocks",
    "free_blocks",
    "metadata_bytes",
    # API.md, Extensions, "Observing"
    "peak_bytes_allocated",
    "peak_bytes_in_blocks",
    "peak_live_blocks",
    "orders",
)

# The history counters of counters() (not statistics: they only grow).
COUNTER_KEYS = ("alloc_calls", "free_calls", "failed_allocs")

# The statistics that are also properties.
PROPERTY_KEYS = (
    "bytes_total",
    "bytes_allocated",
    "bytes_wasted",
    "bytes_free",
    "largest_free",
    "min_size",
    "peak_bytes_allocated",
    "peak_bytes_in_blocks",
    "peak_live_blocks",
)


def snapshot(a) -> dict:
    """A deep copy of a.stats() and a.counters(), so it can be compared later."""
    s = a.stats()
    out = dict(s)
    out["free_blocks"] = dict(s["free_blocks"])
    out.update(a.counters())
    return out


def without(d: dict, *keys: str) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def addr(buf) -> int:
    """The address of the first byte of any C-contiguous buffer."""
    if isinstance(buf, np.ndarray):
        return buf.__array_interface__["data"][0]
    return np.frombuffer(buf, dtype=np.uint8).__array_interface__["data"][0]


def buffer_at(address: int, length: int) -> np.ndarray:
    """A writable uint8 numpy array over `length` bytes at `address`.

    Building it touches no memory, so it may describe bytes the test will
    never read (a wrong-free argument, for instance)."""
    assert length > 0
    return np.ctypeslib.as_array((ctypes.c_uint8 * length).from_address(address))


_UNITS: dict = {}  # tag & 0xFF -> the 256-byte unit (all a tag decides)


def pattern(tag: int, size: int) -> bytes:
    """A fill pattern that differs from block to block (and from byte to
    byte, so shifted copies are noticed)."""
    unit = _UNITS.get(tag & 0xFF)
    if unit is None:
        unit = _UNITS[tag & 0xFF] = bytes(((tag * 131 + i * 7 + 1) & 0xFF) for i in range(256))
    return (unit * (size // 256 + 1))[:size]


_GROUPED = re.compile(r"(?<=\d)[,_' ](?=\d{3}\b)")


def numbers_in(msg: str) -> set:
    """Every integer written in msg: plain decimals, decimals grouped with
    ',', '_', "'" or ' ', and powers written 2**k or 2^k."""
    flat = _GROUPED.sub("", msg)
    found = {int(tok) for tok in re.findall(r"\d+", flat)}
    found |= {int(tok) for tok in re.findall(r"\d+", msg)}
    for k in re.findall(r"2\s*(?:\*\*|\^)\s*(\d+)", msg):
        found.add(2 ** int(k))
    return found


def mentions(msg: str, n: int) -> bool:
    return n in numbers_in(msg)


def block_size_for(size: int, min_size: int) -> int:
    """Smallest power of two >= max(size, min_size)."""
    s = max(size, min_size)
    return 1 << (s - 1).bit_length()


class BuddyModel:
    """The placement rule of API.md + the extras, in plain Python.

    A request takes the smallest order that has a free block, the lowest
    offset of that order, and keeps lower halves when splitting; freeing
    merges with a free buddy as far up as possible.  The tree spans 2**L
    minimum blocks, L = ceil(log2(capacity / min_size)); nodes past the
    capacity do not exist.
    """

    def __init__(self, capacity: int, min_size: int):
        assert capacity % min_size == 0 and capacity >= min_size
        self.m = min_size
        self.capacity = capacity
        n = capacity // min_size
        self.L = (n - 1).bit_length()
        self.free = {k: set() for k in range(self.L + 1)}
        off = 0
        for k in range(self.L, -1, -1):
            if off + (min_size << k) <= capacity:
                self.free[k].add(off)
                off += min_size << k
        assert off == capacity
        self.live = {}  # offset -> (requested size, order)

    def order(self, size: int):
        units = -(-max(size, self.m) // self.m)
        return (units - 1).bit_length()

    def alloc(self, size: int, order=None):
        """Offset of the new block, or None when it cannot be placed.
        ``order``: take a block of that order (at least the size's own)."""
        k = self.order(size) if order is None else order
        for j in range(k, self.L + 1):
            if self.free[j]:
                off = min(self.free[j])
                self.free[j].remove(off)
                while j > k:
                    j -= 1
                    self.free[j].add(off + (self.m << j))
                self.live[off] = (size, k)
                return off
        return None

    def alloc_aligned(self, size: int, align: int):
        """alloc(size, align) where the arena's base is a multiple of align:
        a block of max(size's block, align), placed as any other."""
        return self.alloc(size, max(self.order(size), self.order(align)))

    def alloc_congruent(self, size: int, modulus: int, rem: int):
        """alloc(size, align) over a base less aligned than align: the
        size's own block at the lowest offset congruent to rem modulo
        modulus that lies in a free block (split down to it, keeping it)."""
        k = self.order(size)
        block = self.m << k
        assert rem % block == 0 and modulus >= block
        if k > self.L:
            return None
        for off in range(rem, self.capacity, modulus):
            for j in range(k, self.L + 1):
                start = off - off % (self.m << j)
                if start not in self.free[j]:
                    continue
                self.free[j].remove(start)
                while j > k:
                    j -= 1
                    half = self.m << j
                    if off >= start + half:
                        self.free[j].add(start)
                        start += half
                    else:
                        self.free[j].add(start + half)
                assert start == off
                self.live[off] = (size, k)
                return off
        return None

    def resize(self, off: int, new_size: int):
        """realloc of the live block at off: in place (the same offset) when
        shrinking, or growing where off is a multiple of the new block and
        every buddy above up to it is free; else allocate (normal placement)
        and then free the old block.  The new offset, or None (nothing
        changed) when no block fits."""
        size, k = self.live[off]
        k2 = self.order(new_size)
        if k2 <= k:
            for j in range(k - 1, k2 - 1, -1):
                self.free[j].add(off + (self.m << j))
            self.live[off] = (new_size, k2)
            return off
        if k2 <= self.L and off % (self.m << k2) == 0 and all(
                off + (self.m << j) in self.free[j] for j in range(k, k2)):
            for j in range(k, k2):
                self.free[j].remove(off + (self.m << j))
            self.live[off] = (new_size, k2)
            return off
        new = self.alloc(new_size)
        if new is not None:
            self.release(off)
        return new

    def block_of(self, off: int) -> int:
        """The block size of the live block at off."""
        return self.m << self.live[off][1]

    def walk(self) -> list:
        """What blocks() should give: (offset, block size, requested)."""
        return sorted((o, self.m << k, n) for o, (n, k) in self.live.items())

    def is_live(self, off: int, length: int) -> bool:
        return off in self.live and self.live[off][0] == length

    def release(self, off: int) -> None:
        _, k = self.live.pop(off)
        while k < self.L:
            buddy = off ^ (self.m << k)
            if buddy not in self.free[k]:
                break
            self.free[k].remove(buddy)
            off = min(off, buddy)
            k += 1
        self.free[k].add(off)

    # figures ---------------------------------------------------------------
    @property
    def bytes_allocated(self) -> int:
        return sum(s for s, _ in self.live.values())

    @property
    def bytes_in_blocks(self) -> int:
        return sum(self.m << k for _, k in self.live.values())

    @property
    def bytes_wasted(self) -> int:
        return self.bytes_in_blocks - self.bytes_allocated

    @property
    def bytes_free(self) -> int:
        return self.capacity - self.bytes_in_blocks

    @property
    def largest_free(self) -> int:
        orders = [k for k, offs in self.free.items() if offs]
        return (self.m << max(orders)) if orders else 0

    @property
    def free_blocks(self) -> dict:
        return {self.m << k: len(offs) for k, offs in self.free.items()}


@pytest.fixture
def pool():
    """A fresh 4096-byte int-arena allocator with min_size 16, closed after."""
    from alloc import BuddyAllocator

    a = BuddyAllocator(4096, min_size=16)
    yield a
    a.close()

#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_core.c into corpus/core/.

    python3 tests/fuzz/make_seeds.py          (from anywhere)

Each seed is one scenario spelled in the harness's input format (the
comment at the top of fuzz_core.c is the reference; the builders below
mirror it).  The files are committed; rerun this after changing the
format and commit the result.  Output is deterministic.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "core")

# op numbers (op byte % 12)
ALLOC, ALLOC_MANY, FREE_LIVE, FREE, PROBE, FREE_ALL = range(6)
LARGEST, BLOCK_SIZE, METADATA, CLOSE, NEW, FLIP = range(6, 12)


def u16(v):
    return struct.pack("<H", v)


def u64(v):
    return struct.pack("<Q", v % (1 << 64))


# ---- MIN: 2^k for one byte < 0xC0; specials by byte % 8 otherwise -------
def min_pow2(k):
    return bytes([k])


MIN_ZERO, MIN_3, MIN_6, MIN_2_63 = (bytes([0xC0 + i]) for i in range(4))
MIN_RAW = lambda v: bytes([0xC7]) + u64(v)  # noqa: E731


# ---- CAP: kind byte, then its arguments ---------------------------------
def cap_count(s, v):
    """(2^s + v % 2^s) minimum blocks."""
    return bytes([0, s]) + u16(v)


def cap_count_rem(s, v, rem):
    """(2^s + v % 2^s) minimum blocks plus rem % m bytes (rounded down)."""
    return bytes([1, s]) + u16(v) + u64(rem)


def cap_pow2(s):
    return bytes([2, s])


def cap_pow2_plus(s):
    """2^s blocks plus m - 1 bytes."""
    return bytes([3, s])


def cap_raw(v):
    return bytes([4, 0]) + u64(v)


def cap_below_min(s):
    return bytes([5, s])


def cap_max(delta):
    """BUDDY_MAX_CAPACITY + delta (-128 .. 127)."""
    return bytes([6, delta & 0xFF])


def new(min_spec, cap_spec, pool=False, base=0):
    return bytes([(1 if pool else 0) | (base << 1)]) + min_spec + cap_spec


# ---- SIZE ---------------------------------------------------------------
def sz_zero():
    return bytes([0, 0])


def sz_min(which):  # 0: m - 1, 1: m, 2: m + 1
    return bytes([1, which])


def sz_block(k, delta=0):  # m * 2^k, + 1 or - 1
    return bytes([{0: 2, 1: 3, -1: 4}[delta], k])


def sz_in_class(k, frac):  # a size in (C/2, C], C = m * 2^k
    return bytes([5, k, frac])


def sz_cap(which):  # 0: capacity - 1, 1: capacity, 2: capacity + 1
    return bytes([6, which])


def sz_huge(which):  # 2^62, 2^62+1, 2^63, 2^64-1, 2^64-m, 2*capacity
    return bytes([7, which])


def sz_largest(which):  # largest_free, +1, -1, /2 + 1
    return bytes([8, which])


def sz_raw(v):
    return bytes([9, 0]) + u64(v)


# ---- TARGET: offset mode and size mode ----------------------------------
O_START, O_INTERIOR, O_MISALIGNED, O_PAST, O_FREED, O_ALIGNED, O_RAW, \
    O_BELOW, O_ANY = range(9)
S_EXACT, S_SAME_CLASS, S_OTHER_CLASS, S_SIZE, S_PICKED, S_ZERO = range(6)


def target(pick, omode, a=0, smode=S_EXACT, extra=b"", size=b""):
    """extra: the offset mode's bytes (O_ALIGNED: 2, O_RAW / O_ANY: 8);
    size: a SIZE when smode is S_SIZE."""
    return bytes([pick, omode, a, smode]) + extra + size


def op(code, *args):
    return bytes([code]) + b"".join(args)


def every_target_kind(picks):
    """Frees and probes at every kind of offset, each with every size."""
    out = b""
    for pick in picks:
        for omode, extra in ((O_START, b""), (O_INTERIOR, b""),
                             (O_MISALIGNED, b""), (O_PAST, b""),
                             (O_FREED, b""), (O_ALIGNED, u16(77)),
                             (O_RAW, u64(1 << 63)), (O_BELOW, b""),
                             (O_ANY, u64(123457))):
            for smode in range(6):
                size = sz_block(1) if smode == S_SIZE else b""
                out += op(PROBE, target(pick, omode, pick + 3, smode, extra,
                                        size))
        out += op(FREE, target(pick, O_START, 0, S_SAME_CLASS))
        out += op(FREE, target(pick, O_INTERIOR, 1, S_PICKED))
        out += op(FREE, target(pick, O_START, 0, S_OTHER_CLASS))
    return out


SEEDS = {}

# A power-of-two arena, 64-byte blocks: fill with mixed sizes, free some,
# probe and free at every kind of offset, check largest_free, free all.
SEEDS["buddy_pow2"] = (
    new(min_pow2(6), cap_pow2(10))
    + op(ALLOC_MANY, bytes([20]), sz_in_class(2, 100))
    + op(ALLOC, sz_block(5)) + op(ALLOC, sz_zero()) + op(ALLOC, sz_min(2))
    + op(FREE_LIVE, bytes([3])) + op(FREE_LIVE, bytes([7]))
    + every_target_kind((0, 5))
    + op(LARGEST) + op(ALLOC, sz_largest(0)) + op(LARGEST)
    + op(FREE_ALL, bytes([2])) + op(LARGEST)
)

# An odd capacity: 635 blocks of 16 bytes plus 7 bytes rounded away.
SEEDS["buddy_odd_capacity"] = (
    new(min_pow2(4), cap_count_rem(9, 123, 7))
    + op(ALLOC, sz_block(9)) + op(ALLOC, sz_block(7)) + op(ALLOC, sz_block(6))
    + op(ALLOC_MANY, bytes([40]), sz_min(1))
    + op(ALLOC, sz_cap(1)) + op(ALLOC, sz_cap(2)) + op(ALLOC, sz_huge(3))
    + op(FREE_LIVE, bytes([0])) + op(FREE_LIVE, bytes([0]))
    + op(FREE, target(0, O_FREED, 0, S_EXACT))
    + every_target_kind((5, 9))
    + op(BLOCK_SIZE, sz_cap(0)) + op(BLOCK_SIZE, sz_block(9, 1))
    + op(LARGEST) + op(FREE_ALL, bytes([1])) + op(LARGEST)
)

# The pool over a fake base address: frees by pointer and length.
SEEDS["pool_basic"] = (
    new(min_pow2(6), cap_count(8, 44), pool=True, base=3)
    + op(ALLOC_MANY, bytes([30]), sz_in_class(1, 7))
    + op(ALLOC, sz_block(4, -1)) + op(ALLOC, sz_zero())
    + every_target_kind((4, 29))
    + op(PROBE, target(0, O_BELOW, 255, S_EXACT))  # the NULL pointer
    + op(FREE, target(1, O_BELOW, 0, S_EXACT))
    + op(LARGEST) + op(FREE_ALL, bytes([0])) + op(LARGEST)
)

# Many live blocks in the pool so its size table grows (and shrinks back
# through deletions with backward shifts), freed every other one first.
SEEDS["pool_churn"] = (
    new(min_pow2(3), cap_pow2(11), pool=True, base=100)
    + op(ALLOC_MANY, bytes([63]), sz_min(1))
    + op(ALLOC_MANY, bytes([63]), sz_block(1, -1))
    + b"".join(op(FREE_LIVE, bytes([i * 7 % 251])) for i in range(40))
    + op(ALLOC_MANY, bytes([63]), sz_zero())
    + op(FREE_ALL, bytes([2]))
)

# Arguments buddy_new / pool_new must refuse, then the largest arena.
SEEDS["new_invalid_and_huge"] = (
    new(MIN_ZERO, cap_pow2(4))
    + op(NEW, new(MIN_3, cap_pow2(4)))
    + op(NEW, new(MIN_6, cap_pow2(4), pool=True))
    + op(NEW, new(MIN_2_63, cap_pow2(1)))
    + op(NEW, new(min_pow2(10), cap_below_min(0)))
    + op(NEW, new(min_pow2(0), cap_raw(0)))
    + op(NEW, new(min_pow2(40), cap_max(1)))
    + op(NEW, new(min_pow2(0), cap_raw(1 << 62)))  # valid, too many blocks
    + op(NEW, new(MIN_RAW(12), cap_pow2(3)))
    + op(NEW, new(min_pow2(50), cap_max(0)))       # 2^62 bytes, N = 4096
    + op(ALLOC_MANY, bytes([10]), sz_raw(3 << 50))
    + op(ALLOC, sz_block(11)) + op(ALLOC, sz_block(3, 1))
    + op(ALLOC, sz_huge(0)) + op(ALLOC, sz_huge(2)) + op(ALLOC, sz_huge(3))
    + op(LARGEST) + op(FREE_ALL, bytes([1])) + op(ALLOC, sz_huge(0))
    + op(ALLOC, sz_zero())
    + every_target_kind((0, 1))
    + op(NEW, new(min_pow2(62), cap_max(0), pool=True, base=127))  # N = 1
    + op(ALLOC, sz_zero()) + op(ALLOC, sz_zero()) + op(LARGEST)
    + op(FREE_LIVE, bytes([0])) + op(LARGEST)
)

# One minimum block of one byte; then 2^s + m - 1 capacities.
SEEDS["tiny"] = (
    new(min_pow2(0), cap_pow2(0))
    + op(ALLOC, sz_min(2)) + op(ALLOC, sz_zero()) + op(ALLOC, sz_min(0))
    + op(PROBE, target(0, O_START, 0, S_ZERO))
    + op(FREE, target(0, O_MISALIGNED, 0, S_EXACT))
    + op(FREE_LIVE, bytes([0])) + op(FREE, target(0, O_FREED, 0))
    + op(NEW, new(min_pow2(1), cap_pow2_plus(3)))
    + op(ALLOC_MANY, bytes([8]), sz_zero())
    + op(FREE, target(0, O_MISALIGNED, 0, S_EXACT))
    + op(FREE_ALL, bytes([1]))
)

# Close with live blocks: every call after it refuses, figures stay.
SEEDS["close_midway"] = (
    new(min_pow2(5), cap_count(7, 9), pool=False)
    + op(ALLOC_MANY, bytes([12]), sz_in_class(3, 1))
    + op(FREE_LIVE, bytes([2]))
    + op(CLOSE, bytes([0]))
    + op(ALLOC, sz_zero()) + op(FREE_LIVE, bytes([0]))
    + every_target_kind((0,))
    + op(LARGEST) + op(BLOCK_SIZE, sz_block(2)) + op(CLOSE, bytes([1]))
    + op(FREE_ALL, bytes([0]))
    + op(NEW, new(min_pow2(5), cap_count(7, 9), pool=True, base=9))
    + op(ALLOC_MANY, bytes([12]), sz_in_class(3, 1))
    + op(CLOSE, bytes([1]))
    + op(ALLOC, sz_zero()) + every_target_kind((0,)) + op(LARGEST)
)

# Flipped metadata bits must be noticed by buddy_check.
SEEDS["debug_flip"] = (
    new(min_pow2(4), cap_count(9, 300))
    + op(ALLOC_MANY, bytes([9]), sz_in_class(2, 3))
    + b"".join(op(FLIP, bytes([which, order]) + u16(index))
               for which in (0, 1, 2) for order in (0, 1, 3, 9, 10, 11)
               for index in (0, 1, 5, 25, 200))
)

# buddy_metadata_bytes over valid and invalid arguments.
SEEDS["metadata"] = (
    new(min_pow2(6), cap_pow2(13))
    + op(METADATA, min_pow2(6), cap_pow2(13))
    + op(METADATA, min_pow2(0), cap_raw(1 << 62))
    + op(METADATA, min_pow2(0), cap_raw((1 << 62) + 1))
    + op(METADATA, min_pow2(0), cap_raw(5_000_000_001))
    + op(METADATA, min_pow2(3), cap_raw((1 << 40) + 7))
    + op(METADATA, MIN_ZERO, cap_raw(1024))
    + op(METADATA, MIN_3, cap_raw(1024))
    + op(METADATA, min_pow2(12), cap_below_min(1))
    + op(METADATA, min_pow2(62), cap_max(0))
    + op(METADATA, min_pow2(62), cap_max(-1))
    + op(BLOCK_SIZE, sz_huge(3)) + op(BLOCK_SIZE, sz_cap(1))
    + op(BLOCK_SIZE, sz_block(15)) + op(BLOCK_SIZE, sz_zero())
)

# Many orders and a three-level summary (N = 8191 minimum blocks).
SEEDS["deep_tree"] = (
    new(min_pow2(0), cap_count(12, 4095))
    + op(ALLOC, sz_block(13)) + op(ALLOC, sz_block(12))
    + op(ALLOC_MANY, bytes([20]), sz_in_class(4, 9))
    + op(ALLOC_MANY, bytes([20]), sz_min(1))
    + op(FREE_LIVE, bytes([1])) + op(LARGEST)
    + every_target_kind((30,))
    + op(FREE_ALL, bytes([0])) + op(LARGEST)
)


def main():
    os.makedirs(OUT, exist_ok=True)
    for name in os.listdir(OUT):
        os.remove(os.path.join(OUT, name))
    for name, data in sorted(SEEDS.items()):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        print(f"{len(data):5d} bytes  corpus/core/{name}")


if __name__ == "__main__":
    main()

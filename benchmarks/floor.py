"""Where a Python alloc+free pair's time goes: ``python -m benchmarks.floor``.

Times, in one process and interleaved (the median of 7 rounds), a pair
written four ways, from the API down to no Python function at all, beside
``bytearray(n)``:

  api       v = a.alloc(n); a.free(v)              what users write
  methods   the same through two methods that do   the API's checks removed
            only the entry-point call and the slice
  inline    the two entry-point calls, the slice   no Python frame at all
            and id() written in the loop
  slice     mv[off:off + n] alone                  the view that is the block

The gap between ``api`` and ``bytearray(n)`` that no change to the C side
can close is ``methods``: two Python calls, two cffi calls, one slice.  It
reads the allocator's private entry points (alloc/_allocator.py), so it is
a diagnostic, not an example.
"""

from __future__ import annotations

import itertools
import statistics
import sys
from typing import Any, Callable, Dict, List

import alloc

from .pyloops import timed

PAIRS = 200_000
ROUNDS = 7


def per_pair(loop: Callable[[], None]) -> float:
    """ns per pair of loop(), timed as every workload is (pyloops.timed)."""
    return timed(loop)[0] / PAIRS


class Minimal:
    """alloc and free with nothing but the entry-point call and the slice."""

    def __init__(self, a: Any) -> None:
        self._mv, self._alloc_entry, self._free_entry = a._mv, a._alloc_entry, a._free_entry

    def alloc(self, size: int) -> memoryview:
        mv, entry = self._mv, self._alloc_entry
        off = entry(size)
        return mv[off : off + size]  # type: ignore[no-any-return]

    def free(self, block: memoryview) -> None:
        entry = self._free_entry
        entry(id(block))


def loops(n: int) -> Dict[str, Callable[[], None]]:
    a = alloc.BuddyAllocator(64 << 20, min_size=16)
    new, free = a.alloc, a.free
    m = Minimal(a)
    mnew, mfree = m.alloc, m.free
    ea, ef = a._alloc_entry, a._free_entry
    mv: Any = a._mv
    make = bytearray

    def api() -> None:
        for _ in itertools.repeat(None, PAIRS):
            v = new(n)
            free(v)

    def methods() -> None:
        for _ in itertools.repeat(None, PAIRS):
            v = mnew(n)
            mfree(v)

    def inline() -> None:
        for _ in itertools.repeat(None, PAIRS):
            off = ea(n)
            v = mv[off : off + n]
            ef(id(v))

    def sliced() -> None:
        for _ in itertools.repeat(None, PAIRS):
            v = mv[64 : 64 + n]  # noqa: F841 -- dropped when the next one is bound

    def peer() -> None:
        for _ in itertools.repeat(None, PAIRS):
            v = make(n)  # noqa: F841

    return {"api": api, "methods": methods, "inline": inline, "slice": sliced,
            f"bytearray({n})": peer}


def main(argv: List[str]) -> int:
    sizes = [int(x) for x in argv] or [64, 4096, 65536]
    print(f"ns per pair, median of {ROUNDS} interleaved rounds of {PAIRS:,} "
          "(ratio: to bytearray(n) of the same round)")
    for n in sizes:
        ways = loops(n)
        ns: Dict[str, List[float]] = {k: [] for k in ways}
        for _ in range(ROUNDS):
            for k, loop in ways.items():
                ns[k].append(per_pair(loop))
        peer = ns[f"bytearray({n})"]
        print(f"\nn = {n}")
        for k, xs in ns.items():
            ratio = statistics.median(x / p for x, p in zip(xs, peer))
            print(f"  {k:16s} {statistics.median(xs):8.1f} ns   {ratio:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

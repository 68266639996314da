"""Where a Python alloc+free pair's time goes: ``python -m benchmarks.floor``.

Times, in one process and interleaved (the median of 7 rounds), a pair
written four ways, from the API down to no Python function at all, beside
``bytearray(n)``:

  api       v = a.alloc(n); a.free(v)              what users write
  methods   the same through two methods that do   the API's checks removed
            only the entry-point call
  inline    the two entry-point calls written in   no Python frame at all
            the loop
  slice     mv[off:off + n] alone                  what making a view costs

The gap between ``api`` and ``bytearray(n)`` that no change to the C side
can close is ``methods``: two Python calls, two cffi calls.  The entry
points are alloc/_allocator.py's _view_entry (the block's view, made in C
where the build allows: csrc/seam.h) and _free_entry (the block).

``python -m benchmarks.floor churn`` takes ``churn-py`` apart the same way,
on its own trace (free the slot's block, allocate the step's size):

  api       try_alloc / free, the workload's loop  what users write
  inline    the entry-point calls written in the   no Python frame at all
            loop
  no C      the api loop with two methods that     the Python share: no
            only slice (free does nothing)         C call, no bookkeeping
  bytearray churn-py's peer: slots[j] = bytearray(s)

Both read the allocator's private entry points (alloc/_allocator.py), so
they are diagnostics, not examples.
"""

from __future__ import annotations

import itertools
import statistics
import sys
from typing import Any, Callable, Dict, List

import alloc

from .pyloops import churn_steps, churn_trace, timed
from .workloads import WORKLOADS

PAIRS = 200_000
STEPS = 200_000  # churn-py's own length
ROUNDS = 7


def per_pair(loop: Callable[[], None]) -> float:
    """ns per pair of loop(), timed as every workload is (pyloops.timed)."""
    return timed(loop)[0] / PAIRS


class Minimal:
    """alloc and free with nothing but the entry-point call."""

    def __init__(self, a: Any) -> None:
        self._view_entry, self._free_entry = a._view_entry, a._free_entry

    def alloc(self, size: int) -> memoryview:
        entry = self._view_entry
        return entry(size)  # type: ignore[no-any-return]

    def free(self, block: memoryview) -> None:
        entry = self._free_entry
        entry(block)


class SliceOnly:
    """alloc that only slices the arena, free that does nothing: the
    Python a churn step runs besides the C calls."""

    def __init__(self, a: Any) -> None:
        self._mv = a._mv

    def alloc(self, size: int) -> memoryview:
        mv = self._mv
        return mv[0:size]  # type: ignore[no-any-return]

    def free(self, block: memoryview) -> None:
        pass


def loops(n: int) -> Dict[str, Callable[[], None]]:
    a = alloc.BuddyAllocator(64 << 20, min_size=16)
    new, free = a.alloc, a.free
    m = Minimal(a)
    mnew, mfree = m.alloc, m.free
    ev, ef = a._view_entry, a._free_entry
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
            v = ev(n)
            ef(v)

    def sliced() -> None:
        for _ in itertools.repeat(None, PAIRS):
            v = mv[64 : 64 + n]  # noqa: F841 -- dropped when the next one is bound

    def peer() -> None:
        for _ in itertools.repeat(None, PAIRS):
            v = make(n)  # noqa: F841

    return {"api": api, "methods": methods, "inline": inline, "slice": sliced,
            f"bytearray({n})": peer}


def churn_loops() -> Dict[str, Callable[[], float]]:
    """churn-py's steps written four ways; each call fills the slots
    (untimed), times the steps and returns ns per step."""
    p = dict(WORKLOADS["churn-py"].params_for(quick=False))
    p["steps"] = STEPS
    init, slot, size = churn_trace(p)
    steps = list(zip(slot, size))

    def allocator() -> Any:
        return alloc.BuddyAllocator(p["capacity"], min_size=p["min_size"])

    def workload_loop(new: Callable[[int], Any], free: Callable[[Any], None]) -> float:
        """churn-py's own loop (benchmarks/pyloops.py) over new and free."""
        return timed(churn_steps(new, free, init, steps))[0] / len(steps)

    def api() -> float:
        a = allocator()
        return workload_loop(a.try_alloc, a.free)

    def inline() -> float:
        a = allocator()
        ev, ef = a._view_entry, a._free_entry
        slots = [ev(s) for s in init]

        def loop() -> None:  # the trace never fills the arena: no refusal
            for j, s in steps:
                ef(slots[j])
                slots[j] = ev(s)

        return timed(loop)[0] / len(steps)

    def no_c() -> float:
        m = SliceOnly(allocator())
        return workload_loop(m.alloc, m.free)

    def peer() -> float:
        make = bytearray
        slots = [make(s) for s in init]

        def loop() -> None:
            for j, s in steps:
                slots[j] = make(s)

        return timed(loop)[0] / len(steps)

    return {"api": api, "inline": inline, "no C": no_c, "bytearray": peer}


def report(title: str, ns: Dict[str, List[float]], peer: List[float]) -> None:
    print(f"\n{title}")
    for k, xs in ns.items():
        ratio = statistics.median(x / p for x, p in zip(xs, peer))
        print(f"  {k:16s} {statistics.median(xs):8.1f} ns   {ratio:5.2f}x")


def main(argv: List[str]) -> int:
    sizes = [int(x) for x in argv if x != "churn"] or ([] if argv else [64, 4096, 65536])
    print(f"median of {ROUNDS} interleaved rounds (ratio: to the bytearray row "
          "of the same round)")
    for n in sizes:
        ways = loops(n)
        ns: Dict[str, List[float]] = {k: [] for k in ways}
        for _ in range(ROUNDS):
            for k, loop in ways.items():
                ns[k].append(per_pair(loop))
        report(f"pair, n = {n} ({PAIRS:,} pairs, ns a pair)", ns, ns[f"bytearray({n})"])
    if "churn" in argv:
        steps = churn_loops()
        ns = {k: [] for k in steps}
        for _ in range(ROUNDS):
            for k, run in steps.items():
                ns[k].append(run())
        report(f"churn-py ({STEPS:,} steps, ns a step)", ns, ns["bytearray"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

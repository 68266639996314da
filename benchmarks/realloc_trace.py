"""How often realloc stays in place on the benchmark traces.

    python -m benchmarks.realloc_trace

churn-py: every step (slot j gets a new size s) becomes realloc(slots[j], s)
instead of free + alloc.  seed-zipf: after the fill, every block in fill
order is realloc'ed to the next size drawn from the same Zipf distribution.
Counts each realloc as a shrink or same-size-block (always in place), a grow
in place, a move, or refused (OutOfMemory); nothing is timed.
"""

from __future__ import annotations

import random
import sys
from collections import Counter as _Counter
from typing import Any, Dict, List, Optional

Counter = _Counter[str]

from alloc import BuddyAllocator, OutOfMemory

from .pyloops import churn_trace, fill_trace
from .workloads import WORKLOADS


def realloc_once(a: BuddyAllocator, v: memoryview, size: int, tally: Counter) -> Optional[memoryview]:
    off, old_block = a.offset_of(v), a.block_size(len(v))
    try:
        w = a.realloc(v, size)
    except OutOfMemory:
        tally["refused"] += 1
        return None
    new_block = a.block_size(size)
    if a.offset_of(w) != off:
        tally["moved"] += 1
    elif new_block > old_block:
        tally["grown in place"] += 1
    else:
        tally["shrunk or same block"] += 1
    return w


def churn(p: Dict[str, Any]) -> Counter:
    init, slot, size = churn_trace(p)
    a = BuddyAllocator(p["capacity"], min_size=p["min_size"])
    slots: List[Optional[memoryview]] = [a.try_alloc(s) for s in init]
    tally: Counter = _Counter()
    for j, s in zip(slot, size):
        v = slots[j]
        if v is None:
            slots[j] = a.try_alloc(s)
            continue
        w = realloc_once(a, v, s, tally)
        if w is not None:
            slots[j] = w
    a.check()
    return tally


def zipf(p: Dict[str, Any]) -> Counter:
    sizes, _ = fill_trace(p)
    a = BuddyAllocator(p["capacity"], min_size=p["min_size"])
    blocks = [a.alloc(s) for s in sizes]
    rng = random.Random(p["seed"] + 1)
    again = rng.sample(sizes, len(sizes))  # the same distribution, reshuffled
    tally: Counter = _Counter()
    for i, s in enumerate(again):
        w = realloc_once(a, blocks[i], s, tally)
        if w is not None:
            blocks[i] = w
    a.check()
    return tally


def main() -> int:
    for name, fn in (("churn-py", churn), ("seed-zipf", zipf)):
        tally = fn(WORKLOADS[name].params_for(quick=False))
        total = sum(tally.values())
        parts = ", ".join(f"{k} {v} ({100 * v / total:.1f} %)" for k, v in sorted(tally.items()))
        print(f"{name}: {total} reallocs: {parts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""python -m benchmarks.gil: what a busy Python thread does to alloc+free.

cffi releases and re-takes the GIL around every C call unless told not to;
alloc's binding keeps it (csrc/ffi_build.py).  This prints the median time
of an alloc+free pair alone and while another thread spins in pure Python,
so the effect of that choice can be measured on any build:

    python -m benchmarks.gil [PATH]     # PATH: import alloc from there
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from typing import Any, List


def pair_ns(pool: Any, count: int) -> float:
    alloc, free = pool.alloc, pool.free
    t0 = time.perf_counter_ns()
    for _ in range(count):
        free(alloc(64))
    return (time.perf_counter_ns() - t0) / count


def main(argv: List[str]) -> int:
    if argv:
        sys.path.insert(0, argv[0])
    import alloc
    from alloc._allocator import _gil_held

    pool = alloc.BuddyAllocator(1 << 20, min_size=64)
    # the same run length as beside below: shorter runs on a shared host
    # more often fit between preemptions, which flattered "alone" (a pair
    # of ~300 ns measured 1.8-2.1x beside vs 100k-pair runs alone, but
    # 2.0-2.8x vs 20k-pair runs, same session)
    alone = statistics.median(pair_ns(pool, 100_000) for _ in range(3))
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    thread = threading.Thread(target=spin)
    thread.start()
    try:
        # long runs: the busy thread takes the GIL for whole switch intervals
        beside = statistics.median(pair_ns(pool, 100_000) for _ in range(3))
    finally:
        stop.set()
        thread.join()
    print(f"alloc {alloc.__version__} from {alloc.__file__}")
    print(f"GIL held during C calls: {_gil_held()}")
    print(f"alloc+free pair: alone {alone:,.0f} ns, beside a busy thread "
          f"{beside:,.0f} ns ({beside / alone:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

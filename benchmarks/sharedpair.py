"""python -m benchmarks.sharedpair: the uncontended cost of the shared lock.

The ``shared-pair`` workload of ``python -m benchmarks`` times wall-clock
runs; on a loaded 2-core machine their spread hides a few percent.  This
times the same pair-64 (``v = a.alloc(64); a.free(v)``, 64 MiB arena,
``min_size=16``) in per-thread CPU time, alternating run by run between a
private BuddyAllocator and a SharedBuddyAllocator that the parent process
created and this (spawned) process attached to, and prints the minimum and
median of each side and the paired ratios shared / private:

    python -m benchmarks.sharedpair [--runs 15] [--count 100000]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import multiprocessing as mp
import statistics
import sys
import time
from typing import Any, List, Tuple


def pair_cpu_ns(a: Any, count: int) -> float:
    new, free = a.alloc, a.free
    gc.disable()
    try:
        t0 = time.thread_time_ns()
        for _ in itertools.repeat(None, count):
            v = new(64)
            free(v)
        return (time.thread_time_ns() - t0) / count
    finally:
        gc.enable()


def _attached(name: str, runs: int, count: int, out: Any) -> None:
    import alloc

    shared = alloc.SharedBuddyAllocator(name)
    private = alloc.BuddyAllocator(64 << 20, min_size=16)
    sides: Tuple[List[float], List[float]] = ([], [])
    for _ in range(runs + 1):  # the first pair of runs warms up
        sides[0].append(pair_cpu_ns(private, count))
        sides[1].append(pair_cpu_ns(shared, count))
    out.put((sides[0][1:], sides[1][1:]))
    shared.close()


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sharedpair")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--count", type=int, default=100_000)
    args = ap.parse_args(argv)
    import alloc

    ctx = mp.get_context("spawn")
    with alloc.SharedBuddyAllocator(create=True, size=64 << 20, min_size=16) as a:
        try:
            out = ctx.Queue()
            p = ctx.Process(target=_attached, args=(a.name, args.runs, args.count, out))
            p.start()
            private, shared = out.get(timeout=600)
            p.join()
        finally:
            a.unlink()
    ratios = sorted(s / q for q, s in zip(private, shared))
    print(f"pair-64, per-thread CPU time, {args.runs} runs of {args.count:,} pairs")
    print(f"private BuddyAllocator:           min {min(private):6.0f} ns, "
          f"median {statistics.median(private):6.0f} ns")
    print(f"SharedBuddyAllocator (attached):  min {min(shared):6.0f} ns, "
          f"median {statistics.median(shared):6.0f} ns")
    print(f"shared / private: ratio of minima {min(shared) / min(private):.2f}, "
          f"median paired ratio {statistics.median(ratios):.2f} "
          f"(range {ratios[0]:.2f}-{ratios[-1]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

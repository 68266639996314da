"""The long runs of tests/test_shared.py, with their figures printed.

    python tests/shared_soak.py                       # 8 workers x 100,000, 300 kills
    python tests/shared_soak.py --workers 4 --rounds 200000 --kills 500

1. exchange: ``--workers`` processes each allocate ``--rounds`` blocks
   (1..1499 bytes) in one SharedBuddyAllocator, write a pattern, and send the
   offsets in batches to random other workers, which verify the pattern and
   free them (half by a view of their own mapping, half by offset): 2 x
   rounds operations per worker plus the checks.  At the end the arena must
   be empty, alloc_calls == free_calls == workers x rounds, check() clean.
2. kills: three workers churn (alloc/free singly and in batches of 24,
   and now and then check(), a long critical section);
   one at a time is SIGKILLed at a random moment (0-4 ms after the last)
   and replaced; after every kill the parent runs check().  A death while
   holding the lock is recovered by the next locker: found sound,
   repaired from the records, or marked corrupt (then a fresh allocator
   takes over and the run goes on).  Prints how often each happened.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from test_shared import kill_rounds, run_exchange  # noqa: E402

from alloc import SharedBuddyAllocator  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=100_000)
    ap.add_argument("--kills", type=int, default=300)
    ap.add_argument("--method", default="fork", choices=["fork", "spawn", "forkserver"])
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, "
          f"start method {args.method}", flush=True)

    with SharedBuddyAllocator(create=True, size=32 << 20, min_size=16) as a:
        try:
            t = time.perf_counter()
            freed = run_exchange(a, mp.get_context(args.method), args.workers, args.rounds)
            dt = time.perf_counter() - t
            c = a.counters()
            a.check()
            ok = (freed == args.workers * args.rounds and len(a) == 0
                  and a.bytes_allocated == 0
                  and c["alloc_calls"] == c["free_calls"] == freed)
            print(f"exchange: {args.workers} workers x {args.rounds:,} blocks "
                  f"(alloc + verify + free by another: {2 * args.rounds:,} ops each, "
                  f"{2 * freed:,} in all) in {dt:.1f} s; counters {c}; "
                  f"arena empty, check() clean: {ok}", flush=True)
        finally:
            a.unlink()
    if not ok:
        return 1

    rng = random.Random(args.seed)
    done, tallies = 0, {"owner_deaths": 0, "sound": 0, "repaired": 0, "corrupt": 0,
                        "interrupted": 0}
    allocators = 0
    t = time.perf_counter()
    while done < args.kills:
        with SharedBuddyAllocator(create=True, size=4 << 20, min_size=16) as a:
            allocators += 1
            try:
                outcome = kill_rounds(a, args.kills - done, rng)
                try:  # settle a death the final kills left pending
                    a.check()
                except RuntimeError:
                    pass
                counts = a.recovery_counts()
                for k in tallies:
                    tallies[k] += counts[k]
                done += outcome["clean_checks"] + outcome["corrupt"]
            finally:
                a.unlink()
    print(f"kills: {done} SIGKILLs in {time.perf_counter() - t:.1f} s on "
          f"{allocators} allocator(s); deaths holding the lock: "
          f"{tallies['owner_deaths']} -> found sound {tallies['sound']}, "
          f"repaired from the records {tallies['repaired']}, marked corrupt "
          f"{tallies['corrupt']}, recovery cut short by the recoverer's own death "
          f"{tallies['interrupted']} (decided again by the next); check() clean "
          f"after every kill that left "
          f"the allocator usable", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The Python-level workloads: the trace each one draws and the loop each
side times.  A child process runs one side (see ``_child``), one run at a
time: ``RUNNERS[kind](side, p)`` gives ``(one, extra)``, where ``one(r)``
makes run r (0: the warm-up, a tenth as long) and returns its ns per
operation by part and its failures, and ``extra`` holds the side's facts.

Every trace (sizes, slots, free orders) is drawn from ``random.Random(seed)``
before anything is timed; each timed loop runs with the cyclic GC off.  The
loops of the three sides are written out one by one so that each does the
same work in the way its users would write it: ``a.alloc(n)`` and
``a.free(v)`` (bound once), ``bytearray(n)``, ``numpy.empty(n, uint8)``.
"""

from __future__ import annotations

import gc
import itertools
import math
import random
import time
from typing import Any, Callable, Dict, List, Tuple

PAGE = 4096


def timed(loop: Callable[[], Any]) -> Tuple[int, Any]:
    """(ns, result) of loop(), with the cyclic GC collected and then off."""
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        result = loop()
        return time.perf_counter_ns() - t0, result
    finally:
        gc.enable()


def length(r: int, n: int) -> int:
    """How much of a loop of n run r makes: run 0, the warm-up, a tenth."""
    return n if r else max(1, n // 10)


Run = Tuple[Callable[[int], Tuple[Dict[str, float], int]], Dict[str, Any]]


def log_uniform(rng: random.Random, lo: int, hi: int) -> int:
    return int(2 ** rng.uniform(math.log2(lo), math.log2(hi)))


def _allocator(p: Dict[str, Any]) -> Any:
    import alloc

    return alloc.BuddyAllocator(p["capacity"], min_size=p["min_size"])


def _numpy() -> Tuple[Any, Any]:
    import numpy

    return numpy.empty, numpy.uint8


# ---- pair-N and pair-N-touched ---------------------------------------------


def pair(side: str, p: Dict[str, Any]) -> Tuple[Callable[[int], None], Dict[str, Any]]:
    """The loop of pair-N[-touched] for one side (it takes the pair count)."""
    n, touched, extra = p["size"], p["touched"], {}
    pages = range(0, n, PAGE)  # one byte per 4 KiB page
    if side == "ours":
        a = _allocator({"capacity": p["arena"], "min_size": p["min_size"]})
        new, free = a.alloc, a.free
        extra["metadata_bytes"] = a.stats()["metadata_bytes"]

        def plain(count: int) -> None:
            for _ in itertools.repeat(None, count):
                v = new(n)
                free(v)

        def touch(count: int) -> None:
            for _ in itertools.repeat(None, count):
                v = new(n)
                for i in pages:
                    v[i] = 1
                free(v)

    elif side == "bytearray":
        make = bytearray

        def plain(count: int) -> None:
            for _ in itertools.repeat(None, count):
                v = make(n)  # noqa: F841 -- dropped when the next one is bound

        def touch(count: int) -> None:
            for _ in itertools.repeat(None, count):
                v = make(n)
                for i in pages:
                    v[i] = 1

    else:
        empty, u8 = _numpy()

        def plain(count: int) -> None:
            for _ in itertools.repeat(None, count):
                v = empty(n, u8)  # noqa: F841

        def touch(count: int) -> None:
            for _ in itertools.repeat(None, count):
                v = empty(n, u8)
                for i in pages:
                    v[i] = 1  # numpy's item assignment: ~60 ns vs ~30

    return (touch if touched else plain), extra


def run_pair(side: str, p: Dict[str, Any]) -> Run:
    loop, extra = pair(side, p)

    def one(r: int) -> Tuple[Dict[str, float], int]:
        count = length(r, p["count"])
        return {"": timed(lambda: loop(count))[0] / count}, 0

    return one, extra


# ---- shared-pair ---------------------------------------------------------------


def _shared_creator(p: Dict[str, Any], conn: Any) -> None:
    """The first process: makes the segment, sends its name, removes the
    name once the timing process says it has attached (or after 60 s), then
    idles until its parent, the timing process, is gone.  Only pipes and
    polling: the runner kills the timing process after its last reply, and
    a process killed inside a multiprocessing Event or Queue call leaves its
    lock held, which would hang this one for good."""
    import os

    import alloc

    parent = os.getppid()
    a = alloc.SharedBuddyAllocator(create=True, size=p["arena"], min_size=p["min_size"])
    try:
        conn.send(a.name)
        conn.poll(60)  # "attached" (or the parent died: go on)
    finally:
        a.unlink()
    while os.getppid() == parent:
        time.sleep(0.2)
    a.close()


def run_shared_pair(side: str, p: Dict[str, Any]) -> Run:
    """pair-64 on a SharedBuddyAllocator that another (idle) process made
    and this one attached to ("ours"), or on a private BuddyAllocator
    ("private"), the same loop."""
    import alloc

    n, extra = p["size"], {}
    if side == "ours":
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        here, there = ctx.Pipe()
        creator = ctx.Process(target=_shared_creator, args=(p, there), daemon=True)
        creator.start()
        if not here.poll(60):
            raise RuntimeError("the process making the shared arena did not answer")
        a = alloc.SharedBuddyAllocator(here.recv())
        here.send("attached")
        extra["segment_bytes"] = a.segment_bytes
    else:
        a = _allocator({"capacity": p["arena"], "min_size": p["min_size"]})
    new, free = a.alloc, a.free
    extra["metadata_bytes"] = a.stats()["metadata_bytes"]

    def loop(count: int) -> None:
        for _ in itertools.repeat(None, count):
            v = new(n)
            free(v)

    def one(r: int) -> Tuple[Dict[str, float], int]:
        count = length(r, p["count"])
        return {"": timed(lambda: loop(count))[0] / count}, 0

    return one, extra


# ---- churn-py ----------------------------------------------------------------


def churn_trace(p: Dict[str, Any]) -> Tuple[List[int], List[int], List[int]]:
    rng = random.Random(p["seed"])
    lo, hi = p["lo"], p["hi"]
    init = [log_uniform(rng, lo, hi) for _ in range(p["slots"])]
    slot = [rng.randrange(p["slots"]) for _ in range(p["steps"])]
    size = [log_uniform(rng, lo, hi) for _ in range(p["steps"])]
    return init, slot, size


def churn_steps(new: Callable[[int], Any], free: Callable[[Any], Any],
                init: List[int], steps: List[Tuple[int, int]]) -> Callable[[], int]:
    """churn-py's loop for an allocator's try_alloc and free: fills the
    slots now (untimed) and returns the loop, which frees each step's slot
    (if it holds a block), allocates the step's size into it and returns
    the refusals.  benchmarks.floor times it with other new/free too."""
    slots = [new(s) for s in init]

    def loop() -> int:
        fails = 0
        for j, s in steps:
            v = slots[j]
            if v is not None:
                free(v)
            v = slots[j] = new(s)
            if v is None:
                fails += 1
        return fails

    return loop


def churn_once(side: str, p: Dict[str, Any], init: List[int], slot: List[int],
               size: List[int]) -> Tuple[int, int, Dict[str, Any]]:
    """One run: fill the slots (untimed), then time the steps.
    Returns (ns, failures, extra)."""
    steps = list(zip(slot, size))
    extra: Dict[str, Any] = {}
    if side == "ours":
        a = _allocator(p)
        loop = churn_steps(a.try_alloc, a.free, init, steps)
        extra["metadata_bytes"] = a.stats()["metadata_bytes"]

    elif side == "bytearray":
        make = bytearray
        slots = [make(s) for s in init]

        def loop() -> int:
            for j, s in steps:
                slots[j] = make(s)
            return 0

    else:
        empty, u8 = _numpy()
        slots = [empty(s, u8) for s in init]

        def loop() -> int:
            for j, s in steps:
                slots[j] = empty(s, u8)
            return 0

    ns, fails = timed(loop)
    return ns, fails, extra


def run_churn(side: str, p: Dict[str, Any]) -> Run:
    init, slot, size = churn_trace(p)
    extra: Dict[str, Any] = {}

    def one(r: int) -> Tuple[Dict[str, float], int]:
        n = length(r, len(slot))
        t, fails, x = churn_once(side, p, init, slot[:n], size[:n])
        extra.update(x)
        return {"": t / n}, fails

    return one, extra


# ---- seed-zipf and fill-64: fill, then free in shuffled order ---------------


def fill_trace(p: Dict[str, Any]) -> Tuple[List[int], List[int]]:
    rng = random.Random(p["seed"])
    if p["sizes"] == "zipf":  # p(i) proportional to 1 / i**alpha over 1..max_size
        values = range(1, p["max_size"] + 1)
        cum = list(itertools.accumulate(1.0 / i ** p["alpha"] for i in values))
        sizes = rng.choices(values, cum_weights=cum, k=p["count"])
    else:  # fixed: as many as fill the arena exactly
        sizes = [p["size"]] * (p["capacity"] // max(p["size"], p["min_size"]))
    order = list(range(len(sizes)))
    rng.shuffle(order)
    return sizes, order


def fill_once(side: str, p: Dict[str, Any], sizes: List[int],
              order: List[int]) -> Tuple[int, int, Dict[str, Any]]:
    """One run: allocate every size, then free in `order`.
    Returns (alloc ns, free ns, extra)."""
    blocks: List[Any] = []
    keep = blocks.append
    extra: Dict[str, Any] = {}
    if side == "ours":
        a = _allocator(p)
        new, free = a.alloc, a.free

        def fill() -> None:
            for s in sizes:
                keep(new(s))

        def drop() -> None:
            for i in order:
                v = blocks[i]
                blocks[i] = None
                free(v)

    else:
        if side == "bytearray":
            make = bytearray

            def fill() -> None:
                for s in sizes:
                    keep(make(s))

        else:
            empty, u8 = _numpy()

            def fill() -> None:
                for s in sizes:
                    keep(empty(s, u8))

        def drop() -> None:
            for i in order:
                blocks[i] = None

    t_fill, _ = timed(fill)
    if side == "ours":
        extra = {
            "bytes_wasted": a.bytes_wasted,
            "bytes_allocated": a.bytes_allocated,
            "wasted_ratio": a.bytes_wasted / max(1, a.bytes_allocated),
            "full_after_fill": a.try_alloc(min(sizes)) is None,
            "metadata_bytes": a.stats()["metadata_bytes"],
        }
    t_drop, _ = timed(drop)
    return t_fill, t_drop, extra


def run_fill(side: str, p: Dict[str, Any]) -> Run:
    sizes, order = fill_trace(p)
    extra: Dict[str, Any] = {}

    def one(r: int) -> Tuple[Dict[str, float], int]:
        n = length(r, len(sizes))
        t_fill, t_drop, x = fill_once(side, p, sizes[:n], [i for i in order if i < n])
        if r:  # the warm-up's arena is not full
            extra.update(x)
        return {"": (t_fill + t_drop) / (2 * n), "alloc": t_fill / n,
                "free": t_drop / n}, 0

    return one, extra


# ---- batch-64: a batch of blocks allocated and freed together ---------------


def batch(side: str, p: Dict[str, Any]) -> Tuple[Callable[[int], None], Dict[str, Any]]:
    """The loop of batch-64 for one side (it takes the batch count): ours
    ``a.free_many(a.alloc_many(size, count))``, the peers a list of `count`
    new objects, dropped at once."""
    size, count, extra = p["size"], p["count"], {}
    if side == "ours":
        a = _allocator(p)
        alloc_many, free_many = a.alloc_many, a.free_many
        extra["metadata_bytes"] = a.stats()["metadata_bytes"]

        def loop(batches: int) -> None:
            for _ in itertools.repeat(None, batches):
                free_many(alloc_many(size, count))

    elif side == "bytearray":
        make = bytearray
        each = range(count)

        def loop(batches: int) -> None:
            for _ in itertools.repeat(None, batches):
                blocks = [make(size) for _ in each]
                del blocks

    else:
        empty, u8 = _numpy()
        each = range(count)

        def loop(batches: int) -> None:
            for _ in itertools.repeat(None, batches):
                blocks = [empty(size, u8) for _ in each]
                del blocks

    return loop, extra


def run_batch(side: str, p: Dict[str, Any]) -> Run:
    loop, extra = batch(side, p)

    def one(r: int) -> Tuple[Dict[str, float], int]:
        batches = length(r, p["batches"])
        return {"": timed(lambda: loop(batches))[0] / (batches * p["count"])}, 0

    return one, extra


RUNNERS = {"pair": run_pair, "churn": run_churn, "fill": run_fill, "batch": run_batch,
           "shared_pair": run_shared_pair}

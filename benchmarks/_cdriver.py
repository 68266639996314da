"""The one module of the benchmarks that touches ``ffi``/``lib``: thin
wrappers over the C driver (csrc/bench.h), compiled into ``alloc._buddy``."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from alloc._buddy import ffi, lib

if not hasattr(lib, "bench_churn"):
    raise ImportError(
        "alloc._buddy was built without the C benchmark driver (csrc/bench.c); "
        "rebuild: python setup.py build_ext --inplace"
    )

#: Side name -> the driver's allocator selector.
SIDES = {"ours": lib.BENCH_BUDDY, "glibc malloc": lib.BENCH_MALLOC}

_FIELDS = ("ops", "ns", "ops2", "ns2", "failures", "bytes_requested",
           "metadata_bytes", "rss_growth_kib", "status")


def _call(fn: Any, side: str, args: Sequence[int], runs: int,
          limits: Optional[Sequence[int]] = None) -> List[Dict[str, int]]:
    out = ffi.new("bench_run_t[]", runs)
    extra = []
    if fn is lib.bench_fillrand:
        extra = [ffi.new("uint64_t[]", list(limits)) if limits else ffi.NULL]
    status = fn(SIDES[side], *args, runs, *extra, out)
    if status != lib.BENCH_OK:
        raise RuntimeError(ffi.string(lib.bench_strerror(status)).decode())
    return [{f: int(getattr(r, f)) for f in _FIELDS} for r in out]


def fill(side: str, runs: int, *, capacity: int, min_size: int, size: int,
         seed: int) -> List[Dict[str, int]]:
    return _call(lib.bench_fill, side, (capacity, min_size, size, seed), runs)


def churn(side: str, runs: int, *, capacity: int, min_size: int, slots: int,
          lo: int, hi: int, steps: int, seed: int) -> List[Dict[str, int]]:
    return _call(lib.bench_churn, side,
                 (capacity, min_size, slots, lo, hi, steps, seed), runs)


def pair(side: str, runs: int, *, capacity: int, min_size: int, size: int,
         count: int) -> List[Dict[str, int]]:
    """pair64-empty: `count` alloc+free pairs on an otherwise empty arena."""
    return _call(lib.bench_pair, side, (capacity, min_size, size, count), runs)


def fillrand(side: str, runs: int, *, capacity: int, min_size: int, lo: int,
             hi: int, seed: int,
             limits: Optional[Sequence[int]] = None) -> List[Dict[str, int]]:
    return _call(lib.bench_fillrand, side,
                 (capacity, min_size, lo, hi, seed), runs, limits)


def metadata_bytes(capacity: int, min_size: int) -> int:
    return int(lib.buddy_metadata_bytes(capacity, min_size))


def compiler() -> str:
    return str(ffi.string(lib.bench_compiler()).decode())

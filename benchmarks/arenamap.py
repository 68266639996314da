"""The arena map the runner writes: ``churn-75pct`` replayed on the Python
side's ``alloc.BuddyAllocator`` up to its first refused allocation, drawn
with ``BuddyAllocator.render``.

``churn-75pct`` is a C-level workload: ``csrc/bench.c`` draws its trace
with splitmix64 and times it on the core alone, which keeps no picture.
This module draws the very same numbers in Python (splitmix64 is a counter
generator, so draw k is computed directly, and only the draws the replay
reaches are made), replays them on a ``BuddyAllocator`` with the workload's
capacity and ``min_size`` -- the placement is the core's, so the state is
the one the C run reaches -- and stops at the first ``try_alloc`` that
returns ``None``.  ``tests/test_benchmarks.py`` checks the replay against
the C driver: the same refusals and the same requested bytes at the end.

The trace, in the C driver's order of draws from ``seed``: the ``slots``
sizes of the fill, then the slot of every step, then the size of every
step; sizes are log-uniform in [lo, hi].
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Tuple

from .workloads import WORKLOADS

#: The workload drawn, and the name its files get (STEM.svg, STEM.png).
NAME = "churn-75pct"
STEM = "arena-" + NAME
#: The map's width in pixels: render()'s default, 256 cells per row, each
#: cell 4 KiB of the 64 MiB arena.
WIDTH = 1200

_MASK = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15


def draw(seed: int, k: int) -> int:
    """Draw k (0-based) of bench.c's trace_next from `seed` (splitmix64)."""
    z = (seed + (k + 1) * _GAMMA) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def unit(seed: int, k: int) -> float:
    """trace_unit: draw k as a double, uniform in [0, 1)."""
    return (draw(seed, k) >> 11) * (1.0 / 9007199254740992.0)


def _exp2_frac(f: float) -> float:
    """trace_exp2_frac: 2**f for f in [0, 1), the same 20-term series in the
    same order of operations, so that the sizes match the C ones exactly."""
    x, term, total = f * 0.69314718055994530942, 1.0, 1.0
    for n in range(1, 20):
        term *= x / n
        total += term
    return total


def size(seed: int, k: int, lo: int, hi: int) -> int:
    """trace_sizes: draw k as a size log-uniform in [lo, hi] (powers of two)."""
    x = unit(seed, k) * (hi.bit_length() - lo.bit_length())
    whole = int(x)
    return int(float(lo << whole) * _exp2_frac(x - whole))


class Refusal(NamedTuple):
    """The first refused allocation of a replay."""

    phase: str  # "fill" (the untimed fill of the slots) or "step"
    at: int  # the slot of the fill, or the step, 0-based
    size: int  # the bytes requested
    block_size: int  # the block that request needs


def trace(p: Dict[str, Any]) -> Iterator[Tuple[str, int, int, int]]:
    """(phase, at, slot, size) of every allocation of the churn trace
    with parameters `p`, in order: the fill, then the steps."""
    seed, slots, steps, lo, hi = (p[k] for k in ("seed", "slots", "steps", "lo", "hi"))
    for j in range(slots):
        yield "fill", j, j, size(seed, j, lo, hi)
    for i in range(steps):
        slot = int(unit(seed, slots + i) * slots)  # trace_below
        yield "step", i, slot, size(seed, slots + steps + i, lo, hi)


def replay(p: Dict[str, Any], *, stop: bool = True) -> Tuple[Any, Optional[Refusal], int]:
    """Replay the churn trace with parameters `p` as bench.c's run_churn
    does (a step frees its slot's block, if it has one, then allocates).
    Returns (the BuddyAllocator, the first refusal or None, the refused
    allocations of the steps).  With `stop` it ends at the first refusal,
    leaving the allocator as it was when that request came."""
    from alloc import BuddyAllocator

    a = BuddyAllocator(p["capacity"], min_size=p["min_size"])
    new, free = a.try_alloc, a.free
    held: List[Any] = [None] * p["slots"]
    first: Optional[Refusal] = None
    step_failures = 0
    for phase, at, slot, n in trace(p):
        if held[slot] is not None:
            free(held[slot])
        v = held[slot] = new(n)
        if v is None:
            step_failures += phase == "step"
            if first is None:
                first = Refusal(phase, at, n, a.block_size(n))
                if stop:
                    break
    return a, first, step_failures


def params(quick: bool) -> Dict[str, Any]:
    """churn-75pct's parameters, as the run measured them (--quick makes
    fewer steps, and so draws other step numbers)."""
    return WORKLOADS[NAME].params_for(quick)


def folder_for(plot: Optional[str], json_path: Optional[str]) -> Optional[str]:
    """Where the map goes: beside the chart (--plot), else beside the
    figures (--json); None when the run writes no file."""
    for path in (plot, json_path):
        if path:
            return os.path.dirname(os.path.abspath(path))
    return None


def paths(folder: str) -> Dict[str, str]:
    return {ext: os.path.join(folder, STEM + "." + ext) for ext in ("svg", "png")}


def _bytes(n: int) -> str:
    for unit_, shift in (("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit_}"
    return f"{n:,} B"


def describe(a: Any, first: Optional[Refusal], p: Dict[str, Any]) -> str:
    """One sentence on the state the map shows."""
    st = a.stats()
    if first is None:
        return (f"{NAME} refused no allocation in its fill of {p['slots']:,} "
                f"slots and {p['steps']:,} steps; the map shows the arena at "
                "the end.")
    where = (f"while filling slot {first.at + 1:,} of {p['slots']:,} "
             "(before the timed steps)" if first.phase == "fill" else
             f"at step {first.at + 1:,} of {p['steps']:,}")
    total = st["bytes_total"]
    largest = _bytes(st["largest_free"]) if st["largest_free"] else "none"
    return (f"{NAME} first refused an allocation {where}: {first.size:,} "
            f"bytes, which need a {_bytes(first.block_size)} block, with "
            f"{st['bytes_free']:,} bytes free (largest free block: {largest}); "
            f"{100 * st['bytes_allocated'] / total:.1f}% of the arena was "
            f"requested, {100 * st['bytes_wasted'] / total:.1f}% wasted in the "
            "tails of power-of-two blocks.")


class Drawn(NamedTuple):
    """What :func:`write` did."""

    paths: List[str]  # the files written: the SVG, then the PNG if any
    lines: List[str]  # what the run prints: what it shows, where it went
    allocator: Any  # the BuddyAllocator as drawn
    refusal: Optional[Refusal]  # None if the whole trace was served


def write(folder: str, quick: bool, *, png: bool,
          p: Optional[Dict[str, Any]] = None) -> Drawn:
    """Replay churn-75pct to its first refusal and write the map into
    `folder`: the SVG always, the PNG too when `png` (matplotlib is
    there).  `p` replaces the workload's parameters (tests use small ones)."""
    p = params(quick) if p is None else p
    a, first, _ = replay(p)
    out = paths(folder)
    written = [out["svg"]]
    a.render(out["svg"], width=WIDTH)
    if png:
        a.render(out["png"], width=WIDTH)
        written.append(out["png"])
    lines = [describe(a, first, p), "Wrote the arena map at that moment to"]
    lines += [f"  {path}" for path in written]  # alone, so that a long path fits
    if not png:
        lines.append("Wrote no PNG of the arena map: matplotlib is not "
                     "installed (pip install matplotlib); the SVG has it all.")
    return Drawn(written, lines, a, first)

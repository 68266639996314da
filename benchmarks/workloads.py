"""The named workloads defined in docs/workloads.md, with exactly its names
and parameters.

Only data lives here; the timed code is in ``pyloops`` (Python level) and
``csrc/bench.c`` (C level).  ``--quick`` divides the loop lengths (steps,
pair counts; fill-64's arena, which sets its loop length) by
``QUICK_DIVISOR`` and makes fewer runs.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Sequence, Tuple

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
SEED = 1
QUICK_DIVISOR = 10
PY_PROCESSES = 3  # processes a side for a Python-level workload (groups_for)

#: Peers, first one is the reference of the headline ratio.
PY_PEERS = ("bytearray", "numpy.empty")
C_PEERS = ("glibc malloc",)

#: The arena the pair-N workloads allocate from (docs/workloads.md: a big
#: arena makes every pair split and merge all the way down).
PAIR_ARENA = 64 * MiB


@dataclass(frozen=True)
class Workload:
    name: str
    level: str  # "python" (vs bytearray/numpy.empty) or "c" (core vs malloc)
    kind: str  # which loop runs it: pair, churn, fill, batch, fillrand
    per: str  # what one timed operation is
    params: Mapping[str, object]
    parts: Tuple[str, ...] = ()  # figures besides the headline
    variants: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    runs: int = 7  # timed runs, after one warm-up run
    quick_keys: Tuple[str, ...] = ("steps", "count")  # what --quick divides
    needs: Tuple[str, ...] = ()  # BuddyAllocator methods the workload calls
    peers: Tuple[str, ...] = ()  # its own peers instead of PY_PEERS / C_PEERS

    def runs_for(self, quick: bool) -> int:
        return max(2, self.runs // 3) if quick else self.runs

    def groups_for(self, quick: bool) -> List[int]:
        """How many timed runs each process makes: a Python-level workload
        spreads its runs over PY_PROCESSES fresh processes a side (each
        process's memory layout -- ASLR -- moved a pair's time by up to 10 %
        against its neighbour's: pair-64 read 3.9 to 4.8 times bytearray in
        ten runs of the same code, one process a side, each run's range
        narrow), so that the median is not one layout's; --quick and the
        C level keep one process a side."""
        runs = self.runs_for(quick)
        n = 1 if quick or self.level != "python" else min(PY_PROCESSES, runs)
        return [runs // n + (i < runs % n) for i in range(n)]

    def params_for(self, quick: bool, variant: str = "") -> Dict[str, object]:
        p = dict(self.params, **self.variants.get(variant, {}))
        if quick:
            for key in (k for k in self.quick_keys if k in p):
                n = max(1, int(p[key]) // QUICK_DIVISOR)  # type: ignore[call-overload]
                # an arena stays a power of two, so a fill still ends exactly full
                p[key] = 1 << (n.bit_length() - 1) if key == "capacity" else n
        return p


def _build() -> Dict[str, Workload]:
    ws: List[Workload] = []
    counts = {64: 100_000, 1024: 100_000, 4096: 50_000, 65536: 20_000, 1048576: 2_000}
    for touched in (False, True):
        for n, count in counts.items():
            name = f"pair-{n}-touched" if touched else f"pair-{n}"
            ws.append(Workload(name, "python", "pair", "pair",
                               {"size": n, "count": count, "touched": touched,
                                "arena": PAIR_ARENA, "min_size": 16}, runs=9))
    churn64 = {"capacity": 64 * MiB, "min_size": 64, "slots": 4096, "lo": 64,
               "hi": 16384, "seed": SEED}
    ws += [
        Workload("churn-py", "python", "churn", "step",
                 dict(churn64, steps=200_000), runs=7),
        Workload("seed-zipf", "python", "fill", "op",
                 {"capacity": 128 * MiB, "min_size": 512, "sizes": "zipf",
                  "count": 10_000, "alpha": 1.0, "max_size": 65535,
                  "seed": SEED}, parts=("alloc", "free"), runs=21),
        Workload("fill-64", "python", "fill", "op",
                 {"capacity": 64 * MiB, "min_size": 64, "sizes": "fixed",
                  "size": 64, "seed": SEED}, parts=("alloc", "free"), runs=5,
                 quick_keys=("capacity",)),
        Workload("batch-64", "python", "batch", "block",
                 {"capacity": 64 * MiB, "min_size": 64, "size": 64, "count": 1024,
                  "batches": 100}, runs=9, quick_keys=("batches",),
                 needs=("alloc_many", "free_many")),
        Workload("shared-pair", "python", "shared_pair", "pair",
                 {"size": 64, "count": 100_000, "arena": PAIR_ARENA, "min_size": 16},
                 runs=9, peers=("private",)),
        Workload("fill64-shuf", "c", "fill", "op",
                 {"capacity": 64 * MiB, "min_size": 64, "size": 64,
                  "seed": SEED}, parts=("alloc", "free")),
        Workload("churn", "c", "churn", "step", dict(churn64, steps=2_000_000)),
        Workload("churn-dense", "c", "churn", "step",
                 dict(churn64, slots=16384, hi=4096, steps=2_000_000)),
        Workload("churn-75pct", "c", "churn", "step",
                 dict(churn64, slots=17000, steps=1_000_000)),
        Workload("pair64-empty", "c", "pair", "pair",
                 {"capacity": 64 * MiB, "min_size": 64, "size": 64,
                  "count": 1_000_000}),
        Workload("fillrand", "c", "fillrand", "alloc",
                 {"capacity": 64 * MiB, "min_size": 64, "lo": 64,
                  "hi": 16384, "seed": SEED}, runs=11),
        Workload("scale", "c", "churn", "step", dict(churn64, steps=2_000_000),
                 variants={"1 MiB": {"capacity": MiB, "slots": 256, "hi": 1024},
                           "64 MiB": {},
                           "1 GiB": {"capacity": GiB},
                           "16 GiB": {"capacity": 16 * GiB}}),
    ]
    return {w.name: w for w in ws}


WORKLOADS: Dict[str, Workload] = _build()


def select(patterns: Sequence[str]) -> List[Workload]:
    """The workloads named by `patterns` (exact names or shell globs such as
    ``pair-*``), in registry order; all of them for an empty list."""
    if not patterns:
        return list(WORKLOADS.values())
    unknown = [p for p in patterns if not fnmatch.filter(WORKLOADS, p)]
    if unknown:
        raise ValueError(
            f"unknown workload(s): {', '.join(unknown)}; "
            f"choose from: {', '.join(WORKLOADS)}"
        )
    return [w for w in WORKLOADS.values()
            if any(fnmatch.fnmatchcase(w.name, p) for p in patterns)]

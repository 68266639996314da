"""One side of one workload, in a process of its own so that its peak RSS
(VmHWM) is its own.  Prints one JSON object on stdout:

    {"samples": {part: [ns per op, one per timed run]}, "failures": n,
     "extra": {...}, "peak_rss_kib": n}  (VmHWM, see peak_rss_kib)

``part`` "" is the headline figure.  Usage (the runner's, not a user's):
``python -m benchmarks._child NAME SIDE [--variant V] [--quick]
[--limits N,N,...]`` or ``python -m benchmarks._child --idle``.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from typing import Any, Dict, List, Optional

from .workloads import WORKLOADS, Workload


def peak_rss_kib() -> int:
    """This process's peak RSS: Linux's VmHWM, which starts afresh at exec;
    ru_maxrss (the fallback) also keeps the peak of the parent that forked
    us, so every child would report at least the runner's own peak."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_c(w: Workload, side: str, p: Dict[str, Any], runs: int,
          limits: Optional[List[int]]) -> Dict[str, Any]:
    """Run 0 is the warm-up; its RSS growth is the one reported (later runs
    reuse memory the process already has)."""
    from . import _cdriver as drv

    if w.kind == "fill":
        rs = drv.fill(side, runs + 1, **p)
    elif w.kind == "churn":
        rs = drv.churn(side, runs + 1, **p)
    else:
        rs = drv.fillrand(side, runs + 1, limits=limits, **p)
    timed = rs[1:]
    samples = {"": [r["ns"] / max(1, r["ops"]) for r in timed]}
    if w.kind == "fill":
        samples = {
            "": [(r["ns"] + r["ns2"]) / (r["ops"] + r["ops2"]) for r in timed],
            "alloc": [r["ns"] / r["ops"] for r in timed],
            "free": [r["ns2"] / r["ops2"] for r in timed],
        }
    extra: Dict[str, Any] = {
        "ops": timed[0]["ops"],
        "rss_growth_kib": rs[0]["rss_growth_kib"],
    }
    if side == "ours":
        extra["metadata_bytes"] = rs[0]["metadata_bytes"]
    if w.kind == "fillrand":  # every run has its own seed, warm-up included
        extra["limits"] = extra["allocations"] = [r["ops"] for r in rs]
        extra["reached_pct"] = [100 * r["bytes_requested"] / p["capacity"] for r in rs]
    return {"samples": samples, "failures": max(r["failures"] for r in timed),
            "extra": extra}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks._child")
    ap.add_argument("name", nargs="?")
    ap.add_argument("side", nargs="?")
    ap.add_argument("--variant", default="")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--limits", default="")
    ap.add_argument("--idle", action="store_true",
                    help="only report the peak RSS of an idle interpreter")
    a = ap.parse_args(argv)
    result: Dict[str, Any] = {}
    if not a.idle:
        w = WORKLOADS[a.name]
        p = w.params_for(a.quick, a.variant)
        runs = w.runs_for(a.quick)
        if w.level == "c":
            limits = [int(x) for x in a.limits.split(",")] if a.limits else None
            result = run_c(w, a.side, p, runs, limits)
        else:
            from .pyloops import RUNNERS

            result = RUNNERS[w.kind](a.side, p, runs)
    result["peak_rss_kib"] = peak_rss_kib()
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

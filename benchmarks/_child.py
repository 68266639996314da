"""One side of one workload, in a process of its own so that its peak RSS
(VmHWM) is its own.  The runner steps it run by run, so that the sides'
runs interleave: for each line ``R [LIMIT...]`` on stdin it makes run R (0
is the warm-up) and prints one JSON line

    {"samples": {part: ns per op}, "failures": n, "limits": [n, ...]}

(``part`` "" is the headline figure; ``limits``, C-level fillrand only, are
the allocation counts of the step's C runs, the LIMITs of the malloc side's
step R).  At the end of stdin it prints ``{"extra": {...}, "peak_rss_kib":
n}`` (VmHWM, see peak_rss_kib).  Usage (the runner's, not a user's): ``python -m
benchmarks._child NAME SIDE [--variant V] [--quick]`` or ``python -m
benchmarks._child --idle``.
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

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


Step = Callable[[int, List[int]], Dict[str, Any]]


def run_c(w: Workload, side: str, p: Dict[str, Any]) -> Tuple[Step, Dict[str, Any]]:
    """One C call per step.  Run 0 is the process's first run, whose RSS
    growth is the one reported (later runs reuse memory the process already
    has); every later call makes a warm-up run, then the timed run, so that
    malloc's state is the one a previous run leaves, not the one the
    driver's setup leaves (which consolidates its fastbins)."""
    from . import _cdriver as drv

    fn = getattr(drv, w.kind)  # drv.fill, drv.churn, drv.pair or drv.fillrand
    extra: Dict[str, Any] = {}

    def one(r: int, limits: List[int]) -> Dict[str, Any]:
        n = 2 if r else 1
        q = dict(p)
        if w.kind == "fillrand":  # run i of a call has seed + i: the timed one, seed + r
            q.update(seed=p["seed"] + r + 1 - n, limits=limits or None)
        rs = fn(side, n, **q)
        x = rs[-1]
        extra.setdefault("rss_growth_kib", x["rss_growth_kib"])
        if side == "ours":
            extra.setdefault("metadata_bytes", x["metadata_bytes"])
        if r == 1:
            extra["ops"] = x["ops"]
        reply: Dict[str, Any] = {"failures": x["failures"],
                                 "samples": {"": x["ns"] / max(1, x["ops"])}}
        if w.kind == "fill":
            reply["samples"] = {"": (x["ns"] + x["ns2"]) / (x["ops"] + x["ops2"]),
                                "alloc": x["ns"] / x["ops"], "free": x["ns2"] / x["ops2"]}
        if w.kind == "fillrand":  # one seed a run, the warm-up's included
            extra.setdefault("allocations", []).append(x["ops"])
            extra.setdefault("reached_pct", []).append(
                100 * x["bytes_requested"] / p["capacity"])
            reply["limits"] = [y["ops"] for y in rs]
        return reply

    return one, extra


def run_py(w: Workload, side: str, p: Dict[str, Any]) -> Tuple[Step, Dict[str, Any]]:
    from .pyloops import RUNNERS

    run, extra = RUNNERS[w.kind](side, p)

    def one(r: int, _limits: List[int]) -> Dict[str, Any]:
        samples, failures = run(r)
        return {"samples": samples, "failures": failures}

    return one, extra


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks._child")
    ap.add_argument("name", nargs="?")
    ap.add_argument("side", nargs="?")
    ap.add_argument("--variant", default="")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--idle", action="store_true",
                    help="only report the peak RSS of an idle interpreter")
    a = ap.parse_args(argv)
    # Ctrl-C in a terminal reaches the whole process group: the runner alone
    # handles it (it reports what was measured and ends its children)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    extra: Dict[str, Any] = {}
    if not a.idle:
        w = WORKLOADS[a.name]
        p = w.params_for(a.quick, a.variant)
        one, extra = (run_c if w.level == "c" else run_py)(w, a.side, p)
        for line in sys.stdin:
            r, *limits = map(int, line.split())
            print(json.dumps(one(r, limits)), flush=True)
    print(json.dumps({"extra": extra, "peak_rss_kib": peak_rss_kib()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

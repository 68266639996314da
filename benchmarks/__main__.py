"""python -m benchmarks: is alloc faster than allocating bytearrays, by how
much, where, and at what memory cost?

Every side of every workload runs in a child process of its own
(``benchmarks._child``), one after the other, so that its peak RSS is its
own and the two cores are never shared between measured loops.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from . import report
from .workloads import C_PEERS, PY_PEERS, WORKLOADS, Workload, select

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time alloc.BuddyAllocator against bytearray and numpy.empty "
                    "(Python level) and the C core against glibc malloc (C level) "
                    "on the named workloads of WORKLOADS.md; print medians, "
                    "ratios and their spread, and peak memory.",
        epilog="workloads: " + ", ".join(WORKLOADS),
    )
    ap.add_argument("--quick", action="store_true",
                    help="short loops and few runs (under 30 s): a smoke test for CI")
    ap.add_argument("--only", nargs="+", metavar="NAME", default=[],
                    help="run only these workloads (names or globs like 'pair-*')")
    ap.add_argument("--json", metavar="PATH", help="write every figure to PATH")
    ap.add_argument("--plot", metavar="PATH",
                    help="write a PNG chart of the ratios to PATH (needs matplotlib)")
    return ap.parse_args(argv)


def run_child(args: List[str], progress: report.Progress, label: str) -> Dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks._child", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    while True:
        progress.show(label)
        try:
            out, err = proc.communicate(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            continue
    progress.step()
    if proc.returncode != 0:
        tail = (err.strip().splitlines() or ["no message"])[-1]
        return {"error": f"exit status {proc.returncode}: {tail}"}
    return json.loads(out.strip().splitlines()[-1])


def plan(ws: List[Workload]) -> List[Tuple[Workload, str, List[str]]]:
    """(workload, variant, sides) for every child group, in running order;
    ours runs first (fillrand's malloc side needs ours' counts)."""
    py_peers = [p for p in PY_PEERS
                if p != "numpy.empty" or importlib.util.find_spec("numpy")]
    jobs = []
    for w in ws:
        sides = ["ours"] + (py_peers if w.level == "python" else list(C_PEERS))
        for variant in (list(w.variants) or [""]):
            jobs.append((w, variant, sides))
    return jobs


def params_of(w: Workload, quick: bool) -> Dict[str, Any]:
    if w.variants:
        return {v: w.params_for(quick, v) for v in w.variants}
    return w.params_for(quick)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.plot and not report.have_matplotlib():
        print("python -m benchmarks: --plot needs matplotlib, which is not "
              "installed; install it (pip install matplotlib) or leave out --plot",
              file=sys.stderr)
        return 2
    try:
        ws = select(args.only)
    except ValueError as exc:
        print(f"python -m benchmarks: {exc}", file=sys.stderr)
        return 2

    started = datetime.datetime.now().isoformat(timespec="seconds")
    t0 = time.monotonic()
    env = report.environment()
    print(report.header(env, args.quick, started), flush=True)
    jobs = plan(ws)
    progress = report.Progress(1 + sum(len(sides) for _, _, sides in jobs))
    idle = run_child(["--idle"], progress, "idle interpreter")

    raw: Dict[str, Dict[str, Dict[str, Any]]] = {w.name: {} for w in ws}
    sides_of: Dict[str, List[str]] = {}
    for w, variant, sides in jobs:
        sides_of[w.name] = sides
        limits: List[str] = []
        for side in sides:
            argv_child = [w.name, side, "--variant", variant] + (
                ["--quick"] if args.quick else []) + limits
            r = run_child(argv_child, progress, f"{w.name} {variant} {side}".replace("  ", " "))
            raw[w.name][f"{variant}/{side}"] = r
            if side == "ours" and "limits" in r.get("extra", {}):
                limits = ["--limits", ",".join(map(str, r["extra"]["limits"]))]
    progress.close()

    results = {
        w.name: report.summarize(w, sides_of[w.name], raw[w.name],
                                 w.runs_for(args.quick), params_of(w, args.quick))
        for w in ws
    }
    elapsed = time.monotonic() - t0
    print()
    print(report.table(ws, results))
    idle_kib = idle.get("peak_rss_kib")
    print(f"Peak RSS is the whole child process (an idle interpreter peaks at "
          f"{report.mib(idle_kib)} MiB); the core's metadata is "
          "buddy_metadata_bytes() for the arena. "
          f"Runs: one warm-up, then the timed runs. Wall time {elapsed:.0f} s.")
    reproduce = "python -m benchmarks" + (" --quick" if args.quick else "") + (
        " --only " + shlex.join(args.only) if args.only else "")
    print(f"Reproduce: {reproduce}")

    failed = any(r["errors"] for r in results.values())
    if args.json:
        doc = {"environment": dict(env, started=started, quick=args.quick,
                                   wall_seconds=round(elapsed, 1),
                                   idle_peak_rss_kib=idle_kib),
               "workloads": results}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
    if args.plot:
        report.plot(ws, results, args.plot,
                    f"alloc {env['alloc']}: time ratio by workload ({started}"
                    + (", --quick" if args.quick else "") + ")")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""python -m benchmarks: is alloc faster than allocating bytearrays, by how
much, where, and at what memory cost?

Every side of every workload runs in a child process of its own
(``benchmarks._child``), so that its peak RSS is its own.  The runner steps
the children run by run, one at a time (the two cores are never shared
between measured loops): run r of ours, then run r of each peer, then run
r + 1 of ours...  so that each ratio pairs two runs made back to back and
the machine's drift cancels out of it.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import select
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

from . import report
from .workloads import C_PEERS, PY_PEERS, WORKLOADS, Workload
from .workloads import select as select_workloads

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


class ChildError(Exception):
    """A child died; the message is its exit status and last line of stderr."""


class Child:
    """One side's child process, stepped over its stdin and stdout."""

    def __init__(self, args: List[str]) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
        self.err = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks._child", *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, text=True, env=env)
        assert self.proc.stdin and self.proc.stdout  # both are pipes
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout

    def ask(self, line: Optional[str], progress: report.Progress,
            label: str) -> Dict[str, Any]:
        """Send `line` (None: end the input) and wait for the child's reply."""
        try:
            if line is None:
                self.stdin.close()
            else:
                self.stdin.write(line + "\n")
                self.stdin.flush()
        except OSError:  # it has died: its reply is empty
            pass
        progress.show(label)
        while not select.select([self.stdout], [], [], 0.5)[0]:
            progress.show(label)
        reply = self.stdout.readline()
        if reply:
            return json.loads(reply)
        self.err.seek(0)
        tail = (self.err.read().strip().splitlines() or ["no message"])[-1]
        raise ChildError(f"exit status {self.proc.wait()}: {tail}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.err.close()


def run_job(w: Workload, variant: str, sides: List[str], quick: bool,
            progress: report.Progress) -> Dict[str, Dict[str, Any]]:
    """Runs 0 (the warm-up) to runs of one variant, interleaved: run r of
    ours, then run r of each peer (fillrand's malloc side with ours'
    allocation counts of step r).  Returns side -> {samples: {part: [ns per
    op, one per timed run]}, failures, extra, peak_rss_kib} or {error}."""
    name = f"{w.name} {variant}".strip()
    kids = {s: Child([w.name, s, "--variant", variant] + (["--quick"] if quick else []))
            for s in sides}
    steps: Dict[str, List[Dict[str, Any]]] = {s: [] for s in sides}
    side = sides[0]
    try:
        for r in range(w.runs_for(quick) + 1):
            limits: List[int] = []
            for side in sides:
                line = " ".join(map(str, [r, *limits]))
                reply = kids[side].ask(line, progress, f"{name} {side} run {r}")
                limits = reply.get("limits", limits)
                steps[side].append(reply)
                progress.step()
        out = {}
        for side in sides:
            timed = steps[side][1:]  # step 0 is the warm-up
            out[side] = kids[side].ask(None, progress, name)  # extra, peak_rss_kib
            out[side]["samples"] = {part: [t["samples"][part] for t in timed]
                                    for part in timed[0]["samples"]}
            out[side]["failures"] = max(t["failures"] for t in timed)
        return out
    except ChildError as exc:
        return {side: {"error": str(exc)}}
    finally:
        for kid in kids.values():
            kid.close()


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
        ws = select_workloads(args.only)
    except ValueError as exc:
        print(f"python -m benchmarks: {exc}", file=sys.stderr)
        return 2

    started = datetime.datetime.now().isoformat(timespec="seconds")
    t0 = time.monotonic()
    env = report.environment()
    print(report.header(env, args.quick, started), flush=True)
    jobs = plan(ws)
    progress = report.Progress(1 + sum((w.runs_for(args.quick) + 1) * len(sides)
                                       for w, _, sides in jobs))
    idle_child = Child(["--idle"])
    idle = idle_child.ask(None, progress, "idle interpreter")
    idle_child.close()
    progress.step()

    raw: Dict[str, Dict[str, Dict[str, Any]]] = {w.name: {} for w in ws}
    sides_of: Dict[str, List[str]] = {}
    for w, variant, sides in jobs:
        sides_of[w.name] = sides
        for side, r in run_job(w, variant, sides, args.quick, progress).items():
            raw[w.name][f"{variant}/{side}"] = r
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
          "Runs: one warm-up, then the timed runs, each peer's run r right "
          f"after ours' run r. Wall time {elapsed:.0f} s.")
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

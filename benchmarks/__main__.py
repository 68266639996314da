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
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

from . import ROOT, arenamap, report
from .workloads import C_PEERS, PY_PEERS, PY_PROCESSES, WORKLOADS, Workload
from .workloads import select as select_workloads

#: The exit status after Ctrl-C, as a shell reports a SIGINT death.
EXIT_INTERRUPTED = 128 + signal.SIGINT


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """The command line, with --json and --plot checked before anything
    runs (argparse's usage message and exit status 2 when they are bad)."""
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks",
        # wrapped here, so that no workload name is broken at its hyphen
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=report.wrap(
            "Time alloc.BuddyAllocator against bytearray and numpy.empty "
            "(Python level) and the C core against glibc malloc (C level) on "
            "the named workloads defined in docs/workloads.md; print medians, "
            "ratios and their spread, and peak memory."),
        epilog=report.wrap("workloads: " + ", ".join(WORKLOADS)
                           + ". Their definitions: docs/workloads.md.") + "\n\n"
        + report.wrap(f"When {arenamap.NAME} runs, the arena map at its first "
                      "refused allocation is written beside the --plot file "
                      f"(else beside the --json file) as {arenamap.STEM}.svg "
                      "and, with matplotlib, .png."),
    )
    ap.add_argument("--quick", action="store_true",
                    help="short loops and few runs (under 30 s): a smoke test for CI")
    ap.add_argument("--only", nargs="+", metavar="NAME", default=[],
                    help="run only these workloads (names or globs like 'pair-*')")
    ap.add_argument("--json", metavar="PATH", help="write every figure to PATH")
    ap.add_argument("--plot", metavar="PATH",
                    help="write a chart of the ratios to PATH, a .png (or any "
                         "format matplotlib writes); needs matplotlib")
    args = ap.parse_args(argv)
    if args.plot and not report.have_matplotlib():
        ap.error("--plot needs matplotlib, which is not installed; install it "
                 "(pip install matplotlib) or leave out --plot")
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        problem = path is not None and (unwritable(path) or map_clash(path))
        if problem:
            ap.error(f"{flag} {path}: {problem}")
    if args.plot:
        problem = report.unplottable(args.plot)
        if problem:
            ap.error(f"--plot {args.plot}: {problem}")
    return args


def unwritable(path: str) -> str:
    """Why `path` cannot be written at the end of the run, or "" if it can
    (checked without creating it, so a rejected run leaves nothing)."""
    folder = os.path.dirname(os.path.abspath(path))
    if path == "" or os.path.isdir(path):
        return "is a directory, not a file name"
    if not os.path.isdir(folder):
        return f"the folder {folder} does not exist"
    if os.path.exists(path):
        return "" if os.access(path, os.W_OK) else "the file is not writable"
    return "" if os.access(folder, os.W_OK | os.X_OK) else \
        f"the folder {folder} is not writable"


def map_clash(path: str) -> str:
    """Why `path` cannot take the run's figures or chart: the arena map is
    written beside it under its own names, so it must not be one of them."""
    here = os.path.abspath(path)
    if here in arenamap.paths(os.path.dirname(here)).values():
        return f"the run writes the arena map of {arenamap.NAME} there"
    return ""


def arena_map(args: argparse.Namespace,
              measured: List[str]) -> Tuple[Dict[str, Any], List[str]]:
    """Write the arena map of churn-75pct at its first refused allocation
    beside the run's chart (or its JSON), if churn-75pct was measured.
    Returns (what the JSON records of it, the lines to print).  Never fails
    the run: whatever goes wrong is said in one line."""
    if arenamap.NAME not in measured:
        return {}, []
    folder = arenamap.folder_for(args.plot, args.json)
    if folder is None:
        return {}, [report.wrap(
            f"Wrote no arena map of {arenamap.NAME}: it goes beside the chart "
            "or the figures; give --plot PATH or --json PATH.")]
    try:
        from alloc import BuddyAllocator
        if not hasattr(BuddyAllocator, "render"):
            raise RuntimeError("this alloc's BuddyAllocator has no render")
        drawn = arenamap.write(folder, args.quick, png=report.have_matplotlib())
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return {}, [f"Wrote no arena map of {arenamap.NAME}: interrupted (Ctrl-C)"]
    except Exception as exc:  # the figures are the run's job; the map is a bonus
        return {}, [report.wrap(f"Wrote no arena map of {arenamap.NAME}: "
                                f"{type(exc).__name__}: {exc}")]
    a, refusal = drawn.allocator, drawn.refusal
    record = {"workload": arenamap.NAME, "paths": drawn.paths,
              "refusal": refusal._asdict() if refusal else None,
              "failed_allocs": a.counters()["failed_allocs"],
              "live_blocks": len(a), "bytes_allocated": a.bytes_allocated,
              "bytes_wasted": a.bytes_wasted, "bytes_free": a.bytes_free,
              "largest_free": a.largest_free}
    # paths stay whole, on lines of their own; the sentences are wrapped
    return record, [line if line.startswith("  ") else report.wrap(line)
                    for line in drawn.lines]


class ChildError(Exception):
    """A child died; the message is its exit status and last line of stderr."""


class Child:
    """One side's child process, stepped over its stdin and stdout."""

    def __init__(self, args: List[str]) -> None:
        # the child finds this checkout's benchmarks from any directory; its
        # benchmarks/__init__ then picks the alloc to import, as ours did
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
            answer: Dict[str, Any] = json.loads(reply)
            return answer
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
    """Runs one variant in len(w.groups_for(quick)) groups of processes, one
    process a side in each (run_group), and pools them: samples in order
    (the pairing of run r of ours with run r of each peer holds across the
    groups), failures and peak RSS the largest, the rest from the first
    group.  Returns side -> {samples: {part: [ns per op, one per timed
    run]}, failures, extra, peak_rss_kib} or {error}."""
    groups = []
    for n in w.groups_for(quick):
        g = run_group(w, variant, sides, quick, progress, n)
        if any("error" in r for r in g.values()):
            return g  # the first failure ends the job
        groups.append(g)
    out: Dict[str, Dict[str, Any]] = {}
    for side in sides:
        got = [g[side] for g in groups]
        first = dict(got[0])
        first["samples"] = {part: [v for x in got for v in x["samples"][part]]
                            for part in got[0]["samples"]}
        first["failures"] = max(x["failures"] for x in got)
        first["peak_rss_kib"] = max(x.get("peak_rss_kib", 0) for x in got)
        out[side] = first
    return out


def run_group(w: Workload, variant: str, sides: List[str], quick: bool,
              progress: report.Progress, runs: int) -> Dict[str, Dict[str, Any]]:
    """Runs 0 (the warm-up) to `runs` of one variant in one process a side,
    interleaved: run r of ours, then run r of each peer (fillrand's malloc
    side with ours' allocation counts of step r)."""
    name = f"{w.name} {variant}".strip()
    kids: Dict[str, Child] = {}
    steps: Dict[str, List[Dict[str, Any]]] = {s: [] for s in sides}
    side = sides[0]
    try:
        for s in sides:  # in the try: Ctrl-C while starting them ends those started
            kids[s] = Child([w.name, s, "--variant", variant]
                            + (["--quick"] if quick else []))
        for r in range(runs + 1):
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
        sides = ["ours"] + (list(w.peers) if w.peers else
                            py_peers if w.level == "python" else list(C_PEERS))
        for variant in (list(w.variants) or [""]):
            jobs.append((w, variant, sides))
    return jobs


def params_of(w: Workload, quick: bool) -> Dict[str, Any]:
    if w.variants:
        return {v: w.params_for(quick, v) for v in w.variants}
    return w.params_for(quick)


def unavailable(w: Workload) -> str:
    """Why the installed alloc cannot run `w`, or "": a workload may call
    BuddyAllocator methods that an older alloc lacks (batch-64 needs
    alloc_many and free_many)."""
    if not w.needs:
        return ""
    try:
        from alloc import BuddyAllocator
    except ImportError:  # every workload fails then, and says why
        return ""
    lacking = [n for n in w.needs if not hasattr(BuddyAllocator, n)]
    return f"this alloc's BuddyAllocator has no {'/'.join(lacking)}" if lacking else ""


def on_sigint(signum: int, frame: Any) -> None:
    """The first Ctrl-C stops the measuring; later ones are ignored, so that
    the partial report is not cut short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        ws = select_workloads(args.only)
    except ValueError as exc:
        print(f"python -m benchmarks: {exc}", file=sys.stderr)
        return 2

    started = datetime.datetime.now().isoformat(timespec="seconds")
    t0 = time.monotonic()
    env = report.environment()
    print(report.header(env, args.quick, started), flush=True)
    skipped = {w.name: unavailable(w) for w in ws if unavailable(w)}
    for name, why in skipped.items():
        print(report.wrap(f"Skipped {name}: {why}."), flush=True)
    ws = [w for w in ws if w.name not in skipped]
    jobs = plan(ws)
    progress = report.Progress(1 + sum((w.runs_for(args.quick) + len(w.groups_for(args.quick)))
                                       * len(sides) for w, _, sides in jobs), len(ws))

    idle: Dict[str, Any] = {}
    raw: Dict[str, Dict[str, Dict[str, Any]]] = {}
    sides_of: Dict[str, List[str]] = {}
    interrupted = False
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, on_sigint)
    try:
        idle_child = Child(["--idle"])
        try:
            idle = idle_child.ask(None, progress, "idle interpreter")
        finally:
            idle_child.close()
        progress.step()
        for w, variant, sides in jobs:
            if w.name not in raw:
                progress.workload(w.name)
            sides_of[w.name] = sides
            job = run_job(w, variant, sides, args.quick, progress)
            raw.setdefault(w.name, {}).update(
                (f"{variant}/{side}", r) for side, r in job.items())
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        interrupted = True
    progress.close()

    done = [w for w in ws if w.name in raw]
    results = {
        w.name: report.summarize(w, sides_of[w.name], raw[w.name],
                                 w.runs_for(args.quick), params_of(w, args.quick))
        for w in done
    }
    elapsed = time.monotonic() - t0
    print()
    if interrupted:
        missing = [w.name for w in ws if w.name not in raw]
        print(report.wrap(
            f"Interrupted (Ctrl-C) after {elapsed:.0f} s: the table shows the "
            f"{len(done)} of {len(ws)} workloads measured so far"
            + (f"; not measured: {', '.join(missing)}." if missing else ".")))
        print()
    if done:
        print(report.table(done, results))
    idle_kib = idle.get("peak_rss_kib")
    print(report.wrap(
        "Peak RSS is the whole child process"
        + (f" (an idle interpreter peaks at {report.mib(idle_kib)} MiB)"
           if idle_kib else "")
        + "; the core's metadata is buddy_metadata_bytes() for the arena. "
        "Runs: in each process one warm-up, then its timed runs, each peer's "
        "run r right after ours' run r; a Python workload's runs are spread "
        f"over {PY_PROCESSES} processes a side (--quick: one). Wall time "
        f"{elapsed:.0f} s."))
    reproduce = "python -m benchmarks" + (" --quick" if args.quick else "") + (
        " --only " + " ".join(map(shlex.quote, args.only)) if args.only else "")
    print(f"Reproduce: {reproduce}")

    failed = any(r["errors"] for r in results.values())
    map_record, map_lines = arena_map(args, [w.name for w in done])
    if args.json:
        doc = {"environment": dict(env, started=started, quick=args.quick,
                                   wall_seconds=round(elapsed, 1),
                                   idle_peak_rss_kib=idle_kib,
                                   interrupted=interrupted),
               "skipped": skipped,
               "workloads": results}
        if map_record:
            doc["arena_map"] = map_record
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        print(f"Wrote every figure to {args.json}"
              + (" (partial: interrupted)" if interrupted else ""))
    charted = [w for w in done if "ours_ns" in results[w.name]]
    if args.plot and charted:
        report.plot(charted, results, args.plot,
                    f"alloc {env['alloc']}: time ratio by workload ({started}"
                    + (", --quick" if args.quick else "")
                    + (", interrupted" if interrupted else "") + ")")
        print(f"Wrote the chart to {args.plot}"
              + (" (partial: interrupted)" if interrupted else ""))
    elif args.plot:
        print(f"Wrote no chart to {args.plot}: no workload has figures")
    for line in map_lines:
        print(line)
    if interrupted:
        return EXIT_INTERRUPTED
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Everything the runner shows: the environment header, the summary of the
children's samples (medians, min-max, ratios), the table, the chart and the
progress bar."""

from __future__ import annotations

import math
import os
import platform
import re
import shutil
import statistics
import sys
import sysconfig
import textwrap
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .workloads import Workload

# ---- environment -------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def environment() -> Dict[str, str]:
    from importlib.metadata import version as installed_version

    try:
        import alloc

        version = getattr(alloc, "__version__", "unknown")
    except ImportError as exc:
        version = f"not importable ({exc})"
    try:
        from . import _cdriver

        compiler = _cdriver.compiler()
    except ImportError as exc:
        compiler = f"{sysconfig.get_config_var('CC')} (C driver missing: {exc})"
    build = "free-threaded" if sysconfig.get_config_var("Py_GIL_DISABLED") else "GIL"
    try:
        import numpy

        numpy_version = numpy.__version__
    except ImportError:
        numpy_version = "not installed (numpy.empty peer skipped)"
    return {
        "machine": f"{_cpu_model()}, {os.cpu_count()} CPUs, {platform.machine()}, "
                   f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()} "
                  f"({build}) {sys.executable}",
        "cffi": installed_version("cffi"),
        "numpy": numpy_version,
        "compiler": compiler,
        "cflags": cflags(),
        "alloc": version,
    }


def _recorded_cflags() -> Optional[List[str]]:
    """The options gcc recorded in the compiled core (its DWARF producer
    string, "GNU C17 12.2.0 -mtune=generic ... -O3 -O2 ...", which is there
    when the core was built with -g, as Python's own CFLAGS have it); None
    when the core is missing or records none (clang, a stripped build)."""
    try:
        from alloc import _buddy

        with open(str(_buddy.__file__), "rb") as f:
            data = f.read()
    except (ImportError, OSError, TypeError):
        return None
    found = re.search(rb"GNU C[\w+]* [\d.]+ (-[ -~]+)", data)
    if not found:
        return None
    return found.group(1).decode("ascii").split()


def effective_cflags(flags: Sequence[str], source: str) -> str:
    """The flags as the compiler took them: of several -O options the last
    wins, so only that one is shown (first), with what it overrode."""
    opts = [f for f in flags if re.fullmatch(r"-O\w*", f)]
    rest = " ".join(f for f in flags if f not in opts)
    if not opts:
        return f"no -O option: not optimized; {rest} ({source})"
    beaten = sorted(set(opts[:-1]) - {opts[-1]})
    why = (f" (the project's flag, last wins over {', '.join(beaten)})"
           if beaten else "")
    return f"{opts[-1]}{why}; also {rest} ({source})"


def cflags() -> str:
    """The compiled core's flags: as recorded in it, or else as setuptools
    passes them (Python's CFLAGS and CCSHARED, then csrc/ffi_build.py's -O2)."""
    recorded = _recorded_cflags()
    if recorded:
        return effective_cflags(recorded, "recorded in the compiled core")
    guessed = " ".join(filter(None, (sysconfig.get_config_var("CFLAGS"),
                                     sysconfig.get_config_var("CCSHARED"), "-O2")))
    return effective_cflags(guessed.split(), "Python's build flags + ffi_build.py's")


def header(env: Dict[str, str], quick: bool, started: str) -> str:
    mode = "--quick (short loops, few runs: a smoke test, not figures to quote)" \
        if quick else "full"
    lines = [wrap(f"alloc {env['alloc']} benchmarks, {mode}, {started}")]
    lines += [wrap(f"  {k:<9}{env[k]}", indent=" " * 11) for k in
              ("machine", "python", "cffi", "numpy", "compiler", "cflags")]
    return "\n".join(lines)


# ---- summary -------------------------------------------------------------------


def figure(ours: Sequence[float], peers: Dict[str, Sequence[float]]) -> Dict[str, Any]:
    """Medians and min-max of ours and each peer; ratio = the median of the
    paired ratios ours_r / peer_r (run r of the peer came right after run r
    of ours; < 1: ours is faster), ratio_spread their min-max."""
    fig: Dict[str, Any] = {
        "ours_ns": statistics.median(ours),
        "spread": {"ours": [min(ours), max(ours)]},
        "peers": {},
    }
    for name, xs in peers.items():
        paired = [o / x for o, x in zip(ours, xs)]
        ratio = statistics.median(paired)
        fig["spread"][name] = [min(xs), max(xs)]
        fig["peers"][name] = {
            "ns": statistics.median(xs),
            "spread": [min(xs), max(xs)],
            "ratio": ratio,
            "ratio_spread": [min(paired), max(paired)],
        }
        if "ratio" not in fig:
            fig.update(ratio=ratio, ratio_vs=name,
                       ratio_spread=fig["peers"][name]["ratio_spread"])
    return fig


def summarize(w: Workload, sides: Sequence[str], raw: Dict[str, Dict[str, Any]],
              runs: int, params: Dict[str, Any]) -> Dict[str, Any]:
    """One workload's JSON object from its children's results; `raw` maps
    "variant/side" to a child's result or {"error": ...}."""
    out: Dict[str, Any] = {"level": w.level, "per": w.per, "params": params,
                           "runs": runs, "failures": {}, "memory": {},
                           "extra": {}, "notes": [], "errors": {}}
    for key, r in raw.items():
        if "error" in r:
            out["errors"][key] = r["error"]
    peers = [s for s in sides if s != "ours"]
    parts: Dict[str, Any] = {}
    for variant in (list(w.variants) or [""]):
        res = {s: raw.get(f"{variant}/{s}", {}) for s in sides}
        if any("samples" not in r for r in res.values()):
            continue
        keys = res["ours"]["samples"]
        for part in keys:
            fig = figure(keys[part], {s: res[s]["samples"][part] for s in peers})
            if variant:
                fig.update(_side_facts(res, sides))
            label = variant or part
            if label:
                parts[label] = fig
            else:
                out.update(fig)
        if not variant:
            out.update(_side_facts(res, sides))
    if w.variants and parts:  # the headline is the largest arena
        out.update(parts[list(parts)[-1]])
    if parts:
        out["parts"] = parts
    if "ours_ns" in out:
        out["notes"] = _notes(w, out)
    return out


def _side_facts(res: Dict[str, Dict[str, Any]], sides: Sequence[str]) -> Dict[str, Any]:
    """failures, memory and extra figures of one set of children."""
    mem: Dict[str, Any] = {"peak_rss_kib": {s: res[s]["peak_rss_kib"] for s in sides}}
    if "rss_growth_kib" in res["ours"]["extra"]:
        mem["rss_growth_kib"] = {s: res[s]["extra"]["rss_growth_kib"] for s in sides}
    if "metadata_bytes" in res["ours"]["extra"]:
        mem["metadata_bytes"] = res["ours"]["extra"]["metadata_bytes"]
    extra = {k: v for k, v in res["ours"]["extra"].items()
             if k not in ("metadata_bytes", "rss_growth_kib")}
    return {"failures": {s: res[s]["failures"] for s in sides}, "memory": mem,
            "extra": extra}


# ---- text --------------------------------------------------------------------

#: Every line the runner prints fits an 80-column terminal.
WIDTH = 79

#: Peer names in the table's narrow peer column (the titles say them in full).
SHORT = {"numpy.empty": "numpy", "glibc malloc": "malloc"}

#: What one timed operation is, by Workload.per.
PER = {"pair": "pair = one alloc + free", "step": "step = one free + alloc",
       "op": "op = one alloc or one free, averaged; the alloc and free rows "
             "split it",
       "alloc": "alloc = one allocation", "block": "block = one block of a batch"}


def wrap(text: str, indent: str = "") -> str:
    """`text` wrapped to WIDTH, later lines indented by `indent`."""
    return textwrap.fill(text, WIDTH, subsequent_indent=indent,
                         break_long_words=False, break_on_hyphens=False)


def ns(x: Optional[float]) -> str:
    """A time in ns, at most six characters up to 10 ms: 0.52, 43.6, 1,380, 120k."""
    if x is None:
        return "-"
    if x >= 100_000:
        return f"{x / 1000:,.0f}k"
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}" if x >= 1 else f"{x:.2f}"


def ratio_text(r: float) -> str:
    """Two significant digits, or the whole number from 10 up: 0.089, 0.30,
    1.4, 6.0, 14."""
    if r >= 10:
        return f"{r:.0f}"
    return f"{r:.1f}" if r >= 1 else f"{r:#.2g}"


def verdict(r: float, lo: float, hi: float) -> str:
    """Plain words for a median ratio: "about same" near 1, "unclear" when
    the paired ratios fall on both sides of 1, else "14x slower" or
    "2.5x faster"."""
    if 0.9 <= r <= 1.1:
        return "about same"
    if lo <= 1 <= hi:
        return "unclear"
    x = 1 / r if r < 1 else r
    amount = f"{x:.0f}" if x >= 10 else f"{x:.1f}"
    return f"{amount}x {'faster' if r < 1 else 'slower'}"


def mib(kib: Optional[float]) -> str:
    if kib is None:
        return "-"
    m = kib / 1024
    return f"{m:.0f}" if m >= 10 else f"{m:.1f}"


def size_text(b: int) -> str:
    for unit, k in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= k:
            v = b / k
            return f"{v:.0f} {unit}" if v >= 10 else f"{v:.1f} {unit}"
    return f"{b} B"


def _grid(rows: List[List[str]], heads: List[List[str]], right: Sequence[int]) -> str:
    """Rows under one or more header lines, columns two spaces apart (one
    when that is what keeps them within WIDTH), `right` ones right-aligned,
    and a rule under the headers."""
    widths = [max(len(r[i]) for r in rows + heads) for i in range(len(heads[0]))]
    gap = "  " if sum(widths) + 2 * (len(widths) - 1) <= WIDTH else " "

    def line(r: List[str]) -> str:
        return gap.join(c.rjust(w) if i in right else c.ljust(w)
                        for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    rule = ["-" * w for w in widths]
    return "\n".join([line(h) for h in heads] + [line(rule)] + [line(r) for r in rows])


def _figures(w: Workload, r: Dict[str, Any]) -> List[Tuple[str, Dict[str, Any]]]:
    """(row label, figure) of one workload: the headline and its parts
    (alloc, free), or its variants alone (scale's arenas)."""
    if w.variants:
        return [(f"{w.name} {v}", f) for v, f in r.get("parts", {}).items()]
    return [(w.name, r)] + [(f"  {p}", f) for p, f in r.get("parts", {}).items()]


def _time_table(ws: Sequence[Workload], results: Dict[str, Dict[str, Any]],
                level: str) -> str:
    """ns per operation of ours and each peer, ratio, range and verdict."""
    rows: List[List[str]] = []
    for w in ws:
        r = results[w.name]
        if "ours_ns" not in r:
            rows.append([w.name, "-", "", "-", "-", "-", "failed"])
            continue
        for label, fig in _figures(w, r):
            for i, (peer, pf) in enumerate(fig["peers"].items()):
                lo, hi = pf["ratio_spread"]
                rows.append([label if i == 0 else "",
                             ns(fig["ours_ns"]) if i == 0 else "",
                             SHORT.get(peer, peer), ns(pf["ns"]), ratio_text(pf["ratio"]),
                             f"{ratio_text(lo)}-{ratio_text(hi)}",
                             verdict(pf["ratio"], lo, hi)])
    if level == "c":  # one peer: its name heads the column
        rows = [r[:2] + r[3:] for r in rows]
        return _grid(rows, [["", "ours", "malloc", "", "", ""],
                            ["workload", "ns", "ns", "ratio", "range", "verdict"]],
                     right=(1, 2, 3))
    return _grid(rows, [["", "ours", "", "peer", "", "", ""],
                        ["workload", "ns", "peer", "ns", "ratio", "range", "verdict"]],
                 right=(1, 3, 4))


def _memory_table(ws: Sequence[Workload], results: Dict[str, Dict[str, Any]],
                  level: str) -> str:
    """Python level: each side's peak RSS.  C level: the core's metadata
    and each side's RSS growth during the run."""
    rows: List[List[str]] = []
    peers: List[str] = []
    for w in ws:
        r = results[w.name]
        figs = _figures(w, r)[:1] if not w.variants else _figures(w, r)
        for label, fig in figs:
            mem = fig.get("memory")
            if not mem:
                continue
            if level == "python":
                rss = mem["peak_rss_kib"]
                peers = peers or [p for p in rss if p != "ours"]
                rows.append([label, mib(rss["ours"])] + [mib(rss.get(p)) for p in peers])
            else:
                growth = mem.get("rss_growth_kib", {})
                meta = mem.get("metadata_bytes")
                rows.append([label, size_text(meta) if meta is not None else "-",
                             mib(growth.get("ours")), mib(growth.get("glibc malloc"))])
    if not rows:
        return ""
    if level == "python":
        return _grid(rows, [["workload", "ours"] + [SHORT.get(p, p) for p in peers]],
                     right=range(1, 2 + len(peers)))
    return _grid(rows, [["", "core", "RSS growth", ""],
                        ["workload", "metadata", "ours", "malloc"]], right=(1, 2, 3))


def table(ws: Sequence[Workload], results: Dict[str, Dict[str, Any]]) -> str:
    """The report of the workloads that ran: per level a time table, a
    memory table and notes, every line within WIDTH columns."""
    out: List[str] = []
    for level in ("python", "c"):
        chosen = [w for w in ws if w.level == level]
        if not chosen:
            continue
        runs = sorted({results[w.name].get("runs", 0) for w in chosen})
        pers = [PER[p] for p in dict.fromkeys(w.per for w in chosen) if p in PER]
        if level == "python":
            title = ("Python level: alloc.BuddyAllocator against bytearray(n) and "
                     "numpy.empty(n, uint8) (\"numpy\" below)")
        else:
            title = ("C level: the core alone against glibc malloc/free on the "
                     "same trace, one C call per run")
        out.append(wrap(title))
        out.append(wrap(
            f"ns per operation: the median of {'/'.join(map(str, runs))} timed "
            f"runs ({'; '.join(pers)}). ratio = ours / peer time, the median of "
            "the paired runs (each peer run right after ours): below 1 alloc "
            "is faster. range = the min-max of the paired ratios; \"unclear\" "
            "when it spans 1."))
        out.append("")
        out.append(_time_table(chosen, results, level))
        notes: List[str] = []
        for w in chosen:
            r = results[w.name]
            for key, err in r["errors"].items():
                notes.append(f"{w.name} {key.strip('/')}: FAILED: {err}")
            notes += r["notes"]
        memory = _memory_table(chosen, results, level)
        if memory:
            out.append("")
            out.append(wrap(
                "Memory: peak RSS of each side's whole process, MiB"
                if level == "python" else
                "Memory: the core's metadata (buddy_metadata_bytes) and the "
                "growth of each side's peak RSS during the run, MiB"))
            out.append(memory)
        if level == "python":
            notes.append(_metadata_note(chosen, results))
        out += [wrap(f"  * {n}", indent="    ") for n in notes if n]
        out.append("")
    return "\n".join(out)


def _metadata_note(ws: Sequence[Workload], results: Dict[str, Dict[str, Any]]) -> str:
    """The core's metadata for each distinct arena of the Python workloads."""
    seen: Dict[str, List[str]] = {}
    for w in ws:
        meta = results[w.name].get("memory", {}).get("metadata_bytes")
        if meta is not None:
            p = results[w.name]["params"]
            arena = p.get("arena", p.get("capacity"))
            key = (f"{size_text(arena)} arena, min_size {p['min_size']}: "
                   f"{size_text(meta)}")
            seen.setdefault(key, []).append(w.name)
    return "core metadata (buddy_metadata_bytes): " + "; ".join(
        f"{k} ({names[0]}{' etc.' if len(names) > 1 else ''})"
        for k, names in seen.items()) if seen else ""


def _notes(w: Workload, r: Dict[str, Any]) -> List[str]:
    f, x, p = r.get("failures", {}), r.get("extra", {}), r["params"]
    notes: List[str] = []
    if w.name == "churn-py":
        notes.append(f"churn-py: allocations refused: ours {f.get('ours', 0):,} "
                     f"of {p['steps']:,} steps")
    if w.name == "seed-zipf" and "wasted_ratio" in x:
        notes.append(f"seed-zipf: after the fill, bytes_wasted / bytes_allocated = "
                     f"{x['bytes_wasted']:,} / {x['bytes_allocated']:,} = "
                     f"{x['wasted_ratio']:.3f} (the seed's analytics figure)")
    if w.name == "fill-64" and "full_after_fill" in x:
        notes.append(f"fill-64: {p['capacity'] // 64:,} blocks of 64 B; "
                     f"ours' arena full afterwards: {x['full_after_fill']}")
    if w.name == "churn":
        notes.append("churn: failures ours/malloc "
                     f"{f.get('ours', 0)}/{f.get('glibc malloc', 0)}; published "
                     "figures on this definition (docs/workloads.md, context only): "
                     "glibc ~110 ns, half-fit ~40, TLSF 130-200, "
                     "single-header C buddy 540-590 ns per step")
    if w.name == "churn-75pct":
        ours = f.get("ours", 0)
        notes.append(f"churn-75pct: ours refused {ours:,} of {p['steps']:,} "
                     f"allocations ({100 * ours / p['steps']:.2f} %; a buddy system "
                     "fails here by design); malloc has no capacity limit and "
                     f"refused {f.get('glibc malloc', 0)}, so its time is per step "
                     "with every allocation served")
    if w.name == "fillrand" and "reached_pct" in x:
        pct = x["reached_pct"]
        notes.append(f"fillrand: first failure at {statistics.median(pct):.1f} % "
                     f"({min(pct):.1f}-{max(pct):.1f} % over {len(pct)} seeds) of the "
                     "arena requested, after a median of "
                     f"{statistics.median(x['allocations']):,.0f} allocations; malloc has no capacity limit: it is "
                     "timed on the same allocations, no % exists for it")
    if w.name == "scale" and "parts" in r:
        parts = r["parts"]
        if "64 MiB" in parts and "16 GiB" in parts:
            flat = parts["16 GiB"]["ours_ns"] / parts["64 MiB"]["ours_ns"]
            notes.append(f"scale: ours ns per step 16 GiB / 64 MiB = {flat:.2f} "
                         "(1.00 = flat); arenas are offset ranges the core never "
                         "touches; its metadata (mmap'd lazily from 1 MiB) is committed as used")
    return notes


# ---- chart -------------------------------------------------------------------


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def unplottable(path: str) -> str:
    """Why matplotlib could not write a chart to `path`, or "": its suffix
    must name a format matplotlib writes (no suffix: PNG)."""
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = os.path.splitext(path)[1].lower().lstrip(".")
    formats = FigureCanvasBase.get_supported_filetypes()
    if not suffix or suffix in formats:
        return ""
    return (f"matplotlib writes no .{suffix} files; use .png (or one of: "
            f"{', '.join(sorted(formats))})")


#: The chart's two groups: level -> title.
GROUPS = {"python": "Python: alloc vs bytearray / numpy.empty",
          "c": "C core vs glibc malloc"}


def _bars(ws: Sequence[Workload], results: Dict[str, Dict[str, Any]],
          level: str) -> List[Tuple[str, Dict[str, Any]]]:
    """(label, {peer: figure}) for each bar group of one level: the
    headline of each workload, or each variant (scale's arenas)."""
    rows: List[Tuple[str, Dict[str, Any]]] = []
    for w in ws:
        if w.level != level:
            continue
        r = results[w.name]
        figs = list(r.get("parts", {}).items()) if w.variants else [("", r)]
        rows += [(f"{w.name} {label}".strip(), f["peers"]) for label, f in figs
                 if "peers" in f]
    return rows


def plot(ws: Sequence[Workload], results: Dict[str, Dict[str, Any]], path: str,
         title: str) -> None:
    """Write the chart of the ratios (see chart) to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = chart(ws, results, title)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def chart(ws: Sequence[Workload], results: Dict[str, Dict[str, Any]],
          title: str) -> Any:
    """The chart of the ratios, a matplotlib Figure: per level a panel of
    horizontal bars, each drawn from 1 to the median ratio ours / peer on a
    log scale (left of 1: ours faster), the min-max of the paired ratios as
    a whisker and the ratio written at the bar's end."""
    import matplotlib
    import matplotlib.pyplot as plt

    groups = [(level, _bars(ws, results, level)) for level in GROUPS]
    groups = [(level, rows) for level, rows in groups if rows]
    if not groups:
        raise ValueError("no workload has figures to chart")
    ratios = [x for _, rows in groups for _, peers in rows for pf in peers.values()
              for x in [pf["ratio"], *pf["ratio_spread"]]]
    # symmetric about 1 in log space, with room for the labels
    reach = max(0.7, max(abs(math.log10(x)) for x in ratios) + 0.3)
    # one row per bar group, one more on top for the direction labels
    heights = [(len(rows) + 1) * (0.16 + 0.15 * len(rows[0][1])) for _, rows in groups]
    figure, axes = plt.subplots(len(groups), 1, sharex=True, squeeze=False,
                               figsize=(9, sum(heights) + 1.4),
                               gridspec_kw={"height_ratios": heights})
    colors: Dict[str, str] = {}
    for ax, (level, rows) in zip(axes[:, 0], groups):
        labelled = set()
        for i, (label, peers) in enumerate(rows):
            height = 0.8 / len(peers)
            for k, (peer, pf) in enumerate(peers.items()):
                color = colors.setdefault(peer, f"C{len(colors)}")
                y = i - 0.4 + height * (k + 0.5)
                r, (lo, hi) = pf["ratio"], pf["ratio_spread"]
                ax.barh(y, r - 1, left=1, height=height * 0.85, color=color,
                        label=None if peer in labelled else f"vs {peer}")
                labelled.add(peer)
                ax.plot([lo, hi], [y, y], color="0.2", linewidth=0.7, zorder=3)
                # the label goes past the whisker's end on the bar's side, so
                # that no whisker stub reads as a minus sign
                end = hi * 1.04 if r >= 1 else lo / 1.04
                ax.text(end, y, ratio_text(r) + "\u00d7", va="center",
                        ha="left" if r >= 1 else "right", fontsize=7.5)
        ax.axvline(1.0, color="black", linewidth=1)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([label for label, _ in rows], fontsize=8.5)
        ax.set_ylim(len(rows) - 0.5, -1.3)
        ax.text(1 / 1.06, -0.95, "\u2190 ours faster", ha="right", va="center",
                fontsize=8.5, color="0.3")
        ax.text(1.06, -0.95, "ours slower \u2192", ha="left", va="center",
                fontsize=8.5, color="0.3")
        ax.set_title(GROUPS[level], fontsize=10, loc="left", fontweight="bold")
        ax.legend(loc="lower right", bbox_to_anchor=(1, 1), ncol=len(labelled),
                  fontsize=8, frameon=False, borderaxespad=0.1)
        ax.grid(axis="x", which="major", color="0.85", linewidth=0.6)
        ax.set_axisbelow(True)
    last = axes[-1, 0]
    last.set_xscale("log")
    last.set_xlim(10 ** -reach, 10 ** reach)
    last.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(
        lambda x, _: f"{x:g}\u00d7"))
    last.set_xlabel("time ours / peer (log scale): bar = median of the paired "
                    "runs, whisker = their min-max", fontsize=8.5)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure


# ---- progress ----------------------------------------------------------------


class Progress:
    """Signs of life on stderr: on a terminal a one-line bar redrawn in
    place; otherwise (a pipe, a CI log) one line as each workload starts."""

    def __init__(self, total: int, workloads: int = 0, stream: Any = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.total, self.done = total, 0
        self.workloads, self.started = workloads, 0
        self.on = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.monotonic()

    def _clock(self) -> str:
        secs = int(time.monotonic() - self.t0)
        return f"{secs // 60}:{secs % 60:02d}"

    def show(self, label: str) -> None:
        if not self.on:
            return
        # two columns spare, for the terminal's echo of a Ctrl-C ("^C")
        width = shutil.get_terminal_size((80, 20)).columns - 3
        filled = int(24 * self.done / max(1, self.total))
        text = (f"[{'#' * filled}{'.' * (24 - filled)}] {self.done}/{self.total} "
                f"{self._clock()}  {label}")
        self.stream.write("\r" + text[:width].ljust(width))
        self.stream.flush()

    def workload(self, name: str) -> None:
        """A workload starts: one line, when the bar is off."""
        self.started += 1
        if not self.on:
            self.stream.write(f"python -m benchmarks: [{self.started}/{self.workloads}] "
                              f"{name} (at {self._clock()})\n")
            self.stream.flush()

    def step(self) -> None:
        self.done += 1

    def close(self) -> None:
        if self.on:
            width = shutil.get_terminal_size((80, 20)).columns - 1
            self.stream.write("\r" + " " * width + "\r")
            self.stream.flush()

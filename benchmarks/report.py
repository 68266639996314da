"""Everything the runner shows: the environment header, the summary of the
children's samples (medians, min-max, ratios), the table, the chart and the
progress bar."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import sys
import sysconfig
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
    import cffi

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
        "cffi": cffi.__version__,
        "numpy": numpy_version,
        "compiler": compiler,
        # what setuptools passes, then csrc/ffi_build.py's extra -O2 (the last -O wins)
        "cflags": " ".join(filter(None, (sysconfig.get_config_var("CFLAGS"),
                                         sysconfig.get_config_var("CCSHARED"),
                                         "-O2"))),
        "alloc": version,
    }


def header(env: Dict[str, str], quick: bool, started: str) -> str:
    mode = "--quick (short loops, few runs: a smoke test, not figures to quote)" \
        if quick else "full"
    lines = [f"alloc {env['alloc']} benchmarks, {mode}, {started}"]
    lines += [f"  {k:<9}{env[k]}" for k in
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


def ns(x: Optional[float]) -> str:
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}" if x >= 1 else f"{x:.2f}"


def ratio_text(r: float) -> str:
    return f"{r:.3g}"


def verdict(r: float, lo: float, hi: float) -> str:
    """Plain words for a median ratio, marked "(noisy)" when the range of
    the paired ratios reaches the other side of 1."""
    if 0.9 <= r <= 1.1:
        return "about the same"
    x = 1 / r if r < 1 else r
    amount = f"{x:.0f}" if x >= 10 else f"{x:.1f}"
    words = f"{amount}x {'faster' if r < 1 else 'slower'}"
    return words + " (noisy)" if lo <= 1 <= hi else words


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


def _rows(name: str, per: str, fig: Dict[str, Any], w: Workload) -> List[List[str]]:
    rows = []
    for i, (peer, pf) in enumerate(fig["peers"].items()):
        mem = _memory(w, fig, peer)
        lo, hi = pf["ratio_spread"]
        rows.append([name if i == 0 else "", per if i == 0 else "",
                     ns(fig["ours_ns"]) if i == 0 else "", peer, ns(pf["ns"]),
                     ratio_text(pf["ratio"]),
                     f"{ratio_text(lo)}-{ratio_text(hi)}",
                     verdict(pf["ratio"], lo, hi), mem])
    return rows


def _grid(rows: List[List[str]], head: List[str], right: Sequence[int]) -> str:
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]

    def line(r: List[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


def table(ws: Sequence[Workload], results: Dict[str, Dict[str, Any]]) -> str:
    out: List[str] = []
    for level, title, memhead in (
        ("python", "Python level: ns per operation, median of the runs", "peak RSS MiB ours/peer"),
        ("c", "C level: the core alone vs glibc malloc/free on the same trace, "
              "in one C call per run", "metadata; RSS growth MiB ours/malloc"),
    ):
        chosen = [w for w in ws if w.level == level]
        if not chosen:
            continue
        rows: List[List[str]] = []
        notes: List[str] = []
        for w in chosen:
            r = results[w.name]
            for key, err in r["errors"].items():
                notes.append(f"{w.name} {key.strip('/')}: FAILED: {err}")
            if "ours_ns" not in r:
                rows.append([w.name, w.per, "-", "-", "-", "-", "-", "failed", ""])
                continue
            for label, fig in [("", r)] + list(r.get("parts", {}).items()):
                if w.variants and not label:
                    continue
                name = (f"{w.name} {label}" if w.variants else
                        f"  {label}" if label else w.name)
                per = w.per if not label or w.variants else label
                rows += _rows(name, per, fig, w)
            notes += r["notes"]
        out.append(title + " (ratio = median of the paired ratios ours / peer "
                   "time, each peer run right after ours: < 1 is ours faster; "
                   "range = min-max of the paired ratios)")
        out.append(_grid(rows, ["workload", "per", "ours ns", "peer", "peer ns",
                                "ratio", "range", "verdict", memhead], right=(2, 4, 5, 6)))
        if level == "python":
            notes.append(_metadata_note(chosen, results))
        out += [f"  * {n}" for n in notes if n]
        out.append("")
    return "\n".join(out)


def _memory(w: Workload, fig: Dict[str, Any], peer: str) -> str:
    """The memory cell of one row: empty for a part (alloc, free) of a run."""
    mem = fig.get("memory")
    if not mem:
        return ""
    rss = mem["peak_rss_kib"]
    if w.level == "python":
        return f"{mib(rss['ours'])} / {mib(rss[peer])}"
    growth = mem.get("rss_growth_kib", {})
    meta = mem.get("metadata_bytes")
    return (f"{size_text(meta) if meta is not None else '-'}; "
            f"{mib(growth.get('ours'))} / {mib(growth.get(peer))}")


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
                     "figures on this definition (WORKLOADS.md, context only): "
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
                         "touches; its metadata is calloc'd and committed as used")
    return notes


# ---- chart -------------------------------------------------------------------


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot(ws: Sequence[Workload], results: Dict[str, Dict[str, Any]], path: str,
         title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: List[Tuple[str, Dict[str, Any]]] = []
    for w in ws:
        r = results[w.name]
        figs = list(r.get("parts", {}).items()) if w.variants else [("", r)]
        rows += [(f"{w.name} {label}".strip(), f["peers"]) for label, f in figs
                 if "peers" in f]
    colors: Dict[str, str] = {}
    chart, ax = plt.subplots(figsize=(9, 0.34 * len(rows) + 1.6))
    for i, (label, peers) in enumerate(rows):
        height = 0.8 / len(peers)
        for k, (peer, pf) in enumerate(peers.items()):
            lo, hi = pf["ratio_spread"]
            new = peer not in colors
            colors.setdefault(peer, f"C{len(colors)}")
            ax.barh(i - 0.4 + height * (k + 0.5), pf["ratio"], height=height,
                    color=colors[peer], label=f"vs {peer}" if new else None,
                    xerr=[[pf["ratio"] - lo], [hi - pf["ratio"]]],
                    error_kw={"elinewidth": 0.8, "capsize": 2})
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([label for label, _ in rows])
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("ours time / peer time, paired runs: median and min-max "
                  "(log scale; left of 1 = ours faster)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    chart.tight_layout()
    chart.savefig(path, dpi=120)
    plt.close(chart)


# ---- progress ----------------------------------------------------------------


class Progress:
    """A one-line bar on stderr, only when stderr is a terminal."""

    def __init__(self, total: int, stream=sys.stderr) -> None:
        self.total, self.done, self.stream = total, 0, stream
        self.on = hasattr(stream, "isatty") and stream.isatty()
        self.t0 = time.monotonic()

    def show(self, label: str) -> None:
        if not self.on:
            return
        width = shutil.get_terminal_size((80, 20)).columns - 1
        filled = int(24 * self.done / max(1, self.total))
        secs = int(time.monotonic() - self.t0)
        text = (f"[{'#' * filled}{'.' * (24 - filled)}] {self.done}/{self.total} "
                f"{secs // 60}:{secs % 60:02d}  {label}")
        self.stream.write("\r" + text[:width].ljust(width))
        self.stream.flush()

    def step(self) -> None:
        self.done += 1

    def close(self) -> None:
        if self.on:
            width = shutil.get_terminal_size((80, 20)).columns - 1
            self.stream.write("\r" + " " * width + "\r")
            self.stream.flush()

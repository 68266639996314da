"""python -m benchmarks: runs end to end and writes sane figures.

No timing thresholds: only that every workload is there with positive,
finite numbers.  One --quick run (under 30 s) is shared by the tests.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

from alloc import BuddyAllocator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # benchmarks/ is not installed; last, it shadows nothing
    sys.path.append(ROOT)

ALL_WORKLOADS = [
    *(f"pair-{n}" for n in (64, 1024, 4096, 65536, 1048576)),
    *(f"pair-{n}-touched" for n in (64, 1024, 4096, 65536, 1048576)),
    "churn-py", "seed-zipf", "fill-64", "batch-64", "shared-pair",
    "fill64-shuf", "churn", "churn-dense", "churn-75pct", "pair64-empty",
    "fillrand", "scale",
]
#: batch-64 calls BuddyAllocator.alloc_many/free_many; an alloc without them
#: has it skipped (and said so), not failed.
HAS_BATCH = all(hasattr(BuddyAllocator, n) for n in ("alloc_many", "free_many"))
try:
    import matplotlib  # noqa: F401
    HAS_MATPLOTLIB = True
except ImportError:
    HAS_MATPLOTLIB = False
WORKLOADS = [w for w in ALL_WORKLOADS if HAS_BATCH or w != "batch-64"]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def positive(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def check_figure(name: str, fig: dict) -> None:
    assert positive(fig["ours_ns"]), (name, fig)
    assert fig["peers"], name
    for peer, pf in fig["peers"].items():
        for key in ("ns", "ratio"):
            assert positive(pf[key]), (name, peer, key, pf)
        lo, hi = pf["ratio_spread"]
        assert positive(lo) and positive(hi) and lo <= pf["ratio"] <= hi, (name, pf)
        assert all(positive(v) for v in fig["spread"][peer]), (name, fig["spread"])
    assert positive(fig["ratio"]) and fig["ratio_vs"] in fig["peers"], name
    assert all(positive(v) for v in fig["spread"]["ours"]), (name, fig["spread"])


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "quick.json"
    proc = run_cli("--quick", "--json", str(path))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    doc["path"] = str(path)
    return doc, proc.stdout, proc.stderr


def test_quick_json_has_every_workload_with_sane_values(quick):
    doc, _, _ = quick
    results = doc["workloads"]
    assert sorted(results) == sorted(WORKLOADS)
    for name, r in results.items():
        assert not r["errors"], (name, r["errors"])
        check_figure(name, r)
        for part, fig in r.get("parts", {}).items():
            check_figure(f"{name} {part}", fig)
        for side, n in r["failures"].items():
            assert isinstance(n, int) and n >= 0, (name, side, n)
        assert all(positive(v) for v in r["memory"]["peak_rss_kib"].values()), name
    assert set(results["fill64-shuf"]["parts"]) == {"alloc", "free"}
    assert set(results["scale"]["parts"]) == {"1 MiB", "64 MiB", "1 GiB", "16 GiB"}
    assert positive(results["churn"]["memory"]["metadata_bytes"])
    assert results["churn-75pct"]["failures"]["glibc malloc"] == 0
    pct = results["fillrand"]["extra"]["reached_pct"]
    assert pct and all(0 < p <= 100 for p in pct)
    wasted = results["seed-zipf"]["extra"]["wasted_ratio"]
    assert math.isfinite(wasted) and wasted >= 0
    assert results["fill-64"]["extra"]["full_after_fill"] is True
    assert results["pair64-empty"]["failures"] == {"ours": 0, "glibc malloc": 0}
    if not HAS_BATCH:
        assert list(doc["skipped"]) == ["batch-64"], doc["skipped"]
        assert "alloc_many" in doc["skipped"]["batch-64"]


def test_quick_prints_header_and_table(quick):
    doc, out, _ = quick
    env = doc["environment"]
    flat = " ".join(out.split())  # the header wraps long values
    for key in ("machine", "python", "cffi", "compiler", "cflags", "alloc"):
        assert env[key] and env[key] in flat, key
    for name in WORKLOADS:
        assert name in out, name


def test_quick_output_fits_an_80_column_terminal(quick):
    _, out, _ = quick
    too_wide = [line for line in out.splitlines() if len(line) >= 80]
    assert too_wide == []


def test_table_fits_80_columns_even_with_extreme_figures(quick):
    """Seven-digit times and ratios far from 1 still fit."""
    import copy

    from benchmarks.report import table
    from benchmarks.workloads import WORKLOADS as REGISTRY

    doc, _, _ = quick
    results = copy.deepcopy(doc["workloads"])
    for r in results.values():
        for fig in [r] + list(r.get("parts", {}).values()):
            fig["ours_ns"] = 9_876_543.2
            for pf in fig["peers"].values():
                pf.update(ns=1_234_567.8, ratio=0.00123, ratio_spread=[0.00111, 0.0234])
    text = table([REGISTRY[n] for n in results], results)
    assert [line for line in text.splitlines() if len(line) >= 80] == []


def test_quick_says_where_it_wrote_the_json(quick):
    doc, out, _ = quick
    assert f"Wrote every figure to {doc['path']}" in out


def is_svg(path) -> bool:
    import xml.etree.ElementTree as ET

    return ET.parse(str(path)).getroot().tag == "{http://www.w3.org/2000/svg}svg"


def is_png(path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def says_it_wrote_the_map(out: str, paths) -> bool:
    """`out` has "Wrote the arena map at that moment to" and then each of
    `paths` on a line of its own, indented."""
    lines = out.splitlines()
    at = lines.index("Wrote the arena map at that moment to")
    return lines[at + 1:at + 1 + len(paths)] == [f"  {p}" for p in paths]


def test_quick_writes_the_arena_map_beside_the_json_and_says_where(quick):
    """No --plot: the map goes beside the --json file, and the JSON records
    the state it shows: one refused allocation, the first."""
    doc, out, _ = quick
    folder = os.path.dirname(doc["path"])
    svg = os.path.join(folder, "arena-churn-75pct.svg")
    written = [svg]
    assert is_svg(svg)
    if HAS_MATPLOTLIB:
        png = os.path.join(folder, "arena-churn-75pct.png")
        assert is_png(png)
        written.append(png)
    assert says_it_wrote_the_map(out, written)
    record = doc["arena_map"]
    assert record["workload"] == "churn-75pct" and record["paths"] == written
    assert record["failed_allocs"] == 1
    refusal = record["refusal"]
    assert refusal["block_size"] > record["largest_free"], record
    assert "churn-75pct first refused an allocation" in " ".join(out.split())


def test_header_shows_the_one_optimization_flag_that_counts(quick):
    doc, _, _ = quick
    cflags = doc["environment"]["cflags"]
    first = cflags.split()[0]
    assert re.fullmatch(r"-O\w*", first), cflags
    note = re.sub(r"\(the project's flag, last wins over [^)]*\)", "", cflags)
    assert re.findall(r"(?<!\S)-O\w*", note) == [first], cflags


def test_effective_cflags_keeps_the_last_optimization_flag():
    from benchmarks.report import effective_cflags

    text = effective_cflags(["-g", "-O3", "-fwrapv", "-O2", "-fPIC"], "test")
    assert text == "-O2 (the project's flag, last wins over -O3); also -g -fwrapv -fPIC (test)"
    assert effective_cflags(["-O2", "-g"], "x") == "-O2; also -g (x)"


def test_piped_stderr_gets_one_progress_line_per_workload(quick):
    _, _, err = quick
    lines = [line for line in err.splitlines() if line.startswith("python -m benchmarks: [")]
    assert len(lines) == len(WORKLOADS), err
    for i, (line, name) in enumerate(zip(lines, WORKLOADS), 1):
        assert f"[{i}/{len(WORKLOADS)}] {name} " in line, line


def test_help():
    proc = run_cli("--help", timeout=60)
    assert proc.returncode == 0
    for flag in ("--quick", "--only", "--json", "--plot"):
        assert flag in proc.stdout
    assert "docs/workloads.md" in proc.stdout and "WORKLOADS.md" not in proc.stdout


def test_the_workloads_doc_defines_every_workload():
    """docs/workloads.md, which --help and the notes cite, is in the
    repository and names every workload the runner has (and shared-pair,
    defined before it is built)."""
    from benchmarks.workloads import WORKLOADS as REGISTRY

    with open(os.path.join(ROOT, "docs", "workloads.md"), encoding="utf-8") as f:
        doc = f.read()
    named = set(re.findall(r"`([A-Za-z0-9-]+)`", doc))
    pair_sizes = set(re.findall(r"N = ([\d, ]+)", doc)[0].replace(",", " ").split())
    for name in REGISTRY:
        base = re.sub(r"^pair-\d+", "pair-N", name)
        assert name in named or base in named, name
        if base != name:
            assert name.split("-")[1] in pair_sizes, name
    assert "shared-pair" in named


def test_only_restricts_the_set(tmp_path):
    path = tmp_path / "one.json"
    proc = run_cli("--quick", "--only", "pair-64", "--json", str(path))
    assert proc.returncode == 0, proc.stderr
    results = json.loads(path.read_text())["workloads"]
    assert list(results) == ["pair-64"]
    check_figure("pair-64", results["pair-64"])


def test_only_unknown_name_is_an_error():
    proc = run_cli("--only", "no-such-workload", timeout=60)
    assert proc.returncode == 2
    assert "no-such-workload" in proc.stderr and "pair-64" in proc.stderr


def test_plot_without_matplotlib_says_so(tmp_path):
    """matplotlib hidden (None in sys.modules makes its import fail): a clear
    message and exit status 2, before anything runs."""
    png = tmp_path / "ratios.png"
    snippet = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from benchmarks.__main__ import main\n"
        f"sys.exit(main(['--quick', '--only', 'pair-64', '--plot', {str(png)!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", snippet], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "matplotlib" in proc.stderr and "--plot" in proc.stderr
    assert not png.exists()


def test_gil_script_reports_the_gil_kept():
    out = subprocess.run([sys.executable, "-m", "benchmarks.gil"], cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=120).stdout
    assert "GIL held during C calls: True" in out
    assert "beside a busy thread" in out


def test_an_unbuilt_checkout_does_not_shadow_the_installed_alloc(tmp_path):
    """After ``pip install .`` (not -e) the checkout's alloc/ holds only
    sources, and Python puts the current directory first on sys.path: the
    runner and its children must still use the installed alloc.  A copy of
    the checkout's sources (nothing built) stands in for such a checkout.
    (Under an editable install the copy borrows the checkout's compiled core
    through setuptools' finder, so the test bites only against a
    non-editable install, as .ci/run makes one.)"""
    probe = subprocess.run([sys.executable, "-c", "import alloc"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    if probe.returncode:
        pytest.skip("alloc is not installed (only importable from the checkout)")
    for d in ("alloc", "benchmarks"):
        shutil.copytree(os.path.join(ROOT, d), tmp_path / d,
                        ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only",
                           "pair-64"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "FAILED" not in proc.stdout and "is missing" not in proc.stdout


def test_prefer_built_alloc_moves_only_an_unbuilt_checkout(tmp_path):
    from benchmarks import prefer_built_alloc

    (tmp_path / "alloc").mkdir()
    path = [str(tmp_path), "/usr/lib/python3", "site-packages"]
    assert prefer_built_alloc(path, str(tmp_path)) == path[1:] + path[:1]
    (tmp_path / "alloc" / "_buddy.abi3.so").write_bytes(b"")
    assert prefer_built_alloc(path, str(tmp_path)) == path


@pytest.mark.parametrize("flag, name, why", [
    ("--json", "no-such-folder/out.json", "does not exist"),
    ("--json", ".", "is a directory"),
    ("--plot", "no-such-folder/chart.png", "does not exist"),
    ("--plot", "chart.nosuchformat", "matplotlib writes no .nosuchformat files"),
    ("--json", "arena-churn-75pct.svg", "writes the arena map of churn-75pct there"),
    ("--plot", "arena-churn-75pct.png", "writes the arena map of churn-75pct there"),
])
def test_a_bad_output_path_is_refused_before_anything_runs(tmp_path, flag, name, why):
    if flag == "--plot":
        pytest.importorskip("matplotlib")
    path = name if name == "." else str(tmp_path / name)
    proc = run_cli("--quick", "--only", "pair-64", flag, path, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{flag} {path}" in proc.stderr and why in proc.stderr, proc.stderr
    assert "usage:" in proc.stderr and proc.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_plot_writes_the_chart_and_says_where(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "ratios.png"
    proc = run_cli("--quick", "--only", "pair-64", "fill64-shuf", "--plot", str(png))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"Wrote the chart to {png}" in proc.stdout
    # --only without churn-75pct: no arena map, and not a word about it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ratios.png"]
    assert "arena map" not in proc.stdout


def test_plot_writes_the_arena_map_beside_the_chart(tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "figures").mkdir()
    chart = tmp_path / "figures" / "ratios.png"
    json_path = tmp_path / "out.json"  # --plot wins over --json
    proc = run_cli("--quick", "--only", "churn-75pct", "--plot", str(chart),
                   "--json", str(json_path))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    svg, png = (tmp_path / "figures" / f"arena-churn-75pct.{ext}" for ext in ("svg", "png"))
    assert is_svg(svg) and is_png(png)
    assert says_it_wrote_the_map(proc.stdout, [str(svg), str(png)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures", "out.json"]
    out = proc.stdout
    assert out.index(f"Wrote the chart to {chart}") < out.index("Wrote the arena map")


def test_arena_map_without_matplotlib_is_the_svg_alone(tmp_path):
    """matplotlib hidden: the run still succeeds, writes the SVG and says
    why there is no PNG."""
    json_path = tmp_path / "out.json"
    snippet = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from benchmarks.__main__ import main\n"
        f"sys.exit(main(['--quick', '--only', 'churn-75pct', '--json', {str(json_path)!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", snippet], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    svg = tmp_path / "arena-churn-75pct.svg"
    assert is_svg(svg) and not (tmp_path / "arena-churn-75pct.png").exists()
    assert says_it_wrote_the_map(proc.stdout, [str(svg)])
    assert "Wrote no PNG of the arena map: matplotlib is not installed" in proc.stdout


def test_no_output_file_no_arena_map_and_a_hint(tmp_path):
    """With neither --plot nor --json the run writes no file at all (the
    map's would be the only one): it says how to get the map."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only",
                           "churn-75pct"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    flat = " ".join(proc.stdout.split())
    assert "Wrote no arena map of churn-75pct" in flat and "--plot PATH" in flat
    assert list(tmp_path.iterdir()) == []


def test_a_map_that_cannot_be_written_does_not_fail_the_run(tmp_path):
    """The figures are the run's job: a map it cannot write (here a folder
    stands where the SVG goes) is one line of output, not a failure."""
    (tmp_path / "arena-churn-75pct.svg").mkdir()
    json_path = tmp_path / "out.json"
    proc = run_cli("--quick", "--only", "churn-75pct", "--json", str(json_path))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "Wrote no arena map of churn-75pct: IsADirectoryError" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "arena_map" not in json.loads(json_path.read_text())


def test_ctrl_c_prints_what_was_measured_and_exits_130(tmp_path):
    """SIGINT once the first workload has finished (the progress line of the
    second is out): the table of the first, the partial JSON, exit status
    130 and no traceback.  churn's full runs take seconds, so it is still
    running when the signal comes."""
    path = tmp_path / "partial.json"
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks", "--only", "pair-64",
                             "churn", "--json", str(path)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        err = ""
        while "[2/2] churn" not in err:
            line = proc.stderr.readline()
            assert line, "the runner ended before churn started: " + err
            err += line
        proc.send_signal(signal.SIGINT)
        out, rest = proc.communicate(timeout=60)
    finally:
        proc.kill()
    err += rest
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err + out, err
    assert "Interrupted (Ctrl-C)" in out and "not measured: churn" in out, out
    rows = [line.split()[0] for line in out.splitlines() if line[:1].isalpha()]
    assert "pair-64" in rows and "churn" not in rows, out
    doc = json.loads(path.read_text())
    assert doc["environment"]["interrupted"] is True
    assert list(doc["workloads"]) == ["pair-64"]
    check_figure("pair-64", doc["workloads"]["pair-64"])


def test_chart_draws_each_ratio_from_1_in_two_titled_groups(quick):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from benchmarks.report import chart, ratio_text
    from benchmarks.workloads import WORKLOADS as REGISTRY

    doc, _, _ = quick
    results = doc["workloads"]
    figure = chart([REGISTRY[n] for n in results], results, "test")
    try:
        python, c = figure.axes
        assert python.get_title(loc="left") == "Python: alloc vs bytearray / numpy.empty"
        assert c.get_title(loc="left") == "C core vs glibc malloc"
        assert python.get_xscale() == c.get_xscale() == "log"
        ratios = [pf["ratio"] for name in ("pair-64", "churn")
                  for pf in results[name]["peers"].values()]
        for ax in (python, c):
            for bar in ax.patches:  # every bar spans 1 .. its ratio
                x0, x1 = sorted((bar.get_x(), bar.get_x() + bar.get_width()))
                assert x0 == pytest.approx(1) or x1 == pytest.approx(1)
            texts = [t.get_text() for t in ax.texts]
            assert "\u2190 ours faster" in texts and "ours slower \u2192" in texts
            assert any(x.get_xdata()[0] == 1 for x in ax.lines)  # the line at 1
        labels = [t.get_text() for ax in (python, c) for t in ax.texts]
        for r in ratios:
            assert ratio_text(r) + "\u00d7" in labels
    finally:
        plt.close(figure)


@pytest.mark.parametrize("side", ["ours", "bytearray", "numpy.empty"])
def test_batch_loop_times_each_side_per_block(side):
    if side == "ours" and not HAS_BATCH:
        pytest.skip("this alloc has no alloc_many/free_many")
    from benchmarks.pyloops import run_batch
    from benchmarks.workloads import WORKLOADS as REGISTRY

    p = REGISTRY["batch-64"].params_for(quick=True)
    one, _ = run_batch(side, dict(p, batches=3))
    samples, failures = one(1)
    assert positive(samples[""]) and failures == 0


# ---- the arena map: churn-75pct replayed in Python -------------------------

#: Small churns on a 1 MiB arena: the first refuses in its steps (220 slots
#: leave room after the fill), the second already in its fill.
STEP_REFUSAL = dict(capacity=1 << 20, min_size=64, slots=220, lo=64, hi=16384,
                    steps=5000, seed=1)
FILL_REFUSAL = dict(STEP_REFUSAL, slots=300, steps=20000)


@pytest.mark.parametrize("p", [STEP_REFUSAL, FILL_REFUSAL,
                               dict(STEP_REFUSAL, slots=256, hi=1024, seed=7)])
def test_arena_map_replays_the_c_drivers_trace(p):
    """The Python replay draws bench.c's splitmix64 trace: on the whole
    trace it refuses exactly the allocations the C driver's run refused and
    ends with exactly its requested bytes."""
    from benchmarks import _cdriver
    from benchmarks.arenamap import replay

    a, _, step_failures = replay(p, stop=False)
    c = _cdriver.churn("ours", 1, **p)[0]
    assert step_failures == c["failures"]
    assert a.bytes_allocated == c["bytes_requested"]
    a.close()


def test_arena_map_trace_numbers_match_the_c_generator():
    """The first draws of seed 1, as bench.c's splitmix64 gives them."""
    from benchmarks.arenamap import draw, size

    assert draw(1, 0) == 0x910A2DEC89025CC1
    assert draw(1, 1) == 0xBEEB8DA1658EEC67
    sizes = [size(1, k, 64, 16384) for k in range(1000)]
    assert all(64 <= n <= 16384 for n in sizes)
    assert min(sizes) < 128 and max(sizes) > 8192  # log-uniform over the range


@pytest.mark.parametrize("p, phase", [(STEP_REFUSAL, "step"), (FILL_REFUSAL, "fill")])
def test_arena_map_is_drawn_at_the_first_refusal(tmp_path, p, phase):
    from benchmarks.arenamap import replay, write

    drawn = write(str(tmp_path), quick=False, png=HAS_MATPLOTLIB, p=p)
    a, refusal = drawn.allocator, drawn.refusal
    assert a.counters()["failed_allocs"] == 1
    assert refusal is not None and refusal.phase == phase
    assert refusal.block_size == a.block_size(refusal.size) > a.largest_free
    # the state is the one the request came to: the replay up to it serves
    # every allocation before it
    fresh, first, _ = replay(p)
    assert first == refusal and fresh.stats() == a.stats()
    assert drawn.paths[0] == str(tmp_path / "arena-churn-75pct.svg")
    assert is_svg(drawn.paths[0])
    if HAS_MATPLOTLIB:
        assert drawn.paths[1:] == [str(tmp_path / "arena-churn-75pct.png")]
        assert is_png(drawn.paths[1])
    else:
        assert len(drawn.paths) == 1
    assert says_it_wrote_the_map("\n".join(drawn.lines), drawn.paths)
    where = f"step {refusal.at + 1:,}" if phase == "step" else f"slot {refusal.at + 1:,}"
    assert where in drawn.lines[0] and f"{refusal.size:,} bytes" in drawn.lines[0]


def test_arena_map_of_a_trace_with_no_refusal_shows_the_end(tmp_path):
    from benchmarks.arenamap import write

    p = dict(STEP_REFUSAL, slots=16, steps=100)
    drawn = write(str(tmp_path), quick=False, png=False, p=p)
    assert drawn.refusal is None and drawn.allocator.counters()["failed_allocs"] == 0
    assert "refused no allocation" in drawn.lines[0] and is_svg(drawn.paths[0])


def test_churn_75pct_first_refuses_in_its_fill():
    """What README and docs/workloads.md say of the map: churn-75pct's first
    refusal comes while filling slot 16,751 of 17,000, a 3,704-byte request
    (a 4 KiB block) with 3,008 bytes free, the largest free block 2 KiB;
    --quick draws the same fill."""
    from benchmarks.arenamap import Refusal, params, replay

    for quick in (False, True):
        a, first, _ = replay(params(quick))
        assert first == Refusal("fill", 16750, 3704, 4096)
        assert (a.bytes_free, a.largest_free, len(a)) == (3008, 2048, 16750)
        assert a.counters()["failed_allocs"] == 1
        a.close()


def test_readme_shows_the_arena_map_the_runner_draws():
    """README's Performance section shows docs/arena-churn-75pct.png, and
    the committed SVG shows the state the runner draws today (its caption's
    figures; the drawing itself may change with render())."""
    from benchmarks.arenamap import params, replay

    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    performance = readme[readme.index("## Performance"):readme.index("## Layout")]
    assert "(docs/arena-churn-75pct.png)" in performance
    docs = os.path.join(ROOT, "docs")
    assert is_png(os.path.join(docs, "arena-churn-75pct.png"))
    assert is_svg(os.path.join(docs, "arena-churn-75pct.svg"))
    with open(os.path.join(docs, "arena-churn-75pct.svg"), encoding="utf-8") as f:
        committed = f.read()
    a, _, _ = replay(params(quick=False))
    for figure in (f"live blocks: {len(a):,}", f"({a.bytes_free:,} B)",
                   f"({a.bytes_allocated:,} B)", f"({a.bytes_wasted:,} B)"):
        assert figure in committed, figure


def test_realloc_trace_counts_every_step():
    """benchmarks.realloc_trace classifies every realloc of the churn trace,
    and grows in place are really in place (the helper compares offsets)."""
    from benchmarks.realloc_trace import churn, zipf
    from benchmarks.workloads import WORKLOADS as REGISTRY

    p = dict(REGISTRY["churn-py"].params_for(quick=True), steps=3000)
    tally = churn(p)
    assert sum(tally.values()) <= 3000
    assert tally["grown in place"] > 0 and tally["shrunk or same block"] > 0
    z = dict(REGISTRY["seed-zipf"].params_for(quick=True), count=500)
    tally = zipf(z)
    assert sum(tally.values()) == 500


def test_sharedpair_script_reports_both_sides_and_the_ratio():
    out = subprocess.run([sys.executable, "-m", "benchmarks.sharedpair", "--runs", "2",
                          "--count", "2000"], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert "private BuddyAllocator:" in out and "SharedBuddyAllocator (attached):" in out
    ratio = float(re.search(r"median paired ratio ([0-9.]+)", out).group(1))
    assert positive(ratio)


def test_shared_pair_leaves_nothing_behind_when_its_child_is_killed():
    """The runner kills a child after its last reply: shared-pair's creator
    process must then exit too, and its segment must be gone."""
    import time

    before = {n for n in os.listdir("/dev/shm") if n.startswith("abuddy_")}
    child = subprocess.Popen([sys.executable, "-m", "benchmarks._child", "shared-pair",
                              "ours", "--quick"], cwd=ROOT, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        child.stdin.write("1\n")
        child.stdin.flush()
        assert "samples" in child.stdout.readline()
        kids = subprocess.run(["pgrep", "-P", str(child.pid)], capture_output=True,
                              text=True).stdout.split()
        assert kids  # the creator (and perhaps its resource tracker)
    finally:
        child.kill()
        child.wait()

    def running(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(") ")[1][0] != "Z"  # not a zombie
        except FileNotFoundError:
            return False

    for _ in range(100):
        if not any(running(k) for k in kids):
            break
        time.sleep(0.1)
    assert not any(running(k) for k in kids)
    after = {n for n in os.listdir("/dev/shm") if n.startswith("abuddy_")}
    assert after <= before


@pytest.mark.parametrize("name, quick, want", [
    ("pair-64", False, [3, 3, 3]),  # 9 runs over PY_PROCESSES = 3 processes
    ("churn-py", False, [3, 2, 2]),  # 7 runs: the first process makes one more
    ("pair-64", True, [3]),  # --quick: one process a side
    ("churn", False, [7]),  # the C level: one process
])
def test_python_workloads_spread_their_runs_over_processes(name, quick, want):
    from benchmarks.workloads import WORKLOADS as REGISTRY

    assert REGISTRY[name].groups_for(quick) == want


def test_a_job_pools_the_runs_of_its_processes_in_order(monkeypatch):
    """run_job starts one process a side per group and pools their timed
    runs, so that run r of ours still pairs with run r of each peer."""
    import io

    import benchmarks.__main__ as bm
    from benchmarks import report
    from benchmarks.workloads import WORKLOADS as REGISTRY

    started = []

    class CountedChild(bm.Child):
        def __init__(self, args):
            started.append(args[1])
            super().__init__(args)

    monkeypatch.setattr(bm, "Child", CountedChild)
    w = REGISTRY["pair-64"]
    monkeypatch.setattr(type(w), "groups_for", lambda self, quick: [2, 1])
    out = bm.run_job(w, "", ["ours", "bytearray"], True,
                     report.Progress(100, 1, stream=io.StringIO()))
    assert started == ["ours", "bytearray"] * 2  # two groups, a process a side each
    for side in ("ours", "bytearray"):
        samples = out[side]["samples"][""]
        assert len(samples) == 3 and all(positive(s) for s in samples), (side, samples)
        assert out[side]["failures"] == 0 and out[side]["peak_rss_kib"] > 0


def record_allocators(monkeypatch, floor) -> list:
    """The BuddyAllocators benchmarks.floor creates from now on, in order."""
    made = []
    real = floor.alloc.BuddyAllocator
    monkeypatch.setattr(floor.alloc, "BuddyAllocator",
                        lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    return made


def test_floor_times_each_way_of_writing_a_pair(monkeypatch, capsys):
    """python -m benchmarks.floor: every way frees what it allocates (the
    arena is empty after each loop) and each size gets its five rows."""
    from benchmarks import floor

    monkeypatch.setattr(floor, "PAIRS", 500)
    monkeypatch.setattr(floor, "ROUNDS", 1)
    made = record_allocators(monkeypatch, floor)
    for loop in floor.loops(100).values():
        loop()
        assert len(made[-1]) == 0 and made[-1].counters()["free_calls"] % 500 == 0
    assert made[-1].counters()["alloc_calls"] == 3 * 500  # api, methods, inline
    assert floor.main(["64"]) == 0
    out = capsys.readouterr().out
    for row in ("api", "methods", "inline", "slice", "bytearray(64)"):
        assert re.search(rf"^  {re.escape(row)} +[0-9.]+ ns +[0-9.]+x$", out, re.M), row
    assert "churn" not in out


def test_floor_takes_churn_py_apart(monkeypatch, capsys):
    """python -m benchmarks.floor churn: the api and inline ways free each
    slot's block before taking the step's one (every free accepted, one
    block a slot live at the end); the no-C way allocates nothing."""
    from benchmarks import floor

    monkeypatch.setattr(floor, "STEPS", 300)
    monkeypatch.setattr(floor, "ROUNDS", 1)
    made = record_allocators(monkeypatch, floor)
    slots = floor.WORKLOADS["churn-py"].params["slots"]
    for name, run in floor.churn_loops().items():
        assert run() > 0, name
        if name in ("api", "inline"):
            c = made[-1].counters()
            assert (len(made[-1]), c["alloc_calls"], c["free_calls"]) == (slots, slots + 300, 300)
        elif name == "no C":
            assert len(made[-1]) == 0 and made[-1].counters()["alloc_calls"] == 0
    assert floor.main(["churn"]) == 0
    out = capsys.readouterr().out
    assert "pair" not in out  # churn alone asks for no pair sizes
    for row in ("api", "inline", "no C", "bytearray"):
        assert re.search(rf"^  {re.escape(row)} +[0-9.]+ ns +[0-9.]+x$", out, re.M), row


def test_a_failed_process_group_ends_its_job(monkeypatch):
    """A child that dies ends the job with its error: the later groups of
    processes are not started, and nothing is pooled."""
    import benchmarks.__main__ as bm
    from benchmarks.workloads import WORKLOADS as REGISTRY

    calls = []

    def group(w, variant, sides, quick, progress, runs):
        calls.append(runs)
        return {"ours": {"error": "exit status -9: killed"}}

    monkeypatch.setattr(bm, "run_group", group)
    w = REGISTRY["pair-64"]
    monkeypatch.setattr(type(w), "groups_for", lambda self, quick: [3, 3, 3])
    out = bm.run_job(w, "", ["ours", "bytearray"], False, None)
    assert out == {"ours": {"error": "exit status -9: killed"}} and calls == [3]

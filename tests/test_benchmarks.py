"""python -m benchmarks: runs end to end and writes sane figures.

No timing thresholds: only that every workload is there with positive,
finite numbers.  One --quick run (under 30 s) is shared by the tests.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKLOADS = [
    *(f"pair-{n}" for n in (64, 1024, 4096, 65536, 1048576)),
    *(f"pair-{n}-touched" for n in (64, 1024, 4096, 65536, 1048576)),
    "churn-py", "seed-zipf", "fill-64",
    "fill64-shuf", "churn", "churn-dense", "churn-75pct", "fillrand", "scale",
]


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
        return json.load(f), proc.stdout


def test_quick_json_has_every_workload_with_sane_values(quick):
    doc, _ = quick
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


def test_quick_prints_header_and_table(quick):
    doc, out = quick
    env = doc["environment"]
    for key in ("machine", "python", "cffi", "compiler", "cflags", "alloc"):
        assert env[key] and env[key] in out, key
    for name in WORKLOADS:
        assert name in out, name


def test_help():
    proc = run_cli("--help", timeout=60)
    assert proc.returncode == 0
    for flag in ("--quick", "--only", "--json", "--plot"):
        assert flag in proc.stdout


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
    assert "FAILED" not in proc.stdout and "compiled core" not in proc.stdout


def test_prefer_built_alloc_moves_only_an_unbuilt_checkout(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "_benchmarks_init", os.path.join(ROOT, "benchmarks", "__init__.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # (re)orders sys.path as conftest did
    prefer_built_alloc = module.prefer_built_alloc
    (tmp_path / "alloc").mkdir()
    path = [str(tmp_path), "/usr/lib/python3", "site-packages"]
    assert prefer_built_alloc(path, str(tmp_path)) == path[1:] + path[:1]
    (tmp_path / "alloc" / "_buddy.abi3.so").write_bytes(b"")
    assert prefer_built_alloc(path, str(tmp_path)) == path

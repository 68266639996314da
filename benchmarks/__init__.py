"""Benchmarks of alloc: ``python -m benchmarks --help``.

Modules: ``workloads`` (the named workloads of docs/workloads.md),
``pyloops`` (the Python-level timed loops), ``_cdriver`` (the only module
that touches the C driver, csrc/bench.c), ``_child`` (runs one side of one
workload in its own process), ``report`` (summary, table, chart, progress),
``arenamap`` (churn-75pct replayed in Python to its first refusal, drawn)
and ``__main__`` (the command line).

Importing this package first makes sure that ``import alloc`` finds a
*built* alloc (see ``prefer_built_alloc``), in the runner and in every
child it starts.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
from typing import List

#: The checkout this package lives in (benchmarks/ is not installed).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def has_compiled_core(tree: str) -> bool:
    """True if ``tree/alloc`` holds a compiled core this interpreter can
    load (an in-place build, as ``pip install -e .`` makes)."""
    pkg = os.path.join(tree, "alloc")
    return any(os.path.exists(os.path.join(pkg, "_buddy" + suffix))
               for suffix in importlib.machinery.EXTENSION_SUFFIXES)


def prefer_built_alloc(path: List[str], tree: str = ROOT) -> List[str]:
    """`path` (a sys.path) with the checkout `tree` moved to the end when
    its alloc/ is only sources: after ``pip install .`` (not ``-e``), or
    with an in-place build made for another Python version, the checkout
    would otherwise shadow the installed alloc, since Python puts the
    current directory (and the runner's PYTHONPATH) before site-packages.
    If no alloc is installed, the checkout's alloc is still found last and
    says plainly that its compiled core is missing."""
    if has_compiled_core(tree) or not os.path.isdir(os.path.join(tree, "alloc")):
        return list(path)
    here = os.path.realpath(tree)

    def is_tree(entry: str) -> bool:
        return os.path.realpath(entry or os.curdir) == here

    return [e for e in path if not is_tree(e)] + [e for e in path if is_tree(e)]


sys.path[:] = prefer_built_alloc(sys.path)

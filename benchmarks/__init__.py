"""Benchmarks of alloc: ``python -m benchmarks --help``.

Modules: ``workloads`` (the named workloads of WORKLOADS.md), ``pyloops``
(the Python-level timed loops), ``_cdriver`` (the only module that touches
the C driver, csrc/bench.c), ``_child`` (runs one side of one workload in
its own process), ``report`` (summary, table, chart, progress bar) and
``__main__`` (the command line).
"""

"""Every Python example in README.md runs as printed and prints what it says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)

# What each example prints, in README order ("" for the silent ones, which
# check themselves with assert).
PRINTS = ["0.06666666666666667\n", "10000 b'xxx'\n", "", "499500.0 1\n", ""]


def test_every_example_is_accounted_for():
    assert len(BLOCKS) == len(PRINTS)


@pytest.mark.parametrize("index", range(len(PRINTS)))
def test_readme_example_runs(index, capsys):
    exec(compile(BLOCKS[index], str(README), "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out == PRINTS[index]

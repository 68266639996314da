"""Every Python example in README.md runs as printed and prints what it says.

An example with an ``if __name__ == "__main__":`` block (the
multiprocessing one) runs as a script of its own, as a user would run it, so
that every start method can import its worker function."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)

# What each example prints, in README order ("" for the silent ones, which
# check themselves with assert).
PRINTS = ["0.06666666666666667\n", "10000 b'xxx'\n", "", "499500.0 1\n",
          "[(0, 65536), (1, 65536), (2, 65536), (3, 65536)] 0\n", ""]


def test_every_example_is_accounted_for():
    assert len(BLOCKS) == len(PRINTS)


@pytest.mark.parametrize("index", range(len(PRINTS)))
def test_readme_example_runs(index, capsys, tmp_path):
    if 'if __name__ == "__main__":' in BLOCKS[index]:
        script = tmp_path / "example.py"
        script.write_text(BLOCKS[index], encoding="utf-8")
        out = subprocess.run([sys.executable, str(script)], capture_output=True,
                             text=True, timeout=120)
        assert (out.returncode, out.stderr) == (0, "")
        assert out.stdout == PRINTS[index]
        return
    exec(compile(BLOCKS[index], str(README), "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out == PRINTS[index]

"""Types as a user meets them: a typed script checks clean, and the
mistakes in it (marked ``# type: ignore[...]``) are still reported; help()
and tracebacks show real annotations and the public names.

.ci/run also runs pyright on the same script (tests/typing/pyrightconfig.json).
"""

import os
import pydoc

import alloc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "typing", "user_script.py")


def test_user_script_type_checks_and_its_mistakes_are_caught():
    """mypy --strict passes on the script; with --warn-unused-ignores
    (part of --strict) an ignore comment on a line that is no longer an
    error fails the run, so each marked mistake must still be one."""
    from mypy import api

    old = os.environ.get("MYPYPATH")
    os.environ["MYPYPATH"] = ROOT  # the sources, whatever kind of install
    try:
        out, err, status = api.run(["--strict", "--no-incremental", SCRIPT])
    finally:
        if old is None:
            del os.environ["MYPYPATH"]
        else:
            os.environ["MYPYPATH"] = old
    assert status == 0, out + err
    with open(SCRIPT, encoding="utf-8") as f:
        marked = sum("# type: ignore[" in line for line in f)
    assert marked >= 5  # free(123), alloc("64"), a str from an int, a bad key, ...


def test_help_shows_public_names_and_real_annotations():
    text = pydoc.render_doc(alloc.BuddyAllocator, renderer=pydoc.plaintext)
    assert "alloc(self, size: int, align: Optional[int] = None) -> memoryview" in text
    assert "stats(self) -> alloc.Stats" in text
    assert "'" not in text.split("free(self, block:")[1].split("\n")[0]  # not a string
    for cls in (alloc.BuddyAllocator, alloc.OffsetAllocator, alloc.OutOfMemory,
                alloc.UseAfterFree, alloc.BufferArgumentError, alloc.Stats,
                alloc.Counters):
        assert cls.__module__ == "alloc", cls
        assert repr(cls) == f"<class 'alloc.{cls.__name__}'>"


def test_a_pool_is_true_even_when_empty():
    with alloc.BuddyAllocator(4096) as pool:
        assert len(pool) == 0 and bool(pool)
        assert alloc.OffsetAllocator(4096)

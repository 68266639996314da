"""Build script for the cffi extension ``alloc._buddy`` (never imported at run time).

setup.py names it in ``cffi_modules``.  The module compiles the C core
(``buddy.c``), the binding's pool layer over it (``pool.c``: free by buffer
address, exact sizes), the entry points that take a Python object's buffer
in C (``seam.c``), the C benchmark driver (``bench.c``) and the shared-memory
allocator (``shared.c``, and ``shared_py.c`` for its GIL and buffer entry
points) into one extension.

Every call into this module keeps the GIL: the preamble redefines the macros
that cffi's generated wrappers use to release and re-take it (and to save and
restore errno), so a short call costs ~40 ns instead of a GIL round-trip that
can wait for a busy thread's whole switch interval.  That relies on how cffi
writes its wrappers; ``pyproject.toml`` pins the verified cffi range and
``tests/test_packaging.py`` checks from C that the GIL really is held.
On a free-threaded build the core's own mutex (``BUDDY_LOCKED``) makes each
call atomic; it is never held while Python code runs.
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))


def _read(name: str) -> str:
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return f.read()


def _cdef_from_header(text: str) -> str:
    """Keep what cffi's cdef parser accepts: preprocessor lines go, except
    constants (``#define NAME 62`` stays, any other value becomes ``...``
    for the compiler to fill in); the ``extern "C"`` braces go."""
    out = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#"):
            parts = s.split(None, 2)
            if parts[0] == "#define" and len(parts) == 3 and "(" not in parts[1]:
                value = parts[2] if parts[2].isdigit() else "..."
                out.append(f"#define {parts[1]} {value}")
            continue
        if s in ('extern "C" {', "}"):
            continue
        out.append(line)
    return "\n".join(out)


FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))

# Baked into the module so that alloc refuses to run on a stale build.
VERSION = re.search(
    r'__version__ = "([^"]+)"', _read(os.path.join("..", "alloc", "_version.py"))
).group(1)

CDEF = "\n".join(
    _cdef_from_header(_read(h))
    for h in ("buddy.h", "pool.h", "seam.h", "bench.h", "shared.h", "shared_py.h")
)
# The one-argument entry points of csrc/seam.h: a pair per slot.
SEAM_SLOTS = int(re.search(r"#define SEAM_SLOTS (\d+)", _read("seam.h")).group(1))
SEAM_ENTRIES = "".join(
    f"int64_t seam_alloc_{k}(uint64_t size);\nseam_obj seam_view_{k}(seam_obj size);\n"
    f"int seam_free_{k}(uintptr_t obj);\nint seam_free_obj_{k}(seam_obj obj);\n"
    f"int seam_free_at_{k}(uint64_t off);\n"
    for k in range(SEAM_SLOTS)
)
CDEF += SEAM_ENTRIES
# ... and those of csrc/shared_py.h.
SHARED_SLOTS = int(re.search(r"#define SHARED_SLOTS (\d+)", _read("shared_py.h")).group(1))
SHARED_ENTRIES = "".join(
    f"int64_t shared_alloc_{k}(uint64_t size);\nseam_obj shared_view_{k}(seam_obj size);\n"
    f"int shared_free_{k}(uintptr_t obj);\nint shared_free_obj_{k}(seam_obj obj);\n"
    for k in range(SHARED_SLOTS)
)
CDEF += SHARED_ENTRIES
CDEF += """
/* binding helpers, defined in the preamble below */
int alloc_gil_held(void);
int seam_raw_objects(void);
seam_obj seam_echo(seam_obj obj);
const char *alloc_build_version(void);
void *memset(void *s, int c, size_t n);
"""


def _cffi_int_macros() -> str:
    """cffi's own _cffi_to_c_int and _cffi_from_c_int (from the
    _cffi_include.h that the generated module embeds), renamed
    alloc_cffi_to_c_int and alloc_cffi_from_c_int, for the preamble's raw
    objects to fall back on; or "" if they are not found as expected (the
    build then converts every argument as cffi does, and the binding passes
    id()s: seam.h)."""
    import cffi

    path = os.path.join(os.path.dirname(cffi.__file__), "_cffi_include.h")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return ""
    out = []
    for name, arg in (("_cffi_to_c_int", "o"), ("_cffi_from_c_int", "x")):
        m = re.search(rf"^#define {name}\({arg}, type\)((?:.*\\\n)+.*)$", text, re.M)
        if m is None:
            return ""
        out.append(f"#define alloc{name}({arg}, type){m.group(1)}")
    return "\n".join(out) + "\n"


CFFI_INT_MACROS = _cffi_int_macros()

PREAMBLE = """
#include "buddy.h"
#include "pool.h"
#include "seam.h"
#include "bench.h"
#include "shared.h"
#include "shared_py.h"
#include <string.h>

/* Keep the GIL across every call (see csrc/ffi_build.py). */
#undef Py_BEGIN_ALLOW_THREADS
#undef Py_END_ALLOW_THREADS
#define Py_BEGIN_ALLOW_THREADS {
#define Py_END_ALLOW_THREADS }
#undef _cffi_save_errno
#undef _cffi_restore_errno
#define _cffi_save_errno() ((void)0)
#define _cffi_restore_errno() ((void)0)

/* 1 when called with the GIL held: proves the macros above took effect. */
static int alloc_gil_held(void) { return PyGILState_Check(); }

%(cffi_int_macros)s
/* Raw objects (csrc/seam.h, seam_obj): the wrappers cffi generates below
 * convert each integer argument with _cffi_to_c_int(obj, type) and each
 * integer result with _cffi_from_c_int(x, type), naming the C type as
 * declared.  For seam_obj (unsigned long long) these pass the PyObject *
 * through; every other type goes to cffi's own macros, renamed.  Only
 * where the compiler can tell the types apart at compile time and no
 * other declared type is unsigned long long (uint64_t is on some
 * platforms); elsewhere ALLOC_RAW is 0 and cffi converts as usual. */
#if defined(ALLOC_CFFI_INT_MACROS) && defined(__GNUC__)
#define ALLOC_RAW(type)                                                      \\
    (__builtin_types_compatible_p(type, seam_obj) &&                         \\
     !__builtin_types_compatible_p(uint64_t, seam_obj) &&                    \\
     !__builtin_types_compatible_p(uintptr_t, seam_obj) &&                   \\
     !__builtin_types_compatible_p(size_t, seam_obj))
#undef _cffi_to_c_int
#define _cffi_to_c_int(o, type)                                              \\
    (ALLOC_RAW(type) ? (type)(uintptr_t)(o) : alloc_cffi_to_c_int(o, type))
#undef _cffi_from_c_int
#define _cffi_from_c_int(x, type)                                            \\
    (ALLOC_RAW(type) ? (PyObject *)(uintptr_t)(x) : alloc_cffi_from_c_int(x, type))
#else
#define ALLOC_RAW(type) 0
#endif

/* 1 if seam_obj crosses cffi as the object itself. */
static int seam_raw_objects(void) { return ALLOC_RAW(seam_obj); }

/* obj itself (a new reference) where raw objects work: a test's probe.
 * Never called otherwise (the value would not be an object). */
static seam_obj seam_echo(seam_obj obj)
{
    Py_INCREF((PyObject *)(uintptr_t)obj);
    return obj;
}

static const char *alloc_build_version(void) { return "%(version)s"; }
""" % {
    "version": VERSION,
    "cffi_int_macros": "#define ALLOC_CFFI_INT_MACROS 1\n" + CFFI_INT_MACROS if CFFI_INT_MACROS else "",
} + SEAM_ENTRIES + SHARED_ENTRIES  # the wrappers below call them: declared

SOURCES = ["csrc/buddy.c", "csrc/pool.c", "csrc/seam.c", "csrc/bench.c",
           "csrc/shared.c", "csrc/shared_py.c"]

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "alloc._buddy",
    PREAMBLE,
    sources=SOURCES,
    include_dirs=["csrc"],
    define_macros=[("BUDDY_LOCKED", "1")] if FREE_THREADED else [],
    # shm_open lives in librt before glibc 2.34; pthread for the robust mutex.
    libraries=["rt", "pthread"] if sys.platform.startswith("linux") else [],
    # The limited API makes every call 2-4x dearer (a one-argument call:
    # ~150 ns vs ~40 ns here), and free-threaded builds have none.
    py_limited_api=False,
    # An undeclared function is an error: the wrappers must see every
    # entry point's real prototype (an implicit one returns int).  Hidden
    # visibility: the module exports only PyInit__buddy (PyMODINIT_FUNC
    # marks it), so calls between csrc/'s files (the benchmark loops into
    # the core, the pool into the core) are direct, not through the PLT.
    extra_compile_args=["-O2", "-fvisibility=hidden",
                        "-Werror=implicit-function-declaration"] if os.name != "nt" else [],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)

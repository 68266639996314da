"""BuddyAllocator: the one module that touches the compiled core (``ffi``/``lib``).

How a block stays memory-safe: every block is a slice of one base
memoryview over the arena.  CPython's slices share the base view's managed
buffer, which holds the arena's export until the *last* view over it is
gone; so neither ``close()`` nor dropping the allocator can free or unlock
the arena under a live view.  An arena the allocator made itself is a
``ffi.gc`` pointer kept alive by that same buffer.

How a block is found again on ``free``: by its buffer alone.  The C pool
(``csrc/pool.h``) knows the arena's address and the size every live block
was requested with, so one call turns the (address, length) of whatever
buffer is passed -- the view, ``numpy.frombuffer(view)``, a stranger -- into
"exactly this live block, freed" or a status saying why not.  Python keeps
no per-block records.

Thread safety: the C calls keep the GIL (see ``csrc/ffi_build.py``), so each
is atomic, and every operation is one C call on shared state.
"""

import contextlib
import functools
import numbers
import operator
import os
import sys
import threading
from typing import (Any, Dict, Iterable, Iterator, List, Optional, Tuple, Type,
                    TypeVar, Union, cast)

if sys.version_info >= (3, 12):
    from collections.abc import Buffer
else:  # the same protocol, backported
    from typing_extensions import Buffer

if sys.version_info >= (3, 11):
    from typing import TypedDict
else:
    from typing_extensions import TypedDict

from typing import Protocol


class _ArrayLike(Protocol):
    """numpy arrays: a buffer, but numpy's stubs say so (``__buffer__``)
    only to type checkers targeting Python 3.12+."""

    @property
    def __array_interface__(self) -> Dict[str, Any]: ...


#: What ``free``, ``offset_of`` and ``realloc`` accept: any object that
#: exports a buffer (bytes-like objects, memoryviews, mmap, numpy arrays).
BufferLike = Union[Buffer, _ArrayLike]

try:
    from ._buddy import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "alloc's compiled core (alloc._buddy) is missing: install the package "
        "(pip install .  or  pip install -e .) rather than importing it from "
        f"an unbuilt source tree ({exc})"
    ) from exc
from . import _observe
from ._errors import BufferArgumentError, OutOfMemory, UseAfterFree
from ._version import __version__

_BUILT_FOR = ffi.string(lib.alloc_build_version()).decode()
if _BUILT_FOR != __version__:
    raise ImportError(
        f"alloc {__version__} found a compiled core built for alloc "
        f"{_BUILT_FOR}: rebuild it (pip install -e . or pip install .)"
    )

__all__ = ["BuddyAllocator", "OffsetAllocator", "SharedBuddyAllocator", "Stats", "Counters"]



class Stats(TypedDict):
    """What :meth:`BuddyAllocator.stats` returns (one consistent snapshot)."""

    bytes_total: int
    bytes_allocated: int
    bytes_wasted: int
    bytes_free: int
    largest_free: int
    min_size: int
    live_blocks: int
    free_blocks: Dict[int, int]
    metadata_bytes: int
    peak_bytes_allocated: int
    peak_bytes_in_blocks: int
    peak_live_blocks: int
    orders: List[_observe.OrderRow]


class Counters(TypedDict):
    """What :meth:`BuddyAllocator.counters` returns."""

    alloc_calls: int
    free_calls: int
    failed_allocs: int


_P = TypeVar("_P", bound="_Pool")

_MAX_CAPACITY = lib.BUDDY_MAX_CAPACITY
_U64_MAX = (1 << 64) - 1
#: The largest align the core takes (a uint64_t power of two); any larger
#: one needs a block larger than every arena, as this one already does.
_MAX_ALIGN = 1 << 63

# Bound once: a module-global lookup is cheaper than ``lib.x`` each call.
_c_alloc = lib.pool_alloc
_from_buffer = ffi.from_buffer
_REFUSED = lib.POOL_REFUSED
_ZERO = lib.SEAM_ALLOC_ZERO
_NO_TABLE = lib.POOL_NO_TABLE
_USE_AFTER_FREE = lib.POOL_USE_AFTER_FREE
_NO_LOCK = contextlib.nullcontext()


# ---- the seam: how a block and its size cross into C ------------------------
#
# Where the build allows (csrc/seam.h, "objects as they are"), cffi passes a
# block to free as the object itself, and alloc's entry point answers with
# the block's view, made in C: one C call and no Python int or slice in
# between.  A 64-byte alloc+free pair: 296 -> 207-215 ns (benchmarks.floor's
# api row, 3.11).  Elsewhere -- a compiler that cannot tell the types apart, a
# platform whose uint64_t is unsigned long long, a free-threaded build for
# views, or ALLOC_SEAM=ids in the environment (how the tests run this path)
# -- the same entry points take id(block) and the view is sliced here, by
# _view_by_offset and _free_by_id below.


class _Refusal(Exception):
    """A refused view entry point: args[0] is the pool's status.  Raised
    from C (csrc/seam.h) or by _view_by_offset; always caught here."""


def _raw_objects_work() -> bool:
    """True where seam_obj crosses cffi as the object itself: the build says
    so, and a probe comes back as itself (a cffi whose wrappers no longer
    use the macros the build redefines refuses the probe instead)."""
    if not lib.seam_raw_objects():
        return False
    probe = object()
    try:
        return lib.seam_echo(probe) is probe
    except TypeError:
        return False


if _raw_objects_work():
    lib.seam_set_refusal(_Refusal)
    _RAW = os.environ.get("ALLOC_SEAM") != "ids"
else:
    _RAW = False
_VIEWS = _RAW and bool(lib.seam_views())


def _no_view(size: object) -> None:
    """The view entry point of an allocator with no arena view (never
    created, or closed): the slow path decides and says why."""
    return None


def _view_by_offset(mv: memoryview, entry: Any, size: object) -> Optional[memoryview]:
    """What a view entry point (seam_view_<k>) does, from the offset one:
    the block's view; None for a request the slow path decides (not an exact
    int, 0, out of range); or _Refusal(status)."""
    if type(size) is int:
        try:
            off = entry(size)
        except OverflowError:  # < 0 or >= 2**64
            return None
        if off >= 0:
            return mv[off : off + size]
        if off != _ZERO:
            mv = None  # type: ignore[assignment]  # the traceback must not pin the arena
            raise _Refusal(off)
    return None


def _free_by_id(entry: Any, block: object) -> int:
    """A free entry point called as the raw seam calls it (with the block)."""
    return int(entry(id(block)))


def _free_entry_for(prefix: str, slot: int, free: Any, h: Any) -> Any:
    """The free entry point of slot ``slot`` of the ``prefix`` ("seam",
    "shared") entry points: the block itself to <prefix>_free_obj_<slot>,
    or through the id() seam its id() to <prefix>_free_<slot>; with no slot
    (-1), its id() to the two-argument ``free`` with the handle ``h``."""
    if slot < 0:
        return functools.partial(_free_by_id, functools.partial(free, h))
    if _RAW:
        return getattr(lib, f"{prefix}_free_obj_{slot}")
    return functools.partial(_free_by_id, getattr(lib, f"{prefix}_free_{slot}"))


#: What guard mode fills free memory with (0xDB: "dead block").
_GUARD_BYTE = 0xDB
#: The pool of an allocator whose __init__ never ran (the C side refuses it).
_NO_POOL = ffi.cast("alloc_pool_t *", 0)


def _status_error(status: int, what: str) -> Exception:
    """The exception a user would catch for a failed buddy_status."""
    message = ffi.string(lib.buddy_strerror(status)).decode()
    if status == lib.BUDDY_ENOMEM:
        return OutOfMemory(f"{what}: {message}")
    if status == lib.BUDDY_ECORRUPT:
        return RuntimeError(f"{what}: {message}")
    return ValueError(f"{what}: {message}")


def _use_after_free(h: Any, what: str, off: Optional[int] = None) -> UseAfterFree:
    """Guard mode's error, naming where the pool found a changed byte."""
    if off is None:
        off = int(lib.pool_guard_bad(h))
        what += ": this allocation was taken back and the pattern restored"
    return UseAfterFree(
        f"use after free: the byte at offset {off} was written after its "
        f"block was freed (guard mode fills freed blocks with "
        f"0x{_GUARD_BYTE:02X}); {what}", off)


def _never_created(a: object) -> ValueError:
    return ValueError(
        f"the allocator was never created ({type(a).__name__}.__init__ did "
        "not run BuddyAllocator.__init__: a subclass must call "
        "super().__init__())"
    )


def _as_size(size: object, name: str = "size") -> int:
    """``operator.index(size)`` for a non-negative integer, bools refused
    (Python's, and numpy's, which older numpy still lets index)."""
    if isinstance(size, bool) or type(size).__name__ in ("bool", "bool_"):
        raise TypeError(f"{name} must be an integer, not bool")
    try:
        n = operator.index(size)  # type: ignore[arg-type]
        if type(n) is not int:  # Python 3.9 returns int subclasses as they are
            n = int.__index__(n)  # the exact value, whatever the subclass says
    except TypeError:
        raise TypeError(
            f"{name} must be an integer, not {type(size).__name__}"
        ) from None
    if n < 0:
        raise ValueError(f"{name} must be >= 0, got {n}")
    return n


def _min_size_arg(min_size: object) -> int:
    """``min_size`` as the power of two at or below it."""
    m = _as_size(min_size, "min_size")
    if m < 1:
        raise ValueError("min_size must be >= 1")
    return 1 << (m.bit_length() - 1)  # round down to 2**k


def _as_align(align: object) -> int:
    """``align`` as an int power of two (None: 1, no constraint)."""
    if align is None:
        return 1
    a = _as_size(align, "align")
    if a < 1 or a & (a - 1):
        raise ValueError(f"align must be a power of two >= 1, got {a}")
    return a


def _block_size(size: int, min_size: int) -> int:
    """The power of two >= max(size, min_size) (any size, no C call)."""
    return 1 << (max(size, min_size) - 1).bit_length()


def _gil_held() -> bool:
    """True if C calls into the core run with the GIL held (they should)."""
    return bool(lib.alloc_gil_held())


class _Pool:
    """What every allocator over the core shares: the C pool, statistics,
    checks, the arena map and the life cycle.  Subclasses say what a block
    is (a view, an offset)."""

    # Per-instance state starts as _STATE says, set on the instance by
    # __new__, so close(), repr() and the properties work even if __init__
    # failed half-way (or a subclass never called it).
    #
    # None of it is a class attribute: CPython 3.12 and 3.13 do not
    # specialise reading an instance attribute that shadows a class
    # attribute (3.11 did), and the fast paths read the entry points (and
    # BuddyAllocator's _mv) on every call.  Measured with class-level
    # defaults and without, a 64-byte alloc+free pair (benchmarks.floor's
    # api row, median of 7 interleaved rounds): 376 -> 314 ns on 3.12,
    # 463 -> 357 ns on 3.13; unchanged on 3.11.
    #
    # The pool's one-argument entry points (csrc/seam.h) are
    # _alloc_entry(size), _free_entry(block) and _free_at_entry(offset),
    # and BuddyAllocator's _view_entry(size); until the pool exists they
    # refuse, as a never-created pool.  _slot is the C slot they are bound
    # to, or -1.
    _STATE: Dict[str, Any] = {
        "_closed": True,
        "_h": _NO_POOL,
        "_core": None,
        "_st": None,
        "_capacity": 0,
        "_min_size": 0,
        "_guard": False,
        "_alloc_entry": functools.partial(lib.seam_alloc, _NO_POOL),
        "_free_entry": _free_entry_for("seam", -1, lib.seam_free, _NO_POOL),
        "_free_at_entry": functools.partial(lib.pool_free_at, _NO_POOL),
        "_slot": -1,
    }
    _closed: bool
    _h: Any
    _core: Any
    _st: Any
    _capacity: int
    _min_size: int
    _guard: bool
    _alloc_entry: Any
    _free_entry: Any
    _free_at_entry: Any
    _slot: int

    def __new__(cls: Type[_P], *args: Any, **kwargs: Any) -> _P:
        self = super().__new__(cls)
        for name, value in cls._STATE.items():
            setattr(self, name, value)
        return self

    def _open(self, capacity: int, min_size: int, base: int) -> None:
        """Create the C pool for ``capacity`` bytes at address ``base``;
        raise what a user should see if it cannot be made."""
        out = ffi.new("alloc_pool_t **")
        status = lib.pool_new(capacity, min_size, base, out)
        if status == lib.BUDDY_ENOMEM:
            meta = int(lib.buddy_metadata_bytes(capacity, min_size))
            raise MemoryError(
                f"cannot allocate the allocator's metadata for {capacity} bytes "
                f"in blocks of at least {min_size} ({capacity // min_size} "
                f"minimum blocks, {meta} bytes of metadata): use a larger min_size"
            )
        if status != lib.BUDDY_OK:
            raise _status_error(status, f"{type(self).__name__}()")
        self._h = ffi.gc(out[0], lib.seam_destroy)  # also frees its slot
        self._bind_entries()
        self._core = lib.pool_core(self._h)  # lives as long as self._h
        self._st = lib.buddy_stats(self._core)
        self._capacity = capacity
        self._min_size = min_size
        self._closed = False

    def _bind_entries(self) -> None:
        """Point the one-argument entry points at the pool ``self._h``.

        Whatever sets ``self._h`` must call this (else the fast paths reach
        no pool and refuse), and destroy that pool with ``lib.seam_destroy``,
        which frees its slot.  The pool is bound to a C slot while one is
        free: one argument instead of two saves ~45 ns a call (cffi packs
        two or more in a tuple).  Else the same functions get the pool
        passed each call."""
        slot = self._slot = lib.seam_bind(self._h)
        self._free_entry = _free_entry_for("seam", slot, lib.seam_free, self._h)
        if slot >= 0:
            self._alloc_entry = getattr(lib, f"seam_alloc_{slot}")
            self._free_at_entry = getattr(lib, f"seam_free_at_{slot}")
        else:
            self._alloc_entry = functools.partial(lib.seam_alloc, self._h)
            self._free_at_entry = functools.partial(lib.pool_free_at, self._h)

    def blocks(self) -> Iterator[Tuple[int, int, int]]:
        """``(offset, block_size, requested)`` for every live block, in
        address order.  Walks the core's bitmaps: O(N log N) for N blocks,
        live or free; each step is one C call, so a block freed or
        allocated during the walk is seen or not, never half."""
        if self._h == ffi.NULL:
            raise _never_created(self)
        out = ffi.new("uint64_t[3]")
        off = 0
        while off < self._capacity:
            status = self._c_block_at(off, out)
            if status == lib.BUDDY_ECLOSED:
                raise ValueError("the allocator is closed")
            if status not in (lib.BUDDY_OK, lib.BUDDY_EFREE):
                raise self._error(status, "blocks()")
            if status == lib.BUDDY_OK:
                yield int(out[0]), int(out[1]), int(out[2])
            off = int(out[0] + out[1])

    def render(self, path: Union[str, os.PathLike[str], None] = None, *,
               width: int = 1200) -> Optional[str]:
        """Draw the arena map: live blocks (requested part and wasted tail),
        free blocks and the part of the buddy tree past the capacity, with
        a legend and the statistics.

        With no ``path``, return the SVG text.  Otherwise write the file:
        PNG when ``path`` ends in ``.png`` (needs matplotlib), SVG
        otherwise.  Per-cell byte counts come from one walk in C, so a
        16 GiB arena with a million blocks draws in well under a second.
        """
        if self._core is None:
            raise _never_created(self)
        if self._closed:
            raise ValueError("the allocator is closed")
        st = self.stats()
        span = st["min_size"] << int(self._st.max_order)
        cells = _observe.cells_for(width, span=span, min_size=st["min_size"])
        arrays = ffi.new("uint64_t[]", 3 * cells)
        status = self._c_map(cells, arrays)
        if status:
            raise self._error(status, "render()")
        req, waste, free = (ffi.unpack(arrays + i * cells, cells) for i in range(3))
        free_bytes = st["bytes_free"]
        caption: Dict[str, Any] = {
            k: st[k]  # type: ignore[literal-required,unused-ignore]
            for k in ("bytes_total", "bytes_allocated", "bytes_wasted", "bytes_free",
                      "largest_free", "live_blocks", "peak_bytes_allocated")
        }
        caption["free_fragmentation"] = (
            f"{100.0 * (1 - st['largest_free'] / free_bytes):.1f}%" if free_bytes else "0.0%"
        )
        title = f"{type(self).__name__}: {_observe._human(self._capacity)} arena"
        kw: Dict[str, Any] = dict(capacity=self._capacity, span=span, width=width,
                                  title=title, caption=caption)
        if path is None:
            return _observe.svg(req, waste, free, **kw)
        if os.fspath(path).lower().endswith(".png"):
            _observe.png(path, req, waste, free, **kw)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(_observe.svg(req, waste, free, **kw))
        return None

    # The C layer under the handle ``_h``: the pool's functions (pool.h,
    # seam.h).  SharedBuddyAllocator names its own (shared.h), which have
    # the same arguments and meanings, so every method below that calls
    # through these serves both.
    _c_alloc_fn: Any = lib.pool_alloc
    _c_alloc_many_fn: Any = lib.pool_alloc_many
    _c_free_fn: Any = lib.pool_free
    _c_free_at_fn: Any = lib.pool_free_at
    _c_free_many_fn: Any = lib.seam_free_many
    _c_locate_fn: Any = lib.pool_locate
    _c_realloc_fn: Any = lib.pool_realloc
    # BuddyAllocator's view entry points: what binds the arena view to a
    # slot, and their names (<name>_<slot>).
    _c_set_base_fn: Any = lib.seam_set_base
    _c_view_entries = "seam_view"

    def _error(self, status: int, what: str) -> Exception:
        """The exception a user should see for a refused buddy_status."""
        return _status_error(status, what)

    # The C calls of blocks() and render() (and _snapshot above), for a
    # subclass whose handle is not a pool (SharedBuddyAllocator) to replace.

    def _c_block_at(self, off: int, out: Any) -> int:
        """pool_block_at: start, block size, requested size into out[0:3]."""
        return int(lib.pool_block_at(self._h, off, out, out + 1, out + 2))

    def _c_map(self, cells: int, arrays: Any) -> int:
        """pool_map into the three arrays of ``cells`` each in ``arrays``."""
        return int(lib.pool_map(self._h, cells, arrays, arrays + cells, arrays + 2 * cells))

    def _repr_svg_(self) -> str:
        """Jupyter shows the arena map when a pool ends a cell."""
        return self.render() or ""

    def _live_block(self, offset: object, what: str) -> Tuple[int, int]:
        """(offset, requested size) of the live block starting at offset,
        or ValueError."""
        if self._h == ffi.NULL:
            raise _never_created(self)
        off = _as_size(offset, "offset")
        out = ffi.new("uint64_t[3]")  # start, block size, requested
        status = self._c_block_at(min(off, _U64_MAX), out)
        if status == lib.BUDDY_OK and out[0] != off:
            status = lib.BUDDY_EINTERIOR
        if status == lib.BUDDY_EFREE:  # a lookup, not a free: no "double free?"
            raise ValueError(f"{what}: no live block at offset {off}: that memory is free")
        if status:
            raise self._error(status, f"{what} at offset {off}")
        return off, int(out[2])

    def _refusal(self, size: int, code: int, count: int = 1, align: int = 1) -> Exception:
        """The exception for a request the pool refused (and counted)."""
        if self._h == ffi.NULL:
            return _never_created(self)
        if self._closed:
            return ValueError("the allocator is closed")
        what = f"{count} blocks of {size} bytes" if count != 1 else f"{size} bytes"
        if align > 1:
            what += f" aligned to {align}"
        if code == _USE_AFTER_FREE:
            return _use_after_free(self._h, f"cannot allocate {what}")
        if code == _NO_TABLE:
            return MemoryError(
                f"cannot allocate {what}: the allocator's table of block "
                "sizes could not grow (the process is out of memory; the "
                "allocator itself had room)"
            )
        block = max(_block_size(size, self._min_size), align)
        return OutOfMemory(
            f"cannot allocate {what}: that needs "
            f"{'' if count == 1 else f'{count} '}"
            f"{block}-byte block"
            f"{'' if count == 1 else 's'}, and the largest free block is "
            f"{self.largest_free} bytes "
            f"(capacity {self._capacity}, {self.bytes_free} bytes free)"
        )

    def _debug_fail_next_table_growth(self) -> None:
        """Testing aid: the next time the binding's table of block sizes
        must grow, it fails (as when malloc returns NULL).  Only blocks
        larger than their size needs have a table record unless
        :meth:`_debug_table_only` was called."""
        if self._h == ffi.NULL:
            raise _never_created(self)
        lib.pool_debug_fail_growth(self._h)

    def _debug_table_only(self) -> None:
        """Testing aid: keep every record of a block's requested size in
        the table, as a pool whose request array could not be reserved
        does (csrc/pool.h).  Only while no block is live."""
        if self._h == ffi.NULL:
            raise _never_created(self)
        if lib.pool_debug_table_only(self._h):
            raise ValueError("blocks are live: their records stay where they are")

    def block_size(self, size: int) -> int:
        """The block size :meth:`alloc` would take for ``size`` bytes, or 0
        if no block of this arena is that large."""
        n = _as_size(size)
        bs = _block_size(n, self._min_size)
        return bs if bs <= self._capacity else 0

    # ---- statistics -----------------------------------------------------

    @property
    def bytes_total(self) -> int:
        """Capacity in bytes."""
        return self._capacity

    @property
    def bytes_allocated(self) -> int:
        """Sum of the sizes requested by live blocks."""
        return int(self._st.bytes_requested) if self._st is not None else 0

    def _snapshot(self) -> Any:
        """All the core's counters copied at one instant (under the core's
        lock on a free-threaded build): a figure made of two counters must
        not mix one read before another thread's alloc with one after."""
        s = ffi.new("buddy_stats_t *")
        lib.buddy_snapshot(self._core, s)
        return s

    @property
    def bytes_wasted(self) -> int:
        """Sum over live blocks of block size minus requested size."""
        if self._core is None:
            return 0
        s = self._snapshot()
        return int(s.bytes_in_blocks - s.bytes_requested)

    @property
    def bytes_free(self) -> int:
        """Capacity not covered by a live block."""
        if self._core is None:
            return 0
        s = self._snapshot()
        return int(s.capacity - s.bytes_in_blocks)

    @property
    def largest_free(self) -> int:
        """The largest ``size`` that :meth:`alloc` would satisfy now."""
        return int(lib.buddy_largest_free(self._core)) if self._core is not None else 0

    @property
    def min_size(self) -> int:
        """The minimum block size (a power of two)."""
        return self._min_size

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def __bool__(self) -> bool:
        """Always true, even with no live block: ``if pool:`` asks whether
        there is a pool, not whether it holds anything (use ``len()``)."""
        return True

    def __len__(self) -> int:
        """Number of live blocks."""
        return int(self._st.live_blocks) if self._st is not None else 0

    def stats(self) -> Stats:
        """Every statistic in one consistent snapshot, plus ``free_blocks``:
        ``{block_size: number of free blocks of that size}`` for every block
        size of the tree (like Linux's /proc/buddyinfo), ``metadata_bytes``
        (the memory the core uses for bookkeeping), the three peaks, and
        ``orders``: one dict per block size, ascending, with its
        ``free_blocks``, ``unusable_free_index`` and ``fragmentation_index``
        for a request of that size (Linux mm/vmstat.c's definitions; see
        ``alloc._observe.order_table``).  O(orders)."""
        if self._st is None:
            raise ValueError("the allocator was never created")
        s = self._snapshot()
        m = int(s.min_size)
        free_blocks = {m << k: int(s.free_blocks[k]) for k in range(s.max_order + 1)}
        return {
            "bytes_total": int(s.capacity),
            "bytes_allocated": int(s.bytes_requested),
            "bytes_wasted": int(s.bytes_in_blocks - s.bytes_requested),
            "bytes_free": int(s.capacity - s.bytes_in_blocks),
            "largest_free": max((bs for bs, n in free_blocks.items() if n), default=0),
            "min_size": m,
            "live_blocks": int(s.live_blocks),
            "free_blocks": free_blocks,
            "metadata_bytes": int(lib.buddy_metadata_bytes(s.capacity, s.min_size)),
            "peak_bytes_allocated": int(s.peak_bytes_requested),
            "peak_bytes_in_blocks": int(s.peak_bytes_in_blocks),
            "peak_live_blocks": int(s.peak_live_blocks),
            "orders": _observe.order_table(m, list(free_blocks.values())),
        }

    @property
    def peak_bytes_allocated(self) -> int:
        """The highest :attr:`bytes_allocated` since creation or
        :meth:`reset_peaks` (like pyarrow's ``max_memory()``)."""
        return int(self._st.peak_bytes_requested) if self._st is not None else 0

    @property
    def peak_bytes_in_blocks(self) -> int:
        """The highest number of bytes live blocks covered, waste included."""
        return int(self._st.peak_bytes_in_blocks) if self._st is not None else 0

    @property
    def peak_live_blocks(self) -> int:
        """The highest number of live blocks at once."""
        return int(self._st.peak_live_blocks) if self._st is not None else 0

    def reset_peaks(self) -> None:
        """Set the three peaks to the current figures."""
        if self._core is None:
            raise _never_created(self)
        lib.buddy_reset_peaks(self._core)

    def counters(self) -> Counters:
        """History since creation (never decreasing): successful
        ``alloc_calls`` and ``free_calls``, and ``failed_allocs`` refused
        for lack of space."""
        st = self._st
        if st is None:
            raise ValueError("the allocator was never created")
        return {
            "alloc_calls": int(st.alloc_calls),
            "free_calls": int(st.free_calls),
            "failed_allocs": int(st.failed_allocs),
        }

    def check(self) -> None:
        """Walk the core's metadata; raise :class:`RuntimeError` naming the
        first broken invariant.  O(capacity / min_size).  In guard mode,
        also check that every free byte still holds the pattern:
        :class:`alloc.UseAfterFree` naming the first that does not
        (O(capacity)).  Never changes anything."""
        if self._core is None:
            raise ValueError("the allocator was never created")
        msg = ffi.new("char[]", 256)
        if lib.buddy_check(self._core, msg, 256) != lib.BUDDY_OK:
            raise RuntimeError(
                "allocator invariant broken: " + ffi.string(msg).decode()
            )
        where = ffi.new("uint64_t *")
        if self._guard and lib.pool_guard_scan(self._h, where) == lib.BUDDY_ECORRUPT:
            raise _use_after_free(None, "check()", int(where[0]))

    def _debug_flip(self, which: int, order: int, index: int) -> None:
        """Testing aid: flip one metadata bit (0 = free, 1 = split) so a
        test can prove :meth:`check` notices.  Never use it otherwise."""
        if lib.buddy_debug_flip(self._core, which, order, index) != lib.BUDDY_OK:
            raise ValueError("no such metadata bit")

    # ---- life cycle -----------------------------------------------------

    def close(self) -> None:
        """End the allocator: later alloc/free raise :class:`ValueError`.

        The statistics stay readable, frozen.  Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        lib.pool_close(self._h)

    def __reduce__(self) -> Any:
        # A copy would share the C pool and the arena with the original;
        # like mmap.mmap, an allocator is neither copied nor pickled.
        raise TypeError(f"cannot pickle or copy '{type(self).__name__}' object")

    def __enter__(self: _P) -> _P:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._st is None:
            return f"<{type(self).__name__} (not created)>"
        state = "closed " if self._closed else ""
        s = self.stats()  # one snapshot: the figures agree with each other
        free, largest = s["bytes_free"], s["largest_free"]
        frag = 0.0 if free == 0 else 100.0 * (1 - largest / free)
        return (
            f"<{type(self).__name__} {state}capacity={self._capacity} "
            f"min_size={self._min_size} live_blocks={s['live_blocks']} "
            f"bytes_allocated={s['bytes_allocated']} "
            f"bytes_wasted={s['bytes_wasted']} bytes_free={free} "
            f"largest_free={largest} free_fragmentation={frag:.1f}%>"
        )


class BuddyAllocator(_Pool):
    """A buddy allocator over one arena; blocks are writable memoryviews.

    ``arena`` is an ``int`` (the allocator obtains that many bytes, rounded
    up to a multiple of ``min_size``) or a writable C-contiguous buffer
    (capacity is its length rounded down to a multiple of ``min_size``).
    ``min_size`` is rounded down to a power of two; every block is a power
    of two >= ``min_size`` and starts at a multiple of its own size from the
    arena start.

    All public operations are atomic under threads.  ``alloc`` and ``free``
    cost O(log(capacity / min_size)) in C; see README for the figures.
    """

    _STATE = {
        **_Pool._STATE,
        "_view_entry": _no_view,
        "_zero": {},  # never written: __init__ gives each its own
        "_zero_lock": contextlib.nullcontext(),
        "_mv": None,
        "_arena": None,
        "_base": 0,
    }
    _view_entry: Any
    _zero: Dict[int, memoryview]
    _zero_lock: Any
    _mv: Optional[memoryview]
    _arena: Any
    _base: int

    def __init__(self, arena: Union[int, BufferLike], *, min_size: int = 16,
                 guard: bool = False) -> None:
        min_size = _min_size_arg(min_size)
        if isinstance(arena, bool):
            raise TypeError("arena must be an int or a writable buffer, not bool")
        if isinstance(arena, numbers.Integral):  # int, numpy integers
            capacity, mv, base = self._own_arena(int.__index__(operator.index(arena)), min_size)
        else:
            capacity, mv, base = self._buffer_arena(cast(BufferLike, arena), min_size)
        try:
            self._open(capacity, min_size, base)
            if guard:
                lib.pool_set_guard(self._h, _GUARD_BYTE)  # fills the free arena
        except BaseException:
            mv.release()  # a refused arena stays free to resize or close
            self._arena = None
            raise
        self._zero = {}  # the views of live zero-size blocks, by offset
        self._zero_lock = threading.Lock()
        self._mv = mv
        self._base = base
        self._guard = bool(guard)
        self._bind_view(mv)

    def _bind_view(self, mv: memoryview) -> None:
        """Point _view_entry at the slot's view entry point, with the arena
        view mv bound to the slot in C; else at _view_by_offset."""
        if _VIEWS and self._slot >= 0 and self._c_set_base_fn(self._slot, mv) == 0:
            self._view_entry = getattr(lib, f"{self._c_view_entries}_{self._slot}")
        else:
            self._view_entry = functools.partial(_view_by_offset, mv, self._alloc_entry)

    def _unbind_view(self) -> None:
        """Drop the arena view from the slot and the view entry point (close)."""
        self._view_entry = _no_view
        if _VIEWS and self._slot >= 0:
            self._c_set_base_fn(self._slot, None)

    def _own_arena(self, size: int, min_size: int) -> Tuple[int, memoryview, int]:
        if size <= 0:
            raise ValueError(f"arena size must be > 0, got {size}")
        capacity = -(-size // min_size) * min_size
        if capacity > _MAX_CAPACITY:
            raise MemoryError(f"cannot allocate an arena of {size} bytes")
        raw = lib.buddy_arena_alloc(capacity)
        if raw == ffi.NULL:
            raise MemoryError(f"cannot allocate an arena of {size} bytes")
        self._arena = ffi.gc(raw, lambda p: lib.buddy_arena_free(p, capacity))
        mv = memoryview(ffi.buffer(self._arena, capacity))
        return capacity, mv, int(ffi.cast("uintptr_t", self._arena))

    @staticmethod
    def _buffer_arena(arena: BufferLike, min_size: int) -> Tuple[int, memoryview, int]:
        try:
            mv = memoryview(arena)  # type: ignore[arg-type]  # numpy: see _ArrayLike
        except TypeError:
            raise TypeError(
                "arena must be an int or a writable buffer, "
                f"not {type(arena).__name__}"
            ) from None
        try:
            if mv.readonly:
                raise BufferArgumentError("arena buffer is read-only")
            if not mv.c_contiguous:
                raise BufferArgumentError("arena buffer is not C-contiguous")
            if mv.nbytes < min_size:
                raise ValueError(
                    f"arena buffer of {mv.nbytes} bytes is shorter than "
                    f"min_size={min_size}: no block fits"
                )
            if mv.ndim != 1 or mv.format != "B":
                flat = mv.cast("B")  # a view of bytes over the same memory
                mv.release()
                mv = flat
        except BaseException:
            mv.release()  # a refused arena stays free to resize or close
            raise
        capacity = len(mv) // min_size * min_size
        with ffi.from_buffer(mv) as ptr:
            base = int(ffi.cast("uintptr_t", ptr))
        return capacity, mv, base

    # ---- blocks ---------------------------------------------------------
    #
    # The hot paths (alloc, try_alloc, free) are written for the common case
    # and hand everything else to one slow path each:
    #   alloc: one one-argument C call, the view entry point (_view_entry,
    #          see the seam above and _bind_view): for an exact int size it
    #          allocates and answers with the block's view, made in C.  It
    #          answers None for whatever it does not decide (size 0, not an
    #          exact int -- numpy integers, __index__ objects, bad ones --,
    #          out of range, a closed allocator): those go to _alloc_other,
    #          which converts the size first and reads the allocator's state
    #          after (the conversion may run user code).  A refusal comes
    #          back as _Refusal(status), turned into the error a user sees.
    #   free:  one one-argument C call with the block: the C side takes the
    #          buffer from the object itself and releases it before
    #          returning (csrc/seam.h).  Whatever it cannot decide alone (not
    #          a buffer, a zero-length buffer, a refusal that needs a
    #          message) goes to _free_other.
    # Measured (pair-64, same run): these paths took a pair from ~560 to
    # ~250 ns; helpers shared by the fast paths would add ~30 ns a call.
    # The one-argument entry points and exact fits (csrc/pool.h) then took
    # it from ~860 to ~450 ns on a busier host (min of 15 x 50,000, same
    # session; callgrind: 5,898 -> 4,184 instructions a pair), and views
    # made in C from ~296 to ~210 ns, made without a slice object (csrc/
    # seam_py.h, seam_slice) to ~170 ns.  An entry point is read into a local
    # before the call: ``self._free_entry(x)`` compiles to LOAD_METHOD,
    # which CPython 3.11 cannot specialise for an instance attribute
    # (callgrind: ~235 instructions a pair more).

    def alloc(self, size: int, align: Optional[int] = None) -> memoryview:
        """Return a writable view of exactly ``size`` bytes (not cleared).

        ``align`` (a power of two) asks for a block whose absolute address
        is a multiple of it; see :meth:`_alloc_aligned`.  Raises
        :class:`alloc.OutOfMemory` when no block fits, :class:`TypeError`
        for a non-integer, :class:`ValueError` for a negative size, a bad
        ``align`` or a closed allocator.
        """
        entry = self._view_entry
        if align is None:
            try:
                view = entry(size)
            except _Refusal as refused:
                status = refused.args[0]
            else:
                if view is not None:
                    return view  # type: ignore[no-any-return]
                status = None
            if status is not None:  # raised out of the except: no __context__
                entry = None  # (see below)
                raise self._refusal(size, status)
        # With the id() seam the entry point is a partial holding the arena
        # view, and a traceback keeps this frame: it must not pin the arena.
        entry = None
        return self._alloc_other(size, align, True)  # type: ignore[return-value]

    def try_alloc(self, size: int, align: Optional[int] = None) -> Optional[memoryview]:
        """Like :meth:`alloc`, but return ``None`` when no block fits."""
        entry = self._view_entry
        if align is None:
            try:
                view = entry(size)
            except _Refusal as refused:
                status = refused.args[0]
            else:
                if view is not None:
                    return view  # type: ignore[no-any-return]
                status = None
            if status == _REFUSED and not self._closed:
                return None
            if status is not None:
                entry = None  # (as in alloc)
                raise self._refusal(size, status)
        entry = None  # (as in alloc)
        return self._alloc_other(size, align, False)

    def _alloc_other(self, size: object, align: object, strict: bool) -> Optional[memoryview]:
        """alloc/try_alloc for every request the fast path does not take."""
        n = _as_size(size)  # may run user code: read the state after it
        a = _as_align(align)
        mv, h = self._mv, self._h
        with self._zero_lock if n == 0 else _NO_LOCK:
            off = (int(self._c_alloc_fn(h, min(n, _U64_MAX))) if a == 1
                   else self._alloc_aligned(n, a))
            if off < 0:
                mv = None  # a traceback must not pin the arena
                if not strict and off == _REFUSED and not self._closed:
                    return None
                raise self._refusal(n, off, align=a)
            view: memoryview = mv[off : off + n]  # type: ignore[index]
            if n == 0:
                self._zero[off] = view  # freed by identity (_free_zero)
        return view

    def _alloc_aligned(self, n: int, align: int) -> int:
        """pool_alloc for a block whose absolute address is a multiple of
        ``align``.  Blocks start at multiples of their size from the arena
        start, so where the base address is a multiple of ``align`` this is
        a block of at least ``align`` bytes.  Otherwise only a block no
        larger than the base's own alignment can start at such an address,
        at an offset the core searches for; if the request needs a larger
        block, no block of this arena could ever do: ValueError."""
        base = self._base
        if self._h == ffi.NULL or base % align == 0:
            return int(lib.pool_alloc_aligned(self._h, min(n, _U64_MAX),
                                              min(align, _MAX_ALIGN), 0, 0))
        base_align = base & -base
        block = _block_size(n, self._min_size)
        if block > base_align:
            raise ValueError(
                f"no block of {block} bytes in this arena can start at a "
                f"multiple of {align}: the arena starts at an address that is "
                f"a multiple of {base_align} only (give it an arena aligned "
                f"to {align}, e.g. from mmap or numpy, or an int size)"
            )
        if align > _MAX_ALIGN:  # no address of the arena is a multiple of it
            return int(lib.pool_alloc_aligned(self._h, min(n, _U64_MAX), _MAX_ALIGN, 0, 0))
        return int(lib.pool_alloc_aligned(self._h, n, 1, align, -base % align))

    def calloc(self, size: int, align: Optional[int] = None) -> memoryview:
        """Like :meth:`alloc`, but the view is zero-filled."""
        view = self.alloc(size, align)
        n = len(view)  # what was allocated, not what the caller's object says
        if n:
            with ffi.from_buffer(view) as ptr:
                lib.memset(ptr, 0, n)
        return view

    def alloc_many(self, size: int, count: int) -> List[memoryview]:
        """``count`` blocks of ``size`` bytes, all or nothing.

        If they do not all fit, raises :class:`alloc.OutOfMemory` and
        nothing changes (statistics and ``alloc_calls`` included;
        ``failed_allocs`` counts the refused request once).  One C call
        for the whole batch.
        """
        n = _as_size(size)
        c = _as_size(count, "count")
        mv, h = self._mv, self._h
        # more blocks than the capacity holds can never fit: no array for
        # them (the C side refuses such a count without writing to out)
        fits = c <= self._capacity // _block_size(n, max(self._min_size, 1))
        out = ffi.new("uint64_t[]", c) if fits and c else ffi.NULL
        with self._zero_lock if n == 0 else _NO_LOCK:
            status = int(self._c_alloc_many_fn(h, min(n, _U64_MAX), c, out))
            if status:
                mv = None  # a traceback must not pin the arena
                raise self._refusal(n, status, count=c)
            views: List[memoryview] = []
            if n and lib.seam_slices(id(mv), n, out, c, id(views)) == 0:
                return views  # sliced in C (csrc/seam.h says what it buys)
            offsets = ffi.unpack(out, c) if c else []
            views = [mv[o : o + n] for o in offsets]  # type: ignore[index]
            if n == 0:
                self._zero.update(zip(offsets, views))
        return views

    def free(self, block: BufferLike) -> None:
        """Return a block: the view :meth:`alloc` gave, or any buffer over
        exactly the same bytes.

        Raises :class:`ValueError` and changes nothing for a buffer outside
        the arena, one that is not exactly a live block, a double free, a
        released view, or a closed allocator; :class:`TypeError` for a
        non-buffer.
        """
        entry = self._free_entry
        status = entry(block)
        if status:
            self._free_other(block, status, "free()")

    def free_many(self, blocks: Iterable[BufferLike]) -> None:
        """Free each block in order (one C call for the whole list).

        On the first block that :meth:`free` would refuse, raises its
        :class:`ValueError` (or :class:`TypeError`) naming its index; the
        blocks before it stay freed, nothing else changes.
        """
        items = blocks if type(blocks) is list else list(blocks)
        index = ffi.new("uint64_t *")
        while True:
            status = self._c_free_many_fn(self._h, id(items), index)
            if not status:
                return
            i = int(index[0])
            self._free_other(items[i], status, f"free_many(): block {i}")
            index[0] = i + 1  # that one was a zero-size block, now freed

    def _free_other(self, block: object, status: int, what: str) -> None:
        """Finish a free the C side could not: raise why, or free a
        zero-size block by identity.  Never leaves a buffer exported."""
        if status == lib.SEAM_NO_POOL:
            raise _never_created(self)
        if status == lib.SEAM_EMPTY:
            self._free_zero(block, what)
            return
        ptr = self._export(block, what)  # raises for a non-buffer
        try:
            if status == lib.SEAM_NOT_A_BUFFER:  # C could not, from_buffer can
                status = self._c_free_fn(self._h, ptr, len(ptr))
                if not status:
                    return
            error = self._located(status, what, ptr)
        finally:
            ffi.release(ptr)  # before raising: the traceback must not pin it
        raise error

    def _free_zero(self, block: object, what: str) -> None:
        """Free the zero-size block whose view is ``block`` (by identity:
        an empty slice of another block at the same address frees nothing)."""
        with self._zero_lock:  # the record and the pool change together
            off = self._zero_offset(block)
            if off is not None:
                self._free_locked(off, what)
                return
        if self._closed:
            raise ValueError(f"{what}: the allocator is closed")
        raise ValueError(
            f"{what}: an empty buffer is not a block: only the view that "
            "alloc(0) returned frees a zero-size block (an empty slice of a "
            "block frees nothing)"
        )

    def _zero_offset(self, block: object) -> Optional[int]:
        """Where the zero-size block whose view is ``block`` starts, or
        None.  The caller holds ``_zero_lock``."""
        for off, view in self._zero.items():
            if view is block:
                return off
        return None

    def _free_locked(self, off: int, what: str) -> None:
        """Free the live block at ``off`` and forget its view if it was
        zero-size.  The caller holds ``_zero_lock``."""
        status = self._c_free_at_fn(self._h, min(off, _U64_MAX))
        if status:
            raise self._error(status, f"{what} at offset {off}")
        self._zero.pop(off, None)

    def _export(self, block: object, what: str) -> Any:
        """``ffi.from_buffer(block)``, or the error a user should see."""
        try:
            return _from_buffer(block)
        except (TypeError, ValueError, BufferError) as exc:
            error = _not_a_block(block, exc, what)
        raise error  # outside the except: no chained traceback pins block

    def _located(self, status: int, what: str, ptr: Any) -> Exception:
        """The exception for a refused free/offset_of, naming where the
        buffer is."""
        where = int(ffi.cast("uintptr_t", ptr)) - self._base
        if 0 <= where < self._capacity:
            what = f"{what} at offset {where}, {len(ptr)} bytes"
        return self._error(status, what)

    def offset_of(self, block: BufferLike) -> int:
        """The offset from the arena start of a live block (the view, or a
        buffer over exactly its bytes).  Raises like :meth:`free`."""
        return self._find(block, "offset_of()")[0]

    def _find(self, block: object, what: str) -> Tuple[int, int]:
        """(offset, length) of the live block whose bytes ``block`` is
        exactly, or the error :meth:`free` would raise."""
        if self._h == ffi.NULL:
            raise _never_created(self)
        ptr = self._export(block, what)
        try:
            if len(ptr) == 0:  # as free(): a zero-size block by identity only
                with self._zero_lock:
                    off = self._zero_offset(block)
                if off is not None:
                    return off, 0
                error: Exception = ValueError(
                    f"{what}: an empty buffer is not a block: only the "
                    "view that alloc(0) returned is a zero-size block's view"
                )
                raise error
            out = ffi.new("uint64_t *")
            status = self._c_locate_fn(self._h, ptr, len(ptr), out)
            if not status:
                return int(out[0]), len(ptr)
            error = self._located(status, what, ptr)
        finally:
            ffi.release(ptr)
        raise error

    def realloc(self, block: BufferLike, new_size: int) -> memoryview:
        """Resize a live block: return a view of ``new_size`` bytes holding
        the block's contents up to ``min(old, new_size)`` bytes.

        In place when it can be (shrinking always can; growing can when the
        block is the lower half of free buddies up to the new size), else
        the contents move to a new block and the old one is freed.  Either
        way use only the returned view afterwards (as with C's realloc).
        Either way it is one C call: no other thread (or process, for a
        shared arena) sees both blocks live or the bytes half moved.
        On :class:`alloc.OutOfMemory` nothing changes.  Wrong blocks raise
        like :meth:`free`.
        """
        n = _as_size(new_size, "new_size")
        off, old = self._find(block, "realloc()")
        mv, h = self._mv, self._h
        out = ffi.new("int64_t *")
        # One C call resizes in place or moves (new block, copy, old block
        # freed): no other thread or process sees a state in between.
        with self._zero_lock if old == 0 or n == 0 else _NO_LOCK:
            status = self._c_realloc_fn(h, off, min(n, _U64_MAX), 1, out)
            if not status:
                to = int(out[0])
                view: memoryview = mv[to : to + n]  # type: ignore[index]
                self._zero.pop(off, None)
                if n == 0:
                    self._zero[to] = view
                return view
        mv = None  # a traceback must not pin the arena
        if status == lib.BUDDY_ENOMEM:  # no block for n: nothing has changed
            raise self._refusal(n, int(out[0]))
        if status == lib.POOL_EUSE_AFTER_FREE:
            # nothing was handed out, so nothing was taken back and
            # the changed bytes are still there (check() sees them)
            raise _use_after_free(
                h, f"realloc() to {n} bytes: refused, nothing changed",
                int(lib.pool_guard_bad(h)))
        raise self._error(status, f"realloc() at offset {off}")

    def block_at(self, offset: int) -> memoryview:
        """A view of the live block that starts at ``offset``, exactly its
        requested length (what another process holding only the offset
        needs).  :class:`ValueError` if no live block starts there."""
        mv = self._mv
        off, n = self._live_block(offset, "block_at()")
        if n == 0:
            with self._zero_lock:
                if off in self._zero:
                    return self._zero[off]
        return mv[off : off + n]  # type: ignore[index]

    def free_at(self, offset: int) -> None:
        """Free the live block that starts at ``offset`` (any block,
        zero-size ones included).  :class:`ValueError` if none starts
        there; nothing changes then."""
        if self._h == ffi.NULL:
            raise _never_created(self)
        off = _as_size(offset, "offset")
        with self._zero_lock:
            self._free_locked(off, "free_at()")

    @contextlib.contextmanager
    def block(self, size: int) -> Iterator[memoryview]:
        """``with pool.block(n) as buf:`` -- ``buf = alloc(n)``, freed on
        exit, also on an exception.

        (``with pool.alloc(n) as buf:`` is a trap: that is memoryview's own
        context manager, which *releases* the view on exit without freeing
        the block -- and a released view can no longer be freed.)
        """
        view = self.alloc(size)
        try:
            yield view
        finally:
            self.free(view)

    def close(self) -> None:
        """End the allocator: later alloc/free raise :class:`ValueError`.

        The statistics stay readable, frozen.  Live views stay valid; the
        arena's memory is released (or a buffer arena unlocked) once the
        last of them is gone.  Idempotent.
        """
        if self._closed:
            return
        _Pool.close(self)
        # Drop (not release) the base view: an alloc racing this close may
        # still slice it, and live slices keep the arena's memory anyway.
        self._unbind_view()
        self._mv = None
        self._arena = None
        self._zero = {}


class OffsetAllocator(_Pool):
    """The same buddy allocator over a capacity with no memory behind it:
    blocks are offsets (ints), for memory Python cannot touch -- a GPU
    heap, a file, another process's region.

    ``capacity`` is rounded *down* to a multiple of ``min_size`` (only
    space that exists is handed out); up to 2**62.  The core's metadata
    comes from the OS as it is touched, so a 1 TiB capacity of 4 KiB blocks
    is instant; it needs about 3 bits per minimum block of address space,
    so a capacity beyond ~2**46 minimum blocks needs a larger ``min_size``
    (MemoryError says so).  Offsets are naturally aligned: a block of
    ``b`` bytes starts at a multiple of ``b``.  The pool remembers every
    live block's requested size, so :meth:`free` takes the offset alone.
    All operations are atomic under threads.
    """

    def __init__(self, capacity: int, *, min_size: int = 16) -> None:
        min_size = _min_size_arg(min_size)
        cap = _as_size(capacity, "capacity")
        if cap < min_size:
            raise ValueError(
                f"capacity {cap} is smaller than min_size={min_size}: no block fits"
            )
        if cap > _MAX_CAPACITY:
            raise ValueError(f"capacity {cap} is larger than 2**62")
        self._open(cap // min_size * min_size, min_size, 0)

    # The hot paths (alloc, try_alloc, free) take an exact int with one
    # one-argument C call, as BuddyAllocator's do; everything else (size 0,
    # which the C side hands back, and what cffi refuses) goes to the slow
    # path, which converts first.  Measured: an alloc+free pair of 64 bytes
    # went from ~1,400 to ~310 ns (min of 15 runs of 100,000, same session).

    def alloc(self, size: int, align: Optional[int] = None) -> int:
        """Allocate a block of ``size`` bytes; return its offset.  ``align``
        (a power of two): the offset is a multiple of it.  Raises
        :class:`alloc.OutOfMemory` when no block fits."""
        if type(size) is int and align is None:
            entry = self._alloc_entry
            try:
                off = entry(size)
            except OverflowError:  # < 0 or >= 2**64: _alloc says why
                off = _ZERO
            if off >= 0:
                return off  # type: ignore[no-any-return]
            if off != _ZERO:
                raise self._refusal(size, off)
        return cast(int, self._alloc(size, align, True))

    def try_alloc(self, size: int, align: Optional[int] = None) -> Optional[int]:
        """Like :meth:`alloc`, but return ``None`` when no block fits."""
        if type(size) is int and align is None:
            entry = self._alloc_entry
            try:
                off = entry(size)
            except OverflowError:  # < 0 or >= 2**64: _alloc says why
                off = _ZERO
            if off >= 0:
                return off  # type: ignore[no-any-return]
            if off == _REFUSED and not self._closed:
                return None
            if off != _ZERO:
                raise self._refusal(size, off)
        return self._alloc(size, align, False)

    def _alloc(self, size: object, align: object, strict: bool) -> Optional[int]:
        n = _as_size(size)
        a = _as_align(align)
        if a == 1:
            off = int(_c_alloc(self._h, min(n, _U64_MAX)))
        else:
            off = int(lib.pool_alloc_aligned(self._h, min(n, _U64_MAX),
                                             min(a, _MAX_ALIGN), 0, 0))
        if off >= 0:
            return off
        if not strict and off == _REFUSED and not self._closed:
            return None
        raise self._refusal(n, off, align=a)

    def alloc_many(self, size: int, count: int) -> List[int]:
        """``count`` blocks of ``size`` bytes, all or nothing (as
        :meth:`BuddyAllocator.alloc_many`); their offsets."""
        n = _as_size(size)
        c = _as_size(count, "count")
        # more blocks than the capacity holds can never fit: no array for
        # them (the C side refuses such a count without writing to out)
        fits = c <= self._capacity // _block_size(n, max(self._min_size, 1))
        out = ffi.new("uint64_t[]", c) if fits and c else ffi.NULL
        status = lib.pool_alloc_many(self._h, min(n, _U64_MAX), c, out)
        if status:
            raise self._refusal(n, status, count=c)
        return ffi.unpack(out, c) if c else []

    def free(self, offset: int) -> None:
        """Free the live block that starts at ``offset``.  :class:`ValueError`
        (nothing changed) if no live block starts there, it is already free,
        or the allocator is closed."""
        if type(offset) is int:
            entry = self._free_at_entry
            try:
                status = entry(offset)
            except OverflowError:  # < 0 or >= 2**64: _free says why
                status = None
            if status == 0:
                return
            if status is not None:  # refused (one call: atomic), say why
                if self._h == ffi.NULL:
                    raise _never_created(self)
                raise _status_error(status, f"free() at offset {offset}")
        self._free(offset, "free()")

    def _free(self, offset: object, what: str) -> None:
        if self._h == ffi.NULL:
            raise _never_created(self)
        off = _as_size(offset, "offset")
        status = lib.pool_free_at(self._h, min(off, _U64_MAX))
        if status:
            raise _status_error(status, f"{what} at offset {off}")

    def free_many(self, offsets: Iterable[int]) -> None:
        """Free each offset in order; on the first one :meth:`free` would
        refuse, raise its error naming its index (the ones before it stay
        freed, nothing else changes)."""
        for i, off in enumerate(list(offsets)):
            self._free(off, f"free_many(): offset {i}")

    def realloc(self, offset: int, new_size: int) -> int:
        """Resize the live block at ``offset`` to ``new_size`` bytes; return
        its offset.  In place when possible (the same offset); otherwise a
        new block is allocated and the old one freed -- the caller moves its
        data from the old offset to the new one (the old block's memory is
        untouched: nothing else has been placed there yet if no other
        allocation ran in between).  One C call either way: no other
        thread sees both blocks live.  On :class:`alloc.OutOfMemory`
        nothing changes; wrong offsets raise like :meth:`free`."""
        n = _as_size(new_size, "new_size")
        if self._h == ffi.NULL:
            raise _never_created(self)
        off = _as_size(offset, "offset")
        out = ffi.new("int64_t *")
        # One C call resizes in place or moves (a new block, the old one
        # freed; nothing is copied): no other thread sees a state between.
        status = lib.pool_realloc(self._h, min(off, _U64_MAX), min(n, _U64_MAX), 0, out)
        if not status:
            return int(out[0])
        if status == lib.BUDDY_ENOMEM:  # no block for n: nothing has changed
            raise self._refusal(n, int(out[0]))
        raise _status_error(status, f"realloc() at offset {off}")

    def size_of(self, offset: int) -> int:
        """The size the live block at ``offset`` was requested with
        (:class:`ValueError` if no live block starts there)."""
        return self._live_block(offset, "size_of()")[1]


def _not_a_block(block: object, exc: BaseException, what: str = "free()") -> Exception:
    """The error for an argument that yields no usable buffer."""
    if isinstance(exc, TypeError):
        return TypeError(
            f"{what}: expected a block (a buffer), not {type(block).__name__}"
        )
    if isinstance(block, memoryview) and "released" in str(exc):
        return ValueError(
            f"{what}: the view was released (memoryview.release(), or a "
            "'with' block on the view) before it was freed, so its block can "
            "no longer be found through it. Free before releasing, or use "
            "'with pool.block(n) as buf:', which frees on exit"
        )
    return ValueError(f"{what}: not a block of this allocator: {exc}")


# ---- SharedBuddyAllocator ----------------------------------------------------

_SHARED_CORRUPT = lib.SHARED_CORRUPT
_SHARED_ECORRUPT = lib.SHARED_ECORRUPT
#: Blocks of a shared arena are aligned in absolute terms up to this in
#: every process (the arena starts at a page boundary of the segment).
_SHARED_ALIGN = lib.SHARED_ARENA_ALIGN
_NO_SHARED = ffi.cast("shared_t *", 0)
lib.shared_py_init()  # release the GIL while waiting for another's lock


def _segment_name(name: str) -> str:
    """The name as shm_open wants it ("/name")."""
    return name if name.startswith("/") else "/" + name


def _shared_os_error(name: str) -> OSError:
    """The OSError of a failed shm_open/ftruncate/mmap (or of a platform
    without robust process-shared mutexes: ENOSYS)."""
    import errno

    err = int(lib.shared_errno())
    if err == errno.ENOSYS:
        return OSError(err, "SharedBuddyAllocator needs POSIX shared memory and "
                       "robust process-shared mutexes, which this platform lacks", name)
    return OSError(err, os.strerror(err), name)


class SharedBuddyAllocator(BuddyAllocator):
    """A buddy allocator whose arena and metadata live in a named shared
    memory segment, used by every process that attaches to it.

    Follows :class:`multiprocessing.shared_memory.SharedMemory`:
    ``create=True`` makes a new segment (named ``name``, or a fresh unique
    name when ``name`` is None) for an arena of ``size`` bytes (rounded up to
    a multiple of ``min_size``); ``create=False`` attaches to the segment
    ``name``, whose ``min_size`` and size it reads.  The segment holds
    everything: the arena, the core's bitmaps and statistics, the requested
    size of every live block and a process-shared robust mutex.

    Every :class:`BuddyAllocator` operation works from every attached
    process, and a block allocated in one may be freed in another by
    :meth:`free_at` (its offset) or by any view over exactly its bytes in
    that process's mapping.  A zero-size block's view frees it only in the
    process that allocated it (elsewhere: :meth:`free_at`).

    ``close()`` detaches this process (later operations raise
    :class:`ValueError`; the mapping goes once this object and every view
    are gone); ``unlink()`` removes the name (the memory goes once every
    process has closed).  Pickling carries the name: unpickling attaches
    (how a ``multiprocessing`` worker gets the allocator).

    Attaching to a segment that is not an allocator's, from an incompatible
    build, or truncated: :class:`ValueError`.  If a process dies holding the
    lock, the next operation checks the state and repairs it if it can be
    proven (see csrc/shared.h); otherwise every later operation in every
    process raises :class:`RuntimeError`.  ``align`` up to 4096 holds in
    every process's mapping; a larger one is refused (ValueError).
    """

    _STATE = {
        **{k: v for k, v in BuddyAllocator._STATE.items() if k != "_st"},  # a property here
        "_h": _NO_SHARED,
        "_alloc_entry": functools.partial(lib.shared_py_alloc, _NO_SHARED),
        "_free_entry": _free_entry_for("shared", -1, lib.shared_seam_free, _NO_SHARED),
        "_free_at_entry": functools.partial(lib.shared_free_at, _NO_SHARED),  # unused
        "_name": None,
        "_tracker_pid": 0,  # the pid that registered the name with its resource tracker
        "_frozen": None,
        "_live_st": None,
        "_frozen_largest": 0,
    }
    _name: Optional[str]
    _tracker_pid: int
    _frozen: Any
    _live_st: Any
    _frozen_largest: int

    def __init__(self, name: Optional[str] = None, create: bool = False,
                 size: int = 0, *, min_size: int = 16) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, not {type(name).__name__}")
        if not create and name is None:
            raise ValueError("'name' can only be None if create=True")
        if create:
            m = _min_size_arg(min_size)
            n = _as_size(size)
            if n <= 0:
                raise ValueError("'size' must be a positive number different from zero")
            capacity = -(-n // m) * m
            if capacity > _MAX_CAPACITY:
                raise MemoryError(f"cannot make a shared arena of {n} bytes")
            h = self._create(name, capacity, m)
        else:
            h = self._attach(cast(str, name))
        self._h = ffi.gc(h, lib.shared_py_destroy)  # also frees its slot
        slot = self._slot = lib.shared_py_bind(h)  # one-argument entry points (shared_py.h)
        self._free_entry = _free_entry_for("shared", slot, lib.shared_seam_free, self._h)
        if slot >= 0:
            self._alloc_entry = getattr(lib, f"shared_alloc_{slot}")
        else:  # the same function with the handle passed (size 0 as a slot's)
            self._alloc_entry = functools.partial(lib.shared_py_alloc, self._h)
        self._free_at_entry = functools.partial(lib.shared_free_at, self._h)
        keep = self._h  # the arena's memory is the handle's mapping
        capacity = int(lib.shared_capacity(h))
        arena = ffi.gc(lib.shared_arena(h), lambda _p, keep=keep: None)
        self._arena = arena
        self._mv = mv = memoryview(ffi.buffer(arena, capacity))
        self._base = int(ffi.cast("uintptr_t", arena))
        self._core = lib.shared_core(h)
        self._live_st = lib.buddy_stats(self._core)
        self._capacity = capacity
        self._min_size = int(lib.shared_min_size(h))
        self._zero = {}
        self._zero_lock = threading.Lock()
        self._closed = False
        self._bind_view(mv)

    def _create(self, name: Optional[str], capacity: int, min_size: int) -> Any:
        import secrets
        out = ffi.new("shared_t **")
        for _ in range(100):
            want = name if name is not None else "abuddy_" + secrets.token_hex(6)
            seg = _segment_name(want)
            status = lib.shared_create(seg.encode(), capacity, min_size, out)
            if status == lib.SHARED_EEXIST and name is None:
                continue  # a fresh name was taken: draw another
            break
        if status == lib.SHARED_EEXIST:
            raise FileExistsError(17, "File exists", want)
        if status == lib.SHARED_ESYS:
            raise _shared_os_error(want)
        if status == lib.BUDDY_ENOMEM:
            raise MemoryError("cannot allocate the shared allocator's handle")
        if status != lib.BUDDY_OK:
            raise ValueError(
                f"cannot make a shared arena of {capacity} bytes in blocks of "
                f"at least {min_size}"
            )
        self._name = want.lstrip("/")
        if os.name == "posix":  # the creator's resource tracker unlinks a leak
            from multiprocessing import resource_tracker
            resource_tracker.register(seg, "shared_memory")
            self._tracker_pid = os.getpid()
        return out[0]

    def _attach(self, name: str) -> Any:
        out = ffi.new("shared_t **")
        why = ffi.new("char[]", 256)
        status = lib.shared_attach(_segment_name(name).encode(), out, why, 256)
        if status == lib.SHARED_ENOENT:
            raise FileNotFoundError(2, "No such file or directory", name)
        if status == lib.SHARED_ESYS:
            raise _shared_os_error(name)
        if status == lib.SHARED_ENOTOURS:
            raise ValueError(
                f"cannot attach to shared memory {name!r}: "
                + ffi.string(why).decode(errors="replace")
            )
        if status != lib.BUDDY_OK:
            raise MemoryError("cannot allocate the shared allocator's handle")
        self._name = name.lstrip("/")
        return out[0]

    # ---- naming and life cycle ------------------------------------------

    @property
    def name(self) -> str:
        """The segment's name (what ``SharedBuddyAllocator(name)`` attaches to)."""
        return self._name or ""

    @property
    def segment_bytes(self) -> int:
        """The whole segment: arena, metadata, records and header."""
        return int(lib.shared_segment_bytes(self._h)) if self._h != ffi.NULL else 0

    @property
    def records_bytes(self) -> int:
        """The requested-size records in the segment: N (1 + w) bytes, N =
        capacity / min_size, w = ceil((log2(min_size) + 1) / 8)."""
        return int(lib.shared_records_bytes(self._h)) if self._h != ffi.NULL else 0

    def close(self) -> None:
        """Detach this process: later operations raise :class:`ValueError`;
        the statistics stay readable, frozen.  Views stay valid (the mapping
        goes once this object and the last view are gone).  Other processes
        are unaffected.  Idempotent."""
        if self._closed:
            return
        frozen = ffi.new("buddy_stats_t *")
        if lib.shared_is_corrupt(self._h, ffi.NULL, 0) or lib.shared_snapshot(self._h, frozen):
            ffi.memmove(frozen, self._live_st, ffi.sizeof("buddy_stats_t"))
        self._frozen = frozen
        self._frozen_largest = int(lib.buddy_largest_free(self._core))
        self._closed = True
        lib.shared_detach(self._h)
        self._unbind_view()
        self._mv = None
        self._arena = None
        self._zero = {}

    def unlink(self) -> None:
        """Remove the segment's name (as ``SharedMemory.unlink``): no process
        can attach any more; the memory goes once every attached process has
        closed.  Call it once, from any one process (best the creator: as
        with SharedMemory, the creator's resource tracker unlinks a segment
        its creator did not, at exit, with a warning).  FileNotFoundError if
        the name is already gone."""
        seg = _segment_name(self.name)
        err = int(lib.shared_unlink(seg.encode()))
        if self._tracker_pid == os.getpid():  # not in a forked copy: it
            from multiprocessing import resource_tracker  # registered nothing

            resource_tracker.unregister(seg, "shared_memory")
            self._tracker_pid = 0
        if err:
            raise FileNotFoundError(err, os.strerror(err), self.name)

    def __reduce__(self) -> Any:
        # As SharedMemory: the name travels, the receiver attaches.
        return (type(self), (self.name,))

    def __repr__(self) -> str:
        if self._corrupt() is not None and not self._closed:
            return f"<{type(self).__name__} name={self.name!r} corrupt>"
        return super().__repr__().replace(
            f"<{type(self).__name__} ", f"<{type(self).__name__} name={self.name!r} ", 1)

    # ---- state ----------------------------------------------------------

    def _corrupt(self) -> Optional[RuntimeError]:
        """The error every call raises once the segment is marked corrupt."""
        why = ffi.new("char[]", 256)
        if self._h == ffi.NULL or not lib.shared_is_corrupt(self._h, why, 256):
            return None
        return RuntimeError(
            f"shared allocator {self.name!r} is unusable: "
            + ffi.string(why).decode(errors="replace")
        )

    def _error(self, status: int, what: str) -> Exception:
        """The exception for a refused status (corrupt and closed first)."""
        if status == _SHARED_ECORRUPT or status == _SHARED_CORRUPT:
            return self._corrupt() or RuntimeError(f"{what}: the shared state is corrupt")
        if status == lib.SHARED_ELOCK:
            return RuntimeError(f"{what}: the segment's mutex failed")
        if self._closed or status == lib.BUDDY_ECLOSED:
            return ValueError(f"{what}: the allocator is closed")
        return _status_error(status, what)

    @property
    def _st(self) -> Any:
        """The statistics: the segment's own while attached (read without
        the lock, each field on its own), frozen at close."""
        if self._closed:
            return self._frozen
        if self._live_st is not None and lib.shared_is_corrupt(self._h, ffi.NULL, 0):
            raise cast(RuntimeError, self._corrupt())
        return self._live_st

    @_st.setter
    def _st(self, value: Any) -> None:
        raise AttributeError("a shared allocator's statistics live in its segment")

    @property
    def largest_free(self) -> int:
        """The largest ``size`` that :meth:`alloc` would satisfy now."""
        if self._closed:
            return self._frozen_largest
        if self._st is None:
            return 0
        return int(lib.buddy_largest_free(self._core))

    def _c_block_at(self, off: int, out: Any) -> int:
        status = int(lib.shared_block_at(self._h, off, out, out + 1, out + 2))
        if status in (_SHARED_ECORRUPT, lib.SHARED_ELOCK):
            raise self._error(status, "blocks()")
        return status

    def _c_map(self, cells: int, arrays: Any) -> int:
        status = int(lib.shared_map(self._h, cells, arrays, arrays + cells, arrays + 2 * cells))
        if status in (_SHARED_ECORRUPT, lib.SHARED_ELOCK):
            raise self._error(status, "render()")
        return status

    def _snapshot(self) -> Any:
        """All the counters at one instant: under the segment's lock while
        attached, the figures frozen at close after."""
        s = ffi.new("buddy_stats_t *")
        if self._closed:
            ffi.memmove(s, self._frozen, ffi.sizeof("buddy_stats_t"))
            return s
        status = int(lib.shared_snapshot(self._h, s))
        if status:
            raise self._error(status, "stats()")
        return s

    def reset_peaks(self) -> None:
        """Set the three peaks to the current figures (for every process)."""
        status = int(lib.shared_reset_peaks(self._h))
        if status:
            raise self._error(status, "reset_peaks()")

    def check(self) -> None:
        """Walk the core's metadata and the requested-size records under the
        lock; raise :class:`RuntimeError` naming the first inconsistency
        (or why the segment is marked corrupt).  Never changes anything.
        After :meth:`close` there is nothing to check (as BuddyAllocator)."""
        if self._closed:
            return
        msg = ffi.new("char[]", 256)
        status = int(lib.shared_check(self._h, msg, 256))
        if status == lib.BUDDY_ECORRUPT:
            raise RuntimeError("allocator invariant broken: " + ffi.string(msg).decode())
        if status:
            raise self._error(status, "check()")

    def recovery_counts(self) -> Dict[str, int]:
        """How often a process found the lock's holder dead (``owner_deaths``)
        and what it concluded: state ``sound`` as it was, ``repaired`` from
        the records, or marked ``corrupt`` -- or ``interrupted``: the
        recovering process died too, and the next locker decided again
        (so, until the segment is corrupt, owner_deaths = sound + repaired
        + corrupt + interrupted); and how often this process had to wait
        for the lock (``waits``)."""
        if self._h == ffi.NULL:
            raise _never_created(self)
        keys = ("owner_deaths", "sound", "repaired", "corrupt", "waits", "interrupted")
        return {k: int(lib.shared_counter(self._h, i)) for i, k in enumerate(keys)}

    def _debug_flip(self, which: int, order: int, index: int) -> None:
        """Testing aid: flip one metadata bit (as BuddyAllocator's)."""
        status = int(lib.shared_debug_flip(self._h, which, order, index))
        if status:
            raise ValueError("no such metadata bit")

    def _debug_set_tag(self, index: int, tag: int) -> None:
        """Testing aid: overwrite the record tag of minimum block ``index``."""
        if lib.shared_debug_set_tag(self._h, index, tag):
            raise ValueError("no such record")

    def _debug_hold_lock(self) -> None:
        """Testing aid: take the segment's lock and return holding it (to
        die holding it, or to make other processes wait)."""
        status = int(lib.shared_debug_lock(self._h))
        if status:
            raise self._error(status, "_debug_hold_lock()")

    def _debug_release_lock(self) -> None:
        """Testing aid: give back the lock :meth:`_debug_hold_lock` took."""
        if lib.shared_debug_unlock(self._h):
            raise RuntimeError("the lock was not held by this thread")

    def _debug_fail_next_table_growth(self) -> None:
        raise ValueError("a shared allocator's records are fixed: nothing grows")

    # ---- blocks (BuddyAllocator's, over the shared layer) ---------------

    # Every block operation is BuddyAllocator's: the one-argument entry
    # points (bound in __init__) and these functions reach the segment;
    # _error, _refusal and _alloc_aligned say what differs.
    _c_alloc_fn = lib.shared_alloc
    _c_alloc_many_fn = lib.shared_alloc_many
    _c_free_fn = lib.shared_free
    _c_free_at_fn = lib.shared_free_at
    _c_free_many_fn = lib.shared_seam_free_many
    _c_locate_fn = lib.shared_locate
    _c_realloc_fn = lib.shared_realloc
    _c_set_base_fn = lib.shared_py_set_base
    _c_view_entries = "shared_view"

    def _alloc_aligned(self, n: int, align: int) -> int:
        """A block at an offset that is a multiple of ``align`` (the arena is
        page aligned in every mapping, so that is absolute up to 4096)."""
        if align > _SHARED_ALIGN:
            raise ValueError(
                f"align={align}: a shared arena guarantees absolute alignment "
                f"up to {_SHARED_ALIGN} bytes in every process's mapping"
            )
        return int(lib.shared_alloc_aligned(self._h, min(n, _U64_MAX), align))

    def _refusal(self, size: int, code: int, count: int = 1, align: int = 1) -> Exception:
        if code == _SHARED_CORRUPT:
            return self._error(_SHARED_ECORRUPT, "alloc()")
        if code == lib.SHARED_INVALID:
            return ValueError(f"align={align} is not usable")
        return super()._refusal(size, code, count, align)

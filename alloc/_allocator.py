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

from __future__ import annotations

import numbers
import operator
from typing import Any, Dict, Optional, Tuple, Union

try:
    from ._buddy import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "alloc's compiled core (alloc._buddy) is missing: install the package "
        "(pip install .  or  pip install -e .) rather than importing it from "
        f"an unbuilt source tree ({exc})"
    ) from exc
from ._errors import BufferArgumentError, OutOfMemory
from ._version import __version__

_BUILT_FOR = ffi.string(lib.alloc_build_version()).decode()
if _BUILT_FOR != __version__:
    raise ImportError(
        f"alloc {__version__} found a compiled core built for alloc "
        f"{_BUILT_FOR}: rebuild it (pip install -e . or pip install .)"
    )

__all__ = ["BuddyAllocator"]

#: Anything that exports a buffer (bytes-like objects, numpy arrays, mmap).
Buffer = Any

_MAX_CAPACITY = lib.BUDDY_MAX_CAPACITY
_U64_MAX = (1 << 64) - 1

# Bound once: a module-global lookup is cheaper than ``lib.x`` each call.
_c_alloc = lib.pool_alloc
_c_free = lib.pool_free
_from_buffer = ffi.from_buffer


def _raise_status(status: int, what: str) -> None:
    """Turn a failed buddy_status into the exception a user would catch."""
    message = ffi.string(lib.buddy_strerror(status)).decode()
    if status == lib.BUDDY_ENOMEM:
        raise OutOfMemory(f"{what}: {message}")
    if status == lib.BUDDY_ECORRUPT:
        raise RuntimeError(f"{what}: {message}")
    raise ValueError(f"{what}: {message}")


def _as_size(size: object, name: str = "size") -> int:
    """``operator.index(size)`` for a non-negative integer, bools refused
    (Python's, and numpy's, which older numpy still lets index)."""
    if isinstance(size, bool) or type(size).__name__ in ("bool", "bool_"):
        raise TypeError(f"{name} must be an integer, not bool")
    try:
        n = operator.index(size)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"{name} must be an integer, not {type(size).__name__}"
        ) from None
    if n < 0:
        raise ValueError(f"{name} must be >= 0, got {n}")
    return n


def _block_size(size: int, min_size: int) -> int:
    """The power of two >= max(size, min_size) (any size, no C call)."""
    return 1 << (max(size, min_size) - 1).bit_length()


def _gil_held() -> bool:
    """True if C calls into the core run with the GIL held (they should)."""
    return bool(lib.alloc_gil_held())


class BuddyAllocator:
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

    # Class-level defaults: close(), repr() and the properties work even if
    # __init__ failed half-way.
    _closed = True
    _h: Any = None
    _core: Any = None
    _st: Any = None
    _mv: Optional[memoryview] = None
    _arena: Any = None
    _base = 0
    _capacity = 0
    _min_size = 0

    def __init__(self, arena: Union[int, Buffer], *, min_size: int = 16) -> None:
        min_size = _as_size(min_size, "min_size")
        if min_size < 1:
            raise ValueError("min_size must be >= 1")
        min_size = 1 << (min_size.bit_length() - 1)  # round down to 2**k

        if isinstance(arena, bool):
            raise TypeError("arena must be an int or a writable buffer, not bool")
        if isinstance(arena, numbers.Integral):  # int, numpy integers
            capacity, mv, base = self._own_arena(operator.index(arena), min_size)
        else:
            capacity, mv, base = self._buffer_arena(arena, min_size)

        out = ffi.new("alloc_pool_t **")
        status = lib.pool_new(capacity, min_size, base, out)
        if status == lib.BUDDY_ENOMEM:
            raise MemoryError(
                f"cannot allocate allocator metadata for {capacity} bytes"
            )
        if status != lib.BUDDY_OK:
            _raise_status(status, "BuddyAllocator()")
        self._h = ffi.gc(out[0], lib.pool_destroy)
        self._core = lib.pool_core(self._h)  # lives as long as self._h
        self._st = lib.buddy_stats(self._core)
        self._mv = mv
        self._base = base
        self._capacity = capacity
        self._min_size = min_size
        self._closed = False

    def _own_arena(self, size: int, min_size: int) -> Tuple[int, memoryview, int]:
        if size <= 0:
            raise ValueError(f"arena size must be > 0, got {size}")
        capacity = -(-size // min_size) * min_size
        if capacity > _MAX_CAPACITY:
            raise MemoryError(f"cannot allocate an arena of {size} bytes")
        raw = lib.buddy_arena_alloc(capacity)
        if raw == ffi.NULL:
            raise MemoryError(f"cannot allocate an arena of {size} bytes")
        self._arena = ffi.gc(raw, lib.buddy_arena_free)
        mv = memoryview(ffi.buffer(self._arena, capacity))
        return capacity, mv, int(ffi.cast("uintptr_t", self._arena))

    @staticmethod
    def _buffer_arena(arena: Buffer, min_size: int) -> Tuple[int, memoryview, int]:
        try:
            mv = memoryview(arena)
        except TypeError:
            raise TypeError(
                "arena must be an int or a writable buffer, "
                f"not {type(arena).__name__}"
            ) from None
        if mv.readonly:
            raise BufferArgumentError("arena buffer is read-only")
        if not mv.c_contiguous:
            raise BufferArgumentError("arena buffer is not C-contiguous")
        if mv.ndim != 1 or mv.format != "B":
            mv = mv.cast("B")
        capacity = len(mv) // min_size * min_size
        if capacity < min_size:
            raise ValueError(
                f"arena buffer of {len(mv)} bytes is shorter than "
                f"min_size={min_size}: no block fits"
            )
        ptr = ffi.from_buffer(mv)
        base = int(ffi.cast("uintptr_t", ptr))
        ffi.release(ptr)
        return capacity, mv, base

    # ---- blocks ---------------------------------------------------------

    def alloc(self, size: int) -> memoryview:
        """Return a writable view of exactly ``size`` bytes (not cleared).

        Raises :class:`alloc.OutOfMemory` when no block fits,
        :class:`TypeError` for a non-integer, :class:`ValueError` for a
        negative size or a closed allocator.
        """
        # mv is read before the C call so that a close() racing this call
        # cannot take it away after the block was counted: the alloc then
        # simply happened before the close.  try_alloc repeats these lines
        # (a shared helper would add a call, ~60 ns, to the hot path).
        mv = self._mv
        if type(size) is int and 0 <= size <= _U64_MAX:
            off = _c_alloc(self._h, size)
        else:
            size = _as_size(size)
            off = _c_alloc(self._h, min(size, _U64_MAX))
        if off >= 0:
            return mv[off : off + size]  # type: ignore[index]
        raise self._refusal(size)

    def try_alloc(self, size: int) -> Optional[memoryview]:
        """Like :meth:`alloc`, but return ``None`` when no block fits."""
        mv = self._mv
        if type(size) is int and 0 <= size <= _U64_MAX:
            off = _c_alloc(self._h, size)
        else:
            size = _as_size(size)
            off = _c_alloc(self._h, min(size, _U64_MAX))
        if off >= 0:
            return mv[off : off + size]  # type: ignore[index]
        if self._closed:
            raise ValueError("the allocator is closed")
        return None

    def calloc(self, size: int) -> memoryview:
        """Like :meth:`alloc`, but the view is zero-filled."""
        view = self.alloc(size)
        if size:
            ptr = ffi.from_buffer(view)
            lib.memset(ptr, 0, len(view))
            ffi.release(ptr)
        return view

    def _refusal(self, size: int) -> Exception:
        """The exception for a request the C core refused (and counted once)."""
        if self._closed:
            return ValueError("the allocator is closed")
        return OutOfMemory(
            f"cannot allocate {size} bytes: that needs a "
            f"{_block_size(size, self._min_size)}-byte block, and the largest "
            f"free block is {self.largest_free} bytes "
            f"(capacity {self._capacity}, {self.bytes_free} bytes free)"
        )

    def free(self, block: Buffer) -> None:
        """Return a block: the view :meth:`alloc` gave, or any buffer over
        exactly the same bytes.

        Raises :class:`ValueError` and changes nothing for a buffer outside
        the arena, one that is not exactly a live block, a double free, a
        released view, or a closed allocator; :class:`TypeError` for a
        non-buffer.
        """
        try:
            ptr = _from_buffer(block)
        except (TypeError, ValueError, BufferError) as exc:
            raise _not_a_block(block, exc) from None
        status = _c_free(self._h, ptr, len(ptr))
        if status:
            self._raise_for(status, "free()", ptr)

    def offset_of(self, block: Buffer) -> int:
        """The offset from the arena start of a live block (the view, or a
        buffer over exactly its bytes).  Raises like :meth:`free`."""
        try:
            ptr = _from_buffer(block)
        except (TypeError, ValueError, BufferError) as exc:
            raise _not_a_block(block, exc) from None
        out = ffi.new("uint64_t *")
        status = lib.pool_locate(self._h, ptr, len(ptr), out)
        if status:
            self._raise_for(status, "offset_of()", ptr)
        return int(out[0])

    def _raise_for(self, status: int, what: str, ptr: Any) -> None:
        """Raise for a refused free/offset_of, naming where the buffer is."""
        where = int(ffi.cast("uintptr_t", ptr)) - self._base
        if 0 <= where < self._capacity:
            what = f"{what} at offset {where}, {len(ptr)} bytes"
        _raise_status(status, what)

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

    @property
    def bytes_wasted(self) -> int:
        """Sum over live blocks of block size minus requested size."""
        st = self._st
        return int(st.bytes_in_blocks - st.bytes_requested) if st is not None else 0

    @property
    def bytes_free(self) -> int:
        """Capacity not covered by a live block."""
        st = self._st
        return int(st.capacity - st.bytes_in_blocks) if st is not None else 0

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

    def __len__(self) -> int:
        """Number of live blocks."""
        return int(self._st.live_blocks) if self._st is not None else 0

    def stats(self) -> Dict[str, Any]:
        """Every statistic in one consistent snapshot, plus ``free_blocks``:
        ``{block_size: number of free blocks of that size}`` for every block
        size of the tree (like Linux's /proc/buddyinfo), and
        ``metadata_bytes``, the memory the core uses for bookkeeping."""
        if self._st is None:
            raise ValueError("the allocator was never created")
        s = ffi.new("buddy_stats_t *")
        lib.buddy_snapshot(self._core, s)  # one consistent copy
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
        }

    def counters(self) -> Dict[str, int]:
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
        first broken invariant.  O(capacity / min_size)."""
        if self._core is None:
            raise ValueError("the allocator was never created")
        msg = ffi.new("char[]", 256)
        if lib.buddy_check(self._core, msg, 256) != lib.BUDDY_OK:
            raise RuntimeError(
                "allocator invariant broken: " + ffi.string(msg).decode()
            )

    def _debug_flip(self, which: int, order: int, index: int) -> None:
        """Testing aid: flip one metadata bit (0 = free, 1 = split) so a
        test can prove :meth:`check` notices.  Never use it otherwise."""
        if lib.buddy_debug_flip(self._core, which, order, index) != lib.BUDDY_OK:
            raise ValueError("no such metadata bit")

    # ---- life cycle -----------------------------------------------------

    def close(self) -> None:
        """End the allocator: later alloc/free raise :class:`ValueError`.

        The statistics stay readable, frozen.  Live views stay valid; the
        arena's memory is released (or a buffer arena unlocked) once the
        last of them is gone.  Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        lib.pool_close(self._h)
        # Drop (not release) the base view: an alloc racing this close may
        # still slice it, and live slices keep the arena's memory anyway.
        self._mv = None
        self._arena = None

    def __reduce__(self) -> Any:
        # A copy would share the C pool and the arena with the original;
        # like mmap.mmap, an allocator is neither copied nor pickled.
        raise TypeError(f"cannot pickle or copy '{type(self).__name__}' object")

    def __enter__(self) -> "BuddyAllocator":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._st is None:
            return f"<{type(self).__name__} (not created)>"
        state = "closed " if self._closed else ""
        free = self.bytes_free
        largest = self.largest_free
        frag = 0.0 if free == 0 else 100.0 * (1 - largest / free)
        return (
            f"<{type(self).__name__} {state}capacity={self._capacity} "
            f"min_size={self._min_size} live_blocks={len(self)} "
            f"bytes_allocated={self.bytes_allocated} "
            f"bytes_wasted={self.bytes_wasted} bytes_free={free} "
            f"largest_free={largest} free_fragmentation={frag:.1f}%>"
        )


def _not_a_block(block: object, exc: BaseException) -> Exception:
    """The error for an argument that yields no usable buffer."""
    if isinstance(exc, TypeError):
        return TypeError(f"expected a block (a buffer), not {type(block).__name__}")
    return ValueError(f"not a block of this allocator: {exc}")

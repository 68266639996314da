"""Exception classes of the package (plain Python; no ffi here)."""

from __future__ import annotations


class OutOfMemory(MemoryError):
    """No free block is large enough for the request.

    A subclass of :class:`MemoryError`, so ``except MemoryError`` catches it.
    The message gives the request, the block size it needs and the largest
    block free at the time.
    """


class BufferArgumentError(TypeError, ValueError):
    """A buffer argument of the wrong kind: read-only or not C-contiguous.

    It is both a :class:`TypeError` (the object cannot serve as an arena)
    and a :class:`ValueError` (it is a buffer, just not a usable one), so
    either ``except`` clause catches it.
    """

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


class UseAfterFree(RuntimeError):
    """Guard mode found a write to memory after its block was freed.

    Raised by the allocation that would have handed those bytes out again
    (which is then taken back: nothing is allocated) and by ``check()``.
    ``offset`` is the arena offset of the first byte found changed.
    """

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset

    def __reduce__(self) -> "tuple[type, tuple[str, int]]":
        return type(self), (str(self), self.offset)

"""alloc: a fast, safe buddy allocator whose blocks are memoryviews.

>>> from alloc import BuddyAllocator
>>> with BuddyAllocator(16384, min_size=16) as pool:
...     block = pool.alloc(960)
...     len(block), pool.bytes_wasted
(960, 64)
"""

from ._allocator import (BufferLike, BuddyAllocator, Counters, OffsetAllocator,
                         SharedBuddyAllocator, Stats)
from ._errors import BufferArgumentError, OutOfMemory, UseAfterFree
from ._version import __version__

__all__ = [
    "BufferLike",
    "BuddyAllocator",
    "Counters",
    "BufferArgumentError",
    "OffsetAllocator",
    "OutOfMemory",
    "SharedBuddyAllocator",
    "Stats",
    "UseAfterFree",
    "__version__",
]

# Tracebacks and help() name the public package, as numpy does.
for _cls in (BuddyAllocator, OffsetAllocator, SharedBuddyAllocator, BufferArgumentError,
             OutOfMemory, UseAfterFree, Stats, Counters):
    _cls.__module__ = __name__
del _cls

"""alloc: a fast, safe buddy allocator whose blocks are memoryviews.

>>> from alloc import BuddyAllocator
>>> with BuddyAllocator(16384, min_size=16) as pool:
...     block = pool.alloc(960)
...     len(block), pool.bytes_wasted
(960, 64)
"""

from ._allocator import BuddyAllocator
from ._errors import BufferArgumentError, OutOfMemory
from ._version import __version__

__all__ = ["BuddyAllocator", "BufferArgumentError", "OutOfMemory", "__version__"]

"""A user's typed script: what type checkers must accept, and must refuse.

tests/test_typing.py runs ``mypy --strict`` on it; .ci/run runs pyright too.
Every line marked ``# type: ignore[...]`` is a mistake the checkers must
report: both are told to fail on an ignore comment that silences nothing,
so if the package's types stopped catching that mistake, the check fails.
"""

import mmap
from typing import List, Optional

import numpy as np

import alloc
from alloc import BuddyAllocator, OffsetAllocator, OutOfMemory, UseAfterFree


def fill(pool: BuddyAllocator, sizes: List[int]) -> List[memoryview]:
    blocks = [pool.alloc(n) for n in sizes]
    maybe: Optional[memoryview] = pool.try_alloc(64, align=64)
    if maybe is not None:
        blocks.append(maybe)
    return blocks


with BuddyAllocator(1 << 20, min_size=64, guard=True) as pool:
    views = fill(pool, [100, 200, 3000])
    bigger: memoryview = pool.realloc(views[0], 500)
    arr = np.frombuffer(pool.calloc(80), dtype=np.float64)
    pool.free(arr)  # any buffer over exactly a block: numpy arrays are buffers
    pool.free(bigger)
    pool.free_many(views[1:])
    stats: alloc.Stats = pool.stats()
    wasted: int = stats["bytes_wasted"]
    first_order: float = stats["orders"][0]["fragmentation_index"]
    calls: int = pool.counters()["alloc_calls"]
    for offset, block_size, requested in pool.blocks():
        print(offset + block_size + requested)
    with pool.block(128) as buf:
        buf[:3] = b"abc"
    try:
        pool.alloc(1 << 30)
    except OutOfMemory:
        pass
    except UseAfterFree as e:
        print(e.offset)
    svg: Optional[str] = pool.render()

    # the mistakes a checker must catch
    pool.free(123)  # type: ignore[arg-type]
    pool.alloc("64")  # type: ignore[arg-type]
    n: str = pool.bytes_free  # type: ignore[assignment]
    missing = stats["no_such_key"]  # type: ignore[typeddict-item]

with mmap.mmap(-1, 1 << 16) as m:
    over_mmap = BuddyAllocator(m)
    block = over_mmap.alloc(4096, align=4096)
    over_mmap.free(block)
    del block
    over_mmap.close()

heap = OffsetAllocator(1 << 40, min_size=4096)
where: int = heap.alloc(1 << 20, align=1 << 21)
where = heap.realloc(where, 1 << 19)
size: int = heap.size_of(where)
heap.free(where)
heap.free(pool.alloc(1))  # type: ignore[arg-type]

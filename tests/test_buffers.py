"""Buffer arenas: "a writable, C-contiguous buffer (bytearray, mmap.mmap, numpy
array, SharedMemory.buf, memoryview): blocks are carved out of it; capacity is
its length rounded down to a multiple of min_size. The allocator keeps the
buffer exported for its whole life, so it cannot be resized or closed under
live blocks. A read-only buffer is refused." — and the life cycle sentence
"the arena's memory is released once the last view is gone (never before)".
"""

from __future__ import annotations

import array
import gc
import mmap
from multiprocessing import shared_memory

import numpy as np
import pytest

from alloc import BuddyAllocator
from conftest import addr, block_size_for, pattern


def raw(arena) -> bytes:
    """The arena's bytes, read through the buffer itself."""
    with memoryview(arena) as m:
        return m.tobytes()


class Arena:
    """A buffer of some kind, and how to get rid of it."""

    def __init__(self, kind: str, n: int):
        self.kind = kind
        self.shm = None
        self.owner = None
        if kind == "bytearray":
            self.buf = bytearray(n)
        elif kind == "mmap":
            self.buf = self.owner = mmap.mmap(-1, n)
        elif kind == "numpy-uint8":
            self.buf = np.zeros(n, np.uint8)
        elif kind == "numpy-float64-2d":
            assert n % 64 == 0
            self.buf = np.zeros((n // 64, 8), np.float64)
        elif kind == "shared-memory":
            self.shm = shared_memory.SharedMemory(create=True, size=n)
            self.buf = self.shm.buf
        elif kind == "memoryview":
            self.owner = bytearray(n)
            self.buf = memoryview(self.owner)
        elif kind == "memoryview-odd-start":
            # starts 100 bytes into a bytearray: a base that is not aligned
            self.owner = bytearray(n + 100)
            self.buf = memoryview(self.owner)[100:]
        elif kind == "memoryview-cast-I":
            self.owner = bytearray(n)
            self.buf = memoryview(self.owner).cast("I")
        elif kind == "array-d":
            assert n % 8 == 0
            self.buf = array.array("d", bytes(n))
        else:
            raise AssertionError(kind)

    def dispose(self):
        gc.collect()
        if isinstance(self.buf, memoryview):
            self.buf.release()
        if self.shm is not None:
            self.shm.close()
            self.shm.unlink()
        elif isinstance(self.owner, mmap.mmap):
            self.owner.close()


KINDS = [
    "bytearray",
    "mmap",
    "numpy-uint8",
    "numpy-float64-2d",
    "shared-memory",
    "memoryview",
    "memoryview-odd-start",
    "memoryview-cast-I",
    "array-d",
]


@pytest.fixture(params=KINDS)
def arena(request):
    ar = Arena(request.param, 4096)
    yield ar
    ar.dispose()


def test_capacity_is_buffer_length(arena):
    with BuddyAllocator(arena.buf, min_size=16) as a:
        assert a.bytes_total == 4096
        assert a.largest_free == 4096
        assert a.bytes_free == 4096


def test_blocks_are_carved_out_of_the_buffer(arena):
    """blocks are carved out of it: writes through a block show up in the
    arena buffer at the block's offset, and the other way round."""
    with BuddyAllocator(arena.buf, min_size=16) as a:
        sizes = [960, 1, 100, 0, 17, 512, 33]
        views = [a.alloc(s) for s in sizes]
        for i, v in enumerate(views):
            v[:] = pattern(i, len(v))
        data = raw(arena.buf)
        for i, v in enumerate(views):
            off = a.offset_of(v)
            assert off % block_size_for(len(v), 16) == 0
            assert data[off : off + len(v)] == pattern(i, len(v))
        # arena -> block
        off = a.offset_of(views[0])
        with memoryview(arena.buf) as m, m.cast("B") as b:
            b[off : off + 4] = b"WXYZ"
        assert views[0][:4].tobytes() == b"WXYZ"
        for v in views:
            a.free(v)
        del views, v
        assert len(a) == 0


@pytest.mark.parametrize("kind", ["bytearray", "numpy-uint8", "numpy-float64-2d", "memoryview-odd-start", "mmap"])
def test_block_addresses_are_arena_address_plus_offset(kind):
    """Natural alignment checked with real addresses: a block lies at
    arena address + offset, and the offset is a multiple of its block size."""
    ar = Arena(kind, 8192)
    try:
        base = addr(ar.buf)
        with BuddyAllocator(ar.buf, min_size=8) as a:
            sizes = [1, 3000, 8, 9, 0, 64, 100, 1000, 17, 2]
            views = [a.alloc(s) for s in sizes]
            for s, v in zip(sizes, views):
                off = a.offset_of(v)
                assert off % block_size_for(s, 8) == 0
                if s:
                    assert addr(v) == base + off
            del views, v
    finally:
        ar.dispose()


@pytest.mark.parametrize(
    "make, min_size, capacity",
    [
        (lambda: bytearray(100), 16, 96),
        (lambda: bytearray(4095), 16, 4080),
        (lambda: bytearray(100), 1, 100),
        (lambda: bytearray(100), 64, 64),
        (lambda: np.zeros(1000, np.uint8), 64, 960),
        (lambda: memoryview(bytearray(5000)), 1024, 4096),
    ],
)
def test_capacity_rounded_down_to_multiple_of_min_size(make, min_size, capacity):
    """capacity is its length rounded **down** to a multiple of min_size."""
    buf = make()
    with BuddyAllocator(buf, min_size=min_size) as a:
        assert a.bytes_total == capacity
        assert a.bytes_free == capacity


def test_capacity_rounded_down_mmap():
    m = mmap.mmap(-1, 5000)
    try:
        with BuddyAllocator(m, min_size=16) as a:
            assert a.bytes_total == 4992
    finally:
        gc.collect()
        m.close()


def test_tail_beyond_capacity_never_handed_out():
    ba = bytearray(b"\x77" * 100)
    with BuddyAllocator(ba, min_size=16) as a:
        views = []
        while True:
            v = a.try_alloc(16)
            if v is None:
                break
            v[:] = bytes(16)
            views.append(v)
        assert len(views) == 6
        assert max(a.offset_of(v) for v in views) == 80
        assert ba[96:] == b"\x77" * 4
        assert ba[:96] == bytes(96)
        del views, v


# ---------------------------------------------------------------------------
# exported for the allocator's whole life; released after the last view
# ---------------------------------------------------------------------------


def test_bytearray_cannot_be_resized_while_allocator_is_open():
    """The allocator keeps the buffer exported for its whole life."""
    ba = bytearray(4096)
    a = BuddyAllocator(ba)
    with pytest.raises(BufferError):
        ba.append(0)
    with pytest.raises(BufferError):
        ba.extend(b"12")
    a.close()
    ba.append(0)  # closed and no view: released
    assert len(ba) == 4097


def test_bytearray_arena_released_only_after_the_last_view():
    """... so it cannot be resized under live blocks, even after close;
    the arena is released once the last view is gone (never before)."""
    ba = bytearray(4096)
    a = BuddyAllocator(ba)
    v = a.alloc(100)
    w = a.alloc(10)
    a.free(w)  # a freed view is still a view over the arena
    a.close()
    with pytest.raises(BufferError):
        ba.append(0)
    del v
    gc.collect()
    with pytest.raises(BufferError):
        ba.append(0)
    w[0] = 1  # still usable
    del w
    gc.collect()
    ba.append(0)
    assert len(ba) == 4097


def test_bytearray_arena_kept_by_derived_exports():
    """A numpy array made from a block is a view too: it keeps the arena."""
    ba = bytearray(4096)
    with BuddyAllocator(ba) as a:
        arr = np.frombuffer(a.alloc(64), np.uint8)
    gc.collect()
    with pytest.raises(BufferError):
        ba.append(0)
    arr[:] = 9
    assert ba[0:64] == b"\x09" * 64
    del arr
    gc.collect()
    ba.append(0)


def test_bytearray_arena_kept_after_del_allocator():
    ba = bytearray(4096)
    a = BuddyAllocator(ba)
    v = a.alloc(100)
    del a
    gc.collect()
    with pytest.raises(BufferError):
        ba.append(0)
    v[:] = b"\x01" * 100
    assert ba[:100] == b"\x01" * 100
    del v
    gc.collect()
    ba.append(0)


def test_mmap_arena_closed_only_once_views_are_gone():
    m = mmap.mmap(-1, 4096)
    try:
        a = BuddyAllocator(m)
        with pytest.raises(BufferError):
            m.close()
        v = a.alloc(960)
        v[:] = pattern(5, 960)
        a.close()
        with pytest.raises(BufferError):
            m.close()
        assert not m.closed
        assert m[0:960] == pattern(5, 960)
        del v
        gc.collect()
        m.close()
        assert m.closed
    finally:
        gc.collect()
        if not m.closed:
            m.close()


def test_mmap_arena_released_on_close_without_views():
    m = mmap.mmap(-1, 4096)
    with BuddyAllocator(m) as a:
        a.free(a.alloc(10))
    gc.collect()
    m.close()
    assert m.closed


def test_shared_memory_arena_closed_only_once_views_are_gone():
    shm = shared_memory.SharedMemory(create=True, size=4096)
    try:
        a = BuddyAllocator(shm.buf)
        v = a.alloc(100)
        v[:] = pattern(9, 100)
        a.close()
        with pytest.raises(BufferError):
            shm.close()  # (shm.buf itself is gone now, its mmap is not)
        assert v.tobytes() == pattern(9, 100)
        v[:] = pattern(10, 100)
        del v
        gc.collect()
        shm.close()
    finally:
        gc.collect()
        try:
            shm.close()
        finally:
            shm.unlink()


def test_shared_memory_arena_visible_through_a_second_mapping():
    """Blocks carved out of SharedMemory are real shared memory."""
    shm = shared_memory.SharedMemory(create=True, size=4096)
    other = shared_memory.SharedMemory(name=shm.name)
    try:
        with BuddyAllocator(shm.buf) as a:
            a.alloc(16)
            v = a.alloc(100)
            v[:] = pattern(4, 100)
            off = a.offset_of(v)
            assert bytes(other.buf[off : off + 100]) == pattern(4, 100)
            del v
    finally:
        gc.collect()
        other.close()
        shm.close()
        shm.unlink()


def test_memoryview_arena_cannot_be_released_under_the_allocator():
    ba = bytearray(4096)
    mv = memoryview(ba)
    a = BuddyAllocator(mv)
    v = a.alloc(10)
    a.close()
    with pytest.raises(BufferError):
        ba.append(0)
    del v
    gc.collect()
    mv.release()
    ba.append(0)

/*
 * arena_map.h -- the arena map walk that pool_map (pool.h) and shared_map
 * (shared.h) share (internal, header-only).  Each layer keeps the
 * requested sizes its own way (a hash table, records in a segment), so it
 * passes a function that gives a live block's requested size; the walk,
 * the cells and their sums are the same.
 */
#ifndef ALLOC_ARENA_MAP_H
#define ALLOC_ARENA_MAP_H

#include "buddy.h"

/* The size the live block [start, start + size) was requested with. */
typedef uint64_t (*arena_map_requested_fn)(const void *ctx, uint64_t start,
                                           uint64_t size);

/* Adds the bytes of [a, b) to the cells of `cell` bytes they fall in. */
static inline void arena_map_add(uint64_t *cells, uint64_t cell, uint64_t a, uint64_t b)
{
    while (a < b) {
        uint64_t c = a / cell, end = (c + 1) * cell;
        if (end > b)
            end = b;
        cells[c] += end - a;
        a = end;
    }
}

/* Walks every block of `core` (capacity bytes) in address order and sums,
 * per cell of `cell` bytes, the requested bytes of live blocks, the rest of
 * their blocks, and the bytes of free blocks, into the caller's zeroed
 * arrays.  The caller holds whatever lock guards the core.  BUDDY_OK, or the status
 * of buddy_block_at that stopped the walk.  O(blocks * L + cells). */
static inline buddy_status arena_map_walk(buddy_t *core, uint64_t capacity,
                                          uint64_t cell,
                                          arena_map_requested_fn requested_of,
                                          const void *ctx, uint64_t *requested,
                                          uint64_t *wasted, uint64_t *free_bytes)
{
    buddy_status status = BUDDY_OK;
    for (uint64_t off = 0; off < capacity;) {
        uint64_t start = 0, size = 0;
        int is_free = 0;
        status = buddy_block_at(core, off, &start, &size, &is_free);
        if (status != BUDDY_OK)
            break;
        if (is_free) {
            arena_map_add(free_bytes, cell, start, start + size);
        } else {
            uint64_t r = requested_of(ctx, start, size);
            arena_map_add(requested, cell, start, start + r);
            arena_map_add(wasted, cell, start + r, start + size);
        }
        off = start + size;
    }
    return status;
}

#endif /* ALLOC_ARENA_MAP_H */

/*
 * pool.h -- the Python binding's view of the core (internal; not installed).
 *
 * A pool is a buddy_t plus what Python needs to free a block by its buffer
 * alone: the arena's base address and the size each live block was
 * requested with.  With both, one call turns (pointer, length) of any
 * buffer into "this exact live block" or a buddy_status saying why not,
 * and frees it; Python keeps no per-block records.
 *
 * Sizes live in the request array: a few bytes per minimum block of the
 * capacity (1 byte up to min_size 128, 2 up to 32 KiB, ...), where the
 * bytes under a live block say how much of it was requested (pool.c, rec_,
 * says how).  Reading or writing a record is one load or store at the
 * block's offset: O(1) in the worst case, nothing to grow.  The array is
 * reserved, not committed (the OS backs a page of it once a record is
 * written there), so a pool costs min_size-th of its capacity at most.
 * An exact fit -- a block requested with exactly its block size, a power
 * of two >= min_size -- writes no record: the core knows its size.
 *
 * Beside it an open-addressing hash table keyed by offset (16 bytes a
 * slot, at most half full; it doubles when half full, so the alloc that
 * doubles it costs O(its entries) once, and it never shrinks) holds what
 * the array cannot: blocks larger than their size needs (pool_alloc_aligned
 * says by how much), and every record of a pool whose array could not be
 * reserved (an arena of more than 2^40 minimum blocks, or no memory).
 * Both are the binding's bookkeeping, not the core's metadata (buddy.h's
 * bound holds).
 *
 * Threads: like buddy.h -- callers serialise (the GIL); with BUDDY_LOCKED
 * every function holds the pool's own mutex.
 */
#ifndef ALLOC_POOL_H
#define ALLOC_POOL_H

#include "buddy.h"

typedef struct alloc_pool alloc_pool_t;

/* A pool over `capacity` bytes at address `base` (see buddy_new for the
 * arguments and statuses).  The arena memory itself is the caller's. */
buddy_status pool_new(uint64_t capacity, uint64_t min_size, uintptr_t base,
                      alloc_pool_t **out);

/* buddy_close for the pool: frees the metadata and the size table; later
 * allocs fail, frees return BUDDY_ECLOSED, statistics stay readable. */
void pool_close(alloc_pool_t *p);
void pool_destroy(alloc_pool_t *p);

/* The core underneath, for statistics and checks. */
buddy_t *pool_core(alloc_pool_t *p);

/* What pool_alloc returns besides an offset: POOL_REFUSED when no free
 * block is large enough (or the pool is closed); POOL_NO_TABLE when the
 * size table could not grow (no memory), counted in failed_allocs too. */
#define POOL_REFUSED -1
#define POOL_NO_TABLE -2
#define POOL_INVALID -3 /* pool_alloc_aligned: align/modulus/rem unusable */
#define POOL_USE_AFTER_FREE -4 /* guard mode: see pool_set_guard */
/* ... and what pool_resize returns for it (no buddy_status has it). */
#define POOL_EUSE_AFTER_FREE 50

/* buddy_alloc that also records `size`: an offset, or POOL_REFUSED or
 * POOL_NO_TABLE.  (pool_alloc, pool_alloc_many, pool_free and pool_locate
 * refuse a NULL pool: POOL_REFUSED, BUDDY_EINVAL.) */
int64_t pool_alloc(alloc_pool_t *p, uint64_t size);

/* buddy_alloc_many that also records the sizes: 0 with the offsets in
 * out[0 .. count-1], or POOL_REFUSED / POOL_NO_TABLE with nothing changed
 * but failed_allocs. */
int64_t pool_alloc_many(alloc_pool_t *p, uint64_t size, uint64_t count,
                        uint64_t *out);

/* pool_alloc for a block at an offset that is a multiple of `align`
 * (buddy_alloc_aligned) or, when modulus != 0, congruent to rem modulo
 * modulus (buddy_alloc_congruent; align is then ignored).  The block's
 * alignment is recorded: pool_free and pool_resize need no more than for
 * any block.  An offset, POOL_REFUSED, POOL_NO_TABLE or POOL_INVALID. */
int64_t pool_alloc_aligned(alloc_pool_t *p, uint64_t size, uint64_t align,
                           uint64_t modulus, uint64_t rem);

/* buddy_resize of the live block starting at `offset` to `new_size`
 * requested bytes, in place: BUDDY_OK (the record says new_size), or
 * BUDDY_ENOMEM (it cannot grow in place; nothing changed), or why no live
 * block starts at offset (BUDDY_ERANGE, BUDDY_EALIGN, BUDDY_EINTERIOR,
 * BUDDY_EFREE, BUDDY_ECLOSED). */
buddy_status pool_resize(alloc_pool_t *p, uint64_t offset, uint64_t new_size);
/* realloc in one call: pool_resize, and where that returns BUDDY_ENOMEM
 * the move too -- a block for new_size as pool_alloc takes one, the first
 * min(old, new_size) bytes copied there when `copy` (the arena is memory
 * at `base`), the old block freed as pool_free_at frees it.  No other
 * call sees a state between the steps.  *out is the block's offset: the
 * same one (in place), the new one (moved, BUDDY_OK), or, with
 * BUDDY_ENOMEM, what pool_alloc returned for the new block (POOL_REFUSED,
 * POOL_NO_TABLE or POOL_USE_AFTER_FREE; nothing else changed).  Other
 * statuses as pool_resize. */
buddy_status pool_realloc(alloc_pool_t *p, uint64_t offset, uint64_t new_size,
                          int copy, int64_t *out);

/* Frees the live block that starts at `offset`, whatever its size; or
 * returns why no live block starts there (as pool_resize), changing
 * nothing. */
buddy_status pool_free_at(alloc_pool_t *p, uint64_t offset);

/* Guard mode.  pool_set_guard fills every free block of the arena with
 * `byte` (O(capacity)); from then on every block is filled when it is
 * freed (pool_free, pool_free_at, the tail a shrinking pool_resize lets
 * go) and checked when it is handed out.  An allocation whose block holds
 * a byte that is not `byte` -- written after its block was freed -- is
 * taken back (it counts as an alloc and a free), the pattern restored, and
 * it returns POOL_USE_AFTER_FREE (pool_resize growing into such bytes:
 * POOL_EUSE_AFTER_FREE, nothing changed); pool_guard_bad then says where
 * the first such byte was.  With guard mode off, none of this runs.
 * pool_guard_scan checks every free block: BUDDY_ECORRUPT with the first
 * bad offset in *where, or BUDDY_OK (always, with guard mode off).
 * pool_guard_find: the first byte of the arena's [offset, offset + len)
 * that is not `byte`, or UINT64_MAX. */
buddy_status pool_set_guard(alloc_pool_t *p, unsigned char byte);
uint64_t pool_guard_bad(const alloc_pool_t *p);
buddy_status pool_guard_scan(alloc_pool_t *p, uint64_t *where);
uint64_t pool_guard_find(const alloc_pool_t *p, uint64_t offset, uint64_t len,
                         unsigned char byte);

/* Testing aids: the next time the size table must grow, it fails; and
 * pool_debug_table_only makes a pool with no live block keep every record
 * in the table, as one whose request array could not be reserved does
 * (BUDDY_EINVAL if a block is live). */
void pool_debug_fail_growth(alloc_pool_t *p);
buddy_status pool_debug_table_only(alloc_pool_t *p);

/* Bytes of the request array (reserved; 0 if the pool has none). */
uint64_t pool_record_bytes(const alloc_pool_t *p);

/* Frees the live block whose bytes are exactly [ptr, ptr + len): it must
 * start at a live block and len must equal the size that block was
 * requested with.  Otherwise changes nothing and returns why (BUDDY_ERANGE,
 * BUDDY_EALIGN, BUDDY_EINTERIOR, BUDDY_ESIZE, BUDDY_EFREE, BUDDY_ECLOSED). */
buddy_status pool_free(alloc_pool_t *p, const char *ptr, uint64_t len);

/* What pool_free would return, without freeing; on BUDDY_OK stores the
 * block's offset in *offset. */
buddy_status pool_locate(alloc_pool_t *p, const char *ptr, uint64_t len,
                         uint64_t *offset);

/* The block that holds byte `offset` if it is live: its start, block size
 * and requested size; BUDDY_EFREE if that block is free, BUDDY_ERANGE past
 * the capacity, BUDDY_ECLOSED.  O(L). */
buddy_status pool_block_at(alloc_pool_t *p, uint64_t offset, uint64_t *start,
                           uint64_t *size, uint64_t *requested);

/* The arena map: the buddy tree's span (min_size << max_order) cut into
 * ncells equal cells (ncells must divide it); for each cell the bytes of
 * live blocks that were requested, the bytes of live blocks past their
 * request, and the bytes of free blocks (what is left of a cell lies past
 * the capacity).  One walk of every block, O(blocks * L + ncells). */
buddy_status pool_map(alloc_pool_t *p, uint64_t ncells, uint64_t *requested,
                      uint64_t *wasted, uint64_t *free_bytes);

/* Bytes the size table uses now. */
uint64_t pool_table_bytes(const alloc_pool_t *p);

#endif /* ALLOC_POOL_H */

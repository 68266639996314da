/*
 * buddy.h -- a binary buddy allocator over offsets.
 *
 * The core hands out offsets into an arena of `capacity` bytes.  It never
 * reads or writes the arena itself: all metadata lives in memory of its own,
 * so a program that scribbles over a freed block cannot corrupt the
 * allocator, and the arena may be memory the caller cannot even touch
 * (a device, another process, a file).
 *
 * ---------------------------------------------------------------------------
 * Model
 * ---------------------------------------------------------------------------
 * m = min_size (a power of two), N = capacity / m minimum blocks,
 * L = ceil(log2 N) orders above the minimum.  A block of order k is m * 2^k
 * bytes and starts at a multiple of its own size (natural alignment).
 * The buddy tree is the full tree over 2^L minimum blocks; the part of it
 * that lies past N is never handed out and has no metadata at all, so any
 * capacity works, not just powers of two.
 *
 * Placement: a request of s bytes takes a block of order
 * k = ceil(log2(max(s, m) / m)).  The core takes the smallest order j >= k
 * that has a free block, and within that order the free block with the
 * lowest offset (address-ordered best fit); it splits it down to order k
 * keeping the lower halves.  Freeing coalesces with free buddies as far up
 * as possible.  (Taking the lowest offset over *all* orders >= k instead was
 * measured on the churn-75pct workload: 14% more failed allocations and
 * nearly twice the time per step, so large blocks are kept whole instead.)
 *
 * ---------------------------------------------------------------------------
 * Cost
 * ---------------------------------------------------------------------------
 * Metadata: for each order k, a free bitmap and (k >= 1) a split bitmap of
 * N_k = ceil(N / 2^k) bits, and above each free bitmap a summary tree with
 * one bit per non-zero 64-bit word, up to a root of at most 8 words.  The
 * tree of every order of more than one word has D levels, the number order
 * 0's needs (D = max(1, ceil(log64(N / 8))) <= 11; a smaller order's top
 * levels are single words), so that walking a tree takes the same path at
 * each of them; an order of one word has that one level (D_k = 1 if
 * N_k <= 64, else D).  Each tree's root lives in its order's descriptor
 * (256 bytes an order, beside a struct of under 1 KiB); the rest, in
 * 64-bit words:
 *
 *     words = sum_k sum_{d<D_k-1} ceil(N_k / 64^(d+1))  (free bitmaps, summaries)
 *           + sum_{k>=1} ceil(N_k / 64)                   (split bitmaps)
 *
 * which is at most (3 + 2/63) N bits + 8 (3L + 3) * (D + 1) bytes.
 * buddy_metadata_bytes() reports the exact figure; a 64 MiB arena of
 * 64-byte blocks (N = 2^20) needs 403,448 bytes.
 *
 * Time: buddy_alloc and buddy_free touch at most 2 (L + 1)(D + 2) + 7
 * words and use find-first-set instructions; nothing is scanned but a root
 * of up to 8 words, from its first (placement is address-ordered, so that
 * is nearly always the one).  Clearing a bit changes a summary word only
 * when the word below it becomes zero; setting one sets its summary bit at
 * every level (D + 1 words), and taking the lowest free bit writes every
 * level of its path back: no data-dependent branch (they mispredicted),
 * and the summary words are few and hot.  So the usual cost is a few words
 * per level split or merged.  The most recent split is kept
 * pending (only the counters record it) until an operation needs its bits:
 * an alloc followed by the free of that block costs O(L) counter updates
 * (L + 1 per operation: on an empty 64 MiB / 64 B arena, a pair is ~353
 * instructions, callgrind) and O(D) bitmap words instead of 2 L (D + 2),
 * and whichever operation writes it out pays at most L (D + 1) words more,
 * once (hence the factor 2).  Statistics, placement and statuses are
 * exactly those of eager splitting.
 * buddy_new is O(L): the metadata comes zeroed from calloc, or, from
 * 1 MiB on (POSIX), from an anonymous private mmap with MAP_NORESERVE, so
 * the pages of a large arena's metadata are committed only as they are
 * first touched (a 1 TiB arena of 4 KiB blocks starts at once).
 * buddy_check is O(N).
 *
 * ---------------------------------------------------------------------------
 * Where the metadata lives
 * ---------------------------------------------------------------------------
 * All of an allocator's metadata -- counters, bitmaps, the descriptors that
 * say where each bitmap is -- is one contiguous region of exactly
 * buddy_metadata_bytes() bytes, and nothing in it is a pointer: bitmaps are
 * found by offsets from the region's start.  So the region may be laid out
 * in memory the caller provides (buddy_init_at), for instance a shared
 * memory segment, and opened again at another address, for instance by
 * another process that maps the same segment (buddy_attach_at).  The
 * region starts with a magic number and a layout version (which includes
 * the size of the build's struct), so opening memory that holds no
 * allocator, or one from an incompatible build, is refused.
 *
 * ---------------------------------------------------------------------------
 * Threads
 * ---------------------------------------------------------------------------
 * An allocator is not safe to use from several threads at once unless the
 * core is compiled with BUDDY_LOCKED defined to 1; then every function that
 * takes a buddy_t (except buddy_destroy) holds the allocator's own mutex.
 * An allocator laid out by buddy_init_at never takes that mutex: its
 * caller serialises every call (across processes, for shared memory).
 * Different allocators never share state.  The Python binding keeps the
 * GIL across every call, which serialises them on a GIL build, and defines
 * BUDDY_LOCKED on a free-threaded build.
 *
 * Nothing here aborts, prints or calls exit().  Sizes and offsets are bytes.
 */
#ifndef BUDDY_H
#define BUDDY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The largest capacity (and so the largest block) the core accepts: 2^62. */
#define BUDDY_MAX_CAPACITY ((uint64_t)1 << 62)
/* Orders run from 0 (min_size) to at most BUDDY_MAX_ORDER. */
#define BUDDY_MAX_ORDER 62
/* The layout of the metadata region; buddy_attach_at refuses any other.
 * Raised whenever the region's layout changes. */
#define BUDDY_LAYOUT_VERSION 5

/* Every fallible function returns one of these.  buddy_strerror() has a
 * sentence for each. */
typedef enum buddy_status {
    BUDDY_OK = 0,
    BUDDY_ENOMEM = 1,     /* no free block is large enough (or no memory
                             for the metadata, from buddy_new) */
    BUDDY_EINVAL = 2,     /* bad argument: capacity < min_size or too large,
                             min_size not a power of two, NULL pointer */
    BUDDY_ERANGE = 3,     /* offset is not inside the arena */
    BUDDY_EALIGN = 4,     /* offset is not a multiple of min_size, so no
                             block can start there */
    BUDDY_EINTERIOR = 5,  /* offset is inside a live block, not its start */
    BUDDY_ESIZE = 6,      /* a live block starts at offset, but the size
                             given belongs to a different block size */
    BUDDY_EFREE = 7,      /* the memory at offset is already free
                             (a double free) */
    BUDDY_ECLOSED = 8,    /* buddy_close() was called on this allocator */
    BUDDY_ECORRUPT = 9    /* buddy_check() found a broken invariant */
} buddy_status;

typedef struct buddy buddy_t;

/* Counters, kept up to date by every operation and readable at any time
 * through buddy_stats().  "Blocks" are whole buddy blocks; "requested" is
 * what callers asked for. */
typedef struct buddy_stats {
    uint64_t capacity;        /* N * min_size; never changes */
    uint64_t min_size;        /* m; never changes */
    uint64_t bytes_requested; /* sum of sizes of live allocations */
    uint64_t bytes_in_blocks; /* sum of block sizes of live allocations */
    uint64_t live_blocks;     /* number of live allocations */
    uint64_t alloc_calls;     /* successful allocations; never decreases */
    uint64_t free_calls;      /* successful frees; never decreases */
    uint64_t failed_allocs;   /* allocations refused for lack of space;
                                 never decreases */
    uint64_t peak_bytes_requested; /* the highest bytes_requested, */
    uint64_t peak_bytes_in_blocks; /* bytes_in_blocks and live_blocks */
    uint64_t peak_live_blocks;     /* have reached since creation or the
                                      last buddy_reset_peaks() */
    uint32_t max_order;       /* L */
    uint32_t closed;          /* 1 after buddy_close() */
    uint64_t free_blocks[BUDDY_MAX_ORDER + 1];
                              /* free_blocks[k]: free blocks of order k */
} buddy_stats_t;

/* ---- life cycle --------------------------------------------------------- */

/* Creates an allocator for an arena of `capacity` bytes, rounded down to a
 * multiple of `min_size`.  min_size must be a power of two (>= 1) and
 * capacity must be at least min_size and at most BUDDY_MAX_CAPACITY.
 * On success stores the allocator in *out and returns BUDDY_OK; otherwise
 * returns BUDDY_EINVAL or BUDDY_ENOMEM (metadata could not be allocated)
 * and leaves *out untouched.  O(L) time, buddy_metadata_bytes() of memory. */
buddy_status buddy_new(uint64_t capacity, uint64_t min_size, buddy_t **out);

/* Lays out a new allocator (arguments as buddy_new) in the caller's memory
 * at `mem`: buddy_metadata_bytes(capacity, min_size) bytes, 64-byte
 * aligned and all zero (as fresh shared memory or mmap'd pages are; the
 * core does not clear it, so pages it never needs stay untouched).  On
 * success stores the allocator, which is `mem` itself, in *out and
 * returns BUDDY_OK; BUDDY_EINVAL for bad arguments, a NULL or misaligned
 * `mem`.  O(L).  The memory stays the caller's: buddy_destroy does nothing
 * to it, and it may be unmapped once no one uses the allocator.  Such an
 * allocator has no mutex of its own (see Threads); buddy_close on it marks
 * it closed for every user of the memory. */
buddy_status buddy_init_at(void *mem, uint64_t capacity, uint64_t min_size,
                           buddy_t **out);

/* Opens the allocator that buddy_init_at laid out at `mem` -- the same
 * memory mapped at any address, in any process.  Checks the magic number,
 * the layout version and build, and that every stored size and offset is
 * the one buddy_init_at would lay out for the stored capacity and
 * min_size; returns BUDDY_EINVAL (and leaves *out untouched) if any
 * differs, if mem is NULL or not 64-byte aligned.  It cannot know how
 * much memory is there: the caller must have buddy_metadata_bytes() of the
 * stored figures readable at mem.  O(L D).  The state (which blocks are
 * live) is not checked; buddy_check does that. */
buddy_status buddy_attach_at(void *mem, buddy_t **out);

/* Ends the allocator but keeps it readable: every later buddy_alloc fails
 * and every later buddy_free returns BUDDY_ECLOSED; buddy_stats() still
 * answers with the figures as they were.  The bitmaps of a region that
 * buddy_new mapped (1 MiB or more) are returned to the system at once;
 * smaller ones go at buddy_destroy.  Idempotent.  NULL is ignored. */
void buddy_close(buddy_t *b);

/* Releases everything buddy_new allocated; b must not be used afterwards.
 * NULL, and an allocator in caller memory (buddy_init_at), are ignored.
 * Not to be called while another thread may be using b. */
void buddy_destroy(buddy_t *b);

/* Bytes of the allocator's metadata region for (capacity, min_size): the
 * struct, one descriptor per order and the bitmaps -- exactly what
 * buddy_init_at needs and buddy_new allocates.  0 if the arguments are
 * invalid. */
uint64_t buddy_metadata_bytes(uint64_t capacity, uint64_t min_size);

/* ---- blocks ------------------------------------------------------------- */

/* Allocates a block for `size` bytes (0 is allowed and takes a min_size
 * block) and returns its offset, a multiple of its block size.  Returns -1
 * when no free block is large enough, when size exceeds every block, or
 * after buddy_close(); nothing changes then except failed_allocs. */
int64_t buddy_alloc(buddy_t *b, uint64_t size);

/* buddy_alloc for a block whose offset is also a multiple of `align`
 * (0, or a power of two): since every block starts at a multiple of its
 * own size, that is a block of max(buddy_block_size(size), align) bytes,
 * counted whole in bytes_in_blocks.  Free or resize it with the same align.
 * Returns -2 (nothing counted) if align is not a power of two. */
int64_t buddy_alloc_aligned(buddy_t *b, uint64_t size, uint64_t align);

/* Allocates a block for `size` bytes at the lowest offset that is
 * congruent to `rem` modulo `modulus` (a power of two; rem < modulus):
 * for a caller whose arena starts at an address less aligned than it
 * needs.  Only blocks of the size's own order are considered, so rem must
 * be a multiple of that block size, else -2 (nothing counted).  Returns
 * the offset, or -1 (counted in failed_allocs) if no such block is free.
 * Visits the leaves at candidate offsets: O(N L) worst case, a rare path. */
int64_t buddy_alloc_congruent(buddy_t *b, uint64_t size, uint64_t modulus,
                              uint64_t rem);

/* Allocates `count` blocks for `size` bytes each, all or nothing: their
 * offsets go to out[0 .. count-1] in allocation order, as `count` calls of
 * buddy_alloc would give them.  If they do not all fit, nothing changes
 * but failed_allocs (+1) and it returns BUDDY_ENOMEM; after buddy_close,
 * BUDDY_ECLOSED.  O(L) to decide, then count allocations. */
buddy_status buddy_alloc_many(buddy_t *b, uint64_t size, uint64_t count,
                              uint64_t *out);

/* Counts one allocation that a layer above the core refused
 * (failed_allocs += 1), e.g. when its own bookkeeping could not grow. */
void buddy_count_refusal(buddy_t *b);

/* Frees the block at `offset`.  `size` must be the size it was allocated
 * with: the core checks that it maps to the block's size, but it cannot
 * tell 960 from 1000 within one 1024-byte block.  It subtracts size from
 * bytes_requested, so a wrong size of the right block size skews that one
 * counter (and buddy_check then reports it); nothing else is affected.  Returns BUDDY_OK, or without changing anything:
 * BUDDY_ERANGE, BUDDY_EALIGN, BUDDY_EINTERIOR, BUDDY_ESIZE, BUDDY_EFREE,
 * BUDDY_ECLOSED (see the enum).  Every check is O(L). */
buddy_status buddy_free(buddy_t *b, uint64_t offset, uint64_t size);

/* buddy_free for a block from buddy_alloc_aligned, with its align
 * (buddy_free(b, o, s) is buddy_free_aligned(b, o, s, 0)).  BUDDY_EINVAL
 * if align is not 0 or a power of two. */
buddy_status buddy_free_aligned(buddy_t *b, uint64_t offset, uint64_t size,
                                uint64_t align);

/* Resizes the live block at `offset` (allocated for `size` bytes with
 * `align`, as for buddy_free_aligned) in place so that it holds `new_size`
 * bytes in a block of new_size's own order:
 *   shrinking frees the upper halves (no merge is possible: their buddies
 *   are the block itself);
 *   growing takes the buddies above, which must be free, and the block must
 *   be the lower half at every level (offset a multiple of the new size);
 *   otherwise BUDDY_ENOMEM and nothing changes -- move it instead.
 * bytes_requested, bytes_in_blocks and the peaks follow; alloc_calls and
 * free_calls do not count a resize.  Wrong blocks get the statuses of
 * buddy_free.  O(L) plus writing out the pending split. */
buddy_status buddy_resize(buddy_t *b, uint64_t offset, uint64_t size,
                          uint64_t align, uint64_t new_size);

/* What buddy_free(b, offset, size) would return, without freeing anything:
 * BUDDY_OK means a live block of size's block size starts at offset.
 * (It may write out the pending split; no figure changes.) */
buddy_status buddy_probe(buddy_t *b, uint64_t offset, uint64_t size);

/* The block, live or free, that holds byte `offset`: its start and size in
 * *start and *size, and in *is_free whether it is free.  Returns BUDDY_OK,
 * BUDDY_ERANGE (offset >= capacity) or BUDDY_ECLOSED.  O(L).  Walking
 * offset = start + size from 0 visits every block in address order. */
buddy_status buddy_block_at(buddy_t *b, uint64_t offset, uint64_t *start,
                            uint64_t *size, int *is_free);

/* The block size that a request of `size` bytes takes (max(size, min_size)
 * rounded up to a power of two), or 0 if that exceeds the capacity (no
 * such block can ever be free).  O(1). */
uint64_t buddy_block_size(const buddy_t *b, uint64_t size);

/* The largest size buddy_alloc would satisfy now: the size of the largest
 * free block, or 0 if none is free (after buddy_close: the figure as it
 * was).  O(1). */
uint64_t buddy_largest_free(const buddy_t *b);

/* The allocator's counters.  The pointer stays valid until buddy_destroy
 * and always shows current figures (each field is read on its own; under
 * BUDDY_LOCKED use buddy_snapshot for a consistent set).  Never NULL. */
const buddy_stats_t *buddy_stats(const buddy_t *b);

/* Copies all counters at one instant (under the lock with BUDDY_LOCKED). */
void buddy_snapshot(const buddy_t *b, buddy_stats_t *out);

/* Sets the three peak_* counters to the current figures.  O(1). */
void buddy_reset_peaks(buddy_t *b);

/* ---- checking ----------------------------------------------------------- */

/* Walks all metadata and checks every invariant: bits set only on nodes of
 * the tree, a node is exactly one of free / split / allocated, no two free
 * buddies, summaries agree with the bitmaps, every counter agrees with the
 * bitmaps, and the blocks tile the arena exactly.  Returns BUDDY_OK or
 * BUDDY_ECORRUPT and writes a sentence naming the first broken invariant
 * into msg (if msg is not NULL and msglen > 0; always NUL-terminated).
 * After buddy_close() returns BUDDY_OK.  O(N).  Writes out the pending
 * split first (see Cost); no figure changes. */
buddy_status buddy_check(buddy_t *b, char *msg, size_t msglen);

/* A constant sentence for a status (never NULL). */
const char *buddy_strerror(buddy_status status);

/* ---- testing aid -------------------------------------------------------- */

/* Flips one metadata bit so that tests can prove buddy_check() notices:
 * which = 0 the free bit, 1 the split bit of block `index` at `order`.
 * Returns BUDDY_EINVAL if there is no such bit.  Never use it otherwise. */
buddy_status buddy_debug_flip(buddy_t *b, unsigned which, unsigned order,
                              uint64_t index);

/* ---- arenas ------------------------------------------------------------- */

/* Convenience for callers that want the core to provide the memory too:
 * `size` bytes aligned to the largest power of two <= size (at least 64),
 * so that every block of an allocator over it is aligned in absolute terms
 * to its own size; not cleared; pages are committed by the OS as they are
 * first touched (only `size` bytes are ever committed: the alignment costs
 * address space, not memory).  NULL when the machine cannot provide it or
 * size is 0.  Free with buddy_arena_free and the same size. */
void *buddy_arena_alloc(uint64_t size);
void buddy_arena_free(void *arena, uint64_t size);

#ifdef __cplusplus
}
#endif

#endif /* BUDDY_H */

/*
 * shared.h -- one buddy arena in a named POSIX shared memory segment, used
 * by many processes at once (internal; the binding's SharedBuddyAllocator).
 *
 * ---------------------------------------------------------------------------
 * The segment
 * ---------------------------------------------------------------------------
 * Everything lives in the segment and nothing in it is a pointer: each
 * process maps it at its own address and finds every part by its offset.
 *
 *     [0, meta_off)            header: magic, layout version, the build's
 *                              struct sizes, the offsets below, the state
 *                              (sound / corrupt and why), recovery
 *                              counters, and the process-shared robust
 *                              mutex
 *     [meta_off, +meta_bytes)  the core's metadata (buddy_init_at):
 *                              bitmaps and statistics, 64-byte aligned
 *     [tags_off, +N)           one tag byte per minimum block
 *     [waste_off, +N w)        w waste bytes per minimum block
 *     [arena_off, +capacity)   the arena, page aligned (4096)
 *
 * N = capacity / min_size.  The header's magic is written last by the
 * creator, so a half-made segment reads as "not an allocator".
 *
 * ---------------------------------------------------------------------------
 * Requested-size records: N (1 + w) bytes, fixed
 * ---------------------------------------------------------------------------
 *     w = ceil((log2(min_size) + 1) / 8)         (1 byte up to min_size 128)
 *     records = N * (1 + w) bytes                (16 B blocks: 1/8 of the
 *                                                 arena; 64 B: 1/32)
 * The tag of minimum block i is 0 unless a live block starts there; then
 * it is (k + 1) | 0x80 if the block is larger than its size needs (an
 * aligned allocation), where k is the block's order.  A live block of
 * order k owns the waste bytes of its 2^k minimum blocks, w 2^k >= w
 * bytes, and stores waste = block size - requested size there (little
 * endian, in the first min(8, w 2^k) of them).  0 <= waste <= block size
 * = min_size 2^k (a zero-size request wastes the whole block) needs
 * log2(min_size) + k + 1 bits, which always fit.
 * So the records say, with no other input, which blocks are live, their
 * orders and their requested sizes.
 *
 * Commit order (what makes a killed process recoverable):
 *   alloc:  core alloc; waste bytes; then the tag (release store).
 *   free:   core free; then the tag is cleared.
 *   resize: the tag is cleared first; core resize; waste; tag.
 * So at every instant the records describe the state before or after
 * the operation in progress, never a mixture: they are the commit log.
 *
 * ---------------------------------------------------------------------------
 * Lock protocol and recovery
 * ---------------------------------------------------------------------------
 * Every operation holds the segment's mutex (PTHREAD_PROCESS_SHARED,
 * PTHREAD_MUTEX_ROBUST).  It first tries the lock; only if another thread
 * or process holds it does it call the wait hook (shared_set_wait_hooks:
 * the extension releases the GIL there), block, run the operation and
 * unlock, and only then take the GIL back -- the mutex is never held while
 * waiting for a GIL.
 *
 * A locker that gets EOWNERDEAD (the holder died) checks before anything:
 *   1. the records alone: tags well formed, every block inside the arena,
 *      waste < block size, a plain block's request needs its order;
 *   2. the core: buddy_check;
 *   3. both agree: the live blocks of the core are exactly the tagged
 *      ones, with their orders, and the sum and count of requested sizes
 *      are the core's bytes_requested and live_blocks.
 * All three hold: the state is sound as it is (counted in clean).
 * Only 1 holds: the core is rebuilt from the records (zeroed, laid out
 * again, every tagged block taken again at its offset) and 2 and 3 are
 * checked again (counted in repairs).  The rebuilt state is the one before
 * the dead process's interrupted operation; the history counters
 * (alloc_calls, free_calls, failed_allocs, the peaks) restart from the
 * live figures.  Otherwise (records broken, or an over-aligned block
 * live, which a rebuild cannot place) the segment is marked corrupt, with
 * the reason, and every later operation in every process returns
 * SHARED_ECORRUPT.  pthread_mutex_consistent is called in both cases, so
 * the mutex itself stays usable.
 *
 * ---------------------------------------------------------------------------
 * Cost
 * ---------------------------------------------------------------------------
 * An operation is the core's (buddy.h: O(L) levels) plus the lock (one
 * atomic instruction each way when uncontended) plus O(1) record bytes
 * (at most 8 waste bytes and the tag).  shared_check and recovery are
 * O(N); a rebuild adds O(live blocks * L).  shared_create is O(L) and
 * touches only the header and the core's head: the rest of the segment
 * (ftruncate'd, so zero) is committed as it is used.
 *
 * ---------------------------------------------------------------------------
 * Threads and processes
 * ---------------------------------------------------------------------------
 * Every function that takes a shared_t is safe from any thread of any
 * attached process (the segment's mutex), except shared_release, which
 * must be the handle's last use.  A handle is private to its process
 * (malloc'd, holding this mapping's addresses); a fork()ed child may use
 * its copy, since the mapping is inherited.
 *
 * Nothing here aborts or prints.  Statuses are buddy_status values or the
 * SHARED_* codes below: every block function returns BUDDY_ECLOSED after
 * shared_detach (allocations: SHARED_REFUSED), SHARED_ECORRUPT once the
 * segment is marked corrupt (allocations: SHARED_CORRUPT), and otherwise
 * what the corresponding pool.h function returns.
 */
#ifndef ALLOC_SHARED_H
#define ALLOC_SHARED_H

#include "buddy.h"

/* Platforms: where POSIX shared memory and robust process-shared mutexes
 * exist (Linux, the BSDs).  Elsewhere (macOS lacks robust mutexes, Windows
 * both) every function exists, but creating and attaching fail with
 * SHARED_ESYS and shared_errno() == ENOSYS (shared.c: SHARED_SUPPORTED). */

/* The segment layout; attaching refuses any other. */
#define SHARED_LAYOUT_VERSION 1
/* The arena's offset in the segment is a multiple of this: blocks are
 * aligned in absolute terms up to it in every process. */
#define SHARED_ARENA_ALIGN 4096

/* Statuses besides buddy_status (distinct from every BUDDY_* and SEAM_*):
 * SHARED_ECORRUPT  the segment is marked corrupt (a holder died and the
 *                  state could not be proven sound or repaired);
 * SHARED_ELOCK     the mutex failed otherwise;
 * SHARED_EEXIST    create: the name is taken;
 * SHARED_ENOENT    attach: no segment of that name;
 * SHARED_ENOTOURS  attach: not an allocator's segment, another layout or
 *                  build, or truncated (the reason is given);
 * SHARED_ESYS      a system call failed: shared_errno() says which errno. */
#define SHARED_ECORRUPT 60
#define SHARED_ELOCK 61
#define SHARED_EEXIST 62
#define SHARED_ENOENT 63
#define SHARED_ENOTOURS 64
#define SHARED_ESYS 65

/* What the int64_t-returning allocation functions return besides an
 * offset: SHARED_REFUSED when no free block is large enough (or the handle
 * is closed), SHARED_INVALID for an unusable align, SHARED_CORRUPT when
 * the segment is marked corrupt. */
#define SHARED_REFUSED -1
#define SHARED_INVALID -3
#define SHARED_CORRUPT -6

typedef struct shared shared_t;

/* ---- life cycle --------------------------------------------------------- */

/* Creates the segment `name` ("/..." as shm_open wants it), exclusively,
 * for an arena of `capacity` bytes (a multiple of min_size, a power of
 * two) and lays everything out.  BUDDY_OK with the process's handle in
 * *out; BUDDY_EINVAL (bad arguments), SHARED_EEXIST, SHARED_ESYS. */
int shared_create(const char *name, uint64_t capacity, uint64_t min_size,
                  shared_t **out);

/* Attaches to the segment `name`.  BUDDY_OK; SHARED_ENOENT; SHARED_ESYS;
 * SHARED_ENOTOURS with a sentence in why[0 .. whylen) saying what does
 * not match. */
int shared_attach(const char *name, shared_t **out, char *why, size_t whylen);

/* shm_unlink(name): 0, or the errno. */
int shared_unlink(const char *name);

/* This process stops using the handle: every later operation returns
 * BUDDY_ECLOSED (SHARED_REFUSED for allocations).  The mapping stays
 * until shared_release.  Idempotent. */
void shared_detach(shared_t *h);

/* Unmaps the segment and frees the handle.  Not to be called while any
 * thread may use the handle or the arena's memory. */
void shared_release(shared_t *h);

/* The errno of the last failed system call in shared_create/attach. */
int shared_errno(void);

/* Where things are in this process's mapping, and the layout figures. */
char *shared_arena(const shared_t *h);
buddy_t *shared_core(const shared_t *h);
uint64_t shared_capacity(const shared_t *h);
uint64_t shared_min_size(const shared_t *h);
uint64_t shared_segment_bytes(const shared_t *h);
uint64_t shared_records_bytes(const shared_t *h);

/* 1 if the segment is marked corrupt (any process may have marked it);
 * the reason is copied into why (NUL-terminated) when why is not NULL. */
int shared_is_corrupt(const shared_t *h, char *why, size_t whylen);

/* Recovery counters: which = 0 owner deaths seen, 1 found sound, 2
 * repaired from the records, 3 marked corrupt, 5 recoveries cut short by
 * the recovering process's own death (the next locker decides again), so
 * deaths = sound + repaired + corrupt + cut short, with no decision pending
 * (plus deaths seen once corrupt); 4 the times this handle had to wait for
 * the lock (not in the segment). */
uint64_t shared_counter(const shared_t *h, unsigned which);

/* The wait hooks: `release` is called before blocking on a held lock and
 * returns a token that `reacquire` gets after the operation and unlock.
 * The extension installs PyEval_SaveThread / PyEval_RestoreThread.  NULL
 * (the default) blocks without calling anything. */
void shared_set_wait_hooks(void *(*release)(void), void (*reacquire)(void *));

/* ---- blocks (each holds the lock; pool.h's meanings) -------------------- */

int64_t shared_alloc(shared_t *h, uint64_t size);
/* align: a power of two; the block is max(block size, align) bytes. */
int64_t shared_alloc_aligned(shared_t *h, uint64_t size, uint64_t align);
/* 0 with the offsets in out[0 .. count-1], or SHARED_REFUSED /
 * SHARED_CORRUPT with nothing changed but failed_allocs. */
int64_t shared_alloc_many(shared_t *h, uint64_t size, uint64_t count,
                          uint64_t *out);
/* Frees the live block that is exactly [ptr, ptr + len) of this mapping. */
int shared_free(shared_t *h, const char *ptr, uint64_t len);
int shared_locate(shared_t *h, const char *ptr, uint64_t len,
                  uint64_t *offset);
int shared_free_at(shared_t *h, uint64_t offset);
int shared_resize(shared_t *h, uint64_t offset, uint64_t new_size);
/* pool_realloc's meaning (the arena is this mapping); with BUDDY_ENOMEM
 * *out is SHARED_REFUSED. */
int shared_realloc(shared_t *h, uint64_t offset, uint64_t new_size, int copy,
                   int64_t *out);
int shared_block_at(shared_t *h, uint64_t offset, uint64_t *start,
                    uint64_t *size, uint64_t *requested);
int shared_map(shared_t *h, uint64_t ncells, uint64_t *requested,
               uint64_t *wasted, uint64_t *free_bytes);

/* buddy_check plus the records' agreement with the core (step 3 above):
 * BUDDY_OK or BUDDY_ECORRUPT with a sentence in msg. */
int shared_check(shared_t *h, char *msg, size_t msglen);
int shared_snapshot(shared_t *h, buddy_stats_t *out);
int shared_reset_peaks(shared_t *h);

/* ---- testing aids ------------------------------------------------------- */

/* Takes the lock and returns holding it (so that a test can die holding
 * it, or make others wait); shared_debug_unlock gives it back.  Never use
 * them otherwise. */
int shared_debug_lock(shared_t *h);
int shared_debug_unlock(shared_t *h);
/* Under the lock: buddy_debug_flip, or set the tag of minimum block
 * `index` to `tag`. */
int shared_debug_flip(shared_t *h, unsigned which, unsigned order,
                      uint64_t index);
int shared_debug_set_tag(shared_t *h, uint64_t index, unsigned tag);

#endif /* ALLOC_SHARED_H */

/*
 * pool.c -- see pool.h.  Layers: table_ (offset -> requested size, open
 * addressing with linear probing and backward-shift deletion), rec_ (the
 * request array in front of it), record_ (a live block's record, wherever
 * it is), pool_ (the functions the binding calls).
 */
#if !defined(_WIN32) && !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MAP_NORESERVE */
#endif
#include "pool.h"
#include "arena_map.h"

#include <stdlib.h>
#include <string.h>
#ifndef _WIN32
#include <sys/mman.h>
#endif

#if defined(BUDDY_LOCKED) && BUDDY_LOCKED
#include <pthread.h>
#define LOCK(p) pthread_mutex_lock(&(p)->lock)
#define UNLOCK(p) pthread_mutex_unlock(&(p)->lock)
#else
#define LOCK(p) ((void)0)
#define UNLOCK(p) ((void)0)
#endif

#define TABLE_MIN_BITS 4 /* 16 slots, 256 bytes, for a fresh pool */

typedef struct slot {
    uint64_t key;  /* offset / min_size + 1 in the low KEY_BITS bits (0 marks
                      an empty slot); above them, how many orders the block
                      is larger than its size needs (buddy_alloc_aligned) */
    uint64_t size; /* the size the block was requested with */
} slot_t;

#define KEY_BITS 58 /* pool_new refuses 2^58 minimum blocks or more */
#define KEY_MASK (((uint64_t)1 << KEY_BITS) - 1)

struct alloc_pool {
    /* What every alloc and free reads, first, in one cache line.  With the
     * request array's fields after the guard fields instead, a Python
     * alloc+free pair of an exact fit took ~330 ns against ~295 (same
     * session, alternating processes) for ~25 more instructions: the
     * layout, not the work.  Keep the hot fields together. */
    buddy_t *core;
    uintptr_t base;
    uint64_t capacity;
    unsigned char *req; /* the request array (rec_), or NULL: table only */
    uint64_t req_live;  /* live blocks with a record in it (not a mark) */
    unsigned rec_unit;  /* its bytes per minimum block: 1, 2, 4 or 8 */
    unsigned shift;     /* log2(min_size) */
    uint64_t count;     /* table slots in use */
    slot_t *slots;      /* 2^bits of them, at most half in use */
    unsigned bits;
    int guard;          /* pool_set_guard(): free bytes hold guard_byte */
    /* the rest */
    int fail_growth; /* pool_debug_fail_growth(): the next growth fails */
    unsigned char guard_byte;
    uint64_t guard_bad; /* where the last guard check found a write */
    uint64_t req_bytes; /* the request array's length */
#if defined(BUDDY_LOCKED) && BUDDY_LOCKED
    pthread_mutex_t lock;
#endif
};

/* ---- table_ ------------------------------------------------------------- */

/* 1 if a request of `size` bytes fills its block exactly (a power of two,
 * at least min_size): such a block gets no slot, since its block size,
 * which the core knows, is its requested size.  (A block larger than its
 * size needs, from pool_alloc_aligned, keeps a slot whatever its size.) */
static inline int exact_fit(const alloc_pool_t *p, uint64_t size)
{
    return (size >> p->shift) != 0 && (size & (size - 1)) == 0;
}

/* What a slot index is for a live block that has no slot (an exact fit),
 * and for one whose record is in the request array (rec_, below). */
#define NO_SLOT UINT64_MAX
#define REC_SLOT (UINT64_MAX - 1)

static inline uint64_t table_home(const alloc_pool_t *p, uint64_t key)
{
    key &= KEY_MASK;
    return (key * 0x9E3779B97F4A7C15u) >> (64 - p->bits); /* Fibonacci */
}

static inline uint64_t table_mask(const alloc_pool_t *p)
{
    return ((uint64_t)1 << p->bits) - 1;
}

/* Index of the slot holding key, or of the empty slot where it would go. */
static uint64_t table_probe(const alloc_pool_t *p, uint64_t key)
{
    uint64_t i = table_home(p, key), mask = table_mask(p);
    while (p->slots[i].key != 0 && (p->slots[i].key & KEY_MASK) != key)
        i = (i + 1) & mask;
    return i;
}

/* Makes room for n more entries (doubling until at most half full);
 * 0 on success, -1 if the table could not grow (nothing changed). */
static int table_reserve(alloc_pool_t *p, uint64_t n)
{
    unsigned bits = p->bits;
    while (bits < 63 && 2 * (p->count + n) > ((uint64_t)1 << bits))
        bits++;
    if (bits == p->bits)
        return 0;
    if (p->fail_growth || 2 * (p->count + n) > ((uint64_t)1 << bits) ||
        (bits > 60 || ((uint64_t)1 << bits) > SIZE_MAX / sizeof(slot_t))) {
        p->fail_growth = 0;
        return -1;
    }
    slot_t *fresh = calloc((size_t)1 << bits, sizeof(slot_t));
    if (fresh == NULL)
        return -1;
    slot_t *old = p->slots;
    uint64_t old_n = (uint64_t)1 << p->bits;
    p->slots = fresh;
    p->bits = bits;
    for (uint64_t i = 0; i < old_n; i++)
        if (old[i].key != 0)
            p->slots[table_probe(p, old[i].key & KEY_MASK)] = old[i];
    free(old);
    return 0;
}

/* The align the block in slot i was allocated with, as buddy_free_aligned
 * wants it: 0 for a block of its size's own order (always for NO_SLOT),
 * else its block size. */
static uint64_t table_align(const alloc_pool_t *p, uint64_t i)
{
    if (i >= REC_SLOT)
        return 0;
    unsigned delta = (unsigned)(p->slots[i].key >> KEY_BITS);
    if (delta == 0)
        return 0;
    uint64_t size = p->slots[i].size, m = (uint64_t)1 << p->shift;
    unsigned k = size <= m ? 0 : 64u - (unsigned)__builtin_clzll((size - 1) >> p->shift);
    return m << (k + delta);
}

/* The block size of the live block in table slot i. */
static uint64_t table_block(const alloc_pool_t *p, uint64_t i)
{
    uint64_t align = table_align(p, i);
    return align ? align : buddy_block_size(p->core, p->slots[i].size);
}

/* Empties slot i and shifts later entries of its probe run back, so that
 * no lookup ever needs a tombstone. */
static void table_delete(alloc_pool_t *p, uint64_t i)
{
    uint64_t mask = table_mask(p), j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (p->slots[j].key == 0)
            break;
        uint64_t home = table_home(p, p->slots[j].key);
        /* Entry j may move to i only if its home is not in (i, j]. */
        int stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            p->slots[i] = p->slots[j];
            i = j;
        }
    }
    p->slots[i].key = 0;
    p->count--;
}

/* Records a live block's requested size (room was reserved) and how many
 * orders its block is larger than the size needs. */
static void table_insert(alloc_pool_t *p, uint64_t off, uint64_t size,
                         unsigned delta)
{
    uint64_t key = (off >> p->shift) + 1;
    slot_t *s = &p->slots[table_probe(p, key)];
    s->key = key | (uint64_t)delta << KEY_BITS;
    s->size = size;
    p->count++;
}

/* ---- rec_: the request array ---------------------------------------------
 * An array of rec_unit bytes per minimum block of the capacity, so that the
 * live block of order k owns rec_unit << k bytes of it: those under its
 * minimum blocks.  The first rec_bytes(k) = min(8, rec_unit << k) of them,
 * read as one unsigned integer v of that width, say what was requested:
 *   0          nothing recorded: an exact fit, requested = its block size;
 *   all ones   its record is in the size table (a block larger than its
 *              size needs, from pool_alloc_aligned: the table keeps how
 *              much larger);
 *   otherwise  requested = block size - v.
 * rec_unit is the smallest width whose all-ones exceeds min_size, the
 * largest waste of an order-0 block (a zero-size request's); a block of
 * order k > 0 wastes less than half its size, which rec_bytes(k) holds
 * with room to spare.  Every byte
 * that is not the start of a live block's record is zero (records are
 * cleared when their block is freed or resized), so an exact fit costs
 * nothing and a lookup needs no probing: one aligned load at the block's
 * offset.
 *
 * Why it is there: the size table costs two cache misses and unpredictable
 * probe loops a free+alloc (C churn through pool_free/pool_alloc, 4096 live
 * blocks of 64-16384 bytes, 64 MiB / 64 B: 73 ns a step with the table
 * alone, 46 with this array, 34 with no record at all; Python churn-py,
 * medians of alternating processes: 433 -> 400 ns a step).  Its size is
 * bounded by the capacity (rec_unit / min_size of it: 1/16 at min_size 16,
 * 1/64 at 64) where the table grew with the live blocks (32-64 bytes each,
 * so up to 4x the capacity for an arena of tiny blocks); it is reserved,
 * not committed: a page of it costs memory once a record has been written
 * there.  Where it cannot be reserved (enormous sparse arenas such as an
 * OffsetAllocator over 2^62 bytes) the pool keeps every record in the
 * table, as before. */

#define REC_MAX_BYTES ((uint64_t)1 << 40) /* larger: table only */
#define REC_MMAP_MIN ((uint64_t)1 << 20)  /* from here on mmap, else calloc */
#define REC_PAD 8 /* a field read near the end stays inside the array */

static inline unsigned rec_bytes(const alloc_pool_t *p, unsigned k)
{
    unsigned n = p->rec_unit << (k < 3 ? k : 3);
    return n < 8 ? n : 8u;
}

static inline uint64_t rec_mask(unsigned n) { return ~(uint64_t)0 >> (64 - 8 * n); }

/* The field of the block of order k at minimum block j.  Fields of width
 * n start at multiples of n bytes (j is a multiple of 2^k), so each is
 * one aligned load or store of its own type.  (Loading 8 bytes and masking
 * them, with no switch on the width, took C pool churn from 46 to 44 ns a
 * step, under 1 % of a Python churn step: not worth a second version for
 * big-endian machines.)  A field read for a length that is not the
 * block's may reach past the block, and past the array's last block:
 * REC_PAD bytes. */
static inline uint64_t rec_get(const alloc_pool_t *p, uint64_t j, unsigned k)
{
    const unsigned char *q = p->req + j * p->rec_unit;
    switch (rec_bytes(p, k)) {
    case 1: return *q;
    case 2: { uint16_t v; memcpy(&v, q, 2); return v; }
    case 4: { uint32_t v; memcpy(&v, q, 4); return v; }
    default: { uint64_t v; memcpy(&v, q, 8); return v; }
    }
}

static inline void rec_put(alloc_pool_t *p, uint64_t j, unsigned k, uint64_t v)
{
    unsigned char *q = p->req + j * p->rec_unit;
    switch (rec_bytes(p, k)) {
    case 1: *q = (unsigned char)v; break;
    case 2: { uint16_t w = (uint16_t)v; memcpy(q, &w, 2); break; }
    case 4: { uint32_t w = (uint32_t)v; memcpy(q, &w, 4); break; }
    default: memcpy(q, &v, 8); break;
    }
}

/* The order of a block of `block` bytes (a power of two >= min_size). */
static inline unsigned rec_order(const alloc_pool_t *p, uint64_t block)
{
    return (unsigned)__builtin_ctzll(block) - p->shift;
}

/* Reserves the array for a pool over nmin minimum blocks; NULL (table
 * only) if it is too large or the memory is not there. */
static unsigned char *rec_reserve(uint64_t nmin, unsigned unit, uint64_t *bytes)
{
    if (nmin > (REC_MAX_BYTES - REC_PAD) / unit)
        return NULL;
    uint64_t n = nmin * unit + REC_PAD;
    *bytes = n;
#ifndef _WIN32
    if (n >= REC_MMAP_MIN) {
        void *m = mmap(NULL, (size_t)n, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        return m == MAP_FAILED ? NULL : m;
    }
#endif
    return calloc(1, (size_t)n);
}

static void rec_release(alloc_pool_t *p)
{
    if (p->req == NULL)
        return;
#ifndef _WIN32
    if (p->req_bytes >= REC_MMAP_MIN)
        munmap(p->req, (size_t)p->req_bytes);
    else
#endif
        free(p->req);
    p->req = NULL;
}

/* ---- record_: a live block's record, in the array or the table ------------
 * A live block's record is named by a slot: NO_SLOT (an exact fit: none),
 * REC_SLOT (a field of the request array) or a table index. */

static inline int in_table(uint64_t i) { return i < REC_SLOT; }

/* 1 if recording a block larger than its size needs by `delta` orders
 * takes a table slot (room must be reserved first). */
static inline int record_needs_slot(const alloc_pool_t *p, unsigned delta)
{
    return p->req == NULL || delta != 0;
}

/* Records the live block at `off` requested with `size` bytes (not an
 * exact fit unless delta != 0), delta orders larger than size needs. */
static void record_add(alloc_pool_t *p, uint64_t off, uint64_t size,
                       unsigned delta)
{
    uint64_t j = off >> p->shift;
    if (!record_needs_slot(p, delta)) {
        uint64_t block = buddy_block_size(p->core, size);
        rec_put(p, j, rec_order(p, block), block - size);
        p->req_live++;
        return;
    }
    table_insert(p, off, size, delta);
    if (p->req != NULL) /* the mark that sends lookups to the table */
        rec_put(p, j, rec_order(p, buddy_block_size(p->core, size)) + delta,
                UINT64_MAX);
}

/* Forgets the record (slot i) of the block of `block` bytes at `off`. */
static inline void record_drop(alloc_pool_t *p, uint64_t off, uint64_t i, uint64_t block)
{
    if (in_table(i))
        table_delete(p, i);
    else if (i == REC_SLOT)
        p->req_live--;
    if (i != NO_SLOT && p->req != NULL)
        rec_put(p, off >> p->shift, rec_order(p, block), 0);
}

/* The requested size of the live block of `block` bytes at `off`, and in
 * *slot where its record is (NO_SLOT, REC_SLOT or a table index). */
static uint64_t record_of(const alloc_pool_t *p, uint64_t off, uint64_t block,
                          uint64_t *slot)
{
    if (p->req != NULL) {
        unsigned k = rec_order(p, block);
        uint64_t v = rec_get(p, off >> p->shift, k);
        if (v != rec_mask(rec_bytes(p, k))) { /* else: in the table */
            *slot = v != 0 ? REC_SLOT : NO_SLOT;
            return block - v;
        }
    }
    uint64_t i = table_probe(p, (off >> p->shift) + 1);
    *slot = p->slots[i].key != 0 ? i : NO_SLOT;
    return p->slots[i].key != 0 ? p->slots[i].size : block;
}

static uint64_t record_requested(const alloc_pool_t *p, uint64_t off,
                                 uint64_t block)
{
    uint64_t slot;
    return record_of(p, off, block, &slot);
}

/* ---- pool_ -------------------------------------------------------------- */

buddy_status pool_new(uint64_t capacity, uint64_t min_size, uintptr_t base,
                      alloc_pool_t **out)
{
    if (out == NULL || buddy_metadata_bytes(capacity, min_size) == 0)
        return BUDDY_EINVAL; /* the core's own argument checks, first */
    if (capacity / min_size >= ((uint64_t)1 << KEY_BITS))
        return BUDDY_ENOMEM; /* its metadata would need 2^56 bytes and more */
    alloc_pool_t *p = calloc(1, sizeof *p);
    if (p == NULL)
        return BUDDY_ENOMEM;
    buddy_status status = buddy_new(capacity, min_size, &p->core);
    if (status != BUDDY_OK) {
        free(p);
        return status;
    }
    p->bits = TABLE_MIN_BITS;
    p->slots = calloc((size_t)1 << TABLE_MIN_BITS, sizeof(slot_t));
#if defined(BUDDY_LOCKED) && BUDDY_LOCKED
    if (p->slots != NULL && pthread_mutex_init(&p->lock, NULL) != 0) {
        free(p->slots);
        p->slots = NULL;
    }
#endif
    if (p->slots == NULL) {
        buddy_destroy(p->core);
        free(p);
        return BUDDY_ENOMEM;
    }
    const buddy_stats_t *st = buddy_stats(p->core);
    p->base = base;
    p->capacity = st->capacity;
    p->shift = (unsigned)__builtin_ctzll(st->min_size);
    p->rec_unit = p->shift < 8 ? 1 : p->shift < 16 ? 2 : p->shift < 32 ? 4 : 8;
    p->req = rec_reserve(st->capacity >> p->shift, p->rec_unit, &p->req_bytes);
    *out = p;
    return BUDDY_OK;
}

void pool_close(alloc_pool_t *p)
{
    if (p == NULL)
        return;
    LOCK(p);
    buddy_close(p->core);
    free(p->slots);
    p->slots = NULL;
    rec_release(p);
    UNLOCK(p);
}

void pool_destroy(alloc_pool_t *p)
{
    if (p == NULL)
        return;
    buddy_destroy(p->core);
    free(p->slots);
    rec_release(p);
#if defined(BUDDY_LOCKED) && BUDDY_LOCKED
    pthread_mutex_destroy(&p->lock);
#endif
    free(p);
}

buddy_t *pool_core(alloc_pool_t *p) { return p->core; }

uint64_t pool_table_bytes(const alloc_pool_t *p)
{
    return p->slots ? sizeof(slot_t) << p->bits : 0;
}

/* ---- guard_: guard mode ----------------------------------------------
 * Every free byte of the arena holds guard_byte.  A block is filled when it
 * is freed and checked when it is handed out; a byte that differs was
 * written after its block was freed. */

static void guard_fill(alloc_pool_t *p, uint64_t off, uint64_t len)
{
    memset((unsigned char *)p->base + off, p->guard_byte, (size_t)len);
}

/* The first byte of a free block within [a, b) that does not hold the
 * pattern, or UINT64_MAX.  Live blocks in the range are skipped. */
static uint64_t guard_find_free(alloc_pool_t *p, uint64_t a, uint64_t b)
{
    while (a < b) {
        uint64_t start = 0, size = 0;
        int is_free = 0;
        if (buddy_block_at(p->core, a, &start, &size, &is_free) != BUDDY_OK)
            break;
        uint64_t end = start + size < b ? start + size : b;
        if (is_free) {
            uint64_t bad = pool_guard_find(p, a, end - a, p->guard_byte);
            if (bad != UINT64_MAX)
                return bad;
        }
        a = end;
    }
    return UINT64_MAX;
}

/* 1 if [a, b) lies within the capacity and wholly in free blocks (so a
 * block growing in place over it would hand all of it out), else 0. */
static int guard_range_free(alloc_pool_t *p, uint64_t a, uint64_t b)
{
    if (b > p->capacity)
        return 0;
    while (a < b) {
        uint64_t start = 0, size = 0;
        int is_free = 0;
        if (buddy_block_at(p->core, a, &start, &size, &is_free) != BUDDY_OK || !is_free)
            return 0;
        a = start + size;
    }
    return 1;
}

/* Checks a block just allocated at `off` for `size` bytes with `align`:
 * 0 if it holds the pattern; otherwise takes the allocation back (it then
 * counts as an alloc and a free), restores the pattern, records where the
 * first bad byte was and returns 1. */
static int guard_refuse(alloc_pool_t *p, uint64_t off, uint64_t size,
                        uint64_t align)
{
    uint64_t block = buddy_block_size(p->core, size);
    if (align > block)
        block = align;
    uint64_t bad = pool_guard_find(p, off, block, p->guard_byte);
    if (bad == UINT64_MAX)
        return 0;
    buddy_free_aligned(p->core, off, size, align);
    guard_fill(p, off, block);
    p->guard_bad = bad;
    return 1;
}

/* pool_alloc with the pool's lock held (and p not NULL). */
static int64_t alloc_locked(alloc_pool_t *p, uint64_t size)
{
    int64_t off = POOL_REFUSED;
    if (p->slots != NULL) {
        int exact = exact_fit(p, size); /* no record to write */
        int slot = !exact && record_needs_slot(p, 0); /* a table slot to reserve */
        if (slot && size > buddy_largest_free(p->core)) {
            off = buddy_alloc(p->core, size); /* refused and counted there */
        } else if (slot && table_reserve(p, 1) != 0) {
            buddy_count_refusal(p->core);
            off = POOL_NO_TABLE;
        } else {
            off = buddy_alloc(p->core, size);
            if (off >= 0 && p->guard && guard_refuse(p, (uint64_t)off, size, 0))
                off = POOL_USE_AFTER_FREE;
            if (off >= 0 && !exact)
                record_add(p, (uint64_t)off, size, 0);
        }
    }
    return off;
}

int64_t pool_alloc(alloc_pool_t *p, uint64_t size)
{
    if (p == NULL)
        return POOL_REFUSED;
    LOCK(p);
    int64_t off = alloc_locked(p, size);
    UNLOCK(p);
    return off;
}

int64_t pool_alloc_many(alloc_pool_t *p, uint64_t size, uint64_t count,
                        uint64_t *out)
{
    if (p == NULL)
        return POOL_REFUSED;
    LOCK(p);
    int64_t status = POOL_REFUSED;
    if (p->slots != NULL) {
        const buddy_stats_t *st = buddy_stats(p->core);
        uint64_t block = buddy_block_size(p->core, size);
        int exact = exact_fit(p, size); /* no slots to make room for */
        if (count > 0 && (block == 0 ||
                          count > (st->capacity - st->bytes_in_blocks) / block)) {
            /* more blocks than the free bytes could hold: the core refuses
             * (and counts it) before any table is grown for them, and
             * writes nothing to out (the binding may pass NULL) */
            buddy_alloc_many(p->core, size, count, out);
        } else if (!exact && record_needs_slot(p, 0) && table_reserve(p, count) != 0) {
            buddy_count_refusal(p->core);
            status = POOL_NO_TABLE;
        } else if (buddy_alloc_many(p->core, size, count, out) == BUDDY_OK) {
            status = 0;
            for (uint64_t c = 0; p->guard && c < count && status == 0; c++) {
                uint64_t bad = pool_guard_find(p, out[c], block, p->guard_byte);
                if (bad != UINT64_MAX) { /* take the whole batch back */
                    for (uint64_t d = 0; d < count; d++) {
                        buddy_free(p->core, out[d], size);
                        guard_fill(p, out[d], block);
                    }
                    p->guard_bad = bad;
                    status = POOL_USE_AFTER_FREE;
                }
            }
            for (uint64_t c = 0; status == 0 && !exact && c < count; c++)
                record_add(p, out[c], size, 0);
        }
    }
    UNLOCK(p);
    return status;
}

int64_t pool_alloc_aligned(alloc_pool_t *p, uint64_t size, uint64_t align,
                           uint64_t modulus, uint64_t rem)
{
    if (p == NULL)
        return POOL_REFUSED;
    LOCK(p);
    int64_t off = POOL_REFUSED;
    uint64_t need = !modulus && align > size ? align : size;
    if (p->slots != NULL) {
        if (need > buddy_largest_free(p->core) || (modulus && rem >= p->capacity)) {
            /* no free block is that large (or no offset of the arena is
             * congruent): refused (and counted) by the core before the
             * size table grows for it, as in pool_alloc */
            off = modulus ? buddy_alloc_congruent(p->core, size, modulus, rem)
                          : buddy_alloc_aligned(p->core, size, align);
            if (off == -2)
                off = POOL_INVALID;
        } else if (table_reserve(p, 1) != 0) {
            buddy_count_refusal(p->core);
            off = POOL_NO_TABLE;
        } else {
            off = modulus ? buddy_alloc_congruent(p->core, size, modulus, rem)
                          : buddy_alloc_aligned(p->core, size, align);
            if (off == -2)
                off = POOL_INVALID;
            if (off >= 0 && p->guard &&
                guard_refuse(p, (uint64_t)off, size, modulus ? 0 : align))
                off = POOL_USE_AFTER_FREE;
            if (off >= 0) {
                uint64_t want = buddy_block_size(p->core, size);
                uint64_t got = want > align ? want : align;
                unsigned delta = modulus || got == want ? 0
                    : (unsigned)(__builtin_ctzll(got) - __builtin_ctzll(want));
                if (delta != 0 || !exact_fit(p, size))
                    record_add(p, (uint64_t)off, size, delta);
            }
        }
    }
    UNLOCK(p);
    return off;
}

void pool_debug_fail_growth(alloc_pool_t *p)
{
    LOCK(p);
    p->fail_growth = 1;
    UNLOCK(p);
}

buddy_status pool_debug_table_only(alloc_pool_t *p)
{
    LOCK(p);
    buddy_status status = BUDDY_EINVAL;
    if (buddy_stats(p->core)->live_blocks == 0) {
        rec_release(p);
        status = BUDDY_OK;
    }
    UNLOCK(p);
    return status;
}

uint64_t pool_record_bytes(const alloc_pool_t *p)
{
    return p->req != NULL ? p->req_bytes : 0;
}

/* The live block that is exactly [ptr, ptr + len): its offset, its slot
 * (NO_SLOT for an exact fit) and its block size, or why not.  With
 * `freeing` set, an exact fit is not confirmed here: the caller frees it
 * at once, and the core's free checks the same and returns the same
 * status.  The caller holds the lock. */
static buddy_status pool_find(alloc_pool_t *p, const char *ptr, uint64_t len,
                              int freeing, uint64_t *offset, uint64_t *slot,
                              uint64_t *block_size)
{
    if (p->slots == NULL)
        return BUDDY_ECLOSED;
    uintptr_t addr = (uintptr_t)ptr;
    if (addr < p->base || addr - p->base >= p->capacity)
        return BUDDY_ERANGE;
    uint64_t off = (uint64_t)(addr - p->base);
    *offset = off;
    int aligned = (off & (((uint64_t)1 << p->shift) - 1)) == 0;
    /* (a pool of exact fits alone, as in pair-64, has req_live 0 and
     * reads no record, as it probes no table while count is 0) */
    uint64_t block = aligned && p->req_live != 0 ? buddy_block_size(p->core, len) : 0;
    if (block != 0) {
        /* The field a block of len bytes would have here.  It may belong
         * to a live block of another order (if len is not its size): then
         * it decodes to nonsense, which either differs from len or names a
         * block the core then finds is not there. */
        unsigned k = rec_order(p, block);
        uint64_t v = rec_get(p, off >> p->shift, k);
        if (v != 0 && v != rec_mask(rec_bytes(p, k))) {
            buddy_status why = BUDDY_OK;
            if (block - v != len || !freeing)
                why = buddy_probe(p->core, off, len);
            if (why == BUDDY_OK && block - v != len)
                why = BUDDY_ESIZE; /* a block of len's order lives here */
            *slot = REC_SLOT;
            *block_size = block;
            return why;
        }
    }
    if (p->count != 0 && aligned) {
        uint64_t i = table_probe(p, (off >> p->shift) + 1);
        if (p->slots[i].key != 0) {
            if (p->slots[i].size != len)
                return BUDDY_ESIZE;
            *slot = i;
            *block_size = table_block(p, i);
            return BUDDY_OK;
        }
    }
    /* No slot: an exact fit of len bytes, or no live block starts here
     * (the core says what is here), or one of another size does. */
    *slot = NO_SLOT;
    *block_size = len;
    if (freeing && exact_fit(p, len))
        return BUDDY_OK;
    buddy_status why = buddy_probe(p->core, off, len);
    if (why == BUDDY_OK && !exact_fit(p, len))
        why = BUDDY_ESIZE; /* an exact fit of len's block size lives here */
    return why;
}

buddy_status pool_free(alloc_pool_t *p, const char *ptr, uint64_t len)
{
    if (p == NULL)
        return BUDDY_EINVAL;
    LOCK(p);
    uint64_t off = 0, i = NO_SLOT, block = 0;
    buddy_status status = pool_find(p, ptr, len, 1, &off, &i, &block);
    if (status == BUDDY_OK) {
        status = buddy_free_aligned(p->core, off, len, table_align(p, i));
        if (status == BUDDY_OK) {
            record_drop(p, off, i, block);
            if (p->guard)
                guard_fill(p, off, block);
        }
    }
    UNLOCK(p);
    return status;
}

buddy_status pool_locate(alloc_pool_t *p, const char *ptr, uint64_t len,
                         uint64_t *offset)
{
    if (p == NULL)
        return BUDDY_EINVAL;
    LOCK(p);
    uint64_t off = 0, i = NO_SLOT, block = 0;
    buddy_status status = pool_find(p, ptr, len, 0, &off, &i, &block);
    if (status == BUDDY_OK)
        *offset = off;
    UNLOCK(p);
    return status;
}

/* Why no live block starts at `offset` (it has no slot): the core's word
 * for what is there.  The caller holds the lock. */
static buddy_status pool_why_not(alloc_pool_t *p, uint64_t offset)
{
    buddy_status status = buddy_probe(p->core, offset, 0);
    return status == BUDDY_OK || status == BUDDY_ESIZE
        ? BUDDY_EINTERIOR /* unreachable: a live block here has a slot */
        : status;
}

/* The live block starting at `offset`: its slot (NO_SLOT for an exact
 * fit), block size and requested size; or why there is none.  The caller
 * holds the lock. */
static buddy_status pool_slot_at(alloc_pool_t *p, uint64_t offset, uint64_t *slot,
                                 uint64_t *block, uint64_t *size)
{
    if (p->slots == NULL)
        return BUDDY_ECLOSED;
    if (offset >= p->capacity || (offset & (((uint64_t)1 << p->shift) - 1)))
        return pool_why_not(p, offset);
    uint64_t start = 0, bytes = 0;
    int is_free = 1;
    if (buddy_block_at(p->core, offset, &start, &bytes, &is_free) != BUDDY_OK ||
        is_free || start != offset)
        return pool_why_not(p, offset);
    *block = bytes;
    *size = record_of(p, offset, bytes, slot);
    return BUDDY_OK;
}

/* pool_free_at with the lock held. */
static buddy_status free_at_locked(alloc_pool_t *p, uint64_t offset)
{
    uint64_t i = NO_SLOT, block = 0, size = 0;
    buddy_status status = pool_slot_at(p, offset, &i, &block, &size);
    if (status == BUDDY_OK) {
        status = buddy_free_aligned(p->core, offset, size, table_align(p, i));
        if (status == BUDDY_OK) {
            record_drop(p, offset, i, block);
            if (p->guard)
                guard_fill(p, offset, block);
        }
    }
    return status;
}

buddy_status pool_free_at(alloc_pool_t *p, uint64_t offset)
{
    if (p == NULL)
        return BUDDY_EINVAL;
    LOCK(p);
    buddy_status status = free_at_locked(p, offset);
    UNLOCK(p);
    return status;
}

uint64_t pool_guard_find(const alloc_pool_t *p, uint64_t offset, uint64_t len,
                         unsigned char byte)
{
    const unsigned char *a = (const unsigned char *)p->base + offset;
    for (uint64_t x = 0; x < len; x++)
        if (a[x] != byte)
            return offset + x;
    return UINT64_MAX;
}

buddy_status pool_guard_scan(alloc_pool_t *p, uint64_t *where)
{
    if (p == NULL)
        return BUDDY_EINVAL;
    LOCK(p);
    buddy_status status = p->slots == NULL ? BUDDY_ECLOSED : BUDDY_OK;
    if (status == BUDDY_OK && p->guard) {
        uint64_t bad = guard_find_free(p, 0, p->capacity);
        if (bad != UINT64_MAX) {
            *where = bad;
            status = BUDDY_ECORRUPT;
        }
    }
    UNLOCK(p);
    return status;
}

buddy_status pool_set_guard(alloc_pool_t *p, unsigned char byte)
{
    if (p == NULL)
        return BUDDY_EINVAL;
    LOCK(p);
    buddy_status status = p->slots == NULL ? BUDDY_ECLOSED : BUDDY_OK;
    if (status == BUDDY_OK) {
        p->guard = 1;
        p->guard_byte = byte;
        for (uint64_t off = 0; off < p->capacity;) { /* every free block */
            uint64_t start = 0, size = 0;
            int is_free = 0;
            if (buddy_block_at(p->core, off, &start, &size, &is_free) != BUDDY_OK)
                break;
            if (is_free)
                guard_fill(p, start, size);
            off = start + size;
        }
    }
    UNLOCK(p);
    return status;
}

uint64_t pool_guard_bad(const alloc_pool_t *p) { return p->guard_bad; }

/* pool_resize with the lock held; the old requested size in *old_size. */
static buddy_status resize_locked(alloc_pool_t *p, uint64_t offset, uint64_t new_size,
                                  uint64_t *old_size)
{
    uint64_t i = NO_SLOT, old_block = 0, size = 0;
    buddy_status status = pool_slot_at(p, offset, &i, &old_block, &size);
    *old_size = size;
    if (status == BUDDY_OK && i == NO_SLOT && !exact_fit(p, new_size) &&
        record_needs_slot(p, 0) && table_reserve(p, 1) != 0)
        status = BUDDY_ENOMEM; /* it would need a slot: move it, or fail */
    if (status == BUDDY_OK) {
        uint64_t new_block = buddy_block_size(p->core, new_size);
        if (p->guard && new_block > old_block &&
            (offset & (new_block - 1)) == 0 &&
            guard_range_free(p, offset + old_block, offset + new_block)) {
            /* growing in place takes the free buddies: their bytes must
             * hold the pattern.  (A block that cannot grow in place moves,
             * and the allocation it moves to checks its own bytes.) */
            uint64_t bad = guard_find_free(p, offset + old_block, offset + new_block);
            if (bad != UINT64_MAX) {
                p->guard_bad = bad;
                return POOL_EUSE_AFTER_FREE;
            }
        }
        status = buddy_resize(p->core, offset, size, table_align(p, i), new_size);
        if (status == BUDDY_OK) {
            /* a plain block now (room for a table slot was made above) */
            record_drop(p, offset, i, old_block);
            if (!exact_fit(p, new_size))
                record_add(p, offset, new_size, 0);
            if (p->guard && new_block < old_block)
                guard_fill(p, offset + new_block, old_block - new_block);
        }
    }
    return status;
}

buddy_status pool_resize(alloc_pool_t *p, uint64_t offset, uint64_t new_size)
{
    if (p == NULL)
        return BUDDY_EINVAL;
    uint64_t old_size = 0;
    LOCK(p);
    buddy_status status = resize_locked(p, offset, new_size, &old_size);
    UNLOCK(p);
    return status;
}

buddy_status pool_realloc(alloc_pool_t *p, uint64_t offset, uint64_t new_size,
                          int copy, int64_t *out)
{
    if (p == NULL || out == NULL)
        return BUDDY_EINVAL;
    uint64_t old_size = 0;
    LOCK(p);
    buddy_status status = resize_locked(p, offset, new_size, &old_size);
    *out = (int64_t)offset;
    if (status == BUDDY_ENOMEM) { /* move it */
        int64_t to = alloc_locked(p, new_size);
        *out = to;
        if (to >= 0) {
            if (copy && old_size && new_size)
                memcpy((unsigned char *)p->base + to, (unsigned char *)p->base + offset,
                       (size_t)(old_size < new_size ? old_size : new_size));
            status = free_at_locked(p, offset); /* live: resize_locked found it */
        }
    }
    UNLOCK(p);
    return status;
}

buddy_status pool_block_at(alloc_pool_t *p, uint64_t offset, uint64_t *start,
                           uint64_t *size, uint64_t *requested)
{
    if (p == NULL)
        return BUDDY_EINVAL;
    LOCK(p);
    int is_free = 0;
    buddy_status status = p->slots == NULL
        ? BUDDY_ECLOSED
        : buddy_block_at(p->core, offset, start, size, &is_free);
    if (status == BUDDY_OK) {
        if (is_free) {
            status = BUDDY_EFREE;
        } else {
            *requested = record_requested(p, *start, *size);
        }
    }
    UNLOCK(p);
    return status;
}

/* arena_map_walk's view of the records (a const alloc_pool_t *). */
static uint64_t pool_requested_of(const void *ctx, uint64_t start, uint64_t size)
{
    return record_requested(ctx, start, size);
}

buddy_status pool_map(alloc_pool_t *p, uint64_t ncells, uint64_t *requested,
                      uint64_t *wasted, uint64_t *free_bytes)
{
    if (p == NULL)
        return BUDDY_EINVAL;
    const buddy_stats_t *st = buddy_stats(p->core);
    uint64_t span = st->min_size << st->max_order;
    if (ncells == 0 || span % ncells != 0)
        return BUDDY_EINVAL;
    uint64_t cell = span / ncells;
    for (uint64_t c = 0; c < ncells; c++)
        requested[c] = wasted[c] = free_bytes[c] = 0;
    LOCK(p);
    buddy_status status = p->slots == NULL
        ? BUDDY_ECLOSED
        : arena_map_walk(p->core, p->capacity, cell, pool_requested_of, p,
                         requested, wasted, free_bytes);
    UNLOCK(p);
    return status;
}

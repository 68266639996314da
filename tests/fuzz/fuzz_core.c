/*
 * fuzz_core.c -- libFuzzer harness for the C core (csrc/buddy.h) and the
 * binding's pool layer (csrc/pool.h).
 *
 *     make -C tests/fuzz run              clang, libFuzzer + ASan + UBSan
 *     make -C tests/fuzz replay           gcc + ASan + UBSan, corpus once
 *     FUZZ_TRACE=1 ./fuzz_core FILE       prints every call of one input
 *
 * The input bytes are decoded into a sequence of calls on the public API.
 * The harness keeps its own model of the allocator (the live blocks:
 * offset -> requested size and block size), derives everything the headers
 * promise from it, and after every call that can change anything checks:
 *
 *   - buddy_check() passes;
 *   - every counter of buddy_snapshot() equals the model's (capacity,
 *     min_size, max_order, live_blocks, bytes_requested, bytes_in_blocks,
 *     alloc_calls, free_calls, failed_allocs, free_blocks[k] per order) and
 *     buddy_stats() shows the same figures;
 *   - buddy_largest_free() is the largest free block of the model;
 *   - a new block lies inside the arena, is aligned to its block size,
 *     overlaps no live block, and is the one buddy.h's placement policy
 *     picks (smallest order with a free block, lowest offset in it);
 *   - frees and probes return exactly the status the headers define for
 *     what is at that offset, and a refused call changes no counter
 *     (snapshot before == snapshot after);
 *   - after close, every figure stays as it was.
 *
 * "Free blocks of the model": with eager coalescing the free blocks are a
 * function of the live blocks alone -- block (k, i) is free iff it lies
 * wholly inside the arena, holds no live byte, and its parent does hold
 * one (or reaches past the arena).  The oracle below walks the tree with
 * a prefix count of covered minimum blocks.  O(N) per check, like
 * buddy_check, so allocators are limited to N <= N_MAX minimum blocks
 * (capacity and min_size themselves range over all of [0, 2^64)) and an
 * input ends early once its checks have walked WORK_BUDGET blocks.
 *
 * A failed check prints what differed and aborts, which libFuzzer reports
 * as a crash and saves the input.
 *
 * ---------------------------------------------------------------------------
 * Input format (all multi-byte numbers little-endian; reading past the end
 * yields zeros, so every byte string is a valid input)
 * ---------------------------------------------------------------------------
 * The input starts with the arguments of OP_NEW (an allocator is always
 * created first), then op bytes follow until the input ends, each op byte
 * (taken modulo OP_COUNT) followed by its arguments:
 *
 *   NEW args:  flags  bit 0: 1 = pool_* API, 0 = buddy_* API;
 *                     bits 1-6: pool base address = (1 + bits) * 0x10000;
 *                     bit 7: the pool keeps every record in its size
 *                     table (pool_debug_table_only), not its request array
 *              MIN    min_size   (decode_min)
 *              CAP    capacity   (decode_cap)
 *   SIZE:      mode, a [, more]  (decode_size)
 *   TARGET:    pick, omode, a, smode [, more] (decode_target): an offset
 *              (pool: a pointer) and a size for free / probe / locate
 *
 *   0 ALLOC        SIZE          alloc one block
 *   1 ALLOC_MANY   count, SIZE   up to 1 + count % 64 allocs of that size,
 *                                stopping at the first refusal
 *   2 FREE_LIVE    pick          free live block pick % live with its size
 *   3 FREE         TARGET        free at a crafted offset/pointer and size
 *   4 PROBE        TARGET        buddy_probe / pool_locate (+ buddy_probe
 *                                on the pool's core), must change nothing
 *   5 FREE_ALL     how           free every live block: how % 3 = 0 in
 *                                order of allocation, 1 reversed, 2 every
 *                                other one first
 *   6 LARGEST      -             trial allocations around largest_free,
 *                                undone afterwards
 *   7 BLOCK_SIZE   SIZE          buddy_block_size against its definition
 *   8 METADATA     MIN, CAP      buddy_metadata_bytes: 0 iff invalid,
 *                                within buddy.h's bound otherwise
 *   9 CLOSE        twice         buddy_close / pool_close (again if
 *                                twice is odd: idempotent)
 *  10 NEW          NEW args      destroy the allocator, make another
 *  11 FLIP         which, order, index(2 bytes)   buddy_debug_flip: a
 *                                flipped bit must make buddy_check fail,
 *                                flipping it back must make it pass
 */
#include "buddy.h"
#include "pool.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    N_MAX = 8192,  /* most minimum blocks an allocator of the fuzzer has:
                      enough for three summary levels (N > 4096) */
    RING = 8,      /* recently freed blocks remembered for double frees */
};

/* Each check walks all N minimum blocks (buddy_check and the oracle are
 * O(N)); an input stops once its checks have walked this many, so that
 * long inputs on large arenas (~50 ms at the limit) don't starve the
 * fuzzer.  Short inputs or small arenas never reach it. */
#define WORK_BUDGET ((uint64_t)1 << 19)

enum {
    OP_ALLOC, OP_ALLOC_MANY, OP_FREE_LIVE, OP_FREE, OP_PROBE, OP_FREE_ALL,
    OP_LARGEST, OP_BLOCK_SIZE, OP_METADATA, OP_CLOSE, OP_NEW, OP_FLIP,
    OP_COUNT
};

static const char *const OP_NAMES[OP_COUNT] = {
    "alloc", "alloc_many", "free_live", "free", "probe", "free_all",
    "largest", "block_size", "metadata", "close", "new", "flip",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ==== failing and tracing =============================================== */

static unsigned long g_step;   /* op number within the input, for messages */
static const char *g_op = "new";
static int g_trace = -1;       /* FUZZ_TRACE set: print every call */
static uint64_t g_work;        /* minimum blocks walked by checks so far */

#if defined(__GNUC__)
__attribute__((noreturn, format(printf, 1, 2)))
#endif
static void fail(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "\nfuzz_core: CHECK FAILED at op %lu (%s): ", g_step, g_op);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    abort();
}

#define EXPECT(cond, ...)                                                     \
    do {                                                                      \
        if (!(cond))                                                          \
            fail(__VA_ARGS__);                                                \
    } while (0)

#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
static void trace(const char *fmt, ...)
{
    if (!g_trace)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

#define U(x) ((unsigned long long)(x))

/* ==== input reader ====================================================== */

typedef struct reader {
    const uint8_t *p;
    size_t n;
} reader_t;

static uint8_t get8(reader_t *r)
{
    if (r->n == 0)
        return 0;
    r->n--;
    return *r->p++;
}

static uint16_t get16(reader_t *r)
{
    uint16_t lo = get8(r);
    return (uint16_t)(lo | (uint16_t)(get8(r) << 8));
}

static uint64_t get64(reader_t *r)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < 8; i++)
        v |= (uint64_t)get8(r) << (8 * i);
    return v;
}

/* ==== the model ========================================================= */

typedef struct live {
    uint64_t off, req, blk; /* offset, requested size, block size */
} live_t;

typedef struct model {
    bool exists;         /* an allocator was created (else ops are skipped) */
    bool pool;           /* pool_* API (else buddy_*) */
    bool table_only;     /* pool: records in the size table only */
    buddy_t *b;          /* the core (pool_core(p) in pool mode) */
    alloc_pool_t *p;
    uintptr_t base;      /* pool: the fake arena address (never touched) */
    uint64_t cap, m, n;  /* capacity (rounded down), min_size, N */
    unsigned top;        /* L */
    bool closed;

    live_t *live;        /* live blocks in allocation order (removal keeps
                            the order, so FREE_ALL's orders mean something) */
    uint32_t nlive;
    uint32_t *start;     /* [j]: 1 + index in live[] of the block starting
                            at minimum block j, else 0 */
    bool *covered;       /* [j]: minimum block j belongs to a live block */
    uint32_t *prefix;    /* oracle scratch: covered minimum blocks below j */

    uint64_t bytes_requested, bytes_in_blocks;
    uint64_t alloc_calls, free_calls, failed_allocs;

    uint64_t exp_free[BUDDY_MAX_ORDER + 1];   /* oracle: free blocks per order */
    uint64_t first_free[BUDDY_MAX_ORDER + 1]; /* oracle: lowest one (min-block
                                                 index) per order */

    buddy_stats_t frozen;    /* the figures buddy_close must keep */
    uint64_t frozen_largest;

    struct {
        uint64_t off, req;
    } ring[RING];            /* recently freed blocks */
    unsigned ring_n, ring_next;
} model_t;

static model_t M;

static bool args_valid(uint64_t capacity, uint64_t min_size)
{
    return min_size != 0 && (min_size & (min_size - 1)) == 0 &&
           capacity >= min_size && capacity <= BUDDY_MAX_CAPACITY;
}

static unsigned log2_ceil(uint64_t n)
{
    return n <= 1 ? 0u : 64u - (unsigned)__builtin_clzll(n - 1);
}

/* The block size a request of `size` takes: max(size, m) rounded up to a
 * power of two, or 0 if that exceeds the capacity (buddy_block_size). */
static uint64_t expect_block_size(uint64_t size)
{
    if (size > M.cap)
        return 0;
    uint64_t blk = M.m;
    while (blk < size)
        blk <<= 1; /* cap <= 2^62, so this cannot overflow */
    return blk <= M.cap ? blk : 0;
}

/* Recomputes exp_free / first_free from the live blocks. */
static void oracle_walk(unsigned k, uint64_t i)
{
    uint64_t lo = i << k, hi = (i + 1) << k;
    if (lo >= M.n)
        return; /* wholly past the arena */
    if (hi <= M.n && M.prefix[hi] == M.prefix[lo]) {
        if (M.exp_free[k]++ == 0)
            M.first_free[k] = lo; /* the walk goes by increasing offset */
        return;
    }
    if (k == 0)
        return; /* an allocated minimum block */
    oracle_walk(k - 1, 2 * i);
    oracle_walk(k - 1, 2 * i + 1);
}

static void oracle_update(void)
{
    M.prefix[0] = 0;
    for (uint64_t j = 0; j < M.n; j++)
        M.prefix[j + 1] = M.prefix[j] + (M.covered[j] ? 1u : 0u);
    memset(M.exp_free, 0, sizeof M.exp_free);
    memset(M.first_free, 0, sizeof M.first_free);
    oracle_walk(M.top, 0);
}

static uint64_t oracle_largest(void)
{
    for (unsigned k = M.top + 1; k-- > 0;)
        if (M.exp_free[k])
            return M.m << k;
    return 0;
}

/* The offset buddy.h's placement policy gives a request, or -1. */
static int64_t oracle_alloc(uint64_t size)
{
    uint64_t blk = expect_block_size(size);
    if (blk == 0)
        return -1;
    for (unsigned j = log2_ceil(blk / M.m); j <= M.top; j++)
        if (M.exp_free[j])
            return (int64_t)(M.first_free[j] * M.m);
    return -1;
}

/* Index in live[] of the block starting at offset, or -1. */
static int64_t live_at(uint64_t off)
{
    if (off >= M.cap || (off & (M.m - 1)))
        return -1;
    uint32_t s = M.start[off / M.m];
    return s ? (int64_t)s - 1 : -1;
}

static void model_add(uint64_t off, uint64_t req, uint64_t blk)
{
    uint64_t j0 = off / M.m, nj = blk / M.m;
    for (uint64_t j = j0; j < j0 + nj; j++)
        M.covered[j] = true;
    M.live[M.nlive] = (live_t){off, req, blk};
    M.start[j0] = ++M.nlive;
    M.bytes_requested += req;
    M.bytes_in_blocks += blk;
    M.alloc_calls++;
}

static void model_remove(uint32_t idx)
{
    live_t lb = M.live[idx];
    uint64_t j0 = lb.off / M.m, nj = lb.blk / M.m;
    for (uint64_t j = j0; j < j0 + nj; j++)
        M.covered[j] = false;
    M.start[j0] = 0;
    for (uint32_t x = idx + 1; x < M.nlive; x++) {
        M.live[x - 1] = M.live[x];
        M.start[M.live[x - 1].off / M.m] = x;
    }
    M.nlive--;
    M.bytes_requested -= lb.req;
    M.bytes_in_blocks -= lb.blk;
    M.free_calls++;
    M.ring[M.ring_next].off = lb.off;
    M.ring[M.ring_next].req = lb.req;
    M.ring_next = (M.ring_next + 1) % RING;
    if (M.ring_n < RING)
        M.ring_n++;
}

static void model_destroy(void)
{
    if (M.pool)
        pool_destroy(M.p);
    else
        buddy_destroy(M.b);
    free(M.live);
    free(M.start);
    free(M.covered);
    free(M.prefix);
    memset(&M, 0, sizeof M);
}

/* ==== checks ============================================================ */

/* Name of the first field where two snapshots differ, or NULL. */
static const char *stats_diff(const buddy_stats_t *a, const buddy_stats_t *b)
{
#define F(f)                                                                  \
    if (a->f != b->f)                                                         \
        return #f;
    F(capacity) F(min_size) F(bytes_requested) F(bytes_in_blocks)
    F(live_blocks) F(alloc_calls) F(free_calls) F(failed_allocs)
    F(max_order) F(closed)
#undef F
    for (unsigned k = 0; k <= BUDDY_MAX_ORDER; k++)
        if (a->free_blocks[k] != b->free_blocks[k])
            return "free_blocks[k]";
    return NULL;
}

static void expect_same(const buddy_stats_t *before, const char *what)
{
    buddy_stats_t after;
    buddy_snapshot(M.b, &after);
    const char *d = stats_diff(before, &after);
    EXPECT(d == NULL, "%s changed %s", what, d);
}

/* Everything the model can say about the allocator's state. */
static void check_all(void)
{
    char msg[256];
    g_work += M.n;
    buddy_status cs = buddy_check(M.b, msg, sizeof msg);
    EXPECT(cs == BUDDY_OK, "buddy_check: %s: %s", buddy_strerror(cs), msg);

    buddy_stats_t s;
    buddy_snapshot(M.b, &s);
    EXPECT(stats_diff(buddy_stats(M.b), &s) == NULL,
           "buddy_stats() and buddy_snapshot() disagree on %s",
           stats_diff(buddy_stats(M.b), &s));
    uint64_t lf = buddy_largest_free(M.b);

    if (M.closed) {
        const char *d = stats_diff(&s, &M.frozen);
        EXPECT(d == NULL, "after close, %s changed", d);
        EXPECT(lf == M.frozen_largest, "after close, largest_free went from "
               "%llu to %llu", U(M.frozen_largest), U(lf));
        if (M.pool)
            EXPECT(pool_table_bytes(M.p) == 0 && pool_record_bytes(M.p) == 0,
                   "closed pool still has a %llu-byte size table and a "
                   "%llu-byte request array", U(pool_table_bytes(M.p)),
                   U(pool_record_bytes(M.p)));
        return;
    }

#define EQ(field, want)                                                       \
    EXPECT(s.field == (want), #field " is %llu, the model says %llu",         \
           U(s.field), U(want))
    EQ(capacity, M.cap);
    EQ(min_size, M.m);
    EQ(max_order, M.top);
    EQ(closed, 0);
    EQ(live_blocks, M.nlive);
    EQ(bytes_requested, M.bytes_requested);
    EQ(bytes_in_blocks, M.bytes_in_blocks);
    EQ(alloc_calls, M.alloc_calls);
    EQ(free_calls, M.free_calls);
    EQ(failed_allocs, M.failed_allocs);
#undef EQ

    oracle_update();
    for (unsigned k = 0; k <= BUDDY_MAX_ORDER; k++)
        EXPECT(s.free_blocks[k] == M.exp_free[k], "free_blocks[%u] is %llu, "
               "the model has %llu free blocks of that order", k,
               U(s.free_blocks[k]), U(M.exp_free[k]));
    EXPECT(lf == oracle_largest(), "largest_free is %llu, the model's largest "
           "free block is %llu", U(lf), U(oracle_largest()));

    if (M.pool) {
        uint64_t tb = pool_table_bytes(M.p), rb = pool_record_bytes(M.p), slotted = 0;
        /* Table-only: 16-byte slots, a power of two of them, at most half
         * in use; an exact fit (requested == block size) has none.  With a
         * request array (a byte or more per minimum block, plus 8), plain
         * blocks have no slot at all (pool.h). */
        for (uint32_t x = 0; x < M.nlive; x++)
            slotted += M.live[x].req != M.live[x].blk;
        EXPECT(tb != 0 && (tb & (tb - 1)) == 0 && (!M.table_only || tb >= 32 * slotted),
               "size table of %llu bytes for %llu live blocks that are no "
               "exact fit", U(tb), U(slotted));
        EXPECT(M.table_only ? rb == 0 : rb >= M.n + 8, "a %llu-byte request "
               "array for %llu minimum blocks%s", U(rb), U(M.n),
               M.table_only ? " in table-only mode" : "");
    }
}

/* buddy_metadata_bytes: 0 exactly for invalid arguments; otherwise within
 * buddy.h's bound on the bitmaps, (3 + 2/63) N bits + 8 (3L + 3)(D + 1)
 * bytes, plus the structs (the allocator's and one per order: 4096 +
 * 256 (L + 1) bytes; the current core needs under 1 KiB + 256 (L + 1)). */
static void check_metadata(uint64_t capacity, uint64_t min_size)
{
    uint64_t md = buddy_metadata_bytes(capacity, min_size);
    bool valid = args_valid(capacity, min_size);
    EXPECT(valid == (md != 0), "buddy_metadata_bytes(%llu, %llu) = %llu for "
           "%s arguments", U(capacity), U(min_size), U(md),
           valid ? "valid" : "invalid");
    if (!valid)
        return;
    uint64_t n = capacity / min_size;
    unsigned L = log2_ceil(n), D = 1;
    while (D < 10 && n > ((uint64_t)8 << (6 * D)))
        D++; /* max(1, ceil(log64(N / 8))): a root of up to 8 words */
    long double bound = (3.0L + 2.0L / 63.0L) * (long double)n / 8.0L +
                        8.0L * (3.0L * L + 3.0L) * (D + 1.0L) +
                        4096.0L + 256.0L * (L + 1.0L);
    EXPECT((long double)md <= bound, "buddy_metadata_bytes(%llu, %llu) = %llu "
           "exceeds buddy.h's bound (%.0Lf with the structs)", U(capacity),
           U(min_size), U(md), bound);
}

/* ==== decoding =========================================================== */

/* MIN: one byte b.  b < 0xC0: 2^(b % 63) (every valid min_size);
 * otherwise b % 8 picks a special value: 0, 3, 6, 2^63, 2^64-1, 3 * 2^40,
 * 2^62 + 1, or a raw 8-byte value. */
static uint64_t decode_min(reader_t *r)
{
    uint8_t b = get8(r);
    if (b < 0xC0)
        return (uint64_t)1 << (b % 63);
    switch (b % 8) {
    case 0: return 0;
    case 1: return 3;
    case 2: return 6;
    case 3: return (uint64_t)1 << 63;
    case 4: return UINT64_MAX;
    case 5: return (uint64_t)3 << 40;
    case 6: return ((uint64_t)1 << 62) + 1;
    default: return get64(r);
    }
}

/* Saturating n * m + r. */
static uint64_t mul_add_sat(uint64_t n, uint64_t m, uint64_t r)
{
    if (m != 0 && n > (UINT64_MAX - r) / m)
        return UINT64_MAX;
    return n * m + r;
}

/* CAP: kind byte, then per kind % 8 (m is the decoded min_size; "count"
 * below is s, v: 2^(s % 13) + v % 2^(s % 13), so 1 .. 8191):
 *   0  count * m                 (power-of-two N only if count is one)
 *   1  count * m + rem           (rem = 8-byte value % m: rounded down)
 *   2  2^(s % 14) * m            (a power-of-two N, up to 2^13)
 *   3  2^(s % 14) * m + m - 1    (the largest remainder)
 *   4  a raw 8-byte value        (usually far too many blocks)
 *   5  m - 1 - s                 (below min_size: EINVAL)
 *   6  BUDDY_MAX_CAPACITY + (int8_t)s   (the upper limit, either side)
 *   7  0
 * A product that overflows saturates at 2^64 - 1 (EINVAL). */
static uint64_t decode_cap(reader_t *r, uint64_t m)
{
    uint8_t kind = get8(r), s = get8(r);
    switch (kind % 8) {
    case 0:
    case 1: {
        uint64_t base = (uint64_t)1 << (s % 13);
        uint64_t count = base + get16(r) % base;
        uint64_t rem = kind % 8 == 1 && m != 0 ? get64(r) % m : 0;
        return mul_add_sat(count, m, rem);
    }
    case 2: return mul_add_sat((uint64_t)1 << (s % 14), m, 0);
    case 3: return mul_add_sat((uint64_t)1 << (s % 14), m, m ? m - 1 : 0);
    case 4: return get64(r);
    case 5: return m > (uint64_t)s ? m - 1 - s : 0;
    case 6: return BUDDY_MAX_CAPACITY + (uint64_t)(int64_t)(int8_t)s;
    default: return 0;
    }
}

/* SIZE: mode, a, then per mode % 10 (m = min_size, L = max_order,
 * B = m * 2^(a % (L + 2)): every block size and one past the largest):
 *   0  0                          5  a size in (C/2, C], C = m * 2^(a % (L+1)),
 *   1  m - 1, m, m + 1 (a % 3)       placed by one more byte
 *   2  B                          6  capacity - 1, capacity, capacity + 1
 *   3  B + 1                      7  huge: 2^62, 2^62 + 1, 2^63, 2^64 - 1,
 *   4  B - 1                         2^64 - m, 2 * capacity (a % 6)
 *   8  largest_free + 0, + 1, - 1, / 2 + 1 (a % 4)
 *   9  a raw 8-byte value */
static uint64_t decode_size(reader_t *r)
{
    uint8_t mode = get8(r), a = get8(r);
    uint64_t m = M.m, blk = m << (a % (M.top + 2));
    switch (mode % 10) {
    case 0: return 0;
    case 1: return m - 1 + a % 3;
    case 2: return blk;
    case 3: return blk + 1;
    case 4: return blk - 1;
    case 5: {
        uint64_t c = m << (a % (M.top + 1));
        return (c >> 1) + 1 + (c >> 9) * get8(r);
    }
    case 6: return M.cap - 1 + a % 3;
    case 7: {
        const uint64_t huge[6] = {
            (uint64_t)1 << 62, ((uint64_t)1 << 62) + 1, (uint64_t)1 << 63,
            UINT64_MAX, UINT64_MAX - m + 1, 2 * M.cap,
        };
        return huge[a % 6];
    }
    case 8: {
        uint64_t lf = buddy_largest_free(M.b);
        switch (a % 4) {
        case 0: return lf;
        case 1: return lf + 1;
        case 2: return lf - (lf > 0);
        default: return lf / 2 + 1;
        }
    }
    default: return get64(r);
    }
}

typedef struct target {
    uint64_t off;  /* offset from the arena start (pool: pointer - base,
                      modulo 2^64, so "below the base" is a huge offset) */
    uint64_t size;
} target_t;

/* TARGET: pick, omode, a, smode, then more per mode.  "The picked block"
 * is live block pick % live (if any are live).
 * omode % 9, the offset:
 *   0  the picked block's start        5  a multiple of m: (2 bytes % N) * m
 *   1  inside it, at a multiple of m   6  a raw 8-byte value
 *      (or the next block if it is m)  7  below the arena start: -(1 + a)
 *   2  misaligned: its start + 1 + a % (m - 1)   (pool: a pointer below
 *   3  past the end: capacity, +1, +m,            base; a = 255: the
 *      2 * capacity, 2^64 - 1, 2^62 (a % 6)       pointer NULL)
 *   4  a recently freed block's start  8  anywhere: 8 bytes % capacity
 * smode % 6, the size:
 *   0  the size the block starting there was requested with (a recently
 *      freed one: its old size; else the picked block's, else m)
 *   1  another size of the same block size (free would accept it, so a
 *      buddy_free is turned into a buddy_probe; the pool refuses it)
 *   2  a size of another block size: 2B, B/2 (4B if B = m), B + 1
 *   3  SIZE (decode_size)
 *   4  the picked block's requested size (right size, maybe wrong place)
 *   5  0 */
static target_t decode_target(reader_t *r)
{
    uint8_t pick = get8(r), omode = get8(r), a = get8(r), smode = get8(r);
    const live_t *lb = M.nlive ? &M.live[pick % M.nlive] : NULL;
    uint64_t m = M.m, lb_off = lb ? lb->off : 0;
    target_t t = {0, 0};
    bool from_ring = false;
    uint64_t ring_req = 0;

    switch (omode % 9) {
    case 0: t.off = lb_off; break;
    case 1:
        t.off = lb && lb->blk > m ? lb_off + m * (1 + a % (lb->blk / m - 1))
                                  : lb_off + m;
        break;
    case 2: t.off = lb_off + (m > 1 ? 1 + a % (m - 1) : a); break;
    case 3: {
        const uint64_t past[6] = {
            M.cap, M.cap + 1, M.cap + m, 2 * M.cap, UINT64_MAX,
            BUDDY_MAX_CAPACITY,
        };
        t.off = past[a % 6];
        break;
    }
    case 4:
        if (M.ring_n) {
            unsigned i = a % M.ring_n;
            t.off = M.ring[i].off;
            ring_req = M.ring[i].req;
            from_ring = true;
        }
        break;
    case 5: t.off = (get16(r) % M.n) * m; break;
    case 6: t.off = get64(r); break;
    case 7: /* a = 255: pointer 0 (NULL) for the pool, 2^64 - 1 otherwise */
        t.off = a < 255 ? (uint64_t)0 - 1 - a : (uint64_t)0 - (uint64_t)M.base;
        if (t.off == 0)
            t.off = UINT64_MAX;
        break;
    default: t.off = get64(r) % M.cap; break;
    }

    /* The block starting at the offset, else the picked one, sets "B". */
    int64_t at = live_at(t.off);
    const live_t *ref = at >= 0 ? &M.live[at] : lb;
    uint64_t req = ref ? ref->req : m, blk = ref ? ref->blk : m;
    if (at < 0 && from_ring) {
        req = ring_req;
        blk = expect_block_size(ring_req);
    }

    switch (smode % 6) {
    case 0: t.size = req; break;
    case 1: {
        /* sizes of block size blk: (blk/2, blk], or [0, m] when blk == m */
        uint64_t lo = blk == m ? 0 : blk / 2 + 1, span = blk - lo + 1;
        t.size = lo + a % span;
        if (t.size == req)
            t.size = t.size == blk ? lo : t.size + 1;
        break;
    }
    case 2: {
        const uint64_t other[3] = {2 * blk, blk > m ? blk / 2 : 4 * blk,
                                   blk + 1};
        t.size = other[a % 3];
        break;
    }
    case 3: t.size = decode_size(r); break;
    case 4: t.size = lb ? lb->req : m; break;
    default: t.size = 0; break;
    }
    return t;
}

/* ==== calls and their expectations ====================================== */

static const char *sname(buddy_status s)
{
    static const char *const names[] = {
        "OK", "ENOMEM", "EINVAL", "ERANGE", "EALIGN", "EINTERIOR", "ESIZE",
        "EFREE", "ECLOSED", "ECORRUPT",
    };
    return (unsigned)s <= BUDDY_ECORRUPT ? names[s] : "(unknown)";
}

/* The status buddy.h / pool.h define for a free or probe at offset off
 * with `size`: the pool compares the requested size itself, the core only
 * its block size. */
static buddy_status expect_status(uint64_t off, uint64_t size, bool pool)
{
    if (M.closed)
        return BUDDY_ECLOSED;
    if (off >= M.cap)
        return BUDDY_ERANGE;
    int64_t at = live_at(off);
    if (at >= 0) {
        const live_t *lb = &M.live[at];
        if (pool)
            return size == lb->req ? BUDDY_OK : BUDDY_ESIZE;
        return expect_block_size(size) == lb->blk ? BUDDY_OK : BUDDY_ESIZE;
    }
    if (off & (M.m - 1))
        return BUDDY_EALIGN;
    return M.covered[off / M.m] ? BUDDY_EINTERIOR : BUDDY_EFREE;
}

static const char *ptr_of(uint64_t off)
{
    return (const char *)(M.base + (uintptr_t)off); /* never dereferenced */
}

/* One allocation through the API in use, checked against the model. */
static int64_t do_alloc(uint64_t size)
{
    int64_t want = M.closed ? -1 : oracle_alloc(size);
    int64_t got = M.pool ? pool_alloc(M.p, size) : buddy_alloc(M.b, size);
    trace("  alloc(%llu) -> %lld", U(size), (long long)got);
    if (got < 0) {
        EXPECT(got == -1, "alloc returned %lld", (long long)got);
        EXPECT(want < 0, "alloc(%llu) refused, but the model has a free "
               "block for it at %lld", U(size), (long long)want);
        if (!M.closed)
            M.failed_allocs++;
    } else {
        uint64_t off = (uint64_t)got, blk = expect_block_size(size);
        EXPECT(!M.closed, "alloc(%llu) succeeded after close", U(size));
        EXPECT(blk != 0, "alloc(%llu) succeeded but no block can hold it",
               U(size));
        EXPECT(off % blk == 0, "block %llu of size %llu is not aligned",
               U(off), U(blk));
        EXPECT(off < M.cap && blk <= M.cap - off, "block [%llu, +%llu) is "
               "not inside the %llu-byte arena", U(off), U(blk), U(M.cap));
        for (uint64_t j = off / M.m; j < (off + blk) / M.m; j++)
            EXPECT(!M.covered[j], "block [%llu, +%llu) overlaps a live block "
                   "at %llu", U(off), U(blk), U(j * M.m));
        EXPECT(got == want, "alloc(%llu) placed at %llu, buddy.h's policy "
               "places it at %lld", U(size), U(off), (long long)want);
        model_add(off, size, blk);
    }
    check_all();
    return got;
}

/* Frees live block idx with its exact size: must succeed (unless closed). */
static void do_free_live(uint32_t idx)
{
    live_t lb = M.live[idx];
    buddy_status want = M.closed ? BUDDY_ECLOSED : BUDDY_OK, got;
    buddy_stats_t before;
    buddy_snapshot(M.b, &before);
    if (M.pool)
        got = pool_free(M.p, ptr_of(lb.off), lb.req);
    else
        got = buddy_free(M.b, lb.off, lb.req);
    trace("  free(%llu, %llu) -> %s", U(lb.off), U(lb.req), sname(got));
    EXPECT(got == want, "free of live block %llu (size %llu) returned %s, "
           "expected %s", U(lb.off), U(lb.req), sname(got), sname(want));
    if (got == BUDDY_OK)
        model_remove(idx);
    else
        expect_same(&before, "a refused free");
    check_all();
}

/* A free (or probe) at a crafted target: the exact status, and nothing
 * changed unless it freed. */
static void do_target(const target_t *t, bool probe)
{
    buddy_stats_t before;
    buddy_snapshot(M.b, &before);
    uint64_t lf_before = buddy_largest_free(M.b);
    buddy_status want = expect_status(t->off, t->size, M.pool), got;
    int64_t at = live_at(t->off);

    if (M.pool) {
        if (probe) {
            uint64_t where = UINT64_MAX;
            got = pool_locate(M.p, ptr_of(t->off), t->size, &where);
            EXPECT(got != BUDDY_OK || where == t->off, "pool_locate found "
                   "offset %llu for %llu", U(where), U(t->off));
            /* and the core's own answer for the same offset */
            buddy_status cw = expect_status(t->off, t->size, false);
            buddy_status cg = buddy_probe(M.b, t->off, t->size);
            EXPECT(cg == cw, "buddy_probe(core, %llu, %llu) returned %s, "
                   "expected %s", U(t->off), U(t->size), sname(cg), sname(cw));
        } else {
            got = pool_free(M.p, ptr_of(t->off), t->size);
        }
    } else {
        /* buddy_free accepts any size of the right block size and then
         * skews bytes_requested (buddy.h): only probe with those. */
        if (!probe && want == BUDDY_OK && t->size != M.live[at].req)
            probe = true;
        got = probe ? buddy_probe(M.b, t->off, t->size)
                    : buddy_free(M.b, t->off, t->size);
    }
    trace("  %s(%llu, %llu) -> %s", probe ? "probe" : "free", U(t->off),
          U(t->size), sname(got));
    EXPECT(got == want, "%s(offset %llu, size %llu) returned %s, expected %s",
           probe ? "probe" : "free", U(t->off), U(t->size), sname(got),
           sname(want));
    if (got == BUDDY_OK && !probe) {
        model_remove((uint32_t)at);
    } else {
        expect_same(&before, probe ? "a probe" : "a refused free");
        EXPECT(buddy_largest_free(M.b) == lf_before, "largest_free changed "
               "without a free");
    }
    check_all();
}

/* largest_free is a fact about what alloc does: an alloc of it succeeds
 * (then freed again: the state is a function of the live blocks, so it is
 * back as it was), and an alloc of anything larger fails. */
static void do_largest(void)
{
    uint64_t lf = buddy_largest_free(M.b);
    trace("  largest_free -> %llu", U(lf));
    if (M.closed) {
        EXPECT(do_alloc(lf) == -1, "alloc after close succeeded");
        return;
    }
    if (lf == 0) {
        EXPECT(do_alloc(0) == -1, "largest_free is 0 but alloc(0) succeeded");
        return;
    }
    buddy_stats_t before;
    buddy_snapshot(M.b, &before);
    int64_t off = do_alloc(lf);
    EXPECT(off >= 0, "alloc(largest_free = %llu) failed", U(lf));
    do_free_live(M.nlive - 1);
    before.alloc_calls++;
    before.free_calls++;
    expect_same(&before, "alloc + free of largest_free");
    EXPECT(do_alloc(lf + 1) == -1, "alloc(largest_free + 1 = %llu) succeeded",
           U(lf + 1));
    if (2 * lf <= M.cap)
        EXPECT(do_alloc(2 * lf) == -1, "alloc(2 * largest_free = %llu) "
               "succeeded", U(2 * lf));
}

static void do_close(bool twice)
{
    buddy_stats_t before;
    buddy_snapshot(M.b, &before);
    uint64_t lf = buddy_largest_free(M.b);
    for (int i = 0; i < (twice ? 2 : 1); i++) {
        if (M.pool)
            pool_close(M.p);
        else
            buddy_close(M.b);
    }
    trace("  close%s", twice ? " twice" : "");
    if (!M.closed) {
        M.closed = true;
        M.frozen = before;
        M.frozen.closed = 1;
        M.frozen_largest = lf;
    }
    check_all();
}

static void do_flip(unsigned which, unsigned order, uint64_t index)
{
    char msg[256];
    buddy_status st = buddy_debug_flip(M.b, which, order, index);
    trace("  debug_flip(%u, %u, %llu) -> %s", which, order, U(index), sname(st));
    if (which > 1 || (which == 1 && order == 0) || order > M.top || M.closed)
        EXPECT(st == BUDDY_EINVAL, "buddy_debug_flip(%u, %u, %llu) on a "
               "bit that does not exist returned %s", which, order, U(index),
               sname(st));
    if (st != BUDDY_OK) {
        EXPECT(st == BUDDY_EINVAL, "buddy_debug_flip returned %s", sname(st));
        check_all();
        return;
    }
    buddy_status cs = buddy_check(M.b, msg, sizeof msg);
    EXPECT(cs == BUDDY_ECORRUPT && msg[0] != '\0', "buddy_check returned %s "
           "after flipping %s bit %llu of order %u", sname(cs),
           which ? "split" : "free", U(index), order);
    trace("    check: %s", msg);
    /* msg may be NULL, or too short for anything but the NUL */
    EXPECT(buddy_check(M.b, NULL, 0) == BUDDY_ECORRUPT, "check(NULL) passed");
    msg[0] = 'x';
    EXPECT(buddy_check(M.b, msg, 1) == BUDDY_ECORRUPT && msg[0] == '\0',
           "check with a 1-byte buffer");
    EXPECT(buddy_debug_flip(M.b, which, order, index) == BUDDY_OK,
           "flipping the bit back failed");
    check_all();
}

/* NEW: decode the arguments, check the refusals, create. */
static void do_new(reader_t *r)
{
    uint8_t flags = get8(r);
    uint64_t m = decode_min(r);
    uint64_t c = decode_cap(r, m);
    bool pool = flags & 1, table_only = pool && (flags & 0x80);
    uintptr_t base = ((uintptr_t)((flags >> 1) & 0x3f) + 1) << 16;
    bool valid = args_valid(c, m);
    trace("  %s_new(capacity %llu, min_size %llu)%s", pool ? "pool" : "buddy",
          U(c), U(m), valid ? "" : " invalid");
    check_metadata(c, m);

    if (!valid || c / m > N_MAX) {
        /* Refused arguments leave *out untouched; valid ones with more
         * blocks than the model handles are only sized, not created. */
        if (!valid) {
            buddy_t *bo = (buddy_t *)(uintptr_t)0x5a5a0;
            alloc_pool_t *po = (alloc_pool_t *)(uintptr_t)0x5a5a0;
            buddy_status sb = buddy_new(c, m, &bo);
            buddy_status sp = pool_new(c, m, base, &po);
            EXPECT(sb == BUDDY_EINVAL && bo == (buddy_t *)(uintptr_t)0x5a5a0,
                   "buddy_new(%llu, %llu) returned %s for invalid arguments",
                   U(c), U(m), sname(sb));
            EXPECT(sp == BUDDY_EINVAL && po == (alloc_pool_t *)(uintptr_t)0x5a5a0,
                   "pool_new(%llu, %llu) returned %s for invalid arguments",
                   U(c), U(m), sname(sp));
        }
        return;
    }

    M.pool = pool;
    M.table_only = table_only;
    M.base = base;
    M.m = m;
    M.n = c / m;
    M.cap = M.n * m;
    M.top = log2_ceil(M.n);
    M.live = calloc(M.n, sizeof *M.live);
    M.start = calloc(M.n, sizeof *M.start);
    M.covered = calloc(M.n, sizeof *M.covered);
    M.prefix = calloc(M.n + 1, sizeof *M.prefix);
    if (!M.live || !M.start || !M.covered || !M.prefix)
        fail("out of memory for the model");
    buddy_status st;
    if (pool) {
        st = pool_new(c, m, base, &M.p);
        if (st == BUDDY_OK)
            M.b = pool_core(M.p);
        if (st == BUDDY_OK && table_only && pool_debug_table_only(M.p) != BUDDY_OK)
            fail("pool_debug_table_only refused an empty pool");
    } else {
        st = buddy_new(c, m, &M.b);
    }
    EXPECT(st == BUDDY_OK, "%s_new(%llu, %llu) returned %s",
           pool ? "pool" : "buddy", U(c), U(m), sname(st));
    M.exists = true;
    check_all();
}

/* Calls that need no allocator; once per process. */
static void check_basics(void)
{
    char msg[64];
    EXPECT(buddy_new(4096, 64, NULL) == BUDDY_EINVAL, "buddy_new(NULL out)");
    EXPECT(pool_new(4096, 64, 0x10000, NULL) == BUDDY_EINVAL,
           "pool_new(NULL out)");
    EXPECT(buddy_check(NULL, msg, sizeof msg) == BUDDY_ECORRUPT && msg[0],
           "buddy_check(NULL)");
    EXPECT(buddy_debug_flip(NULL, 0, 0, 0) == BUDDY_EINVAL,
           "buddy_debug_flip(NULL)");
    buddy_close(NULL);
    buddy_destroy(NULL);
    pool_close(NULL);
    pool_destroy(NULL);
    for (int s = -1; s <= BUDDY_ECORRUPT + 1; s++)
        EXPECT(buddy_strerror((buddy_status)s) != NULL, "strerror(%d)", s);
}

/* ==== the entry point =================================================== */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool once;
    if (!once) {
        once = true;
        g_trace = getenv("FUZZ_TRACE") != NULL;
        check_basics();
    }
    reader_t r = {data, size};
    g_step = 0;
    g_work = 0;
    g_op = "new";
    memset(&M, 0, sizeof M);
    do_new(&r);

    while (r.n > 0 && g_work < WORK_BUDGET) {
        unsigned op = get8(&r) % OP_COUNT;
        g_step++;
        g_op = OP_NAMES[op];
        trace("op %lu: %s", g_step, g_op);
        if (op == OP_METADATA) {
            uint64_t m = decode_min(&r);
            check_metadata(decode_cap(&r, m), m);
            continue;
        }
        if (op == OP_NEW) {
            model_destroy();
            do_new(&r);
            continue;
        }
        if (!M.exists) {
            /* no allocator: consume nothing more, the next byte is an op */
            continue;
        }
        switch (op) {
        case OP_ALLOC:
            do_alloc(decode_size(&r));
            break;
        case OP_ALLOC_MANY: {
            unsigned count = 1 + get8(&r) % 64;
            uint64_t sz = decode_size(&r);
            for (unsigned i = 0; i < count; i++)
                if (do_alloc(sz) < 0)
                    break;
            break;
        }
        case OP_FREE_LIVE: {
            uint8_t pick = get8(&r);
            if (M.nlive)
                do_free_live(pick % M.nlive);
            break;
        }
        case OP_FREE:
        case OP_PROBE: {
            target_t t = decode_target(&r);
            do_target(&t, op == OP_PROBE);
            break;
        }
        case OP_FREE_ALL: {
            unsigned how = get8(&r) % 3;
            if (M.closed) {
                if (M.nlive)
                    do_free_live(0); /* ECLOSED, and nothing changes */
                break;
            }
            if (how == 2) /* every other one first, then the rest */
                for (uint32_t i = 0; i < M.nlive; i++)
                    do_free_live(i);
            while (M.nlive)
                do_free_live(how == 1 ? M.nlive - 1 : 0);
            break;
        }
        case OP_LARGEST:
            do_largest();
            break;
        case OP_BLOCK_SIZE: {
            uint64_t sz = decode_size(&r);
            uint64_t got = buddy_block_size(M.b, sz);
            trace("  block_size(%llu) -> %llu", U(sz), U(got));
            EXPECT(got == expect_block_size(sz), "buddy_block_size(%llu) = "
                   "%llu, expected %llu", U(sz), U(got),
                   U(expect_block_size(sz)));
            break;
        }
        case OP_CLOSE:
            do_close(get8(&r) & 1);
            break;
        case OP_FLIP: {
            unsigned which = get8(&r) % 3;
            unsigned order = get8(&r) % (M.top + 2);
            uint64_t nbits = ((M.n - 1) >> (order > M.top ? M.top : order)) + 1;
            do_flip(which, order, get16(&r) % (nbits + 2));
            break;
        }
        default:
            break;
        }
    }
    model_destroy();
    return 0;
}

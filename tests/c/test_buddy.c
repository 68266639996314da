/*
 * test_buddy.c -- the pure-C test program for the buddy core (csrc/buddy.h).
 *
 *     make -C tests/c check          ASan + UBSan, single-threaded
 *     make -C tests/c check-locked   BUDDY_LOCKED=1 + TSan, adds a threaded case
 *
 * Usage: test_buddy [-s SEED] [NAME...]
 *   Runs every case, or only those whose name contains one of the NAMEs.
 *   SEED (decimal or 0x...) seeds the randomized traces; the seed in use is
 *   printed first, so a failing run can be repeated exactly.
 *
 * Output: one line per case ("ok   name" or "FAIL name"), each failed check on
 * its own indented line above it (file:line and what differed), and last a
 * line "N passed, N failed".  The exit status is 0 only if nothing failed.
 *
 * The header is the contract: every expectation below is derived from
 * buddy.h, never from buddy.c.  The randomized traces compare the core with
 * a deliberately naive reference model of the placement policy (sorted
 * per-order lists of free blocks, split and merged by hand) after every
 * single call, and run buddy_check() after every step.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */

#include "buddy.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(BUDDY_LOCKED) && BUDDY_LOCKED
#include <pthread.h>
#include <stdatomic.h>
#define TEST_THREADS 1
#else
#define TEST_THREADS 0
#endif

/* Some cases ask for absurd amounts of memory on purpose (buddy_new's
 * ENOMEM, buddy_arena_alloc(1 << 62)); the sanitizers' allocators must
 * return NULL for those instead of aborting.  The environment variables
 * ASAN_OPTIONS / TSAN_OPTIONS still override these defaults. */
#if defined(__SANITIZE_ADDRESS__)
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}
#endif
#if defined(__SANITIZE_THREAD__)
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
    return "allocator_may_return_null=1:halt_on_error=1";
}
#endif

/* TSan's calloc clears memory itself (so RSS says nothing about lazy
 * commitment) and runs the traces ~6x slower: shorten them there. */
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#define TRACE_STEP_DIVISOR 5
#else
#define UNDER_TSAN 0
#define TRACE_STEP_DIVISOR 1
#endif

#define KiB ((uint64_t)1 << 10)
#define MiB ((uint64_t)1 << 20)
#define GiB ((uint64_t)1 << 30)
#define BIT(k) ((uint64_t)1 << (k))
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ==== harness ============================================================ */

enum { MAX_REPORTS = 20 };      /* failed checks printed per case */

static unsigned g_case_failures; /* failed checks in the running case */
static unsigned g_passed, g_failed;
static char g_case_note[256];    /* appended to the case's result line */
static double g_case_start;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Counts a failed check and prints it (the first MAX_REPORTS of a case).
 * Returns 0 so that CHECK can be used as a condition. */
__attribute__((format(printf, 4, 5)))
static int check_failed(const char *file, int line, const char *what,
                        const char *fmt, ...)
{
    g_case_failures++;
    if (g_case_failures > MAX_REPORTS) {
        if (g_case_failures == MAX_REPORTS + 1)
            printf("    (further failed checks of this case not shown)\n");
        return 0;
    }
    printf("    %s:%d: %s", file, line, what);
    if (fmt[0] != '\0') {
        va_list ap;
        va_start(ap, fmt);
        printf(": ");
        vprintf(fmt, ap);
        va_end(ap);
    }
    putchar('\n');
    fflush(stdout);
    return 0;
}

/* CHECK(cond, fmt, ...): records a failure with file:line and the message
 * unless cond holds; evaluates to 1 if it held, 0 if not.  Never stops. */
#define CHECK(cond, ...)                                                      \
    ((cond) ? 1 : check_failed(__FILE__, __LINE__, "CHECK(" #cond ")",       \
                               __VA_ARGS__))

/* Equality checks that print both values. */
#define CHECK_U64(got, want)                                                  \
    check_u64(__FILE__, __LINE__, #got, (uint64_t)(got), (uint64_t)(want))
#define CHECK_I64(got, want)                                                  \
    check_i64(__FILE__, __LINE__, #got, (int64_t)(got), (int64_t)(want))
#define CHECK_STATUS(got, want)                                               \
    check_status(__FILE__, __LINE__, #got, (got), (want))

static const char *status_name(buddy_status s)
{
    static const char *const names[] = {
        "BUDDY_OK",     "BUDDY_ENOMEM",    "BUDDY_EINVAL", "BUDDY_ERANGE",
        "BUDDY_EALIGN", "BUDDY_EINTERIOR", "BUDDY_ESIZE",  "BUDDY_EFREE",
        "BUDDY_ECLOSED", "BUDDY_ECORRUPT",
    };
    return (unsigned)s < ARRAY_LEN(names) ? names[s] : "(unknown status)";
}

static int check_u64(const char *file, int line, const char *expr,
                     uint64_t got, uint64_t want)
{
    if (got == want)
        return 1;
    return check_failed(file, line, expr, "got %" PRIu64 ", want %" PRIu64,
                        got, want);
}

static int check_i64(const char *file, int line, const char *expr,
                     int64_t got, int64_t want)
{
    if (got == want)
        return 1;
    return check_failed(file, line, expr, "got %" PRId64 ", want %" PRId64,
                        got, want);
}

static int check_status(const char *file, int line, const char *expr,
                        buddy_status got, buddy_status want)
{
    if (got == want)
        return 1;
    return check_failed(file, line, expr, "got %s, want %s",
                        status_name(got), status_name(want));
}

/* buddy_check(b) must pass; on failure its sentence is printed. */
#define CHECK_INVARIANTS(b) check_invariants(__FILE__, __LINE__, (b))

static int check_invariants(const char *file, int line, buddy_t *b)
{
    char msg[256] = "";
    buddy_status s = buddy_check(b, msg, sizeof msg);
    if (s == BUDDY_OK)
        return 1;
    return check_failed(file, line, "buddy_check", "%s: %s",
                        status_name(s), msg);
}

/* The stats must be byte-for-byte what they were in *before. */
#define CHECK_STATS_UNCHANGED(b, before)                                      \
    CHECK(memcmp(buddy_stats(b), (before), sizeof(buddy_stats_t)) == 0,       \
          "the call changed buddy_stats()")

__attribute__((format(printf, 1, 2)))
static void case_note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_case_note, sizeof g_case_note, fmt, ap);
    va_end(ap);
}

/* An extra line of information inside a case, e.g. a measured figure. */
__attribute__((format(printf, 1, 2)))
static void case_info(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("    # ");
    vprintf(fmt, ap);
    putchar('\n');
    va_end(ap);
}

static void case_begin(void)
{
    g_case_failures = 0;
    g_case_note[0] = '\0';
    g_case_start = now_seconds();
}

static void case_end(const char *name)
{
    double secs = now_seconds() - g_case_start;
    if (g_case_failures == 0) {
        g_passed++;
        printf("ok   %s", name);
    } else {
        g_failed++;
        printf("FAIL %s (%u failed check%s)", name, g_case_failures,
               g_case_failures == 1 ? "" : "s");
    }
    if (g_case_note[0] != '\0')
        printf(" -- %s", g_case_note);
    printf(" [%.2f s]\n", secs);
    fflush(stdout);
}

/* ==== small independent helpers ========================================== */

/* splitmix64: tiny, good enough, and the same sequence everywhere. */
typedef struct rng {
    uint64_t state;
} rng;

static uint64_t rng_next(rng *r)
{
    uint64_t z = (r->state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Uniform in [0, n) (modulo bias is irrelevant here); 0 when n is 0. */
static uint64_t rng_below(rng *r, uint64_t n)
{
    return n == 0 ? 0 : rng_next(r) % n;
}

/* Smallest l with 2^l >= n (0 for n <= 1). */
static unsigned ceil_log2(uint64_t n)
{
    unsigned l = 0;
    while (l < 63 && BIT(l) < n)
        l++;
    return l;
}

/* Largest l with 2^l <= n (n >= 1). */
static unsigned floor_log2(uint64_t n)
{
    unsigned l = 0;
    while (n >>= 1)
        l++;
    return l;
}

/* The order a request of `size` bytes takes in an arena of minimum block m:
 * ceil(log2(max(size, m) / m)), or 64 when no power of two >= size fits in
 * 64 bits.  Written as a plain loop so that it cannot share a bug with the
 * core's bit tricks. */
static unsigned order_for(uint64_t size, uint64_t m)
{
    unsigned k = 0;
    uint64_t block = m;
    while (block < size) {
        if (block > UINT64_MAX / 2)
            return 64;
        block <<= 1;
        k++;
    }
    return k;
}

/* Stats of a fresh allocator of N = capacity / m blocks: the arena is tiled
 * by one free block per set bit of N, largest first. */
static void check_fresh_stats(const char *file, int line, const buddy_t *b,
                              uint64_t capacity, uint64_t m)
{
    const buddy_stats_t *st = buddy_stats(b);
    uint64_t n = capacity / m;
    check_u64(file, line, "capacity", st->capacity, n * m);
    check_u64(file, line, "min_size", st->min_size, m);
    check_u64(file, line, "max_order", st->max_order, ceil_log2(n));
    check_u64(file, line, "bytes_requested", st->bytes_requested, 0);
    check_u64(file, line, "bytes_in_blocks", st->bytes_in_blocks, 0);
    check_u64(file, line, "live_blocks", st->live_blocks, 0);
    check_u64(file, line, "closed", st->closed, 0);
    for (unsigned k = 0; k <= BUDDY_MAX_ORDER; k++)
        if (st->free_blocks[k] != ((n >> k) & 1))
            check_failed(file, line, "free_blocks",
                         "capacity %" PRIu64 ", m %" PRIu64
                         ": free_blocks[%u] = %" PRIu64 ", want %" PRIu64,
                         capacity, m, k, st->free_blocks[k], (n >> k) & 1);
    check_u64(file, line, "buddy_largest_free(b)", buddy_largest_free(b),
              m << floor_log2(n));
}
#define CHECK_FRESH_STATS(b, capacity, m)                                     \
    check_fresh_stats(__FILE__, __LINE__, (b), (capacity), (m))

/* buddy_new that must succeed; NULL (with a failed check) if it does not. */
#define NEW_ALLOCATOR(capacity, m) new_allocator(__FILE__, __LINE__, capacity, m)

static buddy_t *new_allocator(const char *file, int line, uint64_t capacity,
                              uint64_t m)
{
    buddy_t *b = NULL;
    buddy_status s = buddy_new(capacity, m, &b);
    if (s != BUDDY_OK || b == NULL) {
        check_failed(file, line, "buddy_new",
                     "(%" PRIu64 ", %" PRIu64 ") returned %s", capacity, m,
                     status_name(s));
        return NULL;
    }
    return b;
}

/* An allocation that must succeed at exactly `want`. */
#define ALLOC_AT(b, size, want) CHECK_I64(buddy_alloc((b), (size)), (want))

/* A free that must fail with `want` and change nothing at all, both through
 * buddy_probe and buddy_free. */
#define CHECK_BAD_FREE(b, offset, size, want)                                 \
    check_bad_free(__FILE__, __LINE__, (b), (offset), (size), (want))

static void check_bad_free(const char *file, int line, buddy_t *b,
                           uint64_t offset, uint64_t size, buddy_status want)
{
    buddy_stats_t before = *buddy_stats(b);
    buddy_status got = buddy_probe(b, offset, size);
    if (got != want)
        check_failed(file, line, "buddy_probe",
                     "(%" PRIu64 ", %" PRIu64 ") returned %s, want %s", offset,
                     size, status_name(got), status_name(want));
    got = buddy_free(b, offset, size);
    if (got != want)
        check_failed(file, line, "buddy_free",
                     "(%" PRIu64 ", %" PRIu64 ") returned %s, want %s", offset,
                     size, status_name(got), status_name(want));
    if (memcmp(buddy_stats(b), &before, sizeof before) != 0)
        check_failed(file, line, "buddy_free",
                     "(%" PRIu64 ", %" PRIu64 ") -> %s changed the stats",
                     offset, size, status_name(got));
    check_invariants(file, line, b);
}

/* ==== unit cases ========================================================= */

static void test_new_rejects_bad_arguments(void)
{
    static const struct {
        uint64_t capacity, min_size;
    } bad[] = {
        {1024, 0},                    /* min_size 0 */
        {1024, 3},                    /* not powers of two */
        {1024, 48},
        {1024, 1023},
        {UINT64_MAX, UINT64_MAX},
        {15, 16},                     /* capacity < min_size */
        {0, 1},
        {0, 16},
        {4095, 4096},
        {BUDDY_MAX_CAPACITY + 1, 1},  /* capacity > BUDDY_MAX_CAPACITY */
        {BUDDY_MAX_CAPACITY + 64, 64},
        {BIT(63), BIT(62)},
        {BIT(63), BIT(63)},           /* so is min_size itself */
        {UINT64_MAX, 1},
        {UINT64_MAX, MiB},
    };
    static char token;
    buddy_t *const sentinel = (buddy_t *)(void *)&token;
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        buddy_t *out = sentinel;
        buddy_status s = buddy_new(bad[i].capacity, bad[i].min_size, &out);
        CHECK(s == BUDDY_EINVAL,
              "buddy_new(%" PRIu64 ", %" PRIu64 ") returned %s, want EINVAL",
              bad[i].capacity, bad[i].min_size, status_name(s));
        CHECK(out == sentinel, "buddy_new changed *out on failure");
    }
    CHECK_STATUS(buddy_new(1024, 16, NULL), BUDDY_EINVAL);

    /* The edges that are valid: one minimum block, the largest capacity. */
    buddy_t *b = NEW_ALLOCATOR(1, 1);
    if (b != NULL) {
        CHECK_FRESH_STATS(b, 1, 1);
        ALLOC_AT(b, 1, 0);
        ALLOC_AT(b, 0, -1);
        CHECK_STATUS(buddy_free(b, 0, 1), BUDDY_OK);
        CHECK_INVARIANTS(b);
        buddy_destroy(b);
    }
    b = NEW_ALLOCATOR(BUDDY_MAX_CAPACITY, BUDDY_MAX_CAPACITY);
    if (b != NULL) {
        CHECK_FRESH_STATS(b, BUDDY_MAX_CAPACITY, BUDDY_MAX_CAPACITY);
        ALLOC_AT(b, BUDDY_MAX_CAPACITY + 1, -1);
        ALLOC_AT(b, BUDDY_MAX_CAPACITY, 0);
        ALLOC_AT(b, 1, -1);
        CHECK_STATUS(buddy_free(b, 0, BUDDY_MAX_CAPACITY), BUDDY_OK);
        CHECK_INVARIANTS(b);
        buddy_destroy(b);
    }
    b = NEW_ALLOCATOR(BUDDY_MAX_CAPACITY, BIT(42)); /* N = 2^20 */
    if (b != NULL) {
        ALLOC_AT(b, BIT(42), 0);
        ALLOC_AT(b, BIT(61), (int64_t)BIT(61));
        CHECK_U64(buddy_largest_free(b), BIT(60));
        CHECK_STATUS(buddy_free(b, BIT(61), BIT(61)), BUDDY_OK);
        CHECK_STATUS(buddy_free(b, 0, BIT(42)), BUDDY_OK);
        CHECK_FRESH_STATS(b, BUDDY_MAX_CAPACITY, BIT(42));
        CHECK_INVARIANTS(b);
        buddy_destroy(b);
    }
}

static void test_new_enomem_leaves_out_untouched(void)
{
    /* N = 2^62 minimum blocks: the metadata (~2^60 bytes) cannot exist. */
    static char token;
    buddy_t *const sentinel = (buddy_t *)(void *)&token;
    buddy_t *out = sentinel;
    CHECK(buddy_metadata_bytes(BUDDY_MAX_CAPACITY, 1) > BIT(59),
          "metadata for 2^62 one-byte blocks is %" PRIu64 " bytes",
          buddy_metadata_bytes(BUDDY_MAX_CAPACITY, 1));
    CHECK_STATUS(buddy_new(BUDDY_MAX_CAPACITY, 1, &out), BUDDY_ENOMEM);
    CHECK(out == sentinel, "buddy_new changed *out on ENOMEM");
}

static void test_new_rounds_capacity_down(void)
{
    static const struct {
        uint64_t capacity, min_size, rounded;
    } cases[] = {
        {1000, 64, 960}, {1023, 1, 1023}, {4097, 4096, 4096}, {16, 16, 16},
        {17, 16, 16},    {31, 16, 16},    {100, 32, 96},      {7, 4, 4},
        {65535, 256, 65280},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        buddy_t *b = NEW_ALLOCATOR(cases[i].capacity, cases[i].min_size);
        if (b == NULL)
            continue;
        const buddy_stats_t *st = buddy_stats(b);
        CHECK(st->capacity == cases[i].rounded,
              "buddy_new(%" PRIu64 ", %" PRIu64 "): capacity %" PRIu64
              ", want %" PRIu64,
              cases[i].capacity, cases[i].min_size, st->capacity,
              cases[i].rounded);
        CHECK_FRESH_STATS(b, cases[i].rounded, cases[i].min_size);
        CHECK_U64(st->alloc_calls, 0);
        CHECK_U64(st->free_calls, 0);
        CHECK_U64(st->failed_allocs, 0);
        CHECK_INVARIANTS(b);
        buddy_destroy(b);
    }
}

/* For any N: allocating minimum blocks until the core refuses yields exactly
 * N distinct blocks inside the capacity; allocating the largest free block
 * until none is left yields popcount(N) blocks covering exactly capacity
 * bytes.  So the tail of the tree past N is never handed out. */
static void test_odd_capacities_hand_out_exactly_capacity(void)
{
    static const uint64_t counts[] = {1,  2,   3,    5,    6,    7,   9,
                                      31, 33,  100,  1000, 1023, 1025, 4097};
    static const uint64_t mins[] = {1, 16, 64};
    for (size_t mi = 0; mi < ARRAY_LEN(mins); mi++) {
        for (size_t ni = 0; ni < ARRAY_LEN(counts); ni++) {
            uint64_t m = mins[mi], n = counts[ni], capacity = n * m;
            /* pass an odd raw size: the core rounds it down to capacity */
            buddy_t *b = NEW_ALLOCATOR(capacity + m - 1, m);
            if (b == NULL)
                continue;
            unsigned char *seen = calloc((size_t)n, 1);
            uint64_t *offsets = calloc((size_t)n, sizeof *offsets);
            if (!CHECK(seen != NULL && offsets != NULL, "out of memory"))
                goto done;

            /* (a) minimum blocks until full */
            uint64_t got = 0;
            for (;;) {
                int64_t off = buddy_alloc(b, m);
                if (off < 0)
                    break;
                uint64_t u = (uint64_t)off;
                if (!CHECK(got < n && u < capacity && u % m == 0 &&
                               !seen[u / m],
                           "N=%" PRIu64 " m=%" PRIu64 ": block %" PRIu64
                           " at %" PRId64 " is wrong",
                           n, m, got, off))
                    goto done;
                seen[u / m] = 1;
                offsets[got++] = u;
            }
            CHECK(got == n, "N=%" PRIu64 " m=%" PRIu64
                  ": %" PRIu64 " minimum blocks handed out", n, m, got);
            CHECK_U64(buddy_stats(b)->bytes_in_blocks, capacity);
            CHECK_U64(buddy_largest_free(b), 0);
            CHECK_INVARIANTS(b);
            for (uint64_t i = got; i-- > 0;)
                CHECK_STATUS(buddy_free(b, offsets[i], m), BUDDY_OK);
            CHECK_FRESH_STATS(b, capacity, m);

            /* (b) the largest free block until none is left */
            uint64_t total = 0, blocks = 0;
            for (uint64_t size; (size = buddy_largest_free(b)) != 0;) {
                int64_t off = buddy_alloc(b, size);
                if (!CHECK(off >= 0 && (uint64_t)off % size == 0 &&
                               (uint64_t)off + size <= capacity && blocks < n,
                           "N=%" PRIu64 " m=%" PRIu64 ": alloc(%" PRIu64
                           ") = %" PRId64,
                           n, m, size, off))
                    goto done;
                offsets[blocks++] = (uint64_t)off;
                total += size;
            }
            CHECK(total == capacity &&
                      blocks == (uint64_t)__builtin_popcountll(n),
                  "N=%" PRIu64 " m=%" PRIu64 ": %" PRIu64 " blocks, %" PRIu64
                  " bytes",
                  n, m, blocks, total);
            ALLOC_AT(b, 0, -1);
            /* the root of the tree is larger than the arena unless N = 2^L */
            if ((n & (n - 1)) != 0)
                CHECK(buddy_alloc(b, m << ceil_log2(n)) == -1,
                      "an allocation larger than the arena succeeded");
            CHECK_INVARIANTS(b);
        done:
            free(seen);
            free(offsets);
            buddy_destroy(b);
        }
    }
}

/* Hand-worked sequences for the placement policy: smallest order that has a
 * free block, lowest offset within it, split keeping the lower halves. */
static void test_placement_policy(void)
{
    /* m = 16, N = 16: one free block of order 4 at 0. */
    buddy_t *b = NEW_ALLOCATOR(256, 16);
    if (b == NULL)
        return;
    const buddy_stats_t *st = buddy_stats(b);
    ALLOC_AT(b, 16, 0);   /* splits 0..255; free: o0@16 o1@32 o2@64 o3@128 */
    for (unsigned k = 0; k < 4; k++)
        CHECK(st->free_blocks[k] == 1, "free_blocks[%u] = %" PRIu64, k,
              st->free_blocks[k]);
    CHECK_U64(st->free_blocks[4], 0);
    ALLOC_AT(b, 32, 32);  /* order 1 has a block: no split */
    ALLOC_AT(b, 1, 16);   /* order 0 at 16 */
    ALLOC_AT(b, 16, 64);  /* splits o2@64, keeps 64; frees o0@80 o1@96 */
    ALLOC_AT(b, 17, 96);  /* order 1 at 96 */
    ALLOC_AT(b, 64, 128); /* no order 2: splits o3@128, frees o2@192 */
    ALLOC_AT(b, 16, 80);
    ALLOC_AT(b, 128, -1); /* nothing of order >= 3 is free */
    CHECK_U64(buddy_largest_free(b), 64);
    CHECK_U64(st->failed_allocs, 1);

    /* Lowest offset, not most recently freed: free 16, then 80. */
    CHECK_STATUS(buddy_free(b, 16, 1), BUDDY_OK);
    CHECK_STATUS(buddy_free(b, 80, 16), BUDDY_OK);
    CHECK_U64(st->free_blocks[0], 2);
    ALLOC_AT(b, 1, 16);
    CHECK_STATUS(buddy_free(b, 16, 1), BUDDY_OK);
    /* Smallest order beats lowest offset: 0 and 16 merge into o1@0, but a
     * minimum request still takes the order-0 block at 80. */
    CHECK_STATUS(buddy_free(b, 0, 16), BUDDY_OK);
    CHECK_U64(st->free_blocks[0], 1);
    CHECK_U64(st->free_blocks[1], 1);
    ALLOC_AT(b, 16, 80);
    ALLOC_AT(b, 16, 0);   /* splits o1@0, keeps 0, frees o0@16 */
    CHECK_U64(st->free_blocks[0], 1);
    CHECK_U64(st->free_blocks[1], 0);
    CHECK_U64(st->free_blocks[2], 1);
    CHECK_INVARIANTS(b);

    /* Freeing everything merges back into the single order-4 block. */
    static const uint64_t live[][2] = {{0, 16},  {32, 32}, {64, 16},
                                       {80, 16}, {96, 17}, {128, 64}};
    for (size_t i = 0; i < ARRAY_LEN(live); i++) {
        CHECK_STATUS(buddy_free(b, live[i][0], live[i][1]), BUDDY_OK);
        CHECK_INVARIANTS(b);
    }
    CHECK_FRESH_STATS(b, 256, 16);
    buddy_destroy(b);

    /* m = 1, N = 5 (L = 3): free o2@0 and o0@4; the order-0 block at 4 has
     * its buddy past the arena and never merges. */
    b = NEW_ALLOCATOR(5, 1);
    if (b == NULL)
        return;
    st = buddy_stats(b);
    CHECK_U64(st->max_order, 3);
    ALLOC_AT(b, 1, 4);    /* order 0 exists: taken before splitting o2@0 */
    ALLOC_AT(b, 1, 0);    /* splits o2@0: frees o1@2 and o0@1 */
    ALLOC_AT(b, 2, 2);
    ALLOC_AT(b, 1, 1);
    ALLOC_AT(b, 1, -1);
    CHECK_U64(buddy_largest_free(b), 0);
    CHECK_STATUS(buddy_free(b, 4, 1), BUDDY_OK);
    CHECK_U64(st->free_blocks[0], 1);
    CHECK_U64(buddy_largest_free(b), 1);
    CHECK_STATUS(buddy_free(b, 0, 1), BUDDY_OK);
    CHECK_STATUS(buddy_free(b, 1, 1), BUDDY_OK);
    CHECK_STATUS(buddy_free(b, 2, 2), BUDDY_OK);
    CHECK_FRESH_STATS(b, 5, 1); /* o2@0 + o0@4, no order-3 block */
    ALLOC_AT(b, 5, -1);
    ALLOC_AT(b, 8, -1);
    ALLOC_AT(b, 3, 0);
    ALLOC_AT(b, 4, -1);
    CHECK_INVARIANTS(b);
    buddy_destroy(b);

    /* m = 16, N = 6 (raw capacity 111): free o2@0 and o1@64. */
    b = NEW_ALLOCATOR(111, 16);
    if (b == NULL)
        return;
    ALLOC_AT(b, 32, 64);
    ALLOC_AT(b, 32, 0);
    ALLOC_AT(b, 32, 32);
    ALLOC_AT(b, 1, -1);
    CHECK_STATUS(buddy_free(b, 64, 32), BUDDY_OK);
    CHECK_STATUS(buddy_free(b, 0, 32), BUDDY_OK);
    CHECK_STATUS(buddy_free(b, 32, 32), BUDDY_OK);
    CHECK_FRESH_STATS(b, 96, 16);
    buddy_destroy(b);
}

/* The lowest offset at every depth of the summary tree: bits_take_first
 * is written out for depths 2-4 and a loop serves the others, so N runs
 * from one word (depth 1) to depth 5, and at depths 1-4 the root has all
 * its 8 words.  Free order-0 blocks lie in eight distant parts of the
 * arena (each under its own root word when there are 8) and, inside each,
 * 64, 4096 and 262,144 blocks apart (other words at each summary level):
 * the buddies of blocks taken at even offsets, highest first.  alloc(1)
 * must hand them out lowest first. */
static void test_lowest_offset_at_every_summary_depth(void)
{
    /* depths 1, 1, 2, 3, 4 and 5 (buddy_check reads all 2^N bits: not on
     * the two largest) */
    static const unsigned log2n[] = {5, 9, 15, 21, 27, 28};
    static const uint64_t inside[] = {2, 2 + 64 * 3, 2 + 4096 * 5, 2 + 262144 * 3};
    for (size_t t = 0; t < ARRAY_LEN(log2n); t++) {
        uint64_t n = (uint64_t)1 << log2n[t], part = n / 8;
        buddy_t *b = NEW_ALLOCATOR(n, 1);
        if (b == NULL)
            return;
        uint64_t taken[8 * ARRAY_LEN(inside)];
        unsigned count = 0;
        for (unsigned j = 0; j < 8; j++)
            for (size_t d = 0; d < ARRAY_LEN(inside); d++)
                if (inside[d] < part)
                    taken[count++] = j * part + inside[d]; /* ascending */
        for (unsigned c = count; c-- > 0;)
            CHECK_I64(buddy_alloc_congruent(b, 1, n, taken[c]), (int64_t)taken[c]);
        CHECK_U64(buddy_stats(b)->free_blocks[0], count);
        for (unsigned c = 0; c < count; c++)
            ALLOC_AT(b, 1, (int64_t)taken[c] + 1);
        CHECK_U64(buddy_stats(b)->free_blocks[0], 0);
        if (log2n[t] <= 21)
            CHECK_INVARIANTS(b);
        for (unsigned c = 0; c < count; c++) {
            CHECK_STATUS(buddy_free(b, taken[c], 1), BUDDY_OK);
            CHECK_STATUS(buddy_free(b, taken[c] + 1, 1), BUDDY_OK);
        }
        CHECK_FRESH_STATS(b, n, 1);
        buddy_destroy(b);
    }
}

/* Every returned offset is a multiple of its block size. */
static void test_natural_alignment(void)
{
    static const uint64_t sizes[] = {1, 3, 7, 100, 5, 64, 2, 300, 33, 1000, 9};
    static const struct {
        uint64_t capacity, min_size;
    } arenas[] = {{4096, 1}, {1000 * 64, 64}, {12345, 8}};
    for (size_t a = 0; a < ARRAY_LEN(arenas); a++) {
        buddy_t *b = NEW_ALLOCATOR(arenas[a].capacity, arenas[a].min_size);
        if (b == NULL)
            continue;
        unsigned count = 0;
        for (size_t i = 0;; i++) {
            uint64_t size = sizes[i % ARRAY_LEN(sizes)];
            int64_t off = buddy_alloc(b, size);
            if (off < 0) {
                if (size <= arenas[a].min_size)
                    break; /* full */
                continue;
            }
            uint64_t m = arenas[a].min_size, block = m << order_for(size, m);
            count++;
            CHECK(block != 0 && (uint64_t)off % block == 0,
                  "alloc(%" PRIu64 ") = %" PRId64 " with block size %" PRIu64,
                  size, off, block);
        }
        CHECK(count > 10, "only %u blocks allocated", count);
        CHECK_U64(buddy_largest_free(b), 0);
        CHECK_INVARIANTS(b);
        buddy_destroy(b);
    }
}

static void test_alloc_zero_takes_a_min_block(void)
{
    buddy_t *b = NEW_ALLOCATOR(1024, 64);
    if (b == NULL)
        return;
    const buddy_stats_t *st = buddy_stats(b);
    CHECK_U64(buddy_block_size(b, 0), 64);
    ALLOC_AT(b, 0, 0);
    ALLOC_AT(b, 0, 64);
    CHECK_U64(st->bytes_requested, 0);
    CHECK_U64(st->bytes_in_blocks, 128);
    CHECK_U64(st->live_blocks, 2);
    CHECK_U64(st->free_blocks[0], 0);
    CHECK_STATUS(buddy_free(b, 0, 0), BUDDY_OK);
    CHECK_STATUS(buddy_free(b, 64, 0), BUDDY_OK);
    CHECK_FRESH_STATS(b, 1024, 64);
    CHECK_INVARIANTS(b);
    buddy_destroy(b);
}

/* Requests larger than any block fail and change nothing but failed_allocs. */
static void test_too_big_fails(void)
{
    static const uint64_t sizes[] = {
        1025,    2048,    BIT(62),  BUDDY_MAX_CAPACITY + 1,
        BIT(63), BIT(63) + 1, UINT64_MAX - 1, UINT64_MAX,
    };
    buddy_t *b = NEW_ALLOCATOR(1024, 16);
    if (b == NULL)
        return;
    ALLOC_AT(b, 100, 0);
    for (size_t i = 0; i < ARRAY_LEN(sizes); i++) {
        buddy_stats_t before = *buddy_stats(b);
        int64_t off = buddy_alloc(b, sizes[i]);
        CHECK(off == -1, "alloc(%" PRIu64 ") = %" PRId64, sizes[i], off);
        before.failed_allocs++;
        CHECK_STATS_UNCHANGED(b, &before);
        CHECK_U64(buddy_block_size(b, sizes[i]), 0);
        CHECK_INVARIANTS(b);
    }
    buddy_destroy(b);

    /* N = 15: the tree's root (1024 bytes) lies past the arena. */
    b = NEW_ALLOCATOR(960, 64);
    if (b == NULL)
        return;
    ALLOC_AT(b, 1024, -1);
    ALLOC_AT(b, 513, -1);
    ALLOC_AT(b, 960, -1);
    ALLOC_AT(b, 512, 0);
    CHECK_U64(buddy_stats(b)->failed_allocs, 3);
    CHECK_INVARIANTS(b);
    buddy_destroy(b);
}

/* The block a pending split handed out (buddy.c, chain_): wrong frees of it
 * are refused exactly as after an eager split, each kind of mistake both
 * before and after the split is written out, and a free of it merges the
 * whole chain back. */
static void test_pending_split_frees(void)
{
    buddy_t *b = NEW_ALLOCATOR(4096, 16);
    if (b == NULL)
        return;
    for (int settled = 0; settled <= 1; settled++) {
        ALLOC_AT(b, 64, 0); /* splits 4096 down to 64: pending */
        if (settled)
            CHECK_INVARIANTS(b); /* buddy_check writes the split out */
        CHECK_U64(buddy_stats(b)->free_blocks[2], 1); /* 64 @ 64 */
        CHECK_U64(buddy_stats(b)->free_blocks[7], 1); /* 2048 @ 2048 */
        CHECK_STATUS(buddy_free(b, 16, 64), BUDDY_EINTERIOR);
        CHECK_STATUS(buddy_free(b, 48, 16), BUDDY_EINTERIOR);
        CHECK_STATUS(buddy_free(b, 0, 16), BUDDY_ESIZE);
        CHECK_STATUS(buddy_free(b, 0, 128), BUDDY_ESIZE);
        CHECK_STATUS(buddy_free(b, 64, 64), BUDDY_EFREE);
        CHECK_STATUS(buddy_free(b, 2048, 2048), BUDDY_EFREE);
        CHECK_STATUS(buddy_probe(b, 0, 64), BUDDY_OK);
        CHECK_INVARIANTS(b);
        CHECK_STATUS(buddy_free(b, 0, 64), BUDDY_OK);
        CHECK_U64(buddy_stats(b)->free_blocks[8], 1); /* all merged */
        CHECK_U64(buddy_largest_free(b), 4096);
        CHECK_STATUS(buddy_free(b, 0, 64), BUDDY_EFREE);
        CHECK_INVARIANTS(b);
    }
    buddy_destroy(b);
}

/* Cancelling a pending split empties the orders the split made non-empty
 * (buddy.c, chain_fresh) -- unless another free changed a free count in
 * between: then the counts decide.  No buddy_check before the cancel (it
 * would write the split out). */
static void test_pending_split_cancel_counts(void)
{
    for (int other_free = 0; other_free <= 1; other_free++) {
        buddy_t *b = NEW_ALLOCATOR(4096, 16); /* N = 256, L = 8 */
        if (b == NULL)
            return;
        ALLOC_AT(b, 32, 0);  /* order 1 */
        ALLOC_AT(b, 32, 32); /* order 1, settles the first split */
        ALLOC_AT(b, 16, 64); /* splits 64 @ 64 to order 0: pending */
        CHECK_U64(buddy_stats(b)->free_blocks[0], 1); /* 16 @ 80 */
        CHECK_U64(buddy_stats(b)->free_blocks[1], 1); /* 32 @ 96 */
        if (other_free) /* order 1 gains a real free block meanwhile */
            CHECK_STATUS(buddy_free(b, 32, 32), BUDDY_OK);
        CHECK_STATUS(buddy_free(b, 64, 16), BUDDY_OK); /* cancels */
        CHECK_U64(buddy_stats(b)->free_blocks[0], 0);
        CHECK_U64(buddy_stats(b)->free_blocks[1], (uint64_t)other_free);
        CHECK_U64(buddy_stats(b)->free_blocks[2], 1); /* 64 @ 64 again */
        /* order 1 must still be found non-empty when it is */
        ALLOC_AT(b, 32, other_free ? 32 : 64);
        CHECK_INVARIANTS(b);
        buddy_destroy(b);
    }
}

static void test_aligned_blocks(void)
{
    buddy_t *b = NEW_ALLOCATOR(4096, 16);
    if (b == NULL)
        return;
    CHECK_I64(buddy_alloc_aligned(b, 10, 3), -2); /* not a power of two */
    CHECK_U64(buddy_stats(b)->failed_allocs, 0);
    ALLOC_AT(b, 10, 0);
    CHECK_I64(buddy_alloc_aligned(b, 10, 256), 256); /* a 256-byte block */
    CHECK_U64(buddy_stats(b)->bytes_in_blocks, 16 + 256);
    CHECK_U64(buddy_stats(b)->bytes_requested, 20);
    CHECK_I64(buddy_alloc_aligned(b, 100, 1), 128); /* align <= block: plain */
    CHECK_INVARIANTS(b);
    /* freed with its own align only: 10 bytes alone names a 16-byte block */
    CHECK_STATUS(buddy_free(b, 256, 10), BUDDY_ESIZE);
    CHECK_STATUS(buddy_free_aligned(b, 256, 10, 128), BUDDY_ESIZE);
    CHECK_STATUS(buddy_free_aligned(b, 256, 10, 6), BUDDY_EINVAL);
    CHECK_STATUS(buddy_free_aligned(b, 256, 10, 256), BUDDY_OK);
    CHECK_STATUS(buddy_free_aligned(b, 128, 100, 1), BUDDY_OK);
    CHECK_STATUS(buddy_free(b, 0, 10), BUDDY_OK);
    CHECK_U64(buddy_largest_free(b), 4096);
    CHECK_I64(buddy_alloc_aligned(b, 1, 8192), -1); /* no such block */
    CHECK_U64(buddy_stats(b)->failed_allocs, 1);
    CHECK_INVARIANTS(b);
    buddy_destroy(b);
}

static void test_resize_in_place(void)
{
    buddy_t *b = NEW_ALLOCATOR(4096, 16);
    if (b == NULL)
        return;
    ALLOC_AT(b, 1000, 0);                  /* [0, 1024) */
    CHECK_STATUS(buddy_resize(b, 0, 1000, 0, 100), BUDDY_OK); /* shrink */
    CHECK_U64(buddy_stats(b)->bytes_in_blocks, 128);
    CHECK_U64(buddy_stats(b)->bytes_requested, 100);
    CHECK_U64(buddy_stats(b)->free_blocks[3], 1); /* 128 @ 128 */
    CHECK_U64(buddy_stats(b)->free_blocks[5], 1); /* 512 @ 512 */
    CHECK_U64(buddy_stats(b)->peak_bytes_in_blocks, 1024);
    CHECK_INVARIANTS(b);
    CHECK_STATUS(buddy_free(b, 0, 1000), BUDDY_ESIZE); /* the old size is gone */
    CHECK_STATUS(buddy_resize(b, 0, 100, 0, 2000), BUDDY_OK); /* grow to 2048 */
    CHECK_U64(buddy_stats(b)->bytes_in_blocks, 2048);
    CHECK_U64(buddy_stats(b)->free_blocks[7], 1);
    CHECK_U64(buddy_stats(b)->alloc_calls, 1); /* resizes are not counted */
    CHECK_U64(buddy_stats(b)->free_calls, 0);
    CHECK_INVARIANTS(b);
    ALLOC_AT(b, 16, 2048);
    buddy_stats_t before;
    buddy_snapshot(b, &before);
    CHECK_STATUS(buddy_resize(b, 0, 2000, 0, 4096), BUDDY_ENOMEM); /* buddy live */
    CHECK_STATUS(buddy_resize(b, 2048, 16, 0, 32), BUDDY_OK);
    CHECK_STATUS(buddy_resize(b, 2048, 32, 0, 32), BUDDY_OK);
    CHECK_STATUS(buddy_resize(b, 2064, 16, 0, 32), BUDDY_EINTERIOR);
    CHECK_STATUS(buddy_resize(b, 2048, 16, 0, 8), BUDDY_ESIZE);
    CHECK_STATUS(buddy_resize(b, 3072, 16, 0, 8), BUDDY_EFREE);
    CHECK_STATUS(buddy_resize(b, 8192, 16, 0, 8), BUDDY_ERANGE);
    CHECK_STATUS(buddy_resize(b, 2048, 32, 0, 1), BUDDY_OK);
    CHECK_STATUS(buddy_resize(b, 2048, 1, 0, 20), BUDDY_OK); /* 2064 is free */
    CHECK_STATUS(buddy_free(b, 2048, 20), BUDDY_OK);
    /* the upper half cannot grow in place: its buddy below is not above */
    ALLOC_AT(b, 16, 2048);
    ALLOC_AT(b, 16, 2064);
    CHECK_STATUS(buddy_free(b, 2048, 16), BUDDY_OK);
    CHECK_STATUS(buddy_resize(b, 2064, 16, 0, 32), BUDDY_ENOMEM);
    CHECK_STATUS(buddy_free(b, 2064, 16), BUDDY_OK);
    /* an aligned block shrinks to its size's own order */
    CHECK_I64(buddy_alloc_aligned(b, 10, 1024), 2048);
    CHECK_STATUS(buddy_resize(b, 2048, 10, 1024, 10), BUDDY_OK);
    CHECK_U64(buddy_stats(b)->bytes_in_blocks, 2048 + 16);
    CHECK_STATUS(buddy_free(b, 2048, 10), BUDDY_OK);
    CHECK_STATUS(buddy_resize(b, 0, 2000, 0, 4096), BUDDY_OK); /* now it can */
    CHECK_STATUS(buddy_resize(b, 0, 4096, 0, 4097), BUDDY_ENOMEM); /* past the top */
    CHECK_INVARIANTS(b);
    CHECK_STATUS(buddy_free(b, 0, 4096), BUDDY_OK);
    CHECK_U64(buddy_largest_free(b), 4096);
    buddy_destroy(b);
}

/* Random allocs, aligned allocs, resizes and frees; buddy_check after each,
 * and the statistics against a plain list of what is live. */
static void test_resize_random(void)
{
    enum { LIVE = 64 };
    buddy_t *b = NEW_ALLOCATOR(1000 * 16, 16); /* odd capacity on purpose */
    if (b == NULL)
        return;
    struct { int64_t off; uint64_t size, align; } live[LIVE];
    int n = 0;
    rng r = {0x12345u};
    for (int step = 0; step < 20000 && g_case_failures == 0; step++) {
        uint64_t op = rng_below(&r, 4);
        uint64_t size = rng_below(&r, 1) ? 0 : (uint64_t)1 << rng_below(&r, 11);
        size = rng_below(&r, size + 1);
        if (op == 0 && n < LIVE) {
            uint64_t align = rng_below(&r, 2) ? 0 : (uint64_t)1 << rng_below(&r, 12);
            int64_t off = buddy_alloc_aligned(b, size, align);
            if (off >= 0) {
                CHECK(align == 0 || off % (int64_t)align == 0, "offset %" PRId64
                      " not aligned to %" PRIu64, off, align);
                live[n].off = off, live[n].size = size, live[n].align = align;
                n++;
            }
        } else if (op == 1 && n > 0) {
            int i = (int)rng_below(&r, (uint64_t)n);
            buddy_status s = buddy_resize(b, (uint64_t)live[i].off, live[i].size,
                                          live[i].align, size);
            CHECK(s == BUDDY_OK || s == BUDDY_ENOMEM, "resize: %s", status_name(s));
            if (s == BUDDY_OK)
                live[i].size = size, live[i].align = 0;
        } else if (n > 0) {
            int i = (int)rng_below(&r, (uint64_t)n);
            CHECK_STATUS(buddy_free_aligned(b, (uint64_t)live[i].off, live[i].size,
                                            live[i].align), BUDDY_OK);
            live[i] = live[--n];
        }
        uint64_t req = 0;
        for (int i = 0; i < n; i++)
            req += live[i].size;
        CHECK_U64(buddy_stats(b)->bytes_requested, req);
        CHECK_U64(buddy_stats(b)->live_blocks, (uint64_t)n);
        CHECK_INVARIANTS(b);
    }
    buddy_destroy(b);
}

static void test_alloc_congruent(void)
{
    buddy_t *b = NEW_ALLOCATOR(4096, 16);
    if (b == NULL)
        return;
    CHECK_I64(buddy_alloc_congruent(b, 16, 64, 48), 48);
    CHECK_I64(buddy_alloc_congruent(b, 16, 64, 48), 112);
    /* [32, 64) holds the block at 48: the next 32-byte block at 32 mod 64 */
    CHECK_I64(buddy_alloc_congruent(b, 32, 64, 32), 160);
    CHECK_I64(buddy_alloc_congruent(b, 32, 64, 16), -2); /* 32-byte blocks never start at 16 */
    CHECK_I64(buddy_alloc_congruent(b, 16, 48, 16), -2); /* not a power of two */
    CHECK_I64(buddy_alloc_congruent(b, 16, 64, 64), -2); /* rem >= modulus */
    CHECK_U64(buddy_stats(b)->failed_allocs, 0);
    CHECK_U64(buddy_stats(b)->live_blocks, 3);
    CHECK_INVARIANTS(b);
    ALLOC_AT(b, 16, 32); /* the lowest free 16-byte block the splits left */
    CHECK_STATUS(buddy_free(b, 48, 16), BUDDY_OK);
    CHECK_STATUS(buddy_free(b, 112, 16), BUDDY_OK);
    CHECK_STATUS(buddy_free(b, 160, 32), BUDDY_OK);
    CHECK_STATUS(buddy_free(b, 32, 16), BUDDY_OK);
    CHECK_U64(buddy_largest_free(b), 4096);
    /* full at every candidate: refused and counted */
    ALLOC_AT(b, 2048, 0);
    CHECK_I64(buddy_alloc_congruent(b, 1024, 4096, 0), -1);
    CHECK_I64(buddy_alloc_congruent(b, 1024, 4096, 1024), -1);
    CHECK_I64(buddy_alloc_congruent(b, 1024, 2048, 1024), 3072);
    CHECK_U64(buddy_stats(b)->failed_allocs, 2);
    CHECK_INVARIANTS(b);
    buddy_destroy(b);
}

static void test_free_errors_change_nothing(void)
{
    buddy_t *b = NEW_ALLOCATOR(1024, 16);
    if (b == NULL)
        return;
    /* A = 0 (order 2), B = 64 (order 0), C = 128 (order 3);
     * free: o0@80 o1@96 o4@256 o5@512. */
    ALLOC_AT(b, 64, 0);
    ALLOC_AT(b, 16, 64);
    ALLOC_AT(b, 100, 128);

    static const struct {
        uint64_t offset, size;
        buddy_status want;
    } bad[] = {
        {1024, 16, BUDDY_ERANGE},      {1024, 0, BUDDY_ERANGE},
        {2048, 64, BUDDY_ERANGE},      {BIT(63), 16, BUDDY_ERANGE},
        {UINT64_MAX - 15, 16, BUDDY_ERANGE},
        {1, 16, BUDDY_EALIGN},         {15, 64, BUDDY_EALIGN},
        {17, 16, BUDDY_EALIGN},        {65, 16, BUDDY_EALIGN},
        {129, 100, BUDDY_EALIGN},      {1023, 16, BUDDY_EALIGN},
        {88, 16, BUDDY_EALIGN},        /* misaligned inside a free block */
        {16, 64, BUDDY_EINTERIOR},     {48, 64, BUDDY_EINTERIOR},
        {32, 16, BUDDY_EINTERIOR},     {32, 32, BUDDY_EINTERIOR},
        {144, 100, BUDDY_EINTERIOR},   {240, 16, BUDDY_EINTERIOR},
        {192, 64, BUDDY_EINTERIOR},    {192, UINT64_MAX, BUDDY_EINTERIOR},
        {0, 16, BUDDY_ESIZE},          {0, 0, BUDDY_ESIZE},
        {0, 65, BUDDY_ESIZE},          {0, 128, BUDDY_ESIZE},
        {0, 1024, BUDDY_ESIZE},        {0, 1025, BUDDY_ESIZE},
        {0, BIT(62), BUDDY_ESIZE},     {0, BIT(63), BUDDY_ESIZE},
        {0, UINT64_MAX, BUDDY_ESIZE},  {64, 17, BUDDY_ESIZE},
        {128, 64, BUDDY_ESIZE},        {128, 129, BUDDY_ESIZE},
        {80, 16, BUDDY_EFREE},         {96, 32, BUDDY_EFREE},
        {112, 16, BUDDY_EFREE},        {256, 256, BUDDY_EFREE},
        {512, 512, BUDDY_EFREE},       {1008, 16, BUDDY_EFREE},
        {512, UINT64_MAX, BUDDY_EFREE},
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        CHECK_BAD_FREE(b, bad[i].offset, bad[i].size, bad[i].want);

    /* Double frees, also once the freed block has merged with its buddy. */
    CHECK_STATUS(buddy_probe(b, 64, 16), BUDDY_OK);
    CHECK_STATUS(buddy_free(b, 64, 16), BUDDY_OK); /* merges up to o2@64 */
    CHECK_U64(buddy_stats(b)->free_blocks[2], 1);
    CHECK_BAD_FREE(b, 64, 16, BUDDY_EFREE);
    CHECK_BAD_FREE(b, 80, 16, BUDDY_EFREE);
    CHECK_STATUS(buddy_free(b, 0, 64), BUDDY_OK);  /* merges up to o3@0 */
    CHECK_BAD_FREE(b, 0, 64, BUDDY_EFREE);
    CHECK_BAD_FREE(b, 0, 16, BUDDY_EFREE);
    CHECK_BAD_FREE(b, 64, 16, BUDDY_EFREE);
    CHECK_STATUS(buddy_free(b, 128, 100), BUDDY_OK); /* merges to the root */
    CHECK_BAD_FREE(b, 128, 100, BUDDY_EFREE);
    CHECK_BAD_FREE(b, 0, 1024, BUDDY_EFREE);
    CHECK_BAD_FREE(b, 0, 0, BUDDY_EFREE);
    CHECK_FRESH_STATS(b, 1024, 16);
    buddy_destroy(b);

    /* Non-power-of-two N: the tail of the tree past capacity is ERANGE. */
    b = NEW_ALLOCATOR(960, 64);
    if (b == NULL)
        return;
    ALLOC_AT(b, 64, 896);
    CHECK_BAD_FREE(b, 960, 64, BUDDY_ERANGE);
    CHECK_BAD_FREE(b, 1024 - 64, 64, BUDDY_ERANGE);
    CHECK_BAD_FREE(b, 896, 128, BUDDY_ESIZE);
    CHECK_BAD_FREE(b, 832, 64, BUDDY_EFREE);
    CHECK_STATUS(buddy_free(b, 896, 64), BUDDY_OK);
    buddy_destroy(b);
}

static void test_stats_counters(void)
{
    buddy_t *b = NEW_ALLOCATOR(4096, 16); /* N = 256, L = 8 */
    if (b == NULL)
        return;
    const buddy_stats_t *st = buddy_stats(b);
    CHECK_U64(st->max_order, 8);
    ALLOC_AT(b, 16, 0);  /* splits the root: one free block of order 0..7 */
    for (unsigned k = 0; k <= BUDDY_MAX_ORDER; k++)
        CHECK(st->free_blocks[k] == (k < 8),
              "free_blocks[%u] = %" PRIu64, k, st->free_blocks[k]);
    ALLOC_AT(b, 3, 16);
    CHECK_U64(st->free_blocks[0], 0);
    ALLOC_AT(b, 32, 32);
    CHECK_U64(st->free_blocks[1], 0);
    for (unsigned k = 2; k < 8; k++)
        CHECK(st->free_blocks[k] == 1, "free_blocks[%u] = %" PRIu64, k,
              st->free_blocks[k]);
    ALLOC_AT(b, 1000, 1024);
    ALLOC_AT(b, 0, 64);
    ALLOC_AT(b, 5000, -1);
    ALLOC_AT(b, UINT64_MAX, -1);
    CHECK_U64(st->bytes_requested, 16 + 3 + 32 + 1000 + 0);
    CHECK_U64(st->bytes_in_blocks, 16 + 16 + 32 + 1024 + 16);
    CHECK_U64(st->live_blocks, 5);
    CHECK_U64(st->alloc_calls, 5);
    CHECK_U64(st->free_calls, 0);
    CHECK_U64(st->failed_allocs, 2);

    CHECK_STATUS(buddy_free(b, 16, 3), BUDDY_OK);
    CHECK_BAD_FREE(b, 16, 3, BUDDY_EFREE); /* counts as nothing */
    CHECK_U64(st->bytes_requested, 16 + 32 + 1000);
    CHECK_U64(st->bytes_in_blocks, 16 + 32 + 1024 + 16);
    CHECK_U64(st->live_blocks, 4);
    CHECK_U64(st->free_calls, 1);

    CHECK_STATUS(buddy_free(b, 1024, 1000), BUDDY_OK);
    CHECK_U64(st->bytes_requested, 16 + 32);
    CHECK_STATUS(buddy_free(b, 0, 16), BUDDY_OK);
    CHECK_STATUS(buddy_free(b, 32, 32), BUDDY_OK);
    CHECK_STATUS(buddy_free(b, 64, 0), BUDDY_OK);
    CHECK_U64(st->bytes_requested, 0);
    CHECK_U64(st->bytes_in_blocks, 0);
    CHECK_U64(st->live_blocks, 0);
    CHECK_U64(st->alloc_calls, 5);
    CHECK_U64(st->free_calls, 5);
    CHECK_U64(st->failed_allocs, 2);
    CHECK_FRESH_STATS(b, 4096, 16);
    CHECK_INVARIANTS(b);
    buddy_destroy(b);
}

/* buddy_free's size must be the allocated size, but the core can only check
 * that it maps to the same block size, and subtracts the size it is given
 * from bytes_requested (buddy.h).  A caller that breaks the rule within one
 * block size gets exactly that arithmetic; nothing else is promised (the
 * counter no longer matches the live blocks, and buddy_check may say so). */
static void test_free_with_another_size_of_the_block(void)
{
    buddy_t *b = NEW_ALLOCATOR(4096, 16);
    if (b == NULL)
        return;
    const buddy_stats_t *st = buddy_stats(b);
    ALLOC_AT(b, 1000, 0);
    ALLOC_AT(b, 16, 1024);
    CHECK_STATUS(buddy_probe(b, 0, 960), BUDDY_OK); /* 960 takes 1024 too */
    CHECK_STATUS(buddy_free(b, 0, 960), BUDDY_OK);
    CHECK_U64(st->bytes_requested, 1016 - 960);
    CHECK_U64(st->bytes_in_blocks, 16);
    CHECK_STATUS(buddy_free(b, 1024, 1), BUDDY_OK);
    CHECK_U64(st->bytes_requested, 1016 - 960 - 1);
    CHECK_U64(st->live_blocks, 0);
    CHECK_U64(st->free_blocks[8], 1);
    buddy_destroy(b);
}

static void test_largest_free_and_block_size(void)
{
    buddy_t *b = NEW_ALLOCATOR(1024, 16);
    if (b == NULL)
        return;
    static const uint64_t sizes[][2] = {
        {0, 16},      {1, 16},      {16, 16},       {17, 32},
        {511, 512},   {512, 512},   {513, 1024},    {1024, 1024},
        {1025, 0},    {BIT(62), 0}, {BIT(62) + 1, 0}, {BIT(63), 0},
        {BIT(63) + 1, 0}, {UINT64_MAX, 0},
    };
    for (size_t i = 0; i < ARRAY_LEN(sizes); i++)
        CHECK(buddy_block_size(b, sizes[i][0]) == sizes[i][1],
              "block_size(%" PRIu64 ") = %" PRIu64 ", want %" PRIu64,
              sizes[i][0], buddy_block_size(b, sizes[i][0]), sizes[i][1]);
    CHECK_U64(buddy_largest_free(b), 1024);
    ALLOC_AT(b, 16, 0);
    CHECK_U64(buddy_largest_free(b), 512);
    ALLOC_AT(b, 512, 512);
    CHECK_U64(buddy_largest_free(b), 256);
    ALLOC_AT(b, 256, 256);
    ALLOC_AT(b, 128, 128);
    ALLOC_AT(b, 64, 64);
    ALLOC_AT(b, 32, 32);
    CHECK_U64(buddy_largest_free(b), 16);
    ALLOC_AT(b, 16, 16);
    CHECK_U64(buddy_largest_free(b), 0);
    CHECK_STATUS(buddy_free(b, 512, 512), BUDDY_OK);
    CHECK_U64(buddy_largest_free(b), 512);
    buddy_destroy(b);

    /* N = 1, m = 1 */
    b = NEW_ALLOCATOR(1, 1);
    if (b != NULL) {
        CHECK_U64(buddy_block_size(b, 0), 1);
        CHECK_U64(buddy_block_size(b, 1), 1);
        CHECK_U64(buddy_block_size(b, 2), 0);
        CHECK_U64(buddy_largest_free(b), 1);
        buddy_destroy(b);
    }

    /* N = 5, m = 1: blocks of 4 exist; 8 is the root of the tree but
     * exceeds the capacity, so it can never be free: 0. */
    b = NEW_ALLOCATOR(5, 1);
    if (b != NULL) {
        CHECK_U64(buddy_block_size(b, 3), 4);
        CHECK_U64(buddy_block_size(b, 4), 4);
        CHECK_U64(buddy_block_size(b, 5), 0);
        CHECK_U64(buddy_block_size(b, 9), 0);
        CHECK_U64(buddy_largest_free(b), 4);
        buddy_destroy(b);
    }
}

static void test_close(void)
{
    buddy_t *b = NEW_ALLOCATOR(1024, 16);
    if (b == NULL)
        return;
    ALLOC_AT(b, 100, 0);
    ALLOC_AT(b, 2048, -1);
    buddy_stats_t before = *buddy_stats(b);
    uint64_t largest = buddy_largest_free(b);
    buddy_close(b);

    const buddy_stats_t *st = buddy_stats(b);
    if (!CHECK(st != NULL, "buddy_stats returned NULL after close")) {
        buddy_destroy(b);
        return;
    }
    CHECK_U64(st->closed, 1);
    before.closed = 1;
    CHECK_STATS_UNCHANGED(b, &before);
    buddy_stats_t snap;
    buddy_snapshot(b, &snap);
    CHECK(memcmp(&snap, &before, sizeof snap) == 0,
          "buddy_snapshot after close differs");
    CHECK_U64(buddy_largest_free(b), largest);
    ALLOC_AT(b, 16, -1);
    ALLOC_AT(b, 0, -1);
    ALLOC_AT(b, UINT64_MAX, -1);
    CHECK_STATUS(buddy_free(b, 0, 100), BUDDY_ECLOSED);   /* a live block */
    CHECK_STATUS(buddy_free(b, 512, 16), BUDDY_ECLOSED);  /* free memory */
    CHECK_STATUS(buddy_free(b, 4096, 16), BUDDY_ECLOSED); /* out of range */
    CHECK_STATUS(buddy_free(b, 1, 16), BUDDY_ECLOSED);
    CHECK_STATUS(buddy_probe(b, 0, 100), BUDDY_ECLOSED);
    CHECK_INVARIANTS(b);
    buddy_status s = buddy_debug_flip(b, 0, 0, 0);
    CHECK(s == BUDDY_EINVAL || s == BUDDY_ECLOSED,
          "buddy_debug_flip after close returned %s", status_name(s));
    (void)buddy_block_size(b, 100); /* must not touch released metadata */
    CHECK_STATS_UNCHANGED(b, &before);

    buddy_close(b); /* idempotent */
    CHECK_STATS_UNCHANGED(b, &before);
    CHECK_INVARIANTS(b);
    ALLOC_AT(b, 16, -1);
    buddy_destroy(b);

    buddy_close(NULL);
    buddy_destroy(NULL);

    /* closing an empty allocator, and destroying without closing */
    b = NEW_ALLOCATOR(64, 1);
    if (b != NULL) {
        buddy_close(b);
        CHECK_INVARIANTS(b);
        buddy_destroy(b);
    }
    b = NEW_ALLOCATOR(64, 1);
    if (b != NULL) {
        ALLOC_AT(b, 3, 0);
        buddy_destroy(b);
    }
}

static void test_strerror(void)
{
    const char *msgs[BUDDY_ECORRUPT + 1];
    for (int s = BUDDY_OK; s <= BUDDY_ECORRUPT; s++) {
        msgs[s] = buddy_strerror((buddy_status)s);
        CHECK(msgs[s] != NULL && msgs[s][0] != '\0',
              "buddy_strerror(%s) is empty", status_name((buddy_status)s));
        if (msgs[s] == NULL)
            return;
        for (int t = 0; t < s; t++)
            CHECK(strcmp(msgs[s], msgs[t]) != 0,
                  "%s and %s share the sentence \"%s\"",
                  status_name((buddy_status)t), status_name((buddy_status)s),
                  msgs[s]);
    }
    static const int unknown[] = {BUDDY_ECORRUPT + 1, 42, 1000, -1};
    for (size_t i = 0; i < ARRAY_LEN(unknown); i++)
        CHECK(buddy_strerror((buddy_status)unknown[i]) != NULL,
              "buddy_strerror(%d) is NULL", unknown[i]);
}

/* The bit indices tried at one order: all of them for small bitmaps, else
 * the ends and both sides of the word and summary boundaries. */
static bool flip_index_wanted(uint64_t i, uint64_t bits)
{
    if (bits <= 1024)
        return true;
    static const uint64_t edges[] = {0, 1, 2, 63, 64, 65, 127, 128, 129,
                                     4095, 4096, 4097};
    for (size_t e = 0; e < ARRAY_LEN(edges); e++)
        if (i == edges[e])
            return true;
    return i == bits / 2 || i + 2 >= bits;
}

/* Flips every bit buddy_debug_flip accepts (or a sample, for big bitmaps),
 * one at a time, in the current state of b: each flip must make buddy_check
 * fail with a sentence, and flipping back must restore it.  Returns the
 * number of bits tried. */
static uint64_t flip_every_bit(buddy_t *b, const char *state)
{
    const buddy_stats_t *st = buddy_stats(b);
    uint64_t n = st->capacity / st->min_size, tried = 0;
    buddy_stats_t before = *st;
    for (unsigned which = 0; which <= 1; which++) {
        for (unsigned k = which; k <= st->max_order; k++) {
            uint64_t bits = (n + BIT(k) - 1) >> k; /* N_k = ceil(N / 2^k) */
            for (uint64_t i = 0; i < bits; i++) {
                if (!flip_index_wanted(i, bits))
                    continue;
                buddy_status s = buddy_debug_flip(b, which, k, i);
                if (!CHECK(s == BUDDY_OK,
                           "%s: flip(%u, %u, %" PRIu64 ") returned %s", state,
                           which, k, i, status_name(s)))
                    continue;
                char msg[256] = "";
                s = buddy_check(b, msg, sizeof msg);
                CHECK(s == BUDDY_ECORRUPT && msg[0] != '\0',
                      "%s: N=%" PRIu64 ", %s bit of order %u index %" PRIu64
                      " flipped: buddy_check returned %s \"%s\"",
                      state, n, which ? "split" : "free", k, i, status_name(s),
                      msg);
                CHECK_STATUS(buddy_debug_flip(b, which, k, i), BUDDY_OK);
                if (!CHECK_INVARIANTS(b))
                    return tried;
                tried++;
            }
        }
    }
    CHECK_STATS_UNCHANGED(b, &before);
    return tried;
}

static void test_check_detects_every_flipped_bit(void)
{
    static const uint64_t counts[] = {1, 2, 13, 16, 1000, 4101};
    uint64_t total = 0;
    for (size_t ni = 0; ni < ARRAY_LEN(counts); ni++) {
        uint64_t n = counts[ni];
        buddy_t *b = NEW_ALLOCATOR(n * 16, 16);
        if (b == NULL)
            continue;
        total += flip_every_bit(b, "fresh");
        /* a mix of live, split and free blocks at several orders */
        uint64_t offs[64], sizes[64];
        unsigned live = 0;
        for (unsigned i = 0; i < 64; i++) {
            uint64_t size = 16u << (i * 7 % 5);
            int64_t off = buddy_alloc(b, size);
            if (off >= 0) {
                offs[live] = (uint64_t)off;
                sizes[live++] = size;
            }
        }
        total += flip_every_bit(b, "allocated");
        for (unsigned i = 0; i < live; i += 3)
            CHECK_STATUS(buddy_free(b, offs[i], sizes[i]), BUDDY_OK);
        total += flip_every_bit(b, "fragmented");
        while (buddy_alloc(b, 0) >= 0)
            ;
        total += flip_every_bit(b, "full");
        buddy_destroy(b);
    }
    case_note("%" PRIu64 " bit flips", total);

    /* msg handling: NULL, and short buffers always NUL-terminated */
    buddy_t *b = NEW_ALLOCATOR(1024, 16);
    if (b == NULL)
        return;
    CHECK_STATUS(buddy_debug_flip(b, 0, 3, 5), BUDDY_OK);
    CHECK_STATUS(buddy_check(b, NULL, 0), BUDDY_ECORRUPT);
    CHECK_STATUS(buddy_check(b, NULL, 100), BUDDY_ECORRUPT);
    char small[8];
    memset(small, 'x', sizeof small);
    CHECK_STATUS(buddy_check(b, small, 1), BUDDY_ECORRUPT);
    CHECK(small[0] == '\0' && small[1] == 'x', "msglen 1 not honoured");
    memset(small, 'x', sizeof small);
    CHECK_STATUS(buddy_check(b, small, sizeof small), BUDDY_ECORRUPT);
    CHECK(memchr(small, '\0', sizeof small) != NULL && small[0] != '\0',
          "short message not NUL-terminated or empty");
    CHECK_STATUS(buddy_debug_flip(b, 0, 3, 5), BUDDY_OK);
    CHECK_INVARIANTS(b);
    buddy_destroy(b);
}

static void test_debug_flip_rejects_bad_bits(void)
{
    char msg[64] = "untouched";
    CHECK_STATUS(buddy_debug_flip(NULL, 0, 0, 0), BUDDY_EINVAL);
    CHECK_STATUS(buddy_check(NULL, msg, sizeof msg), BUDDY_ECORRUPT);
    CHECK(msg[0] != '\0' && strcmp(msg, "untouched") != 0,
          "buddy_check(NULL) gave no message: \"%s\"", msg);

    buddy_t *b = NEW_ALLOCATOR(13 * 16, 16); /* N = 13, L = 4 */
    if (b == NULL)
        return;
    ALLOC_AT(b, 32, 128); /* o3@0 o2@128 o0@192: takes the order-2 block */
    buddy_stats_t before = *buddy_stats(b);
    static const struct {
        unsigned which, order;
        uint64_t index;
    } bad[] = {
        {2, 0, 0},  {UINT32_MAX, 1, 0}, {0, 5, 0},  {1, 5, 0},
        {0, 62, 0}, {0, UINT32_MAX, 0}, {1, 0, 0},  /* no split bit at 0 */
        {0, 0, 13}, {0, 1, 7},          {0, 2, 4},  {0, 3, 2},
        {0, 4, 1},  {1, 1, 7},          {1, 4, 1},  {0, 0, UINT64_MAX},
        {1, 2, UINT64_MAX},
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        buddy_status s = buddy_debug_flip(b, bad[i].which, bad[i].order,
                                          bad[i].index);
        CHECK(s == BUDDY_EINVAL,
              "flip(%u, %u, %" PRIu64 ") returned %s, want EINVAL",
              bad[i].which, bad[i].order, bad[i].index, status_name(s));
        CHECK_STATS_UNCHANGED(b, &before);
        CHECK_INVARIANTS(b);
    }
    buddy_destroy(b);
}

/* The bitmap words buddy.h's formula gives for N minimum blocks, after
 * the descriptors (which hold each tree's root level).  The summary levels
 * use ceil(ceil(x / 64^d) / 64) = ceil(x / 64^(d+1)); an order of more
 * than one word has D levels, as many as order 0 needs to reach a root of
 * at most 8 words, and an order of one word has one. */
static uint64_t header_words(uint64_t n)
{
    uint64_t words = 0;
    unsigned l = ceil_log2(n), depth = 0;
    uint64_t level = n;
    do { /* D: order 0's levels */
        level = (level + 63) / 64;
        depth++;
    } while (level > 8);
    for (unsigned k = 0; k <= l; k++) {
        uint64_t nk = (n + BIT(k) - 1) >> k; /* N_k = ceil(N / 2^k) */
        level = nk;
        unsigned levels = nk > 64 ? depth : 1;
        for (unsigned d = 0; d + 1 < levels; d++) { /* free bitmap, summaries */
            level = (level + 63) / 64;
            words += level;
        }
        if (k >= 1)
            words += (nk + 63) / 64; /* split bitmap */
    }
    return words;
}

static void test_metadata_bytes(void)
{
    static const uint64_t invalid[][2] = {
        {0, 1},   {1024, 0},  {1024, 3},   {15, 16},
        {0, 0},   {BUDDY_MAX_CAPACITY + 1, 1}, {UINT64_MAX, MiB},
        {UINT64_MAX, UINT64_MAX},
    };
    for (size_t i = 0; i < ARRAY_LEN(invalid); i++)
        CHECK(buddy_metadata_bytes(invalid[i][0], invalid[i][1]) == 0,
              "metadata_bytes(%" PRIu64 ", %" PRIu64 ") = %" PRIu64,
              invalid[i][0], invalid[i][1],
              buddy_metadata_bytes(invalid[i][0], invalid[i][1]));

    uint64_t meta = buddy_metadata_bytes(64 * MiB, 64);
    case_info("buddy_metadata_bytes(64 MiB, 64 B) = %" PRIu64
              " bytes (%.3f bits per 64 B block)",
              meta, (double)meta * 8 / (double)BIT(20));
    CHECK(meta > 0 && meta < 512 * KiB, "%" PRIu64 " bytes", meta);
    /* the figure buddy.h quotes (a BUDDY_LOCKED struct adds a mutex) */
    if (!TEST_THREADS)
        CHECK(meta == 403448, "buddy.h documents 403,448 bytes, got %" PRIu64,
              meta);

    /* buddy.h gives the bitmaps' size exactly, in 64-bit words:
     *   sum_k sum_{d<D_k} ceil(N_k / 64^(d+1))  +  sum_{k>=1} ceil(N_k / 64)
     * and bounds it by (3 + 2/63) N bits + 8 (3L + 3)(D + 1) bytes.  The
     * rest of buddy_metadata_bytes is "the struct": it may depend on L
     * (a descriptor per order) but not otherwise on N.  So the residue
     * meta - 8 words must be A + B (L + 1), with A and B read off N = 1 and
     * N = 2.  Separately, from N = 2^16 on, everything together stays
     * within 4 bits per minimum block. */
    static const uint64_t counts[] = {
        1,         2,          3,           5,          63,
        64,        65,         1000,        4095,       4096,
        4097,      BIT(16),    BIT(16) + 1, 3 * BIT(17), BIT(20) - 1,
        BIT(20),   BIT(24) + 7, 12345677,   BIT(30),    BIT(40) + 12345,
    };
    static const uint64_t mins[] = {1, 64, 4096};
    uint64_t r1 = buddy_metadata_bytes(1, 1) - 8 * header_words(1);
    uint64_t r2 = buddy_metadata_bytes(2, 1) - 8 * header_words(2);
    uint64_t per_order = r2 - r1, fixed = r1 - per_order;
    for (size_t mi = 0; mi < ARRAY_LEN(mins); mi++) {
        uint64_t m = mins[mi];
        for (size_t ni = 0; ni < ARRAY_LEN(counts); ni++) {
            uint64_t n = counts[ni];
            uint64_t got = buddy_metadata_bytes(n * m, m);
            uint64_t words = header_words(n);
            unsigned l = ceil_log2(n), d = 0;
            for (uint64_t p = 1; p < n; p *= 64)
                d++;
            CHECK(got == 8 * words + fixed + per_order * (l + 1),
                  "N=%" PRIu64 " m=%" PRIu64 ": %" PRIu64 " bytes, want %"
                  PRIu64 " words of bitmaps + %" PRIu64 " + %" PRIu64
                  " per order",
                  n, m, got, words, fixed, per_order);
            CHECK(8 * words <= (191 * n + 503) / 504 /* (3+2/63)N/8 */
                                   + 8 * (3 * (uint64_t)l + 3) * (d + 1),
                  "buddy.h's bound fails for N=%" PRIu64, n);
            if (n >= BIT(16))
                CHECK(got <= n / 2, "N=%" PRIu64 " m=%" PRIu64 ": %" PRIu64
                      " bytes is over 4 bits per block", n, m, got);
            CHECK(buddy_metadata_bytes(n * m + m - 1, m) == got,
                  "capacity rounding changes metadata_bytes (N=%" PRIu64 ")",
                  n);
        }
    }
    /* never shrinks as the arena grows */
    uint64_t prev = 0;
    for (uint64_t n = 1; n <= 5000; n++) {
        uint64_t got = buddy_metadata_bytes(n * 64, 64);
        if (!CHECK(got >= prev, "N=%" PRIu64 ": %" PRIu64 " < %" PRIu64, n,
                   got, prev))
            break;
        prev = got;
    }
}

/* Resident set size in bytes, or 0 if /proc is not available. */
static uint64_t resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, resident = 0;
    if (f == NULL)
        return 0;
    int n = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    return n == 2 && page > 0 ? (uint64_t)resident * (uint64_t)page : 0;
}

/* 16 GiB of 64-byte blocks: ~100 MB of metadata that must be committed
 * only as it is touched, so creation is fast and cheap. */
static void test_huge_arena_is_lazy(void)
{
    /* (buddy_check is O(N) and would touch all the metadata: not here.) */
    uint64_t meta = buddy_metadata_bytes(16 * GiB, 64);
    uint64_t rss0 = resident_bytes();
    double t0 = now_seconds();
    buddy_t *b = NEW_ALLOCATOR(16 * GiB, 64);
    double created = now_seconds() - t0;
    if (b == NULL)
        return;
    CHECK(created < 0.5, "buddy_new(16 GiB, 64) took %.3f s", created);
    CHECK_U64(buddy_stats(b)->max_order, 28);
    ALLOC_AT(b, 64, 0);
    ALLOC_AT(b, GiB, (int64_t)GiB);
    ALLOC_AT(b, 8 * GiB, (int64_t)(8 * GiB));
    ALLOC_AT(b, 16 * GiB, -1);
    ALLOC_AT(b, 100, 128);
    CHECK_U64(buddy_largest_free(b), 4 * GiB);
    CHECK_STATUS(buddy_free(b, 8 * GiB, 8 * GiB), BUDDY_OK);
    CHECK_STATUS(buddy_free(b, 0, 64), BUDDY_OK);
    CHECK_STATUS(buddy_free(b, GiB, GiB), BUDDY_OK);
    CHECK_STATUS(buddy_free(b, 128, 100), BUDDY_OK);
    CHECK_STATUS(buddy_free(b, 128, 100), BUDDY_EFREE);
    CHECK_U64(buddy_largest_free(b), 16 * GiB);
    CHECK_U64(buddy_stats(b)->free_blocks[28], 1);
    uint64_t rss1 = resident_bytes();
    double total = now_seconds() - t0;
    buddy_destroy(b);
    uint64_t grown = rss1 > rss0 ? rss1 - rss0 : 0;
    case_note("metadata %" PRIu64 " MB, created in %.1f ms, RSS +%" PRIu64
              " KiB",
              meta / 1000000, created * 1000, grown / 1024);
    if (rss0 != 0 && !UNDER_TSAN)
        CHECK(grown < meta / 4, "RSS grew by %" PRIu64 " of %" PRIu64
              " bytes of metadata: not committed lazily", grown, meta);
    CHECK(total < 1.0, "16 GiB case took %.3f s", total);
}

static void test_arena_alloc(void)
{
    static const uint64_t sizes[] = {1,    63,   64,     100,     4095,
                                     4096, 4097, 65536,  MiB + 1, GiB};
    for (size_t i = 0; i < ARRAY_LEN(sizes); i++) {
        uint64_t size = sizes[i], align = 64;
        while (align * 2 <= size)
            align *= 2; /* the largest power of two <= size, at least 64 */
        unsigned char *p = buddy_arena_alloc(size);
        if (!CHECK(p != NULL, "buddy_arena_alloc(%" PRIu64 ") is NULL", size))
            continue;
        CHECK((uintptr_t)p % align == 0,
              "buddy_arena_alloc(%" PRIu64 ") = %p is not %" PRIu64
              "-aligned", size, (void *)p, align);
        /* the memory is ours: touch the ends (all of it when small) */
        if (size <= MiB + 1)
            memset(p, 0xA5, (size_t)size);
        p[size - 1] = 2;
        p[0] = 1;
        CHECK(p[0] == 1 && (size == 1 || p[size - 1] == 2),
              "arena memory does not hold");
        buddy_arena_free(p, size);
    }
    static const uint64_t absurd[] = {0, BIT(62), BIT(63), UINT64_MAX};
    for (size_t i = 0; i < ARRAY_LEN(absurd); i++) {
        void *p = buddy_arena_alloc(absurd[i]);
        CHECK(p == NULL, "buddy_arena_alloc(%" PRIu64 ") is not NULL",
              absurd[i]);
        if (p != NULL)
            buddy_arena_free(p, absurd[i]);
    }
}

/* ==== reference model ==================================================== */

/*
 * A deliberately naive implementation of the placement policy of buddy.h:
 * for each order k a sorted array of the indices (offset / (m 2^k)) of its
 * free blocks.  Alloc takes the first entry of the lowest non-empty order
 * >= k and splits by hand; free looks for the buddy by linear search and
 * merges while it finds it.  Blocks past N are never in a list, so nothing
 * ever merges into the tail of the tree.  O(n) per call, and obviously so.
 */
typedef struct model {
    uint64_t m, n, capacity;
    unsigned max_order; /* L */
    uint64_t *free_idx[BUDDY_MAX_ORDER + 1];
    size_t free_count[BUDDY_MAX_ORDER + 1];
    uint64_t bytes_requested, bytes_in_blocks, live_blocks;
    uint64_t alloc_calls, free_calls, failed_allocs;
} model;

static void model_insert(model *md, unsigned k, uint64_t idx)
{
    uint64_t *list = md->free_idx[k];
    size_t pos = md->free_count[k];
    while (pos > 0 && list[pos - 1] > idx) {
        list[pos] = list[pos - 1];
        pos--;
    }
    list[pos] = idx;
    md->free_count[k]++;
}

static void model_remove_at(model *md, unsigned k, size_t pos)
{
    uint64_t *list = md->free_idx[k];
    memmove(&list[pos], &list[pos + 1],
            (md->free_count[k] - pos - 1) * sizeof *list);
    md->free_count[k]--;
}

static bool model_init(model *md, uint64_t capacity, uint64_t m)
{
    memset(md, 0, sizeof *md);
    md->m = m;
    md->n = capacity / m;
    md->capacity = md->n * m;
    md->max_order = ceil_log2(md->n);
    for (unsigned k = 0; k <= md->max_order; k++) {
        /* at most floor(N / 2^k) blocks of order k lie inside the arena */
        md->free_idx[k] = calloc((size_t)(md->n >> k) + 1, sizeof(uint64_t));
        if (md->free_idx[k] == NULL)
            return false;
    }
    uint64_t pos = 0; /* in minimum blocks: largest blocks first */
    for (unsigned k = md->max_order + 1; k-- > 0;) {
        if ((md->n >> k) & 1) {
            model_insert(md, k, pos >> k);
            pos += BIT(k);
        }
    }
    return true;
}

static void model_fini(model *md)
{
    for (unsigned k = 0; k <= BUDDY_MAX_ORDER; k++)
        free(md->free_idx[k]);
}

static int64_t model_alloc(model *md, uint64_t size)
{
    unsigned k = order_for(size, md->m), j = k;
    while (j <= md->max_order && md->free_count[j] == 0)
        j++;
    if (j > md->max_order) {
        md->failed_allocs++;
        return -1;
    }
    uint64_t idx = md->free_idx[j][0]; /* lowest offset */
    model_remove_at(md, j, 0);
    while (j > k) { /* keep the lower half, free the upper one */
        j--;
        idx *= 2;
        model_insert(md, j, idx + 1);
    }
    md->bytes_requested += size;
    md->bytes_in_blocks += md->m << k;
    md->live_blocks++;
    md->alloc_calls++;
    return (int64_t)(idx * (md->m << k));
}

static void model_free(model *md, uint64_t offset, uint64_t size,
                       unsigned k)
{
    md->bytes_requested -= size;
    md->bytes_in_blocks -= md->m << k;
    md->live_blocks--;
    md->free_calls++;
    uint64_t idx = offset / (md->m << k);
    while (k < md->max_order) {
        size_t pos = 0;
        while (pos < md->free_count[k] && md->free_idx[k][pos] != (idx ^ 1))
            pos++;
        if (pos == md->free_count[k])
            break; /* the buddy is not free */
        model_remove_at(md, k, pos);
        idx /= 2;
        k++;
    }
    model_insert(md, k, idx);
}

static uint64_t model_largest_free(const model *md)
{
    for (unsigned k = md->max_order + 1; k-- > 0;)
        if (md->free_count[k] > 0)
            return md->m << k;
    return 0;
}

/* Every counter of buddy_stats() against the model. */
static bool stats_match_model(const buddy_t *b, const model *md)
{
    const buddy_stats_t *st = buddy_stats(b);
    int ok = 1;
    ok &= CHECK_U64(st->capacity, md->capacity);
    ok &= CHECK_U64(st->min_size, md->m);
    ok &= CHECK_U64(st->max_order, md->max_order);
    ok &= CHECK_U64(st->closed, 0);
    ok &= CHECK_U64(st->bytes_requested, md->bytes_requested);
    ok &= CHECK_U64(st->bytes_in_blocks, md->bytes_in_blocks);
    ok &= CHECK_U64(st->live_blocks, md->live_blocks);
    ok &= CHECK_U64(st->alloc_calls, md->alloc_calls);
    ok &= CHECK_U64(st->free_calls, md->free_calls);
    ok &= CHECK_U64(st->failed_allocs, md->failed_allocs);
    for (unsigned k = 0; k <= BUDDY_MAX_ORDER; k++) {
        uint64_t want = k <= md->max_order ? md->free_count[k] : 0;
        ok &= CHECK(st->free_blocks[k] == want,
                    "free_blocks[%u] = %" PRIu64 ", model %" PRIu64, k,
                    st->free_blocks[k], want);
    }
    ok &= CHECK_U64(buddy_largest_free(b), model_largest_free(md));
    buddy_stats_t snap;
    buddy_snapshot(b, &snap);
    ok &= CHECK(memcmp(&snap, st, sizeof snap) == 0,
                "buddy_snapshot differs from buddy_stats");
    return ok;
}

/* ==== ledger: the live blocks and who owns each minimum block ============ */

typedef struct live_block {
    uint64_t offset, size;
    unsigned order;
} live_block;

enum { FREED_RING = 8 };

typedef struct ledger {
    uint64_t m, n;
    live_block *live;   /* live blocks, in no particular order */
    size_t count;
    uint32_t *owner;    /* per minimum block: 1 + index into live, 0 free */
    live_block freed[FREED_RING]; /* recently freed, for double frees */
    unsigned freed_count;
} ledger;

static bool ledger_init(ledger *lg, uint64_t n, uint64_t m)
{
    memset(lg, 0, sizeof *lg);
    lg->m = m;
    lg->n = n;
    lg->live = calloc((size_t)n, sizeof *lg->live);
    lg->owner = calloc((size_t)n, sizeof *lg->owner);
    return lg->live != NULL && lg->owner != NULL;
}

static void ledger_fini(ledger *lg)
{
    free(lg->live);
    free(lg->owner);
}

static void ledger_mark(ledger *lg, const live_block *lb, uint32_t who)
{
    uint64_t first = lb->offset / lg->m, count = BIT(lb->order);
    for (uint64_t i = 0; i < count; i++)
        lg->owner[first + i] = who;
}

/* Records a block the core handed out, after checking that it is naturally
 * aligned, inside the arena and overlaps no live block. */
static bool ledger_add(ledger *lg, uint64_t offset, uint64_t size,
                       unsigned order)
{
    uint64_t block = lg->m << order;
    if (!CHECK(offset % block == 0 && offset / lg->m + BIT(order) <= lg->n,
               "block at %" PRIu64 " of %" PRIu64
               " bytes is misaligned or past the arena",
               offset, block))
        return false;
    for (uint64_t i = 0; i < BIT(order); i++)
        if (!CHECK(lg->owner[offset / lg->m + i] == 0,
                   "block at %" PRIu64 " overlaps the live block at %" PRIu64,
                   offset, lg->live[lg->owner[offset / lg->m + i] - 1].offset))
            return false;
    live_block lb = {offset, size, order};
    lg->live[lg->count] = lb;
    ledger_mark(lg, &lb, (uint32_t)(lg->count + 1));
    lg->count++;
    return true;
}

static void ledger_remove(ledger *lg, size_t slot)
{
    live_block gone = lg->live[slot];
    ledger_mark(lg, &gone, 0);
    lg->freed[lg->freed_count++ % FREED_RING] = gone;
    lg->count--;
    if (slot != lg->count) {
        lg->live[slot] = lg->live[lg->count];
        ledger_mark(lg, &lg->live[slot], (uint32_t)(slot + 1));
    }
}

/* What buddy_free(offset, size) must return in the current state.  Offsets
 * at or past capacity must be multiples of m (which of ERANGE and EALIGN
 * wins otherwise is not specified, so the trace never asks). */
static buddy_status ledger_expect_free(const ledger *lg, uint64_t offset,
                                       uint64_t size)
{
    if (offset >= lg->n * lg->m)
        return BUDDY_ERANGE;
    if (offset % lg->m != 0)
        return BUDDY_EALIGN;
    uint32_t who = lg->owner[offset / lg->m];
    if (who == 0)
        return BUDDY_EFREE;
    const live_block *lb = &lg->live[who - 1];
    if (lb->offset != offset)
        return BUDDY_EINTERIOR;
    if (order_for(size, lg->m) != lb->order)
        return BUDDY_ESIZE;
    return BUDDY_OK;
}

/* ==== randomized traces ================================================== */

typedef struct trace_config {
    const char *name;
    uint64_t capacity; /* as passed to buddy_new: rounded down by the core */
    uint64_t min_size;
    unsigned max_size_log2; /* requests up to 2^this bytes; 0: capacity */
    unsigned steps;
} trace_config;

/* buddy_check after every step costs O(N): the step counts keep the whole
 * run near ten seconds under ASan. */
static const trace_config TRACES[] = {
    {"trace_pow2_m1", 4096, 1, 0, 25000},
    {"trace_odd_m1", 1000, 1, 0, 40000},
    {"trace_small_m1", 300, 1, 0, 10000},
    {"trace_tiny_m1", 1, 1, 0, 3000},
    {"trace_three_m16", 3 * 16 + 9, 16, 0, 5000},
    {"trace_pow2_m16", 4096 * 16, 16, 0, 20000},
    {"trace_dense_m16", 4095 * 16 + 5, 16, 8, 20000},
    {"trace_odd_m64", 777 * 64 + 13, 64, 0, 40000},
    {"trace_pow2_m64", 1024 * 64, 64, 0, 30000},
    {"trace_prime_m1", 12289, 1, 0, 6000},
    {"trace_big_m64", 65536 * 64, 64, 0, 2000},
};

typedef struct trace {
    buddy_t *b;
    model md;
    ledger lg;
    rng r;
    unsigned max_size_log2; /* from the configuration */
    unsigned alloc_percent; /* of the non-wrong steps, changes by phase */
    char op[128];           /* the call being checked, for failure reports */
    uint64_t peak_live, refused, hits[BUDDY_ECORRUPT + 1];
} trace;

/* A request size: mostly log-uniform over [1, capacity], sometimes 0,
 * sometimes larger than any block. */
static uint64_t trace_alloc_size(trace *t)
{
    uint64_t roll = rng_below(&t->r, 100);
    if (roll < 4)
        return 0;
    if (roll < 8) {
        const uint64_t big[] = {
            t->md.m << (t->md.max_order + 1), (t->md.m << t->md.max_order) + 1,
            t->md.capacity + 1, BIT(62) + 1, BIT(63), UINT64_MAX,
        };
        return big[rng_below(&t->r, ARRAY_LEN(big))];
    }
    unsigned top = t->max_size_log2 ? t->max_size_log2
                                    : floor_log2(t->md.capacity) + 1;
    unsigned e = (unsigned)rng_below(&t->r, top);
    return BIT(e) + rng_below(&t->r, BIT(e));
}

static bool trace_alloc(trace *t)
{
    uint64_t size = trace_alloc_size(t);
    unsigned k = order_for(size, t->md.m);
    snprintf(t->op, sizeof t->op, "buddy_alloc(b, %" PRIu64 ")", size);

    /* buddy_block_size: exact unless the order is the tree's root past the
     * arena, where the header allows 0 or the root's size. */
    uint64_t bs = buddy_block_size(t->b, size);
    if (k <= floor_log2(t->md.n)) {
        if (!CHECK_U64(bs, t->md.m << k))
            return false;
    } else if (k > t->md.max_order) {
        if (!CHECK_U64(bs, 0))
            return false;
    } else if (!CHECK(bs == 0 || bs == t->md.m << k,
                      "block_size(%" PRIu64 ") = %" PRIu64, size, bs)) {
        return false;
    }

    int64_t want = model_alloc(&t->md, size);
    int64_t got = buddy_alloc(t->b, size);
    if (!CHECK_I64(got, want))
        return false;
    if (got < 0) {
        t->refused++;
        return true;
    }
    if (!ledger_add(&t->lg, (uint64_t)got, size, k))
        return false;
    if (t->lg.count > t->peak_live)
        t->peak_live = t->lg.count;
    return true;
}

static bool trace_free(trace *t)
{
    size_t slot = (size_t)rng_below(&t->r, t->lg.count);
    live_block lb = t->lg.live[slot];
    snprintf(t->op, sizeof t->op, "buddy_free(b, %" PRIu64 ", %" PRIu64 ")",
             lb.offset, lb.size);
    buddy_stats_t before = *buddy_stats(t->b);
    if (!CHECK_STATUS(buddy_probe(t->b, lb.offset, lb.size), BUDDY_OK) ||
        !CHECK_STATS_UNCHANGED(t->b, &before) ||
        !CHECK_STATUS(buddy_free(t->b, lb.offset, lb.size), BUDDY_OK))
        return false;
    model_free(&t->md, lb.offset, lb.size, lb.order);
    ledger_remove(&t->lg, slot);
    return true;
}

/* A size whose order differs from `order` (or that fits no block). */
static uint64_t trace_other_size(trace *t, unsigned order)
{
    unsigned j = (unsigned)rng_below(&t->r, t->md.max_order + 3);
    if (j == order || j > t->md.max_order + 1)
        return rng_below(&t->r, 2) ? UINT64_MAX : BIT(63) + 1;
    uint64_t top = t->md.m << j; /* sizes in (top/2, top] take order j */
    return j == 0 ? rng_below(&t->r, top + 1)
                  : top / 2 + 1 + rng_below(&t->r, top / 2);
}

/* Builds a free that must fail: out of range, misaligned, interior, wrong
 * size, double free, or just random.  The expected status always comes from
 * the ledger, never from the intent. */
static void trace_pick_wrong_free(trace *t, uint64_t *offset, uint64_t *size)
{
    const ledger *lg = &t->lg;
    uint64_t m = t->md.m, cap = t->md.capacity;
    const live_block *lb =
        lg->count ? &lg->live[rng_below(&t->r, lg->count)] : NULL;
    *size = trace_alloc_size(t);
    switch (rng_below(&t->r, 6)) {
    case 0: { /* ERANGE, always a multiple of m */
        const uint64_t far[] = {cap, cap + m * rng_below(&t->r, 8),
                                t->md.m << t->md.max_order, BIT(63),
                                UINT64_MAX & ~(m - 1)};
        *offset = far[rng_below(&t->r, ARRAY_LEN(far))];
        break;
    }
    case 1: /* EALIGN (the offset is aligned when m = 1) */
        *offset = rng_below(&t->r, t->md.n) * m +
                  (m > 1 ? 1 + rng_below(&t->r, m - 1) : 0);
        break;
    case 2: /* EINTERIOR */
        if (lb != NULL && lb->order > 0) {
            *offset = lb->offset + m * (1 + rng_below(&t->r, BIT(lb->order) - 1));
            break;
        }
        /* fall through */
    case 3: /* ESIZE */
        if (lb != NULL) {
            *offset = lb->offset;
            *size = trace_other_size(t, lb->order);
            break;
        }
        /* fall through */
    case 4: /* EFREE: a recently freed block, or any offset in free memory */
        if (lg->freed_count > 0 && rng_below(&t->r, 2)) {
            unsigned n = lg->freed_count < FREED_RING ? lg->freed_count
                                                      : FREED_RING;
            const live_block *gone = &lg->freed[rng_below(&t->r, n)];
            *offset = gone->offset;
            *size = gone->size;
            break;
        }
        *offset = rng_below(&t->r, t->md.n) * m;
        break;
    default: /* anything inside the arena, or aligned just past it */
        *offset = rng_below(&t->r, cap + 4 * m);
        if (*offset >= cap)
            *offset -= *offset % m;
        break;
    }
}

static bool trace_wrong_free(trace *t)
{
    uint64_t offset, size;
    trace_pick_wrong_free(t, &offset, &size);
    buddy_status want = ledger_expect_free(&t->lg, offset, size);
    if (want == BUDDY_OK)
        return true; /* happened to pick a valid free: not this step's job */
    t->hits[want]++;
    snprintf(t->op, sizeof t->op, "buddy_free(b, %" PRIu64 ", %" PRIu64 ")",
             offset, size);
    buddy_stats_t before = *buddy_stats(t->b);
    return CHECK_STATUS(buddy_probe(t->b, offset, size), want) &&
           CHECK_STATUS(buddy_free(t->b, offset, size), want) &&
           CHECK_STATS_UNCHANGED(t->b, &before);
}

static bool trace_step(trace *t, unsigned step)
{
    static const unsigned phases[] = {20, 45, 60, 90};
    if (step % 1024 == 0) /* alternate filling and draining phases */
        t->alloc_percent = phases[rng_below(&t->r, ARRAY_LEN(phases))];
    bool ok;
    if (rng_below(&t->r, 100) < 12)
        ok = trace_wrong_free(t);
    else if (t->lg.count == 0 || rng_below(&t->r, 100) < t->alloc_percent)
        ok = trace_alloc(t);
    else
        ok = trace_free(t);
    return ok && CHECK_INVARIANTS(t->b) && stats_match_model(t->b, &t->md);
}

static void run_trace(const trace_config *cfg, uint64_t seed)
{
    trace t;
    memset(&t, 0, sizeof t);
    t.r.state = seed;
    t.max_size_log2 = cfg->max_size_log2;
    t.b = NEW_ALLOCATOR(cfg->capacity, cfg->min_size);
    if (t.b == NULL)
        return;
    if (!CHECK(model_init(&t.md, cfg->capacity, cfg->min_size) &&
                   ledger_init(&t.lg, t.md.n, t.md.m),
               "out of memory"))
        goto done;
    if (!CHECK_INVARIANTS(t.b) || !stats_match_model(t.b, &t.md))
        goto done;

    unsigned step, steps = cfg->steps / TRACE_STEP_DIVISOR;
    for (step = 0; step < steps; step++) {
        if (!trace_step(&t, step)) {
            printf("    step %u: %s (trace seed 0x%016" PRIx64 ")\n", step,
                   t.op, seed);
            goto done;
        }
    }
    /* drain: everything must merge back into the fresh tiling */
    while (t.lg.count > 0) {
        if (!trace_free(&t) || !CHECK_INVARIANTS(t.b) ||
            !stats_match_model(t.b, &t.md)) {
            printf("    drain: %s\n", t.op);
            goto done;
        }
    }
    CHECK_FRESH_STATS(t.b, t.md.capacity, t.md.m);
    case_note("N=%" PRIu64 " m=%" PRIu64 ", %u steps, peak %" PRIu64
              " live, %" PRIu64 " refused; wrong frees: %" PRIu64
              " ERANGE %" PRIu64 " EALIGN %" PRIu64 " EINTERIOR %" PRIu64
              " ESIZE %" PRIu64 " EFREE",
              t.md.n, t.md.m, step, t.peak_live, t.refused,
              t.hits[BUDDY_ERANGE], t.hits[BUDDY_EALIGN],
              t.hits[BUDDY_EINTERIOR], t.hits[BUDDY_ESIZE],
              t.hits[BUDDY_EFREE]);
done:
    buddy_destroy(t.b);
    ledger_fini(&t.lg);
    model_fini(&t.md);
}

/* ==== threads (BUDDY_LOCKED builds only) ================================= */

#if TEST_THREADS

enum { WORKERS = 4, WORKER_SLOTS = 48, WORKER_OPS = 25000 };

/* Each worker allocates and frees its own blocks in one shared allocator.
 * A shared byte map (one atomic byte per minimum block) proves that no two
 * live blocks ever overlap, across threads. */
typedef struct worker {
    pthread_t thread;
    buddy_t *b;
    _Atomic unsigned char *owner;
    uint64_t m, capacity;
    unsigned char id; /* 1..WORKERS */
    uint64_t seed;
    uint64_t allocs, frees, refused, errors;
    char first_error[160];
} worker;

__attribute__((format(printf, 2, 3)))
static void worker_error(worker *w, const char *fmt, ...)
{
    if (w->errors++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->first_error, sizeof w->first_error, fmt, ap);
        va_end(ap);
    }
}

/* Moves the minimum blocks of [offset, offset + len) from owner `from` to
 * `to`; false if any of them was not `from`. */
static bool worker_claim(worker *w, uint64_t offset, uint64_t len,
                         unsigned char from, unsigned char to)
{
    if (len == 0 || offset >= w->capacity || len > w->capacity - offset)
        return false;
    for (uint64_t i = offset / w->m; i < (offset + len) / w->m; i++) {
        unsigned char expect = from;
        if (!atomic_compare_exchange_strong(&w->owner[i], &expect, to))
            return false;
    }
    return true;
}

/* A snapshot taken while other threads allocate must still be one instant:
 * live and free blocks tile the arena, and the counters agree. */
static void worker_check_snapshot(worker *w)
{
    buddy_stats_t st;
    buddy_snapshot(w->b, &st);
    uint64_t free_bytes = 0;
    for (unsigned k = 0; k <= BUDDY_MAX_ORDER; k++)
        free_bytes += st.free_blocks[k] * (w->m << k);
    if (free_bytes + st.bytes_in_blocks != st.capacity ||
        st.live_blocks != st.alloc_calls - st.free_calls)
        worker_error(w, "inconsistent snapshot: %" PRIu64 " free + %" PRIu64
                     " in blocks, %" PRIu64 " live of %" PRIu64 " - %" PRIu64,
                     free_bytes, st.bytes_in_blocks, st.live_blocks,
                     st.alloc_calls, st.free_calls);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    rng r = {w->seed};
    uint64_t off[WORKER_SLOTS], size[WORKER_SLOTS];
    bool used[WORKER_SLOTS] = {false};
    for (unsigned op = 0; op < WORKER_OPS + WORKER_SLOTS; op++) {
        unsigned s = (unsigned)(op < WORKER_OPS ? rng_below(&r, WORKER_SLOTS)
                                                : op - WORKER_OPS);
        if (used[s]) {
            uint64_t block = buddy_block_size(w->b, size[s]);
            /* wrong frees of our own live block: nobody else can change
             * their answer */
            if (block > w->m &&
                buddy_free(w->b, off[s] + w->m, size[s]) != BUDDY_EINTERIOR)
                worker_error(w, "interior free of %" PRIu64 " not refused",
                             off[s]);
            if (buddy_free(w->b, off[s], UINT64_MAX) != BUDDY_ESIZE)
                worker_error(w, "wrong-size free of %" PRIu64 " not refused",
                             off[s]);
            if (!worker_claim(w, off[s], block, w->id, 0))
                worker_error(w, "block at %" PRIu64 " was taken over", off[s]);
            buddy_status st = buddy_free(w->b, off[s], size[s]);
            if (st != BUDDY_OK)
                worker_error(w, "free(%" PRIu64 ", %" PRIu64 ") = %s", off[s],
                             size[s], status_name(st));
            used[s] = false;
            w->frees++;
        } else if (op < WORKER_OPS) {
            unsigned e = (unsigned)rng_below(&r, 15);
            uint64_t want = rng_below(&r, BIT(e) + 1);
            int64_t got = buddy_alloc(w->b, want);
            if (got < 0) {
                w->refused++;
                continue;
            }
            uint64_t block = buddy_block_size(w->b, want);
            if (block == 0 || (uint64_t)got % block != 0)
                worker_error(w, "alloc(%" PRIu64 ") = %" PRId64
                             " is misaligned", want, got);
            if (!worker_claim(w, (uint64_t)got, block, 0, w->id))
                worker_error(w, "alloc(%" PRIu64 ") = %" PRId64
                             " overlaps a live block", want, got);
            off[s] = (uint64_t)got;
            size[s] = want;
            used[s] = true;
            w->allocs++;
        }
        if (op % 1000 == 999) {
            char msg[256];
            if (buddy_check(w->b, msg, sizeof msg) != BUDDY_OK)
                worker_error(w, "buddy_check: %s", msg);
            (void)buddy_largest_free(w->b);
        }
        if (op % 100 == 0)
            worker_check_snapshot(w);
    }
    return NULL;
}

static void test_threads_share_one_allocator(void)
{
    /* small enough that the workers run out of space now and then */
    const uint64_t capacity = 256 * KiB, m = 64, n = capacity / m;
    buddy_t *b = NEW_ALLOCATOR(capacity, m);
    _Atomic unsigned char *owner = calloc((size_t)n, sizeof *owner);
    worker w[WORKERS];
    unsigned started = 0;
    if (b == NULL || !CHECK(owner != NULL, "out of memory"))
        goto done;
    for (; started < WORKERS; started++) {
        worker *wk = &w[started];
        memset(wk, 0, sizeof *wk);
        wk->b = b;
        wk->owner = owner;
        wk->m = m;
        wk->capacity = capacity;
        wk->id = (unsigned char)(started + 1);
        wk->seed = 0x1234567u * (started + 1);
        if (!CHECK(pthread_create(&wk->thread, NULL, worker_main, wk) == 0,
                   "pthread_create failed"))
            break;
    }
    uint64_t allocs = 0, frees = 0, refused = 0;
    for (unsigned i = 0; i < started; i++) {
        pthread_join(w[i].thread, NULL);
        CHECK(w[i].errors == 0, "worker %u: %" PRIu64 " errors, first: %s",
              i + 1, w[i].errors, w[i].first_error);
        allocs += w[i].allocs;
        frees += w[i].frees;
        refused += w[i].refused;
    }
    const buddy_stats_t *st = buddy_stats(b);
    CHECK_INVARIANTS(b);
    CHECK_U64(st->alloc_calls, allocs);
    CHECK_U64(st->free_calls, frees);
    CHECK_U64(st->failed_allocs, refused);
    CHECK_U64(allocs, frees);
    CHECK_FRESH_STATS(b, capacity, m);
    case_note("%u threads, %" PRIu64 " allocs, %" PRIu64 " refused", WORKERS,
              allocs, refused);
done:
    free(owner);
    buddy_destroy(b);
}

#endif /* TEST_THREADS */

/* ==== driver ============================================================= */

typedef struct test_case {
    const char *name;
    void (*run)(void);
} test_case;

static const test_case CASES[] = {
    {"new_rejects_bad_arguments", test_new_rejects_bad_arguments},
    {"new_enomem_leaves_out_untouched", test_new_enomem_leaves_out_untouched},
    {"new_rounds_capacity_down", test_new_rounds_capacity_down},
    {"odd_capacities_hand_out_exactly_capacity",
     test_odd_capacities_hand_out_exactly_capacity},
    {"placement_policy", test_placement_policy},
    {"lowest_offset_at_every_summary_depth", test_lowest_offset_at_every_summary_depth},
    {"natural_alignment", test_natural_alignment},
    {"alloc_zero_takes_a_min_block", test_alloc_zero_takes_a_min_block},
    {"too_big_fails", test_too_big_fails},
    {"free_errors_change_nothing", test_free_errors_change_nothing},
    {"pending_split_frees", test_pending_split_frees},
    {"pending_split_cancel_counts", test_pending_split_cancel_counts},
    {"aligned_blocks", test_aligned_blocks},
    {"resize_in_place", test_resize_in_place},
    {"resize_random", test_resize_random},
    {"alloc_congruent", test_alloc_congruent},
    {"stats_counters", test_stats_counters},
    {"free_with_another_size_of_the_block",
     test_free_with_another_size_of_the_block},
    {"largest_free_and_block_size", test_largest_free_and_block_size},
    {"close", test_close},
    {"strerror", test_strerror},
    {"check_detects_every_flipped_bit", test_check_detects_every_flipped_bit},
    {"debug_flip_rejects_bad_bits", test_debug_flip_rejects_bad_bits},
    {"metadata_bytes", test_metadata_bytes},
    {"huge_arena_is_lazy", test_huge_arena_is_lazy},
    {"arena_alloc", test_arena_alloc},
#if TEST_THREADS
    {"threads_share_one_allocator", test_threads_share_one_allocator},
#endif
};

static bool selected(const char *name, int nfilters, char **filters)
{
    if (nfilters == 0)
        return true;
    for (int i = 0; i < nfilters; i++)
        if (strstr(name, filters[i]) != NULL)
            return true;
    return false;
}

int main(int argc, char **argv)
{
    uint64_t seed = 0x5eed0000b0dd1e5u;
    int first = 1;
    if (argc > 2 && strcmp(argv[1], "-s") == 0) {
        seed = strtoull(argv[2], NULL, 0);
        first = 3;
    }
    int nfilters = argc - first;
    char **filters = argv + first;
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("test_buddy: seed 0x%016" PRIx64 " (repeat with -s 0x%" PRIx64
           ")%s\n",
           seed, seed, TEST_THREADS ? ", BUDDY_LOCKED" : "");

    double t0 = now_seconds();
    for (size_t i = 0; i < ARRAY_LEN(CASES); i++) {
        if (!selected(CASES[i].name, nfilters, filters))
            continue;
        case_begin();
        CASES[i].run();
        case_end(CASES[i].name);
    }
    for (size_t i = 0; i < ARRAY_LEN(TRACES); i++) {
        if (!selected(TRACES[i].name, nfilters, filters))
            continue;
        rng r = {seed ^ (0x9e3779b97f4a7c15u * (i + 1))};
        case_begin();
        run_trace(&TRACES[i], rng_next(&r));
        case_end(TRACES[i].name);
    }
    printf("# %.1f s in all\n", now_seconds() - t0);
    printf("%u passed, %u failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}

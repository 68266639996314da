/*
 * test_pool.c -- the binding's pool layer (csrc/pool.h) under the sanitizers.
 *
 *     make -C tests/c check     (builds and runs it after test_buddy)
 *
 * A randomized trace against a plain array of live blocks: every alloc is
 * recorded, every free is checked against the record (right length frees,
 * any other length, offset or a second free is refused and changes
 * nothing), and buddy_check() runs on the core after every step.  The
 * arena is real memory but the pool never touches it.  Ends with a line
 * "N passed, N failed"; exit status 0 only if nothing failed.
 */
#include "pool.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

typedef struct live {
    uint64_t off, size;
} live_t;

static void run(const char *name, void (*fn)(void)) { run_with(name, fn, NULL); }

static void expect_same_stats(alloc_pool_t *p, const buddy_stats_t *before,
                              const char *what)
{
    buddy_stats_t now;
    buddy_snapshot(pool_core(p), &now);
    CHECK(memcmp(&now, before, sizeof now) == 0, "%s changed the stats", what);
}

static void trace(uint64_t capacity, uint64_t min_size, int steps, int table_only)
{
    char *arena = malloc(capacity);
    alloc_pool_t *p = NULL;
    CHECK(arena && pool_new(capacity, min_size, (uintptr_t)arena, &p) == BUDDY_OK,
          "pool_new failed");
    if (p == NULL) {
        free(arena);
        return;
    }
    CHECK(pool_record_bytes(p) > 0, "a small pool has a request array");
    if (table_only)
        CHECK(pool_debug_table_only(p) == BUDDY_OK && pool_record_bytes(p) == 0,
              "table-only mode");
    live_t *lv = calloc(capacity / min_size + 1, sizeof *lv);
    uint64_t n = 0, peak = 0, requested = 0;
    char msg[256];
    int failed_before = g_failed_checks; /* (a trace stops after 20 failures) */
    for (int step = 0; step < steps; step++) {
        uint64_t r = rnd() % 8;
        buddy_stats_t before;
        buddy_snapshot(pool_core(p), &before);
        if (r < 5 || n == 0) { /* alloc a small size, sometimes 0 */
            uint64_t top = rnd() % 6 + 5; /* sizes up to capacity/32 .. /1024 */
            uint64_t size = rnd() % 16 == 0 ? 0 : rnd() % ((capacity >> top) + 1);
            int64_t off = pool_alloc(p, size);
            if (off >= 0) {
                lv[n].off = (uint64_t)off;
                lv[n].size = size;
                n++;
                peak = n > peak ? n : peak;
                requested += size;
            }
        } else {
            uint64_t k = rnd() % n;
            live_t b = lv[k];
            const char *ptr = arena + b.off;
            uint64_t got = UINT64_MAX;
            CHECK(pool_locate(p, ptr, b.size, &got) == BUDDY_OK && got == b.off,
                  "locate(%" PRIu64 ") gave %" PRIu64, b.off, got);
            CHECK(pool_free(p, ptr, b.size + 1) == BUDDY_ESIZE, "longer free accepted");
            if (b.size > 0)
                CHECK(pool_free(p, ptr, b.size - 1) == BUDDY_ESIZE, "shorter free accepted");
            CHECK(pool_free(p, arena - 1, b.size) == BUDDY_ERANGE, "free below the arena");
            CHECK(pool_free(p, arena + capacity, 0) == BUDDY_ERANGE, "free past the arena");
            if (min_size > 1)
                CHECK(pool_free(p, ptr + 1, b.size) == BUDDY_EALIGN, "misaligned free");
            expect_same_stats(p, &before, "a refused free");
            CHECK(pool_free(p, ptr, b.size) == BUDDY_OK, "free of a live block refused");
            buddy_status again = pool_free(p, ptr, b.size);
            CHECK(again == BUDDY_EFREE || again == BUDDY_EINTERIOR ||
                      again == BUDDY_ESIZE || again == BUDDY_EALIGN,
                  "double free gave %d", (int)again);
            requested -= b.size;
            lv[k] = lv[--n];
        }
        const buddy_stats_t *st = buddy_stats(pool_core(p));
        CHECK(st->live_blocks == n && st->bytes_requested == requested,
              "step %d: core says %" PRIu64 " live / %" PRIu64 " bytes, model %"
              PRIu64 " / %" PRIu64, step, st->live_blocks, st->bytes_requested,
              n, requested);
        CHECK(buddy_check(pool_core(p), msg, sizeof msg) == BUDDY_OK, "step %d: %s",
              step, msg);
        /* a slot is 16 bytes and the table at most doubles past half full */
        CHECK(pool_table_bytes(p) <= 256 + 64 * peak, "table of %" PRIu64
              " bytes for a peak of %" PRIu64 " blocks", pool_table_bytes(p), peak);
        if (g_failed_checks - failed_before > 20)
            break;
    }
    while (n > 0) { /* drain: everything frees exactly once */
        n--;
        CHECK(pool_free(p, arena + lv[n].off, lv[n].size) == BUDDY_OK, "drain");
    }
    CHECK(buddy_stats(pool_core(p))->live_blocks == 0, "blocks left after drain");
    CHECK(peak > 64, "the trace never held many blocks (peak %" PRIu64 ")", peak);
    CHECK(table_only || pool_table_bytes(p) == 256, "plain blocks grew the table");
    pool_destroy(p);
    free(lv);
    free(arena);
}

static void trace_many_small(void) { trace(64 * 1024, 16, 20000, 0); }
static void trace_odd_capacity(void) { trace(1000 * 64, 64, 10000, 0); }
static void trace_min_size_1(void) { trace(4096, 1, 10000, 0); }
static void trace_table_only(void)
{
    trace(64 * 1024, 16, 20000, 1);
    trace(1000 * 64, 64, 10000, 1);
    trace(4096, 1, 10000, 1);
}

/* The request array against the table: two pools, one keeping every record
 * in the table, driven through the same random calls -- plain, aligned and
 * congruent allocations, resizes, frees by buffer (right and wrong
 * lengths: off by one, another order's, the block size), frees by offset,
 * block_at -- must answer every call alike.  A stale or misread record
 * would show as a different answer.  min_size 1, 16 and 512 give record
 * units of 1 and 2 bytes. */
static void records_match_table(uint64_t capacity, uint64_t min_size, int steps)
{
    char *arena = aligned_alloc(4096, (capacity + 4095) / 4096 * 4096);
    alloc_pool_t *p[2] = {NULL, NULL};
    for (int m = 0; m < 2; m++)
        CHECK(arena && pool_new(capacity, min_size, (uintptr_t)arena, &p[m]) == BUDDY_OK,
              "pool_new");
    if (p[0] == NULL || p[1] == NULL) {
        pool_destroy(p[0]);
        pool_destroy(p[1]);
        free(arena);
        return;
    }
    CHECK(pool_debug_table_only(p[1]) == BUDDY_OK, "table-only mode");
    live_t *lv = calloc(capacity / min_size + 1, sizeof *lv);
    uint64_t n = 0;
    int failed_before = g_failed_checks;
    for (int step = 0; step < steps && g_failed_checks - failed_before < 20; step++) {
        uint64_t r = rnd() % 10;
        int64_t got[2];
        if (r < 5 || n == 0) {
            uint64_t size = rnd() % ((capacity >> (rnd() % 6 + 3)) + 1);
            if (rnd() % 4 == 0) /* an exact fit: no record, so a stale one shows */
                size = min_size << (rnd() % 4);
            uint64_t kind = rnd() % 8, align = (uint64_t)1 << (rnd() % 12);
            for (int m = 0; m < 2; m++)
                got[m] = kind == 0 ? pool_alloc_aligned(p[m], size, align, 0, 0)
                         : kind == 1 ? pool_alloc_aligned(p[m], size, 0, align, size % align)
                         : pool_alloc(p[m], size);
            CHECK(got[0] == got[1], "step %d: alloc(%" PRIu64 ") %" PRId64 " vs %" PRId64,
                  step, size, got[0], got[1]);
            if (got[0] >= 0) {
                lv[n].off = (uint64_t)got[0];
                lv[n].size = size;
                n++;
            }
            continue;
        }
        uint64_t k = rnd() % n;
        live_t *b = &lv[k];
        uint64_t lens[] = {b->size + 1, b->size ? b->size - 1 : 7, b->size * 2 + 1,
                           b->size / 2, buddy_block_size(pool_core(p[0]), b->size), 1};
        for (unsigned x = 0; x < sizeof lens / sizeof lens[0]; x++) {
            if (lens[x] == b->size)
                continue;
            for (int m = 0; m < 2; m++)
                got[m] = pool_free(p[m], arena + b->off, lens[x]);
            CHECK(got[0] == got[1] && got[0] != BUDDY_OK,
                  "step %d: free(%" PRIu64 ", %" PRIu64 " not %" PRIu64 ") %d vs %d",
                  step, b->off, lens[x], b->size, (int)got[0], (int)got[1]);
        }
        uint64_t st[2], sz[2], rq[2], at = b->off + rnd() % (b->size ? b->size : 1);
        for (int m = 0; m < 2; m++)
            got[m] = pool_block_at(p[m], at, &st[m], &sz[m], &rq[m]);
        CHECK(got[0] == got[1] && (got[0] != BUDDY_OK ||
              (st[0] == st[1] && sz[0] == sz[1] && rq[0] == rq[1] && rq[0] == b->size)),
              "step %d: block_at(%" PRIu64 " size %" PRIu64 ") %d/%d start %" PRIu64 "/%" PRIu64
              " block %" PRIu64 "/%" PRIu64 " requested %" PRIu64 "/%" PRIu64, step,
              b->off, b->size, (int)got[0], (int)got[1], st[0], st[1], sz[0], sz[1], rq[0], rq[1]);
        if (r == 5) { /* resize in place, or not */
            uint64_t to = rnd() % (2 * b->size + 64);
            for (int m = 0; m < 2; m++)
                got[m] = pool_resize(p[m], b->off, to);
            CHECK(got[0] == got[1], "step %d: resize %d vs %d", step, (int)got[0], (int)got[1]);
            if (got[0] == BUDDY_OK)
                b->size = to;
            continue;
        }
        for (int m = 0; m < 2; m++)
            got[m] = r == 6 ? pool_free_at(p[m], b->off)
                            : pool_free(p[m], arena + b->off, b->size);
        CHECK(got[0] == BUDDY_OK && got[1] == BUDDY_OK, "step %d: free %d vs %d",
              step, (int)got[0], (int)got[1]);
        *b = lv[--n];
    }
    buddy_stats_t s0, s1;
    buddy_snapshot(pool_core(p[0]), &s0);
    buddy_snapshot(pool_core(p[1]), &s1);
    CHECK(memcmp(&s0, &s1, sizeof s0) == 0, "the statistics differ");
    while (n > 0) {
        n--;
        for (int m = 0; m < 2; m++)
            CHECK(pool_free(p[m], arena + lv[n].off, lv[n].size) == BUDDY_OK, "drain");
    }
    /* every record was cleared: exact fits everywhere now read as such */
    uint64_t block = min_size << 2, count = 0;
    for (int64_t at; (at = pool_alloc(p[0], block)) >= 0; count++) {
        buddy_status why = pool_free(p[0], arena + at, block - 1);
        CHECK(why == BUDDY_ESIZE, "refill: a free of the %" PRIu64 "-byte block at %"
              PRId64 " one byte short: %d", block, at, (int)why);
    }
    CHECK(count == capacity / block, "refilled with %" PRIu64 " blocks", count);
    pool_destroy(p[0]);
    pool_destroy(p[1]);
    free(lv);
    free(arena);
}

static void records_match_table_all(void)
{
    records_match_table(64 * 1024, 16, 30000);
    records_match_table(4096, 1, 20000);
    records_match_table(1 << 22, 512, 20000);
    records_match_table(1000 * 64, 64, 20000);
}

static void closed_pool(void)
{
    char arena[1024];
    alloc_pool_t *p = NULL;
    CHECK(pool_new(sizeof arena, 16, (uintptr_t)arena, &p) == BUDDY_OK, "pool_new");
    if (p == NULL)
        return;
    int64_t off = pool_alloc(p, 100);
    CHECK(off == 0, "first block at %" PRId64, off);
    pool_close(p);
    pool_close(p); /* idempotent */
    uint64_t got = 0;
    CHECK(pool_alloc(p, 1) == -1, "alloc after close");
    CHECK(pool_free(p, arena, 100) == BUDDY_ECLOSED, "free after close");
    CHECK(pool_locate(p, arena, 100, &got) == BUDDY_ECLOSED, "locate after close");
    CHECK(buddy_stats(pool_core(p))->live_blocks == 1, "stats frozen at close");
    CHECK(pool_table_bytes(p) == 0, "table kept after close");
    pool_destroy(p);
    pool_destroy(NULL);
    pool_close(NULL);
}

/* Aligned blocks and resizes through the pool: freed by their buffer
 * alone, whatever block they ended up in. */
static void aligned_and_resized(void)
{
    static char arena[8192] __attribute__((aligned(64)));
    alloc_pool_t *p = NULL;
    CHECK(pool_new(sizeof arena, 16, (uintptr_t)arena, &p) == BUDDY_OK, "pool_new");
    if (p == NULL)
        return;
    int64_t a = pool_alloc(p, 10);
    int64_t b = pool_alloc_aligned(p, 10, 1024, 0, 0);
    CHECK(a == 0 && b == 1024, "aligned block at %" PRId64, b);
    CHECK(buddy_stats(pool_core(p))->bytes_in_blocks == 16 + 1024, "block size");
    CHECK(pool_alloc_aligned(p, 10, 24, 0, 0) == POOL_INVALID, "align 24");
    CHECK(pool_alloc_aligned(p, 16, 0, 64, 48) == 48, "congruent block");
    CHECK(pool_alloc_aligned(p, 32, 0, 64, 48) == POOL_INVALID, "48 is no 32-byte start");
    CHECK(pool_free(p, arena + 1024, 16) == BUDDY_ESIZE, "wrong length");
    CHECK(pool_free(p, arena + 1024, 10) == BUDDY_OK, "aligned block freed");
    CHECK(pool_free(p, arena + 48, 16) == BUDDY_OK, "congruent block freed");
    /* resize: grow in place, shrink, refuse, and wrong offsets */
    CHECK(pool_resize(p, 0, 60) == BUDDY_OK, "grow 10 -> 60 in place");
    CHECK(pool_free(p, arena, 10) == BUDDY_ESIZE, "old length after resize");
    uint64_t start = 0, size = 0, req = 0;
    CHECK(pool_block_at(p, 0, &start, &size, &req) == BUDDY_OK && size == 64 &&
          req == 60, "block_at after resize: %" PRIu64 "/%" PRIu64, size, req);
    int64_t c = pool_alloc(p, 64);
    CHECK(c == 64, "next block at %" PRId64, c);
    CHECK(pool_resize(p, 0, 100) == BUDDY_ENOMEM, "grow into a live buddy");
    CHECK(pool_resize(p, 16, 1) == BUDDY_EINTERIOR, "interior offset");
    CHECK(pool_resize(p, 7, 1) == BUDDY_EALIGN, "unaligned offset");
    CHECK(pool_resize(p, 4096, 1) == BUDDY_EFREE, "free offset");
    CHECK(pool_resize(p, 1 << 20, 1) == BUDDY_ERANGE, "past the arena");
    int64_t d = pool_alloc_aligned(p, 100, 4096, 0, 0);
    CHECK(d == 4096, "aligned 4096 at %" PRId64, d);
    CHECK(pool_resize(p, 4096, 3000) == BUDDY_OK, "shrink an aligned block");
    CHECK(buddy_stats(pool_core(p))->bytes_in_blocks == 64 + 64 + 4096, "in blocks");
    CHECK(pool_free(p, arena + 4096, 3000) == BUDDY_OK, "resized aligned block freed");
    CHECK(pool_free(p, arena, 60) == BUDDY_OK, "resized block freed");
    CHECK(pool_free(p, arena + 64, 64) == BUDDY_OK, "c freed");
    char msg[200];
    CHECK(buddy_check(pool_core(p), msg, sizeof msg) == BUDDY_OK, "%s", msg);
    CHECK(buddy_largest_free(pool_core(p)) == sizeof arena, "all merged");
    pool_destroy(p);
}

/* pool_realloc: in place when pool_resize can, else a move in the same
 * call (contents copied when asked, the old block freed); a move with no
 * room changes nothing but failed_allocs; wrong offsets as pool_resize. */
static void realloc_moves(void)
{
    static char arena[4096] __attribute__((aligned(64)));
    alloc_pool_t *p = NULL;
    CHECK(pool_new(sizeof arena, 16, (uintptr_t)arena, &p) == BUDDY_OK, "pool_new");
    if (p == NULL)
        return;
    const buddy_stats_t *st = buddy_stats(pool_core(p));
    int64_t v = pool_alloc(p, 10), w = pool_alloc(p, 16), out = -99;
    CHECK(v == 0 && w == 16, "two blocks at %" PRId64 ", %" PRId64, v, w);
    memcpy(arena, "0123456789", 10);
    CHECK(pool_realloc(p, 0, 12, 1, &out) == BUDDY_OK && out == 0, "in place: %" PRId64, out);
    CHECK(pool_realloc(p, 0, 40, 1, &out) == BUDDY_OK && out == 64, "moved to %" PRId64, out);
    CHECK(memcmp(arena + 64, "0123456789", 10) == 0, "contents moved");
    CHECK(st->live_blocks == 2 && st->alloc_calls == 3 && st->free_calls == 1,
          "a move is one alloc and one free: %" PRIu64 " live", st->live_blocks);
    CHECK(pool_free(p, arena + 64, 40) == BUDDY_OK, "freed by its new size");
    v = pool_alloc(p, 10); /* at 0 again, 16 still live */
    memset(arena + 128, 'x', 16);
    CHECK(pool_realloc(p, 0, 30, 0, &out) == BUDDY_OK && out == 32, "moved to %" PRId64, out);
    CHECK(arena[32] != '0' || arena[33] != '1', "copy = 0 copies nothing");
    uint64_t failed = st->failed_allocs, requested = st->bytes_requested;
    CHECK(pool_realloc(p, 32, 8192, 1, &out) == BUDDY_ENOMEM && out == POOL_REFUSED,
          "no room: %" PRId64, out);
    CHECK(st->failed_allocs == failed + 1 && st->bytes_requested == requested &&
          st->live_blocks == 2, "a refused move changes nothing but failed_allocs");
    CHECK(pool_realloc(p, 48, 1, 1, &out) == BUDDY_EINTERIOR, "interior offset");
    CHECK(pool_realloc(p, 64, 1, 1, &out) == BUDDY_EFREE, "free offset");
    CHECK(pool_realloc(p, 7, 1, 1, &out) == BUDDY_EALIGN, "unaligned offset");
    CHECK(pool_realloc(NULL, 0, 1, 1, &out) == BUDDY_EINVAL, "NULL pool");
    CHECK(pool_free(p, arena + 32, 30) == BUDDY_OK && pool_free(p, arena + 16, 16) == BUDDY_OK,
          "both freed");
    char msg[200];
    CHECK(buddy_check(pool_core(p), msg, sizeof msg) == BUDDY_OK, "%s", msg);
    CHECK(buddy_largest_free(pool_core(p)) == sizeof arena, "all merged");
    pool_close(p);
    CHECK(pool_realloc(p, 0, 1, 1, &out) == BUDDY_ECLOSED, "closed");
    pool_destroy(p);
}

/* Exact fits (requested size == block size) have no slot in the size
 * table; everything that reads sizes must still see them exactly. */
static void exact_fits(void)
{
    static char arena[1 << 16] __attribute__((aligned(64)));
    alloc_pool_t *p = NULL;
    CHECK(pool_new(sizeof arena, 16, (uintptr_t)arena, &p) == BUDDY_OK, "pool_new");
    if (p == NULL)
        return;
    uint64_t table = pool_table_bytes(p), small[64], offs[32];
    for (int i = 0; i < 64; i++) /* more than a fresh table holds */
        small[i] = (uint64_t)pool_alloc(p, 64);
    CHECK(pool_table_bytes(p) == table, "exact fits grew the table");
    CHECK(pool_alloc_many(p, 256, 32, offs) == 0, "alloc_many of exact fits");
    CHECK(pool_table_bytes(p) == table, "exact fits (many) grew the table");
    uint64_t start = 0, size = 0, req = 0;
    CHECK(pool_block_at(p, offs[3], &start, &size, &req) == BUDDY_OK &&
          size == 256 && req == 256, "block_at of an exact fit: %" PRIu64, req);
    int64_t odd = pool_alloc(p, 60); /* no exact fit: a slot */
    CHECK(odd >= 0, "odd block");
    CHECK(pool_free(p, arena + odd, 64) == BUDDY_ESIZE, "block size of a 60");
    CHECK(pool_free(p, arena + offs[3], 255) == BUDDY_ESIZE, "255 of a 256");
    CHECK(pool_free(p, arena + offs[3], 128) == BUDDY_ESIZE, "128 of a 256");
    CHECK(pool_free(p, arena + offs[3] + 64, 64) == BUDDY_EINTERIOR, "interior");
    uint64_t at = 0;
    CHECK(pool_locate(p, arena + offs[3], 256, &at) == BUDDY_OK && at == offs[3],
          "locate an exact fit");
    CHECK(pool_locate(p, arena + offs[3], 200, &at) == BUDDY_ESIZE, "locate 200");
    /* resize across: exact -> inexact -> exact, in place */
    CHECK(pool_resize(p, offs[3], 200) == BUDDY_OK, "256 -> 200");
    CHECK(pool_free(p, arena + offs[3], 256) == BUDDY_ESIZE, "old exact length");
    CHECK(pool_resize(p, offs[3], 128) == BUDDY_OK, "200 -> 128");
    CHECK(pool_free(p, arena + offs[3], 200) == BUDDY_ESIZE, "old inexact length");
    CHECK(pool_block_at(p, offs[3], &start, &size, &req) == BUDDY_OK &&
          size == 128 && req == 128, "block_at after resizes: %" PRIu64, req);
    CHECK(pool_free(p, arena + offs[3], 128) == BUDDY_OK, "free the resized one");
    CHECK(pool_free(p, arena + offs[3], 128) == BUDDY_EFREE, "double free");
    CHECK(pool_free_at(p, offs[4]) == BUDDY_OK, "free_at an exact fit");
    CHECK(pool_free_at(p, offs[4]) == BUDDY_EFREE, "free_at it again");
    CHECK(pool_free(p, arena + odd, 60) == BUDDY_OK, "odd freed");
    const buddy_stats_t *st = buddy_stats(pool_core(p));
    CHECK(st->bytes_requested == 64 * 64 + 30 * 256, "requested %" PRIu64,
          st->bytes_requested);
    for (int i = 0; i < 64; i++)
        CHECK(pool_free_at(p, small[i]) == BUDDY_OK, "free_at %d", i);
    for (int i = 0; i < 32; i++)
        if (i != 3 && i != 4)
            CHECK(pool_free(p, arena + offs[i], 256) == BUDDY_OK, "free %d", i);
    char msg[200];
    CHECK(buddy_check(pool_core(p), msg, sizeof msg) == BUDDY_OK, "%s", msg);
    CHECK(st->live_blocks == 0 && st->bytes_requested == 0, "all freed");
    pool_destroy(p);
}

static void bad_arguments(void)
{
    alloc_pool_t *p = NULL;
    CHECK(pool_new(1024, 3, 0, &p) == BUDDY_EINVAL && p == NULL, "min_size 3");
    CHECK(pool_new(1024, 16, 0, NULL) == BUDDY_EINVAL, "NULL out");
    CHECK(pool_new(((uint64_t)1 << 62) + 1, 4, 0, &p) == BUDDY_EINVAL && p == NULL,
          "capacity past 2^62 is a bad argument, not out of memory");
}

int main(void)
{
    run("trace_many_small", trace_many_small);
    run("trace_odd_capacity", trace_odd_capacity);
    run("trace_min_size_1", trace_min_size_1);
    run("trace_table_only", trace_table_only);
    run("records_match_table", records_match_table_all);
    run("closed_pool", closed_pool);
    run("aligned_and_resized", aligned_and_resized);
    run("realloc_moves", realloc_moves);
    run("exact_fits", exact_fits);
    run("bad_arguments", bad_arguments);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed != 0;
}

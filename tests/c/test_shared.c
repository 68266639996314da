/*
 * test_shared.c -- the shared-memory layer (csrc/shared.h) under the
 * sanitizers.
 *
 *     make -C tests/c check     (builds and runs it after test_pool)
 *
 * A randomized trace on one segment through two handles (as two processes
 * would see it: two mappings at different addresses), checked against a
 * plain array of live blocks, with shared_check() (core + records) after
 * every step; attaching refused for foreign, truncated and half-made
 * segments; and the three outcomes of recovery, each from a forked child
 * that dies (SIGKILL) holding the lock: state sound as it was, core rebuilt
 * from the records, segment marked corrupt.  Ends with "N passed, N
 * failed"; exit status 0 only if nothing failed.
 */
#define _POSIX_C_SOURCE 200809L

#include "shared.h"

#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

static char g_name[64];

/* Before and after each test: this process's segment name, unlinked. */
static void fresh_name(void)
{
    snprintf(g_name, sizeof g_name, "/alloc_test_shared_%d", (int)getpid());
    shared_unlink(g_name);
}

static void run(const char *name, void (*fn)(void)) { run_with(name, fn, fresh_name); }

static void expect_sound(shared_t *h, const char *when)
{
    char msg[256];
    int status = shared_check(h, msg, sizeof msg);
    CHECK(status == BUDDY_OK, "%s: shared_check %d: %s", when, status, msg);
}

typedef struct live {
    uint64_t off, size;
} live_t;

/* Two handles on one segment; alloc in either, free in the other by pointer
 * (its own mapping) or offset; records give the exact size back. */
static void trace_two_mappings(void)
{
    shared_t *a = NULL, *b = NULL;
    char why[256];
    CHECK(shared_create(g_name, 1 << 20, 16, &a) == BUDDY_OK, "create");
    CHECK(shared_attach(g_name, &b, why, sizeof why) == BUDDY_OK, "attach: %s", why);
    if (!a || !b)
        return;
    CHECK(shared_arena(a) != shared_arena(b), "two mappings at two addresses");
    CHECK(shared_records_bytes(a) == (1 << 16) * 2, "N (1 + w) with w = 1");
    static live_t live[4096];
    size_t n = 0;
    uint64_t requested = 0;
    for (int step = 0; step < 20000; step++) {
        shared_t *h = rnd() & 1 ? a : b, *other = h == a ? b : a;
        if (n < 4096 && (n == 0 || rnd() % 3 != 0)) {
            uint64_t size = rnd() % 3 == 0 ? rnd() % 4000 : rnd() % 80;
            int64_t off = shared_alloc(h, size);
            if (off >= 0) {
                live[n].off = (uint64_t)off;
                live[n++].size = size;
                requested += size;
            }
        } else {
            size_t i = (size_t)(rnd() % n);
            uint64_t s = 0, bs = 0, r = 0;
            CHECK(shared_block_at(other, live[i].off, &s, &bs, &r) == BUDDY_OK &&
                  s == live[i].off && r == live[i].size, "block_at gives the size");
            if (live[i].size && rnd() & 1) {
                CHECK(shared_free(other, shared_arena(other) + live[i].off,
                                  live[i].size + 1) == BUDDY_ESIZE, "wrong length");
                CHECK(shared_free(other, shared_arena(other) + live[i].off,
                                  live[i].size) == BUDDY_OK, "free by pointer");
            } else {
                CHECK(shared_free_at(other, live[i].off) == BUDDY_OK, "free_at");
            }
            CHECK(shared_free_at(h, live[i].off) != BUDDY_OK, "double free refused");
            requested -= live[i].size;
            live[i] = live[--n];
        }
        if (step % 997 == 0)
            expect_sound(a, "trace");
    }
    buddy_stats_t st;
    CHECK(shared_snapshot(b, &st) == BUDDY_OK, "snapshot");
    CHECK(st.bytes_requested == requested && st.live_blocks == n,
          "exact statistics: %" PRIu64 " vs %" PRIu64, st.bytes_requested, requested);
    /* resize in place and aligned blocks keep the records right */
    int64_t off = shared_alloc(a, 40);
    if (off >= 0) {
        int r = shared_resize(b, (uint64_t)off, 20);
        CHECK(r == BUDDY_OK, "shrink in place");
        uint64_t s = 0, bs = 0, req = 0;
        CHECK(shared_block_at(a, (uint64_t)off, &s, &bs, &req) == BUDDY_OK && req == 20,
              "resized record");
        CHECK(shared_free_at(a, (uint64_t)off) == BUDDY_OK, "free resized");
    }
    off = shared_alloc_aligned(a, 10, 1024);
    CHECK(off >= 0 && off % 1024 == 0, "aligned");
    expect_sound(b, "aligned");
    if (off >= 0)
        CHECK(shared_free(b, shared_arena(b) + off, 10) == BUDDY_OK, "free aligned");
    expect_sound(a, "end");
    shared_detach(b);
    CHECK(shared_alloc(b, 1) == SHARED_REFUSED, "closed handle refuses");
    CHECK(shared_free_at(b, 0) == BUDDY_ECLOSED, "closed handle");
    shared_release(b);
    shared_release(a);
}

/* shared_realloc through one mapping, seen from the other: in place, or
 * moved with its bytes in one call; refused moves change nothing. */
static void realloc_moves(void)
{
    shared_t *a = NULL, *b = NULL;
    char why[256];
    CHECK(shared_create(g_name, 1 << 16, 16, &a) == BUDDY_OK, "create");
    CHECK(shared_attach(g_name, &b, why, sizeof why) == BUDDY_OK, "attach: %s", why);
    if (!a || !b)
        return;
    int64_t v = shared_alloc(a, 10), w = shared_alloc(a, 16), out = -99;
    CHECK(v == 0 && w == 16, "two blocks at %" PRId64 ", %" PRId64, v, w);
    memcpy(shared_arena(a), "0123456789", 10);
    CHECK(shared_realloc(b, 0, 12, 1, &out) == BUDDY_OK && out == 0, "in place: %" PRId64, out);
    CHECK(shared_realloc(b, 0, 40, 1, &out) == BUDDY_OK && out == 64, "moved to %" PRId64, out);
    CHECK(memcmp(shared_arena(a) + 64, "0123456789", 10) == 0, "contents moved");
    uint64_t s = 0, bs = 0, req = 0;
    CHECK(shared_block_at(a, 64, &s, &bs, &req) == BUDDY_OK && req == 40, "its record");
    CHECK(shared_block_at(a, 0, &s, &bs, &req) == BUDDY_EFREE, "the old block is free");
    buddy_stats_t st;
    CHECK(shared_snapshot(a, &st) == BUDDY_OK && st.live_blocks == 2 &&
          st.alloc_calls == 3 && st.free_calls == 1, "a move is one alloc and one free");
    CHECK(shared_realloc(a, 64, 1 << 17, 1, &out) == BUDDY_ENOMEM && out == SHARED_REFUSED,
          "no room: %" PRId64, out);
    buddy_stats_t st2;
    CHECK(shared_snapshot(b, &st2) == BUDDY_OK && st2.failed_allocs == st.failed_allocs + 1 &&
          st2.live_blocks == 2 && st2.bytes_requested == st.bytes_requested,
          "a refused move changes nothing but failed_allocs");
    CHECK(shared_realloc(a, 80, 1, 1, &out) == BUDDY_EINTERIOR, "interior offset");
    CHECK(shared_realloc(a, 0, 1, 1, &out) == BUDDY_EFREE, "free offset");
    CHECK(shared_realloc(a, 0, 1, 1, NULL) == BUDDY_EINVAL, "no out");
    expect_sound(b, "after the moves");
    shared_detach(b);
    CHECK(shared_realloc(b, 64, 1, 1, &out) == BUDDY_ECLOSED, "closed handle");
    shared_release(b);
    shared_release(a);
}

static void attach_refusals(void)
{
    shared_t *h = NULL;
    char why[256];
    CHECK(shared_attach(g_name, &h, why, sizeof why) == SHARED_ENOENT, "no segment");
    /* a segment of random bytes */
    int fd = shm_open(g_name, O_CREAT | O_EXCL | O_RDWR, 0600);
    CHECK(fd >= 0, "shm_open");
    unsigned char junk[8192];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (unsigned char)rnd();
    CHECK(write(fd, junk, sizeof junk) == (ssize_t)sizeof junk, "write");
    CHECK(shared_attach(g_name, &h, why, sizeof why) == SHARED_ENOTOURS &&
          strstr(why, "not a SharedBuddyAllocator") != NULL, "random bytes: %s", why);
    CHECK(ftruncate(fd, 16) == 0, "truncate");
    CHECK(shared_attach(g_name, &h, why, sizeof why) == SHARED_ENOTOURS &&
          strstr(why, "too few") != NULL, "tiny: %s", why);
    close(fd);
    shared_unlink(g_name);
    /* a real one, truncated */
    shared_t *a = NULL;
    CHECK(shared_create(g_name, 1 << 16, 64, &a) == BUDDY_OK, "create");
    CHECK(shared_create(g_name, 1 << 16, 64, &h) == SHARED_EEXIST, "exists");
    fd = shm_open(g_name, O_RDWR, 0);
    CHECK(fd >= 0 && ftruncate(fd, (off_t)(shared_segment_bytes(a) - 4096)) == 0, "cut");
    close(fd);
    CHECK(shared_attach(g_name, &h, why, sizeof why) == SHARED_ENOTOURS &&
          strstr(why, "truncated") != NULL, "truncated: %s", why);
    shared_release(a);
    CHECK(shared_create(g_name, 1000, 48, &a) == BUDDY_EINVAL, "min_size not 2^k");
}

/* A child allocates, takes the lock, optionally breaks something, and is
 * killed holding the lock.  Returns the parent's handle. */
static shared_t *die_holding(void (*spoil)(shared_t *))
{
    shared_t *a = NULL;
    CHECK(shared_create(g_name, 1 << 18, 32, &a) == BUDDY_OK, "create");
    if (a == NULL)
        return NULL;
    for (int i = 0; i < 50; i++)
        shared_alloc(a, (uint64_t)(1 + rnd() % 500));
    int pipefd[2];
    CHECK(pipe(pipefd) == 0, "pipe");
    pid_t pid = fork();
    if (pid == 0) {
        shared_t *c = NULL;
        if (shared_attach(g_name, &c, NULL, 0) != BUDDY_OK)
            _exit(1);
        shared_alloc(c, 100);
        if (spoil)
            spoil(c);
        shared_debug_lock(c);
        char x = 'x';
        if (write(pipefd[1], &x, 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    char x = 0;
    CHECK(read(pipefd[0], &x, 1) == 1, "child holds the lock");
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(pipefd[0]);
    close(pipefd[1]);
    return a;
}

static void spoil_core(shared_t *c) { shared_debug_flip(c, 0, 0, 1000); }
/* a tag no block can have (bit 6 is never set) */
static void spoil_records(shared_t *c) { shared_debug_set_tag(c, 8001, 0x41); }

static void recover_sound(void)
{
    shared_t *a = die_holding(NULL);
    if (!a)
        return;
    buddy_stats_t st;
    CHECK(shared_snapshot(a, &st) == BUDDY_OK, "usable after the death");
    CHECK(shared_counter(a, 0) == 1 && shared_counter(a, 1) == 1, "found sound");
    CHECK(st.live_blocks == 51 && st.alloc_calls == 51, "nothing lost");
    expect_sound(a, "after recovery");
    shared_release(a);
}

static void recover_rebuilt(void)
{
    shared_t *a = die_holding(spoil_core);
    if (!a)
        return;
    buddy_stats_t st;
    CHECK(shared_snapshot(a, &st) == BUDDY_OK, "usable after the repair");
    CHECK(shared_counter(a, 2) == 1, "rebuilt from the records");
    CHECK(st.live_blocks == 51, "every live block kept: %" PRIu64, st.live_blocks);
    expect_sound(a, "after the rebuild");
    CHECK(shared_alloc(a, 64) >= 0, "allocates again");
    shared_release(a);
}

static void recover_corrupt(void)
{
    shared_t *a = die_holding(spoil_records);
    if (!a)
        return;
    char why[256];
    CHECK(shared_alloc(a, 8) == SHARED_CORRUPT, "alloc refused");
    CHECK(shared_free_at(a, 0) == SHARED_ECORRUPT, "free refused");
    CHECK(shared_check(a, NULL, 0) == SHARED_ECORRUPT, "check refused");
    CHECK(shared_is_corrupt(a, why, sizeof why) && strstr(why, "died") != NULL,
          "reason: %s", why);
    shared_t *b = NULL;
    CHECK(shared_attach(g_name, &b, why, sizeof why) == BUDDY_OK, "attach still works");
    if (b) {
        CHECK(shared_alloc(b, 8) == SHARED_CORRUPT, "every process refused");
        shared_release(b);
    }
    shared_release(a);
}

/* Frees every live block (what dead children left), from this handle. */
static void free_everything(shared_t *h)
{
    for (uint64_t off = 0; off < shared_capacity(h);) {
        uint64_t start = 0, size = 0, req = 0;
        int status = shared_block_at(h, off, &start, &size, &req);
        if (status == BUDDY_OK)
            CHECK(shared_free_at(h, start) == BUDDY_OK, "free a dead child's block");
        else if (status != BUDDY_EFREE)
            break;
        off = start + size;
    }
}

/* A child churns in a tight C loop (alloc, free, resize: it holds the lock
 * most of the time) and is SIGKILLed after a random 0-2 ms; 200 times, or
 * $KILL_ROUNDS (KILL_ROUNDS=3000 make -C tests/c check: the long run).
 * Every death holding the lock must end sound or rebuilt from the records
 * (they are the commit log), never corrupt, and shared_check must pass. */
static void kill_storm(void)
{
    shared_t *a = NULL;
    CHECK(shared_create(g_name, 1 << 20, 16, &a) == BUDDY_OK, "create");
    if (a == NULL)
        return;
    const char *env = getenv("KILL_ROUNDS");
    int rounds = env && atoi(env) > 0 ? atoi(env) : 200;
    for (int r = 0; r < rounds; r++) {
        pid_t pid = fork();
        if (pid == 0) {
            shared_t *c = NULL;
            if (shared_attach(g_name, &c, NULL, 0) != BUDDY_OK)
                _exit(1);
            uint64_t live[256];
            size_t n = 0;
            g_rng ^= (uint64_t)r * 0x9E3779B97F4A7C15u;
            for (;;) {
                uint64_t x = rnd();
                if (n < 256 && x % 3 != 0) {
                    int64_t off = shared_alloc(c, x >> 40 & 1023);
                    if (off >= 0)
                        live[n++] = (uint64_t)off;
                } else if (n > 0) {
                    size_t i = (size_t)(x >> 20) % n;
                    if (x & 8)
                        shared_resize(c, live[i], x >> 50 & 2047);
                    else {
                        shared_free_at(c, live[i]);
                        live[i] = live[--n];
                    }
                }
            }
        }
        struct timespec ts = {0, (long)(rnd() % 2000000)};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        char msg[256];
        int status = shared_check(a, msg, sizeof msg);
        CHECK(status == BUDDY_OK, "round %d: shared_check %d: %s", r, status, msg);
        if (status != BUDDY_OK)
            break;
        free_everything(a);
    }
    uint64_t deaths = shared_counter(a, 0), sound = shared_counter(a, 1);
    uint64_t rebuilt = shared_counter(a, 2), corrupt = shared_counter(a, 3);
    printf("     %d kills: %" PRIu64 " holding the lock -> %" PRIu64 " sound, %"
           PRIu64 " rebuilt from the records, %" PRIu64 " corrupt\n", rounds,
           deaths, sound, rebuilt, corrupt);
    CHECK(deaths > 0 && deaths == sound + rebuilt && corrupt == 0 &&
          shared_counter(a, 5) == 0, "outcomes");
    buddy_stats_t st;
    CHECK(shared_snapshot(a, &st) == BUDDY_OK && st.live_blocks == 0 &&
          st.bytes_requested == 0, "everything freed");
    shared_release(a);
}

int main(void)
{
    run("trace_two_mappings", trace_two_mappings);
    run("realloc_moves", realloc_moves);
    run("attach_refusals", attach_refusals);
    run("recover_sound", recover_sound);
    run("recover_rebuilt", recover_rebuilt);
    run("recover_corrupt", recover_corrupt);
    run("kill_storm", kill_storm);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed != 0;
}

/*
 * check.h -- the small harness test_pool.c and test_shared.c share: CHECK
 * (report a failed condition and go on), a seeded xorshift generator, and
 * run_with (one named test, "ok" or "FAIL").  Each test file ends with
 * "N passed, N failed" and exits 0 only if nothing failed.
 */
#ifndef ALLOC_TESTS_CHECK_H
#define ALLOC_TESTS_CHECK_H

#include <stdint.h>
#include <stdio.h>

static int g_failed_checks, g_passed, g_failed;

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            g_failed_checks++;                                                \
            printf("    %s:%d: ", __FILE__, __LINE__);                        \
            printf(__VA_ARGS__);                                              \
            printf("\n");                                                     \
        }                                                                     \
    } while (0)

static uint64_t g_rng = 0x9E3779B97F4A7C15u;

static inline uint64_t rnd(void) /* xorshift64 */
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

/* Runs fn as the test `name`, with around() (if not NULL) before and after
 * it, and counts it passed if no CHECK in it failed. */
static inline void run_with(const char *name, void (*fn)(void), void (*around)(void))
{
    int before = g_failed_checks;
    if (around)
        around();
    fn();
    if (around)
        around();
    int ok = g_failed_checks == before;
    printf("%s %s\n", ok ? "ok  " : "FAIL", name);
    if (ok)
        g_passed++;
    else
        g_failed++;
}

#endif /* ALLOC_TESTS_CHECK_H */

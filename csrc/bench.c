/*
 * bench.c -- the C-level benchmark driver; see bench.h.
 *
 * Layers: trace_* draw the seeded trace, run_* time one run on one
 * allocator, bench_* are the public entry points.  Each timed loop is
 * written out once per allocator (no function pointers in the loop), and
 * the two loops of a pair do the same work in the same order.
 */
#define _POSIX_C_SOURCE 200809L

#include "bench.h"
#include "buddy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

/* ---- clocks --------------------------------------------------------------- */

static uint64_t clock_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* The peak RSS of this address space: Linux's VmHWM.  ru_maxrss is the
 * fallback only, because it also keeps the peak of the parent that forked
 * this process before exec. */
static uint64_t clock_peak_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (f != NULL) {
        char line[256];
        unsigned long long kib;
        while (fgets(line, sizeof line, f) != NULL)
            if (sscanf(line, "VmHWM: %llu", &kib) == 1) {
                fclose(f);
                return kib;
            }
        fclose(f);
    }
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (uint64_t)u.ru_maxrss;
}

/* Growth of the peak RSS since `before` (VmHWM may read a little lower
 * later: the kernel's RSS counters are approximate between updates). */
static uint64_t clock_rss_growth_kib(uint64_t before)
{
    uint64_t now = clock_peak_rss_kib();
    return now > before ? now - before : 0;
}

/* ---- trace: seeded numbers, all drawn before anything is timed ------------ */

static uint64_t trace_next(uint64_t *s) /* splitmix64 */
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

static double trace_unit(uint64_t *s) /* uniform in [0, 1) */
{
    return (double)(trace_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

static uint64_t trace_below(uint64_t *s, uint64_t n) /* uniform in [0, n) */
{
    return (uint64_t)(trace_unit(s) * (double)n);
}

/* 2^f for f in [0, 1): the Taylor series of e^(f ln 2) (no libm needed). */
static double trace_exp2_frac(double f)
{
    double x = f * 0.69314718055994530942, term = 1.0, sum = 1.0;
    for (int n = 1; n < 20; n++) {
        term *= x / n;
        sum += term;
    }
    return sum;
}

static unsigned trace_log2(uint64_t x) /* x a power of two */
{
    unsigned k = 0;
    while (x > 1) {
        x >>= 1;
        k++;
    }
    return k;
}

/* n sizes log-uniform in [lo, hi] (powers of two, checked by the caller). */
static void trace_sizes(uint64_t *s, uint32_t *out, uint64_t n, uint64_t lo,
                        uint64_t hi)
{
    unsigned span = trace_log2(hi) - trace_log2(lo);
    for (uint64_t i = 0; i < n; i++) {
        double x = trace_unit(s) * span;
        unsigned whole = (unsigned)x;
        out[i] = (uint32_t)((double)(lo << whole) * trace_exp2_frac(x - whole));
    }
}

static int trace_pow2(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

static int trace_size_range_ok(uint64_t lo, uint64_t hi)
{
    return trace_pow2(lo) && trace_pow2(hi) && lo <= hi && hi <= (1u << 30);
}

/* ---- one run on one allocator --------------------------------------------- */

static int run_new(uint64_t capacity, uint64_t min_size, buddy_t **b,
                   bench_run_t *r)
{
    buddy_status st = buddy_new(capacity, min_size, b);
    r->metadata_bytes = buddy_metadata_bytes(capacity, min_size);
    if (st == BUDDY_ENOMEM)
        return BENCH_ENOMEM;
    return st == BUDDY_OK ? BENCH_OK : BENCH_EINVAL;
}

/* fill: n blocks of `size`, then free them in `order`. */
static int run_fill(int which, uint64_t capacity, uint64_t min_size,
                    uint64_t size, uint64_t n, const uint32_t *order,
                    uint64_t *h, bench_run_t *r)
{
    uint64_t rss0 = clock_peak_rss_kib(), t0, t1, t2, t3;
    int bad = 0;

    if (which == BENCH_BUDDY) {
        buddy_t *b;
        int st = run_new(capacity, min_size, &b, r);
        if (st != BENCH_OK)
            return st;
        t0 = clock_ns();
        for (uint64_t i = 0; i < n; i++)
            h[i] = (uint64_t)buddy_alloc(b, size);
        t1 = clock_ns();
        r->rss_growth_kib = clock_rss_growth_kib(rss0);
        for (uint64_t i = 0; i < n; i++)
            r->failures += h[i] == UINT64_MAX;
        r->bytes_requested = buddy_stats(b)->bytes_requested;
        bad |= buddy_alloc(b, size) >= 0; /* it must be exactly full */
        t2 = clock_ns();
        for (uint64_t i = 0; i < n; i++)
            bad |= buddy_free(b, h[order[i]], size) != BUDDY_OK;
        t3 = clock_ns();
        buddy_destroy(b);
    } else {
        t0 = clock_ns();
        for (uint64_t i = 0; i < n; i++)
            h[i] = (uint64_t)(uintptr_t)malloc(size);
        t1 = clock_ns();
        r->rss_growth_kib = clock_rss_growth_kib(rss0);
        for (uint64_t i = 0; i < n; i++)
            r->failures += h[i] == 0;
        r->bytes_requested = (n - r->failures) * size;
        t2 = clock_ns();
        for (uint64_t i = 0; i < n; i++)
            free((void *)(uintptr_t)h[order[i]]);
        t3 = clock_ns();
    }
    r->ops = n;
    r->ns = t1 - t0;
    r->ops2 = n;
    r->ns2 = t3 - t2;
    return bad || r->failures ? BENCH_ECHECK : BENCH_OK;
}

/* churn: fill the slots with init[] (untimed), then the steps. */
static int run_churn(int which, uint64_t capacity, uint64_t min_size,
                     uint32_t slots, const uint32_t *init, uint64_t steps,
                     const uint32_t *slot, const uint32_t *size, uint64_t *h,
                     uint32_t *cur, bench_run_t *r)
{
    uint64_t rss0 = clock_peak_rss_kib(), t0, t1, fails = 0;
    int bad = 0;

    memcpy(cur, init, slots * sizeof *cur);
    if (which == BENCH_BUDDY) {
        const uint64_t none = UINT64_MAX;
        buddy_t *b;
        int st = run_new(capacity, min_size, &b, r);
        if (st != BENCH_OK)
            return st;
        for (uint32_t j = 0; j < slots; j++)
            h[j] = (uint64_t)buddy_alloc(b, init[j]);
        t0 = clock_ns();
        for (uint64_t i = 0; i < steps; i++) {
            uint32_t j = slot[i];
            if (h[j] != none)
                bad |= buddy_free(b, h[j], cur[j]) != BUDDY_OK;
            h[j] = (uint64_t)buddy_alloc(b, size[i]);
            fails += h[j] == none;
            cur[j] = size[i];
        }
        t1 = clock_ns();
        r->rss_growth_kib = clock_rss_growth_kib(rss0);
        r->bytes_requested = buddy_stats(b)->bytes_requested;
        buddy_destroy(b);
    } else {
        for (uint32_t j = 0; j < slots; j++)
            h[j] = (uint64_t)(uintptr_t)malloc(init[j]);
        t0 = clock_ns();
        for (uint64_t i = 0; i < steps; i++) {
            uint32_t j = slot[i];
            free((void *)(uintptr_t)h[j]); /* free(NULL) is a no-op */
            h[j] = (uint64_t)(uintptr_t)malloc(size[i]);
            fails += h[j] == 0;
            cur[j] = size[i];
        }
        t1 = clock_ns();
        r->rss_growth_kib = clock_rss_growth_kib(rss0);
        for (uint32_t j = 0; j < slots; j++) {
            r->bytes_requested += h[j] ? cur[j] : 0;
            free((void *)(uintptr_t)h[j]);
        }
    }
    r->ops = steps;
    r->ns = t1 - t0;
    r->failures = fails;
    return bad ? BENCH_ECHECK : BENCH_OK;
}

/* Where the malloc side's pair loop stores each pointer: a volatile store
 * keeps the compiler from removing a malloc that is freed unused. */
static void *volatile bench_sink;

/* pair: `pairs` times alloc one block and free it at once. */
static int run_pair(int which, uint64_t capacity, uint64_t min_size,
                    uint64_t size, uint64_t pairs, bench_run_t *r)
{
    uint64_t rss0 = clock_peak_rss_kib(), t0, t1, fails = 0;
    int bad = 0;

    if (which == BENCH_BUDDY) {
        buddy_t *b;
        int st = run_new(capacity, min_size, &b, r);
        if (st != BENCH_OK)
            return st;
        t0 = clock_ns();
        for (uint64_t i = 0; i < pairs; i++) {
            int64_t o = buddy_alloc(b, size);
            if (o < 0) {
                fails++;
                continue;
            }
            bad |= buddy_free(b, (uint64_t)o, size) != BUDDY_OK;
        }
        t1 = clock_ns();
        r->rss_growth_kib = clock_rss_growth_kib(rss0);
        bad |= buddy_stats(b)->live_blocks != 0;
        buddy_destroy(b);
    } else {
        t0 = clock_ns();
        for (uint64_t i = 0; i < pairs; i++) {
            void *p = malloc(size);
            if (p == NULL) {
                fails++;
                continue;
            }
            bench_sink = p;
            free(p);
        }
        t1 = clock_ns();
        r->rss_growth_kib = clock_rss_growth_kib(rss0);
    }
    r->ops = pairs;
    r->ns = t1 - t0;
    r->failures = fails;
    return bad ? BENCH_ECHECK : BENCH_OK;
}

/* fillrand: allocate size[0..limit) until the first failure. */
static int run_fillrand(int which, uint64_t capacity, uint64_t min_size,
                        const uint32_t *size, uint64_t limit, uint64_t *h,
                        bench_run_t *r)
{
    uint64_t rss0 = clock_peak_rss_kib(), t0, t1, i;

    if (which == BENCH_BUDDY) {
        buddy_t *b;
        int st = run_new(capacity, min_size, &b, r);
        if (st != BENCH_OK)
            return st;
        t0 = clock_ns();
        for (i = 0; i < limit; i++) {
            int64_t o = buddy_alloc(b, size[i]);
            if (o < 0)
                break;
            h[i] = (uint64_t)o;
        }
        t1 = clock_ns();
        r->rss_growth_kib = clock_rss_growth_kib(rss0);
        r->bytes_requested = buddy_stats(b)->bytes_requested;
        buddy_destroy(b);
    } else {
        t0 = clock_ns();
        for (i = 0; i < limit; i++) {
            void *p = malloc(size[i]);
            if (p == NULL)
                break;
            h[i] = (uint64_t)(uintptr_t)p;
        }
        t1 = clock_ns();
        r->rss_growth_kib = clock_rss_growth_kib(rss0);
        for (uint64_t k = 0; k < i; k++) {
            r->bytes_requested += size[k];
            free((void *)(uintptr_t)h[k]);
        }
    }
    r->ops = i;
    r->ns = t1 - t0;
    r->failures = i < limit;
    return BENCH_OK;
}

/* ---- entry points ---------------------------------------------------------- */

static int bench_args_ok(int which, uint32_t runs, const bench_run_t *out)
{
    return (which == BENCH_BUDDY || which == BENCH_MALLOC) && runs > 0 &&
           out != NULL;
}

static int bench_worst(int a, int b) { return a > b ? a : b; }

int bench_fill(int which, uint64_t capacity, uint64_t min_size,
               uint64_t size, uint64_t seed, uint32_t runs, bench_run_t *out)
{
    if (!bench_args_ok(which, runs, out) || !trace_pow2(min_size) ||
        size == 0 || capacity / min_size > UINT32_MAX)
        return BENCH_EINVAL;
    memset(out, 0, runs * sizeof *out);

    uint64_t block = min_size;
    while (block < size)
        block <<= 1;
    uint64_t n = capacity / block;
    uint32_t *order = malloc(n * sizeof *order + 1);
    uint64_t *h = malloc(n * sizeof *h + 1);
    int worst = BENCH_OK;
    if (order == NULL || h == NULL) {
        worst = BENCH_ENOMEM;
        goto done;
    }
    memset(h, 0, n * sizeof *h); /* commit its pages before any RSS reading */
    for (uint64_t i = 0; i < n; i++) /* Fisher-Yates shuffle */
        order[i] = (uint32_t)i;
    for (uint64_t i = n; i > 1; i--) {
        uint64_t j = trace_below(&seed, i);
        uint32_t t = order[i - 1];
        order[i - 1] = order[j];
        order[j] = t;
    }
    for (uint32_t r = 0; r < runs; r++) {
        out[r].status = run_fill(which, capacity, min_size, size, n, order, h,
                                 &out[r]);
        worst = bench_worst(worst, out[r].status);
    }
done:
    free(order);
    free(h);
    return worst;
}

int bench_churn(int which, uint64_t capacity, uint64_t min_size,
                uint32_t slots, uint64_t lo, uint64_t hi, uint64_t steps,
                uint64_t seed, uint32_t runs, bench_run_t *out)
{
    if (!bench_args_ok(which, runs, out) || slots == 0 ||
        !trace_size_range_ok(lo, hi))
        return BENCH_EINVAL;
    memset(out, 0, runs * sizeof *out);

    uint32_t *init = malloc(slots * sizeof *init);
    uint32_t *cur = malloc(slots * sizeof *cur);
    uint64_t *h = malloc(slots * sizeof *h);
    uint32_t *slot = malloc(steps * sizeof *slot + 1);
    uint32_t *size = malloc(steps * sizeof *size + 1);
    int worst = BENCH_OK;
    if (!init || !cur || !h || !slot || !size) {
        worst = BENCH_ENOMEM;
        goto done;
    }
    trace_sizes(&seed, init, slots, lo, hi);
    for (uint64_t i = 0; i < steps; i++)
        slot[i] = (uint32_t)trace_below(&seed, slots);
    trace_sizes(&seed, size, steps, lo, hi);
    for (uint32_t r = 0; r < runs; r++) {
        out[r].status = run_churn(which, capacity, min_size, slots, init,
                                  steps, slot, size, h, cur, &out[r]);
        worst = bench_worst(worst, out[r].status);
    }
done:
    free(init);
    free(cur);
    free(h);
    free(slot);
    free(size);
    return worst;
}

int bench_pair(int which, uint64_t capacity, uint64_t min_size,
               uint64_t size, uint64_t pairs, uint32_t runs, bench_run_t *out)
{
    if (!bench_args_ok(which, runs, out) || !trace_pow2(min_size))
        return BENCH_EINVAL;
    memset(out, 0, runs * sizeof *out);

    int worst = BENCH_OK;
    for (uint32_t r = 0; r < runs; r++) {
        out[r].status = run_pair(which, capacity, min_size, size, pairs, &out[r]);
        worst = bench_worst(worst, out[r].status);
    }
    return worst;
}

int bench_fillrand(int which, uint64_t capacity, uint64_t min_size,
                   uint64_t lo, uint64_t hi, uint64_t seed, uint32_t runs,
                   const uint64_t *limits, bench_run_t *out)
{
    if (!bench_args_ok(which, runs, out) || !trace_pow2(min_size) ||
        !trace_size_range_ok(lo, hi) || (which == BENCH_MALLOC && !limits))
        return BENCH_EINVAL;
    memset(out, 0, runs * sizeof *out);

    /* The buddy side can never make more than capacity / smallest block
     * allocations; one more draw is the one that fails. */
    uint64_t most = capacity / (lo > min_size ? lo : min_size) + 1;
    if (limits != NULL)
        for (uint32_t r = 0; r < runs; r++)
            if (limits[r] > most)
                return BENCH_EINVAL;
    uint32_t *size = malloc(most * sizeof *size);
    uint64_t *h = malloc(most * sizeof *h);
    int worst = BENCH_OK;
    if (!size || !h) {
        worst = BENCH_ENOMEM;
        goto done;
    }
    memset(h, 0, most * sizeof *h); /* commit its pages before any RSS reading */
    for (uint32_t r = 0; r < runs; r++) {
        uint64_t s = seed + r;
        trace_sizes(&s, size, most, lo, hi);
        out[r].status = run_fillrand(which, capacity, min_size, size,
                                     limits ? limits[r] : most, h, &out[r]);
        worst = bench_worst(worst, out[r].status);
    }
done:
    free(size);
    free(h);
    return worst;
}

const char *bench_compiler(void)
{
#if defined(__clang__)
#define BENCH_CC "clang " __clang_version__
#elif defined(__GNUC__)
#define BENCH_CC "gcc " __VERSION__
#else
#define BENCH_CC "unknown compiler"
#endif
#ifdef __OPTIMIZE__
    return BENCH_CC ", optimized";
#else
    return BENCH_CC ", not optimized";
#endif
}

const char *bench_strerror(int status)
{
    switch (status) {
    case BENCH_OK:
        return "ok";
    case BENCH_EINVAL:
        return "bad argument to the benchmark driver";
    case BENCH_ENOMEM:
        return "no memory for the trace or the allocator's metadata";
    case BENCH_ECHECK:
        return "the allocator misbehaved: a free was refused, a fill did "
               "not end exactly full or a pair left a block live";
    default:
        return "unknown benchmark status";
    }
}

/*
 * bench.h -- the C-level benchmark driver (docs/workloads.md, "C level").
 *
 * Each entry point runs one named workload entirely in C: it draws the whole
 * trace (sizes, slots, free order) from a seeded splitmix64 generator into
 * arrays first, then times only the measured loop with
 * clock_gettime(CLOCK_MONOTONIC).  The same function drives either the buddy
 * core over an offset range (BENCH_BUDDY; the core never touches arena
 * memory, so no arena is mapped) or glibc malloc/free (BENCH_MALLOC) on the
 * identical trace, so every figure has a same-run reference.
 *
 * `runs` runs are made back to back on the same trace (fillrand: seed + r
 * for run r), each on a fresh allocator; out[r] receives run r.  The caller
 * decides which runs are warm-up.  Every function returns BENCH_OK, or the
 * worst status of any run (see bench_strerror); out[] is filled either way.
 *
 * Sizes lo and hi must be powers of two with lo <= hi <= 2^30; a size drawn
 * "log-uniform in [lo, hi]" is int(2 ** uniform(log2 lo, log2 hi)).
 * Not thread-safe (nothing shared, but the caller owns out[]).
 */
#ifndef BENCH_H
#define BENCH_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Which allocator a run drives. */
#define BENCH_BUDDY 0
#define BENCH_MALLOC 1

/* Statuses: OK; a bad argument; no memory for the trace or the core's
 * metadata; the allocator misbehaved (a free was refused, or a fill did not
 * end exactly full). */
#define BENCH_OK 0
#define BENCH_EINVAL 1
#define BENCH_ENOMEM 2
#define BENCH_ECHECK 3

/* One run.  Phase 1 is the workload's main loop (fill: the allocations;
 * churn: the steps; pair: the pairs; fillrand: the allocations up to the
 * first failure);
 * phase 2 is fill's frees in shuffled order (0 elsewhere). */
typedef struct bench_run {
    uint64_t ops;             /* operations timed in phase 1 */
    uint64_t ns;              /* wall time of phase 1 */
    uint64_t ops2;            /* operations timed in phase 2, or 0 */
    uint64_t ns2;             /* wall time of phase 2, or 0 */
    uint64_t failures;        /* allocations refused during phase 1 */
    uint64_t bytes_requested; /* live requested bytes at the end of phase 1 */
    uint64_t metadata_bytes;  /* buddy_metadata_bytes(); 0 for malloc */
    uint64_t rss_growth_kib;  /* growth of the process's peak RSS (VmHWM)
                                 from just before the allocator is created
                                 to the end of phase 1 (the trace is
                                 already drawn by then) */
    int32_t status;           /* BENCH_OK or another BENCH_* status */
} bench_run_t;

/* fill64-shuf: allocate blocks of `size` until the arena is full
 * (capacity / block size of them; malloc makes as many), then free them all
 * in a shuffled order.  Phase 1 = allocations, phase 2 = frees. */
int bench_fill(int which, uint64_t capacity, uint64_t min_size,
               uint64_t size, uint64_t seed, uint32_t runs, bench_run_t *out);

/* churn and its variants: fill `slots` live slots (untimed), then `steps`
 * times free a random slot (if it holds a block) and allocate a new size
 * log-uniform in [lo, hi] into it.  A refused allocation leaves the slot
 * empty and counts as a failure. */
int bench_churn(int which, uint64_t capacity, uint64_t min_size,
                uint32_t slots, uint64_t lo, uint64_t hi, uint64_t steps,
                uint64_t seed, uint32_t runs, bench_run_t *out);

/* pair64-empty: `pairs` times allocate one block of `size` and free it at
 * once, on an otherwise empty allocator (for the buddy core with size <=
 * min_size: the deepest split and merge there is).  ops = pairs; failures
 * = allocations refused (a refused pair frees nothing). */
int bench_pair(int which, uint64_t capacity, uint64_t min_size,
               uint64_t size, uint64_t pairs, uint32_t runs, bench_run_t *out);

/* fillrand: allocate sizes log-uniform in [lo, hi] until the first
 * failure; ops = allocations that succeeded, failures = 1 if one failed.
 * malloc has no capacity: it makes limits[r] allocations of run r's trace
 * (pass the buddy runs' ops); limits may be NULL for BENCH_BUDDY only. */
int bench_fillrand(int which, uint64_t capacity, uint64_t min_size,
                   uint64_t lo, uint64_t hi, uint64_t seed, uint32_t runs,
                   const uint64_t *limits, bench_run_t *out);

/* The compiler that built the driver, e.g. "gcc 12.2.0, optimized". */
const char *bench_compiler(void);

/* A constant sentence for a BENCH_* status (never NULL). */
const char *bench_strerror(int status);

#ifdef __cplusplus
}
#endif

#endif /* BENCH_H */

/*
 * buddy.c -- the buddy allocator described in buddy.h.
 *
 * Layers, bottom up:
 *   bits_   one bitmap with summary levels above it (find-first-set in
 *           O(depth), set/clear touching a word per level at most)
 *   order_  the free bitmap, split bitmap and free counter of one order
 *   node_   predicates on a block (order k, index i) of the buddy tree
 *   buddy_  the public functions
 *
 * State of block (k, i), which covers minimum blocks [i*2^k, (i+1)*2^k):
 *   it is a node of the tree  iff  k == L or split[k+1] has bit i/2;
 *   a node is free            iff  free[k] has bit i,
 *             split           iff  split[k] has bit i,
 *             allocated       iff  neither.
 *   Bits of blocks that are not nodes are zero.  A node that is only partly
 *   inside the arena (the tail past N) is always split; a block wholly past
 *   N has no bits at all and is never free.  buddy_check() verifies this.
 */
#if !defined(_WIN32) && !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE /* posix_memalign, MAP_ANONYMOUS, MAP_NORESERVE */
#endif
#include "buddy.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifndef _WIN32
#include <sys/mman.h>
#include <unistd.h>
#endif

/* An allocator laid out in caller memory (buddy_init_at) has no mutex of its
 * own: its memory may be shared by processes, and a process that died
 * holding a plain mutex would hang every other one.  Its caller serialises
 * (csrc/pool.c holds a robust process-shared mutex). */
#if defined(BUDDY_LOCKED) && BUDDY_LOCKED
#include <pthread.h>
#define LOCK(b)                                                               \
    do {                                                                      \
        if (((const buddy_t *)(b))->storage != STORAGE_CALLER)                \
            pthread_mutex_lock(&((buddy_t *)(b))->lock);                      \
    } while (0)
#define UNLOCK(b)                                                             \
    do {                                                                      \
        if (((const buddy_t *)(b))->storage != STORAGE_CALLER)                \
            pthread_mutex_unlock(&((buddy_t *)(b))->lock);                    \
    } while (0)
#else
#define LOCK(b) ((void)0)
#define UNLOCK(b) ((void)0)
#endif

/* Internal assertions cost nothing unless a build defines BUDDY_ASSERT. */
#ifndef BUDDY_ASSERT
#define BUDDY_ASSERT(x) ((void)0)
#endif

/* Forces inlining of the functions on the alloc and free paths.  GCC
 * otherwise keeps node_probe, alloc_locked and free_locked out of line
 * (node_probe's two results then go through memory).  Callgrind, churn:
 * 371 -> 309 instructions a step (326 for node_probe alone). */
#if defined(__GNUC__)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE inline
#endif

#define BITS_MAX_DEPTH 11 /* ceil(64 / 6): enough for 2^64 bits */

/* The top level of a bitmap (its root) holds up to this many words, one
 * cache line; taking the lowest bit scans it from its first word.  A root
 * of one word would add a level to many arenas -- 64 MiB of 64-byte blocks
 * needs 3 levels with it, not 4 -- and placement is address-ordered, so the
 * scan nearly always stops at the first word.  C churn through
 * csrc/bench.c, median of 7: 21.0-21.1 -> 19.6-19.8 ns a step. */
#define BITS_ROOT_WORDS 8

/* ---- bits_: a bitmap with summaries ------------------------------------ */

/* Level d of the bitmap is the array of words at byte offset rel[d] from
 * the start of the allocator's region (the struct buddy): no pointers, so the
 * whole region may be mapped at a different address in every process.
 * Level 0 holds the bits; bit w of level d+1 is set iff word w of level d is
 * non-zero; level depth-1, the root, has at most BITS_ROOT_WORDS words and
 * is the bits_t's own root[] (rel[depth-1] points there): a walk down the
 * tree starts with a load whose address needs no offset loaded first.
 * The walk's loads wait on each other, so its first one counts: C churn
 * through csrc/bench.c, median of 7, 3 alternating runs: 18.4-18.5 ->
 * 17.9-18.4 ns a step (a 1 GiB arena: 20.8-21.0 -> 20.2-20.9).  Every
 * bits_ function takes the region's base `r` (the buddy_t) beside the
 * bits_t, which lies inside it. */
typedef struct bits {
    uint64_t rel[BITS_MAX_DEPTH];
    uint32_t depth;
    uint32_t unused; /* zero */
    uint64_t root[BITS_ROOT_WORDS]; /* level depth-1; unused words zero */
} bits_t;

/* Level d of s in the region at r. */
static inline uint64_t *bits_lvl(const void *r, const bits_t *s, uint32_t d)
{
    return (uint64_t *)((char *)(uintptr_t)r + s->rel[d]);
}

/* The index of x's lowest set bit; x != 0.  On x86-64 GCC and Clang the
 * instruction is written out: __builtin_ctzll returns an int, and GCC
 * sign-extends it (one more instruction, and one more cycle on each level
 * of a descent, whose loads wait for it).  TZCNT runs as BSF on a CPU
 * without BMI1, which gives the same index for every x != 0.  C churn
 * through csrc/bench.c, median of 7, 3 alternating runs: 18.9-20.2 ->
 * 18.3-18.5 ns a step. */
#if defined(__x86_64__) && defined(__GNUC__)
static inline uint64_t bits_ctz(uint64_t x)
{
    uint64_t r;
    __asm__("tzcnt %1, %0" : "=r"(r) : "rm"(x) : "cc");
    return r;
}
#else
static inline uint64_t bits_ctz(uint64_t x) { return (uint64_t)__builtin_ctzll(x); }
#endif
static inline unsigned bits_clz(uint64_t x) { return (unsigned)__builtin_clzll(x); }

static inline int bits_test(const uint64_t *w, uint64_t i)
{
    return (int)((w[i >> 6] >> (i & 63)) & 1u);
}

static inline void bits_flip_raw(uint64_t *w, uint64_t i)
{
    w[i >> 6] ^= (uint64_t)1 << (i & 63);
}

static inline uint64_t bits_words(uint64_t nbits) { return (nbits + 63) >> 6; }

/* Sets bit i and its summary bits.  Every level is written, without
 * testing whether the summary bit was already set: on churn the bitmaps are
 * sparse, so the test rarely stopped early (the same instructions a step,
 * callgrind) and it was a data-dependent branch.  Depths 3 and 4 are
 * written out (the depth is the same for every order of more than one
 * word), the loop serves the others; always inlined, as its callers on the
 * free path are.  C churn through csrc/bench.c, median of 7, with
 * bits_take_first inlined too: 19.6-19.8 -> 18.8-19.0 ns a step (a switch
 * falling through depths 4 to 1 instead: 19.4-19.7). */
static ALWAYS_INLINE void bits_set(void *r, bits_t *s, uint64_t i)
{
    char *base = (char *)r;
    /* depth in a local: the stores below may alias *s (one region), so
     * s->depth would be loaded again after each.  Churn: 25.0-25.5 ->
     * 24.3-24.6 ns a step (C loop, best of 5, alternating). */
    uint32_t depth = s->depth;
    if (depth == 3) {
        ((uint64_t *)(base + s->rel[0]))[i >> 6] |= (uint64_t)1 << (i & 63);
        ((uint64_t *)(base + s->rel[1]))[i >> 12] |= (uint64_t)1 << ((i >> 6) & 63);
        s->root[i >> 18] |= (uint64_t)1 << ((i >> 12) & 63);
        return;
    }
    if (depth == 4) {
        ((uint64_t *)(base + s->rel[0]))[i >> 6] |= (uint64_t)1 << (i & 63);
        ((uint64_t *)(base + s->rel[1]))[i >> 12] |= (uint64_t)1 << ((i >> 6) & 63);
        ((uint64_t *)(base + s->rel[2]))[i >> 18] |= (uint64_t)1 << ((i >> 12) & 63);
        s->root[i >> 24] |= (uint64_t)1 << ((i >> 18) & 63);
        return;
    }
    for (uint32_t d = 0; d < depth; d++, i >>= 6)
        bits_lvl(r, s, d)[i >> 6] |= (uint64_t)1 << (i & 63);
}

static void bits_clear(void *r, bits_t *s, uint64_t i)
{
    uint32_t depth = s->depth; /* a local, as in bits_set */
    for (uint32_t d = 0; d < depth; d++) {
        uint64_t *w = &bits_lvl(r, s, d)[i >> 6];
        *w &= ~((uint64_t)1 << (i & 63));
        if (*w)
            return; /* word still non-zero: summary unchanged */
        i >>= 6;
    }
}

/* The index of the root's first non-zero word; it must have one. */
static inline uint64_t bits_root_first(const uint64_t *root)
{
    uint64_t t = 0;
    while (root[t] == 0)
        t++;
    return t;
}

/* Clears the lowest set bit and returns its index; the bitmap must not be
 * empty.  One descent finds it (the first non-zero root word, then the
 * lowest bit of each word on the way down); then the way up clears it and,
 * for as long as the words below became zero, its summary bits.  The way
 * up visits every level without a branch: whether a word emptied is data
 * (on churn the lowest word empties on most allocations) and the branch
 * mispredicted.  Churn, CPU time of interleaved runs (median ratio of
 * 11-21 pairs): 0.915x against a branch per level, and 0.972x against
 * keeping the descent's word pointers for the way up (callgrind: 341 ->
 * 338 instructions a step).
 *
 * This loop serves any depth; bits_take_first below writes out the usual
 * ones. */
static uint64_t bits_take_first_any(void *r, bits_t *s)
{
    uint32_t depth = s->depth; /* a local, as in bits_set */
    const uint64_t *root = bits_lvl(r, s, depth - 1);
    uint64_t t = bits_root_first(root);
    uint64_t i = (t << 6) | bits_ctz(root[t]);
    for (uint32_t d = depth - 1; d-- > 0;)
        i = (i << 6) | bits_ctz(bits_lvl(r, s, d)[i]);
    uint64_t clear = 1, x = i; /* clear: 1 while the words below emptied */
    for (uint32_t d = 0; d < depth; d++, x >>= 6) {
        uint64_t *w = &bits_lvl(r, s, d)[x >> 6];
        uint64_t left = *w & ~(clear << (x & 63));
        *w = left;
        clear &= (left == 0);
    }
    return i;
}

/* bits_take_first_any for depths 2, 3 and 4 (up to 2^27 minimum blocks,
 * e.g. an 8 GiB arena of 64-byte blocks), written out: the same descent
 * and way up, each level's word read once, no loop.  Measured, C churn
 * through csrc/bench.c (median of 7, the same build otherwise): 26.8 ->
 * 23.9 ns a step (churn-dense 26.0 -> 22.4) when the depth still varied
 * with the order; with the orders at one depth (layout_depth), 27.0 ->
 * 22.1.  (Writing bits_set out the same way gained nothing then; with
 * both inlined it does: see bits_set.) */
static ALWAYS_INLINE uint64_t bits_take_first(void *r, bits_t *s)
{
    char *base = (char *)r;
    uint64_t *l0, *l1, *l2, *l3, w0, w1, w2, t, x1, x2, x3, i;
    switch (s->depth) {
    case 2:
        l1 = s->root;
        l0 = (uint64_t *)(base + s->rel[0]);
        t = bits_root_first(l1);
        x1 = (t << 6) | bits_ctz(l1[t]);
        w0 = l0[x1];
        i = (x1 << 6) | bits_ctz(w0);
        w0 &= w0 - 1; /* the lowest bit off */
        l0[x1] = w0;
        l1[t] &= ~((uint64_t)(w0 == 0) << (x1 & 63));
        return i;
    case 3:
        l2 = s->root;
        l1 = (uint64_t *)(base + s->rel[1]);
        l0 = (uint64_t *)(base + s->rel[0]);
        t = bits_root_first(l2);
        x2 = (t << 6) | bits_ctz(l2[t]);
        x1 = (x2 << 6) | bits_ctz(l1[x2]);
        w0 = l0[x1];
        i = (x1 << 6) | bits_ctz(w0);
        w0 &= w0 - 1;
        l0[x1] = w0;
        w1 = l1[x2] & ~((uint64_t)(w0 == 0) << (x1 & 63));
        l1[x2] = w1;
        l2[t] &= ~((uint64_t)(w1 == 0) << (x2 & 63));
        return i;
    case 4:
        l3 = s->root;
        l2 = (uint64_t *)(base + s->rel[2]);
        l1 = (uint64_t *)(base + s->rel[1]);
        l0 = (uint64_t *)(base + s->rel[0]);
        t = bits_root_first(l3);
        x3 = (t << 6) | bits_ctz(l3[t]);
        x2 = (x3 << 6) | bits_ctz(l2[x3]);
        x1 = (x2 << 6) | bits_ctz(l1[x2]);
        w0 = l0[x1];
        i = (x1 << 6) | bits_ctz(w0);
        w0 &= w0 - 1;
        l0[x1] = w0;
        w1 = l1[x2] & ~((uint64_t)(w0 == 0) << (x1 & 63));
        l1[x2] = w1;
        w2 = l2[x3] & ~((uint64_t)(w1 == 0) << (x2 & 63));
        l2[x3] = w2;
        l3[t] &= ~((uint64_t)(w2 == 0) << (x3 & 63));
        return i;
    default:
        return bits_take_first_any(r, s);
    }
}

/* ---- the allocator ------------------------------------------------------ */

typedef struct order {
    bits_t free;     /* free blocks of this order, with summaries */
    uint64_t split;  /* byte offset of the split bitmap in the region;
                        0 (none) for order 0 */
    uint64_t nbits;  /* N_k = ceil(N / 2^k) blocks at least partly inside */
    /* Always zero: a descriptor of a power of two bytes (256, with its
     * root) makes b->order[k] one shift instead of a multiply (with 128
     * bytes against 112, before the root moved in: churn 349 -> 341
     * instructions a step, callgrind, and 0.954x the time, median of 21
     * interleaved run pairs). */
    uint64_t pad[10];
} order_t;
typedef char order_t_is_256_bytes[sizeof(order_t) == 256 ? 1 : -1];

/* Where the region came from, so that close and destroy release it right. */
#define STORAGE_CALLOC 1 /* buddy_new, under BUDDY_MMAP_MIN bytes */
#define STORAGE_MMAP 2   /* buddy_new, from BUDDY_MMAP_MIN bytes on */
#define STORAGE_CALLER 3 /* buddy_init_at / buddy_attach_at */

/* Regions from this size on are mmap'd (POSIX): pages are committed only as
 * they are first touched, MAP_NORESERVE lets the metadata of a huge arena
 * exceed what the system would reserve, and close can return the pages. */
#define BUDDY_MMAP_MIN ((uint64_t)1 << 20)

#define BUDDY_MAGIC 0x79646475426f6c41u /* "AloBuddy" little-endian */

/* The region: this struct, then order[0 .. top], then every bitmap, in one
 * piece of buddy_metadata_bytes() bytes with no pointer in it. */
struct buddy {
    uint64_t magic;       /* BUDDY_MAGIC */
    uint32_t version;     /* BUDDY_LAYOUT_VERSION */
    uint32_t head_bytes;  /* sizeof(buddy_t): differs between builds */
    uint64_t region_bytes; /* the whole region, as mapped/allocated now */
    buddy_stats_t st;
    uint64_t nmin;     /* N: minimum blocks in the arena */
    uint64_t nonempty; /* bit k set iff st.free_blocks[k] > 0 */
    uint32_t storage;  /* STORAGE_* */
    uint32_t shift;    /* log2(min_size) */
    uint32_t top;      /* L */
    /* The pending split (see chain_ below): the block of order chain_top
     * that covers minimum blocks [chain_base, chain_base + chain_span) was
     * split down to order chain_low, but only the counters say so yet; the
     * block it handed out starts at byte chain_off.  No pending split:
     * chain_span == 0, chain_low == CHAIN_NONE, chain_off == UINT64_MAX
     * (so the tests below need no separate "is one pending" test). */
    uint32_t chain_top, chain_low;
    uint64_t chain_base, chain_span, chain_off;
    /* The orders in [chain_low, chain_top) whose free count the split
     * raised from 0, while no other operation has changed a free count
     * since; CHAIN_FRESH_UNKNOWN once one has (see chain_cancel). */
    uint64_t chain_fresh;
    /* Live blocks larger than their size needs (buddy_alloc_aligned) break
     * the rule buddy_check uses, "a block of order k >= 1 holds more than
     * half its size"; this is the sum of what that rule would demand of
     * them, taken off its lower bound. */
    uint64_t aligned_slack;
#if defined(BUDDY_LOCKED) && BUDDY_LOCKED
    pthread_mutex_t lock;
#endif
    order_t order[]; /* top + 1 entries */
};

static inline unsigned log2_ceil(uint64_t n) /* n >= 1 */
{
    return n <= 1 ? 0u : 64u - bits_clz(n - 1);
}

/* Levels of the free bitmap of an order of `words` words: one if one
 * word holds it, else D, the levels order 0's needs to reach a root of at
 * most BITS_ROOT_WORDS words (D >= the order's own).  The trees of the
 * orders below the one-word ones are topped up with one-word levels where
 * they need fewer (bit 0 set iff the word below is non-zero), so the
 * walks up and down a tree (bits_set, bits_take_first) take the same path
 * at each of those orders: which order a request falls in is data, and a
 * walk whose length followed it mispredicted (a switch or a loop exit per
 * walk; cachegrind's branch model: ~0.9 missed branches a churn step in
 * the core, ~0.3 after).  Churn through csrc/bench.c, median of 7: 23.7
 * -> 22.1-22.4 ns a step, churn-75pct 24.5 -> 22.7.  The one-word orders
 * keep their one level: topping up the top order too made each pair on
 * an empty arena (it takes and frees that order's block) 19.1 -> 24-30 ns.
 * At most L D words more than each order's own tree would need. */
static uint32_t layout_depth(uint64_t nmin, uint64_t words)
{
    uint32_t depth = 1;
    if (words > 1)
        for (uint64_t w = bits_words(nmin); w > BITS_ROOT_WORDS; w = bits_words(w))
            depth++;
    return depth;
}

/* Words of metadata for N minimum blocks after the descriptors: the levels
 * of the free bitmaps below their roots, and the split bitmaps. */
static uint64_t layout_words(uint64_t nmin, unsigned top)
{
    uint64_t words = 0;
    for (unsigned k = 0; k <= top; k++) {
        uint64_t nbits = ((nmin - 1) >> k) + 1;
        uint64_t w = bits_words(nbits);
        uint32_t depth = layout_depth(nmin, w);
        if (k > 0)
            words += w; /* split bitmap */
        for (uint32_t d = 0; d + 1 < depth; d++) { /* below the root */
            words += w;
            w = bits_words(w);
        }
    }
    return words;
}

static int args_valid(uint64_t capacity, uint64_t min_size)
{
    return min_size != 0 && (min_size & (min_size - 1)) == 0 &&
           capacity >= min_size && capacity <= BUDDY_MAX_CAPACITY;
}

uint64_t buddy_metadata_bytes(uint64_t capacity, uint64_t min_size)
{
    if (!args_valid(capacity, min_size))
        return 0;
    uint64_t nmin = capacity / min_size;
    unsigned top = log2_ceil(nmin);
    return sizeof(buddy_t) + (top + 1) * sizeof(order_t) +
           8 * layout_words(nmin, top); /* = layout_head(top) + bitmaps */
}

/* ---- order_ / node_ ----------------------------------------------------- */

static inline uint64_t *order_split(const buddy_t *b, unsigned k)
{
    return (uint64_t *)((char *)(uintptr_t)b + b->order[k].split);
}

static inline uint64_t *order_free(const buddy_t *b, unsigned k)
{
    return bits_lvl(b, &b->order[k].free, 0);
}

static ALWAYS_INLINE void order_set_free(buddy_t *b, unsigned k, uint64_t i)
{
    bits_set(b, &b->order[k].free, i);
    if (b->st.free_blocks[k]++ == 0)
        b->nonempty |= (uint64_t)1 << k;
}

static inline void order_clear_free(buddy_t *b, unsigned k, uint64_t i)
{
    bits_clear(b, &b->order[k].free, i);
    if (--b->st.free_blocks[k] == 0)
        b->nonempty &= ~((uint64_t)1 << k);
}

static inline int node_is_free(const buddy_t *b, unsigned k, uint64_t i)
{
    return bits_test(order_free(b, k), i);
}

static inline int node_is_split(const buddy_t *b, unsigned k, uint64_t i)
{
    return k > 0 && bits_test(order_split(b, k), i);
}

static inline int node_exists(const buddy_t *b, unsigned k, uint64_t i)
{
    return k == b->top || bits_test(order_split(b, k + 1), i >> 1);
}

/* Order a request of `size` bytes needs; may exceed b->top. */
static inline unsigned node_order_for(const buddy_t *b, uint64_t size)
{
    if (size <= b->st.min_size)
        return 0;
    return 64u - bits_clz((size - 1) >> b->shift);
}

/* Order of a block for `size` bytes at a multiple of `align` (0 or a power
 * of two): the larger of the two, since every block is naturally aligned. */
static inline unsigned node_order_aligned(const buddy_t *b, uint64_t size,
                                          uint64_t align)
{
    unsigned k = node_order_for(b, size);
    unsigned a = node_order_for(b, align);
    return a > k ? a : k;
}

/* ---- chain_: the pending split ------------------------------------------
 *
 * Splitting block (j, i) down to order k keeps the lower halves and frees
 * the upper halves (m, (i << (j - m)) + 1) for m = k .. j-1; freeing the
 * kept block again merges all of them back.  On a deep tree (an empty 64 MiB
 * arena of 64-byte blocks: 20 levels) that is ~40 bitmap updates with their
 * summaries per alloc+free pair, and the pair -- one buffer in flight, freed
 * before the next is taken -- is the commonest pattern there is.
 *
 * So the most recent split is recorded, not written: the counters
 * (free_blocks, nonempty) are updated at once and are always exact, but the
 * bitmaps below (j, i) stay all zero and (j, i) itself is simply not free.
 * Freeing the kept block cancels the record; any other operation that
 * would read bits inside (j, i) writes the split out first (chain_settle),
 * which is exactly the work the eager split would have done.  Every
 * statistic, every placement and every status is the same as with eager
 * splitting; measured on pair64-empty: ~100 -> ~20 ns per pair. */

/* Adds d (1, or -1 modulo 2^64) to the free counts of orders lo .. hi-1,
 * eight at a time, then 4, 2 and 1 (GCC turns the blocks into 16-byte SSE
 * additions).  On an empty 64 MiB / 64 B arena a pair changes 20 counts
 * each way.  Callgrind, pair64-empty: 474 -> 432 instructions a pair
 * against a plain loop.  The pair is bound by its stores more than by its
 * instructions: a jump into a run of single additions (one instruction an
 * order, 298 a pair, twice the stores) took 24 ns a pair against this
 * one's 20 (interleaved medians). */
static inline void counts_add(uint64_t *n, unsigned lo, unsigned hi, uint64_t d)
{
    uint64_t *p = n + lo;
    unsigned count = hi - lo;
    for (; count >= 8; count -= 8, p += 8) {
        p[0] += d, p[1] += d, p[2] += d, p[3] += d;
        p[4] += d, p[5] += d, p[6] += d, p[7] += d;
    }
    if (count & 4) {
        p[0] += d, p[1] += d, p[2] += d, p[3] += d;
        p += 4;
    }
    if (count & 2) {
        p[0] += d, p[1] += d;
        p += 2;
    }
    if (count & 1)
        p[0] += d;
}

#define CHAIN_NONE 0xFFu /* chain_low when nothing is pending: no order */
#define CHAIN_FRESH_UNKNOWN UINT64_MAX /* bit 63: never an order below top */

static inline int chain_pending(const buddy_t *b) { return b->chain_span != 0; }

/* 1 if minimum block `j` lies inside the block of the pending split: one
 * subtract and compare (0 when none is pending: the span is then 0). */
static inline int chain_covers(const buddy_t *b, uint64_t j)
{
    return j - b->chain_base < b->chain_span;
}

/* 1 if (offset, order k) is the block the pending split handed out. */
static inline int chain_is_kept(const buddy_t *b, uint64_t offset, unsigned k)
{
    return offset == b->chain_off && k == b->chain_low;
}

/* No split pending.  The other chain_ fields mean nothing then and are
 * left as they are (the pair is bound by its stores). */
static inline void chain_forget(buddy_t *b)
{
    b->chain_span = 0;
    b->chain_low = CHAIN_NONE;
    b->chain_off = UINT64_MAX;
}

/* Records that block (j, i) was split down to order k: adds one to the free
 * count of orders k .. j-1 and updates the non-empty mask to match (and
 * notes which orders it made non-empty, for chain_cancel). */
static inline void chain_record(buddy_t *b, unsigned j, unsigned k, uint64_t i)
{
    uint64_t range = (((uint64_t)1 << j) - 1) & ~(((uint64_t)1 << k) - 1);
    counts_add(b->st.free_blocks, k, j, 1);
    b->chain_fresh = range & ~b->nonempty;
    b->nonempty |= range;
    b->chain_top = j;
    b->chain_low = k;
    b->chain_base = i << j;
    b->chain_span = (uint64_t)1 << j;
    b->chain_off = (i << j) << b->shift;
}

/* Some free count changed while a split is pending: chain_fresh no longer
 * says which orders the cancellation empties (one store per free). */
static inline void chain_counts_moved(buddy_t *b)
{
    b->chain_fresh = CHAIN_FRESH_UNKNOWN;
}

/* Cancels the pending split (its kept block was freed): takes one away from
 * the free counts of orders chain_low .. chain_top-1.  The orders that
 * become empty are those the split made non-empty (chain_fresh) unless
 * another free count moved since; only then is each count compared.
 * Callgrind, pair64-empty: the compare-per-order loop cost ~9 instructions
 * an order (20 orders a pair); this is ~1-2. */
static inline void chain_cancel(buddy_t *b)
{
    uint64_t *n = b->st.free_blocks;
    unsigned lo = b->chain_low, hi = b->chain_top;
    counts_add(n, lo, hi, (uint64_t)-1);
    uint64_t emptied = b->chain_fresh;
    if (emptied == CHAIN_FRESH_UNKNOWN) {
        emptied = 0;
        for (unsigned m = lo; m < hi; m++)
            emptied |= (uint64_t)(n[m] == 0) << m;
    }
    b->nonempty &= ~emptied;
    chain_forget(b);
}

/* Writes the pending split into the bitmaps (counters are already right). */
static void chain_settle(buddy_t *b)
{
    if (!chain_pending(b))
        return;
    unsigned j = b->chain_top, k = b->chain_low;
    uint64_t i = b->chain_base >> j;
    chain_forget(b);
    while (j > k) {
        bits_flip_raw(order_split(b, j), i);
        j--;
        i <<= 1;
        bits_set(b, &b->order[j].free, i + 1);
    }
}

/* ---- life cycle --------------------------------------------------------- */

/* Bytes of the struct and its order[] array: where the bitmaps begin. */
static uint64_t layout_head(unsigned top)
{
    return sizeof(buddy_t) + (top + 1) * sizeof(order_t);
}

/* The descriptors of every order for N = nmin (bitmap offsets, depths,
 * sizes), written into *b, or, with `verify`, compared with *b: 1 if they
 * agree.  Either way O(L D). */
static int layout_carve(buddy_t *b, uint64_t nmin, unsigned top, int verify)
{
    uint64_t at = layout_head(top);
    for (unsigned k = 0; k <= top; k++) {
        order_t want;
        memset(&want, 0, sizeof want);
        want.nbits = ((nmin - 1) >> k) + 1;
        uint64_t w = bits_words(want.nbits);
        if (k > 0) {
            want.split = at;
            at += 8 * w;
        }
        want.free.depth = layout_depth(nmin, w);
        for (uint32_t d = 0; d + 1 < want.free.depth; d++) { /* below the root */
            want.free.rel[d] = at;
            at += 8 * w;
            w = bits_words(w);
        }
        want.free.rel[want.free.depth - 1] =
            (uint64_t)((char *)b->order[k].free.root - (char *)b);
        if (!verify) {
            b->order[k] = want;
            continue;
        }
        /* the root's words are state, not layout */
        memcpy(want.free.root, b->order[k].free.root, sizeof want.free.root);
        if (memcmp(&b->order[k], &want, sizeof want) != 0)
            return 0;
    }
    BUDDY_ASSERT(at == layout_head(top) + 8 * layout_words(nmin, top));
    return 1;
}

/* Lays out a fresh allocator in the zeroed region at b. */
static void layout_init(buddy_t *b, uint64_t capacity, uint64_t min_size,
                        uint32_t storage)
{
    uint64_t nmin = capacity / min_size;
    unsigned top = log2_ceil(nmin);
    b->magic = BUDDY_MAGIC;
    b->version = BUDDY_LAYOUT_VERSION;
    b->head_bytes = (uint32_t)sizeof(buddy_t);
    b->region_bytes = buddy_metadata_bytes(capacity, min_size);
    b->storage = storage;
    b->nmin = nmin;
    b->top = top;
    b->shift = (uint32_t)bits_ctz(min_size);
    b->st.capacity = nmin * min_size;
    b->st.min_size = min_size;
    b->st.max_order = top;
    chain_forget(b);
    layout_carve(b, nmin, top, 0);

    /* Make the tree cover exactly N minimum blocks: split the one node per
     * order that straddles N, free the whole nodes beside it.  O(L). */
    unsigned k = top;
    uint64_t i = 0;
    if (nmin == (uint64_t)1 << top) {
        order_set_free(b, k, i);
    } else {
        for (;;) {
            bits_flip_raw(order_split(b, k), i); /* straddles N: split */
            k--;
            uint64_t left = i << 1, right = left + 1;
            if ((right << k) <= nmin) { /* left child wholly inside */
                order_set_free(b, k, left);
                if ((right << k) == nmin)
                    break; /* right child wholly outside */
                i = right;
            } else {
                i = left; /* left straddles; right is wholly outside */
            }
        }
    }
}

static void region_release(buddy_t *b)
{
#ifndef _WIN32
    if (b->storage == STORAGE_MMAP) {
        munmap(b, (size_t)b->region_bytes);
        return;
    }
#endif
    free(b);
}

buddy_status buddy_new(uint64_t capacity, uint64_t min_size, buddy_t **out)
{
    if (out == NULL || !args_valid(capacity, min_size))
        return BUDDY_EINVAL;
    uint64_t bytes = buddy_metadata_bytes(capacity, min_size);
    if (bytes > SIZE_MAX)
        return BUDDY_ENOMEM;
    buddy_t *b = NULL;
    uint32_t storage = STORAGE_CALLOC;
#ifndef _WIN32
    if (bytes >= BUDDY_MMAP_MIN) {
        void *m = mmap(NULL, (size_t)bytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED)
            return BUDDY_ENOMEM;
        b = m;
        storage = STORAGE_MMAP;
    }
#endif
    if (b == NULL && (b = calloc(1, (size_t)bytes)) == NULL)
        return BUDDY_ENOMEM;
#if defined(BUDDY_LOCKED) && BUDDY_LOCKED
    if (pthread_mutex_init(&b->lock, NULL) != 0) {
        b->storage = storage;
        b->region_bytes = bytes;
        region_release(b);
        return BUDDY_ENOMEM;
    }
#endif
    layout_init(b, capacity, min_size, storage);
    *out = b;
    return BUDDY_OK;
}

buddy_status buddy_init_at(void *mem, uint64_t capacity, uint64_t min_size,
                           buddy_t **out)
{
    if (mem == NULL || out == NULL || ((uintptr_t)mem & 63) != 0 ||
        !args_valid(capacity, min_size))
        return BUDDY_EINVAL;
    buddy_t *b = mem;
    layout_init(b, capacity, min_size, STORAGE_CALLER);
    *out = b;
    return BUDDY_OK;
}

buddy_status buddy_attach_at(void *mem, buddy_t **out)
{
    if (mem == NULL || out == NULL || ((uintptr_t)mem & 63) != 0)
        return BUDDY_EINVAL;
    buddy_t *b = mem;
    /* Fields that never change after buddy_init_at, each checked before it
     * is used to read the next. */
    if (b->magic != BUDDY_MAGIC || b->version != BUDDY_LAYOUT_VERSION ||
        b->head_bytes != sizeof(buddy_t) || b->storage != STORAGE_CALLER ||
        !args_valid(b->st.capacity, b->st.min_size) ||
        b->st.capacity % b->st.min_size != 0)
        return BUDDY_EINVAL;
    uint64_t nmin = b->st.capacity / b->st.min_size;
    unsigned top = log2_ceil(nmin);
    if (b->nmin != nmin || b->top != top || b->st.max_order != top ||
        b->shift != bits_ctz(b->st.min_size) ||
        b->region_bytes != buddy_metadata_bytes(b->st.capacity, b->st.min_size) ||
        !layout_carve(b, nmin, top, 1))
        return BUDDY_EINVAL;
    *out = b;
    return BUDDY_OK;
}

void buddy_close(buddy_t *b)
{
    if (b == NULL)
        return;
    LOCK(b);
    if (!b->st.closed) {
        b->st.closed = 1;
#ifndef _WIN32
        /* Return the bitmaps' whole pages; the struct stays readable. */
        if (b->storage == STORAGE_MMAP) {
            uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
            uint64_t keep = (layout_head(b->top) + page - 1) / page * page;
            if (keep < b->region_bytes) {
                munmap((char *)b + keep, (size_t)(b->region_bytes - keep));
                b->region_bytes = keep;
            }
        }
#endif
    }
    UNLOCK(b);
}

void buddy_destroy(buddy_t *b)
{
    if (b == NULL || b->storage == STORAGE_CALLER)
        return;
#if defined(BUDDY_LOCKED) && BUDDY_LOCKED
    pthread_mutex_destroy(&b->lock);
#endif
    region_release(b);
}

/* ---- blocks ------------------------------------------------------------- */

/* Raises the peaks to the current figures (after an allocation).  With
 * branches: once a workload is past its peak they are never taken, and
 * nothing is stored.  Measured against conditional moves with unconditional
 * stores (CPU time of interleaved runs): churn 0.990x, pair64 0.977x. */
static inline void peaks_update(buddy_stats_t *st)
{
    if (st->bytes_requested > st->peak_bytes_requested)
        st->peak_bytes_requested = st->bytes_requested;
    if (st->bytes_in_blocks > st->peak_bytes_in_blocks)
        st->peak_bytes_in_blocks = st->bytes_in_blocks;
    if (st->live_blocks > st->peak_live_blocks)
        st->peak_live_blocks = st->live_blocks;
}

/* What buddy_check's lower bound on bytes_requested demands of a live
 * block of order k. */
static inline uint64_t min_request(const buddy_t *b, unsigned k)
{
    return k == 0 ? 0 : (b->st.min_size << (k - 1)) + 1;
}

/* Counts a live block of order k requested with `size` bytes. */
static inline void stats_add(buddy_t *b, unsigned k, uint64_t size)
{
    b->st.bytes_requested += size;
    b->st.bytes_in_blocks += b->st.min_size << k;
    b->st.live_blocks++;
    b->st.alloc_calls++;
    peaks_update(&b->st);
}

/* buddy_alloc of a block of order k with the lock held. */
static ALWAYS_INLINE int64_t alloc_locked(buddy_t *b, uint64_t size, unsigned k)
{
    if (b->st.closed)
        return -1;
    uint64_t avail = k <= b->top ? b->nonempty >> k : 0;
    if (avail == 0) {
        b->st.failed_allocs++;
        return -1;
    }
    unsigned j = k + (unsigned)bits_ctz(avail); /* smallest order with a free block */
    /* The bitmaps of order j are complete unless the pending split has a
     * free block there; a new split needs the old one written out. */
    if (chain_pending(b) && (j > k || (j >= b->chain_low && j < b->chain_top)))
        chain_settle(b);
    uint64_t i = bits_take_first(b, &b->order[j].free);
    if (--b->st.free_blocks[j] == 0) /* order_clear_free, bits taken above */
        b->nonempty &= ~((uint64_t)1 << j);
    if (j > k) { /* split, keeping the lower halves: recorded, not written */
        chain_record(b, j, k, i);
        i <<= j - k;
    }
    stats_add(b, k, size);
    return (int64_t)((i << k) << b->shift);
}

/* The two halves of buddy_alloc (and buddy_alloc_aligned), the lock held.
 *
 * alloc_fast is the common case written out: a free block of exactly
 * order k in the bitmaps (no split, no pending split to write out).
 * Everything else goes to alloc_slow, which is alloc_locked kept out of
 * line, so the fast path saves and restores few registers.  On `churn`
 * most allocations are this case (2 % split).  Measured with buddy_free's
 * same split (free_fast): core churn 27.0 -> 24.8 ns a step (C loop of
 * csrc/bench.c's churn, best of 5, alternating runs); callgrind 336 -> 280
 * instructions a step.  The price is paid by what takes the slow paths: a
 * lone pair on an empty arena (pair64-empty), 363 -> 391 instructions. */
static ALWAYS_INLINE int alloc_fast(buddy_t *b, uint64_t size, unsigned k, int64_t *off)
{
    if (k > b->top || !((b->nonempty >> k) & 1) || b->st.closed ||
        (k >= b->chain_low && k < b->chain_top)) /* (chain_low: 0xFF if none) */
        return 0;
    uint64_t i = bits_take_first(b, &b->order[k].free);
    if (--b->st.free_blocks[k] == 0) /* order_clear_free, bits taken above */
        b->nonempty &= ~((uint64_t)1 << k);
    stats_add(b, k, size);
    *off = (int64_t)((i << k) << b->shift);
    return 1;
}

static __attribute__((noinline)) int64_t alloc_slow(buddy_t *b, uint64_t size, unsigned k)
{
    return alloc_locked(b, size, k);
}

int64_t buddy_alloc(buddy_t *b, uint64_t size)
{
    LOCK(b);
    unsigned k = node_order_for(b, size);
    int64_t off;
    if (!alloc_fast(b, size, k, &off))
        off = alloc_slow(b, size, k);
    UNLOCK(b);
    return off;
}

int64_t buddy_alloc_aligned(buddy_t *b, uint64_t size, uint64_t align)
{
    if (align & (align - 1))
        return -2;
    LOCK(b);
    unsigned k = node_order_aligned(b, size, align);
    int64_t off;
    if (!alloc_fast(b, size, k, &off))
        off = alloc_slow(b, size, k);
    if (off >= 0 && k > node_order_for(b, size)) /* larger than size needs */
        b->aligned_slack += min_request(b, k);
    UNLOCK(b);
    return off;
}

/* How many blocks of order k the free blocks hold (saturating). */
static uint64_t room_for(const buddy_t *b, unsigned k)
{
    uint64_t room = 0;
    for (unsigned m = k; m <= b->top; m++) {
        uint64_t n = b->st.free_blocks[m];
        if (n == 0)
            continue;
        if (m - k >= 64 || n > (UINT64_MAX >> (m - k)) ||
            room > UINT64_MAX - (n << (m - k)))
            return UINT64_MAX;
        room += n << (m - k);
    }
    return room;
}

buddy_status buddy_alloc_many(buddy_t *b, uint64_t size, uint64_t count,
                              uint64_t *out)
{
    LOCK(b);
    buddy_status status = BUDDY_OK;
    unsigned k = node_order_for(b, size);
    if (b->st.closed) {
        status = BUDDY_ECLOSED;
    } else if (count > 0 && (k > b->top || room_for(b, k) < count)) {
        b->st.failed_allocs++;
        status = BUDDY_ENOMEM;
    } else {
        /* Splitting never needs a merge, so every one of them succeeds. */
        for (uint64_t c = 0; c < count; c++)
            out[c] = (uint64_t)alloc_locked(b, size, k);
    }
    UNLOCK(b);
    return status;
}

void buddy_count_refusal(buddy_t *b)
{
    LOCK(b);
    b->st.failed_allocs++;
    UNLOCK(b);
}

/* Why (offset, size) is not a live block: find the leaf node holding
 * minimum block j by walking down from the root.  O(L). */
static buddy_status node_diagnose(const buddy_t *b, uint64_t j)
{
    unsigned k = b->top;
    uint64_t i = 0;
    while (node_is_split(b, k, i)) {
        k--;
        i = j >> k;
    }
    if (node_is_free(b, k, i))
        return BUDDY_EFREE;
    if ((i << k) != j)
        return BUDDY_EINTERIOR;
    return BUDDY_ESIZE;
}

/* BUDDY_OK if a live block of order k starts at offset (and then its
 * order and index in *order, *index), else why not.  The caller holds the
 * lock.  Settles the pending split if the offset lies inside it, unless the
 * block is the one that split handed out. */
static ALWAYS_INLINE buddy_status node_probe(buddy_t *b, uint64_t offset, unsigned k,
                               unsigned *order, uint64_t *index)
{
    if (b->st.closed)
        return BUDDY_ECLOSED;
    if (offset >= b->st.capacity)
        return BUDDY_ERANGE;
    if (offset & (b->st.min_size - 1))
        return BUDDY_EALIGN;
    uint64_t j = offset >> b->shift;
    uint64_t i = k <= b->top ? j >> k : 0;
    if (chain_covers(b, j)) {
        if (chain_is_kept(b, offset, k)) {
            *order = k; /* the block the pending split handed out */
            *index = i;
            return BUDDY_OK;
        }
        chain_settle(b);
    }
    if (k > b->top || (i << k) != j || !node_exists(b, k, i) ||
        node_is_free(b, k, i) || node_is_split(b, k, i))
        return node_diagnose(b, j);
    *order = k;
    *index = i;
    return BUDDY_OK;
}

buddy_status buddy_probe(buddy_t *b, uint64_t offset, uint64_t size)
{
    unsigned k = 0;
    uint64_t i = 0;
    LOCK(b);
    buddy_status status = node_probe(b, offset, node_order_for(b, size), &k, &i);
    UNLOCK(b);
    return status;
}

/* Frees the live block of order k at offset, requested with `size` bytes;
 * the caller holds the lock. */
static ALWAYS_INLINE buddy_status free_locked(buddy_t *b, uint64_t offset,
                                       uint64_t size, unsigned k)
{
    uint64_t i = 0;
    int kept = chain_is_kept(b, offset, k) && !b->st.closed;
    if (!kept) { /* (the kept block needs no probe: it is live) */
        buddy_status status = node_probe(b, offset, k, &k, &i);
        if (status != BUDDY_OK)
            return status;
    }
    b->st.bytes_requested -= size;
    b->st.bytes_in_blocks -= b->st.min_size << k;
    b->st.live_blocks--;
    b->st.free_calls++;
    if (kept) {
        /* The block the pending split handed out: cancel the split, so the
         * block it came from is free again (and merges on as usual). */
        k = b->chain_top;
        i = b->chain_base >> k;
        chain_cancel(b);
    } else {
        chain_counts_moved(b); /* the merges below move free counts */
    }
    while (k < b->top && node_is_free(b, k, i ^ 1)) { /* merge buddies */
        order_clear_free(b, k, i ^ 1);
        k++;
        i >>= 1;
        bits_flip_raw(order_split(b, k), i); /* parent: split -> free */
    }
    order_set_free(b, k, i);
    return BUDDY_OK;
}

/* The two halves of buddy_free (and buddy_free_aligned), the lock held,
 * split as alloc_fast / alloc_slow are (the figures are there).
 *
 * free_fast: a live block of order k < L at offset, outside any pending
 * split, whose buddy is not free -- so nothing merges (on `churn`, 98 % of
 * frees).  One word of free[k] holds the bits of the block and of its
 * buddy: both clear.  Else 0, nothing changed. */
static ALWAYS_INLINE int free_fast(buddy_t *b, uint64_t offset, uint64_t size, unsigned k)
{
    uint64_t j = offset >> b->shift;
    /* the pending split first: a lone pair frees inside it every time */
    if (chain_covers(b, j) || k >= b->top || offset >= b->st.capacity || b->st.closed ||
        (offset & ((b->st.min_size << k) - 1)) != 0)
        return 0;
    uint64_t i = j >> k;
    uint64_t pair = (order_free(b, k)[i >> 6] >> (i & 62)) & 3u;
    if (!node_exists(b, k, i) || pair != 0 || node_is_split(b, k, i))
        return 0;
    b->st.bytes_requested -= size;
    b->st.bytes_in_blocks -= b->st.min_size << k;
    b->st.live_blocks--;
    b->st.free_calls++;
    chain_counts_moved(b);
    order_set_free(b, k, i);
    return 1;
}

static __attribute__((noinline)) buddy_status free_slow(buddy_t *b, uint64_t offset,
                                                        uint64_t size, unsigned k)
{
    return free_locked(b, offset, size, k);
}

buddy_status buddy_free(buddy_t *b, uint64_t offset, uint64_t size)
{
    LOCK(b);
    unsigned k = node_order_for(b, size);
    buddy_status status = free_fast(b, offset, size, k) ? BUDDY_OK
                                                        : free_slow(b, offset, size, k);
    UNLOCK(b);
    return status;
}

buddy_status buddy_free_aligned(buddy_t *b, uint64_t offset, uint64_t size,
                                uint64_t align)
{
    if (align & (align - 1))
        return BUDDY_EINVAL;
    LOCK(b);
    unsigned k = node_order_aligned(b, size, align);
    buddy_status status = free_fast(b, offset, size, k) ? BUDDY_OK
                                                        : free_slow(b, offset, size, k);
    if (status == BUDDY_OK && k > node_order_for(b, size))
        b->aligned_slack -= min_request(b, k);
    UNLOCK(b);
    return status;
}

buddy_status buddy_resize(buddy_t *b, uint64_t offset, uint64_t size,
                          uint64_t align, uint64_t new_size)
{
    unsigned k = 0, k2;
    uint64_t i = 0;
    if (align & (align - 1))
        return BUDDY_EINVAL;
    LOCK(b);
    buddy_status status = node_probe(b, offset, node_order_aligned(b, size, align),
                                     &k, &i);
    if (status != BUDDY_OK)
        goto out;
    chain_settle(b); /* the block's ancestors and buddies as eager splitting has them */
    uint64_t j = i << k; /* its first minimum block */
    k2 = node_order_for(b, new_size);
    if (k2 > k) { /* grow: the lower half at every level, the upper one free */
        if (k2 > b->top || (j & (((uint64_t)1 << k2) - 1)) != 0) {
            status = BUDDY_ENOMEM;
            goto out;
        }
        for (unsigned m = k; m < k2; m++) {
            if (!node_is_free(b, m, (j >> m) + 1)) {
                status = BUDDY_ENOMEM;
                goto out;
            }
        }
        for (unsigned m = k; m < k2; m++) {
            order_clear_free(b, m, (j >> m) + 1);
            bits_flip_raw(order_split(b, m + 1), j >> (m + 1)); /* split -> live */
        }
    } else {
        for (unsigned m = k; m > k2; m--) { /* shrink: free the upper halves */
            bits_flip_raw(order_split(b, m), j >> m); /* live -> split */
            order_set_free(b, m - 1, (j >> (m - 1)) + 1);
        }
    }
    if (k > node_order_for(b, size)) /* it was aligned; now it is plain */
        b->aligned_slack -= min_request(b, k);
    b->st.bytes_requested += new_size - size; /* modulo 2^64: exact */
    b->st.bytes_in_blocks += (b->st.min_size << k2) - (b->st.min_size << k);
    peaks_update(&b->st);
out:
    UNLOCK(b);
    return status;
}

int64_t buddy_alloc_congruent(buddy_t *b, uint64_t size, uint64_t modulus,
                              uint64_t rem)
{
    if (modulus == 0 || (modulus & (modulus - 1)) || rem >= modulus)
        return -2;
    LOCK(b);
    int64_t found = -1;
    unsigned k = node_order_for(b, size);
    uint64_t block = k <= b->top ? b->st.min_size << k : 0;
    if (b->st.closed)
        goto out;
    if (block == 0 || (b->nonempty >> k) == 0)
        goto refused;
    if (rem % block != 0) {
        found = -2; /* no block of this size ever starts at such an offset */
        goto out;
    }
    chain_settle(b);
    for (uint64_t off = rem; off < b->st.capacity;) {
        uint64_t j = off >> b->shift;
        unsigned m = b->top; /* down to the leaf holding minimum block j */
        uint64_t x = 0;
        while (node_is_split(b, m, x)) {
            m--;
            x = j >> m;
        }
        if (m >= k && node_is_free(b, m, x)) {
            order_clear_free(b, m, x); /* split it down to (k, j >> k) */
            for (; m > k; m--) {
                bits_flip_raw(order_split(b, m), j >> m);
                uint64_t keep = j >> (m - 1);
                order_set_free(b, m - 1, keep ^ 1);
            }
            stats_add(b, k, size);
            found = (int64_t)off;
            goto out;
        }
        uint64_t end = ((x + 1) << m) << b->shift; /* past this leaf */
        if (end - rem > UINT64_MAX - modulus)
            break;
        off = rem + ((end - rem + modulus - 1) & ~(modulus - 1));
    }
refused:
    b->st.failed_allocs++;
out:
    UNLOCK(b);
    return found;
}

buddy_status buddy_block_at(buddy_t *b, uint64_t offset, uint64_t *start,
                           uint64_t *size, int *is_free)
{
    LOCK(b);
    buddy_status status = BUDDY_OK;
    if (b->st.closed) {
        status = BUDDY_ECLOSED;
    } else if (offset >= b->st.capacity) {
        status = BUDDY_ERANGE;
    } else {
        uint64_t j = offset >> b->shift;
        if (chain_covers(b, j))
            chain_settle(b);
        unsigned k = b->top;
        uint64_t i = 0;
        while (node_is_split(b, k, i)) { /* down to the leaf holding j */
            k--;
            i = j >> k;
        }
        *start = (i << k) << b->shift;
        *size = b->st.min_size << k;
        *is_free = node_is_free(b, k, i);
    }
    UNLOCK(b);
    return status;
}

uint64_t buddy_block_size(const buddy_t *b, uint64_t size)
{
    unsigned k = node_order_for(b, size);
    if (k > b->top || (b->st.min_size << k) > b->st.capacity)
        return 0;
    return b->st.min_size << k;
}

uint64_t buddy_largest_free(const buddy_t *b)
{
    LOCK(b);
    uint64_t mask = b->nonempty; /* kept as it was by buddy_close */
    UNLOCK(b);
    return mask ? b->st.min_size << (63u - bits_clz(mask)) : 0;
}

const buddy_stats_t *buddy_stats(const buddy_t *b) { return &b->st; }

void buddy_snapshot(const buddy_t *b, buddy_stats_t *out)
{
    LOCK(b);
    *out = b->st;
    UNLOCK(b);
}

void buddy_reset_peaks(buddy_t *b)
{
    LOCK(b);
    b->st.peak_bytes_requested = b->st.bytes_requested;
    b->st.peak_bytes_in_blocks = b->st.bytes_in_blocks;
    b->st.peak_live_blocks = b->st.live_blocks;
    UNLOCK(b);
}

/* ---- checking ----------------------------------------------------------- */

typedef struct check {
    char *msg;
    size_t msglen;
    int failed;
    uint64_t live, in_blocks, free_bytes, min_requested;
    uint64_t free_count[BUDDY_MAX_ORDER + 1];
} check_t;

/* Records the first failure; returns 1 if cond holds, 0 otherwise. */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static int check_that(check_t *c, int cond, const char *fmt, ...)
{
    if (cond)
        return 1;
    if (c->failed++ == 0 && c->msg != NULL && c->msglen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->msg, c->msglen, fmt, ap);
        va_end(ap);
    }
    return 0;
}

/* Every bit of every bitmap: set only where the tree has a node, summaries
 * agree, nothing past the end. */
static void check_bitmaps(const buddy_t *b, check_t *c)
{
    for (unsigned k = 0; k <= b->top && !c->failed; k++) {
        const order_t *o = &b->order[k];
        uint64_t nbits = o->nbits;
        for (uint32_t d = 0; d < o->free.depth && !c->failed; d++) {
            const uint64_t *w = bits_lvl(b, &o->free, d);
            uint64_t nw = bits_words(nbits);
            uint64_t tail = nbits & 63;
            check_that(c, tail == 0 || (w[nw - 1] >> tail) == 0,
                  "order %u summary level %u: bits set past its end", k, d);
            if (d + 1 < o->free.depth) {
                for (uint64_t x = 0; x < nw && !c->failed; x++)
                    check_that(c, bits_test(bits_lvl(b, &o->free, d + 1), x) == (w[x] != 0),
                          "order %u: summary level %u bit %llu disagrees with "
                          "the word below", k, d + 1, (unsigned long long)x);
            } else {
                check_that(c, nw <= BITS_ROOT_WORDS, "order %u: root level %u has "
                      "%llu words", k, d, (unsigned long long)nw);
                for (uint64_t x = nw; x < BITS_ROOT_WORDS && !c->failed; x++)
                    check_that(c, o->free.root[x] == 0, "order %u: root word %llu, "
                          "past the root's end, is not zero", k, (unsigned long long)x);
            }
            nbits = nw;
        }
        for (uint64_t i = 0; i < o->nbits && !c->failed; i++) {
            int fr = node_is_free(b, k, i), sp = node_is_split(b, k, i);
            c->free_count[k] += (uint64_t)fr;
            if (!fr && !sp)
                continue;
            check_that(c, !(fr && sp), "block %llu of order %u is both free and "
                  "split", (unsigned long long)i, k);
            check_that(c, node_exists(b, k, i), "block %llu of order %u is marked "
                  "%s but its parent is not split", (unsigned long long)i, k,
                  fr ? "free" : "split");
            check_that(c, !fr || k == b->top || !node_is_free(b, k, i ^ 1),
                  "blocks %llu and %llu of order %u are free buddies that "
                  "were not merged", (unsigned long long)(i & ~(uint64_t)1),
                  (unsigned long long)(i | 1), k);
            check_that(c, !fr || ((i + 1) << k) <= b->nmin, "block %llu of order "
                  "%u is free but reaches past the arena",
                  (unsigned long long)i, k);
        }
        if (k > 0 && o->nbits & 63)
            check_that(c, (order_split(b, k)[bits_words(o->nbits) - 1] >> (o->nbits & 63)) == 0,
                  "order %u: split bits set past its end", k);
        check_that(c, c->free_count[k] == b->st.free_blocks[k], "order %u: %llu "
              "free blocks in the bitmap but the counter says %llu", k,
              (unsigned long long)c->free_count[k],
              (unsigned long long)b->st.free_blocks[k]);
        check_that(c, ((b->nonempty >> k) & 1) == (c->free_count[k] != 0),
              "order %u: the non-empty mask disagrees with the free count", k);
    }
}

/* Walks the tree's nodes from (k, i): partial nodes are split, and the
 * leaves tile the arena.  Recursion depth <= L. */
static void check_tree(const buddy_t *b, check_t *c, unsigned k, uint64_t i)
{
    if (c->failed || (i << k) >= b->nmin)
        return; /* wholly past the arena: no node, no bits */
    uint64_t size = b->st.min_size << k;
    if (node_is_split(b, k, i)) {
        check_tree(b, c, k - 1, i << 1);
        check_tree(b, c, k - 1, (i << 1) | 1);
        return;
    }
    if (!check_that(c, ((i + 1) << k) <= b->nmin, "block %llu of order %u reaches "
               "past the arena but is not split", (unsigned long long)i, k))
        return;
    if (node_is_free(b, k, i)) {
        c->free_bytes += size;
    } else {
        c->live++;
        c->in_blocks += size;
        c->min_requested += k == 0 ? 0 : size / 2 + 1;
    }
}

/* The pending split, if any: inside the arena, below the top, with its
 * block marked neither free nor split and no bit set anywhere below it
 * (only the counters know of it). */
static void check_chain(const buddy_t *b, check_t *c)
{
    if (!chain_pending(b)) {
        check_that(c, b->chain_low == CHAIN_NONE && b->chain_off == UINT64_MAX,
              "no split is pending but its record is not cleared");
        return;
    }
    unsigned j = b->chain_top, k = b->chain_low;
    if (!check_that(c, k < j && j <= b->top, "the pending split (order %u "
               "down to %u) is not a split of the tree", j, k))
        return;
    uint64_t i = b->chain_base >> j;
    uint64_t range = (((uint64_t)1 << j) - 1) & ~(((uint64_t)1 << k) - 1);
    if (!check_that(c, ((i + 1) << j) <= b->nmin && b->chain_base == i << j &&
                       b->chain_span == (uint64_t)1 << j &&
                       b->chain_off == (b->chain_base << b->shift),
               "the pending split (order %u down to %u, block %llu) is not "
               "a block of the arena", j, k, (unsigned long long)i))
        return;
    /* While its record is valid, the orders the split made non-empty hold
     * exactly that one free block, and the others more than one. */
    for (unsigned m = k; m < j && b->chain_fresh != CHAIN_FRESH_UNKNOWN; m++)
        check_that(c, (b->chain_fresh & ~range) == 0 &&
                      ((b->chain_fresh >> m) & 1) == (b->st.free_blocks[m] == 1),
              "the pending split's record of the orders it made non-empty "
              "disagrees with the free count of order %u", m);
    check_that(c, !node_is_free(b, j, i) && !node_is_split(b, j, i),
          "block %llu of order %u has a pending split but is marked %s",
          (unsigned long long)i, j, node_is_free(b, j, i) ? "free" : "split");
    for (unsigned m = 0; m < j && !c->failed; m++)
        for (uint64_t x = i << (j - m); x < (i + 1) << (j - m) && !c->failed; x++)
            check_that(c, !node_is_free(b, m, x) && !node_is_split(b, m, x),
                  "block %llu of order %u lies inside a pending split but "
                  "has a bit set", (unsigned long long)x, m);
}

buddy_status buddy_check(buddy_t *b, char *msg, size_t msglen)
{
    check_t c;
    memset(&c, 0, sizeof c);
    c.msg = msg;
    c.msglen = msglen;
    if (msg && msglen)
        msg[0] = '\0';
    if (b == NULL) {
        check_that(&c, 0, "no allocator (NULL)");
        return BUDDY_ECORRUPT;
    }
    LOCK(b);
    if (!b->st.closed) {
        check_chain(b, &c);
        /* A torn pending split (a process killed mid-operation on a shared
         * region) is reported, never written out. */
        if (!c.failed)
            chain_settle(b); /* the bitmaps as eager splitting leaves them */
    }
    if (!b->st.closed && !c.failed) {
        check_bitmaps(b, &c);
        check_tree(b, &c, b->top, 0);
        const buddy_stats_t *s = &b->st;
        check_that(&c, c.live == s->live_blocks, "%llu allocated blocks in the "
              "tree but live_blocks is %llu", (unsigned long long)c.live,
              (unsigned long long)s->live_blocks);
        check_that(&c, c.in_blocks == s->bytes_in_blocks, "allocated blocks cover "
              "%llu bytes but bytes_in_blocks is %llu",
              (unsigned long long)c.in_blocks,
              (unsigned long long)s->bytes_in_blocks);
        check_that(&c, c.in_blocks + c.free_bytes == s->capacity, "free and "
              "allocated blocks cover %llu bytes of a %llu-byte arena",
              (unsigned long long)(c.in_blocks + c.free_bytes),
              (unsigned long long)s->capacity);
        check_that(&c, s->bytes_requested <= s->bytes_in_blocks &&
                      s->bytes_requested >= c.min_requested - b->aligned_slack,
              "bytes_requested %llu is outside what the live blocks allow "
              "[%llu, %llu]", (unsigned long long)s->bytes_requested,
              (unsigned long long)(c.min_requested - b->aligned_slack),
              (unsigned long long)s->bytes_in_blocks);
        check_that(&c, s->alloc_calls - s->free_calls == s->live_blocks,
              "alloc_calls - free_calls = %llu but live_blocks is %llu",
              (unsigned long long)(s->alloc_calls - s->free_calls),
              (unsigned long long)s->live_blocks);
    }
    UNLOCK(b);
    return c.failed ? BUDDY_ECORRUPT : BUDDY_OK;
}

const char *buddy_strerror(buddy_status status)
{
    switch (status) {
    case BUDDY_OK:
        return "success";
    case BUDDY_ENOMEM:
        return "out of memory: no free block is large enough";
    case BUDDY_EINVAL:
        return "invalid argument";
    case BUDDY_ERANGE:
        return "the buffer is not inside this allocator's arena";
    case BUDDY_EALIGN:
        return "the buffer does not start at a block boundary "
               "(not a multiple of min_size from the arena start)";
    case BUDDY_EINTERIOR:
        return "the buffer starts inside a live block, not at its start";
    case BUDDY_ESIZE:
        return "a live block starts here, but its size does not match";
    case BUDDY_EFREE:
        return "the block is already free (double free?)";
    case BUDDY_ECLOSED:
        return "the allocator is closed";
    case BUDDY_ECORRUPT:
        return "allocator metadata is inconsistent";
    }
    return "unknown status";
}

buddy_status buddy_debug_flip(buddy_t *b, unsigned which, unsigned order,
                              uint64_t index)
{
    if (b == NULL)
        return BUDDY_EINVAL;
    LOCK(b);
    buddy_status status = BUDDY_EINVAL;
    if (!b->st.closed)
        chain_settle(b); /* flip a bit of the tree as eager splitting has it */
    if (!b->st.closed && order <= b->top && index < b->order[order].nbits &&
        which <= 1 && !(which == 1 && order == 0)) {
        bits_flip_raw(which ? order_split(b, order) : order_free(b, order),
                      index);
        status = BUDDY_OK;
    }
    UNLOCK(b);
    return status;
}

/* ---- arenas ------------------------------------------------------------- */

#ifdef _WIN32
#include <malloc.h>
#else
#include <sys/mman.h>
#endif

/* The largest power of two <= size (size >= 1). */
static uint64_t arena_align(uint64_t size)
{
    uint64_t a = (uint64_t)1 << (63u - bits_clz(size));
    return a < 64 ? 64 : a;
}

void *buddy_arena_alloc(uint64_t size)
{
    if (size == 0 || size > BUDDY_MAX_CAPACITY || size > SIZE_MAX / 2)
        return NULL;
    uint64_t align = arena_align(size);
#ifdef _WIN32
    return _aligned_malloc((size_t)size, (size_t)align);
#else
    if (size < 4096) {
        void *p = NULL;
        return posix_memalign(&p, (size_t)align, (size_t)size) == 0 ? p : NULL;
    }
    /* Reserve size + align bytes of address space (no memory behind it),
     * map the aligned `size` bytes of it for real, give back the rest. */
    size_t len = (size_t)size, span = len + (size_t)align;
    char *r = mmap(NULL, span, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (r == MAP_FAILED)
        return NULL;
    char *p = r + ((align - (uintptr_t)r % align) % align);
    if (mmap(p, len, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) {
        munmap(r, span);
        return NULL;
    }
    size_t tail = ((size_t)(p - r) + len + 4095) & ~(size_t)4095; /* page end */
    if (p > r)
        munmap(r, (size_t)(p - r));
    if (tail < span)
        munmap(r + tail, span - tail);
    return p;
#endif
}

void buddy_arena_free(void *arena, uint64_t size)
{
    if (arena == NULL)
        return;
#ifdef _WIN32
    (void)size;
    _aligned_free(arena);
#else
    if (size < 4096)
        free(arena);
    else
        munmap(arena, (size_t)size);
#endif
}

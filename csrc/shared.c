/*
 * shared.c -- see shared.h.  Layers: layout_ (where everything goes in the
 * segment), rec_ (the requested-size records), lock_ (the robust mutex and
 * recovery), shared_ (the functions the binding calls).  Plain C (POSIX):
 * built into the extension and into tests/c/test_shared under ASan.
 */
#define _POSIX_C_SOURCE 200809L

#include "shared.h"
#include "arena_map.h"

#include <errno.h>

/* See shared.h, Platforms (-DSHARED_SUPPORTED=0 builds the stubs anywhere). */
#ifndef SHARED_SUPPORTED
#if defined(_WIN32) || defined(__APPLE__)
#define SHARED_SUPPORTED 0
#else
#define SHARED_SUPPORTED 1
#endif
#endif

#if SHARED_SUPPORTED

#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SHARED_MAGIC 0x4d48536f6c6c4161u /* "aAlloSHM" little-endian */
#define STATE_SOUND 0u
#define STATE_CORRUPT 1u
#define TAG_ALIGNED 0x80u
#define TAG_ORDER 0x3fu /* k + 1 in the low six bits */

typedef struct header {
    uint64_t magic;         /* SHARED_MAGIC, written last by the creator */
    uint32_t version;       /* SHARED_LAYOUT_VERSION */
    uint32_t header_bytes;  /* sizeof(header_t): differs between builds */
    uint32_t mutex_bytes;   /* sizeof(pthread_mutex_t) */
    uint32_t waste_width;   /* w */
    uint64_t segment_bytes; /* the whole segment */
    uint64_t capacity;
    uint64_t min_size;
    uint64_t meta_off, meta_bytes, tags_off, waste_off, arena_off;
    uint32_t state;         /* STATE_SOUND / STATE_CORRUPT */
    uint32_t reserved;
    uint64_t deaths;        /* lockers that found the holder dead */
    uint64_t clean;         /* ... and the state sound as it was */
    uint64_t repairs;       /* ... and rebuilt the core from the records */
    uint64_t corrupt;       /* ... and marked the segment corrupt */
    uint64_t interrupted;   /* ... and died themselves before deciding */
    uint32_t recovering;    /* 1 while a locker decides */
    uint32_t reserved2;
    char reason[256];       /* why the state is STATE_CORRUPT */
    pthread_mutex_t lock __attribute__((aligned(64)));
} header_t;

typedef struct layout {
    uint64_t meta_off, meta_bytes, tags_off, waste_off, arena_off, segment;
    uint32_t w;
} layout_t;

struct shared {
    unsigned char *seg; /* this process's mapping */
    uint64_t seg_bytes;
    header_t *hd;
    buddy_t *core;
    unsigned char *tags, *waste;
    char *arena;
    uint64_t capacity, nmin, span, min_size;
    unsigned shift, top, w;
    int closed;
    uint64_t waits;
};

static int last_errno;
static void *(*hook_release)(void);
static void (*hook_reacquire)(void *);

/* ---- layout_ ------------------------------------------------------------ */

static uint64_t round_up(uint64_t x, uint64_t a) { return (x + a - 1) & ~(a - 1); }

static unsigned log2_ceil(uint64_t n) { return n <= 1 ? 0u : 64u - (unsigned)__builtin_clzll(n - 1); }

/* w: waste bytes per minimum block: a minimum block's waste is 0 ..
 * min_size (a zero-size request wastes all of it), log2(min_size) + 1
 * bits. */
static uint32_t layout_waste_width(uint64_t min_size)
{
    unsigned bits = (unsigned)__builtin_ctzll(min_size) + 1;
    return (bits + 7) / 8;
}

/* The layout for (capacity, min_size); 0 if they are not valid. */
static int layout_compute(uint64_t capacity, uint64_t min_size, layout_t *l)
{
    if (min_size == 0 || (min_size & (min_size - 1)) || capacity < min_size ||
        capacity % min_size || capacity > BUDDY_MAX_CAPACITY)
        return 0;
    l->meta_bytes = buddy_metadata_bytes(capacity, min_size);
    if (l->meta_bytes == 0)
        return 0;
    uint64_t n = capacity / min_size;
    l->w = layout_waste_width(min_size);
    l->meta_off = round_up(sizeof(header_t), 64);
    l->tags_off = round_up(l->meta_off + l->meta_bytes, 64);
    l->waste_off = round_up(l->tags_off + n, 64);
    if (n > (UINT64_MAX >> 8) / l->w)
        return 0;
    l->arena_off = round_up(l->waste_off + n * l->w, SHARED_ARENA_ALIGN);
    if (l->arena_off > UINT64_MAX - capacity)
        return 0;
    l->segment = l->arena_off + capacity;
    return 1;
}

static shared_t *layout_handle(unsigned char *seg, uint64_t seg_bytes)
{
    shared_t *h = calloc(1, sizeof *h);
    if (h == NULL)
        return NULL;
    header_t *hd = (header_t *)seg;
    h->seg = seg;
    h->seg_bytes = seg_bytes;
    h->hd = hd;
    h->core = (buddy_t *)(seg + hd->meta_off);
    h->tags = seg + hd->tags_off;
    h->waste = seg + hd->waste_off;
    h->arena = (char *)seg + hd->arena_off;
    h->capacity = hd->capacity;
    h->min_size = hd->min_size;
    h->nmin = hd->capacity / hd->min_size;
    h->shift = (unsigned)__builtin_ctzll(hd->min_size);
    h->top = log2_ceil(h->nmin);
    h->span = hd->min_size << h->top;
    h->w = hd->waste_width;
    return h;
}

/* ---- rec_: the records -------------------------------------------------- */

static inline unsigned rec_tag(const shared_t *h, uint64_t i)
{
    return __atomic_load_n(&h->tags[i], __ATOMIC_ACQUIRE);
}

/* The commit point: every store before it is visible first. */
static inline void rec_set_tag(shared_t *h, uint64_t i, unsigned tag)
{
    __atomic_store_n(&h->tags[i], (unsigned char)tag, __ATOMIC_RELEASE);
}

static inline unsigned rec_nbytes(const shared_t *h, unsigned k)
{
    uint64_t n = k >= 3 ? 8 : (uint64_t)h->w << k;
    return n > 8 ? 8u : (unsigned)n;
}

static uint64_t rec_waste(const shared_t *h, uint64_t i, unsigned k)
{
    const unsigned char *p = h->waste + i * h->w;
    uint64_t v = 0;
    for (unsigned x = rec_nbytes(h, k); x-- > 0;)
        v = v << 8 | p[x];
    return v;
}

static void rec_set_waste(shared_t *h, uint64_t i, unsigned k, uint64_t v)
{
    unsigned char *p = h->waste + i * h->w;
    for (unsigned x = 0, n = rec_nbytes(h, k); x < n; x++, v >>= 8)
        p[x] = (unsigned char)v;
}

/* max(size, min_size) rounded up to a power of two (may be past 2^62). */
static inline uint64_t rec_block_for(const shared_t *h, uint64_t size)
{
    if (size <= h->min_size)
        return h->min_size;
    if (size > ((uint64_t)1 << 63))
        return 0;
    return (uint64_t)1 << log2_ceil(size);
}

static inline unsigned rec_order(const shared_t *h, uint64_t block)
{
    return (unsigned)__builtin_ctzll(block) - h->shift;
}

/* Records a live block of `block` bytes at `off` for `requested` bytes. */
static void rec_commit(shared_t *h, uint64_t off, uint64_t requested,
                       uint64_t block)
{
    uint64_t i = off >> h->shift;
    unsigned k = rec_order(h, block);
    rec_set_waste(h, i, k, block - requested);
    rec_set_tag(h, i, (k + 1) |
                (rec_block_for(h, requested) < block ? TAG_ALIGNED : 0u));
}

/* The block recorded at minimum block i with tag t (t != 0). */
static void rec_read(const shared_t *h, uint64_t i, unsigned t,
                     uint64_t *block, uint64_t *requested, uint64_t *align)
{
    unsigned k = (t & TAG_ORDER) - 1;
    *block = h->min_size << k;
    *requested = *block - rec_waste(h, i, k);
    *align = (t & TAG_ALIGNED) ? *block : 0;
}

static int say(char *msg, size_t len, const char *fmt, ...)
{
    if (msg && len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, len, fmt, ap);
        va_end(ap);
    }
    return BUDDY_ECORRUPT;
}

/* The records alone: well formed?  With `rebuild`, also takes every
 * recorded block again in the (freshly laid out) core at its offset. */
static int rec_scan(shared_t *h, int rebuild, char *msg, size_t len)
{
    uint64_t n = h->nmin;
    for (uint64_t i = 0; i < n;) {
        unsigned t = rec_tag(h, i);
        if (t == 0) {
            i++;
            continue;
        }
        unsigned k = (t & TAG_ORDER) - 1;
        if ((t & TAG_ORDER) == 0 || (t & 0x40u) || k > h->top ||
            (i & (((uint64_t)1 << k) - 1)) || ((uint64_t)1 << k) > n - i)
            return say(msg, len, "record of minimum block %llu: tag 0x%02x is "
                       "no block of this arena", (unsigned long long)i, t);
        uint64_t end = i + ((uint64_t)1 << k);
        for (uint64_t j = i + 1; j < end; j++)
            if (rec_tag(h, j) != 0)
                return say(msg, len, "record of minimum block %llu: a tag "
                           "inside the block at %llu", (unsigned long long)j,
                           (unsigned long long)i);
        uint64_t block = h->min_size << k, waste = rec_waste(h, i, k);
        uint64_t req = block - waste, want = rec_block_for(h, req);
        if (waste > block || ((t & TAG_ALIGNED) ? want >= block : want != block))
            return say(msg, len, "record of the block at offset %llu: %llu of "
                       "its %llu bytes wasted does not fit its tag",
                       (unsigned long long)(i << h->shift),
                       (unsigned long long)waste, (unsigned long long)block);
        if (rebuild) {
            if (t & TAG_ALIGNED)
                return say(msg, len, "an over-aligned block at offset %llu "
                           "cannot be placed again", (unsigned long long)(i << h->shift));
            int64_t got = buddy_alloc_congruent(h->core, req, h->span, i << h->shift);
            if (got != (int64_t)(i << h->shift))
                return say(msg, len, "the block at offset %llu could not be "
                           "placed again", (unsigned long long)(i << h->shift));
        }
        i = end;
    }
    return BUDDY_OK;
}

/* The core's live blocks are exactly the recorded ones, and its request
 * totals are the records'.  The core must have passed buddy_check. */
static int rec_agree(shared_t *h, char *msg, size_t len)
{
    uint64_t sum = 0, count = 0;
    for (uint64_t off = 0; off < h->capacity;) {
        uint64_t start = 0, size = 0;
        int is_free = 0;
        if (buddy_block_at(h->core, off, &start, &size, &is_free) != BUDDY_OK ||
            start != off || size == 0)
            return say(msg, len, "no block starts at offset %llu", (unsigned long long)off);
        uint64_t i = start >> h->shift, end = (start + size) >> h->shift;
        unsigned t = rec_tag(h, i);
        if (is_free && t != 0)
            return say(msg, len, "the free block at offset %llu is recorded "
                       "as live", (unsigned long long)start);
        if (!is_free) {
            if ((t & TAG_ORDER) == 0 || (t & 0x40u) ||
                (h->min_size << ((t & TAG_ORDER) - 1)) != size)
                return say(msg, len, "the live block of %llu bytes at offset "
                           "%llu has no record of its size (tag 0x%02x)",
                           (unsigned long long)size, (unsigned long long)start, t);
            uint64_t block = size, waste = rec_waste(h, i, rec_order(h, size));
            uint64_t req = block - waste, want = rec_block_for(h, req);
            if (waste > block || ((t & TAG_ALIGNED) ? want >= block : want != block))
                return say(msg, len, "the record of the block at offset %llu "
                           "says %llu bytes were requested of %llu",
                           (unsigned long long)start, (unsigned long long)req,
                           (unsigned long long)block);
            sum += req;
            count++;
        }
        for (uint64_t j = i + 1; j < end && j < h->nmin; j++)
            if (rec_tag(h, j) != 0)
                return say(msg, len, "minimum block %llu, inside the block at "
                           "offset %llu, is recorded as a block start",
                           (unsigned long long)j, (unsigned long long)start);
        off = start + size;
    }
    const buddy_stats_t *st = buddy_stats(h->core);
    if (sum != st->bytes_requested || count != st->live_blocks)
        return say(msg, len, "the records hold %llu live blocks requesting %llu "
                   "bytes, the core %llu requesting %llu",
                   (unsigned long long)count, (unsigned long long)sum,
                   (unsigned long long)st->live_blocks,
                   (unsigned long long)st->bytes_requested);
    return BUDDY_OK;
}

/* ---- lock_: the mutex and recovery -------------------------------------- */

static void lock_mark_corrupt(shared_t *h, const char *why)
{
    header_t *hd = h->hd;
    snprintf(hd->reason, sizeof hd->reason, "%s", why);
    hd->corrupt++;
    __atomic_store_n(&hd->state, STATE_CORRUPT, __ATOMIC_RELEASE);
}

static void lock_decide(shared_t *h, char *msg, size_t msglen, char *why,
                        size_t whylen);

/* The holder died; this thread holds the lock.  Decide (see shared.h). */
static void lock_recover(shared_t *h)
{
    header_t *hd = h->hd;
    char msg[160], why[256];
    hd->deaths++;
    if (hd->recovering)
        hd->interrupted++; /* the last recoverer died deciding: decide again */
    hd->recovering = 1;
    if (hd->state == STATE_SOUND)
        lock_decide(h, msg, sizeof msg, why, sizeof why);
    hd->recovering = 0;
}

/* lock_recover's decision: sound, rebuilt, or corrupt. */
static void lock_decide(shared_t *h, char *msg, size_t msglen, char *why,
                        size_t whylen)
{
    header_t *hd = h->hd;
    if (rec_scan(h, 0, msg, msglen) != BUDDY_OK) {
        snprintf(why, whylen, "a process died holding the lock; its "
                 "records are broken: %s", msg);
        lock_mark_corrupt(h, why);
        return;
    }
    if (buddy_check(h->core, msg, msglen) == BUDDY_OK &&
        rec_agree(h, msg, msglen) == BUDDY_OK) {
        hd->clean++;
        return;
    }
    /* Rebuild the core from the records: the state before the dead
     * process's interrupted operation. */
    buddy_t *core = NULL;
    memset(h->core, 0, (size_t)hd->meta_bytes);
    if (buddy_init_at(h->core, h->capacity, h->min_size, &core) != BUDDY_OK ||
        rec_scan(h, 1, msg, msglen) != BUDDY_OK ||
        buddy_check(h->core, msg, msglen) != BUDDY_OK ||
        rec_agree(h, msg, msglen) != BUDDY_OK) {
        snprintf(why, whylen, "a process died holding the lock; rebuilding "
                 "from the records failed: %s", msg);
        lock_mark_corrupt(h, why);
        return;
    }
    hd->repairs++;
}

/* Takes the lock (see shared.h's protocol).  BUDDY_OK with the lock held
 * and *gil the wait hook's token (or NULL); otherwise the lock is not held,
 * the token already given back, and the status says why. */
static int lock_enter(shared_t *h, void **gil)
{
    *gil = NULL;
    if (h == NULL)
        return BUDDY_EINVAL;
    if (h->closed)
        return BUDDY_ECLOSED;
    pthread_mutex_t *m = &h->hd->lock;
    int r = pthread_mutex_trylock(m);
    if (r == EBUSY) {
        h->waits++;
        if (hook_release)
            *gil = hook_release();
        r = pthread_mutex_lock(m);
    }
    if (r == EOWNERDEAD) {
        lock_recover(h);
        pthread_mutex_consistent(m);
        r = 0;
    }
    int status = BUDDY_OK;
    if (r != 0)
        status = r == ENOTRECOVERABLE ? SHARED_ECORRUPT : SHARED_ELOCK;
    else if (__atomic_load_n(&h->hd->state, __ATOMIC_ACQUIRE) != STATE_SOUND)
        status = SHARED_ECORRUPT;
    if (status != BUDDY_OK) {
        if (r == 0)
            pthread_mutex_unlock(m);
        if (*gil)
            hook_reacquire(*gil);
        *gil = NULL;
    }
    return status;
}

static void lock_leave(shared_t *h, void *gil)
{
    pthread_mutex_unlock(&h->hd->lock);
    if (gil)
        hook_reacquire(gil);
}

static int64_t lock_alloc_status(int status)
{
    return status == SHARED_ECORRUPT ? SHARED_CORRUPT : SHARED_REFUSED;
}

/* ---- shared_: life cycle ------------------------------------------------ */

void shared_set_wait_hooks(void *(*release)(void), void (*reacquire)(void *))
{
    hook_release = release && reacquire ? release : NULL;
    hook_reacquire = release && reacquire ? reacquire : NULL;
}

int shared_errno(void) { return last_errno; }

int shared_create(const char *name, uint64_t capacity, uint64_t min_size,
                  shared_t **out)
{
    layout_t l;
    if (name == NULL || out == NULL || !layout_compute(capacity, min_size, &l) ||
        l.segment > (uint64_t)INT64_MAX)
        return BUDDY_EINVAL;
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) {
        last_errno = errno;
        return errno == EEXIST ? SHARED_EEXIST : SHARED_ESYS;
    }
    void *p = MAP_FAILED;
    if (ftruncate(fd, (off_t)l.segment) == 0)
        p = mmap(NULL, (size_t)l.segment, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    last_errno = errno;
    close(fd);
    if (p == MAP_FAILED) {
        shm_unlink(name);
        return SHARED_ESYS;
    }
    header_t *hd = p;
    hd->version = SHARED_LAYOUT_VERSION;
    hd->header_bytes = (uint32_t)sizeof(header_t);
    hd->mutex_bytes = (uint32_t)sizeof(pthread_mutex_t);
    hd->waste_width = l.w;
    hd->segment_bytes = l.segment;
    hd->capacity = capacity;
    hd->min_size = min_size;
    hd->meta_off = l.meta_off;
    hd->meta_bytes = l.meta_bytes;
    hd->tags_off = l.tags_off;
    hd->waste_off = l.waste_off;
    hd->arena_off = l.arena_off;
    buddy_t *core = NULL;
    pthread_mutexattr_t attr;
    int ok = buddy_init_at((unsigned char *)p + l.meta_off, capacity, min_size,
                           &core) == BUDDY_OK &&
             pthread_mutexattr_init(&attr) == 0;
    if (ok) {
        ok = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED) == 0 &&
             pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST) == 0 &&
             pthread_mutex_init(&hd->lock, &attr) == 0;
        pthread_mutexattr_destroy(&attr);
    }
    shared_t *h = ok ? layout_handle(p, l.segment) : NULL;
    if (h == NULL) {
        munmap(p, (size_t)l.segment);
        shm_unlink(name);
        return ok ? BUDDY_ENOMEM : BUDDY_EINVAL;
    }
    __atomic_store_n(&hd->magic, SHARED_MAGIC, __ATOMIC_RELEASE);
    *out = h;
    return BUDDY_OK;
}

/* Why the header at p (of `size` bytes of segment) is not ours, or NULL. */
static const char *attach_refusal(const header_t *hd, uint64_t size, char *why,
                                  size_t len)
{
    layout_t l;
    if (__atomic_load_n(&hd->magic, __ATOMIC_ACQUIRE) != SHARED_MAGIC)
        return "it is not a SharedBuddyAllocator's segment (no magic number; "
               "or its creator has not finished laying it out)";
    if (hd->version != SHARED_LAYOUT_VERSION || hd->header_bytes != sizeof(header_t) ||
        hd->mutex_bytes != sizeof(pthread_mutex_t)) {
        snprintf(why, len, "it was laid out by an incompatible build (layout "
                 "%u, header %u bytes, mutex %u bytes; this build: %u, %u, %u)",
                 hd->version, hd->header_bytes, hd->mutex_bytes,
                 SHARED_LAYOUT_VERSION, (unsigned)sizeof(header_t),
                 (unsigned)sizeof(pthread_mutex_t));
        return why;
    }
    if (!layout_compute(hd->capacity, hd->min_size, &l) || l.w != hd->waste_width ||
        l.meta_off != hd->meta_off || l.meta_bytes != hd->meta_bytes ||
        l.tags_off != hd->tags_off || l.waste_off != hd->waste_off ||
        l.arena_off != hd->arena_off || l.segment != hd->segment_bytes)
        return "its header does not describe a layout this build makes";
    if (hd->segment_bytes != size) {
        snprintf(why, len, "the segment has %llu bytes but its header says "
                 "%llu (truncated or resized)", (unsigned long long)size,
                 (unsigned long long)hd->segment_bytes);
        return why;
    }
    return NULL;
}

int shared_attach(const char *name, shared_t **out, char *why, size_t whylen)
{
    char scratch[1];
    if (why == NULL || whylen == 0) {
        why = scratch;
        whylen = sizeof scratch;
    }
    why[0] = '\0';
    if (name == NULL || out == NULL)
        return BUDDY_EINVAL;
    int fd = shm_open(name, O_RDWR, 0);
    if (fd < 0) {
        last_errno = errno;
        return errno == ENOENT ? SHARED_ENOENT : SHARED_ESYS;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        last_errno = errno;
        close(fd);
        return SHARED_ESYS;
    }
    uint64_t size = (uint64_t)sb.st_size;
    if (size < sizeof(header_t)) {
        close(fd);
        snprintf(why, whylen, "the segment has %llu bytes, too few for an "
                 "allocator's header (%llu)", (unsigned long long)size,
                 (unsigned long long)sizeof(header_t));
        return SHARED_ENOTOURS;
    }
    void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    last_errno = errno;
    close(fd);
    if (p == MAP_FAILED)
        return SHARED_ESYS;
    const char *refusal = attach_refusal(p, size, why, whylen);
    buddy_t *core = NULL;
    if (refusal == NULL &&
        buddy_attach_at((unsigned char *)p + ((header_t *)p)->meta_off, &core) != BUDDY_OK)
        refusal = "its allocator metadata does not match its header";
    if (refusal != NULL) {
        if (refusal != why)
            snprintf(why, whylen, "%s", refusal);
        munmap(p, (size_t)size);
        return SHARED_ENOTOURS;
    }
    shared_t *h = layout_handle(p, size);
    if (h == NULL) {
        munmap(p, (size_t)size);
        return BUDDY_ENOMEM;
    }
    *out = h;
    return BUDDY_OK;
}

int shared_unlink(const char *name)
{
    return shm_unlink(name) == 0 ? 0 : errno;
}

void shared_detach(shared_t *h)
{
    if (h != NULL)
        h->closed = 1;
}

void shared_release(shared_t *h)
{
    if (h == NULL)
        return;
    munmap(h->seg, (size_t)h->seg_bytes);
    free(h);
}

char *shared_arena(const shared_t *h) { return h->arena; }
buddy_t *shared_core(const shared_t *h) { return h->core; }
uint64_t shared_capacity(const shared_t *h) { return h->capacity; }
uint64_t shared_min_size(const shared_t *h) { return h->min_size; }
uint64_t shared_segment_bytes(const shared_t *h) { return h->seg_bytes; }
uint64_t shared_records_bytes(const shared_t *h) { return h->nmin * (1 + h->w); }

int shared_is_corrupt(const shared_t *h, char *why, size_t whylen)
{
    int bad = __atomic_load_n(&h->hd->state, __ATOMIC_ACQUIRE) != STATE_SOUND;
    if (why && whylen)
        snprintf(why, whylen, "%s", bad ? h->hd->reason : "");
    return bad;
}

uint64_t shared_counter(const shared_t *h, unsigned which)
{
    const header_t *hd = h->hd;
    switch (which) {
    case 0: return hd->deaths;
    case 1: return hd->clean;
    case 2: return hd->repairs;
    case 3: return hd->corrupt;
    case 4: return h->waits;
    case 5: return hd->interrupted;
    default: return 0;
    }
}

/* ---- shared_: blocks ---------------------------------------------------- */

int64_t shared_alloc(shared_t *h, uint64_t size)
{
    void *gil;
    int status = lock_enter(h, &gil);
    if (status != BUDDY_OK)
        return lock_alloc_status(status);
    int64_t off = buddy_alloc(h->core, size);
    if (off >= 0)
        rec_commit(h, (uint64_t)off, size, rec_block_for(h, size));
    lock_leave(h, gil);
    return off;
}

int64_t shared_alloc_aligned(shared_t *h, uint64_t size, uint64_t align)
{
    void *gil;
    int status = lock_enter(h, &gil);
    if (status != BUDDY_OK)
        return lock_alloc_status(status);
    int64_t off = buddy_alloc_aligned(h->core, size, align);
    if (off >= 0) {
        uint64_t block = rec_block_for(h, size);
        rec_commit(h, (uint64_t)off, size, block > align ? block : align);
    } else if (off == -2) {
        off = SHARED_INVALID;
    }
    lock_leave(h, gil);
    return off;
}

int64_t shared_alloc_many(shared_t *h, uint64_t size, uint64_t count,
                          uint64_t *out)
{
    void *gil;
    int status = lock_enter(h, &gil);
    if (status != BUDDY_OK)
        return lock_alloc_status(status);
    int64_t result = SHARED_REFUSED;
    if (buddy_alloc_many(h->core, size, count, out) == BUDDY_OK) {
        uint64_t block = rec_block_for(h, size);
        for (uint64_t c = 0; c < count; c++)
            rec_commit(h, out[c], size, block);
        result = 0;
    }
    lock_leave(h, gil);
    return result;
}

/* The tag of the live block starting at `offset`, or why none does.  The
 * caller holds the lock. */
static int slot_at(shared_t *h, uint64_t offset, unsigned *tag)
{
    unsigned t = 0;
    if (offset < h->capacity && (offset & (h->min_size - 1)) == 0)
        t = rec_tag(h, offset >> h->shift);
    if (t == 0) {
        int why = buddy_probe(h->core, offset, 0);
        return why == BUDDY_OK || why == BUDDY_ESIZE ? BUDDY_ECORRUPT : why;
    }
    *tag = t;
    return BUDDY_OK;
}

/* Frees the live block at `offset` (tag t); `len`, unless UINT64_MAX, must
 * be its requested size.  The caller holds the lock. */
static int free_locked(shared_t *h, uint64_t offset, uint64_t len)
{
    unsigned t = 0;
    int status = slot_at(h, offset, &t);
    if (status != BUDDY_OK)
        return status;
    uint64_t block = 0, req = 0, align = 0;
    rec_read(h, offset >> h->shift, t, &block, &req, &align);
    if (len != UINT64_MAX && len != req)
        return BUDDY_ESIZE;
    status = buddy_free_aligned(h->core, offset, req, align);
    if (status == BUDDY_OK)
        rec_set_tag(h, offset >> h->shift, 0);
    return status;
}

/* The offset of ptr in this mapping, or why it is not in the arena. */
static int offset_of(const shared_t *h, const char *ptr, uint64_t *off)
{
    uintptr_t a = (uintptr_t)ptr, base = (uintptr_t)h->arena;
    if (a < base || a - base >= h->capacity)
        return BUDDY_ERANGE;
    *off = (uint64_t)(a - base);
    return BUDDY_OK;
}

int shared_free(shared_t *h, const char *ptr, uint64_t len)
{
    void *gil;
    int status = lock_enter(h, &gil);
    if (status != BUDDY_OK)
        return status;
    uint64_t off = 0;
    status = offset_of(h, ptr, &off);
    if (status == BUDDY_OK)
        status = free_locked(h, off, len);
    lock_leave(h, gil);
    return status;
}

int shared_locate(shared_t *h, const char *ptr, uint64_t len, uint64_t *offset)
{
    void *gil;
    int status = lock_enter(h, &gil);
    if (status != BUDDY_OK)
        return status;
    uint64_t off = 0;
    unsigned t = 0;
    status = offset_of(h, ptr, &off);
    if (status == BUDDY_OK)
        status = slot_at(h, off, &t);
    if (status == BUDDY_OK) {
        uint64_t block = 0, req = 0, align = 0;
        rec_read(h, off >> h->shift, t, &block, &req, &align);
        if (req != len)
            status = BUDDY_ESIZE;
        else
            *offset = off;
    }
    lock_leave(h, gil);
    return status;
}

int shared_free_at(shared_t *h, uint64_t offset)
{
    void *gil;
    int status = lock_enter(h, &gil);
    if (status != BUDDY_OK)
        return status;
    status = free_locked(h, offset, UINT64_MAX);
    lock_leave(h, gil);
    return status;
}

/* buddy_resize of the live block at `offset`, its record following; its
 * old requested size in *old.  The caller holds the lock. */
static int resize_locked(shared_t *h, uint64_t offset, uint64_t new_size, uint64_t *old)
{
    unsigned t = 0;
    int status = slot_at(h, offset, &t);
    if (status == BUDDY_OK) {
        uint64_t i = offset >> h->shift, block = 0, req = 0, align = 0;
        rec_read(h, i, t, &block, &req, &align);
        *old = req;
        rec_set_tag(h, i, 0); /* uncommitted while the core changes */
        status = buddy_resize(h->core, offset, req, align, new_size);
        if (status == BUDDY_OK)
            rec_commit(h, offset, new_size, rec_block_for(h, new_size));
        else
            rec_set_tag(h, i, t);
    }
    return status;
}

int shared_resize(shared_t *h, uint64_t offset, uint64_t new_size)
{
    void *gil;
    uint64_t old = 0;
    int status = lock_enter(h, &gil);
    if (status != BUDDY_OK)
        return status;
    status = resize_locked(h, offset, new_size, &old);
    lock_leave(h, gil);
    return status;
}

int shared_realloc(shared_t *h, uint64_t offset, uint64_t new_size, int copy,
                   int64_t *out)
{
    void *gil;
    uint64_t old = 0;
    if (out == NULL)
        return BUDDY_EINVAL;
    *out = (int64_t)offset;
    int status = lock_enter(h, &gil);
    if (status != BUDDY_OK)
        return status;
    status = resize_locked(h, offset, new_size, &old);
    if (status == BUDDY_ENOMEM) { /* move it; a process dying between the
                                     steps leaves both blocks live */
        int64_t to = buddy_alloc(h->core, new_size);
        *out = to >= 0 ? to : SHARED_REFUSED;
        if (to >= 0) {
            rec_commit(h, (uint64_t)to, new_size, rec_block_for(h, new_size));
            if (copy)
                memcpy(h->arena + to, h->arena + offset,
                       (size_t)(old < new_size ? old : new_size));
            status = free_locked(h, offset, UINT64_MAX);
        }
    }
    lock_leave(h, gil);
    return status;
}

/* The requested size of the live block [start, start + size), from the
 * records (a const shared_t *: also arena_map_walk's view of them). */
static uint64_t shared_requested_of(const void *ctx, uint64_t start, uint64_t size)
{
    const shared_t *h = ctx;
    unsigned t = rec_tag(h, start >> h->shift);
    uint64_t block = size, r = size, align = 0;
    if (t != 0)
        rec_read(h, start >> h->shift, t, &block, &r, &align);
    return r;
}

int shared_block_at(shared_t *h, uint64_t offset, uint64_t *start,
                    uint64_t *size, uint64_t *requested)
{
    void *gil;
    int status = lock_enter(h, &gil);
    if (status != BUDDY_OK)
        return status;
    int is_free = 0;
    status = buddy_block_at(h->core, offset, start, size, &is_free);
    if (status == BUDDY_OK && is_free)
        status = BUDDY_EFREE;
    if (status == BUDDY_OK)
        *requested = shared_requested_of(h, *start, *size);
    lock_leave(h, gil);
    return status;
}

int shared_map(shared_t *h, uint64_t ncells, uint64_t *requested,
               uint64_t *wasted, uint64_t *free_bytes)
{
    if (h == NULL)
        return BUDDY_EINVAL;
    if (ncells == 0 || h->span % ncells != 0)
        return BUDDY_EINVAL;
    uint64_t cell = h->span / ncells;
    for (uint64_t c = 0; c < ncells; c++)
        requested[c] = wasted[c] = free_bytes[c] = 0;
    void *gil;
    int status = lock_enter(h, &gil);
    if (status != BUDDY_OK)
        return status;
    status = arena_map_walk(h->core, h->capacity, cell, shared_requested_of, h,
                            requested, wasted, free_bytes);
    lock_leave(h, gil);
    return status;
}

int shared_check(shared_t *h, char *msg, size_t msglen)
{
    void *gil;
    if (msg && msglen)
        msg[0] = '\0';
    int status = lock_enter(h, &gil);
    if (status != BUDDY_OK)
        return status;
    status = buddy_check(h->core, msg, msglen);
    if (status == BUDDY_OK)
        status = rec_agree(h, msg, msglen);
    lock_leave(h, gil);
    return status;
}

int shared_snapshot(shared_t *h, buddy_stats_t *out)
{
    void *gil;
    int status = lock_enter(h, &gil);
    if (status != BUDDY_OK)
        return status;
    buddy_snapshot(h->core, out);
    lock_leave(h, gil);
    return BUDDY_OK;
}

int shared_reset_peaks(shared_t *h)
{
    void *gil;
    int status = lock_enter(h, &gil);
    if (status != BUDDY_OK)
        return status;
    buddy_reset_peaks(h->core);
    lock_leave(h, gil);
    return BUDDY_OK;
}

/* ---- testing aids ------------------------------------------------------- */

int shared_debug_lock(shared_t *h)
{
    void *gil;
    int status = lock_enter(h, &gil);
    if (status == BUDDY_OK && gil)
        hook_reacquire(gil); /* keep the lock, give the GIL back */
    return status;
}

int shared_debug_unlock(shared_t *h)
{
    return pthread_mutex_unlock(&h->hd->lock) == 0 ? BUDDY_OK : SHARED_ELOCK;
}

int shared_debug_flip(shared_t *h, unsigned which, unsigned order, uint64_t index)
{
    void *gil;
    int status = lock_enter(h, &gil);
    if (status != BUDDY_OK)
        return status;
    status = buddy_debug_flip(h->core, which, order, index);
    lock_leave(h, gil);
    return status;
}

int shared_debug_set_tag(shared_t *h, uint64_t index, unsigned tag)
{
    void *gil;
    int status = lock_enter(h, &gil);
    if (status != BUDDY_OK)
        return status;
    if (index < h->nmin)
        rec_set_tag(h, index, tag);
    else
        status = BUDDY_EINVAL;
    lock_leave(h, gil);
    return status;
}

#else /* !SHARED_SUPPORTED: no robust process-shared mutex or POSIX shm */

/* Every function exists (the extension declares them all); creating and
 * attaching fail with ENOSYS, so no handle ever reaches the others. */

void shared_set_wait_hooks(void *(*release)(void), void (*reacquire)(void *))
{
    (void)release;
    (void)reacquire;
}
int shared_errno(void) { return ENOSYS; }
int shared_create(const char *name, uint64_t capacity, uint64_t min_size,
                  shared_t **out)
{
    (void)name; (void)capacity; (void)min_size; (void)out;
    return SHARED_ESYS;
}
int shared_attach(const char *name, shared_t **out, char *why, size_t whylen)
{
    (void)name; (void)out; (void)why; (void)whylen;
    return SHARED_ESYS;
}
int shared_unlink(const char *name) { (void)name; return ENOSYS; }
void shared_detach(shared_t *h) { (void)h; }
void shared_release(shared_t *h) { (void)h; }
char *shared_arena(const shared_t *h) { (void)h; return NULL; }
buddy_t *shared_core(const shared_t *h) { (void)h; return NULL; }
uint64_t shared_capacity(const shared_t *h) { (void)h; return 0; }
uint64_t shared_min_size(const shared_t *h) { (void)h; return 0; }
uint64_t shared_segment_bytes(const shared_t *h) { (void)h; return 0; }
uint64_t shared_records_bytes(const shared_t *h) { (void)h; return 0; }
int shared_is_corrupt(const shared_t *h, char *why, size_t whylen)
{
    (void)h;
    if (why && whylen)
        why[0] = '\0';
    return 0;
}
uint64_t shared_counter(const shared_t *h, unsigned which) { (void)h; (void)which; return 0; }
int64_t shared_alloc(shared_t *h, uint64_t size) { (void)h; (void)size; return SHARED_REFUSED; }
int64_t shared_alloc_aligned(shared_t *h, uint64_t size, uint64_t align)
{
    (void)h; (void)size; (void)align;
    return SHARED_REFUSED;
}
int64_t shared_alloc_many(shared_t *h, uint64_t size, uint64_t count, uint64_t *out)
{
    (void)h; (void)size; (void)count; (void)out;
    return SHARED_REFUSED;
}
int shared_free(shared_t *h, const char *ptr, uint64_t len)
{
    (void)h; (void)ptr; (void)len;
    return BUDDY_ECLOSED;
}
int shared_locate(shared_t *h, const char *ptr, uint64_t len, uint64_t *offset)
{
    (void)h; (void)ptr; (void)len; (void)offset;
    return BUDDY_ECLOSED;
}
int shared_free_at(shared_t *h, uint64_t offset) { (void)h; (void)offset; return BUDDY_ECLOSED; }
int shared_resize(shared_t *h, uint64_t offset, uint64_t new_size)
{
    (void)h; (void)offset; (void)new_size;
    return BUDDY_ECLOSED;
}
int shared_realloc(shared_t *h, uint64_t offset, uint64_t new_size, int copy,
                   int64_t *out)
{
    (void)h; (void)offset; (void)new_size; (void)copy; (void)out;
    return BUDDY_ECLOSED;
}
int shared_block_at(shared_t *h, uint64_t offset, uint64_t *start, uint64_t *size,
                    uint64_t *requested)
{
    (void)h; (void)offset; (void)start; (void)size; (void)requested;
    return BUDDY_ECLOSED;
}
int shared_map(shared_t *h, uint64_t ncells, uint64_t *requested, uint64_t *wasted,
               uint64_t *free_bytes)
{
    (void)h; (void)ncells; (void)requested; (void)wasted; (void)free_bytes;
    return BUDDY_ECLOSED;
}
int shared_check(shared_t *h, char *msg, size_t msglen)
{
    (void)h; (void)msg; (void)msglen;
    return BUDDY_ECLOSED;
}
int shared_snapshot(shared_t *h, buddy_stats_t *out) { (void)h; (void)out; return BUDDY_ECLOSED; }
int shared_reset_peaks(shared_t *h) { (void)h; return BUDDY_ECLOSED; }
int shared_debug_lock(shared_t *h) { (void)h; return BUDDY_ECLOSED; }
int shared_debug_unlock(shared_t *h) { (void)h; return BUDDY_ECLOSED; }
int shared_debug_flip(shared_t *h, unsigned which, unsigned order, uint64_t index)
{
    (void)h; (void)which; (void)order; (void)index;
    return BUDDY_ECLOSED;
}
int shared_debug_set_tag(shared_t *h, uint64_t index, unsigned tag)
{
    (void)h; (void)index; (void)tag;
    return BUDDY_ECLOSED;
}

#endif /* SHARED_SUPPORTED */

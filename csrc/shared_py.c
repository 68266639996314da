/*
 * shared_py.c -- see shared_py.h.  Needs Python.h: built only into the
 * extension (where Py_BEGIN_ALLOW_THREADS keeps its meaning: the
 * preamble's redefinition applies to the preamble alone).
 */
#define PY_SSIZE_T_CLEAN
#include "seam_py.h"
#include "shared_py.h"

/* The handle bound to each slot, or NULL, and its arena view (seam_py.h). */
static void *slots[SHARED_SLOTS];
static PyObject *bases[SHARED_SLOTS];
#define SLOT_GET(k) ((shared_t *)SEAM_SLOT_GET(slots, k))

static void *py_release(void) { return PyEval_SaveThread(); }

static void py_reacquire(void *token) { PyEval_RestoreThread((PyThreadState *)token); }

void shared_py_init(void) { shared_set_wait_hooks(py_release, py_reacquire); }

static int free_bytes(void *h, const char *ptr, uint64_t len)
{
    return shared_free(h, ptr, len);
}

int shared_seam_free(shared_t *h, uintptr_t obj)
{
    return seam_free_object(h, obj, free_bytes);
}

static int64_t alloc_bytes(void *h, uint64_t size) { return shared_alloc(h, size); }
static void undo_alloc(void *h, uint64_t off) { (void)shared_free_at(h, off); }

int shared_py_set_base(int slot, seam_obj view)
{
    return seam_base_store(bases, SHARED_SLOTS, slot, (PyObject *)(uintptr_t)view);
}

static int free_one(void *h, uintptr_t obj) { return shared_seam_free(h, obj); }

int shared_seam_free_many(shared_t *h, uintptr_t list, uint64_t *index)
{
    return seam_free_list(h, list, index, free_one);
}

int shared_py_bind(shared_t *h) { return seam_slot_bind(slots, SHARED_SLOTS, h); }

void shared_py_destroy(shared_t *h)
{
    seam_slot_unbind(slots, bases, SHARED_SLOTS, h);
    shared_release(h);
}

int64_t shared_py_alloc(shared_t *h, uint64_t size)
{
    return size ? shared_alloc(h, size) : SEAM_ALLOC_ZERO;
}

#define SHARED_ENTRIES(k)                                                     \
    int64_t shared_alloc_##k(uint64_t size);                                  \
    int64_t shared_alloc_##k(uint64_t size)                                   \
    {                                                                         \
        return shared_py_alloc(SLOT_GET(k), size);                            \
    }                                                                         \
    seam_obj shared_view_##k(seam_obj size);                                  \
    seam_obj shared_view_##k(seam_obj size)                                   \
    {                                                                         \
        return (uintptr_t)seam_view_object(SLOT_GET(k), &bases[k],             \
                                           (PyObject *)(uintptr_t)size,       \
                                           alloc_bytes, undo_alloc);          \
    }                                                                         \
    int shared_free_##k(uintptr_t obj);                                       \
    int shared_free_##k(uintptr_t obj) { return shared_seam_free(SLOT_GET(k), obj); } \
    int shared_free_obj_##k(seam_obj obj);                                    \
    int shared_free_obj_##k(seam_obj obj) { return shared_seam_free(SLOT_GET(k), obj); }

SHARED_ENTRIES(0)
SHARED_ENTRIES(1)
SHARED_ENTRIES(2)
SHARED_ENTRIES(3)
SHARED_ENTRIES(4)
SHARED_ENTRIES(5)
SHARED_ENTRIES(6)
SHARED_ENTRIES(7)
SHARED_ENTRIES(8)
SHARED_ENTRIES(9)
SHARED_ENTRIES(10)
SHARED_ENTRIES(11)
SHARED_ENTRIES(12)
SHARED_ENTRIES(13)
SHARED_ENTRIES(14)
SHARED_ENTRIES(15)
#if SHARED_SLOTS != 16
#error "one SHARED_ENTRIES line per slot above, and ffi_build.SHARED_SLOTS"
#endif

/*
 * seam.c -- see seam.h.  Needs Python.h: built only into the extension.
 */
#define PY_SSIZE_T_CLEAN
#include "seam_py.h"

#if defined(BUDDY_LOCKED) && BUDDY_LOCKED
#include <pthread.h>
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
#define SLOTS_LOCK() pthread_mutex_lock(&slots_lock)
#define SLOTS_UNLOCK() pthread_mutex_unlock(&slots_lock)
#else
#define SLOTS_LOCK() ((void)0)
#define SLOTS_UNLOCK() ((void)0)
#endif

/* The pool bound to each slot, or NULL, and its arena view (see seam.h). */
static void *seam_slots[SEAM_SLOTS];
static PyObject *seam_bases[SEAM_SLOTS];
#define SLOT_GET(k) ((alloc_pool_t *)SEAM_SLOT_GET(seam_slots, k))

/* The exception a refused seam_view raises (seam_set_refusal). */
static PyObject *refusal_type;

int seam_fail_views;

void seam_debug_fail_views(int n) { seam_fail_views = n; }

int seam_buffer(PyObject *obj, Py_buffer *view)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) != 0) {
        PyErr_Clear();
        return SEAM_NOT_A_BUFFER;
    }
    if (view->len == 0) {
        PyBuffer_Release(view);
        return SEAM_EMPTY;
    }
    return BUDDY_OK;
}

int64_t seam_alloc(alloc_pool_t *p, uint64_t size)
{
    return size == 0 ? SEAM_ALLOC_ZERO : pool_alloc(p, size);
}

static int free_bytes(void *p, const char *ptr, uint64_t len)
{
    return (int)pool_free(p, ptr, len);
}

int seam_free(alloc_pool_t *p, uintptr_t obj)
{
    return seam_free_object(p, obj, free_bytes);
}

static int free_one(void *p, uintptr_t obj) { return seam_free(p, obj); }

static int64_t alloc_bytes(void *p, uint64_t size) { return pool_alloc(p, size); }
static void undo_alloc(void *p, uint64_t off) { (void)pool_free_at(p, off); }

int seam_views(void)
{
#ifdef Py_GIL_DISABLED
    return 0;
#else
    return 1;
#endif
}

int seam_set_refusal(seam_obj type)
{
    PyObject *t = (PyObject *)(uintptr_t)type;
    Py_INCREF(t);
    Py_XDECREF(refusal_type);
    refusal_type = t;
    return 0;
}

PyObject *seam_refuse(int64_t status)
{
    PyObject *code = PyLong_FromLongLong(status);
    if (code != NULL) {
        /* (set at import; MemoryError only if the binding never did) */
        PyErr_SetObject(refusal_type != NULL ? refusal_type : PyExc_MemoryError, code);
        Py_DECREF(code);
    }
    return NULL;
}

int seam_base_store(PyObject **bases, int n, int slot, PyObject *view)
{
    if (!seam_views() || slot < 0 || slot >= n)
        return -1;
    PyObject *old = bases[slot];
    if (view == Py_None) {
        bases[slot] = NULL;
    } else {
        Py_INCREF(view);
        bases[slot] = view;
    }
    Py_XDECREF(old); /* last: it may free the arena and run code */
    return 0;
}

int seam_set_base(int slot, seam_obj view)
{
    return seam_base_store(seam_bases, SEAM_SLOTS, slot, (PyObject *)(uintptr_t)view);
}

int seam_free_many(alloc_pool_t *p, uintptr_t list, uint64_t *index)
{
    return seam_free_list(p, list, index, free_one);
}

int seam_slices(uintptr_t view, uint64_t size, const uint64_t *offsets,
                uint64_t count, uintptr_t list)
{
    PyObject *mv = (PyObject *)view, *out = (PyObject *)list;
    for (uint64_t i = 0; i < count; i++) {
        Py_ssize_t start = (Py_ssize_t)offsets[i];
        PyObject *slice = seam_slice(mv, start, (Py_ssize_t)size);
        if (slice == NULL || PyList_Append(out, slice) != 0) {
            Py_XDECREF(slice);
            PyErr_Clear();
            return -1;
        }
        Py_DECREF(slice);
    }
    return 0;
}

/* ---- slots ---------------------------------------------------------------- */

int seam_slot_bind(void **slots, int n, void *h)
{
    int slot = -1;
    SLOTS_LOCK();
    for (int k = 0; h != NULL && k < n && slot < 0; k++) {
        if (SEAM_SLOT_GET(slots, k) == NULL) {
            __atomic_store_n(&slots[k], h, __ATOMIC_RELEASE);
            slot = k;
        }
    }
    SLOTS_UNLOCK();
    return slot;
}

void seam_slot_unbind(void **slots, PyObject **bases, int n, void *h)
{
    PyObject *view = NULL;
    SLOTS_LOCK();
    for (int k = 0; h != NULL && k < n; k++) {
        if (SEAM_SLOT_GET(slots, k) == h) {
            view = bases[k];
            bases[k] = NULL;
            __atomic_store_n(&slots[k], NULL, __ATOMIC_RELEASE);
        }
    }
    SLOTS_UNLOCK();
    Py_XDECREF(view); /* outside the lock: it may free the arena */
}

int seam_bind(alloc_pool_t *p) { return seam_slot_bind(seam_slots, SEAM_SLOTS, p); }

void seam_destroy(alloc_pool_t *p)
{
    seam_slot_unbind(seam_slots, seam_bases, SEAM_SLOTS, p);
    pool_destroy(p);
}

/* The entry points of slot k (declared for cffi by ffi_build.py). */
#define SEAM_ENTRIES(k)                                                       \
    int64_t seam_alloc_##k(uint64_t size);                                    \
    int64_t seam_alloc_##k(uint64_t size)                                     \
    {                                                                         \
        return seam_alloc(SLOT_GET(k), size);                               \
    }                                                                         \
    seam_obj seam_view_##k(seam_obj size);                                    \
    seam_obj seam_view_##k(seam_obj size)                                     \
    {                                                                         \
        return (uintptr_t)seam_view_object(SLOT_GET(k), &seam_bases[k],       \
                                           (PyObject *)(uintptr_t)size,       \
                                           alloc_bytes, undo_alloc);          \
    }                                                                         \
    int seam_free_##k(uintptr_t obj);                                         \
    int seam_free_##k(uintptr_t obj) { return seam_free(SLOT_GET(k), obj); }   \
    int seam_free_obj_##k(seam_obj obj);                                      \
    int seam_free_obj_##k(seam_obj obj) { return seam_free(SLOT_GET(k), obj); } \
    int seam_free_at_##k(uint64_t off);                                       \
    int seam_free_at_##k(uint64_t off)                                        \
    {                                                                         \
        return (int)pool_free_at(SLOT_GET(k), off);                         \
    }
SEAM_ENTRIES(0) SEAM_ENTRIES(1) SEAM_ENTRIES(2) SEAM_ENTRIES(3) SEAM_ENTRIES(4) SEAM_ENTRIES(5) SEAM_ENTRIES(6) SEAM_ENTRIES(7)
SEAM_ENTRIES(8) SEAM_ENTRIES(9) SEAM_ENTRIES(10) SEAM_ENTRIES(11) SEAM_ENTRIES(12) SEAM_ENTRIES(13) SEAM_ENTRIES(14) SEAM_ENTRIES(15)
SEAM_ENTRIES(16) SEAM_ENTRIES(17) SEAM_ENTRIES(18) SEAM_ENTRIES(19) SEAM_ENTRIES(20) SEAM_ENTRIES(21) SEAM_ENTRIES(22) SEAM_ENTRIES(23)
SEAM_ENTRIES(24) SEAM_ENTRIES(25) SEAM_ENTRIES(26) SEAM_ENTRIES(27) SEAM_ENTRIES(28) SEAM_ENTRIES(29) SEAM_ENTRIES(30) SEAM_ENTRIES(31)
SEAM_ENTRIES(32) SEAM_ENTRIES(33) SEAM_ENTRIES(34) SEAM_ENTRIES(35) SEAM_ENTRIES(36) SEAM_ENTRIES(37) SEAM_ENTRIES(38) SEAM_ENTRIES(39)
SEAM_ENTRIES(40) SEAM_ENTRIES(41) SEAM_ENTRIES(42) SEAM_ENTRIES(43) SEAM_ENTRIES(44) SEAM_ENTRIES(45) SEAM_ENTRIES(46) SEAM_ENTRIES(47)
SEAM_ENTRIES(48) SEAM_ENTRIES(49) SEAM_ENTRIES(50) SEAM_ENTRIES(51) SEAM_ENTRIES(52) SEAM_ENTRIES(53) SEAM_ENTRIES(54) SEAM_ENTRIES(55)
SEAM_ENTRIES(56) SEAM_ENTRIES(57) SEAM_ENTRIES(58) SEAM_ENTRIES(59) SEAM_ENTRIES(60) SEAM_ENTRIES(61) SEAM_ENTRIES(62) SEAM_ENTRIES(63)
#if SEAM_SLOTS != 64
#error "one SEAM_ENTRIES line per slot above, and ffi_build.SEAM_SLOTS"
#endif

/*
 * seam.c -- see seam.h.  Needs Python.h: built only into the extension.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "seam.h"

#if defined(BUDDY_LOCKED) && BUDDY_LOCKED
#include <pthread.h>
static pthread_mutex_t seam_slots_lock = PTHREAD_MUTEX_INITIALIZER;
#define SLOTS_LOCK() pthread_mutex_lock(&seam_slots_lock)
#define SLOTS_UNLOCK() pthread_mutex_unlock(&seam_slots_lock)
#else
#define SLOTS_LOCK() ((void)0)
#define SLOTS_UNLOCK() ((void)0)
#endif

/* The pool bound to each slot, or NULL (see seam.h).  With BUDDY_LOCKED
 * (free-threaded Python) a slot is read with acquire and written with
 * release ordering; elsewhere the GIL orders them. */
static alloc_pool_t *seam_slots[SEAM_SLOTS];
#if defined(BUDDY_LOCKED) && BUDDY_LOCKED
#define SLOT_GET(k) __atomic_load_n(&seam_slots[k], __ATOMIC_ACQUIRE)
#define SLOT_SET(k, p) __atomic_store_n(&seam_slots[k], (p), __ATOMIC_RELEASE)
#else
#define SLOT_GET(k) (seam_slots[k])
#define SLOT_SET(k, p) ((void)(seam_slots[k] = (p)))
#endif

/* The object's bytes as (pointer, length), or why not. */
static int seam_buffer(PyObject *obj, Py_buffer *view)
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

int seam_free(alloc_pool_t *p, uintptr_t obj)
{
    Py_buffer view;
    if (p == NULL)
        return SEAM_NO_POOL;
    int status = seam_buffer((PyObject *)obj, &view);
    if (status != BUDDY_OK)
        return status;
    status = pool_free(p, view.buf, (uint64_t)view.len);
    PyBuffer_Release(&view);
    return status;
}

int seam_free_many(alloc_pool_t *p, uintptr_t list, uint64_t *index)
{
    PyObject *items = (PyObject *)list;
    if (p == NULL)
        return SEAM_NO_POOL;
    /* The length is read again on every step: a buffer exporter written in
     * Python may run code (and change the list) inside PyObject_GetBuffer. */
    for (Py_ssize_t i = (Py_ssize_t)*index; i < PyList_GET_SIZE(items); i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        Py_INCREF(item);
        int status = seam_free(p, (uintptr_t)item);
        Py_DECREF(item);
        if (status != BUDDY_OK) {
            *index = (uint64_t)i;
            return status;
        }
    }
    return BUDDY_OK;
}

int seam_slices(uintptr_t view, uint64_t size, const uint64_t *offsets,
                uint64_t count, uintptr_t list)
{
    PyObject *mv = (PyObject *)view, *out = (PyObject *)list;
    for (uint64_t i = 0; i < count; i++) {
        Py_ssize_t start = (Py_ssize_t)offsets[i];
        PyObject *slice = PySequence_GetSlice(mv, start, start + (Py_ssize_t)size);
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

int seam_bind(alloc_pool_t *p)
{
    int slot = -1;
    SLOTS_LOCK();
    for (int k = 0; p != NULL && k < SEAM_SLOTS && slot < 0; k++) {
        if (SLOT_GET(k) == NULL) {
            SLOT_SET(k, p);
            slot = k;
        }
    }
    SLOTS_UNLOCK();
    return slot;
}

void seam_destroy(alloc_pool_t *p)
{
    SLOTS_LOCK();
    for (int k = 0; p != NULL && k < SEAM_SLOTS; k++)
        if (SLOT_GET(k) == p)
            SLOT_SET(k, NULL);
    SLOTS_UNLOCK();
    pool_destroy(p);
}

/* The entry points of slot k (declared for cffi by ffi_build.py). */
#define SEAM_ENTRIES(k)                                                       \
    int64_t seam_alloc_##k(uint64_t size);                                    \
    int64_t seam_alloc_##k(uint64_t size)                                     \
    {                                                                         \
        return seam_alloc(SLOT_GET(k), size);                               \
    }                                                                         \
    int seam_free_##k(uintptr_t obj);                                         \
    int seam_free_##k(uintptr_t obj) { return seam_free(SLOT_GET(k), obj); }   \
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

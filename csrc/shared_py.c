/*
 * shared_py.c -- see shared_py.h.  Needs Python.h: built only into the
 * extension (where Py_BEGIN_ALLOW_THREADS keeps its meaning: the
 * preamble's redefinition applies to the preamble alone).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "seam.h"
#include "shared_py.h"

#if defined(BUDDY_LOCKED) && BUDDY_LOCKED
#include <pthread.h>
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
#define SLOTS_LOCK() pthread_mutex_lock(&slots_lock)
#define SLOTS_UNLOCK() pthread_mutex_unlock(&slots_lock)
#else
#define SLOTS_LOCK() ((void)0)
#define SLOTS_UNLOCK() ((void)0)
#endif

static shared_t *slots[SHARED_SLOTS];
#define SLOT_GET(k) __atomic_load_n(&slots[k], __ATOMIC_ACQUIRE)
#define SLOT_SET(k, h) __atomic_store_n(&slots[k], (h), __ATOMIC_RELEASE)

static void *py_release(void) { return PyEval_SaveThread(); }

static void py_reacquire(void *token) { PyEval_RestoreThread((PyThreadState *)token); }

void shared_py_init(void) { shared_set_wait_hooks(py_release, py_reacquire); }

int shared_seam_free(shared_t *h, uintptr_t obj)
{
    Py_buffer view;
    if (h == NULL)
        return SEAM_NO_POOL;
    if (PyObject_GetBuffer((PyObject *)obj, &view, PyBUF_SIMPLE) != 0) {
        PyErr_Clear();
        return SEAM_NOT_A_BUFFER;
    }
    int status = SEAM_EMPTY;
    if (view.len != 0)
        status = shared_free(h, view.buf, (uint64_t)view.len);
    PyBuffer_Release(&view);
    return status;
}

int shared_seam_free_many(shared_t *h, uintptr_t list, uint64_t *index)
{
    PyObject *items = (PyObject *)list;
    if (h == NULL)
        return SEAM_NO_POOL;
    for (Py_ssize_t i = (Py_ssize_t)*index; i < PyList_GET_SIZE(items); i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        Py_INCREF(item);
        int status = shared_seam_free(h, (uintptr_t)item);
        Py_DECREF(item);
        if (status != BUDDY_OK) {
            *index = (uint64_t)i;
            return status;
        }
    }
    return BUDDY_OK;
}

int shared_py_bind(shared_t *h)
{
    int slot = -1;
    SLOTS_LOCK();
    for (int k = 0; h != NULL && k < SHARED_SLOTS && slot < 0; k++) {
        if (SLOT_GET(k) == NULL) {
            SLOT_SET(k, h);
            slot = k;
        }
    }
    SLOTS_UNLOCK();
    return slot;
}

void shared_py_destroy(shared_t *h)
{
    SLOTS_LOCK();
    for (int k = 0; h != NULL && k < SHARED_SLOTS; k++)
        if (SLOT_GET(k) == h)
            SLOT_SET(k, NULL);
    SLOTS_UNLOCK();
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
    int shared_free_##k(uintptr_t obj);                                       \
    int shared_free_##k(uintptr_t obj) { return shared_seam_free(SLOT_GET(k), obj); }

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

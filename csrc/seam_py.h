/*
 * seam_py.h -- what seam.c and shared_py.c share (internal; needs Python.h,
 * so cffi's cdef never reads it): taking an object's buffer, freeing a
 * list of blocks, and the slot tables behind the one-argument entry points
 * (seam.h says why those exist).
 */
#ifndef ALLOC_SEAM_PY_H
#define ALLOC_SEAM_PY_H

#include <Python.h>

#include "seam.h"

/* The object's bytes as (pointer, length): BUDDY_OK, and the caller
 * releases the view (PyBuffer_Release); or SEAM_NOT_A_BUFFER (the Python
 * error cleared: the binding's slow path raises the one a user should see)
 * or SEAM_EMPTY (a zero-length buffer, already released). */
int seam_buffer(PyObject *obj, Py_buffer *view);

/* A free by buffer: free_bytes(h, pointer, length) of the object at
 * address `obj` (an id()); SEAM_NO_POOL for a NULL handle, or
 * seam_buffer's status when it has no bytes to free.  Inline, so that each
 * caller's free_bytes is a direct call (the pair's free goes through it). */
static inline int seam_free_object(void *h, uintptr_t obj,
                                   int (*free_bytes)(void *, const char *, uint64_t))
{
    Py_buffer view;
    if (h == NULL)
        return SEAM_NO_POOL;
    int status = seam_buffer((PyObject *)obj, &view);
    if (status != BUDDY_OK)
        return status;
    status = free_bytes(h, view.buf, (uint64_t)view.len);
    PyBuffer_Release(&view);
    return status;
}

/* How many of the next views fail as if there were no memory for them
 * (seam_debug_fail_views, seam.h). */
extern int seam_fail_views;

/* Raises the exception seam_set_refusal named, with `status` as its one
 * argument, and returns NULL (for seam_view_object). */
PyObject *seam_refuse(int64_t status);

/* arena[off : off + n] for the arena's view, made the way memoryview's own
 * slicing makes it (CPython's memory_subscript): a new view of the same
 * managed buffer (PyMemoryView_FromObject), then its buffer's start,
 * length and shape set to the slice's.  What that skips is the slice
 * object and its two ints, and the generic subscript on the way; measured
 * on CPython 3.11 against PySequence_GetSlice: a pair at 64 bytes 207 ->
 * 172 ns, a churn-py step 292 -> 240 ns (best of 15, alternating builds).
 *
 * It leans on CPython's memoryview beyond its documented API: a new view's
 * Py_buffer (PyMemoryView_GET_BUFFER) is its own -- shape points into the
 * view itself -- and nothing is derived from it at creation except the
 * contiguity flags, which any length keeps for a 1-D view of bytes with
 * stride 1.  So only that shape takes this path (it is the arena view's
 * shape: the binding flattens every arena to it); anything else, and any
 * slice the view does not wholly hold, is sliced the documented way.
 * tests/test_views.py compares every attribute with Python's own slice,
 * and ALLOC_SEAM=ids runs the whole suite with slices made in Python. */
static inline PyObject *seam_slice(PyObject *arena, Py_ssize_t off, Py_ssize_t n)
{
    if (PyMemoryView_Check(arena)) {
        const Py_buffer *a = PyMemoryView_GET_BUFFER(arena);
        if (a->ndim == 1 && a->itemsize == 1 && a->strides != NULL &&
            a->strides[0] == 1 && a->suboffsets == NULL && off >= 0 && n >= 0 &&
            n <= a->len - off) {
            PyObject *view = PyMemoryView_FromObject(arena); /* released: error */
            if (view != NULL) {
                Py_buffer *v = PyMemoryView_GET_BUFFER(view);
                v->buf = (char *)v->buf + off;
                v->len = n;
                v->shape[0] = n;
            }
            return view;
        }
    }
    return PySequence_GetSlice(arena, off, off + n);
}

/* seam_view (seam.h) for any allocator: alloc(h, n) for the exact int
 * `size`, then the view (*base)[off : off + n], made by seam_slice.  The
 * base view is held across alloc, which may wait with the GIL released (a
 * shared allocator's lock): a close() meanwhile clears *base, but the
 * block is handed out as the old Python path did (the alloc happened
 * before the close) and the view keeps the arena alive.  undo(h, off)
 * gives the block back if the view cannot be made (no memory). */
static inline PyObject *seam_view_object(void *h, PyObject *const *base, PyObject *size,
                                         int64_t (*alloc)(void *, uint64_t),
                                         void (*undo)(void *, uint64_t))
{
    PyObject *arena = *base;
    if (arena == NULL || h == NULL || !PyLong_CheckExact(size))
        goto slow;
    uint64_t n = PyLong_AsUnsignedLongLong(size);
    if (n == (uint64_t)-1 && PyErr_Occurred()) { /* < 0 or >= 2**64 */
        PyErr_Clear();
        goto slow;
    }
    if (n == 0)
        goto slow; /* a zero-size block is recorded by identity, in Python */
    Py_INCREF(arena);
    int64_t off = alloc(h, n);
    PyObject *view = NULL;
    if (off < 0) {
        seam_refuse(off);
    } else { /* off + n <= capacity <= 2**62: no overflow */
        view = seam_fail_views > 0 ? (seam_fail_views--, PyErr_NoMemory())
                                   : seam_slice(arena, (Py_ssize_t)off, (Py_ssize_t)n);
        if (view == NULL)
            undo(h, (uint64_t)off); /* no memory for the view: nothing lost */
    }
    Py_DECREF(arena);
    return view;
slow:
    Py_INCREF(Py_None);
    return Py_None;
}

/* free_many's loop: free_one(h, id(item)) for the items of the list at
 * address `list` from index *index on; BUDDY_OK, or the first refusal
 * with its index in *index (the items before it are freed).  The length
 * is read again on every step: a buffer exporter written in Python may run
 * code (and change the list) inside PyObject_GetBuffer.  Inline, so that
 * each caller's free_one is a direct call. */
static inline int seam_free_list(void *h, uintptr_t list, uint64_t *index,
                                 int (*free_one)(void *, uintptr_t))
{
    PyObject *items = (PyObject *)list;
    if (h == NULL)
        return SEAM_NO_POOL;
    for (Py_ssize_t i = (Py_ssize_t)*index; i < PyList_GET_SIZE(items); i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        Py_INCREF(item);
        int status = free_one(h, (uintptr_t)item);
        Py_DECREF(item);
        if (status != BUDDY_OK) {
            *index = (uint64_t)i;
            return status;
        }
    }
    return BUDDY_OK;
}

/* Binds `view` to bases[slot] (None clears it): seam_set_base for a table
 * of n slots. */
int seam_base_store(PyObject **bases, int n, int slot, PyObject *view);

/* A slot table: n handles, NULL where a slot is free.  A slot is read with
 * acquire and written with release ordering (a plain load and store on
 * x86), so an entry point running on a free-threaded build sees a handle
 * only once it is complete; binding and unbinding are serialised by one
 * lock (the GIL, or a mutex with BUDDY_LOCKED). */
#define SEAM_SLOT_GET(slots, k) __atomic_load_n(&(slots)[k], __ATOMIC_ACQUIRE)

/* Puts h in a free slot and returns its index, or -1 if none is free. */
int seam_slot_bind(void **slots, int n, void *h);

/* Empties h's slot, if it has one, and clears that slot's view in bases. */
void seam_slot_unbind(void **slots, PyObject **bases, int n, void *h);

#endif /* ALLOC_SEAM_PY_H */

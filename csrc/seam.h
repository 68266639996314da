/*
 * seam.h -- the binding's entry points that take a Python object (internal).
 *
 * The pool (pool.h) frees a block given its address and length.  Getting
 * those from Python costs more than the free itself: ffi.from_buffer(),
 * len() and a three-argument call add ~190 ns to a ~20 ns operation.  These
 * functions take the object's id() instead and ask CPython for its buffer
 * directly (PyObject_GetBuffer, released before returning), so that a free
 * is one two-argument call.  The caller keeps the object alive across the
 * call (it is the caller's argument), so the id() is a valid PyObject *.
 *
 * They are compiled into the cffi extension (which includes Python.h and
 * keeps the GIL, or the thread attached on a free-threaded build, across the
 * call), never into the plain-C core or its tests.  When the object is not
 * a buffer, the functions return SEAM_NOT_A_BUFFER and clear the Python
 * error: the binding then takes its ordinary path (ffi.from_buffer), which
 * raises the error a user should see.  That path is also the fallback the
 * test-suite exercises on its own.
 */
#ifndef ALLOC_SEAM_H
#define ALLOC_SEAM_H

#include "pool.h"

/* Statuses besides buddy_status (distinct from every BUDDY_*):
 * SEAM_NOT_A_BUFFER  no simple (contiguous) buffer: Python says why;
 * SEAM_EMPTY         a zero-length buffer: which zero-size block it frees
 *                    is decided by identity, in Python;
 * SEAM_NO_POOL       pool is NULL: the allocator was never created. */
#define SEAM_NOT_A_BUFFER 100
#define SEAM_EMPTY 101
#define SEAM_NO_POOL 102

/* pool_free() of the bytes of the object at address `obj` (an id()). */
int seam_free(alloc_pool_t *p, uintptr_t obj);

/* Frees the blocks of the list at address `list` (an id(); a list object)
 * in order, from index *index on.  Returns BUDDY_OK, or the status of the
 * first block that is refused, with its index in *index (the blocks before
 * it are freed, the rest untouched). */
int seam_free_many(alloc_pool_t *p, uintptr_t list, uint64_t *index);

#endif /* ALLOC_SEAM_H */

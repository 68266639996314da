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

/* What seam_alloc returns for size 0 (besides pool_alloc's offsets and
 * POOL_* codes): nothing was allocated; a zero-size block is the
 * binding's slow path (it records the view by identity). */
#define SEAM_ALLOC_ZERO -100

/* pool_alloc(p, size) for size >= 1; SEAM_ALLOC_ZERO for 0. */
int64_t seam_alloc(alloc_pool_t *p, uint64_t size);

/* ---- objects as they are ---------------------------------------------------
 * A seam_obj is a PyObject *.  Where the build can (ffi_build.py: GCC or
 * Clang, and no other type in these headers is unsigned long long), cffi's
 * generated wrappers pass an argument of this type and return a result of
 * it untouched, instead of converting them to and from a Python int: the
 * binding hands a block to free as it is (not its id()), and an alloc
 * returns the block's view made here.  seam_raw_objects() (the preamble)
 * says whether that is so; where it is not, the binding never calls the
 * functions that take or return a seam_obj: it passes id(obj) to those
 * that take a uintptr_t and slices the view itself.  Measured against
 * that: a 64-byte alloc+free pair 296 -> ~210 ns (see seam_view_<k>). */
typedef unsigned long long seam_obj;

/* pool_free() of the bytes of the object at address `obj` (an id()). */
int seam_free(alloc_pool_t *p, uintptr_t obj);

/* ---- one-argument entry points -------------------------------------------
 * cffi passes one argument as is (METH_O) but two or more in a tuple it
 * unpacks: a two-argument call costs ~45 ns more than a one-argument call,
 * more than the allocation itself.  So the pool is bound in C instead:
 * there are SEAM_SLOTS slots, and for each slot k five entry points,
 *
 *     int64_t  seam_alloc_<k>(uint64_t size);   = seam_alloc(slot k, size)
 *     seam_obj seam_view_<k>(seam_obj size);    (below: views made in C)
 *     int      seam_free_<k>(uintptr_t obj);    = seam_free(slot k, obj)
 *     int      seam_free_obj_<k>(seam_obj obj); = the same, given the object
 *     int      seam_free_at_<k>(uint64_t off);  = pool_free_at(slot k, off)
 *
 * (defined in seam.c, declared to cffi by ffi_build.py).  seam_bind puts a
 * pool in a free slot and says which; a pool that finds none (more than
 * SEAM_SLOTS live at once) uses the two-argument functions (seam_alloc,
 * seam_free, pool_free_at), which do the same.  The slot is released by
 * seam_destroy, when the pool itself is destroyed: until then nothing else
 * can be bound there, so an entry point a live allocator holds always
 * reaches its own pool.  An empty slot holds NULL, which every function
 * refuses (POOL_REFUSED, SEAM_NO_POOL, BUDDY_EINVAL).  Binding is
 * serialised by the GIL, or by a mutex with BUDDY_LOCKED. */
#define SEAM_SLOTS 64

/* The slot p is now bound to, or -1 if every slot is taken. */
int seam_bind(alloc_pool_t *p);

/* ---- views made in C -------------------------------------------------------
 * seam_view_<k>(size) allocates like seam_alloc_<k> and answers with the
 * block itself, view[off : off + size] of the arena view bound to slot k
 * (seam_set_base): one C call instead of a call, a Python int and a slice.
 * The view is made as memoryview's own slicing makes it, minus the slice
 * object (seam_slice in seam_py.h, which says what it leans on).
 * Only where seam_raw_objects() and seam_views() say so.  It returns
 *   a new view;
 *   None when the request is not for this path: size not an exact int, 0,
 *     negative or 2**64 and up, or no view bound to the slot (not yet, or
 *     the allocator was closed) -- the binding's slow path decides those;
 *   or it raises the binding's refusal exception (seam_set_refusal) with
 *     the refusing status (a POOL_* code) as its one argument.
 * Until a slot's base is bound (or after it is cleared) the entry points
 * return None and allocate nothing. */

/* 1 where views are made in C: a build with a GIL (the base view a close()
 * clears must not be read by another thread meanwhile). */
int seam_views(void);

/* The exception type seam_view raises for a refusal (kept for good). */
int seam_set_refusal(seam_obj type);

/* Binds the arena view `view` (a 1-D memoryview of bytes) to slot k, or
 * clears the slot's view when `view` is None.  0, or -1 for no such slot
 * or where views are not made in C. */
int seam_set_base(int slot, seam_obj view);

/* Testing aid: the next n views made in C (private or shared) fail as if
 * there were no memory for them -- MemoryError, the block given back. */
void seam_debug_fail_views(int n);

/* Releases p's slot (if it has one) and its view, and destroys it
 * (pool_destroy). */
void seam_destroy(alloc_pool_t *p);

/* Frees the blocks of the list at address `list` (an id(); a list object)
 * in order, from index *index on.  Returns BUDDY_OK, or the status of the
 * first block that is refused, with its index in *index (the blocks before
 * it are freed, the rest untouched). */
int seam_free_many(alloc_pool_t *p, uintptr_t list, uint64_t *index);

/* Appends to the list at address `list` (an id(); a list object) the
 * slices view[offsets[i] : offsets[i] + size] of the memoryview at address
 * `view` (an id()), for i < count: what alloc_many returns, made in one
 * call instead of a Python loop (batch-64, free_many(alloc_many(64,
 * 1024)): 189 -> 164 ns a block, interleaved medians).  Returns 0, or -1
 * with the Python error cleared if a slice could not be made (no memory):
 * the list then holds the first ones, and the binding makes the rest in
 * Python. */
int seam_slices(uintptr_t view, uint64_t size, const uint64_t *offsets,
                uint64_t count, uintptr_t list);

#endif /* ALLOC_SEAM_H */

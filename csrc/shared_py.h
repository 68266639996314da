/*
 * shared_py.h -- SharedBuddyAllocator's entry points that need Python.h
 * (internal): built only into the extension, like seam.h.
 */
#ifndef ALLOC_SHARED_PY_H
#define ALLOC_SHARED_PY_H

#include "seam.h"
#include "shared.h"

/* Installs the wait hooks (shared_set_wait_hooks) that release the GIL
 * while a thread blocks on a lock another process or thread holds, and
 * take it back after the operation has unlocked.  Called once at import. */
void shared_py_init(void);

/* shared_free() of the bytes of the object at address `obj` (an id());
 * SEAM_NOT_A_BUFFER, SEAM_EMPTY or SEAM_NO_POOL as seam_free. */
int shared_seam_free(shared_t *h, uintptr_t obj);

/* seam_free_many for a shared allocator. */
int shared_seam_free_many(shared_t *h, uintptr_t list, uint64_t *index);

/* ---- one-argument entry points (as seam.h's, for the same ~45 ns) ------
 * SHARED_SLOTS slots; for each slot k
 *
 *     int64_t  shared_alloc_<k>(uint64_t size); = shared_alloc(slot k, size),
 *                                                 SEAM_ALLOC_ZERO for size 0
 *     seam_obj shared_view_<k>(seam_obj size);  = seam_view_<k> for slot k
 *                                                 (seam.h), its view bound
 *                                                 by shared_py_set_base
 *     int      shared_free_<k>(uintptr_t obj);  = shared_seam_free(slot k, obj)
 *     int      shared_free_obj_<k>(seam_obj obj); = the same, given the object
 *
 * (defined in shared_py.c, declared to cffi by ffi_build.py).
 * shared_py_bind puts a handle in a free slot and says which (-1: none
 * free; the binding then passes the handle to shared_py_alloc and
 * shared_seam_free itself); shared_py_destroy empties its slot and
 * releases the handle (shared_release), so an entry point a live allocator
 * holds always reaches its own handle.  An empty slot holds NULL, which
 * the functions refuse (SHARED_REFUSED, SEAM_NO_POOL).  Serialised by the
 * GIL, or by a mutex with BUDDY_LOCKED. */
#define SHARED_SLOTS 16

int shared_py_bind(shared_t *h);

/* seam_set_base for the shared slots. */
int shared_py_set_base(int slot, seam_obj view);

/* What shared_alloc_<k> does, with the handle passed: for a handle that
 * found no free slot (size 0: SEAM_ALLOC_ZERO, the binding's slow path). */
int64_t shared_py_alloc(shared_t *h, uint64_t size);
/* Empties h's slot and its view, and releases h (shared_release). */
void shared_py_destroy(shared_t *h);

#endif /* ALLOC_SHARED_PY_H */

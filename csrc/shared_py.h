/*
 * shared_py.h -- SharedBuddyAllocator's entry points that need Python.h
 * (internal): built only into the extension, like seam.h.
 */
#ifndef ALLOC_SHARED_PY_H
#define ALLOC_SHARED_PY_H

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

#endif /* ALLOC_SHARED_PY_H */

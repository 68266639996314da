/*
 * shared_py.c -- see shared_py.h.  Needs Python.h: built only into the
 * extension (where Py_BEGIN_ALLOW_THREADS keeps its meaning: the
 * preamble's redefinition applies to the preamble alone).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "seam.h"
#include "shared_py.h"

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

/*
 * seam.c -- see seam.h.  Needs Python.h: built only into the extension.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "seam.h"

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

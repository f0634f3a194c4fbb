/* Shared declarations of the moss._kernels extension (_kernels.c and _hnsw.c). */
#ifndef MOSS_KERNELS_H
#define MOSS_KERNELS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* PyObject_GetBuffer, checking that the size is a multiple of itemsize (ValueError if not). */
int moss_get_buf(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t itemsize,
                 const char *what);

/* _hnsw.c: the compiled search over a serialised usearch graph. */
extern const char hnsw_header_doc[];
extern const char hnsw_offsets_doc[];
extern const char hnsw_search_doc[];
PyObject *hnsw_header(PyObject *self, PyObject *arg);
PyObject *hnsw_offsets(PyObject *self, PyObject *args);
PyObject *hnsw_search(PyObject *self, PyObject *args);

#endif

/* Shared declarations of the moss._kernels extension (_kernels.c and _hnsw.c). */
#ifndef MOSS_KERNELS_H
#define MOSS_KERNELS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* PyObject_GetBuffer, checking that the size is a multiple of itemsize (ValueError if not). */
int moss_get_buf(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t itemsize,
                 const char *what);

/* Ask for the cache lines of p[0:len] ahead of use: the re-rank's rows and the graph walk's
 * vectors and neighbour lists sit scattered in memory, cold after an embedding, and each would
 * otherwise be a miss waited for in turn. */
static inline void moss_prefetch(const void *p, size_t len) {
    const char *c = (const char *)p;
    for (size_t i = 0; i < len; i += 64) __builtin_prefetch(c + i);
}

/* _hnsw.c: the compiled search over a serialised usearch graph. */
extern const char hnsw_header_doc[];
extern const char hnsw_offsets_doc[];
extern const char hnsw_search_doc[];
PyObject *hnsw_header(PyObject *self, PyObject *arg);
PyObject *hnsw_offsets(PyObject *self, PyObject *args);
PyObject *hnsw_search(PyObject *self, PyObject *args);

#endif

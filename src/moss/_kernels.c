/* moss._kernels: compiled inner loops (optional; moss falls back to numpy without them).
 *
 * bm25_top: exhaustive BM25 scoring of one query's postings and top-k selection, the loop that
 * moss.keyword.BM25Index.search otherwise runs as about seven numpy calls per posting list. The
 * arithmetic is the numpy path's, operation for operation, in IEEE single precision (built with
 * -ffp-contract=off: no fused multiply-add), so both give the same bits; tests/test_keyword.py
 * checks that they agree.
 *
 * fuse_score: the default hybrid fusion (moss.fusion.fuse_candidates with score fusion and the
 * theoretical normalisation) with its cosines, the same float64 operations in one call.
 *
 * query_state, quantize_i8 and dot_rows: the query vector's checks, its int8 quantisation and the
 * float64 inner products that re-rank vector candidates (moss.vectors). After a text query's
 * embedding has evicted the caches, each numpy call costs tens of microseconds; these are three
 * calls instead of about fifteen. quantize_i8 repeats numpy's float64 operations exactly;
 * dot_rows sums in float64 in a fixed order, and differs from numpy's BLAS order only in the
 * float64 rounding, which the final rounding to float32 hides (see _dot64 in
 * moss.vectors_exact).
 *
 * hnsw_header, hnsw_offsets and hnsw_search (in _hnsw.c): the HNSW graph walk over a serialised
 * usearch graph, with the memory requests of each step issued together (moss.vectors).
 *
 * No numpy C API: arrays come in through the buffer protocol, so the module builds against the
 * Python headers alone. Every index read from a buffer is bounds-checked: a damaged index raises
 * ValueError instead of touching memory it does not own.
 */
#include "_kernels.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float score;
    int64_t key;
    int32_t slot;
} hit_t;

/* a ranks before b: higher score, then lower key */
static inline int better(const hit_t *a, const hit_t *b) {
    return a->score > b->score || (a->score == b->score && a->key < b->key);
}

/* Min-heap on "better": the root is the worst hit kept. */
static void sift_down(hit_t *h, Py_ssize_t n, Py_ssize_t i) {
    for (;;) {
        Py_ssize_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && better(&h[w], &h[l])) w = l;
        if (r < n && better(&h[w], &h[r])) w = r;
        if (w == i) return;
        hit_t t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

static void sift_up(hit_t *h, Py_ssize_t i) {
    while (i > 0) {
        Py_ssize_t p = (i - 1) / 2;
        if (!better(&h[p], &h[i])) return;
        hit_t t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

static int cmp_hits(const void *pa, const void *pb) {
    const hit_t *a = (const hit_t *)pa, *b = (const hit_t *)pb;
    if (better(a, b)) return -1;
    if (better(b, a)) return 1;
    return 0;
}

typedef struct {
    const int32_t *slots;
    const uint16_t *tf;
    Py_ssize_t len;
    float w;
} seg_t;

int moss_get_buf(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t itemsize,
                 const char *what) {
    if (PyObject_GetBuffer(obj, view, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0) return -1;
    if (view->len % itemsize != 0) {
        PyErr_Format(PyExc_ValueError, "%s: buffer size %zd is not a multiple of %zd", what,
                     view->len, itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(bm25_top_doc,
"bm25_top(scores, seen, slot_len, live, slot_key, allowed, indptr, post_slot, post_tf, terms,\n"
"         delta, c1, c2, depth, out_keys, out_scores) -> int\n\n"
"Score one query exhaustively and keep its best ``depth`` slots. ``terms`` is a sequence of\n"
"(term id, weight): each term's postings in the main CSR segment (``indptr`` int64,\n"
"``post_slot`` int32, ``post_tf`` uint16; term ids past the CSR have none) are scored first,\n"
"then ``delta``, a sequence of (slots int32, tf uint16, weight) for the slots added since. A\n"
"posting scores ``w * tf / (tf + c1 + c2 * slot_len[slot])`` in float32, summed per slot in that\n"
"order (main and delta slots are disjoint, so each slot's sum runs in term order). The best\n"
"``depth`` live (and ``allowed[key]``) slots' keys and scores, best first, ties by key\n"
"ascending, go to ``out_keys`` (int64) and ``out_scores`` (float32). ``scores`` (float32) and\n"
"``seen`` (bool) are scratch arrays, all zero on entry and left all zero. Returns the count.");

static PyObject *bm25_top(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o_scores, *o_seen, *o_len, *o_live, *o_key, *o_allowed, *o_indptr, *o_pslot, *o_ptf;
    PyObject *o_terms, *o_delta, *o_ok, *o_os;
    double c1d, c2d;
    Py_ssize_t depth;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOddnOO:bm25_top", &o_scores, &o_seen, &o_len, &o_live,
                          &o_key, &o_allowed, &o_indptr, &o_pslot, &o_ptf, &o_terms, &o_delta,
                          &c1d, &c2d, &depth, &o_ok, &o_os))
        return NULL;
    if (depth < 0) {
        PyErr_SetString(PyExc_ValueError, "depth must be >= 0");
        return NULL;
    }
    Py_buffer b_scores = {0}, b_seen = {0}, b_len = {0}, b_live = {0}, b_key = {0};
    Py_buffer b_allowed = {0}, b_indptr = {0}, b_pslot = {0}, b_ptf = {0}, b_ok = {0}, b_os = {0};
    int have_allowed = o_allowed != Py_None;
    PyObject *terms_fast = NULL, *delta_fast = NULL;
    Py_buffer *delta_bufs = NULL; /* two per delta segment: slots, tf */
    Py_ssize_t n_delta = 0, delta_held = 0, count = -1;
    seg_t *segs = NULL;
    int32_t *touched = NULL;
    hit_t *heap = NULL;

    if (moss_get_buf(o_scores, &b_scores, 1, 4, "scores") < 0) goto done;
    if (moss_get_buf(o_seen, &b_seen, 1, 1, "seen") < 0) goto done;
    if (moss_get_buf(o_len, &b_len, 0, 4, "slot_len") < 0) goto done;
    if (moss_get_buf(o_live, &b_live, 0, 1, "live") < 0) goto done;
    if (moss_get_buf(o_key, &b_key, 0, 8, "slot_key") < 0) goto done;
    if (have_allowed && moss_get_buf(o_allowed, &b_allowed, 0, 1, "allowed") < 0) goto done;
    if (moss_get_buf(o_indptr, &b_indptr, 0, 8, "indptr") < 0) goto done;
    if (moss_get_buf(o_pslot, &b_pslot, 0, 4, "post_slot") < 0) goto done;
    if (moss_get_buf(o_ptf, &b_ptf, 0, 2, "post_tf") < 0) goto done;
    if (moss_get_buf(o_ok, &b_ok, 1, 8, "out_keys") < 0) goto done;
    if (moss_get_buf(o_os, &b_os, 1, 4, "out_scores") < 0) goto done;
    Py_ssize_t n_slots = b_len.len / 4;
    if (b_scores.len / 4 < n_slots || b_seen.len < n_slots || b_live.len < n_slots ||
        b_key.len / 8 < n_slots) {
        PyErr_SetString(PyExc_ValueError, "scratch or slot arrays shorter than slot_len");
        goto done;
    }
    Py_ssize_t n_post = b_pslot.len / 4;
    if (b_ptf.len / 2 != n_post) {
        PyErr_SetString(PyExc_ValueError, "post_slot and post_tf differ in length");
        goto done;
    }
    Py_ssize_t cap = b_ok.len / 8 < b_os.len / 4 ? b_ok.len / 8 : b_os.len / 4;
    if (cap < depth) {
        PyErr_SetString(PyExc_ValueError, "output arrays shorter than depth");
        goto done;
    }

    terms_fast = PySequence_Fast(o_terms, "terms must be a sequence");
    if (terms_fast == NULL) goto done;
    delta_fast = PySequence_Fast(o_delta, "delta must be a sequence");
    if (delta_fast == NULL) goto done;
    Py_ssize_t n_terms = PySequence_Fast_GET_SIZE(terms_fast);
    n_delta = PySequence_Fast_GET_SIZE(delta_fast);
    segs = (seg_t *)calloc(n_terms + n_delta + 1, sizeof(seg_t));
    delta_bufs = (Py_buffer *)calloc(2 * n_delta + 1, sizeof(Py_buffer));
    if (segs == NULL || delta_bufs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const int64_t *indptr = (const int64_t *)b_indptr.buf;
    Py_ssize_t n_rows = b_indptr.len / 8 - 1; /* terms with a main segment */
    Py_ssize_t n_segs = 0, total = 0;
    for (Py_ssize_t i = 0; i < n_terms; i++) {
        long long tid;
        double w;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(terms_fast, i), "Ld:term", &tid, &w))
            goto done;
        if (tid < 0 || tid >= n_rows) continue; /* a term added since the last merge */
        int64_t lo = indptr[tid], hi = indptr[tid + 1];
        if (lo < 0 || hi < lo || hi > n_post) {
            PyErr_SetString(PyExc_ValueError, "indptr out of range");
            goto done;
        }
        segs[n_segs].slots = (const int32_t *)b_pslot.buf + lo;
        segs[n_segs].tf = (const uint16_t *)b_ptf.buf + lo;
        segs[n_segs].len = (Py_ssize_t)(hi - lo);
        segs[n_segs].w = (float)w;
        total += segs[n_segs++].len;
    }
    for (Py_ssize_t i = 0; i < n_delta; i++) {
        PyObject *o_s, *o_t;
        double w;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(delta_fast, i), "OOd:delta", &o_s, &o_t, &w))
            goto done;
        if (moss_get_buf(o_s, &delta_bufs[2 * i], 0, 4, "delta slots") < 0) goto done;
        if (moss_get_buf(o_t, &delta_bufs[2 * i + 1], 0, 2, "delta tf") < 0) {
            PyBuffer_Release(&delta_bufs[2 * i]);
            goto done;
        }
        delta_held = i + 1;
        Py_ssize_t len = delta_bufs[2 * i].len / 4;
        if (delta_bufs[2 * i + 1].len / 2 != len) {
            PyErr_SetString(PyExc_ValueError, "delta slots and tf differ in length");
            goto done;
        }
        segs[n_segs].slots = (const int32_t *)delta_bufs[2 * i].buf;
        segs[n_segs].tf = (const uint16_t *)delta_bufs[2 * i + 1].buf;
        segs[n_segs].len = len;
        segs[n_segs].w = (float)w;
        total += segs[n_segs++].len;
    }

    touched = (int32_t *)malloc((total ? total : 1) * sizeof(int32_t));
    if (touched == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    float *scores = (float *)b_scores.buf;
    uint8_t *seen = (uint8_t *)b_seen.buf;
    const float *slot_len = (const float *)b_len.buf;
    const uint8_t *live = (const uint8_t *)b_live.buf;
    const int64_t *slot_key = (const int64_t *)b_key.buf;
    const uint8_t *allowed = have_allowed ? (const uint8_t *)b_allowed.buf : NULL;
    Py_ssize_t n_allowed = have_allowed ? b_allowed.len : 0;
    const float c1 = (float)c1d, c2 = (float)c2d;
    Py_ssize_t m = 0, kept = 0;
    int bad = 0;

    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n_segs && !bad; i++) {
        const int32_t *sl = segs[i].slots;
        const uint16_t *tf = segs[i].tf;
        const float w = segs[i].w;
        for (Py_ssize_t j = 0; j < segs[i].len; j++) {
            int32_t s = sl[j];
            if (s < 0 || s >= n_slots) {
                bad = 1;
                break;
            }
            /* numpy: num = float32(tf); den = len * c2; den += c1; den += num; num *= w;
             * num /= den (each step rounded to float32) */
            float num = (float)tf[j];
            float den = slot_len[s] * c2;
            den += c1;
            den += num;
            num *= w;
            num /= den;
            if (!seen[s]) {
                seen[s] = 1;
                touched[m++] = s;
            }
            scores[s] += num;
        }
    }
    /* Select the best `depth` of the touched live, allowed slots; reset the scratch. */
    Py_ssize_t want = depth < m ? depth : m;
    heap = want ? (hit_t *)malloc(want * sizeof(hit_t)) : NULL;
    if (want && heap == NULL) bad = 2;
    for (Py_ssize_t i = 0; i < m; i++) {
        int32_t s = touched[i];
        hit_t h = {scores[s], slot_key[s], s};
        scores[s] = 0.0f;
        seen[s] = 0;
        if (bad || !want || !live[s]) continue;
        if (allowed != NULL && (h.key < 0 || h.key >= n_allowed || !allowed[h.key])) continue;
        if (kept < want) {
            heap[kept] = h;
            sift_up(heap, kept);
            kept++;
        } else if (better(&h, &heap[0])) {
            heap[0] = h;
            sift_down(heap, kept, 0);
        }
    }
    if (!bad && kept) {
        qsort(heap, (size_t)kept, sizeof(hit_t), cmp_hits);
        int64_t *ok = (int64_t *)b_ok.buf;
        float *os = (float *)b_os.buf;
        for (Py_ssize_t i = 0; i < kept; i++) {
            ok[i] = heap[i].key;
            os[i] = heap[i].score;
        }
    }
    Py_END_ALLOW_THREADS

    if (bad == 1) {
        PyErr_SetString(PyExc_ValueError, "a posting names a slot outside the index");
        goto done;
    }
    if (bad == 2) {
        PyErr_NoMemory();
        goto done;
    }
    count = kept;

done:
    for (Py_ssize_t i = 0; i < delta_held; i++) {
        PyBuffer_Release(&delta_bufs[2 * i]);
        PyBuffer_Release(&delta_bufs[2 * i + 1]);
    }
    free(delta_bufs);
    free(segs);
    free(touched);
    free(heap);
    Py_XDECREF(terms_fast);
    Py_XDECREF(delta_fast);
    Py_buffer *views[] = {&b_scores, &b_seen,  &b_len, &b_live, &b_key, &b_allowed,
                          &b_indptr, &b_pslot, &b_ptf, &b_ok,   &b_os};
    for (size_t i = 0; i < sizeof(views) / sizeof(views[0]); i++)
        if (views[i]->obj != NULL) PyBuffer_Release(views[i]);
    if (count < 0) return NULL;
    return PyLong_FromSsize_t(count);
}

/* ------------------------------------------------------------------ vector helpers */

PyDoc_STRVAR(query_state_doc,
             "query_state(q) -> int\n\n"
             "0 if the float32 buffer holds a NaN or an infinity, else 1 if every value is\n"
             "zero, else 2.");

static PyObject *query_state(PyObject *self, PyObject *arg) {
    Py_buffer b;
    if (moss_get_buf(arg, &b, 0, sizeof(float), "q") < 0) return NULL;
    const float *q = (const float *)b.buf;
    Py_ssize_t n = b.len / (Py_ssize_t)sizeof(float);
    int finite = 1, nonzero = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        float v = q[i];
        if (v - v != 0.0f) { /* NaN or infinity: v - v is NaN */
            finite = 0;
            break;
        }
        nonzero |= v != 0.0f;
    }
    PyBuffer_Release(&b);
    return PyLong_FromLong(finite ? (nonzero ? 2 : 1) : 0);
}

PyDoc_STRVAR(quantize_i8_doc,
             "quantize_i8(q, out) -> None\n\n"
             "out[i] = clip(rint(float64(q[i]) * (127.0 / max|float64(q)|)), -127, 127) as int8:\n"
             "numpy's float64 operations, one by one. q is finite float32 with a nonzero value;\n"
             "out is a writable int8 buffer of the same length.");

static PyObject *quantize_i8(PyObject *self, PyObject *args) {
    PyObject *oq, *oout;
    if (!PyArg_ParseTuple(args, "OO", &oq, &oout)) return NULL;
    Py_buffer bq, bo;
    if (moss_get_buf(oq, &bq, 0, sizeof(float), "q") < 0) return NULL;
    if (moss_get_buf(oout, &bo, 1, 1, "out") < 0) {
        PyBuffer_Release(&bq);
        return NULL;
    }
    const float *q = (const float *)bq.buf;
    Py_ssize_t n = bq.len / (Py_ssize_t)sizeof(float);
    PyObject *ret = NULL;
    double top = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) {
        double a = fabs((double)q[i]);
        if (a > top) top = a;
    }
    if (bo.len != n) {
        PyErr_SetString(PyExc_ValueError, "quantize_i8: out and q differ in length");
    } else if (!(top > 0.0) || !isfinite(top)) {
        PyErr_SetString(PyExc_ValueError, "quantize_i8: q must be finite with a nonzero value");
    } else {
        double scale = 127.0 / top;
        int8_t *out = (int8_t *)bo.buf;
        for (Py_ssize_t i = 0; i < n; i++) {
            double v = nearbyint((double)q[i] * scale); /* ties to even, as np.rint */
            if (v > 127.0) v = 127.0;
            if (v < -127.0) v = -127.0;
            out[i] = (int8_t)v;
        }
        ret = Py_None;
        Py_INCREF(ret);
    }
    PyBuffer_Release(&bq);
    PyBuffer_Release(&bo);
    return ret;
}

/* One row's inner product as dot_rows and fuse_score take it: float64 products summed over eight
 * interleaved partial sums combined in a fixed order, rounded once to float32. */
static float dot_one(const float *x, const float *q, Py_ssize_t dim) {
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    Py_ssize_t i = 0;
    for (; i + 8 <= dim; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += (double)x[i + k] * (double)q[i + k];
    for (; i < dim; i++) acc[i % 8] += (double)x[i] * (double)q[i];
    return (float)(((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])));
}

#define PREFETCH_ROWS 4 /* rows requested ahead: measured 31 -> 24 us for 32 cold rows */

PyDoc_STRVAR(dot_rows_doc,
             "dot_rows(mat, dim, rows, q, out) -> None\n\n"
             "out[j] = float32(sum over i of float64(mat[rows[j], i]) * float64(q[i])), the\n"
             "sum taken over eight interleaved float64 partial sums combined in a fixed order.\n"
             "mat is a C-contiguous float32 buffer of rows x dim; rows are int64; a row outside\n"
             "mat raises ValueError.");

static PyObject *dot_rows(PyObject *self, PyObject *args) {
    PyObject *omat, *orows, *oq, *oout;
    Py_ssize_t dim;
    if (!PyArg_ParseTuple(args, "OnOOO", &omat, &dim, &orows, &oq, &oout)) return NULL;
    Py_buffer bm = {0}, br = {0}, bq = {0}, bo = {0};
    PyObject *ret = NULL;
    if (moss_get_buf(omat, &bm, 0, sizeof(float), "mat") < 0) goto done;
    if (moss_get_buf(orows, &br, 0, sizeof(int64_t), "rows") < 0) goto done;
    if (moss_get_buf(oq, &bq, 0, sizeof(float), "q") < 0) goto done;
    if (moss_get_buf(oout, &bo, 1, sizeof(float), "out") < 0) goto done;
    Py_ssize_t n_rows = br.len / (Py_ssize_t)sizeof(int64_t);
    if (dim <= 0 || bq.len != dim * (Py_ssize_t)sizeof(float) ||
        bo.len != n_rows * (Py_ssize_t)sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "dot_rows: q, out or dim do not match");
        goto done;
    }
    Py_ssize_t mat_rows = bm.len / ((Py_ssize_t)sizeof(float) * dim);
    const float *mat = (const float *)bm.buf, *q = (const float *)bq.buf;
    const int64_t *rows = (const int64_t *)br.buf;
    float *out = (float *)bo.buf;
    for (Py_ssize_t j = 0; j < n_rows; j++) {
        if (rows[j] < 0 || rows[j] >= mat_rows) {
            PyErr_Format(PyExc_ValueError, "dot_rows: row %lld outside the matrix (%zd rows)",
                         (long long)rows[j], mat_rows);
            goto done;
        }
    }
    int release = n_rows * dim > (1 << 16);
    PyThreadState *ts = release ? PyEval_SaveThread() : NULL;
    const size_t row_bytes = (size_t)dim * sizeof(float);
    for (Py_ssize_t j = 0; j < n_rows && j < PREFETCH_ROWS; j++)
        moss_prefetch(mat + rows[j] * dim, row_bytes);
    for (Py_ssize_t j = 0; j < n_rows; j++) {
        if (j + PREFETCH_ROWS < n_rows) moss_prefetch(mat + rows[j + PREFETCH_ROWS] * dim, row_bytes);
        out[j] = dot_one(mat + rows[j] * dim, q, dim);
    }
    if (release) PyEval_RestoreThread(ts);
    ret = Py_None;
    Py_INCREF(ret);
done:
    if (bm.obj != NULL) PyBuffer_Release(&bm);
    if (br.obj != NULL) PyBuffer_Release(&br);
    if (bq.obj != NULL) PyBuffer_Release(&bq);
    if (bo.obj != NULL) PyBuffer_Release(&bo);
    return ret;
}

/* ------------------------------------------------------------------ score fusion */

typedef struct {
    double fused;
    Py_ssize_t pos;
} ranked_t;

/* higher fused value first, then earlier union position: numpy's stable argsort of -fused */
static int cmp_ranked(const void *pa, const void *pb) {
    const ranked_t *a = (const ranked_t *)pa, *b = (const ranked_t *)pb;
    if (a->fused > b->fused) return -1;
    if (a->fused < b->fused) return 1;
    return (a->pos > b->pos) - (a->pos < b->pos);
}

typedef struct {
    int64_t row;
    Py_ssize_t pos;
} row_pos_t;

/* VectorIndex.clamped_cosines for one row: dot / (norm * qnorm), 0 when that is 0, in [0, 1] */
static double clamped_cos(double dot, float norm, double qnorm) {
    double denom = (double)norm * qnorm;
    double c = denom > 0.0 ? dot / denom : 0.0;
    return c < 0.0 ? 0.0 : (c > 1.0 ? 1.0 : c);
}

static int cmp_row_pos(const void *pa, const void *pb) {
    const row_pos_t *a = (const row_pos_t *)pa, *b = (const row_pos_t *)pb;
    return (a->row > b->row) - (a->row < b->row);
}

PyDoc_STRVAR(
    fuse_score_doc,
    "fuse_score(v_rows, v_dots, k_rows, k_scores, top, mat, dim, norms, q, qnorm, alpha, want,\n"
    "           min_score, out_rows, out_cos) -> int\n\n"
    "moss.fusion.fuse_candidates for fusion='score' with the theoretical normalisation, plus the\n"
    "engine's min_score and top_k cut, in one call and with the same float64 operations: the\n"
    "union (V in order, then K's rows that V lacks); each row's clamped cosine (V's inner\n"
    "products as given, the others as dot_rows computes them, over norm * qnorm); the fused\n"
    "value alpha * cos + (1 - alpha) * (k_score / top) for rows of K (no keyword term when\n"
    "top <= 0); best first, ties by union position. Writes the first `want` rows whose cosine\n"
    "is at least min_score (NaN: no floor) with their cosines and returns how many. V and K\n"
    "must each hold distinct rows; a row outside mat or norms raises ValueError.");

static PyObject *fuse_score(PyObject *self, PyObject *args) {
    PyObject *ovr, *ovd, *okr, *oks, *omat, *onorms, *oq, *oor, *ooc;
    double top, qnorm, alpha, min_score;
    Py_ssize_t dim, want;
    if (!PyArg_ParseTuple(args, "OOOOdOnOOddndOO", &ovr, &ovd, &okr, &oks, &top, &omat, &dim,
                          &onorms, &oq, &qnorm, &alpha, &want, &min_score, &oor, &ooc))
        return NULL;
    Py_buffer bvr = {0}, bvd = {0}, bkr = {0}, bks = {0}, bm = {0}, bn = {0}, bq = {0}, bor = {0},
              boc = {0};
    row_pos_t *v_sorted = NULL;
    int64_t *rows = NULL;
    ranked_t *ranked = NULL;
    double *cos = NULL;
    Py_ssize_t count = -1;
    if (moss_get_buf(ovr, &bvr, 0, sizeof(int64_t), "v_rows") < 0 ||
        moss_get_buf(ovd, &bvd, 0, sizeof(float), "v_dots") < 0 ||
        moss_get_buf(okr, &bkr, 0, sizeof(int64_t), "k_rows") < 0 ||
        moss_get_buf(oks, &bks, 0, sizeof(float), "k_scores") < 0 ||
        moss_get_buf(omat, &bm, 0, sizeof(float), "mat") < 0 ||
        moss_get_buf(onorms, &bn, 0, sizeof(float), "norms") < 0 ||
        moss_get_buf(oq, &bq, 0, sizeof(float), "q") < 0 ||
        moss_get_buf(oor, &bor, 1, sizeof(int64_t), "out_rows") < 0 ||
        moss_get_buf(ooc, &boc, 1, sizeof(double), "out_cos") < 0)
        goto done;
    const Py_ssize_t nv = bvr.len / (Py_ssize_t)sizeof(int64_t);
    const Py_ssize_t nk = bkr.len / (Py_ssize_t)sizeof(int64_t);
    const int64_t *v_rows = (const int64_t *)bvr.buf, *k_rows = (const int64_t *)bkr.buf;
    const float *v_dots = (const float *)bvd.buf, *k_scores = (const float *)bks.buf;
    const float *mat = (const float *)bm.buf, *norms = (const float *)bn.buf;
    const float *q = (const float *)bq.buf;
    if (dim <= 0 || want < 0 || bvd.len != nv * (Py_ssize_t)sizeof(float) ||
        bks.len != nk * (Py_ssize_t)sizeof(float) || bq.len != dim * (Py_ssize_t)sizeof(float) ||
        bor.len < want * (Py_ssize_t)sizeof(int64_t) ||
        boc.len < want * (Py_ssize_t)sizeof(double)) {
        PyErr_SetString(PyExc_ValueError, "fuse_score: array sizes do not match");
        goto done;
    }
    const Py_ssize_t mat_rows = bm.len / ((Py_ssize_t)sizeof(float) * dim);
    const Py_ssize_t n_norms = bn.len / (Py_ssize_t)sizeof(float);
    for (Py_ssize_t i = 0; i < nv + nk; i++) {
        int64_t r = i < nv ? v_rows[i] : k_rows[i - nv];
        if (r < 0 || r >= mat_rows || r >= n_norms) {
            PyErr_Format(PyExc_ValueError, "fuse_score: row %lld outside the index", (long long)r);
            goto done;
        }
    }
    for (Py_ssize_t j = 0; j < nk; j++) /* the rows whose cosines are computed below */
        moss_prefetch(mat + k_rows[j] * dim, (size_t)dim * sizeof(float));
    v_sorted = (row_pos_t *)malloc(sizeof(row_pos_t) * (size_t)(nv + 1));
    rows = (int64_t *)malloc(sizeof(int64_t) * (size_t)(nv + nk + 1));
    ranked = (ranked_t *)malloc(sizeof(ranked_t) * (size_t)(nv + nk + 1));
    cos = (double *)malloc(sizeof(double) * (size_t)(nv + nk + 1));
    if (v_sorted == NULL || rows == NULL || ranked == NULL || cos == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* The union (moss.fusion.union): V in order, then K's rows that V lacks, in K's order. */
    for (Py_ssize_t i = 0; i < nv; i++) {
        v_sorted[i].row = v_rows[i];
        v_sorted[i].pos = i;
        rows[i] = v_rows[i];
    }
    qsort(v_sorted, (size_t)nv, sizeof(row_pos_t), cmp_row_pos);
    Py_ssize_t n = nv;
    for (Py_ssize_t i = 0; i < nv; i++) ranked[i].fused = 0.0; /* no keyword term (yet) */
    /* Clamped cosines (VectorIndex.clamped_cosines), each row's vector term first. */
    for (Py_ssize_t i = 0; i < nv; i++) cos[i] = clamped_cos(v_dots[i], norms[v_rows[i]], qnorm);
    const double kw = 1.0 - alpha;
    for (Py_ssize_t j = 0; j < nk; j++) {
        Py_ssize_t lo = 0, hi = nv;
        while (lo < hi) {
            Py_ssize_t mid = lo + (hi - lo) / 2;
            if (v_sorted[mid].row < k_rows[j]) lo = mid + 1;
            else hi = mid;
        }
        Py_ssize_t at;
        if (lo < nv && v_sorted[lo].row == k_rows[j]) {
            at = v_sorted[lo].pos;
        } else {
            at = n++;
            int64_t r = k_rows[j];
            rows[at] = r;
            cos[at] = clamped_cos(dot_one(mat + r * dim, q, dim), norms[r], qnorm);
        }
        /* the keyword term of position `at`; its vector term is added below */
        ranked[at].fused = top > 0.0 ? kw * ((double)k_scores[j] / top) : kw * 0.0;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        /* v_term + 0.0 for rows without a keyword term: the same order of the same values */
        ranked[i].fused = alpha * cos[i] + ranked[i].fused;
        ranked[i].pos = i;
    }
    qsort(ranked, (size_t)n, sizeof(ranked_t), cmp_ranked);
    int64_t *out_rows = (int64_t *)bor.buf;
    double *out_cos = (double *)boc.buf;
    count = 0;
    for (Py_ssize_t i = 0; i < n && count < want; i++) {
        double c = cos[ranked[i].pos];
        if (!isnan(min_score) && c < min_score) continue;
        out_rows[count] = rows[ranked[i].pos];
        out_cos[count] = c;
        count++;
    }
done:
    free(v_sorted);
    free(rows);
    free(ranked);
    free(cos);
    {
        Py_buffer *views[] = {&bvr, &bvd, &bkr, &bks, &bm, &bn, &bq, &bor, &boc};
        for (size_t i = 0; i < sizeof(views) / sizeof(views[0]); i++)
            if (views[i]->obj != NULL) PyBuffer_Release(views[i]);
    }
    if (count < 0) return NULL;
    return PyLong_FromSsize_t(count);
}

static PyMethodDef methods[] = {
    {"bm25_top", bm25_top, METH_VARARGS, bm25_top_doc},
    {"query_state", query_state, METH_O, query_state_doc},
    {"quantize_i8", quantize_i8, METH_VARARGS, quantize_i8_doc},
    {"dot_rows", dot_rows, METH_VARARGS, dot_rows_doc},
    {"fuse_score", fuse_score, METH_VARARGS, fuse_score_doc},
    {"hnsw_header", hnsw_header, METH_O, hnsw_header_doc},
    {"hnsw_offsets", hnsw_offsets, METH_VARARGS, hnsw_offsets_doc},
    {"hnsw_search", hnsw_search, METH_VARARGS, hnsw_search_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "moss._kernels", "Compiled inner loops for moss (optional).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }

/* moss._kernels, the graph walk: HNSW search over a serialised usearch graph (moss.vectors).
 *
 * Why our own walk over usearch's bytes. After a text query's embedding has streamed 42.5 MB of
 * encoder weights through the caches, usearch's search touches about 1,400 int8 vectors one
 * after another, and each is a cache miss it waits for: at 100k rows the walk took 0.38 ms cold
 * against 0.16 ms warm, and at 10k 0.26 ms against 0.07 (docs/vector-index.md). usearch's walk
 * has a prefetch hook, but its Python binding passes none. This walk is the same algorithm
 * (greedy descent through the upper levels, then the best-first beam of width ef on level 0,
 * stopping when the nearest unexpanded candidate is farther than the ef-th best found), over the
 * same bytes, with the memory requests issued together: every unvisited neighbour's vector is
 * prefetched before any of them is scored, and the next candidate's neighbour list while they
 * are. Measured at 100k rows: 0.20 ms cold and 0.10 ms warm, with the same recall as usearch.
 *
 * The bytes are usearch's ``save_index_to_buffer`` output for a dense, single-key i8 index
 * (moss.vectors_graph._new_usearch), which moss views in place after loading or freezing a graph:
 *
 *   u32 rows, u32 cols; rows x cols int8 vectors, slot order;
 *   64-byte dense head: "usearch", version, kinds, u64 present, u64 deleted, u64 dims, ...;
 *   40-byte graph head: u64 size, connectivity m, base connectivity m0, max level, entry slot;
 *   i16 level per slot; then per slot a node: u64 key, i16 level, level-0 neighbours
 *   (u32 count, m0 x u32 slots), then m-wide lists (u32 count, m x u32) for levels 1..level.
 *
 * A removed node keeps its links and gets the key UINT64_MAX: it is walked through but never
 * returned, as in usearch. Distances are negated integer inner products (usearch's i8 inner
 * product ranks the same way). Every header field, offset, count and slot is checked before it
 * is used: a damaged graph raises ValueError, never reads outside the buffer.
 */
#include "_kernels.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MATRIX_HEAD 8
#define DENSE_HEAD 64
#define GRAPH_HEAD 40
#define NODE_HEAD 10 /* u64 key, i16 level */
#define FREE_KEY UINT64_MAX
#define MAX_CONNECTIVITY 1024
#define MAX_LEVEL 64

typedef struct {
    uint64_t size, dim, m, m0, max_level, entry, deleted;
    const int8_t *vectors;
    const uint8_t *levels, *nodes;
    uint64_t nodes_len;
} layout_t;

static uint64_t read_u64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

/* Parse the heads of a serialised graph into g; -1 with ValueError set if they do not fit. */
static int parse(const uint8_t *buf, uint64_t len, layout_t *g) {
    if (len < MATRIX_HEAD) goto bad;
    uint32_t rows, cols;
    memcpy(&rows, buf, 4);
    memcpy(&cols, buf + 4, 4);
    uint64_t at = MATRIX_HEAD + (uint64_t)rows * cols; /* < 2^64: both factors are u32 */
    /* cols <= 65536 keeps every int8 inner product within int32 (65536 * 127 * 127 < 2^31) */
    if (cols == 0 || cols > 65536 || at > len || len - at < DENSE_HEAD + GRAPH_HEAD) goto bad;
    /* The dense head: "usearch", u16 major/minor/patch, u8 kinds of metric, scalar, key and slot
     * (inner product 'i', i8 = 23, u64 = 14, u32 = 15: the node layout below assumes the last
     * three), u64 present, u64 deleted, u64 dimensions. */
    const uint8_t *d = buf + at;
    uint16_t major;
    memcpy(&major, d + 7, 2);
    if (memcmp(d, "usearch", 7) != 0 || major != 2 || d[14] != 23 || d[15] != 14 || d[16] != 15 ||
        read_u64(d + 33) != cols)
        goto bad;
    g->deleted = read_u64(d + 25);
    const uint8_t *h = buf + at + DENSE_HEAD;
    g->size = read_u64(h);
    g->m = read_u64(h + 8);
    g->m0 = read_u64(h + 16);
    g->max_level = read_u64(h + 24);
    g->entry = read_u64(h + 32);
    at += DENSE_HEAD + GRAPH_HEAD;
    if (g->size != rows || g->m == 0 || g->m > MAX_CONNECTIVITY || g->m0 == 0 ||
        g->m0 > MAX_CONNECTIVITY || g->max_level >= MAX_LEVEL ||
        (g->size && g->entry >= g->size) || (len - at) / 2 < g->size)
        goto bad;
    g->dim = cols;
    g->vectors = (const int8_t *)(buf + MATRIX_HEAD);
    g->levels = buf + at;
    g->nodes = buf + at + 2 * g->size;
    g->nodes_len = len - at - 2 * g->size;
    return 0;
bad:
    PyErr_SetString(PyExc_ValueError, "not a serialised usearch i8 graph this walk understands");
    return -1;
}

static uint64_t node_bytes(const layout_t *g, uint64_t level) {
    return NODE_HEAD + 4 + 4 * g->m0 + level * (4 + 4 * g->m);
}

const char hnsw_header_doc[] =
    "hnsw_header(buf) -> (size, dim)\n\n"
    "The slot count and dimension of a serialised usearch i8 graph; ValueError if its heads\n"
    "do not fit.";

PyObject *hnsw_header(PyObject *self, PyObject *arg) {
    Py_buffer b;
    if (moss_get_buf(arg, &b, 0, 1, "buf") < 0) return NULL;
    layout_t g;
    int rc = parse((const uint8_t *)b.buf, (uint64_t)b.len, &g);
    PyBuffer_Release(&b);
    if (rc < 0) return NULL;
    return Py_BuildValue("(KK)", (unsigned long long)g.size, (unsigned long long)g.dim);
}

const char hnsw_offsets_doc[] =
    "hnsw_offsets(buf, out) -> None\n\n"
    "out[s] = the byte offset of slot s's node from the first node, out[size] = the nodes'\n"
    "total length (out: writable uint64, size + 1 entries). ValueError if a level is out of\n"
    "range or the nodes do not end exactly where the buffer does.";

PyObject *hnsw_offsets(PyObject *self, PyObject *args) {
    PyObject *obuf, *oout;
    if (!PyArg_ParseTuple(args, "OO", &obuf, &oout)) return NULL;
    Py_buffer bb = {0}, bo = {0};
    PyObject *ret = NULL;
    layout_t g;
    if (moss_get_buf(obuf, &bb, 0, 1, "buf") < 0) goto done;
    if (moss_get_buf(oout, &bo, 1, sizeof(uint64_t), "out") < 0) goto done;
    if (parse((const uint8_t *)bb.buf, (uint64_t)bb.len, &g) < 0) goto done;
    if ((uint64_t)bo.len != (g.size + 1) * sizeof(uint64_t)) {
        PyErr_SetString(PyExc_ValueError, "hnsw_offsets: out must hold size + 1 offsets");
        goto done;
    }
    uint64_t *out = (uint64_t *)bo.buf, total = 0;
    for (uint64_t s = 0; s < g.size; s++) {
        int16_t level;
        memcpy(&level, g.levels + 2 * s, 2);
        if (level < 0 || (uint64_t)level > g.max_level) {
            PyErr_Format(PyExc_ValueError, "hnsw_offsets: slot %llu has level %d",
                         (unsigned long long)s, (int)level);
            goto done;
        }
        out[s] = total;
        total += node_bytes(&g, (uint64_t)level);
    }
    out[g.size] = total;
    if (total != g.nodes_len) {
        PyErr_SetString(PyExc_ValueError, "hnsw_offsets: the nodes do not fill the buffer");
        goto done;
    }
    ret = Py_None;
    Py_INCREF(ret);
done:
    if (bb.obj != NULL) PyBuffer_Release(&bb);
    if (bo.obj != NULL) PyBuffer_Release(&bo);
    return ret;
}

typedef struct {
    int32_t d; /* negated inner product: smaller is nearer */
    uint32_t s;
} cand_t;

typedef struct {
    const layout_t *g;
    const uint64_t *off;
    uint64_t *visited;
    uint32_t *seen; /* slots set in visited, to clear them afterwards */
    size_t n_seen, cap_seen;
    cand_t *next; /* min-heap: the nearest unexpanded candidate on top */
    size_t n_next, cap_next;
    cand_t *top; /* max-heap of at most ef: the farthest kept on top */
    size_t n_top;
    const char *damage;
} walk_t;

static void next_push(cand_t *h, size_t n, cand_t c) {
    size_t i = n;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p].d <= c.d) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
}

static void next_pop(cand_t *h, size_t n) { /* n: size before the pop */
    cand_t c = h[n - 1];
    size_t i = 0;
    n--;
    for (;;) {
        size_t k = 2 * i + 1;
        if (k >= n) break;
        if (k + 1 < n && h[k + 1].d < h[k].d) k++;
        if (h[k].d >= c.d) break;
        h[i] = h[k];
        i = k;
    }
    if (n) h[i] = c;
}

static void top_sift_down(cand_t *h, size_t n, size_t i) {
    cand_t c = h[i];
    for (;;) {
        size_t k = 2 * i + 1;
        if (k >= n) break;
        if (k + 1 < n && h[k + 1].d > h[k].d) k++;
        if (h[k].d <= c.d) break;
        h[i] = h[k];
        i = k;
    }
    h[i] = c;
}

static void top_push(cand_t *h, size_t n, cand_t c) {
    size_t i = n;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p].d >= c.d) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
}

/* Slot s's list at `level` copied to out (at most MAX_CONNECTIVITY slots), or -1 if damaged. */
static int64_t neighbours(walk_t *w, uint64_t s, uint64_t level, uint32_t *out) {
    const layout_t *g = w->g;
    uint64_t start = w->off[s], end = w->off[s + 1];
    uint64_t at = start + NODE_HEAD + (level ? 4 + 4 * g->m0 + (level - 1) * (4 + 4 * g->m) : 0);
    uint64_t cap = level ? g->m : g->m0;
    uint32_t count;
    if (end > g->nodes_len || start > end || at + 4 + 4 * cap > end) {
        w->damage = "a node is shorter than its level";
        return -1;
    }
    memcpy(&count, g->nodes + at, 4);
    if (count > cap) {
        w->damage = "a neighbour list is longer than the connectivity";
        return -1;
    }
    memcpy(out, g->nodes + at + 4, 4 * (size_t)count);
    for (uint32_t j = 0; j < count; j++)
        if (out[j] >= g->size) {
            w->damage = "a neighbour slot is outside the graph";
            return -1;
        }
    return count;
}

/* Slot s's key into *key, or -1 if its node starts outside the buffer. */
static int key_at(walk_t *w, uint64_t s, uint64_t *key) {
    uint64_t at = w->off[s];
    if (at > w->g->nodes_len || w->g->nodes_len - at < NODE_HEAD) {
        w->damage = "a node starts outside the buffer";
        return -1;
    }
    *key = read_u64(w->g->nodes + at);
    return 0;
}

static int grow(void **p, size_t *cap, size_t need, size_t item) {
    if (need <= *cap) return 0;
    size_t c = *cap * 2 > need ? *cap * 2 : need;
    void *q = realloc(*p, c * item);
    if (q == NULL) return -1;
    *p = q;
    *cap = c;
    return 0;
}

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
/* The int8 inner product dominates the warm walk: let the loader pick an AVX-512 or AVX2 build
 * of it (measured at 100k rows: 0.10 ms warm, against 0.145 ms for the baseline SSE2 build). */
#define WALK_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define WALK_CLONES
#endif

/* The walk; 0, -1 damaged (w->damage says how), -2 out of memory. */
WALK_CLONES static int walk(walk_t *w, const int8_t *q, uint64_t ef) {
    const layout_t *g = w->g;
    const uint64_t dim = g->dim;
    uint32_t nb[MAX_CONNECTIVITY];
    uint32_t fresh[MAX_CONNECTIVITY];
#define DIST(slot, out)                                                       \
    do {                                                                      \
        const int8_t *v_ = g->vectors + (uint64_t)(slot) * dim;               \
        int32_t acc_ = 0;                                                     \
        for (uint64_t i_ = 0; i_ < dim; i_++) acc_ += (int32_t)q[i_] * v_[i_]; \
        (out) = -acc_;                                                        \
    } while (0)

    uint64_t cur = g->entry;
    int32_t cur_d;
    DIST(cur, cur_d);
    for (uint64_t level = g->max_level; level > 0; level--) {
        int changed = 1;
        while (changed) {
            changed = 0;
            int64_t n = neighbours(w, cur, level, nb);
            if (n < 0) return -1;
            for (int64_t j = 0; j < n; j++) moss_prefetch(g->vectors + (uint64_t)nb[j] * dim, dim);
            for (int64_t j = 0; j < n; j++) {
                int32_t d;
                DIST(nb[j], d);
                if (d < cur_d) {
                    cur_d = d;
                    cur = nb[j];
                    changed = 1;
                }
            }
        }
    }

    int check_keys = g->deleted != 0; /* removed nodes are walked through, never kept */
    uint64_t key = 0;
    w->visited[cur >> 6] |= 1ull << (cur & 63);
    w->seen[w->n_seen++] = (uint32_t)cur;
    w->next[w->n_next++] = (cand_t){cur_d, (uint32_t)cur};
    if (check_keys && key_at(w, cur, &key) < 0) return -1;
    if (key != FREE_KEY) w->top[w->n_top++] = (cand_t){cur_d, (uint32_t)cur};
    while (w->n_next) {
        cand_t c = w->next[0];
        if (w->n_top == ef && c.d > w->top[0].d) break;
        next_pop(w->next, w->n_next--);
        int64_t n = neighbours(w, c.s, 0, nb);
        if (n < 0) return -1;
        /* room first: every bit set in visited must be listed in seen, to be cleared */
        if (grow((void **)&w->seen, &w->cap_seen, w->n_seen + (size_t)n, sizeof(uint32_t)) < 0 ||
            grow((void **)&w->next, &w->cap_next, w->n_next + (size_t)n, sizeof(cand_t)) < 0)
            return -2;
        size_t n_fresh = 0;
        for (int64_t j = 0; j < n; j++) {
            uint32_t s = nb[j];
            uint64_t bit = 1ull << (s & 63);
            if (w->visited[s >> 6] & bit) continue;
            w->visited[s >> 6] |= bit;
            w->seen[w->n_seen++] = s;
            fresh[n_fresh++] = s;
            moss_prefetch(g->vectors + (uint64_t)s * dim, dim);
        }
        /* The likely next expansions' neighbour lists, while these are scored: the heap's top
         * three (the best and the two candidates for second); measured -0.01 ms cold at 100k
         * against the top one alone. */
        for (size_t h = 0; h < 3 && h < w->n_next; h++)
            moss_prefetch(g->nodes + w->off[w->next[h].s], NODE_HEAD + 4 + 4 * g->m0);
        for (size_t j = 0; j < n_fresh; j++) {
            uint32_t s = fresh[j];
            int32_t d;
            DIST(s, d);
            if (w->n_top < ef || d < w->top[0].d) {
                next_push(w->next, w->n_next++, (cand_t){d, s});
                if (check_keys) {
                    if (key_at(w, s, &key) < 0) return -1;
                    if (key == FREE_KEY) continue;
                }
                if (w->n_top < ef) {
                    top_push(w->top, w->n_top++, (cand_t){d, s});
                } else {
                    w->top[0] = (cand_t){d, s};
                    top_sift_down(w->top, w->n_top, 0);
                }
            }
        }
    }
#undef DIST
    return 0;
}

const char hnsw_search_doc[] =
    "hnsw_search(buf, offsets, visited, q, ef, count, n_keys, out_keys) -> int\n\n"
    "The keys of about the ``count`` nearest nodes to the int8 query ``q`` by inner product,\n"
    "nearest first, into ``out_keys`` (int64, at least ``count``); returns how many. The beam\n"
    "is max(ef, count) wide. ``offsets`` comes from hnsw_offsets for the same buffer;\n"
    "``visited`` is uint64 scratch of at least ceil(size / 64) words, all zero on entry and\n"
    "left all zero. A key at or above ``n_keys`` (other than a removed node's), a damaged node\n"
    "or a bad argument raises ValueError.";

PyObject *hnsw_search(PyObject *self, PyObject *args) {
    PyObject *obuf, *ooff, *ovis, *oq, *oout;
    Py_ssize_t ef_arg, count_arg;
    unsigned long long n_keys;
    if (!PyArg_ParseTuple(args, "OOOOnnKO", &obuf, &ooff, &ovis, &oq, &ef_arg, &count_arg,
                          &n_keys, &oout))
        return NULL;
    Py_buffer bb = {0}, bf = {0}, bv = {0}, bq = {0}, bo = {0};
    walk_t w = {0};
    layout_t g;
    Py_ssize_t written = -1;
    if (moss_get_buf(obuf, &bb, 0, 1, "buf") < 0) goto done;
    if (moss_get_buf(ooff, &bf, 0, sizeof(uint64_t), "offsets") < 0) goto done;
    if (moss_get_buf(ovis, &bv, 1, sizeof(uint64_t), "visited") < 0) goto done;
    if (moss_get_buf(oq, &bq, 0, 1, "q") < 0) goto done;
    if (moss_get_buf(oout, &bo, 1, sizeof(int64_t), "out_keys") < 0) goto done;
    if (parse((const uint8_t *)bb.buf, (uint64_t)bb.len, &g) < 0) goto done;
    if ((uint64_t)bf.len != (g.size + 1) * sizeof(uint64_t) ||
        (uint64_t)bv.len < (g.size + 63) / 64 * sizeof(uint64_t) || (uint64_t)bq.len != g.dim ||
        ef_arg < 1 || count_arg < 0 || bo.len < count_arg * (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "hnsw_search: arguments do not fit the graph");
        goto done;
    }
    if (g.size == 0 || count_arg == 0) {
        written = 0;
        goto done;
    }
    uint64_t ef = (uint64_t)(ef_arg > count_arg ? ef_arg : count_arg);
    if (ef > g.size) ef = g.size;
    w.g = &g;
    w.off = (const uint64_t *)bf.buf;
    w.visited = (uint64_t *)bv.buf;
    w.cap_seen = w.cap_next = 4 * ef + 2 * g.m0;
    w.seen = malloc(w.cap_seen * sizeof(uint32_t));
    w.next = malloc(w.cap_next * sizeof(cand_t));
    w.top = malloc(ef * sizeof(cand_t));
    int rc = -2;
    if (w.seen != NULL && w.next != NULL && w.top != NULL) {
        Py_BEGIN_ALLOW_THREADS
        rc = walk(&w, (const int8_t *)bq.buf, ef);
        for (size_t i = 0; i < w.n_seen; i++) w.visited[w.seen[i] >> 6] = 0;
        Py_END_ALLOW_THREADS
    }
    if (rc == -2) {
        PyErr_NoMemory();
        goto done;
    }
    if (rc == -1) goto damaged;
    /* the kept candidates, nearest first, popped from the back into the spent next heap
     * (its capacity, at least 4 * ef, holds them) */
    size_t n = w.n_top;
    cand_t *sorted = w.next;
    for (size_t i = n; i > 0; i--) {
        sorted[i - 1] = w.top[0];
        w.top[0] = w.top[--w.n_top];
        if (w.n_top) top_sift_down(w.top, w.n_top, 0);
    }
    int64_t *out = (int64_t *)bo.buf;
    written = 0;
    for (size_t i = 0; i < n && written < count_arg; i++) {
        uint64_t key;
        if (key_at(&w, sorted[i].s, &key) < 0) goto damaged;
        if (key == FREE_KEY) continue;
        if (key >= n_keys) {
            PyErr_Format(PyExc_ValueError, "hnsw_search: damaged graph: key %llu of %llu",
                         (unsigned long long)key, n_keys);
            written = -1;
            goto done;
        }
        out[written++] = (int64_t)key;
    }
    goto done;
damaged:
    PyErr_Format(PyExc_ValueError, "hnsw_search: damaged graph: %s", w.damage);
    written = -1;
done:
    free(w.seen);
    free(w.next);
    free(w.top);
    {
        Py_buffer *views[] = {&bb, &bf, &bv, &bq, &bo};
        for (size_t i = 0; i < sizeof(views) / sizeof(views[0]); i++)
            if (views[i]->obj != NULL) PyBuffer_Release(views[i]);
    }
    if (written < 0) return NULL;
    return PyLong_FromSsize_t(written);
}

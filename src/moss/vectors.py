"""The vector index: exact float32 inner products, with an int8 HNSW graph once the index is large.

Rows are the engine's dense row numbers; each holds one float32 vector. ``search`` returns the top
``k`` live rows by inner product (not cosine: custom vectors are not normalised, docs/api.md
§3.3), with their exact float32 scores, ties broken by row. The design, and the measurements behind
every constant, are in ``docs/vector-index.md``; in short:

* **The float32 matrix is the truth.** Every score we return is recomputed from it in float64 and
  rounded once to float32, so it is the correctly rounded inner product whichever path found the
  row, identical vectors tie exactly (BLAS ``sgemv`` gives identical rows different last bits,
  measured), and ``dot`` agrees with ``search``.
* **Small indexes are searched exactly** (up to ``exact_max_rows`` live rows, 4096 by default):
  chunked float32 BLAS gives a shortlist, the float64 recomputation orders it.
* **Large indexes use a usearch HNSW graph over int8 copies of the rows** (M=16), and the ANN
  candidates are re-ranked exactly. We quantise ourselves with one global scale (``127 / max|x|``)
  and hand usearch int8 arrays: usearch then ranks by the *raw* integer inner product. (Given
  float32 input its i8 mode normalises every vector, which is cosine, not inner product.) int8
  keeps the graph at ~0.35x the float32 matrix, where f16 would be 0.6x and slower.
* **Searching a settled graph is our own compiled walk over usearch's bytes.** usearch's Python
  search prefetches nothing, so after an embedding has evicted the caches each vector it reads is
  a miss waited for in turn. Once the graph has changed by 1/256 of its nodes since it was last
  frozen, ``flush`` *freezes* it: the graph becomes a read-only view of its own serialisation,
  which ``moss._kernels.hnsw_search`` walks (the same algorithm, every step's reads requested
  together; 0.18 against 0.38 ms cold at 100k rows). A frozen graph leaves new rows in the tail
  (up to ``size / 256``) rather than being copied back for each; a layout the walk does not read,
  or no compiled extension, means usearch's own search.
* **Adding a row never touches the graph.** New and overwritten rows go to an exact *tail*: the
  contiguous suffix ``[lo, n)`` plus a small set of overwritten older rows, brute-forced next to the
  graph on every query. ``flush()`` (meant for a background thread) folds the tail into the graph in
  chunks of 32 rows, releasing the lock between chunks. If nobody flushes, a ``set`` that leaves
  more than ``tail_max_rows`` (1024) pending folds ``max(32, 2 * batch)`` of them itself: a one-row
  add then costs at most 32 insertions and about one amortised, and a bulk load builds the graph in
  one multi-threaded call. Deletes and overwrites remove the row's graph node (``usearch
  remove``), and before the next insertion one pass drops the links to removed nodes, whose slots
  usearch reuses; no rebuild is ever needed (recall after heavy churn: docs/vector-index.md).
* **Filtered search** counts the allowed live rows. Few of them (or a selectivity that would need a
  huge over-fetch) means an exact scan of just those rows; otherwise the graph is searched with an
  over-fetch sized from the selectivity, and if too few allowed rows survive we fall back to exact.
* **Graph keys are stable slot ids**, not rows, so ``remap`` (engine compaction) rewrites two small
  integer arrays and never touches the graph. Freed slot ids are reused.
* **Loading never rebuilds.** ``from_arrays`` uses the matrix as given (a read-only memory map is
  fine: it is copied on the first write) and *views* the serialised graph in place (usearch
  ``view``); the first change to the graph loads a private copy.

Why BLAS calls are chunked to at most 2**18 elements: above roughly 1200x384 OpenBLAS runs
``sgemv`` on several threads, and on a busy machine that stalled single queries for 12-16 ms
(measured); below it, it stays on the calling thread.

Thread safety: every public method takes one re-entrant lock; ``flush`` releases it between chunks,
so a concurrent query waits at most one chunk (a few ms; ~20 ms more at 100k rows for the link
pass after deletes). usearch holds the GIL while it inserts.
"""

from __future__ import annotations

import atexit
import math
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import DESERIALIZATION, INTERNAL, InvalidArgumentError, MossError

try:  # compiled query helpers (src/moss/_kernels.c); the numpy code below does the same
    from . import _kernels
except ImportError:  # pragma: no cover - built wherever a C compiler exists
    _kernels = None  # type: ignore[assignment]

__all__ = ["FORMAT_VERSION", "VectorIndex", "restore_graph_vectors", "strip_graph_vectors"]

F32Array = npt.NDArray[np.float32]
F64Array = npt.NDArray[np.float64]
I64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
U8Array = npt.NDArray[np.uint8]
U64Array = npt.NDArray[np.uint64]

FORMAT_VERSION = 1
_GEMV_ELEMS = 1 << 18  # elements per BLAS call (see the module docstring)
_FLUSH_CHUNK = 32  # rows per graph insertion in flush(): ~5-10 ms holding the GIL

# Background flushes stop at the next chunk once the interpreter exits, and exit waits for the
# chunk in progress: a daemon thread still inside usearch while the process tears down its C++
# runtime can abort the process (exit 134).
_exiting = False
_active = threading.Condition()
_active_flushes = 0


@atexit.register
def _stop_background_flushes() -> None:
    global _exiting
    with _active:
        _exiting = True
        _active.wait_for(lambda: _active_flushes == 0, timeout=30.0)


_MIN_CANDIDATES = 32  # ANN candidates re-ranked exactly, at least
_FILTER_EXACT_MIN = 2048  # allowed rows at or below which a filtered query is always exact
_ROWS_PER_EF = 20  # an exact scan of m allowed rows costs about an ANN search with ef = m / 20
_MAX_FILTER_EF = 4096  # a filter so selective it needs a larger over-fetch is searched exactly
_FILTER_EF_PER_DEPTH = 3  # filtered ef = base ef + this * (depth of the allowed top-k)
_MAX_PENDING = 1024  # removals buffered against a read-only (viewed) graph before copying it
_FREEZE_NODES_PER_CHANGE = 256  # see VectorIndex._freeze_due
_FREEZE_STALL_NODES = 250_000  # see VectorIndex._freeze_due


def _auto_ef(graph_rows: int) -> int:
    """Base HNSW ef for a graph of this size (docs/vector-index.md, sweep); see ``_search_ef``."""
    return int(min(512, max(64, round(64 + 32 * math.log2(max(graph_rows, 2500) / 2500)))))


def _usearch() -> Any:
    """Import ``usearch.compiled``, loading onnxruntime first when it is installed.

    usearch's extension links its own static libstdc++; once it is loaded, importing onnxruntime
    crashes in libstdc++'s locale set-up (``codecvt<char16_t>::do_unshift``, reproduced with
    usearch 2.26 and onnxruntime 1.32). The other order is safe, and every process that embeds
    text after building a large index needs both, so onnxruntime always goes first.
    """
    try:
        import onnxruntime  # noqa: F401
    except ImportError:  # pragma: no cover - onnxruntime is a core dependency
        pass
    import usearch.compiled

    return usearch.compiled


def _new_usearch(dim: int, connectivity: int, expansion_add: int) -> Any:
    u = _usearch()
    Index, MetricKind, MetricSignature, ScalarKind = (
        u.Index,
        u.MetricKind,
        u.MetricSignature,
        u.ScalarKind,
    )

    return Index(
        ndim=dim,
        dtype=ScalarKind.I8,
        connectivity=connectivity,
        expansion_add=expansion_add,
        expansion_search=64,
        metric_kind=MetricKind.IP,
        metric_signature=MetricSignature.ArrayArraySize,
        metric_pointer=0,
        multi=False,
        enable_key_lookups=True,
    )


_UNKNOWN_DTYPE: Any = None


def _unknown_dtype() -> Any:
    """usearch's ``ScalarKind.Unknown``, looked up once (it is on every query's path)."""
    global _UNKNOWN_DTYPE
    if _UNKNOWN_DTYPE is None:
        _UNKNOWN_DTYPE = _usearch().ScalarKind.Unknown
    return _UNKNOWN_DTYPE


def _query_norm(q: F32Array) -> float:
    """``|q|`` in np.linalg.norm's float32 arithmetic: the one both cosine paths divide by."""
    return float(np.sqrt(q.dot(q)))


def _quantise(x: npt.NDArray[np.floating[Any]], scale: float) -> npt.NDArray[np.int8]:
    with np.errstate(over="ignore"):  # components past the scale saturate at +-127
        y = np.rint(x * x.dtype.type(scale))
    q: npt.NDArray[np.int8] = np.clip(y, -127, 127).astype(np.int8)
    return q


def _as_float32(values: Any, what: str) -> F32Array:
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow: rejected as non-finite
            return np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"{what} must be an array of numbers: {e}") from e


class _Graph:
    """A usearch HNSW index over int8 rows, keyed by reusable slot ids (``key_row`` maps back)."""

    def __init__(self, dim: int, scale: float, connectivity: int, expansion_add: int) -> None:
        self.dim = dim
        self.scale = scale
        self.connectivity = connectivity
        self.expansion_add = expansion_add
        self.index: Any = _new_usearch(dim, connectivity, expansion_add)
        self.key_row: I64Array = np.full(0, -1, dtype=np.int64)
        self.n_keys = 0  # keys ever handed out; free ones have key_row == -1
        self.free: list[int] = []
        self.pending: list[int] = []  # removed by us, still present in the viewed buffer
        self.size = 0  # live nodes
        self.view_buf: U8Array | None = None
        self.unlinked = False  # removed nodes may still be linked to (see add)
        self.changes = 0  # nodes added or removed since the graph was last a view (see freeze)
        self._walk: tuple[U8Array, U64Array, U64Array] | None = None
        self._walk_unreadable = False

    def materialise(self) -> None:
        """Replace a read-only view by a private copy, applying buffered removals."""
        if self.view_buf is None:
            return
        index = _new_usearch(self.dim, self.connectivity, self.expansion_add)
        index.load_index_from_buffer(self.view_buf, None)
        index.expansion_add = self.expansion_add
        self.index, self.view_buf = index, None
        self._walk, self._walk_unreadable = None, False
        if self.pending:
            index.remove_many(np.asarray(self.pending, dtype=np.uint64), compact=False, threads=1)
            self.free.extend(self.pending)
            self.pending = []
            self.unlinked = True

    def freeze(self) -> None:
        """Make the graph a read-only view of its own serialised bytes, which the compiled walk
        (``moss._kernels.hnsw_search``) searches; the next change loads a private copy again.

        Costs one serialisation and a view (about 30 ms at 100k rows), and the next change one
        copy back (about 30 ms): VectorIndex freezes only when that is small next to the
        insertions since the last freeze.
        """
        if self.view_buf is not None or _kernels is None or len(self.index) == 0:
            return
        raw = self.index.save_index_to_buffer(None)
        # Into numpy's memory, which it asks the kernel to back with transparent huge pages:
        # the walk's scattered reads then miss the TLB less (cold walk at 100k: -0.02 ms).
        buf = np.empty(len(raw), dtype=np.uint8)  # may raise MemoryError: nothing changed yet
        index = _new_usearch(self.dim, self.connectivity, self.expansion_add)
        self.index = None  # at most two copies of the graph at once
        buf[:] = np.frombuffer(raw, dtype=np.uint8)
        del raw
        index.view_index_from_buffer(buf, None)
        self.index, self.view_buf, self.changes = index, buf, 0

    def _walker(self) -> tuple[U8Array, U64Array, U64Array] | None:
        """(bytes, node offsets, visited scratch) for the compiled walk, while the graph is a
        view whose layout the walk reads; None means usearch's own search."""
        if self._walk is None and self.view_buf is not None and _kernels is not None:
            if self._walk_unreadable:
                return None
            try:
                size, _ = _kernels.hnsw_header(self.view_buf)
                offsets = np.empty(size + 1, dtype=np.uint64)
                _kernels.hnsw_offsets(self.view_buf, offsets)
            except ValueError:  # another usearch layout: its own search still reads it
                self._walk_unreadable = True
                return None
            self._walk = (self.view_buf, offsets, np.zeros((size + 63) // 64, dtype=np.uint64))
        return self._walk

    def add(self, rows: I64Array, x: F32Array, threads: int) -> I64Array:
        self.materialise()
        if self.unlinked:
            # usearch reuses removed nodes' slots for new vectors, and links that pointed to the
            # old vector would then lead to an unrelated one: drop links to removed nodes first
            # (one O(n) pass, ~20 ms at 100k). Measured on SciFact after overwriting 30% and
            # deleting 10%: recall@10 0.978 without this, 0.991 with it, 0.998 rebuilt.
            self.index.remove_many(np.zeros(0, dtype=np.uint64), compact=True, threads=threads)
            self.unlinked = False
        n = rows.size
        reuse = min(n, len(self.free))
        keys = np.empty(n, dtype=np.int64)
        if reuse:
            keys[:reuse] = self.free[len(self.free) - reuse :]
            del self.free[len(self.free) - reuse :]
        keys[reuse:] = np.arange(self.n_keys, self.n_keys + n - reuse, dtype=np.int64)
        self.n_keys += n - reuse
        if self.n_keys > self.key_row.size:
            grown = np.full(max(self.n_keys, self.key_row.size * 3 // 2 + 64), -1, np.int64)
            grown[: self.key_row.size] = self.key_row
            self.key_row = grown
        self.index.add_many(
            keys.astype(np.uint64),
            _quantise(x, self.scale),
            copy=True,
            threads=threads,
            dtype=_unknown_dtype(),
        )
        self.key_row[keys] = rows
        self.size += n
        self.changes += n
        return keys

    def remove(self, keys: I64Array) -> None:
        self.key_row[keys] = -1
        self.size -= keys.size
        self.changes += keys.size
        if self.view_buf is not None:
            self.pending.extend(keys.tolist())
            if len(self.pending) > _MAX_PENDING:
                self.materialise()
            return
        self.index.remove_many(keys.astype(np.uint64), compact=False, threads=1)
        self.free.extend(keys.tolist())
        self.unlinked = True

    def search(self, q: F32Array, count: int, ef: int) -> I64Array:
        """Rows of about ``count`` approximate nearest neighbours by inner product."""
        if _kernels is not None:
            q8 = np.empty(q.size, dtype=np.int8)
            _kernels.quantize_i8(q, q8)  # the same float64 operations as below, in one call
        else:
            q64 = q.astype(np.float64)  # float64: 127 / max|q| may not fit a float32
            # _quantise inlined: scaled by 127 / max|q|, nothing can overflow, so no errstate.
            q64 *= 127.0 / float(np.abs(q64).max())
            q8 = np.clip(np.rint(q64, out=q64), -127, 127, out=q64).astype(np.int8)
        want = count + len(self.pending)
        walk = self._walker()
        if walk is not None:
            found = np.empty(want, dtype=np.int64)
            try:
                m = _kernels.hnsw_search(*walk, q8, ef, want, self.n_keys, found)
            except ValueError as e:
                raise MossError(f"vector graph is damaged: {e}", code=INTERNAL) from e
            rows: I64Array = self.key_row[found[:m]]
        else:
            self.index.expansion_search = ef
            keys, _, counts, _, _ = self.index.search_many(
                q8.reshape(1, -1), count=want, exact=False, threads=1, dtype=_unknown_dtype()
            )
            rows = self.key_row[np.asarray(keys[0, : int(counts[0])], dtype=np.int64)]
        # Only a node removed while the graph is a view (pending) is still found with no row.
        return rows[rows >= 0] if self.pending else rows

    def to_arrays(self) -> dict[str, np.ndarray]:
        graph = self.view_buf
        if graph is None:
            graph = np.frombuffer(self.index.save_index_to_buffer(None), dtype=np.uint8)
        return {"graph": graph, "graph_key_row": self.key_row[: self.n_keys].copy()}

    @classmethod
    def from_arrays(cls, buf: U8Array, key_row: I64Array, dim: int, meta: F64Array) -> _Graph:
        g = cls(dim, float(meta[2]), int(meta[4]), int(meta[5]))
        g.index.view_index_from_buffer(buf, None)
        if int(g.index.ndim) != dim:
            raise ValueError(f"graph has {g.index.ndim} dimensions, matrix {dim}")
        g.view_buf = buf
        g.key_row = key_row
        g.n_keys = key_row.size
        # A key without a row is free, or (saved while viewing) still a node in the bytes.
        unused = np.flatnonzero(key_row < 0)
        if unused.size:
            present = np.asarray(g.index.contains_many(unused.astype(np.uint64)), dtype=bool)
            g.pending = unused[present].tolist()
            g.free = unused[~present].tolist()
            g.unlinked = bool(g.free)
        used = np.flatnonzero(key_row >= 0)
        g.size = used.size
        if (
            len(g.index) != g.size + len(g.pending)
            or not np.asarray(g.index.contains_many(used.astype(np.uint64)), dtype=bool).all()
        ):
            raise ValueError("graph nodes and graph_key_row disagree")
        return g


# usearch's serialised dense index starts with ``u32 rows, u32 cols`` and then the ``rows x cols``
# int8 vectors in slot order; the graph (node keys, levels, neighbour lists) follows.
_GRAPH_HEAD = 8
_HASH_CHUNK = 8192


def _graph_head(buf: U8Array) -> tuple[int, int]:
    """``(rows, cols)`` of the int8 vector block at the front of a serialised usearch index."""
    if buf.size < _GRAPH_HEAD:
        raise ValueError("graph buffer is truncated")
    rows, cols = (int(v) for v in np.frombuffer(buf[:_GRAPH_HEAD].tobytes(), "<u4"))
    return rows, cols


def _row_hashes(x8: npt.NDArray[np.int8], weights: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """One int64 hash per int8 row (equal rows, equal hashes; exact, no float rounding)."""
    out = np.empty(x8.shape[0], dtype=np.int64)
    for s in range(0, x8.shape[0], _HASH_CHUNK):
        out[s : s + _HASH_CHUNK] = x8[s : s + _HASH_CHUNK].astype(np.int64) @ weights
    return out


def strip_graph_vectors(
    arrays: Mapping[str, np.ndarray], matrix: npt.ArrayLike
) -> dict[str, np.ndarray]:
    """``arrays`` (a :meth:`VectorIndex.to_arrays` dict) without the graph's int8 row copies.

    The copies are ``_quantise(matrix[row], scale)`` of the row each graph slot holds: a snapshot
    that carries the float32 matrix anyway can drop them (0.22x the matrix, a third of the graph)
    and keep ``graph_slot_row`` (slot -> row) instead; :func:`restore_graph_vectors` puts them back
    bit for bit. Slots are matched to rows by content and every match is verified; a slot that no
    row reproduces exactly (a removed node still in the buffer) keeps its bytes, in
    ``graph_extra_vectors``, and gets row -1.
    """
    out = dict(arrays)
    graph, meta = arrays.get("graph"), arrays.get("meta")
    mat = np.asarray(matrix)
    if graph is None or meta is None or mat.ndim != 2 or "graph_slot_row" in arrays:
        return out
    buf = np.asarray(graph).reshape(-1).view(np.uint8)
    if buf.size < _GRAPH_HEAD:
        return out
    rows, cols = _graph_head(buf)
    end = _GRAPH_HEAD + rows * cols
    if cols != mat.shape[1] or end > buf.size or rows == 0 or mat.shape[0] == 0:
        return out
    block = buf[_GRAPH_HEAD:end].view(np.int8).reshape(rows, cols)
    scale = float(np.asarray(meta)[2])
    weights = np.random.default_rng(0x6D6F7373).integers(1, 1 << 40, size=cols, dtype=np.int64)
    q = np.empty(mat.shape, dtype=np.int8)
    for s in range(0, mat.shape[0], _HASH_CHUNK):
        q[s : s + _HASH_CHUNK] = _quantise(mat[s : s + _HASH_CHUNK], scale)
    h_rows = _row_hashes(q, weights)
    order = np.argsort(h_rows, kind="stable")
    sorted_h = h_rows[order]
    h_slots = _row_hashes(block, weights)
    at = np.minimum(np.searchsorted(sorted_h, h_slots), sorted_h.size - 1)
    slot_row = order[at]
    ok = sorted_h[at] == h_slots
    ok[ok] = (q[slot_row[ok]] == block[ok]).all(axis=1)
    slot_row[~ok] = -1
    out["graph"] = np.concatenate([buf[:_GRAPH_HEAD], buf[end:]])
    out["graph_slot_row"] = slot_row.astype(np.int32)
    out["graph_extra_vectors"] = block[~ok].copy()
    return out


def restore_graph_vectors(
    arrays: Mapping[str, np.ndarray], matrix: npt.ArrayLike
) -> dict[str, np.ndarray]:
    """The inverse of :func:`strip_graph_vectors` (``arrays`` unchanged if nothing was stripped).

    Raises:
        ValueError: ``graph_slot_row`` does not fit the graph or the matrix.
    """
    out = dict(arrays)
    slot_row = out.pop("graph_slot_row", None)
    extra = np.asarray(out.pop("graph_extra_vectors", np.zeros((0, 0), np.int8)))
    if slot_row is None:
        return out
    mat = np.asarray(matrix)
    buf = np.asarray(out["graph"]).reshape(-1).view(np.uint8)
    slots = np.asarray(slot_row, dtype=np.int64)
    if mat.ndim != 2:
        raise ValueError("the matrix must be two-dimensional")
    rows, cols = _graph_head(buf)
    if rows != slots.size or cols != mat.shape[1]:
        raise ValueError(f"stripped graph has {rows}x{cols} slots for {slots.size} slot rows")
    own = slots >= 0
    n_extra = int(slots.size - np.count_nonzero(own))
    if slots.size and (int(slots.min()) < -1 or int(slots.max()) >= mat.shape[0]):
        raise ValueError("graph slot rows point outside the matrix")
    if n_extra and (extra.dtype != np.int8 or extra.shape != (n_extra, cols)):
        raise ValueError(f"graph keeps {extra.shape} extra vectors for {n_extra} slots")
    scale = float(np.asarray(out["meta"])[2])
    end = _GRAPH_HEAD + rows * cols
    full = np.empty(buf.size + rows * cols, dtype=np.uint8)
    full[:_GRAPH_HEAD] = buf[:_GRAPH_HEAD]
    block = full[_GRAPH_HEAD:end].view(np.int8).reshape(rows, cols)
    for s in range(0, rows, _HASH_CHUNK):
        block[s : s + _HASH_CHUNK] = _quantise(mat[slots[s : s + _HASH_CHUNK]], scale)
    if n_extra:
        block[~own] = extra
    full[end:] = buf[_GRAPH_HEAD:]
    out["graph"] = full
    return out


class VectorIndex:
    """Float32 vectors by row with exact-re-ranked inner-product search (see module docstring).

    Args:
        dim: vector dimension.
        exact_max_rows: up to this many live rows every search is exact brute force.
        tail_max_rows: ``set`` folds pending rows into the graph itself once there are more.
        connectivity: HNSW ``M``.
        expansion_add: HNSW ``efConstruction``.
        expansion_search: HNSW ``ef``; ``None`` grows it with the graph (``_auto_ef``).

    >>> vi = VectorIndex(2)
    >>> vi.set(np.array([0, 1, 2]), np.array([[1, 0], [0, 2], [1, 1]], dtype=np.float32))
    >>> rows, scores = vi.search(np.array([1, 1], dtype=np.float32), 2)
    >>> rows.tolist(), scores.tolist()
    ([1, 2], [2.0, 2.0])
    """

    def __init__(
        self,
        dim: int,
        *,
        exact_max_rows: int = 4096,
        tail_max_rows: int = 1024,
        connectivity: int = 16,
        expansion_add: int = 200,
        expansion_search: int | None = None,
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise InvalidArgumentError(f"vector dimension must be a positive integer, got {dim!r}")
        for name, value, least in (
            ("exact_max_rows", exact_max_rows, 0),
            ("tail_max_rows", tail_max_rows, 0),
            ("connectivity", connectivity, 2),
            ("expansion_add", expansion_add, 1),
            ("expansion_search", 1 if expansion_search is None else expansion_search, 1),
        ):
            if value < least:
                raise InvalidArgumentError(f"{name} must be at least {least}, got {value}")
        self.dim = int(dim)
        self._chunk = max(1, _GEMV_ELEMS // self.dim)  # rows per BLAS call
        self._exact_max = exact_max_rows
        self._tail_max = tail_max_rows
        self._connectivity = connectivity
        self._expansion_add = expansion_add
        self._ef = expansion_search
        self._mat: F32Array = np.zeros((0, self.dim), dtype=np.float32)
        self._mat_owned = True  # False while _mat is a caller's (maybe read-only) array
        self._live: BoolArray = np.zeros(0, dtype=bool)
        self._norms: F32Array = np.zeros(0, dtype=np.float32)
        self._row_key: I64Array = np.zeros(0, dtype=np.int64)
        self._n = 0  # rows in use (live or dead); the matrix may have more capacity
        self._n_live = 0
        self._max_norm = 0.0
        self._graph: _Graph | None = None
        self._lo = 0  # rows >= lo are never in the graph
        self._scattered: set[int] = set()  # live rows < lo that are not in the graph
        self._scattered_arr: I64Array | None = np.zeros(0, dtype=np.int64)
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return self._n_live

    # ------------------------------------------------------------------ validation

    def _vectors(self, vectors: Any, n: int) -> F32Array:
        v = _as_float32(vectors, "embeddings")
        if v.ndim != 2 or v.shape[0] != n:
            raise InvalidArgumentError(f"expected a ({n}, {self.dim}) array of vectors")
        if v.shape[1] != self.dim:
            raise InvalidArgumentError(
                f"Invalid embedding length: expected {self.dim} but received {v.shape[1]}."
            )
        if not np.isfinite(v).all():
            raise InvalidArgumentError("embeddings must not contain NaN or infinite values")
        return np.ascontiguousarray(v)

    def _query(self, q: Any) -> F32Array:
        if (
            type(q) is np.ndarray
            and q.dtype == np.float32
            and q.ndim == 1
            and q.size == self.dim
            and q.flags.c_contiguous
        ):  # the engine's own query vectors: only finiteness is left to check
            finite = _kernels.query_state(q) > 0 if _kernels is not None else np.isfinite(q).all()
            if not finite:
                raise InvalidArgumentError(
                    "query embedding must not contain NaN or infinite values"
                )
            return q
        v = _as_float32(q, "query embedding")
        if v.ndim != 1:
            raise InvalidArgumentError(f"query vector must be one-dimensional, got {v.shape}")
        if v.size != self.dim:
            raise InvalidArgumentError(
                f"Invalid embedding length: expected {self.dim} but received {v.size}."
            )
        if not np.isfinite(v).all():
            raise InvalidArgumentError("query embedding must not contain NaN or infinite values")
        return np.ascontiguousarray(v)

    @staticmethod
    def _rows(rows: Any) -> I64Array:
        r = np.asarray(rows)
        if r.size == 0:
            return np.zeros(0, dtype=np.int64)
        if r.ndim != 1 or r.dtype.kind not in "iu":
            raise InvalidArgumentError("rows must be a one-dimensional integer array")
        r = r.astype(np.int64, copy=False)
        if int(r.min()) < 0:
            raise InvalidArgumentError("rows must be non-negative")
        return r

    def _live_rows(self, rows: Any) -> I64Array:
        r = self._rows(rows)
        if r.size and (int(r.max()) >= self._n or not self._live[r].all()):
            raise InvalidArgumentError("rows must be live rows of the vector index")
        return r

    # ------------------------------------------------------------------ storage

    def _reserve(self, n_needed: int) -> None:
        """Make the per-row arrays writable with room for ``n_needed`` rows."""
        cap = self._mat.shape[0]
        if n_needed <= cap and self._mat_owned:
            return
        if n_needed > cap:
            cap = max(n_needed, cap * 3 // 2 + 64)
        mat = np.zeros((cap, self.dim), dtype=np.float32)
        mat[: self._n] = self._mat[: self._n]
        self._mat, self._mat_owned = mat, True
        for name, fill in (("_live", False), ("_norms", 0.0), ("_row_key", -1)):
            old = getattr(self, name)
            if old.size < cap:
                new = np.full(cap, fill, dtype=old.dtype)
                new[: old.size] = old
                setattr(self, name, new)

    def _scattered_rows(self) -> I64Array:
        if self._scattered_arr is None:
            self._scattered_arr = np.array(sorted(self._scattered), dtype=np.int64)
        return self._scattered_arr

    def _drop_scattered(self, rows: I64Array) -> None:
        if self._scattered and rows.size:
            self._scattered.difference_update(rows.tolist())
            self._scattered_arr = None

    def _tail_size(self) -> int:
        return len(self._scattered) + int(np.count_nonzero(self._live[self._lo : self._n]))

    # ------------------------------------------------------------------ writes

    def set(self, rows: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        """Store ``vectors[i]`` at ``rows[i]`` (new rows or overwrites; a repeated row: last wins).

        Args:
            rows: int64 engine row numbers.
            vectors: ``(len(rows), dim)`` finite float32 vectors.

        Raises:
            InvalidArgumentError: wrong shape or dimension, non-finite values, negative rows.
        """
        r = self._rows(rows)
        v = self._vectors(vectors, r.size)
        if r.size == 0:
            return
        if r.size > 1:
            rev_unique, rev_index = np.unique(r[::-1], return_index=True)
            if rev_unique.size != r.size:  # keep each row's last vector
                keep = r.size - 1 - rev_index
                r, v = r[keep], v[keep]
        norms = np.sqrt(np.einsum("ij,ij->i", v, v, dtype=np.float64)).astype(np.float32)
        with self._lock:
            hi = int(r.max()) + 1
            self._reserve(hi)
            self._n = max(self._n, hi)
            old = r[r < self._lo]
            if old.size:
                if self._graph is not None:
                    keys = self._row_key[old]
                    in_graph = keys >= 0
                    if in_graph.any():
                        self._graph.remove(keys[in_graph])
                        self._row_key[old[in_graph]] = -1
                self._scattered.update(old.tolist())
                self._scattered_arr = None
            self._n_live += int(r.size - np.count_nonzero(self._live[r]))
            self._mat[r] = v
            self._norms[r] = norms
            self._live[r] = True
            self._max_norm = max(self._max_norm, float(norms.max()))
            self._fold_excess(r.size)

    def _fold_excess(self, added: int) -> None:
        """Keep the tail bounded when nobody calls ``flush``; hold the lock.

        Past the bound it folds ``max(2 * added, 32)`` rows (at least the excess): a one-row add
        then pays for 32 insertions once every 32 adds (about one insertion amortised), and a bulk
        ``set`` builds the graph over all of its rows in one multi-threaded call.
        """
        tail = self._tail_size() if self._graph is not None else self._n_live
        limit = self._tail_max + (self._exact_max if self._graph is None else 0)
        if tail > limit:
            n = max(tail - self._tail_max, min(tail, max(2 * added, _FLUSH_CHUNK)))
            self._fold(n, threads=0 if n >= 256 else 1)

    def remove(self, rows: npt.ArrayLike) -> None:
        """Delete rows; unknown or already removed rows are ignored."""
        r = self._rows(rows)
        with self._lock:
            r = np.unique(r[r < self._n])
            r = r[self._live[r]]
            if r.size == 0:
                return
            self._live[r] = False
            self._n_live -= r.size
            self._norms[r] = 0.0
            if self._mat_owned:  # a removed document's vector should not reach a snapshot
                self._mat[r] = 0.0
            if self._graph is not None:
                keys = self._row_key[r]
                in_graph = keys >= 0
                if in_graph.any():
                    self._graph.remove(keys[in_graph])
                    self._row_key[r[in_graph]] = -1
            self._drop_scattered(r)

    def remap(self, old_to_new: npt.ArrayLike) -> None:
        """Renumber rows after engine compaction: live row ``r`` becomes ``old_to_new[r]``.

        Raises:
            InvalidArgumentError: the map is too short, or not increasing and >= 0 on live rows.
        """
        m = np.asarray(old_to_new)
        if m.ndim != 1 or (m.size and m.dtype.kind not in "iu"):
            raise InvalidArgumentError("old_to_new must be a one-dimensional integer array")
        with self._lock:
            if m.size < self._n:
                raise InvalidArgumentError(f"old_to_new covers {m.size} rows, need {self._n}")
            m = m[: self._n].astype(np.int64)
            old = np.flatnonzero(self._live[: self._n])
            new = m[old]
            if new.size and (int(new.min()) < 0 or bool((np.diff(new) <= 0).any())):
                raise InvalidArgumentError("old_to_new must be increasing and >= 0 on live rows")
            new_n = int(new[-1]) + 1 if new.size else 0
            in_place = self._mat_owned and bool((new <= old).all())
            mat = self._mat if in_place else np.zeros((new_n, self.dim), dtype=np.float32)
            step = self._chunk
            for s in range(0, old.size, step):  # ascending: in place never overwrites a source
                mat[new[s : s + step]] = self._mat[old[s : s + step]]
            live = np.zeros(mat.shape[0], dtype=bool)
            live[new] = True
            if in_place:
                holes = np.flatnonzero(~live[: self._n])
                mat[holes] = 0.0
            norms = np.zeros(mat.shape[0], dtype=np.float32)
            norms[new] = self._norms[old]
            row_key = np.full(mat.shape[0], -1, dtype=np.int64)
            row_key[new] = self._row_key[old]
            first_tail = int(np.searchsorted(old, self._lo))
            self._lo = int(new[first_tail]) if first_tail < old.size else new_n
            self._scattered = {int(m[r]) for r in self._scattered}
            self._scattered_arr = None
            if self._graph is not None:
                kr = self._graph.key_row
                used = kr >= 0
                kr[used] = m[kr[used]]
            self._mat, self._mat_owned = mat, True
            self._live, self._norms, self._row_key, self._n = live, norms, row_key, new_n

    def flush(self, *, background: bool = False) -> None:
        """Fold pending rows into the graph now, in chunks, releasing the lock between them;
        then freeze the graph if it changed enough since it was last frozen (``_freeze_due``).

        Safe to call from a background thread. A no-op while the index is small enough to be
        searched exactly. ``background=True`` (the engine's flusher) does nothing while
        :meth:`flush_due` is false: a frozen graph keeps a short tail rather than being
        copied back, changed and frozen again for every row.
        """
        global _active_flushes
        with self._lock:
            if background and not self._flush_due():
                return
        if background:
            with _active:
                if _exiting:
                    return
                _active_flushes += 1
        try:
            while not (background and _exiting):
                with self._lock:
                    if self._fold(_FLUSH_CHUNK, threads=1) == 0:
                        g = self._graph
                        if g is not None:
                            if g.pending:
                                g.materialise()  # applies the removals buffered against a view
                            if self._freeze_due(g):
                                g.freeze()
                        return
        finally:
            if background:
                with _active:
                    _active_flushes -= 1
                    _active.notify_all()

    def flush_due(self) -> bool:
        """Whether ``flush(background=True)`` would fold or freeze anything now."""
        with self._lock:
            return self._flush_due()

    def _flush_due(self) -> bool:
        g = self._graph
        if g is None:
            return self._n_live > self._exact_max
        tail = self._tail_size()
        if g.view_buf is not None:
            # Frozen: new rows wait in the exact tail (and removals in `pending`) until there
            # are enough of them to be worth a refold and a refreeze.
            limit = min(max(g.size // _FREEZE_NODES_PER_CHANGE, _FLUSH_CHUNK), self._tail_max // 2)
            return tail + len(g.pending) >= limit
        return tail > 0 or self._freeze_due(g)

    @staticmethod
    def _freeze_due(g: _Graph) -> bool:
        """A private graph is frozen once it changed by 1/256 of its nodes since it last was:
        freezing and the later copy back cost about 0.6 us per node (30 ms each at 100k rows),
        inserting a node 100 us or more, so the freezes at most double the insertion work.

        Both hold the index lock, and queries wait: above ``_FREEZE_STALL_NODES`` (a 100 ms
        stall) a graph is refrozen only once half of it changed, as after a bulk build.
        """
        due = g.changes * _FREEZE_NODES_PER_CHANGE >= g.size > 0
        if g.size > _FREEZE_STALL_NODES:
            due = 2 * g.changes >= g.size
        return due and g.view_buf is None and _kernels is not None

    def _fold(self, limit: int | None, threads: int) -> int:
        """Move up to ``limit`` tail rows into the graph (building it if needed); hold the lock."""
        if self._graph is None:
            if self._n_live < max(self._exact_max, 1):
                return 0
            self._graph = _Graph(self.dim, self._scale(), self._connectivity, self._expansion_add)
        scattered = self._scattered_rows()
        if limit is not None:
            scattered = scattered[:limit]
        room = None if limit is None else limit - scattered.size
        suffix = self._lo + np.flatnonzero(self._live[self._lo : self._n])
        take = suffix if room is None else suffix[:room]
        rows = np.concatenate([scattered, take])
        if rows.size == 0:
            return 0
        self._row_key[rows] = self._graph.add(rows, self._mat[rows], threads)
        self._drop_scattered(scattered)
        if take.size == suffix.size:
            self._lo = self._n
        elif take.size:
            self._lo = int(take[-1]) + 1
        return int(rows.size)

    def _scale(self) -> float:
        """int8 scale mapping the largest absolute component of the live rows to 127."""
        top = 0.0
        step = self._chunk
        for s in range(0, self._n, step):
            block = self._mat[s : s + step][self._live[s : s + step]]
            if block.size:
                top = max(top, float(np.abs(block).max()))
        return 127.0 / top if top > 1e-30 else 1.0

    # ------------------------------------------------------------------ reads

    def get(self, rows: npt.ArrayLike) -> F32Array:
        """Copies of the vectors of live ``rows``, shape ``(len(rows), dim)``."""
        with self._lock:
            out: F32Array = self._mat[self._live_rows(rows)]  # fancy indexing copies
            return out

    def norms(self, rows: npt.ArrayLike) -> F32Array:
        """L2 norms of live ``rows`` (computed in float64 when stored)."""
        with self._lock:
            out: F32Array = self._norms[self._live_rows(rows)]
            return out

    def clamped_cosines(
        self, q: F32Array, rows: I64Array, known_dots: F32Array | None = None
    ) -> F64Array:
        """``clamp(cosine(q, row), 0, 1)`` per row (0 where either vector is zero), in float64.

        The query path's own call: ``q`` is a query vector ``search`` accepted and ``rows`` are
        live rows it returned or the keyword index named, so neither is validated again.
        ``known_dots`` holds the inner products of the first ``known_dots.size`` rows as ``search``
        returned them; only the other rows' are computed (the same numbers: see ``_dot64``).
        """
        q = np.ascontiguousarray(q, dtype=np.float32)  # a no-op for the vectors search accepted
        dots = np.empty(rows.size, dtype=np.float64)
        known = 0 if known_dots is None else min(known_dots.size, rows.size)
        if known_dots is not None and known:
            dots[:known] = known_dots[:known]
        with self._lock:
            norms = self._norms[rows].astype(np.float64)
            if known < rows.size:
                dots[known:] = self._dot64(q, rows[known:])
        denom = norms * _query_norm(q)
        cos = np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0)
        return np.clip(cos, 0.0, 1.0, out=cos)

    def fuse_score(
        self,
        q: F32Array,
        v_rows: I64Array,
        v_dots: F32Array,
        k_rows: I64Array,
        k_scores: F32Array,
        top: float,
        alpha: float,
        want: int,
        min_score: float | None,
    ) -> tuple[I64Array, F64Array] | None:
        """Score fusion of ``search``'s ``(v_rows, v_dots)`` and keyword ``(k_rows, k_scores)``
        (BM25 scores, ``top`` the query's maximum), in one compiled call; ``None`` where
        ``moss._kernels`` is not built.

        The rows and cosines ``fusion.fuse_candidates`` returns for ``fusion="score"`` with the
        theoretical normalisation, given ``clamped_cosines`` as its cosines and
        ``k_scores / top`` as the keyword fractions, cut to the first ``want`` rows whose cosine
        reaches ``min_score``: the same numbers (a property test compares them).
        """
        if _kernels is None:
            return None
        q = np.ascontiguousarray(q, dtype=np.float32)
        qnorm = _query_norm(q)
        out_rows = np.empty(want, dtype=np.int64)
        out_cos = np.empty(want, dtype=np.float64)
        with self._lock:
            count = _kernels.fuse_score(
                np.ascontiguousarray(v_rows, np.int64),
                np.ascontiguousarray(v_dots, np.float32),
                np.ascontiguousarray(k_rows, np.int64),
                np.ascontiguousarray(k_scores, np.float32),
                float(top),
                self._mat,
                self.dim,
                self._norms,
                q,
                qnorm,
                float(alpha),
                int(want),
                math.nan if min_score is None else float(min_score),
                out_rows,
                out_cos,
            )
        return out_rows[:count], out_cos[:count]

    def dot(self, q: npt.ArrayLike, rows: npt.ArrayLike) -> F32Array:
        """Exact inner products of ``q`` with live ``rows``, the same numbers ``search`` returns."""
        qv = self._query(q)
        with self._lock:
            return self._dot64(qv, self._live_rows(rows))

    def _dot64(self, q: F32Array, rows: I64Array) -> F32Array:
        """float64 dot products rounded once to float32: order- and kernel-independent.

        The compiled ``dot_rows`` sums in a fixed order of its own, BLAS in another; the float64
        sums differ by a few units in the last place of a float64, and rounding to float32 makes
        them the same number unless one lies within that of a float32 rounding boundary (about
        one value in a million). One process always takes the same path.
        """
        if _kernels is not None:
            got = np.empty(rows.size, dtype=np.float32)
            _kernels.dot_rows(self._mat, self.dim, np.ascontiguousarray(rows, np.int64), q, got)
            return got
        out = np.empty(rows.size, dtype=np.float64)
        q64 = q.astype(np.float64)
        step = self._chunk
        for s in range(0, rows.size, step):
            np.dot(self._mat[rows[s : s + step]].astype(np.float64), q64, out=out[s : s + step])
        return out.astype(np.float32)

    def search(
        self, q: npt.ArrayLike, k: int, allowed: npt.ArrayLike | None = None
    ) -> tuple[I64Array, F32Array]:
        """Top ``k`` live rows by inner product with ``q``, best first, ties by row.

        Args:
            q: float32 query vector of length ``dim``.
            k: number of rows wanted (fewer come back if fewer qualify).
            allowed: optional bool mask indexed by row; rows past its end are not allowed.

        Returns:
            ``(rows, scores)``: int64 rows and their exact float32 inner products.

        Raises:
            InvalidArgumentError: wrong query shape or dimension, non-finite query, ``k < 0``,
                a mask that is not a one-dimensional bool array.
        """
        qv = self._query(q)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise InvalidArgumentError(f"k must be a non-negative integer, got {k!r}")
        k = int(k)
        a: BoolArray | None = None
        if allowed is not None:
            a = np.asarray(allowed)
            if a.ndim != 1 or a.dtype != np.bool_:
                raise InvalidArgumentError("allowed must be a one-dimensional bool array")
        with self._lock:
            n = self._n
            mask: BoolArray | None = None
            if a is not None:
                mask = np.zeros(n, dtype=bool)
                mask[: min(n, a.size)] = a[:n]
                mask &= self._live[:n]
            if k == 0 or self._n_live == 0 or (mask is not None and not mask.any()):
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
            nonzero = _kernels.query_state(qv) == 2 if _kernels is not None else qv.any()
            if not nonzero:  # every score is exactly 0: the first k rows win the tie
                valid = self._live[:n] if mask is None else mask
                rows = np.flatnonzero(valid)[:k].astype(np.int64)
                return rows, np.zeros(rows.size, dtype=np.float32)
            return self._finalise(qv, self._candidates(qv, k, mask), k)

    def _candidates(self, q: F32Array, k: int, mask: BoolArray | None) -> I64Array:
        """Rows that include the exact top-k (exact paths) or its ANN estimate."""
        n, g = self._n, self._graph
        if g is None or g.size == 0 or self._n_live <= self._exact_max or 4 * k > g.size:
            return self._scan(q, k, 0, n, mask, None)
        tail_extra = self._scattered_rows()
        if mask is None:
            count = max(2 * k, _MIN_CANDIDATES)
            ann = g.search(q, count, self._search_ef(g.size, k, count))
            if self._lo >= n and not tail_extra.size:  # no tail: the common, flushed case
                return ann
            return np.concatenate([ann, self._scan(q, k, self._lo, n, None, tail_extra)])
        m = int(np.count_nonzero(mask))
        tail_extra = tail_extra[mask[tail_extra]]
        m_graph = m - tail_extra.size - int(np.count_nonzero(mask[self._lo : n]))
        if m_graph <= 0 or m <= _FILTER_EXACT_MIN:
            return self._scan(q, k, 0, n, mask, None)
        # The allowed top-k sit about k * g.size / m_graph deep in the unfiltered ranking, and
        # `count` candidates hold about count * m_graph / g.size allowed rows: ask for enough that
        # k survive with a few standard deviations to spare.
        depth = k * g.size / m_graph
        count = max(math.ceil((k + 3 * math.sqrt(k) + 8) * g.size / m_graph), _MIN_CANDIDATES)
        ef = self._search_ef(g.size, _FILTER_EF_PER_DEPTH * math.ceil(depth), count)
        if ef > _MAX_FILTER_EF or m <= _ROWS_PER_EF * ef:
            return self._scan(q, k, 0, n, mask, None)
        ann = g.search(q, count, ef)
        ann = ann[mask[ann]]
        if ann.size < min(k, m_graph):  # the filter and the query disagree: be exact
            return self._scan(q, k, 0, n, mask, None)
        return np.concatenate([ann, self._scan(q, k, self._lo, n, mask, tail_extra)])

    def _search_ef(self, graph_rows: int, depth: int, count: int) -> int:
        """HNSW ef for a result list ``depth`` deep: the size-based ef plus one per result.

        Filtered searches pass a multiple of the depth their allowed top-k sits at: their
        recall@k is the unfiltered recall at that depth, which falls faster than recall@10.
        """
        ef = self._ef if self._ef is not None else _auto_ef(graph_rows) + depth
        return max(ef, count)

    def _scan(
        self,
        q: F32Array,
        k: int,
        lo: int,
        hi: int,
        mask: BoolArray | None,
        extra: I64Array | None,
    ) -> I64Array:
        """Exact shortlist over live (and allowed) rows in ``[lo, hi)`` plus ``extra`` rows.

        float32 BLAS scores pick every row within a rounding margin of the k-th best, so the
        float64 re-scoring in ``_finalise`` sees the exact top-k whatever BLAS rounded.
        """
        valid = self._live[lo:hi] if mask is None else mask[lo:hi]
        step = self._chunk
        n_valid = int(np.count_nonzero(valid))
        if 4 * n_valid < hi - lo:  # sparse: gathering the valid rows beats scanning them all
            rows = lo + np.flatnonzero(valid)
            scores = np.empty(rows.size, dtype=np.float32)
            for s in range(0, rows.size, step):
                np.dot(self._mat[rows[s : s + step]], q, out=scores[s : s + step])
        else:
            scores = np.empty(hi - lo, dtype=np.float32)
            for s in range(lo, hi, step):
                e = min(hi, s + step)
                np.dot(self._mat[s:e], q, out=scores[s - lo : e - lo])
            rows = lo + np.flatnonzero(valid)
            scores = scores[valid]
        if extra is not None and extra.size:
            rows = np.concatenate([rows, extra])
            scores = np.concatenate([scores, self._mat[extra] @ q])
        if rows.size <= k:
            return rows.astype(np.int64, copy=False)
        kth = float(np.partition(scores, rows.size - k)[rows.size - k])
        margin = self.dim * 2.0**-22 * float(np.linalg.norm(q)) * max(self._max_norm, 1e-30)
        return rows[scores >= kth - margin].astype(np.int64, copy=False)

    def _finalise(self, q: F32Array, cand: I64Array, k: int) -> tuple[I64Array, F32Array]:
        # Every candidate path yields distinct rows (graph rows and tail rows are disjoint), so a
        # sort does what np.unique did at a third of the cost; sorted, the float64 products run
        # over the same rows in the same order as before.
        rows = np.sort(cand)
        scores = self._dot64(q, rows)
        order = np.argsort(-scores, kind="stable")[:k]  # stable on sorted rows: ties by row
        return rows[order], scores[order]

    # ------------------------------------------------------------------ persistence

    @property
    def exact_max_rows(self) -> int:
        """Up to this many live rows every search is exact (no graph)."""
        return self._exact_max

    def stats(self) -> dict[str, int]:
        """Sizes for monitoring and tests: rows, live rows, graph rows, tail rows, search ef."""
        with self._lock:
            g = self._graph
            return {
                "rows": self._n,
                "live": self._n_live,
                "graph": 0 if g is None else g.size,
                "tail": self._tail_size() if g is not None else self._n_live,
                "ef": 0 if g is None else self._search_ef(g.size, 10, 0),
            }

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The index as plain arrays: ``matrix`` (float32 rows), ``live``, ``norms``, ``meta``
        and, once built, ``graph`` (usearch bytes as uint8) and ``graph_key_row``.

        ``matrix`` (and ``graph`` while it is a view of loaded bytes) share memory with the
        index: write them out before the next change, or copy them.
        """
        with self._lock:
            g = self._graph
            out: dict[str, np.ndarray] = {
                "matrix": self._mat[: self._n].view(),
                "live": self._live[: self._n].astype(np.uint8),
                "norms": self._norms[: self._n].copy(),
                "meta": np.array(
                    [
                        FORMAT_VERSION,
                        self.dim,
                        0.0 if g is None else g.scale,
                        self._max_norm,
                        self._connectivity if g is None else g.connectivity,
                        self._expansion_add if g is None else g.expansion_add,
                    ],
                    dtype=np.float64,
                ),
            }
            out["matrix"].flags.writeable = False
            if g is not None:
                out.update(g.to_arrays())
            return out

    @classmethod
    def from_arrays(
        cls,
        arrays: Mapping[str, np.ndarray],
        *,
        exact_max_rows: int = 4096,
        tail_max_rows: int = 1024,
        expansion_search: int | None = None,
    ) -> VectorIndex:
        """Rebuild from :meth:`to_arrays` output without copying the matrix or rebuilding the graph.

        Only ``matrix`` is required (then every row is live and there is no graph yet). Read-only
        and memory-mapped arrays are used in place and copied on the first change.

        Raises:
            MossError: ``DESERIALIZATION`` when the arrays are missing, inconsistent or damaged.
        """
        try:
            return cls._from_arrays(arrays, exact_max_rows, tail_max_rows, expansion_search)
        except MossError:
            raise
        except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as e:
            raise MossError(
                "vector index arrays are damaged", code=DESERIALIZATION, detail=repr(e)
            ) from e

    @classmethod
    def _from_arrays(
        cls,
        arrays: Mapping[str, np.ndarray],
        exact_max_rows: int,
        tail_max_rows: int,
        expansion_search: int | None,
    ) -> VectorIndex:
        mat = np.asarray(arrays["matrix"])
        if mat.ndim != 2 or mat.shape[1] < 1:
            raise ValueError(f"matrix must be two-dimensional, got shape {mat.shape}")
        if mat.dtype != np.dtype("<f4") or not mat.flags.c_contiguous:
            mat = np.ascontiguousarray(mat, dtype="<f4")
        n, dim = mat.shape
        meta = np.asarray(arrays.get("meta", np.zeros(0)), dtype=np.float64)
        if meta.size and (int(meta[0]) != FORMAT_VERSION or int(meta[1]) != dim):
            raise ValueError(f"unsupported vector format/dimension {meta[:2].tolist()}")
        vi = cls(
            dim,
            exact_max_rows=exact_max_rows,
            tail_max_rows=tail_max_rows,
            connectivity=int(meta[4]) if meta.size else 16,
            expansion_add=int(meta[5]) if meta.size else 200,
            expansion_search=expansion_search,
        )
        live = np.ones(n, dtype=bool) if "live" not in arrays else np.asarray(arrays["live"]) != 0
        if live.shape != (n,):
            raise ValueError("live mask does not match the matrix")
        vi._mat, vi._mat_owned, vi._n = mat, False, n
        vi._live = live
        vi._n_live = int(np.count_nonzero(live))
        if "norms" in arrays:
            vi._norms = np.array(arrays["norms"], dtype=np.float32)
            if vi._norms.shape != (n,):
                raise ValueError("norms do not match the matrix")
        else:
            vi._norms = np.zeros(n, dtype=np.float32)
            step = vi._chunk
            for s in range(0, n, step):
                block = mat[s : s + step]
                vi._norms[s : s + step] = np.sqrt(
                    np.einsum("ij,ij->i", block, block, dtype=np.float64)
                )
            vi._norms[~live] = 0.0
        vi._max_norm = float(meta[3]) if meta.size else float(vi._norms.max(initial=0.0))
        vi._row_key = np.full(n, -1, dtype=np.int64)
        graph = arrays.get("graph")
        if graph is not None and np.asarray(graph).size:
            key_row = np.array(arrays["graph_key_row"], dtype=np.int64)
            used = np.flatnonzero(key_row >= 0)
            rows = key_row[used]
            if rows.size and (int(rows.max()) >= n or not live[rows].all()):
                raise ValueError("graph refers to rows that are not live")
            buf = np.asarray(graph).reshape(-1).view(np.uint8)
            vi._graph = _Graph.from_arrays(buf, key_row, dim, meta)
            vi._row_key[rows] = used
            vi._lo = int(rows.max()) + 1 if rows.size else 0
            tail = np.flatnonzero(live[: vi._lo] & (vi._row_key[: vi._lo] < 0))
            vi._scattered = set(tail.tolist())
            vi._scattered_arr = None
        return vi

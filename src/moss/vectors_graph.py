"""The HNSW graph of the vector index (moss.vectors): int8 rows in usearch, and our compiled walk.

* **Large indexes use a usearch HNSW graph over int8 copies of the rows** (M=16), and the ANN
  candidates are re-ranked exactly. We quantise ourselves with one global scale (``127 / max|x|``)
  and hand usearch int8 arrays: usearch then ranks by the *raw* integer inner product. (Given
  float32 input its i8 mode normalises every vector, which is cosine, not inner product.) int8
  keeps the graph at ~0.35x the float32 matrix, where f16 would be 0.6x and slower.
* **Searching a settled graph is our own compiled walk over usearch's bytes.** usearch's Python
  search prefetches nothing, so after an embedding has evicted the caches each vector it reads is
  a miss waited for in turn. A *frozen* graph (:meth:`_Graph.freeze`; when the index freezes it:
  moss.vectors_tail) is a read-only view of its own serialisation, which
  ``moss._kernels.hnsw_search`` walks (the same algorithm, every step's reads requested together;
  0.18 against 0.38 ms cold at 100k rows). A layout the walk does not read, or no compiled
  extension, means usearch's own search.
* **Removing a node** is ``usearch remove``, and before the next insertion one pass drops the links
  to removed nodes, whose slots usearch reuses; no rebuild is ever needed (recall after heavy
  churn: docs/vector-index.md).
* **Graph keys are stable slot ids**, not rows (``key_row`` maps back), so a renumbering of the
  rows rewrites small integer arrays and never touches the graph. Freed slot ids are reused.
* **Loading views the serialised graph in place** (usearch ``view``); the first change to the
  graph loads a private copy (:meth:`_Graph.materialise`).
* **Snapshots need not store the int8 rows twice**: :func:`strip_graph_vectors` drops them from
  the serialised graph, since the float32 matrix re-quantises to them bit for bit, and
  :func:`restore_graph_vectors` puts them back.

usearch holds the GIL while it inserts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import INTERNAL, MossError

try:  # compiled query helpers (src/moss/_kernels.c); the numpy code below does the same
    from . import _kernels
except ImportError:  # pragma: no cover - built wherever a C compiler exists
    _kernels = None  # type: ignore[assignment]

__all__ = ["restore_graph_vectors", "strip_graph_vectors"]

F32Array = npt.NDArray[np.float32]
F64Array = npt.NDArray[np.float64]
I64Array = npt.NDArray[np.int64]
U8Array = npt.NDArray[np.uint8]
U64Array = npt.NDArray[np.uint64]

_MAX_PENDING = 1024  # removals buffered against a read-only (viewed) graph before copying it


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


def _quantise(x: npt.NDArray[np.floating[Any]], scale: float) -> npt.NDArray[np.int8]:
    with np.errstate(over="ignore"):  # components past the scale saturate at +-127
        y = np.rint(x * x.dtype.type(scale))
    q: npt.NDArray[np.int8] = np.clip(y, -127, 127).astype(np.int8)
    return q


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

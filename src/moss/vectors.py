"""The vector index: exact float32 inner products, with an int8 HNSW graph once the index is large.

Rows are the engine's dense row numbers; each holds one float32 vector. ``search`` returns the top
``k`` live rows by inner product (not cosine: custom vectors are not normalised, docs/api.md
§3.3), with their exact float32 scores, ties broken by row. The design, and the measurements behind
every constant, are in ``docs/vector-index.md``. The parts, each with its own notes:

* :mod:`moss.vectors_exact` -- the float32 matrix, which is the truth: every score is recomputed
  from it in float64, and small indexes (``exact_max_rows``) are searched exactly.
* :mod:`moss.vectors_graph` -- the usearch HNSW graph over int8 copies of the rows, searched by our
  compiled walk once frozen, and the snapshot form of its bytes.
* :mod:`moss.vectors_tail` -- the exact tail of rows not in the graph yet, ``flush`` and freezing.

This module holds :class:`VectorIndex`: writes, search, and loading. In short:

* **Filtered search** counts the allowed live rows. Few of them (or a selectivity that would need a
  huge over-fetch) means an exact scan of just those rows; otherwise the graph is searched with an
  over-fetch sized from the selectivity, and if too few allowed rows survive we fall back to exact.
* **Graph keys are stable slot ids**, not rows, so ``remap`` (engine compaction) rewrites two small
  integer arrays and never touches the graph.
* **Loading never rebuilds.** ``from_arrays`` uses the matrix as given (a read-only memory map is
  fine: it is copied on the first write) and *views* the serialised graph in place (usearch
  ``view``); the first change to the graph loads a private copy.

Thread safety: every public method takes one re-entrant lock; ``flush`` releases it between chunks,
so a concurrent query waits at most one chunk (a few ms; ~20 ms more at 100k rows for the link
pass after deletes). usearch holds the GIL while it inserts.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from .errors import DESERIALIZATION, InvalidArgumentError, MossError
from .vectors_exact import _GEMV_ELEMS
from .vectors_graph import _Graph, restore_graph_vectors, strip_graph_vectors
from .vectors_tail import _Tail

try:  # compiled query helpers (src/moss/_kernels.c); the numpy code below does the same
    from . import _kernels
except ImportError:  # pragma: no cover - built wherever a C compiler exists
    _kernels = None  # type: ignore[assignment]

__all__ = ["FORMAT_VERSION", "VectorIndex", "restore_graph_vectors", "strip_graph_vectors"]

F32Array = npt.NDArray[np.float32]
I64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

FORMAT_VERSION = 1
_MIN_CANDIDATES = 32  # ANN candidates re-ranked exactly, at least
_FILTER_EXACT_MIN = 2048  # allowed rows at or below which a filtered query is always exact
_ROWS_PER_EF = 20  # an exact scan of m allowed rows costs about an ANN search with ef = m / 20
_MAX_FILTER_EF = 4096  # a filter so selective it needs a larger over-fetch is searched exactly
_FILTER_EF_PER_DEPTH = 3  # filtered ef = base ef + this * (depth of the allowed top-k)


def _auto_ef(graph_rows: int) -> int:
    """Base HNSW ef for a graph of this size (docs/vector-index.md, sweep); see ``_search_ef``."""
    return int(min(512, max(64, round(64 + 32 * math.log2(max(graph_rows, 2500) / 2500)))))


class VectorIndex(_Tail):
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

"""The float32 matrix of the vector index (moss.vectors), and every exact computation over it.

* **The float32 matrix is the truth.** Every score we return is recomputed from it in float64 and
  rounded once to float32 (``_dot64``), so it is the correctly rounded inner product whichever
  path found the row, identical vectors tie exactly (BLAS ``sgemv`` gives identical rows different
  last bits, measured), and ``dot`` agrees with ``search``.
* **Small indexes are searched exactly** (up to ``exact_max_rows`` live rows, 4096 by default):
  chunked float32 BLAS gives a shortlist (``_scan``), the float64 recomputation orders it
  (``_finalise``). The graph's candidates, and the rows not in the graph yet, are re-ranked the
  same way.

Why BLAS calls are chunked to at most 2**18 elements: above roughly 1200x384 OpenBLAS runs
``sgemv`` on several threads, and on a busy machine that stalled single queries for 12-16 ms
(measured); below it, it stays on the calling thread.

:class:`_Matrix` holds the per-row arrays and the methods that read them; its state is set by
``VectorIndex.__init__`` and ``VectorIndex.from_arrays`` (moss.vectors), which subclasses it.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import InvalidArgumentError

try:  # compiled query helpers (src/moss/_kernels.c); the numpy code below does the same
    from . import _kernels
except ImportError:  # pragma: no cover - built wherever a C compiler exists
    _kernels = None  # type: ignore[assignment]

__all__: list[str] = []

F32Array = npt.NDArray[np.float32]
F64Array = npt.NDArray[np.float64]
I64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_GEMV_ELEMS = 1 << 18  # elements per BLAS call (see the module docstring)


def _query_norm(q: F32Array) -> float:
    """``|q|`` in np.linalg.norm's float32 arithmetic: the one both cosine paths divide by."""
    return float(np.sqrt(q.dot(q)))


def _as_float32(values: Any, what: str) -> F32Array:
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow: rejected as non-finite
            return np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"{what} must be an array of numbers: {e}") from e


class _Matrix:
    """Float32 rows with their live flags and norms: validation, storage and exact reads."""

    dim: int
    _chunk: int  # rows per BLAS call
    _mat: F32Array
    _mat_owned: bool  # False while _mat is a caller's (maybe read-only) array
    _live: BoolArray
    _norms: F32Array
    _row_key: I64Array  # the row's graph key, -1 if none (moss.vectors_tail)
    _n: int  # rows in use (live or dead); the matrix may have more capacity
    _max_norm: float
    _lock: threading.RLock

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

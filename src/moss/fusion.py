"""Hybrid fusion of a vector candidate list V and a keyword candidate list K (API.md §3.4 step 5).

Two fusions, both pure functions over ranked lists of row numbers:

* :func:`rrf` — weighted reciprocal-rank fusion with constant 30, exactly the proprietary SDK's
  ranking (Cormack, Clarke & Büttcher, "Reciprocal Rank Fusion outperforms Condorcet and individual
  rank learning methods", SIGIR 2009; weighted by ``alpha``).
* :func:`score_fusion` — our default: each list's raw scores are normalised to a common scale and
  combined convexly, ``alpha * v̂ + (1 - alpha) * k̂`` (a missing term counts as 0). Normalisation is
  *distribution-based* ("3-sigma", Mazzeschi's DBSF as used by Qdrant): ``(s - (μ - 3σ)) / 6σ``
  clipped to [0, 1], which keeps a single outstanding hit from flattening the rest the way min-max
  does. The choice and depth were measured on the SciFact *train* split (docs/fusion.md).

Ties go to the better vector rank, then the better keyword rank, then index order (the row number,
because rows are kept in index order).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["Normalisation", "fuse", "normalise", "rrf", "score_fusion"]

RRF_K = 30
Normalisation = Literal["dbsf", "minmax"]
_ABSENT = np.iinfo(np.int64).max


def normalise(scores: np.ndarray, method: Normalisation = "dbsf") -> np.ndarray:
    """Map one list's raw scores onto [0, 1] (higher is better)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return s
    if method == "minmax":
        lo, hi = float(s.min()), float(s.max())
        if hi - lo <= 1e-12:
            return np.ones_like(s)
        return (s - lo) / (hi - lo)
    mean, std = float(s.mean()), float(s.std())
    if std <= 1e-12:
        return np.ones_like(s)
    lo = mean - 3.0 * std
    return np.clip((s - lo) / (6.0 * std), 0.0, 1.0)


def _ranks(v_rows: np.ndarray, k_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Union of both lists with each row's 1-based vector and keyword rank (absent = huge)."""
    union = np.union1d(v_rows, k_rows).astype(np.int64)
    rv = np.full(union.shape, _ABSENT, dtype=np.int64)
    rk = np.full(union.shape, _ABSENT, dtype=np.int64)
    if v_rows.size:
        rv[np.searchsorted(union, v_rows)] = np.arange(1, v_rows.size + 1)
    if k_rows.size:
        rk[np.searchsorted(union, k_rows)] = np.arange(1, k_rows.size + 1)
    return union, rv, rk


def _order(fused: np.ndarray, rv: np.ndarray, rk: np.ndarray, rows: np.ndarray) -> np.ndarray:
    # np.lexsort sorts by the last key first: fused desc, then vector rank, keyword rank, row.
    return np.lexsort((rows, rk, rv, -fused))


def rrf(
    v_rows: np.ndarray, k_rows: np.ndarray, alpha: float, k: int = RRF_K
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted RRF: ``alpha/(k + r_v) + (1 - alpha)/(k + r_k)``, a term omitted when absent.

    Returns the fused rows in order and their fused values.

    >>> rows, _ = rrf(np.array([10, 11, 12]), np.array([12]), 0.8)
    >>> rows.tolist()   # 12 is vector rank 3 and keyword rank 1: 0.8/33 + 0.2/31 > 0.8/31
    [12, 10, 11]
    """
    union, rv, rk = _ranks(v_rows, k_rows)
    fused = np.zeros(union.shape, dtype=np.float64)
    has_v, has_k = rv != _ABSENT, rk != _ABSENT
    fused[has_v] += alpha / (k + rv[has_v])
    fused[has_k] += (1.0 - alpha) / (k + rk[has_k])
    order = _order(fused, rv, rk, union)
    return union[order], fused[order]


def score_fusion(
    v_rows: np.ndarray,
    v_scores: np.ndarray,
    k_rows: np.ndarray,
    k_scores: np.ndarray,
    alpha: float,
    method: Normalisation = "dbsf",
) -> tuple[np.ndarray, np.ndarray]:
    """Convex combination of normalised scores; rows absent from a list get 0 for that term."""
    union, rv, rk = _ranks(v_rows, k_rows)
    fused = np.zeros(union.shape, dtype=np.float64)
    if v_rows.size:
        fused[np.searchsorted(union, v_rows)] += alpha * normalise(v_scores, method)
    if k_rows.size:
        fused[np.searchsorted(union, k_rows)] += (1.0 - alpha) * normalise(k_scores, method)
    order = _order(fused, rv, rk, union)
    return union[order], fused[order]


def fuse(
    fusion: Literal["score", "rrf"],
    v_rows: np.ndarray,
    v_scores: np.ndarray,
    k_rows: np.ndarray,
    k_scores: np.ndarray,
    alpha: float,
    method: Normalisation = "dbsf",
) -> np.ndarray:
    """Fused order of ``V ∪ K``. ``alpha == 1`` keeps V as is and ``alpha == 0`` keeps K as is."""
    if alpha >= 1.0:
        return v_rows
    if alpha <= 0.0:
        return k_rows
    if fusion == "rrf":
        return rrf(v_rows, k_rows, alpha)[0]
    return score_fusion(v_rows, v_scores, k_rows, k_scores, alpha, method)[0]

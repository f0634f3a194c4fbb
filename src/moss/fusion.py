"""Hybrid fusion of a vector candidate list V and a keyword candidate list K (docs/api.md §3.4).

Two fusions, both pure functions over ranked lists of row numbers:

* :func:`rrf` — weighted reciprocal-rank fusion with constant 30, exactly the proprietary SDK's
  ranking (Cormack, Clarke & Büttcher, "Reciprocal Rank Fusion outperforms Condorcet and individual
  rank learning methods", SIGIR 2009; weighted by ``alpha``).
* :func:`score_fusion` — our default: each list's scores are normalised to a common scale and
  combined convexly, ``alpha * v̂ + (1 - alpha) * k̂`` (a missing term counts as 0). The default
  normalisation is *theoretical* (Bruch, Gai & Ingber, "An Analysis of Fusion Functions for Hybrid
  Retrieval", TOIS 2023): each score is divided by its own range, known without looking at the
  other candidates: the clamped cosine for vectors, BM25 over the query's maximum attainable BM25
  for keywords. The caller (the engine, which knows norms and term weights) maps the scores, and
  ``normalise(s, "theoretical")`` passes them through. The list-based alternatives are kept for
  measurement: *distribution-based* ("3-sigma", DBSF as used by Qdrant), ``(s - (μ - 3σ)) / 6σ``
  clipped to [0, 1], and min-max. The choice and depths were measured on the SciFact *train* split
  (docs/fusion.md).

Ties go to the better vector rank, then the better keyword rank, then index order (the row number,
because rows are kept in index order).

The query paths (``Engine._search``, ``query_multi_index``) call :func:`fuse_candidates`, which
lays out the union once, scores every row's cosine and orders it with the same pieces
(:func:`union`, :func:`fusion_terms`, :func:`fused_order`) that :func:`rrf` and
:func:`score_fusion` use.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np

__all__ = [
    "Normalisation",
    "fuse_candidates",
    "fused_order",
    "fusion_terms",
    "normalise",
    "rrf",
    "score_fusion",
    "union",
]

RRF_K = 30
Normalisation = Literal["theoretical", "dbsf", "minmax"]


def normalise(scores: np.ndarray, method: Normalisation = "dbsf") -> np.ndarray:
    """Map one list's raw scores onto [0, 1] (higher is better)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0 or method == "theoretical":  # already on [0, 1] by their known range
        return s
    if method == "minmax":
        lo, hi = float(s.min()), float(s.max())
        if hi - lo <= 1e-12:
            return np.ones_like(s)
        return (s - lo) / (hi - lo)
    # ``s.mean()`` and ``s.std()`` spelled out: the same pairwise sums and divisions (so the same
    # bits) without numpy's generic reduction wrappers, which cost more than the arithmetic here.
    n = s.size
    mean = float(np.add.reduce(s)) / n
    d = s - mean
    std = math.sqrt(float(np.add.reduce(d * d)) / n)
    if std <= 1e-12:
        return np.ones_like(s)
    lo = mean - 3.0 * std
    out = s - lo
    out /= 6.0 * std
    return np.clip(out, 0.0, 1.0, out=out)


def union(v_rows: np.ndarray, k_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``V ∪ K`` laid out as V in order, then the rows of K that V lacks in K's order, and the
    position of each row of K in that layout.

    The layout is ascending (vector rank, keyword rank): the tie-break order, so one stable sort by
    the fused value alone gives the tie-broken order.

    >>> rows, at = union(np.array([10, 11]), np.array([12, 10]))
    >>> rows.tolist(), at.tolist()
    ([10, 11, 12], [2, 0])
    """
    v_rows = v_rows.astype(np.int64, copy=False)
    k_rows = k_rows.astype(np.int64, copy=False)
    if not v_rows.size or not k_rows.size:
        return (v_rows if v_rows.size else k_rows), np.arange(k_rows.size, dtype=np.int64)
    sorter = np.argsort(v_rows)
    at = np.searchsorted(v_rows, k_rows, sorter=sorter)
    np.minimum(at, v_rows.size - 1, out=at)
    at = sorter[at]
    only_k = v_rows[at] != k_rows
    at[only_k] = v_rows.size + np.arange(int(np.count_nonzero(only_k)), dtype=np.int64)
    return np.concatenate((v_rows, k_rows[only_k])), at


def fused_order(
    size: int, v_terms: np.ndarray, k_at: np.ndarray, k_terms: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of a :func:`union` of ``size`` rows best first by ``v_term + k_term``, and the
    fused values in that order.

    ``v_terms`` covers the first ``v_terms.size`` positions (V's rows, or every row of the union
    when the caller knows each row's vector term); ``k_terms[i]`` belongs to position ``k_at[i]``;
    a missing term counts as 0. Ties keep layout order.
    """
    fused = np.zeros(size, dtype=np.float64)
    fused[: v_terms.size] = v_terms
    fused[k_at] += k_terms  # the positions are distinct: no index repeats
    order = np.argsort(-fused, kind="stable")
    return order, fused[order]


def _merge(
    v_rows: np.ndarray, v_terms: np.ndarray, k_rows: np.ndarray, k_terms: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``V ∪ K`` best first by ``v_term + k_term``, and their fused values."""
    rows, at = union(v_rows, k_rows)
    order, fused = fused_order(rows.size, np.asarray(v_terms), at, np.asarray(k_terms))
    return rows[order], fused


def _rrf_terms(n_v: int, n_k: int, alpha: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    v_terms = alpha / (k + np.arange(1, n_v + 1, dtype=np.int64))
    k_terms = (1.0 - alpha) / (k + np.arange(1, n_k + 1, dtype=np.int64))
    return v_terms, k_terms


def fusion_terms(
    fusion: Literal["score", "rrf"],
    v_scores: np.ndarray,
    k_scores: np.ndarray,
    alpha: float,
    method: Normalisation = "dbsf",
) -> tuple[np.ndarray, np.ndarray]:
    """Each list's weighted term: ``alpha * v̂`` and ``(1 - alpha) * k̂`` (RRF: by rank only)."""
    if fusion == "rrf":
        return _rrf_terms(v_scores.size, k_scores.size, alpha, RRF_K)
    return alpha * normalise(v_scores, method), (1.0 - alpha) * normalise(k_scores, method)


def rrf(
    v_rows: np.ndarray, k_rows: np.ndarray, alpha: float, k: int = RRF_K
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted RRF: ``alpha/(k + r_v) + (1 - alpha)/(k + r_k)``, a term omitted when absent.

    Returns the fused rows in order and their fused values.

    >>> rows, _ = rrf(np.array([10, 11, 12]), np.array([12]), 0.8)
    >>> rows.tolist()   # 12 is vector rank 3 and keyword rank 1: 0.8/33 + 0.2/31 > 0.8/31
    [12, 10, 11]
    """
    v_terms, k_terms = _rrf_terms(v_rows.size, k_rows.size, alpha, k)
    return _merge(v_rows, v_terms, k_rows, k_terms)


def score_fusion(
    v_rows: np.ndarray,
    v_scores: np.ndarray,
    k_rows: np.ndarray,
    k_scores: np.ndarray,
    alpha: float,
    method: Normalisation = "dbsf",
) -> tuple[np.ndarray, np.ndarray]:
    """Convex combination of normalised scores; rows absent from a list get 0 for that term."""
    v_terms, k_terms = fusion_terms("score", v_scores, k_scores, alpha, method)
    return _merge(v_rows, v_terms, k_rows, k_terms)


def fuse_candidates(
    fusion: Literal["score", "rrf"],
    v_rows: np.ndarray,
    v_scores: np.ndarray,
    k_rows: np.ndarray,
    k_scores: np.ndarray,
    alpha: float,
    cosines: Callable[[np.ndarray], np.ndarray],
    method: Normalisation = "dbsf",
) -> tuple[np.ndarray, np.ndarray]:
    """The fused order of ``V ∪ K`` (both non-empty, ``0 < alpha < 1``) and each row's cosine.

    ``cosines(rows)`` gives the clamped cosine of any rows: the hits' scores, and with
    ``method="theoretical"`` the vector term of *every* candidate, keyword-only ones included
    (``k_scores`` are then BM25 fractions of the query's maximum). Returns rows and cosines in
    fused order.
    """
    rows, k_at = union(v_rows, k_rows)
    cos = cosines(rows)
    v_in = cos if fusion == "score" and method == "theoretical" else v_scores
    v_terms, k_terms = fusion_terms(fusion, v_in, k_scores, alpha, method)
    order, _ = fused_order(rows.size, v_terms, k_at, k_terms)
    return rows[order], cos[order]

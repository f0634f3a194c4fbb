"""Retrieval metrics for :mod:`moss.evaluation` (``pytrec_eval`` definitions).

Metrics are pure functions of one ranked id list and one query's judgements, with the
definitions of ``pytrec_eval`` (which BEIR and MTEB use): nDCG with linear gain
``rel / log2(rank + 1)`` and the ideal ranking built from all judgements; recall over the
documents judged relevant (``rel > 0``); reciprocal rank of the first relevant document. A run is
a set, so a repeated id counts once. A query that retrieves nothing scores 0 (``pytrec_eval``
would silently drop it, flattering the mean).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from .errors import InvalidArgumentError

__all__ = ["mean_metrics", "mrr_at_k", "ndcg_at_k", "percentile", "recall_at_k"]


def _unique(ranked: Sequence[str], k: int) -> list[str]:
    """The first ``k`` distinct ids: a run is a set of documents (as in ``pytrec_eval``), so a
    repeated id neither earns a second gain nor takes a rank."""
    return list(dict.fromkeys(ranked))[:k]


def ndcg_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k with linear gain: ``sum(rel_i / log2(i + 1))`` over ranks ``i`` over the ideal.

    >>> round(ndcg_at_k(["a", "b"], {"b": 1}), 4)
    0.6309
    """
    ranked = _unique(ranked, k)
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int = 10) -> float:
    """Share of the documents judged relevant (``rel > 0``) that appear in the top ``k``.

    >>> recall_at_k(["a", "b", "c"], {"a": 1, "z": 1}, k=2)
    0.5
    """
    relevant = {d for d, r in rels.items() if r > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(_unique(ranked, k))) / len(relevant)


def mrr_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int = 10) -> float:
    """Reciprocal rank of the first relevant document within the top ``k`` (0 if none).

    >>> mrr_at_k(["a", "b", "c"], {"c": 1})
    0.3333333333333333
    """
    for i, d in enumerate(_unique(ranked, k)):
        if rels.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def mean_metrics(
    runs: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    deep_runs: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, float]:
    """Mean nDCG@10, recall@10, recall@100 and MRR@10 over every query of ``qrels``.

    Args:
        runs: query id -> ranked doc ids (a missing query counts as an empty ranking).
        qrels: query id -> {doc id: relevance}.
        deep_runs: rankings for recall@100 (default: ``runs``).
    """
    deep = runs if deep_runs is None else deep_runs
    n = len(qrels)
    if n == 0:
        raise InvalidArgumentError("no judged queries to evaluate")
    sums = {"ndcg@10": 0.0, "recall@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    for q, rels in qrels.items():
        r = runs.get(q, ())
        sums["ndcg@10"] += ndcg_at_k(r, rels, 10)
        sums["recall@10"] += recall_at_k(r, rels, 10)
        sums["recall@100"] += recall_at_k(deep.get(q, ()), rels, 100)
        sums["mrr@10"] += mrr_at_k(r, rels, 10)
    return {k: v / n for k, v in sums.items()}


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (linear interpolation), NaN for no values.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.5
    """
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))

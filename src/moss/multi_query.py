"""One query over several engines: ``query_multi_index`` and the merge of per-index answers.

:func:`query_many` searches loaded indexes and sessions as one (docs/api.md §3.4): the query is
embedded once, each engine's vector and keyword candidates go into global lists (row ids offset
per engine), and those are fused once, so ``top_k``, ``filter`` and ``min_score`` are global. It
holds every engine's lock for the search, so each engine is seen at one version.

:func:`merge_results` joins finished answers instead (indexes queried where they are stored, by
score); used by :class:`~moss.runtime.Runtime`'s client for indexes that are not loaded.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np

from .analysis import analyze
from .engine import (
    CUSTOM,
    SCORE_FUSION_MIN_DEPTH,
    SCORE_FUSION_MIN_DEPTH_K,
    SCORE_NORMALISATION,
    Engine,
    embed_beside,
    group_hits,
    validate_query_options,
)
from .errors import InvalidArgumentError
from .fusion import fuse_candidates
from .types import QueryOptions, SearchResult

__all__ = ["merge_results", "query_many"]


def query_many(
    targets: list[tuple[str, Engine]],
    text: str,
    options: QueryOptions | None,
    start: float,
) -> SearchResult:
    """One global ranking over ``(name, engine)`` targets (docs/api.md §3.4, §4.3): the query is
    embedded once, per-engine candidates are merged into global lists and fused once. ``start``:
    the ``perf_counter`` the caller's timing began at."""
    if not isinstance(text, str):
        raise InvalidArgumentError(f"query must be a str, not {type(text).__name__}")
    engines = [e for _, e in targets]
    models = sorted({e.model_id for e in engines})
    if len(models) > 1:
        raise InvalidArgumentError(
            f"query_multi_index needs indexes that share one model; got {', '.join(models)}"
        )
    dims = {e.dimension for e in engines if e.dimension is not None}
    if len(dims) > 1:
        raise InvalidArgumentError(
            "query_multi_index needs indexes of one embedding dimension; got "
            + ", ".join(str(d) for d in sorted(dims))
        )
    model_id = models[0]
    plan = validate_query_options(options, next(iter(dims), None), default_top_k=10)
    if plan.min_score is not None and plan.alpha == 0.0:
        raise InvalidArgumentError("min_score cannot be used with alpha 0 (keyword-only query)")
    blank = not text.strip()
    if plan.top_k == 0 or (blank and plan.embedding is None):
        return _result([], text, model_id, start)
    keywords = plan.alpha < 1.0 and not blank
    terms: list[str] = []
    pres: dict[int, Any] = {}
    q = plan.embedding
    if q is None and plan.alpha > 0.0:
        if model_id == CUSTOM:
            raise InvalidArgumentError(
                "these indexes use custom embeddings and cannot embed text queries: "
                "pass QueryOptions(embedding=...) or use alpha=0"
            )
        embedder = _embedder(engines[0])
        if keywords and plan.group_by is None:
            # As Engine.query, per index; a prefetch is used only if its index has not
            # changed since.
            q, (terms, pres) = embed_beside(
                embedder, text, lambda: _prefetch_all(engines, plan, text)
            )
        else:
            q = embedder.embed_query(text)
    if keywords and not terms:
        terms = analyze(text)
    with contextlib.ExitStack() as stack:
        for e in sorted(set(engines), key=id):
            stack.enter_context(e._lock)
        docs = _search_many(targets, plan, q, terms, pres)
    if plan.group_by is not None:
        docs = group_hits(docs, plan.group_by)[: plan.top_k]
    return _result(docs, text, model_id, start)


def merge_results(parts: list[SearchResult], text: str, top_k: int, start: float) -> SearchResult:
    """Hits of several results as one ranking: by score, ties in the order the parts list
    them; ``top_k`` kept. All parts must come from one model (as ``query_multi`` requires)."""
    models = sorted({p.model_id for p in parts if p.model_id is not None})
    if len(models) > 1:
        raise InvalidArgumentError(
            f"query_multi_index needs indexes that share one model; got {', '.join(models)}"
        )
    hits = [(d, i, r) for i, p in enumerate(parts) for r, d in enumerate(p.docs)]
    hits.sort(key=lambda h: (-h[0].score, h[1], h[2]))
    docs = [h[0] for h in hits[:top_k]]
    return _result(docs, text, models[0] if models else CUSTOM, start)


def _embedder(engine: Engine) -> Any:
    if engine.embedder is not None:
        return engine.embedder
    from .embedding import get_embedder

    return get_embedder(engine.model_id)


def _result(docs: list[Any], text: str, model_id: str, start: float) -> SearchResult:
    ms = round((time.perf_counter() - start) * 1000.0)
    return SearchResult(docs, text, None, ms, model_id)


def _merge(parts: list[tuple[np.ndarray, np.ndarray]], depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate per-index (global ids, scores) and keep the best ``depth`` (ties by id)."""
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    ids = np.concatenate([p[0] for p in parts]).astype(np.int64)
    scores = np.concatenate([p[1] for p in parts]).astype(np.float64)
    order = np.lexsort((ids, -scores))[:depth]
    return ids[order], scores[order]


def _prefetch_all(engines: list[Engine], plan: Any, text: str) -> tuple[list[str], dict[int, Any]]:
    """The query's terms and each engine's keyword prefetch (by ``id``), one lock at a time."""
    terms = analyze(text)
    pres: dict[int, Any] = {}
    if terms:
        for e in engines:
            with e._lock:
                pres[id(e)] = e._prefetch_keywords(plan, terms)
    return terms, pres


def _search_many(
    targets: list[tuple[str, Engine]],
    plan: Any,
    q: np.ndarray | None,
    terms: list[str],
    pres: dict[int, Any] | None = None,
) -> list[Any]:
    """Engine._search over several engines with global candidate lists (hold every _lock).

    ``pres``: keyword prefetches by engine ``id``, from ``_prefetch_all``; one whose engine has
    changed since is ignored, so every list comes from the version now locked.
    """
    engines = [e for _, e in targets]
    use_v = plan.alpha > 0.0 and q is not None and any(e.has_vectors() for e in engines)
    if plan.min_score is not None and not use_v:
        raise InvalidArgumentError(
            "min_score cannot be used on a keyword-only query (alpha 0 or no vectors)"
        )
    grouped = plan.group_by is not None
    total = sum(int(e.live_rows().size) for e in engines) if grouped else 0
    want = total if grouped else plan.top_k
    depth = max(plan.depth, total) if grouped else plan.depth
    v_deep = k_deep = depth
    score_fusion = plan.fusion == "score" and 0.0 < plan.alpha < 1.0
    if score_fusion:
        v_deep = max(depth, SCORE_FUSION_MIN_DEPTH)
        k_deep = max(depth, SCORE_FUSION_MIN_DEPTH_K)
    theoretical = score_fusion and SCORE_NORMALISATION == "theoretical"
    v_parts, k_parts = [], []
    offsets: list[int] = []
    offset = 0
    for e in engines:
        pre = (pres or {}).get(id(e))
        if pre is not None and pre.version != e.version:
            pre = None
        v_rows, v_scores, k_rows, k_scores = e.candidate_lists(
            plan, q if use_v else None, terms, v_deep, k_deep, pre
        )
        if theoretical:  # comparable across indexes, whose BM25 statistics differ
            k_scores = e.keyword_fraction(terms, k_scores)
        offsets.append(offset)
        v_parts.append((v_rows + offset, v_scores))
        k_parts.append((k_rows + offset, k_scores))
        top = max(int(v_rows.max(initial=-1)), int(k_rows.max(initial=-1)))
        offset += top + 1  # ids only need to be unique and keep each index's row order
    v_ids, v_scores_all = _merge(v_parts, v_deep)
    k_ids, k_scores_all = _merge(k_parts, k_deep)
    bounds = np.asarray(offsets[1:], dtype=np.int64)

    def cosines(ids: np.ndarray) -> np.ndarray:
        """Clamped cosines of global ids. ``ids`` starts with V (``v_ids``, whose inner products
        the searches returned); taken per engine, each engine's V rows still come first, so their
        known dots go along as in ``Engine._search``."""
        which = np.searchsorted(bounds, ids, side="right")
        out = np.zeros(ids.size, dtype=np.float64)
        n_v = v_ids.size if np.array_equal(ids[: v_ids.size], v_ids) else 0
        for i, e in enumerate(engines):
            at = np.flatnonzero(which == i)
            if at.size:
                known = v_scores_all[at[at < n_v]].astype(np.float32)
                out[at] = e.cosine_scores(q if use_v else None, ids[at] - offsets[i], known)
        return out

    if v_ids.size and k_ids.size:  # 0 < alpha < 1: fuse (as Engine._search does)
        ids, scores = fuse_candidates(
            plan.fusion, v_ids, v_scores_all, k_ids, k_scores_all, plan.alpha, cosines,
            SCORE_NORMALISATION,
        )  # fmt: skip
    else:
        ids = v_ids[:depth] if v_ids.size else k_ids[:depth]
        scores = cosines(ids)
    if ids.size == 0:
        return []
    which = np.searchsorted(bounds, ids, side="right")
    out = []
    for gid, w, s in zip(ids.tolist(), which.tolist(), scores.tolist()):
        if plan.min_score is not None and s < plan.min_score:
            continue
        name, engine = targets[w]
        out.append(engine.result_doc(gid - offsets[w], float(s), name))
        if len(out) >= want:
            break
    return out

"""What the query paths share around an engine's search: embedding beside the keyword search,
the keyword prefetch that makes possible, timing, and §3.7 grouping of hits and documents.

A text query needs both a query vector (~4 ms of onnxruntime, which releases the GIL) and a
keyword (K) list, which needs no vector: :func:`embed_beside` runs the keyword side on a worker
thread meanwhile, and a :class:`KeywordPrefetch` records which engine version its K list came from,
so the query can drop it if a write landed in between. :meth:`moss.engine.Engine.query` and
``query_multi_index`` (:mod:`moss.runtime`) both work this way, and both group hits with
:func:`group_hits` (docs/api.md §3.7); :func:`group_documents` is the ``get_docs`` side of §3.7.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from .grouping import group_units, order_members, sort_rows
from .types import DocumentInfo, ParentGrouping, QueryResultDocumentInfo, SearchResult

if TYPE_CHECKING:
    from .embedding import Embedder

__all__ = ["KeywordPrefetch", "embed_beside", "group_documents", "group_hits", "timed"]

T = TypeVar("T")


@dataclass(frozen=True)
class KeywordPrefetch:
    """The filter mask and keyword (K) list of a query, and the engine version they were read at."""

    version: int
    allowed: np.ndarray | None
    k_rows: np.ndarray
    k_scores: np.ndarray


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _worker_pool() -> ThreadPoolExecutor:
    """Worker threads that search keywords while the calling thread embeds the query text."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="moss-query")
        return _POOL


def embed_beside(embedder: Embedder, text: str, job: Callable[[], T]) -> tuple[np.ndarray, T]:
    """Embed the query ``text`` on this thread while a worker runs ``job`` (the keyword side,
    which needs no vector): onnxruntime releases the GIL for the ~4 ms of the embedding.

    Not the other way round: a worker that embeds cannot start until this thread lets go of the
    GIL, and its vector then has to be handed back (docs/performance.md). An error of either
    side is raised once both have finished.
    """
    future = _worker_pool().submit(job)
    try:
        q = embedder.embed_query(text)
    finally:
        got = future.result()
    return q, got


def timed(result: SearchResult, start: float) -> SearchResult:
    """``result`` with ``time_taken_ms`` measured from ``start`` (a ``time.perf_counter()``)."""
    ms = round((time.perf_counter() - start) * 1000.0)
    return SearchResult(result.docs, result.query, result.index_name, ms, result.model_id)


def _units(
    metadatas: list[dict[str, str] | None], ids: list[str], group_by: ParentGrouping
) -> list[tuple[str, list[int]]]:
    """§3.7 units in order of their first member: (key, members ordered by the order field)."""
    parents = [(m or {}).get(group_by.parent_field) for m in metadatas]
    order_vals = [(m or {}).get(group_by.order_field) for m in metadatas]
    return [
        (unit.key, order_members(unit.members, order_vals)) for unit in group_units(parents, ids)
    ]


def group_hits(
    docs: list[QueryResultDocumentInfo], group_by: ParentGrouping
) -> list[QueryResultDocumentInfo]:
    """§3.7 in query: units of hit members; score = best member score, position = best member's."""
    out = []
    for key, members in _units([d.metadata for d in docs], [d.id for d in docs], group_by):
        first = docs[members[0]]
        text = "\n".join(docs[m].text for m in members)
        best = max(docs[m].score for m in members)
        out.append(
            QueryResultDocumentInfo(
                key, text, first.metadata, best, first.index_name, first.payload
            )
        )
    return out


def group_documents(
    docs: list[DocumentInfo], group_by: ParentGrouping, sort_by: str | None, ascending: bool
) -> list[DocumentInfo]:
    """§3.7 in get_documents: one document per unit, then ``sort_by`` over the units."""
    out = []
    for key, members in _units([d.metadata for d in docs], [d.id for d in docs], group_by):
        first = docs[members[0]]
        text = "\n".join(docs[m].text for m in members)
        out.append(DocumentInfo(key, text, first.metadata, None, first.payload))
    if sort_by is not None:
        order = sort_rows([(d.metadata or {}).get(sort_by) for d in out], ascending)
        out = [out[i] for i in order]
    return out

"""The in-memory index behind sessions and loaded indexes.

An :class:`Engine` keeps documents in *rows* kept in index order: a new id appends a row, an update
overwrites its row in place (so it keeps its place), a delete leaves a tombstone that compaction
later squeezes out while preserving order. Four parallel structures are keyed by row:

* the documents themselves (id, text, metadata, payload) in Python lists;
* :class:`~moss.vectors.VectorIndex` — float32 vectors, exact or HNSW search by inner product;
* :class:`~moss.keyword.BM25Index` — BM25 over live content;
* :class:`~moss.filters.MetadataColumns` — columnar metadata for vectorised filters.

Concurrency: writers are serialised by ``_write_lock`` and do all slow work (validation, embedding,
analysis) *before* taking ``_lock``, under which they only apply prepared data. Readers take
``_lock`` for the search itself, so a query sees the index entirely before or after a write, never
half of it, and embedding a query never blocks a writer.
"""

from __future__ import annotations

import math
import numbers
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

import numpy as np

from .analysis import analyze, analyze_many
from .errors import DESERIALIZATION, InvalidArgumentError, MossError
from .filters import MetadataColumns, MetadataFilter, compile_filter
from .fusion import Normalisation, fuse_candidates
from .grouping import group_units, order_members, sort_rows
from .keyword import BM25Index
from .snapshot import SnapshotData
from .texts import TextColumn
from .types import (
    DocumentInfo,
    GetDocumentsOptions,
    ParentGrouping,
    QueryOptions,
    QueryResultDocumentInfo,
    SearchResult,
)
from .vectors import VectorIndex

T = TypeVar("T")

if TYPE_CHECKING:
    from .embedding import Embedder

__all__ = ["CUSTOM", "Engine", "QueryPlan", "as_vector", "group_hits", "validate_query_options"]

CUSTOM = "custom"
DEFAULT_TOP_K = 5
DEFAULT_ALPHA = 0.8
# Score fusion takes at least SCORE_FUSION_MIN_DEPTH vector and SCORE_FUSION_MIN_DEPTH_K keyword
# candidates (0 = the contract's depth D) and maps each score by its theoretical range (clamped
# cosine, computed for every candidate; BM25 / the query's maximum BM25). Chosen on the SciFact
# train split at the default alpha (docs/fusion.md).
SCORE_FUSION_MIN_DEPTH = 0
SCORE_FUSION_MIN_DEPTH_K = 0
SCORE_NORMALISATION: Normalisation = "theoretical"
_COMPACT_MIN_DEAD = 1024


@dataclass(frozen=True)
class QueryPlan:
    """Validated query options with defaults applied."""

    top_k: int
    alpha: float
    depth: int
    fusion: Literal["score", "rrf"]
    flt: MetadataFilter | None
    group_by: ParentGrouping | None
    min_score: float | None
    embedding: np.ndarray | None


def _check_number(name: str, value: object, *, integer: bool = False) -> float:
    # numbers.Real/Integral admit numpy scalars too (np.int64 is not an int subclass)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        kind = "an integer" if integer else "a number"
        raise InvalidArgumentError(f"{name} must be {kind}, not {type(value).__name__}")
    if math.isnan(float(value)):
        raise InvalidArgumentError(f"{name} must not be NaN")
    if integer and not isinstance(value, numbers.Integral):
        raise InvalidArgumentError(f"{name} must be an integer, not {value!r}")
    return float(value)


def as_vector(value: object, dim: int | None, what: str = "embedding") -> np.ndarray:
    """Convert a caller's vector to float32, checking shape, length and finiteness."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as e:  # OverflowError: an int over 1e308
        raise InvalidArgumentError(f"{what} must be a sequence of numbers") from e
    if arr.ndim != 1 or arr.size == 0:
        raise InvalidArgumentError(f"{what} must be a non-empty 1-D sequence of numbers")
    if dim is not None and arr.size != dim:
        detail = f"Invalid embedding length: expected {dim} but received {arr.size}."
        raise InvalidArgumentError(detail, detail=detail)
    if not np.isfinite(arr).all():
        raise InvalidArgumentError(
            f"{what} contains NaN or infinite values",
            detail="Invalid embedding: values must be finite.",
        )
    return arr.astype(np.float32)


def validate_query_options(
    options: QueryOptions | None, dim: int | None, *, default_top_k: int = DEFAULT_TOP_K
) -> QueryPlan:
    """Check every option of §3.4/§3.6 and apply defaults (raises InvalidArgumentError)."""
    o = options if options is not None else QueryOptions()
    if not isinstance(o, QueryOptions):
        raise InvalidArgumentError(f"options must be QueryOptions, not {type(o).__name__}")
    top_k = default_top_k
    if o.top_k is not None:
        top_k = int(_check_number("top_k", o.top_k, integer=True))
        if top_k < 0:
            raise InvalidArgumentError(f"top_k must be >= 0, got {top_k}")
    alpha = DEFAULT_ALPHA
    if o.alpha is not None:
        alpha = _check_number("alpha", o.alpha)
        if not 0.0 <= alpha <= 1.0:
            raise InvalidArgumentError(f"alpha must be between 0.0 and 1.0, got {o.alpha}")
    min_score = None
    if o.min_score is not None:
        min_score = _check_number("min_score", o.min_score)
        if not 0.0 <= min_score <= 1.0:
            raise InvalidArgumentError(f"min_score must be between 0.0 and 1.0, got {o.min_score}")
    depth = 2 * top_k
    if o.candidate_depth is not None:
        cd = int(_check_number("candidate_depth", o.candidate_depth, integer=True))
        if cd < 1:
            raise InvalidArgumentError(f"candidate_depth must be >= 1, got {cd}")
        depth = cd
    depth = max(depth, top_k)
    fusion = o.fusion if o.fusion is not None else "score"
    if fusion not in ("score", "rrf"):
        raise InvalidArgumentError(f"fusion must be 'score' or 'rrf', not {fusion!r}")
    flt = compile_filter(o.filter) if o.filter is not None else None
    if o.group_by is not None and not isinstance(o.group_by, ParentGrouping):
        raise InvalidArgumentError("group_by must be a ParentGrouping")
    embedding = as_vector(o.embedding, dim) if o.embedding is not None else None
    return QueryPlan(top_k, alpha, depth, fusion, flt, o.group_by, min_score, embedding)


class Engine:
    """A mutable in-memory hybrid index (thread-safe). See the module docstring."""

    def __init__(
        self,
        model_id: str,
        dimension: int | None = None,
        *,
        embedder: Embedder | None = None,
        name: str | None = None,
    ) -> None:
        self.model_id = model_id
        self.name = name
        self.embedder = embedder
        self.dimension = embedder.dimension if embedder is not None else dimension
        self._ids: list[str | None] = []
        self._texts = TextColumn()  # UTF-8 bytes, decoded when read (moss.texts)
        self._metas: list[dict[str, str] | None] = []
        self._payloads: list[str | None] = []
        self._row_of: dict[str, int] = {}
        self._live = np.zeros(0, dtype=bool)
        self._vectors: VectorIndex | None = (
            VectorIndex(self.dimension) if self.dimension is not None else None
        )
        self._bm25 = BM25Index()
        # Built on the first filtered query: most indexes are never filtered, and building the
        # columns costs ~2 us per document (0.2 s of a 100k-document load).
        self._columns: MetadataColumns | None = None
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self.version = 0  # bumped by every applied change

    # ------------------------------------------------------------------ properties

    @property
    def is_custom(self) -> bool:
        return self.model_id == CUSTOM

    @property
    def doc_count(self) -> int:
        return len(self._row_of)

    def _embedder(self) -> Embedder:
        if self.embedder is None:
            from .embedding import get_embedder

            self.embedder = get_embedder(self.model_id)
        return self.embedder

    # ------------------------------------------------------------------ writes

    def add_documents(
        self, docs: Sequence[DocumentInfo], *, upsert: bool = True
    ) -> tuple[int, int]:
        """Insert or replace normalised ``docs``, all or nothing; returns ``(added, updated)``."""
        with self._write_lock:
            plan, added, updated = self._plan_upsert(docs, upsert)
            if not plan:
                return added, updated
            final = list(plan.values())
            vectors = self._vectors_for(final)
            tokens = analyze_many([d.text for d in final])
            with self._lock:
                self._apply(final, vectors, tokens)
            self._schedule_flush()
            return added, updated

    def _plan_upsert(
        self, docs: Sequence[DocumentInfo], upsert: bool
    ) -> tuple[dict[str, DocumentInfo], int, int]:
        """Replay the batch one by one against current ids: the final version of each touched id.

        Dict assignment keeps a key's first position, so new ids keep first-seen order.
        """
        plan: dict[str, DocumentInfo] = {}
        added = updated = 0
        for d in docs:
            if d.id not in plan and d.id not in self._row_of:
                added += 1
                plan[d.id] = d
            elif upsert:
                updated += 1
                plan[d.id] = d
        return plan, added, updated

    def _vectors_for(self, docs: list[DocumentInfo]) -> np.ndarray:
        if not self.is_custom:
            out = self._embedder().embed_documents([d.text for d in docs])
            return np.ascontiguousarray(out, dtype=np.float32)
        missing = [d.id for d in docs if d.embedding is None]
        if missing:
            shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise InvalidArgumentError(
                "the custom model needs an embedding on every document; "
                f"missing for {len(missing)} document(s): {shown}"
            )
        dim = self.dimension
        rows = []
        for d in docs:
            v = as_vector(d.embedding, dim, f"embedding of document {d.id!r}")
            dim = v.size
            rows.append(v)
        return np.ascontiguousarray(np.stack(rows), dtype=np.float32)

    def _apply(
        self, docs: list[DocumentInfo], vectors: np.ndarray, tokens: list[list[str]]
    ) -> None:
        if self.dimension is None:
            self.dimension = int(vectors.shape[1])
        if self._vectors is None:
            self._vectors = VectorIndex(self.dimension)
        n0 = len(self._ids)
        rows = np.empty(len(docs), dtype=np.int64)
        updated_rows = []
        nxt = n0
        for i, d in enumerate(docs):
            row = self._row_of.get(d.id)
            if row is None:
                row = nxt
                nxt += 1
                self._ids.append(d.id)
                self._texts.append(d.text)
                self._metas.append(d.metadata)
                self._payloads.append(d.payload)
                self._row_of[d.id] = row
            else:
                updated_rows.append(row)
                self._texts[row] = d.text
                self._metas[row] = d.metadata
                self._payloads[row] = d.payload
            rows[i] = row
        if nxt > self._live.size:
            live = np.zeros(max(nxt, 2 * self._live.size, 64), dtype=bool)
            live[: self._live.size] = self._live
            self._live = live
        self._live[rows] = True
        if updated_rows:
            self._bm25.remove(np.asarray(updated_rows, dtype=np.int64))
        self._bm25.add(rows, tokens)
        self._vectors.set(rows, vectors)
        if self._columns is not None:
            self._columns.set(rows, [d.metadata for d in docs])
        self.version += 1

    def delete(self, ids: Sequence[str]) -> int:
        """Remove ``ids`` (unknown ones ignored); returns the number removed."""
        with self._write_lock, self._lock:
            rows = sorted({self._row_of[i] for i in ids if i in self._row_of})
            if not rows:
                return 0
            arr = np.asarray(rows, dtype=np.int64)
            for r in rows:
                doc_id = self._ids[r]
                assert doc_id is not None
                del self._row_of[doc_id]
                self._ids[r] = None
                self._texts[r] = ""
                self._metas[r] = None
                self._payloads[r] = None
            self._live[arr] = False
            self._bm25.remove(arr)
            if self._vectors is not None:
                self._vectors.remove(arr)
            if self._columns is not None:
                self._columns.remove(arr)
            self.version += 1
            dead = len(self._ids) - len(self._row_of)
            if dead >= _COMPACT_MIN_DEAD and dead * 4 >= len(self._ids):
                self._compact()
            return len(rows)

    def _compact(self) -> None:
        n = len(self._ids)
        live = self._live[:n]
        old_to_new = np.full(n, -1, dtype=np.int64)
        old_to_new[live] = np.arange(int(live.sum()), dtype=np.int64)
        keep = np.flatnonzero(live).tolist()
        self._ids = [self._ids[r] for r in keep]
        self._texts = self._texts.take(keep)
        self._metas = [self._metas[r] for r in keep]
        self._payloads = [self._payloads[r] for r in keep]
        self._row_of = {doc_id: i for i, doc_id in enumerate(self._ids) if doc_id is not None}
        self._live = np.ones(len(keep), dtype=bool)
        self._bm25.remap(old_to_new)
        if self._vectors is not None:
            self._vectors.remap(old_to_new)
        if self._columns is not None:
            self._columns.remap(old_to_new)

    # ------------------------------------------------------------------ reads

    def _doc(self, row: int, with_embedding: bool = False) -> DocumentInfo:
        doc_id = self._ids[row]
        assert doc_id is not None
        meta = self._metas[row]
        emb = None
        if with_embedding and self._vectors is not None:
            emb = self._vectors.get(np.asarray([row], dtype=np.int64))[0].tolist()
        return DocumentInfo(
            doc_id,
            self._texts[row],
            dict(meta) if meta is not None else None,
            emb,
            self._payloads[row],
        )

    def live_rows(self) -> np.ndarray:
        return np.flatnonzero(self._live[: len(self._ids)])

    def get_documents(self, options: GetDocumentsOptions | None = None) -> list[DocumentInfo]:
        """Documents in index order, restricted/sorted/grouped per docs/api.md §3.2 and §3.7."""
        o = options if options is not None else GetDocumentsOptions()
        if not isinstance(o, GetDocumentsOptions):
            raise InvalidArgumentError(
                f"options must be GetDocumentsOptions, not {type(o).__name__}"
            )
        flt = compile_filter(o.filter) if o.filter is not None else None
        if o.doc_ids is not None and (
            isinstance(o.doc_ids, (str, bytes)) or not all(isinstance(i, str) for i in o.doc_ids)
        ):
            raise InvalidArgumentError("doc_ids must be a list of strings")
        if o.group_by is not None and not isinstance(o.group_by, ParentGrouping):
            raise InvalidArgumentError("group_by must be a ParentGrouping")
        with self._lock:
            if o.doc_ids is not None:
                rows = sorted({self._row_of[i] for i in o.doc_ids if i in self._row_of})
            else:
                rows = self.live_rows().tolist()
            if flt is not None:
                rows = [r for r in rows if flt.matches(self._metas[r])]
            docs = [self._doc(r) for r in rows]
        ascending = True if o.ascending is None else bool(o.ascending)
        if o.group_by is not None:
            return _group_documents(docs, o.group_by, o.sort_by, ascending)
        if o.sort_by is not None:
            order = sort_rows([(d.metadata or {}).get(o.sort_by) for d in docs], ascending)
            docs = [docs[i] for i in order]
        return docs

    def vectors_of(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Copies of the stored vectors of those ``ids`` that exist (MMR in moss.integrations)."""
        with self._lock:
            found = [(i, self._row_of[i]) for i in dict.fromkeys(ids) if i in self._row_of]
            if not found or self._vectors is None:
                return {}
            vecs = self._vectors.get(np.asarray([r for _, r in found], dtype=np.int64))
        return {doc_id: vecs[n] for n, (doc_id, _) in enumerate(found)}

    def snapshot_rows(self) -> tuple[list[DocumentInfo], np.ndarray | None]:
        """A consistent copy of all live documents and their vectors, in index order."""
        with self._lock:
            rows = self.live_rows()
            docs = [self._doc(int(r)) for r in rows]
            vecs = self._vectors.get(rows) if self._vectors is not None and rows.size else None
            return docs, vecs

    # ------------------------------------------------------------------ snapshots

    def to_snapshot(self, name: str | None = None) -> SnapshotData:
        """A consistent, self-contained copy of the index for :mod:`moss.snapshot`."""
        with self._write_lock, self._lock:
            return self._snapshot(name, copy_matrix=True)

    def write_snapshot(self, write: Callable[[SnapshotData], T], name: str | None = None) -> T:
        """``write(snapshot)`` with the vectors *not* copied: the snapshot views the live matrix,
        and the write lock is held until ``write`` returns, so writers wait for it and queries do
        not. For saves to disk, which ``SessionIndex`` already keeps apart from its writes; an
        upload, which may be slow, takes :meth:`to_snapshot` instead."""
        with self._write_lock:
            with self._lock:
                data = self._snapshot(name, copy_matrix=False)
            return write(data)

    def _snapshot(self, name: str | None, copy_matrix: bool) -> SnapshotData:
        """Hold ``_write_lock`` and ``_lock``; see ``to_snapshot`` and ``write_snapshot``."""
        if len(self._row_of) < len(self._ids):
            self._compact()
        arrays: dict[str, np.ndarray] = {}
        matrix = None
        # Only the matrix may need a copy: rows are overwritten in place by upserts. The other
        # arrays are fresh, or views of memory the indexes never write again (a loaded graph's
        # bytes; BM25's merged postings, which later writes replace or append past).
        if self._vectors is not None:
            vec = self._vectors.to_arrays()
            view = vec.pop("matrix")[: len(self._ids)]
            matrix = np.array(view, dtype=np.float32) if copy_matrix else view
            arrays.update({f"vec/{k}": v for k, v in vec.items()})
        arrays.update({f"bm25/{k}": v for k, v in self._bm25.to_arrays().items()})
        model = None
        if self.embedder is not None:
            model = {
                "artifact_version": self.embedder.artifact_version,
                "manifest_sha256": self.embedder.manifest_sha256,
            }
        return SnapshotData(
            model_id=self.model_id,
            dimension=self.dimension,
            ids=[i for i in self._ids if i is not None],
            texts=self._texts.copy(),
            metadata=[dict(m) if m is not None else None for m in self._metas],
            payloads=list(self._payloads),
            vectors=matrix if matrix is not None and len(self._ids) else None,
            arrays=arrays,
            model=model,
            extra={"name": name if name is not None else self.name},
        )

    @classmethod
    def from_snapshot(
        cls,
        data: SnapshotData,
        *,
        rebuild_legacy: bool = True,
        embedder: Embedder | None = None,
        name: str | None = None,
    ) -> Engine:
        """Rebuild an engine from a snapshot without re-embedding (unless the model differs).

        Vectors recorded with no model identity, or with another artifact than the local model,
        are re-embedded when ``rebuild_legacy`` is true and rejected with DESERIALIZATION otherwise.
        """
        model_id = data.model_id
        if model_id != CUSTOM and embedder is None:
            from .embedding import get_embedder

            embedder = get_embedder(model_id)
        if embedder is not None:
            recorded = (data.model or {}).get("manifest_sha256")
            usable = (
                recorded == embedder.manifest_sha256
                and data.dimension == embedder.dimension
                and (data.vectors is not None or not data.ids)
            )
            if not usable:
                if not rebuild_legacy:
                    raise MossError(
                        f"snapshot vectors were made by another model artifact ({recorded}) than "
                        f"the local {model_id!r} ({embedder.manifest_sha256}); pass "
                        "rebuild_legacy=True to re-embed them locally",
                        code=DESERIALIZATION,
                    )
                eng = cls(model_id, embedder=embedder, name=name)
                eng.add_documents(
                    [
                        DocumentInfo(i, t, m, None, p)
                        for i, t, m, p in zip(data.ids, data.texts, data.metadata, data.payloads)
                    ]
                )
                return eng
        eng = cls(model_id, data.dimension, embedder=embedder, name=name)
        if data.ids:
            if data.vectors is None:
                raise MossError("snapshot has documents but no vectors", code=DESERIALIZATION)
            eng._load(data)
        return eng

    def _load(self, data: SnapshotData) -> None:
        n = len(data.ids)
        ids: list[str | None] = list(data.ids)
        self._ids = ids
        # Shallow copies: the snapshot may be loaded twice.
        texts = data.texts
        self._texts = (
            texts.copy() if isinstance(texts, TextColumn) else TextColumn.from_texts(texts)
        )
        self._metas = list(data.metadata)
        self._payloads = list(data.payloads)
        self._row_of = {d: i for i, d in enumerate(data.ids)}
        if len(self._row_of) != n:
            raise MossError("snapshot has duplicate document ids", code=DESERIALIZATION)
        self._live = np.ones(n, dtype=bool)
        rows = np.arange(n, dtype=np.int64)
        vec = {k[4:]: v for k, v in data.arrays.items() if k.startswith("vec/")}
        bm25 = {k[5:]: v for k, v in data.arrays.items() if k.startswith("bm25/")}
        try:
            assert data.vectors is not None and self.dimension is not None
            self._vectors = VectorIndex.from_arrays({"matrix": data.vectors, **vec})
            if bm25:
                self._bm25 = BM25Index.from_arrays(bm25)
            else:  # a snapshot from another producer: rebuild the keyword index from the texts
                self._bm25.add(rows, analyze_many(self._texts))
        except MossError:
            raise
        except (KeyError, ValueError, IndexError, TypeError, AssertionError) as e:
            raise MossError(
                "snapshot index arrays are damaged", code=DESERIALIZATION, detail=str(e)
            ) from e
        self.version += 1
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        """Fold newly added vectors into the HNSW graph on a background thread.

        Adds put rows in the vector index's exact tail so that writing stays sub-millisecond;
        the graph insertion (~0.1-0.4 ms per row) happens here, off the caller's path, in small
        chunks that a concurrent query waits on for at most a few milliseconds.
        """
        vec = self._vectors
        if vec is None or (self._flusher is not None and self._flusher.is_alive()):
            return
        if not vec.flush_due():
            return  # nothing to fold, or a tail short enough to wait (VectorIndex.flush)
        self._flusher = threading.Thread(
            target=vec.flush, kwargs={"background": True}, name="moss-vector-flush", daemon=True
        )
        self._flusher.start()

    def wait_for_background_work(self) -> None:
        """Block until pending vectors are folded into the graph (benchmarks, tests)."""
        t = self._flusher
        if t is not None:
            t.join()

    # ------------------------------------------------------------------ query

    def query(
        self,
        text: str,
        options: QueryOptions | None = None,
        *,
        index_name: str | None = None,
        default_top_k: int = DEFAULT_TOP_K,
    ) -> SearchResult:
        """Hybrid search, docs/api.md §3.4 (validation, filter, fusion, score, min_score)."""
        start = time.perf_counter()
        if not isinstance(text, str):
            raise InvalidArgumentError(f"query must be a str, not {type(text).__name__}")
        plan = validate_query_options(options, self.dimension, default_top_k=default_top_k)
        name = index_name if index_name is not None else self.name
        blank = not text.strip()
        if plan.min_score is not None and plan.alpha == 0.0:
            raise InvalidArgumentError("min_score cannot be used with alpha 0 (keyword-only query)")
        empty = SearchResult([], text, name, None, self.model_id)
        if plan.top_k == 0 or (blank and plan.embedding is None):
            return _timed(empty, start)
        keywords = plan.alpha < 1.0 and not blank
        terms: list[str] = []
        q = plan.embedding
        pre: _KeywordPrefetch | None = None
        if q is None and plan.alpha > 0.0:
            if self.is_custom:
                raise InvalidArgumentError(
                    f"index {name!r} uses custom embeddings and cannot embed text queries: "
                    "pass QueryOptions(embedding=...) or use alpha=0"
                )
            embedder = self._embedder()
            if keywords and plan.group_by is None:
                q, (terms, pre) = embed_beside(
                    embedder, text, lambda: self._prefetch_keywords_locked(plan, text)
                )
            else:
                terms = analyze(text) if keywords else []
                q = embedder.embed_query(text)
        elif keywords:
            terms = analyze(text)
        with self._lock:
            if pre is not None and pre.version != self.version:
                pre = None  # a write landed meanwhile: take both lists from one version
            docs = [self.result_doc(r, s, name) for r, s in self._search(plan, q, terms, pre)]
        if plan.group_by is not None:
            docs = group_hits(docs, plan.group_by)[: plan.top_k]
        return _timed(SearchResult(docs, text, name, None, self.model_id), start)

    def candidate_lists(
        self,
        plan: QueryPlan,
        q: np.ndarray | None,
        terms: list[str],
        depth: int,
        k_depth: int | None = None,
        pre: _KeywordPrefetch | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Raw V (``depth`` long) and K (``k_depth``, default ``depth``) lists, best first, after
        the filter; ``pre`` supplies the filter mask and K computed earlier on this same version.
        Hold ``_lock``."""
        allowed = pre.allowed if pre is not None else self._allowed(plan)
        v_rows = k_rows = np.zeros(0, np.int64)
        v_scores = k_scores = np.zeros(0, np.float32)
        vec = self._vectors
        if plan.alpha > 0.0 and q is not None and vec is not None and len(vec) > 0:
            v_rows, v_scores = vec.search(q, depth, allowed)
        if pre is not None:
            k_rows, k_scores = pre.k_rows, pre.k_scores
        elif plan.alpha < 1.0 and terms:
            k_depth = depth if k_depth is None else k_depth
            k_rows, k_scores = self._bm25.search(terms, k_depth, allowed)
        return v_rows, v_scores, k_rows, k_scores

    def _allowed(self, plan: QueryPlan) -> np.ndarray | None:
        if plan.flt is None:
            return None
        n = len(self._ids)
        return self._metadata_columns().evaluate(plan.flt, n) & self._live[:n]

    def _depths(self, plan: QueryPlan) -> tuple[int, int, int]:
        """(D, vector list depth, keyword list depth) for this query on the current contents."""
        grouped = plan.group_by is not None
        depth = max(plan.depth, len(self._ids)) if grouped else plan.depth
        v_deep = k_deep = depth
        if plan.fusion == "score" and 0.0 < plan.alpha < 1.0:
            v_deep = max(depth, SCORE_FUSION_MIN_DEPTH)
            k_deep = max(depth, SCORE_FUSION_MIN_DEPTH_K)
        return depth, v_deep, k_deep

    def _prefetch_keywords(self, plan: QueryPlan, terms: list[str]) -> _KeywordPrefetch:
        """The filter mask and K list of a query, tagged with the version they came from."""
        allowed = self._allowed(plan)
        k_rows, k_scores = self._bm25.search(terms, self._depths(plan)[2], allowed)
        return _KeywordPrefetch(self.version, allowed, k_rows, k_scores)

    def _prefetch_keywords_locked(
        self, plan: QueryPlan, text: str
    ) -> tuple[list[str], _KeywordPrefetch | None]:
        """The query's terms, and its keyword prefetch when it has any terms."""
        terms = analyze(text)
        if not terms:
            return terms, None
        with self._lock:
            return terms, self._prefetch_keywords(plan, terms)

    def _metadata_columns(self) -> MetadataColumns:
        """The columnar metadata, built on first use (hold ``_lock``)."""
        if self._columns is None:
            cols = MetadataColumns()
            live = self.live_rows()
            cols.set(live, [self._metas[r] for r in live.tolist()])
            self._columns = cols
        return self._columns

    def keyword_scores(self, text: str, ids: Sequence[str]) -> list[float | None]:
        """The keyword term of score fusion for each of ``ids``, as a query ``text`` would see it.

        That is the document's BM25 score for ``text`` as a fraction of the best score the query
        could reach (0 to 1, docs/fusion.md): 0.0 for a document that contains no query term, and
        ``None`` for an id that is not in the index. The BM25 statistics are those of the index
        now; the query's own ranking is unchanged (``QueryResultDocumentInfo.score`` stays the
        cosine), so a caller can show both numbers of a hit.

        Raises:
            InvalidArgumentError: ``text`` is not a str or ``ids`` is not a list of strings.
        """
        if not isinstance(text, str):
            raise InvalidArgumentError(f"query must be a str, not {type(text).__name__}")
        if (
            isinstance(ids, (str, bytes))
            or not isinstance(ids, Sequence)
            or not all(isinstance(i, str) for i in ids)
        ):
            raise InvalidArgumentError("ids must be a list of strings")
        terms = analyze(text)
        with self._lock:
            row_of = self._row_of
            rows = [row_of.get(i, -1) for i in ids]
            if terms and rows:
                frac = self.keyword_fraction(terms, self._bm25.scores_for(terms, rows)).tolist()
            else:
                frac = [0.0] * len(rows)
        return [None if r < 0 else float(f) for r, f in zip(rows, frac)]

    def keyword_fraction(self, terms: list[str], k_scores: np.ndarray) -> np.ndarray:
        """BM25 scores as fractions of the query's maximum attainable score, in [0, 1)."""
        top = self._bm25.max_score(terms)
        if top <= 0.0:
            return np.zeros(k_scores.size, dtype=np.float64)
        return np.asarray(k_scores, dtype=np.float64) / top

    def has_vectors(self) -> bool:
        return self._vectors is not None and len(self._vectors) > 0

    def cosine_scores(
        self, q: np.ndarray | None, rows: np.ndarray, known_dots: np.ndarray | None = None
    ) -> np.ndarray:
        """``clamp(cosine(q, v_row), 0, 1)`` for each row (zeros without a query vector).

        ``known_dots``: the inner products of the first ``known_dots.size`` rows with ``q``, as
        the vector search returned them (the same float32 numbers ``VectorIndex.dot`` gives);
        only the other rows' inner products are computed.
        """
        vec = self._vectors
        if q is None or vec is None or rows.size == 0:
            return np.zeros(rows.size, dtype=np.float64)
        return vec.clamped_cosines(q, rows.astype(np.int64, copy=False), known_dots)

    def _search(
        self,
        plan: QueryPlan,
        q: np.ndarray | None,
        terms: list[str],
        pre: _KeywordPrefetch | None = None,
    ) -> list[tuple[int, float]]:
        use_v = plan.alpha > 0.0 and q is not None and self.has_vectors()
        if plan.min_score is not None and not use_v:
            raise InvalidArgumentError(
                "min_score cannot be used on a keyword-only query (alpha 0 or no vectors)"
            )
        grouped = plan.group_by is not None
        # grouping needs every member hit; no query returns more rows than there are (a top_k
        # of 2**60 would otherwise size the fused output buffer)
        want = len(self._ids) if grouped else min(plan.top_k, len(self._ids))
        depth, v_deep, k_deep = self._depths(plan)
        qv = q if use_v else None
        v_rows, v_scores, k_rows, k_scores = self.candidate_lists(
            plan, qv, terms, v_deep, k_deep, pre
        )
        if v_rows.size and k_rows.size:  # 0 < alpha < 1: fuse
            if plan.fusion == "score" and SCORE_NORMALISATION == "theoretical":
                if not grouped and self._vectors is not None and qv is not None:
                    fast = self._vectors.fuse_score(
                        qv, v_rows, v_scores, k_rows, k_scores, self._bm25.max_score(terms),
                        plan.alpha, want, plan.min_score,
                    )  # fmt: skip
                    if fast is not None:  # the compiled fusion: the numbers of the code below
                        return list(zip(fast[0].tolist(), fast[1].tolist()))
                k_scores = self.keyword_fraction(terms, k_scores)
            rows, cos = fuse_candidates(
                plan.fusion, v_rows, v_scores, k_rows, k_scores, plan.alpha,
                lambda union: self.cosine_scores(qv, union, v_scores), SCORE_NORMALISATION,
            )  # fmt: skip
        else:
            rows = v_rows[:depth] if v_rows.size else k_rows[:depth]
            cos = self.cosine_scores(qv, rows, v_scores)
        out: list[tuple[int, float]] = []
        for r, s in zip(rows.tolist(), cos.tolist()):
            if plan.min_score is not None and s < plan.min_score:
                continue
            out.append((r, s))
            if len(out) >= want:
                break
        return out

    def result_doc(self, row: int, score: float, index_name: str | None) -> QueryResultDocumentInfo:
        """The hit for ``row`` (hold ``_lock``)."""
        doc_id = self._ids[row]
        assert doc_id is not None
        meta = self._metas[row]
        return QueryResultDocumentInfo(
            doc_id,
            self._texts[row],
            dict(meta) if meta is not None else None,
            score,
            index_name,
            self._payloads[row],
        )


@dataclass(frozen=True)
class _KeywordPrefetch:
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


def _timed(result: SearchResult, start: float) -> SearchResult:
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


def _group_documents(
    docs: list[DocumentInfo], group_by: ParentGrouping, sort_by: str | None, ascending: bool
) -> list[DocumentInfo]:
    out = []
    for key, members in _units([d.metadata for d in docs], [d.id for d in docs], group_by):
        first = docs[members[0]]
        text = "\n".join(docs[m].text for m in members)
        out.append(DocumentInfo(key, text, first.metadata, None, first.payload))
    if sort_by is not None:
        order = sort_rows([(d.metadata or {}).get(sort_by) for d in out], ascending)
        out = [out[i] for i in order]
    return out

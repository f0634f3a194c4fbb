"""The in-memory index behind sessions and loaded indexes.

An :class:`Engine` keeps documents in *rows* kept in index order: a new id appends a row, an update
overwrites its row in place (so it keeps its place), a delete leaves a tombstone that compaction
later squeezes out while preserving order. Four parallel structures are keyed by row:

* :class:`~moss.engine_rows.DocumentRows` — the documents themselves (id, text, metadata,
  payload) and which rows are live;
* :class:`~moss.vectors.VectorIndex` — float32 vectors, exact or HNSW search by inner product;
* :class:`~moss.keyword.BM25Index` — BM25 over live content;
* :class:`~moss.filters.MetadataColumns` — columnar metadata for vectorised filters.

Concurrency: writers are serialised by ``_write_lock`` and do all slow work (validation, embedding,
analysis) *before* taking ``_lock``, under which they only apply prepared data. Readers take
``_lock`` for the search itself, so a query sees the index entirely before or after a write, never
half of it, and embedding a query never blocks a writer.

Around it: :mod:`moss.query_plan` checks query options into a :class:`QueryPlan`;
:mod:`moss.engine_query` holds what the query paths share (embedding beside the keyword search,
§3.7 grouping); :mod:`moss.engine_snapshot` converts the structures to and from snapshots. The
writes, the search itself and the score fusion constants below stay here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from .analysis import analyze, analyze_many
from .engine_query import KeywordPrefetch, embed_beside, group_documents, group_hits, timed
from .engine_rows import DocumentRows
from .engine_snapshot import documents_of, load_structures, snapshot_of, vectors_reusable
from .errors import InvalidArgumentError
from .filters import MetadataColumns, compile_filter
from .fusion import Normalisation, fuse_candidates
from .grouping import sort_rows
from .keyword import BM25Index
from .query_plan import DEFAULT_TOP_K, QueryPlan, as_vector, validate_query_options
from .snapshot import SnapshotData
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

# QueryPlan, as_vector, embed_beside, group_hits and validate_query_options live in
# moss.query_plan and moss.engine_query; they are re-exported here for existing importers.
__all__ = [
    "CUSTOM",
    "Engine",
    "QueryPlan",
    "as_vector",
    "embed_beside",
    "group_hits",
    "validate_query_options",
]

CUSTOM = "custom"
# Score fusion takes at least SCORE_FUSION_MIN_DEPTH vector and SCORE_FUSION_MIN_DEPTH_K keyword
# candidates (0 = the contract's depth D) and maps each score by its theoretical range (clamped
# cosine, computed for every candidate; BM25 / the query's maximum BM25). Chosen on the SciFact
# train split at the default alpha (docs/fusion.md).
SCORE_FUSION_MIN_DEPTH = 0
SCORE_FUSION_MIN_DEPTH_K = 0
SCORE_NORMALISATION: Normalisation = "theoretical"
_COMPACT_MIN_DEAD = 1024


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
        self._rows = DocumentRows()
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
        return self._rows.doc_count

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
            if d.id not in plan and d.id not in self._rows.row_of:
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
        rows, updated_rows = self._rows.put(docs)
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
            arr = self._rows.remove(ids)
            if not arr.size:
                return 0
            self._bm25.remove(arr)
            if self._vectors is not None:
                self._vectors.remove(arr)
            if self._columns is not None:
                self._columns.remove(arr)
            self.version += 1
            n = self._rows.n_rows
            dead = n - self._rows.doc_count
            if dead >= _COMPACT_MIN_DEAD and dead * 4 >= n:
                self._compact()
            return int(arr.size)

    def _compact(self) -> None:
        old_to_new = self._rows.compact()
        self._bm25.remap(old_to_new)
        if self._vectors is not None:
            self._vectors.remap(old_to_new)
        if self._columns is not None:
            self._columns.remap(old_to_new)

    # ------------------------------------------------------------------ reads

    def _doc(self, row: int, with_embedding: bool = False) -> DocumentInfo:
        emb = None
        if with_embedding and self._vectors is not None:
            emb = self._vectors.get(np.asarray([row], dtype=np.int64))[0].tolist()
        return self._rows.document(row, emb)

    def live_rows(self) -> np.ndarray:
        return self._rows.live_rows()

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
            row_of = self._rows.row_of
            if o.doc_ids is not None:
                rows = sorted({row_of[i] for i in o.doc_ids if i in row_of})
            else:
                rows = self.live_rows().tolist()
            if flt is not None:
                metas = self._rows.metas
                rows = [r for r in rows if flt.matches(metas[r])]
            docs = [self._doc(r) for r in rows]
        ascending = True if o.ascending is None else bool(o.ascending)
        if o.group_by is not None:
            return group_documents(docs, o.group_by, o.sort_by, ascending)
        if o.sort_by is not None:
            order = sort_rows([(d.metadata or {}).get(o.sort_by) for d in docs], ascending)
            docs = [docs[i] for i in order]
        return docs

    def vectors_of(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Copies of the stored vectors of those ``ids`` that exist (MMR in moss.integrations)."""
        with self._lock:
            row_of = self._rows.row_of
            found = [(i, row_of[i]) for i in dict.fromkeys(ids) if i in row_of]
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
        if self._rows.doc_count < self._rows.n_rows:
            self._compact()
        return snapshot_of(
            self._rows,
            self._vectors,
            self._bm25,
            model_id=self.model_id,
            dimension=self.dimension,
            embedder=self.embedder,
            name=name if name is not None else self.name,
            copy_matrix=copy_matrix,
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
        if embedder is not None and not vectors_reusable(data, embedder, rebuild_legacy):
            eng = cls(model_id, embedder=embedder, name=name)
            eng.add_documents(documents_of(data))
            return eng
        eng = cls(model_id, data.dimension, embedder=embedder, name=name)
        if data.ids:
            eng._rows, eng._vectors, eng._bm25 = load_structures(data, eng.dimension)
            eng.version += 1
            eng._schedule_flush()
        return eng

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

    def wait_for_background_work(self) -> bool:
        """Block until pending vectors are folded into the graph. True when a background fold
        ran since this engine was made: its snapshot now differs from the one it came from."""
        t = self._flusher
        if t is not None:
            t.join()
        return t is not None

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
            return timed(empty, start)
        keywords = plan.alpha < 1.0 and not blank
        terms: list[str] = []
        q = plan.embedding
        pre: KeywordPrefetch | None = None
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
        return timed(SearchResult(docs, text, name, None, self.model_id), start)

    def candidate_lists(
        self,
        plan: QueryPlan,
        q: np.ndarray | None,
        terms: list[str],
        depth: int,
        k_depth: int | None = None,
        pre: KeywordPrefetch | None = None,
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
        n = self._rows.n_rows
        return self._metadata_columns().evaluate(plan.flt, n) & self._rows.live[:n]

    def _depths(self, plan: QueryPlan) -> tuple[int, int, int]:
        """(D, vector list depth, keyword list depth) for this query on the current contents."""
        grouped = plan.group_by is not None
        depth = max(plan.depth, self._rows.n_rows) if grouped else plan.depth
        v_deep = k_deep = depth
        if plan.fusion == "score" and 0.0 < plan.alpha < 1.0:
            v_deep = max(depth, SCORE_FUSION_MIN_DEPTH)
            k_deep = max(depth, SCORE_FUSION_MIN_DEPTH_K)
        return depth, v_deep, k_deep

    def _prefetch_keywords(self, plan: QueryPlan, terms: list[str]) -> KeywordPrefetch:
        """The filter mask and K list of a query, tagged with the version they came from."""
        allowed = self._allowed(plan)
        k_rows, k_scores = self._bm25.search(terms, self._depths(plan)[2], allowed)
        return KeywordPrefetch(self.version, allowed, k_rows, k_scores)

    def _prefetch_keywords_locked(
        self, plan: QueryPlan, text: str
    ) -> tuple[list[str], KeywordPrefetch | None]:
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
            metas = self._rows.metas
            cols.set(live, [metas[r] for r in live.tolist()])
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
            row_of = self._rows.row_of
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
        pre: KeywordPrefetch | None = None,
    ) -> list[tuple[int, float]]:
        use_v = plan.alpha > 0.0 and q is not None and self.has_vectors()
        if plan.min_score is not None and not use_v:
            raise InvalidArgumentError(
                "min_score cannot be used on a keyword-only query (alpha 0 or no vectors)"
            )
        grouped = plan.group_by is not None
        # grouping needs every member hit; no query returns more rows than there are (a top_k
        # of 2**60 would otherwise size the fused output buffer)
        n_rows = self._rows.n_rows
        want = n_rows if grouped else min(plan.top_k, n_rows)
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
        return self._rows.hit(row, score, index_name)

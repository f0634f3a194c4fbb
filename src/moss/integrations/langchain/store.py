"""``MossVectorStore``: LangChain's ``VectorStore`` over a moss session or loaded index.

The ``a*`` methods are the implementation (native coroutines over moss's async API, on the
caller's loop); each sync method runs its coroutine on the store's private loop thread
(:class:`~moss.integrations._loop.LoopThread`). See the package docstring for the design.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance

from ...client import MossClient
from ...engine import CUSTOM
from ...errors import InvalidArgumentError, MossError
from ...session import SessionIndex
from ...types import DocumentInfo, QueryOptions
from .._loop import LoopThread
from .._owned import OwnedResources
from .._targets import SessionTarget, target_for, unit
from ._documents import (
    MossEmbeddings,
    encode_metadata,
    moss_filter,
    to_document,
)

__all__ = ["DEFAULT_K", "SEARCH_KWARGS", "MossVectorStore"]

SEARCH_KWARGS = ("alpha", "filter", "fusion", "min_score", "candidate_depth")
DEFAULT_K = 4  # LangChain's convention


# ---------------------------------------------------------------------------------- store


class MossVectorStore(OwnedResources, VectorStore):
    """A LangChain ``VectorStore`` over a moss session (writable) or a loaded index (read-only).

    Args:
        index: an open :class:`~moss.SessionIndex` (``await client.session(name)``).
        client: a client with the index ``index_name`` loaded (``await client.load_index``);
            give either ``index`` or both of these.
        index_name: the loaded index's name.
        embedding: a LangChain ``Embeddings`` to embed documents and queries with; the session
            must then use ``model_id="custom"``. ``None``: moss's model embeds the text.
        alpha: default weight of the semantic signal, 0 (keyword only) to 1 (vector only);
            ``None`` is moss's default 0.8.
        fusion: default fusion, ``"score"`` (moss's default) or ``"rrf"``.
        normalize: L2-normalise the vectors of ``embedding`` (cosine ranking); default True.

    The search methods accept ``alpha``, ``filter`` (a moss filter, docs/api.md §3.8, or
    ``{"key": value}`` meaning equality), ``fusion``, ``min_score`` and ``candidate_depth`` as
    keyword arguments. Use :meth:`create` / :meth:`acreate` or :meth:`from_texts` to let the
    store open (and later close) its own client and session.
    """

    def __init__(
        self,
        index: SessionIndex | None = None,
        *,
        client: MossClient | None = None,
        index_name: str | None = None,
        embedding: Embeddings | None = None,
        alpha: float | None = None,
        fusion: Literal["score", "rrf"] | None = None,
        normalize: bool = True,
    ) -> None:
        target = target_for("MossVectorStore", index, client, index_name)
        if embedding is not None and not isinstance(embedding, Embeddings):
            raise InvalidArgumentError(
                f"embedding must be a LangChain Embeddings, not {type(embedding).__name__}"
            )
        if embedding is not None and target.model_id != CUSTOM:
            raise InvalidArgumentError(
                f"index {target.name!r} embeds with {target.model_id!r}; an external "
                "embedding needs a session opened with model_id='custom' (or pass no embedding)"
            )
        self._target = target
        self._embedding = embedding
        self._alpha = alpha
        self._fusion = fusion
        self._normalize = normalize
        self._owned_client: MossClient | None = None
        self._owns_session = False
        self._closed = False
        self._start_loop()

    # ------------------------------------------------------------ opening and closing

    @classmethod
    async def acreate(
        cls,
        index_name: str = "langchain",
        embedding: Embeddings | None = None,
        *,
        client: MossClient | None = None,
        model_id: str | None = None,
        project_id: str | None = None,
        project_key: str | None = None,
        server_url: str | None = None,
        cache_path: str | None = None,
        alpha: float | None = None,
        fusion: Literal["score", "rrf"] | None = None,
        normalize: bool = True,
    ) -> MossVectorStore:
        """Open (create or resume) the session ``index_name`` and wrap it; the store owns it.

        Without ``client`` the store makes one (``project_id`` defaults to env
        ``MOSS_PROJECT_ID`` or ``"default"``, the key to ``MOSS_PROJECT_KEY``; the embedded
        local store unless ``server_url``/``MOSS_SERVER_URL``) and closes it in :meth:`close`.
        With ``embedding`` the session uses ``model_id="custom"``.
        """
        if embedding is not None:
            if model_id not in (None, CUSTOM):
                raise InvalidArgumentError(
                    f"an external embedding needs model_id='custom', not {model_id!r}"
                )
            model_id = CUSTOM
        owned = None
        if client is None:
            owned = client = MossClient(
                project_id or os.environ.get("MOSS_PROJECT_ID") or "default",
                project_key if project_key is not None else os.environ.get("MOSS_PROJECT_KEY", ""),
                server_url=server_url,
                cache_path=cache_path,
            )
        try:
            session = await client.session(index_name, model_id)
            try:
                store = cls(
                    session, embedding=embedding, alpha=alpha, fusion=fusion, normalize=normalize
                )
            except BaseException:
                await session.close()
                raise
        except BaseException:
            if owned is not None:
                await owned.close()
            raise
        store._owned_client = owned
        store._owns_session = True
        return store

    @classmethod
    def create(
        cls, index_name: str = "langchain", embedding: Embeddings | None = None, **kwargs: Any
    ) -> MossVectorStore:
        """:meth:`acreate` for sync code (same arguments), on the store's private loop."""
        loop = LoopThread()
        try:
            store = loop.run(cls.acreate(index_name, embedding, **kwargs))
        except BaseException:
            loop.stop()
            raise
        # The session was opened on this loop: keep it as the store's loop for sync calls.
        store._adopt_loop(loop)
        return store

    def __repr__(self) -> str:
        kind = "session" if self._target.writable else "loaded index"
        return f"<MossVectorStore {kind} {self._target.name!r} model={self._target.model_id!r}>"

    # ------------------------------------------------------------ properties

    @property
    def embeddings(self) -> Embeddings | None:
        """The external ``Embeddings``, else a :class:`MossEmbeddings` of the index's model."""
        if self._embedding is not None:
            return self._embedding
        model = self._target.model_id
        return MossEmbeddings(model) if model != CUSTOM else None

    @property
    def session(self) -> SessionIndex | None:
        """The wrapped session (None over a loaded index)."""
        return self._target.session if isinstance(self._target, SessionTarget) else None

    def _run(self, coro: Any) -> Any:
        if self._closed:
            coro.close()
            raise MossError("MossVectorStore is closed")
        return self._loop.run(coro)

    # ------------------------------------------------------------ writes

    async def _aupsert(
        self,
        texts: Iterable[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None,
        ids: Sequence[str | None] | None,
    ) -> list[str]:
        if not self._target.writable:
            await self._target.add([])  # raises the read-only error
        texts = list(texts)
        if any(not isinstance(t, str) for t in texts):
            raise InvalidArgumentError("texts must be strings")
        if metadatas is not None and len(metadatas) != len(texts):
            raise InvalidArgumentError(
                f"got {len(metadatas)} metadatas for {len(texts)} texts; they must match"
            )
        if ids is not None and len(ids) != len(texts):
            raise InvalidArgumentError(
                f"got {len(ids)} ids for {len(texts)} texts; they must match"
            )
        out = [
            i if isinstance(i, str) and i else uuid.uuid4().hex
            for i in (ids if ids is not None else [None] * len(texts))
        ]
        if not texts:
            return out
        vectors: list[list[float]] | list[None] = [None] * len(texts)
        if self._embedding is not None:
            raw = await self._embedding.aembed_documents(texts)
            vectors = [unit(v) for v in raw] if self._normalize else [list(v) for v in raw]
        docs = []
        for n, (doc_id, text, vector) in enumerate(zip(out, texts, vectors)):
            meta, payload = encode_metadata(doc_id, metadatas[n] if metadatas else None)
            docs.append(DocumentInfo(doc_id, text, meta, vector, payload))
        await self._target.add(docs)
        return out

    async def aadd_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Add or replace texts (missing ids become uuid4 hex); returns the ids in order."""
        _no_kwargs("add_texts", kwargs)
        return await self._aupsert(texts, metadatas, ids)

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Sync :meth:`aadd_texts`."""
        out: list[str] = self._run(self.aadd_texts(texts, metadatas, ids=ids, **kwargs))
        return out

    async def aadd_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """Add or replace documents; ``ids=`` wins over ``Document.id``, else uuid4 hex."""
        ids = kwargs.pop("ids", None)
        _no_kwargs("add_documents", kwargs)
        if ids is None:
            ids = [d.id for d in documents]
        return await self._aupsert(
            [d.page_content for d in documents], [d.metadata for d in documents], ids
        )

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """Sync :meth:`aadd_documents`."""
        out: list[str] = self._run(self.aadd_documents(documents, **kwargs))
        return out

    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete these ids (unknown ones ignored); ``None`` deletes every document."""
        _no_kwargs("delete", kwargs)
        if ids is None:
            if not self._target.writable:
                await self._target.delete([])  # raises the read-only error
            ids = [d.id for d in await self._target.get(None)]
        await self._target.delete(list(ids))
        return True

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Sync :meth:`adelete`."""
        out: bool | None = self._run(self.adelete(ids, **kwargs))
        return out

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The documents with these ids that exist, in index order (``Document.id`` set)."""
        return [to_document(d) for d in await self._target.get(list(ids))]

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Sync :meth:`aget_by_ids`."""
        out: list[Document] = self._run(self.aget_by_ids(ids))
        return out

    # ------------------------------------------------------------ search

    def _options(self, k: int, vector: list[float] | None, kwargs: dict[str, Any]) -> QueryOptions:
        unknown = sorted(set(kwargs) - set(SEARCH_KWARGS))
        if unknown:
            raise InvalidArgumentError(
                f"unknown search argument(s) {', '.join(unknown)}; "
                f"accepted: k, {', '.join(SEARCH_KWARGS)}"
            )
        return QueryOptions(
            embedding=vector,
            top_k=k,
            alpha=kwargs.get("alpha", self._alpha),
            filter=moss_filter(kwargs.get("filter")),
            min_score=kwargs.get("min_score"),
            candidate_depth=kwargs.get("candidate_depth"),
            fusion=kwargs.get("fusion", self._fusion),
        )

    async def _aquery_vector(self, query: str) -> list[float] | None:
        """The query vector when the store embeds (an external ``Embeddings``), else None."""
        if self._embedding is None:
            return None
        vector = await self._embedding.aembed_query(query)
        return unit(vector) if self._normalize else list(vector)

    async def _asearch(
        self, query: str, vector: list[float] | None, k: int, kwargs: dict[str, Any]
    ) -> list[tuple[Document, float]]:
        options = self._options(k, vector, kwargs)
        result = await self._target.query(query, options)
        return [(to_document(d), d.score) for d in result.docs]

    async def asimilarity_search_with_score(
        self, query: str, k: int = DEFAULT_K, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Hybrid search; pairs of document and moss score (clamped cosine in [0, 1])."""
        return await self._asearch(query, await self._aquery_vector(query), k, kwargs)

    def similarity_search_with_score(
        self, query: str, k: int = DEFAULT_K, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Sync :meth:`asimilarity_search_with_score`."""
        out: list[tuple[Document, float]] = self._run(
            self.asimilarity_search_with_score(query, k, **kwargs)
        )
        return out

    async def asimilarity_search(
        self, query: str, k: int = DEFAULT_K, **kwargs: Any
    ) -> list[Document]:
        """Hybrid search (moss ranking: vector and BM25 fused by ``alpha``); the documents."""
        return [d for d, _ in await self.asimilarity_search_with_score(query, k, **kwargs)]

    def similarity_search(self, query: str, k: int = DEFAULT_K, **kwargs: Any) -> list[Document]:
        """Sync :meth:`asimilarity_search`."""
        return [d for d, _ in self.similarity_search_with_score(query, k, **kwargs)]

    async def asimilarity_search_by_vector_with_score(
        self, embedding: list[float], k: int = DEFAULT_K, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Vector-only search with a query vector of the index's dimension; with scores."""
        return await self._asearch("", list(embedding), k, kwargs)

    async def asimilarity_search_by_vector(
        self, embedding: list[float], k: int = DEFAULT_K, **kwargs: Any
    ) -> list[Document]:
        """Vector-only search with a query vector of the index's dimension."""
        return [d for d, _ in await self._asearch("", list(embedding), k, kwargs)]

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = DEFAULT_K, **kwargs: Any
    ) -> list[Document]:
        """Sync :meth:`asimilarity_search_by_vector`."""
        out: list[Document] = self._run(self.asimilarity_search_by_vector(embedding, k, **kwargs))
        return out

    def _select_relevance_score_fn(self) -> Any:
        """moss scores already are relevances in [0, 1] (a clamped cosine): identity."""
        return _identity

    async def _ammr(
        self,
        query: str,
        vector: list[float] | None,
        k: int,
        fetch_k: int,
        lambda_mult: float,
        kwargs: dict[str, Any],
    ) -> list[Document]:
        if vector is None:
            vector = await self._aquery_vector(query)
        if vector is None:  # moss's own model: embed the query once, here
            vector = await MossEmbeddings(self._target.model_id).aembed_query(query)
        hits = await self._asearch(query, vector, max(fetch_k, k), kwargs)
        if not hits:
            return []
        stored = self._target.engine().vectors_of([d.id or "" for d, _ in hits])
        hits = [(d, s) for d, s in hits if d.id in stored]
        picked = maximal_marginal_relevance(
            np.asarray(vector, dtype=np.float32),
            [stored[d.id or ""].tolist() for d, _ in hits],
            lambda_mult=lambda_mult,
            k=k,
        )
        return [hits[i][0] for i in picked]

    async def amax_marginal_relevance_search(
        self,
        query: str,
        k: int = DEFAULT_K,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """Maximal marginal relevance over the top ``fetch_k`` hybrid hits (diverse top ``k``)."""
        return await self._ammr(query, None, k, fetch_k, lambda_mult, kwargs)

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = DEFAULT_K,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """Sync :meth:`amax_marginal_relevance_search`."""
        out: list[Document] = self._run(self._ammr(query, None, k, fetch_k, lambda_mult, kwargs))
        return out

    async def amax_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = DEFAULT_K,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """MMR from a query vector (vector-only candidates)."""
        return await self._ammr("", list(embedding), k, fetch_k, lambda_mult, kwargs)

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = DEFAULT_K,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """Sync :meth:`amax_marginal_relevance_search_by_vector`."""
        out: list[Document] = self._run(
            self._ammr("", list(embedding), k, fetch_k, lambda_mult, kwargs)
        )
        return out

    # ------------------------------------------------------------ constructors

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings | None = None,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> MossVectorStore:
        """A new store (:meth:`create`, same keyword arguments) holding ``texts``.

        ``embedding=None`` uses moss's built-in model. The session is create-or-resume:
        an existing index ``index_name`` keeps its documents and these are upserted.
        """
        store = cls.create(embedding=embedding, **kwargs)
        try:
            store.add_texts(texts, metadatas, ids=ids)
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    async def afrom_texts(
        cls,
        texts: list[str],
        embedding: Embeddings | None = None,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> MossVectorStore:
        """Async :meth:`from_texts` (:meth:`acreate` on the caller's loop)."""
        store = await cls.acreate(embedding=embedding, **kwargs)
        try:
            await store.aadd_texts(texts, metadatas, ids=ids)
        except BaseException:
            await store.aclose()
            raise
        return store


def _identity(score: float) -> float:
    return score


def _no_kwargs(method: str, kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise InvalidArgumentError(f"{method}: unknown argument(s) {', '.join(sorted(kwargs))}")

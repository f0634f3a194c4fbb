"""Haystack ``@component`` retrievers bound to a :class:`MossDocumentStore`.

Two components, as Haystack's in-memory store has (``InMemoryEmbeddingRetriever`` and
``InMemoryBM25Retriever``): :class:`MossEmbeddingRetriever` ranks by a query embedding alone,
:class:`MossRetriever` runs moss's hybrid query (BM25 and vector fused by ``alpha``) from the
query text, plus a query embedding when the index holds custom vectors. Both honour Haystack's
``FilterPolicy`` for init-time versus run-time filters and have ``run`` and ``run_async``.
"""

from __future__ import annotations

from typing import Any, Literal

from haystack import Document, component, default_from_dict, default_to_dict
from haystack.document_stores.types import FilterPolicy
from haystack.document_stores.types.filter_policy import apply_filter_policy

from ...errors import InvalidArgumentError
from .store import MossDocumentStore

__all__ = ["MossEmbeddingRetriever", "MossRetriever"]


def _check_store(store: object) -> MossDocumentStore:
    if not isinstance(store, MossDocumentStore):
        raise InvalidArgumentError(
            f"document_store must be a MossDocumentStore, not {type(store).__name__}"
        )
    return store


def _store_from_dict(data: dict[str, Any]) -> None:
    params = data.get("init_parameters", {})
    if isinstance(params.get("document_store"), dict):
        params["document_store"] = MossDocumentStore.from_dict(params["document_store"])
    if isinstance(params.get("filter_policy"), str):
        params["filter_policy"] = FilterPolicy.from_str(params["filter_policy"])


@component
class MossEmbeddingRetriever:
    """Documents nearest to a query embedding (vector only), from a :class:`MossDocumentStore`.

    Args:
        document_store: the store to search.
        filters: Haystack filters applied to every run (see ``filter_policy``).
        top_k: number of documents to return.
        filter_policy: ``REPLACE`` (run-time filters replace ``filters``) or ``MERGE``.
    """

    def __init__(
        self,
        document_store: MossDocumentStore,
        filters: dict[str, Any] | None = None,
        top_k: int = 10,
        filter_policy: FilterPolicy = FilterPolicy.REPLACE,
    ) -> None:
        self.document_store = _check_store(document_store)
        self.filters = filters
        self.top_k = top_k
        self.filter_policy = FilterPolicy(filter_policy)

    def to_dict(self) -> dict[str, Any]:
        """Serialise (the store as its own ``to_dict``)."""
        return default_to_dict(
            self,
            document_store=self.document_store.to_dict(),
            filters=self.filters,
            top_k=self.top_k,
            filter_policy=self.filter_policy.value,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MossEmbeddingRetriever:
        """Deserialise (reopens the store with :meth:`MossDocumentStore.from_dict`)."""
        _store_from_dict(data)
        out: MossEmbeddingRetriever = default_from_dict(cls, data)
        return out

    def _args(self, filters: dict[str, Any] | None, top_k: int | None) -> dict[str, Any]:
        return {
            "filters": apply_filter_policy(self.filter_policy, self.filters, filters),
            "top_k": self.top_k if top_k is None else top_k,
            "alpha": 1.0,
        }

    @component.output_types(documents=list[Document])
    def run(
        self,
        query_embedding: list[float],
        filters: dict[str, Any] | None = None,
        top_k: int | None = None,
    ) -> dict[str, list[Document]]:
        """The ``top_k`` documents nearest to ``query_embedding``, best first, ``score`` set."""
        docs = self.document_store.search(
            "", query_embedding=query_embedding, **self._args(filters, top_k)
        )
        return {"documents": docs}

    @component.output_types(documents=list[Document])
    async def run_async(
        self,
        query_embedding: list[float],
        filters: dict[str, Any] | None = None,
        top_k: int | None = None,
    ) -> dict[str, list[Document]]:
        """Async :meth:`run`, on the caller's event loop."""
        docs = await self.document_store.search_async(
            "", query_embedding=query_embedding, **self._args(filters, top_k)
        )
        return {"documents": docs}


@component
class MossRetriever:
    """moss's hybrid search (keyword + vector) from a query text, over a :class:`MossDocumentStore`.

    Args:
        document_store: the store to search.
        filters: Haystack filters applied to every run (see ``filter_policy``).
        top_k: number of documents to return.
        alpha: weight of the semantic signal, 0 (keyword only) to 1 (vector only); None: 0.8.
        fusion: ``"score"`` (moss's default) or ``"rrf"``.
        filter_policy: ``REPLACE`` (run-time filters replace ``filters``) or ``MERGE``.

    Over a ``model_id="custom"`` index moss cannot embed the text: pass ``query_embedding``
    too (from the embedder that made the document embeddings), or use ``alpha=0``.
    """

    def __init__(
        self,
        document_store: MossDocumentStore,
        filters: dict[str, Any] | None = None,
        top_k: int = 10,
        alpha: float | None = None,
        fusion: Literal["score", "rrf"] | None = None,
        filter_policy: FilterPolicy = FilterPolicy.REPLACE,
    ) -> None:
        self.document_store = _check_store(document_store)
        self.filters = filters
        self.top_k = top_k
        self.alpha = alpha
        self.fusion: Literal["score", "rrf"] | None = fusion
        self.filter_policy = FilterPolicy(filter_policy)

    def to_dict(self) -> dict[str, Any]:
        """Serialise (the store as its own ``to_dict``)."""
        return default_to_dict(
            self,
            document_store=self.document_store.to_dict(),
            filters=self.filters,
            top_k=self.top_k,
            alpha=self.alpha,
            fusion=self.fusion,
            filter_policy=self.filter_policy.value,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MossRetriever:
        """Deserialise (reopens the store with :meth:`MossDocumentStore.from_dict`)."""
        _store_from_dict(data)
        out: MossRetriever = default_from_dict(cls, data)
        return out

    def _args(
        self, filters: dict[str, Any] | None, top_k: int | None, alpha: float | None
    ) -> dict[str, Any]:
        return {
            "filters": apply_filter_policy(self.filter_policy, self.filters, filters),
            "top_k": self.top_k if top_k is None else top_k,
            "alpha": self.alpha if alpha is None else alpha,
            "fusion": self.fusion,
        }

    @component.output_types(documents=list[Document])
    def run(
        self,
        query: str,
        query_embedding: list[float] | None = None,
        filters: dict[str, Any] | None = None,
        top_k: int | None = None,
        alpha: float | None = None,
    ) -> dict[str, list[Document]]:
        """The ``top_k`` best documents for ``query``, best first, ``score`` set."""
        docs = self.document_store.search(
            query, query_embedding=query_embedding, **self._args(filters, top_k, alpha)
        )
        return {"documents": docs}

    @component.output_types(documents=list[Document])
    async def run_async(
        self,
        query: str,
        query_embedding: list[float] | None = None,
        filters: dict[str, Any] | None = None,
        top_k: int | None = None,
        alpha: float | None = None,
    ) -> dict[str, list[Document]]:
        """Async :meth:`run`, on the caller's event loop."""
        docs = await self.document_store.search_async(
            query, query_embedding=query_embedding, **self._args(filters, top_k, alpha)
        )
        return {"documents": docs}

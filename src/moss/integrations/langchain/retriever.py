"""``MossRetriever``: LangChain's ``BaseRetriever`` over a :class:`MossVectorStore`.

A pydantic model like every LangChain retriever: its fields are the search defaults, and
``invoke(query, **overrides)`` can change any of them for one call.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from ...errors import InvalidArgumentError
from .store import DEFAULT_K, MossVectorStore

__all__ = ["MossRetriever"]


class MossRetriever(BaseRetriever):
    """A LangChain retriever over a :class:`MossVectorStore` (hybrid search, or MMR).

    ``k``, ``alpha``, ``filter``, ``fusion``, ``min_score`` are fields (constructor arguments)
    and can be overridden per call: ``retriever.invoke("query", k=2, alpha=0.5)``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    vectorstore: MossVectorStore
    k: int = DEFAULT_K
    alpha: float | None = None
    filter: dict[str, Any] | None = None
    fusion: Literal["score", "rrf"] | None = None
    min_score: float | None = None
    search_type: Literal["similarity", "mmr"] = "similarity"
    fetch_k: int = 20
    lambda_mult: float = 0.5

    _FIELDS: ClassVar[tuple[str, ...]] = ("alpha", "filter", "fusion", "min_score")

    async def _aretrieve(self, query: str, kwargs: dict[str, Any]) -> list[Document]:
        k = kwargs.pop("k", self.k)
        search_type = kwargs.pop("search_type", self.search_type)
        fetch_k = kwargs.pop("fetch_k", self.fetch_k)
        lambda_mult = kwargs.pop("lambda_mult", self.lambda_mult)
        merged = {f: getattr(self, f) for f in self._FIELDS if getattr(self, f) is not None}
        merged.update(kwargs)
        store = self.vectorstore
        if search_type == "mmr":
            return await store._ammr(query, None, k, fetch_k, lambda_mult, merged)
        if search_type != "similarity":
            raise InvalidArgumentError(
                f"search_type must be 'similarity' or 'mmr', not {search_type!r}"
            )
        return await store.asimilarity_search(query, k, **merged)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        out: list[Document] = self.vectorstore._run(self._aretrieve(query, dict(kwargs)))
        return out

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        return await self._aretrieve(query, dict(kwargs))

"""LangChain's own standard suites, unmodified, against MossVectorStore and MossRetriever.

``VectorStoreIntegrationTests`` and ``RetrieversIntegrationTests`` come from the
``langchain-tests`` package; we only supply the fixtures they ask for. The vector store suite
passes ``DeterministicFakeEmbedding(size=6)``, so the store runs over a ``model_id="custom"``
session of the embedded default store (a fresh data directory per test, see conftest).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("langchain_tests")

from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.retrievers import BaseRetriever
from langchain_tests.integration_tests import (
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)

from moss.integrations.langchain import MossRetriever, MossVectorStore


class TestMossVectorStoreStandard(VectorStoreIntegrationTests):
    @pytest.fixture()
    def vectorstore(self) -> Iterator[MossVectorStore]:  # type: ignore[override]
        store = MossVectorStore.create("lc-standard", embedding=self.get_embeddings())
        try:
            yield store
        finally:
            store.close()


TEXTS = [
    "Refunds are processed within five business days.",
    "Shipping to Canada takes about a week.",
    "You can return shoes within thirty days of purchase.",
    "Gift cards never expire.",
    "Our support team answers email within one day.",
]


class TestMossRetrieverStandard(RetrieversIntegrationTests):
    @pytest.fixture(autouse=True)
    def _store(self) -> Iterator[None]:
        self.store = MossVectorStore.from_texts(
            TEXTS,
            DeterministicFakeEmbedding(size=6),
            metadatas=[{"n": i} for i in range(len(TEXTS))],
            index_name="lc-retriever",
        )
        try:
            yield
        finally:
            self.store.close()

    @property
    def retriever_constructor(self) -> type[BaseRetriever]:
        return MossRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"vectorstore": self.store, "k": 2}

    @property
    def retriever_query_example(self) -> str:
        return "how long do refunds take"

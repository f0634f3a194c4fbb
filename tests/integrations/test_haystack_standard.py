"""Haystack's own document store suites, unmodified, against MossDocumentStore.

``DocumentStoreBaseExtendedTests`` (write/filter/count/delete plus delete_all, delete_by_filter,
update_by_filter), ``CountDocumentsByFilterTest`` and the async test classes of
``haystack.testing.document_store_async`` come from ``haystack-ai``; we only supply the
``document_store`` fixture, and ``test_write_documents`` which the suite leaves to each store
(its default duplicate policy is store-specific). The sync suite runs over a
``model_id="custom"`` session (the suite's documents carry 768-d embeddings, some none: those get
a zero vector); the async suite over moss's built-in model, which embeds the content.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

pytest.importorskip("haystack")

from haystack import Document
from haystack.document_stores.errors import DuplicateDocumentError
from haystack.testing.document_store import (
    CountDocumentsByFilterTest,
    DocumentStoreBaseExtendedTests,
)
from haystack.testing.document_store_async import (
    CountDocumentsAsyncTest,
    CountDocumentsByFilterAsyncTest,
    DeleteAllAsyncTest,
    DeleteByFilterAsyncTest,
    DeleteDocumentsAsyncTest,
    FilterDocumentsAsyncTest,
    UpdateByFilterAsyncTest,
    WriteDocumentsAsyncTest,
)

from moss.integrations.haystack import MossDocumentStore

from ..conftest import HAS_MODEL


class TestMossDocumentStoreStandard(DocumentStoreBaseExtendedTests, CountDocumentsByFilterTest):
    @pytest.fixture()
    def document_store(self) -> Iterator[MossDocumentStore]:  # type: ignore[override]
        store = MossDocumentStore.create("hs-standard", model_id="custom", embedding_dim=768)
        try:
            yield store
        finally:
            store.close()

    def test_write_documents(self, document_store: MossDocumentStore) -> None:  # type: ignore[override]
        """The default policy (NONE) fails on an existing id, like FAIL."""
        doc = Document(content="test doc", meta={"n": 1})
        assert document_store.write_documents([doc]) == 1
        with pytest.raises(DuplicateDocumentError):
            document_store.write_documents([doc])
        assert document_store.filter_documents() == [doc]


@pytest.mark.skipif(not HAS_MODEL, reason="needs the built-in model wheel")
class TestMossDocumentStoreAsyncStandard(
    CountDocumentsAsyncTest,
    CountDocumentsByFilterAsyncTest,
    DeleteAllAsyncTest,
    DeleteByFilterAsyncTest,
    DeleteDocumentsAsyncTest,
    FilterDocumentsAsyncTest,
    UpdateByFilterAsyncTest,
    WriteDocumentsAsyncTest,
):
    @pytest.fixture()
    async def document_store(self) -> AsyncIterator[MossDocumentStore]:  # type: ignore[override]
        store = await MossDocumentStore.acreate("hs-standard-async")
        try:
            yield store
        finally:
            await store.aclose()

    async def test_write_documents_async(self, document_store: MossDocumentStore) -> None:  # type: ignore[override]
        """The default policy (NONE) fails on an existing id, like FAIL."""
        doc = Document(content="test doc", meta={"n": 1})
        assert await document_store.write_documents_async([doc]) == 1
        with pytest.raises(DuplicateDocumentError):
            await document_store.write_documents_async([doc])
        assert await document_store.filter_documents_async() == [doc]

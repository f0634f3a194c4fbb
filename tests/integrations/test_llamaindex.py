"""moss.integrations.llamaindex through LlamaIndex's own VectorStoreIndex, retrievers and engines.

LlamaIndex ships no conformance suite (docs/integrations/llamaindex.md), so these mirror what the
integration packages test (class hierarchy, add/delete/get_nodes/query round trips) and go
through ``VectorStoreIndex`` with a deterministic hash embedding and ``MockLLM``; rankings are
checked against a numpy cosine reference and against moss's own query.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.schema import MetadataMode, TextNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)

from moss import DocumentInfo, InvalidArgumentError, MossClient, MossError, QueryOptions
from moss.integrations.llamaindex import MossEmbedding, MossVectorStore

from ..conftest import HAS_MODEL, random_texts

DIM = 8


class HashEmbedding(BaseEmbedding):
    """Deterministic pseudo-random vectors from a hash of the text (not normalised)."""

    def _vec(self, text: str) -> list[float]:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(DIM).tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vec(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vec(text)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vec(query)


EMBED = HashEmbedding()


def unit(rows: Any) -> np.ndarray:
    a = np.asarray(rows, dtype=np.float64)
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


@pytest.fixture()
def store() -> Iterator[MossVectorStore]:
    s = MossVectorStore.create("li")
    try:
        yield s
    finally:
        s.close()


def build(
    store: MossVectorStore, texts: list[str], metas: list[dict[str, Any]]
) -> VectorStoreIndex:
    docs = [
        Document(text=t, metadata=m, id_=f"doc{i}") for i, (t, m) in enumerate(zip(texts, metas))
    ]
    return VectorStoreIndex.from_documents(
        docs, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=EMBED
    )


def test_class_is_a_llamaindex_vector_store(store: MossVectorStore) -> None:
    assert BasePydanticVectorStore.__name__ in [b.__name__ for b in MossVectorStore.__mro__]
    assert store.stores_text and store.is_embedding_query
    assert store.client is not None and store.client.model_id == "custom"


def test_index_retrieval_matches_numpy_and_nodes_round_trip(store: MossVectorStore) -> None:
    texts = random_texts(24, seed=4)
    metas = [
        {"n": i, "parity": "even" if i % 2 == 0 else "odd", "tags": ["a", i]} for i in range(24)
    ]
    index = build(store, texts, metas)
    query = "harbor island jungle"
    got = index.as_retriever(similarity_top_k=4).retrieve(query)
    # LlamaIndex embeds a node's text with its metadata (MetadataMode.EMBED)
    nodes = {n.ref_doc_id: n for n in store.get_nodes()}
    embedded = [nodes[f"doc{i}"].get_content(metadata_mode=MetadataMode.EMBED) for i in range(24)]
    assert all(texts[i] in embedded[i] and embedded[i] != texts[i] for i in range(24))
    cos = unit([EMBED._vec(t) for t in embedded]) @ unit(EMBED._vec(query))
    order = np.argsort(-cos, kind="stable")[:4]
    assert [h.node.get_content() for h in got] == [texts[i] for i in order]
    for h, i in zip(got, order):
        assert h.score == pytest.approx(max(0.0, cos[i]), abs=1e-5)
        assert h.node.metadata == metas[i]  # lists and ints come back as they went in
        assert h.node.ref_doc_id == f"doc{i}"
    # the query engine (MockLLM) retrieves the same nodes
    response = index.as_query_engine(llm=MockLLM(), similarity_top_k=4).query(query)
    assert [n.node.node_id for n in response.source_nodes] == [h.node.node_id for h in got]


def test_hybrid_and_text_search_modes_pass_alpha_to_moss(store: MossVectorStore) -> None:
    texts = random_texts(30, seed=6)
    build(store, texts, [{} for _ in texts])
    session = store.client
    query = "apple banana"
    qv = unit(EMBED._vec(query)).tolist()
    for mode, alpha, moss_alpha in [
        ("hybrid", 0.5, 0.5),
        ("hybrid", None, 0.8),
        ("text_search", None, 0.0),
        ("sparse", 0.9, 0.0),
        ("default", 0.3, 1.0),
    ]:
        q = VectorStoreQuery(
            query_embedding=EMBED._vec(query),
            query_str=query,
            similarity_top_k=5,
            mode=VectorStoreQueryMode(mode),
            alpha=alpha,
        )
        got = store.query(q)
        emb = None if moss_alpha == 0.0 else qv
        ref = asyncio.run(
            session.query(query, QueryOptions(embedding=emb, top_k=5, alpha=moss_alpha))
        )
        assert got.ids == [d.id for d in ref.docs], mode
        assert got.similarities == [d.score for d in ref.docs]
    words = {"apple", "banana"}
    retr = VectorStoreIndex.from_vector_store(store, embed_model=EMBED).as_retriever(
        vector_store_query_mode="text_search", similarity_top_k=30
    )
    hits = retr.retrieve(query)
    assert hits and all(words & set(h.node.get_content().split()) for h in hits)
    with pytest.raises(InvalidArgumentError, match="not supported"):
        store.query(VectorStoreQuery(query_embedding=qv, mode=VectorStoreQueryMode.SVM))
    with pytest.raises(InvalidArgumentError, match="unknown query argument"):
        store.query(VectorStoreQuery(query_embedding=qv), fusoin="rrf")


def test_metadata_filters_translate_to_moss(store: MossVectorStore) -> None:
    texts = random_texts(20, seed=8)
    metas = [{"n": i, "kind": ["a", "b", "c"][i % 3]} for i in range(20)]
    index = build(store, texts, metas)
    filters = MetadataFilters(
        filters=[
            MetadataFilter(key="n", value=5, operator=FilterOperator.GTE),
            MetadataFilters(
                filters=[
                    MetadataFilter(key="kind", value="a"),
                    MetadataFilter(key="kind", value=["b"], operator=FilterOperator.IN),
                ],
                condition=FilterCondition.OR,
            ),
        ]
    )
    hits = index.as_retriever(similarity_top_k=20, filters=filters).retrieve("garden")
    expected = {i for i in range(20) if i >= 5 and metas[i]["kind"] in ("a", "b")}
    assert {h.node.metadata["n"] for h in hits} == expected
    nodes = store.get_nodes(
        filters=MetadataFilters(
            filters=[MetadataFilter(key="n", value=3, operator=FilterOperator.LT)]
        )
    )
    assert sorted(n.metadata["n"] for n in nodes) == [0, 1, 2]
    # doc_ids restricts to source documents
    q = VectorStoreQuery(
        query_embedding=EMBED._vec("x"), similarity_top_k=20, doc_ids=["doc1", "doc7"]
    )
    assert sorted(n.ref_doc_id or "" for n in store.query(q).nodes or []) == ["doc1", "doc7"]
    for bad in (
        MetadataFilters(
            filters=[MetadataFilter(key="kind", value="a")], condition=FilterCondition.NOT
        ),
        MetadataFilters(
            filters=[MetadataFilter(key="kind", value="a", operator=FilterOperator.CONTAINS)]
        ),
    ):
        with pytest.raises(InvalidArgumentError, match="not supported"):
            store.query(VectorStoreQuery(query_embedding=EMBED._vec("x"), filters=bad))


def test_delete_ref_doc_delete_nodes_clear_and_mmr(store: MossVectorStore) -> None:
    texts = random_texts(12, seed=2)
    index = build(store, texts, [{"n": i} for i in range(12)])
    index.delete_ref_doc("doc3")
    assert all(n.ref_doc_id != "doc3" for n in store.get_nodes())
    assert len(store.get_nodes()) == 11
    some = [n.node_id for n in store.get_nodes()][:2]
    store.delete_nodes(some)
    assert len(store.get_nodes()) == 9 and not store.get_nodes(some)
    store.delete_nodes(filters=MetadataFilters(filters=[MetadataFilter(key="n", value=11)]))
    assert 11 not in {n.metadata["n"] for n in store.get_nodes()}
    # MMR: the first pick is the nearest; all picks come from the vector candidates
    q = VectorStoreQuery(
        query_embedding=EMBED._vec("river"),
        similarity_top_k=3,
        mode=VectorStoreQueryMode.MMR,
        mmr_threshold=0.3,
    )
    mmr = store.query(q)
    plain = store.query(VectorStoreQuery(query_embedding=EMBED._vec("river"), similarity_top_k=8))
    assert mmr.ids and len(mmr.ids) == 3 and plain.ids
    assert mmr.ids[0] == plain.ids[0] and set(mmr.ids) <= set(plain.ids)
    store.clear()
    assert store.get_nodes() == []


async def test_async_paths() -> None:
    store = await MossVectorStore.acreate("li-async")
    try:
        nodes = [
            TextNode(id_=f"n{i}", text=t, embedding=EMBED._vec(t), metadata={"i": i})
            for i, t in enumerate(random_texts(6, seed=1))
        ]
        assert await store.async_add(nodes) == [f"n{i}" for i in range(6)]
        got = await store.aquery(
            VectorStoreQuery(query_embedding=nodes[2].embedding, similarity_top_k=1)
        )
        assert got.ids == ["n2"] and got.similarities == [pytest.approx(1.0, abs=1e-5)]
        assert got.nodes is not None and got.nodes[0].metadata == {"i": 2}
        index = VectorStoreIndex.from_vector_store(store, embed_model=EMBED)
        hits = await index.as_retriever(similarity_top_k=2).aretrieve(nodes[4].get_content())
        assert hits[0].node.node_id == "n4"
        await store.adelete_nodes(["n4"])
        assert [n.node_id for n in await store.aget_nodes(["n4", "n5"])] == ["n5"]
        # a sync call inside the running loop goes through the store's own thread
        assert len(store.get_nodes()) == 5
        await store.aclear()
        assert await store.aget_nodes() == []
    finally:
        await store.aclose()
    with pytest.raises(MossError, match="closed"):
        store.get_nodes()


def test_loaded_index_read_only() -> None:
    texts = random_texts(10, seed=3)
    vecs = unit([EMBED._vec(t) for t in texts])

    async def main() -> None:
        async with MossClient("p", "k") as client:
            await client.create_index(
                "kb",
                [
                    DocumentInfo(f"d{i}", t, {"i": str(i)}, vecs[i].tolist())
                    for i, t in enumerate(texts)
                ],
            )
            await client.load_index("kb")
            store = MossVectorStore(client=client, index_name="kb")
            try:
                index = VectorStoreIndex.from_vector_store(store, embed_model=EMBED)
                hits = await index.as_retriever(similarity_top_k=3).aretrieve("tiger")
                order = np.argsort(-(vecs @ unit(EMBED._vec("tiger"))), kind="stable")[:3]
                assert [h.node.node_id for h in hits] == [f"d{i}" for i in order]
                assert hits[0].node.metadata == {"i": str(order[0])}  # foreign docs: moss metadata
                for write in (
                    store.async_add([TextNode(id_="x", text="x", embedding=[1.0] * DIM)]),
                    store.adelete("doc"),
                    store.aclear(),
                ):
                    with pytest.raises(InvalidArgumentError, match="read-only"):
                        await write
            finally:
                await store.aclose()

    asyncio.run(main())


@pytest.mark.model
@pytest.mark.skipif(not HAS_MODEL, reason="all-MiniLM-L6-v2 weights not installed")
def test_builtin_model_session_and_moss_embedding() -> None:
    texts = [
        "The cat sat on the mat.",
        "Stock markets fell sharply today.",
        "A kitten is sleeping on the rug.",
    ]
    emb = MossEmbedding()
    v = emb.get_query_embedding("feline")
    assert len(v) == 384 and abs(float(np.linalg.norm(v)) - 1) < 1e-4
    # built-in session: moss embeds the text, LlamaIndex passes the query text only
    store = MossVectorStore.create("li-builtin", model_id="moss-minilm")
    try:
        assert store.is_embedding_query is False
        docs = [Document(text=t, id_=k) for t, k in zip(texts, ["cat", "stocks", "kitten"])]
        index = VectorStoreIndex.from_documents(
            docs, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=emb
        )
        hits = index.as_retriever(similarity_top_k=2).retrieve("a young feline napping")
        assert [h.node.ref_doc_id for h in hits] == ["kitten", "cat"]
    finally:
        store.close()
    # custom session fed by MossEmbedding ranks the same
    store2 = MossVectorStore.create("li-custom")
    try:
        docs = [Document(text=t, id_=k) for t, k in zip(texts, ["cat", "stocks", "kitten"])]
        index = VectorStoreIndex.from_documents(
            docs, storage_context=StorageContext.from_defaults(vector_store=store2), embed_model=emb
        )
        hits = index.as_retriever(similarity_top_k=2).retrieve("a young feline napping")
        assert [h.node.ref_doc_id for h in hits] == ["kitten", "cat"]
    finally:
        store2.close()


def test_import_moss_does_not_import_llamaindex() -> None:
    import subprocess
    import sys

    code = (
        "import sys, moss, moss.integrations\n"
        "moss.MossClient\n"
        "assert 'llama_index' not in sys.modules\n"
        "sys.modules['llama_index'] = None\n"
        "try:\n"
        "    import moss.integrations.llamaindex\n"
        "except moss.MossError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "pip install 'mosslite[llamaindex]'" in out.stdout


@pytest.mark.model
@pytest.mark.skipif(not HAS_MODEL, reason="all-MiniLM-L6-v2 weights not installed")
def test_docs_example_runs(tmp_path: Any) -> None:
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "docs" / "integrations" / "llamaindex.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1
    env = {
        **os.environ,
        "MOSS_DATA_DIR": str(tmp_path / "d"),
        "MOSS_SESSION_CACHE_PATH": str(tmp_path / "c"),
    }
    env.pop("MOSS_SERVER_URL", None)
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", blocks[0]],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0].split()[1] == "refunds:" and lines[-2:] == [
        "['returns', 'refunds']",
        "gift-cards",
    ]

"""moss.integrations.haystack beyond Haystack's own suite: the filter push-down against
Haystack's ``InMemoryDocumentStore`` as the reference, retriever rankings against numpy,
filter policies, loaded indexes (read-only), a real ``moss serve`` over HTTP, typed errors,
and that ``import moss`` never imports Haystack.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("haystack")

from haystack import Document
from haystack.document_stores.in_memory import InMemoryDocumentStore
from haystack.document_stores.types import DuplicatePolicy, FilterPolicy
from haystack.errors import FilterError

from moss import MossClient
from moss.errors import InvalidArgumentError
from moss.integrations.haystack import (
    MossDocumentStore,
    MossEmbeddingRetriever,
    MossFilterError,
    MossRetriever,
)
from moss.integrations.haystack._documents import plan_filter

from ..conftest import random_texts, unit_vectors

DIM = 8


def corpus(n: int = 40) -> list[Document]:
    vecs = unit_vectors(n, DIM, seed=3)
    texts = random_texts(n, seed=3)
    colours = ["red", "green", "blue", "10", "true", "2024-01-02"]
    return [
        Document(
            id=f"d{i}",
            content=texts[i],
            meta={
                "colour": colours[i % len(colours)],
                "n": i,
                "half": i / 2,
                **({"opt": "x"} if i % 3 == 0 else {}),
                "tags": ["a", str(i)],
            },
            embedding=vecs[i].tolist(),
        )
        for i in range(n)
    ]


@pytest.fixture()
def store() -> Iterator[MossDocumentStore]:
    s = MossDocumentStore.create("hs", model_id="custom")
    try:
        s.write_documents(corpus())
        yield s
    finally:
        s.close()


FILTERS: list[dict[str, Any]] = [
    {"field": "meta.colour", "operator": "==", "value": "red"},
    {"field": "meta.colour", "operator": "in", "value": ["red", "blue", "10"]},
    {"field": "meta.colour", "operator": "==", "value": "10"},
    {"field": "meta.colour", "operator": "==", "value": 10},
    {"field": "meta.colour", "operator": "==", "value": "2024-01-02T00:00:00"},
    {"field": "meta.opt", "operator": "!=", "value": "x"},
    {"field": "meta.opt", "operator": "not in", "value": ["x"]},
    {"field": "meta.opt", "operator": "==", "value": None},
    {"field": "meta.n", "operator": ">=", "value": 30},
    {"field": "meta.half", "operator": "<", "value": 3},
    {
        "operator": "AND",
        "conditions": [
            {"field": "meta.colour", "operator": "==", "value": "green"},
            {"field": "meta.n", "operator": ">", "value": 10},
        ],
    },
    {
        "operator": "OR",
        "conditions": [
            {"field": "meta.colour", "operator": "==", "value": "green"},
            {"field": "meta.colour", "operator": "==", "value": "blue"},
        ],
    },
    {
        "operator": "NOT",
        "conditions": [
            {"field": "meta.colour", "operator": "in", "value": ["red", "green"]},
            {"field": "meta.n", "operator": "<", "value": 20},
        ],
    },
    {"field": "content", "operator": "==", "value": corpus()[5].content},
    {"field": "id", "operator": "in", "value": ["d1", "d7", "nope"]},
]


@pytest.mark.parametrize("filters", FILTERS, ids=range(len(FILTERS)))
def test_filters_match_haystacks_in_memory_store(
    store: MossDocumentStore, filters: dict[str, Any]
) -> None:
    reference = InMemoryDocumentStore()
    reference.write_documents(corpus())
    expected = sorted(d.id for d in reference.filter_documents(filters))
    got = store.filter_documents(filters)
    assert sorted(d.id for d in got) == expected
    assert store.count_documents_by_filter(filters) == len(expected)
    # and the documents come back exactly as written
    by_id = {d.id: d for d in corpus()}
    assert all(d == by_id[d.id] for d in got)


def test_push_down_is_exact_only_where_moss_is_exact() -> None:
    eq = {"field": "meta.colour", "operator": "==", "value": "red"}
    assert plan_filter(eq).moss == {"field": "colour", "condition": {"$eq": "red"}}
    assert plan_filter(eq).exact
    for value in ("10", "true", "2024-01-02", 10, None):
        p = plan_filter({"field": "meta.colour", "operator": "==", "value": value})
        assert p.moss is None and not p.exact
    mixed = {
        "operator": "AND",
        "conditions": [eq, {"field": "meta.n", "operator": ">", "value": 1}],
    }
    p = plan_filter(mixed)
    assert p.moss == plan_filter(eq).moss and not p.exact
    ne = {"field": "meta.colour", "operator": "!=", "value": "red"}
    assert plan_filter({"operator": "OR", "conditions": [eq, ne]}).moss is None


def test_malformed_filters_raise_typed_errors(store: MossDocumentStore) -> None:
    for bad in (
        {"field": "meta.colour", "value": "red"},
        {"field": "meta.colour", "operator": "~", "value": "red"},
        {"field": "meta.colour", "operator": "in", "value": "red"},
        {"operator": "XOR", "conditions": []},
        {"conditions": []},
    ):
        with pytest.raises(MossFilterError) as e:
            store.filter_documents(bad)
        assert isinstance(e.value, FilterError) and isinstance(e.value, InvalidArgumentError)
    with pytest.raises(FilterError):  # a string compared with numbers, checked per document
        store.filter_documents({"field": "meta.n", "operator": ">", "value": "abc"})


def test_embedding_retriever_ranks_like_numpy_and_filters(store: MossDocumentStore) -> None:
    docs = corpus()
    vecs = np.asarray([d.embedding for d in docs])
    q = unit_vectors(1, DIM, seed=9)[0]
    order = np.argsort(-(vecs @ q), kind="stable")
    retriever = MossEmbeddingRetriever(store, top_k=5)
    out = retriever.run(query_embedding=q.tolist())["documents"]
    assert [d.id for d in out] == [f"d{i}" for i in order[:5]]
    for d, i in zip(out, order[:5]):
        assert d.score == pytest.approx(max(float(vecs[i] @ q), 0.0), abs=1e-5)
    # a filter moss cannot express (numeric range) still gives the top 3 matching documents
    rng = {"field": "meta.n", "operator": ">=", "value": 35}
    out = retriever.run(query_embedding=q.tolist(), filters=rng, top_k=3)["documents"]
    want = [f"d{i}" for i in order if i >= 35][:3]
    assert [d.id for d in out] == want
    # init filters and MERGE policy
    red = {"field": "meta.colour", "operator": "==", "value": "red"}
    merged = MossEmbeddingRetriever(store, filters=red, top_k=40, filter_policy=FilterPolicy.MERGE)
    got = merged.run(query_embedding=q.tolist(), filters=rng)["documents"]
    assert {d.id for d in got} == {f"d{i}" for i in range(35, 40) if i % 6 == 0}
    replaced = MossEmbeddingRetriever(store, filters=red, top_k=40)
    got = replaced.run(query_embedding=q.tolist(), filters=rng)["documents"]
    assert {d.id for d in got} == {f"d{i}" for i in range(35, 40)}


async def test_hybrid_retriever_async_and_alpha(store: MossDocumentStore) -> None:
    docs = corpus()
    target = docs[11]
    assert target.content is not None and target.embedding is not None
    retriever = MossRetriever(store, top_k=3)
    # keyword only: the exact text of a document ranks it first
    out = await retriever.run_async(query=target.content, alpha=0.0)
    assert out["documents"][0].id == target.id
    # hybrid over custom vectors needs the query embedding; vector only = embedding retriever
    hy = await retriever.run_async(query="zzz", query_embedding=target.embedding, alpha=1.0)
    emb = await MossEmbeddingRetriever(store, top_k=3).run_async(query_embedding=target.embedding)
    assert [d.id for d in hy["documents"]] == [d.id for d in emb["documents"]]
    assert hy["documents"][0].id == target.id
    with pytest.raises(InvalidArgumentError, match="custom"):
        await retriever.run_async(query="zebra")  # moss cannot embed text for custom vectors


def test_duplicate_policies_and_updates(store: MossDocumentStore) -> None:
    d0 = corpus()[0]
    new = Document(id="d0", content="replaced", meta={"k": [1, {"x": None}]})
    assert store.write_documents([new], policy=DuplicatePolicy.SKIP) == 0
    assert store.filter_documents({"field": "id", "operator": "==", "value": "d0"}) == [d0]
    assert store.write_documents([new, new], policy=DuplicatePolicy.OVERWRITE) == 1
    assert store.filter_documents({"field": "id", "operator": "==", "value": "d0"}) == [new]
    assert store.count_documents() == 40
    assert store.delete_by_filter({"field": "meta.colour", "operator": "==", "value": "red"}) == 6
    assert store.count_documents() == 34
    n = store.update_by_filter({"field": "meta.n", "operator": "<", "value": 5}, {"seen": True})
    assert n == 4  # d1..d4: d0 was replaced by a document without "n"
    seen = store.filter_documents({"field": "meta.seen", "operator": "==", "value": True})
    assert sorted(d.id for d in seen) == ["d1", "d2", "d3", "d4"]
    assert all(d.meta["colour"] and d.embedding is not None for d in seen)
    store.delete_documents(["d1", "missing"])
    assert store.count_documents() == 33
    store.delete_all_documents()
    assert store.count_documents() == 0


def test_builtin_model_keeps_embedding_and_no_content_documents() -> None:
    from ..conftest import HAS_MODEL

    if not HAS_MODEL:
        pytest.skip("built-in model not installed")
    with MossDocumentStore.create("hs-builtin") as s:
        docs = [
            Document(id="a", content="refunds take five days", embedding=[0.5, 0.25]),
            Document(id="b", content=None, meta={"kind": "blob"}),
            Document(id="c", content="shipping to Canada takes a week"),
        ]
        assert s.write_documents(docs) == 3
        assert sorted(s.filter_documents(), key=lambda d: d.id) == docs
        hits = MossRetriever(s, top_k=1).run(query="how long do refunds take")["documents"]
        assert [d.id for d in hits] == ["a"] and hits[0].embedding == [0.5, 0.25]
        assert hits[0].score is not None and 0 < hits[0].score <= 1


def test_loaded_index_is_searchable_and_read_only() -> None:
    docs = corpus(12)

    async def main() -> None:
        async with MossClient("p", "k") as client:
            session = await client.session("kb", "custom")
            await MossDocumentStore(session).write_documents_async(docs)
            job = await session.push_index()
            await client.wait_for_job(job.job_id, poll_interval_seconds=0.05)
            await client.load_index("kb")
            ro = MossDocumentStore(client=client, index_name="kb")
            try:
                assert await ro.count_documents_async() == 12
                got = await ro.filter_documents_async(
                    {"field": "meta.colour", "operator": "==", "value": "blue"}
                )
                assert got == [docs[2], docs[8]]
                q = docs[4].embedding
                assert q is not None
                hits = await MossEmbeddingRetriever(ro, top_k=1).run_async(query_embedding=q)
                assert hits["documents"][0].id == "d4"
                for write in (
                    ro.write_documents_async([Document(content="x")]),
                    ro.delete_documents_async(["d1"]),
                    ro.delete_all_documents_async(),
                ):
                    with pytest.raises(InvalidArgumentError, match="read-only"):
                        await write
            finally:
                await ro.aclose()

    asyncio.run(main())


def test_against_moss_serve_over_http(tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    from moss.server.testing import ThreadedServer

    docs = corpus(6)
    with ThreadedServer(tmp_path / "srv") as server:
        pid, key = server.project
        with MossDocumentStore.create(
            "remote", model_id="custom", project_id=pid, project_key=key, server_url=server.url
        ) as s:
            s.write_documents(docs)
            assert s.to_dict()["init_parameters"]["server_url"] == server.url
            assert "project_key" not in s.to_dict()["init_parameters"]
            q = docs[3].embedding
            assert q is not None
            out = MossEmbeddingRetriever(s, top_k=1).run(query_embedding=q)["documents"]
            assert out == [Document.from_dict({**docs[3].to_dict(), "score": out[0].score})]


def test_typed_errors_and_serialisation(store: MossDocumentStore) -> None:
    with pytest.raises(InvalidArgumentError):
        store.write_documents(["not a document"])  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentError):
        MossDocumentStore()
    with pytest.raises(InvalidArgumentError):
        MossEmbeddingRetriever(object())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="JSON"):
        store.write_documents([Document(content="x", meta={"o": object()})])
    data = MossRetriever(store, top_k=2, alpha=0.3).to_dict()
    assert data["init_parameters"]["document_store"]["init_parameters"]["index_name"] == "hs"
    again = MossRetriever.from_dict(data)
    try:
        assert again.top_k == 2 and again.alpha == 0.3
        reopened = again.document_store.session
        assert reopened is not None and (reopened.name, reopened.model_id) == ("hs", "custom")
    finally:
        again.document_store.close()


def test_import_moss_does_not_import_haystack_and_missing_extra_is_named() -> None:
    code = (
        "import sys, moss, moss.integrations\n"
        "moss.MossClient\n"
        "assert 'haystack' not in sys.modules, 'haystack imported'\n"
        "sys.modules['haystack'] = None\n"
        "try:\n"
        "    import moss.integrations.haystack\n"
        "except moss.MossError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "pip install 'mosslite[haystack]'" in out.stdout


def _run_doc_blocks(doc: str, tmp_path: Path) -> list[str]:
    """Run every python block of docs/integrations/<doc>.md in a fresh interpreter."""
    import os
    import re

    text = (Path(__file__).resolve().parents[2] / "docs" / "integrations" / doc).read_text()
    env = {
        **os.environ,
        "MOSS_DATA_DIR": str(tmp_path / "d"),
        "MOSS_SESSION_CACHE_PATH": str(tmp_path / "c"),
    }
    env.pop("MOSS_SERVER_URL", None)
    outputs = []
    for code in re.findall(r"```python\n(.*?)```", text, re.S):
        out = subprocess.run(
            [sys.executable, "-W", "error", "-c", code],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            cwd=tmp_path,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        outputs.append(out.stdout)
    return outputs


def test_docs_examples_run(tmp_path: Path) -> None:
    from ..conftest import HAS_MODEL

    if not HAS_MODEL:
        pytest.skip("built-in model not installed")
    first, second = _run_doc_blocks("haystack.md", tmp_path)
    assert "Refunds are processed" in first.splitlines()[0]
    assert "Shipping to Canada" in first.splitlines()[2]
    assert second.splitlines() == ["2", "['1', '2']", "2"]

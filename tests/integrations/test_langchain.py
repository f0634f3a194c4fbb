"""MossVectorStore / MossRetriever beyond LangChain's standard suites.

Covered here: lossless metadata and moss filters over it, scores and ranking against a numpy
reference, alpha/filter/fusion passed through (store and retriever), MMR against LangChain's own
MMR on the same vectors, a loaded cloud index (read-only), the built-in model, sync calls made
inside a running event loop, typed errors, a real ``moss serve`` over HTTP, and that
``import moss`` never imports LangChain.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("langchain_core")

from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.vectorstores.utils import maximal_marginal_relevance

from moss import DocumentInfo, InvalidArgumentError, MossClient, MossError, QueryOptions
from moss.integrations.langchain import MossEmbeddings, MossRetriever, MossVectorStore

from ..conftest import HAS_MODEL, random_texts

FAKE = DeterministicFakeEmbedding(size=8)


def unit_rows(rows: list[list[float]]) -> np.ndarray:
    a = np.asarray(rows, dtype=np.float64)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


@pytest.fixture()
def store() -> Iterator[MossVectorStore]:
    s = MossVectorStore.create("lc", embedding=FAKE)
    try:
        yield s
    finally:
        s.close()


# ------------------------------------------------------------------ documents and metadata


def test_metadata_round_trips_exactly_and_scalars_are_filterable(
    store: MossVectorStore,
) -> None:
    meta = {
        "source": "a.md",
        "page": 3,
        "score": 0.25,
        "draft": True,
        "tags": ["x", "y"],
        "nested": {"k": [1, {"z": None}]},
        "missing": None,
        "big": 10**4001,  # JSON-serialisable, too large for moss metadata
        "ünï": "çødé",
    }
    docs = [
        Document(page_content="alpha beta", metadata=meta, id="d1"),
        Document(page_content="gamma delta", metadata={"page": 4}),
        Document(page_content="no metadata"),
    ]
    ids = store.add_documents(docs)
    assert ids[0] == "d1" and len(ids[1]) == 32 and ids[1] != ids[2]
    assert docs[1].id is None  # inputs are not mutated
    got = {d.id: d for d in store.get_by_ids(ids)}
    assert got["d1"] == Document(id="d1", page_content="alpha beta", metadata=meta)
    assert got[ids[1]].metadata == {"page": 4}
    assert got[ids[2]].metadata == {}
    # moss sees the scalars as strings (§3.1), not the lists/dicts/None/huge int
    session = store.session
    assert session is not None
    stored = asyncio.run(session.get_docs())[0]
    assert stored.metadata == {
        "source": "a.md",
        "page": "3",
        "score": "0.25",
        "draft": "true",
        "ünï": "çødé",
    }
    # a moss filter and the {"key": value} shorthand both select on them
    hits = store.similarity_search("alpha", k=5, filter={"field": "page", "condition": {"$gte": 4}})
    assert [d.id for d in hits] == [ids[1]]
    assert [d.id for d in store.similarity_search("alpha", k=5, filter={"page": 3})] == ["d1"]
    both = store.similarity_search("alpha", k=5, filter={"page": 3, "draft": False})
    assert both == []


def test_foreign_documents_keep_moss_metadata_and_payload() -> None:
    async def main() -> None:
        async with MossClient("p", "k") as client:
            session = await client.session("foreign", "custom")
            await session.add_docs(
                [DocumentInfo("a", "hello", {"lang": "en"}, [1.0, 0.0], '{"raw": 1}')]
            )
            store = MossVectorStore(session, embedding=None)
            try:
                docs = await store.aget_by_ids(["a"])
            finally:
                await store.aclose()
            assert docs == [
                Document(
                    id="a",
                    page_content="hello",
                    metadata={"lang": "en", "moss_payload": '{"raw": 1}'},
                )
            ]

    asyncio.run(main())


def test_add_texts_ids_and_delete_all(store: MossVectorStore) -> None:
    ids = store.add_texts(
        ["one", "two", "three"], [{"n": 1}, {"n": 2}, {"n": 3}], ids=["1", "2", "3"]
    )
    assert ids == ["1", "2", "3"]
    assert store.add_texts([]) == []
    assert store.delete(["2", "nope"]) is True
    assert sorted(d.id or "" for d in store.get_by_ids(["1", "2", "3"])) == ["1", "3"]
    assert store.delete() is True  # None: everything
    assert store.get_by_ids(["1", "3"]) == []
    assert store.similarity_search("one") == []


# ------------------------------------------------------------------ ranking and scores


def test_vector_scores_match_numpy_cosine(store: MossVectorStore) -> None:
    texts = random_texts(30, seed=3)
    ids = store.add_texts(texts)
    query = "river salmon tiger"
    got = store.similarity_search_with_score(query, k=5, alpha=1.0)
    mat = unit_rows(FAKE.embed_documents(texts))
    q = unit_rows([FAKE.embed_query(query)])[0]
    cos = mat @ q
    order = np.argsort(-cos, kind="stable")[:5]
    assert [d.id for d, _ in got] == [ids[i] for i in order]
    for (_, score), i in zip(got, order):
        assert score == pytest.approx(max(0.0, min(1.0, cos[i])), abs=1e-5)
    # relevance scores are the same numbers
    rel = store.similarity_search_with_relevance_scores(query, k=5, alpha=1.0)
    assert [s for _, s in rel] == [s for _, s in got]
    # by vector: the same ranking without the keyword signal
    by_vec = store.similarity_search_by_vector(FAKE.embed_query(query), k=5)
    assert [d.id for d in by_vec] == [ids[i] for i in order]


def test_alpha_filter_fusion_pass_through_to_moss(store: MossVectorStore) -> None:
    texts = random_texts(40, seed=5)
    store.add_texts(texts, [{"half": str(i % 2)} for i in range(40)])
    session = store.session
    assert session is not None
    query = "apple banana"
    qv = np.asarray(FAKE.embed_query(query))
    qv = (qv / np.linalg.norm(qv)).tolist()
    flt = {"field": "half", "condition": {"$eq": "1"}}
    for alpha, fusion in [(0.0, None), (0.5, "rrf"), (0.8, "score")]:
        expected = asyncio.run(
            session.query(
                query,
                QueryOptions(embedding=qv, top_k=6, alpha=alpha, filter=flt, fusion=fusion),
            )
        )
        got = store.similarity_search(query, k=6, alpha=alpha, filter=flt, fusion=fusion)
        assert [d.id for d in got] == [d.id for d in expected.docs]
        assert all(d.metadata["half"] == "1" for d in got)
    keyword_only = store.similarity_search(query, k=40, alpha=0.0)
    assert keyword_only and all(
        {"apple", "banana"} & set(d.page_content.split()) for d in keyword_only
    )
    retriever = MossRetriever(vectorstore=store, k=3, alpha=0.0, filter=flt)
    got_r = retriever.invoke(query)
    ref = store.similarity_search(query, k=3, alpha=0.0, filter=flt)
    assert got_r == ref and len(got_r) == 3
    # per-call overrides win over the fields
    assert retriever.invoke(query, k=1, filter={"half": "0"})[0].metadata["half"] == "0"


def test_mmr_matches_langchain_mmr_on_the_stored_vectors(store: MossVectorStore) -> None:
    texts = random_texts(25, seed=9)
    ids = store.add_texts(texts)
    query = "ocean pepper quartz"
    got = store.max_marginal_relevance_search(query, k=4, fetch_k=25, lambda_mult=0.3, alpha=1.0)
    mat = unit_rows(FAKE.embed_documents(texts))
    q = unit_rows([FAKE.embed_query(query)])[0]
    cand = np.argsort(-(mat @ q), kind="stable")
    picked = maximal_marginal_relevance(q, [mat[i].tolist() for i in cand], lambda_mult=0.3, k=4)
    assert [d.id for d in got] == [ids[cand[i]] for i in picked]
    mmr_r = MossRetriever(
        vectorstore=store, k=4, search_type="mmr", fetch_k=25, lambda_mult=0.3, alpha=1.0
    )
    assert mmr_r.invoke(query) == got
    by_vec = store.max_marginal_relevance_search_by_vector(
        FAKE.embed_query(query), k=4, fetch_k=25, lambda_mult=0.3
    )
    assert by_vec == got


# ------------------------------------------------------------------ loaded index (read-only)


def test_loaded_cloud_index_is_searchable_and_read_only() -> None:
    texts = random_texts(20, seed=1)
    vecs = unit_rows(FAKE.embed_documents(texts))

    async def main() -> None:
        async with MossClient("p", "k") as client:
            await client.create_index(
                "kb",
                [
                    DocumentInfo(f"d{i}", t, {"i": str(i)}, vecs[i].tolist())
                    for i, t in enumerate(texts)
                ],
            )
            with pytest.raises(MossError) as e:
                MossVectorStore(client=client, index_name="kb", embedding=FAKE)
            assert e.value.code == "NOT_FOUND" and "load_index" in str(e.value)
            await client.load_index("kb")
            store = MossVectorStore(client=client, index_name="kb", embedding=FAKE)
            try:
                q = FAKE.embed_query("zebra")
                hits = await store.asimilarity_search_by_vector(q, k=3)
                order = np.argsort(-(vecs @ unit_rows([q])[0]), kind="stable")[:3]
                assert [d.id for d in hits] == [f"d{i}" for i in order]
                assert [d.metadata["i"] for d in hits] == [str(i) for i in order]
                assert {d.id for d in await store.aget_by_ids(["d3", "zz"])} == {"d3"}
                assert len(await store.asimilarity_search("zebra", k=2)) == 2
                for write in (
                    store.aadd_texts(["x"]),
                    store.adelete(["d1"]),
                    store.adelete(),
                ):
                    with pytest.raises(InvalidArgumentError, match="read-only"):
                        await write
                # sync calls go through the store's own loop thread, inside this running loop
                assert [d.id for d in store.similarity_search_by_vector(q, k=3)] == [
                    d.id for d in hits
                ]
                with pytest.raises(InvalidArgumentError, match="read-only"):
                    store.add_texts(["x"])
            finally:
                await store.aclose()

    asyncio.run(main())


# ------------------------------------------------------------------ built-in model


@pytest.mark.model
@pytest.mark.skipif(not HAS_MODEL, reason="all-MiniLM-L6-v2 weights not installed")
def test_builtin_model_store_and_embeddings() -> None:
    texts = [
        "The cat sat on the mat.",
        "Stock markets fell sharply today.",
        "A kitten is sleeping on the rug.",
    ]
    store = MossVectorStore.from_texts(texts, ids=["cat", "stocks", "kitten"], index_name="builtin")
    try:
        emb = store.embeddings
        assert isinstance(emb, MossEmbeddings)
        q = emb.embed_query("a young feline napping")
        assert len(q) == 384 and abs(float(np.linalg.norm(q)) - 1.0) < 1e-4
        hits = store.similarity_search("a young feline napping", k=2, alpha=1.0)
        assert [d.id for d in hits] == ["kitten", "cat"]
        by_vec = store.similarity_search_by_vector(q, k=2)
        assert [d.id for d in by_vec] == ["kitten", "cat"]
        scores = dict(
            (d.id, s) for d, s in store.similarity_search_with_score("feline", k=3, alpha=1.0)
        )
        ref = np.asarray(emb.embed_documents(texts)) @ np.asarray(emb.embed_query("feline"))
        assert scores["cat"] == pytest.approx(max(0.0, float(ref[0])), abs=1e-3)
        mmr = store.max_marginal_relevance_search("feline", k=2, fetch_k=3)
        assert len(mmr) == 2 and mmr[0].id in {"cat", "kitten"}
    finally:
        store.close()
    with pytest.raises(InvalidArgumentError, match="model_id='custom'"):
        MossVectorStore.create("x", embedding=FAKE, model_id="moss-minilm")


# ------------------------------------------------------------------ async and errors


async def test_async_store_inside_a_running_loop() -> None:
    store = await MossVectorStore.afrom_texts(
        ["red apple", "green pear", "blue sky"], FAKE, ids=["a", "p", "s"], index_name="async"
    )
    async with store:
        assert [d.id for d in await store.asimilarity_search("red apple", k=1)] == ["a"]
        # a sync call inside the running loop does not deadlock or call asyncio.run
        assert [d.id for d in store.similarity_search("red apple", k=1)] == ["a"]
        r = MossRetriever(vectorstore=store, k=2)
        assert len(await r.ainvoke("apple")) == 2
        await store.adelete(["a"])
        assert [d.id for d in await store.aget_by_ids(["a", "p"])] == ["p"]
    with pytest.raises(MossError, match="closed"):
        store.similarity_search("x")


def test_typed_errors(store: MossVectorStore) -> None:
    with pytest.raises(InvalidArgumentError, match="unknown search argument"):
        store.similarity_search("x", k=1, alhpa=0.5)
    with pytest.raises(InvalidArgumentError, match="JSON-serialisable"):
        store.add_texts(["x"], [{"when": object()}])
    with pytest.raises(InvalidArgumentError, match="metadatas"):
        store.add_texts(["x", "y"], [{}])
    with pytest.raises(InvalidArgumentError, match="alpha"):
        store.similarity_search("x", alpha=2.0)
    with pytest.raises(InvalidArgumentError, match="Filter condition must contain one of"):
        store.similarity_search("x", filter={"field": "a", "condition": {"$bogus": 1}})
    with pytest.raises(InvalidArgumentError, match="search_type"):
        MossRetriever(vectorstore=store).invoke("x", search_type="nope")
    with pytest.raises(InvalidArgumentError):
        MossVectorStore()

    async def builtin_with_external() -> None:
        async with MossClient("p", "k") as client:
            session = await client.session("s", "custom")
            with pytest.raises(InvalidArgumentError, match="SessionIndex"):
                MossVectorStore("s")  # type: ignore[arg-type]
            store2 = MossVectorStore(session)
            assert store2.embeddings is None  # custom vectors, no Embeddings given
            await store2.aclose()

    asyncio.run(builtin_with_external())


# ------------------------------------------------------------------ moss serve, imports


def test_against_moss_serve_over_http(tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    from moss.server.testing import ThreadedServer

    with ThreadedServer(tmp_path / "srv") as server:
        pid, key = server.project
        store = MossVectorStore.create(
            "remote", FAKE, project_id=pid, project_key=key, server_url=server.url
        )
        try:
            store.add_texts(
                ["north wind", "south sea", "east gate"],
                [{"d": "n"}, {"d": "s"}, {"d": "e"}],
                ids=["n", "s", "e"],
            )
            session = store.session
            assert session is not None
            asyncio.run(_push_and_wait(session, store))
            assert [d.id for d in store.similarity_search("south sea", k=1)] == ["s"]
        finally:
            store.close()
        # a second client loads the pushed index read-only from the server

        async def reader() -> None:
            async with MossClient(pid, key, server_url=server.url) as client:
                await client.load_index("remote")
                ro = MossVectorStore(client=client, index_name="remote", embedding=FAKE)
                try:
                    hits = await ro.asimilarity_search("south sea", k=1)
                    assert hits == [Document(id="s", page_content="south sea", metadata={"d": "s"})]
                finally:
                    await ro.aclose()

        asyncio.run(reader())


async def _push_and_wait(session: object, store: MossVectorStore) -> None:
    from moss import SessionIndex

    assert isinstance(session, SessionIndex)
    result = await session.push_index()
    client = session._client
    await client.wait_for_job(result.job_id, poll_interval_seconds=0.05, timeout_seconds=60)


def test_import_moss_does_not_import_langchain_and_missing_extra_is_named() -> None:
    code = (
        "import sys, moss, moss.integrations\n"
        "moss.MossClient\n"
        "assert 'langchain_core' not in sys.modules, 'langchain imported'\n"
        "sys.modules['langchain_core'] = None\n"
        "try:\n"
        "    import moss.integrations.langchain\n"
        "except moss.MossError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "pip install 'mosslite[langchain]'" in out.stdout


def test_as_retriever_and_garbage_collection_stops_the_loop_thread() -> None:
    import gc
    import threading

    client = MossClient("p", "k")
    session = asyncio.run(client.session("gc", "custom"))
    before = {t.ident for t in threading.enumerate()}
    store = MossVectorStore(session, embedding=FAKE)
    store.add_texts(["alpha one", "beta two", "gamma three"], [{"g": 1}, {"g": 2}, {"g": 2}])
    generic = store.as_retriever(search_kwargs={"k": 1, "alpha": 0.0, "filter": {"g": 2}})
    assert [d.page_content for d in generic.invoke("beta")] == ["beta two"]
    thresholded = store.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"score_threshold": 0.999}
    )
    assert [d.page_content for d in thresholded.invoke("gamma three")] == ["gamma three"]
    new = [
        t
        for t in threading.enumerate()
        if t.ident not in before and t.name == "moss-integration-loop"
    ]
    assert len(new) == 1
    del store, generic, thresholded
    gc.collect()
    new[0].join(10)
    assert not new[0].is_alive()
    assert session.doc_count == 3  # the caller's session is untouched, still open
    asyncio.run(client.close())


DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations" / "langchain.md"


@pytest.mark.model
@pytest.mark.skipif(not HAS_MODEL, reason="all-MiniLM-L6-v2 weights not installed")
def test_docs_examples_run(tmp_path: Path) -> None:
    import os
    import re

    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 2
    env = {
        **os.environ,
        "MOSS_DATA_DIR": str(tmp_path / "d"),
        "MOSS_SESSION_CACHE_PATH": str(tmp_path / "c"),
    }
    env.pop("MOSS_SERVER_URL", None)
    outputs = []
    for code in blocks:
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
    assert "Refunds are processed" in outputs[0].splitlines()[0]
    assert outputs[0].splitlines()[-1] == "Shipping to Canada takes about a week."
    assert outputs[1].splitlines()[-1] == "['2']"

"""Text queries search keywords on a worker while the query is embedded: the same results as a
query that brings its own embedding, for one index and across several."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import numpy as np
import pytest

import moss.multi_query as multi_query
from moss import DocumentInfo, MossClient, QueryOptions, SessionIndex
from moss.engine import Engine, validate_query_options

from .conftest import HAS_MODEL, random_texts

pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(not HAS_MODEL, reason="all-MiniLM-L6-v2 weights not installed"),
]


def _engine() -> Engine:
    from moss.embedding import get_embedder

    e = Engine("moss-minilm", embedder=get_embedder("moss-minilm"))
    texts = random_texts(60, seed=3)
    e.add_documents([DocumentInfo(str(i), t, {"k": str(i % 2)}) for i, t in enumerate(texts)])
    return e


@pytest.mark.parametrize("fusion", ["score", "rrf"])
@pytest.mark.parametrize("alpha", [0.3, 0.8])
def test_text_query_equals_query_with_its_own_embedding(fusion: str, alpha: float) -> None:
    e = _engine()
    assert e.embedder is not None
    for text in ["river tiger", "salmon in the ocean", "zebra"]:
        flt = {"field": "k", "condition": {"$eq": "1"}}
        for f in (None, flt):
            opts = QueryOptions(top_k=7, alpha=alpha, fusion=fusion, filter=f)  # type: ignore[arg-type]
            a = e.query(text, opts)
            q = e.embedder.embed_query(text)
            opts_q = QueryOptions(q, 7, alpha, f, None, None, None, fusion)  # type: ignore[arg-type]
            b = e.query(text, opts_q)
            assert [(d.id, d.score) for d in a.docs] == [(d.id, d.score) for d in b.docs]


def test_text_query_during_writes_sees_one_version() -> None:
    e = _engine()
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            e.add_documents([DocumentInfo(f"w{i}", "marker word river", None)])
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(20):
            res = e.query("marker river", QueryOptions(top_k=5, alpha=0.5))
            assert len(res.docs) == 5
    finally:
        stop.set()
        t.join()


def _multi_client() -> tuple[MossClient, list[SessionIndex]]:
    async def make() -> tuple[MossClient, list[SessionIndex]]:
        c = MossClient("p", "k")
        out = []
        for name, seed in (("a", 4), ("b", 5)):
            s = await c.session(name, model_id="moss-minilm")
            texts = random_texts(40, seed=seed)
            await s.add_docs(
                [DocumentInfo(f"{name}{i}", t, {"k": str(i % 2)}) for i, t in enumerate(texts)]
            )
            out.append(s)
        return c, out

    return asyncio.run(make())


@pytest.mark.parametrize("fusion", ["score", "rrf"])
def test_multi_index_text_query_equals_query_with_its_own_embedding(fusion: str) -> None:
    c, sessions = _multi_client()
    from moss.embedding import get_embedder

    emb = get_embedder("moss-minilm")

    async def go() -> None:
        for text in ["river tiger", "salmon in the ocean"]:
            for f in (None, {"field": "k", "condition": {"$eq": "1"}}):
                opts = QueryOptions(top_k=8, alpha=0.6, fusion=fusion, filter=f)  # type: ignore[arg-type]
                a = await c.query_multi_index(sessions, text, opts)
                q = emb.embed_query(text).tolist()
                opts_q = QueryOptions(q, 8, 0.6, f, None, None, None, fusion)  # type: ignore[arg-type]
                b = await c.query_multi_index(sessions, text, opts_q)
                assert [(d.id, d.score) for d in a.docs] == [(d.id, d.score) for d in b.docs]
                assert {d.id[0] for d in a.docs} == {"a", "b"}
        await c.close()

    asyncio.run(go())


def test_multi_index_ignores_a_keyword_prefetch_made_before_a_write() -> None:
    c, sessions = _multi_client()
    engines = [s.engine for s in sessions]
    targets = [(s.name, s.engine) for s in sessions]
    plan = validate_query_options(QueryOptions(top_k=5, alpha=0.5), 384, default_top_k=10)
    terms, pres = multi_query._prefetch_all(engines, plan, "zebra quartz")
    assert set(pres) == {id(e) for e in engines}
    engines[1].add_documents([DocumentInfo("new", "zebra quartz zebra quartz", None)])
    q = engines[0].embedder.embed_query("zebra quartz")  # type: ignore[union-attr]
    with engines[0]._lock, engines[1]._lock:
        stale = multi_query._search_many(targets, plan, q, terms, pres)
        fresh = multi_query._search_many(targets, plan, q, terms)
        assert [(d.id, d.score) for d in stale] == [(d.id, d.score) for d in fresh]
        assert "new" in [d.id for d in fresh]
        # Control: a prefetch of the current version is used as it is (here, one without K rows).
        _, current = multi_query._prefetch_all(engines, plan, "zebra quartz")
        e1 = id(engines[1])
        current[e1] = dataclasses.replace(
            current[e1], k_rows=np.zeros(0, np.int64), k_scores=np.zeros(0, np.float32)
        )
        doctored = multi_query._search_many(targets, plan, q, terms, current)
        assert [d.id for d in doctored] != [d.id for d in fresh]
    asyncio.run(c.close())

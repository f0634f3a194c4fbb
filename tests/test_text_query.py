"""Text queries search the keyword list on a worker while the query is embedded: same results."""

from __future__ import annotations

import threading

import pytest

from moss import DocumentInfo, QueryOptions
from moss.engine import Engine

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

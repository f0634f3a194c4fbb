"""``Engine.keyword_scores`` and ``moss.runtime.loaded_engine``, checked against references written
here: BM25 recomputed from scratch over the live documents (``naive_bm25``), and the fused order
of the engine's own score-fusion queries."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import Counter

import numpy as np
import pytest

from moss import DocumentInfo, InvalidArgumentError, MossClient, MossError, QueryOptions
from moss.analysis import analyze
from moss.cli.query import keyword_scores as cli_keyword_scores
from moss.engine import CUSTOM, Engine
from moss.runtime import loaded_engine

from .conftest import naive_bm25

DIM = 8
WORDS = "apple banana cherry delta echo falcon garden harbor island jungle".split()
QUERIES = ["apple", "banana cherry", "echo echo falcon", "island jungle apple zebra", "zebra"]


def corpus(n: int, seed: int, prefix: str = "d") -> list[DocumentInfo]:
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return [
        DocumentInfo(
            f"{prefix}{i}",
            " ".join(rng.choice(WORDS, size=int(rng.integers(2, 9)))),
            None,
            vecs[i].tolist(),
        )
        for i in range(n)
    ]


def naive_fractions(texts: dict[str, str], query: str) -> dict[str, float]:
    """BM25 / the query's maximum attainable BM25 (``sum(idf * (k1 + 1))`` over its terms that
    occur in some live document, repeats counted), for every live id."""
    k1 = 1.2
    toks = {d: analyze(t) for d, t in texts.items()}
    n = len(toks)
    df = Counter(term for t in toks.values() for term in set(t))
    top = sum(
        math.log(1 + (n - df[q] + 0.5) / (df[q] + 0.5)) * (k1 + 1) for q in analyze(query) if df[q]
    )
    raw = naive_bm25(texts, query)
    return {d: (raw.get(d, 0.0) / top if top > 0 else 0.0) for d in texts}


def engine_with_history() -> tuple[Engine, dict[str, str]]:
    """A custom-model engine after adds, in-place updates and deletes, and its live texts."""
    e = Engine(CUSTOM)
    docs = corpus(60, 1)
    e.add_documents(docs)
    updates = corpus(10, 2)  # same ids d0..d9, new texts and vectors
    e.add_documents(updates)
    e.delete([f"d{i}" for i in range(40, 50)])
    e.add_documents(corpus(5, 3, prefix="late"))
    texts = {d.id: d.text for d in e.get_documents()}
    assert len(texts) == 55
    return e, texts


def test_keyword_scores_match_brute_force_bm25() -> None:
    e, texts = engine_with_history()
    ids = [*texts, "d45", "never-added"]  # a deleted id and an unknown one: None
    for query in QUERIES:
        got = e.keyword_scores(query, ids)
        want = naive_fractions(texts, query)
        assert len(got) == len(ids)
        for doc_id, score in zip(ids, got):
            if doc_id not in texts:
                assert score is None
                continue
            assert score is not None and 0.0 <= score < 1.0
            assert score == pytest.approx(want[doc_id], rel=1e-5, abs=1e-6), (query, doc_id)


def test_keyword_scores_order_matches_a_keyword_only_query() -> None:
    e, texts = engine_with_history()
    for query in QUERIES[:4]:
        res = e.query(query, QueryOptions(alpha=0.0, top_k=10))
        hits = [d.id for d in res.docs]
        assert hits
        scores = dict(zip(texts, e.keyword_scores(query, list(texts))))
        shown = [scores[i] for i in hits]
        assert shown == sorted(shown, reverse=True)
        rest = max((s for i, s in scores.items() if i not in hits), default=0.0)
        assert rest is not None and rest <= min(s for s in shown if s is not None) + 1e-6


def test_keyword_scores_are_the_keyword_term_of_score_fusion() -> None:
    # With candidate lists deeper than the index, every document with a query term is in the
    # keyword list, so each hit's fused value is alpha * cosine + (1 - alpha) * keyword score
    # (docs/fusion.md) and the hits come in descending order of it.
    e, _ = engine_with_history()
    q = corpus(1, 99)[0].embedding
    for alpha in (0.3, 0.5, 0.8):
        for query in QUERIES[:4]:
            opts = QueryOptions(
                alpha=alpha, top_k=8, fusion="score", embedding=q, candidate_depth=100
            )
            res = e.query(query, opts)
            kw = e.keyword_scores(query, [d.id for d in res.docs])
            fused = [alpha * d.score + (1 - alpha) * (k or 0.0) for d, k in zip(res.docs, kw)]
            assert all(a >= b - 1e-5 for a, b in itertools.pairwise(fused)), (alpha, query, fused)


def test_keyword_scores_edge_cases_and_validation() -> None:
    e, texts = engine_with_history()
    some = list(texts)[:3]
    assert e.keyword_scores("apple", []) == []
    assert e.keyword_scores("   ", some) == [0.0, 0.0, 0.0]  # no terms
    assert e.keyword_scores("zebra", [*some, "nope"]) == [0.0, 0.0, 0.0, None]
    assert Engine(CUSTOM).keyword_scores("apple", ["x"]) == [None]
    with pytest.raises(InvalidArgumentError):
        e.keyword_scores(b"apple", some)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        e.keyword_scores("apple", "d1")
    with pytest.raises(InvalidArgumentError):
        e.keyword_scores("apple", ["d1", 2])  # type: ignore[list-item]


def test_loaded_engine_and_the_cli_keyword_column() -> None:
    async def go() -> None:
        c = MossClient("p", "k")
        docs = corpus(30, 7)
        s = await c.session("kb", model_id="custom", auto_load_on_init=False)
        await s.add_docs(docs)
        await c.wait_for_job((await s.push_index()).job_id, poll_interval_seconds=0.05)
        await s.close()
        with pytest.raises(MossError) as err:
            loaded_engine(c, "kb")
        assert err.value.code == "NOT_FOUND"
        await c.load_index("kb")
        engine = loaded_engine(c, "kb")
        assert engine.doc_count == 30
        ids = [d.id for d in docs]
        want = naive_fractions({d.id: d.text for d in docs}, "apple banana")
        got = cli_keyword_scores(c, "kb", "apple banana", [*ids, "missing"])
        assert got[-1] == 0.0  # the CLI shows an unknown id as 0
        assert got[:-1] == pytest.approx([want[i] for i in ids], rel=1e-5, abs=1e-6)
        await c.close()
        with pytest.raises(RuntimeError):
            loaded_engine(c, "kb")

    asyncio.run(go())

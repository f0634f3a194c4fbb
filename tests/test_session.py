"""SessionIndex semantics with the custom model (no embedding model needed).

Rankings are checked against brute-force references written here: exact cosine for vectors, a naive
BM25 recomputed from scratch for keywords, and the §3.4 formulas for fusion.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from moss import (
    DocumentInfo,
    GetDocumentsOptions,
    InvalidArgumentError,
    MossClient,
    MossError,
    MutationOptions,
    ParentGrouping,
    QueryOptions,
)

from .conftest import naive_bm25, random_texts, unit_vectors

DIM = 16


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def _session(name: str = "s", n: int = 0, seed: int = 0):  # type: ignore[no-untyped-def]
    client = MossClient("proj", "key")
    s = await client.session(name, model_id="custom")
    if n:
        vecs = unit_vectors(n, DIM, seed)
        texts = random_texts(n, seed)
        docs = [
            DocumentInfo(str(i), texts[i], {"k": str(i % 3), "n": str(i)}, vecs[i].tolist())
            for i in range(n)
        ]
        await s.add_docs(docs)
    return client, s


def test_upsert_counting_and_order() -> None:
    async def go() -> None:
        _, s = await _session()
        v = [1.0] + [0.0] * (DIM - 1)
        a = DocumentInfo("a", "first", embedding=v)
        assert await s.add_docs([a, a]) == (1, 1)
        assert await s.add_docs([DocumentInfo("b", "x", embedding=v), a]) == (1, 1)
        assert await s.add_docs([a], MutationOptions(upsert=False)) == (0, 0)
        new = DocumentInfo("c", "c", embedding=v)
        assert await s.add_docs([new, new], MutationOptions(upsert=False)) == (1, 0)
        await s.add_docs([DocumentInfo("a", "changed", embedding=v)])
        docs = await s.get_docs()
        assert [d.id for d in docs] == ["a", "b", "c"]  # an update keeps its place
        assert docs[0].text == "changed" and s.doc_count == 3
        assert await s.delete_docs(["b", "nope"]) == 1
        got = await s.get_docs(GetDocumentsOptions(doc_ids=["c", "a", "zz"]))
        assert [d.id for d in got] == ["a", "c"]

    run(go())


def test_vector_ranking_matches_brute_force() -> None:
    async def go() -> None:
        _, s = await _session(n=300, seed=1)
        vecs = unit_vectors(300, DIM, 1)
        for qi in range(10):
            q = unit_vectors(1, DIM, 100 + qi)[0]
            res = await s.query("", QueryOptions(embedding=q.tolist(), top_k=10, alpha=1.0))
            expect = np.argsort(-(vecs @ q), kind="stable")[:10]
            assert [d.id for d in res.docs] == [str(i) for i in expect]
            for d in res.docs:
                cos = float(vecs[int(d.id)] @ q)
                assert d.score == pytest.approx(min(max(cos, 0.0), 1.0), abs=1e-5)

    run(go())


def test_keyword_ranking_matches_naive_bm25_through_updates_and_deletes() -> None:
    async def go() -> None:
        _, s = await _session(n=200, seed=2)
        texts = dict(zip(map(str, range(200)), random_texts(200, 2)))
        v = unit_vectors(1, DIM, 9)[0].tolist()
        await s.add_docs([DocumentInfo("5", "salmon salmon river", embedding=v)])
        texts["5"] = "salmon salmon river"
        await s.delete_docs([str(i) for i in range(50, 90)])
        for i in range(50, 90):
            del texts[str(i)]
        for query in ["salmon river", "tiger", "zebra apple mango", "the of"]:
            res = await s.query(query, QueryOptions(top_k=15, alpha=0.0))
            ref = naive_bm25(texts, query)
            expect = sorted(ref, key=lambda d: (-ref[d], int(d)))[:15]
            got = [d.id for d in res.docs]
            # equal scores may order differently only among exact ties
            assert [round(ref[d], 5) for d in got] == [round(ref[d], 5) for d in expect]
            assert all(d.score == 0.0 for d in res.docs)

    run(go())


@pytest.mark.parametrize("fusion", ["score", "rrf"])
def test_alpha_extremes_keep_one_list(fusion: str) -> None:
    """alpha 1 ranks by vectors alone though the query has text, alpha 0 by BM25 alone though it
    has a vector, whatever the fusion."""

    async def go() -> None:
        _, s = await _session(n=200, seed=6)
        vecs = unit_vectors(200, DIM, 6)
        texts = dict(zip(map(str, range(200)), random_texts(200, 6)))
        q = unit_vectors(1, DIM, 60)[0]
        query = "river tiger apple"
        opts = QueryOptions(embedding=q.tolist(), top_k=10, alpha=1.0, fusion=fusion)  # type: ignore[arg-type]
        res = await s.query(query, opts)
        assert [d.id for d in res.docs] == [str(i) for i in np.argsort(-(vecs @ q))[:10]]
        opts = QueryOptions(embedding=q.tolist(), top_k=10, alpha=0.0, fusion=fusion)  # type: ignore[arg-type]
        res = await s.query(query, opts)
        ref = naive_bm25(texts, query)
        expect = sorted(ref, key=lambda d: (-ref[d], int(d)))[:10]
        assert len(expect) == 10
        assert [round(ref[d], 5) for d in (d.id for d in res.docs)] == [
            round(ref[d], 5) for d in expect
        ]
        assert all(d.score == 0.0 for d in res.docs)

    run(go())


def test_hybrid_rrf_matches_contract_formula() -> None:
    async def go() -> None:
        _, s = await _session(n=200, seed=3)
        vecs = unit_vectors(200, DIM, 3)
        texts = dict(zip(map(str, range(200)), random_texts(200, 3)))
        q = unit_vectors(1, DIM, 77)[0]
        for alpha in (0.2, 0.5, 0.8):
            res = await s.query(
                "river tiger",
                QueryOptions(embedding=q.tolist(), top_k=5, alpha=alpha, fusion="rrf"),
            )
            depth = 10
            v_list = [str(i) for i in np.argsort(-(vecs @ q), kind="stable")[:depth]]
            ref = naive_bm25(texts, "river tiger")
            k_list = sorted(ref, key=lambda d: (-ref[d], int(d)))[:depth]
            big = 10**9

            def fused(d: str) -> float:
                f = 0.0
                if d in v_list:
                    f += alpha / (30 + v_list.index(d) + 1)
                if d in k_list:
                    f += (1 - alpha) / (30 + k_list.index(d) + 1)
                return f

            cands = set(v_list) | set(k_list)
            expect = sorted(
                cands,
                key=lambda d: (
                    -fused(d),
                    v_list.index(d) if d in v_list else big,
                    k_list.index(d) if d in k_list else big,
                    int(d),
                ),
            )[:5]
            assert [d.id for d in res.docs] == expect

    run(go())


def test_hybrid_score_fusion_matches_brute_force() -> None:
    """The default fusion ranks every document by alpha * clamp(cos) + (1 - alpha) * BM25 / (the
    query's maximum BM25), the keyword term counted for the keyword top D only. Exact: however
    deep the vector list, a document outside it and outside K cannot outscore its top_k."""
    import math

    from moss.analysis import analyze

    n = 400

    async def go() -> None:
        _, s = await _session(n=n, seed=8)
        vecs = unit_vectors(n, DIM, 8)
        texts = dict(zip(map(str, range(n)), random_texts(n, 8)))
        toks = [analyze(t) for t in texts.values()]
        for qi, (query, alpha, top_k) in enumerate(
            [("river tiger", 0.5, 5), ("apple river apple", 0.8, 10), ("tiger", 0.3, 30)]
        ):
            q = unit_vectors(1, DIM, 90 + qi)[0]
            res = await s.query(query, QueryOptions(embedding=q.tolist(), top_k=top_k, alpha=alpha))
            depth = 2 * top_k
            dots = vecs @ q
            v_rank = {str(i): r for r, i in enumerate(np.argsort(-dots, kind="stable"))}
            bm = naive_bm25(texts, query)
            k_list = sorted(bm, key=lambda d: (-bm[d], int(d)))[:depth]
            top = 0.0
            for term in analyze(query):
                df = sum(term in t for t in toks)
                if df:
                    top += math.log(1 + (n - df + 0.5) / (df + 0.5)) * 2.2  # k1 + 1
            big = 10**9

            def fused(d: str) -> float:
                f = alpha * min(max(float(dots[int(d)]), 0.0), 1.0)
                if d in k_list:
                    f += (1 - alpha) * bm[d] / top
                return f

            expect = sorted(
                texts,
                key=lambda d: (
                    -round(fused(d), 9),
                    v_rank[d],
                    k_list.index(d) if d in k_list else big,
                    int(d),
                ),
            )[:top_k]
            got = [d.id for d in res.docs]
            # float32 BM25 may reorder only near-exact ties
            assert [round(fused(d), 5) for d in got] == [round(fused(d), 5) for d in expect]
            assert got[:3] == expect[:3]

    run(go())


def test_filter_applies_before_ranking() -> None:
    async def go() -> None:
        _, s = await _session(n=300, seed=4)
        vecs = unit_vectors(300, DIM, 4)
        q = unit_vectors(1, DIM, 5)[0]
        flt = {"$and": [{"field": "k", "condition": {"$eq": "1"}},
                        {"field": "n", "condition": {"$lt": 100}}]}  # fmt: skip
        res = await s.query("", QueryOptions(embedding=q.tolist(), top_k=7, alpha=1.0, filter=flt))
        allowed = [i for i in range(300) if i % 3 == 1 and i < 100]
        expect = sorted(allowed, key=lambda i: -float(vecs[i] @ q))[:7]
        assert [d.id for d in res.docs] == [str(i) for i in expect]

    run(go())


def test_query_edge_cases() -> None:
    async def go() -> None:
        _, s = await _session(n=20, seed=5)
        q = unit_vectors(1, DIM, 6)[0].tolist()
        assert (await s.query("tiger", QueryOptions(top_k=0))).docs == []
        for alpha in (0.0, 0.5, 1.0):
            assert (await s.query("   ", QueryOptions(alpha=alpha))).docs == []
        assert len((await s.query(" ", QueryOptions(embedding=q, alpha=0.7))).docs) == 5
        assert (await s.query(" ", QueryOptions(embedding=q, alpha=0.0))).docs == []
        for alpha in (0.0, 0.5):
            with pytest.raises(InvalidArgumentError):
                await s.query("x", QueryOptions(embedding=[float("nan")] * DIM, alpha=alpha))
            with pytest.raises(InvalidArgumentError) as e:
                await s.query("x", QueryOptions(embedding=[0.1] * (DIM + 1), alpha=alpha))
            assert (
                e.value.detail
                == f"Invalid embedding length: expected {DIM} but received {DIM + 1}."
            )
        bad = [
            QueryOptions(top_k=-1), QueryOptions(alpha=1.5), QueryOptions(min_score=-0.1),
            QueryOptions(candidate_depth=0), QueryOptions(alpha=float("nan")),
            QueryOptions(min_score=0.2, alpha=0.0),
        ]  # fmt: skip
        for o in bad:
            with pytest.raises(InvalidArgumentError):
                await s.query("tiger", o)
        with pytest.raises(InvalidArgumentError, match="integer"):
            await s.query("tiger", QueryOptions(top_k=2.5))  # type: ignore[arg-type]
        # numpy scalars are numbers too
        res = await s.query("tiger", QueryOptions(top_k=np.int64(3), alpha=np.float32(0.0)))  # type: ignore[arg-type]
        assert len(res.docs) <= 3
        with pytest.raises(InvalidArgumentError, match="custom embeddings"):
            await s.query("tiger", QueryOptions(alpha=0.5))
        res = await s.query("tiger", QueryOptions(embedding=q, min_score=0.3, top_k=20, alpha=1.0))
        assert res.docs and all(d.score >= 0.3 for d in res.docs)
        assert res.index_name == "s" and res.model_id == "custom" and res.query == "tiger"

    run(go())


def test_custom_model_validation_is_all_or_nothing() -> None:
    async def go() -> None:
        _, s = await _session(n=5, seed=6)
        before = [(d.id, d.text) for d in await s.get_docs()]
        v = [0.5] * DIM
        with pytest.raises(InvalidArgumentError, match="x2"):
            await s.add_docs([DocumentInfo("x1", "a", embedding=v), DocumentInfo("x2", "b")])
        with pytest.raises(InvalidArgumentError) as e:
            await s.add_docs(
                [DocumentInfo("x1", "a", embedding=v), DocumentInfo("0", "b", embedding=[1.0])]
            )
        assert e.value.detail == f"Invalid embedding length: expected {DIM} but received 1."
        with pytest.raises(InvalidArgumentError):
            await s.add_docs([DocumentInfo("x3", "a", embedding=[float("inf")] * DIM)])
        assert [(d.id, d.text) for d in await s.get_docs()] == before

    run(go())


def test_group_by_in_query_and_get_docs() -> None:
    async def go() -> None:
        _, s = await _session()
        base = unit_vectors(1, DIM, 1)[0]
        docs = []
        for p in range(3):
            for c in (2, 0, 1):
                v = base + 0.01 * unit_vectors(1, DIM, 1000 + 10 * p + c)[0]
                docs.append(
                    DocumentInfo(f"p{p}#{c}", f"part {c} of {p}", {"parentId": f"p{p}", "ord": str(c)},
                                 (v / np.linalg.norm(v)).tolist())
                )  # fmt: skip
        docs.append(DocumentInfo("solo", "alone", {"ord": "0"}, base.tolist()))
        await s.add_docs(docs)
        g = ParentGrouping("parentId", "ord")
        units = await s.get_docs(GetDocumentsOptions(group_by=g))
        assert [u.id for u in units] == ["p0", "p1", "p2", "solo"]
        assert units[0].text == "part 0 of 0\npart 1 of 0\npart 2 of 0"
        res = await s.query(
            "", QueryOptions(embedding=base.tolist(), top_k=2, alpha=1.0, group_by=g)
        )
        assert len(res.docs) == 2 and res.docs[0].id == "solo"

    run(go())


def test_sort_by_numbers_then_strings_missing_last() -> None:
    async def go() -> None:
        _, s = await _session()
        v = [1.0] * DIM
        prices = ["10", "9.5", "100", "50", "abc", None]
        await s.add_docs(
            [DocumentInfo(str(i), "t", {"price": p} if p else {}, v) for i, p in enumerate(prices)]
        )
        asc = await s.get_docs(GetDocumentsOptions(sort_by="price"))
        assert [d.id for d in asc] == ["1", "0", "3", "2", "4", "5"]
        desc = await s.get_docs(GetDocumentsOptions(sort_by="price", ascending=False))
        # "ascending=False reverses those that have the field"; documents without it stay last
        assert [d.id for d in desc] == ["4", "2", "3", "0", "1", "5"]

    run(go())


def test_closed_session_and_client() -> None:
    async def go() -> None:
        client, s = await _session(n=3)
        await s.close()
        await s.close()
        assert s.name == "s" and s.model_id == "custom"
        with pytest.raises(InvalidArgumentError, match="SessionIndex is closed"):
            _ = s.doc_count
        with pytest.raises(InvalidArgumentError, match="SessionIndex is closed"):
            await s.query("x")
        await client.close()
        with pytest.raises(RuntimeError, match="MossClient is closed"):
            await client.session("t")

    run(go())


def test_bad_names_and_model_ids() -> None:
    async def go() -> None:
        client = MossClient("p", "k")
        for name in ["", " ", ".", "..", "a/b", "x\n", "é" * 200]:
            with pytest.raises(InvalidArgumentError, match="index name must not be blank"):
                await client.session(name, model_id="custom")
        with pytest.raises(InvalidArgumentError, match="moss-minilm"):
            await client.session("ok", model_id="gpt-9")
        with pytest.raises(InvalidArgumentError, match="pass both or neither"):
            await client.session("ok", artifact_version="x")
        s = await client.session("Upper Case Name", model_id="custom")
        assert s.name == "Upper Case Name"

    run(go())


def test_queries_never_see_half_an_add() -> None:
    async def go() -> None:
        _, s = await _session()
        engine = s.engine
        batch = 40
        errors: list[str] = []

        def writer() -> None:
            for b in range(30):
                docs = [
                    DocumentInfo(f"{b}-{i}", "marker word", None, unit_vectors(1, DIM, b * 100 + i)[0].tolist())
                    for i in range(batch)
                ]  # fmt: skip
                engine.add_documents(docs)

        t = threading.Thread(target=writer)
        t.start()
        while t.is_alive():
            res = engine.query("marker", QueryOptions(top_k=10_000, alpha=0.0))
            if len(res.docs) % batch:
                errors.append(f"saw {len(res.docs)} docs")
        t.join()
        assert not errors
        assert engine.doc_count == 30 * batch

    run(go())


def test_errors_are_typed() -> None:
    async def go() -> None:
        _, s = await _session(n=3)
        with pytest.raises(InvalidArgumentError):
            await s.add_docs({"id": "1", "text": "x"})  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError):
            await s.delete_docs("1")  # type: ignore[arg-type]
        with pytest.raises(MossError):
            await s.query(5)  # type: ignore[arg-type]

    run(go())

"""Loaded indexes (API.md §3.11): version checks, hot swap, auto-refresh, cache, offline tolerance,
bulk loads and multi-index queries, checked against brute-force references written here."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import moss.runtime as runtime
from moss import (
    DocumentInfo,
    InvalidArgumentError,
    MossClient,
    MossError,
    QueryOptions,
    SessionIndex,
)
from moss.server.testing import ServerProcess

from .conftest import naive_bm25

DIM = 16
WORDS = "apple banana cherry delta echo falcon garden harbor island jungle".split()


def unit(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def corpus(n: int, seed: int, prefix: str = "", tag: str = "") -> list[DocumentInfo]:
    rng = np.random.default_rng(seed)
    vecs = unit(n, seed)
    return [
        DocumentInfo(
            f"{prefix}{i}",
            " ".join(rng.choice(WORDS, size=5)) + (f" {tag}" if tag else ""),
            {"k": str(i % 3)},
            vecs[i].tolist(),
        )
        for i in range(n)
    ]


async def push(client: MossClient, name: str, docs: list[DocumentInfo]) -> None:
    s = await client.session(name, model_id="custom", auto_load_on_init=False)
    await s.add_docs(docs)
    await client.wait_for_job((await s.push_index()).job_id, poll_interval_seconds=0.05)
    await s.close()


def test_version_check_transfers_nothing_when_unchanged() -> None:
    async def go() -> None:
        c = MossClient("p", "k")
        await push(c, "kb", corpus(20, 0))
        assert await c.load_index("kb") == "kb"
        first = c._runtime._entry("kb").engine
        version = (await c.get_index("kb")).version
        assert c._runtime.loaded_version("kb") == version
        # unchanged: the backend answers "no transfer" and the same engine keeps serving
        assert c._cloud.backend.download("kb", version) == (version, None)
        await c.load_index("kb")
        assert c._runtime._entry("kb").engine is first
        # changed: a new engine is built and swapped in
        await c.add_docs("kb", corpus(1, 5, prefix="new"))
        await c.load_index("kb")
        assert c._runtime._entry("kb").engine is not first
        assert c._runtime.loaded_version("kb") == (await c.get_index("kb")).version
        res = await c.query("kb", "", QueryOptions(embedding=corpus(1, 5)[0].embedding, top_k=1))
        assert res.docs[0].id == "new0" and res.index_name == "kb"
        await c.close()

    asyncio.run(go())


def test_hot_reload_while_queries_run() -> None:
    """Every query sees one complete version: never a mix, never a half-built index."""
    n = 40

    async def go() -> None:
        c = MossClient("p", "k")
        await push(c, "kb", corpus(n, 1, tag="v0"))
        await c.load_index("kb")
        q = unit(1, 99)[0].tolist()
        seen: list[set[str]] = []
        errors: list[BaseException] = []
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                try:
                    res = c._runtime.query("kb", "", QueryOptions(embedding=q, top_k=n))
                    seen.append({d.text.rsplit(" ", 1)[1] for d in res.docs})
                    assert len(res.docs) == n
                except BaseException as e:  # pragma: no cover - reported below
                    errors.append(e)
                    return

        threads = [threading.Thread(target=hammer) for _ in range(2)]
        for t in threads:
            t.start()
        for v in range(1, 6):
            await push(c, "kb", corpus(n, 1, tag=f"v{v}"))
            await c.load_index("kb")
        stop.set()
        for t in threads:
            t.join()
        assert not errors
        assert all(len(tags) == 1 for tags in seen)  # one version per result
        assert len({next(iter(t)) for t in seen}) >= 3  # the queries really ran across swaps
        final = await c.query("kb", "", QueryOptions(embedding=q, top_k=n))
        assert {d.text.rsplit(" ", 1)[1] for d in final.docs} == {"v5"}
        await c.close()

    asyncio.run(go())


def test_auto_refresh_polls_and_stops_on_unload_or_delete() -> None:
    async def go() -> None:
        c = MossClient("p", "k")
        await push(c, "kb", corpus(5, 2, tag="old"))
        await c.load_index("kb", auto_refresh=True, polling_interval_in_seconds=0.05)
        poller = c._runtime._entry("kb").poller
        assert poller is not None and poller.is_alive()
        await push(c, "kb", corpus(5, 2, tag="new"))
        q = QueryOptions(embedding=corpus(1, 2)[0].embedding, top_k=1)
        for _ in range(200):
            if (await c.query("kb", "", q)).docs[0].text.endswith("new"):
                break
            await asyncio.sleep(0.02)
        assert (await c.query("kb", "", q)).docs[0].text.endswith("new")
        # deleted in the cloud: the copy keeps serving and the poller stops
        await c.delete_index("kb")
        poller.join(5)
        assert not poller.is_alive()
        assert (await c.query("kb", "", q)).docs[0].text.endswith("new")
        # a fresh poller goes away with unload
        await push(c, "kb2", corpus(3, 3))
        await c.load_index("kb2", auto_refresh=True, polling_interval_in_seconds=0.05)
        p2 = c._runtime._entry("kb2").poller
        assert p2 is not None
        await c.unload_index("kb2")
        p2.join(5)
        assert not p2.is_alive()
        # no longer loaded: the store answers the query (docs/api.md)
        last = corpus(3, 3)[2]
        hit = await c.query("kb2", "", QueryOptions(embedding=last.embedding, top_k=1))
        assert hit.docs[0].id == last.id and not c._runtime.is_loaded("kb2")
        await c.unload_indexes(["kb", "never-loaded"])
        await c.close()

    asyncio.run(go())


def test_cache_path_snapshot_and_version_record(tmp_path: Path) -> None:
    async def go() -> None:
        cache = tmp_path / "cache"
        c = MossClient("p", "k", cache_path=str(cache))
        await push(c, "my index", corpus(8, 4))
        await c.load_index("my index")
        version = (await c.get_index("my index")).version
        assert (cache / "my index" / "CURRENT").is_file()
        assert c._runtime._cached_version(cache / "my index") == version
        # another project's client never uses this snapshot as its own
        other = MossClient("other", "k", cache_path=str(cache))
        assert other._runtime._cached_version(cache / "my index") is None
        # a second client with the same cache: "unchanged" -> the snapshot is read, same results
        c2 = MossClient("p", "k", cache_path=str(cache))
        await c2.load_index("my index")
        q = QueryOptions(embedding=corpus(1, 4)[0].embedding, top_k=3)
        assert [d.id for d in (await c2.query("my index", "", q)).docs] == [
            d.id for d in (await c.query("my index", "", q)).docs
        ]
        # an explicit cache_path argument overrides the client's
        alt = tmp_path / "alt"
        await c2.load_index("my index", cache_path=str(alt))
        assert (alt / "my index" / "CURRENT").is_file()
        for x in (c, c2, other):
            await x.close()

    asyncio.run(go())


def test_load_indexes_best_effort() -> None:
    async def go() -> None:
        c = MossClient("p", "k")
        for i in range(10):
            await push(c, f"i{i}", corpus(3, i))
        names = [f"i{i}" for i in range(10)] + ["missing", "../bad", "i0"]
        res = await c.load_indexes(names)
        assert res.loaded == [f"i{i}" for i in range(10)]
        assert res.failed_codes == {"missing": "NOT_FOUND", "../bad": "INVALID_ARGUMENT"}
        assert "missing" in res.failed["missing"]
        for i in range(10):
            assert await c.was_served_stale(f"i{i}") is False
        with pytest.raises(RuntimeError, match="not loaded"):
            await c.was_served_stale("missing")
        await c.close()

    asyncio.run(go())


# ------------------------------------------------------------------------------ multi-index


def test_query_multi_index_matches_brute_force() -> None:
    async def go() -> None:
        c = MossClient("p", "k")
        parts = {"a": corpus(30, 10, "a"), "b": corpus(25, 11, "b")}
        for name, docs in parts.items():
            await push(c, name, docs)
        await c.load_indexes(list(parts))
        session = await c.session("live", model_id="custom", auto_load_on_init=False)
        parts["live"] = corpus(20, 12, "s")
        await session.add_docs(parts["live"])
        targets: list[str | SessionIndex] = ["a", "b", session]
        source = {d.id: name for name, docs in parts.items() for d in docs}
        every = [d for docs in parts.values() for d in docs]
        q = unit(1, 77)[0]

        # vector only: the global top by cosine
        res = await c.query_multi_index(targets, "", QueryOptions(embedding=q.tolist(), alpha=1))
        cos = {d.id: float(np.dot(np.asarray(d.embedding), q)) for d in every}
        expected = sorted(cos, key=lambda i: -cos[i])[:10]
        assert [d.id for d in res.docs] == expected
        assert res.index_name is None and res.model_id == "custom"
        for d in res.docs:
            assert d.index_name == source[d.id] and d.score == pytest.approx(max(cos[d.id], 0))

        # keyword only: each index's own BM25 statistics, merged by score
        bm = {}
        for docs in parts.values():
            bm.update(naive_bm25({d.id: d.text for d in docs}, "apple cherry"))
        res = await c.query_multi_index(targets, "apple cherry", QueryOptions(alpha=0, top_k=7))
        got = [d.id for d in res.docs]
        assert sorted(bm[i] for i in got) == pytest.approx(sorted(bm.values())[-7:])

        # filter and min_score are global
        flt = {"field": "k", "condition": {"$eq": "1"}}
        res = await c.query_multi_index(
            targets,
            "",
            QueryOptions(embedding=q.tolist(), alpha=1, filter=flt, min_score=0.2, top_k=50),
        )
        want = [
            i for i in sorted(cos, key=lambda i: -cos[i]) if cos[i] >= 0.2 and int(i[1:]) % 3 == 1
        ]
        assert [d.id for d in res.docs] == want

        # a hybrid query ranks the union consistently with one index holding everything
        await push(c, "all", every)
        await c.load_index("all")
        opts = QueryOptions(embedding=q.tolist(), alpha=1.0, top_k=10)
        union = await c.query("all", "", opts)
        multi = await c.query_multi_index(targets, "", opts)
        assert [d.id for d in multi.docs] == [d.id for d in union.docs]
        await c.close()

    asyncio.run(go())


def test_query_multi_index_errors() -> None:
    async def go() -> None:
        c = MossClient("p", "k")
        await push(c, "a", corpus(3, 1))
        await c.load_index("a")
        with pytest.raises(InvalidArgumentError, match="requires at least one index name"):
            await c.query_multi_index([], "x")
        with pytest.raises(MossError, match="'b' not found") as e:  # b is not loaded: asked
            await c.query_multi_index(["a", "b"], "x")
        assert e.value.code == "NOT_FOUND"
        other = MossClient("p", "k")
        foreign = await other.session("s", model_id="custom", auto_load_on_init=False)
        with pytest.raises(InvalidArgumentError, match="another MossClient"):
            await c.query_multi_index(["a", foreign], "x")
        with pytest.raises(InvalidArgumentError, match="custom embeddings"):
            await c.query_multi_index(["a"], "x")
        with pytest.raises(InvalidArgumentError, match="min_score"):
            await c.query_multi_index(["a"], "x", QueryOptions(alpha=0, min_score=0.1))
        wrong_dim = await c.session("w", model_id="custom", auto_load_on_init=False)
        await wrong_dim.add_docs([DocumentInfo("z", "z", None, [1.0, 0.0])])
        with pytest.raises(InvalidArgumentError, match="dimension"):
            await c.query_multi_index(["a", wrong_dim], "x", QueryOptions(alpha=0))
        assert (await c.query_multi_index(["a"], "x", QueryOptions(top_k=0))).docs == []
        await other.close()
        await c.close()

    asyncio.run(go())


# ------------------------------------------------------------------------------ offline


def test_offline_tolerant_load_then_refresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Server stopped: served stale from the cache; restarted: swapped in and flag cleared."""
    monkeypatch.setattr(runtime, "OFFLINE_ATTEMPT_S", 0.5)
    cache = str(tmp_path / "cache")
    server = ServerProcess(tmp_path / "server").start()
    try:

        async def go() -> None:
            a = MossClient(*server.project, server_url=server.url, cache_path=cache)
            await push(a, "kb", corpus(6, 3, tag="v1"))
            await a.load_index("kb")  # the cache holds v1 ...
            await push(a, "kb", corpus(6, 3, tag="v2"))  # ... the server v2
            await push(a, "gone", corpus(2, 4))
            await a.load_index("gone")
            await a.delete_index("gone")
            await a.close()
            server.stop()

            b = MossClient(*server.project, server_url=server.url, cache_path=cache)
            start = time.monotonic()
            await b.load_index("kb", polling_interval_in_seconds=0.1)
            assert time.monotonic() - start < 5
            assert await b.was_served_stale("kb") is True
            q = QueryOptions(embedding=corpus(1, 3)[0].embedding, top_k=1)
            assert (await b.query("kb", "", q)).docs[0].text.endswith("v1")
            with pytest.raises(MossError) as e:  # no snapshot: the transport error surfaces
                await b.load_index("never-cached")
            assert e.value.code == "NETWORK"

            server.start()
            for _ in range(200):
                if not await b.was_served_stale("kb"):
                    break
                await asyncio.sleep(0.05)
            assert await b.was_served_stale("kb") is False
            assert (await b.query("kb", "", q)).docs[0].text.endswith("v2")
            # a deleted index never comes back from the cache
            with pytest.raises(MossError) as e:
                await b.load_index("gone")
            assert e.value.code == "NOT_FOUND"
            await b.close()

        asyncio.run(go())
    finally:
        server.stop()


def test_query_multi_index_hybrid_matches_brute_force() -> None:
    """Score fusion across indexes: the best documents of all by alpha * clamp(cos) + (1 - alpha) *
    fraction, where fraction is BM25 over each index's own maximum BM25 for the query, counted
    for the global keyword top D only (every candidate's cosine counts, so this is exact)."""
    import math

    from moss.analysis import analyze

    async def go() -> None:
        c = MossClient("p", "k")
        rng = np.random.default_rng(23)
        vocab = [f"w{j}" for j in range(40)]  # varied lengths and terms: no exact BM25 ties
        parts = {"a": corpus(60, 21, "a"), "b": corpus(45, 22, "b")}
        for docs in parts.values():
            for d in docs:
                d.text = " ".join(rng.choice(vocab, size=int(rng.integers(3, 15))))
        for name, docs in parts.items():
            await push(c, name, docs)
        await c.load_indexes(list(parts))
        q = unit(1, 78)[0]
        query, alpha, top_k = "w1 w2 w3", 0.5, 5
        res = await c.query_multi_index(
            list(parts), query, QueryOptions(embedding=q.tolist(), alpha=alpha, top_k=top_k)
        )
        every = [d for docs in parts.values() for d in docs]
        cos = {d.id: float(np.dot(np.asarray(d.embedding), q)) for d in every}
        frac: dict[str, float] = {}
        for docs in parts.values():
            bm = naive_bm25({d.id: d.text for d in docs}, query)
            toks = [analyze(d.text) for d in docs]
            top = 0.0
            for term in analyze(query):
                df = sum(term in t for t in toks)
                if df:
                    top += math.log(1 + (len(docs) - df + 0.5) / (df + 0.5)) * 2.2
            frac.update({i: s / top for i, s in bm.items()})
        k_list = sorted(frac, key=lambda i: -frac[i])[: 2 * top_k]

        def fused(i: str) -> float:
            f = alpha * min(max(cos[i], 0.0), 1.0)
            return f + ((1 - alpha) * frac[i] if i in k_list else 0.0)

        expect = sorted(cos, key=lambda i: -fused(i))[:top_k]
        got = [d.id for d in res.docs]
        assert [round(fused(i), 6) for i in got] == [round(fused(i), 6) for i in expect]
        assert set(got) & set(k_list)  # the keyword side took part
        await c.close()

    asyncio.run(go())

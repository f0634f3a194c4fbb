"""Queries on indexes the client has not loaded: answered where the index is stored.

``MossClient.query`` on an unloaded index runs on the embedded store or on ``moss serve`` (``POST
/v1/indexes/{name}/query``) through :class:`moss.server.queries.QueryService`. The contract is
congruence: the result equals the one a client gets after ``load_index`` of the same version
(same ids in the same order, scores within 1e-6), for custom vectors and for the built-in model,
with filters, grouping, both fusions, alpha 0 / 0.5 / 1 and several ``top_k``. Also checked: a
new version is seen without loading, the cache bounds (count and bytes), one load for racing
first queries, the errors (same class, code and message as a loaded copy), the HTTP route's own
input checks, ``query_multi_index`` over unloaded indexes, and ``MutationResult.doc_count``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from moss import (
    DocumentInfo,
    InvalidArgumentError,
    MossClient,
    MossError,
    ParentGrouping,
    QueryOptions,
    SearchResult,
)
from moss.server import create_project
from moss.server.queries import QueryService, shared_service
from moss.server.testing import ThreadedServer
from tests.conftest import HAS_MODEL

DIM = 8
WORDS = "apple banana cherry delta echo falcon garden harbor".split()


def vec(seed: int, dim: int = DIM) -> list[float]:
    v = np.random.default_rng(seed).standard_normal(dim)
    return (v / np.linalg.norm(v)).tolist()


def docs(n: int, start: int = 0, vectors: bool = True) -> list[DocumentInfo]:
    return [
        DocumentInfo(
            str(i),
            f"{WORDS[i % 8]} {WORDS[(i * 3) % 8]} note {i}",
            {"group": f"g{i % 3}", "n": str(i), "parentId": f"p{i % 4}"},
            vec(i) if vectors else None,
        )
        for i in range(start, start + n)
    ]


FLT = {"field": "group", "condition": {"$in": ["g0", "g2"]}}


def queries(custom: bool) -> list[tuple[str, QueryOptions | None]]:
    """Each query with the options exercised; custom indexes get a query vector."""
    e: Callable[[int], list[float] | None] = (lambda s: vec(s)) if custom else (lambda s: None)
    return [
        ("apple", QueryOptions(embedding=e(4), top_k=4, alpha=1.0)),
        ("banana note", QueryOptions(embedding=e(7), alpha=0.5)),
        ("banana note", QueryOptions(embedding=e(7), alpha=0.5, fusion="rrf", top_k=7)),
        ("cherry delta", QueryOptions(alpha=0.0, top_k=3)),
        ("garden", QueryOptions(embedding=e(2), filter=FLT, top_k=10, min_score=0.0)),
        ("note", QueryOptions(embedding=e(3), group_by=ParentGrouping("parentId", "n"))),
        ("echo", QueryOptions(embedding=e(9), top_k=0)),
        *([] if custom else [("falcon harbor", None)]),
    ]


def assert_same(a: SearchResult, b: SearchResult) -> None:
    assert [d.id for d in a.docs] == [d.id for d in b.docs]
    for x, y in zip(a.docs, b.docs):
        assert x.score == pytest.approx(y.score, abs=1e-6)
        assert (x.text, x.metadata, x.index_name, x.payload) == (
            y.text,
            y.metadata,
            y.index_name,
            y.payload,
        )
    assert (a.query, a.index_name, a.model_id) == (b.query, b.index_name, b.model_id)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    with ThreadedServer(tmp_path_factory.mktemp("server"), query_cache_indexes=3) as s:
        yield s


@pytest.fixture(params=["embedded", "http"])
def make(request: pytest.FixtureRequest) -> Iterator[Callable[[], MossClient]]:
    """Clients of one fresh project on the backend under test."""
    made: list[MossClient] = []
    if request.param == "http":
        srv: ThreadedServer = request.getfixturevalue("server")
        project, url = create_project(srv.data_dir), srv.url
    else:  # conftest points MOSS_DATA_DIR at a fresh directory
        project, url = ("proj", "any-key"), None

    def new() -> MossClient:
        made.append(MossClient(*project, server_url=url))
        return made[-1]

    yield new
    for c in made:
        c.__exit__(None, None, None)


async def congruence(make: Callable[[], MossClient], model_id: str | None) -> None:
    custom = model_id is None
    thin, loaded = make(), make()
    await thin.create_index("kb", docs(24, vectors=custom), model_id)
    await loaded.load_index("kb")
    for text, options in queries(custom):
        remote = await thin.query("kb", text, options)
        local = await loaded.query("kb", text, options)
        assert_same(remote, local)
        top_k = 5 if options is None or options.top_k is None else options.top_k
        if top_k and text.strip():
            assert remote.docs and len(remote.docs) <= top_k
    assert not thin._runtime.is_loaded("kb")  # nothing was loaded on the thin client


def test_congruence_custom_vectors(make: Callable[[], MossClient]) -> None:
    asyncio.run(congruence(make, None))


@pytest.mark.skipif(not HAS_MODEL, reason="the moss-minilm model package is not installed")
def test_congruence_builtin_model(make: Callable[[], MossClient]) -> None:
    asyncio.run(congruence(make, "moss-minilm"))


def test_new_versions_are_seen_without_loading(make: Callable[[], MossClient]) -> None:
    async def go() -> None:
        c = make()
        await c.create_index("kb", docs(6))
        opts = QueryOptions(embedding=vec(40), top_k=1, alpha=1.0)
        assert (await c.query("kb", "", opts)).docs[0].id != "40"
        await c.add_docs("kb", docs(1, start=40))
        assert (await c.query("kb", "", opts)).docs[0].id == "40"
        await c.delete_docs("kb", ["40"])
        assert (await c.query("kb", "", opts)).docs[0].id != "40"
        # a loaded copy still answers in process, from the version it holds
        await c.load_index("kb")
        await c.add_docs("kb", docs(1, start=40))
        assert (await c.query("kb", "", opts)).docs[0].id != "40"
        await c.unload_index("kb")
        assert (await c.query("kb", "", opts)).docs[0].id == "40"
        # deleted: NOT_FOUND at once; recreated under the same name: the new index answers
        await c.delete_index("kb")
        assert (await error_of(c.query("kb", "", opts)))[1] == "NOT_FOUND"
        await c.create_index("kb", docs(1, start=7))
        assert [d.id for d in (await c.query("kb", "", opts)).docs] == ["7"]

    asyncio.run(go())


def embedded_store(c: MossClient) -> Any:
    return c._cloud.backend.store  # type: ignore[attr-defined]


def test_cache_bounds_versions_and_single_load() -> None:
    async def go() -> None:
        c = MossClient("proj", "k")
        for i in range(4):
            await c.create_index(f"ix{i}", docs(5 + i))
        store = embedded_store(c)
        opts = QueryOptions(embedding=vec(1), top_k=2, alpha=1.0)

        by_count = QueryService(store, max_indexes=2)
        for i in range(4):
            by_count.query("proj", f"ix{i}", "", opts)
            assert len(by_count.held()) == min(i + 1, 2)
        assert [k[1] for k in by_count.held()] == ["ix2", "ix3"]  # least recently used went
        assert by_count.loads == 4
        by_count.query("proj", "ix3", "", opts)  # a hit: no load
        assert by_count.loads == 4

        by_bytes = QueryService(store, max_indexes=10, max_bytes=1)
        for i in range(3):  # each version alone exceeds the bound: only the last is held
            by_bytes.query("proj", f"ix{i}", "", opts)
            assert [k[1] for k in by_bytes.held()] == [f"ix{i}"]
        assert by_bytes.held_bytes() > 1

        # a new version replaces the old one of the same index
        await c.add_docs("ix3", docs(1, start=50))
        by_count.query("proj", "ix3", "", opts)
        assert [k[1] for k in by_count.held()].count("ix3") == 1
        assert by_count.loads == 5
        await c.delete_index("ix3")  # a deleted index's version is dropped on the next query
        with pytest.raises(MossError) as e:
            by_count.query("proj", "ix3", "", opts)
        assert e.value.code == "NOT_FOUND" and "ix3" not in [k[1] for k in by_count.held()]

        # racing first queries of one index load it once
        racing = QueryService(store)
        gate = threading.Barrier(6)
        out: list[Any] = []

        def one() -> None:
            gate.wait()
            out.append(racing.query("proj", "ix0", "", opts))

        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert racing.loads == 1 and len(out) == 6
        assert len({tuple(d.id for d in r.docs) for r in out}) == 1

        # the embedded backend shares one service per store
        assert shared_service(store) is shared_service(store)
        c.__exit__(None, None, None)

    asyncio.run(go())


def test_environment_sets_the_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    c = MossClient("proj", "k")
    asyncio.run(c.create_index("kb", docs(3)))
    monkeypatch.setenv("MOSS_QUERY_CACHE_INDEXES", "3")
    monkeypatch.setenv("MOSS_QUERY_CACHE_BYTES", "12345")
    service = QueryService(embedded_store(c))
    assert (service.max_indexes, service.max_bytes) == (3, 12345)
    monkeypatch.setenv("MOSS_QUERY_CACHE_INDEXES", "many")
    with pytest.raises(InvalidArgumentError, match="MOSS_QUERY_CACHE_INDEXES"):
        QueryService(embedded_store(c))
    c.__exit__(None, None, None)


async def error_of(coro: Any) -> tuple[str, str | None, str, str | None]:
    try:
        await coro
    except MossError as e:
        return (type(e).__name__, e.code, str(e), e.detail)
    raise AssertionError("no error")


def test_errors_match_a_loaded_copy(make: Callable[[], MossClient]) -> None:
    async def go() -> None:
        thin, loaded = make(), make()
        await thin.create_index("kb", docs(5))
        await loaded.load_index("kb")
        bad = [
            QueryOptions(embedding=vec(1), filter={"field": "n", "condition": {"$bogus": 1}}),
            QueryOptions(embedding=vec(1), top_k=-1),
            QueryOptions(embedding=vec(1), alpha=1.5),
            QueryOptions(embedding=vec(1, dim=DIM + 1)),
            QueryOptions(embedding=[float("nan")] * DIM),
            QueryOptions(embedding=vec(1), min_score=0.5, alpha=0.0),
            QueryOptions(alpha=0.5),  # custom index, text query, no vector
            QueryOptions(embedding=vec(1), fusion="max"),  # type: ignore[arg-type]
        ]
        for options in bad:
            remote = await error_of(thin.query("kb", "apple", options))
            assert remote == await error_of(loaded.query("kb", "apple", options))
            assert remote[1] == "INVALID_ARGUMENT"
        missing = await error_of(thin.query("nope", "x"))
        assert missing[:2] == ("MossError", "NOT_FOUND") and "nope" in missing[2]

    asyncio.run(go())


def test_http_route_checks_its_input(server: ThreadedServer) -> None:
    async def setup() -> tuple[str, str]:
        project = create_project(server.data_dir)
        c = MossClient(*project, server_url=server.url)
        await c.create_index("kb", docs(4))
        await c.close()
        return project

    pid, key = asyncio.run(setup())
    auth = {"X-Moss-Project-Id": pid, "Authorization": f"Bearer {key}"}
    url = server.url + "/v1/indexes/kb/query"
    with httpx.Client(headers=auth) as h:
        ok = h.post(url, json={"query": "", "embedding": vec(2), "top_k": 1, "alpha": 1.0})
        assert ok.status_code == 200 and ok.json()["docs"][0]["id"] == "2"
        for body, words in (
            ({"query": "x", "topk": 1}, "unknown query field"),
            ({"embedding": vec(1)}, "query must be a str"),
            ({"query": "x", "top_k": "3"}, "top_k must be an integer"),
            ({"query": "x", "filter": [1]}, "filter must be a JSON object"),
            ({"query": "x", "group_by": {"parent_field": "p"}}, "group_by must be"),
            ([1, 2], "JSON object"),
        ):
            r = h.post(url, json=body)
            assert r.status_code == 400, body
            assert words in r.json()["error"]["message"]
        r = h.get(url)
        assert r.status_code == 405 and r.headers["allow"] == "POST"
    wrong = httpx.post(url, json={"query": "x"}, headers={**auth, "Authorization": "Bearer no"})
    assert wrong.status_code == 401

    async def bad_key() -> tuple[str, str | None, str, str | None]:
        c = MossClient(pid, "not-the-key", server_url=server.url)
        try:
            return await error_of(c.query("kb", "x"))
        finally:
            await c.close()

    assert asyncio.run(bad_key())[1] == "UNAUTHORIZED"


def test_query_multi_index_over_unloaded_indexes(make: Callable[[], MossClient]) -> None:
    async def go() -> None:
        thin, loaded = make(), make()
        await thin.create_index("a", docs(10))
        await thin.create_index("b", docs(10, start=10))
        await loaded.load_indexes(["a", "b"])
        await thin.load_index("a")  # one loaded, one not: both paths at once
        for options in (
            QueryOptions(embedding=vec(12), alpha=1.0),
            QueryOptions(embedding=vec(3), alpha=1.0, top_k=4, filter=FLT),
        ):
            remote = await thin.query_multi_index(["a", "b"], "", options)
            local = await loaded.query_multi_index(["a", "b"], "", options)
            assert_same(remote, local)
            assert {d.index_name for d in remote.docs} == {"a", "b"}
        await thin.unload_index("a")
        both = await thin.query_multi_index(["a", "b", "a"], "", QueryOptions(embedding=vec(1)))
        assert len(both.docs) == 10 and both.docs[0].id == "1"
        scores = [d.score for d in both.docs]
        assert scores == sorted(scores, reverse=True)
        missing = await error_of(
            thin.query_multi_index(["a", "zz"], "", QueryOptions(embedding=vec(1)))
        )
        assert missing[1] == "NOT_FOUND"

    asyncio.run(go())


def test_mutation_doc_count_is_the_mutation_size(make: Callable[[], MossClient]) -> None:
    async def go() -> None:
        c = make()
        created = await c.create_index("kb", docs(10))
        assert created.doc_count == 10
        added = await c.add_docs("kb", docs(50, start=5))  # 5 replaced, 45 new
        assert added.doc_count == 50
        assert (await c.get_index("kb")).doc_count == 55
        deleted = await c.delete_docs("kb", ["1", "2", "not-there"])
        assert deleted.doc_count == 3
        assert (await c.get_index("kb")).doc_count == 53

    asyncio.run(go())


def test_server_cache_setting_is_applied(server: ThreadedServer) -> None:
    service = server.app.state.queries
    assert isinstance(service, QueryService) and service.max_indexes == 3
    assert service.store is server.app.state.store

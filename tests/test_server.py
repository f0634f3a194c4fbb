"""The server and its storage engine: blobs, catalog transactions, jobs, auth, isolation, the
REST API's error codes and limits. Over real sockets (uvicorn in a thread) unless noted."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pytest

from moss import AlreadyExistsError, DocumentInfo, GetDocumentsOptions, MossClient, MossError
from moss.cloud.http import HttpBackend
from moss.cloud.wire import encode_batch, error_body, error_from_body
from moss.errors import (
    ALREADY_EXISTS,
    DESERIALIZATION,
    INTERNAL,
    INVALID_ARGUMENT,
    MODEL_UNAVAILABLE,
    NETWORK,
    NOT_FOUND,
    UNAUTHORIZED,
    InvalidArgumentError,
)
from moss.server import Store, create_project
from moss.server.app import create_app
from moss.server.catalog import SqliteCatalog
from moss.server.openapi import openapi_document
from moss.server.storage import FileBlobStore
from moss.server.testing import ThreadedServer, free_port
from moss.snapshot import pack, unpack

DIM = 8
MAX_UPLOAD = 2 << 20
MAX_JSON = 64 << 10


def vec(i: int) -> list[float]:
    v = np.random.default_rng(i).standard_normal(DIM)
    return (v / np.linalg.norm(v)).tolist()


def docs(n: int, tag: str = "") -> list[DocumentInfo]:
    return [DocumentInfo(str(i), f"text {i} {tag}", {"i": str(i)}, vec(i)) for i in range(n)]


def batch(n: int, tag: str = "") -> bytes:
    d = docs(n, tag)
    return encode_batch(d, "custom", np.asarray([x.embedding for x in d], np.float32))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    with ThreadedServer(
        tmp_path_factory.mktemp("srv"),
        max_upload_bytes=MAX_UPLOAD,
        max_json_bytes=MAX_JSON,
        auth_failures_burst=10_000,  # this module fails auth on purpose, many times
    ) as s:
        yield s


def raw(
    server: ThreadedServer,
    method: str,
    path: str,
    project: tuple[str, str] | None = None,
    **kw: Any,
) -> httpx.Response:
    pid, key = project or server.project
    headers = {"X-Moss-Project-Id": pid, "Authorization": f"Bearer {key}", **kw.pop("headers", {})}
    return httpx.request(method, server.url + path, headers=headers, timeout=30, **kw)


def code_of(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


# ------------------------------------------------------------------------------ storage, catalog


def test_blob_store_publishes_whole_blobs_only(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    store.put("versions/a", b"hello")
    assert bytes(store.read("versions/a")) == b"hello" and store.size("versions/a") == 5
    with pytest.raises(RuntimeError), store.create("versions/b") as f:
        f.write(b"half")
        raise RuntimeError("crash while writing")
    assert store.keys("versions") == ["versions/a"]  # no half blob, no temporary left
    assert not list((tmp_path / "versions").glob(".tmp-*"))
    store.move("versions/a", "versions/c")
    assert store.keys("versions") == ["versions/c"]
    with pytest.raises(KeyError):
        store.read("versions/a")
    assert store.delete("versions/c") and store.delete("versions/never")
    for bad in ("../x", "versions/../../x", "versions/a/b", "x"):
        with pytest.raises(ValueError):
            store.put(bad, b"")


def test_jobs_on_one_index_are_claimed_in_order(tmp_path: Path) -> None:
    cat = SqliteCatalog(tmp_path / "c.sqlite3")
    for jid, index in (("j1", "a"), ("j2", "a"), ("j3", "b"), ("j4", "a")):
        cat.create_job(jid, "p", index, None, "push", "me", {})
        cat.queue_job(jid, None, 1)
    assert cat.claim_next("me").id == "j1"  # type: ignore[union-attr]
    assert cat.claim_next("me").id == "j3"  # type: ignore[union-attr]  # "a" is busy
    assert cat.claim_next("me") is None
    cat.fail_job("j1", "x")
    assert cat.claim_next("me").id == "j2"  # type: ignore[union-attr]
    assert cat.claim_next("other-owner") is None
    failed = cat.fail_owner("me", "gone")
    assert {j.id for j in failed} == {"j2", "j3", "j4"}
    assert all(cat.get_job(j).status == "failed" for j in ("j2", "j3", "j4"))  # type: ignore[union-attr]
    cat.close()


def test_failed_job_leaves_index_unchanged_and_old_versions_are_collected(tmp_path: Path) -> None:
    store = Store(tmp_path)
    try:
        store.ensure_project("p")
        first = store.submit("p", "kb", "create", batch(5, "v1"), {"model_id": "custom"})
        assert store.wait_job("p", first.id, 10).status == "completed"
        v1 = store.get_index("p", "kb").version
        docs_v1 = store.get_docs("p", "kb")
        # a snapshot whose index arrays are damaged passes the container checks but fails the job
        data = unpack(pack_session(7))
        data.arrays["bm25/indptr"] = np.asarray([5, 1], dtype=np.int64)
        bad = store.submit("p", "kb", "push", pack(data))
        done = store.wait_job("p", bad.id, 10)
        assert done.status == "failed" and done.error and "Traceback" not in done.error
        assert store.get_index("p", "kb").version == v1
        assert store.get_docs("p", "kb") == docs_v1
        ok = store.submit("p", "kb", "push", pack_session(3))
        assert store.wait_job("p", ok.id, 10).status == "completed"
        assert store.get_index("p", "kb").doc_count == 3
        assert len(store.blobs.keys("versions")) == 1  # v1 was garbage-collected
        assert store.blobs.keys("uploads") == []
    finally:
        store.close()


def pack_session(n: int) -> bytes:
    async def build() -> bytes:
        c = MossClient("tmp", "k")
        s = await c.session("tmp", model_id="custom", auto_load_on_init=False)
        await s.add_docs(docs(n))
        blob = pack(s.engine.to_snapshot(name="tmp"))
        c.__exit__(None, None, None)
        return blob

    return asyncio.run(build())


def test_jobs_apply_in_submission_order(tmp_path: Path) -> None:
    store = Store(tmp_path)
    try:
        store.ensure_project("p")
        store.wait_job(
            "p", store.submit("p", "kb", "create", batch(1), {"model_id": "custom"}).id, 10
        )
        jobs = []
        for k in range(12):
            d = [DocumentInfo("x", f"version {k}", None, vec(k))]
            blob = encode_batch(d, "custom", np.asarray([vec(k)], np.float32))
            jobs.append(store.submit("p", "kb", "add", blob))
        finals = [store.wait_job("p", j.id, 20) for j in jobs]
        assert all(j.status == "completed" for j in finals)
        assert [j.completed_at for j in finals] == sorted(j.completed_at or "" for j in finals)
        (doc,) = store.get_docs("p", "kb", GetDocumentsOptions(doc_ids=["x"]))
        assert doc.text == "version 11"
    finally:
        store.close()


def test_jobs_of_a_dead_process_are_failed_on_restart(tmp_path: Path) -> None:
    dead = Store(tmp_path, run_jobs=False)
    dead.ensure_project("p")
    job = dead.submit("p", "kb", "create", batch(2), {"model_id": "custom"})
    assert job.status == "building"
    dead._owner_lock.release()  # what the OS does when the process dies
    fresh = Store(tmp_path)
    try:
        got = fresh.get_job("p", job.id)
        assert got.status == "failed" and "interrupted" in (got.error or "")
        assert fresh.get_index("p", "kb").status == "Failed"
        assert fresh.blobs.keys("uploads") == []
    finally:
        fresh.close()
        dead.catalog.close()


def test_keys_are_salted_hashes(tmp_path: Path) -> None:
    pid, key = create_project(tmp_path, "demo")
    pid2, key2 = create_project(tmp_path)
    assert pid != pid2 and key != key2
    raw_db = (tmp_path / "catalog.sqlite3").read_bytes()
    assert key.encode() not in raw_db
    store = Store(tmp_path, run_jobs=False)
    try:
        assert store.authenticate(pid, key) == pid
        assert store.authenticate(pid, key) == pid  # cached path
        for bad in ((pid, key2), (pid, ""), ("nope", key), (None, key), (pid, key + "x")):
            with pytest.raises(MossError) as e:
                store.authenticate(*bad)
            assert e.value.code == UNAUTHORIZED
    finally:
        store.close()


def test_module_runner_creates_projects(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "moss.server", "create-project", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")},
    )
    created = json.loads(out.stdout)
    assert set(created) == {"project_id", "project_key"}


# ------------------------------------------------------------------------------ over HTTP


def test_every_endpoint_authenticates(server: ThreadedServer) -> None:
    pid, key = server.project
    paths = [
        ("GET", "/v1/indexes"),
        ("GET", "/v1/indexes/kb"),
        ("DELETE", "/v1/indexes/kb"),
        ("POST", "/v1/indexes/kb"),
        ("GET", "/v1/indexes/kb/snapshot"),
        ("PUT", "/v1/indexes/kb/snapshot"),
        ("POST", "/v1/indexes/kb/docs"),
        ("POST", "/v1/indexes/kb/docs/delete"),
        ("POST", "/v1/indexes/kb/docs/query"),
        ("GET", "/v1/jobs/abc"),
        ("GET", "/v1/indexes/..%2Fx"),
    ]
    cases = [({}, paths), ({"X-Moss-Project-Id": pid}, paths)]
    # a wrong key costs a deliberate scrypt per request: a few paths suffice
    cases += [
        ({"X-Moss-Project-Id": pid, "Authorization": "Bearer wrong"}, paths[::4]),
        ({"X-Moss-Project-Id": "nope", "Authorization": f"Bearer {key}"}, paths[1::4]),
    ]
    for headers, some in cases:
        for method, path in some:
            r = httpx.request(method, server.url + path, headers=headers, timeout=30)
            assert r.status_code == 401 and code_of(r) == UNAUTHORIZED, (method, path, headers)
    assert httpx.get(server.url + "/openapi.json").status_code == 200  # public


def test_projects_are_isolated(server: ThreadedServer) -> None:
    a = create_project(server.data_dir)
    b = create_project(server.data_dir)

    async def go() -> None:
        ca = MossClient(*a, server_url=server.url)
        cb = MossClient(*b, server_url=server.url)
        job = await ca.create_index("kb", docs(3), wait=False)
        await job.wait()  # type: ignore[union-attr]
        assert await cb.list_indexes() == []
        for call in (
            cb.get_index("kb"),
            cb.get_docs("kb"),
            cb.delete_index("kb"),
            cb.load_index("kb"),
            cb.add_docs("kb", docs(1)),
            cb.get_job_status(job.job_id),
            cb.delete_docs("kb", ["1"]),
        ):
            with pytest.raises(MossError) as e:
                await call
            assert e.value.code == NOT_FOUND
        r = raw(server, "GET", "/v1/indexes/kb/snapshot", b)
        assert r.status_code == 404
        # the same name in project b is a different index
        await cb.create_index("kb", docs(1))
        assert (await ca.get_index("kb")).doc_count == 3
        assert (await cb.get_index("kb")).doc_count == 1
        await ca.close()
        await cb.close()

    asyncio.run(go())


def test_error_codes_over_the_wire(server: ThreadedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    project = create_project(server.data_dir)
    backend = HttpBackend(server.url, *project)
    statuses: dict[str, int] = {}

    def expect(code: str, fn: Any, *args: Any, cls: type = MossError) -> None:
        with pytest.raises(cls) as e:
            fn(*args)
        assert e.value.code == code, e.value

    backend.create_index("kb", "custom", batch(3))
    expect(ALREADY_EXISTS, backend.create_index, "kb", "custom", batch(1), cls=AlreadyExistsError)
    expect(NOT_FOUND, backend.get_index, "missing")
    expect(NOT_FOUND, backend.get_job, "missing")
    expect(INVALID_ARGUMENT, backend.get_index, "..", cls=InvalidArgumentError)
    expect(
        INVALID_ARGUMENT, backend.create_index, "kb2", "nope", batch(1), cls=InvalidArgumentError
    )
    expect(DESERIALIZATION, backend.push, "kb", b"not a snapshot at all")
    monkeypatch.delenv("MOSS_MEDIUMLM_PATH", raising=False)
    expect(
        MODEL_UNAVAILABLE,
        backend.create_index,
        "kb3",
        "moss-mediumlm",
        encode_batch(docs(1), "moss-mediumlm", None),
    )
    for url, key, code in (
        (server.url, "wrong", UNAUTHORIZED),
        (f"http://127.0.0.1:{free_port()}", project[1], NETWORK),
    ):
        other = HttpBackend(url, project[0], key)
        expect(code, other.list_indexes)
        other.close()
    for path, method, code, status in (
        ("/v1/indexes/..%2Fx", "GET", INVALID_ARGUMENT, 400),
        ("/v1/indexes/%2E%2E", "GET", INVALID_ARGUMENT, 400),
        ("/v1/indexes/a%00b", "GET", INVALID_ARGUMENT, 400),
        ("/v1/indexes/%FF", "GET", INVALID_ARGUMENT, 400),
        ("/v1/indexes/kb/nonsense", "GET", NOT_FOUND, 404),
        ("/v2/whatever", "GET", NOT_FOUND, 404),
        ("/v1/indexes", "POST", INVALID_ARGUMENT, 405),
    ):
        r = raw(server, method, path, project)
        statuses[path] = r.status_code
        assert (r.status_code, code_of(r)) == (status, code), path
        assert "Traceback" not in r.text
    r = raw(server, "POST", "/v1/indexes/kb/docs/query", project, content=b"{not json")
    assert (r.status_code, code_of(r)) == (400, INVALID_ARGUMENT)
    r = raw(
        server,
        "POST",
        "/v1/indexes/kb/docs/query",
        project,
        json={"filter": {"field": "i", "condition": []}},
    )
    assert r.json()["error"]["message"] == "'condition' must be a dict"
    # every code survives the round trip into its own class
    for code in (
        INVALID_ARGUMENT,
        NOT_FOUND,
        ALREADY_EXISTS,
        UNAUTHORIZED,
        NETWORK,
        DESERIALIZATION,
        MODEL_UNAVAILABLE,
        INTERNAL,
    ):
        err = error_from_body(json.loads(json.dumps(error_body(MossError("m", code=code)))))
        assert err is not None and err.code == code and str(err) == "m"
        assert isinstance(err, InvalidArgumentError) == (code == INVALID_ARGUMENT)
        assert isinstance(err, AlreadyExistsError) == (code == ALREADY_EXISTS)
    backend.close()


def test_request_size_limits(server: ThreadedServer) -> None:
    project = create_project(server.data_dir)
    big = b"\0" * (MAX_UPLOAD + 1)
    r = raw(server, "PUT", "/v1/indexes/big/snapshot", project, content=big)
    assert (r.status_code, code_of(r)) == (413, INVALID_ARGUMENT)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit still applies while streaming
        for _ in range(3):
            yield b"\0" * (MAX_UPLOAD // 2)

    r = raw(server, "PUT", "/v1/indexes/big/snapshot", project, content=chunks())
    assert (r.status_code, code_of(r)) == (413, INVALID_ARGUMENT)
    r = raw(server, "POST", "/v1/indexes/big/docs/query", project, content=b" " * (MAX_JSON + 1))
    assert r.status_code == 413
    assert raw(server, "GET", "/v1/indexes", project).json() == []  # nothing was created


def test_download_is_binary_and_conditional(server: ThreadedServer) -> None:
    project = create_project(server.data_dir)
    backend = HttpBackend(server.url, *project)
    rec = backend.push("kb", pack_session(4))
    backend.get_job(rec.job_id, 10)
    r = raw(server, "GET", "/v1/indexes/kb/snapshot", project)
    assert r.headers["content-type"] == "application/octet-stream"
    version = r.headers["x-moss-version"]
    assert unpack(r.content).doc_count == 4
    again = raw(
        server, "GET", "/v1/indexes/kb/snapshot", project, headers={"If-None-Match": f'"{version}"'}
    )
    assert again.status_code == 304 and again.content == b""
    assert backend.download("kb", version) == (version, None)
    name = "Spaces & ünïcode ?#%.."
    assert backend.get_job(backend.push(name, pack_session(2)).job_id, 10).status.error is None
    assert backend.get_index(name).name == name
    assert raw(server, "GET", "/v1/indexes/" + quote(name, safe=""), project).status_code == 200
    backend.close()


def test_openapi_documents_every_route(server: ThreadedServer) -> None:
    doc = httpx.get(server.url + "/openapi.json").json()
    assert doc == json.loads(json.dumps(openapi_document()))
    assert doc["openapi"].startswith("3.")
    documented = {(p, m) for p, ops in doc["paths"].items() for m in ops if m != "parameters"}
    for route in (
        ("/v1/indexes", "get"),
        ("/v1/indexes/{name}", "get"),
        ("/v1/indexes/{name}", "post"),
        ("/v1/indexes/{name}", "delete"),
        ("/v1/indexes/{name}/snapshot", "get"),
        ("/v1/indexes/{name}/snapshot", "put"),
        ("/v1/indexes/{name}/docs", "post"),
        ("/v1/indexes/{name}/docs/delete", "post"),
        ("/v1/indexes/{name}/docs/query", "post"),
        ("/v1/jobs/{job_id}", "get"),
    ):
        assert route in documented


def test_unexpected_errors_do_not_leak_internals(tmp_path: Path) -> None:
    from starlette.routing import Route
    from starlette.testclient import TestClient

    app = create_app(tmp_path)

    async def boom(request: Any) -> Any:
        raise ZeroDivisionError("secret internal detail at /srv/moss/store.py line 12")

    app.router.routes.append(Route("/boom", boom))
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom")
    assert r.status_code == 500
    assert r.json() == {
        "error": {"code": INTERNAL, "message": "internal server error", "detail": None}
    }
    assert "secret" not in r.text and "Traceback" not in r.text


def test_job_long_poll_returns_when_finished(server: ThreadedServer) -> None:
    project = create_project(server.data_dir)
    backend = HttpBackend(server.url, *project)
    rec = backend.create_index("kb", "custom", batch(50))
    start = time.monotonic()
    done = backend.get_job(rec.job_id, wait=10)
    assert done.status.status.value == "completed" and time.monotonic() - start < 5
    assert done.doc_count == 50 and done.index_name == "kb"
    backend.close()


def test_versions_are_stored_with_every_row_in_the_graph(tmp_path: Path) -> None:
    """A version a job builds has its vectors folded into the HNSW graph, so that processes
    loading it do not each redo that work (5000 rows: over the exact-search size of 4096)."""
    n = 5000
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    d = [DocumentInfo(str(i), f"text {i}") for i in range(n)]
    with ThreadedServer(tmp_path / "srv") as srv:
        backend = HttpBackend(srv.url, *srv.project)
        try:
            job = backend.create_index("big", "custom", encode_batch(d, "custom", vecs))
            assert backend.get_job(job.job_id, 60).status.status.value == "completed"
            _, blob = backend.download("big")
            data = unpack(bytes(blob))
        finally:
            backend.close()
    in_graph = np.asarray(data.arrays["vec/graph_key_row"]) >= 0
    assert int(in_graph.sum()) == n


def test_a_pushed_index_is_stored_folded(tmp_path: Path) -> None:
    """A snapshot pushed before its producer folded its vectors into the graph is stored with
    every row in the graph, and with exactly the pushed documents and vectors."""
    from moss.engine import Engine

    n = 5000
    vecs = np.random.default_rng(4).standard_normal((n, DIM)).astype(np.float32)
    engine = Engine("custom", DIM)
    engine.add_documents([DocumentInfo(str(i), f"text {i}", None, vecs[i]) for i in range(n)])
    pushed = engine.to_snapshot()
    # As a producer that never built its graph (or pushed before folding) would send it.
    for key in ("vec/graph", "vec/graph_key_row"):
        pushed.arrays.pop(key, None)
    with ThreadedServer(tmp_path / "srv") as srv:
        backend = HttpBackend(srv.url, *srv.project)
        try:
            job = backend.push("big", pack(pushed))
            assert backend.get_job(job.job_id, 60).status.status.value == "completed"
            _, blob = backend.download("big")
            stored = unpack(bytes(blob))
        finally:
            backend.close()
    assert int((np.asarray(stored.arrays["vec/graph_key_row"]) >= 0).sum()) == n
    assert stored.ids == pushed.ids and stored.texts == pushed.texts
    assert stored.vectors is not None and pushed.vectors is not None
    assert np.array_equal(stored.vectors, pushed.vectors)

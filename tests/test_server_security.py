"""Hardening of ``moss serve``: key storage and migration, failed-auth throttling, key rotation
and revocation, slow-client timeouts, quotas, fair job claims, paginated get_docs, 4xx (never 500)
for malformed input, file modes, TLS and the plaintext warning. Real HTTP on 127.0.0.1 (uvicorn
in a thread, or ``moss serve`` in a subprocess where the CLI is the point)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from moss import DocumentInfo, GetDocumentsOptions
from moss.cloud.http import HttpBackend
from moss.cloud.wire import encode_batch
from moss.server import Store
from moss.server.auth import SECRET_FILE, FailureThrottle, key_digest
from moss.server.catalog import SqliteCatalog
from moss.server.limits import Quotas
from moss.server.testing import ThreadedServer, free_port, wait_until_up

DIM = 4
SRC = str(Path(__file__).resolve().parents[1] / "src")


def batch(n: int, tag: str = "") -> bytes:
    rng = np.random.default_rng(n)
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    docs = [DocumentInfo(f"d{i:03d}", f"text {i} {tag}", {"i": str(i)}) for i in range(n)]
    return encode_batch(docs, "custom", vecs)


def headers(project: tuple[str, str]) -> dict[str, str]:
    return {"X-Moss-Project-Id": project[0], "Authorization": f"Bearer {project[1]}"}


def create(server: ThreadedServer, name: str, n: int = 5, project: Any = None) -> httpx.Response:
    h = headers(project or server.project)
    r = httpx.post(
        f"{server.url}/v1/indexes/{name}?model_id=custom", content=batch(n), headers=h, timeout=30
    )
    if r.status_code == 200:
        job = r.json()["job_id"]
        done = httpx.get(f"{server.url}/v1/jobs/{job}?wait=20", headers=h, timeout=30).json()
        assert done["status"] == "completed", done
    return r


def moss_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "moss", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[ThreadedServer]:
    with ThreadedServer(tmp_path / "srv", auth_failures_burst=1000) as s:
        yield s


# ------------------------------------------------------------------------------ keys


def test_keys_are_stored_as_hmac_and_files_are_private(server: ThreadedServer) -> None:
    pid, key = server.project
    root = server.data_dir
    secret = (root / SECRET_FILE).read_bytes()
    assert len(secret) == 32
    db = sqlite3.connect(root / "catalog.sqlite3")
    try:
        scheme, salt, digest = db.execute(
            "SELECT key_scheme, key_salt, key_hash FROM projects WHERE id = ?", (pid,)
        ).fetchone()
    finally:
        db.close()
    assert (scheme, salt) == ("hmac-sha256", None)
    assert digest == key_digest(secret, key) and key.encode() not in digest
    assert create(server, "kb").status_code == 200
    if os.name != "nt":
        assert root.stat().st_mode & 0o777 == 0o700
        private = [root / SECRET_FILE, root / "catalog.sqlite3"]
        private += [p for p in (root / "blobs").rglob("*") if p.is_file()]
        assert len(private) >= 3  # the version blob is there
        for p in private:
            assert p.stat().st_mode & 0o077 == 0, p


def test_legacy_scrypt_key_verifies_once_then_is_upgraded(tmp_path: Path) -> None:
    # A catalog as written before the HMAC scheme: no key_scheme column, a salted scrypt hash.
    key, salt = "moss_legacy-key", b"s" * 16
    old = hashlib.scrypt(key.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    db = sqlite3.connect(tmp_path / "catalog.sqlite3")
    db.execute(
        "CREATE TABLE projects (id TEXT PRIMARY KEY, name TEXT, key_salt BLOB, key_hash BLOB, "
        "created_at TEXT NOT NULL)"
    )
    db.execute("INSERT INTO projects VALUES ('p1', 'old', ?, ?, '2025-01-01')", (salt, old))
    db.commit()
    db.close()
    store = Store(tmp_path, run_jobs=False)
    try:
        with pytest.raises(Exception, match="invalid project credentials"):
            store.authenticate("p1", key + "x")
        assert store.catalog.project_key("p1") == ("scrypt", salt, old)  # unchanged by a miss
        assert store.authenticate("p1", key) == "p1"
        scheme, new_salt, digest = store.catalog.project_key("p1")  # type: ignore[misc]
        assert (scheme, new_salt) == ("hmac-sha256", None) and digest != old
        assert store.authenticate("p1", key) == "p1"  # and keeps verifying, the fast way
        t = time.perf_counter()
        for _ in range(50):
            with pytest.raises(Exception, match="invalid"):
                store.authenticate("p1", "moss_wrong")
        assert (time.perf_counter() - t) / 50 < 0.005  # no scrypt on the failure path
    finally:
        store.close()


def test_failure_throttle_is_a_bounded_token_bucket() -> None:
    t = FailureThrottle(burst=3, rate=100.0, max_entries=5)
    for _ in range(3):
        assert t.retry_after("a") is None
        t.failed("a")
    wait = t.retry_after("a")
    assert wait is not None and 0 < wait <= 0.011
    time.sleep(0.02)
    assert t.retry_after("a") is None  # refilled
    for i in range(50):
        t.failed(f"x{i}")
    assert len(t) == 5  # the oldest addresses were forgotten


def test_failed_keys_are_throttled_per_address(tmp_path: Path) -> None:
    with ThreadedServer(tmp_path, auth_failures_burst=3, auth_failures_per_s=0.5) as s:
        bad = (s.project[0], "moss_wrong")
        url = s.url + "/v1/indexes"
        codes = [httpx.get(url, headers=headers(bad), timeout=10).status_code for _ in range(3)]
        assert codes == [401, 401, 401]
        r = httpx.get(url, headers=headers(bad), timeout=10)
        assert r.status_code == 429 and r.json()["error"]["code"] == "RATE_LIMITED"
        assert 1 <= int(r.headers["Retry-After"]) <= 2
        # The throttled address is refused before its key is looked at ...
        assert httpx.get(url, headers=headers(s.project), timeout=10).status_code == 429
        # ... while another address is unaffected.
        transport = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(transport=transport, timeout=10) as other:
            assert other.get(url, headers=headers(s.project)).status_code == 200


def test_rotate_and_revoke_take_effect_immediately(server: ThreadedServer) -> None:
    pid, old_key = server.project
    url = server.url + "/v1/indexes"
    assert httpx.get(url, headers=headers((pid, old_key))).status_code == 200
    done = moss_cli("projects", "rotate-key", pid, "--data", str(server.data_dir), "--json")
    assert done.returncode == 0, done.stderr
    new_key = json.loads(done.stdout)["project_key"]
    assert new_key != old_key and len(new_key) > 40
    assert httpx.get(url, headers=headers((pid, old_key))).status_code == 401
    assert httpx.get(url, headers=headers((pid, new_key))).status_code == 200
    done = moss_cli("projects", "revoke", pid, "--data", str(server.data_dir))
    assert done.returncode == 0, done.stderr
    assert httpx.get(url, headers=headers((pid, new_key))).status_code == 401
    listed = moss_cli("projects", "list", "--data", str(server.data_dir), "--json")
    assert [p["has_key"] for p in json.loads(listed.stdout)] == [False]
    missing = moss_cli("projects", "revoke", "proj_nope", "--data", str(server.data_dir))
    assert missing.returncode != 0 and "not found" in missing.stderr
    assert "Traceback" not in missing.stderr


# ------------------------------------------------------------------------------ slow clients


def test_slow_headers_and_slow_bodies_are_cut_off(tmp_path: Path) -> None:
    with ThreadedServer(tmp_path, header_timeout_s=1.0, body_min_rate=2000, body_grace_s=0.5) as s:
        port = s.port
        # 20 slowloris connections: a request line, then one header byte now and then.
        socks = []
        for _ in range(20):
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            socks.append(c)
        start = time.monotonic()
        closed = 0
        while time.monotonic() - start < 4 and closed < len(socks):
            closed = 0
            for c in socks:
                try:
                    c.sendall(b"X")
                except OSError:
                    closed += 1
            time.sleep(0.2)
        elapsed = time.monotonic() - start
        for c in socks:
            c.close()
        assert closed == len(socks) and elapsed < 4, (closed, elapsed)
        # A legitimate request is served meanwhile and afterwards.
        assert httpx.get(s.url + "/healthz", timeout=5).status_code == 200
        # A body trickling at ~1 KB/s is answered 408 instead of holding a worker.
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        h = headers(s.project)
        head = (
            f"POST /v1/indexes/kb/docs/query HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
            f"X-Moss-Project-Id: {h['X-Moss-Project-Id']}\r\n"
            f"Authorization: {h['Authorization']}\r\nContent-Type: application/json\r\n\r\n"
        )
        c.sendall(head.encode())
        got = b""
        start = time.monotonic()
        c.settimeout(0.1)
        while time.monotonic() - start < 5 and b"\r\n\r\n" not in got:
            try:
                c.sendall(b" " * 100)  # ~1 KB/s
            except OSError:
                break
            try:
                got += c.recv(4096)
            except TimeoutError:
                pass
        c.close()
        assert got.startswith(b"HTTP/1.1 408"), got[:200]
        assert time.monotonic() - start < 4


# ------------------------------------------------------------------------------ quotas, fairness


def test_project_quotas(tmp_path: Path) -> None:
    quotas = Quotas(max_project_bytes=None, max_indexes=1, max_pending_jobs=None)
    with ThreadedServer(tmp_path / "a", quotas=quotas) as s:
        assert create(s, "one").status_code == 200
        r = create(s, "two")
        assert r.status_code == 429 and r.json()["error"]["code"] == "QUOTA_EXCEEDED"
        assert "quota 1" in r.json()["error"]["message"]
        h = headers(s.project)
        r = httpx.post(f"{s.url}/v1/indexes/one/docs", content=batch(2, "more"), headers=h)
        assert r.status_code == 200  # adding to an existing index is fine
    quotas = Quotas(max_project_bytes=3000, max_indexes=None, max_pending_jobs=None)
    with ThreadedServer(tmp_path / "b", quotas=quotas) as s:
        r = create(s, "big", n=200)  # larger than the whole quota: cut off while uploading
        assert r.status_code == 413 and "quota" in r.json()["error"]["message"]
        assert create(s, "small", n=2).status_code == 200
        used = s.app.state.store.stored_bytes(s.project[0])
        assert used > 0
        r = create(s, "next", n=200)  # more than what is left
        assert r.status_code == 413, r.text
        pid = s.project[0]
    # A project at its quota cannot even start a submission.
    store = Store(tmp_path / "b", run_jobs=False, quotas=Quotas(used, None, None))
    try:
        with pytest.raises(Exception, match="quota") as err:
            store.begin(pid, "other", "push")
        assert getattr(err.value, "status", None) == 413
        store.begin(pid, "small", "delete")  # deleting stays possible
    finally:
        store.close()


def test_pending_job_quota(tmp_path: Path) -> None:
    store = Store(tmp_path, run_jobs=False, quotas=Quotas(None, None, 2))
    try:
        store.ensure_project("p")
        store.begin("p", "a", "push")
        store.begin("p", "b", "push")
        with pytest.raises(Exception, match="unfinished jobs") as err:
            store.begin("p", "c", "push")
        assert getattr(err.value, "status", None) == 429
        store.ensure_project("q")
        store.begin("q", "a", "push")  # another project has its own quota
    finally:
        store.close()


def test_jobs_are_claimed_round_robin_across_projects(tmp_path: Path) -> None:
    cat = SqliteCatalog(tmp_path / "c.sqlite3")
    try:
        # Project A floods the queue, then B and C submit one job each.
        jobs = [(f"a{i}", "A", "x" if i % 2 else "y") for i in range(6)]
        jobs += [("b0", "B", "x"), ("c0", "C", "x"), ("b1", "B", "x")]
        for jid, project, index in jobs:
            cat.create_job(jid, project, index, None, "push", "me", {})
            cat.queue_job(jid, None, 1)
        order = []
        while (job := cat.claim_next("me")) is not None:
            order.append(job.id)
            cat.fail_job(job.id, "done")  # finish it so the next on its index may run
        assert order[:3] == ["a0", "b0", "c0"]  # nobody waits behind A's backlog
        assert order.index("b1") < order.index("a3")
        for project in "ABC":  # per index, still submission order
            for index in "xy":
                mine = [j for j, p, i in jobs if p == project and i == index]
                assert [j for j in order if j in mine] == mine
        assert sorted(order) == sorted(j for j, _, _ in jobs)
    finally:
        cat.close()


# ------------------------------------------------------------------------------ input, pages


def test_malformed_input_is_4xx_and_keeps_the_connection(server: ThreadedServer) -> None:
    assert create(server, "kb").status_code == 200
    h = {**headers(server.project), "Content-Type": "application/json"}
    url = server.url + "/v1/indexes/kb/docs/query"
    bodies = [
        b"[" * 100_000 + b"]" * 100_000,  # RecursionError in a naive decoder
        json.dumps({"filter": _deep(200)}).encode(),
        b'{"doc_ids": 5}',
        b'{"doc_ids": [1, 2]}',
        b'{"group_by": {"parent_field": {}, "order_field": "i"}}',
        b'{"filter": [1]}',
        b'{"filter": {"field": {}, "condition": 3}}',
        b'{"sort_by": 7}',
    ]
    with httpx.Client(timeout=30) as client:
        for body in bodies:
            r = client.post(url, content=body, headers=h)
            assert 400 <= r.status_code < 500, (body[:60], r.status_code, r.text[:200])
            assert r.headers.get("connection") != "close", body[:60]
        r = client.post(server.url + "/v1/indexes/kb/docs", content=b"\x00" * 64, headers=h)
        assert 400 <= r.status_code < 500
        assert client.get(server.url + "/healthz").status_code == 200
    # On one raw connection: a bad request, then a good one (the first did not close it).
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as c:
        body = b'{"doc_ids": 5}'
        c.sendall(
            b"POST /v1/indexes/kb/docs/query HTTP/1.1\r\nHost: x\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in h.items()).encode()
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body
        )
        first = _read_response(c)
        c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        second = _read_response(c)
    assert first.startswith(b"HTTP/1.1 400") and second.startswith(b"HTTP/1.1 200"), first


def _read_response(c: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += c.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(rest) < length:
        rest += c.recv(65536)
    return head


def _deep(n: int) -> Any:
    node: Any = {"field": "i", "condition": {"$eq": "1"}}
    for _ in range(n):
        node = {"$and": [node]}
    return node


def test_get_docs_is_paginated_over_http(tmp_path: Path) -> None:
    with ThreadedServer(tmp_path, docs_page_size=4) as s:
        assert create(s, "kb", n=10).status_code == 200
        h = {**headers(s.project), "Content-Type": "application/json"}
        url = s.url + "/v1/indexes/kb/docs/query"
        r = httpx.post(url, content=b"{}", headers=h)
        assert r.status_code == 200 and len(r.json()) == 4
        cursor = r.headers["X-Moss-Next-Cursor"]
        ids = [d["id"] for d in r.json()]
        while cursor:
            r = httpx.post(url, content=b"{}", headers=h, params={"cursor": cursor})
            ids += [d["id"] for d in r.json()]
            cursor = r.headers.get("X-Moss-Next-Cursor", "")
        assert ids == [f"d{i:03d}" for i in range(10)]
        assert httpx.post(url, params={"limit": 99}, content=b"{}", headers=h).status_code == 400
        # The client reads every page and returns the full list, as the embedded store does.
        backend = HttpBackend(s.url, *s.project)
        try:
            got = backend.get_docs("kb", None)
            assert [d.id for d in got] == [f"d{i:03d}" for i in range(10)]
            some = backend.get_docs("kb", GetDocumentsOptions(doc_ids=["d001", "d007"]))
            assert sorted(d.id for d in some) == ["d001", "d007"]
        finally:
            backend.close()
        # A cursor from an older version of the index is refused (the client starts again).
        r = httpx.post(url, content=b"{}", headers=h)
        stale = r.headers["X-Moss-Next-Cursor"]
        add = httpx.post(s.url + "/v1/indexes/kb/docs", content=batch(1, "new"), headers=h)
        job = add.json()["job_id"]
        httpx.get(f"{s.url}/v1/jobs/{job}?wait=20", headers=h, timeout=30)
        r = httpx.post(url, content=b"{}", headers=h, params={"cursor": stale})
        assert r.status_code == 409


# ------------------------------------------------------------------------------ serve: TLS


def _serve(data: Path, *extra: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moss", "serve", "--data", str(data), "--port", str(port), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    return proc, port


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_serve_over_tls_and_warn_on_public_plaintext(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    data = tmp_path / "data"
    created = moss_cli("projects", "create", "--data", str(data), "--json")
    project = json.loads(created.stdout)
    creds = (project["project_id"], project["project_key"])
    proc, port = _serve(data, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key))
    try:
        url = f"https://127.0.0.1:{port}"
        tls = ssl.create_default_context(cafile=str(cert))
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(url + "/v1/indexes", headers=headers(creds), verify=tls)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        assert r.status_code == 200 and r.json() == []
        with pytest.raises(httpx.TransportError):  # plain HTTP is not spoken on that port
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    finally:
        err = _stop(proc)
    assert "WARNING" not in err and "https://" in err
    # Bound to every interface without TLS: a loud warning (loopback binds get none).
    proc, port = _serve(data, "--host", "0.0.0.0")
    try:
        wait_until_up(f"http://127.0.0.1:{port}", 30, proc)  # type: ignore[arg-type]
    finally:
        err = _stop(proc)
    assert "WARNING" in err and "WITHOUT TLS" in err and "--ssl-certfile" in err
    bad = moss_cli("serve", "--data", str(data), "--ssl-certfile", str(cert))
    assert bad.returncode != 0 and "--ssl-keyfile" in bad.stderr

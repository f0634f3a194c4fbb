"""Blob stores: one behavioural suite run against FileBlobStore and S3BlobStore (on moto's real
S3 HTTP server, tests/s3_service.py), the S3-only guarantees (conditional writes, multipart,
bounded cache, presigned URLs, typed errors), and snapshot downloads redirected to presigned
URLs through a real server and client."""

from __future__ import annotations

import asyncio
import http.server
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
import pytest

from moss import DocumentInfo, MossClient, QueryOptions
from moss.cloud.http import HttpBackend
from moss.errors import CONFLICT, INTERNAL, NETWORK, UNAUTHORIZED, InvalidArgumentError, MossError
from moss.server.storage import BlobStore, FileBlobStore, open_blob_store
from moss.server.testing import ThreadedServer

pytest.importorskip("boto3")
from moss.server.storage_s3 import S3BlobStore
from tests.s3_service import s3_client

MiB = 1 << 20


def _s3(url: str, cache: Path, **options: Any) -> S3BlobStore:
    return S3BlobStore.from_url(url, cache_dir=cache, **options)


@pytest.fixture(params=["file", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    """The same store interface over a directory and over S3."""
    if request.param == "file":
        yield FileBlobStore(tmp_path / "blobs")
        return
    store = open_blob_store(request.getfixturevalue("s3_url"), tmp_path / "cache")
    assert isinstance(store, S3BlobStore)
    yield store
    store.close()


def payload(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


# ------------------------------------------------------------------------------ both stores


def test_roundtrip_and_missing_keys(blobs: BlobStore) -> None:
    data = payload(10_000)
    blobs.put("versions/a", data)
    blobs.put("versions/empty", b"")
    with blobs.create("uploads/b") as f:
        f.write(data[:100])
        f.write(data[100:])
    assert bytes(blobs.read("versions/a")) == data
    assert bytes(blobs.read("versions/empty")) == b""
    with blobs.open("uploads/b") as f:
        assert f.read() == data
    assert blobs.size("versions/a") == len(data) and blobs.size("versions/empty") == 0
    assert blobs.keys("versions") == ["versions/a", "versions/empty"]
    assert blobs.keys("uploads") == ["uploads/b"] and blobs.keys("nothing") == []

    blobs.move("uploads/b", "versions/b")
    assert blobs.keys("uploads") == [] and bytes(blobs.read("versions/b")) == data
    assert blobs.delete("versions/a") and blobs.delete("versions/a")  # absent counts as removed
    assert blobs.keys("versions") == ["versions/b", "versions/empty"]
    for call in (blobs.read, blobs.open, blobs.size):
        with pytest.raises(KeyError):
            call("versions/a")
    with pytest.raises(KeyError):
        blobs.move("uploads/nope", "versions/c")
    with pytest.raises(ValueError):
        blobs.put("../escape", b"x")


def test_failed_create_leaves_nothing(blobs: BlobStore, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), blobs.create("versions/x") as f:
        f.write(payload(1000))
        raise RuntimeError("boom")
    assert blobs.keys("versions") == []
    with pytest.raises(KeyError):
        blobs.read("versions/x")
    assert blobs.local_path("versions/x") is None or not blobs.local_path("versions/x").exists()  # type: ignore[union-attr]
    if isinstance(blobs, S3BlobStore):
        assert list((tmp_path / "cache" / "spool").iterdir()) == []


def test_keys_older_than(blobs: BlobStore) -> None:
    blobs.put("versions/old", b"1")
    if isinstance(blobs, FileBlobStore):
        path = blobs.local_path("versions/old")
        assert path is not None
        past = time.time() - 10
        import os

        os.utime(path, (past, past))
    else:
        time.sleep(2.5)  # S3 LastModified has one-second resolution
    blobs.put("versions/new", b"2")
    assert blobs.keys("versions") == ["versions/new", "versions/old"]
    assert blobs.keys("versions", older_than_s=1.5) == ["versions/old"]
    assert blobs.keys("versions", older_than_s=3600) == []


def test_presign(blobs: BlobStore) -> None:
    data = payload(5000, 1)
    blobs.put("versions/p", data)
    url = blobs.presign("versions/p", 60)
    if isinstance(blobs, FileBlobStore):
        assert url is None
        return
    assert url is not None and "moss-test-secret" not in url
    req = urllib.request.Request(url)  # no credentials: the signature is the permission
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.read() == data
    # SigV4 query signing, valid for the asked duration (moto does not check signatures)
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=60" in url


# ------------------------------------------------------------------------------ S3 only


def test_open_blob_store_by_url(tmp_path: Path, s3_url: str) -> None:
    assert isinstance(open_blob_store(str(tmp_path / "d"), tmp_path / "c"), FileBlobStore)
    s3 = open_blob_store(s3_url, tmp_path / "c")
    assert isinstance(s3, S3BlobStore) and s3.prefix == "moss"
    s3.check()
    s3.close()
    with pytest.raises(InvalidArgumentError, match="unsupported"):
        open_blob_store("gs://bucket/x", tmp_path / "c")
    with pytest.raises(InvalidArgumentError):
        open_blob_store("s3:///nobucket", tmp_path / "c")


def test_conditional_put_one_writer_wins(s3_url: str, tmp_path: Path) -> None:
    """Two nodes (separate caches) race to create one key: exactly one wins, nothing torn."""
    nodes = [_s3(s3_url, tmp_path / f"node{i}") for i in range(2)]
    nodes[0].put("versions/once", b"first")
    with pytest.raises(MossError) as e:
        nodes[1].put("versions/once", b"second")
    assert e.value.code == CONFLICT and "versions/once" in str(e.value)
    assert bytes(nodes[1].read("versions/once")) == b"first"

    for attempt in range(3):  # concurrently, several rounds
        key = f"versions/race{attempt}"
        barrier = threading.Barrier(2)
        outcome: dict[int, Any] = {}

        def write(i: int, key: str = key, barrier: threading.Barrier = barrier) -> None:
            try:
                with nodes[i].create(key) as f:
                    f.write(payload(20_000, i))
                    barrier.wait()
                outcome[i] = "ok"
            except MossError as err:
                outcome[i] = err.code

        threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcome.values()) == [CONFLICT, "ok"], outcome
        winner = next(i for i, v in outcome.items() if v == "ok")
        fresh = _s3(s3_url, tmp_path / f"reader{attempt}")
        assert bytes(fresh.read(key)) == payload(20_000, winner)
        fresh.close()
    for n in nodes:
        n.close()


def test_multipart_upload_and_conflict(s3_url: str, tmp_path: Path) -> None:
    store = _s3(s3_url, tmp_path / "c", multipart_threshold=5 * MiB, part_size=5 * MiB)
    data = payload(12 * MiB + 123, 3)
    with store.create("versions/big") as f:
        for start in range(0, len(data), MiB):
            f.write(data[start : start + MiB])
    client = s3_client(store.endpoint_url or "")
    bucket = store.bucket
    head = client.head_object(Bucket=bucket, Key="moss/versions/big")
    assert head["ETag"].strip('"').endswith("-3")  # three parts: it went up as a multipart
    reader = _s3(s3_url, tmp_path / "other")
    assert bytes(reader.read("versions/big")) == data and reader.size("versions/big") == len(data)

    with pytest.raises(MossError) as e, store.create("versions/big") as f:
        f.write(payload(6 * MiB, 4))
    assert e.value.code == CONFLICT
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []  # aborted
    assert bytes(reader.read("versions/big")) == data
    client.close()
    store.close()
    reader.close()


def test_cache_is_bounded_and_mappings_survive_eviction(s3_url: str, tmp_path: Path) -> None:
    writer = _s3(s3_url, tmp_path / "writer")
    blobs = {f"versions/k{i}": payload(1000, i) for i in range(5)}
    for key, data in blobs.items():
        writer.put(key, data)
    # the writer kept its uploads as cached copies, within its own bound
    assert writer.local_path("versions/k0") is not None

    reader = _s3(s3_url, tmp_path / "reader", cache_bytes=2500)
    first = reader.read("versions/k0")
    assert reader.local_path("versions/k0") is not None
    for key in list(blobs)[1:]:
        assert bytes(reader.read(key)) == blobs[key]
        assert reader.cached_bytes() <= 2500
    assert reader.local_path("versions/k0") is None  # least recently used: gone from disk
    cached = sorted(p.name for p in (tmp_path / "reader" / "blobs" / "versions").iterdir())
    assert cached == ["k3", "k4"]
    assert bytes(first) == blobs["versions/k0"]  # the earlier mapping is still readable
    assert bytes(reader.read("versions/k0")) == blobs["versions/k0"]  # downloaded again

    # a restarted node finds its cache and still honours the bound
    again = _s3(s3_url, tmp_path / "reader", cache_bytes=1500)
    assert again.cached_bytes() <= 1500 and again.local_path("versions/k0") is not None
    for s in (writer, reader, again):
        s.close()


def test_concurrent_reads_of_one_blob(s3_url: str, tmp_path: Path) -> None:
    _s3(s3_url, tmp_path / "w").put("versions/shared", payload(300_000, 9))
    store = _s3(s3_url, tmp_path / "r")
    results: list[bytes] = []

    def read() -> None:
        results.append(bytes(store.read("versions/shared")))

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [payload(300_000, 9)] * 8
    assert [p.name for p in (tmp_path / "r" / "blobs" / "versions").iterdir()] == ["shared"]
    store.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_endpoint_is_a_network_error(
    s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOSS_S3_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    store = _s3(s3_url, tmp_path / "c", connect_timeout_s=0.5, max_attempts=1)
    start = time.monotonic()
    for call in (
        lambda: store.read("versions/x"),
        lambda: store.put("versions/x", b"data"),
        lambda: store.keys("versions"),
        lambda: store.size("versions/x"),
    ):
        with pytest.raises(MossError) as e:
            call()
        assert e.value.code == NETWORK and "unreachable" in str(e.value)
        assert s3_url.split("/")[2] in str(e.value)  # names the bucket
    assert store.delete("versions/x") is False  # a GC pass retries later
    assert time.monotonic() - start < 10
    assert list((tmp_path / "c" / "spool").iterdir()) == []
    store.close()


def test_credential_and_bucket_errors(
    s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = s3_url.replace("s3://", "s3://nobucket-").split("/moss")[0] + "/moss"
    store = _s3(missing, tmp_path / "a")
    with pytest.raises(MossError) as e:
        store.put("versions/x", b"1")
    assert e.value.code == INTERNAL and "does not exist" in str(e.value)
    store.close()

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata probe
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    anonymous = _s3(s3_url, tmp_path / "b")
    with pytest.raises(MossError) as e:
        anonymous.read("versions/x")
    assert e.value.code == UNAUTHORIZED and "credentials" in str(e.value)
    anonymous.close()


# ------------------------------------------------------------------------------ redirects


def _docs(n: int) -> list[DocumentInfo]:
    rng = np.random.default_rng(5)
    v = rng.standard_normal((n, 8)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return [DocumentInfo(str(i), f"note {i}", {"i": str(i)}, v[i].tolist()) for i in range(n)]


async def _load_and_query(server: ThreadedServer) -> list[tuple[str, float]]:
    client = MossClient(*server.project, server_url=server.url)
    await client.create_index("kb", _docs(40))
    await client.load_index("kb")
    hits = []
    for q in range(5):
        result = await client.query("kb", "note", QueryOptions(embedding=_docs(40)[q].embedding))
        hits.append([(d.id, round(d.score, 6)) for d in result.docs])
    await client.close()
    return [h for hs in hits for h in hs]


def test_download_redirects_to_presigned_s3_url(s3_url: str, tmp_path: Path) -> None:
    with ThreadedServer(tmp_path / "plain") as plain:
        expected = asyncio.run(_load_and_query(plain))

    server = ThreadedServer(tmp_path / "s3srv", blobs=s3_url, redirect_downloads=1)
    store = server.app.state.store
    assert isinstance(store.blobs, S3BlobStore)
    with server:
        assert asyncio.run(_load_and_query(server)) == expected

        pid, key = server.project
        auth = {"X-Moss-Project-Id": pid, "Authorization": f"Bearer {key}"}
        url = server.url + "/v1/indexes/kb/snapshot"
        r = httpx.get(url, headers=auth)
        assert r.status_code == 307 and r.headers["cache-control"] == "no-store"
        version = r.headers["x-moss-version"]
        assert r.headers["location"].startswith(str(store.blobs.endpoint_url))
        direct = httpx.get(r.headers["location"])  # no credentials at all
        row = store.catalog.get_index(pid, "kb")
        assert direct.status_code == 200 and direct.content == bytes(store.blobs.read(row.version))
        # unchanged: 304 before any redirect
        r = httpx.get(url, headers={**auth, "If-None-Match": f'"{version}"'})
        assert r.status_code == 304 and "location" not in r.headers
        backend = HttpBackend(server.url, pid, key)
        assert backend.download("kb") == (version, bytearray(direct.content))
        assert backend.download("kb", version) == (version, None)
        backend.close()
        # the blobs live in the bucket, not in the data directory
        assert not (tmp_path / "s3srv" / "blobs" / "versions").exists()
        assert store.blobs.keys("versions") == [row.version]


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Serves one body; records each request's headers; the first ``fail`` requests get 403."""

    body = b""
    seen: ClassVar[list[dict[str, str]]] = []
    fail = 0

    def do_GET(self) -> None:
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()})
        if type(self).fail > 0:
            type(self).fail -= 1
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


def test_redirect_target_never_sees_moss_credentials(tmp_path: Path) -> None:
    """A presigned URL on another host (a local stand-in): the client follows it without the
    project key, asks the server again when it has expired (403), and decodes what it got."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    target = f"http://127.0.0.1:{httpd.server_address[1]}/signed?X-Sig=abc"

    class Presigning(FileBlobStore):
        def presign(self, key: str, expires_s: int = 300) -> str | None:
            _Recorder.body = bytes(self.read(key))
            return target

    try:
        with ThreadedServer(tmp_path / "srv", redirect_downloads=1) as server:
            store = server.app.state.store
            store.blobs = Presigning(store.blobs.root)
            pid, key = server.project
            backend = HttpBackend(server.url, pid, key)
            client = MossClient(pid, key, server_url=server.url)

            async def run() -> list[str]:
                await client.create_index("kb", _docs(10))
                _Recorder.fail = 1  # the first URL "expired"
                await client.load_index("kb")
                result = await client.query(
                    "kb", "note", QueryOptions(embedding=_docs(10)[3].embedding)
                )
                await client.close()
                return [d.id for d in result.docs]

            ids = asyncio.run(run())
            assert ids[0] == "3"
            assert len(_Recorder.seen) == 2  # 403, then a fresh redirect and a 200
            for headers in _Recorder.seen:
                assert "authorization" not in headers and "x-moss-project-id" not in headers
                assert key not in " ".join(headers.values())
            backend.close()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_restarted_node_removes_stale_upload_spool_files(s3_url: str, tmp_path: Path) -> None:
    """A node killed mid-upload leaves its spooled body behind; the next start removes it once
    it is 10 minutes old (a younger one may belong to a process still uploading)."""
    first = _s3(s3_url, tmp_path / "node")
    first.close()
    spool = tmp_path / "node" / "spool"
    stale, fresh = spool / "up-killed", spool / "up-running"
    for p in (stale, fresh):
        p.write_bytes(b"half an upload")
    old = time.time() - 700
    os.utime(stale, (old, old))
    again = _s3(s3_url, tmp_path / "node")
    try:
        assert sorted(p.name for p in spool.iterdir()) == ["up-running"]
    finally:
        again.close()

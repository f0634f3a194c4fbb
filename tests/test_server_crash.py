"""A ``moss serve`` process killed with SIGKILL in the middle of a push.

After a restart the index is exactly the old version or exactly the new one — complete, never a
mix — and the interrupted job is ``failed``. Two crash points: after the new version's blob is
written but before the catalog switched to it (held open with ``MOSS_TEST_COMMIT_DELAY``), and in
the middle of the upload itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from moss import DocumentInfo, MossClient
from moss.cloud.http import HttpBackend
from moss.server import Store
from moss.server.testing import ServerProcess
from moss.snapshot import pack

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
DIM = 32


def snapshot(n: int, tag: str) -> tuple[bytes, list[DocumentInfo]]:
    vecs = np.random.default_rng(n).standard_normal((n, DIM)).astype(np.float32)

    async def build() -> tuple[bytes, list[DocumentInfo]]:
        c = MossClient("tmp", "k")
        s = await c.session("kb", model_id="custom", auto_load_on_init=False)
        await s.add_docs([DocumentInfo(str(i), f"doc {i} {tag}", None, vecs[i]) for i in range(n)])
        blob = pack(s.engine.to_snapshot(name="kb"))
        stored = await s.get_docs()
        c.__exit__(None, None, None)
        return blob, stored

    return asyncio.run(build())


def stored_state(server: ServerProcess) -> tuple[str, list[tuple[str, str]]]:
    async def read() -> tuple[str, list[tuple[str, str]]]:
        c = MossClient(*server.project, server_url=server.url)
        info = await c.get_index("kb")
        docs = await c.get_docs("kb")
        await c.load_index("kb")  # the version also loads and is complete
        assert c._runtime._entry("kb").engine.doc_count == info.doc_count == len(docs)
        await c.close()
        return info.version, [(d.id, d.text) for d in docs]

    return asyncio.run(read())


@pytest.fixture
def old_version(tmp_path: Path) -> Iterator[tuple[Path, tuple[str, str], list[tuple[str, str]]]]:
    blob, docs = snapshot(50, "old")
    with ServerProcess(tmp_path) as server:
        backend = HttpBackend(server.url, *server.project)
        rec = backend.push("kb", blob)
        assert backend.get_job(rec.job_id, 30).status.status.value == "completed"
        backend.close()
        yield tmp_path, server.project, [(d.id, d.text) for d in docs]


def restart(data: Path, project: tuple[str, str], **env: str) -> ServerProcess:
    return ServerProcess(data, env=env, project=project).start()


def test_sigkill_between_blob_write_and_commit(old_version: tuple) -> None:  # type: ignore[type-arg]
    data, project, old_docs = old_version
    new_blob, new_docs = snapshot(80, "new")
    server = restart(data, project, MOSS_TEST_COMMIT_DELAY="30")
    backend = HttpBackend(server.url, *project)
    job = backend.push("kb", new_blob)
    deadline = time.monotonic() + 30
    while backend.get_job(job.job_id).status.current_phase != "cleanup":  # blob written, sleeping
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert len(list((data / "blobs" / "versions").iterdir())) == 2
    server.kill()
    backend.close()

    server = restart(data, project)
    try:
        _, docs = stored_state(server)
        assert docs == old_docs  # the old version, complete
        backend = HttpBackend(server.url, *project)
        failed = backend.get_job(job.job_id)
        assert failed.status.status.value == "failed" and "interrupted" in (
            failed.status.error or ""
        )
        backend.close()
        # the orphaned new blob is garbage-collected; only the live version remains
        assert len(list((data / "blobs" / "versions").iterdir())) == 1
        # and the index takes new pushes normally
        backend = HttpBackend(server.url, *project)
        rec = backend.push("kb", new_blob)
        assert backend.get_job(rec.job_id, 30).status.status.value == "completed"
        backend.close()
        assert stored_state(server)[1] == [(d.id, d.text) for d in new_docs]
    finally:
        server.stop()


def test_sigkill_during_upload(old_version: tuple) -> None:  # type: ignore[type-arg]
    data, project, old_docs = old_version
    server = restart(data, project)
    sent = threading.Event()

    def body() -> Iterator[bytes]:  # a large push that never finishes uploading
        for _ in range(2000):
            yield b"\0" * 65536
            sent.set()
            time.sleep(0.005)

    def upload() -> None:
        with pytest.raises(httpx.TransportError):
            httpx.put(
                f"{server.url}/v1/indexes/kb/snapshot",
                content=body(),
                timeout=60,
                headers={"X-Moss-Project-Id": project[0], "Authorization": f"Bearer {project[1]}"},
            )

    t = threading.Thread(target=upload)
    t.start()
    assert sent.wait(30)
    time.sleep(0.3)
    assert os.listdir(data / "blobs" / "uploads")  # the upload is being written
    server.kill()
    t.join(30)

    server = restart(data, project)
    try:
        assert stored_state(server)[1] == old_docs
        store = Store(data, run_jobs=False)
        try:
            jobs = store.catalog._db.execute("SELECT kind, status, error FROM jobs").fetchall()
            assert ("push", "completed", None) in jobs
            interrupted = [j for j in jobs if j[1] != "completed"]
            assert interrupted and all(j[1] == "failed" for j in interrupted)
        finally:
            store.close()
        assert [p for p in os.listdir(data / "blobs" / "uploads") if not p.startswith(".")] == []
    finally:
        server.stop()

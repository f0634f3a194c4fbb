"""Faults in a cluster (S3 + PostgreSQL, ``python -m moss.server --role ...`` processes).

* a worker SIGKILLed while committing: after its lease runs out the job is failed and the index
  is exactly the old version (never torn), and the next job on it runs normally;
* an API node SIGKILLed in the middle of an upload: the half-uploaded job is failed after the
  lease, and the other API node keeps serving;
* PostgreSQL restarted while a job runs: the job completes or fails cleanly, and the nodes
  serve again without being restarted;
* PostgreSQL down for seconds at the moment a worker commits: the worker waits the outage out,
  the job ends (failed, or completed if the commit landed), and the index's next job runs;
* concurrent pushes to one index through two API nodes: the last completed push wins and the
  stored version equals one of the pushes exactly.

Leases are shortened (``MOSS_LEASE_TTL_S=1``), so each test takes seconds. Every test prints its
trials and failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from moss import DocumentInfo, JobStatus, MossClient, QueryOptions
from moss.cloud.wire import encode_batch
from moss.server.catalog import open_catalog
from moss.server.testing import ServerProcess
from tests.test_cloud_congruence import docs, vec

pytest.importorskip("psycopg")
pytest.importorskip("boto3")

LEASE = {"MOSS_LEASE_TTL_S": "1", "MOSS_HEARTBEAT_S": "0.2", "MOSS_GC_GRACE_S": "2"}


class Cluster:
    """Nodes on one database and one bucket; all share the first node's project."""

    def __init__(self, tmp: Path, catalog: str, blobs: str) -> None:
        self.tmp, self.catalog, self.blobs = tmp, catalog, blobs
        self.nodes: list[ServerProcess] = []
        self.project: tuple[str, str] | None = None

    def add(self, role: str, **env: str) -> ServerProcess:
        node = ServerProcess(
            self.tmp / f"node{len(self.nodes)}",
            env={**LEASE, **env},
            project=self.project,
            catalog=self.catalog,
            blobs=self.blobs,
            role=role,
        )
        self.project = node.project
        self.nodes.append(node)
        return node.start()

    def client(self, node: ServerProcess) -> MossClient:
        assert self.project is not None
        return MossClient(*self.project, server_url=node.url)

    def headers(self) -> dict[str, str]:
        assert self.project is not None
        return {"Authorization": f"Bearer {self.project[1]}", "X-Moss-Project-Id": self.project[0]}

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


@pytest.fixture
def cluster(tmp_path: Path, postgres_url: str, s3_url: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, postgres_url, s3_url)
    try:
        yield c
    finally:
        c.stop()


def wait_phase(url: str, headers: dict[str, str], job_id: str, progress: float) -> dict[str, Any]:
    """Poll a job until its progress reaches ``progress`` (or it ends)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers, timeout=10).json()
        if job["progress"] >= progress or job["status"] in ("completed", "failed"):
            return dict(job)
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {progress}%")


def wait_end(url: str, headers: dict[str, str], job_id: str) -> tuple[dict[str, Any], int]:
    """Poll a job through a database outage until it ends: (the job, failed status reads)."""
    deadline, errors = time.monotonic() + 60, 0
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers, timeout=10)
        except httpx.HTTPError:
            r = None
        if r is not None and r.status_code == 200 and r.json()["status"] in ("completed", "failed"):
            return dict(r.json()), errors
        errors += r is None or r.status_code != 200
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never ended after the database came back")


def batch(items: list[DocumentInfo]) -> bytes:
    vectors = np.asarray([d.embedding for d in items], np.float32)
    return encode_batch(items, "custom", vectors)


def submit_add(url: str, headers: dict[str, str], items: list[DocumentInfo]) -> str:
    """``add_docs`` without waiting: the job id."""
    r = httpx.post(f"{url}/v1/indexes/kb/docs", headers=headers, content=batch(items), timeout=30)
    assert r.status_code < 300, r.text
    return str(r.json()["job_id"])


def test_worker_killed_while_committing(cluster: Cluster) -> None:
    api = cluster.add("api")
    steady = cluster.add("worker")
    c = cluster.client(api)

    async def seed() -> list[Any]:
        await c.create_index("kb", docs(6))
        return [(d.id, d.text) for d in await c.get_docs("kb")]

    before = asyncio.run(seed())
    steady.stop()  # a clean stop: its lease is dropped at once
    trials = failures = 0
    for _ in range(2):
        trials += 1
        slow = cluster.add("worker", MOSS_TEST_COMMIT_DELAY="30")
        job_id = submit_add(api.url, cluster.headers(), docs(3, 100))
        wait_phase(api.url, cluster.headers(), job_id, 95)  # written, not committed
        slow.kill()
        rescuer = cluster.add("worker")  # recovers the dead worker's job after its lease
        t0 = time.monotonic()
        with contextlib.suppress(RuntimeError):  # raised for a failed job
            asyncio.run(c.wait_for_job(job_id, timeout_seconds=30))
        final = asyncio.run(c.get_job_status(job_id))
        took = time.monotonic() - t0
        after = asyncio.run(c.get_docs("kb"))
        ok = final.status == JobStatus.FAILED and [(d.id, d.text) for d in after] == before
        failures += not ok
        print(f"worker kill: job {final.status.value} after {took:.1f}s, index unchanged: {ok}")
        rescuer.stop()
    # the index still takes jobs
    cluster.add("worker")
    asyncio.run(c.add_docs("kb", [DocumentInfo("new", "fresh", None, vec(7))]))
    assert asyncio.run(c.get_index("kb")).doc_count == 7
    asyncio.run(c.close())
    print(f"worker kill trials: {trials}, failures: {failures}")
    assert failures == 0


def test_api_node_killed_mid_upload(cluster: Cluster) -> None:
    a, b = cluster.add("api"), cluster.add("api")
    cluster.add("worker")
    ca, cb = cluster.client(a), cluster.client(b)
    asyncio.run(ca.create_index("kb", docs(4)))
    body = batch(docs(50, 10))
    half = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield body[: len(body) // 2]
        half.set()
        time.sleep(30)  # the node is killed meanwhile
        yield body[len(body) // 2 :]

    def upload() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(
                f"{a.url}/v1/indexes/kb/docs",
                headers={**cluster.headers(), "Content-Length": str(len(body))},
                content=slow_body(),
                timeout=40,
            )

    assert cluster.project is not None
    catalog = open_catalog(cluster.catalog)
    try:
        thread = threading.Thread(target=upload, daemon=True)
        thread.start()
        assert half.wait(30)
        deadline = time.monotonic() + 10
        while catalog.count_pending(cluster.project[0]) == 0:  # the job row is 'uploading'
            assert time.monotonic() < deadline
            time.sleep(0.05)
        a.kill()
        t0 = time.monotonic()
        while catalog.count_pending(cluster.project[0]) > 0:  # failed once the lease ran out
            assert time.monotonic() - t0 < 20, "the dead node's upload was never failed"
            time.sleep(0.1)
        took = time.monotonic() - t0
    finally:
        catalog.close()
    info = asyncio.run(cb.get_index("kb"))  # the other node serves; the index is unchanged
    assert info.doc_count == 4
    asyncio.run(cb.add_docs("kb", docs(2, 4)))
    assert asyncio.run(cb.get_index("kb")).doc_count == 6
    asyncio.run(ca.close())
    asyncio.run(cb.close())
    print(f"api kill mid-upload: trials 1, failures 0, upload failed {took:.1f}s after the kill")


def test_concurrent_pushes_through_two_api_nodes(cluster: Cluster) -> None:
    nodes = [cluster.add("api"), cluster.add("api")]
    cluster.add("worker")
    cluster.add("worker")
    trials = failures = 0

    async def round_(r: int) -> bool:
        clients = [cluster.client(nodes[k % 2]) for k in range(4)]
        sessions = []
        for k, c in enumerate(clients):
            s = await c.session(f"shared{r}", model_id="custom", auto_load_on_init=False)
            await s.add_docs(docs(5 + k, 0, tag=f"v{k}"))
            sessions.append(s)
        pushes = await asyncio.gather(*(s.push_index() for s in sessions))
        finals = await asyncio.gather(*(c.wait_for_job(p.job_id) for c, p in zip(clients, pushes)))
        assert all(f.status == JobStatus.COMPLETED for f in finals)
        last = max(range(4), key=lambda k: (finals[k].completed_at, finals[k].updated_at))
        ok = True
        for c in clients[:2]:  # read back through both API nodes
            stored = await c.get_docs(f"shared{r}")
            ok &= stored == await sessions[last].get_docs()
            ok &= (await c.get_index(f"shared{r}")).doc_count == 5 + last
            await c.load_index(f"shared{r}")  # the stored blob loads and answers
            found = await c.query(f"shared{r}", "note", QueryOptions(embedding=vec(1), top_k=50))
            ok &= sorted(d.id for d in found.docs) == sorted(d.id for d in stored)
        for c in clients:
            await c.close()
        return ok

    for r in range(3):
        trials += 1
        failures += not asyncio.run(round_(r))
    print(f"concurrent pushes via two API nodes: trials {trials}, failures {failures}")
    assert failures == 0


def test_postgres_restart_during_a_job(cluster: Cluster, pg_server: Any) -> None:
    from tests.pg_service import restart_postgres

    api = cluster.add("api")
    cluster.add("worker", MOSS_TEST_COMMIT_DELAY="2")
    c = cluster.client(api)
    asyncio.run(c.create_index("kb", docs(4)))
    job_id = submit_add(api.url, cluster.headers(), docs(3, 100))
    wait_phase(api.url, cluster.headers(), job_id, 95)  # inside the commit delay
    restart_postgres(pg_server)
    job, errors = wait_end(api.url, cluster.headers(), job_id)  # the API node reconnects
    count = asyncio.run(c.get_index("kb")).doc_count
    stored = asyncio.run(c.get_docs("kb"))
    assert count == len(stored) == (7 if job["status"] == "completed" else 4)  # old or new
    asyncio.run(c.add_docs("kb", [DocumentInfo("after", "after restart", None, vec(9))]))
    assert asyncio.run(c.get_index("kb")).doc_count == count + 1  # nodes work, unrestarted
    asyncio.run(c.close())
    print(
        f"postgres restart: trials 1, failures 0, job {job['status']}, "
        f"{errors} failed status reads while the database was down"
    )


def test_postgres_outage_at_the_commit(cluster: Cluster, pg_server: Any) -> None:
    """The database goes away exactly when the worker commits, for longer than any retry.
    The job must still end once it is back (a runner that died with the job "building" under
    its live lease left it so forever, and every later job on the index queued behind it)."""
    from tests.pg_service import start_postgres, stop_postgres

    api = cluster.add("api")
    cluster.add("worker", MOSS_TEST_COMMIT_DELAY="1.5")
    c = cluster.client(api)
    asyncio.run(c.create_index("kb", docs(4)))
    job_id = submit_add(api.url, cluster.headers(), docs(3, 100))
    wait_phase(api.url, cluster.headers(), job_id, 95)  # uploaded; the commit is 1.5 s away
    stop_postgres(pg_server)
    try:
        time.sleep(4)  # the commit meets the outage, and so does failing the job
    finally:
        start_postgres(pg_server)
    job, _ = wait_end(api.url, cluster.headers(), job_id)
    count = asyncio.run(c.get_index("kb")).doc_count
    assert count == len(asyncio.run(c.get_docs("kb"))) == (7 if job["status"] == "completed" else 4)
    asyncio.run(c.add_docs("kb", [DocumentInfo("after", "after the outage", None, vec(9))]))
    assert asyncio.run(c.get_index("kb")).doc_count == count + 1  # the index's queue moves
    asyncio.run(c.close())
    print(f"postgres outage at commit: trials 1, failures 0, job {job['status']}")

"""The cloud scenarios of test_cloud_congruence on S3 + PostgreSQL: one node, and a cluster.

* single node: a :class:`ThreadedServer` over a fresh moto bucket and a fresh Postgres database;
* cluster: two ``--role api`` and two ``--role worker`` processes (``python -m moss.server``) on
  one bucket and one database, and a client whose every HTTP request goes to the other API node
  (a round-robin transport), so a job submitted on one node is run by some worker, long-polled
  on the other node, and read back through either.

Each record must equal the one a dir + SQLite server produces for the same scenario, exactly
(results, errors with class, code and message). Real services: moto's S3 server
(tests/s3_service.py) and an embedded PostgreSQL server (tests/pg_service.py).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from moss import MossClient
from moss.cloud.http import HttpBackend
from moss.server.testing import ServerProcess, ThreadedServer
from tests.test_cloud_congruence import cloud_scenario, session_scenario

pytest.importorskip("psycopg")
pytest.importorskip("boto3")

MakeClient = Callable[[], MossClient]
FAST_LEASE = {"MOSS_LEASE_TTL_S": "2", "MOSS_HEARTBEAT_S": "0.3", "MOSS_GC_GRACE_S": "5"}


class RoundRobin(httpx.BaseTransport):
    """Sends each request to the next of several servers (same scheme and host, other port)."""

    def __init__(self, urls: list[str]) -> None:
        self._ports = itertools.cycle([httpx.URL(u).port for u in urls])
        self._lock = threading.Lock()
        self._inner = httpx.HTTPTransport()
        self.sent: dict[int, int] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            port = next(self._ports)
            assert port is not None
            self.sent[port] = self.sent.get(port, 0) + 1
        request.url = request.url.copy_with(port=port)
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def round_robin_client(project: tuple[str, str], urls: list[str]) -> tuple[MossClient, RoundRobin]:
    """A client whose cloud calls alternate between ``urls``."""
    transport = RoundRobin(urls)
    client = MossClient(*project, server_url=urls[0])
    client._cloud._backend = HttpBackend(urls[0], *project, transport=transport)
    return client, transport


class Clients:
    """Makes clients (closed at teardown)."""

    def __init__(self, make: Callable[[], MossClient]) -> None:
        self._make, self.made = make, []  # type: ignore[var-annotated]

    def __call__(self) -> MossClient:
        self.made.append(self._make())
        return self.made[-1]  # type: ignore[no-any-return]

    def close(self) -> None:
        for c in self.made:
            c.__exit__(None, None, None)


def run_all(make: MakeClient) -> list[Any]:
    return [asyncio.run(cloud_scenario(make)), asyncio.run(session_scenario(make, "custom"))]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    """The records of the dir + SQLite server (the zero-config default)."""
    with ThreadedServer(tmp_path_factory.mktemp("dir")) as srv:
        clients = Clients(lambda: MossClient(*srv.project, server_url=srv.url))
        try:
            return run_all(clients)
        finally:
            clients.close()


def test_s3_sqlite_single_node_congruent(reference: list[Any], tmp_path: Path, s3_url: str) -> None:
    """S3 blobs with the default SQLite catalog (one node): same records."""
    with ThreadedServer(tmp_path / "node", blobs=s3_url) as srv:
        assert not srv.app.state.store.cluster
        clients = Clients(lambda: MossClient(*srv.project, server_url=srv.url))
        try:
            assert run_all(clients) == reference
        finally:
            clients.close()


def test_s3_postgres_single_node_congruent(
    reference: list[Any], tmp_path: Path, postgres_url: str, s3_url: str
) -> None:
    with ThreadedServer(tmp_path / "node", catalog=postgres_url, blobs=s3_url) as srv:
        assert srv.app.state.store.cluster
        clients = Clients(lambda: MossClient(*srv.project, server_url=srv.url))
        try:
            assert run_all(clients) == reference
        finally:
            clients.close()


@pytest.fixture
def cluster(tmp_path: Path, postgres_url: str, s3_url: str) -> Iterator[list[ServerProcess]]:
    """Two API processes and two workers on one bucket and one database (API nodes first)."""
    nodes: list[ServerProcess] = []
    project = None
    try:
        for i, role in enumerate(["api", "api", "worker", "worker"]):
            node = ServerProcess(
                tmp_path / f"node{i}",
                env=dict(FAST_LEASE),
                project=project,
                catalog=postgres_url,
                blobs=s3_url,
                role=role,
            )
            project = node.project
            nodes.append(node)
        procs = [threading.Thread(target=n.start) for n in nodes]  # start in parallel
        for t in procs:
            t.start()
        for t in procs:
            t.join()
        assert all(n.proc is not None and n.proc.poll() is None for n in nodes)
        yield nodes
    finally:
        for n in nodes:
            n.stop()


def test_cluster_two_api_two_workers_congruent(
    reference: list[Any], cluster: list[ServerProcess]
) -> None:
    api = [n.url for n in cluster if n.role == "api"]
    transports: list[RoundRobin] = []

    def make() -> MossClient:
        client, transport = round_robin_client(cluster[0].project, api)
        transports.append(transport)
        return client

    clients = Clients(make)
    try:
        assert run_all(clients) == reference
    finally:
        clients.close()
    ports = [httpx.URL(u).port for u in api]
    sent = [sum(t.sent.get(p, 0) for t in transports) for p in ports]
    print(f"requests per API node: {sent}")
    assert min(sent) > 10 and abs(sent[0] - sent[1]) <= len(transports)  # both really served


def test_the_orphan_sweep_runs_once_per_period(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cluster node lists its blobs for orphans once per MOSS_ORPHAN_SWEEP_S, not on every
    2-second maintenance pass (a listing of the whole bucket each time)."""
    from moss.server import Store

    monkeypatch.setenv("MOSS_ORPHAN_AGE_S", "0")
    monkeypatch.setenv("MOSS_ORPHAN_SWEEP_S", "1.5")
    store = Store(tmp_path / "node", catalog=postgres_url, run_jobs=False)
    try:
        assert store.cluster and store.orphan_sweep_s == 1.5
        store.blobs.put("versions/orphan", b"written, never registered")
        store.maintenance()
        assert store.blobs.keys("versions") == ["versions/orphan"]  # not due yet
        time.sleep(1.6)
        store.maintenance()
        assert store.blobs.keys("versions") == []
    finally:
        store.close()

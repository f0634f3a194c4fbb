"""One conformance suite for every catalog: SQLite (a data directory) and PostgreSQL (a cluster).

Each test runs against both dialects through :func:`moss.server.catalog.open_catalog`, so the
shared SQL layer is exercised on both; PostgreSQL comes from tests/pg_service.py (a real server
started by the suite). PostgreSQL-only tests cover what SQLite cannot show: notifications across
catalog objects, several workers claiming concurrently, a server restart between two calls, an
unreachable server. SQLite-only tests cover a full disk.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from moss.errors import AlreadyExistsError, MossError
from moss.server.catalog import Catalog, JobRow, VersionInfo, open_catalog
from tests.pg_service import restart_postgres


@pytest.fixture(params=["sqlite", "postgres"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "catalog.sqlite3")
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def cat(catalog_url: str) -> Iterator[Catalog]:
    c = open_catalog(catalog_url)
    try:
        yield c
    finally:
        c.close()


def _queued(cat: Catalog, job_id: str, index: str, owner: str = "me", project: str = "p") -> JobRow:
    cat.create_job(job_id, project, index, None, "push", owner, {"n": job_id})
    return cat.queue_job(job_id, None, 1)


def _on_nodes(url: str, n: int, body: Callable[[int, Catalog], None], timeout: float) -> None:
    """``body(i, catalog)`` on ``n`` threads at once, each with its own catalog connection (as
    separate nodes have); fails on any thread's exception or a thread still running."""
    errors: list[BaseException] = []
    start = threading.Barrier(n)

    def node(i: int) -> None:
        cat = open_catalog(url)
        try:
            start.wait()
            body(i, cat)
        except BaseException as e:
            errors.append(e)
        finally:
            cat.close()

    threads = [threading.Thread(target=node, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads), "a node thread did not finish"


def _version(key: str, docs: int = 1) -> VersionInfo:
    return VersionInfo(key, "custom", "2d", 2, docs)


# ---------------------------------------------------------------------- rows


def test_projects_and_keys(cat: Catalog) -> None:
    cat.add_project("b", "Bee", None, b"\x01" * 32)
    cat.add_project("a", None, b"salt", b"\x02" * 32)
    cat.add_project("b", "ignored", None, None)  # exists: no-op
    assert cat.project_key("b") == ("hmac-sha256", None, b"\x01" * 32)
    assert cat.project_key("a") == ("scrypt", b"salt", b"\x02" * 32)
    assert cat.project_key("nope") is None
    assert not cat.set_project_key("b", b"\x03" * 32, "hmac-sha256", expect=b"\x09" * 32)
    assert cat.set_project_key("b", b"\x03" * 32, "hmac-sha256", expect=b"\x01" * 32)
    assert cat.set_project_key("a", None, None)  # revoke
    listed = {p["project_id"]: p for p in cat.list_projects()}
    assert listed["b"]["name"] == "Bee" and listed["b"]["has_key"]
    assert not listed["a"]["has_key"]
    _queued(cat, "j1", "x", project="b")
    assert cat.count_pending("b") == 1 and cat.count_pending("a") == 0


def test_reserve_list_delete_index(cat: Catalog) -> None:
    row = cat.reserve_index("p", "b", "id-b", "moss-minilm", None)
    assert (row.status, row.version, row.doc_count) == ("Building", None, 0)
    cat.reserve_index("p", "B", "id-B", "custom", 4)
    with pytest.raises(AlreadyExistsError):
        cat.reserve_index("p", "b", "id-other", "custom", 4)
    assert [r.name for r in cat.list_indexes("p")] == ["B", "b"]  # code-point order
    assert cat.list_indexes("q") == []
    gone = cat.delete_index("p", "b")
    assert gone is not None and gone.id == "id-b"
    assert cat.delete_index("p", "b") is None and cat.get_index("p", "b") is None


def test_commit_switches_versions_with_compare_and_swap(cat: Catalog) -> None:
    push = _queued(cat, "push1", "kb")
    cat.register_version("versions/v1", "idx-1", push)
    assert cat.commit(push, None, _version("versions/v1", 3)).status == "completed"
    row = cat.get_index("p", "kb")
    assert row is not None and (row.version, row.doc_count, row.id) == ("versions/v1", 3, "idx-1")
    # an upsert read v1; a push lands v2 meanwhile; the upsert's commit loses
    upsert = cat.create_job("up", "p", "kb", row.id, "upsert", "me", {})
    cat.register_version("versions/u", row.id, upsert)
    push2 = _queued(cat, "push2", "kb")
    cat.register_version("versions/v2", "ignored", push2)
    cat.commit(push2, None, _version("versions/v2", 5))
    with pytest.raises(MossError) as lost:
        cat.commit(upsert, "versions/v1", _version("versions/u"))
    assert lost.value.code == "CONFLICT"
    row = cat.get_index("p", "kb")
    assert row is not None and (row.version, row.doc_count, row.id) == ("versions/v2", 5, "idx-1")
    dead, _ = cat.collectable(set())
    assert dead == ["versions/v1"]  # v2 live, u still pending
    # a job whose index was deleted
    cat.delete_index("p", "kb")
    with pytest.raises(MossError) as gone:
        cat.commit(upsert, "versions/v2", _version("versions/u"))
    assert gone.value.code == "NOT_FOUND"


def test_a_late_commit_of_a_failed_job_is_refused(cat: Catalog) -> None:
    """A worker stalled past its lease; another node's recovery failed its job; then the
    stalled worker commits. The job stays failed and the index unchanged."""
    _queued(cat, "j", "kb", owner="w1")
    claimed = cat.claim_next("w1")
    assert claimed is not None
    cat.register_version("versions/late", "idx", claimed)
    assert {j.id for j in cat.fail_owner("w1", "lease expired")} == {"j"}
    with pytest.raises(MossError) as late:
        cat.commit(claimed, None, _version("versions/late"))
    assert late.value.code == "CONFLICT" and "lease" in late.value.message
    assert cat.get_index("p", "kb") is None
    job = cat.get_job("j")
    assert job is not None and (job.status, job.error) == ("failed", "lease expired")
    assert cat.collectable(set())[0] == ["versions/late"]


def test_job_lifecycle(cat: Catalog) -> None:
    job = cat.create_job("j", "p", "kb", None, "push", "me", {"a": [1, 2]})
    assert (job.status, job.started, job.qseq, job.params) == (
        "uploading",
        False,
        None,
        {"a": [1, 2]},
    )
    assert cat.known_keys() == {"uploads/j"}
    job = cat.queue_job("j", "uploads/j", 7)
    assert (job.status, job.phase, job.doc_count) == ("building", "queued", 7)
    assert job.qseq is not None
    assert cat.count_unfinished("me") == 1
    claimed = cat.claim_next("me")
    assert claimed is not None and claimed.started and claimed.id == "j"
    cat.update_job("j", 42.5, "embedding")
    got = cat.get_job("j")
    assert got is not None and (got.progress, got.phase) == (42.5, "embedding")
    failed = cat.fail_job("j", "boom")
    assert (failed.status, failed.error, failed.terminal) == ("failed", "boom", True)
    assert cat.fail_job("j", "again").error == "boom"  # a finished job stays as it is
    assert cat.collectable(set()) == ([], ["uploads/j"])
    cat.forget([], ["uploads/j"])
    assert cat.collectable(set()) == ([], []) and cat.known_keys() == set()
    _queued(cat, "k", "kb")
    cat.complete_unchanged("k", 3)
    done = cat.get_job("k")
    assert done is not None and (done.status, done.doc_count, done.progress) == (
        "completed",
        3,
        100,
    )
    assert cat.get_job("missing") is None


def test_claims_keep_index_order_and_rotate_projects(cat: Catalog) -> None:
    for jid, index in (("j1", "a"), ("j2", "a"), ("j3", "b"), ("j4", "a")):
        _queued(cat, jid, index)
    assert cat.claim_next("me").id == "j1"  # type: ignore[union-attr]
    assert cat.claim_next("me").id == "j3"  # type: ignore[union-attr]  # "a" is busy
    assert cat.claim_next("me") is None and cat.claim_next("other") is None
    cat.fail_job("j1", "x")
    assert cat.claim_next("me").id == "j2"  # type: ignore[union-attr]
    # round-robin: project A floods the queue, then B and C submit
    for jid, project, index in [(f"a{i}", "A", f"x{i}") for i in range(4)] + [
        ("b0", "B", "x"),
        ("c0", "C", "x"),
        ("b1", "B", "y"),
    ]:
        _queued(cat, jid, index, owner="rr", project=project)
    order = []
    while (job := cat.claim_next("rr")) is not None:
        order.append(job.id)
    assert order == ["a0", "b0", "c0", "a1", "b1", "a2", "a3"]


def test_any_owner_claims_take_the_job_over(cat: Catalog) -> None:
    _queued(cat, "j1", "a", owner="api-1")
    _queued(cat, "j2", "a", owner="api-2")
    assert cat.claim_next("worker") is None  # not its own
    job = cat.claim_next("worker", any_owner=True)
    assert job is not None and (job.id, job.owner, job.started) == ("j1", "worker", True)
    assert cat.claim_next("worker", any_owner=True) is None  # j2 waits for j1 (same index)
    cat.complete_unchanged("j1", 0)
    job = cat.claim_next("worker-2", any_owner=True)
    assert job is not None and (job.id, job.owner) == ("j2", "worker-2")


@pytest.mark.parametrize("queued_too", [False, True])
def test_fail_owner(cat: Catalog, queued_too: bool) -> None:
    cat.create_job("up", "p", "u", None, "push", "dead", {})  # still uploading
    _queued(cat, "run", "r", owner="dead")
    assert cat.claim_next("dead").id == "run"  # type: ignore[union-attr]
    cat.register_version("versions/half", "i", cat.get_job("run"))  # type: ignore[arg-type]
    _queued(cat, "queued", "q", owner="dead")
    _queued(cat, "other", "o", owner="alive")
    assert cat.unfinished_owners() == {"dead", "alive"}
    failed = {j.id for j in cat.fail_owner("dead", "gone", queued_too=queued_too)}
    assert failed == ({"up", "run", "queued"} if queued_too else {"up", "run"})
    assert cat.get_job("other").status == "building"  # type: ignore[union-attr]
    assert cat.collectable(set())[0] == ["versions/half"]
    queued = cat.get_job("queued")
    assert queued is not None and queued.status == ("failed" if queued_too else "building")
    if not queued_too:  # a worker picks it up
        assert cat.claim_next("w", any_owner=True).id in ("queued", "other")  # type: ignore[union-attr]


def test_leases_expire_on_the_database_clock(cat: Catalog) -> None:
    _queued(cat, "j", "a", owner="node-a")
    _queued(cat, "k", "b", owner="node-b")
    assert cat.expired_owners() == {"node-a", "node-b"}  # no lease at all
    cat.heartbeat("node-a", "worker", 0.5)
    cat.heartbeat("node-b", "api", 30)
    assert cat.expired_owners() == set()
    time.sleep(0.8)
    assert cat.expired_owners() == {"node-a"}
    cat.heartbeat("node-a", "worker", 30)  # renewed
    assert cat.expired_owners() == set()
    cat.drop_owner("node-b")
    assert cat.expired_owners() == {"node-b"}
    cat.complete_unchanged("k", 0)
    assert cat.expired_owners() == set()  # nothing unfinished refers to it any more


def test_collectable_waits_for_the_grace_period(cat: Catalog) -> None:
    for key in ("versions/1", "versions/2"):
        job = _queued(cat, key.replace("/", "-"), "kb")
        cat.register_version(key, "i", job)
        cat.commit(job, None, _version(key))
    assert cat.collectable(set(), grace_s=60)[0] == []
    time.sleep(0.3)
    assert cat.collectable(set(), grace_s=0.1)[0] == ["versions/1"]
    assert cat.collectable(set())[0] == ["versions/1"]
    assert "versions/1" in cat.known_keys()
    cat.forget(["versions/1"], [])
    assert cat.known_keys() == {"versions/2"} and cat.collectable(set()) == ([], [])


def test_server_secret_is_shared_and_stable(catalog_url: str) -> None:
    a, b = open_catalog(catalog_url), open_catalog(catalog_url)
    try:
        secret = a.server_secret()
        assert len(secret) == 32 and b.server_secret() == secret == a.server_secret()
    finally:
        a.close()
        b.close()


def test_web_source_rows(cat: Catalog) -> None:
    def values(sid: str, root: str) -> dict[str, Any]:
        return {
            "id": sid,
            "project_id": "p",
            "index_name": "kb",
            "root_url": root,
            "settings": '{"refresh_cadence": "daily"}',
            "next_refresh_at": "2000-01-01T00:00:00.000Z",
            "created_at": "2024-01-01T00:00:00.000Z",
        }

    assert cat.add_web_source(values("ws_1", "https://a.example/"), 2) == "created"
    assert cat.add_web_source(values("ws_2", "https://a.example/"), 2) == "exists"
    assert cat.add_web_source(values("ws_2", "https://b.example/"), 2) == "created"
    assert cat.add_web_source(values("ws_3", "https://c.example/"), 2) == "full"
    rows = cat.web_sources(project_id="p", index_name="kb")
    assert sorted(r[0] for r in rows) == ["ws_1", "ws_2"] and len(rows[0]) == 18
    assert cat.web_sources(project_id="q") == []
    assert [r[0] for r in cat.web_sources(source_id="ws_1")] == ["ws_1"]
    now = "2024-06-01T00:00:00.000Z"
    row = cat.update_web_source("ws_1", {"status": "crawling", "job_id": "j1"}, now)
    assert row is not None and (row[5], row[6], row[15]) == ("crawling", "j1", now)
    # only while crawling with that job
    row = cat.update_web_source("ws_1", {"status": "idle"}, now, only_if_crawling="j0")
    assert row is not None and row[5] == "crawling"
    row = cat.update_web_source("ws_1", {"status": "idle"}, now, only_if_crawling="j1")
    assert row is not None and row[5] == "idle"
    assert cat.update_web_source("ws_9", {"status": "idle"}, now) is None
    with pytest.raises(MossError):
        cat.update_web_source("ws_1", {"id = 'x'; --": 1}, now)
    assert sorted(r[0] for r in cat.web_sources(statuses=("idle",), due_by=now)) == ["ws_1", "ws_2"]
    old = "2000-01-01T00:00:00.000Z"
    assert cat.claim_web_refresh("ws_1", old, "2030-01-01T00:00:00.000Z")
    assert not cat.claim_web_refresh("ws_1", old, "2030-01-01T00:00:00.000Z")  # claimed once
    assert [r[0] for r in cat.web_sources(due_by=now)] == ["ws_2"]
    cat.delete_web_sources(source_id="ws_2")
    assert [r[0] for r in cat.web_sources()] == ["ws_1"]
    cat.delete_web_sources(project_id="p", index_name="kb")
    assert cat.web_sources() == []


def test_open_catalog_urls(tmp_path: Path) -> None:
    c = open_catalog(f"sqlite:///{tmp_path}/x.sqlite3")
    c.close()
    assert (tmp_path / "x.sqlite3").is_file()
    for bad in ("sqlite://relative.db", "mysql://h/db"):
        with pytest.raises(MossError) as e:
            open_catalog(bad)
        assert e.value.code == "INVALID_ARGUMENT"


# ---------------------------------------------------------------------- PostgreSQL only


def test_listen_fires_on_a_change_made_by_another_catalog(postgres_url: str) -> None:
    a, b = open_catalog(postgres_url), open_catalog(postgres_url)
    try:
        woke = threading.Event()
        a.listen(woke.set)
        time.sleep(0.3)  # the listener connects
        b.create_job("j", "p", "kb", None, "push", "me", {})
        assert not woke.wait(0.5)  # uploading is not a queue change
        b.queue_job("j", None, 1)
        assert woke.wait(5)
        woke.clear()
        b.claim_next("w", any_owner=True)
        assert woke.wait(5)
    finally:
        a.close()
        b.close()


def test_concurrent_workers_claim_each_job_once_in_index_order(postgres_url: str) -> None:
    setup = open_catalog(postgres_url)
    for i in range(40):
        # five indexes in two projects (an index is a project and a name)
        _queued(setup, f"j{i:02d}", f"idx{i % 5}", owner="api", project=f"p{i % 5 % 2}")
    qseq = {f"j{i:02d}": setup.get_job(f"j{i:02d}").qseq for i in range(40)}  # type: ignore[union-attr]
    setup.close()
    lock = threading.Lock()
    claimed: list[tuple[str, str]] = []
    running: set[str] = set()

    def worker(n: int, cat: Catalog) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            job = cat.claim_next(f"w{n}", any_owner=True)
            if job is None and len(claimed) >= 40:
                break
            if job is None:
                time.sleep(0.005)
                continue
            with lock:
                index = f"{job.project_id}/{job.index_name}"
                assert index not in running, "two jobs of one index at once"
                running.add(index)
                claimed.append((index, job.id))
            time.sleep(0.002)
            with lock:
                running.discard(index)
            cat.complete_unchanged(job.id, 0)

    _on_nodes(postgres_url, 4, worker, 20)
    assert sorted(j for _, j in claimed) == sorted(qseq)  # every job exactly once
    for index in {i for i, _ in claimed}:
        order = [qseq[j] for i, j in claimed if i == index]
        assert order == sorted(order), index


def test_each_due_web_refresh_is_claimed_by_one_node(postgres_url: str) -> None:
    """Every worker's maintenance pass looks for due web sources; 6 nodes racing for 20 due
    sources (each node its own catalog connection) must queue each crawl exactly once."""
    setup = open_catalog(postgres_url)
    due = "2000-01-01T00:00:00.000Z"
    for i in range(20):
        values = {
            "id": f"ws_{i}",
            "project_id": "p",
            "index_name": f"kb{i}",
            "root_url": f"https://{i}.example/",
            "settings": '{"refresh_cadence": "daily"}',
            "next_refresh_at": due,
            "created_at": due,
        }
        assert setup.add_web_source(values, 5) == "created"
    setup.close()
    won: list[tuple[int, str]] = []

    def node(n: int, cat: Catalog) -> None:
        for i in range(20):
            if cat.claim_web_refresh(f"ws_{i}", due, "2030-01-01T00:00:00.000Z"):
                won.append((n, f"ws_{i}"))

    _on_nodes(postgres_url, 6, node, 30)
    assert sorted(sid for _, sid in won) == sorted(f"ws_{i}" for i in range(20))  # each once


def test_concurrent_first_opens_migrate_once(postgres_url: str) -> None:
    results: list[object] = []

    def opener() -> None:
        try:
            c = open_catalog(postgres_url)
            c.close()
            results.append("ok")
        except BaseException as e:
            results.append(e)

    threads = [threading.Thread(target=opener) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == ["ok"] * 3


def test_postgres_restart_between_calls(postgres_url: str, pg_server: Any) -> None:
    cat = open_catalog(postgres_url)
    try:
        _queued(cat, "j1", "a")
        cat.get_index("p", "a")
        restart_postgres(pg_server)
        outcomes = []
        for call in (lambda: _queued(cat, "j2", "b"), lambda: cat.get_job("j1")):
            try:
                call()
                outcomes.append("ok")
            except MossError as e:
                assert e.code == "NETWORK", e
                outcomes.append("network")
        assert cat.get_job("j1") is not None  # reconnected by now
        assert outcomes[1] == "ok"
    finally:
        cat.close()


def test_unreachable_postgres_is_a_network_error(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(MossError) as e:
        open_catalog(f"postgresql://postgres@/moss?host={tmp_path}&connect_timeout=2")
    assert e.value.code == "NETWORK" and "unreachable" in e.value.message


# ---------------------------------------------------------------------- SQLite only

_FILL = """
import resource, signal, sys
from moss.errors import MossError
from moss.server.catalog import open_catalog
cat = open_catalog(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
try:
    for i in range(10_000):
        cat.create_job(f"j{i}", "p", "kb", None, "push", "me", {"pad": "x" * 4000})
except MossError as e:
    print(e.code, e.message)
else:
    print("no error")
"""


def test_sqlite_file_size_limit_is_a_typed_error(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _FILL, str(tmp_path / "c.sqlite3")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("INTERNAL catalog: "), out.stdout


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0, reason="mounting a tmpfs needs root"
)
def test_sqlite_disk_full_is_a_typed_error(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        cat = open_catalog(mnt / "c.sqlite3")
        try:
            with pytest.raises(MossError) as e:
                for i in range(10_000):
                    cat.create_job(f"j{i}", "p", "kb", None, "push", "me", {"pad": "x" * 4000})
            assert e.value.code == "INTERNAL"
            assert e.value.message == "catalog: no space left on the device"
        finally:
            cat.close()
    finally:
        subprocess.run(["umount", str(mnt)], check=True)

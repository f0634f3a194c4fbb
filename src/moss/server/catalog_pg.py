"""The catalog on PostgreSQL (psycopg 3, synchronous): one database shared by every node.

The SQL is :mod:`moss.server.catalog_sql`'s; this module supplies what PostgreSQL does
differently:

* **Connections**: a small pool, because the server calls the catalog from many short-lived
  request threads and the job runner. Connections run in autocommit mode, so a single-statement
  read costs one round trip; every write is an explicit ``BEGIN`` ... ``COMMIT``. A pooled
  connection whose socket turned readable while idle (the server closed it: a restart) is replaced
  before use, and a ``BEGIN`` that fails on a dropped connection is retried once on a new one.
  After that, a lost connection is ``MossError`` ``NETWORK`` ("catalog database unreachable").
* **Concurrency**: the index row is read ``FOR UPDATE`` before a version switch (and the switch is
  a compare-and-swap on the version as well); jobs are claimed ``FOR UPDATE SKIP LOCKED``, so
  workers never wait on each other's claims; queue numbers come from a sequence, and queueing on
  one index takes a transaction-scoped advisory lock so that queue order equals commit order.
* **Clock**: leases and grace periods use the database's ``now()``, never a node's clock.
* **Wake-ups**: every job state change runs ``pg_notify('moss_jobs', job_id)`` in its
  transaction; :meth:`PostgresCatalog.listen` keeps one connection in ``LISTEN`` on a thread
  (reconnecting after a loss, and then calling back once, since notifications may have been
  missed).
* **Schema**: numbered migrations, run on open under ``pg_advisory_xact_lock`` so that several
  nodes starting together do not race; the applied number is the ``schema_version`` row.
"""

from __future__ import annotations

import json
import select
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from ..errors import CONFLICT, INTERNAL, NETWORK, AlreadyExistsError, MossError
from .catalog_base import Cursor
from .catalog_sql import SqlCatalog

__all__ = ["PostgresCatalog", "pg_error"]

_CHANNEL = "moss_jobs"
_MIGRATION_LOCK = 0x6D6F7373  # "moss": the advisory lock id held while migrating
_T = 'TEXT COLLATE "C"'  # code-point order and comparison, as SQLite's default

_MIGRATIONS = [
    # 1: the whole schema of SQLite's user_version 3
    f"""
CREATE SEQUENCE moss_qseq;
CREATE TABLE projects (
    id {_T} PRIMARY KEY, name {_T}, key_salt BYTEA, key_hash BYTEA, created_at {_T} NOT NULL,
    key_scheme {_T}, key_updated_at {_T}
);
CREATE TABLE indexes (
    project_id {_T} NOT NULL, name {_T} NOT NULL, id {_T} NOT NULL UNIQUE, status {_T} NOT NULL,
    model_id {_T} NOT NULL, model_version {_T} NOT NULL DEFAULT '', dimension INTEGER,
    version {_T}, doc_count BIGINT NOT NULL DEFAULT 0, created_at {_T} NOT NULL,
    updated_at {_T} NOT NULL, PRIMARY KEY (project_id, name)
);
CREATE TABLE versions (
    key {_T} PRIMARY KEY, index_id {_T} NOT NULL, job_id {_T} NOT NULL, owner {_T} NOT NULL,
    state {_T} NOT NULL, created_at {_T} NOT NULL, dead_at {_T}
);
CREATE TABLE jobs (
    id {_T} PRIMARY KEY, project_id {_T} NOT NULL, index_name {_T} NOT NULL, index_id {_T},
    kind {_T} NOT NULL, owner {_T} NOT NULL, status {_T} NOT NULL,
    started INTEGER NOT NULL DEFAULT 0, progress DOUBLE PRECISION NOT NULL DEFAULT 0,
    phase {_T}, error {_T}, input_key {_T}, params {_T} NOT NULL DEFAULT '{{}}',
    doc_count BIGINT, qseq BIGINT, created_at {_T} NOT NULL, updated_at {_T} NOT NULL,
    completed_at {_T}
);
CREATE INDEX jobs_runnable ON jobs (owner, status, qseq);
CREATE INDEX jobs_queue ON jobs (status, started, qseq);
CREATE INDEX jobs_by_index ON jobs (project_id, index_name, status, qseq);
CREATE INDEX versions_state ON versions (state);
CREATE TABLE claims (project_id {_T} PRIMARY KEY, seq BIGINT NOT NULL);
CREATE TABLE owners (token {_T} PRIMARY KEY, role {_T}, lease_until {_T} NOT NULL);
CREATE TABLE settings (name {_T} PRIMARY KEY, value BYTEA NOT NULL);
CREATE TABLE web_sources (
    id {_T} PRIMARY KEY, project_id {_T} NOT NULL, index_name {_T} NOT NULL,
    root_url {_T} NOT NULL, settings {_T} NOT NULL, status {_T} NOT NULL, job_id {_T},
    next_refresh_at {_T}, last_crawled_at {_T}, last_page_count INTEGER NOT NULL DEFAULT 0,
    last_doc_count INTEGER NOT NULL DEFAULT 0, last_error_code {_T}, last_error {_T},
    last_stats {_T}, seq BIGINT NOT NULL, created_at {_T} NOT NULL, updated_at {_T} NOT NULL,
    UNIQUE (project_id, index_name, root_url)
);
CREATE INDEX web_sources_by_index ON web_sources (project_id, index_name);
CREATE INDEX web_sources_due ON web_sources (next_refresh_at);
""",
]
_ISO = '\'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"\''


def pg_error(e: psycopg.Error) -> MossError:
    """The :class:`MossError` for a psycopg error (codes of :mod:`moss.errors`)."""
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    state = getattr(e, "sqlstate", None) or ""
    if isinstance(e, pg_errors.DiskFull) or state.startswith("53"):
        return MossError("catalog: no space left on the device", code=INTERNAL, detail=text)
    if isinstance(e, pg_errors.UniqueViolation):
        return AlreadyExistsError(f"catalog: the row already exists ({text})")
    if state in ("40001", "40P01"):
        return MossError(f"catalog: concurrent update, try again ({text})", code=CONFLICT)
    if isinstance(e, psycopg.OperationalError) and (not state or state.startswith(("08", "57P"))):
        return MossError(f"catalog database unreachable: {text}", code=NETWORK)
    return MossError(f"catalog: {text}", code=INTERNAL, detail=state or None)


@lru_cache(maxsize=1024)
def _pg_sql(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


class _PgCursor:
    """A psycopg cursor taking the shared layer's ``?`` placeholders."""

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self._cur = cur

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    def execute(self, sql: str, parameters: Any = (), /) -> _PgCursor:
        if parameters:
            self._cur.execute(_pg_sql(sql), tuple(parameters))
        else:
            self._cur.execute(sql.encode())  # no parameters: the text goes as is
        return self

    def executemany(self, sql: str, seq_of_parameters: Any, /) -> _PgCursor:
        self._cur.executemany(_pg_sql(sql), [tuple(p) for p in seq_of_parameters])
        return self

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall()


class _Pool:
    """Idle connections, handed out one per transaction (see the module docstring)."""

    def __init__(self, url: str, size: int) -> None:
        self.url = url
        self.size = size
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._closed = False

    def connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=5)
        except psycopg.Error as e:
            raise pg_error(e) from e

    def get(self) -> psycopg.Connection[Any]:
        while True:
            with self._lock:
                if self._closed:
                    raise MossError("catalog is closed", code=INTERNAL)
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self.connect()
            if not conn.closed and not _readable(conn):
                return conn
            conn.close()  # the server closed it (restart, idle timeout): try the next

    def put(self, conn: psycopg.Connection[Any]) -> None:
        with self._lock:
            keep = not (self._closed or conn.closed or conn.broken) and len(self._idle) < self.size
            if keep:
                self._idle.append(conn)
        if not keep:
            conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _readable(conn: psycopg.Connection[Any]) -> bool:
    """Whether an idle connection has input waiting (the server ended it)."""
    try:
        ready, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(ready)


class PostgresCatalog(SqlCatalog):
    """:class:`~moss.server.catalog.Catalog` on a PostgreSQL database (``postgresql://...``)."""

    FOR_UPDATE = " FOR UPDATE"
    SKIP_LOCKED = " FOR UPDATE OF j SKIP LOCKED"
    NEXT_QSEQ = "nextval('moss_qseq')"
    # One window pass over the unfinished jobs: its cost does not depend on the plan, where the
    # per-candidate NOT EXISTS became a rescan per queued job on a freshly filled queue's
    # statistics (1.3 ms with 1000 queued, 4.4 ms with 5000; benchmarks/bench_catalog.py).
    QUEUE_HEADS = (
        "SELECT q.id, q.project_id FROM (SELECT id, project_id, owner, started, qseq, "
        "ROW_NUMBER() OVER (PARTITION BY project_id, index_name ORDER BY qseq) AS rn "
        "FROM jobs WHERE status = 'building') AS q "
        "WHERE q.rn = 1 AND q.started = 0 {mine}"
        "ORDER BY COALESCE((SELECT c.seq FROM claims AS c WHERE c.project_id = q.project_id), "
        "0), q.qseq LIMIT {limit}"
    )

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.url = url
        self._pool = _Pool(url, pool_size)
        self._closing = threading.Event()
        self._callbacks: list[Callable[[], None]] = []
        self._listen_lock = threading.Lock()
        self._listener: threading.Thread | None = None
        try:
            self._migrate()
        except BaseException:
            self._pool.close()
            raise

    def close(self) -> None:
        """Stop the listener thread and close every connection."""
        self._closing.set()
        with self._listen_lock:
            listener = self._listener
        if listener is not None:
            listener.join(10)
        self._pool.close()

    def _migrate(self) -> None:
        with self._tx() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = cur.execute("SELECT version FROM schema_version").fetchone()
            applied = int(row[0]) if row is not None else 0
            for number in range(applied + 1, len(_MIGRATIONS) + 1):
                cur.execute(_MIGRATIONS[number - 1])
            if row is None:
                cur.execute("INSERT INTO schema_version (version) VALUES (?)", (len(_MIGRATIONS),))
            elif applied < len(_MIGRATIONS):
                cur.execute("UPDATE schema_version SET version = ?", (len(_MIGRATIONS),))

    # ------------------------------------------------------------------ dialect hooks

    def _begin(self) -> psycopg.Connection[Any]:
        for attempt in range(2):
            conn = self._pool.get()
            try:
                conn.execute(b"BEGIN")
                return conn
            except psycopg.Error as e:
                self._pool.put(conn)
                if attempt or not isinstance(e, psycopg.OperationalError):
                    raise pg_error(e) from e
        raise AssertionError("unreachable")

    @contextmanager
    def _tx(self) -> Iterator[Cursor]:
        conn = self._begin()
        try:
            with conn.cursor() as raw:
                try:
                    yield _PgCursor(raw)
                    conn.execute(b"COMMIT")
                except BaseException:
                    if not (conn.closed or conn.broken):
                        with suppress(psycopg.Error):
                            conn.execute(b"ROLLBACK")
                    raise
        except psycopg.Error as e:
            raise pg_error(e) from e
        finally:
            self._pool.put(conn)

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        for attempt in range(2):
            conn = self._pool.get()
            try:
                with conn.cursor() as raw:
                    rows: list[tuple[Any, ...]] = _PgCursor(raw).execute(sql, args).fetchall()
                return rows
            except psycopg.Error as e:  # reads are idempotent: once more on a new connection
                if attempt or not isinstance(e, psycopg.OperationalError):
                    raise pg_error(e) from e
            finally:
                self._pool.put(conn)
        raise AssertionError("unreachable")

    def _now_sql(self, offset: bool = False) -> str:
        if offset:
            return f"to_char((now() + make_interval(secs => ?)) AT TIME ZONE 'UTC', {_ISO})"
        return f"to_char(now() AT TIME ZONE 'UTC', {_ISO})"

    def _serialize_index(self, cur: Cursor, project_id: str, index_name: str) -> None:
        cur.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(?, 0))",
            (json.dumps([project_id, index_name]),),
        )

    def _notify(self, cur: Cursor, job_id: str) -> None:
        cur.execute("SELECT pg_notify(?, ?)", (_CHANNEL, job_id))

    # ------------------------------------------------------------------ LISTEN

    def listen(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` from a background thread whenever any node changes a job."""
        with self._listen_lock:
            self._callbacks.append(callback)
            if self._listener is None and not self._closing.is_set():
                self._listener = threading.Thread(
                    target=self._listen_loop, name="moss-catalog-listen", daemon=True
                )
                self._listener.start()

    def _fire(self) -> None:
        with self._listen_lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            with suppress(Exception):
                callback()

    def _listen_loop(self) -> None:
        first = True
        while not self._closing.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {_CHANNEL}".encode())
                    if not first:
                        self._fire()  # changes made while the connection was down
                    first = False
                    while not self._closing.is_set():
                        for _ in conn.notifies(timeout=0.25):
                            self._fire()
            except psycopg.Error:
                first = False
                self._closing.wait(0.5)

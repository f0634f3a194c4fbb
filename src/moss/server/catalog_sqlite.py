"""The catalog in one SQLite file: the zero-configuration default of a data directory.

One connection per catalog object, serialised by a lock: every statement is sub-millisecond and
SQLite serialises writers anyway; other processes sharing the directory are handled by SQLite's
file locks (WAL mode). A write transaction starts with ``BEGIN IMMEDIATE``, which takes the write
lock up front, so the read-then-write sequences of :mod:`moss.server.catalog_sql` need no row
locks here. Schema changes are ``PRAGMA user_version`` migrations, run on open.

Every ``sqlite3`` error leaves this module as a :class:`moss.errors.MossError`: a full disk reads
"catalog: no space left on the device" (``INTERNAL``), a duplicate row ``ALREADY_EXISTS``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from ..errors import INTERNAL, AlreadyExistsError, MossError
from .auth import private_dir, private_file
from .catalog_sql import SqlCatalog

__all__ = ["USER_VERSION", "SqliteCatalog", "sqlite_error"]

USER_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    id TEXT PRIMARY KEY,
    name TEXT,
    key_salt BLOB,
    key_hash BLOB,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS indexes (
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    model_id TEXT NOT NULL,
    model_version TEXT NOT NULL DEFAULT '',
    dimension INTEGER,
    version TEXT,
    doc_count INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (project_id, name)
);
CREATE TABLE IF NOT EXISTS versions (
    key TEXT PRIMARY KEY,
    index_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    index_name TEXT NOT NULL,
    index_id TEXT,
    kind TEXT NOT NULL,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    started INTEGER NOT NULL DEFAULT 0,
    progress REAL NOT NULL DEFAULT 0,
    phase TEXT,
    error TEXT,
    input_key TEXT,
    params TEXT NOT NULL DEFAULT '{}',
    doc_count INTEGER,
    qseq INTEGER,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    completed_at TEXT
);
CREATE INDEX IF NOT EXISTS jobs_runnable ON jobs (owner, status, qseq);
CREATE INDEX IF NOT EXISTS jobs_by_index ON jobs (project_id, index_name, status, qseq);
CREATE INDEX IF NOT EXISTS versions_state ON versions (state);
CREATE TABLE IF NOT EXISTS claims (project_id TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS owners (token TEXT PRIMARY KEY, role TEXT, lease_until TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS web_sources (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    index_name TEXT NOT NULL,
    root_url TEXT NOT NULL,
    settings TEXT NOT NULL,
    status TEXT NOT NULL,
    job_id TEXT,
    next_refresh_at TEXT,
    last_crawled_at TEXT,
    last_page_count INTEGER NOT NULL DEFAULT 0,
    last_doc_count INTEGER NOT NULL DEFAULT 0,
    last_error_code TEXT,
    last_error TEXT,
    last_stats TEXT,
    seq INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (project_id, index_name, root_url)
);
CREATE INDEX IF NOT EXISTS web_sources_by_index ON web_sources (project_id, index_name);
CREATE INDEX IF NOT EXISTS web_sources_due ON web_sources (next_refresh_at);
"""
_ISO = "'%Y-%m-%dT%H:%M:%fZ'"


def sqlite_error(e: sqlite3.Error) -> MossError:
    """The :class:`MossError` for a ``sqlite3`` error (see the module docstring)."""
    text = str(e)
    name = getattr(e, "sqlite_errorname", "")
    if name == "SQLITE_FULL" or "disk is full" in text:
        return MossError("catalog: no space left on the device", code=INTERNAL, detail=text)
    if isinstance(e, sqlite3.IntegrityError):
        return AlreadyExistsError(f"catalog: the row already exists ({text})")
    if name.startswith("SQLITE_IOERR") or "disk I/O error" in text:
        return MossError(f"catalog: I/O error ({text})", code=INTERNAL, detail=name or None)
    if name in ("SQLITE_BUSY", "SQLITE_LOCKED") or "database is locked" in text:
        return MossError("catalog: the database stayed locked by another process", code=INTERNAL)
    return MossError(f"catalog: {text}", code=INTERNAL, detail=name or None)


class SqliteCatalog(SqlCatalog):
    """:class:`~moss.server.catalog.Catalog` on one SQLite file (WAL mode; safe to share
    between processes)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        private_dir(self.path.parent)
        private_file(self.path)  # SQLite gives its -wal and -shm files the same mode
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(
                str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as e:
            raise sqlite_error(e) from e
        try:
            with self._lock:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute("PRAGMA foreign_keys=ON")
                self._db.executescript(_SCHEMA)
                self._migrate(USER_VERSION)
        except sqlite3.Error as e:
            self._db.close()
            raise sqlite_error(e) from e

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def _migrate(self, target: int) -> None:
        """Bring an older catalog up to :data:`USER_VERSION` (idempotent, one transaction).

        Version 2 adds ``projects.key_scheme`` (``scrypt`` rows predate the HMAC scheme; see
        :mod:`moss.server.auth`) and ``projects.key_updated_at``; version 3 adds
        ``versions.dead_at`` (new tables come from the schema's ``IF NOT EXISTS``).
        """
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version >= target:
            return
        with self._tx() as cur:
            cols = {r[1] for r in cur.execute("PRAGMA table_info(projects)")}
            if "key_scheme" not in cols:
                cur.execute("ALTER TABLE projects ADD COLUMN key_scheme TEXT")
                cur.execute("UPDATE projects SET key_scheme = 'scrypt' WHERE key_hash IS NOT NULL")
            if "key_updated_at" not in cols:
                cur.execute("ALTER TABLE projects ADD COLUMN key_updated_at TEXT")
            if "dead_at" not in {r[1] for r in cur.execute("PRAGMA table_info(versions)")}:
                cur.execute("ALTER TABLE versions ADD COLUMN dead_at TEXT")
            cur.execute(f"PRAGMA user_version = {int(target)}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        """A write transaction (``BEGIN IMMEDIATE`` takes the write lock up front)."""
        with self._lock:
            try:
                cur = self._db.cursor()
                cur.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise sqlite_error(e) from e
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException as e:
                if self._db.in_transaction:
                    with suppress(sqlite3.Error):
                        cur.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise sqlite_error(e) from e
                raise
            finally:
                # A cursor kept alive by a traceback would keep its statement, and so the
                # database files, open after close() (sqlite3_close_v2 defers the close).
                cur.close()

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                cur = self._db.cursor()
            except sqlite3.Error as e:
                raise sqlite_error(e) from e
            try:
                rows: list[tuple[Any, ...]] = cur.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise sqlite_error(e) from e
            finally:
                cur.close()
        return rows

    def _now_sql(self, offset: bool = False) -> str:
        if offset:
            return f"strftime({_ISO}, 'now', printf('%.3f seconds', ?))"
        return f"strftime({_ISO}, 'now')"

"""The catalog: projects, key hashes, indexes, versions and jobs, in SQLite.

The catalog is the single source of truth for *which* blob is an index's current version. A change
to an index writes a new immutable blob first (:mod:`moss.server.storage`) and then calls
:meth:`SqliteCatalog.commit`, which in **one transaction** checks that the index is still the one
the job was built against, switches the index's version pointer, marks the old version dead and
marks the job completed. A crash before that transaction leaves the old version in force and the
job unfinished (it is failed on restart); a crash after it leaves the new version complete. Readers
resolve the pointer and then read an immutable blob, so they always get a complete version.

Versions go through ``pending`` (registered before the blob is written, so a garbage collector
never mistakes a blob being written for an orphan) -> ``live`` -> ``dead`` (superseded; its blob
is deleted by the next GC pass). Jobs carry an *owner* token: the process (server or embedded
client) that accepted them and will run them. Jobs become runnable in ``qseq`` order, which is
assigned when their input is complete; a job is only claimed when no earlier job on the same index
is unfinished, which is what makes jobs on one index apply in submission order.

:class:`Catalog` is the interface the rest of the server uses; a PostgreSQL implementation needs
the same methods (``BEGIN IMMEDIATE`` becomes ``SELECT ... FOR UPDATE`` on the index row).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from ..errors import AlreadyExistsError, MossError
from .auth import private_dir, private_file
from .catalog_projects import USER_VERSION, ProjectRows

__all__ = ["Catalog", "IndexRow", "JobRow", "SqliteCatalog", "utc_now"]

TERMINAL = ("completed", "failed")
_FAIR_WINDOW = 256  # runnable jobs considered when picking the next project to serve

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
"""


def utc_now() -> str:
    """ISO-8601 UTC with milliseconds, e.g. ``2025-01-31T12:00:00.123Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class IndexRow:
    project_id: str
    name: str
    id: str
    status: str
    model_id: str
    model_version: str
    dimension: int | None
    version: str | None
    doc_count: int
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class JobRow:
    id: str
    project_id: str
    index_name: str
    index_id: str | None
    kind: str
    owner: str
    status: str
    started: bool
    progress: float
    phase: str | None
    error: str | None
    input_key: str | None
    params: dict[str, Any]
    doc_count: int | None
    qseq: int | None
    created_at: str
    updated_at: str
    completed_at: str | None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class VersionInfo:
    """What a committed version records about the index it holds."""

    key: str
    model_id: str
    model_version: str
    dimension: int | None
    doc_count: int


class Catalog(Protocol):
    """Metadata store interface (see the module docstring)."""

    def add_project(
        self,
        project_id: str,
        name: str | None,
        salt: bytes | None,
        key_hash: bytes | None,
        scheme: str | None = None,
    ) -> None: ...
    def project_key(
        self, project_id: str
    ) -> tuple[str | None, bytes | None, bytes | None] | None: ...
    def set_project_key(
        self,
        project_id: str,
        key_hash: bytes | None,
        scheme: str | None,
        *,
        expect: bytes | None = None,
    ) -> bool: ...
    def list_projects(self) -> list[dict[str, Any]]: ...
    def count_pending(self, project_id: str) -> int: ...
    def get_index(self, project_id: str, name: str) -> IndexRow | None: ...
    def list_indexes(self, project_id: str) -> list[IndexRow]: ...
    def reserve_index(
        self, project_id: str, name: str, index_id: str, model_id: str, dimension: int | None
    ) -> IndexRow: ...
    def delete_index(self, project_id: str, name: str) -> IndexRow | None: ...
    def register_version(self, key: str, index_id: str, job: JobRow) -> None: ...
    def commit(self, job: JobRow, base_version: str | None, version: VersionInfo) -> JobRow: ...
    def create_job(
        self,
        job_id: str,
        project_id: str,
        index_name: str,
        index_id: str | None,
        kind: str,
        owner: str,
        params: dict[str, Any],
    ) -> JobRow: ...
    def queue_job(self, job_id: str, input_key: str | None, doc_count: int) -> JobRow: ...
    def set_job_index(self, job_id: str, index_id: str) -> None: ...
    def update_job(self, job_id: str, progress: float, phase: str | None) -> None: ...
    def count_unfinished(self, owner: str) -> int: ...
    def fail_job(self, job_id: str, error: str) -> JobRow: ...
    def claim_next(self, owner: str) -> JobRow | None: ...
    def get_job(self, job_id: str) -> JobRow | None: ...
    def unfinished_owners(self) -> set[str]: ...
    def fail_owner(self, owner: str, error: str) -> list[JobRow]: ...
    def collectable(self, live_owners: set[str]) -> tuple[list[str], list[str]]: ...
    def forget(self, version_keys: list[str], input_keys: list[str]) -> None: ...
    def known_keys(self) -> set[str]: ...
    def close(self) -> None: ...


_INDEX_COLS = (
    "project_id, name, id, status, model_id, model_version, dimension, version, doc_count, "
    "created_at, updated_at"
)
_JOB_COLS = (
    "id, project_id, index_name, index_id, kind, owner, status, started, progress, phase, error, "
    "input_key, params, doc_count, qseq, created_at, updated_at, completed_at"
)


def _index(row: tuple[Any, ...]) -> IndexRow:
    return IndexRow(*row)


def _job(row: tuple[Any, ...]) -> JobRow:
    r = list(row)
    r[7] = bool(r[7])
    r[12] = json.loads(r[12] or "{}")
    return JobRow(*r)


class SqliteCatalog(ProjectRows):
    """:class:`Catalog` on one SQLite file (WAL mode; safe to share between processes)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        private_dir(self.path.parent)
        private_file(self.path)  # SQLite gives its -wal and -shm files the same mode
        # One connection per catalog, serialised by a lock: every statement is sub-millisecond and
        # SQLite serialises writers anyway; other processes are handled by SQLite's file locks.
        self._db = sqlite3.connect(
            str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.RLock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            self._migrate(USER_VERSION)
        self._served: dict[str, int] = {}  # project -> claim counter when last served (fairness)
        self._claims = 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        """A write transaction (``BEGIN IMMEDIATE`` takes the write lock up front)."""
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def _one(self, sql: str, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        with self._lock:
            row: tuple[Any, ...] | None = self._db.execute(sql, args).fetchone()
            return row

    # ------------------------------------------------------------------ indexes

    def get_index(self, project_id: str, name: str) -> IndexRow | None:
        row = self._one(
            f"SELECT {_INDEX_COLS} FROM indexes WHERE project_id = ? AND name = ?",
            (project_id, name),
        )
        return None if row is None else _index(row)

    def list_indexes(self, project_id: str) -> list[IndexRow]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_INDEX_COLS} FROM indexes WHERE project_id = ?", (project_id,)
            ).fetchall()
        # Sorted in Python: code-point order, whatever collation the database uses.
        return sorted((_index(r) for r in rows), key=lambda r: r.name)

    def reserve_index(
        self, project_id: str, name: str, index_id: str, model_id: str, dimension: int | None
    ) -> IndexRow:
        """Create the row of a new index (status ``Building``, no version yet)."""
        now = utc_now()
        with self._tx() as cur:
            if cur.execute(
                "SELECT 1 FROM indexes WHERE project_id = ? AND name = ?", (project_id, name)
            ).fetchone():
                raise AlreadyExistsError(f"index {name!r} already exists")
            cur.execute(
                f"INSERT INTO indexes ({_INDEX_COLS}) VALUES (?, ?, ?, ?, ?, '', ?, NULL, 0, ?, ?)",
                (project_id, name, index_id, "Building", model_id, dimension, now, now),
            )
        row = self.get_index(project_id, name)
        assert row is not None
        return row

    def delete_index(self, project_id: str, name: str) -> IndexRow | None:
        with self._tx() as cur:
            row = cur.execute(
                f"SELECT {_INDEX_COLS} FROM indexes WHERE project_id = ? AND name = ?",
                (project_id, name),
            ).fetchone()
            if row is None:
                return None
            idx = _index(row)
            cur.execute("DELETE FROM indexes WHERE id = ?", (idx.id,))
            cur.execute("UPDATE versions SET state = 'dead' WHERE index_id = ?", (idx.id,))
            return idx

    # ------------------------------------------------------------------ versions

    def register_version(self, key: str, index_id: str, job: JobRow) -> None:
        """Record a version blob about to be written by ``job`` (state ``pending``)."""
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO versions (key, index_id, job_id, owner, state, created_at) "
                "VALUES (?, ?, ?, ?, 'pending', ?)",
                (key, index_id, job.id, job.owner, utc_now()),
            )

    def commit(self, job: JobRow, base_version: str | None, version: VersionInfo) -> JobRow:
        """Switch the index to ``version`` and complete ``job``, atomically.

        ``push`` jobs create the index if it is absent and replace whatever is current. Other jobs
        require the index to still be ``job.index_id`` at ``base_version`` (else the job fails:
        the index was deleted or replaced under it).
        """
        now = utc_now()
        with self._tx() as cur:
            row = cur.execute(
                f"SELECT {_INDEX_COLS} FROM indexes WHERE project_id = ? AND name = ?",
                (job.project_id, job.index_name),
            ).fetchone()
            current = _index(row) if row is not None else None
            if job.kind == "push":
                if current is None:
                    index_id = _version_index_id(cur, version.key)
                    cur.execute(
                        f"INSERT INTO indexes ({_INDEX_COLS}) "
                        "VALUES (?, ?, ?, 'Ready', ?, ?, ?, ?, ?, ?, ?)",
                        (
                            job.project_id,
                            job.index_name,
                            index_id,
                            version.model_id,
                            version.model_version,
                            version.dimension,
                            version.key,
                            version.doc_count,
                            now,
                            now,
                        ),
                    )
                    old = None
                else:
                    old = current.version
                    cur.execute(
                        "UPDATE versions SET index_id = ? WHERE key = ?", (current.id, version.key)
                    )
            else:
                if current is None or current.id != job.index_id:
                    raise MossError(
                        f"index {job.index_name!r} was deleted before the job finished",
                        code="NOT_FOUND",
                    )
                if current.version != base_version:
                    raise MossError(
                        f"index {job.index_name!r} changed while the job ran", code="INTERNAL"
                    )
                old = current.version
            if current is not None:
                cur.execute(
                    "UPDATE indexes SET status = 'Ready', model_id = ?, model_version = ?, "
                    "dimension = ?, version = ?, doc_count = ?, updated_at = ? WHERE id = ?",
                    (
                        version.model_id,
                        version.model_version,
                        version.dimension,
                        version.key,
                        version.doc_count,
                        now,
                        current.id,
                    ),
                )
            cur.execute("UPDATE versions SET state = 'live' WHERE key = ?", (version.key,))
            if old is not None:
                cur.execute("UPDATE versions SET state = 'dead' WHERE key = ?", (old,))
            cur.execute(
                "UPDATE jobs SET status = 'completed', progress = 100, phase = NULL, "
                "doc_count = ?, updated_at = ?, completed_at = ? WHERE id = ?",
                (version.doc_count, now, now, job.id),
            )
        got = self.get_job(job.id)
        assert got is not None
        return got

    # ------------------------------------------------------------------ jobs

    def create_job(
        self,
        job_id: str,
        project_id: str,
        index_name: str,
        index_id: str | None,
        kind: str,
        owner: str,
        params: dict[str, Any],
    ) -> JobRow:
        now = utc_now()
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO jobs (id, project_id, index_name, index_id, kind, owner, status, "
                "params, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'uploading', ?, ?, ?)",
                (
                    job_id,
                    project_id,
                    index_name,
                    index_id,
                    kind,
                    owner,
                    json.dumps(params),
                    now,
                    now,
                ),
            )
        job = self.get_job(job_id)
        assert job is not None
        return job

    def queue_job(self, job_id: str, input_key: str | None, doc_count: int) -> JobRow:
        """The job's input is complete: it becomes ``building`` (phase ``queued``), in order."""
        with self._tx() as cur:
            (qseq,) = cur.execute("SELECT COALESCE(MAX(qseq), 0) + 1 FROM jobs").fetchone()
            cur.execute(
                "UPDATE jobs SET status = 'building', phase = 'queued', input_key = ?, "
                "doc_count = ?, qseq = ?, updated_at = ? WHERE id = ? AND status = 'uploading'",
                (input_key, doc_count, qseq, utc_now(), job_id),
            )
        job = self.get_job(job_id)
        assert job is not None
        return job

    def set_job_index(self, job_id: str, index_id: str) -> None:
        with self._tx() as cur:
            cur.execute("UPDATE jobs SET index_id = ? WHERE id = ?", (index_id, job_id))

    def count_unfinished(self, owner: str) -> int:
        row = self._one(
            "SELECT COUNT(*) FROM jobs WHERE owner = ? AND status NOT IN ('completed', 'failed')",
            (owner,),
        )
        return int(row[0]) if row is not None else 0

    def update_job(self, job_id: str, progress: float, phase: str | None) -> None:
        with self._tx() as cur:
            cur.execute(
                "UPDATE jobs SET progress = ?, phase = ?, updated_at = ? "
                "WHERE id = ? AND status NOT IN ('completed', 'failed')",
                (progress, phase, utc_now(), job_id),
            )

    def fail_job(self, job_id: str, error: str) -> JobRow:
        now = utc_now()
        with self._tx() as cur:
            _fail(cur, job_id, error, now)
        job = self.get_job(job_id)
        assert job is not None
        return job

    def claim_next(self, owner: str) -> JobRow | None:
        """Start the owner's next runnable job (one whose index has no earlier unfinished job).

        Among runnable jobs, the project served least recently goes first (round-robin across
        projects), and within a project the earliest job: one busy project cannot starve the
        others, and jobs on one index still run in submission order.
        """
        with self._tx() as cur:
            rows = cur.execute(
                f"SELECT {_JOB_COLS} FROM jobs AS j WHERE j.owner = ? AND j.status = 'building' "
                "AND j.started = 0 AND NOT EXISTS (SELECT 1 FROM jobs AS e WHERE "
                "e.project_id = j.project_id AND e.index_name = j.index_name "
                "AND e.status = 'building' AND e.qseq < j.qseq) ORDER BY j.qseq LIMIT ?",
                (owner, _FAIR_WINDOW),
            ).fetchall()
            if not rows:
                return None
            row = min(rows, key=lambda r: (self._served.get(r[1], 0), r[14]))
            self._claims += 1
            self._served[row[1]] = self._claims
            if len(self._served) > 4 * _FAIR_WINDOW:  # forget long-idle projects (they sort first)
                for project in sorted(self._served, key=self._served.__getitem__)[:_FAIR_WINDOW]:
                    del self._served[project]
            cur.execute(
                "UPDATE jobs SET started = 1, updated_at = ? WHERE id = ?", (utc_now(), row[0])
            )
        return self.get_job(row[0])

    def get_job(self, job_id: str) -> JobRow | None:
        row = self._one(f"SELECT {_JOB_COLS} FROM jobs WHERE id = ?", (job_id,))
        return None if row is None else _job(row)

    def unfinished_owners(self) -> set[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT owner FROM jobs WHERE status NOT IN ('completed', 'failed') "
                "UNION SELECT DISTINCT owner FROM versions WHERE state = 'pending'"
            ).fetchall()
        return {r[0] for r in rows}

    def fail_owner(self, owner: str, error: str) -> list[JobRow]:
        """Fail every unfinished job of a dead owner and drop its pending versions."""
        now = utc_now()
        with self._tx() as cur:
            ids = [
                r[0]
                for r in cur.execute(
                    "SELECT id FROM jobs WHERE owner = ? AND status NOT IN ('completed', 'failed')",
                    (owner,),
                ).fetchall()
            ]
            for job_id in ids:
                _fail(cur, job_id, error, now)
            cur.execute(
                "UPDATE versions SET state = 'dead' WHERE owner = ? AND state = 'pending'",
                (owner,),
            )
        return [j for j in (self.get_job(i) for i in ids) if j is not None]

    # ------------------------------------------------------------------ garbage collection

    def collectable(self, live_owners: set[str]) -> tuple[list[str], list[str]]:
        """Blob keys that may be deleted: dead versions, and inputs of finished jobs."""
        with self._lock:
            dead = [r[0] for r in self._db.execute("SELECT key FROM versions WHERE state = 'dead'")]
            inputs = [
                r[0]
                for r in self._db.execute(
                    "SELECT input_key FROM jobs WHERE input_key IS NOT NULL "
                    "AND status IN ('completed', 'failed')"
                )
            ]
        return dead, inputs

    def forget(self, version_keys: list[str], input_keys: list[str]) -> None:
        with self._tx() as cur:
            cur.executemany("DELETE FROM versions WHERE key = ?", [(k,) for k in version_keys])
            cur.executemany(
                "UPDATE jobs SET input_key = NULL WHERE input_key = ?", [(k,) for k in input_keys]
            )

    def known_keys(self) -> set[str]:
        """Every blob key the catalog refers to (anything else in the store is an orphan)."""
        with self._lock:
            keys = {r[0] for r in self._db.execute("SELECT key FROM versions")}
            keys |= {
                r[0]
                for r in self._db.execute("SELECT input_key FROM jobs WHERE input_key IS NOT NULL")
            }
            keys |= {
                f"uploads/{r[0]}"
                for r in self._db.execute(
                    "SELECT id FROM jobs WHERE status NOT IN ('completed', 'failed')"
                )
            }
        return keys


def _version_index_id(cur: sqlite3.Cursor, key: str) -> str:
    row = cur.execute("SELECT index_id FROM versions WHERE key = ?", (key,)).fetchone()
    if row is None:
        raise MossError(f"version {key} was never registered", code="INTERNAL")
    return str(row[0])


def _fail(cur: sqlite3.Cursor, job_id: str, error: str, now: str) -> None:
    row = cur.execute(
        "SELECT kind, project_id, index_id, status FROM jobs WHERE id = ?", (job_id,)
    ).fetchone()
    if row is None or row[3] in TERMINAL:
        return
    kind, _, index_id, _ = row
    cur.execute(
        "UPDATE jobs SET status = 'failed', error = ?, phase = NULL, updated_at = ?, "
        "completed_at = ? WHERE id = ?",
        (error, now, now, job_id),
    )
    if kind in ("create", "files", "crawl"):  # a first build that failed: Failed, not Building
        cur.execute(
            "UPDATE indexes SET status = 'Failed', updated_at = ? WHERE id = ? AND version IS NULL",
            (now, index_id),
        )
    cur.execute(
        "UPDATE versions SET state = 'dead' WHERE state = 'pending' AND job_id = ?", (job_id,)
    )

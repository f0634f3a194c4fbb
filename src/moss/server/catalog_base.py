"""Row types of the catalog and the small set of hooks a SQL dialect provides.

Everything that is not SQL lives here so that every catalog module can import it without a cycle:
:mod:`moss.server.catalog` (the interface) re-exports the row types, the SQL layer
(:mod:`moss.server.catalog_sql` with its :mod:`~moss.server.catalog_projects`,
:mod:`~moss.server.catalog_owners` and :mod:`~moss.server.catalog_web` parts) is written once
against :class:`SqlBase`, and each dialect (:mod:`~moss.server.catalog_sqlite`,
:mod:`~moss.server.catalog_pg`) fills in the hooks: how a transaction is opened, how a row is
locked, how the database clock reads, how a change is announced.

SQL in the shared layer uses ``?`` placeholders (SQLite's); the PostgreSQL cursor translates them.
Timestamps are ISO-8601 UTC strings with milliseconds in both dialects (they sort as text), so rows
look the same whichever database holds them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

__all__ = [
    "INDEX_COLS",
    "JOB_COLS",
    "TERMINAL",
    "Cursor",
    "IndexRow",
    "JobRow",
    "SqlBase",
    "VersionInfo",
    "index_row",
    "job_row",
    "utc_now",
]

TERMINAL = ("completed", "failed")


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


INDEX_COLS = (
    "project_id, name, id, status, model_id, model_version, dimension, version, doc_count, "
    "created_at, updated_at"
)
JOB_COLS = (
    "id, project_id, index_name, index_id, kind, owner, status, started, progress, phase, error, "
    "input_key, params, doc_count, qseq, created_at, updated_at, completed_at"
)


def index_row(row: Sequence[Any]) -> IndexRow:
    """An :class:`IndexRow` from a row selected as :data:`INDEX_COLS`."""
    return IndexRow(*row)


def job_row(row: Sequence[Any]) -> JobRow:
    """A :class:`JobRow` from a row selected as :data:`JOB_COLS`."""
    r = list(row)
    r[7] = bool(r[7])
    r[8] = float(r[8])
    r[12] = json.loads(r[12] or "{}")
    return JobRow(*r)


class Cursor(Protocol):
    """The DB-API cursor subset the SQL layer uses (``?`` placeholders)."""

    @property
    def rowcount(self) -> int: ...
    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...
    def executemany(self, sql: str, seq_of_parameters: Any, /) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class SqlBase:
    """The hooks a dialect provides to the shared SQL layer (see the module docstring)."""

    #: appended to the SELECT of the index row in :meth:`commit` (row lock in PostgreSQL)
    FOR_UPDATE = ""
    #: appended to the claim query (``FOR UPDATE OF j SKIP LOCKED`` in PostgreSQL)
    SKIP_LOCKED = ""
    #: an SQL expression giving the next job sequence number (queue order)
    NEXT_QSEQ = "(SELECT COALESCE(MAX(qseq), 0) + 1 FROM jobs)"
    #: the runnable heads of the index queues (an index's earliest unfinished job, not yet
    #: started), project served least recently first, then queue order: ``{mine}`` restricts
    #: to one owner (alias ``q``), ``{limit}`` rows. SQLite: one grouped pass for the heads
    #: (0.4 ms with 5000 queued, ``benchmarks/bench_catalog.py``; a NOT EXISTS per candidate
    #: took 2.4 ms).
    QUEUE_HEADS = (
        "SELECT q.id, q.project_id FROM jobs AS q "
        "JOIN (SELECT project_id, index_name, MIN(qseq) AS head FROM jobs "
        "WHERE status = 'building' GROUP BY project_id, index_name) AS h "
        "ON h.project_id = q.project_id AND h.index_name = q.index_name AND h.head = q.qseq "
        "LEFT JOIN claims AS c ON c.project_id = q.project_id "
        "WHERE q.status = 'building' AND q.started = 0 {mine}"
        "ORDER BY COALESCE(c.seq, 0), q.qseq LIMIT {limit}"
    )

    def _tx(self) -> AbstractContextManager[Cursor]:
        """A write transaction; database errors leave it as :class:`moss.errors.MossError`."""
        raise NotImplementedError

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Every row of one read-only statement."""
        raise NotImplementedError

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        rows = self._all(sql, args)
        return rows[0] if rows else None

    def _now_sql(self, offset: bool = False) -> str:
        """An SQL expression for the database clock as ISO text; with ``offset``, plus ``?``
        seconds (one extra parameter)."""
        raise NotImplementedError

    def _serialize_index(self, cur: Cursor, project_id: str, index_name: str) -> None:
        """Inside a transaction: make queue_job calls on one index commit in qseq order."""

    def _notify(self, cur: Cursor, job_id: str) -> None:
        """Inside a transaction: announce a job state change to :meth:`listen` callbacks."""

    def listen(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` from a background thread when any node changes a job's state.

        A no-op unless the dialect can announce changes across processes (PostgreSQL)."""

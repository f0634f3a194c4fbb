"""The catalog: projects, key hashes, indexes, versions, jobs, owners and web sources.

The catalog is the single source of truth for *which* blob is an index's current version. A change
to an index writes a new immutable blob first (:mod:`moss.server.storage`) and then calls
:meth:`Catalog.commit`, which in **one transaction** checks that the index is still the one the
job was built against, switches the index's version pointer, marks the old version dead and marks
the job completed. A crash before that transaction leaves the old version in force and the job
unfinished (it is failed on restart, or when its owner's lease lapses); a crash after it leaves
the new version complete. Readers resolve the pointer and then read an immutable blob, so they
always get a complete version.

Versions go through ``pending`` (registered before the blob is written, so a garbage collector
never mistakes a blob being written for an orphan) -> ``live`` -> ``dead`` (superseded; its blob
is deleted by a GC pass once it has been dead for the grace period). Jobs carry an *owner* token:
the process (server, worker or embedded client) that accepted or claimed them. Jobs become
runnable in ``qseq`` order, assigned when their input is complete; a job is only claimed when no
earlier job on the same index is unfinished, which is what makes jobs on one index apply in
submission order.

This module is the interface: the :class:`Catalog` protocol, the row types and
:func:`open_catalog`. The SQL is written once in :mod:`moss.server.catalog_sql` (with
:mod:`~moss.server.catalog_projects` and :mod:`~moss.server.catalog_web`) and runs on SQLite
(:mod:`~moss.server.catalog_sqlite`, a data directory's default) or PostgreSQL
(:mod:`~moss.server.catalog_pg`, shared by the nodes of a cluster; ``psycopg`` is imported only
when such a catalog is opened).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

from ..errors import INVALID_ARGUMENT, MossError
from .catalog_base import TERMINAL, IndexRow, JobRow, VersionInfo, utc_now
from .catalog_sqlite import SqliteCatalog

__all__ = [
    "TERMINAL",
    "Catalog",
    "IndexRow",
    "JobRow",
    "SqliteCatalog",
    "VersionInfo",
    "open_catalog",
    "utc_now",
]


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
    def complete_unchanged(self, job_id: str, doc_count: int) -> None: ...
    def claim_next(self, owner: str, *, any_owner: bool = False) -> JobRow | None: ...
    def get_job(self, job_id: str) -> JobRow | None: ...
    def unfinished_owners(self) -> set[str]: ...
    def fail_owner(self, owner: str, error: str, *, queued_too: bool = True) -> list[JobRow]: ...
    def heartbeat(self, owner: str, role: str, ttl_s: float) -> None: ...
    def drop_owner(self, owner: str) -> None: ...
    def expired_owners(self) -> set[str]: ...
    def collectable(
        self, live_owners: set[str], grace_s: float = 0.0
    ) -> tuple[list[str], list[str]]: ...
    def forget(self, version_keys: list[str], input_keys: list[str]) -> None: ...
    def known_keys(self) -> set[str]: ...
    def server_secret(self) -> bytes: ...
    def listen(self, callback: Callable[[], None]) -> None: ...
    def web_sources(
        self,
        *,
        source_id: str | None = None,
        project_id: str | None = None,
        index_name: str | None = None,
        statuses: tuple[str, ...] = (),
        due_by: str | None = None,
    ) -> list[tuple[Any, ...]]: ...
    def add_web_source(
        self, values: dict[str, Any], limit: int
    ) -> Literal["created", "exists", "full"]: ...
    def update_web_source(
        self,
        source_id: str,
        changes: dict[str, Any],
        updated_at: str,
        *,
        only_if_crawling: str | None = None,
    ) -> tuple[Any, ...] | None: ...
    def claim_web_refresh(
        self, source_id: str, expected_next: str | None, new_next: str
    ) -> bool: ...
    def delete_web_sources(
        self,
        *,
        source_id: str | None = None,
        project_id: str | None = None,
        index_name: str | None = None,
    ) -> None: ...
    def close(self) -> None: ...


def open_catalog(url_or_path: str | Path) -> Catalog:
    """Open the catalog at a path or URL.

    A filesystem path or ``sqlite:///path`` opens a :class:`SqliteCatalog`;
    ``postgresql://...`` or ``postgres://...`` a
    :class:`~moss.server.catalog_pg.PostgresCatalog` (needs ``pip install 'mosslite[postgres]'``).
    """
    text = str(url_or_path)
    if text.startswith(("postgresql://", "postgres://")):
        try:
            from .catalog_pg import PostgresCatalog
        except ModuleNotFoundError as e:
            if not (e.name or "").startswith("psycopg"):
                raise
            raise MossError(
                "a postgresql:// catalog needs psycopg: pip install 'mosslite[postgres]'",
                code=INVALID_ARGUMENT,
            ) from e
        return PostgresCatalog(text)
    if text.startswith("sqlite://"):
        text = text[len("sqlite://") :]
        if not text.startswith("/"):
            raise MossError(
                f"catalog URL {url_or_path!s}: use sqlite:///absolute/path", code=INVALID_ARGUMENT
            )
    elif "://" in text:
        raise MossError(
            f"catalog {url_or_path!s}: not a path, sqlite:/// or postgresql:// URL",
            code=INVALID_ARGUMENT,
        )
    return SqliteCatalog(text)

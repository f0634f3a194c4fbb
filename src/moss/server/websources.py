"""Web sources in the store: their catalog table, their lifecycle, and crawl scheduling.

A web source is a row of ``web_sources`` in the same catalog as the indexes (its SQL lives in
:mod:`moss.server.catalog_web`, so sources work on SQLite and PostgreSQL alike). Its settings are
one JSON column, so a later setting needs no schema change. What the source has indexed is *not*
kept here: its pages are the index's documents whose ``webSourceId`` metadata is the source id, so
the index itself is the one source of truth a crawl diffs against (:mod:`moss.server.ingest_jobs`).

Crawls, and the purge that removes a deleted source's pages, are ordinary store jobs (kinds
``crawl`` and ``purge``) and therefore apply in submission order with the index's other jobs. A
source's ``status`` is written when a crawl is queued (``crawling``) and when it ends (``idle`` or
``failed``); because the process running a crawl can die, a ``crawling`` source whose job is
finished or gone is repaired on read (:meth:`WebSources.reconcile`).

Scheduling: a source with a ``daily``/``weekly`` cadence has a ``next_refresh_at``.
:meth:`WebSources.enqueue_due` queues a crawl for every due source and moves the time forward in
the same transaction (two processes sharing a directory cannot both queue it). ``moss serve`` calls
it from the job runner's maintenance pass (every few seconds); the embedded store calls it when a
process opens the store.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from ..errors import NOT_FOUND, AlreadyExistsError, InvalidArgumentError, MossError
from ..sources import (
    CrawlStats,
    CreateWebSourceResult,
    DeleteWebSourceResult,
    ResyncWebSourceResult,
    UpdateWebSourceResult,
    WebSource,
    check_source_id,
    conflict,
    create_settings,
    normalize_root_url,
    update_settings,
)
from ..types import validate_index_name
from .catalog import JobRow, utc_now

if TYPE_CHECKING:
    from .store import Store

__all__ = ["MAX_SOURCES_PER_INDEX", "WebSources"]

MAX_SOURCES_PER_INDEX = 20
_CRAWL_SETTINGS = (
    "max_pages",
    "max_depth",
    "max_documents",
    "include_paths",
    "exclude_paths",
    "respect_robots",
    "parse_documents",
)
_CADENCE_DAYS = {"daily": 1, "weekly": 7}


def _later(days: int, start: str | None = None) -> str:
    base = datetime.now(timezone.utc)
    if start is not None:
        base = datetime.fromisoformat(start.replace("Z", "+00:00"))
    stamp = (base + timedelta(days=days)).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _source(row: tuple[Any, ...]) -> WebSource:
    (sid, _, index_name, root_url, settings, status, _, next_at, crawled, pages, docs) = row[:11]
    code, error, stats, created, updated = row[11:]
    s = json.loads(settings)
    return WebSource(
        id=sid,
        index_name=index_name,
        root_url=root_url,
        max_pages=int(s["max_pages"]),
        max_documents=int(s["max_documents"]),
        max_depth=int(s["max_depth"]),
        include_paths=list(s["include_paths"]),
        exclude_paths=list(s["exclude_paths"]),
        respect_robots=bool(s["respect_robots"]),
        parse_documents=bool(s["parse_documents"]),
        refresh_cadence=str(s["refresh_cadence"]),
        next_refresh_at=next_at,
        status=status,
        last_crawled_at=crawled,
        last_page_count=int(pages),
        last_doc_count=int(docs),
        last_error_code=code,
        last_error=error,
        last_stats=CrawlStats(**json.loads(stats)) if stats else None,
        created_at=created,
        updated_at=updated,
    )


def settings_of(source: WebSource) -> dict[str, Any]:
    """The crawl settings of a source as a dict (what a crawl job reads)."""
    return {k: getattr(source, k) for k in (*_CRAWL_SETTINGS, "refresh_cadence")}


class WebSources:
    """The web-source operations of one :class:`~moss.server.store.Store` (both backends)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.catalog = store.catalog

    # -------------------------------------------------------------- rows

    def _get(self, project_id: str, source_id: str) -> tuple[WebSource, str | None]:
        check_source_id(source_id)
        rows = self.catalog.web_sources(source_id=source_id, project_id=project_id)
        if not rows:
            raise MossError(f"web source {source_id!r} not found", code=NOT_FOUND)
        source = self.reconcile(rows[0])
        return source, rows[0][-1]

    def reconcile(self, row: tuple[Any, ...]) -> WebSource:
        """The source of ``row``, repairing a ``crawling`` status whose job has ended."""
        source = _source(row[:16])
        job_id = row[-1]
        if source.status not in ("crawling", "removing"):
            return source
        job = self.catalog.get_job(job_id) if job_id else None
        if job is not None and not job.terminal:
            return source
        if source.status == "removing":  # the purge ended with its process, or failed
            if job is not None and job.status == "completed":
                self._remove(source.id)
                return source
            return self._set(
                source.id,
                {
                    "status": "failed",
                    "last_error_code": "PURGE_FAILED",
                    "last_error": (job.error if job is not None else None)
                    or "the purge job was lost",
                },
            )
        error = job.error if job is not None else "the crawl job was lost"
        if job is not None and job.status == "completed":  # finished, status write lost
            return self._set(source.id, {"status": "idle"}, only_if_crawling=job_id)
        return self.crawl_failed(source.id, job_id, "INTERRUPTED", error or "interrupted")

    def _set(
        self, source_id: str, changes: dict[str, Any], only_if_crawling: Any = None
    ) -> WebSource:
        row = self.catalog.update_web_source(
            source_id, changes, utc_now(), only_if_crawling=only_if_crawling
        )
        if row is None:
            raise MossError(f"web source {source_id!r} not found", code=NOT_FOUND)
        return _source(row)

    # -------------------------------------------------------------- public operations

    def create(
        self, project_id: str, index_name: str, root_url: str, options: dict[str, Any]
    ) -> CreateWebSourceResult:
        """Create a source (and its index, if new) and queue its first crawl."""
        validate_index_name(index_name)
        root = normalize_root_url(root_url)
        settings, model_id = create_settings(options)
        if not self.store.allow_private_crawl:
            from ..ingest.web import check_public_url

            check_public_url(root)
        row = self.catalog.get_index(project_id, index_name)
        if row is None:
            from ..embedding import get_embedder

            model = model_id or "moss-minilm"
            get_embedder(model)  # MODEL_UNAVAILABLE now rather than as a failed crawl
            try:
                row = self.catalog.reserve_index(
                    project_id, index_name, secrets.token_hex(16), model, None
                )
            except AlreadyExistsError:  # created concurrently: use it
                row = self.catalog.get_index(project_id, index_name)
                assert row is not None
        if row.model_id == "custom":
            raise InvalidArgumentError(
                f"Validation error: index {index_name!r} uses the custom model; web sources "
                "need a built-in model to embed pages"
            )
        if model_id is not None and model_id != row.model_id:
            raise InvalidArgumentError(
                f"Validation error: index {index_name!r} uses model {row.model_id!r}, not "
                f"{model_id!r}: omit model_id or pass {row.model_id!r}"
            )
        source_id = "ws_" + secrets.token_hex(12)
        now = utc_now()
        cadence = settings["refresh_cadence"]
        next_at = _later(_CADENCE_DAYS[cadence]) if cadence in _CADENCE_DAYS else None
        added = self.catalog.add_web_source(
            {
                "id": source_id,
                "project_id": project_id,
                "index_name": index_name,
                "root_url": root,
                "settings": json.dumps(settings),
                "next_refresh_at": next_at,
                "created_at": now,
            },
            MAX_SOURCES_PER_INDEX,
        )
        if added == "full":
            raise InvalidArgumentError(
                f"Validation error: index {index_name!r} already has "
                f"{MAX_SOURCES_PER_INDEX} web sources (the maximum)"
            )
        if added == "exists":
            raise AlreadyExistsError(f"web source {root!r} already exists for index {index_name!r}")
        job = self._queue_crawl(project_id, source_id)
        source, _ = self._get(project_id, source_id)
        return CreateWebSourceResult(**_fields(source), job_id=job.id)

    def list(self, project_id: str, index_name: str | None = None) -> list[WebSource]:
        """The project's sources (of one index if given), newest first."""
        if index_name is not None:
            validate_index_name(index_name)
            rows = self.catalog.web_sources(project_id=project_id, index_name=index_name)
        else:
            rows = self.catalog.web_sources(project_id=project_id)
        rows.sort(key=lambda r: r[16], reverse=True)
        return [self.reconcile(r) for r in rows]

    def get(self, project_id: str, source_id: str) -> WebSource:
        """One source (``NOT_FOUND`` if unknown, or deleted and purged)."""
        return self._get(project_id, source_id)[0]

    def update(
        self, project_id: str, source_id: str, options: dict[str, Any]
    ) -> UpdateWebSourceResult:
        """Change settings (not while crawling: ``CONFLICT``) and optionally resync."""
        changes, resync = update_settings(options)
        source, _ = self._get(project_id, source_id)
        if source.status == "removing":
            raise MossError(f"web source {source_id!r} not found", code=NOT_FOUND)
        crawl_changes = {k: v for k, v in changes.items() if k in _CRAWL_SETTINGS}
        if source.status == "crawling" and any(
            getattr(source, k) != v for k, v in crawl_changes.items()
        ):
            raise conflict(
                f"web source {source_id!r} is crawling: its crawl settings cannot change until "
                "the crawl ends"
            )
        if changes:
            settings = {**settings_of(source), **changes}
            cadence = settings["refresh_cadence"]
            next_at = source.next_refresh_at
            if "refresh_cadence" in changes and cadence != source.refresh_cadence:
                start = source.last_crawled_at
                next_at = (
                    _later(_CADENCE_DAYS[cadence], start) if cadence in _CADENCE_DAYS else None
                )
            source = self._set(
                source_id, {"settings": json.dumps(settings), "next_refresh_at": next_at}
            )
        job_id = None
        if resync:
            job_id = self.resync(project_id, source_id).job_id
            source, _ = self._get(project_id, source_id)
        return UpdateWebSourceResult(**_fields(source), job_id=job_id)

    def resync(self, project_id: str, source_id: str) -> ResyncWebSourceResult:
        """Queue a crawl (or return the one already queued or running)."""
        source, job_id = self._get(project_id, source_id)
        if source.status == "removing":
            raise MossError(f"web source {source_id!r} not found", code=NOT_FOUND)
        if source.status == "crawling" and job_id is not None:
            return ResyncWebSourceResult(source_id, job_id, "crawling")
        job = self._queue_crawl(project_id, source_id)
        return ResyncWebSourceResult(source_id, job.id, "crawling")

    def delete(self, project_id: str, source_id: str) -> DeleteWebSourceResult:
        """Delete a source; a purge job removes its pages from the index (which is kept)."""
        source, _ = self._get(project_id, source_id)
        if source.status == "removing":
            raise MossError(f"web source {source_id!r} not found", code=NOT_FOUND)
        row = self.catalog.get_index(project_id, source.index_name)
        if row is None:
            self._remove(source_id)
            return DeleteWebSourceResult(True, source_id, None)
        job = self._new_job(project_id, source.index_name, row.id, "purge", source_id)
        self._set(source_id, {"status": "removing", "job_id": job.id})
        self._queue(job)
        return DeleteWebSourceResult(True, source_id, job.id)

    def forget_index(self, project_id: str, index_name: str) -> None:
        """Drop the sources of a deleted index."""
        self.catalog.delete_web_sources(project_id=project_id, index_name=index_name)

    # -------------------------------------------------------------- jobs

    def _new_job(
        self, project_id: str, index_name: str, index_id: str, kind: str, source_id: str
    ) -> JobRow:
        job_id = secrets.token_hex(16)
        return self.catalog.create_job(
            job_id,
            project_id,
            index_name,
            index_id,
            kind,
            self.store.owner,
            {"source_id": source_id},
        )

    def _queue(self, job: JobRow) -> JobRow:
        queued = self.catalog.queue_job(job.id, None, 0)
        if self.store.runner is not None:
            self.store.runner.wake()
        return queued

    def _queue_crawl(self, project_id: str, source_id: str) -> JobRow:
        source, _ = self._get(project_id, source_id)
        row = self.catalog.get_index(project_id, source.index_name)
        if row is None:
            raise MossError(f"index {source.index_name!r} not found", code=NOT_FOUND)
        job = self._new_job(project_id, source.index_name, row.id, "crawl", source_id)
        # The status first: a reader never sees "crawling" with a job that does not exist yet.
        self._set(source_id, {"status": "crawling", "job_id": job.id, "last_error_code": None})
        return self._queue(job)

    def source_of(self, job: JobRow) -> WebSource | None:
        """The source a crawl or purge job works for (None if it was deleted)."""
        rows = self.catalog.web_sources(source_id=str(job.params.get("source_id")))
        return _source(rows[0][:16]) if rows else None

    def crawl_done(
        self, source_id: str, job_id: str, pages: int, docs: int, stats: CrawlStats
    ) -> None:
        """Record a completed crawl and schedule the next one."""
        rows = self.catalog.web_sources(source_id=source_id)
        if not rows:
            return
        cadence = json.loads(rows[0][4])["refresh_cadence"]
        now = utc_now()
        next_at = _later(_CADENCE_DAYS[cadence], now) if cadence in _CADENCE_DAYS else None
        self._set(
            source_id,
            {
                "status": "idle",
                "last_crawled_at": now,
                "last_page_count": pages,
                "last_doc_count": docs,
                "last_error_code": None,
                "last_error": None,
                "last_stats": json.dumps(stats.__dict__),
                "next_refresh_at": next_at,
            },
            only_if_crawling=job_id,
        )

    def crawl_failed(self, source_id: str, job_id: str, code: str, message: str) -> WebSource:
        """Record a failed crawl (the index is unchanged); scheduled crawls keep their cadence."""
        rows = self.catalog.web_sources(source_id=source_id)
        cadence = json.loads(rows[0][4])["refresh_cadence"] if rows else "manual"
        next_at = _later(_CADENCE_DAYS[cadence]) if cadence in _CADENCE_DAYS else None
        return self._set(
            source_id,
            {
                "status": "failed",
                "last_error_code": code,
                "last_error": message,
                "next_refresh_at": next_at,
            },
            only_if_crawling=job_id,
        )

    def complete_unchanged(self, job: JobRow) -> None:
        """Complete a crawl or purge that changed nothing, without writing a new version (a
        loaded copy of the index then has nothing to reload)."""
        row = self.catalog.get_index(job.project_id, job.index_name)
        self.catalog.complete_unchanged(job.id, row.doc_count if row is not None else 0)

    def _remove(self, source_id: str) -> None:
        self.catalog.delete_web_sources(source_id=source_id)

    def purge_done(self, source_id: str) -> None:
        """The purge of a deleted source completed: the source is gone."""
        self._remove(source_id)

    # -------------------------------------------------------------- scheduling

    def enqueue_due(self) -> int:
        """Queue a crawl for every source whose ``next_refresh_at`` has passed; returns how many.

        Also repairs the status of sources whose crawl ended with its process.
        """
        for row in self.catalog.web_sources(statuses=("crawling", "removing")):
            self.reconcile(row)
        now = utc_now()
        queued = 0
        for row in self.catalog.web_sources(statuses=("idle", "failed"), due_by=now):
            source = _source(row[:16])
            cadence_days = _CADENCE_DAYS.get(source.refresh_cadence)
            if cadence_days is None:
                continue
            # claim: only one process queues this crawl
            if self.catalog.claim_web_refresh(
                source.id, source.next_refresh_at, _later(cadence_days)
            ):
                try:
                    self._queue_crawl(row[1], source.id)
                    queued += 1
                except MossError:
                    continue  # the index went away; the source goes with it
        return queued


def _fields(source: WebSource) -> dict[str, Any]:
    return {k: getattr(source, k) for k in WebSource.__dataclass_fields__}

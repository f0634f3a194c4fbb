"""The catalog's SQL, written once for every dialect: indexes, versions and jobs.

:class:`SqlCatalog` implements :class:`moss.server.catalog.Catalog` on the hooks of
:class:`~moss.server.catalog_base.SqlBase`; :mod:`~moss.server.catalog_sqlite` and
:mod:`~moss.server.catalog_pg` only open connections and transactions, create the schema and fill
in the few places where the dialects differ (row locks, the job sequence, the database clock,
change notifications). Projects, owners/GC/settings and web sources are the mixins
:mod:`~moss.server.catalog_projects`, :mod:`~moss.server.catalog_owners` and
:mod:`~moss.server.catalog_web`. The rules the statements implement:

* :meth:`SqlCatalog.commit` switches the index's version pointer and completes the job in one
  transaction, after re-reading (and, in PostgreSQL, locking) the index row: a job built against
  a version that is no longer current loses (``CONFLICT``); a ``push`` replaces whatever is
  current, creating the index if absent (two pushes racing to create it: the second replaces the
  first).
* Jobs become runnable in ``qseq`` order (assigned when their input is complete); a job is claimed
  only when no earlier job on its index is unfinished; among runnable jobs the project served
  least recently goes first (a ``claims`` row per project records when), so one busy project
  cannot starve the others.
* Owners: in a directory store liveness is a file lock (:mod:`moss.server.owners`); on a shared
  database each node renews a lease row (:meth:`SqlCatalog.heartbeat`) and a lease that lapsed
  on the *database* clock marks its owner dead (:meth:`SqlCatalog.expired_owners`).
* Versions go ``pending`` -> ``live`` -> ``dead``; ``dead_at`` lets garbage collection wait a
  grace period, so a node still reading a superseded version is not cut off.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import CONFLICT, INTERNAL, NOT_FOUND, AlreadyExistsError, MossError
from .catalog_base import (
    INDEX_COLS,
    JOB_COLS,
    TERMINAL,
    Cursor,
    IndexRow,
    JobRow,
    VersionInfo,
    index_row,
    job_row,
    utc_now,
)
from .catalog_owners import OwnerRows
from .catalog_projects import ProjectRows
from .catalog_web import WebSourceRows

__all__ = ["SqlCatalog"]

_UNFINISHED = "status NOT IN ('completed', 'failed')"
_CANDIDATES = 16  # runnable queue heads a claim tries, in serving order


class SqlCatalog(ProjectRows, OwnerRows, WebSourceRows):
    """The dialect-neutral catalog (see the module docstring)."""

    # ------------------------------------------------------------------ indexes

    def get_index(self, project_id: str, name: str) -> IndexRow | None:
        """The index row, or None."""
        row = self._one(
            f"SELECT {INDEX_COLS} FROM indexes WHERE project_id = ? AND name = ?",
            (project_id, name),
        )
        return None if row is None else index_row(row)

    def list_indexes(self, project_id: str) -> list[IndexRow]:
        """A project's indexes by name."""
        rows = self._all(f"SELECT {INDEX_COLS} FROM indexes WHERE project_id = ?", (project_id,))
        # Sorted in Python: code-point order, whatever collation the database uses.
        return sorted((index_row(r) for r in rows), key=lambda r: r.name)

    def reserve_index(
        self, project_id: str, name: str, index_id: str, model_id: str, dimension: int | None
    ) -> IndexRow:
        """Create the row of a new index (status ``Building``, no version yet)."""
        now = utc_now()
        with self._tx() as cur:
            inserted = cur.execute(
                f"INSERT INTO indexes ({INDEX_COLS}) VALUES (?, ?, ?, ?, ?, '', ?, NULL, 0, ?, ?) "
                "ON CONFLICT (project_id, name) DO NOTHING",
                (project_id, name, index_id, "Building", model_id, dimension, now, now),
            ).rowcount
        if not inserted:
            raise AlreadyExistsError(f"index {name!r} already exists")
        row = self.get_index(project_id, name)
        if row is None:
            raise MossError(f"index {name!r} was deleted while it was created", code=NOT_FOUND)
        return row

    def delete_index(self, project_id: str, name: str) -> IndexRow | None:
        """Delete an index row (its versions become dead); returns the row deleted."""
        with self._tx() as cur:
            idx = self._index_for_update(cur, project_id, name)
            if idx is None:
                return None
            cur.execute("DELETE FROM indexes WHERE id = ?", (idx.id,))
            cur.execute(
                f"UPDATE versions SET state = 'dead', dead_at = {self._now_sql()} "
                "WHERE index_id = ? AND state <> 'dead'",
                (idx.id,),
            )
            return idx

    def _still_running(self, cur: Cursor, job: JobRow) -> None:
        """Lock ``job``'s row and refuse to commit it if it ended or changed hands meanwhile:
        a worker that stalled past its lease finds its job failed by another node's recovery,
        and its late commit must not turn that ``failed`` into ``completed``."""
        row = cur.execute(
            f"SELECT status, owner FROM jobs WHERE id = ?{self.FOR_UPDATE}", (job.id,)
        ).fetchone()
        if row is None or row[0] in TERMINAL or row[1] != job.owner:
            state = "deleted" if row is None else str(row[0])
            raise MossError(
                f"job {job.id} is {state} (its worker's lease ran out before the commit); "
                "the index was not changed",
                code=CONFLICT,
            )

    def _index_for_update(self, cur: Cursor, project_id: str, name: str) -> IndexRow | None:
        row = cur.execute(
            f"SELECT {INDEX_COLS} FROM indexes WHERE project_id = ? AND name = ?{self.FOR_UPDATE}",
            (project_id, name),
        ).fetchone()
        return None if row is None else index_row(row)

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
        require the index to still be ``job.index_id`` at ``base_version``: else the job fails
        with ``NOT_FOUND`` (the index was deleted) or ``CONFLICT`` (another version was committed
        since the job read it).
        """
        now = utc_now()
        with self._tx() as cur:
            self._still_running(cur, job)  # the job's row first, as fail_job locks it
            current = self._index_for_update(cur, job.project_id, job.index_name)
            old: str | None = None
            if job.kind == "push":
                if current is None:
                    index_id = _version_index_id(cur, version.key)
                    created = cur.execute(
                        f"INSERT INTO indexes ({INDEX_COLS}) "
                        "VALUES (?, ?, ?, 'Ready', ?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (project_id, name) DO NOTHING",
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
                    ).rowcount
                    if not created:  # another node created it meanwhile: replace that
                        current = self._index_for_update(cur, job.project_id, job.index_name)
                if current is not None:
                    old = current.version
                    cur.execute(
                        "UPDATE versions SET index_id = ? WHERE key = ?", (current.id, version.key)
                    )
            else:
                if current is None or current.id != job.index_id:
                    raise MossError(
                        f"index {job.index_name!r} was deleted before the job finished",
                        code=NOT_FOUND,
                    )
                if current.version != base_version:
                    raise MossError(
                        f"index {job.index_name!r} changed while the job ran", code=CONFLICT
                    )
                old = current.version
            if current is not None:
                changed = cur.execute(
                    "UPDATE indexes SET status = 'Ready', model_id = ?, model_version = ?, "
                    "dimension = ?, version = ?, doc_count = ?, updated_at = ? WHERE id = ? "
                    "AND (version = ? OR (version IS NULL AND CAST(? AS TEXT) IS NULL))",
                    (
                        version.model_id,
                        version.model_version,
                        version.dimension,
                        version.key,
                        version.doc_count,
                        now,
                        current.id,
                        old,
                        old,
                    ),
                ).rowcount
                if not changed:  # the compare-and-swap lost (a row lock makes this unreachable)
                    raise MossError(
                        f"index {job.index_name!r} changed while the job ran", code=CONFLICT
                    )
            cur.execute("UPDATE versions SET state = 'live' WHERE key = ?", (version.key,))
            if old is not None and old != version.key:
                cur.execute(
                    f"UPDATE versions SET state = 'dead', dead_at = {self._now_sql()} "
                    "WHERE key = ?",
                    (old,),
                )
            cur.execute(
                "UPDATE jobs SET status = 'completed', progress = 100, phase = NULL, "
                "doc_count = ?, updated_at = ?, completed_at = ? WHERE id = ?",
                (version.doc_count, now, now, job.id),
            )
            self._notify(cur, job.id)
        return self._job(job.id)

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
        """A new job, ``uploading`` until :meth:`queue_job`."""
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
        return self._job(job_id)

    def queue_job(self, job_id: str, input_key: str | None, doc_count: int) -> JobRow:
        """The job's input is complete: it becomes ``building`` (phase ``queued``), in order."""
        with self._tx() as cur:
            row = cur.execute(
                "SELECT project_id, index_name FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
            if row is not None:
                self._serialize_index(cur, row[0], row[1])
            cur.execute(
                "UPDATE jobs SET status = 'building', phase = 'queued', input_key = ?, "
                f"doc_count = ?, qseq = {self.NEXT_QSEQ}, updated_at = ? "
                "WHERE id = ? AND status = 'uploading'",
                (input_key, doc_count, utc_now(), job_id),
            )
            self._notify(cur, job_id)
        return self._job(job_id)

    def set_job_index(self, job_id: str, index_id: str) -> None:
        """Record the index a job works on."""
        with self._tx() as cur:
            cur.execute("UPDATE jobs SET index_id = ? WHERE id = ?", (index_id, job_id))

    def count_unfinished(self, owner: str) -> int:
        """The owner's jobs not yet finished."""
        row = self._one(f"SELECT COUNT(*) FROM jobs WHERE owner = ? AND {_UNFINISHED}", (owner,))
        return int(row[0]) if row is not None else 0

    def update_job(self, job_id: str, progress: float, phase: str | None) -> None:
        """Record a running job's progress."""
        with self._tx() as cur:
            cur.execute(
                "UPDATE jobs SET progress = ?, phase = ?, updated_at = ? "
                f"WHERE id = ? AND {_UNFINISHED}",
                (progress, phase, utc_now(), job_id),
            )
            self._notify(cur, job_id)

    def fail_job(self, job_id: str, error: str) -> JobRow:
        """Fail a job (no-op if it already finished)."""
        with self._tx() as cur:
            self._fail(cur, job_id, error, utc_now())
        return self._job(job_id)

    def complete_unchanged(self, job_id: str, doc_count: int) -> None:
        """Complete a job that changed nothing (no new version; no-op if it finished)."""
        now = utc_now()
        with self._tx() as cur:
            cur.execute(
                "UPDATE jobs SET status = 'completed', progress = 100, phase = NULL, "
                f"doc_count = ?, updated_at = ?, completed_at = ? WHERE id = ? AND {_UNFINISHED}",
                (doc_count, now, now, job_id),
            )
            self._notify(cur, job_id)

    def claim_next(self, owner: str, *, any_owner: bool = False) -> JobRow | None:
        """Start the next runnable job (one whose index has no earlier unfinished job).

        Only ``owner``'s own jobs, or with ``any_owner`` (cluster workers) anyone's, which then
        become ``owner``'s. Among runnable jobs, the project served least recently goes first
        (round-robin across projects), and within a project the earliest job.
        """
        # Two steps: the runnable heads of the index queues in serving order (the dialect's
        # QUEUE_HEADS), then the first of them not locked by another worker. (One statement
        # with FOR UPDATE made PostgreSQL rerun its subquery per queued job, on the statistics
        # of a freshly filled queue: 116 ms a claim with 200 queued, seconds with 1000.)
        mine = "" if any_owner else "AND q.owner = ? "
        heads = self.QUEUE_HEADS.format(mine=mine, limit=_CANDIDATES)
        lock = (
            "SELECT j.id FROM jobs AS j WHERE j.id = ? AND j.status = 'building' "
            f"AND j.started = 0{self.SKIP_LOCKED}"
        )
        args: tuple[Any, ...] = () if any_owner else (owner,)
        for _ in range(3):  # every candidate taken by other nodes meanwhile: look again
            with self._tx() as cur:
                candidates = cur.execute(heads, args).fetchall()
                if not candidates:
                    return None
                picked = next(
                    (c for c in candidates if cur.execute(lock, (c[0],)).fetchone() is not None),
                    None,
                )
                if picked is None:
                    continue
                job_id, project_id = picked[0], picked[1]
                claimed = cur.execute(
                    "UPDATE jobs SET started = 1, owner = ?, updated_at = ? "
                    "WHERE id = ? AND status = 'building' AND started = 0",
                    (owner, utc_now(), job_id),
                ).rowcount
                if not claimed:
                    continue
                cur.execute(
                    "INSERT INTO claims (project_id, seq) VALUES "
                    "(?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM claims)) "
                    "ON CONFLICT (project_id) DO UPDATE SET seq = excluded.seq",
                    (project_id,),
                )
                self._notify(cur, job_id)
            return self.get_job(job_id)
        return None

    def get_job(self, job_id: str) -> JobRow | None:
        """A job, or None."""
        row = self._one(f"SELECT {JOB_COLS} FROM jobs WHERE id = ?", (job_id,))
        return None if row is None else job_row(row)

    def _job(self, job_id: str) -> JobRow:
        job = self.get_job(job_id)
        if job is None:
            raise MossError(f"job {job_id!r} not found", code=NOT_FOUND)
        return job

    def _fail(self, cur: Cursor, job_id: str, error: str, now: str) -> None:
        row = cur.execute(
            "SELECT kind, project_id, index_id, status FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        if row is None or row[3] in TERMINAL:
            return
        kind, index_id = row[0], row[2]
        cur.execute(
            "UPDATE jobs SET status = 'failed', error = ?, phase = NULL, updated_at = ?, "
            "completed_at = ? WHERE id = ?",
            (error, now, now, job_id),
        )
        if kind in ("create", "files", "crawl"):  # a first build that failed: Failed, not Building
            cur.execute(
                "UPDATE indexes SET status = 'Failed', updated_at = ? "
                "WHERE id = ? AND version IS NULL",
                (now, index_id),
            )
        cur.execute(
            f"UPDATE versions SET state = 'dead', dead_at = {self._now_sql()} "
            "WHERE state = 'pending' AND job_id = ?",
            (job_id,),
        )
        self._notify(cur, job_id)

    # ------------------------------------------------------------------ owners

    def fail_owner(self, owner: str, error: str, *, queued_too: bool = True) -> list[JobRow]:
        """Fail the unfinished jobs of a dead owner and drop its pending versions.

        With ``queued_too=False`` (cluster mode) queued jobs that have not started stay runnable
        by any worker; only uploads and started jobs fail.
        """
        now = utc_now()
        which = "" if queued_too else " AND (status = 'uploading' OR started = 1)"
        with self._tx() as cur:
            ids = [
                r[0]
                for r in cur.execute(
                    f"SELECT id FROM jobs WHERE owner = ? AND {_UNFINISHED}{which}", (owner,)
                ).fetchall()
            ]
            for job_id in ids:
                self._fail(cur, job_id, error, now)
            cur.execute(
                f"UPDATE versions SET state = 'dead', dead_at = {self._now_sql()} "
                "WHERE owner = ? AND state = 'pending'",
                (owner,),
            )
        return [j for j in (self.get_job(i) for i in ids) if j is not None]


def _version_index_id(cur: Cursor, key: str) -> str:
    row = cur.execute("SELECT index_id FROM versions WHERE key = ?", (key,)).fetchone()
    if row is None:
        raise MossError(f"version {key} was never registered", code=INTERNAL)
    return str(row[0])

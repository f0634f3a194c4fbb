"""The storage engine behind both the embedded cloud and ``moss serve``.

A :class:`Store` is one data directory::

    <root>/catalog.sqlite3       projects, key hashes, indexes, versions, jobs (moss.server.catalog)
    <root>/blobs/versions/<hex>  immutable index versions in the snapshot container format
    <root>/blobs/uploads/<job>   job inputs (an uploaded snapshot, a document batch, ids to delete)
    <root>/owners/<token>.lock   locked by each live process that runs jobs from this directory

The embedded backend and the HTTP server call the same methods, so both behave identically. Every
method takes the ``project_id`` it acts for and never touches another project's rows.

**Jobs** (``create``, ``add``, ``delete``, ``push``, ``files``; ``crawl`` and ``purge`` are queued
by :mod:`moss.server.websources`) are submitted in three steps — :meth:`begin`
(checks, job row in ``uploading``), writing the input blob, :meth:`finish` (validation, then
``building``/``queued``) — and run by this store's :class:`~moss.server.jobs.JobRunner` thread. Each
job belongs to the process that accepted it (its *owner*); when a process dies its lock file is
released, and the next store to look (on start-up, then every few seconds) marks that owner's
unfinished jobs failed. Several processes may share a directory: SQLite serialises the catalog, and
the claim rule in the catalog keeps jobs on one index in submission order across processes.

**Keys** are stored as HMAC-SHA256 digests under the directory's server secret and checked
against the catalog on every request (:mod:`moss.server.auth`), so a rotated or revoked key stops
working at once in every process. **Quotas** (:class:`~moss.server.limits.Quotas`: stored bytes,
indexes, unfinished jobs per project) are checked when a job is submitted.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from ..embedding.base import check_model_id
from ..errors import (
    NOT_FOUND,
    UNAUTHORIZED,
    AlreadyExistsError,
    InvalidArgumentError,
    MossError,
)
from ..types import (
    DocumentInfo,
    GetDocumentsOptions,
    IndexInfo,
    JobPhase,
    JobStatus,
    JobStatusResponse,
    ModelRef,
    validate_index_name,
)
from .auth import (
    KEY_SCHEME_HMAC,
    KEY_SCHEME_SCRYPT,
    MAX_KEY_CHARS,
    key_digest,
    load_secret,
    private_dir,
    scrypt_digest,
)
from .catalog import IndexRow, JobRow, SqliteCatalog
from .limits import QuotaError, Quotas
from .owners import OwnerLock, owner_alive
from .projects import CATALOG_FILE, create_project, revoke_key, rotate_key
from .storage import FileBlobStore
from .websources import WebSources

__all__ = [
    "CATALOG_FILE",
    "EMBEDDED_IDLE_EXIT_S",
    "Store",
    "create_project",
    "job_status",
    "revoke_key",
    "rotate_key",
]

log = logging.getLogger(__name__)

KINDS = ("create", "add", "delete", "push", "files", "crawl", "purge")
EMBEDDED_IDLE_EXIT_S = 5.0
_INTERRUPTED = "the job was interrupted: the process running it stopped before it finished"
_VERSION_PREFIX = "versions/"


# ------------------------------------------------------------------------------ the store


class Store:
    """One data directory: catalog, blobs and a job runner. See the module docstring.

    Args:
        root: the data directory (created if missing).
        run_jobs: run jobs in this process (False for tools that only read the catalog).
        idle_exit_s: let the runner thread end after this many idle seconds (it restarts on the
            next submission); None keeps it running, for its periodic maintenance (the server).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        run_jobs: bool = True,
        idle_exit_s: float | None = None,
        allow_private_crawl: bool = False,
        quotas: Quotas | None = None,
    ) -> None:
        from .jobs import JobRunner

        self.root = Path(root)
        private_dir(self.root)
        self.quotas = quotas or Quotas.unlimited()
        self.catalog = SqliteCatalog(self.root / CATALOG_FILE)
        self.blobs = FileBlobStore(self.root / "blobs")
        self.owner = secrets.token_hex(8)
        self._owners_dir = self.root / "owners"
        self._owner_lock = OwnerLock(self._owners_dir, self.owner)
        self._changed = threading.Condition()
        self.listeners: list[Callable[[], None]] = []  # called on every job state change
        self._secret = load_secret(self.root)
        self._dummy = key_digest(self._secret, "")
        self._readers: OrderedDict[str, Any] = OrderedDict()  # version key -> Engine
        self._readers_lock = threading.Lock()
        self._refs = 0
        self._closed = False
        self._finalized = False
        self._finalize_lock = threading.Lock()
        self._generation = 0  # bumped by notify(), so a waiter never misses a change
        self.recover()
        self.blobs.remove_temporaries()
        self.collect(orphans=True)
        self.runner = JobRunner(self, idle_exit_s=idle_exit_s) if run_jobs else None
        self.allow_private_crawl = allow_private_crawl  # web sources may crawl private addresses
        self.web = WebSources(self)
        if run_jobs:
            self.web.enqueue_due()  # scheduled crawls that fell due while no process ran them
        if self.runner is not None and idle_exit_s is None:
            self.runner.start()

    # -------------------------------------------------------------- lifecycle

    def close(self, *, drain: bool = True, wait: bool = True, timeout: float = 30.0) -> None:
        """Stop the job runner (after running this process's queued jobs if ``drain``)."""
        if self._closed:
            return
        self._closed = True
        if self.runner is not None:
            self.runner.stop(drain=drain)
            if self.runner.is_alive():
                if not wait:
                    return  # the runner releases the directory when it has drained
                self.runner.join(timeout)
                if self.runner.is_alive():
                    return
        self._finalize()

    def _finalize(self) -> None:
        """Release the directory (once the runner has stopped; idempotent)."""
        with self._finalize_lock:
            if self._finalized:
                return
            self._finalized = True
        self._owner_lock.release()
        self.catalog.close()

    @property
    def finalized(self) -> bool:
        """Whether the directory was released (the runner stopped and the catalog is closed)."""
        return self._finalized

    def notify(self) -> None:
        """Wake everything waiting for a job to change state."""
        with self._changed:
            self._generation += 1
            self._changed.notify_all()
        for listener in list(self.listeners):
            listener()

    def recover(self) -> None:
        """Fail the unfinished jobs of processes that died (their lock is free)."""
        for owner in self.catalog.unfinished_owners() - {self.owner}:
            if not owner_alive(self._owners_dir, owner):
                failed = self.catalog.fail_owner(owner, _INTERRUPTED)
                if failed:
                    log.warning(
                        "marked %d interrupted job(s) of a stopped process failed", len(failed)
                    )
                    self.notify()

    def collect(self, *, orphans: bool = False) -> None:
        """Delete superseded versions and finished jobs' inputs (and, with ``orphans``, blobs
        the catalog does not know: a crash between writing a blob and registering it)."""
        dead, inputs = self.catalog.collectable({self.owner})
        gone_v = [k for k in dead if self.blobs.delete(k)]
        gone_i = [k for k in inputs if self.blobs.delete(k)]
        if gone_v or gone_i:
            self.catalog.forget(gone_v, gone_i)
        if orphans:
            # List first, then read the catalog: a blob is registered before it is written, so
            # anything listed that the catalog does not know afterwards is truly an orphan.
            listed = self.blobs.keys("versions") + self.blobs.keys("uploads")
            known = self.catalog.known_keys()
            for key in listed:
                if key not in known:
                    self.blobs.delete(key)

    # -------------------------------------------------------------- projects and auth

    def ensure_project(self, project_id: str) -> None:
        """Create a key-less project row (the embedded store does not check keys)."""
        self.catalog.add_project(project_id, None, None, None)

    def authenticate(self, project_id: str | None, key: str | None) -> str:
        """Check a project's key against the catalog in constant time; returns the project id.

        A key stored in the legacy scrypt form is verified once that way and then replaced by its
        HMAC (see :mod:`moss.server.auth`).

        Raises:
            MossError: code ``UNAUTHORIZED`` for a missing, unknown, revoked or wrong credential.
        """
        if not project_id or not key:
            raise MossError("missing project credentials", code=UNAUTHORIZED)
        if len(key) > MAX_KEY_CHARS or len(project_id) > 128:
            raise MossError("invalid project credentials", code=UNAUTHORIZED)
        digest = key_digest(self._secret, key)
        stored = self.catalog.project_key(project_id)
        scheme, salt, expected = stored if stored is not None else (None, None, None)
        if expected is None:
            hmac.compare_digest(digest, self._dummy)  # same work whether or not it exists
            raise MossError("invalid project credentials", code=UNAUTHORIZED)
        if scheme == KEY_SCHEME_SCRYPT and salt is not None:
            if not hmac.compare_digest(scrypt_digest(key, salt), expected):
                raise MossError("invalid project credentials", code=UNAUTHORIZED)
            self.catalog.set_project_key(project_id, digest, KEY_SCHEME_HMAC, expect=expected)
            return project_id
        if not hmac.compare_digest(digest, expected):
            raise MossError("invalid project credentials", code=UNAUTHORIZED)
        return project_id

    # -------------------------------------------------------------- quotas

    def stored_bytes(self, project_id: str) -> int:
        """Bytes of a project's current index versions (what its storage quota counts)."""
        total = 0
        for row in self.catalog.list_indexes(project_id):
            if row.version is not None:
                with contextlib.suppress(KeyError):
                    total += self.blobs.size(row.version)
        return total

    def upload_allowance(self, project_id: str) -> int | None:
        """Bytes the project may still upload under its storage quota (None: no quota)."""
        limit = self.quotas.max_project_bytes
        return None if limit is None else max(0, limit - self.stored_bytes(project_id))

    def _check_quotas(self, project_id: str, name: str, kind: str) -> None:
        q = self.quotas
        if q.max_pending_jobs is not None:
            pending = self.catalog.count_pending(project_id)
            if pending >= q.max_pending_jobs:
                raise QuotaError(
                    f"project has {pending} unfinished jobs (quota {q.max_pending_jobs}); "
                    "wait for some to finish",
                    status=429,
                )
        if q.max_indexes is not None and kind in ("create", "files", "push"):
            names = {r.name for r in self.catalog.list_indexes(project_id)}
            if name not in names and len(names) >= q.max_indexes:
                raise QuotaError(
                    f"project has {len(names)} indexes (quota {q.max_indexes}); delete one first",
                    status=429,
                )
        if q.max_project_bytes is not None and kind not in ("delete",):
            used = self.stored_bytes(project_id)
            if used >= q.max_project_bytes:
                raise QuotaError(
                    f"project stores {used} bytes (quota {q.max_project_bytes}); "
                    "delete indexes or documents first",
                    status=413,
                )

    # -------------------------------------------------------------- indexes

    def _row(self, project_id: str, name: str) -> IndexRow:
        validate_index_name(name)
        row = self.catalog.get_index(project_id, name)
        if row is None:
            raise MossError(f"index {name!r} not found", code=NOT_FOUND)
        return row

    def get_index(self, project_id: str, name: str) -> IndexInfo:
        return _info(self._row(project_id, name))

    def list_indexes(self, project_id: str) -> list[IndexInfo]:
        return [_info(r) for r in self.catalog.list_indexes(project_id)]

    def delete_index(self, project_id: str, name: str) -> bool:
        validate_index_name(name)
        if self.catalog.delete_index(project_id, name) is None:
            raise MossError(f"index {name!r} not found", code=NOT_FOUND)
        self.web.forget_index(project_id, name)
        self.collect()
        return True

    def open_version(
        self, project_id: str, name: str, if_version: str | None = None
    ) -> tuple[str, BinaryIO | None, int]:
        """The current version's id and an open stream of its blob (None if ``if_version``
        is still current) and the blob size.

        Raises:
            MossError: ``NOT_FOUND`` if the index does not exist or has no completed version.
        """
        for _ in range(5):  # the version may be superseded and collected between the two reads
            row = self._row(project_id, name)
            if row.version is None:
                raise MossError(f"index {name!r} has no completed version yet", code=NOT_FOUND)
            version = row.version[len(_VERSION_PREFIX) :]
            if if_version is not None and if_version == version:
                return version, None, 0
            try:
                f = self.blobs.open(row.version)
                return version, f, os.fstat(f.fileno()).st_size
            except KeyError:
                continue
        raise MossError(f"index {name!r} changed too often to be read", code="INTERNAL")

    def read_version(
        self, project_id: str, name: str, if_version: str | None = None
    ) -> tuple[str, Any]:
        """Like :meth:`open_version` but returns the whole blob (memory-mapped) or None."""
        for _ in range(5):
            row = self._row(project_id, name)
            if row.version is None:
                raise MossError(f"index {name!r} has no completed version yet", code=NOT_FOUND)
            version = row.version[len(_VERSION_PREFIX) :]
            if if_version is not None and if_version == version:
                return version, None
            try:
                return version, self.blobs.read(row.version)
            except KeyError:
                continue
        raise MossError(f"index {name!r} changed too often to be read", code="INTERNAL")

    def get_docs(
        self, project_id: str, name: str, options: GetDocumentsOptions | None = None
    ) -> list[DocumentInfo]:
        """Stored documents (filter, sort, group as in a session), without embeddings."""
        return self.get_docs_versioned(project_id, name, options)[1]

    def get_docs_versioned(
        self, project_id: str, name: str, options: GetDocumentsOptions | None = None
    ) -> tuple[str, list[DocumentInfo]]:
        """:meth:`get_docs` and the version it read ("" before the first version): the HTTP
        layer pages through one version and notices when the index changed between pages."""
        row = self._row(project_id, name)
        if row.version is None:
            return "", []
        engine = self._reader(row.version)
        return row.version[len(_VERSION_PREFIX) :], engine.get_documents(options)

    def _reader(self, key: str) -> Any:
        """A read-only engine of one immutable version (small LRU, never mutated)."""
        from .jobs import load_engine

        with self._readers_lock:
            engine = self._readers.get(key)
            if engine is not None:
                self._readers.move_to_end(key)
                return engine
        engine, _ = load_engine(self.blobs.read(key))
        with self._readers_lock:
            self._readers[key] = engine
            while len(self._readers) > 4:
                self._readers.popitem(last=False)
        return engine

    # -------------------------------------------------------------- job submission

    def begin(
        self, project_id: str, name: str, kind: str, params: dict[str, Any] | None = None
    ) -> JobRow:
        """Check a submission up front and create its job (status ``uploading``)."""
        validate_index_name(name)
        if kind not in KINDS or kind in ("crawl", "purge"):  # those two are queued internally
            raise InvalidArgumentError(f"unknown job kind {kind!r}")
        self._check_quotas(project_id, name, kind)
        params = dict(params or {})
        index_id = None
        if kind in ("create", "files"):
            check_model_id(params.get("model_id"))
            if self.catalog.get_index(project_id, name) is not None:
                raise AlreadyExistsError(f"index {name!r} already exists")
        elif kind in ("add", "delete"):
            index_id = self._row(project_id, name).id
        job_id = secrets.token_hex(16)
        return self.catalog.create_job(job_id, project_id, name, index_id, kind, self.owner, params)

    def input_writer(self, job: JobRow) -> contextlib.AbstractContextManager[BinaryIO]:
        """Where to write the job's input (published when the block exits cleanly)."""
        return self.blobs.create(f"uploads/{job.id}")

    def finish(self, job: JobRow) -> JobRow:
        """Validate the uploaded input and queue the job; on failure the job is failed, its
        input deleted, and the error raised."""
        key = f"uploads/{job.id}"
        try:
            count, index_id = self._validate_input(job, key)
            if index_id is not None and index_id != job.index_id:
                self.catalog.set_job_index(job.id, index_id)
            queued = self.catalog.queue_job(job.id, key, count)
        except BaseException as e:
            self.abort(job, e)
            raise
        if self.runner is not None:
            self.runner.wake()
        return queued

    def abort(self, job: JobRow, error: BaseException) -> None:
        """Fail a job whose submission did not complete."""
        message = error.message if isinstance(error, MossError) else "upload interrupted"
        self.catalog.fail_job(job.id, message)
        self.blobs.delete(f"uploads/{job.id}")
        self.notify()

    def submit(
        self,
        project_id: str,
        name: str,
        kind: str,
        data: bytes,
        params: dict[str, Any] | None = None,
    ) -> JobRow:
        """All three submission steps for an input already in memory (embedded backend)."""
        job = self.begin(project_id, name, kind, params)
        try:
            with self.input_writer(job) as f:
                f.write(data)
        except BaseException as e:
            self.abort(job, e)
            raise
        return self.finish(job)

    def _validate_input(self, job: JobRow, key: str) -> tuple[int, str | None]:
        from ..cloud.wire import decode_batch, validate_columns
        from ..engine import CUSTOM
        from ..snapshot import unpack

        blob = self.blobs.read(key)
        if job.kind == "files":
            from .ingest_jobs import validate_files

            return validate_files(self, job, blob)
        if job.kind == "delete":
            try:
                ids = json.loads(bytes(blob))["ids"]
            except (ValueError, KeyError, TypeError) as e:
                raise InvalidArgumentError('delete input must be {"ids": [...]}') from e
            if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
                raise InvalidArgumentError("doc_ids must be a non-empty list of strings")
            return len(ids), None
        if job.kind == "push":
            data = unpack(memoryview(blob))
            validate_columns(data)
            if data.doc_count == 0:
                raise InvalidArgumentError(
                    f"cannot push index {job.index_name!r}: it has no documents; "
                    "add documents first"
                )
            check_model_id(data.model_id)
            _check_push(data)
            return data.doc_count, None
        docs, data = decode_batch(blob)
        if data.vectors is not None:
            _check_finite(data.vectors)
        if job.kind == "create":
            model = str(job.params["model_id"])
            if not docs:
                raise InvalidArgumentError("create_index needs at least one document")
            dimension = None
            index_id = secrets.token_hex(16)
        else:
            row = self._row(job.project_id, job.index_name)
            if row.id != job.index_id:
                raise MossError(f"index {job.index_name!r} not found", code=NOT_FOUND)
            model, dimension, index_id = row.model_id, row.dimension, row.id
        if model == CUSTOM:
            if docs and data.vectors is None:
                raise InvalidArgumentError("the custom model needs an embedding on every document")
            if docs and dimension is not None and data.dimension != dimension:
                detail = (
                    f"Invalid embedding length: expected {dimension} but received {data.dimension}."
                )
                raise InvalidArgumentError(detail, detail=detail)
        elif docs:
            from ..embedding import get_embedder

            get_embedder(model)  # MODEL_UNAVAILABLE now rather than as a failed job
        if job.kind == "create":
            dim = data.dimension if model == CUSTOM else None
            self.catalog.reserve_index(job.project_id, job.index_name, index_id, model, dim)
        return len(docs), index_id

    # -------------------------------------------------------------- job status

    def get_job(self, project_id: str, job_id: str) -> JobRow:
        job = self.catalog.get_job(job_id) if isinstance(job_id, str) else None
        if job is None or job.project_id != project_id:
            raise MossError(f"job {job_id!r} not found", code=NOT_FOUND)
        return job

    def wait_job(self, project_id: str, job_id: str, timeout: float) -> JobRow:
        """The job once it is finished, or its state after ``timeout`` seconds."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            seen = self._generation  # read before the job, so a change in between is not missed
            job = self.get_job(project_id, job_id)
            left = deadline - time.monotonic()
            if job.terminal or left <= 0:
                return job
            with self._changed:
                # Woken by this process's runner; the cap covers jobs run by other processes.
                if self._generation == seen:
                    self._changed.wait(min(left, 0.1 if job.owner != self.owner else 1.0))


def _check_finite(vectors: Any) -> None:
    """Reject NaN or infinite vector components (checked in slices: no full-size temporary)."""
    import numpy as np

    step = max(1, (1 << 22) // max(1, vectors.shape[1]))
    for lo in range(0, len(vectors), step):
        bad = ~np.isfinite(vectors[lo : lo + step]).all(axis=1)
        if bad.any():
            row = lo + int(np.argmax(bad))
            raise InvalidArgumentError(f"vector {row} contains NaN or infinite values")


def _check_push(data: Any) -> None:
    """What a pushed snapshot must satisfy to be served (structure was checked by unpack)."""
    from ..engine import CUSTOM

    if data.vectors is None:
        raise InvalidArgumentError("a pushed index must carry one vector per document")
    if len(set(data.ids)) != len(data.ids):
        raise InvalidArgumentError("a pushed index has duplicate document ids")
    if data.model_id != CUSTOM:
        from ..embedding import get_embedder

        expected = get_embedder(data.model_id).dimension
        if data.dimension != expected:
            raise InvalidArgumentError(
                f"a pushed {data.model_id!r} index has {data.dimension}-d vectors; "
                f"the model makes {expected}-d vectors"
            )
    _check_finite(data.vectors)


def _info(row: IndexRow) -> IndexInfo:
    version = row.version[len(_VERSION_PREFIX) :] if row.version is not None else ""
    return IndexInfo(
        id=row.id,
        name=row.name,
        version=version,
        status=row.status,
        doc_count=row.doc_count,
        created_at=row.created_at,
        updated_at=row.updated_at,
        model=ModelRef(row.model_id, row.model_version),
    )


def job_status(job: JobRow) -> JobStatusResponse:
    """The public view of a job row."""
    return JobStatusResponse(
        job_id=job.id,
        status=JobStatus(job.status),
        progress=float(job.progress),
        current_phase=JobPhase(job.phase) if job.phase else None,
        error=job.error,
        created_at=job.created_at,
        updated_at=job.updated_at,
        completed_at=job.completed_at,
    )

"""The storage engine behind both the embedded cloud and ``moss serve``.

By default a :class:`Store` is one data directory::

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

**Cluster mode.** With a shared catalog (``catalog="postgresql://..."``) and usually a shared
blob store (``blobs="s3://bucket/prefix"``), any number of processes on any machines act as one
server; ``root`` is then only a node-local cache and scratch directory. Three things change:

* liveness is a lease in the catalog (:class:`~moss.server.owners.Lease`: a heartbeat every
  ``heartbeat_s``, dead after ``lease_ttl_s``), and :meth:`Store.recover` fails only the
  *running* and *uploading* jobs of dead owners — queued jobs stay runnable by any worker;
* the ``role`` splits the work: ``api`` nodes accept requests and uploads but never run jobs,
  ``worker`` nodes run any node's queued jobs (claimed with ``any_owner=True``), ``all`` does
  both; the catalog's ``listen`` wakes runners and ``wait_job`` long-polls across nodes;
* garbage collection deletes a superseded version only ``gc_grace_s`` after it was superseded
  (a reader on another node may still be downloading it), and the orphan sweep (every
  ``orphan_sweep_s``) only touches blobs older than ``orphan_age_s``.

The timings' defaults are in :mod:`moss.server.cluster`.

**Keys** are stored as HMAC-SHA256 digests under the directory's server secret and checked
against the catalog on every request (:mod:`moss.server.auth`), so a rotated or revoked key stops
working at once in every process. **Quotas** (:class:`~moss.server.limits.Quotas`: stored bytes,
indexes, unfinished jobs per project) are checked when a job is submitted.
"""

from __future__ import annotations

import contextlib
import hmac
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
from .catalog import Catalog, IndexRow, JobRow, SqliteCatalog, open_catalog
from .cluster import CLUSTER, ROLES, setting
from .inputs import check_quotas, stored_bytes, validate_input
from .jobs import JobRunner
from .limits import Quotas
from .owners import Lease, OwnerLock, owner_alive
from .projects import CATALOG_FILE, create_project, revoke_key, rotate_key
from .storage import BlobStore, FileBlobStore, open_blob_store
from .versions import load_engine
from .views import VERSION_PREFIX, index_info, job_status
from .websources import WebSources

__all__ = [
    "CATALOG_FILE",
    "CLUSTER",
    "EMBEDDED_IDLE_EXIT_S",
    "ROLES",
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
# ------------------------------------------------------------------------------ the store


class Store:
    """A catalog, a blob store and a job runner. See the module docstring.

    Args:
        root: the data directory (created if missing): catalog and blobs by default; with a
            shared catalog, the node-local cache and scratch space.
        catalog: a catalog URL or path (``postgresql://...``: cluster mode); None: the SQLite
            catalog in ``root``.
        blobs: a blob store URL or path (``s3://bucket/prefix``); None: ``root/blobs``.
        role: ``all`` (default), ``api`` (accept requests, never run jobs) or ``worker`` (run
            any node's jobs); the last two need a shared catalog.
        run_jobs: run jobs in this process (False for tools that only read the catalog).
        idle_exit_s: let the runner thread end after this many idle seconds (it restarts on the
            next submission); None keeps it running, for its periodic maintenance (the server).
        lease_ttl_s, heartbeat_s: cluster liveness (see the module docstring).
        gc_grace_s: seconds a superseded version is kept before it is deleted.
        orphan_age_s: the orphan sweep deletes only unknown blobs older than this.

    Raises:
        InvalidArgumentError: an unknown role, or ``api``/``worker`` without a shared catalog.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        catalog: str | None = None,
        blobs: str | None = None,
        role: str = "all",
        run_jobs: bool = True,
        idle_exit_s: float | None = None,
        allow_private_crawl: bool = False,
        quotas: Quotas | None = None,
        lease_ttl_s: float | None = None,
        heartbeat_s: float | None = None,
        gc_grace_s: float | None = None,
        orphan_age_s: float | None = None,
    ) -> None:
        if role not in ROLES:
            raise InvalidArgumentError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
        self.root = Path(root)
        private_dir(self.root)
        self.role = role
        self.quotas = quotas or Quotas.unlimited()
        self.catalog: Catalog = (
            open_catalog(catalog) if catalog else SqliteCatalog(self.root / CATALOG_FILE)
        )
        try:
            self._open(blobs, role, lease_ttl_s, heartbeat_s, gc_grace_s, orphan_age_s)
        except BaseException:
            self.catalog.close()
            raise
        self.owner = secrets.token_hex(8)
        self._lease: Lease | None = None
        self._owner_lock: OwnerLock | None = None
        if self.cluster:
            self._lease = Lease(self.catalog, self.owner, role, self.lease_ttl_s, self.heartbeat_s)
        else:
            self._owner_lock = OwnerLock(self._owners_dir, self.owner)
        self._changed = threading.Condition()
        self.listeners: list[Callable[[], None]] = []  # called on every job state change
        self._secret = self.catalog.server_secret() if self.cluster else load_secret(self.root)
        self._dummy = key_digest(self._secret, "")
        self._readers: OrderedDict[str, Any] = OrderedDict()  # version key -> Engine
        self._readers_lock = threading.Lock()
        self._refs = 0
        self._closed = False
        self._finalized = False
        self._finalize_lock = threading.Lock()
        self._generation = 0  # bumped by notify(), so a waiter never misses a change
        self.recover()
        if isinstance(self.blobs, FileBlobStore):
            self.blobs.remove_temporaries()
        self.collect(orphans=True)
        run_jobs = run_jobs and role != "api"
        self.runner = JobRunner(self, idle_exit_s=idle_exit_s) if run_jobs else None
        self.allow_private_crawl = allow_private_crawl  # web sources may crawl private addresses
        self.web = WebSources(self)
        if run_jobs:
            self.web.enqueue_due()  # scheduled crawls that fell due while no process ran them
        if self.cluster:
            self.catalog.listen(self._changed_elsewhere)  # after self.runner exists
        if self.runner is not None and idle_exit_s is None:
            self.runner.start()

    def _open(
        self,
        blobs: str | None,
        role: str,
        lease_ttl_s: float | None,
        heartbeat_s: float | None,
        gc_grace_s: float | None,
        orphan_age_s: float | None,
    ) -> None:
        """The blob store and the mode-dependent settings (after the catalog is open)."""
        self.cluster = not isinstance(self.catalog, SqliteCatalog)
        if role != "all" and not self.cluster:
            raise InvalidArgumentError(
                f"role {role!r} needs a catalog shared by every node (--catalog postgresql://...)"
            )
        self.lease_ttl_s = setting("lease_ttl_s", lease_ttl_s, self.cluster)
        self.heartbeat_s = setting("heartbeat_s", heartbeat_s, self.cluster)
        if self.cluster and self.heartbeat_s <= 0:
            self.heartbeat_s = max(0.05, self.lease_ttl_s / 5)
        self.gc_grace_s = setting("gc_grace_s", gc_grace_s, self.cluster)
        self.orphan_age_s = setting("orphan_age_s", orphan_age_s, self.cluster)
        self.orphan_sweep_s = setting("orphan_sweep_s", None, self.cluster)
        self._last_sweep = time.monotonic()  # the store sweeps as it opens
        self.blobs: BlobStore = (
            open_blob_store(blobs, self.root / "cache")
            if blobs
            else FileBlobStore(self.root / "blobs")
        )
        self._owners_dir = self.root / "owners"

    @property
    def claim_any(self) -> bool:
        """Whether this store's runner claims any node's queued jobs (cluster mode)."""
        return self.cluster

    def _changed_elsewhere(self) -> None:
        """The catalog's listener: a job changed state on some node."""
        self.notify()
        if self.runner is not None and not self._closed:
            self.runner.wake()

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
        if self._owner_lock is not None:
            self._owner_lock.release()
        if self._lease is not None:
            self._lease.release()
        self.catalog.close()

    def runner_exited(self) -> None:
        """The runner thread ended: finish closing if :meth:`close` did not wait for it."""
        if self._closed:
            self._finalize()

    def maintenance(self) -> None:
        """The runner's periodic pass: recover dead owners' jobs, collect garbage, then queue
        the web crawls that fell due (each step runs even if an earlier one failed)."""
        try:
            self.recover()
            sweep = time.monotonic() - self._last_sweep >= self.orphan_sweep_s
            if sweep:
                self._last_sweep = time.monotonic()
            self.collect(orphans=sweep)
        finally:
            self.web.enqueue_due()

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
        """Fail the unfinished jobs of processes that died (their lock is free; in cluster mode,
        their lease ran out — only their running and uploading jobs: queued ones stay queued)."""
        if self.cluster:
            dead = self.catalog.expired_owners() - {self.owner}
        else:
            candidates = self.catalog.unfinished_owners() - {self.owner}
            dead = {o for o in candidates if not owner_alive(self._owners_dir, o)}
        for owner in dead:
            if self.cluster:
                failed = self.catalog.fail_owner(owner, _INTERRUPTED, queued_too=False)
            else:
                failed = self.catalog.fail_owner(owner, _INTERRUPTED)
            if failed:
                log.warning("marked %d interrupted job(s) of a stopped process failed", len(failed))
                self.notify()

    def collect(self, *, orphans: bool = False) -> None:
        """Delete superseded versions and finished jobs' inputs (and, with ``orphans``, blobs
        the catalog does not know: a crash between writing a blob and registering it)."""
        if self.gc_grace_s > 0:
            dead, inputs = self.catalog.collectable({self.owner}, grace_s=self.gc_grace_s)
        else:
            dead, inputs = self.catalog.collectable({self.owner})
        gone_v = [k for k in dead if self.blobs.delete(k)]
        gone_i = [k for k in inputs if self.blobs.delete(k)]
        if gone_v or gone_i:
            self.catalog.forget(gone_v, gone_i)
        if orphans:
            # List first, then read the catalog: a blob is registered before it is written, so
            # anything listed that the catalog does not know afterwards is truly an orphan.
            age = self.orphan_age_s
            if age > 0:  # other nodes may be between writing a blob and registering it
                listed = self.blobs.keys("versions", age) + self.blobs.keys("uploads", age)
            else:
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
        return stored_bytes(self, project_id)

    def upload_allowance(self, project_id: str) -> int | None:
        """Bytes the project may still upload under its storage quota (None: no quota)."""
        limit = self.quotas.max_project_bytes
        return None if limit is None else max(0, limit - self.stored_bytes(project_id))

    # -------------------------------------------------------------- indexes

    def _row(self, project_id: str, name: str) -> IndexRow:
        validate_index_name(name)
        row = self.catalog.get_index(project_id, name)
        if row is None:
            raise MossError(f"index {name!r} not found", code=NOT_FOUND)
        return row

    def get_index(self, project_id: str, name: str) -> IndexInfo:
        return index_info(self._row(project_id, name))

    def list_indexes(self, project_id: str) -> list[IndexInfo]:
        return [index_info(r) for r in self.catalog.list_indexes(project_id)]

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
            version = row.version[len(VERSION_PREFIX) :]
            if if_version is not None and if_version == version:
                return version, None, 0
            try:
                f = self.blobs.open(row.version)
            except KeyError:
                continue
            try:
                return version, f, os.fstat(f.fileno()).st_size
            except (OSError, AttributeError, ValueError):  # a stream without a file (S3)
                pass
            try:
                return version, f, self.blobs.size(row.version)
            except KeyError:
                f.close()
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
            version = row.version[len(VERSION_PREFIX) :]
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
        return row.version[len(VERSION_PREFIX) :], engine.get_documents(options)

    def _reader(self, key: str) -> Any:
        """A read-only engine of one immutable version (small LRU, never mutated)."""
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
        check_quotas(self, self.quotas, project_id, name, kind)
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
            count, index_id = validate_input(self, job, key)
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
                # Woken by this process's runner, and in cluster mode by the catalog's listener;
                # the cap covers jobs run by other processes sharing a directory.
                if self._generation == seen:
                    cap = 1.0 if self.cluster or job.owner == self.owner else 0.1
                    self._changed.wait(min(left, cap))

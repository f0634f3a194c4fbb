"""The job runner: one thread per store that applies queued jobs to indexes.

A job never modifies a version in place. It builds the new index in memory, writes it as a new
immutable blob, and then commits (one catalog transaction switches the index to the new version
and completes the job). Anything that goes wrong before the commit — bad input, a missing model, a
crash — leaves the index exactly as it was, and the job ``failed`` with a message.

Indexes are handled *model-agnostically*: the runner loads a version as a custom-model
:class:`~moss.engine.Engine` (vectors and index arrays as stored, no embedder) and, for built-in
models, computes the vectors of new documents itself in batches, which is what lets it report
``generating_embeddings`` progress. The model identity of the version (id, artifact, manifest) is
carried alongside and written back into the new snapshot, so clients loading it reuse the vectors.

The runner keeps the engine of each index's latest version it wrote (a small LRU), so a stream of
``add_docs`` jobs on one index does not decode the whole index again for every job.

Testing hook: ``MOSS_TEST_COMMIT_DELAY`` (seconds) makes the runner pause after writing a new
version and before committing it, so crash tests can kill the process at the most delicate point.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from ..engine import CUSTOM, Engine
from ..errors import NETWORK, MossError
from ..snapshot import SnapshotData, pack
from ..types import DocumentInfo
from . import ingest_jobs
from .catalog import JobRow, VersionInfo
from .runtime_types import JobHost
from .storage import new_key
from .versions import Loaded, load_engine, model_version

__all__ = ["JobRunner"]

log = logging.getLogger(__name__)
T = TypeVar("T")

_EMBED_BATCH = 64
_CACHE_SIZE = 4
_MAINTENANCE_S = 2.0
_OUTAGE_BACKOFF_MAX_S = 5.0  # retries while the catalog's database is unreachable
Progress = Callable[[float, str], None]


class _Interrupted(Exception):
    """Raised inside a job by its progress callback once :meth:`JobRunner.abort` was called."""


class JobRunner:
    """Runs queued jobs, one at a time, in submission order per index: the store owner's own
    jobs, or (``store.claim_any``, cluster workers) any node's."""

    def __init__(self, store: JobHost, *, idle_exit_s: float | None = None) -> None:
        self.store = store
        self.idle_exit_s = idle_exit_s  # None: run until stopped (the server)
        self._thread: threading.Thread | None = None
        self._running = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._drain = True
        self._aborting = False  # set by abort(): the running job stops at its next progress report
        self._cache: OrderedDict[str, Loaded] = OrderedDict()  # index id -> latest version
        self._side: set[threading.Thread] = set()  # crawl jobs running on their own threads

    def wake(self) -> None:
        """Signal new work, starting the thread if it is not running."""
        with self._lock:
            self._wake.set()
            if not self._running and not self._stopping:
                self._running = True
                self._thread = threading.Thread(
                    target=self._run, name=f"moss-jobs-{self.store.owner}", daemon=True
                )
                self._thread.start()

    start = wake

    def join(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, *, drain: bool = True) -> None:
        """Stop when idle: after this owner's queued jobs (``drain``) or the current one."""
        with self._lock:
            self._drain = drain
            self._stopping = True
            self._wake.set()

    def abort(self) -> None:
        """Stop now: the running job fails at its next progress report (at most one embedding
        batch away) and queued jobs stay queued. Used at interpreter exit, where a job thread still
        inside onnxruntime when the process tears down its C++ runtime aborts the process."""
        self._aborting = True
        self.stop(drain=False)

    def _run(self) -> None:
        store = self.store
        last_maintenance = idle_since = time.monotonic()
        try:
            while True:
                self._wake.clear()  # before looking for work: a later wake() is never lost
                stop_now = self._stopping and not self._drain
                job = (
                    None
                    if stop_now
                    else self._through_outage("claiming a job", self._claim, while_stopping=False)
                )
                if job is not None:
                    self._execute(job)
                    idle_since = time.monotonic()
                    continue
                # A cluster runner leaves queued jobs to the other workers when it stops.
                unfinished = 0
                if not store.claim_any:
                    unfinished = self._through_outage(
                        "counting jobs",
                        lambda: store.catalog.count_unfinished(store.owner),
                        while_stopping=False,
                    )
                if self._stopping and (stop_now or unfinished == 0):
                    break
                now = time.monotonic()
                if now - last_maintenance >= _MAINTENANCE_S:
                    last_maintenance = now
                    self._maintenance()
                if self.idle_exit_s is not None and not unfinished:
                    if now - idle_since >= self.idle_exit_s:
                        with self._lock:
                            if not self._wake.is_set() and not self._stopping:
                                self._running = False
                                return  # the next wake() starts a new thread
                self._wake.wait(0.5)
        except Exception:  # the catalog went away under us; nothing more can run
            log.exception("moss job runner stopped unexpectedly")
        finally:
            with self._lock:
                side = list(self._side)
            for thread in side:  # crawls on their own threads finish (or abort) first
                thread.join()
            with self._lock:
                self._running = False
            store.runner_exited()

    def _through_outage(self, what: str, call: Callable[[], T], *, while_stopping: bool) -> T:
        """``call()``, retried with backoff while the catalog's database is unreachable
        (``NETWORK``; PostgreSQL down or restarting) instead of letting the runner die with a
        job still marked running, until :meth:`abort` (or :meth:`stop`, unless
        ``while_stopping``: failing a job is worth waiting for, claiming the next one is not).
        Other errors propagate."""
        delay = 0.1
        while True:
            try:
                return call()
            except MossError as e:
                if e.code != NETWORK or self._aborting or (self._stopping and not while_stopping):
                    raise
                log.warning("moss catalog unreachable while %s (%s); retrying", what, e.message)
            time.sleep(delay)
            delay = min(delay * 2, _OUTAGE_BACKOFF_MAX_S)

    def _claim(self) -> JobRow | None:
        store = self.store
        if store.claim_any:
            return store.catalog.claim_next(store.owner, any_owner=True)
        return store.catalog.claim_next(store.owner)

    def _maintenance(self) -> None:
        try:
            self.store.maintenance()
        except Exception:
            log.exception("moss store maintenance failed")

    # -------------------------------------------------------------- one job

    def _execute(self, job: JobRow) -> None:
        if job.kind == "crawl":
            # A crawl waits on the network for minutes: it runs on a thread of its own, so the
            # jobs of other indexes go on meanwhile. The claim rule still holds back this index's
            # later jobs until the crawl's job is finished.
            thread = threading.Thread(
                target=self._run_job, args=(job,), name=f"moss-crawl-{job.id[:8]}", daemon=True
            )
            with self._lock:
                self._side.add(thread)
            thread.start()
            return
        self._run_job(job)

    def should_stop(self) -> bool:
        """Whether a long job (a crawl) should give up now (interpreter exit)."""
        return self._aborting

    def loaded(
        self, version: str | None, engine: Engine, model_id: str, model: dict[str, str] | None
    ) -> Loaded:
        """An index version held in memory (for :mod:`moss.server.ingest_jobs`)."""
        return Loaded(version, engine, model_id, model)

    def read_version(self, key: str) -> Loaded:
        """Decode a version blob, bypassing the cache (safe from a crawl's own thread)."""
        engine, data = load_engine(self.store.blobs.read(key))
        return Loaded(key, engine, data.model_id, data.model)

    def _run_job(self, job: JobRow) -> None:
        store = self.store
        last = [0.0]

        def progress(value: float, phase: str) -> None:
            if self._aborting:
                raise _Interrupted
            now = time.monotonic()
            if now - last[0] >= 0.1 or value >= 80:  # at most ~10 catalog writes a second
                last[0] = now
                store.catalog.update_job(job.id, round(value, 1), phase)

        try:
            if job.kind == "push":
                self._push(job, progress)
            elif job.kind == "delete":
                self._delete(job, progress)
            elif job.kind in ("files", "crawl", "purge"):
                ingest_jobs.run(self, job, progress)
            else:
                self._upsert(job, progress)
        except MossError as e:
            self._fail(job, e.message)
        except _Interrupted:
            self._fail(job, "interrupted: the process running the job exited before it finished")
        except Exception as e:  # a bug or an OS error: never leak internals into the job record
            log.exception("moss job %s failed", job.id)
            self._fail(job, f"internal error ({type(e).__name__})")
        finally:
            try:  # before waking waiters, so a finished job has cleaned up after itself
                store.collect()
            except Exception:
                log.exception("moss garbage collection failed")
            store.notify()
            if job.kind == "crawl":
                with self._lock:
                    self._side.discard(threading.current_thread())
                self.wake()  # the index's next job may run now

    def _fail(self, job: JobRow, message: str) -> None:
        if job.index_id is not None:
            self._cache.pop(job.index_id, None)
        # Often the very outage that failed the job: wait for the database, or the job would
        # stay "building" under a live lease forever, holding back its index's later jobs. A
        # commit that did land before the connection broke leaves fail_job a no-op.
        self._through_outage(
            "failing a job",
            lambda: self.store.catalog.fail_job(job.id, message),
            while_stopping=True,
        )

    def _commit(
        self,
        job: JobRow,
        progress: Progress,
        base: Loaded | None,
        new: Loaded,
        *,
        blob_from: str | None = None,
        snapshot: SnapshotData | None = None,
        cache: bool = True,
    ) -> None:
        """Write the new version (or adopt the uploaded blob ``blob_from``) and switch to it
        (``cache=False`` from a crawl's own thread: the cache belongs to the runner thread)."""
        store = self.store
        key = new_key("versions")
        index_id = job.index_id or secrets.token_hex(16)
        store.catalog.register_version(key, index_id, job)
        progress(85, "uploading")
        if blob_from is not None:
            store.blobs.move(blob_from, key)
        else:
            assert snapshot is not None
            store.blobs.put(key, pack(snapshot))
        delay = float(os.environ.get("MOSS_TEST_COMMIT_DELAY") or 0)
        if delay > 0:
            progress(95, "cleanup")
            time.sleep(delay)
        engine = new.engine
        info = VersionInfo(
            key,
            new.model_id,
            model_version(new.model_id, new.model, engine.dimension),
            engine.dimension,
            engine.doc_count,
        )
        store.catalog.commit(job, base.version if base is not None else None, info)
        row = store.catalog.get_index(job.project_id, job.index_name)
        if row is not None and cache:
            self._cache[row.id] = dataclasses.replace(new, version=key)
            self._cache.move_to_end(row.id)
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)

    def _snapshot(self, job: JobRow, loaded: Loaded) -> SnapshotData:
        # Rows not yet folded into the HNSW graph would be folded again by every process that
        # loads this version (each load_index, each node's query cache): fold them once, here.
        loaded.engine.wait_for_background_work()
        snap = loaded.engine.to_snapshot(name=job.index_name)
        snap.model_id = loaded.model_id
        snap.model = loaded.model
        return snap

    def _base(self, job: JobRow, progress: Progress) -> Loaded:
        """The index's current version in memory (from the runner's cache when it is current)."""
        store = self.store
        row = store.catalog.get_index(job.project_id, job.index_name)
        if row is None or row.id != job.index_id:
            raise MossError(
                f"index {job.index_name!r} was deleted before the job ran", code="NOT_FOUND"
            )
        cached = self._cache.pop(row.id, None)
        if cached is not None and cached.version == row.version:
            return cached
        if row.version is None:  # its first build failed: start from an empty index
            return Loaded(None, Engine(CUSTOM, row.dimension), row.model_id, None)
        progress(5, "downloading")
        engine, data = load_engine(store.blobs.read(row.version))
        return Loaded(row.version, engine, data.model_id, data.model)

    # -------------------------------------------------------------- kinds

    def _push(self, job: JobRow, progress: Progress) -> None:
        assert job.input_key is not None
        progress(10, "deserializing")
        engine, data = load_engine(self.store.blobs.read(job.input_key))  # full validation
        progress(60, "building_index")
        new = Loaded(None, engine, data.model_id, data.model)
        if engine.wait_for_background_work():
            # The uploader had not yet folded all its vectors into the graph (a session pushed
            # right after its adds): store the folded index once, rather than have every loader
            # fold them again.
            self._commit(job, progress, None, new, snapshot=self._snapshot(job, new))
        else:
            self._commit(job, progress, None, new, blob_from=job.input_key)

    def _delete(self, job: JobRow, progress: Progress) -> None:
        assert job.input_key is not None
        ids = json.loads(bytes(self.store.blobs.read(job.input_key)))["ids"]
        base = self._base(job, progress)
        progress(50, "building_index")
        base.engine.delete(ids)
        self._commit(job, progress, base, base, snapshot=self._snapshot(job, base))

    def _upsert(self, job: JobRow, progress: Progress) -> None:
        from ..cloud.wire import decode_batch

        assert job.input_key is not None
        progress(2, "deserializing")
        docs, batch = decode_batch(self.store.blobs.read(job.input_key))
        upsert = bool(batch.extra.get("upsert", True))
        if job.kind == "create":
            model_id = str(job.params["model_id"])
            base = None
            target = Loaded(None, Engine(CUSTOM, batch.dimension), model_id, None)
        else:
            base = self._base(job, progress)
            target = base
        if target.model_id != CUSTOM:
            target = self._embed(target, docs, progress)
        progress(80, "building_index")
        target.engine.add_documents(docs, upsert=upsert)
        self._commit(job, progress, base, target, snapshot=self._snapshot(job, target))

    def _embed(self, target: Loaded, docs: list[DocumentInfo], progress: Progress) -> Loaded:
        """Embed ``docs`` in place with the built-in model (re-embedding the index first if its
        vectors came from another artifact, so one index never mixes two models)."""
        from ..embedding import get_embedder

        embedder = get_embedder(target.model_id)
        model = {
            "artifact_version": embedder.artifact_version,
            "manifest_sha256": embedder.manifest_sha256,
        }
        existing: list[DocumentInfo] = []
        if (
            target.engine.doc_count
            and (target.model or {}).get("manifest_sha256") != model["manifest_sha256"]
        ):
            existing = target.engine.get_documents()
        texts = [d.text for d in existing] + [d.text for d in docs]
        vectors = np.empty((len(texts), embedder.dimension), dtype=np.float32)
        for start in range(0, len(texts), _EMBED_BATCH):
            chunk = texts[start : start + _EMBED_BATCH]
            vectors[start : start + len(chunk)] = embedder.embed_documents(chunk)
            progress(10 + 65 * (start + len(chunk)) / max(len(texts), 1), "generating_embeddings")
        for d, v in zip(existing + docs, vectors):
            d.embedding = v  # type: ignore[assignment]  # read-only view, never copied
        if existing or target.engine.dimension is None:
            engine = Engine(CUSTOM, embedder.dimension)
            if existing:
                engine.add_documents(existing)
            return Loaded(target.version, engine, target.model_id, model)
        return Loaded(target.version, target.engine, target.model_id, model)

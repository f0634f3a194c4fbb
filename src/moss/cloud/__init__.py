"""The cloud side of ``MossClient``: index management and jobs over a pluggable backend.

:class:`CloudIndexes` implements the cloud methods of API.md §2.1 once, over a
:class:`~moss.cloud.base.Backend`:

* :class:`~moss.cloud.embedded.EmbeddedBackend` — the default: the server's storage engine in
  process, in ``<cache_path>/.moss-cloud/projects/<project>/``, else under ``MOSS_DATA_DIR``, else
  the platform data directory. No network, no key check;
* :class:`~moss.cloud.http.HttpBackend` — when ``server_url=`` or ``MOSS_SERVER_URL`` is set: a
  ``moss serve`` server. httpx is imported only then.

Everything that can be checked on the client is checked here, before the backend is called
(document normalisation, names, option types, custom vectors), so the two backends see the same
encoded requests and fail the same way. The backend is created on first use: constructing a
``MossClient`` does no I/O.
"""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import validation
from ..docs_input import normalize_docs
from ..engine import CUSTOM, Engine, validate_query_options
from ..errors import INTERNAL, InvalidArgumentError, MossError
from ..jobs import JobHandle
from ..snapshot import SnapshotData, pack, unpack
from ..types import (
    Chunking,
    DocsInput,
    DocumentInfo,
    GetDocumentsOptions,
    IndexInfo,
    JobStatus,
    JobStatusResponse,
    MutationOptions,
    MutationResult,
    PushIndexResult,
    QueryOptions,
    SearchResult,
    upsert_flag,
    validate_index_name,
)
from .base import Backend
from .wire import JobRecord, encode_batch

if TYPE_CHECKING:
    from ..client import MossClient

__all__ = [
    "Backend",
    "CloudIndexes",
    "fetch_snapshot",
    "make_backend",
    "push_snapshot",
    "storage_error",
]

SERVER_URL_ENV = "MOSS_SERVER_URL"
DEFAULT_POLL_INTERVAL_S = 2.0
DEFAULT_JOB_TIMEOUT_S = 1800.0


def make_backend(
    project_id: str, project_key: str, *, cache_path: str | None, server_url: str | None
) -> Backend:
    """The backend a client with these settings uses (see the module docstring)."""
    url = server_url or os.environ.get(SERVER_URL_ENV) or None
    if url:
        from .http import HttpBackend

        return HttpBackend(url, project_id, project_key)
    from ..session import safe_path_component
    from .embedded import EmbeddedBackend, default_data_root

    root = Path(os.path.abspath(cache_path)) / ".moss-cloud" if cache_path else default_data_root()
    return EmbeddedBackend(root / "projects" / safe_path_component(project_id), project_id)


def check_get_options(options: GetDocumentsOptions | None) -> None:
    """The checks a session applies to ``get_docs`` options, run before anything is sent."""
    validation.check_get_options(options, compile_filter=True)


class CloudIndexes:
    """The cloud methods of one client (API.md §2.1); the backend is created on first use."""

    def __init__(self, client: MossClient) -> None:
        self._client = client
        self._backend: Backend | None = None
        self._lock = threading.Lock()

    @property
    def backend(self) -> Backend:
        with self._lock:
            if self._backend is None:
                c = self._client
                try:
                    self._backend = make_backend(
                        c._project_id,
                        c._project_key,
                        cache_path=c._cache_path,
                        server_url=c._server_url,
                    )
                except OSError as e:
                    raise storage_error(e) from e
            return self._backend

    def close(self) -> None:
        with self._lock:
            backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except OSError as e:  # the embedded store's disk: typed, like every other failure
            raise storage_error(e) from e

    # -------------------------------------------------------------- jobs

    async def _wait(
        self, job_id: str, poll_interval_seconds: float, timeout_seconds: float
    ) -> JobRecord:
        validation.check_number(poll_interval_seconds, "poll_interval_seconds", minimum=0)
        validation.check_number(timeout_seconds, "timeout_seconds", minimum=0)
        validation.check_job_id(job_id)
        backend = self.backend
        deadline = time.monotonic() + timeout_seconds
        interval = max(float(poll_interval_seconds), 0.01)
        while True:
            left = deadline - time.monotonic()
            wait = max(0.0, min(interval, left))
            started = time.monotonic()
            # The backend returns as soon as the job finishes (an in-process event, or a
            # long-poll on the server), so waiting costs no poll latency.
            rec: JobRecord = await self._call(backend.get_job, job_id, wait)
            status = rec.status.status
            if status == JobStatus.COMPLETED:
                return rec
            if status == JobStatus.FAILED:
                raise RuntimeError(f"Moss job {job_id} failed: {rec.status.error}")
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"Moss job {job_id} did not finish within {int(timeout_seconds)}s"
                )
            rest = wait - (time.monotonic() - started)
            if rest > 0:  # a backend without long-polling answered early
                await asyncio.sleep(rest)

    async def wait_for_job(
        self,
        job_id: str,
        *,
        poll_interval_seconds: float = DEFAULT_POLL_INTERVAL_S,
        timeout_seconds: float = DEFAULT_JOB_TIMEOUT_S,
    ) -> JobStatusResponse:
        rec = await self._wait(job_id, poll_interval_seconds, timeout_seconds)
        return rec.status

    async def get_job_status(self, job_id: str) -> JobStatusResponse:
        validation.check_job_id(job_id)
        rec: JobRecord = await self._call(self.backend.get_job, job_id, 0.0)
        return rec.status

    async def _finish(self, name: str, rec: JobRecord, count: int | None = None) -> MutationResult:
        """Wait for the job; ``doc_count`` is the number of documents in the mutation (API.md
        §2.1: a 5,000-document ``add_docs`` returns 5000 whatever the index held before).
        ``count`` None (files, parsed by the store): the new index's count, which is that."""
        done = await self._wait(rec.job_id, DEFAULT_POLL_INTERVAL_S, DEFAULT_JOB_TIMEOUT_S)
        return MutationResult(
            rec.job_id, name, int(done.doc_count or 0) if count is None else count
        )

    # -------------------------------------------------------------- index management

    async def create_index(
        self,
        name: str,
        docs: DocsInput,
        model_id: str | None = None,
        *,
        wait: bool = True,
        chunker: Callable[[str], list[str]] | None = None,
        chunking: Chunking | None = None,
    ) -> MutationResult | JobHandle:
        validate_index_name(name)
        validation.check_bool(wait, "wait")
        if validation.check_model_id_type(model_id) is not None:
            from ..embedding import check_model_id

            check_model_id(model_id)
        validation.check_chunker(chunker)
        validation.check_chunking(chunking)
        items: list[DocumentInfo] = await asyncio.to_thread(
            normalize_docs,
            docs,
            chunker=chunker,
            chunking=chunking,
            custom_model=model_id == CUSTOM,
        )
        if not items:
            raise InvalidArgumentError("create_index needs at least one document; docs is empty")
        if model_id is None:
            chunked = chunker is not None or chunking is not None
            has_vectors = any(d.embedding is not None for d in items)
            model_id = CUSTOM if has_vectors and not chunked else self._client.DEFAULT_MODEL_ID
        batch = await asyncio.to_thread(_batch, items, model_id, True)
        rec: JobRecord = await self._call(self.backend.create_index, name, model_id, batch)
        if not wait:
            return JobHandle(self._client, rec.job_id)
        return await self._finish(name, rec, len(items))

    async def add_docs(
        self,
        name: str,
        docs: DocsInput,
        options: MutationOptions | None = None,
        *,
        chunker: Callable[[str], list[str]] | None = None,
        chunking: Chunking | None = None,
    ) -> MutationResult:
        validate_index_name(name)
        upsert = upsert_flag(options)
        validation.check_chunker(chunker)
        validation.check_chunking(chunking)
        info: IndexInfo = await self._call(self.backend.get_index, name)
        model_id = info.model.id
        items: list[DocumentInfo] = await asyncio.to_thread(
            normalize_docs,
            docs,
            chunker=chunker,
            chunking=chunking,
            custom_model=model_id == CUSTOM,
        )
        batch = await asyncio.to_thread(_batch, items, model_id, upsert)
        rec: JobRecord = await self._call(self.backend.add_docs, name, batch)
        return await self._finish(name, rec, len(items))

    async def delete_docs(self, name: str, doc_ids: list[str]) -> MutationResult:
        validate_index_name(name)
        ids = validation.check_doc_ids(doc_ids)
        if not ids:
            raise InvalidArgumentError(
                "delete_docs needs at least one document id; doc_ids is empty"
            )
        rec: JobRecord = await self._call(self.backend.delete_docs, name, ids)
        return await self._finish(name, rec, len(ids))

    async def get_docs(
        self, name: str, options: GetDocumentsOptions | None = None
    ) -> list[DocumentInfo]:
        validate_index_name(name)
        check_get_options(options)
        docs: list[DocumentInfo] = await self._call(self.backend.get_docs, name, options)
        return docs

    async def get_index(self, name: str) -> IndexInfo:
        validate_index_name(name)
        info: IndexInfo = await self._call(self.backend.get_index, name)
        return info

    async def list_indexes(self) -> list[IndexInfo]:
        infos: list[IndexInfo] = await self._call(self.backend.list_indexes)
        return infos

    async def delete_index(self, name: str) -> bool:
        validate_index_name(name)
        return bool(await self._call(self.backend.delete_index, name))

    # -------------------------------------------------------------- queries

    async def query(self, name: str, text: str, options: QueryOptions | None) -> SearchResult:
        """Run a query where the index is stored (an index this client has not loaded).

        The options are checked here as a loaded copy would check them (same messages; the
        embedding's length is checked by the store, which knows the dimension), and the filter
        as ``get_docs`` checks it before sending, so both backends fail alike.
        """
        validate_index_name(name)
        if options is not None:
            validation.check_filter(options.filter, compile=True)
            try:
                validate_query_options(options, None)
            except RecursionError:
                raise InvalidArgumentError("filter is nested too deeply") from None
        result: SearchResult = await self._call(self.backend.query, name, text, options)
        return result

    # -------------------------------------------------------------- sessions

    async def fetch_snapshot(self, name: str) -> SnapshotData:
        """The stored index as a snapshot (``NOT_FOUND`` if absent)."""
        validate_index_name(name)
        _, blob = await self._call(self.backend.download, name, None)
        return unpack(blob)

    async def push_snapshot(self, name: str, data: SnapshotData) -> PushIndexResult:
        """Upload a session's snapshot as a create-or-replace job; does not wait."""
        validate_index_name(name)
        blob = await asyncio.to_thread(pack, data)
        rec: JobRecord = await self._call(self.backend.push, name, blob)
        return PushIndexResult(rec.job_id, name, data.doc_count, rec.status.status.value)


def storage_error(e: OSError) -> MossError:
    """A ``MossError`` (code ``INTERNAL``) for a failure of the local store's files: a cache
    path that is not a directory, a name too long, a full disk, no permission."""
    name = errno.errorcode.get(e.errno or 0, type(e).__name__)
    where = f" ({e.filename})" if e.filename else ""
    return MossError(
        f"the local index store failed: {e.strerror or name}{where}",
        code=INTERNAL,
        detail=f"{name}: {e}",
    )


def _batch(items: list[DocumentInfo], model_id: str, upsert: bool) -> bytes:
    """Encode a batch; custom vectors are checked exactly as a session checks them."""
    vectors = None
    if model_id == CUSTOM and items:
        vectors = Engine(CUSTOM)._vectors_for(items)
    return encode_batch(items, model_id, vectors, upsert)


async def fetch_snapshot(client: MossClient, name: str) -> SnapshotData:
    """The cloud index ``name`` of ``client``'s project as a snapshot (``NOT_FOUND`` if absent)."""
    return await client._cloud.fetch_snapshot(name)


async def push_snapshot(client: MossClient, name: str, data: SnapshotData) -> PushIndexResult:
    """Create or replace the cloud index ``name`` with ``data`` (a job; does not wait)."""
    return await client._cloud.push_snapshot(name, data)

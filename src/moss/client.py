"""``MossClient``: the entry point. Opens sessions, manages cloud indexes, queries loaded ones.

A thin facade: cloud index management and jobs live in :mod:`moss.cloud` (one backend interface,
an embedded store or a ``moss serve`` server), loaded indexes in :mod:`moss.runtime`, sessions in
:mod:`moss.session`. ``query`` picks the place: a loaded copy answers in process, any other index
is queried by the backend where it is stored. The constructor does no I/O. Nothing touches the
network unless a server URL is given (``server_url=`` or ``MOSS_SERVER_URL``); without one the
"cloud" is an embedded on-disk store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar, Union

from .cloud import CloudIndexes, storage_error
from .cloud import ingest as cloud_ingest
from .engine import CUSTOM, Engine
from .errors import NOT_FOUND, InvalidArgumentError, MossError
from .jobs import JobHandle
from .runtime import Runtime, merge_results
from .session import SessionIndex
from .snapshot import SnapshotData
from .sources import (
    CreateWebSourceOptions,
    CreateWebSourceResult,
    DeleteWebSourceResult,
    ParseFileInput,
    ParseOptions,
    ResyncWebSourceResult,
    UpdateWebSourceOptions,
    UpdateWebSourceResult,
    WebSource,
)
from .types import (
    Chunking,
    DocsInput,
    DocumentInfo,
    GetDocumentsOptions,
    IndexInfo,
    JobStatusResponse,
    LoadIndexesResult,
    MutationOptions,
    MutationResult,
    PushIndexResult,
    QueryOptions,
    SearchResult,
    validate_index_name,
)
from .validation import (
    check_bool,
    check_cache_path,
    check_model_id_type,
    check_name_list,
    check_number,
    check_project_id,
    check_project_key,
    check_query_options,
    check_query_text,
    check_server_url,
    check_string,
    query_guard,
)

__all__ = ["MossClient"]

_CLOSED = "MossClient is closed"


class MossClient:
    """Client of one project: sessions, cloud indexes and loaded indexes.

    Args:
        project_id: namespaces every index and on-disk artifact.
        project_key: shown only to a remote server.
        cache_path: default cache for ``load_index(es)`` and root of session snapshots.
        server_url: a ``moss serve`` server (else ``MOSS_SERVER_URL``, else the embedded store).
    """

    DEFAULT_MODEL_ID: ClassVar[str] = "moss-minilm"

    def __init__(
        self,
        project_id: str,
        project_key: str,
        *,
        cache_path: str | None = None,
        server_url: str | None = None,
    ) -> None:
        self._project_id = check_project_id(project_id)
        self._project_key = check_project_key(project_key)
        self._cache_path = check_cache_path(cache_path)
        self._server_url = check_server_url(server_url)
        self._sessions: set[SessionIndex] = set()
        self._closed = False
        self._cloud = CloudIndexes(self)
        self._runtime = Runtime(self)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(_CLOSED)

    # -------------------------------------------------------------- sessions

    async def session(
        self,
        index_name: str,
        model_id: str | None = None,
        *,
        artifact_version: str | None = None,
        manifest_sha256: str | None = None,
        auto_load_on_init: bool = True,
    ) -> SessionIndex:
        """Open a session: resume the cloud index ``index_name`` if it exists, else start empty.

        Raises:
            InvalidArgumentError: bad name or model id, only one of the two pins given, or a
                ``model_id`` that differs from the stored index's model.
            MossError: ``MODEL_UNAVAILABLE`` if the model files are missing or do not match the
                pinned artifact; ``NETWORK`` if a remote server cannot be reached.
        """
        self._check_open()
        validate_index_name(index_name)
        check_bool(auto_load_on_init, "auto_load_on_init")
        if artifact_version is not None:
            check_string(artifact_version, "artifact_version")
        if manifest_sha256 is not None:
            check_string(manifest_sha256, "manifest_sha256")
        if (artifact_version is None) != (manifest_sha256 is None):
            raise InvalidArgumentError(
                "artifact_version and manifest_sha256 pin a model artifact together: "
                "pass both or neither"
            )
        if check_model_id_type(model_id) is not None:
            from .embedding import check_model_id

            check_model_id(model_id)
        data = await self._fetch_cloud_snapshot(index_name) if auto_load_on_init else None
        if data is not None and model_id is not None and model_id != data.model_id:
            raise InvalidArgumentError(
                f"session {index_name!r} exists with model {data.model_id!r}, but model_id "
                f"{model_id!r} was requested: omit model_id or pass {data.model_id!r}"
            )
        chosen = data.model_id if data is not None else (model_id or self.DEFAULT_MODEL_ID)

        def open_engine() -> Engine:
            embedder = None
            if chosen != CUSTOM:
                from .embedding import get_embedder

                embedder = get_embedder(
                    chosen, artifact_version=artifact_version, manifest_sha256=manifest_sha256
                )
                embedder.warm()
            if data is not None:
                return Engine.from_snapshot(data, embedder=embedder, name=index_name)
            return Engine(chosen, embedder=embedder, name=index_name)

        engine = await asyncio.to_thread(open_engine)
        session = SessionIndex(self, index_name, engine)
        self._sessions.add(session)
        return session

    async def _fetch_cloud_snapshot(self, name: str) -> SnapshotData | None:
        """The stored index ``name`` as a snapshot, or None if the cloud has no such index."""
        try:
            return await self._cloud.fetch_snapshot(name)
        except MossError as e:
            if e.code == NOT_FOUND:
                return None
            raise

    async def _push_snapshot(self, name: str, data: SnapshotData) -> PushIndexResult:
        self._check_open()
        return await self._cloud.push_snapshot(name, data)

    # -------------------------------------------------------------- cloud indexes

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
        """Build a new cloud index from ``docs`` (a job).

        ``model_id=None`` means ``"custom"`` if any document has an embedding, else
        ``"moss-minilm"``; built-in models embed on the store side.

        Returns:
            the :class:`MutationResult` once the job completed, or a :class:`JobHandle` with
            ``wait=False``.

        Raises:
            AlreadyExistsError: the name is taken.
            InvalidArgumentError: empty ``docs``, a bad name, model or document.
            RuntimeError: the job failed (``wait=True``).
        """
        self._check_open()
        return await self._cloud.create_index(
            name, docs, model_id, wait=wait, chunker=chunker, chunking=chunking
        )

    async def add_docs(
        self,
        name: str,
        docs: DocsInput,
        options: MutationOptions | None = None,
        *,
        chunker: Callable[[str], list[str]] | None = None,
        chunking: Chunking | None = None,
    ) -> MutationResult:
        """Insert or update documents of a cloud index (a job; returns once it finished).

        Raises:
            MossError: code ``NOT_FOUND`` for an unknown index.
            RuntimeError: the job failed.
        """
        self._check_open()
        return await self._cloud.add_docs(name, docs, options, chunker=chunker, chunking=chunking)

    async def delete_docs(self, name: str, doc_ids: list[str]) -> MutationResult:
        """Remove documents by id (unknown ids ignored; an empty list is invalid); waits."""
        self._check_open()
        return await self._cloud.delete_docs(name, doc_ids)

    async def get_docs(
        self, name: str, options: GetDocumentsOptions | None = None
    ) -> list[DocumentInfo]:
        """Stored documents of a cloud index (``embedding`` is None), filtered/sorted/grouped."""
        self._check_open()
        return await self._cloud.get_docs(name, options)

    async def get_index(self, name: str) -> IndexInfo:
        """One cloud index. Unknown name: ``MossError`` code ``NOT_FOUND``."""
        self._check_open()
        return await self._cloud.get_index(name)

    async def list_indexes(self) -> list[IndexInfo]:
        """All cloud indexes of the project, sorted by name."""
        self._check_open()
        return await self._cloud.list_indexes()

    async def delete_index(self, name: str) -> bool:
        """Delete a cloud index (loaded copies stay queryable until unloaded)."""
        self._check_open()
        return await self._cloud.delete_index(name)

    async def get_job_status(self, job_id: str) -> JobStatusResponse:
        """A job's state. Unknown job: ``NOT_FOUND``."""
        self._check_open()
        return await self._cloud.get_job_status(job_id)

    async def wait_for_job(
        self,
        job_id: str,
        *,
        poll_interval_seconds: float = 2.0,
        timeout_seconds: float = 1800.0,
    ) -> JobStatusResponse:
        """Wait until the job completes (returns as soon as it does).

        Raises:
            RuntimeError: ``Moss job {job_id} failed: {error}``.
            TimeoutError: ``Moss job {job_id} did not finish within {timeout}s``.
        """
        self._check_open()
        return await self._cloud.wait_for_job(
            job_id, poll_interval_seconds=poll_interval_seconds, timeout_seconds=timeout_seconds
        )

    # -------------------------------------------------------------- files and web sources

    async def create_index_from_files(
        self,
        name: str,
        files: Sequence[ParseFileInput],
        model_id: str | None = None,
        parse_options: ParseOptions | None = None,
    ) -> MutationResult:
        """Build a new cloud index from files parsed where the index is built (a job; waits).

        Each file is a :class:`~moss.ParseFileInput` (name, content type, ``data`` bytes or a
        ``path``); its chunks get ids ``{name}#{n}``. Content types: ``application/pdf`` and the
        DOCX type, plus ``text/markdown``, ``text/plain`` and ``text/html`` (ours). PDF text
        comes from the text layer (no OCR); page headers, footers and page numbers are dropped.

        Args:
            name: the new index (a taken name is an ``AlreadyExistsError``).
            files: 1 to 20 files, names unique, at most 50 MB each.
            model_id: ``"moss-minilm"`` (default) or another built-in model; not ``"custom"``.
            parse_options: :class:`~moss.ParseOptions` (``ocr_mode="full_ocr"`` is refused:
                there is no OCR engine here).

        Returns:
            the :class:`MutationResult` once the index is ready (30-minute ceiling).

        Raises:
            InvalidArgumentError: ``Validation error: ...`` for a bad file list, content type,
                size or option, before anything is uploaded.
            AlreadyExistsError: the name is taken.
            RuntimeError: the job failed, e.g. ``No readable text was found in 'scan.pdf'``.
        """
        self._check_open()
        check_model_id_type(model_id)
        return await cloud_ingest.create_index_from_files(
            self._cloud, name, files, model_id, parse_options
        )

    async def create_web_source(
        self,
        root_url: str,
        index_name: str,
        options: Union[CreateWebSourceOptions, Mapping[str, Any], None] = None,
    ) -> CreateWebSourceResult:
        """Crawl a website into an index, now and (optionally) on a cadence.

        The first source of a new index creates the index. Up to 20 sources per index, each
        root URL once per index. The crawl is a job (``result.job_id``; phases ``crawling``,
        ``parsing_documents``, ``building_index``); it stays on the root's site, honours
        robots.txt and the limits in ``options``. See docs/web-sources.md.

        Raises:
            InvalidArgumentError: a bad URL, index name or option; on ``moss serve``, a root
                URL on a private network unless the server allows it.
            AlreadyExistsError: the index already has a source with this root URL.
        """
        self._check_open()
        return await cloud_ingest.create_web_source(self._cloud, root_url, index_name, options)

    async def list_web_sources(self, index_name: str | None = None) -> list[WebSource]:
        """The project's web sources (of one index if given), newest first."""
        self._check_open()
        return await cloud_ingest.list_web_sources(self._cloud, index_name)

    async def get_web_source(self, source_id: str) -> WebSource:
        """One web source. Unknown id: ``MossError`` code ``NOT_FOUND``."""
        self._check_open()
        check_string(source_id, "source_id")
        return await cloud_ingest.get_web_source(self._cloud, source_id)

    async def update_web_source(
        self,
        source_id: str,
        options: Union[UpdateWebSourceOptions, Mapping[str, Any]],
    ) -> UpdateWebSourceResult:
        """Change a web source's settings; ``resync=True`` also starts a crawl (``job_id``).

        Raises:
            MossError: code ``CONFLICT`` when crawl settings change while it is crawling;
                ``NOT_FOUND`` for an unknown source.
        """
        self._check_open()
        check_string(source_id, "source_id")
        return await cloud_ingest.update_web_source(self._cloud, source_id, options)

    async def resync_web_source(self, source_id: str) -> ResyncWebSourceResult:
        """Crawl a source again: only pages whose content changed are re-embedded.

        Returns the crawl already queued or running, if there is one."""
        self._check_open()
        check_string(source_id, "source_id")
        return await cloud_ingest.resync_web_source(self._cloud, source_id)

    async def delete_web_source(self, source_id: str) -> DeleteWebSourceResult:
        """Delete a source; ``purge_job_id`` removes its pages from the index, which is kept
        (documents added otherwise, and other sources' pages, are untouched)."""
        self._check_open()
        check_string(source_id, "source_id")
        return await cloud_ingest.delete_web_source(self._cloud, source_id)

    # -------------------------------------------------------------- loaded indexes

    async def load_index(
        self,
        name: str,
        auto_refresh: bool = False,
        polling_interval_in_seconds: float = 600,
        cache_path: str | None = None,
    ) -> str:
        """Copy a cloud index into memory (or re-check a loaded one) and warm its model.

        Raises:
            MossError: propagated unchanged (``NOT_FOUND``, ``NETWORK`` with no cached snapshot).
            RuntimeError: ``Failed to load index '{name}': ...`` for any other failure.
        """
        self._check_open()
        validate_index_name(name)
        cache = _load_arguments(auto_refresh, polling_interval_in_seconds, cache_path)
        try:
            return await self._runtime.load_index(
                name, auto_refresh, polling_interval_in_seconds, cache
            )
        except RuntimeError as e:
            if type(e) is RuntimeError and isinstance(e.__cause__, OSError):
                raise storage_error(e.__cause__) from e.__cause__
            raise

    async def load_indexes(
        self,
        names: list[str],
        auto_refresh: bool = False,
        polling_interval_in_seconds: float = 600,
        cache_path: str | None = None,
    ) -> LoadIndexesResult:
        """Load several indexes, at most 8 at a time; successes are kept when others fail."""
        self._check_open()
        listed = check_name_list(names)
        cache = _load_arguments(auto_refresh, polling_interval_in_seconds, cache_path)
        return await self._runtime.load_indexes(
            listed, auto_refresh, polling_interval_in_seconds, cache
        )

    async def unload_index(self, name: str) -> None:
        """Drop the in-memory copy and its poller (ignored if not loaded)."""
        self._check_open()
        self._runtime.unload(name)

    async def unload_indexes(self, names: list[str]) -> None:
        """:meth:`unload_index` for each name."""
        self._check_open()
        listed = check_name_list(names)
        for name in listed:
            validate_index_name(name)
        for name in listed:
            self._runtime.unload(name)

    async def was_served_stale(self, name: str) -> bool:
        """True while ``name`` is served from a cached snapshot because the backend was
        unreachable. Not loaded: ``RuntimeError``."""
        self._check_open()
        return self._runtime.was_served_stale(name)

    async def query(
        self, name: str, query: str, options: QueryOptions | None = None
    ) -> SearchResult:
        """Search an index (top_k 5, alpha 0.8). A loaded copy answers in process; an index
        not loaded is queried where it is stored (the server, or the embedded store), with the
        same results. Unknown index: ``NOT_FOUND``."""
        self._check_open()
        validate_index_name(name)
        check_query_text(query)
        check_query_options(options)
        if not self._runtime.is_loaded(name):
            return await self._cloud.query(name, query, options)
        return query_guard(lambda: self._runtime.query(name, query, options))

    async def query_multi_index(
        self,
        names: Sequence[str | SessionIndex],
        query: str,
        options: QueryOptions | None = None,
    ) -> SearchResult:
        """One ranking over loaded indexes and this client's sessions (top_k 10, alpha 0.8).

        Named indexes that are not loaded are queried where they are stored, one request each
        with the same options, and their hits merged with the in-process ones by score
        (docs/api.md, "query on an unloaded index"): the ranking equals the loaded one for
        ``alpha=1``; for hybrid queries each index's hits are fused within that index."""
        self._check_open()
        remote: list[str] = []
        if isinstance(names, (list, tuple)):
            for item in names:
                if not isinstance(item, SessionIndex):
                    validate_index_name(item)
                    if not self._runtime.is_loaded(item) and item not in remote:
                        remote.append(item)
        check_query_text(query)
        check_query_options(options)
        if not remote:
            return query_guard(lambda: self._runtime.query_multi(names, query, options))
        return await self._query_multi_remote(names, remote, query, options)

    async def _query_multi_remote(
        self,
        names: Sequence[str | SessionIndex],
        remote: list[str],
        query: str,
        options: QueryOptions | None,
    ) -> SearchResult:
        """``query_multi_index`` with some indexes not loaded (see its docstring)."""
        start = time.perf_counter()
        local = [n for n in names if isinstance(n, SessionIndex) or n not in remote]
        top_k = options.top_k if options is not None and options.top_k is not None else 10
        each = dataclasses.replace(options or QueryOptions(), top_k=top_k)
        # The stored indexes first, so an unknown name is NOT_FOUND whatever else is wrong.
        parts: list[SearchResult] = list(
            await asyncio.gather(*(self._cloud.query(name, query, each) for name in remote))
        )
        if local:
            parts.insert(0, query_guard(lambda: self._runtime.query_multi(local, query, each)))
        return merge_results(parts, query, int(top_k), start)

    def _forget_session(self, session: SessionIndex) -> None:
        self._sessions.discard(session)

    # -------------------------------------------------------------- lifecycle

    async def close(self) -> None:
        """Release sessions and loaded indexes and stop pollers. Idempotent."""
        if self._closed:
            return
        self._runtime.close()
        for s in list(self._sessions):
            await s.close()
        self._closed = True
        await asyncio.to_thread(self._cloud.close)

    async def __aenter__(self) -> MossClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __enter__(self) -> MossClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._runtime.close()
        for s in list(self._sessions):
            s._closed = True
        self._sessions.clear()
        self._closed = True
        self._cloud.close()


def _load_arguments(auto_refresh: object, interval: object, cache_path: object) -> str | None:
    """Check the shared arguments of ``load_index(es)``; returns the cache path as a ``str``."""
    check_bool(auto_refresh, "auto_refresh")
    check_number(interval, "polling_interval_in_seconds", minimum=0, exclusive=True)
    return check_cache_path(cache_path)

"""The embedded backend: the server's storage engine, in process, in a per-project directory.

It is what ``MossClient`` uses when no server URL is configured, so every cloud method works with
no network at all. The directory is a complete :class:`~moss.server.store.Store` (catalog, version
blobs, job runner) holding this one project; the project key is not checked (API.md §4.1).
Several clients and processes may share a directory: the store serialises them. A query on an
index the client has not loaded runs here too, through the store's shared
:class:`~moss.server.queries.QueryService` (one cache of loaded versions per directory).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from ..errors import NOT_FOUND, MossError
from ..server.catalog import JobRow
from ..server.queries import shared_service
from ..server.registry import acquire_store, release_store
from ..server.store import CATALOG_FILE, Store, job_status
from ..sources import (
    CreateWebSourceResult,
    DeleteWebSourceResult,
    ResyncWebSourceResult,
    UpdateWebSourceResult,
    WebSource,
    check_source_id,
)
from ..types import (
    DocumentInfo,
    GetDocumentsOptions,
    IndexInfo,
    QueryOptions,
    SearchResult,
    validate_index_name,
)
from .wire import FilesUpload, JobRecord

__all__ = ["EmbeddedBackend", "default_data_root"]


def default_data_root() -> Path:
    """``MOSS_DATA_DIR``, else the platform data directory (``~/.local/share/moss`` on Linux,
    ``~/Library/Application Support/moss`` on macOS, ``%LOCALAPPDATA%\\moss\\data`` on Windows)."""
    env = os.environ.get("MOSS_DATA_DIR")
    if env:
        return Path(env)
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "moss" / "data"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "moss"
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "moss"


def _record(job: JobRow) -> JobRecord:
    return JobRecord(job_status(job), job.index_name, job.doc_count)


class EmbeddedBackend:
    """:class:`~moss.cloud.base.Backend` on a local :class:`~moss.server.store.Store`.

    The store is opened on first need: reads of a directory that holds no store yet answer
    "not found" without creating anything (the common case of opening a new session).
    """

    def __init__(self, directory: str | os.PathLike[str], project_id: str) -> None:
        self.directory = Path(directory)
        self._project = project_id
        self._store: Store | None = None
        self._closed = False
        self._lock = threading.Lock()

    def _open(self, create: bool = True) -> Store | None:
        with self._lock:
            if self._closed:
                raise RuntimeError("MossClient is closed")
            if self._store is None:
                if not create and not (self.directory / CATALOG_FILE).exists():
                    return None
                store = acquire_store(self.directory)
                store.ensure_project(self._project)
                self._store = store
            return self._store

    @property
    def store(self) -> Store:
        """The store, opened (and created) if needed."""
        store = self._open()
        assert store is not None
        return store

    def _reader(self, name: str) -> Store:
        store = self._open(create=False)
        if store is None:
            validate_index_name(name)
            raise MossError(f"index {name!r} not found", code=NOT_FOUND)
        return store

    def create_index(self, name: str, model_id: str, batch: bytes) -> JobRecord:
        params = {"model_id": model_id}
        return _record(self.store.submit(self._project, name, "create", batch, params))

    def add_docs(self, name: str, batch: bytes) -> JobRecord:
        return _record(self._reader(name).submit(self._project, name, "add", batch))

    def delete_docs(self, name: str, ids: list[str]) -> JobRecord:
        data = json.dumps({"ids": ids}).encode("utf-8")
        return _record(self._reader(name).submit(self._project, name, "delete", data))

    def push(self, name: str, snapshot: bytes) -> JobRecord:
        return _record(self.store.submit(self._project, name, "push", snapshot))

    def get_index(self, name: str) -> IndexInfo:
        return self._reader(name).get_index(self._project, name)

    def list_indexes(self) -> list[IndexInfo]:
        store = self._open(create=False)
        return store.list_indexes(self._project) if store is not None else []

    def delete_index(self, name: str) -> bool:
        return self._reader(name).delete_index(self._project, name)

    def get_docs(self, name: str, options: GetDocumentsOptions | None) -> list[DocumentInfo]:
        return self._reader(name).get_docs(self._project, name, options)

    def query(self, name: str, text: str, options: QueryOptions | None) -> SearchResult:
        return shared_service(self._reader(name)).query(self._project, name, text, options)

    def download(self, name: str, if_version: str | None = None) -> tuple[str, Any]:
        return self._reader(name).read_version(self._project, name, if_version)

    def get_job(self, job_id: str, wait: float = 0.0) -> JobRecord:
        store = self._open(create=False)
        if store is None:
            raise MossError(f"job {job_id!r} not found", code=NOT_FOUND)
        if wait > 0:
            return _record(store.wait_job(self._project, job_id, wait))
        return _record(store.get_job(self._project, job_id))

    def create_index_from_files(
        self, name: str, model_id: str, parse_options: dict[str, Any], upload: FilesUpload
    ) -> JobRecord:
        store = self.store
        params = {"model_id": model_id, "parse_options": parse_options}
        job = store.begin(self._project, name, "files", params)
        try:
            with store.input_writer(job) as f:
                for chunk in upload.chunks():
                    f.write(chunk)
        except BaseException as e:
            store.abort(job, e)
            raise
        return _record(store.finish(job))

    def _source_reader(self, source_id: str) -> Store:
        store = self._open(create=False)
        if store is None:
            check_source_id(source_id)
            raise MossError(f"web source {source_id!r} not found", code=NOT_FOUND)
        return store

    def create_web_source(
        self, root_url: str, index_name: str, options: dict[str, Any]
    ) -> CreateWebSourceResult:
        return self.store.web.create(self._project, index_name, root_url, options)

    def list_web_sources(self, index_name: str | None) -> list[WebSource]:
        store = self._open(create=False)
        return store.web.list(self._project, index_name) if store is not None else []

    def get_web_source(self, source_id: str) -> WebSource:
        return self._source_reader(source_id).web.get(self._project, source_id)

    def update_web_source(self, source_id: str, options: dict[str, Any]) -> UpdateWebSourceResult:
        return self._source_reader(source_id).web.update(self._project, source_id, options)

    def resync_web_source(self, source_id: str) -> ResyncWebSourceResult:
        return self._source_reader(source_id).web.resync(self._project, source_id)

    def delete_web_source(self, source_id: str) -> DeleteWebSourceResult:
        return self._source_reader(source_id).web.delete(self._project, source_id)

    def close(self) -> None:
        with self._lock:
            store, self._store = self._store, None
            self._closed = True
        if store is not None:
            release_store(store)

"""The one interface every cloud backend implements (embedded store or HTTP server).

The methods are synchronous: the embedded store is SQLite and files, the HTTP client is a
thread-safe ``httpx.Client``; :class:`~moss.client.MossClient` runs them in worker threads, which
also keeps one backend usable from several event loops. Inputs arrive already validated and encoded
by :mod:`moss.cloud` (document batches and snapshots as bytes in the snapshot container format),
so both implementations receive byte-identical requests and the store applies the same checks.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..sources import (
    CreateWebSourceResult,
    DeleteWebSourceResult,
    ResyncWebSourceResult,
    UpdateWebSourceResult,
    WebSource,
)
from ..types import DocumentInfo, GetDocumentsOptions, IndexInfo, QueryOptions, SearchResult
from .wire import FilesUpload, JobRecord

__all__ = ["Backend"]


class Backend(Protocol):
    """Cloud operations of one project. Errors are ``MossError`` with the contract's codes."""

    def create_index(self, name: str, model_id: str, batch: bytes) -> JobRecord:
        """Start a job building a new index from a document batch (``ALREADY_EXISTS`` if taken)."""
        ...

    def add_docs(self, name: str, batch: bytes) -> JobRecord:
        """Start a job upserting a document batch (the batch records ``upsert``)."""
        ...

    def delete_docs(self, name: str, ids: list[str]) -> JobRecord:
        """Start a job deleting documents by id."""
        ...

    def push(self, name: str, snapshot: bytes) -> JobRecord:
        """Start a job creating or replacing the index with a packed snapshot."""
        ...

    def get_index(self, name: str) -> IndexInfo:
        """One index (``NOT_FOUND`` if absent)."""
        ...

    def list_indexes(self) -> list[IndexInfo]:
        """Every index of the project, sorted by name."""
        ...

    def delete_index(self, name: str) -> bool:
        """Delete an index (``NOT_FOUND`` if absent)."""
        ...

    def get_docs(self, name: str, options: GetDocumentsOptions | None) -> list[DocumentInfo]:
        """Stored documents, without embeddings."""
        ...

    def query(self, name: str, text: str, options: QueryOptions | None) -> SearchResult:
        """Run a query on the index's current version where it is stored (``NOT_FOUND`` if
        absent); the result equals a query on a loaded copy of that version."""
        ...

    def download(self, name: str, if_version: str | None = None) -> tuple[str, Any]:
        """``(version, blob)`` of the current version; ``blob`` is None (nothing transferred)
        when ``if_version`` is still current. ``NOT_FOUND`` if the index has no version."""
        ...

    def get_job(self, job_id: str, wait: float = 0.0) -> JobRecord:
        """A job's state; with ``wait`` > 0, returns early once it is finished."""
        ...

    def create_index_from_files(
        self, name: str, model_id: str, parse_options: dict[str, Any], upload: FilesUpload
    ) -> JobRecord:
        """Start a job building a new index from uploaded files, parsed by the store."""
        ...

    def create_web_source(
        self, root_url: str, index_name: str, options: dict[str, Any]
    ) -> CreateWebSourceResult:
        """Create a web source (and its index if new) and queue its first crawl."""
        ...

    def list_web_sources(self, index_name: str | None) -> list[WebSource]:
        """The project's web sources (of one index if given), newest first."""
        ...

    def get_web_source(self, source_id: str) -> WebSource:
        """One web source (``NOT_FOUND`` if unknown)."""
        ...

    def update_web_source(self, source_id: str, options: dict[str, Any]) -> UpdateWebSourceResult:
        """Change a web source's settings (``CONFLICT`` while crawling), optionally resync."""
        ...

    def resync_web_source(self, source_id: str) -> ResyncWebSourceResult:
        """Queue a crawl of a web source."""
        ...

    def delete_web_source(self, source_id: str) -> DeleteWebSourceResult:
        """Delete a web source and queue the removal of its pages."""
        ...

    def close(self) -> None:
        """Release connections or the store reference."""
        ...

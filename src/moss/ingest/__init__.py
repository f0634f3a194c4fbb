"""Ingestion: files, folders, stdin and uploaded bytes into chunked ``DocumentInfo`` documents.

Layers, each usable on its own (dependencies point down only):

* :mod:`moss.ingest.parsers` — bytes to text (Markdown/MDX, text, HTML, PDF, DOCX); no I/O.
* :mod:`moss.ingest.files` — which files to read: folders, globs, hidden files, stdin.
* :mod:`moss.ingest.documents` — files or bytes to chunks with stable ids ``{rel}#{n}``.
* :mod:`moss.ingest.sync` — keep an index equal to a folder (add, replace, delete; one push).

``import moss`` does not import this package. The names below load from their submodules on
first use (PEP 562), so ``moss.docs_input`` can use :mod:`.parsers` (standard library only)
without loading the rest, which itself builds on ``moss.docs_input``. See docs/ingestion.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .documents import IngestBatch, collect_documents, documents_from_bytes
    from .files import SourceFile, discover
    from .parsers import KINDS, ParsedDocument, html_links, kind_for, parse_bytes
    from .sync import SyncReport, sync_directory

__all__ = [
    "KINDS",
    "IngestBatch",
    "ParsedDocument",
    "SourceFile",
    "SyncReport",
    "collect_documents",
    "discover",
    "documents_from_bytes",
    "html_links",
    "kind_for",
    "parse_bytes",
    "sync_directory",
]

_HOME = {
    "KINDS": "parsers",
    "ParsedDocument": "parsers",
    "html_links": "parsers",
    "kind_for": "parsers",
    "parse_bytes": "parsers",
    "SourceFile": "files",
    "discover": "files",
    "IngestBatch": "documents",
    "collect_documents": "documents",
    "documents_from_bytes": "documents",
    "SyncReport": "sync",
    "sync_directory": "sync",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

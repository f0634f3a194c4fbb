"""Ingestion: files, folders, stdin and uploaded bytes into chunked ``DocumentInfo`` documents.

Layers, each usable on its own (dependencies point down only):

* :mod:`moss.ingest.parsers` — bytes to text (Markdown/MDX, text, HTML, PDF, DOCX); no I/O.
* :mod:`moss.ingest.files` — which files to read: folders, globs, hidden files, stdin.
* :mod:`moss.ingest.documents` — files or bytes to chunks with stable ids ``{rel}#{n}``.
* :mod:`moss.ingest.sync` — keep an index equal to a folder (add, replace, delete; one push).

``import moss`` does not import this package; the CLI and the file/web ingestion paths import it
when they need it. See docs/ingestion.md.
"""

from __future__ import annotations

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

"""Files and bytes to ``DocumentInfo`` chunks with stable ids and provenance metadata.

A parsed file becomes chunks ``{rel}#{n}`` (``n`` from 0, :func:`moss.chunking.chunk_text`, so
every chunk is at most ``chunk_size`` characters) with metadata

* the front-matter / parser metadata (``description``, ``tags``, ...), then ``extra_metadata``,
* ``title`` (when the document has one; ``extra_metadata`` may override it),
* ``parentId`` = ``source`` = ``rel`` and ``sha256`` = the hex SHA-256 of the file's bytes; these
  three always win, because :mod:`moss.ingest.sync` and ``group_by`` rely on them.

JSON (``.json``: an array) and JSON Lines (``.jsonl``, ``.ndjson``) files hold documents with
their own ids (the rules of :mod:`moss.docs_input`); they are chunked only when ``chunking`` is
given, and get ``source`` = ``rel`` and ``sha256`` only where their metadata lacks those keys.
Stdin is JSON / JSON Lines when its first non-blank character is ``[`` or ``{``, else Markdown.

The same bytes with the same options always give the same documents (no clocks, no paths other
than ``rel``), which is what makes re-indexing idempotent and lets sync compare a folder with an
index.

:func:`collect_documents` reads many files. Reading problems of files named explicitly are errors;
files found inside a directory that cannot be used (binary content, not UTF-8, a corrupt PDF, over
the size cap, a PDF without the ``parsers`` extra) are passed over and reported in
``IngestBatch.skipped`` with the reason, so one bad file does not stop a folder. Duplicate ids
across the whole input are an :class:`~moss.errors.InvalidArgumentError` naming the id and both
sources, or, with ``on_duplicate="last"``, resolved by keeping the last occurrence and listed in
``IngestBatch.duplicates``.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal, Optional

from ..chunking import chunk_text
from ..docs_input import _chunk_all, _from_mapping, _parse_json_array, _parse_json_lines
from ..errors import InvalidArgumentError, MossError
from ..types import Chunking, DocumentInfo
from .files import JSON_SUFFIXES, SourceFile, discover_all
from .parsers import MAX_BYTES, kind_for, parse_bytes

__all__ = [
    "IngestBatch",
    "OnDuplicate",
    "collect_documents",
    "documents_from_bytes",
    "looks_binary",
    "merge_documents",
    "read_source",
    "sha256_hex",
    "source_documents",
]

OnDuplicate = Literal["error", "last"]
_RESERVED = ("parentId", "source", "sha256")
_BINARY_SNIFF = 8192


@dataclass(frozen=True)
class IngestBatch:
    """What :func:`collect_documents` produced.

    Attributes:
        documents: the documents (chunks), in file order then chunk order.
        files: the files read (including those that yielded no document).
        skipped: ``(rel, reason)`` of directory entries passed over.
        duplicates: ids that occurred more than once (only with ``on_duplicate="last"``).
    """

    documents: list[DocumentInfo]
    files: list[SourceFile]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


def sha256_hex(data: bytes) -> str:
    """The hex SHA-256 of ``data`` (the ``sha256`` metadata of every chunk of a file)."""
    return hashlib.sha256(data).hexdigest()


def documents_from_bytes(
    data: bytes,
    rel: str,
    *,
    content_type: Optional[str] = None,
    chunking: Optional[Chunking] = None,
    extra_metadata: Optional[Mapping[str, str]] = None,
    digest: Optional[str] = None,
) -> list[DocumentInfo]:
    """Parse and chunk one file's bytes into documents (see the module docstring).

    Args:
        data: the file's content.
        rel: its identity: chunk ids are ``{rel}#{n}``; the suffix picks the parser.
        content_type: a MIME type that wins over the suffix (see :func:`.parsers.kind_for`).
        chunking: chunking settings (default ``Chunking()``); for JSON files, chunk only if given.
        extra_metadata: ``str -> str`` metadata added to every chunk.
        digest: the precomputed ``sha256_hex(data)`` (saves hashing twice).

    Raises:
        InvalidArgumentError: unsupported, undecodable or corrupt input, or bad metadata.
        MossError: a PDF or DOCX without the ``parsers`` extra.

    >>> [(d.id, d.text) for d in documents_from_bytes(b"# Hi\\nThere.", "a.md")]
    [('a.md#0', 'Hi\\nThere.')]
    """
    if not isinstance(rel, str) or not rel:
        raise InvalidArgumentError(f"rel must be a non-empty str, got {rel!r}")
    if chunking is not None and not isinstance(chunking, Chunking):
        raise InvalidArgumentError(
            f"chunking must be a moss.Chunking, not {type(chunking).__name__}"
        )
    extra = _checked_extra(extra_metadata)
    data = bytes(data)
    digest = digest or sha256_hex(data)
    if _is_json(rel, content_type):
        return _json_documents(data, rel, chunking, extra, digest)
    parsed = parse_bytes(data, rel, content_type)
    chunks = chunk_text(
        parsed.text, chunking if chunking is not None else Chunking(), markdown=parsed.markdown
    )
    base: dict[str, str] = dict(parsed.metadata)
    if parsed.title:
        base["title"] = parsed.title
    base.update(extra)
    base.update(parentId=rel, source=rel, sha256=digest)
    return [
        DocumentInfo(id=f"{rel}#{n}", text=chunk, metadata=dict(base))
        for n, chunk in enumerate(chunks)
    ]


def _checked_extra(extra: Optional[Mapping[str, str]]) -> dict[str, str]:
    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise InvalidArgumentError(
            f"extra_metadata must be a dict of strings, not {type(extra).__name__}"
        )
    out: dict[str, str] = {}
    for k, v in extra.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidArgumentError(f"extra_metadata must map str to str, got {k!r}: {v!r}")
        out[k] = v
    return out


def _is_json(rel: str, content_type: Optional[str]) -> bool:
    if content_type:
        ct = content_type.split(";", 1)[0].strip().lower()
        if ct in ("application/json", "application/x-ndjson", "application/jsonl"):
            return True
        if kind_for(rel, content_type) is not None:
            return False
    return rel.lower().endswith(JSON_SUFFIXES)


def _json_documents(
    data: bytes, rel: str, chunking: Optional[Chunking], extra: dict[str, str], digest: str
) -> list[DocumentInfo]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InvalidArgumentError(f"{rel} is not valid UTF-8 (byte {e.start})") from None
    stripped = text.lstrip(" \t\r\n")
    raw: list[Mapping[Any, Any]]
    if rel.lower().endswith(".json") or stripped.startswith("["):
        raw = _parse_json_array(text, rel) if stripped else []
    else:
        raw = _parse_json_lines(text, rel)
    documents = [_from_mapping(d, i, f"{rel}: ") for i, d in enumerate(raw)]
    if chunking is not None:
        documents = _chunk_all(documents, None, chunking)
    for d in documents:
        meta = dict(extra)
        meta.update(d.metadata or {})
        meta.setdefault("source", rel)
        meta.setdefault("sha256", digest)
        d.metadata = meta
    return documents


def read_source(source: SourceFile, stdin: Optional[BinaryIO] = None) -> bytes:
    """The bytes of ``source`` (stdin from ``stdin``, else ``sys.stdin.buffer``), size-capped.

    Raises:
        InvalidArgumentError: unreadable, or larger than :data:`.parsers.MAX_BYTES`.
    """
    if source.stdin:
        stream = stdin if stdin is not None else sys.stdin.buffer
        try:
            data = stream.read(MAX_BYTES + 1)
        except OSError as e:
            raise InvalidArgumentError(f"cannot read stdin: {e.strerror or e}") from None
        if not isinstance(data, bytes):
            raise InvalidArgumentError("stdin must be a binary stream")
        if len(data) > MAX_BYTES:
            raise InvalidArgumentError(f"stdin holds more than {MAX_BYTES // 2**20} MB; refused")
        return data
    try:
        with open(source.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_BYTES:
                raise InvalidArgumentError(
                    f"{source.rel} is {size / 2**20:.1f} MB; files over "
                    f"{MAX_BYTES // 2**20} MB are refused"
                )
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise InvalidArgumentError(
            f"cannot read {source.rel}: {e.strerror or type(e).__name__}"
        ) from None
    if len(data) > MAX_BYTES:
        raise InvalidArgumentError(f"{source.rel} grew past {MAX_BYTES // 2**20} MB; refused")
    return data


def looks_binary(data: bytes, rel: str) -> bool:
    """A text-kind file with NUL bytes near its start (an image or archive renamed, say)."""
    if kind_for(rel) in ("pdf", "docx"):
        return False
    head = data[:_BINARY_SNIFF]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 text has NULs
        return False
    return b"\x00" in head


def source_documents(
    source: SourceFile,
    data: bytes,
    chunking: Optional[Chunking],
    digest: Optional[str] = None,
) -> list[DocumentInfo]:
    """Documents of one discovered file (stdin is sniffed: JSON if it looks like JSON)."""
    if looks_binary(data, source.rel):
        raise InvalidArgumentError(f"{source.rel} is a binary file")
    content_type = None
    if source.stdin and kind_for(source.rel) is None and not _is_json(source.rel, None):
        head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
        content_type = "application/json" if head in (b"[", b"{") else "text/markdown"
    return documents_from_bytes(
        data, source.rel, content_type=content_type, chunking=chunking, digest=digest
    )


def collect_documents(
    paths: Sequence[str | os.PathLike[str]],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    hidden: bool = False,
    chunking: Optional[Chunking] = None,
    on_duplicate: OnDuplicate = "error",
    stdin: Optional[BinaryIO] = None,
    stdin_name: str = "stdin",
) -> IngestBatch:
    """Discover, read, parse and chunk ``paths`` (files, directories, ``"-"`` for stdin).

    Args:
        paths: what to read (see :func:`moss.ingest.files.discover`).
        include: glob patterns a file's ``rel`` must match (any of them).
        exclude: glob patterns that drop a file (or a whole directory).
        hidden: also read dot-files and dot-directories inside directories.
        chunking: chunking settings (default ``Chunking()``; JSON documents only if given).
        on_duplicate: ``"error"`` (default): an id seen twice raises; ``"last"``: the last
            occurrence wins and the id is listed in ``duplicates``.
        stdin: the stream ``"-"`` reads (default ``sys.stdin.buffer``).
        stdin_name: the ``rel`` of stdin (its suffix picks the parser; default sniffed).

    Raises:
        InvalidArgumentError: a missing path, an unusable file given explicitly, a duplicate
            id with ``on_duplicate="error"``, or a bad option.
        MossError: a PDF/DOCX given explicitly without the ``parsers`` extra.
    """
    if on_duplicate not in ("error", "last"):
        raise InvalidArgumentError(f"on_duplicate must be 'error' or 'last', not {on_duplicate!r}")
    if chunking is not None and not isinstance(chunking, Chunking):
        raise InvalidArgumentError(
            f"chunking must be a moss.Chunking, not {type(chunking).__name__}"
        )
    found = discover_all(
        paths, include=include, exclude=exclude, hidden=hidden, stdin_name=stdin_name
    )
    explicit = _explicit_keys(paths)
    skipped = list(found.skipped)
    per_file: list[tuple[SourceFile, list[DocumentInfo]]] = []
    for source in found.files:
        try:
            data = read_source(source, stdin)
            docs = source_documents(source, data, chunking)
        except MossError as e:
            if source.stdin or _key(source) in explicit:
                raise
            skipped.append((source.rel, e.message))
            continue
        per_file.append((source, docs))
    documents, duplicates = merge_documents(per_file, on_duplicate)
    files = [s for s, _ in per_file]
    return IngestBatch(documents, files, skipped, duplicates)


def merge_documents(
    per_file: Sequence[tuple[SourceFile, Sequence[DocumentInfo]]], on_duplicate: OnDuplicate
) -> tuple[list[DocumentInfo], list[str]]:
    """Concatenate the files' documents, applying the duplicate-id policy.

    With ``"last"`` a repeated id keeps its last version, at the position of its last
    occurrence. Returns ``(documents, duplicate ids in first-repeat order)``.
    """
    origin: dict[str, str] = {}
    duplicates: dict[str, None] = {}
    flat: list[DocumentInfo] = []
    for source, docs in per_file:
        for d in docs:
            previous = origin.get(d.id)
            if previous is not None:
                if on_duplicate == "error":
                    where = (
                        f"twice in {source.rel}"
                        if previous == source.rel
                        else f"in {previous} and in {source.rel}"
                    )
                    raise InvalidArgumentError(
                        f"duplicate document id {d.id!r} ({where}); rename one, or keep the "
                        "last occurrence with on_duplicate='last' (--on-duplicate last)"
                    )
                duplicates[d.id] = None
            origin[d.id] = source.rel
            flat.append(d)
    if not duplicates:
        return flat, []
    last: dict[str, int] = {d.id: i for i, d in enumerate(flat)}
    kept = [d for i, d in enumerate(flat) if last[d.id] == i]
    return kept, list(duplicates)


def _key(source: SourceFile) -> str:
    return str(source.path.resolve())


def _explicit_keys(paths: Sequence[str | os.PathLike[str]]) -> set[str]:
    """Resolved paths of the file arguments (whose problems are errors, not skips)."""
    out: set[str] = set()
    for raw in paths:
        if isinstance(raw, (str, os.PathLike)):
            name = os.fspath(raw)
            if name != "-" and os.path.isfile(name):
                out.add(str(os.path.realpath(name)))
    return out

"""What travels between a client and the store: document batches, JSON records, error bodies.

Shared by the HTTP client, the server and the embedded backend so the three agree byte for byte.

* **Document batches** (``create_index`` / ``add_docs`` input) use the snapshot container of
  :mod:`moss.snapshot` with no index arrays: documents as JSON, vectors (custom model only) as raw
  float32, never as JSON numbers. Built-in models embed on the store side, so their batches carry
  no vectors at all.
* **Records** (``IndexInfo``, job state, stored documents, ``get_docs`` options) are plain JSON.
* **Errors** are ``{"error": {"code": ..., "message": ..., "detail": ...}}``; the client rebuilds
  the same exception class with :func:`moss.errors.error_from_code`.
* **File uploads** (``create_index_from_files``) are one binary body: ``MOSSFILES\x01``, a
  little-endian u32 header length, a JSON header ``{"files": [{"name", "content_type", "size"}]}``
  and the files' bytes back to back (:class:`FilesUpload` streams it without holding the files in
  memory; :func:`decode_files` slices it again).
"""

from __future__ import annotations

import json
import os
import stat
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DESERIALIZATION, InvalidArgumentError, MossError
from ..input_limits import check_documents
from ..snapshot import SnapshotData, pack, unpack
from ..types import (
    DocumentInfo,
    GetDocumentsOptions,
    IndexInfo,
    JobPhase,
    JobStatus,
    JobStatusResponse,
    ModelRef,
    ParentGrouping,
)

__all__ = [
    "FILES_MAGIC",
    "FileEntry",
    "FilesUpload",
    "JobRecord",
    "decode_batch",
    "decode_files",
    "docs_from_json",
    "docs_to_json",
    "encode_batch",
    "error_body",
    "error_from_body",
    "file_entry",
    "index_from_json",
    "index_to_json",
    "job_from_json",
    "job_to_json",
    "options_from_json",
    "options_to_json",
    "validate_columns",
]


@dataclass(frozen=True)
class JobRecord:
    """A job as the backend reports it: the public status plus what the client needs after it."""

    status: JobStatusResponse
    index_name: str
    doc_count: int | None  # documents submitted; after completion, the index's count

    @property
    def job_id(self) -> str:
        return self.status.job_id


# ------------------------------------------------------------------------------ batches


def encode_batch(
    docs: Sequence[DocumentInfo], model_id: str, vectors: np.ndarray | None, upsert: bool = True
) -> bytes:
    """Pack documents (and, for the custom model, their vectors) for a create/add job."""
    return pack(
        SnapshotData(
            model_id=model_id,
            dimension=None if vectors is None else int(vectors.shape[1]),
            ids=[d.id for d in docs],
            texts=[d.text for d in docs],
            metadata=[d.metadata for d in docs],
            payloads=[d.payload for d in docs],
            vectors=vectors,
            extra={"kind": "batch", "upsert": bool(upsert)},
        )
    )


def validate_columns(data: SnapshotData, *, batch: bool = False) -> None:
    """Check the document columns of a received snapshot or batch (it came from outside).

    Under a server's :mod:`moss.input_limits` the sizes are checked too (``batch``: a create/add
    batch, whose document count and total text are limited; a pushed snapshot is a whole index).

    Raises:
        MossError: code ``DESERIALIZATION`` when a column holds values of the wrong type.
        InputLimitError: a size over the active limits (``INVALID_ARGUMENT``, HTTP 413).
    """
    try:
        for i, t, p in zip(data.ids, data.texts, data.payloads):
            if not isinstance(i, str) or not i:
                raise ValueError(f"document id {i!r} is not a non-empty string")
            if not isinstance(t, str):
                raise ValueError(f"text of document {i!r} is not a string")
            if p is not None and not isinstance(p, str):
                raise ValueError(f"payload of document {i!r} is not a string")
        for m in data.metadata:
            if m is not None and (
                not isinstance(m, dict)
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in m.items())
            ):
                raise ValueError("metadata must map strings to strings")
        if not isinstance(data.model_id, str):
            raise ValueError("model_id is not a string")
    except ValueError as e:
        raise MossError(f"snapshot documents are malformed: {e}", code=DESERIALIZATION) from e
    what = "the document batch" if batch else "the pushed snapshot"
    check_documents(data.metadata, data.texts, data.dimension, batch=batch, what=what)


def decode_batch(blob: bytes | memoryview | Any) -> tuple[list[DocumentInfo], SnapshotData]:
    """Unpack and check a batch; documents carry their vectors as ``embedding`` when present."""
    data = unpack(blob)
    validate_columns(data, batch=True)
    vecs = data.vectors
    docs = [
        DocumentInfo(i, t, dict(m) if m is not None else None, None, p)
        for i, t, m, p in zip(data.ids, data.texts, data.metadata, data.payloads)
    ]
    if vecs is not None:
        for d, v in zip(docs, vecs):
            d.embedding = v
    return docs, data


# ------------------------------------------------------------------------------ file uploads

FILES_MAGIC = b"MOSSFILES\x01"
_U32 = struct.Struct("<I")
_MAX_HEADER = 1 << 20
_READ_CHUNK = 4 << 20


@dataclass(frozen=True)
class FileEntry:
    """One file of an upload: its bytes in memory or a path to stream them from."""

    name: str
    content_type: str
    size: int
    data: bytes | None = None
    path: str | None = None


class FilesUpload:
    """The body of a ``create_index_from_files`` upload, produced in chunks (see the module
    docstring); files given by path are read while the body is sent."""

    def __init__(self, entries: Sequence[FileEntry]) -> None:
        self.entries = list(entries)
        header = json.dumps(
            {
                "files": [
                    {"name": e.name, "content_type": e.content_type, "size": e.size}
                    for e in self.entries
                ]
            }
        ).encode("utf-8")
        self.header = FILES_MAGIC + _U32.pack(len(header)) + header
        self.size = len(self.header) + sum(e.size for e in self.entries)

    def chunks(self) -> Iterator[bytes]:
        """The body in pieces of at most a few MB.

        Raises:
            InvalidArgumentError: a file given by path cannot be read or changed size.
        """
        yield self.header
        for e in self.entries:
            if e.data is not None:
                view = memoryview(e.data)
                for start in range(0, len(view), _READ_CHUNK):
                    yield bytes(view[start : start + _READ_CHUNK])
                continue
            assert e.path is not None
            sent = 0
            try:
                with open(e.path, "rb") as f:
                    while sent < e.size:
                        piece = f.read(min(_READ_CHUNK, e.size - sent))
                        if not piece:
                            break
                        sent += len(piece)
                        yield piece
            except OSError as err:
                raise InvalidArgumentError(
                    f"Validation error: cannot read file {e.name!r} at {e.path!r}: "
                    f"{err.strerror or err}"
                ) from None
            if sent != e.size:
                raise InvalidArgumentError(
                    f"Validation error: file {e.name!r} changed size while it was uploaded"
                )

    def to_bytes(self) -> bytes:
        """The whole body in memory (tests, small uploads)."""
        return b"".join(self.chunks())


def decode_files(blob: Any) -> list[tuple[str, str, memoryview]]:
    """``(name, content_type, bytes)`` of every file in an upload body (views into ``blob``).

    Raises:
        MossError: code ``DESERIALIZATION`` if the body is not a well-formed upload.
    """
    view = memoryview(blob)
    try:
        if bytes(view[: len(FILES_MAGIC)]) != FILES_MAGIC:
            raise ValueError("missing the MOSSFILES header")
        start = len(FILES_MAGIC) + _U32.size
        (length,) = _U32.unpack(view[len(FILES_MAGIC) : start])
        if length > _MAX_HEADER or start + length > len(view):
            raise ValueError("header length out of range")
        header = json.loads(bytes(view[start : start + length]))
        offset = start + length
        out = []
        for f in header["files"]:
            name, ctype, size = f["name"], f["content_type"], f["size"]
            if not isinstance(name, str) or not isinstance(ctype, str):
                raise ValueError("file names and content types must be strings")
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise ValueError(f"bad size of file {name!r}")
            if offset + size > len(view):
                raise ValueError(f"file {name!r} is truncated")
            out.append((name, ctype, view[offset : offset + size]))
            offset += size
        if offset != len(view):
            raise ValueError("trailing bytes after the last file")
        return out
    except (ValueError, KeyError, TypeError, struct.error) as e:
        raise MossError(
            f"the file upload is malformed: {e}", code=DESERIALIZATION, detail=type(e).__name__
        ) from e


def file_entry(name: str, content_type: str, data: bytes | None, path: str | None) -> FileEntry:
    """A :class:`FileEntry` with its size (``path`` is stat-ed; errors become
    ``InvalidArgumentError``)."""
    if data is not None:
        return FileEntry(name, content_type, len(data), data=data)
    assert path is not None
    try:
        st = os.stat(path)
    except OSError as err:
        raise InvalidArgumentError(
            f"Validation error: cannot read file {name!r} at {path!r}: {err.strerror or err}"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise InvalidArgumentError(f"Validation error: {path!r} (file {name!r}) is not a file")
    return FileEntry(name, content_type, st.st_size, path=path)


# ------------------------------------------------------------------------------ JSON records


def index_to_json(info: IndexInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "name": info.name,
        "version": info.version,
        "status": info.status,
        "doc_count": info.doc_count,
        "created_at": info.created_at,
        "updated_at": info.updated_at,
        "model": {"id": info.model.id, "version": info.model.version},
    }


def index_from_json(obj: Any) -> IndexInfo:
    try:
        return IndexInfo(
            id=str(obj["id"]),
            name=str(obj["name"]),
            version=str(obj["version"]),
            status=str(obj["status"]),
            doc_count=int(obj["doc_count"]),
            created_at=str(obj["created_at"]),
            updated_at=str(obj["updated_at"]),
            model=ModelRef(str(obj["model"]["id"]), str(obj["model"]["version"])),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise _bad("index record", e) from e


def job_to_json(job: JobRecord) -> dict[str, Any]:
    s = job.status
    return {
        "job_id": s.job_id,
        "status": s.status.value,
        "progress": s.progress,
        "current_phase": s.current_phase.value if s.current_phase is not None else None,
        "error": s.error,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
        "completed_at": s.completed_at,
        "index_name": job.index_name,
        "doc_count": job.doc_count,
    }


def job_from_json(obj: Any) -> JobRecord:
    try:
        phase = obj["current_phase"]
        status = JobStatusResponse(
            job_id=str(obj["job_id"]),
            status=JobStatus(obj["status"]),
            progress=float(obj["progress"]),
            current_phase=JobPhase(phase) if phase is not None else None,
            error=obj["error"],
            created_at=str(obj["created_at"]),
            updated_at=str(obj["updated_at"]),
            completed_at=obj["completed_at"],
        )
        count = obj.get("doc_count")
        return JobRecord(status, str(obj["index_name"]), int(count) if count is not None else None)
    except (KeyError, TypeError, ValueError) as e:
        raise _bad("job record", e) from e


def docs_to_json(docs: Sequence[DocumentInfo]) -> list[dict[str, Any]]:
    return [
        {"id": d.id, "text": d.text, "metadata": d.metadata, "payload": d.payload} for d in docs
    ]


def docs_from_json(obj: Any) -> list[DocumentInfo]:
    try:
        return [
            DocumentInfo(str(d["id"]), str(d["text"]), d["metadata"], None, d["payload"])
            for d in obj
        ]
    except (KeyError, TypeError, ValueError) as e:
        raise _bad("document list", e) from e


def options_to_json(options: GetDocumentsOptions | None) -> dict[str, Any]:
    """``get_docs`` options as JSON; non-JSON filter values are an ``InvalidArgumentError``."""
    if options is None:
        return {}
    if not isinstance(options, GetDocumentsOptions):
        raise InvalidArgumentError(
            f"options must be GetDocumentsOptions, not {type(options).__name__}"
        )
    out: dict[str, Any] = {
        "doc_ids": (
            list(options.doc_ids) if isinstance(options.doc_ids, (list, tuple)) else options.doc_ids
        ),
        "filter": options.filter,
        "sort_by": options.sort_by,
        "ascending": options.ascending,
        "group_by": (
            {
                "parent_field": options.group_by.parent_field,
                "order_field": options.group_by.order_field,
            }
            if isinstance(options.group_by, ParentGrouping)
            else options.group_by
        ),
    }
    try:
        json.dumps(out, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"get_docs options cannot be sent to the server: {e}") from e
    return out


def options_from_json(obj: Any) -> GetDocumentsOptions:
    if not isinstance(obj, dict):
        raise InvalidArgumentError("get_docs options must be a JSON object")
    group = obj.get("group_by")
    if group is not None:
        if not isinstance(group, dict) or not {"parent_field", "order_field"} <= group.keys():
            raise InvalidArgumentError("group_by must have parent_field and order_field")
        group = ParentGrouping(group["parent_field"], group["order_field"])
    sort_by = obj.get("sort_by")
    if sort_by is not None and not isinstance(sort_by, str):
        raise InvalidArgumentError("sort_by must be a metadata field name")
    ascending = obj.get("ascending")
    if ascending is not None and not isinstance(ascending, bool):
        raise InvalidArgumentError("ascending must be a boolean")
    return GetDocumentsOptions(obj.get("doc_ids"), obj.get("filter"), sort_by, ascending, group)


# ------------------------------------------------------------------------------ errors


def error_body(err: MossError) -> dict[str, Any]:
    return {"error": {"code": err.code, "message": err.message, "detail": err.detail}}


def error_from_body(obj: Any) -> MossError | None:
    """Rebuild the exception a server reported, or None if ``obj`` is not an error body."""
    from ..errors import error_from_code

    try:
        err = obj["error"]
        return error_from_code(err.get("code"), str(err["message"]), err.get("detail"))
    except (KeyError, TypeError, AttributeError):
        return None


def _bad(what: str, e: Exception) -> MossError:
    return MossError(
        f"the server sent a malformed {what}",
        code=DESERIALIZATION,
        detail=f"{type(e).__name__}: {e}",
    )

"""Checking a submission: quotas before a job is created (``Store.begin``), then its uploaded
input before it is queued (``Store.finish``).

Everything a client can get wrong is refused here, at submission, with a typed error — the job
never reaches a worker — so a failed job means something went wrong while it ran, not bad input.
Kept apart from :mod:`moss.server.store` so that module stays about the store's lifecycle.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from typing import Any

from ..embedding.base import check_model_id
from ..errors import NOT_FOUND, InvalidArgumentError, MossError
from .catalog import JobRow
from .ingest_jobs import validate_files
from .limits import QuotaError, Quotas
from .runtime_types import JobHost

__all__ = ["check_finite", "check_quotas", "stored_bytes", "validate_input"]


def stored_bytes(host: JobHost, project_id: str) -> int:
    """Bytes of a project's current index versions (what its storage quota counts)."""
    total = 0
    for row in host.catalog.list_indexes(project_id):
        if row.version is not None:
            with contextlib.suppress(KeyError):
                total += host.blobs.size(row.version)
    return total


def check_quotas(host: JobHost, q: Quotas, project_id: str, name: str, kind: str) -> None:
    """Refuse a submission that would take a project over one of its quotas."""
    if q.max_pending_jobs is not None:
        pending = host.catalog.count_pending(project_id)
        if pending >= q.max_pending_jobs:
            raise QuotaError(
                f"project has {pending} unfinished jobs (quota {q.max_pending_jobs}); "
                "wait for some to finish",
                status=429,
            )
    if q.max_indexes is not None and kind in ("create", "files", "push"):
        names = {r.name for r in host.catalog.list_indexes(project_id)}
        if name not in names and len(names) >= q.max_indexes:
            raise QuotaError(
                f"project has {len(names)} indexes (quota {q.max_indexes}); delete one first",
                status=429,
            )
    if q.max_project_bytes is not None and kind not in ("delete",):
        used = stored_bytes(host, project_id)
        if used >= q.max_project_bytes:
            raise QuotaError(
                f"project stores {used} bytes (quota {q.max_project_bytes}); "
                "delete indexes or documents first",
                status=413,
            )


def validate_input(host: JobHost, job: JobRow, key: str) -> tuple[int, str | None]:
    """Check the input blob ``key`` of ``job``; ``(document count, index id or None)``.

    A ``create``/``files`` job reserves its new index here (the id is returned).
    """
    from ..cloud.wire import decode_batch, validate_columns
    from ..engine import CUSTOM
    from ..snapshot import unpack

    blob = host.blobs.read(key)
    if job.kind == "files":
        return validate_files(host, job, blob)
    if job.kind == "delete":
        try:
            ids = json.loads(bytes(blob))["ids"]
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidArgumentError('delete input must be {"ids": [...]}') from e
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise InvalidArgumentError("doc_ids must be a non-empty list of strings")
        return len(ids), None
    if job.kind == "push":
        data = unpack(memoryview(blob))
        validate_columns(data)
        if data.doc_count == 0:
            raise InvalidArgumentError(
                f"cannot push index {job.index_name!r}: it has no documents; add documents first"
            )
        check_model_id(data.model_id)
        _check_push(data)
        return data.doc_count, None
    docs, data = decode_batch(blob)
    if data.vectors is not None:
        check_finite(data.vectors)
    if job.kind == "create":
        model = str(job.params["model_id"])
        if not docs:
            raise InvalidArgumentError("create_index needs at least one document")
        dimension = None
        index_id = secrets.token_hex(16)
    else:
        row = host.catalog.get_index(job.project_id, job.index_name)
        if row is None or row.id != job.index_id:
            raise MossError(f"index {job.index_name!r} not found", code=NOT_FOUND)
        model, dimension, index_id = row.model_id, row.dimension, row.id
    if model == CUSTOM:
        if docs and data.vectors is None:
            raise InvalidArgumentError("the custom model needs an embedding on every document")
        if docs and dimension is not None and data.dimension != dimension:
            detail = (
                f"Invalid embedding length: expected {dimension} but received {data.dimension}."
            )
            raise InvalidArgumentError(detail, detail=detail)
    elif docs:
        from ..embedding import get_embedder

        get_embedder(model)  # MODEL_UNAVAILABLE now rather than as a failed job
    if job.kind == "create":
        dim = data.dimension if model == CUSTOM else None
        host.catalog.reserve_index(job.project_id, job.index_name, index_id, model, dim)
    return len(docs), index_id


def check_finite(vectors: Any) -> None:
    """Reject NaN or infinite vector components (checked in slices: no full-size temporary)."""
    import numpy as np

    step = max(1, (1 << 22) // max(1, vectors.shape[1]))
    for lo in range(0, len(vectors), step):
        bad = ~np.isfinite(vectors[lo : lo + step]).all(axis=1)
        if bad.any():
            row = lo + int(np.argmax(bad))
            raise InvalidArgumentError(f"vector {row} contains NaN or infinite values")


def _check_push(data: Any) -> None:
    """What a pushed snapshot must satisfy to be served (structure was checked by unpack)."""
    from ..engine import CUSTOM

    if data.vectors is None:
        raise InvalidArgumentError("a pushed index must carry one vector per document")
    if len(set(data.ids)) != len(data.ids):
        raise InvalidArgumentError("a pushed index has duplicate document ids")
    if data.model_id != CUSTOM:
        from ..embedding import get_embedder

        expected = get_embedder(data.model_id).dimension
        if data.dimension != expected:
            raise InvalidArgumentError(
                f"a pushed {data.model_id!r} index has {data.dimension}-d vectors; "
                f"the model makes {expected}-d vectors"
            )
    check_finite(data.vectors)

"""Public views of catalog rows: what the store answers about an index or a job."""

from __future__ import annotations

from ..types import IndexInfo, JobPhase, JobStatus, JobStatusResponse, ModelRef
from .catalog import IndexRow, JobRow

__all__ = ["VERSION_PREFIX", "index_info", "job_status"]

VERSION_PREFIX = "versions/"


def index_info(row: IndexRow) -> IndexInfo:
    """The public view of an index row (its version key without the ``versions/`` prefix)."""
    version = row.version[len(VERSION_PREFIX) :] if row.version is not None else ""
    return IndexInfo(
        id=row.id,
        name=row.name,
        version=version,
        status=row.status,
        doc_count=row.doc_count,
        created_at=row.created_at,
        updated_at=row.updated_at,
        model=ModelRef(row.model_id, row.model_version),
    )


def job_status(job: JobRow) -> JobStatusResponse:
    """The public view of a job row."""
    return JobStatusResponse(
        job_id=job.id,
        status=JobStatus(job.status),
        progress=float(job.progress),
        current_phase=JobPhase(job.phase) if job.phase else None,
        error=job.error,
        created_at=job.created_at,
        updated_at=job.updated_at,
        completed_at=job.completed_at,
    )

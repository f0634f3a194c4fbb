"""``JobHandle``: a reference to a cloud job returned by ``create_index(..., wait=False)``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .types import JobStatusResponse

if TYPE_CHECKING:
    from .client import MossClient

__all__ = ["JobHandle"]


class JobHandle:
    """Follow one job: ``await handle.status()`` or ``await handle.wait()``."""

    def __init__(self, client: MossClient, job_id: str) -> None:
        self._client = client
        self._job_id = job_id

    @property
    def job_id(self) -> str:
        return self._job_id

    async def status(self) -> JobStatusResponse:
        """The job's current state (``client.get_job_status``)."""
        return await self._client.get_job_status(self._job_id)

    async def wait(self) -> JobStatusResponse:
        """Poll until the job completes (``client.wait_for_job``); raises if it failed."""
        return await self._client.wait_for_job(self._job_id)

    def __repr__(self) -> str:
        return f"<JobHandle {self._job_id}>"

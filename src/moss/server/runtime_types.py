"""What the job runner needs from the store that owns it, as a narrow interface.

:class:`~moss.server.store.Store` creates a :class:`~moss.server.jobs.JobRunner` and hands it
itself; the runner (and the ``files``/``crawl``/``purge`` jobs in :mod:`moss.server.ingest_jobs`)
only see this :class:`JobHost` protocol. That keeps the dependency one way — ``store`` imports
``jobs``, ``jobs`` never imports ``store`` — without hiding a cycle behind function-level imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .catalog import Catalog
    from .storage import BlobStore
    from .websources import WebSources

__all__ = ["JobHost"]


class JobHost(Protocol):
    """The store as its job runner sees it."""

    owner: str
    """This process's owner token (jobs it runs are tagged with it)."""
    catalog: Catalog
    blobs: BlobStore
    web: WebSources
    allow_private_crawl: bool

    @property
    def claim_any(self) -> bool:
        """Whether the runner claims any node's queued jobs (cluster workers) or only its own."""
        ...

    def collect(self, *, orphans: bool = False) -> None:
        """Garbage-collect superseded versions and finished jobs' inputs."""
        ...

    def notify(self) -> None:
        """Wake everything waiting for a job to change state."""
        ...

    def maintenance(self) -> None:
        """The periodic pass: recover dead owners' jobs, collect garbage, schedule crawls."""
        ...

    def runner_exited(self) -> None:
        """Called by the runner thread as it ends (the store may release its resources)."""
        ...

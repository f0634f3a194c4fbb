"""Owner locks: which processes are alive to run the jobs they accepted.

Each process that runs jobs from a data directory holds an exclusive lock on
``<root>/owners/<token>.lock`` for its lifetime, and tags the jobs it accepts with ``<token>``. The
operating system drops the lock when the process dies, however it dies, so another process can
tell a dead owner from a live one without heartbeats: :func:`owner_alive` tries the lock. The
store then fails the dead owner's unfinished jobs (:meth:`moss.server.store.Store.recover`).

Nodes on different machines share no file system, so with a shared catalog (PostgreSQL) liveness
is a *lease* instead (:class:`Lease`): each node upserts ``owners(token, role, lease_until)`` every
couple of seconds, and an owner whose lease has run out (by the database's clock, never a node's)
is dead. A node killed with SIGKILL is noticed one TTL later; a clean stop deletes its row at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path
from typing import BinaryIO, Protocol

__all__ = ["Lease", "LeaseCatalog", "OwnerLock", "lock_file", "owner_alive"]

log = logging.getLogger(__name__)


class LeaseCatalog(Protocol):
    """The part of a catalog a lease uses."""

    def heartbeat(self, owner: str, role: str, ttl_s: float) -> None: ...
    def drop_owner(self, owner: str) -> None: ...


class Lease:
    """Keeps ``owner``'s lease in ``catalog`` alive from a daemon thread until :meth:`release`.

    The first heartbeat runs in the constructor, so a node that cannot reach its catalog fails
    to start instead of starting dead. Later failures (the database restarting) are logged and
    retried on the next beat; if they last longer than ``ttl_s``, other nodes treat this one as
    dead and fail the jobs it was running, exactly as if it had crashed.
    """

    def __init__(
        self, catalog: LeaseCatalog, owner: str, role: str, ttl_s: float, every_s: float
    ) -> None:
        self.catalog, self.owner, self.role = catalog, owner, role
        self.ttl_s, self.every_s = ttl_s, every_s
        self._stop = threading.Event()
        catalog.heartbeat(owner, role, ttl_s)
        self._thread = threading.Thread(target=self._run, name=f"moss-lease-{owner}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self.every_s):
            try:
                self.catalog.heartbeat(self.owner, self.role, self.ttl_s)
                if failing:
                    log.warning("moss lease of %s renewed again", self.owner)
                failing = False
            except Exception as e:
                if not failing:
                    log.warning("moss lease heartbeat failed (%s); retrying", e)
                failing = True

    def release(self) -> None:
        """Stop renewing and delete the lease (a clean shutdown: no TTL to wait out)."""
        self._stop.set()
        self._thread.join()
        try:
            self.catalog.drop_owner(self.owner)
        except Exception as e:  # the lease expires on its own
            log.warning("moss could not drop its lease (%s); it expires by itself", e)


class OwnerLock:
    """An exclusive lock on ``<dir>/<token>.lock`` held for this process's lifetime."""

    def __init__(self, folder: Path, token: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{token}.lock"
        if os.name == "nt":
            self._f = open(self.path, "a+b")
            lock_file(self._f)
        else:
            # Lock a temporary name, then rename: nobody can see the file unlocked and mistake
            # this live process for a dead one.
            tmp = folder / f".{token}.{os.getpid()}.tmp"
            self._f = open(tmp, "a+b")
            lock_file(self._f)
            os.replace(tmp, self.path)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
        self._f.close()


def lock_file(f: BinaryIO, *, blocking: bool = True) -> bool:
    try:
        if os.name == "nt":
            import msvcrt

            mode = msvcrt.LK_LOCK if blocking else msvcrt.LK_NBLCK  # type: ignore[attr-defined]
            msvcrt.locking(f.fileno(), mode, 1)  # type: ignore[attr-defined]
        else:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except OSError:
        return False


def owner_alive(folder: Path, token: str) -> bool:
    """Whether the process owning ``token`` still holds its lock (False also removes the file)."""
    path = folder / f"{token}.lock"
    try:
        f = open(path, "r+b")
    except OSError:
        return False
    with f:
        if not lock_file(f, blocking=False):
            return True
    with contextlib.suppress(OSError):
        path.unlink()
    return False

"""Owner locks: which processes are alive to run the jobs they accepted.

Each process that runs jobs from a data directory holds an exclusive lock on
``<root>/owners/<token>.lock`` for its lifetime, and tags the jobs it accepts with ``<token>``. The
operating system drops the lock when the process dies, however it dies, so another process can
tell a dead owner from a live one without heartbeats: :func:`owner_alive` tries the lock. The
store then fails the dead owner's unfinished jobs (:meth:`moss.server.store.Store.recover`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO

__all__ = ["OwnerLock", "lock_file", "owner_alive"]


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

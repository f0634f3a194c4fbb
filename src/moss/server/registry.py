"""The process-wide stores of a client process, and a clean interpreter exit.

The embedded cloud (:mod:`moss.cloud.embedded`) opens one :class:`~moss.server.store.Store` per data
directory per process, shared by every client and session of that process, so that one job runner
applies a directory's jobs in order. The last client to let go closes it after its queued jobs
ran. At interpreter exit the queued jobs get a grace period, then a running job is aborted and
waited for (see :func:`_drain_at_exit`).
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
import time
from typing import Any

from .store import EMBEDDED_IDLE_EXIT_S, Store

__all__ = ["EXIT_GRACE_S", "acquire_store", "release_store"]

_stores: dict[str, Store] = {}
_draining: list[Store] = []
_stores_lock = threading.Lock()


def acquire_store(root: str | os.PathLike[str]) -> Store:
    """The process-wide store of a data directory (one job runner per directory)."""
    key = os.path.realpath(root)
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            # In a client process the runner thread only lives while there is work.
            store = Store(key, idle_exit_s=EMBEDDED_IDLE_EXIT_S, allow_private_crawl=True)
            _stores[key] = store
        store._refs += 1
        return store


def release_store(store: Store) -> None:
    """Drop one reference; the last one lets the runner finish queued jobs, then stop."""
    with _stores_lock:
        store._refs -= 1
        if store._refs > 0:
            return
        if _stores.get(str(store.root)) is store:
            del _stores[str(store.root)]
        _draining[:] = [s for s in _draining if not s.finalized]
        _draining.append(store)
    store.close(drain=True, wait=False)


EXIT_GRACE_S = 60.0
"""How long a process that used the embedded store waits at exit for its queued jobs."""


@atexit.register
def _drain_at_exit() -> None:
    # Embedded jobs run in daemon threads; give queued ones (a push right before exit) a chance
    # to complete instead of being failed by the next process that opens the directory. A job
    # still running after the grace period (or when Ctrl-C interrupts the wait) is aborted at its
    # next progress report and waited for: a thread left inside onnxruntime while the interpreter
    # tears down the C++ runtime kills the process ("terminate called without an active
    # exception", exit 134). The aborted job is failed with a clear message; nothing is torn.
    #
    # Ctrl-C only sets a flag here: a KeyboardInterrupt raised inside Thread.join() corrupts the
    # thread's state on CPython < 3.13 (is_alive() turns False while it still runs), which is how
    # the abort used to follow a second Ctrl-C.
    with _stores_lock:
        stores = list(_stores.values()) + [s for s in _draining if not s.finalized]
    runners = [s.runner for s in stores if s.runner is not None]
    interrupted = threading.Event()
    previous: Any = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.set())
    try:
        deadline = time.monotonic() + EXIT_GRACE_S
        for store in stores:
            if not store._closed:
                store.close(drain=True, wait=False)
        for runner in runners:
            while runner.is_alive() and not interrupted.is_set() and time.monotonic() < deadline:
                runner.join(0.05)
        for runner in runners:
            if runner.is_alive():
                runner.abort()
        for runner in runners:
            while runner.is_alive():  # at most one embedding batch (or one commit) away
                runner.join(0.05)
    finally:
        # After a Ctrl-C the process is on its way out: a second one during the rest of the
        # teardown is absorbed too (restoring the default handler let it end the process with a
        # KeyboardInterrupt, exit -2). Without one, later exit handlers see Ctrl-C as usual.
        if previous is not None and not interrupted.is_set():
            signal.signal(signal.SIGINT, previous)

"""A private event loop in a daemon thread, so that sync framework methods can call async moss.

moss is async-first, while frameworks such as LangChain call both ``similarity_search`` and
``asimilarity_search``. The async methods of an adapter run on the caller's loop; the sync ones
submit the same coroutine to this loop and block on the result. ``asyncio.run`` is not an option:
it fails inside a running loop (a notebook, an async web handler calling a sync API) and would
create and tear down a loop per call. One loop per adapter object, started on first use.

Nothing here references the adapter, so a ``weakref.finalize`` on the adapter can stop the
loop when the adapter is garbage-collected without a reference cycle keeping it alive.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from ..errors import MossError

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """An event loop running in its own daemon thread, started lazily; :meth:`stop` ends it."""

    def __init__(self, name: str = "moss-integration-loop") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._stopped:
                raise MossError("this object is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()
                thread = threading.Thread(
                    target=self._serve, args=(loop, ready), name=self._name, daemon=True
                )
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the private loop and wait for its result (or exception)."""
        try:
            loop = self._start()
        except BaseException:
            coro.close()
            raise
        if threading.current_thread() is self._thread:
            coro.close()
            raise MossError("a sync method was called from its own event loop; use the a* method")
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def stop(self) -> None:
        """Stop the loop and join its thread (idempotent; later :meth:`run` calls fail)."""
        with self._lock:
            self._stopped = True
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            if thread is not threading.current_thread():
                thread.join()

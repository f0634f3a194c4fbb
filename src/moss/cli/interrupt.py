"""Ctrl-C for the async commands: cancel the command's task at its next ``await``.

Why not plain ``asyncio.run``: on Python 3.10 it lets ``KeyboardInterrupt`` fly out of whatever
the loop was doing, and on every version a second Ctrl-C during the clean-up raises again (a
traceback, or an abort when a native thread is still running at exit). :func:`run_cancellable`
instead handles SIGINT itself:

* The first Ctrl-C cancels the task (so ``finally`` blocks and ``async with`` exits run and close
  what was opened); the caller gets :class:`Interrupted`. Long CPU work in the commands runs in
  worker threads in small batches between awaits, so the cancellation lands within about a
  second; the clean-up waits for the batch in flight (a thread cannot be stopped) and starts
  nothing new.
* A command stuck in synchronous code never reaches an ``await`` that suspends (``moss eval``
  runs thousands of inline queries), so a cancellation would wait for it. A watchdog therefore
  checks that the event loop answers within a second; if it does not, the main thread gets a
  ``KeyboardInterrupt`` right there, which :func:`run_cancellable` also reports as
  :class:`Interrupted`. A responsive loop means the cancellation is being delivered, and the
  clean-up is never cut short.
* Later Ctrl-Cs are ignored while the command cleans up; after a cancelled command SIGINT stays
  ignored, so the interpreter's shutdown cannot be cut into a traceback either.

A command marks the part that must not be cut in half with :func:`point_of_no_return` (sending
the push and waiting for its job): a Ctrl-C there is noted and the command finishes; exit status
130 therefore always means "nothing was changed".
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Coroutine, Iterator
from types import FrameType
from typing import Any, TypeVar

__all__ = [
    "Interrupted",
    "point_of_no_return",
    "protect_from_now_on",
    "run_cancellable",
    "say_when_interrupted",
]

T = TypeVar("T")
WATCHDOG_S = 1.0


class Interrupted(Exception):
    """The command was cancelled by Ctrl-C before it changed anything (``str()``: what to say)."""


class _State:
    def __init__(self) -> None:
        self.reset()

    def reset(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop
        self.task: asyncio.Task[Any] | None = None
        self.cancelled = False
        self.force = False
        self.protected = 0
        self.noted = False
        self.message = "interrupted"

    def on_sigint(self, signum: int, frame: FrameType | None) -> None:
        """The SIGINT handler (runs in the main thread, between two bytecodes)."""
        if self.force:  # the watchdog's nudge: the loop is stuck in synchronous code
            self.force = False
            raise KeyboardInterrupt
        if self.cancelled:
            return  # a second Ctrl-C while cleaning up: ignored
        if self.protected:
            if not self.noted:
                self.noted = True
                sys.stderr.write("\ninterrupt ignored: the change was already sent; finishing it\n")
                sys.stderr.flush()
            return
        loop, task = self.loop, self.task
        if loop is None or task is None or loop.is_closed():
            return
        self.cancelled = True
        alive = threading.Event()
        loop.call_soon_threadsafe(task.cancel)
        loop.call_soon_threadsafe(alive.set)
        threading.Thread(target=self._watch, args=(alive, task), daemon=True).start()

    def _watch(self, alive: threading.Event, task: asyncio.Task[Any]) -> None:
        if alive.wait(WATCHDOG_S) or task.done() or self.protected:
            return
        self.force = True
        _thread.interrupt_main(signal.SIGINT)


_state = _State()


def say_when_interrupted(message: str) -> None:
    """What to print if Ctrl-C cancels the command from now on (default ``interrupted``)."""
    _state.message = message


def protect_from_now_on() -> None:
    """Like :func:`point_of_no_return` for the rest of the command (for library calls that
    report, through a progress callback, that only their push is left)."""
    _state.protected += 1


@contextlib.contextmanager
def point_of_no_return() -> Iterator[None]:
    """Within this block Ctrl-C does not cancel the command (it finishes what it sent)."""
    _state.protected += 1
    try:
        yield
    finally:
        _state.protected -= 1


def run_cancellable(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` in a fresh event loop; the first Ctrl-C cancels it.

    Raises:
        Interrupted: the coroutine was cancelled by Ctrl-C (after its clean-up ran).
    """
    loop = asyncio.new_event_loop()
    state = _state
    state.reset(loop)  # one command per process, but tests call main() many times
    previous: Any = None
    installed = threading.current_thread() is threading.main_thread()
    if installed:
        previous = signal.signal(signal.SIGINT, state.on_sigint)
    try:
        task = loop.create_task(coro)
        state.task = task
        try:
            try:
                return loop.run_until_complete(task)
            finally:
                _drain(loop)
        except (asyncio.CancelledError, KeyboardInterrupt):
            if state.cancelled:
                raise Interrupted(state.message) from None
            raise
    finally:
        if installed:
            # after a cancellation, the interpreter's shutdown must not be cut short
            signal.signal(signal.SIGINT, signal.SIG_IGN if state.cancelled else previous)
        state.force = False
        loop.close()
        state.reset()


def _drain(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel stray tasks, then wait for worker threads (the batch in flight) and async gens."""
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())

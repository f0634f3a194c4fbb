"""Ctrl-C for the async commands: cancel the command's task at its next ``await``.

Why not plain ``asyncio.run``: on Python 3.10 it lets ``KeyboardInterrupt`` fly out of whatever
the loop was doing, and on every version a second Ctrl-C during the clean-up raises again (a
traceback, or an abort when a native thread is still running at exit). :func:`run_cancellable`
instead installs a loop signal handler: the first SIGINT cancels the task (so ``finally`` blocks
and ``async with`` exits run and close what was opened), later ones are ignored while the
clean-up finishes, and the caller gets :class:`Interrupted`.

Long CPU work in the commands runs in worker threads in small batches between awaits, so the
cancellation lands within about a second; the clean-up waits for the batch in flight (a thread
cannot be stopped) and nothing further is started.

A command marks the part that must not be cut in half with :func:`point_of_no_return` (sending
the push and waiting for its job): a Ctrl-C there is noted and the command finishes; exit status
130 therefore always means "nothing was changed".
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

__all__ = [
    "Interrupted",
    "point_of_no_return",
    "protect_from_now_on",
    "run_cancellable",
    "say_when_interrupted",
]

T = TypeVar("T")


class Interrupted(Exception):
    """The command was cancelled by Ctrl-C before it changed anything (``str()``: what to say)."""


class _State:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.task: asyncio.Task[Any] | None = None
        self.cancelled = False
        self.protected = 0
        self.noted = False
        self.message = "interrupted"

    def on_sigint(self) -> None:
        if self.cancelled:
            return  # a second Ctrl-C while cleaning up: ignored, the clean-up is short
        if self.protected:
            if not self.noted:
                self.noted = True
                sys.stderr.write("\ninterrupt ignored: the push was already sent; finishing it\n")
                sys.stderr.flush()
            return
        self.cancelled = True
        if self.task is not None:
            self.task.cancel()


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
    state.reset()  # one command per process, but tests call main() many times
    installed = False
    if threading.current_thread() is threading.main_thread():
        try:
            loop.add_signal_handler(signal.SIGINT, state.on_sigint)
            installed = True
        except (NotImplementedError, RuntimeError, ValueError):  # Windows: KeyboardInterrupt
            installed = False
    try:
        task = loop.create_task(coro)
        state.task = task
        try:
            return loop.run_until_complete(task)
        except asyncio.CancelledError:
            if state.cancelled:
                raise Interrupted(state.message) from None
            raise
        finally:
            _drain(loop)
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGINT)  # restores the KeyboardInterrupt handler
            if state.cancelled:  # ... which must not cut the interpreter's shutdown short
                signal.signal(signal.SIGINT, signal.SIG_IGN)
        loop.close()
        state.task = None


def _drain(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel stray tasks, then wait for worker threads (the batch in flight) and async gens."""
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())

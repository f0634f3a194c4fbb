"""What an adapter owns and how it lets go: one copy for every framework's store.

An adapter store wraps a :class:`~moss.integrations._targets.Target` and may own what it opened
itself (the session and, with ``create``/``acreate``, the client), plus a private
:class:`~moss.integrations._loop.LoopThread` for its sync methods, stopped by a
``weakref.finalize``. :class:`OwnedResources` holds the closing logic and the context-manager
protocol over those attributes; the adapter sets them in its ``__init__`` (a pydantic adapter
declares them as private attributes), so the mixin adds no state of its own.
"""

from __future__ import annotations

import asyncio
import weakref
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from ._loop import LoopThread
from ._targets import SessionTarget

if TYPE_CHECKING:
    from ..client import MossClient
    from ._targets import Target

__all__ = ["OwnedResources"]

S = TypeVar("S", bound="OwnedResources")


class OwnedResources:
    """Mixin: ``close``/``aclose`` and ``with``/``async with`` over the adapter's resources."""

    _target: Target
    _owned_client: MossClient | None
    _owns_session: bool
    _closed: bool
    _loop: LoopThread
    _finalizer: Any

    def _start_loop(self) -> None:
        """Give the adapter its private loop thread, stopped when it is garbage-collected."""
        self._loop = LoopThread()
        self._finalizer = weakref.finalize(self, LoopThread.stop, self._loop)

    def _adopt_loop(self, loop: LoopThread) -> None:
        """Use ``loop`` (the one ``create`` opened the session on) for the sync methods."""
        self._finalizer.detach()
        self._loop.stop()
        self._loop = loop
        self._finalizer = weakref.finalize(self, LoopThread.stop, loop)

    async def _aclose_owned(self) -> None:
        if self._owns_session and isinstance(self._target, SessionTarget):
            await self._target.session.close()
        if self._owned_client is not None:
            await self._owned_client.close()

    async def aclose(self) -> None:
        """Close what the store opened itself (session, client) and stop its loop thread."""
        if self._closed:
            return
        self._closed = True
        await self._aclose_owned()
        await asyncio.to_thread(self._finalizer)

    def close(self) -> None:
        """Sync :meth:`aclose`: the owned session and client close on the private loop."""
        if self._closed:
            return
        self._closed = True
        if self._owns_session or self._owned_client is not None:
            self._loop.run(self._aclose_owned())
        self._finalizer()

    def __enter__(self: S) -> S:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self: S) -> S:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

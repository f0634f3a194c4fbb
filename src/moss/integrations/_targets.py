"""What a framework adapter wraps: a writable session or a client's loaded (read-only) index.

Both kinds answer the same five operations (query, get, add, delete, engine), so an adapter has
no branches on which one it wraps, and writes to a loaded index fail with one clear error.
Framework-free: shared by every module of :mod:`moss.integrations`, like :func:`unit`, which
normalises an external embedding so that moss's inner-product ranking is cosine ranking.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..client import MossClient
from ..engine import Engine
from ..errors import InvalidArgumentError
from ..runtime import loaded_engine
from ..session import SessionIndex
from ..types import DocumentInfo, GetDocumentsOptions, QueryOptions, SearchResult

__all__ = ["LoadedTarget", "SessionTarget", "Target", "target_for", "unit"]


class SessionTarget:
    """A writable session."""

    writable = True

    def __init__(self, session: SessionIndex) -> None:
        self.session = session
        self.name = session.name

    @property
    def model_id(self) -> str:
        return self.session.model_id

    def engine(self) -> Engine:
        return self.session.engine

    async def query(self, text: str, options: QueryOptions) -> SearchResult:
        return await self.session.query(text, options)

    async def get(
        self, ids: list[str] | None, filter: dict[str, Any] | None = None
    ) -> list[DocumentInfo]:
        return await self.session.get_docs(GetDocumentsOptions(doc_ids=ids, filter=filter))

    async def add(self, docs: list[DocumentInfo]) -> None:
        await self.session.add_docs(docs)

    async def delete(self, ids: list[str]) -> None:
        if ids:
            await self.session.delete_docs(ids)


class LoadedTarget:
    """A loaded index of a client: queried and read from its in-memory copy, never written."""

    writable = False

    def __init__(self, client: MossClient, name: str) -> None:
        self.client = client
        self.name = name
        self.engine()  # not loaded: MossError NOT_FOUND saying to call load_index first

    @property
    def model_id(self) -> str:
        return self.engine().model_id

    def engine(self) -> Engine:
        return loaded_engine(self.client, self.name)  # current copy (refresh swaps it)

    async def query(self, text: str, options: QueryOptions) -> SearchResult:
        return await self.client.query(self.name, text, options)

    async def get(
        self, ids: list[str] | None, filter: dict[str, Any] | None = None
    ) -> list[DocumentInfo]:
        return self.engine().get_documents(GetDocumentsOptions(doc_ids=ids, filter=filter))

    async def add(self, docs: list[DocumentInfo]) -> None:
        raise self._read_only()

    async def delete(self, ids: list[str]) -> None:
        raise self._read_only()

    def _read_only(self) -> InvalidArgumentError:
        return InvalidArgumentError(
            f"index {self.name!r} is a loaded index and read-only here: write through "
            f"`await client.session({self.name!r})` (then push_index) or client.add_docs"
        )


Target = SessionTarget | LoadedTarget


def target_for(
    owner: str,
    index: SessionIndex | None,
    client: MossClient | None,
    index_name: str | None,
) -> Target:
    """The target an adapter named ``owner`` wraps: a session, or a client's loaded index."""
    if index is not None:
        if client is not None or index_name is not None:
            raise InvalidArgumentError("pass a session, or client and index_name, not both")
        if not isinstance(index, SessionIndex):
            raise InvalidArgumentError(
                f"index must be a moss SessionIndex, not {type(index).__name__}"
            )
        return SessionTarget(index)
    if client is not None and index_name is not None:
        return LoadedTarget(client, index_name)
    raise InvalidArgumentError(
        f"{owner} needs a SessionIndex, or a MossClient and the index_name of an index loaded in it"
    )


def unit(vector: Sequence[float]) -> list[float]:
    """``vector`` scaled to length 1 (a zero vector is returned unchanged)."""
    try:
        arr = np.asarray(vector, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidArgumentError("an embedding must be a sequence of numbers") from None
    norm = float(np.linalg.norm(arr))
    out: list[float] = (arr / norm if norm > 0 and math.isfinite(norm) else arr).tolist()
    return out

"""``MossDocumentStore``: Haystack's ``DocumentStore`` over a moss session or loaded index.

The ``*_async`` methods are the implementation (native coroutines over moss's async API, on the
caller's loop); each sync method runs its coroutine on the store's private loop thread
(:class:`~moss.integrations._loop.LoopThread`). See the package docstring for the design.
"""

from __future__ import annotations

import os
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any, Literal, TypeVar

from haystack import Document, default_to_dict
from haystack.document_stores.types import DuplicatePolicy

from ...client import MossClient
from ...engine import CUSTOM
from ...errors import InvalidArgumentError, MossError
from ...session import SessionIndex
from ...types import DocumentInfo, QueryOptions
from .._loop import LoopThread
from .._owned import OwnedResources
from .._targets import SessionTarget, target_for, unit
from ._documents import MossDuplicateDocumentError, from_moss, plan_filter, to_moss

__all__ = ["MossDocumentStore"]

T = TypeVar("T")


class MossDocumentStore(OwnedResources):
    """A Haystack document store over a moss session (writable) or a loaded index (read-only).

    Args:
        index: an open :class:`~moss.SessionIndex` (``await client.session(name)``); or
        client, index_name: a client and the name of an index loaded in it (read-only).
        embedding_dim: for a ``model_id="custom"`` index, the dimension of the zero vector
            given to documents that have no embedding (default: the index's dimension once
            known, else the first embedding of the batch).

    With a built-in model (``moss-minilm``) moss embeds each document's ``content``; a
    ``Document.embedding`` is kept and given back but not used for ranking. With
    ``model_id="custom"`` the documents' embeddings are what moss ranks by (L2-normalised, so
    the ranking is cosine). Use :meth:`create` / :meth:`acreate` to let the store open (and
    later close) its own client and session.
    """

    def __init__(
        self,
        index: SessionIndex | None = None,
        *,
        client: MossClient | None = None,
        index_name: str | None = None,
        embedding_dim: int | None = None,
    ) -> None:
        target = target_for("MossDocumentStore", index, client, index_name)
        if embedding_dim is not None and (
            isinstance(embedding_dim, bool)
            or not isinstance(embedding_dim, int)
            or embedding_dim < 1
        ):
            raise InvalidArgumentError(
                f"embedding_dim must be a positive int, not {embedding_dim!r}"
            )
        self._target = target
        self._embedding_dim = embedding_dim
        self._init: dict[str, Any] = {"index_name": target.name, "model_id": target.model_id}
        self._owned_client: MossClient | None = None
        self._owns_session = False
        self._closed = False
        self._start_loop()

    # ------------------------------------------------------------ opening and closing

    @classmethod
    async def acreate(
        cls,
        index_name: str = "haystack",
        *,
        client: MossClient | None = None,
        model_id: str | None = None,
        embedding_dim: int | None = None,
        project_id: str | None = None,
        project_key: str | None = None,
        server_url: str | None = None,
        cache_path: str | None = None,
    ) -> MossDocumentStore:
        """Open (create or resume) the session ``index_name`` and wrap it; the store owns it.

        ``model_id`` defaults to moss's built-in model; ``"custom"`` ranks by the documents'
        own embeddings. Without ``client`` the store makes one (``project_id`` from env
        ``MOSS_PROJECT_ID`` or ``"default"``, the key from ``MOSS_PROJECT_KEY``; the embedded
        local store unless ``server_url``/``MOSS_SERVER_URL``) and closes it in :meth:`close`.
        """
        owned = None
        if client is None:
            owned = client = MossClient(
                project_id or os.environ.get("MOSS_PROJECT_ID") or "default",
                project_key if project_key is not None else os.environ.get("MOSS_PROJECT_KEY", ""),
                server_url=server_url,
                cache_path=cache_path,
            )
        try:
            session = await client.session(index_name, model_id)
            try:
                store = cls(session, embedding_dim=embedding_dim)
            except BaseException:
                await session.close()
                raise
        except BaseException:
            if owned is not None:
                await owned.close()
            raise
        store._owned_client = owned
        store._owns_session = True
        store._init.update(
            embedding_dim=embedding_dim,
            project_id=project_id,
            server_url=server_url,
            cache_path=cache_path,
        )
        return store

    @classmethod
    def create(cls, index_name: str = "haystack", **kwargs: Any) -> MossDocumentStore:
        """:meth:`acreate` for sync code (same arguments), on the store's private loop."""
        loop = LoopThread()
        try:
            store = loop.run(cls.acreate(index_name, **kwargs))
        except BaseException:
            loop.stop()
            raise
        store._adopt_loop(loop)
        return store

    def to_dict(self) -> dict[str, Any]:
        """How to reopen this store (index name, model, project, server; never the key)."""
        return default_to_dict(self, **self._init)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MossDocumentStore:
        """Reopen a store serialised by :meth:`to_dict` (:meth:`create`; key from the env)."""
        params = dict(data.get("init_parameters") or {})
        return cls.create(**{k: v for k, v in params.items() if v is not None})

    def __repr__(self) -> str:
        kind = "session" if self._target.writable else "loaded index"
        return f"<MossDocumentStore {kind} {self._target.name!r} model={self._target.model_id!r}>"

    @property
    def session(self) -> SessionIndex | None:
        """The wrapped session (None over a loaded index)."""
        return self._target.session if isinstance(self._target, SessionTarget) else None

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise MossError("MossDocumentStore is closed")
        return self._loop.run(coro)

    # ------------------------------------------------------------ reads

    async def count_documents_async(self) -> int:
        """Number of documents in the index."""
        return self._target.engine().doc_count

    def count_documents(self) -> int:
        """Sync :meth:`count_documents_async`."""
        return self._run(self.count_documents_async())

    async def filter_documents_async(self, filters: dict[str, Any] | None = None) -> list[Document]:
        """The documents matching a Haystack filter (all without one), in index order.

        ``==``/``in`` on plain string meta values narrow inside moss; anything else is then
        checked by Haystack's own filter code over those documents (O(documents read)).
        """
        plan = plan_filter(filters)
        docs = [from_moss(d) for d in await self._target.get(None, plan.moss)]
        return plan.keep(docs)

    def filter_documents(self, filters: dict[str, Any] | None = None) -> list[Document]:
        """Sync :meth:`filter_documents_async`."""
        return self._run(self.filter_documents_async(filters))

    async def count_documents_by_filter_async(self, filters: dict[str, Any]) -> int:
        """Number of documents matching a Haystack filter."""
        return len(await self.filter_documents_async(filters))

    def count_documents_by_filter(self, filters: dict[str, Any]) -> int:
        """Sync :meth:`count_documents_by_filter_async`."""
        return self._run(self.count_documents_by_filter_async(filters))

    # ------------------------------------------------------------ writes

    def _dimension(self, documents: list[Document]) -> int:
        dim = self._target.engine().dimension or self._embedding_dim
        if dim is None:
            dim = next((len(d.embedding) for d in documents if d.embedding is not None), None)
        if dim is None:
            raise InvalidArgumentError(
                f"index {self._target.name!r} uses custom embeddings and none is known yet: "
                "give documents embeddings, or pass embedding_dim= for documents without one"
            )
        return dim

    def _to_moss(self, documents: list[Document]) -> list[DocumentInfo]:
        if self._target.model_id != CUSTOM:
            return [to_moss(d, None) for d in documents]
        dim = self._dimension(documents)
        zero = [0.0] * dim
        return [
            to_moss(d, unit(d.embedding) if d.embedding is not None else zero) for d in documents
        ]

    async def write_documents_async(
        self, documents: list[Document], policy: DuplicatePolicy = DuplicatePolicy.NONE
    ) -> int:
        """Write documents; returns how many were written.

        ``NONE`` and ``FAIL`` raise :class:`MossDuplicateDocumentError` (a Haystack
        ``DuplicateDocumentError``) if an id exists or repeats, writing nothing; ``SKIP`` keeps
        existing ids (and the first of repeats); ``OVERWRITE`` replaces (the last repeat wins).
        """
        if not isinstance(documents, list):
            raise InvalidArgumentError(
                f"write_documents takes a list of Documents, not {type(documents).__name__}"
            )
        bad = next((d for d in documents if not isinstance(d, Document)), None)
        if bad is not None:
            raise InvalidArgumentError(
                f"write_documents takes Haystack Document objects, not {type(bad).__name__}"
            )
        if not self._target.writable:
            await self._target.add([])  # raises the read-only error
        if not isinstance(policy, DuplicatePolicy):
            raise InvalidArgumentError(f"policy must be a DuplicatePolicy, not {policy!r}")
        if policy == DuplicatePolicy.OVERWRITE:
            batch = list({d.id: d for d in documents}.values())
        else:
            ids = [d.id for d in documents]
            existing = {d.id for d in await self._target.get(ids)} if ids else set()
            batch, seen = [], set()
            for d in documents:
                if d.id in existing or d.id in seen:
                    if policy == DuplicatePolicy.SKIP:
                        continue
                    raise MossDuplicateDocumentError(
                        f"document {d.id!r} already exists in index {self._target.name!r}"
                    )
                seen.add(d.id)
                batch.append(d)
        if batch:
            await self._target.add(self._to_moss(batch))
        return len(batch)

    def write_documents(
        self, documents: list[Document], policy: DuplicatePolicy = DuplicatePolicy.NONE
    ) -> int:
        """Sync :meth:`write_documents_async`."""
        return self._run(self.write_documents_async(documents, policy))

    async def delete_documents_async(self, document_ids: list[str]) -> None:
        """Delete these ids (unknown ones ignored)."""
        await self._target.delete(list(document_ids))

    def delete_documents(self, document_ids: list[str]) -> None:
        """Sync :meth:`delete_documents_async`."""
        self._run(self.delete_documents_async(document_ids))

    async def delete_all_documents_async(self) -> None:
        """Delete every document (the index itself stays)."""
        if not self._target.writable:
            await self._target.delete([])  # raises the read-only error
        await self._target.delete([d.id for d in await self._target.get(None)])

    def delete_all_documents(self) -> None:
        """Sync :meth:`delete_all_documents_async`."""
        self._run(self.delete_all_documents_async())

    async def delete_by_filter_async(self, filters: dict[str, Any]) -> int:
        """Delete the documents matching a Haystack filter; returns how many."""
        if not self._target.writable:
            await self._target.delete([])  # raises the read-only error
        ids = [d.id for d in await self.filter_documents_async(filters)]
        await self._target.delete(ids)
        return len(ids)

    def delete_by_filter(self, filters: dict[str, Any]) -> int:
        """Sync :meth:`delete_by_filter_async`."""
        return self._run(self.delete_by_filter_async(filters))

    async def update_by_filter_async(self, filters: dict[str, Any], meta: dict[str, Any]) -> int:
        """Merge ``meta`` into the meta of every matching document; returns how many."""
        if not isinstance(meta, dict):
            raise InvalidArgumentError(f"meta must be a dict, not {type(meta).__name__}")
        if not self._target.writable:
            await self._target.add([])  # raises the read-only error
        docs = [
            replace(d, meta={**d.meta, **meta}) for d in await self.filter_documents_async(filters)
        ]
        if docs:
            await self._target.add(self._to_moss(docs))
        return len(docs)

    def update_by_filter(self, filters: dict[str, Any], meta: dict[str, Any]) -> int:
        """Sync :meth:`update_by_filter_async`."""
        return self._run(self.update_by_filter_async(filters, meta))

    # ------------------------------------------------------------ search (for the retrievers)

    async def search_async(
        self,
        query: str,
        *,
        query_embedding: list[float] | None = None,
        filters: dict[str, Any] | None = None,
        top_k: int = 10,
        alpha: float | None = None,
        fusion: Literal["score", "rrf"] | None = None,
    ) -> list[Document]:
        """moss's hybrid query; Documents with ``score`` set (clamped cosine in [0, 1]).

        A filter moss evaluates exactly is pushed into the query. Otherwise the query asks for
        4x ``top_k`` hits, checks them in Python, and asks again 4x deeper until ``top_k`` match
        or the index is exhausted (the cost grows with how rare the matches are).
        """
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise InvalidArgumentError(f"top_k must be an int of 0 or more, not {top_k!r}")
        plan = plan_filter(filters)
        vector = None
        if query_embedding is not None:
            vector = (
                unit(query_embedding) if self._target.model_id == CUSTOM else list(query_embedding)
            )
        if top_k == 0:
            return []
        depth = top_k if plan.exact else top_k * 4
        total = self._target.engine().doc_count
        while True:
            options = QueryOptions(
                embedding=vector, top_k=depth, alpha=alpha, filter=plan.moss, fusion=fusion
            )
            result = await self._target.query(query, options)
            hits = plan.keep([from_moss(d, d.score) for d in result.docs])
            if plan.exact or len(hits) >= top_k or depth >= total:
                return hits[:top_k]
            depth *= 4

    def search(
        self,
        query: str,
        *,
        query_embedding: list[float] | None = None,
        filters: dict[str, Any] | None = None,
        top_k: int = 10,
        alpha: float | None = None,
        fusion: Literal["score", "rrf"] | None = None,
    ) -> list[Document]:
        """Sync :meth:`search_async`."""
        return self._run(
            self.search_async(
                query,
                query_embedding=query_embedding,
                filters=filters,
                top_k=top_k,
                alpha=alpha,
                fusion=fusion,
            )
        )

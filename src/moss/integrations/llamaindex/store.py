"""``MossVectorStore``: LlamaIndex's ``BasePydanticVectorStore`` over a moss session or index.

The ``a*`` methods (and ``async_add``) are the implementation, native coroutines on the caller's
loop; each sync method runs its coroutine on the store's private loop thread
(:class:`~moss.integrations._loop.LoopThread`). See the package docstring for the design.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

from llama_index.core.indices.query.embedding_utils import get_top_k_mmr_embeddings
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from pydantic import PrivateAttr

from ...client import MossClient
from ...engine import CUSTOM
from ...errors import InvalidArgumentError, MossError
from ...session import SessionIndex
from ...types import QueryOptions
from .._loop import LoopThread
from .._owned import OwnedResources
from .._targets import SessionTarget, Target, target_for, unit
from ._nodes import REF_DOC_KEY, from_moss, moss_filters, to_moss

__all__ = ["MossVectorStore"]

_QUERY_KWARGS = ("fusion", "min_score", "candidate_depth")
_MODES = ", ".join(
    m.value
    for m in (
        VectorStoreQueryMode.DEFAULT,
        VectorStoreQueryMode.HYBRID,
        VectorStoreQueryMode.SEMANTIC_HYBRID,
        VectorStoreQueryMode.TEXT_SEARCH,
        VectorStoreQueryMode.SPARSE,
        VectorStoreQueryMode.MMR,
    )
)


class MossVectorStore(OwnedResources, BasePydanticVectorStore):
    """A LlamaIndex vector store over a moss session (writable) or a loaded index (read-only).

    Args:
        index: an open :class:`~moss.SessionIndex`; or
        client, index_name: a client and the name of an index loaded in it (read-only).
        alpha: default ``alpha`` of hybrid queries whose ``VectorStoreQuery.alpha`` is None
            (``None``: moss's 0.8).
        fusion: ``"score"`` (moss's default) or ``"rrf"``.
        normalize: L2-normalise node and query vectors (cosine ranking); default True.

    ``query`` also accepts ``fusion``, ``min_score`` and ``candidate_depth`` keyword arguments
    (``vector_store_kwargs`` of a LlamaIndex retriever).
    """

    stores_text: bool = True
    is_embedding_query: bool = True
    flat_metadata: bool = False

    _target: Target = PrivateAttr()
    _alpha: float | None = PrivateAttr(default=None)
    _fusion: Literal["score", "rrf"] | None = PrivateAttr(default=None)
    _normalize: bool = PrivateAttr(default=True)
    _loop: LoopThread = PrivateAttr()
    _finalizer: Any = PrivateAttr()
    _owned_client: MossClient | None = PrivateAttr(default=None)
    _owns_session: bool = PrivateAttr(default=False)
    _closed: bool = PrivateAttr(default=False)

    def __init__(
        self,
        index: SessionIndex | None = None,
        *,
        client: MossClient | None = None,
        index_name: str | None = None,
        alpha: float | None = None,
        fusion: Literal["score", "rrf"] | None = None,
        normalize: bool = True,
    ) -> None:
        target = target_for("MossVectorStore", index, client, index_name)
        super().__init__(stores_text=True, is_embedding_query=target.model_id == CUSTOM)
        self._target = target
        self._alpha = alpha
        self._fusion = fusion
        self._normalize = normalize
        self._start_loop()

    @classmethod
    def class_name(cls) -> str:
        return "MossVectorStore"

    # ------------------------------------------------------------ opening and closing

    @classmethod
    async def acreate(
        cls,
        index_name: str = "llamaindex",
        *,
        client: MossClient | None = None,
        model_id: str | None = CUSTOM,
        project_id: str | None = None,
        project_key: str | None = None,
        server_url: str | None = None,
        cache_path: str | None = None,
        alpha: float | None = None,
        fusion: Literal["score", "rrf"] | None = None,
        normalize: bool = True,
    ) -> MossVectorStore:
        """Open (create or resume) the session ``index_name`` and wrap it; the store owns it.

        ``model_id`` defaults to ``"custom"`` (LlamaIndex supplies the vectors); a built-in
        model makes moss embed the text instead. Without ``client`` the store makes one
        (``project_id`` from env ``MOSS_PROJECT_ID`` or ``"default"``, the key from
        ``MOSS_PROJECT_KEY``) and closes it in :meth:`close`.
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
                store = cls(session, alpha=alpha, fusion=fusion, normalize=normalize)
            except BaseException:
                await session.close()
                raise
        except BaseException:
            if owned is not None:
                await owned.close()
            raise
        store._owned_client = owned
        store._owns_session = True
        return store

    @classmethod
    def create(cls, index_name: str = "llamaindex", **kwargs: Any) -> MossVectorStore:
        """:meth:`acreate` for sync code (same arguments), on the store's private loop."""
        loop = LoopThread()
        try:
            store = loop.run(cls.acreate(index_name, **kwargs))
        except BaseException:
            loop.stop()
            raise
        store._adopt_loop(loop)
        return store

    @property
    def client(self) -> Any:
        """The wrapped :class:`~moss.SessionIndex`, or the :class:`~moss.MossClient`."""
        t = self._target
        return t.session if isinstance(t, SessionTarget) else t.client

    def _run(self, coro: Any) -> Any:
        if self._closed:
            coro.close()
            raise MossError("MossVectorStore is closed")
        return self._loop.run(coro)

    # ------------------------------------------------------------ writes

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        """Add or replace nodes (by ``node_id``); returns their ids."""
        _no_kwargs("add", kwargs)
        custom = self._target.model_id == CUSTOM
        docs = [to_moss(n, with_vector=custom, normalize=self._normalize) for n in nodes]
        if docs or not self._target.writable:
            await self._target.add(docs)
        return [d.id for d in docs]

    def add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        """Sync :meth:`async_add`."""
        out: list[str] = self._run(self.async_add(nodes, **kwargs))
        return out

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document ``ref_doc_id``."""
        _no_kwargs("delete", delete_kwargs)
        flt = {"field": REF_DOC_KEY, "condition": {"$eq": ref_doc_id}}
        await self._adelete_where(None, flt)

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Sync :meth:`adelete`."""
        self._run(self.adelete(ref_doc_id, **delete_kwargs))

    async def _adelete_where(self, ids: list[str] | None, flt: dict[str, Any] | None) -> None:
        if not self._target.writable:
            await self._target.delete([])  # raises the read-only error
        docs = await self._target.get(ids, flt)
        await self._target.delete([d.id for d in docs])

    async def adelete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete the nodes with these ids that match ``filters`` (neither: every node)."""
        _no_kwargs("delete_nodes", delete_kwargs)
        await self._adelete_where(node_ids, moss_filters(filters))

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Sync :meth:`adelete_nodes`."""
        self._run(self.adelete_nodes(node_ids, filters, **delete_kwargs))

    async def aclear(self) -> None:
        """Delete every node."""
        await self._adelete_where(None, None)

    def clear(self) -> None:
        """Sync :meth:`aclear`."""
        self._run(self.aclear())

    # ------------------------------------------------------------ reads

    async def aget_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """The nodes with these ids (all if None) that match ``filters``, in index order."""
        return [from_moss(d) for d in await self._target.get(node_ids, moss_filters(filters))]

    def get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """Sync :meth:`aget_nodes`."""
        out: list[BaseNode] = self._run(self.aget_nodes(node_ids, filters))
        return out

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Run a ``VectorStoreQuery`` (modes: see the package docstring)."""
        unknown = sorted(set(kwargs) - set(_QUERY_KWARGS))
        if unknown:
            raise InvalidArgumentError(
                f"unknown query argument(s) {', '.join(unknown)}; "
                f"accepted: {', '.join(_QUERY_KWARGS)}"
            )
        if query.node_ids:  # VectorStoreIndex passes [] for stores that keep the text
            raise InvalidArgumentError(
                "VectorStoreQuery.node_ids is not supported by moss (filter on metadata or "
                "doc_ids instead)"
            )
        mode = VectorStoreQueryMode(query.mode)
        text = query.query_str or ""
        vector = query.query_embedding
        if vector is not None and self._target.model_id == CUSTOM and self._normalize:
            vector = unit(vector)
        top_k = query.similarity_top_k
        if mode in (VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.MMR):
            alpha: float | None = 1.0
        elif mode in (VectorStoreQueryMode.HYBRID, VectorStoreQueryMode.SEMANTIC_HYBRID):
            alpha = query.alpha if query.alpha is not None else self._alpha
            top_k = query.hybrid_top_k or top_k
        elif mode in (VectorStoreQueryMode.TEXT_SEARCH, VectorStoreQueryMode.SPARSE):
            alpha, vector = 0.0, None
            top_k = query.sparse_top_k or top_k
        else:
            raise InvalidArgumentError(
                f"query mode {mode.value!r} is not supported by moss; supported: {_MODES}"
            )
        if mode == VectorStoreQueryMode.MMR:
            top_k = max(4 * top_k, 20)  # candidates for the diversity re-ranking
        options = QueryOptions(
            embedding=vector,
            top_k=top_k,
            alpha=alpha,
            filter=moss_filters(query.filters, query.doc_ids),
            fusion=kwargs.get("fusion", self._fusion),
            min_score=kwargs.get("min_score"),
            candidate_depth=kwargs.get("candidate_depth"),
        )
        result = await self._target.query(text, options)
        hits = result.docs
        scores = [d.score for d in hits]
        if mode == VectorStoreQueryMode.MMR and hits:
            if vector is None:
                raise InvalidArgumentError("an MMR query needs query_embedding")
            stored = self._target.engine().vectors_of([d.id for d in hits])
            hits = [d for d in hits if d.id in stored]
            _, picked = get_top_k_mmr_embeddings(
                list(vector),
                [stored[d.id].tolist() for d in hits],
                similarity_top_k=query.similarity_top_k,
                embedding_ids=list(range(len(hits))),
                mmr_threshold=query.mmr_threshold,
            )
            hits = [hits[i] for i in picked]
            scores = [d.score for d in hits]  # moss's cosine, not the MMR objective
        return VectorStoreQueryResult(
            nodes=[from_moss(d) for d in hits], similarities=scores, ids=[d.id for d in hits]
        )

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Sync :meth:`aquery`."""
        out: VectorStoreQueryResult = self._run(self.aquery(query, **kwargs))
        return out


def _no_kwargs(method: str, kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise InvalidArgumentError(f"{method}: unknown argument(s) {', '.join(sorted(kwargs))}")

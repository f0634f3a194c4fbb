"""moss as a Model Context Protocol server: ``search`` (and optionally ``add``/``get``) as tools.

>>> from moss.integrations.mcp import create_server        # doctest: +SKIP
>>> server = create_server(MossClient("default", ""))      # doctest: +SKIP
>>> server.run("stdio")                                     # doctest: +SKIP

``moss mcp`` (:mod:`moss.cli.mcp`) runs this over stdio or streamable HTTP; see
docs/integrations/mcp.md. Why it is shaped like this:

* **The official SDK's ``MCPServer``** (mcp 2.x; FastMCP in 1.x): tools are typed Python
  functions, their JSON schemas and structured outputs derive from the annotations, and the same
  object serves stdio, streamable HTTP and the SDK's in-memory client.
* **Indexes load on first use and stay loaded.** An agent calls ``search`` many times on the same
  index; the first call copies it into memory (:meth:`MossClient.load_index`), later calls are
  in-process queries (well under a millisecond of moss time). A lock per name keeps two concurrent
  first calls from loading twice. Sessions handed to :func:`create_server` (writable, in-process)
  are searched directly under their own names.
* **Errors are tool errors, never crashes.** Every :class:`~moss.errors.MossError` (an unknown
  index, a bad filter, alpha out of range) and a failed job become :class:`ToolError`: the call
  returns ``isError: true`` with moss's one-line message for the model to read, and the server
  keeps serving.
* **Writes are opt-in.** ``add_documents`` and ``get_documents`` exist only with
  ``allow_writes=True`` (``--allow-writes``): a read-only server is the safe default for an
  agent. After a write to a cloud index, a loaded copy is re-checked so the next search sees it.
"""

from __future__ import annotations

from ..errors import MossError

try:
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.types import ToolAnnotations
except ImportError as e:
    raise MossError("moss.integrations.mcp needs the MCP SDK: pip install 'mosslite[mcp]'") from e

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from ..client import MossClient
from ..session import SessionIndex
from ..types import DocumentInfo, GetDocumentsOptions, QueryOptions, SearchResult

__all__ = [
    "DocumentIn",
    "DocumentOut",
    "Hit",
    "IndexSummary",
    "MossTools",
    "SearchOutput",
    "create_server",
]

T = TypeVar("T")


class Hit(BaseModel):
    """One search result."""

    id: str
    text: str
    score: float = Field(description="cosine similarity of query and document, 0 to 1")
    metadata: dict[str, str] = Field(default_factory=dict)


class SearchOutput(BaseModel):
    """The ranked hits of one search."""

    index: str
    query: str
    results: list[Hit]
    time_taken_ms: int | None = None


class IndexSummary(BaseModel):
    """An index the server can search."""

    name: str
    doc_count: int
    model: str
    kind: str = Field(description="'cloud' (a stored index) or 'session' (in-process)")
    loaded: bool


class IndexList(BaseModel):
    """The indexes the server can search."""

    indexes: list[IndexSummary]


class DocumentIn(BaseModel):
    """A document to add (or replace, by id)."""

    id: str
    text: str
    metadata: dict[str, str] | None = None


class DocumentOut(BaseModel):
    """A stored document."""

    id: str
    text: str
    metadata: dict[str, str] = Field(default_factory=dict)


class Documents(BaseModel):
    """Stored documents of an index."""

    index: str
    documents: list[DocumentOut]


class AddResult(BaseModel):
    """What ``add_documents`` did."""

    index: str
    added: int
    doc_count: int


async def _tool_call(work: Awaitable[T]) -> T:
    """``await work``, with every failure a caller can cause turned into a :class:`ToolError`."""
    try:
        return await work
    except MossError as e:
        raise ToolError(str(e)) from e
    except RuntimeError as e:  # a failed job or load (moss raises RuntimeError for those)
        raise ToolError(str(e) or type(e).__name__) from e


class MossTools:
    """The tool implementations over one client (and optional sessions), framework-free.

    :func:`create_server` registers these methods as MCP tools; they are plain coroutines, so
    they can be tested or reused without a transport.
    """

    def __init__(self, client: MossClient, sessions: Sequence[SessionIndex] = ()) -> None:
        self.client = client
        self.sessions: dict[str, SessionIndex] = {}
        for s in sessions:
            if not isinstance(s, SessionIndex):
                raise MossError(f"sessions must be SessionIndex objects, not {type(s).__name__}")
            self.sessions[s.name] = s
        self._loaded: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}

    async def ensure_loaded(self, index: str) -> None:
        """Load the cloud index ``index`` into memory unless it is (first call only)."""
        if index in self._loaded:
            return
        lock = self._locks.setdefault(index, asyncio.Lock())
        async with lock:
            if index not in self._loaded:
                await self.client.load_index(index)
                self._loaded.add(index)

    async def search(
        self,
        index: str,
        query: str,
        top_k: int = 5,
        alpha: float = 0.8,
        filter: dict[str, Any] | None = None,
    ) -> SearchOutput:
        """Hybrid search of ``index`` (see :func:`create_server` for the tool's description)."""
        options = QueryOptions(top_k=top_k, alpha=alpha, filter=filter)
        session = self.sessions.get(index)
        result: SearchResult
        if session is not None:
            result = await session.query(query, options)
        else:
            await self.ensure_loaded(index)
            result = await self.client.query(index, query, options)
        return SearchOutput(
            index=index,
            query=query,
            results=[
                Hit(id=d.id, text=d.text, score=float(d.score), metadata=dict(d.metadata or {}))
                for d in result.docs
            ],
            time_taken_ms=result.time_taken_ms,
        )

    async def list_indexes(self) -> IndexList:
        """The project's stored indexes, then the sessions."""
        out = [
            IndexSummary(
                name=i.name,
                doc_count=i.doc_count,
                model=i.model.id,
                kind="cloud",
                loaded=i.name in self._loaded,
            )
            for i in await self.client.list_indexes()
            if i.name not in self.sessions
        ]
        out += [
            IndexSummary(
                name=s.name, doc_count=s.doc_count, model=s.model_id, kind="session", loaded=True
            )
            for s in self.sessions.values()
        ]
        return IndexList(indexes=out)

    async def get_documents(self, index: str, ids: list[str]) -> Documents:
        """Stored documents of ``index`` by id (unknown ids are skipped)."""
        options = GetDocumentsOptions(doc_ids=list(ids))
        session = self.sessions.get(index)
        if session is not None:
            docs = await session.get_docs(options)
        else:
            docs = await self.client.get_docs(index, options)
        return Documents(
            index=index,
            documents=[
                DocumentOut(id=d.id, text=d.text, metadata=dict(d.metadata or {})) for d in docs
            ],
        )

    async def add_documents(self, index: str, documents: list[DocumentIn]) -> AddResult:
        """Add or replace documents of ``index`` (embedded by the index's model)."""
        docs = [DocumentInfo(d.id, d.text, d.metadata) for d in documents]
        session = self.sessions.get(index)
        if session is not None:
            await session.add_docs(docs)
            return AddResult(index=index, added=len(docs), doc_count=session.doc_count)
        await self.client.add_docs(index, docs)
        if index in self._loaded:
            await self.client.load_index(index)  # re-check: the next search sees the write
        total = (await self.client.get_index(index)).doc_count  # add_docs counts only the batch
        return AddResult(index=index, added=len(docs), doc_count=total)


_SEARCH_DOC = (
    "Search a moss index (hybrid: semantic + keyword) and return the best-matching passages. "
    "index: an index name (see list_indexes). query: natural-language text. top_k: number of "
    "results (default 5). alpha: 1.0 semantic only, 0.0 keyword only (default 0.8). filter: "
    'optional metadata filter, e.g. {"field": "lang", "condition": {"$eq": "en"}} or '
    '{"$and": [...]}; operators $eq $ne $gt $gte $lt $lte $in $nin $near.'
)


def create_server(
    client: MossClient,
    *,
    sessions: Sequence[SessionIndex] = (),
    allow_writes: bool = False,
    name: str = "moss",
) -> MCPServer[Any]:
    """An MCP server whose tools search (and with ``allow_writes``, read and add to) moss indexes.

    Args:
        client: where stored indexes come from (embedded store or a ``moss serve`` URL); they are
            loaded into memory on first search and kept loaded.
        sessions: in-process sessions, searchable (and writable) under their own names.
        allow_writes: also register ``get_documents`` and ``add_documents``.
        name: the server name reported to clients.

    Run it with ``server.run("stdio")`` or ``server.run("streamable-http", host=, port=)``, or
    serve ``server.streamable_http_app()`` with any ASGI server.
    """
    from .._version import __version__

    tools = MossTools(client, sessions)
    server: MCPServer[Any] = MCPServer(
        name,
        version=__version__,
        instructions="Search moss indexes: call list_indexes, then search.",
        log_level="WARNING",
    )
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    async def search(
        index: str,
        query: str,
        top_k: int = 5,
        alpha: float = 0.8,
        filter: dict[str, Any] | None = None,
    ) -> SearchOutput:
        return await _tool_call(tools.search(index, query, top_k, alpha, filter))

    async def list_indexes() -> IndexList:
        return await _tool_call(tools.list_indexes())

    server.add_tool(search, description=_SEARCH_DOC, annotations=read_only)
    server.add_tool(
        list_indexes,
        description="List the indexes this server can search, with document counts and models.",
        annotations=read_only,
    )
    if allow_writes:

        async def get_documents(index: str, ids: list[str]) -> Documents:
            return await _tool_call(tools.get_documents(index, ids))

        async def add_documents(index: str, documents: list[DocumentIn]) -> AddResult:
            return await _tool_call(tools.add_documents(index, documents))

        server.add_tool(
            get_documents,
            description="Fetch stored documents of an index by id (unknown ids are skipped).",
            annotations=read_only,
        )
        server.add_tool(
            add_documents,
            description="Add documents to an index, or replace those with the same id. "
            "Each document: {id, text, metadata (optional, string values)}.",
            annotations=ToolAnnotations(
                read_only_hint=False, destructive_hint=False, idempotent_hint=True
            ),
        )
    return server

"""LiveKit Agents: context injection on each user turn, a search tool, and a per-call session.

>>> from moss.integrations.livekit import MossContext       # doctest: +SKIP
>>> moss_ctx = MossContext(session, top_k=3)                 # doctest: +SKIP
>>> class Assistant(Agent):                                  # doctest: +SKIP
...     def __init__(self):
...         super().__init__(instructions="...", tools=[moss_ctx.search_tool()])
...     async def on_user_turn_completed(self, turn_ctx, new_message):
...         await moss_ctx.on_user_turn_completed(turn_ctx, new_message)

Why it is shaped like this (see docs/integrations/livekit.md):

* **Two ways in, both LiveKit's own.** LiveKit has no retriever interface. Its documented RAG
  hook is ``Agent.on_user_turn_completed(turn_ctx, new_message)``: whatever is added to
  ``turn_ctx`` there reaches the LLM with the user's message. :class:`MossContext` adds one
  message with the hits (as LiveKit's RAG example does, ``role="assistant"`` by default). The
  other way is a ``function_tool`` the LLM calls when it decides to search
  (:meth:`MossContext.search_tool`); it returns the hits as text.
* **One injected message per turn.** The injected item has an id with a fixed prefix; one left in
  the context by an earlier turn is removed before the new one is added.
* **A failed retrieval never breaks the turn.** In the hook a moss error is logged and the turn
  goes on without context; in the tool it becomes LiveKit's ``ToolError``, whose message the
  LLM reads.
* **A per-call session.** :class:`MossCallSession` opens a writable in-process session for one
  call (resuming the stored index when it exists): notes or transcript lines added during the
  call are searchable at once, and :meth:`MossCallSession.push` stores them when the call ends.
"""

from __future__ import annotations

from ..errors import MossError

try:
    from livekit.agents import llm
    from livekit.agents.llm import ChatContext, ChatMessage, ToolError, function_tool
except ImportError as e:
    raise MossError(
        "moss.integrations.livekit needs livekit-agents: pip install 'mosslite[livekit]'"
    ) from e

import logging
import uuid
from typing import Any, Literal

from ..client import MossClient
from ..session import SessionIndex
from ..types import DocumentInfo, PushIndexResult, QueryResultDocumentInfo
from ._context import DEFAULT_HIT_TEMPLATE, DEFAULT_TEMPLATE, Retrieval, format_hits, make_target

__all__ = ["MossCallSession", "MossContext"]

logger = logging.getLogger(__name__)

CONTEXT_ID_PREFIX = "moss_context_"
_TOOL_DESCRIPTION = (
    "Search the knowledge base for passages relevant to a question. Use it when the answer "
    "needs facts you do not have. Argument: query, the question in plain words."
)


class MossContext:
    """Moss retrieval for a LiveKit agent: a turn hook and a search tool.

    Args:
        source: a :class:`~moss.SessionIndex`, or a :class:`~moss.MossClient` whose index
            ``index_name`` is loaded (``await client.load_index(name)`` first).
        index_name: the loaded index (with a client).
        top_k, alpha, filter, min_score: moss query options.
        template: the injected message and the tool's answer; ``{hits}`` is replaced by one line
            per hit.
        hit_template: one hit: ``{rank}``, ``{id}``, ``{text}``, ``{score}``, ``{metadata}``.
        role: the role of the injected message.
    """

    def __init__(
        self,
        source: SessionIndex | MossClient,
        *,
        index_name: str | None = None,
        top_k: int = 3,
        alpha: float | None = None,
        filter: dict[str, Any] | None = None,
        min_score: float | None = None,
        template: str = DEFAULT_TEMPLATE,
        hit_template: str = DEFAULT_HIT_TEMPLATE,
        role: Literal["assistant", "system", "developer", "user"] = "assistant",
    ) -> None:
        self.retrieval = Retrieval(
            make_target(source, index_name),
            top_k=top_k,
            alpha=alpha,
            filter=filter,
            min_score=min_score,
            template=template,
            hit_template=hit_template,
        )
        self.role = role
        self.last_hits: list[QueryResultDocumentInfo] = []
        self.last_latency_s: float | None = None

    async def on_user_turn_completed(self, turn_ctx: ChatContext, new_message: ChatMessage) -> None:
        """Add a message with the hits for ``new_message`` to ``turn_ctx`` (call it from
        ``Agent.on_user_turn_completed``). Nothing is added when nothing matched or the
        message has no text; a moss error is logged and the turn goes on."""
        for item in list(turn_ctx.items):
            if item.id.startswith(CONTEXT_ID_PREFIX):
                turn_ctx.items.remove(item)
        query = (new_message.text_content or "").strip()
        if not query:
            return
        try:
            text, docs, seconds = await self.retrieval.message(query)
        except MossError as e:
            logger.warning("moss retrieval failed, the turn goes on without context: %s", e)
            return
        self.last_hits, self.last_latency_s = docs, seconds
        if text is not None:
            turn_ctx.add_message(
                role=self.role, content=text, id=CONTEXT_ID_PREFIX + uuid.uuid4().hex[:12]
            )

    async def search(self, query: str) -> str:
        """The hits for ``query`` as text (the tool's answer); raises moss errors."""
        docs, seconds = await self.retrieval.search(query)
        self.last_hits, self.last_latency_s = docs, seconds
        if not docs:
            return "No matching passages in the knowledge base."
        return format_hits(docs, self.retrieval.template, self.retrieval.hit_template)

    def search_tool(
        self, *, name: str = "search_knowledge_base", description: str = _TOOL_DESCRIPTION
    ) -> llm.FunctionTool[..., Any]:
        """A LiveKit ``function_tool`` searching with these settings; pass it in an
        ``Agent``'s ``tools``. A moss error becomes a ``ToolError`` the LLM reads."""

        async def search_knowledge_base(query: str) -> str:
            try:
                return await self.search(query)
            except MossError as e:
                raise ToolError(f"search failed: {e}") from e

        tool: llm.FunctionTool[..., Any] = function_tool(
            search_knowledge_base, name=name, description=description
        )
        return tool


class MossCallSession:
    """A writable moss session for one call, pushed to the store at the end of the call.

    Open it with :meth:`open` when the call starts; :meth:`add` and :meth:`add_message` write to
    the in-process session (searchable at once, e.g. by :meth:`context`); :meth:`push` stores
    the index (a cloud index on the embedded store or a ``moss serve`` server) and waits for
    the job. :meth:`close` releases the session (also via ``async with``).
    """

    def __init__(self, session: SessionIndex) -> None:
        self.session = session

    @classmethod
    async def open(
        cls, client: MossClient, index_name: str, model_id: str | None = None
    ) -> MossCallSession:
        """Resume ``index_name`` (or start it empty with ``model_id``, default moss-minilm)."""
        return cls(await client.session(index_name, model_id))

    def context(self, **options: Any) -> MossContext:
        """A :class:`MossContext` over this call's session (``options`` as for it)."""
        return MossContext(self.session, **options)

    async def add(
        self, text: str, *, id: str | None = None, metadata: dict[str, str] | None = None
    ) -> str:
        """Add (or replace, by id) one document; returns its id (random when not given)."""
        doc_id = id if id is not None else uuid.uuid4().hex
        await self.session.add_docs([DocumentInfo(doc_id, text, metadata)])
        return doc_id

    async def add_message(
        self, message: ChatMessage, metadata: dict[str, str] | None = None
    ) -> str | None:
        """Store a chat message's text (id = the message id, metadata ``role``); None when it
        has no text."""
        text = (message.text_content or "").strip()
        if not text:
            return None
        return await self.add(
            text, id=message.id, metadata={"role": message.role, **(metadata or {})}
        )

    async def push(self, *, wait: bool = True, timeout_seconds: float = 600) -> PushIndexResult:
        """Store the session's index; with ``wait``, return once the job finished."""
        result = await self.session.push_index()
        if wait:
            await self.session._client.wait_for_job(
                result.job_id, poll_interval_seconds=0.05, timeout_seconds=timeout_seconds
            )
        return result

    async def close(self) -> None:
        """Release the session (nothing is pushed)."""
        await self.session.close()

    async def __aenter__(self) -> MossCallSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

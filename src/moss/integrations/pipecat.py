"""Pipecat: a frame processor that injects moss search results into the LLM context each turn.

>>> from moss.integrations.pipecat import MossRetrievalProcessor   # doctest: +SKIP
>>> rag = MossRetrievalProcessor(session, top_k=3)                  # doctest: +SKIP
>>> Pipeline([transport.input(), stt, user_aggregator, rag, llm, tts, ...])  # doctest: +SKIP

Why it is shaped like this (see docs/integrations/pipecat.md):

* **A processor between the user aggregator and the LLM**, the pattern of Pipecat's own
  ``Mem0MemoryService``: Pipecat has no retriever interface; each user turn reaches the LLM as an
  ``LLMContextFrame``. The processor reads the last user message, queries moss, puts one
  message with the hits right before that user message, and pushes the frame on. Every other
  frame passes through untouched.
* **One injected message at a time.** The context object lives for the whole call, so the
  message injected on the previous turn is removed before the new one goes in: the LLM sees the
  passages for the question it is answering, and the context does not grow by ``top_k`` passages
  per turn. The same question asked again (a context frame re-sent after a function call) reuses
  the hits instead of querying twice.
* **Latency as Pipecat metrics.** With ``PipelineParams(enable_metrics=True)`` each retrieval
  emits a ``MetricsFrame`` with ``ProcessingMetricsData`` (seconds, processor name), like
  Pipecat's services report theirs; :attr:`MossRetrievalProcessor.last_latency_s` has it too.
* **A failed query never drops a turn.** A moss error (a bad filter, an index not loaded) is
  pushed upstream as a non-fatal ``ErrorFrame`` and the frame goes on without context.
* **Sessions or loaded indexes**, through :mod:`moss.integrations._context`: a
  :class:`~moss.SessionIndex` (writable, in-process) or a client with a loaded index name.
"""

from __future__ import annotations

import warnings

from ..errors import MossError

try:
    with warnings.catch_warnings():  # pipecat.audio.utils imports audioop (Python 3.11-3.12)
        warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
        from pipecat.frames.frames import Frame, LLMContextFrame
        from pipecat.processors.aggregators.llm_context import (
            LLMContext,
            LLMSpecificMessage,
            standard_message_text,
        )
        from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
except ImportError as e:
    raise MossError(
        "moss.integrations.pipecat needs pipecat-ai: pip install 'mosslite[pipecat]'"
    ) from e

from typing import Any, Literal

from ..client import MossClient
from ..session import SessionIndex
from ..types import QueryResultDocumentInfo
from ._context import DEFAULT_HIT_TEMPLATE, DEFAULT_TEMPLATE, Retrieval, make_target

__all__ = ["MossRetrievalProcessor"]


class MossRetrievalProcessor(FrameProcessor):  # type: ignore[misc]
    """Injects the moss hits for the user's last message into each ``LLMContextFrame``.

    Args:
        source: a :class:`~moss.SessionIndex`, or a :class:`~moss.MossClient` whose index
            ``index_name`` is loaded (``await client.load_index(name)`` first).
        index_name: the loaded index (with a client).
        top_k, alpha, filter, min_score: moss query options.
        template: the injected message; ``{hits}`` is replaced by one line per hit.
        hit_template: one hit: ``{rank}``, ``{id}``, ``{text}``, ``{score}``, ``{metadata}``.
        role: the role of the injected message ("system", "developer" or "user").
        name: the processor's name (metrics frames carry it).
    """

    def __init__(
        self,
        source: SessionIndex | MossClient,
        *,
        index_name: str | None = None,
        top_k: int = 5,
        alpha: float | None = None,
        filter: dict[str, Any] | None = None,
        min_score: float | None = None,
        template: str = DEFAULT_TEMPLATE,
        hit_template: str = DEFAULT_HIT_TEMPLATE,
        role: Literal["system", "developer", "user"] = "system",
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
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
        self.last_query: str | None = None
        self.last_hits: list[QueryResultDocumentInfo] = []
        self.last_latency_s: float | None = None
        self._injected: dict[str, Any] | None = None
        self._cached: tuple[str, str | None] | None = None

    def can_generate_metrics(self) -> bool:
        """Yes: the retrieval latency, when the pipeline enables metrics."""
        return True

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Inject context into ``LLMContextFrame``; pass every frame on."""
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            try:
                await self._inject(frame.context)
            except MossError as e:
                await self.push_error(error_msg=f"moss retrieval failed: {e}", exception=e)
        await self.push_frame(frame, direction)

    async def _inject(self, context: LLMContext) -> None:
        messages: list[Any] = list(context.get_messages())
        if self._injected is not None:  # last turn's passages: replaced, not accumulated
            messages = [m for m in messages if m is not self._injected]
            self._injected = None
        at, query = _last_user_message(messages)
        if query is None:
            context.set_messages(messages)
            return
        if self._cached is not None and self._cached[0] == query:
            text = self._cached[1]
        else:
            await self.start_processing_metrics()
            text, docs, seconds = await self.retrieval.message(query)
            await self.stop_processing_metrics()
            self.last_query, self.last_hits, self.last_latency_s = query, docs, seconds
            self._cached = (query, text)
        if text is not None:
            self._injected = {"role": self.role, "content": text}
            messages.insert(at, self._injected)
        context.set_messages(messages)


def _last_user_message(messages: list[Any]) -> tuple[int, str | None]:
    """Index and text of the last user message with text (``(len, None)`` when none)."""
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        if isinstance(m, LLMSpecificMessage) or not isinstance(m, dict):
            continue
        if m.get("role") == "user":
            text = standard_message_text(messages[i]).strip()
            if text:
                return i, text
    return len(messages), None

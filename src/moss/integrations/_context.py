"""Retrieval for voice-agent context injection (Pipecat, LiveKit): one query, one message text.

Both frameworks want the same thing on each user turn: search a session or a loaded index for
what the user just said and hand the LLM the hits as one message. What differs is only how the
message reaches the model (a frame's ``LLMContext`` or a ``ChatContext``), so the query, the
options and the text live here, framework-free, and each adapter is the thin part.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..client import MossClient
from ..errors import InvalidArgumentError
from ..session import SessionIndex
from ..types import QueryOptions, QueryResultDocumentInfo
from ._targets import LoadedTarget, SessionTarget, Target

__all__ = ["DEFAULT_TEMPLATE", "Retrieval", "format_hits", "make_target"]

DEFAULT_TEMPLATE = (
    "Passages from the knowledge base that may help answer the user's last message "
    "(use them if relevant, ignore them otherwise):\n{hits}"
)
DEFAULT_HIT_TEMPLATE = "[{rank}] {text}"


def make_target(source: SessionIndex | MossClient, index_name: str | None) -> Target:
    """A session, or the loaded index ``index_name`` of a client (which must be loaded)."""
    if isinstance(source, SessionIndex):
        if index_name is not None and index_name != source.name:
            raise InvalidArgumentError(
                f"index_name {index_name!r} does not match the session {source.name!r}"
            )
        return SessionTarget(source)
    if isinstance(source, MossClient):
        if not index_name:
            raise InvalidArgumentError("index_name is required with a MossClient")
        return LoadedTarget(source, index_name)
    raise InvalidArgumentError(
        f"expected a SessionIndex or a MossClient, not {type(source).__name__}"
    )


class _Metadata(dict[str, str]):
    """A hit's metadata for ``{metadata[key]}``: a missing key formats as an empty string."""

    def __missing__(self, key: str) -> str:
        return ""


def format_hits(
    docs: list[QueryResultDocumentInfo],
    template: str = DEFAULT_TEMPLATE,
    hit_template: str = DEFAULT_HIT_TEMPLATE,
) -> str:
    """``template`` with ``{hits}`` replaced by one ``hit_template`` line per hit.

    ``hit_template`` may use ``{rank}`` (from 1), ``{id}``, ``{text}``, ``{score}`` and
    ``{metadata}`` (a dict; ``{metadata[lang]}`` is empty for a hit without ``lang``).
    """
    lines = [
        hit_template.format(
            rank=i, id=d.id, text=d.text, score=d.score, metadata=_Metadata(d.metadata or {})
        )
        for i, d in enumerate(docs, 1)
    ]
    return template.replace("{hits}", "\n".join(lines))


@dataclass
class Retrieval:
    """What to search and how: one call per user turn.

    Attributes:
        target: the session or loaded index searched.
        top_k, alpha, filter, min_score: the query options (moss defaults when None).
        template, hit_template: the text of the injected message (see :func:`format_hits`).
    """

    target: Target
    top_k: int = 5
    alpha: float | None = None
    filter: dict[str, Any] | None = None
    min_score: float | None = None
    template: str = DEFAULT_TEMPLATE
    hit_template: str = DEFAULT_HIT_TEMPLATE

    def __post_init__(self) -> None:
        if "{hits}" not in self.template:
            raise InvalidArgumentError("template must contain {hits}")
        try:
            self.hit_template.format(rank=1, id="", text="", score=0.0, metadata=_Metadata())
        except (KeyError, IndexError, ValueError) as e:
            raise InvalidArgumentError(
                f"hit_template may use {{rank}} {{id}} {{text}} {{score}} {{metadata}}: {e}"
            ) from None

    def options(self) -> QueryOptions:
        """The query options."""
        return QueryOptions(
            top_k=self.top_k, alpha=self.alpha, filter=self.filter, min_score=self.min_score
        )

    async def search(self, text: str) -> tuple[list[QueryResultDocumentInfo], float]:
        """The hits for ``text`` and the seconds the query took (wall clock)."""
        start = time.perf_counter()
        result = await self.target.query(text, self.options())
        return list(result.docs), time.perf_counter() - start

    async def message(self, text: str) -> tuple[str | None, list[QueryResultDocumentInfo], float]:
        """The message text for ``text`` (None when nothing matched), the hits, the seconds."""
        docs, seconds = await self.search(text)
        return (
            (format_hits(docs, self.template, self.hit_template) if docs else None),
            docs,
            seconds,
        )

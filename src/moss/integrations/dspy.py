"""DSPy adapter: :class:`MossRM`, a ``dspy.Retrieve`` over a moss session or loaded index.

>>> from moss.integrations.dspy import MossRM  # doctest: +SKIP
>>> rm = MossRM(session, k=3)  # doctest: +SKIP
>>> rm("how long do refunds take").passages  # doctest: +SKIP

Why it is shaped like this:

* **A module, not a global.** DSPy 3 programs hold their retriever as a sub-module
  (``self.retrieve = MossRM(...)``) and call it; ``forward(query_or_queries, k)`` returns a
  ``dspy.Prediction`` with ``passages`` (the texts), plus ``doc_ids``, ``scores`` and
  ``metadata``. Nothing here needs a language model or the network.
* **Sync, like DSPy.** ``forward`` runs moss's async query on a private event-loop thread
  (:mod:`moss.integrations._loop`), so it also works inside a running loop.
* **Same targets as the other adapters** (:mod:`moss.integrations._targets`): a writable
  session or a client's loaded index; the retriever only reads.
"""

from __future__ import annotations

import weakref
from typing import Any, Literal

from ..errors import InvalidArgumentError, MossError

try:
    import dspy
except ImportError as e:
    raise MossError("moss.integrations.dspy needs dspy: pip install 'mosslite[dspy]'") from e

from ..client import MossClient
from ..session import SessionIndex
from ..types import QueryOptions
from ._loop import LoopThread
from ._targets import target_for

__all__ = ["MossRM"]


class MossRM(dspy.Retrieve):  # type: ignore[misc]
    """moss hybrid search as a DSPy retriever.

    Args:
        index: an open :class:`~moss.SessionIndex`; or
        client, index_name: a client and the name of an index loaded in it.
        k: default number of passages.
        alpha: weight of the semantic signal, 0 (keyword only) to 1 (vector only); None: 0.8.
        filter: a moss filter (docs/api.md §3.8) applied to every query.
        fusion: ``"score"`` (moss's default) or ``"rrf"``.

    The index must embed with a built-in model (moss embeds the query text), unless
    ``alpha=0`` (keyword only).
    """

    def __init__(
        self,
        index: SessionIndex | None = None,
        *,
        client: MossClient | None = None,
        index_name: str | None = None,
        k: int = 3,
        alpha: float | None = None,
        filter: dict[str, Any] | None = None,
        fusion: Literal["score", "rrf"] | None = None,
    ) -> None:
        target = target_for("MossRM", index, client, index_name)
        _check_k(k)
        super().__init__(k=k)
        self._target = target
        self.alpha = alpha
        self.filter = filter
        self.fusion: Literal["score", "rrf"] | None = fusion
        self._loop = LoopThread()
        self._finalizer = weakref.finalize(self, LoopThread.stop, self._loop)

    def close(self) -> None:
        """Stop the private loop thread (the session or client stays open: it is yours)."""
        self._finalizer()

    def forward(
        self, query_or_queries: str | list[str], k: int | None = None, **kwargs: Any
    ) -> dspy.Prediction:
        """The top ``k`` passages for a query, or for several (merged, first occurrence kept).

        Keyword arguments ``alpha``, ``filter`` and ``fusion`` override the defaults for this
        call. Returns ``dspy.Prediction(passages, doc_ids, scores, metadata)``.
        """
        k = self.k if k is None else k
        _check_k(k)
        unknown = sorted(set(kwargs) - {"alpha", "filter", "fusion"})
        if unknown:
            raise InvalidArgumentError(
                f"unknown argument(s) {', '.join(unknown)}; accepted: k, alpha, filter, fusion"
            )
        if isinstance(query_or_queries, str):
            queries = [query_or_queries]
        elif isinstance(query_or_queries, list) and all(
            isinstance(q, str) for q in query_or_queries
        ):
            queries = list(query_or_queries)
        else:
            raise InvalidArgumentError("query_or_queries must be a string or a list of strings")
        options = QueryOptions(
            top_k=k,
            alpha=kwargs.get("alpha", self.alpha),
            filter=kwargs.get("filter", self.filter),
            fusion=kwargs.get("fusion", self.fusion),
        )
        seen: dict[str, tuple[str, float, dict[str, str]]] = {}
        for query in queries:
            if not query:
                continue
            result = self._loop.run(self._target.query(query, options))
            for d in result.docs:
                seen.setdefault(d.id, (d.text, d.score, dict(d.metadata or {})))
        hits = list(seen.items())[: k if len(queries) == 1 else len(seen)]
        return dspy.Prediction(
            passages=[text for _, (text, _, _) in hits],
            doc_ids=[doc_id for doc_id, _ in hits],
            scores=[score for _, (_, score, _) in hits],
            metadata=[meta for _, (_, _, meta) in hits],
        )


def _check_k(k: object) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise InvalidArgumentError(f"k must be an int of 0 or more, not {k!r}")

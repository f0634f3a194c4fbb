"""LangChain adapters: a ``VectorStore``, a ``BaseRetriever`` and moss's model as ``Embeddings``.

>>> from moss.integrations.langchain import MossVectorStore   # doctest: +SKIP
>>> store = MossVectorStore.from_texts(["Refunds take 5 days."], index_name="faq")  # doctest: +SKIP
>>> store.similarity_search("how long do refunds take", k=1)  # doctest: +SKIP

Modules: :mod:`.store` (the store), :mod:`.retriever`, :mod:`._documents` (metadata
encoding, filters, :class:`MossEmbeddings`); the session and loaded-index targets are
:mod:`moss.integrations._targets`.

Why it is shaped like this:

* **One store over two moss objects.** :class:`MossVectorStore` wraps a writable
  :class:`~moss.SessionIndex` or a loaded (read-only) index of a :class:`~moss.MossClient`; the
  difference lives in two small target classes, so every search method works on both and writes
  to a loaded index fail with one clear error.
* **Async-first.** The ``a*`` methods are native coroutines over moss's async API and run on the
  caller's loop. The sync methods run the same coroutines on a private event-loop thread, one
  per store (:mod:`moss.integrations._loop`), which works inside a running loop too.
* **Two ways to embed.** With moss's built-in model the store passes text and moss embeds it
  (``embeddings`` is then a :class:`MossEmbeddings` adapter over the same model). With a
  LangChain ``Embeddings`` object (LangChain's standard suite passes a fake one of dimension 6)
  the session uses ``model_id="custom"`` and the store embeds documents and queries itself,
  L2-normalising the vectors so that moss's inner-product ranking is cosine ranking.
* **Lossless metadata.** moss metadata is ``str -> str``, LangChain's is any JSON. The original
  metadata is kept as JSON in the moss ``payload`` and given back exactly; its scalar values are
  also stored as moss metadata (``30`` as ``"30"``), so moss filters work on them.
* **Scores.** ``similarity_search_with_score`` returns moss's score: the clamped cosine of query
  and document, in [0, 1], higher is more similar (0 for every hit of a keyword-only query).
  It already is a relevance score, so ``similarity_search_with_relevance_scores`` returns it as is.
"""

from ...errors import MossError

try:
    import langchain_core  # noqa: F401
except ImportError as e:
    raise MossError(
        "moss.integrations.langchain needs langchain-core: pip install 'mosslite[langchain]'"
    ) from e

from ._documents import MossEmbeddings
from .retriever import MossRetriever
from .store import MossVectorStore

__all__ = ["MossEmbeddings", "MossRetriever", "MossVectorStore"]

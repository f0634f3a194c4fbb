"""Haystack 2.x/3.x adapters: a ``DocumentStore`` and two retriever components.

>>> from moss.integrations.haystack import MossDocumentStore, MossRetriever  # doctest: +SKIP
>>> store = MossDocumentStore.create("faq")  # doctest: +SKIP
>>> MossRetriever(store, top_k=3).run(query="how long do refunds take")  # doctest: +SKIP

Modules: :mod:`.store` (the store), :mod:`.retrievers`, :mod:`._documents` (document
encoding, filter planning, errors); the session and loaded-index targets are
:mod:`moss.integrations._targets`.

Why it is shaped like this:

* **One store over two moss objects**, as in the LangChain and LlamaIndex adapters: a writable
  :class:`~moss.SessionIndex` or a client's loaded (read-only) index; writes to the latter fail
  with one clear error.
* **Async-first.** The ``*_async`` methods (Haystack's ``AsyncDocumentStore`` protocol, and the
  components' ``run_async``) are native coroutines on the caller's loop; the sync ones run the
  same coroutines on a private loop thread per store.
* **Exact filters.** Haystack's filter semantics (``!=`` matching a missing field, dates, None)
  are evaluated by Haystack's own code, after a moss push-down that only narrows the set
  (:mod:`._documents`). A malformed filter raises :class:`MossFilterError`, which is both a moss
  ``InvalidArgumentError`` and a Haystack ``FilterError``.
* **Lossless documents.** meta (any JSON), embedding, blob and sparse embedding travel in the
  moss payload and come back equal to what was written.
"""

from ...errors import MossError

try:
    import haystack  # noqa: F401
except ImportError as e:
    raise MossError(
        "moss.integrations.haystack needs haystack-ai: pip install 'mosslite[haystack]'"
    ) from e

from ._documents import MossDuplicateDocumentError, MossFilterError
from .retrievers import MossEmbeddingRetriever, MossRetriever
from .store import MossDocumentStore

__all__ = [
    "MossDocumentStore",
    "MossDuplicateDocumentError",
    "MossEmbeddingRetriever",
    "MossFilterError",
    "MossRetriever",
]

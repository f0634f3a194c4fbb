"""LlamaIndex adapters: a vector store over moss and moss's model as a LlamaIndex embedding.

>>> from llama_index.core import StorageContext, VectorStoreIndex     # doctest: +SKIP
>>> from moss.integrations.llamaindex import MossEmbedding, MossVectorStore  # doctest: +SKIP
>>> store = MossVectorStore.create("handbook")                       # doctest: +SKIP
>>> index = VectorStoreIndex.from_documents(docs, embed_model=MossEmbedding(),
...     storage_context=StorageContext.from_defaults(vector_store=store))  # doctest: +SKIP

Modules: :mod:`.store` (:class:`MossVectorStore`, a ``BasePydanticVectorStore``) and
:mod:`._nodes` (node encoding, ``MetadataFilters`` translation, :class:`MossEmbedding`).

Why it is shaped like this (the same pattern as :mod:`moss.integrations.langchain`):

* **One store over two moss objects**: a writable session or a client's loaded (read-only)
  index (:mod:`moss.integrations._targets`).
* **Async-first**: ``async_add``, ``aquery``, ``adelete``, ``aget_nodes``, ``adelete_nodes``,
  ``aclear`` are native; the sync methods run them on the store's private loop thread.
* **Embeddings**: LlamaIndex embeds nodes and queries itself (``Settings.embed_model`` or
  ``embed_model=``), so the session normally uses ``model_id="custom"`` and stores the node
  vectors, L2-normalised. Over a session of a built-in model, moss embeds the text itself and
  the store says ``is_embedding_query = False``, so LlamaIndex passes the query text only.
* **Query modes**: ``DEFAULT`` is vector search (alpha 1), ``HYBRID`` fuses vector and BM25 with
  the query's ``alpha`` (LlamaIndex's convention is moss's: 0 keyword, 1 vector), ``TEXT_SEARCH``
  and ``SPARSE`` are BM25 only, ``MMR`` re-ranks the vector hits for diversity.
* **Nodes round-trip**: the node (minus text and embedding) is kept as JSON in the moss payload,
  LlamaIndex's own ``_node_content`` convention; its scalar metadata and ``ref_doc_id`` are moss
  metadata, so ``MetadataFilters`` translate to moss filters.
"""

from ...errors import MossError

try:
    import llama_index.core  # noqa: F401
except ImportError as e:
    raise MossError(
        "moss.integrations.llamaindex needs llama-index-core: pip install 'mosslite[llamaindex]'"
    ) from e

from ._nodes import MossEmbedding
from .store import MossVectorStore

__all__ = ["MossEmbedding", "MossVectorStore"]

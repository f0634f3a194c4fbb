"""Building blocks of :mod:`moss.integrations.haystack`: documents, errors and filters.

Kept apart so that store.py holds the store alone:

* **Documents.** A Haystack ``Document`` carries arbitrary meta, an optional embedding, an
  optional blob and sparse embedding; moss metadata is ``str -> str``. Everything but the id and
  the text is kept as JSON in the moss ``payload`` (``{"haystack": {...}}``) and given back
  exactly (the embedding too, so a float64 vector comes back bit-identical rather than as
  moss's float32 copy). Scalar meta values are also moss metadata, so moss filters see them.
* **Filters.** Haystack's filter grammar (==, !=, >, >=, <, <=, in, not in, AND/OR/NOT, ISO
  dates, None) has semantics moss's filters cannot express exactly: ``!=`` and ``not in``
  match documents lacking the field, ``==`` compares dates across spellings and ``10 == 10.0``,
  and moss stores ``"10"`` and ``10`` alike. So the result is always computed by Haystack's own
  ``document_matches_filter`` in Python, over the documents that a *pushed-down* moss filter
  leaves. The push-down keeps only what provably narrows without losing a match: ``==`` and
  ``in`` on ``meta.<key>`` with strings that cannot be confused with a number, a boolean or a
  date, joined by AND (any subset of the conditions) or OR (all of them). When the push-down is
  the whole filter, the Python pass is skipped (:class:`Plan.exact`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from haystack import Document
from haystack.document_stores.errors import DuplicateDocumentError
from haystack.errors import FilterError
from haystack.utils.filters import document_matches_filter

from ...errors import AlreadyExistsError, InvalidArgumentError
from ...types import DocumentInfo, QueryResultDocumentInfo, coerce_metadata

__all__ = [
    "PAYLOAD_KEY",
    "MossDuplicateDocumentError",
    "MossFilterError",
    "Plan",
    "from_moss",
    "matches",
    "plan_filter",
    "to_moss",
]

PAYLOAD_KEY = "haystack"  # the payload object that holds what moss has no field for
FOREIGN_PAYLOAD_KEY = "moss_payload"  # meta key showing a payload not written by this module


class MossFilterError(InvalidArgumentError, FilterError):
    """A malformed Haystack filter: moss ``InvalidArgumentError`` and Haystack ``FilterError``."""


class MossDuplicateDocumentError(AlreadyExistsError, DuplicateDocumentError):
    """``DuplicatePolicy.FAIL`` met an existing id (also Haystack's ``DuplicateDocumentError``)."""


# ---------------------------------------------------------------------------------- documents


def _flat(doc_id: str, meta: Mapping[str, Any]) -> dict[str, str] | None:
    flat: dict[str, str] = {}
    for key, value in meta.items():
        if not isinstance(key, str) or not isinstance(value, (str, int, float)):
            continue  # None, lists, dicts: kept in the payload only
        if isinstance(value, float) and not math.isfinite(value):
            continue
        try:
            flat.update(coerce_metadata({key: value}) or {})
        except InvalidArgumentError:
            continue  # an integer too large, a lone surrogate: payload only
    return flat or None


def to_moss(doc: object, vector: list[float] | None) -> DocumentInfo:
    """A Haystack ``Document`` as a moss document (``vector`` is what moss indexes, if custom)."""
    if not isinstance(doc, Document):
        raise InvalidArgumentError(
            f"write_documents takes Haystack Document objects, not {type(doc).__name__}"
        )
    extra: dict[str, Any] = {}
    if doc.meta:
        extra["meta"] = doc.meta
    if doc.content is None:
        extra["content"] = None
    if doc.embedding is not None:
        extra["embedding"] = doc.embedding
    if doc.blob is not None:
        extra["blob"] = doc.blob.to_dict()
    if doc.sparse_embedding is not None:
        extra["sparse_embedding"] = doc.sparse_embedding.to_dict()
    payload = None
    if extra:
        try:
            payload = json.dumps({PAYLOAD_KEY: extra}, ensure_ascii=False, separators=(",", ":"))
        except (TypeError, ValueError) as e:
            raise InvalidArgumentError(
                f"document {doc.id!r}: meta must be JSON-serialisable: {e}"
            ) from None
    meta = _flat(doc.id, doc.meta) if doc.meta else None
    return DocumentInfo(doc.id, doc.content or "", meta, vector, payload)


def from_moss(doc: DocumentInfo | QueryResultDocumentInfo, score: float | None = None) -> Document:
    """A moss document (or hit) as the Haystack ``Document`` that was written."""
    payload = doc.payload
    if payload is not None and payload.startswith('{"' + PAYLOAD_KEY + '":'):
        try:
            obj = json.loads(payload)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and len(obj) == 1 and isinstance(obj.get(PAYLOAD_KEY), dict):
            extra = dict(obj[PAYLOAD_KEY])
            extra.setdefault("content", doc.text)
            extra.update(id=doc.id, score=score)
            return Document.from_dict(extra)
    meta: dict[str, Any] = dict(doc.metadata or {})
    if payload is not None:
        meta[FOREIGN_PAYLOAD_KEY] = payload
    return Document(id=doc.id, content=doc.text, meta=meta, score=score)


# ---------------------------------------------------------------------------------- filters

_LOGICAL = ("AND", "OR", "NOT")
_COMPARISON = ("==", "!=", ">", ">=", "<", "<=", "in", "not in")


def _check(node: object) -> None:
    """Raise :class:`MossFilterError` for a malformed filter, before any document is read."""
    if not isinstance(node, dict):
        raise MossFilterError(f"a filter must be a dict, not {type(node).__name__}")
    if "field" in node:
        for key in ("operator", "value"):
            if key not in node:
                raise MossFilterError(f"{key!r} key missing in {node}")
        op = node["operator"]
        if op not in _COMPARISON:
            raise MossFilterError(
                f"unknown comparison operator {op!r}; valid: {', '.join(_COMPARISON)}"
            )
        value = node["value"]
        if op in ("in", "not in") and not isinstance(value, list):
            raise MossFilterError(f"operator {op!r} needs a list value, not {type(value).__name__}")
        if op in (">", ">=", "<", "<=") and isinstance(value, list):
            raise MossFilterError(f"operator {op!r} cannot compare with a list")
        return
    for key in ("operator", "conditions"):
        if key not in node:
            raise MossFilterError(f"{key!r} key missing in {node}")
    if node["operator"] not in _LOGICAL:
        raise MossFilterError(
            f"unknown logical operator {node['operator']!r}; valid: {', '.join(_LOGICAL)}"
        )
    if not isinstance(node["conditions"], list):
        raise MossFilterError("'conditions' must be a list")
    for child in node["conditions"]:
        _check(child)


def _plain_string(value: object) -> bool:
    """A string that moss stores only for itself: not a number's, boolean's or date's spelling."""
    if not isinstance(value, str) or value in ("true", "false"):
        return False
    try:
        coerce_metadata({"k": value})
    except InvalidArgumentError:
        return False  # a lone surrogate: such a value is never moss metadata
    if len(value) >= 8 and "-" in value[:8]:
        return False  # could be an ISO date, which Haystack compares across spellings
    try:
        float(value)
    except ValueError:
        return True
    return False


def _meta_key(field: object) -> str | None:
    if not isinstance(field, str) or not field.startswith("meta."):
        return None
    key = field[5:]
    if not key or "." in key:
        return None  # nested meta: Haystack looks inside dicts, moss metadata is flat
    try:
        coerce_metadata({key: ""})
    except InvalidArgumentError:
        return None
    return key


def _push(node: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
    """(a moss filter every match satisfies, or None; whether it is exactly the filter)."""
    if "field" in node:
        key, op, value = _meta_key(node["field"]), node["operator"], node["value"]
        if key is None:
            return None, False
        if op == "==" and _plain_string(value):
            return {"field": key, "condition": {"$eq": value}}, True
        if op == "in" and all(_plain_string(v) for v in value):
            return {"field": key, "condition": {"$in": list(value)}}, True
        return None, False
    op, children = node["operator"], [_push(c) for c in node["conditions"]]
    if op == "AND":
        kept = [f for f, _ in children if f is not None]
        exact = all(e for _, e in children)
        if not kept:
            return None, exact and not children  # AND of nothing is true; moss: {"$and": []}
        return (kept[0] if len(kept) == 1 else {"$and": kept}), exact
    if op == "OR" and children and all(f is not None for f, _ in children):
        return {"$or": [f for f, _ in children]}, all(e for _, e in children)
    return None, False


@dataclass(frozen=True)
class Plan:
    """How one Haystack filter runs: a moss filter to narrow with, and whether that is all."""

    filters: dict[str, Any] | None  # the Haystack filter (None: every document)
    moss: dict[str, Any] | None  # the pushed-down moss filter (None: no narrowing)
    exact: bool  # True: the moss filter alone is the answer, no Python pass

    def keep(self, docs: list[Document]) -> list[Document]:
        """The documents that match the Haystack filter (all of them when exact)."""
        if self.exact or self.filters is None:
            return docs
        return [d for d in docs if matches(self.filters, d)]


def plan_filter(filters: object) -> Plan:
    """Check a Haystack filter and split it into a moss push-down and a Python remainder."""
    if filters is None or filters == {}:
        return Plan(None, None, True)
    _check(filters)
    assert isinstance(filters, dict)
    moss, exact = _push(filters)
    return Plan(filters, moss, exact)


def matches(filters: dict[str, Any], doc: Document) -> bool:
    """Haystack's own filter semantics; its ``FilterError`` becomes :class:`MossFilterError`."""
    try:
        return document_matches_filter(filters, doc)
    except FilterError as e:
        raise MossFilterError(str(e)) from None

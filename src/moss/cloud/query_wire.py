"""JSON form of a query and its result, for ``POST /v1/indexes/{name}/query``.

A separate module from :mod:`moss.cloud.wire` (documents, snapshots, jobs) because a query is
the one request whose numbers must survive the trip *exactly*: the server-side answer has to
equal a query on a loaded copy (docs/api.md, "query on an unloaded index"). JSON carries Python
floats losslessly (``repr`` round-trips a double), so the query vector is sent as the float64
values the local path would convert to float32, and scores come back as the same doubles.

Decoding is strict (unknown fields, wrong JSON types: ``InvalidArgumentError``) and checks only
types; ranges are checked where the query runs, by the engine, with the messages of a local
query (``top_k must be >= 0, got -1``).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..errors import DESERIALIZATION, InvalidArgumentError, MossError
from ..types import ParentGrouping, QueryOptions, QueryResultDocumentInfo, SearchResult
from ..validation import check_query_options, check_query_text

__all__ = ["QUERY_FIELDS", "query_from_json", "query_to_json", "result_from_json", "result_to_json"]

QUERY_FIELDS = (
    "query",
    "embedding",
    "top_k",
    "alpha",
    "filter",
    "group_by",
    "min_score",
    "candidate_depth",
    "fusion",
)


def _not_json(value: object) -> Any:
    raise InvalidArgumentError(f"filter holds a value JSON cannot carry ({type(value).__name__})")


def query_to_json(text: str, options: QueryOptions | None) -> bytes:
    """The request body for ``text`` and already-checked ``options``."""
    body: dict[str, Any] = {"query": text}
    o = options
    if o is not None:
        if o.embedding is not None:
            body["embedding"] = np.asarray(o.embedding, dtype=np.float64).tolist()
        for field in ("top_k", "candidate_depth"):
            value = getattr(o, field)
            if value is not None:
                body[field] = int(value)
        for field in ("alpha", "min_score"):
            value = getattr(o, field)
            if value is not None:
                body[field] = float(value)
        if o.filter is not None:
            body["filter"] = o.filter
        if o.group_by is not None:
            body["group_by"] = {
                "parent_field": o.group_by.parent_field,
                "order_field": o.group_by.order_field,
            }
        if o.fusion is not None:
            body["fusion"] = o.fusion
    return json.dumps(body, default=_not_json, allow_nan=False).encode("utf-8")


def _number(obj: dict[str, Any], field: str, integer: bool) -> Any:
    value = obj.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "an integer" if integer else "a number"
        raise InvalidArgumentError(f"{field} must be {kind}, not {type(value).__name__}")
    if integer and isinstance(value, float) and value.is_integer():
        return int(value)  # JSON has one number type: 3.0 is the integer 3
    return value


def query_from_json(obj: Any) -> tuple[str, QueryOptions]:
    """``(text, options)`` from a request body (types only; see the module docstring)."""
    if not isinstance(obj, dict):
        raise InvalidArgumentError("the request body must be a JSON object with a 'query'")
    unknown = sorted(set(obj) - set(QUERY_FIELDS))
    if unknown:
        names = ", ".join(repr(u[:40]) for u in unknown[:5])
        raise InvalidArgumentError(f"unknown query field(s) {names}")
    text = check_query_text(obj.get("query"))
    embedding = obj.get("embedding")
    if embedding is not None and (
        not isinstance(embedding, list)
        or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in embedding)
    ):
        raise InvalidArgumentError("embedding must be a list of numbers")
    flt = obj.get("filter")
    if flt is not None and not isinstance(flt, dict):
        raise InvalidArgumentError("filter must be a JSON object")
    group = obj.get("group_by")
    grouping = None
    if group is not None:
        if (
            not isinstance(group, dict)
            or set(group) != {"parent_field", "order_field"}
            or not all(isinstance(v, str) for v in group.values())
        ):
            raise InvalidArgumentError(
                "group_by must be an object with string parent_field and order_field"
            )
        grouping = ParentGrouping(group["parent_field"], group["order_field"])
    fusion = obj.get("fusion")
    if fusion is not None and fusion not in ("score", "rrf"):
        raise InvalidArgumentError(f"fusion must be 'score' or 'rrf', not {fusion!r}")
    options = QueryOptions(
        embedding=embedding,
        top_k=_number(obj, "top_k", True),
        alpha=_number(obj, "alpha", False),
        filter=flt,
        group_by=grouping,
        min_score=_number(obj, "min_score", False),
        candidate_depth=_number(obj, "candidate_depth", True),
        fusion=fusion,
    )
    check_query_options(options)
    return text, options


def result_to_json(result: SearchResult) -> dict[str, Any]:
    """A :class:`SearchResult` as JSON (scores as the engine's doubles)."""
    return {
        "docs": [
            {
                "id": d.id,
                "text": d.text,
                "metadata": d.metadata,
                "score": float(d.score),
                "index_name": d.index_name,
                "payload": d.payload,
            }
            for d in result.docs
        ],
        "query": result.query,
        "index_name": result.index_name,
        "time_taken_ms": result.time_taken_ms,
        "model_id": result.model_id,
    }


def result_from_json(obj: Any) -> SearchResult:
    """The inverse of :func:`result_to_json`; a malformed body is ``DESERIALIZATION``."""
    try:
        docs = [
            QueryResultDocumentInfo(
                id=str(d["id"]),
                text=str(d["text"]),
                metadata=d.get("metadata"),
                score=float(d["score"]),
                index_name=d.get("index_name"),
                payload=d.get("payload"),
            )
            for d in obj["docs"]
        ]
        taken = obj.get("time_taken_ms")
        return SearchResult(
            docs,
            str(obj["query"]),
            obj.get("index_name"),
            int(taken) if taken is not None else None,
            obj.get("model_id"),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise MossError(
            "the moss server sent a malformed query result",
            code=DESERIALIZATION,
            detail=f"{type(e).__name__}: {e}",
        ) from None

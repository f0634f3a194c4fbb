"""The ``components/schemas`` of the OpenAPI document (:mod:`moss.server.openapi`).

Every request and response body the API defines, as the targets of ``#/components/schemas/...``
references: the error envelope, indexes, jobs, documents, the metadata-filter grammar as a
recursive schema, web sources, and the server-side query. Also the index-name and model schemas
that :mod:`moss.server.openapi_paths` uses for parameters.
"""

from __future__ import annotations

import copy
from typing import Any

from ..embedding.base import BUILTIN_MODEL_IDS, CUSTOM_MODEL_ID

__all__ = ["MODEL_SCHEMA", "NAME_SCHEMA", "component_schemas"]

NAME_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": 256,
    # Not blank, not '.' or '..', no '/', no C0/C1 control characters (and at most 256 UTF-8
    # bytes, which JSON Schema cannot say).
    "pattern": r"^(?!\.\.?$)(?=[\s\S]*\S)[^/\x00-\x1f\x7f-\x9f]+$",
}
MODEL_SCHEMA = {"type": "string", "enum": [*BUILTIN_MODEL_IDS, CUSTOM_MODEL_ID]}
_DECIMAL = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_SCALAR = {"type": ["string", "number", "boolean"]}
_NUMERIC = {"anyOf": [{"type": "number"}, {"type": "string", "pattern": f"^{_DECIMAL}$"}]}
_FILTER_SCHEMAS: dict[str, Any] = {
    "Filter": {
        "description": "Metadata filter (docs/api.md §3.8): a leaf {field, condition} or "
        "{$and: [...]} / {$or: [...]}, nested to any depth (64 JSON levels per request).",
        "anyOf": [
            {"$ref": "#/components/schemas/FilterLeaf"},
            {
                "type": "object",
                "properties": {
                    "$and": {"type": "array", "items": {"$ref": "#/components/schemas/Filter"}}
                },
                "required": ["$and"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {
                    "$or": {"type": "array", "items": {"$ref": "#/components/schemas/Filter"}}
                },
                "required": ["$or"],
                "additionalProperties": False,
            },
        ],
    },
    "FilterLeaf": {
        "type": "object",
        "properties": {
            "field": {"type": "string"},
            "condition": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": False,
                "properties": {
                    "$eq": _SCALAR,
                    "$ne": _SCALAR,
                    "$gt": _NUMERIC,
                    "$gte": _NUMERIC,
                    "$lt": _NUMERIC,
                    "$lte": _NUMERIC,
                    "$in": {"type": "array", "items": _SCALAR},
                    "$nin": {"type": "array", "items": _SCALAR},
                    "$near": {
                        "type": "string",
                        "description": "'lat,lng,radius_m' (radius >= 0)",
                        "pattern": rf"^\s*{_DECIMAL}\s*,\s*{_DECIMAL}\s*,\s*\+?"
                        r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*$",
                    },
                },
            },
        },
        "required": ["field", "condition"],
        "additionalProperties": False,
    },
}

_INT62 = 2**62 - 1  # moss.validation refuses integers outside (-2**62, 2**62)


def component_schemas() -> dict[str, Any]:
    """The schemas by name, as ``components/schemas`` lists them."""
    schemas = _schemas()
    # WebSourceOptions as create takes them; WebSourceUpdate, derived, as update takes them.
    options = schemas["WebSourceOptions"]
    options["additionalProperties"] = False  # the server refuses unknown options
    glob = {"type": "string", "pattern": "^/", "maxLength": 512}
    options["properties"]["include_paths"]["items"] = glob
    options["properties"]["exclude_paths"]["items"] = glob
    update = copy.deepcopy(options)
    del update["properties"]["model_id"]  # an index keeps its model
    schemas["WebSourceUpdate"] = update
    del options["properties"]["resync"]  # a new source always crawls
    options["properties"]["refresh_cadence"] = {"enum": ["daily", "weekly", None]}
    options["properties"]["model_id"] = {"enum": list(BUILTIN_MODEL_IDS)}
    _add_query(schemas)
    return schemas


def _add_query(schemas: dict[str, Any]) -> None:
    """The body and the result of ``POST /v1/indexes/{name}/query`` (moss.server.queries)."""
    unit = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
    schemas["QueryRequest"] = {
        "type": "object",
        "description": "The query text and QueryOptions (docs/api.md §3.4); omitted or null "
        "fields take the defaults of a local query (top_k 5, alpha 0.8). Ranges beyond these "
        "types (the embedding's length, the filter's operators) are checked as a local query "
        "checks them.",
        "properties": {
            "query": {"type": "string"},
            "embedding": {"type": ["array", "null"], "items": {"type": "number"}, "minItems": 1},
            "top_k": {"type": ["integer", "null"], "minimum": 0, "maximum": _INT62},
            "alpha": unit,
            "filter": {"anyOf": [{"$ref": "#/components/schemas/Filter"}, {"type": "null"}]},
            "group_by": {
                "type": ["object", "null"],
                "properties": {
                    "parent_field": {"type": "string", "minLength": 1},
                    "order_field": {"type": "string", "minLength": 1},
                },
                "required": ["parent_field", "order_field"],
                "additionalProperties": False,
            },
            "min_score": unit,
            "candidate_depth": {"type": ["integer", "null"], "minimum": 1, "maximum": _INT62},
            "fusion": {"enum": ["score", "rrf", None]},
        },
        "required": ["query"],
        "additionalProperties": False,
    }
    schemas["SearchResult"] = {
        "type": "object",
        "properties": {
            "docs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "text": {"type": "string"},
                        "metadata": {
                            "type": ["object", "null"],
                            "additionalProperties": {"type": "string"},
                        },
                        "score": {"type": "number"},
                        "index_name": {"type": ["string", "null"]},
                        "payload": {"type": ["string", "null"]},
                    },
                    "required": ["id", "text", "score"],
                },
            },
            "query": {"type": "string"},
            "index_name": {"type": ["string", "null"]},
            "time_taken_ms": {"type": ["integer", "null"]},
            "model_id": {"type": ["string", "null"]},
        },
        "required": ["docs", "query"],
    }


def _schemas() -> dict[str, Any]:
    return {
        "Error": {
            "type": "object",
            "properties": {
                "error": {
                    "type": "object",
                    "properties": {
                        "code": {
                            "type": "string",
                            "enum": [
                                "INVALID_ARGUMENT",
                                "NOT_FOUND",
                                "ALREADY_EXISTS",
                                "CONFLICT",
                                "UNAUTHORIZED",
                                "DESERIALIZATION",
                                "MODEL_UNAVAILABLE",
                                "INTERNAL",
                                "QUOTA_EXCEEDED",
                                "RATE_LIMITED",
                            ],
                        },
                        "message": {"type": "string"},
                        "detail": {"type": ["string", "null"]},
                    },
                    "required": ["code", "message"],
                }
            },
        },
        "Index": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "name": {"type": "string"},
                "version": {"type": "string"},
                "status": {"enum": ["NotStarted", "Building", "Ready", "Failed"]},
                "doc_count": {"type": "integer"},
                "created_at": {"type": "string", "format": "date-time"},
                "updated_at": {"type": "string", "format": "date-time"},
                "model": {
                    "type": "object",
                    "properties": {"id": {"type": "string"}, "version": {"type": "string"}},
                },
            },
        },
        "IndexList": {"type": "array", "items": {"$ref": "#/components/schemas/Index"}},
        "Job": {
            "type": "object",
            "properties": {
                "job_id": {"type": "string"},
                "index_name": {"type": "string"},
                "status": {
                    "enum": [
                        "pending_upload",
                        "uploading",
                        "building",
                        "completed",
                        "failed",
                    ]
                },
                "progress": {"type": "number", "minimum": 0, "maximum": 100},
                "current_phase": {"type": ["string", "null"]},
                "error": {"type": ["string", "null"]},
                "doc_count": {"type": ["integer", "null"]},
                "created_at": {"type": "string"},
                "updated_at": {"type": "string"},
                "completed_at": {"type": ["string", "null"]},
            },
        },
        "Document": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "text": {"type": "string"},
                "metadata": {
                    "type": ["object", "null"],
                    "additionalProperties": {"type": "string"},
                },
                "payload": {"type": ["string", "null"]},
            },
        },
        "DocumentList": {
            "type": "array",
            "items": {"$ref": "#/components/schemas/Document"},
        },
        "GetDocumentsOptions": {
            "type": "object",
            "properties": {
                "doc_ids": {"type": ["array", "null"], "items": {"type": "string"}},
                "filter": {"anyOf": [{"$ref": "#/components/schemas/Filter"}, {"type": "null"}]},
                "sort_by": {"type": ["string", "null"]},
                "ascending": {"type": ["boolean", "null"]},
                "group_by": {
                    "type": ["object", "null"],
                    "properties": {
                        "parent_field": {"type": "string"},
                        "order_field": {"type": "string"},
                    },
                    "required": ["parent_field", "order_field"],
                },
            },
        },
        **_FILTER_SCHEMAS,
        "WebSourceOptions": {
            "type": "object",
            "description": "Crawl settings; omitted fields keep their default (create) "
            "or current value (update). Update also takes resync and refresh_cadence "
            "'manual'.",
            "properties": {
                "max_pages": {"type": "integer", "minimum": 1, "maximum": 5000},
                "max_depth": {"type": "integer", "minimum": 0, "maximum": 10},
                "max_documents": {"type": "integer", "minimum": 1, "maximum": 50000},
                "include_paths": {
                    "type": "array",
                    "items": {"type": "string"},
                    "maxItems": 50,
                },
                "exclude_paths": {
                    "type": "array",
                    "items": {"type": "string"},
                    "maxItems": 50,
                },
                "respect_robots": {"type": "boolean"},
                "parse_documents": {"type": "boolean"},
                "refresh_cadence": {"enum": ["daily", "weekly", "manual", None]},
                "model_id": {"type": "string"},
                "resync": {"type": "boolean"},
            },
        },
        "CreateWebSource": {
            "type": "object",
            "properties": {
                "root_url": {"type": "string", "format": "uri"},
                "index_name": NAME_SCHEMA,
                "options": {"$ref": "#/components/schemas/WebSourceOptions"},
            },
            "required": ["root_url", "index_name"],
        },
        "WebSource": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "index_name": {"type": "string"},
                "root_url": {"type": "string"},
                "max_pages": {"type": "integer"},
                "max_documents": {"type": "integer"},
                "max_depth": {"type": "integer"},
                "include_paths": {"type": "array", "items": {"type": "string"}},
                "exclude_paths": {"type": "array", "items": {"type": "string"}},
                "respect_robots": {"type": "boolean"},
                "parse_documents": {"type": "boolean"},
                "refresh_cadence": {"enum": ["daily", "weekly", "manual"]},
                "next_refresh_at": {"type": ["string", "null"]},
                "status": {"enum": ["crawling", "idle", "failed", "removing"]},
                "last_crawled_at": {"type": ["string", "null"]},
                "last_page_count": {"type": "integer"},
                "last_doc_count": {"type": "integer"},
                "last_error_code": {"type": ["string", "null"]},
                "last_error": {"type": ["string", "null"]},
                "last_stats": {"type": ["object", "null"]},
                "created_at": {"type": "string"},
                "updated_at": {"type": "string"},
                "job_id": {
                    "type": ["string", "null"],
                    "description": "create and update only: the crawl started",
                },
            },
        },
        "WebSourceList": {
            "type": "array",
            "items": {"$ref": "#/components/schemas/WebSource"},
        },
        "ResyncResult": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "job_id": {"type": "string"},
                "status": {"type": "string"},
            },
        },
        "DeleteWebSourceResult": {
            "type": "object",
            "properties": {
                "deleted": {"type": "boolean"},
                "id": {"type": "string"},
                "purge_job_id": {"type": ["string", "null"]},
            },
        },
        "DeleteDocs": {
            "type": "object",
            "properties": {"ids": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
            "required": ["ids"],
        },
    }

"""The OpenAPI 3.1 document of the ``moss serve`` REST API (served at ``/openapi.json``).

Written by hand rather than generated: the API is small, and the binary bodies and the error
envelope are described more precisely this way. ``tests/test_server.py`` checks that every route
the app serves is documented here; ``tests/test_openapi_conformance.py`` runs schemathesis against
a live server: what the document calls valid must be accepted, what it calls invalid refused, and
every answer must match it. Hence the exact constraints: index names (pattern and length), the
model enum, the metadata-filter grammar as a recursive schema, every status code the server can
send.
"""

from __future__ import annotations

import copy
from typing import Any

from .._version import __version__
from ..embedding.base import BUILTIN_MODEL_IDS, CUSTOM_MODEL_ID

__all__ = ["openapi_document"]

_BINARY = {
    "application/octet-stream": {
        "schema": {
            "type": "string",
            "format": "binary",
            "description": "The moss snapshot container (moss.snapshot.pack): magic "
            "'MOSSPACK', version, a header with SHA-256, a JSON manifest, then 64-byte aligned "
            "sections (documents as JSON, vectors as little-endian float32, index arrays), "
            "each CRC-32 checked. A document batch is the same container without index "
            "arrays. Anything else is 422 DESERIALIZATION.",
        }
    }
}
_NAME_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": 256,
    # Not blank, not '.' or '..', no '/', no C0/C1 control characters (and at most 256 UTF-8
    # bytes, which JSON Schema cannot say).
    "pattern": r"^(?!\.\.?$)(?=[\s\S]*\S)[^/\x00-\x1f\x7f-\x9f]+$",
}
_MODEL = {"type": "string", "enum": [*BUILTIN_MODEL_IDS, CUSTOM_MODEL_ID]}
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


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def _ok(ref: str, text: str = "OK") -> dict[str, Any]:
    return {"description": text, "content": _json(ref)}


_ERRORS = {
    "400": {
        "description": "INVALID_ARGUMENT (bad name, options or input)",
        "content": _json("Error"),
    },
    "405": {"description": "Method not allowed (see the Allow header)"},
    "408": {"description": "The request body arrived too slowly", "content": _json("Error")},
    "429": {
        "description": "RATE_LIMITED (failed authentications) or QUOTA_EXCEEDED (unfinished "
        "jobs, indexes, concurrent uploads); see Retry-After",
        "content": _json("Error"),
    },
    "503": {"description": "MODEL_UNAVAILABLE, or the connection limit", "content": _json("Error")},
    "401": {"description": "UNAUTHORIZED (bad project credentials)", "content": _json("Error")},
    "404": {"description": "NOT_FOUND (unknown index or job)", "content": _json("Error")},
    "413": {
        "description": "INVALID_ARGUMENT (body over the size limit) or QUOTA_EXCEEDED (storage)",
        "content": _json("Error"),
    },
    "422": {
        "description": "DESERIALIZATION (damaged snapshot or batch)",
        "content": _json("Error"),
    },
    "500": {"description": "INTERNAL", "content": _json("Error")},
}

_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "Index name, percent-encoded (API.md §3.9: not blank, '.' or '..', no '/' or "
    "control characters, at most 256 UTF-8 bytes).",
    "schema": _NAME_SCHEMA,
}


_SOURCE = {
    "name": "source_id",
    "in": "path",
    "required": True,
    "description": "Web source id (ws_...)",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
}


def _op(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": {**responses, **_ERRORS}, **extra}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document as a JSON-ready dict."""
    doc = _document()
    schemas = doc["components"]["schemas"]
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
    _add_query(doc)
    return doc


_INT62 = 2**62 - 1  # moss.validation refuses integers outside (-2**62, 2**62)


def _add_query(doc: dict[str, Any]) -> None:
    """``POST /v1/indexes/{name}/query`` (moss.server.queries): a query run on the server."""
    schemas = doc["components"]["schemas"]
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
    doc["paths"]["/v1/indexes/{name}/query"] = {
        "parameters": [_NAME],
        "post": _op(
            "Run a query on the index's current version (the server loads it into a bounded "
            "cache); the result equals a query on a loaded copy of that version",
            {"200": _ok("SearchResult")},
            requestBody={"required": True, "content": _json("QueryRequest")},
        ),
    }


def _document() -> dict[str, Any]:
    job = {"200": _ok("Job", "The job, status building (or failed)")}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "moss server",
            "version": __version__,
            "description": "Cloud indexes, jobs and snapshot transfer for the moss SDK. Every /v1 "
            "endpoint needs the X-Moss-Project-Id header and 'Authorization: Bearer <key>'. "
            "Snapshots and document batches use the moss snapshot container format.",
        },
        "components": {
            "securitySchemes": {
                "projectKey": {"type": "http", "scheme": "bearer"},
                "projectId": {"type": "apiKey", "in": "header", "name": "X-Moss-Project-Id"},
            },
            "schemas": {
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
                        "filter": {
                            "anyOf": [{"$ref": "#/components/schemas/Filter"}, {"type": "null"}]
                        },
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
                        "index_name": _NAME_SCHEMA,
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
                    "properties": {
                        "ids": {"type": "array", "items": {"type": "string"}, "minItems": 1}
                    },
                    "required": ["ids"],
                },
            },
        },
        "security": [{"projectKey": [], "projectId": []}],
        "paths": {
            "/v1/indexes": {"get": _op("List the project's indexes", {"200": _ok("IndexList")})},
            "/v1/indexes/{name}": {
                "parameters": [_NAME],
                "get": _op("Index info", {"200": _ok("Index")}),
                "delete": _op("Delete the index", {"200": {"description": "Deleted"}}),
                "post": _op(
                    "Create an index from a document batch (a job)",
                    {**job, "409": {"description": "ALREADY_EXISTS", "content": _json("Error")}},
                    parameters=[
                        {"name": "model_id", "in": "query", "required": True, "schema": _MODEL}
                    ],
                    requestBody={"required": True, "content": _BINARY},
                ),
            },
            "/v1/indexes/{name}/snapshot": {
                "parameters": [_NAME],
                "get": _op(
                    "Download the current version (304 if If-None-Match names it)",
                    {
                        "200": {"description": "The version", "content": _BINARY},
                        "304": {"description": "Unchanged"},
                    },
                    parameters=[
                        {
                            "name": "If-None-Match",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string"},
                        }
                    ],
                ),
                "put": _op(
                    "Create or replace the index with a snapshot (a job)",
                    job,
                    requestBody={"required": True, "content": _BINARY},
                ),
            },
            "/v1/indexes/{name}/docs": {
                "parameters": [_NAME],
                "post": _op(
                    "Add or update documents (a job; the batch records whether to upsert)",
                    job,
                    requestBody={"required": True, "content": _BINARY},
                ),
            },
            "/v1/indexes/{name}/docs/delete": {
                "parameters": [_NAME],
                "post": _op(
                    "Delete documents by id (a job)",
                    job,
                    requestBody={"required": True, "content": _json("DeleteDocs")},
                ),
            },
            "/v1/indexes/{name}/docs/query": {
                "parameters": [_NAME],
                "post": _op(
                    "Read stored documents (no embeddings), one page at a time",
                    {
                        "200": {
                            "description": "One page; X-Moss-Next-Cursor names the next",
                            "content": _json("DocumentList"),
                            "headers": {
                                "X-Moss-Next-Cursor": {
                                    "description": "pass as ?cursor= for the next page; absent "
                                    "on the last page",
                                    "schema": {"type": "string"},
                                },
                                "X-Moss-Version": {"schema": {"type": "string"}},
                            },
                        },
                        "409": {
                            "description": "CONFLICT: the cursor is of an older index version",
                            "content": _json("Error"),
                        },
                    },
                    parameters=[
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                        {
                            "name": "cursor",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "pattern": "^[0-9a-f]*:[0-9]{1,12}$"},
                        },
                    ],
                    requestBody={"required": False, "content": _json("GetDocumentsOptions")},
                ),
            },
            "/v1/indexes/{name}/files": {
                "parameters": [_NAME],
                "post": _op(
                    "Create an index from files (PDF, DOCX, Markdown, text, HTML), parsed on the "
                    "server (a job)",
                    {**job, "409": {"description": "ALREADY_EXISTS", "content": _json("Error")}},
                    parameters=[
                        {"name": "model_id", "in": "query", "required": True, "schema": _MODEL},
                        {
                            "name": "parse_options",
                            "in": "query",
                            "required": False,
                            "description": "ParseOptions as JSON",
                            "schema": {"type": "string"},
                        },
                    ],
                    requestBody={
                        "required": True,
                        "description": "MOSSFILES\\x01, u32 LE header length, JSON header "
                        '{"files": [{"name", "content_type", "size"}]}, then the files\' bytes',
                        "content": _BINARY,
                    },
                ),
            },
            "/v1/web-sources": {
                "get": _op(
                    "List web sources, newest first",
                    {"200": _ok("WebSourceList")},
                    parameters=[
                        {
                            "name": "index_name",
                            "in": "query",
                            "required": False,
                            "schema": _NAME_SCHEMA,
                        }
                    ],
                ),
                "post": _op(
                    "Create a web source (and its index if new); starts its first crawl",
                    {
                        "200": _ok("WebSource", "The source, with job_id"),
                        "409": {"description": "ALREADY_EXISTS", "content": _json("Error")},
                    },
                    requestBody={"required": True, "content": _json("CreateWebSource")},
                ),
            },
            "/v1/web-sources/{source_id}": {
                "parameters": [_SOURCE],
                "get": _op("One web source", {"200": _ok("WebSource")}),
                "patch": _op(
                    "Update a web source's settings (resync: true starts a crawl)",
                    {
                        "200": _ok("WebSource", "The source, with job_id"),
                        "409": {
                            "description": "CONFLICT (crawl settings change while crawling)",
                            "content": _json("Error"),
                        },
                    },
                    requestBody={"required": True, "content": _json("WebSourceUpdate")},
                ),
                "delete": _op(
                    "Delete a web source; a job removes its pages (the index is kept)",
                    {"200": _ok("DeleteWebSourceResult")},
                ),
            },
            "/v1/web-sources/{source_id}/resync": {
                "parameters": [_SOURCE],
                "post": _op(
                    "Crawl again (returns the queued crawl if one is pending)",
                    {"200": _ok("ResyncResult")},
                ),
            },
            "/v1/jobs/{job_id}": {
                "get": _op(
                    "Job state; with wait, returns as soon as the job finishes (at most 30 s)",
                    {"200": _ok("Job")},
                    parameters=[
                        {
                            "name": "job_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "wait",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "number", "minimum": 0, "maximum": 30},
                        },
                    ],
                ),
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.1"}},
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness",
                    "security": [],
                    "responses": {"200": {"description": "ok"}},
                }
            },
        },
    }

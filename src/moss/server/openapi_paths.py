"""The ``paths`` of the OpenAPI document (:mod:`moss.server.openapi`): every operation.

Each operation lists its own responses plus the error statuses every endpoint can answer
(``_ERRORS``); bodies refer to :mod:`moss.server.openapi_schemas` by ``$ref``, except the
binary snapshot container, described here.
"""

from __future__ import annotations

from typing import Any

from .openapi_schemas import MODEL_SCHEMA, NAME_SCHEMA

__all__ = ["paths"]

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
    "schema": NAME_SCHEMA,
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


def paths() -> dict[str, Any]:
    """The operations by path, as ``paths`` lists them."""
    table = _paths()
    # The server-side query (moss.server.queries), listed last as it was added last.
    table["/v1/indexes/{name}/query"] = {
        "parameters": [_NAME],
        "post": _op(
            "Run a query on the index's current version (the server loads it into a bounded "
            "cache); the result equals a query on a loaded copy of that version",
            {"200": _ok("SearchResult")},
            requestBody={"required": True, "content": _json("QueryRequest")},
        ),
    }
    return table


def _paths() -> dict[str, Any]:
    job = {"200": _ok("Job", "The job, status building (or failed)")}
    return {
        "/v1/indexes": {"get": _op("List the project's indexes", {"200": _ok("IndexList")})},
        "/v1/indexes/{name}": {
            "parameters": [_NAME],
            "get": _op("Index info", {"200": _ok("Index")}),
            "delete": _op("Delete the index", {"200": {"description": "Deleted"}}),
            "post": _op(
                "Create an index from a document batch (a job)",
                {**job, "409": {"description": "ALREADY_EXISTS", "content": _json("Error")}},
                parameters=[
                    {"name": "model_id", "in": "query", "required": True, "schema": MODEL_SCHEMA}
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
                    {"name": "model_id", "in": "query", "required": True, "schema": MODEL_SCHEMA},
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
                        "schema": NAME_SCHEMA,
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
    }

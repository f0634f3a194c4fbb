"""The OpenAPI 3.1 document of the ``moss serve`` REST API (served at ``/openapi.json``).

Written by hand rather than generated: the API is small, and the binary bodies and the error
envelope are described more precisely this way. ``tests/test_server.py`` checks that every route
the app serves is documented here.
"""

from __future__ import annotations

from typing import Any

from .._version import __version__

__all__ = ["openapi_document"]

_BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def _ok(ref: str, text: str = "OK") -> dict[str, Any]:
    return {"description": text, "content": _json(ref)}


_ERRORS = {
    "400": {
        "description": "INVALID_ARGUMENT (bad name, options or input)",
        "content": _json("Error"),
    },
    "401": {"description": "UNAUTHORIZED (bad project credentials)", "content": _json("Error")},
    "404": {"description": "NOT_FOUND (unknown index or job)", "content": _json("Error")},
    "413": {
        "description": "INVALID_ARGUMENT (body over the size limit)",
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
    "schema": {"type": "string"},
}


def _op(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": {**responses, **_ERRORS}, **extra}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document as a JSON-ready dict."""
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
                                        "UNAUTHORIZED",
                                        "DESERIALIZATION",
                                        "MODEL_UNAVAILABLE",
                                        "INTERNAL",
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
                        "filter": {"type": ["object", "null"]},
                        "sort_by": {"type": ["string", "null"]},
                        "ascending": {"type": ["boolean", "null"]},
                        "group_by": {"type": ["object", "null"]},
                    },
                },
                "DeleteDocs": {
                    "type": "object",
                    "properties": {"ids": {"type": "array", "items": {"type": "string"}}},
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
                        {
                            "name": "model_id",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string"},
                        }
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
                    "Read stored documents (no embeddings)",
                    {"200": _ok("DocumentList")},
                    requestBody={"required": False, "content": _json("GetDocumentsOptions")},
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

"""The OpenAPI 3.1 document of the ``moss serve`` REST API (served at ``/openapi.json``).

Written by hand rather than generated: the API is small, and the binary bodies and the error
envelope are described more precisely this way. ``tests/test_server.py`` checks that every route
the app serves is documented here; ``tests/test_openapi_conformance.py`` runs schemathesis against
a live server: what the document calls valid must be accepted, what it calls invalid refused, and
every answer must match it. Hence the exact constraints: index names (pattern and length), the
model enum, the metadata-filter grammar as a recursive schema, every status code the server can
send.

The document is assembled here from :mod:`moss.server.openapi_schemas` (the component schemas)
and :mod:`moss.server.openapi_paths` (the operations); dependencies point that way only.
"""

from __future__ import annotations

from typing import Any

from .._version import __version__
from .openapi_paths import paths
from .openapi_schemas import component_schemas

__all__ = ["openapi_document"]


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document as a JSON-ready dict."""
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
            "schemas": component_schemas(),
        },
        "security": [{"projectKey": [], "projectId": []}],
        "paths": paths(),
    }

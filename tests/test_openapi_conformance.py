"""The server against its own OpenAPI document, with schemathesis, over real HTTP on 127.0.0.1.

Every operation gets schema-valid and schema-invalid requests (bounded: 10 examples per operation
and mode, derandomized, under 10 s in all; ``MOSS_OPENAPI_EXAMPLES=40`` for a longer run), and every answer is checked: no 5xx, documented status codes,
content types, headers and bodies, invalid input refused, valid input accepted, unsupported
methods answered 405 with a matching ``Allow``, missing credentials refused.

``positive_data_acceptance`` ("schema-valid input must be accepted") is not run where JSON Schema
cannot describe validity: the binary bodies (any bytes are a schema-valid ``format: binary``
string, but only a real snapshot container decodes), and web-source creation and update (whose
root URL must resolve in DNS, unavailable offline, and whose integer settings refuse ``1.0``,
which JSON Schema calls an integer).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi import checks as oc  # noqa: E402

from moss.server.openapi import openapi_document  # noqa: E402
from moss.server.testing import ThreadedServer  # noqa: E402

CHECKS = [
    not_a_server_error,
    oc.status_code_conformance,
    oc.content_type_conformance,
    oc.response_headers_conformance,
    oc.response_schema_conformance,
    oc.negative_data_rejection,
    oc.positive_data_acceptance,
    oc.missing_required_header,
    oc.unsupported_method,
    oc.ignored_auth,
]
EXAMPLES = int(os.environ.get("MOSS_OPENAPI_EXAMPLES", "10"))  # per operation and mode
NO_POSITIVE = {
    ("POST", "/v1/indexes/{name}"),
    ("PUT", "/v1/indexes/{name}/snapshot"),
    ("POST", "/v1/indexes/{name}/docs"),
    ("POST", "/v1/indexes/{name}/files"),
    ("POST", "/v1/web-sources"),
    ("PATCH", "/v1/web-sources/{source_id}"),
}


# Built from the document itself at collection time (no server needed to list the operations).
SCHEMA = schemathesis.openapi.from_dict(openapi_document())
OPERATIONS = {op.label: op for op in (r.ok() for r in SCHEMA.get_all_operations())}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    # Throttling would turn the many deliberate auth failures into 429s.
    with ThreadedServer(tmp_path_factory.mktemp("oas"), auth_failures_burst=10**9) as s:
        yield s


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_api_conforms_to_its_openapi_document(label: str, live: ThreadedServer) -> None:
    op = OPERATIONS[label]
    pid, key = live.project
    headers = {"X-Moss-Project-Id": pid, "Authorization": f"Bearer {key}"}
    excluded = []
    if (op.method.upper(), op.path) in NO_POSITIVE:
        excluded.append(oc.positive_data_acceptance)
    for mode in GenerationMode:

        @given(case=op.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            case.call_and_validate(
                base_url=live.url,
                headers=headers,
                checks=CHECKS,
                excluded_checks=excluded,
                timeout=30,
            )

        try:
            check()
        except Unsatisfiable:
            # Nothing to make invalid (no parameters, no body): only positive cases exist.
            assert mode is GenerationMode.NEGATIVE, label


def test_document_describes_the_hardened_api(live: ThreadedServer) -> None:
    import httpx

    doc = httpx.get(live.url + "/openapi.json").json()
    name = doc["paths"]["/v1/indexes/{name}"]["parameters"][0]["schema"]
    assert name["maxLength"] == 256 and "pattern" in name
    post = doc["paths"]["/v1/indexes/{name}"]["post"]
    assert "custom" in post["parameters"][0]["schema"]["enum"]
    assert (
        "MOSSSNAP"
        in post["requestBody"]["content"]["application/octet-stream"]["schema"]["description"]
    )
    schemas = doc["components"]["schemas"]
    assert schemas["GetDocumentsOptions"]["properties"]["filter"]["anyOf"][0]["$ref"].endswith(
        "/Filter"
    )
    query = doc["paths"]["/v1/indexes/{name}/docs/query"]["post"]
    assert {p["name"] for p in query["parameters"]} == {"limit", "cursor"}
    assert {"408", "413", "429"} <= set(query["responses"])

"""The server against its own OpenAPI document, with schemathesis, over real HTTP on 127.0.0.1.

Every operation gets schema-valid and schema-invalid requests (bounded: 10 examples per operation
and mode, derandomized, under 10 s in all; ``MOSS_OPENAPI_EXAMPLES=40`` for a longer run), and every answer is checked: no 5xx, documented status codes,
content types, headers and bodies, invalid input refused, valid input accepted, unsupported
methods answered 405 with a matching ``Allow``, missing credentials refused.

``positive_data_acceptance`` ("schema-valid input must be accepted") runs on every operation,
with two substitutions where JSON Schema cannot describe validity:

* binary bodies: any bytes are a schema-valid ``format: binary`` string, but only a real
  container decodes, so positive cases send a valid one (a document batch with or without
  vectors as ``model_id`` asks, a snapshot, a ``MOSSFILES`` upload) with the generated
  parameters;
* web-source creation: a root URL must resolve (no DNS offline; and a public host would be
  crawled), so positive cases draw ``root_url`` from ``http://127.0.0.1:9/...`` (the discard
  port: the crawl fails at once) on a server that allows private crawls, only installed models,
  and a fresh index name (an existing index with another model is a 400 no schema can
  foresee). Negative cases use the real document.
"""

from __future__ import annotations

import copy
import functools
import itertools
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from moss import DocumentInfo
from moss.cloud.wire import FilesUpload, encode_batch, file_entry
from moss.snapshot import SnapshotData, pack

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
BINARY = {
    ("POST", "/v1/indexes/{name}"),
    ("PUT", "/v1/indexes/{name}/snapshot"),
    ("POST", "/v1/indexes/{name}/docs"),
    ("POST", "/v1/indexes/{name}/files"),
}
QUERY = ("POST", "/v1/indexes/{name}/query")  # positive bodies made index-independent


@functools.cache
def _installed(model: str) -> bool:
    """Whether ``model`` can embed here (``moss-mediumlm`` needs weights outside the wheel)."""
    from moss.embedding import get_embedder
    from moss.errors import MossError

    try:
        get_embedder(model)
    except MossError:
        return False
    return True


FRESH = itertools.count()


def _offline_document() -> dict[str, Any]:
    """The document with web-source root URLs that need no DNS (positive cases only)."""
    doc = copy.deepcopy(openapi_document())
    root = doc["components"]["schemas"]["CreateWebSource"]["properties"]["root_url"]
    root.clear()
    root.update({"type": "string", "pattern": "^http://127\\.0\\.0\\.1:9/[a-z]{0,8}$"})
    # Only models that can embed here (moss-mediumlm needs weights outside the wheel: a 503).
    model = doc["components"]["schemas"]["WebSourceOptions"]["properties"]["model_id"]
    model["enum"] = [m for m in model["enum"] if _installed(m)]
    return doc


# Built from the document itself at collection time (no server needed to list the operations).
SCHEMA = schemathesis.openapi.from_dict(openapi_document())
OPERATIONS = {op.label: op for op in (r.ok() for r in SCHEMA.get_all_operations())}
OFFLINE = schemathesis.openapi.from_dict(_offline_document())
OFFLINE_OPERATIONS = {op.label: op for op in (r.ok() for r in OFFLINE.get_all_operations())}


def _valid_body(method: str, path: str, query: dict[str, Any] | None) -> bytes:
    """A body the operation accepts (a random name may still be 404: no such index)."""
    if path.endswith("/files"):
        return FilesUpload([file_entry("a.txt", "text/plain", b"hello moss", None)]).to_bytes()
    n = 3
    vectors = np.ones((n, 4), np.float32) + np.arange(n, dtype=np.float32)[:, None]
    docs = [DocumentInfo(f"d{i}", f"text {i}", {"i": str(i)}) for i in range(n)]
    if method == "PUT":
        return pack(
            SnapshotData(
                model_id="custom",
                dimension=4,
                ids=[d.id for d in docs],
                texts=[d.text for d in docs],
                metadata=[d.metadata for d in docs],
                payloads=[None] * n,
                vectors=vectors,
            )
        )
    model = (query or {}).get("model_id", "custom")
    return encode_batch(docs, model, vectors if model == "custom" else None)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    # Throttling would turn the many deliberate auth failures into 429s.
    with ThreadedServer(
        tmp_path_factory.mktemp("oas"), auth_failures_burst=10**9, allow_private_crawl=True
    ) as s:
        yield s


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_api_conforms_to_its_openapi_document(label: str, live: ThreadedServer) -> None:
    op = OPERATIONS[label]
    pid, key = live.project
    headers = {"X-Moss-Project-Id": pid, "Authorization": f"Bearer {key}"}
    key = (op.method.upper(), op.path)
    for mode in GenerationMode:
        positive = mode is GenerationMode.POSITIVE
        source = OFFLINE_OPERATIONS[label] if positive else op

        @given(case=source.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            if positive and key in BINARY:
                model = (case.query or {}).get("model_id")
                if model is not None and not _installed(model):  # a 503 by design, not a bug
                    case.query["model_id"] = "moss-minilm"
                case.body = _valid_body(key[0], key[1], case.query)
            if positive and key == ("POST", "/v1/web-sources") and isinstance(case.body, dict):
                # A new index each time: an existing one with another model (or the custom
                # model, made by another operation) is a 400 that no schema can foresee.
                case.body["index_name"] = f"web-{next(FRESH)}"
            if positive and key == QUERY and isinstance(case.body, dict):
                # A query's validity depends on the index it meets (the embedding's length, a
                # custom model needing a vector): keep text, top_k, filter; rank by keywords.
                kept = {k: v for k, v in case.body.items() if k in ("query", "top_k", "filter")}
                case.body = {**kept, "alpha": 0.0}
            case.call_and_validate(base_url=live.url, headers=headers, checks=CHECKS, timeout=30)

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
        "MOSSPACK"
        in post["requestBody"]["content"]["application/octet-stream"]["schema"]["description"]
    )
    schemas = doc["components"]["schemas"]
    assert schemas["GetDocumentsOptions"]["properties"]["filter"]["anyOf"][0]["$ref"].endswith(
        "/Filter"
    )
    query = doc["paths"]["/v1/indexes/{name}/docs/query"]["post"]
    assert {p["name"] for p in query["parameters"]} == {"limit", "cursor"}
    assert {"408", "413", "429"} <= set(query["responses"])


def test_integral_numbers_are_integers_as_in_the_schema() -> None:
    """JSON has one number type: ``1.0`` is the integer the schema allows; ``1.5`` is not."""
    from moss.errors import InvalidArgumentError
    from moss.sources import update_settings

    changes, _ = update_settings({"max_pages": 5.0, "max_depth": 2})
    assert changes["max_pages"] == 5 and type(changes["max_pages"]) is int
    for bad in (5.5, float("inf"), float("nan"), True):
        with pytest.raises(InvalidArgumentError, match="max_pages must be an integer"):
            update_settings({"max_pages": bad})

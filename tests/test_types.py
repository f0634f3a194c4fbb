"""Result types are constructible as the proprietary SDK's are (code builds them in tests/fakes)."""

from __future__ import annotations

from moss import QueryResultDocumentInfo


def test_query_result_document_info_defaults() -> None:
    hit = QueryResultDocumentInfo(id="a", text="hello", score=0.5)
    assert hit.metadata is None
    assert hit.score == 0.5
    assert QueryResultDocumentInfo("b", "x").score == 0.0
    # positional order unchanged: id, text, metadata, score, index_name, payload
    full = QueryResultDocumentInfo("c", "t", {"k": "v"}, 0.25, "idx", "p")
    assert (full.metadata, full.score, full.index_name, full.payload) == (
        {"k": "v"},
        0.25,
        "idx",
        "p",
    )

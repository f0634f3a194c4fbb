"""The public surface: a sorted __all__ that matches the contract, fast import, typed package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import moss

CONTRACT = {
    "MossClient", "SessionIndex", "JobHandle", "DocumentInfo", "QueryOptions",
    "GetDocumentsOptions", "ParentGrouping", "MutationOptions", "Chunking", "DocsInput",
    "MutationResult", "PushIndexResult", "SearchResult", "QueryResultDocumentInfo", "IndexInfo",
    "ModelRef", "IndexStatus", "IndexStatusValues", "JobStatus", "JobPhase", "JobProgress",
    "JobStatusResponse", "LoadIndexesResult", "MossError", "InvalidArgumentError",
    "AlreadyExistsError", "__version__",
    # create_index_from_files and web sources (moss.sources)
    "ParseFileInput", "ParseOptions", "WebSource", "CrawlStats", "CreateWebSourceOptions",
    "CreateWebSourceResult", "UpdateWebSourceOptions", "UpdateWebSourceResult",
    "ResyncWebSourceResult", "DeleteWebSourceResult",
}  # fmt: skip


def test_all_is_sorted_and_matches_the_contract() -> None:
    assert moss.__all__ == sorted(moss.__all__)
    assert set(moss.__all__) == CONTRACT
    for name in moss.__all__:
        assert hasattr(moss, name), name


def test_public_names_without_underscore_are_exported() -> None:
    public = {n for n in dir(moss) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(moss, n)).__name__ == "module"}
    assert public - modules == CONTRACT - {"__version__"}


def test_py_typed_is_shipped() -> None:
    assert (Path(moss.__file__).parent / "py.typed").exists()


def test_import_is_fast_and_lazy() -> None:
    code = (
        "import sys, time; t = time.perf_counter(); import moss; "
        "dt = time.perf_counter() - t; "
        "heavy = [m for m in ('onnxruntime', 'onnx', 'tokenizers', 'usearch', 'starlette', "
        "'uvicorn', 'httpx') if m in sys.modules]; print(dt, heavy)"
    )
    best = None
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        dt_s, heavy = out.stdout.split(" ", 1)
        assert heavy.strip() == "[]", f"import moss pulled in {heavy}"
        best = float(dt_s) if best is None else min(best, float(dt_s))
    assert best is not None and best < 0.5  # the target (0.3 s) is measured by the benchmark


def test_error_hierarchy() -> None:
    e = moss.InvalidArgumentError("bad")
    assert isinstance(e, moss.MossError) and isinstance(e, ValueError)
    assert isinstance(e, RuntimeError) and e.code == "INVALID_ARGUMENT"
    a = moss.AlreadyExistsError("index 'x' already exists")
    assert a.code == "ALREADY_EXISTS" and "already exists" in str(a)
    m = moss.MossError("gone", code="NOT_FOUND", detail="d")
    assert (m.code, m.detail, str(m)) == ("NOT_FOUND", "d", "gone")


def test_enums_compare_to_strings() -> None:
    assert moss.JobStatus.COMPLETED == "completed" and moss.JobStatus.COMPLETED.value == "completed"
    assert moss.JobPhase.GENERATING_EMBEDDINGS == "generating_embeddings"
    assert moss.IndexStatus.Ready == "Ready" and moss.IndexStatusValues["Failed"] == "Failed"


def test_positional_order_of_input_types() -> None:
    d = moss.DocumentInfo("1", "t", {"a": "b"}, [0.1], "p")
    assert (d.id, d.text, d.metadata, d.embedding, d.payload) == ("1", "t", {"a": "b"}, [0.1], "p")
    q = moss.QueryOptions(
        [1.0], 3, 0.5, {"field": "a", "condition": {"$eq": "b"}}, None, 0.1, 7, "rrf"
    )
    assert (q.top_k, q.alpha, q.min_score, q.candidate_depth, q.fusion) == (3, 0.5, 0.1, 7, "rrf")
    g = moss.GetDocumentsOptions(["1"], None, "k", False)
    assert (g.doc_ids, g.sort_by, g.ascending) == (["1"], "k", False)


def test_results_are_read_only() -> None:
    r = moss.QueryResultDocumentInfo("1", "t", None, 0.5)
    try:
        r.score = 1.0  # type: ignore[misc]
    except AttributeError:
        pass
    else:  # pragma: no cover
        raise AssertionError("result types must be read-only")

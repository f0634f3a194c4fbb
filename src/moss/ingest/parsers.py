"""Bytes in, text out: one entry point per document kind, no I/O of its own.

Every way text enters moss from outside (files and folders, stdin, the ``create_index_from_files``
upload, the web crawler) goes through :func:`parse_bytes`, so a page parses the same whichever road
it took. The result is a :class:`ParsedDocument`: the text (Markdown where the source has
structure, so the chunker can cut at headings), a title and string metadata. Chunking and ids are
:mod:`moss.ingest.documents`' business.

Kinds and the libraries behind them:

* ``markdown`` (``.md .markdown .mdx``): :mod:`moss.ingest._markdown` (front matter through PyYAML,
  JSX/HTML stripped, code fences verbatim).
* ``text`` (``.txt .text .rst``): the decoded text as is.
* ``html`` (``.html .htm``): :mod:`moss.ingest._html` on the standard library's ``html.parser``.
* ``pdf``: ``pypdf`` (pure Python, maintained, text layer only: no OCR); ``docx``: ``python-docx``.
  Both are in the ``parsers`` extra and imported only when such a file is parsed; without them the
  error says ``pip install 'mosslite[parsers]'``.

Limits (each refusal is an :class:`~moss.errors.InvalidArgumentError` naming the file):
:data:`MAX_BYTES` of input (50 MB), :data:`MAX_PAGES` PDF pages, :data:`MAX_TEXT_CHARS` characters
extracted from a PDF or DOCX, and :data:`MAX_DOCX_UNCOMPRESSED` bytes declared by a DOCX's zip
directory (a zip bomb is refused before anything is inflated; pypdf caps stream inflation itself).

Encodings: text and Markdown must be UTF-8 (a UTF-8 BOM is skipped; a UTF-16 BOM is honoured);
anything else is an error that says so, rather than a guess that garbles the index silently. HTML
follows the browser rule instead, because pages from the web often declare another charset: a BOM,
else the ``<meta charset>`` of the first 2 KB, else UTF-8, else windows-1252.
"""

from __future__ import annotations

import codecs
import io
import logging
import re
import zipfile
from dataclasses import dataclass, field
from typing import Optional

from ..errors import InvalidArgumentError, MossError
from ._html import parse_html
from ._markdown import parse_markdown

__all__ = [
    "DOCX_CONTENT_TYPE",
    "KINDS",
    "MAX_BYTES",
    "MAX_DOCX_UNCOMPRESSED",
    "MAX_PAGES",
    "MAX_TEXT_CHARS",
    "PDF_CONTENT_TYPE",
    "ParsedDocument",
    "SUFFIXES",
    "html_links",
    "kind_for",
    "parse_bytes",
]

KINDS = ("markdown", "text", "html", "pdf", "docx")
"""The document kinds :func:`parse_bytes` understands."""

MAX_BYTES = 50 * 1024 * 1024
"""Largest input accepted by :func:`parse_bytes` (and by file discovery), in bytes."""
MAX_PAGES = 10_000
"""Most pages a PDF may have."""
MAX_TEXT_CHARS = 10_000_000
"""Most characters of text a PDF or DOCX may yield (a bound on memory, whatever the file says)."""
MAX_DOCX_UNCOMPRESSED = 256 * 1024 * 1024
"""Most bytes a DOCX's zip entries may declare, all together, before anything is inflated."""

PDF_CONTENT_TYPE = "application/pdf"
DOCX_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
EXTRA_HINT = "pip install 'mosslite[parsers]'"

_BY_CONTENT_TYPE = {
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/mdx": "markdown",
    "text/plain": "text",
    "text/x-rst": "text",
    "text/html": "html",
    "application/xhtml+xml": "html",
    PDF_CONTENT_TYPE: "pdf",
    DOCX_CONTENT_TYPE: "docx",
}
_BY_SUFFIX = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".mdx": "markdown",
    ".txt": "text",
    ".text": "text",
    ".rst": "text",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".docx": "docx",
}
SUFFIXES = tuple(_BY_SUFFIX)
"""File suffixes :func:`kind_for` recognises (lower case)."""

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)


@dataclass(frozen=True)
class ParsedDocument:
    """A parsed document, before chunking.

    Attributes:
        text: plain text; Markdown kept as Markdown (minus JSX/HTML noise) and HTML/DOCX headings
            written as Markdown headings.
        title: front-matter title, ``<title>``, DOCX core title or PDF metadata title (each with a
            first-heading fallback where the format has headings); None if there is none.
        metadata: extra ``str -> str`` metadata (front-matter scalars, an HTML description).
        markdown: True when ``text`` is Markdown (the chunker then cuts at headings).
        pages: for a PDF, the text of each page (``text`` is them joined by blank lines);
            empty for other kinds.
    """

    text: str
    title: Optional[str]
    metadata: dict[str, str]
    markdown: bool
    pages: tuple[str, ...] = field(default=(), repr=False)


def kind_for(name: str, content_type: Optional[str] = None) -> Optional[str]:
    """The document kind of ``name``: by content type first, else by suffix; None if unsupported.

    Content-type parameters (``; charset=...``) and case are ignored; a content type that names no
    supported kind (``application/octet-stream``) falls back to the suffix.

    >>> kind_for("guide.MDX"), kind_for("x", "text/html; charset=utf-8"), kind_for("a.exe")
    ('markdown', 'html', None)
    """
    if content_type:
        kind = _BY_CONTENT_TYPE.get(content_type.split(";", 1)[0].strip().lower())
        if kind is not None:
            return kind
    dot = name.rfind(".")
    if dot <= max(name.rfind("/"), name.rfind("\\")):
        return None
    return _BY_SUFFIX.get(name[dot:].lower())


def parse_bytes(data: bytes, name: str, content_type: Optional[str] = None) -> ParsedDocument:
    """Parse one document's bytes (see the module docstring for kinds, limits and encodings).

    Args:
        data: the file's content.
        name: its name or relative path: picks the kind by suffix and names it in errors.
        content_type: a MIME type that, when it names a supported kind, wins over the suffix.

    Raises:
        InvalidArgumentError: unsupported kind, undecodable text, corrupt, encrypted or oversized
            file; the message names ``name``.
        MossError: a PDF or DOCX while the ``parsers`` extra is not installed.

    >>> parse_bytes(b"---\\ntitle: Refunds\\n---\\nMoney back.", "a.md").title
    'Refunds'
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidArgumentError(f"{name}: data must be bytes, not {type(data).__name__}")
    data = bytes(data)
    kind = kind_for(name, content_type)
    if kind is None:
        shown = f"content type {content_type!r}" if content_type else "file type"
        raise InvalidArgumentError(
            f"unsupported {shown} for {name}; supported: {', '.join(SUFFIXES)}"
        )
    if len(data) > MAX_BYTES:
        raise InvalidArgumentError(
            f"{name} is {len(data) / 2**20:.1f} MB; files over {MAX_BYTES // 2**20} MB are refused"
        )
    if kind == "markdown":
        text, title, meta = parse_markdown(
            _decode_text(data, name), name, mdx=name.lower().endswith(".mdx")
        )
        return ParsedDocument(text, title, meta, True)
    if kind == "text":
        return ParsedDocument(_decode_text(data, name), None, {}, False)
    if kind == "html":
        text, title, meta, _ = parse_html(_decode_html(data))
        return ParsedDocument(text, title, meta, True)
    if kind == "pdf":
        return _parse_pdf(data, name)
    return _parse_docx(data, name)


def html_links(data: bytes, base_url: str) -> tuple[ParsedDocument, list[str]]:
    """Parse an HTML page and return it with the absolute ``http(s)`` links found in it.

    Links are resolved against ``<base href>`` (itself resolved against ``base_url``) or
    ``base_url``, lose their ``#fragment``, and are deduplicated in page order; ``mailto:``,
    ``javascript:`` and other non-web schemes are skipped.

    >>> page, links = html_links(b'<a href="/b#x">B</a><a href="mailto:a@b.c">m</a>', "https://e.com/a/")
    >>> links
    ['https://e.com/b']
    """
    if len(data) > MAX_BYTES:
        raise InvalidArgumentError(
            f"{base_url} is {len(data) / 2**20:.1f} MB; pages over {MAX_BYTES // 2**20} MB "
            "are refused"
        )
    text, title, meta, links = parse_html(_decode_html(bytes(data)), base_url)
    return ParsedDocument(text, title, meta, True), links


# --------------------------------------------------------------------------------------------
# Decoding


def _decode_text(data: bytes, name: str) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as e:
            raise InvalidArgumentError(f"{name} is not valid UTF-16 (byte {e.start})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InvalidArgumentError(
            f"{name} is not valid UTF-8 (byte {e.start}); convert it to UTF-8 first"
        ) from None


def _decode_html(data: bytes) -> str:
    if data.startswith(codecs.BOM_UTF8):
        return data[3:].decode("utf-8", "replace")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", "replace")
    m = _META_CHARSET.search(data[:2048])
    if m is not None:
        try:
            codec = codecs.lookup(m.group(1).decode("ascii"))
        except (LookupError, UnicodeDecodeError):
            codec = None
        if codec is not None and codec.name not in ("utf-16", "utf-16-le", "utf-16-be"):
            return data.decode(codec.name, "replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


# --------------------------------------------------------------------------------------------
# PDF and DOCX (the ``parsers`` extra)


def _missing_extra(what: str, module: str) -> MossError:
    return MossError(f"reading {what} files needs the {module} package: {EXTRA_HINT}")


def _check_text_size(total: int, name: str) -> None:
    if total > MAX_TEXT_CHARS:
        raise InvalidArgumentError(
            f"{name} holds more than {MAX_TEXT_CHARS:,} characters of text; split it first"
        )


def _parse_pdf(data: bytes, name: str) -> ParsedDocument:
    try:
        import pypdf
    except ImportError:
        raise _missing_extra("PDF", "pypdf") from None
    # pypdf logs its repairs of damaged files as warnings; without a handler of the application's
    # they would reach stderr through logging's last resort. A NullHandler keeps them quiet
    # unless the application configures logging (they still propagate to its handlers).
    logger = logging.getLogger("pypdf")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())

    if not data.lstrip()[:5] == b"%PDF-":
        raise InvalidArgumentError(f"{name} is not a PDF file (no %PDF- header)")
    try:
        reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise InvalidArgumentError(f"{name} is an encrypted PDF; decrypt it first")
        count = len(reader.pages)
        if count > MAX_PAGES:
            raise InvalidArgumentError(
                f"{name} has {count:,} pages; PDFs over {MAX_PAGES:,} pages are refused"
            )
        pages: list[str] = []
        total = 0
        for page in reader.pages:
            text = _tidy_pdf_text(page.extract_text() or "")
            total += len(text) + 2
            _check_text_size(total, name)
            pages.append(text)
        title = None
        info = reader.metadata
        if info is not None and isinstance(info.title, str):
            title = " ".join(info.title.split()) or None
    except MossError:
        raise
    except Exception as e:  # pypdf raises many types on damaged input (PdfReadError, KeyError...)
        raise InvalidArgumentError(f"{name} is not a readable PDF: {_reason(e)}") from None
    return ParsedDocument("\n\n".join(p for p in pages if p), title, {}, False, pages=tuple(pages))


def _tidy_pdf_text(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return "\n".join(lines).strip("\n")


def _parse_docx(data: bytes, name: str) -> ParsedDocument:
    try:
        import docx
        from docx.table import Table
        from docx.text.paragraph import Paragraph
    except ImportError:
        raise _missing_extra("DOCX", "python-docx") from None

    _check_docx_zip(data, name)
    try:
        document = docx.Document(io.BytesIO(data))
        blocks: list[str] = []
        total = 0
        first_heading: Optional[str] = None

        def add(block: str) -> None:
            nonlocal total
            blocks.append(block)
            total += len(block) + 2
            _check_text_size(total, name)

        for item in document.iter_inner_content():
            if isinstance(item, Paragraph):
                text = " ".join(item.text.split())
                if not text:
                    continue
                style = item.style.name if item.style is not None else ""
                level = _heading_level(style or "")
                if level:
                    if first_heading is None:
                        first_heading = text
                    text = "#" * level + " " + text
                elif _is_list_style(style or ""):
                    text = "- " + text
                add(text)
            elif isinstance(item, Table):
                for row in item.rows:
                    cells = [" ".join(c.text.split()) for c in row.cells]
                    line = " | ".join(_dedupe_merged(cells))
                    if line.strip(" |"):
                        add(line)
        core_title = document.core_properties.title
    except MossError:
        raise
    except Exception as e:  # BadZipFile, KeyError (missing part), XMLSyntaxError, ValueError...
        raise InvalidArgumentError(f"{name} is not a readable DOCX file: {_reason(e)}") from None
    title = " ".join(core_title.split()) if isinstance(core_title, str) else ""
    return ParsedDocument("\n\n".join(blocks), title or first_heading, {}, True)


def _check_docx_zip(data: bytes, name: str) -> None:
    """Refuse a DOCX whose zip directory declares too much (a zip bomb) before inflating it."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise InvalidArgumentError(f"{name} is not a readable DOCX file: {_reason(e)}") from None
    if len(infos) > 10_000:
        raise InvalidArgumentError(f"{name} has {len(infos):,} zip entries; refused")
    declared = sum(i.file_size for i in infos)
    if declared > MAX_DOCX_UNCOMPRESSED:
        raise InvalidArgumentError(
            f"{name} would inflate to {declared / 2**20:,.0f} MB; DOCX files over "
            f"{MAX_DOCX_UNCOMPRESSED // 2**20} MB uncompressed are refused"
        )


_HEADING_STYLE = re.compile(r"^heading\s*([1-6])$", re.I)


def _heading_level(style: str) -> int:
    if style.lower() == "title":
        return 1
    m = _HEADING_STYLE.match(style.strip())
    return int(m.group(1)) if m else 0


def _is_list_style(style: str) -> bool:
    return style.lower().startswith(("list bullet", "list number", "list paragraph"))


def _dedupe_merged(cells: list[str]) -> list[str]:
    """python-docx repeats a merged cell's text in every grid column it spans: keep it once."""
    out: list[str] = []
    for c in cells:
        if not out or c != out[-1]:
            out.append(c)
    return out


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__

"""Markdown and MDX to clean Markdown: front matter out, JSX/HTML noise out, code kept verbatim.

Documentation sites (Docusaurus, Mintlify, Nextra, Astro) write their pages in MDX: Markdown with
YAML front matter, ``import``/``export`` lines, JSX components (``<Note>``, ``<Card title="x">``)
and ``{/* comments */}``. Indexed as plain text, that markup fills chunks with tokens nobody
searches for and the page title (which lives only in the front matter) is lost. This module turns
such a file into the Markdown a reader sees, which :func:`moss.chunking.chunk_text` then cuts at
headings:

* **Front matter** (a first line ``---`` up to the next ``---`` or ``...`` line) is parsed with
  PyYAML's safe loader (libyaml's C parser when available; imported here, on first use).
  ``title`` becomes the document title; other scalar keys become metadata strings (lists of
  scalars are joined with ``", "``; mappings, nulls and nested lists are skipped). Front matter
  that is not valid YAML is an error naming the file and line; front matter that is not a
  mapping is ignored. When the title comes from the front matter and the body has no level-1
  heading, ``# title`` is put at the top of the text, so every chunk's heading trail starts with
  the page title.
* **Outside fenced code blocks** (``` or ~~~, at any indentation): in MDX, ``import``/``export``
  blocks are dropped (as MDX reads them: from a line starting with ``import``/``export`` to the
  next blank line); HTML comments and
  ``{/* ... */}`` are dropped; every HTML/JSX tag is dropped but the text between tags is kept
  (``<Note>Read this</Note>`` -> ``Read this``), except inside ``script``, ``style`` and ``svg``,
  whose content goes too. A component on its own line with a string ``title`` attribute keeps that
  title as a line of text (``<Card title="Install">`` -> ``Install``). Attribute values may hold
  ``>`` inside quotes or ``{...}``; a ``<`` that does not start a well-formed tag (``a < b``) is
  text. Autolinks ``<https://...>`` keep their URL. Inline code spans are kept verbatim. HTML
  entities are decoded. Lines are left-trimmed (JSX children are usually indented, and indentation
  would hide headings from the chunker) and runs of blank lines become one.
* **Fenced code blocks** are kept byte for byte, only shifted left by their fence's indentation.

Everything here is pure string work on an already decoded ``str``; :mod:`moss.ingest.parsers`
decides encodings and sizes.
"""

from __future__ import annotations

import datetime
import html
import re
from typing import Any, Optional

from ..errors import InvalidArgumentError

__all__ = ["parse_markdown", "strip_markup"]

_FENCE = re.compile(r"^([ \t]*)(`{3,}|~{3,})")
_IMPORT_EXPORT = re.compile(r"^(?:import|export)[ \t{*]")
_ATX_H1 = re.compile(r"^ {0,3}#[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
_ATX_ANY = re.compile(r"^ {0,3}#{1,6}(?:[ \t]|$)")
_SETEXT_H1 = re.compile(r"^ {0,3}=+[ \t]*$")
_TAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]*")
_AUTOLINK = re.compile(r"<((?:https?|ftp|mailto):[^<>\s]*)>", re.IGNORECASE)
_TITLE_ATTR = re.compile(r"""\btitle\s*=\s*(?:"([^"]*)"|'([^']*)'|\{\s*"([^"]*)"\s*\})""")
_BLANKS = re.compile(r"\n{3,}")
_SPECIAL = re.compile(r"[`{<]")  # the only characters where markup can start
_DROP_CONTENT = frozenset({"script", "style", "svg"})


def parse_markdown(
    text: str, name: str, *, mdx: bool = False
) -> tuple[str, Optional[str], dict[str, str]]:
    """Split off the front matter and strip the markup: ``(markdown, title, metadata)``.

    ``mdx`` also drops ``import``/``export`` statements (in plain Markdown such a line is prose).
    ``name`` only names the file in error messages.
    """
    body, front = _split_front_matter(text)
    meta: dict[str, str] = {}
    title: Optional[str] = None
    if front is not None:
        data = _load_yaml(front, name)
        if isinstance(data, dict):
            for key, value in data.items():
                if not isinstance(key, str) or not key:
                    continue
                scalar = _scalar(value)
                if scalar is None:
                    continue
                if key == "title":
                    title = " ".join(scalar.split()) or None
                else:
                    meta[key] = scalar
    clean = strip_markup(body, mdx=mdx)
    if title is None:
        title = _first_h1(clean)
    elif not _has_h1(clean):
        clean = f"# {title}\n\n{clean}" if clean else f"# {title}"
    return clean, title, meta


# --------------------------------------------------------------------------------------------
# Front matter


def _split_front_matter(text: str) -> tuple[str, Optional[str]]:
    """``(body, front matter source or None)``; the same rule as the chunker's."""
    text = text.lstrip("\ufeff")
    if not (text.startswith(("---\n", "---\r\n")) or text.rstrip() == "---"):
        return text, None
    lines = text.splitlines(keepends=True)
    if lines[0].rstrip() != "---":
        return text, None
    for j in range(1, len(lines)):
        if lines[j].rstrip() in ("---", "..."):
            return "".join(lines[j + 1 :]), "".join(lines[1:j])
    return text, None  # no closing line: not front matter


def _load_yaml(source: str, name: str) -> Any:
    import yaml  # PyYAML: a core dependency, imported only when a file has front matter

    # libyaml's parser when the wheel has it (about 10x faster than the pure-Python one); the
    # constructor is SafeLoader's either way, so the result is what ``yaml.safe_load`` gives.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(source, Loader=loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 2})" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise InvalidArgumentError(
            f"{name}: front matter is not valid YAML{where}: {problem}"
        ) from None


def _scalar(value: object) -> Optional[str]:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value).strip()
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, list):
        items = [_scalar(v) for v in value if not isinstance(v, (list, dict))]
        joined = ", ".join(v for v in items if v)
        return joined or None
    return None


# --------------------------------------------------------------------------------------------
# Markup


def strip_markup(text: str, *, mdx: bool = False) -> str:
    """Markdown/MDX body -> Markdown without imports, JSX/HTML tags and comments (see above)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    out: list[str] = []
    prose: list[str] = []
    lines = text.split("\n")
    i = 0
    in_esm = False  # inside an MDX import/export block (it runs to the next blank line)
    while i < len(lines):
        line = lines[i]
        if in_esm:
            in_esm = bool(line.strip())
            i += 1
            continue
        m = _FENCE.match(line)
        if m is not None and not (m.group(2)[0] == "`" and "`" in line[m.end() :]):
            out.append(_clean_prose("\n".join(prose)))
            prose.clear()
            indent, fence = m.group(1), m.group(2)
            block = [line[len(indent) :]]
            i += 1
            while i < len(lines):
                inner = lines[i]
                block.append(inner[len(indent) :] if inner.startswith(indent) else inner.lstrip())
                i += 1
                stripped = inner.strip()
                if stripped and set(stripped) == {fence[0]} and len(stripped) >= len(fence):
                    break
            out.append("\n".join(block))
            continue
        if mdx and _IMPORT_EXPORT.match(line):
            in_esm = True
            i += 1
            continue
        prose.append(line)
        i += 1
    out.append(_clean_prose("\n".join(prose)))
    joined = "\n\n".join(part for part in out if part.strip())
    return _BLANKS.sub("\n\n", joined).strip("\n")


def _clean_prose(text: str) -> str:
    """Strip comments and tags from Markdown prose (no fences in it); keep code spans."""
    if not text.strip():
        return ""
    pieces: list[str] = []
    n = len(text)
    i = 0
    start = 0  # start of the pending plain-text run
    drop_until: Optional[str] = None  # inside <script>/<style>/<svg>: the closing tag name

    def flush(end: int) -> None:
        if drop_until is None and end > start:
            pieces.append(html.unescape(text[start:end]))

    while i < n:
        m_special = _SPECIAL.search(text, i)
        if m_special is None:
            break
        i = m_special.start()
        c = text[i]
        if c == "`" and drop_until is None:
            run_end = i
            while run_end < n and text[run_end] == "`":
                run_end += 1
            run = text[i:run_end]
            close = text.find(run, run_end)
            if close == -1:
                i = run_end
                continue
            flush(i)
            pieces.append(text[i : close + len(run)])
            i = start = close + len(run)
            continue
        if c == "{" and text.startswith("{/*", i):
            close = text.find("*/}", i + 3)
            if close != -1:
                flush(i)
                i = start = close + 3
                continue
        if c == "<":
            if text.startswith("<!--", i):
                close = text.find("-->", i + 4)
                end = n if close == -1 else close + 3
                flush(i)
                i = start = end
                continue
            m = _AUTOLINK.match(text, i)
            if m is not None and drop_until is None:
                flush(i)
                pieces.append(m.group(1))
                i = start = m.end()
                continue
            tag = _scan_tag(text, i)
            if tag is not None:
                end, name, closing, self_closing = tag
                lowered = name.lower()
                if drop_until is not None:
                    if closing and lowered == drop_until:
                        drop_until = None
                    i = start = end
                    continue
                flush(i)
                line_start = text.rfind("\n", 0, i) + 1
                if not closing and not text[line_start:i].strip():
                    m_title = _TITLE_ATTR.search(text, i, end)
                    if m_title is not None and name[:1].isupper():
                        title = next(g for g in m_title.groups() if g is not None)
                        pieces.append(html.unescape(title) + "\n")
                if not closing and not self_closing and lowered in _DROP_CONTENT:
                    drop_until = lowered
                i = start = end
                continue
        i += 1
    flush(n)
    lines = [line.strip() for line in "".join(pieces).split("\n")]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip("\n")


def _scan_tag(text: str, i: int) -> Optional[tuple[int, str, bool, bool]]:
    """If a tag starts at ``text[i] == "<"``: ``(end, name, closing, self_closing)``, else None.

    Handles ``<Name attr="v" x={...} />``, ``</Name>`` and fragments ``<>`` / ``</>``; attribute
    values may contain ``>`` inside quotes or braces. A ``<`` followed by anything else is text.
    """
    n = len(text)
    j = i + 1
    closing = j < n and text[j] == "/"
    if closing:
        j += 1
    if j < n and text[j] == ">":  # fragment
        return j + 1, "", closing, False
    m = _TAG_NAME.match(text, j)
    if m is None:
        return None
    name = m.group()
    j = m.end()
    if j < n and text[j] not in " \t\n/>":
        return None
    depth = 0
    while j < n:
        c = text[j]
        if c in "\"'" and depth == 0:
            close = text.find(c, j + 1)
            if close == -1:
                return None
            j = close + 1
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth < 0:
                return None
        elif c == ">" and depth == 0:
            self_closing = text[j - 1] == "/"
            return j + 1, name, closing, self_closing
        elif c == "<" and depth == 0:
            return None  # "a <b and c <d>": the first "<" is text
        elif c == "\n" and depth == 0 and text.startswith("\n\n", j):
            return None  # a blank line ends any would-be tag
        j += 1
    return None


def _has_h1(markdown: str) -> bool:
    return _first_h1(markdown) is not None


def _first_h1(markdown: str) -> Optional[str]:
    """The first level-1 heading's text (ATX ``#`` or setext ``===``) outside fenced code."""
    fence: Optional[str] = None
    previous = ""
    for line in markdown.split("\n"):
        if fence is not None:
            stripped = line.strip()
            if stripped and set(stripped) == {fence[0]} and len(stripped) >= len(fence):
                fence = None
            previous = ""
            continue
        m = _FENCE.match(line)
        if m is not None:
            fence = m.group(2)
            previous = ""
            continue
        m = _ATX_H1.match(line)
        if m is not None:
            title = m.group(1).strip()
            if title:
                return title
        if _SETEXT_H1.match(line) and previous.strip() and not _ATX_ANY.match(previous):
            return previous.strip()
        previous = line
    return None

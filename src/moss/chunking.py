"""Native chunking: split a text (or a Markdown file) into search-sized chunks (docs/api.md §3.13).

A sentence-embedding model sees a few hundred tokens at most, and a hit is only useful if it points
at a passage rather than a whole file, so long texts are cut into chunks of at most
``chunk_size`` characters. The cutter works in three steps:

1. **Sections.** Plain text is one section. Markdown (``markdown=True``) loses its leading YAML
   front matter (a first line ``---`` up to the next ``---`` or ``...`` line) and is cut at every
   heading of level <= ``markdown_header_depth`` (ATX ``#`` .. ``######``, and setext ``===`` /
   ``---`` underlines of a one-line paragraph). ``#`` lines inside ``` or ~~~ fences are code, not
   headings. A section whose body holds no letter, digit or symbol character (only punctuation or
   whitespace, e.g. a heading followed by ``---``) is skipped. Deeper headings stay in the body as
   text. A chunk never spans two sections.
2. **Pieces.** A section body is cut into pieces that each fit the body capacity ``C`` (below).
   ``"pages"``: a paragraph (blank-line separated) that fits is one piece; an oversized one is cut
   at sentences, an oversized sentence at words, and a word longer than ``C`` is hard-split into
   ``C``-character fragments. ``"sentences"``: every sentence is a piece (same fall-backs). A
   sentence ends at ``.``, ``!``, ``?`` or ``…`` (plus closing quotes/brackets) followed by
   whitespace and a character that is not a lower-case letter (so "e.g. this" stays whole), or at
   a line break. Pieces keep the separator that stood before them: a blank line becomes
   ``"\\n\\n"``, other whitespace with a line break ``"\\n"``, other whitespace ``" "``, and
   nothing between the fragments of a hard-split word.
3. **Packing with overlap.** Pieces are packed greedily, in order, while the body stays within
   ``C``. When the next piece does not fit, the chunk is closed and the next one starts with an
   *overlap*: the longest suffix of the closed chunk's body that (a) starts at a word boundary
   (the start of the body or right after whitespace), and (b) is at most
   ``min(chunk_overlap, C - len(separator) - len(piece))`` characters long, so the overlap always
   counts *within* ``chunk_size`` and shrinks (possibly to nothing) rather than split a piece.
   Then the separator and the piece follow. Overlap never crosses a section boundary.

Chunk text: in Markdown, a section with a heading trail ``T`` (the titles of the open headings of
level <= ``markdown_header_depth``, joined by ``" > "``, e.g. ``"Returns > Refunds"``) yields
chunks ``T + "\\n" + body``; without a trail (plain text, or Markdown before the first heading) the
chunk is the body. ``C = chunk_size - len(T) - 1`` (or ``chunk_size`` without a trail); a trail
longer than ``chunk_size // 2`` is cut to that length (ending in ``…``) so that bodies keep room.
Hence **every chunk is at most ``chunk_size`` characters**, always.

The function is pure and deterministic; it knows nothing about documents or ids (see
``moss.docs_input``).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Optional

from .errors import InvalidArgumentError
from .types import Chunking

__all__ = ["chunk_text"]

_Piece = tuple[str, str]  # (separator before the piece, piece text)

_BLANK_LINES = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)*")
_WS = re.compile(r"\s+")
_SENTENCE_END = re.compile("[.!?\u2026][\"'\u201d\u2019)\\]]{0,3}\\Z")
_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*$")
_ATX_CLOSING = re.compile(r"(?:^|[ \t]+)#+[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-{2,})[ \t]*$")
# A line that cannot be a setext heading's text: list items, quotes, tables, rules, fences.
_NOT_SETEXT_TEXT = re.compile(
    r"^ {0,3}(?:[-*+][ \t]|\d+[.)][ \t]|>|\||`{3,}|~{3,}|[-*_=][-*_= \t]*$)"
)


def chunk_text(text: str, chunking: Chunking, *, markdown: bool = False) -> list[str]:
    """Split ``text`` into chunks of at most ``chunking.effective_chunk_size`` characters.

    See the module docstring for the exact rules (sections, pieces, packing and overlap).

    Args:
        text: the text to split; ``"\\r\\n"`` and ``"\\r"`` line ends are read as ``"\\n"``.
        chunking: sizes and mode; ``None`` fields take their defaults (1200 / 200 / 6).
        markdown: treat ``text`` as Markdown (front matter, heading trails, sections).

    Returns:
        The chunks in text order; ``[]`` for a text without content.

    Raises:
        InvalidArgumentError: ``text`` is not a ``str`` or ``chunking`` is not a ``Chunking``.

    >>> chunk_text("# Returns\\n## Refunds\\nMoney back in 14 days.", Chunking(), markdown=True)
    ['Returns > Refunds\\nMoney back in 14 days.']
    """
    if not isinstance(text, str):
        raise InvalidArgumentError(f"text must be a str, not {type(text).__name__}")
    if not isinstance(chunking, Chunking):
        raise InvalidArgumentError(
            f"chunking must be a moss.Chunking, not {type(chunking).__name__}"
        )
    size = chunking.effective_chunk_size
    overlap = chunking.effective_chunk_overlap
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if markdown:
        sections = _markdown_sections(text, chunking.effective_markdown_header_depth)
    else:
        sections = [("", text)]

    chunks: list[str] = []
    for trail, body in sections:
        if trail and len(trail) > size // 2:
            trail = trail[: size // 2 - 1].rstrip() + "…"
        prefix = trail + "\n" if trail else ""
        capacity = size - len(prefix)
        pieces = _pieces(body, chunking.mode, capacity)
        chunks.extend(prefix + b for b in _pack(pieces, capacity, overlap))
    return chunks


# --------------------------------------------------------------------------------------------
# Pieces


def _pieces(body: str, mode: str, capacity: int) -> list[_Piece]:
    out: list[_Piece] = []
    for para in _BLANK_LINES.split(body):
        para = para.strip()
        if not para:
            continue
        if mode == "pages" and len(para) <= capacity:
            out.append(("\n\n", para))
            continue
        first_sentence = True
        for sep, sentence in _split_sentences(para):
            if first_sentence:
                sep, first_sentence = "\n\n", False
            if len(sentence) <= capacity:
                out.append((sep, sentence))
                continue
            first_word = True
            for wsep, word in _split_words(sentence):
                if first_word:
                    wsep, first_word = sep, False
                if len(word) <= capacity:
                    out.append((wsep, word))
                    continue
                for k in range(0, len(word), capacity):
                    out.append((wsep if k == 0 else "", word[k : k + capacity]))
    return out


def _separator(whitespace: str) -> str:
    return "\n" if "\n" in whitespace else " "


def _split_sentences(para: str) -> list[_Piece]:
    """Cut a stripped paragraph at sentence ends and line breaks (see the module docstring)."""
    out: list[_Piece] = []
    start = 0
    sep = ""
    for m in _WS.finditer(para):
        ws = m.group()
        boundary = "\n" in ws or (
            _SENTENCE_END.search(para, max(0, m.start() - 4), m.start()) is not None
            and not para[m.end()].islower()
        )
        if boundary:
            out.append((sep, para[start : m.start()]))
            start, sep = m.end(), _separator(ws)
    out.append((sep, para[start:]))
    return out


def _split_words(sentence: str) -> list[_Piece]:
    out: list[_Piece] = []
    start = 0
    sep = ""
    for m in _WS.finditer(sentence):
        out.append((sep, sentence[start : m.start()]))
        start, sep = m.end(), _separator(m.group())
    out.append((sep, sentence[start:]))
    return out


# --------------------------------------------------------------------------------------------
# Packing


def _pack(pieces: list[_Piece], capacity: int, overlap: int) -> list[str]:
    bodies: list[str] = []
    current = ""
    for sep, piece in pieces:
        if not current:
            current = piece
        elif len(current) + len(sep) + len(piece) <= capacity:
            current += sep + piece
        else:
            bodies.append(current)
            tail = _tail(current, min(overlap, capacity - len(sep) - len(piece)))
            current = tail + sep + piece if tail else piece
    if current:
        bodies.append(current)
    return bodies


def _tail(body: str, limit: int) -> str:
    """The longest suffix of ``body`` of at most ``limit`` chars that starts at a word boundary."""
    if limit <= 0:
        return ""
    start = len(body) - limit
    if start <= 0:
        return body
    if body[start - 1].isspace() and not body[start].isspace():
        return body[start:]
    m = _WS.search(body, start)
    if m is None or m.end() >= len(body):
        return ""
    return body[m.end() :]


# --------------------------------------------------------------------------------------------
# Markdown


def _strip_front_matter(lines: list[str]) -> list[str]:
    if not lines or lines[0].lstrip("\ufeff").rstrip() != "---":
        return lines
    for j in range(1, len(lines)):
        if lines[j].rstrip() in ("---", "..."):
            return lines[j + 1 :]
    return lines  # no closing line: not front matter


def _heading_title(raw: Optional[str]) -> str:
    if not raw:
        return ""
    return _ATX_CLOSING.sub("", raw).strip()


def _has_content(body: str) -> bool:
    # Letters, digits and pictographs (So: emoji) count; punctuation, whitespace and the
    # markup symbols of rules and tables (|, =, +, ...) do not.
    return any(c.isalnum() or unicodedata.category(c) == "So" for c in body)


def _markdown_sections(text: str, depth: int) -> list[tuple[str, str]]:
    """Cut Markdown into ``(heading trail, body)`` sections with content, in order."""
    lines = _strip_front_matter(text.split("\n"))
    sections: list[tuple[str, str]] = []
    stack: list[tuple[int, str]] = []  # open headings (level, title), levels increasing
    body: list[str] = []
    fence: Optional[str] = None  # the opening fence run while inside a fenced block

    def flush() -> None:
        joined = "\n".join(body).strip("\n")
        if _has_content(joined):
            trail = " > ".join(title for _, title in stack if title)
            sections.append((trail, joined))
        body.clear()

    def open_heading(level: int, title: str) -> None:
        flush()
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))

    for line in lines:
        if fence is not None:
            body.append(line)
            stripped = line.strip()
            if (
                len(line) - len(line.lstrip(" ")) <= 3
                and stripped
                and set(stripped) == {fence[0]}
                and len(stripped) >= len(fence)
            ):
                fence = None
            continue
        m = _FENCE_OPEN.match(line)
        if m is not None and not (m.group(1)[0] == "`" and "`" in line[m.end() :]):
            fence = m.group(1)
            body.append(line)
            continue
        m = _ATX.match(line)
        if m is not None:
            level = len(m.group(1))
            if level <= depth:
                open_heading(level, _heading_title(m.group(2)))
                continue
        m = _SETEXT.match(line)
        if m is not None and body and _is_setext_text(body):
            level = 1 if m.group(1)[0] == "=" else 2
            if level <= depth:
                title = body.pop().strip()
                open_heading(level, title)
                continue
        body.append(line)
    flush()
    return sections


def _is_setext_text(body: list[str]) -> bool:
    """Whether the last body line is a one-line paragraph that an underline turns into a heading."""
    last = body[-1]
    if not last.strip() or len(last) - len(last.lstrip(" ")) > 3:
        return False
    if _NOT_SETEXT_TEXT.match(last) or _ATX.match(last):
        return False
    return len(body) == 1 or not body[-2].strip()

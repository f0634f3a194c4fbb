"""Normalise every accepted ``DocsInput`` form into fresh ``DocumentInfo`` objects (API.md §3.13).

``add_docs`` (and the cloud's ``create_index``) accept documents in many shapes: ``DocumentInfo``
objects, plain dicts, JSON / JSON Lines content, and files. Doing that in one place means the rest
of moss only ever sees ``list[DocumentInfo]`` whose ids are non-empty strings, whose text is a
string, whose metadata is a ``str -> str`` dict and whose payload is a string: "liberal at the
edge, canonical inside". The caller's objects are never mutated; every result is a new object.

Input forms (decided on the *whole* input, never guessed per item):

* ``str`` / ``bytes``: always content, never a file name. Text whose first non-blank character is
  ``[`` is a JSON array of objects; anything else is JSON Lines (blank lines skipped).
* ``os.PathLike`` or an iterable of them: ``.json`` (array), ``.jsonl`` / ``.ndjson`` (lines), and
  ``.txt`` / ``.md`` / ``.markdown``, plus ``.mdx`` / ``.html`` / ``.htm`` (their markup stripped
  by :mod:`moss.ingest.parsers`), which are chunked (natively, or by ``chunker=``) with ids
  ``"{path}#{n}"`` and metadata ``{"parentId": path}``, where ``path`` is ``os.fspath`` of what was
  passed (equal to ``str()`` for ``pathlib`` paths).
* An iterable (list, tuple, generator: it is consumed exactly once) of ``DocumentInfo`` objects,
  or of mappings, but not a mix, and no paths mixed with documents.

Coercions (§3.1): in dict and JSON input an ``int`` id becomes a ``str`` and a non-string payload
becomes compact JSON text; metadata scalars become strings everywhere (``coerce_metadata``).
``DocumentInfo`` input is held to its declared types (``str`` id, text and payload).

Chunking of documents (not files): ``chunker=`` (a synchronous ``str -> list[str]``) or
``chunking=Chunking(...)`` (``moss.chunking.chunk_text``) turns document ``d`` into documents
``"{d.id}#{n}"`` carrying ``d``'s metadata plus ``parentId = d.id`` and ``d``'s payload. A chunk
gets its vector from the model, so a document that brings its own ``embedding`` cannot be chunked,
and neither option may be combined with a custom model.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Optional

from .chunking import chunk_text
from .errors import InvalidArgumentError
from .ingest.parsers import parse_bytes
from .types import Chunking, DocsInput, DocumentInfo, coerce_metadata, has_surrogates, safe_repr
from .validation import check_chunking

__all__ = ["MAX_CHUNK_CHARS", "normalize_docs"]

MAX_CHUNK_CHARS = 2000
"""Longest chunk ``chunker=`` may return (the upper bound of ``Chunking.chunk_size``)."""

_JSON_SUFFIXES = (".json",)
_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_TEXT_SUFFIXES = (".txt",)
_MARKDOWN_SUFFIXES = (".md", ".markdown")
_PARSED_SUFFIXES = (".mdx", ".html", ".htm")  # Markdown out of moss.ingest.parsers
_SUPPORTED = ", ".join(
    _JSON_SUFFIXES + _JSONL_SUFFIXES + _TEXT_SUFFIXES + _MARKDOWN_SUFFIXES + _PARSED_SUFFIXES
)

_Chunker = Callable[[str], list[str]]


def normalize_docs(
    docs: DocsInput,
    *,
    chunker: Optional[_Chunker] = None,
    chunking: Optional[Chunking] = None,
    custom_model: bool = False,
) -> list[DocumentInfo]:
    """Turn any accepted document input into a list of fresh, validated ``DocumentInfo``.

    Args:
        docs: documents in any ``DocsInput`` form (see the module docstring).
        chunker: a synchronous function splitting one text into chunks (each at most 2000 chars).
        chunking: native chunking settings, applied to every document (and to text files).
        custom_model: whether the target index uses caller-supplied vectors; chunking is then
            refused, because chunks cannot carry the caller's vectors.

    Returns:
        The documents (or their chunks) in input order; ``[]`` for an empty input.

    Raises:
        InvalidArgumentError: for any malformed input, unreadable or unsupported file, or invalid
            combination of options; the message names the offending document, line or file.

    >>> normalize_docs('{"id": 7, "text": "hi", "metadata": {"n": 30}, "payload": {"a": 1}}')
    [DocumentInfo(id='7', text='hi', metadata={'n': '30'}, embedding=None, payload='{"a":1}')]
    """
    if chunker is not None and chunking is not None:
        raise InvalidArgumentError("pass chunker or chunking, not both")
    if chunker is not None and not callable(chunker):
        raise InvalidArgumentError(f"chunker must be callable, not {type(chunker).__name__}")
    check_chunking(chunking)
    if custom_model and (chunker is not None or chunking is not None):
        option = "chunker" if chunker is not None else "chunking"
        raise InvalidArgumentError(
            f"{option} cannot be used with a custom-model index: chunks are embedded by the "
            "model and cannot carry the caller's vectors"
        )

    if isinstance(docs, Mapping):
        raise InvalidArgumentError("docs must be a list of documents, not a single dict")
    if isinstance(docs, DocumentInfo):
        raise InvalidArgumentError(
            "docs must be a list of documents, not a single DocumentInfo (wrap it in a list)"
        )
    if isinstance(docs, (str, bytes, bytearray, memoryview)):
        raw = _parse_content(_decode(bytes(docs), "docs") if not isinstance(docs, str) else docs)
        return _chunk_all([_from_mapping(d, i) for i, d in enumerate(raw)], chunker, chunking)
    if isinstance(docs, os.PathLike):
        return _from_paths([docs], chunker, chunking)

    try:
        iterator = iter(docs)
    except TypeError:
        raise InvalidArgumentError(
            "docs must be a list of DocumentInfo or dicts, JSON / JSON Lines content (str or "
            f"bytes), or file paths, not {type(docs).__name__}"
        ) from None
    items = list(iterator)  # consumes a generator exactly once
    if not items:
        return []
    infos: list[DocumentInfo] = []
    mappings: list[Mapping[Any, Any]] = []
    paths: list[os.PathLike[Any]] = []
    for i, item in enumerate(items):
        if isinstance(item, DocumentInfo):
            infos.append(item)
        elif isinstance(item, Mapping):
            mappings.append(item)
        elif isinstance(item, os.PathLike):
            paths.append(item)
        else:
            raise _bad_item(item, i)
    if paths and (infos or mappings):
        raise InvalidArgumentError(
            "docs mixes file paths with documents; pass either paths or documents"
        )
    if infos and mappings:
        raise InvalidArgumentError(
            "docs mixes dicts with DocumentInfo objects; pass one kind of document"
        )
    if paths:
        return _from_paths(paths, chunker, chunking)
    if mappings:
        documents = [_from_mapping(item, i) for i, item in enumerate(mappings)]
    else:
        documents = [_from_document_info(item, i) for i, item in enumerate(infos)]
    return _chunk_all(documents, chunker, chunking)


# --------------------------------------------------------------------------------------------
# Single documents


def _bad_item(item: object, index: int) -> InvalidArgumentError:
    hint = (
        " (a str in a list is neither a document nor a file name: use DocumentInfo, a dict, "
        "or pathlib.Path)"
        if isinstance(item, (str, bytes))
        else ""
    )
    return InvalidArgumentError(
        f"docs item {index} must be a DocumentInfo, a dict or a file path, "
        f"not {type(item).__name__}{hint}"
    )


def _where(index: int, doc_id: object = None) -> str:
    if isinstance(doc_id, str) and doc_id:
        return f"document {index} (id {doc_id!r})"
    return f"document {index}"


def _checked_text(text: object, where: str, field: str = "text") -> str:
    if not isinstance(text, str):
        raise InvalidArgumentError(f"{where}: {field} must be a str, not {type(text).__name__}")
    if has_surrogates(text):
        raise InvalidArgumentError(
            f"{where}: {field} contains a lone surrogate, which cannot be stored as UTF-8"
        )
    return text


def _checked_id(doc_id: object, where: str) -> str:
    if isinstance(doc_id, str) and has_surrogates(doc_id):
        raise InvalidArgumentError(
            f"{where}: id {doc_id!r} contains a lone surrogate, which cannot be stored as UTF-8"
        )
    return doc_id  # type: ignore[return-value]


def _checked_metadata(metadata: object, where: str) -> Optional[dict[str, str]]:
    try:
        return coerce_metadata(metadata)
    except InvalidArgumentError as e:
        raise InvalidArgumentError(f"{where}: {e.message}") from None


def _from_mapping(raw: Mapping[Any, Any], index: int, source: str = "") -> DocumentInfo:
    where = f"{source}{_where(index)}"
    if "id" not in raw:
        raise InvalidArgumentError(f"{where} has no 'id'")
    doc_id = raw["id"]
    if isinstance(doc_id, int) and not isinstance(doc_id, bool):
        if abs(doc_id) >= 10**100:
            raise InvalidArgumentError(f"{where}: id is an integer too large to be an id")
        doc_id = str(doc_id)
    if not isinstance(doc_id, str) or not doc_id:
        raise InvalidArgumentError(
            f"{where}: id must be a non-empty str (or an int), got {safe_repr(doc_id)}"
        )
    _checked_id(doc_id, where)
    where = f"{source}{_where(index, doc_id)}"
    if "text" not in raw:
        raise InvalidArgumentError(f"{where} has no 'text'")
    payload = raw.get("payload")
    if payload is not None and not isinstance(payload, str):
        try:
            payload = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        except RecursionError:
            raise InvalidArgumentError(f"{where}: payload is nested too deeply") from None
        except (TypeError, ValueError) as e:
            raise InvalidArgumentError(f"{where}: payload is not JSON-serialisable: {e}") from None
    if payload is not None:
        _checked_text(payload, where, "payload")
    return DocumentInfo(
        id=doc_id,
        text=_checked_text(raw["text"], where),
        metadata=_checked_metadata(raw.get("metadata"), where),
        embedding=raw.get("embedding"),
        payload=payload,
    )


def _from_document_info(doc: DocumentInfo, index: int) -> DocumentInfo:
    if not isinstance(doc.id, str) or not doc.id:
        raise InvalidArgumentError(
            f"{_where(index)}: id must be a non-empty str, got {safe_repr(doc.id)}"
        )
    _checked_id(doc.id, _where(index))
    where = _where(index, doc.id)
    if doc.payload is not None and not isinstance(doc.payload, str):
        raise InvalidArgumentError(
            f"{where}: payload must be a str or None, not {type(doc.payload).__name__}"
        )
    if doc.payload is not None:
        _checked_text(doc.payload, where, "payload")
    return DocumentInfo(
        id=doc.id,
        text=_checked_text(doc.text, where),
        metadata=_checked_metadata(doc.metadata, where),
        embedding=doc.embedding,
        payload=doc.payload,
    )


# --------------------------------------------------------------------------------------------
# Content (str / bytes / JSON files)


def _decode(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InvalidArgumentError(f"{what} is not valid UTF-8 (byte {e.start})") from None


def _parse_content(text: str, source: str = "docs") -> list[Mapping[Any, Any]]:
    """Parse JSON-array or JSON Lines content into mappings (``source`` names it in errors)."""
    stripped = text.lstrip("\ufeff \t\r\n")
    if not stripped:
        return []
    if stripped.startswith("["):
        return _parse_json_array(text.lstrip("\ufeff"), source)
    return _parse_json_lines(text, source)


def _parse_json_array(text: str, source: str) -> list[Mapping[Any, Any]]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidArgumentError(
            f"{source} is not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}"
        ) from None
    except (RecursionError, ValueError) as e:
        raise _unparsable(source, e) from None
    if isinstance(value, dict):
        raise InvalidArgumentError(
            f"{source} must be a list of documents, not a single dict (a JSON array is expected)"
        )
    if not isinstance(value, list):
        raise InvalidArgumentError(
            f"{source} must be a JSON array of document objects, not {type(value).__name__}"
        )
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidArgumentError(
                f"{source}: array item {i} must be a JSON object, not {type(item).__name__}"
            )
    return value


def _parse_json_lines(text: str, source: str) -> list[Mapping[Any, Any]]:
    out: list[Mapping[Any, Any]] = []
    for lineno, line in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            if _is_single_object(text):
                raise InvalidArgumentError(
                    f"{source} must be a list of documents, not a single dict"
                ) from None
            hint = ""
            if source == "docs" and lineno == 1:
                hint = (
                    " (a str is JSON or JSON Lines content, never a file name; "
                    "pass a pathlib.Path to read a file)"
                )
            raise InvalidArgumentError(
                f"{source} line {lineno} is not valid JSON (column {e.colno}): {e.msg}{hint}"
            ) from None
        except (RecursionError, ValueError) as e:
            raise _unparsable(f"{source} line {lineno}", e) from None
        if not isinstance(value, dict):
            raise InvalidArgumentError(
                f"{source} line {lineno} must be a JSON object, not {type(value).__name__}"
            )
        out.append(value)
    return out


def _is_single_object(text: str) -> bool:
    """Whether ``text`` is one (pretty-printed) JSON object, a common slip for a document list."""
    try:
        return isinstance(json.loads(text.lstrip("\ufeff")), dict)
    except (RecursionError, ValueError):  # JSONDecodeError is a ValueError
        return False


def _unparsable(source: str, error: Exception) -> InvalidArgumentError:
    """JSON that the parser refuses for its shape, not its syntax: nested too deeply for the
    recursive decoder, or an integer of more than 4300 digits."""
    if isinstance(error, RecursionError):
        return InvalidArgumentError(f"{source} is JSON nested too deeply to read")
    return InvalidArgumentError(f"{source} cannot be read as JSON: {error}")


# --------------------------------------------------------------------------------------------
# Files


def _from_paths(
    paths: Iterable[os.PathLike[Any]], chunker: Optional[_Chunker], chunking: Optional[Chunking]
) -> list[DocumentInfo]:
    out: list[DocumentInfo] = []
    for path in paths:
        name = _path_name(path)
        suffix = os.path.splitext(name)[1].lower()
        if suffix in _JSON_SUFFIXES or suffix in _JSONL_SUFFIXES:
            text = _read(name)
            if suffix in _JSON_SUFFIXES:
                if not text.strip():
                    raw: list[Mapping[Any, Any]] = []
                else:
                    raw = _parse_json_array(text, name)
            else:
                raw = _parse_json_lines(text, name)
            documents = [_from_mapping(d, i, f"{name}: ") for i, d in enumerate(raw)]
            out.extend(_chunk_all(documents, chunker, chunking))
        elif suffix in _TEXT_SUFFIXES or suffix in _MARKDOWN_SUFFIXES + _PARSED_SUFFIXES:
            if suffix in _PARSED_SUFFIXES:
                text = parse_bytes(_read_bytes(name), name).text
            else:
                text = _read(name)
            if chunker is not None:
                chunks = _call_chunker(chunker, text, name)
            else:
                chunks = chunk_text(
                    text,
                    chunking if chunking is not None else Chunking(),
                    markdown=suffix not in _TEXT_SUFFIXES,
                )
            out.extend(
                DocumentInfo(id=f"{name}#{n}", text=chunk, metadata={"parentId": name})
                for n, chunk in enumerate(chunks)
            )
        else:
            shown = repr(suffix) if suffix else "no extension"
            raise InvalidArgumentError(
                f"unsupported file type ({shown}) for {name}; supported: {_SUPPORTED}"
            )
    return out


def _path_name(path: os.PathLike[Any]) -> str:
    try:
        name = os.fsdecode(os.fspath(path))
    except TypeError as e:
        raise InvalidArgumentError(f"docs holds a path object that is not a path: {e}") from None
    if has_surrogates(name):
        raise InvalidArgumentError(
            f"file name {name!r} is not valid UTF-8; it cannot become a document id"
        )
    return name


def _read(name: str) -> str:
    return _decode(_read_bytes(name), name)


def _read_bytes(name: str) -> bytes:
    try:
        with open(name, "rb") as f:
            return f.read()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise InvalidArgumentError(f"cannot read {name}: {reason}") from None
    except ValueError:  # a NUL character in the name
        raise InvalidArgumentError(f"cannot read {name!r}: the name contains a NUL") from None


# --------------------------------------------------------------------------------------------
# Chunking of documents


def _call_chunker(chunker: _Chunker, text: str, owner: str) -> list[str]:
    result: object = chunker(text)
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()  # never awaited on purpose: avoid "coroutine was never awaited"
        raise InvalidArgumentError("chunker must be synchronous; it returned an awaitable")
    if not isinstance(result, (list, tuple)) or not all(isinstance(c, str) for c in result):
        raise InvalidArgumentError(
            f"chunker must return a list of str; for {owner!r} it returned {_describe(result)}"
        )
    for n, chunk in enumerate(result):
        if has_surrogates(chunk):
            raise InvalidArgumentError(
                f"chunk {n} of {owner!r} contains a lone surrogate, which cannot be stored"
            )
        if len(chunk) > MAX_CHUNK_CHARS:
            raise InvalidArgumentError(
                f"chunk {n} of {owner!r} is {len(chunk)} characters long; "
                f"the limit is {MAX_CHUNK_CHARS}"
            )
    return list(result)


def _describe(value: object) -> str:
    if isinstance(value, (list, tuple)):
        bad = next(c for c in value if not isinstance(c, str))
        return f"a {type(value).__name__} containing {type(bad).__name__}"
    return type(value).__name__


def _chunk_all(
    documents: list[DocumentInfo], chunker: Optional[_Chunker], chunking: Optional[Chunking]
) -> list[DocumentInfo]:
    if chunker is None and chunking is None:
        return documents
    out: list[DocumentInfo] = []
    for doc in documents:
        if doc.embedding is not None:
            raise InvalidArgumentError(
                f"document {doc.id!r} has an embedding and cannot be chunked: chunks are "
                "embedded by the model (drop the embedding or the chunker/chunking option)"
            )
        if chunker is not None:
            chunks = _call_chunker(chunker, doc.text, doc.id)
        elif chunking is not None:
            chunks = chunk_text(doc.text, chunking)
        for n, chunk in enumerate(chunks):
            out.append(
                DocumentInfo(
                    id=f"{doc.id}#{n}",
                    text=chunk,
                    metadata={**(doc.metadata or {}), "parentId": doc.id},
                    payload=doc.payload,
                )
            )
    return out

"""Public types of the two ingestion features the proprietary SDK has: files and web sources.

* ``create_index_from_files`` takes :class:`ParseFileInput` items (a name, a content type, the
  bytes or a path) and optional :class:`ParseOptions`. The files are uploaded raw and parsed where
  the index is built (the embedded store, or ``moss serve``).
* Web sources crawl a site into an index: :class:`CreateWebSourceOptions` and
  :class:`UpdateWebSourceOptions` in, :class:`WebSource` records (and the small result types
  carrying a job id) out.

The names, defaults and limits follow the proprietary documentation; everything is validated here,
on the client, with the proprietary ``Validation error: ...`` messages, and validated again by the
store (a server must not trust its clients). The validators return plain JSON-ready dicts, which is
what travels to the store (:mod:`moss.cloud.wire`) and what the store keeps in its catalog.

This module is imported by ``import moss``, so it imports nothing beyond the standard library,
:mod:`moss.errors` and :mod:`moss.types`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, Optional, Union
from urllib.parse import urlsplit, urlunsplit

from .errors import CONFLICT, InvalidArgumentError, MossError
from .types import safe_repr

__all__ = [
    "CONFLICT",
    "CONTENT_TYPES",
    "CrawlStats",
    "CreateWebSourceOptions",
    "CreateWebSourceResult",
    "DOCX_CONTENT_TYPE",
    "DeleteWebSourceResult",
    "MAX_FILES",
    "MAX_FILE_BYTES",
    "PDF_CONTENT_TYPE",
    "ParseFileInput",
    "ParseOptions",
    "ResyncWebSourceResult",
    "UpdateWebSourceOptions",
    "UpdateWebSourceResult",
    "WebSource",
    "check_file_specs",
    "check_files_model_id",
    "check_parse_options",
    "check_source_id",
    "conflict",
    "create_settings",
    "normalize_root_url",
    "update_settings",
    "web_source_from_json",
    "web_source_to_json",
]

PDF_CONTENT_TYPE = "application/pdf"
DOCX_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
#: Accepted ``ParseFileInput.content_type`` values: the proprietary two, then our extension.
CONTENT_TYPES: tuple[str, ...] = (
    PDF_CONTENT_TYPE,
    DOCX_CONTENT_TYPE,
    "text/markdown",
    "text/plain",
    "text/html",
)
MAX_FILES = 20
MAX_FILE_BYTES = 50 * 1024 * 1024  # "50 MB" per file

_OCR_MODES = ("auto_ocr", "full_ocr")
_SEGMENTATION = ("smart_layout_detection", "page_by_page")
_VALIDATION = "Validation error: "


def _invalid(message: str) -> InvalidArgumentError:
    return InvalidArgumentError(_VALIDATION + message)


# ------------------------------------------------------------------------------ files


@dataclass
class ParseFileInput:
    """One file for ``create_index_from_files``.

    Attributes:
        name: the file's name, unique within the call; chunk ids are ``{name}#{n}``.
        content_type: ``application/pdf`` or the DOCX type (the proprietary two), or
            ``text/markdown``, ``text/plain``, ``text/html`` (ours). Never inferred from the name.
        path: where to read the file (used when ``data`` is None).
        data: the file's bytes (wins over ``path`` when both are given).
    """

    name: str
    content_type: str
    path: Optional[Union[str, os.PathLike[str]]] = None
    data: Optional[bytes] = None


@dataclass
class ParseOptions:
    """How files are parsed; every field is optional.

    Attributes:
        ocr_mode: ``"auto_ocr"`` (here: the text layer only) or ``"full_ocr"`` (refused: mosslite
            has no OCR engine).
        use_high_resolution: accepted for compatibility; no effect (no OCR, no rendering).
        segmentation_method: ``"smart_layout_detection"`` (default: chunk the whole document) or
            ``"page_by_page"`` (PDF: every page is chunked on its own).
        merge_tables: accepted for compatibility; tables are read as text either way.
    """

    ocr_mode: Optional[Literal["auto_ocr", "full_ocr"]] = None
    use_high_resolution: Optional[bool] = None
    segmentation_method: Optional[Literal["smart_layout_detection", "page_by_page"]] = None
    merge_tables: Optional[bool] = None


def check_files_model_id(model_id: object) -> str:
    """The model of a ``create_index_from_files`` call (``None`` means ``moss-minilm``)."""
    if model_id is None:
        return "moss-minilm"
    if model_id == "custom":
        raise InvalidArgumentError("create_index_from_files does not support model_id='custom'")
    from .embedding.base import check_model_id

    return check_model_id(model_id)


def check_file_specs(specs: Sequence[tuple[object, object, int]]) -> None:
    """Check ``(name, content_type, size)`` of every file of one call (client and store).

    Raises:
        InvalidArgumentError: no files or more than 20, a missing or repeated name, an
            unsupported content type, an empty file or one over 50 MB.
    """
    if not specs:
        raise _invalid("files must contain at least 1 file")
    if len(specs) > MAX_FILES:
        raise _invalid(f"files must not exceed {MAX_FILES} files per call (got {len(specs)})")
    seen: set[str] = set()
    for name, content_type, size in specs:
        if not isinstance(name, str) or not name.strip():
            raise _invalid("every file needs a name (a non-empty string)")
        if name in seen:
            raise _invalid(f"file names must be unique within a call; {name!r} appears twice")
        seen.add(name)
        if content_type not in CONTENT_TYPES:
            raise _invalid(
                f"Unsupported content type {safe_repr(content_type)} for file {name!r}. Supported: "
                + ", ".join(CONTENT_TYPES)
            )
        if size > MAX_FILE_BYTES:
            raise _invalid(f"file {name!r} is {size} bytes; files must not exceed 50 MB each")
        if size == 0:
            raise _invalid(f"file {name!r} is empty")


def check_parse_options(options: object) -> dict[str, Any]:
    """``ParseOptions`` (or a mapping of its fields, or None) as a checked JSON-ready dict.

    Raises:
        InvalidArgumentError: a wrong type or value, or ``ocr_mode="full_ocr"`` (no OCR here).
    """
    if options is None:
        return {}
    if isinstance(options, Mapping):
        known = {f.name for f in fields(ParseOptions)}
        unknown = sorted(str(k) for k in options if k not in known)
        if unknown:
            raise _invalid(f"unknown parse option(s): {', '.join(unknown)}")
        options = ParseOptions(**options)
    if not isinstance(options, ParseOptions):
        raise _invalid(f"parse_options must be ParseOptions, not {type(options).__name__}")
    out: dict[str, Any] = {}
    for name, allowed in (("ocr_mode", _OCR_MODES), ("segmentation_method", _SEGMENTATION)):
        value = getattr(options, name)
        if value is not None:
            if value not in allowed:
                raise _invalid(
                    f"{name} must be one of {', '.join(allowed)}, got {safe_repr(value)}"
                )
            out[name] = value
    for name in ("use_high_resolution", "merge_tables"):
        value = getattr(options, name)
        if value is not None:
            if not isinstance(value, bool):
                raise _invalid(f"{name} must be a bool, got {safe_repr(value)}")
            out[name] = value
    if out.get("ocr_mode") == "full_ocr":
        raise _invalid(
            "ocr_mode='full_ocr' is not available: mosslite has no OCR engine and reads the "
            "text layer only; use ocr_mode='auto_ocr' (or leave it unset)"
        )
    return out


# ------------------------------------------------------------------------------ web sources

RefreshCadence = Literal["daily", "weekly", "manual"]
_CADENCES = ("daily", "weekly")
#: (default, low, high) of the numeric crawl settings.
_LIMITS: dict[str, tuple[int, int, int]] = {
    "max_pages": (500, 1, 5000),
    "max_depth": (3, 0, 10),
    "max_documents": (50_000, 1, 50_000),
}
_MAX_GLOBS = 50
_SOURCE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass
class CreateWebSourceOptions:
    """Settings of a new web source; ``None`` means the default.

    Attributes:
        max_pages: HTML pages fetched per crawl (default 500, at most 5000).
        max_depth: link hops from the root URL (default 3, at most 10; 0 = the root only).
        max_documents: cap on the chunks this source indexes (default and maximum 50,000).
        include_paths: URL path globs (``"/blog/*"``); when given, only matching pages are
            fetched and indexed (the root is always fetched, to find links). Up to 50.
        exclude_paths: URL path globs never fetched. Up to 50.
        respect_robots: honour robots.txt (default True).
        parse_documents: also fetch and index linked PDF and DOCX files (default True; 50 MB
            each, 20 per crawl).
        refresh_cadence: ``None`` (manual), ``"daily"`` or ``"weekly"``.
        model_id: the model of the index when this call creates it (default ``moss-minilm``).
    """

    max_pages: Optional[int] = None
    max_depth: Optional[int] = None
    max_documents: Optional[int] = None
    include_paths: Optional[list[str]] = None
    exclude_paths: Optional[list[str]] = None
    respect_robots: Optional[bool] = None
    parse_documents: Optional[bool] = None
    refresh_cadence: Optional[Literal["daily", "weekly"]] = None
    model_id: Optional[str] = None


@dataclass
class UpdateWebSourceOptions:
    """Changes to a web source; ``None`` leaves a setting as it is.

    Attributes:
        refresh_cadence: ``"daily"``, ``"weekly"`` or ``"manual"`` (no scheduled crawls).
        resync: start a crawl with the new settings now (the result carries its ``job_id``).
        (the other fields as in :class:`CreateWebSourceOptions`)
    """

    max_pages: Optional[int] = None
    max_depth: Optional[int] = None
    max_documents: Optional[int] = None
    include_paths: Optional[list[str]] = None
    exclude_paths: Optional[list[str]] = None
    respect_robots: Optional[bool] = None
    parse_documents: Optional[bool] = None
    refresh_cadence: Optional[RefreshCadence] = None
    resync: Optional[bool] = None


@dataclass(frozen=True)
class CrawlStats:
    """What the last crawl of a source did (ours; the proprietary record has only counts)."""

    pages_fetched: int = 0
    pages_new: int = 0
    pages_changed: int = 0
    pages_unchanged: int = 0
    pages_removed: int = 0
    pages_skipped: int = 0
    documents_parsed: int = 0
    chunks_embedded: int = 0
    chunks_deleted: int = 0


@dataclass(frozen=True)
class WebSource:
    """A web source: a root URL crawled into an index, with its settings and last crawl.

    ``status`` is ``"crawling"`` (a crawl is queued or running), ``"idle"``, ``"failed"`` (the
    last crawl failed: ``last_error_code``/``last_error``) or ``"removing"`` (deleted; its pages
    are being removed from the index).
    """

    id: str
    index_name: str
    root_url: str
    max_pages: int
    max_documents: int
    max_depth: int
    include_paths: list[str]
    exclude_paths: list[str]
    respect_robots: bool
    parse_documents: bool
    refresh_cadence: str
    next_refresh_at: Optional[str]
    status: str
    last_crawled_at: Optional[str]
    last_page_count: int
    last_doc_count: int
    last_error_code: Optional[str]
    last_error: Optional[str] = None
    last_stats: Optional[CrawlStats] = None
    created_at: str = ""
    updated_at: str = ""


@dataclass(frozen=True)
class CreateWebSourceResult(WebSource):
    """The new :class:`WebSource` and the id of its first crawl job."""

    job_id: str = ""


@dataclass(frozen=True)
class UpdateWebSourceResult(WebSource):
    """The updated :class:`WebSource`; ``job_id`` is the crawl started by ``resync=True``."""

    job_id: Optional[str] = None


@dataclass(frozen=True)
class ResyncWebSourceResult:
    """A crawl started (or already queued) for a source."""

    id: str
    job_id: str
    status: str


@dataclass(frozen=True)
class DeleteWebSourceResult:
    """A deleted source; ``purge_job_id`` is the job removing its pages (None if none)."""

    deleted: bool
    id: str
    purge_job_id: Optional[str] = None


def check_source_id(source_id: object) -> str:
    """A web source id as the store issues them (``ws_`` + hex); anything else is invalid."""
    if not isinstance(source_id, str) or not _SOURCE_ID_RE.match(source_id):
        raise InvalidArgumentError(f"invalid web source id {source_id!r}")
    return source_id


def normalize_root_url(url: object) -> str:
    """The canonical form of a root URL: http(s) only, lower-case scheme and host, no fragment,
    a bare origin gains ``/`` and a trailing ``/`` is dropped otherwise (so ``/docs`` and
    ``/docs/`` are one root).

    >>> normalize_root_url("HTTPS://Example.com")
    'https://example.com/'
    >>> normalize_root_url("https://example.com/docs/#intro")
    'https://example.com/docs'
    """
    if not isinstance(url, str) or not url.strip():
        raise _invalid("root_url must be a non-empty http(s) URL")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as e:
        raise _invalid(f"root_url {url!r} is not a valid URL: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise _invalid(f"root_url must be an absolute http(s) URL, got {safe_repr(url)}")
    if parts.username or parts.password:
        raise _invalid("root_url must not contain credentials")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != (443 if scheme == "https" else 80):
        host = f"{host}:{port}"
    path = parts.path or "/"
    if len(path) > 1:
        path = path.rstrip("/") or "/"
    if len(url) > 2048:
        raise _invalid("root_url must be at most 2048 characters")
    return urlunsplit((scheme, host, path, parts.query, ""))


def _int_setting(name: str, value: object) -> int:
    default, low, high = _LIMITS[name]
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON has one number type: 1.0 is the integer 1 (as in the schema)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _invalid(f"{name} must be an integer from {low} to {high}, got {safe_repr(value)}")
    return int(value)


def _globs(name: str, value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise _invalid(f"{name} must be a list of path globs such as '/blog/*'")
    out = list(value)
    if len(out) > _MAX_GLOBS:
        raise _invalid(f"{name} must not exceed {_MAX_GLOBS} patterns")
    for g in out:
        if not isinstance(g, str) or not g.startswith("/") or len(g) > 512:
            raise _invalid(
                f"{name} entries must be path globs starting with '/', got {safe_repr(g)}"
            )
    return out


def _bool_setting(name: str, value: object, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _invalid(f"{name} must be a bool, got {safe_repr(value)}")
    return value


def _options(
    options: object, cls: type[CreateWebSourceOptions] | type[UpdateWebSourceOptions]
) -> Any:
    if options is None:
        return cls()
    if isinstance(options, Mapping):
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in options if k not in known)
        if unknown:
            raise _invalid(f"unknown web source option(s): {', '.join(unknown)}")
        return cls(**options)
    if not isinstance(options, cls):
        raise _invalid(f"options must be {cls.__name__}, not {type(options).__name__}")
    return options


def create_settings(options: object) -> tuple[dict[str, Any], str | None]:
    """Checked settings of a new source (every field filled in) and its ``model_id``.

    Raises:
        InvalidArgumentError: a value of the wrong type or out of range.
    """
    o: CreateWebSourceOptions = _options(options, CreateWebSourceOptions)
    cadence = o.refresh_cadence
    if cadence is not None and cadence not in _CADENCES:
        raise _invalid(
            f"refresh_cadence must be None, 'daily' or 'weekly', got {safe_repr(cadence)}"
        )
    settings = {
        "max_pages": _int_setting("max_pages", o.max_pages),
        "max_depth": _int_setting("max_depth", o.max_depth),
        "max_documents": _int_setting("max_documents", o.max_documents),
        "include_paths": _globs("include_paths", o.include_paths),
        "exclude_paths": _globs("exclude_paths", o.exclude_paths),
        "respect_robots": _bool_setting("respect_robots", o.respect_robots, True),
        "parse_documents": _bool_setting("parse_documents", o.parse_documents, True),
        "refresh_cadence": cadence or "manual",
    }
    model_id = o.model_id
    if model_id is not None:
        if model_id == "custom":
            raise _invalid("web sources need a built-in model; model_id='custom' is not supported")
        from .embedding.base import check_model_id

        check_model_id(model_id)
    return settings, model_id


def update_settings(options: object) -> tuple[dict[str, Any], bool]:
    """The settings an update changes (only those given) and whether it asks for a resync."""
    o: UpdateWebSourceOptions = _options(options, UpdateWebSourceOptions)
    changes: dict[str, Any] = {}
    for name in ("max_pages", "max_depth", "max_documents"):
        if getattr(o, name) is not None:
            changes[name] = _int_setting(name, getattr(o, name))
    for name in ("include_paths", "exclude_paths"):
        if getattr(o, name) is not None:
            changes[name] = _globs(name, getattr(o, name))
    for name in ("respect_robots", "parse_documents"):
        if getattr(o, name) is not None:
            changes[name] = _bool_setting(name, getattr(o, name), True)
    if o.refresh_cadence is not None:
        if o.refresh_cadence not in (*_CADENCES, "manual"):
            raise _invalid(
                "refresh_cadence must be 'daily', 'weekly' or 'manual', "
                f"got {safe_repr(o.refresh_cadence)}"
            )
        changes["refresh_cadence"] = o.refresh_cadence
    return changes, _bool_setting("resync", o.resync, False)


def conflict(message: str) -> MossError:
    """The error of a change refused because the source is crawling (HTTP 409)."""
    return MossError(message, code=CONFLICT)


def _stats(obj: Any) -> CrawlStats | None:
    if not isinstance(obj, Mapping):
        return None
    known = {f.name for f in fields(CrawlStats)}
    return CrawlStats(**{k: int(v) for k, v in obj.items() if k in known})


def web_source_from_json(
    obj: Mapping[str, Any], cls: type[WebSource] = WebSource, **extra: Any
) -> Any:
    """A :class:`WebSource` (or a result subclass with ``extra`` fields) from its JSON record."""
    return cls(
        id=str(obj["id"]),
        index_name=str(obj["index_name"]),
        root_url=str(obj["root_url"]),
        max_pages=int(obj["max_pages"]),
        max_documents=int(obj["max_documents"]),
        max_depth=int(obj["max_depth"]),
        include_paths=[str(p) for p in obj["include_paths"]],
        exclude_paths=[str(p) for p in obj["exclude_paths"]],
        respect_robots=bool(obj["respect_robots"]),
        parse_documents=bool(obj["parse_documents"]),
        refresh_cadence=str(obj["refresh_cadence"]),
        next_refresh_at=obj.get("next_refresh_at"),
        status=str(obj["status"]),
        last_crawled_at=obj.get("last_crawled_at"),
        last_page_count=int(obj.get("last_page_count") or 0),
        last_doc_count=int(obj.get("last_doc_count") or 0),
        last_error_code=obj.get("last_error_code"),
        last_error=obj.get("last_error"),
        last_stats=_stats(obj.get("last_stats")),
        created_at=str(obj.get("created_at") or ""),
        updated_at=str(obj.get("updated_at") or ""),
        **extra,
    )


def web_source_to_json(source: WebSource) -> dict[str, Any]:
    """The JSON record of a :class:`WebSource` (the fields of the base class only)."""
    out: dict[str, Any] = {}
    for f in fields(WebSource):
        value = getattr(source, f.name)
        if isinstance(value, CrawlStats):
            value = {s.name: getattr(value, s.name) for s in fields(CrawlStats)}
        elif isinstance(value, list):
            value = list(value)
        out[f.name] = value
    return out

"""Public data types: inputs (mutable, positional like their parameters) and results (read-only).

The field order and defaults follow the Moss API contract (docs/api.md §2.3) exactly, so positional
construction written for the proprietary SDK keeps working.
"""

from __future__ import annotations

import math
import os
import reprlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, Optional, Union

from .errors import InvalidArgumentError

__all__ = [
    "Chunking",
    "DocsInput",
    "DocumentInfo",
    "GetDocumentsOptions",
    "IndexInfo",
    "IndexStatus",
    "IndexStatusValues",
    "JobPhase",
    "JobProgress",
    "JobStatus",
    "JobStatusResponse",
    "LoadIndexesResult",
    "ModelRef",
    "MutationOptions",
    "MutationResult",
    "ParentGrouping",
    "PushIndexResult",
    "QueryOptions",
    "QueryResultDocumentInfo",
    "SearchResult",
    "coerce_metadata",
    "coerce_metadata_value",
    "has_surrogates",
    "safe_repr",
    "upsert_flag",
    "validate_index_name",
]


# --------------------------------------------------------------------------------------------
# Inputs


@dataclass
class DocumentInfo:
    """A document: an id, its text, string metadata, an optional vector and an opaque payload.

    ``payload`` is handed back unchanged; it is not embedded, indexed or filterable.

    >>> d = DocumentInfo("1", "Ship it by Friday.", {"team": "sdk"})
    >>> (d.id, d.metadata, d.embedding, d.payload)
    ('1', {'team': 'sdk'}, None, None)
    """

    id: str
    text: str
    metadata: Optional[dict[str, str]] = None
    embedding: Optional[Sequence[float]] = None
    payload: Optional[str] = None


@dataclass
class ParentGrouping:
    """Merge documents sharing ``metadata[parent_field]`` into one unit, ordered by a field."""

    parent_field: str
    order_field: str


@dataclass
class QueryOptions:
    """Options of ``query``; ``None`` means the default (docs/api.md §3.4).

    Attributes:
        embedding: the query vector; the text is then not embedded.
        top_k: number of results (default 5, 10 for multi-index; 0 returns none).
        alpha: weight of the semantic signal, 0.0 (keyword only) to 1.0 (vector only); default 0.8.
        filter: a metadata filter (§3.8).
        group_by: merge chunks of one parent into a single hit.
        min_score: drop hits whose cosine score is below this floor.
        candidate_depth: length of each signal's candidate list (default ``2 * top_k``).
        fusion: ``"score"`` (default, normalised score fusion) or ``"rrf"`` (weighted RRF, k=30).
    """

    embedding: Optional[Sequence[float]] = None
    top_k: Optional[int] = None
    alpha: Optional[float] = None
    filter: Optional[dict[str, Any]] = None
    group_by: Optional[ParentGrouping] = None
    min_score: Optional[float] = None
    candidate_depth: Optional[int] = None
    fusion: Optional[Literal["score", "rrf"]] = None


@dataclass
class GetDocumentsOptions:
    """Options of ``get_docs``: restrict by ids and filter, sort by a metadata field, group."""

    doc_ids: Optional[list[str]] = None
    filter: Optional[dict[str, Any]] = None
    sort_by: Optional[str] = None
    ascending: Optional[bool] = None
    group_by: Optional[ParentGrouping] = None


@dataclass
class MutationOptions:
    """Options of ``add_docs``: ``upsert=False`` skips ids that already exist."""

    upsert: Optional[bool] = None


def upsert_flag(options: object) -> bool:
    """Whether ``add_docs`` replaces existing ids: ``None`` options or ``upsert=None`` mean yes."""
    if options is None:
        return True
    if not isinstance(options, MutationOptions):
        raise InvalidArgumentError(f"options must be MutationOptions, not {type(options).__name__}")
    if options.upsert is None:
        return True
    if not isinstance(options.upsert, bool):
        raise InvalidArgumentError(
            f"upsert must be True or False, not {type(options.upsert).__name__}"
        )
    return options.upsert


_CHUNK_MODES = ("pages", "sentences")


@dataclass
class Chunking:
    """Native chunking settings (sizes in characters), checked at construction.

    >>> Chunking(chunk_size=100)
    Traceback (most recent call last):
    ...
    moss.errors.InvalidArgumentError: Unsupported chunk_size 100. Supported: 200 to 2000
    """

    chunk_size: Optional[int] = None
    chunk_overlap: Optional[int] = None
    mode: Literal["pages", "sentences"] = "pages"
    markdown_header_depth: Optional[int] = None

    def __post_init__(self) -> None:
        size = _check_int_range("chunk_size", self.chunk_size, 200, 2000)
        size = 1200 if size is None else size
        _check_int_range("chunk_overlap", self.chunk_overlap, 0, size // 2)
        _check_int_range("markdown_header_depth", self.markdown_header_depth, 1, 6)
        if self.mode not in _CHUNK_MODES:
            raise InvalidArgumentError(
                f"Unsupported mode {safe_repr(self.mode)}. Supported: {', '.join(_CHUNK_MODES)}"
            )

    @property
    def effective_chunk_size(self) -> int:
        return 1200 if self.chunk_size is None else self.chunk_size

    @property
    def effective_chunk_overlap(self) -> int:
        if self.chunk_overlap is None:
            return min(200, self.effective_chunk_size // 2)
        return self.chunk_overlap

    @property
    def effective_markdown_header_depth(self) -> int:
        return 6 if self.markdown_header_depth is None else self.markdown_header_depth


def _check_int_range(name: str, value: Optional[int], low: int, high: int) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        shown = value if isinstance(value, int) and abs(value) < 10**30 else safe_repr(value)
        raise InvalidArgumentError(f"Unsupported {name} {shown}. Supported: {low} to {high}")
    return value


DocsInput = Union[
    Iterable[DocumentInfo],
    Iterable[Mapping[str, Any]],
    Iterable["os.PathLike[str]"],
    str,
    bytes,
    "os.PathLike[str]",
]


# --------------------------------------------------------------------------------------------
# Results (read-only)


@dataclass(frozen=True)
class QueryResultDocumentInfo:
    """One hit: the document, its cosine score in [0, 1] and the index it came from."""

    id: str
    text: str
    metadata: Optional[dict[str, str]] = None
    score: float = 0.0
    index_name: Optional[str] = None
    payload: Optional[str] = None


@dataclass(frozen=True)
class SearchResult:
    """Hits in fused order, the query as given and the time taken (embedding included)."""

    docs: list[QueryResultDocumentInfo]
    query: str
    index_name: Optional[str] = None
    time_taken_ms: Optional[int] = None
    model_id: Optional[str] = None


@dataclass(frozen=True)
class MutationResult:
    job_id: str
    index_name: str
    doc_count: int


@dataclass(frozen=True)
class PushIndexResult:
    job_id: str
    index_name: str
    doc_count: int
    status: str


@dataclass(frozen=True)
class ModelRef:
    id: str
    version: str


@dataclass(frozen=True)
class IndexInfo:
    id: str
    name: str
    version: str
    status: str
    doc_count: int
    created_at: str
    updated_at: str
    model: ModelRef


class IndexStatus(str, Enum):
    """Build state of a cloud index; each member equals its name."""

    NotStarted = "NotStarted"
    Building = "Building"
    Ready = "Ready"
    Failed = "Failed"

    def __str__(self) -> str:
        return self.value


IndexStatusValues: dict[str, str] = {m.name: m.value for m in IndexStatus}


class JobStatus(str, Enum):
    """State of a job; members compare equal to their string value."""

    PENDING_UPLOAD = "pending_upload"
    UPLOADING = "uploading"
    BUILDING = "building"
    COMPLETED = "completed"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


class JobPhase(str, Enum):
    """What a running job is doing; the value is the lower-cased name."""

    QUEUED = "queued"
    DOWNLOADING = "downloading"
    DESERIALIZING = "deserializing"
    GENERATING_EMBEDDINGS = "generating_embeddings"
    BUILDING_INDEX = "building_index"
    UPLOADING = "uploading"
    CLEANUP = "cleanup"
    WAITING_FOR_PARSER = "waiting_for_parser"
    PARSING = "parsing"
    PARSING_COMPLETE = "parsing_complete"
    CRAWLING = "crawling"
    PARSING_DOCUMENTS = "parsing_documents"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class JobProgress:
    job_id: str
    status: JobStatus
    progress: float
    current_phase: Optional[JobPhase]


@dataclass(frozen=True)
class JobStatusResponse:
    job_id: str
    status: JobStatus
    progress: float
    current_phase: Optional[JobPhase]
    error: Optional[str]
    created_at: str
    updated_at: str
    completed_at: Optional[str]


@dataclass(frozen=True)
class LoadIndexesResult:
    loaded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    failed_codes: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Shared validation and coercion


_NAME_MESSAGE = (
    'index name must not be blank, "." or "..", must not contain "/" or control characters, '
    "and must be at most 256 bytes"
)


def safe_repr(value: object, limit: int = 80) -> str:
    """A short ``repr`` for error messages that cannot fail: ``repr`` itself raises for integers
    of more than 4300 digits, for lists nested thousands deep, and for objects whose ``__repr__``
    raises."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<an integer of {value.bit_length()} bits>"
    try:
        text = reprlib.repr(value)
    except Exception:
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def has_surrogates(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate (``"\\udc80"``), which UTF-8 cannot encode."""
    if text.isascii():  # the common case, and much faster than encoding
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def validate_index_name(name: object) -> str:
    """Return ``name`` if it is a valid index or session name (docs/api.md §3.9), else raise.

    A name with a lone surrogate is refused with its own message: it cannot be stored."""
    if isinstance(name, str) and has_surrogates(name):
        raise InvalidArgumentError(
            "index name contains a lone surrogate (e.g. '\\udc80'), which cannot be stored as UTF-8"
        )
    if (
        not isinstance(name, str)
        or not name.strip()
        or name in (".", "..")
        or "/" in name
        or any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in name)
        or len(name.encode("utf-8", "surrogatepass")) > 256
    ):
        raise InvalidArgumentError(_NAME_MESSAGE)
    return name


def coerce_metadata_value(key: str, value: object) -> str:
    """Convert one metadata value to its string form (docs/api.md §3.1)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value) if abs(value) < 10**4000 else _too_long(key)
    if isinstance(value, float):
        return float.__repr__(value)  # numpy floats too: "1.5", not "np.float64(1.5)"
    raise InvalidArgumentError(
        f"metadata value for {key!r} must be a string, number or boolean, "
        f"not {type(value).__name__}"
    )


def _too_long(key: str) -> str:
    raise InvalidArgumentError(f"metadata value for {key!r} is an integer too large to store")


def coerce_metadata(metadata: object) -> Optional[dict[str, str]]:
    """Validate a metadata mapping and convert its scalar values to strings."""
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise InvalidArgumentError(
            f"metadata must be a dict of strings, not {type(metadata).__name__}"
        )
    out: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise InvalidArgumentError(f"metadata keys must be strings, not {type(key).__name__}")
        if has_surrogates(key):
            raise InvalidArgumentError(
                f"metadata key {key!r} contains a lone surrogate, which cannot be stored as UTF-8"
            )
        text = coerce_metadata_value(key, value)
        if has_surrogates(text):
            raise InvalidArgumentError(
                f"metadata value for {key!r} contains a lone surrogate, which cannot be stored "
                "as UTF-8"
            )
        out[key] = text
    return out


def is_finite_number(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )

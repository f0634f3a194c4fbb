"""The checks every public input goes through, shared by the Python API and the server.

Why one module: a call that the server refuses must not succeed on a session (or the other way
round), and a hostile value (``None``, a dict, ``-10**5000``, NaN, a lone surrogate, JSON nested
100,000 deep) must end as an :class:`~moss.errors.InvalidArgumentError` with a one-line message,
never as a ``TypeError`` / ``RecursionError`` / ``UnicodeEncodeError`` from deep inside. So the
public entry points (:class:`~moss.MossClient`, :class:`~moss.SessionIndex`, the cloud layer, and
the HTTP server once it decodes a request) call these functions *before* anything is read or
written: a rejected call changes no stored data.

Option objects (``QueryOptions``, ``GetDocumentsOptions``, ``MutationOptions``,
``ParentGrouping``, ``Chunking``) are validated here, at the API boundary, and not in their
constructors: they are mutable dataclasses (a field can change after construction) and the
proprietary SDK builds them without checks, so only the boundary check is reliable. ``Chunking``
keeps its documented construction-time check and is checked again here.

Strings that reach storage or a path (names, ids, metadata keys and values, texts, payloads)
must be encodable as UTF-8: a lone surrogate (``"\\udc80"``, what ``os.fsdecode`` makes of
undecodable bytes, or what ``json.loads('"\\\\udc80"')`` returns) is refused by name.

The layering is ``validation -> types, filters -> errors``; nothing below imports this module.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Optional, TypeVar

from .errors import InvalidArgumentError
from .types import (
    Chunking,
    DocumentInfo,
    GetDocumentsOptions,
    MutationOptions,
    ParentGrouping,
    QueryOptions,
    coerce_metadata,
    has_surrogates,
    safe_repr,
    validate_index_name,
)

__all__ = [
    "check_bool",
    "check_cache_path",
    "check_chunker",
    "check_chunking",
    "check_doc_ids",
    "check_documents",
    "MAX_JSON_DEPTH",
    "check_filter",
    "check_get_options",
    "check_grouping",
    "check_job_id",
    "check_model_id_type",
    "check_mutation_options",
    "check_name_list",
    "check_number",
    "check_project_id",
    "check_project_key",
    "check_query_options",
    "check_query_text",
    "check_server_url",
    "check_string",
    "check_vector",
    "coerce_metadata",
    "has_surrogates",
    "json_depth",
    "query_guard",
    "safe_repr",
    "validate_index_name",
]


T = TypeVar("T")


def _type_name(value: object) -> str:
    return type(value).__name__


def check_string(value: object, what: str, *, allow_empty: bool = True) -> str:
    """``value`` if it is a ``str`` that UTF-8 can encode (and, unless allowed, non-empty)."""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{what} must be a str, not {_type_name(value)}")
    if not allow_empty and not value:
        raise InvalidArgumentError(f"{what} must be a non-empty string")
    if has_surrogates(value):
        raise InvalidArgumentError(
            f"{what} contains a lone surrogate (e.g. '\\udc80'), which cannot be stored as UTF-8"
        )
    return value


def check_bool(value: object, what: str) -> bool:
    """``value`` if it is a ``bool`` (``0``/``1`` and other truthy objects are refused)."""
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"{what} must be True or False, not {_type_name(value)}")
    return value


def check_number(
    value: object,
    what: str,
    *,
    minimum: float | None = None,
    exclusive: bool = False,
    maximum: float | None = None,
    integer: bool = False,
) -> float:
    """``value`` as a finite float, refusing bools, NaN, infinities and out-of-range values.

    Integers too large for a float (``-10**5000``) are refused as out of range without ever
    being formatted in full (Python refuses to print integers of more than 4300 digits).
    """
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgumentError(f"{what} must be {kind}, not {_type_name(value)}")
    if integer and not isinstance(value, numbers.Integral):
        raise InvalidArgumentError(f"{what} must be {kind}, not {_type_name(value)}")
    try:
        number = float(value)
    except (OverflowError, ValueError):
        raise InvalidArgumentError(
            f"{what} must be a finite number, got {safe_repr(value)}"
        ) from None
    if not math.isfinite(number):
        raise InvalidArgumentError(f"{what} must be a finite number, got {number}")
    low_bad = minimum is not None and (number <= minimum if exclusive else number < minimum)
    if low_bad or (maximum is not None and number > maximum):
        low = f"> {minimum:g}" if exclusive else f">= {minimum:g}" if minimum is not None else ""
        high = f"<= {maximum:g}" if maximum is not None else ""
        bounds = " and ".join(b for b in (low, high) if b)
        raise InvalidArgumentError(f"{what} must be {bounds}, got {safe_repr(value)}")
    return number


# --------------------------------------------------------------------------------------------
# Identities: projects, keys, jobs, paths


def check_project_id(value: object) -> str:
    """A project id: a non-empty, UTF-8-encodable string (any length: long ids are hashed in
    paths, see :func:`moss.session.safe_path_component`)."""
    if not isinstance(value, str) or not value:
        raise InvalidArgumentError("project_id must be a non-empty string")
    return check_string(value, "project_id")


def check_project_key(value: object) -> str:
    """A project key: a UTF-8-encodable string. A key a header cannot carry (a newline) is left
    to the server backend, which reports it as ``UNAUTHORIZED`` without echoing it."""
    if not isinstance(value, str):
        raise InvalidArgumentError("project_key must be a string")
    if has_surrogates(value):
        raise InvalidArgumentError("project_key contains a lone surrogate")  # never echoed
    return value


def check_server_url(value: object) -> Optional[str]:
    """``None`` or a URL string (its form is checked when the first request is made)."""
    if value is None:
        return None
    return check_string(value, "server_url")


def check_cache_path(value: object, what: str = "cache_path") -> Optional[str]:
    """``None``, or a ``str`` / ``os.PathLike`` path without NUL characters, as a ``str``."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        try:
            path = os.fspath(value)
        except TypeError as e:
            raise InvalidArgumentError(f"{what} must be a path: {e}") from None
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if "\x00" in path:
            raise InvalidArgumentError(f"{what} must not contain NUL characters")
        if not path:
            raise InvalidArgumentError(f"{what} must not be empty")
        try:
            os.fsencode(path)
        except UnicodeEncodeError:
            raise InvalidArgumentError(
                f"{what} cannot be encoded for the file system (a lone surrogate?)"
            ) from None
        return path
    raise InvalidArgumentError(f"{what} must be a str or os.PathLike path, not {_type_name(value)}")


def check_job_id(value: object) -> str:
    """A job id: a UTF-8-encodable string (an unknown one is ``NOT_FOUND`` later)."""
    return check_string(value, "job_id")


def check_doc_ids(value: object, what: str = "doc_ids") -> list[str]:
    """A list (or any non-string iterable) of document ids, as a new list of strings."""
    if isinstance(value, (str, bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise InvalidArgumentError(f"{what} must be a list of strings, not {_type_name(value)}")
    ids = list(value)  # a generator is consumed exactly once, here
    for i in ids:
        if not isinstance(i, str):
            raise InvalidArgumentError(
                f"{what} must be a list of strings; it contains a {_type_name(i)}"
            )
        if has_surrogates(i):
            check_string(i, f"{what} item")
    return ids


def check_name_list(value: object, what: str = "names") -> list[str]:
    """A non-string iterable of index names (each one is checked by the call that uses it)."""
    if isinstance(value, (str, bytes)):
        raise InvalidArgumentError(f"{what} must be a list of index names, not a single string")
    if isinstance(value, Mapping) or not isinstance(value, Iterable):
        raise InvalidArgumentError(f"{what} must be a list of index names, not {_type_name(value)}")
    names = list(value)
    for n in names:
        if not isinstance(n, str):
            raise InvalidArgumentError(f"{what} must contain index names, not {_type_name(n)}")
    return names


# --------------------------------------------------------------------------------------------
# Options


def check_grouping(value: object, what: str = "group_by") -> Optional[ParentGrouping]:
    """``None`` or a ``ParentGrouping`` whose two fields are non-empty strings."""
    if value is None:
        return None
    if not isinstance(value, ParentGrouping):
        raise InvalidArgumentError(f"{what} must be a ParentGrouping")
    check_string(value.parent_field, f"{what}.parent_field", allow_empty=False)
    check_string(value.order_field, f"{what}.order_field", allow_empty=False)
    return value


MAX_JSON_DEPTH = 64
"""Deepest nesting of lists and dicts accepted in a request body (``moss serve``'s default
``max_json_depth``); a filter may nest one level less (it sits inside the options object)."""


def json_depth(value: object, limit: int) -> int:
    """How deep ``value`` nests lists, tuples and dicts (a scalar is 0, ``[]`` is 1), counting
    no further than ``limit + 1``. Iterative: a structure 100,000 deep costs no recursion."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list, tuple)):
            deepest = max(deepest, depth)
            if depth > limit:
                return depth
            children = node.values() if isinstance(node, dict) else node
            stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list, tuple)))
    return deepest


def check_filter(value: object, *, compile: bool = False) -> None:
    """A metadata filter (docs/api.md §3.8) no deeper than the server accepts; with ``compile``
    it is also compiled (the cloud path, before the request is sent). Where the filter runs
    in this process the engine compiles it anyway, with the documented messages."""
    if value is None:
        return
    limit = MAX_JSON_DEPTH - 1
    if json_depth(value, limit) > limit:
        raise InvalidArgumentError(f"filter is nested too deeply (more than {limit} levels)")
    if not compile:
        return
    from .filters import compile_filter

    try:
        compile_filter(value)  # type: ignore[arg-type]
    except InvalidArgumentError:
        raise
    except (TypeError, ValueError, UnicodeError, OverflowError, RecursionError) as e:
        raise InvalidArgumentError(f"invalid filter: {type(e).__name__}") from None


def check_query_text(value: object) -> str:
    """The text of a query: a UTF-8-encodable ``str`` (it may be blank)."""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"query must be a str, not {_type_name(value)}")
    return check_string(value, "query")


def check_query_options(options: object) -> Optional[QueryOptions]:
    """The type of every ``QueryOptions`` field; ranges are checked where the query runs, with
    the messages of docs/api.md §3.4 (``top_k must be >= 0, got -1``)."""
    if options is None:
        return None
    if not isinstance(options, QueryOptions):
        raise InvalidArgumentError(f"options must be QueryOptions, not {_type_name(options)}")
    o = options
    if o.embedding is not None:
        check_vector(o.embedding, "embedding")
    for name, value, integer in (
        ("top_k", o.top_k, True),
        ("candidate_depth", o.candidate_depth, True),
        ("alpha", o.alpha, False),
        ("min_score", o.min_score, False),
    ):
        if value is None:
            continue
        kind = "an integer" if integer else "a number"
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise InvalidArgumentError(f"{name} must be {kind}, not {_type_name(value)}")
        if isinstance(value, numbers.Integral) and not -(2**62) < int(value) < 2**62:
            raise InvalidArgumentError(f"{name} is out of range ({safe_repr(value)})")
    if o.fusion is not None and not isinstance(o.fusion, str):
        raise InvalidArgumentError(f"fusion must be 'score' or 'rrf', not {_type_name(o.fusion)}")
    # The filter is compiled where the query runs (walking it here would cost as much again on
    # every query: +60 us for a 1,000-value $in); a filter too deep to compile is turned into
    # an InvalidArgumentError there, by query_guard.
    check_grouping(o.group_by)
    return o


def query_guard(run: Callable[[], T]) -> T:
    """Run a query, turning a ``RecursionError`` (a filter nested too deeply for the compiler)
    into an ``InvalidArgumentError``; the query's own checks raise typed errors already."""
    try:
        return run()
    except RecursionError:
        raise InvalidArgumentError("filter is nested too deeply") from None


def check_get_options(
    options: object, *, compile_filter: bool = False
) -> Optional[GetDocumentsOptions]:
    """Every field of ``GetDocumentsOptions`` (docs/api.md §3.2, §3.7); the filter is compiled
    only with ``compile_filter`` (see :func:`check_filter`)."""
    if options is None:
        return None
    if not isinstance(options, GetDocumentsOptions):
        raise InvalidArgumentError(
            f"options must be GetDocumentsOptions, not {_type_name(options)}"
        )
    check_filter(options.filter, compile=compile_filter)
    if options.doc_ids is not None:
        check_doc_ids(options.doc_ids)
    if options.sort_by is not None:
        check_string(options.sort_by, "sort_by")
    if options.ascending is not None:
        check_bool(options.ascending, "ascending")
    check_grouping(options.group_by)
    return options


def check_mutation_options(options: object) -> bool:
    """The ``upsert`` flag of ``add_docs`` options (``None`` options or ``upsert=None``: True)."""
    if options is None:
        return True
    if not isinstance(options, MutationOptions):
        raise InvalidArgumentError(f"options must be MutationOptions, not {_type_name(options)}")
    if options.upsert is None:
        return True
    return check_bool(options.upsert, "upsert")


def check_chunking(value: object) -> Optional[Chunking]:
    """``None`` or a ``Chunking`` whose (mutable) fields are still valid."""
    if value is None:
        return None
    if not isinstance(value, Chunking):
        raise InvalidArgumentError(f"chunking must be a moss.Chunking, not {_type_name(value)}")
    value.__post_init__()
    return value


def check_chunker(value: object) -> Optional[Callable[[str], list[str]]]:
    """``None`` or a callable (its results are checked when it is called)."""
    if value is not None and not callable(value):
        raise InvalidArgumentError(f"chunker must be callable, not {_type_name(value)}")
    return value  # type: ignore[return-value]


def check_model_id_type(value: object) -> Optional[str]:
    """``None`` or a string model id (``moss.embedding.check_model_id`` then says whether such a
    model exists, listing the accepted ids)."""
    if value is None:
        return None
    return check_string(value, "model_id")


def check_documents(docs: Iterable[DocumentInfo]) -> None:
    """The strings of already-built documents (a decoded upload on the server): ids non-empty,
    and ids, texts, payloads and metadata keys and values ``str`` and UTF-8-encodable. Python
    callers' documents get the same checks (with per-document messages) in
    :func:`moss.docs_input.normalize_docs`."""
    for i, doc in enumerate(docs):
        where = f"document {i}"
        check_string(doc.id, f"{where}: id", allow_empty=False)
        check_string(doc.text, f"{where} (id {doc.id!r}): text")
        if doc.payload is not None:
            check_string(doc.payload, f"{where} (id {doc.id!r}): payload")
        if doc.metadata is not None:
            try:
                coerce_metadata(doc.metadata)
            except InvalidArgumentError as e:
                raise InvalidArgumentError(f"{where} (id {doc.id!r}): {e.message}") from None


def check_vector(value: object, what: str) -> None:
    """A vector the engine can convert: a non-string sequence of real numbers within float range
    (length and finiteness are checked by the engine, with its documented messages)."""
    if isinstance(value, (str, bytes, bytearray, Mapping)):
        raise InvalidArgumentError(f"{what} must be a sequence of numbers")
    import numpy as np

    try:
        np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError, RecursionError):
        raise InvalidArgumentError(f"{what} must be a sequence of numbers") from None

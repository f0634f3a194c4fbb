"""Query options checked once, with defaults applied: the :class:`QueryPlan` every query path runs.

docs/api.md §3.4 and §3.6 list the options of a query; :func:`validate_query_options` checks each
one and turns them into a frozen :class:`QueryPlan`, so a single-index query
(:meth:`moss.engine.Engine.query`), a multi-index query (:mod:`moss.runtime`) and a cloud query
(:mod:`moss.cloud`) reject the same inputs with the same :class:`~moss.errors.InvalidArgumentError`.
:func:`as_vector` is the one check of a caller's vector (a query embedding, or a document's with the
``custom`` model). Pure functions: no index state is read here.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .errors import InvalidArgumentError
from .filters import MetadataFilter, compile_filter
from .types import ParentGrouping, QueryOptions

__all__ = ["DEFAULT_ALPHA", "DEFAULT_TOP_K", "QueryPlan", "as_vector", "validate_query_options"]

DEFAULT_TOP_K = 5
DEFAULT_ALPHA = 0.8


@dataclass(frozen=True)
class QueryPlan:
    """Validated query options with defaults applied."""

    top_k: int
    alpha: float
    depth: int
    fusion: Literal["score", "rrf"]
    flt: MetadataFilter | None
    group_by: ParentGrouping | None
    min_score: float | None
    embedding: np.ndarray | None


def _check_number(name: str, value: object, *, integer: bool = False) -> float:
    # numbers.Real/Integral admit numpy scalars too (np.int64 is not an int subclass)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        kind = "an integer" if integer else "a number"
        raise InvalidArgumentError(f"{name} must be {kind}, not {type(value).__name__}")
    if math.isnan(float(value)):
        raise InvalidArgumentError(f"{name} must not be NaN")
    if integer and not isinstance(value, numbers.Integral):
        raise InvalidArgumentError(f"{name} must be an integer, not {value!r}")
    return float(value)


def as_vector(value: object, dim: int | None, what: str = "embedding") -> np.ndarray:
    """Convert a caller's vector to float32, checking shape, length and finiteness."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as e:  # OverflowError: an int over 1e308
        raise InvalidArgumentError(f"{what} must be a sequence of numbers") from e
    if arr.ndim != 1 or arr.size == 0:
        raise InvalidArgumentError(f"{what} must be a non-empty 1-D sequence of numbers")
    if dim is not None and arr.size != dim:
        detail = f"Invalid embedding length: expected {dim} but received {arr.size}."
        raise InvalidArgumentError(detail, detail=detail)
    if not np.isfinite(arr).all():
        raise InvalidArgumentError(
            f"{what} contains NaN or infinite values",
            detail="Invalid embedding: values must be finite.",
        )
    return arr.astype(np.float32)


def validate_query_options(
    options: QueryOptions | None, dim: int | None, *, default_top_k: int = DEFAULT_TOP_K
) -> QueryPlan:
    """Check every option of §3.4/§3.6 and apply defaults (raises InvalidArgumentError)."""
    o = options if options is not None else QueryOptions()
    if not isinstance(o, QueryOptions):
        raise InvalidArgumentError(f"options must be QueryOptions, not {type(o).__name__}")
    top_k = default_top_k
    if o.top_k is not None:
        top_k = int(_check_number("top_k", o.top_k, integer=True))
        if top_k < 0:
            raise InvalidArgumentError(f"top_k must be >= 0, got {top_k}")
    alpha = DEFAULT_ALPHA
    if o.alpha is not None:
        alpha = _check_number("alpha", o.alpha)
        if not 0.0 <= alpha <= 1.0:
            raise InvalidArgumentError(f"alpha must be between 0.0 and 1.0, got {o.alpha}")
    min_score = None
    if o.min_score is not None:
        min_score = _check_number("min_score", o.min_score)
        if not 0.0 <= min_score <= 1.0:
            raise InvalidArgumentError(f"min_score must be between 0.0 and 1.0, got {o.min_score}")
    depth = 2 * top_k
    if o.candidate_depth is not None:
        cd = int(_check_number("candidate_depth", o.candidate_depth, integer=True))
        if cd < 1:
            raise InvalidArgumentError(f"candidate_depth must be >= 1, got {cd}")
        depth = cd
    depth = max(depth, top_k)
    fusion = o.fusion if o.fusion is not None else "score"
    if fusion not in ("score", "rrf"):
        raise InvalidArgumentError(f"fusion must be 'score' or 'rrf', not {fusion!r}")
    flt = compile_filter(o.filter) if o.filter is not None else None
    if o.group_by is not None and not isinstance(o.group_by, ParentGrouping):
        raise InvalidArgumentError("group_by must be a ParentGrouping")
    embedding = as_vector(o.embedding, dim) if o.embedding is not None else None
    return QueryPlan(top_k, alpha, depth, fusion, flt, o.group_by, min_score, embedding)

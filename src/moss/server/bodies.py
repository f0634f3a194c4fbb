"""Reading a request's input safely: bodies under size, time and rate limits, JSON under a
nesting limit, query parameters checked against what each endpoint defines.

Split from :mod:`moss.server.app` so the endpoint module stays about endpoints. Everything here
turns bad client input into a 4xx :class:`~moss.errors.MossError` (see docs/security.md for the
limits and their defaults).
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import ClientDisconnect, Request

from ..errors import INVALID_ARGUMENT, InvalidArgumentError
from .limits import Limits, QuotaError

__all__ = [
    "ALLOW",
    "BAD_INPUT",
    "METHODS",
    "QUERY",
    "TooLarge",
    "check_options",
    "int_param",
    "json_depth_ok",
    "json_param",
    "limited",
    "only_params",
]


class TooLarge(InvalidArgumentError):
    status = 413


# Exceptions that malformed client input can raise from the decoders (never from our own state).
BAD_INPUT = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    RecursionError,
    MemoryError,
    struct.error,
)


def json_depth_ok(obj: Any, limit: int) -> bool:
    """Whether ``obj`` nests containers at most ``limit`` deep (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > limit:
                return False
            children = node.values() if isinstance(node, dict) else node
            stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return True


def check_options(obj: Any) -> None:
    """Types of the get_docs options that the engine would otherwise trip over."""
    if not isinstance(obj, dict):
        return  # options_from_json names the problem
    ids = obj.get("doc_ids")
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)):
        raise InvalidArgumentError("doc_ids must be a list of strings")
    flt = obj.get("filter")
    if flt is not None and not isinstance(flt, dict):
        raise InvalidArgumentError("filter must be a JSON object")
    group = obj.get("group_by")
    if isinstance(group, dict):
        for field in ("parent_field", "order_field"):
            if field in group and not isinstance(group[field], str):
                raise InvalidArgumentError(f"group_by.{field} must be a metadata field name")


def only_params(request: Request, *allowed: str) -> None:
    """Refuse query parameters the endpoint does not define (a typo must not pass silently)."""
    unknown = sorted(set(request.query_params) - set(allowed))
    if unknown:
        names = ", ".join(repr(u[:40]) for u in unknown[:5])
        raise InvalidArgumentError(f"unknown query parameter(s) {names} for {request.method}")


def int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise InvalidArgumentError(f"{name} must be an integer from {lo} to {hi}")
    return int(raw)


QUERY = {
    ((), "POST"): ("model_id",),
    (("files",), "POST"): ("model_id", "parse_options"),
    (("docs", "query"), "POST"): ("limit", "cursor"),
}
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]
ALLOW = {
    (): "GET, POST, DELETE",
    ("snapshot",): "GET, PUT",
    ("docs",): "POST",
    ("docs", "delete"): "POST",
    ("docs", "query"): "POST",
    ("query",): "POST",
    ("files",): "POST",
}


def json_param(value: str | None) -> Any:
    """A JSON-encoded query parameter (None when absent)."""
    if value is None or value == "":
        return None
    try:
        return json.loads(value)
    except ValueError as e:
        raise InvalidArgumentError(f"a query parameter is not valid JSON: {e}") from None


async def limited(
    request: Request, limit: int, lim: Limits, *, quota: bool = False
) -> AsyncIterator[bytes]:
    """The request body in chunks, enforcing a size limit (413), an idle timeout and a minimum
    average rate after a grace period (408: a slow body must not hold a worker forever)."""
    what = "the project's storage quota" if quota else f"the limit of {limit} bytes"
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"request body exceeds {what}")
    seen = 0
    start = time.monotonic()
    rate = lim.body_min_rate
    while True:
        elapsed = time.monotonic() - start
        # The moment the bytes seen so far fall below the minimum average rate.
        behind = lim.body_grace_s + seen / rate - elapsed if rate > 0 else math.inf
        wait = min(lim.body_idle_timeout_s, behind)
        try:
            if wait <= 0:
                raise asyncio.TimeoutError
            message = await asyncio.wait_for(request.receive(), wait)
        except asyncio.TimeoutError:
            raise QuotaError(
                f"request body arrived too slowly (under {rate:.0f} bytes/s on average, or "
                f"nothing for {lim.body_idle_timeout_s:g} s)",
                status=408,
                code=INVALID_ARGUMENT,
            ) from None
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen > limit:
            raise TooLarge(f"request body exceeds {what}")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return

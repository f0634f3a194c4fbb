"""How the ``moss serve`` API answers a failure (:mod:`moss.server.app`'s error mapping).

Errors are ``{"error": {"code", "message", "detail"}}`` with a status per code (an error class may
set its own ``status``, and ``retry_after`` becomes a ``Retry-After`` header); anything unexpected
is logged and answered with a generic ``INTERNAL`` body, never a stack trace. :func:`guard` wraps
every endpoint so that an error becomes a response *returned* to uvicorn (not an exception raised
through it), which keeps the keep-alive connection open; the ``on_*`` handlers are the app's
exception handlers for whatever escapes outside an endpoint.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from ..cloud.wire import error_body
from ..errors import (
    ALREADY_EXISTS,
    DESERIALIZATION,
    INTERNAL,
    INVALID_ARGUMENT,
    MODEL_UNAVAILABLE,
    NOT_FOUND,
    UNAUTHORIZED,
    MossError,
)
from ..sources import CONFLICT

__all__ = [
    "error_response",
    "guard",
    "on_disconnect",
    "on_http_error",
    "on_moss_error",
    "on_unexpected",
]

# The API's logger, named as before this module was split from moss.server.app.
log = logging.getLogger("moss.server.app")

_STATUS = {
    INVALID_ARGUMENT: 400,
    UNAUTHORIZED: 401,
    NOT_FOUND: 404,
    ALREADY_EXISTS: 409,
    CONFLICT: 409,
    DESERIALIZATION: 422,
    MODEL_UNAVAILABLE: 503,
    INTERNAL: 500,
}


def error_response(err: MossError) -> JSONResponse:
    """The error body of ``err`` with its status (and ``Retry-After``, if it has one)."""
    status = getattr(err, "status", None) or _STATUS.get(err.code or INTERNAL, 500)
    headers = None
    retry = getattr(err, "retry_after", None)
    if retry is not None:
        headers = {"Retry-After": str(max(1, math.ceil(retry)))}
    return JSONResponse(error_body(err), status_code=status, headers=headers)


async def on_moss_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MossError)
    return error_response(exc)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = NOT_FOUND if exc.status_code == 404 else INVALID_ARGUMENT
    err = MossError(f"{exc.detail}: {request.method} {request.url.path}", code=code)
    return JSONResponse(error_body(err), status_code=exc.status_code, headers=exc.headers)


async def on_disconnect(request: Request, exc: Exception) -> Response:
    return Response(status_code=400)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(MossError("internal server error", code=INTERNAL))


def guard(handler: Callable[[Request], Awaitable[Response]]) -> Callable[..., Any]:
    """Answer every error from ``handler`` with a response (see the module docstring)."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except MossError as e:
            return error_response(e)
        except ClientDisconnect:
            return Response(status_code=400)
        except HTTPException as e:
            return await on_http_error(request, e)
        except Exception as e:
            return await on_unexpected(request, e)

    return endpoint

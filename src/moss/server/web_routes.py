"""The web-source endpoints of the ``moss serve`` API (``/v1/web-sources...``).

Thin handlers over :attr:`Store.web <moss.server.store.Store>` (:mod:`moss.server.websources`);
:func:`web_source_routes` gives :func:`~moss.server.app.create_app` their routes, each wrapped by
:func:`~moss.server.http_errors.guard`. Authentication and JSON bodies come from the app, so every
``/v1`` endpoint reads its input under the same limits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import InvalidArgumentError
from ..sources import check_source_id, web_source_to_json
from .bodies import only_params
from .http_errors import guard
from .store import Store

__all__ = ["web_source_routes"]

T = TypeVar("T")


def web_source_routes(
    store: Store,
    authenticate: Callable[[Request], Awaitable[str]],
    read_json: Callable[[Request], Awaitable[Any]],
) -> list[Route]:
    """The routes of the web-source endpoints.

    Args:
        store: the app's store.
        authenticate: the request's project id (or a ``MossError``).
        read_json: the request's JSON body, under the app's limits.
    """

    async def call(fn: Callable[..., T], *args: Any) -> T:
        return await run_in_threadpool(fn, *args)

    async def web_sources(request: Request) -> Response:
        project = await authenticate(request)
        only_params(request, *(("index_name",) if request.method == "GET" else ()))
        if request.method == "GET":
            index_name = request.query_params.get("index_name")
            found = await call(store.web.list, project, index_name)
            return JSONResponse([web_source_to_json(s) for s in found])
        body = await read_json(request)
        if not isinstance(body, dict):
            raise InvalidArgumentError("the request body must be a JSON object")
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise InvalidArgumentError("options must be a JSON object")
        created = await call(
            store.web.create, project, body.get("index_name"), body.get("root_url"), options
        )
        return JSONResponse({**web_source_to_json(created), "job_id": created.job_id})

    async def web_source(request: Request) -> Response:
        project = await authenticate(request)
        source_id = check_source_id(request.path_params["source_id"])
        only_params(request)
        if request.method == "GET":
            return JSONResponse(web_source_to_json(await call(store.web.get, project, source_id)))
        if request.method == "DELETE":
            gone = await call(store.web.delete, project, source_id)
            return JSONResponse(
                {"deleted": gone.deleted, "id": gone.id, "purge_job_id": gone.purge_job_id}
            )
        body = await read_json(request)
        if not isinstance(body, dict):
            raise InvalidArgumentError("the request body must be a JSON object of options")
        updated = await call(store.web.update, project, source_id, body)
        return JSONResponse({**web_source_to_json(updated), "job_id": updated.job_id})

    async def resync_web_source(request: Request) -> Response:
        project = await authenticate(request)
        source_id = check_source_id(request.path_params["source_id"])
        only_params(request)
        started = await call(store.web.resync, project, source_id)
        return JSONResponse({"id": started.id, "job_id": started.job_id, "status": started.status})

    return [
        Route("/v1/web-sources", guard(web_sources), methods=["GET", "POST"]),
        Route(
            "/v1/web-sources/{source_id}",
            guard(web_source),
            methods=["GET", "PATCH", "DELETE"],
        ),
        Route("/v1/web-sources/{source_id}/resync", guard(resync_web_source), methods=["POST"]),
    ]

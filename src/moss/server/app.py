"""The ``moss serve`` HTTP API: a thin Starlette layer over :class:`~moss.server.store.Store`.

Every ``/v1`` endpoint authenticates the project (``X-Moss-Project-Id`` plus ``Authorization:
Bearer <project_key>``) and acts only on that project's indexes and jobs. Metadata travels as JSON;
snapshots and document batches travel as ``application/octet-stream`` in the snapshot container
format (vectors as raw float32, never JSON numbers), streamed to and from disk.

Index names appear in paths percent-encoded. The route is parsed from the *raw* path, so an
encoded ``/`` stays inside the name and is rejected by the §3.9 name check (``..%2Fx`` ->
``INVALID_ARGUMENT``) instead of being decoded into another route.

Errors are ``{"error": {"code", "message", "detail"}}`` with a status per code
(:mod:`moss.server.http_errors`); anything unexpected is logged and answered with a generic
``INTERNAL`` body, never a stack trace. Every endpoint is wrapped so that an error becomes a
response *returned* to uvicorn (not an exception raised through it), which keeps the keep-alive
connection open. Malformed client input — JSON nested deeper than ``max_json_depth``, options of
the wrong type, a corrupt binary body — is a 4xx.

Limits (:mod:`moss.server.limits`, docs/security.md): failed authentications are throttled per
client address (429 + ``Retry-After``); bodies must arrive at a minimum rate and never stall
longer than ``body_idle_timeout_s`` (408); concurrent uploads are capped (429); per-project
quotas answer 413/429. ``get_docs`` over HTTP is paginated (``?limit=&cursor=``, the next cursor
in ``X-Moss-Next-Cursor``) so no response holds a whole index.

Endpoints (also in ``/openapi.json``)::

    GET    /v1/indexes                        list indexes
    POST   /v1/indexes/{name}?model_id=       create (body: document batch) -> job
    GET    /v1/indexes/{name}                 index info
    DELETE /v1/indexes/{name}                 delete
    GET    /v1/indexes/{name}/snapshot        download the current version (If-None-Match)
    PUT    /v1/indexes/{name}/snapshot        push: create or replace (body: snapshot) -> job
    POST   /v1/indexes/{name}/docs            add documents (body: document batch) -> job
    POST   /v1/indexes/{name}/docs/delete     delete documents (JSON {"ids": [...]}) -> job
    POST   /v1/indexes/{name}/docs/query?limit=&cursor=   get_docs (JSON options) -> one page
    POST   /v1/indexes/{name}/query           run a query (JSON QueryOptions + "query") on the
                                              current version -> SearchResult (QueryService)
    POST   /v1/indexes/{name}/files?model_id=&parse_options=   create from files (body: MOSSFILES
                                              container, moss.cloud.wire) -> job
    GET    /v1/jobs/{job_id}?wait=SECONDS     job state (optionally long-polling until finished)
    POST   /v1/web-sources                    create a web source (JSON) -> source + job_id
    GET    /v1/web-sources?index_name=        list web sources, newest first
    GET    /v1/web-sources/{id}               one web source
    PATCH  /v1/web-sources/{id}               update (JSON options) -> source + job_id
    DELETE /v1/web-sources/{id}               delete -> {deleted, id, purge_job_id}
    POST   /v1/web-sources/{id}/resync        start a crawl -> {id, job_id, status}

Web sources crawl from the server (their endpoints: :mod:`moss.server.web_routes`). Root URLs
resolving to private, loopback or link-local addresses are refused unless the operator allows them
(``allow_private_crawl=True``, ``python -m moss.server --allow-private-crawl`` or
``MOSS_ALLOW_PRIVATE_CRAWL=1``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any, BinaryIO, TypeVar
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..cloud.query_wire import query_from_json, result_to_json
from ..cloud.wire import (
    JobRecord,
    docs_to_json,
    index_to_json,
    job_to_json,
    options_from_json,
)
from ..errors import (
    DESERIALIZATION,
    NOT_FOUND,
    UNAUTHORIZED,
    InvalidArgumentError,
    MossError,
)
from ..input_limits import check_json, enforced, for_upload
from ..sources import CONFLICT
from ..types import GetDocumentsOptions, validate_index_name
from .auth import FailureThrottle
from .bodies import (
    ALLOW,
    BAD_INPUT,
    METHODS,
    QUERY,
    check_options,
    int_param,
    json_depth_ok,
    json_param,
    limited,
    only_params,
)
from .catalog import JobRow
from .http_errors import guard, on_disconnect, on_http_error, on_moss_error, on_unexpected
from .limits import RATE_LIMITED, Limits, QuotaError, Quotas
from .openapi import openapi_document
from .queries import QueryService
from .store import Store, job_status
from .web_routes import web_source_routes

__all__ = ["DEFAULT_MAX_JSON_BYTES", "DEFAULT_MAX_UPLOAD_BYTES", "create_app"]

T = TypeVar("T")

DEFAULT_MAX_UPLOAD_BYTES = Limits.max_upload_bytes
DEFAULT_MAX_JSON_BYTES = Limits.max_json_bytes
_CHUNK = 4 << 20
_MAX_WAIT_S = 30.0
PROJECT_HEADER = "x-moss-project-id"
ALLOW_PRIVATE_CRAWL_ENV = "MOSS_ALLOW_PRIVATE_CRAWL"
_TRUE = ("1", "true", "yes", "on")


class _Changes:
    """Lets async long-polls wait for the job runner thread without holding a worker thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.event = asyncio.Event()

    def fire(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self.loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:
        self.event.set()
        self.event = asyncio.Event()


def create_app(
    data_dir: str | os.PathLike[str],
    *,
    limits: Limits | None = None,
    quotas: Quotas | None = None,
    query_cache_indexes: int | None = None,
    query_cache_bytes: int | None = None,
    allow_private_crawl: bool | None = None,
    store_options: dict[str, Any] | None = None,
    **overrides: Any,
) -> Starlette:
    """The ASGI app serving the data directory ``data_dir`` (created if missing).

    Args:
        data_dir: the store's directory (catalog, blobs).
        limits: request limits (default: :meth:`Limits.from_env`).
        quotas: per-project quotas (default: :meth:`Quotas.from_env`).
        query_cache_indexes, query_cache_bytes: bounds of the cache of loaded versions that
            answers ``POST /v1/indexes/{name}/query`` (:class:`~moss.server.queries.QueryService`;
            default ``MOSS_QUERY_CACHE_INDEXES``/``MOSS_QUERY_CACHE_BYTES``, else 8 and 2 GiB).
        allow_private_crawl: let web sources crawl private/loopback/link-local addresses
            (None: the ``MOSS_ALLOW_PRIVATE_CRAWL`` environment variable, ``1`` to allow).
        store_options: more :class:`Store` arguments (``catalog=``, ``blobs=``, ``role=``: a
            cluster node, see :mod:`moss.server.store`).
        overrides: individual :class:`Limits` fields, e.g. ``max_upload_bytes=``.
    """
    if allow_private_crawl is None:
        allow_private_crawl = os.environ.get(ALLOW_PRIVATE_CRAWL_ENV, "").lower() in _TRUE
    lim = limits or Limits.from_env()
    unknown = set(overrides) - {f.name for f in dataclasses.fields(Limits)}
    if unknown:
        raise TypeError(f"create_app() got unknown limits: {', '.join(sorted(unknown))}")
    lim = dataclasses.replace(lim, **overrides)
    max_json_bytes = lim.max_json_bytes
    input_limits = lim.input_limits()
    store = Store(
        data_dir,
        allow_private_crawl=allow_private_crawl,
        quotas=quotas if quotas is not None else Quotas.from_env(),
        **(store_options or {}),
    )
    throttle = FailureThrottle(lim.auth_failures_burst, lim.auth_failures_per_s)
    queries = QueryService(store, max_indexes=query_cache_indexes, max_bytes=query_cache_bytes)
    uploads = [0]  # bodies being received now (one event loop: no lock needed)
    pages: OrderedDict[tuple[str, str, str, str], list[Any]] = OrderedDict()
    changes: list[_Changes] = []

    def listener() -> None:
        for c in list(changes):
            c.fire()

    store.listeners.append(listener)

    async def call(fn: Callable[..., T], *args: Any) -> T:
        return await run_in_threadpool(fn, *args)

    async def authenticate(request: Request) -> str:
        addr = request.client.host if request.client else "unknown"
        retry = throttle.retry_after(addr)
        if retry is not None:
            raise QuotaError(
                "too many failed authentications from this address; retry later",
                status=429,
                code=RATE_LIMITED,
                retry_after=retry,
            )
        auth = request.headers.get("authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        project = request.headers.get(PROJECT_HEADER)
        try:
            # In a worker thread: the catalog read may wait for a write transaction.
            return await call(store.authenticate, project, key)
        except MossError as e:
            if e.code == UNAUTHORIZED:
                throttle.failed(addr)
            raise

    async def read_json(request: Request) -> Any:
        body = bytearray()
        async for chunk in limited(request, max_json_bytes, lim):
            body += chunk
        check_json(body, "the request body", input_limits)  # before json.loads builds it
        try:
            obj = json.loads(body) if body else {}
        except RecursionError:
            obj = None
        except ValueError as e:
            raise InvalidArgumentError(f"request body is not valid JSON: {e}") from e
        if (obj is None and body.strip() != b"null") or not json_depth_ok(obj, lim.max_json_depth):
            raise InvalidArgumentError(
                f"request body nests JSON deeper than {lim.max_json_depth} levels"
            )
        return obj

    def finish_limited(job: JobRow, received: int) -> JobRow:
        # the decoders below check the input's sizes; a large upload may hold more values
        with enforced(for_upload(input_limits, received)):
            return store.finish(job)

    async def finish(job: JobRow, received: int) -> JobRow:
        """Validate and queue ``job``, whose input of ``received`` bytes is written."""
        try:
            return await call(finish_limited, job, received)
        except MossError:
            raise
        except BAD_INPUT as e:  # a decoder tripped over a malformed body
            raise MossError(
                f"the request body is malformed ({type(e).__name__})", code=DESERIALIZATION
            ) from None

    async def upload(request: Request, job: JobRow) -> JobRow:
        """Stream the body into the job's input blob, then validate and queue the job."""
        try:
            if uploads[0] >= lim.max_concurrent_uploads:
                raise QuotaError(
                    f"the server is receiving {uploads[0]} uploads; retry shortly",
                    status=429,
                    retry_after=1.0,
                )
            limit = lim.max_upload_bytes
            allowance = await call(store.upload_allowance, job.project_id)
            quota = allowance is not None and allowance < limit
            if quota:
                assert allowance is not None
                limit = allowance
            uploads[0] += 1
            received = 0
            try:
                with store.input_writer(job) as f:
                    async for chunk in limited(request, limit, lim, quota=quota):
                        f.write(chunk)
                        received += len(chunk)
            finally:
                uploads[0] -= 1
        except BaseException as e:
            await call(store.abort, job, e)
            raise
        return await finish(job, received)

    async def docs_page(request: Request, project: str, name: str) -> Response:
        """One page of get_docs; pages are cut from one version's full, ordered result."""
        body = await read_json(request)
        check_options(body)
        options = options_from_json(body)
        size = lim.docs_page_size
        limit = int_param(request, "limit", size, 1, size)
        cursor = request.query_params.get("cursor")
        offset, want = 0, None
        if cursor:
            want, _, off = cursor.rpartition(":")
            if not off.isdigit() or len(off) > 12:
                raise InvalidArgumentError("cursor is not one this server issued")
            offset = int(off)
        version, docs = await cached_docs(project, name, options, body)
        if want is not None and want != version:
            raise MossError(
                f"index {name!r} changed while its documents were paged; start again",
                code=CONFLICT,
            )
        page = docs[offset : offset + limit]
        headers = {"X-Moss-Version": version}
        if offset + limit < len(docs):
            headers["X-Moss-Next-Cursor"] = f"{version}:{offset + limit}"
        return JSONResponse(docs_to_json(page), headers=headers)

    async def cached_docs(
        project: str, name: str, options: GetDocumentsOptions, body: Any
    ) -> tuple[str, list[Any]]:
        # The (small) cache keeps a paging client from recomputing the whole result per page.
        current = (await call(store.get_index, project, name)).version
        options_key = json.dumps(body, sort_keys=True, default=str)
        hit = pages.get((project, name, current, options_key))
        if hit is not None:
            pages.move_to_end((project, name, current, options_key))
            return current, hit
        try:
            version, docs = await call(store.get_docs_versioned, project, name, options)
        except MossError:
            raise
        except BAD_INPUT as e:  # options of the right JSON types but unusable values
            raise InvalidArgumentError(
                f"invalid get_docs options ({type(e).__name__}: {e})"
            ) from None
        pages[(project, name, version, options_key)] = docs
        while len(pages) > 4:
            pages.popitem(last=False)
        return version, docs

    def job_json(job: JobRow) -> JSONResponse:
        return JSONResponse(job_to_json(JobRecord(job_status(job), job.index_name, job.doc_count)))

    # ------------------------------------------------------------------ endpoints

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def list_indexes(request: Request) -> Response:
        project = await authenticate(request)
        only_params(request)
        infos = await call(store.list_indexes, project)
        return JSONResponse([index_to_json(i) for i in infos])

    async def job(request: Request) -> Response:
        project = await authenticate(request)
        job_id = request.path_params["job_id"]
        only_params(request, "wait")
        try:
            wait = min(float(request.query_params.get("wait", "0")), _MAX_WAIT_S)
        except ValueError:
            raise InvalidArgumentError("wait must be a number of seconds") from None
        if not changes:
            changes.append(_Changes(asyncio.get_running_loop()))
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            event = changes[0].event  # taken before the read, so no change is missed
            row = await call(store.get_job, project, job_id)
            left = deadline - time.monotonic()
            if row.terminal or left <= 0:
                return job_json(row)
            with contextlib.suppress(asyncio.TimeoutError):
                # A cap covers jobs finished by another process sharing the directory.
                await asyncio.wait_for(event.wait(), min(left, 0.5))

    async def index_resource(request: Request) -> Response:
        project = await authenticate(request)
        name, sub = _split(request)
        method = request.method
        only_params(request, *QUERY.get((sub, method), ()))
        if sub == () and method == "GET":
            return JSONResponse(index_to_json(await call(store.get_index, project, name)))
        if sub == () and method == "DELETE":
            return JSONResponse({"deleted": await call(store.delete_index, project, name)})
        if sub == () and method == "POST":
            model_id = request.query_params.get("model_id")
            job = await call(store.begin, project, name, "create", {"model_id": model_id})
            return job_json(await upload(request, job))
        if sub == ("snapshot",) and method == "GET":
            return await download(request, project, name)
        if sub == ("snapshot",) and method == "PUT":
            job = await call(store.begin, project, name, "push")
            return job_json(await upload(request, job))
        if sub == ("docs",) and method == "POST":
            job = await call(store.begin, project, name, "add")
            return job_json(await upload(request, job))
        if sub == ("docs", "delete") and method == "POST":
            body = await read_json(request)
            job = await call(store.begin, project, name, "delete")
            data = json.dumps({"ids": body.get("ids") if isinstance(body, dict) else None})
            raw = data.encode("utf-8")
            try:
                with store.input_writer(job) as f:
                    f.write(raw)
            except BaseException as e:
                await call(store.abort, job, e)
                raise
            return job_json(await finish(job, len(raw)))
        if sub == ("files",) and method == "POST":
            params = {
                "model_id": request.query_params.get("model_id"),
                "parse_options": json_param(request.query_params.get("parse_options")),
            }
            job = await call(store.begin, project, name, "files", params)
            return job_json(await upload(request, job))
        if sub == ("docs", "query") and method == "POST":
            return await docs_page(request, project, name)
        if sub == ("query",) and method == "POST":
            text, options = query_from_json(await read_json(request))
            result = await call(queries.query, project, name, text, options)
            return JSONResponse(result_to_json(result))
        allowed = ALLOW.get(sub)
        if allowed is None:
            raise MossError(f"no such endpoint: {method} {request.url.path}", code=NOT_FOUND)
        raise HTTPException(405, headers={"Allow": allowed})

    def presign_version(project: str, name: str, tag: str | None) -> tuple[str, str | None]:
        """The current version and a presigned URL of its blob (None: unchanged or unsigned)."""
        validate_index_name(name)
        row = store.catalog.get_index(project, name)
        if row is None:
            raise MossError(f"index {name!r} not found", code=NOT_FOUND)
        if row.version is None:
            raise MossError(f"index {name!r} has no completed version yet", code=NOT_FOUND)
        version = row.version.removeprefix("versions/")
        if tag == version:
            return version, None
        return version, store.blobs.presign(row.version, int(lim.redirect_expires_s))

    async def download(request: Request, project: str, name: str) -> Response:
        tag = request.headers.get("if-none-match")
        if tag is not None:
            tag = tag.strip().removeprefix("W/").strip('"')
        headers: dict[str, str]
        if lim.redirect_downloads:  # 304 if unchanged, else 307 to a presigned URL if possible
            version, url = await call(presign_version, project, name, tag)
            headers = {"ETag": f'"{version}"', "X-Moss-Version": version}
            if url is None and tag == version:
                return Response(status_code=304, headers=headers)
            if url is not None:
                headers["Location"] = url
                headers["Cache-Control"] = "no-store"  # the URL expires; never cache the redirect
                return Response(status_code=307, headers=headers)
        version, f, size = await call(store.open_version, project, name, tag)
        headers = {"ETag": f'"{version}"', "X-Moss-Version": version}
        if f is None:
            return Response(status_code=304, headers=headers)
        headers["Content-Length"] = str(size)
        return StreamingResponse(
            _stream_file(f), media_type="application/octet-stream", headers=headers
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        changes.append(_Changes(asyncio.get_running_loop()))
        try:
            yield
        finally:
            await run_in_threadpool(store.close, drain=True, wait=True, timeout=30.0)

    app = Starlette(
        routes=[
            Route("/openapi.json", guard(openapi), methods=["GET"]),
            Route("/healthz", guard(health), methods=["GET"]),
            Route("/v1/indexes", guard(list_indexes), methods=["GET"]),
            Route("/v1/jobs/{job_id}", guard(job), methods=["GET"]),
            *web_source_routes(store, authenticate, read_json),
            # Every method: index_resource answers 405 with the sub-resource's own Allow.
            Route("/v1/indexes/{rest:path}", guard(index_resource), methods=METHODS),
        ],
        exception_handlers={
            MossError: on_moss_error,
            HTTPException: on_http_error,
            ClientDisconnect: on_disconnect,
            Exception: on_unexpected,
        },
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.queries = queries
    app.state.limits = lim
    return app


def _split(request: Request) -> tuple[str, tuple[str, ...]]:
    """Index name and sub-resource from the raw (still percent-encoded) path."""
    raw = request.scope.get("raw_path") or request.scope["path"].encode("utf-8")
    path = raw.decode("latin-1").split("?", 1)[0]
    rest = path[len("/v1/indexes/") :]
    parts = rest.split("/")
    try:
        name = unquote(parts[0], encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise InvalidArgumentError("index name is not valid UTF-8") from None
    return name, tuple(parts[1:])


async def _stream_file(f: BinaryIO) -> AsyncIterator[bytes]:
    try:
        while True:
            chunk = await run_in_threadpool(f.read, _CHUNK)
            if not chunk:
                break
            yield chunk
    finally:
        f.close()

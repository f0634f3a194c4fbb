"""The HTTP backend: an ``httpx`` client of a ``moss serve`` server.

Requests carry the project id and key (``X-Moss-Project-Id``, ``Authorization: Bearer``); the key
is shown to nobody else. Error responses are rebuilt into the exception class the server raised
(:func:`moss.errors.error_from_code`), so code catching ``AlreadyExistsError`` or checking
``e.code == "NOT_FOUND"`` behaves the same as with the embedded store. Transport failures
(refused connection, timeout, reset) become ``MossError(code="NETWORK")``.

Snapshots download straight into one preallocated buffer (the server sends ``Content-Length``),
and a download names the version already held (``If-None-Match``) so an unchanged index costs one
small request and no transfer. A server over an object store may answer a download with a redirect
to a presigned URL; that GET goes out on a second client that carries no moss credentials.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urljoin

import httpx

from ..errors import DESERIALIZATION, NETWORK, UNAUTHORIZED, MossError
from ..sources import (
    CreateWebSourceResult,
    DeleteWebSourceResult,
    ResyncWebSourceResult,
    UpdateWebSourceResult,
    WebSource,
    web_source_from_json,
)
from ..types import DocumentInfo, GetDocumentsOptions, IndexInfo, QueryOptions, SearchResult
from .query_wire import query_to_json, result_from_json
from .wire import (
    FilesUpload,
    JobRecord,
    docs_from_json,
    error_from_body,
    index_from_json,
    job_from_json,
    options_to_json,
)

__all__ = ["CONNECT_TIMEOUT_S", "HttpBackend"]

CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 120.0
_OCTET = {"Content-Type": "application/octet-stream"}
_UPLOAD_CHUNK = 4 << 20
_REDIRECTS = (301, 302, 303, 307, 308)


def _chunks(data: bytes) -> Iterator[bytes]:
    # httpx sends one large bytes body several times slower than the same bytes in a few large
    # chunks (measured: 200 MiB over loopback, 3.7 s against 0.45 s), so uploads are chunked.
    view = memoryview(data)
    for start in range(0, len(view), _UPLOAD_CHUNK):
        yield bytes(view[start : start + _UPLOAD_CHUNK])


def _upload(data: bytes) -> dict[str, Any]:
    """Request arguments sending ``data`` as a binary body with its length declared."""
    return {
        "content": _chunks(data),
        "headers": {**_OCTET, "Content-Length": str(len(data))},
    }


def _path(name: str) -> str:
    # Dots are encoded too, so "." and ".." reach the server as names (and are rejected there)
    # instead of being resolved away as path segments.
    return "/v1/indexes/" + quote(name, safe="").replace(".", "%2E")


def _source_path(source_id: str) -> str:
    return "/v1/web-sources/" + quote(source_id, safe="")


def _read_body(r: httpx.Response, name: str) -> bytearray:
    """A streamed snapshot body in one preallocated buffer (grown if the length was wrong)."""
    size = int(r.headers.get("content-length") or 0)
    buf = bytearray(size)
    view = memoryview(buf)
    filled = 0
    for chunk in r.iter_raw(4 << 20):
        end = filled + len(chunk)
        if end > len(buf):  # no or wrong Content-Length: grow
            view.release()
            buf.extend(b"\0" * (end - len(buf)))
            view = memoryview(buf)
        view[filled:end] = chunk
        filled = end
    view.release()
    if filled != len(buf):
        raise MossError(f"the download of index {name!r} was truncated", code=DESERIALIZATION)
    return buf


class HttpBackend:
    """:class:`~moss.cloud.base.Backend` talking to ``moss serve`` at ``base_url``."""

    def __init__(
        self,
        base_url: str,
        project_id: str,
        project_key: str,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.base_url,
            headers={
                "X-Moss-Project-Id": project_id,
                "Authorization": f"Bearer {project_key}",
                "User-Agent": "moss-python",
            },
            timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
            transport=transport,
        )
        self._bare: httpx.Client | None = None  # for presigned download URLs (no credentials)

    # -------------------------------------------------------------- plumbing

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.request(method, url, **kwargs)
        except httpx.TransportError as e:
            raise self._network(e) from e
        if response.status_code >= 400:
            raise self._error(response)
        return response

    def _network(self, e: Exception) -> MossError:
        if isinstance(e, httpx.LocalProtocolError):  # nothing was sent: e.g. a key with a newline
            return MossError(
                f"the request to the moss server at {self.base_url} could not be sent "
                "(is the project key empty or malformed?)",
                code=UNAUTHORIZED,
                detail=type(e).__name__,  # not str(e): it quotes the header, key included
            )
        return MossError(
            f"cannot reach the moss server at {self.base_url}: {type(e).__name__}",
            code=NETWORK,
            detail=str(e),
        )

    def _error(self, response: httpx.Response) -> MossError:
        try:
            err = error_from_body(response.json())
        except ValueError:
            err = None
        if err is not None:
            return err
        if response.status_code in (401, 403):
            return MossError("the server rejected the project credentials", code=UNAUTHORIZED)
        return MossError(
            f"unexpected response from the moss server: HTTP {response.status_code}",
            code=DESERIALIZATION,
            detail=response.text[:500],
        )

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as e:
            raise MossError(
                "the moss server sent a response that is not JSON", code=DESERIALIZATION
            ) from e

    def _job(self, response: httpx.Response) -> JobRecord:
        return job_from_json(self._json(response))

    # -------------------------------------------------------------- jobs

    def create_index(self, name: str, model_id: str, batch: bytes) -> JobRecord:
        r = self._request("POST", _path(name), params={"model_id": model_id}, **_upload(batch))
        return self._job(r)

    def add_docs(self, name: str, batch: bytes) -> JobRecord:
        return self._job(self._request("POST", _path(name) + "/docs", **_upload(batch)))

    def delete_docs(self, name: str, ids: list[str]) -> JobRecord:
        body = json.dumps({"ids": ids}).encode("utf-8")
        return self._job(
            self._request(
                "POST",
                _path(name) + "/docs/delete",
                content=body,
                headers={"Content-Type": "application/json"},
            )
        )

    def push(self, name: str, snapshot: bytes) -> JobRecord:
        return self._job(self._request("PUT", _path(name) + "/snapshot", **_upload(snapshot)))

    def get_job(self, job_id: str, wait: float = 0.0) -> JobRecord:
        params = {"wait": f"{wait:.3f}"} if wait > 0 else None
        timeout = httpx.Timeout(READ_TIMEOUT_S + wait, connect=CONNECT_TIMEOUT_S)
        url = "/v1/jobs/" + quote(job_id, safe="")
        return self._job(self._request("GET", url, params=params, timeout=timeout))

    # -------------------------------------------------------------- reads

    def get_index(self, name: str) -> IndexInfo:
        return index_from_json(self._json(self._request("GET", _path(name))))

    def list_indexes(self) -> list[IndexInfo]:
        body = self._json(self._request("GET", "/v1/indexes"))
        if not isinstance(body, list):
            raise MossError("the moss server sent a malformed index list", code=DESERIALIZATION)
        return [index_from_json(i) for i in body]

    def delete_index(self, name: str) -> bool:
        return bool(self._json(self._request("DELETE", _path(name))).get("deleted", False))

    def get_docs(self, name: str, options: GetDocumentsOptions | None) -> list[DocumentInfo]:
        """Every matching document: the server answers in pages (``X-Moss-Next-Cursor``), read
        here until the last; restarted if the index changes between pages (409)."""
        body = json.dumps(options_to_json(options)).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        for attempt in range(3):
            docs: list[DocumentInfo] = []
            cursor: str | None = None
            while True:
                url = _path(name) + "/docs/query"
                params = {"cursor": cursor} if cursor else None
                r = self._request("POST", url, content=body, headers=headers, params=params)
                if r.status_code == 409 and cursor is not None and attempt < 2:
                    break  # the index changed under the pages: start again
                docs.extend(docs_from_json(self._json(r)))
                cursor = r.headers.get("x-moss-next-cursor")
                if not cursor:
                    return docs
        raise MossError(
            f"index {name!r} kept changing while its documents were read", code="CONFLICT"
        )

    def query(self, name: str, text: str, options: QueryOptions | None) -> SearchResult:
        body = query_to_json(text, options)
        headers = {"Content-Type": "application/json"}
        r = self._request("POST", _path(name) + "/query", content=body, headers=headers)
        return result_from_json(self._json(r))

    def download(self, name: str, if_version: str | None = None) -> tuple[str, Any]:
        """The current version of ``name`` and its snapshot bytes (None if ``if_version`` is
        still current). A ``307`` to a presigned object-store URL is followed here, without the
        project credentials, and retried from the start if that URL has expired."""
        headers = {"If-None-Match": f'"{if_version}"'} if if_version is not None else {}
        for _ in range(3):
            try:
                with self._client.stream("GET", _path(name) + "/snapshot", headers=headers) as r:
                    version = r.headers.get("x-moss-version", "")
                    if r.status_code == 304:
                        return version or (if_version or ""), None
                    location = r.headers.get("location")
                    if r.status_code not in _REDIRECTS or not location:
                        if r.status_code >= 400:
                            r.read()
                            raise self._error(r)
                        return version, _read_body(r, name)
                    target = urljoin(str(r.url), location)
            except httpx.TransportError as e:
                raise self._network(e) from e
            buf = self._follow(target, name)
            if buf is not None:
                return version, buf
        raise MossError(
            f"the download of index {name!r} kept failing at the object store", code=NETWORK
        )

    def _follow(self, url: str, name: str) -> bytearray | None:
        """GET a presigned URL with a bare client (no moss headers: the URL is its own
        credential and the host is not the moss server). None: expired or gone, ask again."""
        if self._bare is None:
            self._bare = httpx.Client(
                headers={"User-Agent": "moss-python"},
                timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
                follow_redirects=True,  # safe: this client carries no credentials
            )
        host = httpx.URL(url).host  # never the query string: it holds the signature
        try:
            with self._bare.stream("GET", url) as r:
                if r.status_code in (403, 404):
                    return None
                if r.status_code >= 400:
                    raise MossError(
                        f"the object store at {host} answered HTTP {r.status_code} to the "
                        f"download of index {name!r}",
                        code=NETWORK,
                    )
                return _read_body(r, name)
        except httpx.TransportError as e:
            raise MossError(
                f"cannot reach the object store at {host} to download index {name!r}: "
                f"{type(e).__name__}",
                code=NETWORK,
            ) from e

    # -------------------------------------------------------------- files and web sources

    def create_index_from_files(
        self, name: str, model_id: str, parse_options: dict[str, Any], upload: FilesUpload
    ) -> JobRecord:
        params = {"model_id": model_id}
        if parse_options:
            params["parse_options"] = json.dumps(parse_options)
        r = self._request(
            "POST",
            _path(name) + "/files",
            params=params,
            content=upload.chunks(),
            headers={**_OCTET, "Content-Length": str(upload.size)},
        )
        return self._job(r)

    def _post_json(self, method: str, url: str, body: Any) -> Any:
        r = self._request(
            method,
            url,
            content=json.dumps(body).encode("utf-8"),
            headers={"Content-Type": "application/json"},
        )
        return self._json(r)

    def _source(self, obj: Any, cls: type[WebSource] = WebSource, **extra: Any) -> Any:
        try:
            return web_source_from_json(obj, cls, **extra)
        except (KeyError, TypeError, ValueError) as e:
            raise MossError(
                "the moss server sent a malformed web source", code=DESERIALIZATION, detail=str(e)
            ) from e

    def create_web_source(
        self, root_url: str, index_name: str, options: dict[str, Any]
    ) -> CreateWebSourceResult:
        body = {"root_url": root_url, "index_name": index_name, "options": options}
        obj = self._post_json("POST", "/v1/web-sources", body)
        job_id = obj.get("job_id") if isinstance(obj, dict) else None
        result: CreateWebSourceResult = self._source(obj, CreateWebSourceResult, job_id=job_id)
        return result

    def list_web_sources(self, index_name: str | None) -> list[WebSource]:
        params = {"index_name": index_name} if index_name is not None else None
        body = self._json(self._request("GET", "/v1/web-sources", params=params))
        if not isinstance(body, list):
            raise MossError("the moss server sent a malformed source list", code=DESERIALIZATION)
        return [self._source(s) for s in body]

    def get_web_source(self, source_id: str) -> WebSource:
        source: WebSource = self._source(self._json(self._request("GET", _source_path(source_id))))
        return source

    def update_web_source(self, source_id: str, options: dict[str, Any]) -> UpdateWebSourceResult:
        obj = self._post_json("PATCH", _source_path(source_id), options)
        job_id = obj.get("job_id") if isinstance(obj, dict) else None
        result: UpdateWebSourceResult = self._source(obj, UpdateWebSourceResult, job_id=job_id)
        return result

    def resync_web_source(self, source_id: str) -> ResyncWebSourceResult:
        obj = self._json(self._request("POST", _source_path(source_id) + "/resync"))
        try:
            return ResyncWebSourceResult(str(obj["id"]), str(obj["job_id"]), str(obj["status"]))
        except (KeyError, TypeError) as e:
            raise MossError("the moss server sent a malformed reply", code=DESERIALIZATION) from e

    def delete_web_source(self, source_id: str) -> DeleteWebSourceResult:
        obj = self._json(self._request("DELETE", _source_path(source_id)))
        try:
            purge = obj.get("purge_job_id")
            return DeleteWebSourceResult(
                bool(obj["deleted"]), str(obj["id"]), str(purge) if purge else None
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise MossError("the moss server sent a malformed reply", code=DESERIALIZATION) from e

    def close(self) -> None:
        self._client.close()
        if self._bare is not None:
            self._bare.close()

"""Blobs in an S3-compatible object store (``moss serve --store s3://bucket/prefix``).

Why it is shaped this way:

* **boto3, synchronous.** The server already does blob I/O in worker threads (job runner, the
  Starlette thread pool), so a thread-safe sync client fits without an event loop of its own.
  Checksums are computed and validated only where S3 requires them
  (``request_checksum_calculation="when_required"``): the CRC defaults of boto3 >= 1.36 upset
  several S3-compatible servers, and every moss blob carries its own checksums anyway.
* **Immutable blobs, conditional writes.** Every key is written once, with ``If-None-Match: *``
  (a single PUT, or on ``CompleteMultipartUpload`` for large bodies), so two nodes that ever
  raced for one key cannot overwrite each other: the loser gets ``MossError(code="CONFLICT")``.
  A body is spooled to a node-local temporary file first, so nothing is visible in the bucket
  until the whole blob is; a failed multipart upload is aborted.
* **A bounded node-local cache.** Readers want an mmap (``moss.snapshot`` decodes in place), so
  :meth:`S3BlobStore.read` downloads into ``cache_dir/blobs/<key>`` (temporary file, then
  rename) and maps it. A blob never changes, so a cached copy never goes stale; the cache is an
  LRU bounded by bytes. Evicting only unlinks the file: a mapping or open file stays valid.
  The writer's spooled file becomes the cached copy, so the node that built a version does not
  download it again.
* **Errors are moss errors.** A missing key is ``KeyError`` (as the protocol says); anything else
  from botocore becomes a :class:`~moss.errors.MossError` naming the bucket: ``NETWORK`` when the
  endpoint cannot be reached, ``UNAUTHORIZED`` for missing or refused credentials, ``CONFLICT``
  for a lost conditional write, ``INTERNAL`` otherwise.

boto3 is an optional dependency (``pip install 'mosslite[s3]'``), imported when a store is built.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import re
import secrets
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from ..errors import (
    CONFLICT,
    INTERNAL,
    INVALID_ARGUMENT,
    NETWORK,
    UNAUTHORIZED,
    InvalidArgumentError,
    MossError,
)

__all__ = ["DEFAULT_CACHE_BYTES", "MULTIPART_THRESHOLD", "S3BlobStore"]

log = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 4 << 30
MULTIPART_THRESHOLD = 64 << 20  # bodies above this go up in parts
PART_SIZE = 16 << 20  # S3's minimum part is 5 MiB; 16 MiB parts allow 160 GB blobs
_PART_THREADS = 4
_CHUNK = 1 << 20
_MIN_PART = 5 << 20

# The same key shape as FileBlobStore (the store generates keys; this keeps them out of odd places).
_KEY_RE = re.compile(r"^[a-z]+/[A-Za-z0-9_.-]{1,128}$")
_MISSING = {"404", "NoSuchKey", "NotFound"}
_LOST_RACE = {"PreconditionFailed", "ConditionalRequestConflict"}
_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "403",
}


def _check_key(key: str) -> str:
    if not _KEY_RE.match(key):
        raise ValueError(f"invalid blob key {key!r}")
    return key


class S3BlobStore:
    """:class:`~moss.server.storage.BlobStore` over one bucket and key prefix.

    Args:
        bucket: the bucket (it must exist).
        prefix: key prefix inside the bucket (``""`` for the bucket root).
        cache_dir: node-local directory for downloaded blobs and upload spool files.
        endpoint_url: an S3-compatible endpoint (None: AWS, or ``AWS_ENDPOINT_URL``).
        cache_bytes: bound of the download cache (least recently used blobs are dropped).
        multipart_threshold: bodies larger than this are uploaded in parts of ``part_size``.
        connect_timeout_s, read_timeout_s, max_attempts: botocore timeouts and retries.
        max_pool_connections: HTTP connections kept to the endpoint (one per concurrent thread).
        client: a ready boto3 S3 client (tests); the options above then do not apply.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        cache_dir: str | os.PathLike[str],
        endpoint_url: str | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        part_size: int = PART_SIZE,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        max_attempts: int = 4,
        max_pool_connections: int = 64,
        client: Any = None,
    ) -> None:
        if not bucket:
            raise InvalidArgumentError("an S3 blob store needs a bucket name")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._root = f"{self.prefix}/" if self.prefix else ""
        self.where = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.cache_dir = Path(cache_dir)
        self._blobs = self.cache_dir / "blobs"
        self._spool = self.cache_dir / "spool"
        for d in (self._blobs, self._spool):
            d.mkdir(parents=True, exist_ok=True)
        self.cache_bytes = cache_bytes
        self.multipart_threshold = max(multipart_threshold, _MIN_PART)
        self.part_size = max(part_size, _MIN_PART)
        self.endpoint_url = endpoint_url
        self._client = (
            client
            if client is not None
            else self._make_client(
                endpoint_url, connect_timeout_s, read_timeout_s, max_attempts, max_pool_connections
            )
        )
        self._lock = threading.Lock()
        self._fetching: dict[str, threading.Lock] = {}  # one download per key at a time
        self._lru: OrderedDict[str, int] = OrderedDict()  # key -> bytes, oldest first
        self._cached = 0
        self._scan_cache()

    @classmethod
    def from_url(
        cls, url: str, *, cache_dir: str | os.PathLike[str], **options: Any
    ) -> S3BlobStore:
        """A store for ``s3://bucket/prefix``.

        The endpoint comes from ``MOSS_S3_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL``), credentials
        and region from the standard AWS chain (environment, ``~/.aws``, instance role). The cache
        bound from ``MOSS_S3_CACHE_BYTES`` (default 4 GiB).
        """
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise InvalidArgumentError(f"not an S3 URL (s3://bucket/prefix): {url!r}")
        if parts.query or parts.fragment:
            raise InvalidArgumentError(f"an S3 store URL takes no query or fragment: {url!r}")
        endpoint = os.environ.get("MOSS_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
        options.setdefault("endpoint_url", endpoint or None)
        raw = os.environ.get("MOSS_S3_CACHE_BYTES", "").strip()
        if raw and "cache_bytes" not in options:
            try:
                options["cache_bytes"] = int(raw)
            except ValueError:
                raise InvalidArgumentError(f"MOSS_S3_CACHE_BYTES={raw!r} is not a number") from None
        return cls(parts.netloc, parts.path, cache_dir=cache_dir, **options)

    @staticmethod
    def _make_client(
        endpoint_url: str | None,
        connect_timeout_s: float,
        read_timeout_s: float,
        max_attempts: int,
        pool: int,
    ) -> Any:
        try:
            import boto3
            from botocore.config import Config
            from botocore.exceptions import BotoCoreError
        except ImportError as e:
            raise MossError(
                "an s3:// blob store needs boto3: pip install 'mosslite[s3]'", code=INVALID_ARGUMENT
            ) from e
        config = Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            max_pool_connections=pool,
            signature_version="s3v4",
            # Path-style requests for S3-compatible servers addressed by host:port or IP.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        )
        try:
            session = boto3.session.Session()
            return session.client("s3", endpoint_url=endpoint_url, config=config)
        except (BotoCoreError, ValueError) as e:  # a malformed endpoint, region or AWS config
            raise MossError(f"cannot set up the S3 client: {e}", code=INVALID_ARGUMENT) from e

    # -------------------------------------------------------------- errors

    def _error(self, e: Exception, action: str, key: str | None = None) -> Exception:
        """``KeyError`` for a missing key, a MossError for everything else botocore raises."""
        from botocore import exceptions as bx

        what = f"{action} {key!r} in {self.where}" if key else f"{action} {self.where}"
        if isinstance(e, bx.ClientError):
            err = e.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            message = err.get("Message") or code
            if key is not None and (code in _MISSING or (status == 404 and code != "NoSuchBucket")):
                return KeyError(key)
            if code in _LOST_RACE or status == 412:
                return MossError(
                    f"S3: {what}: another writer created the blob first", code=CONFLICT
                )
            if code == "NoSuchBucket":
                return MossError(
                    f"S3: {what}: bucket {self.bucket!r} does not exist", code=INTERNAL
                )
            if code in _DENIED or status in (401, 403):
                return MossError(
                    f"S3: {what}: access denied ({code}: {message})", code=UNAUTHORIZED
                )
            return MossError(f"S3: {what} failed: {code}: {message}", code=INTERNAL)
        if isinstance(e, bx.NoCredentialsError | bx.PartialCredentialsError):
            return MossError(
                f"S3: {what}: no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "or configure an AWS profile)",
                code=UNAUTHORIZED,
            )
        if isinstance(e, bx.ConnectionError | bx.HTTPClientError):
            endpoint = self.endpoint_url or "AWS"
            return MossError(
                f"S3: {what}: endpoint {endpoint} unreachable ({type(e).__name__})",
                code=NETWORK,
                detail=str(e),
            )
        if isinstance(e, bx.BotoCoreError):
            return MossError(f"S3: {what} failed: {e}", code=INTERNAL)
        return e

    def _call(self, action: str, key: str | None, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, **kwargs)
        except (BotoCoreError, ClientError) as e:
            raise self._error(e, action, key) from None

    def _obj(self, key: str) -> str:
        return self._root + _check_key(key)

    def check(self) -> None:
        """Fail early (a MossError) if the bucket cannot be reached with these credentials."""
        self._call("reach", None, self._client.head_bucket)

    # -------------------------------------------------------------- writes

    @contextlib.contextmanager
    def create(self, key: str) -> Iterator[BinaryIO]:
        """A spooled file uploaded as ``key`` (conditionally) when the block exits cleanly."""
        obj = self._obj(key)
        fd, name = tempfile.mkstemp(prefix="up-", dir=self._spool)
        tmp = Path(name)
        f = os.fdopen(fd, "w+b")
        try:
            yield f
            f.flush()
            size = f.tell()
            f.seek(0)
            if size <= self.multipart_threshold:
                self._call(
                    "write",
                    key,
                    self._client.put_object,
                    Key=obj,
                    Body=f,
                    ContentLength=size,
                    IfNoneMatch="*",
                )
            else:
                self._multipart(key, obj, f, size)
            f.close()
            self._adopt(key, tmp, size)
        finally:
            f.close()
            tmp.unlink(missing_ok=True)

    def _multipart(self, key: str, obj: str, f: BinaryIO, size: int) -> None:
        upload = self._call(
            "start an upload of", key, self._client.create_multipart_upload, Key=obj
        )
        upload_id = upload["UploadId"]
        fileno = f.fileno()

        def part(number: int) -> dict[str, Any]:
            offset = (number - 1) * self.part_size
            body = os.pread(fileno, min(self.part_size, size - offset), offset)
            r = self._call(
                "upload a part of",
                key,
                self._client.upload_part,
                Key=obj,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
            )
            return {"ETag": r["ETag"], "PartNumber": number}

        count = -(-size // self.part_size)
        try:
            with ThreadPoolExecutor(min(_PART_THREADS, count)) as pool:
                parts = list(pool.map(part, range(1, count + 1)))
            self._call(
                "write",
                key,
                self._client.complete_multipart_upload,
                Key=obj,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
            )
        except BaseException:
            with contextlib.suppress(Exception):
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=obj, UploadId=upload_id)
            raise

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` as ``key``; ``MossError(code="CONFLICT")`` if it already exists."""
        with self.create(key) as f:
            f.write(data)

    def move(self, src: str, dst: str) -> None:
        """Server-side copy then delete (S3 has no rename): avoid on hot paths."""
        source = {"Bucket": self.bucket, "Key": self._obj(src)}
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.copy(source, self.bucket, self._obj(dst))
        except (BotoCoreError, ClientError) as e:
            raise self._error(e, "copy", src) from None
        self.delete(src)

    def delete(self, key: str) -> bool:
        """Delete the object and its cached copy; False if the store cannot be reached now."""
        try:
            self._call("delete", key, self._client.delete_object, Key=self._obj(key))
        except KeyError:
            pass
        except MossError as e:
            if e.code != NETWORK:
                raise
            log.warning("%s", e)
            return False
        self._evict(key)
        return True

    # -------------------------------------------------------------- reads

    def read(self, key: str) -> bytes | mmap.mmap:
        """The blob, memory-mapped from the node-local cache (downloaded if absent)."""
        for _ in range(3):  # the cached file may be evicted between download and open
            path = self._fetch(key)
            try:
                with open(path, "rb") as f:
                    if os.fstat(f.fileno()).st_size == 0:
                        return b""
                    return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except FileNotFoundError:
                continue
        raise MossError(f"S3: the cache in {self.cache_dir} keeps losing {key!r}", code=INTERNAL)

    def open(self, key: str) -> BinaryIO:
        """The cached file opened for reading (downloaded first if absent)."""
        for _ in range(3):
            path = self._fetch(key)
            try:
                return open(path, "rb")
            except FileNotFoundError:
                continue
        raise MossError(f"S3: the cache in {self.cache_dir} keeps losing {key!r}", code=INTERNAL)

    def size(self, key: str) -> int:
        """The blob's size (from the cache, else a HEAD request)."""
        path = self._cache_path(key)
        with contextlib.suppress(FileNotFoundError):
            return path.stat().st_size
        head = self._call("inspect", key, self._client.head_object, Key=self._obj(key))
        return int(head["ContentLength"])

    def keys(self, prefix: str, older_than_s: float = 0.0) -> list[str]:
        """Every blob under ``prefix`` last modified more than ``older_than_s`` seconds ago
        (by the object store's clock, compared with this node's)."""
        cutoff = time.time() - older_than_s
        start = f"{self._root}{prefix}/"
        out: list[str] = []
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = self._call("list", None, self._client.list_objects_v2, Prefix=start, **extra)
            for item in page.get("Contents", ()):
                if older_than_s > 0 and item["LastModified"].timestamp() > cutoff:
                    continue
                out.append(item["Key"][len(self._root) :])
            if not page.get("IsTruncated"):
                return sorted(out)
            token = page["NextContinuationToken"]

    def local_path(self, key: str) -> Path | None:
        """The cached copy if this node holds one (else None)."""
        path = self._cache_path(key)
        return path if path.exists() else None

    def presign(self, key: str, expires_s: int = 300) -> str | None:
        """A presigned GET URL for ``key`` valid ``expires_s`` seconds (no request is made)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            url: str = self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self._obj(key)},
                ExpiresIn=int(expires_s),
            )
        except (BotoCoreError, ClientError) as e:
            raise self._error(e, "sign a URL for", key) from None
        return url

    # -------------------------------------------------------------- the cache

    def _cache_path(self, key: str) -> Path:
        return self._blobs / _check_key(key)

    def _scan_cache(self) -> None:
        """Register what an earlier process left in the cache, oldest access first."""
        found: list[tuple[float, str, int]] = []
        for folder in self._blobs.iterdir():
            if not folder.is_dir():
                continue
            for p in folder.iterdir():
                try:
                    st = p.stat()
                except FileNotFoundError:
                    continue
                if p.name.startswith("."):  # a download that crashed midway (or is running)
                    _remove_if_stale(p, st.st_mtime)
                    continue
                found.append((st.st_atime, f"{folder.name}/{p.name}", st.st_size))
        for p in self._spool.iterdir():  # uploads of a process killed mid-request
            with contextlib.suppress(OSError):
                _remove_if_stale(p, p.stat().st_mtime)
        for _, key, size in sorted(found):
            self._lru[key] = size
            self._cached += size
        self._trim(None)

    def _fetch(self, key: str) -> Path:
        """The cached file of ``key``, downloading it if this node has none."""
        path = self._cache_path(key)
        with self._lock:
            if key in self._lru and path.exists():
                self._lru.move_to_end(key)
                return path
            gate = self._fetching.setdefault(key, threading.Lock())
        with gate:
            if path.exists():  # another thread fetched it meanwhile
                with self._lock:
                    self._register(key, path.stat().st_size)
                return path
            try:
                self._download(key, path)
            finally:
                with self._lock:
                    self._fetching.pop(key, None)
        return path

    def _download(self, key: str, path: Path) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".dl-{path.name}-{secrets.token_hex(4)}"
        try:
            r = self._call("read", key, self._client.get_object, Key=self._obj(key))
            expected = int(r.get("ContentLength", -1))
            body = r["Body"]
            written = 0
            try:
                with open(tmp, "wb") as out:
                    while chunk := body.read(_CHUNK):
                        out.write(chunk)
                        written += len(chunk)
            except (BotoCoreError, ClientError) as e:
                raise self._error(e, "read", key) from None
            finally:
                body.close()
            if expected >= 0 and written != expected:
                raise MossError(
                    f"S3: the download of {key!r} from {self.where} was truncated "
                    f"({written} of {expected} bytes)",
                    code=NETWORK,
                )
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        with self._lock:
            self._register(key, written)

    def _adopt(self, key: str, spooled: Path, size: int) -> None:
        """Keep a just-uploaded spool file as the cached copy of ``key``."""
        path = self._cache_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(spooled, path)
        except OSError:
            return
        with self._lock:
            self._register(key, size)

    def _register(self, key: str, size: int) -> None:
        old = self._lru.pop(key, None)
        if old is not None:
            self._cached -= old
        self._lru[key] = size
        self._cached += size
        self._trim(key)

    def _trim(self, keep: str | None) -> None:
        """Drop least recently used files until the cache fits (``keep`` stays)."""
        while self._cached > self.cache_bytes and self._lru:
            oldest = next(iter(self._lru))
            if oldest == keep:
                if len(self._lru) == 1:
                    return
                self._lru.move_to_end(oldest)
                continue
            self._cached -= self._lru.pop(oldest)
            with contextlib.suppress(OSError):
                (self._blobs / oldest).unlink()

    def _evict(self, key: str) -> None:
        with self._lock:
            size = self._lru.pop(key, None)
            if size is not None:
                self._cached -= size
        with contextlib.suppress(OSError, ValueError):
            self._cache_path(key).unlink()

    def cached_bytes(self) -> int:
        """Bytes currently held in the node-local cache."""
        with self._lock:
            return self._cached

    def close(self) -> None:
        """Release the HTTP connection pool."""
        with contextlib.suppress(Exception):
            self._client.close()


_STALE_S = 600.0  # a partial download or upload file this old has no live writer


def _remove_if_stale(path: Path, mtime: float) -> None:
    """Delete a leftover partial file once ``_STALE_S`` old (a younger one may be in use)."""
    if mtime < time.time() - _STALE_S:
        with contextlib.suppress(OSError):
            path.unlink()

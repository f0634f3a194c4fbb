"""``SessionIndex``: a writable in-process index opened with ``await client.session(name)``.

Every method is a coroutine. Short work runs inline on the event loop, because a thread hop
costs more than the work itself (benchmarks/bench_session.py measures ``asyncio.to_thread``
against inline): a query, or adding a handful of short documents such as one conversation
turn. Bulk adds, large reads and snapshot I/O run in a worker thread so the loop is never
blocked for long. Writes of one session are serialised by an ``asyncio.Lock``; the
:class:`~moss.engine.Engine` itself is thread-safe, so a query during an add sees the index
before or after it, never half of it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import quote

from .docs_input import normalize_docs
from .engine import CUSTOM, Engine
from .errors import DESERIALIZATION, InvalidArgumentError, MossError
from .snapshot import read_dir, write_dir
from .types import (
    Chunking,
    DocsInput,
    DocumentInfo,
    GetDocumentsOptions,
    MutationOptions,
    PushIndexResult,
    QueryOptions,
    SearchResult,
    upsert_flag,
)
from .validation import (
    check_bool,
    check_cache_path,
    check_doc_ids,
    check_get_options,
    check_query_options,
    check_query_text,
    query_guard,
)

if TYPE_CHECKING:
    from .client import MossClient

__all__ = ["SessionIndex", "default_cache_root", "safe_path_component"]

T = TypeVar("T")
_INLINE_MAX_DOCS = 8
_INLINE_MAX_CHARS = 4000
_INLINE_MAX_READ = 5000


def default_cache_root() -> Path:
    """``MOSS_SESSION_CACHE_PATH``, else ``~/.cache/moss`` (``%LOCALAPPDATA%\\moss`` on Windows)."""
    env = os.environ.get("MOSS_SESSION_CACHE_PATH")
    if env:
        return Path(env)
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "moss"
    return Path.home() / ".cache" / "moss"


_MAX_COMPONENT = 255  # bytes in one file name on ext4, APFS, NTFS (as UTF-16 units), tmpfs
_HASHED_PREFIX = 150  # readable start kept in a hashed component


def safe_path_component(value: str) -> str:
    """Make a project id or index name safe as one directory name (no traversal, no separators).

    Percent-encoding keeps it readable and reversible. A name whose encoded form would not fit
    in one file name (a valid 256-byte name can grow to 768 bytes) becomes a readable prefix,
    ``#`` and the SHA-256 of the name: deterministic, and never equal to the encoded form of any
    other name (``#`` is always percent-encoded). Names that fit map to the same directory as
    in every earlier release, so existing snapshots are still found.

    >>> safe_path_component("notes/2024")
    'notes%2F2024'
    >>> len(safe_path_component("é" * 128))
    215
    """
    raw = value.encode("utf-8", "surrogatepass")  # never raises, even for a lone surrogate
    out = quote(raw, safe=" -_.~+=,@()[]{}!$&'")
    if out in (".", ".."):
        out = out.replace(".", "%2E")
    if len(out) <= _MAX_COMPONENT:
        return out
    prefix = out[:_HASHED_PREFIX]
    cut = prefix.rfind("%", len(prefix) - 2)  # do not split a %XX escape
    if cut != -1:
        prefix = prefix[:cut]
    return f"{prefix}#{hashlib.sha256(raw).hexdigest()}"


class SessionIndex:
    """A writable in-process index; created only by ``await client.session(...)``."""

    def __init__(self, client: MossClient, name: str, engine: Engine) -> None:
        self._client = client
        self._name = name
        self._engine = engine
        self._model_id = engine.model_id
        self._closed = False
        self._inflight = 0
        self._idle: asyncio.Event | None = None
        self._write_lock = asyncio.Lock()

    # -------------------------------------------------------------- properties

    @property
    def name(self) -> str:
        return self._name

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def doc_count(self) -> int:
        self._check_open()
        return self._engine.doc_count

    @property
    def engine(self) -> Engine:
        """The in-memory engine (for the client's multi-index queries and the cloud push)."""
        self._check_open()
        return self._engine

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidArgumentError("SessionIndex is closed")

    async def _run(self, fn: Callable[[], T], inline: bool) -> T:
        self._check_open()
        self._inflight += 1
        try:
            if inline:
                return fn()
            return await asyncio.to_thread(fn)
        finally:
            self._inflight -= 1
            if self._inflight == 0 and self._idle is not None:
                self._idle.set()

    async def _write(self, fn: Callable[[], T], inline: bool) -> T:
        self._check_open()
        async with self._write_lock:
            return await self._run(fn, inline)

    # -------------------------------------------------------------- documents

    async def add_docs(
        self,
        docs: DocsInput,
        options: MutationOptions | None = None,
        *,
        chunker: Callable[[str], list[str]] | None = None,
        chunking: Chunking | None = None,
    ) -> tuple[int, int]:
        """Embed and index ``docs`` here; returns ``(added, updated)`` (docs/api.md §3.2, §3.13)."""
        self._check_open()
        upsert = upsert_flag(options)
        custom = self._engine.model_id == CUSTOM
        # Reading files and chunking can be slow; the normalisation itself is cheap for lists.
        small = isinstance(docs, list) and len(docs) <= _INLINE_MAX_DOCS
        items: list[DocumentInfo] = (
            normalize_docs(docs, chunker=chunker, chunking=chunking, custom_model=custom)
            if small
            else await asyncio.to_thread(
                normalize_docs, docs, chunker=chunker, chunking=chunking, custom_model=custom
            )
        )
        inline = len(items) <= _INLINE_MAX_DOCS and sum(len(d.text) for d in items) <= (
            _INLINE_MAX_CHARS
        )
        engine = self._engine
        return await self._write(lambda: engine.add_documents(items, upsert=upsert), inline)

    async def delete_docs(self, doc_ids: list[str]) -> int:
        """Remove the ids (unknown ones ignored); returns the number removed."""
        self._check_open()
        ids = check_doc_ids(doc_ids)
        engine = self._engine
        return await self._write(lambda: engine.delete(ids), len(ids) <= _INLINE_MAX_READ)

    async def get_docs(self, options: GetDocumentsOptions | None = None) -> list[DocumentInfo]:
        """Read stored documents in index order (filter, ``sort_by``, ``group_by``: §3.2, §3.7)."""
        self._check_open()
        check_get_options(options)
        engine = self._engine
        inline = engine.doc_count <= _INLINE_MAX_READ
        return await self._run(lambda: engine.get_documents(options), inline)

    async def query(self, query: str, options: QueryOptions | None = None) -> SearchResult:
        """Semantic, keyword or hybrid search of the in-memory index (§3.4); top_k 5, alpha 0.8."""
        self._check_open()
        check_query_text(query)
        check_query_options(options)
        engine = self._engine
        return await self._run(
            lambda: query_guard(lambda: engine.query(query, options, index_name=self._name)),
            True,
        )

    # -------------------------------------------------------------- cloud

    async def push_index(self) -> PushIndexResult:
        """Create or replace the cloud index of this name with this session's contents (a job)."""
        self._check_open()
        if self._engine.doc_count == 0:
            raise InvalidArgumentError(
                f"cannot push session {self._name!r}: it has no documents; add documents first"
            )
        engine = self._engine
        data = await self._run(lambda: engine.to_snapshot(name=self._name), False)
        return await self._client._push_snapshot(self._name, data)

    # -------------------------------------------------------------- snapshots

    def _snapshot_dir(self, cache_path: str | None) -> Path:
        root = check_cache_path(cache_path)
        if root is None:
            root = self._client._cache_path
        base = Path(root) if root is not None else default_cache_root()
        return (
            Path(os.path.abspath(base))
            / "sessions"
            / safe_path_component(self._client._project_id)
            / safe_path_component(self._name)
        )

    async def save_to_disk(self, cache_path: str | None = None) -> None:
        """Write a crash-safe snapshot to ``<root>/sessions/<project_id>/<name>/`` (§3.10).

        Saves of one name (other sessions, other processes) take turns; a failed save (disk
        full, file-size limit) leaves nothing behind and raises ``MossError`` (code
        ``INTERNAL``) naming the cause."""
        self._check_open()
        target = self._snapshot_dir(cache_path)
        engine = self._engine

        def save() -> None:
            # Writes through this session wait for the save anyway (_write), so the snapshot can
            # share the vectors instead of copying them (1x the raw vectors less at the peak).
            engine.write_snapshot(lambda data: write_dir(target, data), name=self._name)

        await self._write(save, False)

    async def load_from_disk(
        self, cache_path: str | None = None, *, rebuild_legacy: bool = True
    ) -> int:
        """Replace this session's contents and model with its snapshot; returns the count.

        Raises ``MossError(code="DESERIALIZATION")`` (changing nothing) if the snapshot is missing
        or damaged, or if its vectors come from another model artifact and ``rebuild_legacy`` is
        False; with ``rebuild_legacy`` such vectors are re-embedded locally.
        """
        self._check_open()
        check_bool(rebuild_legacy, "rebuild_legacy")
        source = self._snapshot_dir(cache_path)

        def load() -> Engine:
            try:
                exists = source.exists()
            except OSError as e:  # a name too long for the file system, a loop of links
                raise MossError(
                    f"cannot read the session snapshot at {source}: {e.strerror or e}",
                    code=DESERIALIZATION,
                    detail=f"{type(e).__name__}: {e}",
                ) from e
            if not exists:
                raise MossError(f"no session snapshot at {source}", code=DESERIALIZATION)
            data = read_dir(source)
            try:
                return Engine.from_snapshot(data, rebuild_legacy=rebuild_legacy, name=self._name)
            except MossError:
                raise
            except Exception as e:  # whatever a damaged snapshot trips, it is typed here
                raise MossError(
                    f"session snapshot at {source} is damaged",
                    code=DESERIALIZATION,
                    detail=f"{type(e).__name__}: {e}",
                ) from e

        async with self._write_lock:
            engine = await self._run(load, False)
            self._engine = engine
            self._model_id = engine.model_id
        return engine.doc_count

    # -------------------------------------------------------------- lifecycle

    async def close(self) -> None:
        """Wait for in-flight calls, then release the index. Idempotent."""
        if self._closed:
            return
        if self._inflight:
            self._idle = asyncio.Event()
            while self._inflight:
                await self._idle.wait()
                self._idle.clear()
        self._closed = True
        self._client._forget_session(self)

    async def __aenter__(self) -> SessionIndex:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self._engine.doc_count} docs"
        return f"<SessionIndex {self._name!r} model={self._model_id!r} {state}>"

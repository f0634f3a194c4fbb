"""Loaded indexes: in-memory copies of cloud indexes, refreshed and queried (docs/api.md §3.11).

A :class:`Runtime` belongs to one ``MossClient``. Each loaded index is an entry holding an
:class:`~moss.engine.Engine` and the cloud version it was built from.

* **Version check first.** Every load or refresh asks the backend for the current version and
  names the one already held (``if_version``); if it is unchanged nothing is transferred.
* **Hot swap.** A changed version is downloaded and built into a new engine off to the side, then
  the entry's engine reference is replaced in one assignment. A query takes the reference once,
  so running queries finish on the old copy and none ever sees a half-built one.
* **Pollers** are daemon threads (one per index with ``auto_refresh``, or while served stale), so
  they keep working whichever event loop, if any, the caller runs; ``unload``/``close`` stop them.
* **Cache.** With a ``cache_path`` a load writes the version as an atomic snapshot directory in
  ``<cache_path>/<index name>/`` (recording the version and project); a later load whose version
  check says "unchanged" reads that snapshot instead of downloading.
* **Offline tolerance.** If the version check keeps failing with ``NETWORK`` for a few seconds and
  a cached snapshot of this project's index exists, it is served, ``was_served_stale`` turns
  True, and a poller swaps in the current version (clearing the flag) once the backend answers.
  ``NOT_FOUND`` and ``UNAUTHORIZED`` are never masked by the cache.

``query_multi_index`` (§3.4) searches several loaded indexes and the client's sessions as one
(:mod:`moss.multi_query`): the query is embedded once, per-index candidates are merged into global
lists and fused once, so ``top_k``, ``filter`` and ``min_score`` are global.

Indexes that are *not* loaded are queried where they are stored (the client asks its backend); the
store builds its engines with :func:`build_engine`, the function ``load`` uses, so both answer
alike. :func:`~moss.multi_query.merge_results` joins such per-index answers with the in-process
ones.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .engine import CUSTOM, Engine
from .errors import INTERNAL, NETWORK, NOT_FOUND, InvalidArgumentError, MossError
from .multi_query import merge_results, query_many
from .snapshot import SnapshotData, current_generation, read_dir, unpack, write_dir
from .types import LoadIndexesResult, QueryOptions, SearchResult, validate_index_name

if TYPE_CHECKING:
    from .client import MossClient
    from .session import SessionIndex

__all__ = ["MAX_PARALLEL_LOADS", "Runtime", "build_engine", "loaded_engine", "merge_results"]

log = logging.getLogger(__name__)

MAX_PARALLEL_LOADS = 8
OFFLINE_ATTEMPT_S = 3.0  # how long a version check retries a NETWORK error before giving up
STALE_RETRY_S = 30.0  # longest wait between refresh attempts while served stale
_RETRY_STEP_S = 0.25


@dataclass
class _Loaded:
    """One loaded index. ``engine`` is swapped by assignment (see the module docstring)."""

    name: str
    engine: Engine
    version: str
    stale: bool = False
    auto_refresh: bool = False
    interval: float = 600.0
    cache_dir: Path | None = None
    poller: _Poller | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Poller(threading.Thread):
    def __init__(self, runtime: Runtime, entry: _Loaded) -> None:
        super().__init__(name=f"moss-refresh-{entry.name}", daemon=True)
        self.runtime = runtime
        self.entry = entry
        self.stopped = threading.Event()

    def period(self) -> float:
        e = self.entry
        return min(e.interval, STALE_RETRY_S) if e.stale else e.interval

    def run(self) -> None:
        while not self.stopped.wait(self.period()):
            if not self.runtime._refresh(self.entry, self):
                break

    def stop(self) -> None:
        self.stopped.set()


class Runtime:
    """The loaded indexes of one client (see the module docstring)."""

    def __init__(self, client: MossClient) -> None:
        self._client = client
        self._loaded: dict[str, _Loaded] = {}
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}

    # -------------------------------------------------------------- loading

    def _cache_dir(self, name: str, cache_path: str | None) -> Path | None:
        from .session import safe_path_component

        root = cache_path if cache_path is not None else self._client._cache_path
        if root is None:
            return None
        return Path(os.path.abspath(root)) / safe_path_component(name)

    def _check_version(self, name: str, if_version: str | None) -> tuple[str, Any]:
        """``backend.download`` retrying transport errors for up to :data:`OFFLINE_ATTEMPT_S`."""
        backend = self._client._cloud.backend
        deadline = time.monotonic() + OFFLINE_ATTEMPT_S
        while True:
            try:
                return backend.download(name, if_version)
            except MossError as e:
                if e.code != NETWORK or time.monotonic() + _RETRY_STEP_S > deadline:
                    raise
            time.sleep(_RETRY_STEP_S)

    def _build(self, data: SnapshotData, name: str) -> Engine:
        return build_engine(data, name)

    def _cached_version(self, cache_dir: Path | None) -> str | None:
        """The version recorded in this project's cached snapshot, or None."""
        if cache_dir is None:
            return None
        try:
            gen = current_generation(cache_dir)
            if gen is None:
                return None
            manifest = json.loads((gen / "manifest.json").read_text(encoding="utf-8"))
            extra = manifest.get("extra") or {}
            if extra.get("project_id") != self._client._project_id:
                return None
            version = extra.get("version")
            return version if isinstance(version, str) else None
        except (OSError, ValueError, MossError):
            return None

    def _write_cache(self, cache_dir: Path, data: SnapshotData, version: str) -> None:
        data.extra = {**data.extra, "version": version, "project_id": self._client._project_id}
        try:
            write_dir(cache_dir, data)
        except OSError as e:  # a cache that cannot be written must not fail the load
            log.warning("could not write the snapshot cache %s: %s", cache_dir, e)

    def load(
        self,
        name: str,
        auto_refresh: bool = False,
        polling_interval_in_seconds: float = 600,
        cache_path: str | None = None,
    ) -> str:
        """Load or re-check ``name`` (blocking; see the module docstring)."""
        validate_index_name(name)
        interval = float(polling_interval_in_seconds)
        if not interval > 0:
            raise InvalidArgumentError(
                f"polling_interval_in_seconds must be > 0, got {polling_interval_in_seconds!r}"
            )
        cache_dir = self._cache_dir(name, cache_path)
        with self._lock:
            lock = self._load_locks.setdefault(name, threading.Lock())
        with lock:
            current = self._loaded.get(name)
            held = current.version if current is not None and not current.stale else None
            cached = self._cached_version(cache_dir) if held is None else None
            stale = False
            engine: Engine | None = None
            try:
                version, blob = self._check_version(name, held or cached)
            except MossError as e:
                if e.code != NETWORK:
                    raise
                if current is not None:
                    engine, version = current.engine, current.version
                elif cached is not None and cache_dir is not None:
                    engine, version = self._build(read_dir(cache_dir), name), cached
                else:
                    raise
                stale = True
            else:
                if blob is None and current is not None and current.version == version:
                    engine = current.engine  # also when it was served stale: it is current
                    if cache_dir is not None and self._cached_version(cache_dir) != version:
                        self._write_cache(cache_dir, engine.to_snapshot(name=name), version)
                elif blob is None and cache_dir is not None:
                    try:
                        engine = self._build(read_dir(cache_dir), name)
                    except MossError:  # a damaged cache: fetch the whole version
                        version, blob = self._check_version(name, None)
                if blob is not None:
                    data = unpack(blob)
                    engine = self._build(data, name)
                    if cache_dir is not None:
                        self._write_cache(cache_dir, data, version)
            if engine is None:  # the backend said "unchanged" about a version we do not hold
                raise MossError(f"index {name!r}: inconsistent version check", code=INTERNAL)
            self._install(name, engine, version, stale, auto_refresh, interval, cache_dir)
        return name

    def _install(
        self,
        name: str,
        engine: Engine,
        version: str,
        stale: bool,
        auto_refresh: bool,
        interval: float,
        cache_dir: Path | None,
    ) -> None:
        with self._lock:
            entry = self._loaded.get(name)
            if entry is None:
                entry = _Loaded(name, engine, version)
                self._loaded[name] = entry
            with entry.lock:
                entry.engine = engine  # the hot swap: one reference assignment
                entry.version = version
                entry.stale = stale
                entry.auto_refresh = bool(auto_refresh)
                entry.interval = interval
                entry.cache_dir = cache_dir
                want = entry.auto_refresh or entry.stale
                if want and entry.poller is None:
                    entry.poller = _Poller(self, entry)
                    entry.poller.start()
                elif not want and entry.poller is not None:
                    entry.poller.stop()
                    entry.poller = None

    def _refresh(self, entry: _Loaded, poller: _Poller) -> bool:
        """One poll: swap in a newer version. Returns False when the poller should stop."""
        name = entry.name
        with self._lock:
            lock = self._load_locks.setdefault(name, threading.Lock())
        with lock:
            if poller.stopped.is_set() or self._loaded.get(name) is not entry:
                return False
            try:
                version, blob = self._client._cloud.backend.download(name, entry.version)
                if blob is not None:
                    data = unpack(blob)
                    engine = self._build(data, name)
                    if entry.cache_dir is not None:
                        self._write_cache(entry.cache_dir, data, version)
                    entry.engine = engine
                    entry.version = version
            except MossError as e:
                if e.code == NOT_FOUND:  # deleted: keep serving the copy, stop polling
                    log.info("index %r no longer exists; keeping the loaded copy", name)
                    with entry.lock:
                        entry.poller = None
                    return False
                if e.code != NETWORK:
                    log.warning("refreshing index %r failed: %s", name, e)
                return True
            except Exception:
                log.exception("refreshing index %r failed", name)
                return True
            with entry.lock:
                entry.stale = False
                if not entry.auto_refresh:
                    entry.poller = None
                    return False
            return True

    async def load_index(
        self,
        name: str,
        auto_refresh: bool = False,
        polling_interval_in_seconds: float = 600,
        cache_path: str | None = None,
    ) -> str:
        try:
            return await asyncio.to_thread(
                self.load, name, auto_refresh, polling_interval_in_seconds, cache_path
            )
        except MossError:
            raise
        except Exception as e:
            raise RuntimeError(f"Failed to load index '{name}': {e}") from e

    async def load_indexes(
        self,
        names: Sequence[str],
        auto_refresh: bool = False,
        polling_interval_in_seconds: float = 600,
        cache_path: str | None = None,
    ) -> LoadIndexesResult:
        if isinstance(names, (str, bytes)):
            raise InvalidArgumentError("names must be a list of index names, not a single string")
        unique = list(dict.fromkeys(names))
        gate = asyncio.Semaphore(MAX_PARALLEL_LOADS)
        failed: dict[str, str] = {}
        codes: dict[str, str] = {}

        async def one(name: str) -> bool:
            async with gate:
                try:
                    await self.load_index(
                        name, auto_refresh, polling_interval_in_seconds, cache_path
                    )
                    return True
                except MossError as e:
                    failed[name], codes[name] = str(e), e.code or INTERNAL
                except Exception as e:
                    failed[name], codes[name] = str(e), INTERNAL
                return False

        ok = await asyncio.gather(*(one(n) for n in unique))
        loaded = [n for n, good in zip(unique, ok) if good]
        return LoadIndexesResult(loaded, failed, codes)

    def unload(self, name: str) -> None:
        validate_index_name(name)
        with self._lock:
            entry = self._loaded.pop(name, None)
        if entry is not None and entry.poller is not None:
            entry.poller.stop()

    def close(self) -> None:
        with self._lock:
            entries = list(self._loaded.values())
            self._loaded.clear()
        for e in entries:
            if e.poller is not None:
                e.poller.stop()

    # -------------------------------------------------------------- queries

    def _entry(self, name: object) -> _Loaded:
        validate_index_name(name)
        entry = self._loaded.get(str(name))
        if entry is None:
            raise MossError(
                f"index '{name}' is not loaded; call load_index('{name}') or "
                "load_indexes([...]) first",
                code=NOT_FOUND,
            )
        return entry

    def was_served_stale(self, name: str) -> bool:
        validate_index_name(name)
        entry = self._loaded.get(name)
        if entry is None:
            raise RuntimeError(f"index '{name}' is not loaded")
        return entry.stale

    def is_loaded(self, name: str) -> bool:
        """Whether ``name`` has a loaded copy in this client (queries answer in process)."""
        return name in self._loaded

    def loaded_version(self, name: str) -> str:
        """The cloud version the loaded copy of ``name`` was built from."""
        return self._entry(name).version

    def query(self, name: str, text: str, options: QueryOptions | None = None) -> SearchResult:
        engine = self._entry(name).engine  # taken once: a concurrent swap cannot split a query
        return engine.query(text, options, index_name=name)

    def query_multi(
        self, names: Sequence[str | SessionIndex], text: str, options: QueryOptions | None = None
    ) -> SearchResult:
        """One global ranking over loaded indexes and sessions (docs/api.md §3.4, §4.3)."""
        start = time.perf_counter()
        return query_many(self._targets(names), text, options, start)

    def _targets(self, names: Sequence[str | SessionIndex]) -> list[tuple[str, Engine]]:
        from .session import SessionIndex

        if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
            raise InvalidArgumentError("query_multi_index takes a list of index names or sessions")
        if not names:
            raise InvalidArgumentError("query_multi_index requires at least one index name")
        out: list[tuple[str, Engine]] = []
        seen: set[int] = set()
        for item in names:
            if isinstance(item, SessionIndex):
                if item._client is not self._client:
                    raise InvalidArgumentError(
                        f"session {item.name!r} belongs to another MossClient"
                    )
                pair = (item.name, item.engine)
            else:
                pair = (str(item), self._entry(item).engine)
            if id(pair[1]) not in seen:
                seen.add(id(pair[1]))
                out.append(pair)
        return out


def build_engine(data: SnapshotData, name: str) -> Engine:
    """An engine from a downloaded version, with the model warmed (vectors reused as stored).

    The one way a queryable engine is made from a cloud version: ``load_index`` uses it, and so
    does the store's :class:`~moss.server.queries.QueryService`, which is why a query on an
    unloaded index returns what a loaded copy would.
    """
    if data.model_id == CUSTOM:
        return Engine.from_snapshot(data, name=name)
    from .embedding import get_embedder

    embedder = get_embedder(data.model_id)
    embedder.warm()
    return Engine.from_snapshot(data, embedder=embedder, name=name)


def loaded_engine(client: MossClient, name: str) -> Engine:
    """The engine of the index ``name`` loaded in ``client``: the copy its queries read now.

    For in-process tools that need more than ``MossClient`` offers (the CLI's keyword scores, the
    framework adapters' stored vectors); deliberately not a ``MossClient`` method. A refresh swaps
    in a new engine, so call this again rather than keep the result.

    Raises:
        MossError: NOT_FOUND when ``name`` is not loaded (InvalidArgumentError for a bad name).
        RuntimeError: the client is closed.
    """
    client._check_open()
    return client._runtime._entry(name).engine

"""Queries the store answers itself: a bounded cache of loaded index versions.

``POST /v1/indexes/{name}/query`` and ``MossClient.query`` on an index the caller has not loaded
(embedded store or ``moss serve``) both land in :class:`QueryService`. Its results must equal
those of a client that loaded the same version (docs/api.md), so it builds engines exactly as the
client's ``load_index`` does: the version blob is decoded with :func:`moss.snapshot.unpack` and
turned into an engine by :func:`moss.runtime.build_engine` (built-in models get the process-wide
embedder from :func:`moss.embedding.get_embedder`, warmed). The job runner's model-agnostic
engines are deliberately *not* reused: they cannot embed a query text.

Shape of the cache:

* **Keyed by version.** Entries are ``(project, index, version)``; each query first asks the store
  for the current version, naming the one held (``read_version(if_version=)``: a catalog read, no
  blob). A new version is loaded beside the old, which is dropped once the new one is in; queries
  running on the old engine finish on it.
* **Bounded** by a count and by approximate bytes (the version blob's size, which is what the
  engine holds: the blob is memory-mapped and decoded sections are views of it, or copies of the
  same size), least recently used first. The entry being returned is never evicted, so one index
  larger than the byte bound still answers (and is the only one held).
* **Loads once.** Two first queries of one index race to a per-index lock; the second finds the
  version the first loaded. The lookup of a held version takes no per-index lock.

The blob returned by the store may be an ``mmap``; the engine's arrays are views of it and keep
it alive, so an evicted or garbage-collected version stays valid for queries still running on it.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..engine import Engine
from ..errors import NOT_FOUND, InvalidArgumentError, MossError
from ..runtime import build_engine
from ..snapshot import unpack
from ..types import QueryOptions, SearchResult, validate_index_name
from ..validation import query_guard

if TYPE_CHECKING:
    from .store import Store

__all__ = [
    "CACHE_BYTES_ENV",
    "CACHE_INDEXES_ENV",
    "DEFAULT_CACHE_BYTES",
    "DEFAULT_CACHE_INDEXES",
    "QueryService",
    "shared_service",
]

DEFAULT_CACHE_INDEXES = 8
DEFAULT_CACHE_BYTES = 2 << 30
CACHE_INDEXES_ENV = "MOSS_QUERY_CACHE_INDEXES"
CACHE_BYTES_ENV = "MOSS_QUERY_CACHE_BYTES"

_Key = tuple[str, str, str]  # (project, index name, version)


@dataclass
class _Entry:
    engine: Engine
    nbytes: int


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise InvalidArgumentError(f"{name} must be a non-negative integer, got {raw!r}")
    return int(raw)


class QueryService:
    """Runs queries on a store's indexes without the caller loading them (module docstring).

    Args:
        store: the :class:`~moss.server.store.Store` whose indexes are queried.
        max_indexes: most versions held at once (``MOSS_QUERY_CACHE_INDEXES``, default 8).
        max_bytes: most blob bytes held at once (``MOSS_QUERY_CACHE_BYTES``, default 2 GiB).
    """

    def __init__(
        self, store: Store, *, max_indexes: int | None = None, max_bytes: int | None = None
    ) -> None:
        if max_indexes is None:
            max_indexes = _env_int(CACHE_INDEXES_ENV, DEFAULT_CACHE_INDEXES)
        if max_bytes is None:
            max_bytes = _env_int(CACHE_BYTES_ENV, DEFAULT_CACHE_BYTES)
        if max_indexes < 1:
            raise InvalidArgumentError(f"the query cache needs max_indexes >= 1, got {max_indexes}")
        self.store = store
        self.max_indexes = int(max_indexes)
        self.max_bytes = int(max_bytes)
        self.loads = 0  # versions built so far (tests and benchmarks read it)
        self._cache: OrderedDict[_Key, _Entry] = OrderedDict()
        self._latest: dict[tuple[str, str], str] = {}  # newest version held per index
        self._lock = threading.Lock()
        self._index_locks: dict[tuple[str, str], threading.Lock] = {}

    # -------------------------------------------------------------- the cache

    def held(self) -> list[_Key]:
        """The cached ``(project, index, version)`` keys, least recently used first."""
        with self._lock:
            return list(self._cache)

    def held_bytes(self) -> int:
        """Approximate bytes of the cached versions."""
        with self._lock:
            return sum(e.nbytes for e in self._cache.values())

    def clear(self) -> None:
        """Drop every cached engine (running queries finish on theirs)."""
        with self._lock:
            self._cache.clear()
            self._latest.clear()

    def _get(self, key: _Key) -> Engine | None:
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                return None
            self._cache.move_to_end(key)
            return entry.engine

    def _put(self, key: _Key, engine: Engine, nbytes: int) -> None:
        project, name, version = key
        with self._lock:
            for old in [k for k in self._cache if k[:2] == key[:2] and k != key]:
                del self._cache[old]  # superseded versions of this index
            self._cache[key] = _Entry(engine, nbytes)
            self._latest[(project, name)] = version
            total = sum(e.nbytes for e in self._cache.values())
            while len(self._cache) > 1 and (
                len(self._cache) > self.max_indexes or total > self.max_bytes
            ):
                gone, entry = self._cache.popitem(last=False)
                total -= entry.nbytes
                if self._latest.get(gone[:2]) == gone[2]:
                    del self._latest[gone[:2]]

    def _forget(self, index: tuple[str, str]) -> None:
        with self._lock:
            for key in [k for k in self._cache if k[:2] == index]:
                del self._cache[key]
            self._latest.pop(index, None)

    def engine(self, project_id: str, name: str) -> tuple[str, Engine]:
        """``(version, engine)`` of the index's current version, loading it if needed.

        Raises:
            MossError: ``NOT_FOUND`` for an unknown index or one with no completed version.
        """
        validate_index_name(name)
        index = (project_id, name)
        with self._lock:
            held = self._latest.get(index)
        try:
            version, blob = self.store.read_version(project_id, name, held)
        except MossError as e:
            if e.code == NOT_FOUND and held is not None:
                self._forget(index)  # deleted: do not hold its memory until evicted
            raise
        if blob is None:
            engine = self._get((project_id, name, version))
            if engine is not None:
                return version, engine
            version, blob = self.store.read_version(project_id, name)  # evicted meanwhile
        with self._lock:
            lock = self._index_locks.setdefault(index, threading.Lock())
        with lock:
            engine = self._get((project_id, name, version))
            if engine is None:  # nobody loaded this version while we waited
                engine = build_engine(unpack(blob), name)
                self._put((project_id, name, version), engine, _size(blob))
                self.loads += 1
        return version, engine

    # -------------------------------------------------------------- queries

    def query(
        self, project_id: str, name: str, text: str, options: QueryOptions | None = None
    ) -> SearchResult:
        """Run one query on the index's current version, as a loaded copy would answer it."""
        _, engine = self.engine(project_id, name)
        return query_guard(lambda: engine.query(text, options, index_name=name))


def _size(blob: Any) -> int:
    try:
        return len(blob)
    except TypeError:
        return 0


_shared: weakref.WeakKeyDictionary[Any, QueryService] = weakref.WeakKeyDictionary()
_shared_lock = threading.Lock()


def shared_service(store: Store) -> QueryService:
    """The one :class:`QueryService` of ``store`` in this process (the embedded backend's
    clients share a store per directory, so they share its cache too)."""
    with _shared_lock:
        service = _shared.get(store)
        if service is None:
            service = QueryService(store)
            _shared[store] = service
        return service

"""Shared pieces of the peer-benchmark workers: data, timing, memory and disk measurements.

A worker process loads one prepared dataset folder (written by ``bench_peers.py``), runs one peer
and returns rows of results. Everything here is stdlib + numpy so that importing it does not skew
a peer's memory figure.
"""

from __future__ import annotations

import json
import os
import re
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Lucene's English stop-word list, used by the adapters that must tokenise for the peer themselves
# (qdrant sparse vectors); bm25s, LanceDB and our engine bring their own analysers.
LUCENE_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then "
    "there these they this to was will with".split()
)
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class Data:
    """One prepared dataset: corpus vectors/texts and query vectors/texts (row-aligned)."""

    name: str
    vectors: np.ndarray
    texts: list[str]
    qvectors: np.ndarray
    qtexts: list[str]

    @property
    def n(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def load_data(folder: Path) -> Data:
    """Read a folder written by ``bench_peers.prepare_*``."""
    meta = json.loads((folder / "meta.json").read_text())
    docs = json.loads((folder / "texts.json").read_text())
    queries = json.loads((folder / "qtexts.json").read_text())
    return Data(
        meta["name"],
        np.load(folder / "vectors.npy"),
        docs,
        np.load(folder / "qvectors.npy"),
        queries,
    )


@dataclass
class Params:
    """Knobs shared by every peer."""

    top_k: int = 10
    alphas: list[float] = field(default_factory=lambda: [0.5, 0.8])
    hnsw_m: int = 16
    hnsw_ef_construction: int = 100
    hnsw_ef_search: int = 100
    depth: int = 50  # candidate depth of each list in the peers' hybrid queries
    warmup: int = 5
    budget_s: float = 60.0  # query time per mode; fewer queries are run past it
    max_queries: int = 0  # 0: all
    qdrant_cap: int = 20000


@dataclass
class Row:
    """One (peer, mode) measurement; ``results`` are row indices of the corpus per query."""

    peer: str
    mode: str
    status: str = "ok"
    import_s: float | None = None
    build_s: float | None = None
    latencies_ms: list[float] = field(default_factory=list)
    results: list[list[int]] = field(default_factory=list)
    disk_bytes: int | None = None
    errors: int = 0
    note: str = ""
    rss_after_mb: float | None = None  # current RSS once this mode's queries are done


def rss_mb() -> float:
    """Current resident set size of this process in MiB (Linux /proc)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux: fall back to the peak
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB.

    Linux ``VmHWM`` (reset by ``execve``), not ``ru_maxrss``: the latter survives ``execve`` and
    would report the orchestrator's peak at fork time for a small worker.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def disk_bytes(path: Path | str) -> int:
    """Total size of the files under ``path``."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``(fn(), seconds)``."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def query_indices(data: Data, params: Params) -> list[int]:
    n = len(data.qtexts)
    return list(range(n if params.max_queries <= 0 else min(n, params.max_queries)))


def _record(row: Row, params: Params, hits: list[int] | None, dt: float) -> float:
    """Store one timed query (``None`` hits: it failed) and return its duration."""
    if hits is None:
        row.errors += 1
        hits = []
    row.latencies_ms.append(dt * 1000.0)
    row.results.append([int(h) for h in hits[: params.top_k]])
    return dt


def run_queries(row: Row, data: Data, params: Params, search: Callable[[int], list[int]]) -> Row:
    """Time ``search(i)`` for each query (after a warm-up), stopping once the budget is spent."""
    idx = query_indices(data, params)
    for i in idx[: params.warmup]:
        search(i)
    spent = 0.0
    for i in idx:
        t0 = time.perf_counter()
        try:
            hits: list[int] | None = search(i)
        except Exception:  # a peer failing one query (e.g. a query parser) counts, not aborts
            hits = None
        spent += _record(row, params, hits, time.perf_counter() - t0)
        if spent > params.budget_s:
            row.note = f"stopped after {len(row.results)} queries (time budget)"
            break
    row.rss_after_mb = rss_mb()
    return row


async def run_queries_async(
    row: Row, data: Data, params: Params, search: Callable[[int], Awaitable[list[int]]]
) -> Row:
    """:func:`run_queries` for a coroutine search (timed inside one running event loop)."""
    idx = query_indices(data, params)
    for i in idx[: params.warmup]:
        await search(i)
    spent = 0.0
    for i in idx:
        t0 = time.perf_counter()
        try:
            hits: list[int] | None = await search(i)
        except Exception:
            hits = None
        spent += _record(row, params, hits, time.perf_counter() - t0)
        if spent > params.budget_s:
            row.note = f"stopped after {len(row.results)} queries (time budget)"
            break
    row.rss_after_mb = rss_mb()
    return row


def simple_tokens(text: str, stem: Callable[[list[str]], list[str]]) -> list[str]:
    """Lower-case word tokens without Lucene stop words, stemmed."""
    words = [w for w in _WORD.findall(text.lower()) if w not in LUCENE_STOPWORDS]
    return stem(words)


def top_k_exact(vectors: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the ``k`` largest inner products, best first."""
    scores = vectors @ q
    k = min(k, scores.shape[0])
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


def minmax(x: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] (all ones for a constant list)."""
    if x.size == 0:
        return x
    lo, hi = float(x.min()), float(x.max())
    return np.ones_like(x) if hi <= lo else (x - lo) / (hi - lo)

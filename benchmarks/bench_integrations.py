"""Framework integration overhead: what MossVectorStore adds to a moss session query.

Run:
    .venv/bin/python benchmarks/bench_integrations.py [--docs 10000] [--queries 300] [--rounds 5] [--json]

Data: ``--docs`` random unit vectors of dimension 384 (seeded) with short random texts, in a
``model_id="custom"`` session of the embedded store (a temporary data directory); queries are
other random unit vectors. Every query asks for the top 4 (LangChain's default ``k``), vector
only, so both sides do exactly the same search:

* ``session.query``: ``await session.query("", QueryOptions(embedding=v, top_k=4))``, the baseline;
* LangChain ``asimilarity_search_by_vector``: the async method on the same event loop;
* LangChain ``similarity_search_by_vector``: the sync method, called from plain sync code, which
  hops to the store's private event-loop thread and back;
* LlamaIndex ``aquery`` / ``query`` with ``VectorStoreQuery(query_embedding=v, similarity_top_k=4)``
  (when llama-index-core is installed), the same way;
* Haystack ``MossEmbeddingRetriever.run_async`` / ``run(query_embedding=v)`` (top_k 4, when
  haystack-ai is installed), the same way.

Each round runs the async variants interleaved query by query (rotating which goes first),
then the sync ones; the p50
and p99 of each round are reported and the table shows the median over rounds, with the
overhead = wrapper p50 - ``session.query`` p50. Results are also checked to be identical.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import _machine  # noqa: E402  (benchmarks/_machine.py, beside this script)
from moss import DocumentInfo, MossClient, MossError, QueryOptions, SessionIndex  # noqa: E402

DIM = 384
K = 4
WORDS = "apple banana cherry delta echo falcon garden harbor island jungle kettle lemon".split()


def machine() -> dict[str, Any]:
    import langchain_core

    versions = {"numpy": np.__version__, "langchain_core": langchain_core.__version__}
    try:
        from importlib.metadata import version

        versions["llama_index_core"] = version("llama-index-core")
    except ImportError:
        pass
    return _machine.machine(**versions)


def llamaindex_store(session: SessionIndex) -> Any:
    """moss.integrations.llamaindex's store over the same session, if llama-index-core is installed."""
    try:
        from moss.integrations.llamaindex import MossVectorStore as LlamaStore
    except MossError:
        return None
    return LlamaStore(session)


def haystack_retriever(session: SessionIndex) -> Any:
    """moss.integrations.haystack's embedding retriever over the session, if haystack-ai is installed."""
    try:
        from moss.integrations.haystack import MossDocumentStore, MossEmbeddingRetriever
    except MossError:
        return None
    return MossEmbeddingRetriever(MossDocumentStore(session), top_k=K)


def unit_rows(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


async def open_session(n: int) -> tuple[MossClient, SessionIndex]:
    client = MossClient("bench", "")
    session = await client.session("bench-integrations", "custom", auto_load_on_init=False)
    vecs = unit_rows(n, seed=0)
    rng = np.random.default_rng(1)
    docs = [
        DocumentInfo(f"d{i}", " ".join(rng.choice(WORDS, 6)), {"n": str(i)}, vecs[i].tolist())
        for i in range(n)
    ]
    for start in range(0, n, 2000):
        await session.add_docs(docs[start : start + 2000])
    return client, session


AsyncCall = Callable[[list[float]], Awaitable[list[str]]]
SyncCall = Callable[[list[float]], list[str]]


def make_calls(
    session: SessionIndex, lc: Any, li: Any, hs: Any = None
) -> tuple[dict[str, AsyncCall], dict[str, SyncCall]]:
    """The calls compared, each returning the hit ids (checked equal across calls)."""

    async def base(v: list[float]) -> list[str]:
        return [d.id for d in (await session.query("", QueryOptions(embedding=v, top_k=K))).docs]

    async def lc_async(v: list[float]) -> list[str]:
        return [d.id or "" for d in await lc.asimilarity_search_by_vector(v, k=K)]

    def lc_sync(v: list[float]) -> list[str]:
        return [d.id or "" for d in lc.similarity_search_by_vector(v, k=K)]

    async_calls: dict[str, AsyncCall] = {
        "session.query": base,
        "langchain asimilarity_search_by_vector": lc_async,
    }
    sync_calls: dict[str, SyncCall] = {"langchain similarity_search_by_vector (sync)": lc_sync}
    if li is not None:
        from llama_index.core.vector_stores.types import VectorStoreQuery

        async def li_async(v: list[float]) -> list[str]:
            return list(
                (await li.aquery(VectorStoreQuery(query_embedding=v, similarity_top_k=K))).ids
            )

        def li_sync(v: list[float]) -> list[str]:
            return list(li.query(VectorStoreQuery(query_embedding=v, similarity_top_k=K)).ids)

        async_calls["llamaindex aquery"] = li_async
        sync_calls["llamaindex query (sync)"] = li_sync
    if hs is not None:

        async def hs_async(v: list[float]) -> list[str]:
            return [d.id for d in (await hs.run_async(query_embedding=v))["documents"]]

        def hs_sync(v: list[float]) -> list[str]:
            return [d.id for d in hs.run(query_embedding=v)["documents"]]

        async_calls["haystack MossEmbeddingRetriever.run_async"] = hs_async
        sync_calls["haystack MossEmbeddingRetriever.run (sync)"] = hs_sync
    return async_calls, sync_calls


async def async_round(
    calls: dict[str, AsyncCall], queries: list[list[float]]
) -> dict[str, list[float]]:
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for n, v in enumerate(queries):
        # Rotate which call goes first: later ones find the vector rows warm in cache.
        order = names[n % len(names) :] + names[: n % len(names)]
        ids = []
        for name in order:
            t0 = time.perf_counter()
            ids.append(await calls[name](v))
            times[name].append((time.perf_counter() - t0) * 1e3)
        assert all(x == ids[0] for x in ids), ids
    return times


def sync_round(calls: dict[str, SyncCall], queries: list[list[float]]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in calls}
    for v in queries:
        for name, call in calls.items():
            t0 = time.perf_counter()
            call(v)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print only the JSON report")
    args = ap.parse_args()
    from moss.integrations.langchain import MossVectorStore

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MOSS_DATA_DIR"] = tmp
        os.environ["MOSS_SESSION_CACHE_PATH"] = tmp
        client, session = asyncio.run(open_session(args.docs))
        store = MossVectorStore(session)
        li_store = llamaindex_store(session)
        hs = haystack_retriever(session)
        async_calls, sync_calls = make_calls(session, store, li_store, hs)
        queries = unit_rows(args.queries, seed=2).tolist()
        sync_round(sync_calls, queries[:20])  # warm the private loop threads
        rounds: list[dict[str, dict[str, float]]] = []
        for _ in range(args.rounds):
            times = asyncio.run(async_round(async_calls, queries))
            times.update(sync_round(sync_calls, queries))
            rounds.append(
                {
                    name: {"p50_ms": pct(xs, 0.5), "p99_ms": pct(xs, 0.99)}
                    for name, xs in times.items()
                }
            )
        store.close()
        if li_store is not None:
            li_store.close()
        if hs is not None:
            hs.document_store.close()
        asyncio.run(client.close())
    names = list(rounds[0])
    summary = {
        name: {
            stat: round(statistics.median(r[name][stat] for r in rounds), 4)
            for stat in ("p50_ms", "p99_ms")
        }
        for name in names
    }
    base = summary["session.query"]["p50_ms"]
    for name in names:
        summary[name]["overhead_p50_ms"] = round(summary[name]["p50_ms"] - base, 4)
    report = {
        "benchmark": "bench_integrations",
        "machine": machine(),
        "docs": args.docs,
        "dim": DIM,
        "top_k": K,
        "queries_per_round": args.queries,
        "rounds": rounds,
        "summary": summary,
    }
    print(json.dumps(report, indent=1))
    if not args.json:
        m = report["machine"]
        print(f"\n{m['cpu']}, {m['cores']} cores, Python {m['python']}; "
              f"{args.docs} docs x {DIM} dims, top {K}, median of {args.rounds} rounds x {args.queries} queries\n")  # fmt: skip
        print("| call | p50 ms | p99 ms | overhead p50 ms |\n|---|---|---|---|")
        for name, s in summary.items():
            print(
                f"| `{name}` | {s['p50_ms']:.3f} | {s['p99_ms']:.3f} | {s['overhead_p50_ms']:+.3f} |"
            )


if __name__ == "__main__":
    main()

"""Server-side query against a loaded copy: what a query on an unloaded index costs.

Run:
    .venv/bin/python benchmarks/bench_server_query.py [--docs 10000] [--queries 300] [--json]

Builds one custom-vector index (384-d random unit vectors, short texts over a 26-word vocabulary)
on a ``moss serve`` subprocess (real HTTP on 127.0.0.1, the server in its own process), then
times the same queries three ways:

* ``local``: ``client.query`` on a loaded copy (in process, no I/O);
* ``server_http``: ``client.query`` on the index *not* loaded, so ``POST /v1/indexes/{name}/query``
  (the server's :class:`~moss.server.queries.QueryService` holds the version after the first
  query, which is timed separately as ``first_query_ms``: the load of the version);
* ``service_direct``: :meth:`QueryService.query` on the server's data directory in this process
  (no HTTP): the server's own cost, for comparison with the HTTP figure.

Each way runs vector-only (alpha 1) and hybrid (alpha 0.5) queries. Results of the three are
checked equal (ids, scores to 1e-6) before anything is reported. Prints JSON (machine included)
and, unless ``--json``, a markdown table. ``QueryService`` takes a store, so a 100k figure can be
produced the same way (``--docs 100000``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import _machine
from moss import DocumentInfo, MossClient, QueryOptions, SearchResult
from moss.server.queries import QueryService
from moss.server.registry import acquire_store, release_store
from moss.server.testing import ServerProcess

DIM = 384
WORDS = (
    "apple banana cherry delta echo falcon garden harbor island jungle kettle lemon mango "
    "nectar ocean pepper quartz river salmon tiger umbrella violet walnut xenon yellow zebra"
).split()


def corpus(n: int, seed: int = 0) -> tuple[list[DocumentInfo], np.ndarray]:
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    words = rng.choice(WORDS, size=(n, 8))
    docs = [
        DocumentInfo(str(i), " ".join(words[i]), {"g": str(i % 5)}, vecs[i].tolist())
        for i in range(n)
    ]
    return docs, vecs


def summary(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p95_ms": round(float(np.percentile(a, 95)), 3),
        "mean_ms": round(float(a.mean()), 3),
    }


def same(a: SearchResult, b: SearchResult) -> bool:
    return [d.id for d in a.docs] == [d.id for d in b.docs] and all(
        abs(x.score - y.score) <= 1e-6 for x, y in zip(a.docs, b.docs)
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    docs, vecs = corpus(args.docs)
    rng = np.random.default_rng(1)
    picks = rng.integers(0, args.docs, size=args.queries)
    qvecs = vecs[picks] + rng.normal(0, 0.05, size=(args.queries, DIM)).astype(np.float32)
    texts = [" ".join(rng.choice(WORDS, size=3)) for _ in range(args.queries)]
    report: dict[str, Any] = {
        "benchmark": "server_query",
        "machine": _machine.machine(numpy=np.__version__),
        "docs": args.docs,
        "dim": DIM,
        "queries": args.queries,
        "top_k": 10,
    }
    with tempfile.TemporaryDirectory() as tmp:
        with ServerProcess(Path(tmp) / "server") as srv:
            async with (
                MossClient(*srv.project, server_url=srv.url) as thin,
                MossClient(*srv.project, server_url=srv.url) as loaded,
            ):
                t = time.perf_counter()
                await thin.create_index("bench", docs, "custom")
                report["create_s"] = round(time.perf_counter() - t, 2)
                t = time.perf_counter()
                await loaded.load_index("bench")
                report["load_index_s"] = round(time.perf_counter() - t, 3)
                first_opts = QueryOptions(embedding=qvecs[0].tolist(), top_k=10, alpha=1.0)
                t = time.perf_counter()
                await thin.query("bench", texts[0], first_opts)
                report["first_query_ms"] = round((time.perf_counter() - t) * 1e3, 1)
                store = acquire_store(srv.data_dir)  # as an embedded client shares it
                service = QueryService(store)
                try:
                    for label, alpha in (("vector", 1.0), ("hybrid", 0.5)):
                        lat: dict[str, list[float]] = {"local": [], "server_http": [], "direct": []}
                        for q, text in zip(qvecs, texts):
                            opts = QueryOptions(embedding=q.tolist(), top_k=10, alpha=alpha)
                            t0 = time.perf_counter()
                            a = await loaded.query("bench", text, opts)
                            t1 = time.perf_counter()
                            b = await thin.query("bench", text, opts)
                            t2 = time.perf_counter()
                            c = service.query(srv.project[0], "bench", text, opts)
                            t3 = time.perf_counter()
                            if not (same(a, b) and same(a, c)):
                                raise SystemExit(f"results differ for query {text!r}")
                            lat["local"].append((t1 - t0) * 1e3)
                            lat["server_http"].append((t2 - t1) * 1e3)
                            lat["direct"].append((t3 - t2) * 1e3)
                        for way, ms in lat.items():
                            report[f"{label}_{way}"] = summary(ms[5:])  # first few: warm-up
                finally:
                    release_store(store)
    return report


def table(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        f"Server-side query, {r['docs']:,} docs x {r['dim']}-d custom vectors, top_k {r['top_k']}, "
        f"{r['queries']} queries ({m['cpu']}, {m['cores']} cores, Python {m['python']}).",
        f"Index create {r['create_s']} s; load_index {r['load_index_s']} s; first server-side "
        f"query (loads the version into the server's cache) {r['first_query_ms']} ms.",
        "",
        "| query | way | p50 ms | p95 ms |",
        "|---|---|---:|---:|",
    ]
    names = {
        "local": "loaded copy (in process)",
        "server_http": "unloaded: POST /query over HTTP",
        "direct": "QueryService in process (no HTTP)",
    }
    for label in ("vector", "hybrid"):
        for way, name in names.items():
            s = r[f"{label}_{way}"]
            lines.append(f"| {label} | {name} | {s['p50_ms']} | {s['p95_ms']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--json", action="store_true", help="print only the JSON report")
    args = ap.parse_args()
    report = asyncio.run(run(args))
    print(json.dumps(report, indent=1))
    if not args.json:
        print()
        print(table(report))


if __name__ == "__main__":
    main()

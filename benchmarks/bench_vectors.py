"""Benchmark of ``moss.vectors.VectorIndex``: build, per-row add, search latency, recall, load.

Run from the repository root (takes 1-3 minutes; 100k builds dominate)::

    .venv/bin/python benchmarks/bench_vectors.py                 # scifact, 10k, 100k, random-100k
    .venv/bin/python benchmarks/bench_vectors.py --sets scifact,synth10k --queries 300
    .venv/bin/python benchmarks/bench_vectors.py --ef-sweep 64,96,128,192,256
    .venv/bin/python benchmarks/bench_vectors.py --variants      # storage / brute-force options

Prints a JSON report (machine, load average, versions, datasets, every number) and a markdown
table. Environment: ``BENCH_SCIFACT`` overrides the SciFact embedding folder
(default ``../shared/data/scifact/emb``: ``corpus.npy`` 5183x384 and ``queries.npy`` 1109x384,
all-MiniLM-L6-v2, unit vectors).

Datasets (recall is always against exact float64 brute force on the same vectors):

* ``scifact``: the 5183 real corpus vectors; queries are the real SciFact queries.
* ``synth10k`` / ``synth100k``: for each real corpus vector ``x``, ``c`` noisy copies
  ``normalise(x + 1.0 * e)`` with ``e ~ N(0, Sigma)``, ``Sigma`` the covariance of the real corpus
  (so the noise stays in the directions real embeddings vary in), ``c = 2`` resp. ``20``, shuffled
  with seed 0 and cut to 10,000 resp. 100,000 rows. With noise scale 1.0 the median cosine of a
  row to its 1st/10th/20th neighbour is 0.64/0.55/0.48 (real corpus: 0.68/0.53/0.49); the query
  top-1/10/100 cosines are 0.56/0.51/0.41 (real: 0.63/0.45/0.33), i.e. the top of each result
  list is more crowded than in real data, which makes recall harder, not easier.
* ``random100k``: isotropic Gaussian rows and queries, normalised: the worst case for any graph
  index (every point is almost equidistant in 384-d).
* ``nonunit10k``: ``synth10k`` rows scaled by norms drawn uniformly from [0.25, 4] (custom vectors
  ranked by raw inner product).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import _machine
from moss.vectors import VectorIndex

ROOT = Path(__file__).resolve().parent.parent
SCIFACT = Path(os.environ.get("BENCH_SCIFACT", ROOT.parent / "shared" / "data" / "scifact" / "emb"))


# ---------------------------------------------------------------------------------- data


def load_scifact() -> tuple[np.ndarray, np.ndarray]:
    corpus = np.load(SCIFACT / "corpus.npy").astype(np.float32)
    queries = np.load(SCIFACT / "queries.npy").astype(np.float32)
    return corpus, queries


def synthetic(corpus: np.ndarray, copies: int, n: int, noise: float = 1.0) -> np.ndarray:
    """Noisy copies of real vectors, noise shaped like the corpus covariance (module docstring)."""
    rng = np.random.default_rng(0)
    centred = corpus - corpus.mean(0)
    lam, vecs = np.linalg.eigh((centred.T @ centred / len(corpus)).astype(np.float64))
    root = np.sqrt(np.clip(lam, 0, None))
    out = []
    for _ in range(copies):
        e = (rng.standard_normal(corpus.shape) * root) @ vecs.T
        y = corpus + noise * e.astype(np.float32)
        out.append(y / np.linalg.norm(y, axis=1, keepdims=True))
    y = np.concatenate(out)
    return np.ascontiguousarray(y[rng.permutation(len(y))][:n], dtype=np.float32)


def isotropic(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    out: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def exact_topk(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    out = np.empty((len(q), k), dtype=np.int64)
    x64 = x.astype(np.float64)
    for s in range(0, len(q), 64):
        sc = q[s : s + 64].astype(np.float64) @ x64.T
        part = np.argpartition(-sc, k, axis=1)[:, :k]
        for i, row in enumerate(part):
            out[s + i] = row[np.lexsort((row, -sc[i, row]))]
    return out


# ---------------------------------------------------------------------------------- timing


def pct(ts: list[float]) -> dict[str, float]:
    a = np.asarray(ts) * 1e3
    return {
        "p50_ms": round(float(np.median(a)), 4),
        "p99_ms": round(float(np.percentile(a, 99)), 4),
        "max_ms": round(float(a.max()), 4),
    }


_EVICT = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB: larger than the L3 cache


def run_queries(
    vi: VectorIndex,
    queries: np.ndarray,
    k: int,
    truth: np.ndarray | None,
    allowed: np.ndarray | None = None,
    cold: bool = False,
) -> dict[str, float]:
    ts, hits = [], 0
    for i, q in enumerate(queries):
        if cold:
            _EVICT.sum()
        t = time.perf_counter()
        rows, _ = vi.search(q, k, allowed)
        ts.append(time.perf_counter() - t)
        if truth is not None:
            hits += len(np.intersect1d(rows[:k], truth[i, :k]))
    out: dict[str, float] = pct(ts)
    if truth is not None:
        out[f"recall@{k}"] = round(hits / (k * len(queries)), 4)
    return out


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def timed(f: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    r = f()
    return r, time.perf_counter() - t


# ---------------------------------------------------------------------------------- parts


def bench_set(
    name: str, x: np.ndarray, queries: np.ndarray, args: argparse.Namespace
) -> dict[str, Any]:
    n, dim = x.shape
    res: dict[str, Any] = {"dataset": name, "n": n, "dim": dim, "loadavg_start": os.getloadavg()}
    truth10 = exact_topk(x, queries, 10)
    truth40 = exact_topk(x, queries, 40)

    # Bulk build: one set() of every row (folds all but 1024 on all cores), then flush().
    vi = VectorIndex(dim)
    _, t_set = timed(lambda: vi.set(np.arange(n), x))
    _, t_flush = timed(vi.flush)
    res["bulk_build_s"] = round(t_set + t_flush, 3)
    res["bulk_build_us_per_row"] = round((t_set + t_flush) / n * 1e6, 1)
    res["stats"] = vi.stats()

    res["search_k10"] = run_queries(vi, queries, 10, truth10)
    res["search_k40"] = run_queries(vi, queries, 40, truth40)
    res["search_k10_cold_cache"] = run_queries(vi, queries[:200], 10, None, cold=True)
    if args.ef_sweep:
        sweep = {}
        for ef in args.ef_sweep:
            vi._ef = ef  # benchmark-only override of the automatic ef
            sweep[ef] = {
                "k10": run_queries(vi, queries, 10, truth10),
                "k40": run_queries(vi, queries, 40, truth40),
            }
        vi._ef = None
        res["ef_sweep"] = sweep

    # Filtered queries at several selectivities (random masks; exact truth per mask).
    rng = np.random.default_rng(1)
    filt = {}
    for sel in (0.002, 0.02, 0.1, 0.3, 0.7):
        mask = np.less(rng.random(n), sel)
        sub = np.flatnonzero(mask)
        truth = sub[exact_topk(x[sub], queries[:200], 10)] if sub.size >= 10 else None
        filt[str(sel)] = run_queries(vi, queries[:200], 10, truth, allowed=mask)
    res["filtered_k10"] = filt

    # Memory: float32 matrix vs serialised graph.
    arrays = vi.to_arrays()
    res["matrix_mb"] = round(arrays["matrix"].nbytes / 2**20, 2)
    res["graph_mb"] = round(arrays["graph"].nbytes / 2**20, 2) if "graph" in arrays else 0.0
    res["graph_over_matrix"] = round(res["graph_mb"] / res["matrix_mb"], 3)

    # Load: save as .npy, memory-map in a fresh process, time from_arrays and the first queries.
    with tempfile.TemporaryDirectory() as tmp:
        for key, arr in arrays.items():
            np.save(Path(tmp) / f"{key}.npy", np.asarray(arr))
        np.save(Path(tmp) / "queries.npy", queries[:200])
        np.save(Path(tmp) / "truth.npy", truth10[:200])
        out = subprocess.run(
            [sys.executable, __file__, "--load-probe", tmp],
            capture_output=True,
            text=True,
            check=True,
        )
        res["load"] = json.loads(out.stdout)

    # One-row adds into the built index with nobody calling flush(): the tail absorbs them and
    # each set() folds at most 32 rows once the tail is full. Then flush() folds what is left,
    # which is the incremental (single-threaded, chunked) graph cost per added document.
    extra = x[rng.integers(0, n, 3000)] + 0.01
    add_ts = []
    for i in range(len(extra)):
        t = time.perf_counter()
        vi.set(np.array([n + i]), extra[i : i + 1])
        add_ts.append(time.perf_counter() - t)
    res["add_one_row"] = pct(add_ts)
    res["add_one_row_mean_us"] = round(float(np.mean(add_ts)) * 1e6, 1)
    res["stats_after_adds"] = vi.stats()
    tail = vi.stats()["tail"]
    _, t = timed(vi.flush)
    res["flush_rows"] = tail
    res["flush_s"] = round(t, 3)
    res["flush_us_per_row"] = round(t / max(tail, 1) * 1e6, 1)
    if n <= 20_000:  # churn: overwrite 30% and delete 10% of the rows, flush, recall again
        rows = rng.permutation(n)
        new = x.copy()
        over, gone = rows[: 3 * n // 10], rows[3 * n // 10 : 4 * n // 10]
        new[over] = x[rng.integers(0, n, over.size)] * np.float32(0.9) + x[over] * np.float32(0.1)
        vi.set(over, new[over])
        vi.remove(gone)
        vi.flush()
        keep = np.setdiff1d(np.arange(n), gone)
        truth = keep[exact_topk(new[keep], queries, 10)]
        vi.remove(np.arange(n, n + len(extra)))
        res["after_churn_k10"] = run_queries(vi, queries, 10, truth)
    res["loadavg_end"] = os.getloadavg()
    return res


def load_probe(folder: str) -> None:
    """Child process: memory-map the arrays, from_arrays, first queries; print JSON."""
    from moss.vectors_graph import _usearch

    _usearch()  # loaded lazily by from_arrays, not index memory (and after onnxruntime, as there)

    before = rss_mb()
    arrays = {
        p.stem: np.load(p, mmap_mode="r")
        for p in Path(folder).glob("*.npy")
        if p.stem not in ("queries", "truth")
    }
    t = time.perf_counter()
    vi = VectorIndex.from_arrays(arrays)
    load_s = time.perf_counter() - t
    queries = np.load(Path(folder) / "queries.npy")
    truth = np.load(Path(folder) / "truth.npy")
    first = run_queries(vi, queries, 10, truth)
    raw = arrays["matrix"].nbytes / 2**20
    print(
        json.dumps(
            {
                "from_arrays_ms": round(load_s * 1e3, 2),
                "rss_delta_after_200_queries_mb": round(rss_mb() - before, 1),
                "raw_vectors_mb": round(raw, 1),
                "first_200_queries": first,
            }
        )
    )


def bench_variants(x: np.ndarray, queries: np.ndarray) -> dict[str, Any]:
    """The alternatives the design was chosen from, on one dataset (``--variants``).

    Exact brute force (numpy, usearch ``exact=True``, numkong) and HNSW graphs over each storage
    type, each graph re-ranked exactly against the float32 rows like VectorIndex does.
    """
    import numkong
    from usearch.compiled import Index, MetricKind, MetricSignature, ScalarKind, exact_search

    n = len(x)
    out: dict[str, Any] = {"n": n, "loadavg_start": os.getloadavg()}
    truth = exact_topk(x, queries, 10)
    scale = 127 / float(np.abs(x).max())
    x8 = np.clip(np.rint(x * scale), -127, 127).astype(np.int8)

    def q8(q: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.clip(np.rint(q * (127 / np.abs(q).max())), -127, 127)
        return out.astype(np.int8)[None, :]

    def lat(f: Callable[[np.ndarray], Any]) -> float:
        ts = []
        for q in queries[:300]:
            t = time.perf_counter()
            f(q)
            ts.append(time.perf_counter() - t)
        return round(float(np.median(ts)) * 1e3, 4)

    brute: dict[str, float] = {
        "numpy f32 gemv (BLAS threads as configured)": lat(lambda q: x @ q),
        "numpy f32 gemv + argpartition": lat(lambda q: np.argpartition(-(x @ q), 40)[:40]),
        "numkong i8 dot (cdist)": lat(lambda q: numkong.cdist(q8(q), x8, metric="dot")),
    }
    for name, data, kind in (
        ("f32", x, ScalarKind.F32),
        ("f16", x.astype(np.float16), ScalarKind.F16),
        ("i8", x8, ScalarKind.I8),
    ):

        def exact(q: np.ndarray, d: np.ndarray = data, k: Any = kind) -> Any:
            qq = q8(q) if k == ScalarKind.I8 else q[None, :].astype(d.dtype)
            return exact_search(d, qq, 40, threads=1, metric_kind=MetricKind.IP, dtype=k)

        brute[f"usearch exact_search {name}"] = lat(exact)
    out["brute_force_p50_ms"] = brute

    graphs: dict[str, Any] = {}
    for name, kind, data, m in (
        ("M16 i8, own global scale (chosen)", ScalarKind.I8, x8, 16),
        ("M12 i8, own global scale", ScalarKind.I8, x8, 12),
        ("M16 i8, usearch quantises (normalises: cosine)", ScalarKind.I8, x, 16),
        ("M16 f16", ScalarKind.F16, x, 16),
        ("M16 f32", ScalarKind.F32, x, 16),
    ):
        index = Index(
            ndim=x.shape[1],
            dtype=kind,
            connectivity=m,
            expansion_add=200,
            expansion_search=64,
            metric_kind=MetricKind.IP,
            metric_signature=MetricSignature.ArrayArraySize,
            metric_pointer=0,
            multi=False,
            enable_key_lookups=True,
        )
        keys = np.arange(n, dtype=np.uint64)
        t0 = time.perf_counter()
        index.add_many(keys, data, copy=True, threads=0, dtype=ScalarKind.Unknown)
        t = time.perf_counter() - t0
        own = data.dtype == np.int8
        row: dict[str, Any] = {
            "build_s": round(t, 2),
            "bytes_per_row": round(index.serialized_length / n, 1),
        }
        for ef in (64, 128, 192):
            index.expansion_search = ef

            def one(q: np.ndarray, index: Any = index, own: bool = own) -> np.ndarray:
                keys, _, counts, _, _ = index.search_many(
                    q8(q) if own else q[None, :],
                    count=32,
                    exact=False,
                    threads=1,
                    dtype=ScalarKind.Unknown,
                )
                cand = keys[0, : counts[0]].astype(np.int64)
                top: np.ndarray = cand[np.argsort(-(x[cand] @ q), kind="stable")[:10]]
                return top

            hits = sum(len(np.intersect1d(one(q), t)) for q, t in zip(queries, truth))
            row[f"ef{ef}"] = {"p50_ms": lat(one), "recall@10": round(hits / truth.size, 4)}
        graphs[name] = row
    out["graphs_efC200_rerank32"] = graphs
    out["loadavg_end"] = os.getloadavg()
    return out


def machine() -> dict[str, Any]:
    # The version from the package metadata: importing usearch here, before anything has loaded
    # onnxruntime, would make a later onnxruntime import crash (moss.vectors_graph._usearch).
    from importlib.metadata import version

    return _machine.machine(numpy=np.__version__, usearch=version("usearch"))


def markdown(results: list[dict[str, Any]]) -> str:
    head = (
        "| dataset | n | build s (us/row) | add 1 row p50/p99 ms | flush us/row | "
        "k=10 p50/p99 ms | recall@10 | k=40 p50 ms | recall@40 | cold p50 ms | "
        "graph/matrix | load ms | load RSS MB / raw MB |\n|" + "---|" * 13
    )
    lines = [head]
    for r in results:
        s10, s40, load = r["search_k10"], r["search_k40"], r["load"]
        lines.append(
            f"| {r['dataset']} | {r['n']} | {r['bulk_build_s']} ({r['bulk_build_us_per_row']}) "
            f"| {r['add_one_row']['p50_ms']}/{r['add_one_row']['p99_ms']} "
            f"| {r['flush_us_per_row']} | {s10['p50_ms']}/{s10['p99_ms']} | {s10['recall@10']} "
            f"| {s40['p50_ms']} | {s40['recall@40']} | {r['search_k10_cold_cache']['p50_ms']} "
            f"| {r['graph_over_matrix']} | {load['from_arrays_ms']} "
            f"| {load['rss_delta_after_200_queries_mb']} / {load['raw_vectors_mb']} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="scifact,synth10k,synth100k,random100k,nonunit10k")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--ef-sweep", type=lambda s: [int(x) for x in s.split(",")], default=None)
    ap.add_argument("--variants", action="store_true", help="compare the design alternatives")
    ap.add_argument("--load-probe", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.load_probe:
        load_probe(args.load_probe)
        return
    corpus, queries = load_scifact()
    queries = queries[: args.queries]
    makers: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
        "scifact": lambda: (corpus, queries),
        "synth10k": lambda: (synthetic(corpus, 2, 10_000), queries),
        "synth100k": lambda: (synthetic(corpus, 20, 100_000), queries),
        "random100k": lambda: (
            isotropic(100_000, corpus.shape[1], 1),
            isotropic(len(queries), corpus.shape[1], 2),
        ),
        "nonunit10k": lambda: (
            synthetic(corpus, 2, 10_000)
            * np.random.default_rng(3).uniform(0.25, 4.0, (10_000, 1)).astype(np.float32),
            queries,
        ),
    }
    report: dict[str, Any] = {"machine": machine(), "results": []}
    if args.variants:
        for name in ("synth10k", "nonunit10k"):
            x, q = makers[name]()
            report[f"variants_{name}"] = bench_variants(x, q)
        print(json.dumps(report, indent=1))
        return
    for name in args.sets.split(","):
        x, q = makers[name]()
        res = bench_set(name, x, q, args)
        report["results"].append(res)
        print(f"# {name} done: {json.dumps(res['search_k10'])}", file=sys.stderr)
    print(json.dumps(report, indent=1))
    print()
    print(markdown(report["results"]))


if __name__ == "__main__":
    main()

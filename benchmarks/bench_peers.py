"""Side-by-side benchmark: our engine against the systems users would pick instead.

One run, one process tree: this script prepares each dataset once (same vectors, same texts, exact
ground truth), then starts one worker subprocess per system so that peak-RSS figures are clean, and
scores every worker's ranked results with the same metric code (``moss.evaluation``).

Systems: moss (the public session API, supplied vectors), numpy brute force, faiss (flat, HNSW),
hnswlib, usearch, bm25s, numpy+bm25s (hand-fused hybrid), chromadb, lancedb (dense, native FTS,
hybrid RRF and linear), qdrant-client local mode (in memory, on disk, BM25 sparse + RRF hybrid),
sqlite-vec (vec0 + FTS5 + RRF in SQL). top_k=10 everywhere; HNSW M=16, ef_construction=100,
ef_search=100; one query thread (OMP/MKL/OpenBLAS threads = 1 in the workers).

Reported per (system, mode): import and build time, query p50/p95/p99, recall@10 against exact
search (dense modes), nDCG@10 on SciFact (BEIR test split, reference all-MiniLM-L6-v2 vectors),
peak RSS and its growth over the loaded data, on-disk size. Ratios to our engine are the headline:
the machines here are shared and noisy, so absolute times are only indicative; the 1-minute load
average is recorded before and after every worker.

Setup (peers go into a separate venv so the project venv stays clean; ``scripts/bench-peers`` does
exactly this, then runs the script with any options passed to it)::

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install -e '.[bench]' faiss-cpu hnswlib usearch bm25s PyStemmer \
        chromadb lancedb pyarrow qdrant-client sqlite-vec
    .venv-bench/bin/pip install pysqlite3-binary   # Linux x86_64: a sqlite3 that loads extensions

Run::

    .venv-bench/bin/python benchmarks/bench_peers.py                      # SciFact + 10k synthetic
    .venv-bench/bin/python benchmarks/bench_peers.py --synthetic 10000,100000
    .venv-bench/bin/python benchmarks/bench_peers.py --synthetic 10000 --million --peers moss,numpy
    .venv-bench/bin/python benchmarks/bench_peers.py --no-scifact --synthetic 100000 --peers moss,usearch

Options are listed by ``--help``. Environment: ``BENCH_TMP`` (scratch folder, default the system
temp dir). Output: a JSON report on stdout (also written to ``--out``, default
``benchmarks/results/peers-<time>.json``), then a markdown table per dataset. Progress on stderr.

Synthetic data: ``clustered`` (default) draws documents around ``N/100`` Gaussian centres and
queries as perturbed documents, so an HNSW graph can reach high recall as on real embeddings;
``uniform`` draws unit vectors uniformly (no structure: every HNSW scores low recall there).
Texts are 30 words drawn from a Zipf-distributed 20,000-word vocabulary; a query's text is 4 words of
the document it was drawn from.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import _machine  # noqa: E402  (benchmarks/_machine.py, beside this script)
from peers.common import Params  # noqa: E402

ALL_PEERS = [
    "moss",
    "numpy",
    "faiss-flat",
    "faiss-hnsw",
    "hnswlib",
    "usearch",
    "bm25s",
    "numpy+bm25s",
    "chromadb",
    "lancedb",
    "qdrant-mem",
    "qdrant-disk",
    "qdrant-hybrid",
    "sqlite-vec",
]
PACKAGES = [
    "numpy",
    "faiss-cpu",
    "hnswlib",
    "usearch",
    "bm25s",
    "PyStemmer",
    "chromadb",
    "lancedb",
    "pyarrow",
    "qdrant-client",
    "sqlite-vec",
    "pysqlite3-binary",
    "psutil",
]
DEFAULT_SCIFACT = REPO.parent / "shared" / "data" / "scifact"
KEYWORD_MODES = ("keyword", "bm25", "fts", "fts5", "sparse-bm25")
HAND_BUILT = ("numpy+bm25s",)  # a user's own fusion code, not a library's hybrid query
DEFAULT_ALPHA = 0.8  # QueryOptions' default: the basis of every "× moss" ratio


# --------------------------------------------------------------------------------------------
# Data preparation


def _write(
    folder: Path,
    name: str,
    vectors: np.ndarray,
    texts: list[str],
    qvectors: np.ndarray,
    qtexts: list[str],
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "vectors.npy", np.ascontiguousarray(vectors, dtype=np.float32))
    np.save(folder / "qvectors.npy", np.ascontiguousarray(qvectors, dtype=np.float32))
    (folder / "texts.json").write_text(json.dumps(texts))
    (folder / "qtexts.json").write_text(json.dumps(qtexts))
    (folder / "meta.json").write_text(json.dumps({"name": name}))


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-``k`` rows by inner product, best first, for every query (chunked)."""
    out = np.zeros((queries.shape[0], k), dtype=np.int64)
    for s in range(0, queries.shape[0], 64):
        scores = queries[s : s + 64] @ vectors.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
        out[s : s + 64] = np.take_along_axis(part, order, 1)
    return out


def prepare_scifact(dataset: Path, folder: Path) -> dict[str, Any]:
    """SciFact test split with the reference MiniLM vectors (title + text as document text)."""
    if str(REPO / "src") not in sys.path:
        sys.path.append(str(REPO / "src"))
    from moss.evaluation import load_beir, load_embeddings

    ds = load_beir(dataset, "test")
    corpus, queries = load_embeddings(dataset / "emb", ds)
    _write(folder, "scifact", corpus, ds.doc_texts, queries, list(ds.queries.values()))
    return {
        "name": "scifact",
        "n": len(ds.doc_ids),
        "dim": int(corpus.shape[1]),
        "queries": len(ds.queries),
        "doc_ids": ds.doc_ids,
        "query_ids": list(ds.queries),
        "qrels": ds.qrels,
        "exact": exact_top_k(corpus, queries, 10),
    }


def prepare_synthetic(
    n: int, dim: int, nq: int, kind: str, seed: int, folder: Path
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        vectors = rng.standard_normal((n, dim), dtype=np.float32)
        qvectors = rng.standard_normal((nq, dim), dtype=np.float32)
        src = rng.integers(0, n, nq)
    else:
        centres = rng.standard_normal((max(n // 100, 1), dim), dtype=np.float32)
        vectors = np.empty((n, dim), dtype=np.float32)
        for s in range(0, n, 100_000):
            e = min(s + 100_000, n)
            vectors[s:e] = centres[rng.integers(0, len(centres), e - s)]
            vectors[s:e] += rng.standard_normal((e - s, dim), dtype=np.float32)
        src = rng.integers(0, n, nq)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        qvectors = vectors[src] + 0.05 * rng.standard_normal((nq, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    qvectors /= np.linalg.norm(qvectors, axis=1, keepdims=True)
    vocab = np.array([f"w{i}" for i in range(20_000)])
    zipf = 1.0 / np.arange(1, len(vocab) + 1)
    words = rng.choice(len(vocab), size=(n, 30), p=zipf / zipf.sum())
    texts = [" ".join(vocab[row]) for row in words]
    qtexts = [" ".join(vocab[words[s, rng.choice(30, 4, replace=False)]]) for s in src]
    name = f"synthetic-{kind}-{n}"
    _write(folder, name, vectors, texts, qvectors, qtexts)
    return {
        "name": name,
        "n": n,
        "dim": dim,
        "queries": nq,
        "exact": exact_top_k(vectors, qvectors, 10),
    }


# --------------------------------------------------------------------------------------------
# Workers


def worker_main(peer: str, data_dir: Path, params_json: str, out: Path) -> None:
    """Entry point of a worker subprocess: run one peer, write its rows as JSON."""
    from peers.common import Row, load_data, peak_rss_mb, rss_mb

    params = Params(**json.loads(params_json))
    data = load_data(data_dir)
    base = rss_mb()
    scratch = os.environ.get("BENCH_TMP") or None
    try:
        from peers.adapters import ADAPTERS

        with tempfile.TemporaryDirectory(prefix=f"bench-{peer}-", dir=scratch) as tmp:
            rows = ADAPTERS[peer](data, params, Path(tmp))
    except ImportError as e:
        rows = [Row(peer, "-", status=f"skipped: {e.name or e} not installed")]
    except Exception as e:  # report, do not abort the whole run
        rows = [Row(peer, "-", status=f"error: {type(e).__name__}: {e}"[:200])]
    result = {
        "rows": [asdict(r) for r in rows],
        "base_rss_mb": base,
        "peak_rss_mb": peak_rss_mb(),
    }
    out.write_text(json.dumps(result))


def run_worker(peer: str, data_dir: Path, params: Params, timeout: float) -> dict[str, Any]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = "1"
    env["ANONYMIZED_TELEMETRY"] = "False"
    with tempfile.TemporaryDirectory(prefix="bench-out-") as tmp:
        out = Path(tmp) / "out.json"
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            peer,
            "--data",
            str(data_dir),
            "--params",
            json.dumps(asdict(params)),
            "--result",
            str(out),
        ]
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=env, timeout=timeout, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            return {
                "rows": [{"peer": peer, "mode": "-", "status": f"timeout after {timeout:.0f} s"}],
                "load_before": load_before,
                "load_after": os.getloadavg()[0],
            }
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
            return {
                "rows": [{"peer": peer, "mode": "-", "status": f"crashed: {tail[0]}"[:200]}],
                "load_before": load_before,
                "load_after": os.getloadavg()[0],
            }
        result: dict[str, Any] = json.loads(out.read_text())
    result.update(load_before=load_before, load_after=os.getloadavg()[0], wall_s=wall)
    return result


# --------------------------------------------------------------------------------------------
# Scoring and report


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def score_rows(ds: dict[str, Any], worker: dict[str, Any]) -> list[dict[str, Any]]:
    """Aggregate one worker's rows: latency percentiles, recall vs exact, nDCG@10."""
    out = []
    for r in worker["rows"]:
        row: dict[str, Any] = {
            "peer": r["peer"],
            "mode": r["mode"],
            "status": r.get("status", "ok"),
            "import_s": r.get("import_s"),
            "build_s": r.get("build_s"),
            "disk_mb": r["disk_bytes"] / 2**20 if r.get("disk_bytes") is not None else None,
            "peak_rss_mb": worker.get("peak_rss_mb"),
            "delta_rss_mb": (worker["peak_rss_mb"] - worker["base_rss_mb"])
            if "peak_rss_mb" in worker
            else None,
            "rss_after_mb": r.get("rss_after_mb"),
            "load_before": worker.get("load_before"),
            "load_after": worker.get("load_after"),
            "errors": r.get("errors", 0),
            "note": r.get("note", ""),
        }
        lat = r.get("latencies_ms") or []
        results = r.get("results") or []
        row.update(
            n_q=len(results), p50_ms=_pct(lat, 50), p95_ms=_pct(lat, 95), p99_ms=_pct(lat, 99)
        )
        row["docs_per_s"] = ds["n"] / row["build_s"] if row.get("build_s") else None
        if results and r["mode"].startswith("dense"):
            exact = ds["exact"]
            hits = [len(set(res) & set(exact[i].tolist())) / 10.0 for i, res in enumerate(results)]
            row["recall_at_10_vs_exact"] = float(np.mean(hits))
        if results and "qrels" in ds:
            from moss.evaluation import ndcg_at_k

            ids, qids = ds["doc_ids"], ds["query_ids"]
            scores = [
                ndcg_at_k([ids[j] for j in res], ds["qrels"][qids[i]], 10)
                for i, res in enumerate(results)
            ]
            row["ndcg_at_10"] = float(np.mean(scores))
        out.append(row)
    return out


def family(mode: str) -> str:
    if mode.startswith("dense"):
        return "dense"
    if mode in KEYWORD_MODES:
        return "keyword"
    return "hybrid" if mode.startswith("hybrid") else "other"


def add_ratios(rows: list[dict[str, Any]], default_alpha: float) -> None:
    """``p50_x_moss``: a row's p50 over our engine's p50 in the same family."""
    ours = {r["mode"]: r for r in rows if r["peer"] == "moss" and r.get("p50_ms")}
    basis = {
        "dense": ours.get("dense"),
        "keyword": ours.get("keyword"),
        "hybrid": ours.get(f"hybrid-score a={default_alpha:g}")
        or next((v for k, v in ours.items() if k.startswith("hybrid-score")), None),
    }
    for r in rows:
        b = basis.get(family(r["mode"]))
        if b and r.get("p50_ms"):
            r["p50_x_moss"] = r["p50_ms"] / b["p50_ms"]


def headline(rows: list[dict[str, Any]], default_alpha: float) -> dict[str, Any]:
    """Our default hybrid (score fusion at the default alpha) against the peers' hybrids.

    Packaged hybrids (a library's own hybrid query) and the hand-built numpy+bm25s pipeline are
    reported separately: the latter is a user writing their own fusion, not a product.
    """
    ok = [r for r in rows if r.get("p50_ms") is not None]
    ours = [r for r in ok if r["peer"] == "moss" and family(r["mode"]) == "hybrid"]
    basis = next((r for r in ours if r["mode"] == f"hybrid-score a={default_alpha:g}"), None)
    out: dict[str, Any] = {}
    if basis is None:
        return out
    out["moss_hybrid"] = f"{basis['mode']}: p50 {basis['p50_ms']:.3f} ms"
    groups = {
        "library": [
            r
            for r in ok
            if r["peer"] not in ("moss", *HAND_BUILT) and family(r["mode"]) == "hybrid"
        ],
        "hand_built": [r for r in ok if r["peer"] in HAND_BUILT and family(r["mode"]) == "hybrid"],
    }
    for name, peers in groups.items():
        if not peers:
            continue
        fastest = min(peers, key=lambda r: r["p50_ms"])
        out[f"fastest_{name}_hybrid"] = f"{fastest['peer']} {fastest['mode']}"
        out[f"p50_speedup_vs_fastest_{name}_hybrid"] = round(fastest["p50_ms"] / basis["p50_ms"], 1)
        if all("ndcg_at_10" in r for r in ours + peers):
            best = max(peers, key=lambda r: r["ndcg_at_10"])
            out[f"best_{name}_hybrid_ndcg"] = (
                f"{best['ndcg_at_10']:.4f} ({best['peer']} {best['mode']})"
            )
    if all("ndcg_at_10" in r for r in ours):
        best_ours = max(ours, key=lambda r: r["ndcg_at_10"])
        out["best_moss_hybrid_ndcg"] = f"{best_ours['ndcg_at_10']:.4f} ({best_ours['mode']})"
    dense = [r for r in ok if r["peer"] == "moss" and r["mode"] == "dense"]
    if dense:
        out["moss_dense_p50_ms"] = round(dense[0]["p50_ms"], 3)
        out["moss_dense_recall_at_10"] = dense[0].get("recall_at_10_vs_exact")
    return out


def _f(v: Any, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def markdown(ds: dict[str, Any], rows: list[dict[str, Any]], params: Params) -> str:
    has_ndcg = any("ndcg_at_10" in r for r in rows)
    head = (
        [
            "system",
            "mode",
            "status",
            "import s",
            "build s",
            "docs/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "p50 × moss",
            "R@10 vs exact",
        ]
        + (["nDCG@10"] if has_ndcg else [])
        + ["peak RSS MB", "ΔRSS MB", "RSS after MB", "disk MB", "n_q"]
    )
    lines = [
        f"### {ds['name']}: N={ds['n']}, d={ds['dim']}, {ds['queries']} queries, "
        f"top_k={params.top_k}, HNSW M={params.hnsw_m} efC={params.hnsw_ef_construction} "
        f"ef={params.hnsw_ef_search}, hybrid depth {params.depth}, 1 query thread",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        cells = [
            r["peer"],
            r["mode"],
            r["status"],
            _f(r.get("import_s"), ".2f"),
            _f(r.get("build_s"), ".2f"),
            _f(r.get("docs_per_s"), ".0f"),
            _f(r.get("p50_ms"), ".3f"),
            _f(r.get("p95_ms"), ".3f"),
            _f(r.get("p99_ms"), ".3f"),
            _f(r.get("p50_x_moss"), ".1f"),
            _f(r.get("recall_at_10_vs_exact"), ".3f"),
        ]
        if has_ndcg:
            cells.append(_f(r.get("ndcg_at_10"), ".4f"))
        cells += [
            _f(r.get("peak_rss_mb"), ".0f"),
            _f(r.get("delta_rss_mb"), ".0f"),
            _f(r.get("rss_after_mb"), ".0f"),
            _f(r.get("disk_mb"), ".1f"),
            str(r.get("n_q", "–")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    loads = [x for r in rows for x in (r.get("load_before"), r.get("load_after")) if x is not None]
    if loads:
        lines += [
            "",
            f"1-min load average around the workers: {min(loads):.2f}–{max(loads):.2f} "
            f"on {os.cpu_count()} CPUs.",
        ]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    info = _machine.machine()
    info["loadavg_start"] = info.pop("loadavg")
    return info


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    # Read, not imported: the orchestrator should not load the engine into its own process.
    version_file = (REPO / "src" / "moss" / "_version.py").read_text()
    out["moss"] = version_file.split("=", 1)[1].strip().strip("\"'")
    return out


# --------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--scifact",
        type=Path,
        default=DEFAULT_SCIFACT,
        help="BEIR SciFact folder with emb/ (default ../shared/data/scifact)",
    )
    p.add_argument("--no-scifact", action="store_true", help="skip the SciFact run")
    p.add_argument(
        "--synthetic",
        default="10000",
        help="comma-separated corpus sizes ('' for none; default 10000)",
    )
    p.add_argument("--million", action="store_true", help="also run a 1,000,000-doc synthetic set")
    p.add_argument("--synthetic-kind", choices=["clustered", "uniform"], default="clustered")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int, default=500, help="synthetic queries (default 500)")
    p.add_argument("--peers", default=",".join(ALL_PEERS), help="comma-separated systems")
    p.add_argument("--alphas", default="0.5,0.8", help="hybrid weights for weighted modes")
    p.add_argument("--depth", type=int, default=50, help="per-list depth of peer hybrids")
    p.add_argument("--budget", type=float, default=60.0, help="query seconds per mode")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per worker")
    p.add_argument("--qdrant-cap", type=int, default=20000, help="largest N for qdrant local")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="JSON report path")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--params", help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker_main(args.worker, args.data, args.params, args.result)
        return 0
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = sorted(set(peers) - set(ALL_PEERS))
    if unknown:
        sys.stderr.write(f"unknown peers: {', '.join(unknown)}; known: {', '.join(ALL_PEERS)}\n")
        return 2
    params = Params(
        alphas=[float(a) for a in args.alphas.split(",")],
        depth=args.depth,
        budget_s=args.budget,
        qdrant_cap=args.qdrant_cap,
    )
    sizes = [int(s) for s in args.synthetic.split(",") if s.strip()]
    if args.million:
        sizes.append(1_000_000)
    report: dict[str, Any] = {
        "machine": machine(),
        "versions": versions(),
        "params": asdict(params),
        "datasets": [],
    }
    md: list[str] = []
    out = (
        args.out or REPO / "benchmarks" / "results" / f"peers-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-data-", dir=os.environ.get("BENCH_TMP")) as t:
        plans: list[tuple[Path, Any]] = []
        if not args.no_scifact:
            if (args.scifact / "emb" / "corpus.npy").exists():
                plans.append((Path(t) / "scifact", lambda f: prepare_scifact(args.scifact, f)))
            else:
                sys.stderr.write(f"SciFact with emb/ not found at {args.scifact}; skipped\n")
        for n in sizes:
            plans.append(
                (
                    Path(t) / f"syn{n}",
                    lambda f, n=n: prepare_synthetic(
                        n, args.dim, args.queries, args.synthetic_kind, args.seed, f
                    ),
                )
            )
        for folder, prepare in plans:
            ds = prepare(folder)
            sys.stderr.write(f"[{ds['name']}] N={ds['n']} queries={ds['queries']}\n")
            rows: list[dict[str, Any]] = []
            entry: dict[str, Any] = {
                "name": ds["name"],
                "n": ds["n"],
                "dim": ds["dim"],
                "queries": ds["queries"],
                "rows": rows,
            }
            report["datasets"].append(entry)
            for peer in peers:
                t0 = time.perf_counter()
                result = run_worker(peer, folder, params, args.timeout)
                scored = score_rows(ds, result)
                rows += scored
                status = ", ".join(sorted({r["status"] for r in scored}))
                sys.stderr.write(
                    f"  {peer:<14} {time.perf_counter() - t0:7.1f} s  {status}  "
                    f"load {os.getloadavg()[0]:.2f}\n"
                )
                # keep what is done so far: a crash later must not lose a long run
                out.write_text(json.dumps({**report, "partial": True}, indent=2))
            add_ratios(rows, DEFAULT_ALPHA)
            entry["headline"] = headline(rows, DEFAULT_ALPHA)
            md.append(markdown(ds, rows, params))
    report["machine"]["loadavg_end"] = os.getloadavg()
    text = json.dumps(report, indent=2)
    out.write_text(text)
    print(text)
    print()
    for ds_report, table in zip(report["datasets"], md):
        print(table)
        print()
        print("Headline: " + json.dumps(ds_report["headline"]))
        print()
    sys.stderr.write(f"report written to {out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

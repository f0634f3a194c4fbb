"""Session engine benchmark: query latency, single-document add, snapshot load and memory.

Run:
    .venv/bin/python benchmarks/bench_session.py [--sizes 10000,100000] [--queries 300] [--json]

Data: SciFact (../shared/data/scifact) texts with the reference all-MiniLM-L6-v2 vectors. Sizes above
the 5,183 real documents are filled with copies of real documents whose vectors are the real vector
plus Gaussian noise (sigma per coordinate = BENCH_NOISE, default 0.02, i.e. cosine ~0.9 to the
original), renormalised, and whose text gets a distinct suffix token; queries are the 300 real test
queries. Everything runs through the public async API (``client.session``) unless noted; the text
query path uses moss-minilm on 1 thread (the session's engine is loaded from a snapshot carrying the
model identity, so no re-embedding of 100k documents is needed).

Reports p50/p99 in milliseconds, plus load time and resident memory against raw vectors + text.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "scifact"
sys.path.insert(0, str(REPO / "src"))

import _machine  # noqa: E402  (benchmarks/_machine.py, beside this script)
from moss import DocumentInfo, MossClient, QueryOptions  # noqa: E402
from moss.engine import Engine  # noqa: E402


def machine() -> dict[str, object]:
    return _machine.machine(numpy=np.__version__)


def load_scifact() -> tuple[list[str], list[str], np.ndarray, list[str], np.ndarray]:
    ids = (SCIFACT / "emb" / "corpus_ids.txt").read_text().split()
    vecs = np.load(SCIFACT / "emb" / "corpus.npy").astype(np.float32)
    texts_by_id = {}
    with open(SCIFACT / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            texts_by_id[d["_id"]] = (d["title"] + " " + d["text"]).strip()
    texts = [texts_by_id[i] for i in ids]
    qids = (SCIFACT / "emb" / "query_ids.txt").read_text().split()
    qvecs = np.load(SCIFACT / "emb" / "queries.npy").astype(np.float32)
    qtext = {}
    with open(SCIFACT / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            qtext[d["_id"]] = d["text"]
    test_ids = []
    with open(SCIFACT / "qrels" / "test.tsv", encoding="utf-8") as f:
        next(f)
        for line in f:
            q = line.split("\t")[0]
            if q not in test_ids:
                test_ids.append(q)
    pos = {q: i for i, q in enumerate(qids)}
    return ids, texts, vecs, [qtext[q] for q in test_ids], qvecs[[pos[q] for q in test_ids]]


def synth(
    n: int, texts: list[str], vecs: np.ndarray, noise: float
) -> tuple[list[DocumentInfo], np.ndarray]:
    rng = np.random.default_rng(0)
    base = len(texts)
    idx = np.arange(n) % base
    out = vecs[idx].copy()
    extra = np.arange(n) >= base
    out[extra] += rng.normal(0, noise, size=(int(extra.sum()), vecs.shape[1])).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    docs = [
        DocumentInfo(str(i), texts[idx[i]] if i < base else f"{texts[idx[i]]} copy{i // base}",
                     {"bucket": str(i % 10)})
        for i in range(n)
    ]  # fmt: skip
    return docs, out


def rss_bytes() -> int:
    """This process's resident set (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def summary(xs: list[float]) -> dict[str, float]:
    return {"p50_ms": round(pct(xs, 50), 4), "p99_ms": round(pct(xs, 99), 4),
            "mean_ms": round(statistics.fmean(xs), 4)}  # fmt: skip


async def bench_size(n: int, data: tuple, args: argparse.Namespace) -> dict[str, object]:  # type: ignore[type-arg]
    _, texts, vecs, qtexts, qvecs = data
    docs, dvecs = synth(n, texts, vecs, args.noise)
    for d, v in zip(docs, dvecs):
        d.embedding = v
    out: dict[str, object] = {"n_docs": n}
    client = MossClient("bench", "k")
    s = await client.session("bench", model_id="custom")
    t = time.perf_counter()
    for i in range(0, n, 5000):
        await s.add_docs(docs[i : i + 5000])
    out["build_s_custom_vectors"] = round(time.perf_counter() - t, 2)
    nq = min(args.queries, len(qtexts))
    # warm-up
    for i in range(20):
        await s.query(qtexts[i], QueryOptions(embedding=qvecs[i], top_k=5, alpha=0.8))
    for label, alpha, text_on in (("hybrid_a0.8", 0.8, True), ("vector_only_a1", 1.0, False),
                                  ("keyword_only_a0", 0.0, True)):  # fmt: skip
        lat = []
        for i in range(nq):
            opts = QueryOptions(embedding=qvecs[i] if alpha > 0 else None, top_k=5, alpha=alpha)
            t = time.perf_counter()
            await s.query(qtexts[i] if text_on else "", opts)
            lat.append((time.perf_counter() - t) * 1000)
        out[f"search_only_{label}"] = summary(lat)
    # inline vs to_thread for the same query (why queries run inline)
    eng = s.engine
    lat_thread = []
    for i in range(nq):
        opts = QueryOptions(embedding=qvecs[i], top_k=5, alpha=0.8)
        t = time.perf_counter()
        await asyncio.to_thread(eng.query, qtexts[i], opts)
        lat_thread.append((time.perf_counter() - t) * 1000)
    out["search_only_hybrid_via_to_thread"] = summary(lat_thread)
    if args.model:
        from moss.embedding import get_embedder

        emb = get_embedder("moss-minilm")
        emb.warm()
        snap = eng.to_snapshot()
        snap.model_id = "moss-minilm"
        snap.model = {
            "artifact_version": emb.artifact_version,
            "manifest_sha256": emb.manifest_sha256,
        }
        m_engine = Engine.from_snapshot(snap, embedder=emb, name="bench-minilm")
        for i in range(10):
            m_engine.query(qtexts[i], QueryOptions(top_k=5, alpha=0.8))
        lat, emb_lat = [], []
        for i in range(nq):
            t = time.perf_counter()
            emb.embed_query(qtexts[i])
            emb_lat.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            m_engine.query(qtexts[i], QueryOptions(top_k=5, alpha=0.8))
            lat.append((time.perf_counter() - t) * 1000)
        out["text_query_minilm_embedding_only"] = summary(emb_lat)
        out["text_query_minilm_total"] = summary(lat)
        if n <= 20_000:
            add_lat = []
            for i in range(100):
                d = DocumentInfo(f"turn-{i}", f"User said: please move the demo to Thursday {i}.")
                t = time.perf_counter()
                m_engine.add_documents([d])
                add_lat.append((time.perf_counter() - t) * 1000)
            out["add_one_short_doc_minilm"] = summary(add_lat)
    await client.close()
    return out


LOAD_CHILD = r"""
import sys, time, os, asyncio, json
sys.path.insert(0, sys.argv[2])
def rss(field='VmRSS'):
    for line in open('/proc/self/status'):
        if line.startswith(field + ':'):
            return int(line.split()[1]) * 1024
    return 0
import numpy, moss
from moss import MossClient
t_imp = time.perf_counter()
import moss.vectors
import moss.vectors_graph
moss.vectors_graph._usearch()  # native libraries (usearch, onnxruntime): a one-time process cost
import_s = time.perf_counter() - t_imp
async def main():
    c = MossClient('bench', 'k', cache_path=sys.argv[1])
    s = await c.session('big', model_id='custom', auto_load_on_init=False)
    r0 = rss()
    t = time.perf_counter()
    n = await s.load_from_disk()
    dt = time.perf_counter() - t
    r1 = rss()
    res = await s.query('cancer', moss.QueryOptions(embedding=[0.05]*384, top_k=5))
    r2 = rss()
    # Steady state: 300 hybrid queries walk the graph, the postings and the vectors they re-rank.
    import numpy as np
    rng = np.random.default_rng(1)
    words = ['cancer', 'cell', 'protein', 'gene', 'risk', 'patients', 'treatment', 'virus']
    for i in range(300):
        v = rng.standard_normal(384).astype(np.float32)
        await s.query(' '.join(rng.choice(words, 3)), moss.QueryOptions(embedding=v, top_k=5))
    r3, anon, file_ = rss(), rss('RssAnon'), rss('RssFile')
    print(json.dumps({'docs': n, 'load_s': dt, 'import_native_s': import_s, 'rss_delta_bytes': r1 - r0,
                      'rss_delta_after_query': r2 - r0, 'rss_delta_after_300_queries': r3 - r0,
                      'rss_anon_after': anon, 'rss_file_after': file_}))
asyncio.run(main())
"""


async def bench_load(n: int, data: tuple, args: argparse.Namespace) -> dict[str, object]:  # type: ignore[type-arg]
    _, texts, vecs, _, _ = data
    docs, dvecs = synth(n, texts, vecs, args.noise)
    for d, v in zip(docs, dvecs):
        d.embedding = v
    with tempfile.TemporaryDirectory() as tmp:
        client = MossClient("bench", "k", cache_path=tmp)
        s = await client.session("big", model_id="custom")
        for i in range(0, n, 10000):
            await s.add_docs(docs[i : i + 10000])
        s.engine.wait_for_background_work()
        if s.engine._vectors is not None:  # the graph folded and frozen: the steady state
            s.engine._vectors.flush()
        before, peak, done = rss_bytes(), [0], threading.Event()

        def sample() -> None:  # the save's high-water mark above the resident set before it
            while not done.is_set():
                peak[0] = max(peak[0], rss_bytes())
                time.sleep(0.001)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t = time.perf_counter()
        await s.save_to_disk()
        save_s = time.perf_counter() - t
        done.set()
        sampler.join()
        await client.close()
        runs = []
        for _ in range(3):
            p = subprocess.run([sys.executable, "-c", LOAD_CHILD, tmp, str(REPO / "src")],
                               capture_output=True, text=True, check=True)  # fmt: skip
            runs.append(json.loads(p.stdout))
        raw = dvecs.nbytes + sum(len(d.text.encode()) for d in docs)
        best = min(runs, key=lambda r: r["load_s"])
        return {
            "n_docs": n,
            "save_s": round(save_s, 3),
            "save_peak_mb_above_rss": round((peak[0] - before) / 2**20, 1),
            "rss_mb_before_save": round(before / 2**20, 1),
            "load_from_disk_s_best_of_3": round(best["load_s"], 4),
            "load_from_disk_s_all": [round(r["load_s"], 4) for r in runs],
            "native_import_s_excluded": round(best["import_native_s"], 4),
            "raw_vectors_plus_text_bytes": raw,
            "rss_delta_over_raw": round(best["rss_delta_after_query"] / raw, 3),
            "rss_delta_over_raw_after_300_queries": round(
                best["rss_delta_after_300_queries"] / raw, 3
            ),
            "rss_anon_mb_after": round(best["rss_anon_after"] / 2**20, 1),
            "rss_file_mb_after": round(best["rss_file_after"] / 2**20, 1),
        }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--load-size", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--noise", type=float, default=float(os.environ.get("BENCH_NOISE", "0.02")))
    ap.add_argument("--no-model", dest="model", action="store_false")
    ap.add_argument("--json", action="store_true", help="print only the JSON report")
    args = ap.parse_args()
    os.environ.setdefault("MOSS_EMBEDDING_THREADS", "1")
    data = load_scifact()
    report: dict[str, object] = {"benchmark": "bench_session", "machine": machine(),
                                 "dataset": "SciFact corpus + reference MiniLM vectors (synthetic fill above 5,183)",
                                 "results": []}  # fmt: skip
    results = report["results"]
    assert isinstance(results, list)
    for n in [int(x) for x in args.sizes.split(",") if x]:
        results.append(asyncio.run(bench_size(n, data, args)))
    if args.load_size:
        report["load"] = asyncio.run(bench_load(args.load_size, data, args))
    report["machine_after"] = {"loadavg": os.getloadavg(),
                               "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip
    print(json.dumps(report, indent=1))
    if not args.json:
        print("\n| docs | metric | p50 ms | p99 ms |\n|---|---|---|---|")
        for r in results:
            for k, v in r.items():
                if isinstance(v, dict):
                    print(f"| {r['n_docs']} | {k} | {v['p50_ms']} | {v['p99_ms']} |")
        if "load" in report:
            print(f"\nload: {report['load']}")


if __name__ == "__main__":
    main()

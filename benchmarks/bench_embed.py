"""Benchmark the local embedding models: start-up, query latency, bulk throughput, quality.

How to run (from the repository root)::

    .venv/bin/python benchmarks/bench_embed.py                      # moss-minilm fp32
    .venv/bin/python benchmarks/bench_embed.py --models moss-minilm,moss-minilm+int8,moss-litelm
    MOSS_MEDIUMLM_PATH=/path/to/bge-small-en-v1.5 .venv/bin/python benchmarks/bench_embed.py \\
        --models moss-mediumlm
    .venv/bin/python benchmarks/bench_embed.py --compare-st /tmp/st-venv/bin/python
    .venv/bin/python benchmarks/bench_embed.py --models moss-litelm --ndcg    # SciFact nDCG@10

``MODEL+int8`` selects the opt-in int8 graph (``MOSS_EMBEDDING_PRECISION=int8``).

For each model it measures, tokenisation included:

* **start-up** in fresh processes: ``import moss.embedding`` + ``get_embedder`` + ``warm()``, once
  with an empty model cache (graph build or distillation) and once with the cache filled;
* **single query** latency p50/p99 on 1 intra-op thread, over SciFact queries of 8-16 tokens;
* **bulk** documents/s for ~50-token and ~250-token documents (windows of SciFact abstracts), with
  1 and 2 intra-op threads (``MOSS_EMBEDDING_THREADS``);
* with ``--compare-st PYTHON``: the same measurements for sentence-transformers on torch, run by
  that interpreter in a subprocess (torch is never a dependency of moss; build a separate venv,
  e.g. ``python -m venv /tmp/st && /tmp/st/bin/pip install torch sentence-transformers``), plus the
  cosine between its vectors and ours;
* with ``--ndcg``: SciFact test nDCG@10, dense (brute-force cosine over the whole corpus) and, if
  ``moss.evaluation`` imports, hybrid through a real session with precomputed vectors.

Environment: ``BENCH_SCIFACT`` (default ``../shared/data/scifact`` next to the repository),
``MOSS_MODEL_CACHE_DIR`` (the warm cache; cold runs use a temporary one). It prints one JSON report
(machine, load averages, versions, numbers) and a markdown table. On a shared machine read the
load average next to each number: two-thread throughput suffers most from a busy second core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import _machine

REPO = Path(__file__).resolve().parents[1]
SCIFACT = Path(os.environ.get("BENCH_SCIFACT", REPO.parent / "shared" / "data" / "scifact"))


# --------------------------------------------------------------------------------------------
# Data


def load_scifact() -> tuple[list[str], list[str], dict[str, str]]:
    """Corpus ids, corpus texts (title + " " + text, stripped) and query texts by id."""
    ids: list[str] = []
    docs: list[str] = []
    with open(SCIFACT / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            o = json.loads(line)
            ids.append(str(o["_id"]))
            docs.append((o.get("title", "") + " " + o.get("text", "")).strip())
    queries: dict[str, str] = {}
    with open(SCIFACT / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            o = json.loads(line)
            queries[str(o["_id"])] = o["text"]
    return ids, docs, queries


def read_qrels(split: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    with open(SCIFACT / "qrels" / f"{split}.tsv", encoding="utf-8") as f:
        for line in f:
            parts = line.strip().split("\t")
            if len(parts) < 3 or not parts[2].isdigit():
                continue  # header
            out.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return out


def count_tokens(texts: list[str]) -> list[int]:
    from tokenizers import Tokenizer

    from moss.embedding.spec import minilm_folder

    tok = Tokenizer.from_file(str(minilm_folder() / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return [len(e.ids) for e in tok.encode_batch(texts)]


def make_docs(corpus: list[str], words: int, n: int, seed: int) -> list[str]:
    """``n`` windows of ``words`` consecutive words from the abstracts (realistic vocabulary)."""
    rng = np.random.default_rng(seed)
    pool = " ".join(corpus[:3000]).split()
    starts = rng.integers(0, len(pool) - words, size=n)
    return [" ".join(pool[s : s + words]) for s in starts]


def short_queries(queries: dict[str, str], n: int) -> list[str]:
    texts = list(queries.values())
    lens = count_tokens(texts)
    picked = [t for t, k in zip(texts, lens) if 8 <= k <= 16]
    return picked[:n]


# --------------------------------------------------------------------------------------------
# Measurements


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def model_env(spec: str) -> tuple[str, dict[str, str]]:
    """``moss-minilm+int8`` -> (``moss-minilm``, {MOSS_EMBEDDING_PRECISION: int8})."""
    if spec.endswith("+int8"):
        return spec[: -len("+int8")], {"MOSS_EMBEDDING_PRECISION": "int8"}
    return spec, {"MOSS_EMBEDDING_PRECISION": "fp32"}


_STARTUP_CHILD = """
import json, sys, time
t0 = time.perf_counter()
from moss.embedding import get_embedder
t1 = time.perf_counter()
e = get_embedder(sys.argv[1])
t2 = time.perf_counter()
e.warm()
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "get_embedder_s": t2 - t1, "warm_s": t3 - t2,
                  "total_s": t3 - t0}))
"""


def startup(model: str, extra_env: dict[str, str], cache: Path) -> dict[str, Any]:
    env = dict(os.environ, **extra_env, MOSS_MODEL_CACHE_DIR=str(cache))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(REPO / "src")) if p)
    la = loadavg()
    out = subprocess.run(
        [sys.executable, "-c", _STARTUP_CHILD, model],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    res: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    res["loadavg"] = la
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()}


def latency(fn: Any, items: list[str], rounds: int) -> dict[str, Any]:
    la = loadavg()
    for t in items[:10]:
        fn(t)
    times = []
    for r in range(rounds):
        t = items[r % len(items)]
        a = time.perf_counter()
        fn(t)
        times.append(time.perf_counter() - a)
    ms = np.asarray(times) * 1e3
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "min_ms": round(float(ms.min()), 3),
        "n": rounds,
        "loadavg": la,
    }


def throughput(fn: Any, docs: list[str], repeats: int = 2) -> dict[str, Any]:
    la = loadavg()
    fn(docs[:16])
    best = 0.0
    for _ in range(repeats):
        a = time.perf_counter()
        fn(docs)
        best = max(best, len(docs) / (time.perf_counter() - a))
    return {"docs_per_s": round(best, 1), "n": len(docs), "loadavg": la}


def bench_model(spec: str, data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from moss.embedding import clear_embedder_cache, get_embedder

    model, extra = model_env(spec)
    res: dict[str, Any] = {"model": spec}
    if not args.skip_startup:
        with tempfile.TemporaryDirectory(prefix="moss-bench-cold-") as cold:
            res["startup_cold"] = startup(model, extra, Path(cold))
            res["startup_cached"] = startup(model, extra, Path(cold))
    os.environ.update(extra)
    for threads in (1, 2):
        os.environ["MOSS_EMBEDDING_THREADS"] = str(threads)
        clear_embedder_cache()
        emb = get_embedder(model)
        emb.warm()
        res.setdefault("artifact_version", emb.artifact_version)
        res.setdefault("dimension", emb.dimension)
        if threads == 1:
            res["query_1t"] = latency(emb.embed_query, data["queries"], args.rounds)
        res[f"bulk50_{threads}t"] = throughput(emb.embed_documents, data["docs50"])
        res[f"bulk250_{threads}t"] = throughput(emb.embed_documents, data["docs250"])
    os.environ.pop("MOSS_EMBEDDING_THREADS", None)
    clear_embedder_cache()
    if args.ndcg:
        res["scifact"] = ndcg_report(get_embedder(model), data)
    clear_embedder_cache()
    for k in extra:
        os.environ.pop(k, None)
    return res


# --------------------------------------------------------------------------------------------
# Quality (SciFact test split)


def ndcg10(ranked: list[str], rels: dict[str, int]) -> float:
    dcg = sum(rels.get(d, 0) / np.log2(i + 2) for i, d in enumerate(ranked[:10]))
    ideal = sorted(rels.values(), reverse=True)[:10]
    idcg = sum(g / np.log2(i + 2) for i, g in enumerate(ideal))
    return float(dcg / idcg) if idcg > 0 else 0.0


def ndcg_report(emb: Any, data: dict[str, Any]) -> dict[str, Any]:
    ids, docs, queries = data["ids"], data["docs"], data["all_queries"]
    qrels = read_qrels("test")
    qids = [q for q in qrels if q in queries]
    a = time.perf_counter()
    corpus = emb.embed_documents(docs)
    embed_s = time.perf_counter() - a
    qv = np.stack([emb.embed_query(queries[q]) for q in qids])
    scores = qv @ corpus.T
    dense = [
        ndcg10([ids[j] for j in np.argsort(-scores[i])[:10]], qrels[q]) for i, q in enumerate(qids)
    ]
    out: dict[str, Any] = {
        "split": "test",
        "queries": len(qids),
        "dense_ndcg10": round(float(np.mean(dense)), 4),
        "corpus_embed_s": round(embed_s, 1),
    }
    try:
        from moss.evaluation import evaluate
    except Exception as e:  # the rest of moss is optional for this benchmark
        out["hybrid"] = f"not measured: moss.evaluation unavailable ({type(e).__name__})"
        return out
    with tempfile.TemporaryDirectory(prefix="moss-bench-vec-") as tmp:
        root = Path(tmp)
        np.save(root / "corpus.npy", corpus)
        (root / "corpus_ids.txt").write_text("\n".join(ids) + "\n")
        all_q = list(queries)
        np.save(root / "queries.npy", np.stack([emb.embed_query(queries[q]) for q in all_q]))
        (root / "query_ids.txt").write_text("\n".join(all_q) + "\n")
        report = evaluate(
            SCIFACT,
            split="test",
            embeddings_dir=root,
            alphas=(1.0, 0.8, 0.5, 0.0),
            fusions=("score", "rrf"),
            progress=None,
        )
    out["hybrid"] = [
        {"alpha": r.alpha, "fusion": r.fusion, "ndcg10": round(r.ndcg_at_10, 4)}
        for r in report.rows
    ]
    return out


# --------------------------------------------------------------------------------------------
# sentence-transformers side by side (another interpreter)


_ST_CHILD = """
import json, sys, time
import numpy as np
cfg = json.load(open(sys.argv[1]))
t0 = time.perf_counter()
import torch
from sentence_transformers import SentenceTransformer
t1 = time.perf_counter()
model = SentenceTransformer(cfg["model_dir"], device="cpu")
model.encode(["warm up"])
t2 = time.perf_counter()
out = {"import_s": t1 - t0, "load_warm_s": t2 - t1, "versions": {
    "torch": torch.__version__, "sentence_transformers": __import__("sentence_transformers").__version__}}
def lat(items, rounds):
    for t in items[:10]:
        model.encode([t])
    ts = []
    for r in range(rounds):
        a = time.perf_counter(); model.encode([items[r % len(items)]]); ts.append(time.perf_counter() - a)
    ms = np.asarray(ts) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "min_ms": float(ms.min()), "n": rounds}
def thr(docs):
    model.encode(docs[:16]); best = 0.0
    for _ in range(2):
        a = time.perf_counter(); model.encode(docs, batch_size=32); best = max(best, len(docs) / (time.perf_counter() - a))
    return {"docs_per_s": best, "n": len(docs)}
for threads in (1, 2):
    torch.set_num_threads(threads)
    if threads == 1:
        out["query_1t"] = lat(cfg["queries"], cfg["rounds"])
    out[f"bulk50_{threads}t"] = thr(cfg["docs50"])
    out[f"bulk250_{threads}t"] = thr(cfg["docs250"])
np.save(cfg["vectors"], model.encode(cfg["check"], normalize_embeddings=True))
print(json.dumps(out))
"""


def compare_st(python: str, data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from moss.embedding import get_embedder
    from moss.embedding.spec import minilm_folder

    check = data["queries"][:20] + data["docs250"][:20]
    with tempfile.TemporaryDirectory(prefix="moss-bench-st-") as tmp:
        cfg = {
            "model_dir": str(minilm_folder()),
            "queries": data["queries"],
            "docs50": data["docs50"],
            "docs250": data["docs250"],
            "rounds": args.rounds,
            "check": check,
            "vectors": str(Path(tmp) / "st.npy"),
        }
        cfg_path = Path(tmp) / "cfg.json"
        cfg_path.write_text(json.dumps(cfg))
        la = loadavg()
        env = dict(os.environ, OMP_NUM_THREADS="2", TOKENIZERS_PARALLELISM="false")
        proc = subprocess.run(
            [python, "-c", _ST_CHILD, str(cfg_path)], capture_output=True, text=True, env=env
        )
        if proc.returncode != 0:
            return {"error": proc.stderr[-2000:]}
        res: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        st_vecs = np.load(cfg["vectors"])
    os.environ.pop("MOSS_EMBEDDING_PRECISION", None)
    ours = get_embedder("moss-minilm").embed_documents(check)
    res["cosine_vs_moss_min"] = round(float(np.einsum("ij,ij->i", st_vecs, ours).min()), 7)
    res["loadavg_start"] = la
    res["loadavg_end"] = loadavg()
    return res


# --------------------------------------------------------------------------------------------
# Report


def machine() -> dict[str, Any]:
    return _machine.machine()


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("numpy", "onnxruntime", "onnx", "tokenizers", "safetensors"):
        try:
            out[mod] = str(__import__(mod).__version__)
        except Exception:
            out[mod] = "missing"
    return out


def _f(x: Any, key: str) -> str:
    return "-" if not isinstance(x, dict) or key not in x else f"{x[key]:g}"


def table(results: list[dict[str, Any]], st: dict[str, Any] | None) -> str:
    lines = [
        "| model | cold start s | cached start s (warm) | query p50 / p99 / min ms (1 thr) "
        "| 50-tok docs/s 1 / 2 thr | 250-tok docs/s 1 / 2 thr | SciFact nDCG@10 dense |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = [*results]
    if st is not None and "error" not in st:
        rows.append({"model": "sentence-transformers (torch)", **st})
    for r in rows:
        q = r.get("query_1t", {})
        cached = r.get("startup_cached", {})
        lines.append(
            f"| {r['model']} | {_f(r.get('startup_cold'), 'total_s')}"
            f" | {_f(cached, 'total_s')} ({_f(cached, 'warm_s')})"
            f" | {_f(q, 'p50_ms')} / {_f(q, 'p99_ms')} / {_f(q, 'min_ms')}"
            f" | {_f(r.get('bulk50_1t'), 'docs_per_s')} / {_f(r.get('bulk50_2t'), 'docs_per_s')}"
            f" | {_f(r.get('bulk250_1t'), 'docs_per_s')} / {_f(r.get('bulk250_2t'), 'docs_per_s')}"
            f" | {_f(r.get('scifact'), 'dense_ndcg10')} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default="moss-minilm", help="comma-separated; MODEL+int8 for int8")
    p.add_argument("--rounds", type=int, default=300, help="single-query repetitions")
    p.add_argument("--n50", type=int, default=256, help="number of ~50-token documents")
    p.add_argument("--n250", type=int, default=64, help="number of ~250-token documents")
    p.add_argument("--skip-startup", action="store_true", help="skip the cold/cached start-ups")
    p.add_argument("--ndcg", action="store_true", help="SciFact test nDCG@10 (embeds 5,183 docs)")
    p.add_argument("--compare-st", metavar="PYTHON", help="interpreter with sentence-transformers")
    p.add_argument("--json", metavar="PATH", help="also write the JSON report here")
    args = p.parse_args()
    sys.path.append(str(REPO / "src"))  # an installed moss (or PYTHONPATH) wins

    ids, docs, all_queries = load_scifact()
    data: dict[str, Any] = {
        "ids": ids,
        "docs": docs,
        "all_queries": all_queries,
        "queries": short_queries(all_queries, 100),
        "docs50": make_docs(docs, 36, args.n50, seed=1),
        "docs250": make_docs(docs, 185, args.n250, seed=2),
    }
    tok = {
        "query_tokens_mean": float(np.mean(count_tokens(data["queries"]))),
        "docs50_tokens_mean": float(np.mean(count_tokens(data["docs50"]))),
        "docs250_tokens_mean": float(np.mean(count_tokens(data["docs250"]))),
    }
    results = [bench_model(m.strip(), data, args) for m in args.models.split(",") if m.strip()]
    st = compare_st(args.compare_st, data, args) if args.compare_st else None
    report = {
        "benchmark": "bench_embed",
        "machine": machine(),
        "loadavg_end": loadavg(),
        "versions": versions(),
        "dataset": {
            "name": "BEIR SciFact",
            "path": str(SCIFACT),
            **{k: round(v, 1) for k, v in tok.items()},
        },
        "results": results,
        "sentence_transformers": st,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print()
    print(table(results, st))


if __name__ == "__main__":
    main()

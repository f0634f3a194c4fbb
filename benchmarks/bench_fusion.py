"""Choose the score-fusion normalisation and depth on SciFact *train*, report on *test*.

Run:
    .venv/bin/python benchmarks/bench_fusion.py [--json]

Builds one custom-model index of the SciFact corpus with the reference all-MiniLM-L6-v2 vectors
(../shared/data/scifact/emb), then for every normalisation (theoretical = clamped cosine and BM25
over the query's maximum BM25; dbsf = 3-sigma; minmax) and minimum candidate depth, and for RRF, computes nDCG@10 (top_k=10) over an alpha grid on the train split
(809 queries) and the test split (300 queries). The configuration with the best *train* nDCG@10 at
the default alpha 0.8 (ties: best over alphas) is the one moss ships; docs/fusion.md records it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "scifact"
sys.path.insert(0, str(REPO / "src"))

import moss.engine as engine_mod  # noqa: E402
from moss import DocumentInfo, QueryOptions  # noqa: E402
from moss.engine import Engine  # noqa: E402
from moss.evaluation import load_beir, load_embeddings, ndcg_at_k  # noqa: E402

ALPHAS = [0.0, 0.3, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 1.0]


def run_split(engine: Engine, split: str, fusion: str, alphas: list[float]) -> dict[float, float]:
    ds = load_beir(SCIFACT, split)
    _, qvecs = load_embeddings(SCIFACT / "emb", ds)
    out = {}
    for alpha in alphas:
        scores = []
        for (qid, text), qv in zip(ds.queries.items(), qvecs):
            opts = QueryOptions(embedding=qv, top_k=10, alpha=alpha, fusion=fusion)  # type: ignore[arg-type]
            res = engine.query(text, opts)
            scores.append(ndcg_at_k([d.id for d in res.docs], ds.qrels[qid]))
        out[alpha] = round(float(np.mean(scores)), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--shipped-only", action="store_true", help="only RRF and the shipped default")
    args = ap.parse_args()
    ds = load_beir(SCIFACT, "test")
    corpus, _ = load_embeddings(SCIFACT / "emb", ds)
    engine = Engine("custom")
    engine.add_documents(
        [DocumentInfo(i, t, None, v) for i, t, v in zip(ds.doc_ids, ds.doc_texts, corpus)]
    )
    rows = []
    # (fusion, normalisation, min depth of V, min depth of K); 0 = the contract's D = 2 * top_k
    configs: list[tuple[str, str, int, int]] = [("rrf", "-", 0, 0)]
    for norm in ("dbsf", "minmax"):
        for depth in (0, 100):
            configs.append(("score", norm, depth, depth))
    configs += [("score", "dbsf", 50, 50), ("score", "dbsf", 100, 0)]
    # Theoretical fusion scores every candidate's cosine, so a vector list deeper than D changes
    # nothing (the 100/0 row shows it); the keyword list's depth does.
    for depth, k_depth in ((0, 0), (0, 50), (0, 100), (100, 0)):
        configs.append(("score", "theoretical", depth, k_depth))
    if args.shipped_only:
        configs = [("rrf", "-", 0, 0), ("score", engine_mod.SCORE_NORMALISATION,
                   engine_mod.SCORE_FUSION_MIN_DEPTH, engine_mod.SCORE_FUSION_MIN_DEPTH_K)]  # fmt: skip
    for fusion, norm, depth, k_depth in configs:
        if fusion == "score":
            engine_mod.SCORE_NORMALISATION = norm  # type: ignore[assignment]
            engine_mod.SCORE_FUSION_MIN_DEPTH = depth
            engine_mod.SCORE_FUSION_MIN_DEPTH_K = k_depth
        row = {"fusion": fusion, "normalisation": norm, "min_depth": depth, "min_depth_k": k_depth}
        for split in ("train", "test"):
            row[split] = run_split(engine, split, fusion, ALPHAS)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    report = {
        "benchmark": "bench_fusion",
        "dataset": "SciFact (BEIR), reference all-MiniLM-L6-v2 vectors, top_k=10, nDCG@10",
        "machine": {"python": platform.python_version(), "loadavg": os.getloadavg()},
        "alphas": ALPHAS,
        "rows": rows,
    }
    print(json.dumps(report, indent=1))
    if not args.json:
        head = " | ".join(f"a={a}" for a in ALPHAS)
        print(f"\n| fusion | norm | min depth V | min depth K | split | {head} |")
        print("|---" * (5 + len(ALPHAS)) + "|")
        for r in rows:
            for split in ("train", "test"):
                vals = " | ".join(f"{r[split][a]:.4f}" for a in ALPHAS)  # type: ignore[index]
                print(
                    f"| {r['fusion']} | {r['normalisation']} | {r['min_depth']} | {r['min_depth_k']} "
                    f"| {split} | {vals} |"
                )


if __name__ == "__main__":
    main()

"""moss.evaluation: BEIR loading (CRLF qrels), metrics against hand-computed values, the runner.

The metric values below were worked out by hand from the textbook definitions (linear-gain nDCG as
in pytrec_eval, recall over rel > 0, reciprocal rank); a second, independent naive implementation
checks random rankings with hypothesis. The runner is checked on a tiny dataset whose rankings are
known by construction, and on SciFact with the reference MiniLM vectors against the published
all-MiniLM-L6-v2 nDCG@10.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moss import InvalidArgumentError, MossError
from moss.evaluation import (
    EvalReport,
    evaluate,
    load_beir,
    load_embeddings,
    mean_metrics,
    mrr_at_k,
    ndcg_at_k,
    percentile,
    read_qrels,
    recall_at_k,
)

from .conftest import HAS_MODEL, SCIFACT

# --------------------------------------------------------------------------------------------
# Metrics: hand-computed values


def test_ndcg_hand_computed() -> None:
    # ranks: d3 (rel 0), d1 (rel 2), d2 (rel 1)
    # DCG  = 0/log2(2) + 2/log2(3) + 1/log2(4) = 1.2618595 + 0.5 = 1.7618595
    # IDCG = 2/log2(2) + 1/log2(3)             = 2 + 0.6309298 = 2.6309298
    assert ndcg_at_k(["d3", "d1", "d2"], {"d1": 2, "d2": 1}) == pytest.approx(0.6696718, abs=1e-7)
    assert ndcg_at_k(["d1", "d2"], {"d1": 2, "d2": 1}) == pytest.approx(1.0)
    # relevant doc at rank 11 does not count at k=10
    ranked = [f"x{i}" for i in range(10)] + ["d1"]
    assert ndcg_at_k(ranked, {"d1": 1}) == 0.0
    # relevant at rank 10: 1/log2(11) = 0.2890648
    assert ndcg_at_k(ranked[1:], {"d1": 1}) == pytest.approx(0.2890648, abs=1e-7)
    # a judged-irrelevant document (rel 0) adds nothing, and no relevant doc means 0
    assert ndcg_at_k(["a"], {"a": 0}) == 0.0
    assert ndcg_at_k([], {"a": 1}) == 0.0


def test_ndcg_ideal_uses_all_judgements() -> None:
    # 12 relevant docs, we return 10 of them: the ideal DCG is cut at 10 too, so nDCG = 1
    rels = {f"r{i}": 1 for i in range(12)}
    assert ndcg_at_k([f"r{i}" for i in range(10)], rels) == pytest.approx(1.0)
    # 3 relevant, one found at rank 1: 1 / (1 + 1/log2(3) + 1/log2(4)) = 1 / 2.1309298
    assert ndcg_at_k(["a", "x"], {"a": 1, "b": 1, "c": 1}) == pytest.approx(0.4692787, abs=1e-7)


def test_recall_and_mrr_hand_computed() -> None:
    rels = {"a": 1, "b": 1, "c": 0, "d": 2}
    ranked = ["x", "c", "b", "y", "d"]
    assert recall_at_k(ranked, rels, 10) == pytest.approx(2 / 3)  # b, d of a, b, d
    assert recall_at_k(ranked, rels, 3) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, {"c": 0}, 10) == 0.0
    assert mrr_at_k(ranked, rels) == pytest.approx(1 / 3)  # c is rel 0; b is at rank 3
    assert mrr_at_k(ranked, {"d": 1}, k=4) == 0.0
    assert mrr_at_k([], rels) == 0.0


def test_repeated_ids_count_once() -> None:
    # ["a", "a", "b"] is the run {a: rank 1, b: rank 2}: nDCG = (1 + 1/log2(3)) / same = 1
    assert ndcg_at_k(["a", "a", "b"], {"a": 1, "b": 1}) == pytest.approx(1.0)
    assert ndcg_at_k(["a", "a"], {"a": 1}) == pytest.approx(1.0)
    assert recall_at_k(["x", "x", "b"], {"b": 1}, k=2) == 1.0  # b is the 2nd distinct id
    assert mrr_at_k(["x", "x", "b"], {"b": 1}) == 0.5


def test_mean_metrics_counts_missing_queries_as_zero() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    runs = {"q1": ["a", "x"]}  # q2 retrieved nothing
    deep = {"q1": ["a"], "q2": [f"x{i}" for i in range(50)] + ["b"]}
    m = mean_metrics(runs, qrels, deep)
    assert m["ndcg@10"] == pytest.approx(0.5)
    assert m["recall@10"] == pytest.approx(0.5)
    assert m["mrr@10"] == pytest.approx(0.5)
    assert m["recall@100"] == pytest.approx(1.0)  # b is at rank 51 of q2's deep run
    with pytest.raises(InvalidArgumentError):
        mean_metrics({}, {})


def test_percentile() -> None:
    assert percentile([5.0, 1.0, 3.0], 50) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 100) == 5.0
    assert math.isnan(percentile([], 50))


def _naive_ndcg(ranked: list[str], rels: dict[str, int], k: int) -> float:
    dcg = 0.0
    for pos in range(1, min(k, len(ranked)) + 1):
        dcg += rels.get(ranked[pos - 1], 0) / math.log(pos + 1, 2)
    gains = sorted([g for g in rels.values() if g > 0], reverse=True)
    idcg = 0.0
    for pos in range(1, min(k, len(gains)) + 1):
        idcg += gains[pos - 1] / math.log(pos + 1, 2)
    return 0.0 if idcg == 0 else dcg / idcg


docs_st = st.sampled_from([f"d{i}" for i in range(25)])


@settings(max_examples=200, deadline=None)
@given(
    ranked=st.lists(docs_st, unique=True, max_size=25),
    rels=st.dictionaries(docs_st, st.integers(0, 3), max_size=10),
    k=st.integers(1, 25),
)
def test_metrics_match_naive_reference(ranked: list[str], rels: dict[str, int], k: int) -> None:
    n = ndcg_at_k(ranked, rels, k)
    assert n == pytest.approx(_naive_ndcg(ranked, rels, k))
    assert 0.0 <= n <= 1.0 + 1e-12
    relevant = [d for d, r in rels.items() if r > 0]
    found = sum(1 for d in ranked[:k] if d in relevant)
    assert recall_at_k(ranked, rels, k) == pytest.approx(found / len(relevant) if relevant else 0)
    first = next((i for i, d in enumerate(ranked[:k]) if rels.get(d, 0) > 0), None)
    assert mrr_at_k(ranked, rels, k) == (0.0 if first is None else 1.0 / (first + 1))
    # the ideal ordering of the judged documents always scores 1
    ideal = sorted(relevant, key=lambda d: -rels[d])
    if relevant:
        assert ndcg_at_k(ideal, rels, k) == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# Loading


def write_dataset(root: Path, *, crlf: bool = True) -> Path:
    """Four documents, three queries; q3 is judged only in train, q9 has no text."""
    root.mkdir(parents=True, exist_ok=True)
    corpus = [
        {"_id": "d1", "title": "Salmon", "text": "salmon swim upstream in rivers", "metadata": {}},
        {"_id": "d2", "title": "", "text": "tigers hunt at night in the jungle"},
        {"_id": "d3", "title": "Mango", "text": "mango trees grow in warm climates"},
        {"_id": "d4", "title": "Ocean", "text": "the ocean covers most of the planet"},
    ]
    queries = [
        {"_id": "q1", "text": "where do salmon swim"},
        {"_id": "q2", "text": "zebra quartz"},  # shares no term with any document
        {"_id": "q3", "text": "mango"},
    ]
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in corpus) + "\n")
    (root / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n\n")
    nl = "\r\n" if crlf else "\n"
    (root / "qrels").mkdir(exist_ok=True)
    test_rows = ["query-id\tcorpus-id\tscore", "q1\td1\t1", "q2\td2\t1", "q2\td4\t0", "q9\td3\t1"]
    (root / "qrels" / "test.tsv").write_bytes((nl.join(test_rows) + nl).encode())
    (root / "qrels" / "train.tsv").write_bytes(("q3\td3\t1" + nl).encode())  # no header
    return root


def write_embeddings(root: Path) -> Path:
    """Orthonormal document vectors; each query vector equals its relevant document's vector.

    The ids files list rows in an order different from the corpus, to check the alignment.
    """
    emb = root / "emb"
    emb.mkdir()
    dim = 8
    eye = np.eye(dim, dtype=np.float32)
    corpus_ids = ["d3", "d1", "d4", "d2"]
    rows = {"d1": eye[0], "d2": eye[1], "d3": eye[2], "d4": eye[3]}
    np.save(emb / "corpus.npy", np.stack([rows[i] for i in corpus_ids]))
    (emb / "corpus_ids.txt").write_text("\n".join(corpus_ids) + "\n")
    qrows = {"q1": eye[0], "q2": eye[1], "q3": eye[2]}
    query_ids = ["q3", "q2", "q1"]
    np.save(emb / "queries.npy", np.stack([qrows[i] for i in query_ids]))
    (emb / "query_ids.txt").write_text("\n".join(query_ids) + "\n")
    return emb


def test_read_qrels_crlf_and_header(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "ds")
    assert read_qrels(root / "qrels" / "test.tsv") == {
        "q1": {"d1": 1},
        "q2": {"d2": 1, "d4": 0},
        "q9": {"d3": 1},
    }
    assert read_qrels(root / "qrels" / "train.tsv") == {"q3": {"d3": 1}}
    bad = tmp_path / "bad.tsv"
    bad.write_text("q\td\ts\nq1\td1\tx\n")
    with pytest.raises(InvalidArgumentError, match="not an integer"):
        read_qrels(bad)
    bad.write_text("q1 d1 1\n")
    with pytest.raises(InvalidArgumentError, match="3 tab-separated"):
        read_qrels(bad)
    with pytest.raises(InvalidArgumentError, match="not found"):
        read_qrels(tmp_path / "missing.tsv")


@pytest.mark.parametrize("crlf", [True, False])
def test_load_beir(tmp_path: Path, crlf: bool) -> None:
    ds = load_beir(write_dataset(tmp_path / "ds", crlf=crlf))
    assert ds.name == "ds" and ds.split == "test"
    assert ds.doc_ids == ["d1", "d2", "d3", "d4"]
    assert ds.doc_texts[0] == "Salmon salmon swim upstream in rivers"
    assert ds.doc_texts[1] == "tigers hunt at night in the jungle"  # empty title: no space
    assert list(ds.queries) == ["q1", "q2"]  # q9 has no text, q3 is train only
    assert set(ds.qrels) == {"q1", "q2"}
    train = load_beir(tmp_path / "ds", "train")
    assert train.queries == {"q3": "mango"}


def test_load_beir_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"corpus\.jsonl"):
        load_beir(tmp_path)
    root = write_dataset(tmp_path / "ds")
    with pytest.raises(InvalidArgumentError, match=r"dev\.tsv"):
        load_beir(root, "dev")
    (root / "corpus.jsonl").write_text('{"_id": "d1", "text": "a"}\n{"_id": "d1", "text": "b"}\n')
    with pytest.raises(InvalidArgumentError, match="duplicate"):
        load_beir(root)
    (root / "corpus.jsonl").write_text("{not json\n")
    with pytest.raises(InvalidArgumentError, match=r"corpus\.jsonl:1"):
        load_beir(root)


def test_load_embeddings_aligns_rows(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "ds")
    emb = write_embeddings(root)
    ds = load_beir(root)
    corpus, queries = load_embeddings(emb, ds)
    assert corpus.shape == (4, 8) and queries.shape == (2, 8)
    # row i of corpus is the vector of ds.doc_ids[i] = d{i+1} = e_i
    np.testing.assert_array_equal(corpus, np.eye(8, dtype=np.float32)[:4])
    np.testing.assert_array_equal(queries, np.eye(8, dtype=np.float32)[:2])
    (emb / "query_ids.txt").write_text("q3\nq2\nzz\n")
    with pytest.raises(InvalidArgumentError, match="lacks 1 id"):
        load_embeddings(emb, ds)
    (emb / "query_ids.txt").write_text("q3\nq2\n")
    with pytest.raises(InvalidArgumentError, match="shape"):
        load_embeddings(emb, ds)
    (emb / "corpus.npy").unlink()
    with pytest.raises(InvalidArgumentError, match=r"corpus\.npy"):
        load_embeddings(emb, ds)


# --------------------------------------------------------------------------------------------
# Runner


def test_evaluate_known_rankings(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "ds")
    emb = write_embeddings(root)
    stream = io.StringIO()
    report = evaluate(
        root, embeddings_dir=emb, alphas=[0.0, 0.5, 1.0], fusions=["score", "rrf"], progress=stream
    )
    assert isinstance(report, EvalReport)
    assert (report.model_id, report.n_docs, report.n_queries) == ("custom", 4, 2)
    assert [(r.alpha, r.fusion) for r in report.rows] == [
        (0.0, "score"),
        (0.0, "rrf"),
        (0.5, "score"),
        (0.5, "rrf"),
        (1.0, "score"),
        (1.0, "rrf"),
    ]
    by = {(r.alpha, r.fusion): r for r in report.rows}
    # alpha 1: each query vector equals its relevant document's vector -> rank 1 for both queries
    for f in ("score", "rrf"):
        r = by[(1.0, f)]
        assert (r.ndcg_at_10, r.recall_at_10, r.recall_at_100, r.mrr_at_10) == pytest.approx(
            (1.0, 1.0, 1.0, 1.0)
        )
    # alpha 0 (BM25 only): q1 "where do salmon swim" finds only d1 (rank 1);
    # q2 "zebra quartz" shares no term with any document -> empty -> 0. Mean 0.5.
    for f in ("score", "rrf"):
        r = by[(0.0, f)]
        assert (r.ndcg_at_10, r.recall_at_10, r.mrr_at_10) == pytest.approx((0.5, 0.5, 0.5))
    # hybrid: q1 has d1 first in both lists; q2 has d2 first in V -> both at rank 1
    assert by[(0.5, "score")].ndcg_at_10 == pytest.approx(1.0)
    assert all(r.queries == 2 and r.latency_p50_ms > 0 for r in report.rows)
    assert all(r.latency_p99_ms >= r.latency_p50_ms for r in report.rows)
    assert report.best().ndcg_at_10 == pytest.approx(1.0)
    progress = stream.getvalue()
    assert "ds/test: 4 docs, 2 queries, model custom" in progress
    assert "alpha=0.5 fusion=rrf: 2/2" in progress
    md = report.to_markdown()
    assert "| alpha | fusion | nDCG@10 |" in md and md.count("\n| ") == 7
    assert json.loads(json.dumps(report.to_dict()))["rows"][0]["fusion"] == "score"


def test_evaluate_argument_errors(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "ds")
    emb = write_embeddings(root)
    for kwargs, match in [
        ({"alphas": [1.5]}, "alpha"),
        ({"alphas": []}, "at least one alpha"),
        ({"fusions": ["max"]}, "fusion"),
        ({"top_k": 5}, "top_k"),
        ({"model_id": "moss-minilm"}, "drop model"),
    ]:
        with pytest.raises(InvalidArgumentError, match=match):
            evaluate(root, embeddings_dir=emb, progress=None, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="needs --embeddings"):
        evaluate(root, model_id="custom", progress=None)


def test_evaluate_refuses_running_loop(tmp_path: Path) -> None:
    import asyncio

    async def inner() -> None:
        evaluate(tmp_path, progress=None)

    with pytest.raises(MossError, match="event loop"):
        asyncio.run(inner())


@pytest.mark.model
@pytest.mark.skipif(not HAS_MODEL, reason="all-MiniLM-L6-v2 weights not installed")
def test_evaluate_with_builtin_model(tmp_path: Path) -> None:
    """Without --embeddings the corpus and the queries are embedded by moss-minilm."""
    root = write_dataset(tmp_path / "ds")
    stream = io.StringIO()
    report = evaluate(root, alphas=[1.0], fusions=["score"], progress=stream)
    assert report.model_id == "moss-minilm"
    row = report.rows[0]
    # four documents: the top-100 of a vector query holds them all, so recall@100 is 1
    assert row.recall_at_100 == pytest.approx(1.0)
    # "where do salmon swim" is closest to the salmon document: at least q1 is found at rank 1
    assert row.mrr_at_10 >= 0.5
    assert "embedding with moss-minilm: 4/4" in stream.getvalue()


@pytest.mark.scifact
@pytest.mark.skipif(not (SCIFACT / "emb" / "corpus.npy").exists(), reason="SciFact data absent")
def test_scifact_dense_matches_published_minilm() -> None:
    """Reference all-MiniLM-L6-v2 vectors: MTEB publishes nDCG@10 = 0.64508 on SciFact test."""
    report = evaluate(
        SCIFACT, embeddings_dir=SCIFACT / "emb", alphas=[1.0], fusions=["score"], progress=None
    )
    row = report.rows[0]
    assert report.n_docs == 5183 and report.n_queries == 300
    assert row.ndcg_at_10 == pytest.approx(0.64508, abs=0.005)
    assert row.recall_at_10 == pytest.approx(0.78333, abs=0.01)  # MTEB recall_at_10

"""Built-in retrieval evaluation on BEIR-format data (``moss eval``).

Why it exists: users need to know how good a configuration (model, ``alpha``, fusion) is on *their*
data before they ship, and none of the systems they compare us with ships an evaluator. This module
answers "what nDCG@10 do I get at alpha 0.8 with score fusion?" with one call.

Design:

* **Loader.** :func:`load_beir` reads the standard BEIR layout (``corpus.jsonl``, ``queries.jsonl``,
  ``qrels/<split>.tsv``). The official qrels files have CRLF line endings and a header row, so the
  TSV reader strips ``\\r`` and skips a header whose score column is not an integer. A document is
  ``title + " " + text`` (stripped), as MTEB and Pyserini embed it; the evaluated queries are the
  qrels' query ids that have a text.
* **Metrics** are pure functions of one ranked id list and one query's judgements, with the
  definitions of ``pytrec_eval`` (which BEIR and MTEB use): nDCG with linear gain
  ``rel / log2(rank + 1)`` and the ideal ranking built from all judgements; recall over the
  documents judged relevant (``rel > 0``); reciprocal rank of the first relevant document. A run is
  a set, so a repeated id counts once. A query that retrieves nothing scores 0 (``pytrec_eval``
  would silently drop it, flattering the mean).
* **Runner.** :func:`evaluate` builds an in-process session through the *public* API only
  (``MossClient.session(..., auto_load_on_init=False)``, so nothing touches a cloud store or disk),
  either with precomputed vectors (``--embeddings DIR`` holding ``corpus.npy`` +
  ``corpus_ids.txt`` and ``queries.npy`` + ``query_ids.txt``; model ``custom``) or with a built-in
  model that embeds the corpus. Each (alpha, fusion) configuration runs every query twice: once
  with ``top_k`` (default 10), which yields the @10 metrics and the latency exactly as a user
  calling ``query(top_k=10)`` would see them, and once with ``top_k=100`` for recall@100. Two calls
  are needed because the candidate depth follows ``top_k`` (§3.4), so the first 10 of a top-100
  query may differ from a top-10 query. ``alpha`` 0 and 1 do not fuse, so those results are
  computed once and reported for every requested fusion.
* **Latency** is the wall time of ``await session.query(...)`` for the ``top_k`` query, so it
  includes query embedding with a built-in model and the asyncio call overhead users pay too.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np

from .client import MossClient
from .errors import InvalidArgumentError, MossError
from .session import SessionIndex
from .types import DocumentInfo, QueryOptions

__all__ = [
    "BeirDataset",
    "EvalReport",
    "EvalRow",
    "Progress",
    "evaluate",
    "evaluate_async",
    "load_beir",
    "load_embeddings",
    "mean_metrics",
    "mrr_at_k",
    "ndcg_at_k",
    "percentile",
    "read_qrels",
    "recall_at_k",
]

Fusion = Literal["score", "rrf"]
DEFAULT_ALPHAS: tuple[float, ...] = (0.0, 0.5, 0.8, 1.0)
DEFAULT_FUSIONS: tuple[Fusion, ...] = ("score", "rrf")
_DEEP_K = 100
_ADD_BATCH = 512


# --------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class BeirDataset:
    """A BEIR dataset restricted to one split.

    Attributes:
        name: the dataset folder's name.
        split: the qrels split (``test``, ``dev``, ``train``).
        doc_ids: corpus ids in file order.
        doc_texts: ``title + " " + text`` (stripped) per document, aligned with ``doc_ids``.
        queries: query id -> text, only the split's queries that have judgements, in qrels order.
        qrels: query id -> {doc id: relevance}.
    """

    name: str
    split: str
    doc_ids: list[str]
    doc_texts: list[str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def _read_jsonl(path: Path) -> Iterable[dict[str, Any]]:
    with path.open("r", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InvalidArgumentError(f"{path}:{n}: not valid JSON ({e.msg})") from e
            if not isinstance(obj, dict):
                raise InvalidArgumentError(f"{path}:{n}: expected a JSON object")
            yield obj


def _record_id(obj: Mapping[str, Any], path: Path) -> str:
    raw = obj.get("_id", obj.get("id"))
    if raw is None or isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise InvalidArgumentError(f"{path}: a record has no string '_id'")
    return str(raw)


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels TSV (``query-id``, ``corpus-id``, ``score``), CRLF-tolerant.

    A first row whose score column is not an integer is taken as the header and skipped.

    >>> import pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.tsv"
    >>> _ = p.write_bytes(b"query-id\\tcorpus-id\\tscore\\r\\nq1\\td1\\t1\\r\\nq1\\td2\\t2\\r\\n")
    >>> read_qrels(p)
    {'q1': {'d1': 1, 'd2': 2}}

    Raises:
        InvalidArgumentError: the file is missing or a row is malformed.
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidArgumentError(f"qrels file not found: {p}")
    out: dict[str, dict[str, int]] = {}
    with p.open("r", encoding="utf-8", newline="") as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) < 3:
                raise InvalidArgumentError(f"{p}:{n}: expected 3 tab-separated columns")
            qid, did, score = cols[0].strip(), cols[1].strip(), cols[-1].strip()
            try:
                rel = int(score)
            except ValueError:
                if n == 1:
                    continue  # header
                raise InvalidArgumentError(f"{p}:{n}: score {score!r} is not an integer") from None
            out.setdefault(qid, {})[did] = rel
    return out


def load_beir(path: str | Path, split: str = "test") -> BeirDataset:
    """Load ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv`` from a BEIR folder.

    Raises:
        InvalidArgumentError: a file is missing or malformed, or no judged query has a text.
    """
    root = Path(path)
    corpus_path, queries_path = root / "corpus.jsonl", root / "queries.jsonl"
    for p in (corpus_path, queries_path):
        if not p.is_file():
            raise InvalidArgumentError(f"not a BEIR dataset folder: {p} is missing")
    qrels = read_qrels(root / "qrels" / f"{split}.tsv")
    doc_ids: list[str] = []
    doc_texts: list[str] = []
    seen: set[str] = set()
    for obj in _read_jsonl(corpus_path):
        did = _record_id(obj, corpus_path)
        if did in seen:
            raise InvalidArgumentError(f"{corpus_path}: duplicate document id {did!r}")
        seen.add(did)
        title, text = str(obj.get("title") or ""), str(obj.get("text") or "")
        doc_ids.append(did)
        doc_texts.append(f"{title} {text}".strip())
    all_queries = {
        _record_id(o, queries_path): str(o.get("text") or "") for o in _read_jsonl(queries_path)
    }
    queries = {q: all_queries[q] for q in qrels if q in all_queries}
    if not queries:
        raise InvalidArgumentError(f"no query of qrels/{split}.tsv appears in {queries_path}")
    return BeirDataset(
        root.name, split, doc_ids, doc_texts, queries, {q: qrels[q] for q in queries}
    )


def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise InvalidArgumentError(f"embeddings folder is missing {path.name}: {path}")
    return [line.rstrip("\r\n") for line in path.read_text(encoding="utf-8").splitlines()]


def _read_matrix(path: Path, ids: list[str]) -> np.ndarray:
    if not path.is_file():
        raise InvalidArgumentError(f"embeddings folder is missing {path.name}: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InvalidArgumentError(f"cannot read {path}: {e}") from e
    if arr.ndim != 2 or arr.shape[0] != len(ids):
        raise InvalidArgumentError(
            f"{path} has shape {arr.shape}, expected ({len(ids)}, dim) to match its ids file"
        )
    return np.ascontiguousarray(arr, dtype=np.float32)


def load_embeddings(path: str | Path, dataset: BeirDataset) -> tuple[np.ndarray, np.ndarray]:
    """Precomputed vectors aligned with ``dataset.doc_ids`` and ``dataset.queries``.

    The folder holds ``corpus.npy`` + ``corpus_ids.txt`` and ``queries.npy`` + ``query_ids.txt``
    (one id per line, in row order); extra rows are ignored.

    Returns:
        ``(corpus, queries)`` float32 matrices, rows in dataset order.

    Raises:
        InvalidArgumentError: a file is missing, shapes disagree, or an id has no vector.
    """
    root = Path(path)
    out = []
    for stem, ids_file, wanted in (
        ("corpus", "corpus_ids.txt", dataset.doc_ids),
        ("queries", "query_ids.txt", list(dataset.queries)),
    ):
        ids = _read_ids(root / ids_file)
        matrix = _read_matrix(root / f"{stem}.npy", ids)
        row_of = {i: r for r, i in enumerate(ids)}
        missing = [i for i in wanted if i not in row_of]
        if missing:
            raise InvalidArgumentError(
                f"{root / ids_file} lacks {len(missing)} id(s) of the dataset, e.g. {missing[0]!r}"
            )
        out.append(matrix[[row_of[i] for i in wanted]])
    if out[0].shape[1] != out[1].shape[1]:
        raise InvalidArgumentError("corpus and query embeddings have different dimensions")
    return out[0], out[1]


# --------------------------------------------------------------------------------------------
# Metrics (pytrec_eval definitions)


def _unique(ranked: Sequence[str], k: int) -> list[str]:
    """The first ``k`` distinct ids: a run is a set of documents (as in ``pytrec_eval``), so a
    repeated id neither earns a second gain nor takes a rank."""
    return list(dict.fromkeys(ranked))[:k]


def ndcg_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k with linear gain: ``sum(rel_i / log2(i + 1))`` over ranks ``i`` over the ideal.

    >>> round(ndcg_at_k(["a", "b"], {"b": 1}), 4)
    0.6309
    """
    ranked = _unique(ranked, k)
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int = 10) -> float:
    """Share of the documents judged relevant (``rel > 0``) that appear in the top ``k``.

    >>> recall_at_k(["a", "b", "c"], {"a": 1, "z": 1}, k=2)
    0.5
    """
    relevant = {d for d, r in rels.items() if r > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(_unique(ranked, k))) / len(relevant)


def mrr_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int = 10) -> float:
    """Reciprocal rank of the first relevant document within the top ``k`` (0 if none).

    >>> mrr_at_k(["a", "b", "c"], {"c": 1})
    0.3333333333333333
    """
    for i, d in enumerate(_unique(ranked, k)):
        if rels.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def mean_metrics(
    runs: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    deep_runs: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, float]:
    """Mean nDCG@10, recall@10, recall@100 and MRR@10 over every query of ``qrels``.

    Args:
        runs: query id -> ranked doc ids (a missing query counts as an empty ranking).
        qrels: query id -> {doc id: relevance}.
        deep_runs: rankings for recall@100 (default: ``runs``).
    """
    deep = runs if deep_runs is None else deep_runs
    n = len(qrels)
    if n == 0:
        raise InvalidArgumentError("no judged queries to evaluate")
    sums = {"ndcg@10": 0.0, "recall@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    for q, rels in qrels.items():
        r = runs.get(q, ())
        sums["ndcg@10"] += ndcg_at_k(r, rels, 10)
        sums["recall@10"] += recall_at_k(r, rels, 10)
        sums["recall@100"] += recall_at_k(deep.get(q, ()), rels, 100)
        sums["mrr@10"] += mrr_at_k(r, rels, 10)
    return {k: v / n for k, v in sums.items()}


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (linear interpolation), NaN for no values.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.5
    """
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


# --------------------------------------------------------------------------------------------
# Report


@dataclass(frozen=True)
class EvalRow:
    """Metrics of one (alpha, fusion) configuration; latencies in milliseconds."""

    alpha: float
    fusion: str
    ndcg_at_10: float
    recall_at_10: float
    recall_at_100: float
    mrr_at_10: float
    latency_p50_ms: float
    latency_p99_ms: float
    queries: int


@dataclass(frozen=True)
class EvalReport:
    """Everything ``moss eval`` prints: the setup, the build time and one row per configuration."""

    dataset: str
    split: str
    model_id: str
    n_docs: int
    n_queries: int
    top_k: int
    build_seconds: float
    rows: list[EvalRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``moss eval --json``)."""
        return asdict(self)

    def best(self) -> EvalRow:
        """The row with the highest nDCG@10."""
        if not self.rows:
            raise InvalidArgumentError("the report has no rows")
        return max(self.rows, key=lambda r: r.ndcg_at_10)

    def to_markdown(self) -> str:
        """A readable table, best nDCG@10 marked with ``*``."""
        best = self.best() if self.rows else None
        lines = [
            f"{self.dataset} ({self.split}): {self.n_docs} docs, {self.n_queries} queries, "
            f"model {self.model_id}, top_k {self.top_k}, built in {self.build_seconds:.1f} s",
            "",
            "| alpha | fusion | nDCG@10 | R@10 | R@100 | MRR@10 | p50 ms | p99 ms |",
            "|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in self.rows:
            mark = " *" if r is best else ""
            lines.append(
                f"| {r.alpha:g} | {r.fusion} | {r.ndcg_at_10:.4f}{mark} | {r.recall_at_10:.4f} | "
                f"{r.recall_at_100:.4f} | {r.mrr_at_10:.4f} | {r.latency_p50_ms:.3f} | "
                f"{r.latency_p99_ms:.3f} |"
            )
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Runner


class Progress:
    """Progress lines on a text stream (``\\r``-updated on a terminal, a few lines otherwise)."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self._tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self._last = 0.0
        self._last_decile = -1

    def update(self, label: str, done: int, total: int) -> None:
        """Report ``done`` of ``total`` for ``label`` (rate-limited)."""
        s = self._stream
        if s is None:
            return
        now = time.monotonic()
        if self._tty:
            if done < total and now - self._last < 0.1:
                return
            self._last = now
            s.write(f"\r{label}: {done}/{total}" + ("\n" if done >= total else ""))
        else:
            decile = 10 * done // max(total, 1) if done < total else 10
            if decile == self._last_decile:
                return
            self._last_decile = decile if done < total else -1
            if done >= total or decile in (0, 5):
                s.write(f"{label}: {done}/{total}\n")
        s.flush()

    def note(self, text: str) -> None:
        """Write one line."""
        if self._stream is not None:
            self._stream.write(text + "\n")
            self._stream.flush()


def _check_alphas(alphas: Sequence[float]) -> list[float]:
    out: list[float] = []
    for a in alphas:
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0.0 <= a <= 1.0:
            raise InvalidArgumentError(f"alpha must be a number from 0 to 1, not {a!r}")
        out.append(float(a))
    if not out:
        raise InvalidArgumentError("give at least one alpha")
    return out


def _check_fusions(fusions: Sequence[str]) -> list[Fusion]:
    out: list[Fusion] = []
    for f in fusions:
        if f == "score":
            out.append("score")
        elif f == "rrf":
            out.append("rrf")
        else:
            raise InvalidArgumentError(f"fusion must be 'score' or 'rrf', not {f!r}")
    if not out:
        raise InvalidArgumentError("give at least one fusion")
    return out


async def _build(
    client: MossClient,
    dataset: BeirDataset,
    model_id: str,
    corpus_vectors: np.ndarray | None,
    progress: Progress,
) -> SessionIndex:
    session = await client.session("eval", model_id=model_id, auto_load_on_init=False)
    total = len(dataset.doc_ids)
    label = "indexing" if corpus_vectors is not None else f"embedding with {model_id}"
    progress.update(label, 0, total)
    for start in range(0, total, _ADD_BATCH):
        stop = min(start + _ADD_BATCH, total)
        batch = [
            DocumentInfo(
                dataset.doc_ids[i],
                dataset.doc_texts[i],
                embedding=corpus_vectors[i] if corpus_vectors is not None else None,
            )
            for i in range(start, stop)
        ]
        await session.add_docs(batch)
        progress.update(label, stop, total)
    return session


async def _run_queries(
    session: SessionIndex,
    queries: list[tuple[str, str, np.ndarray | None]],
    alpha: float,
    fusion: Fusion,
    top_k: int,
    progress: Progress,
    label: str,
) -> tuple[dict[str, list[str]], dict[str, list[str]], list[float]]:
    runs: dict[str, list[str]] = {}
    deep: dict[str, list[str]] = {}
    latencies: list[float] = []
    total = len(queries)
    for n, (qid, text, vec) in enumerate(queries, 1):
        # QueryOptions takes any float sequence; a float32 row avoids a list copy per query.
        emb: Sequence[float] | None = vec  # type: ignore[assignment]
        opts = QueryOptions(embedding=emb, top_k=top_k, alpha=alpha, fusion=fusion)
        t0 = time.perf_counter()
        res = await session.query(text, opts)
        latencies.append((time.perf_counter() - t0) * 1000.0)
        runs[qid] = [d.id for d in res.docs]
        if top_k >= _DEEP_K:
            deep[qid] = runs[qid]
        else:
            opts.top_k = _DEEP_K
            deep[qid] = [d.id for d in (await session.query(text, opts)).docs]
        progress.update(label, n, total)
    return runs, deep, latencies


async def evaluate_async(
    dataset_dir: str | Path,
    *,
    split: str = "test",
    embeddings_dir: str | Path | None = None,
    model_id: str | None = None,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    fusions: Sequence[str] = DEFAULT_FUSIONS,
    top_k: int = 10,
    progress: TextIO | None = None,
) -> EvalReport:
    """Async form of :func:`evaluate` (same arguments)."""
    alpha_list, fusion_list = _check_alphas(alphas), _check_fusions(fusions)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 10:
        raise InvalidArgumentError(f"top_k must be an integer of at least 10, not {top_k!r}")
    prog = Progress(progress)
    dataset = load_beir(dataset_dir, split)
    corpus_vectors: np.ndarray | None = None
    query_vectors: np.ndarray | None = None
    if embeddings_dir is not None:
        if model_id not in (None, "custom"):
            raise InvalidArgumentError(
                f"--embeddings supplies the vectors (model 'custom'); drop model {model_id!r}"
            )
        model = "custom"
        corpus_vectors, query_vectors = load_embeddings(embeddings_dir, dataset)
    else:
        model = model_id or MossClient.DEFAULT_MODEL_ID
        if model == "custom":
            raise InvalidArgumentError("the custom model needs --embeddings DIR")
    prog.note(
        f"{dataset.name}/{dataset.split}: {len(dataset.doc_ids)} docs, "
        f"{len(dataset.queries)} queries, model {model}"
    )
    queries = [
        (qid, text, query_vectors[i] if query_vectors is not None else None)
        for i, (qid, text) in enumerate(dataset.queries.items())
    ]
    client = MossClient("eval", "")
    try:
        t0 = time.perf_counter()
        session = await _build(client, dataset, model, corpus_vectors, prog)
        build_seconds = time.perf_counter() - t0
        rows: list[EvalRow] = []
        cache: dict[float, tuple[dict[str, float], list[float]]] = {}
        for alpha in alpha_list:
            for fusion in fusion_list:
                pure = alpha in (0.0, 1.0)  # no fusion happens: compute once for all fusions
                if pure and alpha in cache:
                    metrics, lat = cache[alpha]
                else:
                    label = f"alpha={alpha:g} fusion={fusion}"
                    runs, deep, lat = await _run_queries(
                        session, queries, alpha, fusion, top_k, prog, label
                    )
                    metrics = mean_metrics(runs, dataset.qrels, deep)
                    if pure:
                        cache[alpha] = (metrics, lat)
                rows.append(
                    EvalRow(
                        alpha,
                        fusion,
                        metrics["ndcg@10"],
                        metrics["recall@10"],
                        metrics["recall@100"],
                        metrics["mrr@10"],
                        percentile(lat, 50),
                        percentile(lat, 99),
                        len(queries),
                    )
                )
    finally:
        await client.close()
    return EvalReport(
        dataset.name,
        dataset.split,
        model,
        len(dataset.doc_ids),
        len(queries),
        top_k,
        build_seconds,
        rows,
    )


def evaluate(
    dataset_dir: str | Path,
    *,
    split: str = "test",
    embeddings_dir: str | Path | None = None,
    model_id: str | None = None,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    fusions: Sequence[str] = DEFAULT_FUSIONS,
    top_k: int = 10,
    progress: TextIO | None = sys.stderr,
) -> EvalReport:
    """Index a BEIR dataset in a session and measure every (alpha, fusion) configuration.

    Args:
        dataset_dir: folder with ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.
        split: the qrels split to evaluate.
        embeddings_dir: precomputed vectors (see :func:`load_embeddings`); implies ``custom``.
        model_id: the built-in model to embed with when no vectors are given (``moss-minilm``).
        alphas: values of ``QueryOptions.alpha`` to try.
        fusions: ``"score"`` and/or ``"rrf"``.
        top_k: ``top_k`` of the measured queries (at least 10).
        progress: stream for progress lines (``None`` for silence).

    Returns:
        An :class:`EvalReport` with one row per (alpha, fusion), in the order given.

    Raises:
        InvalidArgumentError: bad arguments or malformed data.
        MossError: for instance ``MODEL_UNAVAILABLE`` when the model files are missing.

    Must not be called from a running event loop (use :func:`evaluate_async` there).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise MossError("evaluate() cannot run inside an event loop; await evaluate_async()")
    return asyncio.run(
        evaluate_async(
            dataset_dir,
            split=split,
            embeddings_dir=embeddings_dir,
            model_id=model_id,
            alphas=alphas,
            fusions=fusions,
            top_k=top_k,
            progress=progress,
        )
    )

"""Built-in retrieval evaluation on BEIR-format data (``moss eval``).

Why it exists: users need to know how good a configuration (model, ``alpha``, fusion) is on *their*
data before they ship, and none of the systems they compare us with ships an evaluator. This module
answers "what nDCG@10 do I get at alpha 0.8 with score fusion?" with one call.

Design:

* **Loader** (:mod:`moss.evaluation_data`): :func:`load_beir` reads the standard BEIR layout
  (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``); :func:`load_embeddings` reads
  precomputed vectors.
* **Metrics** (:mod:`moss.evaluation_metrics`) are pure functions of one ranked id list and one
  query's judgements, with the definitions of ``pytrec_eval`` (which BEIR and MTEB use).
* **Runner** (this module, with the report): :func:`evaluate` builds an in-process session
  through the *public* API only (``MossClient.session(..., auto_load_on_init=False)``, so nothing
  touches a cloud store or disk), either with precomputed vectors (``--embeddings DIR`` holding
  ``corpus.npy`` + ``corpus_ids.txt`` and ``queries.npy`` + ``query_ids.txt``; model ``custom``)
  or with a built-in model that embeds the corpus. Each (alpha, fusion) configuration runs every
  query twice: once with ``top_k`` (default 10), which yields the @10 metrics and the latency
  exactly as a user calling ``query(top_k=10)`` would see them, and once with ``top_k=100`` for
  recall@100. Two calls are needed because the candidate depth follows ``top_k`` (§3.4), so the
  first 10 of a top-100 query may differ from a top-10 query. ``alpha`` 0 and 1 do not fuse, so
  those results are computed once and reported for every requested fusion.
* **Latency** is the wall time of ``await session.query(...)`` for the ``top_k`` query, so it
  includes query embedding with a built-in model and the asyncio call overhead users pay too.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np

from .client import MossClient
from .errors import InvalidArgumentError, MossError
from .evaluation_data import BeirDataset, load_beir, load_embeddings, read_qrels
from .evaluation_metrics import mean_metrics, mrr_at_k, ndcg_at_k, percentile, recall_at_k
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

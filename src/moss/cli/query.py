"""``moss query`` and ``moss eval``.

The score columns, honestly: the library's ``QueryResultDocumentInfo.score`` is the clamped
cosine similarity of the document with the query (0 to 1), whatever the ranking; under hybrid
ranking the order comes from the fused value (``alpha * cosine + (1 - alpha) * keyword`` with
score fusion, ranks with RRF), so a lower cosine can rank above a higher one, and with
``--alpha 0`` the cosine is never computed (always 0). The table therefore shows the rank (``#``),
``cosine`` when ``alpha > 0`` and ``keyword`` when ``alpha < 1``: the document's BM25 score as a
fraction of the best score the query could reach (the keyword term of the score fusion,
docs/fusion.md). A query's hits do not carry that number, so :func:`keyword_scores` asks the loaded
index's engine for it afterwards (:meth:`moss.engine.Engine.keyword_scores`), which changes nothing
the query returns.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgumentError
from .common import make_client
from .output import fit, json_out, out, table, terminal_width, wrap

if TYPE_CHECKING:
    from ..client import MossClient

__all__ = ["evaluate", "keyword_scores", "query"]


def _parse_filter(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidArgumentError(f"--filter is not valid JSON: {e.msg}") from None
    if not isinstance(value, dict):
        raise InvalidArgumentError("--filter must be a JSON object")
    return value


def _parse_floats(text: str, what: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InvalidArgumentError(
            f"{what} must be comma-separated numbers, not {text!r}"
        ) from None


def keyword_scores(client: MossClient, name: str, text: str, ids: list[str]) -> list[float]:
    """BM25 of each id for ``text`` over the loaded index ``name``, as a fraction of the query's
    maximum attainable BM25 (0 to 1; 0 when no query term occurs in the document, or the id is
    not in the index): :meth:`moss.engine.Engine.keyword_scores`."""
    from ..runtime import loaded_engine

    scores = loaded_engine(client, name).keyword_scores(text, ids)
    return [0.0 if s is None else s for s in scores]


def _meta(metadata: dict[str, str] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (metadata or {}).items())


def _shown_text(text: str) -> str:
    """A chunk's text for a table cell: a Markdown chunk's heading trail (its first line,
    ``"Guide > Install > Linux"``) keeps only its last heading, so the cell shows the passage
    rather than the breadcrumbs; ``--json`` prints the text as stored."""
    head, sep, body = text.partition("\n")
    if sep and " > " in head and body.strip():
        return f"{head.rsplit(' > ', 1)[1]} — {body}"
    return text


async def query(args: argparse.Namespace) -> int:
    """Load an index into this process and search it."""
    from ..types import QueryOptions

    opts = QueryOptions(
        top_k=args.top_k, alpha=args.alpha, filter=_parse_filter(args.filter), fusion=args.fusion
    )
    async with make_client(args) as client:
        t0 = time.perf_counter()
        await client.load_index(args.name)
        load_ms = (time.perf_counter() - t0) * 1000.0
        t1 = time.perf_counter()
        result = await client.query(args.name, args.text, opts)
        query_ms = (time.perf_counter() - t1) * 1000.0
        ids = [d.id for d in result.docs]
        keyword = keyword_scores(client, args.name, args.text, ids) if args.alpha < 1 else None
    fusion = args.fusion or "score"
    if args.json:
        json_out(
            {
                "index": args.name,
                "query": result.query,
                "model": result.model_id,
                "alpha": args.alpha,
                "fusion": fusion,
                "time_taken_ms": result.time_taken_ms,
                "query_ms": round(query_ms, 3),
                "load_ms": round(load_ms, 3),
                "docs": [
                    {
                        "rank": n,
                        "id": d.id,
                        "score": d.score,
                        "keyword_score": None if keyword is None else round(keyword[n - 1], 6),
                        "text": d.text,
                        "metadata": d.metadata,
                        "payload": d.payload,
                    }
                    for n, d in enumerate(result.docs, 1)
                ],
            }
        )
        return 0
    width = terminal_width()
    headers = ["#", "id"]
    right = [0]
    if args.alpha > 0:
        headers.append("cosine")
        right.append(len(headers) - 1)
    if keyword is not None:
        headers.append("keyword")
        right.append(len(headers) - 1)
    headers.append("text")
    flex = len(headers) - 1
    if args.metadata:
        headers.append("metadata")
    rows: list[list[str]] = []
    for n, d in enumerate(result.docs, 1):
        row = [str(n), d.id]
        if args.alpha > 0:
            row.append(f"{d.score:.3f}")
        if keyword is not None:
            row.append(f"{keyword[n - 1]:.3f}")
        row.append(_shown_text(d.text))
        if args.metadata:  # at most a third of the width: the text stays readable
            row.append(fit(_meta(d.metadata), max(20, width // 3)))
        rows.append(row)
    if rows:
        shrink = [1, len(headers) - 1] if args.metadata else [1]
        out(table(headers, rows, right=right, flex=flex, shrink=shrink, width=width))
    out(
        wrap(
            f"{len(rows)} result(s) in {query_ms:.1f} ms (index loaded in {load_ms:.0f} ms)", width
        )
    )
    if rows:
        out(wrap(_legend(args.alpha, fusion), width))
    return 0


def _legend(alpha: float, fusion: str) -> str:
    cos = "cosine = semantic similarity (clamped cosine, 0-1)"
    kw = "keyword = BM25 as a fraction of the query's best possible (0-1)"
    if alpha >= 1:
        return f"Ranked by {cos}."
    if alpha <= 0:
        return f"Ranked by keywords (alpha 0, no cosine computed); {kw}."
    if fusion == "rrf":
        how = f"reciprocal-rank fusion of both lists (alpha {alpha:g})"
    else:
        how = f"{alpha:g} x cosine + {1 - alpha:g} x keyword (keyword counted for its top hits)"
    return f"Ranked by {how}; {cos}; {kw}."


async def evaluate(args: argparse.Namespace) -> int:
    """Measure retrieval quality and latency on a BEIR-format dataset."""
    from ..evaluation import evaluate_async
    from .progress import LineProgressAdapter

    stream = LineProgressAdapter(enabled=not args.quiet)
    try:
        report = await evaluate_async(
            args.dataset,
            split=args.split,
            embeddings_dir=args.embeddings,
            model_id=args.model,
            alphas=_parse_floats(args.alpha, "--alpha"),
            fusions=[f.strip() for f in args.fusion.split(",") if f.strip()],
            top_k=args.top_k,
            progress=stream,  # type: ignore[arg-type]  # write/flush/isatty is all it uses
        )
    finally:
        stream.close()
    if args.json:
        json_out(report.to_dict())
    else:
        out(report.to_markdown())
    return 0

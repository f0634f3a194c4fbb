"""Loading BEIR-format data for :mod:`moss.evaluation`: the dataset and precomputed vectors.

:func:`load_beir` reads the standard BEIR layout (``corpus.jsonl``, ``queries.jsonl``,
``qrels/<split>.tsv``). The official qrels files have CRLF line endings and a header row, so the
TSV reader strips ``\\r`` and skips a header whose score column is not an integer. A document is
``title + " " + text`` (stripped), as MTEB and Pyserini embed it; the evaluated queries are the
qrels' query ids that have a text.

:func:`load_embeddings` reads precomputed vectors (``corpus.npy`` + ``corpus_ids.txt``,
``queries.npy`` + ``query_ids.txt``) aligned with a dataset.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidArgumentError

__all__ = ["BeirDataset", "load_beir", "load_embeddings", "read_qrels"]


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

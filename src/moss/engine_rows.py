"""The documents of an :class:`~moss.engine.Engine`, one per *row*, in index order.

The first of the engine's four structures keyed by row (the others are its vector index, BM25 index
and metadata columns): each row holds a document's id, text, metadata and payload, and a live flag.
A new id appends a row; an update overwrites its row in place, so the document keeps its place; a
delete leaves a tombstone (id ``None``, flag cleared) until :meth:`DocumentRows.compact` squeezes
the tombstones out, preserving order, and returns the old-to-new row map the other three structures
are remapped with.

Not thread-safe on its own: the engine calls it under its lock.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .errors import DESERIALIZATION, MossError
from .snapshot import SnapshotData
from .texts import TextColumn
from .types import DocumentInfo, QueryResultDocumentInfo

__all__ = ["DocumentRows"]


class DocumentRows:
    """Documents by row: parallel lists plus an id-to-row map and a live mask (see the module)."""

    def __init__(self) -> None:
        self.ids: list[str | None] = []
        self.texts = TextColumn()  # UTF-8 bytes, decoded when read (moss.texts)
        self.metas: list[dict[str, str] | None] = []
        self.payloads: list[str | None] = []
        self.row_of: dict[str, int] = {}
        self.live = np.zeros(0, dtype=bool)  # may be longer than the rows (grown by doubling)

    @classmethod
    def from_snapshot(cls, data: SnapshotData) -> DocumentRows:
        """The rows of a snapshot, all live (raises DESERIALIZATION on duplicate ids)."""
        rows = cls()
        n = len(data.ids)
        rows.ids = list(data.ids)
        # Shallow copies: the snapshot may be loaded twice.
        texts = data.texts
        rows.texts = texts.copy() if isinstance(texts, TextColumn) else TextColumn.from_texts(texts)
        rows.metas = list(data.metadata)
        rows.payloads = list(data.payloads)
        rows.row_of = {d: i for i, d in enumerate(data.ids)}
        if len(rows.row_of) != n:
            raise MossError("snapshot has duplicate document ids", code=DESERIALIZATION)
        rows.live = np.ones(n, dtype=bool)
        return rows

    @property
    def n_rows(self) -> int:
        """The number of rows, tombstones included."""
        return len(self.ids)

    @property
    def doc_count(self) -> int:
        """The number of live documents."""
        return len(self.row_of)

    def live_rows(self) -> np.ndarray:
        """The live rows, ascending (int64)."""
        return np.flatnonzero(self.live[: len(self.ids)])

    def put(self, docs: list[DocumentInfo]) -> tuple[np.ndarray, list[int]]:
        """Store ``docs`` (distinct ids): a new id appends a row, a known one overwrites its row.

        Returns the row of each doc (int64, aligned with ``docs``) and the rows overwritten.
        """
        rows = np.empty(len(docs), dtype=np.int64)
        updated: list[int] = []
        nxt = len(self.ids)
        for i, d in enumerate(docs):
            row = self.row_of.get(d.id)
            if row is None:
                row = nxt
                nxt += 1
                self.ids.append(d.id)
                self.texts.append(d.text)
                self.metas.append(d.metadata)
                self.payloads.append(d.payload)
                self.row_of[d.id] = row
            else:
                updated.append(row)
                self.texts[row] = d.text
                self.metas[row] = d.metadata
                self.payloads[row] = d.payload
            rows[i] = row
        if nxt > self.live.size:
            live = np.zeros(max(nxt, 2 * self.live.size, 64), dtype=bool)
            live[: self.live.size] = self.live
            self.live = live
        self.live[rows] = True
        return rows, updated

    def remove(self, ids: Iterable[str]) -> np.ndarray:
        """Tombstone the rows of ``ids`` (unknown ones ignored); returns those rows, ascending."""
        rows = sorted({self.row_of[i] for i in ids if i in self.row_of})
        arr = np.asarray(rows, dtype=np.int64)
        for r in rows:
            doc_id = self.ids[r]
            assert doc_id is not None
            del self.row_of[doc_id]
            self.ids[r] = None
            self.texts[r] = ""
            self.metas[r] = None
            self.payloads[r] = None
        self.live[arr] = False
        return arr

    def compact(self) -> np.ndarray:
        """Drop the tombstones, keeping order; returns the old-to-new row map (-1: dropped)."""
        n = len(self.ids)
        live = self.live[:n]
        old_to_new = np.full(n, -1, dtype=np.int64)
        old_to_new[live] = np.arange(int(live.sum()), dtype=np.int64)
        keep = np.flatnonzero(live).tolist()
        self.ids = [self.ids[r] for r in keep]
        self.texts = self.texts.take(keep)
        self.metas = [self.metas[r] for r in keep]
        self.payloads = [self.payloads[r] for r in keep]
        self.row_of = {doc_id: i for i, doc_id in enumerate(self.ids) if doc_id is not None}
        self.live = np.ones(len(keep), dtype=bool)
        return old_to_new

    def document(self, row: int, embedding: list[float] | None = None) -> DocumentInfo:
        """The live document at ``row`` (its metadata copied), with ``embedding`` attached."""
        doc_id = self.ids[row]
        assert doc_id is not None
        meta = self.metas[row]
        return DocumentInfo(
            doc_id,
            self.texts[row],
            dict(meta) if meta is not None else None,
            embedding,
            self.payloads[row],
        )

    def hit(self, row: int, score: float, index_name: str | None) -> QueryResultDocumentInfo:
        """The query hit for the live document at ``row``."""
        doc_id = self.ids[row]
        assert doc_id is not None
        meta = self.metas[row]
        return QueryResultDocumentInfo(
            doc_id,
            self.texts[row],
            dict(meta) if meta is not None else None,
            score,
            index_name,
            self.payloads[row],
        )

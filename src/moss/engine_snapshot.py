"""An engine's structures to and from :class:`~moss.snapshot_codec.SnapshotData`.

:meth:`moss.engine.Engine.to_snapshot` and :meth:`~moss.engine.Engine.from_snapshot` hold the
locks and decide; the conversions are here, as functions of the structures themselves (rows,
vector index, BM25 index), so they read no engine state:

* :func:`snapshot_of` — the snapshot of compacted rows and their indexes, the vector matrix copied
  or viewed;
* :func:`vectors_reusable` — whether a snapshot's vectors came from the local model artifact (else
  they are re-embedded, or refused);
* :func:`load_structures` — rows and indexes rebuilt from a snapshot without re-embedding, every
  damaged array reported as DESERIALIZATION.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .analysis import analyze_many
from .engine_rows import DocumentRows
from .errors import DESERIALIZATION, MossError
from .keyword import BM25Index
from .snapshot import SnapshotData
from .types import DocumentInfo
from .vectors import VectorIndex

if TYPE_CHECKING:
    from .embedding import Embedder

__all__ = ["documents_of", "load_structures", "snapshot_of", "vectors_reusable"]


def snapshot_of(
    rows: DocumentRows,
    vectors: VectorIndex | None,
    bm25: BM25Index,
    *,
    model_id: str,
    dimension: int | None,
    embedder: Embedder | None,
    name: str | None,
    copy_matrix: bool,
) -> SnapshotData:
    """The snapshot of ``rows`` (compacted: no tombstones) and their indexes.

    With ``copy_matrix`` false the vectors are a view of the live matrix, valid while no write
    runs (:meth:`moss.engine.Engine.write_snapshot`).
    """
    arrays: dict[str, np.ndarray] = {}
    matrix = None
    # Only the matrix may need a copy: rows are overwritten in place by upserts. The other
    # arrays are fresh, or views of memory the indexes never write again (a loaded graph's
    # bytes; BM25's merged postings, which later writes replace or append past).
    if vectors is not None:
        vec = vectors.to_arrays()
        view = vec.pop("matrix")[: rows.n_rows]
        matrix = np.array(view, dtype=np.float32) if copy_matrix else view
        arrays.update({f"vec/{k}": v for k, v in vec.items()})
    arrays.update({f"bm25/{k}": v for k, v in bm25.to_arrays().items()})
    model = None
    if embedder is not None:
        model = {
            "artifact_version": embedder.artifact_version,
            "manifest_sha256": embedder.manifest_sha256,
        }
    return SnapshotData(
        model_id=model_id,
        dimension=dimension,
        ids=[i for i in rows.ids if i is not None],
        texts=rows.texts.copy(),
        metadata=[dict(m) if m is not None else None for m in rows.metas],
        payloads=list(rows.payloads),
        vectors=matrix if matrix is not None and rows.n_rows else None,
        arrays=arrays,
        model=model,
        extra={"name": name},
    )


def vectors_reusable(data: SnapshotData, embedder: Embedder, rebuild_legacy: bool) -> bool:
    """Whether ``data``'s vectors were made by ``embedder``'s artifact, so they can be kept.

    Vectors recorded with no model identity, or with another artifact, are not: ``False`` (they
    are to be re-embedded) when ``rebuild_legacy`` is true, MossError DESERIALIZATION otherwise.
    """
    recorded = (data.model or {}).get("manifest_sha256")
    usable = (
        recorded == embedder.manifest_sha256
        and data.dimension == embedder.dimension
        and (data.vectors is not None or not data.ids)
    )
    if not usable and not rebuild_legacy:
        raise MossError(
            f"snapshot vectors were made by another model artifact ({recorded}) than "
            f"the local {data.model_id!r} ({embedder.manifest_sha256}); pass "
            "rebuild_legacy=True to re-embed them locally",
            code=DESERIALIZATION,
        )
    return usable


def documents_of(data: SnapshotData) -> list[DocumentInfo]:
    """The snapshot's documents without their vectors (for re-embedding them)."""
    return [
        DocumentInfo(i, t, m, None, p)
        for i, t, m, p in zip(data.ids, data.texts, data.metadata, data.payloads)
    ]


def load_structures(
    data: SnapshotData, dimension: int | None
) -> tuple[DocumentRows, VectorIndex, BM25Index]:
    """The rows, vector index and BM25 index of a snapshot that has documents, vectors reused.

    A snapshot without BM25 arrays (another producer's) has its keyword index rebuilt from the
    texts. Raises MossError DESERIALIZATION for missing vectors, duplicate ids or damaged arrays.
    """
    if data.vectors is None:
        raise MossError("snapshot has documents but no vectors", code=DESERIALIZATION)
    rows = DocumentRows.from_snapshot(data)
    vec = {k[4:]: v for k, v in data.arrays.items() if k.startswith("vec/")}
    bm25_arrays = {k[5:]: v for k, v in data.arrays.items() if k.startswith("bm25/")}
    try:
        assert dimension is not None
        vectors = VectorIndex.from_arrays({"matrix": data.vectors, **vec})
        if bm25_arrays:
            bm25 = BM25Index.from_arrays(bm25_arrays)
        else:  # a snapshot from another producer: rebuild the keyword index from the texts
            bm25 = BM25Index()
            bm25.add(np.arange(rows.n_rows, dtype=np.int64), analyze_many(rows.texts))
    except MossError:
        raise
    except (KeyError, ValueError, IndexError, TypeError, AssertionError) as e:
        raise MossError(
            "snapshot index arrays are damaged", code=DESERIALIZATION, detail=str(e)
        ) from e
    return rows, vectors, bm25

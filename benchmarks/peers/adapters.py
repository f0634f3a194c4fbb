"""One function per system: build an index from the supplied vectors/texts, then time queries.

Every adapter gets the same :class:`~peers.common.Data` (same vectors, same texts), asks for
``top_k`` results and returns :class:`~peers.common.Row` objects whose ``results`` are corpus row
indices, so quality is scored identically by the orchestrator. Settings follow each project's
documentation for the equivalent setup: inner product on unit vectors, HNSW ``M=16``,
``ef_construction=100``, ``ef_search=100`` where a graph is used, and each library's own keyword
analyser (stemming + English stop words where it offers them). Hybrid peers fetch ``depth``
candidates per list and fuse with their own built-in method (RRF ``k=60`` unless noted).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .common import (
    Data,
    Params,
    Row,
    disk_bytes,
    minmax,
    run_queries,
    run_queries_async,
    simple_tokens,
    timed,
    top_k_exact,
)

REPO = Path(__file__).resolve().parents[2]

Adapter = Callable[[Data, Params, Path], list[Row]]


# --------------------------------------------------------------------------------------------
# moss (ours): the public session API with supplied vectors (model "custom")


def run_moss(data: Data, params: Params, tmp: Path) -> list[Row]:
    if str(REPO / "src") not in sys.path:  # not installed: use the working tree
        sys.path.append(str(REPO / "src"))
    t0 = time.perf_counter()
    from moss import DocumentInfo, MossClient, QueryOptions

    import_s = time.perf_counter() - t0
    return asyncio.run(_moss(data, params, tmp, import_s, DocumentInfo, MossClient, QueryOptions))


async def _moss(
    data: Data, params: Params, tmp: Path, import_s: float, doc_cls, client_cls, opts_cls
) -> list[Row]:
    client = client_cls("bench", "", cache_path=str(tmp / "moss"))
    session = await client.session("bench", model_id="custom", auto_load_on_init=False)
    t0 = time.perf_counter()
    batch = 10000
    for s in range(0, data.n, batch):
        docs = [
            doc_cls(str(i), data.texts[i], embedding=data.vectors[i])
            for i in range(s, min(s + batch, data.n))
        ]
        await session.add_docs(docs)
    build_s = time.perf_counter() - t0
    await session.save_to_disk()
    size = disk_bytes(tmp / "moss")
    modes: list[tuple[str, float, str]] = [("dense", 1.0, "score"), ("keyword", 0.0, "score")]
    for a in params.alphas:
        modes.append((f"hybrid-score a={a:g}", a, "score"))
    for a in params.alphas:
        modes.append((f"hybrid-rrf a={a:g}", a, "rrf"))
    rows = []
    for mode, alpha, fusion in modes:
        row = Row("moss", mode, import_s=import_s, build_s=build_s, disk_bytes=size)

        async def search(i: int, alpha: float = alpha, fusion: str = fusion) -> list[int]:
            res = await session.query(
                data.qtexts[i],
                opts_cls(
                    embedding=data.qvectors[i], top_k=params.top_k, alpha=alpha, fusion=fusion
                ),
            )
            return [int(d.id) for d in res.docs]

        rows.append(await run_queries_async(row, data, params, search))
    await client.close()
    return rows


# --------------------------------------------------------------------------------------------
# Vector-only libraries


def run_numpy(data: Data, params: Params, tmp: Path) -> list[Row]:
    vectors, build_s = timed(lambda: np.ascontiguousarray(data.vectors, dtype=np.float32))
    np.save(tmp / "vectors.npy", vectors)
    row = Row("numpy", "dense", import_s=0.0, build_s=build_s, disk_bytes=disk_bytes(tmp))
    k = params.top_k
    return [
        run_queries(row, data, params, lambda i: top_k_exact(vectors, data.qvectors[i], k).tolist())
    ]


def _faiss(kind: str, data: Data, params: Params, tmp: Path) -> list[Row]:
    t0 = time.perf_counter()
    import faiss

    import_s = time.perf_counter() - t0
    d = data.dim

    def build() -> object:
        if kind == "flat":
            index = faiss.IndexFlatIP(d)
        else:
            index = faiss.IndexHNSWFlat(d, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = params.hnsw_ef_construction
        index.add(data.vectors)
        if kind != "flat":
            index.hnsw.efSearch = params.hnsw_ef_search
        return index

    index, build_s = timed(build)
    faiss.omp_set_num_threads(1)
    faiss.write_index(index, str(tmp / "index.faiss"))
    row = Row(
        f"faiss-{kind}", "dense", import_s=import_s, build_s=build_s, disk_bytes=disk_bytes(tmp)
    )
    k = params.top_k

    def search(i: int) -> list[int]:
        _, ids = index.search(data.qvectors[i : i + 1], k)  # type: ignore[attr-defined]
        return [int(x) for x in ids[0] if x >= 0]

    return [run_queries(row, data, params, search)]


def run_faiss_flat(data: Data, params: Params, tmp: Path) -> list[Row]:
    return _faiss("flat", data, params, tmp)


def run_faiss_hnsw(data: Data, params: Params, tmp: Path) -> list[Row]:
    return _faiss("hnsw", data, params, tmp)


def run_hnswlib(data: Data, params: Params, tmp: Path) -> list[Row]:
    t0 = time.perf_counter()
    import hnswlib

    import_s = time.perf_counter() - t0

    def build() -> object:
        index = hnswlib.Index(space="ip", dim=data.dim)
        index.init_index(
            max_elements=data.n, ef_construction=params.hnsw_ef_construction, M=params.hnsw_m
        )
        index.add_items(data.vectors, np.arange(data.n))
        index.set_ef(params.hnsw_ef_search)
        return index

    index, build_s = timed(build)
    index.set_num_threads(1)  # type: ignore[attr-defined]
    index.save_index(str(tmp / "index.bin"))  # type: ignore[attr-defined]
    row = Row("hnswlib", "dense", import_s=import_s, build_s=build_s, disk_bytes=disk_bytes(tmp))
    k = params.top_k

    def search(i: int) -> list[int]:
        labels, _ = index.knn_query(data.qvectors[i], k=k)  # type: ignore[attr-defined]
        return labels[0].tolist()

    return [run_queries(row, data, params, search)]


def run_usearch(data: Data, params: Params, tmp: Path) -> list[Row]:
    t0 = time.perf_counter()
    from usearch.index import Index

    import_s = time.perf_counter() - t0

    def build() -> Index:
        index = Index(
            ndim=data.dim,
            metric="ip",
            dtype="f32",
            connectivity=params.hnsw_m,
            expansion_add=params.hnsw_ef_construction,
            expansion_search=params.hnsw_ef_search,
        )
        index.add(np.arange(data.n, dtype=np.uint64), data.vectors)
        return index

    index, build_s = timed(build)
    index.save(str(tmp / "index.usearch"))
    row = Row("usearch", "dense", import_s=import_s, build_s=build_s, disk_bytes=disk_bytes(tmp))
    k = params.top_k

    def search(i: int) -> list[int]:
        return index.search(data.qvectors[i], k, threads=1).keys.tolist()

    return [run_queries(row, data, params, search)]


# --------------------------------------------------------------------------------------------
# bm25s, alone and hand-fused with numpy


def _bm25s_index(data: Data, tmp: Path) -> tuple[object, Callable[[str], object], float, float]:
    t0 = time.perf_counter()
    import bm25s
    import Stemmer

    import_s = time.perf_counter() - t0
    stemmer = Stemmer.Stemmer("english")

    def build() -> object:
        tokens = bm25s.tokenize(data.texts, stopwords="en", stemmer=stemmer, show_progress=False)
        retriever = bm25s.BM25()
        retriever.index(tokens, show_progress=False)
        return retriever

    retriever, build_s = timed(build)
    retriever.save(str(tmp / "bm25s"))  # type: ignore[attr-defined]

    def tokenize(q: str) -> object:
        return bm25s.tokenize([q], stopwords="en", stemmer=stemmer, show_progress=False)

    return retriever, tokenize, import_s, build_s


def _bm25s_search(
    retriever: object, tokenize: Callable[[str], object], q: str, k: int
) -> tuple[np.ndarray, np.ndarray]:
    toks = tokenize(q)
    if not toks.ids or not toks.ids[0]:  # type: ignore[attr-defined]
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    n_docs = int(retriever.scores["num_docs"])  # type: ignore[attr-defined]
    docs, scores = retriever.retrieve(  # type: ignore[attr-defined]
        toks, k=min(k, n_docs), show_progress=False, n_threads=1
    )
    keep = scores[0] > 0
    return docs[0][keep], scores[0][keep]


def run_bm25s(data: Data, params: Params, tmp: Path) -> list[Row]:
    retriever, tokenize, import_s, build_s = _bm25s_index(data, tmp)
    row = Row("bm25s", "bm25", import_s=import_s, build_s=build_s, disk_bytes=disk_bytes(tmp))
    k = params.top_k
    return [
        run_queries(
            row,
            data,
            params,
            lambda i: _bm25s_search(retriever, tokenize, data.qtexts[i], k)[0].tolist(),
        )
    ]


def run_numpy_bm25s(data: Data, params: Params, tmp: Path) -> list[Row]:
    """Hand-built hybrid: exact dense top-``depth`` + bm25s top-``depth``, min-max, convex."""
    retriever, tokenize, import_s, build_s = _bm25s_index(data, tmp)
    vectors = np.ascontiguousarray(data.vectors)
    rows = []
    for a in params.alphas:
        row = Row(
            "numpy+bm25s",
            f"hybrid-convex a={a:g}",
            import_s=import_s,
            build_s=build_s,
            disk_bytes=disk_bytes(tmp),
        )

        def search(i: int, a: float = a) -> list[int]:
            q = data.qvectors[i]
            v_rows = top_k_exact(vectors, q, params.depth)
            v_scores = vectors[v_rows] @ q
            k_rows, k_scores = _bm25s_search(retriever, tokenize, data.qtexts[i], params.depth)
            fused: dict[int, float] = {}
            for r, s in zip(v_rows.tolist(), minmax(v_scores.astype(np.float64)).tolist()):
                fused[r] = a * s
            for r, s in zip(k_rows.tolist(), minmax(k_scores.astype(np.float64)).tolist()):
                fused[r] = fused.get(r, 0.0) + (1 - a) * s
            return sorted(fused, key=lambda r: -fused[r])[: params.top_k]

        rows.append(run_queries(row, data, params, search))
    return rows


# --------------------------------------------------------------------------------------------
# Databases


def run_chromadb(data: Data, params: Params, tmp: Path) -> list[Row]:
    t0 = time.perf_counter()
    import chromadb
    from chromadb.config import Settings

    import_s = time.perf_counter() - t0

    def build() -> object:
        client = chromadb.PersistentClient(
            path=str(tmp / "chroma"), settings=Settings(anonymized_telemetry=False)
        )
        hnsw = {
            "space": "ip",
            "ef_construction": params.hnsw_ef_construction,
            "ef_search": params.hnsw_ef_search,
            "max_neighbors": params.hnsw_m,
        }
        try:
            col = client.create_collection(
                "bench", configuration={"hnsw": hnsw}, embedding_function=None
            )
        except Exception:  # older chroma: settings as collection metadata
            col = client.create_collection(
                "bench",
                embedding_function=None,
                metadata={
                    "hnsw:space": "ip",
                    "hnsw:M": params.hnsw_m,
                    "hnsw:construction_ef": params.hnsw_ef_construction,
                    "hnsw:search_ef": params.hnsw_ef_search,
                },
            )
        step = min(5000, client.get_max_batch_size())
        for s in range(0, data.n, step):
            e = min(s + step, data.n)
            col.add(
                ids=[str(i) for i in range(s, e)],
                embeddings=data.vectors[s:e],
                documents=data.texts[s:e],
            )
        return col

    col, build_s = timed(build)
    row = Row(
        "chromadb",
        "dense",
        import_s=import_s,
        build_s=build_s,
        disk_bytes=disk_bytes(tmp / "chroma"),
    )
    k = params.top_k

    def search(i: int) -> list[int]:
        res = col.query(
            query_embeddings=data.qvectors[i : i + 1],
            n_results=k,  # type: ignore[attr-defined]
            include=["distances"],
        )
        return [int(x) for x in res["ids"][0]]

    return [run_queries(row, data, params, search)]


def run_lancedb(data: Data, params: Params, tmp: Path) -> list[Row]:
    t0 = time.perf_counter()
    import lancedb
    import pyarrow as pa
    from lancedb.rerankers import LinearCombinationReranker, RRFReranker

    import_s = time.perf_counter() - t0

    def build() -> object:
        db = lancedb.connect(str(tmp / "lance"))
        flat = pa.array(data.vectors.reshape(-1), type=pa.float32())
        table = pa.table(
            {
                "id": pa.array(np.arange(data.n, dtype=np.int64)),
                "text": pa.array(data.texts, type=pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(flat, data.dim),
            }
        )
        tbl = db.create_table("bench", data=table)
        tbl.create_fts_index(
            "text", use_tantivy=False, stem=True, remove_stop_words=True, language="English"
        )
        return tbl

    tbl, build_s = timed(build)
    size = disk_bytes(tmp / "lance")
    k = params.top_k

    def ids(arrow: object) -> list[int]:
        return [int(x) for x in arrow.column("id").to_pylist()]  # type: ignore[attr-defined]

    def dense(i: int) -> list[int]:
        q = tbl.search(data.qvectors[i], vector_column_name="vector")  # type: ignore[attr-defined]
        return ids(q.distance_type("dot").limit(k).select(["id"]).to_arrow())

    def fts(i: int) -> list[int]:
        q = tbl.search(data.qtexts[i], query_type="fts")  # type: ignore[attr-defined]
        return ids(q.limit(k).select(["id"]).to_arrow())

    def hybrid(reranker: object) -> Callable[[int], list[int]]:
        def search(i: int) -> list[int]:
            q = (
                tbl.search(query_type="hybrid", vector_column_name="vector")  # type: ignore[attr-defined]
                .vector(data.qvectors[i])
                .text(data.qtexts[i])
                .distance_type("dot")
                .rerank(reranker)
                .limit(k)
            )
            return ids(q.to_arrow())

        return search

    modes: list[tuple[str, Callable[[int], list[int]]]] = [
        ("dense", dense),
        ("fts", fts),
        ("hybrid-rrf", hybrid(RRFReranker())),
    ]
    for a in params.alphas:
        modes.append((f"hybrid-linear a={a:g}", hybrid(LinearCombinationReranker(weight=a))))
    return [
        run_queries(
            Row("lancedb", mode, import_s=import_s, build_s=build_s, disk_bytes=size),
            data,
            params,
            fn,
        )
        for mode, fn in modes
    ]


def _qdrant_cap(name: str, data: Data, params: Params) -> list[Row] | None:
    if data.n > params.qdrant_cap:
        return [
            Row(
                name,
                "-",
                status=f"skipped: N={data.n} > cap {params.qdrant_cap} "
                "(qdrant local mode is brute force in Python)",
            )
        ]
    return None


def _run_qdrant_dense(
    name: str, location: str | None, data: Data, params: Params, tmp: Path
) -> list[Row]:
    capped = _qdrant_cap(name, data, params)
    if capped:
        return capped
    t0 = time.perf_counter()
    from qdrant_client import QdrantClient, models

    import_s = time.perf_counter() - t0

    def build() -> object:
        client = (
            QdrantClient(location=":memory:") if location is None else QdrantClient(path=location)
        )
        client.create_collection(
            "bench", vectors_config=models.VectorParams(size=data.dim, distance=models.Distance.DOT)
        )
        client.upload_collection(
            "bench", vectors=data.vectors, ids=list(range(data.n)), batch_size=1024
        )
        return client

    client, build_s = timed(build)
    size = disk_bytes(location) if location is not None else None
    row = Row(name, "dense", import_s=import_s, build_s=build_s, disk_bytes=size)
    k = params.top_k

    def search(i: int) -> list[int]:
        res = client.query_points("bench", query=data.qvectors[i].tolist(), limit=k)  # type: ignore[attr-defined]
        return [int(p.id) for p in res.points]

    rows = [run_queries(row, data, params, search)]
    client.close()  # type: ignore[attr-defined]
    return rows


def run_qdrant_mem(data: Data, params: Params, tmp: Path) -> list[Row]:
    return _run_qdrant_dense("qdrant-mem", None, data, params, tmp)


def run_qdrant_disk(data: Data, params: Params, tmp: Path) -> list[Row]:
    return _run_qdrant_dense("qdrant-disk", str(tmp / "qdrant"), data, params, tmp)


def run_qdrant_hybrid(data: Data, params: Params, tmp: Path) -> list[Row]:
    """Dense + BM25 sparse vectors (IDF applied by Qdrant), fused by Qdrant's RRF."""
    capped = _qdrant_cap("qdrant-hybrid", data, params)
    if capped:
        return capped
    t0 = time.perf_counter()
    import Stemmer
    from qdrant_client import QdrantClient, models

    import_s = time.perf_counter() - t0
    stem = Stemmer.Stemmer("english").stemWords
    vocab: dict[str, int] = {}
    k1, b = 1.2, 0.75

    def sparse_doc(tokens: list[str], avgdl: float) -> models.SparseVector:
        tf: dict[int, int] = {}
        for t in tokens:
            tid = vocab.setdefault(t, len(vocab))
            tf[tid] = tf.get(tid, 0) + 1
        dl = len(tokens)
        vals = [f * (k1 + 1) / (f + k1 * (1 - b + b * dl / avgdl)) for f in tf.values()]
        return models.SparseVector(indices=list(tf), values=vals)

    def sparse_query(text: str) -> models.SparseVector:
        ids = sorted({vocab[t] for t in simple_tokens(text, stem) if t in vocab})
        return models.SparseVector(indices=ids, values=[1.0] * len(ids))

    def build() -> object:
        toks = [simple_tokens(t, stem) for t in data.texts]
        avgdl = max(sum(map(len, toks)) / max(len(toks), 1), 1.0)
        client = QdrantClient(location=":memory:")
        client.create_collection(
            "bench",
            vectors_config={
                "dense": models.VectorParams(size=data.dim, distance=models.Distance.DOT)
            },
            sparse_vectors_config={"bm25": models.SparseVectorParams(modifier=models.Modifier.IDF)},
        )
        points = [
            models.PointStruct(
                id=i, vector={"dense": data.vectors[i].tolist(), "bm25": sparse_doc(toks[i], avgdl)}
            )
            for i in range(data.n)
        ]
        client.upload_points("bench", points=points, batch_size=1024)
        return client

    client, build_s = timed(build)
    k = params.top_k

    def sparse(i: int) -> list[int]:
        res = client.query_points(
            "bench",
            query=sparse_query(data.qtexts[i]),
            using="bm25",  # type: ignore[attr-defined]
            limit=k,
        )
        return [int(p.id) for p in res.points]

    def hybrid(i: int) -> list[int]:
        res = client.query_points(  # type: ignore[attr-defined]
            "bench",
            prefetch=[
                models.Prefetch(query=data.qvectors[i].tolist(), using="dense", limit=params.depth),
                models.Prefetch(
                    query=sparse_query(data.qtexts[i]), using="bm25", limit=params.depth
                ),
            ],
            query=models.FusionQuery(fusion=models.Fusion.RRF),
            limit=k,
        )
        return [int(p.id) for p in res.points]

    return [
        run_queries(Row("qdrant-hybrid", m, import_s=import_s, build_s=build_s), data, params, fn)
        for m, fn in (("sparse-bm25", sparse), ("hybrid-rrf", hybrid))
    ]


def run_sqlite_vec(data: Data, params: Params, tmp: Path) -> list[Row]:
    """sqlite-vec ``vec0`` (exact KNN) + FTS5 (porter) + the RRF query from the sqlite-vec docs."""
    t0 = time.perf_counter()
    try:
        import pysqlite3 as sqlite3  # the stdlib build often cannot load extensions
    except ImportError:
        import sqlite3
    import re

    import sqlite_vec

    import_s = time.perf_counter() - t0
    path = tmp / "bench.db"

    def build() -> object:
        con = sqlite3.connect(str(path))
        con.enable_load_extension(True)
        sqlite_vec.load(con)
        con.enable_load_extension(False)
        con.execute(
            f"create virtual table vec using vec0(embedding float[{data.dim}] "
            "distance_metric=cosine)"
        )
        con.execute("create virtual table fts using fts5(text, tokenize='porter unicode61')")
        step = 5000
        for s in range(0, data.n, step):
            e = min(s + step, data.n)
            con.executemany(
                "insert into vec(rowid, embedding) values (?, ?)",
                [(i + 1, data.vectors[i].tobytes()) for i in range(s, e)],
            )
            con.executemany(
                "insert into fts(rowid, text) values (?, ?)",
                [(i + 1, data.texts[i]) for i in range(s, e)],
            )
        con.commit()
        return con

    con, build_s = timed(build)
    size = disk_bytes(path)
    k = params.top_k
    word = re.compile(r"\w+")

    def fts_query(text: str) -> str:
        return " OR ".join(f'"{w}"' for w in word.findall(text.lower()))

    def dense(i: int) -> list[int]:
        cur = con.execute(  # type: ignore[attr-defined]
            "select rowid from vec where embedding match ? and k = ? order by distance",
            (data.qvectors[i].tobytes(), k),
        )
        return [r[0] - 1 for r in cur]

    def fts(i: int) -> list[int]:
        q = fts_query(data.qtexts[i])
        if not q:
            return []
        cur = con.execute(
            "select rowid from fts where fts match ? order by rank limit ?",  # type: ignore[attr-defined]
            (q, k),
        )
        return [r[0] - 1 for r in cur]

    hybrid_sql = """
        with vec_matches as (
            select rowid as id, row_number() over (order by distance) as r
            from vec where embedding match :emb and k = :depth
        ),
        fts_matches as (
            select rowid as id, row_number() over (order by rank) as r
            from fts where fts match :q limit :depth
        ),
        final as (
            select coalesce(v.id, f.id) as id,
                   coalesce(1.0 / (60 + f.r), 0.0) + coalesce(1.0 / (60 + v.r), 0.0) as s
            from fts_matches f full outer join vec_matches v on v.id = f.id
        )
        select id from final order by s desc limit :k
    """

    def hybrid(i: int) -> list[int]:
        q = fts_query(data.qtexts[i])
        if not q:
            return dense(i)
        cur = con.execute(
            hybrid_sql,
            {
                "emb": data.qvectors[i].tobytes(),  # type: ignore[attr-defined]
                "depth": params.depth,
                "q": q,
                "k": k,
            },
        )
        return [r[0] - 1 for r in cur]

    return [
        run_queries(
            Row("sqlite-vec", m, import_s=import_s, build_s=build_s, disk_bytes=size),
            data,
            params,
            fn,
        )
        for m, fn in (("dense", dense), ("fts5", fts), ("hybrid-rrf", hybrid))
    ]


ADAPTERS: dict[str, Adapter] = {
    "moss": run_moss,
    "numpy": run_numpy,
    "faiss-flat": run_faiss_flat,
    "faiss-hnsw": run_faiss_hnsw,
    "hnswlib": run_hnswlib,
    "usearch": run_usearch,
    "bm25s": run_bm25s,
    "numpy+bm25s": run_numpy_bm25s,
    "chromadb": run_chromadb,
    "lancedb": run_lancedb,
    "qdrant-mem": run_qdrant_mem,
    "qdrant-disk": run_qdrant_disk,
    "qdrant-hybrid": run_qdrant_hybrid,
    "sqlite-vec": run_sqlite_vec,
}

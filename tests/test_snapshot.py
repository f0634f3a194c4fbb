"""Snapshots: round trip, damage detection that changes nothing, atomic generations, containers."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest

from moss import DocumentInfo, MossClient, MossError, QueryOptions
from moss.engine import Engine
from moss.snapshot import (
    FORMAT_VERSION,
    SnapshotData,
    current_generation,
    pack,
    read_dir,
    unpack,
    write_dir,
)

from .conftest import random_texts, unit_vectors

DIM = 12


def _docs(n: int, seed: int = 0) -> list[DocumentInfo]:
    vecs = unit_vectors(n, DIM, seed)
    texts = random_texts(n, seed)
    return [
        DocumentInfo(f"d{i}", texts[i], {"g": str(i % 4)} if i % 5 else None, vecs[i].tolist(),
                     f'{{"i":{i}}}' if i % 2 else None)
        for i in range(n)
    ]  # fmt: skip


def _engine(n: int = 120) -> Engine:
    e = Engine("custom")
    e.add_documents(_docs(n))
    e.delete([f"d{i}" for i in range(0, n, 7)])
    e.add_documents([DocumentInfo("d3", "replaced text river", {"g": "x"}, [1.0] * DIM)])
    return e


def _answers(e: Engine) -> list[object]:
    q = unit_vectors(1, DIM, 99)[0].tolist()
    out: list[object] = [[(d.id, d.text, d.metadata, d.payload) for d in e.get_documents()]]
    for alpha in (0.0, 0.5, 1.0):
        r = e.query("river tiger", QueryOptions(embedding=q, alpha=alpha, top_k=10))
        out.append([(d.id, round(d.score, 6)) for d in r.docs])
    return out


def test_write_snapshot_shares_the_vectors_and_writers_wait_for_it(tmp_path: Path) -> None:
    import threading

    e = _engine()
    before = _answers(e)
    writer_done = threading.Event()

    def upsert() -> None:
        e.add_documents([DocumentInfo("d1", "changed", None, [0.5] * DIM)])
        writer_done.set()

    def write(data: SnapshotData) -> int:
        assert data.vectors is not None and e._vectors is not None
        assert np.shares_memory(data.vectors, e._vectors._mat)  # no copy of the vectors
        t = threading.Thread(target=upsert)
        t.start()
        assert not writer_done.wait(0.3)  # the upsert (in place, row d1) waits for the save
        assert e.query("river", QueryOptions(embedding=[1.0] * DIM, top_k=3)).docs  # reads don't
        write_dir(tmp_path / "snap", data)
        return 7

    assert e.write_snapshot(write) == 7
    assert writer_done.wait(10)
    back = Engine.from_snapshot(read_dir(tmp_path / "snap"))
    assert _answers(back) == before  # the state the save began with, no torn row
    assert [d.text for d in e.get_documents() if d.id == "d1"] == ["changed"]


def test_dir_round_trip_is_identical(tmp_path: Path) -> None:
    e = _engine()
    write_dir(tmp_path / "snap", e.to_snapshot())
    back = Engine.from_snapshot(read_dir(tmp_path / "snap"))
    assert back.doc_count == e.doc_count
    assert _answers(back) == _answers(e)
    # the loaded engine stays writable (copy-on-write over read-only mapped arrays)
    back.add_documents([DocumentInfo("new", "tiger tiger", None, [0.5] * DIM)])
    back.delete(["d1"])
    assert back.doc_count == e.doc_count


def test_pack_round_trip_and_vectors_are_raw_float32() -> None:
    e = _engine(40)
    data = e.to_snapshot()
    blob = pack(data)
    back = unpack(blob)
    assert back.ids == data.ids and back.texts == data.texts
    assert back.vectors is not None and data.vectors is not None
    assert np.array_equal(back.vectors, data.vectors)
    raw = np.asarray(data.vectors, dtype="<f4").tobytes()
    assert raw in blob  # vectors travel as raw little-endian float32, not JSON numbers
    assert _answers(Engine.from_snapshot(back)) == _answers(e)


@pytest.mark.parametrize("victim", ["manifest.json", "docs.json", "vectors.f32", "arrays.bin"])
@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_snapshot_raises_deserialization(tmp_path: Path, victim: str, damage: str) -> None:
    e = _engine(30)
    gen = write_dir(tmp_path, e.to_snapshot())
    path = gen / victim
    blob = path.read_bytes()
    if damage == "delete":
        path.unlink()
    elif damage == "truncate":
        path.write_bytes(blob[: len(blob) // 2])
    else:
        mid = len(blob) // 2
        path.write_bytes(blob[:mid] + bytes([blob[mid] ^ 0x55]) + blob[mid + 1 :])
    with pytest.raises(MossError) as err:
        Engine.from_snapshot(read_dir(tmp_path))
    assert err.value.code == "DESERIALIZATION"


def test_damaged_blob_raises_deserialization() -> None:
    blob = pack(_engine(10).to_snapshot())
    for bad in (blob[:20], blob[:-5], b"junk" * 10, blob[:200] + b"\xff" + blob[201:]):
        with pytest.raises(MossError) as err:
            unpack(bad)
        assert err.value.code == "DESERIALIZATION"


def test_new_generation_switches_atomically(tmp_path: Path) -> None:
    e = _engine(20)
    g1 = write_dir(tmp_path, e.to_snapshot())
    # a crashed writer leaves a partial generation behind: it is never read
    partial = tmp_path / ".tmp-gen-000002-1-1"
    partial.mkdir()
    (partial / "manifest.json").write_text("{")
    assert current_generation(tmp_path) == g1
    assert Engine.from_snapshot(read_dir(tmp_path)).doc_count == e.doc_count
    e.add_documents(_docs(3, seed=5)[:1])
    g2 = write_dir(tmp_path, e.to_snapshot())
    assert current_generation(tmp_path) == g2 and not g1.exists() and not partial.exists()


def test_snapshot_rejects_an_unknown_format_version(tmp_path: Path) -> None:
    gen = write_dir(tmp_path, _engine(5).to_snapshot())
    m = gen / "manifest.json"
    m.write_text(
        m.read_text().replace(f'"format_version": {FORMAT_VERSION}', '"format_version": 99')
    )
    with pytest.raises(MossError, match="format version 99"):
        read_dir(tmp_path)


def test_session_save_and_load_from_disk(tmp_path: Path) -> None:
    async def go() -> None:
        client = MossClient("proj/../x", "k", cache_path=str(tmp_path))
        s = await client.session("notes", model_id="custom")
        await s.add_docs(_docs(50))
        await s.save_to_disk()
        root = tmp_path / "sessions"
        assert [p.name for p in root.iterdir()] == ["proj%2F..%2Fx"]  # no path traversal
        other = await client.session("notes", model_id="custom", auto_load_on_init=False)
        assert await other.load_from_disk() == 50
        q = unit_vectors(1, DIM, 1)[0].tolist()
        a = await s.query("tiger", QueryOptions(embedding=q))
        b = await other.query("tiger", QueryOptions(embedding=q))
        assert [(d.id, d.score) for d in a.docs] == [(d.id, d.score) for d in b.docs]
        # a damaged snapshot raises DESERIALIZATION and leaves the session as it was
        gen = current_generation(root / "proj%2F..%2Fx" / "notes")
        assert gen is not None
        (gen / "vectors.f32").write_bytes(b"\0" * 8)
        await other.add_docs([DocumentInfo("extra", "x", None, [0.1] * DIM)])
        with pytest.raises(MossError) as err:
            await other.load_from_disk()
        assert err.value.code == "DESERIALIZATION" and other.doc_count == 51
        missing = await client.session("never-saved", model_id="custom")
        with pytest.raises(MossError) as err:
            await missing.load_from_disk()
        assert err.value.code == "DESERIALIZATION"

    asyncio.run(go())


def test_snapshot_data_shape_is_checked() -> None:
    bad = SnapshotData("custom", 4, ["a"], ["t"], [None], [None], np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError):
        pack(bad)
    assert os.sep  # keep the import used on every platform


# ------------------------------------------------------------------ format 2 and the container


def _graph_engine(n: int = 4500, deletes: int = 0) -> Engine:
    """An engine past the exact-search size, so it has an HNSW graph."""
    vecs = unit_vectors(n, DIM, 5)
    e = Engine("custom")
    e.add_documents(
        [DocumentInfo(f"g{i}", f"graph doc {i} river", None, vecs[i]) for i in range(n)]
    )
    e.wait_for_background_work()
    if deletes:
        e.delete([f"g{i}" for i in range(0, 10 * deletes, 10)])
    return e


def _hits(e: Engine) -> list[list[tuple[str, float]]]:
    out = []
    for q in unit_vectors(20, DIM, 77):
        r = e.query("river", QueryOptions(embedding=q, alpha=0.7, top_k=10))
        out.append([(d.id, round(d.score, 6)) for d in r.docs])
    return out


def test_pack_strips_the_graph_vectors_and_restores_them_bit_for_bit() -> None:
    e = _graph_engine()
    data = e.to_snapshot()
    assert "vec/graph" in data.arrays
    back = unpack(pack(data))
    assert "vec/graph_slot_row" not in back.arrays
    assert np.array_equal(back.arrays["vec/graph"], data.arrays["vec/graph"])
    # what the int8 copies would have cost travels as 4 bytes of slot -> row per node instead
    plain = pack(data, compress=False)
    n, dim = data.vectors.shape  # type: ignore[union-attr]
    assert len(plain) - len(pack(data)) >= n * (dim - 4)
    assert _hits(Engine.from_snapshot(back)) == _hits(e)


def test_pack_keeps_the_vectors_of_removed_graph_nodes() -> None:
    # Removed nodes keep their int8 copies in usearch's buffer while their rows are gone: those
    # slots match no row, travel as extra vectors, and the round trip stays bit for bit.
    from moss.snapshot import _vector_arrays
    from moss.vectors import strip_graph_vectors

    e = _graph_engine(deletes=50)
    data = e.to_snapshot()
    stripped = strip_graph_vectors(_vector_arrays(data.arrays), data.vectors)  # type: ignore[arg-type]
    assert int((stripped["graph_slot_row"] < 0).sum()) == len(stripped["graph_extra_vectors"]) > 0
    back = unpack(pack(data))
    assert np.array_equal(back.arrays["vec/graph"], data.arrays["vec/graph"])
    assert _hits(Engine.from_snapshot(back)) == _hits(e)


def test_compressed_container_is_smaller_and_damage_is_detected() -> None:
    data = _engine(300).to_snapshot()
    small, plain = pack(data), pack(data, compress=False)
    assert len(small) < len(plain)
    assert unpack(plain).texts == unpack(small).texts == data.texts
    # flip a byte inside the compressed docs/arrays sections: zlib or the CRC must catch it
    for pos in range(len(small) - 400, len(small), 37):
        bad = small[:pos] + bytes([small[pos] ^ 0xFF]) + small[pos + 1 :]
        with pytest.raises(MossError) as err:
            unpack(bad)
        assert err.value.code == "DESERIALIZATION"


def test_texts_stay_utf8_until_read(tmp_path: Path) -> None:
    e = Engine("custom")
    texts = ["ascii only", "Ελληνικά και 日本語 🙂", "", "tab\tand\nnewline"]
    e.add_documents([DocumentInfo(str(i), t, None, [1.0] * DIM) for i, t in enumerate(texts)])
    write_dir(tmp_path, e.to_snapshot())
    data = read_dir(tmp_path)
    from moss.texts import TextColumn

    assert isinstance(data.texts, TextColumn) and list(data.texts) == texts
    back = Engine.from_snapshot(data)
    assert [d.text for d in back.get_documents()] == texts
    back.add_documents([DocumentInfo("1", "changed", None, [1.0] * DIM)])  # an overlay edit
    assert [d.text for d in back.get_documents()][1] == "changed"
    assert list(read_dir(tmp_path).texts) == texts  # the file is untouched


def test_format_1_snapshots_still_load(tmp_path: Path) -> None:
    """A snapshot written by moss 0.1 (texts in docs.json, no index arrays) loads and answers."""
    import json
    import zlib

    docs = _docs(25)
    vecs = np.asarray([d.embedding for d in docs], dtype="<f4")
    files = {
        "docs.json": json.dumps(
            {"ids": [d.id for d in docs], "texts": [d.text for d in docs],
             "metadata": [d.metadata for d in docs], "payloads": [d.payload for d in docs]}
        ).encode(),
        "vectors.f32": vecs.tobytes(),
        "arrays.bin": b"",
    }  # fmt: skip
    manifest = {
        "format": "moss-snapshot", "format_version": 1, "model_id": "custom", "dimension": DIM,
        "doc_count": len(docs), "model": None, "arrays": {}, "extra": {},
        "files": {k: {"size": len(v), "crc32": zlib.crc32(v)} for k, v in files.items()},
    }  # fmt: skip
    gen = tmp_path / "gen-000001"
    gen.mkdir()
    for name, body in {**files, "manifest.json": json.dumps(manifest).encode()}.items():
        (gen / name).write_bytes(body)
    (tmp_path / "CURRENT").write_text("gen-000001\n")
    old = Engine.from_snapshot(read_dir(tmp_path))
    fresh = Engine("custom")
    fresh.add_documents(docs)
    assert _answers(old) == _answers(fresh)


def test_texts_stay_readable_after_their_generation_is_replaced(tmp_path: Path) -> None:
    e = _engine(50)
    write_dir(tmp_path, e.to_snapshot())
    old_gen = current_generation(tmp_path)
    loaded = Engine.from_snapshot(read_dir(tmp_path))
    write_dir(tmp_path, loaded.to_snapshot())  # a new generation; the old one is deleted
    assert old_gen is not None and not old_gen.exists()
    assert [d.text for d in loaded.get_documents()] == [d.text for d in e.get_documents()]
    assert _answers(loaded) == _answers(e)

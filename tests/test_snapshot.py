"""Snapshots: round trip, damage detection that changes nothing, atomic generations, containers."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest

from moss import DocumentInfo, MossClient, MossError, QueryOptions
from moss.engine import Engine
from moss.snapshot import SnapshotData, current_generation, pack, read_dir, unpack, write_dir

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
    m.write_text(m.read_text().replace('"format_version": 1', '"format_version": 99'))
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

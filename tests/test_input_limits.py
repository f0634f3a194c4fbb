"""Document-input limits of ``moss serve`` (``moss.input_limits``): JSON values counted before
``json.loads``, documents per batch, metadata keys, embedding length, text bytes — each a 413
naming the limit, nothing stored — while in-process sessions stay uncapped. Real HTTP on
127.0.0.1 (uvicorn in a thread)."""

from __future__ import annotations

import base64
import json
import os
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from moss import DocumentInfo, MossClient
from moss.cloud.wire import encode_batch
from moss.errors import InvalidArgumentError
from moss.input_limits import (
    UPLOAD_BYTES_PER_VALUE,
    InputLimitError,
    InputLimits,
    count_json_values,
    enforced,
    for_upload,
)
from moss.server.limits import Limits
from moss.server.testing import ThreadedServer
from moss.snapshot import SnapshotData, pack, unpack


def _nodes(obj: Any) -> int:
    """Values and keys of a parsed JSON document (the naive reference)."""
    if isinstance(obj, dict):
        return 1 + sum(1 + _nodes(v) for v in obj.values())
    if isinstance(obj, list):
        return 1 + sum(_nodes(v) for v in obj)
    return 1


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(7 if depth < 4 else 4)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -3, 1.5e10, 12345])
    if kind in (2, 3):
        return "".join(rng.choice('ab,:[{"\\\u00e9 ') for _ in range(rng.randrange(6)))
    if kind in (4, 5):
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {f"k{i}": _random_json(rng, depth + 1) for i in range(rng.randrange(5))}


def _exact(raw: bytes) -> int:
    """Strings plus the structure bytes outside them, plus one (the reference count)."""
    rest, strings = re.subn(rb'"(?:[^"\\]|\\.)*"', b"", raw)
    return strings + sum(rest.count(c) for c in (b"[", b"{", b",", b":")) + 1


def test_count_bounds_the_values_and_decides_like_an_exact_count() -> None:
    rng = random.Random(12)
    for _ in range(300):
        raw = json.dumps(_random_json(rng)).encode()
        truth, exact = _nodes(json.loads(raw)), _exact(raw)
        assert truth <= exact <= 2 * truth + 1, raw
        assert count_json_values(raw) >= exact
        for at_most in {0, truth - 1, truth, exact - 1, exact, exact + 3}:
            got = count_json_values(raw, at_most)
            assert got >= exact and (got <= at_most) == (exact <= at_most), (raw, at_most)
    assert count_json_values(b"[" + b"[]," * 1000 + b"[]]") == 2003  # 1002 lists
    # Commas inside strings inflate the quick count only; the limit sees through them.
    text = json.dumps(["a, b: c [d] {e}" * 50] * 10).encode()
    assert count_json_values(text) > 1000 and count_json_values(text, at_most=21) == 21


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64])
def test_the_exact_count_carries_state_across_chunks(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Backslash runs and strings that straddle the chunks of the exact pass count as if whole."""
    import moss.input_limits as il

    monkeypatch.setattr(il, "_CHUNK", chunk)
    monkeypatch.setattr(il, "_VISITS", 0)  # straight to the bulk count
    rng = random.Random(chunk)
    for _ in range(200):
        raw = json.dumps(_random_json(rng)).encode()
        assert count_json_values(raw, 0) == _exact(raw), raw
    items = (
        ["\\" * k for k in range(5)]
        + ["\\" * k + '"' for k in range(4)]
        + [",:[{", "a" + "\\" + ",b"]
    )
    tricky = json.dumps(items * 3).encode()  # runs of 0-4 backslashes, escaped quotes
    assert count_json_values(tricky, 0) == _exact(tricky) == 33 + 33 + 1


def test_no_limits_outside_a_server_context() -> None:
    meta = [{f"k{i}": "v" for i in range(5000)}]
    data = SnapshotData(
        model_id="custom", dimension=4, ids=["a"], texts=["x" * 100_000], metadata=meta,
        payloads=[None], vectors=np.ones((1, 4), np.float32),
    )  # fmt: skip
    blob = pack(data)
    assert unpack(blob).metadata == meta  # in process: no cap
    with enforced(InputLimits(max_json_values=1000)), pytest.raises(InputLimitError) as err:
        unpack(blob)
    assert err.value.detail == "max_json_values" and err.value.code == "INVALID_ARGUMENT"
    assert "MOSS_MAX_JSON_VALUES" in str(err.value)


async def test_sessions_are_not_capped_but_refuse_invalid_values() -> None:
    session = await MossClient("p", "k").session("s", model_id="custom")
    meta = {f"k{i}": str(i) for i in range(2000)}  # over the server's default of 1024
    await session.add_docs([DocumentInfo("a", "x" * (1 << 20), meta, [1.0, 0.0, 0.0])])
    assert (await session.get_docs())[0].metadata == meta
    with pytest.raises(InvalidArgumentError):
        await session.add_docs([DocumentInfo("b", "t", None, [float("nan"), 0.0, 0.0])])
    with pytest.raises(InvalidArgumentError):
        await session.add_docs([{"id": "c", "text": 5}])
    assert [d.id for d in await session.get_docs()] == ["a"]


SMALL = {
    "max_json_values": 400,
    "max_batch_docs": 5,
    "max_metadata_keys": 3,
    "max_embedding_dim": 8,
    "max_doc_text_bytes": 100,
    "max_batch_text_bytes": 300,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    with ThreadedServer(tmp_path_factory.mktemp("srv"), auth_failures_burst=1000, **SMALL) as s:
        yield s


def _headers(s: ThreadedServer) -> dict[str, str]:
    return {"X-Moss-Project-Id": s.project[0], "Authorization": f"Bearer {s.project[1]}"}


def _batch(n: int, *, keys: int = 1, text: int = 10, dim: int = 4) -> bytes:
    vecs = np.random.default_rng(n).standard_normal((n, dim)).astype(np.float32)
    docs = [
        DocumentInfo(f"d{i}", "t" * text, {f"k{j}": "v" for j in range(keys)}) for i in range(n)
    ]
    return encode_batch(docs, "custom", vecs)


def _push(n: int, payloads: list[str | None] | None = None) -> bytes:
    return pack(
        SnapshotData(
            model_id="custom",
            dimension=4,
            ids=[f"d{i}" for i in range(n)],
            texts=["t"] * n,
            metadata=[None] * n,
            payloads=payloads or [None] * n,
            vectors=np.ones((n, 4), np.float32),
        )
    )


CREATE = "/v1/indexes/{}?model_id=custom"
PUSH = "/v1/indexes/{}/snapshot"


@pytest.mark.parametrize(
    ("limit", "route", "body"),
    [
        ("max_batch_docs", CREATE, _batch(6)),
        ("max_metadata_keys", CREATE, _batch(2, keys=4)),
        ("max_embedding_dim", CREATE, _batch(2, dim=16)),
        ("max_doc_text_bytes", CREATE, _batch(2, text=101)),
        ("max_batch_text_bytes", CREATE, _batch(4, text=90)),
        ("max_json_values", PUSH, _push(200)),  # ~4 values per document in docs.json
    ],
)
def test_each_limit_is_a_413_naming_it_and_stores_nothing(
    server: ThreadedServer, limit: str, route: str, body: bytes
) -> None:
    h = _headers(server)
    name = "idx-" + limit.replace("_", "-")
    method = "PUT" if route == PUSH else "POST"
    r = httpx.request(method, server.url + route.format(name), content=body, headers=h)
    assert r.status_code == 413, r.text
    err = r.json()["error"]
    assert err["code"] == "INVALID_ARGUMENT" and err["detail"] == limit
    assert limit in err["message"] and f"MOSS_{limit.upper()}" in err["message"]
    assert httpx.get(f"{server.url}/v1/indexes/{name}", headers=h).status_code == 404


def test_within_the_limits_is_accepted(server: ThreadedServer) -> None:
    h = _headers(server)
    body = _batch(5, keys=3, text=60)
    r = httpx.post(f"{server.url}/v1/indexes/ok?model_id=custom", content=body, headers=h)
    assert r.status_code == 200, r.text
    job = httpx.get(f"{server.url}/v1/jobs/{r.json()['job_id']}?wait=20", headers=h).json()
    assert job["status"] == "completed", job
    # add_docs goes through the same checks; a push (a whole index) has no document cap.
    r = httpx.post(f"{server.url}/v1/indexes/ok/docs", content=_batch(6), headers=h)
    assert r.status_code == 413 and r.json()["error"]["detail"] == "max_batch_docs"
    assert httpx.put(f"{server.url}/v1/indexes/pushed/snapshot", content=_push(50), headers=h)
    # Payloads full of JSON punctuation are single strings: they do not count as values.
    payload = json.dumps(["x"] * 100)
    docs = [DocumentInfo(f"p{i}", "t", None, payload=payload) for i in range(5)]
    body = encode_batch(docs, "custom", np.ones((5, 4), np.float32))
    r = httpx.post(f"{server.url}/v1/indexes/ok/docs", content=body, headers=h)
    assert r.status_code == 200, r.text


def test_json_bodies_are_counted_before_parsing(server: ThreadedServer) -> None:
    h = _headers(server)
    url = f"{server.url}/v1/indexes/ok/docs/delete"
    r = httpx.post(url, content=b'{"ids": [' + b"[]," * 500 + b"[]]}", headers=h)
    assert r.status_code == 413 and r.json()["error"]["detail"] == "max_json_values"
    r = httpx.post(url, json={"ids": ["a, b: [c] {d}" * 40]}, headers=h)  # structure in a string
    assert r.status_code == 200, r.text


def test_defaults_match_the_documented_table() -> None:
    lim = Limits()
    assert lim.input_limits() == InputLimits()
    assert Limits(max_json_values=0).input_limits().max_json_values is None  # 0: unlimited
    doc = (Path(__file__).resolve().parents[1] / "docs" / "security.md").read_text()
    for name in SMALL:
        assert f"`{name}`" in doc, name


async def test_a_cache_path_with_an_over_long_name_is_the_callers_error(tmp_path: Path) -> None:
    """Found by benchmarks/fuzz_api.py: ENAMETOOLONG was INTERNAL (a server's 500 class)."""
    session = await MossClient("p", "k").session("s", model_id="custom")
    await session.add_docs([DocumentInfo("a", "x", None, [1.0, 0.0])])
    with pytest.raises(InvalidArgumentError, match="too long"):
        await session.save_to_disk(str(tmp_path / ("n" * 300)))
    await session.save_to_disk(str(tmp_path / "fine"))
    assert (tmp_path / "fine").is_dir()


def test_a_large_upload_may_hold_more_json_values(server: ThreadedServer) -> None:
    """The value cap grows with the upload (one value per 16 bytes received), so a big index
    can be pushed; the small body of _push(200), with as many values, is still refused."""
    n = 200
    payloads: list[str | None] = [base64.b64encode(os.urandom(450)).decode() for _ in range(n)]
    body = _push(n, payloads)  # payloads incompressible: a big upload
    assert len(body) // UPLOAD_BYTES_PER_VALUE > 4 * n > SMALL["max_json_values"]
    h = _headers(server)
    r = httpx.put(f"{server.url}/v1/indexes/big-push/snapshot", content=body, headers=h)
    assert r.status_code == 200, r.text
    job = httpx.get(f"{server.url}/v1/jobs/{r.json()['job_id']}?wait=20", headers=h).json()
    assert job["status"] == "completed", job
    r = httpx.put(f"{server.url}/v1/indexes/small-push/snapshot", content=_push(n), headers=h)
    assert r.status_code == 413 and r.json()["error"]["detail"] == "max_json_values"


def test_the_upload_allowance_scales_with_its_size_up_to_a_ceiling() -> None:
    base = InputLimits()
    assert base.max_json_values == 8_000_000
    assert for_upload(base, 2 << 20) == base  # small uploads: the fixed count
    assert for_upload(base, 272 << 20).max_json_values == (272 << 20) // 16  # 17.8 M
    assert for_upload(base, 4 << 30).max_json_values == 32_000_000  # 4x, not 268 M
    assert for_upload(InputLimits(max_json_values=None), 4 << 30).max_json_values is None

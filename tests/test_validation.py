"""The shared input checks (moss.validation) at the public boundary, and names as paths.

Every example of issue 12's fuzzer report is reproduced here as a call that must now raise
``InvalidArgumentError`` (or a typed ``MossError`` for OS failures) and change nothing. The
indexes use caller-supplied vectors (``model_id="custom"``) so no model is needed.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from moss import (
    Chunking,
    DocumentInfo,
    GetDocumentsOptions,
    InvalidArgumentError,
    MossClient,
    MossError,
    MutationOptions,
    ParentGrouping,
    QueryOptions,
)
from moss.session import safe_path_component
from moss.validation import (
    check_cache_path,
    check_doc_ids,
    check_documents,
    check_number,
    check_string,
    json_depth,
    safe_repr,
    validate_index_name,
)


def _docs(n: int = 3, dim: int = 4) -> list[DocumentInfo]:
    return [
        DocumentInfo(str(i), f"text {i}", {"team": "a", "n": str(i)}, [1.0 + i, 0.5, 0.0, 1.0])
        for i in range(n)
    ][:n]


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def _with_index(tmp_path: Path, body: Callable[[MossClient, Any], Awaitable[None]]) -> None:
    async with MossClient("proj", "key", cache_path=str(tmp_path)) as client:
        await client.create_index("idx", _docs())
        session = await client.session("sess", model_id="custom")
        await session.add_docs(_docs())
        await body(client, session)


async def _unchanged(client: MossClient, session: Any, call: Awaitable[Any]) -> str:
    before = (await client.get_docs("idx"), (await client.get_index("idx")).version)
    before_s = await session.get_docs()
    with pytest.raises(InvalidArgumentError) as info:
        await call
    assert (await client.get_docs("idx"), (await client.get_index("idx")).version) == before
    assert await session.get_docs() == before_s
    return str(info.value)


# --------------------------------------------------------------------------------------------
# The issue's examples


def test_issue_examples_are_invalid_argument_and_change_nothing(tmp_path: Path) -> None:
    async def body(client: MossClient, s: Any) -> None:
        cases: list[tuple[Awaitable[Any], str]] = [
            (client.delete_docs("idx", None), "doc_ids must be a list of strings"),  # type: ignore[arg-type]
            (s.delete_docs(None), "doc_ids must be a list of strings"),
            (client.add_docs("idx", "[" * 100_000), "nested too deeply"),
            (s.add_docs("[" * 100_000), "nested too deeply"),
            (s.add_docs('{"id": "1", "text": "x", "payload": ' + "[" * 100_000), "too deeply"),
            (client.get_docs("idx", GetDocumentsOptions(doc_ids=5)), "doc_ids"),  # type: ignore[arg-type]
            (s.get_docs(GetDocumentsOptions(doc_ids=5)), "doc_ids"),  # type: ignore[arg-type]
            (client.get_docs("idx", GetDocumentsOptions(sort_by={})), "sort_by"),  # type: ignore[arg-type]
            (s.get_docs(GetDocumentsOptions(sort_by={})), "sort_by"),  # type: ignore[arg-type]
            (s.get_docs(GetDocumentsOptions(group_by=ParentGrouping({}, "n"))), "parent_field"),  # type: ignore[arg-type]
            (
                s.query("x", QueryOptions(embedding=[1, 0, 0, 0], group_by=ParentGrouping("p", 3))),  # type: ignore[arg-type]
                "order_field",
            ),
            (client.get_index("a\udc80"), "surrogate"),
            (
                client.add_docs("idx", [DocumentInfo("9", "t", {"k\udc80": "v"}, [1, 1, 1, 1])]),
                "surrogate",
            ),
            (s.add_docs([DocumentInfo("9", "t", {"k\udc80": "v"}, [1, 1, 1, 1])]), "surrogate"),
            (s.add_docs([DocumentInfo("\udc80", "t", None, [1, 1, 1, 1])]), "surrogate"),
            (s.add_docs([DocumentInfo("9", "t\ud800", None, [1, 1, 1, 1])]), "surrogate"),
            (
                client.wait_for_job("job", poll_interval_seconds=-(10**5000)),
                "poll_interval_seconds must be a finite number",
            ),
            (client.wait_for_job("job", timeout_seconds=math.inf), "finite"),
            (client.wait_for_job("job", poll_interval_seconds=math.nan), "finite"),
            (client.load_index("idx", cache_path=5), "cache_path must be a str"),  # type: ignore[arg-type]
            (client.load_index("idx", auto_refresh="yes"), "auto_refresh"),  # type: ignore[arg-type]
            (client.load_index("idx", polling_interval_in_seconds=0), "must be > 0"),
            (client.load_indexes([["idx"]]), "index names"),  # type: ignore[list-item]
            (client.add_docs("idx", _docs(), MutationOptions(upsert=1)), "upsert"),  # type: ignore[arg-type]
            (s.add_docs('[{"id": ' + "9" * 5000 + ', "text": "t"}]'), "cannot be read as JSON"),
            (s.add_docs([{"id": 10**200, "text": "t"}]), "too large"),
            (s.add_docs([DocumentInfo("9", "t", None, [10**400, 1, 1, 1])]), "sequence of numbers"),
            (client.query_multi_index([[1] * 3, "idx"], "q"), "index name"),  # type: ignore[list-item]
        ]
        for call, expected in cases:
            message = await _unchanged(client, s, call)
            assert expected in message, (expected, message)
            assert len(message) < 400 and "\n" not in message

    run(_with_index(tmp_path, body))


def test_a_rejected_batch_stores_none_of_it(tmp_path: Path) -> None:
    """The third document is bad: neither the cloud index nor the session keeps the first two."""
    bad = [*_docs(2), DocumentInfo("x", "t", {"ok": "v", "k": "\udcff"}, [1, 1, 1, 1])]

    async def body(client: MossClient, s: Any) -> None:
        await _unchanged(client, s, client.add_docs("idx", bad))
        await _unchanged(client, s, s.add_docs(bad))

    run(_with_index(tmp_path, body))


def test_option_objects_are_checked_after_mutation(tmp_path: Path) -> None:
    """Option objects are mutable: the boundary check, not the constructor, is what counts."""
    chunking = Chunking(chunk_size=300)
    chunking.chunk_size = -(10**5000)
    with pytest.raises(InvalidArgumentError, match="Unsupported chunk_size <an integer of"):
        chunking.__post_init__()
    opts = QueryOptions(top_k=3)
    opts.top_k = 2**70  # type: ignore[assignment]

    async def body(client: MossClient, s: Any) -> None:
        await _unchanged(client, s, s.query("q", opts))
        await _unchanged(client, s, client.query("idx", "q", QueryOptions(fusion={})))  # type: ignore[arg-type]
        await _unchanged(client, s, client.add_docs("idx", _docs(), chunking=chunking))

    run(_with_index(tmp_path, body))


def test_valid_calls_still_work(tmp_path: Path) -> None:
    """The stricter checks refuse nothing that was valid: a reference of accepted forms."""

    async def body(client: MossClient, s: Any) -> None:
        opts = GetDocumentsOptions(doc_ids=("1", "2"), sort_by="n", ascending=False)
        assert [d.id for d in await s.get_docs(opts)] == ["2", "1"]
        assert [d.id for d in await client.get_docs("idx", opts)] == ["2", "1"]
        assert await s.delete_docs(i for i in ["0", "missing"]) == 1  # a generator, once
        assert (await client.delete_docs("idx", iter(["0"]))).doc_count == 1  # ids sent
        hits = await s.query("", QueryOptions(embedding=[1.0, 0.5, 0.0, 1.0], top_k=1))
        assert len(hits.docs) == 1
        for huge in (10**8, 2**61):  # was a MemoryError / ValueError sizing an output buffer
            hits = await s.query("text", QueryOptions(embedding=[1, 0, 0, 0], top_k=huge))
            assert [d.id for d in hits.docs] == ["2", "1"]
        await s.add_docs(
            '[{"id": 7, "text": "é ünïcode ✓", "metadata": {"n": 3}, "embedding": [1, 1, 1, 1]}]'
        )
        assert (await s.get_docs(GetDocumentsOptions(doc_ids=["7"])))[0].metadata == {"n": "3"}

    async def custom(client: MossClient, s: Any) -> None:
        await body(client, s)

    run(_with_index(tmp_path, custom))


# --------------------------------------------------------------------------------------------
# Names as paths


def test_short_names_map_to_the_same_directory_as_before() -> None:
    """The mapping of every name that fitted is unchanged, so existing snapshots are found."""
    old_safe = " -_.~+=,@()[]{}!$&'"
    for name in ["notes", "a b", "notes/2024", "x%y", "é" * 42, "a" * 255, "日本語", "~#?"]:
        assert safe_path_component(name) == quote(name, safe=old_safe)
    assert safe_path_component("..") == "%2E%2E"


def test_long_names_hash_into_one_component() -> None:
    long_names = ["é" * 128, "a" * 256, "💥" * 64, "p" * 300, "p" * 299 + "q", "%" * 200]
    out = [safe_path_component(n) for n in long_names]
    assert len(set(out)) == len(out)  # distinct
    assert out == [safe_path_component(n) for n in long_names]  # deterministic
    for name, comp in zip(long_names, out):
        assert len(comp.encode()) <= 255 and "/" not in comp and "#" in comp
        assert comp.startswith(quote(name, safe="")[:20][: comp.index("#")][:10])
    # '#' is always percent-encoded in a short name: a hashed name never equals one
    assert safe_path_component(out[0]) != out[0]


def test_valid_long_names_and_project_ids_round_trip_on_disk(tmp_path: Path) -> None:
    """Valid 256-byte names and a 300-character project id save, load and list (was ENAMETOOLONG)."""

    async def main() -> None:
        async with MossClient("p" * 300, "k", cache_path=str(tmp_path)) as client:
            name = "é" * 128
            assert validate_index_name(name) == name
            await client.create_index(name, _docs())
            assert [i.name for i in await client.list_indexes()] == [name]
            assert await client.load_index(name) == name
            s = await client.session(name)
            await s.save_to_disk()
            assert await s.load_from_disk() == 3
        async with MossClient("p" * 300, "k", cache_path=str(tmp_path)) as again:
            assert [i.name for i in await again.list_indexes()] == [name]

    run(main())


def test_os_failures_are_typed(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")

    async def main() -> None:
        async with MossClient("p", "k", cache_path=str(blocker / "under")) as client:
            with pytest.raises(MossError) as info:
                await client.create_index("idx", _docs())
            assert info.value.code == "INTERNAL" and "Not a directory" in str(info.value)
        long_root = str(tmp_path / ("a" * 300))
        async with MossClient("p", "k", cache_path=long_root) as client:
            for call in (client.list_indexes(), client.load_index("idx")):
                with pytest.raises(MossError) as info:
                    await call
                assert info.value.code == "INTERNAL"
        async with MossClient("p", "k", cache_path=str(tmp_path / "ok")) as client:
            s = await client.session("s", model_id="custom")
            await s.add_docs(_docs())
            with pytest.raises(MossError) as info:
                await s.save_to_disk(long_root)
            assert info.value.code == "INVALID_ARGUMENT" and "too long" in str(info.value)
            with pytest.raises(MossError) as info:
                await s.load_from_disk(long_root)
            assert info.value.code == "DESERIALIZATION"
            with pytest.raises(InvalidArgumentError, match="NUL"):
                await s.save_to_disk(str(tmp_path / "a\x00b"))

    run(main())


# --------------------------------------------------------------------------------------------
# The validators themselves


def test_validators() -> None:
    assert check_number(2, "x", minimum=0) == 2.0
    for bad in (True, "1", None, math.nan, math.inf, -(10**5000), 10**400):
        with pytest.raises(InvalidArgumentError):
            check_number(bad, "x", minimum=0)
    with pytest.raises(InvalidArgumentError, match="x must be > 0, got 0"):
        check_number(0, "x", minimum=0, exclusive=True)
    assert check_doc_ids(("a", "b")) == ["a", "b"]
    for bad_ids in ("ab", b"ab", {"a": 1}, 5, ["a", None], ["\udc80"]):
        with pytest.raises(InvalidArgumentError):
            check_doc_ids(bad_ids)
    assert check_string("é", "s") == "é"
    with pytest.raises(InvalidArgumentError, match="lone surrogate"):
        check_string("a\ud800", "s")
    assert check_cache_path(Path("/tmp/x")) == "/tmp/x"
    for bad_path in (5, "", "a\x00b", "x\ud938"):
        with pytest.raises(InvalidArgumentError):
            check_cache_path(bad_path)
    assert safe_repr(10**5000).startswith("<an integer of")
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    assert len(safe_repr(deep)) <= 80
    with pytest.raises(InvalidArgumentError, match="surrogate"):
        validate_index_name("a\udc80")
    with pytest.raises(InvalidArgumentError, match="at most 256 bytes"):
        validate_index_name("é" * 129)


def test_client_constructor_checks() -> None:
    for args in [(None, "k"), ("", "k"), ("p\udc80", "k"), ("p", None), ("p", "k\udc80")]:
        with pytest.raises(InvalidArgumentError):
            MossClient(*args)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        MossClient("p", "k", cache_path=5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        MossClient("p", "k", server_url=["x"])  # type: ignore[arg-type]


def test_check_documents_for_decoded_uploads() -> None:
    """What the server runs on documents it decoded itself (JSON can carry "\\udc80")."""
    check_documents([DocumentInfo("1", "é", {"k": "v"}, None, "p")])
    for bad in (
        DocumentInfo("", "t"),
        DocumentInfo("\udc80", "t"),
        DocumentInfo("1", "t\ud800"),
        DocumentInfo("1", "t", {"k": "\udc80"}),
        DocumentInfo("1", "t", {"\udc80": "v"}),
        DocumentInfo("1", "t", None, None, "\udc80"),
        DocumentInfo("1", None),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidArgumentError):
            check_documents([DocumentInfo("0", "fine"), bad])


def test_filter_depth_matches_the_server_limit(tmp_path: Path) -> None:
    """get_docs sends its filter to the server, whose request bodies nest at most 64 deep: a
    session refuses the same filters, and accepts the ones the server accepts."""

    def nested(levels: int) -> dict[str, Any]:
        f: dict[str, Any] = {"field": "team", "condition": {"$eq": "a"}}
        for _ in range(levels):
            f = {"$and": [f]}
        return f

    ok, deep = nested(30), nested(31)  # 2 + 2*30 = 62 levels; 64 levels
    assert json_depth(ok, 100) == 62 and json_depth(deep, 100) == 64

    async def body(client: MossClient, s: Any) -> None:
        assert len(await s.get_docs(GetDocumentsOptions(filter=ok))) == 3
        assert len(await client.get_docs("idx", GetDocumentsOptions(filter=ok))) == 3
        for call in (
            s.get_docs(GetDocumentsOptions(filter=deep)),
            client.get_docs("idx", GetDocumentsOptions(filter=deep)),
        ):
            assert "nested too deeply" in await _unchanged(client, s, call)
        # a query runs here only: any depth the compiler manages, else InvalidArgumentError
        hits = await s.query("", QueryOptions(embedding=[1, 0, 0, 0], filter=nested(2000)))
        assert len(hits.docs) == 3

    run(_with_index(tmp_path, body))

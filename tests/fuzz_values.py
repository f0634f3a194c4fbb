"""Hostile argument values and hypothesis strategies for the API fuzzer (tests/test_fuzz_api.py).

Kept apart from the fuzzer so each file stays readable: this one says *what* is thrown at the
API (special strings, numbers and objects, option objects with hostile fields, document
batches), the fuzzer says *where* and what must hold.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from moss import (
    Chunking,
    DocumentInfo,
    GetDocumentsOptions,
    MutationOptions,
    ParentGrouping,
    QueryOptions,
)

# --------------------------------------------------------------------------------------------
# Hostile values

SPECIAL_STRINGS = [
    "",
    " ",
    ".",
    "..",
    "/",
    "a/b",
    "../../etc",
    "\x00",
    "a\x00b",
    "\n",
    "\x7f",
    "\u0085",
    "\udc80",
    "x\ud800y",
    "é" * 128,  # a valid 256-byte name, 768 bytes percent-encoded
    "a" * 256,
    "a" * 257,
    "p" * 300,
    "💥" * 64,
    "[" * 3000,
    "{" * 3000,
    '{"id": "1", "text": "t", "payload": ' + "[" * 5000 + "]" * 5000 + "}",
    '[{"id": ' + "9" * 5000 + ', "text": "t"}]',
    '[{"id": "1", "text": "t", "metadata": {"k": ' + "1" * 5000 + "}}]",
    '{"id": "1", "text": "t", "metadata": {"k\\udc80": "v"}}',
    '[{"id": "\\udc80", "text": "t"}]',
    '{"id": "2", "text": "good", "metadata": {"team": "a"}}',
    "idx",
    "sess",
    "other",
    "moss-minilm",
    "custom",
    "score",
    "rrf",
    "pages",
    "sentences",
]

SPECIAL_NUMBERS: list[Any] = [
    -(10**5000),
    10**5000,
    2**63,
    2**61,
    2**40,
    -(2**63),
    10**30,
    -1,
    0,
    1,
    3,
    200,
    0.5,
    -0.0,
    1e-300,
    1e308,
    math.nan,
    math.inf,
    -math.inf,
    True,
    False,
]


def _nested(depth: int, dict_kind: bool) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"k": value} if dict_kind else [value]
    return value


class _Weird:
    """An object no check expects: unhashable, unorderable, its str() raises."""

    __hash__ = None  # type: ignore[assignment]

    def __str__(self) -> str:
        raise ValueError("no str")

    __repr__ = object.__repr__


SPECIAL_OBJECTS: list[Any] = [
    None,
    b"",
    b"\xff\xfe",
    bytearray(b"[]"),
    [],
    {},
    (),
    set(),
    [None],
    [1, 2],
    ["a", 1],
    {"a": 1},
    {1: "a"},
    {"field": "team", "condition": {"$eq": "a"}},
    {"$and": [{"field": "team", "condition": {"$eq": "a"}}]},
    {"field": "team", "condition": {"$in": [1, None, {}]}},
    {"field": "n", "condition": {"$gt": math.nan}},
    {"field": {}, "condition": {"$eq": "a"}},
    {"$or": [_nested(1500, True)]},
    _nested(3000, False),
    _nested(3000, True),
    object(),
    _Weird(),
    print,
    lambda text: [text],
    lambda text: None,
    lambda text: ["\udc80"],
    Path("nowhere.txt"),
    Path("bad.exe"),
    [Path("nowhere.json")],
]


class _Index:
    """``values[i]`` with a short repr (hypothesis prints strategies; ``10**5000`` has none)."""

    def __init__(self, values: list[Any]) -> None:
        self.values = values

    def __call__(self, i: int) -> Any:
        return self.values[i]

    def __repr__(self) -> str:
        return f"<{len(self.values)} special values>"


def _pick(values: list[Any]) -> st.SearchStrategy[Any]:
    """One of ``values``, drawn by index."""
    return st.integers(0, len(values) - 1).map(_Index(values))


atoms: st.SearchStrategy[Any] = st.one_of(
    _pick(SPECIAL_STRINGS),
    _pick(SPECIAL_NUMBERS),
    _pick(SPECIAL_OBJECTS),
    st.text(max_size=8),
    st.text(st.characters(codec=None, categories=["Cs", "Cc", "Lo", "Nd"]), max_size=6),
    st.integers(),
    st.floats(),
    st.binary(max_size=8),
)
hostile: st.SearchStrategy[Any] = st.recursive(
    atoms,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
names = st.one_of(st.sampled_from(["idx", "sess", "other", "fresh"]), hostile)
vectors = st.one_of(
    st.lists(st.floats(width=32), min_size=1, max_size=4), st.just([0.1] * 384), hostile
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``None``, a well-formed value from ``strategy``, or a hostile one."""
    return st.one_of(st.none(), strategy, hostile)


groupings = st.one_of(
    st.builds(
        ParentGrouping, st.one_of(st.just("team"), hostile), st.one_of(st.just("n"), hostile)
    ),
    hostile,
)
query_options = st.one_of(
    st.none(),
    hostile,
    st.builds(
        QueryOptions,
        embedding=maybe(vectors),
        top_k=maybe(st.integers(-2, 20)),
        alpha=maybe(st.floats(0, 1)),
        filter=maybe(_pick(SPECIAL_OBJECTS[13:19])),
        group_by=st.one_of(st.none(), groupings),
        min_score=maybe(st.floats(0, 1)),
        candidate_depth=maybe(st.integers(0, 50)),
        fusion=maybe(st.sampled_from(["score", "rrf"])),
    ),
)
get_options = st.one_of(
    st.none(),
    hostile,
    st.builds(
        GetDocumentsOptions,
        doc_ids=maybe(st.lists(st.sampled_from(["1", "2", "\udc80"]), max_size=3)),
        filter=maybe(_pick(SPECIAL_OBJECTS[13:19])),
        sort_by=maybe(st.just("team")),
        ascending=maybe(st.booleans()),
        group_by=st.one_of(st.none(), groupings),
    ),
)
mutation_options = st.one_of(
    st.none(), hostile, st.builds(MutationOptions, upsert=maybe(st.booleans()))
)


@st.composite
def chunkings(draw: st.DrawFn) -> Any:
    """A ``Chunking``, sometimes mutated after construction into an invalid state."""
    c = Chunking()
    if draw(st.booleans()):
        setattr(c, draw(st.sampled_from(["chunk_size", "chunk_overlap", "mode"])), draw(hostile))
    return c


chunking_arg = st.one_of(st.none(), st.none(), chunkings(), hostile)
chunker_arg = st.one_of(st.none(), st.none(), _pick(SPECIAL_OBJECTS[-6:-3]), hostile)

documents = st.builds(
    DocumentInfo,
    id=st.one_of(st.sampled_from(["1", "2", "3"]), hostile),
    text=st.one_of(st.just("fresh text about apples"), hostile),
    metadata=maybe(st.just({"team": "a", "n": "1"})),
    embedding=st.one_of(st.none(), st.none(), vectors),
    payload=maybe(st.just("p")),
)
mappings = st.fixed_dictionaries(
    {"id": st.one_of(st.sampled_from(["1", "4", 5]), hostile)},
    optional={
        "text": st.one_of(st.just("a mapped text"), hostile),
        "metadata": hostile,
        "payload": hostile,
        "embedding": vectors,
    },
)
clean_docs = st.lists(
    st.builds(
        DocumentInfo,
        id=st.sampled_from(["1", "5", "6", "é/../x"]),
        text=st.text(max_size=30),
        metadata=st.none() | st.dictionaries(st.sampled_from(["team", "n"]), st.text(max_size=5)),
        payload=st.none() | st.text(max_size=5),
    ),
    min_size=1,
    max_size=3,
)
docs_arg = st.one_of(
    hostile,
    st.lists(documents, min_size=1, max_size=3),
    st.lists(mappings, min_size=1, max_size=3),
    st.lists(st.one_of(documents, mappings, hostile), min_size=1, max_size=3),
)

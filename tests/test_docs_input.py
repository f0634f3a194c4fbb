"""Tests of moss.docs_input.normalize_docs: every DocsInput form, coercion and error (§3.1, §3.13)."""

from __future__ import annotations

import gc
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from moss.chunking import chunk_text
from moss.docs_input import normalize_docs
from moss.errors import InvalidArgumentError
from moss.types import Chunking, DocumentInfo

FIXTURES = Path(__file__).parent / "fixtures" / "docs"


def as_tuples(docs: list[DocumentInfo]) -> list[tuple[Any, ...]]:
    return [(d.id, d.text, d.metadata, d.embedding, d.payload) for d in docs]


# --------------------------------------------------------------------------------------------
# DocumentInfo input


def test_document_info_copied_and_coerced() -> None:
    meta: dict[str, Any] = {"flag": True, "n": 30, "x": 30.0, "y": 1.5, "s": "v"}
    vec = [0.1, 0.2]
    given = [DocumentInfo("1", "one", meta, vec, "p"), DocumentInfo("2", "two")]
    out = normalize_docs(given)
    assert as_tuples(out) == [
        ("1", "one", {"flag": "true", "n": "30", "x": "30.0", "y": "1.5", "s": "v"}, vec, "p"),
        ("2", "two", None, None, None),
    ]
    assert out[0] is not given[0] and out[0].metadata is not meta
    assert out[0].embedding is vec  # passed through as given
    assert meta == {"flag": True, "n": 30, "x": 30.0, "y": 1.5, "s": "v"}  # caller's untouched
    assert given[0].metadata is meta


@pytest.mark.parametrize(
    ("doc", "pattern"),
    [
        (DocumentInfo(5, "t"), r"document 0: id must be a non-empty str"),  # type: ignore[arg-type]
        (DocumentInfo("", "t"), r"document 0: id must be a non-empty str"),
        (DocumentInfo("a", None), r"document 0 \(id 'a'\): text must be a str, not NoneType"),  # type: ignore[arg-type]
        (DocumentInfo("a", b"t"), r"text must be a str, not bytes"),  # type: ignore[arg-type]
        (DocumentInfo("a", "t", {"k": None}), r"document 0 \(id 'a'\): metadata value for 'k'"),  # type: ignore[dict-item]
        (DocumentInfo("a", "t", {"k": [1]}), r"metadata value for 'k'.*list"),  # type: ignore[dict-item]
        (DocumentInfo("a", "t", {"k": {"x": 1}}), r"metadata value for 'k'.*dict"),  # type: ignore[dict-item]
        (DocumentInfo("a", "t", ["k"]), r"metadata must be a dict"),  # type: ignore[arg-type]
        (DocumentInfo("a", "t", payload={"x": 1}), r"payload must be a str or None"),  # type: ignore[arg-type]
    ],
)
def test_document_info_invalid(doc: DocumentInfo, pattern: str) -> None:
    with pytest.raises(InvalidArgumentError, match=pattern):
        normalize_docs([doc])


def test_error_names_the_document_position() -> None:
    docs = [DocumentInfo("a", "t"), DocumentInfo("b", "t"), DocumentInfo("c", 3)]  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"^document 2 \(id 'c'\)"):
        normalize_docs(docs)


# --------------------------------------------------------------------------------------------
# Mapping input


def test_dicts_with_coercions() -> None:
    vec = [1.0, 2.0]
    raw: list[dict[str, Any]] = [
        {"id": 5, "text": "five", "metadata": {"ok": False, "age": 30}, "embedding": vec},
        {"id": "s", "text": "str", "payload": {"ünï": [1, 2.5, None], "b": True}, "zz": 1},
        {"id": "t", "text": "", "payload": "raw string", "metadata": None},
        {"id": "u", "text": "u", "payload": [1, "x"]},
        {"id": "v", "text": "v", "payload": 3},
    ]
    out = normalize_docs(raw)
    assert as_tuples(out) == [
        ("5", "five", {"ok": "false", "age": "30"}, vec, None),
        ("s", "str", None, None, '{"ünï":[1,2.5,null],"b":true}'),
        ("t", "", None, None, "raw string"),
        ("u", "u", None, None, '[1,"x"]'),
        ("v", "v", None, None, "3"),
    ]
    assert out[0].embedding is vec


@pytest.mark.parametrize(
    ("raw", "pattern"),
    [
        ({"text": "t"}, r"^document 0 has no 'id'$"),
        ({"id": "a"}, r"^document 0 \(id 'a'\) has no 'text'$"),
        ({"id": True, "text": "t"}, r"id must be a non-empty str \(or an int\), got True"),
        ({"id": 1.0, "text": "t"}, r"id must be a non-empty str \(or an int\), got 1.0"),
        ({"id": "", "text": "t"}, r"id must be a non-empty str"),
        ({"id": None, "text": "t"}, r"id must be a non-empty str"),
        ({"id": "a", "text": 5}, r"text must be a str, not int"),
        ({"id": "a", "text": None}, r"text must be a str, not NoneType"),
        ({"id": 9, "text": "t", "metadata": {"k": None}}, r"^document 0 \(id '9'\): metadata"),
        ({"id": "a", "text": "t", "metadata": {1: "x"}}, r"metadata keys must be strings"),
        ({"id": "a", "text": "t", "payload": {1, 2}}, r"payload is not JSON-serialisable"),
    ],
)
def test_dict_invalid(raw: dict[str, Any], pattern: str) -> None:
    with pytest.raises(InvalidArgumentError, match=pattern):
        normalize_docs([raw])


def test_bare_dict_rejected_with_exact_message() -> None:
    with pytest.raises(InvalidArgumentError) as e:
        normalize_docs({"id": "1", "text": "x"})  # type: ignore[arg-type]
    assert str(e.value) == "docs must be a list of documents, not a single dict"
    assert e.value.code == "INVALID_ARGUMENT" and isinstance(e.value, ValueError)


def test_single_document_info_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match="not a single DocumentInfo"):
        normalize_docs(DocumentInfo("1", "x"))  # type: ignore[arg-type]


def test_mixing_dicts_and_document_info_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match="mixes dicts with DocumentInfo"):
        normalize_docs([DocumentInfo("1", "x"), {"id": "2", "text": "y"}])  # type: ignore[arg-type]


def test_mixing_paths_and_documents_rejected(tmp_path: Path) -> None:
    p = tmp_path / "a.txt"
    p.write_text("hello")
    with pytest.raises(InvalidArgumentError, match="mixes file paths with documents"):
        normalize_docs([p, {"id": "2", "text": "y"}])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="mixes file paths with documents"):
        normalize_docs([DocumentInfo("1", "x"), p])  # type: ignore[arg-type]


@pytest.mark.parametrize("item", ["notes.md", b"x", 5, None, ["id", "text"]])
def test_other_items_rejected(item: object) -> None:
    with pytest.raises(InvalidArgumentError, match=r"docs item 1 must be a DocumentInfo"):
        normalize_docs([DocumentInfo("0", "x"), item])  # type: ignore[arg-type]


@pytest.mark.parametrize("docs", [42, None, 3.5, object()])
def test_non_iterable_rejected(docs: object) -> None:
    with pytest.raises(InvalidArgumentError, match="docs must be a list of DocumentInfo or dicts"):
        normalize_docs(docs)  # type: ignore[arg-type]


@pytest.mark.parametrize("empty", [[], (), iter([]), "", b"", "  \n\n ", "[]", "[ ]\n"])
def test_empty_input_gives_empty_list(empty: Any) -> None:
    assert normalize_docs(empty) == []


def test_generator_consumed_exactly_once() -> None:
    pulled: list[int] = []

    def gen() -> Iterator[dict[str, Any]]:
        for i in range(3):
            pulled.append(i)
            yield {"id": i, "text": f"t{i}"}

    g = gen()
    out = normalize_docs(g)
    assert [d.id for d in out] == ["0", "1", "2"] and pulled == [0, 1, 2]
    assert list(g) == []  # exhausted, not restarted

    class OnceOnly:
        calls = 0

        def __iter__(self) -> Iterator[DocumentInfo]:
            OnceOnly.calls += 1
            if OnceOnly.calls > 1:
                raise AssertionError("iterated twice")
            return iter([DocumentInfo("a", "x"), DocumentInfo("b", "y")])

    assert [d.id for d in normalize_docs(OnceOnly())] == ["a", "b"]
    assert OnceOnly.calls == 1


def test_generator_of_document_info_with_chunker() -> None:
    out = normalize_docs(
        (DocumentInfo(str(i), "a|b") for i in range(2)), chunker=lambda t: t.split("|")
    )
    assert [d.id for d in out] == ["0#0", "0#1", "1#0", "1#1"]


# --------------------------------------------------------------------------------------------
# str / bytes content


def test_str_json_array() -> None:
    text = json.dumps([{"id": 1, "text": "a", "metadata": {"n": 2}}, {"id": "b", "text": "β"}])
    assert as_tuples(normalize_docs(text)) == [
        ("1", "a", {"n": "2"}, None, None),
        ("b", "β", None, None, None),
    ]


def test_str_json_lines_skip_blank_lines() -> None:
    text = '\n{"id": 1, "text": "a"}\n\n   \n{"id": 2, "text": "b", "payload": {"k": "v"}}\r\n'
    assert as_tuples(normalize_docs(text)) == [
        ("1", "a", None, None, None),
        ("2", "b", None, None, '{"k":"v"}'),
    ]


def test_bytes_content_with_bom() -> None:
    data = '\ufeff[{"id": "x", "text": "héllo"}]'.encode()
    assert as_tuples(normalize_docs(data)) == [("x", "héllo", None, None, None)]
    data = '\ufeff{"id": "x", "text": "a"}\n{"id": "y", "text": "b"}'.encode()
    assert [d.id for d in normalize_docs(data)] == ["x", "y"]
    assert [d.id for d in normalize_docs(bytearray(data))] == ["x", "y"]  # type: ignore[arg-type]


def test_bytes_not_utf8() -> None:
    with pytest.raises(InvalidArgumentError, match=r"docs is not valid UTF-8 \(byte 14\)"):
        normalize_docs(b'[{"id": "x", "\xff": 1}]')


def test_bad_json_array_names_the_line() -> None:
    text = '[\n  {"id": 1, "text": "a"},\n  {"id": 2 "text": "b"}\n]'
    with pytest.raises(InvalidArgumentError, match=r"docs is not valid JSON \(line 3, column 12\)"):
        normalize_docs(text)


def test_bad_json_lines_names_the_line() -> None:
    text = '{"id": 1, "text": "a"}\n\n{"id": 2, "text": }\n'
    with pytest.raises(InvalidArgumentError, match=r"^docs line 3 is not valid JSON"):
        normalize_docs(text)
    with pytest.raises(InvalidArgumentError, match=r"^docs line 2 must be a JSON object, not list"):
        normalize_docs('{"id": 1, "text": "a"}\n[1]')
    with pytest.raises(InvalidArgumentError, match=r"array item 1 must be a JSON object, not int"):
        normalize_docs('[{"id": 1, "text": "a"}, 5]')
    with pytest.raises(InvalidArgumentError, match=r"^document 1 \(id '2'\) has no 'text'"):
        normalize_docs('{"id": 1, "text": "a"}\n{"id": 2}')


def test_str_is_never_a_file_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "docs.jsonl").write_text('{"id": 1, "text": "from file"}\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidArgumentError, match=r"docs line 1 is not valid JSON.*never a file"):
        normalize_docs("docs.jsonl")
    with pytest.raises(InvalidArgumentError, match="not valid JSON"):
        normalize_docs(b"docs.jsonl")


def test_pretty_printed_single_object_is_the_single_dict_error() -> None:
    with pytest.raises(InvalidArgumentError) as e:
        normalize_docs('{\n  "id": 1,\n  "text": "a"\n}')
    assert str(e.value) == "docs must be a list of documents, not a single dict"
    with pytest.raises(InvalidArgumentError, match=r"^docs line 1 must be a JSON object, not str"):
        normalize_docs('"x"')
    with pytest.raises(InvalidArgumentError, match=r"^docs: array item 0 must be a JSON object"):
        normalize_docs("[1]")


def test_json_line_with_single_object_is_one_document() -> None:
    assert [d.id for d in normalize_docs('{"id": 1, "text": "a"}')] == ["1"]


# --------------------------------------------------------------------------------------------
# Paths


def test_json_and_jsonl_fixture_files() -> None:
    out = normalize_docs([FIXTURES / "faq.jsonl", FIXTURES / "faq.json"])
    assert as_tuples(out) == [
        ("1", "How do I reset my password?", {"topic": "account", "views": "30"}, None, None),
        ("2", "Where is my order?", None, None, '{"url":"https://example.com/orders","λ":true}'),
        ("a", "Ships worldwide.", {"free": "true", "weight": "1.5"}, None, None),
        ("7", "Gift cards never expire.", None, None, None),
    ]


def test_markdown_fixture_file() -> None:
    path = FIXTURES / "returns.md"
    out = normalize_docs(path)
    name = str(path)
    assert as_tuples(out) == [
        (f"{name}#0", "Returns\nItems can be returned within 30 days of delivery.",
         {"parentId": name}, None, None),
        (f"{name}#1", "Returns > Refunds\nRefunds go back to the original payment method within "
         "14 days.\n\n```text\n# this line is code, not a heading\n```", {"parentId": name}, None, None),
        (f"{name}#2", "Returns > Exchanges > Sizes\nSwap a size for free at any store.",
         {"parentId": name}, None, None),
    ]  # fmt: skip


@pytest.mark.parametrize("suffix", [".txt", ".md", ".markdown", ".MD", ".TXT"])
def test_text_files_chunked_natively(tmp_path: Path, suffix: str) -> None:
    body = "\n\n".join(" ".join(f"w{p}x{i}" for i in range(60)) for p in range(12))
    path = tmp_path / f"notes{suffix}"
    path.write_text("# Title\n\n" + body, encoding="utf-8")
    out = normalize_docs(path)
    markdown = suffix.lower() in (".md", ".markdown")
    expected = chunk_text("# Title\n\n" + body, Chunking(), markdown=markdown)
    assert len(expected) > 2
    assert [d.text for d in out] == expected
    assert [d.id for d in out] == [f"{path}#{n}" for n in range(len(expected))]
    assert all(d.metadata == {"parentId": str(path)} for d in out)
    assert all(d.payload is None and d.embedding is None for d in out)
    assert out[0].text.startswith("Title\n") == markdown


def test_text_file_with_chunking_and_chunker(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    text = " ".join(f"word{i}" for i in range(400))
    path.write_text(text)
    small = Chunking(chunk_size=200, chunk_overlap=0)
    out = normalize_docs(path, chunking=small)
    assert [d.text for d in out] == chunk_text(text, small)
    assert " ".join(d.text for d in out) == text
    out = normalize_docs([path], chunker=lambda t: [t[:10], t[10:20]])
    assert as_tuples(out) == [
        (f"{path}#0", text[:10], {"parentId": str(path)}, None, None),
        (f"{path}#1", text[10:20], {"parentId": str(path)}, None, None),
    ]


def test_paths_as_generator_and_custom_pathlike(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"id": "a", "text": "x"}\n')
    (tmp_path / "b.ndjson").write_text('{"id": "b", "text": "y"}\n')
    (tmp_path / "c.txt").write_text("plain")

    class MyPath:
        def __init__(self, p: str) -> None:
            self.p = p

        def __fspath__(self) -> str:
            return self.p

    os.PathLike.register(MyPath)  # a registered PathLike, like os.DirEntry
    paths = (
        p for p in [tmp_path / "a.jsonl", MyPath(str(tmp_path / "b.ndjson")), tmp_path / "c.txt"]
    )
    out = normalize_docs(paths)
    assert [(d.id, d.text) for d in out] == [
        ("a", "x"),
        ("b", "y"),
        (f"{tmp_path / 'c.txt'}#0", "plain"),
    ]
    entries = sorted(os.scandir(tmp_path), key=lambda e: e.name)
    assert [d.id for d in normalize_docs(entries)] == ["a", "b", f"{tmp_path / 'c.txt'}#0"]


def test_relative_path_id_is_the_path_as_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "notes.md").write_text("# H\nbody")
    monkeypatch.chdir(tmp_path)
    out = normalize_docs(Path("notes.md"))
    assert as_tuples(out) == [("notes.md#0", "H\nbody", {"parentId": "notes.md"}, None, None)]


def test_json_files_chunked_with_chunking(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    text = " ".join(f"tok{i}" for i in range(100))
    path.write_text(json.dumps([{"id": "d", "text": text, "metadata": {"k": 1}, "payload": [1]}]))
    out = normalize_docs(path, chunking=Chunking(chunk_size=200, chunk_overlap=0))
    assert len(out) > 1
    assert [d.id for d in out] == [f"d#{n}" for n in range(len(out))]
    assert all(d.metadata == {"k": "1", "parentId": "d"} and d.payload == "[1]" for d in out)
    assert " ".join(d.text for d in out) == text


@pytest.mark.parametrize("name", ["a.pdf", "a.csv", "README", "a.json.gz"])
def test_unsupported_extension(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("x")
    with pytest.raises(
        InvalidArgumentError, match=r"unsupported file type .* for .*supported: .json"
    ):
        normalize_docs(path)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(InvalidArgumentError, match=rf"cannot read {missing}: No such file"):
        normalize_docs(missing)
    folder = tmp_path / "dir.md"
    folder.mkdir()
    with pytest.raises(InvalidArgumentError, match=rf"cannot read {folder}"):
        normalize_docs([folder])
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok \xff\xfe")
    with pytest.raises(InvalidArgumentError, match=rf"{bad} is not valid UTF-8 \(byte 3\)"):
        normalize_docs(bad)


def test_bad_json_files_name_the_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    p.write_text('[\n{"id": 1, "text": "a"},\n{oops}\n]')
    with pytest.raises(InvalidArgumentError, match=rf"^{p} is not valid JSON \(line 3, column 2\)"):
        normalize_docs(p)
    p.write_text('{"id": 1, "text": "a"}')
    with pytest.raises(InvalidArgumentError, match="not a single dict"):
        normalize_docs(p)
    p.write_text("")
    assert normalize_docs(p) == []
    q = tmp_path / "x.jsonl"
    q.write_text('{"id": 1, "text": "a"}\n\nnope\n')
    with pytest.raises(InvalidArgumentError, match=rf"^{q} line 3 is not valid JSON"):
        normalize_docs(q)
    q.write_text('{"id": 1}\n')
    with pytest.raises(InvalidArgumentError, match=rf"^{q}: document 0 \(id '1'\) has no 'text'"):
        normalize_docs(q)


# --------------------------------------------------------------------------------------------
# chunker= and chunking= on documents


def test_chunker_ids_metadata_payload() -> None:
    meta = {"lang": "en"}
    docs = [
        DocumentInfo("d1", "a b c", meta, None, "pay"),
        DocumentInfo("d2", "x", {"parentId": "overridden"}),
        DocumentInfo("d3", ""),
    ]
    out = normalize_docs(docs, chunker=lambda t: t.split())
    assert as_tuples(out) == [
        ("d1#0", "a", {"lang": "en", "parentId": "d1"}, None, "pay"),
        ("d1#1", "b", {"lang": "en", "parentId": "d1"}, None, "pay"),
        ("d1#2", "c", {"lang": "en", "parentId": "d1"}, None, "pay"),
        ("d2#0", "x", {"parentId": "d2"}, None, None),
    ]  # d3 yields no chunk
    assert meta == {"lang": "en"}
    assert out[0].metadata is not out[1].metadata


def test_chunker_on_dicts_and_json() -> None:
    out = normalize_docs(
        '{"id": 3, "text": "p q", "metadata": {"n": 1}, "payload": {"a": 1}}', chunker=str.split
    )
    assert as_tuples(out) == [
        ("3#0", "p", {"n": "1", "parentId": "3"}, None, '{"a":1}'),
        ("3#1", "q", {"n": "1", "parentId": "3"}, None, '{"a":1}'),
    ]


def test_async_chunker_rejected_without_warning() -> None:
    async def chunker(text: str) -> list[str]:
        return [text]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InvalidArgumentError) as e:
            normalize_docs([DocumentInfo("1", "x")], chunker=chunker)  # type: ignore[arg-type]
        gc.collect()
    assert str(e.value) == "chunker must be synchronous; it returned an awaitable"
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]


@pytest.mark.parametrize(
    ("result", "pattern"),
    [
        ("a string", r"must return a list of str; for 'd' it returned str"),
        (None, r"returned NoneType"),
        (["ok", 3], r"returned a list containing int"),
        ((b"x",), r"returned a tuple containing bytes"),
        ({"a"}, r"returned set"),
    ],
)
def test_chunker_bad_results(result: object, pattern: str) -> None:
    with pytest.raises(InvalidArgumentError, match=pattern):
        normalize_docs([DocumentInfo("d", "x")], chunker=lambda t: result)  # type: ignore[arg-type,return-value]


def test_chunker_tuple_result_accepted() -> None:
    out = normalize_docs([DocumentInfo("d", "x")], chunker=lambda t: (t, t))  # type: ignore[arg-type,return-value]
    assert [d.id for d in out] == ["d#0", "d#1"]


def test_chunk_length_limit() -> None:
    ok = normalize_docs([DocumentInfo("d", "x")], chunker=lambda t: ["y" * 2000])
    assert len(ok[0].text) == 2000
    with pytest.raises(InvalidArgumentError) as e:
        normalize_docs([DocumentInfo("big", "x")], chunker=lambda t: ["ok", "y" * 2001])
    assert "chunk 1 of 'big' is 2001 characters long" in str(e.value)
    assert "2000" in str(e.value)


def test_chunker_exceptions_propagate() -> None:
    def boom(text: str) -> list[str]:
        raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        normalize_docs([DocumentInfo("d", "x")], chunker=boom)


def test_chunking_on_every_document_form() -> None:
    text = " ".join(f"v{i}" for i in range(150))
    c = Chunking(chunk_size=200, chunk_overlap=50)
    expected = chunk_text(text, c)
    assert len(expected) > 2
    forms: list[Any] = [
        [DocumentInfo("k", text, {"m": "1"}, None, "P")],
        [{"id": "k", "text": text, "metadata": {"m": 1}, "payload": "P"}],
        json.dumps([{"id": "k", "text": text, "metadata": {"m": 1}, "payload": "P"}]),
        json.dumps({"id": "k", "text": text, "metadata": {"m": True}, "payload": "P"}).replace(
            "true", '"1"'
        ),
    ]
    for form in forms:
        out = normalize_docs(form, chunking=c)
        assert as_tuples(out) == [
            (f"k#{n}", t, {"m": "1", "parentId": "k"}, None, "P") for n, t in enumerate(expected)
        ]


def test_chunking_a_document_with_embedding_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match="has an embedding and cannot be chunked"):
        normalize_docs([DocumentInfo("d", "x", embedding=[0.1])], chunking=Chunking())
    with pytest.raises(InvalidArgumentError, match="has an embedding and cannot be chunked"):
        normalize_docs([{"id": "d", "text": "x", "embedding": [0.1]}], chunker=lambda t: [t])


def test_option_errors() -> None:
    docs = [DocumentInfo("1", "x")]
    with pytest.raises(InvalidArgumentError) as e:
        normalize_docs(docs, chunker=lambda t: [t], chunking=Chunking())
    assert str(e.value) == "pass chunker or chunking, not both"
    with pytest.raises(InvalidArgumentError, match="chunker cannot be used with a custom-model"):
        normalize_docs(docs, chunker=lambda t: [t], custom_model=True)
    with pytest.raises(InvalidArgumentError, match="chunking cannot be used with a custom-model"):
        normalize_docs(docs, chunking=Chunking(), custom_model=True)
    with pytest.raises(InvalidArgumentError, match="chunker must be callable"):
        normalize_docs(docs, chunker="split")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"chunking must be a moss\.Chunking"):
        normalize_docs(docs, chunking={"chunk_size": 300})  # type: ignore[arg-type]
    # custom_model alone is fine, embeddings pass through.
    out = normalize_docs([DocumentInfo("1", "x", embedding=[0.5])], custom_model=True)
    assert out[0].embedding == [0.5]


def test_options_checked_before_input() -> None:
    with pytest.raises(InvalidArgumentError, match="pass chunker or chunking, not both"):
        normalize_docs({"id": "x"}, chunker=str.split, chunking=Chunking())  # type: ignore[arg-type]


def test_errors_inside_a_generator_propagate_unchanged() -> None:
    def gen() -> Iterator[DocumentInfo]:
        yield DocumentInfo("1", "x")
        raise TypeError("caller bug")

    with pytest.raises(TypeError, match="caller bug"):
        normalize_docs(gen())

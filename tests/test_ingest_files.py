"""moss.ingest.files and moss.ingest.documents: discovery, ids, metadata, duplicates, stdin."""

from __future__ import annotations

import fnmatch
import io
import json
import os
from pathlib import Path

import pytest

from moss.errors import InvalidArgumentError
from moss.ingest import collect_documents, discover, documents_from_bytes
from moss.ingest.documents import sha256_hex
from moss.types import Chunking


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode() if isinstance(content, str) else content)


TREE: dict[str, str | bytes] = {
    "index.md": "# Home\n\nWelcome.",
    "guide/intro.mdx": "---\ntitle: Intro\n---\nHello.",
    "guide/deep/advanced.md": "# Advanced\n\nDeep.",
    "guide/notes.txt": "plain notes",
    "blog/2024/post.html": "<title>Post</title><p>Blog text.</p>",
    "blog/draft-1.md": "draft",
    "node_modules/pkg/readme.md": "vendored",
    ".git/config.md": "hidden dir",
    "guide/.secret.md": "hidden file",
    "img/logo.png": b"\x89PNG\r\n\x1a\n\0\0",
    "data/docs.jsonl": '{"id": "j1", "text": "json one"}\n{"id": "j2", "text": "json two"}\n',
}


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "site"
    write(root, TREE)
    monkeypatch.chdir(tmp_path)
    return root


def rels(paths: list[str | os.PathLike[str]], **kw: object) -> list[str]:
    return [f.rel for f in discover(paths, **kw)]  # type: ignore[arg-type]


def test_directory_is_recursive_sorted_and_skips_hidden(tree: Path) -> None:
    assert rels(["site"]) == [
        "blog/2024/post.html",
        "blog/draft-1.md",
        "data/docs.jsonl",
        "guide/deep/advanced.md",
        "guide/intro.mdx",
        "guide/notes.txt",
        "index.md",
        "node_modules/pkg/readme.md",
    ]
    with_hidden = rels(["site"], hidden=True)
    assert ".git/config.md" in with_hidden and "guide/.secret.md" in with_hidden
    # the same folder by relative and absolute path: the same rels
    assert rels([str(tree)]) == rels(["site"]) == rels(["./site/"])


@pytest.mark.parametrize(
    ("include", "exclude", "expected"),
    [
        (
            ["*.md"],
            [],
            ["blog/draft-1.md", "guide/deep/advanced.md", "index.md", "node_modules/pkg/readme.md"],
        ),
        (["guide/**"], [], ["guide/deep/advanced.md", "guide/intro.mdx", "guide/notes.txt"]),
        # gitignore-like: "guide/*" matches the directory guide/deep, which covers its files
        (["guide/*"], [], ["guide/deep/advanced.md", "guide/intro.mdx", "guide/notes.txt"]),
        (["guide/*.*"], [], ["guide/intro.mdx", "guide/notes.txt"]),
        (
            ["**/*.md*"],
            ["node_modules", "draft-?.md"],
            ["guide/deep/advanced.md", "guide/intro.mdx", "index.md"],
        ),
        (
            [],
            ["blog/", "data", "guide/**/*.md"],
            ["guide/intro.mdx", "guide/notes.txt", "index.md", "node_modules/pkg/readme.md"],
        ),
        (["guide"], ["*.txt"], ["guide/deep/advanced.md", "guide/intro.mdx"]),
        (["[bd]*/**"], [], ["blog/2024/post.html", "blog/draft-1.md", "data/docs.jsonl"]),
    ],
)
def test_globs(tree: Path, include: list[str], exclude: list[str], expected: list[str]) -> None:
    assert rels(["site"], include=include, exclude=exclude) == expected


def test_globs_agree_with_fnmatch_on_basenames(tree: Path) -> None:
    # Reference: a slash-free pattern matches a file when fnmatch matches its name.
    everything = rels(["site"])
    for pattern in ("*.md", "*.mdx", "i*", "?ndex.md", "*notes*", "*.[jh]*"):
        naive = [r for r in everything if fnmatch.fnmatchcase(r.rsplit("/", 1)[-1], pattern)]
        assert rels(["site"], include=[pattern]) == naive, pattern


def test_file_arguments_rel_and_dedup(tree: Path, tmp_path: Path) -> None:
    files = discover(["site/index.md", str(tree / "index.md"), "site", "site/guide/notes.txt"])
    # each file once, the first rel it got wins; sorted by rel
    assert [f.rel for f in files].count("index.md") == 0
    assert "site/index.md" in [f.rel for f in files]
    assert len(files) == len({f.path.resolve() for f in files}) == 8
    assert all(f.path.is_absolute() for f in files)
    outside = tmp_path.parent / f"{tmp_path.name}-outside.md"
    outside.write_text("x")
    try:
        assert rels([str(outside)]) == [outside.name]
    finally:
        outside.unlink()


def test_discover_errors(tree: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"no such file or directory: nope"):
        discover(["nope"])
    with pytest.raises(InvalidArgumentError, match=r"unsupported file type \('\.png'\)"):
        discover(["site/img/logo.png"])
    with pytest.raises(InvalidArgumentError, match=r"a list of paths"):
        discover("site")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"stdin \('-'\) can be read only once"):
        discover(["-", "-"])
    with pytest.raises(InvalidArgumentError, match=r"include patterns must be non-empty"):
        discover(["site"], include=[""])


def test_collect_ids_metadata_and_skips(tree: Path) -> None:
    batch = collect_documents(["site"], exclude=["node_modules"])
    by_id = {d.id: d for d in batch.documents}
    assert sorted(by_id) == sorted(
        [
            "blog/2024/post.html#0",
            "blog/draft-1.md#0",
            "j1",
            "j2",
            "guide/deep/advanced.md#0",
            "guide/intro.mdx#0",
            "guide/notes.txt#0",
            "index.md#0",
        ]
    )
    intro = by_id["guide/intro.mdx#0"]
    raw = TREE["guide/intro.mdx"]
    assert isinstance(raw, str)
    assert intro.text == "Intro\nHello."
    assert intro.metadata == {
        "title": "Intro",
        "parentId": "guide/intro.mdx",
        "source": "guide/intro.mdx",
        "sha256": sha256_hex(raw.encode()),
    }
    assert by_id["blog/2024/post.html#0"].metadata["title"] == "Post"  # type: ignore[index]
    assert by_id["j1"].metadata == {
        "source": "data/docs.jsonl",
        "sha256": sha256_hex(str(TREE["data/docs.jsonl"]).encode()),
    }
    assert batch.skipped == [("img/logo.png", "unsupported file type ('.png')")]
    assert batch.duplicates == []
    assert [f.rel for f in batch.files][:2] == ["blog/2024/post.html", "blog/draft-1.md"]


def test_same_file_relative_and_absolute_gives_one_set_of_ids(tree: Path) -> None:
    a = collect_documents(["site/index.md"])
    b = collect_documents([str(tree / "index.md"), "site/index.md"])
    assert [d.id for d in a.documents] == [d.id for d in b.documents] == ["site/index.md#0"]
    assert a.documents == b.documents  # deterministic: same bytes, same documents


def test_chunks_respect_chunk_size_and_ids_count_from_zero(tmp_path: Path) -> None:
    text = "# T\n\n" + "\n\n".join(f"Paragraph {i} " + "word " * 40 for i in range(12))
    docs = documents_from_bytes(text.encode(), "long.md", chunking=Chunking(chunk_size=300))
    assert [d.id for d in docs] == [f"long.md#{n}" for n in range(len(docs))]
    assert len(docs) > 5
    assert all(len(d.text) <= 300 for d in docs)
    assert all(d.text.startswith("T\n") for d in docs)


def test_json_documents_keep_ids_and_own_source(tmp_path: Path) -> None:
    data = json.dumps(
        [
            {"id": 1, "text": "one", "metadata": {"source": "crm", "n": 2}},
            {"id": "b", "text": "two " * 400},
        ]
    ).encode()
    docs = documents_from_bytes(data, "x.json", extra_metadata={"team": "a"})
    assert [(d.id, d.metadata) for d in docs] == [
        ("1", {"team": "a", "source": "crm", "n": "2", "sha256": sha256_hex(data)}),
        ("b", {"team": "a", "source": "x.json", "sha256": sha256_hex(data)}),
    ]
    chunked = documents_from_bytes(data, "x.json", chunking=Chunking(chunk_size=500))
    assert [d.id for d in chunked][:2] == ["1#0", "b#0"] and len(chunked) > 2
    with pytest.raises(InvalidArgumentError, match=r"x\.jsonl line 2 is not valid JSON"):
        documents_from_bytes(b'{"id": "a", "text": "t"}\n{oops\n', "x.jsonl")


def test_duplicate_ids_error_or_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path,
        {
            "a.jsonl": '{"id": "x", "text": "first"}\n{"id": "y", "text": "y"}\n',
            "b.jsonl": '{"id": "x", "text": "second"}\n',
            "c.jsonl": '{"id": "z", "text": "1"}\n{"id": "z", "text": "2"}\n',
        },
    )
    with pytest.raises(
        InvalidArgumentError, match=r"duplicate document id 'x' \(in a\.jsonl and in b\.jsonl\)"
    ):
        collect_documents(["a.jsonl", "b.jsonl"])
    with pytest.raises(
        InvalidArgumentError, match=r"duplicate document id 'z' \(twice in c\.jsonl\)"
    ):
        collect_documents(["c.jsonl"])
    batch = collect_documents(["a.jsonl", "b.jsonl", "c.jsonl"], on_duplicate="last")
    assert [(d.id, d.text) for d in batch.documents] == [("y", "y"), ("x", "second"), ("z", "2")]
    assert batch.duplicates == ["x", "z"]
    with pytest.raises(InvalidArgumentError, match=r"on_duplicate must be"):
        collect_documents(["a.jsonl"], on_duplicate="first")  # type: ignore[arg-type]


def test_directory_entries_that_fail_are_skipped_but_explicit_files_raise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path / "d",
        {
            "ok.md": "fine",
            "bin.md": b"\x00\x01\x02binary",
            "latin.txt": "caf\xe9".encode("latin-1"),
            "bad.mdx": "---\nk: [\n---\nx",
            "empty.md": "",
        },
    )
    batch = collect_documents(["d"])
    assert [d.id for d in batch.documents] == ["ok.md#0"]
    assert [f.rel for f in batch.files] == ["empty.md", "ok.md"]
    skipped = dict(batch.skipped)
    assert skipped.pop("bad.mdx").startswith("bad.mdx: front matter is not valid YAML (line 3): ")
    assert skipped == {
        "bin.md": "bin.md is a binary file",
        "latin.txt": "latin.txt is not valid UTF-8 (byte 3); convert it to UTF-8 first",
    }
    with pytest.raises(InvalidArgumentError, match=r"bin\.md is a binary file"):
        collect_documents(["d/bin.md"])
    with pytest.raises(InvalidArgumentError, match=r"latin\.txt is not valid UTF-8"):
        collect_documents(["d", "d/latin.txt"])


def test_oversized_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from moss.ingest import documents

    monkeypatch.chdir(tmp_path)
    write(tmp_path, {"big.txt": "x" * 100, "d/big.txt": "x" * 100})
    monkeypatch.setattr(documents, "MAX_BYTES", 50)
    with pytest.raises(InvalidArgumentError, match=r"big\.txt is 0\.0 MB; files over 0 MB"):
        collect_documents(["big.txt"])
    assert collect_documents(["d"]).skipped[0][0] == "big.txt"


def test_stdin_markdown_json_and_named(tmp_path: Path) -> None:
    batch = collect_documents(["-"], stdin=io.BytesIO(b"# Piped\n\nfrom a shell"))
    assert [(d.id, d.text) for d in batch.documents] == [("stdin#0", "Piped\nfrom a shell")]
    assert batch.files[0].stdin is True
    batch = collect_documents(["-"], stdin=io.BytesIO(b'{"id": "s1", "text": "json"}\n'))
    assert [(d.id, d.metadata) for d in batch.documents] == [
        ("s1", {"source": "stdin", "sha256": sha256_hex(b'{"id": "s1", "text": "json"}\n')})
    ]
    batch = collect_documents(
        ["-"], stdin=io.BytesIO(b"<h1>Page</h1><p>x</p>"), stdin_name="page.html"
    )
    assert [(d.id, d.text) for d in batch.documents] == [("page.html#0", "Page\nx")]


def test_documents_from_bytes_validates_arguments() -> None:
    with pytest.raises(InvalidArgumentError, match=r"rel must be a non-empty str"):
        documents_from_bytes(b"x", "")
    with pytest.raises(InvalidArgumentError, match=r"extra_metadata must map str to str"):
        documents_from_bytes(b"x", "a.md", extra_metadata={"n": 1})  # type: ignore[dict-item]
    with pytest.raises(InvalidArgumentError, match=r"chunking must be a moss\.Chunking"):
        documents_from_bytes(b"x", "a.md", chunking={"chunk_size": 300})  # type: ignore[arg-type]
    # reserved keys always win over front matter and extra metadata
    docs = documents_from_bytes(
        b"---\nsource: fm\nauthor: Ann\n---\nbody", "a.md", extra_metadata={"parentId": "p"}
    )
    assert docs[0].metadata is not None
    assert (docs[0].metadata["source"], docs[0].metadata["parentId"]) == ("a.md", "a.md")
    assert docs[0].metadata["author"] == "Ann"


def test_add_docs_paths_read_mdx_and_html_through_the_parsers(tmp_path: Path) -> None:
    # moss.docs_input (add_docs / create_index with paths) keeps its id scheme "{path}#{n}".
    from moss.docs_input import normalize_docs

    mdx = tmp_path / "page.mdx"
    mdx.write_text("---\ntitle: Page\n---\nimport X from 'x'\n\n<X>Body text.</X>\n")
    page = tmp_path / "p.htm"
    page.write_text("<title>T</title><nav>menu</nav><h2>Part</h2><p>Para.</p>")
    docs = normalize_docs([mdx, page])
    assert [(d.id, d.text, d.metadata) for d in docs] == [
        (f"{mdx}#0", "Page\nBody text.", {"parentId": str(mdx)}),
        (f"{page}#0", "Part\nPara.", {"parentId": str(page)}),
    ]

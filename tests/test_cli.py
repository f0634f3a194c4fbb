"""The ``moss`` command line, run through ``main(argv)`` against the embedded store in tmp dirs.

conftest points MOSS_DATA_DIR and MOSS_SESSION_CACHE_PATH at a per-test tmp dir. Most tests use
the ``custom`` model with vectors in the JSONL input, so no embedding model is needed; one test
(marked ``model``) indexes Markdown with the built-in model. Expected results are derived from the
input written here (ids, counts, which document a keyword query must find).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from moss.cli import build_parser, main

from .conftest import HAS_MODEL, unit_vectors
from .test_evaluation import write_dataset, write_embeddings

SRC = Path(__file__).resolve().parents[1] / "src"
DIM = 8


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def one_line_error(code: int, out: str, err: str) -> str:
    assert code == 1
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


TEXTS = {
    "a": "salmon swim upstream every autumn",
    "b": "tigers hunt in the jungle at night",
    "c": "mango trees need a warm climate",
}


def write_docs(path: Path, ids: list[str], seed: int = 0) -> Path:
    vecs = unit_vectors(len(ids), DIM, seed)
    lines = [
        json.dumps(
            {
                "id": i,
                "text": TEXTS.get(i, f"document {i}"),
                "metadata": {"kind": i},
                "embedding": vecs[n].tolist(),
            }
        )
        for n, i in enumerate(ids)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def docs_file(tmp_path: Path) -> Path:
    return write_docs(tmp_path / "docs.jsonl", ["a", "b", "c"])


# --------------------------------------------------------------------------------------------
# Help


def _all_parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    out = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _all_parsers(sub, (*path, name))
    return out


def test_every_help_ends_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    parsers = _all_parsers(build_parser())
    commands = {" ".join(p) for p, _ in parsers}
    assert {
        "index create",
        "index list",
        "index info",
        "index delete",
        "docs get",
        "docs add",
        "docs delete",
        "query",
        "eval",
        "serve",
        "projects create",
    } <= commands
    for path, _ in parsers:
        with pytest.raises(SystemExit) as exc:
            main([*path, "--help"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        tail = out[out.rindex("Example:") :]
        assert tail.splitlines()[1].strip().startswith("moss "), (path, out)


def test_python_dash_m_moss_help_without_server_import() -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run(
        [sys.executable, "-m", "moss", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "index" in proc.stdout and "Example:" in proc.stdout
    check = subprocess.run(
        [sys.executable, "-c", "import sys, moss.cli; print('moss.server' in sys.modules)"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert check.stdout.strip() == "False"


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["query"])
    assert exc.value.code == 2


# --------------------------------------------------------------------------------------------
# Index and document commands


def test_index_lifecycle(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, docs_file: Path
) -> None:
    created = run_json(capsys, "index", "create", "notes", str(docs_file))
    assert created["index"] == "notes" and created["doc_count"] == 3
    assert created["model"] == "custom"  # the documents carry embeddings

    listed = run_json(capsys, "index", "list")
    assert [(i["name"], i["doc_count"]) for i in listed] == [("notes", 3)]
    assert listed[0]["model"]["id"] == "custom"

    info = run_json(capsys, "index", "info", "notes")
    assert info["name"] == "notes" and info["doc_count"] == 3 and info["status"] == "Ready"
    code, out, _ = run(capsys, "index", "info", "notes")
    assert code == 0 and "docs:" in out and "custom" in out

    docs = run_json(capsys, "docs", "get", "notes")
    assert [d["id"] for d in docs] == ["a", "b", "c"]
    assert {k: v for k, v in docs[1].items() if k != "metadata"} == {
        "id": "b",
        "text": TEXTS["b"],
        "payload": None,
    }
    # moss.ingest adds the provenance that `index sync` diffs by
    assert docs[1]["metadata"]["kind"] == "b" and docs[1]["metadata"]["source"] == "docs.jsonl"
    only = run_json(capsys, "docs", "get", "notes", "--id", "c", "--id", "a")
    assert [d["id"] for d in only] == ["a", "c"]  # index order
    code, out, _ = run(capsys, "docs", "get", "notes")
    assert code == 0 and "3 document(s)" in out and "kind=a" not in out
    code, out, _ = run(capsys, "docs", "get", "notes", "-m")
    assert (
        code == 0 and "kind=a" in out and out.splitlines()[0].split() == ["id", "text", "metadata"]
    )

    more = write_docs(tmp_path / "more.jsonl", ["d", "a"], seed=1)
    added = run_json(capsys, "docs", "add", "notes", str(more))
    assert added["doc_count"] == 4
    deleted = run_json(capsys, "docs", "delete", "notes", "b", "nope")
    assert deleted["doc_count"] == 3
    assert [d["id"] for d in run_json(capsys, "docs", "get", "notes")] == ["a", "c", "d"]

    code, out, _ = run(capsys, "index", "list")
    assert code == 0 and "notes" in out and "custom" in out
    assert run_json(capsys, "index", "delete", "notes") == {"index": "notes", "deleted": True}
    assert run_json(capsys, "index", "list") == []
    line = one_line_error(*run(capsys, "index", "info", "notes"))
    assert "notes" in line


def test_index_create_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, docs_file: Path
) -> None:
    assert run(capsys, "index", "create", "n1", str(docs_file))[0] == 0
    line = one_line_error(*run(capsys, "index", "create", "n1", str(docs_file)))
    assert "already exists" in line
    line = one_line_error(*run(capsys, "index", "create", "n2", str(tmp_path / "nope.jsonl")))
    assert "no such file" in line
    bad = tmp_path / "bad.csv"
    bad.write_text("x")
    one_line_error(*run(capsys, "index", "create", "n2", str(bad)))
    one_line_error(*run(capsys, "index", "create", "n2", str(docs_file), "--chunk-size", "50"))
    one_line_error(*run(capsys, "index", "create", "bad/name", str(docs_file)))
    assert [i["name"] for i in run_json(capsys, "index", "list")] == ["n1"]


def test_index_create_progress_on_stderr(
    capsys: pytest.CaptureFixture[str], docs_file: Path
) -> None:
    code, out, err = run(capsys, "index", "create", "p", str(docs_file))
    assert code == 0
    assert "indexing: 0/3 docs" in err and "indexing: 3/3 docs (100%)" in err
    assert "Created index 'p': 3 docs from 1 file(s), model custom" in out


# --------------------------------------------------------------------------------------------
# Query


def test_query_table_and_json(capsys: pytest.CaptureFixture[str], docs_file: Path) -> None:
    assert run(capsys, "index", "create", "notes", str(docs_file))[0] == 0
    # a custom-model index cannot embed text, so query keywords only (alpha 0)
    res = run_json(capsys, "query", "notes", "salmon", "--alpha", "0")
    assert [d["id"] for d in res["docs"]] == ["a"]
    assert res["docs"][0]["metadata"]["kind"] == "a" and res["index"] == "notes"
    assert res["query_ms"] >= 0 and res["load_ms"] >= 0
    code, out, _ = run(capsys, "query", "notes", "tigers jungle", "-a", "0", "-k", "1", "-m")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split() == ["#", "id", "keyword", "text", "metadata"]
    assert lines[2].split()[:2] == ["1", "b"] and "kind=b" in lines[2]
    assert 0.0 < float(lines[2].split()[2]) < 1.0  # the BM25 fraction, not the 0 cosine
    assert any(line.startswith("1 result(s) in ") for line in lines)
    flt = json.dumps({"field": "kind", "condition": {"$eq": "c"}})
    res = run_json(capsys, "query", "notes", "salmon mango", "--alpha", "0", "--filter", flt)
    assert [d["id"] for d in res["docs"]] == ["c"]


def test_query_errors(capsys: pytest.CaptureFixture[str], docs_file: Path) -> None:
    assert run(capsys, "index", "create", "notes", str(docs_file))[0] == 0
    line = one_line_error(*run(capsys, "query", "notes", "x", "--alpha", "0", "--filter", "{"))
    assert "--filter" in line
    one_line_error(*run(capsys, "query", "notes", "x", "--alpha", "0", "--filter", "[1]"))
    line = one_line_error(*run(capsys, "query", "notes", "salmon", "--alpha", "0.5"))
    assert "custom" in line  # needs an embedding
    one_line_error(*run(capsys, "query", "notes", "x", "--alpha", "2"))
    one_line_error(*run(capsys, "query", "missing", "x"))


def test_credentials_from_flags_and_env(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, docs_file: Path
) -> None:
    monkeypatch.setenv("MOSS_PROJECT_ID", "alpha")
    assert run(capsys, "index", "create", "n", str(docs_file))[0] == 0
    assert [i["name"] for i in run_json(capsys, "index", "list")] == ["n"]
    # the flag wins over the environment, before or after the command
    assert run_json(capsys, "--project-id", "beta", "index", "list") == []
    assert run_json(capsys, "index", "list", "--project-id", "beta") == []
    monkeypatch.delenv("MOSS_PROJECT_ID")
    assert run_json(capsys, "index", "list") == []  # project "default"
    assert [i["name"] for i in run_json(capsys, "index", "list", "--project-id", "alpha")] == ["n"]


@pytest.mark.model
@pytest.mark.skipif(not HAS_MODEL, reason="all-MiniLM-L6-v2 weights not installed")
def test_markdown_with_builtin_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    md = tmp_path / "notes.md"
    md.write_text(
        "# Returns\n\nRefunds are issued within 14 days.\n\n# Shipping\n\n"
        "Parcels ship from Rotterdam every weekday.\n"
    )
    created = run_json(capsys, "index", "create", "kb", str(md), "--chunk-size", "200")
    assert created["model"] == "moss-minilm" and created["doc_count"] >= 1
    res = run_json(capsys, "query", "kb", "how long until I get my money back", "--top-k", "1")
    assert "Refunds" in res["docs"][0]["text"]
    assert res["docs"][0]["metadata"]["parentId"] == "notes.md"  # relative to what was given


# --------------------------------------------------------------------------------------------
# Eval, server commands


def test_eval_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "ds")
    emb = write_embeddings(root)
    report = run_json(
        capsys, "eval", str(root), "--embeddings", str(emb), "--alpha", "0,1", "--fusion", "score"
    )
    assert [(r["alpha"], r["fusion"]) for r in report["rows"]] == [(0.0, "score"), (1.0, "score")]
    assert report["rows"][1]["ndcg_at_10"] == pytest.approx(1.0)
    assert report["rows"][0]["ndcg_at_10"] == pytest.approx(0.5)
    code, out, err = run(capsys, "eval", str(root), "--embeddings", str(emb), "--alpha", "1")
    assert code == 0 and "| alpha | fusion |" in out and "2 queries" in err
    one_line_error(*run(capsys, "eval", str(root), "--embeddings", str(emb), "--alpha", "x"))
    one_line_error(*run(capsys, "eval", str(tmp_path / "nothing")))


def test_serve_without_server_extra(tmp_path: Path) -> None:
    """With Starlette and uvicorn unimportable, `moss serve` names the extra and exits 1."""
    code = (
        "import sys; sys.modules['starlette'] = None; sys.modules['uvicorn'] = None\n"
        "from moss.cli import main\n"
        f"sys.exit(main(['serve', '--data', {str(tmp_path)!r}, '--port', '0']))"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    line = one_line_error(proc.returncode, proc.stdout, proc.stderr)
    assert "pip install 'mosslite[server]'" in line


def test_projects_create(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    server = pytest.importorskip("moss.server")
    if not hasattr(server, "create_project"):
        pytest.skip("moss.server.create_project not available yet")
    first = run_json(capsys, "projects", "create", "--data", str(tmp_path), "--name", "demo")
    second = run_json(capsys, "projects", "create", "--data", str(tmp_path))
    assert first["project_id"] and first["project_key"]
    assert first["project_id"] != second["project_id"]
    code, out, _ = run(capsys, "projects", "create", "--data", str(tmp_path))
    assert code == 0 and out.startswith("MOSS_PROJECT_ID=") and "MOSS_PROJECT_KEY=" in out


# --------------------------------------------------------------------------------------------
# Ingestion: folders, globs, hidden files, stdin, duplicates, sync


def write_tree(root: Path) -> Path:
    """a.jsonl (a1, a2), sub/b.jsonl (b1), .hid/c.jsonl (c1), notes.csv (unsupported)."""
    (root / "sub").mkdir(parents=True)
    (root / ".hid").mkdir()
    write_docs(root / "a.jsonl", ["a1", "a2"], seed=1)
    write_docs(root / "sub" / "b.jsonl", ["b1"], seed=2)
    write_docs(root / ".hid" / "c.jsonl", ["c1"], seed=3)
    (root / "notes.csv").write_text("x,y\n")
    return root


def ids_of(capsys: pytest.CaptureFixture[str], name: str) -> list[str]:
    return sorted(d["id"] for d in run_json(capsys, "docs", "get", name))


def test_index_create_from_a_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "tree")
    code, out, err = run(capsys, "index", "create", "t", str(tree))
    assert code == 0, err
    assert "from 2 file(s)" in out and "skipped notes.csv: unsupported file type" in err
    assert ids_of(capsys, "t") == ["a1", "a2", "b1"]  # dot folders skipped
    created = run_json(capsys, "index", "create", "h", str(tree), "--hidden", "-x", "sub/**")
    assert created["files"] == 2 and created["doc_count"] == 3
    assert created["skipped"] == [{"path": "notes.csv", "reason": created["skipped"][0]["reason"]}]
    assert ids_of(capsys, "h") == ["a1", "a2", "c1"]
    run_json(capsys, "index", "create", "i", str(tree), "-i", "sub/*.jsonl")
    assert ids_of(capsys, "i") == ["b1"]


def test_duplicate_policy(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "tree")
    write_docs(tree / "sub" / "dup.jsonl", ["a1"], seed=4)
    line = one_line_error(*run(capsys, "index", "create", "d", str(tree)))
    assert "a1" in line and "--on-duplicate last" in line
    assert run_json(capsys, "index", "list") == []  # nothing created
    created = run_json(capsys, "index", "create", "d", str(tree), "--on-duplicate", "last")
    assert created["duplicates"] == ["a1"] and created["doc_count"] == 3
    texts = {d["id"]: d["metadata"]["source"] for d in run_json(capsys, "docs", "get", "d")}
    assert texts["a1"] == "sub/dup.jsonl"  # the last occurrence (sorted order) won


def test_stdin_and_docs_add(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import io

    src = write_docs(tmp_path / "in.jsonl", ["s1", "s2"], seed=5)
    stdin = io.TextIOWrapper(io.BytesIO(src.read_bytes()))
    monkeypatch.setattr("sys.stdin", stdin)
    created = run_json(capsys, "index", "create", "s", "-")
    assert created["doc_count"] == 2 and created["model"] == "custom"
    more = write_docs(tmp_path / "more.jsonl", ["s2", "s3"], seed=6)
    added = run_json(capsys, "docs", "add", "s", str(more))
    assert (added["added"], added["updated"], added["doc_count"]) == (1, 1, 3)
    assert set(added) >= {"index", "doc_count", "model", "job_id", "seconds", "skipped"}
    assert ids_of(capsys, "s") == ["s1", "s2", "s3"]
    line = one_line_error(*run(capsys, "docs", "add", "missing", str(more)))
    assert "missing" in line


def test_index_sync(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "tree")
    first = run_json(capsys, "index", "sync", "t", str(tree), "--model", "custom")
    assert sorted(first["added"]) == ["a.jsonl", "sub/b.jsonl"] and first["chunks_added"] == 3
    assert first["doc_count"] == 3 and first["job_id"]
    (tree / "sub" / "b.jsonl").unlink()
    write_docs(tree / "a.jsonl", ["a1"], seed=7)  # changed: a2 gone, a1 new vector
    write_docs(tree / "new.jsonl", ["n1"], seed=8)
    dry = run_json(capsys, "index", "sync", "t", str(tree), "-n")
    assert (dry["added"], dry["changed"], dry["removed"]) == (
        ["new.jsonl"],
        ["a.jsonl"],
        ["sub/b.jsonl"],
    )
    assert dry["dry_run"] is True and dry["job_id"] is None
    assert ids_of(capsys, "t") == ["a1", "a2", "b1"]  # unchanged by the dry run
    code, out, _ = run(capsys, "index", "sync", "t", str(tree))
    assert code == 0
    lines = out.splitlines()
    assert {"+ new.jsonl", "~ a.jsonl", "- sub/b.jsonl"} <= set(lines)
    assert lines[-1].startswith("Synced 't': 1 added, 1 changed, 1 removed, 0 unchanged")
    assert ids_of(capsys, "t") == ["a1", "n1"]
    again = run_json(capsys, "index", "sync", "t", str(tree))
    assert again["unchanged"] == 2 and again["chunks_added"] == again["chunks_deleted"] == 0


@pytest.mark.parametrize("flag, expected", [([], None), (["--allow-private-crawl"], True)])
def test_serve_passes_allow_private_crawl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: list[str], expected: bool | None
) -> None:
    pytest.importorskip("starlette")
    import moss.server

    seen: dict[str, object] = {}

    def fake_serve(data: str, host: str, port: int, **kw: object) -> None:
        seen.update(data=data, host=host, port=port, **kw)

    monkeypatch.setattr(moss.server, "serve", fake_serve)
    (tmp_path / "d").mkdir()
    assert main(["serve", "--data", str(tmp_path / "d"), "--port", "7799", *flag]) == 0
    assert seen["port"] == 7799
    assert seen["allow_private_crawl"] is expected


def test_query_cells_show_the_last_heading_and_cap_metadata() -> None:
    from moss.cli.query import _shown_text

    assert _shown_text("Guide > Install > Linux\nRun the script.") == "Linux — Run the script."
    assert _shown_text("no trail here\nsecond line") == "no trail here\nsecond line"
    assert _shown_text("A > B") == "A > B"  # a one-line text is shown as it is

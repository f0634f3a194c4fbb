"""sync_directory: the index equals a fresh build of the folder after edits, shortening, renames,
deletions and additions; cancellation and refusals leave the stored index untouched.

Uses the embedded store (conftest isolates MOSS_DATA_DIR) and the real model, on tiny folders.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from moss import MossClient
from moss.errors import InvalidArgumentError
from moss.ingest import SyncReport, collect_documents, sync_directory
from moss.types import Chunking, DocumentInfo

from .conftest import HAS_MODEL

pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(not HAS_MODEL, reason="all-MiniLM-L6-v2 weights not installed"),
]

SMALL = Chunking(chunk_size=200, chunk_overlap=0)


def paragraphs(topic: str, n: int) -> str:
    return f"# {topic.title()}\n\n" + "\n\n".join(
        f"{topic} paragraph {i}: " + " ".join(f"{topic}{i}w{k}" for k in range(14))
        for i in range(n)
    )


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")


def as_map(docs: list[DocumentInfo]) -> dict[str, tuple[str, dict[str, str] | None]]:
    return {d.id: (d.text, d.metadata) for d in docs}


async def stored(name: str) -> dict[str, tuple[str, dict[str, str] | None]]:
    async with MossClient("p", "k") as client:
        return as_map(await client.get_docs(name))


def fresh(folder: Path, **kw: object) -> dict[str, tuple[str, dict[str, str] | None]]:
    return as_map(collect_documents([folder], chunking=SMALL, **kw).documents)  # type: ignore[arg-type]


async def sync(folder: Path, name: str = "site", **kw: object) -> SyncReport:
    async with MossClient("p", "k") as client:
        return await sync_directory(client, name, folder, chunking=SMALL, **kw)  # type: ignore[arg-type]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    write(
        root,
        {
            "edit.md": paragraphs("edit", 2),
            "shrink.md": paragraphs("shrink", 5),
            "docs/rename.txt": "rename me, a plain text file",
            "docs/gone.mdx": "---\ntitle: Gone\n---\nimport X from 'x'\n\n<X>soon deleted</X>",
            "keep.html": "<title>Keep</title><h1>Keep</h1><p>unchanged page</p>",
            "notes.png": "not a document",
        },
    )
    return root


def test_sync_edit_shorten_rename_delete_add_equals_fresh_build(folder: Path) -> None:
    first = asyncio.run(sync(folder))
    assert first.added == ["docs/gone.mdx", "docs/rename.txt", "edit.md", "keep.html", "shrink.md"]
    assert (first.changed, first.removed, first.unchanged) == ([], [], [])
    assert first.skipped == [("notes.png", "unsupported file type ('.png')")]
    assert first.chunks_added == first.doc_count == len(fresh(folder))
    assert first.job_id is not None and first.dry_run is False
    assert asyncio.run(stored("site")) == fresh(folder)

    # nothing changed: nothing embedded, nothing pushed
    again = asyncio.run(sync(folder))
    assert (again.added, again.changed, again.removed, again.job_id) == ([], [], [], None)
    assert again.unchanged == first.added and again.chunks_added == again.chunks_deleted == 0

    before = asyncio.run(stored("site"))
    shrink_ids = [i for i in before if i.startswith("shrink.md#")]
    assert len(shrink_ids) >= 4
    write(folder, {"edit.md": paragraphs("edited", 2), "shrink.md": paragraphs("shrink", 1)})
    (folder / "docs/rename.txt").rename(folder / "docs/renamed.txt")
    (folder / "docs/gone.mdx").unlink()
    write(folder, {"new/added.md": "# Added\n\nA brand new page."})

    expected = fresh(folder)
    shorter = [i for i in expected if i.startswith("shrink.md#")]
    assert 0 < len(shorter) < len(shrink_ids)

    dry = asyncio.run(sync(folder, dry_run=True))
    assert asyncio.run(stored("site")) == before  # a dry run changes nothing

    report = asyncio.run(sync(folder))
    assert report.added == ["docs/renamed.txt", "new/added.md"]
    assert report.changed == ["edit.md", "shrink.md"]
    assert report.removed == ["docs/gone.mdx", "docs/rename.txt"]
    assert report.unchanged == ["keep.html"]
    gone_ids = set(before) - set(expected)
    assert report.chunks_deleted == len(gone_ids)
    assert report.chunks_added == sum(
        1
        for i in expected
        if i.split("#")[0] in {"edit.md", "shrink.md", "docs/renamed.txt", "new/added.md"}
    )
    assert report.doc_count == len(expected)
    assert (dry.added, dry.changed, dry.removed, dry.unchanged) == (
        report.added,
        report.changed,
        report.removed,
        report.unchanged,
    )
    assert (dry.chunks_added, dry.chunks_deleted, dry.doc_count) == (
        report.chunks_added,
        report.chunks_deleted,
        report.doc_count,
    )
    after = asyncio.run(stored("site"))
    assert after == expected  # ids, texts and metadata, exactly
    assert not any(i.startswith(("docs/gone.mdx", "docs/rename.txt")) for i in after)
    assert after["keep.html#0"] == before["keep.html#0"]


def test_cancelled_sync_leaves_the_stored_index_unchanged(folder: Path) -> None:
    asyncio.run(sync(folder))
    before = asyncio.run(stored("site"))
    write(folder, {"edit.md": paragraphs("other", 3), "more.md": paragraphs("more", 2)})
    (folder / "keep.html").unlink()

    calls: list[tuple[int, int]] = []

    def interrupt(done: int, total: int) -> None:
        calls.append((done, total))
        if done > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(sync(folder, progress=interrupt))
    assert calls[0][0] == 0 and calls[-1][0] > 0  # it embedded something before the interrupt
    assert asyncio.run(stored("site")) == before

    async def cancel_mid_way() -> None:
        async with MossClient("p", "k") as client:
            task: asyncio.Task[SyncReport]

            def cancel(done: int, total: int) -> None:
                if done > 0:
                    task.cancel()

            task = asyncio.create_task(
                sync_directory(client, "site", folder, chunking=SMALL, progress=cancel)
            )
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(cancel_mid_way())
    assert asyncio.run(stored("site")) == before
    asyncio.run(sync(folder))  # and a completed sync then applies everything
    assert asyncio.run(stored("site")) == fresh(folder)


def test_verify_rechunks_unchanged_files_after_an_options_change(folder: Path) -> None:
    asyncio.run(sync(folder))
    big = Chunking(chunk_size=1000, chunk_overlap=0)

    async def resync(verify: bool) -> SyncReport:
        async with MossClient("p", "k") as client:
            return await sync_directory(client, "site", folder, chunking=big, verify=verify)

    plain = asyncio.run(resync(False))
    assert plain.changed == [] and plain.job_id is None  # the hash alone sees no change
    report = asyncio.run(resync(True))
    assert report.changed == ["edit.md", "shrink.md"]  # the only files whose chunks differ
    assert "keep.html" in report.unchanged
    expected = as_map(collect_documents([folder], chunking=big).documents)
    assert asyncio.run(stored("site")) == expected


def test_refusals_change_nothing(folder: Path, tmp_path: Path) -> None:
    asyncio.run(sync(folder))
    before = asyncio.run(stored("site"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(InvalidArgumentError, match=r"yields no documents.*delete the index 'site'"):
        asyncio.run(sync(empty))
    with pytest.raises(InvalidArgumentError, match=r"is not a directory"):
        asyncio.run(sync(folder / "edit.md"))
    with pytest.raises(InvalidArgumentError, match=r"model_id 'moss-mediumlm' was requested"):
        asyncio.run(sync(folder, model_id="moss-mediumlm"))
    write(
        folder,
        {
            "a.jsonl": '{"id": "dup", "text": "one"}\n',
            "b.jsonl": '{"id": "dup", "text": "two"}\n',
        },
    )
    with pytest.raises(
        InvalidArgumentError, match=r"duplicate document id 'dup#0' \(in a\.jsonl and in b\.jsonl\)"
    ):
        asyncio.run(sync(folder))
    assert asyncio.run(stored("site")) == before
    # the explicit policy: the last occurrence wins, and the report says which ids collided
    report = asyncio.run(sync(folder, on_duplicate="last"))
    assert report.duplicates == ["dup#0"]  # JSON documents are chunked when chunking is given
    after = asyncio.run(stored("site"))
    assert after == fresh(folder, on_duplicate="last")
    assert after["dup#0"][0] == "two"


def test_last_wins_duplicates_survive_removing_the_winning_file(tmp_path: Path) -> None:
    # b.jsonl's copy of "shared" wins at build time (chunked: ids "shared#0"); once b.jsonl is gone, a.jsonl's copy (a file
    # whose bytes did not change) must come back, as a fresh build of the folder has it.
    folder = tmp_path / "dups"
    write(
        folder,
        {
            "a.jsonl": '{"id": "shared", "text": "alpha copy of the shared record"}\n'
            '{"id": "a1", "text": "only in a"}\n',
            "b.jsonl": '{"id": "shared", "text": "beta copy of the shared record"}\n',
        },
    )
    asyncio.run(sync(folder, "dups", on_duplicate="last"))
    assert asyncio.run(stored("dups"))["shared#0"][0] == "beta copy of the shared record"
    (folder / "b.jsonl").unlink()
    asyncio.run(sync(folder, "dups", on_duplicate="last"))
    after = asyncio.run(stored("dups"))
    assert after == fresh(folder, on_duplicate="last")
    assert after["shared#0"][0] == "alpha copy of the shared record"


def test_before_push_is_called_once_and_only_when_something_is_pushed(tmp_path: Path) -> None:
    folder = tmp_path / "hook"
    write(folder, {"a.md": paragraphs("apple", 2), "b.md": paragraphs("berry", 2)})
    calls: list[str] = []
    asyncio.run(sync(folder, "hook", before_push=lambda: calls.append("push")))
    assert calls == ["push"]
    asyncio.run(sync(folder, "hook", before_push=lambda: calls.append("noop")))
    assert calls == ["push"]  # nothing changed: nothing pushed
    (folder / "b.md").unlink()  # a delete-only sync embeds nothing but still pushes
    asyncio.run(sync(folder, "hook", dry_run=True, before_push=lambda: calls.append("dry")))
    asyncio.run(sync(folder, "hook", before_push=lambda: calls.append("delete")))
    assert calls == ["push", "delete"]
    assert asyncio.run(stored("hook")) == fresh(folder)

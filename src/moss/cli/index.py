"""``moss index create|list|info|delete|sync``: the cloud indexes of a project.

``create`` reads files, folders or stdin through :mod:`moss.ingest`, embeds on this machine and
pushes once (:func:`.common.embed_and_push`); ``sync`` delegates to
:func:`moss.ingest.sync_directory`, which diffs a folder against the index and pushes once too.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import collect, embed_and_push, make_client, report_skipped, skipped_json
from .output import json_out, out, plain, table

__all__ = ["create", "delete", "info", "list_", "sync"]


async def create(args: argparse.Namespace) -> int:
    """Create an index from files, folders and stdin (embedded here, pushed once)."""
    from ..errors import NOT_FOUND, AlreadyExistsError, MossError
    from ..types import validate_index_name

    validate_index_name(args.name)
    async with make_client(args) as client:
        try:
            await client.get_index(args.name)
        except MossError as e:
            if e.code != NOT_FOUND:
                raise
        else:
            raise AlreadyExistsError(f"index {args.name!r} already exists")
        batch = await collect(args)
        report_skipped(batch, quiet=args.quiet or args.json)
        if not batch.documents:
            from ..errors import InvalidArgumentError

            raise InvalidArgumentError("the paths contain no documents")
        model = args.model or (
            "custom"
            if any(d.embedding is not None for d in batch.documents)
            else client.DEFAULT_MODEL_ID
        )
        done = await embed_and_push(
            client, args.name, batch.documents, model=model, resume=False, quiet=args.quiet
        )
    if args.json:
        json_out(
            {
                "index": args.name,
                "doc_count": done.doc_count,
                "model": done.model,
                "job_id": done.job_id,
                "seconds": round(done.seconds, 3),
                "files": len(batch.files),
                "skipped": skipped_json(batch),
                "duplicates": list(batch.duplicates),
            }
        )
    else:
        out(
            f"Created index {args.name!r}: {done.doc_count} docs from {len(batch.files)} "
            f"file(s), model {done.model}, {done.seconds:.1f} s"
        )
    return 0


def _info_dict(info: Any) -> dict[str, Any]:
    value: dict[str, Any] = plain(info)
    return value


async def list_(args: argparse.Namespace) -> int:
    """List the project's indexes."""
    async with make_client(args) as client:
        infos = await client.list_indexes()
    if args.json:
        json_out([_info_dict(i) for i in infos])
        return 0
    if not infos:
        out("No indexes.")
        return 0
    rows = [[i.name, str(i.doc_count), i.model.id, str(i.status), i.updated_at] for i in infos]
    out(table(["name", "docs", "model", "status", "updated"], rows, right=[1], flex=0))
    return 0


async def info(args: argparse.Namespace) -> int:
    """Show one index."""
    async with make_client(args) as client:
        i = await client.get_index(args.name)
    if args.json:
        json_out(_info_dict(i))
        return 0
    for key, value in (
        ("name", i.name),
        ("id", i.id),
        ("docs", str(i.doc_count)),
        ("model", f"{i.model.id} ({i.model.version})"),
        ("status", str(i.status)),
        ("version", i.version),
        ("created", i.created_at),
        ("updated", i.updated_at),
    ):
        out(f"{key + ':':<9}{value}")
    return 0


async def delete(args: argparse.Namespace) -> int:
    """Delete an index."""
    from .interrupt import point_of_no_return

    async with make_client(args) as client:
        with point_of_no_return():
            deleted = await client.delete_index(args.name)
    if args.json:
        json_out({"index": args.name, "deleted": deleted})
    else:
        out(f"Deleted index {args.name!r}." if deleted else f"No index {args.name!r}.")
    return 0


async def sync(args: argparse.Namespace) -> int:
    """Make an index equal to a folder: embed new/changed files, drop removed ones, push once."""
    import time

    from ..ingest.sync import sync_directory
    from .common import chunking_from
    from .interrupt import protect_from_now_on, say_when_interrupted
    from .progress import Progress

    start = time.perf_counter()
    say_when_interrupted(f"interrupted: index {args.name!r} is unchanged")
    async with make_client(args) as client:
        bar: Progress | None = None

        def progress(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = Progress("embedding", total, unit="chunk", enabled=not args.quiet)
            bar.update(done)
            if done >= total:
                bar.close()

        try:
            report = await sync_directory(
                client,
                args.name,
                args.directory,
                include=tuple(args.include or ()),
                exclude=tuple(args.exclude or ()),
                hidden=bool(args.hidden),
                chunking=chunking_from(args),
                model_id=args.model,
                dry_run=bool(args.dry_run),
                progress=progress,
                on_duplicate=args.on_duplicate,
                verify=bool(args.verify),
                before_push=protect_from_now_on,  # only the push is left: let it finish
            )
        finally:
            if bar is not None:
                bar.close()
    seconds = time.perf_counter() - start
    if args.json:
        json_out(
            {
                "index": args.name,
                "dry_run": report.dry_run,
                "added": list(report.added),
                "changed": list(report.changed),
                "removed": list(report.removed),
                "unchanged": len(report.unchanged),
                "chunks_added": report.chunks_added,
                "chunks_deleted": report.chunks_deleted,
                "doc_count": report.doc_count,
                "job_id": report.job_id,
                "seconds": round(seconds, 3),
                "skipped": [{"path": rel, "reason": why} for rel, why in report.skipped],
                "duplicates": list(report.duplicates),
            }
        )
        return 0
    if not args.quiet:
        for rel, why in report.skipped:
            sys.stderr.write(f"skipped {rel}: {why}\n")
    for mark, rels in (("+", report.added), ("~", report.changed), ("-", report.removed)):
        for rel in rels:
            out(f"{mark} {rel}")
    verb = "Would sync" if report.dry_run else "Synced"
    out(
        f"{verb} {args.name!r}: {len(report.added)} added, {len(report.changed)} changed, "
        f"{len(report.removed)} removed, {len(report.unchanged)} unchanged file(s); "
        f"chunks +{report.chunks_added} -{report.chunks_deleted}; {report.doc_count} docs"
        f"{'' if report.dry_run else f', {seconds:.1f} s'}"
    )
    return 0

"""``moss docs get|add|delete``: the documents of one index.

``add`` embeds on this machine in a session resumed from the stored index and pushes once
(:func:`.common.embed_and_push`), so a Ctrl-C before the push leaves the index unchanged; it
replaces the index's stored version as a whole, so a concurrent writer's change made between the
read and the push is lost (the CLI is a single-writer tool).
"""

from __future__ import annotations

import argparse
from typing import Any

from .common import collect, embed_and_push, make_client, report_skipped, skipped_json
from .output import json_out, out, table

__all__ = ["add", "delete", "get"]


def _meta(metadata: dict[str, str] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (metadata or {}).items())


async def get(args: argparse.Namespace) -> int:
    """Print documents of an index (all, or the given ids), in index order."""
    from ..types import GetDocumentsOptions

    async with make_client(args) as client:
        docs = await client.get_docs(args.name, GetDocumentsOptions(doc_ids=args.id))
    if args.json:
        json_out(
            [
                {"id": d.id, "text": d.text, "metadata": d.metadata, "payload": d.payload}
                for d in docs
            ]
        )
        return 0
    headers = ["id", "text"]
    rows: list[list[str]] = [[d.id, d.text] for d in docs]
    if args.metadata:
        headers.append("metadata")
        for row, d in zip(rows, docs):
            row.append(_meta(d.metadata))
    if rows:
        out(table(headers, rows, flex=1, shrink=[0, 2] if args.metadata else [0]))
    out(f"{len(docs)} document(s)")
    return 0


async def add(args: argparse.Namespace) -> int:
    """Add or update documents from files, folders and stdin (embedded here, pushed once)."""
    from ..errors import InvalidArgumentError

    async with make_client(args) as client:
        await client.get_index(args.name)  # NOT_FOUND before reading anything
        batch = await collect(args)
        report_skipped(batch, quiet=args.quiet or args.json)
        if not batch.documents:
            raise InvalidArgumentError("the paths contain no documents")
        done = await embed_and_push(
            client, args.name, batch.documents, model=None, resume=True, quiet=args.quiet
        )
    if args.json:
        result: dict[str, Any] = {
            "index": args.name,
            "doc_count": done.doc_count,
            "added": done.added,
            "updated": done.updated,
            "model": done.model,
            "job_id": done.job_id,
            "seconds": round(done.seconds, 3),
            "files": len(batch.files),
            "skipped": skipped_json(batch),
            "duplicates": list(batch.duplicates),
        }
        json_out(result)
    else:
        out(
            f"Added to {args.name!r}: {done.added} new, {done.updated} updated; "
            f"{done.doc_count} docs in the index ({done.seconds:.1f} s)"
        )
    return 0


async def delete(args: argparse.Namespace) -> int:
    """Delete documents by id (unknown ids are ignored)."""
    import time

    start = time.perf_counter()
    from .interrupt import point_of_no_return

    async with make_client(args) as client:
        with point_of_no_return():  # one short job: finish it rather than leave it running
            result = await client.delete_docs(args.name, list(args.ids))
        remain = (await client.get_index(args.name)).doc_count  # result.doc_count: ids sent
    seconds = time.perf_counter() - start
    if args.json:
        json_out(
            {
                "index": args.name,
                "doc_count": remain,
                "job_id": result.job_id,
                "seconds": round(seconds, 3),
            }
        )
    else:
        out(f"Deleted from {args.name!r}: {remain} docs remain.")
    return 0

"""Keep an index equal to a folder: embed what is new or changed, delete what is gone, push once.

``sync_directory(client, name, folder)`` promises one postcondition: afterwards the index's
documents (ids, texts, metadata) are exactly what ``collect_documents([folder])`` builds from the
folder now. It gets there by the cheapest route:

1. **Diff by provenance.** Every chunk built from a file carries ``source`` (the file's ``rel``)
   and ``sha256`` (of its bytes). The stored documents are grouped by ``source`` (a document
   without one stands for itself). Each file in the folder is read once and hashed; when all its
   stored chunks carry the same hash it is *unchanged* and is neither parsed nor embedded.
2. **Rebuild what changed.** New and changed files are parsed and chunked. The folder's documents
   are the stored chunks of unchanged files plus the new chunks, merged under the duplicate-id
   policy (an error by default). Stored chunks not in that result are deleted (a file that got
   shorter loses its tail chunks, a removed or renamed file all of them) and the new chunks are
   embedded, in batches, reporting ``progress(done, total)``.
3. **One push.** The work happens in a local session (create-or-resume); nothing reaches the
   stored index until the single ``push_index`` at the end, whose job is awaited. A cancellation
   (``asyncio.CancelledError``, or an exception such as ``KeyboardInterrupt`` raised from
   ``progress``) before the push leaves the stored index exactly as it was. A sync that finds
   nothing to change pushes nothing.

The hash says whether a file's *bytes* changed, not whether the options did: after changing the
chunking (or upgrading moss's parsers), pass ``verify=True``, which also parses unchanged files
and re-embeds those whose chunks differ from the stored ones. ``on_duplicate="last"`` implies it:
a file's stored chunks may lack an id that another file shadowed, and it must come back when that
file goes.

An index cannot be empty, so a folder that yields no document is refused before anything changes.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from ..errors import InvalidArgumentError, MossError
from ..types import Chunking, DocumentInfo
from .documents import OnDuplicate, merge_documents, read_source, sha256_hex, source_documents
from .files import SourceFile, discover_all

if TYPE_CHECKING:
    from ..client import MossClient
    from ..session import SessionIndex

__all__ = ["SyncReport", "sync_directory"]

_BATCH_TARGET_S = 0.25  # embedding batches sized to take about this long (cancellation latency)
_FIRST_BATCH = 16
_MAX_BATCH = 512


@dataclass(frozen=True)
class SyncReport:
    """What :func:`sync_directory` changed (or, with ``dry_run``, would change).

    Attributes:
        added: ``rel`` of files that had no chunk in the index and now have some.
        changed: ``rel`` of files whose chunks were replaced (their bytes changed; with
            ``verify``, also their chunking), including files that now yield no chunk.
        removed: ``source`` of stored chunks whose file is gone, renamed or now skipped (a
            stored document without ``source`` is listed by its id).
        unchanged: ``rel`` of files left as they were.
        chunks_added: chunks embedded and added (new ids, or replacing the stored chunk of the
            same id).
        chunks_deleted: stored chunks whose id is gone (a removed file's, a shortened file's
            tail); ``doc_count`` = before + new ids - ``chunks_deleted``.
        doc_count: documents in the index afterwards (with ``dry_run``: it would hold).
        dry_run: nothing was changed.
        skipped: ``(rel, reason)`` of folder entries passed over (unsupported, binary, corrupt).
        duplicates: ids that occurred more than once (``on_duplicate="last"``).
        job_id: the push's job, or None when nothing was pushed.
    """

    added: list[str]
    changed: list[str]
    removed: list[str]
    unchanged: list[str]
    chunks_added: int
    chunks_deleted: int
    doc_count: int
    dry_run: bool
    skipped: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    job_id: Optional[str] = None


@dataclass
class _Plan:
    added: list[str]
    changed: list[str]
    removed: list[str]
    unchanged: list[str]
    skipped: list[tuple[str, str]]
    duplicates: list[str]
    to_delete: list[str]
    to_add: list[DocumentInfo]
    final_count: int


async def sync_directory(
    client: MossClient,
    name: str,
    directory: str | os.PathLike[str],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    hidden: bool = False,
    chunking: Optional[Chunking] = None,
    model_id: Optional[str] = None,
    dry_run: bool = False,
    progress: Optional[Callable[[int, int], None]] = None,
    on_duplicate: OnDuplicate = "error",
    verify: bool = False,
    before_push: Optional[Callable[[], None]] = None,
) -> SyncReport:
    """Make index ``name`` hold exactly the documents of ``directory`` (see the module docstring).

    Args:
        client: the client whose project holds the index.
        name: the index; created when it does not exist.
        directory: the folder; chunk ids are ``{path relative to it}#{n}``.
        include, exclude, hidden: file selection, as :func:`moss.ingest.collect_documents`.
        chunking: chunking settings (default ``Chunking()``).
        model_id: the model of a new index (default ``moss-minilm``); for an existing index it
            must be None or its model.
        dry_run: compute the report, change nothing (nothing is embedded).
        progress: called with ``(chunks embedded, chunks to embed)`` before and after each batch.
        on_duplicate: ``"error"`` or ``"last"``, as in ``collect_documents``.
        verify: also parse files whose bytes are unchanged and replace their chunks if they
            differ (use it after changing ``chunking``).
        before_push: called once everything is embedded, right before the push is sent (and
            never when nothing is pushed): a caller that turns Ctrl-C into a cancellation can
            stop doing so here, since from now on the stored index changes.

    Raises:
        InvalidArgumentError: ``directory`` is not a folder, it yields no documents, a duplicate
            id (``on_duplicate="error"``), a bad option or a model mismatch.
        MossError: from the session, the push or the job.
        RuntimeError: the push's job failed.
    """
    root = os.fspath(directory)
    if not os.path.isdir(root):
        raise InvalidArgumentError(f"{root} is not a directory")
    if on_duplicate not in ("error", "last"):
        raise InvalidArgumentError(f"on_duplicate must be 'error' or 'last', not {on_duplicate!r}")
    if chunking is not None and not isinstance(chunking, Chunking):
        raise InvalidArgumentError(
            f"chunking must be a moss.Chunking, not {type(chunking).__name__}"
        )
    found = await asyncio.to_thread(
        discover_all, [root], include=include, exclude=exclude, hidden=hidden
    )
    session = await client.session(name, model_id=model_id)
    try:
        stored = await session.get_docs()
        plan = await asyncio.to_thread(
            _plan, found.files, found.skipped, stored, chunking, on_duplicate, verify
        )
        if plan.final_count == 0:
            raise InvalidArgumentError(
                f"{root} yields no documents and an index cannot be empty; nothing was changed"
                + (f" (delete the index {name!r} instead)" if stored else "")
            )
        job_id: Optional[str] = None
        doc_count = plan.final_count
        if not dry_run and (plan.to_delete or plan.to_add):
            if plan.to_delete:
                await session.delete_docs(plan.to_delete)
            await _embed(session, plan.to_add, progress)
            if before_push is not None:
                before_push()
            pushed = await session.push_index()
            await client.wait_for_job(pushed.job_id, poll_interval_seconds=0.05)
            job_id = pushed.job_id
            doc_count = session.doc_count
        return SyncReport(
            added=plan.added,
            changed=plan.changed,
            removed=plan.removed,
            unchanged=plan.unchanged,
            chunks_added=len(plan.to_add),
            chunks_deleted=len(plan.to_delete),
            doc_count=doc_count,
            dry_run=dry_run,
            skipped=plan.skipped,
            duplicates=plan.duplicates,
            job_id=job_id,
        )
    finally:
        await session.close()


async def _embed(
    session: SessionIndex,
    docs: list[DocumentInfo],
    progress: Optional[Callable[[int, int], None]],
) -> None:
    total = len(docs)
    if progress is not None and total:
        progress(0, total)
    i, size = 0, _FIRST_BATCH
    while i < total:
        t0 = time.perf_counter()
        batch = docs[i : i + size]
        await session.add_docs(batch)
        i += len(batch)
        if progress is not None:
            progress(i, total)
        per_doc = (time.perf_counter() - t0) / len(batch)
        size = int(min(max(_BATCH_TARGET_S / max(per_doc, 1e-6), 1), _MAX_BATCH))


def _plan(
    files: list[SourceFile],
    skipped_in: list[tuple[str, str]],
    stored: list[DocumentInfo],
    chunking: Optional[Chunking],
    on_duplicate: OnDuplicate,
    verify: bool,
) -> _Plan:
    """Read and hash every file, rebuild the changed ones, and diff against ``stored``."""
    # Under "last", a file's stored chunks may lack ids another file shadowed at an earlier
    # sync; when that file goes, an unchanged file's copy must come back, which only parsing
    # every file reveals (about 1 ms a file, still no embedding for the unchanged ones).
    verify = verify or on_duplicate == "last"
    by_source: dict[str, list[DocumentInfo]] = {}
    for d in stored:
        key = (d.metadata or {}).get("source") or d.id
        by_source.setdefault(key, []).append(d)

    added: list[str] = []
    changed: list[str] = []
    unchanged: list[str] = []
    skipped = list(skipped_in)
    per_file: list[tuple[SourceFile, list[DocumentInfo]]] = []
    kept: set[int] = set()  # id() of stored documents kept as they are
    present: set[str] = set()
    for source in files:
        try:
            data = read_source(source)
        except MossError as e:
            skipped.append((source.rel, e.message))
            continue
        digest = sha256_hex(data)
        prior = by_source.get(source.rel, [])
        same_bytes = bool(prior) and all((d.metadata or {}).get("sha256") == digest for d in prior)
        if same_bytes and not verify:
            present.add(source.rel)
            unchanged.append(source.rel)
            per_file.append((source, prior))
            kept.update(id(d) for d in prior)
            continue
        try:
            docs = source_documents(source, data, chunking, digest)
        except MossError as e:
            skipped.append((source.rel, e.message))
            continue
        present.add(source.rel)
        if same_bytes and _same_documents(prior, docs):
            unchanged.append(source.rel)
            per_file.append((source, prior))
            kept.update(id(d) for d in prior)
        elif prior:
            changed.append(source.rel)
            per_file.append((source, docs))
        elif docs:
            added.append(source.rel)
            per_file.append((source, docs))
        else:
            unchanged.append(source.rel)  # yields nothing, and nothing was stored

    final, duplicates = merge_documents(per_file, on_duplicate)
    to_add = [d for d in final if id(d) not in kept]
    final_ids = {d.id for d in final}
    # Stored ids that disappear; an id that is re-added is replaced by the upsert instead.
    to_delete = [d.id for d in stored if d.id not in final_ids]
    removed = sorted(key for key in by_source if key not in present)
    return _Plan(
        added=added,
        changed=changed,
        removed=removed,
        unchanged=unchanged,
        skipped=skipped,
        duplicates=duplicates,
        to_delete=to_delete,
        to_add=to_add,
        final_count=len(final),
    )


def _same_documents(stored: list[DocumentInfo], built: list[DocumentInfo]) -> bool:
    if len(stored) != len(built):
        return False
    index = {d.id: d for d in stored}
    for d in built:
        s = index.get(d.id)
        if s is None or s.text != d.text or (s.metadata or {}) != (d.metadata or {}):
            return False
        if s.payload != d.payload:
            return False
    return True

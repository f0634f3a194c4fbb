"""What several commands share: the client, the ingestion flags, and embed-then-push.

Why ``index create`` and ``docs add`` both embed here, in a local session, and push once: the
work is then (a) visible — a progress bar per batch with rate and ETA — and (b) atomic and
cancellable — nothing reaches the stored index until the single push at the end, so a Ctrl-C
before it changes nothing, and once the push is sent it is finished (see :mod:`.interrupt`). The
store keeps pushed vectors as they are, so the stored index equals what ``create_index`` or
``add_docs`` would build.

Library modules are imported inside the functions: this module is imported only by command
handlers, but it keeps the CLI's import graph easy to read (nothing heavy at module level).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgumentError
from .interrupt import point_of_no_return, say_when_interrupted
from .progress import Progress

if TYPE_CHECKING:
    from ..client import MossClient
    from ..ingest.documents import IngestBatch
    from ..session import SessionIndex
    from ..types import Chunking, DocumentInfo

__all__ = [
    "DEFAULT_PROJECT_ID",
    "PushOutcome",
    "chunking_from",
    "collect",
    "embed_and_push",
    "make_client",
    "skipped_json",
]

DEFAULT_PROJECT_ID = "default"
# A batch is embedded in a worker thread; the loop awaits it, so Ctrl-C lands between batches.
# Batches are sized to take about this long (first batch: _FIRST_BATCH documents).
_BATCH_TARGET_S = 0.25
_FIRST_BATCH = 16
_MAX_BATCH = 512


def make_client(args: argparse.Namespace) -> MossClient:
    """The client named by the flags, else the environment, else the embedded default project.

    Raises:
        InvalidArgumentError: a server URL without a project key (said before any request).
    """
    from ..client import MossClient

    project_id = args.project_id or os.environ.get("MOSS_PROJECT_ID") or DEFAULT_PROJECT_ID
    project_key = args.project_key or os.environ.get("MOSS_PROJECT_KEY") or ""
    server_url = args.server_url or os.environ.get("MOSS_SERVER_URL") or None
    if server_url and not project_key.strip():
        raise InvalidArgumentError(
            f"no project key for the server at {server_url}: set MOSS_PROJECT_KEY or pass "
            "--project-key (`moss projects create` prints one)"
        )
    return MossClient(project_id, project_key, server_url=server_url)


def chunking_from(args: argparse.Namespace) -> Chunking | None:
    """The ``--chunk-*`` flags as a :class:`~moss.types.Chunking` (None when none is given)."""
    from ..types import Chunking

    if args.chunk_size is None and args.chunk_overlap is None and args.chunk_mode is None:
        return None
    return Chunking(
        chunk_size=args.chunk_size,
        chunk_overlap=args.chunk_overlap,
        mode=args.chunk_mode or "pages",
    )


async def collect(args: argparse.Namespace) -> IngestBatch:
    """Read and chunk the paths of ``index create`` / ``docs add`` (files, folders, ``-``).

    Runs in a worker thread so the event loop stays responsive; stdin is read when ``-`` is one
    of the paths.
    """
    from ..ingest.documents import collect_documents

    paths: list[str] = list(args.paths)
    stdin = io.BytesIO(await read_stdin()) if "-" in paths else None
    return await asyncio.to_thread(
        collect_documents,
        paths,
        include=tuple(args.include or ()),
        exclude=tuple(args.exclude or ()),
        hidden=bool(args.hidden),
        chunking=chunking_from(args),
        on_duplicate=args.on_duplicate,
        stdin=stdin,
    )


async def read_stdin() -> bytes:
    """All of stdin, read in a daemon thread.

    Not in the loop's executor: a read blocked on a terminal cannot be stopped, and the executor
    is waited for when a cancelled command cleans up, so Ctrl-C would hang until end of input. A
    daemon thread is simply abandoned at exit (it reads the file descriptor, see below).
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bytes] = loop.create_future()

    def deliver(data: bytes | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(data or b"")

    def read() -> None:
        data: bytes | None = None
        error: BaseException | None = None
        try:
            try:
                fd = sys.stdin.fileno()
            except (AttributeError, ValueError, OSError):  # not a real file (embedded use, tests)
                data = sys.stdin.buffer.read()
            else:  # os.read, not sys.stdin.buffer: a daemon thread blocked in the buffered
                # reader holds its lock, and the interpreter aborts when it flushes at exit
                chunks = []
                while chunk := os.read(fd, 1 << 20):
                    chunks.append(chunk)
                data = b"".join(chunks)
        except BaseException as e:  # handed to the awaiting task
            error = e
        with contextlib.suppress(RuntimeError):  # the loop is closed: the command was cancelled
            loop.call_soon_threadsafe(deliver, data, error)

    threading.Thread(target=read, name="moss-stdin", daemon=True).start()
    return await done


def skipped_json(batch: IngestBatch) -> list[dict[str, str]]:
    """``batch.skipped`` as JSON objects ``{"path", "reason"}``."""
    return [{"path": rel, "reason": reason} for rel, reason in batch.skipped]


def report_skipped(batch: IngestBatch, *, quiet: bool) -> None:
    """One stderr line per skipped file, and the duplicates that ``--on-duplicate last`` kept."""
    if quiet:
        return
    for rel, reason in batch.skipped:
        sys.stderr.write(f"skipped {rel}: {reason}\n")
    if batch.duplicates:
        shown = ", ".join(batch.duplicates[:5]) + (" …" if len(batch.duplicates) > 5 else "")
        sys.stderr.write(
            f"{len(batch.duplicates)} duplicate id(s), the last occurrence kept: {shown}\n"
        )


@dataclass(frozen=True)
class PushOutcome:
    """What :func:`embed_and_push` did."""

    doc_count: int
    added: int
    updated: int
    model: str
    job_id: str
    seconds: float


async def embed_and_push(
    client: MossClient,
    name: str,
    docs: Sequence[DocumentInfo],
    *,
    model: str | None,
    resume: bool,
    quiet: bool = False,
) -> PushOutcome:
    """Embed ``docs`` into a session on ``name`` in batches (with progress), then push it once.

    ``resume``: start from the stored index (``docs add``) rather than empty (``index create``).
    A cancellation before the push leaves the stored index as it was.
    """
    start = time.perf_counter()
    say_when_interrupted(f"interrupted: index {name!r} is unchanged")
    session = await client.session(name, model_id=model, auto_load_on_init=resume)
    try:
        model_id = session.model_id
        label = "indexing" if model_id == "custom" else f"embedding ({model_id})"
        added = updated = 0
        with Progress(label, len(docs), enabled=not quiet) as bar:
            i, size = 0, _FIRST_BATCH
            while i < len(docs):
                t0 = time.perf_counter()
                a, u = await session.add_docs(list(docs[i : i + size]))
                added, updated = added + a, updated + u
                i += size
                bar.update(i)
                per_doc = (time.perf_counter() - t0) / size
                size = int(min(max(_BATCH_TARGET_S / max(per_doc, 1e-6), 1), _MAX_BATCH))
        with point_of_no_return():
            pushed = await session.push_index()
            await client.wait_for_job(pushed.job_id, poll_interval_seconds=0.05)
        return PushOutcome(
            doc_count=session.doc_count,
            added=added,
            updated=updated,
            model=model_id,
            job_id=pushed.job_id,
            seconds=time.perf_counter() - start,
        )
    finally:
        await _close_session(session)


async def _close_session(session: SessionIndex) -> None:
    """Close the session after its background graph work (no native thread left at exit)."""
    engine: Any = session.engine
    wait = getattr(engine, "wait_for_background_work", None)
    if wait is not None:
        await asyncio.shield(asyncio.to_thread(wait))
    await session.close()

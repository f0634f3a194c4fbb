"""The store jobs that read documents from outside: ``files``, ``crawl`` and ``purge``.

They run where the index is built (the embedded store in process, or ``moss serve``), like the
other jobs, and follow the runner's rules: the new index is built in memory, written as a new
version and committed in one transaction, so a failure leaves the index exactly as it was.

* ``files`` (``create_index_from_files``): the uploaded container (:func:`moss.cloud.wire.
  decode_files`) is checked when the upload completes (:func:`validate_files`: the same checks as
  the client), then each file is parsed by :mod:`moss.ingest` into ``{name}#{n}`` chunks (phase
  ``parsing``), embedded (``generating_embeddings``) and built (``building_index``). A file that
  yields no text fails the job with ``No readable text was found in '<name>'``.
* ``crawl``: crawls the source's site (phase ``crawling``), diffs the pages against the chunks
  the source indexed before (:func:`plan_sync`; ``parsing_documents``), embeds
  only new and changed pages and commits; a crawl that changes nothing completes without writing
  a version. It runs on a thread of its own (see :class:`~moss.server.jobs.JobRunner`), so it
  reads the index from its blob and never touches the runner's cache.
* ``purge``: removes a deleted source's chunks, then the source's row.

The resync diff (:func:`plan_sync`): unchanged pages (same sha256 as the chunks the source holds)
keep their chunks and vectors; changed and new pages are chunked (``{url}#{n}`` ids, metadata
``source``, ``title``, ``sha256``, ``webSourceId``) for embedding; chunks of pages that are gone
are deleted, except for pages that failed transiently, which keep theirs. A page whose chunk ids
belong to another source or to documents added with ``add_docs`` is skipped, never overwritten.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..engine import CUSTOM, Engine
from ..errors import InvalidArgumentError, MossError
from ..sources import CrawlStats, check_file_specs, check_files_model_id, check_parse_options
from ..types import DocumentInfo, GetDocumentsOptions
from .catalog import JobRow
from .runtime_types import JobHost
from .versions import Loaded

if TYPE_CHECKING:
    from ..ingest.web import CrawlResult, Page
    from .jobs import JobRunner  # the runner imports this module: a type-only back-reference

__all__ = [
    "SyncPlan",
    "file_documents",
    "plan_sync",
    "run",
    "strip_page_furniture",
    "validate_files",
]

log = logging.getLogger(__name__)
Progress = Callable[[float, str], None]


def validate_files(store: JobHost, job: JobRow, blob: Any) -> tuple[int, str]:
    """Check an uploaded ``files`` container and reserve the new index; ``(files, index id)``."""
    import secrets

    from ..cloud.wire import decode_files

    files = decode_files(blob)
    check_file_specs([(name, ctype, len(data)) for name, ctype, data in files])
    check_parse_options(job.params.get("parse_options") or None)
    model = check_files_model_id(job.params.get("model_id"))
    from ..embedding import get_embedder

    get_embedder(model)  # MODEL_UNAVAILABLE now rather than as a failed job
    index_id = secrets.token_hex(16)
    store.catalog.reserve_index(job.project_id, job.index_name, index_id, model, None)
    return len(files), index_id


_PAGE_NUMBER = re.compile(
    r"^(?:page\s*)?[-–—(\[]?\s*\d{1,5}\s*[-–—)\]]?(?:\s*(?:of|/)\s*\d{1,5})?$", re.IGNORECASE
)
_DIGITS = re.compile(r"\d+")
_EDGE = 3  # lines at the top and at the bottom of a page where headers and footers live


def strip_page_furniture(pages: Sequence[str]) -> list[str]:
    """Drop running headers, footers and page numbers from the pages of a PDF.

    A line among the first or last three non-blank lines of a page is dropped when it is a bare
    page number (``7``, ``- 7 -``, ``Page 7 of 9``), or when the same line (digits ignored, so
    ``Report 2024, page 3`` matches ``..., page 4``) sits in that zone on more than half of the
    pages (on both, for a two-page document). Text in the middle of a page is never touched.

    >>> strip_page_furniture(["ACME\\nIntro text\\n1", "ACME\\nMore text\\n2"])
    ['Intro text', 'More text']
    """
    split = [[line.strip() for line in p.split("\n")] for p in pages]
    zones: list[set[int]] = []
    counts: dict[str, int] = {}
    for lines in split:
        filled = [i for i, line in enumerate(lines) if line]
        zone = set(filled[:_EDGE] + filled[-_EDGE:])
        zones.append(zone)
        for key in {_DIGITS.sub("#", " ".join(lines[i].split()).lower()) for i in zone}:
            counts[key] = counts.get(key, 0) + 1
    need = len(pages) // 2 + 1
    repeated = {k for k, c in counts.items() if len(pages) >= 2 and c >= need}
    out = []
    for lines, zone in zip(split, zones):
        kept = [
            line
            for i, line in enumerate(lines)
            if i not in zone
            or not (
                _PAGE_NUMBER.match(line)
                or _DIGITS.sub("#", " ".join(line.split()).lower()) in repeated
            )
        ]
        out.append("\n".join(kept).strip("\n"))
    return out


def file_documents(
    data: bytes,
    name: str,
    content_type: str,
    options: dict[str, Any] | None = None,
    extra_metadata: dict[str, str] | None = None,
) -> list[DocumentInfo]:
    """The chunks of one file (ids ``{name}#{n}``), as :func:`moss.ingest.documents.
    documents_from_bytes` makes them, except that a PDF loses its page furniture
    (:func:`strip_page_furniture`) and, with ``segmentation_method="page_by_page"``, is chunked
    page by page (no chunk spans two pages).

    Raises:
        InvalidArgumentError: the file cannot be parsed, or has no readable text.
    """
    from ..ingest.documents import documents_from_bytes, sha256_hex
    from ..ingest.parsers import kind_for, parse_bytes

    if kind_for(name, content_type) != "pdf":
        docs: list[DocumentInfo] = documents_from_bytes(
            data, name, content_type=content_type, extra_metadata=extra_metadata
        )
    else:
        from ..chunking import chunk_text
        from ..types import Chunking

        parsed = parse_bytes(data, name, content_type)
        pages = [p for p in strip_page_furniture(parsed.pages) if p.strip()]
        by_page = (options or {}).get("segmentation_method") == "page_by_page"
        texts = pages if by_page else ["\n\n".join(pages)]
        chunks = [c for t in texts for c in chunk_text(t, Chunking(), markdown=False)]
        meta: dict[str, str] = dict(parsed.metadata)
        if parsed.title:
            meta["title"] = parsed.title
        meta.update(extra_metadata or {})
        meta.update(parentId=name, source=name, sha256=sha256_hex(data))
        docs = [DocumentInfo(f"{name}#{n}", c, dict(meta)) for n, c in enumerate(chunks)]
    if not any(d.text.strip() for d in docs):
        raise InvalidArgumentError(
            f"No readable text was found in {name!r} (mosslite reads the text layer only; "
            "scanned pages would need OCR)"
        )
    return docs


def run(runner: JobRunner, job: JobRow, progress: Progress) -> None:
    """Execute a ``files``, ``crawl`` or ``purge`` job (errors propagate to the runner)."""
    if job.kind == "files":
        _files(runner, job, progress)
    elif job.kind == "crawl":
        _crawl(runner, job, progress)
    else:
        _purge(runner, job, progress)


def _new_target(runner: JobRunner, model_id: str) -> Loaded:
    return runner.loaded(None, Engine(CUSTOM, None), model_id, None)


def _files(runner: JobRunner, job: JobRow, progress: Progress) -> None:
    from ..cloud.wire import decode_files

    assert job.input_key is not None
    files = decode_files(runner.store.blobs.read(job.input_key))
    options = check_parse_options(job.params.get("parse_options") or None)
    docs: list[DocumentInfo] = []
    for i, (name, ctype, data) in enumerate(files):
        progress(2 + 8 * i / len(files), "parsing")
        docs.extend(file_documents(bytes(data), name, ctype, options))
    progress(10, "parsing_complete")
    target = runner._embed(_new_target(runner, str(job.params["model_id"])), docs, progress)
    progress(80, "building_index")
    target.engine.add_documents(docs)
    runner._commit(job, progress, None, target, snapshot=runner._snapshot(job, target))


def _base(runner: JobRunner, job: JobRow, progress: Progress) -> Loaded:
    """The index's current version, read from its blob (a crawl thread leaves the cache alone)."""
    store = runner.store
    row = store.catalog.get_index(job.project_id, job.index_name)
    if row is None or row.id != job.index_id:
        raise MossError(
            f"index {job.index_name!r} was deleted before the job ran", code="NOT_FOUND"
        )
    if row.version is None:  # never built (a new web source's index): start empty
        return runner.loaded(None, Engine(CUSTOM, row.dimension), row.model_id, None)
    progress(45, "downloading")
    return runner.read_version(row.version)


def _source_docs(engine: Engine, source_id: str) -> list[DocumentInfo]:
    flt = {"field": "webSourceId", "condition": {"$eq": source_id}}
    return engine.get_documents(GetDocumentsOptions(filter=flt))


def _crawl(runner: JobRunner, job: JobRow, progress: Progress) -> None:
    from ..ingest.web import CrawlError, CrawlSettings, crawl

    store = runner.store
    source = store.web.source_of(job)
    if source is None or source.status == "removing":  # deleted after the crawl was queued
        store.web.complete_unchanged(job)
        return
    try:
        progress(1, "crawling")
        settings = CrawlSettings(
            root_url=source.root_url,
            max_pages=source.max_pages,
            max_depth=source.max_depth,
            include_paths=tuple(source.include_paths),
            exclude_paths=tuple(source.exclude_paths),
            respect_robots=source.respect_robots,
            parse_documents=source.parse_documents,
            allow_private=store.allow_private_crawl,
        )
        result = crawl(
            settings,
            progress=lambda done, total: progress(1 + 40 * done / max(total, 1), "crawling"),
            should_stop=runner.should_stop,
        )
        if not result.pages:
            raise CrawlError(
                f"the crawl of {source.root_url} found no page to index "
                f"({result.skipped} skipped, {len(result.unreachable)} unreachable)",
                code="NO_PAGES",
            )
        base = _base(runner, job, progress)
        engine = base.engine

        def owners(ids: list[str]) -> dict[str, str | None]:
            found = engine.get_documents(GetDocumentsOptions(doc_ids=ids))
            return {d.id: (d.metadata or {}).get("webSourceId") for d in found}

        plan = plan_sync(
            source.id,
            _source_docs(engine, source.id),
            result,
            max_documents=source.max_documents,
            to_documents=lambda page: _page_documents(page, source.id),
            owners=owners,
            progress=lambda i, n: progress(48 + 7 * i / max(n, 1), "parsing_documents"),
        )
        if not plan.add and not plan.delete and base.version is not None:
            store.web.complete_unchanged(job)
        else:
            if plan.delete:
                engine.delete(plan.delete)
            target = runner._embed(base, plan.add, progress) if plan.add else base
            progress(80, "building_index")
            if plan.add:
                target.engine.add_documents(plan.add)
            snapshot = runner._snapshot(job, target)
            runner._commit(job, progress, base, target, snapshot=snapshot, cache=False)
    except MossError as e:
        store.web.crawl_failed(source.id, job.id, e.code or "INTERNAL", e.message)
        raise
    except Exception as e:
        if runner.should_stop():  # the runner's interruption at interpreter exit
            store.web.crawl_failed(source.id, job.id, "INTERRUPTED", "the crawl was interrupted")
        else:
            message = f"internal error ({type(e).__name__})"
            store.web.crawl_failed(source.id, job.id, "INTERNAL", message)
        raise
    store.web.crawl_done(source.id, job.id, plan.page_count, plan.doc_count, plan.stats)


def _page_documents(page: Page, source_id: str) -> list[DocumentInfo]:
    """The chunks of a crawled page: ``{url}#{n}`` with ``source``, ``title``, ``sha256`` and
    ``webSourceId`` metadata (a page without text yields none rather than an error)."""
    try:
        return file_documents(
            page.data, page.url, page.content_type, None, {"webSourceId": source_id}
        )
    except MossError:  # unreadable, or a PDF/DOCX without the parsers extra: skipped
        return []


def _purge(runner: JobRunner, job: JobRow, progress: Progress) -> None:
    store = runner.store
    source_id = str(job.params.get("source_id"))
    base = runner._base(job, progress)
    ids = [d.id for d in _source_docs(base.engine, source_id)]
    if ids:
        progress(50, "building_index")
        base.engine.delete(ids)
        runner._commit(job, progress, base, base, snapshot=runner._snapshot(job, base))
    else:
        store.web.complete_unchanged(job)
    store.web.purge_done(source_id)


# ------------------------------------------------------------------------------ resync diff


@dataclass
class SyncPlan:
    """What a crawl changes in the index: chunks to embed and add, ids to delete."""

    add: list[DocumentInfo]
    delete: list[str]
    stats: CrawlStats
    page_count: int  # pages the source holds afterwards
    doc_count: int  # chunks the source holds afterwards


def plan_sync(
    source_id: str,
    existing: Sequence[DocumentInfo],
    result: CrawlResult,
    *,
    max_documents: int,
    to_documents: Callable[[Page], list[DocumentInfo]],
    owners: Callable[[list[str]], dict[str, str | None]],
    progress: Callable[[int, int], None] | None = None,
) -> SyncPlan:
    """Diff a crawl against the source's indexed chunks (see the module docstring).

    Args:
        source_id: the web source.
        existing: the index's chunks whose ``webSourceId`` is ``source_id``.
        result: the crawl.
        max_documents: cap on the chunks the source holds afterwards.
        to_documents: chunks a page (may raise ``InvalidArgumentError`` for unreadable pages).
        owners: for chunk ids, the ``webSourceId`` of the documents already in the index under
            that id (None for documents without one); absent ids are free.
        progress: called with ``(pages processed, pages)``.
    """
    old: dict[str, tuple[str | None, list[str]]] = {}
    for d in existing:
        meta = d.metadata or {}
        url = meta.get("source", d.id.rsplit("#", 1)[0])
        sha, ids = old.get(url, (meta.get("sha256"), []))
        ids.append(d.id)
        old[url] = (sha, ids)
    kept: set[str] = set()
    hashes: set[str] = set()
    add: list[DocumentInfo] = []
    delete: set[str] = set()
    total = 0
    counts: dict[str, int] = dict.fromkeys(
        ("new", "changed", "unchanged", "removed", "skipped", "parsed"), 0
    )
    for i, page in enumerate(result.pages):
        if progress is not None:
            progress(i, len(result.pages))
        if page.sha256 in hashes or page.url in kept:  # the same content under another URL
            counts["skipped"] += 1
            continue
        previous = old.get(page.url)
        if previous is not None and previous[0] == page.sha256:
            if total + len(previous[1]) > max_documents:
                counts["skipped"] += 1
                continue
            total += len(previous[1])
            kept.add(page.url)
            hashes.add(page.sha256)
            counts["unchanged"] += 1
            continue
        try:
            docs = to_documents(page)
        except InvalidArgumentError:
            docs = []
        ids = [d.id for d in docs]
        taken = owners(ids) if ids else {}
        if not docs or any(owner != source_id for owner in taken.values()):
            counts["skipped"] += 1
            continue
        if total + len(docs) > max_documents:
            counts["skipped"] += 1
            continue
        total += len(docs)
        kept.add(page.url)
        hashes.add(page.sha256)
        add.extend(docs)
        counts["parsed"] += page.kind != "html"
        if previous is not None:
            counts["changed"] += 1
            delete.update(set(previous[1]) - set(ids))
        else:
            counts["new"] += 1
    for url, (_, ids) in old.items():
        if url in kept:
            continue
        if url in result.unreachable:  # a transient failure: keep what we had
            kept.add(url)
            total += len(ids)
            continue
        delete.update(ids)
        counts["removed"] += 1
    stats = CrawlStats(
        pages_fetched=result.fetched,
        pages_new=counts["new"],
        pages_changed=counts["changed"],
        pages_unchanged=counts["unchanged"],
        pages_removed=counts["removed"],
        pages_skipped=result.skipped + counts["skipped"],
        documents_parsed=counts["parsed"],
        chunks_embedded=len(add),
        chunks_deleted=len(delete),
    )
    return SyncPlan(add, sorted(delete), stats, len(kept), total)

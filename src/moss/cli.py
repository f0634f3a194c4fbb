"""The ``moss`` command line: a thin shell over the public library API.

Why it is shaped like this: every command parses its arguments, makes one or two library calls and
formats the result, so the CLI can never drift from what a Python user gets. It uses ``argparse``
(no extra dependency) with ``RawDescriptionHelpFormatter`` so that each ``--help`` ends with an
``Example:`` block that reads as written.

Conventions:

* Credentials and server come from ``--project-id/--project-key/--server-url`` (accepted before or
  after the command), else ``MOSS_PROJECT_ID``/``MOSS_PROJECT_KEY``/``MOSS_SERVER_URL``, else the
  embedded default store with project ``default``.
* Results go to stdout (``--json`` for scripts); progress and errors go to stderr. A ``MossError``
  (and the few ``RuntimeError``/``TimeoutError`` cases of the API) becomes one line
  ``error: <message>`` on stderr and exit code 1; argparse usage errors exit 2.
* ``moss index create`` embeds on this machine in batches inside a session, so it can draw a real
  progress bar, then pushes the vectors as the new cloud index (the server stores vectors as-is).
* ``moss serve`` and ``moss projects create`` import :mod:`moss.server` only when run, so
  ``moss --help`` works without the ``server`` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, TextIO

from . import __version__
from .client import MossClient
from .errors import NOT_FOUND, AlreadyExistsError, InvalidArgumentError, MossError
from .types import Chunking, DocumentInfo, GetDocumentsOptions, IndexInfo, QueryOptions

__all__ = ["build_parser", "main"]

DEFAULT_PROJECT_ID = "default"
SERVER_HINT = "pip install 'moss[server]'"
_ADD_BATCH = 64
_SNIPPET = 60

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


# --------------------------------------------------------------------------------------------
# Output helpers


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _json_out(value: Any) -> None:
    sys.stdout.write(json.dumps(_plain(value), indent=2, ensure_ascii=False) + "\n")


def _plain(value: Any) -> Any:
    """Dataclasses and enums as JSON-ready values."""
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "value") and isinstance(getattr(value, "value", None), str):
        return value.value
    return value


def _snippet(text: str, width: int = _SNIPPET) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _meta(metadata: dict[str, str] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (metadata or {}).items())


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]

    def fmt(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([fmt(headers), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)])


class ProgressBar:
    """A progress bar on stderr: redrawn in place on a terminal, one final line otherwise."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self._label = label
        self._total = max(total, 1)
        self._stream = stream if stream is not None else sys.stderr
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._start = time.perf_counter()

    def update(self, done: int) -> None:
        """Show ``done`` of the total."""
        finished = done >= self._total
        if not self._tty and not finished:
            return
        frac = min(done / self._total, 1.0)
        bar = "#" * int(frac * 30)
        rate = done / max(time.perf_counter() - self._start, 1e-9)
        line = f"{self._label} [{bar:<30}] {done}/{self._total} ({rate:.0f}/s)"
        self._stream.write(("\r" if self._tty else "") + line + ("\n" if finished else ""))
        self._stream.flush()


# --------------------------------------------------------------------------------------------
# Client and argument helpers


def _client(args: argparse.Namespace) -> MossClient:
    project_id = args.project_id or os.environ.get("MOSS_PROJECT_ID") or DEFAULT_PROJECT_ID
    project_key = args.project_key or os.environ.get("MOSS_PROJECT_KEY") or ""
    server_url = args.server_url or os.environ.get("MOSS_SERVER_URL") or None
    return MossClient(project_id, project_key, server_url=server_url)


def _chunking(args: argparse.Namespace) -> Chunking | None:
    if args.chunk_size is None and args.chunk_overlap is None and args.chunk_mode is None:
        return None
    return Chunking(
        chunk_size=args.chunk_size,
        chunk_overlap=args.chunk_overlap,
        mode=args.chunk_mode or "pages",
    )


def _paths(files: Sequence[str]) -> list[Path]:
    paths = [Path(f) for f in files]
    for p in paths:
        if not p.is_file():
            raise InvalidArgumentError(f"no such file: {p}")
    return paths


def _parse_floats(text: str, what: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InvalidArgumentError(
            f"{what} must be comma-separated numbers, not {text!r}"
        ) from None


def _parse_filter(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidArgumentError(f"--filter is not valid JSON: {e.msg}") from None
    if not isinstance(value, dict):
        raise InvalidArgumentError("--filter must be a JSON object")
    return value


def _info_dict(info: IndexInfo) -> dict[str, Any]:
    out: dict[str, Any] = _plain(info)
    return out


# --------------------------------------------------------------------------------------------
# Commands: indexes


async def cmd_index_create(args: argparse.Namespace) -> int:
    """Embed the files locally in a session (with a progress bar), then push it as the index."""
    from .docs_input import normalize_docs

    paths = _paths(args.files)
    chunking = _chunking(args)
    async with _client(args) as client:
        try:
            await client.get_index(args.name)
        except MossError as e:
            if e.code != NOT_FOUND:
                raise
        else:
            raise AlreadyExistsError(f"index {args.name!r} already exists")
        custom = args.model == "custom"
        docs = normalize_docs(paths, chunking=chunking, custom_model=custom)
        if not docs:
            raise InvalidArgumentError("the files contain no documents")
        model = args.model or (
            "custom" if any(d.embedding is not None for d in docs) else client.DEFAULT_MODEL_ID
        )
        start = time.perf_counter()
        session = await client.session(args.name, model_id=model, auto_load_on_init=False)
        label = "indexing" if model == "custom" else f"embedding ({model})"
        bar = ProgressBar(label, len(docs))
        for i in range(0, len(docs), _ADD_BATCH):
            await session.add_docs(docs[i : i + _ADD_BATCH])
            bar.update(min(i + _ADD_BATCH, len(docs)))
        pushed = await session.push_index()
        await client.wait_for_job(pushed.job_id, poll_interval_seconds=0.1)
        count = session.doc_count
        await session.close()
        seconds = time.perf_counter() - start
        if args.json:
            _json_out(
                {
                    "index": args.name,
                    "doc_count": count,
                    "model": model,
                    "job_id": pushed.job_id,
                    "seconds": round(seconds, 3),
                }
            )
        else:
            _out(f"Created index {args.name!r}: {count} docs, model {model}, {seconds:.1f} s")
    return 0


async def cmd_index_list(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        infos = await client.list_indexes()
    if args.json:
        _json_out([_info_dict(i) for i in infos])
        return 0
    if not infos:
        _out("No indexes.")
        return 0
    rows = [[i.name, str(i.doc_count), i.model.id, str(i.status), i.updated_at] for i in infos]
    _out(_table(["name", "docs", "model", "status", "updated"], rows, right=[1]))
    return 0


async def cmd_index_info(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        info = await client.get_index(args.name)
    if args.json:
        _json_out(_info_dict(info))
        return 0
    for key, value in (
        ("name", info.name),
        ("id", info.id),
        ("docs", str(info.doc_count)),
        ("model", f"{info.model.id} ({info.model.version})"),
        ("status", str(info.status)),
        ("version", info.version),
        ("created", info.created_at),
        ("updated", info.updated_at),
    ):
        _out(f"{key + ':':<9}{value}")
    return 0


async def cmd_index_delete(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        deleted = await client.delete_index(args.name)
    if args.json:
        _json_out({"index": args.name, "deleted": deleted})
    else:
        _out(f"Deleted index {args.name!r}.")
    return 0


# --------------------------------------------------------------------------------------------
# Commands: documents


def _doc_dict(d: DocumentInfo) -> dict[str, Any]:
    return {"id": d.id, "text": d.text, "metadata": d.metadata, "payload": d.payload}


async def cmd_docs_get(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        docs = await client.get_docs(args.name, GetDocumentsOptions(doc_ids=args.id))
    if args.json:
        _json_out([_doc_dict(d) for d in docs])
        return 0
    rows = [[d.id, _snippet(d.text), _meta(d.metadata)] for d in docs]
    _out(_table(["id", "text", "metadata"], rows))
    _out(f"{len(docs)} document(s)")
    return 0


async def cmd_docs_add(args: argparse.Namespace) -> int:
    paths = _paths(args.files)
    async with _client(args) as client:
        result = await client.add_docs(args.name, list(paths), chunking=_chunking(args))
    if args.json:
        _json_out(result)
    else:
        _out(f"Added documents to {args.name!r}: {result.doc_count} docs in the index.")
    return 0


async def cmd_docs_delete(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        result = await client.delete_docs(args.name, list(args.ids))
    if args.json:
        _json_out(result)
    else:
        _out(f"Deleted from {args.name!r}: {result.doc_count} docs remain.")
    return 0


# --------------------------------------------------------------------------------------------
# Commands: query, eval


async def cmd_query(args: argparse.Namespace) -> int:
    opts = QueryOptions(
        top_k=args.top_k, alpha=args.alpha, filter=_parse_filter(args.filter), fusion=args.fusion
    )
    async with _client(args) as client:
        t0 = time.perf_counter()
        await client.load_index(args.name)
        load_ms = (time.perf_counter() - t0) * 1000.0
        t1 = time.perf_counter()
        result = await client.query(args.name, args.text, opts)
        query_ms = (time.perf_counter() - t1) * 1000.0
    if args.json:
        _json_out(
            {
                "index": args.name,
                "query": result.query,
                "model": result.model_id,
                "time_taken_ms": result.time_taken_ms,
                "query_ms": round(query_ms, 3),
                "load_ms": round(load_ms, 3),
                "docs": [
                    {
                        "id": d.id,
                        "score": d.score,
                        "text": d.text,
                        "metadata": d.metadata,
                        "payload": d.payload,
                    }
                    for d in result.docs
                ],
            }
        )
        return 0
    rows = [
        [str(i), d.id, f"{d.score:.3f}", _snippet(d.text), _meta(d.metadata)]
        for i, d in enumerate(result.docs, 1)
    ]
    if rows:
        _out(_table(["#", "id", "score", "text", "metadata"], rows, right=[0, 2]))
    _out(f"{len(rows)} result(s) in {query_ms:.1f} ms (index loaded in {load_ms:.0f} ms)")
    return 0


async def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_async

    report = await evaluate_async(
        args.dataset,
        split=args.split,
        embeddings_dir=args.embeddings,
        model_id=args.model,
        alphas=_parse_floats(args.alpha, "--alpha"),
        fusions=[f.strip() for f in args.fusion.split(",") if f.strip()],
        top_k=args.top_k,
        progress=sys.stderr,
    )
    if args.json:
        _json_out(report.to_dict())
    else:
        _out(report.to_markdown())
    return 0


# --------------------------------------------------------------------------------------------
# Commands: server


def _missing_extra(e: ImportError) -> MossError:
    return MossError(
        f"this command needs the server extra ({e.name or e}): {SERVER_HINT}", code="INTERNAL"
    )


def _server_module(*, web: bool) -> Any:
    """``moss.server``; with ``web``, also check that Starlette and uvicorn are importable."""
    try:
        from . import server

        if web:
            import starlette  # noqa: F401
            import uvicorn  # noqa: F401
    except ImportError as e:
        raise _missing_extra(e) from e
    return server


async def cmd_serve(args: argparse.Namespace) -> int:
    """Placeholder handler: ``main`` runs :func:`run_server` on the main thread instead."""
    return run_server(args)


def run_server(args: argparse.Namespace) -> int:
    # Runs on the main thread, outside any event loop: uvicorn installs its signal handlers only
    # there, and Ctrl-C must reach its graceful shutdown so the store finishes queued jobs.
    server = _server_module(web=True)
    sys.stderr.write(f"moss {__version__} serving {args.data} on http://{args.host}:{args.port}\n")
    try:
        server.serve(args.data, args.host, args.port)
    except ImportError as e:  # an optional piece the server imports lazily
        raise _missing_extra(e) from e
    return 0


async def cmd_projects_create(args: argparse.Namespace) -> int:
    server = _server_module(web=False)
    try:
        project_id, project_key = server.create_project(args.data, name=args.name)
    except ImportError as e:
        raise _missing_extra(e) from e
    if args.json:
        _json_out({"project_id": project_id, "project_key": project_key})
    else:
        _out(f"MOSS_PROJECT_ID={project_id}")
        _out(f"MOSS_PROJECT_KEY={project_key}")
    return 0


# --------------------------------------------------------------------------------------------
# Parser


def _example(text: str) -> str:
    return "Example:\n" + "\n".join("  " + line for line in text.strip().splitlines())


def _common() -> argparse.ArgumentParser:
    """Options valid on every command (SUPPRESS lets them sit before or after the command)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection")
    g.add_argument(
        "--project-id",
        default=argparse.SUPPRESS,
        help="project id (env MOSS_PROJECT_ID; default 'default')",
    )
    g.add_argument(
        "--project-key", default=argparse.SUPPRESS, help="project key (env MOSS_PROJECT_KEY)"
    )
    g.add_argument(
        "--server-url",
        default=argparse.SUPPRESS,
        help="a `moss serve` server (env MOSS_SERVER_URL; default: embedded store)",
    )
    return p


def _chunk_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("chunking (characters)")
    g.add_argument("--chunk-size", type=int, help="chunk size, 200 to 2000 (default 1200)")
    g.add_argument("--chunk-overlap", type=int, help="overlap between chunks (default 200)")
    g.add_argument("--chunk-mode", choices=["pages", "sentences"], help="default: pages")


def build_parser() -> argparse.ArgumentParser:
    """The full ``moss`` argument parser."""
    common = _common()
    fmt = argparse.RawDescriptionHelpFormatter
    root = argparse.ArgumentParser(
        prog="moss",
        description="Offline-first semantic and hybrid search: indexes, documents, queries, "
        "evaluation and a self-hostable server.",
        epilog=_example('moss index create notes notes.md\nmoss query notes "what is due friday"'),
        formatter_class=fmt,
        parents=[common],
    )
    root.add_argument("--version", action="version", version=f"moss {__version__}")
    sub = root.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def leaf(
        parent: Any, name: str, help_: str, example: str, handler: Handler, json_flag: bool = True
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=_example(example),
            formatter_class=fmt,
            parents=[common],
        )
        if json_flag:
            p.add_argument("--json", action="store_true", help="print JSON for scripts")
        p.set_defaults(handler=handler)
        return p

    def group(name: str, help_: str, example: str) -> Any:
        p = sub.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=_example(example),
            formatter_class=fmt,
            parents=[common],
        )
        return p.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)

    index = group("index", "Create, list, inspect and delete indexes.", "moss index list")
    p = leaf(
        index,
        "create",
        "Create an index from JSON/JSONL/Markdown/text files.",
        "moss index create notes notes.md docs.jsonl --chunk-size 800",
        cmd_index_create,
    )
    p.add_argument("name", help="index name")
    p.add_argument("files", nargs="+", metavar="FILE", help=".json, .jsonl, .md or .txt files")
    p.add_argument(
        "--model",
        help="moss-minilm (default), moss-mediumlm or custom "
        "(default: custom if the documents carry embeddings)",
    )
    _chunk_options(p)
    leaf(index, "list", "List the project's indexes.", "moss index list --json", cmd_index_list)
    p = leaf(index, "info", "Show one index.", "moss index info notes", cmd_index_info)
    p.add_argument("name", help="index name")
    p = leaf(index, "delete", "Delete an index.", "moss index delete notes", cmd_index_delete)
    p.add_argument("name", help="index name")

    docs = group("docs", "Read, add and delete documents of an index.", "moss docs get notes")
    p = leaf(
        docs,
        "get",
        "Print documents of an index (all, or the given ids).",
        "moss docs get notes --id 1 --id 2 --json",
        cmd_docs_get,
    )
    p.add_argument("name", help="index name")
    p.add_argument("--id", action="append", metavar="ID", help="a document id (repeatable)")
    p = leaf(
        docs,
        "add",
        "Add or update documents from files.",
        "moss docs add notes more-notes.md",
        cmd_docs_add,
    )
    p.add_argument("name", help="index name")
    p.add_argument("files", nargs="+", metavar="FILE", help=".json, .jsonl, .md or .txt files")
    _chunk_options(p)
    p = leaf(
        docs, "delete", "Delete documents by id.", "moss docs delete notes 1 2", cmd_docs_delete
    )
    p.add_argument("name", help="index name")
    p.add_argument("ids", nargs="+", metavar="ID", help="document ids")

    p = leaf(
        sub,
        "query",
        "Load an index locally and search it; prints a table and the time.",
        'moss query notes "refund policy" --top-k 3 --alpha 0.5 '
        '--filter \'{"field": "lang", "condition": {"$eq": "en"}}\'',
        cmd_query,
    )
    p.add_argument("name", help="index name")
    p.add_argument("text", help="the query")
    p.add_argument("--top-k", type=int, default=5, help="number of results (default 5)")
    p.add_argument(
        "--alpha", type=float, default=0.8, help="1.0 semantic only, 0.0 keyword only (default 0.8)"
    )
    p.add_argument("--filter", help="metadata filter as JSON")
    p.add_argument("--fusion", choices=["score", "rrf"], help="hybrid fusion (default score)")

    p = leaf(
        sub,
        "eval",
        "Measure retrieval quality and latency on a BEIR-format dataset.",
        "moss eval ./scifact --embeddings ./scifact/emb --alpha 0,0.5,0.8,1",
        cmd_eval,
    )
    p.add_argument(
        "dataset",
        metavar="DATASET_DIR",
        help="folder with corpus.jsonl, queries.jsonl, qrels/<split>.tsv",
    )
    p.add_argument("--split", default="test", help="qrels split (default test)")
    p.add_argument(
        "--embeddings",
        metavar="DIR",
        help="precomputed vectors: corpus.npy, corpus_ids.txt, queries.npy, "
        "query_ids.txt (model custom)",
    )
    p.add_argument("--model", help="built-in model to embed with (default moss-minilm)")
    p.add_argument("--alpha", default="0,0.5,0.8,1", help="comma-separated alphas")
    p.add_argument("--fusion", default="score,rrf", help="comma-separated: score, rrf")
    p.add_argument("--top-k", type=int, default=10, help="top_k of the measured queries (>= 10)")

    p = leaf(
        sub,
        "serve",
        "Run the self-hostable moss server (needs the server extra).",
        "moss serve --data ./moss-data --port 7700",
        cmd_serve,
        json_flag=False,
    )
    p.add_argument("--data", required=True, metavar="DIR", help="data directory")
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    p.add_argument("--port", type=int, default=7700, help="default 7700")

    projects = group(
        "projects",
        "Manage projects of a server data directory.",
        "moss projects create --data ./moss-data --json",
    )
    p = leaf(
        projects,
        "create",
        "Create a project and print its id and key.",
        "moss projects create --data ./moss-data --name demo --json",
        cmd_projects_create,
    )
    p.add_argument("--data", required=True, metavar="DIR", help="server data directory")
    p.add_argument("--name", help="project name")
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 error, 2 usage, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for opt in ("project_id", "project_key", "server_url"):
        if not hasattr(args, opt):
            setattr(args, opt, None)
    handler: Handler = args.handler
    try:
        if handler is cmd_serve:
            return run_server(args)
        return asyncio.run(handler(args))
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except (MossError, RuntimeError, TimeoutError, OSError) as e:
        message = " ".join(str(e).split()) or type(e).__name__
        sys.stderr.write(f"error: {message}\n")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

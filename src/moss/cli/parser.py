"""The ``moss`` argument parser.

Why it names handlers as strings (``"index:create"``): building the parser must not import the
command modules, so ``moss --help`` costs argparse and nothing else (no numpy, no engine, no
httpx); :func:`moss.cli.run.main` imports the one module a command needs. Each ``--help`` uses
``RawDescriptionHelpFormatter`` and ends with an ``Example:`` block that reads as written.

Flags are the same everywhere they appear: ``-j/--json`` on every command with a result,
``-q/--quiet`` on commands that draw progress, ``-k/--top-k``, ``-a/--alpha``, ``-f/--filter``,
``-m/--metadata``, ``-i/--include``, ``-x/--exclude``, ``-n/--dry-run``. Connection flags
(``--project-id``, ``--project-key``, ``--server-url``) go before or after the command.
"""

from __future__ import annotations

import argparse
from typing import Any

from .._version import __version__

__all__ = ["build_parser"]

_FMT = argparse.RawDescriptionHelpFormatter


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
        help="a `moss serve` server (env MOSS_SERVER_URL; default: the embedded store)",
    )
    return p


def _chunk_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("chunking (characters)")
    g.add_argument("--chunk-size", type=int, help="chunk size, 200 to 2000 (default 1200)")
    g.add_argument("--chunk-overlap", type=int, help="overlap between chunks (default 200)")
    g.add_argument("--chunk-mode", choices=["pages", "sentences"], help="default: pages")


def _select_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("which files")
    g.add_argument(
        "-i",
        "--include",
        action="append",
        metavar="GLOB",
        help="only paths (relative to the folder) matching GLOB; repeatable ('**/*.md')",
    )
    g.add_argument(
        "-x", "--exclude", action="append", metavar="GLOB", help="skip matching paths; repeatable"
    )
    g.add_argument("--hidden", action="store_true", help="include dot files and dot folders")


def _ingest_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="index name")
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="files, folders (recursive) or - for stdin: .md .mdx .txt .rst .html .pdf .docx "
        ".json .jsonl",
    )
    _select_options(p)
    p.add_argument(
        "--on-duplicate",
        choices=["error", "last"],
        default="error",
        help="a document id seen twice: fail (default) or keep the last one",
    )
    _chunk_options(p)
    _quiet(p)


def _quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or notes on stderr")


def build_parser() -> argparse.ArgumentParser:
    """The full ``moss`` argument parser."""
    common = _common()
    root = argparse.ArgumentParser(
        prog="moss",
        description="Offline-first semantic and hybrid search: indexes, documents, queries, "
        "evaluation and a self-hostable server.",
        epilog=_example('moss index create notes ./notes/\nmoss query notes "what is due friday"'),
        formatter_class=_FMT,
        parents=[common],
    )
    root.add_argument("--version", action="version", version=f"moss {__version__}")
    root.set_defaults(handler=None, help_parser=root)
    sub = root.add_subparsers(dest="command", metavar="COMMAND")

    def leaf(
        parent: Any, name: str, help_: str, example: str, handler: str, json_flag: bool = True
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=_example(example),
            formatter_class=_FMT,
            parents=[common],
        )
        if json_flag:
            p.add_argument("-j", "--json", action="store_true", help="print JSON for scripts")
        p.set_defaults(handler=handler, help_parser=p)
        return p

    def group(name: str, help_: str, example: str) -> Any:
        p = sub.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=_example(example),
            formatter_class=_FMT,
            parents=[common],
        )
        p.set_defaults(handler=None, help_parser=p)
        return p.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")

    index = group("index", "Create, list, inspect, sync and delete indexes.", "moss index list")
    p = leaf(
        index,
        "create",
        "Create an index from files, folders or stdin (embedded here, pushed once).",
        "moss index create docs ./docs/ --include '**/*.md' --chunk-size 800",
        "index:create",
    )
    _ingest_options(p)
    p.add_argument(
        "--model",
        help="moss-minilm (default), moss-mediumlm or custom "
        "(default: custom if the documents carry embeddings)",
    )
    leaf(index, "list", "List the project's indexes.", "moss index list --json", "index:list_")
    p = leaf(index, "info", "Show one index.", "moss index info notes", "index:info")
    p.add_argument("name", help="index name")
    p = leaf(index, "delete", "Delete an index.", "moss index delete notes", "index:delete")
    p.add_argument("name", help="index name")
    p = leaf(
        index,
        "sync",
        "Make an index equal to a folder: embed new and changed files, drop removed ones.",
        "moss index sync docs ./docs/ --dry-run",
        "index:sync",
    )
    p.add_argument("name", help="index name (created if missing)")
    p.add_argument("directory", metavar="DIR", help="the folder")
    _select_options(p)
    p.add_argument("-n", "--dry-run", action="store_true", help="report, change nothing")
    p.add_argument(
        "--on-duplicate",
        choices=["error", "last"],
        default="error",
        help="a document id seen twice: fail (default) or keep the last one",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="also re-parse unchanged files (after changing the chunking)",
    )
    p.add_argument("--model", help="model of a new index (default moss-minilm)")
    _chunk_options(p)
    _quiet(p)

    docs = group("docs", "Read, add and delete documents of an index.", "moss docs get notes")
    p = leaf(
        docs,
        "get",
        "Print documents of an index (all, or the given ids).",
        "moss docs get notes --id 1 --id 2 --json",
        "docs:get",
    )
    p.add_argument("name", help="index name")
    p.add_argument("--id", action="append", metavar="ID", help="a document id (repeatable)")
    p.add_argument("-m", "--metadata", action="store_true", help="show a metadata column")
    p = leaf(
        docs,
        "add",
        "Add or update documents from files, folders or stdin (embedded here, pushed once).",
        "moss docs add notes more-notes.md ./new/",
        "docs:add",
    )
    _ingest_options(p)
    p = leaf(docs, "delete", "Delete documents by id.", "moss docs delete notes 1 2", "docs:delete")
    p.add_argument("name", help="index name")
    p.add_argument("ids", nargs="+", metavar="ID", help="document ids")

    p = leaf(
        sub,
        "query",
        "Load an index locally and search it; prints a ranked table and the time.",
        'moss query notes "refund policy" -k 3 -a 0.5 '
        '-f \'{"field": "lang", "condition": {"$eq": "en"}}\'',
        "query:query",
    )
    p.add_argument("name", help="index name")
    p.add_argument("text", help="the query")
    p.add_argument("-k", "--top-k", type=int, default=5, help="number of results (default 5)")
    p.add_argument(
        "-a",
        "--alpha",
        type=float,
        default=0.8,
        help="1.0 semantic only, 0.0 keyword only (default 0.8)",
    )
    p.add_argument("-f", "--filter", help="metadata filter as JSON")
    p.add_argument("--fusion", choices=["score", "rrf"], help="hybrid fusion (default score)")
    p.add_argument("-m", "--metadata", action="store_true", help="show a metadata column")

    p = leaf(
        sub,
        "eval",
        "Measure retrieval quality and latency on a BEIR-format dataset.",
        "moss eval ./scifact --embeddings ./scifact/emb -a 0,0.5,0.8,1",
        "query:evaluate",
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
    p.add_argument("-a", "--alpha", default="0,0.5,0.8,1", help="comma-separated alphas")
    p.add_argument("--fusion", default="score,rrf", help="comma-separated: score, rrf")
    p.add_argument(
        "-k", "--top-k", type=int, default=10, help="top_k of the measured queries (>= 10)"
    )
    _quiet(p)

    p = leaf(
        sub,
        "serve",
        "Run the self-hostable moss server (needs the server extra): one process over a data "
        "directory, or one node of a cluster over S3 + PostgreSQL (docs/deployment.md).",
        "moss serve --data ./moss-data --port 7700\n"
        "moss serve --data /var/cache/moss --store s3://bucket/moss \\\n"
        "    --catalog postgresql://moss@db/moss --role api      # or --role worker (no port)",
        "server:serve",
        json_flag=False,
    )
    p.add_argument(
        "--data",
        required=True,
        metavar="DIR",
        help="data directory (must exist); with --catalog: the node's local cache (created)",
    )
    p.add_argument(
        "--store",
        metavar="URL",
        help="blob store: s3://bucket/prefix (env MOSS_STORE; S3 endpoint and credentials from "
        "the AWS_* variables or MOSS_S3_ENDPOINT_URL); default: DIR/blobs",
    )
    p.add_argument(
        "--catalog",
        metavar="URL",
        help="catalog shared by every node: postgresql://... (env MOSS_CATALOG); default: "
        "SQLite in DIR",
    )
    p.add_argument(
        "--role",
        choices=["all", "api", "worker"],
        help="env MOSS_ROLE; all (default): API and jobs; api: API only, never runs jobs; "
        "worker: runs any node's jobs, no HTTP port, stops after its current job on "
        "SIGTERM/SIGINT. api/worker need --catalog. Lease TTL, heartbeat, GC grace: env "
        "MOSS_LEASE_TTL_S (10), MOSS_HEARTBEAT_S (2), MOSS_GC_GRACE_S (120)",
    )
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    p.add_argument("--port", type=int, default=7700, help="default 7700")
    p.add_argument(
        "--allow-private-crawl",
        action="store_true",
        help="let web sources crawl private, loopback and link-local addresses "
        "(env MOSS_ALLOW_PRIVATE_CRAWL=1; default: refused, see docs/web-sources.md)",
    )
    p.add_argument("--ssl-certfile", metavar="PEM", help="serve HTTPS with this certificate")
    p.add_argument("--ssl-keyfile", metavar="PEM", help="private key of --ssl-certfile")
    limit_flags = (
        ("--max-upload-bytes", "largest snapshot or document batch (default 4 GiB)"),
        ("--max-project-bytes", "per-project storage quota (default 50 GiB)"),
        ("--max-indexes", "per-project index quota (default 1000)"),
        ("--max-pending-jobs", "per-project unfinished-job quota (default 64)"),
        ("--max-connections", "open connections before new requests get 503 (default 1000)"),
    )
    for flag, text in limit_flags:
        p.add_argument(flag, type=int, metavar="N", help=text + "; see docs/security.md")
    p.add_argument(
        "--header-timeout",
        type=float,
        metavar="S",
        help="seconds a client has to send a request's headers (default 10)",
    )
    p.add_argument(
        "--redirect-downloads",
        action="store_true",
        help="answer snapshot downloads with 307 to a presigned URL of the S3 blob (env "
        "MOSS_REDIRECT_DOWNLOADS=1; clients must reach the object store); default: streamed "
        "by the node",
    )
    p.add_argument(
        "--redirect-expires-s",
        type=float,
        metavar="S",
        help="lifetime of those presigned URLs in seconds (default 300, at most 604800)",
    )

    p = leaf(
        sub,
        "mcp",
        "Serve the project's indexes as MCP tools (search; add/get with --allow-writes).",
        "moss mcp                                   # stdio, for Claude Desktop & co\n"
        "moss mcp --transport http --port 7701 --allow-writes",
        "mcp:mcp",
        json_flag=False,
    )
    p.add_argument("--transport", choices=["stdio", "http"], default="stdio", help="default stdio")
    p.add_argument("--host", default="127.0.0.1", help="http: default 127.0.0.1")
    p.add_argument("--port", type=int, default=7701, help="http: default 7701 (path /mcp)")
    p.add_argument(
        "--allow-writes", action="store_true", help="also serve get_documents and add_documents"
    )

    projects = group(
        "projects",
        "Manage projects of a server data directory.",
        "moss projects create --data ./moss-data --json",
    )
    p = leaf(
        projects,
        "create",
        "Create a project (and the data directory) and print its id and key.",
        "moss projects create --data ./moss-data --name demo --json",
        "server:projects_create",
    )
    p.add_argument("--data", metavar="DIR", help="server data directory")
    p.add_argument(
        "--catalog", metavar="URL", help="a cluster's catalog (postgresql://...; env MOSS_CATALOG)"
    )
    p.add_argument("--name", help="project name")
    p = leaf(
        projects,
        "rotate-key",
        "Give a project a new key (printed once); the old key stops working at once.",
        "moss projects rotate-key proj_0123456789abcdef --data ./moss-data",
        "server:projects_rotate_key",
    )
    p.add_argument("--data", metavar="DIR", help="server data directory")
    p.add_argument(
        "--catalog", metavar="URL", help="a cluster's catalog (postgresql://...; env MOSS_CATALOG)"
    )
    p.add_argument("project", metavar="PROJECT_ID", help="the project id (proj_...)")
    p = leaf(
        projects,
        "revoke",
        "Remove a project's key: every request fails until rotate-key (indexes are kept).",
        "moss projects revoke proj_0123456789abcdef --data ./moss-data",
        "server:projects_revoke",
    )
    p.add_argument("--data", metavar="DIR", help="server data directory")
    p.add_argument(
        "--catalog", metavar="URL", help="a cluster's catalog (postgresql://...; env MOSS_CATALOG)"
    )
    p.add_argument("project", metavar="PROJECT_ID", help="the project id (proj_...)")
    p = leaf(
        projects,
        "list",
        "List the projects of a data directory (ids, names, whether each has a key).",
        "moss projects list --data ./moss-data --json",
        "server:projects_list",
    )
    p.add_argument("--data", metavar="DIR", help="server data directory")
    p.add_argument(
        "--catalog", metavar="URL", help="a cluster's catalog (postgresql://...; env MOSS_CATALOG)"
    )
    return root

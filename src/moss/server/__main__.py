"""``python -m moss.server``: run the server, or create a project, without the CLI.

::

    python -m moss.server --data DIR [--host 127.0.0.1] [--port 7700] [--allow-private-crawl]
                          [--store s3://...] [--catalog postgresql://...] [--role api|worker|all]
    python -m moss.server create-project (--data DIR | --catalog URL) [--name NAME]  # prints JSON

``--store``, ``--catalog`` and ``--role`` default to ``MOSS_STORE``, ``MOSS_CATALOG`` and
``MOSS_ROLE`` (see ``moss serve --help``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import create_project, serve


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "create-project":
        p = argparse.ArgumentParser(prog="python -m moss.server create-project")
        p.add_argument("--data")
        p.add_argument("--catalog", default=os.environ.get("MOSS_CATALOG") or None)
        p.add_argument("--name")
        ns = p.parse_args(args[1:])
        if not ns.data and not ns.catalog:
            p.error("give --data or --catalog")
        project_id, key = create_project(ns.data, ns.name, catalog=ns.catalog)
        print(json.dumps({"project_id": project_id, "project_key": key}))
        return 0
    p = argparse.ArgumentParser(prog="python -m moss.server")
    p.add_argument("--data", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7700)
    p.add_argument("--log-level", default="warning")
    p.add_argument(
        "--allow-private-crawl",
        action="store_true",
        default=None,
        help="let web sources crawl private, loopback and link-local addresses",
    )
    p.add_argument("--store", default=os.environ.get("MOSS_STORE") or None)
    p.add_argument("--catalog", default=os.environ.get("MOSS_CATALOG") or None)
    p.add_argument(
        "--role", choices=["all", "api", "worker"], default=os.environ.get("MOSS_ROLE") or "all"
    )
    ns = p.parse_args(args)
    serve(
        ns.data,
        ns.host,
        ns.port,
        log_level=ns.log_level,
        allow_private_crawl=ns.allow_private_crawl,
        blobs=ns.store,
        catalog=ns.catalog,
        role=ns.role,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

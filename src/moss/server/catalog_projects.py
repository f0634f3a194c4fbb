"""The projects table of the catalog: keys, their scheme, rotation and revocation, and the
schema migration that introduced them.

A mixin of :class:`moss.server.catalog.SqliteCatalog` (which provides the connection, its lock
and the ``_tx``/``_one`` helpers), kept apart so the catalog module stays about indexes, versions
and jobs. Key digests are computed by :mod:`moss.server.auth`; this module only stores them.
"""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import datetime, timezone
from typing import Any

__all__ = ["USER_VERSION", "ProjectRows"]

USER_VERSION = 2


def _now() -> str:
    """As :func:`moss.server.catalog.utc_now` (which imports this module, hence the copy)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ProjectRows:
    """Project rows of a SQLite catalog (see the module docstring)."""

    _db: sqlite3.Connection
    _lock: Any

    def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Cursor]:
        raise NotImplementedError

    def _one(self, sql: str, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        raise NotImplementedError

    def _migrate(self, target: int) -> None:
        """Bring an older catalog up to :data:`USER_VERSION` (idempotent, one transaction).

        Version 2 adds ``projects.key_scheme`` (``scrypt`` rows predate the HMAC scheme; see
        :mod:`moss.server.auth`) and ``projects.key_updated_at``.
        """
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version >= target:
            return
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            cols = {r[1] for r in cur.execute("PRAGMA table_info(projects)")}
            if "key_scheme" not in cols:
                cur.execute("ALTER TABLE projects ADD COLUMN key_scheme TEXT")
                cur.execute("UPDATE projects SET key_scheme = 'scrypt' WHERE key_hash IS NOT NULL")
            if "key_updated_at" not in cols:
                cur.execute("ALTER TABLE projects ADD COLUMN key_updated_at TEXT")
            cur.execute(f"PRAGMA user_version = {int(target)}")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def add_project(
        self,
        project_id: str,
        name: str | None,
        salt: bytes | None,
        key_hash: bytes | None,
        scheme: str | None = None,
    ) -> None:
        """Create a project (no-op if it exists). ``scheme`` defaults to ``scrypt`` when a salt
        is given (the legacy form), else ``hmac-sha256``."""
        if key_hash is not None and scheme is None:
            scheme = "scrypt" if salt is not None else "hmac-sha256"
        now = _now()
        with self._tx() as cur:
            cur.execute(
                "INSERT OR IGNORE INTO projects (id, name, key_salt, key_hash, key_scheme, "
                "created_at, key_updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (project_id, name, salt, key_hash, scheme, now, now if key_hash else None),
            )

    def project_key(self, project_id: str) -> tuple[str | None, bytes | None, bytes | None] | None:
        """``(scheme, salt, digest)`` of a project's key (digest None: revoked or key-less);
        None if the project does not exist."""
        row = self._one(
            "SELECT key_scheme, key_salt, key_hash FROM projects WHERE id = ?", (project_id,)
        )
        return None if row is None else (row[0], row[1], row[2])

    def set_project_key(
        self,
        project_id: str,
        key_hash: bytes | None,
        scheme: str | None,
        *,
        expect: bytes | None = None,
    ) -> bool:
        """Replace (or, with None, revoke) a project's key. With ``expect``, only if the stored
        digest is still ``expect`` (an upgrade must not undo a concurrent rotation). Returns
        whether a row changed."""
        sql = (
            "UPDATE projects SET key_hash = ?, key_salt = NULL, key_scheme = ?, "
            "key_updated_at = ? WHERE id = ?"
        )
        args: tuple[Any, ...] = (key_hash, scheme, _now(), project_id)
        if expect is not None:
            sql += " AND key_hash = ?"
            args += (expect,)
        with self._tx() as cur:
            return cur.execute(sql, args).rowcount > 0

    def list_projects(self) -> list[dict[str, Any]]:
        """Every project: id, name, created_at, key_updated_at, whether it has a key."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, created_at, key_updated_at, key_hash IS NOT NULL FROM projects "
                "ORDER BY created_at, id"
            ).fetchall()
        return [
            {
                "project_id": r[0],
                "name": r[1],
                "created_at": r[2],
                "key_updated_at": r[3],
                "has_key": bool(r[4]),
            }
            for r in rows
        ]

    def count_pending(self, project_id: str) -> int:
        """A project's jobs not yet finished (uploading, queued or running)."""
        row = self._one(
            "SELECT COUNT(*) FROM jobs WHERE project_id = ? "
            "AND status NOT IN ('completed', 'failed')",
            (project_id,),
        )
        return int(row[0]) if row is not None else 0

"""The projects table of the catalog: keys, their scheme, rotation and revocation.

A part of the shared SQL layer (:class:`moss.server.catalog_sql.SqlCatalog` inherits it), kept
apart so that module stays about indexes, versions and jobs. It is written against the dialect
hooks of :class:`moss.server.catalog_base.SqlBase` only, so SQLite and PostgreSQL run the same
statements. Key digests are computed by :mod:`moss.server.auth`; this module only stores them.
"""

from __future__ import annotations

from typing import Any

from .catalog_base import SqlBase, utc_now

__all__ = ["ProjectRows"]


class ProjectRows(SqlBase):
    """Project rows of a catalog (see the module docstring)."""

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
        now = utc_now()
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO projects (id, name, key_salt, key_hash, key_scheme, "
                "created_at, key_updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO NOTHING",
                (project_id, name, salt, key_hash, scheme, now, now if key_hash else None),
            )

    def project_key(self, project_id: str) -> tuple[str | None, bytes | None, bytes | None] | None:
        """``(scheme, salt, digest)`` of a project's key (digest None: revoked or key-less);
        None if the project does not exist."""
        row = self._one(
            "SELECT key_scheme, key_salt, key_hash FROM projects WHERE id = ?", (project_id,)
        )
        if row is None:
            return None
        salt, digest = row[1], row[2]
        return (
            row[0],
            bytes(salt) if salt is not None else None,
            bytes(digest) if digest is not None else None,
        )

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
        args: tuple[Any, ...] = (key_hash, scheme, utc_now(), project_id)
        if expect is not None:
            sql += " AND key_hash = ?"
            args += (expect,)
        with self._tx() as cur:
            return int(cur.execute(sql, args).rowcount) > 0

    def list_projects(self) -> list[dict[str, Any]]:
        """Every project: id, name, created_at, key_updated_at, whether it has a key."""
        rows = self._all(
            "SELECT id, name, created_at, key_updated_at, key_hash IS NOT NULL FROM projects"
        )
        rows.sort(key=lambda r: (r[2], r[0]))  # in Python: code-point order in every dialect
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

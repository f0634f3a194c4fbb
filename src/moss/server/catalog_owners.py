"""Owner leases, garbage-collection rows and shared settings of the catalog (both dialects).

A part of the shared SQL layer (:class:`moss.server.catalog_sql.SqlCatalog` inherits it), kept
apart so that module stays about indexes, versions and jobs. Leases and grace periods are
compared on the *database* clock (the dialect's ``_now_sql``), so nodes with skewed clocks agree
on who is dead and which superseded version may go.
"""

from __future__ import annotations

import secrets

from ..errors import INTERNAL, MossError
from .catalog_base import SqlBase

__all__ = ["OwnerRows"]

_UNFINISHED = "status NOT IN ('completed', 'failed')"


class OwnerRows(SqlBase):
    """Owner, GC and settings rows of a catalog (see the module docstring)."""

    def unfinished_owners(self) -> set[str]:
        """Owners of unfinished jobs or pending versions."""
        rows = self._all(
            f"SELECT DISTINCT owner FROM jobs WHERE {_UNFINISHED} "
            "UNION SELECT DISTINCT owner FROM versions WHERE state = 'pending'"
        )
        return {r[0] for r in rows}

    def heartbeat(self, owner: str, role: str, ttl_s: float) -> None:
        """Renew ``owner``'s lease for ``ttl_s`` seconds of the database clock."""
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO owners (token, role, lease_until) "
                f"VALUES (?, ?, {self._now_sql(offset=True)}) "
                "ON CONFLICT (token) DO UPDATE SET role = excluded.role, "
                "lease_until = excluded.lease_until",
                (owner, role, float(ttl_s)),
            )

    def drop_owner(self, owner: str) -> None:
        """A clean shutdown: forget the owner's lease."""
        with self._tx() as cur:
            cur.execute("DELETE FROM owners WHERE token = ?", (owner,))

    def expired_owners(self) -> set[str]:
        """Owners of unfinished jobs or pending versions whose lease is missing or lapsed."""
        rows = self._all(
            f"SELECT u.owner FROM (SELECT owner FROM jobs WHERE {_UNFINISHED} "
            "UNION SELECT owner FROM versions WHERE state = 'pending') AS u "
            "LEFT JOIN owners AS o ON o.token = u.owner "
            f"WHERE o.token IS NULL OR o.lease_until < {self._now_sql()}"
        )
        return {r[0] for r in rows}

    # ------------------------------------------------------------------ garbage collection

    def collectable(
        self, live_owners: set[str], grace_s: float = 0.0
    ) -> tuple[list[str], list[str]]:
        """Blob keys that may be deleted: versions dead for ``grace_s`` seconds or more, and
        inputs of finished jobs."""
        dead = self._all(
            "SELECT key FROM versions WHERE state = 'dead' "
            f"AND (dead_at IS NULL OR dead_at <= {self._now_sql(offset=True)})",
            (-float(grace_s),),
        )
        inputs = self._all(
            "SELECT input_key FROM jobs WHERE input_key IS NOT NULL "
            "AND status IN ('completed', 'failed')"
        )
        return [r[0] for r in dead], [r[0] for r in inputs]

    def forget(self, version_keys: list[str], input_keys: list[str]) -> None:
        """Drop the rows of deleted blobs."""
        if not version_keys and not input_keys:
            return
        with self._tx() as cur:
            if version_keys:
                cur.executemany("DELETE FROM versions WHERE key = ?", [(k,) for k in version_keys])
            if input_keys:
                cur.executemany(
                    "UPDATE jobs SET input_key = NULL WHERE input_key = ?",
                    [(k,) for k in input_keys],
                )

    def known_keys(self) -> set[str]:
        """Every blob key the catalog refers to (anything else in the store is an orphan)."""
        keys = {r[0] for r in self._all("SELECT key FROM versions")}
        keys |= {r[0] for r in self._all("SELECT input_key FROM jobs WHERE input_key IS NOT NULL")}
        keys |= {f"uploads/{r[0]}" for r in self._all(f"SELECT id FROM jobs WHERE {_UNFINISHED}")}
        return keys

    # ------------------------------------------------------------------ settings

    def server_secret(self) -> bytes:
        """A 32-byte random secret shared by every node of this catalog (created once)."""
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO settings (name, value) VALUES ('server_secret', ?) "
                "ON CONFLICT (name) DO NOTHING",
                (secrets.token_bytes(32),),
            )
            row = cur.execute("SELECT value FROM settings WHERE name = 'server_secret'").fetchone()
        if row is None:
            raise MossError("catalog: the server secret could not be stored", code=INTERNAL)
        return bytes(row[0])

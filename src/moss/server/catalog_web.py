"""The ``web_sources`` rows of the catalog (both dialects).

:mod:`moss.server.websources` owns what a web source *means* (settings, lifecycle, scheduling);
this mixin owns the SQL, so web sources work on every catalog the store can open. Rows travel as
tuples in :data:`WEB_COLS` order followed by ``seq`` and ``job_id`` (what
:mod:`~moss.server.websources` decodes). Updates name their columns from a fixed set, so no SQL
text crosses the module boundary.
"""

from __future__ import annotations

from typing import Any, Literal

from ..errors import INTERNAL, MossError
from .catalog_base import SqlBase

__all__ = ["WEB_COLS", "WebSourceRows"]

WEB_COLS = (
    "id, project_id, index_name, root_url, settings, status, job_id, next_refresh_at, "
    "last_crawled_at, last_page_count, last_doc_count, last_error_code, last_error, last_stats, "
    "created_at, updated_at"
)
_UPDATABLE = frozenset(
    (
        "settings",
        "status",
        "job_id",
        "next_refresh_at",
        "last_crawled_at",
        "last_page_count",
        "last_doc_count",
        "last_error_code",
        "last_error",
        "last_stats",
    )
)


class WebSourceRows(SqlBase):
    """Web-source rows of a catalog (see the module docstring)."""

    def web_sources(
        self,
        *,
        source_id: str | None = None,
        project_id: str | None = None,
        index_name: str | None = None,
        statuses: tuple[str, ...] = (),
        due_by: str | None = None,
    ) -> list[tuple[Any, ...]]:
        """Rows (``WEB_COLS, seq, job_id``) matching every given condition; ``due_by``: a
        ``next_refresh_at`` at or before that time."""
        where, args = ["1 = 1"], []
        for col, value in (("id", source_id), ("project_id", project_id)):
            if value is not None:
                where.append(f"{col} = ?")
                args.append(value)
        if index_name is not None:
            where.append("index_name = ?")
            args.append(index_name)
        if statuses:
            where.append(f"status IN ({', '.join('?' for _ in statuses)})")
            args.extend(statuses)
        if due_by is not None:
            where.append("next_refresh_at IS NOT NULL AND next_refresh_at <= ?")
            args.append(due_by)
        return self._all(
            f"SELECT {WEB_COLS}, seq, job_id FROM web_sources WHERE {' AND '.join(where)}",
            tuple(args),
        )

    def add_web_source(
        self, values: dict[str, Any], limit: int
    ) -> Literal["created", "exists", "full"]:
        """Insert a source (``values``: id, project_id, index_name, root_url, settings,
        next_refresh_at, created_at) unless its index has ``limit`` sources already or the same
        root URL is registered for it."""
        with self._tx() as cur:
            (count,) = cur.execute(
                "SELECT COUNT(*) FROM web_sources WHERE project_id = ? AND index_name = ?",
                (values["project_id"], values["index_name"]),
            ).fetchone()
            if count >= limit:
                return "full"
            (seq,) = cur.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM web_sources").fetchone()
            inserted = cur.execute(
                f"INSERT INTO web_sources ({WEB_COLS}, seq) VALUES "
                "(?, ?, ?, ?, ?, 'idle', NULL, ?, NULL, 0, 0, NULL, NULL, NULL, ?, ?, ?) "
                "ON CONFLICT (project_id, index_name, root_url) DO NOTHING",
                (
                    values["id"],
                    values["project_id"],
                    values["index_name"],
                    values["root_url"],
                    values["settings"],
                    values["next_refresh_at"],
                    values["created_at"],
                    values["created_at"],
                    seq,
                ),
            ).rowcount
        return "created" if inserted else "exists"

    def update_web_source(
        self,
        source_id: str,
        changes: dict[str, Any],
        updated_at: str,
        *,
        only_if_crawling: str | None = None,
    ) -> tuple[Any, ...] | None:
        """Set columns of a source (with ``only_if_crawling``: only while it is crawling with
        that job); returns its row (``WEB_COLS``), None if it does not exist."""
        bad = set(changes) - _UPDATABLE
        if bad:
            raise MossError(f"not a web-source column: {sorted(bad)}", code=INTERNAL)
        sets = ", ".join(f"{col} = ?" for col in changes)
        sql = f"UPDATE web_sources SET {sets}, updated_at = ? WHERE id = ?"
        args: tuple[Any, ...] = (*changes.values(), updated_at, source_id)
        if only_if_crawling is not None:
            sql += " AND status = 'crawling' AND job_id = ?"
            args = (*args, only_if_crawling)
        with self._tx() as cur:
            cur.execute(sql, args)
            row = cur.execute(
                f"SELECT {WEB_COLS} FROM web_sources WHERE id = ?", (source_id,)
            ).fetchone()
        return tuple(row) if row is not None else None

    def claim_web_refresh(self, source_id: str, expected_next: str | None, new_next: str) -> bool:
        """Move a due source's ``next_refresh_at`` forward, only if it still is ``expected_next``
        and the source is idle or failed: of several processes, one wins the scheduled crawl."""
        with self._tx() as cur:
            return bool(
                cur.execute(
                    "UPDATE web_sources SET next_refresh_at = ? WHERE id = ? "
                    "AND next_refresh_at = ? AND status IN ('idle', 'failed')",
                    (new_next, source_id, expected_next),
                ).rowcount
            )

    def delete_web_sources(
        self,
        *,
        source_id: str | None = None,
        project_id: str | None = None,
        index_name: str | None = None,
    ) -> None:
        """Delete one source (``source_id``) or every source of an index."""
        with self._tx() as cur:
            if source_id is not None:
                cur.execute("DELETE FROM web_sources WHERE id = ?", (source_id,))
            else:
                cur.execute(
                    "DELETE FROM web_sources WHERE project_id = ? AND index_name = ?",
                    (project_id, index_name),
                )

"""Project administration on a data directory: create a project, rotate or revoke its key.

These run without a server (``moss projects ...`` while ``moss serve`` may be running on the same
directory): they write the catalog, and every server process reads a project's key digest from
the catalog on each request, so a change takes effect at once. Keys and digests are made by
:mod:`moss.server.auth`.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from ..errors import NOT_FOUND, MossError
from .auth import KEY_SCHEME_HMAC, key_digest, load_secret, new_key, private_dir
from .catalog import SqliteCatalog

__all__ = ["CATALOG_FILE", "create_project", "revoke_key", "rotate_key"]

CATALOG_FILE = "catalog.sqlite3"


def create_project(data_dir: str | os.PathLike[str], name: str | None = None) -> tuple[str, str]:
    """Create a project in a server data directory and return ``(project_id, project_key)``.

    The key is shown only here; the catalog keeps its HMAC under the directory's server secret.
    """
    root = Path(data_dir)
    private_dir(root)
    project_id = "proj_" + secrets.token_hex(8)
    key = new_key()
    digest = key_digest(load_secret(root), key)
    catalog = SqliteCatalog(root / CATALOG_FILE)
    try:
        catalog.add_project(project_id, name, None, digest, KEY_SCHEME_HMAC)
    finally:
        catalog.close()
    return project_id, key


def _existing_catalog(data_dir: str | os.PathLike[str]) -> SqliteCatalog:
    root = Path(data_dir)
    if not (root / CATALOG_FILE).is_file():
        raise MossError(f"{str(root)!r} is not a moss server data directory", code=NOT_FOUND)
    return SqliteCatalog(root / CATALOG_FILE)


def rotate_key(data_dir: str | os.PathLike[str], project_id: str) -> str:
    """Give a project a new key (returned once); the old key stops working immediately."""
    key = new_key()
    digest = key_digest(load_secret(Path(data_dir)), key)
    catalog = _existing_catalog(data_dir)
    try:
        if not catalog.set_project_key(project_id, digest, KEY_SCHEME_HMAC):
            raise MossError(f"project {project_id!r} not found", code=NOT_FOUND)
    finally:
        catalog.close()
    return key


def revoke_key(data_dir: str | os.PathLike[str], project_id: str) -> None:
    """Remove a project's key: every request for it fails until ``rotate_key`` issues a new one.
    The project's indexes are kept."""
    catalog = _existing_catalog(data_dir)
    try:
        if not catalog.set_project_key(project_id, None, None):
            raise MossError(f"project {project_id!r} not found", code=NOT_FOUND)
    finally:
        catalog.close()

"""Project administration on a data directory: create a project, rotate or revoke its key.

These run without a server (``moss projects ...`` while ``moss serve`` may be running on the same
directory): they write the catalog, and every server process reads a project's key digest from
the catalog on each request, so a change takes effect at once. Keys and digests are made by
:mod:`moss.server.auth`.

With a shared catalog (``catalog="postgresql://..."``, a cluster) the projects live in that
database and the key digests use the catalog's own server secret, so the data directory is not
needed.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from ..errors import NOT_FOUND, InvalidArgumentError, MossError
from .auth import KEY_SCHEME_HMAC, key_digest, load_secret, new_key, private_dir
from .catalog import Catalog, SqliteCatalog, open_catalog

__all__ = ["CATALOG_FILE", "create_project", "revoke_key", "rotate_key"]

CATALOG_FILE = "catalog.sqlite3"


def create_project(
    data_dir: str | os.PathLike[str] | None,
    name: str | None = None,
    *,
    catalog: str | None = None,
) -> tuple[str, str]:
    """Create a project in a server data directory (or a shared ``catalog``) and return
    ``(project_id, project_key)``.

    The key is shown only here; the catalog keeps its HMAC under the server secret.
    """
    project_id = "proj_" + secrets.token_hex(8)
    key = new_key()
    if catalog:
        cat: Catalog = open_catalog(catalog)
        secret = cat.server_secret()
    else:
        root = _root(data_dir)
        private_dir(root)
        secret = load_secret(root)
        cat = SqliteCatalog(root / CATALOG_FILE)
    try:
        cat.add_project(project_id, name, None, key_digest(secret, key), KEY_SCHEME_HMAC)
    finally:
        cat.close()
    return project_id, key


def _root(data_dir: str | os.PathLike[str] | None) -> Path:
    if data_dir is None:
        raise InvalidArgumentError("give a data directory or a catalog URL")
    return Path(data_dir)


def _existing_catalog(
    data_dir: str | os.PathLike[str] | None, catalog: str | None
) -> tuple[Catalog, bytes]:
    """The catalog to change and the secret its key digests use."""
    if catalog:
        cat = open_catalog(catalog)
        try:
            return cat, cat.server_secret()
        except BaseException:
            cat.close()
            raise
    root = _root(data_dir)
    if not (root / CATALOG_FILE).is_file():
        raise MossError(f"{str(root)!r} is not a moss server data directory", code=NOT_FOUND)
    return SqliteCatalog(root / CATALOG_FILE), load_secret(root)


def rotate_key(
    data_dir: str | os.PathLike[str] | None, project_id: str, *, catalog: str | None = None
) -> str:
    """Give a project a new key (returned once); the old key stops working immediately."""
    key = new_key()
    cat, secret = _existing_catalog(data_dir, catalog)
    try:
        if not cat.set_project_key(project_id, key_digest(secret, key), KEY_SCHEME_HMAC):
            raise MossError(f"project {project_id!r} not found", code=NOT_FOUND)
    finally:
        cat.close()
    return key


def revoke_key(
    data_dir: str | os.PathLike[str] | None, project_id: str, *, catalog: str | None = None
) -> None:
    """Remove a project's key: every request for it fails until ``rotate_key`` issues a new one.
    The project's indexes are kept."""
    cat, _ = _existing_catalog(data_dir, catalog)
    try:
        if not cat.set_project_key(project_id, None, None):
            raise MossError(f"project {project_id!r} not found", code=NOT_FOUND)
    finally:
        cat.close()

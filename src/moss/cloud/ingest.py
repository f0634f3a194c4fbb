"""The client side of ``create_index_from_files`` and web sources.

Like the rest of :mod:`moss.cloud`, everything that can be checked before a request is checked
here (names, file list, content types, sizes, parse options, web-source options, source ids), with
the same messages the store would give, so both backends fail identically and early. Parsing and
crawling happen where the index is built, in store jobs (:mod:`moss.server.ingest_jobs`): the
files travel raw, streamed from disk (:class:`~moss.cloud.wire.FilesUpload`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import fields, is_dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgumentError
from ..sources import (
    CreateWebSourceResult,
    DeleteWebSourceResult,
    ParseFileInput,
    ResyncWebSourceResult,
    UpdateWebSourceResult,
    WebSource,
    check_file_specs,
    check_files_model_id,
    check_parse_options,
    check_source_id,
    create_settings,
    normalize_root_url,
    update_settings,
)
from ..types import MutationResult, validate_index_name
from .wire import FileEntry, FilesUpload, JobRecord, file_entry

if TYPE_CHECKING:
    from . import CloudIndexes

__all__ = [
    "create_index_from_files",
    "create_web_source",
    "delete_web_source",
    "get_web_source",
    "list_web_sources",
    "resync_web_source",
    "update_web_source",
]


def _entries(files: object) -> list[FileEntry]:
    if isinstance(files, (str, bytes, Mapping)) or not isinstance(files, Sequence):
        raise InvalidArgumentError("Validation error: files must be a list of ParseFileInput")
    for f in files:
        if not isinstance(f, ParseFileInput):
            raise InvalidArgumentError(
                f"Validation error: files must hold ParseFileInput items, not {type(f).__name__}"
            )
    # Count, names and content types first: an unsupported type is refused before any file is
    # opened (and before any upload).
    check_file_specs([(f.name, f.content_type, 1) for f in files])
    entries = []
    for f in files:
        data = f.data
        if data is not None:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise InvalidArgumentError(
                    f"Validation error: data of file {f.name!r} must be bytes, "
                    f"not {type(data).__name__}"
                )
            entries.append(file_entry(f.name, f.content_type, bytes(data), None))
        elif f.path is not None:
            if not isinstance(f.path, (str, os.PathLike)):
                raise InvalidArgumentError(
                    f"Validation error: path of file {f.name!r} must be a str or os.PathLike"
                )
            entries.append(file_entry(f.name, f.content_type, None, os.fspath(f.path)))
        else:
            raise InvalidArgumentError(f"Validation error: file {f.name!r} needs data or a path")
    check_file_specs([(e.name, e.content_type, e.size) for e in entries])
    return entries


async def create_index_from_files(
    cloud: CloudIndexes,
    name: str,
    files: Sequence[ParseFileInput],
    model_id: str | None = None,
    parse_options: object = None,
) -> MutationResult:
    """See :meth:`moss.MossClient.create_index_from_files`."""
    validate_index_name(name)
    model = check_files_model_id(model_id)
    options = check_parse_options(parse_options)
    entries = await asyncio.to_thread(_entries, files)
    upload = FilesUpload(entries)
    backend = cloud.backend
    rec: JobRecord = await cloud._call(
        backend.create_index_from_files, name, model, options, upload
    )
    return await cloud._finish(name, rec)


def _as_dict(options: object) -> dict[str, Any]:
    """The fields given (not None) of an options dataclass or mapping, JSON-ready."""
    if options is None:
        return {}
    if isinstance(options, Mapping):
        items = dict(options).items()
    elif is_dataclass(options) and not isinstance(options, type):
        items = {f.name: getattr(options, f.name) for f in fields(options)}.items()
    else:  # the validators named the expected type already
        return {}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in items if v is not None}


async def create_web_source(
    cloud: CloudIndexes, root_url: str, index_name: str, options: object = None
) -> CreateWebSourceResult:
    """See :meth:`moss.MossClient.create_web_source`."""
    validate_index_name(index_name)
    root = normalize_root_url(root_url)
    create_settings(options)
    payload = _as_dict(options)
    result: CreateWebSourceResult = await cloud._call(
        cloud.backend.create_web_source, root, index_name, payload
    )
    return result


async def list_web_sources(cloud: CloudIndexes, index_name: str | None = None) -> list[WebSource]:
    """See :meth:`moss.MossClient.list_web_sources`."""
    if index_name is not None:
        validate_index_name(index_name)
    found: list[WebSource] = await cloud._call(cloud.backend.list_web_sources, index_name)
    return found


async def get_web_source(cloud: CloudIndexes, source_id: str) -> WebSource:
    """See :meth:`moss.MossClient.get_web_source`."""
    check_source_id(source_id)
    source: WebSource = await cloud._call(cloud.backend.get_web_source, source_id)
    return source


async def update_web_source(
    cloud: CloudIndexes, source_id: str, options: object
) -> UpdateWebSourceResult:
    """See :meth:`moss.MossClient.update_web_source`."""
    check_source_id(source_id)
    update_settings(options)
    result: UpdateWebSourceResult = await cloud._call(
        cloud.backend.update_web_source, source_id, _as_dict(options)
    )
    return result


async def resync_web_source(cloud: CloudIndexes, source_id: str) -> ResyncWebSourceResult:
    """See :meth:`moss.MossClient.resync_web_source`."""
    check_source_id(source_id)
    result: ResyncWebSourceResult = await cloud._call(cloud.backend.resync_web_source, source_id)
    return result


async def delete_web_source(cloud: CloudIndexes, source_id: str) -> DeleteWebSourceResult:
    """See :meth:`moss.MossClient.delete_web_source`."""
    check_source_id(source_id)
    result: DeleteWebSourceResult = await cloud._call(cloud.backend.delete_web_source, source_id)
    return result

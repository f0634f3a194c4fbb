"""``MossClient``: the entry point. Opens sessions and (see :mod:`moss.cloud`) talks to the cloud.

The constructor does no I/O. Nothing touches the network unless a server URL is given
(``server_url=`` or ``MOSS_SERVER_URL``); without one the "cloud" is an embedded on-disk store.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import ClassVar

from .engine import CUSTOM, Engine
from .errors import NOT_FOUND, InvalidArgumentError, MossError
from .session import SessionIndex
from .snapshot import SnapshotData
from .types import PushIndexResult, validate_index_name

__all__ = ["MossClient"]

_CLOSED = "MossClient is closed"


class MossClient:
    """Client of one project: sessions, cloud indexes and loaded indexes.

    Args:
        project_id: namespaces every index and on-disk artifact.
        project_key: shown only to a remote server.
        cache_path: default cache for ``load_index(es)`` and root of session snapshots.
        server_url: a ``moss serve`` server (else ``MOSS_SERVER_URL``, else the embedded store).
    """

    DEFAULT_MODEL_ID: ClassVar[str] = "moss-minilm"

    def __init__(
        self,
        project_id: str,
        project_key: str,
        *,
        cache_path: str | None = None,
        server_url: str | None = None,
    ) -> None:
        if not isinstance(project_id, str) or not project_id:
            raise InvalidArgumentError("project_id must be a non-empty string")
        if not isinstance(project_key, str):
            raise InvalidArgumentError("project_key must be a string")
        self._project_id = project_id
        self._project_key = project_key
        self._cache_path = cache_path
        self._server_url = server_url
        self._sessions: set[SessionIndex] = set()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(_CLOSED)

    # -------------------------------------------------------------- sessions

    async def session(
        self,
        index_name: str,
        model_id: str | None = None,
        *,
        artifact_version: str | None = None,
        manifest_sha256: str | None = None,
        auto_load_on_init: bool = True,
    ) -> SessionIndex:
        """Open a session: resume the cloud index ``index_name`` if it exists, else start empty.

        Raises:
            InvalidArgumentError: bad name or model id, only one of the two pins given, or a
                ``model_id`` that differs from the stored index's model.
            MossError: ``MODEL_UNAVAILABLE`` if the model files are missing or do not match the
                pinned artifact; ``NETWORK`` if a remote server cannot be reached.
        """
        self._check_open()
        validate_index_name(index_name)
        if (artifact_version is None) != (manifest_sha256 is None):
            raise InvalidArgumentError(
                "artifact_version and manifest_sha256 pin a model artifact together: "
                "pass both or neither"
            )
        if model_id is not None:
            _check_model_id(model_id)
        data = await self._fetch_cloud_snapshot(index_name) if auto_load_on_init else None
        if data is not None and model_id is not None and model_id != data.model_id:
            raise InvalidArgumentError(
                f"session {index_name!r} exists with model {data.model_id!r}, but model_id "
                f"{model_id!r} was requested: omit model_id or pass {data.model_id!r}"
            )
        chosen = data.model_id if data is not None else (model_id or self.DEFAULT_MODEL_ID)

        def open_engine() -> Engine:
            embedder = None
            if chosen != CUSTOM:
                from .embedding import get_embedder

                embedder = get_embedder(
                    chosen, artifact_version=artifact_version, manifest_sha256=manifest_sha256
                )
                embedder.warm()
            if data is not None:
                return Engine.from_snapshot(data, embedder=embedder, name=index_name)
            return Engine(chosen, embedder=embedder, name=index_name)

        engine = await asyncio.to_thread(open_engine)
        session = SessionIndex(self, index_name, engine)
        self._sessions.add(session)
        return session

    async def _fetch_cloud_snapshot(self, name: str) -> SnapshotData | None:
        """The stored index ``name`` as a snapshot, or None if the cloud has no such index."""
        try:
            from . import cloud
        except ImportError:  # the cloud layer is optional at this stage of the package
            return None
        try:
            return await cloud.fetch_snapshot(self, name)
        except MossError as e:
            if e.code == NOT_FOUND:
                return None
            raise

    async def _push_snapshot(self, name: str, data: SnapshotData) -> PushIndexResult:
        self._check_open()
        try:
            from . import cloud
        except ImportError as e:
            raise MossError("push_index needs the cloud layer (moss.cloud)", code="INTERNAL") from e
        return await cloud.push_snapshot(self, name, data)

    def _forget_session(self, session: SessionIndex) -> None:
        self._sessions.discard(session)

    # -------------------------------------------------------------- lifecycle

    async def close(self) -> None:
        """Release sessions and loaded indexes and stop pollers. Idempotent."""
        if self._closed:
            return
        for s in list(self._sessions):
            await s.close()
        self._closed = True

    async def __aenter__(self) -> MossClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __enter__(self) -> MossClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for s in list(self._sessions):
            s._closed = True
        self._sessions.clear()
        self._closed = True


def _check_model_id(model_id: object) -> str:
    from .embedding import BUILTIN_MODEL_IDS

    accepted = (*BUILTIN_MODEL_IDS, CUSTOM)
    if not isinstance(model_id, str) or model_id not in accepted:
        raise InvalidArgumentError(
            f"unknown model_id {model_id!r}; accepted: {', '.join(accepted)}"
        )
    return model_id

"""Resource limits of ``moss serve``: per-project quotas, request limits and connection timeouts.

Everything a client can make the server spend — disk, job-runner time, memory for a request body,
a connection slot, a worker waiting on a slow body — has a bound here, with a generous default
that an operator can change by flag or environment variable (``moss serve --help``,
docs/security.md lists them all). They live in one module so that the documentation, the CLI and
the server read the same defaults.

* :class:`Quotas` — per project: bytes stored, number of indexes, unfinished jobs. Checked by
  :class:`~moss.server.store.Store` when a job is submitted (the embedded store has none).
* :class:`Limits` — per server: body sizes, JSON nesting and value counts, document-input sizes
  (:mod:`moss.input_limits`), body read timeouts, the header timeout,
  the connection limit, keep-alive, the ``get_docs`` page size, failed-authentication throttling.
* :func:`uvicorn_config` — a uvicorn configuration enforcing the connection-level limits, with an
  h11 protocol that closes connections whose request headers do not arrive within
  ``header_timeout_s`` (uvicorn itself has no such timeout: a client sending one header byte per
  second would hold its connection forever).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

from ..errors import MossError
from ..input_limits import InputLimits

__all__ = ["QUOTA_EXCEEDED", "RATE_LIMITED", "Limits", "QuotaError", "Quotas", "uvicorn_config"]

QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
RATE_LIMITED = "RATE_LIMITED"
_ENV = "MOSS_"


class QuotaError(MossError):
    """A request that would exceed a quota or limit (answered 413 or 429)."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 429,
        code: str = QUOTA_EXCEEDED,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.retry_after = retry_after


def _env_number(name: str, default: float | None, kind: type) -> Any:
    raw = os.environ.get(_ENV + name.upper())
    if raw is None or raw.strip() == "":
        return default
    if raw.strip().lower() in ("none", "unlimited", "off"):
        return None
    try:
        value = kind(raw)
    except ValueError:
        raise MossError(
            f"environment variable {_ENV + name.upper()}={raw!r} is not a number",
            code="INVALID_ARGUMENT",
        ) from None
    if value < 0:
        raise MossError(f"{_ENV + name.upper()} must not be negative", code="INVALID_ARGUMENT")
    return value


@dataclass(frozen=True)
class Quotas:
    """Per-project quotas (None: unlimited). Environment: ``MOSS_MAX_PROJECT_BYTES`` etc."""

    max_project_bytes: int | None = 50 << 30
    max_indexes: int | None = 1000
    max_pending_jobs: int | None = 64

    @classmethod
    def unlimited(cls) -> Quotas:
        """No quota at all (the embedded store)."""
        return cls(None, None, None)

    @classmethod
    def from_env(cls, **overrides: int | None) -> Quotas:
        """Defaults, then ``MOSS_<FIELD>`` variables, then explicit (non-None) overrides."""
        values = {f.name: _env_number(f.name, getattr(cls, f.name), int) for f in fields(cls)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass(frozen=True)
class Limits:
    """Per-server request and connection limits. Environment: ``MOSS_<FIELD>`` (upper case)."""

    max_upload_bytes: int = 4 << 30
    max_json_bytes: int = 64 << 20
    max_json_depth: int = 64
    max_concurrent_uploads: int = 16
    body_idle_timeout_s: float = 30.0
    body_min_rate: float = 16 << 10  # bytes/s, averaged, after body_grace_s
    body_grace_s: float = 10.0
    header_timeout_s: float = 10.0
    keep_alive_s: float = 5.0
    max_connections: int = 1000
    docs_page_size: int = 1000
    auth_failures_burst: int = 10
    auth_failures_per_s: float = 1.0
    # Document input (moss.input_limits): checked before JSON is parsed / a job is queued.
    max_json_values: int = InputLimits.max_json_values or 0
    max_batch_docs: int = InputLimits.max_batch_docs or 0
    max_metadata_keys: int = InputLimits.max_metadata_keys or 0
    max_embedding_dim: int = InputLimits.max_embedding_dim or 0
    max_doc_text_bytes: int = InputLimits.max_doc_text_bytes or 0
    max_batch_text_bytes: int = InputLimits.max_batch_text_bytes or 0
    # 1: answer snapshot downloads with 307 to a presigned URL when the blob store can sign one
    # (S3); off by default because clients must then be able to reach the object store.
    redirect_downloads: int = 0
    redirect_expires_s: float = 300.0

    def input_limits(self) -> InputLimits:
        """The document-input limits to enforce while decoding a request (0: unlimited)."""
        return InputLimits(**{f.name: getattr(self, f.name) or None for f in fields(InputLimits)})

    @classmethod
    def from_env(cls, **overrides: Any) -> Limits:
        """Defaults, then ``MOSS_<FIELD>`` variables, then explicit (non-None) overrides."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            kind = float if f.name.endswith("_s") or f.name.endswith("rate") else int
            value = _env_number(f.name, getattr(cls, f.name), kind)
            values[f.name] = getattr(cls, f.name) if value is None else value
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _guarded_h11(header_timeout_s: float) -> type:
    """uvicorn's h11 protocol, closing connections whose request head arrives too slowly."""
    import asyncio

    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):  # type: ignore[misc]
        _head_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(header_timeout_s, self._head_too_slow)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_too_slow(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()  # the first request's head must arrive in time

        def data_received(self, data: bytes) -> None:
            if self.cycle is None or self.cycle.response_complete:
                self._arm()  # bytes of a new request head (keep-alive): the clock starts
            super().data_received(data)

        def handle_events(self) -> None:
            before = self.cycle
            super().handle_events()
            if self.cycle is not before:
                self._disarm()  # a complete request head arrived

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11Protocol


def uvicorn_config(
    app: Any,
    host: str,
    port: int,
    limits: Limits | None = None,
    *,
    log_level: str = "info",
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> Any:
    """A ``uvicorn.Config`` for ``app`` enforcing the connection limits of ``limits``."""
    import uvicorn

    limits = limits or Limits()
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        http=_guarded_h11(limits.header_timeout_s),
        timeout_keep_alive=max(1, int(limits.keep_alive_s)),
        limit_concurrency=limits.max_connections,
        h11_max_incomplete_event_size=64 << 10,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )

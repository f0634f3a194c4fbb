"""Project keys: how they are made, stored, checked, and how failed attempts are throttled.

A project key is a 256-bit random token (``moss_`` + 43 URL-safe characters). Because it is random
and long, nobody can guess it, so a slow password hash (scrypt) buys nothing and costs every
wrong guess ~70 ms of CPU — which let 16 clients with wrong keys slow real requests 30x. Keys are
therefore stored as **HMAC-SHA256(server secret, key)**: one microsecond to check, compared with
:func:`hmac.compare_digest`, and useless to someone who copies the catalog without the secret.

The server secret lives in ``<data dir>/server.secret`` (32 random bytes, mode 0600, created once
with ``O_EXCL`` so two processes starting together agree on it). Catalogs written before this
scheme hold salted scrypt hashes; such a key still verifies (slowly) and is replaced by its HMAC
the first time it does, so existing data directories keep working and speed up on first use.

Nothing is cached between requests: each request reads the project's current digest from the
catalog (a primary-key lookup), so a rotated or revoked key stops working at once in every process
sharing the directory.

:class:`FailureThrottle` limits failed authentications per client address with a token bucket:
``burst`` failures are free, then one more per ``1 / rate`` seconds; a blocked address is answered
429 with ``Retry-After`` before any key is looked at. Its table is bounded (least recently seen
addresses are forgotten first), so a flood of source addresses cannot grow memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import threading
import time
from collections import OrderedDict
from pathlib import Path

__all__ = [
    "KEY_SCHEME_HMAC",
    "KEY_SCHEME_SCRYPT",
    "MAX_KEY_CHARS",
    "SECRET_FILE",
    "FailureThrottle",
    "key_digest",
    "load_secret",
    "new_key",
    "private_dir",
    "private_file",
    "scrypt_digest",
]

SECRET_FILE = "server.secret"
KEY_SCHEME_HMAC = "hmac-sha256"
KEY_SCHEME_SCRYPT = "scrypt"  # catalogs written before the HMAC scheme
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
MAX_KEY_CHARS = 512  # longer credentials are refused before any hashing


def new_key() -> str:
    """A fresh project key: 256 random bits."""
    return "moss_" + secrets.token_urlsafe(32)


def key_digest(secret: bytes, key: str) -> bytes:
    """What the catalog stores for ``key`` (HMAC-SHA256 under the server secret)."""
    return hmac.new(secret, key.encode("utf-8", "surrogatepass"), "sha256").digest()


def scrypt_digest(key: str, salt: bytes) -> bytes:
    """The legacy salted scrypt hash (verifies keys of catalogs older than the HMAC scheme)."""
    return hashlib.scrypt(key.encode("utf-8", "surrogatepass"), salt=salt, **_SCRYPT)  # type: ignore[arg-type]


def private_dir(path: Path) -> None:
    """Create ``path`` readable by its owner only (0700); an existing one is tightened."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.name != "nt":
        with contextlib.suppress(OSError):  # not ours to change: leave it
            if path.stat().st_mode & 0o077:
                path.chmod(0o700)


def private_file(path: Path) -> None:
    """Create ``path`` if missing with mode 0600 (tightening an existing one we own)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    if os.name != "nt":
        with contextlib.suppress(OSError):
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)


def load_secret(root: Path) -> bytes:
    """The data directory's server secret, created (0600, exactly once) if missing."""
    path = root / SECRET_FILE
    for _ in range(50):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            tmp = root / f".{SECRET_FILE}.{secrets.token_hex(4)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, secrets.token_bytes(32))
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)  # fails if another process won the race: use theirs
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
            continue
        if len(data) == 32:
            return data
        time.sleep(0.01)  # pragma: no cover - a torn read cannot happen with link(); be safe
    raise RuntimeError(f"{path} is not a valid server secret (expected 32 bytes)")


class FailureThrottle:
    """Per-address token bucket for failed authentications (see the module docstring).

    Args:
        burst: failures an address may make before it is throttled.
        rate: failures per second it regains afterwards.
        max_entries: addresses remembered at most (oldest forgotten first).
    """

    def __init__(self, burst: int = 10, rate: float = 1.0, max_entries: int = 10_000) -> None:
        self.burst = max(1, int(burst))
        self.rate = max(1e-6, float(rate))
        self.max_entries = max(1, int(max_entries))
        self._table: OrderedDict[str, tuple[float, float]] = OrderedDict()  # addr -> (tokens, t)
        self._lock = threading.Lock()

    def _tokens(self, addr: str, now: float) -> float:
        entry = self._table.get(addr)
        if entry is None:
            return float(self.burst)
        tokens, then = entry
        return min(float(self.burst), tokens + (now - then) * self.rate)

    def retry_after(self, addr: str) -> float | None:
        """Seconds until ``addr`` may try again, or None if it is not throttled."""
        with self._lock:
            tokens = self._tokens(addr, time.monotonic())
        if tokens >= 1.0:
            return None
        return (1.0 - tokens) / self.rate

    def failed(self, addr: str) -> None:
        """Record one failed authentication from ``addr``."""
        now = time.monotonic()
        with self._lock:
            tokens = max(0.0, self._tokens(addr, now) - 1.0)
            self._table[addr] = (tokens, now)
            self._table.move_to_end(addr)
            while len(self._table) > self.max_entries:
                self._table.popitem(last=False)

    def __len__(self) -> int:
        return len(self._table)

"""The model cache directory: where built ONNX graphs and distilled static models live.

Artefacts are derived deterministically from the installed weights (an ONNX graph built from
``model.safetensors``, a static model distilled from it), so they are cached rather than shipped:

* location: ``MOSS_MODEL_CACHE_DIR`` if set, else ``~/.cache/moss/models`` (``$XDG_CACHE_HOME`` is
  honoured) or ``%LOCALAPPDATA%\\moss\\models`` on Windows;
* names are keyed by the model's manifest hash, so a changed weight file or builder gets a new file
  and a stale one is never picked up;
* every write goes to a temporary file in the same directory and is moved into place with
  ``os.replace``, which is atomic: a reader (another thread or process) sees either nothing or the
  whole file, never a torn one. Two processes building at once both write identical bytes and the
  last rename wins, which is harmless.

File hashes of the large weight files are memoised in ``file-hashes.json`` keyed by path, size,
mtime and inode, so the 90 MB safetensors is hashed once, not at every start (about 60 ms saved).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import threading
from pathlib import Path

__all__ = [
    "CACHE_ENV",
    "atomic_write_bytes",
    "file_sha256",
    "model_cache_dir",
]

CACHE_ENV = "MOSS_MODEL_CACHE_DIR"
_HASHES_FILE = "file-hashes.json"
_hash_lock = threading.Lock()
_hash_memo: dict[str, str] = {}


def model_cache_dir() -> Path:
    """The directory for cached model artefacts (not created here).

    Returns:
        ``$MOSS_MODEL_CACHE_DIR``, else the platform cache directory plus ``moss/models``.
    """
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env)
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA", "").strip()
        root = Path(base) if base else Path.home() / "AppData" / "Local"
        return root / "moss" / "models"
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    root = Path(xdg) if xdg else Path.home() / ".cache"
    return root / "moss" / "models"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file in its directory + ``os.replace``).

    Args:
        path: destination; its parent directories are created.
        data: the complete file content.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"


def _sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path, *, memo_dir: Path | None = None) -> str:
    """sha256 of a file, memoised in memory and in ``memo_dir/file-hashes.json``.

    The memo key is (resolved path, size, mtime_ns, inode): any rewrite of the file changes it. A
    memo that cannot be read or written is ignored, never an error.

    Args:
        path: the file to hash.
        memo_dir: directory holding the persistent memo; ``None`` keeps the memo in memory only.

    Returns:
        the lowercase hex digest.
    """
    key = _stat_key(path)
    with _hash_lock:
        hit = _hash_memo.get(key)
        if hit is not None:
            return hit
        stored: dict[str, str] = {}
        memo_path = memo_dir / _HASHES_FILE if memo_dir is not None else None
        if memo_path is not None:
            try:
                loaded = json.loads(memo_path.read_text(encoding="utf-8"))
                if isinstance(loaded, dict):
                    stored = {str(k): str(v) for k, v in loaded.items()}
            except (OSError, ValueError):
                stored = {}
            hit = stored.get(key)
            if hit is not None:
                _hash_memo[key] = hit
                return hit
        digest = _sha256_of(path)
        _hash_memo[key] = digest
        if memo_path is not None:
            stored[key] = digest
            # Keep the memo small: entries for files that no longer exist are dropped.
            stored = {k: v for k, v in stored.items() if Path(k.split("|", 1)[0]).exists()}
            try:
                atomic_write_bytes(memo_path, json.dumps(stored, indent=0).encode("utf-8"))
            except OSError:
                pass
        return digest

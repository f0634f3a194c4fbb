"""Snapshot generations on disk: crash-safe writes, serialised writers, readers that retry.

Layout of a snapshot directory::

    CURRENT         the name of the live generation ("gen-000042"), replaced atomically
    gen-000042/     manifest.json, docs.json, vectors.f32, arrays.bin (moss.snapshot_codec)
    .lock           an advisory lock file; writers hold it for the whole write

Why it is shaped this way:

* **Crash safety.** A generation is written into a private temporary directory, every file
  fsynced, renamed into place, and only then does ``CURRENT`` switch (``os.replace``). A process
  killed at any point leaves the previous generation or the new one in force, never a mix.
* **Failure leaves nothing behind.** On any error (disk full, file-size limit, permissions) the
  temporary directory and a generation that never became current are removed before the error
  is raised, so a full disk is not made fuller and a retry can succeed once space is back. OS
  errors become ``MossError`` (code ``INTERNAL``) naming the cause and the directory.
* **One writer at a time.** Two sessions of one name, in one process or in two, would otherwise
  both pick ``gen-N+1`` and remove each other's files. Writers take an exclusive advisory lock on
  ``.lock`` (``flock`` on POSIX, which also separates two threads of one process because each
  opens the file itself; ``msvcrt.locking`` on Windows); a process that dies drops its lock.
* **Readers take no lock.** A reader resolves ``CURRENT`` and opens the generation's files; if a
  writer removed that generation in between (a file vanished), the reader resolves ``CURRENT``
  again and retries, a bounded number of times. Files once opened stay readable on POSIX after
  their generation is removed, so a loaded snapshot is never pulled from under its reader.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import INTERNAL, InvalidArgumentError, MossError
from .snapshot_codec import FILES, SnapshotData, bad, decode_files, encode_files

__all__ = ["current_generation", "fsync_dir", "read_dir", "write_dir"]

_LOCK_NAME = ".lock"
_READ_ATTEMPTS = 8


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (no-op on Windows)."""
    if os.name == "nt":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _storage_error(action: str, path: Path, e: OSError) -> MossError:
    """An OS failure while writing, as a MossError that says what ran out or was refused."""
    reason = {
        errno.ENOSPC: "no space left on the device",
        errno.EFBIG: "a file would exceed the file-size limit",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EROFS: "the file system is read-only",
    }.get(e.errno or 0, e.strerror or type(e).__name__)
    name = errno.errorcode.get(e.errno or 0, "OSError")
    if e.errno == errno.ENAMETOOLONG:  # the caller's path can never work: their mistake
        return InvalidArgumentError(
            f"cannot {action} {path}: a name in the path is too long", detail=f"{name}: {e}"
        )
    return MossError(f"cannot {action} {path}: {reason}", code=INTERNAL, detail=f"{name}: {e}")


@contextlib.contextmanager
def _writer_lock(root: Path) -> Iterator[None]:
    """Hold the exclusive advisory lock of the snapshot directory ``root``."""
    try:
        f = open(root / _LOCK_NAME, "a+b")
    except OSError as e:
        raise _storage_error("lock the snapshot directory", root, e) from e
    try:
        if os.name == "nt":
            import msvcrt

            for attempt in range(60):  # LK_LOCK itself gives up after ~10 s
                try:
                    msvcrt.locking(f.fileno(), msvcrt.LK_LOCK, 1)  # type: ignore[attr-defined]
                    break
                except OSError as e:
                    if attempt == 59:
                        raise _storage_error("lock the snapshot directory", root, e) from e
        else:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        yield
    finally:
        f.close()  # closing the descriptor releases the lock


def _generations(root: Path) -> list[int]:
    out = []
    for p in root.glob("gen-*"):
        try:
            out.append(int(p.name[4:]))
        except ValueError:
            continue
    return sorted(out)


def _remove_tree(path: Path) -> None:
    try:
        for child in path.iterdir():
            child.unlink(missing_ok=True)
        path.rmdir()
    except OSError:
        pass


def write_dir(root: str | os.PathLike[str], data: SnapshotData) -> Path:
    """Write ``data`` as a new generation under ``root`` and switch ``CURRENT`` to it atomically.

    Concurrent writers of one ``root`` (threads or processes) take turns.

    Raises:
        MossError: code ``INTERNAL`` when the files cannot be written (disk full, file-size
            limit, permissions); nothing of the failed write is left behind.
    """
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _storage_error("create the snapshot directory", root, e) from e
    files = encode_files(data)
    with _writer_lock(root):
        return _write_generation(root, files)


def _write_generation(root: Path, files: dict[str, list[bytes | memoryview]]) -> Path:
    gens = _generations(root)
    gen = (gens[-1] + 1) if gens else 1
    gen_dir = root / f"gen-{gen:06d}"
    tag = f"{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}"
    tmp_dir = root / f".tmp-gen-{gen:06d}-{tag}"
    current_tmp = root / f".CURRENT.{tag}.tmp"
    switched = False
    try:
        # Leftovers of writers that crashed: no other writer can be running (we hold the lock).
        for stale in [*root.glob(".tmp-gen-*"), *root.glob(".CURRENT.*.tmp")]:
            if stale.is_dir():
                _remove_tree(stale)
            else:
                stale.unlink(missing_ok=True)
        tmp_dir.mkdir()
        for name, chunks in files.items():
            with open(tmp_dir / name, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp_dir, gen_dir)
        with open(current_tmp, "w", encoding="utf-8") as f:
            f.write(gen_dir.name + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(current_tmp, root / "CURRENT")
        switched = True
        fsync_dir(root)
    except BaseException as e:
        _remove_tree(tmp_dir)
        with contextlib.suppress(OSError):
            current_tmp.unlink(missing_ok=True)
        if not switched:
            _remove_tree(gen_dir)  # renamed into place but never current
        if isinstance(e, OSError):
            raise _storage_error("write the snapshot to", root, e) from e
        raise
    for old in gens:  # superseded generations (a reader holding an mmap keeps its pages on POSIX)
        _remove_tree(root / f"gen-{old:06d}")
    return gen_dir


def current_generation(root: str | os.PathLike[str]) -> Path | None:
    """The live generation directory under ``root``, or None if no snapshot was ever completed."""
    root = Path(root)
    try:
        name = (root / "CURRENT").read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise bad(f"snapshot pointer {root / 'CURRENT'} is unreadable", str(e)) from e
    if not name.startswith("gen-") or not name[4:].isdigit() or not name.isascii():
        raise bad(f"snapshot pointer {root / 'CURRENT'} is damaged")
    return root / name


class _Vanished(Exception):
    """A file of the generation being read is gone (a writer replaced the generation)."""


def _close(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def _open_generation(gen_dir: Path) -> tuple[dict[str, bytes | mmap.mmap], int | None]:
    files: dict[str, bytes | mmap.mmap] = {}
    text_fd: int | None = None  # arrays.bin again, for the texts (the very file just mapped)
    for name in FILES:
        path = gen_dir / name
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    files[name] = b""
                elif name in ("vectors.f32", "arrays.bin"):
                    files[name] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                    if name == "arrays.bin" and hasattr(os, "pread"):
                        text_fd = os.dup(f.fileno())
                else:
                    files[name] = f.read()
        except FileNotFoundError as e:
            _close(text_fd)
            raise _Vanished(str(path)) from e
        except OSError as e:
            _close(text_fd)
            raise bad(f"snapshot file {path} cannot be read", str(e)) from e
    return files, text_fd


def read_dir(root: str | os.PathLike[str]) -> SnapshotData:
    """Read the live generation under ``root`` (arrays memory-mapped, read-only).

    Raises:
        MossError: code ``DESERIALIZATION`` when there is no snapshot, or it is damaged,
            whatever the damage.
    """
    try:
        return _read_dir(Path(root))
    except MossError:
        raise
    except Exception as e:  # the public boundary: nothing untyped leaves a load
        raise bad(f"snapshot at {root} cannot be read", f"{type(e).__name__}: {e}") from e


def _read_dir(root: Path) -> SnapshotData:
    for _ in range(_READ_ATTEMPTS):
        gen_dir = current_generation(root)
        if gen_dir is None:
            raise bad(f"no snapshot found at {root}")
        try:
            files, text_fd = _open_generation(gen_dir)
        except _Vanished as e:
            if current_generation(root) != gen_dir:
                continue  # a writer switched generations under us: read the new one
            raise bad(f"snapshot file {e} is missing") from e
        break
    else:
        raise bad(f"snapshot at {root} kept changing while it was read; try again")
    data = decode_files(files, text_fd)
    # The checksums paged every mapped byte into this process; hand the pages back to the page
    # cache so that resident memory counts only what the index then reads (the texts of hits,
    # the graph and postings a query walks), not the whole snapshot.
    for buf in files.values():
        if isinstance(buf, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
            buf.madvise(mmap.MADV_DONTNEED)
            buf.madvise(mmap.MADV_RANDOM)
    return data

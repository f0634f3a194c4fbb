"""Compact, versioned, pickle-free snapshots of an :class:`~moss.engine.Engine`.

A snapshot is four files (API.md §4.5)::

    manifest.json   format name and version, model identity, counts, every file's size and
                    CRC-32, and the table of arrays in arrays.bin (name, dtype, shape, offset)
    docs.json       {"ids", "texts", "metadata", "payloads"}: parallel lists in index order
    vectors.f32     raw little-endian float32 matrix, one row per document, in the same order
    arrays.bin      keyword-index and vector-graph arrays, each 64-byte aligned (memory-mappable)

On disk (:func:`write_dir`) the files live in a fresh generation directory ``gen-<n>/``; a
``CURRENT`` file naming the live generation is then replaced atomically, so a crash mid-write leaves
the previous generation in force, and older generations are removed afterwards. Over the wire and in
the server's blob store the same files travel as one container (:func:`pack` / :func:`unpack`).

Loading never re-embeds or re-tokenises: the vectors and index arrays are memory-mapped (disk) or
viewed (bytes) and handed to the index structures as they are. Every file's size and CRC-32 is
checked first; anything missing, truncated or damaged raises ``MossError(code="DESERIALIZATION")``
before any state is touched.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .errors import DESERIALIZATION, MossError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "SnapshotData",
    "pack",
    "read_dir",
    "unpack",
    "write_dir",
]

FORMAT = "moss-snapshot"
FORMAT_VERSION = 1
_ALIGN = 64
_PACK_MAGIC = b"MOSSPACK"
_PACK_HEADER = struct.Struct("<8sIQ")  # magic, container version, header length
_FILES = ("manifest.json", "docs.json", "vectors.f32", "arrays.bin")


@dataclass
class SnapshotData:
    """The decoded content of a snapshot (arrays may be read-only views of a file or buffer)."""

    model_id: str
    dimension: int | None
    ids: list[str]
    texts: list[str]
    metadata: list[dict[str, str] | None]
    payloads: list[str | None]
    vectors: np.ndarray | None  # (n, dimension) float32
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    model: dict[str, str] | None = (
        None  # {"artifact_version", "manifest_sha256"} of built-in models
    )
    extra: dict[str, Any] = field(default_factory=dict)  # free-form (name, created_at, ...)

    @property
    def doc_count(self) -> int:
        return len(self.ids)


def _bad(message: str, detail: str | None = None) -> MossError:
    return MossError(message, code=DESERIALIZATION, detail=detail)


# ---------------------------------------------------------------------------------- encode


def _encode(data: SnapshotData) -> dict[str, bytes | memoryview]:
    """Serialise to the four files (bytes-like), manifest last since it describes the others."""
    n = len(data.ids)
    if not (len(data.texts) == len(data.metadata) == len(data.payloads) == n):
        raise ValueError("snapshot columns have different lengths")
    docs = json.dumps(
        {
            "ids": data.ids,
            "texts": data.texts,
            "metadata": data.metadata,
            "payloads": data.payloads,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")
    if data.vectors is not None:
        vec = np.ascontiguousarray(data.vectors, dtype="<f4")
        if vec.shape != (n, data.dimension):
            raise ValueError(f"vectors shape {vec.shape} does not match {n} x {data.dimension}")
        vectors: bytes | memoryview = vec.data.cast("B")
    else:
        vectors = b""
    table: dict[str, dict[str, Any]] = {}
    parts: list[bytes | memoryview] = []
    offset = 0
    for name, arr in data.arrays.items():
        a = np.ascontiguousarray(arr)
        if a.dtype.hasobject:
            raise ValueError(f"array {name!r} has an object dtype")
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        pad = (-offset) % _ALIGN
        if pad:
            parts.append(b"\0" * pad)
            offset += pad
        table[name] = {"dtype": a.dtype.str, "shape": list(a.shape), "offset": offset}
        raw: bytes | memoryview = a.data.cast("B") if a.size else b""
        parts.append(raw)
        offset += len(raw)
    arrays = b"".join(parts)
    files: dict[str, bytes | memoryview] = {
        "docs.json": docs,
        "vectors.f32": vectors,
        "arrays.bin": arrays,
    }
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "moss_version": __version__,
        "model_id": data.model_id,
        "dimension": data.dimension,
        "doc_count": n,
        "model": data.model,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": {k: {"size": len(v), "crc32": zlib.crc32(v)} for k, v in files.items()},
        "arrays": table,
        "extra": data.extra,
    }
    files["manifest.json"] = json.dumps(manifest, indent=1).encode("utf-8")
    return files


# ---------------------------------------------------------------------------------- decode


def _decode(files: Mapping[str, bytes | memoryview | mmap.mmap]) -> SnapshotData:
    """Check and decode the four files. Raises DESERIALIZATION on any inconsistency."""
    try:
        manifest = json.loads(bytes(files["manifest.json"]).decode("utf-8"))
    except KeyError as e:
        raise _bad("snapshot is missing manifest.json") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad("snapshot manifest is damaged", str(e)) from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _bad("not a moss snapshot (bad manifest format)")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise _bad(
            f"snapshot format version {version} is not supported by moss {__version__} "
            f"(expected {FORMAT_VERSION})"
        )
    try:
        for name, meta in manifest["files"].items():
            if name not in files:
                raise _bad(f"snapshot is missing {name}")
            buf = files[name]
            if len(buf) != meta["size"]:
                raise _bad(
                    f"snapshot file {name} is truncated or damaged",
                    f"size {len(buf)} != {meta['size']}",
                )
            if zlib.crc32(buf) != meta["crc32"]:
                raise _bad(f"snapshot file {name} is damaged (checksum mismatch)")
        docs = json.loads(bytes(files["docs.json"]).decode("utf-8"))
        ids, texts = docs["ids"], docs["texts"]
        metadata, payloads = docs["metadata"], docs["payloads"]
        n = int(manifest["doc_count"])
        if not (len(ids) == len(texts) == len(metadata) == len(payloads) == n):
            raise _bad("snapshot documents do not match the manifest count")
        dim = manifest["dimension"]
        vec_buf = files["vectors.f32"]
        vectors = None
        if len(vec_buf):
            vectors = np.frombuffer(vec_buf, dtype="<f4").reshape(n, int(dim))
        arrays: dict[str, np.ndarray] = {}
        arr_buf = files["arrays.bin"]
        for name, a in manifest["arrays"].items():
            dt = np.dtype(a["dtype"])
            count = int(np.prod(a["shape"], dtype=np.int64))
            arrays[name] = np.frombuffer(
                arr_buf, dtype=dt, count=count, offset=a["offset"]
            ).reshape(a["shape"])
    except MossError:
        raise
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as e:
        raise _bad("snapshot is damaged or inconsistent", f"{type(e).__name__}: {e}") from e
    return SnapshotData(
        model_id=manifest["model_id"],
        dimension=dim,
        ids=ids,
        texts=texts,
        metadata=metadata,
        payloads=payloads,
        vectors=vectors,
        arrays=arrays,
        model=manifest.get("model"),
        extra=manifest.get("extra") or {},
    )


# ---------------------------------------------------------------------------------- container


def pack(data: SnapshotData) -> bytes:
    """One self-describing blob holding the four files (for the cloud and the server)."""
    files = _encode(data)
    entries: list[dict[str, Any]] = []
    offset = 0
    for name in _FILES:
        size = len(files[name])
        offset += (-offset) % _ALIGN
        entries.append({"name": name, "offset": offset, "size": size})
        offset += size
    header = json.dumps({"files": entries}).encode("utf-8")
    start = _PACK_HEADER.size + len(header)
    start += (-start) % _ALIGN
    out = bytearray(start + offset)
    out[: _PACK_HEADER.size] = _PACK_HEADER.pack(_PACK_MAGIC, 1, len(header))
    out[_PACK_HEADER.size : _PACK_HEADER.size + len(header)] = header
    for e in entries:
        out[start + e["offset"] : start + e["offset"] + e["size"]] = files[e["name"]]
    return bytes(out)


def unpack(blob: bytes | bytearray | memoryview) -> SnapshotData:
    """Decode a :func:`pack` blob without copying the arrays (they view ``blob``)."""
    view = memoryview(blob)
    if len(view) < _PACK_HEADER.size:
        raise _bad("snapshot blob is truncated")
    magic, version, hlen = _PACK_HEADER.unpack(view[: _PACK_HEADER.size])
    if magic != _PACK_MAGIC or version != 1:
        raise _bad("not a moss snapshot blob")
    try:
        header = json.loads(bytes(view[_PACK_HEADER.size : _PACK_HEADER.size + hlen]))
        start = _PACK_HEADER.size + hlen
        start += (-start) % _ALIGN
        files: dict[str, memoryview] = {}
        for e in header["files"]:
            lo = start + int(e["offset"])
            hi = lo + int(e["size"])
            if hi > len(view):
                raise _bad("snapshot blob is truncated")
            files[e["name"]] = view[lo:hi]
    except MossError:
        raise
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as e:
        raise _bad("snapshot blob header is damaged", str(e)) from e
    return _decode(files)


# ---------------------------------------------------------------------------------- directory


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (no-op on Windows)."""
    if os.name == "nt":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _generations(root: Path) -> list[int]:
    out = []
    for p in root.glob("gen-*"):
        try:
            out.append(int(p.name[4:]))
        except ValueError:
            continue
    return sorted(out)


def write_dir(root: str | os.PathLike[str], data: SnapshotData) -> Path:
    """Write ``data`` as a new generation under ``root`` and switch ``CURRENT`` to it atomically."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    files = _encode(data)
    gens = _generations(root)
    gen = (gens[-1] + 1) if gens else 1
    gen_dir = root / f"gen-{gen:06d}"
    tmp_dir = root / f".tmp-gen-{gen:06d}-{os.getpid()}-{time.monotonic_ns()}"
    tmp_dir.mkdir()
    for name, content in files.items():
        with open(tmp_dir / name, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp_dir, gen_dir)
    current_tmp = root / f".CURRENT.{os.getpid()}.tmp"
    with open(current_tmp, "w", encoding="utf-8") as f:
        f.write(gen_dir.name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(current_tmp, root / "CURRENT")
    fsync_dir(root)
    for old in gens:  # superseded generations (a reader holding an mmap keeps its pages on POSIX)
        _remove_tree(root / f"gen-{old:06d}")
    for stale in root.glob(".tmp-gen-*"):
        if stale != tmp_dir:
            _remove_tree(stale)
    return gen_dir


def _remove_tree(path: Path) -> None:
    try:
        for child in path.iterdir():
            child.unlink(missing_ok=True)
        path.rmdir()
    except OSError:
        pass


def current_generation(root: str | os.PathLike[str]) -> Path | None:
    """The live generation directory under ``root``, or None if no snapshot was ever completed."""
    root = Path(root)
    try:
        name = (root / "CURRENT").read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise _bad(f"snapshot pointer {root / 'CURRENT'} is unreadable", str(e)) from e
    if not name.startswith("gen-") or "/" in name or "\\" in name:
        raise _bad(f"snapshot pointer {root / 'CURRENT'} is damaged")
    return root / name


def read_dir(root: str | os.PathLike[str]) -> SnapshotData:
    """Read the live generation under ``root`` (arrays memory-mapped, read-only)."""
    gen_dir = current_generation(root)
    if gen_dir is None:
        raise _bad(f"no snapshot found at {root}")
    files: dict[str, bytes | mmap.mmap] = {}
    for name in _FILES:
        path = gen_dir / name
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    files[name] = b""
                elif name in ("vectors.f32", "arrays.bin"):
                    files[name] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                else:
                    files[name] = f.read()
        except FileNotFoundError as e:
            raise _bad(f"snapshot file {path} is missing") from e
        except OSError as e:
            raise _bad(f"snapshot file {path} cannot be read", str(e)) from e
    return _decode(files)

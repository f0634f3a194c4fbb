"""Compact, versioned, pickle-free snapshots of an :class:`~moss.engine.Engine`.

A snapshot is four files (docs/api.md §4.5)::

    manifest.json   format name and version, model identity, counts, every file's size and
                    CRC-32, and the table of arrays in arrays.bin (name, dtype, shape, offset)
    docs.json       {"ids", "metadata", "payloads"}: parallel lists in index order
    vectors.f32     raw little-endian float32 matrix, one row per document, in the same order
    arrays.bin      the texts (``text/blob``: UTF-8 back to back, ``text/offsets``: n + 1 byte
                    offsets), then the keyword-index and vector-graph arrays, each 64-byte aligned
                    (memory-mappable)

Texts are not JSON (format 1 had them in docs.json): parsing 100k abstracts cost 0.14 to 0.8 s of
a load, and the engine now keeps them as UTF-8 and decodes one only when it is read
(:class:`~moss.texts.TextColumn`), so a loaded index never builds 100k strings.

On disk (:func:`write_dir`) the files live in a fresh generation directory ``gen-<n>/``; a
``CURRENT`` file naming the live generation is then replaced atomically, so a crash mid-write leaves
the previous generation in force, and older generations are removed afterwards. Over the wire and in
the server's blob store the same files travel as one container (:func:`pack` / :func:`unpack`),
made for transfer and storage rather than memory-mapping: ``docs.json`` and ``arrays.bin`` are
zlib-compressed (level 1: text, postings and neighbour lists shrink 2-3x; real MiniLM vectors
would shrink only 7% at ~30 MB/s, so they stay raw), and the HNSW graph travels without its int8
copies of the vectors, which ``unpack`` re-quantises from the float32 matrix bit for bit
(:func:`~moss.vectors.strip_graph_vectors`).

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .errors import DESERIALIZATION, MossError
from .texts import TextColumn, encode_texts
from .vectors import restore_graph_vectors, strip_graph_vectors

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
FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)  # 1: texts in docs.json
_ALIGN = 64
_PACK_MAGIC = b"MOSSPACK"
_PACK_VERSION = 2  # 1: no codecs, the graph with its int8 vectors
_ZLIB_LEVEL = 1  # ~100 MB/s here; level 6 was 0-18% smaller per section at 6-8x the time
_COMPRESSED = ("docs.json", "arrays.bin")
_TEXT_ARRAYS = ("text/blob", "text/offsets")
_PACK_HEADER = struct.Struct("<8sIQ")  # magic, container version, header length
_FILES = ("manifest.json", "docs.json", "vectors.f32", "arrays.bin")


@dataclass
class SnapshotData:
    """The decoded content of a snapshot (arrays may be read-only views of a file or buffer)."""

    model_id: str
    dimension: int | None
    ids: list[str]
    texts: Sequence[str]  # a TextColumn when decoded from format 2
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


Chunks = list[bytes | memoryview]  # one file's contents, in order (views of the arrays, no join)


def _crc32(chunks: Chunks) -> int:
    crc = 0
    for chunk in chunks:
        crc = zlib.crc32(chunk, crc)
    return crc


def _encode(data: SnapshotData) -> dict[str, Chunks]:
    """Serialise to the four files, manifest last since it describes the others.

    Each file is a list of chunks that view the arrays where they can: ``arrays.bin`` is never
    joined into one buffer, so writing a snapshot copies nothing the caller's arrays already hold.
    """
    n = len(data.ids)
    if not (len(data.texts) == len(data.metadata) == len(data.payloads) == n):
        raise ValueError("snapshot columns have different lengths")
    docs = json.dumps(
        {
            "ids": data.ids,
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
    if any(k in data.arrays for k in _TEXT_ARRAYS):
        raise ValueError(f"array names {_TEXT_ARRAYS} are reserved for the texts")
    if isinstance(data.texts, TextColumn):
        text_blob, text_offsets = data.texts.to_arrays()
    else:
        text_blob, text_offsets = encode_texts(data.texts)
    table: dict[str, dict[str, Any]] = {}
    parts: list[bytes | memoryview] = []
    offset = 0
    all_arrays = {"text/blob": text_blob, "text/offsets": text_offsets, **data.arrays}
    for name, arr in all_arrays.items():
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
    files: dict[str, Chunks] = {
        "docs.json": [docs],
        "vectors.f32": [vectors],
        "arrays.bin": parts,
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
        "files": {k: {"size": sum(map(len, v)), "crc32": _crc32(v)} for k, v in files.items()},
        "arrays": table,
        "extra": data.extra,
    }
    files["manifest.json"] = [json.dumps(manifest, indent=1).encode("utf-8")]
    return files


# ---------------------------------------------------------------------------------- decode


def _decode(
    files: Mapping[str, bytes | memoryview | mmap.mmap], text_fd: int | None = None
) -> SnapshotData:
    """Check and decode the four files. Raises DESERIALIZATION on any inconsistency.

    ``text_fd``: a descriptor of ``arrays.bin`` to read the texts from on demand (see read_dir);
    the texts own it, and it is closed here if decoding fails.
    """
    try:
        manifest = json.loads(bytes(files["manifest.json"]).decode("utf-8"))
    except KeyError as e:
        raise _bad("snapshot is missing manifest.json") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad("snapshot manifest is damaged", str(e)) from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _bad("not a moss snapshot (bad manifest format)")
    version = manifest.get("format_version")
    if version not in _READABLE_VERSIONS:
        raise _bad(
            f"snapshot format version {version} is not supported by moss {__version__} "
            f"(it reads versions {', '.join(map(str, _READABLE_VERSIONS))})"
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
        ids, metadata, payloads = docs["ids"], docs["metadata"], docs["payloads"]
        n = int(manifest["doc_count"])
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
        texts: Sequence[str]
        if version == 1:
            texts = docs["texts"]
        else:
            blob, offsets = arrays.pop("text/blob"), arrays.pop("text/offsets")
            if text_fd is not None:
                at = int(manifest["arrays"]["text/blob"]["offset"])
                texts, text_fd = TextColumn.from_file(text_fd, at, blob.size, offsets), None
            else:
                texts = TextColumn(blob, offsets)
        if not (len(ids) == len(texts) == len(metadata) == len(payloads) == n):
            raise _bad("snapshot documents do not match the manifest count")
    except MossError:
        raise
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as e:
        raise _bad("snapshot is damaged or inconsistent", f"{type(e).__name__}: {e}") from e
    finally:
        if text_fd is not None:
            os.close(text_fd)
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


def _vector_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k[4:]: v for k, v in arrays.items() if k.startswith("vec/")}


def _with_vector_arrays(
    arrays: Mapping[str, np.ndarray], vec: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    out = {k: v for k, v in arrays.items() if not k.startswith("vec/")}
    out.update({f"vec/{k}": v for k, v in vec.items()})
    return out


def pack(data: SnapshotData, *, compress: bool = True) -> bytes:
    """One self-describing blob holding the four files (for the cloud and the server).

    With ``compress`` (the default) the graph leaves its int8 vector copies behind and
    ``docs.json``/``arrays.bin`` are zlib-compressed; see the module docstring.
    """
    if compress and data.vectors is not None and "vec/graph" in data.arrays:
        vec = _vector_arrays(data.arrays)
        stripped = strip_graph_vectors(vec, data.vectors)
        if "graph_slot_row" in stripped:
            data = replace(data, arrays=_with_vector_arrays(data.arrays, stripped))
    files = _encode(data)
    entries: list[dict[str, Any]] = []
    bodies: dict[str, Chunks] = {}
    offset = 0
    for name in _FILES:
        body = files[name]
        codec = "raw"
        size = sum(map(len, body))
        if compress and name in _COMPRESSED and size > 0:
            z = zlib.compressobj(_ZLIB_LEVEL)
            body, codec = [*map(z.compress, body), z.flush()], "zlib"
            size = sum(map(len, body))
        bodies[name] = body
        offset += (-offset) % _ALIGN
        entries.append({"name": name, "offset": offset, "size": size, "codec": codec})
        offset += size
    header = json.dumps({"files": entries}).encode("utf-8")
    start = _PACK_HEADER.size + len(header)
    start += (-start) % _ALIGN
    out = bytearray(start + offset)
    out[: _PACK_HEADER.size] = _PACK_HEADER.pack(_PACK_MAGIC, _PACK_VERSION, len(header))
    out[_PACK_HEADER.size : _PACK_HEADER.size + len(header)] = header
    for e in entries:
        at = start + e["offset"]
        for chunk in bodies[e["name"]]:
            out[at : at + len(chunk)] = chunk
            at += len(chunk)
    return bytes(out)


def unpack(blob: bytes | bytearray | memoryview) -> SnapshotData:
    """Decode a :func:`pack` blob; raw sections are viewed in place, compressed ones inflated."""
    view = memoryview(blob)
    if len(view) < _PACK_HEADER.size:
        raise _bad("snapshot blob is truncated")
    magic, version, hlen = _PACK_HEADER.unpack(view[: _PACK_HEADER.size])
    if magic != _PACK_MAGIC or version not in (1, _PACK_VERSION):
        raise _bad("not a moss snapshot blob")
    try:
        header = json.loads(bytes(view[_PACK_HEADER.size : _PACK_HEADER.size + hlen]))
        start = _PACK_HEADER.size + hlen
        start += (-start) % _ALIGN
        files: dict[str, bytes | memoryview] = {}
        for e in header["files"]:
            lo = start + int(e["offset"])
            hi = lo + int(e["size"])
            if hi > len(view):
                raise _bad("snapshot blob is truncated")
            codec = e.get("codec", "raw")
            if codec == "zlib":
                try:
                    files[e["name"]] = zlib.decompress(view[lo:hi])
                except zlib.error as z:
                    raise _bad(f"snapshot file {e['name']} is damaged", str(z)) from z
            elif codec == "raw":
                files[e["name"]] = view[lo:hi]
            else:
                raise _bad(f"snapshot file {e['name']} uses an unknown codec {codec!r}")
    except MossError:
        raise
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as e:
        raise _bad("snapshot blob header is damaged", str(e)) from e
    data = _decode(files)
    if "vec/graph_slot_row" in data.arrays:
        if data.vectors is None:
            raise _bad("snapshot has a stripped vector graph but no vectors")
        try:
            vec = restore_graph_vectors(_vector_arrays(data.arrays), data.vectors)
        except (KeyError, ValueError, TypeError, IndexError) as e:
            raise _bad("snapshot vector graph is damaged", str(e)) from e
        data.arrays = _with_vector_arrays(data.arrays, vec)
    return data


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
    for name, chunks in files.items():
        with open(tmp_dir / name, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
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


def _close(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def read_dir(root: str | os.PathLike[str]) -> SnapshotData:
    """Read the live generation under ``root`` (arrays memory-mapped, read-only)."""
    gen_dir = current_generation(root)
    if gen_dir is None:
        raise _bad(f"no snapshot found at {root}")
    files: dict[str, bytes | mmap.mmap] = {}
    text_fd: int | None = None  # arrays.bin again, for the texts (the very file just mapped)
    for name in _FILES:
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
            raise _bad(f"snapshot file {path} is missing") from e
        except OSError as e:
            _close(text_fd)
            raise _bad(f"snapshot file {path} cannot be read", str(e)) from e
    data = _decode(files, text_fd)
    # The checksums paged every mapped byte into this process; hand the pages back to the page
    # cache so that resident memory counts only what the index then reads (the texts of hits,
    # the graph and postings a query walks), not the whole snapshot.
    for buf in files.values():
        if isinstance(buf, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
            buf.madvise(mmap.MADV_DONTNEED)
            buf.madvise(mmap.MADV_RANDOM)
    return data

"""Compact, versioned, pickle-free snapshots of an :class:`~moss.engine.Engine`.

A snapshot is four files (docs/api.md §4.5, docs/snapshots.md)::

    manifest.json   format name and version, model identity, counts, every file's size and
                    CRC-32, the table of arrays in arrays.bin (name, dtype, shape, offset), and
                    (format 3) a SHA-256 of the manifest itself
    docs.json       {"ids", "metadata", "payloads"}: parallel lists in index order
    vectors.f32     raw little-endian float32 matrix, one row per document, in the same order
    arrays.bin      the texts (``text/blob``: UTF-8 back to back, ``text/offsets``: n + 1 byte
                    offsets), then the keyword-index and vector-graph arrays, each 64-byte aligned
                    (memory-mappable)

The code is in three modules, one per concern, and this one is the public face of all three:

* :mod:`moss.snapshot_codec`: the files and :class:`SnapshotData`; decoding validates every
  manifest field against a schema and the real file sizes before anything is viewed.
* :mod:`moss.snapshot_dir`: generations on disk (:func:`write_dir`, :func:`read_dir`): crash-safe,
  one writer at a time under an advisory lock, readers that retry when a generation is replaced
  under them, typed errors for a full disk.
* here: the container (:func:`pack` / :func:`unpack`) in which the same files travel over the wire
  and sit in the server's blob store. It is made for transfer and storage rather than
  memory-mapping: ``docs.json`` and ``arrays.bin`` are zlib-compressed (level 1: text, postings
  and neighbour lists shrink 2-3x; real MiniLM vectors would shrink only 7% at ~30 MB/s, so they
  stay raw), and the HNSW graph travels without its int8 copies of the vectors, which ``unpack``
  re-quantises from the float32 matrix bit for bit (:func:`~moss.vectors.strip_graph_vectors`).

Container layout (version 3)::

    "MOSSPACK" | u32 version | u64 header length | 32-byte SHA-256 of the header | header JSON
    | the four files, each 64-byte aligned, in manifest, docs, vectors, arrays order

The header lists each file's offset, stored size and codec. A compressed file is inflated only up
to the size the (already verified) manifest declares, and only if that size is within
:data:`INFLATE_RATIO` times its compressed size plus :data:`INFLATE_FLOOR`: a 2 MB zlib bomb
cannot become gigabytes before a check sees it. Containers 1 and 2 (no header checksum) are still
read, with the same bounds.

Loading never re-embeds or re-tokenises: the vectors and index arrays are memory-mapped (disk) or
viewed (bytes) and handed to the index structures as they are. Anything missing, truncated,
damaged or inconsistent raises ``MossError(code="DESERIALIZATION")`` before any state is touched,
whatever exception the damage would otherwise have caused.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from .errors import MossError
from .snapshot_codec import (
    ALIGN,
    FILES,
    FORMAT,
    FORMAT_VERSION,
    Chunks,
    Manifest,
    SnapshotData,
    bad,
    decode_files,
    encode_files,
    read_manifest,
)
from .snapshot_dir import current_generation, fsync_dir, read_dir, write_dir
from .vectors import restore_graph_vectors, strip_graph_vectors

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "INFLATE_FLOOR",
    "INFLATE_RATIO",
    "SnapshotData",
    "current_generation",
    "fsync_dir",
    "pack",
    "read_dir",
    "unpack",
    "write_dir",
]

_PACK_MAGIC = b"MOSSPACK"
_PACK_VERSION = 3  # 2: no header checksum; 1: no codecs, the graph with its int8 vectors
_ZLIB_LEVEL = 1  # ~100 MB/s here; level 6 was 0-18% smaller per section at 6-8x the time
_COMPRESSED = ("docs.json", "arrays.bin")
_PACK_HEADER = struct.Struct("<8sIQ")  # magic, container version, header length
_PACK_SUM = 32  # version 3: SHA-256 of the header JSON follows the fixed header
_MAX_HEADER = 1 << 20  # four small entries; anything larger is damage
INFLATE_RATIO = 64
"""A compressed file may declare at most this many times its compressed size (plus
:data:`INFLATE_FLOOR`). Real snapshots compress 2-3x; 20k copies of one 1 KB text 24x; one 10 MB
text of a single repeated character 229x (admitted by the floor)."""
INFLATE_FLOOR = 16 << 20
_INFLATE_PIECE = 4 << 20


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
    files = encode_files(data)
    entries: list[dict[str, Any]] = []
    bodies: dict[str, Chunks] = {}
    offset = 0
    for name in FILES:
        body = files[name]
        codec = "raw"
        size = sum(map(len, body))
        if compress and name in _COMPRESSED and size > 0:
            z = zlib.compressobj(_ZLIB_LEVEL)
            body, codec = [*map(z.compress, body), z.flush()], "zlib"
            size = sum(map(len, body))
        bodies[name] = body
        offset += (-offset) % ALIGN
        entries.append({"name": name, "offset": offset, "size": size, "codec": codec})
        offset += size
    header = json.dumps({"files": entries}).encode("utf-8")
    fixed = _PACK_HEADER.size + _PACK_SUM
    start = fixed + len(header)
    start += (-start) % ALIGN
    out = bytearray(start + offset)
    out[: _PACK_HEADER.size] = _PACK_HEADER.pack(_PACK_MAGIC, _PACK_VERSION, len(header))
    out[_PACK_HEADER.size : fixed] = hashlib.sha256(header).digest()
    out[fixed : fixed + len(header)] = header
    for e in entries:
        at = start + e["offset"]
        for chunk in bodies[e["name"]]:
            out[at : at + len(chunk)] = chunk
            at += len(chunk)
    return bytes(out)


def unpack(blob: bytes | bytearray | memoryview | Any) -> SnapshotData:
    """Decode a :func:`pack` blob; raw sections are viewed in place, compressed ones inflated.

    Raises:
        MossError: code ``DESERIALIZATION`` for anything that is not an intact container,
            whatever the damage (no other exception type leaves this function).
    """
    try:
        return _unpack(memoryview(blob))
    except MossError:
        raise
    except Exception as e:  # the public boundary: nothing untyped leaves a decode
        raise bad("snapshot blob is damaged", f"{type(e).__name__}: {e}") from e


def _entries(header: object, body: int) -> list[tuple[str, int, int, str]]:
    """``(name, offset, size, codec)`` of the four files, checked against ``body`` bytes."""
    if not isinstance(header, dict) or not isinstance(header.get("files"), list):
        raise bad("snapshot blob header is malformed")
    out: list[tuple[str, int, int, str]] = []
    end = 0
    for e in header["files"]:
        if not isinstance(e, dict):
            raise bad("snapshot blob header is malformed")
        name, offset, size = e.get("name"), e.get("offset"), e.get("size")
        codec = e.get("codec", "raw")
        if type(offset) is not int or type(size) is not int or offset < 0 or size < 0:
            raise bad("snapshot blob header has a bad offset or size")
        if codec not in ("raw", "zlib") or (codec == "zlib" and name not in _COMPRESSED):
            raise bad(f"snapshot file {name!r} uses an unknown codec {codec!r}")
        if offset != end + (-end) % ALIGN:
            raise bad(f"snapshot file {name!r} is not where it belongs in the blob")
        if offset + size > body:
            raise bad("snapshot blob is truncated")
        end = offset + size
        out.append((str(name), offset, size, codec))
    if [e[0] for e in out] != list(FILES):
        raise bad("snapshot blob does not hold exactly the files " + ", ".join(FILES))
    if end != body:
        raise bad("snapshot blob is truncated or has trailing bytes")
    return out


def _inflate(name: str, body: memoryview, declared: int) -> bytearray:
    """Inflate ``body`` to exactly ``declared`` bytes, never more (see the module docstring)."""
    if declared > INFLATE_FLOOR + INFLATE_RATIO * len(body):
        raise bad(
            f"snapshot file {name} declares {declared} bytes from {len(body)} compressed; "
            f"refused (more than {INFLATE_RATIO}x)"
        )
    if declared == 0:  # the writer never compresses an empty file (and 0 means "no limit")
        raise bad(f"snapshot file {name} is damaged (compressed but empty)")
    # Into one buffer of the declared size, a piece at a time: zlib's own output buffer would
    # hold a second copy at the end, and a bomb stopped early touches only the pages it wrote.
    out = bytearray(declared)
    d = zlib.decompressobj()
    at = 0
    tail: bytes | memoryview = body
    try:
        while at < declared and not d.eof:
            piece = d.decompress(tail, min(_INFLATE_PIECE, declared - at))
            if not piece and not d.unconsumed_tail:
                break  # the stream ends early
            out[at : at + len(piece)] = piece
            at += len(piece)
            tail = d.unconsumed_tail
        # Exactly `declared` bytes may be out before the end of the stream has been read.
        if not d.eof and d.decompress(tail, 1):
            raise bad(f"snapshot file {name} inflates past its declared size")
    except zlib.error as z:
        raise bad(f"snapshot file {name} is damaged", str(z)) from z
    if at != declared or not d.eof or d.unused_data:
        raise bad(f"snapshot file {name} does not inflate to its declared size")
    return out


def _unpack(view: memoryview) -> SnapshotData:
    if len(view) < _PACK_HEADER.size:
        raise bad("snapshot blob is truncated")
    magic, version, hlen = _PACK_HEADER.unpack(view[: _PACK_HEADER.size])
    if magic != _PACK_MAGIC or version not in (1, 2, _PACK_VERSION):
        raise bad("not a moss snapshot blob")
    fixed = _PACK_HEADER.size + (_PACK_SUM if version >= 3 else 0)
    if hlen > _MAX_HEADER or fixed + hlen > len(view):
        raise bad("snapshot blob header is truncated or damaged", f"header length {hlen}")
    raw_header = bytes(view[fixed : fixed + hlen])
    if version >= 3 and hashlib.sha256(raw_header).digest() != view[_PACK_HEADER.size : fixed]:
        raise bad("snapshot blob header is damaged (checksum mismatch)")
    try:
        header = json.loads(raw_header.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise bad("snapshot blob header is damaged", str(e)) from e
    start = fixed + hlen
    start += (-start) % ALIGN
    if start > len(view):
        raise bad("snapshot blob is truncated")
    entries = _entries(header, len(view) - start)
    sections = {name: view[start + off : start + off + size] for name, off, size, _ in entries}
    if entries[0][3] != "raw":
        raise bad("snapshot blob manifest must be stored raw")
    manifest: Manifest = read_manifest(sections["manifest.json"])
    files: dict[str, bytes | bytearray | memoryview] = {}
    for name, _, _, codec in entries:
        if codec == "zlib":
            inflated = _inflate(name, sections[name], manifest.files[name][0])
            # arrays.bin is viewed by the arrays, which must stay read-only as from bytes
            files[name] = inflated if name == "docs.json" else memoryview(inflated).toreadonly()
        else:
            files[name] = sections[name]
    data = decode_files(files, manifest=manifest)
    if "vec/graph_slot_row" in data.arrays:
        if data.vectors is None:
            raise bad("snapshot has a stripped vector graph but no vectors")
        try:
            vec = restore_graph_vectors(_vector_arrays(data.arrays), data.vectors)
        except (KeyError, ValueError, TypeError, IndexError) as e:
            raise bad("snapshot vector graph is damaged", str(e)) from e
        data.arrays = _with_vector_arrays(data.arrays, vec)
    return data

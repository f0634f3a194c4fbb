"""The four snapshot files and :class:`SnapshotData`: encoding, and decoding that trusts nothing.

This is the part of :mod:`moss.snapshot` shared by the on-disk generations
(:mod:`moss.snapshot_dir`) and the container (:func:`moss.snapshot.pack`); it knows bytes, not
where they came from. A snapshot may come from a damaged disk or from an untrusted upload, so
decoding is a validation pass first and a view second:

1. ``manifest.json`` (format 3) ends with ``"manifest_sha256"``, a SHA-256 of the manifest
   bytes before it (:func:`manifest_bytes` shows the exact layout). Any change to the manifest,
   which describes everything else, is caught there; formats 1 and 2 carry no checksum and are
   still read, with every check below.
2. Every field of the manifest is checked against a schema and against the real sizes of the
   files *before anything is allocated or viewed*: types, non-negative integers, dtypes limited
   to plain little-endian numbers, shapes whose byte size is computed in Python integers (no
   overflow), and array offsets that must sit exactly where the writer puts them (each array
   64-byte aligned right after the previous one, ``arrays.bin`` ending with the last). So an
   edited offset or shape cannot reinterpret valid bytes as different content, and no field can
   ask for an allocation larger than the bytes that are there.
3. Each file's size and CRC-32 (all three data files must be listed: an empty ``files`` table is
   an error, not "no checks"), then the JSON columns' types and lengths.

Any exception on the way that is not already a :class:`~moss.errors.MossError` becomes
``MossError(code="DESERIALIZATION")`` (:func:`decode_files`), so a caller never sees a raw
``KeyError`` or ``OverflowError`` from a damaged file.

The checksums are for accidents (disk, transfer). A crafted snapshot can carry valid checksums;
for those the schema checks guarantee only that whatever decodes is well-formed, and the server
adds semantic checks of its own (``moss.server.store``).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._version import __version__
from .errors import DESERIALIZATION, MossError
from .input_limits import check_json
from .texts import TextColumn, encode_texts

__all__ = [
    "ALIGN",
    "DATA_FILES",
    "FILES",
    "FORMAT",
    "FORMAT_VERSION",
    "READABLE_VERSIONS",
    "Chunks",
    "SnapshotData",
    "bad",
    "decode_files",
    "encode_files",
    "manifest_bytes",
    "read_manifest",
]

FORMAT = "moss-snapshot"
FORMAT_VERSION = 3  # 3: manifest SHA-256; 2: texts in arrays.bin; 1: texts in docs.json
READABLE_VERSIONS = (1, 2, 3)
ALIGN = 64
_TEXT_ARRAYS = ("text/blob", "text/offsets")
FILES = ("manifest.json", "docs.json", "vectors.f32", "arrays.bin")
DATA_FILES = FILES[1:]
_MAX_DIMENSION = 1 << 16
_MAX_NDIM = 8
_MAX_MANIFEST = 16 << 20  # the arrays table and `extra`: kilobytes in practice
_DTYPE_KINDS = "biuf"  # bool, signed, unsigned, float: what the indexes store
_SUM_KEY = "manifest_sha256"
_SUM_TAIL = re.compile(rb',\n "manifest_sha256": "([0-9a-f]{64})"\n\}')
_SUM_TAIL_LEN = len(b',\n "manifest_sha256": ""\n}') + 64


@dataclass
class SnapshotData:
    """The decoded content of a snapshot (arrays may be read-only views of a file or buffer)."""

    model_id: str
    dimension: int | None
    ids: list[str]
    texts: Sequence[str]  # a TextColumn when decoded from format 2 or later
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


def bad(message: str, detail: str | None = None) -> MossError:
    """A ``MossError`` with code ``DESERIALIZATION``."""
    return MossError(message, code=DESERIALIZATION, detail=detail)


# ---------------------------------------------------------------------------------- encode


Chunks = list[bytes | memoryview]  # one file's contents, in order (views of the arrays, no join)


def _crc32(chunks: Chunks) -> int:
    crc = 0
    for chunk in chunks:
        crc = zlib.crc32(chunk, crc)
    return crc


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """``manifest`` as written: indented JSON whose last member is ``"manifest_sha256"``, the
    SHA-256 of the same JSON without that member (``{...\\n}``), so the checksum can be
    verified on the exact bytes, without re-serialising what was parsed."""
    body = json.dumps(dict(manifest), indent=1).encode("utf-8")
    digest = hashlib.sha256(body).hexdigest()
    return body[:-2] + f',\n "{_SUM_KEY}": "{digest}"\n}}'.encode("ascii")


def encode_files(data: SnapshotData) -> dict[str, Chunks]:
    """Serialise to the four files, manifest last since it describes the others.

    Each file is a list of chunks that view the arrays where they can: ``arrays.bin`` is never
    joined into one buffer, so writing a snapshot copies nothing the caller's arrays already hold.
    """
    n = len(data.ids)
    if not (len(data.texts) == len(data.metadata) == len(data.payloads) == n):
        raise ValueError("snapshot columns have different lengths")
    docs = json.dumps(
        {"ids": data.ids, "metadata": data.metadata, "payloads": data.payloads},
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
        if a.dtype.hasobject or a.dtype.kind not in _DTYPE_KINDS:
            raise ValueError(f"array {name!r} has an unsupported dtype {a.dtype}")
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        pad = (-offset) % ALIGN
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
    files["manifest.json"] = [manifest_bytes(manifest)]
    return files


# ---------------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class _Array:
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    offset: int
    nbytes: int


@dataclass(frozen=True)
class Manifest:
    """A manifest whose every field has been checked (sizes not yet against real files)."""

    raw: dict[str, Any]
    version: int
    model_id: str
    dimension: int | None
    doc_count: int
    model: dict[str, str] | None
    extra: dict[str, Any]
    files: dict[str, tuple[int, int]]  # name -> (size, crc32)
    arrays: dict[str, _Array]


def _int(value: object, what: str, lo: int = 0, hi: int | None = None) -> int:
    if type(value) is not int or value < lo or (hi is not None and value > hi):
        raise bad(f"snapshot manifest field {what} is out of range", repr(value)[:100])
    return value


def _is_str_map(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def _dtype(text: object, name: str) -> np.dtype[Any]:
    if not isinstance(text, str) or len(text) > 8:
        raise bad(f"snapshot array {name!r} has a bad dtype", repr(text)[:100])
    try:
        dt = np.dtype(text)
    except (TypeError, ValueError) as e:
        raise bad(f"snapshot array {name!r} has a bad dtype", repr(text)) from e
    if dt.kind not in _DTYPE_KINDS or dt.fields is not None or dt.subdtype is not None:
        raise bad(f"snapshot array {name!r} has an unsupported dtype {text!r}")
    if dt.str != text or text[0] not in "<|":
        raise bad(f"snapshot array {name!r} dtype {text!r} is not little-endian canonical")
    return dt


def read_manifest(raw: bytes | bytearray | memoryview | mmap.mmap) -> Manifest:
    """Verify the checksum (format 3) and the schema of ``manifest.json``.

    Raises:
        MossError: code ``DESERIALIZATION`` on any damage or inconsistency.
    """
    if len(raw) > _MAX_MANIFEST:
        raise bad("snapshot manifest is too large", f"{len(raw)} bytes")
    raw = bytes(raw)
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise bad("snapshot manifest is damaged", str(e)) from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise bad("not a moss snapshot (bad manifest format)")
    version = manifest.get("format_version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise bad(
            f"snapshot format version {version!r} is not supported by moss {__version__} "
            f"(it reads versions {', '.join(map(str, READABLE_VERSIONS))})"
        )
    # The version first, so that a newer format is reported as such, then the checksum.
    tail = _SUM_TAIL.fullmatch(raw[-_SUM_TAIL_LEN:]) if len(raw) >= _SUM_TAIL_LEN else None
    if (tail is not None) != (version >= 3):
        raise bad("snapshot manifest is damaged (checksum missing or misplaced)")
    if tail is not None:
        body = raw[:-_SUM_TAIL_LEN] + b"\n}"
        if hashlib.sha256(body).hexdigest() != tail.group(1).decode("ascii"):
            raise bad("snapshot manifest is damaged (checksum mismatch)")
    manifest.pop(_SUM_KEY, None)
    model_id = manifest.get("model_id")
    if not isinstance(model_id, str) or not model_id:
        raise bad("snapshot manifest has no model_id")
    dim = manifest.get("dimension")
    dimension = None if dim is None else _int(dim, "dimension", 1, _MAX_DIMENSION)
    n = _int(manifest.get("doc_count"), "doc_count")
    model = manifest.get("model")
    if model is not None and not _is_str_map(model):
        raise bad("snapshot manifest field model is malformed")
    extra = manifest.get("extra")
    if extra is None:
        extra = {}
    if not isinstance(extra, dict):
        raise bad("snapshot manifest field extra is malformed")
    table = manifest.get("files")
    if not isinstance(table, dict) or set(table) != set(DATA_FILES):
        raise bad("snapshot manifest does not list exactly the files " + ", ".join(DATA_FILES))
    files: dict[str, tuple[int, int]] = {}
    for name, meta in table.items():
        if not isinstance(meta, dict):
            raise bad(f"snapshot manifest entry for {name} is malformed")
        size = _int(meta.get("size"), f"files.{name}.size")
        files[name] = (size, _int(meta.get("crc32"), f"files.{name}.crc32", 0, 0xFFFFFFFF))
    arrays = _check_arrays(manifest.get("arrays"), files["arrays.bin"][0], version, n)
    vec_size = files["vectors.f32"][0]
    if vec_size and (dimension is None or vec_size != n * dimension * 4):
        raise bad(
            "snapshot vectors.f32 does not hold doc_count x dimension float32 values",
            f"{vec_size} bytes for {n} x {dimension}",
        )
    return Manifest(manifest, version, model_id, dimension, n, model, extra, files, arrays)


def _check_arrays(table: object, size: int, version: int, n: int) -> dict[str, _Array]:
    """Each array's dtype, shape and offset; offsets exactly where the writer puts them."""
    if not isinstance(table, dict):
        raise bad("snapshot manifest field arrays is malformed")
    out: dict[str, _Array] = {}
    end = 0
    for name, meta in table.items():
        if not isinstance(meta, dict) or not isinstance(meta.get("shape"), list):
            raise bad(f"snapshot array {name!r} is malformed")
        dt = _dtype(meta.get("dtype"), name)
        shape = meta["shape"]
        if len(shape) > _MAX_NDIM:
            raise bad(f"snapshot array {name!r} has too many dimensions")
        dims = tuple(_int(s, f"arrays.{name}.shape", 0, 1 << 62) for s in shape)
        nbytes = dt.itemsize
        for d in dims:
            nbytes *= d  # Python integers: no overflow
        if nbytes > size:
            raise bad(f"snapshot array {name!r} is larger than arrays.bin", f"{shape}")
        offset = _int(meta.get("offset"), f"arrays.{name}.offset", 0, size)
        if offset != end + (-end) % ALIGN:
            raise bad(f"snapshot array {name!r} is not where it belongs", f"offset {offset}")
        end = offset + nbytes
        if end > size:
            raise bad(f"snapshot array {name!r} runs past the end of arrays.bin")
        out[name] = _Array(dt, dims, offset, nbytes)
    if end != size:
        raise bad("snapshot arrays.bin is not exactly the arrays its manifest lists")
    if version >= 2:
        blob, offsets = out.get("text/blob"), out.get("text/offsets")
        if blob is None or offsets is None:
            raise bad("snapshot has no texts")
        if blob.dtype != np.uint8 or len(blob.shape) != 1:
            raise bad("snapshot text blob is malformed")
        if offsets.dtype != np.dtype("<i8") or offsets.shape != (n + 1,):
            raise bad("snapshot text offsets do not match the document count")
    return out


# ---------------------------------------------------------------------------------- decode


def _check_docs(docs: object, n: int, version: int) -> dict[str, list[Any]]:
    if not isinstance(docs, dict):
        raise bad("snapshot docs.json is malformed")
    columns = (
        ("ids", "metadata", "payloads", "texts")
        if version == 1
        else ("ids", "metadata", "payloads")
    )
    for key in columns:
        col = docs.get(key)
        if not isinstance(col, list) or len(col) != n:
            raise bad(f"snapshot docs.json column {key} does not match the manifest count")
    if not all(isinstance(i, str) for i in docs["ids"]):
        raise bad("snapshot document ids are not all strings")
    if not all(p is None or isinstance(p, str) for p in docs["payloads"]):
        raise bad("snapshot payloads are not all strings or null")
    if not all(m is None or _is_str_map(m) for m in docs["metadata"]):
        raise bad("snapshot metadata are not all string-to-string maps or null")
    if version == 1 and not all(isinstance(t, str) for t in docs["texts"]):
        raise bad("snapshot texts are not all strings")
    return docs


def decode_files(
    files: Mapping[str, bytes | bytearray | memoryview | mmap.mmap],
    text_fd: int | None = None,
    manifest: Manifest | None = None,
) -> SnapshotData:
    """Check and decode the four files (``manifest``: already read from ``files``).

    ``text_fd``: a descriptor of ``arrays.bin`` to read the texts from on demand (see
    ``moss.snapshot_dir.read_dir``); the texts own it, and it is closed here if decoding fails.

    Raises:
        MossError: code ``DESERIALIZATION`` on any damage or inconsistency, whatever its kind.
    """
    try:
        return _decode(files, text_fd, manifest)
    except MossError:
        raise
    except Exception as e:  # the public boundary: nothing untyped leaves a decode
        raise bad("snapshot is damaged or inconsistent", f"{type(e).__name__}: {e}") from e


def _decode(
    files: Mapping[str, bytes | bytearray | memoryview | mmap.mmap],
    text_fd: int | None,
    manifest: Manifest | None,
) -> SnapshotData:
    try:
        if manifest is None:
            if "manifest.json" not in files:
                raise bad("snapshot is missing manifest.json")
            manifest = read_manifest(files["manifest.json"])
        for name, (size, crc) in manifest.files.items():
            if name not in files:
                raise bad(f"snapshot is missing {name}")
            buf = files[name]
            if len(buf) != size:
                raise bad(
                    f"snapshot file {name} is truncated or damaged", f"size {len(buf)} != {size}"
                )
            if zlib.crc32(buf) != crc:
                raise bad(f"snapshot file {name} is damaged (checksum mismatch)")
        n, version = manifest.doc_count, manifest.version
        raw_docs = files["docs.json"]
        if not isinstance(raw_docs, (bytes, bytearray)):
            raw_docs = bytes(raw_docs)
        check_json(raw_docs, "snapshot docs.json")  # a server's limit, before json.loads
        try:
            parsed = json.loads(raw_docs.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise bad("snapshot docs.json is damaged", str(e)) from e
        docs = _check_docs(parsed, n, version)
        vec_buf = files["vectors.f32"]
        vectors = None
        if len(vec_buf):
            assert manifest.dimension is not None  # read_manifest checked the size against it
            vectors = np.frombuffer(vec_buf, dtype="<f4").reshape(n, manifest.dimension)
        arrays: dict[str, np.ndarray] = {}
        arr_buf = files["arrays.bin"]
        for name, a in manifest.arrays.items():
            count = a.nbytes // a.dtype.itemsize
            arrays[name] = np.frombuffer(
                arr_buf, dtype=a.dtype, count=count, offset=a.offset
            ).reshape(a.shape)
        texts: Sequence[str]
        if version == 1:
            texts = docs["texts"]
        else:
            blob, offsets = arrays.pop("text/blob"), arrays.pop("text/offsets")
            if text_fd is not None:
                at = manifest.arrays["text/blob"].offset
                texts, text_fd = TextColumn.from_file(text_fd, at, blob.size, offsets), None
            else:
                texts = TextColumn(blob, offsets)
    finally:
        if text_fd is not None:
            os.close(text_fd)
    return SnapshotData(
        model_id=manifest.model_id,
        dimension=manifest.dimension,
        ids=docs["ids"],
        texts=texts,
        metadata=docs["metadata"],
        payloads=docs["payloads"],
        vectors=vectors,
        arrays=arrays,
        model=manifest.model,
        extra=manifest.extra,
    )

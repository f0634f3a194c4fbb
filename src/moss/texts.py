"""Document texts by row, kept as UTF-8 bytes instead of one Python ``str`` per document.

A loaded snapshot hands the engine its texts as one UTF-8 blob plus ``n + 1`` byte offsets (memory-
mapped from ``arrays.bin`` on disk, a view of the downloaded buffer otherwise). :class:`TextColumn`
serves them from there and decodes a text only when someone reads it (a hit, ``get_docs``), so:

* loading 100k documents does not build 100k strings (it was 0.14 s to 0.8 s of JSON parsing, the
  largest part of a load, and grows with the text);
* the texts cost their UTF-8 size, not CPython's ``str`` size (1, 2 or 4 bytes per character:
  one Greek letter in an abstract doubles the whole string) plus ~50 bytes of object header, and
  on disk they stay in the page cache until read.

A snapshot read from disk goes one step further (:meth:`TextColumn.from_file`): the texts are not
memory-mapped at all but read with ``pread`` when needed. Through a mapping, every text read would
also map the neighbouring 64 KB that the kernel's fault-around brings in from the page cache, and
300 queries were enough to make the whole text file count as resident (measured: 1.53x raw
vectors + text after 300 queries at 100k documents, against 1.0x after one).

Writes after the load go to a small overlay: a dict of replaced rows and a list of appended texts.
Compaction and snapshots re-encode into a fresh blob (:meth:`TextColumn.take`, :meth:`to_arrays`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import overload

import numpy as np
import numpy.typing as npt

__all__ = ["TextColumn", "encode_texts"]

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]


_ENCODE_BATCH = 1 << 20  # bytes of texts encoded and copied into a blob at a time


def _utf8_offsets(seq: Sequence[str], start: int = 0) -> I64:
    """``start`` plus the running UTF-8 lengths of ``seq``, n + 1 values (``str.isascii`` is
    O(1) in CPython, and an ASCII text's UTF-8 length is its length: no encoding)."""
    offsets = np.full(len(seq) + 1, start, dtype=np.int64)
    lengths = [len(t) if t.isascii() else len(t.encode("utf-8")) for t in seq]
    np.cumsum(lengths, out=offsets[1:])
    offsets[1:] += start
    return offsets


def _encode_into(seq: Sequence[str], blob: U8, offsets: I64) -> None:
    """Text ``i`` of ``seq`` into ``blob[offsets[i]:offsets[i + 1]]``, about 1 MB at a time."""
    start = 0
    while start < len(seq):
        stop = int(np.searchsorted(offsets, offsets[start] + _ENCODE_BATCH, side="right")) - 1
        stop = min(max(stop, start + 1), len(seq))
        chunk = b"".join([t.encode("utf-8") for t in seq[start:stop]])
        blob[offsets[start] : offsets[stop]] = np.frombuffer(chunk, dtype=np.uint8)
        start = stop


def encode_texts(texts: Iterable[str]) -> tuple[U8, I64]:
    """``(blob, offsets)``: the UTF-8 bytes of ``texts`` back to back, text ``i`` at
    ``blob[offsets[i]:offsets[i + 1]]``.

    The blob is the only full copy made: the lengths come first, then the texts are encoded into
    it in batches. (Encoding them all and joining the list held two copies at once.)
    """
    seq = texts if isinstance(texts, Sequence) else list(texts)
    offsets = _utf8_offsets(seq)
    blob = np.empty(int(offsets[-1]), dtype=np.uint8)
    _encode_into(seq, blob, offsets)
    return blob, offsets


def _checked_offsets(offsets: npt.ArrayLike, size: int) -> I64:
    """``offsets`` as int64 after checking that they cut ``size`` bytes into ascending slices.

    Raises:
        ValueError: not a non-empty 1-D integer array, not spanning ``[0, size]``, or descending.
    """
    arr = np.asarray(offsets)
    if arr.ndim != 1 or arr.size < 1 or arr.dtype.kind not in "iu":
        raise ValueError("text offsets must be a non-empty one-dimensional integer array")
    if int(arr[0]) != 0 or int(arr[-1]) != size:
        raise ValueError("text offsets do not span the blob")
    if arr.size > 1 and bool((np.diff(arr) < 0).any()):
        raise ValueError("text offsets are not ascending")
    out: I64 = arr.astype(np.int64, copy=False)
    return out


class _ReadOnlyFile:
    """An ``os.open`` descriptor closed with its last user (shared by a column and its copies)."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __del__(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


class TextColumn(Sequence[str]):
    """A list-like column of texts over a UTF-8 blob (see the module docstring).

    >>> col = TextColumn.from_texts(["alpha", "βeta"])
    >>> col.append("gamma")
    >>> col[1] = "beta"
    >>> list(col), len(col)
    (['alpha', 'beta', 'gamma'], 3)
    """

    __slots__ = ("_base", "_blob", "_edits", "_file", "_file_at", "_offsets", "_tail")

    def __init__(self, blob: U8 | None = None, offsets: I64 | None = None) -> None:
        if blob is None or offsets is None:
            blob, offsets = np.zeros(0, np.uint8), np.zeros(1, np.int64)
        blob = np.asarray(blob)
        if blob.ndim != 1 or blob.dtype != np.uint8:
            raise ValueError("text blob must be a one-dimensional uint8 array")
        self._blob: U8 | None = blob
        self._file: _ReadOnlyFile | None = None
        self._file_at = 0
        self._offsets = _checked_offsets(offsets, blob.size)
        self._base = self._offsets.size - 1
        self._edits: dict[int, str] = {}
        self._tail: list[str] = []

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> TextColumn:
        return cls(*encode_texts(texts))

    @classmethod
    def from_file(cls, fd: int, at: int, size: int, offsets: I64) -> TextColumn:
        """Texts whose blob is ``size`` bytes of the open file ``fd`` from byte ``at``, read on
        demand with ``os.pread``.

        Once this returns, the column owns ``fd`` and closes it when the last column using it
        goes (a file removed meanwhile stays readable on POSIX); if it raises, the caller still
        owns ``fd``.

        Raises:
            ValueError: the offsets do not describe ``size`` bytes.
        """
        checked = _checked_offsets(offsets, size)
        col = cls()
        col._blob, col._file, col._file_at = None, _ReadOnlyFile(fd), at
        col._offsets, col._base = checked, checked.size - 1
        return col

    def _bytes(self, lo: int, hi: int) -> bytes:
        if self._blob is not None:
            return self._blob[lo:hi].tobytes()
        assert self._file is not None
        data = os.pread(self._file.fd, hi - lo, self._file_at + lo)
        if len(data) != hi - lo:
            raise ValueError("text blob file is truncated")
        return data

    def _whole_blob(self) -> U8:
        if self._blob is not None:
            return self._blob
        return np.frombuffer(self._bytes(0, int(self._offsets[-1])), dtype=np.uint8)

    def __len__(self) -> int:
        return self._base + len(self._tail)

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = self._index(i)
        if i >= self._base:
            return self._tail[i - self._base]
        text = self._edits.get(i)
        if text is None:
            text = self._bytes(int(self._offsets[i]), int(self._offsets[i + 1])).decode("utf-8")
        return text

    def __setitem__(self, i: int, text: str) -> None:
        i = self._index(i)
        if i >= self._base:
            self._tail[i - self._base] = text
        else:
            self._edits[i] = text

    def __iter__(self) -> Iterator[str]:
        for i in range(len(self)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        """Equal to any sequence of the same texts (a list included), like a list would be."""
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]  # mutable, like list

    def __repr__(self) -> str:
        return f"TextColumn({len(self)} texts, {self.nbytes()} bytes)"

    def _index(self, i: int) -> int:
        n = len(self)
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise IndexError(f"text row {i} out of range for {n} rows")
        return j

    def append(self, text: str) -> None:
        self._tail.append(text)

    def copy(self) -> TextColumn:
        """An independent column sharing the (immutable) blob."""
        out = TextColumn.__new__(TextColumn)
        out._blob, out._offsets, out._base = self._blob, self._offsets, self._base
        out._file, out._file_at = self._file, self._file_at
        out._edits = dict(self._edits)
        out._tail = list(self._tail)
        return out

    def take(self, rows: Sequence[int]) -> TextColumn:
        """A new column of the texts at ``rows``, in that order, in one fresh blob."""
        if not self._edits and not self._tail:
            idx = np.asarray(rows, dtype=np.int64)
            lo, hi = self._offsets[idx], self._offsets[idx + 1]
            lengths = hi - lo
            offsets = np.zeros(idx.size + 1, np.int64)
            np.cumsum(lengths, out=offsets[1:])
            # Byte positions of every kept text, gathered in one vectorised pass.
            starts = np.repeat(lo - offsets[:-1], lengths)
            blob = self._whole_blob()[starts + np.arange(int(offsets[-1]), dtype=np.int64)]
            return TextColumn(blob, offsets)
        return TextColumn.from_texts(self[r] for r in rows)

    def to_arrays(self) -> tuple[U8, I64]:
        """``(blob, offsets)`` of every text; the loaded arrays themselves when nothing changed."""
        if self._edits:
            return encode_texts(self)
        base = self._whole_blob()
        if not self._tail:
            return base, self._offsets
        # Appended only: the base bytes, then the tail encoded straight into the same blob.
        tail_offsets = _utf8_offsets(self._tail, int(self._offsets[-1]))
        offsets = np.concatenate([self._offsets, tail_offsets[1:]])
        blob = np.empty(int(offsets[-1]), dtype=np.uint8)
        blob[: base.size] = base
        _encode_into(self._tail, blob, tail_offsets)
        return blob, offsets

    def nbytes(self) -> int:
        """Bytes of the blob (in memory or on file) and offsets, not counting overlay strings."""
        return int(self._offsets[-1]) + int(self._offsets.nbytes)

"""Limits on untrusted document input, enforced by ``moss serve`` and not by in-process calls.

Why this module exists: ``json.loads`` turns a few bytes into a Python object of 50-100 bytes
(``[],`` is 3 bytes and an 80-byte list), so a crafted JSON body costs up to ~27x its size in
memory while it is parsed, and a compressed ``docs.json`` inside an upload container is already
up to 64x its compressed size. A 2 MB upload could make the server allocate ~4 GB. The bound
has to be applied *before* ``json.loads`` runs, so it is a count of the JSON values in the raw
bytes (:func:`count_json_values`), checked against :attr:`InputLimits.max_json_values`; the
per-document limits (documents per batch, metadata keys, embedding length, text bytes) are
checked on the decoded columns, before the job is queued.

Who enforces what: the server sets the active limits (:func:`enforced`) around each request's
decode, and the decoders — ``moss.snapshot_codec`` (``docs.json``), ``moss.cloud.wire``
(``validate_columns``) and the server's JSON bodies — call :func:`check_json` /
:func:`check_documents`, which do nothing when no limits are active. The limits are a context
variable rather than a parameter because the decode runs several layers below the request
handler (the store validates the upload in a worker thread, which inherits the request's
context), and those layers are shared with in-process sessions, which must not be capped
arbitrarily: a process may load any snapshot it can hold in memory. Invalid values (NaN
vectors, wrong types) are refused on both paths by :mod:`moss.validation` and the decoders;
only the *sizes* here are server policy.

Errors are :class:`InputLimitError` (``INVALID_ARGUMENT``, HTTP 413) naming the limit and its
environment variable (``MOSS_MAX_JSON_VALUES`` ...), so an operator knows what to raise.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

from .errors import InvalidArgumentError

__all__ = [
    "InputLimitError",
    "InputLimits",
    "active",
    "check_documents",
    "check_json",
    "count_json_values",
    "enforced",
    "for_upload",
]


class InputLimitError(InvalidArgumentError):
    """Input over a server limit (answered ``413``); ``detail`` is the limit's name."""

    status = 413


@dataclass(frozen=True)
class InputLimits:
    """Sizes of one request's document input (None: unlimited). See docs/security.md."""

    max_json_values: int | None = 8_000_000
    max_batch_docs: int | None = 1_000_000
    max_metadata_keys: int | None = 1024
    max_embedding_dim: int | None = 16_384
    max_doc_text_bytes: int | None = 16 << 20
    max_batch_text_bytes: int | None = 1 << 30


UPLOAD_BYTES_PER_VALUE = 16
"""An upload may hold one JSON value per this many bytes sent, when that exceeds
``max_json_values`` (up to :data:`UPLOAD_VALUES_FACTOR` times it)."""

UPLOAD_VALUES_FACTOR = 4


def for_upload(limits: InputLimits, upload_bytes: int) -> InputLimits:
    """``limits`` for an upload (container) of ``upload_bytes``: its ``docs.json`` may hold
    ``max_json_values``, or one value per 16 bytes received if that is more, up to 4 times
    ``max_json_values`` (32 M values by default).

    A fixed count would refuse a legitimate big index (a 1M-document push with one metadata key
    has 8.0 M values in 272 MB), while what the count guards against is amplification: a small
    compressed body that parses into gigabytes. Scaling with the bytes actually received keeps
    parse memory proportional to them (measured: a 194 MB upload of empty lists at its allowance
    peaked at +887 MB, 4.6x; ``benchmarks/bomb_rss.py --json``), and the ceiling bounds it.
    """
    if limits.max_json_values is None:
        return limits
    ceiling = limits.max_json_values * UPLOAD_VALUES_FACTOR
    scaled = min(max(limits.max_json_values, upload_bytes // UPLOAD_BYTES_PER_VALUE), ceiling)
    return replace(limits, max_json_values=scaled)


_ACTIVE: ContextVar[InputLimits | None] = ContextVar("moss_input_limits", default=None)


@contextlib.contextmanager
def enforced(limits: InputLimits | None) -> Iterator[None]:
    """Make ``limits`` the active limits of this context (and of threads started from it by
    ``anyio``/``asyncio.to_thread``, which copy the context) until the block ends."""
    token = _ACTIVE.set(limits)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def active() -> InputLimits | None:
    """The limits in force here (None in-process: nothing is capped)."""
    return _ACTIVE.get()


def _over(what: str, got: int, limit: int, name: str) -> InputLimitError:
    return InputLimitError(
        f"{what} has {got} {_UNITS[name]}; the server allows at most {limit} "
        f"(limit {name}, environment variable MOSS_{name.upper()})",
        detail=name,
    )


_UNITS = {
    "max_json_values": "JSON values",
    "max_batch_docs": "documents",
    "max_metadata_keys": "metadata keys",
    "max_embedding_dim": "embedding dimensions",
    "max_doc_text_bytes": "bytes of text",
    "max_batch_text_bytes": "bytes of text",
}

_STRUCTURE = (b"[", b"{", b",", b":")
_CHUNK = 1 << 20  # bytes per numpy pass of the exact count (~33 MB of temporaries)
_VISITS = 1000  # strings with structure bytes discounted one by one before the bulk count
# From a position outside any string: skip plain text and "plain" strings (no escapes, no
# structure characters), then capture the next string that has some. Possessive quantifiers:
# one linear pass, no backtracking, and nothing allocated for the skipped part.
_NEXT_SPECIAL = re.compile(rb'(?:[^"]++|"[^"\\,:\[{]*+")*+("[^"\\]*+(?:\\.[^"\\]*+)*+")', re.DOTALL)


def count_json_values(raw: bytes | bytearray | memoryview, at_most: int | None = None) -> int:
    """An upper bound of the JSON values (strings, containers, numbers, literals, keys) in
    ``raw``, computed without building any of them.

    Every value other than the first is preceded by a ``,`` ``:`` ``[`` or ``{``, and every
    string has two quotes, so counting those bytes bounds the values; bytes inside strings
    make this quick count too high, never too low. When it is over ``at_most``, the strings
    holding such bytes are discounted one by one (a single regex pass skips the others), and
    if there are more than a thousand of them the count is redone exactly in bulk
    (:func:`_outside_strings`, numpy over fixed-size chunks). Either way the check costs
    bounded memory and linear time (one by one to the end, 60 MB of ``",",`` took 9.6 s).
    """
    data = bytes(raw) if isinstance(raw, memoryview) else raw
    quotes = data.count(b'"')
    count = quotes // 2 + sum(data.count(c) for c in _STRUCTURE) + 1
    if at_most is None or count <= at_most or quotes == 0:  # no string: the count is exact
        return count
    structure = count - 1 - quotes // 2
    pos = seen = 0
    while count > at_most and seen <= at_most:
        if seen == _VISITS:  # many strings hold such bytes: count exactly, in bulk
            strings, structure = _outside_strings(data)
            return strings + structure + 1
        m = _NEXT_SPECIAL.match(data, pos)
        if m is None:
            break
        lo, hi = m.start(1) + 1, m.end(1) - 1  # the content, without its quotes
        quotes -= data.count(b'"', lo, hi)
        structure -= sum(data.count(c, lo, hi) for c in _STRUCTURE)
        count = quotes // 2 + structure + 1
        pos, seen = m.end(1), seen + 1
    return count


def _outside_strings(data: bytes | bytearray) -> tuple[int, int]:
    """(strings, structure bytes outside strings) of JSON text, by numpy passes over chunks.

    A quote ends or starts a string unless an odd run of backslashes precedes it; a structure
    byte is outside every string when an even number of such quotes precede it. The state
    carried from one chunk to the next is the backslash run at its end and the quote count.
    """
    import numpy as np

    buf = np.frombuffer(data, dtype=np.uint8)
    quotes = structure = run = 0
    for lo in range(0, buf.size, _CHUNK):
        c = buf[lo : lo + _CHUNK]
        bs = c == 0x5C
        total = np.cumsum(bs, dtype=np.int32)
        # backslashes in the run ending at each position: the count since the last other byte
        ends = total - np.maximum.accumulate(np.where(bs, 0, total))
        first_other = int(np.argmin(bs)) if not bs.all() else bs.size
        ends[:first_other] += run  # the run the previous chunk ended with goes on
        before = np.empty_like(ends)  # the run just before each position
        before[0] = run
        before[1:] = ends[:-1]
        real = (c == 0x22) & (before % 2 == 0)
        seen = np.cumsum(real, dtype=np.int32) + (quotes & 1)
        special = (c == 0x5B) | (c == 0x7B) | (c == 0x2C) | (c == 0x3A)
        structure += int(np.count_nonzero(special & (seen % 2 == 0)))
        quotes += int(np.count_nonzero(real))
        run = int(ends[-1])
    return quotes // 2, structure


def check_json(
    raw: bytes | bytearray | memoryview, what: str, limits: InputLimits | None = None
) -> None:
    """Refuse ``raw`` (about to be parsed) when it holds more JSON values than allowed.

    ``limits``: explicit limits, else the active ones; no limits, no check.

    Raises:
        InputLimitError: over ``max_json_values``.
    """
    lim = limits if limits is not None else _ACTIVE.get()
    if lim is None or lim.max_json_values is None:
        return
    n = count_json_values(raw, lim.max_json_values)
    if n > lim.max_json_values:
        raise _over(what, n, lim.max_json_values, "max_json_values")


def check_documents(
    metadata: Sequence[Any],
    texts: Sequence[str],
    dimension: int | None,
    *,
    batch: bool,
    what: str = "the upload",
    limits: InputLimits | None = None,
) -> None:
    """Per-document limits on decoded columns (``batch``: a create/add batch, where the
    document count is limited too; a pushed snapshot is a whole index).

    Raises:
        InputLimitError: the first limit exceeded.
    """
    lim = limits if limits is not None else _ACTIVE.get()
    if lim is None:
        return
    n = len(texts)
    if batch and lim.max_batch_docs is not None and n > lim.max_batch_docs:
        raise _over(what, n, lim.max_batch_docs, "max_batch_docs")
    if lim.max_embedding_dim is not None and dimension is not None:
        if dimension > lim.max_embedding_dim:
            raise _over(what, dimension, lim.max_embedding_dim, "max_embedding_dim")
    if lim.max_metadata_keys is not None:
        most = max((len(m) for m in metadata if m), default=0)
        if most > lim.max_metadata_keys:
            where = f"a document of {what}"
            raise _over(where, most, lim.max_metadata_keys, "max_metadata_keys")
    most, total = _text_sizes(texts)
    if lim.max_doc_text_bytes is not None:
        if most > lim.max_doc_text_bytes:
            where = f"a document of {what}"
            raise _over(where, most, lim.max_doc_text_bytes, "max_doc_text_bytes")
    if batch and lim.max_batch_text_bytes is not None:
        if total > lim.max_batch_text_bytes:
            raise _over(what, total, lim.max_batch_text_bytes, "max_batch_text_bytes")


def _text_sizes(texts: Sequence[str]) -> tuple[int, int]:
    """``(largest, total)`` UTF-8 size of ``texts``, from a text column's offsets if it has them."""
    if not texts:
        return 0, 0
    to_arrays = getattr(texts, "to_arrays", None)
    if to_arrays is not None:
        _, offsets = to_arrays()
        return int((offsets[1:] - offsets[:-1]).max()), int(offsets[-1] - offsets[0])
    sizes = [len(t.encode("utf-8", "surrogatepass")) for t in texts]
    return max(sizes), sum(sizes)

"""Metadata filters evaluated over many rows at once: :class:`MetadataColumns`.

* **Columnar evaluation.** :class:`MetadataColumns` keeps each field dictionary-encoded: a
  vocabulary of its distinct values and a small integer code per row. A leaf is decided once per
  *distinct value* (a lookup table built with numpy from cached per-value float parses and
  code-point ranks), then gathered over the rows, so a leaf costs O(distinct + rows) in C rather
  than a Python call per row. Fields present in few rows are kept as a ``{row: code}`` dict so
  that metadata with many distinct keys cannot cost rows x keys memory.
* **Exactly the same answer both ways.** ``evaluate`` must equal ``MetadataFilter.matches``
  (filters_compile.py) row for row. All comparisons are exact (string equality, float64
  comparison, code-point rank), except the vectorised haversine of ``$near``, whose last-bit
  rounding may differ from :mod:`math`; values within 1 m of the radius, and coordinates outside
  the usual ranges, are therefore decided again by the scalar function that ``matches`` uses.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from .errors import DESERIALIZATION, InvalidArgumentError, MossError
from .filters_compile import (
    _COMPARE,
    MetadataFilter,
    _Equal,
    _Leaf,
    _Logic,
    _Member,
    _Near,
    _Range,
    _Test,
)
from .filters_values import _cell_text, _haversine_np, _parse_point, parse_decimal

__all__ = ["MetadataColumns"]

BoolArray = npt.NDArray[np.bool_]

# Rows within this distance (metres) of a $near radius are re-decided by the scalar formula.
_NEAR_RECHECK_M = 1.0
# Below this many string comparisons a Python loop beats building code-point ranks.
_SMALL_STRING_SET = 64
# A field turns into a dense code array once it holds more than 1/16 of the rows (and > 256).
_DENSE_MIN = 256
_DENSE_FRACTION = 16
_FORMAT_VERSION = 1


class _Column:
    """One field, dictionary-encoded. Codes are 1-based so that 0 means "row lacks the field"."""

    __slots__ = (
        "_geo",
        "_nums_arr",
        "_ranked",
        "count",
        "dense",
        "index",
        "sparse",
        "vocab",
    )

    def __init__(self) -> None:
        self.vocab: list[str] = []
        self.index: dict[str, int] = {}
        # Storage: `dense` (code per row, 0 = absent) once the field is common, else `sparse`.
        self.dense: npt.NDArray[np.int32] | None = None
        self.sparse: dict[int, int] = {}
        self.count = 0
        self._reset_caches()

    def _reset_caches(self) -> None:
        # Per-vocab-entry caches, each covering a prefix of `vocab`, extended when first needed:
        # parse_decimal (NaN if not a number), code-point rank, and parsed "lat,lng".
        self._nums_arr: npt.NDArray[np.float64] = np.empty(0)
        # (vocab[:k] in code-point order, rank of each of vocab[:k]); replaced as one tuple so a
        # concurrent reader never sees the two halves out of step.
        self._ranked: tuple[list[str], npt.NDArray[np.int64]] = ([], np.empty(0, np.int64))
        self._geo: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] = (
            np.empty(0),
            np.empty(0),
        )

    def code(self, text: str) -> int:
        c = self.index.get(text)
        if c is None:
            self.vocab.append(text)
            c = len(self.vocab)
            self.index[text] = c
        return c

    # -- storage ---------------------------------------------------------------------------

    def clear(self, rows: list[int]) -> None:
        """Forget ``rows``, which must all hold the field."""
        self.count -= len(rows)
        if self.dense is not None:
            self.dense[rows] = 0
        else:
            for r in rows:
                del self.sparse[r]

    def put(self, rows: list[int], codes: list[int], capacity: int) -> None:
        """Store ``codes`` at ``rows``, which must be distinct and lack the field."""
        self.count += len(rows)
        if self.dense is not None:
            self.dense[rows] = codes
        else:
            self.sparse.update(zip(rows, codes, strict=True))
            if self.count > max(_DENSE_MIN, capacity // _DENSE_FRACTION):
                self.make_dense(capacity)

    def make_dense(self, capacity: int) -> None:
        rows, codes = self.items()
        self.dense = np.zeros(capacity, np.int32)
        self.dense[rows] = codes
        self.sparse = {}

    def grow(self, capacity: int) -> None:
        if self.dense is not None and len(self.dense) < capacity:
            grown = np.zeros(capacity, np.int32)
            grown[: len(self.dense)] = self.dense
            self.dense = grown

    def items(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]:
        """Rows holding the field (ascending for dense storage) and their codes."""
        if self.dense is not None:
            rows = np.flatnonzero(self.dense).astype(np.int64)
            return rows, self.dense[rows]
        n = len(self.sparse)
        return (
            np.fromiter(self.sparse.keys(), np.int64, n),
            np.fromiter(self.sparse.values(), np.int32, n),
        )

    def rebuild(self, rows: npt.NDArray[np.int64], codes: npt.NDArray[np.int32], cap: int) -> None:
        """Store exactly ``codes`` at ``rows``, dropping vocabulary entries no row uses."""
        used, new_codes = np.unique(codes, return_inverse=True)
        old = used - 1  # ascending, so cached prefixes stay prefixes
        nums, (lat, lng) = self._nums_arr, self._geo
        vocab = self.vocab
        self.vocab = [vocab[i] for i in old.tolist()]
        self.index = {t: i + 1 for i, t in enumerate(self.vocab)}
        if len(self.index) != len(self.vocab):
            raise ValueError("duplicate values in a metadata vocabulary")
        self._reset_caches()
        self._nums_arr = nums[old[: np.searchsorted(old, len(nums))]]
        geo_kept = old[: np.searchsorted(old, len(lat))]
        self._geo = (lat[geo_kept], lng[geo_kept])
        codes1 = (new_codes.reshape(-1) + 1).astype(np.int32)
        self.count = len(rows)
        # Hysteresis: turn sparse again only well below the density that made the field dense.
        if self.count > max(_DENSE_MIN, cap // (4 * _DENSE_FRACTION)):
            self.sparse = {}
            self.dense = np.zeros(cap, np.int32)
            self.dense[rows] = codes1
        else:
            self.dense = None
            self.sparse = dict(zip(rows.tolist(), codes1.tolist(), strict=True))

    # -- evaluation --------------------------------------------------------------------------

    def mask(self, leaf: _Leaf, n: int) -> BoolArray:
        table = np.ones(len(self.vocab) + 1, np.bool_)
        table[0] = False
        for t in leaf.tests:
            table[1:] &= self._table(t)
        if self.dense is not None:
            return table[self.dense[:n]]
        rows, codes = self.items()
        hit = rows[table[codes]]
        out = np.zeros(n, np.bool_)
        out[hit[hit < n]] = True
        return out

    def _table(self, t: _Test) -> BoolArray:
        """Outcome of test ``t`` for every vocabulary entry."""
        size = len(self.vocab)
        if isinstance(t, _Equal):
            table = np.full(size, t.negate, np.bool_)
            c = self.index.get(t.text)
            if c is not None:
                table[c - 1] = not t.negate
            return table
        if isinstance(t, _Member):
            table = np.full(size, t.negate, np.bool_)
            hits = [c - 1 for c in map(self.index.get, t.texts) if c is not None]
            table[hits] = not t.negate
            return table
        if isinstance(t, _Range):
            return self._range_table(t)
        return self._near_table(t)

    def _range_table(self, t: _Range) -> BoolArray:
        size = len(self.vocab)
        if t.number is None:
            return self._string_table(t, np.arange(size))
        nums = self._numbers()
        is_num = ~np.isnan(nums)
        table = np.zeros(size, np.bool_)
        table[is_num] = _COMPARE[t.op](nums[is_num], t.number)
        others = np.flatnonzero(~is_num)
        if others.size:
            table[others] = self._string_table(t, others)
        return table

    def _string_table(self, t: _Range, subset: npt.NDArray[np.intp]) -> BoolArray:
        """Code-point comparison of ``vocab[subset]`` with ``t.text``."""
        compare = _COMPARE[t.op]
        if subset.size <= _SMALL_STRING_SET:
            vocab, text = self.vocab, t.text
            return np.array([compare(vocab[i], text) for i in subset.tolist()], np.bool_)
        sorted_vocab, rank = self._ranks()
        # rank r = number of entries below; compare the rank with the text's insertion point.
        if t.op == "$lt":
            return rank[subset] < bisect.bisect_left(sorted_vocab, t.text)
        if t.op == "$lte":
            return rank[subset] < bisect.bisect_right(sorted_vocab, t.text)
        if t.op == "$gt":
            return rank[subset] >= bisect.bisect_right(sorted_vocab, t.text)
        return rank[subset] >= bisect.bisect_left(sorted_vocab, t.text)

    def _numbers(self) -> npt.NDArray[np.float64]:
        done = len(self._nums_arr)
        if done != len(self.vocab):
            parsed = [parse_decimal(v) for v in self.vocab[done:]]
            fresh = np.array([math.nan if x is None else x for x in parsed], np.float64)
            self._nums_arr = np.concatenate([self._nums_arr, fresh])
        return self._nums_arr

    def _ranks(self) -> tuple[list[str], npt.NDArray[np.int64]]:
        """Code-point rank of every vocab entry, updated incrementally as the vocab grows."""
        vocab, size = self.vocab, len(self.vocab)
        old_sorted, old_rank = self._ranked
        done = len(old_rank)
        if done == size:
            return self._ranked
        rank = np.empty(size, np.int64)
        if done == 0 or (size - done) * 8 > done:
            order = sorted(range(size), key=vocab.__getitem__)
            sorted_vocab = [vocab[i] for i in order]
            rank[order] = np.arange(size)
        else:
            # Merge a few new entries into the sorted list: an old entry moves up by the number
            # of new entries below it, a new one lands at (old entries below) + (new below).
            new = sorted(range(done, size), key=vocab.__getitem__)
            pos = np.array([bisect.bisect_left(old_sorted, vocab[j]) for j in new], np.int64)
            rank[:done] = old_rank + np.searchsorted(pos, old_rank, side="right")
            rank[new] = pos + np.arange(len(new))
            sorted_vocab = list(old_sorted)
            for j, p in zip(reversed(new), reversed(pos.tolist()), strict=True):
                sorted_vocab.insert(p, vocab[j])
        self._ranked = (sorted_vocab, rank)
        return self._ranked

    def _geo_arrays(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        lat, lng = self._geo
        done = len(lat)
        if done != len(self.vocab):
            points = [_parse_point(v) for v in self.vocab[done:]]
            lat = np.concatenate([lat, [math.nan if p is None else p[0] for p in points]])
            lng = np.concatenate([lng, [math.nan if p is None else p[1] for p in points]])
            self._geo = (lat, lng)
        return lat, lng

    def _near_table(self, t: _Near) -> BoolArray:
        lat, lng = self._geo_arrays()
        table = np.zeros(len(self.vocab), np.bool_)
        parsed = ~np.isnan(lat)
        if abs(t.lat) <= 90 and abs(t.lng) <= 180:
            usual = parsed & (np.abs(lat) <= 90) & (np.abs(lng) <= 180)
            idx = np.flatnonzero(usual)
            dist = _haversine_np(t.lat, t.lng, lat[idx], lng[idx])
            table[idx] = dist <= t.radius
            recheck = idx[np.abs(dist - t.radius) <= _NEAR_RECHECK_M + 1e-9 * t.radius]
            recheck = np.concatenate([recheck, np.flatnonzero(parsed & ~usual)])
        else:
            recheck = np.flatnonzero(parsed)
        vocab = self.vocab
        for i in recheck.tolist():
            table[i] = t.test(vocab[i])
        return table


class MetadataColumns:
    """A columnar copy of the metadata of an index's rows, for filtering many rows at once.

    Rows are the engine's dense row numbers. ``evaluate`` returns, for every row, exactly
    ``MetadataFilter.matches`` of the metadata last ``set`` on it, and ``False`` for rows never
    set or removed.

    >>> from moss.filters import compile_filter
    >>> cols = MetadataColumns()
    >>> cols.set(np.array([0, 1, 2]), [{"price": "10"}, {"price": "9.5"}, None])
    >>> cols.evaluate(compile_filter({"field": "price", "condition": {"$gte": 10}}), 4).tolist()
    [True, False, False, False]
    """

    def __init__(self) -> None:
        self._n = 0  # rows known: one past the highest row ever set (until remap)
        self._cap = 0
        self._alive: BoolArray = np.zeros(0, np.bool_)
        self._row_keys: list[tuple[str, ...]] = []  # the fields each row holds
        self._fields: dict[str, _Column] = {}

    @property
    def n_rows(self) -> int:
        """One past the highest row known."""
        return self._n

    def _reserve(self, n: int) -> None:
        if n > self._cap:
            cap = max(n, 2 * self._cap, 1024)
            alive = np.zeros(cap, np.bool_)
            alive[: self._n] = self._alive[: self._n]
            self._alive = alive
            self._cap = cap
            for col in self._fields.values():
                col.grow(cap)
        if n > self._n:
            self._row_keys.extend([()] * (n - self._n))
            self._n = n

    def set(self, rows: npt.ArrayLike, metadatas: Sequence[Mapping[str, str] | None]) -> None:
        """Insert or overwrite the metadata of ``rows`` (a later duplicate row wins).

        Raises:
            InvalidArgumentError: lengths differ or a row is negative.
        """
        row_list = np.asarray(rows, dtype=np.int64).reshape(-1).tolist()
        if len(row_list) != len(metadatas):
            raise InvalidArgumentError(
                f"got {len(row_list)} rows but {len(metadatas)} metadata entries"
            )
        if not row_list:
            return
        if min(row_list) < 0:
            raise InvalidArgumentError("row numbers must be >= 0")
        latest = dict(zip(row_list, metadatas, strict=True))
        self._reserve(max(row_list) + 1)
        cleared: dict[str, list[int]] = {}
        added: dict[str, tuple[list[int], list[str]]] = {}
        row_keys = self._row_keys
        for row, md in latest.items():
            for key in row_keys[row]:
                cleared.setdefault(key, []).append(row)
            keys: list[str] = []
            if md:
                for key, raw in md.items():
                    text = _cell_text(raw)
                    if text is None or not isinstance(key, str):
                        continue
                    keys.append(key)
                    entry = added.get(key)
                    if entry is None:
                        entry = added[key] = ([], [])
                    entry[0].append(row)
                    entry[1].append(text)
            row_keys[row] = tuple(keys)
        for key, cleared_rows in cleared.items():
            self._fields[key].clear(cleared_rows)
        for key, (added_rows, texts) in added.items():
            col = self._fields.get(key)
            if col is None:
                col = self._fields[key] = _Column()
            col.put(added_rows, [col.code(t) for t in texts], self._cap)
            if len(col.vocab) > 2 * col.count + 1024:  # stale values from overwrites pile up
                col.rebuild(*col.items(), self._cap)
        self._drop_empty(cleared)
        self._alive[list(latest)] = True

    def remove(self, rows: npt.ArrayLike) -> None:
        """Forget ``rows``; unknown or already removed rows are ignored."""
        cleared: dict[str, list[int]] = {}
        unique = set(np.asarray(rows, dtype=np.int64).reshape(-1).tolist())
        gone = [r for r in unique if 0 <= r < self._n]
        for row in gone:
            for key in self._row_keys[row]:
                cleared.setdefault(key, []).append(row)
            self._row_keys[row] = ()
        for key, cleared_rows in cleared.items():
            self._fields[key].clear(cleared_rows)
        self._drop_empty(cleared)
        self._alive[gone] = False

    def _drop_empty(self, keys: Mapping[str, object]) -> None:
        for key in keys:
            if self._fields[key].count == 0:
                del self._fields[key]

    def remap(self, old_to_new: npt.ArrayLike) -> None:
        """Renumber rows after compaction: row ``r`` becomes ``old_to_new[r]``, or goes if -1.

        Rows past the end of ``old_to_new`` are dropped as well.

        Raises:
            InvalidArgumentError: the kept rows' new numbers are not strictly increasing.
        """
        mapping = np.asarray(old_to_new, dtype=np.int64).reshape(-1)
        m = min(len(mapping), self._n)
        old_rows = np.flatnonzero(mapping[:m] >= 0)
        new_rows = mapping[old_rows]
        if new_rows.size > 1 and not bool(np.all(np.diff(new_rows) > 0)):
            raise InvalidArgumentError("remap must keep rows in order (strictly increasing)")
        n = int(new_rows[-1]) + 1 if new_rows.size else 0
        cap = max(n, 1024)
        alive = np.zeros(cap, np.bool_)
        alive[new_rows] = self._alive[old_rows]
        row_keys: list[tuple[str, ...]] = [()] * n
        old_keys = self._row_keys
        for o, nw in zip(old_rows.tolist(), new_rows.tolist(), strict=True):
            row_keys[nw] = old_keys[o]
        full = np.full(self._n + 1, -1, np.int64)
        full[old_rows] = new_rows
        fields: dict[str, _Column] = {}
        for key, col in self._fields.items():
            rows, codes = col.items()
            moved = full[rows]
            keep = moved >= 0
            if bool(keep.any()):
                col.rebuild(moved[keep], codes[keep], cap)
                fields[key] = col
        self._n, self._cap, self._alive = n, cap, alive
        self._row_keys, self._fields = row_keys, fields

    def evaluate(self, flt: MetadataFilter, n_rows: int) -> BoolArray:
        """Rows ``0 .. n_rows-1`` that match ``flt``; unknown and removed rows are ``False``.

        Raises:
            InvalidArgumentError: ``n_rows`` is negative.
        """
        if n_rows < 0:
            raise InvalidArgumentError(f"n_rows must be >= 0, got {n_rows}")
        n = min(n_rows, self._n)

        def leaf_mask(leaf: _Leaf) -> BoolArray:
            col = self._fields.get(leaf.field)
            return np.zeros(n, np.bool_) if col is None else col.mask(leaf, n)

        root = flt._root
        if isinstance(root, _Leaf):
            mask = leaf_mask(root)
        else:
            mask = _evaluate_tree(root, leaf_mask, n)
        mask &= self._alive[:n]
        if n_rows > n:
            mask = np.concatenate([mask, np.zeros(n_rows - n, np.bool_)])
        return mask

    # -- persistence --------------------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain numeric arrays (no pickles, no object dtype) that :meth:`from_arrays` reads."""
        names = list(self._fields)
        out: dict[str, np.ndarray] = {
            "version": np.array([_FORMAT_VERSION], np.int64),
            "alive": self._alive[: self._n].copy(),
        }
        out["fields.blob"], out["fields.offsets"] = _pack(names)
        for i, name in enumerate(names):
            col = self._fields[name]
            rows, codes = col.items()
            order = np.argsort(rows, kind="stable")
            used, inverse = np.unique(codes[order], return_inverse=True)
            out[f"col{i}.rows"] = rows[order]
            out[f"col{i}.codes"] = inverse.reshape(-1).astype(np.int32)
            blob, offsets = _pack([col.vocab[c - 1] for c in used.tolist()])
            out[f"col{i}.vocab.blob"], out[f"col{i}.vocab.offsets"] = blob, offsets
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> MetadataColumns:
        """Rebuild from :meth:`to_arrays` output.

        Raises:
            MossError: code ``DESERIALIZATION`` if the arrays are missing, damaged or of
                another format version.
        """
        try:
            version = int(np.asarray(arrays["version"]).reshape(-1)[0])
            if version != _FORMAT_VERSION:
                raise ValueError(f"unsupported metadata column format {version}")
            alive = np.asarray(arrays["alive"], dtype=np.bool_).reshape(-1)
            names = _unpack(arrays["fields.blob"], arrays["fields.offsets"])
            self = cls()
            self._reserve(len(alive))
            self._alive[: len(alive)] = alive
            row_keys: list[list[str]] = [[] for _ in range(self._n)]
            for i, name in enumerate(names):
                rows = np.asarray(arrays[f"col{i}.rows"], dtype=np.int64).reshape(-1)
                codes = np.asarray(arrays[f"col{i}.codes"], dtype=np.int64).reshape(-1)
                vocab = _unpack(arrays[f"col{i}.vocab.blob"], arrays[f"col{i}.vocab.offsets"])
                if (
                    len(rows) != len(codes)
                    or (rows.size and (rows.min() < 0 or rows.max() >= self._n))
                    or (codes.size and (codes.min() < 0 or codes.max() >= len(vocab)))
                    or bool(np.any(np.diff(rows) <= 0))
                ):
                    raise ValueError(f"inconsistent arrays for field {name!r}")
                col = self._fields[name] = _Column()
                col.vocab = vocab
                col.rebuild(rows, (codes + 1).astype(np.int32), self._cap)
                for r in rows.tolist():
                    row_keys[r].append(name)
            self._row_keys = [tuple(k) for k in row_keys]
            return self
        except (KeyError, ValueError, IndexError, TypeError, UnicodeDecodeError) as exc:
            raise MossError(f"cannot read metadata columns: {exc}", code=DESERIALIZATION) from exc


def _evaluate_tree(root: _Logic, leaf_mask: Callable[[_Leaf], BoolArray], n: int) -> BoolArray:
    """Post-order evaluation of an $and/$or tree with an explicit stack."""
    stack: list[tuple[_Logic, int, BoolArray]] = [(root, 0, np.full(n, root.is_and))]
    result: BoolArray = np.zeros(n, np.bool_)
    while stack:
        node, i, acc = stack.pop()
        if i > 0:
            if node.is_and:
                acc &= result
            else:
                acc |= result
        if i == len(node.children):
            result = acc
            continue
        child = node.children[i]
        stack.append((node, i + 1, acc))
        if isinstance(child, _Leaf):
            result = leaf_mask(child)
        else:
            stack.append((child, 0, np.full(n, child.is_and)))
    return result


def _pack(strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [s.encode("utf-8", "surrogatepass") for s in strings]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    offsets[1:] = np.cumsum([len(e) for e in encoded], dtype=np.int64)
    return np.frombuffer(b"".join(encoded), np.uint8).copy(), offsets


def _unpack(blob: np.ndarray, offsets: np.ndarray) -> list[str]:
    data = np.asarray(blob, dtype=np.uint8).tobytes()
    bounds = np.asarray(offsets, dtype=np.int64).reshape(-1).tolist()
    if not bounds or bounds[0] != 0 or bounds[-1] != len(data):
        raise ValueError("string offsets do not match their data")
    pairs = list(itertools.pairwise(bounds))
    if any(a > b for a, b in pairs):
        raise ValueError("string offsets are not increasing")
    if data.isascii():  # byte offsets are character offsets: slice one decoded str
        text = data.decode("ascii")
        return [text[a:b] for a, b in pairs]
    return [data[a:b].decode("utf-8", "surrogatepass") for a, b in pairs]

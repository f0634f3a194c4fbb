"""Metadata filters (docs/api.md §3.8): compile once, then test one document or a column store.

Design, and why:

* **Compile, then evaluate.** :func:`compile_filter` validates the whole tree before any document
  is looked at, so a malformed filter fails the same way on an empty index as on a full one, with
  exactly the §3.8 messages. The result, :class:`MetadataFilter`, is an immutable tree of small
  frozen nodes; filter values are converted to strings once (§3.1: ``30`` -> ``"30"``,
  ``True`` -> ``"true"``, a float by ``repr``) and numeric values are parsed once.
* **Any nesting depth.** Compilation and both evaluators walk the tree with an explicit stack, so
  a deeply nested ``$and``/``$or`` never meets Python's recursion limit.
* **One definition of "a number"**, :func:`parse_decimal`, shared with ``sort_by`` (grouping.py):
  an ASCII decimal literal -- optional sign, digits with an optional fraction, optional exponent
  (``"10"``, ``"-9.5"``, ``".5"``, ``"5."``, ``"1e3"``, ``"+2E-4"``) -- whose value is finite in
  float64. Not numbers: ``"nan"``, ``"inf"``, ``"1e999"`` (overflows), hex, ``"1_000"``,
  surrounding whitespace, non-ASCII digits, ``""``. Numbers are compared as float64.
* **Columnar evaluation.** :class:`MetadataColumns` keeps each field dictionary-encoded: a
  vocabulary of its distinct values and a small integer code per row. A leaf is decided once per
  *distinct value* (a lookup table built with numpy from cached per-value float parses and
  code-point ranks), then gathered over the rows, so a leaf costs O(distinct + rows) in C rather
  than a Python call per row. Fields present in few rows are kept as a ``{row: code}`` dict so
  that metadata with many distinct keys cannot cost rows x keys memory.
* **Exactly the same answer both ways.** ``evaluate`` must equal ``matches`` row for row. All
  comparisons are exact (string equality, float64 comparison, code-point rank), except the
  vectorised haversine of ``$near``, whose last-bit rounding may differ from :mod:`math`; values
  within 1 m of the radius, and coordinates outside the usual ranges, are therefore decided again
  by the scalar function that ``matches`` uses.
* **Geometry.** ``$near`` uses the haversine great-circle distance on a sphere of radius
  :data:`EARTH_RADIUS_M` = 6,371,008.8 m (the IUGG mean Earth radius). Numbers in the query and
  in the field's ``"lat,lng"`` may have spaces around them; a field value that is not exactly two
  such decimals does not match. Coordinates are not range checked: any three finite numbers form
  a valid query, as the §3.8 message says.
"""

from __future__ import annotations

import bisect
import itertools
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import numpy.typing as npt

from .errors import DESERIALIZATION, INTERNAL, InvalidArgumentError, MossError

__all__ = [
    "EARTH_RADIUS_M",
    "OPERATORS",
    "MetadataColumns",
    "MetadataFilter",
    "compile_filter",
    "haversine_m",
    "parse_decimal",
]

EARTH_RADIUS_M = 6371008.8
"""Mean Earth radius (IUGG) in metres, used by ``$near``."""

OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$near")

BoolArray = npt.NDArray[np.bool_]

# The §3.8 messages; binding character for character.
_MSG_NOT_DICT = "MetadataFilter must be a dict"
_MSG_SHAPE = "Filter dict must contain 'field' and 'condition', or '$and'/'$or'"
_MSG_NO_CONDITION = "Filter dict must contain 'condition' key"
_MSG_CONDITION_NOT_DICT = "'condition' must be a dict"
_MSG_OPERATOR = "Filter condition must contain one of: " + ", ".join(OPERATORS)
_MSG_IN_LIST = "$in/$nin value must be a list"
_MSG_NEAR = (
    'invalid $near value "{}": expected "lat,lng,maxDistanceMeters", three finite numbers with a '
    'distance of 0 or more, for example "40.7580,-73.9855,5000"'
)

# Rows within this distance (metres) of a $near radius are re-decided by the scalar formula.
_NEAR_RECHECK_M = 1.0
# Below this many string comparisons a Python loop beats building code-point ranks.
_SMALL_STRING_SET = 64
# A field turns into a dense code array once it holds more than 1/16 of the rows (and > 256).
_DENSE_MIN = 256
_DENSE_FRACTION = 16
_FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------
# Scalars


def parse_decimal(value: str) -> float | None:
    """Parse ``value`` as a finite decimal number, the one rule for filters and ``sort_by``.

    A number is an ASCII decimal literal: an optional ``+``/``-``, digits with an optional
    fractional part (``"5."`` and ``".5"`` count), and an optional exponent (``"1e3"``). No
    surrounding whitespace, underscores, hex, or non-ASCII digits; ``nan``/``inf`` and literals
    that overflow float64 (``"1e999"``) are not numbers. Underflow rounds (``"1e-999"`` is 0.0).

    Args:
        value: a metadata value.

    Returns:
        The float64 value, or ``None`` if ``value`` is not a finite decimal.

    >>> [parse_decimal(s) for s in ["10", "-9.5", "1e3", " 1", "nan", "1e999", "abc"]]
    [10.0, -9.5, 1000.0, None, None, None, None]
    """
    if not isinstance(value, str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    # float() also takes whitespace, "_" separators, Unicode digits and nan/inf spellings.
    if (
        not math.isfinite(number)
        or not value.isascii()
        or "_" in value
        or value[0].isspace()
        or value[-1].isspace()
    ):
        return None
    return number


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle distance in metres between two points given in degrees (haversine)."""
    p1 = math.radians(lat1)
    p2 = math.radians(lat2)
    # Convert before subtracting: two huge finite longitudes could overflow their difference.
    dl = math.radians(lng2) - math.radians(lng1)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    a = min(1.0, max(0.0, a))
    return 2.0 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


def _haversine_np(
    lat1: float, lng1: float, lat2: npt.NDArray[np.float64], lng2: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    p1 = math.radians(lat1)
    p2 = np.radians(lat2)
    dl = np.radians(lng2) - math.radians(lng1)
    a = np.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    a = np.clip(a, 0.0, 1.0)
    result: npt.NDArray[np.float64] = 2.0 * EARTH_RADIUS_M * np.arcsin(np.sqrt(a))
    return result


def _parse_point(value: str) -> tuple[float, float] | None:
    """``"lat,lng"`` (spaces around either number allowed) -> floats, else ``None``."""
    parts = value.split(",")
    if len(parts) != 2:
        return None
    lat = parse_decimal(parts[0].strip())
    lng = parse_decimal(parts[1].strip())
    if lat is None or lng is None:
        return None
    return lat, lng


def _cell_text(value: object) -> str | None:
    """A stored metadata value as text; non-string scalars get the §3.1 conversion."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        try:
            return _scalar_text(value)
        except ValueError:
            return None
    return None


def _scalar_text(value: bool | int | float) -> str:
    # int.__repr__/float.__repr__ rather than str()/repr(): subclasses (IntEnum, numpy.float64)
    # must convert like the plain number they are.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    return float.__repr__(value)


def _type_name(value: object) -> str:
    return "None" if value is None else type(value).__name__


def _operand_text(op: str, value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        try:
            return _scalar_text(value)
        except ValueError:  # an int too long for str() (sys.get_int_max_str_digits)
            raise InvalidArgumentError(f"{op} value is an integer too large to convert") from None
    raise InvalidArgumentError(
        f"{op} value must be a string, number or boolean, not {_type_name(value)}"
    )


# --------------------------------------------------------------------------------------------
# Compiled nodes

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}


@dataclass(frozen=True)
class _Equal:
    """``$eq`` (negate False) or ``$ne`` (negate True): exact string (in)equality."""

    negate: bool
    text: str

    def test(self, value: str) -> bool:
        return (value == self.text) != self.negate


@dataclass(frozen=True)
class _Range:
    """``$gt``/``$gte``/``$lt``/``$lte``: numeric if both sides are decimals, else code points."""

    op: str
    text: str
    number: float | None

    def test(self, value: str) -> bool:
        compare = _COMPARE[self.op]
        if self.number is not None:
            x = parse_decimal(value)
            if x is not None:
                return compare(x, self.number)
        return compare(value, self.text)


@dataclass(frozen=True)
class _Member:
    """``$in`` (negate False) or ``$nin`` (negate True): membership by string equality."""

    negate: bool
    texts: frozenset[str]

    def test(self, value: str) -> bool:
        return (value in self.texts) != self.negate


@dataclass(frozen=True)
class _Near:
    """``$near``: the value is a ``"lat,lng"`` within ``radius`` metres of the point."""

    lat: float
    lng: float
    radius: float

    def test(self, value: str) -> bool:
        point = _parse_point(value)
        return point is not None and haversine_m(self.lat, self.lng, *point) <= self.radius


_Test = Union[_Equal, _Range, _Member, _Near]


@dataclass(frozen=True)
class _Leaf:
    field: str
    tests: tuple[_Test, ...]

    def test(self, metadata: Mapping[str, object]) -> bool:
        raw = metadata.get(self.field)
        value = None if raw is None else _cell_text(raw)
        if value is None:  # a missing field fails every leaf, $ne and $nin included
            return False
        return all(t.test(value) for t in self.tests)


@dataclass(frozen=True)
class _Logic:
    is_and: bool
    children: tuple[_Node, ...]


_Node = Union[_Leaf, _Logic]


class MetadataFilter:
    """A compiled, immutable metadata filter; build it with :func:`compile_filter`.

    >>> f = compile_filter({"field": "price", "condition": {"$gt": 9}})
    >>> f.matches({"price": "10"}), f.matches({"price": "8.5"}), f.matches({})
    (True, False, False)
    """

    __slots__ = ("_fields", "_root")
    _root: _Node
    _fields: frozenset[str]

    def __init__(self, root: _Node, fields: frozenset[str]) -> None:
        object.__setattr__(self, "_root", root)
        object.__setattr__(self, "_fields", fields)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("MetadataFilter is immutable")

    @property
    def fields(self) -> frozenset[str]:
        """The metadata keys the filter reads."""
        return self._fields

    def matches(self, metadata: Mapping[str, str] | None) -> bool:
        """Whether a document with this metadata (``None`` means none) passes the filter."""
        md: Mapping[str, object] = {} if metadata is None else metadata
        root = self._root
        if isinstance(root, _Leaf):
            return root.test(md)
        # Iterative short-circuit walk. A frame (node, i) is resumed after child i-1 finished
        # with `result`; a False settles an $and and a True settles an $or.
        stack: list[tuple[_Logic, int]] = [(root, 0)]
        result = False
        while stack:
            node, i = stack.pop()
            if i > 0 and result != node.is_and:
                continue
            if i == len(node.children):
                result = node.is_and
                continue
            child = node.children[i]
            stack.append((node, i + 1))
            if isinstance(child, _Leaf):
                result = child.test(md)
            else:
                stack.append((child, 0))
        return result

    def __repr__(self) -> str:
        return f"MetadataFilter(fields={sorted(self._fields)!r})"


# --------------------------------------------------------------------------------------------
# Compilation


def compile_filter(spec: object) -> MetadataFilter:
    """Validate a §3.8 filter and compile it.

    Args:
        spec: ``{"field": ..., "condition": {...}}`` or ``{"$and"/"$or": [filter, ...]}``,
            nested to any depth.

    Returns:
        The compiled filter.

    Raises:
        InvalidArgumentError: the filter is malformed; the §3.8 cases carry exactly the §3.8
            messages, other problems (an operand of the wrong type, a non-string ``field``,
            extra keys beside ``field``/``condition`` or ``$and``/``$or``) messages of their own.

    >>> compile_filter({"field": "a"})
    Traceback (most recent call last):
    ...
    moss.errors.InvalidArgumentError: Filter dict must contain 'condition' key
    """
    fields: set[str] = set()
    top: list[_Node | None] = [None]
    # Depth-first in document order, so the first malformed part met is the one reported.
    todo: list[tuple[object, list[_Node | None], int]] = [(spec, top, 0)]
    logic: list[tuple[bool, list[_Node | None], list[_Node | None], int]] = []
    while todo:
        item, out, slot = todo.pop()
        if not isinstance(item, Mapping):
            raise InvalidArgumentError(_MSG_NOT_DICT)
        has_and, has_or = "$and" in item, "$or" in item
        if has_and or has_or:
            key = "$and" if has_and else "$or"
            if len(item) != 1:
                # Silently dropping a sibling condition would widen the filter; refuse.
                others = ", ".join(repr(k) for k in item if k != key)
                raise InvalidArgumentError(
                    f"Filter dict with {key!r} must have no other keys, got {others}"
                )
            children = item[key]
            if not isinstance(children, list):
                raise InvalidArgumentError(f"{key} value must be a list")
            slots: list[_Node | None] = [None] * len(children)
            logic.append((has_and, slots, out, slot))
            for i in range(len(children) - 1, -1, -1):
                todo.append((children[i], slots, i))
        elif "field" in item:
            if "condition" not in item:
                raise InvalidArgumentError(_MSG_NO_CONDITION)
            if len(item) != 2:
                others = ", ".join(repr(k) for k in item if k not in ("field", "condition"))
                raise InvalidArgumentError(
                    f"Filter dict must contain only 'field' and 'condition', got also {others}"
                )
            leaf = _compile_leaf(item["field"], item["condition"])
            fields.add(leaf.field)
            out[slot] = leaf
        else:
            raise InvalidArgumentError(_MSG_SHAPE)
    # Pre-order reversed: every node is built after all of its descendants.
    for is_and, slots, out, slot in reversed(logic):
        out[slot] = _Logic(is_and, tuple(_built(s) for s in slots))
    return MetadataFilter(_built(top[0]), frozenset(fields))


def _built(node: _Node | None) -> _Node:
    if node is None:  # pragma: no cover - every slot is filled before use
        raise MossError("internal error compiling a filter", code=INTERNAL)
    return node


def _compile_leaf(field: object, condition: object) -> _Leaf:
    if not isinstance(field, str):
        raise InvalidArgumentError(f"'field' must be a string, not {_type_name(field)}")
    if not isinstance(condition, Mapping):
        raise InvalidArgumentError(_MSG_CONDITION_NOT_DICT)
    if not condition or any(op not in OPERATORS for op in condition):
        raise InvalidArgumentError(_MSG_OPERATOR)
    return _Leaf(field, tuple(_compile_test(op, value) for op, value in condition.items()))


def _compile_test(op: str, value: object) -> _Test:
    if op in ("$eq", "$ne"):
        return _Equal(op == "$ne", _operand_text(op, value))
    if op in _COMPARE:
        text = _operand_text(op, value)
        return _Range(op, text, parse_decimal(text))
    if op in ("$in", "$nin"):
        if not isinstance(value, list):
            raise InvalidArgumentError(_MSG_IN_LIST)
        texts: set[str] = set()
        for element in value:
            if not isinstance(element, (str, bool, int, float)):
                raise InvalidArgumentError(
                    f"{op} list elements must be strings, numbers or booleans, "
                    f"not {_type_name(element)}"
                )
            texts.add(_operand_text(op, element))
        return _Member(op == "$nin", frozenset(texts))
    return _compile_near(value)


def _compile_near(value: object) -> _Near:
    if isinstance(value, str):
        parts = [parse_decimal(p.strip()) for p in value.split(",")]
        if len(parts) == 3:
            lat, lng, radius = parts
            if lat is not None and lng is not None and radius is not None and radius >= 0:
                return _Near(lat, lng, radius)
    raise InvalidArgumentError(_MSG_NEAR.format(value))


# --------------------------------------------------------------------------------------------
# Columnar store


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

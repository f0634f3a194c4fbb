"""Metadata filters compiled (docs/api.md §3.8), and tested against one document's metadata.

* **Compile, then evaluate.** :func:`compile_filter` validates the whole tree before any document
  is looked at, so a malformed filter fails the same way on an empty index as on a full one, with
  exactly the §3.8 messages. The result, :class:`MetadataFilter`, is an immutable tree of small
  frozen nodes; filter values are converted to strings once (§3.1: ``30`` -> ``"30"``,
  ``True`` -> ``"true"``, a float by ``repr``) and numeric values are parsed once
  (:func:`~moss.filters_values.parse_decimal`).
* **Any nesting depth.** Compilation and both evaluators (``MetadataFilter.matches`` here, the
  column store's in filters_columns.py) walk the tree with an explicit stack, so a deeply nested
  ``$and``/``$or`` never meets Python's recursion limit.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union

from .errors import INTERNAL, InvalidArgumentError, MossError
from .filters_values import (
    _cell_text,
    _parse_point,
    _scalar_text,
    _type_name,
    haversine_m,
    parse_decimal,
)

__all__ = ["OPERATORS", "MetadataFilter", "compile_filter"]

OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$near")

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

"""``sort_by`` ordering (docs/api.md §3.2) and ``ParentGrouping`` units (§3.7) as pure functions.

Design, and why:

* **One ordering rule for sorting and for unit members.** Values that are finite decimals (as
  :func:`moss.filters.parse_decimal` defines them, the same rule the range filters use) come
  first in numeric order, then every other string in code-point order, then rows without the
  field. Ties keep input order, so the sort is stable and deterministic.
* **Descending reverses only the rows that have the field**: the non-numeric strings come first
  (code points descending), then the numbers (descending), and rows without the field stay last.
  Ties still keep input order in both directions.
* **Positions, not documents.** The functions take plain value lists and return positions into
  them, so query hits and ``get_docs`` documents share them without either being copied. Numbers
  are ordered by a stable numpy argsort, strings by Python's stable ``sorted``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InvalidArgumentError
from .filters import parse_decimal

__all__ = ["Unit", "group_units", "order_members", "sort_rows"]


def sort_rows(values: Sequence[str | None], ascending: bool = True) -> list[int]:
    """Positions of ``values`` in ``sort_by`` order (§3.2).

    Args:
        values: each row's value of the sort field, ``None`` where the row lacks it.
        ascending: ``False`` reverses the rows that have the field; rows lacking it stay last.

    Returns:
        A permutation of ``range(len(values))``.

    >>> prices = ["10", "9.5", None, "100", "50", "n/a"]
    >>> [prices[i] for i in sort_rows(prices)]
    ['9.5', '10', '50', '100', 'n/a', None]
    >>> [prices[i] for i in sort_rows(prices, ascending=False)]
    ['n/a', '100', '50', '10', '9.5', None]
    """
    num_pos: list[int] = []
    num_val: list[float] = []
    str_pos: list[int] = []
    str_val: list[str] = []
    missing: list[int] = []
    for i, value in enumerate(values):
        if value is None:
            missing.append(i)
            continue
        x = parse_decimal(value)
        if x is None:
            str_pos.append(i)
            str_val.append(value)
        else:
            num_pos.append(i)
            num_val.append(x)
    numbers: list[int] = []
    if num_pos:
        keys = np.asarray(num_val, dtype=np.float64)
        # Negating a finite float is exact, so a stable argsort of -x is a descending sort
        # that keeps ties in input order.
        order = np.argsort(keys if ascending else -keys, kind="stable")
        numbers = np.asarray(num_pos, dtype=np.int64)[order].tolist()
    # sorted() is stable with reverse=True too: equal strings keep input order.
    order_s = sorted(range(len(str_val)), key=str_val.__getitem__, reverse=not ascending)
    strings = [str_pos[j] for j in order_s]
    if ascending:
        return numbers + strings + missing
    return strings + numbers + missing


@dataclass(frozen=True)
class Unit:
    """One ``ParentGrouping`` entry: its key and its members' positions in input order."""

    key: str
    members: list[int]


def group_units(parent_values: Sequence[str | None], ids: Sequence[str]) -> list[Unit]:
    """Group positions by parent value (§3.7).

    Positions with equal parent value form one unit keyed by that value; a position without a
    parent value is a unit of its own keyed by its id (even if that id equals some parent
    value). Units come in the order of their first member.

    Args:
        parent_values: each row's ``metadata[parent_field]``, ``None`` where absent.
        ids: each row's document id.

    Returns:
        The units.

    Raises:
        InvalidArgumentError: the two sequences differ in length.

    >>> group_units(["a", None, "a", "b"], ["1", "2", "3", "4"])
    [Unit(key='a', members=[0, 2]), Unit(key='2', members=[1]), Unit(key='b', members=[3])]
    """
    if len(parent_values) != len(ids):
        raise InvalidArgumentError(f"got {len(parent_values)} parent values but {len(ids)} ids")
    units: list[Unit] = []
    by_parent: dict[str, list[int]] = {}
    for i, parent in enumerate(parent_values):
        if parent is None:
            units.append(Unit(ids[i], [i]))
            continue
        members = by_parent.get(parent)
        if members is None:
            members = by_parent[parent] = []
            units.append(Unit(parent, members))
        members.append(i)
    return units


def order_members(unit_members: list[int], order_values: Sequence[str | None]) -> list[int]:
    """A unit's members ordered by ``order_field`` with the ``sort_by`` rule, ascending.

    Args:
        unit_members: positions of the members (``Unit.members``).
        order_values: every position's ``metadata[order_field]`` (indexed by position, like
            the ``parent_values`` given to :func:`group_units`), ``None`` where absent.

    Returns:
        ``unit_members`` reordered; ties (and members without the field, last) keep their order.

    >>> order_members([0, 2, 3], ["2", "x", "10", None])
    [0, 2, 3]
    >>> order_members([3, 1, 0], ["2", "1", "x", None])
    [1, 0, 3]
    """
    values = [order_values[m] for m in unit_members]
    return [unit_members[j] for j in sort_rows(values)]

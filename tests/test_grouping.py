"""Tests of moss.grouping: the §3.2 sort_by rule and §3.7 units, against naive references."""

from __future__ import annotations

import functools
import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moss.errors import InvalidArgumentError
from moss.grouping import Unit, group_units, order_members, sort_rows

DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def number(s: str) -> float | None:
    if DECIMAL.fullmatch(s) is None or not math.isfinite(float(s)):
        return None
    return float(s)


def ref_sort(values: list[str | None], ascending: bool = True) -> list[int]:
    """Pairwise comparison, written independently of the implementation."""

    def cmp(i: int, j: int) -> int:
        a, b = values[i], values[j]
        if a is None or b is None:  # missing last, in index order
            if a is None and b is None:
                return (i > j) - (i < j)
            return 1 if a is None else -1
        x, y = number(a), number(b)
        if x is not None and y is not None:
            c = (x > y) - (x < y)
        elif x is not None:
            c = -1
        elif y is not None:
            c = 1
        else:
            c = (a > b) - (a < b)
        if not ascending:
            c = -c
        return c if c else (i > j) - (i < j)

    return sorted(range(len(values)), key=functools.cmp_to_key(cmp))


def test_price_example() -> None:
    prices = ["10", "9.5", "100", "50"]
    assert [prices[i] for i in sort_rows(prices, ascending=False)] == ["100", "50", "10", "9.5"]
    assert [prices[i] for i in sort_rows(prices)] == ["9.5", "10", "50", "100"]


def test_numbers_then_strings_then_missing() -> None:
    values = [None, "b", "10", "A", "-1e1", None, "9.5", "nan", "a"]
    assert [values[i] for i in sort_rows(values)] == [
        "-1e1", "9.5", "10", "A", "a", "b", "nan", None, None,
    ]  # fmt: skip
    assert sort_rows(values)[-2:] == [0, 5]
    assert [values[i] for i in sort_rows(values, ascending=False)] == [
        "nan", "b", "a", "A", "10", "9.5", "-1e1", None, None,
    ]  # fmt: skip
    assert sort_rows(values, ascending=False)[-2:] == [0, 5]


def test_ties_keep_index_order_both_ways() -> None:
    values = ["1", "1.0", "x", "x", "01", "2"]
    assert sort_rows(values) == [0, 1, 4, 5, 2, 3]
    assert sort_rows(values, ascending=False) == [2, 3, 5, 0, 1, 4]
    assert sort_rows([]) == []


values_st = st.lists(
    st.one_of(
        st.none(),
        st.sampled_from(["10", "9.5", "100", "-0", "0", "1e2", "nan", "inf", " 1", "a", "B"]),
        st.text(max_size=3),
        st.integers(-50, 50).map(str),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
    ),
    max_size=25,
)


@given(values_st, st.booleans())
def test_sort_rows_matches_reference(values: list[str | None], ascending: bool) -> None:
    assert sort_rows(values, ascending) == ref_sort(values, ascending)


def test_group_units_example() -> None:
    parents = ["f1", None, "f2", "f1", None, "f2", "d2"]
    ids = ["c1", "d2", "c3", "c4", "d5", "c6", "c7"]
    assert group_units(parents, ids) == [
        Unit("f1", [0, 3]),
        Unit("d2", [1]),
        Unit("f2", [2, 5]),
        Unit("d5", [4]),
        Unit("d2", [6]),  # a parent value equal to an unparented id is still a separate unit
    ]
    assert group_units([], []) == []
    with pytest.raises(InvalidArgumentError):
        group_units(["a"], [])


def test_order_members_uses_the_sort_by_rule() -> None:
    order = ["10", "2", None, "1", "x", "2"]
    assert order_members([0, 1, 2, 3, 4, 5], order) == [3, 1, 5, 0, 4, 2]
    assert order_members([5, 2, 1], order) == [5, 1, 2]  # tie "2"/"2" keeps member order
    native = [None, None, None]  # native chunks have no order field: index order
    assert order_members([0, 1, 2], native) == [0, 1, 2]


@given(st.lists(st.none() | st.sampled_from(["p", "q", "r", "s1"]), max_size=30), values_st)
def test_group_and_order_match_reference(parents: list[str | None], vals: list[str | None]) -> None:
    ids = [f"s{i}" for i in range(len(parents))]
    order_vals = [vals[i % len(vals)] if vals else None for i in range(len(parents))]
    units = group_units(parents, ids)
    # Reference: a unit per distinct parent, in first-appearance order, plus singletons.
    expected: list[tuple[str, list[int]]] = []
    seen: dict[str, list[int]] = {}
    for i, p in enumerate(parents):
        if p is None:
            expected.append((ids[i], [i]))
        elif p in seen:
            seen[p].append(i)
        else:
            seen[p] = [i]
            expected.append((p, seen[p]))
    assert [(u.key, u.members) for u in units] == expected
    assert sorted(i for u in units for i in u.members) == list(range(len(parents)))
    for u in units:
        ordered = order_members(u.members, order_vals)
        local = [order_vals[m] for m in u.members]
        assert ordered == [u.members[j] for j in ref_sort(local)]

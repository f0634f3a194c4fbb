"""Tests of moss.filters: §3.8 messages, operator semantics, and MetadataColumns == matches.

The semantics are checked against a deliberately naive evaluator written here, which interprets
the raw filter dict directly (no compilation, its own number regex and haversine).
"""

from __future__ import annotations

import contextlib
import math
import operator
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moss import filters_columns
from moss.errors import DESERIALIZATION, INVALID_ARGUMENT, InvalidArgumentError, MossError
from moss.filters import (
    EARTH_RADIUS_M,
    MetadataColumns,
    compile_filter,
    haversine_m,
    parse_decimal,
)

# --------------------------------------------------------------------------------------------
# Naive reference

DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def ref_decimal(s: str) -> float | None:
    if DECIMAL.fullmatch(s) is None:
        return None
    x = float(s)
    return x if math.isfinite(x) else None


def ref_text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if v is True:
        return "true"
    if v is False:
        return "false"
    return str(v) if isinstance(v, int) else repr(v)


def ref_distance(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    h = (
        math.sin((phi2 - phi1) / 2) ** 2
        + math.cos(phi1)
        * math.cos(phi2)
        * math.sin((math.radians(lng2) - math.radians(lng1)) / 2) ** 2
    )
    return 2 * 6371008.8 * math.asin(math.sqrt(min(1.0, max(0.0, h))))


RANGE = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}


def ref_match(spec: dict[str, Any], md: dict[str, str] | None) -> bool:
    md = md or {}
    if "$and" in spec:
        return all(ref_match(c, md) for c in spec["$and"])
    if "$or" in spec:
        return any(ref_match(c, md) for c in spec["$or"])
    v = md.get(spec["field"])
    if v is None:
        return False
    for op, arg in spec["condition"].items():
        if op == "$eq":
            ok = v == ref_text(arg)
        elif op == "$ne":
            ok = v != ref_text(arg)
        elif op in RANGE:
            a = ref_text(arg)
            x, y = ref_decimal(v), ref_decimal(a)
            ok = RANGE[op](x, y) if x is not None and y is not None else RANGE[op](v, a)
        elif op == "$in":
            ok = v in [ref_text(e) for e in arg]
        elif op == "$nin":
            ok = v not in [ref_text(e) for e in arg]
        else:
            lat, lng, radius = (float(p) for p in arg.split(","))
            parts = [ref_decimal(p.strip()) for p in v.split(",")]
            ok = (
                len(parts) == 2
                and None not in parts
                and ref_distance(lat, lng, parts[0], parts[1]) <= radius  # type: ignore[arg-type]
            )
        if not ok:
            return False
    return True


# --------------------------------------------------------------------------------------------
# §3.8 messages, exactly

NEAR_A = (
    'invalid $near value "a": expected "lat,lng,maxDistanceMeters", three finite numbers with a '
    'distance of 0 or more, for example "40.7580,-73.9855,5000"'
)
OPS_MSG = "Filter condition must contain one of: $eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $near"
NOT_DICT = "MetadataFilter must be a dict"
SHAPE = "Filter dict must contain 'field' and 'condition', or '$and'/'$or'"


def leaf(cond: Any, field: Any = "f") -> dict[str, Any]:
    return {"field": field, "condition": cond}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (5, NOT_DICT),
        (None, NOT_DICT),
        ([leaf({"$eq": 1})], NOT_DICT),
        ("field", NOT_DICT),
        ({"$and": [leaf({"$eq": 1}), 5]}, NOT_DICT),
        ({"$or": [{"$and": ["x"]}]}, NOT_DICT),
        ({}, SHAPE),
        ({"condition": {"$eq": 1}}, SHAPE),
        ({"$not": leaf({"$eq": 1})}, SHAPE),
        ({"$and": [{"Field": "a", "condition": {}}]}, SHAPE),
        ({"field": "a"}, "Filter dict must contain 'condition' key"),
        ({"$or": [{"field": "a", "cond": {}}]}, "Filter dict must contain 'condition' key"),
        (leaf(5), "'condition' must be a dict"),
        (leaf([["$eq", 1]]), "'condition' must be a dict"),
        (leaf(None), "'condition' must be a dict"),
        (leaf({}), OPS_MSG),
        (leaf({"$exists": True}), OPS_MSG),
        (leaf({"$contains": "x"}), OPS_MSG),
        (leaf({"$eq": 1, "$regex": "x"}), OPS_MSG),
        (leaf({"eq": 1}), OPS_MSG),
        (leaf({"$in": "a"}), "$in/$nin value must be a list"),
        (leaf({"$nin": {"a": 1}}), "$in/$nin value must be a list"),
        (leaf({"$in": ("a", "b")}), "$in/$nin value must be a list"),
        (leaf({"$nin": None}), "$in/$nin value must be a list"),
        ({"$and": {}}, "$and value must be a list"),
        ({"$and": leaf({"$eq": 1})}, "$and value must be a list"),
        ({"$or": "x"}, "$or value must be a list"),
        ({"$and": [{"$or": None}]}, "$or value must be a list"),
        (leaf({"$near": "a"}), NEAR_A),
    ],
)
def test_binding_messages(spec: Any, message: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        compile_filter(spec)
    assert str(info.value) == message
    assert info.value.code == INVALID_ARGUMENT
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "near",
    ["", "1,2", "1,2,3,4", "1,2,-5", "nan,0,5", "0,inf,5", "1,,3", "1,2,1e999", "x,2,3", 5, None],
)
def test_near_messages(near: Any) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        compile_filter(leaf({"$near": near}))
    assert str(info.value) == NEAR_A.replace('"a"', f'"{near}"')


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        (leaf({"$eq": None}), "$eq value must be a string, number or boolean, not None"),
        (leaf({"$ne": [1]}), "$ne value must be"),
        (leaf({"$gt": [1]}), "$gt value must be a string, number or boolean, not list"),
        (leaf({"$lte": {"a": 1}}), "$lte value must be"),
        (leaf({"$in": [1, {"a": 1}]}), "$in list elements must be strings, numbers or booleans"),
        (leaf({"$nin": [None]}), "$nin list elements must be"),
        (leaf({"$eq": 10**5000}), "too large"),
        (leaf({"$eq": 1}, field=5), "'field' must be a string, not int"),
        (leaf({"$eq": 1}, field=None), "'field' must be a string"),
        ({"$and": [], "$or": []}, "must have no other keys"),
        ({"$and": [], "field": "a", "condition": {"$eq": 1}}, "must have no other keys"),
        ({**leaf({"$eq": 1}), "note": "x"}, "only 'field' and 'condition'"),
    ],
)
def test_other_errors(spec: Any, needle: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        compile_filter(spec)
    assert needle in str(info.value)


def test_first_error_in_document_order() -> None:
    spec = {"$and": [leaf({"$in": "x"}), leaf({"$near": "a"})]}
    with pytest.raises(InvalidArgumentError, match=re.escape("$in/$nin value must be a list")):
        compile_filter(spec)


# --------------------------------------------------------------------------------------------
# Operator semantics, §3.8 examples


def m(spec: Any, md: dict[str, str] | None) -> bool:
    result = compile_filter(spec).matches(md)
    assert result == ref_match(spec, md)
    cols = MetadataColumns()
    cols.set(np.array([0]), [md])
    assert cols.evaluate(compile_filter(spec), 1).tolist() == [result]
    return result


def test_eq_ne_use_the_string_form() -> None:
    assert m(leaf({"$eq": 30}), {"f": "30"})
    assert not m(leaf({"$eq": 30}), {"f": "30.0"})
    assert m(leaf({"$eq": 30.0}), {"f": "30.0"})
    assert m(leaf({"$eq": True}), {"f": "true"})
    assert not m(leaf({"$eq": True}), {"f": "True"})
    assert m(leaf({"$eq": 1.5}), {"f": "1.5"})
    assert m(leaf({"$eq": 1e16}), {"f": "1e+16"})
    assert m(leaf({"$ne": "x"}), {"f": "y"})
    assert not m(leaf({"$ne": "x"}), {"f": "x"})
    assert not m(leaf({"$ne": "x"}), {"g": "y"})  # missing field fails $ne
    assert not m(leaf({"$ne": "x"}), None)


def test_numeric_subclasses_convert_like_plain_numbers() -> None:
    # repr(np.float64(1.5)) is "np.float64(1.5)"; the filter must still see 1.5.
    assert compile_filter(leaf({"$eq": np.float64(1.5)})).matches({"f": "1.5"})
    assert compile_filter(leaf({"$in": [np.float64(2.0)]})).matches({"f": "2.0"})


def test_range_numeric_when_both_sides_are_numbers() -> None:
    assert m(leaf({"$lt": "10"}), {"f": "9.5"})  # "9.5" < "10" numerically
    assert m(leaf({"$gt": 9}), {"f": "10"})
    assert m(leaf({"$gte": "1e1"}), {"f": "10"})
    assert m(leaf({"$lte": 10}), {"f": "10.0"})
    assert not m(leaf({"$gt": "-0"}), {"f": "0"})
    assert m(leaf({"$gte": 5, "$lt": 10}), {"f": "7"})
    assert not m(leaf({"$gte": 5, "$lt": 10}), {"f": "10"})


def test_range_falls_back_to_code_points() -> None:
    assert m(leaf({"$gt": "a"}), {"f": "b"})
    assert not m(leaf({"$gt": "a"}), {"f": "B"})  # "B" (66) < "a" (97)
    assert m(leaf({"$gt": 10}), {"f": "abc"})  # "abc" > "10" as strings
    assert m(leaf({"$lt": "abc"}), {"f": "10"})
    assert m(leaf({"$lt": "9"}), {"f": "10x"})  # "10x" is not a number: "1" < "9"
    assert m(leaf({"$gt": "nan"}), {"f": "x"})  # "nan" is not a number
    assert m(leaf({"$gte": "2024-01-05"}), {"f": "2024-02-01"})
    assert m(leaf({"$lt": "é"}), {"f": "z"})


def test_in_nin() -> None:
    assert m(leaf({"$in": ["a", 30, True]}), {"f": "30"})
    assert m(leaf({"$in": ["a", 30, True]}), {"f": "true"})
    assert not m(leaf({"$in": ["a", 30]}), {"f": "30.0"})
    assert not m(leaf({"$in": []}), {"f": "x"})
    assert m(leaf({"$nin": []}), {"f": "x"})
    assert not m(leaf({"$nin": []}), {"g": "x"})
    assert not m(leaf({"$nin": ["x"]}), {"f": "x"})
    assert m(leaf({"$nin": ["x"]}), {"f": "y"})


def test_near_example() -> None:
    here = {"loc": "40.7484,-73.9857"}
    assert m(leaf({"$near": "40.7580,-73.9855,2000"}, "loc"), here)
    assert not m(leaf({"$near": "40.7580,-73.9855,500"}, "loc"), here)
    d = haversine_m(40.7580, -73.9855, 40.7484, -73.9857)
    assert 1060 < d < 1075
    assert m(leaf({"$near": "40.7580, -73.9855, 1100"}, "loc"), {"loc": " 40.7484 , -73.9857"})
    assert m(leaf({"$near": "0,0,0"}, "loc"), {"loc": "0,0"})
    for bad in ["a", "40.7484", "40.7484,-73.9857,5", "", "nan,1", "1,inf"]:
        assert not m(leaf({"$near": "40.7580,-73.9855,1e7"}, "loc"), {"loc": bad})


def test_radius_constant() -> None:
    # A quarter meridian is (pi/2) * R on the sphere.
    assert haversine_m(0, 0, 90, 0) == pytest.approx(math.pi / 2 * EARTH_RADIUS_M)
    assert EARTH_RADIUS_M == 6371008.8


def test_logic() -> None:
    assert m({"$and": []}, {"f": "x"})
    assert m({"$and": []}, None)
    assert not m({"$or": []}, {"f": "x"})
    both = {"$and": [leaf({"$eq": "a"}, "x"), leaf({"$eq": "b"}, "y")]}
    assert m(both, {"x": "a", "y": "b"})
    assert not m(both, {"x": "a", "y": "c"})
    either = {"$or": [leaf({"$eq": "a"}, "x"), {"$and": [leaf({"$gt": 5}, "n"), both]}]}
    assert m(either, {"x": "a"})
    assert m(either, {"x": "a", "y": "b", "n": "6"})
    assert not m(either, {"x": "q", "y": "b", "n": "6"})
    assert compile_filter(either).fields == frozenset({"x", "y", "n"})


def test_deep_nesting_beyond_the_recursion_limit() -> None:
    spec: dict[str, Any] = leaf({"$eq": "v"})
    for i in range(5000):
        spec = {"$and" if i % 2 else "$or": [spec]}
    flt = compile_filter(spec)
    assert flt.matches({"f": "v"})
    assert not flt.matches({"f": "w"})
    cols = MetadataColumns()
    cols.set(np.arange(3), [{"f": "v"}, {"f": "w"}, None])
    assert cols.evaluate(flt, 3).tolist() == [True, False, False]
    bad: Any = {"$or": [5]}
    for _ in range(5000):
        bad = {"$and": [bad]}
    with pytest.raises(InvalidArgumentError, match=NOT_DICT):
        compile_filter(bad)


def test_filter_is_immutable() -> None:
    flt = compile_filter(leaf({"$eq": 1}))
    with pytest.raises(AttributeError):
        setattr(flt, "_root", None)  # noqa: B010
    assert "f" in repr(flt)


# --------------------------------------------------------------------------------------------
# parse_decimal


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("10", 10.0),
        ("-9.5", -9.5),
        ("+2", 2.0),
        ("1e3", 1000.0),
        ("1E-2", 0.01),
        (".5", 0.5),
        ("5.", 5.0),
        ("007", 7.0),
        ("-0", 0.0),
        ("1e-999", 0.0),
        ("nan", None),
        ("NaN", None),
        ("inf", None),
        ("-Infinity", None),
        ("1e999", None),
        ("", None),
        (" 1", None),
        ("1 ", None),
        ("1_000", None),
        ("0x10", None),
        ("١٢", None),
        ("1e", None),
        (".", None),
        ("e5", None),
        ("1.2.3", None),
        ("--1", None),
    ],
)
def test_parse_decimal_table(text: str, value: float | None) -> None:
    assert parse_decimal(text) == value


@given(st.text(alphabet="0123456789+-.eE_ \t\u0661infatyINF", max_size=8))
def test_parse_decimal_matches_the_grammar(text: str) -> None:
    assert parse_decimal(text) == ref_decimal(text)


@settings(max_examples=50)
@given(st.from_regex(DECIMAL, fullmatch=True))
def test_parse_decimal_accepts_the_grammar(text: str) -> None:
    x = float(text)
    assert parse_decimal(text) == (x if math.isfinite(x) else None)


# --------------------------------------------------------------------------------------------
# Random filters against the reference

FIELDS = ["a", "b", "c", "loc"]
POOL = [
    "10", "9.5", "100", "-3", "0", "-0", "1e3", "1000", "010", "1.0", "30", "30.0", "nan",
    "inf", " 1", "abc", "ABC", "b", "", "true", "a\x00", "é", "z",
    "40.7484,-73.9857", "40.7580,-73.9855", "0,0", "bad,1", "0, 0", "89.9,179.9", "95,10",
    "40.75,-400", "1e300,1", "-90,180",
]  # fmt: skip
values = st.one_of(st.sampled_from(POOL), st.text(max_size=4))
operands = st.one_of(
    st.sampled_from(POOL),
    st.text(max_size=3),
    st.integers(-20, 1100),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.booleans(),
)
near_operands = st.builds(
    lambda lat, lng, r: f"{lat},{lng},{r}",
    st.sampled_from(["40.7580", "0", "-89.5", "0.001", "95"]),
    st.sampled_from(["-73.9855", "0", "179.99", "-200"]),
    st.sampled_from(["0", "500", "2000", "1e7", "123.5", "2.1e7"]),
)
# Any combination of operators in one condition (all must hold).
conditions: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {},
    optional={
        **{op: operands for op in ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")},
        "$in": st.lists(operands, max_size=4),
        "$nin": st.lists(operands, max_size=4),
        "$near": near_operands,
    },
).filter(bool)
leaves = st.builds(leaf, conditions, st.sampled_from(FIELDS))
filter_specs = st.recursive(
    leaves,
    lambda kids: (
        st.builds(lambda k: {"$and": k}, st.lists(kids, max_size=3))
        | st.builds(lambda k: {"$or": k}, st.lists(kids, max_size=3))
    ),
    max_leaves=8,
)
metadatas = st.none() | st.dictionaries(st.sampled_from(FIELDS), values, max_size=4)


@settings(max_examples=300, deadline=None)
@given(filter_specs, st.lists(metadatas, min_size=1, max_size=6))
def test_random_filters_match_reference(spec: dict[str, Any], mds: list[Any]) -> None:
    flt = compile_filter(spec)
    expected = [ref_match(spec, md) for md in mds]
    assert [flt.matches(md) for md in mds] == expected
    cols = MetadataColumns()
    cols.set(np.arange(len(mds)), mds)
    assert cols.evaluate(flt, len(mds) + 2).tolist() == [*expected, False, False]


# --------------------------------------------------------------------------------------------
# MetadataColumns against matches, through set/remove/remap


@contextlib.contextmanager
def thresholds(mode: str) -> Iterator[None]:
    """`dense`: every field stored densely and string ranks always used (small data)."""
    saved = (
        filters_columns._DENSE_MIN,
        filters_columns._DENSE_FRACTION,
        filters_columns._SMALL_STRING_SET,
    )
    if mode == "dense":
        (
            filters_columns._DENSE_MIN,
            filters_columns._DENSE_FRACTION,
            filters_columns._SMALL_STRING_SET,
        ) = 1, 10**9, 0
    try:
        yield
    finally:
        (
            filters_columns._DENSE_MIN,
            filters_columns._DENSE_FRACTION,
            filters_columns._SMALL_STRING_SET,
        ) = saved


rows_st = st.lists(st.integers(0, 12), max_size=8)
ops = st.one_of(
    st.tuples(st.just("set"), rows_st.flatmap(lambda r: st.tuples(
        st.just(r), st.lists(metadatas, min_size=len(r), max_size=len(r))))),
    st.tuples(st.just("remove"), rows_st),
    st.tuples(st.just("remap"), st.lists(st.booleans(), max_size=35)),
)  # fmt: skip


def check_columns(cols: MetadataColumns, model: dict[int, Any], n: int, specs: list[Any]) -> None:
    for spec in specs:
        flt = compile_filter(spec)
        expected = [r in model and flt.matches(model[r]) for r in range(n + 3)]
        assert cols.evaluate(flt, n + 3).tolist() == expected
        assert cols.evaluate(flt, max(0, n - 1)).tolist() == expected[: max(0, n - 1)]


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["default", "dense"]),
    st.lists(ops, max_size=10),
    st.lists(filter_specs, min_size=1, max_size=3),
)
def test_columns_equal_matches(mode: str, sequence: list[Any], specs: list[Any]) -> None:
    with thresholds(mode):
        cols = MetadataColumns()
        model: dict[int, Any] = {}
        n = 0
        for kind, arg in sequence:
            if kind == "set":
                rows, mds = arg
                cols.set(np.array(rows, dtype=np.int64), mds)
                model.update(zip(rows, mds, strict=True))
                n = max([n, *(r + 1 for r in rows)])
            elif kind == "remove":
                cols.remove(np.array(arg, dtype=np.int64))
                for r in arg:
                    model.pop(r, None)
            else:
                keep = arg[:n] + [True] * max(0, n - len(arg))
                old_to_new = np.full(n, -1, dtype=np.int64)
                kept = [r for r in range(n) if keep[r]]
                old_to_new[kept] = np.arange(len(kept))
                cols.remap(old_to_new)
                model = {int(old_to_new[r]): md for r, md in model.items() if keep[r]}
                n = len(kept)
            check_columns(cols, model, n, specs)
        restored = MetadataColumns.from_arrays(cols.to_arrays())
        check_columns(restored, model, n, specs)


def test_columns_many_rows_dense_and_sparse() -> None:
    rng = np.random.default_rng(7)
    words = ["alpha", "beta", "Gamma", "10", "9.5", "-2", "1e2", "x10", "", "delta"]
    n = 6000
    mds: list[dict[str, str] | None] = []
    for i in range(n):
        md = {
            "common": words[int(rng.integers(len(words)))],
            "price": f"{rng.normal() * 50:.2f}",
            "uid": f"u{int(rng.integers(10**6))}",
            f"rare{i % 400}": "y",  # 400 sparse fields of ~15 rows each
        }
        if i % 7 == 0:
            md["loc"] = f"{rng.uniform(40, 41):.4f},{rng.uniform(-74, -73):.4f}"
        mds.append(None if i % 97 == 0 else md)
    cols = MetadataColumns()
    for start in range(0, n, 1000):  # grows the vocabularies in batches
        cols.set(np.arange(start, start + 1000), mds[start : start + 1000])
    specs = [
        leaf({"$gt": "beta"}, "common"),
        leaf({"$lte": 10}, "common"),
        leaf({"$gte": -10, "$lt": "25"}, "price"),
        leaf({"$lt": "u5"}, "uid"),
        leaf({"$near": "40.5,-73.5,20000"}, "loc"),
        leaf({"$eq": "y"}, "rare3"),
        {"$or": [leaf({"$in": ["alpha", 10]}, "common"), leaf({"$nin": ["y"]}, "rare5")]},
    ]
    for spec in specs:
        flt = compile_filter(spec)
        assert cols.evaluate(flt, n).tolist() == [flt.matches(md) for md in mds]
    cols.remove(np.arange(0, n, 3))
    cols.set(np.arange(1, 200, 2), [{"uid": f"v{i}", "common": "new"} for i in range(100)])
    model = {r: mds[r] for r in range(n) if r % 3}
    model.update({r: {"uid": f"v{i}", "common": "new"} for i, r in enumerate(range(1, 200, 2))})
    specs += [leaf({"$eq": "new"}, "common"), leaf({"$gte": "v5"}, "uid")]
    for spec in specs:
        flt = compile_filter(spec)
        assert cols.evaluate(flt, n).tolist() == [
            r in model and flt.matches(model[r]) for r in range(n)
        ]
    kept = sorted(model)  # compaction: renumber the live rows 0..len-1 in order
    old_to_new = np.full(n, -1, dtype=np.int64)
    old_to_new[kept] = np.arange(len(kept))
    cols.remap(old_to_new)
    for spec in specs:
        flt = compile_filter(spec)
        assert cols.evaluate(flt, len(kept)).tolist() == [flt.matches(model[r]) for r in kept]


@pytest.mark.parametrize("mode", ["default", "dense"])
def test_string_ranks_stay_right_as_values_arrive(mode: str) -> None:
    # Many distinct non-numeric values, arriving a few at a time between range queries, so the
    # code-point ranks are built once and then merged incrementally.
    rng = np.random.default_rng(3)
    letters = list("abcXYZ09é")

    def word() -> str:
        return "".join(rng.choice(letters, size=int(rng.integers(1, 4))).tolist())

    with thresholds(mode):
        cols = MetadataColumns()
        model: list[dict[str, str]] = [{"w": word()} for _ in range(120)]
        cols.set(np.arange(120), model)
        for _ in range(30):
            k = int(rng.integers(1, 6))
            fresh = [{"w": word()} for _ in range(k)]
            cols.set(np.arange(len(model), len(model) + k), fresh)
            model.extend(fresh)
            probe = model[int(rng.integers(len(model)))]["w"]  # a value that is present
            for text in (probe, word(), "9"):
                for op in ("$lt", "$lte", "$gt", "$gte"):
                    flt = compile_filter(leaf({op: text}, "w"))
                    got = cols.evaluate(flt, len(model)).tolist()
                    assert got == [flt.matches(md) for md in model], (op, text)


def test_set_validates_and_later_duplicate_wins() -> None:
    cols = MetadataColumns()
    with pytest.raises(InvalidArgumentError):
        cols.set(np.array([0, 1]), [{"f": "a"}])
    with pytest.raises(InvalidArgumentError):
        cols.set(np.array([-1]), [{"f": "a"}])
    cols.set(np.array([0, 0]), [{"f": "a"}, {"f": "b"}])
    assert cols.evaluate(compile_filter(leaf({"$eq": "b"})), 1).tolist() == [True]
    cols.set(np.array([1]), [None])
    with pytest.raises(InvalidArgumentError):
        cols.remap(np.array([1, 0]))


def test_from_arrays_rejects_damage() -> None:
    cols = MetadataColumns()
    cols.set(np.arange(2), [{"f": "a"}, {"f": "b", "g": "é\ud800"}])
    arrays = cols.to_arrays()
    assert all(a.dtype != object for a in arrays.values())
    restored = MetadataColumns.from_arrays(arrays)
    flt = compile_filter(leaf({"$eq": "é\ud800"}, "g"))
    assert restored.evaluate(flt, 2).tolist() == [False, True]
    for key, bad in [
        ("version", np.array([99])),
        ("col0.codes", np.array([5, 0], np.int32)),
        ("fields.offsets", np.array([0, 1, 99])),
        ("col0.rows", np.array([0, 7])),
    ]:
        with pytest.raises(MossError) as info:
            MetadataColumns.from_arrays({**arrays, key: bad})
        assert info.value.code == DESERIALIZATION
    missing = dict(arrays)
    del missing["alive"]
    with pytest.raises(MossError):
        MetadataColumns.from_arrays(missing)

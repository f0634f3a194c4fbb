"""Tests of moss.vectors.VectorIndex against a naive dict-of-vectors reference."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moss import vectors, vectors_exact, vectors_graph, vectors_tail
from moss.errors import DESERIALIZATION, InvalidArgumentError, MossError
from moss.vectors import VectorIndex

EMB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scifact" / "emb"


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    out: np.ndarray = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


class Ref:
    """The obvious implementation: a dict row -> vector, brute force in float64."""

    def __init__(self) -> None:
        self.rows: dict[int, np.ndarray] = {}

    def set(self, rows: np.ndarray, vecs: np.ndarray) -> None:
        for r, v in zip(rows.tolist(), vecs):
            self.rows[r] = v.astype(np.float32).copy()

    def remove(self, rows: np.ndarray) -> None:
        for r in rows.tolist():
            self.rows.pop(r, None)

    def remap(self, old_to_new: np.ndarray) -> None:
        self.rows = {int(old_to_new[r]): v for r, v in self.rows.items()}

    def score(self, q: np.ndarray, r: int) -> float:
        """The float64 inner product rounded once to float32 (exactly representable as float)."""
        dot = float(np.dot(self.rows[r].astype(np.float64), q.astype(np.float64)))
        return float(np.float32(dot))

    def topk(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        cand = [r for r in self.rows if allowed is None or (r < allowed.size and allowed[r])]
        ranked = sorted((-float(self.score(q, r)), r) for r in cand)[:k]
        return (
            np.array([r for _, r in ranked], dtype=np.int64),
            np.array([-s for s, _ in ranked], dtype=np.float32),
        )


def assert_same(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> None:
    assert got[0].dtype == np.int64 and got[1].dtype == np.float32
    assert got[0].tolist() == want[0].tolist()
    assert got[1].tolist() == want[1].tolist()


def recall(got: np.ndarray, want: np.ndarray) -> float:
    return len(np.intersect1d(got, want)) / max(1, len(want))


# ------------------------------------------------------------------------- exact (small sets)


def test_small_set_is_exact_for_every_k() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    vi, ref = VectorIndex(16), Ref()
    vi.set(np.arange(300), x)
    ref.set(np.arange(300), x)
    for _ in range(20):
        q = rng.standard_normal(16).astype(np.float32)
        for k in (1, 5, 50, 299, 300, 1000):
            assert_same(vi.search(q, k), ref.topk(q, k))
    assert len(vi) == 300 and vi.stats()["graph"] == 0


def test_identical_vectors_tie_exactly_and_order_by_row() -> None:
    v = unit_vectors(1, 384, seed=3)[0]
    vi = VectorIndex(384)
    vi.set(np.arange(2000), np.tile(v, (2000, 1)))
    q = unit_vectors(1, 384, seed=4)[0]
    rows, scores = vi.search(q, 50)
    assert rows.tolist() == list(range(50))
    assert len(set(scores.tolist())) == 1
    assert vi.dot(q, np.array([7, 1999])).tolist() == [scores[0], scores[0]]


def test_zero_query_returns_first_rows_with_zero_scores() -> None:
    vi = VectorIndex(4)
    vi.set(np.arange(10), np.ones((10, 4), dtype=np.float32))
    vi.remove(np.array([0, 2]))
    rows, scores = vi.search(np.zeros(4, dtype=np.float32), 3)
    assert rows.tolist() == [1, 3, 4] and scores.tolist() == [0.0, 0.0, 0.0]


OPS = st.lists(
    st.tuples(
        st.sampled_from(["add", "overwrite", "remove", "remap", "search"]),
        st.integers(0, 2**31 - 1),
    ),
    min_size=1,
    max_size=30,
)


def run_ops(vi: VectorIndex, ops: list[tuple[str, int]], dim: int, exact: bool) -> None:
    """Apply random operations to ``vi`` and the reference; compare every search."""
    ref = Ref()
    n = 0  # engine row capacity: new rows are appended
    for op, seed in ops:
        rng = np.random.default_rng(seed)
        live = np.array(sorted(ref.rows), dtype=np.int64)
        if op == "add":
            m = int(rng.integers(1, 12))
            rows = np.arange(n, n + m)
            vecs = rng.standard_normal((m, dim)).astype(np.float32)
            if m > 1 and rng.random() < 0.3:  # a row repeated in one batch: the last one wins
                rows[-1] = rows[0]
            vi.set(rows, vecs)
            ref.set(rows, vecs)
            n = max(n, int(rows.max()) + 1)
        elif op == "overwrite" and live.size:
            rows = rng.choice(live, size=min(live.size, int(rng.integers(1, 5))), replace=False)
            vecs = (rng.standard_normal((rows.size, dim)) * rng.uniform(0.1, 3)).astype(np.float32)
            vi.set(rows, vecs)
            ref.set(rows, vecs)
        elif op == "remove" and n:
            rows = rng.integers(0, n + 2, size=int(rng.integers(1, 6)))  # unknown rows ignored
            vi.remove(rows)
            ref.remove(rows)
        elif op == "remap":
            old_to_new = np.full(n, -1, dtype=np.int64)
            old_to_new[live] = np.arange(live.size)
            vi.remap(old_to_new)
            ref.remap(old_to_new)
            n = live.size
        elif op == "search":
            for _ in range(3):
                q = rng.standard_normal(dim).astype(np.float32)
                k = int(rng.integers(1, 4 if not exact else 30))
                selectivity = rng.choice([0.0, 0.3, 0.9, 1.0])  # 0.0: no mask at all
                allowed = rng.random(int(rng.integers(0, n + 3))) < selectivity
                got = vi.search(q, k, allowed if selectivity else None)
                want = ref.topk(q, k if exact else 10**9, allowed if selectivity else None)
                if exact:
                    assert_same(got, want)
                else:  # graph path: valid, exactly scored, sorted; recall is checked elsewhere
                    valid = dict(zip(want[0].tolist(), want[1].tolist()))
                    assert all(valid[r] == s for r, s in zip(got[0].tolist(), got[1].tolist()))
                    assert len(got[0]) == min(k, len(valid))
                    assert got[0].tolist() == [r for _, r in sorted(zip(-got[1], got[0]))]
        assert len(vi) == len(ref.rows)
        st_ = vi.stats()
        assert st_["graph"] + st_["tail"] == len(ref.rows)
    if ref.rows:
        live = np.array(sorted(ref.rows), dtype=np.int64)
        assert vi.get(live).tolist() == np.stack([ref.rows[r] for r in live.tolist()]).tolist()
        norms = np.linalg.norm(np.stack([ref.rows[r] for r in live.tolist()]), axis=1)
        np.testing.assert_allclose(vi.norms(live), norms, rtol=1e-6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_operation_sequences_match_brute_force(ops: list[tuple[str, int]]) -> None:
    run_ops(VectorIndex(8), ops, 8, exact=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_operation_sequences_with_a_graph_stay_consistent(ops: list[tuple[str, int]]) -> None:
    # Tiny thresholds: a graph from the first rows on, a tail of at most 8 rows,
    # and filtered queries that go to the graph whenever they can.
    vi = VectorIndex(8, exact_max_rows=0, tail_max_rows=8, expansion_search=64)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vectors, "_FILTER_EXACT_MIN", 0)
        mp.setattr(vectors, "_ROWS_PER_EF", 0)
        run_ops(vi, ops, 8, exact=False)
    vi.flush()
    assert vi.stats()["tail"] == 0


# ------------------------------------------------------------------------- graph path


@pytest.fixture(scope="module")
def scifact() -> tuple[np.ndarray, np.ndarray]:
    if not (EMB / "corpus.npy").exists():
        pytest.skip("SciFact embeddings not available")
    return np.load(EMB / "corpus.npy"), np.load(EMB / "queries.npy")


@pytest.fixture(scope="module")
def scifact_index(scifact: tuple[np.ndarray, np.ndarray]) -> VectorIndex:
    corpus, _ = scifact
    # Force the ANN path; build through flush() (single-threaded chunks, so deterministic).
    vi = VectorIndex(corpus.shape[1], exact_max_rows=100, tail_max_rows=10**6)
    vi.set(np.arange(len(corpus)), corpus)
    assert vi.stats()["graph"] == 0
    vi.flush()
    return vi


def exact_top(x: np.ndarray, q: np.ndarray, k: int, rows: np.ndarray | None = None) -> np.ndarray:
    rows = np.arange(len(x)) if rows is None else rows
    s = x[rows].astype(np.float64) @ q.astype(np.float64)
    return rows[np.lexsort((rows, -s))[:k]]


@pytest.mark.scifact
def test_ann_recall_on_scifact(
    scifact: tuple[np.ndarray, np.ndarray], scifact_index: VectorIndex
) -> None:
    corpus, queries = scifact
    vi = scifact_index
    assert vi.stats()["graph"] == len(corpus) and vi.stats()["tail"] == 0
    got = [vi.search(q, 10) for q in queries]
    scores = queries.astype(np.float64) @ corpus.astype(np.float64).T
    truth = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    r10 = np.mean([recall(g[0], t) for g, t in zip(got, truth)])
    assert r10 >= 0.99
    for (rows, scores), q in zip(got[:50], queries[:50]):  # scores are the exact products
        assert scores.tolist() == vi.dot(q, rows).tolist()
        assert np.all(np.diff(scores) <= 0)


@pytest.mark.scifact
def test_filtered_search_on_scifact(
    scifact: tuple[np.ndarray, np.ndarray], scifact_index: VectorIndex
) -> None:
    corpus, queries = scifact
    rng = np.random.default_rng(5)
    scores = queries[:150].astype(np.float64) @ corpus.astype(np.float64).T
    for selectivity, min_recall in ((0.005, 1.0), (0.05, 1.0), (0.5, 0.98), (0.9, 0.98)):
        allowed = rng.random(len(corpus)) < selectivity
        ok = np.flatnonzero(allowed)
        rs = []
        for q, s in zip(queries[:150], scores):
            rows, _ = scifact_index.search(q, 10, allowed)
            assert allowed[rows].all()
            rs.append(recall(rows, ok[np.argsort(-s[ok], kind="stable")[:10]]))
        assert np.mean(rs) >= min_recall, selectivity


@pytest.mark.scifact
def test_recall_survives_overwrites_and_deletes(scifact: tuple[np.ndarray, np.ndarray]) -> None:
    corpus, queries = scifact
    n = len(corpus)
    vi = VectorIndex(corpus.shape[1], exact_max_rows=100, tail_max_rows=10**6)
    vi.set(np.arange(n), corpus)
    vi.flush()
    rng = np.random.default_rng(6)
    rows = rng.permutation(n)
    over, gone = rows[: 3 * n // 10], rows[3 * n // 10 : 4 * n // 10]
    new = corpus.copy()
    new[over] = 0.9 * corpus[rng.integers(0, n, over.size)] + 0.1 * corpus[over]
    vi.set(over, new[over])
    vi.remove(gone)
    vi.flush()
    assert vi.stats()["graph"] == n - gone.size and vi.stats()["tail"] == 0
    keep = np.setdiff1d(np.arange(n), gone)
    scores = queries[:400].astype(np.float64) @ new[keep].astype(np.float64).T
    truth = keep[np.argsort(-scores, axis=1, kind="stable")[:, :10]]
    got = [vi.search(q, 10)[0] for q in queries[:400]]
    assert np.mean([recall(g, t) for g, t in zip(got, truth)]) >= 0.985


def test_small_allowed_set_is_exact_on_the_graph_path() -> None:
    x = unit_vectors(3000, 32, seed=1)
    vi, ref = VectorIndex(32, exact_max_rows=200), Ref()
    vi.set(np.arange(3000), x)
    ref.set(np.arange(3000), x)
    vi.remove(np.arange(0, 3000, 7))
    ref.remove(np.arange(0, 3000, 7))
    assert vi.stats()["graph"] > 0
    rng = np.random.default_rng(2)
    for i in range(30):
        allowed = rng.random(2900) < 0.02  # shorter than the index: rows past the end excluded
        q = unit_vectors(1, 32, seed=100 + i)[0]
        got = vi.search(q, 10, allowed)
        assert_same(got, ref.topk(q, 10, allowed))
        assert allowed[got[0]].all() and np.all(got[0] % 7 != 0)


def test_unfiltered_graph_search_never_returns_removed_rows() -> None:
    x = unit_vectors(2000, 16, seed=6)
    vi = VectorIndex(16, exact_max_rows=100)
    vi.set(np.arange(2000), x)
    gone = np.arange(0, 2000, 3)
    vi.remove(gone)
    for q in unit_vectors(50, 16, seed=7):
        rows, _ = vi.search(q, 20)
        assert len(rows) == 20 and not np.isin(rows, gone).any()


def test_rows_removed_from_a_viewed_graph_are_never_returned() -> None:
    x = unit_vectors(2000, 16, seed=6)
    vi = VectorIndex(16, exact_max_rows=100)
    vi.set(np.arange(2000), x)
    vi.flush()
    arrays = {k: np.array(v) for k, v in vi.to_arrays().items()}
    viewed = VectorIndex.from_arrays(arrays, exact_max_rows=100)
    assert viewed._graph is not None and viewed._graph.view_buf is not None
    gone = np.arange(0, 2000, 7)
    viewed.remove(gone)
    assert viewed._graph.view_buf is not None and viewed._graph.pending  # still a view
    exact_first = 0
    for q in unit_vectors(50, 16, seed=7):
        rows, _ = viewed.search(q, 20)
        assert len(rows) == 20 and (rows >= 0).all() and not np.isin(rows, gone).any()
        exact_first += rows[0] == exact_top(x, q, 1, np.setdiff1d(np.arange(2000), gone))[0]
    # An approximate top 1: the graph is built on every core, not deterministically; in 30
    # builds, 2 (compiled walk) and 3 (usearch's search) missed one query's exact first row.
    assert exact_first >= 47


def test_non_unit_vectors_rank_by_inner_product_on_the_graph() -> None:
    rng = np.random.default_rng(8)
    x = unit_vectors(4000, 64, seed=9) * rng.uniform(0.2, 3.0, (4000, 1)).astype(np.float32)
    q = unit_vectors(1, 64, seed=10)[0]
    # A long vector at a poor angle: top by inner product, nowhere near the top by cosine.
    d = unit_vectors(1, 64, seed=11)[0]
    d -= np.dot(d, q) * q
    d /= np.linalg.norm(d)
    x[1234] = 30.0 * (0.1 * q + np.sqrt(1 - 0.1**2) * d)
    vi = VectorIndex(64, exact_max_rows=100)
    vi.set(np.arange(4000), x)
    vi.flush()
    assert vi.stats()["tail"] == 0
    cos = (x @ q) / np.linalg.norm(x, axis=1)
    assert (cos > cos[1234]).sum() > 100
    rows, scores = vi.search(q, 5)
    assert rows[0] == 1234
    np.testing.assert_allclose(scores[0], float(x[1234] @ q), rtol=1e-6)
    qs = unit_vectors(100, 64, seed=12)
    r = np.mean([recall(vi.search(qq, 10)[0], exact_top(x, qq, 10)) for qq in qs])
    assert r >= 0.95
    np.testing.assert_allclose(vi.norms(np.array([1234])), [30.0], rtol=1e-6)


def test_extreme_magnitudes_raise_no_warnings() -> None:
    # pytest turns warnings into errors: quantising must not overflow or divide by zero.
    x = unit_vectors(600, 8, seed=26)
    vi = VectorIndex(8, exact_max_rows=100)
    vi.set(np.arange(600), x * np.float32(1e-36))  # the int8 scale would not fit a float32
    vi.flush()
    vi.set(np.array([600]), x[:1] * np.float32(1e30))  # far beyond the scale of the graph
    assert vi.search(x[0], 3)[0][0] == 600  # still in the exact tail
    vi.flush()
    for q in (x[0], x[0] * np.float32(1e-40)):
        rows, scores = vi.search(q, 3)
        assert len(rows) == 3 and scores.tolist() == vi.dot(q, rows).tolist()
    with pytest.raises(InvalidArgumentError):
        vi.set(np.array([601]), np.full((1, 8), 1e300))  # overflows float32
    with pytest.raises(InvalidArgumentError):
        vi.search(np.full(8, -1e300), 1)


def test_one_row_add_goes_to_the_exact_tail() -> None:
    x = unit_vectors(3000, 32, seed=13)
    vi = VectorIndex(32, exact_max_rows=500, tail_max_rows=50)
    vi.set(np.arange(3000), x)  # a bulk set builds the graph over all its rows itself
    assert vi.stats()["graph"] == 3000 and vi.stats()["tail"] == 0
    graph = vi.stats()["graph"]
    q = unit_vectors(1, 32, seed=14)[0]
    vi.set(np.array([3000]), q[None, :] * 2)  # the best match by far, not yet in the graph
    assert vi.stats()["graph"] == graph and vi.stats()["tail"] == 1
    assert vi.search(q, 1)[0].tolist() == [3000]
    vi.set(np.array([5]), -q[None, :])  # overwrite a graph row: leaves the graph
    assert vi.stats()["graph"] == graph - 1 and vi.stats()["tail"] == 2
    assert 5 not in vi.search(q, 100)[0].tolist()
    assert vi.search(-q, 1)[0].tolist() == [5]
    for i in range(120):  # without flush() the tail is folded once it passes 50 rows,
        before = vi.stats()["graph"]  # 32 rows at a time
        vi.set(np.array([3001 + i]), x[i : i + 1])
        assert vi.stats()["tail"] <= 50 and vi.stats()["graph"] - before in (0, 32)
    vi.flush()
    assert (vi.stats()["live"], vi.stats()["graph"], vi.stats()["tail"]) == (3121, 3121, 0)


def test_flush_in_a_background_thread_while_searching() -> None:
    x = unit_vectors(3000, 32, seed=15)
    vi = VectorIndex(32, exact_max_rows=500, tail_max_rows=10**6)
    vi.set(np.arange(1000), x[:1000])
    vi.flush()
    vi.set(np.arange(1000, 3000), x[1000:])
    assert vi.stats()["tail"] == 2000
    t = threading.Thread(target=vi.flush)
    t.start()
    qs = unit_vectors(200, 32, seed=16)
    i = 0
    while t.is_alive() or i < 20:
        q = qs[i % 200]
        rows, _ = vi.search(q, 10)
        assert recall(rows, exact_top(x, q, 10)) >= 0.7
        assert len(set(rows.tolist())) == 10
        i += 1
    t.join()
    assert vi.stats()["tail"] == 0 and vi.stats()["graph"] == 3000


# ------------------------------------------------------------------------- persistence


def build_mixed_index() -> tuple[VectorIndex, Ref]:
    """A graph with removals, a contiguous tail and overwritten (scattered) tail rows."""
    x = unit_vectors(2500, 24, seed=17)
    vi, ref = VectorIndex(24, exact_max_rows=300, tail_max_rows=10**6), Ref()
    vi.set(np.arange(2000), x[:2000])
    vi.flush()
    vi.set(np.arange(2000, 2300), x[2000:2300])
    vi.set(np.array([10, 20, 30]), x[2300:2303])
    vi.remove(np.array([11, 2100, 20]))
    for rows, vecs in (
        (np.arange(2000), x[:2000]),
        (np.arange(2000, 2300), x[2000:2300]),
        (np.array([10, 20, 30]), x[2300:2303]),
    ):
        ref.set(rows, vecs)
    ref.remove(np.array([11, 2100, 20]))
    assert vi.stats()["tail"] == 301 and vi.stats()["graph"] == 1996
    return vi, ref


def test_round_trip_through_read_only_memory_maps(tmp_path: Path) -> None:
    vi, ref = build_mixed_index()
    arrays = vi.to_arrays()
    assert set(arrays) == {"matrix", "live", "norms", "meta", "graph", "graph_key_row"}
    assert arrays["matrix"].dtype == np.dtype("<f4") and arrays["graph"].dtype == np.uint8
    for key, arr in arrays.items():
        np.save(tmp_path / f"{key}.npy", arr)
    loaded = {k: np.load(tmp_path / f"{k}.npy", mmap_mode="r") for k in arrays}
    assert not loaded["matrix"].flags.writeable
    vi2 = VectorIndex.from_arrays(loaded, exact_max_rows=300, tail_max_rows=400)
    assert vi2.stats() == vi.stats()
    assert np.shares_memory(vi2.to_arrays()["matrix"], loaded["matrix"])  # not copied
    for q in unit_vectors(40, 24, seed=18):
        for allowed in (None, np.arange(2400) % 3 == 0):
            assert_same(vi2.search(q, 10, allowed), vi.search(q, 10, allowed))
        rows = vi.search(q, 5)[0]
        assert vi2.dot(q, rows).tolist() == vi.dot(q, rows).tolist()
    # Changes after loading copy on write and leave the mapped files alone.
    before = np.array(loaded["matrix"][:40])
    vi2.remove(np.array([0, 1, 2205]))
    vi2.set(np.array([5, 2400]), unit_vectors(2, 24, seed=19))
    vi2.flush()
    ref.remove(np.array([0, 1, 2205]))
    ref.set(np.array([5, 2400]), unit_vectors(2, 24, seed=19))
    assert np.array_equal(np.array(loaded["matrix"][:40]), before)
    assert vi2.stats()["tail"] == 0 and len(vi2) == len(ref.rows)
    q = unit_vectors(2, 24, seed=19)[1]
    assert vi2.search(q, 1)[0].tolist() == [2400]
    for q in unit_vectors(30, 24, seed=20):
        rows, _ = vi2.search(q, 10)
        assert recall(rows, ref.topk(q, 10)[0]) >= 0.8 and all(r in ref.rows for r in rows)
    # And the loaded index saves and loads again.
    vi3 = VectorIndex.from_arrays({k: np.array(v) for k, v in vi2.to_arrays().items()})
    q = unit_vectors(1, 24, seed=21)[0]
    assert_same(vi3.search(q, 10), vi2.search(q, 10))


def test_from_matrix_only_and_damaged_arrays() -> None:
    x = unit_vectors(50, 8, seed=22)
    ro = x.copy()
    ro.flags.writeable = False
    vi = VectorIndex.from_arrays({"matrix": ro})
    assert len(vi) == 50 and vi.stats()["graph"] == 0
    ref = Ref()
    ref.set(np.arange(50), x)
    q = unit_vectors(1, 8, seed=23)[0]
    assert_same(vi.search(q, 7), ref.topk(q, 7))
    vi.set(np.array([3]), x[4:5])  # copy on write
    assert np.array_equal(ro, x)
    good = VectorIndex(8).to_arrays() | {"matrix": x}
    for bad in (
        {},
        {"matrix": np.zeros(5, dtype=np.float32)},
        good | {"meta": np.array([99.0, 8, 0, 0, 16, 200])},
        good | {"meta": np.array([1.0, 9, 0, 0, 16, 200])},
        good | {"live": np.ones(3, dtype=np.uint8)},
    ):
        with pytest.raises(MossError) as e:
            VectorIndex.from_arrays(bad)
        assert e.value.code == DESERIALIZATION
    built = VectorIndex(8, exact_max_rows=10)
    built.set(np.arange(50), x)
    built.flush()
    good = built.to_arrays()
    assert "graph" in good
    for bad in (
        good | {"graph": good["graph"][: good["graph"].size // 2]},
        good | {"graph_key_row": good["graph_key_row"][:40]},
        good | {"live": np.zeros(50, dtype=np.uint8)},  # the graph refers to dead rows
    ):
        with pytest.raises(MossError) as e:
            VectorIndex.from_arrays(bad)
        assert e.value.code == DESERIALIZATION


# ------------------------------------------------------------------------- input errors


def test_dimension_mismatch_raises() -> None:
    vi = VectorIndex(4)
    with pytest.raises(InvalidArgumentError, match="expected 4 but received 5"):
        vi.set(np.array([0]), np.zeros((1, 5), dtype=np.float32))
    vi.set(np.array([0]), np.ones((1, 4), dtype=np.float32))
    with pytest.raises(InvalidArgumentError, match="expected 4 but received 3"):
        vi.search(np.ones(3, dtype=np.float32), 1)
    with pytest.raises(InvalidArgumentError, match="expected 4 but received 3"):
        vi.dot(np.ones(3, dtype=np.float32), np.array([0]))


@pytest.mark.parametrize(
    "call",
    [
        lambda vi: vi.set(np.array([0]), np.array([[np.nan, 0, 0, 0]], dtype=np.float32)),
        lambda vi: vi.set(np.array([-1]), np.ones((1, 4), dtype=np.float32)),
        lambda vi: vi.set(np.array([0, 1]), np.ones((1, 4), dtype=np.float32)),
        lambda vi: vi.set(np.array([0.5]), np.ones((1, 4), dtype=np.float32)),
        lambda vi: vi.search(np.array([np.inf, 0, 0, 0], dtype=np.float32), 1),
        lambda vi: vi.search(np.ones(4, dtype=np.float32), -1),
        lambda vi: vi.search([1.0, "x", 0.0, 0.0], 1),
        lambda vi: vi.set(np.array([0]), [[1.0, 2.0], [3.0]]),
        lambda vi: vi.search(np.ones(4, dtype=np.float32), 1, np.ones(3, dtype=np.int64)),
        lambda vi: vi.get(np.array([9])),
        lambda vi: vi.norms(np.array([1])),
        lambda vi: vi.remove(np.array([-2])),
        lambda vi: vi.remap(np.array([1, 0, 0])),
        lambda vi: vi.remap(np.array([0])),
        lambda vi: VectorIndex(0),
    ],
)
def test_invalid_input_raises(call) -> None:  # type: ignore[no-untyped-def]
    vi = VectorIndex(4)
    vi.set(np.arange(3), np.eye(3, 4, dtype=np.float32))
    vi.remove(np.array([1]))
    vi.set(np.array([1]), np.ones((1, 4), dtype=np.float32))
    vi.remove(np.array([1]))
    with pytest.raises(InvalidArgumentError):
        call(vi)


def test_remap_compacts_and_keeps_order() -> None:
    x = unit_vectors(600, 8, seed=24)
    vi = VectorIndex(8, exact_max_rows=100, tail_max_rows=50)
    vi.set(np.arange(600), x)
    vi.set(np.array([600, 601]), x[:2])  # tail
    vi.remove(np.arange(0, 602, 2))
    old_to_new = np.full(602, -1)
    old_to_new[1::2] = np.arange(301)
    vi.remap(old_to_new)
    assert vi.stats()["rows"] == 301 and len(vi) == 301
    assert np.array_equal(vi.get(np.arange(300)), x[1::2])
    assert np.array_equal(vi.get(np.array([300])), x[1:2])
    for q in unit_vectors(20, 8, seed=25):
        rows, _ = vi.search(q, 5)
        want = exact_top(np.concatenate([x[1::2], x[1:2]]), q, 5)
        assert recall(rows, want) >= 0.8
    vi.remap(np.arange(301) * 2)  # gaps are allowed: the odd rows are simply dead
    assert vi.stats()["rows"] == 601 and len(vi) == 301
    assert np.array_equal(vi.get(np.array([0, 600])), np.stack([x[1], x[1]]))


# --------------------------------------------------------------- compiled query helpers

needs_kernels = pytest.mark.skipif(vectors._kernels is None, reason="moss._kernels is not built")


def without_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the numpy code instead of moss._kernels, in every part of the vector index."""
    for module in (vectors, vectors_exact, vectors_graph, vectors_tail):
        monkeypatch.setattr(module, "_kernels", None)


def _numpy_quantise(q: np.ndarray) -> np.ndarray:
    q64 = q.astype(np.float64)
    q64 *= 127.0 / float(np.abs(q64).max())
    out: np.ndarray = np.clip(np.rint(q64), -127, 127).astype(np.int8)
    return out


@needs_kernels
@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.floats(allow_nan=False, allow_infinity=False, width=32)
        | st.sampled_from([0.5, -0.5, 2.5]),
        min_size=1,
        max_size=40,
    )
)
def test_compiled_quantisation_is_numpys_bit_for_bit(values: list[float]) -> None:
    q = np.asarray(values, dtype=np.float32)
    if not q.any():
        return
    got = np.empty(q.size, dtype=np.int8)
    vectors._kernels.quantize_i8(q, got)
    np.testing.assert_array_equal(got, _numpy_quantise(q))


@needs_kernels
def test_compiled_query_checks() -> None:
    k = vectors._kernels
    assert k.query_state(np.array([0.0, -0.0], np.float32)) == 1
    assert k.query_state(np.array([0.0, 1e-45], np.float32)) == 2  # a subnormal is nonzero
    for bad in (np.nan, np.inf, -np.inf):
        assert k.query_state(np.array([1.0, bad], np.float32)) == 0
    with pytest.raises(ValueError, match="nonzero"):
        k.quantize_i8(np.zeros(3, np.float32), np.empty(3, np.int8))
    with pytest.raises(ValueError, match="length"):
        k.quantize_i8(np.ones(3, np.float32), np.empty(2, np.int8))


@needs_kernels
def test_compiled_dot_rows_is_the_rounded_float64_sum() -> None:
    rng = np.random.default_rng(5)
    mat = rng.standard_normal((50, 385)).astype(np.float32)  # 385: a remainder after the 8-blocks
    q = rng.standard_normal(385).astype(np.float32)
    rows = np.array([49, 0, 7, 7], dtype=np.int64)
    got = np.empty(4, np.float32)
    vectors._kernels.dot_rows(mat, 385, rows, q, got)
    exact = [math.fsum(float(a) * float(b) for a, b in zip(mat[r], q)) for r in rows]
    ref = np.asarray(exact, dtype=np.float64).astype(np.float32)
    assert np.all(np.abs(got - ref) <= np.spacing(np.abs(ref)))  # within one float32 ulp
    assert got[2] == got[3]
    # Small integers: every product and partial sum is exact, so the result must be too.
    imat = rng.integers(-50, 50, (10, 384)).astype(np.float32)
    iq = rng.integers(-50, 50, 384).astype(np.float32)
    out = np.empty(10, np.float32)
    vectors._kernels.dot_rows(imat, 384, np.arange(10, dtype=np.int64), iq, out)
    np.testing.assert_array_equal(out, (imat.astype(np.int64) @ iq.astype(np.int64)))
    with pytest.raises(ValueError, match="outside the matrix"):
        vectors._kernels.dot_rows(mat, 385, np.array([50], np.int64), q, np.empty(1, np.float32))
    with pytest.raises(ValueError, match="do not match"):
        vectors._kernels.dot_rows(mat, 385, rows, q[:10], got)


@needs_kernels
def test_search_gives_the_same_answers_without_the_compiled_helpers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = unit_vectors(6000, 48, seed=11)
    queries = unit_vectors(20, 48, seed=12)
    vi = VectorIndex(48)
    vi.set(np.arange(6000), x)  # past exact_max_rows: the graph path
    assert vi.stats()["graph"] > 0
    with_c = [vi.search(q, 10) for q in queries]
    zero = vi.search(np.zeros(48, np.float32), 3)
    without_kernels(monkeypatch)
    for q, (rows, scores) in zip(queries, with_c):
        r2, s2 = vi.search(q, 10)
        np.testing.assert_array_equal(rows, r2)
        np.testing.assert_array_equal(scores, s2)
    np.testing.assert_array_equal(vi.search(np.zeros(48, np.float32), 3)[0], zero[0])
    with pytest.raises(InvalidArgumentError, match="NaN"):
        vi.search(np.full(48, np.nan, np.float32), 3)


# ------------------------------------------------------------------ compiled graph walk


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors around 40 centres: neighbours that matter, as in real embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, dim))
    x = centres[rng.integers(0, 40, n)] + 0.6 * rng.standard_normal((n, dim))
    out: np.ndarray = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


def frozen_index(x: np.ndarray) -> tuple[VectorIndex, vectors_graph._Graph]:
    """An index over ``x`` with its graph built and frozen, and that graph."""
    vi = VectorIndex(x.shape[1], exact_max_rows=100, tail_max_rows=10**6)
    vi.set(np.arange(len(x)), x)
    vi.flush()
    g = vi._graph
    assert g is not None and g.view_buf is not None and g._walker() is not None
    return vi, g


def usearch_rows(g: vectors_graph._Graph, q: np.ndarray, count: int, ef: int) -> np.ndarray:
    """The same search through usearch's own walk over the same bytes."""
    walk, g._walk, g._walk_unreadable = g._walk, None, True
    try:
        return g.search(q, count, ef)
    finally:
        g._walk, g._walk_unreadable = walk, False


@needs_kernels
def test_compiled_walk_finds_what_usearch_finds() -> None:
    x = clustered(3000, 32, seed=1)
    _, g = frozen_index(x)
    same, overlap, rec_c, rec_u = 0, 0.0, 0.0, 0.0
    for q in clustered(200, 32, seed=2):
        c = g.search(q, 32, 40)
        u = usearch_rows(g, q, 32, 40)
        assert len(c) == len(u) == 32 and len(set(c.tolist())) == 32
        same += set(c.tolist()) == set(u.tolist())
        overlap += recall(c, u)
        truth = exact_top(x, q, 10)
        rec_c += recall(c[:10], truth) / 200
        rec_u += recall(u[:10], truth) / 200
        # nearest first, by the int8 inner product the graph ranks by
        q8 = vectors_graph._quantise(q[None], 127.0 / float(np.abs(q).max()))[0].astype(np.int64)
        x8 = vectors_graph._quantise(x[c], g.scale).astype(np.int64)
        assert np.all(np.diff(x8 @ q8) <= 0)
    # The same algorithm over the same bytes: only ties may order differently.
    assert same >= 190 and overlap / 200 >= 0.995
    assert rec_c >= rec_u - 0.005 and rec_c >= 0.9
    assert not g._walker()[2].any()  # type: ignore[index]  # the visited scratch is left clear


@needs_kernels
def test_compiled_walk_skips_removed_nodes_and_pending_removals() -> None:
    x = clustered(2000, 16, seed=3)
    vi, g = frozen_index(x)
    gone = np.arange(0, 2000, 3)
    vi.remove(gone[:300])  # frozen: buffered as pending, the nodes still in the bytes
    assert len(g.pending) == 300 and g.view_buf is not None
    queries = clustered(50, 16, seed=4)
    for q in queries:
        rows, _ = vi.search(q, 10)
        assert not np.isin(rows, gone[:300]).any() and len(rows) == 10
    vi.remove(gone[300:])
    vi.flush()  # copied back, removed for real (key UINT64_MAX in the bytes), frozen again
    assert g.view_buf is not None and not g.pending and g._walker() is not None
    alive = np.setdiff1d(np.arange(2000), gone)
    for q in queries:
        found = g.search(q, 20, 64)
        assert len(found) == 20 and not np.isin(found, gone).any()
        rows, _ = vi.search(q, 10)
        assert recall(rows, exact_top(x, q, 10, alive)) >= 0.8


@needs_kernels
def test_compiled_walk_rejects_damaged_bytes() -> None:
    k = vectors._kernels
    _, g = frozen_index(clustered(500, 8, seed=5))
    buf, offsets, visited = g._walker()  # type: ignore[misc]
    q = np.ones(8, np.int8)
    out = np.empty(10, np.int64)
    assert k.hnsw_search(buf, offsets, visited, q, 16, 10, g.n_keys, out) == 10
    assert k.hnsw_header(buf) == (500, 8)
    nodes = 8 + 500 * 8 + 64 + 40 + 2 * 500
    bad = buf.copy()
    bad[nodes + 10 : nodes + 14] = 255  # slot 0's neighbour count: far above the connectivity
    with pytest.raises(ValueError, match="longer than the connectivity"):
        for start in range(500):  # whichever walk reaches slot 0
            k.hnsw_search(bad, offsets, visited, np.roll(q, start), 500, 10, g.n_keys, out)
    assert not visited.any()  # left clear after an error too
    bad = buf.copy()
    bad[nodes + 14 : nodes + 18] = 255  # slot 0's first neighbour: outside the graph
    with pytest.raises(ValueError, match="outside the graph"):
        k.hnsw_search(bad, offsets, visited, q, 500, 500, g.n_keys, np.empty(500, np.int64))
    with pytest.raises(ValueError, match="key"):  # keys the index never handed out
        k.hnsw_search(buf, offsets, visited, q, 16, 10, 3, out)
    for cut in (buf[:7], buf[:-1], np.concatenate([buf, buf[:4]])):
        with pytest.raises(ValueError):
            k.hnsw_offsets(cut, np.empty(501, np.uint64))
    head = 8 + 500 * 8  # the dense head: the walk reads only i8 vectors, u64 keys, u32 slots
    for at in (head, head + 7, head + 14, head + 15, head + 16, head + 33):
        other = buf.copy()
        other[at] ^= 1  # magic, major version, scalar / key / slot kind, dimensions
        with pytest.raises(ValueError, match="understands"):
            k.hnsw_header(other)
    bad = buf.copy()
    bad[nodes - 2 * 500 : nodes - 2 * 500 + 2] = 200  # slot 0's level, above the max level
    with pytest.raises(ValueError, match="level"):
        k.hnsw_offsets(bad, np.empty(501, np.uint64))
    with pytest.raises(ValueError, match="do not fit"):
        k.hnsw_search(buf, offsets[:-1], visited, q, 16, 10, g.n_keys, out)
    # Through the index: a damaged graph is an internal error, not a wrong answer.
    g._walk = (bad, offsets, visited)
    bad[:] = buf
    bad[nodes + 14 : nodes + 18] = 255
    with pytest.raises(MossError) as e:
        for start in range(500):
            g.search(np.roll(np.ones(8, np.float32), start), 500, 500)
    assert e.value.code == "INTERNAL"


@needs_kernels
def test_a_frozen_graph_keeps_new_rows_in_the_tail_until_a_refreeze_pays() -> None:
    x = clustered(3000, 16, seed=6)
    vi, g = frozen_index(x)
    limit = max(3000 // vectors_tail._FREEZE_NODES_PER_CHANGE, vectors_tail._FLUSH_CHUNK)  # 32 rows
    new = clustered(limit, 16, seed=7)
    vi.set(np.arange(3000, 3000 + limit - 1), new[:-1])
    assert not vi.flush_due()
    vi.flush(background=True)  # a no-op: the rows wait in the exact tail, the graph stays a view
    assert vi.stats()["tail"] == limit - 1 and g.view_buf is not None
    rows, scores = vi.search(new[0], 1)
    assert rows.tolist() == [3000] and scores[0] == pytest.approx(1.0, abs=1e-6)
    vi.set(np.array([3000 + limit - 1]), new[-1:])
    assert vi.flush_due()
    vi.flush(background=True)  # folded (a private copy), then frozen again
    assert vi.stats()["tail"] == 0 and vi.stats()["graph"] == 3000 + limit
    assert g.view_buf is not None and g.changes == 0 and g._walker() is not None
    assert vi.search(new[-1], 1)[0].tolist() == [3000 + limit - 1]
    # An explicit flush folds even one row; a change that small is not worth a refreeze.
    vi.set(np.array([0]), new[:1])
    vi.flush()
    assert vi.stats()["tail"] == 0 and g.view_buf is None and not vi.flush_due()
    assert vi.search(new[0], 2)[0].tolist() in ([0, 3000], [3000, 0])


def test_without_the_compiled_walk_the_graph_is_never_frozen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    without_kernels(monkeypatch)
    x = clustered(600, 8, seed=8)
    vi = VectorIndex(8, exact_max_rows=100, tail_max_rows=10**6)
    vi.set(np.arange(600), x)
    vi.flush()
    assert vi._graph is not None and vi._graph.view_buf is None and not vi.flush_due()
    for q in clustered(20, 8, seed=9):
        assert recall(vi.search(q, 10)[0], exact_top(x, q, 10)) >= 0.8


@needs_kernels
def test_a_large_graph_is_refrozen_only_after_half_of_it_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vectors_tail, "_FREEZE_STALL_NODES", 1000)  # 3000 rows count as large
    x = clustered(3000, 8, seed=10)
    vi, g = frozen_index(x)  # a bulk build changed all of it: frozen
    vi.set(np.arange(100), x[100:200])  # 1/30 of the graph: a small graph would refreeze
    vi.flush()
    assert g.view_buf is None and g.changes == 200 and not vi.flush_due()  # out and in again
    vi.set(np.arange(100, 1500), x[:1400])
    vi.flush()
    assert g.view_buf is not None and g.changes == 0

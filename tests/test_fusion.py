"""Fusion functions against hand-computed values and a naive reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moss import vectors
from moss.fusion import fuse_candidates, normalise, rrf, score_fusion
from moss.vectors import VectorIndex


def _rows(*xs: int) -> np.ndarray:
    return np.asarray(xs, dtype=np.int64)


def test_rrf_contract_example() -> None:
    # A is vector rank 1 and absent from K; B is vector rank 3 and keyword rank 1 (API.md §3.4).
    a, x, b = 7, 8, 9
    rows, fused = rrf(_rows(a, x, b), _rows(b), 0.8)
    assert rows.tolist()[0] == b
    assert fused[0] == 0.8 / 33 + 0.2 / 31
    assert dict(zip(rows.tolist(), fused.tolist()))[a] == 0.8 / 31


def test_rrf_ties_prefer_vector_rank_then_keyword_rank_then_row() -> None:
    # alpha 0.5: row 5 (v1) and row 6 (k1) tie exactly; the better vector rank wins.
    rows, fused = rrf(_rows(5), _rows(6), 0.5)
    assert fused[0] == fused[1] and rows.tolist() == [5, 6]
    # Symmetric ranks in both lists tie too: 1 is (v1,k2), 2 is (v2,k1) -> vector rank decides.
    rows, _ = rrf(_rows(1, 2), _rows(2, 1), 0.5)
    assert rows.tolist() == [1, 2]


@given(
    st.lists(st.integers(0, 30), unique=True, max_size=12),
    st.lists(st.integers(0, 30), unique=True, max_size=12),
    st.floats(0.01, 0.99),
)
def test_rrf_matches_naive_formula(v: list[int], k: list[int], alpha: float) -> None:
    rows, fused = rrf(np.asarray(v, np.int64), np.asarray(k, np.int64), alpha)
    naive = {}
    for d in set(v) | set(k):
        f = 0.0
        if d in v:
            f += alpha / (30 + v.index(d) + 1)
        if d in k:
            f += (1 - alpha) / (30 + k.index(d) + 1)
        naive[d] = f
    big = 10**9
    expect = sorted(
        naive,
        key=lambda d: (-naive[d], v.index(d) if d in v else big, k.index(d) if d in k else big, d),
    )
    assert rows.tolist() == expect
    assert np.allclose(fused, [naive[d] for d in expect])


def test_normalisations() -> None:
    s = np.array([1.0, 2.0, 3.0])
    assert normalise(s, "minmax").tolist() == [0.0, 0.5, 1.0]
    d = normalise(s, "dbsf")
    mu, sd = s.mean(), s.std()
    assert np.allclose(d, (s - (mu - 3 * sd)) / (6 * sd))
    assert normalise(np.array([4.0]), "dbsf").tolist() == [1.0]  # a single hit is fully relevant
    assert normalise(np.array([]), "minmax").size == 0


@given(
    st.lists(st.tuples(st.integers(0, 20), st.floats(0, 1)), max_size=10, unique_by=lambda t: t[0]),
    st.lists(
        st.tuples(st.integers(0, 20), st.floats(0, 30)), max_size=10, unique_by=lambda t: t[0]
    ),
    st.floats(0.0, 1.0),
)
def test_score_fusion_matches_naive_convex_combination(
    v: list[tuple[int, float]], k: list[tuple[int, float]], alpha: float
) -> None:
    v = sorted(v, key=lambda t: -t[1])
    k = sorted(k, key=lambda t: -t[1])
    vr, vs = np.asarray([r for r, _ in v], np.int64), np.asarray([s for _, s in v])
    kr, ks = np.asarray([r for r, _ in k], np.int64), np.asarray([s for _, s in k])
    rows, fused = score_fusion(vr, vs, kr, ks, alpha, "minmax")
    vn = dict(zip(vr.tolist(), normalise(vs, "minmax").tolist()))
    kn = dict(zip(kr.tolist(), normalise(ks, "minmax").tolist()))
    naive = {d: alpha * vn.get(d, 0.0) + (1 - alpha) * kn.get(d, 0.0) for d in set(vn) | set(kn)}
    assert set(rows.tolist()) == set(naive)
    assert np.allclose(fused, [naive[d] for d in rows.tolist()])
    assert all(fused[i] >= fused[i + 1] for i in range(len(fused) - 1))


# --------------------------------------------------------------- the compiled score fusion


@pytest.mark.skipif(vectors._kernels is None, reason="moss._kernels is not built")
@settings(max_examples=150, deadline=None)
@given(st.data())
def test_compiled_score_fusion_gives_the_numpy_paths_numbers(data: st.DataObject) -> None:
    dim = data.draw(st.integers(1, 12))
    n = data.draw(st.integers(2, 40))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x[rng.random(n) < 0.15] = 0.0  # zero vectors: cosine 0
    dup = rng.integers(0, n, size=n // 4)
    x[dup] = x[0]  # identical vectors: tied cosines
    q = rng.standard_normal(dim).astype(np.float32)
    if data.draw(st.booleans()):
        q[: dim // 2] = 0.0
    vi = VectorIndex(dim, exact_max_rows=10_000)
    vi.set(np.arange(n), x)
    v_rows = rng.permutation(n)[: data.draw(st.integers(1, n))].astype(np.int64)
    k_rows = rng.permutation(n)[: data.draw(st.integers(1, n))].astype(np.int64)
    v_dots = vi.dot(q, v_rows)
    k_scores = rng.choice(np.array([0.5, 1.0, 2.25, 3.0], np.float32), size=k_rows.size)
    k_scores = k_scores * rng.uniform(0.5, 1.5, k_rows.size).astype(np.float32) ** 2
    top = data.draw(st.sampled_from([0.0, float(k_scores.max()) * 1.25, 7.5]))
    alpha = data.draw(st.floats(0.01, 0.99))
    want = data.draw(st.integers(1, v_rows.size + k_rows.size))
    min_score = data.draw(st.none() | st.floats(0.0, 1.0))

    fracs = np.asarray(k_scores, np.float64) / top if top > 0 else np.zeros(k_rows.size)
    rows, cos = fuse_candidates(
        "score", v_rows, v_dots, k_rows, fracs, alpha,
        lambda u: vi.clamped_cosines(q, u.astype(np.int64), v_dots), "theoretical",
    )  # fmt: skip
    keep = [
        (r, c) for r, c in zip(rows.tolist(), cos.tolist()) if min_score is None or c >= min_score
    ]
    want_rows = [r for r, _ in keep[:want]]
    want_cos = [c for _, c in keep[:want]]

    got = vi.fuse_score(q, v_rows, v_dots, k_rows, k_scores, top, alpha, want, min_score)
    assert got is not None
    assert got[0].tolist() == want_rows
    assert got[1].tolist() == want_cos  # the same float64 numbers, not merely close


@pytest.mark.skipif(vectors._kernels is None, reason="moss._kernels is not built")
def test_compiled_score_fusion_rejects_rows_outside_the_index() -> None:
    vi = VectorIndex(4, exact_max_rows=100)
    vi.set(np.arange(3), np.eye(4, dtype=np.float32)[:3])
    q = np.ones(4, np.float32)
    one = np.array([1.0], np.float32)
    with pytest.raises(ValueError, match="outside the index"):
        vi.fuse_score(q, np.array([0]), one, np.array([10**9]), one, 1.0, 0.5, 2, None)
    with pytest.raises(ValueError, match="outside the index"):
        vi.fuse_score(q, np.array([-1]), one, np.array([0]), one, 1.0, 0.5, 2, None)

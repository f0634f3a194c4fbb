"""Decoding stored index versions: shared by the job runner (which builds on them) and the store
(which answers ``get_docs`` from them).

It sits below both :mod:`moss.server.jobs` and :mod:`moss.server.store` so neither has to import
the other for it: the store imports the runner, the runner never imports the store.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..engine import CUSTOM, Engine
from ..snapshot import SnapshotData, unpack

__all__ = ["Loaded", "load_engine", "model_version"]


@dataclasses.dataclass
class Loaded:
    """An index version held in memory: its blob key (None before it is written), a
    model-agnostic engine, and the model identity written back into the next snapshot."""

    version: str | None
    engine: Engine
    model_id: str
    model: dict[str, str] | None


def load_engine(blob: Any) -> tuple[Engine, SnapshotData]:
    """Decode a version blob into a model-agnostic engine (no embedder is loaded)."""
    from ..cloud.wire import validate_columns

    data = unpack(blob)
    validate_columns(data)
    view = dataclasses.replace(data, model_id=CUSTOM, model=None)
    return Engine.from_snapshot(view), data


def model_version(model_id: str, model: dict[str, str] | None, dimension: int | None) -> str:
    """``IndexInfo.model.version``: the artifact of a built-in model, ``<dim>d`` for custom."""
    if model_id == CUSTOM:
        return f"{dimension}d" if dimension is not None else ""
    return (model or {}).get("artifact_version", "")

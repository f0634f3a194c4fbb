"""moss: offline-first, in-process semantic and hybrid search with a Moss-compatible API.

>>> import moss
>>> moss.DocumentInfo("1", "hello").id
'1'

Why the exports are lazy: ``import moss`` runs for every ``moss`` command, ``moss --help``
included, and importing the client pulls in numpy and the engine (about 0.1 s). The public names
are therefore resolved on first attribute access (PEP 562 module ``__getattr__``) from the
submodule that defines them; ``from moss import MossClient`` and ``moss.MossClient`` work as
before, ``dir(moss)`` lists ``__all__``, and type checkers read the ``TYPE_CHECKING`` imports
below. Heavy dependencies (onnxruntime, the model, the HNSW library, the server) load on first
use as well.
"""

import importlib as _importlib
import typing as _typing

from ._version import __version__

if _typing.TYPE_CHECKING:
    from .client import MossClient
    from .errors import AlreadyExistsError, InvalidArgumentError, MossError
    from .jobs import JobHandle
    from .session import SessionIndex
    from .sources import (
        CrawlStats,
        CreateWebSourceOptions,
        CreateWebSourceResult,
        DeleteWebSourceResult,
        ParseFileInput,
        ParseOptions,
        ResyncWebSourceResult,
        UpdateWebSourceOptions,
        UpdateWebSourceResult,
        WebSource,
    )
    from .types import (
        Chunking,
        DocsInput,
        DocumentInfo,
        GetDocumentsOptions,
        IndexInfo,
        IndexStatus,
        IndexStatusValues,
        JobPhase,
        JobProgress,
        JobStatus,
        JobStatusResponse,
        LoadIndexesResult,
        ModelRef,
        MutationOptions,
        MutationResult,
        ParentGrouping,
        PushIndexResult,
        QueryOptions,
        QueryResultDocumentInfo,
        SearchResult,
    )

__all__ = [
    "AlreadyExistsError",
    "Chunking",
    "CrawlStats",
    "CreateWebSourceOptions",
    "CreateWebSourceResult",
    "DeleteWebSourceResult",
    "DocsInput",
    "DocumentInfo",
    "GetDocumentsOptions",
    "IndexInfo",
    "IndexStatus",
    "IndexStatusValues",
    "InvalidArgumentError",
    "JobHandle",
    "JobPhase",
    "JobProgress",
    "JobStatus",
    "JobStatusResponse",
    "LoadIndexesResult",
    "ModelRef",
    "MossClient",
    "MossError",
    "MutationOptions",
    "MutationResult",
    "ParentGrouping",
    "ParseFileInput",
    "ParseOptions",
    "PushIndexResult",
    "QueryOptions",
    "QueryResultDocumentInfo",
    "ResyncWebSourceResult",
    "SearchResult",
    "SessionIndex",
    "UpdateWebSourceOptions",
    "UpdateWebSourceResult",
    "WebSource",
    "__version__",
]

# The submodule that defines each lazily exported name.
_SOURCE = {
    "MossClient": "client",
    "AlreadyExistsError": "errors",
    "InvalidArgumentError": "errors",
    "MossError": "errors",
    "JobHandle": "jobs",
    "SessionIndex": "session",
    **{
        name: "sources"
        for name in (
            "CrawlStats",
            "CreateWebSourceOptions",
            "CreateWebSourceResult",
            "DeleteWebSourceResult",
            "ParseFileInput",
            "ParseOptions",
            "ResyncWebSourceResult",
            "UpdateWebSourceOptions",
            "UpdateWebSourceResult",
            "WebSource",
        )
    },
    **{
        name: "types"
        for name in (
            "Chunking",
            "DocsInput",
            "DocumentInfo",
            "GetDocumentsOptions",
            "IndexInfo",
            "IndexStatus",
            "IndexStatusValues",
            "JobPhase",
            "JobProgress",
            "JobStatus",
            "JobStatusResponse",
            "LoadIndexesResult",
            "ModelRef",
            "MutationOptions",
            "MutationResult",
            "ParentGrouping",
            "PushIndexResult",
            "QueryOptions",
            "QueryResultDocumentInfo",
            "SearchResult",
        )
    },
}


def __getattr__(name: str) -> _typing.Any:
    """Import the public name ``name`` from its submodule on first use (then cache it here)."""
    module = _SOURCE.get(name)
    if module is None:
        raise AttributeError(f"module 'moss' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(__all__) | {n for n in globals() if not n.startswith("_")})

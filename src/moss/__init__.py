"""moss: offline-first, in-process semantic and hybrid search with a Moss-compatible API.

>>> import moss
>>> moss.DocumentInfo("1", "hello").id
'1'

Heavy dependencies (onnxruntime, the model, the HNSW library, the server) load on first use, so
``import moss`` stays fast.
"""

from ._version import __version__
from .client import MossClient
from .errors import AlreadyExistsError, InvalidArgumentError, MossError
from .jobs import JobHandle
from .session import SessionIndex
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
    "PushIndexResult",
    "QueryOptions",
    "QueryResultDocumentInfo",
    "SearchResult",
    "SessionIndex",
    "__version__",
]

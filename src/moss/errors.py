"""The one exception hierarchy of moss.

::

    RuntimeError
     └── MossError (.code, .detail)             every failure moss raises itself
          ├── InvalidArgumentError (+ValueError) code "INVALID_ARGUMENT": you called it wrong
          └── AlreadyExistsError                 code "ALREADY_EXISTS": create_index on a taken name

Other codes travel on a plain ``MossError``: ``NOT_FOUND``, ``UNAUTHORIZED``, ``NETWORK``,
``DESERIALIZATION``, ``MODEL_UNAVAILABLE``, ``CONFLICT`` (a web source's crawl settings changed
while it crawls) and ``INTERNAL``. Outside this tree moss raises only ``RuntimeError`` (closed
client, failed job) and ``TimeoutError`` (``wait_for_job``).

>>> try:
...     raise InvalidArgumentError("top_k must be >= 0")
... except ValueError as e:
...     print(e.code, e)
INVALID_ARGUMENT top_k must be >= 0
"""

from __future__ import annotations

__all__ = [
    "CONFLICT",
    "DESERIALIZATION",
    "INTERNAL",
    "INVALID_ARGUMENT",
    "MODEL_UNAVAILABLE",
    "NETWORK",
    "NOT_FOUND",
    "UNAUTHORIZED",
    "ALREADY_EXISTS",
    "AlreadyExistsError",
    "InvalidArgumentError",
    "MossError",
    "error_from_code",
]

INVALID_ARGUMENT = "INVALID_ARGUMENT"
NOT_FOUND = "NOT_FOUND"
ALREADY_EXISTS = "ALREADY_EXISTS"
UNAUTHORIZED = "UNAUTHORIZED"
NETWORK = "NETWORK"
DESERIALIZATION = "DESERIALIZATION"
MODEL_UNAVAILABLE = "MODEL_UNAVAILABLE"
CONFLICT = "CONFLICT"
INTERNAL = "INTERNAL"


class MossError(RuntimeError):
    """Base class of every error moss raises itself.

    Args:
        message: human-readable explanation.
        code: machine-readable code (``NOT_FOUND``, ``DESERIALIZATION``, ...).
        detail: free-form diagnostics for logs; callers must not parse it.
    """

    default_code: str | None = None

    def __init__(self, message: str, *, code: str | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.default_code
        self.detail = detail

    def __reduce__(self) -> tuple[object, ...]:  # survive pickling (multiprocessing, workers)
        return (_rebuild, (type(self), self.message, self.code, self.detail))


def _rebuild(cls: type[MossError], message: str, code: str | None, detail: str | None) -> MossError:
    return cls(message, code=code, detail=detail)


class InvalidArgumentError(MossError, ValueError):
    """Bad input: an option out of range, a malformed filter, a wrong embedding, a bad name."""

    default_code = INVALID_ARGUMENT


class AlreadyExistsError(MossError):
    """``create_index`` with a name that is taken. The message contains ``already exists``."""

    default_code = ALREADY_EXISTS


_CLASS_BY_CODE: dict[str, type[MossError]] = {
    INVALID_ARGUMENT: InvalidArgumentError,
    ALREADY_EXISTS: AlreadyExistsError,
}


def error_from_code(code: str | None, message: str, detail: str | None = None) -> MossError:
    """Rebuild the exception class that carries ``code`` (used by the HTTP client)."""
    cls = _CLASS_BY_CODE.get(code or "", MossError)
    return cls(message, code=code or INTERNAL, detail=detail)

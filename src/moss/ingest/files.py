"""Which files to read: paths, folders (recursive), glob filters, hidden files and stdin.

The one decision that matters downstream is each file's ``rel``, the identity that chunk ids
(``{rel}#{n}``) and the ``source`` metadata are made of. It must not depend on how the caller
spelled the path, or re-indexing would duplicate documents instead of replacing them:

* a file found under a **directory** argument: its POSIX path relative to that directory
  (``moss index sync docs ./site`` and ``... /abs/site`` give the same ids);
* a **file** argument: its path relative to the current directory when it lies under it
  (``a.md`` and ``/cwd/a.md`` both give ``a.md``), else its bare file name;
* ``-``: stdin, ``rel`` ``"stdin"`` (or the caller's ``stdin_name``).

Paths are made absolute with :func:`os.path.abspath` (symlinks keep their own names in ``rel``);
duplicates are found by :meth:`pathlib.Path.resolve`, so one file given twice, or given and also
found inside a given folder, is read once, under the first ``rel`` it got. The result is sorted by
``rel``.

Filters (files inside directories, and file arguments too): ``include`` / ``exclude`` are
gitignore-like globs matched against ``rel``: ``*`` and ``?`` stay within one path segment,
``**`` spans segments (``docs/**/*.md``), a pattern without ``/`` matches at any depth
(``*.mdx``, ``node_modules``), and a pattern that matches a directory covers everything below it.
A file is kept when it matches some include pattern (or none are given) and no exclude pattern.
Names starting with ``.`` (files and directories) are skipped inside directories unless
``hidden=True``. Directory symlinks are not followed (no cycles); file symlinks are. Inside
directories only supported suffixes are listed (the others are reported as skipped); a file
argument with an unsupported suffix is an error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..errors import InvalidArgumentError
from .parsers import SUFFIXES

__all__ = ["DOCUMENT_SUFFIXES", "STDIN", "SourceFile", "discover", "discover_all"]

STDIN = "-"
"""The path that means standard input."""
JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")
DOCUMENT_SUFFIXES = SUFFIXES + JSON_SUFFIXES
"""Every suffix ingestion reads: the parsed kinds and JSON / JSON Lines documents."""


@dataclass(frozen=True)
class SourceFile:
    """One input to read.

    Attributes:
        path: where to read it (absolute); ``Path("-")`` for stdin.
        rel: its stable identity in chunk ids and ``source`` metadata (see the module docstring).
        stdin: True for standard input.
    """

    path: Path
    rel: str
    stdin: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class Discovery:
    """What :func:`discover_all` found: the files, and the ones passed over with a reason."""

    files: list[SourceFile]
    skipped: list[tuple[str, str]]


def discover(
    paths: Sequence[str | os.PathLike[str]],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    hidden: bool = False,
    stdin_name: str = "stdin",
) -> list[SourceFile]:
    """The files to read for ``paths`` (files, directories, ``"-"``): sorted, deduplicated.

    See the module docstring for ``rel``, the filters and hidden files.

    Raises:
        InvalidArgumentError: a path that does not exist, a file argument with an unsupported
            suffix, an invalid pattern, or stdin given twice.
    """
    return discover_all(
        paths, include=include, exclude=exclude, hidden=hidden, stdin_name=stdin_name
    ).files


def discover_all(
    paths: Sequence[str | os.PathLike[str]],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    hidden: bool = False,
    stdin_name: str = "stdin",
) -> Discovery:
    """:func:`discover`, plus the directory entries skipped for an unsupported suffix."""
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise InvalidArgumentError("paths must be a list of paths, not a single path")
    includes = [_compile(p, "include") for p in _patterns(include, "include")]
    excludes = [_compile(p, "exclude") for p in _patterns(exclude, "exclude")]

    def wanted(rel: str) -> bool:
        if includes and not any(_matches(rx, rel) for rx in includes):
            return False
        return not any(_matches(rx, rel) for rx in excludes)

    def excluded_dir(rel: str) -> bool:
        return any(rx.fullmatch(rel) for rx in excludes)

    found: list[SourceFile] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    cwd = os.getcwd()

    def add(source: SourceFile) -> None:
        key = str(source.path.resolve()) if not source.stdin else STDIN
        if key not in seen:
            seen.add(key)
            found.append(source)

    for raw in paths:
        if not isinstance(raw, (str, os.PathLike)):
            raise InvalidArgumentError(f"a path must be a str or os.PathLike, not {type(raw)}")
        name = os.fspath(raw)
        if name == STDIN:
            if STDIN in seen:
                raise InvalidArgumentError("stdin ('-') can be read only once")
            add(SourceFile(Path(STDIN), stdin_name, stdin=True))
            continue
        absolute = os.path.abspath(name)
        if os.path.isdir(absolute):
            for path, rel in _walk(absolute, hidden, excluded_dir):
                if not wanted(rel):
                    continue
                if not rel.lower().endswith(DOCUMENT_SUFFIXES):
                    suffix = os.path.splitext(rel)[1]
                    shown = repr(suffix) if suffix else "no extension"
                    skipped.append((rel, f"unsupported file type ({shown})"))
                    continue
                add(SourceFile(Path(path), rel))
        elif os.path.isfile(absolute):
            rel = _file_rel(absolute, cwd)
            if not absolute.lower().endswith(DOCUMENT_SUFFIXES):
                suffix = os.path.splitext(absolute)[1]
                shown = repr(suffix) if suffix else "no extension"
                raise InvalidArgumentError(
                    f"unsupported file type ({shown}) for {name}; supported: "
                    f"{', '.join(DOCUMENT_SUFFIXES)}"
                )
            if wanted(rel):
                add(SourceFile(Path(absolute), rel))
        elif os.path.lexists(absolute):
            raise InvalidArgumentError(f"{name} is neither a file nor a directory")
        else:
            raise InvalidArgumentError(f"no such file or directory: {name}")
    found.sort(key=lambda s: (s.rel, str(s.path)))
    return Discovery(found, skipped)


def _file_rel(absolute: str, cwd: str) -> str:
    try:
        rel = os.path.relpath(absolute, cwd)
    except ValueError:  # another drive on Windows
        return os.path.basename(absolute)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return os.path.basename(absolute)
    return Path(rel).as_posix()


def _walk(root: str, hidden: bool, pruned: Callable[[str], bool]) -> list[tuple[str, str]]:
    """``(absolute path, rel)`` of every file under ``root``, in sorted order.

    Directories for which ``pruned(rel)`` is true (an excluded ``node_modules``, say) are not
    entered: everything below them would be excluded anyway.
    """
    out: list[tuple[str, str]] = []

    def fail(e: OSError) -> None:
        raise InvalidArgumentError(
            f"cannot list {e.filename}: {e.strerror or type(e).__name__}"
        ) from None

    for directory, dirs, files in os.walk(root, onerror=fail):
        base = os.path.relpath(directory, root)
        prefix = "" if base == os.curdir else Path(base).as_posix() + "/"
        dirs[:] = sorted(
            d for d in dirs if (hidden or not d.startswith(".")) and not pruned(prefix + d)
        )
        for f in sorted(files):
            if not hidden and f.startswith("."):
                continue
            path = os.path.join(directory, f)
            rel = f if base == os.curdir else Path(base, f).as_posix()
            out.append((path, rel))
    return out


# --------------------------------------------------------------------------------------------
# Glob patterns


def _patterns(patterns: Sequence[str], what: str) -> list[str]:
    if isinstance(patterns, str):
        return [patterns]
    out = []
    for p in patterns:
        if not isinstance(p, str) or not p.strip():
            raise InvalidArgumentError(f"{what} patterns must be non-empty strings, got {p!r}")
        out.append(p.strip())
    return out


@lru_cache(maxsize=256)
def _compile(pattern: str, what: str) -> re.Pattern[str]:
    """A gitignore-like glob as a regex over a POSIX ``rel`` (see the module docstring)."""
    p = pattern.replace("\\", "/")
    if p.startswith("./"):
        p = p[2:]
    p = p.rstrip("/")
    anchored = "/" in p
    p = p.lstrip("/")
    if not p:
        raise InvalidArgumentError(f"{what} pattern {pattern!r} matches nothing")
    out = []
    i, n = 0, len(p)
    while i < n:
        c = p[i]
        if c == "*":
            if p.startswith("**", i):
                at_segment_start = i == 0 or p[i - 1] == "/"
                i += 2
                if i < n and p[i] == "/" and at_segment_start:
                    out.append("(?:.*/)?")  # "**/": zero or more whole directories
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            close = p.find("]", i + 2 if p.startswith("[!", i) or p.startswith("[^", i) else i + 1)
            if close == -1:
                out.append(re.escape(c))
            else:
                body = p[i + 1 : close]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = close + 1
                continue
        else:
            out.append(re.escape(c))
        i += 1
    body = "".join(out)
    prefix = "" if anchored else "(?:.*/)?"
    try:
        return re.compile(f"{prefix}{body}")
    except re.error as e:
        raise InvalidArgumentError(f"{what} pattern {pattern!r} is invalid: {e}") from None


def _matches(rx: re.Pattern[str], rel: str) -> bool:
    """Whether ``rel`` or one of its parent directories matches."""
    if rx.fullmatch(rel):
        return True
    cut = rel.rfind("/")
    while cut > 0:
        if rx.fullmatch(rel[:cut]):
            return True
        cut = rel.rfind("/", 0, cut)
    return False

"""What the commands print: JSON for scripts, and tables that fit the terminal.

Why tables are computed here rather than with a library: the rules are few and specific (one
flexible text column that shrinks or grows to the width, identifiers truncated only when they
must be, numbers right-aligned) and a table library would cost start-up time on every command.

Width: ``COLUMNS`` when set (as ``shutil.get_terminal_size`` honours it), else the terminal's width
when stdout is a terminal, else 100 columns (pipes and files get stable output). Widths are
counted in terminal cells (East Asian wide characters take two), so no line is wider than that.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from typing import Any

__all__ = [
    "cell_width",
    "fit",
    "json_out",
    "out",
    "plain",
    "table",
    "terminal_width",
    "wrap",
]

DEFAULT_WIDTH = 100
_MIN_FLEX = 12
_MIN_SHRINK = 8
_GAP = "  "


def out(text: str = "") -> None:
    """One line (or several) on stdout.

    Written line by line (the stream buffers them into pipe-sized writes), so a reader that
    stops early (``| head -1``) is noticed at the next write rather than never.
    """
    for line in (text + "\n").splitlines(keepends=True):
        sys.stdout.write(line)


def json_out(value: Any) -> None:
    """``value`` as indented JSON on stdout (dataclasses and enums converted), streamed."""
    json.dump(plain(value), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def plain(value: Any) -> Any:
    """Dataclasses and enums as JSON-ready values."""
    if is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "value") and isinstance(getattr(value, "value", None), str):
        return value.value
    return value


def terminal_width() -> int:
    """The width tables and notes must fit (see the module docstring)."""
    env = os.environ.get("COLUMNS", "")
    if env.strip().isdigit() and int(env) > 0:
        return int(env)
    try:
        tty = sys.stdout.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty:
        return shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns
    return DEFAULT_WIDTH


def _char_width(ch: str) -> int:
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def cell_width(text: str) -> int:
    """Terminal cells ``text`` occupies."""
    if text.isascii():
        return len(text)
    return sum(_char_width(c) for c in text)


def fit(text: str, width: int) -> str:
    """``text`` on one line (whitespace collapsed), cut to ``width`` cells with an ellipsis."""
    flat = " ".join(text.split())
    if cell_width(flat) <= width:
        return flat
    if width <= 0:
        return ""
    used = 0
    cut = []
    for ch in flat:
        w = _char_width(ch)
        if used + w > width - 1:
            break
        cut.append(ch)
        used += w
    return "".join(cut) + "…"


def _pad(text: str, width: int, right: bool) -> str:
    space = " " * max(width - cell_width(text), 0)
    return space + text if right else text + space


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right: Sequence[int] = (),
    flex: int | None = None,
    shrink: Sequence[int] = (),
    width: int | None = None,
) -> str:
    """Rows under headers and a rule, at most ``width`` cells wide (default: the terminal).

    ``flex`` is the column that takes the room left over (cut with an ellipsis when short of
    it); ``shrink`` columns are cut, widest first, only when the flexible column would be
    narrower than 12 cells. Cells are collapsed to one line.
    """
    limit = terminal_width() if width is None else width
    cells = [[" ".join(str(c).split()) for c in row] for row in rows]
    widths = [cell_width(h) for h in headers]
    for row in cells:
        widths = [max(w, cell_width(c)) for w, c in zip(widths, row)]
    gaps = len(_GAP) * (len(headers) - 1)
    if flex is not None:
        others = sum(w for i, w in enumerate(widths) if i != flex) + gaps
        room = limit - others
        floors = {i: max(cell_width(headers[i]), _MIN_SHRINK) for i in shrink}
        while room < min(_MIN_FLEX, widths[flex]):
            candidates = [i for i in shrink if widths[i] > floors[i]]
            if not candidates:
                break
            widest = max(candidates, key=lambda i: widths[i])
            widths[widest] -= 1
            room += 1
        widths[flex] = max(min(widths[flex], room), cell_width(headers[flex]), 1)
    right_set = set(right)

    def line(values: Sequence[str]) -> str:
        parts = [_pad(fit(v, w), w, i in right_set) for i, (v, w) in enumerate(zip(values, widths))]
        return _GAP.join(parts).rstrip()

    rule = [("-" * w) for w in widths]
    return "\n".join([line(headers), line(rule), *(line(r) for r in cells)])


def wrap(text: str, width: int | None = None) -> str:
    """``text`` wrapped to the terminal width (for notes under a table)."""
    import textwrap

    return textwrap.fill(text, width=max((width or terminal_width()), 20))

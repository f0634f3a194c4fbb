"""Progress of long commands on stderr: a tqdm bar on a terminal, plain periodic lines otherwise.

Why tqdm: it is small (one pure-Python package, ~10 ms to import), well kept, and draws rate and
ETA, resizes with the terminal and cooperates with other output; it is imported only when a bar is
actually drawn. Why not tqdm everywhere: a bar redrawn with ``\\r`` is noise in a log file or a CI
job, so when stderr is not a terminal this module prints one plain line at the start, then one
every ``MOSS_PROGRESS_INTERVAL`` seconds (default 5; tests set it lower), then a final one, each
with done/total, rate and ETA. ``--quiet`` turns both off.
"""

from __future__ import annotations

import os
import re
import sys
import time
from types import TracebackType
from typing import Any, TextIO

__all__ = ["DEFAULT_INTERVAL_S", "LineProgressAdapter", "Progress", "interval_s"]

DEFAULT_INTERVAL_S = 5.0


def interval_s() -> float:
    """Seconds between plain progress lines (``MOSS_PROGRESS_INTERVAL``, default 5)."""
    try:
        value = float(os.environ.get("MOSS_PROGRESS_INTERVAL", DEFAULT_INTERVAL_S))
    except ValueError:
        return DEFAULT_INTERVAL_S
    return value if value >= 0 else DEFAULT_INTERVAL_S


def _plural(unit: str) -> str:
    return unit[:-1] + "ies" if unit.endswith("y") else unit + "s"


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Progress of ``total`` units of work labelled ``label``; feed it with :meth:`update`.

    Args:
        label: what is being done ("embedding (moss-minilm)").
        total: units of work (0 is allowed: nothing is drawn).
        unit: the unit's name ("doc", "chunk", "file").
        enabled: False draws nothing (``--quiet``).
        stream: default ``sys.stderr``.
    """

    def __init__(
        self,
        label: str,
        total: int,
        *,
        unit: str = "doc",
        enabled: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        self.label = label
        self.total = max(int(total), 0)
        self.unit = unit
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._start = time.monotonic()
        self._last_line = self._start
        self._interval = interval_s()
        self._bar: Any = None
        self._closed = not enabled or self.total == 0
        if self._closed:
            return
        try:
            tty = self._stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        if tty:
            from tqdm import tqdm  # type: ignore[import-untyped]

            self._bar = tqdm(
                total=self.total,
                desc=label,
                unit=unit,
                file=self._stream,
                dynamic_ncols=True,
                mininterval=0.1,
                leave=True,
            )
        else:
            self._line()

    def _line(self) -> None:
        elapsed = time.monotonic() - self._start
        pct = 100.0 * self.done / self.total if self.total else 100.0
        units = _plural(self.unit)
        text = f"{self.label}: {self.done}/{self.total} {units} ({pct:.0f}%)"
        if self.done and elapsed > 0:
            rate = self.done / elapsed
            text += f", {rate:.1f} {units}/s"
            if self.done < self.total:
                text += f", ETA {_duration((self.total - self.done) / rate)}"
            else:
                text += f", {_duration(elapsed)}"
        try:
            self._stream.write(text + "\n")
            self._stream.flush()
        except (OSError, ValueError):  # stderr closed: progress is optional
            self._closed = True

    def update(self, done: int) -> None:
        """Report that ``done`` units (in all) are finished."""
        if self._closed:
            return
        done = min(max(int(done), self.done), self.total)
        if self._bar is not None:
            self._bar.update(done - self.done)
            self.done = done
            return
        self.done = done
        now = time.monotonic()
        if now - self._last_line >= self._interval and done < self.total:
            self._last_line = now
            self._line()

    def close(self, *, finished: bool = True) -> None:
        """End the display: the final line when ``finished``, else leave the last state."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif finished:
            self._line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(finished=exc_type is None)


_UPDATE = re.compile(r"\r(?P<label>[^\r\n]+): (?P<done>\d+)/(?P<total>\d+)\n?")


class LineProgressAdapter:
    """A text stream for library code that reports progress as ``\\rLABEL: DONE/TOTAL`` writes
    (:class:`moss.evaluation.Progress` on a terminal): each such write drives a :class:`Progress`
    per label, so those commands get the same bar or plain lines, with rate and ETA, as the
    others; anything else written passes through to stderr unchanged."""

    def __init__(self, *, enabled: bool = True) -> None:
        self._enabled = enabled
        self._bars: dict[str, Progress] = {}

    def isatty(self) -> bool:
        return True  # asks for the \r form, one write per update

    def write(self, text: str) -> int:
        m = _UPDATE.fullmatch(text)
        if m is None:
            if self._enabled:
                sys.stderr.write(text)
            return len(text)
        label, done, total = m["label"], int(m["done"]), int(m["total"])
        bar = self._bars.get(label)
        if bar is None:
            unit = "query" if label.startswith("alpha=") else "doc"
            bar = self._bars[label] = Progress(label, total, unit=unit, enabled=self._enabled)
        bar.update(done)
        if done >= total:
            bar.close()
        return len(text)

    def flush(self) -> None:
        if self._enabled:
            sys.stderr.flush()

    def close(self) -> None:
        """End every bar still open (an interrupted run)."""
        for bar in self._bars.values():
            bar.close(finished=False)

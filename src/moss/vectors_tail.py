"""Rows waiting for the graph of the vector index (moss.vectors): the exact tail, flush, freeze.

* **Adding a row never touches the graph.** New and overwritten rows go to an exact *tail*: the
  contiguous suffix ``[lo, n)`` plus a small set of overwritten older rows, brute-forced next to the
  graph on every query. ``flush()`` (meant for a background thread) folds the tail into the graph in
  chunks of 32 rows, releasing the lock between chunks. If nobody flushes, a ``set`` that leaves
  more than ``tail_max_rows`` (1024) pending folds ``max(32, 2 * batch)`` of them itself: a one-row
  add then costs at most 32 insertions and about one amortised, and a bulk load builds the graph in
  one multi-threaded call. Deletes and overwrites remove the row's graph node.
* **Freezing.** Once the graph has changed by 1/256 of its nodes since it was last frozen,
  ``flush`` *freezes* it (:meth:`moss.vectors_graph._Graph.freeze`), so that the compiled walk
  searches it. A frozen graph leaves new rows in the tail (up to ``size / 256``) rather than being
  copied back for each.

Thread safety: ``flush`` releases the index lock between chunks, so a concurrent query waits at
most one chunk (a few ms; ~20 ms more at 100k rows for the link pass after deletes).
"""

from __future__ import annotations

import atexit
import threading

import numpy as np
import numpy.typing as npt

from .vectors_exact import _Matrix
from .vectors_graph import _Graph

try:  # compiled query helpers (src/moss/_kernels.c); the numpy code below does the same
    from . import _kernels
except ImportError:  # pragma: no cover - built wherever a C compiler exists
    _kernels = None  # type: ignore[assignment]

__all__: list[str] = []

I64Array = npt.NDArray[np.int64]

_FLUSH_CHUNK = 32  # rows per graph insertion in flush(): ~5-10 ms holding the GIL

# Background flushes stop at the next chunk once the interpreter exits, and exit waits for the
# chunk in progress: a daemon thread still inside usearch while the process tears down its C++
# runtime can abort the process (exit 134).
_exiting = False
_active = threading.Condition()
_active_flushes = 0


@atexit.register
def _stop_background_flushes() -> None:
    global _exiting
    with _active:
        _exiting = True
        _active.wait_for(lambda: _active_flushes == 0, timeout=30.0)


_FREEZE_NODES_PER_CHANGE = 256  # see _Tail._freeze_due
_FREEZE_STALL_NODES = 250_000  # see _Tail._freeze_due


class _Tail(_Matrix):
    """The graph and the rows not in it yet; set up by ``VectorIndex`` (moss.vectors)."""

    _exact_max: int
    _tail_max: int
    _connectivity: int
    _expansion_add: int
    _n_live: int
    _graph: _Graph | None
    _lo: int  # rows >= lo are never in the graph
    _scattered: set[int]  # live rows < lo that are not in the graph
    _scattered_arr: I64Array | None

    def _scattered_rows(self) -> I64Array:
        if self._scattered_arr is None:
            self._scattered_arr = np.array(sorted(self._scattered), dtype=np.int64)
        return self._scattered_arr

    def _drop_scattered(self, rows: I64Array) -> None:
        if self._scattered and rows.size:
            self._scattered.difference_update(rows.tolist())
            self._scattered_arr = None

    def _tail_size(self) -> int:
        return len(self._scattered) + int(np.count_nonzero(self._live[self._lo : self._n]))

    def _fold_excess(self, added: int) -> None:
        """Keep the tail bounded when nobody calls ``flush``; hold the lock.

        Past the bound it folds ``max(2 * added, 32)`` rows (at least the excess): a one-row add
        then pays for 32 insertions once every 32 adds (about one insertion amortised), and a bulk
        ``set`` builds the graph over all of its rows in one multi-threaded call.
        """
        tail = self._tail_size() if self._graph is not None else self._n_live
        limit = self._tail_max + (self._exact_max if self._graph is None else 0)
        if tail > limit:
            n = max(tail - self._tail_max, min(tail, max(2 * added, _FLUSH_CHUNK)))
            self._fold(n, threads=0 if n >= 256 else 1)

    def flush(self, *, background: bool = False) -> None:
        """Fold pending rows into the graph now, in chunks, releasing the lock between them;
        then freeze the graph if it changed enough since it was last frozen (``_freeze_due``).

        Safe to call from a background thread. A no-op while the index is small enough to be
        searched exactly. ``background=True`` (the engine's flusher) does nothing while
        :meth:`flush_due` is false: a frozen graph keeps a short tail rather than being
        copied back, changed and frozen again for every row.
        """
        global _active_flushes
        with self._lock:
            if background and not self._flush_due():
                return
        if background:
            with _active:
                if _exiting:
                    return
                _active_flushes += 1
        try:
            while not (background and _exiting):
                with self._lock:
                    if self._fold(_FLUSH_CHUNK, threads=1) == 0:
                        g = self._graph
                        if g is not None:
                            if g.pending:
                                g.materialise()  # applies the removals buffered against a view
                            if self._freeze_due(g):
                                g.freeze()
                        return
        finally:
            if background:
                with _active:
                    _active_flushes -= 1
                    _active.notify_all()

    def flush_due(self) -> bool:
        """Whether ``flush(background=True)`` would fold or freeze anything now."""
        with self._lock:
            return self._flush_due()

    def _flush_due(self) -> bool:
        g = self._graph
        if g is None:
            return self._n_live > self._exact_max
        tail = self._tail_size()
        if g.view_buf is not None:
            # Frozen: new rows wait in the exact tail (and removals in `pending`) until there
            # are enough of them to be worth a refold and a refreeze.
            limit = min(max(g.size // _FREEZE_NODES_PER_CHANGE, _FLUSH_CHUNK), self._tail_max // 2)
            return tail + len(g.pending) >= limit
        return tail > 0 or self._freeze_due(g)

    @staticmethod
    def _freeze_due(g: _Graph) -> bool:
        """A private graph is frozen once it changed by 1/256 of its nodes since it last was:
        freezing and the later copy back cost about 0.6 us per node (30 ms each at 100k rows),
        inserting a node 100 us or more, so the freezes at most double the insertion work.

        Both hold the index lock, and queries wait: above ``_FREEZE_STALL_NODES`` (a 100 ms
        stall) a graph is refrozen only once half of it changed, as after a bulk build.
        """
        due = g.changes * _FREEZE_NODES_PER_CHANGE >= g.size > 0
        if g.size > _FREEZE_STALL_NODES:
            due = 2 * g.changes >= g.size
        return due and g.view_buf is None and _kernels is not None

    def _fold(self, limit: int | None, threads: int) -> int:
        """Move up to ``limit`` tail rows into the graph (building it if needed); hold the lock."""
        if self._graph is None:
            if self._n_live < max(self._exact_max, 1):
                return 0
            self._graph = _Graph(self.dim, self._scale(), self._connectivity, self._expansion_add)
        scattered = self._scattered_rows()
        if limit is not None:
            scattered = scattered[:limit]
        room = None if limit is None else limit - scattered.size
        suffix = self._lo + np.flatnonzero(self._live[self._lo : self._n])
        take = suffix if room is None else suffix[:room]
        rows = np.concatenate([scattered, take])
        if rows.size == 0:
            return 0
        self._row_key[rows] = self._graph.add(rows, self._mat[rows], threads)
        self._drop_scattered(scattered)
        if take.size == suffix.size:
            self._lo = self._n
        elif take.size:
            self._lo = int(take[-1]) + 1
        return int(rows.size)

    def _scale(self) -> float:
        """int8 scale mapping the largest absolute component of the live rows to 127."""
        top = 0.0
        step = self._chunk
        for s in range(0, self._n, step):
            block = self._mat[s : s + step][self._live[s : s + step]]
            if block.size:
                top = max(top, float(np.abs(block).max()))
        return 127.0 / top if top > 1e-30 else 1.0

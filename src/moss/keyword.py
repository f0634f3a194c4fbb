"""Incremental BM25 keyword index on numpy: exact scores over live documents, fast single writes.

Why hand-written (MEASUREMENTS.md §5): tantivy keeps deleted documents in its statistics until a
merge and needs a ~10 ms commit to make writes visible; bm25s cannot add a document without
re-indexing everything. The API contract (§3.5) wants BM25 statistics that follow every update and
delete at once, so this index scores with *live* N, df and avgdl, recomputed per query.

Storage and writes (slots, the forward index, the main and delta postings segments, merging) are
in :mod:`moss.keyword_postings`; this module scores them and saves them (``to_arrays``).

Search: for each query term, vectorised numpy over its postings (gather doc lengths, compute the
saturated tf, accumulate into a per-thread scratch score array, remembering which slots became
non-zero), then tombstones and the ``allowed`` mask are applied to the candidates only and the top
``depth`` are picked with ``np.partition``. Where the optional C extension ``moss._kernels`` is
built (``KERNEL == "c"``), one call runs that whole pass with the same float32 operations in the
same order, so the same bits, about 4x faster (docs/dependencies.md). When the query's postings
are long (above 32k, or 512k with the compiled pass), a vectorised MaxScore pass
(``_search_pruned``) first scores the documents of the rarest terms, derives a score threshold
from them, and then skips every document that only contains terms whose combined upper bound
cannot reach it; the result is identical to exhaustive scoring.

Scores are computed in float32, the output dtype (within ~1e-6 of float64). Writes need exclusive
access (the engine holds its lock); concurrent searches are safe (per-thread scratch arrays).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import DESERIALIZATION, INTERNAL, InvalidArgumentError, MossError
from .keyword_postings import F32, I32, I64, U16, Bool, _int_array, _Postings
from .keyword_postings import TF_MAX as TF_MAX

try:  # the compiled scoring loop (src/moss/_kernels.c), built by setup.py where a compiler exists
    from . import _kernels
except ImportError:  # pragma: no cover - a build without a C compiler: numpy does the same sums
    _kernels = None  # type: ignore[assignment]

__all__ = ["BM25Index", "KERNEL"]

#: Which exhaustive scoring loop ``BM25Index.search`` runs: ``"c"`` (moss._kernels) or ``"numpy"``.
KERNEL = "numpy" if _kernels is None else "c"

FORMAT_VERSION = 2  # 2: uint16 tfs, no forward index (derived lazily)
_PRUNE_MAX_TERMS = 16  # MaxScore costs O(terms^2) numpy calls; long queries are scored exhaustively


class BM25Index(_Postings):
    """An incremental BM25 index over integer keys (the engine's row numbers).

    Args:
        k1: term-frequency saturation (>= 0).
        b: length normalisation in [0, 1].

    Raises:
        InvalidArgumentError: k1 or b out of range.

    >>> idx = BM25Index()
    >>> idx.add(np.array([0, 1, 2]), [["cat", "sat"], ["dog"], ["cat", "cat", "dog"]])
    >>> keys, scores = idx.search(["cat"], depth=10)
    >>> keys.tolist()
    [2, 0]
    """

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        if not (math.isfinite(k1) and k1 >= 0):
            raise InvalidArgumentError(f"BM25 k1 must be a finite number >= 0, got {k1!r}")
        if not (math.isfinite(b) and 0 <= b <= 1):
            raise InvalidArgumentError(f"BM25 b must be in [0, 1], got {b!r}")
        super().__init__()
        self.k1 = float(k1)
        self.b = float(b)
        self._local = threading.local()
        # _query results by query terms, valid for one _epoch (bumped by every write, in _Postings).
        self._qcache: dict[tuple[str, ...], tuple[int, list[tuple[int, float]], int]] = {}
        # Queries whose postings exceed this use MaxScore pruning (tests lower it). Below it the
        # exhaustive pass is cheaper: MaxScore costs O(terms^2) numpy calls. Measured on SciFact
        # claims (benchmarks/bench_session.py data), top 10: at 10k docs the threshold 8,192 gave
        # mean/p99 0.29/1.21 ms and 32,768 gave 0.14/0.30 ms; at 100k docs the medians were equal
        # (0.44 ms) and exhaustive-only scoring was 0.72 ms.
        self._prune_min_postings = 32_768
        # With the compiled loop (moss._kernels) exhaustive scoring beats the numpy MaxScore pass
        # far longer: at 100k docs (~70k postings per query) it took 0.20 ms p50 / 0.61 ms p99
        # against 0.35 / 2.2 ms. MaxScore takes over only above this many postings.
        self._kernel_prune_min_postings = 1 << 19

    # ------------------------------------------------------------------ reads

    def _query(self, terms: Sequence[str]) -> list[tuple[int, float]]:
        """(term id, weight) per distinct known query term, in first-occurrence order.

        The weight is ``idf * (k1 + 1) * occurrences``: the upper bound of the term's contribution.
        """
        return self._query_postings(terms)[0]

    def _query_postings(self, terms: Sequence[str]) -> tuple[list[tuple[int, float]], int]:
        """``_query`` and the number of postings its terms have, cached until the next write."""
        if isinstance(terms, str):
            raise InvalidArgumentError("terms must be a list of analysed terms, not a string")
        key = tuple(terms)
        hit = self._qcache.get(key)
        if hit is not None and hit[0] == self._epoch:
            return hit[1], hit[2]
        epoch = self._epoch
        counts: dict[int, int] = {}
        vocab = self._vocab
        for term in key:
            tid = vocab.get(term)
            if tid is not None:
                counts[tid] = counts.get(tid, 0) + 1
        n = self._n_live
        out: list[tuple[int, float]] = []
        postings = 0
        n_main = len(self._indptr) - 1
        for tid, mult in counts.items():
            df = int(self._df[tid])
            if df:
                idf = math.log1p((n - df + 0.5) / (df + 0.5))
                out.append((tid, idf * (self.k1 + 1.0) * mult))
                if tid < n_main:
                    postings += int(self._indptr[tid + 1] - self._indptr[tid])
                entry = self._delta.get(tid)
                postings += 0 if entry is None else len(entry[0])
        if len(self._qcache) >= 1024:
            self._qcache.clear()
        self._qcache[key] = (epoch, out, postings)
        return out, postings

    def _norm(self) -> tuple[float, float]:
        """``(c1, c2)`` with ``k1 * (1 - b + b * dl / avgdl) == c1 + c2 * dl``."""
        avgdl = self._total_len / self._n_live
        return self.k1 * (1.0 - self.b), self.k1 * self.b / avgdl

    def _contrib(self, slots: I32, tf: U16, w: float, c1: float, c2: float) -> F32:
        """``w * tf / (tf + c1 + c2 * dl)`` per posting, in float32 (every path uses this)."""
        num: F32 = tf.astype(np.float32)  # one cast: mixed-dtype ufuncs are slower
        den = self._slot_len[slots]
        den *= c2
        den += c1
        den += num
        num *= w  # a Python float is cast to float32 first (NEP 50), as before
        num /= den
        return num

    def _scratch(self) -> tuple[F32, Bool]:
        """This thread's zeroed score array and seen mask, at least one entry per slot."""
        local = self._local
        scores: F32 | None = getattr(local, "scores", None)
        if scores is None or len(scores) < self._n_slots:
            size = max(self._n_slots, 2 * (0 if scores is None else len(scores)), 1024)
            local.scores = scores = np.zeros(size, np.float32)
            local.seen = np.zeros(size, np.bool_)
        seen: Bool = local.seen
        return scores, seen

    def search(
        self, terms: Sequence[str], depth: int, allowed: npt.NDArray[np.bool_] | None = None
    ) -> tuple[I64, F32]:
        """The best-scoring keys for analysed query terms.

        Args:
            terms: analysed query terms; a repeated term counts once per occurrence.
            depth: how many keys at most.
            allowed: optional bool array indexed by key; keys outside it or False are skipped.

        Returns:
            ``(keys, scores)``: int64 keys and float32 BM25 scores (> 0), by score descending,
            ties by key ascending.

        Raises:
            InvalidArgumentError: negative depth, a string for terms, a non-bool mask.
        """
        depth = int(depth)
        if depth < 0:
            raise InvalidArgumentError(f"depth must be >= 0, got {depth}")
        if allowed is not None:
            allowed = np.ascontiguousarray(allowed)  # the compiled loop reads it as a buffer
            if allowed.ndim != 1 or allowed.dtype != np.bool_:
                raise InvalidArgumentError("allowed must be a 1-D bool array indexed by key")
        query, postings = self._query_postings(terms)
        if depth == 0 or not query or self._total_len == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        prune = 1 < len(query) <= _PRUNE_MAX_TERMS and postings > self._prune_min_postings
        if _kernels is not None and not (prune and postings > self._kernel_prune_min_postings):
            return self._search_compiled(query, depth, allowed)
        seg_lists = [self._segments(tid) for tid, _ in query]
        if prune:
            return self._search_pruned(query, seg_lists, depth, allowed)
        c1, c2 = self._norm()
        scores, _ = self._scratch()
        touched: list[I32] = []
        try:
            for i, ((_, w), segs) in enumerate(zip(query, seg_lists)):
                for slots, tf in segs:
                    contrib = self._contrib(slots, tf, w, c1, c2)
                    if i == 0:  # the segments of one term are disjoint: all fresh
                        scores[slots] = contrib
                        touched.append(slots)
                    else:
                        cur = scores[slots]
                        touched.append(slots[cur == 0])  # contributions are > 0: 0 is untouched
                        cur += contrib
                        scores[slots] = cur
            cand = np.concatenate(touched) if len(touched) > 1 else touched[0]
            cand_scores = scores[cand]
            scores[cand] = 0
        except BaseException:  # never leave a dirty scratch behind (e.g. KeyboardInterrupt)
            scores[:] = 0
            raise
        keep = self._live[cand]
        return self._top(cand[keep], cand_scores[keep], depth, allowed)

    def _search_compiled(
        self, query: list[tuple[int, float]], depth: int, allowed: Bool | None
    ) -> tuple[I64, F32]:
        """``search``'s exhaustive numpy pass in one call to ``moss._kernels.bm25_top``: the same
        float32 operations in the same order (so the same bits), a heap instead of a partition."""
        assert _kernels is not None
        scores, seen = self._scratch()
        c1, c2 = self._norm()
        delta = []
        if self._delta:
            for tid, w in query:
                entry = self._delta.get(tid)
                if entry is not None:
                    delta.append((entry[0], entry[1], w))
        n = self._n_slots
        size = min(depth, n)
        keys = np.empty(size, np.int64)
        out = np.empty(size, np.float32)
        try:
            got = _kernels.bm25_top(
                scores, seen, self._slot_len[:n], self._live[:n], self._slot_key[:n], allowed,
                self._indptr, self._post_slot, self._post_tf, query, delta, c1, c2, size, keys,
                out,
            )  # fmt: skip
        except ValueError as e:  # the loop's bounds checks: a damaged index, never bad input
            raise MossError(f"keyword index is inconsistent: {e}", code=INTERNAL) from e
        return keys[:got], out[:got]

    def _search_pruned(
        self,
        query: list[tuple[int, float]],
        seg_lists: list[list[tuple[I32, U16]]],
        depth: int,
        allowed: Bool | None,
    ) -> tuple[I64, F32]:
        """Exact top ``depth`` by vectorised MaxScore (Turtle & Flood, 1995).

        Terms are visited by decreasing upper bound ``w`` (rarest first). The postings of a
        visited term that no earlier visited term had become candidates; a candidate gets nothing
        from the earlier terms, and its score is completed by binary search in the postings of
        the later ones, dropping on the way every candidate whose partial score plus the bounds of
        the terms still missing cannot reach ``theta`` (the ``depth``-th best score known so far,
        a lower bound of the final one). Once the bounds of all unvisited terms sum to less than
        ``theta`` no unseen document can enter the top ``depth``, so the long postings of common
        terms are never scanned. The result equals exhaustive scoring.
        """
        order = sorted(range(len(query)), key=lambda i: -query[i][1])
        ws = [query[i][1] for i in order]
        segs_by = [seg_lists[i] for i in order]
        rest = [sum(ws[i:]) for i in range(len(ws))] + [0.0]
        c1, c2 = self._norm()
        _, seen = self._scratch()
        seen_parts: list[I32] = []
        done_slots: list[I32] = []
        done_scores: list[F32] = []
        best = np.empty(0, np.float32)  # the top `depth` completed scores
        theta = 0.0
        slack = 1.0 + 1e-4  # float32 rounding must never drop a document that belongs
        try:
            for i, (w, segs) in enumerate(zip(ws, segs_by)):
                if len(best) >= depth and rest[i] * slack < theta:
                    break
                slots = np.concatenate([s for s, _ in segs]) if len(segs) > 1 else segs[0][0]
                tf = np.concatenate([t for _, t in segs]) if len(segs) > 1 else segs[0][1]
                if i > 0:
                    fresh = ~seen[slots]
                    slots, tf = slots[fresh], tf[fresh]
                if i < len(ws) - 1:
                    seen[slots] = True
                    seen_parts.append(slots)
                keep = self._live[slots]
                if allowed is not None:
                    keep &= self._allowed_slots(slots, allowed)
                slots, tf = slots[keep], tf[keep]
                acc = self._contrib(slots, tf, w, c1, c2)
                for j in range(i + 1, len(ws)):
                    if len(best) + len(acc) >= depth:
                        pool = np.concatenate([best, acc])
                        bound = float(np.partition(pool, len(pool) - depth)[len(pool) - depth])
                        keep = (acc + rest[j]) * slack >= bound
                        slots, acc = slots[keep], acc[keep]
                    if 8 * len(acc) > sum(len(s2) for s2, _ in segs_by[j]):
                        acc = self._dense_add(acc, slots, segs_by[j], ws[j], c1, c2)
                    else:
                        for s2, tf2 in segs_by[j]:
                            self._lookup_add(acc, slots, s2, tf2, ws[j], c1, c2)
                done_slots.append(slots)
                done_scores.append(acc)
                best = np.concatenate([best, acc])
                if len(best) > depth:
                    best = np.partition(best, len(best) - depth)[len(best) - depth :]
                if len(best) >= depth:
                    theta = float(best.min())
        finally:
            for part in seen_parts:
                seen[part] = False
        return self._top(np.concatenate(done_slots), np.concatenate(done_scores), depth, None)

    def _lookup_add(
        self, acc: F32, slots: I32, seg_slots: I32, seg_tf: U16, w: float, c1: float, c2: float
    ) -> None:
        """Add one term segment's contributions for ``slots`` (binary search) into ``acc``."""
        if len(seg_slots) == 0 or len(slots) == 0:
            return
        pos = np.searchsorted(seg_slots, slots)
        np.minimum(pos, len(seg_slots) - 1, out=pos)
        hit = np.flatnonzero(seg_slots[pos] == slots)
        if len(hit):
            acc[hit] += self._contrib(slots[hit], seg_tf[pos[hit]], w, c1, c2)

    def _dense_add(
        self, acc: F32, slots: I32, segs: list[tuple[I32, U16]], w: float, c1: float, c2: float
    ) -> F32:
        """``_lookup_add`` for many candidates (all with ``acc > 0``): one pass over the
        postings against the dense scratch array instead of a binary search per candidate."""
        scores, _ = self._scratch()
        scores[slots] = acc
        try:
            for seg_slots, seg_tf in segs:
                cur = scores[seg_slots]
                hit = np.flatnonzero(cur)
                hit_slots = seg_slots[hit]
                scores[hit_slots] = cur[hit] + self._contrib(hit_slots, seg_tf[hit], w, c1, c2)
            out: F32 = scores[slots]
        finally:
            scores[slots] = 0
        return out

    def _allowed_slots(self, slots: I32, allowed: Bool) -> Bool:
        """``allowed[key]`` for each slot's key, False for keys past the mask's end."""
        keys = self._slot_key[slots]
        ok = keys < len(allowed)
        ok[ok] = allowed[keys[ok]]
        return ok

    def _top(self, slots: I32, scores: F32, depth: int, allowed: Bool | None) -> tuple[I64, F32]:
        """The top ``depth`` of (slots, scores): score descending, key ascending."""
        if allowed is not None:
            ok = self._allowed_slots(slots, allowed)
            slots, scores = slots[ok], scores[ok]
        keys = self._slot_key[slots]
        if len(scores) > depth:
            kth = np.partition(scores, len(scores) - depth)[len(scores) - depth]
            ok = scores >= kth  # keeps every tie at the boundary, so key order decides them
            keys, scores = keys[ok], scores[ok]
        order = np.lexsort((keys, -scores))[:depth]
        return keys[order], scores[order]

    def max_score(self, terms: Sequence[str]) -> float:
        """The supremum of this query's BM25 score over all documents: ``sum(idf * (k1 + 1))``
        over its known terms (repeats counted), which a document approaches as each term's tf
        grows. Every score ``search`` returns is below it; 0.0 when no term is known.
        """
        if self._total_len == 0:
            return 0.0
        return float(sum(w for _, w in self._query(terms)))

    def scores_for(self, terms: Sequence[str], keys: npt.ArrayLike) -> F32:
        """BM25 scores of the given keys (0 for keys absent or matching no term).

        Args:
            terms: analysed query terms, as for ``search``.
            keys: int64 keys.

        Returns:
            float32 scores aligned with ``keys``, as ``search`` reports them (up to the last bit:
            the pruned search may add a document's terms in another order).
        """
        arr = _int_array(keys, "keys")
        out = np.zeros(len(arr), np.float32)
        query = self._query(terms)
        if not query or self._total_len == 0 or len(arr) == 0:
            return out
        slots = np.full(len(arr), -1, np.int64)
        inside = (arr >= 0) & (arr < len(self._key_slot))
        slots[inside] = self._key_slot[arr[inside]]
        ok = np.flatnonzero(slots >= 0)
        q = slots[ok].astype(np.int32)
        acc = np.zeros(len(q), np.float32)
        c1, c2 = self._norm()
        for tid, w in query:
            for seg_slots, seg_tf in self._segments(tid):
                self._lookup_add(acc, q, seg_slots, seg_tf, w, c1, c2)
        out[ok] = acc
        return out

    # ------------------------------------------------------------------ snapshots

    def to_arrays(self) -> dict[str, npt.NDArray[Any]]:
        """The whole index as flat numeric arrays (no objects, no pickle) for a snapshot.

        Pending deltas and tombstones are merged first. The arrays may share memory with the
        index, which never writes into them afterwards (later writes replace or append past them).
        The forward index is not saved: ``from_arrays`` derives it when a remove first needs it.

        Returns:
            ``format`` (int64 ``[2]``), ``slot_key`` (int64), ``slot_len`` (float32), ``indptr``
            (int64, one more than the terms), ``post_slot`` (int32), ``post_tf`` (uint16),
            ``vocab_blob`` (uint8 UTF-8 of the terms, concatenated) and ``vocab_offsets`` (int64,
            one more than the terms).
        """
        # A removed document without terms leaves no dead posting, only a dead slot: merge then
        # too, or the snapshot would bring it back to life.
        dirty = self._delta_postings or self._dead_postings or self._n_live != self._n_slots
        if dirty or self._n_slots != self._main_slots:
            self._merge()
        encoded = [t.encode("utf-8") for t in self._terms]
        offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)), out=offsets[1:])
        n = self._n_slots
        return {
            "format": np.array([FORMAT_VERSION], np.int64),
            "slot_key": self._slot_key[:n],
            "slot_len": self._slot_len[:n],
            "indptr": self._indptr,
            "post_slot": self._post_slot,
            "post_tf": self._post_tf,
            "vocab_blob": np.frombuffer(b"".join(encoded), np.uint8),
            "vocab_offsets": offsets,
        }

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, npt.NDArray[Any]], k1: float = 1.2, b: float = 0.75
    ) -> BM25Index:
        """Rebuild an index from ``to_arrays`` output, without re-tokenising.

        Read-only and memory-mapped arrays are accepted; the large postings arrays are used in
        place (never written), the per-document ones are copied on the first write.

        Args:
            arrays: the mapping ``to_arrays`` returned (e.g. loaded with ``np.load``).
            k1: as for the constructor.
            b: as for the constructor.

        Raises:
            MossError: code ``DESERIALIZATION`` when arrays are missing or inconsistent.
        """
        idx = cls(k1, b)
        try:
            arr: dict[str, npt.NDArray[Any]] = {}
            for name, dtype in _SCHEMA.items():
                arr[name] = np.asarray(arrays[name])
                if arr[name].ndim != 1 or arr[name].dtype != dtype:
                    raise ValueError(f"{name} must be a 1-D {np.dtype(dtype).name} array")
            _require(arr["format"].tolist() == [FORMAT_VERSION], "unknown format version")
            slot_key, slot_len = arr["slot_key"], arr["slot_len"]
            indptr, post_slot = arr["indptr"], arr["post_slot"]
            blob, offsets = arr["vocab_blob"].tobytes(), arr["vocab_offsets"]
            n, n_terms, n_post = len(slot_key), len(indptr) - 1, len(post_slot)
            _require(len(slot_len) == n, "slot arrays disagree")
            _require(n_terms >= 0 and len(offsets) == n_terms + 1, "vocabulary size mismatch")
            _require(len(arr["post_tf"]) == n_post, "post_tf and post_slot sizes differ")
            _require(indptr[0] == 0 and indptr[-1] == n_post, "indptr has wrong bounds")
            _require(bool((np.diff(indptr) >= 0).all()), "indptr is not monotone")
            _require(offsets[0] == 0 and offsets[-1] == len(blob), "vocab_offsets bounds")
            if n_post:
                _require(0 <= post_slot.min() and post_slot.max() < n, "post_slot out of range")
            _require(n == 0 or int(slot_key.min()) >= 0, "negative key")
            terms = [blob[a:z].decode("utf-8") for a, z in pairwise(offsets.tolist())]
            vocab = dict(zip(terms, range(n_terms)))
            _require(len(vocab) == n_terms, "repeated term")
            key_slot = np.full(max(int(slot_key.max()) + 1 if n else 0, 16), -1, np.int64)
            key_slot[slot_key] = np.arange(n)
            _require(bool((key_slot[slot_key] == np.arange(n)).all()), "repeated key")
        except (KeyError, ValueError, IndexError, TypeError, UnicodeDecodeError) as e:
            raise MossError(f"corrupt BM25 snapshot: {e}", code=DESERIALIZATION) from e
        idx._vocab, idx._terms = vocab, terms
        idx._df = np.diff(indptr)
        idx._n_slots = idx._main_slots = idx._n_live = n
        idx._slot_key, idx._slot_len = slot_key, slot_len
        idx._live = np.ones(n, np.bool_)
        idx._key_slot = key_slot
        idx._fwd_slot0 = n  # the forward index of the loaded slots is derived on demand
        idx._fwd_ptr = np.zeros(17, np.int64)
        idx._indptr, idx._post_slot, idx._post_tf = indptr, post_slot, arr["post_tf"]
        idx._total_len = int(slot_len.astype(np.int64).sum())
        return idx


_SCHEMA: dict[str, type[np.generic]] = {
    "format": np.int64,
    "slot_key": np.int64,
    "slot_len": np.float32,
    "indptr": np.int64,
    "post_slot": np.int32,
    "post_tf": np.uint16,
    "vocab_blob": np.uint8,
    "vocab_offsets": np.int64,
}


def _require(ok: bool | np.bool_, what: str) -> None:
    if not ok:
        raise ValueError(what)

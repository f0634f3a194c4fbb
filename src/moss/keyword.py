"""Incremental BM25 keyword index on numpy: exact scores over live documents, fast single writes.

Why hand-written (MEASUREMENTS.md §5): tantivy keeps deleted documents in its statistics until a
merge and needs a ~10 ms commit to make writes visible; bm25s cannot add a document without
re-indexing everything. The API contract (§3.5) wants BM25 statistics that follow every update and
delete at once, so this index scores with *live* N, df and avgdl, recomputed per query.

Layout. Documents live in *slots* (dense internal ids); ``_slot_key`` maps a slot to the engine's
key (row number) and ``_key_slot`` maps back, so a compaction of the engine's rows (``remap``) is
one vectorised pass over the slots and never touches postings. Per slot we keep the token count
(``_slot_len``) and a live flag; a delete only clears the flag (a tombstone) and decrements the
document frequency (``_df``) of the document's terms, which it finds in the *forward index*
(``_fwd_ptr``/``_fwd_term``: the distinct terms of each slot, in slot order).

Memory. A posting costs 6 bytes in the inverted index (int32 slot, uint16 tf) and 4 in the forward
index (int32 term), instead of 16 with float32 tfs in both. Term frequencies are stored as uint16
and *saturate* at 65535: a document repeating one term more often than that scores as if it
repeated it 65535 times (BM25 saturates long before: with k1=1.2 the tf factor is already within
0.01% of its limit there), and no real text does. The forward index keeps tfs (``_fwd_tf``) only
for the slots not yet merged into main, the only ones whose tf it must supply (to ``_merge``).
Snapshots (``to_arrays``) hold no forward index at all: it is derivable from the postings, so
``from_arrays`` leaves it *lazy* (``_fwd_slot0 == _main_slots``: the forward arrays cover only the
slots added after the load) and the first remove of a loaded document derives it with one numpy
sort of the postings (``_materialize_fwd``, ~100 ms per 10M postings). An index that is only
loaded, searched and appended to never pays that, and a merge while lazy drops the forward of the
merged slots again (it is derivable once more).

Postings (term -> slots, tf) are split in two segments:

* **main**: an immutable CSR array (``_indptr``, ``_post_slot``, ``_post_tf``) covering slots
  ``[0, _main_slots)``; slots ascend within each term.
* **delta**: the slots added since, as a dict ``term -> (array('i') slots, array('H') tfs)``
  appended to in place, so adding one document costs a few dict appends, not an array rebuild.

When the delta or the tombstones pass a fraction of main (``_MERGE_FRACTION``), ``_merge`` rebuilds
main in O(postings) with no sort of main (main is already term-major; only the delta is sorted),
dropping dead slots, renumbering the survivors in order and forgetting unused terms. A large
``add`` counts term frequencies with numpy (one sort) instead of per-posting dict appends.

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

import array
import math
import sys
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import chain, pairwise
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import DESERIALIZATION, INTERNAL, InvalidArgumentError, MossError

try:  # the compiled scoring loop (src/moss/_kernels.c), built by setup.py where a compiler exists
    from . import _kernels
except ImportError:  # pragma: no cover - a build without a C compiler: numpy does the same sums
    _kernels = None  # type: ignore[assignment]

__all__ = ["KERNEL", "BM25Index"]

#: Which exhaustive scoring loop ``BM25Index.search`` runs: ``"c"`` (moss._kernels) or ``"numpy"``.
KERNEL = "numpy" if _kernels is None else "c"

FORMAT_VERSION = 2  # 2: uint16 tfs, no forward index (derived lazily)
_MERGE_FRACTION = 0.25  # merge when delta postings or dead postings exceed this share of main
_MIN_DELTA = 16_384  # ... but never for fewer postings than this (small indexes stay in delta)
_BULK_POSTINGS = 4_096  # an add with more postings than this counts term frequencies with numpy
_PRUNE_MAX_TERMS = 16  # MaxScore costs O(terms^2) numpy calls; long queries are scored exhaustively
TF_MAX = 65535  # term frequencies are stored as uint16 and saturate here (module docstring)

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
F32 = npt.NDArray[np.float32]
U16 = npt.NDArray[np.uint16]
Bool = npt.NDArray[np.bool_]


def _stable_order(values: npt.NDArray[np.integer[Any]]) -> I64:
    """``np.argsort(values, kind="stable")`` for small non-negative ints, 5-10x faster.

    Packs (value, position) into one int64 and sorts the values themselves, because numpy's
    ``np.sort`` has SIMD kernels and its ``argsort`` (timsort for int32) does not.
    """
    n = len(values)
    packed = np.sort(values.astype(np.int64) * n + np.arange(n, dtype=np.int64))
    return packed % n if n else packed


def _int_array(values: npt.ArrayLike, what: str) -> I64:
    """``values`` as a 1-D int64 array, or InvalidArgumentError."""
    arr = np.asarray(values)
    if arr.ndim != 1 or not (arr.size == 0 or arr.dtype.kind in "iu"):
        raise InvalidArgumentError(f"{what} must be a 1-D array of integers")
    return arr.astype(np.int64, copy=False)


def _has_duplicates(values: I64) -> bool:
    """Whether an int array repeats a value (sort-based: numpy 2's hash ``np.unique`` is slow)."""
    ordered = np.sort(values)
    return bool((ordered[1:] == ordered[:-1]).any())


def _grow(arr: npt.NDArray[Any], used: int, need: int) -> npt.NDArray[Any]:
    """``arr`` if it can hold ``need`` items and is writeable, else a larger writeable copy."""
    if need <= len(arr) and arr.flags.writeable:
        return arr
    new = np.empty(max(need, 2 * len(arr), 16), dtype=arr.dtype)
    new[:used] = arr[:used]
    return new


class BM25Index:
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
        self.k1 = float(k1)
        self.b = float(b)
        # Vocabulary: term -> id; _df[id] = live documents containing it.
        self._vocab: dict[str, int] = {}
        self._terms: list[str] = []
        self._df: I64 = np.zeros(16, np.int64)
        # Slots.
        self._n_slots = 0
        self._slot_key: I64 = np.empty(16, np.int64)
        self._slot_len: F32 = np.empty(16, np.float32)
        self._live: Bool = np.zeros(16, np.bool_)
        self._key_slot: I64 = np.full(16, -1, np.int64)
        # Forward index: slot s >= _fwd_slot0 has the distinct terms _fwd_term[_fwd_ptr[s - s0]:
        # _fwd_ptr[s - s0 + 1]] (s0 = _fwd_slot0). s0 is 0, or _main_slots while the forward index
        # of main is not derived yet (after from_arrays); then every main slot is live. _fwd_tf
        # holds the tfs of the delta slots only, from forward position _fwd_delta_base() on.
        self._fwd_slot0 = 0
        self._n_fwd = 0
        self._fwd_ptr: I64 = np.zeros(17, np.int64)
        self._fwd_term: I32 = np.empty(16, np.int32)
        self._fwd_tf: U16 = np.empty(16, np.uint16)
        # Main segment (CSR over the terms that existed at the last merge).
        self._main_slots = 0
        self._indptr: I64 = np.zeros(1, np.int64)
        self._post_slot: I32 = np.empty(0, np.int32)
        self._post_tf: U16 = np.empty(0, np.uint16)
        # Delta segment and bookkeeping.
        self._delta: dict[int, tuple[array.array[int], array.array[int]]] = {}
        self._delta_postings = 0
        self._dead_postings = 0
        self._n_live = 0
        self._total_len = 0
        self._local = threading.local()
        # _query results by query terms, valid for one _epoch (bumped by every write).
        self._epoch = 0
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

    # ------------------------------------------------------------------ size and statistics

    def __len__(self) -> int:
        """The number of live documents."""
        return self._n_live

    @property
    def avgdl(self) -> float:
        """Mean token count of the live documents (0.0 when empty)."""
        return self._total_len / self._n_live if self._n_live else 0.0

    def doc_freq(self, term: str) -> int:
        """Live documents containing ``term``."""
        tid = self._vocab.get(term)
        return 0 if tid is None else int(self._df[tid])

    def nbytes(self) -> int:
        """Approximate memory held by the index: arrays, delta and vocabulary (a few ms)."""
        arrays: list[npt.NDArray[Any]] = [self._df, self._slot_key, self._slot_len, self._live]
        arrays += [self._key_slot, self._fwd_ptr, self._fwd_term, self._fwd_tf]
        arrays += [self._indptr, self._post_slot, self._post_tf]
        vocab = sys.getsizeof(self._vocab) + sys.getsizeof(self._terms)
        vocab += sum(map(sys.getsizeof, self._terms))
        return sum(a.nbytes for a in arrays) + 6 * self._delta_postings + vocab

    def _fwd_delta_base(self) -> int:
        """The forward position of the first delta slot's first term (``_fwd_tf[0]``)."""
        return int(self._fwd_ptr[self._main_slots - self._fwd_slot0])

    # ------------------------------------------------------------------ writes

    def add(self, keys: npt.ArrayLike, token_lists: Sequence[Sequence[str]]) -> None:
        """Index documents.

        Args:
            keys: int64 keys, one per document, none of them present already.
            token_lists: the analysed terms of each document (``moss.analysis.analyze``).

        Raises:
            InvalidArgumentError: mismatched lengths, negative, repeated or present keys.
        """
        self._epoch += 1  # every cached _query is stale
        keys_arr = _int_array(keys, "keys")
        n = len(keys_arr)
        if n != len(token_lists):
            raise InvalidArgumentError(
                f"add got {n} keys but {len(token_lists)} token lists; they must match"
            )
        if n == 0:
            return
        if any(isinstance(t, str) for t in token_lists):
            raise InvalidArgumentError("token_lists must hold one list of terms per document")
        if int(keys_arr.min()) < 0:
            raise InvalidArgumentError("keys must be >= 0")
        if _has_duplicates(keys_arr):
            raise InvalidArgumentError("add got the same key twice in one batch")
        inside = keys_arr[keys_arr < len(self._key_slot)]
        present = inside[self._key_slot[inside] >= 0]
        if len(present):
            raise InvalidArgumentError(f"key {int(present[0])} is already in the index")
        lengths = np.fromiter(map(len, token_lists), np.int64, n)
        first = self._n_slots
        slots = np.arange(first, first + n, dtype=np.int64)
        self._slot_key = _grow(self._slot_key, first, first + n)
        self._slot_len = _grow(self._slot_len, first, first + n)
        self._live = _grow(self._live, first, first + n)
        s0 = self._fwd_slot0
        self._fwd_ptr = _grow(self._fwd_ptr, first - s0 + 1, first - s0 + n + 1)
        self._slot_key[first : first + n] = keys_arr
        self._slot_len[first : first + n] = lengths
        self._live[first : first + n] = True
        top = int(keys_arr.max()) + 1
        if top > len(self._key_slot):
            grown = np.full(max(top, 2 * len(self._key_slot)), -1, np.int64)
            grown[: len(self._key_slot)] = self._key_slot
            self._key_slot = grown
        self._key_slot[keys_arr] = slots
        self._n_slots = first + n
        self._n_live += n
        self._total_len += int(lengths.sum())
        if int(lengths.sum()) > _BULK_POSTINGS:
            self._add_bulk(first, token_lists, lengths)
        else:
            self._add_small(first, token_lists)
            if self._delta_postings > max(_MIN_DELTA, _MERGE_FRACTION * len(self._post_slot)):
                self._merge()

    def _term_ids(self, terms: Sequence[str]) -> None:
        """Give ids to the unseen ``terms``."""
        vocab = self._vocab
        new = [t for t in dict.fromkeys(terms) if t not in vocab]
        if not new:
            return
        start = len(self._terms)
        vocab.update(zip(new, range(start, start + len(new))))
        self._terms.extend(new)
        self._df = _grow(self._df, start, start + len(new))
        self._df[start : start + len(new)] = 0

    def _add_small(self, first: int, token_lists: Sequence[Sequence[str]]) -> None:
        """Append a few documents to the delta segment, one dict append per posting."""
        vocab, delta, df = self._vocab, self._delta, self._df
        base, s0 = self._fwd_delta_base(), self._fwd_slot0
        slot = first
        for tokens in token_lists:
            counts = Counter(tokens)
            if len(tokens) > TF_MAX:  # only then can a tf exceed the uint16 range: saturate
                counts = Counter({t: min(c, TF_MAX) for t, c in counts.items()})
            self._term_ids(list(counts))
            df = self._df
            start = self._n_fwd
            self._fwd_term = fwd_term = _grow(self._fwd_term, start, start + len(counts))
            self._fwd_tf = fwd_tf = _grow(self._fwd_tf, start - base, start - base + len(counts))
            i = start
            for term, tf in counts.items():
                tid = vocab[term]
                df[tid] += 1
                fwd_term[i] = tid
                fwd_tf[i - base] = tf
                i += 1
                entry = delta.get(tid)
                if entry is None:
                    delta[tid] = (array.array("i", (slot,)), array.array("H", (tf,)))
                else:
                    entry[0].append(slot)
                    entry[1].append(tf)
            self._n_fwd = i
            self._fwd_ptr[slot - s0 + 1] = i
            self._delta_postings += len(counts)
            slot += 1

    def _add_bulk(self, first: int, token_lists: Sequence[Sequence[str]], lengths: I64) -> None:
        """Count the term frequencies of many documents with numpy; index them in delta or main."""
        flat = list(chain.from_iterable(token_lists))
        self._term_ids(flat)
        n_terms = len(self._terms)
        ids = np.fromiter(map(self._vocab.__getitem__, flat), np.int64, len(flat))
        doc = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
        codes = np.sort(doc * n_terms + ids)  # doc-major, then term; np.sort is SIMD-fast
        starts = np.flatnonzero(np.concatenate(([True], codes[1:] != codes[:-1])))
        pairs = codes[starts]
        tf = np.minimum(np.diff(np.append(starts, len(codes))), TF_MAX).astype(np.uint16)
        pdoc, pterm = np.divmod(pairs, n_terms)
        self._df[:n_terms] += np.bincount(pterm, minlength=n_terms)
        start, base, s0 = self._n_fwd, self._fwd_delta_base(), self._fwd_slot0
        self._fwd_term = _grow(self._fwd_term, start, start + len(pairs))
        self._fwd_tf = _grow(self._fwd_tf, start - base, start - base + len(pairs))
        self._fwd_term[start : start + len(pairs)] = pterm
        self._fwd_tf[start - base : start - base + len(pairs)] = tf
        per_doc = np.bincount(pdoc, minlength=len(lengths))
        self._fwd_ptr[first - s0 + 1 : first - s0 + 1 + len(lengths)] = start + np.cumsum(per_doc)
        self._n_fwd = start + len(pairs)
        self._delta_postings += len(pairs)
        if self._delta_postings > max(_MIN_DELTA, _MERGE_FRACTION * len(self._post_slot)):
            self._merge()
            return
        # Still small next to main: append to the delta, one array extend per distinct term.
        order = _stable_order(pterm)
        terms_sorted = pterm[order]
        slots_sorted = (pdoc[order] + first).astype(np.int32)
        tf_sorted = tf[order]
        bounds = np.flatnonzero(np.diff(terms_sorted)) + 1
        firsts = [0, *bounds.tolist()]
        ends = [*bounds.tolist(), len(order)]
        delta = self._delta
        for tid, a, b in zip(terms_sorted[firsts].tolist(), firsts, ends):
            entry = delta.get(tid)
            if entry is None:
                entry = delta[tid] = (array.array("i"), array.array("H"))
            entry[0].frombytes(slots_sorted[a:b].tobytes())
            entry[1].frombytes(tf_sorted[a:b].tobytes())

    def remove(self, keys: npt.ArrayLike) -> None:
        """Delete documents by key; keys that are absent are ignored.

        Args:
            keys: int64 keys.

        Raises:
            InvalidArgumentError: keys that are not a 1-D integer array.
        """
        self._epoch += 1  # every cached _query is stale
        keys_arr = _int_array(keys, "keys")
        keys_arr = keys_arr[(keys_arr >= 0) & (keys_arr < len(self._key_slot))]
        slots = self._key_slot[keys_arr]
        keys_arr, slots = keys_arr[slots >= 0], slots[slots >= 0]
        if len(slots) == 0:
            return
        if len(slots) > 1:  # a key given twice must be removed once
            slots = np.sort(slots)
            slots = slots[np.concatenate(([True], slots[1:] != slots[:-1]))]
            keys_arr = self._slot_key[slots]
        s0 = self._fwd_slot0
        if s0 and int(slots.min()) < s0:  # a document in main: derive its forward index
            self._materialize_fwd()
            s0 = 0
        self._live[slots] = False
        self._key_slot[keys_arr] = -1
        rel = slots - s0 if s0 else slots
        lo, hi = self._fwd_ptr[rel], self._fwd_ptr[rel + 1]
        count = hi - lo
        total = int(count.sum())
        # Positions of every forward posting of the removed slots, in one vectorised gather.
        pos = np.repeat(lo - np.cumsum(count) + count, count) + np.arange(total)
        np.subtract.at(self._df, self._fwd_term[pos], 1)
        self._n_live -= len(slots)
        self._total_len -= int(self._slot_len[slots].astype(np.int64).sum())
        self._dead_postings += total
        if self._dead_postings > max(
            _MIN_DELTA, _MERGE_FRACTION * (len(self._post_slot) + self._delta_postings)
        ):
            self._merge()

    def remap(self, old_to_new: npt.ArrayLike) -> None:
        """Renumber keys after the engine compacts its rows: key ``k`` becomes ``old_to_new[k]``.

        Args:
            old_to_new: int64 array indexed by old key; entries of absent keys are ignored (-1).

        Raises:
            InvalidArgumentError: the array is too short, maps a present key to a negative
                number, or maps two present keys to the same new key.
        """
        self._epoch += 1  # every cached _query is stale
        mapping = _int_array(old_to_new, "old_to_new")
        live_slots = np.flatnonzero(self._live[: self._n_slots])
        old = self._slot_key[live_slots]
        if len(old) and int(old.max()) >= len(mapping):
            raise InvalidArgumentError(
                f"old_to_new has {len(mapping)} entries but key {int(old.max())} is present"
            )
        new = mapping[old]
        if len(new) and int(new.min()) < 0:
            raise InvalidArgumentError("old_to_new maps a present key to a negative number")
        if _has_duplicates(new):
            raise InvalidArgumentError("old_to_new maps two present keys to the same key")
        # A new array, never in-place: to_arrays may have handed out the old one.
        slot_key = self._slot_key.copy()
        slot_key[live_slots] = new
        self._slot_key = slot_key
        key_slot = np.full(max(int(new.max()) + 1 if len(new) else 0, 16), -1, np.int64)
        key_slot[new] = live_slots
        self._key_slot = key_slot

    def _materialize_fwd(self) -> None:
        """Derive the forward index of main from its postings (it is lazy after ``from_arrays``).

        One sort of (slot, term) pairs packed into int64: slot-major, terms ascending within a
        slot, as ``_merge`` and ``_add_bulk`` write it. Every main slot is live while lazy.
        """
        m = self._fwd_slot0
        if m == 0:
            return
        counts = np.diff(self._indptr)
        codes = self._post_slot.astype(np.int64) << 32
        codes |= np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        codes.sort()  # np.sort has SIMD kernels; argsort(kind="stable") is 5-10x slower
        main_term = codes.astype(np.int32)  # the low 32 bits: the term ids
        del codes
        n_main, tail = len(main_term), self._n_slots - m
        ptr = np.empty(self._n_slots + 1, np.int64)
        ptr[0] = 0
        np.cumsum(np.bincount(self._post_slot, minlength=m), out=ptr[1 : m + 1])
        ptr[m + 1 :] = self._fwd_ptr[1 : tail + 1] + n_main
        self._fwd_term = np.concatenate((main_term, self._fwd_term[: self._n_fwd]))
        self._fwd_ptr = ptr
        self._n_fwd += n_main
        self._fwd_slot0 = 0

    def _merge(self) -> None:
        """Rebuild main from main + delta, dropping dead slots and unused terms, in O(postings).

        While the forward index is lazy (``_fwd_slot0 > 0``) only delta slots can be dead, and the
        forward index of the merged slots is dropped: it is derivable from main again.
        """
        self._epoch += 1  # every cached _query is stale
        n_slots, n_terms, n_fwd = self._n_slots, len(self._terms), self._n_fwd
        main_slots, s0 = self._main_slots, self._fwd_slot0
        dead = self._n_live != n_slots
        live = self._live[:n_slots]
        new_slot = (np.cumsum(live) - 1).astype(np.int32) if dead else None
        per_slot = np.diff(self._fwd_ptr[: n_slots - s0 + 1])  # slots s0 .. n_slots - 1
        # Main postings that survive, already term-major with ascending slots.
        main_counts = np.diff(self._indptr)
        m_term = np.repeat(np.arange(len(main_counts), dtype=np.int32), main_counts)
        m_slot, m_tf = self._post_slot, self._post_tf
        if new_slot is not None and len(m_slot):
            keep = live[m_slot]
            m_term, m_slot, m_tf = m_term[keep], new_slot[m_slot[keep]], m_tf[keep]
        # Delta postings from the forward index (slot-major), sorted stably into term-major.
        lo = self._fwd_delta_base()
        d_slot = np.repeat(
            np.arange(main_slots, n_slots, dtype=np.int32), per_slot[main_slots - s0 :]
        )
        d_term, d_tf = self._fwd_term[lo:n_fwd], self._fwd_tf[: n_fwd - lo]
        if new_slot is not None:
            keep = live[d_slot]
            d_term, d_tf, d_slot = d_term[keep], d_tf[keep], new_slot[d_slot[keep]]
        order = _stable_order(d_term)
        d_term, d_slot, d_tf = d_term[order], d_slot[order], d_tf[order]
        # Merge the two term-major lists: main postings of term t go first, then delta postings.
        cd = np.bincount(d_term, minlength=n_terms)
        if len(m_slot) == 0:
            counts, post_slot, post_tf = cd, d_slot, d_tf
        else:
            cm = np.bincount(m_term, minlength=n_terms)
            counts = cm + cd
            post_slot = np.empty(len(m_slot) + len(d_slot), np.int32)
            post_tf = np.empty(len(post_slot), np.uint16)
            pos_m = np.arange(len(m_slot), dtype=np.int64) + (np.cumsum(cd) - cd)[m_term]
            pos_d = np.arange(len(d_slot), dtype=np.int64) + np.cumsum(cm)[d_term]
            post_slot[pos_m], post_tf[pos_m] = m_slot, m_tf
            post_slot[pos_d], post_tf[pos_d] = d_slot, d_tf
        if new_slot is not None:  # drop the dead slots from the slot arrays
            n_slots = int(live.sum())
            self._slot_key = self._slot_key[: len(live)][live]
            self._slot_len = self._slot_len[: len(live)][live]
            self._live = np.ones(n_slots, np.bool_)
            self._key_slot[self._slot_key] = np.arange(n_slots)
        if s0:  # lazy: forget the forward index of the merged slots
            self._fwd_ptr = np.zeros(1, np.int64)
            self._fwd_term = np.empty(0, np.int32)
            self._n_fwd = 0
            self._fwd_slot0 = n_slots
        elif new_slot is not None:  # drop the dead slots from the forward index
            self._fwd_term = self._fwd_term[:n_fwd][np.repeat(live, per_slot)]
            self._n_fwd = len(self._fwd_term)
            self._fwd_ptr = np.zeros(n_slots + 1, np.int64)
            np.cumsum(per_slot[live], out=self._fwd_ptr[1:])
        self._fwd_tf = np.empty(0, np.uint16)  # every slot is in main now
        # Forget terms no live document has (the others are renumbered densely, in order).
        used = self._df[:n_terms] > 0
        if not used.all():
            term_map = (np.cumsum(used) - 1).astype(np.int32)
            self._fwd_term = term_map[self._fwd_term[: self._n_fwd]]
            counts = counts[used]
            self._terms = [t for t, u in zip(self._terms, used.tolist()) if u]
            self._vocab = dict(zip(self._terms, range(len(self._terms))))
            self._df = self._df[:n_terms][used]
        indptr = np.zeros(len(counts) + 1, np.int64)
        np.cumsum(counts, out=indptr[1:])
        self._indptr, self._post_slot, self._post_tf = indptr, post_slot, post_tf
        self._n_slots = self._main_slots = n_slots
        self._delta = {}
        self._delta_postings = self._dead_postings = 0

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

    def _segments(self, tid: int) -> list[tuple[I32, U16]]:
        """The postings of one term: its main slice and its delta arrays (slots ascending)."""
        segs: list[tuple[I32, U16]] = []
        if tid < len(self._indptr) - 1:
            a, b = int(self._indptr[tid]), int(self._indptr[tid + 1])
            if b > a:
                segs.append((self._post_slot[a:b], self._post_tf[a:b]))
        entry = self._delta.get(tid)
        if entry is not None:
            segs.append((np.array(entry[0], np.int32), np.array(entry[1], np.uint16)))
        return segs

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

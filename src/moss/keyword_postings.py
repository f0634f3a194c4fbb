"""The postings of the BM25 index (moss.keyword): slots, forward index, main and delta segments.

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

:class:`_Postings` holds all of this and every write; :class:`moss.keyword.BM25Index` adds the
scoring and the snapshots. Writes need exclusive access (the engine holds its lock).
"""

from __future__ import annotations

import array
import sys
from collections import Counter
from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import InvalidArgumentError

__all__ = ["TF_MAX"]

_MERGE_FRACTION = 0.25  # merge when delta postings or dead postings exceed this share of main
_MIN_DELTA = 16_384  # ... but never for fewer postings than this (small indexes stay in delta)
_BULK_POSTINGS = 4_096  # an add with more postings than this counts term frequencies with numpy
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


class _Postings:
    """The documents and postings of a BM25 index, and its writes (see the module docstring)."""

    def __init__(self) -> None:
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
        # Bumped by every write: BM25Index caches query statistics for one epoch.
        self._epoch = 0

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

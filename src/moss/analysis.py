"""The text analyser shared by BM25 indexing and BM25 queries.

``analyze(text)`` turns text into the list of terms BM25 counts (docs/api.md §3.5):

1. **Normalise** (non-ASCII text only): Unicode NFKC, so that composed and decomposed accents,
   full-width letters and ligatures (``ﬁ``) all give the same token, then ``str.casefold``
   (``Straße`` -> ``strasse``). ASCII text is NFKC-stable already and only needs ``lower``.
2. **Tokenise** with one compiled regular expression: a token is a run of Unicode letters and
   digits; everything else separates tokens, including ``_`` and apostrophes (``dog's`` -> ``dog``,
   ``s``). Inside a token, combining marks (Unicode category M) are kept, because in scripts such
   as Devanagari the vowel signs are marks: without this ``हिन्दी`` would fall apart into
   one-letter tokens. Scripts written without spaces are not segmented (``東京都`` is one token).
3. **Drop stopwords**: NLTK's English list (153 words once apostrophe forms are dropped; it
   contains the 33-word Lucene list). Quality barely depends on the list: BM25 nDCG@10 on the
   SciFact *train* split (809 queries, title + text) was 0.6959 with it, 0.6937 with Lucene's list
   and 0.6964 with none. The longer list is kept because it makes the index smaller and the
   queries faster (stopwords have the longest postings) at no measured cost.
4. **Stem** with the Snowball English stemmer (PyStemmer, C): ``cats`` -> ``cat``,
   ``running`` -> ``run``, ``physics`` -> ``physic``. There is no fuzzy, prefix or substring
   matching: ``catt`` stays ``catt`` and ``concatenate`` becomes ``concaten``.

Why it is fast: every distinct token is looked up in a module-level dict that maps it to its stem,
or to ``""`` for a stopword, so steady-state analysis is one regex scan plus one dict lookup per
token; the misses of a text are stemmed in one ``stemWords`` call. The dict is bounded (cleared when
it passes ``_CACHE_LIMIT`` entries) so adversarial input cannot grow it without limit. PyStemmer's
stemmer objects are not thread-safe, so stemming happens under a lock; cache hits need no lock.
"""

from __future__ import annotations

import functools
import re
import threading
import unicodedata
from collections.abc import Sequence

import Stemmer

__all__ = ["STOPWORDS", "analyze", "analyze_many"]

# NLTK's English list (nltk_data corpora/stopwords/english) without its entries that contain an
# apostrophe: the tokeniser splits those, and their pieces ("don", "t", "ll", ...) are listed.
STOPWORDS: frozenset[str] = frozenset(
    """
    a about above after again against ain all am an and any are aren as at be because been before
    being below between both but by can couldn d did didn do does doesn doing don down during each
    few for from further had hadn has hasn have haven having he her here hers herself him himself
    his how i if in into is isn it its itself just ll m ma me mightn more most mustn my myself
    needn no nor not now o of off on once only or other our ours ourselves out over own re s same
    shan she should shouldn so some such t than that the their theirs them themselves then there
    these they this those through to too under until up ve very was wasn we were weren what when
    where which while who whom why will with won wouldn y you your yours yourself yourselves
    """.split()
)
# Lower-cased ASCII text: [a-z0-9] is exactly "letter or digit" there, and this plain class runs
# about 1.5x faster than the Unicode-aware [^\W_].
_ASCII_TOKEN = re.compile(r"[a-z0-9]+")
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
_CACHE_LIMIT = 200_000  # about 40 MB when full; a 100k-document corpus has ~100k tokens

_stemmer = Stemmer.Stemmer("english")
_stemmer.maxCacheSize = 0  # the dict below is the cache; a second one would only cost memory
_stem_lock = threading.Lock()
# token -> stem, or "" for a stopword (falsy, so a comprehension can filter on it).
_cache: dict[str, str] = {}


def _mark_class(lo: int, hi: int) -> str:
    """A regex character-class body listing the combining marks in ``[lo, hi)``.

    Variation selectors (U+FE00-FE0F) are left out: they only choose a glyph.
    """
    ranges: list[tuple[int, int]] = []
    for cp in range(lo, hi):
        if unicodedata.category(chr(cp))[0] == "M" and not 0xFE00 <= cp <= 0xFE0F:
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    return "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)


@functools.cache
def _token_bmp() -> re.Pattern[str]:
    """The token pattern for non-ASCII text: letters/digits, with combining marks inside.

    Built on first use (a 4 ms scan of the Basic Multilingual Plane) to keep ``import moss`` cheap.
    Only BMP marks are listed: ``re`` compiles such a class to a bitmap, whereas a class holding
    astral code points is matched range by range, about 40x slower.
    """
    return re.compile(rf"[^\W_]+(?:[{_mark_class(0x300, 0x10000)}][^\W_]*)*")


@functools.cache
def _token_full() -> re.Pattern[str]:
    """``_token_bmp`` plus the astral marks, for the rare text with astral characters.

    Every combining mark lies below U+20000 except variation selectors, which are left out anyway.
    """
    return re.compile(rf"[^\W_]+(?:[{_mark_class(0x300, 0x20000)}][^\W_]*)*")


def _tokens(text: str) -> list[str]:
    """Normalised, case-folded tokens of ``text``; stopwords and stemming not yet applied."""
    if text.isascii():
        return _ASCII_TOKEN.findall(text.lower())
    text = unicodedata.normalize("NFKC", text).casefold()
    pattern = _token_full() if _ASTRAL.search(text) else _token_bmp()
    return pattern.findall(text)


def _analyze_tokens(toks: Sequence[str]) -> list[str]:
    """Stopword removal and stemming of normalised tokens: the cache-miss path."""
    missing = [t for t in dict.fromkeys(toks) if t not in _cache]
    with _stem_lock:
        stems: list[str] = _stemmer.stemWords(missing)
    if len(_cache) + len(missing) > _CACHE_LIMIT:
        _cache.clear()  # crude but bounded; the working vocabulary refills it within a few texts
    found = {t: "" if t in STOPWORDS else s for t, s in zip(missing, stems)}
    _cache.update(found)
    # Not read back from _cache alone: a concurrent clear() may have evicted a hit.
    return [s for t in toks if (s := found[t] if t in found else (_cache.get(t) or _stem_one(t)))]


def _stem_one(token: str) -> str:
    """The term for one token, bypassing the cache ("" for a stopword)."""
    if token in STOPWORDS:
        return ""
    with _stem_lock:
        return str(_stemmer.stemWord(token))


def analyze(text: str) -> list[str]:
    """Analyse one text into BM25 terms (the pipeline is in the module docstring).

    Args:
        text: any text; documents and queries go through the same function.

    Returns:
        The stemmed, case-folded terms in text order, stopwords removed, repeats kept.

    >>> analyze("The cats' owner is RUNNING to the physics lab!")
    ['cat', 'owner', 'run', 'physic', 'lab']
    >>> analyze("the")
    []
    """
    toks = _tokens(text)
    try:
        return [s for t in toks if (s := _cache[t])]
    except KeyError:
        return _analyze_tokens(toks)


def analyze_many(texts: Sequence[str]) -> list[list[str]]:
    """Analyse many texts: equal to ``[analyze(t) for t in texts]``, with less per-call overhead.

    Args:
        texts: the texts.

    Returns:
        One term list per text, in order.
    """
    cache = _cache
    ascii_token = _ASCII_TOKEN.findall
    out: list[list[str]] = []
    append = out.append
    for text in texts:
        toks = ascii_token(text.lower()) if text.isascii() else _tokens(text)
        try:
            append([s for t in toks if (s := cache[t])])
        except KeyError:
            append(_analyze_tokens(toks))
    return out

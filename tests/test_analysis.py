"""Tests of the BM25 analyser (API.md §3.5): tokens, case, stopwords, stemming, Unicode."""

from __future__ import annotations

import threading
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import given, settings
from hypothesis import strategies as st

from moss import analysis
from moss.analysis import STOPWORDS, analyze, analyze_many


@contextmanager
def cache_limit(limit: int) -> Iterator[None]:
    saved = analysis._CACHE_LIMIT
    analysis._CACHE_LIMIT = limit
    try:
        yield
    finally:
        analysis._CACHE_LIMIT = saved


def test_contract_examples() -> None:
    assert analyze("dog's") == analyze("dog") == ["dog"]  # the "s" piece is a stopword
    assert analyze("cats") == analyze("cat") == ["cat"]
    assert analyze("running") == analyze("run") == ["run"]
    assert analyze("physics") == ["physic"]
    assert analyze("the") == []
    assert analyze("The THE the") == []
    assert analyze("catt") == ["catt"]  # no fuzziness: catt is not cat
    assert "cat" not in analyze("concatenate")  # no substring matching
    assert analyze("concatenate") == ["concaten"]


def test_apostrophes_split_into_pieces() -> None:
    assert analyze("rock'n'roll") == ["rock", "n", "roll"]
    assert {"o", "s"} <= STOPWORDS  # NLTK lists the pieces of contractions
    assert analyze("O'Brien's") == ["brien"]


def test_case_folding() -> None:
    assert analyze("CATS Cats cAtS") == ["cat", "cat", "cat"]
    assert analyze("STRASSE") == analyze("Straße") == analyze("strasse")
    assert analyze("ΕΛΛΗΝΙΚΆ") == analyze("ελληνικά")


def test_digits_are_kept() -> None:
    assert analyze("COVID-19 in 2020") == ["covid", "19", "2020"]
    assert analyze("x2") == ["x2"]
    assert analyze("3.14") == ["3", "14"]


def test_separators() -> None:
    assert analyze("foo_bar") == ["foo", "bar"]  # underscore is not a letter or digit
    assert analyze("e-mail, e.mail; e/mail") == ["e", "mail"] * 3
    assert analyze("") == analyze("   \n\t ") == analyze("!?…—") == []


def test_unicode_letters() -> None:
    assert analyze("Café naïve Ελληνικά 東京") == ["café", "naïv", "ελληνικά", "東京"]
    # Composed and decomposed accents, full-width letters and ligatures give the same terms.
    assert analyze("cafe\u0301") == analyze("caf\u00e9") == ["café"]
    assert analyze("ＣＡＴＳ") == ["cat"]
    assert analyze("\ufb01sh") == analyze("fish")
    # Combining marks stay inside a word (Devanagari vowel signs are marks).
    assert analyze("हिन्दी भाषा") == ["हिन्दी", "भाषा"]
    # Text with astral characters: emoji separate, an astral-script word stays whole.
    assert analyze("cats 😀 dogs \U00011013\U00011038") == ["cat", "dog", "\U00011013\U00011038"]


def test_analyze_many_matches_analyze() -> None:
    texts = ["The cats run", "", "Café au lait", "dog's dinner", "東京 2020", "the the"]
    assert analyze_many(texts) == [analyze(t) for t in texts]
    assert analyze_many([]) == []


def test_small_cache_gives_same_terms() -> None:
    texts = [f"running cats number{i} physics" for i in range(50)]
    expected = [analyze(t) for t in texts]
    analysis._cache.clear()
    with cache_limit(5):
        assert analyze_many(texts) == expected
        assert [analyze(t) for t in texts] == expected
        assert len(analysis._cache) <= 5 + 4  # cleared whenever one text would pass the limit


def test_concurrent_analysis_is_consistent() -> None:
    texts = [f"Thread{i % 7} runners running quickly over {i} hills" for i in range(300)]
    expected = [analyze(t) for t in texts]
    analysis._cache.clear()
    results: list[list[list[str]]] = []

    def work() -> None:
        results.append([analyze(t) for t in texts])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 4


text_strategy = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(list("The cats' running physics, DOG's 42 café\u0301_")),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(text_strategy, text_strategy)
def test_analysis_is_local(a: str, b: str) -> None:
    """Terms of "a b" are the terms of a then of b (ASCII and Unicode paths agree)."""
    assert analyze(a + " " + b) == analyze(a) + analyze(b)
    assert analyze_many([a, b]) == [analyze(a), analyze(b)]


@settings(max_examples=200, deadline=None)
@given(text_strategy)
def test_terms_are_clean(text: str) -> None:
    terms = analyze(text)
    for term in terms:
        assert term
        first = term[0]
        assert first.isalnum() or unicodedata.category(first) in ("Nl", "No")
        assert all(c.isalnum() or unicodedata.category(c)[0] == "M" for c in term)
    if text.isascii():
        assert analyze(text.upper()) == terms

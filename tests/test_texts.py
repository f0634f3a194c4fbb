"""TextColumn: a list of texts kept as one UTF-8 blob plus offsets, with an overlay for writes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from moss.texts import TextColumn, encode_texts


def test_blob_layout_and_lazy_reads() -> None:
    blob, offsets = encode_texts(["ab", "", "ü"])
    assert blob.tobytes() == b"ab\xc3\xbc" and offsets.tolist() == [0, 2, 2, 4]
    col = TextColumn(blob, offsets)
    assert [col[0], col[1], col[2], col[-1]] == ["ab", "", "ü", "ü"]
    assert col[0:2] == ["ab", ""]
    with pytest.raises(IndexError):
        col[3]
    with pytest.raises(IndexError):
        col[-4]


def test_writes_go_to_an_overlay_and_never_touch_the_blob() -> None:
    blob, offsets = encode_texts(["one", "two"])
    blob.flags.writeable = False  # as a memory-mapped snapshot would be
    col = TextColumn(blob, offsets)
    col[0] = "uno"
    col.append("three")
    col[2] = "tres"
    assert list(col) == ["uno", "two", "tres"] and len(col) == 3
    assert TextColumn(blob, offsets) == ["one", "two"]
    copy = col.copy()
    copy[1] = "dos"
    assert col[1] == "two" and copy[1] == "dos"


def test_unchanged_column_hands_back_its_own_arrays() -> None:
    blob, offsets = encode_texts(["x", "yy"])
    b2, o2 = TextColumn(blob, offsets).to_arrays()
    assert b2 is blob and o2 is offsets


@pytest.mark.parametrize("edit", [False, True])
def test_to_arrays_after_appends_and_edits(edit: bool) -> None:
    col = TextColumn.from_texts(["a", "bé"])
    col.append("")
    col.append("dø")
    if edit:
        col[0] = "z"
    expect = ["z" if edit else "a", "bé", "", "dø"]
    assert list(TextColumn(*col.to_arrays())) == expect
    assert (col.to_arrays()[0].tobytes()) == "".join(expect).encode()


@given(
    st.lists(st.text(max_size=12), max_size=30),
    st.lists(st.integers(0, 40), max_size=30),
    st.booleans(),
)
def test_take_matches_a_list(texts: list[str], picks: list[int], edit: bool) -> None:
    col = TextColumn.from_texts(texts)
    ref = list(texts)
    if edit and texts:
        col[0] = ref[0] = "edited"
    rows = [p % len(texts) for p in picks] if texts else []
    taken = col.take(rows)
    assert list(taken) == [ref[r] for r in rows]
    blob, offsets = taken.to_arrays()
    assert list(TextColumn(blob, offsets)) == [ref[r] for r in rows]


@pytest.mark.parametrize(
    "offsets",
    [[1, 2], [0, 5], [0, 3, 2, 4], []],
)
def test_damaged_offsets_are_rejected(offsets: list[int]) -> None:
    blob = np.frombuffer(b"abcd", dtype=np.uint8)
    with pytest.raises(ValueError):
        TextColumn(blob, np.asarray(offsets, dtype=np.int64))


def test_file_backed_column_reads_with_pread_and_owns_its_descriptor(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    texts = ["héllo", "", "wörld ✓"]
    blob, offsets = encode_texts(texts)
    path = tmp_path / "blob.bin"
    path.write_bytes(b"HEAD" + blob.tobytes() + b"TAIL")
    fd = os.open(path, os.O_RDONLY)
    col = TextColumn.from_file(fd, 4, blob.size, offsets)
    path.unlink()  # still readable through the open descriptor
    assert list(col) == texts
    assert col.take([2, 0]) == ["wörld ✓", "héllo"]
    b2, o2 = col.copy().to_arrays()
    assert b2.tobytes() == blob.tobytes() and o2.tolist() == offsets.tolist()
    del col, b2
    import gc

    gc.collect()
    with pytest.raises(OSError):
        os.fstat(fd)  # closed with the last column
    fd2 = os.open(__file__, os.O_RDONLY)
    try:
        with pytest.raises(ValueError):
            TextColumn.from_file(fd2, 0, 3, np.asarray([0, 5], dtype=np.int64))
        os.fstat(fd2)  # a failed call leaves the descriptor to the caller
    finally:
        os.close(fd2)


TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)  # no surrogates


@given(st.lists(TEXT, max_size=40), st.integers(1, 30))
def test_encode_texts_is_the_join_of_the_encodings_whatever_the_batch(
    texts: list[str], batch: int
) -> None:
    import moss.texts

    saved = moss.texts._ENCODE_BATCH
    moss.texts._ENCODE_BATCH = batch  # batches of a few bytes: every boundary case
    try:
        parts = [t.encode("utf-8") for t in texts]
        blob, offsets = encode_texts(iter(texts))  # any iterable
        assert blob.tobytes() == b"".join(parts)
        assert offsets.tolist() == [0, *np.cumsum([len(p) for p in parts]).tolist()]
        with pytest.raises(UnicodeEncodeError):  # a lone surrogate has no UTF-8
            encode_texts([*texts, "a\ud800"])
    finally:
        moss.texts._ENCODE_BATCH = saved

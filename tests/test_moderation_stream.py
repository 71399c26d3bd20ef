"""The streaming guard: no banned word is ever shown, whatever the chunking, and the result equals a whole check."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daehwa.moderation import WordFilter

_FILTER: list[WordFilter] = []


def word_filter() -> WordFilter:
    if not _FILTER:
        _FILTER.append(WordFilter())
    return _FILTER[0]


def stream(text: str, cuts: list[int], action: str = "mask") -> tuple[list[str], object]:
    guard = word_filter().guard(action)  # type: ignore[arg-type]
    pieces, last = [], 0
    for cut in [*sorted(cuts), len(text)]:
        pieces.append(guard.feed(text[last:cut]))
        last = cut
    pieces.append(guard.finish())
    return pieces, guard


BANNED_IN_CONTEXT = ["그냥 씨발 진짜", "ㄱㅐㅅㅐㄲㅣ야", "조오오온나 멀어", "f.u.c.k you", "너 tlqkf", "시 발 놈아",
                     "아 18새끼", "병신년 아니고 병신", "새끼 고양이 개새끼"]  # fmt: skip


@pytest.mark.parametrize("text", BANNED_IN_CONTEXT)
def test_every_split_into_two_chunks_hides_the_word(text: str) -> None:
    whole = word_filter().check(text)
    assert whole.hit
    for cut in range(len(text) + 1):
        pieces, guard = stream(text, [cut])
        shown = "".join(pieces)
        assert shown == whole.masked, cut
        assert guard.matches == list(whole.matches)  # type: ignore[attr-defined]
        for m in whole.matches:
            assert set(shown[m.start : m.end]) <= {"*", " "}


ALPHABET = [
    *[
        "씨",
        "발",
        "시",
        "이",
        "병",
        "신",
        "년",
        "새끼",
        "고양이",
        "점",
        "ㅅ",
        "ㅂ",
        "ㄱ",
        "ㅐ",
        "조",
        "오",
        "온",
        "나",
        "18",
        "억",
        ".",
        "t",
        "l",
        "q",
        "k",
        "f",
        "u",
        "c",
        "sh",
        "1",
        "ㅋ",
        "아",
    ],
    " ",
    " ",
    "\n",
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(ALPHABET), max_size=40), st.lists(st.integers(0, 120), max_size=8))
def test_streamed_mask_equals_whole_check(pieces: list[str], cuts: list[int]) -> None:
    text = "".join(pieces)
    whole = word_filter().check(text)
    shown, guard = stream(text, [c for c in cuts if c <= len(text)])
    assert "".join(shown) == whole.masked
    assert guard.matches == list(whole.matches)  # type: ignore[attr-defined]


def test_block_stops_before_the_word_and_then_shows_nothing() -> None:
    text = "안녕하세요 오늘은 날씨가 좋네요 그런데 씨발 이게 뭐야 정말 너무하네 " + "하" * 40
    pieces, guard = stream(text, list(range(0, len(text), 3)), action="block")
    shown = "".join(pieces)
    assert guard.blocked  # type: ignore[attr-defined]
    assert shown == text[: text.index("씨발")]
    assert [m.word for m in guard.matches] == ["씨발"]  # type: ignore[attr-defined]


def test_flag_passes_text_through_at_once_and_counts() -> None:
    guard = word_filter().guard("flag")
    assert guard.feed("그냥 씨") == "그냥 씨"
    assert guard.feed("발 진짜") == "발 진짜"
    assert guard.finish() == ""
    assert [(m.word, m.start, m.end) for m in guard.matches] == [("씨발", 3, 5)]
    assert not guard.blocked


def test_off_passes_everything() -> None:
    guard = word_filter().guard("off")
    assert guard.feed("씨발") == "씨발"
    assert guard.finish() == ""
    assert guard.matches == []


def test_hold_back_is_bounded_by_the_longest_word() -> None:
    longest = word_filter().stats.longest
    guard = word_filter().guard("mask")
    text = "평범한 문장입니다 " * 30
    shown = "".join(guard.feed(c) for c in text)
    held = len(text) - len(shown)
    # At most longest + 2 letters (plus the spaces between them) are held back.
    assert 0 < held <= 2 * (longest + 2)
    assert shown + guard.finish() == text


def test_a_stream_keeps_its_automaton_across_a_reload(tmp_path) -> None:  # type: ignore[no-untyped-def]
    words = tmp_path / "w.txt"
    words.write_text("바보\n", encoding="utf-8")
    filt = WordFilter([words], builtin=False)
    guard = filt.guard("mask")
    first = guard.feed("너 바")
    words.write_text("멍청이\n", encoding="utf-8")
    filt.reload()
    assert first + guard.feed("보야") + guard.finish() == "너 **야"
    assert filt.check("너 바보야").matches == ()


def test_safe_text_is_released_while_the_stream_stalls() -> None:
    """Issue 15: eight characters then a stall showed nothing; no listed word can start in "안녕하세요 반갑"."""
    guard = word_filter().guard("mask")
    shown = guard.feed("안녕하세요 반갑")
    assert shown.startswith("안녕하세요 ")
    assert shown + guard.feed("습니다") + guard.finish() == "안녕하세요 반갑습니다"


def test_a_word_that_may_still_be_under_way_is_held() -> None:
    guard = word_filter().guard("mask")
    assert guard.feed("그냥 씨") == "그냥 "  # 씨발 may follow
    assert guard.feed("발") == ""  # a complete match waits for the letter after it (씨발점 is allowed)
    assert guard.feed(" 진짜") + guard.finish() == "** 진짜"


@pytest.mark.parametrize(
    ("fed", "held"),
    [
        ("너 ㄱ", "ㄱ"),  # jamo: ㄱ + ㅐ composes to 개
        ("조", "조"),  # an open syllable: 조 + 온 folds to 존
        ("ㄱㅏㄴ", "ㄱㅏㄴ"),  # composed from jamo: 간 + ㅏ reads 가나
        ("sh1", "sh1"),  # a digit after a Latin letter reads as one once a letter follows (sh1t)
    ],
)
def test_the_end_that_the_next_chunk_may_change_is_held(fed: str, held: str) -> None:
    guard = word_filter().guard("mask")
    assert guard.feed(fed) == fed[: len(fed) - len(held)]


@pytest.mark.parametrize(
    ("text", "cuts"),
    [
        ("motherfucking집잉옘바아알먹젓라도미 친놈ㄲ", [9, 10]),
        ("bullshit개줌마만미개인ㅂㅅj엉ㅏ!\n노", [0, 8, 12, 17, 18, 20, 21]),
    ],
)
def test_a_match_found_again_after_trimming_is_not_counted_twice(text: str, cuts: list[int]) -> None:
    """Released text is trimmed: shit inside an already shown bullshit must not become a second match."""
    pieces, guard = stream(text, cuts)
    whole = word_filter().check(text)
    assert "".join(pieces) == whole.masked
    assert guard.matches == list(whole.matches)  # type: ignore[attr-defined]

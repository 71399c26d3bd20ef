"""The word filter: evasions it must catch, ordinary text it must leave alone, offsets into the original text."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daehwa.config import Settings
from daehwa.moderation import (
    BLOCK_REASONS,
    ModerationPolicy,
    WordFilter,
    block_reason,
    build_moderator,
    policy_from_settings,
)
from daehwa.moderation.normalize import analyze, fast_text

from .conftest import SHARED, require

WORDLISTS = SHARED / "data" / "wordlists"
SHARED_LISTS = [WORDLISTS / n for n in ("doublems_korean_bad_words.txt", "ldnoobw_ko.txt", "ldnoobw_en.txt")]


@pytest.fixture(scope="module")
def builtin() -> WordFilter:
    return WordFilter()


@pytest.fixture(scope="module")
def with_shared() -> WordFilter:
    require(all(p.is_file() for p in SHARED_LISTS), f"the shared word lists in {WORDLISTS} are missing")
    return WordFilter(SHARED_LISTS)


# (text, the original substring the match must cover exactly)
EVASIONS = [
    ("시 발", "시 발"),
    ("씨@발", "씨@발"),
    ("병.신", "병.신"),
    ("ㄱㅐㅅㅐㄲㅣ", "ㄱㅐㅅㅐㄲㅣ"),
    ("ㅅㅂ", "ㅅㅂ"),
    ("ㅂㅅ", "ㅂㅅ"),
    ("18새끼", "18새끼"),
    ("십8", "십8"),
    ("2C팔", "C팔"),
    ("g랄", "g랄"),
    ("tlqkf", "tlqkf"),
    ("씨이발", "씨이발"),
    ("조오오온나", "조오오온나"),
    ("ｓｈｉｔ", "ｓｈｉｔ"),  # full-width
    ("ѕhit", "ѕhit"),  # Cyrillic ѕ
    ("𝐟𝐮𝐜𝐤", "𝐟𝐮𝐜𝐤"),  # mathematical bold, outside the BMP
    ("f.u.c.k", "f.u.c.k"),
    ("sh1t", "sh1t"),
    ("씨\u200b발", "씨\u200b발"),  # zero-width space
    ("시\u1107\u1161\u11af", "시\u1107\u1161\u11af"),  # 발 as conjoining jamo (NFD)
    ("ㅅl발", "ㅅl발"),
    ("씨 발 놈아", "씨 발 놈"),
    ("qudtls", "qudtls"),
    ("十팔", "十팔"),
    ("FUCK", "FUCK"),
]


@pytest.mark.parametrize(("text", "covered"), EVASIONS)
def test_evasions_are_caught_with_the_exact_original_span(builtin: WordFilter, text: str, covered: str) -> None:
    result = builtin.check(f"아니 {text} 진짜")
    assert result.hit, text
    spans = [result.text[m.start : m.end] for m in result.matches]
    assert covered in spans
    assert covered not in result.masked


TRAPS = [
    "시발점",
    "살며시 발라",
    "송윤아씨 바쁘게",
    "18억",
    "18%",
    "새끼 고양이",
    "병신년",
    "시 발표",
    "2018년 18% 새끼",
    "class",
    "Scunthorpe",
    "assassin",
    "재미있게 봤어요",
    "지인이랑 갔어요",
    "1,800원",
    "ㅋㅋㅋㅋ ㅠㅠ",
    "한남동 맛집",  # 한남 (a slur) inside place names and "한 남자" written together
    "한남대교 건너서",
    "그 한남자를 사랑했다",
    "심장이 쿵쾅쿵쾅",  # 쿵쾅이 (a slur) is listed, the sound word is not
]


@pytest.mark.parametrize(
    ("text", "covered", "category"),
    [("한남들 수준", "한남", "hate"), ("쿵쾅이들 몰려온다", "쿵쾅이", "hate"), ("이 노친네가", "노친네", "insult"),
     ("짱개 소리 하지 마", "짱개", "hate"), ("듣보잡이 뭘 안다고", "듣보잡", "insult")],
)  # fmt: skip
def test_slurs_and_insults_of_the_product_list(builtin: WordFilter, text: str, covered: str, category: str) -> None:
    result = builtin.check(text)
    assert [(text[m.start : m.end], m.category) for m in result.matches] == [(covered, category)]


@pytest.mark.parametrize("text", TRAPS)
def test_ordinary_text_passes(builtin: WordFilter, text: str) -> None:
    result = builtin.check(text)
    assert result.matches == ()
    assert result.masked == text


@pytest.mark.parametrize("text", ["시발점", "살며시 발라", "송윤아씨 바쁘게", "18억", "18%", "새끼 고양이", "병신년"])
def test_ordinary_text_passes_with_the_shared_lists(with_shared: WordFilter, text: str) -> None:
    assert with_shared.check(text).matches == ()


def test_match_fields_and_masking(builtin: WordFilter) -> None:
    text = "Hi, 넌 진짜 씨@발 놈이야 and a f.u.c.k!"
    result = builtin.check(text)
    assert [(m.word, m.category) for m in result.matches] == [("씨발놈", "insult"), ("fuck", "profanity")]
    assert [text[m.start : m.end] for m in result.matches] == ["씨@발 놈", "f.u.c.k"]
    assert result.masked == "Hi, 넌 진짜 *** *이야 and a *******!"
    assert len(result.masked) == len(text)


def test_offsets_survive_characters_that_expand_and_newlines(builtin: WordFilter) -> None:
    # ﬁ becomes two letters and ㈜ three; offsets must still point into the original text.
    text = "ﬁne ㈜회사\n두 번째 줄 병신\n셋째 줄 ｆｕｃｋ"
    result = builtin.check(text)
    assert [text[m.start : m.end] for m in result.matches] == ["병신", "ｆｕｃｋ"]
    # No match crosses a line: "시" ends one line, "발" starts the next.
    assert builtin.check("시\n발").matches == ()


def test_overlapping_matches_report_the_longest(builtin: WordFilter) -> None:
    result = builtin.check("씨발새끼")
    assert [(m.word, m.start, m.end) for m in result.matches] == [("씨발새끼", 0, 4)]


def test_allowed_word_only_covers_what_it_contains(builtin: WordFilter) -> None:
    # 새끼 inside 새끼 고양이 is allowed, but 개새끼 reaches outside it.
    result = builtin.check("개새끼 고양이")
    assert [(m.word, m.start, m.end) for m in result.matches] == [("개새끼", 0, 3)]


# Text made of pieces that exercise every rule: listed words, traps, separators, jamo, stretches, digits, Latin.
PIECES = [
    *[
        "시",
        "발",
        "씨",
        "이",
        "병",
        "신",
        "년",
        "새끼",
        "고양이",
        "점",
        "ㅅ",
        "ㅂ",
        "ㅐ",
        "ㄱ",
        "오",
        "온",
        "조",
        "나",
        "18",
        "억",
        "%",
        ".",
        "@",
        "tlqkf",
        "fuck",
        "class",
        "a",
        "1",
        "ㅋㅋ",
        "十",
        "ﬁ",
        "아",
    ],
    " ",
    " ",
    "\n",
    "\u200b",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=30))
def test_fast_path_finds_what_a_full_analysis_finds(pieces: list[str]) -> None:
    text = "".join(pieces)
    compiled = _builtin_compiled()
    full = []
    offset = 0
    for line in text.split("\n"):
        full.extend(compiled.evaluate(analyze(line, offset)))
        offset += len(line) + 1
    assert compiled.find(text) == full


def test_fast_text_is_the_analysis_before_composition() -> None:
    text = "Ａb  시.발 ｆ\u200b ﬁ ㈜\nx"
    units = analyze(text)
    assert fast_text(text) == "ab시발ffi(주)\nx".replace("(", "").replace(")", "")
    assert units.text == fast_text(text)


_CACHE: dict[str, WordFilter] = {}


def _builtin_compiled():  # type: ignore[no-untyped-def]
    # Hypothesis dislikes function-scoped fixtures; one filter for the whole module is enough.
    return _CACHE.setdefault("builtin", WordFilter())._compiled


def test_policy_override_puts_persona_over_global() -> None:
    policy = ModerationPolicy(input="block", output="mask")
    assert policy.override(input=None, output="block") == ModerationPolicy(input="block", output="block")
    assert policy.override(input="flag") == ModerationPolicy(input="flag", output="mask")
    assert policy.override() == policy


def test_block_reasons_are_localized() -> None:
    assert block_reason("ko-KR,ko;q=0.9,en;q=0.8") == BLOCK_REASONS["ko"]["input"]
    assert block_reason("en-US") == "Your message contains language that isn't allowed, so it was not sent."
    assert block_reason("ko", "output") == BLOCK_REASONS["ko"]["output"]
    assert block_reason(None) == "부적절한 표현이 포함되어 있어 메시지를 보낼 수 없어요."
    assert block_reason("fr") == BLOCK_REASONS["en"]["input"]


def test_build_moderator_from_settings(tmp_path: Path) -> None:
    words = tmp_path / "words.txt"
    words.write_text("바보멍청이\tinsult\n", encoding="utf-8")
    settings = Settings(
        data_dir=tmp_path, filter_word_files=[words], filter_builtin_list=False, filter_output_action="flag"
    )
    moderator = build_moderator(settings)
    assert [m.word for m in moderator.check("이 바보 멍청이").matches] == ["바보멍청이"]
    assert moderator.check("씨발").matches == ()  # the built-in list is off
    assert policy_from_settings(settings) == ModerationPolicy(input="block", output="flag")

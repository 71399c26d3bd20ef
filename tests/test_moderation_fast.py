"""The fast check path against the full analysis: offsets from flags, composition in regions, folds in windows."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daehwa.moderation import WordFilter
from daehwa.moderation.normalize import (
    Offsets,
    analyze,
    fast_text,
    fast_units,
    keyboard_form,
    normalize_word,
    normalize_words,
)

# Words that make every kind of hit: stretched syllables (씨이발, 조오온나), decomposed jamo (ㄱㅐ새끼), look-alikes
# (18, c발), keyboard forms (tlqkf), initials (ㄱㅅㄲ), Latin edges, allowed words around banned ones, and one long
# word so that the fold windows are wide.
WORDS = ["씨발", "존나", "개새끼", "병신", "애액", "fuck", "바보멍청이똥개해삼말미잘", "조온", "미친놈"]
ALLOWED = ["시발점", "새끼 고양이", "존나게 귀여운"]
PIECES = [
    *"씨시이발존조오온나아개새끼병신애액미친놈바보멍청똥해삼말잘고양점귀여운게",
    *"ㄱㅐㅅㅂㄲㅣㅗㅏ",
    "18",
    "c",
    "tlqkf",
    "fuck",
    "l",
    "1",
    " ",
    " ",
    ".",
    "\n",
    "ﬁ",
    "가나다라마",
    "바보멍청이이똥개해삼마알미잘",
    "이이",
]


@pytest.fixture(scope="module")
def compiled():  # type: ignore[no-untyped-def]
    return WordFilter(builtin=False, words=WORDS, allowed=ALLOWED)._compiled


def _full(compiled, text: str):  # type: ignore[no-untyped-def]
    out, offset = [], 0
    for line in text.split("\n"):
        out.extend(compiled.evaluate(analyze(line, offset)))
        offset += len(line) + 1
    return out


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=120))
def test_fast_path_equals_full_analysis_on_long_texts(pieces: list[str]) -> None:
    compiled = _FILTER.setdefault("f", WordFilter(builtin=False, words=WORDS, allowed=ALLOWED))._compiled
    text = "".join(pieces)
    assert compiled.find(text) == _full(compiled, text)


_FILTER: dict[str, WordFilter] = {}


def test_folds_far_apart_and_at_the_edges_are_found(compiled) -> None:  # type: ignore[no-untyped-def]
    # Several windows in one text, a fold at the very start and at the very end, and ordinary text between.
    filler = "가나다라마바사 " * 6
    text = f"씨이발 {filler}조오오온나 {filler}바보멍청이이똥개해삼마알미잘 {filler}미친노옴"
    found = compiled.find(text)
    assert [(m.word, text[m.start : m.end]) for m in found] == [
        ("씨발", "씨이발"),
        ("존나", "조오오온나"),
        ("바보멍청이똥개해삼말미잘", "바보멍청이이똥개해삼마알미잘"),  # folds far inside a long word
        ("미친놈", "미친노옴"),
    ]
    assert found == _full(compiled, text)


def test_random_texts_match_the_full_analysis(compiled) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(5)
    for _ in range(300):
        text = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 200)))
        assert compiled.find(text) == _full(compiled, text), text


@given(st.text(alphabet=st.sampled_from(["a", "B", "시", "ㄱ", " ", ".", "\u200b", "Ａ", "♡", "\n", "1", "\t"])))
def test_offsets_map_fast_text_back_to_the_text(text: str) -> None:
    fast = fast_units(text)
    assert fast is not None
    norm, flags = fast
    assert norm == fast_text(text)
    assert len(flags) == len(text)
    units = analyze(text)
    if units.text != norm:
        return  # composition changed the units (ㄱ + a letter): the filter composes before mapping
    offsets = Offsets(flags, len(norm))
    # Forward, backward and repeated lookups all agree with the analysis.
    order = list(range(len(norm))) + list(reversed(range(len(norm)))) + [0] * bool(norm)
    for k in order:
        assert offsets.original(k) == units.starts[k]
    assert offsets.all() == units.starts


def test_expanding_characters_take_the_full_analysis() -> None:
    assert fast_units("ﬁ") is None
    assert fast_units("㎏") is None
    assert fast_units("Ａ㈜") == ("a주", b"\x01\x01")


def test_batch_normalisation_equals_one_word_at_a_time() -> None:
    words = ["시 발", "ㅆ1", "ㄷㅐ출", "ＦＵＣＫ", "sh1t", "", "a\nb", "🖕", "개새끼", "ㅅㅂ"]
    assert normalize_words(words) == [normalize_word(w) for w in words]
    assert normalize_words([]) == []


def test_keyboard_form_of_a_joined_list_keeps_other_characters() -> None:
    assert keyboard_form("시발") == "tlqkf"
    assert keyboard_form("시발x") is None
    assert keyboard_form("시발\nabc", strict=False) == "tlqkf\nabc"


# -- the compiled cache ------------------------------------------------------------------------------------------------
def test_cache_gives_the_same_filter_and_is_used_on_the_next_start(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    words = tmp_path / "words.txt"
    words.write_text("씨발\n바보\tinsult\n🖕\n", encoding="utf-8")
    cache = tmp_path / "cache"
    built = WordFilter([words], builtin=False, cache_dir=cache)
    assert not built.stats.cached
    assert len(list(cache.glob("*.filter"))) == 1
    caplog.clear()
    loaded = WordFilter([words], builtin=False, cache_dir=cache)
    assert loaded.stats.cached
    # Skipped entries are still reported on a cached start.
    assert any("has no letters" in r.getMessage() for r in caplog.records)
    for text in ["씨이발 바.보", "tlqkf", "시발점", "ㅅㅂ 바보야", "평범한 문장"]:
        assert loaded.check(text) == built.check(text)
    assert loaded.stats.as_dict() | {"cached": False, "build_seconds": 0} == built.stats.as_dict() | {
        "build_seconds": 0
    }


def test_changed_lists_miss_the_cache(tmp_path) -> None:  # type: ignore[no-untyped-def]
    words = tmp_path / "words.txt"
    words.write_text("씨발\n", encoding="utf-8")
    cache = tmp_path / "cache"
    filt = WordFilter([words], builtin=False, cache_dir=cache)
    words.write_text("씨발\n바보\tinsult\n", encoding="utf-8")
    filt.reload()
    assert not filt.stats.cached
    assert [m.word for m in filt.check("바보").matches] == ["바보"]
    words.write_text("씨발\n", encoding="utf-8")
    filt.reload()  # back to the first lists: their compiled form is still there
    assert filt.stats.cached
    assert filt.check("바보").matches == ()


def test_a_damaged_cache_file_is_rebuilt(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    cache = tmp_path / "cache"
    WordFilter(builtin=False, words=["바보"], cache_dir=cache)
    (path,) = cache.glob("*.filter")
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    filt = WordFilter(builtin=False, words=["바보"], cache_dir=cache)
    assert not filt.stats.cached
    assert "unusable" in caplog.text
    assert [m.word for m in filt.check("바.보").matches] == ["바보"]
    assert WordFilter(builtin=False, words=["바보"], cache_dir=cache).stats.cached  # rewritten


def test_an_unwritable_cache_only_costs_a_build(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "file"
    blocker.write_text("not a directory", encoding="utf-8")
    filt = WordFilter(builtin=False, words=["바보"], cache_dir=blocker / "cache")
    assert [m.word for m in filt.check("바보").matches] == ["바보"]
    assert "cannot be written" in caplog.text


def test_the_cache_keeps_only_the_newest_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cache = tmp_path / "cache"
    for i in range(5):
        WordFilter(builtin=False, words=[f"바보{i}"], cache_dir=cache)
    assert len(list(cache.glob("*.filter"))) == 3
    assert not list(cache.glob("*.tmp*"))


def test_plain_list_files_read_like_parsed_ones(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from daehwa.errors import ConfigError
    from daehwa.moderation.lists import parse_lines, read_list

    plain = tmp_path / "plain.txt"
    plain.write_text("씨발\n\n  바 보  \r\nfuck\n", encoding="utf-8")
    text = plain.read_text(encoding="utf-8")
    assert read_list(plain) == list(parse_lines(text.splitlines(), source=str(plain)))
    assert [e.source for e in read_list(plain)] == [f"{plain}:1", f"{plain}:3", f"{plain}:4"]
    plain.write_text("씨발\n" + "가" * 101 + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"plain.txt:2 is 101 characters long"):
        read_list(plain)


def test_build_priorities_allowed_then_listed_then_variants() -> None:
    # 시발 types tlqkf; "tlqkf" listed by itself keeps its own category, a repeated word keeps its first category,
    # and an allowed spelling beats the same banned one.
    filt = WordFilter(
        builtin=False, words=[("시발", "insult"), ("tlqkf", "hate"), ("바보", "insult"), ("바보", "hate"), "점"],
        allowed=["점"],
    )  # fmt: skip
    found = {m.word: m.category for m in filt.check("tlqkf 바보 점").matches}
    assert found == {"tlqkf": "hate", "바보": "insult"}
    assert [(m.word, m.category) for m in filt.check("ㅅㅂ 시발").matches] == [("시발", "insult")]
    assert filt.stats.words == 5 and filt.stats.allowed == 1


def test_plain_list_with_blank_lines_and_braces_in_the_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from daehwa.moderation.lists import parse_lines, read_list

    plain = tmp_path / "{odd} name.txt"
    plain.write_text("\n씨발\n\n\n바보\n", encoding="utf-8")
    assert read_list(plain) == list(parse_lines(plain.read_text(encoding="utf-8").splitlines(), source=str(plain)))
    assert [e.source for e in read_list(plain)] == [f"{plain}:2", f"{plain}:5"]

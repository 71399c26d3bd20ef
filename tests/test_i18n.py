"""The sentences of every ko/en table: both languages for every key, the same fields in each, and waits for people."""

from __future__ import annotations

import string
from pathlib import Path

import pytest

from daehwa.django.messages import SENTENCES
from daehwa.errors import ConfigError
from daehwa.i18n import MESSAGES, SUPPORTED_LOCALES, format_duration, load_texts, normalize_locale, t
from daehwa.intelligence import forms, parsers
from daehwa.streamlit_ui.texts import TEXTS

#: Every table read from a packaged TOML file (``load_texts``), by the file it comes from.
TABLES = {
    "messages.toml": MESSAGES,
    "streamlit_ui/texts.toml": TEXTS,
    "django/messages.toml": SENTENCES,
    "intelligence/forms.toml": forms.TEXTS,
    "intelligence/form_reasons.toml": forms._VALUE_REASONS,
    "intelligence/parser_reasons.toml": parsers.REASONS,
}
#: Korean-only fields: the particle that fits the word before it (을/를, 으로/로); English has none.
PARTICLES = {"eul", "ro"}


def fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


@pytest.mark.parametrize(("file", "key"), [(file, key) for file, table in TABLES.items() for key in table])
def test_every_sentence_has_both_languages_with_the_same_fields(file: str, key: str):
    sentence = TABLES[file][key]
    assert set(sentence) == set(SUPPORTED_LOCALES)
    assert all(text.strip() for text in sentence.values())
    assert fields(sentence["ko"]) - PARTICLES == fields(sentence["en"]), sentence


def test_every_sentence_file_is_one_of_the_tables():
    # A new table must join TABLES above, so the checks run on it too.
    root = Path(__file__).resolve().parent.parent / "daehwa"
    data = {p.relative_to(root).as_posix() for p in root.rglob("*.toml")}
    texts = {f for f in data if not f.startswith(("personas/", "catalogues/", "providers/"))}
    assert texts == set(TABLES)


def test_the_tables_keep_their_sentences():
    assert TEXTS["login"] == {"ko": "로그인", "en": "Log in"}
    assert SENTENCES["reconnecting"] == {
        "ko": "연결이 끊겼어요. 다시 연결하는 중…",
        "en": "Connection lost. Reconnecting…",
    }
    assert forms.TEXTS["confirm"]["ko"] == (
        "입력하신 내용을 확인해 주세요.\n{summary}\n"
        '맞으면 "네", 고칠 항목이 있으면 알려 주세요 (예: "인원 3명으로 바꿔 주세요").'
    )
    assert parsers.REASONS["no_such_date"]["ko"] == "그런 날짜는 없어요"


def test_a_broken_sentence_file_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    package = tmp_path / "sentences_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "one_language.toml").write_text('[hello]\nko = "안녕"\n')
    (package / "not_toml.toml").write_text("[hello\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"\[hello\] must hold exactly a ko and an en string"):
        load_texts("sentences_pkg", "one_language.toml")
    with pytest.raises(ConfigError, match="Cannot read the sentences"):
        load_texts("sentences_pkg", "not_toml.toml")
    with pytest.raises(ConfigError, match="Cannot read the sentences"):
        load_texts("sentences_pkg", "missing.toml")


def test_t_fills_fields_and_picks_the_language():
    assert t("rate_limited_requests", "en", limit=1000, wait="5 seconds") == (
        "Too many messages: the limit is 1,000 per minute. Try again in 5 seconds."
    )
    assert t("fallback_reply", "en-US,en;q=0.5") == MESSAGES["fallback_reply"]["en"]
    assert t("fallback_reply") == MESSAGES["fallback_reply"]["ko"]
    assert normalize_locale("de-DE,en;q=0.5") == "en" and normalize_locale("de") == "ko"


@pytest.mark.parametrize(
    ("seconds", "ko", "en"),
    [
        (0.0, "1초", "1 second"),
        (0.2, "1초", "1 second"),
        (12.0, "12초", "12 seconds"),
        (59.01, "60초", "60 seconds"),
        (119.5, "2분", "2 minutes"),
        (150.0, "3분", "3 minutes"),  # rounded up: never promise less than Retry-After
        (7199.0, "2시간", "2 hours"),
        (9.5 * 3600, "9시간 30분", "9 hours 30 minutes"),
        (24 * 3600, "24시간", "24 hours"),
        (2 * 3600 + 30, "2시간 1분", "2 hours 1 minute"),
    ],
)
def test_format_duration_rounds_up_like_retry_after(seconds: float, ko: str, en: str):
    assert format_duration(seconds, "ko") == ko
    assert format_duration(seconds, "en") == en

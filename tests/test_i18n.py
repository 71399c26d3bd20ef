"""The service's own sentences: both languages for every key, the same fields in each, and waits for people."""

from __future__ import annotations

import string

import pytest

from daehwa.i18n import MESSAGES, SUPPORTED_LOCALES, format_duration, normalize_locale, t


@pytest.mark.parametrize("key", sorted(MESSAGES))
def test_every_sentence_has_both_languages_with_the_same_fields(key: str):
    assert set(MESSAGES[key]) == set(SUPPORTED_LOCALES)
    fields = {
        locale: {name for _, name, _, _ in string.Formatter().parse(text) if name}
        for locale, text in MESSAGES[key].items()
    }
    assert fields["ko"] == fields["en"], fields


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

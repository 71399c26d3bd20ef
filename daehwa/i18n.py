"""The few sentences the service itself says to users, in Korean and English."""

from __future__ import annotations

import math
from collections.abc import Mapping

MESSAGES: dict[str, dict[str, str]] = {
    "fallback_reply": {
        "ko": "지금은 답변이 늦어지고 있어요. 잠시 후 다시 시도해 주세요.",
        "en": "Replies are delayed right now. Please try again in a moment.",
    },
    "input_blocked": {
        "ko": "부적절한 표현이 포함되어 있어 메시지를 보낼 수 없어요. 표현을 바꿔 다시 보내 주세요.",
        "en": "Your message contains language that isn't allowed, so it was not sent. Please rephrase it.",
    },
    "output_blocked": {
        "ko": "답변에 부적절한 표현이 포함되어 중단했어요.",
        "en": "The reply was stopped because it contained language that isn't allowed.",
    },
    "anonymous_not_allowed": {
        "ko": "이 페르소나는 로그인한 사용자만 쓸 수 있어요.",
        "en": "This persona is only available to signed-in users.",
    },
    # Quotas (daehwa/quotas.py). {wait} is a format_duration() in the same locale, equal to the Retry-After header.
    "rate_limited_requests": {
        "ko": "요청이 너무 많아요. {wait} 후에 다시 시도해 주세요. (1분에 {limit:,}번까지 보낼 수 있어요.)",
        "en": "Too many messages: the limit is {limit:,} per minute. Try again in {wait}.",
    },
    "rate_limited_tokens": {
        # The day is the UTC day, so "내일" would be wrong before 09:00 KST: the message says how long to wait instead.
        "ko": "오늘 사용할 수 있는 토큰을 모두 썼어요(사용 {used:,} / 하루 한도 {limit:,}). {wait} 후에 다시 이용해 "
        "주세요. 한도를 늘리려면 관리자에게 문의해 주세요.",
        "en": "You have used today's {limit:,} tokens ({used:,} used). The quota resets at midnight UTC, in {wait}; "
        "an admin can raise it (DAEHWA_USER_QUOTAS).",
    },
}

SUPPORTED_LOCALES = ("ko", "en")


def normalize_locale(locale: str | None) -> str:
    """``"ko-KR,ko;q=0.9,en;q=0.8"`` -> ``"ko"``; anything unknown -> ``"ko"`` (the service's home language)."""
    if not locale:
        return "ko"
    for part in locale.split(","):
        lang = part.split(";")[0].strip().lower()[:2]
        if lang in SUPPORTED_LOCALES:
            return lang
    return "ko"


def pick(sentences: Mapping[str, Mapping[str, str]], key: str, locale: str | None, **values: object) -> str:
    """``sentences[key]`` in ``locale`` (see ``normalize_locale``; English where it lacks the language), with
    ``values`` filled into its fields: the lookup of every ko/en table (this module's, the Django room's, the
    Streamlit app's)."""
    table = sentences[key]
    text = table.get(normalize_locale(locale), table["en"])
    return text.format(**values) if values else text


def t(key: str, locale: str | None = None, **values: object) -> str:
    """The sentence ``key`` in ``locale`` (see ``normalize_locale``), with ``values`` filled into its fields."""
    return pick(MESSAGES, key, locale, **values)


def format_duration(seconds: float, locale: str | None = None) -> str:
    """A wait for people, rounded up (never promising less than ``Retry-After``): "12초", "9 hours 30 minutes"."""
    whole = max(1, math.ceil(seconds))  # never "0 seconds"
    ko = normalize_locale(locale) == "ko"
    if whole < 120:
        return f"{whole}초" if ko else _plural(whole, "second")
    minutes = math.ceil(whole / 60)
    if minutes < 120:
        return f"{minutes}분" if ko else _plural(minutes, "minute")
    hours, minutes = divmod(minutes, 60)
    if ko:
        return f"{hours}시간 {minutes}분" if minutes else f"{hours}시간"
    return f"{_plural(hours, 'hour')} {_plural(minutes, 'minute')}" if minutes else _plural(hours, "hour")


def _plural(count: int, unit: str) -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"

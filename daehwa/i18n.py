"""The few sentences the service itself says to users, in Korean and English."""

from __future__ import annotations

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


def t(key: str, locale: str | None = None) -> str:
    table = MESSAGES[key]
    return table.get(normalize_locale(locale), table["en"])

"""The reasons shown to a user when moderation blocks a message or stops a reply, in Korean and English."""

from __future__ import annotations

from typing import Literal

Stage = Literal["input", "output"]

BLOCK_REASONS: dict[str, dict[Stage, str]] = {
    "ko": {
        "input": "부적절한 표현이 포함되어 있어 메시지를 보낼 수 없어요.",
        "output": "답변에 부적절한 표현이 포함되어 있어 중단했어요.",
    },
    "en": {
        "input": "Your message contains language that isn't allowed, so it was not sent.",
        "output": "The reply was stopped because it contained language that isn't allowed.",
    },
}


def block_reason(locale: str | None = None, stage: Stage = "input") -> str:
    """The reason in the user's language: ``locale`` is a tag or an Accept-Language value ("ko-KR,ko;q=0.9")."""
    for part in (locale or "").split(","):
        language = part.split(";")[0].strip().lower().replace("_", "-").split("-")[0]
        if language in BLOCK_REASONS:
            return BLOCK_REASONS[language][stage]
    return BLOCK_REASONS["ko" if not locale else "en"][stage]

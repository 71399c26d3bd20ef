"""What the chat room tells people, in Korean and English: notices and errors, never a traceback.

The pipeline already words some errors for people in the request's language (a blocked message, a quota); the others
carry a message for operators (which setting to change), so the room shows one of these sentences instead and the
operator's message goes to the log.
"""

from __future__ import annotations

from ..errors import (
    ContentBlocked,
    DaehwaError,
    InvalidRequest,
    ModelNotFound,
    ModelUnavailable,
    ProviderError,
    RateLimited,
    StoreUnavailable,
)
from ..i18n import pick

SENTENCES: dict[str, dict[str, str]] = {
    "login_required": {
        "ko": "로그인해야 대화할 수 있어요. 로그인한 뒤 다시 열어 주세요.",
        "en": "Please sign in to chat, then open this page again.",
    },
    "account_deleted": {
        "ko": "계정이 삭제되어 대화를 끝냈어요.",
        "en": "This account was deleted, so the chat has ended.",
    },
    "model_down": {
        "ko": "지금은 모델에 연결할 수 없어요. 잠시 후 다시 시도해 주세요.",
        "en": "The model cannot be reached right now. Please try again in a moment.",
    },
    "store_down": {
        "ko": "대화를 저장할 수 없어 잠시 멈췄어요. 잠시 후 다시 시도해 주세요.",
        "en": "Conversations cannot be saved right now. Please try again in a moment.",
    },
    "empty_message": {
        "ko": "메시지가 비어 있어요. 내용을 입력해 주세요.",
        "en": "The message is empty: write something to send.",
    },
    "message_too_long": {
        "ko": "메시지가 너무 길어요. 줄여서 다시 보내 주세요.",
        "en": "The message is too long. Please shorten it and send it again.",
    },
    "turn_in_progress": {
        "ko": "아직 답변 중이에요. 끝날 때까지 기다리거나 중지를 눌러 주세요.",
        "en": "A reply is still being written: wait for it, or press Stop.",
    },
    "bad_frame": {
        "ko": "메시지를 읽을 수 없어요. 페이지를 새로 고쳐 주세요.",
        "en": "The message could not be read. Please reload the page.",
    },
    "interrupted": {
        "ko": "답변이 중간에 멈췄어요.",
        "en": "The reply stopped before it was finished.",
    },
    "failed": {
        "ko": "문제가 생겨 답변하지 못했어요. 다시 시도해 주세요.",
        "en": "Something went wrong and there is no reply. Please try again.",
    },
    "blocked_reply": {
        "ko": "답변에 부적절한 표현이 포함되어 중단했어요.",
        "en": "The reply was stopped because it contained language that isn't allowed.",
    },
    "thinking": {"ko": "생각 중…", "en": "Thinking…"},
    "send": {"ko": "보내기", "en": "Send"},
    "stop": {"ko": "중지", "en": "Stop"},
    "placeholder": {"ko": "메시지를 입력하세요", "en": "Write a message"},
    "connecting": {"ko": "연결 중…", "en": "Connecting…"},
    "reconnecting": {"ko": "연결이 끊겼어요. 다시 연결하는 중…", "en": "Connection lost. Reconnecting…"},
}


def say(key: str, locale: str | None) -> str:
    """The sentence ``key`` in ``locale`` (``ko`` unless the locale asks for English)."""
    return pick(SENTENCES, key, locale)


def error_text(exc: DaehwaError, locale: str | None) -> str:
    """The sentence a person sees for ``exc``."""
    if isinstance(exc, ContentBlocked | RateLimited):
        return exc.message  # worded for people, in the request's language, by the pipeline and the quotas
    if isinstance(exc, ModelUnavailable | ProviderError | ModelNotFound):
        return say("model_down", locale)
    if isinstance(exc, StoreUnavailable):
        return say("store_down", locale)
    if isinstance(exc, InvalidRequest):
        if exc.code == "message_too_long":
            return say("message_too_long", locale)
        if exc.param == "content":
            return say("empty_message", locale)
    return say("failed", locale)

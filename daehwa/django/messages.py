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
from ..i18n import load_texts, pick

SENTENCES: dict[str, dict[str, str]] = load_texts("daehwa.django", "messages.toml")


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

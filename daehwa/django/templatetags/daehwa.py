"""``{% load daehwa %}{% daehwa_chat_room "/ws/tutor/" %}``: the HTMX chat room of a ``DaehwaChatConsumer``."""

from __future__ import annotations

from typing import Any

from django import template
from django.conf import settings as django_settings

from ...i18n import normalize_locale
from ..messages import say
from ..runtime import daehwa_settings

register = template.Library()

LABELS = ("send", "stop", "placeholder", "connecting", "reconnecting")


def page_locale(request: Any, language: str | None = None) -> str:
    """The page's language: ``language``, else the request's (LocaleMiddleware, Accept-Language), else the site's."""
    if language:
        return normalize_locale(language)
    if request is not None:
        chosen = getattr(request, "LANGUAGE_CODE", None) or request.headers.get("accept-language")
        if chosen:
            return normalize_locale(chosen)
    return normalize_locale(getattr(django_settings, "LANGUAGE_CODE", None))


@register.inclusion_tag("daehwa/chat_room.html", takes_context=True)
def daehwa_chat_room(context: template.Context, ws_path: str, language: str | None = None) -> dict[str, Any]:
    """The room connected to the consumer routed at ``ws_path``, labelled in the page's language."""
    locale = page_locale(context.get("request"), language)
    return {
        "ws_path": ws_path,
        "locale": locale,
        "labels": {key: say(key, locale) for key in LABELS},
        "max_chars": daehwa_settings().max_message_chars,
    }

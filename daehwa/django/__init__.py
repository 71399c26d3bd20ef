"""daehwa in a Django project: a Channels chat consumer on daehwa's own turn pipeline (docs/django.md).

Add ``"daehwa.django"`` to ``INSTALLED_APPS``, configure daehwa with a ``DAEHWA = {...}`` dict in the Django settings
(or ``DAEHWA_*`` environment variables), subclass ``daehwa.django.consumers.DaehwaChatConsumer`` and route a
WebSocket URL to it; ``{% include "daehwa/chat_room.html" %}`` (or the page ``daehwa/chat_room_ws.html``) is the
HTMX chat room that talks to it.
"""

from __future__ import annotations

try:
    import channels  # noqa: F401
    import django  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(f"daehwa.django needs Django and Channels: pip install 'daehwa[django]' ({exc})") from exc

"""WebSocket routes: one consumer per chat room."""

from __future__ import annotations

from django.urls import path
from tutor.consumers import GuestTutorConsumer, LanguageTutorConsumer

websocket_urlpatterns = [
    path("ws/tutor/", LanguageTutorConsumer.as_asgi()),
    path("ws/guest/", GuestTutorConsumer.as_asgi()),
]

"""``ChatRoomView``: the page ``daehwa/chat_room_ws.html`` for a consumer's WebSocket path."""

from __future__ import annotations

from typing import Any

from django.views.generic import TemplateView

from .templatetags.daehwa import page_locale


class ChatRoomView(TemplateView):
    """``path("", ChatRoomView.as_view(ws_path="/ws/tutor/", title="Tutor"))``; login is the consumer's to check."""

    template_name = "daehwa/chat_room_ws.html"
    ws_path = ""
    title = ""
    language: str | None = None

    def get(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        session = getattr(request, "session", None)
        if session is not None and not session.session_key:
            # A guest keeps one room per session: the session must exist before the socket opens.
            session.save()
        return super().get(request, *args, **kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(ws_path=self.ws_path, title=self.title, locale=page_locale(self.request, self.language))
        return context

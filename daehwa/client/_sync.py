"""``DaehwaClient``: the blocking client (one ``httpx.Client``; safe to share between threads, e.g. to stop a reply
from another thread while one streams)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from ._core import (
    Call,
    ClientBase,
    StreamState,
    StreamView,
    create_conversation_call,
    http_error,
    message_body,
    options,
    resume_call,
    unreachable,
)
from ._wire import (
    Conversation,
    ConversationPage,
    ConversationStart,
    DaehwaConnectionError,
    Model,
    Persona,
    SSEEvent,
    SSEParser,
    TurnResult,
    UsageReport,
    User,
)


class ReplyStream(StreamView):
    """A reply as it streams: iterate for the text deltas (``str``); then ``result`` is the ``TurnResult``.

    Use it as a context manager (or call ``close``) when you may stop reading early. A connection that breaks off
    mid-reply raises ``DaehwaConnectionError`` with the text so far: ``client.resume_stream(error)`` goes on.
    """

    def __init__(self, client: DaehwaClient, response: httpx.Response, state: StreamState) -> None:
        self.client = client
        self._response = response
        self._state = state
        self._events = SSEParser().events(response.iter_lines())
        self._closed = False

    def _read_start(self) -> None:
        while (event := self._next_event()) is not None:
            self._state.on_event(event)
            if event.event == "start":
                return
        raise self._state.dropped(None)

    def _next_event(self) -> SSEEvent | None:
        """The next event, or None at the end of the body (a plain function, not a generator: both readers share
        the one event iterator, and closing a wrapping generator would close it too)."""
        try:
            return next(self._events, None)
        except httpx.TransportError as exc:
            self.close()
            raise self._state.dropped(exc) from exc

    def __iter__(self) -> Iterator[str]:
        try:
            while (event := self._next_event()) is not None:
                text = self._state.on_event(event)
                if text:
                    yield text
                elif event.event == "done":
                    self.close()
                    self._state.finish()
                    return
        finally:
            self.close()
        raise self._state.dropped(None)  # the body ended without ``done``

    def until_done(self) -> TurnResult:
        """Read the rest of the stream and return its result."""
        for _ in self:
            pass
        assert self._state.result is not None
        return self._state.result

    def stop(self) -> bool:
        """Ask the server to stop this reply (the stream then ends with outcome ``interrupted``)."""
        return self.client.stop(self.conversation_id)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._response.close()

    def __enter__(self) -> ReplyStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DaehwaClient(ClientBase[httpx.BaseTransport, httpx.Client]):
    """A typed client of daehwa's conversation API (``/api``): the server keeps the history.

    ``DaehwaClient(url, api_key="dh-...")``, or ``DaehwaClient(url).login("alice", "password")`` for a session.
    ``language`` ("ko" or "en") is sent as ``Accept-Language``: the server's messages (quota, moderation) and persona
    titles come in it.
    """

    def _open(self, timeout: httpx.Timeout | float, transport: httpx.BaseTransport | None) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    # -- plumbing --------------------------------------------------------------------------------------------------
    def _send(self, call: Call, *, stream: bool = False) -> httpx.Response:
        try:
            response = self._http.send(self._request(self._http, call), stream=stream)
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from exc
        if response.status_code >= 400:
            try:
                body = response.read()
            finally:
                response.close()
            raise http_error(response, body)
        return response

    def _json(self, call: Call) -> Any:
        response = self._send(call)
        return response.json() if response.content else None

    def _stream(self, call: Call, state: StreamState, *, expect_start: bool) -> ReplyStream:
        response = self._send(call, stream=True)
        reply = ReplyStream(self, response, state)
        if expect_start:
            try:
                reply._read_start()
            except BaseException:
                reply.close()
                raise
        return reply

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DaehwaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- login -----------------------------------------------------------------------------------------------------
    def login(self, username: str, password: str) -> User:
        """Log in with a password: the session cookie and CSRF token are kept for the next requests."""
        body = self._json(Call("POST", "/api/auth/login", json={"username": username, "password": password}))
        self.api_key = None
        self._logged_in(body)
        return User.from_json(body["user"])

    def login_anonymous(self) -> User:
        """A new guest user (only when the server allows anonymous users)."""
        body = self._json(Call("POST", "/api/auth/anonymous"))
        self._logged_in(body)
        return User.from_json(body["user"])

    def logout(self) -> None:
        if self.api_key is None:
            self._json(Call("POST", "/api/auth/logout"))
        self.csrf_token = None
        self._http.cookies.clear()

    def me(self) -> User:
        """Who the credentials belong to (raises ``not_authenticated`` when they are wrong or missing)."""
        return User.from_json(self._json(Call("GET", "/api/auth/me"))["user"])

    # -- conversations ---------------------------------------------------------------------------------------------
    def create_conversation(
        self,
        *,
        persona: str | None = None,
        model: str | None = None,
        variables: dict[str, Any] | None = None,
        title: str | None = None,
    ) -> ConversationStart:
        return ConversationStart.from_json(self._json(create_conversation_call(persona, model, variables, title)))

    def list_conversations(
        self, *, query: str | None = None, limit: int = 50, before: str | None = None
    ) -> list[Conversation]:
        """Your conversations, most recently updated first (``before``: an ``updated_at`` to page back from)."""
        data = self._json(Call("GET", "/api/conversations", params={"q": query, "limit": limit, "before": before}))
        return [Conversation.from_json(c) for c in data["data"]]

    def get_conversation(
        self, conversation_id: str, *, limit: int = 200, before: str | None = None
    ) -> ConversationPage:
        """A conversation and its latest ``limit`` messages, oldest first (``before``: a message id to page back)."""
        call = Call("GET", f"/api/conversations/{conversation_id}", params={"limit": limit, "before": before})
        return ConversationPage.from_json(self._json(call))

    def rename_conversation(self, conversation_id: str, title: str) -> Conversation:
        return Conversation.from_json(
            self._json(Call("PATCH", f"/api/conversations/{conversation_id}", json={"title": title}))
        )

    def delete_conversation(self, conversation_id: str) -> None:
        self._json(Call("DELETE", f"/api/conversations/{conversation_id}"))

    # -- turns -----------------------------------------------------------------------------------------------------
    def send(self, conversation_id: str, content: str, **opts: Any) -> TurnResult:
        """Send a message and wait for the whole reply. ``opts``: model, temperature, top_p, max_tokens, stop, seed,
        presence_penalty, frequency_penalty."""
        body = message_body(content, False, opts)
        return TurnResult.from_json(
            self._json(Call("POST", f"/api/conversations/{conversation_id}/messages", json=body))
        )

    def stream(self, conversation_id: str, content: str, **opts: Any) -> ReplyStream:
        """Send a message and stream the reply: iterate the returned ``ReplyStream`` for text deltas.

        Problems found before the turn starts (quota, moderation block, unknown conversation) raise here.
        """
        body = message_body(content, True, opts)
        call = Call("POST", f"/api/conversations/{conversation_id}/messages", json=body)
        return self._stream(call, StreamState(conversation_id), expect_start=True)

    def regenerate(self, conversation_id: str, *, stream: bool = False, **opts: Any) -> TurnResult | ReplyStream:
        """Answer the last user message again, replacing the reply after it."""
        call = Call(
            "POST", f"/api/conversations/{conversation_id}/regenerate", json={"stream": stream, **options(opts)}
        )
        if stream:
            return self._stream(call, StreamState(conversation_id), expect_start=True)
        return TurnResult.from_json(self._json(call))

    def resume_stream(
        self,
        conversation_id: str | DaehwaConnectionError,
        message_id: str | None = None,
        *,
        after: int = 0,
    ) -> ReplyStream:
        """The rest of a reply after ``after`` characters (from any server process), ending with its result.

        Pass the ``DaehwaConnectionError`` a dropped stream raised to go on where it broke off.
        """
        call, state = resume_call(conversation_id, message_id, after)
        return self._stream(call, state, expect_start=False)

    def stop(self, conversation_id: str) -> bool:
        """Stop the reply being generated for this conversation; whether one was running."""
        return bool(self._json(Call("POST", f"/api/conversations/{conversation_id}/stop"))["stopped"])

    # -- catalogues and usage --------------------------------------------------------------------------------------
    def personas(self) -> list[Persona]:
        """The personas you may start a conversation with (titles in the client's language)."""
        return [Persona.from_json(p) for p in self._json(Call("GET", "/api/personas"))["data"]]

    def models(self) -> list[Model]:
        """Every configured model, with whether it can answer now (``available``, ``reason``)."""
        return [Model.from_json(m) for m in self._json(Call("GET", "/api/models"))["data"]]

    def usage(self, *, since: str | None = None) -> UsageReport:
        """Your tokens, turns and cost per model (``since``: YYYY-MM-DD, 'today', 7d, 24h)."""
        return UsageReport.from_json(self._json(Call("GET", "/api/usage", params={"since": since})))

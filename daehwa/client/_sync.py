"""``DaehwaClient``: the blocking client (one ``httpx.Client``; safe to share between threads, e.g. to stop a reply
from another thread while one streams)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar, Unpack

import httpx

from . import _calls as calls
from . import _wire as wire
from ._calls import NewConversation
from ._core import Call, ClientBase, StreamCall, StreamState, StreamView, http_error, unreachable

T = TypeVar("T")


class ReplyStream(StreamView):
    """A reply as it streams: iterate for the text deltas (``str``); then ``result`` is the ``TurnResult``.

    Use it as a context manager (or call ``close``) when you may stop reading early. A connection that breaks off
    mid-reply raises ``DaehwaConnectionError`` with the text so far: ``client.resume_stream(error)`` goes on.
    """

    def __init__(self, client: DaehwaClient, response: httpx.Response, state: StreamState) -> None:
        self.client = client
        self._response = response
        self._state = state
        self._events = wire.SSEParser().events(response.iter_lines())
        self._closed = False

    def _read_start(self) -> None:
        while (event := self._next_event()) is not None:
            self._state.on_event(event)
            if event.event == "start":
                return
        raise self._state.dropped(None)

    def _next_event(self) -> wire.SSEEvent | None:
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

    def until_done(self) -> wire.TurnResult:
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
    def _send(self, call: Call[Any], *, stream: bool = False) -> httpx.Response:
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

    def _json(self, call: Call[T]) -> T:
        return call.answer(self._send(call))

    def _stream(self, streamed: StreamCall) -> ReplyStream:
        reply = ReplyStream(self, self._send(streamed.call, stream=True), streamed.state)
        if streamed.expect_start:
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
    def login(self, username: str, password: str) -> wire.User:
        """Log in with a password: the session cookie and CSRF token are kept for the next requests."""
        body = self._json(calls.login(username, password))
        self.api_key = None
        return self._logged_in(body)

    def login_anonymous(self) -> wire.User:
        """A new guest user (only when the server allows anonymous users)."""
        return self._logged_in(self._json(calls.login_anonymous()))

    def logout(self) -> None:
        if self.api_key is None:
            self._json(calls.logout())
        self._logged_out()

    def me(self) -> wire.User:
        """Who the credentials belong to (raises ``not_authenticated`` when they are wrong or missing)."""
        return self._json(calls.me())

    # -- conversations ---------------------------------------------------------------------------------------------
    def create_conversation(self, **fields: Unpack[NewConversation]) -> wire.ConversationStart:
        """A new conversation; ``persona``, ``model``, ``variables`` (the persona's template values) and ``title``
        are optional."""
        return self._json(calls.create_conversation(fields))

    def list_conversations(
        self, *, query: str | None = None, limit: int = 50, before: str | None = None
    ) -> list[wire.Conversation]:
        """Your conversations, most recently updated first (``before``: an ``updated_at`` to page back from)."""
        return self._json(calls.list_conversations(query, limit, before))

    def get_conversation(
        self, conversation_id: str, *, limit: int = 200, before: str | None = None
    ) -> wire.ConversationPage:
        """A conversation and its latest ``limit`` messages, oldest first (``before``: a message id to page back)."""
        return self._json(calls.get_conversation(conversation_id, limit, before))

    def rename_conversation(self, conversation_id: str, title: str) -> wire.Conversation:
        return self._json(calls.rename_conversation(conversation_id, title))

    def delete_conversation(self, conversation_id: str) -> None:
        self._json(calls.delete_conversation(conversation_id))

    # -- turns -----------------------------------------------------------------------------------------------------
    def send(self, conversation_id: str, content: str, **opts: Any) -> wire.TurnResult:
        """Send a message and wait for the whole reply. ``opts``: model, temperature, top_p, max_tokens, stop, seed,
        presence_penalty, frequency_penalty."""
        return self._json(calls.send(conversation_id, content, opts))

    def stream(self, conversation_id: str, content: str, **opts: Any) -> ReplyStream:
        """Send a message and stream the reply: iterate the returned ``ReplyStream`` for text deltas.

        Problems found before the turn starts (quota, moderation block, unknown conversation) raise here.
        """
        return self._stream(calls.stream(conversation_id, content, opts))

    def regenerate(self, conversation_id: str, *, stream: bool = False, **opts: Any) -> wire.TurnResult | ReplyStream:
        """Answer the last user message again, replacing the reply after it."""
        if stream:
            return self._stream(calls.regenerate_stream(conversation_id, opts))
        return self._json(calls.regenerate(conversation_id, opts))

    def resume_stream(
        self,
        conversation_id: str | wire.DaehwaConnectionError,
        message_id: str | None = None,
        *,
        after: int = 0,
    ) -> ReplyStream:
        """The rest of a reply after ``after`` characters (from any server process), ending with its result.

        Pass the ``DaehwaConnectionError`` a dropped stream raised to go on where it broke off.
        """
        return self._stream(calls.resume(conversation_id, message_id, after))

    def stop(self, conversation_id: str) -> bool:
        """Stop the reply being generated for this conversation; whether one was running."""
        return self._json(calls.stop(conversation_id))

    # -- catalogues and usage --------------------------------------------------------------------------------------
    def personas(self) -> list[wire.Persona]:
        """The personas you may start a conversation with (titles in the client's language)."""
        return self._json(calls.personas())

    def models(self) -> list[wire.Model]:
        """Every configured model, with whether it can answer now (``available``, ``reason``)."""
        return self._json(calls.models())

    def usage(self, *, since: str | None = None) -> wire.UsageReport:
        """Your tokens, turns and cost per model (``since``: YYYY-MM-DD, 'today', 7d, 24h)."""
        return self._json(calls.usage(since))

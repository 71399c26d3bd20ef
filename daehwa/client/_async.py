"""``AsyncDaehwaClient``: the asyncio client, method for method the same as ``DaehwaClient`` (``_sync.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
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


class AsyncReplyStream(StreamView):
    """A reply as it streams: ``async for`` the text deltas (``str``); then ``result`` is the ``TurnResult``.

    Use it as an async context manager (or call ``aclose``) when you may stop reading early. A connection that
    breaks off mid-reply raises ``DaehwaConnectionError`` with the text so far: ``client.resume_stream(error)`` goes on.
    """

    def __init__(self, client: AsyncDaehwaClient, response: httpx.Response, state: StreamState) -> None:
        self.client = client
        self._response = response
        self._state = state
        self._lines = response.aiter_lines()
        self._parser = SSEParser()
        self._closed = False

    async def _read_start(self) -> None:
        while (event := await self._next_event()) is not None:
            self._state.on_event(event)
            if event.event == "start":
                return
        raise self._state.dropped(None)

    async def _next_event(self) -> SSEEvent | None:
        """The next event, or None at the end of the body (see ``ReplyStream._next_event``)."""
        try:
            async for line in self._lines:
                event = self._parser.feed(line)
                if event is not None:
                    return event
        except httpx.TransportError as exc:
            await self.aclose()
            raise self._state.dropped(exc) from exc
        return None

    def __aiter__(self) -> AsyncIterator[str]:
        return self._deltas()

    async def _deltas(self) -> AsyncIterator[str]:
        try:
            while (event := await self._next_event()) is not None:
                text = self._state.on_event(event)
                if text:
                    yield text
                elif event.event == "done":
                    await self.aclose()
                    self._state.finish()
                    return
        finally:
            await self.aclose()
        raise self._state.dropped(None)  # the body ended without ``done``

    async def until_done(self) -> TurnResult:
        """Read the rest of the stream and return its result."""
        async for _ in self:
            pass
        assert self._state.result is not None
        return self._state.result

    async def stop(self) -> bool:
        """Ask the server to stop this reply (the stream then ends with outcome ``interrupted``)."""
        return await self.client.stop(self.conversation_id)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._response.aclose()

    async def __aenter__(self) -> AsyncReplyStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncDaehwaClient(ClientBase[httpx.AsyncBaseTransport, httpx.AsyncClient]):
    """``DaehwaClient`` for asyncio: the same methods, awaited (``async with``, ``aclose``).

    ``AsyncDaehwaClient(url, api_key="dh-...")``, or ``await AsyncDaehwaClient(url).login("alice", "password")``.
    """

    def _open(self, timeout: httpx.Timeout | float, transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)

    # -- plumbing --------------------------------------------------------------------------------------------------
    async def _send(self, call: Call, *, stream: bool = False) -> httpx.Response:
        try:
            response = await self._http.send(self._request(self._http, call), stream=stream)
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from exc
        if response.status_code >= 400:
            try:
                body = await response.aread()
            finally:
                await response.aclose()
            raise http_error(response, body)
        return response

    async def _json(self, call: Call) -> Any:
        response = await self._send(call)
        return response.json() if response.content else None

    async def _stream(self, call: Call, state: StreamState, *, expect_start: bool) -> AsyncReplyStream:
        response = await self._send(call, stream=True)
        reply = AsyncReplyStream(self, response, state)
        if expect_start:
            try:
                await reply._read_start()
            except BaseException:
                await reply.aclose()
                raise
        return reply

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncDaehwaClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- login -----------------------------------------------------------------------------------------------------
    async def login(self, username: str, password: str) -> User:
        """Log in with a password: the session cookie and CSRF token are kept for the next requests."""
        body = await self._json(Call("POST", "/api/auth/login", json={"username": username, "password": password}))
        self.api_key = None
        self._logged_in(body)
        return User.from_json(body["user"])

    async def login_anonymous(self) -> User:
        """A new guest user (only when the server allows anonymous users)."""
        body = await self._json(Call("POST", "/api/auth/anonymous"))
        self._logged_in(body)
        return User.from_json(body["user"])

    async def logout(self) -> None:
        if self.api_key is None:
            await self._json(Call("POST", "/api/auth/logout"))
        self.csrf_token = None
        self._http.cookies.clear()

    async def me(self) -> User:
        """Who the credentials belong to (raises ``not_authenticated`` when they are wrong or missing)."""
        return User.from_json((await self._json(Call("GET", "/api/auth/me")))["user"])

    # -- conversations ---------------------------------------------------------------------------------------------
    async def create_conversation(
        self,
        *,
        persona: str | None = None,
        model: str | None = None,
        variables: dict[str, Any] | None = None,
        title: str | None = None,
    ) -> ConversationStart:
        return ConversationStart.from_json(await self._json(create_conversation_call(persona, model, variables, title)))

    async def list_conversations(
        self, *, query: str | None = None, limit: int = 50, before: str | None = None
    ) -> list[Conversation]:
        """Your conversations, most recently updated first (``before``: an ``updated_at`` to page back from)."""
        data = await self._json(
            Call("GET", "/api/conversations", params={"q": query, "limit": limit, "before": before})
        )
        return [Conversation.from_json(c) for c in data["data"]]

    async def get_conversation(
        self, conversation_id: str, *, limit: int = 200, before: str | None = None
    ) -> ConversationPage:
        """A conversation and its latest ``limit`` messages, oldest first (``before``: a message id to page back)."""
        call = Call("GET", f"/api/conversations/{conversation_id}", params={"limit": limit, "before": before})
        return ConversationPage.from_json(await self._json(call))

    async def rename_conversation(self, conversation_id: str, title: str) -> Conversation:
        return Conversation.from_json(
            await self._json(Call("PATCH", f"/api/conversations/{conversation_id}", json={"title": title}))
        )

    async def delete_conversation(self, conversation_id: str) -> None:
        await self._json(Call("DELETE", f"/api/conversations/{conversation_id}"))

    # -- turns -----------------------------------------------------------------------------------------------------
    async def send(self, conversation_id: str, content: str, **opts: Any) -> TurnResult:
        """Send a message and wait for the whole reply. ``opts``: model, temperature, top_p, max_tokens, stop, seed,
        presence_penalty, frequency_penalty."""
        body = message_body(content, False, opts)
        return TurnResult.from_json(
            await self._json(Call("POST", f"/api/conversations/{conversation_id}/messages", json=body))
        )

    async def stream(self, conversation_id: str, content: str, **opts: Any) -> AsyncReplyStream:
        """Send a message and stream the reply: iterate the returned ``ReplyStream`` for text deltas.

        Problems found before the turn starts (quota, moderation block, unknown conversation) raise here.
        """
        body = message_body(content, True, opts)
        call = Call("POST", f"/api/conversations/{conversation_id}/messages", json=body)
        return await self._stream(call, StreamState(conversation_id), expect_start=True)

    async def regenerate(
        self, conversation_id: str, *, stream: bool = False, **opts: Any
    ) -> TurnResult | AsyncReplyStream:
        """Answer the last user message again, replacing the reply after it."""
        call = Call(
            "POST", f"/api/conversations/{conversation_id}/regenerate", json={"stream": stream, **options(opts)}
        )
        if stream:
            return await self._stream(call, StreamState(conversation_id), expect_start=True)
        return TurnResult.from_json(await self._json(call))

    async def resume_stream(
        self,
        conversation_id: str | DaehwaConnectionError,
        message_id: str | None = None,
        *,
        after: int = 0,
    ) -> AsyncReplyStream:
        """The rest of a reply after ``after`` characters (from any server process), ending with its result.

        Pass the ``DaehwaConnectionError`` a dropped stream raised to go on where it broke off.
        """
        call, state = resume_call(conversation_id, message_id, after)
        return await self._stream(call, state, expect_start=False)

    async def stop(self, conversation_id: str) -> bool:
        """Stop the reply being generated for this conversation; whether one was running."""
        return bool((await self._json(Call("POST", f"/api/conversations/{conversation_id}/stop")))["stopped"])

    # -- catalogues and usage --------------------------------------------------------------------------------------
    async def personas(self) -> list[Persona]:
        """The personas you may start a conversation with (titles in the client's language)."""
        return [Persona.from_json(p) for p in (await self._json(Call("GET", "/api/personas")))["data"]]

    async def models(self) -> list[Model]:
        """Every configured model, with whether it can answer now (``available``, ``reason``)."""
        return [Model.from_json(m) for m in (await self._json(Call("GET", "/api/models")))["data"]]

    async def usage(self, *, since: str | None = None) -> UsageReport:
        """Your tokens, turns and cost per model (``since``: YYYY-MM-DD, 'today', 7d, 24h)."""
        return UsageReport.from_json(await self._json(Call("GET", "/api/usage", params={"since": since})))

"""``AsyncDaehwaClient``: the asyncio client, method for method the same as ``DaehwaClient`` (``_sync.py``).

The methods are documented once, on the sync classes: ``documented_by`` gives them those docstrings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar, Unpack

import httpx

from . import _calls as calls
from . import _wire as wire
from ._calls import NewConversation
from ._core import Call, ClientBase, StreamCall, StreamState, StreamView, documented_by, http_error, unreachable
from ._sync import DaehwaClient, ReplyStream

T = TypeVar("T")


@documented_by(ReplyStream)
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
        self._parser = wire.SSEParser()
        self._closed = False

    async def _read_start(self) -> None:
        while (event := await self._next_event()) is not None:
            self._state.on_event(event)
            if event.event == "start":
                return
        raise self._state.dropped(None)

    async def _next_event(self) -> wire.SSEEvent | None:
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

    async def until_done(self) -> wire.TurnResult:
        async for _ in self:
            pass
        assert self._state.result is not None
        return self._state.result

    async def stop(self) -> bool:
        return await self.client.stop(self.conversation_id)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._response.aclose()

    async def __aenter__(self) -> AsyncReplyStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


@documented_by(DaehwaClient)
class AsyncDaehwaClient(ClientBase[httpx.AsyncBaseTransport, httpx.AsyncClient]):
    """``DaehwaClient`` for asyncio: the same methods, awaited (``async with``, ``aclose``).

    ``AsyncDaehwaClient(url, api_key="dh-...")``, or ``await AsyncDaehwaClient(url).login("alice", "password")``.
    """

    def _open(self, timeout: httpx.Timeout | float, transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)

    # -- plumbing --------------------------------------------------------------------------------------------------
    async def _send(self, call: Call[Any], *, stream: bool = False) -> httpx.Response:
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

    async def _json(self, call: Call[T]) -> T:
        return call.answer(await self._send(call))

    async def _stream(self, streamed: StreamCall) -> AsyncReplyStream:
        reply = AsyncReplyStream(self, await self._send(streamed.call, stream=True), streamed.state)
        if streamed.expect_start:
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
    async def login(self, username: str, password: str) -> wire.User:
        body = await self._json(calls.login(username, password))
        self.api_key = None
        return self._logged_in(body)

    async def login_anonymous(self) -> wire.User:
        return self._logged_in(await self._json(calls.login_anonymous()))

    async def logout(self) -> None:
        if self.api_key is None:
            await self._json(calls.logout())
        self._logged_out()

    async def me(self) -> wire.User:
        return await self._json(calls.me())

    # -- conversations ---------------------------------------------------------------------------------------------
    async def create_conversation(self, **fields: Unpack[NewConversation]) -> wire.ConversationStart:
        return await self._json(calls.create_conversation(fields))

    async def list_conversations(
        self, *, query: str | None = None, limit: int = 50, before: str | None = None
    ) -> list[wire.Conversation]:
        return await self._json(calls.list_conversations(query, limit, before))

    async def get_conversation(
        self, conversation_id: str, *, limit: int = 200, before: str | None = None
    ) -> wire.ConversationPage:
        return await self._json(calls.get_conversation(conversation_id, limit, before))

    async def rename_conversation(self, conversation_id: str, title: str) -> wire.Conversation:
        return await self._json(calls.rename_conversation(conversation_id, title))

    async def delete_conversation(self, conversation_id: str) -> None:
        await self._json(calls.delete_conversation(conversation_id))

    # -- turns -----------------------------------------------------------------------------------------------------
    async def send(self, conversation_id: str, content: str, **opts: Any) -> wire.TurnResult:
        return await self._json(calls.send(conversation_id, content, opts))

    async def stream(self, conversation_id: str, content: str, **opts: Any) -> AsyncReplyStream:
        return await self._stream(calls.stream(conversation_id, content, opts))

    async def regenerate(
        self, conversation_id: str, *, stream: bool = False, **opts: Any
    ) -> wire.TurnResult | AsyncReplyStream:
        if stream:
            return await self._stream(calls.regenerate_stream(conversation_id, opts))
        return await self._json(calls.regenerate(conversation_id, opts))

    async def resume_stream(
        self,
        conversation_id: str | wire.DaehwaConnectionError,
        message_id: str | None = None,
        *,
        after: int = 0,
    ) -> AsyncReplyStream:
        return await self._stream(calls.resume(conversation_id, message_id, after))

    async def stop(self, conversation_id: str) -> bool:
        return await self._json(calls.stop(conversation_id))

    # -- catalogues and usage --------------------------------------------------------------------------------------
    async def personas(self) -> list[wire.Persona]:
        return await self._json(calls.personas())

    async def models(self) -> list[wire.Model]:
        return await self._json(calls.models())

    async def usage(self, *, since: str | None = None) -> wire.UsageReport:
        return await self._json(calls.usage(since))

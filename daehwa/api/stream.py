"""Running a turn for a transport: stop, disconnect, SSE and the WebSocket.

``TurnHandle.open`` starts a turn and waits for ``TurnStarted``, so problems found before anything is stored reach the
client as a plain HTTP error. ``TurnHandle.run`` then feeds the deltas to the transport in a child task that a client
leaving (SSE disconnect, WebSocket close) or ``stop`` cancels; the pipeline stores the partial reply as
``interrupted`` when its iterator is cancelled or closed, so nothing generated is lost.

``EventStreamResponse`` is a small SSE response that listens for the client's disconnect the whole time (not only
when it next writes), so a client that leaves during a long silence still stops generation at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, suppress
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import Field, ValidationError
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..chat import ChatService, TurnDelta, TurnEvent, TurnFinished, TurnRequest, TurnStarted
from ..errors import AuthenticationError, DaehwaError, InvalidRequest
from ..resume import ChunkPublisher, StreamTimes, follow_reply
from ..stores.base import Store, StreamChunk
from ..stores.outage import store_outage
from ..stores.signals import LocalSignals, StopSignals
from ..text import check_json, invalid_char
from ..types import MessageStatus, StoredMessage, User
from .auth import Principal, resolve_principal
from .errors import retry_after_seconds, validation_message
from .schemas import GenerationOptions, generation_params, message_json, started_json, turn_result_json

log = logging.getLogger("daehwa.api")

Emit = Callable[[TurnDelta], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class TurnOutcome:
    started: TurnStarted
    finished: TurnFinished | None  # None when the turn was stopped
    message: StoredMessage  # the stored reply
    stopped: bool = False

    def json(self) -> dict[str, Any]:
        return turn_result_json(self.started, self.finished, self.message, stopped=self.stopped)


class ActiveTurns:
    """The turns running in this process, by (user, conversation), so ``stop`` can reach them from any request.

    A turn running in another process that shares the store is reached through the store's stop signals
    (``Store.stop_signals``): ``stop`` sends one when the store shows the conversation's reply still streaming and
    waits until it is stored as stopped.
    """

    _POLL_SECONDS = 0.05
    #: The conversation id of a signal that means "this user was deleted": stop all their turns, forget them.
    USER_DELETED = "*"

    def __init__(self, store: Store | None = None, *, stop_wait_seconds: float = 3.0) -> None:
        self._turns: dict[tuple[str, str], set[TurnHandle]] = {}
        # Called with the user id on a USER_DELETED signal (the app forgets the user's cached credentials).
        self.on_user_deleted: list[Callable[[str], object]] = []
        self._detached: set[asyncio.Future[Any]] = set()  # SSE turns whose client left, kept for a resume
        self._store = store
        self._signals: StopSignals = store.stop_signals() if store is not None else LocalSignals()
        self._stop_wait = stop_wait_seconds

    async def open(self) -> None:
        """Start listening for stop signals from other processes (in the app's lifespan, after the store opened)."""
        await self._signals.open(self.stop_here)

    async def close(self) -> None:
        await self._signals.close()

    def add(self, handle: TurnHandle) -> None:
        self._turns.setdefault(handle.key, set()).add(handle)

    def discard(self, handle: TurnHandle) -> None:
        handles = self._turns.get(handle.key)
        if handles is not None:
            handles.discard(handle)
            if not handles:
                del self._turns[handle.key]

    def stop_here(self, user_id: str, conversation_id: str) -> bool:
        """Stop the conversation's turns running in this process (every turn of the user for ``USER_DELETED``);
        whether there were any."""
        if conversation_id == self.USER_DELETED:
            for forget in self.on_user_deleted:
                forget(user_id)
            handles = [h for key, found in list(self._turns.items()) if key[0] == user_id for h in found]
        else:
            handles = list(self._turns.get((user_id, conversation_id), ()))
        for handle in handles:
            handle.stop()
        return bool(handles)

    async def stop(self, user_id: str, conversation_id: str, *, wait: bool = True) -> bool:
        """Stop the conversation's running turn, in this process or another one sharing the store.

        Returns whether a turn was stopped. Without ``wait`` a signal to other processes is sent and not followed.
        """
        if self.stop_here(user_id, conversation_id):
            return True
        if self._store is None or isinstance(self._signals, LocalSignals):
            return False  # no other process can be running it
        reply = await self._streaming_reply(user_id, conversation_id)
        if reply is None:
            return False
        await self._signals.publish(user_id, conversation_id)
        if not wait:
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._stop_wait
        while loop.time() < deadline:
            await asyncio.sleep(self._POLL_SECONDS)
            if await self._streaming_reply(user_id, conversation_id, reply.id) is None:
                return True
        log.warning("stop: no server process stopped the reply %s within %.1fs", reply.id, self._stop_wait)
        return False

    async def end_user(self, user_id: str, *, wait: bool = True) -> None:
        """A user is being deleted: every server process sharing the store stops the user's turns and forgets their
        cached credentials (one signal). With ``wait``, waits (at most the stop wait) for this process's turns of the
        user to store what they generated, so the deletion that follows removes it too."""
        self.stop_here(user_id, self.USER_DELETED)
        with suppress(Exception):  # best effort, like every signal: the deletion goes on regardless
            await self._signals.publish(user_id, self.USER_DELETED)
        if not wait:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._stop_wait
        while loop.time() < deadline:
            if not any(key[0] == user_id for key in self._turns):
                return
            await asyncio.sleep(self._POLL_SECONDS)

    async def _streaming_reply(
        self, user_id: str, conversation_id: str, reply_id: str | None = None
    ) -> StoredMessage | None:
        """The conversation's last message if it is a reply still streaming (and ``reply_id``, when given)."""
        assert self._store is not None
        messages = await self._store.list_messages(user_id, conversation_id, limit=1) or []
        if not messages:
            return None
        last = messages[-1]
        if last.role != "assistant" or last.status != MessageStatus.STREAMING:
            return None
        return last if reply_id is None or last.id == reply_id else None

    def detach(self, run: asyncio.Future[Any], handle: TurnHandle, seconds: float) -> None:
        """Keep a turn whose client left running for ``seconds`` (a client may resume it), then stop it."""
        self._detached.add(run)
        timer = asyncio.get_running_loop().call_later(seconds, handle.stop)

        def done(finished: asyncio.Future[Any]) -> None:
            timer.cancel()
            self._detached.discard(run)
            if not finished.cancelled() and finished.exception() is not None:
                log.error("a detached turn failed", exc_info=finished.exception())

        run.add_done_callback(done)

    def stop_all(self) -> None:
        for handles in list(self._turns.values()):
            for handle in list(handles):
                handle.stop()


class TurnHandle:
    """One started turn; ``run`` it once."""

    def __init__(
        self,
        events: AsyncIterator[TurnEvent],
        started: TurnStarted,
        chat: ChatService,
        user: User,
        turns: ActiveTurns,
        *,
        resumable: bool = False,
    ) -> None:
        self.events = events
        self.started = started
        self.chat = chat
        self.user = user
        self.turns = turns
        self.key = (user.id, started.conversation.id)
        self._task: asyncio.Task[Any] | None = None
        self._stop_requested = False
        self._ran = False  # run() was called (its task, or the caller's, is consuming the events)
        self._offset = 0
        # A resumable reply's text goes to the store's chunk log, so a client can resume it from any process.
        self.chunks: ChunkPublisher | None = None
        if resumable:
            settings = chat.settings
            self.chunks = ChunkPublisher(
                chat.store,
                user.id,
                started.conversation.id,
                started.reply_id,
                StreamTimes(settings.stream_lease_seconds, settings.stream_log_seconds),
            )

    @property
    def offset(self) -> int:
        """Characters of the reply (choice 0) streamed so far: the SSE event id a client resumes after."""
        return self._offset

    @classmethod
    async def open(
        cls, chat: ChatService, request: TurnRequest, turns: ActiveTurns, *, resumable: bool = False
    ) -> TurnHandle:
        """Start the turn; raises the pipeline's ``DaehwaError`` if it cannot start (nothing stored then).

        ``resumable`` turns (the conversation API's SSE and WebSocket, the web page) log their reply's text for a
        resume from any process (``daehwa.resume``); ``/v1`` requests, which the client re-sends, do not pay for it.
        """
        events = chat.turn(request)
        try:
            first = await anext(events)
        except BaseException:
            await events.aclose()
            raise
        assert isinstance(first, TurnStarted)
        handle = cls(events, first, chat, request.user, turns, resumable=resumable)
        turns.add(handle)
        return handle

    @classmethod
    async def run_to_end(cls, chat: ChatService, request: TurnRequest, turns: ActiveTurns) -> TurnOutcome:
        """Start the turn and run it without a transport to feed (non-streamed routes); ``stop`` still reaches it."""
        handle = await cls.open(chat, request, turns)
        try:
            return await handle.run()
        except BaseException:
            await handle.aclose()
            raise

    def stop(self) -> None:
        if self._stop_requested:
            # Once is enough: a second cancel (e.g. a user deletion's own signal coming back to this process) would
            # leave a cancellation that ``_run_here`` cannot tell from the client leaving, and cut the stream.
            return
        self._stop_requested = True
        if self._task is not None:
            self._task.cancel()

    async def run(self, emit: Emit | None = None) -> TurnOutcome:
        """Stream the deltas to ``emit``; returns when the turn is finished or stopped."""
        self._ran = True
        current = asyncio.current_task()
        if current is not None and not self._stop_requested:
            return await self._run_here(current, emit)
        self._task = asyncio.ensure_future(self._consume(emit))
        if self._stop_requested:
            # Let the turn take one step first: cancelled while parked at TurnStarted, the pipeline could not store
            # the reply as interrupted.
            await asyncio.sleep(0)
            self._task.cancel()
        try:
            finished = await self._task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not self._stop_requested or (current is not None and current.cancelling()):
                raise
            return TurnOutcome(self.started, None, await self._stored_reply(), stopped=True)
        finally:
            self.turns.discard(self)
        return TurnOutcome(self.started, finished, finished.message)

    async def _run_here(self, current: asyncio.Task[Any], emit: Emit | None) -> TurnOutcome:
        """``run`` in the caller's task, without a task of its own (one less per turn on the hot path): ``stop``
        cancels the caller's task, and the cancellation is taken back here (``uncancel``) when ``stop`` was its
        only cause; a cancellation from elsewhere (the client left, shutdown) goes on up as before."""
        self._task = current
        try:
            finished = await self._consume(emit)
        except asyncio.CancelledError:
            self._task = None
            if not self._stop_requested or current.uncancel() > 0:
                raise
            return TurnOutcome(self.started, None, await self._stored_reply(), stopped=True)
        finally:
            self._task = None
            self.turns.discard(self)
        if self._stop_requested and current.cancelling() == 1:
            # stop() came after the turn's last suspension point: its cancel is still pending on this task.
            current.uncancel()
            with suppress(asyncio.CancelledError):
                await asyncio.sleep(0)  # delivers (and drops) the pending cancellation
        return TurnOutcome(self.started, finished, finished.message)

    async def aclose(self) -> None:
        """Clean up after a transport failed; a turn that never ran is stopped (and stored as interrupted)."""
        self.turns.discard(self)
        if not self._ran:
            self._stop_requested = True
            with suppress(Exception, asyncio.CancelledError):
                await self.run()
        await self.events.aclose()  # type: ignore[attr-defined]

    async def _consume(self, emit: Emit | None) -> TurnFinished:
        try:
            async with aclosing(self.events) as events:  # type: ignore[type-var]
                async for event in events:
                    if isinstance(event, TurnDelta):
                        if event.index == 0:
                            self._offset += len(event.text)
                        if event.index == 0 and self.chunks is not None:
                            self.chunks.add(event.text)
                            try:
                                await self.chunks.sync()  # in the log before the client has it, for a resume
                            except asyncio.CancelledError:
                                # Stopped meanwhile: the stored reply holds this delta, so the client gets it too.
                                if emit is not None:
                                    with suppress(Exception):
                                        await emit(event)
                                raise
                        if emit is not None:
                            await emit(event)
                    elif isinstance(event, TurnFinished):
                        return event
        finally:
            if self.chunks is not None:
                await self.chunks.close()  # after the reply is stored: a resuming reader then sees it finished
        raise RuntimeError("a turn always ends with TurnFinished")

    async def _stored_reply(self) -> StoredMessage:
        messages = await self.chat.store.list_messages(self.user.id, self.started.conversation.id, limit=8) or []
        for message in reversed(messages):
            if message.id == self.started.reply_id:
                return message
        raise RuntimeError("the stopped reply was not stored")


# -- SSE -------------------------------------------------------------------------------------------------------
def sse(event: str, data: Any, *, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


SendBytes = Callable[[bytes], Awaitable[None]]


class EventStreamResponse(Response):
    """``text/event-stream`` written by ``produce(send)``; the client leaving cancels ``produce`` at once.

    A store outage in the middle (Redis or PostgreSQL went down after the 200 was sent) ends the stream with
    ``error_frame`` of the outage's error (by default ``/v1``'s ``data: {"error": ...}`` and ``[DONE]``), so the client
    is told the store is unavailable instead of seeing the connection cut.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        produce: Callable[[SendBytes], Awaitable[None]],
        *,
        error_frame: Callable[[DaehwaError], bytes] | None = None,
    ) -> None:
        self.produce = produce
        self.error_frame = error_frame or _v1_error_frame
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})

        async def send_bytes(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        # ``produce`` runs in this task (one task fewer per stream); the watcher cancels it when the client leaves,
        # and that cancellation is taken back here (``uncancel``) once the partial reply is stored.
        current = asyncio.current_task()
        assert current is not None
        producing = True
        left = False
        watcher = asyncio.ensure_future(_wait_for_disconnect(receive))

        def on_disconnect(task: asyncio.Future[None]) -> None:
            nonlocal left
            if producing and not task.cancelled() and task.exception() is None:
                left = True
                current.cancel()

        watcher.add_done_callback(on_disconnect)
        try:
            try:
                await self.produce(send_bytes)
            except asyncio.CancelledError:
                producing = False
                if left and current.uncancel() == 0:
                    return  # the client left: generation stopped (the partial reply is stored)
                raise
            except Exception as exc:  # a bug in produce surfaces here (and in the log), not silently
                producing = False
                outage = store_outage(exc)
                if outage is None:
                    raise
                log.warning("a stream ended early: %s (%s)", outage.code, type(exc).__name__)
                await send({"type": "http.response.body", "body": self.error_frame(outage), "more_body": True})
            producing = False
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            producing = False
            watcher.remove_done_callback(on_disconnect)
            if not watcher.done():
                watcher.cancel()
                with suppress(asyncio.CancelledError, Exception):
                    await watcher


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def error_event_json(exc: DaehwaError) -> dict[str, Any]:
    return {**exc.to_openai(), "retry_after": retry_after_seconds(exc)}


def _v1_error_frame(exc: DaehwaError) -> bytes:
    return b"data: " + json.dumps(error_event_json(exc)).encode() + b"\n\ndata: [DONE]\n\n"


def _sse_error_frame(exc: DaehwaError) -> bytes:
    """The conversation API's stream ends with an ``error`` event and no ``done``: the client resumes later."""
    return sse("error", error_event_json(exc))


def sse_turn_response(handle: TurnHandle, *, resume_seconds: float = 0.0) -> EventStreamResponse:
    """The conversation API's SSE stream: start, delta..., [error], done.

    Each delta of choice 0 carries the SSE ``id`` of the reply's offset after it, for a resume. When the client
    leaves, the turn goes on for ``resume_seconds`` (0: it is stopped at once) so the client can resume it.
    """

    async def produce(send: SendBytes) -> None:
        connected = True

        async def emit(delta: TurnDelta) -> None:
            nonlocal connected
            if not connected:
                return
            event_id = handle.offset if delta.index == 0 else None
            try:
                await send(sse("delta", {"text": delta.text, "index": delta.index}, event_id=event_id))
            except Exception:
                if resume_seconds <= 0:
                    raise
                connected = False  # the client left; the turn goes on for a resume

        try:
            await send(sse("start", started_json(handle.started)))
        except BaseException:
            await handle.aclose()
            raise
        if resume_seconds <= 0:
            try:
                outcome = await handle.run(emit)
            except BaseException:
                await handle.aclose()
                raise
        else:
            run = asyncio.ensure_future(handle.run(emit))
            try:
                outcome = await asyncio.shield(run)
            except asyncio.CancelledError:
                connected = False
                if run.done():
                    raise
                handle.turns.detach(run, handle, resume_seconds)
                raise
        if outcome.finished is not None and outcome.finished.error is not None:
            await send(sse("error", error_event_json(outcome.finished.error)))
        await send(sse("done", outcome.json()))

    return EventStreamResponse(produce, error_frame=_sse_error_frame)


_OUTCOMES = {
    MessageStatus.COMPLETE: "ok",
    MessageStatus.FALLBACK: "fallback",
    MessageStatus.INTERRUPTED: "interrupted",
    MessageStatus.ERROR: "error",
    MessageStatus.BLOCKED: "blocked",
    MessageStatus.STREAMING: "interrupted",
}


def resumed_result_json(message: StoredMessage) -> dict[str, Any]:
    """The ``done`` of a resumed stream: a TurnResult built from the stored reply (usage and timings are the
    original stream's, so they are null here)."""
    outcome = _OUTCOMES.get(message.status, "ok")
    error = message.meta.get("error")
    shown = message_json(message)
    usage = shown["usage"]
    return {
        "conversation_id": message.conversation_id,
        "user_message": None,
        "message": shown,
        "usage": usage and {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
        "outcome": outcome,
        "finish_reason": {"ok": "stop", "fallback": "stop", "blocked": "content_filter"}.get(outcome, outcome),
        "model": message.model,
        "ttft_ms": None,
        "total_ms": None,
        "cost": usage["cost"] if usage else None,
        "error": error if isinstance(error, dict) else None,
    }


def sse_resume_response(
    store: Store, user: User, reply: StoredMessage, *, after: int, times: StreamTimes
) -> EventStreamResponse:
    """A reply resumed after character ``after``: delta... (each with its offset as the SSE id), then done."""

    async def produce(send: SendBytes) -> None:
        async for item in follow_reply(store, user.id, reply.conversation_id, reply.id, after=after, times=times):
            if isinstance(item, StreamChunk):
                await send(sse("delta", {"text": item.text, "index": 0}, event_id=item.end))
            else:
                await send(sse("done", resumed_result_json(item)))

    return EventStreamResponse(produce, error_frame=_sse_error_frame)


# -- WebSocket -------------------------------------------------------------------------------------------------
router = APIRouter(tags=["conversations"])

WS_UNAUTHENTICATED = 4401
WS_FORBIDDEN = 4403


class WsTurnIn(GenerationOptions):
    """A client frame that starts a turn (``message``, ``regenerate`` or ``edit``)."""

    type: str
    conversation_id: str | None = Field(default=None, max_length=100)
    content: str | None = None
    persona: str | None = Field(default=None, max_length=100)
    variables: dict[str, Any] | None = None
    title: str | None = Field(default=None, max_length=200)
    request_id: str | None = Field(default=None, max_length=128)
    model: str | None = Field(default=None, max_length=200)


def _same_origin(ws: WebSocket) -> bool:
    origin = ws.headers.get("origin")
    if origin is None:
        return True  # not a browser (browsers always send Origin on WebSocket handshakes)
    host = ws.headers.get("host", "")
    return origin.split("://", 1)[-1].rstrip("/") == host


@router.websocket("/api/ws")
async def websocket_chat(ws: WebSocket) -> None:
    """Conversations over a WebSocket: see docs/api.md for the frames."""
    app = ws.app
    try:
        principal = await resolve_principal(ws)
        if principal is None and ws.query_params.get("api_key"):
            user = await app.state.accounts.user_for_api_key(ws.query_params["api_key"])
            principal = Principal(user, "api_key")
        elif principal is None:
            raise AuthenticationError("Log in, or connect with ?api_key=<key> or an Authorization header.")
        else:
            if principal.via == "session" and not _same_origin(ws):
                # Accept, then close with a code: a browser sees close codes, never a refused handshake's status.
                await ws.accept()
                await ws.close(code=WS_FORBIDDEN, reason="cross-origin WebSocket with a session cookie")
                return
            user = principal.user
    except AuthenticationError as exc:
        await ws.accept()
        await ws.close(code=WS_UNAUTHENTICATED, reason=exc.message[:120])
        return
    await ws.accept()
    session = _WsSession(ws, user, app.state.services.chat, app.state.turns, app.state.settings.max_request_bytes)
    session.recheck = lambda: _still_valid(ws, principal)
    await session.serve()


async def _still_valid(ws: WebSocket, principal: Principal) -> None:
    """Raise AuthenticationError when the socket's credentials ended (logout, password change, revoked key).

    Checked before every turn: a socket outlives the login it was opened with. Lookups are cached for
    DAEHWA_AUTH_CACHE_SECONDS, as for HTTP requests, so this costs no store round trip per turn.
    """
    accounts = ws.app.state.accounts
    if principal.via == "session":
        assert principal.token is not None
        if await accounts.session(principal.token) is None:
            raise AuthenticationError("Your session has ended: log in again.", code="session_expired")
    else:
        key = ws.query_params.get("api_key") or ws.headers.get("authorization", "").partition(" ")[2].strip()
        await accounts.user_for_api_key(key)


class _WsSession:
    def __init__(self, ws: WebSocket, user: User, chat: ChatService, turns: ActiveTurns, max_bytes: int) -> None:
        self.ws = ws
        self.user = user
        self.chat = chat
        self.turns = turns
        self.max_bytes = max_bytes
        self.lock = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None
        self.handle: TurnHandle | None = None
        self.request_id = ws.scope.get("state", {}).get("request_id")
        self.recheck: Callable[[], Awaitable[None]] | None = None  # raises when the credentials ended

    async def send(self, data: dict[str, Any]) -> None:
        async with self.lock:
            await self.ws.send_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")))

    async def send_error(self, exc: DaehwaError, request_id: str | None = None) -> None:
        payload = {"type": "error", **error_event_json(exc)}
        if request_id:
            payload["request_id"] = request_id
        await self.send(payload)

    async def serve(self) -> None:
        try:
            while True:
                text = await self.ws.receive_text()
                await self.on_frame(text)
        except (WebSocketDisconnect, RuntimeError):
            pass  # the client left (RuntimeError: receive after a close frame)
        finally:
            if self.task is not None and not self.task.done():
                # The client left mid-reply: cancelling the turn stores what was generated as interrupted.
                self.task.cancel()
                with suppress(asyncio.CancelledError, Exception):
                    await self.task

    async def on_frame(self, text: str) -> None:
        if len(text.encode()) > self.max_bytes:
            await self.send_error(
                InvalidRequest(f"The frame is larger than {self.max_bytes} bytes (DAEHWA_MAX_REQUEST_BYTES).")
            )
            return
        try:
            data = json.loads(text)
        except ValueError:
            await self.send_error(InvalidRequest("Frames must be JSON objects.", code="invalid_json"))
            return
        if not isinstance(data, dict):
            await self.send_error(InvalidRequest("Frames must be JSON objects with a 'type'.", param="type"))
            return
        kind = data.get("type")
        if kind == "ping":
            await self.send({"type": "pong"})
        elif kind == "stop":
            if self.handle is not None:
                self.handle.stop()
        elif kind in ("message", "regenerate", "edit"):
            await self.start_turn(data)
        else:
            await self.send_error(
                InvalidRequest("Unknown frame type: use message, regenerate, edit, stop or ping.", param="type")
            )

    async def start_turn(self, data: dict[str, Any]) -> None:
        if self.recheck is not None:
            try:
                await self.recheck()
            except AuthenticationError as exc:
                await self.send_error(exc, data.get("request_id"))
                await self.ws.close(code=WS_UNAUTHENTICATED, reason=exc.message[:120])
                return
        try:
            check_json(data)  # before pydantic, whose message for a lone surrogate names no fix
        except InvalidRequest as exc:
            tag = data.get("request_id")
            await self.send_error(exc, tag if isinstance(tag, str) and invalid_char(tag) is None else None)
            return
        try:
            frame = WsTurnIn.model_validate(data)
        except ValidationError as exc:
            message, param, code = validation_message(exc.errors())
            await self.send_error(InvalidRequest(message, param=param, code=code), data.get("request_id"))
            return
        if self.task is not None and not self.task.done():
            await self.send_error(
                InvalidRequest(
                    "A reply is still being generated: wait for 'done' or send 'stop'.", code="turn_in_progress"
                ),
                frame.request_id,
            )
            return
        request = TurnRequest(
            user=self.user,
            content=frame.content,
            conversation_id=frame.conversation_id,
            persona=frame.persona,
            variables=frame.variables,
            title=frame.title,
            model=frame.model,
            params=generation_params(frame),
            regenerate=frame.type == "regenerate",
            edit=frame.type == "edit",
            source="ws",
            request_id=frame.request_id or self.request_id,
            locale=self.ws.headers.get("accept-language"),
        )
        if (frame.type != "message") and not frame.conversation_id:
            await self.send_error(
                InvalidRequest(f"{frame.type} needs a conversation_id.", param="conversation_id"), frame.request_id
            )
            return
        self.task = asyncio.ensure_future(self.run_turn(request, frame.request_id))

    async def run_turn(self, request: TurnRequest, tag: str | None) -> None:
        extra = {"request_id": tag} if tag else {}
        try:
            handle = await TurnHandle.open(self.chat, request, self.turns, resumable=True)
        except DaehwaError as exc:
            await self.send_error(exc, tag)
            return
        self.handle = handle
        try:
            await self.send({"type": "start", **started_json(handle.started), **extra})
            message_id = handle.started.reply_id

            async def emit(delta: TurnDelta) -> None:
                await self.send({"type": "delta", "text": delta.text, "index": delta.index, "message_id": message_id})

            outcome = await handle.run(emit)
        except BaseException:
            await handle.aclose()
            raise
        finally:
            self.handle = None
        if outcome.finished is not None and outcome.finished.error is not None:
            await self.send({"type": "error", **error_event_json(outcome.finished.error), **extra})
        await self.send({"type": "done", **outcome.json(), **extra})

"""``DaehwaChatConsumer``: a Channels WebSocket consumer that chats through daehwa's turn pipeline.

Subclass it and set what the bot is with class attributes, as with django-pyhub-ai's ``AgentChatConsumer``::

    class TutorConsumer(DaehwaChatConsumer):
        model = "openai/gpt-4o-mini"
        temperature = 1.0
        system_prompt_template = "You are a language tutor. Speak only {언어}, at the {레벨} level."
        first_user_message_template = "첫 문장으로 대화를 시작해주세요."  # the bot speaks first
        prompt_context_data = {"언어": "영어", "레벨": "초급"}

Each Django user has one conversation per consumer, kept in daehwa's store: reconnecting (a reload, another tab, a
dropped network) shows the same history. Every message is a turn of ``ChatService`` (moderation, quotas, the user's
message stored before the model is called, the partial reply kept when the socket drops), exactly as for
``daehwa serve``'s transports.

The socket speaks HTML for the HTMX page (``daehwa/chat_room.html``, htmx-ext-ws): the client sends
``{"message": "..."}`` (or ``{"action": "stop"}``) and gets fragments swapped in by id (``hx-swap-oob``). Override
the ``render_*`` methods (or the ``daehwa/*.html`` templates) to change how they look.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import secrets
from collections.abc import Awaitable, Mapping
from contextlib import suppress
from typing import Any, ClassVar

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings as django_settings
from django.template.loader import render_to_string

from ..api.stream import TurnHandle
from ..errors import Conflict, DaehwaError
from ..i18n import normalize_locale
from ..pipeline import TurnDelta, TurnRequest
from ..rendering import render_message
from ..resume import StreamTimes, follow_reply
from ..services import Services
from ..stores.base import ConversationQuery, MessageChange, NewConversation, NewMessage, StreamChunk
from ..types import Conversation, GenerationParams, MessageStatus, StoredMessage, User
from .accounts import daehwa_user_name, guest_name
from .messages import error_text, say
from .runtime import get_runtime

log = logging.getLogger("daehwa.django")

#: Close codes the page can tell apart (a browser never sees a refused handshake's HTTP status).
CLOSE_LOGIN_REQUIRED = 4401
CLOSE_UNAVAILABLE = 1011  # htmx-ext-ws reconnects after this one, with backoff
CLOSE_USER_DELETED = 4410  # the account (Django user or guest) was deleted: no reconnect

SOURCE = "django"  # the turn's transport, in metrics and usage records
HIDDEN = "django_hidden"  # meta flag of the opening user message the page does not show


class _Missing(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        raise KeyError(f"the prompt template uses {{{key}}}, which get_context_data() does not give")


class DaehwaChatConsumer(AsyncWebsocketConsumer):
    """A chat room on one WebSocket: one conversation per (user, consumer), streamed as HTML fragments."""

    #: daehwa model name (``provider/model``); ``None``: ``DAEHWA_DEFAULT_MODEL``.
    model: ClassVar[str | None] = None
    temperature: ClassVar[float | None] = None
    max_tokens: ClassVar[int | None] = None
    #: The system prompt; ``{name}`` fields are filled from ``get_context_data()`` (``str.format``), every turn.
    system_prompt_template: ClassVar[str] = ""
    #: Sent to the model as the user's first message of a new conversation, and not shown: the bot's reply to it
    #: opens the room (django-pyhub-ai's ``llm_first_user_message_template``).
    first_user_message_template: ClassVar[str] = ""
    #: A fixed greeting stored as the bot's first message of a new conversation (no model call).
    first_message_template: ClassVar[str] = ""
    prompt_context_data: ClassVar[Mapping[str, Any]] = {}
    #: The conversation's title in daehwa's store (and the page's heading).
    title: ClassVar[str] = ""
    #: Which conversation of the user this is; default: the consumer's dotted class path.
    conversation_key: ClassVar[str] = ""
    #: ``"ko"`` or ``"en"``; ``None``: the browser's Accept-Language, then ``settings.LANGUAGE_CODE``.
    language: ClassVar[str | None] = None
    #: Messages shown when the room opens (the model's context is daehwa's, whatever this is).
    history_limit: ClassVar[int] = 200
    message_template_name: ClassVar[str] = "daehwa/message.html"
    notice_template_name: ClassVar[str] = "daehwa/notice.html"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.locale = "ko"
        self.services: Services | None = None
        self.daehwa_user: User | None = None
        self.conversation: Conversation | None = None
        self._task: asyncio.Task[None] | None = None  # the turn this socket runs, or the reply it follows
        self._handle: TurnHandle | None = None
        self._following = False
        self._closing: asyncio.Future[None] | None = None

    # -- what subclasses change ----------------------------------------------------------------------------------
    async def can_accept(self) -> bool:
        """Whether this socket may chat: a logged-in Django user, by default. Return True to allow anonymous users."""
        user = self.scope.get("user")
        return bool(user is not None and user.is_authenticated)

    def get_context_data(self) -> dict[str, Any]:
        """The values of the prompt templates' ``{fields}``: ``prompt_context_data`` and the user's name."""
        user = self.scope.get("user")
        name = user.get_username() if user is not None and user.is_authenticated else ""
        return {"user_name": name, **self.prompt_context_data}

    def get_system_prompt(self) -> str | None:
        return self._format(self.system_prompt_template) or None

    def get_first_user_message(self) -> str:
        return self._format(self.first_user_message_template)

    def get_first_message(self) -> str:
        return self._format(self.first_message_template)

    def get_params(self) -> GenerationParams:
        return GenerationParams(temperature=self.temperature, max_tokens=self.max_tokens)

    def get_conversation_key(self) -> str:
        """Which of the user's conversations this room is (override to add e.g. a URL kwarg: one room per topic)."""
        return self.conversation_key or f"{type(self).__module__}.{type(self).__qualname__}"

    def get_locale(self) -> str:
        if self.language:
            return normalize_locale(self.language)
        for name, value in self.scope.get("headers", ()):
            if name == b"accept-language":
                return normalize_locale(value.decode("latin-1"))
        return normalize_locale(getattr(django_settings, "LANGUAGE_CODE", None))

    async def get_services(self) -> Services:
        return await get_runtime().services()

    async def get_daehwa_user(self) -> User:
        """The daehwa user of this socket: ``django-<pk>`` for a Django user; a guest per session for anonymous ones.

        A guest's name holds an HMAC of the session key (never the key), so a guest keeps the room across reloads
        while the Django session lasts; without a session each connection is a new guest.
        """
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            return await self._user(daehwa_user_name(user.pk), anonymous=False)
        session = self.scope.get("session")
        key = getattr(session, "session_key", None) if session is not None else None
        return await self._user(guest_name(key), anonymous=True)

    # -- the socket ------------------------------------------------------------------------------------------------
    async def connect(self) -> None:
        self.locale = self.get_locale()
        if not await self.can_accept():
            # Accept, then close with a code: the page shows why (a refused handshake shows nothing).
            await self.accept()
            await self.send_notice(say("login_required", self.locale))
            await self.close(code=CLOSE_LOGIN_REQUIRED)
            return
        opening: TurnHandle | Exception | None = None
        try:
            self.services = await self.get_services()
            self.daehwa_user = await self.get_daehwa_user()
            key = self.get_conversation_key()
            # Held until the opening turn has stored its message, so a second tab sees it and does not open again.
            async with get_runtime().creating(f"{self.daehwa_user.id}:{key}"):
                self.conversation, created = await self._open_conversation(key)
                stored = await self._messages()
                again = self._opening_to_retry(stored, created=created)
                if again is not None:
                    opening = await self._open_opening(regenerate=again)
            messages = self._shown(stored, retried=again is True)
        except Exception as exc:
            if isinstance(opening, TurnHandle):
                await opening.aclose()
            await self._fail_connect(exc)
            return
        try:
            await self.accept()
            get_runtime().enter(self.daehwa_user.id, self)
            await self.send(text_data=self.render_history(messages))
        except BaseException:
            if isinstance(opening, TurnHandle):
                await opening.aclose()
            raise
        if isinstance(opening, TurnHandle):
            self._task = asyncio.ensure_future(self._guarded(self._stream(opening)))
        elif isinstance(opening, DaehwaError):
            log.info("the opening turn was refused: %s (%s)", opening.code, opening.message)
            await self.send_notice(error_text(opening, self.locale))
        elif opening is not None:  # logged where it happened
            await self.send_notice(say("failed", self.locale))
        elif messages and messages[-1].role == "assistant" and messages[-1].status is MessageStatus.STREAMING:
            # Another tab (or process) is writing a reply: follow it here from the store's chunk log.
            self._task = asyncio.ensure_future(self._guarded(self._follow(messages[-1])))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.conversation is None:
            return  # refused or failed at connect; the socket is closing
        assert self.services is not None
        if text_data is not None and len(text_data) > self.services.settings.max_request_bytes:
            await self.send_notice(say("message_too_long", self.locale))
            return
        try:
            data = json.loads(text_data or "")
        except ValueError:
            data = None
        if not isinstance(data, dict):
            await self.send_notice(say("bad_frame", self.locale))
            return
        if data.get("action") == "stop":
            if self._handle is not None:
                self._handle.stop()
            elif self._following and self.daehwa_user is not None:
                # The reply is another socket's: stop it wherever it runs (this process or one sharing the store).
                turns = await get_runtime().turns()
                await turns.stop(self.daehwa_user.id, self.conversation.id, wait=False)
            return
        content = data.get("message")
        if not isinstance(content, str):
            await self.send_notice(say("bad_frame", self.locale))
            return
        if self._task is not None and not self._task.done():
            await self.send_notice(say("turn_in_progress", self.locale))
            return
        self._start(content)

    async def disconnect(self, code: int) -> None:
        if self.daehwa_user is not None:
            get_runtime().leave(self.daehwa_user.id, self)
        task, self._task = self._task, None
        if task is not None and not task.done():
            # The socket dropped mid-reply: cancelling the turn stores what was generated as interrupted.
            task.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await task

    def user_deleted(self) -> None:
        """The daehwa user was deleted (with the Django user, by ``daehwa_clear_guests``, by ``daehwa users
        delete``): stop the reply, say so, and close without a reconnect."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close_deleted())

    async def _close_deleted(self) -> None:
        self.conversation = None  # frames from now on are ignored
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()  # what was generated is stored (and deleted with the rest)
            with suppress(asyncio.CancelledError, Exception):
                await task
        try:
            await self.send_notice(say("account_deleted", self.locale))
            await self.close(code=CLOSE_USER_DELETED)
        except Exception:  # the socket is already gone
            log.debug("the room of a deleted user was already closed", exc_info=True)

    # -- the fragments --------------------------------------------------------------------------------------------
    def render_message(self, message: StoredMessage, *, swap: str = "") -> str:
        """One message as shown (Markdown for the bot, plain text for the user), with its status noted."""
        return render_to_string(self.message_template_name, self._message_context(message, swap=swap))

    def render_history(self, messages: list[StoredMessage]) -> str:
        body = "".join(self.render_message(m) for m in messages)
        return (
            f'<div id="daehwa-messages" hx-swap-oob="innerHTML">{body}</div>'
            '<div id="daehwa-notice" hx-swap-oob="innerHTML"></div>'
        )

    def render_notice(self, text: str) -> str:
        return render_to_string(self.notice_template_name, {"text": text})

    async def send_notice(self, text: str) -> None:
        await self.send(text_data=self.render_notice(text))

    # -- turns ------------------------------------------------------------------------------------------------------
    def _start(self, content: str) -> None:
        self._task = asyncio.ensure_future(self._guarded(self._run_turn(content)))

    async def _guarded(self, work: Awaitable[None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug, or the socket gone while sending: logged, never shown as a traceback
            log.exception("a chat turn failed")
            with suppress(Exception):
                await self.send_notice(say("failed", self.locale))

    async def _follow(self, reply: StoredMessage) -> None:
        """Stream a reply that another socket's turn is writing, from where the history showed it, to its end."""
        assert self.services is not None and self.daehwa_user is not None
        settings = self.services.settings
        times = StreamTimes(settings.stream_lease_seconds, settings.stream_log_seconds)
        target = f"daehwa-text-{reply.id}"
        self._following = True
        try:
            items = follow_reply(
                self.services.store,
                self.daehwa_user.id,
                reply.conversation_id,
                reply.id,
                after=len(reply.content),
                times=times,
            )
            async for item in items:
                if isinstance(item, StreamChunk):
                    text = html.escape(item.text, quote=False)
                    await self.send(text_data=f'<div id="{target}" hx-swap-oob="beforeend">{text}</div>')
                else:
                    await self.send(text_data=self.render_message(item, swap="outerHTML"))
        finally:
            self._following = False

    def _request(self, content: str | None, *, regenerate: bool = False) -> TurnRequest:
        assert self.daehwa_user is not None and self.conversation is not None
        return TurnRequest(
            user=self.daehwa_user,
            content=content,
            conversation_id=self.conversation.id,
            model=self.model,
            system=self.get_system_prompt(),
            params=self.get_params(),
            regenerate=regenerate,
            source=SOURCE,
            locale=self.locale,
        )

    async def _open_turn(self, request: TurnRequest) -> TurnHandle:
        assert self.services is not None
        # Resumable: the reply's text goes to the store's chunk log, so another tab can follow it live.
        return await TurnHandle.open(self.services.chat, request, await get_runtime().turns(), resumable=True)

    async def _run_turn(self, content: str) -> None:
        try:
            handle = await self._open_turn(self._request(content))
        except DaehwaError as exc:
            await self._refused(exc, content)
            return
        await self._stream(handle, show_user_message=True)

    async def _stream(self, handle: TurnHandle, *, show_user_message: bool = False) -> None:
        """Send a started turn's user message (if shown), its reply as it streams, and the final reply."""
        assert self.services is not None and self.daehwa_user is not None and self.conversation is not None
        self._handle = handle
        try:
            started = handle.started
            shown = ""
            if show_user_message and started.user_message is not None:
                shown = self.render_message(started.user_message)
            placeholder = self._placeholder(started.reply_id, started.conversation.id)
            await self.send(
                text_data=f'<div id="daehwa-messages" hx-swap-oob="beforeend">{shown}{self.render_message(placeholder)}'
                '</div><div id="daehwa-notice" hx-swap-oob="innerHTML"></div>'
            )
            target = f"daehwa-text-{started.reply_id}"

            async def emit(delta: TurnDelta) -> None:
                if delta.index == 0:
                    text = html.escape(delta.text, quote=False)
                    await self.send(text_data=f'<div id="{target}" hx-swap-oob="beforeend">{text}</div>')

            outcome = await handle.run(emit)
        except BaseException:
            await handle.aclose()
            raise
        finally:
            self._handle = None
        await self.send(text_data=self.render_message(outcome.message, swap="outerHTML"))
        if outcome.finished is not None and outcome.finished.error is not None:
            log.warning("turn ended with %s: %s", outcome.finished.error.code, outcome.finished.error.message)
            await self.send_notice(error_text(outcome.finished.error, self.locale))

    def _opening_to_retry(self, messages: list[StoredMessage], *, created: bool) -> bool | None:
        """Whether the bot should speak first now: ``None`` no; ``False`` a new opening; ``True`` the opening again.

        The opening is retried on connect while it has no answer (the model was down, or the socket dropped before
        the first token) and the user has not spoken yet; a reply with text, even interrupted, is an answer."""
        if not self.first_user_message_template:
            return None
        if created:
            return False
        if any(m.role == "user" and not m.meta.get(HIDDEN) for m in messages):
            return None  # the user spoke: the conversation has begun without the opening
        start = next((i for i, m in enumerate(messages) if m.role == "user"), None)
        if start is None:
            return False  # refused before it was stored (a quota, say)
        replies = [m for m in messages[start + 1 :] if m.role == "assistant"]
        if not replies:
            return True
        reply = replies[-1]
        failed = reply.status in (MessageStatus.ERROR, MessageStatus.FALLBACK)
        return True if failed or (reply.status is MessageStatus.INTERRUPTED and not reply.content.strip()) else None

    async def _open_opening(self, *, regenerate: bool) -> TurnHandle | Exception:
        """Start the bot's opening turn (not streamed yet), or the error that refused it (the room stays open)."""
        assert self.services is not None and self.daehwa_user is not None
        try:
            content = None if regenerate else self.get_first_user_message()
            handle = await self._open_turn(self._request(content, regenerate=regenerate))
        except DaehwaError as exc:
            return exc
        except Exception as exc:  # a bug, e.g. a template field get_context_data() does not give
            log.exception("the opening turn failed")
            return exc
        message = handle.started.user_message
        if message is not None:
            try:
                await self.services.store.update_message(
                    self.daehwa_user.id, message.id, MessageChange(meta={HIDDEN: True})
                )
            except BaseException:
                await handle.aclose()
                raise
        return handle

    async def _refused(self, exc: DaehwaError, content: str) -> None:
        """A turn the pipeline refused before it started; a blocked message is stored (and shown) as blocked."""
        log.info("turn refused: %s (%s)", exc.code, exc.message)
        if exc.code == "content_blocked" and self.conversation is not None:
            blocked = StoredMessage(
                id=f"blocked-{secrets.token_hex(6)}",
                conversation_id=self.conversation.id,
                role="user",
                content=content,
                status=MessageStatus.BLOCKED,
                created_at=self.conversation.updated_at,
            )
            await self.send(
                text_data=f'<div id="daehwa-messages" hx-swap-oob="beforeend">{self.render_message(blocked)}</div>'
            )
        await self.send_notice(error_text(exc, self.locale))

    # -- helpers -----------------------------------------------------------------------------------------------------
    def _format(self, template: str) -> str:
        return template.format_map(_Missing(self.get_context_data())).strip() if template else ""

    def _message_context(self, message: StoredMessage, *, swap: str) -> dict[str, Any]:
        status = message.status.value if isinstance(message.status, MessageStatus) else str(message.status)
        streaming = message.status is MessageStatus.STREAMING
        note = ""
        if message.status is MessageStatus.INTERRUPTED:
            note = say("interrupted", self.locale)
        elif message.status is MessageStatus.ERROR and not message.content:
            note = say("failed", self.locale)
        elif message.status is MessageStatus.BLOCKED and message.role == "assistant":
            note = say("blocked_reply", self.locale)
        return {
            "message": message,
            "role": message.role,
            "status": status,
            "streaming": streaming,
            "text": message.content if streaming else "",
            "html": "" if streaming else render_message(message.role, message.content),
            "note": note,
            "thinking": say("thinking", self.locale),
            "swap": swap,
        }

    def _placeholder(self, reply_id: str, conversation_id: str) -> StoredMessage:
        assert self.conversation is not None
        return StoredMessage(
            id=reply_id,
            conversation_id=conversation_id,
            role="assistant",
            content="",
            status=MessageStatus.STREAMING,
            created_at=self.conversation.updated_at,
        )

    async def _user(self, name: str, *, anonymous: bool) -> User:
        assert self.services is not None
        store = self.services.store
        record = await store.get_user_by_name(name)
        if record is not None:
            return record.user
        try:
            return await store.create_user(name, password_hash=None, anonymous=anonymous)
        except Conflict:  # created meanwhile by another connection
            record = await store.get_user_by_name(name)
            assert record is not None
            return record.user

    async def _open_conversation(self, key: str) -> tuple[Conversation, bool]:
        """This room's conversation of the user (found by its key), or a new one with its greeting; (it, created).

        The caller holds ``Runtime.creating`` for the key, so two tabs opening at once share one conversation."""
        assert self.services is not None and self.daehwa_user is not None
        store, user = self.services.store, self.daehwa_user
        found = await self._find_conversation(key)
        if found is not None:
            return found, False
        conversation = await store.create_conversation(
            user.id,
            NewConversation(
                title=self.title or type(self).__name__,
                model=self.model,
                meta={"django_consumer": key, "auto_title": False},
            ),
        )
        greeting = self.get_first_message()
        if greeting:
            await store.append_message(
                user.id,
                conversation.id,
                NewMessage(role="assistant", content=greeting, meta={"first_message": True}),
            )
        return conversation, True

    async def _find_conversation(self, key: str) -> Conversation | None:
        assert self.services is not None and self.daehwa_user is not None
        query = ConversationQuery(kind="chat", limit=100)
        while True:
            page = await self.services.store.list_conversations(self.daehwa_user.id, query)
            for conversation in page:
                if conversation.meta.get("django_consumer") == key:
                    return conversation
            if len(page) < query.limit:
                return None
            query = ConversationQuery(kind="chat", limit=query.limit, before=page[-1].updated_at)

    async def _messages(self) -> list[StoredMessage]:
        """The conversation's last ``history_limit`` messages as stored (hidden ones too)."""
        assert self.services is not None and self.daehwa_user is not None and self.conversation is not None
        messages = await self.services.store.list_messages(
            self.daehwa_user.id, self.conversation.id, limit=self.history_limit
        )
        return list(messages or ())

    def _shown(self, messages: list[StoredMessage], *, retried: bool) -> list[StoredMessage]:
        """The messages the room shows; an opening being retried replaces the failed reply after it."""
        if retried:
            start = next((i for i, m in enumerate(messages) if m.role == "user"), len(messages))
            messages = messages[:start]
        return [m for m in messages if m.role in ("user", "assistant") and not m.meta.get(HIDDEN)]

    async def _fail_connect(self, exc: Exception) -> None:
        if isinstance(exc, DaehwaError):
            log.warning("the chat room could not open: %s (%s)", exc.code, exc.message)
            text = error_text(exc, self.locale)
        else:
            log.exception("the chat room could not open")
            text = say("failed", self.locale)
        await self.accept()
        await self.send_notice(text)
        await self.close(code=CLOSE_UNAVAILABLE)

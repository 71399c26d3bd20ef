"""The turn pipeline: the one path every transport (CLI, REST, SSE, WebSocket, /v1, web page) takes.

    check input -> load or create the conversation -> moderate input -> store the user's message and an empty reply
    -> build the context -> stream from the model (with output moderation) -> store the reply -> account usage

The user's message is stored before the model is called. The reply is stored as ``streaming`` at once, saved as it
grows (every ``DAEHWA_STREAM_FLUSH_SECONDS``), and finalised exactly once: ``complete``, or ``interrupted`` with the
text that arrived when the stream broke off, was stopped or the client went away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing, suppress
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from .config import Settings
from .context import count_message_tokens, estimate_tokens
from .context.engine import BuiltContext, ContextEngine, ContextMemory
from .context.tokens import TokenCounter
from .errors import (
    ContentBlocked,
    DaehwaError,
    InvalidRequest,
    ModelUnavailable,
    NotFound,
    PermissionDenied,
    ProviderError,
)
from .i18n import normalize_locale, t
from .metrics import Metrics
from .moderation.base import Action, ModerationPolicy, Moderator, NullModerator, StreamGuard
from .personas import Persona, PersonaCatalog
from .routing import RouteEnd, Router
from .stores.base import MessageChange, NewConversation, NewMessage, NewTurn, Store, TurnResult
from .text import check_json, check_text, drop_unstorable
from .types import (
    ChatMessage,
    Conversation,
    GenerationParams,
    MessageStatus,
    Outcome,
    StoredMessage,
    TextDelta,
    Usage,
    UsageRecord,
    User,
)

log = logging.getLogger(__name__)

#: Messages of these statuses are part of the context sent to the model; blocked, failed and canned ones are not.
CONTEXT_STATUSES = frozenset({MessageStatus.COMPLETE, MessageStatus.INTERRUPTED})
TITLE_LENGTH = 40


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """One turn, as any transport asks for it.

    Server-kept history: give ``content`` and a ``conversation_id`` (or none, to start a conversation).
    Client-kept history (``/v1``, ``/api/chat``): give ``messages``; the last one must be the user's.
    """

    user: User
    content: str | None = None
    conversation_id: str | None = None
    messages: Sequence[ChatMessage] | None = None
    model: str | None = None
    persona: str | None = None
    variables: Mapping[str, Any] | None = None
    system: str | None = None
    params: GenerationParams = field(default_factory=GenerationParams)
    regenerate: bool = False  # answer the last user message again, replacing the reply after it
    edit: bool = False  # replace the last user message (and what followed) with ``content``
    title: str | None = None
    source: str = "api"  # transport, for metrics and usage: cli, rest, sse, ws, v1, web
    request_id: str | None = None
    locale: str | None = None
    #: When every model fails before any text, answer with the canned localized fallback reply (stored as
    #: ``fallback``). Programs on /v1 turn this off: they get an OpenAI error they can act on, not prose.
    fallback_reply: bool = True


@dataclass(frozen=True, slots=True)
class TurnStarted:
    conversation: Conversation
    user_message: StoredMessage | None
    reply_id: str
    model: str


@dataclass(frozen=True, slots=True)
class TurnDelta:
    text: str
    index: int = 0


@dataclass(frozen=True, slots=True)
class TurnFinished:
    message: StoredMessage
    usage: Usage
    outcome: Outcome
    model: str
    ttft_ms: float | None
    total_ms: float
    finish_reason: str
    texts: Mapping[int, str]  # every choice's full text (more than one only when n > 1)
    error: DaehwaError | None = None


TurnEvent = TurnStarted | TurnDelta | TurnFinished


class Limiter(Protocol):
    """Per-user quotas (requests per minute, tokens per day); raises ``RateLimited``."""

    async def check(self, user: User, *, source: str, locale: str | None = None) -> None: ...

    async def record(self, user: User, *, tokens: int) -> None: ...


class Pricing(Protocol):
    def cost(self, model: str, usage: Usage) -> float | None: ...


@dataclass(slots=True)
class _Reply:
    """What one turn has generated so far (per choice index)."""

    parts: dict[int, list[str]] = field(default_factory=dict)
    ttft: float | None = None
    context: BuiltContext | None = None  # what the model was sent, and why (stored on the reply's meta)

    def add(self, index: int, text: str) -> None:
        self.parts.setdefault(index, []).append(text)

    def text(self, index: int = 0) -> str:
        return "".join(self.parts.get(index, ()))

    def texts(self) -> dict[int, str]:
        return {i: "".join(p) for i, p in sorted(self.parts.items())} or {0: ""}


class ChatService:
    """Runs turns. Built once per app by ``daehwa.services.build_services``."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        router: Router,
        personas: PersonaCatalog,
        moderator: Moderator,
        policy: ModerationPolicy,
        metrics: Metrics,
        limiter: Limiter | None = None,
        pricing: Pricing | None = None,
        token_counter: TokenCounter = estimate_tokens,
        context: ContextEngine | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.router = router
        self.personas = personas
        self.moderator = moderator
        self.policy = policy
        self.metrics = metrics
        self.limiter = limiter
        self.pricing = pricing
        self.count_tokens = token_counter
        self.context = context or ContextEngine(
            router=router,
            metrics=metrics,
            memory=store if isinstance(store, ContextMemory) else None,
            embedder=None,
            policy=settings.context_policy_default(),
            max_tokens_cap=settings.context_max_tokens,
            reply_tokens=settings.context_reply_tokens,
            summary_model=settings.context_summary_model,
        )
        self._background: set[asyncio.Task[Any]] = set()

    # -- conversations -----------------------------------------------------------------------------------------
    async def start_conversation(
        self,
        user: User,
        *,
        persona: str | None = None,
        model: str | None = None,
        variables: Mapping[str, Any] | None = None,
        title: str | None = None,
        locale: str | None = None,
    ) -> tuple[Conversation, list[StoredMessage]]:
        """Create a conversation; a persona that speaks first has its first message stored at once."""
        check_json({"title": title, "variables": variables})
        chosen = self._persona_for_user(user, persona or self.settings.default_persona)
        model = model or chosen.model or self.settings.default_model
        self.router.check(model, GenerationParams())
        resolved = chosen.resolve_variables(variables)
        conversation = await self.store.create_conversation(
            user.id,
            NewConversation(
                title=(title or "").strip() or chosen.localized_title(normalize_locale(locale)),
                persona=chosen.name,
                model=model,
                meta={"variables": resolved, "auto_title": not (title or "").strip()},
            ),
        )
        messages = []
        first = chosen.render_first_message(resolved, user_name=user.name)
        if first:
            messages.append(
                await self.store.append_message(
                    user.id, conversation.id, NewMessage(role="assistant", content=first, meta={"first_message": True})
                )
            )
        return conversation, messages

    def _persona_for_user(self, user: User, name: str) -> Persona:
        persona = self.personas.get(name)
        if user.anonymous and not persona.allow_anonymous:
            raise PermissionDenied(t("anonymous_not_allowed", "en") + " Sign in, or pick another persona.")
        return persona

    # -- turns -------------------------------------------------------------------------------------------------
    async def run(self, request: TurnRequest) -> tuple[TurnStarted, TurnFinished]:
        """Run a turn to the end (for transports that do not stream)."""
        started: TurnStarted | None = None
        async with aclosing(self.turn(request)) as events:
            async for event in events:
                if isinstance(event, TurnStarted):
                    started = event
                elif isinstance(event, TurnFinished):
                    assert started is not None
                    return started, event
        raise AssertionError("a turn always ends with TurnFinished")

    async def turn(self, request: TurnRequest) -> AsyncGenerator[TurnEvent, None]:
        """Run one turn, yielding ``TurnStarted``, ``TurnDelta``s and one ``TurnFinished``.

        Problems with the request raise a ``DaehwaError`` before ``TurnStarted`` and nothing is stored, except a
        message refused by moderation, which is stored as ``blocked`` before ``ContentBlocked`` is raised. Once the
        turn has started, failures end it with a ``TurnFinished`` whose ``outcome`` and ``error`` say what happened.
        """
        clock = time.perf_counter()
        user = request.user
        stateless = request.messages is not None
        content = self._checked_content(request)
        if self.limiter is not None:
            await self.limiter.check(user, source=request.source, locale=request.locale)

        conversation: Conversation | None = None
        persona: Persona | None = None
        variables: dict[str, str] = {}
        if stateless:
            model = request.model or self.settings.default_model
        elif request.conversation_id:
            conversation = await self.store.get_conversation(user.id, request.conversation_id)
            if conversation is None or conversation.kind != "chat":
                raise NotFound("No such conversation.", param="conversation_id")
            if conversation.persona and conversation.persona in self.personas:
                persona = self._persona_for_user(user, conversation.persona)
            variables = dict(conversation.meta.get("variables", {}))
            model = (
                request.model
                or conversation.model
                or (persona.model if persona else None)
                or self.settings.default_model
            )
        else:
            persona = self._persona_for_user(user, request.persona or self.settings.default_persona)
            variables = persona.resolve_variables(request.variables)
            model = request.model or persona.model or self.settings.default_model

        params = request.params.merged_over(persona.params()) if persona else request.params
        params = self.router.check(model, params)
        if (params.n or 1) > 1 and not stateless:
            raise InvalidRequest("n > 1 is only supported on /v1/chat/completions.", param="n")
        policy = persona.policy(self.policy) if persona else self.policy

        if (request.regenerate or request.edit) and conversation is None:
            raise InvalidRequest("regenerate and edit need an existing conversation_id.", param="conversation_id")

        user_meta: dict[str, Any] = {}
        blocked = False
        if content is not None and policy.input != "off":
            content, user_meta, blocked = self._moderate_input(content, policy.input)

        # Regenerate / edit rewrite the stored history; a blocked edit leaves it as it was (nothing is lost).
        if (request.regenerate or request.edit) and not blocked:
            assert conversation is not None
            content = await self._rewind(user, conversation, edit=request.edit, content=content)

        # A new conversation is created together with its first turn (one store transaction) unless the input is
        # blocked: then it is created alone, to hold the blocked message.
        new_conversation: NewConversation | None = None
        if conversation is None:
            # A blocked message never names a conversation: its title shows the masked text.
            shown = self.moderator.check(content).masked if blocked and content else content
            title = request.title or _title_from(shown or "")
            if stateless:
                new_conversation = NewConversation(title=title, model=model, kind="api")
            else:
                assert persona is not None
                new_conversation = NewConversation(
                    title=title,
                    persona=persona.name,
                    model=model,
                    meta={"variables": variables, "auto_title": request.title is None},
                )
            if blocked:
                conversation = await self.store.create_conversation(user.id, new_conversation)
        elif conversation.meta.get("auto_title") and content and not request.regenerate and not blocked:
            # A conversation started without a title (a persona that spoke first) is named by the first message.
            title = _title_from(content)
            await self.store.rename_conversation(user.id, conversation.id, title)
            await self.store.update_conversation(user.id, conversation.id, meta={"auto_title": False})
            conversation = replace(conversation, title=title, meta={**conversation.meta, "auto_title": False})

        if blocked:
            assert content is not None and conversation is not None
            await self.store.append_message(
                user.id,
                conversation.id,
                NewMessage(role="user", content=content, status=MessageStatus.BLOCKED, meta=user_meta),
            )
            await self.store.record_usage(
                UsageRecord(
                    user_id=user.id,
                    model=model,
                    usage=Usage(),
                    outcome=Outcome.BLOCKED,
                    ttft_ms=None,
                    total_ms=(time.perf_counter() - clock) * 1000,
                    conversation_id=conversation.id,
                    source=request.source,
                    request_id=request.request_id,
                )
            )
            self.metrics.turns.labels(request.source, Outcome.BLOCKED.value).inc()
            raise ContentBlocked(t("input_blocked", request.locale), param="content")

        if conversation is None:
            assert new_conversation is not None
            conversation, user_message, reply = await self.store.create_conversation_with_turn(
                user.id, new_conversation, NewTurn(user_content=content, user_meta=user_meta or None, reply_model=model)
            )
        else:
            user_message, reply = await self.store.begin_turn(
                user.id, conversation.id, NewTurn(user_content=content, user_meta=user_meta or None, reply_model=model)
            )
        state = _Reply()

        finished = False  # once the reply is finalised, closing the iterator must not finalise it again

        async def finish(
            outcome: Outcome, error: DaehwaError | None, end: RouteEnd | None, cause: DaehwaError | None = None
        ) -> TurnFinished:
            nonlocal finished
            finished = True
            return await self._finish(
                request, conversation, reply, model, context_messages, state, outcome, error, end, clock, cause
            )

        context_messages: list[ChatMessage] = []
        flusher = _Flusher(self.store, user.id, reply.id, self.settings.stream_flush_seconds)
        self.metrics.active_streams.inc()
        try:
            # Inside the try: a client that leaves right after TurnStarted still gets its reply finalised.
            yield TurnStarted(conversation=conversation, user_message=user_message, reply_id=reply.id, model=model)
            try:
                if stateless:
                    assert request.messages is not None
                    context_messages = list(request.messages)
                    if content is not None:
                        context_messages[-1] = ChatMessage("user", content)
                else:
                    state.context = await self._context(
                        user, conversation, persona, variables, request.system, model, params
                    )
                    context_messages = state.context.messages
            except DaehwaError as exc:
                await flusher.wait()
                yield await finish(Outcome.ERROR, exc, None)
                return

            candidates = [model, *(persona.fallback_models if persona else ())]
            guards: dict[int, StreamGuard] = {}
            end: RouteEnd | None = None
            outcome = Outcome.OK
            error: DaehwaError | None = None
            try:
                async with aclosing(self.router.stream(candidates, context_messages, params)) as stream:
                    async for event in stream:
                        if isinstance(event, RouteEnd):
                            end = event
                            break
                        guard = guards.get(event.index) or guards.setdefault(event.index, self._guard(policy.output))
                        delta = self._emit(state, guard, event, clock)
                        if delta is not None:
                            yield delta
                            flusher.maybe_flush(state.text())
                        if guard.blocked:
                            outcome = Outcome.BLOCKED
                            break
                for index, guard in sorted(guards.items()):
                    rest = guard.finish() if outcome is not Outcome.BLOCKED else ""
                    if rest:
                        delta = self._emit(state, None, TextDelta(rest, index), clock)
                        if delta is not None:
                            yield delta
                if outcome is Outcome.BLOCKED:
                    self.metrics.filter_hits.labels("output", "block").inc()
            except DaehwaError as exc:
                error = exc
                # The stream broke off: what the guards held back is checked and kept as part of the partial reply.
                for index, guard in sorted(guards.items()):
                    rest = guard.finish()
                    if rest and not guard.blocked:
                        delta = self._emit(state, None, TextDelta(rest, index), clock)
                        if delta is not None:
                            yield delta
                outcome = Outcome.INTERRUPTED if state.text() else Outcome.ERROR
            cause: DaehwaError | None = None
            if (
                outcome is Outcome.ERROR
                and error is not None
                and request.fallback_reply
                and self._gets_fallback_reply(error)
            ):
                # Every model failed before any text: the user gets a short, honest answer instead of nothing.
                cause, error, outcome = error, None, Outcome.FALLBACK
                delta = self._emit(state, None, TextDelta(t("fallback_reply", request.locale)), clock)
                if delta is not None:
                    yield delta
            await flusher.wait()
            yield await finish(outcome, error, end, cause)
        except (asyncio.CancelledError, GeneratorExit):
            if finished:
                raise
            # The client left or pressed stop: keep what arrived. Shielded, so a second cancel cannot lose the write.
            await flusher.wait_quietly()
            task = asyncio.ensure_future(finish(Outcome.INTERRUPTED, None, None))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            with suppress(asyncio.CancelledError):
                await asyncio.shield(task)
            raise
        finally:
            self.metrics.active_streams.dec()

    async def drain(self) -> None:
        """Wait for replies still being saved (called on shutdown)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # -- steps -------------------------------------------------------------------------------------------------
    def _gets_fallback_reply(self, error: DaehwaError) -> bool:
        """Upstream trouble (failures, timeouts, open breakers, busy providers) earns the canned reply; a bad
        request does not."""
        return self.settings.fallback_reply and isinstance(error, (ProviderError, ModelUnavailable))

    def _checked_content(self, request: TurnRequest) -> str | None:
        _reject_nul(request)
        if request.messages is not None:
            if request.content is not None or request.conversation_id is not None:
                raise InvalidRequest("Give either messages (client-kept history) or content, not both.")
            if not request.messages:
                raise InvalidRequest("messages must not be empty.", param="messages")
            last = request.messages[-1]
            total = sum(len(m.content) for m in request.messages)
            if total > self.settings.max_message_chars * 4:
                raise InvalidRequest(
                    f"messages hold {total} characters; the limit is {self.settings.max_message_chars * 4} "
                    "(4 x DAEHWA_MAX_MESSAGE_CHARS).",
                    param="messages",
                )
            return last.content if last.role == "user" else None
        if request.regenerate:
            if request.content is not None:
                raise InvalidRequest("regenerate takes no content.", param="content")
            return None
        if request.content is None:
            raise InvalidRequest("content is required.", param="content")
        content = request.content.strip()
        if not content:
            raise InvalidRequest("The message is empty: write something to send.", param="content")
        if len(content) > self.settings.max_message_chars:
            raise InvalidRequest(
                f"The message has {len(content)} characters; the limit is {self.settings.max_message_chars} "
                "(DAEHWA_MAX_MESSAGE_CHARS).",
                param="content",
                code="message_too_long",
            )
        return content

    async def _rewind(self, user: User, conversation: Conversation, *, edit: bool, content: str | None) -> str | None:
        """Regenerate: drop the reply after the last user message. Edit: drop that message and all after it."""
        messages = await self.store.list_messages(user.id, conversation.id) or []
        last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
        if last is None:
            raise InvalidRequest("There is no user message to regenerate or edit yet.", param="conversation_id")
        if edit:
            await self.store.delete_messages_from(user.id, conversation.id, messages[last].id)
            return content
        if last + 1 < len(messages):
            await self.store.delete_messages_from(user.id, conversation.id, messages[last + 1].id)
        return None  # the user's message is already stored; the new turn only adds a reply

    def _moderate_input(self, content: str, action: Action) -> tuple[str, dict[str, Any], bool]:
        result = self.moderator.check(content)
        if not result.hit:
            return content, {}, False
        self.metrics.filter_hits.labels("input", action).inc(len(result.matches))
        meta: dict[str, Any] = {
            "moderation": {
                "action": action,
                "matches": [
                    {"word": m.word, "category": m.category, "start": m.start, "end": m.end} for m in result.matches
                ],
            }
        }
        if action == "block":
            return content, meta, True
        if action == "mask":
            return result.masked, meta, False
        log.info("flagged input: %d banned-word matches", len(result.matches))
        return content, meta, False

    def _guard(self, action: Action) -> StreamGuard:
        if action == "off":
            return NullModerator().guard("off")
        return self.moderator.guard(action)

    def _emit(self, state: _Reply, guard: StreamGuard | None, event: TextDelta, clock: float) -> TurnDelta | None:
        text = guard.feed(event.text) if guard is not None else event.text
        text = drop_unstorable(text)  # NUL and lone surrogates are never text, and no store keeps them the same way
        if not text:
            return None
        if state.ttft is None:
            state.ttft = time.perf_counter() - clock
        state.add(event.index, text)
        return TurnDelta(text, event.index)

    async def _context(
        self,
        user: User,
        conversation: Conversation,
        persona: Persona | None,
        variables: Mapping[str, str],
        system_override: str | None,
        model: str,
        params: GenerationParams,
    ) -> BuiltContext:
        history = await self.store.list_messages(user.id, conversation.id) or []
        turns = [m for m in history if m.status in CONTEXT_STATUSES and m.role in ("user", "assistant") and m.content]
        system = system_override
        if system is None and persona is not None:
            system = persona.render_system(variables, user_name=user.name)
        policy = persona.context_policy(self.context.policy) if persona else self.context.policy
        return await self.context.build(
            user_id=user.id,
            conversation_id=conversation.id,
            history=turns,
            system=system,
            model=model,
            params=params,
            policy=policy,
        )

    def _remember(self, user: User, conversation: Conversation, model: str, built: BuiltContext | None) -> None:
        """After a reply: vectors and the summary are brought up to date in the background, off the reply's path."""
        if self.context.memory is None:
            return
        persona = (
            self.personas.get(conversation.persona)
            if conversation.persona and conversation.persona in self.personas
            else None
        )
        policy = persona.context_policy(self.context.policy) if persona else self.context.policy

        async def work() -> None:
            history = await self.store.list_messages(user.id, conversation.id) or []
            turns = [
                m for m in history if m.status in CONTEXT_STATUSES and m.role in ("user", "assistant") and m.content
            ]
            await self.context.after_turn(
                user_id=user.id,
                conversation_id=conversation.id,
                history=turns,
                model=model,
                query_vector=built.query_vector if built else None,
                policy=policy,
            )

        async def guarded() -> None:
            try:
                await work()
            except Exception as exc:  # after_turn counts its own failures; this is the store read before it
                self.context._failed("after_turn", exc)

        task = asyncio.ensure_future(guarded())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _finish(
        self,
        request: TurnRequest,
        conversation: Conversation,
        reply: StoredMessage,
        model: str,
        context_messages: Sequence[ChatMessage],
        state: _Reply,
        outcome: Outcome,
        error: DaehwaError | None,
        end: RouteEnd | None,
        clock: float,
        cause: DaehwaError | None = None,
    ) -> TurnFinished:
        total = time.perf_counter() - clock
        texts = state.texts()
        text = texts.get(0, "")
        answered_by = end.model if end else self.router.full_name(model)
        usage = end.usage if end and end.usage else None
        canned = outcome is Outcome.FALLBACK and end is None  # the fallback reply: no model answered
        if canned:
            usage = Usage()  # nothing to charge for, and nothing counts against the user's token quota
        if usage is None:
            completion = sum(self.count_tokens(x) for x in texts.values())
            usage = Usage(
                count_message_tokens(context_messages, self.count_tokens) if context_messages else 0, completion
            )
        status = {
            Outcome.OK: MessageStatus.COMPLETE,
            Outcome.FALLBACK: MessageStatus.FALLBACK,
            Outcome.INTERRUPTED: MessageStatus.INTERRUPTED,
            Outcome.BLOCKED: MessageStatus.BLOCKED,
            Outcome.ERROR: MessageStatus.ERROR,
        }[outcome]
        if end is not None and end.fallback_used and outcome is Outcome.OK:
            outcome = Outcome.FALLBACK
        meta: dict[str, Any] = {}
        if error is not None:
            meta["error"] = {"code": error.code, "message": error.message}
        if end is not None and end.fallback_used:
            meta["fallback_model"] = True
        if cause is not None:
            meta["fallback_reply"] = {"code": cause.code, "message": cause.message}
        if len(texts) > 1:
            meta["choices"] = len(texts)
        if state.context is not None:
            meta["context"] = state.context.report.as_dict()
        record = UsageRecord(
            user_id=request.user.id,
            model=answered_by,
            usage=usage,
            outcome=outcome,
            ttft_ms=state.ttft * 1000 if state.ttft is not None else None,
            total_ms=total * 1000,
            conversation_id=conversation.id,
            message_id=reply.id,
            cost=self.pricing.cost(answered_by, usage) if self.pricing else None,
            source=request.source,
            request_id=request.request_id,
        )
        stored = await self.store.finish_turn(
            request.user.id,
            reply.id,
            TurnResult(content=text, status=status, model=answered_by, meta=meta or None, usage=record),
        )
        if self.limiter is not None:
            await self.limiter.record(request.user, tokens=usage.total_tokens)
        if state.context is not None and status in CONTEXT_STATUSES:
            self._remember(request.user, conversation, model, state.context)
        self.metrics.turns.labels(request.source, outcome.value).inc()
        label = self.metrics.model(answered_by)  # any name a client sends: the series kept are bounded
        self.metrics.turn_latency.labels(label).observe(total)
        if canned:
            self.metrics.fallbacks.labels("reply").inc()
        elif state.ttft is not None:
            self.metrics.ttft.labels(label).observe(state.ttft)
        self.metrics.tokens.labels(label, "prompt").inc(usage.prompt_tokens)
        self.metrics.tokens.labels(label, "completion").inc(usage.completion_tokens)
        if error is not None:
            self.metrics.errors.labels(error.code).inc()
        log.info(
            "turn finished",
            extra={
                "request_id": request.request_id,
                "user_id": request.user.id,
                "conversation_id": conversation.id,
                "model": answered_by,
                "outcome": outcome.value,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "ttft_ms": record.ttft_ms,
                "total_ms": record.total_ms,
                "source": request.source,
            },
        )
        finish_reason = (end.finish_reasons.get(0, "stop") if end else None) or "stop"
        if outcome is Outcome.INTERRUPTED or outcome is Outcome.ERROR:
            finish_reason = "interrupted" if outcome is Outcome.INTERRUPTED else "error"
        elif outcome is Outcome.BLOCKED:
            finish_reason = "content_filter"
        assert stored is not None
        return TurnFinished(
            message=stored,
            usage=usage,
            outcome=outcome,
            model=answered_by,
            ttft_ms=record.ttft_ms,
            total_ms=record.total_ms,
            finish_reason=finish_reason,
            texts=texts,
            error=error,
        )


class _Flusher:
    """Saves a streaming reply's text now and then, off the hot path, one write at a time."""

    def __init__(self, store: Store, user_id: str, message_id: str, interval: float) -> None:
        self.store = store
        self.user_id = user_id
        self.message_id = message_id
        self.interval = interval
        self.last = time.monotonic()
        self.task: asyncio.Task[Any] | None = None

    def maybe_flush(self, text: str) -> None:
        now = time.monotonic()
        if now - self.last < self.interval or (self.task is not None and not self.task.done()):
            return
        self.last = now
        self.task = asyncio.ensure_future(
            self.store.update_message(self.user_id, self.message_id, MessageChange(content=text))
        )

    async def wait(self) -> None:
        """Let an in-flight save finish, so it cannot land after (and overwrite) the final one."""
        if self.task is not None:
            try:
                await asyncio.shield(self.task)
            except Exception:  # a failed intermediate save is superseded by the final one
                log.warning("saving a streaming reply's progress failed", exc_info=True)

    async def wait_quietly(self) -> None:
        with suppress(asyncio.CancelledError):
            await self.wait()


def _title_from(content: str) -> str:
    line = " ".join(content.split())
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1].rstrip() + "…"


def _reject_nul(request: TurnRequest) -> None:
    """A NUL character or a lone surrogate in any text of the request is an error: no store can keep it the same way."""
    fields: list[tuple[str, str | None]] = [
        ("content", request.content),
        ("system", request.system),
        ("title", request.title),
    ]
    fields += [("messages", m.content) for m in request.messages or ()]
    fields += [("variables", str(v)) for v in (request.variables or {}).values()]
    for param, value in fields:
        check_text(param, value)

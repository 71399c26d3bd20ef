"""The turn pipeline: the one path every transport (CLI, REST, SSE, WebSocket, /v1, web page) takes.

A turn is a list of named steps over one ``Turn`` (``daehwa/pipeline.py``; docs/pipeline.md)::

    resolve -> moderate -> persist                  (OPENING: a problem raises before TurnStarted)
    -> embed query -> contributors -> build context (PREPARING: a DaehwaError ends the turn as an error)
    -> generate (stream, output moderation) -> finish (store the reply, usage, quotas) -> observers (background)

A step is a method taking the ``Turn``; adding one is adding it to ``opening`` or ``preparing``. Features that do not
belong in the core plug in as ``TurnContributor``s and ``TurnObserver``s instead.

The user's message is stored before the model is called. The reply is stored as ``streaming`` at once, saved as it
grows (every ``DAEHWA_STREAM_FLUSH_SECONDS``), and finalised exactly once: ``complete``, or ``interrupted`` with the
text that arrived when the stream broke off, was stopped or the client went away. Client-kept history (``/v1``,
``/api/chat``) goes through the same steps: its messages are fitted to the token budget like a stored history.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing, suppress
from dataclasses import replace
from typing import Any, Protocol

from .config import Settings
from .context import count_message_tokens, estimate_tokens
from .context.engine import BuiltContext, ContextEngine
from .context.policy import ContextPolicy
from .context.summary import Entry
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
from .pipeline import (
    CONTEXT_STATUSES,
    OVERRIDE_MODEL,
    Turn,
    TurnContributor,
    TurnDelta,
    TurnEvent,
    TurnFinished,
    TurnObserver,
    TurnRequest,
    TurnStarted,
    observer_applies,
    run_contributors,
    run_observer,
)
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

TITLE_LENGTH = 40

#: A step of the pipeline: it reads and writes the turn.
Step = Callable[[Turn], Awaitable[None]]


class Limiter(Protocol):
    """Per-user quotas (requests per minute, tokens per day); raises ``RateLimited``."""

    async def check(self, user: User, *, source: str, locale: str | None = None) -> None: ...

    async def record(self, user: User, *, tokens: int) -> None: ...


class Pricing(Protocol):
    def cost(self, model: str, usage: Usage) -> float | None: ...


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
        contributors: Sequence[TurnContributor] = (),
        observers: Sequence[TurnObserver] = (),
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
        self.context = context or ContextEngine.from_settings(settings, router=router, metrics=metrics, store=store)
        self.contributors: list[TurnContributor] = list(contributors)
        #: The context memory (vectors, summary) is brought up to date by the first observer.
        self.observers: list[TurnObserver] = [ContextMemoryObserver(self), *observers]
        #: Before ``TurnStarted``: a problem raises and nothing is stored (a blocked message excepted).
        self.opening: list[Step] = [self._resolve, self._moderate, self._persist]
        #: After ``TurnStarted``, before the model: a ``DaehwaError`` ends the turn as an error.
        self.preparing: list[Step] = [self._embed_query, self._contribute, self._build_context]
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
        turn = Turn(request=request, user=request.user)
        for step in self.opening:
            await step(turn)
        assert turn.conversation is not None and turn.reply is not None
        finished = False  # once the reply is finalised, closing the iterator must not finalise it again
        flusher = _Flusher(self.store, turn.user.id, turn.reply.id, self.settings.stream_flush_seconds)
        self.metrics.active_streams.inc()
        try:
            # Inside the try: a client that leaves right after TurnStarted still gets its reply finalised.
            yield TurnStarted(
                conversation=turn.conversation, user_message=turn.user_message, reply_id=turn.reply.id, model=turn.model
            )
            try:
                for step in self.preparing:
                    await step(turn)
            except DaehwaError as exc:
                await flusher.wait()
                turn.outcome, turn.error = Outcome.ERROR, exc
            else:
                async with aclosing(self._generate(turn, flusher)) as deltas:
                    async for delta in deltas:
                        yield delta
                await flusher.wait()
            finished = True
            yield await self._close(turn)
        except (asyncio.CancelledError, GeneratorExit):
            if finished:
                raise
            # The client left or pressed stop: keep what arrived. Shielded, so a second cancel cannot lose the write.
            await flusher.wait_quietly()
            turn.outcome, turn.error, turn.end, turn.cause = Outcome.INTERRUPTED, None, None, None
            task = asyncio.ensure_future(self._close(turn))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            with suppress(asyncio.CancelledError):
                await asyncio.shield(task)
            raise
        finally:
            self.metrics.active_streams.dec()

    async def drain(self, grace_seconds: float | None = None) -> None:
        """Wait for replies still being saved and observers still running (called on shutdown).

        With ``grace_seconds``, work still running after that many seconds is cancelled with a warning: a shutdown must
        end even when a store that went away leaves a write waiting for a connection that never comes back."""
        loop = asyncio.get_running_loop()
        deadline = None if grace_seconds is None else loop.time() + grace_seconds
        while self._background:
            pending = list(self._background)
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                log.warning(
                    "shutdown: cancelling %d background task(s) still running after %.0f s", len(pending), grace_seconds
                )
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                return
            await asyncio.wait(pending, timeout=left)

    async def _close(self, turn: Turn) -> TurnFinished:
        """Finish the turn, then start the observers in the background."""
        finished = await self._finish(turn)
        for observer in self.observers:
            if not observer_applies(observer, turn, finished):
                continue  # e.g. both built-in observers on client-kept history: no task for nothing
            self._in_background(run_observer(observer, turn, finished, metrics=self.metrics))
        return finished

    def _in_background(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- the steps before TurnStarted --------------------------------------------------------------------------
    async def _resolve(self, turn: Turn) -> None:
        """Check the request; find the conversation, persona, model, parameters and moderation policy."""
        request, user = turn.request, turn.user
        turn.content = self._checked_content(request)
        if self.limiter is not None:
            await self.limiter.check(user, source=request.source, locale=request.locale)
        persona: Persona | None = None
        if turn.stateless:
            model = request.model or self.settings.default_model
        elif request.conversation_id:
            conversation = await self.store.get_conversation(user.id, request.conversation_id)
            if conversation is None or conversation.kind != "chat":
                raise NotFound("No such conversation.", param="conversation_id")
            turn.conversation = conversation
            if conversation.persona and conversation.persona in self.personas:
                persona = self._persona_for_user(user, conversation.persona)
            turn.variables = dict(conversation.meta.get("variables", {}))
            model = (
                request.model
                or conversation.model
                or (persona.model if persona else None)
                or self.settings.default_model
            )
        else:
            persona = self._persona_for_user(user, request.persona or self.settings.default_persona)
            turn.variables = persona.resolve_variables(request.variables)
            model = request.model or persona.model or self.settings.default_model
        turn.persona, turn.model = persona, model
        params = request.params.merged_over(persona.params()) if persona else request.params
        turn.params = self.router.check(model, params)
        if (turn.params.n or 1) > 1 and not turn.stateless:
            raise InvalidRequest("n > 1 is only supported on /v1/chat/completions.", param="n")
        turn.policy = persona.policy(self.policy) if persona else self.policy
        if (request.regenerate or request.edit) and turn.conversation is None:
            raise InvalidRequest("regenerate and edit need an existing conversation_id.", param="conversation_id")

    async def _moderate(self, turn: Turn) -> None:
        """The input filter; a blocked message is stored as ``blocked`` (nothing else changes) and refused."""
        assert turn.policy is not None
        if turn.content is None or turn.policy.input == "off":
            return
        turn.content, turn.moderation_meta, turn.blocked = self._moderate_input(turn.content, turn.policy.input)
        if not turn.blocked:
            return
        request, user = turn.request, turn.user
        conversation = turn.conversation
        if conversation is None:
            # A blocked message never names a conversation: its title shows the masked text.
            conversation = await self.store.create_conversation(
                user.id, self._new_conversation(turn, self.moderator.check(turn.content).masked)
            )
        await self.store.append_message(
            user.id,
            conversation.id,
            NewMessage(role="user", content=turn.content, status=MessageStatus.BLOCKED, meta=turn.moderation_meta),
        )
        await self.store.record_usage(
            UsageRecord(
                user_id=user.id,
                model=turn.model,
                usage=Usage(),
                outcome=Outcome.BLOCKED,
                ttft_ms=None,
                total_ms=(time.perf_counter() - turn.clock) * 1000,
                conversation_id=conversation.id,
                source=request.source,
                request_id=request.request_id,
            )
        )
        self.metrics.turns.labels(request.source, Outcome.BLOCKED.value).inc()
        raise ContentBlocked(t("input_blocked", request.locale), param="content")

    async def _persist(self, turn: Turn) -> None:
        """Store the user's message and an empty ``streaming`` reply (a new conversation in the same transaction)."""
        request, user = turn.request, turn.user
        conversation = turn.conversation
        if request.regenerate or request.edit:
            assert conversation is not None
            turn.content = await self._rewind(user, conversation, edit=request.edit, content=turn.content)
        new = NewTurn(user_content=turn.content, user_meta=turn.moderation_meta or None, reply_model=turn.model)
        if conversation is None:
            turn.conversation, turn.user_message, turn.reply = await self.store.create_conversation_with_turn(
                user.id, self._new_conversation(turn, turn.content or ""), new
            )
            return
        if conversation.meta.get("auto_title") and turn.content and not request.regenerate:
            # A conversation started without a title (a persona that spoke first) is named by the first message.
            title = _title_from(turn.content)
            await self.store.rename_conversation(user.id, conversation.id, title)
            await self.store.update_conversation(user.id, conversation.id, meta={"auto_title": False})
            conversation = replace(conversation, title=title, meta={**conversation.meta, "auto_title": False})
        turn.conversation = conversation
        turn.user_message, turn.reply = await self.store.begin_turn(user.id, conversation.id, new)

    def _new_conversation(self, turn: Turn, shown: str) -> NewConversation:
        title = turn.request.title or _title_from(shown)
        if turn.stateless:
            return NewConversation(title=title, model=turn.model, kind="api")
        assert turn.persona is not None
        return NewConversation(
            title=title,
            persona=turn.persona.name,
            model=turn.model,
            meta={"variables": turn.variables, "auto_title": turn.request.title is None},
        )

    # -- the steps after TurnStarted ---------------------------------------------------------------------------
    async def _embed_query(self, turn: Turn) -> None:
        """The new message's vector, once: recall and the hooks share it (none on client-kept history).

        Without hooks it is left to recall, which embeds only when older turns left the window: a short conversation
        then costs no embedding on the reply's path.
        """
        if turn.content is None or turn.stateless or not self._hooked():
            return
        turn.query = await self.context.embed_query(turn.content)
        turn.query_vector = turn.query.vector if turn.query else None

    def _hooked(self) -> bool:
        return bool(self.contributors) or any(not isinstance(o, ContextMemoryObserver) for o in self.observers)

    async def _contribute(self, turn: Turn) -> None:
        """The contributors, in order; what they put in ``user_meta`` is stored on the user's message with the reply
        (``finish_turn``'s one transaction: two store writes per turn, not three)."""
        if not self.contributors:
            return
        await run_contributors(
            turn, self.contributors, time_bound=self.settings.pipeline_hook_timeout_seconds, metrics=self.metrics
        )
        if turn.user_meta and turn.user_message is not None:
            turn.user_message = replace(turn.user_message, meta={**turn.user_message.meta, **turn.user_meta})

    async def _build_context(self, turn: Turn) -> None:
        """What the model is sent: the history (stored or the client's) fitted to the token budget."""
        if turn.reply_override is not None:
            return  # no model is called
        assert turn.conversation is not None
        if turn.stateless:
            turn.built = await self._client_context(turn)
        else:
            turn.built = await self._stored_context(turn)
        turn.context_messages = turn.built.messages

    async def _stored_context(self, turn: Turn) -> BuiltContext:
        assert turn.conversation is not None
        user, persona = turn.user, turn.persona
        history = await self.store.list_messages(user.id, turn.conversation.id) or []
        system = turn.request.system
        if system is None and persona is not None:
            system = persona.render_system(turn.variables, user_name=user.name)
        return await self.context.build(
            user_id=user.id,
            conversation_id=turn.conversation.id,
            history=_context_turns(history),
            system=system,
            model=turn.model,
            params=turn.params,
            policy=self._context_policy(persona),
            system_parts=turn.system_parts,
            query=turn.query,
        )

    async def _client_context(self, turn: Turn) -> BuiltContext:
        """Client-kept history: its leading system messages are kept, the oldest turns dropped to fit the budget.

        No summary and no recall (the client keeps the history), no message-count limit. When nothing had to be
        dropped and no contributor added to the system prompt, the model gets the messages exactly as sent.
        """
        assert turn.conversation is not None and turn.request.messages is not None
        sent = list(turn.request.messages)
        if turn.content is not None:
            sent[-1] = ChatMessage("user", turn.content)  # the masked text, when the input filter masks
        lead = next((i for i, m in enumerate(sent) if m.role != "system"), len(sent))
        system = "\n\n".join(m.content for m in sent[:lead]) or None
        history = [Entry(f"client-{i}", m.role, m.content) for i, m in enumerate(sent[lead:], start=lead)]
        policy = replace(self.context.policy, recent_messages=0, summary=False, recall=False)
        built = await self.context.build(
            user_id=turn.user.id,
            conversation_id=turn.conversation.id,
            history=history,
            system=system,
            model=turn.model,
            params=turn.params,
            policy=policy,
            system_parts=turn.system_parts,
        )
        if built.report.dropped == 0 and not turn.system_parts:
            built.messages = sent
        return built

    def _context_policy(self, persona: Persona | None) -> ContextPolicy:
        return persona.context_policy(self.context.policy) if persona else self.context.policy

    async def _generate(self, turn: Turn, flusher: _Flusher) -> AsyncGenerator[TurnDelta, None]:
        """Stream the reply from the model through the output filter (or a contributor's ``reply_override``)."""
        assert turn.policy is not None
        if turn.reply_override is not None:
            delta = self._emit(turn, None, TextDelta(turn.reply_override), turn.clock)
            if delta is not None:
                yield delta
            turn.end = RouteEnd(model=OVERRIDE_MODEL, usage=Usage())
            return
        candidates = [turn.model, *(turn.persona.fallback_models if turn.persona else ())]
        guards: dict[int, StreamGuard] = {}
        try:
            async with aclosing(self.router.stream(candidates, turn.context_messages, turn.params)) as stream:
                async for event in stream:
                    if isinstance(event, RouteEnd):
                        turn.end = event
                        break
                    guard = guards.get(event.index) or guards.setdefault(event.index, self._guard(turn.policy.output))
                    delta = self._emit(turn, guard, event, turn.clock)
                    if delta is not None:
                        yield delta
                        flusher.maybe_flush(turn.text())
                    if guard.blocked:
                        turn.outcome = Outcome.BLOCKED
                        break
            for index, guard in sorted(guards.items()):
                rest = guard.finish() if turn.outcome is not Outcome.BLOCKED else ""
                if rest:
                    delta = self._emit(turn, None, TextDelta(rest, index), turn.clock)
                    if delta is not None:
                        yield delta
            if turn.outcome is Outcome.BLOCKED:
                self.metrics.filter_hits.labels("output", "block").inc()
        except DaehwaError as exc:
            turn.error = exc
            # The stream broke off: what the guards held back is checked and kept as part of the partial reply.
            for index, guard in sorted(guards.items()):
                rest = guard.finish()
                if rest and not guard.blocked:
                    delta = self._emit(turn, None, TextDelta(rest, index), turn.clock)
                    if delta is not None:
                        yield delta
            turn.outcome = Outcome.INTERRUPTED if turn.text() else Outcome.ERROR
        if (
            turn.outcome is Outcome.ERROR
            and turn.error is not None
            and turn.request.fallback_reply
            and self._gets_fallback_reply(turn.error)
        ):
            # Every model failed before any text: the user gets a short, honest answer instead of nothing.
            turn.cause, turn.error, turn.outcome = turn.error, None, Outcome.FALLBACK
            delta = self._emit(turn, None, TextDelta(t("fallback_reply", turn.request.locale)), turn.clock)
            if delta is not None:
                yield delta

    # -- helpers of the steps ----------------------------------------------------------------------------------
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

    def _emit(self, turn: Turn, guard: StreamGuard | None, event: TextDelta, clock: float) -> TurnDelta | None:
        text = guard.feed(event.text) if guard is not None else event.text
        text = drop_unstorable(text)  # NUL and lone surrogates are never text, and no store keeps them the same way
        if not text:
            return None
        if turn.ttft is None:
            turn.ttft = time.perf_counter() - clock
        turn.add(event.index, text)
        return TurnDelta(text, event.index)

    # -- the last step -----------------------------------------------------------------------------------------
    async def _finish(self, turn: Turn) -> TurnFinished:
        """Store the reply (its status, text and meta), record the usage and the quota, count the metrics."""
        request, end, outcome, error, cause = turn.request, turn.end, turn.outcome, turn.error, turn.cause
        assert turn.conversation is not None and turn.reply is not None
        total = time.perf_counter() - turn.clock
        texts = turn.texts()
        text = texts.get(0, "")
        answered_by = end.model if end else self.router.full_name(turn.model)
        usage = end.usage if end and end.usage else None
        canned = outcome is Outcome.FALLBACK and end is None  # the fallback reply: no model answered
        if canned:
            usage = Usage()  # nothing to charge for, and nothing counts against the user's token quota
        if usage is None:
            completion = sum(self.count_tokens(x) for x in texts.values())
            prompt = turn.context_messages
            usage = Usage(count_message_tokens(prompt, self.count_tokens) if prompt else 0, completion)
        status = {
            Outcome.OK: MessageStatus.COMPLETE,
            Outcome.FALLBACK: MessageStatus.FALLBACK,
            Outcome.INTERRUPTED: MessageStatus.INTERRUPTED,
            Outcome.BLOCKED: MessageStatus.BLOCKED,
            Outcome.ERROR: MessageStatus.ERROR,
        }[outcome]
        if end is not None and end.fallback_used and outcome is Outcome.OK:
            outcome = Outcome.FALLBACK
        meta: dict[str, Any] = dict(turn.reply_meta)
        if error is not None:
            meta["error"] = {"code": error.code, "message": error.message}
        if end is not None and end.fallback_used:
            meta["fallback_model"] = True
        if cause is not None:
            meta["fallback_reply"] = {"code": cause.code, "message": cause.message}
        if len(texts) > 1:
            meta["choices"] = len(texts)
        if turn.built is not None:
            mood = turn.user_meta.get("mood")  # conversation intelligence's mood, shown in the report
            report = replace(turn.built.report, mood=mood) if isinstance(mood, dict) else turn.built.report
            meta["context"] = report.as_dict()
        record = UsageRecord(
            user_id=request.user.id,
            model=answered_by,
            usage=usage,
            outcome=outcome,
            ttft_ms=turn.ttft * 1000 if turn.ttft is not None else None,
            total_ms=total * 1000,
            conversation_id=turn.conversation.id,
            message_id=turn.reply.id,
            cost=self.pricing.cost(answered_by, usage) if self.pricing else None,
            source=request.source,
            request_id=request.request_id,
        )
        # Kept with the reply, so a client that loads the history later still shows what each reply cost.
        meta["usage"] = {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "cost": record.cost,
        }
        stored = await self.store.finish_turn(
            request.user.id,
            turn.reply.id,
            TurnResult(
                content=text,
                status=status,
                model=answered_by,
                meta=meta or None,
                usage=record,
                user_message_id=turn.user_message.id if turn.user_message is not None else None,
                user_meta=turn.user_meta or None,
            ),
        )
        if self.limiter is not None:
            await self.limiter.record(request.user, tokens=usage.total_tokens)
        self._count(turn, outcome, answered_by, usage, record, total, canned)
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
            user_meta=dict(turn.user_meta),
            reply_meta=dict(turn.reply_meta),
            cost=record.cost,
        )

    def _count(
        self, turn: Turn, outcome: Outcome, model: str, usage: Usage, record: UsageRecord, total: float, canned: bool
    ) -> None:
        """The turn's metrics and its log line."""
        request = turn.request
        self.metrics.turns.labels(request.source, outcome.value).inc()
        label = self.metrics.model(model)  # any name a client sends: the series kept are bounded
        self.metrics.turn_latency.labels(label).observe(total)
        if canned:
            self.metrics.fallbacks.labels("reply").inc()
        elif turn.ttft is not None:
            self.metrics.ttft.labels(label).observe(turn.ttft)
        self.metrics.tokens.labels(label, "prompt").inc(usage.prompt_tokens)
        self.metrics.tokens.labels(label, "completion").inc(usage.completion_tokens)
        if turn.error is not None:
            self.metrics.errors.labels(turn.error.code).inc()
        log.info(
            "turn finished",
            extra={
                "request_id": request.request_id,
                "user_id": request.user.id,
                "conversation_id": record.conversation_id,
                "model": model,
                "outcome": outcome.value,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "ttft_ms": record.ttft_ms,
                "total_ms": record.total_ms,
                "source": request.source,
            },
        )


class ContextMemoryObserver:
    """After a reply: the conversation's vectors and summary are brought up to date, off the reply's path.

    Only for stored history (the client keeps its own) and replies that join the context (complete, interrupted).
    Its failures are the context engine's (``daehwa_context_failures_total``), retried after the next turn.
    """

    name = "context_memory"

    def __init__(self, chat: ChatService) -> None:
        self.chat = chat

    def applies(self, turn: Turn, finished: TurnFinished) -> bool:
        return (
            self.chat.context.memory is not None
            and turn.built is not None
            and not turn.stateless
            and finished.message.status in CONTEXT_STATUSES
        )

    async def finished(self, turn: Turn, finished: TurnFinished) -> None:
        engine, built, conversation = self.chat.context, turn.built, turn.conversation
        if engine.memory is None or built is None or conversation is None or turn.stateless:
            return
        if finished.message.status not in CONTEXT_STATUSES:
            return
        personas = self.chat.personas
        name = conversation.persona
        persona = personas.get(name) if name and name in personas else None
        try:
            history = await self.chat.store.list_messages(turn.user.id, conversation.id) or []
        except Exception as exc:  # after_turn counts its own failures; this is the store read before it
            engine._failed("after_turn", exc)
            return
        await engine.after_turn(
            user_id=turn.user.id,
            conversation_id=conversation.id,
            history=_context_turns(history),
            model=turn.model,
            query_vector=built.query_vector,
            policy=self.chat._context_policy(persona),
        )


def _context_turns(history: Sequence[StoredMessage]) -> list[StoredMessage]:
    """The messages a context is built from: user and assistant text that reached the conversation."""
    return [m for m in history if m.status in CONTEXT_STATUSES and m.role in ("user", "assistant") and m.content]


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

"""The turn pipeline's shared pieces: the per-turn object, the events, and the two extension hooks.

``ChatService.turn`` (``daehwa/chat.py``) runs one turn as named steps over one ``Turn``::

    resolve -> moderate -> persist                      before TurnStarted: a problem raises, nothing is stored
    embed query -> contributors -> build context        after TurnStarted: a DaehwaError ends the turn as an error
    generate -> finish (store reply, usage, quotas)     the reply streams, then is stored exactly once
    observers                                           in the background, never on the reply's path

Features plug in without editing the steps (docs/pipeline.md):

- a ``TurnContributor`` runs after the user's message is stored and its query vector computed, before the context
  is built: it may add ``system_parts`` (counted in the token budget), ``user_meta``, ``reply_meta`` or set a
  ``reply_override`` (the model is then not called);
- a ``TurnObserver`` runs in the background once the reply is stored.

A hook that raises (or a contributor that takes longer than ``DAEHWA_PIPELINE_HOOK_TIMEOUT_SECONDS``) is logged as a
warning on ``daehwa.pipeline``, counted in ``daehwa_pipeline_hook_failures_total{hook=name}``, and the turn goes on as
if it had not run: a failed contributor's writes to the turn are discarded.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .types import GenerationParams, MessageStatus, Outcome, StoredMessage, TextDelta

if TYPE_CHECKING:
    from .context.engine import BuiltContext, QueryEmbedding
    from .errors import DaehwaError
    from .metrics import Metrics
    from .moderation.base import ModerationPolicy
    from .personas import Persona
    from .routing import RouteEnd
    from .stores.base import NewConversation
    from .types import ChatMessage, Conversation, Usage, User

log = logging.getLogger("daehwa.pipeline")

#: Messages of these statuses are part of the context sent to the model; blocked, failed and canned ones are not.
CONTEXT_STATUSES = frozenset({MessageStatus.COMPLETE, MessageStatus.INTERRUPTED})
#: The model name a reply written by a contributor (``reply_override``) is stored with.
OVERRIDE_MODEL = "daehwa"

Message = StoredMessage


# -- the events a turn yields ------------------------------------------------------------------------------------
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
    user_meta: Mapping[str, Any] = field(default_factory=dict)  # what contributors added to the user's message
    reply_meta: Mapping[str, Any] = field(default_factory=dict)  # what contributors added to the reply
    cost: float | None = None  # USD from the price table; None when the model's price is unknown


#: A piece of the reply for choice ``index``, as the pipeline passes it on (after the output filter): the provider's
#: delta type, since it carries the same two fields.
TurnDelta = TextDelta
TurnEvent = TurnStarted | TurnDelta | TurnFinished


# -- the per-turn object -------------------------------------------------------------------------------------------
@dataclass(eq=False)
class Turn:
    """Everything one turn's steps share. Hooks read it and write the fields documented as theirs.

    ``conversation`` is set from the persist step on (before any hook runs); ``persona`` is None on client-kept
    history (``/v1``, ``/api/chat``), which has no persona.
    """

    request: TurnRequest
    user: User
    persona: Persona | None = None
    conversation: Conversation | None = None
    content: str | None = None  # the user's text after input moderation (None on regenerate/continue)
    user_message: StoredMessage | None = None  # the stored user message (persisted before any contributor runs)
    query_vector: Sequence[float] | None = None  # the embedding of ``content``, None without the embedding model
    system_parts: list[str] = field(default_factory=list)  # extra system-prompt sections, counted in the budget
    user_meta: dict[str, Any] = field(default_factory=dict)  # merged into the stored user message's meta
    reply_meta: dict[str, Any] = field(default_factory=dict)  # merged into the reply's meta; sent with the reply
    reply_override: str | None = None  # set by a contributor: streamed as the reply, the model is not called
    built: BuiltContext | None = None  # after the build-context step

    # -- what the steps share besides the hooks' fields --
    model: str = ""
    params: GenerationParams = field(default_factory=GenerationParams)
    policy: ModerationPolicy | None = None
    variables: dict[str, str] = field(default_factory=dict)
    moderation_meta: dict[str, Any] = field(default_factory=dict)  # the input filter's findings (user message meta)
    blocked: bool = False
    new_conversation: NewConversation | None = None  # a conversation created together with its first turn
    query: QueryEmbedding | None = None  # ``query_vector`` with its timing, or why there is none
    reply: StoredMessage | None = None  # the reply as stored at the start (empty, ``streaming``)
    context_messages: list[ChatMessage] = field(default_factory=list)  # what the model is sent
    parts: dict[int, list[str]] = field(default_factory=dict)  # the reply's text so far, per choice index
    ttft: float | None = None  # seconds to the first text
    end: RouteEnd | None = None
    outcome: Outcome = Outcome.OK
    error: DaehwaError | None = None
    cause: DaehwaError | None = None  # the error a canned fallback reply stands in for
    clock: float = field(default_factory=time.perf_counter)

    @property
    def stateless(self) -> bool:
        """Client-kept history (the client sent every message)."""
        return self.request.messages is not None

    def add(self, index: int, text: str) -> None:
        self.parts.setdefault(index, []).append(text)

    def text(self, index: int = 0) -> str:
        return "".join(self.parts.get(index, ()))

    def texts(self) -> dict[int, str]:
        return {i: "".join(p) for i, p in sorted(self.parts.items())} or {0: ""}


# -- the hooks -----------------------------------------------------------------------------------------------------
class TurnContributor(Protocol):
    """Runs after persist and the query embedding, before the context is built (within the hook time bound).

    A contributor may also have ``applies(turn) -> bool``, a cheap synchronous check: when it says False the
    contributor is skipped without a time bound or a snapshot of the turn (most hooks do nothing on ``/v1``).
    """

    name: str

    async def contribute(self, turn: Turn) -> None: ...


class TurnObserver(Protocol):
    """Runs in the background after the reply is stored; never delays the reply.

    An observer may also have ``applies(turn, finished) -> bool``: when it says False no background task is started
    for it.
    """

    name: str

    async def finished(self, turn: Turn, finished: TurnFinished) -> None: ...


def contributor_applies(contributor: TurnContributor, turn: Turn) -> bool:
    """The contributor's ``applies`` (True when it has none); one that raises is run (and fails) as usual."""
    applies = getattr(contributor, "applies", None)
    if applies is None:
        return True
    try:
        return bool(applies(turn))
    except Exception:
        return True


def observer_applies(observer: TurnObserver, turn: Turn, finished: TurnFinished) -> bool:
    """The observer's ``applies`` (True when it has none); one that raises is run (and fails) as usual."""
    applies = getattr(observer, "applies", None)
    if applies is None:
        return True
    try:
        return bool(applies(turn, finished))
    except Exception:
        return True


def _failed(metrics: Metrics, name: str, what: str, exc: BaseException) -> None:
    metrics.pipeline_hook_failures.labels(name).inc()
    detail = str(exc) or type(exc).__name__
    log.warning("pipeline %s %r failed and was ignored: %s", what, name, detail, exc_info=exc, extra={"hook": name})


async def run_contributors(
    turn: Turn, contributors: Sequence[TurnContributor], *, time_bound: float, metrics: Metrics
) -> None:
    """Each contributor in order; one that raises or runs out of time leaves the turn as it found it."""
    for contributor in contributors:
        if not contributor_applies(contributor, turn):
            continue
        saved = (list(turn.system_parts), _snapshot(turn.user_meta), _snapshot(turn.reply_meta))
        override = turn.reply_override
        try:
            async with asyncio.timeout(time_bound):
                await contributor.contribute(turn)
        except Exception as exc:  # TimeoutError included; a cancelled turn (CancelledError) is not a hook failure
            if isinstance(exc, TimeoutError):
                exc = TimeoutError(f"took longer than {time_bound:g}s (DAEHWA_PIPELINE_HOOK_TIMEOUT_SECONDS)")
            _failed(metrics, contributor.name, "contributor", exc)
            turn.system_parts, turn.user_meta, turn.reply_meta = saved
            turn.reply_override = override


def _snapshot(meta: dict[str, Any]) -> dict[str, Any]:
    # Most turns' metas are still empty here: deepcopy walks even an empty dict through its memo machinery.
    return copy.deepcopy(meta) if meta else {}


async def run_observer(observer: TurnObserver, turn: Turn, finished: TurnFinished, *, metrics: Metrics) -> None:
    """One observer; a failure is logged and counted, never raised."""
    try:
        await observer.finished(turn, finished)
    except Exception as exc:
        _failed(metrics, observer.name, "observer", exc)


__all__ = [
    "CONTEXT_STATUSES",
    "Message",
    "Turn",
    "TurnContributor",
    "TurnDelta",
    "TurnEvent",
    "TurnFinished",
    "TurnObserver",
    "TurnRequest",
    "TurnStarted",
    "contributor_applies",
    "observer_applies",
    "run_contributors",
    "run_observer",
]

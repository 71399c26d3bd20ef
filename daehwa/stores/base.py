"""The store interfaces: conversations (with their messages and turns), accounts, and usage.

Each interface is a small ABC that every backend implements in its own module (``sqlite/conversations.py``,
``redis/accounts.py``...); ``Store`` is all three plus the lifecycle, so callers keep one object
(``services.store``). Every method is async and speaks the project's own types; no SQL, keys or cursors leak out,
so SQLite, Redis and PostgreSQL implement the same contract (``tests/test_stores.py`` runs one suite over all of
them). How to add a capability: ``docs/stores.md``.

Ownership is part of every read and write: a conversation that exists but belongs to another user is reported
exactly like one that does not exist (``None`` / ``False``), so no caller can tell the two apart.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..types import (
    Conversation,
    ConversationSummary,
    MessageStatus,
    Role,
    StoredMessage,
    UsageRecord,
    UsageTotal,
    User,
)
from .breakers import BreakerBoard, LocalBreakerBoard
from .signals import LocalSignals, StopSignals


# -- records -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class UserRecord:
    """A user as stored, with the password hash the API never returns."""

    user: User
    password_hash: str | None = field(repr=False)  # never in logs or tracebacks


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: str
    user_id: str
    name: str
    prefix: str  # the first characters of the key, shown in listings so a person can tell keys apart
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A browser login session, or a one-time login link (``csrf_token`` empty). Only the token's hash is stored."""

    user_id: str
    csrf_token: str
    expires_at: datetime


#: The ``user_id`` usage records keep once their user is deleted (``AccountStore.delete_user``): the records stay for
#: accounting, but nothing in them points at the person any more.
DELETED_USER_ID = "deleted-user"


@dataclass(frozen=True, slots=True)
class UserDeletion:
    """What ``delete_user`` removed: how many of the user's conversations, form records, API keys and unexpired
    sessions and login links, and how many usage records it kept detached (``DELETED_USER_ID``)."""

    conversations: int = 0
    form_records: int = 0
    api_keys: int = 0
    sessions: int = 0
    usage_detached: int = 0


@dataclass(frozen=True, slots=True)
class NewConversation:
    """What ``create_conversation`` stores; the id and times are the store's."""

    title: str = ""
    persona: str | None = None
    model: str | None = None
    kind: str = "chat"  # "chat" (the web page's), "api" (a stateless /v1 request's)...
    meta: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ConversationQuery:
    """Which conversations ``list_conversations`` returns: one page of one kind, newest-updated first."""

    kind: str | None = "chat"  # None: every kind
    title: str | None = None  # words of the title, matched case-insensitively (Unicode case folding)
    limit: int = 50
    before: datetime | None = None  # the page after the one that ended with a conversation updated at this time


@dataclass(frozen=True, slots=True)
class NewMessage:
    """What ``append_message`` stores; the id and time are the store's."""

    role: Role
    content: str
    status: MessageStatus = MessageStatus.COMPLETE
    model: str | None = None
    meta: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class MessageChange:
    """What ``update_message`` changes: the fields that are not ``None``; ``meta`` is merged into the old one."""

    content: str | None = None
    status: MessageStatus | None = None
    model: str | None = None
    meta: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class NewTurn:
    """The start of a turn: the user's message (none when regenerating) and an empty ``streaming`` reply."""

    user_content: str | None
    reply_model: str | None
    user_status: MessageStatus = MessageStatus.COMPLETE
    user_meta: Mapping[str, Any] | None = None

    def user_message(self) -> NewMessage | None:
        if self.user_content is None:
            return None
        return NewMessage("user", self.user_content, MessageStatus(self.user_status), meta=self.user_meta)

    def reply(self) -> NewMessage:
        return NewMessage("assistant", "", MessageStatus.STREAMING, model=self.reply_model)


@dataclass(frozen=True, slots=True)
class TurnResult:
    """The end of a turn: the reply's final text and status (``meta`` merged) and the usage to record with it.

    ``user_meta`` (what the turn's contributors added to the user's message, e.g. its mood) is merged into the meta
    of the message ``user_message_id`` (the user's message of the same conversation) in the same write, so a turn
    costs two store transactions, not three."""

    content: str
    status: MessageStatus
    model: str | None = None
    meta: Mapping[str, Any] | None = None
    usage: UsageRecord | None = None
    user_message_id: str | None = None
    user_meta: Mapping[str, Any] | None = None

    def change(self) -> MessageChange:
        return MessageChange(self.content, self.status, self.model, self.meta)

    def user_change(self) -> tuple[str, MessageChange] | None:
        """The user message's id and its change, or None when there is nothing to add to it."""
        if self.user_message_id is None or not self.user_meta:
            return None
        return self.user_message_id, MessageChange(meta=self.user_meta)


@dataclass(frozen=True, slots=True)
class NewFormRecord:
    """A completed form to store: which conversation and form, and the values (JSON: dates as ISO text)."""

    conversation_id: str
    form: str
    values: Mapping[str, Any]
    delivery: str | None = None  # "pending" when a webhook will be called; None without one


@dataclass(frozen=True, slots=True)
class FormRecord:
    """A completed form as stored (a reservation, a sign-up...). It outlives its conversation: it is the outcome."""

    id: str
    user_id: str
    conversation_id: str
    form: str
    values: Mapping[str, Any]
    created_at: datetime
    delivery: str | None = None  # the webhook: "pending", "delivered", "failed"; None without one


# -- interfaces --------------------------------------------------------------------------------------------------
class ConversationStore(abc.ABC):
    """Conversations, their messages, and the two writes of a turn."""

    @abc.abstractmethod
    async def create_conversation(self, user_id: str, new: NewConversation | None = None) -> Conversation: ...

    @abc.abstractmethod
    async def get_conversation(self, user_id: str, conversation_id: str) -> Conversation | None: ...

    @abc.abstractmethod
    async def list_conversations(self, user_id: str, query: ConversationQuery | None = None) -> list[Conversation]:
        """The user's conversations that match ``query``, newest-updated first (see ``ConversationQuery``)."""

    @abc.abstractmethod
    async def rename_conversation(self, user_id: str, conversation_id: str, title: str) -> bool: ...

    @abc.abstractmethod
    async def update_conversation(self, user_id: str, conversation_id: str, *, meta: Mapping[str, Any]) -> bool:
        """Merge ``meta`` into the conversation's metadata (persona variables, summaries, collected info...)."""

    @abc.abstractmethod
    async def delete_conversation(self, user_id: str, conversation_id: str) -> bool:
        """Delete the conversation and its messages. Usage records stay (accounting outlives history)."""

    @abc.abstractmethod
    async def append_message(self, user_id: str, conversation_id: str, message: NewMessage) -> StoredMessage:
        """Append and return the stored message; raises ``NotFound`` if the conversation is not the user's."""

    @abc.abstractmethod
    async def update_message(self, user_id: str, message_id: str, change: MessageChange) -> StoredMessage | None:
        """Change a message in place (a streaming reply's text and final status); ``meta`` is merged."""

    @abc.abstractmethod
    async def delete_messages_from(self, user_id: str, conversation_id: str, message_id: str) -> int:
        """Delete a message and every later one of its conversation (regenerate / edit-and-resend)."""

    @abc.abstractmethod
    async def list_messages(
        self, user_id: str, conversation_id: str, *, limit: int | None = None, before: str | None = None
    ) -> list[StoredMessage] | None:
        """Oldest first; ``None`` if the conversation is not the user's.

        ``limit`` keeps the last ``limit`` of them (none when it is 0 or less). ``before`` (a message id) pages
        backwards: only the messages older than that one, so the first id of one page is ``before`` of the next, and
        the pages join with no gap or repeat. A ``before`` that is not a message of this conversation raises
        ``InvalidRequest`` (``param="before"``): an empty page would look like the start of the history.
        Backends find a page by the messages' sequence index, whatever its depth.
        """

    async def begin_turn(
        self, user_id: str, conversation_id: str, turn: NewTurn
    ) -> tuple[StoredMessage | None, StoredMessage]:
        """Store the user's message (if any) and an empty ``streaming`` reply, before the model is called.

        Backends override this to do both in one transaction (one round trip on the hot path).
        """
        question = turn.user_message()
        user_msg = None if question is None else await self.append_message(user_id, conversation_id, question)
        return user_msg, await self.append_message(user_id, conversation_id, turn.reply())

    async def create_conversation_with_turn(
        self, user_id: str, new: NewConversation, turn: NewTurn
    ) -> tuple[Conversation, StoredMessage | None, StoredMessage]:
        """``create_conversation`` then ``begin_turn`` in it: a new chat's first message, a stateless /v1 request.

        Backends override this to do it in one transaction, so no conversation is ever left without its turn.
        """
        conversation = await self.create_conversation(user_id, new)
        user_msg, reply = await self.begin_turn(user_id, conversation.id, turn)
        return conversation, user_msg, reply

    @abc.abstractmethod
    async def finish_turn(self, user_id: str, message_id: str, result: TurnResult) -> StoredMessage | None:
        """Finalise the reply and record its usage (``Store`` composes the two; backends do it in one transaction).

        The usage is recorded even when the reply is gone (its conversation deleted while it streamed)."""


class AccountStore(abc.ABC):
    """Users, their API keys, and browser sessions (and one-time login links)."""

    @abc.abstractmethod
    async def create_user(
        self, name: str, *, password_hash: str | None, is_admin: bool = False, anonymous: bool = False
    ) -> User:
        """Raises ``Conflict`` if the name is taken."""

    @abc.abstractmethod
    async def get_user(self, user_id: str) -> UserRecord | None: ...

    @abc.abstractmethod
    async def get_user_by_name(self, name: str) -> UserRecord | None: ...

    @abc.abstractmethod
    async def list_users(self) -> list[User]: ...

    @abc.abstractmethod
    async def set_password_hash(self, user_id: str, password_hash: str) -> bool: ...

    @abc.abstractmethod
    async def create_api_key(self, user_id: str, *, name: str, prefix: str, key_hash: str) -> ApiKeyRecord: ...

    @abc.abstractmethod
    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        """The key with this hash, revoked or not (the caller decides); records ``last_used_at``."""

    @abc.abstractmethod
    async def list_api_keys(self, user_id: str | None = None) -> list[ApiKeyRecord]: ...

    @abc.abstractmethod
    async def revoke_api_key(self, key_id: str, *, user_id: str | None = None) -> bool: ...

    @abc.abstractmethod
    async def create_session(self, token_hash: str, record: SessionRecord) -> None: ...

    @abc.abstractmethod
    async def get_session(self, token_hash: str) -> SessionRecord | None:
        """The session if it exists and has not expired."""

    @abc.abstractmethod
    async def delete_session(self, token_hash: str) -> None: ...

    @abc.abstractmethod
    async def delete_user_sessions(self, user_id: str, *, keep: str | None = None) -> int:
        """End every session and login link of the user but the one whose token hash is ``keep``; return how many
        unexpired ones ended. A password change calls this, so it must reach all of them, however old."""

    @abc.abstractmethod
    async def delete_user(self, user_id: str) -> UserDeletion | None:
        """Delete the account and everything kept for it: its sessions and login links and API keys first (they stop
        working), then its conversations with their messages, context memory and stream logs, its form records, its
        profile (interests, feedback, settings), and the user last, so a deletion cut short can be run again.

        Usage records stay for accounting, detached: ``user_id`` becomes ``DELETED_USER_ID`` and the conversation,
        message and request ids are cleared. ``None`` when there is no such user (what was found under the id is
        deleted all the same). Policy (the last admin, confirmation) is the caller's: ``Accounts.delete_user``."""


class UsageStore(abc.ABC):
    """One record per turn (tokens, latency, cost, outcome), kept when the conversation is deleted."""

    @abc.abstractmethod
    async def record_usage(self, record: UsageRecord) -> None: ...

    @abc.abstractmethod
    async def usage_totals(self, *, user_id: str | None = None, since: datetime | None = None) -> list[UsageTotal]:
        """Totals per user and model, over records created at or after ``since``."""

    @abc.abstractmethod
    async def tokens_used_since(self, user_id: str, since: datetime) -> int:
        """Total tokens the user consumed since ``since`` (for daily token quotas)."""


class ContextStore(abc.ABC):
    """What the context engine keeps per conversation (``daehwa.context.engine``): a vector per message and one
    rolling summary. Both go with their conversation: deleting it deletes them, and deleting messages
    (``delete_messages_from``: edit, regenerate) deletes their vectors. A conversation that is not the user's reads
    as empty (``{}`` / ``None``) and is never written (``False``)."""

    @abc.abstractmethod
    async def save_vectors(
        self, user_id: str, conversation_id: str, vectors: Mapping[str, bytes], *, model: str
    ) -> bool:
        """Store (or replace) the vectors of messages of the conversation: message id -> float32 bytes, made by the
        embedder ``model``. Ids that are not messages of the conversation are ignored."""

    @abc.abstractmethod
    async def load_vectors(self, user_id: str, conversation_id: str, *, model: str) -> dict[str, bytes]:
        """The conversation's message vectors made by ``model`` (others are not comparable), by message id."""

    @abc.abstractmethod
    async def load_summary(self, user_id: str, conversation_id: str) -> ConversationSummary | None:
        """The conversation's rolling summary, if one was written."""

    @abc.abstractmethod
    async def save_summary(self, user_id: str, summary: ConversationSummary) -> bool:
        """Store the conversation's summary, replacing the previous one."""

    @abc.abstractmethod
    async def delete_summary(self, user_id: str, conversation_id: str) -> bool:
        """Forget the summary (it covered messages that were edited away)."""


@dataclass(frozen=True, slots=True)
class InterestRecord:
    """One remembered interest. ``score`` is time-scaled (``daehwa.intelligence.interests``): larger is stronger,
    and it only ever grows by additions, so ranking needs no clock."""

    term: str
    score: float
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """What a user did with a recommended catalogue item."""

    item_id: str
    clicks: int = 0
    dismissed: bool = False


class ProfileStore(abc.ABC):
    """Per-user profile for conversation intelligence (docs/intelligence.md): interests and recommendation feedback.

    Everything is keyed by ``user_id`` and only ever read for that user; ``delete_profile`` removes all of it
    (account deletion)."""

    #: The most interests kept per user; additions past it drop the weakest.
    MAX_INTERESTS = 200

    @abc.abstractmethod
    async def add_interests(self, user_id: str, increments: Mapping[str, float]) -> None:
        """Add each term's (time-scaled) increment to its score, in one transaction; keep the strongest
        ``MAX_INTERESTS``."""

    @abc.abstractmethod
    async def list_interests(self, user_id: str, *, limit: int = 50) -> list[InterestRecord]:
        """The user's strongest interests, highest score first."""

    @abc.abstractmethod
    async def delete_interests(self, user_id: str, term: str | None = None) -> int:
        """Forget one interest (``term``) or all; how many were removed."""

    @abc.abstractmethod
    async def record_feedback(self, user_id: str, catalogue: str, item_id: str, action: str) -> None:
        """``action`` "click" counts one click; "dismiss" marks the item not interesting (never offered again)."""

    @abc.abstractmethod
    async def load_feedback(self, user_id: str, catalogue: str) -> dict[str, FeedbackRecord]:
        """The user's feedback on a catalogue's items, by item id."""

    @abc.abstractmethod
    async def interests_enabled(self, user_id: str) -> bool:
        """Whether the user lets the service remember their interests (the default: yes)."""

    @abc.abstractmethod
    async def set_interests_enabled(self, user_id: str, enabled: bool) -> None:
        """Turn remembered interests off (nothing is learned or used; what was learned stays until deleted) or on."""

    @abc.abstractmethod
    async def delete_profile(self, user_id: str) -> None:
        """Remove the user's interests, feedback and profile settings."""


class FormStore(abc.ABC):
    """Completed forms (``daehwa.intelligence.forms``). A record is the user's: another user's reads as missing."""

    @abc.abstractmethod
    async def save_form_record(self, user_id: str, record: NewFormRecord) -> FormRecord | None:
        """Store a completed form of one of the user's conversations; ``None`` if the conversation is not theirs."""

    @abc.abstractmethod
    async def get_form_record(self, user_id: str, record_id: str) -> FormRecord | None: ...

    @abc.abstractmethod
    async def list_form_records(self, user_id: str, *, conversation_id: str | None = None) -> list[FormRecord]:
        """The user's records (of one conversation, if given), oldest first."""

    @abc.abstractmethod
    async def set_form_delivery(self, user_id: str, record_id: str, delivery: str) -> bool:
        """Record how the webhook went ("delivered" / "failed")."""


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """A piece of a streaming reply: ``text`` starts at character ``start`` of the reply's text (choice 0)."""

    start: int
    text: str

    @property
    def end(self) -> int:
        return self.start + len(self.text)


@dataclass(frozen=True, slots=True)
class StreamTimes:
    """How long a writer's lease lasts and how long a log is kept after its last write (from Settings)."""

    lease_seconds: float = 5.0
    expire_seconds: float = 300.0


@dataclass(frozen=True, slots=True)
class StreamRead:
    """What ``read_stream`` found: the chunks after the asked offset, whether the writer's lease still runs and
    whether the writer said the reply ended."""

    chunks: list[StreamChunk]
    alive: bool
    ended: bool


class StreamLogStore(abc.ABC):
    """The chunk log of replies being streamed, so a client can resume a reply from any server process.

    The process running a turn appends the reply's text as it is generated (``append_stream``, which also renews
    its lease for ``lease_seconds``, so a reader can tell a writer that died from a model that is slow) and ends the
    log (``end_stream``) once the reply is stored. A log is deleted ``expire_seconds`` after its last write, ended or
    not, so memory stays bounded. Another user's log reads as missing (``None``).
    """

    @abc.abstractmethod
    async def append_stream(
        self, user_id: str, conversation_id: str, message_id: str, chunk: StreamChunk, times: StreamTimes
    ) -> None:
        """Append ``chunk`` (an empty one only renews the lease); chunks come in order, each ``start`` at the
        previous one's ``end``."""

    @abc.abstractmethod
    async def end_stream(self, user_id: str, conversation_id: str, message_id: str, *, expire_seconds: float) -> None:
        """Mark the log ended (the reply is stored) and let it expire in ``expire_seconds``."""

    @abc.abstractmethod
    async def read_stream(
        self, user_id: str, conversation_id: str, message_id: str, *, after: int = 0
    ) -> StreamRead | None:
        """The chunks holding text after character ``after`` (the first one cut to start there); ``None`` when there
        is no log (never written, expired, or another user's)."""


class Store(ConversationStore, AccountStore, UsageStore, ContextStore, ProfileStore, FormStore, StreamLogStore):
    """Persistent state of the service: every interface above, plus the lifecycle.

    Implementations must allow concurrent use from one event loop.
    """

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and apply pending migrations."""

    @abc.abstractmethod
    async def recover_interrupted(self, *, created_before: datetime | None = None) -> None:
        """Mark replies left ``streaming`` by a process that died as ``interrupted`` (their text so far is kept).

        A reply whose chunk log has a live lease (``StreamLogStore``: its writer renews it while it runs) belongs to
        a running process and is left alone, and so is one created after ``created_before`` (None: no bound): a
        live process may not have taken its lease yet. Only the server calls this, when it starts: a one-off
        command (``daehwa users``, ``daehwa usage``) opening the store while a server is running must not relabel
        the replies that server is streaming.
        """

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise if the store cannot be reached."""

    def stop_signals(self) -> StopSignals:
        """How server processes sharing this store tell each other to stop a turn (see ``signals``).

        The default suits a store that one process uses; a store shared by several processes returns a channel
        they all listen to.
        """
        return LocalSignals()

    def breaker_board(self) -> BreakerBoard:
        """Where server processes sharing this store note open circuit breakers (see ``breakers``); by default
        nowhere: each process's breakers are its own."""
        return LocalBreakerBoard()

    async def finish_turn(self, user_id: str, message_id: str, result: TurnResult) -> StoredMessage | None:
        """The updates and the usage in steps; backends override this to do them in one transaction."""
        user_change = result.user_change()
        if user_change is not None:
            await self.update_message(user_id, *user_change)
        message = await self.update_message(user_id, message_id, result.change())
        if result.usage is not None:
            await self.record_usage(result.usage)
        return message

"""Small helpers every store backend shares: ids, UTC time, new records, and turning rows into the project's types.

The ``*_from_row`` functions take any mapping of column (or hash field, or JSON key) to value: a SQLite row
(``dict(row)``), an asyncpg record, a Redis hash or document. Times may be datetimes or ISO text, metadata a dict or
JSON text, flags booleans or ``"1"``/``"0"``, so one function serves all three backends.
"""

from __future__ import annotations

import abc
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import InvalidRequest, NotFound
from ..types import (
    Conversation,
    ConversationSummary,
    MessageStatus,
    Outcome,
    StoredMessage,
    UsageRecord,
    UsageTotal,
    User,
)
from .base import (
    ApiKeyRecord,
    ConversationStore,
    FormRecord,
    MessageChange,
    NewConversation,
    NewMessage,
    NewTurn,
    StreamChunk,
    TurnResult,
    UserRecord,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Row = Mapping[str, Any]
Record = TypeVar("Record", bound="DataclassInstance")


def new_id() -> str:
    """A sortable, unguessable id: 12 hex digits of milliseconds since the epoch, then 64 random bits.

    Ids created later sort later (to the millisecond), so listings and logs read in time order, and the random part
    makes them impossible to guess or enumerate.
    """
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(8)}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is taken to be UTC already (callers pass ``utcnow()``-based values)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def iso(value: datetime) -> str:
    """Fixed-width ISO text in UTC, so that string order equals time order (SQLite and Redis compare these)."""
    return as_utc(value).isoformat(timespec="microseconds")


def from_iso(text: str) -> datetime:
    return as_utc(datetime.fromisoformat(text))


def micros(value: datetime) -> int:
    """Microseconds since the epoch: exact as a Redis sorted-set score (doubles hold integers up to 2**53)."""
    # Integer arithmetic on the timedelta: float timestamps would round away the last microseconds.
    delta = as_utc(value) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def title_key(title: str) -> str:
    """The form titles are searched in: Unicode case folding, so 'ÄBC' finds 'äbc' and Korean matches as is."""
    return title.casefold()


def unknown_before(message_id: str) -> InvalidRequest:
    """What ``list_messages`` raises for a ``before`` that is not a message of the conversation."""
    return InvalidRequest(
        f"Message {message_id!r} is not in this conversation: set 'before' to the id of one of its messages "
        "(the first message of the page you have), or leave it out for the latest messages.",
        param="before",
    )


def merged(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> dict[str, Any]:
    """``old`` with the keys of ``new`` laid over it (a shallow merge, as ``update_*(meta=...)`` promise)."""
    out = dict(old or {})
    if new:
        out.update(new)
    return out


def no_conversation(conversation_id: str) -> NotFound:
    """What a write to a conversation that is not the user's raises."""
    return NotFound(f"Conversation {conversation_id!r} does not exist: list your conversations to find its id.")


def to_json(value: Mapping[str, Any]) -> str:
    """Compact JSON, Korean kept as is: how SQLite columns and Redis documents hold metadata."""
    if not value:
        return "{}"  # most messages' meta, written on every turn
    return _COMPACT_JSON(value if type(value) is dict else dict(value))


#: ``json.dumps(..., ensure_ascii=False, separators=(",", ":"))`` without building an encoder per call.
_COMPACT_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def redact(url: str) -> str:
    """The URL without its password, for messages and reprs."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    return f"{scheme}{sep}***@{rest.rsplit('@', 1)[1]}"


# -- new records -------------------------------------------------------------------------------------------------
def new_conversation(user_id: str, new: NewConversation | None = None, *, now: datetime | None = None) -> Conversation:
    new = new or NewConversation()
    now = now or utcnow()
    return Conversation(
        id=new_id(),
        user_id=user_id,
        title=new.title,
        persona=new.persona,
        model=new.model,
        created_at=now,
        updated_at=now,
        kind=new.kind,
        meta=dict(new.meta or {}),
    )


def new_message(
    conversation_id: str, new: NewMessage, *, message_id: str | None = None, now: datetime | None = None
) -> StoredMessage:
    return StoredMessage(
        id=message_id or new_id(),
        conversation_id=conversation_id,
        role=new.role,
        content=new.content,
        status=MessageStatus(new.status),
        created_at=now or utcnow(),
        model=new.model,
        meta=dict(new.meta or {}),
    )


def turn_messages(
    conversation_id: str, turn: NewTurn, *, message_id: Callable[[], str] = new_id, now: datetime | None = None
) -> tuple[StoredMessage | None, StoredMessage]:
    """The user's message (if any) and the empty reply of a turn, with ids from ``message_id``."""
    question = turn.user_message()
    user_msg = None
    if question is not None:
        user_msg = new_message(conversation_id, question, message_id=message_id(), now=now)
    return user_msg, new_message(conversation_id, turn.reply(), message_id=message_id(), now=now)


def changed(message: StoredMessage, change: MessageChange) -> StoredMessage:
    """``message`` with ``change`` applied: the fields it sets replaced, its ``meta`` merged."""
    return StoredMessage(
        id=message.id,
        conversation_id=message.conversation_id,
        role=message.role,
        content=message.content if change.content is None else change.content,
        status=message.status if change.status is None else MessageStatus(change.status),
        created_at=message.created_at,
        model=message.model if change.model is None else change.model,
        meta=merged(message.meta, change.meta),
    )


def usage_row(r: UsageRecord) -> dict[str, Any]:
    """A usage record as its columns (``USAGE_COLUMNS`` order); ``created_at`` is a datetime."""
    return {
        "user_id": r.user_id,
        "model": r.model,
        "prompt_tokens": r.usage.prompt_tokens,
        "completion_tokens": r.usage.completion_tokens,
        "outcome": Outcome(r.outcome).value,
        "ttft_ms": r.ttft_ms,
        "total_ms": r.total_ms,
        "cost": r.cost,
        "source": r.source,
        "conversation_id": r.conversation_id,
        "message_id": r.message_id,
        "request_id": r.request_id,
        "created_at": as_utc(r.created_at) if r.created_at else utcnow(),
    }


USAGE_FIELDS = (
    "user_id",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "outcome",
    "ttft_ms",
    "total_ms",
    "cost",
    "source",
    "conversation_id",
    "message_id",
    "request_id",
    "created_at",
)
USAGE_COLUMNS = ", ".join(USAGE_FIELDS)  # the order of ``usage_row``
API_KEY_COLUMNS = "id, user_id, name, prefix, created_at, last_used_at, revoked_at"  # ``api_key_from_row``


# -- rows -> types -----------------------------------------------------------------------------------------------
def _time(value: datetime | str) -> datetime:
    return as_utc(value) if isinstance(value, datetime) else from_iso(value)


def _maybe_time(value: datetime | str | None) -> datetime | None:
    return _time(value) if value else None


def _meta(value: Mapping[str, Any] | str | None) -> dict[str, Any]:
    if isinstance(value, str):
        loaded: dict[str, Any] = json.loads(value or "{}")
        return loaded
    return dict(value or {})


def _flag(value: bool | int | str | None) -> bool:
    return value in (True, 1, "1")


def _nullable(value: Any) -> Any:
    return value


def _or(default: str) -> Callable[[str | None], str]:
    return lambda value: value or default


def _amount(value: float | str | None) -> float:
    return float(value or 0.0)  # a SUM over NULL costs is NULL


def row_reader(
    cls: type[Record], *, columns: Mapping[str, str] | None = None, **convert: Callable[[Any], Any]
) -> Callable[[Row], Record]:
    """A function that builds the dataclass ``cls`` from a row: each field from the column of its name (or of
    ``columns[field]``), which must be there and is taken as is, unless ``convert`` names the field: then the column
    may be missing (the converter gets None) and its value goes through the converter."""
    columns = columns or {}
    unknown = {*convert, *columns} - {f.name for f in fields(cls)}
    if unknown:
        raise TypeError(f"{cls.__name__} has no fields {sorted(unknown)}")
    plan = [(columns.get(f.name, f.name), convert.get(f.name)) for f in fields(cls)]  # in the fields' order

    def read(row: Row) -> Record:
        get = row.get  # positional arguments, one bound method: this runs for every message of a history
        return cls(*[row[col] if conv is None else conv(get(col)) for col, conv in plan])

    return read


conversation_from_row = row_reader(
    Conversation,
    title=_or(""),
    persona=_nullable,
    model=_nullable,
    created_at=_time,
    updated_at=_time,
    kind=_or("chat"),
    meta=_meta,
)
message_from_row = row_reader(StoredMessage, status=MessageStatus, created_at=_time, model=_nullable, meta=_meta)
api_key_from_row = row_reader(ApiKeyRecord, created_at=_time, last_used_at=_maybe_time, revoked_at=_maybe_time)
usage_total_from_row = row_reader(UsageTotal, turns=int, prompt_tokens=int, completion_tokens=int, cost=_amount)
summary_from_row = row_reader(ConversationSummary, messages=int, created_at=_maybe_time)
form_record_from_row = row_reader(
    FormRecord, columns={"values": "record_values"}, values=_meta, created_at=_time, delivery=_nullable
)
_user_from_row = row_reader(User, is_admin=_flag, anonymous=_flag, created_at=_time)


def user_record_from_row(row: Row) -> UserRecord:
    return UserRecord(user=_user_from_row(row), password_hash=row.get("password_hash"))


def cut_chunks(chunks: list[StreamChunk], after: int) -> list[StreamChunk]:
    """Chunks of a stream log (ordered by end) read from offset ``after``: each keeps only its text past what the
    ones before it hold, so the first starts at ``after`` and a chunk written twice (a write that failed after it
    was stored, then sent again with more text) is never read twice."""
    out: list[StreamChunk] = []
    pos = after
    for chunk in chunks:
        if chunk.end <= pos:
            continue
        out.append(chunk if chunk.start >= pos else StreamChunk(pos, chunk.text[pos - chunk.start :]))
        pos = chunk.end
    return out


class VersionedConversationStore(ConversationStore):
    """A ``ConversationStore`` that keeps a version per conversation (Redis, PostgreSQL; see ``cache.VersionedStore``):
    each plain write is its ``*_versioned`` twin without the version, so a backend writes each once."""

    async def append_message(self, user_id: str, conversation_id: str, message: NewMessage) -> StoredMessage:
        return (await self.append_message_versioned(user_id, conversation_id, message))[0]

    async def update_message(self, user_id: str, message_id: str, change: MessageChange) -> StoredMessage | None:
        return (await self.update_message_versioned(user_id, message_id, change))[0]

    async def begin_turn(
        self, user_id: str, conversation_id: str, turn: NewTurn
    ) -> tuple[StoredMessage | None, StoredMessage]:
        user_msg, reply, _ = await self.begin_turn_versioned(user_id, conversation_id, turn)
        return user_msg, reply

    async def finish_turn(self, user_id: str, message_id: str, result: TurnResult) -> StoredMessage | None:
        return (await self.finish_turn_versioned(user_id, message_id, result))[0]

    @abc.abstractmethod
    async def append_message_versioned(
        self, user_id: str, conversation_id: str, message: NewMessage
    ) -> tuple[StoredMessage, str]:
        """``append_message``, and the conversation's version after it (for the cache's write-through)."""

    @abc.abstractmethod
    async def update_message_versioned(
        self, user_id: str, message_id: str, change: MessageChange
    ) -> tuple[StoredMessage | None, str | None]:
        """The changed message (None: not the user's) and the conversation's version after the change."""

    @abc.abstractmethod
    async def begin_turn_versioned(
        self, user_id: str, conversation_id: str, turn: NewTurn
    ) -> tuple[StoredMessage | None, StoredMessage, str]:
        """``begin_turn``, and the conversation's version after it."""

    @abc.abstractmethod
    async def finish_turn_versioned(
        self, user_id: str, message_id: str, result: TurnResult
    ) -> tuple[StoredMessage | None, str | None]:
        """``finish_turn``, and the conversation's version after it (None: the reply is gone)."""

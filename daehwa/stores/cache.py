"""An optional in-process cache of hot conversations in front of a shared store (``DAEHWA_STORE_CACHE_CONVERSATIONS``).

A turn reads its conversation and its whole history before calling the model; with the cache, a process keeps the
last N conversations it read (the conversation and all its messages) and, on the next read, asks the store only for
the conversation's *version*, a counter that every write to the conversation or its messages changes, in the store
itself, whichever process writes. Same version: the cached copy is served. Another: it is read again.

Why a version read per access and not invalidation messages (pub/sub): a message reaches the other processes some
time after the write returned, so a read there in between would be stale; a version read is one small round trip
that is never stale. The order makes it so: the version is read *before* the data it labels, and a write changes
the version *with* its data (same script or transaction), so a cached copy is never labelled newer than it is.

Write-through: the turn's writes return the version they made; exactly one more than the cached copy's means no
other write came between, so the process applies its own write to its copy instead of dropping it.

What it saves: the history's transfer and decoding (``benchmarks/bench_store_cache.py``: a 200-message history is
~10x cheaper to serve from the cache), not round trips. Stores that keep versions implement ``conversation_version``
(Redis in the conversation's hash, PostgreSQL in a column of ``conversations``; SQLite does not, one process has no
one to be stale against, so the setting refuses it with an error that says so).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigError
from ..types import Conversation, ConversationSummary, StoredMessage, UsageRecord, UsageTotal, User
from .base import (
    ApiKeyRecord,
    ConversationQuery,
    FeedbackRecord,
    FormRecord,
    InterestRecord,
    MessageChange,
    NewConversation,
    NewFormRecord,
    NewMessage,
    NewTurn,
    SessionRecord,
    Store,
    StreamChunk,
    StreamRead,
    StreamTimes,
    TurnResult,
    UserDeletion,
    UserRecord,
)
from .breakers import BreakerBoard
from .common import unknown_before
from .signals import StopSignals

__all__ = ["CachedStore", "VersionedStore"]


@runtime_checkable
class VersionedStore(Protocol):
    """A store that keeps a version per conversation: an integer that every write to the conversation or its
    messages increments, in the same transaction, and that the writes of a turn return."""

    async def conversation_version(self, conversation_id: str) -> str | None:
        """The current version; None: no such conversation (or none to compare)."""

    async def append_message_versioned(
        self, user_id: str, conversation_id: str, message: NewMessage
    ) -> tuple[StoredMessage, str]: ...

    async def update_message_versioned(
        self, user_id: str, message_id: str, change: MessageChange
    ) -> tuple[StoredMessage | None, str | None]: ...

    async def begin_turn_versioned(
        self, user_id: str, conversation_id: str, turn: NewTurn
    ) -> tuple[StoredMessage | None, StoredMessage, str]: ...

    async def finish_turn_versioned(
        self, user_id: str, message_id: str, result: TurnResult
    ) -> tuple[StoredMessage | None, str | None]: ...


@dataclass(slots=True)
class _Entry:
    version: str
    conversation: Conversation | None = None
    messages: list[StoredMessage] | None = None


class CachedStore(Store):
    """``inner`` with its last ``size`` conversations read kept in this process, checked against their version."""

    def __init__(self, inner: Store, size: int) -> None:
        if not isinstance(inner, VersionedStore):
            raise ConfigError(
                f"DAEHWA_STORE_CACHE_CONVERSATIONS needs a store that keeps conversation versions (Redis, PostgreSQL); "
                f"{type(inner).__name__} does not: set it to 0."
            )
        self.inner = inner
        self.versioned: VersionedStore = inner
        self.size = size
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self.hits = self.misses = 0

    def __getattr__(self, name: str) -> Any:  # the inner store's own attributes (url, prefix...)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"CachedStore({self.inner!r}, size={self.size})"

    # -- the cache ---------------------------------------------------------------------------------------------
    async def _version(self, conversation_id: str) -> str | None:
        return await self.versioned.conversation_version(conversation_id)

    def _fresh(self, user_id: str, conversation_id: str, version: str | None) -> _Entry | None:
        key = (user_id, conversation_id)
        entry = self._entries.get(key)
        if entry is None or version is None or entry.version != version:
            if entry is not None:
                del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def _keep(self, user_id: str, conversation_id: str, version: str | None, **values: Any) -> None:
        if version is None:
            return
        key = (user_id, conversation_id)
        entry = self._entries.get(key)
        if entry is None or entry.version != version:
            entry = self._entries[key] = _Entry(version)
        for name, value in values.items():
            setattr(entry, name, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def _advance(
        self, user_id: str, conversation_id: str, version: str | None, change: Callable[[list[StoredMessage]], bool]
    ) -> None:
        """Write-through: this process's own write took the conversation from the cached version to ``version``.
        Exactly one version later means no other write came between, so ``change`` (which returns False if it
        cannot apply) brings the cached history up to date; otherwise the copy is dropped. The conversation record
        is dropped either way (its updated_at moved)."""
        key = (user_id, conversation_id)
        entry = self._entries.get(key)
        if entry is None:
            return
        entry.conversation = None
        if (
            version is None
            or entry.messages is None
            or not entry.version.isdigit()
            or int(entry.version) + 1 != int(version)
            or not change(entry.messages)
        ):
            del self._entries[key]
            return
        entry.version = version

    def _forget(self, conversation_id: str) -> None:
        for key in [k for k in self._entries if k[1] == conversation_id]:
            del self._entries[key]

    async def get_conversation(self, user_id: str, conversation_id: str) -> Conversation | None:
        version = await self._version(conversation_id)  # before the data it labels
        entry = self._fresh(user_id, conversation_id, version)
        if entry is not None and entry.conversation is not None:
            self.hits += 1
            return entry.conversation
        self.misses += 1
        conversation = await self.inner.get_conversation(user_id, conversation_id)
        if conversation is not None:
            self._keep(user_id, conversation_id, version, conversation=conversation)
        return conversation

    async def list_messages(
        self, user_id: str, conversation_id: str, *, limit: int | None = None, before: str | None = None
    ) -> list[StoredMessage] | None:
        version = await self._version(conversation_id)
        entry = self._fresh(user_id, conversation_id, version)
        if entry is not None and entry.messages is not None:
            self.hits += 1
            return _page(entry.messages, limit, before)
        self.misses += 1
        if limit is not None or before is not None:  # a page: not worth a whole history's read
            return await self.inner.list_messages(user_id, conversation_id, limit=limit, before=before)
        messages = await self.inner.list_messages(user_id, conversation_id)
        if messages is not None:
            self._keep(user_id, conversation_id, version, messages=messages)
            return list(messages)
        return None

    # -- writes: the store changes the version; this process forgets its copy at once -------------------------
    async def create_conversation(self, user_id: str, new: NewConversation | None = None) -> Conversation:
        return await self.inner.create_conversation(user_id, new)

    async def list_conversations(self, user_id: str, query: ConversationQuery | None = None) -> list[Conversation]:
        return await self.inner.list_conversations(user_id, query)

    async def rename_conversation(self, user_id: str, conversation_id: str, title: str) -> bool:
        self._forget(conversation_id)
        return await self.inner.rename_conversation(user_id, conversation_id, title)

    async def update_conversation(self, user_id: str, conversation_id: str, *, meta: Mapping[str, Any]) -> bool:
        self._forget(conversation_id)
        return await self.inner.update_conversation(user_id, conversation_id, meta=meta)

    async def delete_conversation(self, user_id: str, conversation_id: str) -> bool:
        self._forget(conversation_id)
        return await self.inner.delete_conversation(user_id, conversation_id)

    async def append_message(self, user_id: str, conversation_id: str, message: NewMessage) -> StoredMessage:
        try:
            stored, version = await self.versioned.append_message_versioned(user_id, conversation_id, message)
        except BaseException:
            self._forget(conversation_id)
            raise
        self._advance(user_id, conversation_id, version, lambda messages: _append(messages, stored))
        return stored

    async def update_message(self, user_id: str, message_id: str, change: MessageChange) -> StoredMessage | None:
        updated, version = await self._through(self.versioned.update_message_versioned(user_id, message_id, change))
        self._replaced(user_id, message_id, updated, version)
        return updated

    async def delete_messages_from(self, user_id: str, conversation_id: str, message_id: str) -> int:
        self._forget(conversation_id)
        return await self.inner.delete_messages_from(user_id, conversation_id, message_id)

    async def begin_turn(
        self, user_id: str, conversation_id: str, turn: NewTurn
    ) -> tuple[StoredMessage | None, StoredMessage]:
        try:
            user_msg, reply, version = await self.versioned.begin_turn_versioned(user_id, conversation_id, turn)
        except BaseException:
            self._forget(conversation_id)
            raise
        new = [m for m in (user_msg, reply) if m is not None]
        self._advance(user_id, conversation_id, version, lambda messages: _append(messages, *new))
        return user_msg, reply

    async def create_conversation_with_turn(
        self, user_id: str, new: NewConversation, turn: NewTurn
    ) -> tuple[Conversation, StoredMessage | None, StoredMessage]:
        return await self.inner.create_conversation_with_turn(user_id, new, turn)

    async def finish_turn(self, user_id: str, message_id: str, result: TurnResult) -> StoredMessage | None:
        updated, version = await self._through(self.versioned.finish_turn_versioned(user_id, message_id, result))
        user_change = result.user_change()
        if user_change is None:
            self._replaced(user_id, message_id, updated, version)
        elif updated is not None:
            # The same write merged the contributors' meta into the user's message: the cached copy gets both.
            user_message_id, change = user_change

            def apply(messages: list[StoredMessage]) -> bool:
                for i, m in enumerate(messages):
                    if m.id == user_message_id:
                        messages[i] = replace(m, meta={**m.meta, **(change.meta or {})})
                        return _replace(messages, updated)
                return False

            self._advance(user_id, updated.conversation_id, version, apply)
        return updated

    async def _through(
        self, write: Awaitable[tuple[StoredMessage | None, str | None]]
    ) -> tuple[StoredMessage | None, str | None]:
        try:
            return await write
        except BaseException:
            self._entries.clear()  # which conversation it touched is unknown here: forget them all
            raise

    def _replaced(self, user_id: str, message_id: str, updated: StoredMessage | None, version: str | None) -> None:
        if updated is None:
            return
        self._advance(user_id, updated.conversation_id, version, lambda messages: _replace(messages, updated))

    # -- everything else goes straight through -----------------------------------------------------------------
    async def create_user(
        self, name: str, *, password_hash: str | None, is_admin: bool = False, anonymous: bool = False
    ) -> User:
        return await self.inner.create_user(name, password_hash=password_hash, is_admin=is_admin, anonymous=anonymous)

    async def get_user(self, user_id: str) -> UserRecord | None:
        return await self.inner.get_user(user_id)

    async def get_user_by_name(self, name: str) -> UserRecord | None:
        return await self.inner.get_user_by_name(name)

    async def list_users(self) -> list[User]:
        return await self.inner.list_users()

    async def set_password_hash(self, user_id: str, password_hash: str) -> bool:
        return await self.inner.set_password_hash(user_id, password_hash)

    async def create_api_key(self, user_id: str, *, name: str, prefix: str, key_hash: str) -> ApiKeyRecord:
        return await self.inner.create_api_key(user_id, name=name, prefix=prefix, key_hash=key_hash)

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        return await self.inner.find_api_key(key_hash)

    async def list_api_keys(self, user_id: str | None = None) -> list[ApiKeyRecord]:
        return await self.inner.list_api_keys(user_id)

    async def revoke_api_key(self, key_id: str, *, user_id: str | None = None) -> bool:
        return await self.inner.revoke_api_key(key_id, user_id=user_id)

    async def create_session(self, token_hash: str, record: SessionRecord) -> None:
        await self.inner.create_session(token_hash, record)

    async def get_session(self, token_hash: str) -> SessionRecord | None:
        return await self.inner.get_session(token_hash)

    async def delete_session(self, token_hash: str) -> None:
        await self.inner.delete_session(token_hash)

    async def delete_user_sessions(self, user_id: str, *, keep: str | None = None) -> int:
        return await self.inner.delete_user_sessions(user_id, keep=keep)

    async def delete_user(self, user_id: str) -> UserDeletion | None:
        try:
            return await self.inner.delete_user(user_id)
        finally:  # a read would miss them anyway (no versions left), but a deleted user's history must not linger
            for key in [k for k in self._entries if k[0] == user_id]:
                del self._entries[key]

    async def record_usage(self, record: UsageRecord) -> None:
        await self.inner.record_usage(record)

    async def usage_totals(self, *, user_id: str | None = None, since: datetime | None = None) -> list[UsageTotal]:
        return await self.inner.usage_totals(user_id=user_id, since=since)

    async def tokens_used_since(self, user_id: str, since: datetime) -> int:
        return await self.inner.tokens_used_since(user_id, since)

    async def save_vectors(
        self, user_id: str, conversation_id: str, vectors: Mapping[str, bytes], *, model: str
    ) -> bool:
        return await self.inner.save_vectors(user_id, conversation_id, vectors, model=model)

    async def load_vectors(self, user_id: str, conversation_id: str, *, model: str) -> dict[str, bytes]:
        return await self.inner.load_vectors(user_id, conversation_id, model=model)

    async def load_summary(self, user_id: str, conversation_id: str) -> ConversationSummary | None:
        return await self.inner.load_summary(user_id, conversation_id)

    async def save_summary(self, user_id: str, summary: ConversationSummary) -> bool:
        return await self.inner.save_summary(user_id, summary)

    async def delete_summary(self, user_id: str, conversation_id: str) -> bool:
        return await self.inner.delete_summary(user_id, conversation_id)

    async def add_interests(self, user_id: str, increments: Mapping[str, float]) -> None:
        await self.inner.add_interests(user_id, increments)

    async def list_interests(self, user_id: str, *, limit: int = 50) -> list[InterestRecord]:
        return await self.inner.list_interests(user_id, limit=limit)

    async def delete_interests(self, user_id: str, term: str | None = None) -> int:
        return await self.inner.delete_interests(user_id, term)

    async def record_feedback(self, user_id: str, catalogue: str, item_id: str, action: str) -> None:
        await self.inner.record_feedback(user_id, catalogue, item_id, action)

    async def load_feedback(self, user_id: str, catalogue: str) -> dict[str, FeedbackRecord]:
        return await self.inner.load_feedback(user_id, catalogue)

    async def interests_enabled(self, user_id: str) -> bool:
        return await self.inner.interests_enabled(user_id)

    async def set_interests_enabled(self, user_id: str, enabled: bool) -> None:
        await self.inner.set_interests_enabled(user_id, enabled)

    async def delete_profile(self, user_id: str) -> None:
        await self.inner.delete_profile(user_id)

    async def save_form_record(self, user_id: str, record: NewFormRecord) -> FormRecord | None:
        return await self.inner.save_form_record(user_id, record)

    async def get_form_record(self, user_id: str, record_id: str) -> FormRecord | None:
        return await self.inner.get_form_record(user_id, record_id)

    async def list_form_records(self, user_id: str, *, conversation_id: str | None = None) -> list[FormRecord]:
        return await self.inner.list_form_records(user_id, conversation_id=conversation_id)

    async def set_form_delivery(self, user_id: str, record_id: str, delivery: str) -> bool:
        return await self.inner.set_form_delivery(user_id, record_id, delivery)

    async def append_stream(
        self, user_id: str, conversation_id: str, message_id: str, chunk: StreamChunk, times: StreamTimes
    ) -> None:
        await self.inner.append_stream(user_id, conversation_id, message_id, chunk, times)

    async def end_stream(self, user_id: str, conversation_id: str, message_id: str, *, expire_seconds: float) -> None:
        await self.inner.end_stream(user_id, conversation_id, message_id, expire_seconds=expire_seconds)

    async def read_stream(
        self, user_id: str, conversation_id: str, message_id: str, *, after: int = 0
    ) -> StreamRead | None:
        return await self.inner.read_stream(user_id, conversation_id, message_id, after=after)

    async def open(self) -> None:
        await self.inner.open()

    async def recover_interrupted(self, *, created_before: datetime | None = None) -> None:
        self._entries.clear()
        await self.inner.recover_interrupted(created_before=created_before)

    async def close(self) -> None:
        self._entries.clear()
        await self.inner.close()

    async def ping(self) -> None:
        await self.inner.ping()

    def stop_signals(self) -> StopSignals:
        return self.inner.stop_signals()

    def breaker_board(self) -> BreakerBoard:
        return self.inner.breaker_board()


def _append(messages: list[StoredMessage], *new: StoredMessage) -> bool:
    messages.extend(new)
    return True


def _replace(messages: list[StoredMessage], updated: StoredMessage) -> bool:
    for i, m in enumerate(messages):
        if m.id == updated.id:
            messages[i] = updated
            return True
    return False


def _page(messages: list[StoredMessage], limit: int | None, before: str | None) -> list[StoredMessage]:
    """``list_messages``'s paging over a whole cached history (``base.ConversationStore.list_messages``)."""
    end = len(messages)
    if before is not None:
        found = next((i for i, m in enumerate(messages) if m.id == before), None)
        if found is None:
            raise unknown_before(before)
        end = found
    start = 0 if limit is None else max(end - max(limit, 0), 0)
    return list(messages[start:end])

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
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

from ..errors import ConfigError
from ..types import Conversation, StoredMessage
from .base import MessageChange, NewMessage, NewTurn, Store, TurnResult, UserDeletion
from .breakers import BreakerBoard
from .common import unknown_before
from .signals import StopSignals

__all__ = ["CachedStore", "VersionedStore"]

Method = TypeVar("Method", bound=Callable[..., Awaitable[Any]])


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


def _inner(method: Method) -> Method:
    """``CachedStore``'s ``method``: the inner store's, called with the same arguments (nothing to keep or forget)."""
    name = method.__name__

    async def through(self: CachedStore, *args: Any, **kwargs: Any) -> Any:
        return await getattr(self.inner, name)(*args, **kwargs)

    through.__name__, through.__qualname__, through.__doc__ = name, f"CachedStore.{name}", method.__doc__
    return cast(Method, through)


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
    create_conversation = _inner(Store.create_conversation)
    list_conversations = _inner(Store.list_conversations)
    create_conversation_with_turn = _inner(Store.create_conversation_with_turn)
    create_user = _inner(Store.create_user)
    get_user = _inner(Store.get_user)
    get_user_by_name = _inner(Store.get_user_by_name)
    list_users = _inner(Store.list_users)
    set_password_hash = _inner(Store.set_password_hash)
    create_api_key = _inner(Store.create_api_key)
    find_api_key = _inner(Store.find_api_key)
    list_api_keys = _inner(Store.list_api_keys)
    revoke_api_key = _inner(Store.revoke_api_key)
    create_session = _inner(Store.create_session)
    get_session = _inner(Store.get_session)
    delete_session = _inner(Store.delete_session)
    delete_user_sessions = _inner(Store.delete_user_sessions)
    record_usage = _inner(Store.record_usage)
    usage_totals = _inner(Store.usage_totals)
    tokens_used_since = _inner(Store.tokens_used_since)
    save_vectors = _inner(Store.save_vectors)
    load_vectors = _inner(Store.load_vectors)
    load_summary = _inner(Store.load_summary)
    save_summary = _inner(Store.save_summary)
    delete_summary = _inner(Store.delete_summary)
    add_interests = _inner(Store.add_interests)
    list_interests = _inner(Store.list_interests)
    delete_interests = _inner(Store.delete_interests)
    record_feedback = _inner(Store.record_feedback)
    load_feedback = _inner(Store.load_feedback)
    interests_enabled = _inner(Store.interests_enabled)
    set_interests_enabled = _inner(Store.set_interests_enabled)
    delete_profile = _inner(Store.delete_profile)
    save_form_record = _inner(Store.save_form_record)
    get_form_record = _inner(Store.get_form_record)
    list_form_records = _inner(Store.list_form_records)
    set_form_delivery = _inner(Store.set_form_delivery)
    append_stream = _inner(Store.append_stream)
    end_stream = _inner(Store.end_stream)
    read_stream = _inner(Store.read_stream)
    open = _inner(Store.open)
    ping = _inner(Store.ping)

    # -- and what ends copies of many conversations at once ----------------------------------------------------
    async def delete_user(self, user_id: str) -> UserDeletion | None:
        try:
            return await self.inner.delete_user(user_id)
        finally:  # a read would miss them anyway (no versions left), but a deleted user's history must not linger
            for key in [k for k in self._entries if k[0] == user_id]:
                del self._entries[key]

    async def recover_interrupted(self, *, created_before: datetime | None = None) -> None:
        self._entries.clear()
        await self.inner.recover_interrupted(created_before=created_before)

    async def close(self) -> None:
        self._entries.clear()
        await self.inner.close()

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

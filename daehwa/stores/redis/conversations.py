"""Redis conversations and messages: hashes and JSON documents that expire.

Keys (``P`` is the prefix; ``{cid}`` is literal: the conversation's hash tag, so on Redis Cluster all its keys live
in one slot and its scripts and transactions never cross slots)::

    P:conv:{cid}           hash   user_id, kind, title, persona, model, meta (JSON), created_at, updated_at, seq,
                                  ver (+1 on every write to the conversation or its messages)
    P:conv:{cid}:msgs      hash   message id -> message document (JSON)
    P:conv:{cid}:order     zset   message id, scored by its sequence number in the conversation
    P:user:<uid>:convs     zset   the user's conversation ids, scored by updated_at (microseconds)
    P:streaming            set    ids of replies that may still be streaming (made interrupted by recover_interrupted)

Conversation keys carry a TTL (``redis_ttl_days``) that every write to the conversation restarts. A message id is
``<conversation id>-<random id>``: it finds its conversation without an index that would outlive the expiring
conversation.

The user's index and ``P:streaming`` are in other slots, so they are written by separate commands, in an order a crash
cannot make harmful: the index is updated after the conversation (``list_conversations`` drops entries whose
conversation is gone), and a reply joins ``P:streaming`` before it is stored and leaves it after its final write
(the set may hold ids of replies that are gone or done: recovery skips and removes them).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from ...types import Conversation, MessageStatus, StoredMessage, UsageRecord
from ..base import ConversationQuery, MessageChange, NewConversation, NewMessage, NewTurn, TurnResult
from ..common import (
    VersionedConversationStore,
    changed,
    conversation_from_row,
    iso,
    merged,
    message_from_row,
    micros,
    new_conversation,
    new_id,
    new_message,
    no_conversation,
    title_key,
    to_json,
    turn_messages,
    unknown_before,
    utcnow,
)
from .connection import RedisConnection
from .usage import queue_usage

if TYPE_CHECKING:
    from redis.asyncio.client import Pipeline

# KEYS: conv, msgs, order. ARGV: user_id, updated_at (iso), ttl_ms, then per message: id, doc.
# Returns the conversation's new version (0: not the user's).
_APPEND = """
if redis.call('HGET', KEYS[1], 'user_id') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[2])
local ver = redis.call('HINCRBY', KEYS[1], 'ver', 1)
for i = 4, #ARGV, 2 do
  local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[3], seq, ARGV[i])
end
for k = 1, 3 do redis.call('PEXPIRE', KEYS[k], ARGV[3]) end
return ver
"""

# KEYS: conv, msgs, order, vectors, summary. ARGV: user_id
_DELETE_CONVERSATION = """
if redis.call('HGET', KEYS[1], 'user_id') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
return 1
"""

# KEYS: conv, msgs, order, vectors. ARGV: user_id, message_id, ttl_ms
_DELETE_MESSAGES_FROM = """
if redis.call('HGET', KEYS[1], 'user_id') ~= ARGV[1] then return 0 end
local seq = redis.call('ZSCORE', KEYS[3], ARGV[2])
if not seq then return 0 end
local ids = redis.call('ZRANGEBYSCORE', KEYS[3], seq, '+inf')
for _, id in ipairs(ids) do
  redis.call('HDEL', KEYS[2], id)
  redis.call('HDEL', KEYS[4], id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], seq, '+inf')
redis.call('HINCRBY', KEYS[1], 'ver', 1)
for k = 1, 3 do redis.call('PEXPIRE', KEYS[k], ARGV[3]) end
return #ids
"""

# KEYS: conv, msgs, order. ARGV: user_id, '1' if a before id is given else '0', before id, limit (-1 for all).
# Returns nil if the conversation is not the user's, {0} if before is not one of its messages, else
# {1, id, doc, id, doc, ...} oldest first. Ranks in the order zset find the page, so its depth costs O(log n).
_LIST_MESSAGES = """
if redis.call('HGET', KEYS[1], 'user_id') ~= ARGV[1] then return false end
local stop = -1
if ARGV[2] == '1' then
  local rank = redis.call('ZRANK', KEYS[3], ARGV[3])
  if not rank then return {0} end
  if rank == 0 then return {1} end
  stop = rank - 1
end
local limit = tonumber(ARGV[4])
local start = 0
if limit == 0 then return {1} end
if limit > 0 then
  if stop < 0 then start = -limit else start = math.max(0, stop - limit + 1) end
end
local ids = redis.call('ZRANGE', KEYS[3], start, stop)
local out = {1}
-- HMGET in slices: unpack() of a whole long conversation would overflow Lua's stack.
for i = 1, #ids, 500 do
  local j = math.min(i + 499, #ids)
  local docs = redis.call('HMGET', KEYS[2], unpack(ids, i, j))
  for k = i, j do
    local doc = docs[k - i + 1]
    if doc then
      out[#out + 1] = ids[k]
      out[#out + 1] = doc
    end
  end
end
return out
"""

# KEYS: conv. ARGV: user_id, title, title_key, updated_at (iso), ttl_ms
_RENAME = """
if redis.call('HGET', KEYS[1], 'user_id') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'title', ARGV[2], 'title_key', ARGV[3], 'updated_at', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'ver', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


class RedisConversations(RedisConnection, VersionedConversationStore):
    SCRIPTS: ClassVar[Mapping[str, str]] = {
        "append": _APPEND,
        "delete_conversation": _DELETE_CONVERSATION,
        "delete_messages_from": _DELETE_MESSAGES_FROM,
        "list_messages": _LIST_MESSAGES,
        "rename": _RENAME,
    }

    async def create_conversation(self, user_id: str, new: NewConversation | None = None) -> Conversation:
        conv = new_conversation(user_id, new)
        key = self._conv_key(conv.id)
        async with self._r().pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=_conversation_fields(conv, seq=0))
            pipe.pexpire(key, self.ttl_ms)
            await pipe.execute()
        await self._touch_index(user_id, conv.id, micros(conv.updated_at))
        return conv

    async def _touch_index(self, user_id: str, conversation_id: str, updated: int | None = None) -> None:
        """Put the conversation in (or move it up) its user's index, after the conversation's own write."""
        index = self._user_index(user_id)
        async with self._r().pipeline(transaction=False) as pipe:
            if updated is not None:
                pipe.zadd(index, {conversation_id: updated})
            pipe.pexpire(index, self.ttl_ms)
            await pipe.execute()

    async def conversation_version(self, conversation_id: str) -> str | None:
        """The conversation's version: it changes on every write to the conversation or its messages (``None``:
        no such conversation, or one from before versions). The cache of hot conversations compares it."""
        version: str | None = await self._r().hget(self._conv_key(conversation_id), "ver")
        return version

    async def _owned(self, user_id: str, conversation_id: str) -> dict[str, str] | None:
        fields: dict[str, str] = await self._r().hgetall(self._conv_key(conversation_id))
        if not fields or fields.get("user_id") != user_id:
            return None
        return fields

    async def get_conversation(self, user_id: str, conversation_id: str) -> Conversation | None:
        fields = await self._owned(user_id, conversation_id)
        return _conversation(conversation_id, fields) if fields else None

    async def list_conversations(self, user_id: str, query: ConversationQuery | None = None) -> list[Conversation]:
        q = query or ConversationQuery()
        kind, title, limit, before = q.kind, q.title, q.limit, q.before
        r = self._r()
        index = self._user_index(user_id)
        top: str | int = f"({micros(before)}" if before is not None else "+inf"
        wanted = title_key(title) if title else None
        found: list[Conversation] = []
        offset, batch = 0, max(limit, 1) * 2
        while len(found) < limit:
            ids: list[str] = await r.zrevrangebyscore(index, top, "-inf", start=offset, num=batch)
            if not ids:
                break
            offset += len(ids)
            async with r.pipeline(transaction=False) as pipe:
                for conversation_id in ids:
                    pipe.hgetall(self._conv_key(conversation_id))
                rows: list[dict[str, str]] = await pipe.execute()
            expired = [cid for cid, fields in zip(ids, rows, strict=True) if not fields]
            if expired:  # the index outlives conversations that expired on their own: tidy it as we go
                await r.zrem(index, *expired)
                offset -= len(expired)
            for conversation_id, fields in zip(ids, rows, strict=True):
                if not fields or fields.get("user_id") != user_id:
                    continue
                if kind is not None and fields.get("kind") != kind:
                    continue
                if wanted is not None and wanted not in fields.get("title_key", ""):
                    continue
                found.append(_conversation(conversation_id, fields))
                if len(found) == limit:
                    break
        return found

    async def rename_conversation(self, user_id: str, conversation_id: str, title: str) -> bool:
        now = utcnow()
        done = await self._script("rename")(
            keys=[self._conv_key(conversation_id)],
            args=[user_id, title, title_key(title), iso(now), self.ttl_ms],
        )
        if done:
            await self._touch_index(user_id, conversation_id, micros(now))
        return bool(done)

    async def update_conversation(self, user_id: str, conversation_id: str, *, meta: Mapping[str, Any]) -> bool:
        key, msgs, order = self._conv_keys(conversation_id)

        async def work(pipe: Pipeline) -> bool:
            owner, old = await pipe.hmget(key, ["user_id", "meta"])
            if owner != user_id:
                pipe.multi()
                return False
            pipe.multi()
            pipe.hset(key, "meta", to_json(merged(json.loads(old or "{}"), meta)))
            pipe.hincrby(key, "ver", 1)
            for k in (key, msgs, order):
                pipe.pexpire(k, self.ttl_ms)
            return True

        done = await self._transaction(work, key)
        if done:
            await self._touch_index(user_id, conversation_id)
        return done

    async def delete_conversation(self, user_id: str, conversation_id: str) -> bool:
        conv = self._conv_key(conversation_id)
        keys = [*self._conv_keys(conversation_id), f"{conv}:vectors", f"{conv}:summary"]  # + context
        if not await self._script("delete_conversation")(keys=keys, args=[user_id]):
            return False
        await self._r().zrem(self._user_index(user_id), conversation_id)
        return True

    # -- messages ----------------------------------------------------------------------------------------------
    async def _store_messages(self, user_id: str, conversation_id: str, messages: list[StoredMessage]) -> str:
        """Append ``messages``; returns the conversation's version after the write."""
        now = utcnow()
        streaming = [m.id for m in messages if m.status is MessageStatus.STREAMING]
        if streaming:  # before the reply exists, so a crash cannot leave one streaming that recovery never sees
            await self._r().sadd(self._k("streaming"), *streaming)
        args: list[Any] = [user_id, iso(now), self.ttl_ms]
        for m in messages:
            args += [m.id, to_json(_message_doc(m))]
        version = await self._script("append")(keys=self._conv_keys(conversation_id), args=args)
        if not version:
            if streaming:
                await self._r().srem(self._k("streaming"), *streaming)
            raise no_conversation(conversation_id)
        await self._touch_index(user_id, conversation_id, micros(now))
        return str(version)

    async def append_message_versioned(
        self, user_id: str, conversation_id: str, message: NewMessage
    ) -> tuple[StoredMessage, str]:
        """``append_message``, and the conversation's version after it (for the cache's write-through)."""
        stored = new_message(conversation_id, message, message_id=_message_id(conversation_id))
        return stored, await self._store_messages(user_id, conversation_id, [stored])

    async def update_message_versioned(
        self, user_id: str, message_id: str, change: MessageChange
    ) -> tuple[StoredMessage | None, str | None]:
        return await self._update_message(user_id, message_id, change)

    async def _update_message(
        self,
        user_id: str,
        message_id: str,
        change: MessageChange,
        usage: UsageRecord | None = None,
        user_change: tuple[str, MessageChange] | None = None,
    ) -> tuple[StoredMessage | None, str | None]:
        """The changed message (None: not the user's) and the conversation's version after the change.

        ``user_change`` (a turn's finish: the user's message and what to merge into it) changes another message of
        the same conversation in the same transaction."""
        conversation_id = _conversation_of(message_id)
        key, msgs, order = self._conv_keys(conversation_id)
        changed_message: list[StoredMessage] = []

        async def work(pipe: Pipeline) -> None:
            changed_message.clear()  # a retry after a WATCH conflict starts over
            owner = await pipe.hget(key, "user_id")
            raw = await pipe.hget(msgs, message_id) if owner == user_id else None
            other = None
            if raw is not None and user_change is not None and _conversation_of(user_change[0]) == conversation_id:
                other = await pipe.hget(msgs, user_change[0])
            pipe.multi()
            if raw is None:
                return
            message = changed(_message(message_id, conversation_id, json.loads(raw)), change)
            changed_message.append(message)
            pipe.hset(msgs, message_id, to_json(_message_doc(message)))
            pipe.hincrby(key, "ver", 1)  # its reply (the second) is the version returned
            for k in (key, msgs, order):
                pipe.pexpire(k, self.ttl_ms)
            if other is not None and user_change is not None:
                user_message = changed(_message(user_change[0], conversation_id, json.loads(other)), user_change[1])
                pipe.hset(msgs, user_change[0], to_json(_message_doc(user_message)))

        replies: list[Any] = await self._r().transaction(work, key, msgs)
        message = changed_message[0] if changed_message else None
        version = str(replies[1]) if message is not None else None
        # The reply first, then its usage: a retried finish_turn rewrites the same reply, and records the usage
        # once. (They are in different slots, so on a cluster they cannot share a transaction.)
        final = change.status is not None and change.status is not MessageStatus.STREAMING  # the reply's last write
        if usage is not None or final:
            # One pipeline without a transaction (its keys are in other slots; on a cluster, one batch per node).
            async with self._r().pipeline(transaction=False) as pipe:
                if usage is not None:
                    queue_usage(pipe, self._k, usage)
                if final:
                    if message is not None:
                        pipe.pexpire(self._user_index(user_id), self.ttl_ms)
                    pipe.srem(self._k("streaming"), message_id)
                await pipe.execute()
        return message, version

    async def delete_messages_from(self, user_id: str, conversation_id: str, message_id: str) -> int:
        keys = [*self._conv_keys(conversation_id), self._conv_key(conversation_id, "vectors")]
        deleted = int(await self._script("delete_messages_from")(keys=keys, args=[user_id, message_id, self.ttl_ms]))
        if deleted:
            await self._touch_index(user_id, conversation_id)
        return deleted

    async def list_messages(
        self, user_id: str, conversation_id: str, *, limit: int | None = None, before: str | None = None
    ) -> list[StoredMessage] | None:
        # One script: the ownership check, the page and its documents in one round trip and one consistent view.
        args = [user_id, "0" if before is None else "1", before or "", -1 if limit is None else max(limit, 0)]
        found = await self._script("list_messages")(keys=self._conv_keys(conversation_id), args=args)
        if found is None:
            return None
        if found[0] == 0:
            raise unknown_before(before or "")
        flat = found[1:]
        return [_message(mid, conversation_id, json.loads(raw)) for mid, raw in zip(flat[::2], flat[1::2], strict=True)]

    # -- turns -------------------------------------------------------------------------------------------------
    async def begin_turn_versioned(
        self, user_id: str, conversation_id: str, turn: NewTurn
    ) -> tuple[StoredMessage | None, StoredMessage, str]:
        user_msg, reply = turn_messages(conversation_id, turn, message_id=lambda: _message_id(conversation_id))
        version = await self._store_messages(user_id, conversation_id, [m for m in (user_msg, reply) if m is not None])
        return user_msg, reply, version

    async def create_conversation_with_turn(
        self, user_id: str, new: NewConversation, turn: NewTurn
    ) -> tuple[Conversation, StoredMessage | None, StoredMessage]:
        conv = new_conversation(user_id, new)
        user_msg, reply = turn_messages(conv.id, turn, message_id=lambda: _message_id(conv.id))
        messages = [m for m in (user_msg, reply) if m is not None]
        key, msgs, order = self._conv_keys(conv.id)
        r = self._r()
        await r.sadd(self._k("streaming"), reply.id)
        # One MULTI, no ownership check to make: the conversation is new, so nobody else can write to it yet.
        async with r.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=_conversation_fields(conv, seq=len(messages)))
            pipe.hset(msgs, mapping={m.id: to_json(_message_doc(m)) for m in messages})
            pipe.zadd(order, {m.id: seq for seq, m in enumerate(messages, start=1)})
            for k in (key, msgs, order):
                pipe.pexpire(k, self.ttl_ms)
            await pipe.execute()
        await self._touch_index(user_id, conv.id, micros(conv.updated_at))
        return conv, user_msg, reply

    async def finish_turn_versioned(
        self, user_id: str, message_id: str, result: TurnResult
    ) -> tuple[StoredMessage | None, str | None]:
        # The final reply, then its usage (recorded even when the reply is gone).
        return await self._update_message(user_id, message_id, result.change(), result.usage, result.user_change())

    async def _repair_streaming(
        self, created_before: datetime | None, lease_state: Callable[[str, str], Awaitable[bool | None]]
    ) -> None:
        """Make the replies still marked streaming interrupted (``recover_interrupted``), except those whose chunk
        log's lease is alive (``lease_state`` True; the log is in another slot, so it is asked first, on its own)
        and those without a log (None) created after ``created_before``; those stay in ``P:streaming``."""
        r = self._r()
        for message_id in await r.smembers(self._k("streaming")):
            conversation_id = _conversation_of(message_id)
            state = await lease_state(conversation_id, message_id)
            if state is True:
                continue  # a running process streams it
            bound = created_before if state is None else None  # a lapsed lease: its writer is gone, whatever its age
            if await self._repair_reply(conversation_id, message_id, bound):
                await r.srem(self._k("streaming"), message_id)

    async def _repair_reply(self, conversation_id: str, message_id: str, created_before: datetime | None) -> bool:
        """Store one reply as interrupted if it still streams; False: left alone (created after ``created_before``,
        so maybe a live process's that has not taken its lease yet)."""
        key, msgs, _ = self._conv_keys(conversation_id)

        async def repair(pipe: Pipeline) -> bool:
            raw = await pipe.hget(msgs, message_id)
            exists = await pipe.hget(key, "user_id") is not None
            doc = json.loads(raw) if raw is not None else None
            pipe.multi()
            if doc is None or doc["status"] != MessageStatus.STREAMING:
                return True  # gone or done: only its entry in P:streaming is left to drop
            if created_before is not None and _message(message_id, conversation_id, doc).created_at > created_before:
                return False
            doc["status"] = MessageStatus.INTERRUPTED.value
            pipe.hset(msgs, message_id, to_json(doc))
            if exists:  # never make a conversation hash of a bare version
                pipe.hincrby(key, "ver", 1)
            return True

        done: bool = await self._r().transaction(repair, key, msgs, value_from_callable=True)
        return done


# -- documents ---------------------------------------------------------------------------------------------------
def _message_id(conversation_id: str) -> str:
    return f"{conversation_id}-{new_id()}"


def _conversation_of(message_id: str) -> str:
    return message_id.partition("-")[0]


def _conversation_fields(c: Conversation, *, seq: int) -> dict[str, Any]:
    """The conversation hash of a new conversation; ``seq`` is the number of messages stored with it."""
    fields: dict[str, Any] = {
        "user_id": c.user_id,
        "kind": c.kind,
        "title": c.title,
        "title_key": title_key(c.title),
        "meta": to_json(c.meta),
        "created_at": iso(c.created_at),
        "updated_at": iso(c.updated_at),
        "seq": seq,
        "ver": 1,  # + 1 on every write to the conversation or its messages (conversation_version)
    }
    if c.persona is not None:
        fields["persona"] = c.persona
    if c.model is not None:
        fields["model"] = c.model
    return fields


def _message_doc(m: StoredMessage) -> dict[str, Any]:
    return {
        "role": m.role,
        "content": m.content,
        "status": m.status.value,
        "model": m.model,
        "meta": dict(m.meta),
        "created_at": iso(m.created_at),
    }


def _message(message_id: str, conversation_id: str, doc: Mapping[str, Any]) -> StoredMessage:
    return message_from_row({**doc, "id": message_id, "conversation_id": conversation_id})


def _conversation(conversation_id: str, fields: Mapping[str, str]) -> Conversation:
    return conversation_from_row({**fields, "id": conversation_id})

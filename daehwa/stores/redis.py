"""The Redis store (redis.asyncio): conversations as hashes and JSON documents that expire, accounts that do not.

Key layout (``P`` is the key prefix, ``daehwa`` by default)::

    P:conv:{id}            hash   user_id, kind, title, persona, model, meta (JSON), created_at, updated_at, seq
    P:conv:{id}:msgs       hash   message id -> message document (JSON)
    P:conv:{id}:order      zset   message id, scored by its sequence number in the conversation
    P:user:{uid}:convs     zset   the user's conversation ids, scored by updated_at (microseconds)
    P:streaming            set    ids of replies still streaming (made interrupted by recover_interrupted)
    P:user:{id}            hash   a user (P:users zset and P:user_names hash index them)
    P:apikey:{id}          hash   an API key (P:apikeys, P:user:{uid}:apikeys zsets and P:apikey_hashes index them)
    P:session:{hash}       string a session or login-link document, expiring when it does
    P:user:{uid}:sessions  zset   hashes of the user's sessions and login links, scored by expiry (ms); expires with
                                  the last of them (a password change ends them all through it)
    P:usage, P:user:{uid}:usage   zsets of usage documents, scored by created_at (microseconds)

Conversation keys carry a TTL (``redis_ttl_days``) that every write to the conversation restarts; accounts, API keys
and usage never expire. Writes that touch several keys run as Lua scripts or MULTI transactions, so a reader never
sees half of one. A message id is ``<conversation id>-<random id>``: it finds its conversation without an index that
would outlive the expiring conversation. Keys are not hash-tagged, so this targets a single Redis (not Cluster).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import ConfigError, Conflict, NotFound
from ..types import Conversation, MessageStatus, Outcome, Role, StoredMessage, UsageRecord, UsageTotal, User
from .base import ApiKeyRecord, SessionRecord, Store, UserRecord
from .common import from_iso, iso, merged, micros, new_id, title_key, unknown_before, utcnow
from .signals import RedisSignals, StopSignals

if TYPE_CHECKING:
    from redis.asyncio.client import Pipeline

    from ..config import Settings

T = TypeVar("T")

# 2: every session is in its user's P:user:{uid}:sessions index (open() indexes those a version 1 daehwa wrote).
SCHEMA_VERSION = 2

# KEYS: conv, msgs, order, user_index, streaming
# ARGV: user_id, conversation_id, updated_at (iso), updated_at (micros), ttl_ms, then per message: id, doc, streaming
_APPEND = """
if redis.call('HGET', KEYS[1], 'user_id') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[3])
for i = 6, #ARGV, 3 do
  local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[3], seq, ARGV[i])
  if ARGV[i + 2] == '1' then redis.call('SADD', KEYS[5], ARGV[i]) end
end
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[2])
for k = 1, 4 do redis.call('PEXPIRE', KEYS[k], ARGV[5]) end
return 1
"""

# KEYS: conv, msgs, order, user_index, streaming. ARGV: user_id, conversation_id
_DELETE_CONVERSATION = """
if redis.call('HGET', KEYS[1], 'user_id') ~= ARGV[1] then return 0 end
local ids = redis.call('ZRANGE', KEYS[3], 0, -1)
for _, id in ipairs(ids) do redis.call('SREM', KEYS[5], id) end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[2])
return 1
"""

# KEYS: conv, msgs, order, user_index, streaming. ARGV: user_id, conversation_id, message_id, ttl_ms
_DELETE_MESSAGES_FROM = """
if redis.call('HGET', KEYS[1], 'user_id') ~= ARGV[1] then return 0 end
local seq = redis.call('ZSCORE', KEYS[3], ARGV[3])
if not seq then return 0 end
local ids = redis.call('ZRANGEBYSCORE', KEYS[3], seq, '+inf')
for _, id in ipairs(ids) do
  redis.call('HDEL', KEYS[2], id)
  redis.call('SREM', KEYS[5], id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], seq, '+inf')
for k = 1, 4 do redis.call('PEXPIRE', KEYS[k], ARGV[4]) end
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

# KEYS: conv, user_index. ARGV: user_id, conversation_id, title, title_key, updated_at (iso), (micros), ttl_ms
_RENAME = """
if redis.call('HGET', KEYS[1], 'user_id') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'title', ARGV[3], 'title_key', ARGV[4], 'updated_at', ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
return 1
"""

# KEYS: user, user_names, users. ARGV: id, name, created micros, then field/value pairs
_CREATE_USER = """
if redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
return 1
"""

# KEYS: any hash. ARGV: field/value pairs. Sets them only if the hash exists.
_HSET_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

# KEYS: key, key_hashes, all_keys, user_keys. ARGV: id, key_hash, created micros, then field/value pairs
_CREATE_API_KEY = """
if redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
return 1
"""

# KEYS: key_hashes. ARGV: key_hash, prefix, now. Returns the key's fields after recording its use.
_FIND_API_KEY = """
local id = redis.call('HGET', KEYS[1], ARGV[1])
if not id then return {} end
local key = ARGV[2] .. ':apikey:' .. id
if redis.call('EXISTS', key) == 0 then return {} end
redis.call('HSET', key, 'last_used_at', ARGV[3])
return redis.call('HGETALL', key)
"""

# KEYS: key. ARGV: user_id ('' for any), now. The first revocation time is kept.
_REVOKE_API_KEY = """
local owner = redis.call('HGET', KEYS[1], 'user_id')
if not owner then return 0 end
if ARGV[1] ~= '' and owner ~= ARGV[1] then return 0 end
redis.call('HSETNX', KEYS[1], 'revoked_at', ARGV[2])
return 1
"""

# KEYS: the user's session index. ARGV: token hash, expires (ms), now (ms). Entries of expired sessions leave as we go,
# and the index expires with the last of its sessions, so it never outlives them.
_INDEX_SESSION = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
"""

# KEYS: the user's session index, session. ARGV: token hash, expires (ms), now (ms), document
_CREATE_SESSION = "redis.call('SET', KEYS[2], ARGV[4], 'PXAT', ARGV[2])" + _INDEX_SESSION

# KEYS: session. ARGV: prefix, token hash. Also takes the hash out of its user's index.
_DELETE_SESSION = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
redis.call('DEL', KEYS[1])
local user_id = cjson.decode(raw)['user_id']
redis.call('ZREM', ARGV[1] .. ':user:' .. user_id .. ':sessions', ARGV[2])
return 1
"""

# KEYS: the user's session index. ARGV: prefix, user_id, token hash to keep ('' for none), now (ms).
# Returns how many live sessions ended. A session key is deleted only if it still names this user.
_DELETE_USER_SESSIONS = """
local ended = 0
for _, hash in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[4], '+inf')) do
  if hash ~= ARGV[3] then
    local key = ARGV[1] .. ':session:' .. hash
    local raw = redis.call('GET', key)
    if raw and cjson.decode(raw)['user_id'] == ARGV[2] then ended = ended + redis.call('DEL', key) end
    redis.call('ZREM', KEYS[1], hash)
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
return ended
"""


class RedisStore(Store):
    """Conversation history that expires after ``ttl_seconds`` without writes; accounts and usage that do not."""

    def __init__(self, url: str, *, prefix: str = "daehwa", ttl_seconds: float = 30 * 86_400) -> None:
        if ttl_seconds <= 0:
            raise ConfigError("DAEHWA_REDIS_TTL_DAYS must be positive.")
        self.url = url
        self.prefix = prefix
        self.ttl_ms = int(ttl_seconds * 1000)
        # Typed Any: redis-py's annotations widen every reply to bytes | str | list, which helps no one here.
        self._client: Any = None

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> RedisStore:
        if settings is None:
            return cls(url)
        return cls(url, prefix=settings.redis_key_prefix, ttl_seconds=settings.redis_ttl_days * 86_400)

    def __repr__(self) -> str:
        return f"RedisStore({_redact(self.url)!r}, prefix={self.prefix!r})"

    # -- keys --------------------------------------------------------------------------------------------------
    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _conv_keys(self, user_id: str, conversation_id: str) -> list[str]:
        """conv, msgs, order, user_index, streaming: the keys a conversation's scripts declare."""
        conv = self._k("conv", conversation_id)
        return [conv, f"{conv}:msgs", f"{conv}:order", self._k("user", user_id, "convs"), self._k("streaming")]

    # -- lifecycle ---------------------------------------------------------------------------------------------
    async def open(self) -> None:
        client = aioredis.from_url(self.url, decode_responses=True)
        try:
            await client.ping()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            await client.aclose()
            raise ConfigError(
                f"Cannot reach Redis at {_redact(self.url)} ({exc}): start Redis or fix DAEHWA_DATABASE_URL."
            ) from None
        await client.set(self._k("schema"), SCHEMA_VERSION, nx=True)
        found = int(await client.get(self._k("schema")) or SCHEMA_VERSION)
        if found > SCHEMA_VERSION:
            await client.aclose()
            raise ConfigError(
                f"The Redis data under prefix {self.prefix!r} was written by a newer daehwa (schema {found}): "
                "upgrade daehwa, or set DAEHWA_REDIS_KEY_PREFIX to another prefix."
            )
        self._client = client
        self._append = client.register_script(_APPEND)
        self._delete_conversation = client.register_script(_DELETE_CONVERSATION)
        self._delete_messages_from = client.register_script(_DELETE_MESSAGES_FROM)
        self._list_messages = client.register_script(_LIST_MESSAGES)
        self._rename = client.register_script(_RENAME)
        self._create_user = client.register_script(_CREATE_USER)
        self._hset_if_exists = client.register_script(_HSET_IF_EXISTS)
        self._create_api_key = client.register_script(_CREATE_API_KEY)
        self._find_api_key = client.register_script(_FIND_API_KEY)
        self._revoke_api_key = client.register_script(_REVOKE_API_KEY)
        self._index_session = client.register_script(_INDEX_SESSION)
        self._create_session = client.register_script(_CREATE_SESSION)
        self._delete_session = client.register_script(_DELETE_SESSION)
        self._delete_user_sessions = client.register_script(_DELETE_USER_SESSIONS)
        if found < 2:
            await self._index_old_sessions()
            await client.set(self._k("schema"), SCHEMA_VERSION)

    async def _index_old_sessions(self) -> None:
        """Schema 1 -> 2: put the sessions written before the per-user index into it (idempotent, so two processes
        upgrading at once do no harm)."""
        r = self._r()
        start = self._k("session", "")
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", start) + "*"  # the prefix is literal, even with glob characters
        now_ms = micros(utcnow()) // 1000
        async for key in r.scan_iter(match=pattern, count=1000):
            raw = await r.get(key)
            if raw is None:
                continue
            doc = json.loads(raw)
            expires_ms = micros(from_iso(doc["expires_at"])) // 1000
            keys = [self._k("user", doc["user_id"], "sessions")]
            await self._index_session(keys=keys, args=[key[len(start) :], expires_ms, now_ms])

    async def recover_interrupted(self) -> None:
        r = self._r()
        for message_id in await r.smembers(self._k("streaming")):
            conversation_id = _conversation_of(message_id)
            msgs = self._k("conv", conversation_id, "msgs")

            async def repair(pipe: Pipeline, message_id: str = message_id, msgs: str = msgs) -> None:
                raw = await pipe.hget(msgs, message_id)
                pipe.multi()
                if raw is not None:
                    doc = json.loads(raw)
                    if doc["status"] == MessageStatus.STREAMING:
                        doc["status"] = MessageStatus.INTERRUPTED.value
                        pipe.hset(msgs, message_id, _dumps(doc))
                pipe.srem(self._k("streaming"), message_id)

            await r.transaction(repair, msgs)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def ping(self) -> None:
        await self._r().ping()

    def stop_signals(self) -> StopSignals:
        return RedisSignals(self.url, self.prefix)

    def _r(self) -> Any:
        if self._client is None:
            raise RuntimeError("RedisStore is not open: call 'await store.open()' first.")
        return self._client

    async def _transaction(self, work: Callable[[Pipeline], Awaitable[T]], *watches: str) -> T:
        """Optimistic read-modify-write: ``work`` reads the watched keys, calls ``pipe.multi()``, queues writes."""
        result: T = await self._r().transaction(work, *watches, value_from_callable=True)
        return result

    # -- conversations -----------------------------------------------------------------------------------------
    async def create_conversation(
        self,
        user_id: str,
        *,
        title: str = "",
        persona: str | None = None,
        model: str | None = None,
        kind: str = "chat",
        meta: Mapping[str, Any] | None = None,
    ) -> Conversation:
        conv = _new_conversation(user_id, title, persona, model, kind, meta)
        key, _, _, index, _ = self._conv_keys(user_id, conv.id)
        async with self._r().pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=_conversation_fields(conv, seq=0))
            pipe.zadd(index, {conv.id: micros(conv.updated_at)})
            pipe.pexpire(key, self.ttl_ms)
            pipe.pexpire(index, self.ttl_ms)
            await pipe.execute()
        return conv

    async def create_conversation_with_turn(
        self,
        user_id: str,
        *,
        title: str = "",
        persona: str | None = None,
        model: str | None = None,
        kind: str = "chat",
        meta: Mapping[str, Any] | None = None,
        user_content: str | None,
        user_status: MessageStatus = MessageStatus.COMPLETE,
        user_meta: Mapping[str, Any] | None = None,
        reply_model: str | None,
    ) -> tuple[Conversation, StoredMessage | None, StoredMessage]:
        conv = _new_conversation(user_id, title, persona, model, kind, meta)
        user_msg = None
        if user_content is not None:
            user_msg = self._new_message(conv.id, "user", user_content, user_status, None, user_meta)
        reply = self._new_message(conv.id, "assistant", "", MessageStatus.STREAMING, reply_model, None)
        messages = [m for m in (user_msg, reply) if m is not None]
        key, msgs, order, index, streaming = self._conv_keys(user_id, conv.id)
        # One MULTI, no ownership check to make: the conversation is new, so nobody else can write to it yet.
        async with self._r().pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=_conversation_fields(conv, seq=len(messages)))
            pipe.hset(msgs, mapping={m.id: _dumps(_message_doc(m)) for m in messages})
            pipe.zadd(order, {m.id: seq for seq, m in enumerate(messages, start=1)})
            pipe.zadd(index, {conv.id: micros(conv.updated_at)})
            pipe.sadd(streaming, reply.id)
            for k in (key, msgs, order, index):
                pipe.pexpire(k, self.ttl_ms)
            await pipe.execute()
        return conv, user_msg, reply

    async def _owned(self, user_id: str, conversation_id: str) -> dict[str, str] | None:
        fields: dict[str, str] = await self._r().hgetall(self._k("conv", conversation_id))
        if not fields or fields.get("user_id") != user_id:
            return None
        return fields

    async def get_conversation(self, user_id: str, conversation_id: str) -> Conversation | None:
        fields = await self._owned(user_id, conversation_id)
        return _conversation(conversation_id, fields) if fields else None

    async def list_conversations(
        self,
        user_id: str,
        *,
        kind: str | None = "chat",
        query: str | None = None,
        limit: int = 50,
        before: datetime | None = None,
    ) -> list[Conversation]:
        r = self._r()
        index = self._k("user", user_id, "convs")
        top: str | int = f"({micros(before)}" if before is not None else "+inf"
        wanted = title_key(query) if query else None
        found: list[Conversation] = []
        offset, batch = 0, max(limit, 1) * 2
        while len(found) < limit:
            ids: list[str] = await r.zrevrangebyscore(index, top, "-inf", start=offset, num=batch)
            if not ids:
                break
            offset += len(ids)
            async with r.pipeline(transaction=False) as pipe:
                for conversation_id in ids:
                    pipe.hgetall(self._k("conv", conversation_id))
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
        key, _, _, index, _ = self._conv_keys(user_id, conversation_id)
        now = utcnow()
        done = await self._rename(
            keys=[key, index],
            args=[user_id, conversation_id, title, title_key(title), iso(now), micros(now), self.ttl_ms],
        )
        return bool(done)

    async def update_conversation(self, user_id: str, conversation_id: str, *, meta: Mapping[str, Any]) -> bool:
        key, msgs, order, index, _ = self._conv_keys(user_id, conversation_id)

        async def work(pipe: Pipeline) -> bool:
            owner, old = await pipe.hmget(key, ["user_id", "meta"])
            if owner != user_id:
                pipe.multi()
                return False
            pipe.multi()
            pipe.hset(key, "meta", _dumps(merged(json.loads(old or "{}"), meta)))
            for k in (key, msgs, order, index):
                pipe.pexpire(k, self.ttl_ms)
            return True

        return await self._transaction(work, key)

    async def delete_conversation(self, user_id: str, conversation_id: str) -> bool:
        keys = self._conv_keys(user_id, conversation_id)
        return bool(await self._delete_conversation(keys=keys, args=[user_id, conversation_id]))

    # -- messages ----------------------------------------------------------------------------------------------
    def _new_message(
        self,
        conversation_id: str,
        role: Role,
        content: str,
        status: MessageStatus,
        model: str | None,
        meta: Mapping[str, Any] | None,
    ) -> StoredMessage:
        return StoredMessage(
            id=f"{conversation_id}-{new_id()}",
            conversation_id=conversation_id,
            role=role,
            content=content,
            status=MessageStatus(status),
            created_at=utcnow(),
            model=model,
            meta=dict(meta or {}),
        )

    async def _store_messages(self, user_id: str, conversation_id: str, messages: list[StoredMessage]) -> None:
        now = utcnow()
        args: list[Any] = [user_id, conversation_id, iso(now), micros(now), self.ttl_ms]
        for m in messages:
            args += [m.id, _dumps(_message_doc(m)), "1" if m.status is MessageStatus.STREAMING else "0"]
        if not await self._append(keys=self._conv_keys(user_id, conversation_id), args=args):
            raise NotFound(f"Conversation {conversation_id!r} does not exist: list your conversations to find its id.")

    async def append_message(
        self,
        user_id: str,
        conversation_id: str,
        *,
        role: Role,
        content: str,
        status: MessageStatus = MessageStatus.COMPLETE,
        model: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> StoredMessage:
        message = self._new_message(conversation_id, role, content, status, model, meta)
        await self._store_messages(user_id, conversation_id, [message])
        return message

    async def begin_turn(
        self,
        user_id: str,
        conversation_id: str,
        *,
        user_content: str | None,
        user_status: MessageStatus = MessageStatus.COMPLETE,
        user_meta: Mapping[str, Any] | None = None,
        reply_model: str | None,
    ) -> tuple[StoredMessage | None, StoredMessage]:
        user_msg = None
        if user_content is not None:
            user_msg = self._new_message(conversation_id, "user", user_content, user_status, None, user_meta)
        reply = self._new_message(conversation_id, "assistant", "", MessageStatus.STREAMING, reply_model, None)
        await self._store_messages(user_id, conversation_id, [m for m in (user_msg, reply) if m is not None])
        return user_msg, reply

    async def _update_message(
        self,
        user_id: str,
        message_id: str,
        changes: dict[str, Any],
        meta: Mapping[str, Any] | None,
        usage: UsageRecord | None = None,
    ) -> StoredMessage | None:
        conversation_id = _conversation_of(message_id)
        key, msgs, order, index, streaming = self._conv_keys(user_id, conversation_id)

        async def work(pipe: Pipeline) -> StoredMessage | None:
            owner = await pipe.hget(key, "user_id")
            raw = await pipe.hget(msgs, message_id) if owner == user_id else None
            pipe.multi()
            if usage is not None:
                self._queue_usage(pipe, usage)
            if raw is None:
                return None
            doc = json.loads(raw)
            doc.update(changes)
            doc["meta"] = merged(doc.get("meta"), meta)
            pipe.hset(msgs, message_id, _dumps(doc))
            if doc["status"] != MessageStatus.STREAMING:
                pipe.srem(streaming, message_id)
            for k in (key, msgs, order, index):
                pipe.pexpire(k, self.ttl_ms)
            return _message(message_id, conversation_id, doc)

        return await self._transaction(work, key, msgs)

    async def update_message(
        self,
        user_id: str,
        message_id: str,
        *,
        content: str | None = None,
        status: MessageStatus | None = None,
        model: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> StoredMessage | None:
        return await self._update_message(user_id, message_id, _changes(content, status, model), meta)

    async def finish_turn(
        self,
        user_id: str,
        message_id: str,
        *,
        content: str,
        status: MessageStatus,
        model: str | None,
        meta: Mapping[str, Any] | None,
        usage: UsageRecord | None,
    ) -> StoredMessage | None:
        # One MULTI: the final reply and its usage are stored together or not at all.
        return await self._update_message(user_id, message_id, _changes(content, status, model), meta, usage)

    async def delete_messages_from(self, user_id: str, conversation_id: str, message_id: str) -> int:
        keys = self._conv_keys(user_id, conversation_id)
        deleted = await self._delete_messages_from(keys=keys, args=[user_id, conversation_id, message_id, self.ttl_ms])
        return int(deleted)

    async def list_messages(
        self, user_id: str, conversation_id: str, *, limit: int | None = None, before: str | None = None
    ) -> list[StoredMessage] | None:
        key, msgs, order, _, _ = self._conv_keys(user_id, conversation_id)
        # One script: the ownership check, the page and its documents in one round trip and one consistent view.
        args = [user_id, "0" if before is None else "1", before or "", -1 if limit is None else max(limit, 0)]
        found = await self._list_messages(keys=[key, msgs, order], args=args)
        if found is None:
            return None
        if found[0] == 0:
            raise unknown_before(before or "")
        flat = found[1:]
        return [_message(mid, conversation_id, json.loads(raw)) for mid, raw in zip(flat[::2], flat[1::2], strict=True)]

    # -- accounts ----------------------------------------------------------------------------------------------
    async def create_user(
        self, name: str, *, password_hash: str | None, is_admin: bool = False, anonymous: bool = False
    ) -> User:
        now = utcnow()
        user = User(id=new_id(), name=name, is_admin=is_admin, anonymous=anonymous, created_at=now)
        fields: dict[str, Any] = {"id": user.id, "name": name, "is_admin": int(is_admin), "anonymous": int(anonymous)}
        fields["created_at"] = iso(now)
        if password_hash is not None:
            fields["password_hash"] = password_hash
        args: list[Any] = [user.id, name, micros(now)]
        for field, value in fields.items():
            args += [field, value]
        keys = [self._k("user", user.id), self._k("user_names"), self._k("users")]
        if not await self._create_user(keys=keys, args=args):
            raise Conflict(f"The user name {name!r} is taken: choose another name.")
        return user

    async def get_user(self, user_id: str) -> UserRecord | None:
        fields: dict[str, str] = await self._r().hgetall(self._k("user", user_id))
        return _user_record(fields) if fields else None

    async def get_user_by_name(self, name: str) -> UserRecord | None:
        user_id = await self._r().hget(self._k("user_names"), name)
        return await self.get_user(user_id) if user_id else None

    async def list_users(self) -> list[User]:
        r = self._r()
        ids = await r.zrange(self._k("users"), 0, -1)
        async with r.pipeline(transaction=False) as pipe:
            for user_id in ids:
                pipe.hgetall(self._k("user", user_id))
            rows = await pipe.execute()
        return [_user_record(fields).user for fields in rows if fields]

    async def set_password_hash(self, user_id: str, password_hash: str) -> bool:
        done = await self._hset_if_exists(keys=[self._k("user", user_id)], args=["password_hash", password_hash])
        return bool(done)

    async def create_api_key(self, user_id: str, *, name: str, prefix: str, key_hash: str) -> ApiKeyRecord:
        record = ApiKeyRecord(id=new_id(), user_id=user_id, name=name, prefix=prefix, created_at=utcnow())
        args: list[Any] = [record.id, key_hash, micros(record.created_at)]
        args += ["id", record.id, "user_id", user_id, "name", name, "prefix", prefix]
        args += ["created_at", iso(record.created_at)]
        keys = [
            self._k("apikey", record.id),
            self._k("apikey_hashes"),
            self._k("apikeys"),
            self._k("user", user_id, "apikeys"),
        ]
        if not await self._create_api_key(keys=keys, args=args):
            raise Conflict("An API key with this hash exists already: generate a new key.")
        return record

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        flat = await self._find_api_key(keys=[self._k("apikey_hashes")], args=[key_hash, self.prefix, iso(utcnow())])
        if not flat:
            return None
        return _api_key(dict(zip(flat[::2], flat[1::2], strict=True)))

    async def list_api_keys(self, user_id: str | None = None) -> list[ApiKeyRecord]:
        r = self._r()
        index = self._k("apikeys") if user_id is None else self._k("user", user_id, "apikeys")
        ids = await r.zrange(index, 0, -1)
        async with r.pipeline(transaction=False) as pipe:
            for key_id in ids:
                pipe.hgetall(self._k("apikey", key_id))
            rows = await pipe.execute()
        return [_api_key(fields) for fields in rows if fields]

    async def revoke_api_key(self, key_id: str, *, user_id: str | None = None) -> bool:
        done = await self._revoke_api_key(keys=[self._k("apikey", key_id)], args=[user_id or "", iso(utcnow())])
        return bool(done)

    async def create_session(self, token_hash: str, record: SessionRecord) -> None:
        expires_ms, now_ms = micros(record.expires_at) // 1000, micros(utcnow()) // 1000
        if expires_ms <= now_ms:
            await self.delete_session(token_hash)  # already expired: nothing to keep
            return
        doc = {"user_id": record.user_id, "csrf_token": record.csrf_token, "expires_at": iso(record.expires_at)}
        keys = [self._k("user", record.user_id, "sessions"), self._k("session", token_hash)]
        await self._create_session(keys=keys, args=[token_hash, expires_ms, now_ms, _dumps(doc)])

    async def get_session(self, token_hash: str) -> SessionRecord | None:
        raw = await self._r().get(self._k("session", token_hash))
        if raw is None:
            return None
        doc = json.loads(raw)
        record = SessionRecord(doc["user_id"], doc["csrf_token"], from_iso(doc["expires_at"]))
        return record if record.expires_at > utcnow() else None  # Redis expires to the millisecond only

    async def delete_session(self, token_hash: str) -> None:
        await self._delete_session(keys=[self._k("session", token_hash)], args=[self.prefix, token_hash])

    async def delete_user_sessions(self, user_id: str, *, keep: str | None = None) -> int:
        keys = [self._k("user", user_id, "sessions")]
        ended = await self._delete_user_sessions(
            keys=keys, args=[self.prefix, user_id, keep or "", micros(utcnow()) // 1000]
        )
        return int(ended)

    # -- usage -------------------------------------------------------------------------------------------------
    def _queue_usage(self, pipe: Pipeline, r: UsageRecord) -> None:
        created = r.created_at or utcnow()
        doc = {
            "id": new_id(),  # makes every record a distinct sorted-set member
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
            "created_at": iso(created),
        }
        member = {_dumps(doc): micros(created)}
        pipe.zadd(self._k("usage"), member)
        pipe.zadd(self._k("user", r.user_id, "usage"), member)

    async def record_usage(self, record: UsageRecord) -> None:
        async with self._r().pipeline(transaction=True) as pipe:
            self._queue_usage(pipe, record)
            await pipe.execute()

    async def _usage_docs(self, user_id: str | None, since: datetime | None) -> list[dict[str, Any]]:
        key = self._k("usage") if user_id is None else self._k("user", user_id, "usage")
        low: str | int = micros(since) if since is not None else "-inf"
        return [json.loads(raw) for raw in await self._r().zrangebyscore(key, low, "+inf")]

    async def usage_totals(self, *, user_id: str | None = None, since: datetime | None = None) -> list[UsageTotal]:
        sums: dict[tuple[str, str], list[Any]] = {}
        for doc in await self._usage_docs(user_id, since):
            row = sums.setdefault((doc["user_id"], doc["model"]), [0, 0, 0, 0.0])
            row[0] += 1
            row[1] += doc["prompt_tokens"]
            row[2] += doc["completion_tokens"]
            row[3] += doc["cost"] or 0.0
        user_ids = sorted({uid for uid, _ in sums})
        async with self._r().pipeline(transaction=False) as pipe:
            for uid in user_ids:
                pipe.hget(self._k("user", uid), "name")
            names = dict(zip(user_ids, await pipe.execute(), strict=True))
        return [
            UsageTotal(uid, names[uid], model, turns, prompt, completion, float(cost))
            for (uid, model), (turns, prompt, completion, cost) in sorted(sums.items())
        ]

    async def tokens_used_since(self, user_id: str, since: datetime) -> int:
        docs = await self._usage_docs(user_id, since)
        return sum(doc["prompt_tokens"] + doc["completion_tokens"] for doc in docs)


# -- documents ---------------------------------------------------------------------------------------------------
def _dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(dict(value), ensure_ascii=False, separators=(",", ":"))


def _redact(url: str) -> str:
    """The URL without its password, for messages and reprs."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    return f"{scheme}{sep}***@{rest.rsplit('@', 1)[1]}"


def _conversation_of(message_id: str) -> str:
    return message_id.partition("-")[0]


def _changes(content: str | None, status: MessageStatus | None, model: str | None) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if content is not None:
        changes["content"] = content
    if status is not None:
        changes["status"] = MessageStatus(status).value
    if model is not None:
        changes["model"] = model
    return changes


def _new_conversation(
    user_id: str, title: str, persona: str | None, model: str | None, kind: str, meta: Mapping[str, Any] | None
) -> Conversation:
    now = utcnow()
    return Conversation(
        id=new_id(),
        user_id=user_id,
        title=title,
        persona=persona,
        model=model,
        created_at=now,
        updated_at=now,
        kind=kind,
        meta=dict(meta or {}),
    )


def _conversation_fields(c: Conversation, *, seq: int) -> dict[str, Any]:
    """The conversation hash of a new conversation; ``seq`` is the number of messages stored with it."""
    fields: dict[str, Any] = {
        "user_id": c.user_id,
        "kind": c.kind,
        "title": c.title,
        "title_key": title_key(c.title),
        "meta": _dumps(c.meta),
        "created_at": iso(c.created_at),
        "updated_at": iso(c.updated_at),
        "seq": seq,
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
    return StoredMessage(
        id=message_id,
        conversation_id=conversation_id,
        role=doc["role"],
        content=doc["content"],
        status=MessageStatus(doc["status"]),
        created_at=from_iso(doc["created_at"]),
        model=doc.get("model"),
        meta=doc.get("meta") or {},
    )


def _conversation(conversation_id: str, fields: Mapping[str, str]) -> Conversation:
    return Conversation(
        id=conversation_id,
        user_id=fields["user_id"],
        title=fields.get("title", ""),
        persona=fields.get("persona"),
        model=fields.get("model"),
        created_at=from_iso(fields["created_at"]),
        updated_at=from_iso(fields["updated_at"]),
        kind=fields.get("kind", "chat"),
        meta=json.loads(fields.get("meta") or "{}"),
    )


def _user_record(fields: Mapping[str, str]) -> UserRecord:
    user = User(
        id=fields["id"],
        name=fields["name"],
        is_admin=fields.get("is_admin") == "1",
        anonymous=fields.get("anonymous") == "1",
        created_at=from_iso(fields["created_at"]),
    )
    return UserRecord(user=user, password_hash=fields.get("password_hash"))


def _api_key(fields: Mapping[str, str]) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=fields["id"],
        user_id=fields["user_id"],
        name=fields["name"],
        prefix=fields["prefix"],
        created_at=from_iso(fields["created_at"]),
        last_used_at=from_iso(fields["last_used_at"]) if fields.get("last_used_at") else None,
        revoked_at=from_iso(fields["revoked_at"]) if fields.get("revoked_at") else None,
    )

"""Redis accounts: users, API keys and sessions, none of which expire (sessions do, when they end).

Keys (``P`` is the prefix, ``A`` is ``P:{accounts}``: every account key has the hash tag ``{accounts}``, so the
scripts below, which read and write several of them and look keys up by what they find, stay in one slot of a
Redis Cluster; a new account key must be made with ``self._acct_key``)::

    A:user:<id>            hash   a user (A:users zset and A:user_names hash index them)
    A:apikey:<id>          hash   an API key (A:apikeys, A:user:<uid>:apikeys zsets and A:apikey_hashes index them)
    A:session:<hash>       string a session or login-link document, expiring when it does
    A:user:<uid>:sessions  zset   hashes of the user's sessions and login links, scored by expiry (ms); expires with
                                  the last of them (a password change ends them all through it)
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from ...errors import Conflict
from ...types import User
from ..base import AccountStore, ApiKeyRecord, SessionRecord, UserRecord
from ..common import api_key_from_row, from_iso, iso, micros, new_id, to_json, user_record_from_row, utcnow
from .connection import RedisConnection

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

# KEYS: key_hashes. ARGV: key_hash, A, now. Returns the key's fields after recording its use.
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

# KEYS: session. ARGV: A, token hash. Also takes the hash out of its user's index.
_DELETE_SESSION = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
redis.call('DEL', KEYS[1])
local user_id = cjson.decode(raw)['user_id']
redis.call('ZREM', ARGV[1] .. ':user:' .. user_id .. ':sessions', ARGV[2])
return 1
"""

# KEYS: the user's session index. ARGV: A, user_id, token hash to keep ('' for none), now (ms).
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


class RedisAccounts(RedisConnection, AccountStore):
    SCRIPTS: ClassVar[Mapping[str, str]] = {
        "create_user": _CREATE_USER,
        "hset_if_exists": _HSET_IF_EXISTS,
        "create_api_key": _CREATE_API_KEY,
        "find_api_key": _FIND_API_KEY,
        "revoke_api_key": _REVOKE_API_KEY,
        "index_session": _INDEX_SESSION,
        "create_session": _CREATE_SESSION,
        "delete_session": _DELETE_SESSION,
        "delete_user_sessions": _DELETE_USER_SESSIONS,
    }

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
        keys = [self._acct_key("user", user.id), self._acct_key("user_names"), self._acct_key("users")]
        if not await self._script("create_user")(keys=keys, args=args):
            raise Conflict(f"The user name {name!r} is taken: choose another name.")
        return user

    async def get_user(self, user_id: str) -> UserRecord | None:
        fields: dict[str, str] = await self._r().hgetall(self._acct_key("user", user_id))
        return user_record_from_row(fields) if fields else None

    async def get_user_by_name(self, name: str) -> UserRecord | None:
        user_id = await self._r().hget(self._acct_key("user_names"), name)
        return await self.get_user(user_id) if user_id else None

    async def list_users(self) -> list[User]:
        r = self._r()
        ids = await r.zrange(self._acct_key("users"), 0, -1)
        async with r.pipeline(transaction=False) as pipe:
            for user_id in ids:
                pipe.hgetall(self._acct_key("user", user_id))
            rows = await pipe.execute()
        return [user_record_from_row(fields).user for fields in rows if fields]

    async def set_password_hash(self, user_id: str, password_hash: str) -> bool:
        done = await self._script("hset_if_exists")(
            keys=[self._acct_key("user", user_id)], args=["password_hash", password_hash]
        )
        return bool(done)

    async def create_api_key(self, user_id: str, *, name: str, prefix: str, key_hash: str) -> ApiKeyRecord:
        record = ApiKeyRecord(id=new_id(), user_id=user_id, name=name, prefix=prefix, created_at=utcnow())
        args: list[Any] = [record.id, key_hash, micros(record.created_at)]
        args += ["id", record.id, "user_id", user_id, "name", name, "prefix", prefix]
        args += ["created_at", iso(record.created_at)]
        keys = [
            self._acct_key("apikey", record.id),
            self._acct_key("apikey_hashes"),
            self._acct_key("apikeys"),
            self._acct_key("user", user_id, "apikeys"),
        ]
        if not await self._script("create_api_key")(keys=keys, args=args):
            raise Conflict("An API key with this hash exists already: generate a new key.")
        return record

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        flat = await self._script("find_api_key")(
            keys=[self._acct_key("apikey_hashes")], args=[key_hash, self._acct_key(), iso(utcnow())]
        )
        if not flat:
            return None
        return api_key_from_row(dict(zip(flat[::2], flat[1::2], strict=True)))

    async def list_api_keys(self, user_id: str | None = None) -> list[ApiKeyRecord]:
        r = self._r()
        index = self._acct_key("apikeys") if user_id is None else self._acct_key("user", user_id, "apikeys")
        ids = await r.zrange(index, 0, -1)
        async with r.pipeline(transaction=False) as pipe:
            for key_id in ids:
                pipe.hgetall(self._acct_key("apikey", key_id))
            rows = await pipe.execute()
        return [api_key_from_row(fields) for fields in rows if fields]

    async def revoke_api_key(self, key_id: str, *, user_id: str | None = None) -> bool:
        done = await self._script("revoke_api_key")(
            keys=[self._acct_key("apikey", key_id)], args=[user_id or "", iso(utcnow())]
        )
        return bool(done)

    async def create_session(self, token_hash: str, record: SessionRecord) -> None:
        expires_ms, now_ms = micros(record.expires_at) // 1000, micros(utcnow()) // 1000
        if expires_ms <= now_ms:
            await self.delete_session(token_hash)  # already expired: nothing to keep
            return
        doc = {"user_id": record.user_id, "csrf_token": record.csrf_token, "expires_at": iso(record.expires_at)}
        keys = [self._acct_key("user", record.user_id, "sessions"), self._acct_key("session", token_hash)]
        await self._script("create_session")(keys=keys, args=[token_hash, expires_ms, now_ms, to_json(doc)])

    async def get_session(self, token_hash: str) -> SessionRecord | None:
        raw = await self._r().get(self._acct_key("session", token_hash))
        if raw is None:
            return None
        doc = json.loads(raw)
        record = SessionRecord(doc["user_id"], doc["csrf_token"], from_iso(doc["expires_at"]))
        return record if record.expires_at > utcnow() else None  # Redis expires to the millisecond only

    async def delete_session(self, token_hash: str) -> None:
        keys = [self._acct_key("session", token_hash)]
        await self._script("delete_session")(keys=keys, args=[self._acct_key(), token_hash])

    async def delete_user_sessions(self, user_id: str, *, keep: str | None = None) -> int:
        keys = [self._acct_key("user", user_id, "sessions")]
        ended = await self._script("delete_user_sessions")(
            keys=keys, args=[self._acct_key(), user_id, keep or "", micros(utcnow()) // 1000]
        )
        return int(ended)

    async def _index_old_sessions(self) -> None:
        """Schema 1 -> 2 (after the keys got their format 3 names): put the sessions written before the per-user
        index into it (idempotent: a second run does no harm)."""
        r = self._r()
        start = self._acct_key("session", "")
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", start) + "*"  # the prefix is literal, even with glob characters
        now_ms = micros(utcnow()) // 1000
        async for key in r.scan_iter(match=pattern, count=1000):
            raw = await r.get(key)
            if raw is None:
                continue
            doc = json.loads(raw)
            expires_ms = micros(from_iso(doc["expires_at"])) // 1000
            keys = [self._acct_key("user", doc["user_id"], "sessions")]
            await self._script("index_session")(keys=keys, args=[key[len(start) :], expires_ms, now_ms])

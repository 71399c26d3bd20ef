"""Redis account deletion: every key kept for one user, found through the user's own indexes.

The user's keys live in several slots (the accounts' ``{accounts}``, one per conversation, the user's forms
``{u:<uid>}``, the profile ``{<uid>}``, the usage zsets), so ``delete_user`` is a sequence of commands and scripts,
each within one slot, ordered as the hash-tag rule asks (docs/stores.md): the credentials first (sessions, login links
and API keys stop working), then the data, and the user last, so that a deletion cut short by a crash leaves a user
that can be deleted again. Conversations are found through ``P:user:<uid>:convs``; one that a crash left out of that
index (between its own write and the index's) is not found and expires with its TTL.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from ..base import DELETED_USER_ID, UserDeletion
from ..common import to_json
from .accounts import RedisAccounts
from .conversations import RedisConversations
from .forms import RedisForms
from .profiles import RedisProfiles
from .streams import RedisStreams
from .usage import RedisUsage

# KEYS: the user's key index, all keys, key hashes. ARGV: A, then the hashes of the user's keys (from HSCAN).
# Deletes the user's API keys and their index entries; a hash is removed only if it names one of those keys.
_DELETE_USER_KEYS = """
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local mine = {}
for _, id in ipairs(ids) do
  mine[id] = true
  redis.call('DEL', ARGV[1] .. ':apikey:' .. id)
  redis.call('ZREM', KEYS[2], id)
end
for i = 2, #ARGV do
  if mine[redis.call('HGET', KEYS[3], ARGV[i])] then redis.call('HDEL', KEYS[3], ARGV[i]) end
end
redis.call('DEL', KEYS[1])
return #ids
"""

# KEYS: user, user_names, users. ARGV: user id. Returns 1 if the user existed.
_DELETE_USER_ROW = """
local name = redis.call('HGET', KEYS[1], 'name')
if name and redis.call('HGET', KEYS[2], name) == ARGV[1] then redis.call('HDEL', KEYS[2], name) end
redis.call('ZREM', KEYS[3], ARGV[1])
return redis.call('DEL', KEYS[1])
"""

_BATCH = 500  # usage records rewritten per transaction


class RedisUserDeletion(RedisConversations, RedisAccounts, RedisUsage, RedisProfiles, RedisForms, RedisStreams):
    SCRIPTS: ClassVar[Mapping[str, str]] = {
        "delete_user_keys": _DELETE_USER_KEYS,
        "delete_user_row": _DELETE_USER_ROW,
    }

    async def delete_user(self, user_id: str) -> UserDeletion | None:
        sessions = await self.delete_user_sessions(user_id)
        keys = await self._delete_user_keys(user_id)
        conversations = await self._delete_user_conversations(user_id)
        forms = await self._delete_user_forms(user_id)
        await self.delete_profile(user_id)
        detached = await self._detach_usage(user_id)
        found = await self._script("delete_user_row")(
            keys=[self._acct_key("user", user_id), self._acct_key("user_names"), self._acct_key("users")],
            args=[user_id],
        )
        return UserDeletion(conversations, forms, keys, sessions, detached) if found else None

    async def _delete_user_keys(self, user_id: str) -> int:
        r = self._r()
        index, hashes_key = self._acct_key("user", user_id, "apikeys"), self._acct_key("apikey_hashes")
        ids = set(await r.zrange(index, 0, -1))
        hashes: list[str] = []
        if ids:  # a key's record does not hold its hash: find the user's among all of them
            async for key_hash, key_id in r.hscan_iter(hashes_key, count=1000):
                if key_id in ids:
                    hashes.append(key_hash)
        removed = await self._script("delete_user_keys")(
            keys=[index, self._acct_key("apikeys"), hashes_key], args=[self._acct_key(), *hashes]
        )
        return int(removed)

    async def _delete_user_conversations(self, user_id: str) -> int:
        """The conversations of the user's index, in batches: one pipeline reads their owners and message ids, one
        deletes those that are the user's, with their context keys and reply logs (each DEL within one slot)."""
        r = self._r()
        ids: list[str] = await r.zrange(self._user_index(user_id), 0, -1)
        deleted = 0
        for start in range(0, len(ids), _BATCH):
            batch = ids[start : start + _BATCH]
            async with r.pipeline(transaction=False) as pipe:
                for cid in batch:
                    pipe.hget(self._conv_key(cid), "user_id")
                    pipe.hkeys(self._conv_key(cid, "msgs"))
                found = await pipe.execute()
            owned = [
                (cid, message_ids)
                for cid, owner, message_ids in zip(batch, found[::2], found[1::2], strict=True)
                if owner == user_id
            ]
            if not owned:
                continue
            async with r.pipeline(transaction=False) as pipe:
                for cid, message_ids in owned:
                    conv = self._conv_key(cid)
                    pipe.delete(*self._conv_keys(cid), f"{conv}:vectors", f"{conv}:summary")
                    logs = [key for mid in message_ids for key in self._reply_keys(cid, mid)]
                    if logs:
                        pipe.delete(*logs)
                streaming = [mid for _, message_ids in owned for mid in message_ids]
                if streaming:
                    pipe.srem(self._k("streaming"), *streaming)
                await pipe.execute()
            deleted += len(owned)
        await r.delete(self._user_index(user_id))
        return deleted

    async def _delete_user_forms(self, user_id: str) -> int:
        r = self._r()
        index = self._form_key(user_id, "index")
        ids = await r.zrange(index, 0, -1)
        if ids:
            await r.delete(*(self._form_key(user_id, "rec", rid) for rid in ids))
        await r.delete(index)
        return len(ids)

    async def _detach_usage(self, user_id: str) -> int:
        """Rewrite the user's records in ``P:usage`` without what points at the user (same score, same record id),
        file them under ``DELETED_USER_ID`` and drop the user's own zset."""
        r = self._r()
        mine = self._k("user", user_id, "usage")
        records: list[tuple[str, float]] = await r.zrange(mine, 0, -1, withscores=True)
        for start in range(0, len(records), _BATCH):
            batch = records[start : start + _BATCH]
            detached = {_detached(raw): score for raw, score in batch}
            async with r.pipeline(transaction=True) as pipe:  # one key: one slot
                pipe.zrem(self._k("usage"), *(raw for raw, _ in batch))
                pipe.zadd(self._k("usage"), detached)
                await pipe.execute()
            await r.zadd(self._k("user", DELETED_USER_ID, "usage"), detached)
        await r.delete(mine)
        return len(records)


def _detached(raw: str) -> str:
    doc: dict[str, Any] = json.loads(raw)
    doc.update(user_id=DELETED_USER_ID, conversation_id=None, message_id=None, request_id=None)
    return to_json(doc)

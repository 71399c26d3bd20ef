"""Redis context memory, next to each conversation's keys::

    P:conv:{cid}:vectors   hash    message id -> "<embedder> <base64 of float32 bytes>"
    P:conv:{cid}:summary   string  the rolling summary (JSON)

Both carry the conversation's TTL (set again on every write) and are deleted with the conversation; deleting
messages (edit, regenerate) deletes their vectors. One hash per conversation, read with one HGETALL: the engine
compares a conversation's own vectors in memory.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import ClassVar

from ...types import ConversationSummary
from ..base import ContextStore
from ..common import iso, summary_from_row, utcnow
from .connection import RedisConnection

# KEYS: conv, order, vectors. ARGV: user_id, ttl_ms, then pairs of message id, value. Only messages of the
# conversation (in its order zset) get a vector.
_SAVE_VECTORS = """
if redis.call('HGET', KEYS[1], 'user_id') ~= ARGV[1] then return 0 end
for i = 3, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[2], ARGV[i]) then redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
end
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return 1
"""

# KEYS: conv, key. ARGV: user_id. The owner's value of ``key`` (a hash: flattened), or false.
_READ_OWNED = """
if redis.call('HGET', KEYS[1], 'user_id') ~= ARGV[1] then return false end
if redis.call('TYPE', KEYS[2])['ok'] == 'hash' then return redis.call('HGETALL', KEYS[2]) end
return redis.call('GET', KEYS[2])
"""

# KEYS: conv, summary. ARGV: user_id, ttl_ms, document ('' deletes).
_WRITE_SUMMARY = """
if redis.call('HGET', KEYS[1], 'user_id') ~= ARGV[1] then return 0 end
if ARGV[3] == '' then return redis.call('DEL', KEYS[2]) end
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
return 1
"""


class RedisContext(RedisConnection, ContextStore):
    SCRIPTS: ClassVar[Mapping[str, str]] = {
        "save_vectors": _SAVE_VECTORS,
        "read_owned": _READ_OWNED,
        "write_summary": _WRITE_SUMMARY,
    }

    def _context_keys(self, conversation_id: str) -> tuple[str, str]:
        conv = self._conv_key(conversation_id)
        return f"{conv}:vectors", f"{conv}:summary"

    async def save_vectors(
        self, user_id: str, conversation_id: str, vectors: Mapping[str, bytes], *, model: str
    ) -> bool:
        conv = self._conv_key(conversation_id)
        args: list[str | int] = [user_id, self.ttl_ms]
        for mid, vector in vectors.items():
            args += [mid, f"{model} {base64.b64encode(vector).decode('ascii')}"]
        keys = [conv, f"{conv}:order", self._context_keys(conversation_id)[0]]
        return bool(await self._script("save_vectors")(keys=keys, args=args))

    async def load_vectors(self, user_id: str, conversation_id: str, *, model: str) -> dict[str, bytes]:
        keys = [self._conv_key(conversation_id), self._context_keys(conversation_id)[0]]
        flat = await self._script("read_owned")(keys=keys, args=[user_id])
        if not flat:
            return {}
        out: dict[str, bytes] = {}
        prefix = model + " "
        for mid, value in zip(flat[::2], flat[1::2], strict=True):
            if value.startswith(prefix):
                out[mid] = base64.b64decode(value[len(prefix) :])
        return out

    async def load_summary(self, user_id: str, conversation_id: str) -> ConversationSummary | None:
        keys = [self._conv_key(conversation_id), self._context_keys(conversation_id)[1]]
        doc = await self._script("read_owned")(keys=keys, args=[user_id])
        return summary_from_row(json.loads(doc)) if doc else None

    async def save_summary(self, user_id: str, summary: ConversationSummary) -> bool:
        s = summary
        doc = {
            "conversation_id": s.conversation_id,
            "first_id": s.first_id,
            "last_id": s.last_id,
            "messages": s.messages,
            "text": s.text,
            "model": s.model,
            "created_at": iso(s.created_at or utcnow()),
        }
        keys = [self._conv_key(s.conversation_id), self._context_keys(s.conversation_id)[1]]
        args = [user_id, self.ttl_ms, json.dumps(doc, ensure_ascii=False)]
        return bool(await self._script("write_summary")(keys=keys, args=args))

    async def delete_summary(self, user_id: str, conversation_id: str) -> bool:
        keys = [self._conv_key(conversation_id), self._context_keys(conversation_id)[1]]
        return bool(await self._script("write_summary")(keys=keys, args=[user_id, self.ttl_ms, ""]))

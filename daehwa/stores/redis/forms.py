"""Redis completed forms, kept without expiry (the record outlives its conversation)::

P:forms:{u:uid}:rec:{id}   hash    user_id, conversation_id, form, values (JSON), delivery, created_at
P:forms:{u:uid}:index      zset    record id -> created_at (microseconds)

Both keys of a user share the hash tag ``{u:<user id>}`` (one slot on a Redis Cluster). The conversation's owner is
checked with its own read first: its key lives in the conversation's slot, so no script spans both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from ..base import FormRecord, FormStore, NewFormRecord
from ..common import form_record_from_row, iso, micros, new_id, utcnow
from .connection import RedisConnection

# KEYS: record, index. ARGV: user_id, id, conversation_id, form, values, delivery ('' none), created_at, score.
_SAVE_FORM = """
redis.call('HSET', KEYS[1], 'id', ARGV[2], 'user_id', ARGV[1], 'conversation_id', ARGV[3], 'form', ARGV[4],
  'values', ARGV[5], 'created_at', ARGV[7])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'delivery', ARGV[6]) end
redis.call('ZADD', KEYS[2], ARGV[8], ARGV[2])
return 1
"""

# KEYS: record. ARGV: user_id, delivery.
_SET_DELIVERY = """
if redis.call('HGET', KEYS[1], 'user_id') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'delivery', ARGV[2])
return 1
"""


def _record(doc: Mapping[str, Any]) -> FormRecord:
    return form_record_from_row({**doc, "record_values": doc.get("values") or "{}"})


class RedisForms(RedisConnection, FormStore):
    SCRIPTS: ClassVar[Mapping[str, str]] = {"save_form": _SAVE_FORM, "set_form_delivery": _SET_DELIVERY}

    def _form_key(self, user_id: str, *parts: str) -> str:
        """A key of the user's form records: all of them share the hash tag ``{u:<user id>}``."""
        return ":".join((self.prefix, "forms", "{u:" + user_id + "}", *parts))

    async def save_form_record(self, user_id: str, record: NewFormRecord) -> FormRecord | None:
        rid, now = new_id(), utcnow()
        if await self._r().hget(self._conv_key(record.conversation_id), "user_id") != user_id:
            return None
        keys = [self._form_key(user_id, "rec", rid), self._form_key(user_id, "index")]
        args = [
            user_id, rid, record.conversation_id, record.form, json.dumps(dict(record.values), ensure_ascii=False),
            record.delivery or "", iso(now), micros(now),
        ]  # fmt: skip
        if not await self._script("save_form")(keys=keys, args=args):
            return None
        return FormRecord(rid, user_id, record.conversation_id, record.form, dict(record.values), now, record.delivery)

    async def get_form_record(self, user_id: str, record_id: str) -> FormRecord | None:
        doc = await self._r().hgetall(self._form_key(user_id, "rec", record_id))
        if not doc or doc.get("user_id") != user_id:
            return None
        return _record(doc)

    async def list_form_records(self, user_id: str, *, conversation_id: str | None = None) -> list[FormRecord]:
        ids = await self._r().zrange(self._form_key(user_id, "index"), 0, -1)
        if not ids:
            return []
        pipe = self._r().pipeline(transaction=False)
        for rid in ids:
            pipe.hgetall(self._form_key(user_id, "rec", rid))
        docs = await pipe.execute()
        out = [_record(d) for d in docs if d and d.get("user_id") == user_id]
        return [r for r in out if conversation_id is None or r.conversation_id == conversation_id]

    async def set_form_delivery(self, user_id: str, record_id: str, delivery: str) -> bool:
        keys = [self._form_key(user_id, "rec", record_id)]
        return bool(await self._script("set_form_delivery")(keys=keys, args=[user_id, delivery]))

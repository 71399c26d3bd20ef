"""Redis usage records: ``P:usage`` and ``P:user:<uid>:usage``, zsets of usage documents scored by created_at
(microseconds), which never expire. The two are in different slots (on Redis Cluster): a record is added to each by
its own command, the user's first (the quota counts from it)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ...types import UsageRecord, UsageTotal
from ..base import UsageStore
from ..common import iso, micros, new_id, to_json, usage_row
from .connection import RedisConnection

if TYPE_CHECKING:
    from redis.asyncio.client import Pipeline


def queue_usage(pipe: Pipeline, key: Callable[..., str], record: UsageRecord) -> None:
    """Queue the writes of one usage record on ``pipe`` (a pipeline without transaction: two slots)."""
    doc = usage_row(record)
    created = doc["created_at"]
    doc = {"id": new_id(), **doc, "created_at": iso(created)}  # the id makes every record a distinct member
    member = {to_json(doc): micros(created)}
    pipe.zadd(key("user", record.user_id, "usage"), member)
    pipe.zadd(key("usage"), member)


class RedisUsage(RedisConnection, UsageStore):
    async def record_usage(self, record: UsageRecord) -> None:
        async with self._r().pipeline(transaction=False) as pipe:
            queue_usage(pipe, self._k, record)
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
                pipe.hget(self._acct_key("user", uid), "name")
            names = dict(zip(user_ids, await pipe.execute(), strict=True))
        return [
            UsageTotal(uid, names[uid], model, turns, prompt, completion, float(cost))
            for (uid, model), (turns, prompt, completion, cost) in sorted(sums.items())
        ]

    async def tokens_used_since(self, user_id: str, since: datetime) -> int:
        docs = await self._usage_docs(user_id, since)
        return sum(doc["prompt_tokens"] + doc["completion_tokens"] for doc in docs)

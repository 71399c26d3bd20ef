"""Redis user profiles (no TTL: they live as long as the user; ``{uid}`` is literal, the user's hash tag)::

P:profile:{uid}:interests          zset    term -> time-scaled score
P:profile:{uid}:interests:seen     hash    term -> ISO time of the last addition
P:profile:{uid}:feedback:<cat>     hash    item id -> "<clicks> <dismissed 0|1>"
P:profile:{uid}:feedback           set     catalogue names with feedback (so the profile can be deleted)
P:profile:{uid}:settings           hash    interests -> "0" when the user turned remembered interests off
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from ..base import FeedbackRecord, InterestRecord, ProfileStore
from ..common import from_iso, iso, utcnow
from .connection import RedisConnection

# KEYS: interests, seen. ARGV: keep, now, then pairs of term, increment. Drops the weakest past ``keep``.
_ADD_INTERESTS = """
for i = 3, #ARGV, 2 do
  redis.call('ZINCRBY', KEYS[1], ARGV[i + 1], ARGV[i])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[2])
end
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[1])
if extra > 0 then
  local gone = redis.call('ZRANGE', KEYS[1], 0, extra - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, extra - 1)
  redis.call('HDEL', KEYS[2], unpack(gone))
end
return 1
"""

# KEYS: feedback hash, catalogue set. ARGV: item, clicks to add, dismissed (0|1), catalogue.
_FEEDBACK = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
local clicks, dismissed = 0, 0
if old then
  local a, b = string.match(old, '(%d+) (%d)')
  clicks, dismissed = tonumber(a), tonumber(b)
end
clicks = clicks + tonumber(ARGV[2])
if tonumber(ARGV[3]) == 1 then dismissed = 1 end
redis.call('HSET', KEYS[1], ARGV[1], clicks .. ' ' .. dismissed)
redis.call('SADD', KEYS[2], ARGV[4])
return 1
"""


class RedisProfiles(RedisConnection, ProfileStore):
    SCRIPTS: ClassVar[Mapping[str, str]] = {"add_interests": _ADD_INTERESTS, "feedback": _FEEDBACK}

    def _interest_keys(self, user_id: str) -> tuple[str, str]:
        base = self._k("profile", "{" + user_id + "}", "interests")
        return base, f"{base}:seen"

    async def add_interests(self, user_id: str, increments: Mapping[str, float]) -> None:
        if not increments:
            return
        args: list[str | float | int] = [self.MAX_INTERESTS, iso(utcnow())]
        for term, inc in increments.items():
            args += [term, float(inc)]
        await self._script("add_interests")(keys=list(self._interest_keys(user_id)), args=args)

    async def list_interests(self, user_id: str, *, limit: int = 50) -> list[InterestRecord]:
        zset, seen = self._interest_keys(user_id)
        pairs = await self._r().zrevrange(zset, 0, limit - 1, withscores=True)
        if not pairs:
            return []
        terms = [t.decode() if isinstance(t, bytes) else t for t, _ in pairs]
        times = await self._r().hmget(seen, terms)
        out = []
        for (_, score), term, when in zip(pairs, terms, times, strict=True):
            text = when.decode() if isinstance(when, bytes) else when
            out.append(InterestRecord(term, float(score), from_iso(text) if text else utcnow()))
        return out

    async def delete_interests(self, user_id: str, term: str | None = None) -> int:
        zset, seen = self._interest_keys(user_id)
        if term is None:
            n = int(await self._r().zcard(zset))
            await self._r().delete(zset, seen)
            return n
        async with self._r().pipeline(transaction=True) as pipe:
            pipe.zrem(zset, term)
            pipe.hdel(seen, term)
            removed, _ = await pipe.execute()
        return int(removed)

    async def record_feedback(self, user_id: str, catalogue: str, item_id: str, action: str) -> None:
        clicks, dismissed = (1, 0) if action == "click" else (0, 1)
        keys = [
            self._k("profile", "{" + user_id + "}", "feedback", catalogue),
            self._k("profile", "{" + user_id + "}", "feedback"),
        ]
        await self._script("feedback")(keys=keys, args=[item_id, clicks, dismissed, catalogue])

    async def load_feedback(self, user_id: str, catalogue: str) -> dict[str, FeedbackRecord]:
        raw = await self._r().hgetall(self._k("profile", "{" + user_id + "}", "feedback", catalogue))
        out: dict[str, FeedbackRecord] = {}
        for key, value in raw.items():
            item = key.decode() if isinstance(key, bytes) else key
            text = value.decode() if isinstance(value, bytes) else value
            clicks, dismissed = text.split()
            out[item] = FeedbackRecord(item, int(clicks), dismissed == "1")
        return out

    def _settings_key(self, user_id: str) -> str:
        return self._k("profile", "{" + user_id + "}", "settings")

    async def interests_enabled(self, user_id: str) -> bool:
        return await self._r().hget(self._settings_key(user_id), "interests") != "0"

    async def set_interests_enabled(self, user_id: str, enabled: bool) -> None:
        await self._r().hset(self._settings_key(user_id), "interests", "1" if enabled else "0")

    async def delete_profile(self, user_id: str) -> None:
        index = self._k("profile", "{" + user_id + "}", "feedback")
        catalogues = await self._r().smembers(index)
        names = [c.decode() if isinstance(c, bytes) else c for c in catalogues]
        keys = [
            *self._interest_keys(user_id),
            index,
            *(self._k("profile", "{" + user_id + "}", "feedback", c) for c in names),
            self._settings_key(user_id),
        ]
        await self._r().delete(*keys)

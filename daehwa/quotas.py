"""Per-user quotas: turns per minute and tokens per UTC day, refused with ``RateLimited`` (HTTP 429 + Retry-After),
its message in the request's locale (``daehwa.i18n``).

``QuotaLimiter`` implements the pipeline's ``Limiter`` protocol (``daehwa.chat``): ``check`` runs before a turn
stores anything, ``record`` after it, with the tokens it used. The counters live behind a small ``Counters``
interface: ``MemoryCounters`` for one process, ``RedisCounters`` shared by every process using the same Redis.

Requests per minute use GCRA (the "generic cell rate algorithm"): one timestamp per user, a burst of up to the limit,
then one turn every 60/limit seconds, and an exact Retry-After. Tokens per day are a counter per user and UTC day; on
its first use in a day it is seeded from the store's usage records, so a restart does not hand out a fresh quota.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, RateLimited
from .i18n import format_duration, t
from .types import User

if TYPE_CHECKING:
    from .config import Settings
    from .metrics import Metrics
    from .stores.base import Store

log = logging.getLogger(__name__)

DAY = 86_400.0


class Counters(abc.ABC):
    """Where quota state lives. Keys are plain strings; implementations add their own prefix."""

    @abc.abstractmethod
    async def take(self, key: str, limit: int, period: float) -> float:
        """Take one of ``limit`` per ``period`` seconds: 0.0 if allowed, else the seconds until one is free."""

    @abc.abstractmethod
    async def get(self, key: str) -> int | None:
        """The counter's value, or None if it does not exist."""

    @abc.abstractmethod
    async def add(self, key: str, amount: int, ttl: float) -> int:
        """Add to a counter (created at 0), keeping it at least ``ttl`` seconds; returns the new value."""

    @abc.abstractmethod
    async def seed(self, key: str, value: int, ttl: float) -> int:
        """Set the counter to ``value`` unless it exists; returns its value afterwards."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        pass


class MemoryCounters(Counters):
    """Counters of one process (enough for a single ``daehwa serve``)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._tat: dict[str, float] = {}  # GCRA: the theoretical arrival time of the next request
        self._counts: dict[str, tuple[int, float]] = {}  # value, expiry
        self._ops = 0

    async def take(self, key: str, limit: int, period: float) -> float:
        now = self.clock()
        self._maybe_prune(now)
        interval = period / limit
        tat = max(self._tat.get(key, now), now) + interval
        if tat - now > period + 1e-9:
            return tat - period - now
        self._tat[key] = tat
        return 0.0

    async def get(self, key: str) -> int | None:
        entry = self._counts.get(key)
        if entry is None or entry[1] <= self.clock():
            return None
        return entry[0]

    async def add(self, key: str, amount: int, ttl: float) -> int:
        value = (await self.get(key) or 0) + amount
        self._counts[key] = (value, self.clock() + ttl)
        return value

    async def seed(self, key: str, value: int, ttl: float) -> int:
        current = await self.get(key)
        if current is not None:
            return current
        self._counts[key] = (value, self.clock() + ttl)
        return value

    def _maybe_prune(self, now: float) -> None:
        # Users come and go; drop their spent state now and then so the dicts stay as big as the active users.
        self._ops += 1
        if self._ops % 1024:
            return
        self._tat = {k: v for k, v in self._tat.items() if v > now}
        self._counts = {k: v for k, v in self._counts.items() if v[1] > now}


# GCRA in one round trip, on the Redis server's clock so that every process agrees on "now".
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local interval = period / limit
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
tat = tat + interval
if tat - now > period + 1e-9 then
  return tostring(tat - period - now)
end
redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
return '0'
"""


class RedisCounters(Counters):
    """Counters in Redis, shared by every daehwa process that uses the same server and prefix."""

    def __init__(self, url: str, *, prefix: str = "daehwa") -> None:
        try:
            import redis.asyncio  # noqa: F401  (the driver; connect() picks the cluster or the plain client)
        except ImportError:  # pragma: no cover - the extra is installed in the dev environment
            raise ConfigError("Quota counters in Redis need the redis package: pip install 'daehwa[redis]'.") from None
        self.url = url
        self.prefix = f"{prefix}:quota:"
        from .stores.redis.connection import connect

        # One key per command or script, so redis+cluster:// works as well (each counter is in its own slot).
        self._client: Any = connect(url)
        self._take = self._client.register_script(_TAKE)

    def __repr__(self) -> str:
        return f"RedisCounters(prefix={self.prefix!r})"  # the URL may hold a password

    async def take(self, key: str, limit: int, period: float) -> float:
        return float(await self._take(keys=[self.prefix + key], args=[limit, period]))

    async def get(self, key: str) -> int | None:
        value = await self._client.get(self.prefix + key)
        return None if value is None else int(value)

    async def add(self, key: str, amount: int, ttl: float) -> int:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.incrby(self.prefix + key, amount)
            pipe.expire(self.prefix + key, int(ttl) + 1)
            value, *_ = await pipe.execute()
        return int(value)

    async def seed(self, key: str, value: int, ttl: float) -> int:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.set(self.prefix + key, value, ex=int(ttl) + 1, nx=True)
            pipe.get(self.prefix + key)
            _, current = await pipe.execute()
        return int(current)

    async def aclose(self) -> None:
        await self._client.aclose()


@dataclass(frozen=True, slots=True)
class Limits:
    """One user's effective limits; 0 means no limit."""

    requests_per_minute: int = 0
    tokens_per_day: int = 0


class QuotaLimiter:
    """Per-user limits from the settings (``DAEHWA_RATE_LIMIT_*``, ``DAEHWA_USER_QUOTAS``)."""

    def __init__(
        self,
        settings: Settings,
        *,
        counters: Counters | None = None,
        store: Store | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.counters = counters if counters is not None else MemoryCounters(clock)
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self._seeding: dict[str, asyncio.Lock] = {}

    @classmethod
    def from_settings(
        cls, settings: Settings, *, store: Store | None = None, metrics: Metrics | None = None
    ) -> QuotaLimiter:
        """Redis counters when ``DAEHWA_RATE_LIMIT_REDIS_URL`` (or a redis:// database URL) is set, else in memory."""
        url = settings.rate_limit_redis_url
        if url is None and settings.resolved_database_url().startswith(
            ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")
        ):
            url = settings.resolved_database_url()
        counters: Counters = MemoryCounters()
        if url and cls.configured(settings):  # no Redis client at all when there is nothing to count
            counters = RedisCounters(url, prefix=settings.redis_key_prefix)
        return cls(settings, counters=counters, store=store, metrics=metrics)

    @property
    def enabled(self) -> bool:
        return self.configured(self.settings)

    @staticmethod
    def configured(s: Settings) -> bool:
        """Whether any quota is set at all."""
        return bool(
            s.rate_limit_requests_per_minute
            or s.rate_limit_tokens_per_day
            or any(q.requests_per_minute or q.tokens_per_day for q in s.user_quotas.values())
        )

    def limits_for(self, user: User) -> Limits:
        s = self.settings
        override = s.user_quotas.get(user.name) or s.user_quotas.get(user.id)
        rpm = s.rate_limit_requests_per_minute
        tpd = s.rate_limit_tokens_per_day
        if override is not None:
            rpm = override.requests_per_minute if override.requests_per_minute is not None else rpm
            tpd = override.tokens_per_day if override.tokens_per_day is not None else tpd
        return Limits(rpm, tpd)

    async def check(self, user: User, *, source: str, locale: str | None = None) -> None:
        """Raise ``RateLimited`` (worded in ``locale``) if ``user`` may not start a turn now; else count the turn."""
        limits = self.limits_for(user)
        if limits.tokens_per_day:
            used = await self.tokens_today(user)
            if used >= limits.tokens_per_day:
                self._count("tokens_per_day")
                retry_after = self._seconds_to_midnight()
                raise RateLimited(
                    t(
                        "rate_limited_tokens",
                        locale,
                        limit=limits.tokens_per_day,
                        used=used,
                        wait=format_duration(retry_after, locale),
                    ),
                    retry_after=retry_after,
                    code="token_quota_exceeded",
                )
        if limits.requests_per_minute:
            wait = await self.counters.take(f"rpm:{user.id}", limits.requests_per_minute, 60.0)
            if wait > 0:
                self._count("requests_per_minute")
                raise RateLimited(
                    t(
                        "rate_limited_requests",
                        locale,
                        limit=limits.requests_per_minute,
                        wait=format_duration(wait, locale),
                    ),
                    retry_after=wait,
                    code="rate_limit_exceeded",
                )

    async def record(self, user: User, *, tokens: int) -> None:
        """Count the tokens a finished turn used against the user's daily quota."""
        if not tokens or not self.limits_for(user).tokens_per_day:
            return
        key = self._tokens_key(user)
        if await self.counters.get(key) is None:
            # First sight today in this counter store: the store's records already include this turn.
            await self.tokens_today(user)
            return
        await self.counters.add(key, tokens, 2 * DAY)

    async def tokens_today(self, user: User) -> int:
        """Tokens the user has used this UTC day."""
        key = self._tokens_key(user)
        value = await self.counters.get(key)
        if value is not None:
            return value
        lock = self._seeding.setdefault(key, asyncio.Lock())
        async with lock:  # one store query per user and day, however many turns arrive at once
            value = await self.counters.get(key)
            if value is None:
                used = 0
                if self.store is not None:
                    used = await self.store.tokens_used_since(user.id, self._midnight())
                value = await self.counters.seed(key, used, 2 * DAY)
        self._seeding.pop(key, None)
        return value

    async def aclose(self) -> None:
        await self.counters.aclose()

    def _tokens_key(self, user: User) -> str:
        return f"tokens:{user.id}:{self._midnight():%Y%m%d}"

    def _midnight(self) -> datetime:
        now = datetime.fromtimestamp(self.clock(), UTC)
        return now.replace(hour=0, minute=0, second=0, microsecond=0)

    def _seconds_to_midnight(self) -> float:
        return max(1.0, (self._midnight() + timedelta(days=1)).timestamp() - self.clock())

    def _count(self, limit: str) -> None:
        if self.metrics is not None:
            self.metrics.rate_limited.labels(limit).inc()

"""The Redis store (redis.asyncio): conversations as hashes and JSON documents that expire, accounts that do not.

Each interface of ``base`` has its module here, with the keys it uses and the Lua scripts it runs:
``conversations`` (``P:conv:*``, ``P:user:{uid}:convs``, ``P:streaming``), ``accounts`` (``P:user:*``,
``P:apikey*``, ``P:session:*``) and ``usage`` (``P:usage``, ``P:user:{uid}:usage``); ``P`` is the key prefix,
``daehwa`` by default, and ``P:schema`` the version of the layout. This module adds the lifecycle.

Conversation keys carry a TTL (``redis_ttl_days``) that every write to the conversation restarts; accounts, API keys
and usage never expire. Writes that touch several keys run as Lua scripts or MULTI transactions, so a reader never
sees half of one. Keys are not hash-tagged, so this targets a single Redis (not Cluster).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...errors import ConfigError
from ..base import Store
from ..common import redact
from ..signals import RedisSignals, StopSignals
from .accounts import RedisAccounts
from .context import RedisContext
from .conversations import RedisConversations
from .usage import RedisUsage

if TYPE_CHECKING:
    from ...config import Settings

__all__ = ["SCHEMA_VERSION", "RedisStore"]

# 2: every session is in its user's P:user:{uid}:sessions index (open() indexes those a version 1 daehwa wrote).
SCHEMA_VERSION = 2


class RedisStore(RedisConversations, RedisAccounts, RedisUsage, RedisContext, Store):
    """Conversation history that expires after ``ttl_seconds`` without writes; accounts and usage that do not."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "daehwa",
        ttl_seconds: float = 30 * 86_400,
        pool_size: int = 100,
        pool_timeout: float = 60.0,
    ) -> None:
        if ttl_seconds <= 0:
            raise ConfigError("DAEHWA_REDIS_TTL_DAYS must be positive.")
        self.url = url
        self.prefix = prefix
        self.ttl_ms = int(ttl_seconds * 1000)
        self.pool_size = pool_size
        self.pool_timeout = pool_timeout
        self._client = None

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> RedisStore:
        if settings is None:
            return cls(url)
        return cls(
            url,
            prefix=settings.redis_key_prefix,
            ttl_seconds=settings.redis_ttl_days * 86_400,
            pool_size=settings.redis_pool_size,
            pool_timeout=settings.request_timeout,
        )

    def __repr__(self) -> str:
        return f"RedisStore({redact(self.url)!r}, prefix={self.prefix!r})"

    async def open(self) -> None:
        # A blocking pool: with more concurrent requests than connections a request waits for one; redis-py's
        # default pool (100 connections in redis-py 8) fails the request with "Too many connections" instead.
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url, decode_responses=True, max_connections=self.pool_size, timeout=self.pool_timeout
        )
        client = aioredis.Redis.from_pool(pool)  # closing the client closes the pool
        try:
            await client.ping()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            await client.aclose()
            raise ConfigError(
                f"Cannot reach Redis at {redact(self.url)} ({exc}): start Redis or fix DAEHWA_DATABASE_URL."
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
        self._register_scripts(client)
        if found < 2:
            await self._index_old_sessions()
            await client.set(self._k("schema"), SCHEMA_VERSION)

    async def recover_interrupted(self) -> None:
        await self._repair_streaming()

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def ping(self) -> None:
        await self._r().ping()

    def stop_signals(self) -> StopSignals:
        return RedisSignals(self.url, self.prefix)

"""The Redis store (redis.asyncio): conversations as hashes and JSON documents that expire, accounts that do not.

Each interface of ``base`` has its module here, with the keys it uses and the Lua scripts it runs:
``conversations`` (``P:conv:{cid}*``, ``P:user:<uid>:convs``, ``P:streaming``), ``accounts`` (``P:{accounts}:*``),
``usage`` (``P:usage``, ``P:user:<uid>:usage``), ``context`` (``P:conv:{cid}:vectors|summary``), ``forms``
(``P:forms:{u:<uid>}:*``) and ``streams`` (the chunk logs of streaming replies, ``P:{c:<cid>}:reply:*``;
``P:breakers`` is the shared breaker board); ``deletion`` deletes a user's keys of all of them. ``P`` is the key
prefix, ``daehwa`` by default, and ``P:schema`` the version of the layout. This module adds the lifecycle.

Conversation keys carry a TTL (``redis_ttl_days``) that every write to the conversation restarts; accounts, API keys
and usage never expire. Writes within one conversation, or within the accounts, run as Lua scripts or MULTI
transactions, so a reader never sees half of one; their keys share a hash tag, so the same code runs on one Redis
(``redis://``) and on a Redis Cluster (``redis+cluster://host:port``). The rule: ``connection``'s docstring.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from contextlib import suppress
from datetime import datetime
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...errors import ConfigError
from ..base import Store
from ..breakers import BreakerBoard, RedisBreakerBoard
from ..common import redact
from ..signals import RedisSignals, StopSignals
from .accounts import RedisAccounts
from .connection import check_prefix, connect, is_cluster_url
from .context import RedisContext
from .conversations import RedisConversations
from .deletion import RedisUserDeletion
from .forms import RedisForms
from .profiles import RedisProfiles
from .streams import RedisStreams
from .usage import RedisUsage

if TYPE_CHECKING:
    from ...config import Settings

__all__ = ["SCHEMA_VERSION", "RedisStore"]

# 2: every session is in its user's P:user:<uid>:sessions index (open() indexes those a version 1 daehwa wrote).
# 3: hash tags for Redis Cluster: P:conv:<cid>* -> P:conv:{cid}*, account keys -> P:{accounts}:* (open() renames).
SCHEMA_VERSION = 3
UPGRADE_WAIT_SECONDS = 120.0  # how long a process waits for another one's upgrade of the data

_ACCOUNT_GLOBALS = {"user_names", "users", "apikeys", "apikey_hashes"}
_ACCOUNT_ROOTS = {"apikey", "session"}
_CONV_PARTS = {"msgs", "order", "vectors", "summary"}


def format3_name(prefix: str, key: str) -> str | None:
    """The format 3 name of a format 2 key under ``prefix`` (None: the key keeps its name)."""
    rest = key[len(prefix) + 1 :]
    parts = rest.split(":")
    head = parts[0]
    acct = f"{prefix}:{{accounts}}:{rest}"
    if head == "conv" and len(parts) in (2, 3) and not parts[1].startswith("{"):
        if len(parts) == 3 and parts[2] not in _CONV_PARTS:
            return None
        return ":".join([prefix, "conv", "{" + parts[1] + "}", *parts[2:]])
    if head in _ACCOUNT_GLOBALS and len(parts) == 1:
        return acct
    if head in _ACCOUNT_ROOTS and len(parts) == 2:
        return acct
    if head == "user" and (len(parts) == 2 or (len(parts) == 3 and parts[2] in ("apikeys", "sessions"))):
        return acct
    return None


class RedisStore(
    RedisUserDeletion,
    RedisConversations,
    RedisAccounts,
    RedisUsage,
    RedisContext,
    RedisProfiles,
    RedisForms,
    RedisStreams,
    Store,
):
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
        self.prefix = check_prefix(prefix)
        self.cluster = is_cluster_url(url)
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
        # (A cluster client keeps a pool per node, unbounded.)
        if self.cluster:
            client = connect(self.url)
        else:
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
        if found < SCHEMA_VERSION:
            try:
                await self._upgrade(found)
            except BaseException:
                await self.close()
                raise

    async def _upgrade(self, found: int) -> None:
        """Bring data of format ``found`` to ``SCHEMA_VERSION``. One process does it (holding ``P:upgrading``);
        the others starting meanwhile wait for it to finish. Each step is idempotent: a process killed midway
        leaves data the next start finishes upgrading."""
        r = self._r()
        lock, token = self._k("upgrading"), uuid.uuid4().hex
        deadline = asyncio.get_running_loop().time() + UPGRADE_WAIT_SECONDS
        while not await r.set(lock, token, nx=True, px=int(UPGRADE_WAIT_SECONDS * 1000)):
            if int(await r.get(self._k("schema")) or 0) >= SCHEMA_VERSION:
                return  # another process upgraded the data
            if asyncio.get_running_loop().time() > deadline:
                raise ConfigError(
                    f"Another daehwa process has been upgrading the Redis data under prefix {self.prefix!r} for "
                    f"{UPGRADE_WAIT_SECONDS:.0f}s: wait for it, or delete the key {self._k('upgrading')!r} if none is."
                )
            await asyncio.sleep(0.2)
        try:
            if int(await r.get(self._k("schema")) or 0) >= SCHEMA_VERSION:
                return
            if found < 3:
                await self._rename_to_format_3()
            if found < 2:
                await self._index_old_sessions()
            await r.set(self._k("schema"), SCHEMA_VERSION)
        finally:
            if await r.get(lock) == token:
                await r.delete(lock)

    async def _rename_to_format_3(self) -> int:
        """Format 2 -> 3: give the keys their hash tags (``format3_name``). Returns how many keys moved."""
        r = self._r()
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self.prefix) + ":*"  # the prefix is literal
        moved = 0
        async for key in r.scan_iter(match=pattern, count=1000):
            new = format3_name(self.prefix, key)
            if new is not None and await self._move(key, new):
                moved += 1
        return moved

    async def _move(self, src: str, dst: str) -> bool:
        """Rename ``src`` to ``dst`` keeping its TTL, unless ``dst`` exists (a concurrent upgrade made it)."""
        r = self._r()
        if not self.cluster:
            try:
                return bool(await r.renamenx(src, dst))
            except ResponseError:  # "no such key": gone meanwhile
                return False
        # A cluster cannot RENAME across slots: copy with its TTL, then delete the old key.
        dumped, ttl = await r.dump(src), await r.pttl(src)
        if dumped is None:
            return False
        with suppress(ResponseError):  # BUSYKEY: already there
            await r.restore(dst, max(ttl, 0), dumped)
        await r.delete(src)
        return True

    async def recover_interrupted(self, *, created_before: datetime | None = None) -> None:
        await self._repair_streaming(created_before, self._lease_state)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def ping(self) -> None:
        await self._r().ping()

    def stop_signals(self) -> StopSignals:
        return RedisSignals(self.url, self.prefix)

    def breaker_board(self) -> BreakerBoard:
        return RedisBreakerBoard(self._r(), self.prefix)


__all__ += ["format3_name"]

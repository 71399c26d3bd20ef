"""Circuit-breaker state shared by the server processes of one store: "this model's breaker is open until T".

A breaker (``daehwa.resilience.CircuitBreaker``) counts failures in its own process. When one opens, the router
writes it on the store's board; every process reads the board twice a second and opens its own breaker of that model
for the time left, so an upstream that fails in one worker is spared by all of them. Closing stays local: each
process probes the upstream itself when its open time is up (one probe per process), and a probe that succeeds
clears the board.

* ``LocalBreakerBoard`` (SQLite, memory): nothing to share; each process's breakers are its own.
* ``RedisBreakerBoard``: one hash ``<prefix>:breakers`` (model -> open-until, epoch seconds): a single key, so it
  works on Redis Cluster too.
* ``PostgresBreakerBoard``: the table ``breakers`` (model, open_until; migration ``p012_breakers``), on the
  database's clock, so processes on machines whose clocks differ agree.

The board is advice: when the store cannot be reached the breakers go on working in process, as with one worker.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from typing import Any


class BreakerBoard(abc.ABC):
    """Where the processes of a store note open breakers."""

    @abc.abstractmethod
    async def opened(self, model: str, seconds: float) -> None:
        """The breaker of ``model`` opened here for ``seconds``."""

    @abc.abstractmethod
    async def closed(self, model: str) -> None:
        """The breaker of ``model`` closed here (a probe went through)."""

    @abc.abstractmethod
    async def open_breakers(self) -> dict[str, float]:
        """Models whose breaker some process opened, with the seconds left."""


class LocalBreakerBoard(BreakerBoard):
    """One process, or a store with no board: the breakers are the process's own."""

    async def opened(self, model: str, seconds: float) -> None:
        return None

    async def closed(self, model: str) -> None:
        return None

    async def open_breakers(self) -> dict[str, float]:
        return {}


class RedisBreakerBoard(BreakerBoard):
    """``<prefix>:breakers``: model -> the epoch second its breaker closes; stale fields are dropped by readers."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.key = f"{prefix}:breakers"

    async def opened(self, model: str, seconds: float) -> None:
        await self.client.hset(self.key, model, repr(time.time() + seconds))

    async def closed(self, model: str) -> None:
        await self.client.hdel(self.key, model)

    async def open_breakers(self) -> dict[str, float]:
        board = await self.client.hgetall(self.key)
        now = time.time()
        left: dict[str, float] = {}
        stale = []
        for model, until in board.items():
            try:
                seconds = float(until) - now
            except ValueError:
                seconds = -1.0
            if seconds > 0:
                left[model] = seconds
            else:
                stale.append(model)
        if stale:
            await self.client.hdel(self.key, *stale)
        return left


class PostgresBreakerBoard(BreakerBoard):
    """The table ``breakers``: model -> when its breaker closes (``timestamptz``); readers drop stale rows."""

    def __init__(self, pool: Callable[[], Any]) -> None:
        self.pool = pool  # the store's asyncpg pool (a callable: the store raises if it is closed)

    async def opened(self, model: str, seconds: float) -> None:
        await self.pool().execute(
            """INSERT INTO breakers (model, open_until) VALUES ($1, now() + make_interval(secs => $2))
            ON CONFLICT (model) DO UPDATE SET open_until = excluded.open_until""",
            model,
            float(seconds),
        )

    async def closed(self, model: str) -> None:
        await self.pool().execute("DELETE FROM breakers WHERE model = $1", model)

    async def open_breakers(self) -> dict[str, float]:
        rows = await self.pool().fetch(
            "SELECT model, extract(epoch FROM open_until - now())::float8 AS left_seconds FROM breakers"
        )
        left = {row["model"]: row["left_seconds"] for row in rows if row["left_seconds"] > 0}
        if len(left) < len(rows):
            await self.pool().execute("DELETE FROM breakers WHERE open_until <= now()")
        return left

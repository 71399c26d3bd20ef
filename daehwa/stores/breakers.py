"""Circuit-breaker state shared by the server processes of one store: "this model's breaker is open until T".

A breaker (``daehwa.resilience.CircuitBreaker``) counts failures in its own process. When one opens, the router
writes it on the store's board; every process reads the board twice a second and opens its own breaker of that model
for the time left, so an upstream that fails in one worker is spared by all of them. Closing stays local: each
process probes the upstream itself when its open time is up (one probe per process), and a probe that succeeds
clears the board.

* ``LocalBreakerBoard`` (SQLite, PostgreSQL): nothing to share; each process's breakers are its own.
* ``RedisBreakerBoard``: one hash ``<prefix>:breakers`` (model -> open-until, epoch seconds): a single key, so it
  works on Redis Cluster too.

The board is advice: when the store cannot be reached the breakers go on working in process, as with one worker.
"""

from __future__ import annotations

import abc
import time
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

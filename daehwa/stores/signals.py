"""Stop signals between the server processes that share a store: "stop the turn running for this conversation".

A reply streams in the process that runs its turn, but ``POST /api/conversations/{id}/stop`` (or a delete) can land on
any process behind a load balancer. Each store names how its processes reach each other: ``Store.stop_signals()``.

* ``LocalSignals`` (SQLite, the default): one process; a signal is delivered in place.
* ``RedisSignals``: Redis PUBLISH/SUBSCRIBE on ``<prefix>:stop``. On a Redis Cluster (``redis+cluster://``) the
  same plain pub/sub: a cluster forwards every PUBLISH to all its nodes, so the subscriber (connected to the node
  that owns the channel's slot) gets signals published through any node. Sharded pub/sub (SPUBLISH) would keep a
  signal on one shard, which matters for heavy traffic, not for a stop button.
* ``PostgresSignals``: PostgreSQL LISTEN/NOTIFY on a channel named after the store's schema.

The conversation ``*`` (``ActiveTurns.USER_DELETED``) means "this user was deleted": each process stops all the
user's turns and forgets the user's cached sessions and API keys (``DELETE /api/me``, ``daehwa users delete``).

Signals are best effort, like a stop button: a process that is reconnecting when one is sent misses it (its subscriber
reconnects with backoff). The caller that sent one learns the outcome from the store (the reply stops streaming).
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import json
import logging
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from ..errors import ConfigError

log = logging.getLogger(__name__)

Deliver = Callable[[str, str], object]  # (user_id, conversation_id) -> stop the turn if it runs here

_RECONNECT_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)  # seconds between reconnects of a broken subscription; the last repeats


class StopSignals(abc.ABC):
    """Sends and receives stop signals; ``open`` before use, ``close`` at shutdown."""

    @abc.abstractmethod
    async def open(self, deliver: Deliver) -> None:
        """Start receiving: ``deliver(user_id, conversation_id)`` runs in the event loop for every signal."""

    @abc.abstractmethod
    async def publish(self, user_id: str, conversation_id: str) -> None:
        """Ask every process (this one included) to stop the conversation's running turn."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop receiving."""


class LocalSignals(StopSignals):
    """One process: ``publish`` calls ``deliver`` directly."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    async def open(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def publish(self, user_id: str, conversation_id: str) -> None:
        if self._deliver is not None:
            self._deliver(user_id, conversation_id)

    async def close(self) -> None:
        self._deliver = None


def _payload(user_id: str, conversation_id: str) -> str:
    return json.dumps({"user": user_id, "conversation": conversation_id}, separators=(",", ":"))


def _parse(raw: str | bytes) -> tuple[str, str] | None:
    try:
        data = json.loads(raw)
        user_id, conversation_id = data["user"], data["conversation"]
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(user_id, str) or not isinstance(conversation_id, str):
        return None
    return user_id, conversation_id


class _Subscriber(StopSignals):
    """A background task that keeps one subscription alive, reconnecting with backoff when it breaks."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def open(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._ready = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"{type(self).__name__} subscriber")
        # The first subscription is made before open returns, so a signal sent right after start is not missed.
        ready = asyncio.ensure_future(self._ready.wait())
        await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self._task.done():
            exc = self._task.exception()
            if exc is not None:
                raise ConfigError(
                    f"Cannot listen for stop signals on the store's server ({type(exc).__name__}: {exc}): check that "
                    "it is running and that DAEHWA_DATABASE_URL points at it."
                ) from None

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                await self._listen()
                attempt = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._ready.is_set():
                    raise  # the first connection failed: open() reports it
                delay = _RECONNECT_DELAYS[min(attempt, len(_RECONNECT_DELAYS) - 1)]
                attempt += 1
                log.warning("stop signals: subscription lost (%s); reconnecting in %.1fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)

    @abc.abstractmethod
    async def _listen(self) -> None:
        """Subscribe, set ``self._ready``, deliver signals until the connection breaks (raise) or closes (return)."""

    def _received(self, raw: str | bytes) -> None:
        parsed = _parse(raw)
        if parsed is None:
            log.warning("stop signals: ignored a malformed message")
            return
        if self._deliver is not None:
            self._deliver(*parsed)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await task
        self._deliver = None


class RedisSignals(_Subscriber):
    """PUBLISH/SUBSCRIBE on ``<prefix>:stop`` of the store's Redis."""

    def __init__(self, url: str, prefix: str) -> None:
        super().__init__()
        self.url = url
        self.channel = f"{prefix}:stop"
        self.client_name = f"{prefix}:stop-subscriber"  # Redis client names have no spaces
        self._client: Any = None

    async def open(self, deliver: Deliver) -> None:
        from .redis.connection import connect

        # Named, so an operator sees in CLIENT LIST what the subscribed connection is for.
        self._client = connect(self.url, client_name=self.client_name)
        try:
            await super().open(deliver)
        except BaseException:
            await self._client.aclose()
            self._client = None
            raise

    async def _listen(self) -> None:
        if hasattr(self._client, "get_nodes"):  # a RedisCluster: its pubsub needs the slot map first
            await self._client.initialize()
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.channel)
            self._ready.set()
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    self._received(message["data"])
        finally:
            with suppress(Exception):
                await pubsub.aclose()

    async def publish(self, user_id: str, conversation_id: str) -> None:
        await self._client.publish(self.channel, _payload(user_id, conversation_id))

    async def close(self) -> None:
        await super().close()
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


class PostgresSignals(_Subscriber):
    """LISTEN/NOTIFY on one connection of its own; the channel is named after the schema, so schemas stay apart."""

    def __init__(self, dsn: str, schema: str | None) -> None:
        super().__init__()
        self.dsn = dsn
        # Channel names are identifiers of at most 63 bytes: a digest of the schema keeps any schema name short.
        self.channel = "daehwa_stop_" + hashlib.sha256((schema or "").encode()).hexdigest()[:16]
        self._conn: Any = None
        self._send_lock = asyncio.Lock()  # one connection runs one query at a time

    async def _listen(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.dsn)
        closed = asyncio.Event()
        conn.add_termination_listener(lambda _conn: closed.set())
        self._conn = conn
        try:
            await conn.add_listener(self.channel, lambda _c, _pid, _channel, payload: self._received(payload))
            self._ready.set()
            await closed.wait()
            raise ConnectionError("the LISTEN connection closed")
        finally:
            self._conn = None
            with suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=2)

    async def publish(self, user_id: str, conversation_id: str) -> None:
        conn = self._conn
        if conn is None or conn.is_closed():
            import asyncpg

            conn = await asyncpg.connect(self.dsn)  # the listener is reconnecting: send from a short-lived one
            try:
                await conn.execute("SELECT pg_notify($1, $2)", self.channel, _payload(user_id, conversation_id))
            finally:
                await conn.close()
            return
        async with self._send_lock:
            await conn.execute("SELECT pg_notify($1, $2)", self.channel, _payload(user_id, conversation_id))

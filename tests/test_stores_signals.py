"""Stop signals between server processes sharing a store: the same contract over Redis, PostgreSQL and one process.

Two ``StopSignals`` on one namespace stand for two server processes. Signals reach every process that shares the
namespace, never another namespace, survive a broken subscription, and malformed messages are ignored.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from daehwa.errors import ConfigError
from daehwa.stores.signals import LocalSignals, PostgresSignals, RedisSignals, StopSignals
from tests.api_helpers import wait_for
from tests.test_stores import POSTGRES_URL, REDIS_URL, _postgres_namespace, _redis_namespace

SignalsFactory = Callable[[], StopSignals]


@asynccontextmanager
async def _namespace(backend: str) -> AsyncIterator[SignalsFactory]:
    """``backend``: "redis", "postgres", or a redis+cluster:// URL (the ``backend`` fixture's values)."""
    if backend == "redis" or backend.startswith("redis+cluster://"):
        async with _redis_namespace(REDIS_URL if backend == "redis" else backend) as stores:
            yield lambda: stores().stop_signals()
    else:
        async with _postgres_namespace() as stores:
            yield lambda: stores().stop_signals()


class Inbox:
    def __init__(self) -> None:
        self.got: list[tuple[str, str]] = []

    def __call__(self, user_id: str, conversation_id: str) -> None:
        self.got.append((user_id, conversation_id))

    async def has(self, item: tuple[str, str]) -> bool:
        return item in self.got


@asynccontextmanager
async def opened(signals: StopSignals, inbox: Inbox) -> AsyncIterator[StopSignals]:
    await signals.open(inbox)
    try:
        yield signals
    finally:
        await signals.close()


SHARED = [
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("redis-cluster", id="redis-cluster", marks=pytest.mark.redis),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The backend's name; for the cluster, the session cluster's URL (started on first use)."""
    name = str(request.param)
    return str(request.getfixturevalue("redis_cluster_url")) if name == "redis-cluster" else name


@pytest.mark.parametrize("backend", SHARED, indirect=True)
async def test_a_signal_reaches_every_process_of_the_namespace_and_no_other(backend: str) -> None:
    async with _namespace(backend) as make, _namespace(backend) as make_other:
        first, second, stranger = Inbox(), Inbox(), Inbox()
        async with (
            opened(make(), first) as a,
            opened(make(), second),
            opened(make_other(), stranger) as other,
        ):
            await a.publish("u1", "c1")
            await other.publish("u9", "c9")
            await wait_for(lambda: first.has(("u1", "c1")))
            await wait_for(lambda: second.has(("u1", "c1")))
            await wait_for(lambda: stranger.has(("u9", "c9")))
            await asyncio.sleep(0.2)  # anything misrouted would have arrived by now, as the right ones did
            assert first.got == second.got == [("u1", "c1")]
            assert stranger.got == [("u9", "c9")]


@pytest.mark.parametrize("backend", SHARED, indirect=True)
async def test_malformed_messages_are_ignored(backend: str, caplog: pytest.LogCaptureFixture) -> None:
    async with _namespace(backend) as make:
        inbox = Inbox()
        async with opened(make(), inbox) as signals:
            for raw in ("not json", '{"user": 1, "conversation": "c"}', '["u", "c"]'):
                await _send_raw(signals, raw)
            await signals.publish("u", "c")
            await wait_for(lambda: inbox.has(("u", "c")))
            assert inbox.got == [("u", "c")]
    assert "malformed" in caplog.text


@asynccontextmanager
async def _admin(signals: StopSignals) -> AsyncIterator[Any]:
    """A plain connection to the server behind ``signals`` (Redis client or asyncpg connection), for the test."""
    if isinstance(signals, RedisSignals):
        from daehwa.stores.redis.connection import connect

        client = connect(signals.url)
        try:
            yield client
        finally:
            await client.aclose()
    else:
        import asyncpg

        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            yield conn
        finally:
            await conn.close()


async def _send_raw(signals: StopSignals, raw: str) -> None:
    async with _admin(signals) as admin:
        if isinstance(signals, RedisSignals):
            await admin.publish(signals.channel, raw)
        else:
            assert isinstance(signals, PostgresSignals)
            await admin.execute("SELECT pg_notify($1, $2)", signals.channel, raw)


@pytest.mark.parametrize("backend", SHARED, indirect=True)
async def test_the_subscription_comes_back_after_its_connection_is_killed(backend: str) -> None:
    async with _namespace(backend) as make:
        inbox = Inbox()
        async with opened(make(), inbox) as listener, opened(make(), Inbox()) as sender:
            await _kill_subscription(listener)
            # Signals sent while it reconnects may be lost (best effort); keep sending until one arrives.
            for attempt in range(100):
                await sender.publish("u", f"c{attempt}")
                await asyncio.sleep(0.05)
                if inbox.got:
                    break
            assert inbox.got, "the subscription did not come back"


async def _kill_subscription(signals: StopSignals) -> None:
    async with _admin(signals) as admin:
        if isinstance(signals, RedisSignals):
            import redis.asyncio as aioredis

            # By name: every "process" of the namespace has one, so all of them have to come back. On a cluster
            # the subscriber is on one of the nodes: look at each.
            nodes: list[Any] = [None]
            if hasattr(admin, "get_nodes"):
                await admin.initialize()
                nodes = [(n.host, n.port) for n in admin.get_nodes()]
            killed = 0
            for node in nodes:
                one = admin if node is None else aioredis.Redis(host=node[0], port=node[1], decode_responses=True)
                listed = await one.client_list()
                clients = [c for c in listed if c.get("name") == signals.client_name and c["sub"] != "0"]
                for c in clients:
                    await one.client_kill_filter(_id=c["id"])
                killed += len(clients)
                if node is not None:
                    await one.aclose()
            assert killed, "no subscribed connection with the signals' client name"
        else:
            assert isinstance(signals, PostgresSignals)
            pid = signals._conn.get_server_pid()  # the listening connection of this "process" only
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)


async def test_local_signals_deliver_in_place() -> None:
    inbox = Inbox()
    signals = LocalSignals()
    await signals.publish("u", "before")  # not open yet: nowhere to deliver, no error
    async with opened(signals, inbox):
        await signals.publish("u", "c")
    await signals.publish("u", "after")
    assert inbox.got == [("u", "c")]


async def test_opening_against_an_unreachable_server_fails_at_once() -> None:
    for signals in (RedisSignals("redis://127.0.0.1:1/0", "x"), PostgresSignals("postgresql://127.0.0.1:1/x", None)):
        with pytest.raises(ConfigError, match="DAEHWA_DATABASE_URL"):
            await asyncio.wait_for(signals.open(Inbox()), 10)
        await signals.close()


def test_postgres_channel_names_are_short_identifiers_per_schema() -> None:
    a = PostgresSignals("postgresql://x", "s" * 60).channel
    b = PostgresSignals("postgresql://x", "other").channel
    assert a != b and len(a.encode()) <= 63 and a.isidentifier()

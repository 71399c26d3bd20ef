"""A store that goes down answers 503 naming it (not 500), and requests recover by themselves when it is back.

Runs its own ``redis-server`` on a free loopback port (never the shared one): stopped mid-test, then restarted on the
same port with its append-only file, so the accounts and the conversations stored before the outage are still there.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from argon2 import PasswordHasher

from daehwa.accounts import Accounts
from daehwa.api.app import create_app
from daehwa.config import Settings
from daehwa.errors import StoreUnavailable
from daehwa.providers.registry import ProviderRegistry
from daehwa.services import build_services
from daehwa.stores.outage import store_outage
from tests.api_helpers import free_port
from tests.conftest import FakeProvider, require

BODY = {"model": "fake/echo", "messages": [{"role": "user", "content": "hello"}]}


class OwnRedis:
    """A redis-server of this test's own, restartable on the same port and data directory."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        durable = ["--save", "", "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no"]
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data), *durable],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_timeout=0.5).ping():
                    return
            except redis.exceptions.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # SIGTERM: redis-server flushes its append-only file and exits
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    require(shutil.which("redis-server") is not None, "redis-server is not installed")
    server = OwnRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def outage_client(tmp_path: Path, own_redis: OwnRedis) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    settings = Settings(
        data_dir=tmp_path,
        database_url=own_redis.url,
        default_model="fake",
        filter_output_action="off",
        auth_cache_seconds=0,
        _env_file=None,  # type: ignore[call-arg]
    )
    services = build_services(settings, providers=ProviderRegistry([FakeProvider()]))
    await services.start()
    app = create_app(settings, services)
    accounts = Accounts(services.store, settings, hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    app.state.accounts = accounts
    user = await services.store.create_user("alice", password_hash=None)
    key = (await accounts.create_api_key(user.id, "tests")).secret
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
            c.headers["Authorization"] = f"Bearer {key}"
            yield c, user.id
    finally:
        await services.aclose()


async def test_redis_outage_is_a_503_naming_redis_and_requests_recover(
    outage_client: tuple[httpx.AsyncClient, str], own_redis: OwnRedis
) -> None:
    client, _ = outage_client
    before = await client.post("/v1/chat/completions", json={**BODY, "messages": [{"role": "user", "content": "one"}]})
    assert before.status_code == 200, before.text

    own_redis.stop()
    for body in (BODY, {**BODY, "stream": True}):
        down = await client.post("/v1/chat/completions", json=body)
        assert down.status_code == 503, down.text
        error = down.json()["error"]
        assert error["code"] == "redis_unavailable" and "Redis" in error["message"]
        assert error["type"] == "server_error" and down.headers["retry-after"] == "1"
    assert (await client.get("/api/conversations")).json()["error"]["code"] == "redis_unavailable"

    own_redis.start()
    deadline = time.monotonic() + 15
    while True:  # no restart of daehwa: the client reconnects on the next call
        after = await client.post(
            "/v1/chat/completions", json={**BODY, "messages": [{"role": "user", "content": "two"}]}
        )
        if after.status_code == 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert after.status_code == 200, after.text
    assert after.json()["choices"][0]["message"]["content"] == "echo: two"
    # What was acknowledged before the outage is still stored, next to the turn after it.
    listed = await client.get("/api/conversations", params={"kind": "api"})
    assert listed.status_code == 200, listed.text
    asked = []
    for conversation in listed.json()["data"]:
        detail = (await client.get(f"/api/conversations/{conversation['id']}")).json()
        asked += [m["content"] for m in detail["messages"] if m["role"] == "user"]
    assert sorted(asked) == ["one", "two"]


def test_a_bug_is_not_an_outage() -> None:
    try:
        raise KeyError("x")
    except KeyError as exc:
        assert store_outage(exc) is None
    try:
        raise ConnectionRefusedError(111, "refused")  # not raised inside a store: e.g. an upstream
    except OSError as exc:
        assert store_outage(exc) is None
    assert StoreUnavailable("x").status == 503

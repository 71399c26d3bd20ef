"""A store that goes down answers 503 naming it (not 500), and requests recover by themselves when it is back.

Runs its own ``redis-server`` or PostgreSQL server on a free loopback port (``tests/own_servers.py``; never the shared
ones): stopped mid-test, then restarted on the same port with its data, so the accounts and the conversations stored
before the outage are still there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher

from daehwa.accounts import Accounts
from daehwa.api.app import create_app
from daehwa.config import Settings
from daehwa.errors import StoreUnavailable
from daehwa.providers.registry import ProviderRegistry
from daehwa.services import build_services
from daehwa.stores.outage import store_outage
from tests.conftest import FakeProvider, require
from tests.own_servers import OwnPostgres, OwnRedis, own_server

BODY = {"model": "fake/echo", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("postgres", marks=pytest.mark.postgres)])  # fmt: skip
def own_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OwnRedis | OwnPostgres]:
    """A Redis or PostgreSQL server of this test's own (never the shared one), to stop and start again."""
    kind = OwnRedis if request.param == "redis" else OwnPostgres
    reason = kind.available()
    require(reason is None, str(reason))
    with own_server(request.param, tmp_path) as server:
        yield server


@pytest.fixture
async def outage_client(
    tmp_path: Path, own_store: OwnRedis | OwnPostgres
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    settings = Settings(
        data_dir=tmp_path,
        database_url=own_store.url,
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


async def test_a_store_outage_is_a_503_naming_the_store_and_requests_recover(
    outage_client: tuple[httpx.AsyncClient, str], own_store: OwnRedis | OwnPostgres
) -> None:
    client, _ = outage_client
    before = await client.post("/v1/chat/completions", json={**BODY, "messages": [{"role": "user", "content": "one"}]})
    assert before.status_code == 200, before.text

    own_store.stop()
    code = f"{own_store.name}_unavailable"
    for body in (BODY, {**BODY, "stream": True}):
        down = await client.post("/v1/chat/completions", json=body)
        assert down.status_code == 503, down.text
        error = down.json()["error"]
        assert error["code"] == code and own_store.label in error["message"]
        assert error["type"] == "server_error" and down.headers["retry-after"] == "1"
    assert (await client.get("/api/conversations")).json()["error"]["code"] == code

    own_store.start()
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

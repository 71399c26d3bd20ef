"""Fixtures for the HTTP API tests: the app over the conftest services, API keys, and a real uvicorn on loopback.

In-process requests use ``httpx.ASGITransport``; anything that needs a real connection (SSE disconnects, WebSockets)
uses ``live_server``: a uvicorn server on a free 127.0.0.1 port in the test's own event loop, so the test can read the
store directly while a stream is open.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from argon2 import PasswordHasher
from fastapi import FastAPI

from daehwa.accounts import Accounts
from daehwa.api.app import create_app
from daehwa.config import Settings
from daehwa.services import Services
from daehwa.types import User
from tests.api_helpers import LiveServer, free_port

# Cheap argon2 parameters keep the tests fast; production uses argon2-cffi's defaults (RFC 9106 low-memory profile).
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture
def app(settings: Settings, services: Services) -> FastAPI:
    application = create_app(settings, services)
    application.state.accounts = Accounts(services.store, settings, hasher=FAST_HASHER)
    return application


@pytest.fixture
def accounts(app: FastAPI) -> Accounts:
    return app.state.accounts  # type: ignore[no-any-return]


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield c


@pytest.fixture
async def alice_key(accounts: Accounts, alice: User) -> str:
    return (await accounts.create_api_key(alice.id, "tests")).secret


@pytest.fixture
async def bob_key(accounts: Accounts, bob: User) -> str:
    return (await accounts.create_api_key(bob.id, "tests")).secret


@pytest.fixture
async def live_server(app: FastAPI) -> AsyncIterator[LiveServer]:
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", ws="websockets-sansio"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)

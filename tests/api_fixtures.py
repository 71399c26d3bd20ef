"""Fixtures for the HTTP API tests: the app over the conftest services, API keys, and a real uvicorn on loopback.

In-process requests use ``httpx.ASGITransport``; anything that needs a real connection (SSE disconnects, WebSockets)
uses ``live_server``: a uvicorn server on a free 127.0.0.1 port in the test's own event loop, so the test can read the
store directly while a stream is open.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

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
from tests.fake_upstream import FakeUpstream

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


def _daehwa(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daehwa", *args], env=env, input=stdin, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str, FakeUpstream, Path]]:
    with FakeUpstream(models=("m1",)) as up:
        providers = tmp_path / "providers.toml"
        providers.write_text(f'[providers.up]\ntype = "openai"\nbase_url = "{up.base_url}"\nmodels = ["m1"]\n')
        port = free_port()
        env = {
            **os.environ,
            "DAEHWA_DATA_DIR": str(tmp_path),
            "DAEHWA_DATABASE_URL": f"sqlite:///{tmp_path / 'd.db'}",
            "DAEHWA_PROVIDERS_FILE": str(providers),
            "DAEHWA_DEFAULT_MODEL": "up/m1",
            "DAEHWA_PORT": str(port),
            "DAEHWA_LOG_LEVEL": "info",
        }
        created = _daehwa(env, "users", "create", "sdkuser", "--password-stdin", stdin="a long password\n")
        assert created.returncode == 0, created.stderr
        keys = _daehwa(env, "keys", "create", "--user", "sdkuser")
        assert keys.returncode == 0, keys.stderr
        key = keys.stdout.strip().splitlines()[-1]
        assert key.startswith("dh-")
        log = tmp_path / "serve.log"
        with log.open("w") as sink:
            proc = subprocess.Popen([sys.executable, "-m", "daehwa", "serve"], env=env, stdout=sink, stderr=sink)
            try:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert proc.poll() is None, log.read_text()
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.1)
                yield f"http://127.0.0.1:{port}/v1", key, up, log
            finally:
                proc.terminate()
                proc.wait(15)

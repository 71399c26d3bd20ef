"""A store that goes down answers 503 naming it (not 500), and requests recover by themselves when it is back.

Runs its own ``redis-server`` or PostgreSQL server on a free loopback port (``tests/own_servers.py``; never the shared
ones): stopped mid-test, then restarted on the same port with its data, so the accounts and the conversations stored
before the outage are still there.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
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
from daehwa.stores.base import ConversationQuery, Store
from daehwa.stores.outage import store_outage
from daehwa.types import MessageStatus
from tests.conftest import FakeProvider, Script, require
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


@dataclass
class Served:
    """daehwa in this process on the test's own store: an API client (signed in as ``user_id``) and its pieces."""

    client: httpx.AsyncClient
    user_id: str
    store: Store
    provider: FakeProvider


@pytest.fixture
async def served(tmp_path: Path, own_store: OwnRedis | OwnPostgres) -> AsyncIterator[Served]:
    settings = Settings(
        data_dir=tmp_path,
        database_url=own_store.url,
        default_model="fake",
        filter_output_action="off",
        auth_cache_seconds=0,
        _env_file=None,  # type: ignore[call-arg]
    )
    provider = FakeProvider()
    services = build_services(settings, providers=ProviderRegistry([provider]))
    await services.start()
    app = create_app(settings, services)
    accounts = Accounts(services.store, settings, hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    app.state.accounts = accounts
    user = await services.store.create_user("alice", password_hash=None)
    key = (await accounts.create_api_key(user.id, "tests")).secret
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
            c.headers["Authorization"] = f"Bearer {key}"
            yield Served(c, user.id, services.store, provider)
    finally:
        await services.aclose()


async def test_a_store_outage_is_a_503_naming_the_store_and_requests_recover(
    served: Served, own_store: OwnRedis | OwnPostgres
) -> None:
    client = served.client
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


WORDS = [f"w{i} " for i in range(12)]


async def _streamed(client: httpx.AsyncClient, tag: str) -> str:
    """How one streamed completion ended: "ok" ([DONE], no error), "503 <code>", "stream <code>" (an error event
    after the 200), or anything else, which is a failure that is not clear."""
    body = {**BODY, "stream": True, "messages": [{"role": "user", "content": tag}]}
    try:
        r = await client.post("/v1/chat/completions", json=body)
    except Exception as exc:  # the app raised through the transport: the stream was cut
        return f"cut {type(exc).__name__}"
    if r.status_code != 200:
        return f"{r.status_code} {r.json()['error']['code']}"
    text, done = "", False
    for line in r.text.splitlines():
        if line == "data: [DONE]":
            done = True
        elif line.startswith("data: "):
            chunk = json.loads(line[6:])
            if "error" in chunk:
                return f"stream {chunk['error']['code']}"
            text += "".join(c["delta"].get("content") or "" for c in chunk["choices"])
    return "ok" if done and text == "".join(WORDS) else f"incomplete {text!r}"


async def test_a_store_restart_under_load_fails_clearly_and_loses_no_acknowledged_message(
    served: Served, own_store: OwnRedis | OwnPostgres
) -> None:
    """Streams keep coming while the store stops and starts again: each fails with a clear error naming the store
    (a 503, or an error event once streaming), those after the restart succeed with no restart of daehwa, and every
    stream acknowledged with [DONE] is stored, question and whole reply."""
    served.provider.enqueue(*[Script(chunks=WORDS, delay=0.02) for _ in range(3000)])
    code = f"{own_store.name}_unavailable"
    results: list[tuple[str, str, str]] = []  # (tag, how it ended, phase)
    phase = "before"
    under_way = asyncio.Event()

    async def user(n: int) -> None:
        i, ok_after = 0, 0
        while ok_after < 3:
            tag = f"u{n}-{i}"
            i += 1
            seen_phase = phase
            ended = await _streamed(served.client, tag)
            results.append((tag, ended, seen_phase))
            if sum(e == "ok" for _, e, _ in results) >= 3:
                under_way.set()
            if phase == "after" and seen_phase == "after":
                ok_after = ok_after + 1 if ended == "ok" else 0
            if phase != "after" or ended != "ok":
                await asyncio.sleep(0.05)

    users = [asyncio.ensure_future(user(n)) for n in range(12)]
    try:
        await asyncio.wait_for(under_way.wait(), 30)  # some streams acknowledged, others in flight
        phase = "down"
        await asyncio.to_thread(own_store.stop)
        await asyncio.sleep(1.5)
        await asyncio.to_thread(own_store.start)
        phase = "after"
        await asyncio.wait_for(asyncio.gather(*users), 60)  # each user: three streams in a row fine after it
    finally:
        for task in users:
            task.cancel()
        await asyncio.gather(*users, return_exceptions=True)  # nothing of this test runs on into the teardown

    clear = {"ok", f"503 {code}", f"stream {code}"}
    assert {ended for _, ended, _ in results} <= clear, sorted({e for _, e, _ in results} - clear)
    assert any(ended != "ok" for _, ended, _ in results), "the outage was never seen"
    assert any(ended == "ok" and seen == "before" for _, ended, seen in results)
    acknowledged = {tag for tag, ended, _ in results if ended == "ok"}
    stored_replies: dict[str, str] = {}
    for conversation in await served.store.list_conversations(
        served.user_id, ConversationQuery(kind="api", limit=10_000)
    ):
        messages = await served.store.list_messages(served.user_id, conversation.id) or []
        asked = [m.content for m in messages if m.role == "user"]
        replies = [m for m in messages if m.role == "assistant" and m.status is MessageStatus.COMPLETE]
        if asked and replies:
            stored_replies[asked[0]] = replies[-1].content
    lost = sorted(tag for tag in acknowledged if stored_replies.get(tag) != "".join(WORDS))
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged streams are not stored: {lost[:5]}"


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

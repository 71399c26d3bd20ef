"""Unstorable characters (NUL, lone surrogates): refused as 400 ``invalid_text`` on every route, transport and store;
dropped from model output (issue 15)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import websockets
from argon2 import PasswordHasher

from daehwa.accounts import Accounts
from daehwa.api.app import create_app
from daehwa.config import Settings
from daehwa.errors import InvalidRequest
from daehwa.providers.registry import ProviderRegistry
from daehwa.services import Services, build_services
from daehwa.text import check_json, check_text, drop_unstorable, invalid_char
from daehwa.types import User
from tests.api_helpers import LiveServer, auth
from tests.conftest import FakeProvider, Script
from tests.test_stores import _postgres_namespace, _redis_namespace

pytest_plugins = ["tests.api_fixtures"]

FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
LONE = ["\ud800x", "x\udbff", "\udc00", "a\udfffb"]


# -- the module -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", LONE)
def test_a_lone_surrogate_is_named_with_its_code_point(text: str) -> None:
    what = invalid_char(text)
    assert what is not None and "lone surrogate" in what and f"U+{ord(text.strip('abx')):04X}" in what
    with pytest.raises(InvalidRequest) as info:
        check_text("content", text)
    assert info.value.code == "invalid_text" and info.value.param == "content" and info.value.status == 400


def test_real_text_passes_even_astral_characters() -> None:
    for text in ("안녕하세요", "emoji 😀 (a surrogate pair in JSON)", json.loads('"\\ud83d\\ude00"'), ""):
        assert invalid_char(text) is None
        check_text("content", text)
    assert invalid_char("a\x00b") == "a NUL character (U+0000)"


def test_check_json_names_the_field_and_its_path() -> None:
    with pytest.raises(InvalidRequest) as info:
        check_json(
            {"model": "m", "messages": [{"role": "user", "content": "ok"}, {"role": "user", "content": "\ud800"}]}
        )
    assert info.value.param == "messages" and "messages.1.content" in info.value.message
    with pytest.raises(InvalidRequest) as info:
        check_json({"variables": {"\udc00": "key, not value"}})
    assert info.value.param == "variables"
    check_json({"n": 1, "ok": [True, None, 2.5, "fine"]})


def test_model_output_loses_only_the_unstorable_characters() -> None:
    assert drop_unstorable("he\ud800llo\x00 wor\udfffld 😀") == "hello world 😀"
    assert drop_unstorable("plain") == "plain"


# -- every route, every store -----------------------------------------------------------------------------------
def raw_json(body: Any) -> bytes:
    """A request body with JSON escapes for lone surrogates (httpx's json= would have to encode them as UTF-8)."""
    return json.dumps(body).encode()


@asynccontextmanager
async def api(settings: Settings, backend: str, provider: FakeProvider) -> AsyncIterator[tuple[Any, Services]]:
    if backend == "sqlite":
        services = build_services(settings, providers=ProviderRegistry([provider]))
        await services.start()
        try:
            yield create_app(settings, services), services
        finally:
            await services.aclose()
        return
    namespace = _redis_namespace() if backend == "redis" else _postgres_namespace()
    async with namespace as stores:
        services = build_services(settings, store=stores(), providers=ProviderRegistry([provider]))
        await services.start()
        try:
            yield create_app(settings, services), services
        finally:
            await services.aclose()


BACKENDS = [
    "sqlite",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("postgres", marks=pytest.mark.postgres),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("text", ["\ud800x", "a\u0000b"])
async def test_unstorable_text_in_any_field_is_a_400_and_nothing_is_stored(
    settings: Settings, backend: str, text: str
) -> None:
    provider = FakeProvider()
    async with api(settings, backend, provider) as (app, services):
        app.state.accounts = Accounts(services.store, settings, hasher=FAST_HASHER)
        user = await services.store.create_user("erin", password_hash=None)
        key = (await app.state.accounts.create_api_key(user.id, "tests")).secret
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            r = await c.post("/api/conversations", json={}, headers=auth(key))  # auto title: the first message names it
            cid = r.json()["conversation"]["id"]
            attempts: list[tuple[str, str, Any, str]] = [
                ("POST", f"/api/conversations/{cid}/messages", {"content": text}, "content"),
                ("POST", f"/api/conversations/{cid}/messages", {"content": text, "stream": True}, "content"),
                ("POST", f"/api/conversations/{cid}/edit", {"content": text}, "content"),
                ("POST", "/api/conversations", {"title": text}, "title"),
                ("POST", "/api/conversations", {"variables": {"name": text}}, "variables"),
                ("PATCH", f"/api/conversations/{cid}", {"title": text}, "title"),
                ("POST", "/api/chat", {"messages": [{"role": "user", "content": text}]}, "messages"),
                (
                    "POST",
                    "/v1/chat/completions",
                    {
                        "model": "fake",
                        "messages": [{"role": "system", "content": "hi"}, {"role": "user", "content": text}],
                    },
                    "messages",
                ),
                (
                    "POST",
                    "/v1/chat/completions",
                    {"model": "fake", "messages": [{"role": "user", "content": text}], "stream": True},
                    "messages",
                ),
                ("POST", "/api/auth/login", {"username": text, "password": "pw"}, "username"),
                ("POST", "/api/keys", {"name": text}, "name"),
            ]
            for method, url, body, param in attempts:
                r = await c.request(
                    method, url, content=raw_json(body), headers={**auth(key), "content-type": "application/json"}
                )
                assert r.status_code == 400, (url, body, r.text)
                error = r.json()["error"]
                assert (error["code"], error["param"]) == ("invalid_text", param), (url, error)
            assert not provider.requests
            conversations = await services.store.list_conversations(user.id)
            assert [c.id for c in conversations] == [cid]
            assert conversations[0].title != text
            assert await services.store.list_messages(user.id, cid) == []


async def test_a_lone_surrogate_in_a_websocket_frame_is_an_error_frame(
    live_server: LiveServer, alice_key: str, alice: User, services: Services, fake_provider: FakeProvider
) -> None:
    async with websockets.connect(f"{live_server.ws_url}/api/ws?api_key={alice_key}") as ws:

        async def answer(frame: dict[str, Any]) -> dict[str, Any]:
            await ws.send(json.dumps(frame))  # json.dumps escapes the surrogate, as a browser's JSON.stringify does
            return json.loads(await asyncio.wait_for(ws.recv(), 10))  # type: ignore[no-any-return]

        for frame, param in [
            ({"type": "message", "content": "\ud800x"}, "content"),  # the first message of a new conversation
            ({"type": "message", "content": "hi", "title": "\udfff"}, "title"),
            ({"type": "message", "content": "hi", "variables": {"name": "\ud800"}}, "variables"),
        ]:
            error = await answer(frame)
            assert error["type"] == "error" and error["error"]["code"] == "invalid_text", error
            assert error["error"]["param"] == param
        fake_provider.enqueue(Script(chunks=["still ", "here"]))
        assert (await answer({"type": "message", "content": "hi"}))["type"] == "start"  # the socket still works
    assert await services.store.list_conversations(alice.id) != []
    assert all(c.title == "hi" for c in await services.store.list_conversations(alice.id))


@pytest.mark.parametrize("backend", BACKENDS)
async def test_lone_surrogates_from_the_model_are_dropped(settings: Settings, backend: str) -> None:
    provider = FakeProvider()
    provider.enqueue(Script(chunks=["he\ud800llo", "\udc00", " there\udfff"]))
    async with api(settings, backend, provider) as (app, services):
        app.state.accounts = Accounts(services.store, settings, hasher=FAST_HASHER)
        user = await services.store.create_user("erin", password_hash=None)
        key = (await app.state.accounts.create_api_key(user.id, "tests")).secret
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            cid = (await c.post("/api/conversations", json={}, headers=auth(key))).json()["conversation"]["id"]
            r = await c.post(f"/api/conversations/{cid}/messages", json={"content": "hi"}, headers=auth(key))
            assert r.status_code == 200 and r.json()["message"]["content"] == "hello there"
        messages = await services.store.list_messages(user.id, cid)
        assert messages is not None and messages[-1].content == "hello there"

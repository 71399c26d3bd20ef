"""Every numeric parameter has one bound (``daehwa.types.PARAM_BOUNDS``), enforced the same way on every route, with
the bound in the error: REST, SSE, WebSocket, ``/api/chat`` and ``/v1``, and the pipeline itself (issue 15)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets

from daehwa.chat import TurnRequest
from daehwa.errors import InvalidRequest
from daehwa.services import Services
from daehwa.types import INTEGER_PARAMS, PARAM_BOUNDS, GenerationParams, User
from tests.api_helpers import LiveServer, auth
from tests.conftest import FakeProvider

pytest_plugins = ["tests.api_fixtures"]

CONVERSATION_PARAMS = ["max_tokens", "temperature", "top_p", "seed", "presence_penalty", "frequency_penalty"]
V1_PARAMS = [*CONVERSATION_PARAMS, "n", "max_completion_tokens"]


def bad_values(name: str) -> list[str]:
    """Raw JSON for values just outside the bound, far outside it, NaN and the infinities."""
    low, high = PARAM_BOUNDS[name]
    step = 1 if name in INTEGER_PARAMS else 0.5
    return [json.dumps(low - step), json.dumps(high + step), "1e30", "-1e30", "NaN", "Infinity", "-Infinity"]


def with_param(body: dict[str, Any], name: str, raw: str) -> bytes:
    """``body`` as JSON with ``name`` set to the raw JSON ``raw`` (json.dumps would not write NaN the same way)."""
    text = json.dumps(body)
    return (text[:-1] + f', "{name}": {raw}' + "}").encode()


def assert_bound_error(error: dict[str, Any], name: str, raw: str) -> None:
    low, high = PARAM_BOUNDS[name]
    assert error["param"] == name, (raw, error)
    assert f"{name} must be between {low} and {high}" in error["message"], (raw, error)


async def new_conversation(client: httpx.AsyncClient, key: str) -> str:
    r = await client.post("/api/conversations", json={}, headers=auth(key))
    return str(r.json()["conversation"]["id"])


@pytest.mark.parametrize("stream", [False, True], ids=["rest", "sse"])
@pytest.mark.parametrize("name", CONVERSATION_PARAMS)
async def test_conversation_routes_refuse_out_of_range_values(
    client: httpx.AsyncClient, alice_key: str, alice: User, services: Services, fake_provider: FakeProvider,
    name: str, stream: bool,
) -> None:  # fmt: skip
    cid = await new_conversation(client, alice_key)
    headers = {**auth(alice_key), "content-type": "application/json"}
    for raw in bad_values(name):
        for url, body in [
            (f"/api/conversations/{cid}/messages", {"content": "hi", "stream": stream}),
            ("/api/chat", {"messages": [{"role": "user", "content": "hi"}], "stream": stream}),
        ]:
            r = await client.post(url, content=with_param(body, name, raw), headers=headers)
            assert r.status_code == 400, (url, raw, r.text)
            assert_bound_error(r.json()["error"], name, raw)
    assert not fake_provider.requests
    assert await services.store.list_messages(alice.id, cid) == []


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("name", V1_PARAMS)
async def test_v1_refuses_out_of_range_values(
    client: httpx.AsyncClient, alice_key: str, fake_provider: FakeProvider, name: str, stream: bool
) -> None:
    headers = {**auth(alice_key), "content-type": "application/json"}
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    for raw in bad_values(name):
        r = await client.post("/v1/chat/completions", content=with_param(body, name, raw), headers=headers)
        assert r.status_code == 400, (raw, r.text)
        assert r.json()["error"]["type"] == "invalid_request_error"
        assert_bound_error(r.json()["error"], name, raw)
    assert not fake_provider.requests


async def test_v1_max_tokens_1e30_is_refused_with_the_bound(client: httpx.AsyncClient, alice_key: str) -> None:
    """The issue's case, as the official client would send it."""
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e30}
    r = await client.post("/v1/chat/completions", json=body, headers=auth(alice_key))
    assert r.status_code == 400
    assert r.json()["error"]["message"].startswith("max_tokens must be between 1 and 1000000")


@pytest.mark.parametrize("name", CONVERSATION_PARAMS)
async def test_websocket_refuses_out_of_range_values(
    live_server: LiveServer, alice_key: str, fake_provider: FakeProvider, name: str
) -> None:
    async with websockets.connect(f"{live_server.ws_url}/api/ws?api_key={alice_key}") as ws:
        for raw in bad_values(name):
            await ws.send(with_param({"type": "message", "content": "hi"}, name, raw).decode())
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert frame["type"] == "error", (raw, frame)
            assert_bound_error(frame["error"], name, raw)
    assert not fake_provider.requests


@pytest.mark.parametrize("name", [*CONVERSATION_PARAMS, "n"])
async def test_the_pipeline_checks_the_bounds_whoever_calls_it(
    services: Services, alice: User, fake_provider: FakeProvider, name: str
) -> None:
    """The CLI (and any caller that builds GenerationParams itself) gets the same error."""
    low, high = PARAM_BOUNDS[name]
    for value in (low - 1, high + 1, float("nan"), float("inf")):
        params = GenerationParams(**{name: value})  # type: ignore[arg-type]
        with pytest.raises(InvalidRequest, match=f"{name} must be between {low} and {high}") as info:
            await services.chat.run(TurnRequest(user=alice, content="hi", params=params))
        assert info.value.param == name
    assert not fake_provider.requests
    assert await services.store.list_conversations(alice.id) == []


@pytest.mark.parametrize("name", CONVERSATION_PARAMS)
async def test_the_bounds_themselves_are_accepted(
    client: httpx.AsyncClient, alice_key: str, fake_provider: FakeProvider, name: str
) -> None:
    low, high = PARAM_BOUNDS[name]
    for value in (low, high):
        r = await client.post("/api/chat", json={"messages": [{"role": "user", "content": "hi"}], name: value},
                              headers=auth(alice_key))  # fmt: skip
        if name == "max_tokens" and value == high:
            # Within the bound, but a reply budget this large leaves no room for the context: the context step's own
            # 400, not the bound's.
            assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded", r.text
            continue
        assert r.status_code == 200, (value, r.text)
    assert len(fake_provider.requests) == (1 if name == "max_tokens" else 2)


def test_the_docs_table_is_the_bounds_table() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text(encoding="utf-8")
    table = text.split("<!-- param-bounds -->")[1].split("<!-- /param-bounds -->")[0]
    rows = [line.split("|")[1:4] for line in table.strip().splitlines()[2:]]
    documented = {name.strip().strip("`"): (int(low), int(high)) for name, low, high in rows}
    assert documented == dict(PARAM_BOUNDS)

"""``/v1``: OpenAI's wire format, in process and with the official ``openai`` SDK against a real ``daehwa serve``.

The subprocess test configures a fake OpenAI-compatible upstream (``tests/fake_upstream.py``) as the model through a
providers file, creates a user and a key with the CLI, and talks to the server only as an SDK user would.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from daehwa.config import Settings
from daehwa.services import Services
from daehwa.stores import ConversationQuery
from daehwa.types import MessageStatus, User
from tests.api_helpers import auth
from tests.conftest import FakeProvider, Script
from tests.fake_upstream import FakeUpstream, Reply
from tests.test_api_stream import _server
from tests.test_stores import _redis_namespace

pytest_plugins = ["tests.api_fixtures"]

ERROR_KEYS = {"message", "type", "param", "code"}


# -- in process ------------------------------------------------------------------------------------------------
async def test_completion_shape_and_logging(
    client: httpx.AsyncClient, alice_key: str, alice: User, services: Services, fake_provider: FakeProvider
) -> None:
    fake_provider.enqueue(Script(chunks=["Hi", "!"]))
    r = await client.post(
        "/v1/chat/completions",
        json={
            "model": "fake",
            "messages": [{"role": "developer", "content": "Be nice."}, {"role": "user", "content": "hello"}],
            "temperature": 0.2,
            "seed": 7,
            "stop": "END",
            "user": "end-user-1",
            "response_format": {"type": "json_object"},
            "presence_penalty": 0.5,
        },
        headers=auth(alice_key),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi!", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    sent = fake_provider.requests[-1]
    assert [(m.role, m.content) for m in sent.messages] == [("system", "Be nice."), ("user", "hello")]
    assert sent.params.seed == 7 and sent.params.stop == ("END",) and sent.params.user == "end-user-1"
    assert sent.params.response_format == {"type": "json_object"} and sent.params.presence_penalty == 0.5
    [logged] = await services.store.list_conversations(alice.id, ConversationQuery(kind="api"))
    messages = await services.store.list_messages(alice.id, logged.id)
    assert [m.content for m in messages] == ["hello", "Hi!"]


async def test_stream_chunks_usage_and_done(
    client: httpx.AsyncClient, alice_key: str, fake_provider: FakeProvider
) -> None:
    fake_provider.enqueue(Script(chunks=["a" * 60, "b" * 60]))
    r = await client.post(
        "/v1/chat/completions",
        json={
            "model": "fake",
            "messages": [{"role": "user", "content": "x"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        headers=auth(alice_key),
    )
    lines = [line for line in r.text.split("\n\n") if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and "usage" in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "a" * 60 + "b" * 60
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "fake", "messages": []}, 400, "messages"),
        ({"model": "fake", "messages": [{"role": "robot", "content": "x"}]}, 400, "messages.0.role"),
        ({"model": "fake", "messages": [{"role": "user", "content": 3}]}, 400, "messages.0.content"),
        ({"messages": [{"role": "user", "content": "x"}]}, 400, "model"),
        ({"model": "nope/x", "messages": [{"role": "user", "content": "x"}]}, 404, "model"),
        ({"model": "fake", "messages": [{"role": "user", "content": "x"}], "n": 99}, 400, "n"),
        ({"model": "fake", "messages": [{"role": "user", "content": "x"}], "temperature": 3}, 400, "temperature"),
        (
            {"model": "fake", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
            400,
            "tools",
        ),
        ({"model": "fake", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"1": 2}}, 400, "logit_bias"),
        ({"model": "fake", "messages": [{"role": "assistant", "content": "x"}]}, 400, "messages"),
    ],
)
async def test_bad_requests_are_openai_errors(
    client: httpx.AsyncClient, alice_key: str, alice: User, services: Services, body: dict, status: int, param: str
) -> None:
    r = await client.post("/v1/chat/completions", json=body, headers=auth(alice_key))
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == ERROR_KEYS and error["param"] == param and error["message"]
    assert (
        await services.store.list_conversations(alice.id, ConversationQuery(kind="api")) == []
    )  # nothing stored half-way


async def test_upstream_failure_is_an_openai_error_not_a_canned_reply(
    client: httpx.AsyncClient, alice_key: str, alice: User, services: Services, fake_provider: FakeProvider
) -> None:
    from daehwa.errors import ProviderError

    fake_provider.enqueue(Script(chunks=[], error=ProviderError("upstream exploded", retryable=False)))
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
    r = await client.post("/v1/chat/completions", json=body, headers=auth(alice_key))
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "upstream_error"
    assert "늦어지고" not in r.text
    logged = await services.store.list_conversations(alice.id, ConversationQuery(kind="api"))
    messages = await services.store.list_messages(alice.id, logged[0].id) or []
    assert [m.content for m in messages if m.role == "user"] == ["hi"]  # the request is still logged


async def test_n_choices(client: httpx.AsyncClient, alice_key: str) -> None:
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "fake", "messages": [{"role": "user", "content": "x"}], "n": 1},
        headers=auth(alice_key),
    )
    assert r.status_code == 200 and len(r.json()["choices"]) == 1


async def test_v1_auth_errors(client: httpx.AsyncClient, alice_key: str, accounts) -> None:  # type: ignore[no-untyped-def]
    body = {"model": "fake", "messages": [{"role": "user", "content": "x"}]}
    for headers in ({}, {"Authorization": "Bearer dh-nope"}, {"Authorization": "Basic abc"}):
        r = await client.post("/v1/chat/completions", json=body, headers=headers)
        assert r.status_code == 401 and set(r.json()["error"]) == ERROR_KEYS
    r = await client.get("/v1/models", headers=auth(alice_key))
    assert r.json()["object"] == "list" and {"id": "fake/echo"}.items() <= r.json()["data"][0].items()
    r = await client.get("/v1/models/nope", headers=auth(alice_key))
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


# -- the official SDK against a real `daehwa serve` --------------------------------------------------------------
async def test_openai_sdk_against_daehwa_serve(served: tuple[str, str, FakeUpstream, Path]) -> None:
    base_url, key, up, log = served
    up.enqueue(Reply("Hello from upstream", chunks=["Hello ", "from ", "upstream"]))
    async with AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0) as client:
        completion = await client.chat.completions.create(
            model="up/m1", messages=[{"role": "user", "content": "hi"}], temperature=0.3
        )
        assert completion.choices[0].message.content == "Hello from upstream"
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage is not None and completion.usage.total_tokens > 0
        assert up.last.json["messages"][-1] == {"role": "user", "content": "hi"}

        up.enqueue(Reply("Streaming works fine", chunks=["Streaming ", "works ", "fine"]))
        stream = await client.chat.completions.create(
            model="up/m1",
            messages=[{"role": "user", "content": "stream please"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        parts, usage = [], None
        async for chunk in stream:
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
            if chunk.usage is not None:
                usage = chunk.usage
        assert "".join(parts) == "Streaming works fine" and usage is not None and usage.completion_tokens > 0

        models = await client.models.list()
        assert "up/m1" in [m.id for m in models.data]

        with pytest.raises(openai.NotFoundError) as info:
            await client.chat.completions.create(model="nope/x", messages=[{"role": "user", "content": "x"}])
        assert info.value.body["code"] == "model_not_found"  # type: ignore[index]
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="up/m1", messages=[{"role": "wizard", "content": "x"}])  # type: ignore[misc]

    async with AsyncOpenAI(base_url=base_url, api_key="dh-not-a-key", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError):
            await bad.models.list()
    assert key not in log.read_text()  # the key never reaches the server's log


# -- stopping a non-streamed completion ------------------------------------------------------------------------------
async def _api_conversation(services: Services, user: User) -> str:
    [logged] = await services.store.list_conversations(user.id, ConversationQuery(kind="api"))
    return logged.id


async def test_a_non_streamed_completion_is_an_active_turn_that_stop_ends(
    client: httpx.AsyncClient, alice_key: str, alice: User, services: Services, fake_provider: FakeProvider
) -> None:
    fake_provider.enqueue(Script(chunks=["Once upon a time"], hang=True))
    body = {"model": "fake", "messages": [{"role": "user", "content": "a story"}]}
    pending = asyncio.create_task(client.post("/v1/chat/completions", json=body, headers=auth(alice_key)))
    await asyncio.wait_for(fake_provider.started.wait(), 5)
    await asyncio.sleep(0.1)  # the first chunk reaches the pipeline
    cid = await _api_conversation(services, alice)
    r = await client.post(f"/api/conversations/{cid}/stop", headers=auth(alice_key))
    assert r.json() == {"stopped": True}

    response = await asyncio.wait_for(pending, 5)
    assert response.status_code == 200, response.text
    completion = response.json()
    assert completion["choices"][0]["message"]["content"] == "Once upon a time"
    assert completion["choices"][0]["finish_reason"] == "stop" and completion["usage"] is None
    reply = (await services.store.list_messages(alice.id, cid) or [])[-1]
    assert reply.status is MessageStatus.INTERRUPTED and reply.content == "Once upon a time"
    assert completion["id"] == f"chatcmpl-{reply.id}" and fake_provider.cancelled == 1


@pytest.mark.redis
async def test_a_non_streamed_completion_is_stopped_from_another_server_process(settings: Settings) -> None:
    async with _redis_namespace() as stores:
        model_a, model_b = FakeProvider(), FakeProvider()
        async with _server(settings, stores(), model_a) as a, _server(settings, stores(), model_b) as b:
            services = a.app.state.services
            user = await services.store.create_user("carol", password_hash=None)
            key = (await a.app.state.accounts.create_api_key(user.id, "tests")).secret
            model_a.enqueue(Script(chunks=["Once upon a time"], hang=True))
            body = {"model": "fake", "messages": [{"role": "user", "content": "a story"}]}
            async with httpx.AsyncClient(timeout=10) as c:
                pending = asyncio.create_task(c.post(f"{a.base_url}/v1/chat/completions", json=body, headers=auth(key)))
                await asyncio.wait_for(model_a.started.wait(), 5)
                await asyncio.sleep(0.1)
                cid = await _api_conversation(services, user)
                # Process B does not run this turn: it reaches process A through the store's stop signals.
                r = await c.post(f"{b.base_url}/api/conversations/{cid}/stop", headers=auth(key))
                assert r.json() == {"stopped": True}
                response = await asyncio.wait_for(pending, 5)
            assert response.json()["choices"][0]["message"]["content"] == "Once upon a time"
            reply = (await services.store.list_messages(user.id, cid) or [])[-1]
            assert reply.status is MessageStatus.INTERRUPTED and model_a.cancelled == 1 and not model_b.requests

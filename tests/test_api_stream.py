"""Streaming over SSE and WebSocket against a real uvicorn on loopback: events, stop, and disconnects mid-reply.

The partial reply must be stored as ``interrupted`` with exactly the text the client had received.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import uvicorn
import websockets

from daehwa.api.app import create_app
from daehwa.config import Settings
from daehwa.providers.registry import ProviderRegistry
from daehwa.services import Services, build_services
from daehwa.stores import Store
from daehwa.types import MessageStatus, StoredMessage, User
from tests.api_helpers import LiveServer, auth, free_port, wait_for
from tests.conftest import FakeProvider, Script
from tests.test_stores import _postgres_namespace, _redis_namespace

pytest_plugins = ["tests.api_fixtures"]

# Long chunks: the output filter holds back a short tail (a banned word could straddle chunks), so short ones would
# all be held while the model hangs.
HANGING = Script(chunks=["Once upon a time, " * 6, "there lived a fox. " * 6, "The end is near. " * 6], hang=True)


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, dict]]:
    event = None
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            assert event is not None
            yield event, json.loads(line[6:])
            event = None


async def new_conversation(base: str, key: str) -> str:
    async with httpx.AsyncClient(base_url=base) as c:
        r = await c.post("/api/conversations", json={}, headers=auth(key))
        return r.json()["conversation"]["id"]


async def stream_then_stop(stream_base: str, stop_base: str, cid: str, key: str) -> list[tuple[str, dict]]:
    """Stream a reply from ``stream_base`` and, at its second event, stop it through ``stop_base``; all the events."""
    events = []
    async with (
        httpx.AsyncClient() as c,
        c.stream(
            "POST",
            f"{stream_base}/api/conversations/{cid}/messages",
            json={"content": "story", "stream": True},
            headers=auth(key),
        ) as r,
    ):
        async for kind, data in sse_events(r):
            events.append((kind, data))
            if kind == "delta" and len(events) == 2:
                stop = await c.post(f"{stop_base}/api/conversations/{cid}/stop", headers=auth(key))
                assert stop.json() == {"stopped": True}
    return events


async def stored_reply(services: Services, user: User, cid: str) -> StoredMessage | None:
    messages = await services.store.list_messages(user.id, cid) or []
    replies = [m for m in messages if m.role == "assistant"]
    return replies[-1] if replies else None


async def settled(services: Services, user: User, cid: str) -> StoredMessage:
    async def check() -> StoredMessage | None:
        reply = await stored_reply(services, user, cid)
        return reply if reply is not None and reply.status != MessageStatus.STREAMING else None

    return await wait_for(check)


async def test_sse_stream_events(live_server: LiveServer, alice_key: str, fake_provider: FakeProvider) -> None:
    cid = await new_conversation(live_server.base_url, alice_key)
    fake_provider.enqueue(Script(chunks=["Hello ", "there ", "friend."]))
    async with (
        httpx.AsyncClient(base_url=live_server.base_url) as c,
        c.stream(
            "POST",
            f"/api/conversations/{cid}/messages",
            json={"content": "hi", "stream": True},
            headers=auth(alice_key),
        ) as r,
    ):
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [e async for e in sse_events(r)]
    kinds = [k for k, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and "delta" in kinds
    start, done = events[0][1], events[-1][1]
    text = "".join(d["text"] for k, d in events if k == "delta")
    assert text == "Hello there friend."
    assert done["message"]["id"] == start["message_id"] and done["message"]["content"] == text
    assert done["message"]["status"] == "complete" and done["usage"]["total_tokens"] > 0


async def test_sse_disconnect_mid_reply_stores_partial(
    live_server: LiveServer,
    alice_key: str,
    alice: User,
    services: Services,
    fake_provider: FakeProvider,
    settings: Settings,
) -> None:
    settings.stream_resume_seconds = 0  # no grace for a resume: the turn stops when its client leaves
    cid = await new_conversation(live_server.base_url, alice_key)
    fake_provider.enqueue(HANGING)
    received = ""
    async with (
        httpx.AsyncClient(base_url=live_server.base_url) as c,
        c.stream(
            "POST",
            f"/api/conversations/{cid}/messages",
            json={"content": "story", "stream": True},
            headers=auth(alice_key),
        ) as r,
    ):
        async for kind, data in sse_events(r):
            if kind == "delta":
                received += data["text"]
            if received:
                break  # leave mid-reply: the model is still "generating" (hangs)
    reply = await settled(services, alice, cid)
    assert reply.status == MessageStatus.INTERRUPTED
    assert reply.content.startswith(received) and reply.content
    await wait_for(lambda: _true(fake_provider.cancelled == 1))  # generation upstream was cancelled too


async def _true(value: bool) -> bool:
    return value


async def sse_events_with_ids(response: httpx.Response) -> AsyncIterator[tuple[str, dict, int | None]]:
    event, event_id = None, None
    async for line in response.aiter_lines():
        if line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            assert event is not None
            yield event, json.loads(line[6:]), event_id
            event, event_id = None, None


async def resume(
    base: str, cid: str, mid: str, key: str, *, after: int = 0, **headers: str
) -> list[tuple[str, dict, int | None]]:
    """Resume a reply: all its events (kind, data, SSE id)."""
    path = f"/api/conversations/{cid}/messages/{mid}/stream?after={after}"
    async with (
        httpx.AsyncClient(base_url=base, timeout=20) as c,
        c.stream("GET", path, headers={**auth(key), **headers}) as r,
    ):
        assert r.status_code == 200, await r.aread()
        return [e async for e in sse_events_with_ids(r)]


async def test_sse_disconnect_then_resume_gets_the_rest_exactly_once(
    live_server: LiveServer,
    alice_key: str,
    bob_key: str,
    alice: User,
    services: Services,
    fake_provider: FakeProvider,
) -> None:
    cid = await new_conversation(live_server.base_url, alice_key)
    words = [f"단어{i} " for i in range(30)]
    fake_provider.enqueue(Script(chunks=words, delay=0.03))
    received, last_id, mid = "", None, ""
    async with (
        httpx.AsyncClient(base_url=live_server.base_url) as c,
        c.stream(
            "POST", f"/api/conversations/{cid}/messages", json={"content": "s", "stream": True}, headers=auth(alice_key)
        ) as r,
    ):
        async for kind, data, event_id in sse_events_with_ids(r):
            if kind == "start":
                mid = data["message_id"]
            elif kind == "delta":
                received += data["text"]
                last_id = event_id
                if len(received) > 20:
                    break  # the connection drops mid-reply
    assert last_id == len(received)
    reply = await stored_reply(services, alice, cid)
    assert reply is not None and reply.status == MessageStatus.STREAMING  # still generating, for a resume
    events = await resume(live_server.base_url, cid, mid, alice_key, **{"Last-Event-ID": str(last_id)})
    kind, done, _ = events[-1]
    rest = "".join(d["text"] for k, d, _ in events if k == "delta")
    assert kind == "done" and done["outcome"] == "ok" and done["message"]["status"] == "complete"
    assert received + rest == "".join(words) == done["message"]["content"]
    ids = [i for k, _, i in events if k == "delta"]
    assert ids == sorted(ids) and ids[-1] == len(done["message"]["content"])
    stored = await settled(services, alice, cid)
    assert stored.content == received + rest and stored.status == MessageStatus.COMPLETE
    # A finished reply resumes too, from any offset (?after=), and another user's is a 404.
    again = await resume(live_server.base_url, cid, mid, alice_key)
    assert "".join(d["text"] for k, d, _ in again if k == "delta") == stored.content
    tail = await resume(live_server.base_url, cid, mid, alice_key, after=5)
    assert "".join(d["text"] for k, d, _ in tail if k == "delta") == stored.content[5:]
    async with httpx.AsyncClient(base_url=live_server.base_url) as c:
        path = f"/api/conversations/{cid}/messages/{mid}/stream"
        assert (await c.get(path.replace(mid, "nope"), headers=auth(alice_key))).status_code == 404
        assert (await c.get(path, headers=auth(bob_key))).status_code == 404  # another user's: as missing
        bad = await c.get(path, headers={**auth(alice_key), "Last-Event-ID": "x"})
        assert bad.status_code == 400


async def test_sse_detached_turn_is_stopped_after_the_resume_grace(
    live_server: LiveServer,
    alice_key: str,
    alice: User,
    services: Services,
    fake_provider: FakeProvider,
    settings: Settings,
) -> None:
    settings.stream_resume_seconds = 0.3
    cid = await new_conversation(live_server.base_url, alice_key)
    fake_provider.enqueue(HANGING)
    async with (
        httpx.AsyncClient(base_url=live_server.base_url) as c,
        c.stream(
            "POST", f"/api/conversations/{cid}/messages", json={"content": "s", "stream": True}, headers=auth(alice_key)
        ) as r,
    ):
        async for kind, _ in sse_events(r):
            if kind == "delta":
                break
    reply = await settled(services, alice, cid)
    assert reply.status == MessageStatus.INTERRUPTED and reply.content
    assert fake_provider.cancelled == 1


async def test_sse_stop_endpoint_ends_stream_with_done(
    live_server: LiveServer, alice_key: str, alice: User, services: Services, fake_provider: FakeProvider
) -> None:
    cid = await new_conversation(live_server.base_url, alice_key)
    fake_provider.enqueue(HANGING)
    events = await stream_then_stop(live_server.base_url, live_server.base_url, cid, alice_key)
    kind, done = events[-1]
    assert kind == "done" and done["outcome"] == "interrupted" and done["finish_reason"] == "stopped"
    text = "".join(d["text"] for k, d in events if k == "delta")
    assert done["message"]["status"] == "interrupted" and done["message"]["content"] == text
    reply = await settled(services, alice, cid)
    assert reply.status == MessageStatus.INTERRUPTED and reply.content == text


async def ws_connect(server: LiveServer, key: str):  # type: ignore[no-untyped-def]
    return websockets.connect(f"{server.ws_url}/api/ws?api_key={key}")


async def recv(ws) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(await asyncio.wait_for(ws.recv(), 5))


async def test_websocket_turn_new_conversation_and_errors(
    live_server: LiveServer, alice_key: str, bob_key: str, fake_provider: FakeProvider
) -> None:
    fake_provider.enqueue(Script(chunks=["Hi ", "Alice"]))
    async with await ws_connect(live_server, alice_key) as ws:
        await ws.send(json.dumps({"type": "ping"}))
        assert await recv(ws) == {"type": "pong"}
        await ws.send(json.dumps({"type": "message", "content": "hello", "persona": "assistant", "request_id": "r1"}))
        start = await recv(ws)
        assert start["type"] == "start" and start["request_id"] == "r1"
        frames = [await recv(ws)]
        while frames[-1]["type"] != "done":
            frames.append(await recv(ws))
        text = "".join(f["text"] for f in frames if f["type"] == "delta")
        done = frames[-1]
        assert text == "Hi Alice" and done["message"]["id"] == start["message_id"]
        assert done["message"]["content"] == text and done["usage"]["total_tokens"] > 0
        cid = start["conversation"]["id"]

        await ws.send(json.dumps({"type": "message", "conversation_id": "nope", "content": "x"}))
        error = await recv(ws)
        assert error["type"] == "error" and error["error"]["code"] == "not_found"
        await ws.send("not json")
        assert (await recv(ws))["error"]["code"] == "invalid_json"
        await ws.send(json.dumps({"type": "message", "conversation_id": cid, "content": ""}))
        assert (await recv(ws))["error"]["param"] == "content"

    # Another user's conversation over the WebSocket: 404, exactly like a missing one.
    async with await ws_connect(live_server, bob_key) as ws:
        await ws.send(json.dumps({"type": "message", "conversation_id": cid, "content": "let me in"}))
        error = await recv(ws)
        assert error["type"] == "error" and error["error"]["code"] == "not_found"


async def test_websocket_stop_mid_reply(
    live_server: LiveServer, alice_key: str, alice: User, services: Services, fake_provider: FakeProvider
) -> None:
    cid = await new_conversation(live_server.base_url, alice_key)
    fake_provider.enqueue(HANGING)
    async with await ws_connect(live_server, alice_key) as ws:
        await ws.send(json.dumps({"type": "message", "conversation_id": cid, "content": "story"}))
        assert (await recv(ws))["type"] == "start"
        first = await recv(ws)
        assert first["type"] == "delta"
        await ws.send(json.dumps({"type": "message", "conversation_id": cid, "content": "again"}))
        frames = [await recv(ws)]
        assert frames[0]["type"] in ("error", "delta")
        await ws.send(json.dumps({"type": "stop"}))
        while frames[-1]["type"] != "done":
            frames.append(await recv(ws))
        busy = [f for f in frames if f["type"] == "error"]
        assert busy and busy[0]["error"]["code"] == "turn_in_progress"
        done = frames[-1]
        text = first["text"] + "".join(f["text"] for f in frames if f["type"] == "delta")
        assert done["outcome"] == "interrupted" and done["finish_reason"] == "stopped"
        assert done["message"]["content"] == text and done["message"]["status"] == "interrupted"
    reply = await settled(services, alice, cid)
    assert reply.status == MessageStatus.INTERRUPTED and reply.content == text


async def test_websocket_disconnect_mid_reply_stores_partial(
    live_server: LiveServer, alice_key: str, alice: User, services: Services, fake_provider: FakeProvider
) -> None:
    cid = await new_conversation(live_server.base_url, alice_key)
    fake_provider.enqueue(HANGING)
    async with await ws_connect(live_server, alice_key) as ws:
        await ws.send(json.dumps({"type": "message", "conversation_id": cid, "content": "story"}))
        assert (await recv(ws))["type"] == "start"
        text = (await recv(ws))["text"]
    reply = await settled(services, alice, cid)
    assert reply.status == MessageStatus.INTERRUPTED and reply.content.startswith(text)


@pytest.mark.parametrize("query", ["", "?api_key=dh-wrong"])
async def test_websocket_requires_authentication(live_server: LiveServer, query: str) -> None:
    async with websockets.connect(f"{live_server.ws_url}/api/ws{query}") as ws:
        with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
            await recv(ws)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4401


async def test_websocket_cookie_from_foreign_origin_is_refused(
    live_server: LiveServer,
    accounts,
    alice: User,
) -> None:
    session = await accounts.create_session(alice)
    headers = {"Cookie": f"daehwa_session={session.token}", "Origin": "http://evil.example"}
    async with websockets.connect(f"{live_server.ws_url}/api/ws", additional_headers=headers) as ws:
        with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
            await recv(ws)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4403
    host = live_server.ws_url.removeprefix("ws://")
    headers["Origin"] = f"http://{host}"
    async with websockets.connect(f"{live_server.ws_url}/api/ws", additional_headers=headers) as ws:
        await ws.send(json.dumps({"type": "ping"}))
        assert await recv(ws) == {"type": "pong"}


async def _one_turn(ws) -> dict:  # type: ignore[no-untyped-def]
    await ws.send(json.dumps({"type": "message", "content": "hi"}))
    frame = await recv(ws)
    while frame["type"] not in ("done", "error"):
        frame = await recv(ws)
    return frame


async def test_a_websocket_stops_working_when_its_login_ends(live_server: LiveServer, accounts, alice: User) -> None:
    # Opened with a browser session: a password change made elsewhere ends it before the socket's next turn.
    session = await accounts.create_session(alice)
    host = live_server.ws_url.removeprefix("ws://")
    headers = {"Cookie": f"daehwa_session={session.token}", "Origin": f"http://{host}"}
    async with websockets.connect(f"{live_server.ws_url}/api/ws", additional_headers=headers) as ws:
        assert (await _one_turn(ws))["type"] == "done"
        await accounts.set_password(alice.id, "a new long password")
        error = await _one_turn(ws)
        assert error["type"] == "error" and error["error"]["code"] == "session_expired"
        with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
            await recv(ws)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4401

    # Opened with an API key: revoking the key ends it.
    created = await accounts.create_api_key(alice.id, "ws")
    async with await ws_connect(live_server, created.secret) as ws:
        assert (await _one_turn(ws))["type"] == "done"
        assert await accounts.revoke_api_key(created.record.id)
        error = await _one_turn(ws)
        assert error["type"] == "error" and error["error"]["type"] == "authentication_error"
        with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
            await recv(ws)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4401


# -- several server processes sharing a store ------------------------------------------------------------------------
@asynccontextmanager
async def _server(settings: Settings, store: Store, provider: FakeProvider) -> AsyncIterator[LiveServer]:
    """One "server process": its own services, app, turn registry and uvicorn, on a store shared with others."""
    services = build_services(settings, store=store, providers=ProviderRegistry([provider]))
    await services.start()
    app = create_app(settings, services)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: _true(server.started))
        yield LiveServer(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        await task
        await services.aclose()


@pytest.mark.parametrize(
    "backend",
    [pytest.param("redis", marks=pytest.mark.redis), pytest.param("postgres", marks=pytest.mark.postgres)],
)
async def test_stop_reaches_a_reply_streaming_in_another_server_process(backend: str, settings: Settings) -> None:
    namespace = _redis_namespace() if backend == "redis" else _postgres_namespace()
    async with namespace as stores:
        model_a, model_b = FakeProvider(), FakeProvider()
        async with _server(settings, stores(), model_a) as a, _server(settings, stores(), model_b) as b:
            store = a.app.state.services.store
            user = await store.create_user("carol", password_hash=None)
            key = (await a.app.state.accounts.create_api_key(user.id, "tests")).secret
            cid = await new_conversation(a.base_url, key)
            model_a.enqueue(HANGING)
            # Process B does not run this turn: it must reach process A through the store's signals.
            events = await stream_then_stop(a.base_url, b.base_url, cid, key)
            kind, done = events[-1]
            assert kind == "done" and done["outcome"] == "interrupted" and done["finish_reason"] == "stopped"
            text = "".join(d["text"] for k, d in events if k == "delta")
            reply = (await store.list_messages(user.id, cid))[-1]
            assert reply.status == MessageStatus.INTERRUPTED and reply.content == text
            assert model_a.cancelled == 1 and not model_b.requests

            # Nothing streaming any more: B says so at once, without waiting for anyone.
            async with httpx.AsyncClient(base_url=b.base_url) as c:
                r = await c.post(f"/api/conversations/{cid}/stop", headers=auth(key))
                assert r.json() == {"stopped": False}

"""A stream that ends without its finish is ``interrupted`` on every transport, never a complete reply (issue 15).

The upstream is tests/fake_upstream.py in its own process, scripted by directives in the user's text
(``[[nofinish]]``: no finish_reason, then [DONE]; ``[[nodone]]``: a finish_reason, then the body ends without [DONE];
``[[stall]]``: hang mid-reply, so the test can ``kill -9`` the upstream). Its directive replies are close-delimited,
so a killed upstream looks like a body that simply ended, as it did in the issue.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from daehwa.config import Settings
from daehwa.services import Services, build_services
from daehwa.types import MessageStatus, User
from tests.api_helpers import LiveServer, auth
from tests.test_api_stream import new_conversation, sse_events

pytest_plugins = ["tests.api_fixtures"]

CUT = ["nofinish", "nodone"]


class UpstreamProcess:
    """``python -m tests.fake_upstream`` as a child process, so it can be killed like a real server."""

    def __init__(self) -> None:
        root = Path(__file__).resolve().parent.parent
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fake_upstream"], cwd=root, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.base_url = self.proc.stdout.readline().strip()
        assert self.base_url.startswith("http://127.0.0.1:"), self.base_url

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def upstream() -> Iterator[UpstreamProcess]:
    up = UpstreamProcess()
    try:
        yield up
    finally:
        up.close()


@pytest.fixture
def settings(tmp_path: Path, upstream: UpstreamProcess) -> Settings:
    providers = tmp_path / "providers.toml"
    providers.write_text(
        f'[providers.openai]\ntype = "openai"\nbase_url = "{upstream.base_url}"\nmodels = ["fake-model"]\n',
        encoding="utf-8",
    )
    return Settings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'test.db'}",
        providers_file=providers,
        default_model="openai/fake-model",
        stream_flush_seconds=0.05,
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    svc = build_services(settings)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.aclose()


async def only_reply(services: Services, user: User, cid: str) -> tuple[str, MessageStatus, Any]:
    messages = await services.store.list_messages(user.id, cid) or []
    replies = [m for m in messages if m.role == "assistant"]
    assert len(replies) == 1, messages
    return replies[0].content, replies[0].status, replies[0].meta.get("error")


def assert_interrupted(stored: tuple[str, MessageStatus, Any], text: str) -> None:
    content, status, error = stored
    assert (content, status) == (text, MessageStatus.INTERRUPTED)
    assert error["code"] == "upstream_incomplete"


@pytest.mark.parametrize("cut", CUT)
async def test_rest_json_reply_is_interrupted(
    live_server: LiveServer, alice_key: str, alice: User, services: Services, cut: str
) -> None:
    cid = await new_conversation(live_server.base_url, alice_key)
    async with httpx.AsyncClient(base_url=live_server.base_url, timeout=30) as c:
        r = await c.post(
            f"/api/conversations/{cid}/messages", json={"content": f"cut short [[{cut}]]"}, headers=auth(alice_key)
        )
    body = r.json()
    assert r.status_code == 200, body
    assert body["outcome"] == "interrupted" and body["finish_reason"] == "interrupted"
    assert body["message"]["status"] == "interrupted" and body["message"]["content"] == "ECHO: cut short"
    assert body["error"]["code"] == "upstream_incomplete"
    assert_interrupted(await only_reply(services, alice, cid), "ECHO: cut short")


@pytest.mark.parametrize("cut", CUT)
async def test_sse_reply_ends_with_an_error_and_an_interrupted_done(
    live_server: LiveServer, alice_key: str, alice: User, services: Services, cut: str
) -> None:
    cid = await new_conversation(live_server.base_url, alice_key)
    async with (
        httpx.AsyncClient(base_url=live_server.base_url, timeout=30) as c,
        c.stream(
            "POST",
            f"/api/conversations/{cid}/messages",
            json={"content": f"cut short [[{cut}]]", "stream": True},
            headers=auth(alice_key),
        ) as r,
    ):
        events = [e async for e in sse_events(r)]
    kinds = [k for k, _ in events]
    assert kinds[0] == "start" and kinds[-2:] == ["error", "done"], kinds
    assert "".join(d["text"] for k, d in events if k == "delta") == "ECHO: cut short"
    assert events[-2][1]["error"]["code"] == "upstream_incomplete"
    done = events[-1][1]
    assert done["outcome"] == "interrupted" and done["message"]["status"] == "interrupted"
    assert_interrupted(await only_reply(services, alice, cid), "ECHO: cut short")


@pytest.mark.parametrize("cut", CUT)
async def test_websocket_reply_ends_with_an_error_and_an_interrupted_done(
    live_server: LiveServer, alice_key: str, alice: User, services: Services, cut: str
) -> None:
    frames: list[dict[str, Any]] = []
    async with websockets.connect(f"{live_server.ws_url}/api/ws?api_key={alice_key}") as ws:
        await ws.send(json.dumps({"type": "message", "content": f"cut short [[{cut}]]"}))
        while not frames or frames[-1]["type"] != "done":
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
    kinds = [f["type"] for f in frames]
    assert kinds[-2:] == ["error", "done"], kinds
    assert frames[-2]["error"]["code"] == "upstream_incomplete"
    assert frames[-1]["outcome"] == "interrupted" and frames[-1]["finish_reason"] == "interrupted"
    cid = frames[-1]["conversation_id"]
    assert_interrupted(await only_reply(services, alice, cid), "ECHO: cut short")


@pytest.mark.parametrize("cut", CUT)
async def test_v1_without_stream_answers_an_error_not_a_reply(
    live_server: LiveServer, alice_key: str, cut: str
) -> None:
    body = {"model": "openai/fake-model", "messages": [{"role": "user", "content": f"cut short [[{cut}]]"}]}
    async with httpx.AsyncClient(base_url=live_server.base_url, timeout=30) as c:
        r = await c.post("/v1/chat/completions", json=body, headers=auth(alice_key))
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "upstream_incomplete"
    assert "choices" not in r.json()


@pytest.mark.parametrize("cut", CUT)
async def test_v1_stream_ends_with_an_error_event_and_no_finish_reason(
    live_server: LiveServer, alice_key: str, cut: str
) -> None:
    body = {
        "model": "openai/fake-model",
        "messages": [{"role": "user", "content": f"cut short [[{cut}]]"}],
        "stream": True,
    }
    datas: list[str] = []
    async with (
        httpx.AsyncClient(base_url=live_server.base_url, timeout=30) as c,
        c.stream("POST", "/v1/chat/completions", json=body, headers=auth(alice_key)) as r,
    ):
        assert r.status_code == 200
        datas = [line[6:] async for line in r.aiter_lines() if line.startswith("data: ")]
    assert datas[-1] == "[DONE]"
    chunks = [json.loads(d) for d in datas[:-1]]
    error = chunks.pop()
    assert error["error"]["code"] == "upstream_incomplete"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "ECHO: cut short"
    # No chunk says the reply finished: an OpenAI client sees the error, never a clean "stop".
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_killed_mid_reply_stores_it_interrupted_with_the_text_that_arrived(
    live_server: LiveServer, alice_key: str, alice: User, services: Services, upstream: UpstreamProcess, stream: bool
) -> None:
    """The issue's scenario: ``break [[stall]]`` streams ``ECHO`` and ``: br``, then the upstream is killed (-9)."""
    cid = await new_conversation(live_server.base_url, alice_key)

    async def send() -> httpx.Response:
        async with httpx.AsyncClient(base_url=live_server.base_url, timeout=30) as c:
            r = await c.post(
                f"/api/conversations/{cid}/messages",
                json={"content": "break [[stall]]", "stream": stream},
                headers=auth(alice_key),
            )
            await r.aread()
            return r

    sending = asyncio.ensure_future(send())
    await asyncio.sleep(1)  # as in the issue: the two chunks are out, the upstream hangs
    upstream.kill()
    response = await asyncio.wait_for(sending, 30)
    assert response.status_code == 200
    if stream:
        assert '"outcome":"interrupted"' in response.text.replace(" ", "")
    else:
        assert response.json()["outcome"] == "interrupted"
    assert_interrupted(await only_reply(services, alice, cid), "ECHO: br")


async def test_the_openai_client_raises_on_a_cut_off_stream(live_server: LiveServer, alice_key: str) -> None:
    import openai

    client = openai.AsyncOpenAI(api_key=alice_key, base_url=f"{live_server.base_url}/v1", max_retries=0)
    received = ""
    try:
        stream = await client.chat.completions.create(
            model="openai/fake-model", messages=[{"role": "user", "content": "cut short [[nodone]]"}], stream=True
        )
        with pytest.raises(openai.APIError, match="without \\[DONE\\]"):
            async for chunk in stream:
                received += chunk.choices[0].delta.content or ""
                assert chunk.choices[0].finish_reason is None
    finally:
        await client.close()
    assert received == "ECHO: cut short"

"""The fake upstream is itself a real HTTP server: check what it sends on the wire, with plain httpx."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest

from tests.fake_upstream import FakeUpstream, Fault, Reply
from tests.fake_upstream import fake_upstream as fake_upstream  # the fixture, as conftest will offer it


def sse_events(text: str) -> list[Any]:
    out: list[Any] = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block.removeprefix("data: ")
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


CHAT = {"model": "m", "messages": [{"role": "user", "content": "one two three"}]}


def test_fixture_serves_models_and_records_requests(fake_upstream: FakeUpstream) -> None:
    fake_upstream.models = ["a", "b"]
    with httpx.Client(base_url=fake_upstream.base_url) as client:
        models = client.get("/models", headers={"x-probe": "1"}).json()
    assert [m["id"] for m in models["data"]] == ["a", "b"]
    assert fake_upstream.last.method == "GET" and fake_upstream.last.path == "/v1/models"
    assert fake_upstream.last.headers["x-probe"] == "1"
    assert fake_upstream.base_url == f"http://127.0.0.1:{fake_upstream.port}/v1"


def test_non_stream_reply_with_n_choices_and_usage(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Reply(["alpha beta", "gamma"], finish_reason="length"))
    with httpx.Client(base_url=fake_upstream.base_url) as client:
        body = client.post("/chat/completions", json={**CHAT, "n": 2}).json()
    assert [c["message"]["content"] for c in body["choices"]] == ["alpha beta", "gamma"]
    assert {c["finish_reason"] for c in body["choices"]} == {"length"}
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    assert fake_upstream.last.json == {**CHAT, "n": 2}


@pytest.mark.parametrize("include_usage", [True, False])
def test_stream_chunks_usage_only_when_asked(fake_upstream: FakeUpstream, include_usage: bool) -> None:
    fake_upstream.enqueue(Reply("hi there", chunks=["hi", " there"], usage=(5, 2)))
    payload = {**CHAT, "stream": True, "stream_options": {"include_usage": include_usage}}
    with httpx.Client(base_url=fake_upstream.base_url) as client:
        response = client.post("/chat/completions", json=payload)
    assert response.headers["content-type"] == "text/event-stream"
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    contents = [e["choices"][0]["delta"].get("content") for e in events[:-1] if e["choices"]]
    assert contents == ["hi", " there", None]
    usage_events = [e for e in events[:-1] if e.get("usage")]
    assert usage_events == ([events[-2]] if include_usage else [])
    if include_usage:
        assert events[-2]["usage"]["total_tokens"] == 7 and events[-2]["choices"] == []


def test_script_then_default(fake_upstream: FakeUpstream) -> None:
    fake_upstream.default = Fault.status(503, "down")
    fake_upstream.enqueue(Reply("ok"), Fault.rate_limited(1.5, header="both"))
    with httpx.Client(base_url=fake_upstream.base_url) as client:
        first = client.post("/chat/completions", json=CHAT)
        second = client.post("/chat/completions", json=CHAT)
        third = client.post("/chat/completions", json=CHAT)
    assert first.json()["choices"][0]["message"]["content"] == "ok"
    assert second.status_code == 429
    assert (second.headers["retry-after"], second.headers["retry-after-ms"]) == ("1.5", "1500")
    assert third.status_code == 503 and third.json()["error"]["message"] == "down"
    assert fake_upstream.pending == 0


def test_reset_drops_the_connection(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Fault.reset())
    with httpx.Client(base_url=fake_upstream.base_url) as client, pytest.raises(httpx.TransportError):
        client.post("/chat/completions", json=CHAT)


def test_api_key_is_required_when_set() -> None:
    with FakeUpstream(api_key="sk-right") as up, httpx.Client(base_url=up.base_url) as client:
        assert client.post("/chat/completions", json=CHAT).status_code == 401
        ok = client.post("/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-right"})
        assert ok.status_code == 200


def test_stop_drops_a_hung_stream_and_leaks_no_thread() -> None:
    before = set(threading.enumerate())
    up = FakeUpstream().start()
    up.enqueue(Fault.stall_after(1))
    with (
        httpx.Client(base_url=up.base_url, timeout=5) as client,
        client.stream("POST", "/chat/completions", json={**CHAT, "stream": True}) as response,
    ):
        chunks = response.iter_bytes()
        assert b"Hello" in next(chunks)  # the first chunk arrived; the server now hangs
        up.stop()  # raises if the server thread does not finish
        with pytest.raises(httpx.TransportError):  # the hung stream was dropped, not left open
            list(chunks)
    assert set(threading.enumerate()) == before


def test_instant_mode_answers_without_recording() -> None:
    with FakeUpstream(instant=True, default=Reply("quick")) as up, httpx.Client(base_url=up.base_url) as client:
        plain = client.post("/chat/completions", json=CHAT).json()
        streamed = sse_events(client.post("/chat/completions", json={**CHAT, "stream": True}).text)
        assert up.request_count == 2 and up.requests == []
    assert plain["choices"][0]["message"]["content"] == "quick"
    assert streamed[0]["choices"][0]["delta"]["content"] == "quick" and streamed[-1] == "[DONE]"


# -- directives in the user's text (used where a test controls only what the user types) -------------------------
def _directive_stream(upstream: FakeUpstream, content: str) -> tuple[list[Any], httpx.Headers]:
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": content}]}
    with httpx.stream("POST", f"{upstream.base_url}/chat/completions", json=body, timeout=10) as response:
        return sse_events(response.read().decode()), response.headers


def _text(events: list[Any]) -> str:
    return "".join(c["choices"][0]["delta"].get("content", "") for c in events if isinstance(c, dict) and c["choices"])


def _finishes(events: list[Any]) -> list[str]:
    return [c["choices"][0]["finish_reason"] for c in events if isinstance(c, dict) and c["choices"]
            if c["choices"][0]["finish_reason"]]  # fmt: skip


def test_nofinish_sends_done_but_no_finish_reason(fake_upstream: FakeUpstream) -> None:
    events, headers = _directive_stream(fake_upstream, "cut short [[nofinish]]")
    assert _text(events) == "ECHO: cut short" and _finishes(events) == [] and events[-1] == "[DONE]"
    assert "transfer-encoding" not in headers and headers["connection"] == "close"  # close-delimited


def test_nodone_sends_the_finish_reason_but_no_done(fake_upstream: FakeUpstream) -> None:
    events, _ = _directive_stream(fake_upstream, "cut short [[nodone]]")
    assert _text(events) == "ECHO: cut short" and _finishes(events) == ["stop"] and "[DONE]" not in events


def test_steady_streams_n_words_at_its_pace(fake_upstream: FakeUpstream) -> None:
    events, _ = _directive_stream(fake_upstream, "[[steady 3 100]]")
    assert _text(events) == "w1 w2 w3 " and _finishes(events) == ["stop"] and events[-1] == "[DONE]"
    assert fake_upstream.requests[-1].completed.is_set()  # a normal end, unlike the other directives


def test_stall_sends_all_but_the_last_chunk_then_hangs() -> None:
    with FakeUpstream() as upstream:
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "break [[stall]]"}]}
        got = ""
        with (
            pytest.raises(httpx.ReadTimeout),
            httpx.stream("POST", f"{upstream.base_url}/chat/completions", json=body, timeout=1) as response,
        ):
            for line in response.iter_lines():
                if line.startswith("data: "):
                    got += json.loads(line[6:])["choices"][0]["delta"].get("content", "")
        assert got == "ECHO: br"


def test_directives_do_not_override_a_scripted_reply(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Reply("scripted"))
    events, _ = _directive_stream(fake_upstream, "x [[nodone]]")
    assert _text(events) == "scripted" and events[-1] == "[DONE]"

"""OpenAIProvider against a real OpenAI-compatible HTTP server (tests/fake_upstream.py), through the real SDK."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from daehwa.config import Settings
from daehwa.errors import (
    ConfigError,
    InvalidRequest,
    ModelNotFound,
    ModelUnavailable,
    ProviderError,
    ProviderTimeout,
    UnsupportedParameter,
)
from daehwa.providers.base import ProviderConfig
from daehwa.providers.openai import PLACEHOLDER_KEY, OpenAIProvider, _SSEEvents, parse_retry_after
from daehwa.providers.registry import builtin_provider_configs
from daehwa.types import ChatMessage, GenerationParams, ProviderRequest, StreamEnd, TextDelta, Usage
from tests.fake_upstream import FakeUpstream, Fault, Reply

KEY_ENV = "DAEHWA_TEST_FAKE_API_KEY"
KEY = "sk-test-NEVER-LEAK-7f3a9c2e51d04b"  # recognisable, so a leak anywhere is easy to spot

MESSAGES = (ChatMessage("system", "Be brief."), ChatMessage("user", "Say hello to me"))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Settings reads .env from the working directory and OPENAI_* from the environment: isolate both.
    monkeypatch.chdir(tmp_path)
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "DAEHWA_OPENAI_API_KEY", "DAEHWA_OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(KEY_ENV, KEY)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path, request_timeout=10)  # type: ignore[call-arg]


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(api_key=KEY) as up:
        yield up


@pytest.fixture
async def make_provider(settings: Settings, upstream: FakeUpstream) -> AsyncIterator[Callable[..., OpenAIProvider]]:
    made: list[OpenAIProvider] = []

    def make(settings: Settings = settings, **overrides: Any) -> OpenAIProvider:
        fields: dict[str, Any] = {
            "name": "fake",
            "type": "openai",
            "base_url": upstream.base_url,
            "api_key_env": KEY_ENV,
            "models": ("fake-model", "fake-large"),
        }
        fields.update(overrides)
        provider = OpenAIProvider(ProviderConfig(**fields), settings)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


def request(params: GenerationParams | None = None, model: str = "fake-model") -> ProviderRequest:
    return ProviderRequest(model, MESSAGES, params or GenerationParams())


async def collect(provider: OpenAIProvider, req: ProviderRequest, into: list[Any] | None = None) -> list[Any]:
    events = [] if into is None else into
    async for event in provider.stream(req):
        events.append(event)
    return events


def texts(events: list[Any]) -> dict[int, str]:
    out: dict[int, str] = {}
    for e in events:
        if isinstance(e, TextDelta):
            out[e.index] = out.get(e.index, "") + e.text
    return out


# -- parameters -------------------------------------------------------------------------------------------------


async def test_every_parameter_arrives_exactly_as_sent(make_provider, upstream: FakeUpstream) -> None:
    params = GenerationParams(
        max_tokens=64,
        temperature=0.25,
        top_p=0.9,
        n=2,
        stop=("\n\n", "END"),
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        seed=1234,
        user="user-42",
        response_format={"type": "json_object"},
        extra={"logit_bias": {"50256": -100}, "top_k": 5, "reasoning_effort": "low"},
    )
    upstream.enqueue(Reply(["first answer", "second answer"]))
    events = await collect(make_provider(), request(params))

    body = upstream.last.json
    assert body == {
        "model": "fake-model",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello to me"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 64,
        "temperature": 0.25,
        "top_p": 0.9,
        "n": 2,
        "stop": ["\n\n", "END"],
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "seed": 1234,
        "user": "user-42",
        "response_format": {"type": "json_object"},
        "logit_bias": {"50256": -100},
        "top_k": 5,
        "reasoning_effort": "low",
    }
    assert upstream.last.headers["authorization"] == f"Bearer {KEY}"
    assert texts(events) == {0: "first answer", 1: "second answer"}
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.finish_reasons == {0: "stop", 1: "stop"}


async def test_unset_parameters_are_not_sent(make_provider, upstream: FakeUpstream) -> None:
    await collect(make_provider(), request())
    assert set(upstream.last.json) == {"model", "messages", "stream", "stream_options"}


async def test_extra_may_not_override_what_the_provider_sets(make_provider, upstream: FakeUpstream) -> None:
    with pytest.raises(InvalidRequest, match="'stream'") as info:
        await collect(make_provider(), request(GenerationParams(extra={"stream": False})))
    assert info.value.param == "stream"
    assert upstream.requests == []


async def test_unsupported_parameter_is_rejected_naming_it_and_the_provider(make_provider, upstream) -> None:
    provider = make_provider(unsupported_params=("seed", "logit_bias"), unsupported_action="reject")
    with pytest.raises(UnsupportedParameter) as info:
        await collect(provider, request(GenerationParams(seed=7)))
    assert info.value.status == 400 and info.value.param == "seed"
    assert "'seed'" in info.value.message and "'fake'" in info.value.message
    assert "unsupported_action" in info.value.message  # says how to fix it
    with pytest.raises(UnsupportedParameter, match="'logit_bias'"):
        await collect(provider, request(GenerationParams(extra={"logit_bias": {"1": 2}})))
    assert upstream.requests == []  # rejected before any network call
    await collect(provider, request(GenerationParams(temperature=0.1)))  # the others still work
    assert upstream.last.json["temperature"] == 0.1


async def test_unsupported_parameter_is_dropped_with_a_warning(make_provider, upstream, caplog) -> None:
    provider = make_provider(unsupported_params=("seed",), unsupported_action="drop")
    with caplog.at_level(logging.WARNING, logger="daehwa.providers.openai"):
        events = await collect(provider, request(GenerationParams(seed=7, temperature=0.3)))
    assert "seed" not in upstream.last.json and upstream.last.json["temperature"] == 0.3
    assert texts(events)[0]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'seed'" in warnings[0].getMessage() and "fake" in warnings[0].getMessage()

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="daehwa.providers.openai"):
        await collect(provider, request(GenerationParams(temperature=0.3)))
    assert not caplog.records  # nothing dropped, nothing said


async def test_stream_options_can_be_switched_off_for_servers_that_reject_it(make_provider, upstream) -> None:
    events = await collect(make_provider(unsupported_params=("stream_options",)), request())
    assert "stream_options" not in upstream.last.json
    assert events[-1].usage is None  # the pipeline estimates instead


# -- streaming --------------------------------------------------------------------------------------------------


async def test_streams_text_then_one_end_with_usage(make_provider, upstream: FakeUpstream) -> None:
    upstream.enqueue(Reply("Hello there, friend!", chunks=["Hel", "lo there", ", friend!"], usage=(12, 3)))
    events = await collect(make_provider(), request())
    assert events[:-1] == [TextDelta("Hel"), TextDelta("lo there"), TextDelta(", friend!")]
    assert events[-1] == StreamEnd(usage=Usage(12, 3), finish_reasons={0: "stop"}, model="fake-model")
    assert sum(isinstance(e, StreamEnd) for e in events) == 1


async def test_finish_reason_and_reported_model_pass_through(make_provider, upstream: FakeUpstream) -> None:
    upstream.enqueue(Reply("cut sho", finish_reason="length", model="fake-model-2025-01-01"))
    end = (await collect(make_provider(), request()))[-1]
    assert end.finish_reasons == {0: "length"} and end.model == "fake-model-2025-01-01"


async def test_no_usage_from_upstream_gives_none(make_provider, upstream: FakeUpstream) -> None:
    upstream.enqueue(Reply("no usage here", send_usage=False))
    events = await collect(make_provider(), request())
    assert texts(events) == {0: "no usage here"}
    assert events[-1].usage is None


async def test_one_client_per_provider_reused_and_closed(make_provider, upstream: FakeUpstream) -> None:
    provider = make_provider()
    assert not provider.status().loaded
    await provider.start()
    await provider.start()  # idempotent
    client = provider._client
    assert client is not None and provider.status().loaded
    await collect(provider, request())
    await collect(provider, request())
    assert provider._client is client and len(upstream.requests) == 2
    await provider.aclose()
    assert client.is_closed() and not provider.status().loaded


async def test_concurrent_streams_share_the_provider(make_provider, upstream: FakeUpstream) -> None:
    upstream.default = Reply("same answer for all", chunk_delay=0.01)
    provider = make_provider()
    results = await asyncio.gather(*(collect(provider, request()) for _ in range(5)))
    assert [texts(r) for r in results] == [{0: "same answer for all"}] * 5


async def test_chunks_are_read_as_json_without_the_sdks_typed_layer(make_provider, upstream, monkeypatch) -> None:
    # The SDK still sends the request (auth, headers, errors), but neither its typed chat.completions.create (request
    # transform) nor its per-chunk model building run: they cost more CPU than the rest of the gateway.
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the typed SDK layer was used")

    monkeypatch.setattr(openai.resources.chat.AsyncCompletions, "create", forbidden)
    monkeypatch.setattr(openai.AsyncOpenAI, "_process_response_data", forbidden)
    upstream.enqueue(Reply(["one", "two"], usage=(3, 4)))
    events = await collect(make_provider(), request(GenerationParams(n=2)))
    assert texts(events) == {0: "one", 1: "two"}
    assert events[-1] == StreamEnd(usage=Usage(3, 4), finish_reasons={0: "stop", 1: "stop"}, model="fake-model")
    assert upstream.last.headers["authorization"] == f"Bearer {KEY}"


SSE_STREAM = (
    b": a comment, then fields the SDK ignores too\r\n"
    b"event: message\r\nid: 1\r\nretry: 10\r\n"
    b'data: {"a": 1}\r\n\r\n'
    b'data:{"b": 2}\r\r'  # CR line ends, no space after the colon
    b'data: {"c":\ndata: 3}\n\n'  # one event spread over two data lines
    b"\n\n"  # blank lines without data dispatch nothing
    b'data: {"d": "\xec\x95\x88\xeb\x85\x95"}\n\n'  # UTF-8 split wherever the reads split it
    b"data: [DONE]\n\n"
    b'data: {"after": "done"}\n\n'
)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, len(SSE_STREAM)])
def test_sse_events_are_split_right_however_the_bytes_arrive(size: int) -> None:
    events = _SSEEvents()
    datas: list[bytes] = []
    for start in range(0, len(SSE_STREAM), size):
        if not events.done:
            datas += events.feed(SSE_STREAM[start : start + size])
    assert [json.loads(d) for d in datas] == [{"a": 1}, {"b": 2}, {"c": 3}, {"d": "안녕"}]
    assert events.done


# -- errors -----------------------------------------------------------------------------------------------------


async def test_sdk_retries_are_off(make_provider, upstream: FakeUpstream) -> None:
    upstream.enqueue(Fault.status(503), Reply("second"))
    with pytest.raises(ProviderError):
        await collect(make_provider(), request())
    assert len(upstream.requests) == 1  # exactly one retry layer, and it is not the SDK's


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retryable(make_provider, upstream, status: int) -> None:
    upstream.enqueue(Fault.status(status, "engine overloaded"))
    with pytest.raises(ProviderError) as info:
        await collect(make_provider(), request())
    err = info.value
    assert type(err) is ProviderError and err.retryable and err.upstream_status == status
    assert "engine overloaded" in err.message and "'fake'" in err.message


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault.rate_limited(1.5, header="retry-after"), 1.5),
        (Fault.rate_limited(0.25, header="retry-after-ms"), 0.25),
        (Fault.rate_limited(2, header="both"), 2.0),
        (Fault.rate_limited(1, header="none"), None),
    ],
)
async def test_rate_limit_is_retryable_with_retry_after(make_provider, upstream, fault, expected) -> None:
    upstream.enqueue(fault)
    with pytest.raises(ProviderError) as info:
        await collect(make_provider(), request())
    err = info.value
    assert err.retryable and err.upstream_status == 429 and err.retry_after == expected
    assert "rate limit" in err.message.lower()


async def test_exhausted_quota_is_not_retryable(make_provider, upstream: FakeUpstream) -> None:
    body = {"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": None}}
    upstream.enqueue(Fault.status(429, body))
    with pytest.raises(ProviderError) as info:
        await collect(make_provider(), request())
    assert not info.value.retryable and "billing" in info.value.message


def test_parse_retry_after_http_date() -> None:
    assert parse_retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failure_names_the_variable_to_fix(make_provider, upstream, monkeypatch, status: int) -> None:
    upstream.enqueue(Fault.status(status, "not allowed"))
    with pytest.raises(ProviderError) as info:
        await collect(make_provider(), request())
    err = info.value
    assert not err.retryable and err.upstream_status == status
    assert f"set {KEY_ENV}" in err.message


async def test_wrong_key_echoed_by_upstream_is_redacted(make_provider, upstream, monkeypatch, caplog) -> None:
    wrong = "sk-wrong-SECRET-0123456789abcdef"
    monkeypatch.setenv(KEY_ENV, wrong)
    provider = make_provider()
    with caplog.at_level(logging.DEBUG), pytest.raises(ProviderError) as info:
        await collect(provider, request())
    assert upstream.last.headers["authorization"] == f"Bearer {wrong}"  # the fake did get (and echo) it
    err = info.value
    assert err.upstream_status == 401 and KEY_ENV in err.message
    for text in (err.message, str(err), repr(err), str(err.to_openai()), caplog.text, repr(provider)):
        assert wrong not in text


async def test_key_never_appears_in_messages_logs_or_repr(make_provider, upstream, caplog) -> None:
    provider = make_provider()
    upstream.enqueue(Reply("fine"), Fault.status(500, f"bad key {KEY} somewhere"), Fault.status(400, f"x {KEY}"))
    with caplog.at_level(logging.DEBUG):
        await collect(provider, request())
        errors = []
        for _ in range(2):
            with pytest.raises((ProviderError, InvalidRequest)) as info:
                await collect(provider, request())
            errors.append(info.value)
    assert upstream.requests[0].headers["authorization"] == f"Bearer {KEY}"
    shown = [caplog.text, repr(provider), str(provider.status()), repr(vars(provider))]
    shown += [str(e) for e in errors] + [repr(e) for e in errors] + [str(e.to_openai()) for e in errors]
    shown += [str(await provider.list_models())]
    assert "bad key *** somewhere" in str(errors[0])
    for text in shown:
        assert KEY not in text


async def test_bad_request_carries_the_upstream_message(make_provider, upstream: FakeUpstream) -> None:
    body = {
        "error": {"message": "max_tokens is too large: 99999", "type": "invalid_request_error", "param": "max_tokens"}
    }
    upstream.enqueue(Fault.status(400, body))
    with pytest.raises(InvalidRequest) as info:
        await collect(make_provider(), request())
    assert info.value.status == 400 and info.value.param == "max_tokens"
    assert "max_tokens is too large: 99999" in info.value.message


async def test_unknown_model_is_model_not_found(make_provider, upstream: FakeUpstream) -> None:
    upstream.enqueue(Fault.status(404, {"error": {"message": "The model `nope` does not exist", "code": None}}))
    with pytest.raises(ModelNotFound) as info:
        await collect(make_provider(), request(model="nope"))
    assert info.value.status == 404 and "'nope'" in info.value.message


async def test_404_without_a_model_points_at_base_url(make_provider, upstream: FakeUpstream) -> None:
    upstream.enqueue(Fault.status(404, {"detail": "Not Found"}))
    with pytest.raises(ProviderError) as info:
        await collect(make_provider(), request())
    assert not info.value.retryable and "base_url" in info.value.message


async def test_connection_refused_is_retryable(make_provider) -> None:
    with socket.socket() as s:  # a port that was free a moment ago and has no listener now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ProviderError) as info:
        await collect(make_provider(base_url=f"http://127.0.0.1:{port}/v1"), request())
    err = info.value
    assert type(err) is ProviderError and err.retryable
    assert "cannot be reached" in err.message and f"127.0.0.1:{port}" in err.message


async def test_reset_before_response_is_retryable(make_provider, upstream: FakeUpstream) -> None:
    upstream.enqueue(Fault.reset())
    with pytest.raises(ProviderError) as info:
        await collect(make_provider(), request())
    assert type(info.value) is ProviderError and info.value.retryable
    assert "reset" in info.value.message.lower()


async def test_reset_mid_stream_raises_after_the_partial_text(make_provider, upstream: FakeUpstream) -> None:
    upstream.enqueue(Reply("one two three four", chunks=["one ", "two ", "three ", "four"]), Fault.reset_after(2))
    provider = make_provider()
    await collect(provider, request())  # the connection is reused; the reset hits the second request
    events: list[Any] = []
    with pytest.raises(ProviderError) as info:
        await collect(provider, request(), into=events)
    assert events == [TextDelta("Hello "), TextDelta("from ")]  # the default reply, cut after two chunks
    assert info.value.retryable and "broke off" in info.value.message


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        (Fault.malformed_chunk(after=1), "malformed"),  # not JSON
        (Fault.malformed_chunk(after=1, data='{"choices": [{"index": "first", "delta": {}}]}'), "malformed"),
        (Fault.stream_error("GPU fell over", after=1), "GPU fell over"),
    ],
)
async def test_bad_stream_content_raises_from_the_iterator(make_provider, upstream, fault, words) -> None:
    upstream.enqueue(fault)
    events: list[Any] = []
    with pytest.raises(ProviderError, match=words):
        await collect(make_provider(), request(), into=events)
    assert events == [TextDelta("Hello ")]


async def test_slow_first_token_times_out(make_provider, upstream: FakeUpstream) -> None:
    upstream.enqueue(Fault.delay_first_token(3))
    provider = make_provider(options={"timeout": 0.3})
    with pytest.raises(ProviderTimeout) as info:
        await collect(provider, request())
    assert info.value.status == 504 and info.value.retryable
    assert "0.3s" in info.value.message and "DAEHWA_REQUEST_TIMEOUT" in info.value.message
    assert await upstream.last.wait_disconnected()  # and the upstream request was abandoned


async def test_stall_mid_stream_times_out_keeping_partial_text(make_provider, upstream: FakeUpstream) -> None:
    upstream.enqueue(Fault.stall_after(2))
    events: list[Any] = []
    with pytest.raises(ProviderTimeout):
        await collect(make_provider(options={"timeout": 0.3}), request(), into=events)
    assert texts(events) == {0: "Hello from "}


async def test_delay_within_the_timeout_is_fine(make_provider, upstream: FakeUpstream) -> None:
    upstream.enqueue(Fault.delay_first_token(0.1, Reply("late but fine")))
    assert texts(await collect(make_provider(), request())) == {0: "late but fine"}


# -- cancellation -----------------------------------------------------------------------------------------------


async def test_closing_the_iterator_closes_the_upstream_stream(make_provider, upstream: FakeUpstream) -> None:
    upstream.enqueue(Fault.stall_after(1))
    stream = make_provider().stream(request())
    assert await anext(stream) == TextDelta("Hello ")
    await stream.aclose()  # type: ignore[attr-defined]
    assert await upstream.last.wait_disconnected(within=2)


async def test_cancelling_the_consumer_task_closes_the_upstream_stream(make_provider, upstream) -> None:
    upstream.enqueue(Reply("word " * 200, chunk_delay=0.02))
    provider = make_provider()
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in provider.stream(request()):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await upstream.last.wait_disconnected(within=2)
    assert not upstream.last.completed.is_set()


# -- keys, status, models ---------------------------------------------------------------------------------------


async def test_missing_key_makes_the_provider_unavailable_with_the_fix(make_provider, upstream, monkeypatch) -> None:
    monkeypatch.delenv(KEY_ENV)
    provider = make_provider()
    status = provider.status()
    assert not status.available and f"set {KEY_ENV}" in (status.reason or "")
    models = await provider.list_models()
    assert [m.id for m in models] == ["fake/fake-model", "fake/fake-large"]
    assert all(not m.available and KEY_ENV in (m.reason or "") for m in models)
    with pytest.raises(ModelUnavailable, match=KEY_ENV):
        await collect(provider, request())
    assert upstream.requests == []


async def test_keyless_provider_sends_a_placeholder(make_provider, upstream: FakeUpstream) -> None:
    upstream.api_key = None  # like Ollama or llama.cpp server
    provider = make_provider(api_key_env=None)
    assert provider.status().available
    assert texts(await collect(provider, request())) == {0: "Hello from the fake upstream."}
    assert upstream.last.headers["authorization"] == f"Bearer {PLACEHOLDER_KEY}"


async def test_list_models_is_offline(make_provider) -> None:
    provider = make_provider(base_url="http://127.0.0.1:9/v1", models=("a", "b"), default_model="c")
    models = await provider.list_models()
    assert [(m.id, m.provider, m.available) for m in models] == [
        ("fake/c", "fake", True),
        ("fake/a", "fake", True),
        ("fake/b", "fake", True),
    ]
    assert not provider.status().loaded  # no client was even created


async def test_unknown_option_is_a_config_error(make_provider) -> None:
    with pytest.raises(ConfigError, match="timeuot"):
        make_provider(options={"timeuot": 3})


async def test_sends_done_must_be_a_boolean(make_provider) -> None:
    with pytest.raises(ConfigError, match="sends_done"):
        make_provider(options={"sends_done": "no"})


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (Reply("cut sho", send_done=False), "without \\[DONE\\]"),  # a finish_reason, then the body just ends
        (Reply("cut sho", send_finish=False), "finish_reason"),  # [DONE], but the reply never finished
        (Reply(["one", "tw"], send_finish=False), "finish_reason"),  # n = 2, neither finished
    ],
)
async def test_a_stream_that_ends_before_the_reply_is_incomplete(make_provider, upstream, reply, words) -> None:
    upstream.enqueue(reply)
    events: list[Any] = []
    params = GenerationParams(n=2) if not isinstance(reply.text, str) else None
    with pytest.raises(ProviderError, match=words) as info:
        await collect(make_provider(), request(params), into=events)
    assert info.value.code == "upstream_incomplete" and info.value.retryable
    assert not any(isinstance(e, StreamEnd) for e in events)  # the text arrived, never an end
    assert texts(events)[0] in ("cut sho", "one")


async def test_sends_done_false_accepts_a_stream_without_done(make_provider, upstream: FakeUpstream) -> None:
    upstream.enqueue(Reply("no done here", send_done=False), Reply("nor here", send_done=False, send_finish=False))
    provider = make_provider(options={"sends_done": False})
    events = await collect(provider, request())
    assert texts(events) == {0: "no done here"} and events[-1].finish_reasons == {0: "stop"}
    with pytest.raises(ProviderError, match="finish_reason"):  # a finish_reason is still needed
        await collect(provider, request())


async def test_options_headers_are_sent(make_provider, upstream: FakeUpstream) -> None:
    await collect(make_provider(options={"headers": {"X-Title": "daehwa"}}), request())
    assert upstream.last.headers["x-title"] == "daehwa"


async def test_timeout_defaults_to_the_setting(make_provider, settings: Settings) -> None:
    assert make_provider().timeout == settings.request_timeout


async def test_builtin_openai_honours_openai_env_vars(monkeypatch, tmp_path, upstream: FakeUpstream) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", upstream.base_url)
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    config = next(c for c in builtin_provider_configs(settings) if c.name == "openai")
    provider = OpenAIProvider(config, settings)
    try:
        events = await collect(provider, request(model="gpt-4o-mini"))
    finally:
        await provider.aclose()
    assert upstream.last.json["model"] == "gpt-4o-mini" and texts(events)[0]
    assert upstream.last.headers["authorization"] == f"Bearer {KEY}"


async def test_builtin_openai_reads_the_key_from_dotenv(tmp_path, upstream: FakeUpstream) -> None:
    (tmp_path / ".env").write_text(f"OPENAI_API_KEY={KEY}\nOPENAI_BASE_URL={upstream.base_url}\n")
    settings = Settings(data_dir=tmp_path)  # reads ./.env (the working directory is tmp_path)
    config = next(c for c in builtin_provider_configs(settings) if c.name == "openai")
    provider = OpenAIProvider(config, settings)
    try:
        assert provider.status().available
        await collect(provider, request(model="gpt-4o-mini"))
    finally:
        await provider.aclose()
    assert upstream.last.headers["authorization"] == f"Bearer {KEY}"


async def test_builtin_openai_without_key_says_to_set_it(tmp_path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    config = next(c for c in builtin_provider_configs(settings) if c.name == "openai")
    provider = OpenAIProvider(config, settings)
    assert provider.base_url == "https://api.openai.com/v1"
    status = provider.status()
    assert not status.available and "set OPENAI_API_KEY" in (status.reason or "")

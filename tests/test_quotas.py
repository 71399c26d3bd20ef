"""Per-user quotas: the counters (in memory and in a real Redis), the limiter, and 429 + Retry-After over the turn
pipeline, REST and WebSocket."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import websockets

from daehwa.chat import TurnRequest
from daehwa.config import Settings, UserQuota
from daehwa.errors import RateLimited
from daehwa.i18n import format_duration
from daehwa.metrics import Metrics
from daehwa.providers.registry import ProviderRegistry
from daehwa.quotas import MemoryCounters, QuotaLimiter, RedisCounters
from daehwa.services import Services, build_services
from daehwa.types import Outcome, Usage, UsageRecord, User
from tests.api_helpers import LiveServer, auth

from .conftest import FakeProvider, require

pytest_plugins = ["tests.api_fixtures"]

REDIS_URL = os.environ.get("DAEHWA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class Clock:
    def __init__(self, now: float = datetime(2026, 11, 21, 12, 0, tzinfo=UTC).timestamp()) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'test.db'}",
        default_model="fake",
        stream_flush_seconds=0.05,
        _env_file=None,  # type: ignore[call-arg]
        **values,
    )


ALICE = User(id="u-alice", name="alice")
BOB = User(id="u-bob", name="bob")


# -- counters --------------------------------------------------------------------------------------------------
async def test_memory_rate_allows_a_burst_then_one_per_interval():
    clock = Clock()
    counters = MemoryCounters(clock)
    assert [await counters.take("k", 3, 60) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = await counters.take("k", 3, 60)
    assert wait == pytest.approx(20.0)  # 60 s / 3: the next one frees up 20 s later
    clock.now += 19.5
    assert await counters.take("k", 3, 60) == pytest.approx(0.5)
    clock.now += 0.5
    assert await counters.take("k", 3, 60) == 0.0
    assert await counters.take("other", 3, 60) == 0.0  # keys are independent


async def test_memory_counters_add_seed_and_expire():
    clock = Clock()
    counters = MemoryCounters(clock)
    assert await counters.get("t") is None
    assert await counters.seed("t", 100, 60) == 100
    assert await counters.seed("t", 5, 60) == 100  # seeding never overwrites
    assert await counters.add("t", 20, 60) == 120
    clock.now += 61
    assert await counters.get("t") is None


@pytest.fixture(params=["redis", "redis-cluster"])
async def redis_counters(request: pytest.FixtureRequest) -> AsyncIterator[tuple[RedisCounters, RedisCounters]]:
    url = REDIS_URL if request.param == "redis" else str(request.getfixturevalue("redis_cluster_url"))
    try:
        from daehwa.stores.redis.connection import connect

        probe = connect(url)
        await probe.ping()
        await probe.aclose()
    except Exception as exc:
        require(False, f"Redis is not reachable at {url}: {exc}")
    prefix = f"test-quota-{uuid.uuid4().hex[:8]}"
    # Two clients on one prefix stand for two daehwa processes.
    first, second = RedisCounters(url, prefix=prefix), RedisCounters(url, prefix=prefix)
    try:
        yield first, second
    finally:
        keys = [k async for k in first._client.scan_iter(f"{prefix}:*")]
        if keys:
            await first._client.delete(*keys)
        await first.aclose()
        await second.aclose()


@pytest.mark.redis
async def test_redis_rate_is_shared_across_processes(redis_counters: tuple[RedisCounters, RedisCounters]):
    first, second = redis_counters
    assert await first.take("rpm:alice", 2, 60) == 0.0
    assert await second.take("rpm:alice", 2, 60) == 0.0
    wait = await first.take("rpm:alice", 2, 60)
    assert 29.0 < wait <= 30.0  # the other process's request counted too
    assert await second.take("rpm:bob", 2, 60) == 0.0
    assert "redis://" not in repr(first)  # the URL may carry a password


@pytest.mark.redis
async def test_redis_token_counters_are_shared_and_expire(redis_counters: tuple[RedisCounters, RedisCounters]):
    first, second = redis_counters
    assert await first.get("tokens:a") is None
    assert await first.seed("tokens:a", 40, 3600) == 40
    assert await second.seed("tokens:a", 999, 3600) == 40
    assert await second.add("tokens:a", 2, 3600) == 42
    assert await first.get("tokens:a") == 42
    ttl = await first._client.ttl(first.prefix + "tokens:a")
    assert 3500 < ttl <= 3601


@pytest.mark.redis
async def test_limiter_over_redis_refuses_in_the_second_process(
    tmp_path: Path, redis_counters: tuple[RedisCounters, RedisCounters]
):
    first, second = redis_counters
    settings = make_settings(tmp_path, rate_limit_requests_per_minute=1)
    await QuotaLimiter(settings, counters=first).check(ALICE, source="rest")
    with pytest.raises(RateLimited) as info:
        await QuotaLimiter(settings, counters=second).check(ALICE, source="ws")
    assert 50 < info.value.retry_after <= 60


def test_redis_is_used_when_configured(tmp_path: Path):
    limiter = QuotaLimiter.from_settings(
        make_settings(tmp_path, rate_limit_redis_url=REDIS_URL, rate_limit_requests_per_minute=5)
    )
    assert isinstance(limiter.counters, RedisCounters)
    limiter = QuotaLimiter.from_settings(make_settings(tmp_path, rate_limit_requests_per_minute=5))
    assert isinstance(limiter.counters, MemoryCounters)
    limiter = QuotaLimiter.from_settings(make_settings(tmp_path, rate_limit_redis_url=REDIS_URL))
    assert isinstance(limiter.counters, MemoryCounters) and not limiter.enabled  # nothing to count: no client


# -- limiter ---------------------------------------------------------------------------------------------------
async def test_requests_per_minute_with_a_per_user_override(tmp_path: Path):
    settings = make_settings(
        tmp_path,
        rate_limit_requests_per_minute=2,
        user_quotas={"bob": UserQuota(requests_per_minute=0), "u-carol": UserQuota(requests_per_minute=1)},
    )
    metrics = Metrics()
    limiter = QuotaLimiter(settings, metrics=metrics, clock=Clock())
    assert limiter.enabled
    await limiter.check(ALICE, source="rest")
    await limiter.check(ALICE, source="rest")
    with pytest.raises(RateLimited) as info:
        await limiter.check(ALICE, source="rest", locale="en")
    assert info.value.status == 429 and info.value.code == "rate_limit_exceeded"
    assert info.value.retry_after == pytest.approx(30.0, abs=0.01)
    assert "2 per minute" in info.value.message and "30 seconds" in info.value.message
    for _ in range(10):
        await limiter.check(BOB, source="rest")  # 0: no limit for bob
    carol = User(id="u-carol", name="carol")  # matched by id
    await limiter.check(carol, source="rest")
    with pytest.raises(RateLimited):
        await limiter.check(carol, source="rest")
    assert metrics.registry.get_sample_value("daehwa_rate_limited_total", {"limit": "requests_per_minute"}) == 2


async def test_tokens_per_day_refuse_until_midnight_utc(tmp_path: Path):
    clock = Clock()  # 12:00 UTC
    limiter = QuotaLimiter(make_settings(tmp_path, rate_limit_tokens_per_day=1000), clock=clock)
    await limiter.check(ALICE, source="rest")
    await limiter.record(ALICE, tokens=600)
    await limiter.check(ALICE, source="rest")  # 600 < 1000: a turn may still start
    await limiter.record(ALICE, tokens=600)
    with pytest.raises(RateLimited) as info:
        await limiter.check(ALICE, source="rest", locale="en")
    assert info.value.code == "token_quota_exceeded"
    assert info.value.retry_after == pytest.approx(12 * 3600)
    assert "1,200 used" in info.value.message
    await limiter.check(BOB, source="rest")  # per user
    clock.now += 12 * 3600  # a new UTC day
    await limiter.check(ALICE, source="rest")


async def test_the_daily_count_is_seeded_from_the_store_after_a_restart(services: Services, alice: User):
    await services.store.record_usage(
        UsageRecord(
            user_id=alice.id, model="fake/echo", usage=Usage(700, 400), outcome=Outcome.OK, ttft_ms=1, total_ms=2
        )
    )
    fresh = QuotaLimiter(services.settings.model_copy(update={"rate_limit_tokens_per_day": 1000}), store=services.store)
    assert await fresh.tokens_today(alice) == 1100
    with pytest.raises(RateLimited):
        await fresh.check(alice, source="rest")


def test_no_limits_means_no_limiter(tmp_path: Path):
    services = build_services(make_settings(tmp_path), providers=ProviderRegistry([FakeProvider()]))
    assert services.limiter is None and services.chat.limiter is None  # nothing to check on the hot path
    limited = build_services(
        make_settings(tmp_path, user_quotas={"x": UserQuota(tokens_per_day=5)}), providers=ProviderRegistry([])
    )
    assert limited.chat.limiter is limited.limiter is not None


# -- through the pipeline and the transports -------------------------------------------------------------------
@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # Overrides conftest's: alice may start 2 turns a minute; bob has no limit.
    return make_settings(
        tmp_path, rate_limit_requests_per_minute=2, user_quotas={"bob": UserQuota(requests_per_minute=0)}
    )


async def test_a_refused_turn_stores_nothing(services: Services, alice: User):
    started, _ = await services.chat.run(TurnRequest(user=alice, content="one"))
    await services.chat.run(TurnRequest(user=alice, content="two", conversation_id=started.conversation.id))
    with pytest.raises(RateLimited):
        await services.chat.run(TurnRequest(user=alice, content="three", conversation_id=started.conversation.id))
    stored = await services.store.list_messages(alice.id, started.conversation.id)
    assert [m.content for m in stored if m.role == "user"] == ["one", "two"]


async def test_rest_answers_429_with_retry_after(client: httpx.AsyncClient, alice_key: str, bob_key: str):
    created = await client.post("/api/conversations", json={}, headers=auth(alice_key))
    cid = created.json()["conversation"]["id"]
    url = f"/api/conversations/{cid}/messages"
    for _ in range(2):
        assert (await client.post(url, json={"content": "hi"}, headers=auth(alice_key))).status_code == 200
    refused = await client.post(url, json={"content": "hi"}, headers={**auth(alice_key), "Accept-Language": "en"})
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 30
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_error"
    assert "per minute" in error["message"]
    # The same limit covers the stateless and OpenAI-compatible routes: they are all turns of the one pipeline.
    v1 = await client.post(
        "/v1/chat/completions",
        json={"model": "fake", "messages": [{"role": "user", "content": "hi"}]},
        headers=auth(alice_key),
    )
    assert v1.status_code == 429 and "retry-after" in v1.headers
    assert v1.json()["error"]["type"] == "rate_limit_error"
    ok = await client.post("/api/conversations", json={}, headers=auth(bob_key))
    bob_url = f"/api/conversations/{ok.json()['conversation']['id']}/messages"
    for _ in range(3):
        assert (await client.post(bob_url, json={"content": "hi"}, headers=auth(bob_key))).status_code == 200


async def test_sse_answers_429_before_the_stream_starts(client: httpx.AsyncClient, alice_key: str):
    created = await client.post("/api/conversations", json={}, headers=auth(alice_key))
    url = f"/api/conversations/{created.json()['conversation']['id']}/messages"
    for _ in range(2):
        await client.post(url, json={"content": "hi"}, headers=auth(alice_key))
    refused = await client.post(url, json={"content": "hi", "stream": True}, headers=auth(alice_key))
    assert refused.status_code == 429 and "retry-after" in refused.headers
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"


async def test_websocket_sends_an_error_frame_with_retry_after(live_server: LiveServer, alice_key: str):
    async with websockets.connect(f"{live_server.ws_url}/api/ws?api_key={alice_key}") as ws:
        frames: list[dict] = []
        for n in range(3):
            await ws.send(json.dumps({"type": "message", "content": f"hello {n}", "request_id": f"r{n}"}))
            while True:
                frame = json.loads(await ws.recv())
                frames.append(frame)
                if frame["type"] in ("done", "error"):
                    break
        done = [f for f in frames if f["type"] == "done"]
        errors = [f for f in frames if f["type"] == "error"]
        assert len(done) == 2 and len(errors) == 1
        error = errors[0]
        assert error["request_id"] == "r2"
        assert error["error"]["code"] == "rate_limit_exceeded" and error["error"]["type"] == "rate_limit_error"
        assert 1 <= error["retry_after"] <= 30
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}  # the socket stays open and usable


# -- messages in the request's language ------------------------------------------------------------------------
async def test_the_per_minute_message_is_in_the_requests_language(tmp_path: Path):
    limiter = QuotaLimiter(make_settings(tmp_path, rate_limit_requests_per_minute=2), clock=Clock())
    await limiter.check(ALICE, source="rest")
    await limiter.check(ALICE, source="rest")
    messages = {}
    for locale in ("ko-KR,ko;q=0.9,en;q=0.8", "en-US,en;q=0.9", None, "fr"):
        with pytest.raises(RateLimited) as info:
            await limiter.check(ALICE, source="rest", locale=locale)
        assert info.value.retry_after == pytest.approx(30.0, abs=0.01)  # refusing does not move the clock
        messages[locale] = info.value.message
    assert messages["ko-KR,ko;q=0.9,en;q=0.8"] == (
        "요청이 너무 많아요. 30초 후에 다시 시도해 주세요. (1분에 2번까지 보낼 수 있어요.)"
    )
    assert messages["en-US,en;q=0.9"] == "Too many messages: the limit is 2 per minute. Try again in 30 seconds."
    # No or an unsupported language: the service's home language, as for its other sentences.
    assert messages[None] == messages["fr"] == messages["ko-KR,ko;q=0.9,en;q=0.8"]


async def test_the_wait_in_the_message_is_the_retry_after_rounded_up(tmp_path: Path):
    clock = Clock()
    limiter = QuotaLimiter(make_settings(tmp_path, rate_limit_requests_per_minute=3), clock=clock)
    for _ in range(3):
        await limiter.check(ALICE, source="rest")
    clock.now += 19.5  # the next turn frees up 0.5 s from now
    with pytest.raises(RateLimited) as info:
        await limiter.check(ALICE, source="rest", locale="ko")
    assert info.value.retry_after == pytest.approx(0.5)  # kept exact; the header rounds it up to 1
    assert info.value.message.startswith("요청이 너무 많아요. 1초 후에")


async def test_the_daily_token_message_is_in_the_requests_language(tmp_path: Path):
    clock = Clock(datetime(2026, 11, 21, 14, 30, tzinfo=UTC).timestamp())
    limiter = QuotaLimiter(make_settings(tmp_path, rate_limit_tokens_per_day=1000), clock=clock)
    await limiter.check(ALICE, source="rest")
    await limiter.record(ALICE, tokens=1200)
    with pytest.raises(RateLimited) as ko:
        await limiter.check(ALICE, source="rest", locale="ko")
    with pytest.raises(RateLimited) as en:
        await limiter.check(ALICE, source="rest", locale="en")
    assert ko.value.retry_after == en.value.retry_after == pytest.approx(9.5 * 3600)  # to midnight UTC
    assert ko.value.code == en.value.code == "token_quota_exceeded"
    assert ko.value.message == (
        "오늘 사용할 수 있는 토큰을 모두 썼어요(사용 1,200 / 하루 한도 1,000). 9시간 30분 후에 다시 이용해 주세요. "
        "한도를 늘리려면 관리자에게 문의해 주세요."
    )
    assert en.value.message == (
        "You have used today's 1,000 tokens (1,200 used). The quota resets at midnight UTC, in 9 hours 30 minutes; "
        "an admin can raise it (DAEHWA_USER_QUOTAS)."
    )


async def test_http_refusals_speak_the_accept_language(
    client: httpx.AsyncClient, live_server: LiveServer, alice_key: str
):
    created = await client.post("/api/conversations", json={}, headers=auth(alice_key))
    url = f"/api/conversations/{created.json()['conversation']['id']}/messages"
    for _ in range(2):
        assert (await client.post(url, json={"content": "hi"}, headers=auth(alice_key))).status_code == 200
    korean = {**auth(alice_key), "Accept-Language": "ko-KR,ko;q=0.9,en-US;q=0.8"}
    english = {**auth(alice_key), "Accept-Language": "en-GB,en;q=0.9"}

    rest = await client.post(url, json={"content": "hi"}, headers=korean)
    assert rest.status_code == 429
    wait = int(rest.headers["retry-after"])
    assert 1 <= wait <= 30
    assert rest.json()["error"]["message"].startswith(f"요청이 너무 많아요. {wait}초 후에 다시 시도해 주세요.")
    sse = await client.post(url, json={"content": "hi", "stream": True}, headers=english)
    assert sse.status_code == 429
    assert sse.json()["error"]["message"].startswith("Too many messages: the limit is 2 per minute. Try again in ")
    v1_body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
    v1 = await client.post("/v1/chat/completions", json=v1_body, headers=english)
    assert v1.status_code == 429 and v1.json()["error"]["message"].startswith("Too many messages")
    v1 = await client.post("/v1/chat/completions", json=v1_body, headers=korean)
    assert v1.status_code == 429 and v1.json()["error"]["message"].startswith("요청이 너무 많아요.")

    headers = {"Accept-Language": "en-US,en;q=0.9"}  # English: Korean is also what no header gives
    async with websockets.connect(f"{live_server.ws_url}/api/ws?api_key={alice_key}", additional_headers=headers) as ws:
        await ws.send(json.dumps({"type": "message", "content": "hi", "request_id": "r1"}))
        frame = json.loads(await ws.recv())
        assert frame["type"] == "error" and frame["error"]["code"] == "rate_limit_exceeded"
        wait = format_duration(frame["retry_after"], "en")
        assert frame["error"]["message"] == f"Too many messages: the limit is 2 per minute. Try again in {wait}."

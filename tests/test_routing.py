"""The resilient Router against scripted FakeProviders: retries, fallbacks, first-token and idle timeouts, circuit
breakers, bulkheads. Waits use injected sleeps or timeouts of a few tens of milliseconds; nothing asserts speed."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import ClassVar

import pytest

from daehwa.errors import (
    InvalidRequest,
    ModelUnavailable,
    ProviderBusy,
    ProviderError,
    ProviderTimeout,
    UnsupportedParameter,
)
from daehwa.metrics import Metrics
from daehwa.providers.registry import ProviderRegistry
from daehwa.resilience import BreakerPolicy, RetryPolicy
from daehwa.routing import FirstTokenTimeout, ResilienceConfig, RouteEnd, Router, StreamStalled
from daehwa.stores.breakers import BreakerBoard
from daehwa.types import ChatMessage, GenerationParams, TextDelta

from .conftest import FakeProvider, Script

MESSAGES = [ChatMessage("user", "hi")]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Sleeps:
    """An injected sleep that records the waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def config(**overrides: object) -> ResilienceConfig:
    values: dict = {
        "retry": RetryPolicy(attempts=3, base_delay=0.1, max_delay=2.0),
        "first_token_timeout": 5.0,
        "first_token_deadline": 10.0,
        "stream_idle_timeout": 5.0,
        "breaker": BreakerPolicy(min_requests=4, open_seconds=30.0),
    }
    values.update(overrides)
    return ResilienceConfig(**values)


@pytest.fixture
def primary() -> FakeProvider:
    return FakeProvider("main", models=("m",))


@pytest.fixture
def backup() -> FakeProvider:
    return FakeProvider("backup", models=("b",))


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def make_router(primary: FakeProvider, backup: FakeProvider, metrics: Metrics, clock: Clock, sleeps: Sleeps):
    def make(**overrides: object) -> Router:
        return Router(ProviderRegistry([primary, backup]), metrics, config(**overrides), clock=clock, sleep=sleeps)

    return make


async def route(router: Router, candidates: list[str], params: GenerationParams | None = None) -> tuple[str, RouteEnd]:
    text = []
    end = None
    async with aclosing(router.stream(candidates, MESSAGES, params or GenerationParams())) as events:
        async for event in events:
            if isinstance(event, TextDelta):
                text.append(event.text)
            else:
                end = event
    assert end is not None
    return "".join(text), end


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def retryable(message: str = "HTTP 503", retry_after: float | None = None) -> Script:
    return Script(chunks=[], error=ProviderError(message, retryable=True, retry_after=retry_after))


async def test_a_healthy_model_streams_through(make_router, primary: FakeProvider, metrics: Metrics):
    primary.enqueue(Script(chunks=["Hel", "lo"]))
    text, end = await route(make_router(), ["main/m", "backup/b"])
    assert text == "Hello"
    assert (end.model, end.fallback_used) == ("main/m", False)
    assert end.usage is not None and end.usage.completion_tokens == 5
    assert sample(metrics, "daehwa_upstream_requests_total", model="main/m", result="ok") == 1


async def test_retryable_errors_are_retried_with_backoff_and_no_text_is_duplicated(
    make_router, primary: FakeProvider, sleeps: Sleeps, metrics: Metrics
):
    primary.enqueue(retryable(), retryable(), Script(chunks=["once"]))
    text, end = await route(make_router(), ["main/m", "backup/b"])
    assert text == "once"
    assert end.model == "main/m" and not end.fallback_used
    assert len(primary.requests) == 3
    assert len(sleeps.waits) == 2
    assert 0 <= sleeps.waits[0] <= 0.1 and 0 <= sleeps.waits[1] <= 0.2  # exponential bound, full jitter
    assert sample(metrics, "daehwa_upstream_retries_total", model="main/m") == 2
    assert sample(metrics, "daehwa_upstream_errors_total", model="main/m", kind="upstream_error") == 2


async def test_retry_after_is_honoured(make_router, primary: FakeProvider, sleeps: Sleeps):
    primary.enqueue(retryable("429", retry_after=1.5), Script(chunks=["ok"]))
    text, _ = await route(make_router(), ["main/m"])
    assert text == "ok"
    assert len(sleeps.waits) == 1 and sleeps.waits[0] >= 1.5


async def test_a_retry_after_longer_than_the_cap_goes_to_the_fallback_at_once(
    make_router, primary: FakeProvider, backup: FakeProvider, sleeps: Sleeps, metrics: Metrics
):
    primary.enqueue(retryable("429", retry_after=60))
    backup.enqueue(Script(chunks=["from backup"]))
    text, end = await route(make_router(), ["main/m", "backup/b"])
    assert text == "from backup"
    assert (end.model, end.fallback_used) == ("backup/b", True)
    assert sleeps.waits == [] and len(primary.requests) == 1
    assert sample(metrics, "daehwa_fallbacks_total", kind="model") == 1


async def test_tries_stop_at_the_configured_number(make_router, primary: FakeProvider, backup: FakeProvider):
    primary.enqueue(retryable("a"), retryable("b"), retryable("c"), Script(chunks=["never"]))
    backup.enqueue(Script(chunks=["backup"]))
    text, end = await route(make_router(), ["main/m", "backup/b"])
    assert len(primary.requests) == 3  # attempts=3, the first included
    assert text == "backup" and end.fallback_used


async def test_a_non_retryable_error_skips_retries(make_router, primary: FakeProvider, backup: FakeProvider):
    primary.enqueue(Script(chunks=[], error=ProviderError("bad key", code="upstream_auth_error")))
    text, _ = await route(make_router(), ["main/m", "backup/b"])
    assert len(primary.requests) == 1
    assert text == "echo: hi"


async def test_when_every_model_fails_the_errors_are_summed_up(make_router, primary: FakeProvider, backup):
    primary.enqueue(*(retryable("main down") for _ in range(3)))
    backup.enqueue(Script(chunks=[], error=ProviderError("backup down")))
    with pytest.raises(ProviderError) as info:
        await route(make_router(), ["main/m", "backup/b"])
    assert info.value.code == "all_models_failed"
    assert "main/m: main down" in info.value.message and "backup/b: backup down" in info.value.message


async def test_a_single_model_failing_raises_its_own_error(make_router, primary: FakeProvider):
    primary.enqueue(*(retryable("main down") for _ in range(3)))
    with pytest.raises(ProviderError) as info:
        await route(make_router(), ["main/m"])
    assert info.value.message == "main down"


async def test_an_invalid_request_is_not_retried_nor_sent_elsewhere(make_router, primary: FakeProvider, backup):
    primary.enqueue(Script(chunks=[], error=InvalidRequest("context too long")))
    with pytest.raises(InvalidRequest):
        await route(make_router(), ["main/m", "backup/b"])
    assert len(primary.requests) == 1 and backup.requests == []


async def test_after_the_first_delta_a_failure_is_raised_not_retried(make_router, primary: FakeProvider, backup):
    primary.enqueue(Script(chunks=["Part one"], error=ProviderError("reset", retryable=True)))
    seen = []
    with pytest.raises(ProviderError):
        async with aclosing(make_router().stream(["main/m", "backup/b"], MESSAGES, GenerationParams())) as events:
            async for event in events:
                seen.append(event)
    assert seen == [TextDelta("Part one")]  # once, and nothing from the fallback spliced on
    assert len(primary.requests) == 1 and backup.requests == []


async def test_no_first_token_in_time_falls_back_and_cancels_the_slow_stream(
    make_router, primary: FakeProvider, backup: FakeProvider, metrics: Metrics
):
    primary.enqueue(Script(chunks=["late"], delay=30))
    text, end = await route(make_router(first_token_timeout=0.05), ["main/m", "backup/b"])
    assert text == "echo: hi" and end.model == "backup/b"
    assert primary.cancelled == 1  # the slow upstream call was stopped, not left running
    assert len(primary.requests) == 1  # a timeout moves on; it is not retried on the same model
    assert sample(metrics, "daehwa_upstream_errors_total", model="main/m", kind="first_token_timeout") == 1


async def test_the_overall_deadline_ends_the_search(make_router, primary: FakeProvider, backup: FakeProvider):
    primary.enqueue(Script(chunks=["late"], delay=30))
    backup.enqueue(Script(chunks=["late too"], delay=30))
    with pytest.raises(ProviderTimeout) as info:
        await route(make_router(first_token_timeout=5, first_token_deadline=0.05), ["main/m", "backup/b"])
    assert "DAEHWA_FIRST_TOKEN_DEADLINE" in info.value.message
    assert backup.requests == []  # the deadline was spent on the first model


async def test_a_stall_mid_stream_ends_the_reply_and_keeps_what_came(make_router, primary: FakeProvider):
    primary.enqueue(Script(chunks=["Half a "], hang=True))
    seen = []
    with pytest.raises(StreamStalled) as info:
        async with aclosing(
            make_router(stream_idle_timeout=0.05).stream(["main/m"], MESSAGES, GenerationParams())
        ) as s:
            async for event in s:
                seen.append(event)
    assert seen == [TextDelta("Half a ")]
    assert "DAEHWA_STREAM_IDLE_TIMEOUT" in info.value.message
    assert primary.cancelled == 1


async def test_the_breaker_opens_and_then_the_model_is_skipped_without_a_call(
    make_router, primary: FakeProvider, backup: FakeProvider, metrics: Metrics, clock: Clock
):
    router = make_router(retry=RetryPolicy(attempts=2, base_delay=0, max_delay=1))
    primary.enqueue(*(retryable() for _ in range(4)))
    for _ in range(2):  # 2 turns x 2 tries = 4 failures: min_requests reached at 100% errors
        text, end = await route(router, ["main/m", "backup/b"])
        assert end.model == "backup/b"
    assert router.model_state("main/m") == "open"
    assert sample(metrics, "daehwa_circuit_breaker_state", model="main/m") == 2
    calls = len(primary.requests)
    text, end = await route(router, ["main/m", "backup/b"])
    assert end.model == "backup/b" and len(primary.requests) == calls  # failed fast: no upstream call
    assert sample(metrics, "daehwa_upstream_requests_total", model="main/m", result="circuit_open") == 1
    health = router.health()
    [snap] = [b for b in health["breakers"] if b.name == "main/m"]
    assert snap.state == "open" and snap.failures == 4

    clock.now += 31  # half-open: one probe goes through; it succeeds and closes the breaker
    text, end = await route(router, ["main/m", "backup/b"])
    assert end.model == "main/m" and text == "echo: hi"
    assert router.model_state("main") in ("closed",)  # "main" resolves to main/m
    assert sample(metrics, "daehwa_circuit_breaker_state", model="main/m") == 0
    assert sample(metrics, "daehwa_circuit_breaker_transitions_total", model="main/m", state="half-open") == 1


async def test_an_open_breaker_with_no_fallback_fails_fast_with_a_clear_error(make_router, primary: FakeProvider):
    router = make_router(retry=RetryPolicy(attempts=1), breaker=BreakerPolicy(min_requests=2))
    primary.enqueue(retryable(), retryable())
    for _ in range(2):
        with pytest.raises(ProviderError):
            await route(router, ["main/m"])
    with pytest.raises(ModelUnavailable) as info:
        await route(router, ["main/m"])
    assert info.value.code == "circuit_open"
    assert "circuit breaker is open" in info.value.message and "fallback" in info.value.message


async def test_a_busy_provider_sends_the_overflow_to_the_fallback(
    make_router, primary: FakeProvider, backup: FakeProvider, metrics: Metrics
):
    router = make_router(bulkhead_limit=1, bulkhead_wait=0.02)
    primary.enqueue(Script(chunks=["first"], hang=True))
    first = router.stream(["main/m"], MESSAGES, GenerationParams())
    assert await anext(first) == TextDelta("first")  # holds main's only slot
    assert sample(metrics, "daehwa_bulkhead_active", provider="main") == 1
    _, end = await route(router, ["main/m", "backup/b"])
    assert end.model == "backup/b"
    assert sample(metrics, "daehwa_upstream_errors_total", model="main/m", kind="provider_busy") == 1
    with pytest.raises(ProviderBusy):
        await route(router, ["main/m"])
    await first.aclose()
    assert sample(metrics, "daehwa_bulkhead_active", provider="main") == 0
    assert router.model_state("main/m") == "closed"  # being busy says nothing about the upstream's health


async def test_closing_mid_stream_stops_the_upstream_and_charges_nothing(make_router, primary: FakeProvider):
    router = make_router()
    primary.enqueue(Script(chunks=["a", "b", "c"], delay=0.001))
    events = router.stream(["main/m"], MESSAGES, GenerationParams())
    assert await anext(events) == TextDelta("a")
    await events.aclose()
    assert primary.cancelled == 1
    assert router.breaker("main/m").snapshot().requests == 0
    assert router.health()["bulkheads"][0].active == 0


async def test_fallbacks_that_cannot_take_the_request_are_skipped(make_router, primary: FakeProvider):
    strict = FakeProvider("strict", models=("s",))
    strict.supported_params = frozenset({"temperature"})
    router = Router(ProviderRegistry([primary, strict]), Metrics(), config(), sleep=Sleeps())
    primary.enqueue(Script(chunks=[], error=ProviderError("down")))
    with pytest.raises(ProviderError) as info:
        await route(router, ["main/m", "strict/s"], GenerationParams(seed=1))
    assert strict.requests == []
    assert "seed" in info.value.message  # the skip is reported, not silent
    with pytest.raises(UnsupportedParameter):  # the requested model itself rejecting it is the caller's error
        await route(router, ["strict/s"], GenerationParams(seed=1))


async def test_global_fallback_models_come_after_the_given_ones(primary, backup, metrics, sleeps):
    router = Router(ProviderRegistry([primary, backup]), metrics, config(fallback_models=("backup", "main/m")))
    primary.enqueue(Script(chunks=[], error=ProviderError("down")))
    _, end = await route(router, ["main/m"])
    assert end.model == "backup/b" and end.fallback_used
    assert len(primary.requests) == 1  # "main/m" again in the list is not tried twice


async def test_first_token_timeout_error_names_the_setting():
    error = FirstTokenTimeout("x")
    assert error.code == "first_token_timeout" and error.status == 504 and error.retryable


async def test_a_cancelled_turn_while_waiting_for_a_retry_leaves_nothing_behind(primary: FakeProvider, metrics):
    router = Router(ProviderRegistry([primary]), metrics, config(retry=RetryPolicy(3, base_delay=5, max_delay=5)))
    primary.enqueue(retryable("x", retry_after=5))

    async def run() -> None:
        await route(router, ["main/m"])

    task = asyncio.create_task(run())
    await primary.started.wait()
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert router.health()["bulkheads"][0].active == 0
    assert len(primary.requests) == 1


class Broken(FakeProvider):
    async def stream(self, request):  # type: ignore[no-untyped-def, override]
        self.requests.append(request)
        raise KeyError("a bug in a provider plugin")
        yield  # pragma: no cover - makes this an async generator


async def test_a_crashing_provider_counts_as_a_failure_and_the_fallback_answers(backup: FakeProvider, metrics):
    broken = Broken("main", models=("m",))
    router = Router(ProviderRegistry([broken, backup]), metrics, config(), sleep=Sleeps())
    text, end = await route(router, ["main/m", "backup/b"])
    assert (text, end.model) == ("echo: hi", "backup/b")
    assert len(broken.requests) == 1  # not retried
    assert sample(metrics, "daehwa_upstream_errors_total", model="main/m", kind="provider_crashed") == 1
    assert router.breaker("main/m").snapshot().failures == 1


async def test_loading_a_model_does_not_count_against_the_first_token_timeout(settings):
    """A provider's warm-up (the embedded model loading on first use) happens before the first-token clock starts."""
    from daehwa.chat import TurnRequest
    from daehwa.providers.registry import ProviderRegistry
    from daehwa.services import build_services
    from daehwa.types import Outcome
    from tests.conftest import FakeProvider

    class SlowToLoad(FakeProvider):
        warmed: ClassVar[list[str]] = []

        async def warm(self, model: str) -> None:
            self.warmed.append(model)
            await asyncio.sleep(0.6)

    provider = SlowToLoad()
    svc = build_services(
        settings.model_copy(update={"first_token_timeout": 0.3, "first_token_deadline": 0.5}),
        providers=ProviderRegistry([provider]),
    )
    await svc.start()
    try:
        user = await svc.store.create_user("carol", password_hash=None)
        _, finished = await svc.chat.run(TurnRequest(user=user, content="hi"))
        assert finished.outcome is Outcome.OK and finished.message.content == "echo: hi"
        assert provider.warmed == ["echo"]
    finally:
        await svc.aclose()


async def test_a_provider_may_set_its_own_first_token_timeout(settings):
    """The embedded model gets DAEHWA_LOCAL_FIRST_TOKEN_TIMEOUT: slow prompt processing is not a failing upstream."""
    from daehwa.chat import TurnRequest
    from daehwa.providers.registry import ProviderRegistry
    from daehwa.services import build_services
    from daehwa.types import Outcome
    from tests.conftest import FakeProvider, Script

    patient = FakeProvider()
    patient.first_token_timeout = 2.0
    patient.enqueue(Script(chunks=["late ", "but here"], delay=0.5))
    svc = build_services(
        settings.model_copy(update={"first_token_timeout": 0.1, "first_token_deadline": 0.2}),
        providers=ProviderRegistry([patient]),
    )
    await svc.start()
    try:
        user = await svc.store.create_user("erin", password_hash=None)
        _, finished = await svc.chat.run(TurnRequest(user=user, content="hi"))
        assert finished.outcome is Outcome.OK and finished.message.content == "late but here"
    finally:
        await svc.aclose()


def test_the_local_provider_uses_the_local_first_token_timeout(settings):
    from daehwa.providers.base import ProviderConfig
    from daehwa.providers.local import LocalProvider

    provider = LocalProvider(
        ProviderConfig(name="local", type="local"), settings.model_copy(update={"local_first_token_timeout": 42.0})
    )
    assert provider.first_token_timeout == 42.0


# -- breakers shared between processes (the store's board) -------------------------------------------------------
class BrokenBoard(BreakerBoard):
    """A board whose store is down."""

    def __init__(self) -> None:
        self.calls = 0

    async def opened(self, model: str, seconds: float) -> None:
        self.calls += 1
        raise ConnectionError("store down")

    async def closed(self, model: str) -> None:
        raise ConnectionError("store down")

    async def open_breakers(self) -> dict[str, float]:
        self.calls += 1
        raise ConnectionError("store down")


async def _wait_for(check, within: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


@pytest.mark.parametrize("backend", [pytest.param("redis", marks=pytest.mark.redis),
                                     pytest.param("postgres", marks=pytest.mark.postgres)])  # fmt: skip
async def test_a_breaker_opened_in_one_process_is_open_in_another(primary: FakeProvider, backend: str) -> None:
    from tests.test_stores import _postgres_namespace, _redis_namespace

    namespace = _redis_namespace() if backend == "redis" else _postgres_namespace()
    async with namespace as store_factory:
        stores = [store_factory(), store_factory()]  # two service instances on one Redis namespace or PG schema
        for store in stores:
            await store.open()
        one, other = (
            Router(ProviderRegistry([primary]), Metrics(), config(breaker=BreakerPolicy(min_requests=2)))
            for _ in stores
        )
        sharing = [
            asyncio.ensure_future(router.share_breakers(store.breaker_board(), every=0.05))
            for router, store in zip((one, other), stores, strict=True)
        ]
        try:
            await asyncio.sleep(0.1)
            primary.enqueue(*(Script(chunks=[], error=ProviderError("down")) for _ in range(2)))
            for _ in range(2):
                with pytest.raises(ProviderError):
                    await route(one, ["main/m"], GenerationParams())
            assert one.model_state("main/m") == "open"
            assert await _wait_for(lambda: other.model_state("main/m") == "open")
            retry_in = other.breaker("main/m").retry_in()
            assert retry_in is not None and 25 < retry_in <= 30  # for the time the first one has left
            # The other process refuses at once, without calling the upstream.
            calls = len(primary.requests)
            with pytest.raises(ModelUnavailable):
                await route(other, ["main/m"], GenerationParams())
            assert len(primary.requests) == calls
        finally:
            for task in sharing:
                task.cancel()
            await asyncio.gather(*sharing, return_exceptions=True)
            for store in stores:
                await store.close()


async def test_breakers_work_in_process_when_the_board_cannot_be_reached(primary: FakeProvider) -> None:
    router = Router(ProviderRegistry([primary]), Metrics(), config(breaker=BreakerPolicy(min_requests=2)))
    board = BrokenBoard()
    sharing = asyncio.ensure_future(router.share_breakers(board, every=0.01))
    try:
        await asyncio.sleep(0.05)
        primary.enqueue(*(Script(chunks=[], error=ProviderError("down")) for _ in range(2)))
        for _ in range(2):
            with pytest.raises(ProviderError):
                await route(router, ["main/m"], GenerationParams())
        assert router.model_state("main/m") == "open"  # the local breaker opened all the same
        assert await _wait_for(lambda: board.calls > 3)
    finally:
        sharing.cancel()
        await asyncio.gather(sharing, return_exceptions=True)

"""Fault injection: the whole pipeline (router, OpenAIProvider, the real SDK, SQLite) against two real fake
OpenAI-compatible servers on loopback (tests/fake_upstream.py), "up" (the requested model) and "backup" (the fallback).

For each fault: what the user receives, what is stored (the user's message always), what the breaker does, and that
no text is delivered twice. Timeouts are configured in tenths of a second; nothing asserts speed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from daehwa.chat import TurnDelta, TurnFinished, TurnRequest, TurnStarted
from daehwa.config import Settings
from daehwa.i18n import t
from daehwa.services import Services, build_services
from daehwa.types import MessageStatus, Outcome, StoredMessage, User
from tests.fake_upstream import FakeUpstream, Fault, Reply

REPLY = Reply("Hello there, this is the model speaking today.")
BACKUP = Reply("Backup here: the main model is resting.")


@pytest.fixture
def upstreams() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    with FakeUpstream(default=REPLY) as up, FakeUpstream(default=BACKUP) as backup:
        yield up, backup


@pytest.fixture
def up(upstreams: tuple[FakeUpstream, FakeUpstream]) -> FakeUpstream:
    return upstreams[0]


@pytest.fixture
def backup(upstreams: tuple[FakeUpstream, FakeUpstream]) -> FakeUpstream:
    return upstreams[1]


def fault_settings(tmp_path: Path, up: FakeUpstream, backup: FakeUpstream, **values: object) -> Settings:
    providers = tmp_path / "providers.toml"
    providers.write_text(
        f'[providers.up]\ntype = "openai"\nbase_url = "{up.base_url}"\nmodels = ["fake-model"]\n\n'
        f'[providers.backup]\ntype = "openai"\nbase_url = "{backup.base_url}"\nmodels = ["fake-model"]\n',
        encoding="utf-8",
    )
    options: dict = {
        "data_dir": tmp_path,
        "database_url": f"sqlite:///{tmp_path / 'faults.db'}",
        "providers_file": providers,
        "default_model": "up/fake-model",
        "fallback_models": ("backup/fake-model",),
        "request_timeout": 10,
        "retry_base_delay": 0.01,
        "retry_max_delay": 1.0,
        "first_token_timeout": 0.5,
        "first_token_deadline": 4.0,
        "stream_idle_timeout": 0.5,
        "breaker_min_requests": 3,
        "breaker_open_seconds": 60,
        "stream_flush_seconds": 0.05,
    }
    options.update(values)
    return Settings(_env_file=None, **options)  # type: ignore[call-arg]


@pytest.fixture
def settings(tmp_path: Path, up: FakeUpstream, backup: FakeUpstream) -> Settings:
    return fault_settings(tmp_path, up, backup)


@asynccontextmanager
async def custom_services(
    tmp_path: Path, up: FakeUpstream, backup: FakeUpstream, **values: object
) -> AsyncIterator[Services]:
    svc = build_services(fault_settings(tmp_path, up, backup, **values))
    await svc.start()
    try:
        yield svc
    finally:
        await svc.aclose()


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    svc = build_services(settings)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.aclose()


@pytest.fixture
async def alice(services: Services) -> User:
    return await services.store.create_user("alice", password_hash=None)


@dataclass
class Turn:
    received: str  # everything the user was sent, in order
    started: TurnStarted
    finished: TurnFinished
    stored: list[StoredMessage]


async def turn(services: Services, user: User, content: str, conversation_id: str | None = None) -> Turn:
    deltas: list[str] = []
    started = finished = None
    async with aclosing(
        services.chat.turn(TurnRequest(user=user, content=content, conversation_id=conversation_id, locale="ko"))
    ) as events:
        async for event in events:
            if isinstance(event, TurnStarted):
                started = event
            elif isinstance(event, TurnDelta):
                deltas.append(event.text)
            elif isinstance(event, TurnFinished):
                finished = event
    assert started is not None and finished is not None
    stored = await services.store.list_messages(user.id, started.conversation.id) or []
    return Turn("".join(deltas), started, finished, stored)


def breaker(services: Services, model: str = "up/fake-model"):  # type: ignore[no-untyped-def]
    return services.router.breaker(model).snapshot()


def metric(services: Services, name: str, **labels: str) -> float:
    return services.metrics.registry.get_sample_value(name, labels) or 0.0


def assert_user_message_kept(result: Turn, content: str) -> None:
    assert result.stored[0].role == "user" and result.stored[0].content == content
    assert result.stored[0].status is MessageStatus.COMPLETE


# -- faults before the first token: retried or sent to the fallback, invisible to the user ------------------------
@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fault.status(500), id="500"),
        pytest.param(Fault.status(503), id="503"),
        pytest.param(Fault.reset(), id="connection-reset"),
    ],
)
async def test_a_transient_failure_is_retried_and_the_user_sees_one_clean_reply(
    services: Services, alice: User, up: FakeUpstream, backup: FakeUpstream, fault: Fault
):
    up.enqueue(fault)
    result = await turn(services, alice, "hi")
    assert result.received == REPLY.text  # once: nothing from the failed try, nothing doubled
    assert result.finished.outcome is Outcome.OK and result.finished.model == "up/fake-model"
    assert_user_message_kept(result, "hi")
    assert (result.stored[1].content, result.stored[1].status) == (REPLY.text, MessageStatus.COMPLETE)
    assert len(up.requests) == 2 and backup.requests == []
    snap = breaker(services)
    assert (snap.state, snap.requests, snap.failures) == ("closed", 2, 1)
    assert metric(services, "daehwa_upstream_retries_total", model="up/fake-model") == 1


async def test_429_retry_after_is_waited_for_then_retried(services: Services, alice: User, up: FakeUpstream):
    up.enqueue(Fault.rate_limited(retry_after=0.05))
    result = await turn(services, alice, "hi")
    assert result.received == REPLY.text
    assert len(up.requests) == 2
    assert metric(services, "daehwa_upstream_errors_total", model="up/fake-model", kind="upstream_rate_limited") == 1


async def test_429_asking_too_long_a_wait_goes_to_the_fallback(
    services: Services, alice: User, up: FakeUpstream, backup: FakeUpstream
):
    up.enqueue(Fault.rate_limited(retry_after=30))
    result = await turn(services, alice, "hi")
    assert result.received == BACKUP.text
    assert result.finished.outcome is Outcome.FALLBACK and result.finished.model == "backup/fake-model"
    reply = result.stored[1]
    assert (reply.status, reply.model, reply.meta.get("fallback_model")) == (
        MessageStatus.COMPLETE,  # real model text: it stays in the conversation's context
        "backup/fake-model",
        True,
    )
    assert len(up.requests) == 1
    [record] = await services.store.usage_totals(user_id=alice.id)
    assert record.model == "backup/fake-model"


async def test_persistent_5xx_uses_up_the_tries_then_falls_back(
    services: Services, alice: User, up: FakeUpstream, backup: FakeUpstream
):
    up.enqueue(Fault.status(502), Fault.status(503), Fault.status(500))
    result = await turn(services, alice, "hi")
    assert len(up.requests) == 3  # DAEHWA_RETRY_ATTEMPTS
    assert result.received == BACKUP.text and result.finished.outcome is Outcome.FALLBACK
    assert breaker(services).state == "open"  # 3 of 3 failed, min_requests = 3


async def test_no_first_token_in_time_falls_back_and_hangs_up_on_the_slow_upstream(
    services: Services, alice: User, up: FakeUpstream, backup: FakeUpstream
):
    up.enqueue(Fault.delay_first_token(30))
    result = await turn(services, alice, "hi")
    assert result.received == BACKUP.text and result.finished.outcome is Outcome.FALLBACK
    assert await up.requests[0].wait_disconnected()  # the slow request was cancelled, not left running
    assert len(up.requests) == 1  # a timeout is not retried on the same model
    assert metric(services, "daehwa_upstream_errors_total", model="up/fake-model", kind="first_token_timeout") == 1


async def test_a_malformed_first_chunk_goes_to_the_fallback(
    services: Services, alice: User, up: FakeUpstream, backup: FakeUpstream
):
    up.enqueue(Fault.malformed_chunk(after=0))
    result = await turn(services, alice, "hi")
    assert result.received == BACKUP.text
    assert len(up.requests) == 1  # malformed is not retryable: another try would not help
    assert metric(services, "daehwa_upstream_errors_total", model="up/fake-model", kind="upstream_malformed") == 1


# -- faults after the first token: the partial reply is kept, marked interrupted, never spliced ------------------
@pytest.mark.parametrize(
    ("fault", "code"),
    [
        pytest.param(Fault.stall_after(3), "stream_stalled", id="stall"),
        pytest.param(Fault.reset_after(3), "upstream_unreachable", id="reset"),
        pytest.param(Fault.malformed_chunk(after=3), "upstream_malformed", id="malformed"),
        pytest.param(Fault.stream_error("GPU fell over", after=3), "upstream_error", id="error-event"),
    ],
)
async def test_a_stream_breaking_mid_way_keeps_the_partial_reply(
    services: Services, alice: User, up: FakeUpstream, backup: FakeUpstream, fault: Fault, code: str
):
    up.enqueue(fault)
    result = await turn(services, alice, "tell me")
    partial = "".join((fault.reply or Reply()).pieces(1)[0][:3])  # the three chunks sent before the fault
    assert result.received == partial  # exactly what came, once
    assert result.finished.outcome is Outcome.INTERRUPTED and result.finished.finish_reason == "interrupted"
    assert result.finished.error is not None and result.finished.error.code == code
    assert_user_message_kept(result, "tell me")
    reply = result.stored[1]
    assert (reply.content, reply.status) == (partial, MessageStatus.INTERRUPTED)
    assert reply.meta["error"]["code"] == code
    assert len(up.requests) == 1 and backup.requests == []  # no retry, no continuation elsewhere
    assert breaker(services).failures == 1


# -- everything down: the canned reply ---------------------------------------------------------------------------
async def test_when_every_model_fails_the_user_gets_the_localized_fallback_reply(
    services: Services, alice: User, up: FakeUpstream, backup: FakeUpstream
):
    up.enqueue(*(Fault.status(503) for _ in range(3)))
    backup.enqueue(*(Fault.status(503) for _ in range(3)))
    result = await turn(services, alice, "are you there?")
    canned = t("fallback_reply", "ko")
    assert result.received == canned
    assert result.finished.outcome is Outcome.FALLBACK and result.finished.error is None
    assert_user_message_kept(result, "are you there?")
    reply = result.stored[1]
    assert (reply.content, reply.status) == (canned, MessageStatus.FALLBACK)
    assert reply.meta["fallback_reply"]["code"] == "all_models_failed"
    assert result.finished.usage.total_tokens == 0  # nothing charged for a reply no model wrote
    [record] = await services.store.usage_totals(user_id=alice.id)
    assert (record.turns, record.prompt_tokens, record.completion_tokens) == (1, 0, 0)
    assert metric(services, "daehwa_fallbacks_total", kind="reply") == 1
    assert metric(services, "daehwa_turns_total", source="api", outcome="fallback") == 1


async def test_the_canned_reply_is_not_sent_back_to_the_model(tmp_path: Path, up: FakeUpstream, backup):
    async with custom_services(tmp_path, up, backup, breaker_min_requests=100) as svc:
        user = await svc.store.create_user("alice", password_hash=None)
        up.enqueue(*(Fault.status(503) for _ in range(3)))
        backup.enqueue(*(Fault.status(503) for _ in range(3)))
        first = await turn(svc, user, "first question")
        assert first.received == t("fallback_reply", "ko")
        await turn(svc, user, "second question", first.started.conversation.id)
        sent = [m["content"] for m in up.last.json["messages"] if m["role"] != "system"]
        assert sent == ["first question", "second question"]


async def test_fallback_reply_off_ends_the_turn_with_the_error(tmp_path: Path, up: FakeUpstream, backup):
    async with custom_services(tmp_path, up, backup, fallback_reply=False, fallback_models=()) as svc:
        user = await svc.store.create_user("alice", password_hash=None)
        up.enqueue(*(Fault.status(503) for _ in range(3)))
        result = await turn(svc, user, "hi")
        assert result.received == ""
        assert result.finished.outcome is Outcome.ERROR and result.finished.error is not None
        assert result.stored[1].status is MessageStatus.ERROR


# -- the upstream dies mid-conversation ----------------------------------------------------------------------------
async def test_upstream_killed_mid_conversation_keeps_every_message_and_the_breaker_opens(
    services: Services, alice: User, up: FakeUpstream, backup: FakeUpstream
):
    first = await turn(services, alice, "one")
    cid = first.started.conversation.id
    assert first.received == REPLY.text
    up.stop()  # connection refused from now on
    second = await turn(services, alice, "two", cid)
    assert second.received == BACKUP.text and second.finished.outcome is Outcome.FALLBACK
    assert breaker(services).state == "open"  # 3 refused connections out of 4 calls
    calls_before = len(backup.requests)
    skipped = metric(services, "daehwa_upstream_requests_total", model="up/fake-model", result="circuit_open")
    third = await turn(services, alice, "three", cid)
    assert third.received == BACKUP.text
    # Failed fast: one skip, no connection attempt (a refused connection would be an "error" result).
    assert (
        metric(services, "daehwa_upstream_requests_total", model="up/fake-model", result="circuit_open") == skipped + 1
    )
    assert metric(services, "daehwa_upstream_requests_total", model="up/fake-model", result="error") == 2
    assert len(backup.requests) == calls_before + 1
    backup.stop()  # now nothing answers at all: the canned reply, at once (no waiting on an open breaker)
    fourth = await turn(services, alice, "four", cid)
    assert fourth.received == t("fallback_reply", "ko")
    contents = [(m.role, m.content, m.status) for m in fourth.stored]
    assert contents == [
        ("user", "one", MessageStatus.COMPLETE),
        ("assistant", REPLY.text, MessageStatus.COMPLETE),
        ("user", "two", MessageStatus.COMPLETE),
        ("assistant", BACKUP.text, MessageStatus.COMPLETE),
        ("user", "three", MessageStatus.COMPLETE),
        ("assistant", BACKUP.text, MessageStatus.COMPLETE),
        ("user", "four", MessageStatus.COMPLETE),
        ("assistant", t("fallback_reply", "ko"), MessageStatus.FALLBACK),
    ]
    states = {b.name: b.state for b in services.router.health()["breakers"]}
    assert states["up/fake-model"] == "open"
    assert metric(services, "daehwa_circuit_breaker_state", model="up/fake-model") == 2

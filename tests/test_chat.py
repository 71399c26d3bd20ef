"""The turn pipeline against the scripted FakeProvider and a real SQLite store."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import pytest

from daehwa.chat import TurnDelta, TurnFinished, TurnRequest, TurnStarted
from daehwa.errors import InvalidRequest, ModelNotFound, NotFound, ProviderError, UnsupportedParameter
from daehwa.services import Services
from daehwa.stores import ConversationQuery, MessageChange, NewTurn
from daehwa.types import ChatMessage, GenerationParams, MessageStatus, Outcome, User

from .conftest import FakeProvider, Script


async def collect(services: Services, request: TurnRequest) -> list[object]:
    async with aclosing(services.chat.turn(request)) as events:
        return [e async for e in events]


async def test_a_turn_streams_and_stores_both_messages(services: Services, alice: User, fake_provider: FakeProvider):
    fake_provider.enqueue(Script(chunks=["안녕", "하세요", "!"]))
    events = await collect(services, TurnRequest(user=alice, content="안녕?"))
    assert isinstance(events[0], TurnStarted)
    assert [e.text for e in events if isinstance(e, TurnDelta)] == ["안녕", "하세요", "!"]
    finished = events[-1]
    assert isinstance(finished, TurnFinished)
    assert finished.outcome is Outcome.OK
    assert finished.message.content == "안녕하세요!"
    assert finished.message.status is MessageStatus.COMPLETE
    stored = await services.store.list_messages(alice.id, events[0].conversation.id)
    assert [(m.role, m.content, m.status) for m in stored] == [
        ("user", "안녕?", MessageStatus.COMPLETE),
        ("assistant", "안녕하세요!", MessageStatus.COMPLETE),
    ]


async def test_history_is_sent_on_the_second_turn(services: Services, alice: User, fake_provider: FakeProvider):
    started, _ = await services.chat.run(TurnRequest(user=alice, content="My name is Alice."))
    fake_provider.enqueue(Script(chunks=["Your name is Alice."]))
    await services.chat.run(
        TurnRequest(user=alice, content="What is my name?", conversation_id=started.conversation.id)
    )
    sent = fake_provider.requests[-1].messages
    assert sent[0].role == "system"  # the default persona's prompt
    assert [(m.role, m.content) for m in sent[1:]] == [
        ("user", "My name is Alice."),
        ("assistant", "echo: My name is Alice."),
        ("user", "What is my name?"),
    ]


async def test_user_message_is_stored_even_when_the_provider_fails(
    services: Services, alice: User, fake_provider: FakeProvider
):
    fake_provider.enqueue(Script(chunks=[], error=ProviderError("upstream down", retryable=False)))
    started, finished = await services.chat.run(TurnRequest(user=alice, content="are you there?", locale="ko"))
    assert finished.outcome is Outcome.FALLBACK  # every model failed: the canned reply, marked as such
    stored = await services.store.list_messages(alice.id, started.conversation.id)
    assert stored[0].content == "are you there?"
    assert stored[1].status is MessageStatus.FALLBACK
    assert stored[1].content == "지금은 답변이 늦어지고 있어요. 잠시 후 다시 시도해 주세요."
    assert stored[1].meta["fallback_reply"]["code"] == "upstream_error"


async def test_without_a_fallback_reply_the_failure_is_reported_and_stored(
    services: Services, alice: User, fake_provider: FakeProvider
):
    fake_provider.enqueue(Script(chunks=[], error=ProviderError("upstream down", retryable=False)))
    started, finished = await services.chat.run(TurnRequest(user=alice, content="hello?", fallback_reply=False))
    assert finished.outcome is Outcome.ERROR
    assert isinstance(finished.error, ProviderError)
    stored = await services.store.list_messages(alice.id, started.conversation.id)
    assert stored[0].content == "hello?"
    assert (stored[1].status, stored[1].meta["error"]["code"]) == (MessageStatus.ERROR, "upstream_error")


async def test_a_stream_that_breaks_off_keeps_the_partial_reply(
    services: Services, alice: User, fake_provider: FakeProvider
):
    fake_provider.enqueue(Script(chunks=["Part one, ", "part two"], error=ProviderError("connection reset")))
    started, finished = await services.chat.run(TurnRequest(user=alice, content="tell me"))
    assert finished.outcome is Outcome.INTERRUPTED
    assert finished.message.content == "Part one, part two"
    assert finished.message.status is MessageStatus.INTERRUPTED
    stored = await services.store.list_messages(alice.id, started.conversation.id)
    assert stored[-1].content == "Part one, part two"


async def test_closing_the_stream_mid_reply_keeps_the_partial_reply(
    services: Services, alice: User, fake_provider: FakeProvider
):
    fake_provider.enqueue(Script(chunks=["first ", "second "], hang=True))
    started = None
    async with aclosing(services.chat.turn(TurnRequest(user=alice, content="go"))) as events:
        async for event in events:
            if isinstance(event, TurnStarted):
                started = event
            if isinstance(event, TurnDelta) and event.text == "second ":
                break  # the client stops reading: like a closed WebSocket
    assert started is not None
    stored = await services.store.list_messages(alice.id, started.conversation.id)
    assert stored[-1].content == "first second "
    assert stored[-1].status is MessageStatus.INTERRUPTED
    assert fake_provider.cancelled == 1


async def test_cancelling_the_task_mid_reply_keeps_the_partial_reply(
    services: Services, alice: User, fake_provider: FakeProvider
):
    fake_provider.enqueue(Script(chunks=["partial"], hang=True))
    seen = asyncio.Event()
    conversation_id: list[str] = []

    async def consume() -> None:
        async for event in services.chat.turn(TurnRequest(user=alice, content="go")):
            if isinstance(event, TurnStarted):
                conversation_id.append(event.conversation.id)
            if isinstance(event, TurnDelta):
                seen.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(seen.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await services.chat.drain()
    stored = await services.store.list_messages(alice.id, conversation_id[0])
    assert (stored[-1].content, stored[-1].status) == ("partial", MessageStatus.INTERRUPTED)


async def test_a_long_reply_is_saved_while_it_streams(services: Services, alice: User, fake_provider: FakeProvider):
    fake_provider.enqueue(Script(chunks=["a", "b", "c"], delay=0.06, hang=True))
    async with aclosing(services.chat.turn(TurnRequest(user=alice, content="go"))) as events:
        async for event in events:
            if isinstance(event, TurnStarted):
                conversation_id = event.conversation.id
            if isinstance(event, TurnDelta) and event.text == "c":
                await asyncio.sleep(0.1)  # let the background save land
                stored = await services.store.list_messages(alice.id, conversation_id)
                assert stored[-1].status is MessageStatus.STREAMING
                assert stored[-1].content.startswith("ab")
                break


async def test_usage_is_recorded(services: Services, alice: User, fake_provider: FakeProvider):
    from daehwa.types import Usage

    fake_provider.enqueue(Script(chunks=["ok"], usage=Usage(12, 3)))
    _, finished = await services.chat.run(TurnRequest(user=alice, content="count me"))
    assert finished.usage.total_tokens == 15
    assert finished.ttft_ms is not None and finished.total_ms >= finished.ttft_ms
    totals = await services.store.usage_totals(user_id=alice.id)
    assert [(u.model, u.prompt_tokens, u.completion_tokens, u.turns) for u in totals] == [("fake/echo", 12, 3, 1)]


async def test_bad_requests_store_nothing(services: Services, alice: User):
    with pytest.raises(InvalidRequest):
        await services.chat.run(TurnRequest(user=alice, content="   "))
    with pytest.raises(InvalidRequest):
        await services.chat.run(TurnRequest(user=alice, content="x" * (services.settings.max_message_chars + 1)))
    with pytest.raises(ModelNotFound):
        await services.chat.run(TurnRequest(user=alice, content="hi", model="nosuch/model"))
    with pytest.raises(NotFound):
        await services.chat.run(TurnRequest(user=alice, content="hi", conversation_id="missing"))
    assert await services.store.list_conversations(alice.id, ConversationQuery(kind=None)) == []


async def test_another_users_conversation_is_not_found(services: Services, alice: User, bob: User):
    started, _ = await services.chat.run(TurnRequest(user=alice, content="secret"))
    with pytest.raises(NotFound):
        await services.chat.run(TurnRequest(user=bob, content="hi", conversation_id=started.conversation.id))
    assert len(await services.store.list_messages(alice.id, started.conversation.id)) == 2


async def test_tutor_persona_speaks_first_and_fills_its_variables(
    services: Services, alice: User, fake_provider: FakeProvider
):
    conversation, first = await services.chat.start_conversation(
        alice, persona="tutor", variables={"language": "Japanese", "situation": "buying a train ticket"}
    )
    assert len(first) == 1 and "Japanese" in first[0].content and "buying a train ticket" in first[0].content
    await services.chat.run(TurnRequest(user=alice, content="こんにちは", conversation_id=conversation.id))
    sent = fake_provider.requests[-1].messages
    assert sent[0].role == "system" and "Japanese" in sent[0].content and "beginner" in sent[0].content
    assert sent[1].role == "assistant" and sent[1].content == first[0].content
    assert fake_provider.requests[-1].params.temperature == 0.8  # the persona's default


async def test_unknown_persona_variable_is_rejected(services: Services, alice: User):
    with pytest.raises(InvalidRequest, match="no variable"):
        await services.chat.start_conversation(alice, persona="tutor", variables={"colour": "blue"})


async def test_regenerate_replaces_the_last_reply(services: Services, alice: User, fake_provider: FakeProvider):
    fake_provider.enqueue(Script(chunks=["first answer"]), Script(chunks=["second answer"]))
    started, _ = await services.chat.run(TurnRequest(user=alice, content="question"))
    cid = started.conversation.id
    _, finished = await services.chat.run(TurnRequest(user=alice, conversation_id=cid, regenerate=True))
    assert finished.message.content == "second answer"
    stored = await services.store.list_messages(alice.id, cid)
    assert [(m.role, m.content) for m in stored] == [("user", "question"), ("assistant", "second answer")]


async def test_edit_replaces_the_last_user_message(services: Services, alice: User):
    started, _ = await services.chat.run(TurnRequest(user=alice, content="teh question"))
    cid = started.conversation.id
    await services.chat.run(TurnRequest(user=alice, conversation_id=cid, content="the question", edit=True))
    stored = await services.store.list_messages(alice.id, cid)
    assert [(m.role, m.content) for m in stored] == [("user", "the question"), ("assistant", "echo: the question")]


async def test_stateless_messages_are_logged_as_an_api_conversation(
    services: Services, alice: User, fake_provider: FakeProvider
):
    messages = [ChatMessage("system", "Be brief."), ChatMessage("user", "2+2?")]
    started, finished = await services.chat.run(
        TurnRequest(user=alice, messages=messages, params=GenerationParams(seed=7), source="v1")
    )
    assert fake_provider.requests[-1].messages == tuple(messages)
    assert fake_provider.requests[-1].params.seed == 7
    assert started.conversation.kind == "api"
    assert await services.store.list_conversations(alice.id) == []  # not in the chat list
    assert len(await services.store.list_conversations(alice.id, ConversationQuery(kind="api"))) == 1
    assert finished.message.content == "echo: 2+2?"


async def test_unsupported_parameter_is_rejected_before_anything_is_stored(services: Services, alice: User):
    provider = services.providers.get("fake")
    assert provider is not None
    provider.supported_params = frozenset({"temperature", "max_tokens"})
    with pytest.raises(UnsupportedParameter, match="seed"):
        await services.chat.run(TurnRequest(user=alice, content="hi", params=GenerationParams(seed=1)))
    assert await services.store.list_conversations(alice.id, ConversationQuery(kind=None)) == []


async def test_conversation_is_titled_from_the_first_message(services: Services, alice: User):
    started, _ = await services.chat.run(TurnRequest(user=alice, content="김치찌개 맛있게 끓이는 법 알려줘"))
    conversation = await services.store.get_conversation(alice.id, started.conversation.id)
    assert conversation is not None and conversation.title == "김치찌개 맛있게 끓이는 법 알려줘"


async def test_closing_right_after_the_start_finalises_the_reply(services: Services, alice: User):
    async with aclosing(services.chat.turn(TurnRequest(user=alice, content="bye"))) as events:
        started = await anext(events)
        assert isinstance(started, TurnStarted)
    stored = await services.store.list_messages(alice.id, started.conversation.id)
    assert (stored[-1].content, stored[-1].status) == ("", MessageStatus.INTERRUPTED)


async def test_a_conversation_started_by_a_persona_is_named_by_the_first_message(services: Services, alice: User):
    conversation, _ = await services.chat.start_conversation(alice, persona="tutor")
    assert conversation.title == "회화 튜터"
    started, _ = await services.chat.run(
        TurnRequest(user=alice, content="Hello, I'd like a latte", conversation_id=conversation.id)
    )
    assert started.conversation.title == "Hello, I'd like a latte"  # the start event already carries it
    stored = await services.store.get_conversation(alice.id, conversation.id)
    assert stored is not None and stored.title == "Hello, I'd like a latte"


async def test_blocked_input_is_stored_as_blocked_and_never_sent(
    services: Services, alice: User, fake_provider: FakeProvider
):
    from daehwa.errors import ContentBlocked

    with pytest.raises(ContentBlocked) as caught:
        await services.chat.run(TurnRequest(user=alice, content="야 이 씨@발 놈아", locale="ko"))
    assert "부적절한 표현" in caught.value.message
    assert fake_provider.requests == []
    [conversation] = await services.store.list_conversations(alice.id)
    assert "발" not in conversation.title  # the title shows the masked text
    [message] = await services.store.list_messages(alice.id, conversation.id) or []
    assert (message.content, message.status) == ("야 이 씨@발 놈아", MessageStatus.BLOCKED)
    assert message.meta["moderation"]["matches"][0]["start"] == 4


async def test_a_blocked_edit_keeps_the_original_exchange(services: Services, alice: User):
    from daehwa.errors import ContentBlocked

    started, _ = await services.chat.run(TurnRequest(user=alice, content="first question"))
    cid = started.conversation.id
    with pytest.raises(ContentBlocked):
        await services.chat.run(TurnRequest(user=alice, conversation_id=cid, content="시발 뭐야", edit=True))
    stored = await services.store.list_messages(alice.id, cid) or []
    assert [(m.role, m.content, m.status) for m in stored] == [
        ("user", "first question", MessageStatus.COMPLETE),
        ("assistant", "echo: first question", MessageStatus.COMPLETE),
        ("user", "시발 뭐야", MessageStatus.BLOCKED),
    ]


async def test_banned_words_in_the_reply_are_masked_even_across_chunks(settings, fake_provider: FakeProvider):
    from daehwa.providers.registry import ProviderRegistry
    from daehwa.services import build_services

    svc = build_services(
        settings.model_copy(update={"filter_output_action": "mask"}), providers=ProviderRegistry([fake_provider])
    )
    await svc.start()
    try:
        user = await svc.store.create_user("dora", password_hash=None)
        fake_provider.enqueue(Script(chunks=["그건 정말 ", "씨", "발 ", "같은 일이에요."]))
        events = await collect(svc, TurnRequest(user=user, content="어때?"))
        shown = "".join(e.text for e in events if isinstance(e, TurnDelta))
        finished = events[-1]
        assert isinstance(finished, TurnFinished)
        assert shown == "그건 정말 ** 같은 일이에요."  # the word split over two chunks never showed
        assert finished.message.content == shown  # what was shown is what was stored
    finally:
        await svc.aclose()


async def test_a_starting_server_recovers_replies_a_crash_left_streaming(settings, fake_provider: FakeProvider):
    from daehwa.providers.registry import ProviderRegistry
    from daehwa.services import build_services

    first = build_services(settings, providers=ProviderRegistry([fake_provider]))
    await first.store.open()
    user = await first.store.create_user("frank", password_hash=None)
    conversation = await first.store.create_conversation(user.id)
    _, reply = await first.store.begin_turn(user.id, conversation.id, NewTurn(user_content="q", reply_model="fake"))
    await first.store.update_message(user.id, reply.id, MessageChange(content="half an ans"))
    await first.store.close()  # the process "died" mid-reply

    # A reply begun less than a stream lease ago may be a live process's that has not taken its lease yet: the start
    # sweeps it a lease and a half later (docs/stores.md, "Recovery at start").
    short_lease = settings.model_copy(update={"stream_lease_seconds": 0.2})
    second = build_services(short_lease, providers=ProviderRegistry([fake_provider]))
    await second.start()
    try:
        for _ in range(100):
            messages = await second.store.list_messages(user.id, conversation.id) or []
            if messages[-1].status is not MessageStatus.STREAMING:
                break
            await asyncio.sleep(0.05)
        assert (messages[-1].content, messages[-1].status) == ("half an ans", MessageStatus.INTERRUPTED)
    finally:
        await second.aclose()


async def test_drain_with_a_timeout_cancels_background_work_that_never_ends(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    """A shutdown ends even when a background write waits forever (e.g. for a store connection that never comes
    back): what is still running after the timeout is cancelled, with a warning."""
    never = asyncio.Event()
    services.chat._in_background(never.wait())
    services.chat._in_background(asyncio.sleep(0))
    await asyncio.wait_for(services.chat.drain(grace_seconds=0.2), 5)
    assert not services.chat._background
    assert "cancelling 1 background task" in caplog.text

"""daehwa.django: the Channels consumer through ``WebsocketCommunicator``, on the real pipeline with fake models.

Most tests install services built by conftest (``FakeProvider`` scripts the model); one builds them the way a Django
project does, from ``settings.DAEHWA``, against ``tests/fake_upstream.py`` over HTTP.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from io import StringIO
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from .conftest import IN_CI

try:
    import channels  # noqa: F401
except ImportError:  # the [django] extra: a skip here, a failure in CI
    if IN_CI:
        raise
    pytest.skip("the [django] extra is not installed: pip install -e '.[django]'", allow_module_level=True)

from .django_settings import configure, migrate

configure()

from asgiref.sync import sync_to_async  # noqa: E402
from channels.testing import WebsocketCommunicator  # noqa: E402
from django.apps import apps  # noqa: E402
from django.contrib.auth.models import AnonymousUser  # noqa: E402
from django.contrib.auth.models import User as DjangoUser  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.db import transaction  # noqa: E402
from django.template.loader import render_to_string  # noqa: E402
from django.test import override_settings  # noqa: E402

from daehwa.config import Settings  # noqa: E402
from daehwa.django.consumers import CLOSE_LOGIN_REQUIRED, CLOSE_USER_DELETED, DaehwaChatConsumer  # noqa: E402
from daehwa.django.runtime import Runtime, daehwa_settings, get_runtime, lifespan  # noqa: E402
from daehwa.errors import ProviderError  # noqa: E402
from daehwa.providers.registry import ProviderRegistry  # noqa: E402
from daehwa.services import Services, build_services  # noqa: E402
from daehwa.stores import open_store  # noqa: E402
from daehwa.stores.base import NewConversation, NewMessage  # noqa: E402
from daehwa.types import MessageStatus  # noqa: E402

from .conftest import FakeProvider, Script  # noqa: E402
from .fake_upstream import FakeUpstream, Fault, Reply  # noqa: E402

SYSTEM = "You are a language tutor. Speak only {언어}, at the {레벨} level, with {user_name}."


class TutorConsumer(DaehwaChatConsumer):
    model = "fake/echo"
    temperature = 0.7
    system_prompt_template = SYSTEM
    first_user_message_template = "첫 문장으로 대화를 시작해주세요."
    prompt_context_data: ClassVar[dict[str, str]] = {"언어": "영어", "레벨": "초급"}
    title = "Tutor"


class GreeterConsumer(DaehwaChatConsumer):
    first_message_template = "Hi {user_name}! What shall we talk about?"


class GuestConsumer(DaehwaChatConsumer):
    first_message_template = "Welcome, guest."

    async def can_accept(self) -> bool:
        return True


class PlainConsumer(DaehwaChatConsumer):
    """No greeting: the room opens empty and waits for the user."""


MINJI = DjangoUser(pk=7, username="minji")
JOON = DjangoUser(pk=8, username="joon")


@pytest.fixture
def runtime() -> AsyncIterator[Runtime]:
    """A fresh runtime on the app for each test (each test has its own event loop and services)."""
    config: Any = apps.get_app_config("daehwa")
    saved, config.runtime = config.runtime, Runtime()
    yield config.runtime
    config.runtime = saved


@pytest.fixture
async def room(runtime: Runtime, services: Services) -> AsyncIterator[Services]:
    runtime.install(services)
    yield services
    await runtime.aclose()


def communicator(
    consumer: type[DaehwaChatConsumer], user: Any = MINJI, *, language: str = "ko", session: Any = None
) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(consumer.as_asgi(), "/ws/chat/", headers=[(b"accept-language", language.encode())])
    comm.scope["user"] = user
    if session is not None:
        comm.scope["session"] = session
    return comm


async def frames_until(comm: WebsocketCommunicator, done: Callable[[str], bool], within: float = 5.0) -> list[str]:
    """The frames received up to and including the first one ``done`` accepts."""
    got: list[str] = []
    async with asyncio.timeout(within):
        while True:
            frame = await comm.receive_from(within)
            assert "Traceback" not in frame
            got.append(frame)
            if done(frame):
                return got


def is_final_reply(frame: str) -> bool:
    return 'hx-swap-oob="outerHTML"' in frame and "daehwa-assistant" in frame


def is_notice(frame: str) -> bool:
    return 'id="daehwa-notice"' in frame and "daehwa-error" in frame


def deltas(frames: list[str]) -> list[str]:
    pattern = re.compile(r'<div id="daehwa-text-[^"]+" hx-swap-oob="beforeend">(.*)</div>')
    return [m.group(1) for f in frames if (m := pattern.fullmatch(f))]


async def conversation_of(services: Services, name: str) -> tuple[str, str]:
    record = await services.store.get_user_by_name(name)
    assert record is not None
    conversations = await services.store.list_conversations(record.user.id)
    assert len(conversations) == 1
    return record.user.id, conversations[0].id


# -- who may chat ---------------------------------------------------------------------------------------------------
async def test_an_anonymous_user_is_told_to_log_in_and_the_socket_closes(room: Services):
    comm = communicator(PlainConsumer, AnonymousUser())
    connected, _ = await comm.connect()
    assert connected  # accepted so the page can say why, then closed with a code
    notice = await comm.receive_from()
    assert "로그인해야 대화할 수 있어요" in notice and 'role="alert"' in notice
    closed = await comm.receive_output()
    assert closed == {"type": "websocket.close", "code": CLOSE_LOGIN_REQUIRED}
    assert await room.store.list_users() == []  # nobody was created


async def test_the_login_notice_follows_the_browser_language(room: Services):
    comm = communicator(PlainConsumer, AnonymousUser(), language="en-US,en;q=0.9")
    await comm.connect()
    assert "Please sign in to chat" in await comm.receive_from()
    await comm.receive_output()


async def test_a_consumer_that_allows_anonymous_users_keeps_a_guest_room_per_session(room: Services):
    session = SimpleNamespace(session_key="s3cr3t-session-key")
    comm = communicator(GuestConsumer, AnonymousUser(), session=session)
    assert (await comm.connect())[0]
    assert "Welcome, guest." in await comm.receive_from()
    await comm.send_json_to({"message": "hello"})
    await frames_until(comm, is_final_reply)
    await comm.disconnect()

    again = communicator(GuestConsumer, AnonymousUser(), session=session)
    await again.connect()
    history = await again.receive_from()
    assert "Welcome, guest." in history and "hello" in history and "echo: hello" in history
    await again.disconnect()
    users = await room.store.list_users()
    assert len(users) == 1 and users[0].anonymous
    assert "s3cr3t" not in users[0].name  # the session key itself is never stored


async def test_django_users_map_to_their_own_daehwa_users_and_rooms(room: Services):
    for user in (MINJI, JOON):
        comm = communicator(GreeterConsumer, user)
        await comm.connect()
        assert f"Hi {user.username}!" in await comm.receive_from()
        await comm.disconnect()
    names = sorted(u.name for u in await room.store.list_users())
    assert names == ["django-7", "django-8"]
    for name in names:
        await conversation_of(room, name)  # exactly one each


async def test_two_tabs_opening_at_once_share_one_conversation(room: Services):
    tabs = [communicator(GreeterConsumer) for _ in range(3)]
    await asyncio.gather(*(tab.connect() for tab in tabs))
    for tab in tabs:
        assert "Hi minji!" in await tab.receive_from()
        await tab.disconnect()
    user_id, conv_id = await conversation_of(room, "django-7")
    assert len(await room.store.list_messages(user_id, conv_id) or []) == 1  # one greeting


class TopicConsumer(DaehwaChatConsumer):
    first_message_template = "Let's talk about {topic}."

    def get_context_data(self) -> dict[str, Any]:
        return {**super().get_context_data(), "topic": self.scope["url_route"]["kwargs"]["topic"]}

    def get_conversation_key(self) -> str:
        return f"topic:{self.scope['url_route']['kwargs']['topic']}"


async def test_a_conversation_key_from_the_url_gives_one_room_per_topic(room: Services):
    from channels.routing import URLRouter
    from django.urls import path

    app = URLRouter([path("ws/topic/<str:topic>/", TopicConsumer.as_asgi())])
    for topic in ("coffee", "travel", "coffee"):
        comm = WebsocketCommunicator(app, f"/ws/topic/{topic}/")
        comm.scope["user"] = MINJI
        await comm.connect()
        assert f"Let's talk about {topic}." in await comm.receive_from()
        await comm.disconnect()
    record = await room.store.get_user_by_name("django-7")
    assert record is not None
    assert sorted(c.meta["django_consumer"] for c in await room.store.list_conversations(record.user.id)) == [
        "topic:coffee",
        "topic:travel",
    ]


# -- the bot speaks first, streams, remembers ---------------------------------------------------------------------
async def test_the_bot_speaks_first_with_the_prompt_templates_filled_in(room: Services, fake_provider: FakeProvider):
    fake_provider.enqueue(Script(chunks=["Hello! ", "What would ", "you like?"]))
    comm = communicator(TutorConsumer)
    await comm.connect()
    history = await comm.receive_from()
    assert history.startswith('<div id="daehwa-messages" hx-swap-oob="innerHTML"></div>')
    frames = await frames_until(comm, is_final_reply)
    assert "첫 문장으로" not in "".join(frames)  # the opening user message is the model's, not shown
    assert deltas(frames) == ["Hello! ", "What would ", "you like?"]
    assert "<p>Hello! What would you like?</p>" in frames[-1]

    request = fake_provider.requests[0]
    assert request.messages[0].role == "system"
    assert request.messages[0].content == "You are a language tutor. Speak only 영어, at the 초급 level, with minji."
    assert request.messages[-1].content == "첫 문장으로 대화를 시작해주세요."
    assert request.params.temperature == 0.7
    await comm.disconnect()


async def test_a_fixed_greeting_is_stored_without_calling_the_model(room: Services, fake_provider: FakeProvider):
    comm = communicator(GreeterConsumer)
    await comm.connect()
    assert "Hi minji! What shall we talk about?" in await comm.receive_from()
    await comm.disconnect()
    assert fake_provider.requests == []
    user_id, conv_id = await conversation_of(room, "django-7")
    [greeting] = await room.store.list_messages(user_id, conv_id) or []
    assert greeting.role == "assistant" and greeting.meta.get("first_message")


async def test_a_reply_streams_delta_by_delta_and_both_messages_are_stored(room: Services, fake_provider: FakeProvider):
    fake_provider.enqueue(Script(chunks=["**Bold**", " and ", "<b>escaped</b>"]))
    comm = communicator(PlainConsumer)
    await comm.connect()
    await comm.receive_from()  # the (empty) history
    await comm.send_json_to({"message": "hi there", "HEADERS": {"HX-Request": "true"}})  # as htmx-ext-ws sends it
    frames = await frames_until(comm, is_final_reply)
    opening = frames[0]
    assert 'id="daehwa-messages" hx-swap-oob="beforeend"' in opening
    assert "daehwa-user" in opening and "hi there" in opening and 'data-status="streaming"' in opening
    assert deltas(frames) == ["**Bold**", " and ", "&lt;b&gt;escaped&lt;/b&gt;"]  # text, never markup
    assert "<strong>Bold</strong>" in frames[-1] and "<b>" not in frames[-1]
    assert 'data-status="complete"' in frames[-1]
    await comm.disconnect()

    user_id, conv_id = await conversation_of(room, "django-7")
    messages = await room.store.list_messages(user_id, conv_id) or []
    assert [(m.role, m.content, m.status) for m in messages] == [
        ("user", "hi there", MessageStatus.COMPLETE),
        ("assistant", "**Bold** and <b>escaped</b>", MessageStatus.COMPLETE),
    ]


async def test_the_history_comes_back_on_every_reconnect(room: Services, fake_provider: FakeProvider):
    fake_provider.enqueue(Script(chunks=["Hi!"]), Script(chunks=["I am well."]))
    comm = communicator(TutorConsumer)
    await comm.connect()
    await comm.receive_from()
    await frames_until(comm, is_final_reply)  # the bot's opening
    await comm.send_json_to({"message": "How are you?"})
    await frames_until(comm, is_final_reply)
    await comm.disconnect()

    for _ in range(2):
        again = communicator(TutorConsumer)
        await again.connect()
        history = await again.receive_from()
        assert re.findall(r"<p>(.*?)</p>", history) == ["Hi!", "How are you?", "I am well."]
        assert "첫 문장으로" not in history
        assert await again.receive_nothing(0.2)  # no second opening: the bot spoke first once
        await again.disconnect()
    await conversation_of(room, "django-7")  # still one conversation
    # The model saw the whole stored history on the second turn, opening message included.
    assert [m.content for m in fake_provider.requests[1].messages[1:]] == [
        "첫 문장으로 대화를 시작해주세요.",
        "Hi!",
        "How are you?",
    ]


async def test_an_opening_the_model_failed_is_spoken_on_the_next_connect(room: Services, fake_provider: FakeProvider):
    fake_provider.enqueue(Script(chunks=[], error=ProviderError("upstream said 503", upstream_status=503)))
    comm = communicator(TutorConsumer, language="en")
    await comm.connect()
    await comm.receive_from()
    failed = (await frames_until(comm, is_final_reply))[-1]
    assert 'data-status="fallback"' in failed  # the model is down when the conversation is created
    await comm.disconnect()

    fake_provider.enqueue(Script(chunks=["Hello! ", "Shall we begin?"]))
    again = communicator(TutorConsumer, language="en")
    await again.connect()
    history = await again.receive_from()
    assert "Replies are delayed" not in history  # the failed reply is replaced, not shown above the new one
    frames = await frames_until(again, is_final_reply)
    assert deltas(frames) == ["Hello! ", "Shall we begin?"]
    await again.disconnect()
    assert [m.content for m in fake_provider.requests[1].messages[1:]] == ["첫 문장으로 대화를 시작해주세요."]

    user_id, conv_id = await conversation_of(room, "django-7")
    messages = await room.store.list_messages(user_id, conv_id) or []
    assert [(m.role, m.status) for m in messages] == [
        ("user", MessageStatus.COMPLETE),
        ("assistant", MessageStatus.COMPLETE),
    ]
    assert messages[0].meta.get("django_hidden")
    third = communicator(TutorConsumer)
    await third.connect()
    assert re.findall(r"<p>(.*?)</p>", await third.receive_from()) == ["Hello! Shall we begin?"]
    assert await third.receive_nothing(0.2)  # answered: not spoken again
    await third.disconnect()
    assert len(fake_provider.requests) == 2


async def test_without_a_fallback_reply_a_failed_opening_is_retried_too(
    runtime: Runtime, settings: Settings, fake_provider: FakeProvider
):
    settings = settings.model_copy(update={"fallback_reply": False})
    services = build_services(settings, providers=ProviderRegistry([fake_provider]))
    await services.start()
    runtime.install(services)
    try:
        fake_provider.enqueue(Script(chunks=[], error=ProviderError("connection reset by upstream")))
        comm = communicator(TutorConsumer)
        await comm.connect()
        await comm.receive_from()
        assert "지금은 모델에 연결할 수 없어요" in (await frames_until(comm, is_notice))[-1]
        await comm.disconnect()

        fake_provider.enqueue(Script(chunks=["Hi!"]))
        again = communicator(TutorConsumer)
        await again.connect()
        assert re.findall(r"<p>(.*?)</p>", await again.receive_from()) == []  # the room was empty
        assert "<p>Hi!</p>" in (await frames_until(again, is_final_reply))[-1]
        await again.disconnect()
        user_id, conv_id = await conversation_of(services, "django-7")
        assert [m.status for m in await services.store.list_messages(user_id, conv_id) or []] == [
            MessageStatus.COMPLETE,
            MessageStatus.COMPLETE,
        ]
    finally:
        await runtime.aclose()
        await services.aclose()


async def test_a_refused_opening_is_retried_and_two_tabs_retry_it_once(
    runtime: Runtime, settings: Settings, fake_provider: FakeProvider
):
    settings = settings.model_copy(update={"rate_limit_requests_per_minute": 1})
    services = build_services(settings, providers=ProviderRegistry([fake_provider]))
    await services.start()
    runtime.install(services)
    try:
        blocker = communicator(PlainConsumer)
        await blocker.connect()
        await blocker.receive_from()
        await blocker.send_json_to({"message": "one"})  # the minute's one request
        await frames_until(blocker, is_final_reply)
        await blocker.disconnect()
        comm = communicator(TutorConsumer, language="en")
        await comm.connect()
        await comm.receive_from()
        assert "Too many messages" in await comm.receive_from()  # the opening was refused before it was stored
        await comm.disconnect()

        services.chat.limiter = None  # the quota is lifted
        fake_provider.enqueue(Script(chunks=["Hi ", "there!"], delay=0.1))
        tabs = [communicator(TutorConsumer) for _ in range(2)]
        await asyncio.gather(*(tab.connect() for tab in tabs))
        for tab in tabs:
            await tab.receive_from()
            assert "<p>Hi there!</p>" in (await frames_until(tab, is_final_reply))[-1]
            await tab.disconnect()
        assert len(fake_provider.requests) == 2  # "one", then one opening for both tabs
    finally:
        await runtime.aclose()
        await services.aclose()


async def test_no_opening_once_the_user_has_spoken(room: Services, fake_provider: FakeProvider):
    fake_provider.enqueue(Script(chunks=[], error=ProviderError("down", upstream_status=503)))
    comm = communicator(TutorConsumer)
    await comm.connect()
    await comm.receive_from()
    await frames_until(comm, is_final_reply)  # the fallback reply
    await comm.send_json_to({"message": "hello?"})
    assert "echo: hello?" in (await frames_until(comm, is_final_reply))[-1]
    await comm.disconnect()
    again = communicator(TutorConsumer)
    await again.connect()
    await again.receive_from()
    assert await again.receive_nothing(0.2)
    await again.disconnect()
    assert len(fake_provider.requests) == 2


async def test_a_dropped_socket_keeps_the_partial_reply(room: Services, fake_provider: FakeProvider):
    fake_provider.enqueue(Script(chunks=["Half of ", "a reply"], hang=True))
    comm = communicator(PlainConsumer)
    await comm.connect()
    await comm.receive_from()
    await comm.send_json_to({"message": "tell me a story"})
    frames = await frames_until(comm, lambda f: "a reply" in f)
    assert deltas(frames) == ["Half of ", "a reply"]
    await comm.disconnect()  # the network drops mid-reply

    user_id, conv_id = await conversation_of(room, "django-7")
    reply = (await room.store.list_messages(user_id, conv_id) or [])[-1]
    assert (reply.content, reply.status) == ("Half of a reply", MessageStatus.INTERRUPTED)
    assert fake_provider.cancelled == 1

    again = communicator(PlainConsumer)
    await again.connect()
    history = await again.receive_from()
    assert "Half of a reply" in history and "답변이 중간에 멈췄어요." in history
    await again.disconnect()


async def test_stop_ends_the_reply_and_keeps_what_arrived(room: Services, fake_provider: FakeProvider):
    fake_provider.enqueue(Script(chunks=["So far"], hang=True))
    comm = communicator(PlainConsumer)
    await comm.connect()
    await comm.receive_from()
    await comm.send_json_to({"message": "go on"})
    await frames_until(comm, lambda f: "So far" in f)
    await comm.send_json_to({"message": "", "action": "stop"})  # the Stop button sends the form too
    final = (await frames_until(comm, is_final_reply))[-1]
    assert 'data-status="interrupted"' in final and "So far" in final
    await comm.send_json_to({"message": "next"})  # the room is free again
    assert "echo: next" in (await frames_until(comm, is_final_reply))[-1]
    await comm.disconnect()


async def test_a_second_message_while_a_reply_streams_is_refused_politely(room: Services, fake_provider: FakeProvider):
    fake_provider.enqueue(Script(chunks=["wait"], hang=True))
    comm = communicator(PlainConsumer, language="en")
    await comm.connect()
    await comm.receive_from()
    await comm.send_json_to({"message": "first"})
    await frames_until(comm, lambda f: "wait" in f)
    await comm.send_json_to({"message": "second"})
    notice = await comm.receive_from()
    assert "A reply is still being written" in notice
    await comm.disconnect()


def streaming_text(history: str) -> str:
    """The text of the reply still being written in a history frame."""
    match = re.search(r'<div class="daehwa-text" id="daehwa-text-[^"]+" data-thinking="[^"]*">(.*?)</div>', history)
    assert match, history
    return match.group(1)


async def test_a_second_tab_follows_the_reply_the_first_one_is_streaming(room: Services, fake_provider: FakeProvider):
    fake_provider.enqueue(Script(chunks=["one ", "two ", "three"], delay=0.3))
    first = communicator(PlainConsumer)
    await first.connect()
    await first.receive_from()
    await first.send_json_to({"message": "count"})
    await frames_until(first, lambda f: "one " in f)

    second = communicator(PlainConsumer)
    await second.connect()
    history = await second.receive_from()
    assert "count" in history and 'data-status="streaming"' in history
    frames = await frames_until(second, is_final_reply)
    assert streaming_text(history) + "".join(deltas(frames)) == "one two three"  # each piece once
    assert "<p>one two three</p>" in frames[-1] and 'data-status="complete"' in frames[-1]
    assert "<p>one two three</p>" in (await frames_until(first, is_final_reply))[-1]
    await first.disconnect()
    await second.disconnect()


async def test_stop_in_the_second_tab_stops_the_reply_of_the_first(room: Services, fake_provider: FakeProvider):
    fake_provider.enqueue(Script(chunks=["going"], hang=True))
    first = communicator(PlainConsumer)
    await first.connect()
    await first.receive_from()
    await first.send_json_to({"message": "go"})
    await frames_until(first, lambda f: "going" in f)
    second = communicator(PlainConsumer)
    await second.connect()
    await second.receive_from()
    await second.send_json_to({"message": "too", "action": "stop"})
    for tab in (first, second):
        final = (await frames_until(tab, is_final_reply))[-1]
        assert 'data-status="interrupted"' in final and "going" in final
        await tab.disconnect()


# -- deleting users ----------------------------------------------------------------------------------------------------
async def test_deleting_a_django_user_deletes_its_daehwa_data_and_closes_its_rooms(
    room: Services, fake_provider: FakeProvider
):
    await sync_to_async(migrate)()
    sora = await sync_to_async(DjangoUser.objects.create_user)("sora")
    haneul = await sync_to_async(DjangoUser.objects.create_user)("haneul")
    fake_provider.enqueue(Script(chunks=["Once upon"], hang=True))
    comm = communicator(PlainConsumer, sora, language="en")
    await comm.connect()
    await comm.receive_from()
    await comm.send_json_to({"message": "a story"})
    await frames_until(comm, lambda f: "Once upon" in f)
    other = communicator(GreeterConsumer, haneul)
    await other.connect()
    await other.receive_from()
    assert await room.store.get_user_by_name(f"django-{sora.pk}") is not None

    await sync_to_async(sora.delete)()  # as the admin or a view would, in a thread of the server's process

    frames = await frames_until(comm, lambda f: "This account was deleted" in f)
    assert "Traceback" not in "".join(frames)
    assert await comm.receive_output() == {"type": "websocket.close", "code": CLOSE_USER_DELETED}
    assert fake_provider.cancelled == 1  # the running reply was stopped
    assert await room.store.get_user_by_name(f"django-{sora.pk}") is None
    kept = await room.store.get_user_by_name(f"django-{haneul.pk}")
    assert kept is not None and len(await room.store.list_conversations(kept.user.id)) == 1
    assert await other.receive_nothing(0.2)  # another user's room goes on
    await other.send_json_to({"message": "still here?"})
    assert "echo: still here?" in (await frames_until(other, is_final_reply))[-1]
    await other.disconnect()


def test_deleting_a_django_user_where_daehwa_does_not_run_deletes_it_through_the_store(
    runtime: Runtime, tmp_path: Path
):
    migrate()
    url = f"sqlite:///{tmp_path / 'daehwa.db'}"
    dahye = DjangoUser.objects.create_user("dahye")
    names = (f"django-{dahye.pk}", "django-999999")

    async def seed() -> None:
        store = open_store(url)
        await store.open()
        for name in names:
            user = await store.create_user(name, password_hash=None)
            conversation = await store.create_conversation(user.id, NewConversation(title="Tutor"))
            await store.append_message(user.id, conversation.id, NewMessage(role="user", content="hi"))
        await store.close()

    async def present() -> list[str]:
        store = open_store(url)
        await store.open()
        try:
            return [name for name in names if await store.get_user_by_name(name) is not None]
        finally:
            await store.close()

    asyncio.run(seed())
    with override_settings(DAEHWA={"DATABASE_URL": url, "DATA_DIR": str(tmp_path)}):
        with pytest.raises(RuntimeError), transaction.atomic():
            dahye.delete()
            raise RuntimeError("rolled back")
        assert asyncio.run(present()) == list(names)  # nothing is deleted before the deletion is committed
        # E.g. the admin on a WSGI server, or manage.py shell: no daehwa event loop in this process.
        DjangoUser.objects.filter(username="dahye").delete()
    assert asyncio.run(present()) == ["django-999999"]


def seed_store(url: str, users: list[tuple[str, bool]]) -> None:
    """Users (name, anonymous) with a conversation each, in the daehwa store at ``url``."""

    async def seed() -> None:
        store = open_store(url)
        await store.open()
        for name, anonymous in users:
            user = await store.create_user(name, password_hash=None, anonymous=anonymous)
            conversation = await store.create_conversation(user.id, NewConversation(title="Tutor"))
            await store.append_message(user.id, conversation.id, NewMessage(role="user", content="hi"))
        await store.close()

    asyncio.run(seed())


def user_names(url: str) -> list[str]:
    async def names() -> list[str]:
        store = open_store(url)
        await store.open()
        try:
            return sorted(u.name for u in await store.list_users())
        finally:
            await store.close()

    return asyncio.run(names())


def test_clear_guests_deletes_the_guests_whose_session_has_ended(runtime: Runtime, tmp_path: Path):
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.core.management import call_command
    from django.utils import timezone

    from daehwa.django.accounts import guest_name

    migrate()
    sessions = []
    for _ in range(3):
        session = SessionStore()
        session.create()
        sessions.append(session.session_key)
    live, expired, ended = sessions
    Session.objects.filter(session_key=expired).update(expire_date=timezone.now() - timedelta(minutes=1))
    Session.objects.filter(session_key=ended).delete()  # a logout, or clearsessions
    url = f"sqlite:///{tmp_path / 'daehwa.db'}"
    kept = [(guest_name(live), True), ("django-5", False), ("guest-0a1b2c", True)]  # daehwa's own guests are its own
    gone = [(guest_name(expired), True), (guest_name(ended), True), (guest_name(None), True)]
    seed_store(url, kept + gone)

    out = StringIO()
    with override_settings(DAEHWA={"DATABASE_URL": url, "DATA_DIR": str(tmp_path)}):
        call_command("daehwa_clear_guests", stdout=out)
        assert "Deleted 0 guest user(s)" in out.getvalue()  # all were active in the last hour
        call_command("daehwa_clear_guests", "--keep-minutes", "0", "--dry-run", stdout=out)
        assert "Would delete 3 guest user(s)" in out.getvalue()
        assert len(user_names(url)) == 6
        call_command("daehwa_clear_guests", "--keep-minutes", "0", stdout=out)
    assert "Deleted 3 guest user(s)" in out.getvalue()
    assert user_names(url) == sorted(name for name, _ in kept)


def test_clear_guests_says_which_session_engines_it_can_read(runtime: Runtime, tmp_path: Path):
    from django.core.management import CommandError, call_command

    daehwa = {"DATABASE_URL": f"sqlite:///{tmp_path / 'daehwa.db'}", "DATA_DIR": str(tmp_path)}
    engine = "django.contrib.sessions.backends.signed_cookies"
    with override_settings(SESSION_ENGINE=engine, DAEHWA=daehwa), pytest.raises(CommandError, match="cannot list"):
        call_command("daehwa_clear_guests")


def test_clear_guests_reads_the_file_session_engine(runtime: Runtime, tmp_path: Path):
    from django.contrib.sessions.backends.file import SessionStore
    from django.core.management import call_command

    from daehwa.django.accounts import guest_name

    url = f"sqlite:///{tmp_path / 'daehwa.db'}"
    (tmp_path / "sessions").mkdir()
    with override_settings(
        SESSION_ENGINE="django.contrib.sessions.backends.file", SESSION_FILE_PATH=str(tmp_path / "sessions")
    ):
        session = SessionStore()
        session.create()
        seed_store(url, [(guest_name(session.session_key), True), (guest_name("gone"), True)])
        with override_settings(DAEHWA={"DATABASE_URL": url, "DATA_DIR": str(tmp_path)}):
            call_command("daehwa_clear_guests", "--keep-minutes", "0", stdout=StringIO())
    assert user_names(url) == [guest_name(session.session_key)]


@pytest.mark.redis
async def test_a_guest_deleted_by_another_process_has_its_room_closed_over_redis(
    runtime: Runtime, settings: Settings, fake_provider: FakeProvider
):
    """The room's process and a ``manage.py daehwa_clear_guests`` process share a Redis store and its signals."""
    from daehwa.api.stream import ActiveTurns
    from daehwa.django import accounts
    from daehwa.stores.redis import RedisStore

    from .test_stores import REDIS_URL, _redis_namespace

    async with _redis_namespace() as factory:
        store = factory()
        assert isinstance(store, RedisStore)
        services = build_services(settings, providers=ProviderRegistry([fake_provider]), store=store)
        await services.start()
        turns = ActiveTurns(services.store)
        await turns.open()
        runtime.install(services, turns)
        try:
            comm = communicator(GuestConsumer, AnonymousUser(), session=SimpleNamespace(session_key="k1"))
            await comm.connect()
            assert "Welcome, guest." in await comm.receive_from()

            async def work(other: Any, end_user: Any) -> list[str]:
                return await accounts.delete_users(other, end_user, [accounts.guest_name("k1")])

            daehwa = {"DATABASE_URL": REDIS_URL, "REDIS_KEY_PREFIX": store.prefix}
            with override_settings(DAEHWA=daehwa):  # the other process opens its own store, as the command does
                deleted = await asyncio.to_thread(asyncio.run, accounts._with_own_store(work))
            assert deleted == [accounts.guest_name("k1")]
            assert "계정이 삭제되어 대화를 끝냈어요" in await comm.receive_from(3)
            assert await comm.receive_output(3) == {"type": "websocket.close", "code": CLOSE_USER_DELETED}
            assert await services.store.list_users() == []
        finally:
            await runtime.aclose()
            await turns.close()
            await services.aclose()


# -- errors, in the user's language ------------------------------------------------------------------------------------
async def test_a_blocked_message_is_shown_struck_out_with_the_reason(room: Services, fake_provider: FakeProvider):
    comm = communicator(PlainConsumer)
    await comm.connect()
    await comm.receive_from()
    await comm.send_json_to({"message": "what the fuck"})
    frames = await frames_until(comm, is_notice)
    assert "daehwa-user daehwa-blocked" in frames[0]
    assert "부적절한 표현이 포함되어 있어 메시지를 보낼 수 없어요" in frames[-1]
    assert fake_provider.requests == []
    user_id, conv_id = await conversation_of(room, "django-7")
    [stored] = await room.store.list_messages(user_id, conv_id) or []
    assert stored.status is MessageStatus.BLOCKED
    await comm.disconnect()


async def test_a_model_that_is_down_gets_the_fallback_reply(room: Services, fake_provider: FakeProvider):
    fake_provider.enqueue(Script(chunks=[], error=ProviderError("upstream said 503", upstream_status=503)))
    comm = communicator(PlainConsumer, language="en")
    await comm.connect()
    await comm.receive_from()
    await comm.send_json_to({"message": "hello?"})
    final = (await frames_until(comm, is_final_reply))[-1]
    assert "Replies are delayed right now" in final and 'data-status="fallback"' in final
    assert "upstream said" not in final and not re.search(r"\b503\b", final)  # ids are hex: "503" may be in one
    await comm.disconnect()


async def test_without_a_fallback_reply_the_model_error_is_a_notice_in_korean(
    runtime: Runtime, settings: Settings, fake_provider: FakeProvider
):
    settings = settings.model_copy(update={"fallback_reply": False})
    services = build_services(settings, providers=ProviderRegistry([fake_provider]))
    await services.start()
    runtime.install(services)
    try:
        fake_provider.enqueue(Script(chunks=["Par"], error=ProviderError("connection reset by upstream")))
        comm = communicator(PlainConsumer)
        await comm.connect()
        await comm.receive_from()
        await comm.send_json_to({"message": "hello?"})
        frames = await frames_until(comm, is_notice)
        assert "지금은 모델에 연결할 수 없어요" in frames[-1]
        assert 'data-status="interrupted"' in frames[-2] and "Par" in frames[-2]
        assert "connection reset" not in "".join(frames)  # the operator's message stays in the log
        await comm.disconnect()
    finally:
        await runtime.aclose()
        await services.aclose()


async def test_a_quota_is_explained_in_the_users_language(
    runtime: Runtime, settings: Settings, fake_provider: FakeProvider
):
    settings = settings.model_copy(update={"rate_limit_requests_per_minute": 1})
    services = build_services(settings, providers=ProviderRegistry([fake_provider]))
    await services.start()
    runtime.install(services)
    try:
        for language, expected in (("ko", "요청이 너무 많아요"), ("en", "Too many messages")):
            comm = communicator(PlainConsumer, JOON if language == "en" else MINJI, language=language)
            await comm.connect()
            await comm.receive_from()
            await comm.send_json_to({"message": "one"})
            await frames_until(comm, is_final_reply)
            await comm.send_json_to({"message": "two"})
            notice = (await frames_until(comm, is_notice))[-1]
            assert expected in notice
            await comm.disconnect()
    finally:
        await runtime.aclose()
        await services.aclose()


async def test_frames_that_are_not_messages_get_a_notice(room: Services):
    comm = communicator(PlainConsumer, language="en")
    await comm.connect()
    await comm.receive_from()
    for frame in ("not json", "[1, 2]", '{"message": 3}'):
        await comm.send_to(text_data=frame)
        assert "could not be read" in await comm.receive_from()
    await comm.send_json_to({"message": "   "})
    assert "The message is empty" in (await frames_until(comm, is_notice))[-1]
    await comm.send_json_to({"message": "x" * (room.settings.max_message_chars + 1)})
    assert "The message is too long" in (await frames_until(comm, is_notice))[-1]
    await comm.send_json_to({"message": "x" * room.settings.max_request_bytes})  # never parsed
    assert "The message is too long" in (await frames_until(comm, is_notice))[-1]
    await comm.disconnect()


async def test_a_template_field_missing_from_the_context_data_is_logged_not_shown(
    room: Services, caplog: pytest.LogCaptureFixture
):
    class Broken(DaehwaChatConsumer):
        system_prompt_template = "Speak {language}."

    comm = communicator(Broken, language="en")
    await comm.connect()
    await comm.receive_from()
    await comm.send_json_to({"message": "hi"})
    notice = (await frames_until(comm, is_notice))[-1]
    assert "Something went wrong" in notice and "language" not in notice
    assert "get_context_data() does not give" in caplog.text
    await comm.disconnect()


# -- configured from Django settings -----------------------------------------------------------------------------------
def test_daehwa_settings_come_from_the_django_settings():
    with override_settings(DAEHWA={"DEFAULT_MODEL": "openai/gpt-4o-mini", "max_message_chars": 500}):
        built = daehwa_settings()
    assert (built.default_model, built.max_message_chars) == ("openai/gpt-4o-mini", 500)
    with override_settings(DAEHWA={"DEFAULT_MODLE": "x"}), pytest.raises(ImproperlyConfigured, match="DEFAULT_MODLE"):
        daehwa_settings()
    with override_settings(DAEHWA={"max_message_chars": "many"}), pytest.raises(ImproperlyConfigured):
        daehwa_settings()


def test_manage_py_check_reports_a_wrong_daehwa_setting():
    from django.core import checks

    with override_settings(DAEHWA={"DEFAULT_MODLE": "x"}):
        errors = [e for e in checks.run_checks() if e.id == "daehwa.E001"]
    assert len(errors) == 1 and "DEFAULT_MODLE" in errors[0].msg
    with override_settings(DAEHWA={"DEFAULT_MODEL": "x"}):
        assert [e for e in checks.run_checks() if e.id == "daehwa.E001"] == []


async def test_built_from_settings_daehwa_against_an_http_upstream(runtime: Runtime, tmp_path: Path):
    with FakeUpstream() as upstream:
        providers = tmp_path / "providers.toml"
        providers.write_text(f'[providers.up]\ntype = "openai"\nbase_url = "{upstream.base_url}"\nmodels = ["echo"]\n')
        upstream.enqueue(Reply("Hello from upstream.", chunks=["Hello ", "from ", "upstream."]), Fault.status(503))
        daehwa = {
            "DATA_DIR": str(tmp_path),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'daehwa.db'}",
            "PROVIDERS_FILE": str(providers),
            "DEFAULT_MODEL": "up/echo",
            "FILTER_OUTPUT_ACTION": "off",
            "FALLBACK_REPLY": False,
            "RETRY_ATTEMPTS": 1,
        }
        with override_settings(DAEHWA=daehwa):
            # The ASGI lifespan starts the services with the server and closes them when it stops.
            inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            server = asyncio.ensure_future(lifespan({"type": "lifespan"}, inbox.get, sent.put))
            await inbox.put({"type": "lifespan.startup"})
            assert await asyncio.wait_for(sent.get(), 30) == {"type": "lifespan.startup.complete"}
            services = await runtime.services()
            assert services.settings.default_model == "up/echo"
            try:
                comm = communicator(PlainConsumer)
                await comm.connect()
                await comm.receive_from()
                await comm.send_json_to({"message": "hi"})
                frames = await frames_until(comm, is_final_reply)
                assert deltas(frames) == ["Hello ", "from ", "upstream."]
                assert upstream.requests[0].json["messages"][-1] == {"role": "user", "content": "hi"}
                await comm.send_json_to({"message": "again"})  # the upstream now answers 503
                assert "지금은 모델에 연결할 수 없어요" in (await frames_until(comm, is_notice))[-1]
                await comm.disconnect()
            finally:
                await inbox.put({"type": "lifespan.shutdown"})
                await asyncio.wait_for(server, 10)
            assert sent.get_nowait() == {"type": "lifespan.shutdown.complete"}
            assert runtime._services is None
    assert get_runtime() is runtime


def test_the_chat_room_page_loads_htmx_from_static_files():
    page = render_to_string("daehwa/chat_room_ws.html", {"ws_path": "/ws/tutor/", "title": "Tutor"})
    assert 'ws-connect="/ws/tutor/"' in page and 'hx-ext="ws"' in page
    assert 'src="/static/daehwa/htmx.min.js"' in page and 'src="/static/daehwa/htmx-ext-ws.js"' in page
    assert "https://" not in page and "http://" not in page  # no CDN
    assert 'name="message"' in page and "보내기" in page


def test_the_vendored_scripts_carry_their_licences():
    static = Path(__file__).resolve().parents[1] / "daehwa" / "django" / "static" / "daehwa"
    htmx = (static / "htmx.min.js").read_text()
    ws = (static / "htmx-ext-ws.js").read_text()
    assert htmx.startswith("/*! htmx.org 2.0.") and "Zero-Clause BSD" in htmx and "defineExtension" in htmx
    assert ws.startswith("/*! htmx-ext-ws 2.0.") and "BSD Zero Clause License" in ws and "ws-connect" in ws

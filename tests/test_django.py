"""daehwa.django: the Channels consumer through ``WebsocketCommunicator``, on the real pipeline with fake models.

Most tests install services built by conftest (``FakeProvider`` scripts the model); one builds them the way a Django
project does, from ``settings.DAEHWA``, against ``tests/fake_upstream.py`` over HTTP.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
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

from .django_settings import configure

configure()

from channels.testing import WebsocketCommunicator  # noqa: E402
from django.apps import apps  # noqa: E402
from django.contrib.auth.models import AnonymousUser  # noqa: E402
from django.contrib.auth.models import User as DjangoUser  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.template.loader import render_to_string  # noqa: E402
from django.test import override_settings  # noqa: E402

from daehwa.config import Settings  # noqa: E402
from daehwa.django.consumers import CLOSE_LOGIN_REQUIRED, DaehwaChatConsumer  # noqa: E402
from daehwa.django.runtime import Runtime, daehwa_settings, get_runtime, lifespan  # noqa: E402
from daehwa.errors import ProviderError  # noqa: E402
from daehwa.providers.registry import ProviderRegistry  # noqa: E402
from daehwa.services import Services, build_services  # noqa: E402
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
    assert "503" not in final
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

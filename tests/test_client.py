"""``daehwa.client`` against a real ``daehwa serve`` (a subprocess) answering with the fake upstream.

One server serves the module; each test makes its own conversations, scripts exactly the replies it needs and checks
that the upstream got exactly that many calls (a client or server making an extra model call would take a scripted
reply meant for a later request).
"""

from __future__ import annotations

import asyncio
import inspect
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from daehwa.client import (
    AsyncDaehwaClient,
    AsyncReplyStream,
    DaehwaAPIError,
    DaehwaClient,
    DaehwaConnectionError,
    ReplyStream,
)
from tests.api_helpers import free_port
from tests.daehwa_server import CuttingProxy, Served, serving
from tests.fake_upstream import FakeUpstream, Fault, Reply

PRICE_IN, PRICE_OUT = 1000.0, 2000.0  # USD per million tokens: large, so a reply's cost is a visible number


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("client")
    prices = tmp / "prices.toml"
    prices.write_text(f'[models."up/*"]\ninput = {PRICE_IN}\noutput = {PRICE_OUT}\n')
    env = {
        "DAEHWA_PRICES_FILE": str(prices),
        "DAEHWA_FALLBACK_REPLY": "false",  # a failing model is an error the client sees, not a canned reply
        "DAEHWA_USER_QUOTAS": '{"tight": {"tokens_per_day": 1}}',
    }
    with FakeUpstream(models=("m1",)) as up, serving(tmp, up, env=env) as served:
        yield served


@pytest.fixture
def upstream(server: Served) -> Iterator[FakeUpstream]:
    up = server.upstream
    assert up.pending == 0, "an earlier test left scripted replies"
    yield up
    assert up.pending == 0, "a scripted reply was not used: fewer model calls than the test expected"


@pytest.fixture
def client(server: Served) -> Iterator[DaehwaClient]:
    with DaehwaClient(server.url, api_key=server.key, language="ko") as c:
        yield c


def _calls(up: FakeUpstream) -> int:
    return sum(1 for r in up.requests if r.path == "/v1/chat/completions")


def _cost(prompt: int, completion: int) -> float:
    return round((prompt * PRICE_IN + completion * PRICE_OUT) / 1_000_000, 10)


def test_send_without_streaming_returns_the_stored_reply_with_usage_and_cost(
    client: DaehwaClient, upstream: FakeUpstream
) -> None:
    conversation = client.create_conversation(title="인사").conversation
    before = _calls(upstream)
    upstream.enqueue(Reply("안녕하세요, 반가워요!", usage=(12, 5)))
    result = client.send(conversation.id, "안녕!", temperature=0.2)

    assert _calls(upstream) == before + 1
    assert upstream.last.json["messages"][-1] == {"role": "user", "content": "안녕!"}
    assert upstream.last.json["temperature"] == 0.2
    assert result.text == "안녕하세요, 반가워요!" and result.outcome == "ok" and result.finish_reason == "stop"
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (12, 5, 17)
    assert result.usage.cost == pytest.approx(_cost(12, 5))
    assert result.user_message is not None and result.user_message.content == "안녕!"

    page = client.get_conversation(conversation.id)
    assert [(m.role, m.content, m.status) for m in page.messages] == [
        ("user", "안녕!", "complete"),
        ("assistant", "안녕하세요, 반가워요!", "complete"),
    ]
    assert page.messages[-1].usage == result.usage  # kept with the reply: a reloaded page shows it too
    assert conversation.id in [c.id for c in client.list_conversations()]


def test_stream_yields_the_deltas_then_the_result(client: DaehwaClient, upstream: FakeUpstream) -> None:
    conversation = client.create_conversation().conversation
    upstream.enqueue(Reply("안녕하세요, 반가워요!", chunks=["안녕하세요, ", "반가워요!"], usage=(7, 2)))
    with client.stream(conversation.id, "안녕") as reply:
        assert reply.started is not None and reply.started.user_message is not None
        assert reply.started.user_message.content == "안녕"
        deltas = list(reply)

    assert deltas == ["안녕하세요, ", "반가워요!"]
    assert reply.result is not None and reply.result.text == "안녕하세요, 반가워요!"
    assert reply.offset == len("안녕하세요, 반가워요!")
    assert reply.result.usage is not None and reply.result.usage.total_tokens == 9
    assert reply.result.usage.cost == pytest.approx(_cost(7, 2))
    assert reply.message_id == reply.result.message.id
    assert upstream.last.json["stream"] is True


def test_password_login_keeps_a_session_and_sends_its_csrf_token(server: Served, upstream: FakeUpstream) -> None:
    with DaehwaClient(server.url, language="en") as c:
        with pytest.raises(DaehwaAPIError) as refused:
            c.me()
        assert refused.value.status == 401 and refused.value.code == "not_authenticated"
        with pytest.raises(DaehwaAPIError) as wrong:
            c.login(server.username, "not the password")
        assert wrong.value.status == 401

        user = c.login(server.username, server.password)
        assert user.name == server.username and c.me().id == user.id
        conversation = c.create_conversation().conversation  # a POST: refused without the CSRF header
        upstream.enqueue(Reply("hello"))
        assert c.send(conversation.id, "hi").text == "hello"
        c.logout()
        with pytest.raises(DaehwaAPIError):
            c.me()


def test_stop_ends_a_streaming_reply_with_the_text_so_far(client: DaehwaClient, upstream: FakeUpstream) -> None:
    conversation = client.create_conversation().conversation
    words = [f"w{i} " for i in range(100)]
    upstream.enqueue(Reply("".join(words), chunks=words, chunk_delay=0.05))
    received: list[str] = []
    with client.stream(conversation.id, "길게 말해 줘") as reply:
        for text in reply:
            received.append(text)
            if len(received) == 3:
                stopper = threading.Thread(target=lambda: reply.stop())  # another thread, the same client
                stopper.start()
                stopper.join(10)
    result = reply.result
    assert result is not None and result.outcome == "interrupted" and result.stopped
    assert 3 <= len(received) < 100
    stored = client.get_conversation(conversation.id).messages[-1]
    assert stored.status == "interrupted" and stored.content == "".join(received) == result.text
    assert result.usage is not None and result.usage == stored.usage  # a stopped reply is accounted too
    assert result.usage.cost == pytest.approx(_cost(result.usage.prompt_tokens, result.usage.completion_tokens))
    assert client.stop(conversation.id) is False  # nothing runs any more


def test_errors_carry_the_servers_code_status_and_localised_message(
    server: Served, client: DaehwaClient, upstream: FakeUpstream
) -> None:
    with pytest.raises(DaehwaAPIError) as unknown:
        client.send("no-such-conversation", "hi")
    assert (unknown.value.status, unknown.value.code) == (404, "not_found")
    with pytest.raises(DaehwaAPIError) as unknown_stream:
        client.stream("no-such-conversation", "hi")
    assert unknown_stream.value.code == "not_found"

    conversation = client.create_conversation().conversation
    before = _calls(upstream)
    with pytest.raises(DaehwaAPIError) as blocked:
        client.send(conversation.id, "fuck you")
    assert (blocked.value.status, blocked.value.code) == (422, "content_blocked")
    assert "부적절한 표현" in blocked.value.message  # the client asked for Korean
    with (
        DaehwaClient(server.url, api_key=server.key, language="en") as english,
        pytest.raises(DaehwaAPIError) as blocked_en,
    ):
        english.stream(conversation.id, "fuck you")
    assert blocked_en.value.code == "content_blocked" and "isn't allowed" in blocked_en.value.message
    assert _calls(upstream) == before  # a blocked message never reaches the model

    upstream.enqueue(Fault.status(503))
    with pytest.raises(DaehwaAPIError) as down:
        client.send(conversation.id, "hi")
    assert (down.value.status, down.value.code) == (502, "upstream_error")
    upstream.enqueue(Fault.status(503))
    reply = client.stream(conversation.id, "hi")
    with pytest.raises(DaehwaAPIError) as down_streamed:
        assert list(reply) == []
    assert down_streamed.value.code == "upstream_error"
    assert client.get_conversation(conversation.id).messages[-1].error_code == "upstream_error"


def test_quota_exceeded_is_a_429_in_the_users_language(server: Served, upstream: FakeUpstream) -> None:
    server.daehwa("users", "create", "tight", "--password-stdin", stdin="another long password\n")
    key = server.daehwa("keys", "create", "--user", "tight").strip().splitlines()[-1]
    with DaehwaClient(server.url, api_key=key, language="ko") as c:
        conversation = c.create_conversation().conversation
        upstream.enqueue(Reply("첫 답"))
        assert c.send(conversation.id, "하나").text == "첫 답"  # under the quota until this turn used it up
        with pytest.raises(DaehwaAPIError) as over:
            c.stream(conversation.id, "둘")
        assert (over.value.status, over.value.code) == (429, "token_quota_exceeded")
        assert "토큰" in over.value.message and over.value.retry_after is not None and over.value.retry_after > 0
        assert c.usage().total_tokens > 1


def test_a_dropped_connection_keeps_the_partial_reply_and_resumes_it(
    server: Served, client: DaehwaClient, upstream: FakeUpstream
) -> None:
    conversation = client.create_conversation().conversation
    words = [f"단어{i} " for i in range(20)]
    upstream.enqueue(Reply("".join(words), chunks=words, chunk_delay=0.05))
    port = int(server.url.rsplit(":", 1)[1])
    with CuttingProxy(port) as proxy, DaehwaClient(proxy.url, api_key=server.key) as flaky:
        proxy.cut_after(b"event: delta")
        received: list[str] = []
        with pytest.raises(DaehwaConnectionError) as dropped:
            for text in flaky.stream(conversation.id, "길게"):
                received.append(text)
    assert proxy.cuts == 1 and received
    assert dropped.value.received == "".join(received) and dropped.value.offset == len(dropped.value.received)
    assert dropped.value.message_id is not None

    rest = client.resume_stream(dropped.value)  # through another connection: the server kept generating
    tail = "".join(rest)
    assert dropped.value.received + tail == "".join(words)
    assert rest.result is not None and rest.result.outcome == "ok" and rest.result.text == "".join(words)
    again = client.resume_stream(conversation.id, dropped.value.message_id, after=3)  # a finished reply resumes too
    assert "".join(again) == "".join(words)[3:]


def test_an_unreachable_server_is_a_connection_error() -> None:
    with DaehwaClient(f"http://127.0.0.1:{free_port()}", api_key="dh-x") as c, pytest.raises(DaehwaConnectionError):
        c.list_conversations()


def test_personas_models_and_usage(server: Served, client: DaehwaClient, upstream: FakeUpstream) -> None:
    personas = {p.name: p for p in client.personas()}
    assert personas["assistant"].title == "대화 도우미"
    with DaehwaClient(server.url, api_key=server.key, language="en") as english:
        assert {p.name: p.title for p in english.personas()}["assistant"] != "대화 도우미"
    models = {m.id: m for m in client.models()}
    assert models["up/m1"].available and models["up/m1"].provider == "up"
    report = client.usage()
    assert report.currency == "USD" and report.total_tokens > 0 and report.cost > 0
    assert all(row["user"] == server.username for row in report.totals)


async def test_the_async_client_streams_sends_stops_and_raises(server: Served, upstream: FakeUpstream) -> None:
    async with AsyncDaehwaClient(server.url, language="en") as c:
        await c.login(server.username, server.password)
        conversation = (await c.create_conversation()).conversation
        upstream.enqueue(Reply("one two three", chunks=["one ", "two ", "three"]))
        reply = await c.stream(conversation.id, "count")
        assert [text async for text in reply] == ["one ", "two ", "three"]
        assert reply.result is not None and reply.result.text == "one two three"

        upstream.enqueue(Reply("plain"))
        assert (await c.send(conversation.id, "again")).text == "plain"

        words = [f"w{i} " for i in range(100)]
        upstream.enqueue(Reply("".join(words), chunks=words, chunk_delay=0.05))
        slow = await c.stream(conversation.id, "long")
        got: list[str] = []
        async for text in slow:
            got.append(text)
            if len(got) == 2:
                assert await slow.stop()
        assert slow.result is not None and slow.result.stopped and slow.result.text == "".join(got)

        with pytest.raises(DaehwaAPIError) as missing:
            await c.get_conversation("nope")
        assert missing.value.code == "not_found"
        page = await c.get_conversation(conversation.id)
        assert [m.status for m in page.messages if m.role == "assistant"] == ["complete", "complete", "interrupted"]
        assert [m.name for m in await c.personas()] and [m.id for m in await c.models()]
        await asyncio.sleep(0)


def test_the_readme_client_example_works_as_written(server: Served, upstream: FakeUpstream) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python client and Streamlit app", 1)[1].split("\n## ", 1)[0]
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", section, re.S) if "DaehwaClient(" in b]
    code = code.replace("http://127.0.0.1:8000", server.url).replace('"dh-..."', repr(server.key))
    upstream.enqueue(Reply("반가워요!", chunks=["반가", "워요!"]))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "반가워요!"
    assert upstream.last.json["messages"][-1]["content"] == "안녕하세요!"


def test_resume_needs_a_started_reply(client: DaehwaClient) -> None:
    with pytest.raises(ValueError):
        client.resume_stream(DaehwaConnectionError("never started"))


def test_an_unknown_conversation_field_is_a_type_error_before_anything_is_sent() -> None:
    with DaehwaClient("http://127.0.0.1:9") as offline, pytest.raises(TypeError, match="persona, model"):
        offline.create_conversation(persona="assistant", colour="blue")  # type: ignore[call-arg]


@pytest.mark.parametrize(("sync", "asynchronous"), [(DaehwaClient, AsyncDaehwaClient), (ReplyStream, AsyncReplyStream)])
def test_the_async_classes_are_the_sync_ones_method_for_method(sync: type, asynchronous: type) -> None:
    """The same public methods with the same parameters and docstrings (written once, on the sync classes)."""
    names = {n for n in vars(sync) if not n.startswith("_")} - {"close"}
    assert names == {n for n in vars(asynchronous) if not n.startswith("_")} - {"aclose"}
    for name in names:
        mine, twin = getattr(sync, name), getattr(asynchronous, name)
        assert inspect.getdoc(twin) == inspect.getdoc(mine), name
        if inspect.isfunction(mine):
            assert inspect.iscoroutinefunction(twin), name
            assert inspect.signature(twin).parameters.keys() == inspect.signature(mine).parameters.keys(), name

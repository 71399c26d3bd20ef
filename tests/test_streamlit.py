"""The Streamlit app (``daehwa/streamlit_ui``) driven by ``streamlit.testing.v1.AppTest`` against a real
``daehwa serve`` answering with the fake upstream.

The fake upstream answers each model call with the next scripted reply, so a reply shown on the page is the one a
test queued only if the app made exactly the model calls the test expects: every test checks the number of calls
(``calls``) and that no scripted reply is left over or missing, and each test logs in as a user of its own so the
conversation list is its own too.
"""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytest.importorskip("streamlit", reason='the Streamlit app needs pip install "daehwa[streamlit]"')

from streamlit.testing.v1 import AppTest

from daehwa.client import DaehwaClient, ReplyUsage
from daehwa.streamlit_ui import APP_FILE
from tests.api_helpers import free_port
from tests.daehwa_server import CuttingProxy, Served, serving
from tests.fake_upstream import FakeUpstream, Fault, Reply

TIMEOUT = 60  # seconds one AppTest run may take (the machine is shared)
_users = itertools.count(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("streamlit")
    prices = tmp / "prices.toml"
    prices.write_text('[models."up/*"]\ninput = 1000\noutput = 2000\n')
    env = {
        "DAEHWA_PRICES_FILE": str(prices),
        "DAEHWA_FALLBACK_REPLY": "false",
        "DAEHWA_USER_QUOTAS": '{"quota-user": {"tokens_per_day": 1}}',
        "DAEHWA_FILTER_OUTPUT_ACTION": "mask",  # the default: the streamed chunks are cut differently from the model's
    }
    with FakeUpstream(models=("m1", "m2")) as up, serving(tmp, up, env=env) as served:
        yield served


@pytest.fixture
def upstream(server: Served) -> Iterator[FakeUpstream]:
    up = server.upstream
    assert up.pending == 0, "an earlier test left scripted replies"
    yield up
    assert up.pending == 0, "a scripted reply was not used: the app made fewer model calls than expected"


def calls(up: FakeUpstream) -> int:
    return sum(1 for r in up.requests if r.path == "/v1/chat/completions")


def new_user(server: Served, name: str | None = None) -> tuple[str, str]:
    """A user of the test's own (name, API key)."""
    name = name or f"st-user-{next(_users)}"
    server.daehwa("users", "create", name, "--password-stdin", stdin="a long password\n")
    return name, server.daehwa("keys", "create", "--user", name).strip().splitlines()[-1]


_opened: list[AppTest] = []


@pytest.fixture(autouse=True)
def _close_sessions() -> Iterator[None]:
    """Each app session keeps its DaehwaClient in its session state; a finished test's session is closed here."""
    yield
    while _opened:
        at = _opened.pop()
        with contextlib.suppress(Exception):
            if "client" in at.session_state:
                at.session_state["client"].close()


def app(monkeypatch: pytest.MonkeyPatch, url: str, *, api_key: str | None = None, language: str = "ko") -> AppTest:
    monkeypatch.setenv("DAEHWA_STREAMLIT_SERVER", url)
    monkeypatch.setenv("DAEHWA_STREAMLIT_LANGUAGE", language)
    if api_key:
        monkeypatch.setenv("DAEHWA_STREAMLIT_API_KEY", api_key)
    else:
        monkeypatch.delenv("DAEHWA_STREAMLIT_API_KEY", raising=False)
    at = AppTest.from_file(str(APP_FILE), default_timeout=TIMEOUT)
    _opened.append(at)
    return at


def bubbles(at: AppTest) -> list[tuple[str, str]]:
    """(who, text) of every chat bubble, top to bottom."""
    return [(m.name, "\n".join(x.value for x in m.markdown)) for m in at.chat_message]


def captions(at: AppTest) -> list[str]:
    return [c.value for m in at.chat_message for c in m.caption]


def usage_caption(usage: ReplyUsage) -> str:
    cost = f"${usage.cost:.6f}" if usage.cost is not None else "알 수 없음"
    return f"토큰 {usage.prompt_tokens:,} + {usage.completion_tokens:,} = {usage.total_tokens:,} · 비용 {cost}"


def no_traceback(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def send(at: AppTest, text: str) -> AppTest:
    return at.chat_input(key="prompt").set_value(text).run()


def test_login_send_streamed_reply_usage_and_conversation_list(
    server: Served, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, _ = new_user(server)
    at = app(monkeypatch, server.url)
    at.run()
    no_traceback(at)
    at.text_input(key="login_user").input(name)
    at.text_input(key="login_password").input("a long password")
    at.button(key="login_with_password").click().run()
    no_traceback(at)
    assert any(name in c.value for c in at.sidebar.caption)

    before = calls(upstream)
    upstream.enqueue(Reply("안녕하세요, 반가워요!", chunks=["안녕하세요, ", "반가워요!"], usage=(12, 5)))
    send(at, "안녕하세요!")
    no_traceback(at)
    assert calls(upstream) == before + 1, "the app asked the model more (or less) than once for one message"
    assert upstream.last.json["messages"][-1] == {"role": "user", "content": "안녕하세요!"}
    assert bubbles(at) == [("user", "안녕하세요!"), ("assistant", "안녕하세요, 반가워요!")]
    assert "토큰 12 + 5 = 17 · 비용 $0.022000" in captions(at)  # (12 * 1000 + 5 * 2000) / 1e6 USD
    conversation_id = at.query_params["c"][0] if isinstance(at.query_params["c"], list) else at.query_params["c"]
    # The first message names the conversation: the list and the header say so on this very run.
    assert [b.label for b in at.sidebar.button if b.key == f"open_{conversation_id}"] == ["안녕하세요!"]
    assert [h.value for h in at.main.subheader] == ["안녕하세요!"]

    at.run()  # any later run (a click, a rerun) draws the history from the server and sends nothing
    no_traceback(at)
    assert calls(upstream) == before + 1
    assert bubbles(at) == [("user", "안녕하세요!"), ("assistant", "안녕하세요, 반가워요!")]
    assert "토큰 12 + 5 = 17 · 비용 $0.022000" in captions(at)
    titles = [b.label for b in at.sidebar.button if b.key == f"open_{conversation_id}"]
    assert titles == ["안녕하세요!"]  # named by its first message


def test_a_reload_keeps_the_conversation_and_its_usage(
    server: Served, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, key = new_user(server)
    with DaehwaClient(server.url, api_key=key) as client:
        conversation = client.create_conversation().conversation
        upstream.enqueue(Reply("first answer", usage=(3, 2)), Reply("second answer", usage=(4, 1)))
        client.send(conversation.id, "first question")
        client.send(conversation.id, "second question")
    before = calls(upstream)

    at = app(monkeypatch, server.url, api_key=key)  # a new browser session, as after a reload
    at.query_params["c"] = conversation.id
    at.run()
    no_traceback(at)
    assert bubbles(at) == [
        ("user", "first question"),
        ("assistant", "first answer"),
        ("user", "second question"),
        ("assistant", "second answer"),
    ]
    assert captions(at) == ["토큰 3 + 2 = 5 · 비용 $0.007000", "토큰 4 + 1 = 5 · 비용 $0.006000"]
    assert calls(upstream) == before


def test_persona_and_model_pickers_start_the_conversation_with_them(
    server: Served, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, key = new_user(server)
    at = app(monkeypatch, server.url, api_key=key, language="en")
    at.run()
    no_traceback(at)
    personas = at.sidebar.selectbox(key="persona")
    assert "Dev guide" in personas.options  # the titles in the user's language
    personas.set_value("guide")
    models = at.sidebar.selectbox(key="model")
    models.set_value("up/m2")
    at.run()
    before = calls(upstream)
    upstream.enqueue(Reply("from the second model"))
    send(at, "hello")
    no_traceback(at)
    assert calls(upstream) == before + 1  # the persona's extras (mood, interests) make no model call of their own
    assert upstream.last.json["model"] == "m2"
    assert bubbles(at)[-1] == ("assistant", "from the second model")
    with DaehwaClient(server.url, api_key=key) as client:
        (conversation,) = client.list_conversations()
    assert conversation.persona == "guide" and conversation.model == "up/m2"


def test_errors_are_shown_in_the_users_language_never_as_a_traceback(
    server: Served, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, key = new_user(server)
    at = app(monkeypatch, server.url, api_key=key, language="en")
    at.run()
    before = calls(upstream)
    send(at, "fuck you")
    no_traceback(at)
    assert any("isn't allowed" in e.value for e in at.error), [e.value for e in at.error]
    assert calls(upstream) == before  # a blocked message never reaches the model

    at.sidebar.selectbox(key="language").set_value("ko").run()
    upstream.enqueue(Fault.status(503))
    send(at, "안녕")
    no_traceback(at)
    assert calls(upstream) == before + 1
    assert any("모델이 지금 응답하지 않아요" in e.value for e in at.error), [e.value for e in at.error]

    _, quota_key = new_user(server, "quota-user")
    quota = app(monkeypatch, server.url, api_key=quota_key)
    quota.run()
    upstream.enqueue(Reply("한 번은 돼요"))
    send(quota, "하나")
    assert bubbles(quota)[-1] == ("assistant", "한 번은 돼요")
    send(quota, "둘")
    no_traceback(quota)
    assert any("토큰을 모두 썼어요" in e.value for e in quota.error), [e.value for e in quota.error]
    assert calls(upstream) == before + 2


def test_an_unreachable_server_is_a_message_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(monkeypatch, f"http://127.0.0.1:{free_port()}", api_key="dh-nothing")
    at.run()
    no_traceback(at)
    assert any("연결할 수 없어요" in e.value for e in at.error)


def test_stop_button_stops_the_reply_and_keeps_what_was_written(
    server: Served, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, key = new_user(server)
    client = DaehwaClient(server.url, api_key=key)
    conversation = client.create_conversation().conversation
    at = app(monkeypatch, server.url, api_key=key)
    at.query_params["c"] = conversation.id
    at.run()
    no_traceback(at)

    words = [f"w{i} " for i in range(200)]
    upstream.enqueue(Reply("".join(words), chunks=words, chunk_delay=0.05))
    seen: list[str] = []
    reply = client.stream(conversation.id, "long please")  # another tab or client is being answered
    reader = threading.Thread(target=lambda: seen.extend(reply), daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while len(seen) < 3:
        assert time.monotonic() < deadline, "the reply never started"
        time.sleep(0.02)

    at.sidebar.button(key="stop").click().run()
    no_traceback(at)
    reader.join(30)
    assert reply.result is not None and reply.result.stopped
    assert "답변을 멈췄어요." in [c.value for c in at.sidebar.caption]
    stored = client.get_conversation(conversation.id).messages[-1]
    assert stored.status == "interrupted" and 3 <= len(stored.content.split()) < 200
    assert bubbles(at)[-1] == ("assistant", stored.content.strip())  # markdown drops the trailing space
    assert "■ 답변이 중간에 멈췄어요." in captions(at)
    assert stored.usage is not None and usage_caption(stored.usage) in captions(at)
    client.close()


def test_a_dropped_connection_keeps_the_partial_reply_and_retry_gets_the_rest(
    server: Served, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, key = new_user(server)
    port = int(server.url.rsplit(":", 1)[1])
    words = [f"단어{i} " for i in range(30)]
    full = "".join(words)
    with CuttingProxy(port) as proxy:
        at = app(monkeypatch, proxy.url, api_key=key)
        at.run()
        before = calls(upstream)
        upstream.enqueue(Reply(full, chunks=words, chunk_delay=0.05))
        proxy.cut_after(b"event: delta")
        send(at, "길게 말해 줘")
        no_traceback(at)
        assert proxy.cuts == 1
        who, partial = bubbles(at)[-1]
        assert who == "assistant" and partial and full.startswith(partial) and partial != full
        assert any("연결이 끊겼어요" in w.value for w in at.warning)

        proxy.down()  # the server cannot be reached: Retry keeps the partial reply and offers Retry again
        at.button(key="retry").click().run()
        no_traceback(at)
        assert bubbles(at)[-1] == ("assistant", partial)
        assert any("연결할 수 없어요" in e.value for e in at.error)
        proxy.up()

        at.button(key="retry").click().run()  # the server kept writing: the page follows the reply to its end
        no_traceback(at)
        assert bubbles(at) == [("user", "길게 말해 줘"), ("assistant", full.strip())]
        assert not at.warning
        assert calls(upstream) == before + 1  # Retry fetched the rest; it did not ask the model again


def test_the_daehwa_streamlit_command_serves_the_app(server: Served, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "streamlit.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daehwa", "streamlit", "--server", server.url, "--port", str(port)],
            stdout=sink,
            stderr=sink,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                health = httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=1)
                if health.status_code == 200:
                    break
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert health.text == "ok"
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
    finally:
        proc.terminate()
        proc.wait(15)
    bad = subprocess.run(
        [sys.executable, "-m", "daehwa", "streamlit", "--language", "fr"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "ko or en" in bad.stderr

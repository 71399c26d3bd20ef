"""The chat page in a real browser: Debian's chromium, driven by Playwright, against a real ``daehwa serve``.

The server is a subprocess on a free loopback port; its model is ``tests/fake_upstream.py`` (a real OpenAI-compatible
HTTP server running in this process, so each test scripts the replies it needs) configured as an "openai"-type
provider in a providers file. Screenshots go to ``test-artifacts/`` for a reviewer to look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from daehwa.accounts import Accounts
from daehwa.config import Settings
from daehwa.stores import NewConversation, NewMessage, open_store
from daehwa.types import MessageStatus

from .conftest import require
from .fake_upstream import FakeUpstream, Fault, Reply

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
USER, PASSWORD = "alice", "correct-horse-battery"
LONG_CONVERSATION_MESSAGES = 1000
WEB_MESSAGE_PAGE = 100  # MESSAGE_PAGE in app.js: messages per request

RICH_REPLY = """## 서울 여행 팁

서울은 **대중교통**이 잘 되어 있어요. 꼭 해 볼 것:

1. 경복궁 산책
2. 광장시장에서 *빈대떡* 먹기
3. 한강 자전거

| 장소 | 가는 법 | 시간 |
|:--|:--:|--:|
| 경복궁 | 3호선 경복궁역 | 10분 |
| 남산타워 | 버스 01A | 20분 |

교통카드 잔액을 확인하는 코드 예시:

```python
def balance(card: str) -> int:
    # T-money 잔액 (원)
    return {"T-money": 12_500}.get(card, 0)
```

> 팁: `T-money` 카드는 편의점에서 충전할 수 있어요.
"""


@dataclass
class Server:
    url: str
    upstream: FakeUpstream
    long_conversation: str
    log: Path
    origins: set[str] = field(default_factory=set)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _seed(settings: Settings) -> str:
    """The user, and a 1,000-message conversation to open (written through the real Store)."""
    store = open_store(settings.resolved_database_url(), settings)
    await store.open()
    try:
        user = await Accounts(store, settings).create_user(USER, PASSWORD)
        conv = await store.create_conversation(user.id, NewConversation(title="긴 대화 (1,000)", persona="assistant"))
        for i in range(LONG_CONVERSATION_MESSAGES // 2):
            await store.append_message(
                user.id, conv.id, NewMessage(role="user", content=f"질문 {i}: 이건 몇 번째 메시지인가요?")
            )
            reply = f"**{i}번째** 답이에요.\n\n- 항목 a\n- 항목 b\n\n```python\nprint({i})\n```"
            await store.append_message(
                user.id, conv.id, NewMessage(role="assistant", content=reply, status=MessageStatus.COMPLETE)
            )
        return conv.id
    finally:
        await store.close()


@contextlib.contextmanager
def _serve(tmp: Path, upstream: FakeUpstream, **settings: str) -> Iterator[tuple[str, Path]]:
    """``daehwa serve`` on a free port with ``upstream`` as its model and extra DAEHWA_ settings; (url, log)."""
    providers = tmp / "providers.toml"
    providers.write_text(f'[providers.fake]\ntype = "openai"\nbase_url = "{upstream.base_url}"\nmodels = ["echo"]\n')
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAEHWA_", "OPENAI_"))}
    env.update(
        DAEHWA_DATA_DIR=str(tmp),
        DAEHWA_DATABASE_URL=f"sqlite:///{tmp / 'daehwa.db'}",
        DAEHWA_PROVIDERS_FILE=str(providers),
        DAEHWA_DEFAULT_MODEL="fake/echo",
        DAEHWA_STREAM_FLUSH_SECONDS="0.1",
        DAEHWA_LOG_LEVEL="warning",
        # The first recommendation embeds the catalogue: on a loaded machine longer than the default 2 s hook bound.
        DAEHWA_PIPELINE_HOOK_TIMEOUT_SECONDS="30",
    )
    env.update({f"DAEHWA_{name.upper()}": value for name, value in settings.items()})
    log = tmp / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daehwa", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"daehwa serve exited with {proc.returncode}:\n{log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"daehwa serve did not answer /healthz within 60 s:\n{log.read_text()}")
            time.sleep(0.1)
        yield url, log
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require(CHROMIUM.is_file(), f"{CHROMIUM} is missing: apt-get install chromium")
    tmp = tmp_path_factory.mktemp("web")
    upstream = FakeUpstream(models=["echo"]).start()
    settings = Settings(data_dir=tmp, database_url=f"sqlite:///{tmp / 'daehwa.db'}", _env_file=None)  # type: ignore[call-arg]
    try:
        long_id = asyncio.run(_seed(settings))
        with _serve(tmp, upstream) as (url, log):
            yield Server(url=url, upstream=upstream, long_conversation=long_id, log=log)
    finally:
        upstream.stop()


MEMBERS_PERSONA = """name = "members"
title = { ko = "회원 전용", en = "Members only" }
allow_anonymous = false
system = "You help signed-in members."
"""


@pytest.fixture(scope="module")
def guest_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with DAEHWA_ALLOW_ANONYMOUS on, whose default persona is closed to guests."""
    require(CHROMIUM.is_file(), f"{CHROMIUM} is missing: apt-get install chromium")
    tmp = tmp_path_factory.mktemp("web-guest")
    personas = tmp / "personas"
    personas.mkdir()
    (personas / "members.toml").write_text(MEMBERS_PERSONA, encoding="utf-8")
    upstream = FakeUpstream(models=["echo"]).start()
    try:
        settings = {"allow_anonymous": "true", "personas_dir": str(personas), "default_persona": "members"}
        with _serve(tmp, upstream, **settings) as (url, log):
            yield Server(url=url, upstream=upstream, long_conversation="", log=log)
    finally:
        upstream.stop()


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


# Watches the page for what must never happen: a CSP violation (inline script or style, a foreign origin, a Trusted
# Types refusal) or a dialog opened by a payload. Added through CDP, so the page's own CSP does not apply to it.
WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
});
"""


@dataclass
class Tab:
    page: Any
    server: Server
    requests: list[str]
    dialogs: list[str]
    errors: list[str]

    def goto(self, path: str = "/") -> None:
        self.page.goto(self.server.url + path)
        self.page.wait_for_selector("body[data-ready='true']")

    def login(self) -> None:
        self.goto("/")
        self.page.fill("#login-username", USER)
        self.page.fill("#login-password", PASSWORD)
        self.page.press("#login-password", "Enter")
        self.page.wait_for_selector("#app:not([hidden])")

    def new_chat(self) -> None:
        self.page.click("#new-chat")
        self.page.wait_for_selector("#new-chat-panel:not([hidden])")

    def send(self, text: str) -> None:
        self.page.fill("#composer-input", text)
        self.page.press("#composer-input", "Enter")

    def last_reply(self) -> Any:
        return self.page.locator(".msg-assistant").last

    def wait_final(self) -> Any:
        """The last reply once it is final and its Markdown is rendered (no longer plain text)."""
        self.page.wait_for_function(
            """() => { const m = [...document.querySelectorAll('.msg-assistant')].pop();
                       return m && m.dataset.status !== 'streaming' && !m.querySelector('.msg-body.plain')
                              && !document.body.classList.contains('busy'); }""",
            timeout=15_000,
        )
        return self.last_reply()

    def assert_clean(self) -> None:
        """Nothing left the machine, no CSP violation, no dialog, no script error."""
        foreign = [u for u in self.requests if not u.startswith(self.server.url)]
        assert foreign == [], foreign
        assert self.page.evaluate("window.__csp") == []
        assert self.dialogs == []
        assert self.errors == []


@contextlib.contextmanager
def _open_tab(browser: Any, server: Server) -> Iterator[Tab]:
    context = browser.new_context(locale="ko-KR", viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.add_init_script(WATCH)
    t = Tab(page, server, [], [], [])
    page.on("request", lambda r: t.requests.append(r.url))
    page.on("pageerror", lambda e: t.errors.append(str(e)))

    def on_dialog(dialog: Any) -> None:
        t.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    try:
        yield t
    finally:
        context.close()


@pytest.fixture
def tab(browser: Any, server: Server) -> Iterator[Tab]:
    with _open_tab(browser, server) as t:
        yield t


@pytest.fixture
def guest_tab(browser: Any, guest_server: Server) -> Iterator[Tab]:
    with _open_tab(browser, guest_server) as t:
        yield t


def body_text(locator: Any) -> str:
    return str(locator.locator(".msg-body").inner_text())


# -- tests -----------------------------------------------------------------------------------------------------


def test_login_send_streamed_reply_rendered_and_kept_after_reload(tab: Tab, server: Server) -> None:
    page = tab.page
    tab.goto("/")
    # Keyboard only: the login form, then the skip link to the message box.
    page.wait_for_selector("#login-username:focus")
    page.keyboard.type(USER)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_selector("#app:not([hidden])")
    assert page.locator("html").get_attribute("lang") == "ko"
    assert page.locator("#new-chat").inner_text() == "새 대화"

    chunks = ["서울은 ", "**대중교통**이 ", "좋아요.\n\n", "```python\n", "print('안녕')\n", "```\n\n"]
    chunks += ["| a | b |\n", "|---|---|\n", "| 1 | 2 |\n"]
    server.upstream.enqueue(Fault.delay_first_token(1.0, Reply("".join(chunks), chunks=chunks, chunk_delay=0.15)))
    page.evaluate(
        """() => { window.__seen = new Set(); const tick = () => {
             const m = [...document.querySelectorAll('.msg-assistant .msg-body.plain')].pop();
             if (m) window.__seen.add(m.textContent.length);
             requestAnimationFrame(tick); }; tick(); }"""
    )
    page.locator("#composer-input").focus()
    page.keyboard.type("서울 여행 팁 알려줘")
    page.keyboard.press("Enter")

    # Until the first token: a visible "thinking…" indicator; the composer is cleared and offers Stop.
    page.wait_for_selector(".msg-assistant .thinking", state="visible")
    assert "생각 중" in page.locator(".msg-assistant .thinking").inner_text()
    assert page.input_value("#composer-input") == ""
    assert page.locator("#stop").is_visible()

    reply = tab.wait_final()
    assert page.locator(".msg-assistant .thinking").count() == 0
    seen = page.evaluate("[...window.__seen]")
    assert len([n for n in seen if 0 < n < len("".join(chunks))]) >= 3, seen  # it grew token by token
    assert reply.locator(".msg-body strong").inner_text() == "대중교통"
    assert reply.locator(".codeblock .code-lang").inner_text() == "python"
    assert reply.locator(".codeblock span.nb").inner_text() == "print"  # highlighted
    assert reply.locator(".msg-body table td").all_inner_texts() == ["1", "2"]
    assert page.locator(".msg-user .msg-body").last.inner_text() == "서울 여행 팁 알려줘"
    assert page.locator("#send").is_visible()
    conv_url = page.url
    assert "/c/" in conv_url
    assert page.locator(".conv-link[aria-current='page']").inner_text() == "서울 여행 팁 알려줘"
    assert server.upstream.last.json["messages"][-1]["content"] == "서울 여행 팁 알려줘"

    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    reply = tab.wait_final()
    assert page.url == conv_url
    assert reply.locator(".msg-body strong").inner_text() == "대중교통"
    assert reply.locator(".codeblock span.nb").inner_text() == "print"
    assert reply.get_attribute("data-status") == "complete"
    assert page.locator(".msg-user .msg-body").last.inner_text() == "서울 여행 팁 알려줘"
    tab.assert_clean()


def test_stop_mid_reply_keeps_the_partial_reply(tab: Tab, server: Server) -> None:
    page = tab.page
    tab.login()
    tab.new_chat()
    words = [f"단어{i} " for i in range(60)]
    server.upstream.enqueue(Reply("".join(words), chunks=words, chunk_delay=0.1))
    tab.send("길게 말해 줘")
    page.wait_for_function(
        "() => ([...document.querySelectorAll('.msg-assistant')].pop()?.textContent || '').includes('단어3 ')"
    )
    page.click("#stop")
    reply = tab.wait_final()
    assert reply.get_attribute("data-status") == "interrupted"
    assert "중간에 멈췄어요" in reply.locator(".msg-note").inner_text()
    partial = body_text(reply)
    assert partial.startswith("단어0 단어1 단어2 단어3")
    assert "단어59" not in partial
    assert page.locator(".msg-regenerate").count() == 1  # the stopped reply can be regenerated

    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    reply = tab.wait_final()
    assert reply.get_attribute("data-status") == "interrupted"
    assert body_text(reply) == partial
    tab.assert_clean()


def test_a_reply_whose_stream_ended_without_a_finish_shows_interrupted_with_regenerate(
    tab: Tab, server: Server
) -> None:
    page = tab.page
    tab.login()
    tab.new_chat()
    tab.send("cut short [[nodone]]")  # the fake upstream ends the body after the finish_reason, without [DONE]
    reply = tab.wait_final()
    assert reply.get_attribute("data-status") == "interrupted"
    assert body_text(reply) == "ECHO: cut short"
    assert page.locator(".msg-regenerate").count() == 1

    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    reply = tab.wait_final()
    assert reply.get_attribute("data-status") == "interrupted"
    assert body_text(reply) == "ECHO: cut short"
    assert page.locator(".msg-regenerate").count() == 1
    tab.assert_clean()


def test_reload_mid_reply_shows_the_reply_complete_or_interrupted(tab: Tab, server: Server) -> None:
    page = tab.page
    tab.login()
    tab.new_chat()
    words = [f"w{i} " for i in range(40)]
    server.upstream.enqueue(Reply("".join(words), chunks=words, chunk_delay=0.1))
    tab.send("reload me")
    page.wait_for_function(
        "() => ([...document.querySelectorAll('.msg-assistant')].pop()?.textContent || '').includes('w2 ')"
    )
    page.wait_for_url("**/c/*")
    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    reply = tab.wait_final()
    assert reply.get_attribute("data-status") in {"complete", "interrupted"}
    text = body_text(reply)
    assert text.startswith("w0 w1 w2"), text
    assert page.locator(".msg-user .msg-body").last.inner_text() == "reload me"
    tab.assert_clean()


def test_enter_during_ime_composition_never_sends(tab: Tab, server: Server) -> None:
    page = tab.page
    tab.login()
    tab.new_chat()
    server.upstream.enqueue(Reply("네, 안녕하세요!"))
    # Real DOM events in the page, as a Korean IME produces them: composition, Enter while composing (Chrome marks
    # it isComposing, keyCode 229), then Safari's order (compositionend first, then a keydown with keyCode 229).
    result = page.evaluate(
        """() => {
          const box = document.getElementById('composer-input');
          box.focus();
          const key = (init) => {
            const e = new KeyboardEvent('keydown',
              {key: 'Enter', code: 'Enter', bubbles: true, cancelable: true, ...init});
            box.dispatchEvent(e);
            return e.defaultPrevented;
          };
          const out = {};
          box.value = '안녕하세';
          box.dispatchEvent(new CompositionEvent('compositionstart', {data: ''}));
          box.value = '안녕하세요';
          box.dispatchEvent(new CompositionEvent('compositionupdate', {data: '요'}));
          out.chrome = key({isComposing: true, keyCode: 229});
          out.flagOnly = key({keyCode: 13});            // isComposing missing, but a composition is open
          box.dispatchEvent(new CompositionEvent('compositionend', {data: '요'}));
          out.safari = key({keyCode: 229});             // Safari: after compositionend, still keyCode 229
          out.value = box.value;
          out.users = document.querySelectorAll('.msg-user').length;
          return out;
        }"""
    )
    assert result == {"chrome": False, "flagOnly": False, "safari": False, "value": "안녕하세요", "users": 0}

    # Shift+Enter is a new line; a plain Enter after the composition sends, exactly once, without a doubled syllable.
    page.locator("#composer-input").press("End")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("반가워요")
    assert page.input_value("#composer-input") == "안녕하세요\n반가워요"
    assert page.locator(".msg-user").count() == 0
    page.keyboard.press("Enter")
    tab.wait_final()
    assert page.locator(".msg-user").count() == 1
    assert page.locator(".msg-user .msg-body").inner_text() == "안녕하세요\n반가워요"
    assert page.input_value("#composer-input") == ""
    tab.assert_clean()


XSS_USER = """<script>window.__xss = 'user-script'</script>
<img src=x onerror="window.__xss = 'user-img'">
<svg onload="window.__xss = 'user-svg'"><script>window.__xss = 'user-svg-script'</script></svg>
[click](javascript:window.__xss='user-md')
<a href="javascript:window.__xss='user-a'">a</a>"""

XSS_MODEL = """Here you go:

<script>window.__xss = 'model-script'; alert(1)</script>

<img src=x onerror="window.__xss = 'model-img'; alert(2)">

<svg><animate onbegin="window.__xss = 'model-svg'" attributeName="x" dur="1s"/></svg>
<svg onload="window.__xss = 'model-svg-onload'"></svg>

<math><mtext><table><mglyph><style><img src=x onerror="window.__xss='mxss'">

[plain javascript](javascript:window.__xss='md-js')
[mixed case](JaVaScRiPt:window.__xss='md-case')
[entity](&#106;avascript:window.__xss='md-entity')
[data](data:text/html,<script>window.__xss='md-data'</script>)
[title trick](https://example.com "x\\" onmouseover=\\"window.__xss='md-title'")
![image trick](x" onerror="window.__xss='md-img')
<javascript:window.__xss='autolink'>

[ref]

[ref]: javascript:window.__xss='md-ref'

<a href="javascript:window.__xss='html-a'" onclick="window.__xss='html-onclick'">raw link</a>
<iframe srcdoc="<script>parent.__xss='iframe'</script>"></iframe>
<div style="background:url(javascript:alert(3))" onmouseover="window.__xss='div'">hover</div>

```html
<script>window.__xss = 'in-code'</script>
```

**end**
"""


def test_xss_payloads_in_user_and_model_messages_execute_nothing(tab: Tab, server: Server) -> None:
    page = tab.page
    tab.login()
    tab.new_chat()
    server.upstream.enqueue(Reply(XSS_MODEL, chunk_delay=0.0))
    tab.send(XSS_USER)
    reply = tab.wait_final()
    assert reply.locator(".msg-body strong").inner_text() == "end"

    def check() -> None:
        # Every element inside message bodies except the copy bar the page itself adds to code blocks.
        page.evaluate("window.SERVER_HTML = '.msg-body *:not(.code-bar, .code-bar *)'")
        # Poke everything a payload could hang on: hover, focus, click on non-links, animation time.
        page.evaluate(
            """() => { for (const el of document.querySelectorAll(SERVER_HTML)) {
                 for (const type of ['mouseover', 'mouseenter', 'focus', 'animationstart']) {
                   el.dispatchEvent(new Event(type, {bubbles: true})); }
                 if (el.tagName !== 'A') el.click(); } }"""
        )
        page.wait_for_timeout(300)
        assert page.evaluate("window.__xss") is None
        found = page.evaluate(
            """() => [...document.querySelectorAll(SERVER_HTML)].flatMap((el) => {
                 const bad = [];
                 const tag = el.tagName;
                 if (/^(SCRIPT|IMG|SVG|IFRAME|MATH|STYLE|OBJECT|EMBED|FORM|INPUT)$/i.test(tag)) bad.push(tag);
                 const risky = /^on|^style$|^src$|^srcdoc$/i;
                 for (const a of el.attributes) if (risky.test(a.name)) bad.push(`${tag}@${a.name}`);
                 const href = el.getAttribute('href');
                 if (tag === 'A' && href !== null && !/^(https?:|mailto:)/.test(href)) bad.push(`A@href=${href}`);
                 return bad; })"""
        )
        assert found == []
        # The user's text is shown as the text they typed, not as markup.
        assert "<img src=x onerror=" in page.locator(".msg-user .msg-body").last.inner_text()
        assert "<script>window.__xss = 'in-code'</script>" in reply.locator(".codeblock code").inner_text()
        tab.assert_clean()

    check()
    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    reply = tab.wait_final()
    check()


def test_failed_send_keeps_the_text_and_retry_sends_it(tab: Tab, server: Server) -> None:
    page = tab.page
    tab.login()
    tab.new_chat()
    page.route("**/api/conversations/*/messages", lambda route: route.abort("connectionrefused"))
    tab.send("이 메시지는 사라지면 안 돼요")
    page.wait_for_selector("#error-bar:not([hidden])")
    assert "보내지 못했어요" in page.locator("#error-text").inner_text()
    assert page.input_value("#composer-input") == "이 메시지는 사라지면 안 돼요"
    assert page.locator(".msg-user").count() == 0
    assert page.locator(".msg-assistant").count() == 0

    page.unroute("**/api/conversations/*/messages")
    server.upstream.enqueue(Reply("받았어요!"))
    page.click("#error-retry")
    reply = tab.wait_final()
    assert body_text(reply) == "받았어요!"
    assert page.locator(".msg-user .msg-body").inner_text() == "이 메시지는 사라지면 안 돼요"
    assert page.input_value("#composer-input") == ""
    assert page.locator("#error-bar").is_hidden()
    tab.errors.clear()  # the aborted fetch is reported by the browser, by design
    tab.requests[:] = [u for u in tab.requests if u.startswith(server.url)]
    tab.assert_clean()


def test_regenerate_and_edit_the_last_turn(tab: Tab, server: Server) -> None:
    page = tab.page
    tab.login()
    tab.new_chat()
    server.upstream.enqueue(Reply("첫 번째 답"))
    tab.send("질문 하나")
    tab.wait_final()

    server.upstream.enqueue(Reply("두 번째 답"))
    page.click(".msg-regenerate")
    reply = tab.wait_final()
    assert body_text(reply) == "두 번째 답"
    assert page.locator(".msg-assistant").count() == 1

    server.upstream.enqueue(Reply("고친 질문에 대한 답"))
    page.click(".msg-edit")
    page.fill(".msg-edit-input", "고친 질문")
    page.press(".msg-edit-input", "Enter")
    reply = tab.wait_final()
    assert body_text(reply) == "고친 질문에 대한 답"
    assert page.locator(".msg-user .msg-body").all_inner_texts() == ["고친 질문"]
    assert server.upstream.last.json["messages"][-1]["content"] == "고친 질문"

    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    tab.wait_final()
    assert page.locator(".msg-user .msg-body").all_inner_texts() == ["고친 질문"]
    assert page.locator(".msg-assistant .msg-body").all_inner_texts() == ["고친 질문에 대한 답"]

    # Copy buttons: the whole message, and a code block alone.
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.click(".msg-assistant .msg-copy")
    assert page.evaluate("navigator.clipboard.readText()") == "고친 질문에 대한 답"
    tab.assert_clean()


def test_conversations_personas_models_and_language(tab: Tab, server: Server) -> None:
    page = tab.page
    tab.login()
    tab.new_chat()
    models = page.locator("#model-select option").all_inner_texts()
    assert any("fake/echo" in m for m in models), models
    personas = page.locator("#persona-select option").all_inner_texts()
    assert "회화 튜터" in personas and "대화 도우미" in personas

    # A persona that speaks first: its greeting appears without typing anything.
    page.select_option("#persona-select", "tutor")
    page.select_option("#persona-variables select[name='level']", "intermediate")
    page.click("#start-chat")
    page.wait_for_selector(".msg-assistant")
    greeting = page.locator(".msg-assistant .msg-body").inner_text()
    assert "안녕하세요!" in greeting and "intermediate" in greeting
    assert page.locator(".msg-user").count() == 0
    page.wait_for_url("**/c/*")

    # Rename (keyboard), search, delete.
    item = page.locator(".conv-item:has(.conv-link[aria-current='page'])")
    item.locator(".conv-rename").click()
    page.fill(".conv-rename-input", "튜터 연습 🎓")
    page.press(".conv-rename-input", "Enter")
    page.wait_for_selector(".conv-link[aria-current='page']:text('튜터 연습 🎓')")
    assert page.locator("#chat-title").inner_text() == "튜터 연습 🎓"

    page.fill("#conv-search", "튜터 연습")
    page.wait_for_function("() => document.querySelectorAll('.conv-item').length === 1")
    assert page.locator(".conv-link").inner_text() == "튜터 연습 🎓"
    page.fill("#conv-search", "없는 제목 zzz")
    page.wait_for_selector("#conv-empty:not([hidden])")
    assert page.locator("#conv-empty").inner_text() == "검색 결과가 없어요."
    page.fill("#conv-search", "")
    page.wait_for_function("() => document.querySelectorAll('.conv-item').length > 1")

    item = page.locator(".conv-item:has(.conv-link[aria-current='page'])")
    item.locator(".conv-delete").click()
    page.wait_for_selector("#confirm-dialog[open]")
    page.click("#confirm-dialog button[value='ok']")
    page.wait_for_selector("#new-chat-panel:not([hidden])")
    assert page.locator(".conv-link", has_text="튜터 연습").count() == 0
    assert page.url == server.url + "/"

    # The interface language follows the switch (and stays after a reload).
    page.select_option("#lang-select", "en")
    assert page.locator("#new-chat").inner_text() == "New chat"
    assert page.get_attribute("#composer-input", "placeholder") == "Write a message"
    assert page.locator("html").get_attribute("lang") == "en"
    page.reload()
    page.wait_for_selector("#app:not([hidden])")
    assert page.locator("#new-chat").inner_text() == "New chat"
    assert "Conversation tutor" in page.locator("#persona-select option").all_inner_texts()
    tab.assert_clean()


def test_no_guest_button_when_anonymous_chat_is_off(tab: Tab) -> None:
    tab.goto("/")
    tab.page.wait_for_selector("#login-view:not([hidden])")
    assert tab.page.locator("#login-submit").is_visible()
    assert tab.page.locator("#guest-login").count() == 0
    tab.assert_clean()


def test_a_guest_chats_with_the_personas_open_to_guests(guest_tab: Tab, guest_server: Server) -> None:
    tab, page = guest_tab, guest_tab.page
    tab.goto("/")
    guest = page.locator("#guest-login")
    assert guest.inner_text() == "게스트로 시작"
    page.select_option("#login-lang", "en")
    assert guest.inner_text() == "Continue as guest"
    page.select_option("#login-lang", "ko")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-login-guest.png"))
    guest.click()
    page.wait_for_selector("#app:not([hidden])")
    page.wait_for_selector("#new-chat-panel:not([hidden])")
    me = page.evaluate("fetch('/api/auth/me').then((r) => r.json())")
    assert me["user"]["anonymous"] is True

    # The server's default persona ("members") is closed to guests: it is not offered, and an open one is chosen.
    personas = page.locator("#persona-select option").all_inner_texts()
    assert "회원 전용" not in personas and "대화 도우미" in personas and "회화 튜터" in personas
    assert page.input_value("#persona-select") == "assistant"

    # Long enough to show growth: the output filter holds back the last few letters of a stream while it checks them.
    words = [f"게스트도 대화할 수 있어요 ({i}). " for i in range(8)]
    guest_server.upstream.enqueue(Reply("".join(words), chunks=words, chunk_delay=0.15))
    page.evaluate(
        """() => { window.__seen = new Set(); const tick = () => {
             const m = [...document.querySelectorAll('.msg-assistant .msg-body.plain')].pop();
             if (m) window.__seen.add(m.textContent.length);
             requestAnimationFrame(tick); }; tick(); }"""
    )
    tab.send("안녕하세요, 게스트예요")
    reply = tab.wait_final()
    assert body_text(reply) == "".join(words).strip()
    assert reply.get_attribute("data-status") == "complete"
    seen = page.evaluate("[...window.__seen]")
    assert len([n for n in seen if 0 < n < len("".join(words))]) >= 3, seen  # it streamed in, piece by piece
    sent = guest_server.upstream.last.json["messages"]
    assert sent[-1]["content"] == "안녕하세요, 게스트예요"
    assert sent[0]["role"] == "system" and "You are Daehwa" in sent[0]["content"]  # the assistant persona's prompt
    page.wait_for_url("**/c/*")
    tab.assert_clean()


def _older_page_request(url: str) -> bool:
    return "/api/conversations/" in url and "before=" in url


def _user_question(i: int) -> str:
    return f"질문 {i}: 이건 몇 번째 메시지인가요?"


def test_a_1000_message_conversation_opens_at_its_latest_messages(tab: Tab, server: Server) -> None:
    page = tab.page
    tab.login()
    tab.goto(f"/c/{server.long_conversation}")
    page.wait_for_function(f"() => document.querySelectorAll('.msg').length === {WEB_MESSAGE_PAGE}")
    # Rendered in batches, newest first: eventually no reply is left as plain text.
    page.wait_for_function("() => !document.querySelector('.msg-assistant .msg-body.plain')", timeout=30_000)
    last = page.locator(".msg-assistant").last
    assert last.locator("strong").inner_text() == f"{LONG_CONVERSATION_MESSAGES // 2 - 1}번째"
    assert last.is_visible()  # opened at the bottom
    first_turn = (LONG_CONVERSATION_MESSAGES - WEB_MESSAGE_PAGE) // 2
    assert page.locator(".msg-user .msg-body").first.text_content() == _user_question(first_turn)
    assert [u for u in tab.requests if _older_page_request(u)] == []  # nothing older fetched while at the bottom
    assert page.locator(".older-status").is_hidden()
    assert page.evaluate("getComputedStyle(document.querySelector('.msg')).contentVisibility") == "auto"
    page.fill("#composer-input", "아직 빠른가요?")
    assert page.input_value("#composer-input") == "아직 빠른가요?"
    tab.assert_clean()


def test_scrolling_up_loads_older_messages_in_order_and_keeps_the_place(tab: Tab, server: Server) -> None:
    page = tab.page
    tab.login()
    held: list[Any] = []

    def hold(route: Any) -> None:  # the first older page waits until the test lets it through
        held.append(route)

    page.route(_older_page_request, hold)
    tab.goto(f"/c/{server.long_conversation}")
    page.wait_for_function(f"() => document.querySelectorAll('.msg').length === {WEB_MESSAGE_PAGE}")
    page.locator("#messages").hover()
    with page.expect_request(lambda r: _older_page_request(r.url)):
        page.mouse.wheel(0, -200_000)

    # While the page is on its way: a visible "loading older messages" line at the top of the list.
    status = page.locator(".older-status")
    status.wait_for(state="visible")
    assert status.inner_text() == "이전 메시지를 불러오는 중…"
    page.wait_for_function("() => document.getElementById('messages').scrollTop === 0")
    anchor_id, anchor_top = page.evaluate(
        "() => { const m = document.querySelector('.msg'); return [m.dataset.id, m.getBoundingClientRect().top]; }"
    )
    assert len(held) == 1
    held[0].continue_()
    page.unroute(_older_page_request, hold)
    page.wait_for_function(f"() => document.querySelectorAll('.msg').length === {2 * WEB_MESSAGE_PAGE}")
    assert status.is_hidden()
    # The message the reader was looking at stays where it was; the older ones are above it, off screen.
    page.wait_for_function("() => !document.querySelector('.msg-assistant .msg-body.plain')", timeout=30_000)
    top_now = page.evaluate(
        f"() => document.querySelector('.msg[data-id=\"{anchor_id}\"]').getBoundingClientRect().top"
    )
    assert abs(top_now - anchor_top) <= 2, (anchor_top, top_now)
    assert page.evaluate("document.getElementById('messages').scrollTop") > 1000

    # On up to the first message: every page arrives once, in order, with no message twice.
    for shown in range(3 * WEB_MESSAGE_PAGE, LONG_CONVERSATION_MESSAGES + 1, WEB_MESSAGE_PAGE):
        page.mouse.wheel(0, -200_000)
        page.wait_for_function(f"() => document.querySelectorAll('.msg').length >= {shown}", timeout=15_000)
    page.mouse.wheel(0, -200_000)  # at the first message: nothing more to fetch
    page.wait_for_function("() => document.getElementById('messages').scrollTop === 0")
    assert page.locator(".msg-user .msg-body").first.is_visible()
    ids = page.eval_on_selector_all(".msg", "nodes => nodes.map((n) => n.dataset.id)")
    assert len(ids) == LONG_CONVERSATION_MESSAGES == len(set(ids))
    roles = page.eval_on_selector_all(".msg", "nodes => nodes.map((n) => n.classList.contains('msg-user'))")
    assert roles == [True, False] * (LONG_CONVERSATION_MESSAGES // 2)
    questions = page.locator(".msg-user .msg-body").all_text_contents()
    assert questions == [_user_question(i) for i in range(LONG_CONVERSATION_MESSAGES // 2)]
    answers = page.locator(".msg-assistant .msg-body").all_text_contents()
    assert all(f"{i}번째 답이에요" in text for i, text in enumerate(answers)), answers[:3]
    cursors = [u for u in tab.requests if _older_page_request(u)]
    assert len(cursors) == len(set(cursors)) == LONG_CONVERSATION_MESSAGES // WEB_MESSAGE_PAGE - 1
    assert status.is_hidden()
    tab.assert_clean()


def test_screenshots_light_dark_and_phone(tab: Tab, server: Server) -> None:
    page = tab.page
    tab.login()
    tab.new_chat()
    server.upstream.enqueue(Reply(RICH_REPLY, chunk_delay=0.0))
    tab.send("서울 여행 팁을 표와 코드로 정리해 줘")
    tab.wait_final()
    page.locator("#composer-input").fill("고마워요! 다음 질문은…")
    ARTIFACTS.mkdir(exist_ok=True)

    backgrounds = {}
    for theme in ("light", "dark"):
        page.select_option("#theme-select", theme)
        assert page.locator("html").get_attribute("data-theme") == theme
        backgrounds[theme] = page.evaluate("getComputedStyle(document.body).backgroundColor")
        page.screenshot(path=str(ARTIFACTS / f"web-chat-{theme}.png"))
    assert backgrounds["light"] != backgrounds["dark"]

    page.select_option("#theme-select", "light")
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.locator("#sidebar").is_hidden()
    page.screenshot(path=str(ARTIFACTS / "web-chat-phone.png"))
    page.click("#sidebar-open")
    page.wait_for_selector("#sidebar.open")
    page.wait_for_timeout(250)  # the drawer's slide-in
    page.screenshot(path=str(ARTIFACTS / "web-chat-phone-menu.png"))
    page.keyboard.press("Escape")
    page.wait_for_selector("#sidebar:not(.open)", state="attached")

    page.context.clear_cookies()
    page.evaluate("localStorage.setItem('daehwa.theme', 'dark')")
    page.reload()
    page.wait_for_selector("#login-view:not([hidden])")
    page.screenshot(path=str(ARTIFACTS / "web-login-dark.png"))
    for name in ("light", "dark", "phone", "phone-menu"):
        assert (ARTIFACTS / f"web-chat-{name}.png").stat().st_size > 10_000
    tab.assert_clean()


def test_the_form_chip_follows_a_reservation(tab: Tab, server: Server) -> None:
    page = tab.page
    tab.login()
    tab.new_chat()
    page.select_option("#persona-select", "reservation")
    page.click("#start-chat")
    page.wait_for_selector(".msg-assistant")
    page.wait_for_url("**/c/*")
    chip = page.locator("#form-chip")
    chip.wait_for(state="visible")
    assert chip.inner_text() == "예약 0/6 · 다음: 날짜"

    def answer(text: str, *, next_field: str) -> None:
        replies = page.locator(".msg-assistant").count()
        page.locator("#composer-input").fill(text)
        page.keyboard.press("Enter")
        page.wait_for_function(f"() => document.querySelectorAll('.msg-assistant').length > {replies}")
        page.wait_for_selector(f"#form-chip[data-next='{next_field}']")

    answer("내일 저녁 7시에 두 명이요", next_field="name")
    assert chip.inner_text() == "예약 3/6 · 다음: 예약자 성함"
    assert "인원: 2명" in (chip.get_attribute("title") or "")
    answer("김민수입니다", next_field="phone")
    answer("010-123-456", next_field="phone")  # re-asked with the reason
    # The chip already said "phone": wait for the re-ask itself, not the "thinking" placeholder before it.
    page.wait_for_function(
        "() => [...document.querySelectorAll('.msg-assistant')].at(-1).innerText.includes('자릿수')", timeout=15_000
    )
    answer("010-1234-5678", next_field="seat")
    answer("창가요", next_field="")
    page.wait_for_selector("#form-chip[data-status='confirming']")
    assert chip.inner_text() == "예약 6/6 · 확인 중"
    page.locator("#composer-input").fill("네")
    page.keyboard.press("Enter")
    page.wait_for_selector("#form-chip[data-status='done']")
    assert chip.inner_text() == "예약 6/6 · 완료"
    assert "예약이 완료되었어요" in body_text(page.locator(".msg-assistant").last)
    # Another conversation without a form hides the chip.
    tab.new_chat()
    page.wait_for_selector("#form-chip", state="hidden")
    tab.assert_clean()


class CuttingProxy:
    """A TCP proxy to the server on its own loopback port whose ``cut()`` drops every open connection at once, as a
    flaky network does; new connections go through again."""

    def __init__(self, target: str) -> None:
        self.target = int(target.rsplit(":", 1)[1])
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.cuts = 0
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def cut(self) -> None:
        with self._lock:
            dropped, self._open = self._open, []
        for sock in dropped:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.cuts += 1

    def close(self) -> None:
        self.listener.close()
        self.cut()


def test_a_connection_dropped_mid_reply_resumes_without_losing_or_repeating_text(browser: Any, server: Server) -> None:
    proxy = CuttingProxy(server.url)
    try:
        with _open_tab(browser, dataclasses.replace(server, url=proxy.url)) as tab:
            page = tab.page
            tab.login()
            tab.new_chat()
            words = [f"말{i} " for i in range(60)]
            server.upstream.enqueue(Reply("".join(words), chunks=words, chunk_delay=0.05))
            tab.send("끊겨도 이어서 말해 줘")
            page.wait_for_function(
                "() => ([...document.querySelectorAll('.msg-assistant')].pop()?.textContent || '').includes('말5 ')"
            )
            proxy.cut()  # the page's stream (and every other connection) drops mid-reply
            reply = tab.wait_final()
            assert reply.get_attribute("data-status") == "complete"
            shown = body_text(reply)
            assert shown == "".join(words).strip()  # every word, each once
            assert any("/stream?after=" in url for url in tab.requests)  # it was resumed, not reloaded
            assert page.locator("#error-bar:not([hidden])").count() == 0
            cid = page.url.rsplit("/c/", 1)[1]
            stored = page.evaluate(
                "async (id) => (await (await fetch(`/api/conversations/${id}`)).json()).messages.pop()", cid
            )
            assert stored["content"] == "".join(words) and stored["status"] == "complete"
            tab.assert_clean()
    finally:
        proxy.close()

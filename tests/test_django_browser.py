"""The Django example site in a real browser: Debian's chromium, driven by Playwright.

``examples/django_site/serve.py`` runs as a subprocess (its one-command start: migrate, demo user, uvicorn) with
``tests/fake_upstream.py`` as its model, an "openai"-type provider reached over HTTP. The page is the HTMX room of
``daehwa.django`` and nothing else: every step below is htmx-ext-ws and the consumer's fragments.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .api_helpers import free_port
from .conftest import IN_CI, require
from .daehwa_server import running
from .fake_upstream import FakeUpstream

pytestmark = pytest.mark.browser

try:
    import channels  # noqa: F401
except ImportError:  # the [django] extra: a skip here, a failure in CI
    if IN_CI:
        raise
    pytest.skip("the [django] extra is not installed: pip install -e '.[django]'", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
SERVE = ROOT / "examples" / "django_site" / "serve.py"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"
OPENER = "Hello from the fake upstream."  # its answer to the tutor's hidden opening message


@contextlib.contextmanager
def _example_site(tmp: Path, upstream: FakeUpstream) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    providers = tmp / "providers.toml"
    providers.write_text(f'[providers.fake]\ntype = "openai"\nbase_url = "{upstream.base_url}"\nmodels = ["echo"]\n')
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAEHWA_", "OPENAI_", "DJANGO_"))}
    env.update(
        DJANGO_SITE_DATA=str(tmp),
        DAEHWA_PROVIDERS_FILE=str(providers),
        DAEHWA_DEFAULT_MODEL="fake/echo",
        DAEHWA_STREAM_FLUSH_SECONDS="0.1",
    )
    log = tmp / "serve.log"
    argv = [sys.executable, str(SERVE), "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with running(argv, env=env, log=log, ready_url=f"{url}/accounts/login/", timeout=90, cwd=tmp) as proc:
        yield url, proc
    assert "Traceback" not in log.read_text(), log.read_text()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, FakeUpstream, subprocess.Popen[bytes]]]:
    require(CHROMIUM.is_file(), f"{CHROMIUM} is missing: apt-get install chromium")
    require(SERVE.is_file(), f"{SERVE} is missing")
    with FakeUpstream(models=["echo"]) as upstream, _example_site(tmp_path, upstream) as (url, proc):
        yield url, upstream, proc


def _bubbles(page: Any) -> list[tuple[str, str, str]]:
    """(role class, status, text) of every message shown."""
    shown = page.eval_on_selector_all(
        "#daehwa-messages .daehwa-msg",
        "els => els.map(e => [e.classList[1], e.dataset.status, e.innerText.trim()])",
    )
    return [tuple(item) for item in shown]


def _wait_reply_final(page: Any, count: int) -> None:
    """Until ``count`` bot messages are shown and none is still streaming."""
    page.wait_for_function(
        f"""() => document.querySelectorAll('#daehwa-messages .daehwa-assistant').length >= {count}
                 && !document.querySelector('#daehwa-messages .daehwa-streaming')""",
        timeout=60_000,
    )


def test_the_example_tutor_room_streams_remembers_and_keeps_a_cut_reply(
    site: tuple[str, FakeUpstream, subprocess.Popen[bytes]],
):
    from playwright.sync_api import sync_playwright

    url, upstream, server = site
    requests: list[str] = []
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(locale="ko-KR")
            page = context.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

            # The room needs a login: the page sends us to Django's login form, which brings us back.
            page.goto(url + "/")
            assert "/accounts/login/" in page.url
            page.fill("#id_username", "demo")
            page.fill("#id_password", "daehwa-demo")
            page.click("button[type=submit]")
            page.wait_for_selector(".daehwa-room[data-state='open']")

            # The bot speaks first; its hidden opening message is never shown.
            _wait_reply_final(page, 1)
            assert _bubbles(page) == [("daehwa-assistant", "complete", OPENER)]
            assert "첫 문장으로" not in page.inner_text("#daehwa-messages")
            assert upstream.requests[0].json["messages"][-1]["content"] == "첫 문장으로 대화를 시작해주세요."

            # A reply streams in: seen part-way, then whole (one word every 250 ms from the fake upstream).
            page.fill("input[name=message]", "커피 주세요 [[steady 12 250]]")
            page.press("input[name=message]", "Enter")
            page.wait_for_function(
                """() => { const t = document.querySelector('.daehwa-streaming .daehwa-text');
                           return t && t.innerText.includes('w2') && !t.innerText.includes('w12'); }""",
                timeout=60_000,  # the first turns wait for the recall embedder to load (seconds on a busy machine)
            )
            assert page.input_value("input[name=message]") == ""  # the form was reset after sending
            assert page.is_visible(".daehwa-stop") and not page.is_visible(".daehwa-send")
            _wait_reply_final(page, 2)
            shown = _bubbles(page)
            assert shown[1] == ("daehwa-user", "complete", "커피 주세요 [[steady 12 250]]")
            assert shown[2] == ("daehwa-assistant", "complete", " ".join(f"w{i}" for i in range(1, 13)))
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "django-tutor-room.png"), full_page=True)

            # A reload is a new socket: the history comes from daehwa's store, and the bot does not open again.
            page.reload()
            page.wait_for_selector(".daehwa-room[data-state='open']")
            page.wait_for_function("() => document.querySelectorAll('#daehwa-messages .daehwa-msg').length === 3")
            assert _bubbles(page) == shown
            assert len(upstream.requests) == 2

            # Stop: the part that arrived stays, marked as cut short, and the room takes the next message.
            page.fill("input[name=message]", "천천히 말해 주세요 [[stall]]")
            page.press("input[name=message]", "Enter")
            page.wait_for_function("() => document.querySelector('.daehwa-streaming .daehwa-text')?.innerText")
            page.click(".daehwa-stop")
            _wait_reply_final(page, 3)
            role, status, text = _bubbles(page)[-1]
            assert (role, status) == ("daehwa-assistant", "interrupted") and text.startswith("E")
            assert page.input_value("input[name=message]") == ""

            # The connection drops mid-reply (a reload): the part that arrived is kept and marked as cut short.
            page.fill("input[name=message]", "이야기해 주세요 [[stall]]")
            page.press("input[name=message]", "Enter")
            page.wait_for_function(
                "() => (document.querySelector('.daehwa-streaming .daehwa-text')?.innerText || '').startsWith('ECHO')"
            )
            page.reload()
            page.wait_for_selector(".daehwa-room[data-state='open']")
            page.wait_for_function("() => document.querySelectorAll('#daehwa-messages .daehwa-msg').length === 7")
            role, status, text = _bubbles(page)[-1]
            assert (role, status) == ("daehwa-assistant", "interrupted")
            assert text.startswith("ECHO") and "답변이 중간에 멈췄어요." in text
            page.screenshot(path=str(ARTIFACTS / "django-tutor-interrupted.png"), full_page=True)

            # A guest (no login, another browser profile) has a room of its own, kept by the Django session.
            guest = browser.new_context(locale="en-US").new_page()
            guest.on("pageerror", lambda e: errors.append(str(e)))
            guest.goto(url + "/guest/")
            guest.wait_for_selector(".daehwa-room[data-state='open']")
            _wait_reply_final(guest, 1)
            guest.fill("input[name=message]", "hello [[steady 2 10]]")
            guest.press("input[name=message]", "Enter")
            _wait_reply_final(guest, 2)
            assert guest.get_attribute("input[name=message]", "placeholder") == "Write a message"
            guest.reload()
            guest.wait_for_selector(".daehwa-room[data-state='open']")
            guest.wait_for_function("() => document.querySelectorAll('#daehwa-messages .daehwa-msg').length === 3")
            assert [text for _, _, text in _bubbles(guest)] == [OPENER, "hello [[steady 2 10]]", "w1 w2"]

            # The server goes away: the room says it is reconnecting (htmx-ext-ws retries with backoff).
            assert not guest.is_visible(".daehwa-reconnecting")
            clean = list(errors)  # from here on the browser logs its refused reconnects
            server.terminate()
            server.wait(15)
            guest.wait_for_selector(".daehwa-room[data-state='reconnecting']")
            assert guest.is_visible(".daehwa-reconnecting")
            assert "Reconnecting" in guest.inner_text(".daehwa-reconnecting")
        finally:
            browser.close()
    assert clean == []
    assert all(u.startswith(url) for u in requests), [u for u in requests if not u.startswith(url)]  # no CDN
    assert any(u.endswith("/static/daehwa/htmx-ext-ws.js") for u in requests)

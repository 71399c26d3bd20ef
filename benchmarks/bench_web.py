"""How fast the chat page handles a long conversation, and how fast the server renders Markdown.

    python benchmarks/bench_web.py                 # 1,000 messages (500 turns)
    python benchmarks/bench_web.py --messages 2000

Part 1 (no browser): ``render_markdown`` on typical replies (lists, code, a table), uncached and cached.
Part 2 (Debian's /usr/bin/chromium via Playwright, a real ``daehwa serve`` on loopback): open the conversation and
measure the time until its latest page is on screen (plain text) and its replies' Markdown is rendered, the time to
load every older page by scrolling up, then with every message loaded the typing latency in the message box
(keydown -> next painted frame) and frame times while scrolling top to bottom.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from daehwa.accounts import Accounts
from daehwa.config import Settings
from daehwa.rendering import render_markdown
from daehwa.stores import NewConversation, NewMessage, open_store

REPLY = """**{i}번째** 답이에요. 요점은 다음과 같아요:

- 첫째, `T-money` 카드를 준비하세요.
- 둘째, 지하철 노선도를 확인하세요.

| 역 | 호선 |
|---|---|
| 서울역 | 1 |

```python
def fare(km: int) -> int:
    return 1400 + max(0, km - 10) * 100  # {i}
```
"""


def bench_render(n: int) -> None:
    texts = [REPLY.format(i=i) for i in range(n)]
    t0 = time.perf_counter()
    for text in texts:
        render_markdown(text)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    for text in texts:
        render_markdown(text)
    warm = time.perf_counter() - t0
    print(f"render_markdown: {n} replies uncached {cold * 1000:.0f} ms ({cold / n * 1e6:.0f} µs each), "
          f"cached {warm * 1000:.1f} ms")  # fmt: skip


WEB_MESSAGE_PAGE = 100  # MESSAGE_PAGE in daehwa/web/static/app.js


async def seed(settings: Settings, messages: int) -> str:
    store = open_store(settings.resolved_database_url(), settings)
    await store.open()
    try:
        user = await Accounts(store, settings).create_user("bench", "bench-password-1")
        conv = await store.create_conversation(user.id, NewConversation(title="bench", persona="assistant"))
        for i in range(messages // 2):
            await store.append_message(
                user.id, conv.id, NewMessage(role="user", content=f"질문 {i}: 다음 역은 어디인가요?")
            )
            await store.append_message(user.id, conv.id, NewMessage(role="assistant", content=REPLY.format(i=i)))
        return conv.id
    finally:
        await store.close()


def bench_browser(messages: int) -> None:
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="daehwa-bench-web-"))
    database = f"sqlite:///{tmp / 'daehwa.db'}"
    settings = Settings(data_dir=tmp, database_url=database, _env_file=None)  # type: ignore[call-arg]
    conv_id = asyncio.run(seed(settings, messages))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAEHWA_", "OPENAI_"))}
    env.update(DAEHWA_DATA_DIR=str(tmp), DAEHWA_DATABASE_URL=database, DAEHWA_LOG_LEVEL="warning")
    proc = subprocess.Popen(
        [sys.executable, "-m", "daehwa", "serve", "--host", "127.0.0.1", "--port", str(port)], cwd=tmp, env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=[
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
            )
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(url)
            page.fill("#login-username", "bench")
            page.fill("#login-password", "bench-password-1")
            page.press("#login-password", "Enter")
            page.wait_for_selector("#app:not([hidden])")
            t0 = time.perf_counter()
            page.goto(f"{url}/c/{conv_id}")
            first_page = min(messages, WEB_MESSAGE_PAGE)
            page.wait_for_function(f"() => document.querySelectorAll('.msg').length === {first_page}", timeout=120_000)
            shown = time.perf_counter() - t0
            page.wait_for_function("() => !document.querySelector('.msg-assistant .msg-body.plain')", timeout=120_000)
            rendered = time.perf_counter() - t0
            t0 = time.perf_counter()
            page.evaluate(
                f"""async () => {{
                  const box = document.getElementById('messages');
                  while (document.querySelectorAll('.msg').length < {messages}) {{
                    box.scrollTop = 0;
                    await new Promise((r) => setTimeout(r, 20));
                  }} }}"""
            )
            page.wait_for_function("() => !document.querySelector('.msg-assistant .msg-body.plain')", timeout=120_000)
            older = time.perf_counter() - t0
            typing = page.evaluate(
                """async () => {
                  const box = document.getElementById('composer-input'); box.focus();
                  const out = [];
                  for (let i = 0; i < 40; i++) {
                    const t = performance.now();
                    box.setRangeText('가', box.value.length, box.value.length, 'end');
                    box.dispatchEvent(new InputEvent('input', {bubbles: true, data: '가'}));
                    await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
                    out.push(performance.now() - t);
                  }
                  return out; }"""
            )
            frames = page.evaluate(
                """async () => {
                  const box = document.getElementById('messages'); box.scrollTop = 0;
                  await new Promise((r) => requestAnimationFrame(r));
                  const out = []; let last = performance.now();
                  while (box.scrollTop + box.clientHeight < box.scrollHeight - 2) {
                    box.scrollTop += 100;
                    await new Promise((r) => requestAnimationFrame(r));
                    const now = performance.now(); out.push(now - last); last = now;
                  }
                  return out; }"""
            )
            idle = page.evaluate(
                """async () => { const out = []; let last = performance.now();
                  for (let i = 0; i < 60; i++) { await new Promise((r) => requestAnimationFrame(r));
                    const now = performance.now(); out.push(now - last); last = now; }
                  return out; }"""
            )
            browser.close()
        print(
            f"page, {messages} messages: latest {first_page} shown {shown * 1000:.0f} ms, "
            f"their Markdown rendered {rendered * 1000:.0f} ms; all older pages loaded by scrolling up "
            f"{older * 1000:.0f} ms"
        )
        print(f"typing: median {statistics.median(typing):.1f} ms, max {max(typing):.1f} ms per keystroke to frame")
        print(f"idle frame (this machine's baseline): median {statistics.median(idle):.1f} ms")
        frames.sort()
        p95 = frames[int(len(frames) * 0.95) - 1]
        print(
            f"scrolling: {len(frames)} steps of 100 px, "
            f"median frame {statistics.median(frames):.1f} ms, p95 {p95:.1f} ms"
        )
    finally:
        proc.terminate()
        proc.wait(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    bench_render(args.messages // 2)
    if not args.no_browser:
        bench_browser(args.messages)


if __name__ == "__main__":
    main()

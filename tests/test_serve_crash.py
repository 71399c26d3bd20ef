"""``daehwa serve`` killed (-9) while a reply streams real text: after the restart the reply is ``interrupted`` with
the text flushed so far (issue 15). The crash test in test_stores_sqlite.py covers the store alone; this one covers
the whole service: the pipeline's periodic flush, the process dying with no cleanup, and recovery on the next start.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.api_helpers import auth, free_port
from tests.daehwa_server import running
from tests.fake_upstream import FakeUpstream

FLUSH_SECONDS = 0.5
WORD_MS = 50  # the fake upstream sends one word every 50 ms: ten words per flush interval


def _env(tmp_path: Path, upstream: FakeUpstream, port: int) -> dict[str, str]:
    providers = tmp_path / "providers.toml"
    providers.write_text(f'[providers.up]\ntype = "openai"\nbase_url = "{upstream.base_url}"\nmodels = ["m1"]\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAEHWA_", "OPENAI_"))}
    env.update(
        DAEHWA_DATA_DIR=str(tmp_path),
        DAEHWA_DATABASE_URL=f"sqlite:///{tmp_path / 'd.db'}",
        DAEHWA_PROVIDERS_FILE=str(providers),
        DAEHWA_DEFAULT_MODEL="up/m1",
        DAEHWA_PORT=str(port),
        DAEHWA_STREAM_FLUSH_SECONDS=str(FLUSH_SECONDS),
        DAEHWA_LOG_LEVEL="warning",
    )
    return env


def _daehwa(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "daehwa", *args], env=env, input=stdin, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _serving(env: dict[str, str], log: Path) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    url = f"http://127.0.0.1:{env['DAEHWA_PORT']}/healthz"
    return running([sys.executable, "-m", "daehwa", "serve"], env=env, log=log, ready_url=url)


def test_kill_9_mid_reply_keeps_the_flushed_text_interrupted_after_the_restart(tmp_path: Path) -> None:
    with FakeUpstream(models=("m1",)) as upstream:
        port = free_port()
        env = _env(tmp_path, upstream, port)
        _daehwa(env, "users", "create", "crashy", "--password-stdin", stdin="a long password\n")
        key = _daehwa(env, "keys", "create", "--user", "crashy").strip().splitlines()[-1]
        url = f"http://127.0.0.1:{port}"
        log = tmp_path / "serve.log"
        seen: list[str] = []  # every delta the client received, also those read after the kill
        with _serving(env, log) as server:
            cid = httpx.post(f"{url}/api/conversations", json={}, headers=auth(key)).json()["conversation"]["id"]
            body = {"content": f"talk for a while [[steady 200 {WORD_MS}]]", "stream": True}
            killed_after = 0
            with (
                contextlib.suppress(httpx.TransportError),
                httpx.stream(
                    "POST", f"{url}/api/conversations/{cid}/messages", json=body, headers=auth(key), timeout=30
                ) as response,
            ):
                event = None
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "delta":
                        seen.append(json.loads(line[6:])["text"])
                        # Kill after three flush intervals' worth of words: at least two flushes have happened.
                        if not killed_after and len("".join(seen).split()) >= 30:
                            os.kill(server.pid, signal.SIGKILL)
                            server.wait(10)
                            killed_after = len("".join(seen).split())
                    assert event != "done", "the reply finished before the kill: the upstream is too fast"
            assert killed_after, "the kill never happened"
            assert server.returncode == -signal.SIGKILL

        # The restart marks what the dead process left streaming as interrupted, once the dead process's lease on
        # the reply's chunk log has lapsed (until then it cannot be told from a live process's): within 1.5 leases.
        with _serving(env, log):
            deadline = time.monotonic() + 20
            while True:
                page = httpx.get(f"{url}/api/conversations/{cid}", headers=auth(key)).json()
                if page["messages"][-1]["status"] != "streaming" or time.monotonic() > deadline:
                    break
                time.sleep(0.2)

    reply = page["messages"][-1]
    received = "".join(seen)
    assert reply["role"] == "assistant" and reply["status"] == "interrupted"
    stored = reply["content"]
    assert stored, "no text was flushed before the kill"
    assert received.startswith(stored), (stored, received)
    # The last flush was at most one interval (ten words, plus the word that triggered it) before the kill.
    behind = len(received.split()) - len(stored.split())
    words_per_flush = int(FLUSH_SECONDS * 1000 / WORD_MS)
    assert 0 <= behind <= words_per_flush + 2, (behind, stored, received)
    assert page["messages"][-2]["content"] == f"talk for a while [[steady 200 {WORD_MS}]]"

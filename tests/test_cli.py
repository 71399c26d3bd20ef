"""The ``daehwa`` command, run as a real subprocess: piped and interactive chat, models, config."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daehwa.config import settings_table_markdown
from daehwa.providers.modelfiles import ModelFiles
from daehwa.stores import open_store
from daehwa.types import MessageStatus

from .conftest import require
from .fake_upstream import FakeUpstream, Reply

DAEHWA = [sys.executable, "-m", "daehwa"]


@pytest.fixture
def cli_env(tmp_path: Path, fake_upstream: FakeUpstream) -> dict[str, str]:
    """An environment whose default model is the fake upstream, with its own data directory."""
    providers = tmp_path / "providers.toml"
    providers.write_text(
        f'[providers.up]\ntype = "openai"\nbase_url = "{fake_upstream.base_url}"\nmodels = ["echo"]\n', encoding="utf-8"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAEHWA_", "OPENAI_"))}
    env.update(
        DAEHWA_DATA_DIR=str(tmp_path / "data"),
        DAEHWA_PROVIDERS_FILE=str(providers),
        DAEHWA_DEFAULT_MODEL="up/echo",
        DAEHWA_LOG_LEVEL="warning",
        COLUMNS="200",
    )
    return env


def stored_messages(data_dir: Path, user: str = "local") -> list[tuple[str, str, MessageStatus]]:
    async def read() -> list[tuple[str, str, MessageStatus]]:
        store = open_store(f"sqlite:///{data_dir / 'daehwa.db'}")
        await store.open()
        try:
            record = await store.get_user_by_name(user)
            assert record is not None
            conversations = await store.list_conversations(record.user.id)
            assert len(conversations) == 1
            messages = await store.list_messages(record.user.id, conversations[0].id) or []
            return [(m.role, m.content, m.status) for m in messages]
        finally:
            await store.close()

    return asyncio.run(read())


def test_piped_chat_prints_each_reply_and_keeps_history(cli_env, fake_upstream: FakeUpstream, tmp_path: Path):
    fake_upstream.enqueue(Reply("첫 번째 답이에요."), Reply("Second answer."))
    result = subprocess.run(
        [*DAEHWA, "chat"],
        input="안녕하세요\n\nwhat did I say?\n",
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == ["첫 번째 답이에요.", "Second answer."]
    second = fake_upstream.requests[1].json["messages"]
    assert [m["content"] for m in second[1:]] == ["안녕하세요", "첫 번째 답이에요.", "what did I say?"]
    assert stored_messages(tmp_path / "data") == [
        ("user", "안녕하세요", MessageStatus.COMPLETE),
        ("assistant", "첫 번째 답이에요.", MessageStatus.COMPLETE),
        ("user", "what did I say?", MessageStatus.COMPLETE),
        ("assistant", "Second answer.", MessageStatus.COMPLETE),
    ]


def test_piped_chat_reports_an_unknown_model_clearly(cli_env):
    result = subprocess.run(
        [*DAEHWA, "chat", "-m", "nosuch/model"], input="hi\n", env=cli_env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "Unknown model 'nosuch/model'" in result.stderr and "daehwa models" in result.stderr
    assert "Traceback" not in result.stderr


def _read_until(fd: int, pattern: str, timeout: float = 30) -> str:
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
            if re.search(pattern, seen.decode("utf-8", "replace")):
                return seen.decode("utf-8", "replace")
    raise AssertionError(f"{pattern!r} did not appear; got {seen.decode('utf-8', 'replace')!r}")


def test_interactive_ctrl_c_stops_the_reply_and_keeps_it(cli_env, fake_upstream: FakeUpstream, tmp_path: Path):
    words = [f"word{i} " for i in range(200)]
    fake_upstream.enqueue(Reply("".join(words), chunks=words, chunk_delay=0.05), Reply("still here"))
    pid, fd = pty.fork()
    if pid == 0:  # the child: a real terminal on the pty
        os.execvpe(DAEHWA[0], [*DAEHWA, "chat"], cli_env)
    try:
        _read_until(fd, "you>")
        os.write(fd, "길게 말해 줘\r".encode())
        _read_until(fd, "word3 ")
        os.write(fd, b"\x03")  # Ctrl-C, delivered as SIGINT by the terminal
        _read_until(fd, "stopped")
        _read_until(fd, "you>")
        os.write(fd, b"and now?\r")
        _read_until(fd, "still here")
        _read_until(fd, "you>")
        os.write(fd, b"exit\r")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    messages = stored_messages(tmp_path / "data")
    assert messages[0] == ("user", "길게 말해 줘", MessageStatus.COMPLETE)
    role, partial, status = messages[1]
    assert role == "assistant" and status is MessageStatus.INTERRUPTED
    assert partial.startswith("word0 word1 word2 word3 ") and len(partial) < len("".join(words))
    assert messages[2:] == [
        ("user", "and now?", MessageStatus.COMPLETE),
        ("assistant", "still here", MessageStatus.COMPLETE),
    ]
    # the interrupted reply is part of the context of the next turn
    assert fake_upstream.requests[1].json["messages"][2]["content"] == partial


def test_models_lists_availability_and_the_fix(cli_env):
    result = subprocess.run([*DAEHWA, "models"], env=cli_env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "local/qwen2.5-0.5b" in result.stdout and "up/echo" in result.stdout
    openai_row = next(line for line in result.stdout.splitlines() if "openai/gpt-4o-mini" in line)
    assert "no" in openai_row and "OPENAI_API_KEY" in result.stdout


def test_config_markdown_is_the_readme_table(cli_env):
    result = subprocess.run([*DAEHWA, "config", "--markdown"], env=cli_env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.strip() == settings_table_markdown().strip()


def test_config_never_shows_a_key(cli_env):
    env = {**cli_env, "OPENAI_API_KEY": "sk-test-SECRET-0123456789"}
    result = subprocess.run([*DAEHWA, "config"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "SECRET" not in result.stdout + result.stderr


@pytest.mark.local_model
def test_piped_chat_answers_in_korean_with_the_embedded_model(tmp_path: Path, model_cache: Path):
    name = "qwen2.5-0.5b"
    availability = ModelFiles(model_cache).availability(name)
    require(availability.installed, f"local model {name} is not installed: daehwa models install {name}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAEHWA_", "OPENAI_"))}
    env.update(
        DAEHWA_DATA_DIR=str(tmp_path),
        DAEHWA_MODEL_CACHE_DIR=str(model_cache),
        DAEHWA_DEFAULT_MODEL="local",
        DAEHWA_LOCAL_MODEL=name,
        DAEHWA_FIRST_TOKEN_TIMEOUT="300",  # the CPU may be shared with other tests; this asserts answers, not speed
        DAEHWA_FIRST_TOKEN_DEADLINE="300",
        DAEHWA_LOCAL_PARALLEL="1",
        DAEHWA_LOCAL_CONTEXT_SIZE="2048",
    )
    result = subprocess.run(
        [*DAEHWA, "chat", "--max-tokens", "40", "--temperature", "0"],
        input="한국의 수도는 어디인가요? 한 문장으로 답해 주세요.\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    assert re.search("[가-힣]", result.stdout), result.stdout
    assert "서울" in result.stdout


def test_models_shows_breaker_states_of_a_running_server(cli_env):
    import http.server
    import json
    import threading

    class Readyz(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"status": "ready", "breakers": [{"name": "up/echo", "state": "open"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Readyz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = subprocess.run(
            [*DAEHWA, "models", "--url", url], env=cli_env, capture_output=True, text=True, timeout=60
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if "up/echo" in line)
    assert "open" in row


def test_filter_check_is_mounted_and_takes_the_shared_public_lists(cli_env, shared_dir: Path):
    lists = shared_dir / "data" / "wordlists"
    result = subprocess.run(
        [*DAEHWA, "filter", "check", "--words", str(lists / "doublems_korean_bad_words.txt")],
        input="시발점에서 출발\n야 이 ㅅㅂ 뭐하냐\n",
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["blocked"] for line in lines] == [False, True]
    assert lines[1]["matches"][0]["start"] == 4 and lines[1]["masked"].startswith("야 이 **")

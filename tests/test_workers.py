"""Several server processes on one store: ``daehwa serve --workers N``, and a worker killed mid-stream.

Real ``daehwa serve`` subprocesses on loopback ports, a real Redis or PostgreSQL, and the fake upstream (in this
process) streaming steadily (``[[steady N MS]]``), so a process can be ``kill -9``-ed while it streams.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

import httpx
import pytest

from tests.api_helpers import auth, free_port
from tests.conftest import require
from tests.fake_upstream import FakeUpstream
from tests.test_stores import POSTGRES_URL, REDIS_URL


def _daehwa(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daehwa", *args], env=env, input=stdin, capture_output=True, text=True, timeout=60
    )


@contextmanager
def _redis_url() -> Iterator[tuple[str, dict[str, str]]]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except Exception as exc:
        require(False, f"Redis is not reachable at {REDIS_URL}: {exc!r}")
    prefix = f"daehwa-test-{uuid.uuid4().hex}"
    try:
        yield REDIS_URL, {"DAEHWA_REDIS_KEY_PREFIX": prefix}
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@contextmanager
def _postgres_url() -> Iterator[tuple[str, dict[str, str]]]:
    import asyncio

    import asyncpg

    schema = f"daehwa_test_{uuid.uuid4().hex}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(run(f'CREATE SCHEMA "{schema}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        require(False, f"PostgreSQL is not reachable at {POSTGRES_URL}: {exc!r}")
    try:
        # asyncpg passes unknown query parameters on as server settings: the store's tables go to this schema.
        yield f"{POSTGRES_URL}?search_path={schema}", {}
    finally:
        asyncio.run(run(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


class Cluster:
    """Server processes sharing one store and one upstream; ``start`` one, ``kill`` one."""

    def __init__(self, tmp_path: Path, database_url: str, extra: dict[str, str], upstream: FakeUpstream) -> None:
        providers = tmp_path / "providers.toml"
        providers.write_text(f'[providers.up]\ntype = "openai"\nbase_url = "{upstream.base_url}"\nmodels = ["m1"]\n')
        self.tmp_path = tmp_path
        self.env = {
            **os.environ,
            **extra,
            "DAEHWA_DATA_DIR": str(tmp_path),
            "DAEHWA_DATABASE_URL": database_url,
            "DAEHWA_PROVIDERS_FILE": str(providers),
            "DAEHWA_DEFAULT_MODEL": "up/m1",
            "DAEHWA_LOG_LEVEL": "warning",
            "DAEHWA_STREAM_LEASE_SECONDS": "1",
            "DAEHWA_STREAM_FLUSH_SECONDS": "0.2",
        }
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[IO[str]] = []
        created = _daehwa(self.env, "users", "create", "worker-user", "--password-stdin", stdin="a long password\n")
        assert created.returncode == 0, created.stderr
        keys = _daehwa(self.env, "keys", "create", "--user", "worker-user")
        assert keys.returncode == 0, keys.stderr
        self.key = keys.stdout.strip().splitlines()[-1]

    def start(self, *args: str) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        log = (self.tmp_path / f"serve-{port}.log").open("w")
        self.logs.append(log)
        proc = subprocess.Popen(
            [sys.executable, "-m", "daehwa", "serve", "--port", str(port), *args],
            env=self.env,
            stdout=log,
            stderr=log,
            start_new_session=True,  # its workers die with it (kill -9 of the group)
        )
        self.procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 40
        while True:
            with suppress(httpx.TransportError):
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    return base, proc
            assert proc.poll() is None, (self.tmp_path / f"serve-{port}.log").read_text()
            assert time.monotonic() < deadline, (self.tmp_path / f"serve-{port}.log").read_text()
            time.sleep(0.1)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
        for log in self.logs:
            log.close()


@pytest.fixture(params=["redis", "postgres"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    namespace = _redis_url() if request.param == "redis" else _postgres_url()
    with namespace as (url, extra), FakeUpstream(models=("m1",)) as upstream:
        group = Cluster(tmp_path, url, extra, upstream)
        try:
            yield group
        finally:
            group.close()


def _events(lines: Iterator[str]) -> Iterator[tuple[str, dict, int | None]]:
    event, event_id = None, None
    for line in lines:
        if line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            assert event is not None
            yield event, json.loads(line[6:]), event_id
            event, event_id = None, None


def _resume(base: str, key: str, cid: str, mid: str, last_id: int) -> list[tuple[str, dict, int | None]]:
    path = f"{base}/api/conversations/{cid}/messages/{mid}/stream"
    with httpx.stream("GET", path, headers={**auth(key), "Last-Event-ID": str(last_id)}, timeout=30) as r:
        assert r.status_code == 200, r.read()
        return list(_events(r.iter_lines()))


def _start_stream(base: str, key: str, words: int) -> tuple[str, httpx.Client, httpx.Response]:
    client = httpx.Client(base_url=base, timeout=30)
    cid = client.post("/api/conversations", json={}, headers=auth(key)).json()["conversation"]["id"]
    request = client.build_request(
        "POST",
        f"/api/conversations/{cid}/messages",
        json={"content": f"count [[steady {words} 20]]", "stream": True},
        headers=auth(key),
    )
    return cid, client, client.send(request, stream=True)


@pytest.mark.redis
@pytest.mark.postgres
def test_kill_the_streaming_process_and_resume_from_another(cluster: Cluster) -> None:
    a, proc_a = cluster.start()
    b, _ = cluster.start()
    cid, client, response = _start_stream(a, cluster.key, 400)
    received, last_id, mid = "", 0, ""
    with contextlib.closing(client), contextlib.closing(response):
        for kind, data, event_id in _events(response.iter_lines()):
            if kind == "start":
                mid = data["message_id"]
            elif kind == "delta":
                received += data["text"]
                last_id = event_id or last_id
                if received.count(" ") >= 15:
                    os.killpg(proc_a.pid, signal.SIGKILL)  # the process streaming the reply dies mid-reply
                    proc_a.wait(10)
                    break
    assert last_id == len(received)
    events = _resume(b, cluster.key, cid, mid, last_id)
    kind, done, _ = events[-1]
    rest = "".join(d["text"] for k, d, _ in events if k == "delta")
    # The turn died with its process: the reply ends interrupted with all the text it had, each word once.
    assert kind == "done" and done["outcome"] == "interrupted" and done["message"]["status"] == "interrupted"
    text = received + rest
    assert done["message"]["content"] == text
    words = text.split()
    assert words == [f"w{i}" for i in range(1, len(words) + 1)] and 15 <= len(words) < 400, (received, rest)
    stored = httpx.get(f"{b}/api/conversations/{cid}", headers=auth(cluster.key)).json()["messages"][-1]
    assert stored["id"] == mid and stored["content"] == text and stored["status"] == "interrupted"


@pytest.mark.redis
@pytest.mark.postgres
def test_two_workers_share_streams_and_stop(cluster: Cluster) -> None:
    base, _ = cluster.start("--workers", "2")
    cid, client, response = _start_stream(base, cluster.key, 60)
    received, last_id, mid = "", 0, ""
    with contextlib.closing(client), contextlib.closing(response):
        for kind, data, event_id in _events(response.iter_lines()):
            if kind == "start":
                mid = data["message_id"]
            elif kind == "delta":
                received += data["text"]
                last_id = event_id or last_id
                if received.count(" ") >= 5:
                    break  # the connection drops; the reply goes on in its worker
    # New connections land on either worker: the resumed reply is the whole reply, each word once.
    events = _resume(base, cluster.key, cid, mid, last_id)
    kind, done, _ = events[-1]
    text = received + "".join(d["text"] for k, d, _ in events if k == "delta")
    assert kind == "done" and done["outcome"] == "ok" and done["message"]["content"] == text
    assert text.split() == [f"w{i}" for i in range(1, 61)]


@pytest.mark.redis
@pytest.mark.postgres
def test_a_starting_server_leaves_the_replies_another_live_server_streams_alone(cluster: Cluster) -> None:
    """A server's startup sweep relabels a dead server's streaming replies as interrupted; one that a live server
    streams (its chunk log's lease is renewed) stays streaming, through both sweeps, and finishes complete."""
    a, _ = cluster.start()
    cid, client, response = _start_stream(a, cluster.key, 500)  # 500 words 20 ms apart: ~10 s
    received, mid, seen_from_b = "", "", []
    with contextlib.closing(client), contextlib.closing(response):
        events = _events(response.iter_lines())
        for kind, data, _ in events:
            if kind == "start":
                mid = data["message_id"]
            elif kind == "delta":
                received += data["text"]
                if received.count(" ") >= 5:
                    break
        b, _ = cluster.start()  # its sweep runs at start, and again 1.5 leases (1.5 s here) later
        for _ in range(2):
            page = httpx.get(f"{b}/api/conversations/{cid}", headers=auth(cluster.key)).json()
            seen_from_b.append(page["messages"][-1]["status"])
            time.sleep(1.25)
        for kind, data, _ in events:
            if kind == "delta":
                received += data["text"]
            elif kind == "done":
                assert data["outcome"] == "ok" and data["message"]["status"] == "complete"
                break
    assert seen_from_b == ["streaming", "streaming"], seen_from_b
    stored = httpx.get(f"{b}/api/conversations/{cid}", headers=auth(cluster.key)).json()["messages"][-1]
    assert stored["id"] == mid and stored["status"] == "complete"
    assert received.split() == [f"w{i}" for i in range(1, 501)]


def test_several_workers_on_sqlite_are_refused_with_the_fix(tmp_path: Path) -> None:
    env = {**os.environ, "DAEHWA_DATA_DIR": str(tmp_path), "DAEHWA_DATABASE_URL": f"sqlite:///{tmp_path / 'd.db'}"}
    result = _daehwa(env, "serve", "--workers", "2", "--port", str(free_port()))
    assert result.returncode != 0
    assert "DAEHWA_DATABASE_URL" in result.stderr and "--workers 1" in result.stderr

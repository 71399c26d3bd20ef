"""Many concurrent streaming conversations through daehwa's /v1: errors, lost messages, time to first token, CPU, RSS.

Processes: the fake upstream streaming a reply of ``--chunks`` words ``--chunk-delay`` seconds apart
(``python -m tests.fake_upstream --chunks N --chunk-delay S``), daehwa under ``uvicorn --workers N --factory`` (the
factory below: daehwa's settings from the environment, ``create_app``), and this client on loopback. First all
``--conversations`` streams go to the upstream directly at once (the time to first token without daehwa), then all
of them through daehwa at once. Each stream's user message carries a unique tag; afterwards the store is read back:
a message is lost when a stream that ended with ``[DONE]`` has no stored user message or no complete stored reply.
"Added" time to first token is daehwa's minus the direct one at the same percentile. CPU per turn and RSS are the
server processes' (the uvicorn supervisor and its workers, from /proc).

    python benchmarks/bench_load.py --conversations 200                               # SQLite, 1 worker
    python benchmarks/bench_load.py --conversations 1000 --workers 2 --store redis    # shared Redis, own key prefix
    python benchmarks/bench_load.py --conversations 1000 --workers 2 --store postgres # shared PostgreSQL, own schema
    python benchmarks/bench_load.py --conversations 1000 --workers 2 --store redis --restart-store 3

``--restart-store S`` is a failure run instead: the store is a server of the benchmark's own (``tests/own_servers.py``:
a redis-server or a PostgreSQL server on a free port, never the shared ones); ``--conversations`` users stream one
completion after another, the store stops ``--restart-after`` seconds in and starts again S seconds later, and the
users go on for ``--recovery`` seconds more. Streams fail while it is down, each with an error naming the store (a
503 before the stream starts, an error event in it once started); streams begun after it is back succeed (daehwa
reconnects by itself, it is not restarted); and every stream acknowledged with ``[DONE]`` must be stored: its user
message and its complete reply.

Loopback only, bounded: every stream has ``--timeout`` seconds, the whole run a few minutes at most.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_gateway import cpu_seconds, free_port, pct, wait_healthy  # noqa: E402

REDIS_URL = os.environ.get("DAEHWA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("DAEHWA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def make_app() -> Any:
    """The uvicorn factory: what ``daehwa serve`` builds, from the environment (one per worker process)."""
    from daehwa.api.app import create_app
    from daehwa.config import load_settings
    from daehwa.logs import configure_logging

    settings = load_settings()
    configure_logging(settings)
    return create_app(settings)


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux /proc)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return found


def cpu_tree(pid: int) -> float:
    return sum(cpu_seconds(p) or 0.0 for p in tree(pid))


def rss_mib(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


async def one_stream(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> tuple[float | None, str, str]:
    """(time to first token or None, error or "", the completion id) of one streamed completion."""
    start = time.perf_counter()
    first: float | None = None
    cid, done = "", False
    try:
        async with client.stream("POST", url, json=body) as r:
            if r.status_code != 200:
                await r.aread()
                try:
                    return None, f"HTTP {r.status_code} {r.json()['error']['code']}", ""
                except (ValueError, KeyError, TypeError):
                    return None, f"HTTP {r.status_code}: {r.text[:200]}", ""
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    done = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    return first, f"stream error: {chunk['error'].get('code')}", cid
                cid = chunk.get("id", cid)
                choices = chunk.get("choices") or []
                if first is None and choices and choices[0].get("delta", {}).get("content"):
                    first = time.perf_counter() - start
    except httpx.HTTPError as exc:
        return first, f"{type(exc).__name__}: {exc}", cid
    return first, "" if done else "no [DONE]", cid


async def wave(url: str, headers: dict[str, str], n: int, model: str, tag: str, limit: float) -> list[Any]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(limits=limits, timeout=limit, headers=headers) as client:

        async def run(i: int) -> tuple[float | None, str, str]:
            body = {"model": model, "stream": True, "messages": [{"role": "user", "content": f"{tag} {i}"}]}
            try:
                return await asyncio.wait_for(one_stream(client, url, body), limit)
            except TimeoutError:
                return None, "timeout", ""

        return list(await asyncio.gather(*(run(i) for i in range(n))))


async def check_store(url: str, env: dict[str, str], tags: set[str], reply: str) -> tuple[int, int]:
    """(user messages missing, replies missing or incomplete) among the conversations asked ``tags``."""
    os.environ.update(env)
    from daehwa.config import load_settings
    from daehwa.stores import open_store
    from daehwa.stores.base import ConversationQuery

    store = open_store(url, load_settings())
    await store.open()
    try:
        record = await store.get_user_by_name("bench")
        assert record is not None
        user = record.user
        conversations, before = [], None
        while True:
            page = await store.list_conversations(user.id, ConversationQuery(kind=None, limit=200, before=before))
            conversations += page
            if len(page) < 200:
                break
            before = page[-1].updated_at
        seen_user, seen_reply = set(), set()
        for conv in conversations:
            messages = await store.list_messages(user.id, conv.id) or []
            asked = [m.content for m in messages if m.role == "user" and m.content in tags]
            if asked:
                seen_user.add(asked[0])
                if any(m.role == "assistant" and m.content == reply for m in messages):
                    seen_reply.add(asked[0])
        return len(tags - seen_user), len(tags - seen_reply)
    finally:
        await store.close()


class Restart:
    """Stops the benchmark's own store server ``after`` seconds from ``start`` and starts it again ``down`` seconds
    later (in a thread: stopping and starting block); notes when it went down and when it answered again."""

    def __init__(self, server: Any, after: float, down: float) -> None:
        self.server, self.after, self.down = server, after, down
        self.begin = self.stopped = self.back = float("inf")
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.begin = time.monotonic()
        self.thread.start()

    def _run(self) -> None:
        time.sleep(self.after)
        self.stopped = time.monotonic()
        self.server.stop()
        time.sleep(self.down)
        self.server.start()
        self.back = time.monotonic()


async def users_loop(
    url: str, headers: dict[str, str], n: int, tag: str, until: float, limit: float
) -> list[tuple[str, float, float, str]]:
    """``n`` users, each streaming one completion after another until ``until`` (monotonic): (the user message,
    start, end, error or "") of every stream. A user waits 0.2 s after a failed one, as a client retrying would."""
    # Idle connections expire before uvicorn's keep-alive timeout (5 s) closes them: no reuse race in the client.
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n, keepalive_expiry=2)
    results: list[tuple[str, float, float, str]] = []
    async with httpx.AsyncClient(limits=limits, timeout=limit, headers=headers) as client:

        async def user(u: int) -> None:
            i = 0
            while time.monotonic() < until:
                asked = f"{tag} {u}-{i}"
                i += 1
                body = {"model": "up/fake-model", "stream": True, "messages": [{"role": "user", "content": asked}]}
                began = time.monotonic()
                try:
                    _, error, _ = await asyncio.wait_for(one_stream(client, url, body), limit)
                except TimeoutError:
                    error = "timeout"
                results.append((asked, began, time.monotonic(), error))
                if error:
                    await asyncio.sleep(0.2)

        await asyncio.gather(*(user(u) for u in range(n)))
    return results


def outage_run(
    args: argparse.Namespace,
    own: Any,
    url: str,
    headers: dict[str, str],
    tag: str,
    reply: str,
    store_url: str,
    server_pid: int,
    log: Path,
) -> None:
    """``--restart-store``: a steady load of ``--conversations`` users while the store stops and starts again."""
    restart = Restart(own, args.restart_after, args.restart_store)
    duration = args.restart_after + args.restart_store + args.recovery
    print(
        f"{args.conversations} users streaming back to back for {duration:g} s; the store ({own.label}, a server of "
        f"the benchmark's own) stops {args.restart_after:g} s in, for {args.restart_store:g} s"
    )
    cpu0 = cpu_tree(server_pid)
    restart.start()
    results = asyncio.run(users_loop(url, headers, args.conversations, tag, restart.begin + duration, args.timeout))
    restart.thread.join()
    cpu = cpu_tree(server_pid) - cpu0
    print(
        f"  the store was down {restart.back - restart.stopped:.1f} s (stop, {args.restart_store:g} s, start until "
        "it answers)"
    )
    groups = (
        ("ended before the stop", [r for r in results if r[2] < restart.stopped]),
        ("in the outage", [r for r in results if r[2] >= restart.stopped and r[1] < restart.back]),
        ("begun after it", [r for r in results if r[1] >= restart.back]),
    )
    for name, group in groups:
        errors = [e for *_, e in group if e]
        print(f"streams {name}: {len(group)}, acknowledged {len(group) - len(errors)}, errors {len(errors)}")
        report_errors(errors, log, tag)
    ok_after = sorted(end for _, _, end, e in groups[2][1] if not e)
    if ok_after:
        print(f"first stream acknowledged {ok_after[0] - restart.back:.2f} s after the store answered again")
    late = [e for _, began, _, e in groups[2][1] if e and began >= restart.back + 2]
    print(f"errors in streams begun 2 s or more after the store was back: {len(late)}")
    acked = {asked for asked, _, _, e in results if not e}
    missing_user, missing_reply = asyncio.run(check_store(store_url, {}, acked, reply))
    print(f"lost: {missing_user} user messages, {missing_reply} replies (of {len(acked)} acknowledged streams)")
    per = cpu / max(len(results), 1) * 1000
    print(f"server CPU {cpu:.1f} s = {per:.1f} ms per stream; RSS {rss_mib(server_pid):.0f} MiB (all server processes)")


def report_errors(errors: list[str], log: Path, tag: str) -> None:
    kinds = [re.sub(r"request id \w+", "request id …", e) for e in errors]
    for text in sorted(set(kinds), key=kinds.count, reverse=True)[:5]:
        print(f"  {kinds.count(text)} x {text}")
    if errors:
        kept = Path(tempfile.gettempdir()) / f"bench_load_{tag}.log"
        kept.write_bytes(log.read_bytes())
        print(f"  server log: {kept}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--store", choices=("sqlite", "redis", "postgres"), default="sqlite")
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--chunk-delay", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--restart-store",
        type=float,
        default=0,
        metavar="S",
        help="a failure run: stop the store (a server of the benchmark's own) under load, for S seconds",
    )
    parser.add_argument(
        "--restart-after", type=float, default=8, metavar="S", help="with --restart-store: stop it this long in"
    )
    parser.add_argument(
        "--recovery", type=float, default=10, metavar="S", help="with --restart-store: go on this long after it"
    )
    args = parser.parse_args()
    if args.restart_store and args.store == "sqlite":
        parser.error("--restart-store needs --store redis or --store postgres")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the children inherit it: 1,000 streams need ~3,000 fds
    reply = "".join(f"word{i} " for i in range(args.chunks))
    tag = f"load-{uuid.uuid4().hex[:8]}"
    cleanup = None
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as servers:
        data = Path(tmp)
        own = None
        if args.restart_store:
            from tests.own_servers import own_server

            (data / "store").mkdir()
            own = servers.enter_context(own_server(args.store, data / "store"))
            store_url, extra = own.url, {}
        elif args.store == "sqlite":
            store_url, extra = f"sqlite:///{data / 'bench.db'}", {}
        elif args.store == "redis":
            prefix = f"bench-{tag}"
            store_url, extra = REDIS_URL, {"DAEHWA_REDIS_KEY_PREFIX": prefix}

            def cleanup() -> None:
                import redis

                client = redis.Redis.from_url(REDIS_URL)
                for key in client.scan_iter(f"{prefix}:*", count=1000):
                    client.delete(key)
        else:
            schema = tag.replace("-", "_")
            import asyncpg

            async def schema_sql(sql: str) -> None:
                conn = await asyncpg.connect(POSTGRES_URL)
                await conn.execute(sql)
                await conn.close()

            asyncio.run(schema_sql(f"CREATE SCHEMA {schema}"))
            sep = "&" if "?" in POSTGRES_URL else "?"
            store_url, extra = f"{POSTGRES_URL}{sep}search_path={schema}", {}

            def cleanup() -> None:
                asyncio.run(schema_sql(f"DROP SCHEMA {schema} CASCADE"))

        fake = [sys.executable, "-m", "tests.fake_upstream"]
        upstream = subprocess.Popen(
            [*fake, "--chunks", str(args.chunks), "--chunk-delay", str(args.chunk_delay)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        assert upstream.stdout is not None
        upstream_url = upstream.stdout.readline().decode().strip()
        (data / "providers.toml").write_text(
            f'[providers.up]\ntype = "openai"\nbase_url = "{upstream_url}"\nmodels = ["fake-model"]\n'
        )
        port = free_port()
        env = {
            **os.environ,
            **extra,
            "DAEHWA_DATA_DIR": str(data),
            "DAEHWA_DATABASE_URL": store_url,
            "DAEHWA_PROVIDERS_FILE": str(data / "providers.toml"),
            "DAEHWA_DEFAULT_MODEL": "up/fake-model",
            "DAEHWA_LOG_LEVEL": args.log_level,
            "PYTHONPATH": str(ROOT),
            # 1,000 streams at once to one upstream is the point here: the bulkhead (100 per process by default, then
            # 2 s of waiting and "provider_busy") is sized for it, as a deployment expecting that load would.
            "DAEHWA_BULKHEAD_LIMIT": str(args.conversations),
        }
        cli = [sys.executable, "-m", "daehwa"]
        subprocess.run([*cli, "users", "create", "bench", "--no-password"], env=env, check=True, capture_output=True)
        made = subprocess.run([*cli, "keys", "create", "--user", "bench"], env=env, check=True, capture_output=True)
        key = made.stdout.decode().strip().splitlines()[-1]
        log = data / "serve.log"
        uvicorn = [sys.executable, "-m", "uvicorn", "--factory", "benchmarks.bench_load:make_app", "--no-access-log"]
        uvicorn += ["--host", "127.0.0.1", "--timeout-graceful-shutdown", "10"]
        with log.open("wb") as sink:
            server = subprocess.Popen(
                [*uvicorn, "--port", str(port), "--workers", str(args.workers), "--backlog", "4096"],
                env=env,
                cwd=ROOT,
                stdout=sink,
                stderr=sink,
            )
        try:
            wait_healthy(f"http://127.0.0.1:{port}/healthz", server, log)
            time.sleep(2 * args.workers)  # every worker up, not just the first
            n = args.conversations
            print(
                f"{n} concurrent streams, {args.chunks} chunks {args.chunk_delay:g} s apart, store {args.store}, "
                f"{args.workers} worker(s), log level {args.log_level}"
            )
            headers = {"Authorization": f"Bearer {key}"}
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            if own is not None:
                outage_run(args, own, url, headers, tag, reply, store_url, server.pid, log)
                return
            direct = asyncio.run(wave(f"{upstream_url}/chat/completions", {}, n, "fake-model", tag + "d", args.timeout))
            cpu0, start = cpu_tree(server.pid), time.perf_counter()
            through = asyncio.run(wave(url, headers, n, "up/fake-model", tag, args.timeout))
            elapsed, cpu = time.perf_counter() - start, cpu_tree(server.pid) - cpu0
            rss = rss_mib(server.pid)
            errors = [e for _, e, _ in through if e]
            ttft_d = [t for t, e, _ in direct if t is not None and not e]
            ttft = [t for t, e, _ in through if t is not None and not e]
            acked = {f"{tag} {i}" for i, (_, e, _) in enumerate(through) if not e}
            missing_user, missing_reply = asyncio.run(check_store(store_url, extra, acked, reply))
            print(f"errors: {len(errors)} of {n} (direct: {sum(1 for _, e, _ in direct if e)})")
            report_errors(errors, log, tag)
            print(f"lost: {missing_user} user messages, {missing_reply} replies (of {len(acked)} acknowledged streams)")
            if ttft and ttft_d:
                d50, d99, t50, t99 = (pct(v, p) * 1000 for v in (ttft_d, ttft) for p in (50, 99))
                print(
                    f"time to first token: direct p50 {d50:.0f} ms p99 {d99:.0f} ms; daehwa p50 {t50:.0f} ms "
                    f"p99 {t99:.0f} ms; added p50 {t50 - d50:.0f} ms p99 {t99 - d99:.0f} ms"
                )
            print(
                f"wall {elapsed:.1f} s; server CPU {cpu:.1f} s = {cpu / n * 1000:.1f} ms per turn; RSS {rss:.0f} MiB "
                f"(all server processes)"
            )
        finally:
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
            upstream.terminate()
            upstream.wait(15)
            if cleanup is not None:
                cleanup()


if __name__ == "__main__":
    main()

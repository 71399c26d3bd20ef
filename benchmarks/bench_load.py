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


async def check_store(url: str, env: dict[str, str], tag: str, n: int, reply: str) -> tuple[int, int]:
    """(user messages missing, replies missing or incomplete) among the ``n`` tagged conversations."""
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
            asked = [m.content for m in messages if m.role == "user" and m.content.startswith(tag)]
            if asked:
                seen_user.add(asked[0])
                if any(m.role == "assistant" and m.content == reply for m in messages):
                    seen_reply.add(asked[0])
        expected = {f"{tag} {i}" for i in range(n)}
        return len(expected - seen_user), len(expected - seen_reply)
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--store", choices=("sqlite", "redis", "postgres"), default="sqlite")
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--chunk-delay", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the children inherit it: 1,000 streams need ~3,000 fds
    reply = "".join(f"word{i} " for i in range(args.chunks))
    tag = f"load-{uuid.uuid4().hex[:8]}"
    cleanup = None
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        if args.store == "sqlite":
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
            direct = asyncio.run(wave(f"{upstream_url}/chat/completions", {}, n, "fake-model", tag + "d", args.timeout))
            cpu0, start = cpu_tree(server.pid), time.perf_counter()
            headers = {"Authorization": f"Bearer {key}"}
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            through = asyncio.run(wave(url, headers, n, "up/fake-model", tag, args.timeout))
            elapsed, cpu = time.perf_counter() - start, cpu_tree(server.pid) - cpu0
            rss = rss_mib(server.pid)
            errors = [e for _, e, _ in through if e]
            ttft_d = [t for t, e, _ in direct if t is not None and not e]
            ttft = [t for t, e, _ in through if t is not None and not e]
            missing_user, missing_reply = asyncio.run(check_store(store_url, extra, tag, n, reply))
            print(f"errors: {len(errors)} of {n} (direct: {sum(1 for _, e, _ in direct if e)})")
            kinds = [re.sub(r"request id \w+", "request id …", e) for e in errors]
            for text in sorted(set(kinds))[:5]:
                print(f"  {kinds.count(text)} x {text}")
            if errors:
                kept = Path(tempfile.gettempdir()) / f"bench_load_{tag}.log"
                kept.write_bytes(log.read_bytes())
                print(f"  server log: {kept}")
            acked = n - len(errors)
            print(
                f"lost: {missing_user} user messages, {missing_reply} replies (of {acked} acknowledged streams; "
                "errored streams count too)"
            )
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

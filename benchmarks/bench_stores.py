"""The store's share of a chat turn, for each backend: latency, CPU and throughput of the two hot-path calls.

A turn costs the store two calls: ``begin_turn`` (or ``create_conversation_with_turn`` when the turn starts a new
conversation, as every stateless /v1 request does) and ``finish_turn`` with usage. This measures both kinds of turn
sequentially (latency, and CPU time of this process per turn) and from many concurrent turns (throughput), on fresh
namespaces that are removed afterwards. For SQLite it also counts the SQL statements per turn and the hops to the
store's thread. Goal: the store adds well under a millisecond per turn next to a model that takes seconds.

    python benchmarks/bench_stores.py                          # sqlite, redis, postgres; 500 turns each
    python benchmarks/bench_stores.py --backends sqlite --turns 2000 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from daehwa.stores import NewConversation, NewTurn, TurnResult
from daehwa.stores.base import Store
from daehwa.types import MessageStatus, Outcome, Usage, UsageRecord

REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


@asynccontextmanager
async def open_backend(name: str) -> AsyncIterator[Store]:
    if name == "sqlite":
        from daehwa.stores.sqlite import SQLiteStore

        with tempfile.TemporaryDirectory() as tmp:
            store: Store = SQLiteStore(Path(tmp) / "bench.db")
            await store.open()
            try:
                yield store
            finally:
                await store.close()
    elif name == "redis":
        from daehwa.stores.redis import RedisStore

        redis_store = RedisStore(REDIS_URL, prefix=f"daehwa-bench-{uuid.uuid4().hex}")
        await redis_store.open()
        try:
            yield redis_store
        finally:
            client = redis_store._r()
            keys = [k async for k in client.scan_iter(match=f"{redis_store.prefix}:*", count=1000)]
            if keys:
                await client.delete(*keys)
            await redis_store.close()
    else:
        import asyncpg

        from daehwa.stores.postgres import PostgresStore

        schema = f"daehwa_bench_{uuid.uuid4().hex}"
        pg_store = PostgresStore(POSTGRES_URL, schema=schema)
        await pg_store.open()
        try:
            yield pg_store
        finally:
            await pg_store.close()
            conn = await asyncpg.connect(POSTGRES_URL)
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            await conn.close()


async def one_turn(store: Store, conversation_id: str | None, i: int) -> float:
    """One turn in ``conversation_id``, or (None) in a new ``api`` conversation like a stateless /v1 request."""
    started = time.perf_counter()
    if conversation_id is None:
        _, _, reply = await store.create_conversation_with_turn(
            "bench",
            NewConversation(title=f"question {i}", model="m", kind="api"),
            NewTurn(user_content=f"question {i}", reply_model="m"),
        )
    else:
        _, reply = await store.begin_turn(
            "bench", conversation_id, NewTurn(user_content=f"question {i}", reply_model="m")
        )
    usage = UsageRecord(user_id="bench", model="m", usage=Usage(50, 100), outcome=Outcome.OK, ttft_ms=1, total_ms=9)
    await store.finish_turn(
        "bench",
        reply.id,
        TurnResult(content="answer " * 40, status=MessageStatus.COMPLETE, model="m", meta=None, usage=usage),
    )
    return time.perf_counter() - started


async def sqlite_costs(store: Store, conversation_id: str | None) -> str:
    """SQL statements and hops to the store's thread of one turn (SQLite only)."""
    from daehwa.stores.sqlite import SQLiteStore

    if not isinstance(store, SQLiteStore) or store._executor is None:
        return ""
    executor = store._executor
    statements: list[str] = []
    hops = 0
    submit = executor.submit

    def counting_submit(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        nonlocal hops
        hops += 1
        return submit(fn, *args, **kwargs)

    await store._read(lambda db: db.set_trace_callback(statements.append))
    executor.submit = counting_submit  # type: ignore[method-assign]
    try:
        await one_turn(store, conversation_id, 0)
    finally:
        executor.submit = submit  # type: ignore[method-assign]
        await store._read(lambda db: db.set_trace_callback(None))
    return f" | {len(statements)} statements, {hops} hops"


async def bench(name: str, turns: int, concurrency: int) -> None:
    async with open_backend(name) as store:
        conv = await store.create_conversation("bench")
        for label, target in (("existing conversation", conv.id), ("new conversation (/v1)", None)):
            cpu = time.process_time()
            latencies = [await one_turn(store, target, i) for i in range(turns)]
            cpu_ms = (time.process_time() - cpu) / turns * 1000
            # Each concurrent worker has a conversation of its own, or starts a new one per turn.
            targets = [(await store.create_conversation("bench")).id if target else None for _ in range(concurrency)]
            started = time.perf_counter()

            async def worker(target: str | None) -> None:
                for i in range(turns // concurrency):
                    await one_turn(store, target, i)

            await asyncio.gather(*(worker(t) for t in targets))
            elapsed = time.perf_counter() - started
            done = (turns // concurrency) * concurrency
            p50 = statistics.median(latencies) * 1000
            p95 = statistics.quantiles(latencies, n=20)[18] * 1000
            print(
                f"{name:9s} {label:22s} p50 {p50:6.2f} ms  p95 {p95:6.2f} ms  CPU {cpu_ms:5.2f} ms | "
                f"{concurrency} concurrent: {done / elapsed:6.0f} turns/s{await sqlite_costs(store, target)}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,redis,postgres")
    parser.add_argument("--turns", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    for name in args.backends.split(","):
        asyncio.run(bench(name.strip(), args.turns, args.concurrency))


if __name__ == "__main__":
    main()

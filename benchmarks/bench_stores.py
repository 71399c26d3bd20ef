"""The store's share of a chat turn: begin_turn + finish_turn (with usage) per second, for each backend.

A turn costs the store two calls on the hot path; this measures them sequentially (latency) and from many concurrent
turns (throughput), on fresh namespaces that are removed afterwards. Goal: the store adds well under a millisecond
per turn next to a model that takes seconds.

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


async def one_turn(store: Store, conversation_id: str, i: int) -> float:
    started = time.perf_counter()
    _, reply = await store.begin_turn("bench", conversation_id, user_content=f"question {i}", reply_model="m")
    usage = UsageRecord(user_id="bench", model="m", usage=Usage(50, 100), outcome=Outcome.OK, ttft_ms=1, total_ms=9)
    await store.finish_turn(
        "bench", reply.id, content="answer " * 40, status=MessageStatus.COMPLETE, model="m", meta=None, usage=usage
    )
    return time.perf_counter() - started


async def bench(name: str, turns: int, concurrency: int) -> None:
    async with open_backend(name) as store:
        conv = await store.create_conversation("bench")
        latencies = [await one_turn(store, conv.id, i) for i in range(turns)]
        convs = [await store.create_conversation("bench") for _ in range(concurrency)]
        started = time.perf_counter()

        async def worker(w: int) -> None:
            for i in range(turns // concurrency):
                await one_turn(store, convs[w].id, i)

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        elapsed = time.perf_counter() - started
        done = (turns // concurrency) * concurrency
        p50 = statistics.median(latencies) * 1000
        p95 = statistics.quantiles(latencies, n=20)[18] * 1000
        print(
            f"{name:9s} sequential p50 {p50:6.2f} ms  p95 {p95:6.2f} ms | "
            f"{concurrency} concurrent: {done / elapsed:7.0f} turns/s"
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

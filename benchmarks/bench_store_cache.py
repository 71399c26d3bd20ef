"""What the cache of hot conversations saves: a turn's reads (get_conversation + the whole list_messages) straight
from the Redis or PostgreSQL store, against a CachedStore hit (one version read, the history from memory).

    python benchmarks/bench_store_cache.py [--url redis://127.0.0.1:6379/0] [--messages 20 200] [--reads 300]
    python benchmarks/bench_store_cache.py --url postgresql://postgres@127.0.0.1:5432/test

Each message is ~400 characters. Uses its own key prefix (Redis) or schema (PostgreSQL), removed afterwards. Prints
the wall time per turn's reads (median of ``--reads``) and the CPU time of this process per read.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from daehwa.stores import NewConversation, NewMessage, Store
from daehwa.stores.cache import CachedStore
from daehwa.stores.redis import RedisStore
from daehwa.stores.redis.connection import connect


async def _reads(store: Store, user: str, cid: str, n: int) -> tuple[float, float]:
    walls = []
    cpu = time.process_time()
    for _ in range(n):
        start = time.perf_counter()
        await store.get_conversation(user, cid)
        await store.list_messages(user, cid)
        walls.append(time.perf_counter() - start)
    return statistics.median(walls) * 1e3, (time.process_time() - cpu) / n * 1e3


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--messages", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--reads", type=int, default=300)
    args = parser.parse_args()
    prefix = f"bench-cache-{uuid.uuid4().hex[:8]}"
    postgres = args.url.startswith("postgres")
    schema = prefix.replace("-", "_")

    def store() -> Store:
        if postgres:
            from daehwa.stores.postgres import PostgresStore

            return PostgresStore(args.url, schema=schema)
        return RedisStore(args.url, prefix=prefix)

    plain = store()
    cached = CachedStore(store(), 100)
    await plain.open()
    await cached.open()
    try:
        print(f"{'messages':>8}  {'store ms':>9}  {'cached ms':>9}  {'store CPU ms':>12}  {'cached CPU ms':>13}")
        for n in args.messages:
            conv = await plain.create_conversation("u", NewConversation(title="bench"))
            for i in range(n):
                await plain.append_message("u", conv.id, NewMessage(role="user", content=f"{i} " + "가나다라 " * 80))
            await cached.list_messages("u", conv.id)  # warm
            store_wall, store_cpu = await _reads(plain, "u", conv.id, args.reads)
            cached_wall, cached_cpu = await _reads(cached, "u", conv.id, args.reads)
            print(f"{n:>8}  {store_wall:>9.3f}  {cached_wall:>9.3f}  {store_cpu:>12.3f}  {cached_cpu:>13.3f}")
    finally:
        await plain.close()
        await cached.close()
        if postgres:
            import asyncpg

            conn = await asyncpg.connect(args.url)
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            await conn.close()
        else:
            client = connect(args.url)
            keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())

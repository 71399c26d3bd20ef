"""The asyncpg pool of a PostgreSQL store; every domain module runs its statements through it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

T = TypeVar("T")


class PostgresConnection:
    _pool: asyncpg.Pool | None = None

    def _p(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("PostgresStore is not open: call 'await store.open()' first.")
        return self._pool

    async def _write(self, work: Callable[[], Awaitable[T]]) -> T:
        """Shield a write from the caller's cancellation, so a client that leaves does not lose what was stored."""
        return await asyncio.shield(work())

    async def _execute(self, sql: str, *args: Any) -> int:
        """Run one write statement on the pool, shielded like ``_write``; the number of rows it touched."""
        return count(await self._write(lambda: self._p().execute(sql, *args)))


async def init_connection(conn: asyncpg.Connection) -> None:
    # JSONB in and out as Python dicts.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: json.dumps(value, ensure_ascii=False),
        decoder=json.loads,
        schema="pg_catalog",
    )


def placeholders(count: int, first: int = 1) -> str:
    """The numbered parameters of ``count`` values: ``$first, $first+1, ...``."""
    return ", ".join(f"${i}" for i in range(first, first + count))


def insert_sql(table: str, columns: str) -> str:
    """``INSERT INTO table (columns) VALUES ($1, ...)``: one parameter per column, in the columns' order."""
    return f"INSERT INTO {table} ({columns}) VALUES ({placeholders(len(columns.split(',')))})"


def count(status: str) -> int:
    """Rows touched, from a command status such as ``UPDATE 1`` or ``DELETE 3``."""
    return int(status.rsplit(" ", 1)[-1])

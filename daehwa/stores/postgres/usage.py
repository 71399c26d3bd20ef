"""PostgreSQL usage records: one row per turn in ``usage``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ...types import UsageRecord, UsageTotal
from ..base import UsageStore
from ..common import USAGE_COLUMNS, USAGE_FIELDS, as_utc, usage_row, usage_total_from_row
from .connection import PostgresConnection, insert_sql, placeholders

_INSERT_USAGE = insert_sql("usage", USAGE_COLUMNS)


def usage_values(first: int) -> str:
    """The placeholders of one usage row, numbered from ``first``."""
    return placeholders(len(USAGE_FIELDS), first)


def usage_args(record: UsageRecord) -> list[Any]:
    return list(usage_row(record).values())


class PostgresUsage(PostgresConnection, UsageStore):
    async def record_usage(self, record: UsageRecord) -> None:
        await self._execute(_INSERT_USAGE, *usage_args(record))

    async def usage_totals(self, *, user_id: str | None = None, since: datetime | None = None) -> list[UsageTotal]:
        rows = await self._p().fetch(
            "SELECT u.user_id, users.name AS user_name, u.model, count(*) AS turns, "
            "sum(u.prompt_tokens)::bigint AS prompt_tokens, sum(u.completion_tokens)::bigint AS completion_tokens, "
            "coalesce(sum(u.cost), 0)::float8 AS cost FROM usage u LEFT JOIN users ON users.id = u.user_id "
            "WHERE ($1::text IS NULL OR u.user_id = $1) AND ($2::timestamptz IS NULL OR u.created_at >= $2) "
            "GROUP BY u.user_id, users.name, u.model ORDER BY u.user_id, u.model",
            user_id,
            as_utc(since) if since is not None else None,
        )
        return [usage_total_from_row(row) for row in rows]

    async def tokens_used_since(self, user_id: str, since: datetime) -> int:
        total = await self._p().fetchval(
            "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0)::bigint FROM usage "
            "WHERE user_id = $1 AND created_at >= $2",
            user_id,
            as_utc(since),
        )
        return int(total)

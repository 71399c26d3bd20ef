"""SQLite usage records: one row per turn in ``usage``."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from ...types import UsageRecord, UsageTotal
from ..base import UsageStore
from ..common import USAGE_COLUMNS, iso, usage_row, usage_total_from_row
from .connection import SQLiteConnection


class SQLiteUsage(SQLiteConnection, UsageStore):
    async def record_usage(self, record: UsageRecord) -> None:
        await self._write(lambda db: insert_usage(db, record))

    async def usage_totals(self, *, user_id: str | None = None, since: datetime | None = None) -> list[UsageTotal]:
        where, params = [], []
        if user_id is not None:
            where.append("u.user_id = ?")
            params.append(user_id)
        if since is not None:
            where.append("u.created_at >= ?")
            params.append(iso(since))
        sql = (
            "SELECT u.user_id, users.name AS user_name, u.model, count(*) AS turns, "
            "sum(u.prompt_tokens) AS prompt_tokens, sum(u.completion_tokens) AS completion_tokens, "
            "coalesce(sum(u.cost), 0.0) AS cost FROM usage u LEFT JOIN users ON users.id = u.user_id "
            f"{'WHERE ' + ' AND '.join(where) if where else ''} "
            "GROUP BY u.user_id, u.model ORDER BY u.user_id, u.model"
        )
        rows = await self._read(lambda db: db.execute(sql, params).fetchall())
        return [usage_total_from_row(dict(row)) for row in rows]

    async def tokens_used_since(self, user_id: str, since: datetime) -> int:
        row = await self._read(
            lambda db: db.execute(
                "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM usage "
                "WHERE user_id = ? AND created_at >= ?",
                (user_id, iso(since)),
            ).fetchone()
        )
        return int(row[0]) if row else 0


def insert_usage(db: sqlite3.Connection, record: UsageRecord) -> None:
    """On the worker thread, inside the caller's transaction (``finish_turn`` writes the reply in the same one)."""
    values = usage_row(record)
    values["created_at"] = iso(values["created_at"])
    db.execute(f"INSERT INTO usage ({USAGE_COLUMNS}) VALUES ({', '.join('?' * len(values))})", tuple(values.values()))

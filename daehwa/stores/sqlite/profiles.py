"""SQLite user profiles: ``user_interests`` (one row per user and term), ``recommendation_feedback`` and
``profile_settings`` (one row per user who changed a switch)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from ..base import FeedbackRecord, InterestRecord, ProfileStore
from ..common import from_iso, iso, utcnow
from .connection import SQLiteConnection


class SQLiteProfiles(SQLiteConnection, ProfileStore):
    async def add_interests(self, user_id: str, increments: Mapping[str, float]) -> None:
        now = iso(utcnow())
        rows = [(user_id, term, float(inc), now) for term, inc in increments.items()]
        keep = self.MAX_INTERESTS

        def work(db: sqlite3.Connection) -> None:
            db.executemany(
                """INSERT INTO user_interests (user_id, term, score, updated_at) VALUES (?, ?, ?, ?)
                ON CONFLICT (user_id, term) DO UPDATE SET score = score + excluded.score,
                    updated_at = excluded.updated_at""",
                rows,
            )
            db.execute(
                """DELETE FROM user_interests WHERE user_id = ? AND term NOT IN
                (SELECT term FROM user_interests WHERE user_id = ? ORDER BY score DESC LIMIT ?)""",
                (user_id, user_id, keep),
            )

        await self._write(work)

    async def list_interests(self, user_id: str, *, limit: int = 50) -> list[InterestRecord]:
        def work(db: sqlite3.Connection) -> list[InterestRecord]:
            rows = db.execute(
                "SELECT term, score, updated_at FROM user_interests WHERE user_id = ? ORDER BY score DESC LIMIT ?",
                (user_id, limit),
            ).fetchall()
            return [InterestRecord(r[0], float(r[1]), from_iso(r[2])) for r in rows]

        return await self._read(work)

    async def delete_interests(self, user_id: str, term: str | None = None) -> int:
        def work(db: sqlite3.Connection) -> int:
            if term is None:
                return db.execute("DELETE FROM user_interests WHERE user_id = ?", (user_id,)).rowcount
            return db.execute("DELETE FROM user_interests WHERE user_id = ? AND term = ?", (user_id, term)).rowcount

        return await self._write(work)

    async def record_feedback(self, user_id: str, catalogue: str, item_id: str, action: str) -> None:
        clicks, dismissed = (1, 0) if action == "click" else (0, 1)

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                """INSERT INTO recommendation_feedback (user_id, catalogue, item_id, clicks, dismissed, updated_at)
                VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (user_id, catalogue, item_id) DO UPDATE SET clicks = clicks + excluded.clicks,
                    dismissed = MAX(dismissed, excluded.dismissed), updated_at = excluded.updated_at""",
                (user_id, catalogue, item_id, clicks, dismissed, iso(utcnow())),
            )

        await self._write(work)

    async def load_feedback(self, user_id: str, catalogue: str) -> dict[str, FeedbackRecord]:
        def work(db: sqlite3.Connection) -> dict[str, FeedbackRecord]:
            rows = db.execute(
                "SELECT item_id, clicks, dismissed FROM recommendation_feedback WHERE user_id = ? AND catalogue = ?",
                (user_id, catalogue),
            ).fetchall()
            return {r[0]: FeedbackRecord(r[0], int(r[1]), bool(r[2])) for r in rows}

        return await self._read(work)

    async def interests_enabled(self, user_id: str) -> bool:
        row = await self._read(
            lambda db: db.execute(
                "SELECT interests_enabled FROM profile_settings WHERE user_id = ?", (user_id,)
            ).fetchone()
        )
        return row is None or bool(row[0])

    async def set_interests_enabled(self, user_id: str, enabled: bool) -> None:
        await self._write(
            lambda db: db.execute(
                """INSERT INTO profile_settings (user_id, interests_enabled, updated_at) VALUES (?, ?, ?)
                ON CONFLICT (user_id) DO UPDATE SET interests_enabled = excluded.interests_enabled,
                    updated_at = excluded.updated_at""",
                (user_id, int(enabled), iso(utcnow())),
            )
        )

    async def delete_profile(self, user_id: str) -> None:
        await self._write(lambda db: delete_profile_rows(db, user_id))


def delete_profile_rows(db: sqlite3.Connection, user_id: str) -> None:
    """On the worker thread, inside the caller's transaction (``delete_user`` runs it in its own)."""
    for table in ("user_interests", "recommendation_feedback", "profile_settings"):
        db.execute(f"DELETE FROM {table} WHERE user_id = ?", (user_id,))

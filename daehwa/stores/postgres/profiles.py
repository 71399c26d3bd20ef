"""PostgreSQL user profiles: ``user_interests``, ``recommendation_feedback`` and ``profile_settings`` (as SQLite's)."""

from __future__ import annotations

from collections.abc import Mapping

from ..base import FeedbackRecord, InterestRecord, ProfileStore
from ..common import utcnow
from .connection import PostgresConnection


class PostgresProfiles(PostgresConnection, ProfileStore):
    async def add_interests(self, user_id: str, increments: Mapping[str, float]) -> None:
        now = utcnow()
        rows = [(user_id, term, float(inc), now) for term, inc in increments.items()]

        async def work() -> None:
            async with self._p().acquire() as conn, conn.transaction():
                await conn.executemany(
                    """INSERT INTO user_interests (user_id, term, score, updated_at) VALUES ($1, $2, $3, $4)
                    ON CONFLICT (user_id, term) DO UPDATE SET score = user_interests.score + excluded.score,
                        updated_at = excluded.updated_at""",
                    rows,
                )
                await conn.execute(
                    """DELETE FROM user_interests WHERE user_id = $1 AND term NOT IN
                    (SELECT term FROM user_interests WHERE user_id = $1 ORDER BY score DESC LIMIT $2)""",
                    user_id,
                    self.MAX_INTERESTS,
                )

        await self._write(work)

    async def list_interests(self, user_id: str, *, limit: int = 50) -> list[InterestRecord]:
        rows = await self._p().fetch(
            "SELECT term, score, updated_at FROM user_interests WHERE user_id = $1 ORDER BY score DESC LIMIT $2",
            user_id,
            limit,
        )
        return [InterestRecord(r["term"], float(r["score"]), r["updated_at"]) for r in rows]

    async def delete_interests(self, user_id: str, term: str | None = None) -> int:
        if term is None:
            return await self._execute("DELETE FROM user_interests WHERE user_id = $1", user_id)
        return await self._execute("DELETE FROM user_interests WHERE user_id = $1 AND term = $2", user_id, term)

    async def record_feedback(self, user_id: str, catalogue: str, item_id: str, action: str) -> None:
        clicks, dismissed = (1, False) if action == "click" else (0, True)

        await self._execute(
            """INSERT INTO recommendation_feedback (user_id, catalogue, item_id, clicks, dismissed, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (user_id, catalogue, item_id) DO UPDATE SET
                clicks = recommendation_feedback.clicks + excluded.clicks,
                dismissed = recommendation_feedback.dismissed OR excluded.dismissed,
                updated_at = excluded.updated_at""",
            user_id,
            catalogue,
            item_id,
            clicks,
            dismissed,
            utcnow(),
        )

    async def load_feedback(self, user_id: str, catalogue: str) -> dict[str, FeedbackRecord]:
        rows = await self._p().fetch(
            "SELECT item_id, clicks, dismissed FROM recommendation_feedback WHERE user_id = $1 AND catalogue = $2",
            user_id,
            catalogue,
        )
        return {r["item_id"]: FeedbackRecord(r["item_id"], int(r["clicks"]), bool(r["dismissed"])) for r in rows}

    async def interests_enabled(self, user_id: str) -> bool:
        found = await self._p().fetchval("SELECT interests_enabled FROM profile_settings WHERE user_id = $1", user_id)
        return found is None or bool(found)

    async def set_interests_enabled(self, user_id: str, enabled: bool) -> None:
        await self._execute(
            """INSERT INTO profile_settings (user_id, interests_enabled, updated_at) VALUES ($1, $2, $3)
            ON CONFLICT (user_id) DO UPDATE SET interests_enabled = excluded.interests_enabled,
                updated_at = excluded.updated_at""",
            user_id,
            enabled,
            utcnow(),
        )

    async def delete_profile(self, user_id: str) -> None:
        async def work() -> None:
            async with self._p().acquire() as conn, conn.transaction():
                for table in ("user_interests", "recommendation_feedback", "profile_settings"):
                    await conn.execute(f"DELETE FROM {table} WHERE user_id = $1", user_id)

        await self._write(work)

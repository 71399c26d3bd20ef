"""SQLite context memory: ``message_vectors`` (a BLOB of float32 per message) and ``conversation_summaries``.

The engine ranks a conversation's own vectors in memory (numpy), so a plain table read by one index range is all
it needs; an ANN index (sqlite-vec) would only pay off for search across conversations.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from ...types import ConversationSummary
from ..base import ContextStore
from ..common import iso, summary_from_row, utcnow
from .connection import SQLiteConnection


def _owns(db: sqlite3.Connection, user_id: str, conversation_id: str) -> bool:
    row = db.execute("SELECT 1 FROM conversations WHERE id = ? AND user_id = ?", (conversation_id, user_id)).fetchone()
    return row is not None


class SQLiteContext(SQLiteConnection, ContextStore):
    async def save_vectors(
        self, user_id: str, conversation_id: str, vectors: Mapping[str, bytes], *, model: str
    ) -> bool:
        items = [(mid, bytes(v)) for mid, v in vectors.items()]

        def work(db: sqlite3.Connection) -> bool:
            if not _owns(db, user_id, conversation_id):
                return False
            # Only messages of this conversation: an id from elsewhere is ignored, never attached here.
            db.executemany(
                """INSERT INTO message_vectors (message_id, conversation_id, model, vector)
                SELECT id, conversation_id, ?, ? FROM messages WHERE id = ? AND conversation_id = ?
                ON CONFLICT (message_id) DO UPDATE SET model = excluded.model, vector = excluded.vector""",
                [(model, vector, mid, conversation_id) for mid, vector in items],
            )
            return True

        return await self._write(work)

    async def load_vectors(self, user_id: str, conversation_id: str, *, model: str) -> dict[str, bytes]:
        def work(db: sqlite3.Connection) -> dict[str, bytes]:
            if not _owns(db, user_id, conversation_id):
                return {}
            rows = db.execute(
                "SELECT message_id, vector FROM message_vectors WHERE conversation_id = ? AND model = ?",
                (conversation_id, model),
            ).fetchall()
            return {row[0]: bytes(row[1]) for row in rows}

        return await self._read(work)

    async def load_summary(self, user_id: str, conversation_id: str) -> ConversationSummary | None:
        def work(db: sqlite3.Connection) -> ConversationSummary | None:
            row = db.execute(
                """SELECT s.* FROM conversation_summaries s JOIN conversations c ON c.id = s.conversation_id
                WHERE s.conversation_id = ? AND c.user_id = ?""",
                (conversation_id, user_id),
            ).fetchone()
            return summary_from_row(dict(row)) if row else None

        return await self._read(work)

    async def save_summary(self, user_id: str, summary: ConversationSummary) -> bool:
        s = summary

        def work(db: sqlite3.Connection) -> bool:
            if not _owns(db, user_id, s.conversation_id):
                return False
            db.execute(
                """INSERT INTO conversation_summaries
                    (conversation_id, first_id, last_id, messages, text, model, created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (conversation_id) DO UPDATE SET first_id = excluded.first_id, last_id = excluded.last_id,
                    messages = excluded.messages, text = excluded.text, model = excluded.model,
                    created_at = excluded.created_at""",
                (s.conversation_id, s.first_id, s.last_id, s.messages, s.text, s.model, iso(s.created_at or utcnow())),
            )
            return True

        return await self._write(work)

    async def delete_summary(self, user_id: str, conversation_id: str) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            if not _owns(db, user_id, conversation_id):
                return False
            return (
                db.execute("DELETE FROM conversation_summaries WHERE conversation_id = ?", (conversation_id,)).rowcount
                > 0
            )

        return await self._write(work)

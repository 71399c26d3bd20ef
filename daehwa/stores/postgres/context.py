"""PostgreSQL context memory: ``message_vectors`` (``real[]`` per message) and ``conversation_summaries``.

The engine compares a conversation's own vectors in memory, so they are read by one index range and no vector index
is needed (pgvector would only pay off for search across conversations; it is not required).
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping

from ...types import ConversationSummary
from ..base import ContextStore
from ..common import summary_from_row, utcnow
from .connection import PostgresConnection

_OWNS = "SELECT 1 FROM conversations WHERE id = $1 AND user_id = $2"


def _floats(vector: bytes) -> list[float]:
    return array("f", vector).tolist()


class PostgresContext(PostgresConnection, ContextStore):
    async def save_vectors(
        self, user_id: str, conversation_id: str, vectors: Mapping[str, bytes], *, model: str
    ) -> bool:
        rows = [(mid, conversation_id, model, _floats(v)) for mid, v in vectors.items()]

        async def work() -> bool:
            async with self._p().acquire() as conn, conn.transaction():
                if await conn.fetchval(_OWNS, conversation_id, user_id) is None:
                    return False
                await conn.executemany(
                    """INSERT INTO message_vectors (message_id, conversation_id, model, vector)
                    SELECT id, conversation_id, $3, $4 FROM messages WHERE id = $1 AND conversation_id = $2
                    ON CONFLICT (message_id) DO UPDATE SET model = excluded.model, vector = excluded.vector""",
                    rows,
                )
                return True

        return await self._write(work)

    async def load_vectors(self, user_id: str, conversation_id: str, *, model: str) -> dict[str, bytes]:
        rows = await self._p().fetch(
            """SELECT v.message_id, v.vector FROM message_vectors v JOIN conversations c ON c.id = v.conversation_id
            WHERE v.conversation_id = $1 AND c.user_id = $2 AND v.model = $3""",
            conversation_id,
            user_id,
            model,
        )
        return {row["message_id"]: array("f", row["vector"]).tobytes() for row in rows}

    async def load_summary(self, user_id: str, conversation_id: str) -> ConversationSummary | None:
        row = await self._p().fetchrow(
            """SELECT s.* FROM conversation_summaries s JOIN conversations c ON c.id = s.conversation_id
            WHERE s.conversation_id = $1 AND c.user_id = $2""",
            conversation_id,
            user_id,
        )
        return summary_from_row(dict(row)) if row else None

    async def save_summary(self, user_id: str, summary: ConversationSummary) -> bool:
        s = summary
        touched = await self._execute(
            """INSERT INTO conversation_summaries
                (conversation_id, first_id, last_id, messages, text, model, created_at)
            SELECT id, $3, $4, $5, $6, $7, $8 FROM conversations WHERE id = $1 AND user_id = $2
            ON CONFLICT (conversation_id) DO UPDATE SET first_id = excluded.first_id, last_id = excluded.last_id,
                messages = excluded.messages, text = excluded.text, model = excluded.model,
                created_at = excluded.created_at""",
            s.conversation_id,
            user_id,
            s.first_id,
            s.last_id,
            s.messages,
            s.text,
            s.model,
            s.created_at or utcnow(),
        )
        return touched > 0

    async def delete_summary(self, user_id: str, conversation_id: str) -> bool:
        touched = await self._execute(
            """DELETE FROM conversation_summaries s USING conversations c
            WHERE s.conversation_id = $1 AND c.id = s.conversation_id AND c.user_id = $2""",
            conversation_id,
            user_id,
        )
        return touched > 0

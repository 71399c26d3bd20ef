"""PostgreSQL chunk logs of streaming replies: ``reply_streams`` (owner, lease, expiry) and ``stream_chunks``.

Leases and expiry use the database's clock (``now()``), so server processes on machines whose clocks differ agree.
"""

from __future__ import annotations

from ..base import StreamChunk, StreamLogStore, StreamRead, StreamTimes
from ..common import cut_chunks
from .connection import PostgresConnection

_TOUCH = """
WITH s AS (
    INSERT INTO reply_streams (message_id, conversation_id, user_id, lease_until, expires_at)
    VALUES ($1, $2, $3, now() + make_interval(secs => $4), now() + make_interval(secs => $5))
    ON CONFLICT (message_id) DO UPDATE SET lease_until = excluded.lease_until, expires_at = excluded.expires_at
    WHERE reply_streams.user_id = excluded.user_id
    RETURNING message_id
)
INSERT INTO stream_chunks (message_id, end_offset, start_offset, text)
SELECT message_id, $6, $7, $8 FROM s WHERE $8 <> ''
ON CONFLICT DO NOTHING
"""


class PostgresStreams(PostgresConnection, StreamLogStore):
    async def append_stream(
        self, user_id: str, conversation_id: str, message_id: str, chunk: StreamChunk, times: StreamTimes
    ) -> None:
        await self._execute(
            _TOUCH,
            message_id,
            conversation_id,
            user_id,
            float(times.lease_seconds),
            float(times.expire_seconds),
            chunk.end,
            chunk.start,
            chunk.text,
        )

    async def end_stream(self, user_id: str, conversation_id: str, message_id: str, *, expire_seconds: float) -> None:
        async def work() -> None:
            async with self._p().acquire() as conn:
                await conn.execute(
                    """UPDATE reply_streams SET ended = true, lease_until = now(),
                        expires_at = now() + make_interval(secs => $3)
                    WHERE message_id = $1 AND user_id = $2""",
                    message_id,
                    user_id,
                    float(expire_seconds),
                )
                # Logs expire here, when another ends: a log whose writer died is gone one expiry later all the same.
                await conn.execute("DELETE FROM reply_streams WHERE expires_at < now()")

        await self._write(work)

    async def read_stream(
        self, user_id: str, conversation_id: str, message_id: str, *, after: int = 0
    ) -> StreamRead | None:
        async with self._p().acquire() as conn:
            row = await conn.fetchrow(
                """SELECT lease_until >= now() AS alive, ended FROM reply_streams
                WHERE message_id = $1 AND user_id = $2 AND conversation_id = $3 AND expires_at >= now()""",
                message_id,
                user_id,
                conversation_id,
            )
            if row is None:
                return None
            rows = await conn.fetch(
                """SELECT start_offset, text FROM stream_chunks WHERE message_id = $1 AND end_offset > $2
                ORDER BY end_offset""",
                message_id,
                after,
            )
        chunks = cut_chunks([StreamChunk(r["start_offset"], r["text"]) for r in rows], after)
        return StreamRead(chunks, bool(row["alive"]), bool(row["ended"]))

"""SQLite chunk logs of streaming replies: ``reply_streams`` (owner, lease, expiry) and ``stream_chunks``.

Times are epoch seconds of this machine's clock: every process sharing the file runs on the same machine.
"""

from __future__ import annotations

import sqlite3
import time

from ..base import StreamChunk, StreamLogStore, StreamRead, StreamTimes
from ..common import cut_chunks
from .connection import SQLiteConnection


class SQLiteStreams(SQLiteConnection, StreamLogStore):
    async def append_stream(
        self, user_id: str, conversation_id: str, message_id: str, chunk: StreamChunk, times: StreamTimes
    ) -> None:
        def work(db: sqlite3.Connection) -> None:
            now = time.time()
            db.execute(
                """INSERT INTO reply_streams (message_id, conversation_id, user_id, lease_until, expires_at)
                VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (message_id) DO UPDATE SET lease_until = excluded.lease_until,
                    expires_at = excluded.expires_at
                WHERE reply_streams.user_id = excluded.user_id""",
                (message_id, conversation_id, user_id, now + times.lease_seconds, now + times.expire_seconds),
            )
            if chunk.text:
                db.execute(
                    """INSERT INTO stream_chunks (message_id, end_offset, start_offset, text)
                    SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM reply_streams WHERE message_id = ? AND user_id = ?)
                    ON CONFLICT DO NOTHING""",
                    (message_id, chunk.end, chunk.start, chunk.text, message_id, user_id),
                )

        await self._write(work)

    async def end_stream(self, user_id: str, conversation_id: str, message_id: str, *, expire_seconds: float) -> None:
        def work(db: sqlite3.Connection) -> None:
            now = time.time()
            db.execute(
                """UPDATE reply_streams SET ended = 1, lease_until = ?, expires_at = ?
                WHERE message_id = ? AND user_id = ?""",
                (now, now + expire_seconds, message_id, user_id),
            )
            # Logs expire here, when another ends: a log whose writer died is gone one expiry later all the same.
            db.execute("DELETE FROM reply_streams WHERE expires_at < ?", (now,))

        await self._write(work)

    async def read_stream(
        self, user_id: str, conversation_id: str, message_id: str, *, after: int = 0
    ) -> StreamRead | None:
        def work(db: sqlite3.Connection) -> StreamRead | None:
            now = time.time()
            row = db.execute(
                """SELECT lease_until, ended FROM reply_streams
                WHERE message_id = ? AND user_id = ? AND conversation_id = ? AND expires_at >= ?""",
                (message_id, user_id, conversation_id, now),
            ).fetchone()
            if row is None:
                return None
            rows = db.execute(
                """SELECT start_offset, text FROM stream_chunks WHERE message_id = ? AND end_offset > ?
                ORDER BY end_offset""",
                (message_id, after),
            ).fetchall()
            return StreamRead(cut_chunks([StreamChunk(r[0], r[1]) for r in rows], after), row[0] >= now, bool(row[1]))

        return await self._read(work)

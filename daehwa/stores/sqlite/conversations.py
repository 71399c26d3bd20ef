"""SQLite conversations and messages: ``conversations``, and ``messages`` ordered by ``seq`` within each one."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ...types import Conversation, MessageStatus, StoredMessage
from ..base import ConversationQuery, ConversationStore, MessageChange, NewConversation, NewMessage, NewTurn, TurnResult
from ..common import (
    changed,
    conversation_from_row,
    iso,
    merged,
    message_from_row,
    new_conversation,
    new_message,
    no_conversation,
    title_key,
    to_json,
    turn_messages,
    unknown_before,
    utcnow,
)
from .connection import SQLiteConnection
from .usage import insert_usage

_CONVERSATION_COLUMNS = "id, user_id, title, persona, model, kind, meta, created_at, updated_at"
_MESSAGE_COLUMNS = "m.id, m.conversation_id, m.role, m.content, m.status, m.model, m.meta, m.created_at"


class SQLiteConversations(SQLiteConnection, ConversationStore):
    async def create_conversation(self, user_id: str, new: NewConversation | None = None) -> Conversation:
        conv = new_conversation(user_id, new)
        await self._write(lambda db: _insert_conversation(db, conv))
        return conv

    async def get_conversation(self, user_id: str, conversation_id: str) -> Conversation | None:
        row = await self._read(
            lambda db: db.execute(
                f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = ? AND user_id = ?",
                (conversation_id, user_id),
            ).fetchone()
        )
        return conversation_from_row(dict(row)) if row else None

    async def list_conversations(self, user_id: str, query: ConversationQuery | None = None) -> list[Conversation]:
        q = query or ConversationQuery()
        kind, title, limit, before = q.kind, q.title, q.limit, q.before
        where, params = ["user_id = ?"], [user_id]
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if title:
            where.append("instr(title_key, ?) > 0")  # instr, not LIKE: '%' and '_' in a title are plain text
            params.append(title_key(title))
        if before is not None:
            where.append("updated_at < ?")
            params.append(iso(before))
        rows = await self._read(
            lambda db: db.execute(
                f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE {' AND '.join(where)} "
                "ORDER BY updated_at DESC, id DESC LIMIT ?",
                (*params, max(limit, 0)),
            ).fetchall()
        )
        return [conversation_from_row(dict(row)) for row in rows]

    async def rename_conversation(self, user_id: str, conversation_id: str, title: str) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "UPDATE conversations SET title = ?, title_key = ?, updated_at = ? WHERE id = ? AND user_id = ?",
                (title, title_key(title), iso(utcnow()), conversation_id, user_id),
            )
            return cursor.rowcount > 0

        return await self._write(work)

    async def update_conversation(self, user_id: str, conversation_id: str, *, meta: Mapping[str, Any]) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "SELECT meta FROM conversations WHERE id = ? AND user_id = ?", (conversation_id, user_id)
            ).fetchone()
            if row is None:
                return False
            db.execute(
                "UPDATE conversations SET meta = ? WHERE id = ?",
                (to_json(merged(json.loads(row["meta"]), meta)), conversation_id),
            )
            return True

        return await self._write(work)

    async def delete_conversation(self, user_id: str, conversation_id: str) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            # Messages go by ON DELETE CASCADE; usage rows have no foreign key and stay.
            cursor = db.execute("DELETE FROM conversations WHERE id = ? AND user_id = ?", (conversation_id, user_id))
            return cursor.rowcount > 0

        return await self._write(work)

    # -- messages ----------------------------------------------------------------------------------------------
    async def append_message(self, user_id: str, conversation_id: str, message: NewMessage) -> StoredMessage:
        stored = new_message(conversation_id, message)

        def work(db: sqlite3.Connection) -> StoredMessage:
            _require_conversation(db, user_id, conversation_id)
            _insert_messages(db, [stored])
            return stored

        return await self._write(work)

    async def update_message(self, user_id: str, message_id: str, change: MessageChange) -> StoredMessage | None:
        return await self._write(lambda db: _update_message(db, user_id, message_id, change), small=True)

    async def delete_messages_from(self, user_id: str, conversation_id: str, message_id: str) -> int:
        def work(db: sqlite3.Connection) -> int:
            cursor = db.execute(
                """DELETE FROM messages WHERE conversation_id = ? AND seq >= (
                       SELECT m.seq FROM messages m JOIN conversations c ON c.id = m.conversation_id
                       WHERE m.id = ? AND m.conversation_id = ? AND c.user_id = ?)""",
                (conversation_id, message_id, conversation_id, user_id),
            )
            return cursor.rowcount

        return await self._write(work)

    async def list_messages(
        self, user_id: str, conversation_id: str, *, limit: int | None = None, before: str | None = None
    ) -> list[StoredMessage] | None:
        def work(db: sqlite3.Connection) -> list[sqlite3.Row] | None:
            # Both reads in one hop and one implicit read transaction: the check and the list see the same data.
            owned = db.execute(
                "SELECT 1 FROM conversations WHERE id = ? AND user_id = ?", (conversation_id, user_id)
            ).fetchone()
            if owned is None:
                return None
            where = "m.conversation_id = ?"
            params: list[str | int] = [conversation_id]
            if before is not None:
                bound = db.execute(
                    "SELECT seq FROM messages WHERE id = ? AND conversation_id = ?", (before, conversation_id)
                ).fetchone()
                if bound is None:
                    raise unknown_before(before)
                where += " AND m.seq < ?"  # a range of the (conversation_id, seq) index: no scan of later messages
                params.append(bound[0])
            if limit is None:
                return db.execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE {where} ORDER BY m.seq", params
                ).fetchall()
            return db.execute(
                f"SELECT * FROM (SELECT m.seq, {_MESSAGE_COLUMNS} FROM messages m WHERE {where} "
                "ORDER BY m.seq DESC LIMIT ?) ORDER BY seq",
                (*params, max(limit, 0)),
            ).fetchall()

        rows = await self._read(work)
        return None if rows is None else [message_from_row(dict(row)) for row in rows]

    # -- turns -------------------------------------------------------------------------------------------------
    async def begin_turn(
        self, user_id: str, conversation_id: str, turn: NewTurn
    ) -> tuple[StoredMessage | None, StoredMessage]:
        user_msg, reply = turn_messages(conversation_id, turn)

        def work(db: sqlite3.Connection) -> None:
            _require_conversation(db, user_id, conversation_id)
            _insert_messages(db, [m for m in (user_msg, reply) if m is not None])

        await self._write(work, small=True)
        return user_msg, reply

    async def create_conversation_with_turn(
        self, user_id: str, new: NewConversation, turn: NewTurn
    ) -> tuple[Conversation, StoredMessage | None, StoredMessage]:
        conv = new_conversation(user_id, new)
        user_msg, reply = turn_messages(conv.id, turn)

        def work(db: sqlite3.Connection) -> None:
            _insert_conversation(db, conv)
            _insert_messages(db, [m for m in (user_msg, reply) if m is not None])

        await self._write(work, small=True)
        return conv, user_msg, reply

    async def finish_turn(self, user_id: str, message_id: str, result: TurnResult) -> StoredMessage | None:
        user_change = result.user_change()

        def work(db: sqlite3.Connection) -> StoredMessage | None:
            if user_change is not None:
                _update_message(db, user_id, *user_change)
            message = _update_message(db, user_id, message_id, result.change())
            if result.usage is not None:
                insert_usage(db, result.usage)
            return message

        return await self._write(work, small=True)


# -- helpers run on the worker thread ----------------------------------------------------------------------------
def repair_streaming(db: sqlite3.Connection, created_before: datetime | None) -> None:
    """``recover_interrupted``: streaming replies whose chunk log's lease lapsed, or that have no log and were
    created by ``created_before``."""
    bound = iso(created_before) if created_before else None
    db.execute(
        """UPDATE messages SET status = ? WHERE status = ?
        AND NOT EXISTS (SELECT 1 FROM reply_streams s WHERE s.message_id = messages.id AND s.lease_until >= ?)
        AND (? IS NULL OR created_at <= ?
             OR EXISTS (SELECT 1 FROM reply_streams s WHERE s.message_id = messages.id))""",
        (MessageStatus.INTERRUPTED, MessageStatus.STREAMING, time.time(), bound, bound),
    )


def _insert_conversation(db: sqlite3.Connection, c: Conversation) -> None:
    db.execute(
        "INSERT INTO conversations (id, user_id, title, title_key, persona, model, kind, meta, created_at, "
        "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            c.id,
            c.user_id,
            c.title,
            title_key(c.title),
            c.persona,
            c.model,
            c.kind,
            to_json(c.meta),
            iso(c.created_at),
            iso(c.updated_at),
        ),
    )


def _require_conversation(db: sqlite3.Connection, user_id: str, conversation_id: str) -> None:
    """Bump the conversation's ``updated_at`` (a new message makes it the newest), or raise ``NotFound``."""
    cursor = db.execute(
        "UPDATE conversations SET updated_at = ? WHERE id = ? AND user_id = ?",
        (iso(utcnow()), conversation_id, user_id),
    )
    if cursor.rowcount == 0:
        raise no_conversation(conversation_id)


def _insert_messages(db: sqlite3.Connection, messages: list[StoredMessage]) -> None:
    db.executemany(
        "INSERT INTO messages (id, conversation_id, role, content, status, model, meta, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (m.id, m.conversation_id, m.role, m.content, m.status.value, m.model, to_json(m.meta), iso(m.created_at))
            for m in messages
        ],
    )


def _update_message(
    db: sqlite3.Connection, user_id: str, message_id: str, change: MessageChange
) -> StoredMessage | None:
    row = db.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages m JOIN conversations c ON c.id = m.conversation_id "
        "WHERE m.id = ? AND c.user_id = ?",
        (message_id, user_id),
    ).fetchone()
    if row is None:
        return None
    new = changed(message_from_row(dict(row)), change)
    db.execute(
        "UPDATE messages SET content = ?, status = ?, model = ?, meta = ? WHERE id = ?",
        (new.content, new.status.value, new.model, to_json(new.meta), message_id),
    )
    return new

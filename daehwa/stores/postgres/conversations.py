"""PostgreSQL conversations and messages; the hot-path writes are single statements.

``begin_turn`` bumps the conversation and inserts both messages in one ``WITH ... INSERT``
(``create_conversation_with_turn`` inserts the conversation too), ``finish_turn`` updates the reply and inserts its
usage in one statement, so each is one round trip and atomic without an explicit transaction.

Every write to a conversation or its messages adds 1 to the conversation's ``version`` in the same statement
(migration ``p010``), which the cache of hot conversations compares (``stores/cache.py``). A statement that writes
both locks the conversation row first, then the messages, the order ``delete_conversation`` (its cascade) and
``begin_turn`` take them in, so concurrent writers queue instead of deadlocking.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ...types import Conversation, MessageStatus, StoredMessage
from ..base import ConversationQuery, MessageChange, NewConversation, NewMessage, NewTurn, TurnResult
from ..common import (
    USAGE_COLUMNS,
    USAGE_FIELDS,
    VersionedConversationStore,
    as_utc,
    conversation_from_row,
    message_from_row,
    new_conversation,
    new_message,
    no_conversation,
    title_key,
    turn_messages,
    unknown_before,
    utcnow,
)
from .connection import PostgresConnection
from .usage import usage_args, usage_values

_CONVERSATION_COLUMNS = "id, user_id, title, persona, model, kind, meta, created_at, updated_at"
_MESSAGE_COLUMNS = "seq, id, conversation_id, role, content, status, model, meta, created_at"

# The messages of a turn as arrays ($n..$n+5 of _message_arrays), unnested in their order.
_NEW_MESSAGES = """new AS (
    SELECT * FROM unnest(${0}::text[], ${1}::text[], ${2}::text[], ${3}::text[], ${4}::text[], ${5}::text[])
        WITH ORDINALITY AS r (id, role, content, status, model, meta, n)
)
INSERT INTO messages (id, conversation_id, role, content, status, model, meta, created_at)
SELECT new.id, conv.id, new.role, new.content, new.status, new.model, new.meta::jsonb, ${6}
FROM conv, new ORDER BY new.n
RETURNING id, (SELECT version FROM conv) AS version
"""

# $1 conversation id, $2 user id, $3 now, $4-$9 the messages
_INSERT_MESSAGES = (
    "WITH conv AS (UPDATE conversations SET updated_at = $3, version = version + 1 WHERE id = $1 AND user_id = $2 "
    "RETURNING id, version), " + _NEW_MESSAGES.format(4, 5, 6, 7, 8, 9, 3)
)

# A new conversation and its first messages in one statement; the messages' foreign key is checked at its end.
# $1-$8 the conversation (id, user_id, title, title_key, persona, model, kind, meta), $9 created_at, $10-$15 the
# messages.
_INSERT_CONVERSATION = (
    "INSERT INTO conversations (id, user_id, title, title_key, persona, model, kind, meta, created_at, updated_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)"
)
_INSERT_CONVERSATION_WITH_MESSAGES = f"WITH conv AS ({_INSERT_CONVERSATION} RETURNING id, version), " + (
    _NEW_MESSAGES.format(10, 11, 12, 13, 14, 15, 9)
)

# $1 message id, $2 user id, $3 content, $4 status, $5 model, $6 meta to merge (jsonb, shallow like dict.update).
# The conversation's version first (its row locked before the message's), then the message; ``updated`` returns the
# message and the conversation's new version.
_UPDATE_MESSAGE = """
bumped AS (
    UPDATE conversations c SET version = c.version + 1
    FROM messages m
    WHERE m.id = $1 AND c.id = m.conversation_id AND c.user_id = $2
    RETURNING c.id, c.version
),
updated AS (
    UPDATE messages m SET
        content = COALESCE($3, m.content),
        status = COALESCE($4, m.status),
        model = COALESCE($5, m.model),
        meta = m.meta || $6::jsonb
    FROM bumped
    WHERE m.id = $1 AND m.conversation_id = bumped.id
    RETURNING m.id, m.conversation_id, m.role, m.content, m.status, m.model, m.meta, m.created_at, bumped.version
)
"""
_UPDATE = f"WITH {_UPDATE_MESSAGE} SELECT * FROM updated"

# The reply's final state and its usage together (data-modifying CTEs always run, so the usage row is written even
# when the reply is gone).
_FINISH_TURN = (
    f"WITH {_UPDATE_MESSAGE}, "
    f"accounted AS (INSERT INTO usage ({USAGE_COLUMNS}) VALUES ({usage_values(7)})) "
    "SELECT * FROM updated"
)


def _user_meta_cte(first: int) -> str:
    """A CTE merging a turn's user meta into the user's message of the same conversation ($first: its id,
    $first+1: the meta)."""
    return (
        f"user_meta AS (UPDATE messages SET meta = meta || ${first + 1}::jsonb "
        f"WHERE id = ${first} AND conversation_id = (SELECT id FROM bumped))"
    )


# The finish with what the turn's contributors added to the user's message, in the same statement.
_FINISH_TURN_WITH_USER_META = (
    f"WITH {_UPDATE_MESSAGE}, "
    f"accounted AS (INSERT INTO usage ({USAGE_COLUMNS}) VALUES ({usage_values(7)})), "
    f"{_user_meta_cte(7 + len(USAGE_FIELDS))} "
    "SELECT * FROM updated"
)
_UPDATE_WITH_USER_META = f"WITH {_UPDATE_MESSAGE}, {_user_meta_cte(7)} SELECT * FROM updated"

# $1 conversation id, $2 from this message on, $3 user id
_DELETE_FROM = """
WITH bumped AS (
    UPDATE conversations SET version = version + 1 WHERE id = $1 AND user_id = $3 RETURNING id
), deleted AS (
    DELETE FROM messages WHERE conversation_id = (SELECT id FROM bumped)
    AND seq >= (SELECT seq FROM messages WHERE id = $2 AND conversation_id = $1)
    RETURNING 1
)
SELECT count(*) FROM deleted
"""


class PostgresConversations(PostgresConnection, VersionedConversationStore):
    async def create_conversation(self, user_id: str, new: NewConversation | None = None) -> Conversation:
        conv = new_conversation(user_id, new)
        await self._execute(_INSERT_CONVERSATION, *_conversation_args(conv))
        return conv

    async def get_conversation(self, user_id: str, conversation_id: str) -> Conversation | None:
        row = await self._p().fetchrow(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = $1 AND user_id = $2",
            conversation_id,
            user_id,
        )
        return conversation_from_row(row) if row else None

    async def list_conversations(self, user_id: str, query: ConversationQuery | None = None) -> list[Conversation]:
        q = query or ConversationQuery()
        kind, title, limit, before = q.kind, q.title, q.limit, q.before
        rows = await self._p().fetch(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE user_id = $1 "
            "AND ($2::text IS NULL OR kind = $2) "
            "AND ($3::text IS NULL OR strpos(title_key, $3) > 0) "
            "AND ($4::timestamptz IS NULL OR updated_at < $4) "
            "ORDER BY updated_at DESC, id DESC LIMIT $5",
            user_id,
            kind,
            title_key(title) if title else None,
            as_utc(before) if before is not None else None,
            max(limit, 0),
        )
        return [conversation_from_row(row) for row in rows]

    async def rename_conversation(self, user_id: str, conversation_id: str, title: str) -> bool:
        touched = await self._execute(
            "UPDATE conversations SET title = $3, title_key = $4, updated_at = $5, version = version + 1 "
            "WHERE id = $1 AND user_id = $2",
            conversation_id,
            user_id,
            title,
            title_key(title),
            utcnow(),
        )
        return touched > 0

    async def update_conversation(self, user_id: str, conversation_id: str, *, meta: Mapping[str, Any]) -> bool:
        touched = await self._execute(
            "UPDATE conversations SET meta = meta || $3::jsonb, version = version + 1 WHERE id = $1 AND user_id = $2",
            conversation_id,
            user_id,
            dict(meta),
        )
        return touched > 0

    async def delete_conversation(self, user_id: str, conversation_id: str) -> bool:
        touched = await self._execute(
            "DELETE FROM conversations WHERE id = $1 AND user_id = $2", conversation_id, user_id
        )
        return touched > 0

    async def conversation_version(self, conversation_id: str) -> str | None:
        """The conversation's version: + 1 on every write to it or its messages (``None``: no such conversation).
        The cache of hot conversations compares it."""
        version = await self._p().fetchval("SELECT version FROM conversations WHERE id = $1", conversation_id)
        return None if version is None else str(version)

    # -- messages ----------------------------------------------------------------------------------------------
    async def _insert(self, user_id: str, conversation_id: str, messages: list[StoredMessage]) -> str:
        """Insert ``messages``; returns the conversation's version after the write."""
        created = await self._write(
            lambda: self._p().fetch(
                _INSERT_MESSAGES, conversation_id, user_id, messages[0].created_at, *_message_arrays(messages)
            )
        )
        if not created:
            raise no_conversation(conversation_id)
        return str(created[0]["version"])

    async def append_message_versioned(
        self, user_id: str, conversation_id: str, message: NewMessage
    ) -> tuple[StoredMessage, str]:
        """``append_message``, and the conversation's version after it (for the cache's write-through)."""
        stored = new_message(conversation_id, message)
        return stored, await self._insert(user_id, conversation_id, [stored])

    async def update_message_versioned(
        self, user_id: str, message_id: str, change: MessageChange
    ) -> tuple[StoredMessage | None, str | None]:
        """The changed message (None: not the user's) and the conversation's version after the change."""
        row = await self._write(lambda: self._p().fetchrow(_UPDATE, *_change_args(message_id, user_id, change)))
        return _versioned(row)

    async def delete_messages_from(self, user_id: str, conversation_id: str, message_id: str) -> int:
        deleted = await self._write(lambda: self._p().fetchval(_DELETE_FROM, conversation_id, message_id, user_id))
        return int(deleted or 0)

    async def list_messages(
        self, user_id: str, conversation_id: str, *, limit: int | None = None, before: str | None = None
    ) -> list[StoredMessage] | None:
        limit = None if limit is None else max(limit, 0)  # LIMIT NULL is no limit
        async with self._p().acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
            if before is None:
                owned = await conn.fetchval(
                    "SELECT 1 FROM conversations WHERE id = $1 AND user_id = $2", conversation_id, user_id
                )
                if owned is None:
                    return None
                rows = await conn.fetch(
                    f"SELECT * FROM (SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 "
                    "ORDER BY seq DESC LIMIT $2) last ORDER BY seq",
                    conversation_id,
                    limit,
                )
                return [message_from_row(row) for row in rows]
            # One round trip for the ownership check and the cursor: no row means not the user's conversation,
            # a NULL bound means ``before`` is not one of its messages.
            found = await conn.fetchrow(
                "SELECT (SELECT seq FROM messages WHERE id = $3 AND conversation_id = $1) AS bound "
                "FROM conversations WHERE id = $1 AND user_id = $2",
                conversation_id,
                user_id,
                before,
            )
            if found is None:
                return None
            if found["bound"] is None:
                raise unknown_before(before)
            # Separate statements (not "$3 IS NULL OR seq < $3"): a cached generic plan keeps this an index range.
            rows = await conn.fetch(
                f"SELECT * FROM (SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND seq < $3 "
                "ORDER BY seq DESC LIMIT $2) page ORDER BY seq",
                conversation_id,
                limit,
                found["bound"],
            )
        return [message_from_row(row) for row in rows]

    # -- turns -------------------------------------------------------------------------------------------------
    async def begin_turn_versioned(
        self, user_id: str, conversation_id: str, turn: NewTurn
    ) -> tuple[StoredMessage | None, StoredMessage, str]:
        user_msg, reply = turn_messages(conversation_id, turn, now=utcnow())
        version = await self._insert(user_id, conversation_id, [m for m in (user_msg, reply) if m is not None])
        return user_msg, reply, version

    async def create_conversation_with_turn(
        self, user_id: str, new: NewConversation, turn: NewTurn
    ) -> tuple[Conversation, StoredMessage | None, StoredMessage]:
        conv = new_conversation(user_id, new)
        user_msg, reply = turn_messages(conv.id, turn, now=conv.created_at)
        messages = [m for m in (user_msg, reply) if m is not None]
        await self._write(
            lambda: self._p().fetch(
                _INSERT_CONVERSATION_WITH_MESSAGES, *_conversation_args(conv), *_message_arrays(messages)
            )
        )
        return conv, user_msg, reply

    async def finish_turn_versioned(
        self, user_id: str, message_id: str, result: TurnResult
    ) -> tuple[StoredMessage | None, str | None]:
        user_change = result.user_change()
        args = _change_args(message_id, user_id, result.change())
        if result.usage is None:
            if user_change is None:
                return await self.update_message_versioned(user_id, message_id, result.change())
            sql = _UPDATE_WITH_USER_META
        else:
            args += usage_args(result.usage)
            sql = _FINISH_TURN if user_change is None else _FINISH_TURN_WITH_USER_META
        if user_change is not None:
            args += [user_change[0], dict(user_change[1].meta or {})]
        row = await self._write(lambda: self._p().fetchrow(sql, *args))
        return _versioned(row)


def _versioned(row: Any) -> tuple[StoredMessage | None, str | None]:
    """A row of ``_UPDATE`` or ``_FINISH_TURN``: the message and the conversation's version."""
    return (message_from_row(row), str(row["version"])) if row else (None, None)


def _conversation_args(c: Conversation) -> list[Any]:
    """$1-$9 of ``_INSERT_CONVERSATION``."""
    return [c.id, c.user_id, c.title, title_key(c.title), c.persona, c.model, c.kind, dict(c.meta), c.created_at]


def _change_args(message_id: str, user_id: str, change: MessageChange) -> list[Any]:
    """$1-$6 of ``_UPDATE_MESSAGE``."""
    status = None if change.status is None else MessageStatus(change.status).value
    return [message_id, user_id, change.content, status, change.model, dict(change.meta or {})]


def _message_arrays(messages: list[StoredMessage]) -> list[list[Any]]:
    """The columns of ``messages`` as arrays, for the ``unnest`` of the insert statements."""
    return [
        [m.id for m in messages],
        [m.role for m in messages],
        [m.content for m in messages],
        [m.status.value for m in messages],
        [m.model for m in messages],
        [json.dumps(dict(m.meta), ensure_ascii=False) for m in messages],
    ]
